"""Transcripts: record, replay and summarise what happened on a module's UART.

Format: JSON lines, one object per event, as produced by ``Module.trace`` observers. Every record
has ``t`` (``time.monotonic()`` seconds), ``module`` (name) and ``event``:

* ``rx`` / ``tx``: ``data`` (hex) bytes host->module / module->host, exactly as on the wire
  (``tx`` is after any UART fault; ``rx`` before it, i.e. what the host sent);
* ``command`` (``name``, ``form``, ``line``), ``result`` (``text``), ``error`` (``kind``,
  ``message``), ``line_error`` (``kind``), ``data`` (a data phase ended: ``n``, ``reason``);
* ``urc`` (``text``, ``n`` raw bytes after it), ``boot``, ``reboot``;
* ``world`` (``change`` and its fields), ``fault`` (``action`` armed/fired/cleared, ``id``,
  ``kind``, ``params``, ``seed``...);
* ``meta`` (first line written by ``atemu run --log`` / the proxy: ``profile``, ``baud``).
"""
from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable


class TranscriptError(Exception):
    """A transcript file problem, with a one-line message saying what to do."""


class JsonlTranscript:
    """Observer writing one JSON object per line (``--log FILE``)."""

    def __init__(self, path: Path | str, meta: dict | None = None):
        self.f = open(path, "a", buffering=1)
        if meta:
            self({"t": time.monotonic(), "event": "meta", **meta})

    def __call__(self, rec: dict) -> None:
        if not self.f.closed:
            self.f.write(json.dumps(rec, default=str) + "\n")

    def close(self) -> None:
        self.f.close()


def load(path: Path | str) -> list[dict]:
    """Read a JSON-lines transcript; a bad line raises TranscriptError naming it."""
    out = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TranscriptError(f"{path}:{n}: not JSON ({e.msg}); is this an atemu --log file?") from None
                if not isinstance(rec, dict) or "event" not in rec:
                    raise TranscriptError(f"{path}:{n}: no 'event' field; is this an atemu --log file?")
                out.append(rec)
    except OSError as e:
        raise TranscriptError(f"cannot read {path}: {e.strerror}") from None
    return out


def _bytes(rec: dict) -> bytes:
    try:
        return bytes.fromhex(rec.get("data", ""))
    except ValueError:
        return b""


def split_lines(data: bytes) -> list[bytes]:
    """Module output split into lines for comparison (CR LF framing dropped, empty lines kept out)."""
    return [p for p in re.split(rb"\r\n|\r|\n", data) if p]


# ---------------------------------------------------------------------------------------- replay

@dataclass
class Exchange:
    """One host write and what the module answered until the next host write."""
    sent: bytes
    answer: bytes = b""
    gap: float = 0.0         # seconds between the previous host write and this one
    faults: list = field(default_factory=list)   # faults armed just before this write (fault records)


def exchanges(records: Iterable[dict]) -> tuple[bytes, list[Exchange]]:
    """Group a transcript: (output before the first host write, [host write + answer, ...])."""
    pre = bytearray()
    out: list[Exchange] = []
    last_t = None
    armed: list[dict] = []
    for r in records:
        ev = r.get("event")
        if ev == "fault" and r.get("action") == "armed":
            armed.append(r)
        elif ev == "rx":
            t = float(r.get("t", 0.0))
            gap = 0.0 if last_t is None else max(0.0, t - last_t)
            last_t = t
            out.append(Exchange(_bytes(r), gap=gap, faults=armed))
            armed = []
        elif ev == "tx":
            if out:
                out[-1].answer += _bytes(r)
            else:
                pre += _bytes(r)
    return bytes(pre), out


@dataclass
class Difference:
    step: int
    sent: bytes
    expected: list[bytes]
    got: list[bytes]

    def describe(self) -> str:
        return (f"step {self.step}: after sending {self.sent!r}\n"
                f"  recorded: {b' | '.join(self.expected)!r}\n"
                f"  now:      {b' | '.join(self.got)!r}")


@dataclass
class ReplayReport:
    steps: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


