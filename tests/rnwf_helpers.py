"""Shared helpers for the rnwf02 tests (no tests here): a host that ends lines with CR LF."""
from __future__ import annotations

import re

from harness import Emu
from test_microchip_util import WORLD

#: the final result of a command, with the prompt when echo is on
FINAL = rb"(?:\A|\n)(OK|ERROR(?::[^\r]*)?)\r\n"
OPTS = {"rnwf02.boot_delay": 0.2, "rnwf02.data_timeout": 1.0, "rnwf02.ack_timeout": 2.0}


class Rnwf(Emu):
    """Emu of rnwf02 with the RNWF final-result regex. ``echo=False`` sends ATE0 on start (as the
    Microchip host drivers do); commands are written with CR LF, like host code."""

    def __init__(self, world=None, profile="rnwf02", echo=False, opts=None, **kw):
        world = dict(world if world is not None else WORLD)
        world["options"] = dict(OPTS, **(opts or {}))
        if profile != "rnwf02":
            world["options"] = {k.replace("rnwf02.", profile + "."): v for k, v in world["options"].items()}
        super().__init__(profile, world=world, **kw)
        self.echo = echo

    def start(self) -> "Rnwf":
        super().start()
        if not self.echo:
            assert self.cmd("ATE0") == b"ATE0\r\nOK\r\n"
        return self

    def cmd(self, line, timeout: float = 5.0, final=None) -> bytes:  # type: ignore[override]
        self.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        out = self.read_until(final or FINAL, timeout)
        if self.module.engine.echo:          # echo on: the prompt follows the final result
            out += self.read_exactly(1, timeout)
        return out

    def ok(self, line, timeout: float = 5.0) -> bytes:
        out = self.cmd(line, timeout)
        assert out.endswith(b"OK\r\n") or out.endswith(b"OK\r\n>"), (line, out)
        return out

    def oks(self, *lines) -> None:
        for line in lines:
            self.ok(line)

    def aec(self, pattern, timeout: float = 5.0) -> re.Match:
        pat = pattern if isinstance(pattern, bytes) else pattern.encode()
        got = self.read_until(pat, timeout)
        m = re.search(pat, got)
        assert m
        return m

    def time(self, line: str = "AT+TIME") -> bytes:
        """A clock query: OK, then the AEC +TIME:<TIME> (the guide's 9.16.2.1); gives <TIME>."""
        assert self.cmd(line) == b"OK\r\n"
        return self.aec(rb"\r\+TIME:(.*?)\r\n").group(1)

    @property
    def prof(self):
        return self.module.profile

    def join(self, assoc: int = 1) -> None:
        """Connect the station to MyAP, as the host drivers do."""
        self.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"', "AT+WSTAC=4,0")
        assert self.cmd("AT+WSTA=1") == b"OK\r\n"
        self.aec(rf'\r\+WSTAAIP:{assoc},"192\.168\.0\.20"\r\n'.encode())
