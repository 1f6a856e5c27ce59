"""The module runtime in-process (no pty): URC ordering, robustness, reboot, pacing schedule."""
from __future__ import annotations

import asyncio
import time

from hypothesis import HealthCheck, given, settings, strategies as st

from atemu.grammar import Dialect, Form, Int
from atemu.module import Module, Pacer
from atemu.profile import CmdError, Profile, command
from atemu.profiles.eseye_anynet import EseyeAnynet


class Sink:
    def __init__(self):
        self.data = bytearray()
        self.times: list[tuple[float, int]] = []

    def write(self, d: bytes) -> None:
        self.data += d
        self.times.append((time.monotonic(), len(d)))

    async def drain(self) -> None:
        pass


class Demo(Profile):
    name = "demo"
    dialect = Dialect(echo_default=False)

    @command("+SLOW", Form.EXEC, family="demo")
    async def slow(self, ctx):
        self.module.urc("+EVT: during")       # must not split the response
        await asyncio.sleep(0.05)
        ctx.info("+SLOW: 1")

    @command("+BOOM", Form.EXEC, family="demo")
    async def boom(self, ctx):
        raise RuntimeError("handler bug")

    @command("+FAIL", Form.WRITE, Int("code", 0, 999), family="demo")
    async def fail(self, ctx, code):
        raise CmdError("failed", code=code)

    @command("+REBOOT", Form.EXEC, family="demo")
    async def reboot(self, ctx):
        ctx.ok()
        self.module.request_reboot(0.01)

    def format_error(self, err):
        return f"+CME ERROR: {err.code}" if err.code is not None else "ERROR"

    async def boot(self):
        self.module.urc("READY")


async def run_lines(profile, lines: list[bytes], tmp, settle: float = 0.2) -> bytes:
    m = Module(profile, state_dir=tmp, pacing=False)
    sink = Sink()
    m.attach(sink)
    await m.start()
    for line in lines:
        m.feed(line)
    await asyncio.sleep(settle)
    await m.stop()
    return bytes(sink.data)


def test_urc_waits_for_final_result(tmp_path):
    out = asyncio.run(run_lines(Demo, [b"AT+SLOW\r"], tmp_path))
    assert out == b"\r\nREADY\r\n\r\n+SLOW: 1\r\n\r\nOK\r\n\r\n+EVT: during\r\n"


def test_handler_crash_answers_error_and_module_lives(tmp_path):
    out = asyncio.run(run_lines(Demo, [b"AT+BOOM\r", b"AT\r", b"AT+FAIL=42\r", b"AT+FAIL=1000\r"], tmp_path))
    assert out == b"\r\nREADY\r\n\r\nERROR\r\n\r\nOK\r\n\r\n+CME ERROR: 42\r\n\r\nERROR\r\n"


def test_reboot_emits_banner_and_resets_echo(tmp_path):
    out = asyncio.run(run_lines(Demo, [b"ATE1\r", b"AT+REBOOT\r"], tmp_path, settle=0.3))
    assert out == b"\r\nREADY\r\n\r\nOK\r\nAT+REBOOT\r\r\nOK\r\n\r\nREADY\r\n"


def test_generated_test_form(tmp_path):
    out = asyncio.run(run_lines(Demo, [b"AT+FAIL=?\r", b"AT+SLOW=?\r", b"AT+NOPE=?\r"], tmp_path))
    assert out == b"\r\nREADY\r\n\r\n+FAIL: (0-999)\r\n\r\nOK\r\n\r\nOK\r\n\r\nERROR\r\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(noise=st.binary(max_size=400))
def test_any_bytes_then_at_answers_ok(noise, tmp_path):
    """Whatever the host sends, the module survives and answers the next AT (Eseye)."""
    async def go():
        m = Module(EseyeAnynet, state_dir=tmp_path, pacing=False)
        sink = Sink()
        m.attach(sink)
        await m.start()
        m.feed(noise)
        await asyncio.sleep(0)
        m.feed(b"\r\x1b\rATE0\rAT\r")
        for _ in range(100):
            await asyncio.sleep(0.005)
            if sink.data.endswith(b"\r\nOK\r\n\r\nOK\r\n") or sink.data.endswith(b"OK\r\n\r\nOK\r\n"):
                break
        ok = m._cmd_task is not None and not m._cmd_task.done()
        await m.stop()
        return bytes(sink.data), ok

    out, alive = asyncio.run(go())
    assert alive
    assert out.endswith(b"\r\nOK\r\n"), out[-80:]


def test_pacer_schedule_is_absolute():
    async def go():
        p = Pacer(115200, True)
        sink = Sink()
        p.sink = sink
        p.start()
        t0 = time.monotonic()
        p.write(b"x" * 5760)          # 0.5 s of line time at 115200
        await p.drained()
        dt = time.monotonic() - t0
        await p.stop()
        return dt, bytes(sink.data)
    dt, data = asyncio.run(go())
    assert data == b"x" * 5760
    assert 0.45 < dt < 1.5, dt


def test_no_pacing_is_immediate():
    async def go():
        p = Pacer(9600, False)
        sink = Sink()
        p.sink = sink
        p.start()
        t0 = time.monotonic()
        p.write(b"y" * 9600)
        await p.drained()
        await p.stop()
        return time.monotonic() - t0
    assert asyncio.run(go()) < 0.5
