"""Loopback network peers for tests.

Every peer runs in its own daemon thread(s) - an asyncio event loop, or
blocking sockets for the TLS server - so it can be used from plain synchronous pytest tests that block on a pyserial pty
while the emulator (another loop) talks to the peer.  Peers deliberately use
only the standard library (``socket``/``ssl``/``asyncio``), not
``atemu.net``, so they check the emulator independently.

Common interface of every peer:

* context manager (``with TcpEchoServer() as srv: ...``); or ``start()`` /
  ``stop()`` explicitly.  ``stop()`` is idempotent.
* binds port 0 on ``host`` (default ``"127.0.0.1"``; pass ``"::1"`` for
  IPv6) and exposes ``.host``, ``.port`` and ``.address`` (``(host, port)``).
* ``wait_*`` helpers block the calling (test) thread with a timeout and
  raise ``TimeoutError`` with a useful message if the condition never holds.

Peers: :class:`TcpEchoServer`, :class:`UdpEchoServer`,
:class:`TlsEchoServer`, :class:`TcpSink`, :class:`SntpServer`,
:class:`MulticastReceiver`, :class:`MulticastSender`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LoopThread",
    "TcpEchoServer",
    "UdpEchoServer",
    "TlsEchoServer",
    "TlsSession",
    "TcpSink",
    "SinkConnection",
    "SntpServer",
    "MulticastReceiver",
    "MulticastSender",
    "NTP_EPOCH_OFFSET",
]

log = logging.getLogger(__name__)

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class LoopThread:
    """An asyncio event loop running in a daemon thread, plus helpers to run
    coroutines/functions in it from the calling thread and to wait for
    conditions updated by it."""

    def __init__(self, name: str = "peer") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self.errors: list[dict] = []

    def start_loop(self) -> None:
        """Start the thread and its event loop (returns when it runs)."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.set_exception_handler(self._exception_handler)
            self.loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                with contextlib.suppress(Exception):
                    pending = asyncio.all_tasks(loop)
                    for t in pending:
                        t.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=main, name=f"peer-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError(f"{self.name}: event loop thread did not start")

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # Recorded (e.g. TLS handshake failures provoked on purpose) instead of
        # spamming the test log.
        self.errors.append(context)
        log.debug("%s: %s", self.name, context.get("message"), exc_info=context.get("exception"))

    def run(self, coro_or_fn: Any, *args: Any, timeout: float = 5.0) -> Any:
        """Run a coroutine (or call a plain function with ``args``) inside the
        peer's loop and return its result."""
        assert self.loop is not None, "peer not started"
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(timeout)

        async def call() -> Any:
            return coro_or_fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def notify(self) -> None:
        """Wake threads blocked in :meth:`wait_until` (call from the loop)."""
        with self._cond:
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
        """Block until ``predicate()`` is truthy; return its value, or raise
        TimeoutError mentioning ``what``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.name}: timed out after {timeout}s waiting for {what}")
                self._cond.wait(min(remaining, 0.05))

    def stop_loop(self) -> None:
        """Stop the loop and join the thread."""
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        self._thread = None


class _Peer(LoopThread):
    """Base: subclass implements async ``_setup`` (bind, set self.port) and
    ``_teardown``."""

    def __init__(self, host: str, name: str) -> None:
        super().__init__(name)
        self.host = host
        self.port = 0
        self._started = False

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return (self.host, self.port)

    def start(self):
        """Start the peer; returns self."""
        if self._started:
            return self
        self.start_loop()
        try:
            self.run(self._setup())
        except BaseException:
            self.stop_loop()
            raise
        self._started = True
        return self

    def stop(self) -> None:
        """Stop the peer and close all its sockets (idempotent)."""
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(Exception):
            self.run(self._teardown())
        self.stop_loop()

    async def _setup(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _teardown(self) -> None:  # pragma: no cover - abstract
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _rst(transport: asyncio.BaseTransport) -> None:
    """Abort a TCP transport with an RST (SO_LINGER 0)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# --------------------------------------------------------------------- TCP echo
