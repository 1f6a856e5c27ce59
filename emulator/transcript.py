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
from typing import Any, Iterable, Iterator


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


def iter_records(path: Path | str) -> Iterator[dict]:
    """Stream a JSON-lines transcript, one record at a time (a 23 MB file never sits in memory as
    objects). Every unusable line raises TranscriptError naming the file and line number."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise TranscriptError(f"cannot read {path}: {e.strerror}") from None
    with f:
        n = 0
        while True:
            try:
                raw = f.readline()
            except OSError as e:
                raise TranscriptError(f"cannot read {path}: {e.strerror}") from None
            if not raw:
                return
            n += 1
            yield _record(path, n, raw)


def _record(path: Path | str, n: int, raw: bytes) -> dict:
    where = f"{path}:{n}"
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise TranscriptError(f"{where}: not UTF-8 text (byte {e.start + 1} of the line); "
                              "is this an atemu --log file?") from None
    if not line:
        return {"event": ""}
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise TranscriptError(f"{where}: not JSON ({e.msg}); is this an atemu --log file?") from None
    except RecursionError:
        raise TranscriptError(f"{where}: a JSON value nested too deeply; is this an atemu --log file?") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("event"), str):
        raise TranscriptError(f"{where}: no 'event' field; is this an atemu --log file?")
    t = rec.get("t", 0.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t or t in (float("inf"), float("-inf")):
        raise TranscriptError(f"{where}: 't' must be a number of seconds, not {str(t)[:40]!r}")
    ev = rec["event"]
    if ev == "meta" and rec.get("profile") is not None and not isinstance(rec["profile"], str):
        raise TranscriptError(f"{where}: the meta record's 'profile' must be a profile name (a string), "
                              f"not {str(rec['profile'])[:40]!r}")
    if ev in ("rx", "tx"):
        data = rec.get("data", "")
        try:
            bytes.fromhex(data) if isinstance(data, str) else None.hex()  # type: ignore[union-attr]
        except (ValueError, AttributeError):
            raise TranscriptError(f"{where}: 'data' of an {ev} record must be hex bytes") from None
    return rec


def load(path: Path | str) -> list[dict]:
    """Read a whole JSON-lines transcript (small files; replay and coverage stream with iter_records)."""
    return [r for r in iter_records(path) if r["event"]]


def meta(path: Path | str) -> dict:
    """The transcript's meta record (its first line), or {}; a bad first line raises TranscriptError."""
    for rec in iter_records(path):
        if rec["event"]:
            return rec if rec["event"] == "meta" else {}
    return {}


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


def iter_exchanges(records: Iterable[dict]) -> Iterator[Exchange]:
    """Group a transcript as it streams: first the output before the first host write (an Exchange
    with ``sent == b""``), then every host write with its answer."""
    cur = Exchange(b"")
    answer = bytearray()
    armed: list[dict] = []
    last_t = None
    for r in records:
        ev = r.get("event")
        if ev == "fault" and r.get("action") == "armed":
            armed.append(r)
        elif ev == "rx":
            cur.answer = bytes(answer)
            yield cur
            t = float(r.get("t", 0.0))
            gap = 0.0 if last_t is None else max(0.0, t - last_t)
            last_t = t
            cur, answer, armed = Exchange(_bytes(r), gap=gap, faults=armed), bytearray(), []
        elif ev == "tx":
            answer += _bytes(r)
    cur.answer = bytes(answer)
    yield cur


def exchanges(records: Iterable[dict]) -> tuple[bytes, list[Exchange]]:
    """Group a transcript: (output before the first host write, [host write + answer, ...])."""
    it = iter_exchanges(records)
    pre = next(it)
    return pre.answer, list(it)


#: OS range of ephemeral (local) ports: a local port printed by the module changes every run
def _ephemeral_ports() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_TOKENS = re.compile(rb"(\d{4}[-/]\d\d[-/]\d\d[ T,]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:[+-]\d+)?Z?"
                     rb"|\d\d/\d\d/\d\d,\d\d:\d\d:\d\d(?:[+-]\d+)?"
                     rb"|\d+)")
