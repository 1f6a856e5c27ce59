"""In-process API: run a module, watch it, change its world, inject faults.

Sync code (a pytest test, a script)::

    from atemu import start
    with start("eseye-anynet", world={...}, transport="pty") as m:
        ser = serial.Serial(m.port, 9600)
        m.inject("broker_disconnect")
        print(m.snapshot()["profile"]["awsstate"])

The module then runs on its own asyncio loop in a background thread; every method is safe to
call from the test's thread. Async code::

    m = await astart("eseye-anynet", transport="inproc")
    m.inject("ap_gone", ssid="lab")        # plain methods work on the module's own loop too
    await m.aclose()

Transports: ``"pty"`` (``.port`` is the pty path), ``"tcp"`` (``.port`` is ``socket://127.0.0.1:N``),
``"inproc"`` (no OS port: ``.write()`` / ``.read()`` here, or ``serial_for_url("atemu://<name>")``).
"""
from __future__ import annotations

import asyncio
import collections
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .faults import ACTIONS, CONDITIONS, FaultError
from .module import Module
from .profile import find_profile
from .world import Notify, World

#: running handles by name (the pyserial handler and the control plane find modules here)
RUNNING: dict[str, "ModuleHandle"] = {}
_lock = threading.Lock()


class ApiError(ValueError):
    """Bad API use; the message says what to do."""


def _world(world: World | dict | str | Path | None) -> World:
    if world is None:
        return World.default()
    if isinstance(world, World):
        return world
    if isinstance(world, dict):
        return World.from_dict(world)
    return World.load(world)


