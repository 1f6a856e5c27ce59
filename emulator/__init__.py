"""atemu: an emulator of serial AT-command network modules on real host networking."""
__version__ = "0.1.0"