_DATE = re.compile(rb"\d{4}[-/]|\d\d/\d\d/")


class Normaliser:
    """Decides whether a recorded and a replayed line are "the same" apart from what the world makes
    different on every run:

    * local (ephemeral) port numbers: two different numbers both in the OS's ephemeral range
      (``/proc/sys/net/ipv4/ip_local_port_range``), e.g. the local port of Microchip's ``+SOCKIND``;
    * timestamps: two date-times (``2026-12-03 14:00:00``, ``26/12/03,14:00:00+00``), or two Unix times
      (10 digits) within a day of now;
    * what the profile declares in ``replay_volatile``: regular expressions whose groups are values
      the world chooses (Quectel: the broker's packet id in ``+QMTRECV``).

    ``raw=True`` compares bytes exactly (``atemu replay --raw``).
    """

    def __init__(self, profile_cls: Any = None, raw: bool = False):
        self.raw = raw
        self.ports = _ephemeral_ports()
        self.volatile = [re.compile(p.encode() if isinstance(p, str) else p)
                         for p in getattr(profile_cls, "replay_volatile", ()) or ()]

    def _mask(self, line: bytes) -> bytes:
        for rx in self.volatile:
            def blank(m: re.Match) -> bytes:
                out, pos = bytearray(), m.start()
                for g in range(1, (m.re.groups or 0) + 1):
                    if m.start(g) < 0:
                        continue
                    out += line[pos:m.start(g)] + b"\0"
                    pos = m.end(g)
                return bytes(out + line[pos:m.end()])
            line = rx.sub(blank, line)
        return line

    def _variable(self, a: bytes, b: bytes) -> bool:
        if _DATE.match(a) and _DATE.match(b):
            return True
        if a.isdigit() and b.isdigit():
            x, y = int(a), int(b)
            lo, hi = self.ports
            if lo <= x <= hi and lo <= y <= hi:
                return True
            if len(a) == len(b) == 10 and all(abs(v - time.time()) < 86400 for v in (x, y)):
                return True
        return False

    def same(self, expected: bytes, got: bytes) -> bool:
        if expected == got:
            return True
        if self.raw:
            return False
        e, g = self._mask(expected), self._mask(got)
        if e == g:
            return True
        te, tg = _TOKENS.split(e), _TOKENS.split(g)
        if len(te) != len(tg):
            return False
        # split() with one group alternates text, token, text, ...: odd items are numbers/dates
        return all(x == y or (i % 2 == 1 and self._variable(x, y)) for i, (x, y) in enumerate(zip(te, tg)))

    def same_lines(self, expected: list[bytes], got: list[bytes]) -> bool:
        return len(expected) == len(got) and all(self.same(a, b) for a, b in zip(expected, got))


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
    different: int = 0        # steps that differ (only the first ``KEEP`` are kept in ``differences``)

    KEEP = 200

    @property
    def identical(self) -> bool:
        return not self.different

    def add(self, d: Difference) -> None:
        self.different += 1
        if len(self.differences) < self.KEEP:
            self.differences.append(d)