async def replay(records: list[dict], module: Any, *, settle: float = 0.2, timeout: float = 10.0,
                 keep_timing: bool = False, faults: bool = True) -> ReplayReport:
    """Send the recorded host bytes to ``module`` (started, no transport) and compare answers.

    With ``faults`` (default) every fault the transcript shows armed is armed again at the same
    point (before the same host write) with the same parameters and seed.

    For each host write the module's answer is collected until it has produced at least as many
    lines as recorded and been quiet for ``settle`` seconds (or ``timeout``). Lines are compared
    after removing empty lines, so pacing-dependent chunking does not matter.
    """
    got = bytearray()
    event = asyncio.Event()

    class Sink:
        def write(self, data: bytes) -> None:
            got.extend(data)
            event.set()

        async def drain(self) -> None:
            return None

    module.attach(Sink())
    pre, steps = exchanges(records)
    report = ReplayReport(steps=len(steps))
    loop = asyncio.get_running_loop()

    async def collect(expected: list[bytes]) -> bytes:
        deadline = loop.time() + timeout
        last_len, last_change = -1, loop.time()
        while True:
            now = loop.time()
            if len(got) != last_len:
                last_len, last_change = len(got), now
            enough = len(split_lines(bytes(got))) >= len(expected)
            quiet = now - last_change
            # enough lines and quiet: done; fewer lines than recorded: wait longer (they may come), not forever
            if (enough and quiet >= settle) or quiet >= max(1.0, 5 * settle) or now >= deadline:
                out = bytes(got)
                got.clear()
                return out
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), 0.05)
            except asyncio.TimeoutError:
                pass

    await collect(split_lines(pre))  # the boot banner
    for i, ex in enumerate(steps, 1):
        if keep_timing and ex.gap:
            await asyncio.sleep(min(ex.gap, 5.0))
        for fr in ex.faults if faults else ():
            kw = {k: fr.get(k) for k in ("times", "after", "at", "probability", "seed")}
            try:
                module.faults.inject(str(fr.get("kind")), **kw, **(fr.get("params") or {}))
            except Exception as e:
                report.differences.append(Difference(i, ex.sent, [b"(fault armed)"], [f"cannot re-arm: {e}".encode()]))
        module.feed(ex.sent)
        expected = split_lines(ex.answer)
        answer = split_lines(await collect(expected))
        if answer != expected:
            report.differences.append(Difference(i, ex.sent, expected, answer))
    module.attach(None)
    return report


def run_replay(path: Path | str, profile_cls: Any, *, world: Any = None, settle: float = 0.2,
               state_dir: Any = None, faults: bool = True) -> ReplayReport:
    """Replay a transcript file against a fresh module of ``profile_cls`` (blocking helper)."""
    import tempfile
    from .module import Module
    records = [r for r in load(path) if r.get("event") in ("rx", "tx", "fault")]

    async def go() -> ReplayReport:
        with tempfile.TemporaryDirectory(prefix="atemu-replay-") as tmp:
            m = Module(profile_cls, world=world, state_dir=state_dir or tmp, pacing=False)
            try:
                m.attach(None)
                await m.start()
                return await replay(records, m, settle=settle, faults=faults)
            finally:
                await m.stop()

    return asyncio.run(go())


# ---------------------------------------------------------------------------------------- coverage

#: error paths every profile has, because the engine produces them (emulator/module.py, grammar.py)
ENGINE_ERRORS = {
    "unknown": "no such command, or the command has no such form",
    "param": "a parameter is missing, of the wrong type or out of range",
    "line:syntax": "the line does not parse (quotes, commas)",
    "line:too_long": "the line is longer than the dialect's max_line",
    "line:garbage": "a line that does not start with AT (dialects with error_on_garbage)",
}
#: CmdError kinds that are not paths a host can take on purpose (a bug in the emulator)
_NOT_A_PATH = {"internal"}
_RAISED = re.compile(r"""CmdError\(\s*(?:kind\s*=\s*)?["'](\w+)["']""")
_RAISED_DEFAULT = re.compile(r"""CmdError\(\s*(?:\)|code\s*=|message\s*=)""")


