"""Microchip RNWF02 / RNWF11 AT firmware profile (a dialect of the microchip-winc family)."""
from .profile import Rnwf02
from .rnwf11 import Rnwf11

__all__ = ["Rnwf02", "Rnwf11"]
