"""HTTP client family on atemu.net.http.HttpClient (aiohttp) against real servers."""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import urljoin, urlsplit

from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.net.http import HttpClient
from atemu.net.sockets import TcpConnection
from atemu.net.tls import client_context
from atemu.profile import command

from .common import (E_HTTP, E_HTTP_BAD_INDEX, E_HTTP_NO_HEADER, E_HTTP_STATE, FAMILY, FORMAT, OS, RECV, S, count_error,
                     decode_data, encode_data, fail, flags_of, free_index, lookup, net_fail, nwp, param_error, parse_ip)

log = logging.getLogger("atemu.ti")

MAX_CLIENTS = 4
E_HTTP_TLS_DOWNGRADE = -3017      # HTTPClient_ETLSDOWNGRADEISFORBIDDEN of TI's HTTP client
RES_HEADERS = ("res_age", "res_allow", "res_cache_control", "res_connection", "res_content_encoding",
               "res_content_language", "res_content_length", "res_content_location", "res_content_range",
               "res_content_type", "res_date", "res_etag", "res_expires", "res_last_modified", "res_location",
               "res_proxy_auth", "res_retry_after", "res_server", "res_set_cookie", "res_trailer", "res_tx_encoding",
               "res_upgrade", "res_vary", "res_via", "res_www_auth", "res_warning")
REQ_HEADERS = ("req_accept", "req_accept_charset", "req_accept_encoding", "req_accept_language", "req_allow",
               "req_auth", "req_cache_control", "req_connection", "req_content_encoding", "req_content_language",
               "req_content_location", "req_content_type", "req_cookie", "req_date", "req_expect", "req_forwarded",
               "req_from", "req_host", "req_if_match", "req_if_modified_since", "req_if_none_match", "req_if_range",
               "req_if_unmodified_since", "req_origin", "req_proxy_auth", "req_range", "req_te", "req_tx_encoding",
               "req_upgrade", "req_user_agent", "req_via", "req_warning")
SPECIAL = {"auth": "Authorization", "proxy_auth": "Proxy-Authorization", "te": "TE", "tx_encoding": "Transfer-Encoding",
           "www_auth": "WWW-Authenticate", "etag": "ETag"}
METHODS = {"get": "GET", "post": "POST", "head": "HEAD", "options": "OPTIONS", "put": "PUT", "del": "DELETE",
           "connect": "CONNECT"}


def header_name(option: str) -> str:
    base = option[4:]
    if option == "res_proxy_auth":
        return "Proxy-Authenticate"
    if base in SPECIAL:
        return SPECIAL[base]
    return "-".join(w.capitalize() for w in base.split("_"))


