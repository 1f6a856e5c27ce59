"""Fault injection: make the emulated world misbehave when a test chooses.

Every module has one :class:`FaultRegistry` (``module.faults``). A fault is armed with
:meth:`FaultRegistry.inject` and fires

* ``now`` (the default for one-shot actions such as ``broker_disconnect``),
* after ``after`` more AT commands (``after=3``: when the 3rd command from now starts),
* at a time (``at=2.5``: seconds from now, on the module's loop),
* with a seeded ``probability`` at every opportunity (each command for actions; each byte,
  command or connect for conditions). The seed is recorded, so a CI failure can be replayed.

``times`` limits how often it fires (default 1; ``None`` = until :meth:`clear`). ``latency`` and
``bandwidth`` default to ``None``; with ``times=N`` they shape the next N deliveries (one received
TCP chunk, one write the module makes, one datagram each; an MQTT session's broker link is a TCP
connection like any other: one chunk from the broker, one chunk of what paho wrote).

Two families:

* **actions** happen once when triggered: link (``ap_gone``, ``ap_back``, ``deauth``,
  ``rssi``, ``rssi_ramp``, ``cellular_detach``, ``cellular_attach``), network (``remote_close``,
  ``tcp_reset``, ``broker_disconnect``), AT (``urc``, ``urc_storm``), device (``reboot``,
  ``freeze``, ``thaw``).
* **conditions** are consulted where they apply: network (``connect_refused``, ``tls_fail``,
  ``broker_refuse``, ``dns_fail``, ``dns_timeout``, ``latency``, ``bandwidth``, ``udp_drop``,
  ``udp_unreachable``), AT
  (``at_error``, ``at_delay``, ``urc_inject``), UART (``uart_drop``, ``uart_corrupt``,
  ``rx_overflow``).

Every arm, firing and clear is sent to ``module.trace("fault", ...)`` (and so into the transcript)
with its id, parameters and seed. The net layer (``emulator/net``) reaches the registry through
the module's resolver (``resolver.faults``), so every profile gets the network faults.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import weakref
import logging
import errno
import random
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .net.errors import NetError

if TYPE_CHECKING:  # pragma: no cover
    from .module import Ctx, Module

log = logging.getLogger("atemu.faults")

ACTIONS = {
    "ap_gone": "the access point disappears (params: ssid; default every AP)",
    "ap_back": "access points removed by ap_gone come back (params: ssid)",
    "deauth": "the AP deauthenticates the module (params: ssid, reason)",
    "rssi": "set an AP's or the cell's RSSI (params: ssid or cellular=true, rssi)",
    "rssi_ramp": "move RSSI step by step (params: ssid, to, steps, interval)",
    "cellular_detach": "the cellular network detaches the module",
    "cellular_attach": "the cellular network attaches again",
    "remote_close": "the peer closes TCP connections (FIN) (params: port, host; an accepted connection also matches its listening port)",
    "tcp_reset": "the peer resets TCP connections (RST) (params: port, host; an accepted connection also matches its listening port)",
    "broker_disconnect": "the MQTT broker drops the link (params: host)",
    "urc": "emit an unsolicited line now (params: text)",
    "urc_storm": "emit many URCs (params: text, count, interval)",
    "reboot": "the module resets (power glitch)",
    "freeze": "the module stops answering until thawed (params: duration)",
    "thaw": "a frozen module answers again",
}
CONDITIONS = {
    "connect_refused": "TCP/MQTT connects are refused (params: host, port)",
    "tls_fail": "TLS handshakes fail (params: host, port)",
    "broker_refuse": "the MQTT broker answers CONNACK with a refusal (params: code, default 5)",
    "dns_fail": "name lookups fail (params: host)",
    "dns_timeout": "name lookups time out after the caller's timeout (params: host)",
    "latency": "delay socket data both ways (TCP, TLS, UDP, MQTT), until cleared unless times (params: delay seconds, port, host for MQTT, direction rx|tx|both)",
    "bandwidth": "limit the socket data rate both ways (TCP, TLS, UDP, MQTT), until cleared unless times (params: bps bytes per second, port, host for MQTT, direction)",
    "udp_drop": "UDP datagrams are lost (params: direction rx|tx|both, host, port)",
    "udp_unreachable": "UDP datagrams sent are answered by ICMP unreachable (params: host, port, error port|host|network)",
    "at_error": "a command answers ERROR (or the vendor code) (params: command e.g. +AWSSTATE)",
    "at_delay": "a command's response is delayed (params: command, delay)",
    "urc_inject": "an URC appears between a command's echo and its final result (params: command, text)",
    "uart_drop": "bytes are lost on the UART (params: direction rx|tx)",
    "uart_corrupt": "bytes are garbled on the UART (params: direction rx|tx)",
    "rx_overflow": "the module's RX buffer overflows: bytes beyond size in one burst are lost (params: size)",
}
KINDS = {**ACTIONS, **CONDITIONS}


class FaultError(ValueError):
    """Bad fault request; the message says what to do."""


#: numeric parameters: (lowest, highest) accepted
_NUMERIC = {"delay": (0.0, 3600.0), "bps": (1.0, 1e10), "size": (0, 1 << 20), "code": (0, 255), "count": (1, 100000),
            "interval": (0.0, 3600.0), "steps": (1, 10000), "to": (-150, 0), "rssi": (-150, 0), "duration": (0.0, 86400.0),
            "boot_delay": (0.0, 600.0), "port": (1, 65535), "reason": (0, 65535)}


def _check_params(kind: str, params: dict) -> None:
    for k, v in params.items():
        if k in _NUMERIC and v is not None:
            lo, hi = _NUMERIC[k]
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise FaultError(f"{kind}: {k} must be a number, not {v!r}") from None
            if not lo <= x <= hi:
                raise FaultError(f"{kind}: {k} must be between {lo:g} and {hi:g}, not {v!r}")
    if kind in ("uart_drop", "uart_corrupt") and params.get("direction", "rx") not in ("rx", "tx"):
        raise FaultError(f"{kind}: direction must be 'rx' (host to module) or 'tx' (module to host)")
    if kind in _BOTH_WAYS and params.get("direction", "both") not in ("rx", "tx", "both"):
        raise FaultError(f"{kind}: direction must be 'rx' (data the module receives), 'tx' (data it sends) or 'both'")
    if kind == "udp_unreachable" and params.get("error", "port") not in ("port", "host", "network"):
        raise FaultError("udp_unreachable: error must be 'port' (ICMP port unreachable: refused), 'host' (ICMP host "
                         "unreachable) or 'network' (no route: the send itself fails)")


#: conditions that shape socket data (latency, rate) and those that UDP sockets consult
_SHAPING = ("latency", "bandwidth")
_BOTH_WAYS = ("latency", "bandwidth", "udp_drop")
_UDP = ("latency", "bandwidth", "udp_drop", "udp_unreachable")
#: ``times`` not given
_UNSET: Any = object()


@dataclass
class Fault:
    id: int
    kind: str
    params: dict = field(default_factory=dict)
    times: int | None = 1
    after: int = 0
    at: float | None = None
    probability: float | None = None
    seed: int | None = None
    fired: int = 0
    result: Any = None      # what the last firing of an action did (e.g. how many connections it reset)
    base: int = 0           # command count when armed
    armed_at: float = field(default_factory=time.monotonic)
    rng: random.Random | None = None
    _handle: Any = None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def describe(self) -> dict:
        return {"id": self.id, "kind": self.kind, "params": self.params, "times": self.times, "after": self.after,
                "at": self.at, "probability": self.probability, "seed": self.seed, "fired": self.fired, "result": self.result}


class Shaper:
    """Holds one connection's or UDP socket's data back for ``latency``/``bandwidth``.

    Each direction (``rx``: data the module receives, ``tx``: data it sends) is a FIFO of
    deliveries with their due times, released by one timer in order: nothing overtakes data
    held before it, even after the fault is cleared. :meth:`after` queues a step (a peer's FIN or
    reset, the module's own close) behind the data held so far.
    """

    def __init__(self, registry: "FaultRegistry", target: Any):
        self.registry = registry
        self.target = target
        self._q: dict[str, collections.deque] = {"rx": collections.deque(), "tx": collections.deque()}
        self._end = {"rx": 0.0, "tx": 0.0}
        self._timer: dict[str, Any] = {"rx": None, "tx": None}
        self.queued = {"rx": 0, "tx": 0}      # bytes held
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def busy(self, direction: str) -> bool:
        return bool(self._q[direction])

    def defer(self, direction: str, nbytes: int, port: int | None, fn: Any, *args: Any) -> bool:
        """Hold ``fn(*args)`` (a delivery of ``nbytes``) if a fault says so or earlier data is
        still held; False: the caller delivers now."""
        q = self._q[direction]
        delay, bps = self.registry._shaping(direction, port, nbytes, getattr(self.target, "fault_names", None))
        if not delay and not bps and not q:
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now + delay, self._end[direction] if q else 0.0)
        end = start + (nbytes / bps if bps else 0.0)
        self._end[direction] = end
        self._push(direction, end, nbytes, fn, args)
        return True

    def after(self, direction: str, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` once everything held so far in ``direction`` was delivered."""
        if not self._q[direction]:
            fn(*args)
            return
        self._push(direction, self._end[direction], 0, fn, args)

    def cancel(self, direction: str) -> None:
        """Forget what is held (the connection was aborted)."""
        self._q[direction].clear()
        self.queued[direction] = 0
        if self._timer[direction] is not None:
            self._timer[direction].cancel()
            self._timer[direction] = None
        self._wake()

    async def wait_tx(self, limit: int) -> None:
        """Wait until at most ``limit`` bytes are held for sending (back-pressure for ``drain``)."""
        if self.queued["tx"] <= limit:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((limit, fut))
        await fut

    def _push(self, direction: str, when: float, nbytes: int, fn: Any, args: tuple) -> None:
        self._q[direction].append((when, nbytes, fn, args))
        self.queued[direction] += nbytes
        if self._timer[direction] is None:
            self._arm(direction)

    def _arm(self, direction: str) -> None:
        q = self._q[direction]
        if q:
            self._timer[direction] = asyncio.get_running_loop().call_at(q[0][0], self._run, direction)

    def _run(self, direction: str) -> None:
        self._timer[direction] = None
        q = self._q[direction]
        now = asyncio.get_running_loop().time()
        first = True
        while q and (first or q[0][0] <= now + 0.001):
            first = False
            _, nbytes, fn, args = q.popleft()
            self.queued[direction] -= nbytes
            try:
                fn(*args)
            except Exception:
                log.debug("late delivery failed", exc_info=True)
        self._wake()
        self._arm(direction)
        if not q and not self._q["rx" if direction == "tx" else "tx"]:
            self.registry._idle(self)

    def _wake(self) -> None:
        keep = []
        for limit, fut in self._waiters:
            if fut.done():
                continue
            if self.queued["tx"] <= limit:
                fut.set_result(None)
            else:
                keep.append((limit, fut))
        self._waiters = keep


class FaultRegistry:
    """Per-module fault list; see the module docstring."""

    def __init__(self, module: "Module"):
        self.module = module
        self.faults: list[Fault] = []
        self.history: list[dict] = []
        self._ids = itertools.count(1)
        self.connections: "set[Any]" = set()   # live TcpConnections (weakly: removed on close)
        self.sessions: "set[Any]" = set()      # live MqttSessions
        self.udp_sockets: "weakref.WeakSet[Any]" = weakref.WeakSet()   # UdpSockets of this module
        self.removed_aps: list[Any] = []
        self.commands = 0
        module.resolver.faults = self

    # ---- arming ------------------------------------------------------------------------------
    def inject(self, kind: str, *, times: Any = _UNSET, after: int = 0, at: float | None = None,
               probability: float | None = None, seed: int | None = None, **params: Any) -> Fault:
        """Arm a fault; returns it (``.id`` for :meth:`clear`). Actions without a trigger fire now."""
        if kind not in KINDS:
            raise FaultError(f"unknown fault {kind!r}; choose one of: {', '.join(sorted(KINDS))}")
        if times is _UNSET:  # shaping lasts until cleared unless told otherwise
            times = None if kind in _SHAPING else 1
        try:
            probability = None if probability is None else float(probability)
            times = None if times is None else int(times)
            after = int(after or 0)
            at = None if at is None else float(at)
            seed = None if seed is None else int(seed)
        except (TypeError, ValueError):
            raise FaultError("times, after, at, probability and seed must be numbers") from None
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise FaultError("probability must be between 0 and 1")
        if times is not None and times < 1:
            raise FaultError("times must be at least 1 (or null for 'until cleared')")
        if after < 0:
            raise FaultError("after must be a number of commands >= 0")
        if at is not None and not 0 <= at <= 86400:
            raise FaultError("at must be a number of seconds from now (0..86400)")
        _check_params(kind, params)
        if probability is not None and seed is None:
            seed = random.SystemRandom().randrange(1 << 31)
        f = Fault(next(self._ids), kind, dict(params), None if times is None else int(times), int(after or 0),
                  None if at is None else float(at), None if probability is None else float(probability), seed)
        f.base = self.commands
        if kind in ("uart_drop", "uart_corrupt"):
            f.params.setdefault("direction", "rx")
        if seed is not None:
            f.rng = random.Random(seed)
        self._record("armed", f)
        if kind in ACTIONS:
            if at is not None:
                loop = asyncio.get_running_loop()
                f._handle = loop.call_later(max(0.0, f.at), self._fire_action_timed, f)
                self.faults.append(f)
            elif f.after or f.probability is not None:
                self.faults.append(f)
            else:
                self._fire_action(f)
        else:
            self.faults.append(f)
            if at is not None:  # a condition armed later: dormant until then
                f._handle = asyncio.get_running_loop().call_later(max(0.0, f.at), self._wake, f)
            self._conditions_changed()
        self._update_hooks()
        return f

    def clear(self, fault_id: int | None = None) -> int:
        """Disarm one fault (by id) or all; returns how many were removed."""
        keep, gone = [], []
        for f in self.faults:
            (gone if fault_id is None or f.id == fault_id else keep).append(f)
        self.faults = keep
        for f in gone:
            if f._handle is not None:
                f._handle.cancel()
            self._record("cleared", f)
        self._conditions_changed()
        self._update_hooks()
        return len(gone)

    def active(self) -> list[dict]:
        return [f.describe() for f in self.faults]

    # ---- bookkeeping ----------------------------------------------------------------------------
    def _record(self, what: str, f: Fault, **extra: Any) -> None:
        rec = {"action": what, "id": f.id, "kind": f.kind, "params": f.params, "seed": f.seed,
               "times": f.times, "after": f.after, "at": f.at, "probability": f.probability, **extra}
        self.history.append(rec)
        if len(self.history) > 1000:
            del self.history[:100]
        self.module.trace("fault", **rec)

    def _update_hooks(self) -> None:
        self.module.fault_hooks = self if any(f.kind in CONDITIONS or f.after or f.probability is not None
                                              for f in self.faults) else None

    def _dormant(self, f: Fault) -> bool:
        return f.at is not None and f._handle is not None and f.kind in CONDITIONS

    def _wake(self, f: Fault) -> None:
        f._handle = None
        self._record("active", f)
        self._conditions_changed()

    def _armed(self, kinds: tuple) -> bool:
        return any(f.kind in kinds for f in self.faults)

    def _conditions_changed(self) -> None:
        """Give shapers to live connections when latency/bandwidth faults are armed, and the
        UDP hook to UDP sockets while a fault UDP consults is armed (else they pay nothing)."""
        shaping = self._armed(_SHAPING)
        if shaping:
            for c in list(self.connections):
                if c.closed:
                    self.connections.discard(c)
                elif c.shaper is None:
                    c.shaper = Shaper(self, c)
        for s in list(self.sessions):  # MQTT: the session gives its broker link a shaper while this is set
            s.shaping = self if shaping else None
        udp = self._armed(_UDP)
        for u in list(self.udp_sockets):
            if udp:
                u.faults = self
            elif u.shaper is None:
                u.faults = None
            # a socket with held data keeps its hook until the data is out (see _idle)

    def _idle(self, shaper: Shaper) -> None:
        """A shaper has nothing held: drop it when no shaping fault is armed (zero cost again)."""
        t = shaper.target
        if self._armed(_SHAPING) or t.shaper is not shaper:
            return
        t.shaper = None
        if getattr(t, "faults", None) is self and not self._armed(_UDP):
            t.faults = None

    def _waiting(self, f: Fault, at_command: bool = False) -> bool:
        """True while the first ``after`` commands since arming have not all passed."""
        if not f.after:
            return False
        done = self.commands - f.base
        return done <= f.after if at_command else done < f.after

    def _find(self, kind: str, consume: bool = True, at_command: bool = False, **match: Any) -> Fault | None:
        """The first armed condition of ``kind`` whose params match; counts a firing if consumed."""
        for f in self.faults:
            if f.kind != kind or self._dormant(f) or f.exhausted:
                continue
            if self._waiting(f, at_command):
                continue
            if not all(_matches(k, f.params.get(k), v) for k, v in match.items()):
                continue
            if not consume:
                return f
            if f.probability is not None and f.rng is not None and f.rng.random() >= f.probability:
                continue
            self._fired(f)
            return f
        return None

    def _fired(self, f: Fault, **extra: Any) -> None:
        f.fired += 1
        self._record("fired", f, n=f.fired, **extra)
        if f.exhausted and f in self.faults:
            self.faults.remove(f)
            self._conditions_changed()
            self._update_hooks()

    # ---- actions -------------------------------------------------------------------------------
    def _fire_action_timed(self, f: Fault) -> None:
        f._handle = None
        if f in self.faults:
            self.faults.remove(f)
        self._fire_action(f)
        self._update_hooks()

    def _fire_action(self, f: Fault) -> None:
        f.fired += 1
        try:
            result = getattr(self, "_do_" + f.kind)(**f.params)
        except (TypeError, ValueError, AttributeError) as e:
            self._record("failed", f, error=f"bad parameters for {f.kind}: {e}")
            raise FaultError(f"bad parameters for {f.kind}: {e}; see docs/control-plane.md for each fault's parameters") from None
        f.result = result
        self._record("fired", f, n=f.fired, result=result)

    def _world_changed(self, change: dict) -> None:
        self.module.trace("world", **change)
        hook = getattr(self.module.profile, "world_changed", None)
        if hook is not None:
            try:
                hook(change)
            except Exception:
                log.exception("%s: world_changed hook failed", self.module.name)

    def _do_ap_gone(self, ssid: str | None = None) -> int:
        aps = self.module.world.access_points
        gone = [ap for ap in aps if ssid is None or ap.ssid == ssid]
        for ap in gone:
            aps.remove(ap)
            self.removed_aps.append(ap)
            self._world_changed({"change": "ap_removed", "ssid": ap.ssid})
        return len(gone)

    def _do_ap_back(self, ssid: str | None = None) -> int:
        back = [ap for ap in self.removed_aps if ssid is None or ap.ssid == ssid]
        for ap in back:
            self.removed_aps.remove(ap)
            self.module.world.access_points.append(ap)
            self._world_changed({"change": "ap_added", "ssid": ap.ssid})
        return len(back)

    def _do_deauth(self, ssid: str | None = None, reason: int = 3) -> int:
        self._world_changed({"change": "deauth", "ssid": ssid, "reason": reason})
        return 1

    def _do_rssi(self, rssi: int, ssid: str | None = None, cellular: bool = False) -> int:
        if cellular or ssid is None and not self.module.world.access_points:
            self.module.world.cellular.rssi = int(rssi)
            self._world_changed({"change": "rssi", "cellular": True, "rssi": int(rssi)})
            return 1
        n = 0
        for ap in self.module.world.access_points:
            if ssid is None or ap.ssid == ssid:
                ap.rssi = int(rssi)
                n += 1
                self._world_changed({"change": "rssi", "ssid": ap.ssid, "rssi": int(rssi)})
        return n

    def _do_rssi_ramp(self, to: int, ssid: str | None = None, steps: int = 5, interval: float = 1.0,
                      cellular: bool = False) -> int:
        w = self.module.world
        if cellular or ssid is None and not w.access_points:
            start = w.cellular.rssi
        else:
            ap = next((a for a in w.access_points if ssid is None or a.ssid == ssid), None)
            if ap is None:
                raise TypeError(f"no access point {ssid!r}")
            start = ap.rssi
        steps = max(1, int(steps))

        async def ramp() -> None:
            for i in range(1, steps + 1):
                await asyncio.sleep(float(interval))
                self._do_rssi(round(start + (int(to) - start) * i / steps), ssid=ssid, cellular=cellular)

        asyncio.get_running_loop().create_task(ramp())
        return steps

    def _do_cellular_detach(self) -> int:
        self.module.world.cellular.attached = False
        self._world_changed({"change": "cellular", "attached": False})
        for s in list(self.sessions):
            _drop_mqtt(s)
        for c in list(self.connections):
            _close_conn(c, "reset")
        return 1

    def _do_cellular_attach(self) -> int:
        self.module.world.cellular.attached = True
        self._world_changed({"change": "cellular", "attached": True})
        return 1

    def _conns(self, host: str | None, port: int | None) -> list:
        out = []
        for c in list(self.connections):
            if c.closed:
                self.connections.discard(c)
                continue
            ra = c.remote_addr or ("", 0)
            # a connection the module accepted matches its listening (local) port as well
            ports = (ra[1], (c.local_addr or ("", 0))[1]) if getattr(c, "_listener", None) is not None else (ra[1],)
            if port is not None and int(port) not in ports:
                continue
            if host is not None and host not in (ra[0], c.server_hostname):
                continue
            out.append(c)
        return out

    def _do_remote_close(self, host: str | None = None, port: int | None = None) -> int:
        conns = self._conns(host, port)
        for c in conns:
            _close_conn(c, "remote")
        return len(conns)

    def _do_tcp_reset(self, host: str | None = None, port: int | None = None) -> int:
        conns = self._conns(host, port)
        for c in conns:
            _close_conn(c, "reset")
        return len(conns)

    def _do_broker_disconnect(self, host: str | None = None) -> int:
        n = 0
        for s in list(self.sessions):
            if not s.connected:
                continue
            if host is not None and host not in (s.host, s.server_hostname, s.remote_ip):
                continue
            _drop_mqtt(s)
            n += 1
        return n

    def _do_urc(self, text: str, data: str = "") -> int:
        self.module.urc(text, data.encode("latin-1"))
        return 1

    def _do_urc_storm(self, text: str, count: int = 100, interval: float = 0.0) -> int:
        count = max(1, min(int(count), 100000))
        if not interval:
            for _ in range(count):
                self.module.urc(text)
            return count

        async def storm() -> None:
            for _ in range(count):
                self.module.urc(text)
                await asyncio.sleep(float(interval))

        asyncio.get_running_loop().create_task(storm())
        return count

    def _do_reboot(self, boot_delay: float = 0.0) -> int:
        self.module.request_reboot(float(boot_delay), cause="power")     # a brown-out or watchdog
        return 1

    def _do_freeze(self, duration: float | None = None) -> int:
        self.module.frozen = True
        if duration:
            asyncio.get_running_loop().call_later(float(duration), self._do_thaw)
        return 1

    def _do_thaw(self) -> int:
        self.module.frozen = False
        return 1

    # ---- hooks the module and the net layer call -------------------------------------------------
    def on_command(self, name: str) -> tuple[str, Any] | None:
        """Called by Module.execute as each command starts. Returns an action for it or None."""
        self.commands += 1
        for f in list(self.faults):  # delayed / random actions
            if f.kind not in ACTIONS or f.exhausted or f.at is not None:
                continue
            if self._waiting(f, at_command=True):
                continue
            if f.probability is not None and f.rng is not None and f.rng.random() >= f.probability:
                continue
            if f.times is not None and f.fired + 1 >= f.times:
                self.faults.remove(f)
            if f.kind == "reboot":  # the reboot happens instead of this command
                f.fired += 1
                self._record("fired", f, n=f.fired, command=name)
                self._update_hooks()
                return ("reboot", None)
            try:
                self._fire_action(f)
            except FaultError:
                pass
        self._update_hooks()
        f = self._find("at_error", at_command=True, command=name)
        if f is not None:
            return ("error", f)
        f = self._find("at_delay", at_command=True, command=name)
        if f is not None:
            return ("delay", float(f.params.get("delay", 1.0)))
        f = self._find("urc_inject", at_command=True, command=name)
        if f is not None:
            return ("urc", f.params.get("text", "+URC"))
        return None

    def on_uart(self, data: bytes, direction: str) -> bytes:
        """Filter UART bytes (rx: host->module, tx: module->host)."""
        if direction == "rx":
            f = self._find("rx_overflow")
            if f is not None:
                size = int(f.params.get("size", 64))
                if len(data) > size:
                    data = data[:size]
        out = bytearray()
        drop = [f for f in self.faults if f.kind == "uart_drop" and f.params.get("direction", "rx") == direction]
        corrupt = [f for f in self.faults if f.kind == "uart_corrupt" and f.params.get("direction", "rx") == direction]
        if not drop and not corrupt:
            return data
        for b in data:
            f = self._find("uart_drop", direction=direction) if drop else None
            if f is not None:
                continue
            f = self._find("uart_corrupt", direction=direction) if corrupt else None
            if f is not None:
                rng = f.rng or random.Random(f.id)
                b ^= 1 << rng.randrange(8)
            out.append(b)
        return bytes(out)

    async def before_connect(self, host: str, port: int, *, tls: bool, what: str = "tcp") -> None:
        """Called by the net layer before dialling; may raise NetError."""
        if self._find("connect_refused", host=host, port=port) is not None:
            raise NetError("refused", f"connect to {host}:{port}: connection refused (injected fault)")
        if tls and self._find("tls_fail", host=host, port=port) is not None:
            raise NetError("tls", f"TLS handshake with {host}:{port} failed (injected fault)")

    async def before_lookup(self, host: str, timeout: float) -> None:
        """Called by the resolver before a name lookup; may raise NetError."""
        if self._find("dns_fail", host=host) is not None:
            raise NetError("dns", f"cannot resolve {host}: DNS failure (injected fault)")
        if self._find("dns_timeout", host=host) is not None:
            await asyncio.sleep(max(0.0, timeout))
            raise NetError("dns_timeout", f"cannot resolve {host}: DNS timeout (injected fault)")

    def broker_refusal(self) -> int | None:
        f = self._find("broker_refuse")
        return None if f is None else int(f.params.get("code", 5))

    def track(self, obj: Any) -> None:
        from .net.mqtt import MqttSession
        if isinstance(obj, MqttSession):
            self.sessions.add(obj)
            obj.shaping = self if self._armed(_SHAPING) else None
        else:
            self.connections.add(obj)
            if self._armed(_SHAPING):
                obj.shaper = Shaper(self, obj)

    def track_udp(self, u: Any) -> None:
        """Called by UdpSocket.open for sockets opened with the module's resolver."""
        self.udp_sockets.add(u)
        if self._armed(_UDP):
            u.faults = self

    def udp_in(self, u: Any, data: bytes, addr: Any) -> bool:
        """A datagram arrived; True when a fault took it (lost, or held for later delivery)."""
        ip, port = (addr[0], addr[1]) if addr else (None, None)
        if isinstance(ip, str) and ip.startswith("::ffff:"):
            ip = ip[7:]
        if self._find("udp_drop", direction="rx", host=ip, port=port) is not None:
            u.dropped_by_fault += 1
            return True
        return self._udp_shape(u, "rx", len(data), port, u._deliver, bytes(data), addr)

    def udp_out(self, u: Any, data: bytes, dest: tuple) -> bool:
        """The module sends a datagram; True when a fault took it. May raise NetError (no route)."""
        ip, port = dest[0], dest[1]
        if isinstance(ip, str) and ip.startswith("::ffff:"):
            ip = ip[7:]
        f = self._find("udp_unreachable", host=ip, port=port)
        if f is not None:
            err = f.params.get("error", "port")
            if err == "network":
                raise NetError("unreachable", f"send to {ip}:{port}: network unreachable (injected fault)")
            # the datagram leaves; an ICMP error comes back and is reported like the kernel does
            exc = ConnectionRefusedError(errno.ECONNREFUSED, "port unreachable (injected fault)") if err == "port" \
                else OSError(errno.EHOSTUNREACH, "host unreachable (injected fault)")
            asyncio.get_running_loop().call_soon(u._error, exc)
            return True
        if self._find("udp_drop", direction="tx", host=ip, port=port) is not None:
            u.dropped_by_fault += 1
            return True
        return self._udp_shape(u, "tx", len(data), port, u._send_late, bytes(data), dest)

    def _udp_shape(self, u: Any, direction: str, nbytes: int, port: Any, fn: Any, *args: Any) -> bool:
        sh = u.shaper
        if sh is None:
            if not self._armed(_SHAPING):
                return False
            sh = u.shaper = Shaper(self, u)
        return sh.defer(direction, nbytes, port, fn, *args)

    def _shaping_pick(self, faults: list, direction: str, port: Any,
                      names: list | None = None) -> tuple[float, float, list]:
        """Combine the shaping faults among ``faults`` that apply to one delivery: (longest delay,
        lowest bytes per second, the faults hit). ``names`` enables the ``host`` filter (MQTT)."""
        delay, bps = 0.0, 0.0
        hit = []
        for f in faults:
            if f.kind not in _SHAPING or self._dormant(f) or self._waiting(f):
                continue
            if f.params.get("port") is not None and str(f.params["port"]) != str(port):
                continue
            if names is not None and f.params.get("host") is not None and \
                    not any(_matches("host", f.params["host"], n) for n in names):
                continue
            if not _matches("direction", f.params.get("direction", "both"), direction):
                continue
            if f.probability is not None and f.rng is not None and f.rng.random() >= f.probability:
                continue
            if f.kind == "latency":
                delay = max(delay, float(f.params.get("delay", 0.1)))
            else:
                b = float(f.params.get("bps", 1000))
                bps = b if not bps else min(bps, b)
            hit.append(f)
        return delay, bps, hit

    def _shaping(self, direction: str, port: Any, nbytes: int = 0,
                 names: list | None = None) -> tuple[float, float]:
        """(delay, bytes per second) for one delivery; counts a firing of each fault that applies.
        ``names`` (an MQTT session's host, server name and address) enables the ``host`` filter."""
        delay, bps, hit = self._shaping_pick([f for f in self.faults if not f.exhausted], direction, port, names)
        extra = {"mqtt": True} if names is not None else {}
        for f in hit:
            if f.times is None and f.probability is None:
                f.fired += 1        # until cleared: counted, not written per chunk
            else:
                self._fired(f, direction=direction, bytes=nbytes, **extra)
        return delay, bps

    def snapshot_net(self) -> dict:
        conns = []
        for c in list(self.connections):
            if c.closed:
                self.connections.discard(c)
                continue
            conns.append({"remote": list(c.remote_addr or ()), "local": list(c.local_addr or ()), "tls": c.tls,
                          "available": c.available, "sent": c.total_sent, "received": c.total_received})
        sessions = []
        for s in list(self.sessions):
            if not s.active:
                self.sessions.discard(s)
                continue
            sessions.append({"client_id": s.client_id, "host": s.server_hostname, "port": s.port,
                             "connected": s.connected})
        udp = [{"local": list(u.local_addr or ()), "remote": list(u.remote or ()), "queued": len(u.rx),
                "sent": u.total_sent, "received": u.total_received, "dropped": u.dropped + u.dropped_by_fault}
               for u in list(self.udp_sockets) if not u.closed]
        return {"tcp": conns, "mqtt": sessions, "udp": udp}


def _norm_command(name: str) -> str:
    n = name.strip().upper()
    return n[2:] if n.startswith("AT") else n


def _matches(key: str, want: Any, value: Any) -> bool:
    """A fault parameter filters only when given: ``command`` ignores case and an ``AT`` prefix,
    ``host`` ignores case, everything else compares as text."""
    if want is None or value is None:
        return True
    if key == "direction" and want == "both":
        return True
    if key == "command":
        return _norm_command(str(want)) == _norm_command(str(value))
    if key == "host":
        return str(want).lower().rstrip(".") == str(value).lower().rstrip(".")
    return str(want) == str(value)


def _close_conn(c: Any, how: str) -> None:
    """Make a TcpConnection look closed by its peer (FIN) or reset (RST)."""
    if c.closed or c._transport is None:
        return
    if c.shaper is not None and c.shaper.busy("rx"):  # the peer's FIN/RST comes after the data it sent before
        c.shaper.after("rx", _close_conn, c, how)
        return
    if how == "reset":
        c.close_reason = "reset"
        c.error = NetError("reset", "connection reset by peer (injected fault)")
        sock = c._raw_socket()
        if sock is not None:
            try:
                import struct
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
    else:
        c.close_reason = "remote"
        c.remote_eof = True
    c._transport.abort()


def _drop_mqtt(s: Any) -> None:
    """Cut an MQTT session's broker link, as a broker dropping it would (FIN after what it sent)."""
    conn = s.link
    if conn is not None:
        _close_conn(conn, "remote")


def apply_command_fault(module: "Module", ctx: "Ctx", action: tuple[str, Any]) -> None:
    """Helper for Module.execute: the synchronous part of an AT-layer fault."""
    from .profile import CmdError
    kind, value = action
    if kind == "error":
        code = value.params.get("code")
        ctx.error(CmdError("failed", code=code, message="injected fault"))
    elif kind == "urc":
        module.write(module._frame(str(value)))
        module.trace("urc", text=str(value), n=0, injected=True)
