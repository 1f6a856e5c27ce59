"""HTTP control plane (``atemu run ... --control [HOST:]PORT``): the in-process API as JSON.

Bound to 127.0.0.1 by default. Binding to any other address requires a token
(``ATEMU_CONTROL_TOKEN``, ``--control-token-file`` or ``--control-token``); when a token is set, every
request must carry it (``Authorization: Bearer <token>``, header ``X-Atemu-Token`` or ``?token=``) or
gets 401.

What a web page in the developer's browser cannot do (see README "Security"): a request whose
``Origin`` is not this server's own origin is refused (403), websocket upgrades included; without a
token the ``Host`` header must name the bound address or ``localhost`` (403: DNS rebinding); a
POST/DELETE with a body or a content type must be ``Content-Type: application/json`` (415); snapshots mask passwords
and keys unless asked with ``?secrets=1``.

Endpoints (``{name}`` is a module name from ``GET /api/modules``)::

    GET    /                                  web page: state, live UART, fault buttons
    GET    /api/modules                       [{name, profile, port}]
    POST   /api/modules                       {"profile": ..., "world": {...}, "transport": "pty"} -> start one more
    DELETE /api/modules/{name}                stop a module started over HTTP
    GET    /api/modules/{name}                snapshot (link, sockets, MQTT, files, settings, coverage, faults);
                                              ?secrets=1 shows passwords and keys
    GET    /api/faults                        every fault kind with a one-line description
    GET    /api/modules/{name}/faults         armed faults
    POST   /api/modules/{name}/faults         {"kind": "broker_disconnect", "after": 2, "probability": 0.1,
                                               "seed": 7, "times": 1, "at": 1.5, ...params} -> the fault
    DELETE /api/modules/{name}/faults[/{id}]  disarm one or all
    POST   /api/modules/{name}/world          {"change": "remove_ap", "ssid": "lab"} (see api.change_world)
    POST   /api/modules/{name}/reboot|freeze|thaw
    POST   /api/modules/{name}/reset              hardware reset pin: reboot now, answer once booted (startup output sent)
    POST   /api/modules/{name}/wakeup             wake-up pin: leave a low-power mode -> {"ok": true, "woke": bool}
    POST   /api/modules/{name}/uart           {"text": "AT\\r"} or {"hex": "41540d"}: bytes as if from the host
    GET    /api/modules/{name}/transcript     ?since=<index>&events=rx,tx -> {"next": i, "records": [...]}
    GET    /ws                                websocket: live transcript records (?module=name to filter)
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

from aiohttp import WSMsgType, web

from . import api
from .faults import KINDS, FaultError

log = logging.getLogger("atemu.control")
WEB = Path(__file__).parent / "web"


class ControlError(Exception):
    """Cannot start the control plane; one-line message saying what to do."""


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: the content types a web page may send to any site without a CORS preflight
SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")


def read_token_file(path: str | os.PathLike) -> str:
    """The token in ``path`` (its first line, surrounding blanks dropped); ControlError otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except OSError as e:
        raise ControlError(f"control token file {path}: cannot read it ({e.strerror or e})") from None
    line = raw.splitlines()[0].strip() if raw.strip() else b""
    if not line or len(raw) > 4096:
        raise ControlError(f"control token file {path}: put the token on its first line (1 to 4096 bytes)")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlError(f"control token file {path}: the token must be UTF-8 text") from None


def resolve_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """--control-token, else --control-token-file, else $ATEMU_CONTROL_TOKEN, else
    $ATEMU_CONTROL_TOKEN_FILE; None when none is set."""
    if token:
        return token
    if token_file:
        return read_token_file(token_file)
    if os.environ.get("ATEMU_CONTROL_TOKEN"):
        return os.environ["ATEMU_CONTROL_TOKEN"]
    if os.environ.get("ATEMU_CONTROL_TOKEN_FILE"):
        return read_token_file(os.environ["ATEMU_CONTROL_TOKEN_FILE"])
    return None


