"""Eseye AnyNet Secure Click: AWS IoT over cellular (MQTT over TLS), 9600 8N1.

Manual: ../shared/specs/eseye-anynet-click-aws-at.txt; inventory and its numbered choices:
../shared/reference/inventory-eseye-anynet.md. The choices this profile makes are listed in
``DEVIATIONS`` (shown by ``atemu describe`` and in the README).

Behaviour in short: opening the first topic reads the SIM's security material (the world file's
``aws`` section, read again on every attempt), resolves the endpoint, makes a real TLS
connection presenting the SIM's client certificate and a real MQTT session (paho-mqtt), walking
AT+AWSSTATE through 1..6 (7 once a subscription exists). Topics are ``<awstopic>/<thing_name>``.
A failure gives the ``-1`` result code and state 8; while topics are open and the link drops,
the module retries with back-off, re-reading the security material each time.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from atemu.grammar import Dialect, Form, Int, Str, UrcSpec
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.profile import CmdError, Profile, command

log = logging.getLogger("atemu.eseye")

VERSION = "AnyNet AWS IoT 1.4.2 (atemu)"

# AT+AWSSTATE values
IDLE, WAITING_KEYS, CONNECTING_NETWORK, ESTABLISHING_SSL, SSL_CONNECTED, CONNECTING_MQTT, \
    MQTT_CONNECTED, SUBSCRIBED, ERROR = range(9)

PUBLISH_TIMEOUT = 10.0     # seconds the module waits for the <length> payload bytes (F2)
ACK_TIMEOUT = 10.0         # seconds a qos=2 publish waits for PUBACK (F2)
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)

DEVIATIONS = [
    "I1: AT+AWSPUBCLOSE accepts 0-7 as printed; slots 2-7 are never open, so they answer OK then +AWSPUBCLOSE: n, -2.",
    "I2: AT+AWSSUBOPEN accepts 0-7; its =? answer is printed literally as the manual has it: +AWSSUBOPEN: (0-1),<awstopic>.",
    "Q1: <qos> 1 = fire and forget (MQTT QoS 0, SEND OK at once), 2 = acknowledged (MQTT QoS 1, SEND OK on PUBACK); 0 is an alias of 1; default 1.",
    "C1: URCs are spaced exactly as printed: +AWSPUBOPEN: i,c / +AWSSUBOPEN: i,c / +AWSPUBCLOSE: i, c / +AWS:i,len.",
    "C2: AT+AWSPUBOPEN? and AT+AWSSUBOPEN? print one '<index>: <topic>/<thing>' line per open slot, then OK.",
    "C3: AT+AWSSUBCLOSE reports with the literal +AWSPUBCLOSE: prefix by default; world option eseye.subclose_urc: AWSSUBCLOSE switches to +AWSSUBCLOSE:.",
    "C4: AT+AWSPUBLISH=? prints the manual's text literally: AWSPUBLISH: (0-1), (1-240)[,(0-1)].",
    "C7: AT+QCCID answers '+QCCID: <iccid>', AT+GSN the bare IMEI, AT+AWSVER '+AWSVER: <version>'.",
    "C8: AT+QCCID?, AT+GSN? and AT+AWSVER? are not documented and answer ERROR.",
    "F1: the publish prompt is '> ' with no OK before it and none after SEND OK/SEND FAIL.",
    "F2: the payload must arrive within 10 s of the prompt (else SEND FAIL, partial bytes dropped); a qos=2 publish waits 10 s for PUBACK.",
    "F3: opens after the link is up answer at once (PUB) or after the SUBACK round trip (SUB).",
    "F4: closing the last topic keeps the TLS/MQTT link up (state 6); it is dropped only on error or power off.",
    "F5/F6: +AWS:<i>,<len> is followed by exactly <len> raw bytes and no trailing CR LF; payloads of any length are delivered.",
    "F7: echo is on after power-up (ATE0/ATE1 work), commands are case-insensitive, CR or CR LF ends a line, lines over 1024 bytes answer ERROR.",
    "Extra: MQTT client id is the thing name; subscriptions use MQTT QoS 1; the endpoint comes from the world's aws.endpoint (host:port, default port 8883).",
]


@dataclass
class _Slot:
    topic: str          # as the host gave it
    full: str           # <topic>/<thing_name>
    ready: bool = False


class EseyeAnynet(Profile):
    name = "eseye-anynet"
    aliases = ("eseye", "anynet")
    summary = "Eseye AnyNet Secure Click, AWS IoT over cellular (MQTT/TLS)"
    default_baud = 9600
    dialect = Dialect(name="eseye", echo_default=True, max_line=1024)
    families = ("general", "aws-info", "aws-pub", "aws-sub")
    deviations = DEVIATIONS
    option_prefix = "eseye"
    world_options = {"subclose_urc": "AWSPUBCLOSE (default, as printed) or AWSSUBCLOSE: the prefix of AT+AWSSUBCLOSE's result"}
    urcs = [
        UrcSpec("+AWSPUBOPEN", "+AWSPUBOPEN: <awspindex>,<aswconcode>", "result of opening a publish topic: 0 ok, -1 error, -2 in use", "aws-pub"),
        UrcSpec("+AWSSUBOPEN", "+AWSSUBOPEN: <awssindex>,<aswconcode>", "result of opening a subscribe topic", "aws-sub"),
        UrcSpec("+AWSPUBCLOSE", "+AWSPUBCLOSE: <awspindex>, <awsconcode>", "result of closing a topic (also for AWSSUBCLOSE, as printed)", "aws-pub"),
        UrcSpec("+AWS", "+AWS:<awssindex>,<length><CR><LF><binary data>", "a message arrived on a subscribed topic", "aws-sub"),
    ]

    def __init__(self, module):
        super().__init__(module)
        self.state = IDLE
        self.pubs: dict[int, _Slot] = {}
        self.subs: dict[int, _Slot] = {}
        self.mqtt = None
        self._link_lock = asyncio.Lock()
        self._retry_task: asyncio.Task | None = None
        opts = getattr(module.world, "options", {}) or {}
        self.subclose_prefix = "+AWSSUBCLOSE" if str(opts.get("eseye.subclose_urc", "")).upper().lstrip("+") == "AWSSUBCLOSE" else "+AWSPUBCLOSE"

    # ---- identity ---------------------------------------------------------------------------
    @command("+QCCID", Form.EXEC, family="general", doc="Query ICCID", test="")
    async def qccid(self, ctx: Ctx) -> None:
        ctx.info(f"+QCCID: {self.module.world.cellular.iccid}")

    @command("+GSN", Form.EXEC, family="general", doc="Query IMEI", test="")
    async def gsn(self, ctx: Ctx) -> None:
        ctx.info(self.module.world.cellular.imei)

    @command("+AWSVER", Form.EXEC, family="aws-info", doc="Query version", test="")
    async def awsver(self, ctx: Ctx) -> None:
        ctx.info(f"+AWSVER: {VERSION}")

    @command("+AWSSTATE", Form.READ, family="aws-info", doc="Check AWS state (0 idle .. 8 error)", test="+AWSSTATE: (0-8)")
    async def awsstate(self, ctx: Ctx) -> None:
        ctx.info(f"+AWSSTATE: {self.state}")

    # ---- publish topics -----------------------------------------------------------------------
    @command("+AWSPUBOPEN", Form.WRITE, Int("awspindex", 0, 1), Str("awstopic", quoted=True, min_len=1, max_len=200),
             family="aws-pub", doc="Open AWS publish topic", test="+AWSPUBOPEN: (0-1),<awstopic>")
    async def pubopen(self, ctx: Ctx, idx: int, topic: str) -> None:
        self._open(ctx, self.pubs, idx, topic, "+AWSPUBOPEN", subscribe=False)

    @command("+AWSPUBOPEN", Form.READ, family="aws-pub")
    async def pubopen_read(self, ctx: Ctx) -> None:
        for i in sorted(self.pubs):
            if self.pubs[i].ready:
                ctx.info(f"{i}: {self.pubs[i].full}")

    @command("+AWSPUBLISH", Form.WRITE, Int("awspindex", 0, 1), Int("length", 1, 240), Int("qos", 0, 2, optional=True, default=1),
             family="aws-pub", doc="Publish <length> bytes typed after the > prompt",
             test="AWSPUBLISH: (0-1), (1-240)[,(0-1)]")
    async def publish(self, ctx: Ctx, idx: int, length: int, qos: int) -> str | None:
        slot = self.pubs.get(idx)
        if slot is None or not slot.ready or self.mqtt is None or not self.mqtt.connected:
            raise CmdError("failed", message=f"publish topic {idx} is not open")
        ctx.raw(b"> ")
        ev = await ctx.read_data(length, timeout=PUBLISH_TIMEOUT)
        payload = ev.payload
        if len(payload) != length:
            return "SEND FAIL"
        mqtt = self.mqtt
        if mqtt is None or not mqtt.connected:
            return "SEND FAIL"
        try:
            if qos == 2:
                await mqtt.publish(slot.full, payload, qos=1, timeout=ACK_TIMEOUT)
            else:
                await mqtt.publish(slot.full, payload, qos=0, timeout=ACK_TIMEOUT)
        except NetError as e:
            log.info("publish failed: %s", e)
            return "SEND FAIL"
        return "SEND OK"

    @command("+AWSPUBLISH", Form.READ, family="aws-pub")
    async def publish_read(self, ctx: Ctx) -> None:
        return None

    @command("+AWSPUBCLOSE", Form.WRITE, Int("awspindex", 0, 7), family="aws-pub", doc="Close AWS publish topic",
             test="+AWSPUBCLOSE: (0-7)")
    async def pubclose(self, ctx: Ctx, idx: int) -> None:
        slot = self.pubs.pop(idx, None)
        code = 0 if slot is not None and slot.ready else -2
        ctx.ok()
        self.module.urc(f"+AWSPUBCLOSE: {idx}, {code}")

    @command("+AWSPUBCLOSE", Form.READ, family="aws-pub")
    async def pubclose_read(self, ctx: Ctx) -> None:
        return None

    # ---- subscribe topics -----------------------------------------------------------------------
    @command("+AWSSUBOPEN", Form.WRITE, Int("awssindex", 0, 7), Str("awstopic", quoted=True, min_len=1, max_len=200),
             family="aws-sub", doc="Open AWS subscribe topic", test="+AWSSUBOPEN: (0-1),<awstopic>")
    async def subopen(self, ctx: Ctx, idx: int, topic: str) -> None:
        self._open(ctx, self.subs, idx, topic, "+AWSSUBOPEN", subscribe=True)

    @command("+AWSSUBOPEN", Form.READ, family="aws-sub")
    async def subopen_read(self, ctx: Ctx) -> None:
        for i in sorted(self.subs):
            if self.subs[i].ready:
                ctx.info(f"{i}: {self.subs[i].full}")

    @command("+AWSSUBCLOSE", Form.WRITE, Int("awssindex", 0, 7), family="aws-sub", doc="Close AWS subscribed topic",
             test="+AWSSUBCLOSE: (0-7)")
    async def subclose(self, ctx: Ctx, idx: int) -> None:
        slot = self.subs.get(idx)
        ctx.ok()
        if slot is None or not slot.ready:
            self.subs.pop(idx, None)
            self.module.urc(f"{self.subclose_prefix}: {idx}, -2")
            return
        self.module.spawn(self._unsubscribe(idx, slot))

    @command("+AWSSUBCLOSE", Form.READ, family="aws-sub")
    async def subclose_read(self, ctx: Ctx) -> None:
        return None

    # ---- machinery ----------------------------------------------------------------------------
    def _open(self, ctx: Ctx, table: dict[int, _Slot], idx: int, topic: str, urc: str, subscribe: bool) -> None:
        ctx.ok()
        if idx in table:
            self.module.urc(f"{urc}: {idx},-2")
            return
        thing = self.module.world.aws.thing_name
        slot = _Slot(topic, f"{topic}/{thing}")
        table[idx] = slot
        self.module.spawn(self._complete_open(table, idx, slot, urc, subscribe))

    async def _complete_open(self, table: dict[int, _Slot], idx: int, slot: _Slot, urc: str, subscribe: bool) -> None:
        ok = await self._ensure_link()
        if ok and subscribe:
            ok = await self._subscribe(slot)
        if table.get(idx) is not slot:
            return  # closed meanwhile
        if ok:
            slot.ready = True
            if subscribe:
                self.state = SUBSCRIBED
            self.module.urc(f"{urc}: {idx},0")
        else:
            del table[idx]
            self.module.urc(f"{urc}: {idx},-1")

    async def _subscribe(self, slot: _Slot) -> bool:
        mqtt = self.mqtt
        if mqtt is None:
            return False
        try:
            granted = await mqtt.subscribe([(slot.full, 1)])
        except NetError as e:
            log.info("subscribe %s failed: %s", slot.full, e)
            return False
        return bool(granted) and granted[0] < 0x80

    async def _unsubscribe(self, idx: int, slot: _Slot) -> None:
        code = 0
        mqtt = self.mqtt
        still_used = any(s.full == slot.full for i, s in self.subs.items() if i != idx)
        if mqtt is not None and mqtt.connected and not still_used:
            try:
                await mqtt.unsubscribe([slot.full])
            except NetError:
                code = -1
        if self.subs.get(idx) is slot:
            del self.subs[idx]
        if self.state == SUBSCRIBED and not any(s.ready for s in self.subs.values()):
            self.state = MQTT_CONNECTED
        self.module.urc(f"{self.subclose_prefix}: {idx}, {code}")

    def _read_material(self) -> tuple[bytes, bytes, bytes] | None:
        aws = self.module.world.aws
        if not aws.endpoint or not (aws.ca and aws.cert and aws.key):
            log.warning("the SIM holds no AWS security material: give the world file an 'aws' section "
                        "with endpoint, ca, cert and key")
            return None
        try:
            return aws.ca.read_bytes(), aws.cert.read_bytes(), aws.key.read_bytes()
        except OSError as e:
            log.warning("cannot read SIM security material: %s", e)
            return None

    async def _ensure_link(self) -> bool:
        """Bring the TLS/MQTT link up if it is not; True when connected."""
        async with self._link_lock:
            if self.mqtt is not None and self.mqtt.connected:
                return True
            return await self._connect()

    async def _connect(self) -> bool:
        from atemu.net.mqtt import MqttSession
        from atemu.net.tls import client_context
        world = self.module.world
        self._drop_session()
        self.state = WAITING_KEYS
        material = self._read_material()
        if material is None:
            self.state = ERROR
            return False
        ca, cert, key = material
        self.state = CONNECTING_NETWORK
        if not world.cellular.attached:
            self.state = ERROR
            return False
        aws = world.aws
        try:
            ip = await self.module.resolver.resolve_one(aws.host, timeout=10.0)
        except NetError as e:
            log.warning("AWS endpoint %s does not resolve (%s): map it in the world's network.hosts", aws.host, e)
            self.state = ERROR
            return False
        self.state = ESTABLISHING_SSL
        try:
            ctx = client_context(ca=ca, cert=cert, key=key)
        except NetError as e:
            log.warning("SIM security material is unusable: %s", e)
            self.state = ERROR
            return False
        session = MqttSession(client_id=aws.thing_name, host=ip, port=aws.port, resolver=self.module.resolver,
                              tls=ctx, server_hostname=aws.host, keepalive=60, clean_session=True,
                              on_message=self._on_message, on_disconnect=self._on_disconnect)
        session.on_tls_up = self._on_tls_up  # optional hook (state 4/5) when the session supports it
        self.mqtt = session
        try:
            rc = await session.connect()
        except NetError as e:
            # the MQTT session already logged one warning line saying what to check
            log.info("AWS IoT connect to %s:%d failed: %s", aws.host, aws.port, e)
            self._drop_session()
            self.state = ERROR
            return False
        if rc != 0:
            log.info("AWS IoT refused the MQTT connection (CONNACK %d)", rc)
            self._drop_session()
            self.state = ERROR
            return False
        self.state = MQTT_CONNECTED
        return True

    def _on_tls_up(self) -> None:
        # TLS is up (state 4, SSL connected); paho sends CONNECT at once, so what the host can
        # observe until CONNACK is state 5, connecting MQTT
        if self.state == ESTABLISHING_SSL:
            self.state = CONNECTING_MQTT

    def _drop_session(self) -> None:
        if self.mqtt is not None:
            try:
                self.mqtt.close()
            except Exception:
                pass
            self.mqtt = None

    def _on_message(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        from paho.mqtt.client import topic_matches_sub
        for i in sorted(self.subs):
            s = self.subs[i]
            if s.ready and topic_matches_sub(s.full, topic):
                self.module.urc(f"+AWS:{i},{len(payload)}", payload)

    def _on_disconnect(self, reason: str, rc: int) -> None:
        if reason == "local":
            return
        log.warning("AWS IoT link lost (%s, rc %s); retrying while topics are open", reason, rc)
        self.state = ERROR
        if (self.pubs or self.subs) and (self._retry_task is None or self._retry_task.done()):
            self._retry_task = self.module.spawn(self._retry())

    async def _retry(self) -> None:
        """Re-establish the link while topics are open; re-read the SIM material each time."""
        attempt = 0
        while self.pubs or self.subs:
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1
            if await self._ensure_link():
                for slot in list(self.subs.values()):
                    if slot.ready and not await self._subscribe(slot):
                        slot.ready = False
                if any(s.ready for s in self.subs.values()):
                    self.state = SUBSCRIBED
                return

    def snapshot(self) -> dict:
        mqtt = self.mqtt
        return {
            "awsstate": self.state,
            "link": "up" if mqtt is not None and mqtt.connected else "down",
            "mqtt": None if mqtt is None else {"client_id": mqtt.client_id, "host": mqtt.server_hostname,
                                               "port": mqtt.port, "connected": mqtt.connected},
            "publish_topics": {i: {"topic": s.full, "ready": s.ready} for i, s in sorted(self.pubs.items())},
            "subscribe_topics": {i: {"topic": s.full, "ready": s.ready} for i, s in sorted(self.subs.items())},
            "retrying": self._retry_task is not None and not self._retry_task.done(),
        }

    async def shutdown(self) -> None:
        if self._retry_task:
            self._retry_task.cancel()
        if self.mqtt is not None:
            try:
                await asyncio.wait_for(self.mqtt.disconnect(), 2)
            except Exception:
                pass
        self._drop_session()