class InprocPort:
    """The host side of an in-process UART: bytes the module sends queue up here."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.listeners: list[Callable[[bytes], None]] = []

    def write(self, data: bytes) -> None:  # module -> host (called on the module loop)
        with self.cond:
            self.buf += data
            self.cond.notify_all()
        for cb in list(self.listeners):
            try:
                cb(data)
            except Exception:
                pass

    async def drain(self) -> None:
        return None

    def read(self, n: int = -1, timeout: float | None = 0.0) -> bytes:
        """Up to ``n`` bytes (all with -1); waits up to ``timeout`` for the first (None = forever)."""
        with self.cond:
            if not self.buf and timeout != 0:
                self.cond.wait_for(lambda: bool(self.buf), timeout)
            k = len(self.buf) if n < 0 else min(n, len(self.buf))
            out = bytes(self.buf[:k])
            del self.buf[:k]
            return out

    @property
    def waiting(self) -> int:
        return len(self.buf)

    def clear(self) -> None:
        with self.cond:
            self.buf.clear()


class ModuleHandle:
    """A running module plus what tests need around it. Create with :func:`start` / :func:`astart`."""

    def __init__(self, module: Module, *, loop: asyncio.AbstractEventLoop, transport: Any = None,
                 thread: threading.Thread | None = None, owned: bool = True, keep: int = 100_000):
        self.module = module
        self.loop = loop
        self.transport = transport
        self.thread = thread
        self.owned = owned
        self.inproc: InprocPort | None = None
        self.records: collections.deque = collections.deque(maxlen=keep)
        self.listeners: list[Callable[[dict], None]] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._log = None
        module.observers.append(self._observe)
        self.name = module.name

    # ---- identity --------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        """pty path, ``socket://host:port``, or ``atemu://<name>`` for the in-process transport."""
        if self.transport is not None:
            return self.transport.port
        return f"atemu://{self.name}"

    url = port

    @property
    def profile(self) -> str:
        return self.module.profile_cls.name

    def _observe(self, rec: dict) -> None:
        self.records.append(rec)
        for cb in list(self.listeners):
            try:
                cb(rec)
            except Exception:
                pass

    # ---- running things on the module's loop ----------------------------------------------------------
    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def call(self, fn: Callable, *args: Any, timeout: float = 15.0, **kw: Any) -> Any:
        """Run ``fn(*args)`` on the module's loop (directly when already there); coroutines are awaited
        (only from other threads)."""
        if self._on_loop():
            return fn(*args, **kw)

        async def run() -> Any:
            r = fn(*args, **kw)
            if asyncio.iscoroutine(r):
                r = await r
            return r
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    # ---- host side of the UART (in-process transport) ----------------------------------------------
    def write(self, data: bytes | str) -> None:
        """Bytes from the host to the module (any transport: goes straight to the UART input)."""
        data = data.encode() if isinstance(data, str) else bytes(data)
        if self._on_loop():
            self.module.feed(data)
        else:
            self.loop.call_soon_threadsafe(self.module.feed, data)

    def read(self, n: int = -1, timeout: float | None = 0.0) -> bytes:
        """Bytes the module sent (in-process transport only)."""
        if self.inproc is None:
            raise ApiError(f"read() needs transport='inproc'; this module is on {self.port}: open that with pyserial")
        return self.inproc.read(n, timeout)

    # ---- state -------------------------------------------------------------------------------------------
    def snapshot(self, secrets: bool = False) -> dict:
        """Live state: link, sockets, MQTT sessions, files, settings, coverage, faults, plus the profile's
        own ``snapshot()``. Passwords and keys read ``"***"`` unless ``secrets=True``."""
        return self.call(snapshot, self.module, secrets)

    def transcript(self, events: set[str] | None = None) -> list[dict]:
        """The trace records kept so far (all events, or only ``events``)."""
        recs = list(self.records)
        return recs if events is None else [r for r in recs if r.get("event") in events]

    def uart_text(self, direction: str = "tx") -> bytes:
        """Every byte seen one way (``tx`` module->host, ``rx`` host->module)."""
        return b"".join(bytes.fromhex(r["data"]) for r in list(self.records) if r.get("event") == direction)

    # ---- faults ----------------------------------------------------------------------------------------
    def inject(self, kind: str, **kw: Any) -> dict:
        """Arm a fault (see :mod:`atemu.faults`); returns its description (``id`` for :meth:`clear`)."""
        return self.call(lambda: self.module.faults.inject(kind, **kw).describe())

    def clear(self, fault_id: int | None = None) -> int:
        return self.call(self.module.faults.clear, fault_id)

    def faults(self) -> list[dict]:
        return self.call(self.module.faults.active)

    def reboot(self) -> None:
        """Power-cycle the module now (what it was doing is lost)."""
        if self._on_loop():
            self.module.request_reboot(cause="power")
        else:
            self.call(lambda: self.module.reboot(keep_output=False, cause="power"), timeout=20)

    # ---- hardware pins --------------------------------------------------------------------------------
    async def areset(self) -> None:
        """Hardware reset (the host pulses the module's reset pin): pending output is dropped, a freeze
        or low-power state ends, the module boots again and queues its startup output (Calypso's
        ``+eventstartup``, Quectel's ``ready``...). Returns once the module has booted."""
        self.module.frozen = False
        await self.module.reboot(keep_output=False, cause="pin")

    def reset(self) -> None:
        """:meth:`areset` from test code: blocks until the module has booted (on the module's own loop it
        only schedules the reset)."""
        if self._on_loop():
            self.module.frozen = False
            self.module.request_reboot(cause="pin")
        else:
            self.call(self.areset, timeout=20)

    def wakeup(self) -> bool:
        """The host raises the module's wake-up pin: a module in a low-power mode wakes (and says so,
        e.g. Calypso's ``+eventwakeup``). Returns False when the module was awake."""
        return bool(self.call(self.module.profile.wake_up))

    def freeze(self, duration: float | None = None) -> None:
        """No answer (input ignored) until :meth:`thaw` or ``duration`` seconds."""
        self.inject("freeze", duration=duration)

    def thaw(self) -> None:
        self.inject("thaw")

    def wakeup(self) -> bool:
        """The host raises the module's wake-up pin: a module in a low-power mode wakes (and says so,
        e.g. Calypso's ``+eventwakeup``). Returns False when the module was awake."""
        return bool(self.call(self.module.profile.wake_up))

    # ---- world ----------------------------------------------------------------------------------------
    def change_world(self, change: str, **kw: Any) -> Any:
        """Mutate the world and tell the profile (``world_changed`` hook). ``change`` is one of
        ``add_ap``, ``remove_ap``, ``set_rssi``, ``set_dns``, ``remove_dns``, ``set_ble_value``,
        ``ble_notify``, ``cellular``."""
        return self.call(change_world, self.module, change, **kw)

    def add_ap(self, ssid: str, **kw: Any) -> None:
        self.change_world("add_ap", ssid=ssid, **kw)

    def remove_ap(self, ssid: str) -> None:
        self.change_world("remove_ap", ssid=ssid)

    def set_rssi(self, ssid: str | None, rssi: int) -> None:
        self.change_world("set_rssi", ssid=ssid, rssi=rssi)

    def set_dns(self, host: str, ip: str | None) -> None:
        self.change_world("set_dns" if ip else "remove_dns", host=host, ip=ip)

    def set_ble_value(self, address: str, service: str, characteristic: str, value: str) -> None:
        self.change_world("set_ble_value", address=address, service=service, characteristic=characteristic, value=value)

    def ble_notify(self, address: str, characteristic: str, value: str) -> None:
        self.change_world("ble_notify", address=address, characteristic=characteristic, value=value)

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        with _lock:
            if RUNNING.get(self.name) is self:
                del RUNNING[self.name]
        if self.owned:
            await self.module.stop()
            if self.transport is not None:
                await self.transport.stop()
        if self._self_observer_installed():
            self.module.observers.remove(self._observe)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _self_observer_installed(self) -> bool:
        return self._observe in self.module.observers

    def close(self) -> None:
        if self._on_loop():
            raise ApiError("close() from the module's loop would deadlock; use 'await handle.aclose()'")
        if self.thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self.aclose(), self.loop).result(20)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.thread = None
            if not self.loop.is_running():
                self.loop.close()
        else:
            asyncio.run_coroutine_threadsafe(self.aclose(), self.loop).result(20)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    stop = close

    def __enter__(self) -> "ModuleHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "ModuleHandle":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# ------------------------------------------------------------------------------------------------
