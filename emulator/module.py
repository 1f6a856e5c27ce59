"""The runtime of one emulated module: engine + profile + paced UART output + tasks.

Everything here runs on one asyncio loop and never blocks it, so one process can host many
modules. A :class:`Module` is transport-agnostic: a transport (pty, TCP, RFC 2217, a spawned
program, or an in-process test harness) calls :meth:`Module.feed` with received bytes and gives
the module a sink (``write(bytes)`` + ``async drain()``) for the paced output.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from .grammar import (CommandLine, CommandSpec, Data, DataCancelled, DataOverflow, Engine, EscapeSequence,
                      Event, Form, FormSpec, LineError, ParamError, TransparentData, bind)
from .profile import CmdError, Profile
from .state import Settings, default_state_dir
from .world import World

log = logging.getLogger("atemu")


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...


class Pacer:
    """Serialises module output and releases it at the UART rate (10 bits per byte, 8N1).

    Bytes are handed to the sink when their last bit would have arrived on a real line. The
    schedule is kept against an absolute time, so long outputs do not drift; an idle line
    restarts the schedule at "now".
    """

    TICK = 0.004  # seconds of line time per write at most

    def __init__(self, baud: int, enabled: bool = True):
        self.baud = baud
        self.enabled = enabled
        self.sink: Sink | None = None
        self._q = bytearray()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._t = 0.0
        self._task: asyncio.Task | None = None
        self.sent = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="atemu-pacer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self.enabled and not self._q and self._idle.is_set() and self.sink is not None \
                and not getattr(self.sink, "backlog", 0):
            # unpaced and nothing queued: hand the bytes over now (order is preserved)
            self.sent += len(data)
            try:
                self.sink.write(data)
            except Exception as e:
                log.debug("uart write failed: %s", e)
            return
        if data:
            self._q += data
            self._idle.clear()
            self._wake.set()

    def discard(self) -> None:
        """Drop output not yet sent (reboot)."""
        self._q.clear()

    async def drained(self) -> None:
        """Wait until everything written so far has left the UART."""
        await self._idle.wait()

    @property
    def pending(self) -> int:
        return len(self._q)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            # a burst starts now: schedule from here; within the burst the schedule is absolute,
            # so sleep overshoot never accumulates into drift
            self._t = max(self._t, loop.time())
            while self._q:
                sink = self.sink
                if not self.enabled or self.baud <= 0:
                    chunk = bytes(self._q)
                    self._q.clear()
                    await self._emit(sink, chunk)
                    continue
                per_byte = 10.0 / self.baud
                n = max(1, int(self.TICK / per_byte))
                chunk = bytes(self._q[:n])
                del self._q[:n]
                self._t += len(chunk) * per_byte
                delay = self._t - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._emit(sink, chunk)
            self._idle.set()

    async def _emit(self, sink: Sink | None, chunk: bytes) -> None:
        self.sent += len(chunk)
        if sink is None:
            return  # no host attached: bytes on a real UART with nobody listening are lost
        try:
            sink.write(chunk)
            await sink.drain()
        except Exception as e:  # a vanished host must not kill the module
            log.debug("uart write failed: %s", e)


class Ctx:
    """What a handler gets: respond, read data phases, reach the module."""

    def __init__(self, module: "Module", cl: CommandLine, spec: CommandSpec | None, fs: FormSpec | None):
        self.module = module
        self.line = cl
        self.spec = spec
        self.form_spec = fs
        self.finished = False
        self._infos = 0

    @property
    def profile(self) -> Profile:
        return self.module.profile

    def info(self, text: str) -> None:
        """An information response line (before the final result)."""
        self.module._write_line(text, first=self._infos == 0)
        self._infos += 1

    def raw(self, data: bytes | str) -> None:
        """Raw bytes, unframed (prompts like ``> ``, binary payloads)."""
        self.module.write(data.encode() if isinstance(data, str) else data)

    def final(self, text: str) -> None:
        """The final result line (``OK``, ``ERROR``, ``SEND OK``...). Ends the command."""
        if not self.finished:
            self.finished = True
            self.module._write_line(text, first=True)
            suffix = self.module.profile.result_suffix()
            if suffix:
                self.module.write(suffix)
            self.module.trace("result", text=text)

    def ok(self) -> None:
        self.final(self.module.profile.format_ok())

    def error(self, err: CmdError | None = None) -> None:
        self.final(self.module.profile.format_error(err or CmdError()))

    def no_final(self) -> None:
        """Mark the command finished without a final line (e.g. the ``>`` prompt ended it)."""
        self.finished = True

    async def read_data(self, length: int | None = None, *, timeout: float | None = None,
                        marker: bytes | None = None, terminator: bytes | None = None,
                        cancel: bytes | None = None, max_len: int | None = None,
                        idle: float | None = None, abort: bytes | None = None,
                        marker_timeout: float | None = None) -> Event:
        """Enter a data phase and wait for its end.

        Returns :class:`Data`, :class:`DataCancelled` or :class:`DataOverflow`; on timeout
        returns ``Data(partial, reason="timeout")``. Bytes sent early by the host count.
        ``idle``: also time out when no byte has arrived from the host for that many seconds
        (counted from the start of the phase or the last byte received, whichever is later).
        ``marker_timeout``: the ``marker`` must arrive within that many seconds of the start, a
        fixed deadline that skipped bytes do not extend (a host polling ``AT`` gets the module
        back); ``abort`` (e.g. ``+++``) among the skipped bytes ends the phase at once
        (:class:`DataCancelled`).
        """
        eng = self.module.engine
        eng.expect_data(length, marker=marker, terminator=terminator, cancel=cancel, max_len=max_len, abort=abort)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        start = loop.time()
        mono_start = time.monotonic()

        def quiet_until() -> float:
            if marker_timeout is not None and eng.awaiting_marker:
                return start + marker_timeout
            return max(start, start + (self.module.last_rx - mono_start)) + idle

        while True:
            dl = deadline
            if idle is not None or (marker_timeout is not None and eng.awaiting_marker):
                if idle is None:
                    idle = marker_timeout
                q = quiet_until()
                dl = q if dl is None else min(dl, q)
            ev = await self.module._pull(dl)
            if ev is None:
                if idle is not None and (deadline is None or loop.time() < deadline) \
                        and loop.time() < quiet_until():
                    continue  # bytes arrived meanwhile: the idle clock restarted
                return Data(eng.cancel_data(), "timeout")
            if isinstance(ev, (Data, DataCancelled, DataOverflow)):
                self.module.trace("data", n=len(ev.payload), reason=type(ev).__name__)
                return ev


class Module:
    """One emulated module. Create, attach a transport sink, ``await start()``."""

    #: seconds a command line ended by a CR that was the last byte received waits for the LF a
    #: CR LF host writes next (byte by byte, or in a separate write): the LF is then echoed with
    #: the CR before the response and never becomes payload. Lines followed by more bytes (CR LF
    #: in one write, or the next command) are not delayed, and once the host showed it ends lines
    #: with CR alone, its lines are not delayed either (see ``Engine.lf_grace``).
    LF_GRACE = 0.02

    def __init__(self, profile_cls: type[Profile], *, world: World | None = None, state_dir: Path | str | None = None,
                 baud: int | None = None, pacing: bool = True, name: str | None = None):
        self.profile_cls = profile_cls
        self.name = name or profile_cls.name
        self.world = world or World.default()
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(profile_cls.name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(self.state_dir / "settings.json")
        self.baud = baud or profile_cls.default_baud
        self.pacer = Pacer(self.baud, pacing)
        self.engine = Engine(profile_cls.dialect, profile_cls.commands, lf_grace=self.LF_GRACE)
        from .net.dns import Resolver
        self.resolver = Resolver(self.world.network.hosts)
        self.profile: Profile = profile_cls(self)
        self._rx = asyncio.Event()
        self._busy = False
        self._deferred: list[bytes] = []
        self._injected: list[Event] = []   # events the module issues to itself (see inject())
        self._cmd_task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self.observers: list[Callable[[dict], None]] = []
        self.coverage: dict[str, int] = {}
        self.running = False
        self.host_baud: int | None = None
        self.frozen = False
        #: why the module last booted: "power" (start, a power cycle), "pin" (the host pulsed the reset
        #: pin) or "command" (a reset the module did itself: AT+RST...); profiles read it in boot()
        self.boot_cause = "power"
        #: time.monotonic() of the last byte received from the host (0.0: none yet)
        self.last_rx = 0.0
        #: the command line being executed (or last executed), for profiles that number errors by module
        self.current_line: CommandLine | None = None
        #: the fault registry while a fault needs per-byte/per-command hooks, else None (zero cost)
        self.fault_hooks = None
        from .faults import FaultRegistry
        self.faults = FaultRegistry(self)

    # ---- lifecycle --------------------------------------------------------------------------
    def attach(self, sink: Sink | None) -> None:
        """Connect (or with None, disconnect) the host side of the UART."""
        self.pacer.sink = sink

    async def start(self) -> None:
        self.pacer.start()
        self.running = True
        self._cmd_task = asyncio.get_running_loop().create_task(self._command_loop(), name=f"atemu-{self.name}")
        await self.profile.boot()
        self.trace("boot")

    async def stop(self) -> None:
        """Power off: cancel everything, close every socket. Safe to call twice."""
        if not self.running:
            return
        self.running = False
        if self._cmd_task:
            self._cmd_task.cancel()
        for t in list(self.tasks):
            t.cancel()
        try:
            await asyncio.wait_for(self.profile.shutdown(), 5)
        except Exception as e:
            log.warning("%s: shutdown: %s", self.name, e)
        for t in [self._cmd_task, *self.tasks]:
            if t is not None:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
        self.tasks.clear()
        await self.pacer.stop()

    async def reboot(self, *, boot_delay: float = 0.0, keep_output: bool = True, cause: str = "command") -> None:
        """Reset the module: tear down the profile, clear volatile state, boot again. ``cause`` is
        :attr:`boot_cause` for the new boot.

        Must not be awaited from the command loop itself; use :meth:`request_reboot` there.
        """
        self.boot_cause = cause
        if keep_output:
            await self.pacer.drained()
        else:
            self.pacer.discard()
        if self._cmd_task:
            self._cmd_task.cancel()
            try:
                await self._cmd_task
            except (asyncio.CancelledError, Exception):
                pass
        current = asyncio.current_task()
        for t in list(self.tasks):
            if t is not current:
                t.cancel()
        self.profile.raw_input = False       # the old profile takes no more bytes (a bootloader's)
        try:
            await asyncio.wait_for(self.profile.shutdown(), 5)
        except Exception as e:
            log.warning("%s: shutdown: %s", self.name, e)
        self.engine.reset()
        self._deferred.clear()
        self._injected.clear()
        self._busy = False
        self.trace("reboot")
        if boot_delay:
            await asyncio.sleep(boot_delay)
        self.engine.reset()  # what arrived while the module was booting is lost, as on hardware
        self.resolver.servers = []  # DNS servers a profile set are its RAM state (it may set them again)
        self.profile = self.profile_cls(self)
        self._cmd_task = asyncio.get_running_loop().create_task(self._command_loop(), name=f"atemu-{self.name}")
        await self.profile.boot()

    def request_reboot(self, boot_delay: float = 0.0, cause: str = "command") -> None:
        """Schedule a reboot after the current command's output has been sent."""
        asyncio.get_running_loop().create_task(self.reboot(boot_delay=boot_delay, cause=cause))

    def spawn(self, coro: Awaitable, name: str | None = None) -> asyncio.Task:
        """Run a background job owned by the module (cancelled on stop/reboot); errors are logged."""
        task = asyncio.get_running_loop().create_task(self._guard(coro), name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, coro: Awaitable) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("%s: background task failed:\n%s", self.name, traceback.format_exc())

    # ---- UART input --------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the host."""
        if not data:
            return
        self.trace("rx", data=data)
        if self.frozen:
            return
        if self.fault_hooks is not None:
            data = self.fault_hooks.on_uart(data, "rx")
            if not data:
                return
        self.last_rx = time.monotonic()
        if self.profile.raw_input:
            data = self.profile.take_raw(data)       # e.g. a bootloader's handshake bytes
            if not data:
                return
        self.engine.feed(data, self.last_rx)
        self._rx.set()

    def inject(self, ev: Event) -> None:
        """Queue an event ahead of UART input, e.g. a ``CommandLine`` the module runs by itself (a
        profile re-entering a transparent mode on reconnect). It is taken by the command loop (never
        by a data phase or transparent session) once the current command, if any, has finished."""
        self._injected.append(ev)
        self._rx.set()

    def set_baud(self, baud: int) -> None:
        """Change the module's UART rate (pacing follows at once)."""
        self.baud = baud
        self.pacer.baud = baud
        self.check_host_baud()

    def host_baud_changed(self, baud: int | None) -> None:
        """A transport saw the host set its line speed."""
        if baud == self.host_baud:
            return
        self.host_baud = baud
        self.check_host_baud()

    def check_host_baud(self) -> None:
        if self.host_baud and self.host_baud != self.baud:
            log.warning("%s: host opened the port at %d baud but the module runs at %d baud; "
                        "a real module would see garbage", self.name, self.host_baud, self.baud)

    async def _pull(self, deadline: float | None = None) -> Event | None:
        """Next engine event; None when ``deadline`` (loop time) passes first."""
        loop = asyncio.get_running_loop()
        while True:
            if self._injected and not self.engine.in_data_mode and not self.engine.transparent:
                return self._injected.pop(0)
            ev = self.engine.next_event()
            echo = self.engine.take_output()
            if echo:
                self.write(echo)
            if ev is not None:
                return ev
            self._rx.clear()
            timeout = None
            guard = self.engine.next_deadline()
            if guard is not None:
                timeout = max(0.0, guard - time.monotonic())
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    return None
                timeout = left if timeout is None else min(timeout, left)
            if timeout is None:  # the common case: no task or timer per command
                await self._rx.wait()
                continue
            try:
                await asyncio.wait_for(self._rx.wait(), timeout)
            except asyncio.TimeoutError:
                esc = self.engine.poll(time.monotonic())
                if esc is not None:
                    return esc

    async def _command_loop(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the module must survive anything the host sends
                log.error("%s: command loop error:\n%s", self.name, traceback.format_exc())
                self._end_command()

    async def _step(self) -> None:
            ev = await self._pull()
            if isinstance(ev, CommandLine):
                await self.execute(ev)
            elif isinstance(ev, LineError):
                self.trace("line_error", kind=ev.kind)
                self._busy = True
                ctx = Ctx(self, CommandLine("", Form.EXEC, [], ev.line), None, None)
                ctx.error(CmdError(ev.kind, message=f"bad line ({ev.kind})"))
                self._end_command()
            else:
                # stray data-mode events outside a data phase cannot happen; ignore defensively
                pass

    # ---- command execution -----------------------------------------------------------------
    def resolve(self, cl: CommandLine) -> tuple[CommandSpec | None, FormSpec | None, int]:
        """Find the spec and form for a parsed line; returns (spec, form spec, args to skip)."""
        spec = self.profile.commands.get(cl.name if self.profile.dialect.case_insensitive else cl.name)
        if spec is None:
            return None, None, 0
        if cl.form == Form.WRITE and cl.args and (spec.subs or spec.sub_read):
            key = cl.args[0].text.lower()
            if len(cl.args) == 1 and key in spec.sub_read:
                return spec, spec.sub_read[key], 1
            if key in spec.subs:
                return spec, spec.subs[key], 1
            if Form.WRITE not in spec.forms:
                return spec, None, 0
        return spec, spec.forms.get(cl.form), 0

    async def execute(self, cl: CommandLine) -> None:
        self._busy = True
        self.current_line = cl
        spec, fs, skip = self.resolve(cl)
        ctx = Ctx(self, cl, spec, fs)
        self.trace("command", name=cl.name, form=cl.form.value, line=cl.line)
        try:
            if self.fault_hooks is not None:
                action = self.fault_hooks.on_command(cl.name)
                if action is not None:
                    if action[0] == "reboot":  # power glitch in the middle of this command
                        self.request_reboot(cause="power")
                        await asyncio.sleep(3600)
                    elif action[0] == "delay":
                        await asyncio.sleep(action[1])
                    else:
                        from .faults import apply_command_fault
                        apply_command_fault(self, ctx, action)
                        if ctx.finished:
                            return
            if spec is None:
                raise CmdError("unknown", message=f"unknown command AT{cl.name}")
            if cl.form == Form.TEST and (fs is None or fs.handler is None):
                if fs is not None and fs.test is not None:
                    if fs.test:
                        ctx.info(fs.test)
                    self._cover(spec, "test")
                    ctx.ok()
                    return
                if not self.profile.dialect.test_forms:
                    raise CmdError("unknown", message=f"AT{cl.name}=? is not supported", param_kind="form")
                line = self.profile.test_line(spec)
                if line:
                    ctx.info(line)
                self._cover(spec, "test")
                ctx.ok()
                return
            if fs is None or fs.handler is None:
                raise CmdError("unknown", message=f"AT{cl.name} has no {cl.form.value} form", param_kind="form")
            try:
                values = bind(fs, cl.args, self.profile.dialect, skip)
            except ParamError as e:
                raise CmdError("param", message=str(e), param_kind=e.kind) from None
            self._cover(spec, cl.form.value if fs.sub is None else f"{cl.form.value}:{fs.sub}")
            handler = getattr(self.profile, fs.handler)
            result = await handler(ctx, *values)
            if not ctx.finished:
                if isinstance(result, str):
                    ctx.final(result)
                else:
                    ctx.ok()
        except CmdError as e:
            self.trace("error", kind=e.kind, message=e.message)
            log.debug("%s: %s -> %s", self.name, cl.line, e.message)
            if not ctx.finished:
                ctx.error(e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.error("%s: internal error in AT%s:\n%s", self.name, cl.name, traceback.format_exc())
            if not ctx.finished:
                ctx.error(CmdError("internal", message="internal error"))
        finally:
            self._end_command()

    def _cover(self, spec: CommandSpec, form: str) -> None:
        key = f"AT{spec.name} {form}"
        self.coverage[key] = self.coverage.get(key, 0) + 1

    def _end_command(self) -> None:
        self._busy = False
        if self._deferred:
            for chunk in self._deferred:
                self.write(chunk)
            self._deferred.clear()

    # ---- UART output --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Raw bytes to the host, paced."""
        if data:
            if self.fault_hooks is not None:
                data = self.fault_hooks.on_uart(data, "tx")
                if not data:
                    return
            self.trace("tx", data=data)
            self.pacer.write(data)

    def _frame(self, text: str, first: bool = True) -> bytes:
        if isinstance(text, str):
            text = self.profile.render_line(text)
        body = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        if self.profile.dialect.leading_crlf and first:
            return b"\r\n" + body + b"\r\n"
        return body + b"\r\n"

    def _write_line(self, text: str, first: bool = True) -> None:
        self.write(self._frame(text, first))

    def urc(self, text: str, data: bytes = b"", *, trailer: bytes = b"") -> None:
        """An unsolicited result code (with optional raw bytes after its line).

        While a command is executing, URCs wait until its final result so that a URC never
        splits a response.
        """
        chunk = self.profile.frame_urc(self._frame(text) + data + trailer)
        self.trace("urc", text=text, n=len(data))
        if self._busy:
            self._deferred.append(chunk)
        else:
            self.write(chunk)

    async def drain_output(self) -> None:
        """Wait until all output so far has been sent at the UART rate."""
        await self.pacer.drained()

    # ---- observation -------------------------------------------------------------------------
    def trace(self, event: str, **kw: Any) -> None:
        """Tell observers (transcript, control plane) what happened; values that are bytes become hex."""
        if not self.observers:
            return
        rec = {"t": time.monotonic(), "module": self.name, "event": event}
        for k, v in kw.items():
            rec[k] = v.hex() if isinstance(v, (bytes, bytearray)) else v
        for obs in list(self.observers):
            try:
                obs(rec)
            except Exception:
                pass


class JsonlTranscript:
    """Observer writing one JSON object per line (``--log FILE``)."""

    def __init__(self, path: Path | str):
        self.f = open(path, "a", buffering=1)

    def __call__(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        self.f.close()