def error_paths(profile_cls: Any) -> dict[str, str]:
    """The error paths a profile can take, keyed like the transcript records them (``error``
    records by ``kind``, ``line_error`` records as ``line:<kind>``), each with where it comes from.

    The engine's paths (:data:`ENGINE_ERRORS`; ``line:garbage`` only when the dialect answers
    garbage lines) plus every CmdError kind the profile's own code raises by name: the source of
    the modules defining the profile class and its bases (and, for a profile that is a package, or
    a module inside one, every loaded module of that package) is scanned for ``CmdError("<kind>"...)`` (and
    ``CmdError()`` / ``CmdError(code=...)``, which mean ``failed``). ``internal`` is left out."""
    paths = {k: "engine" for k in ENGINE_ERRORS}
    if not getattr(profile_cls.dialect, "error_on_garbage", True):
        del paths["line:garbage"]
    names: set[str] = set()
    prefixes: list[str] = []
    for cls in profile_cls.__mro__:
        mod = sys.modules.get(cls.__module__)
        if mod is None or mod.__name__.split(".")[0] in ("emulator", "builtins", "abc", "typing"):
            continue
        names.add(mod.__name__)
        if hasattr(mod, "__path__"):            # a package: all its modules
            prefixes.append(mod.__name__ + ".")
        elif "." in mod.__name__.rpartition(".")[0]:   # a module inside a profile's own package
            prefixes.append(mod.__name__.rpartition(".")[0] + ".")
    for name, m in sorted(list(sys.modules.items())):
        if m is None or not (name in names or any(name.startswith(p) for p in prefixes)):
            continue
        try:
            src = inspect.getsource(m)
        except (OSError, TypeError):
            continue
        kinds = set(_RAISED.findall(src))
        if _RAISED_DEFAULT.search(src):
            kinds.add("failed")
        for k in sorted(kinds - _NOT_A_PATH):
            paths.setdefault(k, "profile")
    return paths


def coverage(records: Iterable[dict], profile_cls: Any) -> dict:
    """Which commands/forms, URCs and error paths a host exercised, against the profile's declarations."""
    declared_forms: dict[str, set[str]] = {}
    for key, spec in profile_cls.commands.items():
        if key in profile_cls.builtins:
            continue
        forms = set()
        for form in spec.forms:
            forms.add(form.value)
        for sub in spec.subs:
            forms.add(f"write:{sub}")
        for sub in spec.sub_read:
            forms.add(f"read:{sub}")
        declared_forms[spec.name.upper()] = forms
    used_forms: dict[str, set[str]] = {}
    unknown: dict[str, int] = {}
    errors: dict[str, int] = {}
    urcs_seen: dict[str, int] = {}
    faults: list[dict] = []
    commands = 0
    for r in records:
        ev = r.get("event")
        if ev == "command":
            commands += 1
            name = str(r.get("name", "")).upper()
            form = str(r.get("form", ""))
            if name in declared_forms:
                line = str(r.get("line", ""))
                sub = None
                if form in ("write", "read") and any(":" in f for f in declared_forms[name]):
                    m = re.match(r'^AT' + re.escape(name) + r'=\s*"?([^",]+)', line, re.I)
                    if m and f"{form}:{m.group(1).lower()}" in declared_forms[name]:
                        sub = m.group(1).lower()
                    elif m and f"write:{m.group(1).lower()}" in declared_forms[name]:
                        sub = m.group(1).lower()
                        form = "write"
                used_forms.setdefault(name, set()).add(f"{form}:{sub}" if sub else form)
            elif name not in {k.upper() for k in profile_cls.builtins}:
                unknown[name or "AT"] = unknown.get(name or "AT", 0) + 1
        elif ev == "error":
            k = str(r.get("kind", "failed"))
            errors[k] = errors.get(k, 0) + 1
        elif ev == "line_error":
            k = "line:" + str(r.get("kind", ""))
            errors[k] = errors.get(k, 0) + 1
        elif ev == "urc":
            text = str(r.get("text", ""))
            for u in profile_cls.urcs:
                if text.startswith(u.name):
                    best = u.name
                    # prefer the longest matching prefix (+AWSPUBOPEN over +AWS)
                    for v in profile_cls.urcs:
                        if text.startswith(v.name) and len(v.name) > len(best):
                            best = v.name
                    urcs_seen[best] = urcs_seen.get(best, 0) + 1
                    break
        elif ev == "fault" and r.get("action") == "fired":
            faults.append({"kind": r.get("kind"), "params": r.get("params"), "seed": r.get("seed")})
    total_forms = sum(len(v) for v in declared_forms.values())
    used = sum(len(used_forms.get(k, set()) & v) for k, v in declared_forms.items())
    urc_names = [u.name for u in profile_cls.urcs]
    declared_errors = error_paths(profile_cls)
    return {
        "profile": profile_cls.name,
        "commands_sent": commands,
        "commands": {"used": len([k for k in declared_forms if used_forms.get(k)]), "declared": len(declared_forms)},
        "forms": {"used": used, "declared": total_forms},
        "urcs": {"used": len(urcs_seen), "declared": len(urc_names), "counts": urcs_seen,
                 "never": [u for u in urc_names if u not in urcs_seen]},
        "errors": {"used": len([k for k in errors if k in declared_errors]), "declared": len(declared_errors),
                   "counts": errors, "paths": declared_errors,
                   "never": [k for k in declared_errors if k not in errors],
                   "undeclared": sorted(k for k in errors if k not in declared_errors)},
        "per_command": {k: {"used": sorted(used_forms.get(k, set()) & v), "missing": sorted(v - used_forms.get(k, set()))}
                        for k, v in sorted(declared_forms.items())},
        "unknown_commands": unknown,
        "faults": faults,
    }


