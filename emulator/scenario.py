"""Scenario files: the emulator judges a host program (``atemu run ... --scenario FILE [--junit X]``).

A scenario is YAML::

    name: reconnect after broker_disconnect
    timeout: 20                      # default seconds per step (10)
    broker: {host: 127.0.0.1, port: 1883}       # for expect_broker (optional: ca, cert, key, username, password)
    peers: {sink: {port: 17007, echo: true}}    # TCP peers atemu itself listens on, for expect_peer
    steps:
      - expect_host: 'AT\\+QMTPUB=0,(?P<mid>\\d+),1'   # a line the host sent (regex, Python syntax)
      - expect_module: '\\+QMTPUB: 0,${mid},0'         # a line the module sent; ${mid} from an earlier match
      - wait_urc: '\\+QMTSTAT: 0,\\d+'                  # a URC the module emitted
      - inject: broker_disconnect                     # or {kind: ..., <params>, after/at/times/probability/seed}
      - clear: all                                    # clear every armed fault
      - world: {change: remove_ap, ssid: lab}         # any world change of the control plane
      - wait: 1.5                                     # seconds
      - expect_broker: {topic: 'tele/#', payload: 'hello'}
      - expect_peer: {peer: sink, data: 'hello'}
      - expect_file: {name: flash/log.txt, contains: 'boot'}

Every ``expect_*`` / ``wait_urc`` step waits up to its ``timeout`` for something that happened
after the previous match of the same kind, or since the last ``inject``, ``clear`` or ``world``
step began, whichever is later (``wait`` only lets time pass). Named groups of a match become variables ``${name}``
for later steps (inserted literally, regex-escaped in patterns).

Everything here is plain data checked by :func:`load` (a bad file is a :class:`ScenarioError`
naming the key and its line) and run by :class:`ScenarioRun` on the module's own loop.
"""
from __future__ import annotations

import asyncio
import collections
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr, escape

DEFAULT_TIMEOUT = 10.0
ACTIONS = ("inject", "clear", "world", "wait")
EXPECTS = ("expect_host", "expect_module", "wait_urc", "expect_broker", "expect_peer", "expect_file")
KINDS = EXPECTS + ACTIONS
_TOP = ("name", "timeout", "broker", "peers", "steps")
_STEP_COMMON = ("name", "timeout")
_TRIGGERS = ("times", "after", "at", "probability", "seed")
_VAR = re.compile(r"\$\{(\w+)\}")
WORLD_CHANGES = ("add_ap", "remove_ap", "set_rssi", "set_dns", "remove_dns", "set_ble_value", "ble_notify",
                 "add_ble_peer", "cellular")


class ScenarioError(Exception):
    """A bad scenario file; the message names the key (and line)."""


@dataclass
class Step:
    index: int
    line: int
    kind: str
    arg: Any
    timeout: float
    name: str = ""

    def title(self) -> str:
        if self.name:
            return f"step {self.index}: {self.name}"
        arg = self.arg if not isinstance(self.arg, dict) else ", ".join(f"{k}={v}" for k, v in self.arg.items())
        return f"step {self.index}: {self.kind} {arg}"


@dataclass
class Scenario:
    path: str
    name: str
    steps: list[Step]
    broker: dict | None = None
    peers: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ loading

