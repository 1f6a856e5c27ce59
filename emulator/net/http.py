"""HTTP(S) client for emulated modules, built on aiohttp.

Used by the Quectel AT+QHTTP*, TI AT+Http* commands and OTA downloads.
Host names go through the world :class:`~atemu.net.dns.Resolver`
(overrides first, then the system resolver).  Bodies are streamed both ways:
request bodies may be async iterators of bytes, response bodies are read in
pieces with :meth:`HttpResponse.read` and never buffered whole.  Response
bodies are passed through raw (no transparent gzip decoding), as a module
would.  Every failure is a :class:`~atemu.net.errors.NetError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import ssl as _ssl
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

from atemu.net.dns import ip_family
from atemu.net.errors import NetError, classify

__all__ = ["HttpClient", "HttpResponse", "WorldResolver"]


# Per-request timeout handed to the resolver (aiohttp's own connect timeout
# is disabled so that a slow DNS surfaces as "dns_timeout", not "timeout").
_dns_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar("atemu_http_dns_timeout", default=None)


class _ResolveFailed(OSError):
    """Carries a resolver NetError through aiohttp (which only wraps OSError)."""

    def __init__(self, error: NetError) -> None:
        super().__init__(error.message)
        self.neterror = error


class WorldResolver(AbstractResolver):
    """aiohttp resolver that asks the world Resolver (overrides, then system)."""

    def __init__(self, resolver: Any, timeout: float = 10.0) -> None:
        self._resolver = resolver
        self.timeout = timeout

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Return the addresses of ``host`` (aiohttp's ResolveResult dicts)."""
        timeout = _dns_timeout.get() or self.timeout
        try:
            if hasattr(self._resolver, "resolve"):
                ips = await self._resolver.resolve(host, family=int(family), timeout=timeout)
            else:
                ips = [await self._resolver.resolve_one(host, timeout=timeout)]
        except NetError as err:
            raise _ResolveFailed(err) from err
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _ResolveFailed(classify(exc, f"cannot resolve {host}")) from exc
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=ip_family(ip) or socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in ips
        ]

    async def close(self) -> None:
        """Nothing to release."""


