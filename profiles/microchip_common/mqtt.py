"""Microchip family MQTT: MQTTC, MQTTCONN, MQTTSUB, MQTTUNSUB, MQTTPUB, MQTTDISCONN."""
from __future__ import annotations

from typing import Any

from atemu.grammar import Bytes, Form, Int, Str
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.profile import CmdError, command

from .common import E_STATE, E_BUSY, E_NOLINK, MAX_DATA, arg_bytes, sfx, log


def _topic(ctx, index: int, wildcards: bool) -> str:
    """The topic argument ``index`` as the broker will see it: the bytes written (quoted, or [hex]
    taken byte for byte) must be UTF-8 without NUL; a filter's '#' only as the last level and '+'
    only as a whole level; a publish topic has no wildcards. Else ERROR:2 (a malformed topic would
    make the broker drop the whole connection)."""
    try:
        topic = arg_bytes(ctx.line.args[index]).decode("utf-8")
    except UnicodeDecodeError:
        raise CmdError("param", message="the topic is not UTF-8") from None
    if "\x00" in topic:
        raise CmdError("param", message="the topic contains NUL")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if not wildcards and ("+" in level or "#" in level):
            raise CmdError("param", message="wildcards are not allowed in a publish topic")
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
            raise CmdError("param", message="misplaced wildcard in the topic filter")
    return topic


