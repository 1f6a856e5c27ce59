"""pyserial handler for ``atemu://<name>[?world=FILE&pacing=1&state_dir=DIR]``: an emulated module
in this process, without a pty.

If a module named ``<name>`` was started in this process with ``transport="inproc"``
(``atemu.start(...)`` or the ``atemu_module`` fixture), the port attaches to it; otherwise a
new module of profile ``<name>`` is started and is stopped when the port is closed. Importing the
package registers the scheme (``register_serial_handler`` in its ``__init__``).
"""
from __future__ import annotations

import time
import urllib.parse

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException


class Serial(SerialBase):
    """A pyserial port wired to an in-process emulated module."""

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        from atemu.api import RUNNING, ApiError, start
        name, opts = self._parse(self.portstr)
        self._own = False
        h = RUNNING.get(name)
        if h is not None and h.inproc is not None:
            self._handle = h
        else:
            try:
                kw = {"transport": "inproc", "pacing": opts.get("pacing", "0") in ("1", "true", "yes")}
                if "world" in opts:
                    kw["world"] = opts["world"]
                if "state_dir" in opts:
                    kw["state_dir"] = opts["state_dir"]
                self._handle = start(name, **kw)
            except (ApiError, Exception) as e:
                raise SerialException(f"atemu://{name}: {e}") from None
            self._own = True
        self.is_open = True
        self._reconfigure_port()

    @staticmethod
    def _parse(url: str) -> tuple[str, dict]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "atemu":
            raise SerialException(f"expected a URL like atemu://eseye-anynet, not {url!r}")
        name = parts.netloc or parts.path.lstrip("/")
        if not name:
            raise SerialException("atemu:// needs a profile or module name, e.g. atemu://eseye-anynet")
        opts = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        return name, opts

    def _reconfigure_port(self) -> None:
        if not self.is_open:
            return
        h = self._handle
        try:
            h.call(h.module.host_baud_changed, self._baudrate)
        except Exception:
            pass

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            if self._own:
                self._handle.close()
            self._handle = None

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return self._handle.inproc.waiting

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        port = self._handle.inproc
        out = bytearray()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while len(out) < size:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            chunk = port.read(size - len(out), timeout=left)
            out += chunk
            if deadline is not None and time.monotonic() >= deadline:
                break
        return bytes(out)

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        data = serial.to_bytes(data)
        self._handle.write(data)
        return len(data)

    def flush(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    def reset_input_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        self._handle.inproc.clear()

    def reset_output_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass
