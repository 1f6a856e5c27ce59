"""Calypso additions to the TI command families: the AP SSID append-MAC flag, the SNTP client
(NetApp SNTP_CLIENT, AT+netAppUpdateTime) and the GPIO commands."""
from __future__ import annotations

from urllib.parse import urlsplit

from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.net.sntp import sntp_query
from atemu.profile import command
from atemu.profiles.ti_simplelink.files import FLASH_CAPACITY
from atemu.profiles.ti_simplelink.http import METHODS as HTTP_METHODS
from atemu.profiles.ti_simplelink.common import (E_TIMEDOUT, FORMAT, OS, S, count_error, fail, nwp,
                                           param_error, parse_num, pick)

NETAPP_IDS = {k: k.lower() for k in ("DHCP_SERVER", "HTTP_SERVER", "MDNS", "DEVICE", "DNS_CLIENT", "SNTP_CLIENT")}
SNTP_OPTS = ("enable", "update_interval", "time_zone", "server_address")
SNTP_SERVERS = 3
#: seconds one SNTP server may take to answer AT+netAppUpdateTime
SNTP_TIMEOUT = 3.0
GPIO_IDS = range(0, 4)          # Calypso_ATGPIO_GPIOId_0..3 (driver); PWM on 2 and 3 only
GPIO_TYPES = ("unused", "input", "output", "pwm")
PULLS = ("nopull", "pullup", "pulldown")
LEVELS = ("low", "high")


class _Rewrite:
    """A command context whose information lines pass through ``fn`` first: where Calypso prints a
    field differently from ti-simplelink, the TI handler runs unchanged and only its line is adapted."""

    def __init__(self, ctx: Ctx, fn):
        self._ctx, self._fn = ctx, fn

    def __getattr__(self, name: str):
        return getattr(self._ctx, name)

    def info(self, text: str) -> None:
        self._ctx.info(self._fn(text))


