"""Shared helpers for the Quectel FCM242D tests (a lab access point, joining it, reading URCs)."""
from __future__ import annotations

import re

from harness import Emu

SSID, PWD = "lab-ap", "lab-pass-123"


def world(extra_aps=(), hosts=None, **options):
    opts = {"quectel.escape_guard": 0.2, "quectel.join_delay": 0.05, "quectel.boot_delay": 0.1}
    opts.update({f"quectel.{k}": v for k, v in options.items()})
    aps = [{"ssid": SSID, "security": "wpa2", "password": PWD, "rssi": -40, "channel": 11,
            "ip": "192.168.50.23", "gateway": "192.168.50.1", "netmask": "255.255.255.0", "dns": "192.168.50.1"}]
    aps += list(extra_aps)
    return {"wifi": {"access_points": aps}, "network": {"hosts": hosts or {}}, "options": opts}


def emu(w=None, **kw) -> Emu:
    e = Emu("quectel-fcm242d", world=w or world(), **kw)
    e.start()
    e.drain(0.1)
    return e


def cmd_ok(e: Emu, line: str, timeout: float = 5.0) -> bytes:
    out = e.cmd(line, timeout)
    assert out.endswith(b"\r\nOK\r\n"), (line, out)
    return out


def join(e: Emu) -> None:
    """Echo off and connected to the lab AP with an address."""
    e.cmd("AT+QECHO=0")
    e.drain(0.05)
    cmd_ok(e, f'AT+QSTAAPINFO="{SSID}","{PWD}"')
    e.read_until(rb"\+QSTASTAT: GOT_IP\r\n")


def urc(e: Emu, pattern: str | bytes, timeout: float = 5.0) -> re.Match:
    pat = pattern.encode() if isinstance(pattern, str) else pattern
    got = e.read_until(pat, timeout)
    return re.search(pat, got, re.S)