class HttpMixin:
    def http_client(self, idx: int) -> dict:
        return lookup(self.http, idx, E_HTTP_BAD_INDEX, "HTTP client")

    async def http_release(self, c: dict) -> None:
        resp, c["resp"] = c.get("resp"), None
        if resp is not None:
            await resp.close()
        task, c["chunk_task"] = c.get("chunk_task"), None
        if task is not None and not task.done():
            task.cancel()
        c["chunk_q"] = None

    async def http_close_all(self) -> None:
        for c in self.http.values():
            await self.http_release(c)
            c["connected"] = False
            await c["client"].close()

    # ---- commands -------------------------------------------------------------------------------
    @command("+HttpCreate", Form.EXEC, family="http", doc="Create an HTTP client: +httpcreate:<index>")
    @nwp
    async def at_httpcreate(self, ctx: Ctx) -> None:
        i = free_index(self.http, MAX_CLIENTS, E_HTTP, "HTTP client")
        self.http[i] = {"client": HttpClient(self.module.resolver, user_agent="SimpleLink HTTP Client"),
                        "connected": False, "base": None, "ssl": None, "flags": [], "persist": {}, "once": {},
                        "resp": None, "redirect": 1, "tls_downgrade": 0, "chunk_q": None, "chunk_task": None,
                        "res_filter": None, "res_kept": None}
        ctx.info(f"+httpcreate:{i}")

    @command("+HttpDestroy", Form.WRITE, Int("index", 0, 255), family="http", doc="Destroy an HTTP client")
    @nwp
    async def at_httpdestroy(self, ctx: Ctx, idx: int) -> None:
        c = self.http_client(idx)
        await self.http_release(c)
        await c["client"].close()
        self.http.pop(idx)

    @command("+HttpConnect", Form.WRITE, Int("index", 0, 255), S("host", min_len=1, max_len=255), OS("flags"),
             OS("private_key"), OS("certificate"), OS("ca"), family="http",
             doc="Connect to http[s]://host[:port] (TCP/TLS really opened; flags ignore_proxy|host_exist)")
    @nwp
    async def at_httpconnect(self, ctx: Ctx, idx: int, host: str, flags, key, cert, ca) -> None:
        c = self.http_client(idx)
        fl = flags_of(flags, ("ignore_proxy", "host_exist"), "flag")
        if c["connected"]:
            raise fail(E_HTTP_STATE, "already connected")
        self.need_ip()
        url = host if "://" in host else "http://" + host
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise param_error("host must be [http[s]://]name[:port]")
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise param_error("bad port") from None
        sslctx = None
        if u.scheme == "https":
            try:
                sslctx = client_context(ca=self.fs_read_material(ca) if ca else None,
                                        cert=self.fs_read_material(cert) if cert else None,
                                        key=self.fs_read_material(key) if key else None,
                                        verify=bool(ca), check_hostname=bool(ca))
            except NetError as e:
                raise net_fail(e) from None
        proxy = None if "ignore_proxy" in fl else self.http_proxy
        target_host, target_port = (u.hostname, port)
        probe_ssl = sslctx
        if proxy is not None:
            pu = urlsplit(proxy)
            target_host, target_port, probe_ssl = pu.hostname, pu.port, None
        try:
            conn = await TcpConnection.open(target_host, target_port, ssl=probe_ssl, resolver=self.module.resolver,
                                            timeout=10.0, server_hostname=u.hostname if probe_ssl else None)
        except NetError as e:
            raise net_fail(e) from None
        conn.close()
        netloc = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
        c.update(connected=True, base=f"{u.scheme}://{netloc}:{port}", ssl=sslctx if sslctx else None,
                 flags=fl, proxy=proxy)

    @command("+HttpDisconnect", Form.WRITE, Int("index", 0, 255), family="http", doc="Disconnect the client")
    @nwp
    async def at_httpdisconnect(self, ctx: Ctx, idx: int) -> None:
        c = self.http_client(idx)
        if not c["connected"]:
            raise fail(E_HTTP_STATE, "not connected")
        await self.http_release(c)
        await c["client"].close()
        c["connected"] = False

    def request_headers(self, c: dict) -> list:
        """The request headers of the next request (the not-persistent ones are used once). The
        response filter is applied to this request's response, then loses its not-persistent names."""
        merged = dict(c["persist"])
        merged.update(c["once"])
        c["once"] = {}
        flt = c["res_filter"]
        c["res_kept"] = None if flt is None else set(flt)
        if flt is not None:
            c["res_filter"] = {k: p for k, p in flt.items() if p}
        return list(merged.items())

    @command("+HttpSendReq", Form.WRITE, Int("index", 0, 255), Keyword("method", values={k: v for k, v in METHODS.items()}),
             S("uri", min_len=1, max_len=2048), OS("flags"), Int("format", 0, 1, optional=True, default=0),
             Int("length", 0, 65535, optional=True, default=0), Raw("data", optional=True), family="http",
             doc="Send a request: +httpsendreq:<status> (chunk_start/continued chunks: +httpsendreq:0)")
    @nwp
    async def at_httpsendreq(self, ctx: Ctx, idx: int, method: str, uri: str, flags, fmt: int, length: int, data) -> None:
        c = self.http_client(idx)
        fl = flags_of(flags, ("chunk_start", "chunk_end", "drop_body"), "flag")
        if not c["connected"]:
            raise fail(E_HTTP_STATE, "not connected")
        body = decode_data(fmt, data, length) if (length or data) else b""
        if method in ("POST", "PUT") and data is None and "chunk_start" not in fl and c["chunk_q"] is None:
            raise count_error("POST/PUT need format, length and data")
        if c["chunk_q"] is not None:
            # a chunked request body in progress: this call adds a chunk
            q = c["chunk_q"]
            if body:
                q.put_nowait(body)
            if "chunk_end" not in fl:
                ctx.info("+httpsendreq:0")
                return
            q.put_nowait(None)
            task = c["chunk_task"]
            c["chunk_q"] = c["chunk_task"] = None
            try:
                resp = await task
            except NetError as e:
                raise net_fail(e) from None
            await self.finish_response(ctx, c, resp, fl)
            return
        await self.http_release(c)
        url = c["base"] + (uri if uri.startswith("/") else "/" + uri)
        headers = self.request_headers(c)
        kwargs = dict(headers=headers, ssl=c["ssl"] if c["ssl"] is not None else None, timeout=30,
                      proxy=c.get("proxy"), allow_redirects=bool(c["redirect"]))
        if c["ssl"] is None and c["base"].startswith("https"):
            kwargs["ssl"] = False
        if "chunk_start" in fl:
            q: asyncio.Queue = asyncio.Queue()
            if body:
                q.put_nowait(body)

            async def gen():
                while True:
                    item = await q.get()
                    if item is None:
                        return
                    yield item

            c["chunk_q"] = q
            c["chunk_task"] = asyncio.ensure_future(c["client"].request(method, url, body=gen(), **kwargs))
            ctx.info("+httpsendreq:0")
            return
        try:
            resp = await self.send_following(c, method, url, body if method not in ("GET", "HEAD") or body else None, kwargs)
        except NetError as e:
            raise net_fail(e) from None
        await self.finish_response(ctx, c, resp, fl)

    async def send_following(self, c: dict, method: str, url: str, body, kwargs: dict):
        """One request. An https client that may not be redirected to plain http (HttpSetOpt
        redirect_tls_downgrade 0, the default) follows redirects itself and refuses such a hop with
        -3017, as TI's HTTP client does; otherwise aiohttp follows them."""
        guard = kwargs["allow_redirects"] and c["base"].startswith("https") and not c["tls_downgrade"]
        args = dict(kwargs, allow_redirects=kwargs["allow_redirects"] and not guard)
        for _ in range(10):
            resp = await c["client"].request(method, url, body=body, **args)
            location = resp.header("Location")
            if not guard or resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp
            await resp.close()
            url = urljoin(url, location)
            if urlsplit(url).scheme != "https":
                raise fail(E_HTTP_TLS_DOWNGRADE, "redirect from https to http (redirect_tls_downgrade is 0)")
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
        return resp

    async def finish_response(self, ctx: Ctx, c: dict, resp, fl) -> None:
        c["resp"] = resp
        if "drop_body" in fl:
            try:
                while await resp.read(65536):
                    pass
            except NetError:
                pass
        ctx.info(f"+httpsendreq:{resp.status}")

    @command("+HttpReadResBody", Form.WRITE, Int("index", 0, 255), *RECV, family="http",
             doc="Read the response body in chunks: +httpreadresbody:<index>,<more flag>,<format>,<length>,<body>")
    @nwp
    async def at_httpreadresbody(self, ctx: Ctx, idx: int, fmt: int, length: int) -> None:
        c = self.http_client(idx)
        resp = c["resp"]
        if resp is None:
            raise fail(E_HTTP_STATE, "no response to read")
        try:
            body = await resp.readexactly(length)
        except NetError as e:
            raise net_fail(e) from None
        more = 0 if resp.at_eof else 1
        ctx.info(f"+httpreadresbody:{idx},{more},".encode() + encode_data(fmt, body))

    @command("+HttpSetHeader", Form.WRITE, Int("index", 0, 255), Keyword("option", values={k: k for k in REQ_HEADERS + RES_HEADERS}),
             Keyword("flags", values={"not_persistent": 0, "persistent": 1}), Int("format", 0, 1, optional=True, default=0),
             Int("length", 0, 4096, optional=True, default=0), Raw("data", optional=True), family="http",
             doc="Set (or with no data remove) a request header")
    @nwp
    async def at_httpsetheader(self, ctx: Ctx, idx: int, option: str, persistent: int, fmt: int, length: int, data) -> None:
        c = self.http_client(idx)
        if option.startswith("res_"):
            # a response header: the response filter keeps only the named ones (all while there is no filter)
            if data is not None or length:
                decode_data(fmt, data, length)          # validated, not used
            flt = c["res_filter"] if c["res_filter"] is not None else {}
            flt[option] = bool(persistent)
            c["res_filter"] = flt
            return
        name = header_name(option)
        value = decode_data(fmt, data, length) if (data is not None or length) else b""
        for table in (c["persist"], c["once"]):
            table.pop(name, None)
        if value:
            text = value.decode("latin-1")
            if "\r" in text or "\n" in text:
                raise param_error("header values cannot contain CR or LF")
            (c["persist"] if persistent else c["once"])[name] = text

    @command("+HttpGetHeader", Form.WRITE, Int("index", 0, 255), Keyword("option", values={k: k for k in RES_HEADERS + REQ_HEADERS}),
             FORMAT, Int("length", 1, 4096), family="http",
             doc="Read a response header: +httpgetheader:<index>,<format>,<length>,<data>")
    @nwp
    async def at_httpgetheader(self, ctx: Ctx, idx: int, option: str, fmt: int, length: int) -> None:
        c = self.http_client(idx)
        if not option.startswith("res_"):
            raise fail(E_HTTP, "only response headers can be read")
        resp = c["resp"]
        if resp is None:
            raise fail(E_HTTP_STATE, "no response")
        val = resp.header(header_name(option))
        if c["res_kept"] is not None and option not in c["res_kept"]:
            val = None                                   # filtered out (HttpSetHeader res_*)
        if val is None:
            raise fail(E_HTTP_NO_HEADER, f"no {header_name(option)} header in the response")
        ctx.info(f"+httpgetheader:{idx},".encode() + encode_data(fmt, val.encode("latin-1")[:length]))

    @command("+HttpSetOpt", Form.WRITE, Int("index", 0, 255),
             Keyword("option", values={k: k for k in ("redirect_feature", "res_filter_clear", "redirect_tls_downgrade")}),
             Int("value", 0, 1), family="http", doc="redirect_feature, res_filter_clear, redirect_tls_downgrade")
    @nwp
    async def at_httpsetopt(self, ctx: Ctx, idx: int, option: str, value: int) -> None:
        c = self.http_client(idx)
        if option == "redirect_feature":
            c["redirect"] = value
        elif option == "res_filter_clear" and value == 1:
            c["res_filter"] = None                     # every response header is kept again
        elif option == "redirect_tls_downgrade":
            c["tls_downgrade"] = value
        elif value != 1:
            raise param_error("res_filter_clear takes 1")

    @command("+HttpSetProxy", Form.WRITE, FAMILY, Int("port", 0, 65535), S("address"), family="http",
             doc="Global HTTP proxy for clients connected afterwards (port 0 clears it)")
    @nwp
    async def at_httpsetproxy(self, ctx: Ctx, fam: int, port: int, address: str) -> None:
        ip = parse_ip(address, fam)
        if port == 0:
            self.http_proxy = None
            return
        self.http_proxy = f"http://{ip if fam == 4 else '[' + ip + ']'}:{port}"
