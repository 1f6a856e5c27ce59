"""Vendor profiles shipped with atemu (each is also registered as an ``atemu.profiles`` entry point)."""
from .eseye_anynet import EseyeAnynet

BUILTIN_PROFILES = [EseyeAnynet]
