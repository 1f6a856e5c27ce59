"""Shared helpers for the microchip-winc tests (no tests here)."""
from __future__ import annotations

import re
import time

from harness import Emu

FINAL = rb"(?:\A|[\r\n])(OK|ERROR:\d+)\r\n"

WORLD = {
    "wifi": {"access_points": [
        {"ssid": "MyAP", "security": "wpa2", "password": "MyAPPSK-123", "channel": 6, "rssi": -50,
         "bssid": "00:01:02:03:04:05", "ip": "192.168.0.20", "gateway": "192.168.0.1"},
        {"ssid": "test-network", "security": "open", "channel": 1, "rssi": -57, "bssid": "98:fc:11:41:e7:7c"},
        {"ssid": "Foo \u00a9 bar", "security": "open", "channel": 6, "rssi": -62, "bssid": "24:f2:7f:a5:8b:81"},
        {"ssid": "enterprise-secure", "security": "wpa2-enterprise", "password": "x", "channel": 1, "rssi": -63,
         "bssid": "24:f2:7f:a5:8b:80"},
        {"ssid": "cloaked", "security": "wep", "password": "abcde", "channel": 11, "rssi": -70,
         "bssid": "24:f2:7f:a5:8b:82", "hidden": True},
    ]},
}


class Winc(Emu):
    """Emu with the Microchip final-result regex; echo switched off on start."""

    def __init__(self, world=None, **kw):
        super().__init__("microchip-winc", world=world if world is not None else WORLD, **kw)

    def start(self) -> "Winc":
        super().start()
        assert self.cmd("ATE0") == b"ATE0" + self.term + b"OK\r\n"
        return self

    def cmd(self, line, timeout: float = 5.0, final=None) -> bytes:  # type: ignore[override]
        return super().cmd(line, timeout, final or FINAL)

    def ok(self, line, timeout: float = 5.0) -> bytes:
        out = self.cmd(line, timeout)
        assert out.endswith(b"OK\r\n"), (line, out)
        return out

    def oks(self, *lines) -> None:
        """Send each line; every one must answer OK."""
        for line in lines:
            self.ok(line)

    def urc(self, pattern, timeout: float = 5.0) -> re.Match:
        got = self.read_until(pattern if isinstance(pattern, bytes) else pattern.encode(), timeout)
        m = re.search(pattern if isinstance(pattern, bytes) else pattern.encode(), got)
        assert m
        return m

    @property
    def prof(self):
        return self.module.profile

    def join(self) -> None:
        """Connect the station to MyAP (the network link the socket commands need)."""
        self.ok('AT+WSTAC=1,"MyAP"')
        self.ok("AT+WSTAC=2,3")
        self.ok('AT+WSTAC=3,"MyAPPSK-123"')
        self.ok("AT+WSTA=1")
        self.urc(rb'\+WSTAAIP:1,"192.168.0.20"\r\n')


def prov_cmd(sock, line: bytes) -> bytes:
    """A command over the provisioning TCP link (CR LF), up to its final result."""
    sock.sendall(line + b"\r\n")
    buf = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        buf += sock.recv(4096)
        if buf.endswith(b"OK\r\n") or (b"ERROR:" in buf and buf.endswith(b"\r\n")) or buf.endswith(b"+WSCNDONE\r\n"):
            return buf
    raise TimeoutError(buf)


def recv_to_eof(sock) -> bytes:
    """Everything the peer sends until it closes the link."""
    buf = b""
    while chunk := sock.recv(4096):
        buf += chunk
    return buf
