"""Drive an emulated module through a real pty with pyserial, as a host application would.

``Emu`` runs the module on its own asyncio loop in a background thread (so tests stay plain
synchronous code, like a user's host app) and publishes a real pseudo-terminal. ``Cli`` runs
the ``atemu`` command itself as a subprocess.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import serial

from atemu.module import Module
from atemu.profile import find_profile
from atemu.uart import PtyTransport
from atemu.world import World


class SerialReader:
    """A host's buffered reader on a pyserial port (``self.ser``): every wait consumes the input
    up to its match and keeps the rest, so nothing the module sent is lost between waits."""

    def __init__(self, ser: serial.Serial | None = None):
        self.ser = ser
        self.buf = bytearray()

    def write(self, data: bytes | str) -> None:
        self.ser.write(data.encode() if isinstance(data, str) else data)
        self.ser.flush()

    send = write

    def _fill(self) -> None:
        chunk = self.ser.read(max(1, self.ser.in_waiting))   # returns as soon as a byte is there
        if chunk:
            self.buf += chunk

    def until(self, pattern: bytes | str | re.Pattern, timeout: float = 5.0) -> bytes:
        """Consume and return everything up to and including the first match of regex ``pattern``."""
        if isinstance(pattern, re.Pattern):
            pat = pattern
        else:
            pat = re.compile(pattern.encode() if isinstance(pattern, str) else pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = pat.search(self.buf)
            if m:
                out = bytes(self.buf[: m.end()])
                del self.buf[: m.end()]
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {pat.pattern!r} within {timeout}s; got {bytes(self.buf)!r}")
            self._fill()

    def read_exactly(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"wanted {n} bytes, got {bytes(self.buf)!r}")
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def drain(self, quiet: float = 0.15) -> bytes:
        """Read until the line has been quiet for ``quiet`` seconds; return everything."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            before = len(self.buf)
            self._fill()
            if len(self.buf) != before:
                last = time.monotonic()
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def nothing(self, pattern: bytes, t: float) -> None:
        """Nothing matching ``pattern`` arrives within ``t`` seconds (the input is kept)."""
        end = time.monotonic() + t
        while time.monotonic() < end:
            self._fill()
        assert not re.search(pattern, self.buf), bytes(self.buf)


class Emu(SerialReader):
    """A module of ``profile`` on a pty at ``.port`` with an open pyserial handle ``.ser``."""

    def __init__(self, profile: str, *, world: World | dict | str | Path | None = None, state_dir: str | Path | None = None,
                 pacing: bool = False, baud: int | None = None, open_serial: bool = True):
        self.profile_cls = find_profile(profile)
        if isinstance(world, dict):
            world = World.from_dict(world)
        elif isinstance(world, (str, Path)):
            world = World.load(world)
        if world is not None:
            self.profile_cls.validate_world(world)
        self.world = world
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="atemu-state-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.pacing = pacing
        self.baud = baud
        self.open_serial = open_serial
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.module: Module | None = None
        self.transport: PtyTransport | None = None
        super().__init__(None)
        self.link = Path(tempfile.mkdtemp(prefix="atemu-pty-")) / "tty"

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Emu":
        self.thread.start()

        async def boot() -> None:
            self.module = Module(self.profile_cls, world=self.world, state_dir=self.state_dir,
                                 baud=self.baud, pacing=self.pacing)
            self.transport = PtyTransport(self.module, self.link)
            await self.transport.start()
            await self.module.start()

        self.call(boot())
        if self.open_serial:
            self.open()
        return self

    def open(self) -> serial.Serial:
        self.ser = serial.Serial(str(self.link), self.baud or self.profile_cls.default_baud, timeout=0.05)
        return self.ser

    def close_serial(self) -> None:
        if self.ser is not None:
            self.ser.close()
            self.ser = None

    def stop(self) -> None:
        self.close_serial()
        if self.module is not None:
            async def down() -> None:
                await self.module.stop()
                await self.transport.stop()
            try:
                self.call(down(), timeout=15)
            except Exception:
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Emu":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the module's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the module's loop (to read or change state safely)."""
        async def run() -> Any:
            return fn(*args)
        return self.call(run())

    # ---- UART ----------------------------------------------------------------------------------
    def write(self, data: bytes | str) -> None:
        assert self.ser is not None
        super().write(data)

    read_until = SerialReader.until

    FINAL = rb"\r\n(OK|ERROR[^\r]*|\+CME ERROR: ?\d+|SEND OK|SEND FAIL)\r\n"

    def cmd(self, line: str | bytes, timeout: float = 5.0, final: bytes | str | None = None) -> bytes:
        """Send ``line`` + CR and return the response up to its final result line."""
        self.write((line.encode() if isinstance(line, str) else line) + b"\r")
        return self.read_until(final or self.FINAL, timeout)

    def expect_nothing(self, quiet: float = 0.3) -> None:
        got = self.drain(quiet)
        assert got == b"", f"unexpected output {got!r}"


class Cli:
    """``atemu run ...`` as a subprocess; waits for its ready line."""

    def __init__(self, *args: str, env: dict | None = None, timeout: float = 15.0):
        self.args = [sys.executable, "-m", "atemu.cli", *args]
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.ready_line = ""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if line:
                self.ready_line = line.strip()
                break
            if self.proc.poll() is not None:
                break
        if not self.ready_line:
            err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"atemu did not become ready: {err}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stderr(self) -> str:
        return self.proc.stderr.read().decode() if self.proc.stderr else ""