class MqttCommands:
    """Mixin of :class:`MicrochipWinc`: one MQTT session through the configured broker."""

    # ================================================================== MQTT
    @command("+MQTTC", Form.EXEC, family="mqtt", doc="Read MQTT configuration (1 BROKER_ADDR, 2 BROKER_PORT, 3 CLIENT_ID, 4 USERNAME, 5 PASSWORD*, 6 KEEP_ALIVE*, 7 TLS_CONF_IDX)")
    @command("+MQTTC", Form.WRITE, Int("param_id"), Str("param_val", quoted=None, optional=True), family="mqtt")
    async def mqttc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        if pid is None:
            for i in self.MQTTC:
                if i == 5:
                    continue  # the password is write-only
                ctx.info(self._cfg_line("MQTTC", i, self.cfg["MQTTC"][i]))
            return
        if pid == 5 and val is None:
            raise CmdError("param", message="the password cannot be read")
        self._cfg(ctx, "MQTTC", self.MQTTC, self.cfg["MQTTC"], pid, val, writable=lambda: self.mqtt_state == 0)

    @command("+MQTTCONN", Form.EXEC, family="mqtt", doc="Connect (or, when connected, report +MQTTCONN:1)")
    @command("+MQTTCONN", Form.WRITE, Int("CLEAN", 0, 1), family="mqtt")
    async def mqttconn(self, ctx: Ctx, clean: int | None = None) -> None:
        if self.mqtt_state == 2:
            if clean is None:
                ctx.info("+MQTTCONN:1")
                return
            raise self.fail(E_STATE, "already connected")
        if self.mqtt_state == 1:
            raise self.fail(E_BUSY, "connect in progress")
        self.need_link()
        c = self.cfg["MQTTC"]
        if not c[1]:
            raise self.fail(E_STATE, "no broker configured")
        tls = None
        host = sfx(c[1])
        if c[7]:
            tls, sni = self._tls_context(c[7], host)
        else:
            sni = None
        from atemu.net.mqtt import MqttSession
        session = MqttSession(client_id=sfx(c[3]), host=host, port=c[2], resolver=self.module.resolver, tls=tls,
                              server_hostname=sni, keepalive=c[6], clean_session=clean != 0,
                              username=sfx(c[4]) or None, password=c[5] or None,
                              on_message=self._mqtt_message, on_disconnect=self._mqtt_disconnected,
                              **self._mqtt_options())
        self.mqtt = session
        self.mqtt_state = 1
        self.mqtt_subs.clear()
        ctx.ok()
        self.module.spawn(self._mqtt_connect(session))

    def _mqtt_options(self) -> dict:
        """More MqttSession arguments a dialect configures (protocol version, will)."""
        return {}

    async def _mqtt_connect(self, session) -> None:
        try:
            rc = await session.connect()
        except NetError as e:
            log.info("MQTT connect failed: %s", e)
            if self.mqtt is session:
                self.mqtt = None
                self.mqtt_state = 0
                self.urc("+MQTTCONN:0")
            return
        if self.mqtt is not session:
            session.close()
            return
        self.urc(f"+MQTTCONNACK:{int(bool(session.session_present))},{self._connack_code(rc)}")
        if rc == 0:
            self.mqtt_state = 2
            self.urc("+MQTTCONN:1")
        else:
            self.mqtt = None
            self.mqtt_state = 0
            self.urc("+MQTTCONN:0")

    def _connack_code(self, rc: int) -> int:
        """The CONNACK return code as the dialect reports it (default: as the broker sent it)."""
        return rc

    def _mqtt_message(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        self.urc(f"+MQTTPUBRX:0,{qos},{int(bool(retain))},{self.fmt(topic)},{len(payload)},{self.fmt(payload)}")

    def _mqtt_disconnected(self, reason: str, rc: int) -> None:
        if self.mqtt_state == 0:
            return
        self.mqtt = None
        self.mqtt_state = 0
        self._sub_pending = False
        self.mqtt_subs.clear()
        self.urc("+MQTTCONN:0")

    async def _mqtt_drop(self) -> None:
        s, self.mqtt = self.mqtt, None
        self.mqtt_state = 0
        self.mqtt_subs.clear()
        if s is not None:
            s.close()

    def _need_mqtt(self):
        if self.mqtt_state != 2 or self.mqtt is None or not self.mqtt.connected:
            raise self.fail(E_NOLINK, "MQTT not connected")
        return self.mqtt

    @command("+MQTTSUB", Form.WRITE, Str("TOPIC_NAME", quoted=True, min_len=1, max_len=256), Int("MAX_QOS", 0, 2, optional=True, default=0),
             family="mqtt", doc="Subscribe: OK, then +MQTTSUB:0 (ok) or 1 (failed)")
    async def mqttsub(self, ctx, topic: str, qos: int) -> None:
        s = self._need_mqtt()
        topic = _topic(ctx, 0, wildcards=True)
        if self._sub_pending:
            raise self.fail(E_BUSY, "a subscribe is pending")
        self._sub_pending = True
        ctx.ok()
        self.module.spawn(self._subscribe(s, topic, qos))

    async def _subscribe(self, s, topic: str, qos: int) -> None:
        try:
            granted = await s.subscribe([(topic, qos)], timeout=self.ack_timeout)
            ok = bool(granted) and granted[0] < 0x80
        except NetError as e:
            log.info("subscribe failed: %s", e)
            ok = False
        finally:
            self._sub_pending = False
        if ok:
            self.mqtt_subs[topic] = qos
        if self.mqtt is s:
            self.urc(f"+MQTTSUB:{0 if ok else 1}")

    @command("+MQTTUNSUB", Form.WRITE, Str("TOPIC_NAME", quoted=True, min_len=1, max_len=256), family="mqtt",
             doc="Unsubscribe: OK, then +MQTTUNSUB:2 (ok) or 1 (failed)")
    async def mqttunsub(self, ctx, topic: str) -> None:
        s = self._need_mqtt()
        topic = _topic(ctx, 0, wildcards=True)
        ctx.ok()
        self.module.spawn(self._unsubscribe(s, topic))

    async def _unsubscribe(self, s, topic: str) -> None:
        ok = topic in self.mqtt_subs
        if ok:
            try:
                await s.unsubscribe([topic], timeout=self.ack_timeout)
                self.mqtt_subs.pop(topic, None)
            except NetError:
                ok = False
        if self.mqtt is s:
            self.urc(f"+MQTTUNSUB:{2 if ok else 1}")

    @command("+MQTTPUB", Form.WRITE, Int("DUP", 0, 1), Int("QOS", 0, 2), Int("RETAIN", 0, 1),
             Str("TOPIC_NAME", quoted=True, min_len=1, max_len=256), Bytes("TOPIC_PAYLOAD", quoted=True, max_len=MAX_DATA),
             family="mqtt", doc="Publish: OK, then +MQTTPUBACC (QoS 1), +MQTTPUBCOMP (QoS 2) or +MQTTPUBERR")
    async def mqttpub(self, ctx, dup: int, qos: int, retain: int, topic: str, payload: bytes) -> None:
        s = self._need_mqtt()
        topic = _topic(ctx, 3, wildcards=False)
        ctx.ok()
        self.module.spawn(self._publish(s, topic, payload, qos, bool(retain)))

    async def _publish(self, s, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        try:
            await s.publish(topic, payload, qos=qos, retain=retain, timeout=self.ack_timeout)
        except NetError as e:
            log.info("publish failed: %s", e)
            self.urc("+MQTTPUBERR")
            return
        if qos == 1:
            self.urc("+MQTTPUBACC")
        elif qos == 2:
            self.urc("+MQTTPUBCOMP")

    @command("+MQTTDISCONN", Form.EXEC, family="mqtt", doc="Disconnect: OK, then +MQTTCONN:0")
    @command("+MQTTDISCONN", Form.WRITE, Int("REASON_CODE", 0, 255), family="mqtt")
    async def mqttdisconn(self, ctx, reason: int | None = None) -> None:
        if self.mqtt_state == 0 or self.mqtt is None:
            raise self.fail(E_NOLINK, "not connected")
        s = self.mqtt
        ctx.ok()
        self.module.spawn(self._disconnect(s))

    async def _disconnect(self, s) -> None:
        self.mqtt = None
        self.mqtt_state = 0
        self.mqtt_subs.clear()
        try:
            await s.disconnect()
        except Exception:
            s.close()
        self.urc("+MQTTCONN:0")
