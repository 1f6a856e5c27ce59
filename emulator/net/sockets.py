"""Asyncio TCP/UDP sockets with receive buffers, shaped for AT modules.

An AT module socket must keep everything it receives until the host reads it
(no loss), tell the profile when data arrives, report closes/resets, and let
the profile push back when the host is slow.  The classes here do exactly
that on top of real host sockets; nothing blocks the event loop.

* :class:`TcpConnection` - one TCP (optionally TLS) connection with an ``rx``
  bytearray buffer, ``on_data``/``on_close`` callbacks and counters.
* :class:`TcpListener`   - a listening socket producing TcpConnections.
* :class:`UdpSocket`     - a UDP socket keeping whole datagrams in a deque.

Callbacks are plain attributes; they may be normal functions or coroutine
functions (a returned awaitable is scheduled as a task).  Exceptions raised
by callbacks are logged and never break the connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno as _errno
import inspect
import logging
import socket
import ssl as _ssl
import struct
import sys
from collections.abc import Callable
from typing import Any

from .dns import Resolver, _strip_brackets, ip_family
from .errors import NetError, classify

__all__ = ["TcpConnection", "TcpListener", "UdpSocket", "host_bind_address"]

log = logging.getLogger(__name__)

_SIOCOUTQ = 0x5411  # == TIOCOUTQ on Linux: bytes not yet acknowledged by peer
_default_resolver: Resolver | None = None


def host_bind_address(address: str | None, own: Any = (), *, listen_host: str = "127.0.0.1",
                      listen_host6: str = "::1") -> str:
    """The host address a module's bind/listen on ``address`` really uses.

    A module's addresses are virtual (what it reported in its IP events: station and soft-AP
    addresses, IPv6 link-local/global); its sockets are the host's. A bind on one of the module's
    own addresses (``own``) or on the wildcard (``0.0.0.0``, ``::``, empty) therefore binds the host
    listen address
    (``listen_host`` for IPv4, ``listen_host6`` for IPv6; the world's ``network.listen_host`` /
    ``network.listen_host6``), so local peers connect to it there. Loopback addresses are kept.
    Any profile can use this for its listening TCP and bound UDP sockets.
    """
    import ipaddress

    text = _strip_brackets((address or "").strip()).split("%")[0]
    try:
        ip = ipaddress.ip_address(text) if text else ipaddress.IPv4Address("0.0.0.0")
    except ValueError:
        return text                                   # a host name: resolved by the caller as usual
    owned = set()
    for a in own or ():
        try:
            owned.add(ipaddress.ip_address(_strip_brackets(str(a)).split("%")[0]))
        except ValueError:
            continue
    v6 = ip.version == 6 and getattr(ip, "ipv4_mapped", None) is None
    if ip.is_unspecified or ip in owned:
        return listen_host6 if v6 else listen_host
    return str(ip)                                    # a host address (loopback, another interface): as given


def _resolver(resolver: Resolver | None) -> Resolver:
    global _default_resolver
    if resolver is not None:
        return resolver
    if _default_resolver is None:
        _default_resolver = Resolver()
    return _default_resolver


def _addr2(addr: Any) -> tuple[str, int] | None:
    """Normalise a socket address to ``(ip, port)``; IPv4-mapped IPv6 becomes IPv4."""
    if not addr or not isinstance(addr, tuple):
        return None
    ip, port = addr[0], addr[1]
    if isinstance(ip, str) and ip.startswith("::ffff:") and "." in ip:
        ip = ip[7:]
    return (ip, port)


def _sockaddr(ip: str, port: int) -> tuple:
    """Socket address for an IP literal; keeps an IPv6 ``%scope`` (which a
    plain ``(ip, port)`` tuple would silently drop).  Never does DNS."""
    if "%" in ip and ip_family(ip) == socket.AF_INET6:
        try:
            return socket.getaddrinfo(ip, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]
        except socket.gaierror as exc:
            raise NetError("invalid", f"bad scoped IPv6 address {ip!r}") from exc
    return (ip, port)


_background: set[asyncio.Task] = set()


def _invoke(cb: Callable | None, *args: Any) -> None:
    """Call a user callback; schedule it if it returns an awaitable; log errors."""
    if cb is None:
        return
    try:
        result = cb(*args)
    except Exception:  # noqa: BLE001 - a buggy callback must not kill the socket
        log.exception("socket callback %r failed", cb)
        return
    if inspect.isawaitable(result):
        task = asyncio.ensure_future(result)
        _background.add(task)

        def _done(t: asyncio.Task) -> None:
            _background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("socket callback %r failed", cb, exc_info=t.exception())

        task.add_done_callback(_done)


class TcpConnection(asyncio.Protocol):
    """One TCP connection (plain or TLS) with a lossless receive buffer.

    Create with :meth:`open` (client) or get one from :class:`TcpListener`.

    Attributes a profile may set:

    * ``on_data(conn)`` - called when data was appended to ``rx``.  With
      ``notify = "every"`` (default) on every arrival; with ``notify = "edge"``
      only when ``rx`` goes from empty to non-empty (or after :meth:`rearm`).
    * ``on_close(conn, reason)`` - called exactly once when the connection is
      finished; reason is ``"remote"`` (peer sent FIN), ``"reset"`` (RST),
      ``"local"`` (our close()/abort()) or ``"error"`` (see ``error``).
      Unread data stays in ``rx`` and can still be read after the close.
    * ``rx_high_water`` - if set, reading is paused automatically while
      ``available`` exceeds it (the TCP window closes; nothing is dropped)
      and resumed when reads bring it to ``rx_low_water`` (default half).
    * ``half_close`` - keep the sending side open after the peer's FIN
      (plain TCP only); ``on_eof(conn)`` is then called at FIN time and
      ``on_close`` only when the connection is finally closed.

    State: ``rx`` (bytearray), ``available``, ``total_received``,
    ``total_sent``, ``acked``, ``closed``, ``remote_eof``, ``close_reason``,
    ``error`` (NetError or None), ``local_addr``, ``remote_addr``, ``tls``.
    """

    #: set by the module's fault registry (emulator/faults.py) while latency/bandwidth faults
    #: hold data back (both directions, in order); None otherwise
    shaper: Any = None

    def __init__(self) -> None:
        self.rx = bytearray()
        self.total_received = 0
        self.total_sent = 0
        self.closed = False
        self.remote_eof = False
        self.close_reason: str | None = None
        self.error: NetError | None = None
        self.local_addr: tuple[str, int] | None = None
        self.remote_addr: tuple[str, int] | None = None
        self.server_hostname: str | None = None

        self.on_data: Callable[[TcpConnection], Any] | None = None
        self.on_close: Callable[[TcpConnection, str], Any] | None = None
        self.on_eof: Callable[[TcpConnection], Any] | None = None
        self.notify: str = "every"
        self.rx_high_water: int | None = None
        self.rx_low_water: int | None = None
        self.half_close = False

        self._transport: asyncio.Transport | None = None
        self._user_paused = False
        self._auto_paused = False
        self._transport_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future] = []
        self._data_event = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._local_close = False
        self._armed = True
        self._tls = False
        self._upgrading = False
        self._final_acked: int | None = None
        self._close_held = False

    # ------------------------------------------------------------------ open
    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        resolver: Resolver | None = None,
        local_port: int | None = None,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        local_host: str | None = None,
        family: int = 0,
    ) -> "TcpConnection":
        """Resolve ``host`` and connect (trying each address in turn), doing the
        TLS handshake too when ``ssl`` is a context.  SNI/hostname check use
        ``server_hostname`` or else ``host`` (``""`` disables SNI; only valid
        without hostname checking).  ``local_port`` binds the source port
        (SO_REUSEADDR is set).  ``timeout`` covers resolution, connect and
        handshake.  Raises NetError (dns, refused, timeout, unreachable,
        tls, tls_verify, addrinuse, invalid, ...)."""
        if not isinstance(port, int) or not 0 < port < 65536:
            raise NetError("invalid", f"invalid port {port!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ips = await _resolver(resolver).resolve(host, family=family, timeout=timeout)
        faults = getattr(resolver, "faults", None)  # the module's fault registry (emulator/faults.py)
        if faults is not None:
            await faults.before_connect(host, port, tls=ssl is not None)
        if ssl is not None and server_hostname is None:
            server_hostname = _strip_brackets(host)
        last: NetError | None = None
        for ip in ips:
            remaining = deadline - loop.time()
            if remaining <= 0:
                last = NetError("timeout", f"connect to {host}:{port} timed out")
                break
            try:
                conn = await asyncio.wait_for(
                    cls._connect_one(ip, port, ssl, server_hostname, local_host, local_port),
                    remaining,
                )
                if faults is not None:
                    faults.track(conn)
                return conn
            except asyncio.TimeoutError:
                last = NetError("timeout", f"connect to {ip}:{port} timed out")
            except NetError as exc:
                last = exc
                if exc.kind in ("tls", "tls_verify", "addrinuse", "invalid"):
                    break  # trying another address would not help
        assert last is not None
        raise last

    @classmethod
    async def _connect_one(cls, ip, port, ssl, server_hostname, local_host, local_port) -> "TcpConnection":
        loop = asyncio.get_running_loop()
        fam = ip_family(ip)
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if local_port or local_host:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                bind_host = local_host or ("::" if fam == socket.AF_INET6 else "0.0.0.0")
                sock.bind(_sockaddr(bind_host, local_port or 0))
            await loop.sock_connect(sock, (ip, port))
        except BaseException as exc:
            sock.close()
            if isinstance(exc, (OSError, ValueError)):
                raise classify(exc, f"connect {ip}:{port}") from exc
            raise
        conn = cls()
        conn.server_hostname = server_hostname if ssl is not None else None
        try:
            await loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=ssl,
                server_hostname=server_hostname if ssl is not None else None,
                ssl_handshake_timeout=3600 if ssl is not None else None,
            )
        except BaseException as exc:
            sock.close()
            if isinstance(exc, (OSError, ValueError)):
                raise classify(exc, f"TLS handshake with {ip}:{port}") from exc
            raise
        return conn

    # ------------------------------------------------------- protocol events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D401
        """asyncio callback (internal)."""
        self._transport = transport  # type: ignore[assignment]
        self.local_addr = _addr2(transport.get_extra_info("sockname"))
        self.remote_addr = _addr2(transport.get_extra_info("peername"))
        self._tls = transport.get_extra_info("ssl_object") is not None
        self._apply_pause()

    def data_received(self, data: bytes) -> None:
        """asyncio callback (internal): buffer data, then notify."""
        if not data:
            return
        if self.shaper is not None and self.shaper.defer("rx", len(data), self._port(), self._deliver, data):
            return  # latency/bandwidth fault: delivered later, in order
        self._deliver(data)

    def _port(self) -> int | None:
        return self.remote_addr[1] if self.remote_addr else None

    def _deliver(self, data: bytes) -> None:
        was_empty = not self.rx
        self.rx += data
        self.total_received += len(data)
        self._data_event.set()
        if self.rx_high_water is not None and len(self.rx) > self.rx_high_water:
            self._auto_paused = True
            self._apply_pause()
        if self.notify == "edge":
            if was_empty or self._armed:
                self._armed = False
                _invoke(self.on_data, self)
        else:
            _invoke(self.on_data, self)

    def eof_received(self) -> bool:
        """asyncio callback (internal): the peer sent FIN (or TLS close_notify)."""
        keep = self.half_close and not self._tls
        if self.shaper is not None and self.shaper.busy("rx"):
            self.shaper.after("rx", self._eof, keep)  # the FIN comes after the data held before it
        else:
            self._eof(keep)
        return keep

    def _eof(self, keep: bool) -> None:
        self.remote_eof = True
        self._data_event.set()
        if self.close_reason is None:
            self.close_reason = "remote"
        if keep:
            _invoke(self.on_eof, self)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio callback (internal)."""
        if self.shaper is not None and self.shaper.busy("rx"):
            self.shaper.after("rx", self._finish, exc)
            return
        self._finish(exc)

    def pause_writing(self) -> None:
        """asyncio callback (internal)."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """asyncio callback (internal)."""
        self._write_paused = False
        self._wake_drainers(None)

    def _finish(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        if exc is not None and not self._local_close:
            # the socket is still open inside connection_lost: snapshot
            self._final_acked = max(0, self.total_sent - self.unacked)
        self.closed = True
        if exc is not None:
            err = classify(exc)
            if err.kind == "reset" and not self._local_close:
                self.close_reason = "reset"
                self.error = err
            elif self._local_close:
                self.close_reason = "local"
            else:
                self.close_reason = "error"
                self.error = err
        elif self.close_reason is None:
            self.close_reason = "local" if self._local_close else "remote"
        if self.close_reason == "remote" and not self.remote_eof:
            self.remote_eof = True
        self._wake_drainers(self._send_error())
        self._data_event.set()
        self._closed_event.set()
        _invoke(self.on_close, self, self.close_reason)

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

    def _send_error(self) -> NetError:
        if self.close_reason == "reset":
            return NetError("reset", self.error.message if self.error else "connection reset by peer")
        if self.close_reason == "error" and self.error is not None:
            return self.error
        return NetError("closed", "connection is closed")

    # ---------------------------------------------------------------- sending
    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending without waiting (usable from callbacks).
        Raises NetError("closed"/"reset") if the connection is finished."""
        if self.closed or self._transport is None or self._transport.is_closing() or self._close_held:
            raise self._send_error() if self.closed else NetError("closed", "connection is closing")
        if not data:
            return
        if self.shaper is not None and self.shaper.defer("tx", len(data), self._port(), self._send_late, bytes(data)):
            self.total_sent += len(data)  # latency/bandwidth fault: leaves later, in order
            return
        self._transport.write(bytes(data))
        self.total_sent += len(data)

    def _send_late(self, data: bytes) -> None:
        t = self._transport
        if t is not None and not t.is_closing() and not self.closed:
            t.write(data)

    async def send(self, data: bytes) -> None:
        """Send ``data`` and wait until the transport buffer drained below its
        high-water mark.  Raises NetError("closed") / ("reset") / the error
        that ended the connection."""
        self.write(data)
        await self.drain()

    async def drain(self) -> None:
        """Wait until buffered outgoing data fell below the high-water mark."""
        if self.closed:
            raise self._send_error()
        if self.shaper is not None and self.shaper.queued["tx"] > 65536:
            await self.shaper.wait_tx(65536)   # held by a bandwidth fault: push back like a full window
            if self.closed:
                raise self._send_error()
        if not self._write_paused:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(fut)
        await fut

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued in user space (asyncio/TLS) not yet handed to the kernel."""
        if self._transport is None or self.closed:
            return 0
        held = self.shaper.queued["tx"] if self.shaper is not None else 0
        try:
            return self._transport.get_write_buffer_size() + held
        except Exception:  # noqa: BLE001
            return held

    def _kernel_unacked(self) -> int:
        sock = self._raw_socket()
        if sock is None or not sys.platform.startswith("linux"):
            return 0
        try:
            import fcntl

            buf = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
            return struct.unpack("i", buf)[0]
        except OSError:
            return 0

    @property
    def unacked(self) -> int:
        """Best-effort bytes sent but not yet acknowledged (user-space queue plus
        kernel send queue via SIOCOUTQ).  For TLS the kernel part counts
        ciphertext, so this is only an approximation."""
        return self.write_buffer_size + self._kernel_unacked()

    @property
    def acked(self) -> int:
        """Best-effort bytes acknowledged by the peer: ``total_sent - unacked``
        (never negative).  After a graceful close it equals ``total_sent``;
        after a reset/error it is the value measured when the connection died."""
        if self.closed:
            return self.total_sent if self._final_acked is None else self._final_acked
        return max(0, self.total_sent - self.unacked)

    # ---------------------------------------------------------------- reading
    @property
    def available(self) -> int:
        """Number of received bytes waiting in ``rx``."""
        return len(self.rx)

    def read(self, n: int = -1) -> bytes:
        """Remove and return up to ``n`` bytes from ``rx`` (all if ``n < 0``).
        Works after close until the buffer is empty.  Resumes reading when an
        automatic pause is no longer needed."""
        if n is None or n < 0 or n >= len(self.rx):
            data = bytes(self.rx)
            self.rx.clear()
        else:
            data = bytes(self.rx[:n])
            del self.rx[:n]
        if not self.rx:
            self._armed = True
            if not (self.remote_eof or self.closed):
                self._data_event.clear()
        if self._auto_paused:
            low = self.rx_low_water
            if low is None:
                low = (self.rx_high_water or 0) // 2
            if len(self.rx) <= low:
                self._auto_paused = False
                self._apply_pause()
        return data

    def peek(self, n: int = -1) -> bytes:
        """Return up to ``n`` buffered bytes without removing them."""
        return bytes(self.rx if n is None or n < 0 else self.rx[:n])

    def rearm(self) -> None:
        """With ``notify="edge"``: make the next arrival call ``on_data`` even if
        ``rx`` is not empty."""
        self._armed = True

    async def wait_data(self, timeout: float | None = None) -> bool:
        """Wait until ``rx`` holds data or the peer finished sending.  Returns
        True if data is available, False on EOF/close without data; raises
        NetError("timeout") on timeout."""
        while not self.rx and not (self.remote_eof or self.closed):
            self._data_event.clear()
            try:
                await asyncio.wait_for(self._data_event.wait(), timeout)
            except asyncio.TimeoutError:
                raise NetError("timeout", "no data received in time") from None
        return bool(self.rx)

    async def recv(self, n: int = -1, timeout: float | None = None) -> bytes:
        """Wait for data (see :meth:`wait_data`) and read up to ``n`` bytes;
        returns b"" at EOF."""
        await self.wait_data(timeout)
        return self.read(n)

    async def read_exactly(self, n: int, timeout: float | None = None) -> bytes:
        """Wait until ``n`` bytes are buffered and read them; raises
        NetError("closed") if the stream ends first, ("timeout") on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while len(self.rx) < n:
            if self.remote_eof or self.closed:
                raise NetError("closed", f"stream ended after {len(self.rx)} of {n} bytes")
            self._data_event.clear()
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(self._data_event.wait(), remaining)
            except asyncio.TimeoutError:
                raise NetError("timeout", f"only {len(self.rx)} of {n} bytes received") from None
        return self.read(n)

    # ------------------------------------------------------------ backpressure
    def pause_reading(self) -> None:
        """Stop reading from the socket (data stays in the kernel; the peer's
        sends stall once the TCP window is full)."""
        self._user_paused = True
        self._apply_pause()

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`."""
        self._user_paused = False
        self._apply_pause()

    @property
    def reading_paused(self) -> bool:
        """True while reading is paused (by the profile or by ``rx_high_water``)."""
        return self._user_paused or self._auto_paused

    def _apply_pause(self) -> None:
        want = self._user_paused or self._auto_paused
        t = self._transport
        if t is None or self.closed or self._upgrading or want == self._transport_paused:
            return
        try:
            if want:
                t.pause_reading()
            else:
                t.resume_reading()
            self._transport_paused = want
        except (RuntimeError, AttributeError):
            pass

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Graceful close: flush queued data, then send FIN.  ``on_close`` fires
        with reason "local" once the transport is gone (unless the peer's
        FIN/RST already decided the reason)."""
        if self.closed or self._transport is None:
            return
        self._local_close = True
        if self.shaper is not None and self.shaper.busy("tx"):
            self._close_held = True  # data held by a latency/bandwidth fault leaves first
            self.shaper.after("tx", self._transport.close)
            return
        self._transport.close()

    def abort(self) -> None:
        """Close immediately with a TCP RST (SO_LINGER 0); queued data is dropped."""
        if self.closed or self._transport is None:
            return
        self._local_close = True
        if self.shaper is not None:
            self.shaper.cancel("tx")
        sock = self._raw_socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._transport.abort()

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the connection is fully closed; NetError("timeout") if not."""
        try:
            await asyncio.wait_for(self._closed_event.wait(), timeout)
        except asyncio.TimeoutError:
            raise NetError("timeout", "connection did not close in time") from None

    async def aclose(self, timeout: float = 5.0) -> None:
        """Graceful close and wait for it; aborts if it takes longer than ``timeout``."""
        self.close()
        try:
            await self.wait_closed(timeout)
        except NetError:
            self.abort()

    # --------------------------------------------------------------------- TLS
    @property
    def tls(self) -> bool:
        """True once the connection is encrypted."""
        return self._tls

    @property
    def tls_info(self) -> dict | None:
        """``{"version", "cipher", "alpn", "peer_cert_der", "server_hostname"}``
        for TLS connections, else None."""
        if not self._tls or self._transport is None:
            return None
        obj = self._transport.get_extra_info("ssl_object")
        if obj is None:
            return None
        cipher = obj.cipher()
        return {
            "version": obj.version(),
            "cipher": cipher[0] if cipher else None,
            "alpn": obj.selected_alpn_protocol(),
            "peer_cert_der": obj.getpeercert(binary_form=True),
            "server_hostname": self.server_hostname,
        }

    async def start_tls(
        self,
        ctx: _ssl.SSLContext,
        server_hostname: str | None = None,
        *,
        server_side: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Upgrade this open plain connection to TLS (STARTTLS style).  Data
        already in ``rx`` stays.  On failure the connection is closed
        (reason "error") and NetError("tls"/"tls_verify"/"timeout") is raised."""
        if self.closed or self._transport is None:
            raise NetError("closed", "connection is closed")
        if self._tls:
            raise NetError("invalid", "connection already uses TLS")
        if not server_side and server_hostname is None and ctx.check_hostname:
            raise NetError("invalid", "server_hostname is required when the context checks hostnames")
        loop = asyncio.get_running_loop()
        self._upgrading = True
        try:
            new_transport = await loop.start_tls(
                self._transport,
                self,
                ctx,
                server_side=server_side,
                server_hostname=server_hostname if not server_side else None,
                ssl_handshake_timeout=timeout,
            )
        except BaseException as exc:
            self._upgrading = False
            err = classify(exc, "TLS upgrade")
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "timed out" in str(exc):
                err = NetError("timeout", "TLS handshake timed out")
            if isinstance(exc, (OSError, ValueError, asyncio.TimeoutError)):
                self.error = err
                if self.close_reason is None:
                    self.close_reason = "error"
                if self._transport is not None:
                    self._transport.abort()
                self._finish(None)
                raise err from exc
            raise
        self._upgrading = False
        self._transport = new_transport
        self._tls = True
        self.server_hostname = server_hostname if not server_side else None
        self._transport_paused = False
        self._apply_pause()

    # ------------------------------------------------------------- socket opts
    def _raw_socket(self):
        if self._transport is None:
            return None
        return self._transport.get_extra_info("socket")

    def set_keepalive(
        self,
        enabled: bool,
        idle: int | None = None,
        interval: int | None = None,
        count: int | None = None,
    ) -> None:
        """Enable/disable TCP keepalive; ``idle``/``interval`` in seconds and
        ``count`` probes are applied when given and supported by the OS."""
        sock = self._raw_socket()
        if sock is None:
            raise NetError("closed", "connection is closed")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if enabled else 0)
            for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
                opt = getattr(socket, name, None)
                if value is not None and opt is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, opt, int(value))
        except OSError as exc:
            raise classify(exc, "set_keepalive") from exc

    def get_keepalive(self) -> dict:
        """Current keepalive settings as ``{"enabled", "idle", "interval", "count"}``."""
        sock = self._raw_socket()
        if sock is None:
            raise NetError("closed", "connection is closed")
        out = {"enabled": bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))}
        for key, name in (("idle", "TCP_KEEPIDLE"), ("interval", "TCP_KEEPINTVL"), ("count", "TCP_KEEPCNT")):
            opt = getattr(socket, name, None)
            out[key] = sock.getsockopt(socket.IPPROTO_TCP, opt) if opt is not None else None
        return out

    def set_option(self, level: int, name: int, value: int | bytes) -> None:
        """setsockopt on the connection's socket (SO_LINGER, SO_RCVBUF, IP_TOS...)."""
        sock = self._raw_socket()
        if sock is None:
            raise NetError("closed", "connection is closed")
        try:
            sock.setsockopt(level, name, value)
        except OSError as exc:
            raise classify(exc, "setsockopt") from exc

    def get_option(self, level: int, name: int, size: int = 0) -> int | bytes:
        """getsockopt on the connection's socket."""
        sock = self._raw_socket()
        if sock is None:
            raise NetError("closed", "connection is closed")
        return sock.getsockopt(level, name, size) if size else sock.getsockopt(level, name)

    def set_nodelay(self, enabled: bool) -> None:
        """Enable/disable TCP_NODELAY (asyncio enables it by default)."""
        sock = self._raw_socket()
        if sock is None:
            raise NetError("closed", "connection is closed")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if enabled else 0)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<TcpConnection {self.local_addr}->{self.remote_addr} {state}"
            f"{' tls' if self._tls else ''} rx={len(self.rx)}>"
        )


class TcpListener:
    """A listening TCP (optionally TLS) socket.

    Each accepted connection becomes a :class:`TcpConnection` passed to
    ``on_accept(conn)`` if set, otherwise queued for :meth:`accept`.  With
    ``ssl`` the connection is delivered after a successful handshake.
    """

    def __init__(self) -> None:
        self.on_accept: Callable[[TcpConnection], Any] | None = None
        self.host: str = ""
        self.port: int = 0
        self.closed = False
        self.connections: set[TcpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._queue: asyncio.Queue[TcpConnection] = asyncio.Queue()
        self._faults: Any = None   # the module's fault registry, found through ``resolver``

    @classmethod
    async def open(
        cls,
        host: str | None,
        port: int,
        *,
        backlog: int = 5,
        ssl: _ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
    ) -> "TcpListener":
        """Bind and listen on ``host``:``port`` (port 0 picks a free one, see
        ``.port``).  ``host`` is an IP literal or name (first address used);
        ``None``/``""`` means all interfaces, dual-stack when IPv6 exists.
        Names are resolved with ``resolver`` (default: host resolver); a
        module's resolver also brings its fault registry, so accepted
        connections get the network faults (reset, close, latency...) too.
        Raises NetError("addrinuse") if the port is taken."""
        self = cls()
        self._faults = getattr(resolver, "faults", None)
        loop = asyncio.get_running_loop()
        if port is None or not 0 <= int(port) < 65536:
            raise NetError("invalid", f"invalid port {port!r}")
        dual = False
        if not host:
            if socket.has_ipv6:
                bind_host, fam, dual = "::", socket.AF_INET6, True
            else:
                bind_host, fam = "0.0.0.0", socket.AF_INET
        else:
            bind_host = await _resolver(resolver).resolve_one(_strip_brackets(host), timeout=10.0)
            fam = ip_family(bind_host)
        sock = socket.socket(fam, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
            sock.bind(_sockaddr(bind_host, int(port)))
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if dual and exc.errno in (_errno.EAFNOSUPPORT, _errno.EADDRNOTAVAIL):
                return await cls.open("0.0.0.0", port, backlog=backlog, ssl=ssl, resolver=resolver)
            raise classify(exc, f"listen {bind_host}:{port}") from exc

        def factory() -> TcpConnection:
            conn = _AcceptedConnection(self)
            return conn

        try:
            self._server = await loop.create_server(factory, sock=sock, backlog=backlog, ssl=ssl)
        except OSError as exc:
            sock.close()
            raise classify(exc, "listen") from exc
        name = sock.getsockname()
        self.host, self.port = (name[0], name[1])
        return self

    def _accepted(self, conn: TcpConnection) -> None:
        if self.closed:
            conn.abort()
            return
        self.connections.add(conn)
        if self._faults is not None:
            self._faults.track(conn)
        if self.on_accept is not None:
            _invoke(self.on_accept, conn)
        else:
            self._queue.put_nowait(conn)

    async def accept(self, timeout: float | None = None) -> TcpConnection:
        """Return the next accepted connection not handled by ``on_accept``;
        NetError("timeout") if none arrives in time."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            raise NetError("timeout", "no incoming connection") from None

    def close(self) -> None:
        """Stop listening.  Already accepted connections stay open."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()

    async def wait_closed(self) -> None:
        """Wait until the listening socket is closed."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def __repr__(self) -> str:
        return f"<TcpListener {self.host}:{self.port}{' closed' if self.closed else ''}>"


class _AcceptedConnection(TcpConnection):
    """TcpConnection created by a TcpListener (reports itself on connect)."""

    def __init__(self, listener: TcpListener) -> None:
        super().__init__()
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._listener._accepted(self)

    def _finish(self, exc: BaseException | None) -> None:
        self._listener.connections.discard(self)
        super()._finish(exc)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: "UdpSocket") -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.owner._error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class UdpSocket:
    """A UDP socket that keeps received datagrams whole.

    ``rx`` is a deque of ``(data, (ip, port))``; ``on_datagram(sock)`` is
    called for each arrival; ``recvfrom()`` pops the oldest.  ``max_queue``
    (None = unlimited) bounds the queue; extra datagrams are dropped and
    counted in ``dropped`` (as a real module would).  ``on_error(sock, err)``
    reports asynchronous errors such as ICMP port unreachable ("refused").

    Sockets opened with a module's resolver are known to its fault registry: while a fault UDP
    consults is armed (``udp_drop``, ``udp_unreachable``, ``latency``, ``bandwidth``) ``faults``
    is that registry and sees every datagram both ways; otherwise it is None and costs nothing.
    ``dropped_by_fault`` counts datagrams such faults lost.
    """

    faults: Any = None
    shaper: Any = None

    def __init__(self) -> None:
        self.rx: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self.on_datagram: Callable[[UdpSocket], Any] | None = None
        self.on_error: Callable[[UdpSocket, NetError], Any] | None = None
        self.max_queue: int | None = None
        self.dropped = 0
        self.dropped_by_fault = 0
        self.total_received = 0
        self.total_sent = 0
        self.closed = False
        self.last_error: NetError | None = None
        self.remote: tuple[str, int] | None = None
        self.local_addr: tuple[str, int] | None = None
        self.family = socket.AF_INET
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._event = asyncio.Event()
        self._resolver: Resolver | None = None
        self._connected = False

    @classmethod
    async def open(
        cls,
        *,
        local_host: str = "0.0.0.0",
        local_port: int = 0,
        remote: tuple[str, int] | None = None,
        resolver: Resolver | None = None,
        reuse: bool = False,
        connect: bool = False,
        broadcast: bool = True,
    ) -> "UdpSocket":
        """Create and bind a UDP socket.  ``remote`` (host may be a name, it
        is resolved now) becomes the default destination of :meth:`sendto`;
        with ``connect=True`` the kernel also filters incoming datagrams to
        that peer.  ``local_host`` "::" gives a dual-stack IPv6 socket; if
        ``local_host`` is the IPv4 wildcard but ``remote`` is IPv6, the socket
        is IPv6.  ``reuse`` sets SO_REUSEADDR/SO_REUSEPORT (needed to share a
        multicast port).  Raises NetError("addrinuse"/"dns"/"invalid")."""
        self = cls()
        self._resolver = resolver
        loop = asyncio.get_running_loop()
        remote_ip = None
        if remote is not None:
            rhost, rport = remote
            if not isinstance(rport, int) or not 0 < rport < 65536:
                raise NetError("invalid", f"invalid port {rport!r}")
            remote_ip = await _resolver(resolver).resolve_one(rhost)
            self.remote = (remote_ip, rport)
        local_host = local_host or "0.0.0.0"
        lfam = ip_family(local_host)
        if lfam == 0:
            local_host = await _resolver(resolver).resolve_one(local_host)
            lfam = ip_family(local_host)
        if remote_ip and ip_family(remote_ip) == socket.AF_INET6 and lfam == socket.AF_INET:
            if local_host != "0.0.0.0":
                raise NetError("invalid", "IPv6 remote with an IPv4 local address")
            local_host, lfam = "::", socket.AF_INET6
        self.family = lfam
        sock = socket.socket(lfam, socket.SOCK_DGRAM)
        try:
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if hasattr(socket, "SO_REUSEPORT"):
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if broadcast and lfam == socket.AF_INET:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if lfam == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if local_host == "::" else 1)
            sock.bind(_sockaddr(local_host, int(local_port)))
            if connect and self.remote is not None:
                sock.connect(self._dest(self.remote))
                self._connected = True
            sock.setblocking(False)
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=sock)
        except OSError as exc:
            sock.close()
            raise classify(exc, f"udp bind {local_host}:{local_port}") from exc
        self._sock = sock
        self.local_addr = _addr2(sock.getsockname())
        registry = getattr(resolver, "faults", None)  # the module's fault registry (emulator/faults.py)
        if registry is not None:
            registry.track_udp(self)
        return self

    @property
    def port(self) -> int:
        """Local port number."""
        return self.local_addr[1] if self.local_addr else 0

    def _dest(self, addr: tuple[str, int]) -> tuple:
        ip, port = addr
        ip = _strip_brackets(ip)
        fam = ip_family(ip)
        if fam == 0:
            raise NetError("invalid", f"{ip!r} is not an IP address (use sendto_host for names)")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise NetError("invalid", f"invalid port {port!r}")
        if self.family == socket.AF_INET6 and fam == socket.AF_INET:
            return ("::ffff:" + ip, port)
        if self.family == socket.AF_INET and fam == socket.AF_INET6:
            raise NetError("invalid", "cannot send to an IPv6 address from an IPv4 socket")
        return _sockaddr(ip, port)

    def sendto(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        """Send one datagram to ``addr`` (an ``(ip, port)``; default: ``remote``).
        Raises NetError("closed"/"invalid"); asynchronous errors go to
        ``on_error``/``last_error``."""
        if self.closed or self._transport is None:
            raise NetError("closed", "socket is closed")
        if addr is None:
            if self.remote is None:
                raise NetError("invalid", "no destination and no default remote")
            addr = self.remote
        limit = 65507 if self.family == socket.AF_INET else 65527
        if len(data) > limit:
            raise NetError("invalid", f"datagram of {len(data)} bytes exceeds {limit}")
        dest = self._dest(addr)
        if self._connected and _addr2(dest) != _addr2(self._dest(self.remote)):  # type: ignore[arg-type]
            raise NetError("invalid", "socket is connected to another peer")
        if self.faults is not None and self.faults.udp_out(self, bytes(data), dest):
            self.total_sent += len(data)  # lost, refused or held back by an injected fault
            return
        try:
            self._send_now(data, dest)
        except OSError as exc:
            raise classify(exc, "sendto") from exc
        self.total_sent += len(data)

    def _send_now(self, data: bytes, dest: tuple) -> None:
        if not data and self._sock is not None:
            # asyncio silently drops empty datagrams; they are legal UDP
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self._sock.sendto(b"", dest)
        elif self._transport is not None:
            self._transport.sendto(bytes(data), dest)

    def _send_late(self, data: bytes, dest: tuple) -> None:
        """A datagram held by a latency/bandwidth fault leaves now (errors go to on_error)."""
        try:
            self._send_now(data, dest)
        except OSError as exc:
            self._error(exc)

    async def sendto_host(self, data: bytes, host: str, port: int) -> None:
        """Resolve ``host`` (with this socket's resolver) and send one datagram."""
        fam = socket.AF_INET if self.family == socket.AF_INET else 0
        ip = await _resolver(self._resolver).resolve_one(host, family=fam)
        self.sendto(data, (ip, port))

    def _received(self, data: bytes, addr: Any) -> None:
        if self.faults is not None and self.faults.udp_in(self, data, addr):
            return  # lost or held back by an injected fault
        self._deliver(data, addr)

    def _deliver(self, data: bytes, addr: Any) -> None:
        if self.closed:
            return
        if self.max_queue is not None and len(self.rx) >= self.max_queue:
            self.dropped += 1
            return
        self.rx.append((bytes(data), _addr2(addr)))  # type: ignore[arg-type]
        self.total_received += len(data)
        self._event.set()
        _invoke(self.on_datagram, self)

    def _error(self, exc: Exception) -> None:
        self.last_error = classify(exc, "udp")
        _invoke(self.on_error, self, self.last_error)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._event.set()

    @property
    def available(self) -> int:
        """Number of queued datagrams."""
        return len(self.rx)

    @property
    def pending_bytes(self) -> int:
        """Total payload bytes of queued datagrams."""
        return sum(len(d) for d, _ in self.rx)

    def recvfrom(self) -> tuple[bytes, tuple[str, int]] | None:
        """Pop the oldest datagram as ``(data, (ip, port))``, or None if empty."""
        if not self.rx:
            return None
        item = self.rx.popleft()
        if not self.rx and not self.closed:
            self._event.clear()
        return item

    async def recv(self, timeout: float | None = None) -> tuple[bytes, tuple[str, int]]:
        """Wait for and pop the next datagram; NetError("timeout"/"closed")."""
        while not self.rx:
            if self.closed:
                raise NetError("closed", "socket is closed")
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), timeout)
            except asyncio.TimeoutError:
                raise NetError("timeout", "no datagram received in time") from None
        return self.recvfrom()  # type: ignore[return-value]

    def _mreq(self, group: str, iface: str | int) -> tuple[int, int, bytes]:
        gfam = ip_family(group)
        if gfam == 0:
            raise NetError("invalid", f"{group!r} is not an IP address")
        import ipaddress

        if not ipaddress.ip_address(group.split("%")[0]).is_multicast:
            raise NetError("invalid", f"{group} is not a multicast address")
        if gfam == socket.AF_INET:
            if self.family != socket.AF_INET:
                raise NetError("invalid", "IPv4 group on an IPv6 socket")
            if isinstance(iface, int):
                raise NetError("invalid", "IPv4 multicast interface must be an IP address")
            try:
                mreq = socket.inet_aton(group) + socket.inet_aton(iface or "0.0.0.0")
            except OSError as exc:
                raise NetError("invalid", f"bad interface address {iface!r}") from exc
            return socket.IPPROTO_IP, 0, mreq
        if self.family != socket.AF_INET6:
            raise NetError("invalid", "IPv6 group on an IPv4 socket")
        if isinstance(iface, int):
            index = iface
        elif iface in ("", "0.0.0.0", "::", None):
            index = 0
        else:
            try:
                index = socket.if_nametoindex(iface)
            except OSError as exc:
                raise NetError("invalid", f"unknown interface {iface!r}") from exc
        return socket.IPPROTO_IPV6, 1, socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index)

    def join_multicast(self, group: str, iface: str | int = "0.0.0.0") -> None:
        """Join multicast ``group`` (IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP) on the
        interface with address ``iface`` (IPv4) or name/index (IPv6)."""
        level, v6, mreq = self._mreq(group, iface)
        opt = socket.IPV6_JOIN_GROUP if v6 else socket.IP_ADD_MEMBERSHIP
        self._setsockopt(level, opt, mreq, f"join {group}")

    def leave_multicast(self, group: str, iface: str | int = "0.0.0.0") -> None:
        """Leave a multicast group joined with :meth:`join_multicast`."""
        level, v6, mreq = self._mreq(group, iface)
        opt = socket.IPV6_LEAVE_GROUP if v6 else socket.IP_DROP_MEMBERSHIP
        self._setsockopt(level, opt, mreq, f"leave {group}")

    def set_multicast_options(
        self, *, ttl: int | None = None, loop: bool | None = None, iface: str | int | None = None
    ) -> None:
        """Set outgoing multicast TTL/hop limit, loopback of own datagrams, and
        the outgoing interface (IPv4 address, or IPv6 interface name/index)."""
        v6 = self.family == socket.AF_INET6
        if ttl is not None:
            if v6:
                self._setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, int(ttl), "multicast ttl")
            else:
                self._setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, int(ttl), "multicast ttl")
        if loop is not None:
            if v6:
                self._setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop), "multicast loop")
            else:
                self._setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop), "multicast loop")
        if iface is not None:
            if v6:
                index = iface if isinstance(iface, int) else socket.if_nametoindex(iface)
                self._setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index, "multicast iface")
            else:
                try:
                    packed = socket.inet_aton(str(iface))
                except OSError as exc:
                    raise NetError("invalid", f"bad interface address {iface!r}") from exc
                self._setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, packed, "multicast iface")

    def set_ttl(self, ttl: int) -> None:
        """Set the unicast TTL / hop limit of outgoing datagrams."""
        if self.family == socket.AF_INET6:
            self._setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, int(ttl), "ttl")
        else:
            self._setsockopt(socket.IPPROTO_IP, socket.IP_TTL, int(ttl), "ttl")

    def _setsockopt(self, level: int, opt: int, value: Any, what: str) -> None:
        if self.closed or self._sock is None:
            raise NetError("closed", "socket is closed")
        try:
            self._sock.setsockopt(level, opt, value)
        except OSError as exc:
            raise classify(exc, what) from exc

    def close(self) -> None:
        """Close the socket.  Queued datagrams can still be popped."""
        if self.closed:
            return
        self.closed = True
        self._event.set()
        if self.shaper is not None:
            self.shaper.cancel("rx")
            if self.shaper.busy("tx"):  # datagrams held by a latency fault were sent already: let them go
                self.shaper.after("tx", self._transport.close)
                return
        if self._transport is not None:
            self._transport.close()

    def __repr__(self) -> str:
        return f"<UdpSocket {self.local_addr} queued={len(self.rx)}{' closed' if self.closed else ''}>"