async def replay(records: Iterable[dict], module: Any, *, settle: float = 0.2, timeout: float = 10.0,
                 keep_timing: bool = False, faults: bool = True, raw: bool = False) -> ReplayReport:
    """Send the recorded host bytes to ``module`` (started, no transport) and compare answers.

    ``records`` may be a stream: one exchange (plus the next, for its timing) is held at a time.

    With ``faults`` (default) every fault the transcript shows armed is armed again at the same
    point (before the same host write) with the same parameters and seed.

    For each host write the module's answer is collected until it has produced at least as many
    lines as recorded and been quiet for the settle time: ``settle`` seconds, but no longer than
    twice the recorded time to the next host write (at least 20 ms), so a host that wrote byte by
    byte replays at its own pace. Fewer lines than recorded wait up to ``max(1, 5 * settle)`` s of
    quiet, never more than ``timeout``. Lines are compared after removing empty lines (pacing-
    dependent chunking does not matter) and through a :class:`Normaliser` (``raw`` compares exactly).
    """
    got = bytearray()
    event = asyncio.Event()
    norm = Normaliser(getattr(module, "profile_cls", None), raw=raw)

    class Sink:
        def write(self, data: bytes) -> None:
            got.extend(data)
            event.set()

        async def drain(self) -> None:
            return None

    module.attach(Sink())
    report = ReplayReport()
    loop = asyncio.get_running_loop()

    async def collect(expected: list[bytes], quiet_enough: float) -> bytes:
        deadline = loop.time() + timeout
        last_len, last_change = -1, loop.time()
        while True:
            now = loop.time()
            if len(got) != last_len:
                last_len, last_change = len(got), now
            quiet = now - last_change
            # lines are counted only once the output is quiet (a big answer arrives in many chunks)
            enough = quiet >= quiet_enough and (not expected or len(split_lines(bytes(got))) >= len(expected))
            # enough lines and quiet: done; fewer lines than recorded: wait longer (they may come), not forever
            if enough or quiet >= max(1.0, 5 * settle) or now >= deadline:
                out = bytes(got)
                got.clear()
                return out
            event.clear()
            try:
                await asyncio.wait_for(event.wait(), min(0.05, quiet_enough))
            except asyncio.TimeoutError:
                pass

    it = iter_exchanges(records)
    pre = next(it)
    await collect(split_lines(pre.answer), settle)  # the boot banner
    ex = next(it, None)
    i = 0
    while ex is not None:
        nxt = next(it, None)
        i += 1
        report.steps = i
        if keep_timing and ex.gap:
            await asyncio.sleep(min(ex.gap, 5.0))
        for fr in ex.faults if faults else ():
            kw = {k: fr.get(k) for k in ("times", "after", "at", "probability", "seed")}
            try:
                module.faults.inject(str(fr.get("kind")), **kw, **(fr.get("params") or {}))
            except Exception as e:
                report.add(Difference(i, ex.sent, [b"(fault armed)"], [f"cannot re-arm: {e}".encode()]))
        module.feed(ex.sent)
        expected = split_lines(ex.answer)
        quiet = settle if nxt is None else min(settle, max(0.02, 2 * nxt.gap))
        answer = split_lines(await collect(expected, quiet))
        if not norm.same_lines(expected, answer):
            report.add(Difference(i, ex.sent, expected, answer))
        ex = nxt
    module.attach(None)
    return report


def run_replay(path: Path | str, profile_cls: Any, *, world: Any = None, settle: float = 0.2,
               state_dir: Any = None, faults: bool = True, raw: bool = False) -> ReplayReport:
    """Replay a transcript file against a fresh module of ``profile_cls`` (blocking helper); the file
    is streamed, never loaded whole."""
    import tempfile
    from .module import Module
    records = (r for r in iter_records(path) if r["event"] in ("rx", "tx", "fault"))

    async def go() -> ReplayReport:
        with tempfile.TemporaryDirectory(prefix="atemu-replay-") as tmp:
            m = Module(profile_cls, world=world, state_dir=state_dir or tmp, pacing=False)
            try:
                m.attach(None)
                await m.start()
                return await replay(records, m, settle=settle, faults=faults, raw=raw)
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
    core = __name__.rpartition(".")[0]                   # this package: its modules are the engine
    for cls in profile_cls.__mro__:
        mod = sys.modules.get(cls.__module__)
        if mod is None:
            continue
        name = mod.__name__
        # the built-in profiles live in <core>.profiles (installed) or profiles (an old source tree)
        root = next((r for r in (core + ".profiles.", "profiles.") if name.startswith(r)), "")
        if not root and (name == core or name.startswith(core + ".") or name in ("builtins", "abc", "typing")):
            continue
        names.add(name)
        inner = name[len(root):].rpartition(".")[0] if root else name.rpartition(".")[0]
        if hasattr(mod, "__path__"):            # a package: all its modules
            prefixes.append(name + ".")
        elif inner and (root or "." in inner):  # a module inside a profile's own package
            prefixes.append(name.rpartition(".")[0] + ".")
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


