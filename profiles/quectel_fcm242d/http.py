"""Quectel FCM242D / FGM842D: HTTP(S) client commands (AT+QHTTP*), mixin ``QuectelHttp``.

One HTTP(S) session at a time, as on the module. Requests really go out through
``atemu.net.http.HttpClient`` (aiohttp); ``https://`` URLs use the QSSLCFG context chosen
with AT+QHTTPCFG="sslctxid" (default 1). Bodies are streamed both ways: a POST/PUT body is
forwarded to the server in chunks while the host types it, and AT+QHTTPREAD copies the response
to the UART in chunks, so neither is ever held whole in memory.

Requires Wi-Fi (station connected): otherwise GET/POST/PUT answer ``+CME ERROR: 706``.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from atemu.grammar import Data, Form, Int, Rest, Str, UrcSpec
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.profile import CmdError, Profile, command

log = logging.getLogger("atemu.quectel.http")

CHUNK = 16384
POST_MAX = 1024000

DEVIATIONS_HTTP = [
    "H1 (item 33): there is no <request_header> setting, so POST/PUT <data_length> is always the body length; the "
    "request line and headers are built by the module (custom headers from QHTTPCFG \"header\"). "
    "AT+QHTTPREADFILE is referenced by the manual but not documented, so it is not implemented.",
    "H2 (item 33): \"rspout/auto\" 1 outputs the response body unsolicited as +QHTTPURC: \"recv\",<len><CR><LF><len "
    "raw bytes> chunks right after the +QHTTPGET/POST/PUT URC; QHTTPREAD then answers +CME ERROR: 703.",
    "H3 (no item): HTTP status codes are reported as they come (no table in the manual, item 35).",
    "H4 (item 45): with \"rsp/header\" 1 QHTTPREAD outputs the status line and headers as received, then a blank "
    "line, then the body (E10/E13 layout).",
    "H5 (no item): when the <input_time> of POST/PUT expires the command ends with the line +QHTTPPOST: 720 "
    "(+QHTTPPUT: 720) instead of OK, as the manual describes; the request is aborted and the partial body never "
    "reaches the server as a complete request.",
    "H6 (no item): CONNECT is printed once the module has connected and sent the request header (so a connect "
    "failure answers +CME ERROR: <err> with no CONNECT); POST/PUT bodies are sent with Content-Length <data_length>.",
    "H7 (no item): error mapping: empty URL 708, malformed URL / not http(s) 707, busy 703, no Wi-Fi or "
    "unreachable 706, DNS 710, connect refused/TLS failure 712, no response within <rsptime> 722, QHTTPREAD with "
    "no response 705, gap longer than <wait_time> while reading 721, body cut short 715.",
    "H8 (no item): QHTTPCFG \"header\",\"Name: value\" adds (or replaces) a custom header; \"header\",\"Name\" "
    "removes it; \"header\" alone lists them. The default Content-Type of POST/PUT is "
    "application/x-www-form-urlencoded. \"form/option\" wraps POST/PUT bodies in one multipart/form-data part "
    "(the part's bytes are the <data_length> body). \"auth\" adds HTTP Basic authorization.",
    "H9 (no item): a key with no value queries it: +QHTTPCFG: \"<key>\",<value>.",
    "H10 (item 7): malformed, missing or out-of-range parameters of QHTTPGET/POST/PUT/READ answer "
    "+CME ERROR: 724 (Invalid parameter), as their tables say; QHTTPCFG answers a bare ERROR for bad values "
    "(its table gives no error form).",
    "H12: losing Wi-Fi while a request waits for its response gives +QHTTPGET/POST/PUT: 706; while QHTTPREAD "
    "outputs a body it ends with OK then +QHTTPREAD: 706.",
    "H11: https:// uses QSSLCFG context <sslctxid> exactly as AT+QSSLOPEN does (seclevel 0 no verification, 1 "
    "server chain + host name, 2 also the client certificate); the host name is always sent as SNI. A context "
    "that cannot be built (e.g. seclevel 1 without cacert) answers +CME ERROR: 712.",
]

URCS_HTTP = [
    UrcSpec("+QHTTPGET", "+QHTTPGET: <err>[,<httprspcode>[,<content_length>]]", "result of AT+QHTTPGET", "http"),
    UrcSpec("+QHTTPPOST", "+QHTTPPOST: <err>[,<httprspcode>[,<content_length>]]", "result of AT+QHTTPPOST", "http"),
    UrcSpec("+QHTTPPUT", "+QHTTPPUT: <err>[,<httprspcode>[,<content_length>]]", "result of AT+QHTTPPUT", "http"),
    UrcSpec("+QHTTPREAD", "+QHTTPREAD: <err>", "end of the AT+QHTTPREAD output", "http"),
    UrcSpec("+QHTTPURC", '+QHTTPURC: "recv",<length><CR><LF><data> | +QHTTPURC: "closed"',
            "response data (rspout/auto) / session closed (closed/ind)", "http"),
]

_KIND_TO_ERR = {
    "dns": 710, "dns_timeout": 710, "refused": 712, "unreachable": 706, "reset": 715, "tls": 712,
    "tls_verify": 712, "closed": 715, "timeout": 722, "invalid": 707, "addrinuse": 711, "perm": 711,
}


@dataclass
class _HttpState:
    url: str = ""
    headers: list = field(default_factory=list)     # [(name, value)]
    auth: str = ""
    sslctxid: int = 1
    rsp_header: int = 0
    auto_out: int = 0
    closed_ind: int = 0
    form: tuple[str, str, str] | None = None
    busy: bool = False
    response: object | None = None
    task: asyncio.Task | None = None


def _cfg_value_command(sub: str, attr: str, param: Int):
    """The handler of a one-value AT+QHTTPCFG key (H9): no value queries it, a value sets it."""
    @command("+QHTTPCFG", Form.WRITE, param, sub=sub, family="http")
    async def handler(self, ctx: Ctx, value):
        if value is None:
            ctx.info(f'+QHTTPCFG: "{sub}",{getattr(self.http, attr)}')
        else:
            setattr(self.http, attr, value)
    return handler


class QuectelHttp(Profile):
    """AT+QHTTPCFG/QHTTPGET/QHTTPPOST/QHTTPPUT/QHTTPREAD/QHTTPSTOP (mixin)."""

    def __init__(self, module):
        super().__init__(module)
        self.http = _HttpState()
        self._http_client = None
        hooks = getattr(self, "_teardown_hooks", None)
        if hooks is None:
            hooks = self._teardown_hooks = []
        hooks.append(self._http_teardown)

    def http_snapshot(self) -> dict:
        """Live HTTP state for ``snapshot()`` (JSON-able)."""
        h = self.http
        r = h.response
        return {"url": h.url, "busy": h.busy, "sslctxid": h.sslctxid,
                "response": None if r is None else {"status": r.status, "content_length": r.content_length,
                                                    "read": r.bytes_read}}

    # ---- helpers --------------------------------------------------------------------------------
    def _http_client_get(self):
        if self._http_client is None:
            from atemu.net.http import HttpClient
            self._http_client = HttpClient(self.module.resolver, user_agent="QUECTEL_MODULE")
        return self._http_client

    async def _http_teardown(self) -> None:
        await self._http_reset()
        if self._http_client is not None:
            try:
                await self._http_client.close()
            except Exception:  # pragma: no cover - defensive
                pass
            self._http_client = None

    async def _http_reset(self) -> None:
        h = self.http
        t = h.task
        h.task = None
        if t is not None and not t.done() and t is not asyncio.current_task():
            t.cancel()
        r = h.response
        h.response = None
        if r is not None:
            try:
                await r.close()
            except Exception:  # pragma: no cover - defensive
                pass
        h.busy = False

    @staticmethod
    def _http_err(code: int) -> CmdError:
        return CmdError("failed", code=code, message=f"HTTP error {code}")

    def _http_check_request(self) -> tuple[str, str]:
        h = self.http
        if h.busy:
            raise self._http_err(703)
        if not h.url:
            raise self._http_err(708)
        parts = urlsplit(h.url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise self._http_err(707)
        fn = getattr(self, "wifi_connected", None)
        if fn is not None and not fn():
            raise self._http_err(706)
        return parts.scheme.lower(), parts.hostname

    def _http_ssl(self, scheme: str, host: str):
        if scheme != "https":
            return None
        contexts = getattr(self, "ssl_ctx", None)
        if contexts is not None:
            try:
                return contexts[self.http.sslctxid].client_context(host)
            except (KeyError, IndexError):
                pass
        from atemu.net.tls import client_context
        return client_context(verify=False)

    def _http_headers(self, method: str, extra: list | None = None) -> list[tuple[str, str]]:
        h = self.http
        hdrs = list(h.headers)
        names = {n.lower() for n, _ in hdrs}
        if h.auth and "authorization" not in names:
            hdrs.append(("Authorization", "Basic " + base64.b64encode(h.auth.encode()).decode()))
        for n, v in extra or []:
            if n.lower() not in names:
                hdrs.append((n, v))
        return hdrs

    @staticmethod
    def _http_code(e: NetError) -> int:
        return _KIND_TO_ERR.get(e.kind, 701)

    def _http_done(self, verb: str, resp) -> None:
        """Report a response (URC) and start auto output if configured."""
        h = self.http
        h.response = resp
        line = f"+QHTTP{verb}: 0,{resp.status}"
        if resp.content_length is not None:
            line += f",{resp.content_length}"
        self.module.urc(line)
        if h.auto_out:
            h.task = self.module.spawn(self._http_auto_out(resp))
        elif h.closed_ind and resp.at_eof:
            self.module.urc('+QHTTPURC: "closed"')

    async def _http_auto_out(self, resp) -> None:
        h = self.http
        try:
            if h.rsp_header:
                hdr = resp.raw_header_bytes()
                self.module.urc(f'+QHTTPURC: "recv",{len(hdr)}', hdr)
            while True:
                chunk = await resp.read(CHUNK)
                if not chunk:
                    break
                self.module.urc(f'+QHTTPURC: "recv",{len(chunk)}', chunk)
                await self.module.drain_output()
        except NetError as e:
            log.info("HTTP auto output stopped: %s", e)
        finally:
            if h.response is resp:
                h.response = None
                h.task = None
                h.busy = False
            await resp.close()
            if h.closed_ind:
                self.module.urc('+QHTTPURC: "closed"')

    # ---- AT+QHTTPCFG ------------------------------------------------------------------------------
    _CFG_TEST = "\r\n".join([
        '+QHTTPCFG: "url",<urlstring>',
        '+QHTTPCFG: "header",<name:value>',
        '+QHTTPCFG: "auth",<username:password>',
        '+QHTTPCFG: "sslctxid",(0-5)',
        '+QHTTPCFG: "rsp/header",(0,1)',
        '+QHTTPCFG: "rspout/auto",(0,1)',
        '+QHTTPCFG: "closed/ind",(0,1)',
        '+QHTTPCFG: "form/option",<name>,<file_name>,<content_type>',
    ])

    @command("+QHTTPCFG", Form.WRITE, Str("URL_string", quoted=None, max_len=700, optional=True), sub="url",
             family="http", doc="Configure HTTP(S): URL, headers, auth, SSL context, output options", test=_CFG_TEST)
    async def qhttpcfg_url(self, ctx: Ctx, url):
        if url is None:
            ctx.info(f'+QHTTPCFG: "url","{self.http.url}"')
            return
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise CmdError("param", message="URL must be http:// or https:// with a host")
        self.http.url = url

    @command("+QHTTPCFG", Form.WRITE, Str("header_value", quoted=None, max_len=512, optional=True), sub="header",
             family="http")
    async def qhttpcfg_header(self, ctx: Ctx, value):
        h = self.http
        if value is None:
            for n, v in h.headers:
                ctx.info(f'+QHTTPCFG: "header","{n}: {v}"')
            return
        if ":" in value:
            name, _, val = value.partition(":")
            name, val = name.strip(), val.strip()
            if not name:
                raise CmdError("param", message="header name missing")
            h.headers = [(n, v) for n, v in h.headers if n.lower() != name.lower()] + [(name, val)]
        else:
            name = value.strip()
            h.headers = [(n, v) for n, v in h.headers if n.lower() != name.lower()]

    @command("+QHTTPCFG", Form.WRITE, Str("username_password", quoted=None, max_len=256, optional=True), sub="auth",
             family="http")
    async def qhttpcfg_auth(self, ctx: Ctx, value):
        if value is None:
            ctx.info(f'+QHTTPCFG: "auth","{self.http.auth}"')
            return
        if value and ":" not in value:
            raise CmdError("param", message="auth must be username:password")
        self.http.auth = value

    qhttpcfg_sslctx = _cfg_value_command("sslctxid", "sslctxid", Int("sslctxID", 0, 5, optional=True))
    qhttpcfg_rsphdr = _cfg_value_command("rsp/header", "rsp_header", Int("response_header", 0, 1, optional=True))
    qhttpcfg_auto = _cfg_value_command("rspout/auto", "auto_out", Int("auto_outrsp", 0, 1, optional=True))
    qhttpcfg_closed = _cfg_value_command("closed/ind", "closed_ind", Int("closedind", 0, 1, optional=True))

    @command("+QHTTPCFG", Form.WRITE, Str("name", quoted=None, max_len=128, optional=True),
             Str("file_name", quoted=None, max_len=128, optional=True),
             Str("content_type", quoted=None, max_len=128, optional=True), sub="form/option", family="http")
    async def qhttpcfg_form(self, ctx: Ctx, name, file_name, ctype):
        h = self.http
        if name is None:
            if h.form:
                ctx.info('+QHTTPCFG: "form/option",' + ",".join(f'"{v}"' for v in h.form))
            return
        if name == "":
            h.form = None
            return
        if file_name is None or ctype is None:
            raise CmdError("param", message="form/option needs name, file name and content type")
        h.form = (name, file_name, ctype)

    # ---- AT+QHTTPGET --------------------------------------------------------------------------------
    @command("+QHTTPGET", Form.EXEC, family="http")
    @command("+QHTTPGET", Form.WRITE, Rest("rsptime"), family="http", doc="Send a GET request",
             test="+QHTTPGET: (1-65535)")
    async def qhttpget(self, ctx: Ctx, args: str | None = None):
        rsptime = self._http_seconds(args)
        tls = await self._http_prepare()
        h = self.http
        h.busy = True
        ctx.ok()
        h.task = self.module.spawn(self._http_get_task(h.url, tls, rsptime))

    async def _http_get_task(self, url: str, tls, rsptime: int) -> None:
        req = self._http_client_get().request("GET", url, headers=self._http_headers("GET"), ssl=tls, timeout=rsptime)
        await self._http_finish("GET", req)

    async def _http_wifi_guard(self, fut: asyncio.Future):
        """Await a request; if the station loses its AP meanwhile, abandon it with NetError 'unreachable'."""
        fut = asyncio.ensure_future(fut)
        wifi = getattr(self, "wifi_connected", None)
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=0.25)
                if done:
                    return fut.result()
                if wifi is not None and not wifi():
                    raise NetError("unreachable", "Wi-Fi lost while waiting for the response")
        finally:
            if not fut.done():
                fut.cancel()
                fut.add_done_callback(lambda t: t.cancelled() or t.exception())

    # ---- AT+QHTTPPOST / AT+QHTTPPUT ----------------------------------------------------------------
    @command("+QHTTPPOST", Form.WRITE, Rest("data_length,input_time,rsptime"), family="http",
             doc="Send a POST request, body typed after CONNECT", test="+QHTTPPOST: (1-1024000),(1-65535),(1-65535)")
    async def qhttppost(self, ctx: Ctx, args: str):
        return await self._http_send(ctx, "POST", args)

    @command("+QHTTPPUT", Form.WRITE, Rest("data_length,input_time,rsptime"), family="http",
             doc="Send a PUT request, body typed after CONNECT", test="+QHTTPPUT: (1-1024000),(1-65535),(1-65535)")
    async def qhttpput(self, ctx: Ctx, args: str):
        return await self._http_send(ctx, "PUT", args)

    def _http_ints(self, args: str, lo: int, hi: int, first_max: int = 65535) -> list[int]:
        """Parse the comma-separated integer arguments of GET/POST/PUT/READ; +CME ERROR: 724 if malformed."""
        parts = [a.strip() for a in args.split(",")]
        if not lo <= len(parts) <= hi:
            raise self._http_err(724)
        out = []
        for i, a in enumerate(parts):
            if not a.isascii() or not a.isdigit():
                raise self._http_err(724)
            v = int(a)
            if not 1 <= v <= (first_max if i == 0 else 65535):
                raise self._http_err(724)
            out.append(v)
        return out

    async def _http_prepare(self):
        """Before GET/POST/PUT: check the URL and Wi-Fi, build the TLS context (712 when it cannot be built),
        drop the previous response. Returns the ``ssl.SSLContext`` or None."""
        scheme, host = self._http_check_request()
        try:
            tls = self._http_ssl(scheme, host)
        except NetError:
            raise self._http_err(712) from None
        await self._http_reset()
        return tls

    def _http_seconds(self, args: str | None) -> int:
        """The one optional time argument of GET (<rsptime>) and READ (<wait_time>): default 60 s."""
        return 60 if args is None else self._http_ints(args, 1, 1)[0]

    async def _http_send(self, ctx: Ctx, verb: str, args: str):
        vals = self._http_ints(args, 1, 3, POST_MAX)
        if len(vals) == 2:
            raise self._http_err(724)           # <input_time> and <rsptime> come as a pair
        length = vals[0]
        input_time, rsptime = (vals[1], vals[2]) if len(vals) == 3 else (60, 60)
        tls = await self._http_prepare()
        h = self.http
        prefix = suffix = b""
        ctype = "application/x-www-form-urlencoded"
        if h.form:
            boundary = "----QuectelFormBoundary" + uuid.uuid4().hex[:16]
            name, fname, pctype = h.form
            prefix = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{fname}\"\r\n"
                      f"Content-Type: {pctype}\r\n\r\n").encode()
            suffix = f"\r\n--{boundary}--\r\n".encode()
            ctype = f"multipart/form-data; boundary={boundary}"
        queue: asyncio.Queue = asyncio.Queue(maxsize=4)
        started = asyncio.Event()

        async def body():
            started.set()
            if prefix:
                yield prefix
            while True:
                chunk = await queue.get()
                if chunk is None:
                    break
                yield chunk
            if suffix:
                yield suffix

        headers = self._http_headers(verb, [("Content-Type", ctype)])
        headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
        headers.append(("Content-Length", str(length + len(prefix) + len(suffix))))
        h.busy = True
        url = h.url
        req = asyncio.ensure_future(self._http_client_get().request(verb, url, headers=headers, body=body(), ssl=tls,
                                                                    timeout=rsptime))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({req, waiter}, timeout=125, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not started.is_set():
            h.busy = False
            if req.done():
                exc = req.exception()
                code = self._http_code(exc) if isinstance(exc, NetError) else 701
                if exc is None:  # pragma: no cover - a response before any body was asked for
                    await req.result().close()
            else:
                req.cancel()
                code = 722
            raise self._http_err(code)
        ctx.info("CONNECT")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + input_time
        remaining = length
        try:
            while remaining > 0:
                ev = await ctx.read_data(min(CHUNK * 4, remaining), timeout=max(0.0, deadline - loop.time()))
                payload = ev.payload
                remaining -= len(payload)
                if payload and not req.done():
                    put = asyncio.ensure_future(queue.put(payload))
                    done, _ = await asyncio.wait({put, req}, return_when=asyncio.FIRST_COMPLETED)
                    if put not in done:
                        put.cancel()
                # once the request has ended (early answer, server gone) the rest of the body is
                # still taken from the UART, so that none of it is mistaken for commands
                if not isinstance(ev, Data) or ev.reason == "timeout":
                    break
        except BaseException:
            req.cancel()
            h.busy = False
            raise
        if remaining > 0:
            req.cancel()
            h.busy = False
            ctx.final(f"+QHTTP{verb}: 720")
            return None
        if not req.done():
            await queue.put(None)
        ctx.ok()
        h.task = self.module.spawn(self._http_finish(verb, req))
        return None

    async def _http_finish(self, verb: str, req) -> None:
        """Wait for the response of a sent request (GET/POST/PUT), then +QHTTP<verb>: and keep it for QHTTPREAD."""
        h = self.http
        try:
            resp = await self._http_wifi_guard(req)   # cancels the request when it is itself cancelled
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - NetError normally; anything else is 701
            log.info("HTTP %s %s failed: %s", verb, h.url, e)
            h.busy = False
            h.task = None
            self.module.urc(f"+QHTTP{verb}: {self._http_code(e) if isinstance(e, NetError) else 701}")
            return
        h.task = None
        h.busy = False
        self._http_done(verb, resp)

    # ---- AT+QHTTPREAD ---------------------------------------------------------------------------------
    @command("+QHTTPREAD", Form.EXEC, family="http")
    @command("+QHTTPREAD", Form.WRITE, Rest("wait_time"), family="http",
             doc="Output the response via the UART", test="+QHTTPREAD: (1-65535)")
    async def qhttpread(self, ctx: Ctx, args: str | None = None):
        wait_time = self._http_seconds(args)
        h = self.http
        if h.auto_out and h.task is not None:
            raise self._http_err(703)
        if h.busy:
            raise self._http_err(703)
        resp = h.response
        if resp is None:
            raise self._http_err(705)
        h.response = None
        ctx.info("CONNECT")
        err = 0
        try:
            if self.http.rsp_header:
                ctx.raw(resp.raw_header_bytes())
            loop = asyncio.get_running_loop()
            last = loop.time()
            wifi = getattr(self, "wifi_connected", None)
            while True:
                if wifi is not None and not wifi():
                    err = 706                   # the station lost its AP: the connection is gone
                    break
                try:
                    chunk = await asyncio.wait_for(resp.read(CHUNK), min(0.25, wait_time))
                except (asyncio.TimeoutError, TimeoutError):
                    if loop.time() - last >= wait_time:
                        err = 721
                        break
                    continue
                except NetError as e:
                    err = 721 if e.kind == "timeout" else 715
                    break
                if not chunk:
                    break
                last = loop.time()
                ctx.raw(chunk)
                await self.module.drain_output()
        finally:
            await resp.close()
        ctx.ok()
        self.module.urc(f"+QHTTPREAD: {err}")
        if h.closed_ind:
            self.module.urc('+QHTTPURC: "closed"')

    # ---- AT+QHTTPSTOP -----------------------------------------------------------------------------------
    @command("+QHTTPSTOP", Form.EXEC, family="http", doc="Cancel the HTTP(S) request", test="")
    async def qhttpstop(self, ctx: Ctx):
        await self._http_reset()