class TcpEchoServer(_Peer):
    """TCP echo server.

    Options: ``greet`` bytes sent on connect; ``close_after=N`` echoes the
    first N received bytes of a connection then closes it gracefully (FIN);
    ``reset_after=N`` echoes N bytes then aborts with RST;
    ``reset_on_connect`` sends RST right after accepting; ``echo=False``
    only counts.  Stats: ``connections`` (accepted count), ``received``
    (total bytes), ``peers`` (client addresses), ``closed_by_client`` (count
    of client FINs).  For TLS use :class:`TlsEchoServer`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        greet: bytes = b"",
        close_after: int | None = None,
        reset_after: int | None = None,
        reset_on_connect: bool = False,
        echo: bool = True,
    ) -> None:
        super().__init__(host, "tcp-echo")
        self.greet = greet
        self.close_after = close_after
        self.reset_after = reset_after
        self.reset_on_connect = reset_on_connect
        self.echo = echo
        self.connections = 0
        self.received = 0
        self.closed_by_client = 0
        self.peers: list[tuple] = []
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    def _protocol(self) -> asyncio.Protocol:
        server = self

        class Echo(asyncio.Protocol):
            seen = 0

            def connection_made(self, transport: asyncio.Transport) -> None:
                self.transport = transport
                server._transports.add(transport)
                server.connections += 1
                server.peers.append(transport.get_extra_info("peername"))
                server.notify()
                if server.reset_on_connect:
                    _rst(transport)
                    return
                if server.greet:
                    transport.write(server.greet)

            def data_received(self, data: bytes) -> None:
                server.received += len(data)
                limit, action = None, None
                if server.close_after is not None:
                    limit, action = server.close_after, "close"
                if server.reset_after is not None:
                    limit, action = server.reset_after, "reset"
                chunk = data if limit is None else data[: max(0, limit - self.seen)]
                self.seen += len(data)
                if server.echo and chunk:
                    self.transport.write(chunk)
                if limit is not None and self.seen >= limit:
                    if action == "close":
                        self.transport.close()
                    else:
                        _rst(self.transport)
                server.notify()

            def eof_received(self) -> bool:
                server.closed_by_client += 1
                server.notify()
                return False

            def connection_lost(self, exc: Exception | None) -> None:
                server._transports.discard(self.transport)
                server.notify()

        return Echo()

    async def _setup(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, 0, family=_family(self.host))
        self.port = self._server.sockets[0].getsockname()[1]

    async def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._transports):
            t.abort()

    def wait_connections(self, n: int = 1, timeout: float = 5.0) -> int:
        """Block until at least ``n`` connections were accepted."""
        return self.wait_until(lambda: self.connections >= n and self.connections, timeout, f"{n} connections")

    def wait_received(self, n: int, timeout: float = 5.0) -> int:
        """Block until at least ``n`` bytes were received in total."""
        return self.wait_until(lambda: self.received >= n and self.received, timeout, f"{n} bytes")


# --------------------------------------------------------------------- TLS echo
@dataclass
class TlsSession:
    """What the TLS server saw of one successful client handshake."""

    sni: str | None
    client_cert_presented: bool
    client_cert_der: bytes | None
    client_cn: str | None
    version: str | None
    cipher: str | None
    alpn: str | None


class TlsEchoServer(LoopThread):
    """TLS echo server built from PEM files: ``cert``/``key``; optional ``ca``
    to request and verify client certificates; ``require_client_cert`` makes
    one mandatory.  ``min_version``/``max_version``/``alpn`` restrict the
    server; ``greet``/``close_after``/``reset_after`` behave as in
    :class:`TcpEchoServer`.

    It uses blocking ``ssl`` sockets, one thread per connection, so that (like
    real servers) OpenSSL's alerts - e.g. "certificate required" or
    "protocol version" - really reach the client.  Each completed handshake
    appends a :class:`TlsSession` to ``sessions`` (SNI name, whether a client
    certificate was presented, its CN, version, cipher, ALPN); each failed one
    appends the server-side exception to ``tls_failures``.
    """

    def __init__(
        self,
        cert: Path | str,
        key: Path | str,
        ca: Path | str | None = None,
        require_client_cert: bool = False,
        host: str = "127.0.0.1",
        *,
        min_version: ssl.TLSVersion | None = None,
        max_version: ssl.TLSVersion | None = None,
        alpn: list[str] | None = None,
        greet: bytes = b"",
        close_after: int | None = None,
        reset_after: int | None = None,
    ) -> None:
        super().__init__("tls-echo")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        if ca is not None:
            ctx.load_verify_locations(cafile=str(ca))
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
        if alpn:
            ctx.set_alpn_protocols(alpn)
        ctx.sni_callback = self._sni_callback
        self.ssl_context = ctx
        self.host = host
        self.port = 0
        self.greet = greet
        self.close_after = close_after
        self.reset_after = reset_after
        self.sessions: list[TlsSession] = []
        self.tls_failures: list[Exception] = []
        self.connections = 0
        self.received = 0
        self._sni: dict[int, str | None] = {}
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return (self.host, self.port)

    def _sni_callback(self, sslsock: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        self._sni[id(sslsock)] = server_name
        return None

    def start(self) -> "TlsEchoServer":
        """Bind, listen and start the accept thread; returns self."""
        if self._listener is not None:
            return self
        lsock = socket.socket(_family(self.host), socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((self.host, 0))
        lsock.listen(16)
        lsock.settimeout(0.1)
        self._listener = lsock
        self.port = lsock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="peer-tls-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection, join the threads."""
        if self._listener is None:
            return
        self._stopping.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        self._listener.close()
        self._listener = None

    def __enter__(self) -> "TlsEchoServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), name="peer-tls-conn", daemon=True)
            with self._lock:
                self._socks.add(conn)
                self._threads.append(t)
            t.start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            try:
                tls = self.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.tls_failures.append(exc)
                self.notify()
                return
            self._record(tls)
            if self.greet:
                tls.sendall(self.greet)
            seen = 0
            limit = self.reset_after if self.reset_after is not None else self.close_after
            while not self._stopping.is_set():
                try:
                    data = tls.recv(65536)
                except (ssl.SSLError, OSError):
                    return
                if not data:
                    with contextlib.suppress(ssl.SSLError, OSError):
                        tls.unwrap()  # answer close_notify
                    return
                self.received += len(data)
                chunk = data if limit is None else data[: max(0, limit - seen)]
                seen += len(data)
                if chunk:
                    tls.sendall(chunk)
                self.notify()
                if limit is not None and seen >= limit:
                    if self.reset_after is not None:
                        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    else:
                        with contextlib.suppress(ssl.SSLError, OSError):
                            tls.unwrap()
                    return
        except (ssl.SSLError, OSError):
            return
        finally:
            with self._lock:
                self._socks.discard(raw)
            raw.close()
            self.notify()

    def _record(self, tls: ssl.SSLSocket) -> None:
        der = tls.getpeercert(binary_form=True)
        cn = None
        for rdn in (tls.getpeercert() or {}).get("subject", ()) if der else ():
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        cipher = tls.cipher()
        self.sessions.append(
            TlsSession(
                sni=self._sni.pop(id(tls), None),
                client_cert_presented=der is not None,
                client_cert_der=der,
                client_cn=cn,
                version=tls.version(),
                cipher=cipher[0] if cipher else None,
                alpn=tls.selected_alpn_protocol(),
            )
        )
        self.notify()

    @property
    def handshake_failures(self) -> int:
        """Number of failed server-side handshakes (see ``tls_failures``)."""
        return len(self.tls_failures)

    @property
    def last_session(self) -> TlsSession | None:
        """The most recent completed handshake, or None."""
        return self.sessions[-1] if self.sessions else None

    def wait_sessions(self, n: int = 1, timeout: float = 5.0) -> list[TlsSession]:
        """Block until at least ``n`` handshakes completed; returns sessions."""
        return self.wait_until(lambda: len(self.sessions) >= n and self.sessions, timeout, f"{n} TLS sessions")

    def wait_handshake_failures(self, n: int = 1, timeout: float = 5.0) -> int:
        """Block until at least ``n`` server-side handshakes failed."""
        return self.wait_until(
            lambda: self.handshake_failures >= n and self.handshake_failures, timeout, f"{n} handshake failures"
        )