class _FromBytes:
    """Commands and URCs read back from the UART bytes, for transcripts without module events (``atemu
    proxy`` records only what crossed the wire): the profile's own grammar parses what the host sent;
    a module line that starts like one of the profile's URCs counts as that URC unless it belongs to
    the answer of the command of the same name still in progress."""

    FINALS = re.compile(r"^(OK|ERROR|SEND OK|SEND FAIL|\+CME ERROR.*|\+CMS ERROR.*)$")

    def __init__(self, profile_cls: Any):
        from .grammar import CommandLine, Engine
        self._cl = CommandLine
        self.engine = Engine(profile_cls.dialect, profile_cls.commands)
        self.urc_names = sorted({u.name for u in profile_cls.urcs}, key=len, reverse=True)
        self.pending: str | None = None
        self.tail = b""
        self.records: list[dict] = []

    def rx(self, data: bytes) -> None:
        self.engine.feed(data)
        while (ev := self.engine.next_event()) is not None:
            if isinstance(ev, self._cl):
                self.records.append({"event": "command", "name": ev.name, "form": ev.form.value, "line": ev.line.hex()})
                self.pending = ev.name.upper()
        self.engine.take_output()

    def tx(self, data: bytes) -> None:
        parts = re.split(rb"\r\n|\r|\n", self.tail + data)
        self.tail = parts.pop()
        for p in parts:
            line = p.decode("latin-1").strip()
            if not line:
                continue
            if self.FINALS.match(line):
                self.pending = None
                continue
            name = next((u for u in self.urc_names if line.startswith(u)), None)
            if name is not None and name.upper() != self.pending:
                self.records.append({"event": "urc", "text": line})

    def take(self) -> list[dict]:
        out, self.records = self.records, []
        return out


def coverage(records: Iterable[dict], profile_cls: Any) -> dict:
    """Which commands/forms, URCs and error paths a host exercised, against the profile's declarations.

    ``records`` may be a stream. A transcript without ``command`` events (``atemu proxy``) is read back
    from its UART bytes (:class:`_FromBytes`; error paths are then unknown)."""
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
    builtins = {k.upper() for k in profile_cls.builtins}
    urc_names = list(dict.fromkeys(u.name for u in profile_cls.urcs))   # a URC with two formats is one URC
    by_length = sorted(urc_names, key=len, reverse=True)                # +AWSPUBOPEN before +AWS

    class Tally:
        def __init__(self) -> None:
            self.used_forms: dict[str, set[str]] = {}
            self.unknown: dict[str, int] = {}
            self.errors: dict[str, int] = {}
            self.urcs_seen: dict[str, int] = {}
            self.commands = 0

        def add(self, r: dict) -> None:
            ev = r.get("event")
            if ev == "command":
                self.commands += 1
                name = str(r.get("name", "")).upper()
                form = str(r.get("form", ""))
                if name in declared_forms:
                    line = _line_text(r.get("line"))
                    sub = None
                    if form in ("write", "read") and any(":" in f for f in declared_forms[name]):
                        m = re.match(r'^AT' + re.escape(name) + r'=\s*"?([^",]+)', line, re.I)
                        if m and f"{form}:{m.group(1).lower()}" in declared_forms[name]:
                            sub = m.group(1).lower()
                        elif m and f"write:{m.group(1).lower()}" in declared_forms[name]:
                            sub = m.group(1).lower()
                            form = "write"
                    self.used_forms.setdefault(name, set()).add(f"{form}:{sub}" if sub else form)
                elif name not in builtins:
                    self.unknown[name or "AT"] = self.unknown.get(name or "AT", 0) + 1
            elif ev == "error":
                k = str(r.get("kind", "failed"))
                self.errors[k] = self.errors.get(k, 0) + 1
            elif ev == "line_error":
                k = "line:" + str(r.get("kind", ""))
                self.errors[k] = self.errors.get(k, 0) + 1
            elif ev == "urc":
                text = str(r.get("text", ""))
                best = next((u for u in by_length if text.startswith(u)), None)
                if best is not None:
                    self.urcs_seen[best] = self.urcs_seen.get(best, 0) + 1

    events, wire = Tally(), Tally()
    from_bytes = _FromBytes(profile_cls)
    faults: list[dict] = []
    for r in records:
        ev = r.get("event")
        events.add(r)
        if ev == "rx" or ev == "tx":
            getattr(from_bytes, ev)(_bytes(r))
            for d in from_bytes.take():
                wire.add(d)
        elif ev == "fault" and r.get("action") == "fired":
            faults.append({"kind": r.get("kind"), "params": r.get("params"), "seed": r.get("seed")})
    derived = events.commands == 0 and wire.commands > 0
    t = wire if derived else events
    total_forms = sum(len(v) for v in declared_forms.values())
    used = sum(len(t.used_forms.get(k, set()) & v) for k, v in declared_forms.items())
    declared_errors = error_paths(profile_cls)
    return {
        "profile": profile_cls.name,
        "source": "uart bytes (no command events in the transcript)" if derived else "events",
        "commands_sent": t.commands,
        "commands": {"used": len([k for k in declared_forms if t.used_forms.get(k)]), "declared": len(declared_forms)},
        "forms": {"used": used, "declared": total_forms},
        "urcs": {"used": len(t.urcs_seen), "declared": len(urc_names), "counts": t.urcs_seen,
                 "never": [u for u in urc_names if u not in t.urcs_seen]},
        "errors": {"used": len([k for k in t.errors if k in declared_errors]), "declared": len(declared_errors),
                   "counts": t.errors, "paths": declared_errors,
                   "never": [k for k in declared_errors if k not in t.errors],
                   "undeclared": sorted(k for k in t.errors if k not in declared_errors)},
        "per_command": {k: {"used": sorted(t.used_forms.get(k, set()) & v),
                            "missing": sorted(v - t.used_forms.get(k, set()))}
                        for k, v in sorted(declared_forms.items())},
        "unknown_commands": t.unknown,
        "faults": faults,
    }