class ControlServer:
    """Serves the modules in ``modules()`` (name -> ModuleHandle) on the current loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, token: str | None = None,
                 modules: Callable[[], dict] | None = None, token_file: str | None = None):
        token = resolve_token(token, token_file)
        if not is_loopback(host) and not token:
            raise ControlError(f"--control {host}:{port} is reachable from other machines: set ATEMU_CONTROL_TOKEN "
                               "or --control-token-file (or --control-token) or bind to 127.0.0.1")
        self.host, self.port, self.token = host, port, token
        self._given = modules or (lambda: dict(api.RUNNING))
        self.started: dict[str, Any] = {}   # modules started over HTTP (POST /api/modules)
        self.runner: web.AppRunner | None = None
        self.sockets: set[web.WebSocketResponse] = set()
        self._hooked: dict[str, Any] = {}

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(middlewares=[self._errors, self._guard, self._auth])
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/api/modules", self.list_modules)
        r.add_post("/api/modules", self.start_module)
        r.add_delete("/api/modules/{name}", self.stop_module)
        r.add_get("/api/faults", self.fault_kinds)
        r.add_get("/api/modules/{name}", self.get_module)
        r.add_get("/api/modules/{name}/faults", self.get_faults)
        r.add_post("/api/modules/{name}/faults", self.post_fault)
        r.add_delete("/api/modules/{name}/faults", self.delete_faults)
        r.add_delete("/api/modules/{name}/faults/{id}", self.delete_faults)
        r.add_post("/api/modules/{name}/world", self.post_world)
        r.add_post("/api/modules/{name}/{action:reboot|freeze|thaw}", self.post_action)
        r.add_post("/api/modules/{name}/uart", self.post_uart)
        r.add_post("/api/modules/{name}/{pin:reset|wakeup}", self.post_pin)
        r.add_get("/api/modules/{name}/transcript", self.get_transcript)
        r.add_get("/ws", self.websocket)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port)
        try:
            await site.start()
        except OSError as e:
            await self.runner.cleanup()
            import errno as _errno
            if e.errno == _errno.EADDRINUSE:
                raise ControlError(f"--control {self.host}:{self.port}: the port is already in use; "
                                   "pick another port or stop the program using it") from None
            raise ControlError(f"--control {self.host}:{self.port}: cannot listen ({e.strerror or e}); "
                               "pick another address or port") from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def modules(self) -> dict:
        mods = dict(self._given())
        mods.update(self.started)
        return mods

    async def stop(self) -> None:
        for h in list(self.started.values()):
            await h.aclose()
        self.started.clear()
        for ws in list(self.sockets):
            await ws.close()
        for name, (h, cb) in list(self._hooked.items()):
            if cb in h.listeners:
                h.listeners.remove(cb)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # ---- middleware -----------------------------------------------------------------------------
    @staticmethod
    def _refuse(status: int, msg: str) -> web.Response:
        return web.json_response({"error": msg}, status=status)

    def _host_ok(self, host: str) -> bool:
        """Without a token, the Host header must name the bound address or localhost (a page from
        another name that resolves to 127.0.0.1, DNS rebinding, is refused)."""
        m = re.fullmatch(r"\[([^\]]*)\](?::(\d*))?|([^:]*)(?::(\d*))?", host)
        if m is None:
            return False
        name = (m.group(1) if m.group(1) is not None else m.group(3) or "").lower().rstrip(".")
        port = m.group(2) if m.group(1) is not None else m.group(4)
        if port and port != str(self.port):
            return False
        bound = self.host.strip("[]").lower()
        names = {bound, "localhost"}
        if bound == "localhost":
            names |= {"127.0.0.1", "::1"}
        return name in names

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not self.token and host is not None and not self._host_ok(host):
            return self._refuse(403, f"Host {host!r} is not this control plane's address; open "
                                     f"{self.url}/ (or set a token to serve other names)")
        origin = request.headers.get("Origin")
        if origin is not None:
            # the page's own origin: the Host it was reached at (https when a TLS proxy is in front)
            own = {f"{scheme}://{h}".lower() for h in (host, request.host) if h for scheme in ("http", "https")}
            if origin.lower() not in own:
                return self._refuse(403, f"requests from web pages at {origin!r} are refused; only the "
                                         f"control page itself ({self.url}/) may use this API")
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            # a body must be JSON; a body-less request may omit the type (curl -X POST .../reboot) but
            # never carry one of the types a web page may send without asking (CORS "simple" types)
            bare = not request.body_exists and request.content_type not in SIMPLE_TYPES
            if request.content_type != "application/json" and not bare:
                return self._refuse(415, f"{request.method} needs 'Content-Type: application/json' "
                                         f"(got {request.content_type!r})")
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token:
            given = request.headers.get("X-Atemu-Token") or request.query.get("token") or ""
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            # header values may hold any byte (aiohttp keeps non-UTF-8 ones as surrogates)
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                       self.token.encode("utf-8", "surrogateescape")):
                return self._refuse(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                         "or ?token=<token>")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except (FaultError, api.ApiError, TypeError, ValueError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            return web.json_response({"error": str(msg)}, status=400)
        except RecursionError:
            return self._refuse(400, "the JSON body is nested too deeply")
        except Exception as e:   # never a traceback to the client: one line, and the log has the rest
            log.error("control %s %s failed", request.method, request.path, exc_info=True)
            return self._refuse(500, f"internal error: {type(e).__name__}: {e}")

    # ---- helpers --------------------------------------------------------------------------------
    def _module(self, request: web.Request) -> "api.ModuleHandle":
        name = request.match_info["name"]
        mods = self.modules()
        h = mods.get(name)
        if h is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no module {name!r}; running: {', '.join(mods) or 'none'}"}),
                                   content_type="application/json")
        return h

    async def _json(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise api.ApiError("the body must be a JSON object") from None
        except RecursionError:
            raise api.ApiError("the JSON body is nested too deeply") from None
        if not isinstance(body, dict):
            raise api.ApiError("the body must be a JSON object")
        return body

    # ---- handlers -------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        page = WEB / "index.html"
        if not page.is_file():
            return web.Response(status=500, text=f"the web page is missing from this install ({page}); reinstall atemu "
                                                 "from a source tree with emulator/web included (package data)")
        return web.FileResponse(page)

    async def list_modules(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": n, "profile": h.profile, "port": h.port} for n, h in self.modules().items()])

    async def start_module(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        profile = body.get("profile")
        if not profile:
            raise api.ApiError('give {"profile": "eseye-anynet", "world": {...}, "transport": "pty"|"tcp"|"inproc"}')
        world = body.get("world")
        if world is not None and not isinstance(world, dict):
            raise api.ApiError("world must be an object in world-file layout")
        from .world import WorldError
        try:
            h = await api.astart(str(profile), world=world, transport=str(body.get("transport", "pty")),
                                 pacing=bool(body.get("pacing", False)), name=body.get("name") or None)
        except WorldError as e:
            raise api.ApiError(str(e)) from None
        self.started[h.name] = h
        return web.json_response({"name": h.name, "profile": h.profile, "port": h.port}, status=201)

    async def stop_module(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        h = self.started.pop(name, None)
        if h is None:
            raise api.ApiError(f"{name!r} was not started over HTTP; only those can be stopped here")
        await h.aclose()
        return web.json_response({"stopped": name})

    async def fault_kinds(self, request: web.Request) -> web.Response:
        return web.json_response(KINDS)

    async def get_module(self, request: web.Request) -> web.Response:
        secrets = request.query.get("secrets", "") not in ("", "0", "false", "no")
        return web.json_response(self._module(request).snapshot(secrets=secrets),
                                 dumps=lambda o: json.dumps(o, default=str))

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._module(request).faults())

    async def post_fault(self, request: web.Request) -> web.Response:
        h = self._module(request)
        body = await self._json(request)
        kind = body.pop("kind", None)
        if not kind:
            raise api.ApiError("give the fault as {\"kind\": ...}; GET /api/faults lists them")
        params = body.pop("params", {}) or {}
        return web.json_response(h.inject(str(kind), **body, **params), status=201)

    async def delete_faults(self, request: web.Request) -> web.Response:
        h = self._module(request)
        fid = request.match_info.get("id")
        return web.json_response({"cleared": h.clear(int(fid) if fid else None)})

    async def post_world(self, request: web.Request) -> web.Response:
        h = self._module(request)
        body = await self._json(request)
        change = body.pop("change", None)
        if not change:
            raise api.ApiError("give the change as {\"change\": \"remove_ap\", \"ssid\": ...}")
        h.change_world(str(change), **body)
        return web.json_response({"ok": True})

    async def post_action(self, request: web.Request) -> web.Response:
        h = self._module(request)
        action = request.match_info["action"]
        if action == "reboot":
            h.module.faults.inject("reboot")
        else:
            h.module.faults.inject(action)
        return web.json_response({"ok": True})

    async def post_pin(self, request: web.Request) -> web.Response:
        """Hardware pins: ``reset`` returns once the module has booted again (its startup output is on
        the UART); ``wakeup`` says whether the module was asleep."""
        h = self._module(request)
        if request.match_info["pin"] == "reset":
            await h.areset()
            return web.json_response({"ok": True})
        return web.json_response({"ok": True, "woke": h.wakeup()})

    async def post_uart(self, request: web.Request) -> web.Response:
        h = self._module(request)
        body = await self._json(request)
        if "hex" in body:
            data = bytes.fromhex(str(body["hex"]))
        else:
            data = str(body.get("text", "")).encode("latin-1")
        h.write(data)
        return web.json_response({"sent": len(data)})

    async def get_transcript(self, request: web.Request) -> web.Response:
        h = self._module(request)
        recs = list(h.records)
        since = int(request.query.get("since", "0") or 0)
        events = request.query.get("events")
        out = recs[since:]
        if events:
            want = set(events.split(","))
            out = [r for r in out if r.get("event") in want]
        return web.json_response({"next": len(recs), "records": out}, dumps=lambda o: json.dumps(o, default=str))

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        only = request.query.get("module")
        queue: asyncio.Queue = asyncio.Queue(maxsize=10000)
        hooks = []
        for name, h in self.modules().items():
            if only and name != only:
                continue

            def cb(rec: dict, _q: asyncio.Queue = queue) -> None:
                try:
                    _q.put_nowait(rec)
                except asyncio.QueueFull:
                    pass
            h.listeners.append(cb)
            hooks.append((h, cb))
        self.sockets.add(ws)

        async def pump() -> None:
            while True:
                rec = await queue.get()
                await ws.send_str(json.dumps(rec, default=str))

        task = asyncio.get_running_loop().create_task(pump())
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            task.cancel()
            for h, cb in hooks:
                if cb in h.listeners:
                    h.listeners.remove(cb)
            self.sockets.discard(ws)
        return ws
