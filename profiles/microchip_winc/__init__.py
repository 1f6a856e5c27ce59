"""Microchip WINC1500 / PIC32MZW1 AT command firmware (``atemu run microchip-winc``).

See ``README.md`` in this folder for the documented choices.
"""
from .profile import MicrochipWinc

__all__ = ["MicrochipWinc"]
