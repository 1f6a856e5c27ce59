"""atemu: an emulator of serial AT-command network modules on real host networking."""
__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy re-exports of the in-process API (``from emulator import start``)."""
    if name in ("start", "astart", "wrap", "ModuleHandle", "ApiError", "FaultError", "FAULTS"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