def load(path: str | Path) -> Scenario:
    """Read and check a scenario file; every problem is one ScenarioError naming the key."""
    import yaml
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ScenarioError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except RecursionError:
        raise ScenarioError(f"{path}: nested too deeply") from None

    def bad(msg: str, line: int | None = None) -> ScenarioError:
        return ScenarioError(f"{path}{f':{line}' if line else ''}: {msg}")

    if not isinstance(data, dict):
        raise bad("a scenario is a mapping with 'steps:' (a list of steps)")
    for k in data:
        if k not in _TOP:
            raise bad(f"unknown key {k!r}; a scenario has {', '.join(_TOP)}", _line(root, k))
    default_timeout = _number(data.get("timeout", DEFAULT_TIMEOUT), "timeout", bad, positive=True)
    name = data.get("name") or Path(path).stem
    if not isinstance(name, str):
        raise bad("'name' must be a string", _line(root, "name"))
    broker = data.get("broker")
    if broker is not None:
        if not isinstance(broker, dict) or not isinstance(broker.get("port"), int):
            raise bad("'broker' must be a mapping with 'port' (a number) and optionally host, ca, cert, key, "
                      "username, password", _line(root, "broker"))
        for k in broker:
            if k not in ("host", "port", "ca", "cert", "key", "username", "password"):
                raise bad(f"broker: unknown key {k!r}", _line(root, "broker"))
    peers = data.get("peers") or {}
    if not isinstance(peers, dict):
        raise bad("'peers' must map a peer name to {port: N, echo: true|false}", _line(root, "peers"))
    for pname, p in peers.items():
        if not isinstance(p, dict) or not isinstance(p.get("port"), int) or not 1 <= p["port"] <= 65535:
            raise bad(f"peers.{pname}: needs 'port' (1..65535)", _line(root, "peers"))
        for k in p:
            if k not in ("port", "host", "echo"):
                raise bad(f"peers.{pname}: unknown key {k!r} (port, host, echo)", _line(root, "peers"))
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise bad("'steps' must be a non-empty list", _line(root, "steps"))
    step_nodes = _value_node(root, "steps")
    steps: list[Step] = []
    known_vars: set[str] = set()
    for i, raw in enumerate(raw_steps, 1):
        line = step_nodes.value[i - 1].start_mark.line + 1 if step_nodes is not None else None
        where = f"steps[{i}]"
        if not isinstance(raw, dict):
            raise bad(f"{where}: a step is a mapping with one of: {', '.join(KINDS)}", line)
        kinds = [k for k in raw if k in KINDS]
        others = [k for k in raw if k not in KINDS and k not in _STEP_COMMON]
        if others:
            raise bad(f"{where}: unknown key {others[0]!r}; a step has one of {', '.join(KINDS)} "
                      f"(and optionally name, timeout)", line)
        if len(kinds) != 1:
            raise bad(f"{where}: needs exactly one of {', '.join(KINDS)}, found {', '.join(kinds) or 'none'}", line)
        kind = kinds[0]
        arg = raw[kind]
        timeout = _number(raw.get("timeout", default_timeout), f"{where}.timeout", bad, positive=True, line=line)
        sname = raw.get("name", "")
        if not isinstance(sname, str):
            raise bad(f"{where}.name must be a string", line)
        arg = _check_step(kind, arg, f"{where}.{kind}", bad, line, known_vars, broker, peers)
        steps.append(Step(i, line or 0, kind, arg, timeout, sname))
    return Scenario(str(path), name, steps, broker, peers)


def _line(root: Any, key: str) -> int | None:
    import yaml
    if isinstance(root, yaml.MappingNode):
        for k, _v in root.value:
            if getattr(k, "value", None) == key:
                return k.start_mark.line + 1
    return None


def _value_node(root: Any, key: str) -> Any:
    import yaml
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            if getattr(k, "value", None) == key and isinstance(v, yaml.SequenceNode):
                return v
    return None


def _number(v: Any, key: str, bad: Any, positive: bool = False, line: int | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and not v > 0) or v != v:
        raise bad(f"{key} must be a {'positive ' if positive else ''}number of seconds, not {v!r}", line)
    return float(v)


def _pattern(p: Any, key: str, bad: Any, line: int | None, known: set[str], define: bool = True) -> str:
    """Check a regex (with ``${var}`` placeholders); its named groups become known variables."""
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        p = str(p)
    if not isinstance(p, str) or not p:
        raise bad(f"{key} must be a regular expression (a non-empty string)", line)
    _check_vars(p, key, bad, line, known)
    try:
        rx = re.compile(_VAR.sub("x", p))
    except re.error as e:
        raise bad(f"{key}: not a valid regular expression ({e})", line) from None
    if define:
        known.update(rx.groupindex)
    return p


def _check_vars(text: Any, key: str, bad: Any, line: int | None, known: set[str]) -> None:
    if isinstance(text, str):
        for v in _VAR.findall(text):
            if v not in known:
                raise bad(f"{key}: ${{{v}}} is not set by an earlier step (a named group (?P<{v}>...) sets it)", line)
    elif isinstance(text, dict):
        for x in text.values():
            _check_vars(x, key, bad, line, known)