# starting

async def astart(profile: str, *, world: World | dict | str | Path | None = None, transport: str = "inproc",
                 state_dir: str | Path | None = None, pacing: bool = False, baud: int | None = None,
                 name: str | None = None, pty_path: str | Path | None = None, tcp_port: int = 0,
                 log: str | Path | None = None, host: str = "127.0.0.1",
                 observers: list[Callable[[dict], None]] | None = None) -> ModuleHandle:
    """Start a module on the running loop and return its handle.

    ``transport``: ``inproc``, ``pty`` (at ``pty_path``), ``tcp`` or ``rfc2217`` (on ``host``:``tcp_port``).
    ``observers`` see every record from the boot on.
    """
    from .transcript import JsonlTranscript
    from .uart import PtyTransport, Rfc2217Transport, TcpTransport
    try:
        cls = find_profile(profile)
    except KeyError as e:
        raise ApiError(str(e.args[0])) from None
    w = _world(world)
    cls.validate_world(w)
    tmp = None
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="atemu-state-")
        state_dir = tmp.name
    if name is not None:
        name = str(name)
        with _lock:
            if name in RUNNING:
                raise ApiError(f"a module named {name!r} is already running; choose another name")
    name = name or _unique(cls.name)
    module = Module(cls, world=w, state_dir=state_dir, baud=baud, pacing=pacing, name=name)
    if transport == "pty":
        tr = PtyTransport(module, pty_path)
    elif transport == "tcp":
        tr = TcpTransport(module, host, tcp_port)
    elif transport == "rfc2217":
        tr = Rfc2217Transport(module, host, tcp_port)
    elif transport == "inproc":
        tr = None
    else:
        raise ApiError(f"unknown transport {transport!r}; use 'pty', 'tcp', 'rfc2217' or 'inproc'")
    h = ModuleHandle(module, loop=asyncio.get_running_loop(), transport=tr)
    h._tmp = tmp
    if log is not None:
        h._log = JsonlTranscript(log, meta={"profile": cls.name, "baud": module.baud, "module": name})
        module.observers.append(h._log)
    module.observers.extend(observers or [])
    if tr is None:
        h.inproc = InprocPort()
        module.attach(h.inproc)
    else:
        await tr.start()
    await module.start()
    with _lock:
        RUNNING[name] = h
    return h