class CalypsoExtraMixin:
    # ---- sockets ----------------------------------------------------------------------------------
    def own_addresses(self) -> list[str]:
        """ti-simplelink's own (virtual) addresses, plus the configured static station address: the
        WCON socket examples bind to it right after AT+netCfgSet=IPV4_STA_ADDR,STATIC,..., before a
        new association puts it in use."""
        out = list(super().own_addresses())
        st = self.cfg.get("netcfg.ipv4_sta") or {}
        if st.get("mode") == "static" and st.get("ip"):
            out.append(st["ip"])
        return out

    # ---- files ------------------------------------------------------------------------------------
    @command("+FileWrite", Form.WRITE, Int("file_id", 0, 0x7FFFFFFF), Int("offset", 0, FLASH_CAPACITY), FORMAT,
             Int("length", 1, 4096), Raw("data"), family="file",
             doc="Write: +filewrite:<written bytes> (format 1: the Base64 characters consumed)")
    @nwp
    async def at_filewrite(self, ctx: Ctx, fid: int, offset: int, fmt: int, length: int, data) -> None:
        if fmt == 1:      # the Base64 characters consumed, which the WCON driver adds to its offset
            ctx = _Rewrite(ctx, lambda t: f"+filewrite:{length}" if t.startswith("+filewrite:") else t)
        await super().at_filewrite(ctx, fid, offset, fmt, length, data)

    # ---- WLAN -------------------------------------------------------------------------------------
    @command("+WlanPolicyGet", Form.WRITE,
             Keyword("type", values={"CONNECTION": "connection", "SCAN": "scan", "PM": "pm", "P2P": "p2p"}),
             family="wlan", doc="Read a policy: +wlanpolicyget:<options joined by |> (CONNECTION), <option>,<value> "
                                "(others; Calypso always prints the value, 0 when it does not apply)")
    @nwp
    async def at_policyget(self, ctx: Ctx, typ: str) -> None:
        # the WCON driver reads an integer after the option of SCAN and PM (scan interval, max sleep time)
        await super().at_policyget(_Rewrite(ctx, lambda t: t + "0" if t.endswith(",") else t), typ)

    @command("+WlanSet", Form.WRITE,
             Keyword("id", values={"AP": "ap", "GENERAL": "general", "P2P": "p2p", "RX_FILTER": "rx_filter"}),
             S("option"), OS("value1"), OS("value2"), OS("value3"), OS("value4"), OS("value5"), OS("value6"),
             OS("value7"), family="wlan",
             doc="Set AP/general/P2P/RX filter configuration (Calypso: AP,SSID,<append MAC true|false>,<ssid>)")
    @nwp
    async def at_wlanset(self, ctx: Ctx, ident: str, option: str, *vals) -> None:
        given = [v for v in vals if v is not None]
        if ident == "ap" and str(option).strip().lower() == "ssid" and len(given) == 2 and vals[1] is not None:
            append = pick(vals[0], ("false", "true"), "append MAC") == "true"
            ssid = str(vals[1])
            if append:
                ssid += "-" + self.mac().replace(":", "")[-6:].upper()
            vals = (ssid,) + (None,) * (len(vals) - 1)
        return await super().at_wlanset(ctx, ident, option, *vals)

    # ---- HTTP client ------------------------------------------------------------------------------
    @command("+HttpSendReq", Form.WRITE, Int("index", 0, 255), Keyword("method", values=dict(HTTP_METHODS)),
             S("uri", min_len=1, max_len=2048), OS("flags"), Int("format", 0, 1, optional=True, default=0),
             Int("length", 0, 65535, optional=True, default=0), Raw("data", optional=True), family="http",
             doc="Send a request: +httpsendreq:<status> (the URI may be absolute: http(s)://host/path, as the WCON "
                 "driver sends it; its path is requested on the connected server)")
    @nwp
    async def at_httpsendreq(self, ctx: Ctx, idx: int, method: str, uri: str, *rest) -> None:
        if "://" in uri:
            parts = urlsplit(uri)
            uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        await super().at_httpsendreq(ctx, idx, method, uri, *rest)

    # ---- MQTT -------------------------------------------------------------------------------------
    @command("+MqttSubscribe", Form.WRITE, Int("index", 0, 255), Int("count", 1, 4),
             *[p for i in range(1, 5) for p in (OS(f"topic{i}"), OS(f"qos{i}"), OS(f"persistent{i}"))],
             *[OS(f"unused{i}") for i in range(1, 5)],
             family="mqtt", doc="Subscribe to 1..4 topics: +eventmqtt:operation,suback,<id>,<granted QoS...> "
                                "(up to four further empty fields are accepted, as the WCON driver sends them)")
    @nwp
    async def at_mqttsubscribe(self, ctx: Ctx, idx: int, count: int, *fields) -> None:
        if any(f not in (None, "") for f in fields[12:]):
            raise count_error("more topics than the count says")
        await super().at_mqttsubscribe(ctx, idx, count, *fields[:12])

    # ---- SNTP client ------------------------------------------------------------------------------
    def sntp_cfg(self) -> dict:
        c = self.cfg.get("calypso.sntp")
        out = {"enable": 0, "update_interval": 1440, "time_zone": 0, "servers": [""] * SNTP_SERVERS}
        if isinstance(c, dict):
            out.update(c)
        return out

    @command("+NetAPPSet", Form.WRITE, Keyword("app_id", values=NETAPP_IDS),
             S("option"), OS("value1"), OS("value2"), OS("value3"), OS("value4"), OS("value5"), OS("value6"),
             family="netapp", doc="Configure a network application (Calypso adds SNTP_CLIENT)")
    @nwp
    async def at_netappset(self, ctx: Ctx, app: str, option: str, *vals) -> None:
        if app != "sntp_client":
            return await super().at_netappset(ctx, app, option, *vals)
        opt = pick(option, SNTP_OPTS, "option")
        v = [x for x in vals if x is not None]
        need = 2 if opt == "server_address" else 1
        if len(v) != need or any(x is None for x in vals[:need]):
            raise count_error(f"{opt} takes {need} value(s)")
        c = self.sntp_cfg()
        if opt == "enable":
            c["enable"] = parse_num(v[0], 0, 1, "enable")
        elif opt == "update_interval":
            c["update_interval"] = parse_num(v[0], 0, 0xFFFFFFFF, "update_interval")
        elif opt == "time_zone":
            c["time_zone"] = parse_num(v[0], -720, 720, "time_zone")
        else:
            idx = parse_num(v[0], 0, SNTP_SERVERS - 1, "server index")
            addr = str(v[1]).strip().strip('"')
            if len(addr) > 64:
                raise param_error("server address too long")
            servers = list(c["servers"])
            servers[idx] = addr
            c["servers"] = servers
        self.set_cfg("calypso.sntp", c)

    @command("+NetAPPGet", Form.WRITE, Keyword("app_id", values=NETAPP_IDS), S("option"), family="netapp",
             doc="Read a network application setting: +netappget:<values> (Calypso adds SNTP_CLIENT)")
    @nwp
    async def at_netappget(self, ctx: Ctx, app: str, option: str) -> None:
        if app != "sntp_client":
            return await super().at_netappget(ctx, app, option)
        opt = pick(option, SNTP_OPTS, "option")
        c = self.sntp_cfg()
        if opt == "server_address":
            # one "[i]:<address>" per server, separated by LF inside the line (the driver's parser splits at ':'
            # and '\n' and skips spaces)
            out = "".join(f"[{i}]:{s}\n" for i, s in enumerate(c["servers"]))
            ctx.info("+netappget:" + out)
            return
        ctx.info(f"+netappget:{c[opt]}")

    @command("+netAppUpdateTime", Form.EXEC, family="netapp",
             doc="Ask the SNTP servers (NetApp SNTP_CLIENT server_address) and set the device time: OK or ERROR")
    @nwp
    async def at_netappupdatetime(self, ctx: Ctx) -> None:
        self.need_ip()
        c = self.sntp_cfg()
        servers = [s for s in c["servers"] if s]
        if not servers:
            raise fail(E_TIMEDOUT, "no SNTP server configured (AT+netAppSet=SNTP_CLIENT,server_address,0,<host>)")
        last: Exception | None = None
        for s in servers:
            host, port = s, 123
            if s.count(":") == 1:            # emulator extension: host:port (a local test server)
                host, p = s.split(":")
                port = parse_num(p, 1, 65535, "port")
            try:
                res = await sntp_query(host, port, timeout=SNTP_TIMEOUT, resolver=self.module.resolver)
            except NetError as e:
                last = e
                continue
            self.time_offset = res.offset + int(c["time_zone"]) * 60
            return
        raise fail(E_TIMEDOUT, f"no SNTP answer ({last})")

    # ---- GPIO -------------------------------------------------------------------------------------
    def gpios(self) -> dict:
        g = self.module.settings.get("calypso.gpio")
        saved = dict(g) if isinstance(g, dict) else {}
        live = getattr(self, "_gpio_live", None)
        if live is None:
            live = self._gpio_live = dict(saved)
        return live

    def gpio_input(self, gid: int) -> str:
        levels = (self.module.world.options or {}).get("calypso.gpio_inputs", {}) or {}
        v = levels.get(gid, levels.get(str(gid), 0))
        return "high" if str(v).lower() in ("1", "high", "true") else "low"

    @command("+gpioSet", Form.WRITE, Int("id", 0, max(GPIO_IDS)), S("save"), S("type"), OS("value1"), OS("value2"),
             family="gpio", doc="Configure a GPIO: unused | input,<pull> | output,<low|high> | pwm,<period>,<ratio>")
    async def at_gpioset(self, ctx: Ctx, gid: int, save: str, kind: str, v1, v2) -> None:
        store = pick(save, ("false", "true"), "save") == "true"
        typ = pick(kind, GPIO_TYPES, "type")
        if typ == "unused":
            entry: dict = {"type": typ}
        elif typ == "input":
            entry = {"type": typ, "pull": pick(v1, PULLS, "pull type")}
        elif typ == "output":
            entry = {"type": typ, "state": pick(v1, LEVELS, "state")}
        else:
            if gid not in (2, 3):
                raise fail(-1, "PWM on GPIO 2 and 3 only")
            entry = {"type": typ, "period": parse_num(v1, 0, 0xFFFF, "period"), "ratio": parse_num(v2, 0, 100, "ratio")}
        self.gpios()[str(gid)] = entry
        if store:
            g = self.module.settings.get("calypso.gpio")
            g = dict(g) if isinstance(g, dict) else {}
            g[str(gid)] = entry
            self.module.settings.set("calypso.gpio", g)

    @command("+gpioGet", Form.WRITE, Int("id", 0, max(GPIO_IDS)), S("default"), family="gpio",
             doc="Read a GPIO: +gpioget:<id>,<type>,<values> (default=true: the saved configuration)")
    async def at_gpioget(self, ctx: Ctx, gid: int, default: str) -> None:
        use_saved = pick(default, ("false", "true"), "default") == "true"
        src = self.module.settings.get("calypso.gpio") if use_saved else self.gpios()
        e = (src or {}).get(str(gid), {"type": "unused"})
        t = e["type"]
        if t == "unused":
            tail = ","
        elif t == "input":
            tail = f"{self.gpio_input(gid)},{e['pull']}"
        elif t == "output":
            tail = f"{e['state']},"
        else:
            tail = f"{e['period']},{e['ratio']}"
        ctx.info(f"+gpioget:{gid},{t},{tail}")