def _check_step(kind: str, arg: Any, key: str, bad: Any, line: int | None, known: set[str],
                broker: dict | None, peers: dict) -> Any:
    if kind in ("expect_host", "expect_module", "wait_urc"):
        return _pattern(arg, key, bad, line, known)
    if kind == "wait":
        return _number(arg, key, bad, positive=True, line=line)
    if kind == "clear":
        if arg != "all" and (isinstance(arg, bool) or not isinstance(arg, int)):
            raise bad(f"{key} must be 'all' or a fault id (a number)", line)
        return arg
    if kind == "inject":
        from .faults import KINDS as FAULTS, FaultError, _check_params
        if isinstance(arg, str):
            arg = {"kind": arg}
        if not isinstance(arg, dict) or arg.get("kind") not in FAULTS:
            got = arg.get("kind") if isinstance(arg, dict) else arg
            raise bad(f"{key}: unknown fault {got!r}; choose one of: {', '.join(sorted(FAULTS))}", line)
        _check_vars(arg, key, bad, line, known)
        for k in _TRIGGERS:
            v = arg.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise bad(f"{key}.{k} must be a number, not {v!r}", line)
        params = {k: v for k, v in arg.items() if k not in _TRIGGERS and k != "kind" and not _VAR.search(str(v))}
        try:
            _check_params(arg["kind"], params)
        except FaultError as e:
            raise bad(f"{key}: {e}", line) from None
        return dict(arg)
    if kind == "world":
        if not isinstance(arg, dict) or arg.get("change") not in WORLD_CHANGES:
            raise bad(f"{key} must be a mapping with 'change' (one of {', '.join(WORLD_CHANGES)}) and its fields", line)
        _check_vars(arg, key, bad, line, known)
        return dict(arg)
    if kind == "expect_broker":
        if not isinstance(arg, dict) or not isinstance(arg.get("topic"), str):
            raise bad(f"{key} must be a mapping with 'topic' (an MQTT topic filter) and optionally 'payload' (regex)", line)
        for k in arg:
            if k not in ("topic", "payload"):
                raise bad(f"{key}: unknown key {k!r} (topic, payload)", line)
        if broker is None:
            raise bad(f"{key} needs a top-level 'broker: {{host: ..., port: ...}}' to watch", line)
        _check_vars(arg["topic"], key + ".topic", bad, line, known)
        if "payload" in arg:
            _pattern(arg["payload"], key + ".payload", bad, line, known)
        return dict(arg)
    if kind == "expect_peer":
        if not isinstance(arg, dict) or arg.get("peer") not in peers or "data" not in arg:
            raise bad(f"{key} must be a mapping with 'peer' (one of the top-level peers: "
                      f"{', '.join(peers) or 'none declared'}) and 'data' (regex)", line)
        _pattern(arg["data"], key + ".data", bad, line, known)
        return dict(arg)
    if kind == "expect_file":
        if isinstance(arg, str):
            arg = {"name": arg}
        if not isinstance(arg, dict) or not isinstance(arg.get("name"), str) or not arg["name"]:
            raise bad(f"{key} must be a path under the state folder (e.g. flash/log.txt) or "
                      "{name: ..., contains: regex}", line)
        if Path(arg["name"]).is_absolute() or ".." in Path(arg["name"]).parts:
            raise bad(f"{key}: the name is relative to the module's state folder (no '..', not absolute)", line)
        _check_vars(arg["name"], key, bad, line, known)
        if "contains" in arg:
            _pattern(arg["contains"], key + ".contains", bad, line, known)
        return dict(arg)
    raise bad(f"{key}: unknown step kind")  # pragma: no cover


# ------------------------------------------------------------------------------------------ running

class _Lines:
    """A byte stream seen as lines (split at CR or LF, empty lines dropped) with a read cursor."""

    def __init__(self, recent: collections.deque, mark: str):
        self.lines: list[str] = []
        self.tail = bytearray()
        self.cursor = 0
        self.tail_matched = False      # the unterminated tail (a "> " prompt) was matched already
        self.recent = recent
        self.mark = mark

    def feed(self, data: bytes) -> None:
        self.tail += data
        parts = re.split(rb"\r\n|\r|\n", bytes(self.tail))
        self.tail = bytearray(parts.pop())
        for p in parts:
            if p:
                self._add(p)
                if self.tail_matched:       # an expectation already took this line while it was incomplete
                    self.cursor = max(self.cursor, len(self.lines))
            self.tail_matched = False

    def flush(self, n: int) -> None:
        """The first ``n`` pending bytes are a whole item (a data payload the module has taken)."""
        if self.tail and n > 0:
            item, self.tail = bytes(self.tail[:n]), self.tail[n:]
            self._add(item)

    def _add(self, b: bytes) -> None:
        text = b.decode("utf-8", "replace")
        self.lines.append(text)
        self.recent.append(f"{self.mark} {text}")

    def find(self, rx: re.Pattern, tail: bool = False) -> re.Match | None:
        """The first line after the cursor matching ``rx`` (with ``tail``, the unterminated rest too,
        e.g. a ``> `` prompt); the cursor moves past it."""
        for i in range(self.cursor, len(self.lines)):
            m = rx.search(self.lines[i])
            if m:
                self.cursor = i + 1
                return m
        if tail and self.tail and not self.tail_matched:
            m = rx.search(bytes(self.tail).decode("utf-8", "replace"))
            if m:
                self.cursor = len(self.lines)
                self.tail_matched = True
                return m
        return None

    def skip(self) -> None:
        self.cursor = len(self.lines)