def start(profile: str, **kw: Any) -> ModuleHandle:
    """Start a module on a background loop thread (for sync code) and return its handle."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name=f"atemu-{profile}")
    thread.start()
    try:
        h = asyncio.run_coroutine_threadsafe(astart(profile, **kw), loop).result(30)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        raise
    h.thread = thread
    return h


def wrap(module: Module, transport: Any = None) -> ModuleHandle:
    """A handle for a module someone else runs (the CLI); closing it does not stop the module."""
    h = ModuleHandle(module, loop=asyncio.get_running_loop(), transport=transport, owned=False)
    with _lock:
        RUNNING[h.name] = h
    return h


def _unique(base: str) -> str:
    with _lock:
        if base not in RUNNING:
            return base
        for i in range(2, 10000):
            if f"{base}-{i}" not in RUNNING:
                return f"{base}-{i}"
    return f"{base}-{time.monotonic_ns()}"


# ------------------------------------------------------------------------------------------------
# the operations, as plain functions on a Module (used on its loop by handles and the control plane)

#: snapshot keys whose string values are secrets (passwords, pre-shared keys, private keys, tokens)
SECRET_KEY = re.compile(r"pass|pwd|psk|secret|token|private|key$|(^|[._-])key([._-]|$)", re.I)
MASK = "***"


def mask_secrets(obj: Any, key: str = "") -> Any:
    """``obj`` with every non-empty string under a secret-looking key replaced by ``"***"``."""
    if isinstance(obj, dict):
        return {k: mask_secrets(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_secrets(v, key) for v in obj]
    if isinstance(obj, (str, bytes)) and obj and key and SECRET_KEY.search(key):
        return MASK
    return obj


def snapshot(module: Module, secrets: bool = False) -> dict:
    w = module.world
    from .files import list_files
    flash = module.state_dir / "flash"
    files = [] if flash.is_symlink() or not flash.is_dir() else \
        [{"name": n, "size": size} for n, size in list_files(flash)]
    snap = {
        "name": module.name,
        "profile": module.profile_cls.name,
        "running": module.running,
        "frozen": module.frozen,
        "baud": module.baud,
        "echo": getattr(module.engine, "echo", None),
        "world": {
            "access_points": [{"ssid": a.ssid, "rssi": a.rssi, "channel": a.channel, "security": a.security}
                              for a in w.access_points],
            "cellular": {"attached": w.cellular.attached, "rssi": w.cellular.rssi, "operator": w.cellular.operator},
            "dns": dict(w.network.hosts),
            "ble_peers": [{"address": p.address, "name": p.name, "rssi": p.rssi} for p in w.ble_peers],
        },
        "net": module.faults.snapshot_net(),
        "settings": module.settings.items(),
        "files": files,
        "coverage": dict(module.coverage),
        "faults": module.faults.active(),
        "state": {},
    }
    hook = getattr(module.profile, "snapshot", None)
    if hook is not None:
        try:
            snap["state"] = hook() or {}
        except Exception as e:
            snap["state"] = {"error": f"profile snapshot failed: {e}"}
    if secrets:
        return snap
    settings = snap["settings"]
    for k, where in getattr(module.profile_cls, "secret_settings", {}).items():
        v = settings.get(k)
        if isinstance(v, list):
            settings[k] = [MASK if i in where and x else x for i, x in enumerate(v)]
    return mask_secrets(snap)


#: the parameters each world change takes (anything else is an error that names it)
CHANGES = {"add_ap": None, "remove_ap": {"ssid"}, "set_rssi": {"ssid", "rssi", "cellular"},
           "set_dns": {"host", "ip"}, "remove_dns": {"host", "ip"},
           "set_ble_value": {"address", "service", "characteristic", "value"},
           "ble_notify": {"address", "characteristic", "value", "every"}, "add_ble_peer": None,
           "cellular": {"attached"}}


def change_world(module: Module, change: str, **kw: Any) -> Any:
    """Apply one world change, validated with the world file's rules (ApiError says what is wrong)."""
    from .world import WorldError, _V
    if change not in CHANGES:
        raise ApiError(f"unknown world change {change!r}; use add_ap, remove_ap, set_rssi, set_dns, remove_dns, "
                       "set_ble_value, ble_notify, add_ble_peer or cellular")
    allowed = CHANGES[change]
    if allowed is not None:
        for k in kw:
            if k not in allowed:
                raise ApiError(f"world change {change!r} takes {', '.join(sorted(allowed))}; not {k!r}")
    try:
        return _change_world(module, _V(f"world change {change!r}"), change, kw)
    except WorldError as e:
        raise ApiError(str(e)) from None