# --------------------------------------------------------------------- TCP sink
@dataclass
class SinkConnection:
    """One connection accepted by :class:`TcpSink`."""

    peer: tuple
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False  # client sent FIN
    closed: bool = False  # connection is gone
    reset: bool = False  # it ended with an error (RST)
    transport: Any = None


class TcpSink(_Peer):
    """TCP server that records every byte received, per connection
    (``conns``) and overall (``data``), and can push bytes to, close, or
    reset the connected clients on demand.  ``pause_reading()`` stops reading
    so that the client's send window fills (for backpressure tests)."""

    def __init__(self, host: str = "127.0.0.1", *, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(host, "tcp-sink")
        self.ssl_context = ssl_context
        self.conns: list[SinkConnection] = []
        self._all = bytearray()
        self._server: asyncio.AbstractServer | None = None
        self._paused = False

    @property
    def data(self) -> bytes:
        """Everything received so far, all connections, in arrival order."""
        return bytes(self._all)

    def _protocol(self) -> asyncio.Protocol:
        sink = self

        class Sink(asyncio.Protocol):
            def connection_made(self, transport: asyncio.Transport) -> None:
                self.rec = SinkConnection(peer=transport.get_extra_info("peername"), transport=transport)
                sink.conns.append(self.rec)
                if sink._paused:
                    transport.pause_reading()
                sink.notify()

            def data_received(self, data: bytes) -> None:
                self.rec.data += data
                sink._all += data
                sink.notify()

            def eof_received(self) -> bool:
                self.rec.eof = True
                sink.notify()
                return False

            def connection_lost(self, exc: Exception | None) -> None:
                self.rec.closed = True
                self.rec.reset = exc is not None
                sink.notify()

        return Sink()

    async def _setup(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self.host, 0, family=_family(self.host), ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in self.conns:
            if c.transport is not None and not c.closed:
                c.transport.abort()

    def _conn(self, index: int) -> SinkConnection:
        if not self.conns:
            raise RuntimeError("TcpSink: no client connected")
        return self.conns[index]

    def wait_connection(self, n: int = 1, timeout: float = 5.0) -> SinkConnection:
        """Block until ``n`` connections were accepted; return the n-th."""
        self.wait_until(lambda: len(self.conns) >= n, timeout, f"{n} connections")
        return self.conns[n - 1]

    def wait_bytes(self, n: int, timeout: float = 5.0) -> bytes:
        """Block until at least ``n`` bytes were received in total; return all."""
        self.wait_until(lambda: len(self._all) >= n, timeout, f"{n} bytes (have {len(self._all)})")
        return self.data

    def wait_eof(self, index: int = -1, timeout: float = 5.0) -> SinkConnection:
        """Block until connection ``index`` got FIN or closed."""
        self.wait_until(lambda: self.conns and (self.conns[index].eof or self.conns[index].closed), timeout, "EOF")
        return self.conns[index]

    def push(self, data: bytes, index: int = -1) -> None:
        """Send ``data`` to connected client ``index`` (default: latest)."""
        c = self._conn(index)
        self.run(c.transport.write, bytes(data))

    def close_client(self, index: int = -1) -> None:
        """Gracefully close (FIN) connection ``index``."""
        c = self._conn(index)
        self.run(c.transport.close)

    def reset_client(self, index: int = -1) -> None:
        """Abort connection ``index`` with a TCP RST."""
        c = self._conn(index)
        self.run(_rst, c.transport)

    def pause_reading(self) -> None:
        """Stop reading on all (current and future) connections."""
        def do() -> None:
            self._paused = True
            for c in self.conns:
                if not c.closed:
                    c.transport.pause_reading()
        self.run(do)

    def resume_reading(self) -> None:
        """Resume reading on all connections."""
        def do() -> None:
            self._paused = False
            for c in self.conns:
                if not c.closed:
                    c.transport.resume_reading()
        self.run(do)


# --------------------------------------------------------------------- UDP echo
class UdpEchoServer(_Peer):
    """UDP echo server; every datagram is recorded in ``datagrams`` as
    ``(data, addr)`` and, unless ``silent=True``, sent back unchanged
    (``prefix`` bytes prepended if given).  ``send_to(data, addr)`` sends an
    unsolicited datagram."""

    def __init__(self, host: str = "127.0.0.1", *, silent: bool = False, prefix: bytes = b"") -> None:
        super().__init__(host, "udp-echo")
        self.silent = silent
        self.prefix = prefix
        self.datagrams: list[tuple[bytes, tuple]] = []
        self._transport: asyncio.DatagramTransport | None = None

    async def _setup(self) -> None:
        loop = asyncio.get_running_loop()
        peer = self

        sock = socket.socket(_family(self.host), socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        sock.setblocking(False)
        self._sock = sock

        class Echo(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                peer.datagrams.append((data, addr))
                if not peer.silent:
                    peer._send(peer.prefix + data, addr)
                peer.notify()

        self._transport, _ = await loop.create_datagram_endpoint(Echo, sock=sock)
        self.port = sock.getsockname()[1]

    def _send(self, data: bytes, addr: tuple) -> None:
        if data:
            self._transport.sendto(data, addr)  # type: ignore[union-attr]
        else:  # asyncio silently drops empty datagrams
            with contextlib.suppress(OSError):
                self._sock.sendto(b"", addr)

    async def _teardown(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send_to(self, data: bytes, addr: tuple) -> None:
        """Send one datagram from the server socket to ``addr``."""
        self.run(self._send, bytes(data), addr)

    def wait_datagrams(self, n: int = 1, timeout: float = 5.0) -> list[tuple[bytes, tuple]]:
        """Block until ``n`` datagrams were received; return the list."""
        return self.wait_until(lambda: len(self.datagrams) >= n and self.datagrams, timeout, f"{n} datagrams")


# ------------------------------------------------------------------------ SNTP
def _ntp_pack(t: float) -> bytes:
    secs = int(t) + NTP_EPOCH_OFFSET
    frac = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!II", secs & 0xFFFFFFFF, frac)


class SntpServer(_Peer):
    """SNTP server answering mode-3 requests with the host clock shifted by
    ``offset`` seconds (default +1000.0 s), so a client must report an offset
    of about ``offset``.  ``stratum`` (default 2), ``leap`` (0..3),
    ``silent=True`` (never answer, for timeout tests), ``kiss_code="RATE"``
    (answer with a stratum-0 kiss-o'-death), ``wrong_origin=True`` (corrupt
    the originate timestamp, which clients must reject).  ``requests``
    records ``(packet, addr)``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        offset: float = 1000.0,
        stratum: int = 2,
        leap: int = 0,
        silent: bool = False,
        kiss_code: str | None = None,
        wrong_origin: bool = False,
    ) -> None:
        super().__init__(host, "sntp")
        self.offset = offset
        self.stratum = stratum
        self.leap = leap
        self.silent = silent
        self.kiss_code = kiss_code
        self.wrong_origin = wrong_origin
        self.requests: list[tuple[bytes, tuple]] = []
        self._transport: asyncio.DatagramTransport | None = None

    def now(self) -> float:
        """The server's notion of current Unix time (host time + offset)."""
        return time.time() + self.offset

    def _reply(self, request: bytes) -> bytes | None:
        if len(request) < 48:
            return None
        vn = (request[0] >> 3) & 0x7
        mode = request[0] & 0x7
        if mode != 3:
            return None
        recv_ts = _ntp_pack(self.now())
        stratum = 0 if self.kiss_code else self.stratum
        refid = (self.kiss_code or "").encode("ascii")[:4].ljust(4, b"\0") if self.kiss_code else socket.inet_aton("127.0.0.1")
        origin = request[40:48]
        if self.wrong_origin:
            origin = bytes(b ^ 0xFF for b in origin)
        header = struct.pack(
            "!BBbb", ((self.leap & 3) << 6) | ((vn or 4) << 3) | 4, stratum, 6, -20
        ) + struct.pack("!II", 0x00000100, 0x00000200) + refid
        ref_ts = _ntp_pack(self.now() - 16)
        return header + ref_ts + origin + recv_ts + _ntp_pack(self.now())

    async def _setup(self) -> None:
        loop = asyncio.get_running_loop()
        peer = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                peer.requests.append((data, addr))
                peer.notify()
                if peer.silent:
                    return
                reply = peer._reply(data)
                if reply is not None:
                    peer._transport.sendto(reply, addr)  # type: ignore[union-attr]

        self._transport, _ = await loop.create_datagram_endpoint(
            Proto, local_addr=(self.host, 0), family=_family(self.host)
        )
        self.port = self._transport.get_extra_info("sockname")[1]

    async def _teardown(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def wait_requests(self, n: int = 1, timeout: float = 5.0) -> list[tuple[bytes, tuple]]:
        """Block until ``n`` requests arrived."""
        return self.wait_until(lambda: len(self.requests) >= n and self.requests, timeout, f"{n} requests")


# ------------------------------------------------------------------- multicast
class MulticastReceiver(_Peer):
    """Joins IPv4 multicast ``group`` on interface ``iface`` (default the
    loopback address) and records datagrams sent to ``group:port`` in
    ``datagrams`` as ``(data, addr)``.  ``port=0`` picks a free port (see
    ``.port``)."""

    def __init__(self, group: str = "239.255.42.99", port: int = 0, *, iface: str = "127.0.0.1") -> None:
        super().__init__(group, "mcast-rx")
        self.group = group
        self.iface = iface
        self.requested_port = port
        self.datagrams: list[tuple[bytes, tuple]] = []
        self._transport: asyncio.DatagramTransport | None = None

    async def _setup(self) -> None:
        loop = asyncio.get_running_loop()
        peer = self
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.group, self.requested_port))
        sock.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(self.group) + socket.inet_aton(self.iface),
        )
        sock.setblocking(False)

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                peer.datagrams.append((data, addr))
                peer.notify()

        self._transport, _ = await loop.create_datagram_endpoint(Proto, sock=sock)
        self.port = sock.getsockname()[1]

    async def _teardown(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def wait_datagrams(self, n: int = 1, timeout: float = 5.0) -> list[tuple[bytes, tuple]]:
        """Block until ``n`` datagrams were received."""
        return self.wait_until(lambda: len(self.datagrams) >= n and self.datagrams, timeout, f"{n} datagrams")


class MulticastSender:
    """Sends datagrams to IPv4 multicast ``group:port`` out of interface
    ``iface`` (default loopback) with TTL ``ttl``.  Context manager; ``.port``
    is the sender's local port."""

    def __init__(self, group: str, port: int, *, iface: str = "127.0.0.1", ttl: int = 1) -> None:
        self.group, self.dest_port = group, port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self.sock.bind((iface, 0))
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        """Send one datagram to the group."""
        self.sock.sendto(data, (self.group, self.dest_port))

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> "MulticastSender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
