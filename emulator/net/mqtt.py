"""Asyncio MQTT session built on paho-mqtt, shared by every vendor profile.

One :class:`MqttSession` is one module-side MQTT client.  paho runs its
network loop in its own thread (``loop_start()``), so the blocking TCP
connect, the TLS handshake and all socket I/O stay off the asyncio loop;
every user-visible callback is bridged back onto the asyncio loop with
``call_soon_threadsafe``.

Design notes (paho-mqtt 2.x quirks handled here):

* paho would connect to ``host`` and use it for SNI as well.  We pass the
  *server hostname* to paho (so SNI / certificate checks use it) and
  override ``_create_socket_connection`` to dial the address our own
  resolver returned (world DNS overrides first).
* paho's threaded loop retries the first connection forever and swallows
  the socket exception; we override ``_thread_main`` so a failed connect
  ends the thread and the original exception reaches ``connect()``.
* paho never reports *why* a socket died (it only logs it); we record the
  last receive error / EOF so disconnects can be told apart
  (``"remote"`` vs ``"error"``) and pre-CONNACK failures (e.g. a TLS 1.3
  "certificate required" alert, which arrives *after* the client side of
  the handshake finished) raise a meaningful :class:`NetError`.
* With MQTT 3.1.1 and ``reconnect_on_failure=False`` paho does not call
  ``on_connect`` for "unacceptable protocol version"; we read the CONNACK
  return code straight from the packet instead.
* ``loop_stop()`` can wait up to a second (select timeout) and never ends
  while QoS>0 messages are unacknowledged; :meth:`MqttSession.close`
  therefore shuts the socket down and wakes the thread itself.
* Modules whose "open" and "connect" are two commands (TCP/TLS first,
  CONNECT later) use :meth:`MqttSession.open_transport`: a short-lived
  opener thread dials and does the handshake with the same code paho's
  thread would use, and the paho client made by the next ``connect()``
  is handed that socket (``_atemu_pre``) instead of dialling again.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import inspect
import ipaddress
import logging
import os
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.client import _ConnectionState

from atemu.net.errors import NetError, classify

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
_paho_log = logging.getLogger(__name__ + ".paho")

__all__ = ["MqttSession", "SUBACK_FAILURE", "connack_v5_to_v311"]

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


_PAHO_LEVELS = {
    paho.MQTT_LOG_DEBUG: logging.DEBUG,
    paho.MQTT_LOG_INFO: logging.INFO,
    paho.MQTT_LOG_NOTICE: logging.INFO,
    paho.MQTT_LOG_WARNING: logging.WARNING,
    paho.MQTT_LOG_ERR: logging.WARNING,
}


def _paho_on_log(client: Any, _userdata: Any, level: int, buf: str) -> None:
    # paho reports the normal end of its loop after a disconnect as an
    # error ("Client is not connected"); keep that out of the error log.
    lvl = _PAHO_LEVELS.get(level, logging.DEBUG)
    if buf.startswith("Client is not connected"):
        lvl = logging.DEBUG
    elif buf.startswith("Caught exception"):
        lvl = logging.ERROR
    _paho_log.log(lvl, "[%s] %s", getattr(client, "_client_id", b"").decode("utf-8", "replace"), buf)


def _close_all(socks: tuple[Any, ...] | None) -> None:
    for s in socks or ():
        if s is not None:
            try:
                s.close()
            except OSError:
                pass


def _stop_client(client: "_PahoClient", thread: threading.Thread | None) -> None:
    """Abort the client's thread (paho's or the opener's), wait for it, close the sockets."""
    client._atemu_abort_now()
    if thread is not None and thread is not threading.current_thread():
        thread.join(2.0)
        if thread.is_alive():  # pragma: no cover - should not happen
            log.warning("MQTT thread %s did not stop within 2s", thread.name)
            return
    client._atemu_release()