def _find_resolve_failure(exc: BaseException | None) -> NetError | None:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, _ResolveFailed):
            return exc.neterror
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, _ResolveFailed):
            return os_error.neterror
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _map_error(exc: BaseException, what: str) -> NetError:
    """Translate an aiohttp/asyncio/OS exception into a NetError."""
    if isinstance(exc, NetError):
        return exc
    resolved = _find_resolve_failure(exc)
    if resolved is not None:
        return resolved
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return NetError("tls_verify", f"{what}: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientSSLError):
        os_error = getattr(exc, "os_error", None)
        if isinstance(os_error, _ssl.SSLCertVerificationError):
            return NetError("tls_verify", f"{what}: {os_error}")
        return NetError("tls", f"{what}: {os_error or exc}")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
        return NetError("timeout", f"{what}: timed out")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return NetError("dns", f"{what}: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return classify(exc.os_error, what)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return NetError("closed", f"{what}: server closed the connection")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return NetError("closed", f"{what}: response body incomplete ({exc})")
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return NetError("reset", f"{what}: {exc}")
    if isinstance(exc, aiohttp.InvalidURL):
        return NetError("invalid", f"invalid URL {exc}")
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return NetError("invalid", f"not an http(s) URL: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        return NetError("other", f"{what}: {exc.status} {exc.message}")
    if isinstance(exc, aiohttp.ClientOSError):
        return classify(exc, what)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return NetError("closed", f"{what}: {exc}")
    return classify(exc, what)


async def _as_async_gen(source: Any) -> AsyncIterator[bytes]:
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield bytes(chunk)
    else:  # a bare async iterator (only __anext__)
        while True:
            try:
                chunk = await source.__anext__()
            except StopAsyncIteration:
                return
            yield bytes(chunk)


class HttpResponse:
    """An HTTP response whose body is read incrementally.

    ``status``, ``reason``, ``version`` ("1.1"), ``headers`` (list of
    ``(name, value)`` in wire order, duplicates kept), ``content_length``
    (int or None) and ``url`` (final URL) are available at once."""

    def __init__(self, response: aiohttp.ClientResponse, what: str) -> None:
        self._resp = response
        self._what = what
        self.status: int = response.status
        self.reason: str = response.reason or ""
        v = response.version
        self.version: str = f"{v.major}.{v.minor}" if v is not None else "1.1"
        self._raw_headers = list(response.raw_headers)
        self.headers: list[tuple[str, str]] = [
            (n.decode("latin-1"), val.decode("latin-1")) for n, val in self._raw_headers
        ]
        self.content_length: int | None = response.content_length
        self.url: str = str(response.url)
        self.bytes_read = 0

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (case-insensitive)."""
        lname = name.lower()
        for n, v in self.headers:
            if n.lower() == lname:
                return v
        return default

    def raw_header_bytes(self) -> bytes:
        """Status line and headers as sent on the wire, ending with an empty line."""
        lines = [f"HTTP/{self.version} {self.status} {self.reason}".encode("latin-1")]
        lines += [n + b": " + v for n, v in self._raw_headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def read(self, n: int = 65536) -> bytes:
        """Return up to ``n`` body bytes (b"" at the end); ``n < 0`` reads the rest.

        Raises NetError ("timeout" when no data within the request timeout,
        "closed" when the body ends early)."""
        try:
            data = await self._resp.content.read(n)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise _map_error(exc, self._what) from exc
        self.bytes_read += len(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        """Return exactly ``n`` bytes, or fewer only at the end of the body."""
        parts: list[bytes] = []
        remaining = n
        while remaining > 0:
            chunk = await self.read(remaining)
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    @property
    def at_eof(self) -> bool:
        """True once the whole body has been read."""
        return self._resp.content.at_eof()

    async def close(self) -> None:
        """Release the connection (drops any unread body)."""
        self._resp.close()

    async def __aenter__(self) -> "HttpResponse":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class HttpClient:
    """HTTP(S) client bound to a world resolver; one aiohttp session each."""

    def __init__(self, resolver: Any, *, user_agent: str | None = None) -> None:
        self.resolver = resolver
        self.user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=WorldResolver(self.resolver),
                use_dns_cache=False,  # world overrides may change at any time
            )
            headers = {"User-Agent": self.user_agent} if self.user_agent else None
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                headers=headers,
                skip_auto_headers=("Accept-Encoding",),
                trust_env=False,
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | AsyncIterator[bytes] | AsyncIterable[bytes] | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        timeout: float = 60,
        proxy: str | None = None,
        allow_redirects: bool = False,
    ) -> HttpResponse:
        """Send a request and return once the response headers arrived.

        ``ssl``: None = verify with system CAs, False = no verification, or
        an SSLContext.  ``timeout`` bounds the connect (incl. DNS and TLS),
        the wait for the response headers and each later body read.  A body
        given as an async iterator is streamed (chunked unless the caller
        sets Content-Length).  Raises NetError."""
        session = self._get_session()
        if headers is None:
            hdrs: CIMultiDict[str] = CIMultiDict()
        elif isinstance(headers, dict):
            hdrs = CIMultiDict(headers.items())
        else:
            hdrs = CIMultiDict(list(headers))
        data: Any = None
        if body is not None:
            if isinstance(body, (bytes, bytearray, memoryview)):
                data = bytes(body)
            elif isinstance(body, (AsyncIterable, AsyncIterator)) or hasattr(body, "__anext__"):
                data = _as_async_gen(body)
            else:
                raise NetError("invalid", f"unsupported body type {type(body).__name__}")
        # connect=None: DNS is bounded by the resolver (see _dns_timeout);
        # sock_connect covers TCP connect + TLS handshake per address.
        client_timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeout, sock_read=timeout)
        what = f"{method.upper()} {url}"
        token = _dns_timeout.set(timeout)
        try:
            resp = await session.request(
                method.upper(),
                url,
                headers=hdrs,
                data=data,
                ssl=True if ssl is None else ssl,
                timeout=client_timeout,
                proxy=proxy,
                allow_redirects=allow_redirects,
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            raise _map_error(exc, what) from exc
        finally:
            _dns_timeout.reset(token)
        return HttpResponse(resp, what)

    async def get(self, url: str, **kwargs: Any) -> HttpResponse:
        """Shortcut for ``request("GET", url, ...)``."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, body: Any = None, **kwargs: Any) -> HttpResponse:
        """Shortcut for ``request("POST", url, body=body, ...)``."""
        return await self.request("POST", url, body=body, **kwargs)

    async def close(self) -> None:
        """Close the aiohttp session and all pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> "HttpClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
