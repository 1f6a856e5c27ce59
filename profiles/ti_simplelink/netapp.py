"""NetApp family: HTTP server (aiohttp.web on a host port), DHCP/DNS servers, mDNS, DNS client, ping."""
from __future__ import annotations

import asyncio
import base64
import logging
import mimetypes
import socket

from aiohttp import web

from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.net.ping import ping as icmp_ping
from atemu.net.tls import server_context
from atemu.profile import command

from .common import (E_ALREADY, E_DNS, E_NETAPP_HANDLE, E_NETAPP_NOT_RUNNING, FAMILY, FORMAT, MAX_DATA, OS, RECV, S, count_error,
                     decode_data, encode_data, fail, flags_of, net_fail, nwp, param_error, parse_ip, parse_ipv4,
                     parse_num, pick)

log = logging.getLogger("atemu.ti")

APPS = ("HTTP_SERVER", "DHCP_SERVER", "MDNS", "DNS_SERVER")
SERVICE_OPTS = ("IS_UNIQUE_BIT", "IPV6_IPV4_SERVICE", "IPV6_ONLY_SERVICE", "UPDATE_TEXT", "IS_NOT_PERSISTENT")
HTTP_OPTS = ("PRIM_PORT_NUM", "AUTH_CHECK", "AUTH_NAME", "AUTH_PASSWORD", "AUTH_REALM", "ROM_PAGES_ACCESS",
             "SECOND_PORT_NUM", "SECOND_PORT_EN", "PRIM_PORT_SEC_EN", "PRIV_KEY_FILE", "DEV_CERT_FILE",
             "CA_CERT_FILE", "TMP_REGISTER_SERVICE", "TMP_UNREGISTER_SERVICE")
HTTP_SET_ONLY = ("priv_key_file", "dev_cert_file", "ca_cert_file", "tmp_register_service", "tmp_unregister_service")
QEVENTS = ("ipp", "deviceinfo", "http", "https", "workstation", "guid", "h323", "ntp", "objective", "rdp", "remote",
           "rtsp", "sip", "smb", "soap", "ssh", "telnet", "tftp", "xmpp", "raop")
NETAPP_DEFAULTS = {
    "http_server.prim_port_num": 80, "http_server.auth_check": 0, "http_server.auth_name": "admin",
    "http_server.auth_password": "admin", "http_server.auth_realm": "Simple Link CC32XX",
    "http_server.rom_pages_access": 1, "http_server.second_port_num": 0, "http_server.second_port_en": 0,
    "http_server.prim_port_sec_en": 0, "dhcp_server.basic": [4096, "10.123.45.2", "10.123.45.254"],
    "mdns.cont_query": "", "mdns.qevetn_mask": [], "mdns.timing_params": [100, 1, 2, 0, 0, 0],
    "device.urn": "mysimplelink", "device.domain": "mysimplelink.net", "dns_client.time": [5000, 0],
}
REQUEST_TIMEOUT = 30.0