class _PahoClient(paho.Client):
    """paho Client that dials a pre-resolved address and reports to a session.

    Everything here runs in paho's network thread."""

    def __init__(self, session: "MqttSession", address: tuple[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._atemu_session = session
        self._atemu_addr = address
        self._atemu_abort = threading.Event()
        self._atemu_wake_r, self._atemu_wake_w = socket.socketpair()
        self._atemu_live_sock: socket.socket | None = None
        self._atemu_recv_error: BaseException | None = None
        self._atemu_eof = False
        self._atemu_deadline = 0.0
        #: (tcp, tls or None) opened by open_transport(), handed to paho's connect
        self._atemu_pre: tuple[socket.socket, ssl.SSLSocket | None] | None = None
        # latency/bandwidth faults (session.shaping set by emulator/faults.py): data held back, in
        # order, as [due (monotonic), data, sent/delivered so far]; rx items may also be an
        # exception or b"" (EOF), which come after the data read before them
        self._atemu_rxq: collections.deque = collections.deque()
        self._atemu_txq: collections.deque = collections.deque()
        self._atemu_rx_end = 0.0
        self._atemu_tx_end = 0.0
        self._atemu_rx_done = False   # EOF or error read from the socket (it is not read again)
        self._atemu_tx_blocked = False
        self._atemu_net_thread: threading.Thread | None = None

    # -- connection setup ---------------------------------------------------
    def _atemu_open_transport(self, server_hostname: str) -> None:
        """Opener thread: TCP connect and TLS handshake now, CONNECT later."""
        self._host = server_hostname  # SNI + certificate check (connect_async sets it later)
        self._atemu_deadline = time.monotonic() + self._connect_timeout
        tcp = self._create_socket_connection()
        tls = self._ssl_wrap_socket(tcp) if self._ssl else None
        self._atemu_pre = (tcp, tls)

    def _create_socket_connection(self) -> socket.socket:
        pre = self._atemu_pre
        if pre is not None:
            # open_transport() dialled already: paho sends CONNECT on that socket
            if not self._ssl:
                self._atemu_pre = None
            self._atemu_live_sock = pre[1] or pre[0]
            return pre[0]
        ip, port = self._atemu_addr
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            err = sock.connect_ex((ip, port))
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                raise OSError(err, os.strerror(err))
            while err != 0:
                if self._atemu_abort.is_set():
                    raise ConnectionAbortedError(errno.ECONNABORTED, "connect aborted by close()")
                remaining = self._atemu_deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(errno.ETIMEDOUT, f"TCP connect to {ip}:{port} timed out")
                _, writable, _ = select.select([self._atemu_wake_r], [sock], [], remaining)
                if writable:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        # OSError(errno, ...) yields the matching subclass,
                        # e.g. ConnectionRefusedError for ECONNREFUSED.
                        raise OSError(err, f"{os.strerror(err)} ({ip}:{port})")
                    break
            sock.setblocking(True)
            sock.settimeout(max(0.001, self._atemu_deadline - time.monotonic()))
            self._atemu_live_sock = sock
            if self._atemu_abort.is_set():
                raise ConnectionAbortedError(errno.ECONNABORTED, "connect aborted by close()")
            return sock
        except BaseException:
            sock.close()
            raise

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        pre = self._atemu_pre
        if pre is not None and pre[1] is not None:
            self._atemu_pre = None
            return pre[1]
        assert self._ssl_context is not None
        # self._host is the *server hostname* (SNI + certificate check); the
        # TCP connection already goes to the resolved address.
        ssl_sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False
        )
        self._atemu_live_sock = ssl_sock
        try:
            if self._atemu_abort.is_set():
                raise ConnectionAbortedError(errno.ECONNABORTED, "connect aborted by close()")
            ssl_sock.settimeout(max(0.001, self._atemu_deadline - time.monotonic()))
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        hook = getattr(self._atemu_session, "on_tls_up", None)
        if hook is not None:
            self._atemu_session._post(hook)
        return ssl_sock

    def _thread_main(self) -> None:
        session = self._atemu_session
        self._atemu_net_thread = threading.current_thread()
        try:
            self._atemu_deadline = time.monotonic() + self._connect_timeout
            # retry_first_connection=False: a failed connect raises here
            # instead of being retried forever with a hidden exception.
            self.loop_forever(retry_first_connection=False)
        except BaseException as exc:  # noqa: BLE001 - reported to the loop
            log.debug("paho thread for %r ended with %r", session.client_id, exc)
            session._post(session._loop_thread_failed, self, exc)
        finally:
            self._thread = None
            for s in (self._atemu_wake_r, self._atemu_wake_w):
                try:
                    s.close()
                except OSError:
                    pass
            session._post(session._loop_thread_exited, self)

    # -- observation hooks --------------------------------------------------
    def _sock_recv(self, bufsize: int) -> bytes:
        if self._atemu_rxq or self._atemu_session.shaping is not None:
            return self._atemu_recv_shaped(bufsize)
        try:
            data = super()._sock_recv(bufsize)
        except BlockingIOError:
            raise
        except OSError as exc:
            self._atemu_recv_error = exc
            raise
        if not data:
            self._atemu_eof = True
        return data

    # -- latency / bandwidth faults (paho thread; idle unless a fault is armed or data is held) --
    def _sock_send(self, buf: bytes | bytearray) -> int:
        q = self._atemu_txq
        reg = self._atemu_session.shaping
        if reg is None and not q:
            return super()._sock_send(buf)
        n = len(buf)
        delay, bps = reg.mqtt_shaping(self._atemu_session, "tx", n) if reg is not None else (0.0, 0.0)
        if not q and not delay and not bps:
            return super()._sock_send(buf)
        now = time.monotonic()
        start = max(now + delay, self._atemu_tx_end if q else 0.0)
        self._atemu_tx_end = end = start + (n / bps if bps else 0.0)
        q.append([end, bytes(buf), 0])
        return n  # paho counts it written; _loop sends it when due

    def _atemu_recv_shaped(self, bufsize: int) -> bytes:
        q = self._atemu_rxq
        now = time.monotonic()
        if not self._atemu_rx_done:
            item: Any = None
            try:
                item = paho.Client._sock_recv(self, 65536)
            except BlockingIOError:
                pass
            except OSError as exc:
                item = exc
            if item is not None:
                n = len(item) if isinstance(item, (bytes, bytearray)) else 0
                if not n:
                    self._atemu_rx_done = True
                reg = self._atemu_session.shaping
                delay, bps = reg.mqtt_shaping(self._atemu_session, "rx", n) if reg is not None and n else (0.0, 0.0)
                start = max(now + delay, self._atemu_rx_end if q else 0.0)
                self._atemu_rx_end = end = start + (n / bps if bps else 0.0)
                q.append([end, item, 0])
        if q and q[0][0] <= now:
            entry = q[0]
            item = entry[1]
            if isinstance(item, BaseException):
                q.popleft()
                self._atemu_recv_error = item
                raise item
            if not item:
                q.popleft()
                self._atemu_eof = True
                return b""
            pos = entry[2]
            chunk = bytes(item[pos:pos + bufsize])
            entry[2] = pos + len(chunk)
            if entry[2] >= len(item):
                q.popleft()
            return chunk
        if self._atemu_rx_done and q:  # the socket stays readable (EOF): don't spin until it is due
            self._atemu_abort.wait(max(0.0, min(0.01, q[0][0] - now)))
        raise BlockingIOError()

    def _atemu_flush_tx(self) -> MQTTErrorCode:
        """Send the held data that is due, in order."""
        q = self._atemu_txq
        now = time.monotonic()
        self._atemu_tx_blocked = False
        while q and q[0][0] <= now:
            entry = q[0]
            try:
                n = paho.Client._sock_send(self, entry[1][entry[2]:])
            except BlockingIOError:
                self._atemu_tx_blocked = True
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except (OSError, ConnectionError):
                q.clear()
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            entry[2] += n
            if entry[2] >= len(entry[1]):
                q.popleft()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        if self._atemu_txq and self._sock is not None:
            rc = self._atemu_flush_tx()
            if rc:
                return self._loop_rc_handle(rc)
        rq = self._atemu_rxq
        if rq and rq[0][0] <= time.monotonic() and self._sock is not None:
            rc = self.loop_read()  # held data is due: the socket itself may not be readable
            if rc or self._sock is None:
                return rc
        if rq or self._atemu_txq:
            now = time.monotonic()
            due = [rq[0][0] - now] if rq else []
            if self._atemu_txq:
                due.append(0.005 if self._atemu_tx_blocked else self._atemu_txq[0][0] - now)
            timeout = max(0.0, min([timeout, *due]))
        return super()._loop(timeout)

    def _sock_close(self) -> None:
        # a DISCONNECT paho wrote while earlier data is held goes out after it (blocking: paho thread);
        # a lost link just drops what is held
        if (self._atemu_txq and self._sock is not None and not self._atemu_abort.is_set()
                and self._state == _ConnectionState.MQTT_CS_DISCONNECTING
                and threading.current_thread() is self._atemu_net_thread):
            while self._atemu_txq and not self._atemu_abort.is_set():
                wait = self._atemu_txq[0][0] - time.monotonic()
                if wait > 0:
                    self._atemu_abort.wait(wait)
                if self._atemu_flush_tx():
                    break
                if self._atemu_tx_blocked:
                    self._atemu_abort.wait(0.005)
        self._atemu_txq.clear()
        self._atemu_rxq.clear()
        super()._sock_close()

    def _handle_connack(self) -> MQTTErrorCode:
        packet = bytes(self._in_packet["packet"])
        rc = super()._handle_connack()
        if len(packet) >= 2:
            self._atemu_session._post(
                self._atemu_session._loop_connack, self, bool(packet[0] & 1), packet[1]
            )
        return rc

    def _do_on_disconnect(
        self,
        packet_from_broker: bool,
        v1_rc: MQTTErrorCode,
        reason: Any = None,
        properties: Any = None,
    ) -> None:
        try:
            reason_value = None if reason is None else int(getattr(reason, "value", reason))
            self._atemu_session._post(
                self._atemu_session._loop_disconnected,
                self,
                bool(packet_from_broker),
                int(v1_rc),
                reason_value,
                self._atemu_recv_error,
                self._atemu_eof,
            )
        except Exception:  # pragma: no cover - never let it escape into paho
            log.exception("error while reporting MQTT disconnect")

    def _atemu_release(self) -> None:
        """Close every socket of this client (its thread must be gone)."""
        pre, self._atemu_pre = self._atemu_pre, None
        _close_all(pre)
        for s in (self._atemu_wake_r, self._atemu_wake_w):
            try:
                s.close()
            except OSError:
                pass
        try:
            self._reset_sockets()
        except Exception:  # pragma: no cover - defensive
            log.exception("error closing paho sockets")

    def _atemu_abort_now(self) -> None:
        """Called from the asyncio thread: make the paho thread exit promptly."""
        self._atemu_abort.set()
        self._thread_terminate = True
        for s in (self._atemu_wake_w, self._sockpairW):
            if s is not None:
                try:
                    s.send(b"\0")
                except OSError:
                    pass
        live = self._atemu_live_sock
        if live is not None:
            try:
                # Base-class shutdown: bypass SSLSocket.shutdown, which would
                # mutate the SSL object under paho's feet.
                socket.socket.shutdown(live, socket.SHUT_RDWR)
            except OSError:
                pass


MessageCallback = Callable[[str, bytes, int, bool, int], Any]
DisconnectCallback = Callable[[str, int], Any]


class MqttSession:
    """One MQTT client connection (3.1, 3.1.1 or 5) driven from asyncio.

    Set ``on_message(topic, payload, qos, retain, mid)`` and
    ``on_disconnect(reason, rc)`` (plain functions or coroutine functions);
    both run on the asyncio loop.  ``reason`` is ``"local"`` (we called
    :meth:`disconnect`), ``"remote"`` (broker closed the connection or sent
    DISCONNECT) or ``"error"`` (socket error, keepalive timeout).  ``rc`` is
    0 for local, the MQTT 5 DISCONNECT reason code when the broker sent one,
    else paho's error code (7 = connection lost, 16 = keepalive timeout).
    :meth:`close` never fires ``on_disconnect``.

    The session can be connected again after a disconnect.

    :meth:`open_transport` opens the TCP connection (and does the TLS
    handshake) without sending CONNECT; the next :meth:`connect` sends
    CONNECT on that same connection.
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
        #: The fault registry while a latency/bandwidth fault is armed (set by emulator/faults.py), else None.
        self.shaping: Any = None

        self._loop_arg = loop
        self._loop = loop
        self._client: _PahoClient | None = None
        self._thread: threading.Thread | None = None
        self._connected = False
        self._connack_fut: asyncio.Future[int] | None = None
        self._thread_done: asyncio.Future[None] | None = None
        self._local_disconnect = False
        self._disconnect_reported = False
        self._pending_pub: dict[int, asyncio.Future[None]] = {}
        self._pending_sub: dict[int, asyncio.Future[list[int]]] = {}
        self._pending_unsub: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # open_transport(): the client that dialled, its thread, the watched fd
        self._opener: _PahoClient | None = None
        self._opener_thread: threading.Thread | None = None
        self._watch_fd: int | None = None

    # ------------------------------------------------------------------ API
    @property
    def connected(self) -> bool:
        """True between an accepted CONNACK and the loss/closing of the link."""
        return self._connected

    @property
    def transport_open(self) -> bool:
        """True while a connection made by :meth:`open_transport` waits for :meth:`connect`."""
        return self._opener is not None and self._opener._atemu_pre is not None

    async def open_transport(self) -> None:
        """Resolve, open the TCP connection and do the TLS handshake, without CONNECT.

        Blocking work runs in a short-lived thread (abortable by :meth:`close`).
        The next :meth:`connect` sends CONNECT on this connection, built from the
        session's attributes as they are then (``client_id``, ``username``,
        ``will``, ``keepalive``...), so they may still be changed. Until then the
        link is watched: if the peer closes or resets it (or sends anything: a
        broker speaks only after CONNECT) the transport is dropped and
        ``on_disconnect`` fires with ``"remote"`` (EOF) or ``"error"`` and rc 7
        (2 for unexpected bytes); a later connect() dials anew.
        :meth:`close` closes it. Raises NetError like :meth:`connect`."""
        try:
            await self._open_transport()
        except NetError as e:
            self._warn(e)
            raise

    async def _open_transport(self) -> None:
        if self._client is not None or self._opener is not None:
            raise NetError("invalid", "MQTT session already has a connection")
        loop = asyncio.get_running_loop()
        self._loop = self._loop_arg or loop
        ip = await self._resolve()
        faults = getattr(self.resolver, "faults", None)
        if faults is not None:
            await faults.before_connect(self.server_hostname, self.port, tls=self.tls is not None)
            faults.track(self)
        try:
            opener = self._make_client(ip)
        except ValueError as exc:
            raise NetError("invalid", str(exc)) from exc
        done: asyncio.Future[BaseException | None] = self._loop.create_future()

        def settle(exc: BaseException | None) -> None:
            if not done.done():
                done.set_result(exc)

        def run() -> None:
            try:
                opener._atemu_open_transport(self.server_hostname)
            except BaseException as exc:  # noqa: BLE001 - reported to the loop
                self._post(settle, exc)
            else:
                self._post(settle, None)

        thread = threading.Thread(target=run, name=f"mqtt-open-{self.client_id}", daemon=True)
        self._opener, self._opener_thread = opener, thread
        thread.start()
        try:
            exc = await done
        except BaseException:
            if self._opener is opener:
                self.close()
            raise
        if self._opener is not opener:
            raise NetError("closed", "MQTT transport closed while opening")
        if exc is not None:
            self.close()
            raise _map_exception(exc)
        self._opener_thread = None
        assert opener._atemu_pre is not None
        tcp, tls = opener._atemu_pre
        self._watch_fd = (tls or tcp).fileno()
        self._loop.add_reader(self._watch_fd, self._transport_readable, opener)

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
        if self._client is not None and self._connected:
            raise NetError("invalid", "MQTT session is already connected")
        if self._opener is not None and not self.transport_open:
            raise NetError("invalid", "MQTT transport is still opening")
        pre = self._take_transport()
        if self._client is not None:
            self.close()
        loop = asyncio.get_running_loop()
        self._loop = self._loop_arg or loop
        deadline = loop.time() + self.connect_timeout
        self.connack_code = self.connack_reason = None
        self.session_present = False

        faults = getattr(self.resolver, "faults", None)  # the module's fault registry (emulator/faults.py)
        if pre is not None:
            ip = self.remote_ip or self.host
        else:
            ip = await self._resolve()
            if faults is not None:
                await faults.before_connect(self.server_hostname, self.port, tls=self.tls is not None)
        if faults is not None:
            refusal = faults.broker_refusal()
            if refusal is not None:
                _close_all(pre)
                self.connack_code = self.connack_reason = refusal
                return refusal
            faults.track(self)

        try:
            client = self._make_client(ip)
        except ValueError as exc:
            _close_all(pre)
            raise NetError("invalid", str(exc)) from exc
        client._atemu_pre = pre

        self._connack_fut = self._loop.create_future()
        self._thread_done = self._loop.create_future()
        self._local_disconnect = False
        self._disconnect_reported = False
        self._client = client
        fut = self._connack_fut
        try:
            if self.protocol == 5:
                client.connect_async(
                    self.server_hostname, self.port, self.keepalive, clean_start=self.clean_session
                )
            else:
                client.connect_async(self.server_hostname, self.port, self.keepalive)
            client.loop_start()
            self._thread = client._thread
            remaining = max(0.0, deadline - loop.time())
            try:
                code = await asyncio.wait_for(fut, remaining)
            except (asyncio.TimeoutError, TimeoutError):
                raise NetError(
                    "timeout", f"no CONNACK from {self.host}:{self.port} within {self.connect_timeout:g}s"
                ) from None
        except BaseException:
            if self._client is client:
                self.close()
            raise
        if code != 0:
            self.close()
        return code

    async def subscribe(self, topics: list[tuple[str, int]], timeout: float = 10.0) -> list[int]:
        """Subscribe and return the granted QoS per topic (0x80 = refused)."""
        client = self._require_connected()
        if not topics:
            raise NetError("invalid", "no topics to subscribe")
        try:
            rc, mid = client.subscribe([(str(t), int(q)) for t, q in topics])
        except ValueError as exc:
            raise NetError("invalid", str(exc)) from exc
        self._check_rc(rc, "subscribe")
        assert mid is not None
        self.last_mid = mid
        return await self._await_ack(self._pending_sub, mid, timeout, "SUBACK")

    async def unsubscribe(self, topics: list[str], timeout: float = 10.0) -> None:
        """Unsubscribe and wait for UNSUBACK."""
        client = self._require_connected()
        if not topics:
            raise NetError("invalid", "no topics to unsubscribe")
        try:
            rc, mid = client.unsubscribe([str(t) for t in topics])
        except ValueError as exc:
            raise NetError("invalid", str(exc)) from exc
        self._check_rc(rc, "unsubscribe")
        assert mid is not None
        self.last_mid = mid
        await self._await_ack(self._pending_unsub, mid, timeout, "UNSUBACK")

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, timeout: float = 10.0
    ) -> int:
        """Publish raw bytes; return the message id.

        QoS 0 returns once the packet was handed to the socket, QoS 1/2 only
        after PUBACK/PUBCOMP.  Raises NetError("timeout") when the ack does
        not come in time and NetError("closed") when not connected."""
        client = self._require_connected()
        try:
            info = client.publish(str(topic), bytes(payload), int(qos), bool(retain))
        except (ValueError, TypeError) as exc:
            raise NetError("invalid", str(exc)) from exc
        self._check_rc(info.rc, "publish")
        await self._await_ack(self._pending_pub, info.mid, timeout, "PUBACK/PUBCOMP")
        return info.mid

    async def disconnect(self, timeout: float = 5.0) -> None:
        """Send DISCONNECT (graceful: no will) and wait for the link to close.

        Fires ``on_disconnect("local", 0)`` if the session was connected."""
        client = self._client
        if client is None:
            if self._opener is not None:
                self.close()
            return
        if not self._connected:
            self.close()
            return
        self._local_disconnect = True
        done = self._thread_done
        client.disconnect()
        if done is not None:
            try:
                await asyncio.wait_for(done, timeout)
            except (asyncio.TimeoutError, TimeoutError):
                log.warning("MQTT %r: DISCONNECT not flushed within %gs", self.client_id, timeout)
        if self._client is client:
            was_connected = self._connected
            self.close()
            if was_connected and not self._disconnect_reported:
                self._disconnect_reported = True
                self._fire_disconnect("local", 0)

    def close(self) -> None:
        """Tear the connection down at once (no DISCONNECT, so the broker
        publishes the will) and stop the paho thread.  Idempotent; does not
        fire ``on_disconnect``.  Pending operations fail with NetError("closed").
        Also closes (or aborts the opening of) an :meth:`open_transport` connection."""
        self._close_opener()
        client, thread = self._client, self._thread
        self._client = None
        self._thread = None
        self._connected = False
        self._fail_pending(NetError("closed", "MQTT session closed locally"))
        if client is not None:
            _stop_client(client, thread)

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

    def _unwatch(self) -> None:
        fd, self._watch_fd = self._watch_fd, None
        if fd is not None and self._loop is not None:
            try:
                self._loop.remove_reader(fd)
            except (RuntimeError, ValueError, OSError):  # loop closed / fd gone
                pass

    def _take_transport(self) -> tuple[socket.socket, ssl.SSLSocket | None] | None:
        """Detach the open_transport() sockets for the next paho client."""
        opener = self._opener
        if opener is None:
            return None
        self._unwatch()
        self._opener = self._opener_thread = None
        pre, opener._atemu_pre = opener._atemu_pre, None
        opener._atemu_release()
        return pre

    def _close_opener(self) -> None:
        opener, thread = self._opener, self._opener_thread
        if opener is None:
            return
        self._unwatch()
        self._opener = self._opener_thread = None
        _stop_client(opener, thread)

    def _transport_readable(self, opener: _PahoClient) -> None:
        """The idle open_transport() connection became readable: EOF, reset or junk."""
        pre = opener._atemu_pre
        if self._opener is not opener or pre is None:
            self._unwatch()
            return
        tcp, tls = pre
        reason, rc = "error", int(MQTTErrorCode.MQTT_ERR_CONN_LOST)
        try:
            if tls is not None:
                tls.settimeout(0.0)
                data = tls.recv(1)  # processes TLS records (e.g. session tickets)
            else:
                tcp.settimeout(0.0)
                data = tcp.recv(1, socket.MSG_PEEK)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return
        except ssl.SSLZeroReturnError:
            data = b""
        except OSError as exc:
            log.info("MQTT %r: idle transport failed: %s", self.client_id, exc)
            data = None
        if data == b"":
            reason = "remote"
        elif data is not None:
            log.warning("MQTT %r: %s:%s sent data before CONNECT", self.client_id, self.host, self.port)
            rc = int(MQTTErrorCode.MQTT_ERR_PROTOCOL)
        self._unwatch()
        self._opener = None
        opener._atemu_release()
        log.info("MQTT %r: transport lost before CONNECT (%s, rc=%s)", self.client_id, reason, rc)
        self._fire_disconnect(reason, rc)

    def _make_client(self, ip: str) -> _PahoClient:
        proto = {3: paho.MQTTv31, 4: paho.MQTTv311, 5: paho.MQTTv5}[self.protocol]
        kwargs: dict[str, Any] = dict(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=proto,
            reconnect_on_failure=False,
        )
        if self.protocol != 5:
            kwargs["clean_session"] = self.clean_session
        client = _PahoClient(self, (ip, self.port), **kwargs)
        client.suppress_exceptions = True
        client.on_log = _paho_on_log
        client.connect_timeout = self.connect_timeout
        client.on_message = self._paho_on_message
        client.on_publish = self._paho_on_publish
        client.on_subscribe = self._paho_on_subscribe
        client.on_unsubscribe = self._paho_on_unsubscribe
        if self.tls is not None:
            client.tls_set_context(self.tls)
        if self.username is not None or self.password is not None:
            client.username_pw_set(self.username or "", self.password)
        if self.will is not None:
            topic, payload, qos, retain = self.will
            client.will_set(topic, bytes(payload), int(qos), bool(retain))
        return client

    def _require_connected(self) -> _PahoClient:
        if self._client is None or not self._connected:
            raise NetError("closed", "MQTT session is not connected")
        return self._client

    @staticmethod
    def _check_rc(rc: int, what: str) -> None:
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            raise NetError("closed", f"{what}: not connected")
        raise NetError("other", f"{what} failed: {paho.error_string(rc)}")

    async def _await_ack(self, table: dict[int, asyncio.Future[Any]], mid: int, timeout: float, what: str) -> Any:
        assert self._loop is not None
        fut = self._loop.create_future()
        table[mid] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
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

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        """Schedule fn(*args) on the asyncio loop; safe from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._run_safely, fn, args)
        except RuntimeError:
            log.debug("event loop closed; dropped MQTT event %s", getattr(fn, "__name__", fn))

    def _run_safely(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("MQTT %r: error handling %s", self.client_id, getattr(fn, "__name__", fn))

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
        self._call_user(self.on_disconnect, reason, rc)

    # paho thread -> loop bridges (run in the paho thread) -----------------
    def _paho_on_message(self, client: _PahoClient, _userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = bytes(msg._topic).decode("utf-8", "replace")
            self._post(self._loop_message, client, topic, bytes(msg.payload), int(msg.qos), bool(msg.retain), int(msg.mid))
        except Exception:
            log.exception("MQTT %r: failed to bridge incoming message", self.client_id)

    def _paho_on_publish(self, client: _PahoClient, _userdata: Any, mid: int, reason: Any, _props: Any) -> None:
        try:
            failed = bool(getattr(reason, "is_failure", False))
            self._post(self._loop_ack, client, self._pending_pub, mid, None, str(reason) if failed else None)
        except Exception:
            log.exception("MQTT %r: failed to bridge PUBACK", self.client_id)

    def _paho_on_subscribe(self, client: _PahoClient, _userdata: Any, mid: int, reasons: Any, _props: Any) -> None:
        try:
            granted = [int(getattr(r, "value", r)) for r in reasons]
            self._post(self._loop_ack, client, self._pending_sub, mid, granted, None)
        except Exception:
            log.exception("MQTT %r: failed to bridge SUBACK", self.client_id)

    def _paho_on_unsubscribe(self, client: _PahoClient, _userdata: Any, mid: int, _reasons: Any, _props: Any) -> None:
        try:
            self._post(self._loop_ack, client, self._pending_unsub, mid, None, None)
        except Exception:
            log.exception("MQTT %r: failed to bridge UNSUBACK", self.client_id)

    # loop-side handlers ---------------------------------------------------
    def _loop_connack(self, client: _PahoClient, session_present: bool, raw: int) -> None:
        if client is not self._client:
            return
        code = connack_v5_to_v311(raw) if self.protocol == 5 else raw
        self.connack_reason = raw
        self.connack_code = code
        self.session_present = session_present
        if code == 0:
            self._connected = True
        if self._connack_fut is not None and not self._connack_fut.done():
            self._connack_fut.set_result(code)

    def _loop_disconnected(
        self,
        client: _PahoClient,
        from_broker: bool,
        v1_rc: int,
        reason_code: int | None,
        recv_error: BaseException | None,
        eof: bool,
    ) -> None:
        if client is not self._client:
            return
        was_connected = self._connected
        self._connected = False
        if self._connack_fut is not None and not self._connack_fut.done():
            if recv_error is not None:
                err = _map_exception(recv_error)
            elif v1_rc == MQTTErrorCode.MQTT_ERR_PROTOCOL:
                err = NetError("other", "MQTT protocol error before CONNACK")
            else:
                err = NetError("closed", f"{self.host}:{self.port} closed the connection before CONNACK")
            self._connack_fut.set_exception(err)
        self._fail_pending(NetError("closed", "MQTT connection lost"))
        if not was_connected or self._disconnect_reported:
            return
        self._disconnect_reported = True
        if self._local_disconnect:
            reason, rc = "local", 0
        elif from_broker:
            reason, rc = "remote", reason_code if reason_code is not None else v1_rc
        elif eof and recv_error is None and v1_rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
            reason, rc = "remote", v1_rc
        else:
            reason, rc = "error", v1_rc
        log.info("MQTT %r disconnected (%s, rc=%s)", self.client_id, reason, rc)
        self._fire_disconnect(reason, rc)

    def _loop_thread_failed(self, client: _PahoClient, exc: BaseException) -> None:
        if client is not self._client:
            return
        err = _map_exception(exc)
        if self._connack_fut is not None and not self._connack_fut.done():
            self._connack_fut.set_exception(err)
        else:
            log.error("MQTT %r: paho network thread failed", self.client_id, exc_info=exc)
            self._connected = False
            self._fail_pending(NetError("closed", f"MQTT network thread failed: {exc}"))

    def _loop_thread_exited(self, client: _PahoClient) -> None:
        done = self._thread_done if client is self._client else None
        if done is not None and not done.done():
            done.set_result(None)
        if client is self._client and self._connected:
            # thread ended without a disconnect report: treat as an error
            self._loop_disconnected(client, False, int(MQTTErrorCode.MQTT_ERR_UNKNOWN), None, None, False)

    def _loop_message(self, client: _PahoClient, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        if client is not self._client:
            return
        self._call_user(self.on_message, topic, payload, qos, retain, mid)

    def _loop_ack(
        self,
        client: _PahoClient,
        table: dict[int, asyncio.Future[Any]],
        mid: int,
        value: Any,
        failure: str | None,
    ) -> None:
        if client is not self._client:
            return
        fut = table.get(mid)
        if fut is None or fut.done():
            return
        if failure is not None:
            fut.set_exception(NetError("other", f"broker rejected message {mid}: {failure}"))
        else:
            fut.set_result(value)
