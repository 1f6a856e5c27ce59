"""A real aiohttp server for HTTP client tests (own thread and event loop).

Listens on 127.0.0.1 (port 0), optionally with TLS.  Routes:

* ``/get``            echo JSON: method, path, query, headers (wire order)
* ``/post``, ``/put`` read the body streaming; echo JSON: method, length,
  sha256, content_type, headers
* ``/big?size=N``     N bytes of :func:`pattern` (``chunked=1``: no length)
* ``/truncated?size=N`` announces N bytes, sends half, then drops the link
* ``/slow?delay=S``   waits S seconds, then answers "slow"
* ``/status/<code>``  answers with that status
* ``/redirect?to=P``  302 to P (default ``/get``)
* ``/file/<name>``    bytes registered with :meth:`HttpServer.add_file`

Every request is recorded (:attr:`HttpServer.requests`).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["HangingListener", "HttpServer", "RecordedRequest", "pattern"]

_BLOCK = bytes((i * 31 + 7) & 0xFF for i in range(4096))


def pattern(size: int, offset: int = 0) -> bytes:
    """The deterministic byte stream served by ``/big`` (slice at ``offset``)."""
    out = bytearray()
    pos = offset
    end = offset + size
    while pos < end:
        start = pos % len(_BLOCK)
        take = min(len(_BLOCK) - start, end - pos)
        out += _BLOCK[start : start + take]
        pos += take
    return bytes(out)


class HangingListener:
    """A 127.0.0.1 listener whose accept queue is full (context manager):
    further TCP connects to ``.port`` hang in SYN_SENT because the kernel
    drops their SYNs.  Used to test connect timeouts and aborts."""

    def __enter__(self) -> "HangingListener":
        self._srv = socket.socket()
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(0)
        self.port = self._srv.getsockname()[1]
        self._filler = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        return self

    def __exit__(self, *exc) -> None:
        self._filler.close()
        self._srv.close()


@dataclass
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str
    query_string: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    length: int = 0
    sha256: str = ""
    extra: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """First value of a request header (case-insensitive)."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


class HttpServer:
    """aiohttp server on 127.0.0.1 in a background thread (context manager)."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None, *, keep_body_limit: int = 8 << 20) -> None:
        self.ssl_context = ssl_context
        self.keep_body_limit = keep_body_limit
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.files: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- public -------------------------------------------------------------
    @property
    def scheme(self) -> str:
        """"http" or "https"."""
        return "https" if self.ssl_context else "http"

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """Absolute URL of ``path`` on this server (``host`` for the URL only)."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/file/<name>``; return that path."""
        self.files[name] = bytes(data)
        return f"/file/{name}"

    def last(self, path: str | None = None) -> RecordedRequest:
        """The most recent recorded request (optionally for ``path``)."""
        with self._lock:
            for r in reversed(self.requests):
                if path is None or r.path == path:
                    return r
        raise LookupError(f"no request recorded for {path!r}")

    def start(self) -> "HttpServer":
        """Start the server thread and wait until it listens."""
        self._thread = threading.Thread(target=self._main, name="test-http-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test HTTP server did not start")
        if self._error is not None:
            raise RuntimeError(f"test HTTP server failed: {self._error!r}")
        return self

    def stop(self) -> None:
        """Stop the server and join its thread."""
        if self._loop is None or self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            fut.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------
    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # noqa: BLE001
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/get", self._h_get)
        app.router.add_route("*", "/post", self._h_body)
        app.router.add_route("*", "/put", self._h_body)
        app.router.add_get("/big", self._h_big)
        app.router.add_get("/truncated", self._h_truncated)
        app.router.add_route("*", "/slow", self._h_slow)
        app.router.add_route("*", r"/status/{code:\d+}", self._h_status)
        app.router.add_route("*", "/redirect", self._h_redirect)
        app.router.add_get("/file/{name}", self._h_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _record(self, request: web.Request, **kw) -> RecordedRequest:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query_string=request.query_string,
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.raw_headers],
            **kw,
        )
        with self._lock:
            self.requests.append(rec)
        return rec

    async def _h_get(self, request: web.Request) -> web.Response:
        rec = self._record(request)
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": {k: request.query.getall(k) for k in request.query.keys()},
                "headers": rec.headers,
            }
        )

    async def _h_body(self, request: web.Request) -> web.Response:
        h = hashlib.sha256()
        length = 0
        kept = bytearray()
        async for chunk in request.content.iter_any():
            h.update(chunk)
            length += len(chunk)
            if len(kept) < self.keep_body_limit:
                kept += chunk[: self.keep_body_limit - len(kept)]
        rec = self._record(request, body=bytes(kept), length=length, sha256=h.hexdigest())
        return web.json_response(
            {
                "method": request.method,
                "length": length,
                "sha256": rec.sha256,
                "content_type": request.headers.get("Content-Type"),
                "chunked": "chunked" in request.headers.get("Transfer-Encoding", "").lower(),
                "headers": rec.headers,
            }
        )

    async def _h_big(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        size = int(request.query.get("size", "1024"))
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        if request.query.get("chunked") == "1":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = size
        await resp.prepare(request)
        sent = 0
        while sent < size:
            n = min(65536, size - sent)
            await resp.write(pattern(n, sent))
            sent += n
        await resp.write_eof()
        return resp

    async def _h_truncated(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        size = int(request.query.get("size", "100000"))
        resp = web.StreamResponse()
        resp.content_length = size
        await resp.prepare(request)
        await resp.write(pattern(size // 2))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def _h_slow(self, request: web.Request) -> web.Response:
        self._record(request)
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.Response(text="slow")

    async def _h_status(self, request: web.Request) -> web.Response:
        self._record(request)
        code = int(request.match_info["code"])
        if code < 200 or code in (204, 304):
            return web.Response(status=code)
        return web.Response(status=code, text=f"status {code}")

    async def _h_redirect(self, request: web.Request) -> web.Response:
        self._record(request)
        raise web.HTTPFound(request.query.get("to", "/get"))

    async def _h_file(self, request: web.Request) -> web.Response:
        self._record(request)
        name = request.match_info["name"]
        if name not in self.files:
            raise web.HTTPNotFound()
        return web.Response(body=self.files[name], content_type="application/octet-stream")