@dataclass
class StepResult:
    step: Step
    ok: bool | None          # None: not run (an earlier step failed)
    seconds: float = 0.0
    message: str = ""


@dataclass
class Result:
    scenario: Scenario
    steps: list[StepResult]
    seconds: float = 0.0
    recent: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.steps)

    @property
    def failed(self) -> StepResult | None:
        return next((r for r in self.steps if r.ok is False), None)

    def summary(self) -> str:
        f = self.failed
        if f is None:
            return f"atemu: scenario {self.scenario.name!r}: {len(self.steps)} steps passed in {self.seconds:.1f} s"
        where = f" ({self.scenario.path}:{f.step.line})" if f.step.line else ""
        lines = [f"atemu: scenario {self.scenario.name!r} failed at {f.step.title()}{where}: {f.message}"]
        lines.append("atemu: last UART lines (> host, < module): " + (" | ".join(self.recent) or "none"))
        return "\n".join(lines)


class ScenarioRun:
    """Runs a scenario against a started module; ``observe`` must be one of the module's observers."""

    def __init__(self, scenario: Scenario, module: Any):
        self.sc = scenario
        self.module = module
        self.recent: collections.deque = collections.deque(maxlen=12)
        self.host = _Lines(self.recent, ">")
        self.out = _Lines(self.recent, "<")
        self.urcs: list[str] = []
        self.urc_cursor = 0
        self.messages: list[tuple[str, bytes]] = []
        self.msg_cursor = 0
        self.peer_data: dict[str, bytearray] = {n: bytearray() for n in scenario.peers}
        self.peer_cursor: dict[str, int] = {n: 0 for n in scenario.peers}
        self.vars: dict[str, str] = {}
        self.changed = asyncio.Event()
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: set[asyncio.StreamWriter] = set()
        self._mqtt: Any = None
        self._broker_error: str | None = None

    # ---- what the module does ---------------------------------------------------------------------------
    def observe(self, rec: dict) -> None:
        ev = rec.get("event")
        if ev == "rx":
            self.host.feed(bytes.fromhex(rec.get("data", "")))
        elif ev == "tx":
            self.out.feed(bytes.fromhex(rec.get("data", "")))
        elif ev == "data":
            self.host.flush(int(rec.get("n") or 0))
        elif ev == "urc":
            self.urcs.append(str(rec.get("text", "")))
        else:
            return
        self.changed.set()

    # ---- peers and the broker watcher ---------------------------------------------------------------------
    async def setup(self) -> None:
        """Start the declared peers and subscribe to the broker (before the host program starts)."""
        for name, p in self.sc.peers.items():
            host = p.get("host", "127.0.0.1")
            try:
                srv = await asyncio.start_server(lambda r, w, n=name, e=bool(p.get("echo")): self._peer(n, r, w, e),
                                                 host, p["port"])
            except OSError as e:
                raise ScenarioError(f"peers.{name}: cannot listen on {host}:{p['port']}: {e.strerror or e} "
                                    "(choose another port)") from None
            self._servers.append(srv)
        if self.sc.broker is not None:
            await self._watch_broker()

    async def _peer(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, echo: bool) -> None:
        self._conns.add(writer)
        try:
            while data := await reader.read(65536):
                self.peer_data[name] += data
                self.changed.set()
                if echo:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _watch_broker(self) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        b = self.sc.broker or {}
        loop = asyncio.get_running_loop()
        topics = sorted({self._topic_filter(s.arg["topic"]) for s in self.sc.steps if s.kind == "expect_broker"})
        subscribed = asyncio.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"atemu-scenario-{id(self):x}")
        if b.get("username"):
            client.username_pw_set(str(b["username"]), b.get("password"))
        if b.get("ca"):
            client.tls_set(ca_certs=b["ca"], certfile=b.get("cert"), keyfile=b.get("key"))

        def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if rc.is_failure:
                self._broker_error = f"the broker refused the scenario's watcher: {rc}"
                loop.call_soon_threadsafe(subscribed.set)
                return
            c.subscribe([(t, 1) for t in topics] or [("#", 1)])

        def on_subscribe(*_a: Any) -> None:
            loop.call_soon_threadsafe(subscribed.set)

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            loop.call_soon_threadsafe(self._message, msg.topic, bytes(msg.payload))

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        host, port = b.get("host", "127.0.0.1"), b["port"]
        try:
            await loop.run_in_executor(None, lambda: client.connect(host, port, keepalive=30))
        except (OSError, ValueError) as e:
            raise ScenarioError(f"broker: cannot connect to {host}:{port} to watch messages: "
                                f"{getattr(e, 'strerror', None) or e} (is the broker running?)") from None
        client.loop_start()
        self._mqtt = client
        try:
            await asyncio.wait_for(subscribed.wait(), 10)
        except asyncio.TimeoutError:
            self._broker_error = f"the broker at {host}:{port} did not answer the watcher's SUBSCRIBE"
        if self._broker_error:
            raise ScenarioError(f"broker: {self._broker_error}")

    def _message(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self.changed.set()

    @staticmethod
    def _topic_filter(topic: str) -> str:
        return "/".join("+" if _VAR.search(level) else level for level in topic.split("/"))

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for w in list(self._conns):
            w.close()
        self._servers.clear()
        if self._mqtt is not None:
            client, self._mqtt = self._mqtt, None
            client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)

    # ---- steps ------------------------------------------------------------------------------------------
    def _sub(self, text: Any, regex: bool = False) -> Any:
        if isinstance(text, str):
            return _VAR.sub(lambda m: re.escape(self.vars[m.group(1)]) if regex else self.vars[m.group(1)], text)
        if isinstance(text, dict):
            return {k: self._sub(v) for k, v in text.items()}
        return text

    def _rx(self, pattern: Any) -> re.Pattern:
        return re.compile(self._sub(str(pattern), regex=True))

    def _matched(self, m: re.Match) -> bool:
        self.vars.update({k: v for k, v in m.groupdict().items() if v is not None})
        return True

    def _skip_all(self) -> None:
        """After an action, expectations look only at what happens from now on."""
        self.host.skip()
        self.out.skip()
        self.urc_cursor = len(self.urcs)
        self.msg_cursor = len(self.messages)
        for n, d in self.peer_data.items():
            self.peer_cursor[n] = len(d)

    async def _until(self, check: Any, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.changed.clear()
            if check():
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:   # also wake up now and then: files and the clock change without telling us
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))
            except asyncio.TimeoutError:
                pass

    def _check(self, step: Step) -> Any:
        """A function returning True once ``step`` is satisfied, and a description of what it waits for."""
        a = step.arg
        if step.kind == "expect_host":
            rx = self._rx(a)
            return (lambda: (m := self.host.find(rx)) is not None and self._matched(m)), \
                f"the host to send a line matching {rx.pattern!r}"
        if step.kind == "expect_module":
            rx = self._rx(a)
            return (lambda: (m := self.out.find(rx, tail=True)) is not None and self._matched(m)), \
                f"the module to send a line matching {rx.pattern!r}"
        if step.kind == "wait_urc":
            rx = self._rx(a)

            def urc() -> bool:
                for i in range(self.urc_cursor, len(self.urcs)):
                    m = rx.search(self.urcs[i])
                    if m:
                        self.urc_cursor = i + 1
                        return self._matched(m)
                return False
            return urc, f"a URC matching {rx.pattern!r}"
        if step.kind == "expect_broker":
            import paho.mqtt.client as paho
            topic = self._sub(a["topic"])
            prx = self._rx(a["payload"]) if "payload" in a else None

            def broker() -> bool:
                for i in range(self.msg_cursor, len(self.messages)):
                    t, payload = self.messages[i]
                    if not (t == topic or paho.topic_matches_sub(topic, t)):
                        continue
                    m = prx.search(payload.decode("utf-8", "replace")) if prx is not None else None
                    if prx is None or m:
                        self.msg_cursor = i + 1
                        return self._matched(m) if m else True
                return False
            return broker, f"a message on {topic!r}" + (f" with a payload matching {prx.pattern!r}" if prx else "") \
                + " at the broker"
        if step.kind == "expect_peer":
            name = a["peer"]
            rx = re.compile(self._sub(str(a["data"]), regex=True).encode("latin-1", "replace"))

            def peer() -> bool:
                m = rx.search(self.peer_data[name], self.peer_cursor[name])
                if m:
                    self.peer_cursor[name] = m.end()
                    self.vars.update({k: v.decode("latin-1") for k, v in m.groupdict().items() if v is not None})
                    return True
                return False
            return peer, f"bytes matching {rx.pattern!r} at peer {name!r}"
        if step.kind == "expect_file":
            root = Path(self.module.state_dir).resolve()
            path = (root / self._sub(a["name"])).resolve()
            crx = self._rx(a["contains"]) if "contains" in a else None

            def file() -> bool:
                if root not in path.parents or not path.is_file():
                    return False
                if crx is None:
                    return True
                try:
                    m = crx.search(path.read_bytes().decode("utf-8", "replace"))
                except OSError:
                    return False
                return bool(m) and self._matched(m)
            return file, f"a file {a['name']} in the state folder" + (f" containing {crx.pattern!r}" if crx else "")
        raise AssertionError(step.kind)  # pragma: no cover

    async def _act(self, step: Step) -> None:
        a = self._sub(step.arg)
        if step.kind == "wait":
            await asyncio.sleep(float(a))
            return
        self._skip_all()     # what the action causes counts, even when it happens while it is made
        if step.kind == "inject":
            kw = dict(a)
            self.module.faults.inject(str(kw.pop("kind")), **kw)
        elif step.kind == "clear":
            self.module.faults.clear(None if a == "all" else int(a))
        elif step.kind == "world":
            from .api import change_world
            kw = dict(a)
            change_world(self.module, str(kw.pop("change")), **kw)

    async def run(self, host_exited: "asyncio.Future | None" = None) -> Result:
        loop = asyncio.get_running_loop()
        start = loop.time()
        results: list[StepResult] = []
        failed = False
        for step in self.sc.steps:
            if failed:
                results.append(StepResult(step, None, message="not run: an earlier step failed"))
                continue
            t0 = loop.time()
            try:
                if step.kind in ACTIONS:
                    await self._act(step)
                    ok, msg = True, ""
                else:
                    check, what = self._check(step)
                    ok = await self._until(check, step.timeout)
                    msg = "" if ok else f"expected {what}; not seen within {step.timeout:g} s"
                    if not ok and step.kind == "expect_broker":
                        seen = ", ".join(f"{t} {p[:40]!r}" for t, p in self.messages[self.msg_cursor:][-3:])
                        msg += f" (messages since the last match: {seen or 'none'})"
                    if not ok and host_exited is not None and host_exited.done():
                        msg += " (the host program had exited)"
            except Exception as e:        # a fault or world change the module refuses, a bad variable...
                ok, msg = False, f"{type(e).__name__}: {e}"
            results.append(StepResult(step, ok, loop.time() - t0, msg))
            failed = not ok
        return Result(self.sc, results, loop.time() - start, list(self.recent))


