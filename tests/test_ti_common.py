"""Helpers shared by the TI SimpleLink tests (no tests here)."""
from __future__ import annotations

import base64
import re

import pytest

from harness import Emu

FINAL = rb"(?:^|\r\n)(OK|ERROR:[^\r\n]*)\r\n"
LAB_BSSID = "0x2:0x11:0x22:0x33:0x44:0x55"      # 02:11:22:33:44:55 as TI's source prints a MAC
LAB = {"ssid": "lab", "security": "wpa2", "password": "lab-pass-123", "channel": 6, "rssi": -40,
       "bssid": "02:11:22:33:44:55", "ip": "192.168.7.20", "gateway": "192.168.7.1", "dns": "192.168.7.1"}


def world(**extra) -> dict:
    w = {"wifi": {"access_points": [dict(LAB)]}}
    w.update(extra)
    return w


class Ti(Emu):
    """An Emu speaking the TI dialect: responses end at OK or ERROR:<text>,<code>."""

    PROFILE = "ti-simplelink"

    def __init__(self, *a, **kw):
        kw.setdefault("world", world())
        super().__init__(self.PROFILE, *a, **kw)

    def cmd(self, line, timeout: float = 5.0, final=None) -> bytes:  # type: ignore[override]
        """Send ``line`` + the host style's terminator (CR LF, as host drivers do, unless a test
        chose another) and return the response up to its final line."""
        self.write((line.encode() if isinstance(line, str) else line) + self.term)
        return self.read_until(final or FINAL, timeout)

    def ok(self, line, timeout: float = 5.0) -> bytes:
        out = self.cmd(line, timeout)
        assert out.endswith(b"OK\r\n"), f"{line!r} -> {out!r}"
        return out[: -len(b"OK\r\n")]

    def err(self, line, timeout: float = 5.0) -> bytes:
        out = self.cmd(line, timeout)
        m = re.search(rb"ERROR: ([^\r\n]*)\r\n$", out)      # TI: "ERROR: <description>,<code>"
        assert m, f"{line!r} expected an error, got {out!r}"
        return m.group(1)

    def later(self, pattern, timeout: float = 10.0) -> bytes:
        """The deferred result of an OK-first command: its value line(s) and the second OK."""
        out = self.read_until(rb"(?:^|\r\n)(OK|ERROR:[^\r\n]*)\r\n", timeout)
        assert re.search(pattern if isinstance(pattern, bytes) else pattern.encode(), out, re.S), out
        return out

    def boot(self) -> "Ti":
        assert self.cmd("AT+Start") == b"OK\r\n"          # TI's source: OK, no startup event
        return self

    def join(self) -> None:
        self.ok(f'AT+WlanConnect={LAB["ssid"]},,WPA_WPA2,{LAB["password"]},,,')
        self.read_until(rb"\+eventwlan:connect,lab,0x2:0x11:0x22:0x33:0x44:0x55\r\n")
        self.read_until(rb"\+eventnetapp:ipv4_acquired,192\.168\.7\.20,192\.168\.7\.1,192\.168\.7\.1\r\n")

    def put_file(self, name: str, data: bytes) -> None:
        out = self.ok(f"AT+FileOpen={name},CREATE|OVERWRITE,{max(len(data), 1) + 64}")
        fid = int(re.search(rb"\+fileopen:(\d+),", out).group(1))
        for off in range(0, len(data), 1024):
            chunk = data[off:off + 1024]
            enc = base64.b64encode(chunk).decode()
            self.ok(f"AT+FileWrite={fid},{off},1,{len(enc)},{enc}")
        self.ok(f"AT+FileClose={fid},,")


def joined(w: dict | None = None):
    """Fixture body: a started module (world ``w``) joined to the lab AP, stopped afterwards."""
    e = Ti(world=w or world())
    e.start()
    try:
        e.boot()
        e.join()
        yield e
    finally:
        e.stop()


@pytest.fixture
def ti():
    """A started module joined to the lab AP (import this fixture into a test module to use it)."""
    yield from joined()