class NetAppMixin:
    # ---- helpers ------------------------------------------------------------------------------
    def napp(self, key: str):
        return self.cfg.get("netapp." + key, NETAPP_DEFAULTS.get(key))

    def mdns_cache(self) -> list[dict]:
        """The mDNS peer cache: services the world announces plus the ones this module registered."""
        out = []
        for s in (self.module.world.options or {}).get("ti-simplelink.mdns_peers", []) or []:
            out.append({"name": s["name"], "host": s.get("host", ""), "ip": s.get("ip", "0.0.0.0"),
                        "port": int(s.get("port", 0)), "text": s.get("text", "")})
        own_ip = self.lease["ip"] if self.lease else (self.ap_addr()["ip"] if self.role == "ap" else "0.0.0.0")
        for s in self.services.values():
            out.append({"name": s["name"], "host": self.napp("device.urn") + ".local", "ip": own_ip,
                        "port": s["port"], "text": s["text"]})
        return out

    async def stop_apps(self) -> None:
        await self.http_stop()
        self.apps.clear()
        if self.ping_task is not None:
            self.ping_task.cancel()
            self.ping_task = None

    # ---- HTTP server ----------------------------------------------------------------------------
    async def http_start(self) -> None:
        sslctx = None
        if self.napp("http_server.prim_port_sec_en"):
            cert, key = self.napp("http_server.dev_cert_file"), self.napp("http_server.priv_key_file")
            if not cert or not key:
                raise fail(E_NETAPP_NOT_RUNNING, "HTTPS needs DEV_CERT_FILE and PRIV_KEY_FILE")
            ca = self.napp("http_server.ca_cert_file")
            try:
                sslctx = server_context(self.fs_read_material(cert), self.fs_read_material(key),
                                        self.fs_read_material(ca) if ca else None)
            except NetError as e:
                raise net_fail(e) from None
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self.http_handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        port = int(self.module.world.network.http_server_port or 0)
        host = str((self.module.world.options or {}).get("ti-simplelink.http_server_host", "127.0.0.1"))
        site = web.TCPSite(runner, host, port, ssl_context=sslctx, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise fail(-98, f"HTTP server port {port}: {e}") from None
        self.http_runner = runner
        sock = site._server.sockets[0]
        self.http_port = sock.getsockname()[1]
        log.warning("%s: HTTP server (module port %s) listening on http%s://%s:%d", self.module.name,
                    self.napp("http_server.prim_port_num"), "s" if sslctx else "", host, self.http_port)

    async def http_stop(self) -> None:
        if self.http_runner is not None:
            runner, self.http_runner = self.http_runner, None
            for r in self.requests.values():
                r["queue"].put_nowait(("abort", b""))
            try:
                await asyncio.wait_for(runner.cleanup(), 3)
            except Exception:
                pass
            self.http_port = None

    async def http_handle(self, request: web.Request) -> web.StreamResponse:
        if self.napp("http_server.auth_check"):
            expect = base64.b64encode(f"{self.napp('http_server.auth_name')}:{self.napp('http_server.auth_password')}".encode()).decode()
            if request.headers.get("Authorization", "") != f"Basic {expect}":
                return web.Response(status=401, text="authentication required\n",
                                    headers={"WWW-Authenticate": f'Basic realm="{self.napp("http_server.auth_realm")}"'})
        path = request.path.lstrip("/") or "index.html"
        if request.method in ("GET", "HEAD"):
            for cand in (f"www/{path}", path):
                try:
                    if self.fs.exists(cand):
                        ctype = mimetypes.guess_type(cand)[0] or "application/octet-stream"
                        return web.Response(body=self.fs.read(cand), content_type=ctype)
                except Exception:
                    continue
        body = await request.read()
        handle = self.next_handle
        self.next_handle = (self.next_handle % 0xFFFF) + 1
        req = {"body": body, "pos": 0, "queue": asyncio.Queue()}
        self.requests[handle] = req
        self.module.urc(f"+eventnetapp:request,{handle},{request.method.lower()},{request.path_qs},{len(body)}")
        resp: web.StreamResponse | None = None
        status, ctype = 200, "text/html"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_TIMEOUT
        try:
            while True:
                try:
                    kind, data = await asyncio.wait_for(req["queue"].get(), max(0.01, deadline - loop.time()))
                except asyncio.TimeoutError:
                    if resp is None:
                        return web.Response(status=504, text="the host application did not answer\n")
                    break
                if kind == "abort":
                    if resp is None:
                        return web.Response(status=503, text="server stopped\n")
                    break
                if kind == "meta":
                    text = data.decode("latin-1").strip()
                    st, _, ct = text.partition(";")
                    try:
                        status = int(st.strip())
                    except ValueError:
                        status = 500
                    if ct.strip():
                        ctype = ct.strip()
                    continue
                if resp is None:
                    resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
                    await resp.prepare(request)
                if data:
                    await resp.write(data)
                if kind == "last":
                    break
            if resp is None:
                resp = web.StreamResponse(status=status, headers={"Content-Type": ctype})
                await resp.prepare(request)
            await resp.write_eof()
            return resp
        finally:
            self.requests.pop(handle, None)

    def app_bitmap(self, bitmap: str, *, running: bool) -> list[str]:
        """The applications of a NetAPPStart/Stop bitmap; each must be running (Stop) or not (Start)."""
        apps = flags_of(bitmap, APPS, "application")
        if not apps:
            raise count_error("no application")
        for a in apps:
            if (a in self.apps) != running:
                raise (fail(E_NETAPP_NOT_RUNNING, f"{a} is not running") if running
                       else fail(E_ALREADY, f"{a} is already running"))
        return apps

    # ---- commands -------------------------------------------------------------------------------
    @command("+NetAPPStart", Form.WRITE, S("app_bitmap"), family="netapp",
             doc="Start HTTP_SERVER|DHCP_SERVER|MDNS|DNS_SERVER")
    @nwp
    async def at_netappstart(self, ctx: Ctx, bitmap: str) -> None:
        apps = self.app_bitmap(bitmap, running=False)
        if "http_server" in apps:
            await self.http_start()
        self.apps.update(apps)

    @command("+NetAPPStop", Form.WRITE, S("app_bitmap"), family="netapp", doc="Stop network applications")
    @nwp
    async def at_netappstop(self, ctx: Ctx, bitmap: str) -> None:
        apps = self.app_bitmap(bitmap, running=True)
        if "http_server" in apps:
            await self.http_stop()
        self.apps.difference_update(apps)

    @command("+NetAPPGetHostByName", Form.WRITE, S("hostname", min_len=1, max_len=255), FAMILY, family="netapp",
             doc="DNS lookup: OK, then +netappgethostbyname:<name>,<address> and OK")
    @nwp
    async def at_gethostbyname(self, ctx: Ctx, host: str, fam: int) -> None:
        self.need_ip()
        ms, retries = self.napp("dns_client.time")
        timeout = max(0.1, ms / 1000.0) * (1 + retries)

        async def go():
            try:
                ip = await self.module.resolver.resolve_one(host, family=socket.AF_INET6 if fam == 6 else socket.AF_INET,
                                                            timeout=timeout)
            except NetError as e:
                raise fail(E_DNS, str(e)) from None
            return [f"+netappgethostbyname:{host},{ip}"]

        self.start_blocking(None, go(), "gethostbyname")

    @command("+NetAPPGetHostByService", Form.WRITE, S("service", min_len=1, max_len=255), FAMILY, family="netapp",
             doc="mDNS lookup: OK, then +netappgethostbyservice:<service>,<port>,<address>,<text> and OK")
    @nwp
    async def at_gethostbyservice(self, ctx: Ctx, service: str, fam: int) -> None:
        if "mdns" not in self.apps:
            raise fail(E_NETAPP_NOT_RUNNING, "mDNS is not running")
        ms, retries = self.napp("dns_client.time")

        async def go():
            want = service.lower()
            for s in self.mdns_cache():
                if (s["name"].lower() == want or s["name"].lower().startswith(want + ".") or want in s["name"].lower()) \
                        and ((":" in s["ip"]) == (fam == 6)):
                    return [f"+netappgethostbyservice:{s['name']},{s['port']},{s['ip']},{s['text']}"]
            await asyncio.sleep(min(2.0, ms / 1000.0))
            raise fail(E_DNS, f"no answer for {service}")

        self.start_blocking(None, go(), "gethostbyservice")

    @command("+NetAPPSet", Form.WRITE,
             Keyword("app_id", values={k: k.lower() for k in ("DHCP_SERVER", "HTTP_SERVER", "MDNS", "DEVICE", "DNS_CLIENT")}),
             S("option"), OS("value1"), OS("value2"), OS("value3"), OS("value4"), OS("value5"), OS("value6"),
             family="netapp", doc="Configure a network application")
    @nwp
    async def at_netappset(self, ctx: Ctx, app: str, option: str, *vals) -> None:
        v = list(vals)
        tables = {"dhcp_server": ("BASIC",), "http_server": HTTP_OPTS, "mdns": ("CONT_QUERY", "QEVETN_MASK", "QEVENT_MASK", "TIMING_PARAMS"),
                  "device": ("URN", "DOMAIN"), "dns_client": ("TIME",)}
        opt = pick(option, tables[app], "option")
        if opt == "qevent_mask":
            opt = "qevetn_mask"
        need = {"basic": 3, "timing_params": 6, "time": 2}.get(opt, 1)
        if sum(x is not None for x in v) != need or any(x is None for x in v[:need]):
            raise count_error(f"{opt} takes {need} values")
        key = f"{app}.{opt}"

        def text(maxlen: int) -> str:
            if len(v[0]) > maxlen:
                raise param_error(f"at most {maxlen} bytes")
            return v[0]

        if opt == "basic":
            val = [parse_num(v[0], 1, 0xFFFFFFFF), parse_ipv4(v[1]), parse_ipv4(v[2])]
            a, b = (int.from_bytes(socket.inet_aton(x), "big") for x in val[1:])
            if a > b:
                raise param_error("first address after last address")
        elif opt in ("prim_port_num", "second_port_num"):
            val = parse_num(v[0], 1, 65535)
        elif opt in ("auth_check", "rom_pages_access", "second_port_en", "prim_port_sec_en"):
            val = parse_num(v[0], 0, 1)
        elif opt in ("auth_name", "auth_password", "auth_realm"):
            val = text(20)
        elif opt in ("priv_key_file", "dev_cert_file", "ca_cert_file"):
            val = text(96)
        elif opt == "tmp_register_service":
            name = text(80)
            self.services[name.lower()] = {"name": name, "text": "", "port": self.http_port or 80, "persistent": False}
            return
        elif opt == "tmp_unregister_service":
            name = text(80)
            if self.services.pop(name.lower(), None) is None:
                raise fail(E_NETAPP_HANDLE, "no such service")
            return
        elif opt == "cont_query":
            val = text(80)
        elif opt == "qevetn_mask":
            val = flags_of(v[0], QEVENTS, "service type")
        elif opt == "timing_params":
            val = [parse_num(x, 0, 0xFFFFFFFF) for x in v[:6]]
        elif opt == "urn":
            val = text(33)
        elif opt == "domain":
            val = text(63)
        else:
            val = [parse_num(v[0], 1, 0xFFFFFFFF), parse_num(v[1], 0, 255)]
        self.set_cfg("netapp." + key, val)

    @command("+NetAPPGet", Form.WRITE,
             Keyword("app_id", values={k: k.lower() for k in ("DHCP_SERVER", "HTTP_SERVER", "MDNS", "DEVICE", "DNS_CLIENT")}),
             S("option"), family="netapp", doc="Read a network application setting: +netappget:<values>")
    @nwp
    async def at_netappget(self, ctx: Ctx, app: str, option: str) -> None:
        tables = {"dhcp_server": ("BASIC",), "http_server": tuple(o for o in HTTP_OPTS if o.lower() not in HTTP_SET_ONLY),
                  "mdns": ("CONT_QUERY", "QEVETN_MASK", "QEVENT_MASK", "TIMING_PARAMS"), "device": ("URN", "DOMAIN"),
                  "dns_client": ("TIME",)}
        opt = pick(option, tables[app], "option")
        if opt == "qevent_mask":
            opt = "qevetn_mask"
        val = self.napp(f"{app}.{opt}")
        if opt == "qevetn_mask":
            out = "|".join(val)
        elif isinstance(val, list):
            out = ",".join(str(x) for x in val)
        else:
            out = str(val)
        ctx.info(f"+netappget:{out}")

    @command("+NetAPPSend", Form.WRITE, Int("handle", 0, 0xFFFF), S("flags", optional=True, default=""), FORMAT,
             Int("length", 0, MAX_DATA), Raw("data", optional=True), family="netapp",
             doc="Answer an HTTP server request (METADATA: '<status>[;<content type>]', then the body)")
    @nwp
    async def at_netappsend(self, ctx: Ctx, handle: int, flags: str, fmt: int, length: int, data) -> None:
        fl = flags_of(flags, ("CONTINUATION", "METADATA", "ACCUMULATION"), "flag")
        payload = decode_data(fmt, data, length)
        req = self.requests.get(handle)
        if req is None:
            raise fail(E_NETAPP_HANDLE, f"no pending request with handle {handle}")
        if "metadata" in fl:
            req["queue"].put_nowait(("meta", payload))
            return
        more = "continuation" in fl                  # a chunk without it is the last one
        if "accumulation" in fl or "acc" in req:     # the NWP collects the chunks, sends them at the end
            req.setdefault("acc", bytearray()).extend(payload)
            if more:
                return
            payload = bytes(req.pop("acc"))
        req["queue"].put_nowait(("data" if more else "last", payload))

    @command("+NetAPPRecv", Form.WRITE, Int("handle", 0, 0xFFFF), *RECV, family="netapp",
             doc="Read an HTTP request body: OK, then +netapprecv:<handle>,<flags>,<format>,<length>,<data> and OK")
    @nwp
    async def at_netapprecv(self, ctx: Ctx, handle: int, fmt: int, length: int) -> None:
        req = self.requests.get(handle)
        if req is None:
            raise fail(E_NETAPP_HANDLE, f"no pending request with handle {handle}")

        async def go():
            chunk = req["body"][req["pos"]:req["pos"] + length]
            req["pos"] += len(chunk)
            more = "continuation" if req["pos"] < len(req["body"]) else "0"
            return [f"+netapprecv:{handle},{more},".encode() + encode_data(fmt, chunk)]

        self.start_blocking(None, go(), "netapprecv")

    @command("+NetAPPPing", Form.WRITE, FAMILY, S("destination"), Int("size", 0, 1472), Int("delay", 0, 0x7FFFFFFF),
             Int("timeout", 1, 0x7FFFFFFF), Int("max", 0, 0xFFFF), Int("flags", 0, 2), family="netapp",
             doc="ICMP ping: OK, then +netappping:<sent>,<received>,<round time ms> and OK")
    @nwp
    async def at_netappping(self, ctx: Ctx, fam: int, dest: str, size: int, delay: int, timeout: int, mx: int, flags: int) -> None:
        if dest.strip() in ("0", "0.0.0.0", "::"):
            if self.ping_task is None or self.ping_task.done():
                raise fail(E_NETAPP_NOT_RUNNING, "no ping in progress")
            self.ping_stopping = True
            self.ping_task.cancel()
            return
        ip = parse_ip(dest, fam)
        self.need_ip()
        if self.ping_task is not None and not self.ping_task.done():
            raise fail(E_ALREADY, "a ping is already running")
        self.ping_stopping = False

        async def run() -> None:
            sent = received = 0
            rtts: list[float] = []
            try:
                i = 0
                while mx == 0 or i < mx:
                    if i:
                        await asyncio.sleep(delay / 1000.0)
                    i += 1
                    try:
                        res = (await icmp_ping(ip, count=1, size=size, timeout=timeout / 1000.0, interval=0))[0]
                    except NetError as e:
                        self.module.urc(self.format_error(net_fail(e)))
                        return
                    sent += 1
                    if res.ok:
                        received += 1
                        rtts.append(res.rtt_ms or 0.0)
                    if flags == 1:
                        self.module.urc(f"+netappping:{sent},{received},{round(res.rtt_ms) if res.ok else 0}")
                    if flags == 2 and res.ok:
                        break
            except asyncio.CancelledError:
                if not self.ping_stopping:
                    raise
            if flags != 1 or self.ping_stopping:
                avg = round(sum(rtts) / len(rtts)) if rtts else 0
                self.module.urc(f"+netappping:{sent},{received},{avg}")
            self.module.urc("OK")

        self.ping_task = self.module.spawn(run(), name="ping")

    @command("+NetAPPGetServiceList", Form.WRITE, Int("index_offset", 0, 255), Int("max_count", 1, 255),
             Keyword("flags", values={k: k.lower() for k in ("FULL_IPV4_WITH_TEXT", "FULL_IPV4", "SHORT_IPV4",
                                                               "FULL_IPV6_WITH_TEXT", "FULL_IPV6", "SHORT_IPV6")}),
             family="netapp", doc="mDNS peer cache: +netappgetservicelist:<info>;<info>...")
    @nwp
    async def at_getservicelist(self, ctx: Ctx, offset: int, count: int, flags: str) -> None:
        if "mdns" not in self.apps:
            raise fail(E_NETAPP_NOT_RUNNING, "mDNS is not running")
        v6 = "ipv6" in flags
        items = [s for s in self.mdns_cache() if (":" in s["ip"]) == v6][offset:offset + count]
        out = []
        for s in items:
            f = [s["ip"], str(s["port"])]
            if flags.startswith("full"):
                f += [s["name"], s["host"]]
            if flags.endswith("with_text"):
                f.append(s["text"])
            out.append(",".join(f))
        ctx.info("+netappgetservicelist:" + ";".join(out))

    @command("+NetAPPRegisterService", Form.WRITE, S("service_name", min_len=1, max_len=80), S("text", max_len=80, optional=True, default=""),
             Int("port", 1, 65535), Int("ttl", 0, 0xFFFFFFFF), S("options", optional=True, default=""), family="netapp",
             doc="Register an mDNS service")
    @nwp
    async def at_registerservice(self, ctx: Ctx, name: str, text: str, port: int, ttl: int, options: str) -> None:
        opts = flags_of(options, SERVICE_OPTS, "option")
        if "mdns" not in self.apps:
            raise fail(E_NETAPP_NOT_RUNNING, "mDNS is not running")
        if name.count(".") < 2:
            raise param_error("service name must be <instance>.<service>.<proto>.local style")
        key = name.lower()
        if key in self.services and "update_text" not in opts:
            raise fail(E_ALREADY, "service already registered")
        self.services[key] = {"name": name, "text": text, "port": port, "ttl": ttl,
                              "persistent": "is_not_persistent" not in opts}
        self.save_services()

    @command("+NetAPPUnRegisterService", Form.WRITE, S("service_name", min_len=1, max_len=80),
             S("options", optional=True, default=""), family="netapp", doc="Unregister an mDNS service")
    @nwp
    async def at_unregisterservice(self, ctx: Ctx, name: str, options: str) -> None:
        flags_of(options, SERVICE_OPTS, "option")
        if self.services.pop(name.lower(), None) is None:
            raise fail(E_NETAPP_HANDLE, f"service {name} is not registered")
        self.save_services()

    def save_services(self) -> None:
        self.module.settings.set("ti.services", {k: v for k, v in self.services.items() if v.get("persistent")})
