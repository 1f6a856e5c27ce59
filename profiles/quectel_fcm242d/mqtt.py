"""Quectel FCM242D / FGM842D: MQTT client commands (AT+QMT*), mixin ``QuectelMqtt``.

Six clients (``<client_idx>`` 0-5), each with its own AT+QMTCFG settings that survive
QMTOPEN/QMTCLOSE (not saved across reboots). The MQTT link is real: ``atemu.net.mqtt.
MqttSession`` (paho) against the broker the host names, plain or TLS with a QSSLCFG context.

Life cycle of a client (``AT+QMTCONN?`` ``<state>`` in brackets):

    idle --QMTOPEN--> opening --+QMTOPEN: i,0--> opened [1] --QMTCONN--> connecting [2]
         --+QMTCONN: i,0,0--> connected [3] --QMTDISC--> disconnecting [4] --> idle

AT+QMTOPEN opens the client's TCP connection (and does the TLS handshake when SSL is on,
verified per the SSL context: ``MqttSession.open_transport()``); AT+QMTCONN sends CONNECT on that
same connection, so the broker sees one connection per client (DEVIATIONS_MQTT M1). A
broker that drops the link, opened or connected, gives ``+QMTSTAT: <idx>,<code>``.

Requires Wi-Fi (station connected) like the real module: without it QMTOPEN reports
``+QMTOPEN: <idx>,3``.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from dataclasses import dataclass, field

from atemu.grammar import Form, Int, Str, UrcSpec
from atemu.module import Ctx
from atemu.grammar import Data, DataOverflow
from atemu.net.errors import NetError
from atemu.profile import CmdError, Profile, command

log = logging.getLogger("atemu.quectel.mqtt")

MAX_CLIENTS = 6
RECV_SLOTS = 5
INFLIGHT_WINDOW = 5
PUB_MAX = 2048
#: seconds the module waits for the QMTPUB payload after the prompt (undocumented; see M6)
PUB_INPUT_TIMEOUT = 60.0
#: a pause this long (s) ends the burst of bytes typed after QMTPUB's <length> bytes, which are deleted (M6)
PUB_EXTRA_GAP = 0.02
#: seconds QMTOPEN waits for the TCP connection and TLS handshake
OPEN_TIMEOUT = 60.0
#: how often a connected client checks that the station is still up (seconds)
WIFI_POLL = 0.25

DEVIATIONS_MQTT = [
    "M1 (no item; design): AT+QMTOPEN opens the client's real TCP connection (world DNS, fault injection, plus "
    "the TLS handshake verified per the QSSLCFG context when \"ssl\" is on) and AT+QMTCONN sends CONNECT on that "
    "same connection: the broker sees one connection per client. AT+QMTCLOSE before QMTCONN closes it. If the "
    "broker closes or resets it before QMTCONN: +QMTSTAT: <idx>,1 and the client is idle. After a failed or "
    "refused QMTCONN the client stays opened without a link and the next QMTCONN dials a new connection. "
    "+QMTOPEN results: 0 ok, 2 index already open, 3 network error / refused / Wi-Fi down / TLS failure, "
    "4 DNS failure.",
    "M2 (item 27): <pkt_timeout> accepts 1-1200 in QMTCFG \"timeout\" (default 5 s), <retry_times> 0-10 (default "
    "3), <timeout_notice> 0. SUB/UNS/PUB/CONN wait <pkt_timeout> per attempt; when <timeout_notice> is 1 each "
    "expiry without the ACK is reported as <result> 1 with the retransmission count; after <retry_times> "
    "expiries <result> is 2. "
    "The packet itself is not re-sent on the same TCP connection (MQTT 3.1.1 only re-sends on reconnect and TCP "
    "does not lose it).",
    "M3 (item 27): +QMTRECV always carries <payload_length>: +QMTRECV: <idx>,<msgID>,\"<topic>\",<len>,\"<payload>\".",
    "M4 (item 31): the payload in +QMTRECV is quoted (as E8's first message and E9); its bytes are raw, so a "
    "payload containing quotes/CR/LF must be parsed with <len>. With QMTCFG \"dataformat\" <recv_mode>=1 it is "
    "upper-case hex and <len> counts the payload bytes. In buffer mode the AT+QMTRECV=<idx> lines have the same "
    "layout; <msgID> is the MQTT packet id (0 for QoS 0).",
    "M5 (item 30): QMTPUB accepts 1-2048 bytes (the table) rather than 1500 (the example comment).",
    "M6 (no item): the QMTPUB prompt is CR LF '> ' (as part 1, Z5); the payload must arrive within 60 s (world option "
    "quectel.mqtt_input_timeout), else ERROR and nothing is published. Without <length> the payload ends with Ctrl+Z (0x1A), Esc (0x1B) cancels with ERROR, "
    "more than 2048 bytes answers ERROR. With <length>, bytes typed after the <length> bytes are deleted as the manual "
    "says (\"extra byte(s) will be deleted\"): the burst ends at the first pause of 20 ms, then OK; only what comes "
    "after that pause is input again.",
    "M7 (item 32): <msgID> must be 0 for QoS 0 and 1-65535 for QoS 1/2 publishes and for SUBSCRIBE/UNSUBSCRIBE "
    "(MQTT forbids packet id 0); the host's <msgID> is what the URCs report (paho numbers the packets on the wire).",
    "M8 (item 29): +QMTUNS: <idx>,<msgID>,0 has no <value>.",
    "M9 (item 28): +QMTOPEN <result> 5 and 7 are never produced.",
    "M10: buffer mode keeps 5 messages per client; when all 5 slots are full new messages are dropped (logged).",
    "M11: +QMTSTAT codes: 1 broker closed/reset the link, 2 keep-alive (PINGRESP) timeout, 6 link failed "
    "otherwise. QMTCLOSE/QMTDISC never produce +QMTSTAT. After +QMTSTAT the client is idle (QMTOPEN again).",
    "M12: QMTCFG \"aliauth\" makes QMTCONN sign the CONNECT the Alibaba Cloud way (client id '<id>|securemode=3,"
    "signmethod=hmacsha1|', user '<device>&<product>', password HMAC-SHA1 of 'clientId<id>deviceName<device>"
    "productKey<product>' keyed with the device secret); \"onenet\" uses <productID> as user name and "
    "<access_key> as password. Username/password given to QMTCONN win.",
    "M13: a QMTCFG key with only <client_idx> queries: +QMTCFG: \"<key>\",<values...>.",
    "M14: losing Wi-Fi (AT+QSTASTOP, the AP leaving the air, deauth) drops every opened or connected MQTT client "
    "with +QMTSTAT: <idx>,7 (the link is not alive) within 0.25 s.",
    "M15: messages of a stored session (\"session\" 0) that the broker sends right after CONNACK are reported "
    "after +QMTCONN: <idx>,0,0, never before it. With SSL the host name is always sent as SNI (QSSLCFG \"sni\" "
    "only affects AT+QSSLOPEN); the certificate is checked against <host_name> when seclevel >= 1.",
]

URCS_MQTT = [
    UrcSpec("+QMTOPEN", "+QMTOPEN: <client_idx>,<result>", "result of AT+QMTOPEN", "mqtt"),
    UrcSpec("+QMTCLOSE", "+QMTCLOSE: <client_idx>,<result>", "result of AT+QMTCLOSE", "mqtt"),
    UrcSpec("+QMTCONN", "+QMTCONN: <client_idx>,<result>[,<retcode>]", "result of AT+QMTCONN", "mqtt"),
    UrcSpec("+QMTDISC", "+QMTDISC: <client_idx>,<result>", "result of AT+QMTDISC", "mqtt"),
    UrcSpec("+QMTSUB", "+QMTSUB: <client_idx>,<msgID>,<result>[,<value>]", "result of AT+QMTSUB", "mqtt"),
    UrcSpec("+QMTUNS", "+QMTUNS: <client_idx>,<msgID>,<result>[,<value>]", "result of AT+QMTUNS", "mqtt"),
    UrcSpec("+QMTPUB", "+QMTPUB: <client_idx>,<msgID>,<result>[,<value>]", "result of AT+QMTPUB", "mqtt"),
    UrcSpec("+QMTSTAT", "+QMTSTAT: <client_idx>,<err_code>", "the broker link dropped", "mqtt"),
    UrcSpec("+QMTRECV", "+QMTRECV: <client_idx>,<msgID>,<topic>,<payload_length>,<payload> | +QMTRECV: <client_idx>,<recv_id>",
            "a message arrived (push mode) / was stored in slot <recv_id> (buffer mode)", "mqtt"),
]

IDLE, OPENING, OPENED, CONNECTING, CONNECTED, DISCONNECTING = range(6)


@dataclass
class _MqttCfg:
    version: int = 4
    ssl: int = 0
    ssl_ctx: int = 0
    keepalive: int = 120
    clean: int = 1
    will_flag: int = 0
    will_qos: int = 0
    will_retain: int = 0
    will_topic: str = ""
    will_msg: str = ""
    recv_mode: int = 0
    send_fmt: int = 0
    recv_fmt: int = 0
    pkt_timeout: int = 5
    retries: int = 3
    notice: int = 0
    aliauth: tuple[str, str, str] | None = None
    onenet: tuple[str, str] | None = None


@dataclass
class _MqttClient:
    idx: int
    cfg: _MqttCfg = field(default_factory=_MqttCfg)
    state: int = IDLE
    host: str = ""
    port: int = 0
    ip: str = ""
    session: object | None = None
    task: asyncio.Task | None = None
    slots: list = field(default_factory=lambda: [None] * RECV_SLOTS)
    inflight: int = 0
    early: list = field(default_factory=list)   # messages that beat +QMTCONN (session present)


def _payload_text(data: bytes) -> str:
    """Bytes -> str that the UART writer encodes back to exactly these bytes."""
    return data.decode("utf-8", "surrogateescape")


def _str_arg(name: str, max_len: int, *, optional: bool = False, min_len: int = 0) -> Str:
    return Str(name, quoted=None, max_len=max_len, min_len=min_len, optional=optional)


def _cfg_value_command(sub: str, attr: str, param: Int, **kw):
    """The handler of a one-value AT+QMTCFG key: <client_idx> alone queries it (M13), a value sets it."""
    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), param, sub=sub, family="mqtt", **kw)
    async def handler(self, ctx: Ctx, idx: int, value):
        self._mq_cfg_ints(ctx, idx, sub, (attr,), value)
    return handler


class QuectelMqtt(Profile):
    """AT+QMTCFG/QMTOPEN/QMTCLOSE/QMTCONN/QMTDISC/QMTSUB/QMTUNS/QMTPUB/QMTRECV (mixin)."""

    def __init__(self, module):
        super().__init__(module)
        self.mqtt_clients = [_MqttClient(i) for i in range(MAX_CLIENTS)]
        hooks = getattr(self, "_teardown_hooks", None)
        if hooks is None:
            hooks = self._teardown_hooks = []
        hooks.append(self._mqtt_teardown)

    def mqtt_snapshot(self) -> dict:
        """Live MQTT state for ``snapshot()`` (JSON-able)."""
        names = {IDLE: "idle", OPENING: "opening", OPENED: "opened", CONNECTING: "connecting",
                 CONNECTED: "connected", DISCONNECTING: "disconnecting"}
        return {str(c.idx): {"state": names[c.state], "host": c.host, "port": c.port, "ssl": bool(c.cfg.ssl),
                             "inflight": c.inflight, "buffered": [i for i, m in enumerate(c.slots) if m is not None]}
                for c in self.mqtt_clients if c.state != IDLE or any(m is not None for m in c.slots)}

    # ---- helpers ------------------------------------------------------------------------------
    def _mq_urc(self, text: str) -> None:
        self.module.urc(text)

    def _mq_wifi_ok(self) -> bool:
        fn = getattr(self, "wifi_connected", None)
        return True if fn is None else bool(fn())

    def _mq_tls(self, c: _MqttClient, server_hostname: str):
        contexts = getattr(self, "ssl_ctx", None)
        if contexts is not None:
            try:
                return contexts[c.cfg.ssl_ctx].client_context(server_hostname)
            except NetError:
                raise
            except (KeyError, IndexError):
                pass
        from atemu.net.tls import client_context
        return client_context(verify=False)

    async def _mqtt_teardown(self) -> None:
        for c in self.mqtt_clients:
            self._mq_drop(c)

    def _mq_drop(self, c: _MqttClient) -> None:
        if c.task is not None and not c.task.done():
            c.task.cancel()
        c.task = None
        s = c.session
        c.session = None
        if s is not None:
            try:
                s.close()
            except Exception:  # pragma: no cover - defensive
                log.exception("closing MQTT session")
        c.state = IDLE
        c.inflight = 0
        c.early = []

    def _mq_client(self, idx: int, *states: int) -> _MqttClient:
        c = self.mqtt_clients[idx]
        if states and c.state not in states:
            raise CmdError("failed", message=f"MQTT client {idx} is in state {c.state}")
        return c

    async def _mq_wait_ack(self, c: _MqttClient, coro, urc_prefix: str, notice: bool | None = None,
                           count: bool = True):
        """Await an ACK in <pkt_timeout> slices; report retransmissions. Returns (ok, value)."""
        task = asyncio.ensure_future(coro)
        attempts = 0
        if notice is None:
            notice = bool(c.cfg.notice)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=c.cfg.pkt_timeout)
                if done:
                    try:
                        return True, task.result()
                    except NetError as e:
                        log.info("MQTT %d: %s failed: %s", c.idx, urc_prefix, e)
                        return False, None
                if attempts >= c.cfg.retries:
                    return False, None
                attempts += 1
                if notice:   # +QMTCONN has no retransmission count (its third field is <retcode>)
                    self._mq_urc(f"{urc_prefix},1,{attempts}" if count else f"{urc_prefix},1")
        finally:
            if not task.done():
                task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # ---- AT+QMTCFG ------------------------------------------------------------------------------
    _CFG_TEST = "\r\n".join([
        '+QMTCFG: "version",(0-5),(3,4)',
        '+QMTCFG: "ssl",(0-5),(0,1),(0-5)',
        '+QMTCFG: "keepalive",(0-5),(0-3600)',
        '+QMTCFG: "session",(0-5),(0,1)',
        '+QMTCFG: "will",(0-5),(0,1),(0-2),(0,1),<will_topic>,<will_message>',
        '+QMTCFG: "recv/mode",(0-5),(0,1)',
        '+QMTCFG: "dataformat",(0-5),(0,1),(0,1)',
        '+QMTCFG: "timeout",(0-5),(1-1200),(0-10),(0,1)',
        '+QMTCFG: "aliauth",(0-5),"product key","device name","device secret"',
        '+QMTCFG: "onenet",(0-5),"product id","access key"',
    ])

    def _mq_cfg_ints(self, ctx: Ctx, idx: int, key: str, attrs: tuple[str, ...], *values) -> None:
        """A numeric QMTCFG key (M13): <client_idx> alone queries every field, else the given fields are set."""
        cfg = self.mqtt_clients[idx].cfg
        if values[0] is None:
            ctx.info(f'+QMTCFG: "{key}",' + ",".join(str(getattr(cfg, a)) for a in attrs))
            return
        for attr, value in zip(attrs, values):
            if value is not None:
                setattr(cfg, attr, value)

    def _mq_cfg_strings(self, ctx: Ctx, idx: int, key: str, attr: str, *values) -> None:
        """A credentials QMTCFG key: queried (printed only when set) or set with every string."""
        cfg = self.mqtt_clients[idx].cfg
        if values[0] is None:
            if getattr(cfg, attr):
                ctx.info(f'+QMTCFG: "{key}",' + ",".join(f'"{v}"' for v in getattr(cfg, attr)))
            return
        if any(v is None for v in values):
            raise CmdError("param", message=f"{key} needs all of its {len(values)} strings")
        setattr(cfg, attr, tuple(values))

    qmtcfg_version = _cfg_value_command("version", "version", Int("vsn", 3, 4, optional=True), test=_CFG_TEST,
                                        doc="Configure MQTT: protocol version (3 = 3.1, 4 = 3.1.1)")

    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), Int("SSL_enable", 0, 1, optional=True),
             Int("SSL_ctxID", 0, 5, optional=True), sub="ssl", family="mqtt")
    async def qmtcfg_ssl(self, ctx: Ctx, idx: int, enable, ctxid):
        if enable and ctxid is None:
            raise CmdError("param", message="SSL needs <SSL_ctxID> (note 3)")
        self._mq_cfg_ints(ctx, idx, "ssl", ("ssl", "ssl_ctx"), enable, ctxid)

    qmtcfg_keepalive = _cfg_value_command("keepalive", "keepalive", Int("keep_alive_time", 0, 3600, optional=True))
    qmtcfg_session = _cfg_value_command("session", "clean", Int("clean_session", 0, 1, optional=True))

    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), Int("will_flag", 0, 1, optional=True),
             Int("will_qos", 0, 2, optional=True), Int("will_retain", 0, 1, optional=True),
             _str_arg("will_topic", 256, optional=True), _str_arg("will_message", 256, optional=True),
             sub="will", family="mqtt")
    async def qmtcfg_will(self, ctx: Ctx, idx: int, flag, qos, retain, topic, msg):
        cfg = self.mqtt_clients[idx].cfg
        if flag is None:
            if cfg.will_flag:
                ctx.info(f'+QMTCFG: "will",1,{cfg.will_qos},{cfg.will_retain},"{cfg.will_topic}","{cfg.will_msg}"')
            else:
                ctx.info('+QMTCFG: "will",0')
            return
        if flag == 1:
            if qos is None or retain is None or not topic or msg is None:
                raise CmdError("param", message="will_flag 1 needs qos, retain, topic and message")
            cfg.will_flag, cfg.will_qos, cfg.will_retain, cfg.will_topic, cfg.will_msg = 1, qos, retain, topic, msg
        else:
            cfg.will_flag = 0

    qmtcfg_recvmode = _cfg_value_command("recv/mode", "recv_mode", Int("msg_recv_mode", 0, 1, optional=True))

    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), Int("send_mode", 0, 1, optional=True),
             Int("recv_mode", 0, 1, optional=True), sub="dataformat", family="mqtt")
    async def qmtcfg_dataformat(self, ctx: Ctx, idx: int, send, recv):
        if send is not None and recv is None:
            raise CmdError("param", message="dataformat needs <send_mode>,<recv_mode>")
        self._mq_cfg_ints(ctx, idx, "dataformat", ("send_fmt", "recv_fmt"), send, recv)

    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), Int("pkt_timeout", 1, 1200, optional=True),
             Int("retry_times", 0, 10, optional=True), Int("timeout_notice", 0, 1, optional=True),
             sub="timeout", family="mqtt")
    async def qmtcfg_timeout(self, ctx: Ctx, idx: int, pkt, retry, notice):
        self._mq_cfg_ints(ctx, idx, "timeout", ("pkt_timeout", "retries", "notice"), pkt, retry, notice)

    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), _str_arg("product_key", 64, optional=True),
             _str_arg("device_name", 64, optional=True), _str_arg("device_secret", 128, optional=True),
             sub="aliauth", family="mqtt")
    async def qmtcfg_aliauth(self, ctx: Ctx, idx: int, pk, dn, ds):
        self._mq_cfg_strings(ctx, idx, "aliauth", "aliauth", pk, dn, ds)

    @command("+QMTCFG", Form.WRITE, Int("client_idx", 0, 5), _str_arg("product_id", 64, optional=True),
             _str_arg("access_key", 128, optional=True), sub="onenet", family="mqtt")
    async def qmtcfg_onenet(self, ctx: Ctx, idx: int, pid, key):
        self._mq_cfg_strings(ctx, idx, "onenet", "onenet", pid, key)

    # ---- AT+QMTOPEN / AT+QMTCLOSE ---------------------------------------------------------------
    @command("+QMTOPEN", Form.WRITE, Int("client_idx", 0, 5), _str_arg("host_name", 100, min_len=1),
             Int("port", 1, 65535), family="mqtt", doc="Open a network connection for an MQTT client",
             test="+QMTOPEN: (0-5),<host_name>,(1-65535)")
    async def qmtopen(self, ctx: Ctx, idx: int, host: str, port: int):
        c = self.mqtt_clients[idx]
        ctx.ok()
        if c.state != IDLE:
            self._mq_urc(f"+QMTOPEN: {idx},2")
            return
        if not self._mq_wifi_ok():
            self._mq_urc(f"+QMTOPEN: {idx},3")
            return
        c.state, c.host, c.port = OPENING, host, port
        c.task = self.module.spawn(self._mq_open(c))

    def _mq_session(self, c: _MqttClient):
        """A new MqttSession for the client's host (TLS per its SSL context); raises NetError."""
        from atemu.net.mqtt import MqttSession
        tls = self._mq_tls(c, c.host) if c.cfg.ssl else None
        session = MqttSession(
            client_id="", host=c.host, port=c.port, resolver=self.module.resolver, tls=tls,
            server_hostname=c.host, connect_timeout=OPEN_TIMEOUT,
            on_message=lambda *a: self._mq_on_message(c, session, *a),
            on_disconnect=lambda reason, rc: self._mq_on_disconnect(c, session, reason, rc))
        return session

    async def _mq_open(self, c: _MqttClient) -> None:
        """QMTOPEN: the TCP connection (and TLS handshake) that QMTCONN's CONNECT will use."""
        result = 3
        try:
            try:
                session = self._mq_session(c)
            except NetError as e:
                log.info("MQTT %d: SSL context %d unusable: %s", c.idx, c.cfg.ssl_ctx, e)
                return
            c.session = session
            try:
                await session.open_transport()
            except NetError as e:
                log.info("MQTT %d: %s:%d: %s", c.idx, c.host, c.port, e)
                result = 4 if e.kind in ("dns", "dns_timeout") else 3
                if c.session is session:
                    c.session = None
                    session.close()
                return
            result = 0
            c.ip = session.remote_ip or c.host
        finally:
            if c.state == OPENING:
                c.state = OPENED if result == 0 else IDLE
                c.task = None
                self._mq_urc(f"+QMTOPEN: {c.idx},{result}")
                if result == 0:
                    self.module.spawn(self._mq_watch_wifi(c, c.session))

    @command("+QMTOPEN", Form.READ, family="mqtt")
    async def qmtopen_read(self, ctx: Ctx):
        for c in self.mqtt_clients:
            if c.state in (OPENED, CONNECTING, CONNECTED, DISCONNECTING):
                ctx.info(f'+QMTOPEN: {c.idx},"{c.host}",{c.port}')

    @command("+QMTCLOSE", Form.WRITE, Int("client_idx", 0, 5), family="mqtt",
             doc="Close the MQTT client's network", test="+QMTCLOSE: (0-5)")
    async def qmtclose(self, ctx: Ctx, idx: int):
        c = self.mqtt_clients[idx]
        if c.state == IDLE:
            raise CmdError("failed", message=f"MQTT client {idx} is not open")
        ctx.ok()
        self._mq_drop(c)
        self._mq_urc(f"+QMTCLOSE: {idx},0")

    # ---- AT+QMTCONN / AT+QMTDISC ----------------------------------------------------------------
    @command("+QMTCONN", Form.WRITE, Int("client_idx", 0, 5), _str_arg("clientID", 127),
             _str_arg("username", 127, optional=True), _str_arg("password", 512, optional=True),
             family="mqtt", doc="Connect a client to the MQTT server",
             test="+QMTCONN: (0-5),<clientID>,<username>,<password>")
    async def qmtconn(self, ctx: Ctx, idx: int, client_id: str, user, password):
        if (user is None) != (password is None):
            raise CmdError("param", message="username and password come as a pair")
        c = self._mq_client(idx, OPENED)
        cfg = c.cfg
        if user is None and cfg.aliauth:
            pk, dn, ds = cfg.aliauth
            sign = f"clientId{client_id}deviceName{dn}productKey{pk}"
            password = hmac.new(ds.encode(), sign.encode(), hashlib.sha1).hexdigest()
            user = f"{dn}&{pk}"
            client_id = f"{client_id}|securemode=3,signmethod=hmacsha1|"
        elif user is None and cfg.onenet:
            user, password = cfg.onenet
        will = None
        if cfg.will_flag:
            will = (cfg.will_topic, cfg.will_msg.encode("utf-8", "surrogateescape"), cfg.will_qos, bool(cfg.will_retain))
        ctx.ok()
        c.state = CONNECTING
        c.task = self.module.spawn(self._mq_connect(c, client_id, user, password, will))

    async def _mq_connect(self, c: _MqttClient, client_id, user, password, will) -> None:
        """QMTCONN: CONNECT on QMTOPEN's connection (a new one if an earlier CONNECT failed)."""
        cfg = c.cfg
        session = c.session
        if session is None:     # an earlier QMTCONN failed or was refused: the link went with it
            try:
                session = c.session = self._mq_session(c)
            except NetError as e:
                log.info("MQTT %d: SSL context unusable: %s", c.idx, e)
                c.state = OPENED
                c.task = None
                self._mq_urc(f"+QMTCONN: {c.idx},2")
                return
            self.module.spawn(self._mq_watch_wifi(c, session))
        session.client_id, session.username, session.password, session.will = client_id, user, password, will
        session.keepalive, session.clean_session, session.protocol = cfg.keepalive, bool(cfg.clean), cfg.version
        session.connect_timeout = float(cfg.pkt_timeout) * (cfg.retries + 1)
        ok, code = await self._mq_wait_ack(c, session.connect(), f"+QMTCONN: {c.idx}", count=False)
        c.task = None
        if c.session is not session:
            return
        if not ok or code != 0:
            c.session = None
            session.close()
            c.state = OPENED
            self._mq_urc(f"+QMTCONN: {c.idx},2" if not ok else f"+QMTCONN: {c.idx},0,{code}")
            return
        c.state = CONNECTED
        self._mq_urc(f"+QMTCONN: {c.idx},0,0")
        early, c.early = c.early, []
        for msg in early:
            self._mq_on_message(c, session, *msg)

    async def _mq_watch_wifi(self, c: _MqttClient, session) -> None:
        """The station lost its AP (QSTASTOP, AP gone, deauth): the link dies with it (+QMTSTAT 7)."""
        while c.session is session and c.state in (OPENED, CONNECTING, CONNECTED, DISCONNECTING):
            if not self._mq_wifi_ok():
                log.info("MQTT %d: Wi-Fi lost, dropping the link", c.idx)
                self._mq_drop(c)
                self._mq_urc(f"+QMTSTAT: {c.idx},7")
                return
            await asyncio.sleep(WIFI_POLL)

    @command("+QMTCONN", Form.READ, family="mqtt")
    async def qmtconn_read(self, ctx: Ctx):
        states = {OPENED: 1, CONNECTING: 2, CONNECTED: 3, DISCONNECTING: 4}
        for c in self.mqtt_clients:
            if c.state in states:
                ctx.info(f"+QMTCONN: {c.idx},{states[c.state]}")

    @command("+QMTDISC", Form.WRITE, Int("client_idx", 0, 5), family="mqtt",
             doc="Disconnect a client from the MQTT server", test="+QMTDISC: (0-5)")
    async def qmtdisc(self, ctx: Ctx, idx: int):
        c = self._mq_client(idx, CONNECTED)
        ctx.ok()
        c.state = DISCONNECTING
        c.task = self.module.spawn(self._mq_disconnect(c))

    async def _mq_disconnect(self, c: _MqttClient) -> None:
        s = c.session
        result = 0
        try:
            if s is not None:
                await s.disconnect(timeout=5.0)
        except Exception as e:  # noqa: BLE001
            log.info("MQTT %d: DISCONNECT failed: %s", c.idx, e)
            result = -1
        c.task = None
        self._mq_drop(c)
        self._mq_urc(f"+QMTDISC: {c.idx},{result}")

    # ---- link events ------------------------------------------------------------------------------
    def _mq_on_disconnect(self, c: _MqttClient, session, reason: str, rc: int) -> None:
        if c.session is not session or reason == "local":
            return
        code = 2 if rc == 16 else (1 if reason == "remote" else 6)
        if reason == "error" and rc in (7,):
            code = 1
        log.info("MQTT %d: link lost (%s, rc %s) -> +QMTSTAT %d", c.idx, reason, rc, code)
        self._mq_drop(c)
        self._mq_urc(f"+QMTSTAT: {c.idx},{code}")

    def _mq_format(self, c: _MqttClient, mid: int, topic: str, payload: bytes) -> str:
        body = payload.hex().upper() if c.cfg.recv_fmt else _payload_text(payload)
        return f'+QMTRECV: {c.idx},{mid},"{topic}",{len(payload)},"{body}"'

    def _mq_on_message(self, c: _MqttClient, session, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        if c.session is not session:
            return
        if c.state == CONNECTING:     # a stored session's messages may arrive before we report CONNACK
            c.early.append((topic, payload, qos, retain, mid))
            return
        mid = mid if qos else 0
        if c.cfg.recv_mode == 0:
            self._mq_urc(self._mq_format(c, mid, topic, payload))
            return
        for i, slot in enumerate(c.slots):
            if slot is None:
                c.slots[i] = (mid, topic, payload)
                self._mq_urc(f"+QMTRECV: {c.idx},{i}")
                return
        log.warning("MQTT %d: all %d receive slots full; message on %r dropped", c.idx, RECV_SLOTS, topic)

    # ---- AT+QMTSUB / AT+QMTUNS ----------------------------------------------------------------------
    @command("+QMTSUB", Form.WRITE, Int("client_idx", 0, 5), Int("msgID", 0, 65535),
             _str_arg("topic1", 256, min_len=1), Int("qos1", 0, 2),
             _str_arg("topic2", 256, optional=True), Int("qos2", 0, 2, optional=True),
             _str_arg("topic3", 256, optional=True), Int("qos3", 0, 2, optional=True),
             _str_arg("topic4", 256, optional=True), Int("qos4", 0, 2, optional=True),
             _str_arg("topic5", 256, optional=True), Int("qos5", 0, 2, optional=True),
             family="mqtt", doc="Subscribe to topics", test="+QMTSUB: (0-5),(0-65535),<topic>,(0-2)")
    async def qmtsub(self, ctx: Ctx, idx: int, msgid: int, *pairs):
        topics = []
        for i in range(0, len(pairs), 2):
            t, q = pairs[i], pairs[i + 1]
            if t is None and q is None:
                continue
            if t is None or q is None or not t:
                raise CmdError("param", message="each topic needs a qos")
            topics.append((t, q))
        if msgid == 0:
            raise CmdError("param", message="SUBSCRIBE needs a <msgID> of 1-65535")
        c = self._mq_client(idx, CONNECTED)
        ctx.ok()
        self.module.spawn(self._mq_sub_op(c, msgid, "+QMTSUB", lambda s: s.subscribe(topics, timeout=3600)))

    async def _mq_sub_op(self, c: _MqttClient, msgid: int, urc: str, start) -> None:
        """SUBSCRIBE/UNSUBSCRIBE: wait for the ACK (M2), then <urc>: <idx>,<msgID>,<result>[,<granted QoS>...]."""
        prefix = f"{urc}: {c.idx},{msgid}"
        s = c.session
        ok, granted = (False, None) if s is None else await self._mq_wait_ack(c, start(s), prefix)
        self._mq_urc(f"{prefix},0" + "".join(f",{g}" for g in granted or ()) if ok else f"{prefix},2")

    @command("+QMTUNS", Form.WRITE, Int("client_idx", 0, 5), Int("msgID", 0, 65535),
             _str_arg("topic1", 256, min_len=1), _str_arg("topic2", 256, optional=True),
             _str_arg("topic3", 256, optional=True), _str_arg("topic4", 256, optional=True),
             _str_arg("topic5", 256, optional=True),
             family="mqtt", doc="Unsubscribe from topics", test="+QMTUNS: (0-5),(0-65535),<topic>")
    async def qmtuns(self, ctx: Ctx, idx: int, msgid: int, *topics):
        topics = [t for t in topics if t]
        if msgid == 0:
            raise CmdError("param", message="UNSUBSCRIBE needs a <msgID> of 1-65535")
        c = self._mq_client(idx, CONNECTED)
        ctx.ok()
        self.module.spawn(self._mq_sub_op(c, msgid, "+QMTUNS", lambda s: s.unsubscribe(topics, timeout=3600)))

    # ---- AT+QMTPUB ------------------------------------------------------------------------------------
    @command("+QMTPUB", Form.WRITE, Int("client_idx", 0, 5), Int("msgID", 0, 65535), Int("qos", 0, 2),
             Int("retain", 0, 1), _str_arg("topic", 256, min_len=1), Int("length", 1, PUB_MAX, optional=True),
             family="mqtt", doc="Publish a message (payload typed after the > prompt)",
             test="+QMTPUB: (0-5),(0-65535),(0-2),(0,1),<topic>,(1-2048)")
    async def qmtpub(self, ctx: Ctx, idx: int, msgid: int, qos: int, retain: int, topic: str, length):
        if (qos == 0) != (msgid == 0):
            raise CmdError("param", message="<msgID> must be 0 exactly when <qos> is 0")
        if any(ch in topic for ch in "#+"):
            raise CmdError("param", message="wildcards are not allowed in a PUBLISH topic")
        c = self._mq_client(idx, CONNECTED)
        if qos and c.inflight >= INFLIGHT_WINDOW:
            raise CmdError("failed", message="inflight window (5) is full")
        ctx.raw(b"\r\n> ")
        opts = getattr(self.module.world, "options", {}) or {}
        wait = float(opts.get("quectel.mqtt_input_timeout", PUB_INPUT_TIMEOUT))
        if length is not None:
            ev = await ctx.read_data(length, timeout=wait)
            if isinstance(ev, Data) and ev.reason == "length":
                await self._mq_delete_extra(ctx, c, wait)
        else:
            ev = await ctx.read_data(None, timeout=wait, terminator=b"\x1a", cancel=b"\x1b", max_len=PUB_MAX)
        if not isinstance(ev, Data) or ev.reason == "timeout":
            raise CmdError("failed", message="publish payload cancelled, too long or not complete in time")
        payload = ev.payload
        if c.cfg.send_fmt:
            try:
                payload = bytes.fromhex(payload.decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                raise CmdError("param", message="payload is not valid hex") from None
        if c.state != CONNECTED or c.session is None:
            raise CmdError("failed", message="client disconnected while typing")
        ctx.ok()
        if qos:
            c.inflight += 1
        self.module.spawn(self._mq_publish(c, c.session, msgid, qos, retain, topic, payload))

    async def _mq_delete_extra(self, ctx: Ctx, c: _MqttClient, wait: float) -> None:
        """"If the actual size of data is greater than <length>, extra byte(s) will be deleted" (M6): what the
        host sends right after the <length> bytes, up to a pause of PUB_EXTRA_GAP, never becomes input."""
        dropped = 0
        while True:
            ev = await ctx.read_data(None, timeout=wait, idle=PUB_EXTRA_GAP, max_len=PUB_MAX)
            dropped += len(ev.payload)
            if not isinstance(ev, DataOverflow):
                break
        if dropped:
            log.info("MQTT %d: %d byte(s) after the QMTPUB <length> deleted", c.idx, dropped)

    async def _mq_publish(self, c: _MqttClient, s, msgid: int, qos: int, retain: int, topic: str, payload: bytes) -> None:
        try:
            ok, _ = await self._mq_wait_ack(c, s.publish(topic, payload, qos=qos, retain=bool(retain), timeout=3600),
                                            f"+QMTPUB: {c.idx},{msgid}")
        finally:
            if qos and c.session is s:
                c.inflight = max(0, c.inflight - 1)
        self._mq_urc(f"+QMTPUB: {c.idx},{msgid},{0 if ok else 2}")

    # ---- AT+QMTRECV -------------------------------------------------------------------------------------
    @command("+QMTRECV", Form.WRITE, Int("client_idx", 0, 5), Int("recv_id", 0, RECV_SLOTS - 1, optional=True),
             family="mqtt", doc="Read messages stored in buffer mode", test="")
    async def qmtrecv(self, ctx: Ctx, idx: int, rid):
        c = self.mqtt_clients[idx]
        ids = range(RECV_SLOTS) if rid is None else [rid]
        for i in ids:
            msg = c.slots[i]
            if msg is None:
                continue
            c.slots[i] = None
            ctx.info(self._mq_format(c, *msg))

    @command("+QMTRECV", Form.READ, family="mqtt")
    async def qmtrecv_read(self, ctx: Ctx):
        for c in self.mqtt_clients:
            if c.state != IDLE or any(s is not None for s in c.slots):
                ctx.info(f"+QMTRECV: {c.idx}," + ",".join("0" if s is None else "1" for s in c.slots))
