"""atemu: an emulator of serial AT-command network modules on real host networking."""
import logging as _logging

__version__ = "0.1.0"


class _LastResort(_logging.Handler):
    """Warnings of an in-process module (``atemu.start(...)``) in the same one-line form as the CLI's
    (``atemu: WARNING: ...``) when the application configured no logging; otherwise its handlers
    decide and this one stays silent."""

    def __init__(self) -> None:
        super().__init__(_logging.WARNING)
        self.setFormatter(_logging.Formatter("atemu: %(levelname)s: %(message)s"))

    def emit(self, record: _logging.LogRecord) -> None:
        if _logging.getLogger().handlers:     # the application (or the CLI) has its own logging
            return
        import sys
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - a closed stderr
            pass


def _install_last_resort() -> None:
    for name in ("atemu", __name__):
        lg = _logging.getLogger(name)
        if not any(isinstance(h, _LastResort) for h in lg.handlers):
            lg.addHandler(_LastResort())


_install_last_resort()


def register_serial_handler() -> None:
    """Make ``serial.serial_for_url("atemu://<profile-or-name>")`` work (done on ``import atemu``)."""
    try:
        import serial
    except ImportError:  # pragma: no cover - pyserial is a dependency
        return
    pkg = __name__ + ".serial_handlers"
    if pkg not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(pkg)


register_serial_handler()


def __getattr__(name: str):
    """Lazy re-exports of the in-process API (``from atemu import start``)."""
    if name in ("start", "astart", "wrap", "ModuleHandle", "ApiError", "FaultError", "FAULTS"):
        from . import api
        return getattr(api, name)
    raise AttributeError(name)
