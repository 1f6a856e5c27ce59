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


# ---- part 2 (MQTT, HTTP, BLE tests) -------------------------------------------------------------

LAB_WORLD = {"wifi": {"access_points": [{"ssid": "lab", "security": "wpa2", "password": "labpass123"}]}}


def boot_quiet(w=None, **kw) -> Emu:
    """A started module (world ``w``, default LAB_WORLD) with echo off (asserted) and its output drained."""
    e = Emu("quectel-fcm242d", world=LAB_WORLD if w is None else w, **kw)
    e.start()
    assert e.cmd("AT+QECHO=0").endswith(b"OK\r\n")
    e.drain()
    return e


def lab_wifi_up(e: Emu) -> None:
    """Join LAB_WORLD's AP: exactly OK, then GOT_IP."""
    assert e.cmd('AT+QSTAAPINFO="lab","labpass123"') == b"\r\nOK\r\n"
    e.read_until(rb"\+QSTASTAT: GOT_IP\r\n")


def lab_emu():
    """Body of an ``emu`` fixture (``yield from lab_emu()``): booted quiet on LAB_WORLD and joined."""
    e = boot_quiet()
    lab_wifi_up(e)
    yield e
    e.stop()


def urc_match(e: Emu, pattern: str, timeout: float = 8.0) -> re.Match:
    """Read until ``pattern`` (a str regex) and return its match."""
    got = e.read_until(pattern.encode(), timeout)
    m = re.search(pattern.encode(), got)
    assert m is not None
    return m


def ufs_upload(e: Emu, name: str, data: bytes) -> None:
    """Write ``data`` to UFS file ``name`` with AT+QFOPEN/QFWRITE/QFCLOSE."""
    out = e.cmd(f'AT+QFOPEN="{name}",1')
    h = int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))
    e.write(f"AT+QFWRITE={h},{len(data)}\r")
    e.read_until(rb"CONNECT\r\n")
    e.write(data)
    e.read_until(rb"\r\nOK\r\n")
    assert e.cmd(f"AT+QFCLOSE={h}").endswith(b"OK\r\n")


def all_ok(e: Emu, *lines: str) -> None:
    """Each command answers exactly OK (the failing line is named)."""
    for line in lines:
        assert e.cmd(line) == b"\r\nOK\r\n", line