def format_coverage(cov: dict) -> str:
    def pct(d: dict) -> str:
        return f"{d['used']}/{d['declared']}" + (f" ({100 * d['used'] // d['declared']}%)" if d["declared"] else "")
    lines = [f"{cov['profile']}: {cov['commands_sent']} commands sent",
             f"  commands: {pct(cov['commands'])}", f"  forms:    {pct(cov['forms'])}",
             f"  URCs:     {pct(cov['urcs'])}", f"  errors:   {pct(cov['errors'])} {cov['errors']['counts']}"]
    for name, d in cov["per_command"].items():
        mark = "ok  " if not d["missing"] else ("part" if d["used"] else "--  ")
        lines.append(f"  [{mark}] AT{name}: used {', '.join(d['used']) or '-'}; missing {', '.join(d['missing']) or '-'}")
    if cov["urcs"]["never"]:
        lines.append(f"  URCs never seen: {', '.join(cov['urcs']['never'])}")
    if cov["errors"].get("never"):
        lines.append(f"  error paths never taken: {', '.join(cov['errors']['never'])}")
    if cov["unknown_commands"]:
        lines.append(f"  commands the profile does not know: {cov['unknown_commands']}")
    if cov["faults"]:
        lines.append(f"  faults fired: {len(cov['faults'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI

def _fail(msg: str, code: int = 2) -> int:
    import sys
    print(f"atemu: error: {msg}", file=sys.stderr)
    return code


def _profile_for(args: Any, records: list[dict]) -> Any:
    from .profile import find_profile
    name = args.profile or next((r.get("profile") for r in records if r.get("event") == "meta" and r.get("profile")), None)
    if not name:
        raise TranscriptError("the transcript does not say which profile it is for: add --profile NAME")
    try:
        return find_profile(name)
    except KeyError as e:
        raise TranscriptError(str(e.args[0])) from None


def cmd_replay(args: Any) -> int:
    """``atemu replay FILE [--profile P]``: exit 0 when identical, 1 when the answers differ."""
    from .world import World, WorldError
    try:
        records = load(args.file)
        cls = _profile_for(args, records)
        world = World.load(args.world) if args.world else None
    except (TranscriptError, WorldError) as e:
        return _fail(str(e))
    report = run_replay(args.file, cls, world=world, settle=args.settle, faults=not args.no_faults)
    if report.identical:
        print(f"atemu: replay of {report.steps} host writes against {cls.name}: no differences")
        return 0
    for d in report.differences:
        print(d.describe())
    print(f"atemu: {len(report.differences)} of {report.steps} host writes got a different answer")
    return 1


def cmd_coverage(args: Any) -> int:
    try:
        records = load(args.file)
        cls = _profile_for(args, records)
    except TranscriptError as e:
        return _fail(str(e))
    cov = coverage(records, cls)
    print(json.dumps(cov, indent=2) if args.json else format_coverage(cov))
    return 0


class _ProxyEnd:
    """Stands in for a Module for PtyTransport: what the host writes goes to the device."""

    def __init__(self, baud: int, on_host: Any, on_baud: Any = None):
        self.baud = baud
        self.sink: Any = None
        self.host_baud: int | None = None
        self._on_host = on_host
        self._on_baud = on_baud

    def attach(self, sink: Any) -> None:
        self.sink = sink

    def feed(self, data: bytes) -> None:
        self._on_host(data)

    def host_baud_changed(self, baud: int | None) -> None:
        if baud and baud != self.host_baud and self._on_baud is not None:
            self._on_baud(baud)
        self.host_baud = baud


async def proxy(device: str, pty: str | None, baud: int, observers: list, ready: Any = None,
                stop: "asyncio.Event | None" = None) -> None:
    """Relay bytes between a host-facing pty and ``device``, telling ``observers`` (rx = host->device,
    tx = device->host) in the transcript format."""
    import serial
    from .uart import PtyTransport
    loop = asyncio.get_running_loop()
    try:
        ser = serial.serial_for_url(device, baud, timeout=0)
    except (serial.SerialException, ValueError) as e:
        raise TranscriptError(f"cannot open the device {device}: {e}; check the path and that nothing else uses it") from None

    def trace(event: str, data: bytes) -> None:
        rec = {"t": time.monotonic(), "module": "proxy", "event": event, "data": data.hex()}
        for o in observers:
            o(rec)

    def host_to_device(data: bytes) -> None:
        trace("rx", data)
        try:
            ser.write(data)
        except serial.SerialException as e:
            trace("error", str(e).encode())

    def baud_changed(new: int) -> None:  # the host changed its line speed: follow it on the device
        rec = {"t": time.monotonic(), "module": "proxy", "event": "baud", "baud": new}
        for o in observers:
            o(rec)
        try:
            ser.baudrate = new
        except (serial.SerialException, ValueError, OSError):
            pass

    end = _ProxyEnd(baud, host_to_device, baud_changed)
    tr = PtyTransport(end, pty)  # type: ignore[arg-type]
    await tr.start()

    def device_to_host() -> None:
        try:
            data = ser.read(65536)
        except (serial.SerialException, OSError):
            return
        if data:
            trace("tx", data)
            if end.sink is not None:
                end.sink.write(data)

    fd = None
    try:
        fd = ser.fileno()
    except Exception:
        fd = None
    poll_task = None
    if fd is not None:
        loop.add_reader(fd, device_to_host)
    else:  # a URL port without a file descriptor: poll
        async def poll() -> None:
            while True:
                device_to_host()
                await asyncio.sleep(0.005)
        poll_task = loop.create_task(poll())
    if ready is not None:
        ready(tr.port)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        if fd is not None:
            loop.remove_reader(fd)
        if poll_task is not None:
            poll_task.cancel()
        await tr.stop()
        ser.close()


def cmd_proxy(args: Any) -> int:
    import signal

    async def go() -> int:
        log = JsonlTranscript(args.log, meta={"profile": args.profile, "baud": args.baud, "module": "proxy",
                                              "device": args.device})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await proxy(args.device, args.pty, args.baud, [log],
                        ready=lambda port: print(f"atemu: proxy for {args.device} ready on {port}", flush=True),
                        stop=stop)
        except TranscriptError as e:
            return _fail(str(e))
        finally:
            log.close()
        return 0

    return asyncio.run(go())
