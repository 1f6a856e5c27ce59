"""Shared machinery of Microchip's Wi-Fi AT family: ``microchip-winc`` and ``rnwf02``/``rnwf11``
are dialects of it (see ``base.py``)."""
from .base import MicrochipFamily

__all__ = ["MicrochipFamily"]