# ------------------------------------------------------------------------------------------ reports

def junit_xml(result: Result) -> str:
    """One JUnit ``testsuite`` for the scenario, one ``testcase`` per step."""
    sc = result.scenario
    fails = sum(1 for r in result.steps if r.ok is False)
    skipped = sum(1 for r in result.steps if r.ok is None)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuites name="atemu" tests="{len(result.steps)}" failures="{fails}" skipped="{skipped}" '
           f'time="{result.seconds:.3f}">',
           f'  <testsuite name={quoteattr(sc.name)} tests="{len(result.steps)}" failures="{fails}" errors="0" '
           f'skipped="{skipped}" time="{result.seconds:.3f}" '
           f'timestamp="{time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())}">']
    for r in result.steps:
        attrs = (f'classname={quoteattr(sc.name)} name={quoteattr(r.step.title())} time="{r.seconds:.3f}" '
                 f'file={quoteattr(sc.path)} line="{r.step.line}"')
        if r.ok:
            out.append(f"    <testcase {attrs}/>")
        elif r.ok is None:
            out.append(f"    <testcase {attrs}><skipped message={quoteattr(r.message)}/></testcase>")
        else:
            body = escape("\n".join(result.recent))
            out.append(f"    <testcase {attrs}><failure message={quoteattr(r.message)} type=\"scenario\">"
                       f"last UART lines (&gt; host, &lt; module):\n{body}</failure></testcase>")
    out += ["  </testsuite>", "</testsuites>", ""]
    return "\n".join(out)