def _line_text(line: Any) -> str:
    """A command record's ``line``: hex of the bytes (as written by Module.trace), or plain text."""
    if not isinstance(line, str):
        return ""
    try:
        return bytes.fromhex(line).decode("latin-1")
    except ValueError:
        return line


def format_coverage(cov: dict) -> str:
    def pct(d: dict) -> str:
        return f"{d['used']}/{d['declared']}" + (f" ({100 * d['used'] // d['declared']}%)" if d["declared"] else "")
    lines = [f"{cov['profile']}: {cov['commands_sent']} commands sent"
             + (" (read from the UART bytes: the transcript has no command events; error paths unknown)"
                if cov.get("source", "events") != "events" else ""),
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


def _profile_for(args: Any, path: Any) -> Any:
    from .profile import find_profile
    name = args.profile or meta(path).get("profile")
    if not name:
        raise TranscriptError("the transcript does not say which profile it is for: add --profile NAME")
    try:
        return find_profile(name)
    except KeyError as e:
        raise TranscriptError(str(e.args[0])) from None


def check(path: Any) -> int:
    """Read the whole file once (streaming) so a bad line is reported before anything runs; returns the
    number of records."""
    n = 0
    for _ in iter_records(path):
        n += 1
    return n


def cmd_replay(args: Any) -> int:
    """``atemu replay FILE [--profile P]``: exit 0 when identical, 1 when the answers differ."""
    from .world import World, WorldError
    try:
        check(args.file)
        cls = _profile_for(args, args.file)
        world = World.load(args.world) if args.world else None
    except (TranscriptError, WorldError) as e:
        return _fail(str(e))
    try:
        report = run_replay(args.file, cls, world=world, settle=args.settle, faults=not args.no_faults,
                            raw=getattr(args, "raw", False))
    except TranscriptError as e:       # the file changed while we read it
        return _fail(str(e))
    if report.identical:
        print(f"atemu: replay of {report.steps} host writes against {cls.name}: no differences")
        return 0
    for d in report.differences:
        print(d.describe())
    if report.different > len(report.differences):
        print(f"... and {report.different - len(report.differences)} more")
    print(f"atemu: {report.different} of {report.steps} host writes got a different answer")
    return 1


def cmd_coverage(args: Any) -> int:
    try:
        check(args.file)
        cls = _profile_for(args, args.file)
        cov = coverage(iter_records(args.file), cls)
    except TranscriptError as e:
        return _fail(str(e))
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
