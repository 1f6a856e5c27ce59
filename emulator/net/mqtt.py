"""Asyncio MQTT session built on paho-mqtt, shared by every vendor profile.

One :class:`MqttSession` is one module-side MQTT client, run entirely on the module's asyncio loop:
no thread per session, nothing blocks the loop.

* The broker connection is the core's :class:`~atemu.net.sockets.TcpConnection`: TCP connect and
  TLS handshake (verification, SNI, client certificate) happen on the loop, world DNS first, and the
  latency/bandwidth faults shape it with the same :class:`~atemu.faults.Shaper` as any module
  socket (in order, both directions).
* paho-mqtt does the MQTT protocol through its public external-loop interface only:
  ``connect()`` with ``transport="unix"`` to a one-shot local socket the session accepts at once
  (Linux abstract namespace: no file), ``on_socket_open`` / ``on_socket_register_write`` /
  ``on_socket_unregister_write`` / ``on_socket_close`` put paho's socket on the loop, and
  ``loop_read`` / ``loop_write`` / ``loop_misc`` (once a second: keep-alive) drive it.
* The session relays bytes between that local socket and the broker connection. Seeing the bytes
  gives what paho does not report: the raw CONNACK code (paho 2 hides 3.1.1 refusals such as
  "unacceptable protocol version" when it does not reconnect), why the link ended (peer FIN =
  ``"remote"``, reset / TLS alert / error = ``"error"``) and, for a TLS 1.3 client certificate the
  broker rejects after the handshake, the TLS error itself: one warning line, nothing from paho.
* Modules whose "open" and "connect" are two commands use :meth:`MqttSession.open_transport`:
  the broker connection is opened (and the TLS handshake done) first; the next ``connect()``
  makes the paho client and sends CONNECT on that same connection.
* User callbacks (``on_message``, ``on_disconnect``, ``on_properties``) are scheduled with ``call_soon``,
  never called from inside paho's own callbacks, so they may use the session freely.
* MQTT 5 properties cross the session as plain ``(identifier, value)`` pairs (:data:`Props`), never
  as paho objects: the profile gives them for CONNECT (and the will), PUBLISH, SUBSCRIBE, UNSUBSCRIBE
  and DISCONNECT, and hears those the broker sends (CONNACK, PUBLISH, acks, DISCONNECT) through
  ``on_properties(packet, props)``, called just before the event the packet makes (a message's
  properties come right before its ``on_message``). :func:`props_for` keeps the properties a packet
  may carry.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import ipaddress
import itertools
import logging
import os
import secrets
import socket
import ssl
import sys
import tempfile
from typing import Any, Callable, Coroutine

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.exception import MQTTException
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from atemu.net.errors import NetError, classify
from atemu.net.sockets import TcpConnection

log = logging.getLogger(__name__)
#: what to check, per NetError kind, in the one-line warning of a failed connection
_HINTS = {
    "refused": "is the broker running on that port?",
    "dns": "map the name in the world's network.hosts",
    "dns_timeout": "map the name in the world's network.hosts",
    "timeout": "is the broker reachable?",
    "tls_verify": "does the CA sign the broker's certificate for that name?",
    "tls": "does the broker accept the client certificate and TLS settings?",
}
#: paho's own log lines: debug detail (the session logs one line per failure itself); errors in callbacks
_paho_log = logging.getLogger(__name__ + ".paho")

__all__ = ["MqttSession", "SUBACK_FAILURE", "connack_v5_to_v311", "Props", "PROPERTY_NAMES", "props_for",
           "DISCONNECT_REASONS"]

#: Granted-QoS value meaning "subscription refused" in SUBACK.
SUBACK_FAILURE = 0x80

# MQTT 5 CONNACK reason codes -> closest MQTT 3.1.1 return code.
_V5_TO_V311 = {
    0x00: 0,
    0x84: 1,  # unsupported protocol version
    0x85: 2,  # client identifier not valid
    0x88: 3,  # server unavailable
    0x89: 3,  # server busy
    0x97: 3,  # quota exceeded
    0x9C: 3,  # use another server
    0x9D: 3,  # server moved
    0x9F: 3,  # connection rate exceeded
    0x86: 4,  # bad user name or password
    0x8C: 4,  # bad authentication method
    0x87: 5,  # not authorized
    0x8A: 5,  # banned
}


def connack_v5_to_v311(reason: int) -> int:
    """Map an MQTT 5 CONNACK reason code to an MQTT 3.1.1 return code (0..5).

    Unknown failure codes map to 3 ("server unavailable")."""
    if reason in _V5_TO_V311:
        return _V5_TO_V311[reason]
    return 3 if reason >= 0x80 else 0


#: MQTT 5 properties as the session takes and reports them: ``(identifier, value)`` pairs in packet
#: order. Numbers are int, strings str, Binary Data (9 Correlation Data, 22 Authentication Data)
#: bytes, a User Property (38) a ``(name, value)`` pair of str; 11 and 38 may repeat.
Props = list[tuple[int, Any]]

_PACKETS = {"CONNECT": PacketTypes.CONNECT, "WILL": PacketTypes.WILLMESSAGE, "PUBLISH": PacketTypes.PUBLISH,
            "SUBSCRIBE": PacketTypes.SUBSCRIBE, "UNSUBSCRIBE": PacketTypes.UNSUBSCRIBE,
            "DISCONNECT": PacketTypes.DISCONNECT, "CONNACK": PacketTypes.CONNACK}
_TABLE = Properties(PacketTypes.CONNECT)
#: property identifier -> its name in the MQTT 5 specification ("User Property")
PROPERTY_NAMES: dict[int, str] = {i: n for n, i in _TABLE.names.items()}
_ATTR = {i: n.replace(" ", "") for i, n in PROPERTY_NAMES.items()}
_BINARY = {i for i, (t, _) in _TABLE.properties.items() if _TABLE.types[t] == "Binary Data"}
_STRING = {i for i, (t, _) in _TABLE.properties.items() if _TABLE.types[t] == "UTF-8 Encoded String"}


#: the reason codes an MQTT 5 DISCONNECT may carry (MQTT 5 section 3.14.2.1)
DISCONNECT_REASONS = frozenset(
    c for c, v in ReasonCode(PacketTypes.DISCONNECT).names.items()
    if any(PacketTypes.DISCONNECT in packets for packets in v.values()))


def props_for(packet: str, props: Props | None) -> Props:
    """The properties of ``props`` that an MQTT 5 ``packet`` ("CONNECT", "WILL", "PUBLISH",
    "SUBSCRIBE", "UNSUBSCRIBE", "DISCONNECT") may carry, in order (MQTT 5 section 2.2.2.2)."""
    kind = _PACKETS[packet]
    return [(i, v) for i, v in props or () if i in _TABLE.properties and kind in _TABLE.properties[i][1]
            and not (i == 11 and packet == "PUBLISH")]   # a Subscription Identifier only comes from the broker


def _to_paho(packet: str, props: Props | None) -> Properties | None:
    """paho's Properties for ``packet`` (None when there are none); NetError("invalid") for a
    property the packet cannot carry or a value out of its range. The same properties give the
    same (cached, never changed) object: a host repeating one set costs no rebuilding."""
    if not props:
        return None
    try:
        return _paho_cached(packet, tuple(props))
    except TypeError:            # an unhashable value (a list as a pair, a bytearray): build it
        return _build_paho(packet, props)


@functools.lru_cache(maxsize=128)
def _paho_cached(packet: str, props: tuple) -> Properties:
    return _build_paho(packet, props)


def _build_paho(packet: str, props: Any) -> Properties:
    out = Properties(_PACKETS[packet])
    for pid, value in props:
        try:
            if pid == 38:
                name, val = value
                value = (str(name), str(val))
            elif pid in _BINARY:
                value = bytes(value)
            elif pid in _STRING:
                value = value if isinstance(value, str) else bytes(value).decode("utf-8")
            else:
                value = int(value)
            setattr(out, _ATTR[pid], value)
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, MQTTException) as exc:
            raise NetError("invalid", f"MQTT 5 property {pid} in {packet}: {exc}") from None
    return out


def _from_paho(props: Any) -> Props:
    """The ``(identifier, value)`` pairs of paho's Properties, in the order they were on the wire."""
    if props is None:
        return []
    out: Props = []
    for attr, value in vars(props).items():
        pid = props.getIdentFromName(attr)
        if pid < 0:
            continue
        for v in value if isinstance(value, list) else [value]:
            out.append((pid, (str(v[0]), str(v[1])) if pid == 38 else bytes(v) if pid in _BINARY else v))
    return out


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _neterror(kind: str, message: str, cause: BaseException | None = None) -> NetError:
    err = NetError(kind, message)
    if cause is not None:
        err.__cause__ = cause
    return err