def _need(kw: dict, *names: str) -> None:
    for n in names:
        if kw.get(n) is None:
            raise ApiError(f"this world change needs {n!r}")


def _change_world(module: Module, v: Any, change: str, kw: dict) -> Any:
    w = module.world
    rec: dict[str, Any] = {"change": change, **{k: val for k, val in kw.items() if val is not None}}
    if change == "add_ap":
        ap = v.access_point({k: val for k, val in kw.items() if val is not None}, "access point", len(w.access_points))
        if w.find_ap(ap.ssid) is not None:
            w.access_points.remove(w.find_ap(ap.ssid))
        w.access_points.append(ap)
        rec = {"change": change, "ssid": ap.ssid, "security": ap.security, "channel": ap.channel, "rssi": ap.rssi}
    elif change == "remove_ap":
        _need(kw, "ssid")
        ap = w.find_ap(kw["ssid"])
        if ap is None:
            raise ApiError(f"no access point {kw['ssid']!r}; known: {', '.join(a.ssid for a in w.access_points) or 'none'}")
        w.access_points.remove(ap)
    elif change == "set_rssi":
        _need(kw, "rssi")
        ssid = kw.get("ssid")
        if ssid is None or kw.get("cellular"):
            w.cellular.rssi = v.integer(kw["rssi"], "rssi (cellular)", -140, 0)
        else:
            ap = w.find_ap(ssid)
            if ap is None:
                raise ApiError(f"no access point {ssid!r}")
            ap.rssi = v.integer(kw["rssi"], "rssi", -127, 0)
    elif change == "set_dns":
        _need(kw, "host", "ip")
        host = v.string(kw["host"], "host").lower()
        w.network.hosts[host] = v.host_target(kw["ip"], f"ip of {host}")
    elif change == "remove_dns":
        _need(kw, "host")
        w.network.hosts.pop(v.string(kw["host"], "host").lower(), None)
    elif change == "set_ble_value":
        _need(kw, "address", "service", "characteristic", "value")
        p = w.find_peer(v.string(kw["address"], "address"))
        if p is None:
            raise ApiError(f"no BLE peer {kw['address']!r}")
        p.services.setdefault(v.string(kw["service"], "service").lower(), {})[
            v.string(kw["characteristic"], "characteristic").lower()] = v.hexstr(kw["value"], "value")
    elif change == "ble_notify":
        _need(kw, "address", "characteristic", "value")
        p = w.find_peer(v.string(kw["address"], "address"))
        if p is None:
            raise ApiError(f"no BLE peer {kw['address']!r}")
        every = v.seconds(kw.get("every") or 0, "every", zero=True)
        p.notify.append(Notify(v.string(kw["characteristic"], "characteristic").lower(), v.hexstr(kw["value"], "value"),
                               every=every, count=1))
    elif change == "add_ble_peer":
        peer = v.ble_peer(kw, "BLE peer")
        if w.find_peer(peer.address) is not None:
            w.ble_peers.remove(w.find_peer(peer.address))
        w.ble_peers.append(peer)
    elif change == "cellular":
        w.cellular.attached = v.boolean(kw.get("attached", True), "attached")
    module.trace("world", **rec)
    hook = getattr(module.profile, "world_changed", None)
    if hook is not None:
        hook(rec)
    return True


FAULTS = {**ACTIONS, **CONDITIONS}
__all__ = ["ApiError", "FaultError", "FAULTS", "InprocPort", "ModuleHandle", "RUNNING", "astart", "start", "wrap",
           "snapshot", "change_world"]