def _with_mid(e: NetError, mid: int) -> NetError:
    """``e`` for the publish ``mid`` (a copy: one error may fail several pending messages)."""
    return NetError(e.kind, e.message, errno=e.errno, mid=mid)


def _map_exception(exc: BaseException) -> NetError:
    """Turn a transport exception from the paho thread into a NetError."""
    if isinstance(exc, NetError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _neterror("tls_verify", f"TLS certificate verification failed: {exc}", exc)
    if isinstance(exc, ssl.SSLError):
        return _neterror("tls", f"TLS error: {exc}", exc)
    if isinstance(exc, ConnectionAbortedError):
        return _neterror("closed", f"connection aborted: {exc}", exc)
    if isinstance(exc, ConnectionRefusedError):
        return _neterror("refused", f"connection refused: {exc}", exc)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return _neterror("timeout", f"timed out: {exc}", exc)
    if isinstance(exc, ConnectionResetError):
        return _neterror("reset", f"connection reset: {exc}", exc)
    if isinstance(exc, ValueError):
        return _neterror("invalid", str(exc), exc)
    try:
        err = classify(exc)
    except Exception:  # pragma: no cover - defensive
        log.exception("classify() failed")
        err = NetError("other", str(exc))
    if err.__cause__ is None:
        err.__cause__ = exc
    return err




_pipe_ids = itertools.count(1)


def _pipe_listener() -> tuple[socket.socket, str, str | None]:
    """A one-shot listening local socket for paho to connect to: (socket, address, dir to remove)."""
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmpdir = None
    try:
        if sys.platform.startswith("linux"):
            addr = f"\0atemu-mqtt-{os.getpid()}-{next(_pipe_ids)}-{secrets.token_hex(6)}"
        else:  # pragma: no cover - no abstract namespace: a private directory
            tmpdir = tempfile.mkdtemp(prefix="atemu-mqtt-")
            addr = os.path.join(tmpdir, "s")
        lst.bind(addr)
        lst.listen(1)
        lst.setblocking(False)
    except BaseException:
        lst.close()
        raise
    return lst, addr, tmpdir


class _Wire:
    """One connection of a session: the broker link, the paho client, the local socket between."""

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.client: paho.Client | None = None
        self.session: MqttSession  # set by the session
        self.inner: socket.socket | None = None  # the session's end of the local socket paho speaks MQTT on
        self.ifd: int | None = None
        self.outbuf = bytearray()              # bytes for paho its socket did not take yet
        self.eof_pending = False               # the link ended: EOF to paho once outbuf is out
        self.fd: int | None = None           # paho's socket, watched on the loop
        self.psock: Any = None
        self.writing = False                   # paho's socket is watched for writability
        self.flush_due = False                 # a loop_write is scheduled
        self.dead = False
        self.head = b""                        # the first bytes from the broker (CONNACK)
        self.connack: tuple[bool, int] | None = None
        self.link_reason: str | None = None    # why the broker connection ended
        self.link_error: NetError | None = None


class _Ticker:
    """One timer per loop drives every session's keep-alive check once a second (not one timer each)."""

    _by_loop: "dict[asyncio.AbstractEventLoop, _Ticker]" = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wires: list[_Wire] = []
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> "_Ticker":
        t = cls._by_loop.get(loop)
        if t is None:
            for old in [lp for lp in cls._by_loop if lp.is_closed()]:  # loops gone with sessions on them
                del cls._by_loop[old]
            t = cls._by_loop[loop] = cls(loop)
        return t

    def add(self, wire: _Wire) -> None:
        self.wires.append(wire)
        if self.handle is None:
            self.handle = self.loop.call_later(1.0, self._run)

    def _run(self) -> None:
        keep = []
        for wire in self.wires:
            try:
                if wire.session._tick(wire):
                    keep.append(wire)
            except Exception:  # noqa: BLE001 - one session's trouble stops no other
                log.exception("MQTT keep-alive check failed")
        self.wires = keep
        if keep and not self.loop.is_closed():
            self.handle = self.loop.call_later(1.0, self._run)
        else:
            self.handle = None
            self._by_loop.pop(self.loop, None)


MessageCallback = Callable[[str, bytes, int, bool, int], Any]
DisconnectCallback = Callable[[str, int], Any]
PropertiesCallback = Callable[[str, "Props"], Any]


def _parse_connack(head: bytes) -> tuple[bool, int] | None:
    """(session present, return/reason code) from the first bytes the broker sent, if complete."""
    if not head or head[0] != 0x20:
        return None
    length, i = 0, 1
    while True:
        if i >= len(head) or i > 4:
            return None
        b = head[i]
        length |= (b & 0x7F) << (7 * (i - 1))
        i += 1
        if not b & 0x80:
            break
    if length < 2 or len(head) < i + 2:
        return None
    return bool(head[i] & 1), head[i + 1]


class MqttSession:
    """One MQTT client connection (3.1, 3.1.1 or 5) on the asyncio loop.

    Set ``on_message(topic, payload, qos, retain, mid)`` and
    ``on_disconnect(reason, rc)`` (plain functions or coroutine functions);
    both run on the asyncio loop.  ``reason`` is ``"local"`` (we called
    :meth:`disconnect`), ``"remote"`` (broker closed the connection or sent
    DISCONNECT) or ``"error"`` (socket error, keepalive timeout).  ``rc`` is
    0 for local, the MQTT 5 DISCONNECT reason code when the broker sent one,
    else paho's error code (7 = connection lost, 16 = keepalive timeout,
    2 = protocol error).  :meth:`close` never fires ``on_disconnect``.

    The session can be connected again after a disconnect.

    :meth:`open_transport` opens the TCP connection (and does the TLS
    handshake) without sending CONNECT; the next :meth:`connect` sends
    CONNECT on that same connection.

    MQTT 5 (``protocol=5``): ``properties`` go on CONNECT, ``will_properties``
    on the will; :meth:`publish`, :meth:`subscribe`, :meth:`unsubscribe` and
    :meth:`disconnect` take ``properties`` too (:data:`Props`; see
    :func:`props_for`). ``on_properties(packet, props)`` hears the properties
    of every packet the broker sends with some ("CONNACK", "PUBLISH",
    "PUBACK" (the ack of a QoS 1/2 publish), "SUBACK", "UNSUBACK", "DISCONNECT"), just
    before the event that packet makes; ``connack_properties`` keeps the last
    CONNACK's. With 3.1/3.1.1 properties are refused (NetError "invalid").
    """

    def __init__(
        self,
        *,
        client_id: str,
        host: str,
        port: int,
        resolver: Any,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        keepalive: int = 60,
        clean_session: bool = True,
        protocol: int = 4,
        username: str | None = None,
        password: str | bytes | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        connect_timeout: float = 10.0,
        loop: asyncio.AbstractEventLoop | None = None,
        on_message: MessageCallback | None = None,
        on_disconnect: DisconnectCallback | None = None,
        properties: Props | None = None,
        will_properties: Props | None = None,
        on_properties: PropertiesCallback | None = None,
    ) -> None:
        if protocol not in (3, 4, 5):
            raise ValueError(f"protocol must be 3, 4 or 5, not {protocol!r}")
        self.client_id = client_id
        self.host = host
        self.port = int(port)
        self.resolver = resolver
        self.tls = tls
        self.server_hostname = server_hostname or host
        self.keepalive = int(keepalive)
        self.clean_session = bool(clean_session)
        self.protocol = protocol
        self.username = username
        self.password = password
        self.will = will
        self.connect_timeout = float(connect_timeout)
        self.on_message = on_message
        self.on_disconnect = on_disconnect
        #: MQTT 5 properties of CONNECT and of the will (read at each connect)
        self.properties: Props = list(properties or [])
        self.will_properties: Props = list(will_properties or [])
        self.on_properties = on_properties
        #: MQTT 5 properties of the last CONNACK (empty before, and with 3.1.1)
        self.connack_properties: Props = []
        #: optional hook called (no arguments) when the TLS handshake is done, before CONNECT
        self.on_tls_up: Callable[[], Any] | None = None
        #: MQTT 3.1.1-style CONNACK return code of the last connect (None before).
        self.connack_code: int | None = None
        #: Raw CONNACK byte (the MQTT 5 reason code when protocol == 5).
        self.connack_reason: int | None = None
        #: Session-present flag of the last CONNACK.
        self.session_present = False
        #: Address the last connect() or open_transport() dialled.
        self.remote_ip: str | None = None
        #: Packet identifier of the last SUBSCRIBE/UNSUBSCRIBE sent (for vendor ack events).
        self.last_mid: int | None = None

        self._shaping: Any = None
        self._loop_arg = loop
        self._loop = loop
        self._wire: _Wire | None = None
        self._pre: TcpConnection | None = None        # open_transport(): the link waiting for connect()
        self._opening: asyncio.Future[Any] | None = None  # a dial in progress (close() cancels it)
        self._connected = False
        self._connack_fut: asyncio.Future[int] | None = None
        self._local_disconnect = False
        self._disconnect_reported = False
        self._pending_pub: dict[int, asyncio.Future[None]] = {}
        self._pending_sub: dict[int, asyncio.Future[list[int]]] = {}
        self._pending_unsub: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ API
    @property
    def connected(self) -> bool:
        """True between an accepted CONNACK and the loss/closing of the link."""
        return self._connected

    @property
    def transport_open(self) -> bool:
        """True while a connection made by :meth:`open_transport` waits for :meth:`connect`."""
        return self._pre is not None

    @property
    def active(self) -> bool:
        """True while the session has a connection (or is making one)."""
        return self._wire is not None or self._pre is not None or self._opening is not None

    @property
    def link(self) -> TcpConnection | None:
        """The connection to the broker (connected, or opened by :meth:`open_transport`), else None."""
        if self._wire is not None:
            return self._wire.conn
        return self._pre

    @property
    def shaping(self) -> Any:
        """The fault registry while a latency/bandwidth fault is armed (set by emulator/faults.py), else None."""
        return self._shaping

    @shaping.setter
    def shaping(self, registry: Any) -> None:
        self._shaping = registry
        conn = self.link
        if registry is not None and conn is not None:
            self._shape(conn)

    def _shape(self, conn: TcpConnection) -> None:
        conn.fault_names = [n for n in (self.host, self.server_hostname, self.remote_ip) if n]  # type: ignore[attr-defined]
        if self._shaping is not None and conn.shaper is None:
            from atemu.faults import Shaper
            conn.shaper = Shaper(self._shaping, conn)

    async def open_transport(self) -> None:
        """Resolve, open the TCP connection and do the TLS handshake, without CONNECT.

        Abortable by :meth:`close`. The next :meth:`connect` sends CONNECT on this
        connection, built from the session's attributes as they are then
        (``client_id``, ``username``, ``will``, ``keepalive``...), so they may still
        be changed. Until then the link is watched: if the peer closes or resets it
        (or sends anything: a broker speaks only after CONNECT) the transport is
        dropped and ``on_disconnect`` fires with ``"remote"`` (EOF) or ``"error"``
        and rc 7 (2 for unexpected bytes); a later connect() dials anew.
        :meth:`close` closes it. Raises NetError like :meth:`connect`."""
        try:
            await self._open_transport()
        except NetError as e:
            self._warn(e)
            raise

    async def _open_transport(self) -> None:
        if self.active:
            raise NetError("invalid", "MQTT session already has a connection")
        loop = asyncio.get_running_loop()
        self._loop = self._loop_arg or loop
        deadline = loop.time() + self.connect_timeout
        ip = await self._resolve()
        faults = getattr(self.resolver, "faults", None)
        if faults is not None:
            await faults.before_connect(self.server_hostname, self.port, tls=self.tls is not None)
            faults.track(self)
        conn = await self._dial(ip, deadline)
        self._pre = conn
        conn.on_data = self._pre_data
        conn.on_close = self._pre_closed

    async def connect(self) -> int:
        """Resolve, connect and wait for CONNACK; return its 3.1.1 return code.

        0 means accepted (``connected`` becomes True); 1..5 mean refused
        (the link is torn down; see ``connack_reason`` for the raw MQTT 5
        code).  Transport failures raise NetError ("dns", "refused",
        "timeout", "tls", "tls_verify", "closed", ...). Every failure is also
        logged as one warning line that says what to check."""
        try:
            rc = await self._connect()
        except NetError as e:
            self._warn(e)
            raise
        if rc != 0:
            log.warning("MQTT broker %s:%d refused the connection of %r (CONNACK %d): check the client id, "
                        "user name and password", self.server_hostname or self.host, self.port, self.client_id, rc)
        return rc

    def _warn(self, e: NetError) -> None:
        hint = _HINTS.get(e.kind, "")
        log.warning("MQTT broker %s:%d: %s%s", self.server_hostname or self.host, self.port, e,
                    f" ({hint})" if hint else "")

    async def _connect(self) -> int:
        if self._wire is not None and self._connected:
            raise NetError("invalid", "MQTT session is already connected")
        if self._opening is not None:
            raise NetError("invalid", "MQTT transport is still opening")
        pre = self._take_transport()
        if self._wire is not None:
            self.close()
        loop = asyncio.get_running_loop()
        self._loop = self._loop_arg or loop
        deadline = loop.time() + self.connect_timeout
        self.connack_code = self.connack_reason = None
        self.session_present = False
        self.connack_properties = []

        faults = getattr(self.resolver, "faults", None)  # the module's fault registry (emulator/faults.py)
        if pre is None:
            ip = await self._resolve()
            if faults is not None:
                await faults.before_connect(self.server_hostname, self.port, tls=self.tls is not None)
        if faults is not None:
            refusal = faults.broker_refusal()
            if refusal is not None:
                if pre is not None:
                    pre.close()
                self.connack_code = self.connack_reason = refusal
                return refusal
            faults.track(self)
        try:
            client = self._make_client()
        except ValueError as exc:
            if pre is not None:
                pre.close()
            raise NetError("invalid", str(exc)) from exc
        conn = pre if pre is not None else await self._dial(ip, deadline)

        wire = _Wire(conn)
        wire.session = self
        wire.client = client
        self._wire = wire
        self._connack_fut = fut = self._loop.create_future()
        self._local_disconnect = False
        self._disconnect_reported = False
        conn.on_data = lambda c: self._from_broker(wire, True)
        conn.on_close = lambda c, reason: self._link_lost(wire, reason)
        try:
            await self._start_paho(wire)
            remaining = max(0.0, deadline - loop.time())
            try:
                code = await asyncio.wait_for(fut, remaining)
            except (asyncio.TimeoutError, TimeoutError):
                raise NetError(
                    "timeout", f"no CONNACK from {self.host}:{self.port} within {self.connect_timeout:g}s"
                ) from None
        except BaseException:
            if self._wire is wire:
                self.close()
            raise
        if code != 0:
            self.close()
        return code

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10.0,
                        properties: Props | None = None) -> list[int]:
        """Subscribe and return the granted QoS per topic (0x80 = refused; with MQTT 5 the
        SUBACK reason code)."""
        client = self._require_connected()
        if not topics:
            raise NetError("invalid", "no topics to subscribe")
        props = self._props("SUBSCRIBE", properties)
        try:
            rc, mid = client.subscribe([(str(t), int(q)) for t, q in topics], properties=props)
        except ValueError as exc:
            raise NetError("invalid", str(exc)) from exc
        self._check_rc(rc, "subscribe")
        assert mid is not None
        self.last_mid = mid
        return await self._await_ack(self._pending_sub, mid, timeout, "SUBACK")

    async def unsubscribe(self, topics: list[str], timeout: float = 10.0, properties: Props | None = None) -> None:
        """Unsubscribe and wait for UNSUBACK."""
        client = self._require_connected()
        if not topics:
            raise NetError("invalid", "no topics to unsubscribe")
        props = self._props("UNSUBSCRIBE", properties)
        try:
            rc, mid = client.unsubscribe([str(t) for t in topics], properties=props)
        except ValueError as exc:
            raise NetError("invalid", str(exc)) from exc
        self._check_rc(rc, "unsubscribe")
        assert mid is not None
        self.last_mid = mid
        await self._await_ack(self._pending_unsub, mid, timeout, "UNSUBACK")

    def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, timeout: float = 10.0,
        properties: Props | None = None,
    ) -> Coroutine[Any, Any, int]:
        """Publish raw bytes; ``await`` it for the message id.

        The PUBLISH is written towards the broker by the call itself (not when a task
        awaiting it first runs). Awaiting returns at once for QoS 0, after PUBACK/PUBCOMP
        for QoS 1/2, and raises NetError("timeout") when the ack does not come in time,
        NetError("closed") when not connected, NetError("invalid") for a bad topic or property.
        A failure of a publish that got a message id carries it (``NetError.mid``): the
        ack did not come in time, the link went down before it, the write failed.
        With MQTT 5 ``topic`` may be empty when ``properties`` carry a Topic Alias the broker knows."""
        info = None
        try:
            client = self._require_connected()
            props = self._props("PUBLISH", properties)
            try:
                info = client.publish(str(topic), bytes(payload), int(qos), bool(retain), properties=props)
            except (ValueError, TypeError) as exc:
                raise NetError("invalid", str(exc)) from exc
            self._check_rc(info.rc, "publish")
        except NetError as e:
            return self._raise(e if info is None else _with_mid(e, info.mid))
        fut = self._expect_ack(self._pending_pub, info.mid)
        return self._publish_acked(fut, info.mid, timeout)

    async def _publish_acked(self, fut: asyncio.Future[Any], mid: int, timeout: float) -> int:
        try:
            return await self._wait_ack(self._pending_pub, mid, fut, timeout, "PUBACK/PUBCOMP", mid)
        except NetError as e:
            raise _with_mid(e, mid) from e

    async def disconnect(self, timeout: float = 5.0, reason_code: int = 0, properties: Props | None = None) -> None:
        """Send DISCONNECT (graceful: no will) and wait for the link to close.

        MQTT 5: ``reason_code`` (4 = "disconnect with will message": the broker publishes the
        will) and ``properties`` go on the DISCONNECT; with 3.1.1 both are ignored.
        Fires ``on_disconnect("local", 0)`` if the session was connected."""
        wire = self._wire
        if wire is None or not self._connected:
            self.close()
            return
        rc = props = None
        if self.protocol == 5:
            props = self._props("DISCONNECT", properties)
            if reason_code:
                try:
                    rc = ReasonCode(PacketTypes.DISCONNECT, identifier=int(reason_code))
                except (ValueError, TypeError, KeyError) as exc:
                    raise NetError("invalid", f"DISCONNECT reason code {reason_code}: {exc}") from None
        self._local_disconnect = True
        assert wire.client is not None
        wire.client.disconnect(rc, props)
        self._kick(wire)
        try:
            await wire.conn.wait_closed(timeout)
        except NetError:
            log.warning("MQTT %r: DISCONNECT not flushed within %gs", self.client_id, timeout)
        if self._wire is wire:
            was_connected = self._connected
            self.close()
            if was_connected and not self._disconnect_reported:
                self._disconnect_reported = True
                self._fire_disconnect("local", 0)

    def close(self) -> None:
        """Tear the connection down at once (no DISCONNECT, so the broker
        publishes the will).  Idempotent; does not fire ``on_disconnect``.
        Pending operations fail with NetError("closed").
        Also closes (or aborts the opening of) an :meth:`open_transport` connection."""
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
        pre, self._pre = self._pre, None
        if pre is not None:
            pre.on_data = pre.on_close = None
            pre.close()
        wire, self._wire = self._wire, None
        self._connected = False
        self._fail_pending(NetError("closed", "MQTT session closed locally"))
        if wire is not None:
            self._bury(wire, graceful=False)

    async def __aenter__(self) -> "MqttSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ internals
    async def _resolve(self) -> str:
        """The address to dial (world DNS overrides first); sets ``remote_ip``."""
        if _is_ip(self.host):
            ip = self.host
        else:
            try:
                ip = await self.resolver.resolve_one(self.host, timeout=self.connect_timeout)
            except NetError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _map_exception(exc) from exc
        self.remote_ip = ip
        return ip

    async def _dial(self, ip: str, deadline: float) -> TcpConnection:
        """TCP connect (+ TLS handshake) on the loop; close() aborts it with NetError("closed")."""
        assert self._loop is not None
        remaining = max(0.001, deadline - self._loop.time())
        task = asyncio.ensure_future(TcpConnection.open(
            ip, self.port, ssl=self.tls, server_hostname=self.server_hostname if self.tls is not None else None,
            timeout=remaining))
        self._opening = task
        try:
            await asyncio.wait({task})
        except BaseException:
            task.cancel()
            if self._opening is task:
                self._opening = None
            raise
        if self._opening is not task:  # close() came first
            if not task.cancelled() and task.exception() is None:
                task.result().abort()
            elif not task.cancelled():
                task.exception()
            raise NetError("closed", "MQTT session closed while connecting")
        self._opening = None
        try:
            conn = task.result()
        except NetError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _map_exception(exc) from exc
        self._shape(conn)
        if self.tls is not None:
            await self._settle_tls(conn)
        if self.tls is not None and self.on_tls_up is not None:
            self._call_user(self.on_tls_up)
        return conn

    async def _settle_tls(self, conn: TcpConnection, limit: float = 0.1) -> None:
        """TLS 1.3: the broker checks the client certificate after the client's side of the handshake
        is done. Wait (briefly) for its verdict, a session ticket or an alert, before anything is
        sent: a CONNECT racing the alert makes the broker close with unread data, and the reset
        that follows can swallow the alert (then the error would be "reset", not why)."""
        transport = conn._transport
        obj = transport.get_extra_info("ssl_object") if transport is not None else None
        if obj is None or obj.version() != "TLSv1.3":
            return
        assert self._loop is not None
        deadline = self._loop.time() + limit
        while not conn.closed and self._loop.time() < deadline:
            session = obj.session
            if session is not None and session.has_ticket:
                return
            await asyncio.sleep(0.002)

    def _take_transport(self) -> TcpConnection | None:
        """Detach the open_transport() connection for the next paho client."""
        pre, self._pre = self._pre, None
        if pre is not None:
            pre.on_data = pre.on_close = None
            if pre.closed:
                return None
        return pre

    def _pre_data(self, conn: TcpConnection) -> None:
        """The idle open_transport() connection received bytes: no broker speaks before CONNECT."""
        if self._pre is not conn:
            return
        log.warning("MQTT %r: %s:%s sent data before CONNECT", self.client_id, self.host, self.port)
        self._pre = None
        conn.on_data = conn.on_close = None
        conn.abort()
        log.info("MQTT %r: transport lost before CONNECT (error, rc=2)", self.client_id)
        self._fire_disconnect("error", int(MQTTErrorCode.MQTT_ERR_PROTOCOL))

    def _pre_closed(self, conn: TcpConnection, reason: str) -> None:
        if self._pre is not conn:
            return
        self._pre = None
        reason = "remote" if reason == "remote" else "error"
        log.info("MQTT %r: transport lost before CONNECT (%s, rc=7)", self.client_id, reason)
        self._fire_disconnect(reason, int(MQTTErrorCode.MQTT_ERR_CONN_LOST))

    def _make_client(self) -> paho.Client:
        proto = {3: paho.MQTTv31, 4: paho.MQTTv311, 5: paho.MQTTv5}[self.protocol]
        kwargs: dict[str, Any] = dict(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=proto,
            transport="unix",
            reconnect_on_failure=False,
        )
        if self.protocol != 5:
            kwargs["clean_session"] = self.clean_session
            if self.properties or self.will_properties:
                raise ValueError(f"MQTT properties need protocol version 5 (this session speaks {self.protocol})")
        client = paho.Client(**kwargs)
        client.suppress_exceptions = True
        client.enable_logger(_paho_log)  # paho's lines (debug detail) format only when that level is on
        if self.username is not None or self.password is not None:
            client.username_pw_set(self.username or "", self.password)
        if self.will is not None:
            topic, payload, qos, retain = self.will
            client.will_set(topic, bytes(payload), int(qos), bool(retain),
                            properties=_to_paho("WILL", self.will_properties) if self.protocol == 5 else None)
        return client

    async def _start_paho(self, wire: _Wire) -> None:
        """paho connects to a one-shot local socket; the session relays it to the broker link."""
        client = wire.client
        assert client is not None and self._loop is not None
        client.on_socket_open = lambda c, u, sock: self._sock_open(wire, sock)
        client.on_socket_close = lambda c, u, sock: self._sock_closed(wire)
        client.on_socket_register_write = lambda c, u, sock: self._want_write(wire, True)
        client.on_socket_unregister_write = lambda c, u, sock: self._want_write(wire, False)
        client.on_connect = lambda c, u, flags, rc, props: self._paho_connack(wire, props)
        client.on_disconnect = lambda c, u, flags, rc, props: self._paho_disconnected(wire, flags, rc, props)
        client.on_message = lambda c, u, msg: self._paho_message(wire, msg)
        client.on_publish = lambda c, u, mid, rc, props: self._ack(wire, self._pending_pub, mid, None, rc, props, "PUBACK")
        client.on_subscribe = lambda c, u, mid, rcs, props: self._ack(
            wire, self._pending_sub, mid, [int(getattr(r, "value", r)) for r in rcs], None, props, "SUBACK")
        client.on_unsubscribe = lambda c, u, mid, rcs, props: self._ack(
            wire, self._pending_unsub, mid, None, None, props, "UNSUBACK")
        lst, addr, tmpdir = _pipe_listener()
        try:
            try:
                if self.protocol == 5:
                    client.connect(addr, self.port, self.keepalive, clean_start=self.clean_session,
                                   properties=_to_paho("CONNECT", self.properties))
                else:
                    client.connect(addr, self.port, self.keepalive)
                inner, _ = lst.accept()
            except (OSError, ValueError) as exc:
                raise _map_exception(exc) from exc
        finally:
            lst.close()
            if tmpdir is not None:  # pragma: no cover - non-Linux
                try:
                    os.unlink(addr)
                    os.rmdir(tmpdir)
                except OSError:
                    pass
        inner.setblocking(False)
        wire.inner, wire.ifd = inner, inner.fileno()
        self._loop.add_reader(wire.ifd, self._pipe_readable, wire)
        if wire.conn.rx:
            self._from_broker(wire)
        if wire.conn.closed:
            self._link_lost(wire, wire.conn.close_reason or "error")
        _Ticker.of(self._loop).add(wire)

    # paho's socket on the loop ----------------------------------------------
    def _sock_open(self, wire: _Wire, sock: Any) -> None:
        if wire.dead:
            return
        assert self._loop is not None
        wire.psock = sock
        wire.fd = sock.fileno()
        self._loop.add_reader(wire.fd, self._readable, wire)

    def _sock_closed(self, wire: _Wire) -> None:
        fd, wire.fd = wire.fd, None
        if wire.dead or fd is None or self._loop is None:
            return
        self._loop.remove_reader(fd)
        if wire.writing:
            wire.writing = False
            self._loop.remove_writer(fd)
        # paho is done with this connection: the broker link follows (after what is still queued)
        if wire.inner is None and not wire.conn.closed:
            wire.conn.close()

    def _want_write(self, wire: _Wire, on: bool) -> None:
        """paho has (or no longer has) bytes to write: write them soon, and only watch the socket
        when it is full (saves two epoll_ctl calls per packet)."""
        if wire.dead or wire.fd is None or self._loop is None:
            return
        if on:
            if not wire.flush_due:
                wire.flush_due = True
                self._loop.call_soon(self._flush, wire)
        elif wire.writing:
            wire.writing = False
            self._loop.remove_writer(wire.fd)

    def _flush(self, wire: _Wire) -> None:
        wire.flush_due = False
        if wire.dead or wire.fd is None or wire.client is None or self._loop is None:
            return
        wire.client.loop_write()
        if wire.client.want_write() and wire.fd is not None and not wire.writing:
            wire.writing = True
            self._loop.add_writer(wire.fd, self._writable, wire)
        self._pipe_readable(wire)

    def _readable(self, wire: _Wire) -> None:
        if not wire.dead and wire.client is not None:
            wire.client.loop_read()

    def _writable(self, wire: _Wire) -> None:
        if not wire.dead and wire.client is not None:
            wire.client.loop_write()

    def _kick(self, wire: _Wire) -> None:
        """Write what paho queued, and relay it to the broker, now instead of on the next loop turns."""
        if not wire.dead and wire.fd is not None and wire.client is not None:
            wire.client.loop_write()
            self._pipe_readable(wire)

    def _tick(self, wire: _Wire) -> bool:
        """Once a second (paho's own loop does the same): keep-alive. False once the wire is done."""
        if wire.dead or wire.fd is None or wire.client is None:
            return False
        wire.client.loop_misc()  # PINGREQ when due, or the link is dead (no PINGRESP in time)
        return not wire.dead and wire.fd is not None

    # the relay --------------------------------------------------------------
    def _pipe_readable(self, wire: _Wire) -> None:
        """paho wrote: relay it to the broker (or paho closed its socket)."""
        sock = wire.inner
        if wire.dead or sock is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._to_broker(wire, data)
            return
        self._pipe_close(wire)  # paho closed its socket (DISCONNECT sent, keep-alive timeout, protocol error)
        if not wire.conn.closed:
            wire.conn.close()   # after what is still queued or held by a fault

    def _pipe_close(self, wire: _Wire) -> None:
        sock, ifd = wire.inner, wire.ifd
        wire.inner = wire.ifd = None
        wire.outbuf.clear()
        if ifd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(ifd)
            self._loop.remove_writer(ifd)
        if sock is not None:
            sock.close()

    def _pipe_send(self, wire: _Wire, data: bytes) -> None:
        """Bytes from the broker to paho."""
        sock = wire.inner
        if sock is None or not data:
            return
        if wire.outbuf:
            wire.outbuf += data
            return
        try:
            n = sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return  # paho is gone; _pipe_readable sees it
        if n < len(data):
            wire.outbuf += data[n:]
            assert self._loop is not None and wire.ifd is not None
            self._loop.add_writer(wire.ifd, self._pipe_writable, wire)

    def _pipe_writable(self, wire: _Wire) -> None:
        sock = wire.inner
        if sock is None:
            return
        try:
            n = sock.send(wire.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            wire.outbuf.clear()
            n = 0
        del wire.outbuf[:n]
        if not wire.outbuf:
            assert self._loop is not None and wire.ifd is not None
            self._loop.remove_writer(wire.ifd)
            if wire.eof_pending:
                self._pipe_eof(wire)

    def _pipe_eof(self, wire: _Wire) -> None:
        """The broker link ended: paho reads what came before, then EOF."""
        sock = wire.inner
        if sock is None:
            return
        if wire.outbuf:
            wire.eof_pending = True
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _to_broker(self, wire: _Wire, data: bytes) -> None:
        conn = wire.conn
        if wire.dead or conn.closed:
            return
        try:
            conn.write(data)
        except NetError:
            pass  # the link is going: its on_close reports why

    def _from_broker(self, wire: _Wire, now: bool = False) -> None:
        conn = wire.conn
        if wire.dead or wire.inner is None:
            return  # _start_paho hands it over once the pipe is up
        data = conn.read()
        if wire.connack is None and len(wire.head) < 8:
            wire.head += data[:8 - len(wire.head)]
            wire.connack = _parse_connack(wire.head)
        if data:
            self._pipe_send(wire, data)
            if now:
                self._readable(wire)  # paho reads it now rather than on the next loop turn

    def _link_lost(self, wire: _Wire, reason: str) -> None:
        """The broker connection ended: paho reads what came before, then EOF."""
        if wire.dead:
            return
        wire.link_reason = reason
        wire.link_error = wire.conn.error
        if wire.inner is not None:
            self._from_broker(wire)
            self._pipe_eof(wire)

    def _bury(self, wire: _Wire, graceful: bool) -> None:
        """Forget a connection: nothing of it reaches the session any more."""
        wire.dead = True
        fd, wire.fd = wire.fd, None
        if fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
            if wire.writing:
                self._loop.remove_writer(fd)
        wire.writing = False
        if wire.psock is not None:
            wire.psock.close()  # the socket paho was given in on_socket_open; paho is dropped with it
            wire.psock = None
        self._pipe_close(wire)
        conn = wire.conn
        conn.on_data = conn.on_close = None
        if not conn.closed:
            if not graceful and conn.shaper is not None:
                conn.shaper.cancel("tx")  # a lost link drops what a fault holds
            conn.close()
        wire.client = None

    # paho callbacks (called from loop_read / loop_write / loop_misc, on the loop) ---------------
    def _paho_connack(self, wire: _Wire, props: Any = None) -> None:
        if wire.dead or wire is not self._wire:
            return
        sp, raw = wire.connack if wire.connack is not None else (False, 0)
        if self.protocol == 5:
            self.connack_properties = _from_paho(props)
            self._report_props("CONNACK", props)   # before connect() returns
        if raw == 0 and not wire.conn.closed:
            # from now on every packet is due at once (asyncio leaves Nagle on for these sockets). Not
            # before: CONNECT held behind the TLS Finished lets a TLS 1.3 broker's certificate alert
            # arrive before it, instead of a reset that would hide the alert.
            wire.conn.set_nodelay(True)
        self._connack(sp, raw)

    def _connack(self, session_present: bool, raw: int) -> None:
        code = connack_v5_to_v311(raw) if self.protocol == 5 else raw
        self.connack_reason = raw
        self.connack_code = code
        self.session_present = session_present
        if code == 0:
            self._connected = True
        if self._connack_fut is not None and not self._connack_fut.done():
            self._connack_fut.set_result(code)

    def _paho_disconnected(self, wire: _Wire, flags: Any, reason: Any, props: Any = None) -> None:
        if wire.dead or wire is not self._wire:
            return
        from_broker = bool(getattr(flags, "is_disconnect_packet_from_server", False))
        if from_broker:
            self._report_props("DISCONNECT", props)
        name = str(getattr(reason, "getName", lambda: reason)())
        value = int(getattr(reason, "value", 0) or 0)
        if name == "Keep alive timeout":
            v1 = int(MQTTErrorCode.MQTT_ERR_KEEPALIVE)
        elif name == "Protocol error" and not from_broker:
            v1 = int(MQTTErrorCode.MQTT_ERR_PROTOCOL)
        elif name == "Success" and not from_broker:
            v1 = 0
        else:
            v1 = int(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        was_connected = self._connected
        self._connected = False
        fut = self._connack_fut
        if fut is not None and not fut.done():
            if wire.connack is not None:  # a refusal paho keeps to itself (3.1.1 protocol version, empty id)
                self._connack(*wire.connack)
            elif wire.link_error is not None:
                fut.set_exception(_map_exception(wire.link_error))
            elif v1 == MQTTErrorCode.MQTT_ERR_PROTOCOL:
                fut.set_exception(NetError("other", "MQTT protocol error before CONNACK"))
            else:
                fut.set_exception(NetError("closed", f"{self.host}:{self.port} closed the connection before CONNACK"))
        self._fail_pending(NetError("closed", "MQTT connection lost"))
        if not was_connected or self._disconnect_reported:
            return
        self._disconnect_reported = True
        if self._local_disconnect:
            why, rc = "local", 0
        elif from_broker:
            why, rc = "remote", value
        elif v1 == MQTTErrorCode.MQTT_ERR_CONN_LOST and wire.link_reason == "remote":
            why, rc = "remote", v1
        else:
            why, rc = "error", v1
        log.info("MQTT %r disconnected (%s, rc=%s)", self.client_id, why, rc)
        self._fire_disconnect(why, rc)

    def _paho_message(self, wire: _Wire, msg: paho.MQTTMessage) -> None:
        if wire.dead or wire is not self._wire:
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.warning("MQTT %r: dropped a message whose topic is not UTF-8", self.client_id)
            return
        self._report_props("PUBLISH", getattr(msg, "properties", None))
        self._call_soon(self.on_message, topic, bytes(msg.payload), int(msg.qos), bool(msg.retain), int(msg.mid))

    def _ack(self, wire: _Wire, table: dict[int, asyncio.Future[Any]], mid: int, value: Any, reason: Any,
             props: Any = None, packet: str = "") -> None:
        if wire.dead or wire is not self._wire:
            return
        if props is not None:
            self._report_props(packet, props)
        fut = table.get(mid)
        if fut is None or fut.done():
            return
        if reason is not None and getattr(reason, "is_failure", False):
            fut.set_exception(NetError("other", f"broker rejected message {mid}: {reason}"))
        else:
            fut.set_result(value)

    # -------------------------------------------------------------------------
    def _props(self, packet: str, props: Props | None) -> Properties | None:
        if not props:
            return None
        if self.protocol != 5:
            raise NetError("invalid", f"MQTT properties need protocol version 5 (this session speaks {self.protocol})")
        return _to_paho(packet, props)

    def _report_props(self, packet: str, props: Any) -> None:
        """``on_properties(packet, pairs)`` for a packet from the broker that carried properties."""
        if self.protocol != 5 or self.on_properties is None:
            return
        pairs = _from_paho(props)
        if pairs:
            self._call_soon(self.on_properties, packet, pairs)

    def _require_connected(self) -> paho.Client:
        wire = self._wire
        if wire is None or wire.client is None or not self._connected:
            raise NetError("closed", "MQTT session is not connected")
        return wire.client

    @staticmethod
    def _check_rc(rc: int, what: str) -> None:
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            raise NetError("closed", f"{what}: not connected")
        raise NetError("other", f"{what} failed: {paho.error_string(rc)}")

    @staticmethod
    async def _raise(e: NetError) -> Any:
        raise e

    async def _await_ack(self, table: dict[int, asyncio.Future[Any]], mid: int, timeout: float, what: str) -> Any:
        return await self._wait_ack(table, mid, self._expect_ack(table, mid), timeout, what)

    def _expect_ack(self, table: dict[int, asyncio.Future[Any]], mid: int) -> asyncio.Future[Any]:
        """Register the ack of ``mid`` and write the packet now."""
        assert self._loop is not None
        fut = self._loop.create_future()
        table[mid] = fut
        wire = self._wire
        if wire is not None:
            self._kick(wire)  # on_publish of a QoS 0 message comes from this write
        return fut

    async def _wait_ack(self, table: dict[int, asyncio.Future[Any]], mid: int, fut: asyncio.Future[Any],
                        timeout: float, what: str, result: Any = None) -> Any:
        try:
            if not fut.done():
                await asyncio.wait_for(fut, timeout)
            value = fut.result()
            return value if result is None else result
        except (asyncio.TimeoutError, TimeoutError):
            raise NetError("timeout", f"no {what} for message id {mid} within {timeout:g}s") from None
        finally:
            if table.get(mid) is fut:
                del table[mid]

    def _fail_pending(self, err: NetError) -> None:
        for table in (self._pending_pub, self._pending_sub, self._pending_unsub):
            for fut in table.values():
                if not fut.done():
                    fut.set_exception(err)
            table.clear()
        if self._connack_fut is not None and not self._connack_fut.done():
            self._connack_fut.set_exception(err)
            self._connack_fut.exception()  # mark retrieved; connect() may be gone

    def _call_soon(self, cb: Callable[..., Any] | None, *args: Any) -> None:
        if cb is None or self._loop is None:
            return
        self._loop.call_soon(self._call_user, cb, *args)

    def _call_user(self, cb: Callable[..., Any] | None, *args: Any) -> None:
        if cb is None:
            return
        try:
            result = cb(*args)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        except Exception:
            log.exception("MQTT %r: user callback %r raised", self.client_id, cb)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT %r: callback task failed", self.client_id, exc_info=task.exception())

    def _fire_disconnect(self, reason: str, rc: int) -> None:
        self._call_soon(self.on_disconnect, reason, rc)
