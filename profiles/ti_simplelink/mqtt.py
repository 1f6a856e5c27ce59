"""MQTT client family on atemu.net.mqtt.MqttSession (real broker, optional TLS from flash files)."""
from __future__ import annotations

import logging

from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.net.mqtt import MqttSession
from atemu.net.tls import client_context
from atemu.profile import command

from .common import (E_MQTT, E_MQTT_BAD_INDEX, E_MQTT_STATE, OS, S, count_error, decode_data, encode_data, fail,
                     flags_of, free_index, lookup, net_fail, nwp, param_error, parse_ip, parse_num, pick)
from .sockets import MQTT_CIPHERS, SECMETHODS, cipher_string, tls_versions

log = logging.getLogger("atemu.ti")

MAX_CLIENTS = 4
CREATE_FLAGS = ("ip4", "ip6", "url", "sec", "skip_domain_verify", "skip_cert_verify", "skip_date_verify")
QOS = {"qos0": 0, "qos1": 1, "qos2": 2}


def qos_of(text) -> int:
    t = str(text or "").strip().lower().replace(" ", "")
    if t in QOS:
        return QOS[t]
    if t in ("0", "1", "2"):
        return int(t)
    if not t:
        raise count_error("missing QoS")
    raise param_error("QoS is qos0, qos1 or qos2")


def topic_groups(count: int, fields: tuple, width: int) -> list[tuple]:
    """MqttSubscribe (topic,qos,persistent) / MqttUnsubscribe (topic,persistent) groups: the first
    ``count`` must name a topic, later ones must be empty; persistent is 0 or 1. Returns the groups
    without their persistent flag."""
    out = []
    for i in range(4):
        group = fields[width * i:width * i + width]
        if i < count:
            if not group[0]:
                raise count_error(f"topic {i + 1} is missing")
            if group[-1] is not None:
                parse_num(group[-1], 0, 1, "persistent")
            out.append(tuple(group[:-1]))
        elif any(x is not None for x in group):
            raise count_error("more topics than the count says")
    return out


class MqttMixin:
    def mqtt_client(self, idx: int) -> dict:
        return lookup(self.mqtt, idx, E_MQTT_BAD_INDEX, "MQTT client")

    def mqtt_fmt(self, args) -> int | None:
        try:
            idx = int(args[0].text.strip(), 0)
        except (ValueError, IndexError):
            return None
        c = self.mqtt.get(idx)
        return None if c is None else c["fmt"]

    async def mqtt_close_all(self, emit: bool) -> None:
        for c in self.mqtt.values():
            s = c.get("session")
            if s is not None:
                was = s.connected
                s.on_disconnect = None
                s.close()
                c["session"] = None
                if emit and was:
                    self.module.urc("+eventmqtt:disconnect")

    # ---- commands -------------------------------------------------------------------------------
    @command("+MqttCreate", Form.WRITE, S("client_id", min_len=1, max_len=128), S("flags"), S("address", min_len=1, max_len=255),
             Int("port", 1, 65535), OS("method"), OS("cipher"), OS("private_key"), OS("certificate"), OS("ca"), OS("dh_key"),
             Keyword("protocol", values={"v3_1": 3, "v3_1_1": 4}), Int("blocking_send", 0, 1), Int("data_format", 0, 1),
             family="mqtt", doc="Create an MQTT client: +mqttcreate:<index>")
    @nwp
    async def at_mqttcreate(self, ctx: Ctx, cid, flags, address, port, method, cipher, key, cert, ca, dh, proto, blocking, fmt) -> None:
        fl = flags_of(flags, CREATE_FLAGS, "flag")
        if "url" not in fl:
            parse_ip(address, 6 if "ip6" in fl else 4)
        if "sec" in fl:
            if not method:
                raise count_error("a secure client needs the method")
            if not ca and "skip_cert_verify" not in fl:
                raise count_error("a secure client needs the CA file")
        meth = pick(method, SECMETHODS, "method") if method else None
        ciphers = flags_of(cipher, [c for c, _ in MQTT_CIPHERS], "cipher") if cipher else []
        i = free_index(self.mqtt, MAX_CLIENTS, E_MQTT, "MQTT client")
        self.mqtt[i] = {"client_id": cid, "flags": fl, "address": address, "port": port, "method": meth,
                        "ciphers": ciphers, "key": key, "cert": cert, "ca": ca, "dh": dh, "protocol": proto,
                        "blocking": blocking, "fmt": fmt, "user": None, "password": None, "will": None,
                        "keepalive": 60, "clean": 1, "session": None}
        ctx.info(f"+mqttcreate:{i}")

    @command("+MqttDelete", Form.WRITE, Int("index", 0, 255), family="mqtt", doc="Delete a (disconnected) MQTT client")
    @nwp
    async def at_mqttdelete(self, ctx: Ctx, idx: int) -> None:
        c = self.mqtt_client(idx)
        if c["session"] is not None and c["session"].connected:
            raise fail(E_MQTT_STATE, "disconnect the client first")
        self.mqtt.pop(idx)

    @command("+MqttConnect", Form.WRITE, Int("index", 0, 255), family="mqtt",
             doc="Connect to the broker; +eventmqtt:operation,connack,<flags<<8|return code> follows")
    @nwp
    async def at_mqttconnect(self, ctx: Ctx, idx: int) -> None:
        c = self.mqtt_client(idx)
        if c["session"] is not None and c["session"].connected:
            raise fail(E_MQTT_STATE, "already connected")
        self.need_ip()
        fl = c["flags"]
        tls = None
        if "sec" in fl:
            lo, hi = tls_versions(c["method"])
            try:
                tls = client_context(
                    ca=self.fs_read_material(c["ca"]) if c["ca"] else None,
                    cert=self.fs_read_material(c["cert"]) if c["cert"] else None,
                    key=self.fs_read_material(c["key"]) if c["key"] else None,
                    verify="skip_cert_verify" not in fl,
                    check_hostname="skip_domain_verify" not in fl,
                    ignore_time="skip_date_verify" in fl,
                    min_version=lo, max_version=hi, ciphers=cipher_string(c["ciphers"], MQTT_CIPHERS))
            except NetError as e:
                raise net_fail(e) from None
        will = None
        if c["will"] is not None:
            t, q, r, payload = c["will"]
            will = (t, payload, q, bool(r))
        fmt = c["fmt"]

        def on_message(topic, payload, qos, retain, mid):
            head = f"+eventmqtt:recv,{topic},qos{qos},{1 if retain else 0},0,".encode()
            self.module.urc(head + encode_data(fmt, payload))

        def on_disconnect(reason, rc):
            self.module.urc("+eventmqtt:disconnect")

        session = MqttSession(client_id=c["client_id"], host=c["address"], port=c["port"], resolver=self.module.resolver,
                              tls=tls, keepalive=c["keepalive"], clean_session=bool(c["clean"]), protocol=c["protocol"],
                              username=c["user"], password=c["password"], will=will, connect_timeout=10.0,
                              on_message=on_message, on_disconnect=on_disconnect)
        try:
            rc = await session.connect()
        except NetError as e:
            session.close()
            raise net_fail(e) from None
        if rc == 0:
            c["session"] = session
        code = ((1 if session.session_present else 0) << 8) | rc
        self.module.urc(f"+eventmqtt:operation,connack,{code}")

    @command("+MqttDisconnect", Form.WRITE, Int("index", 0, 255), family="mqtt", doc="Disconnect; +eventmqtt:disconnect follows")
    @nwp
    async def at_mqttdisconnect(self, ctx: Ctx, idx: int) -> None:
        c = self.mqtt_client(idx)
        s = c["session"]
        if s is None or not s.connected:
            raise fail(E_MQTT_STATE, "not connected")
        await s.disconnect()
        c["session"] = None

    def connected_session(self, c: dict) -> MqttSession:
        s = c["session"]
        if s is None or not s.connected:
            raise fail(E_MQTT_STATE, "not connected")
        return s

    async def mqtt_op(self, c: dict, coro, on_done) -> None:
        """Blocking-send clients wait for the broker's answer before OK; others get OK at once."""
        async def run(emit_errors: bool):
            try:
                res = await coro
            except NetError as e:
                if emit_errors:
                    raise net_fail(e) from None
                log.info("MQTT operation failed: %s", e)
                return
            on_done(res)
        if c["blocking"]:
            await run(True)
        else:
            self.module.spawn(run(False), name="mqtt-op")

    @command("+MqttPublish", Form.WRITE, Int("index", 0, 255), S("topic", min_len=1, max_len=1024), S("qos"),
             Int("retain", 0, 1), Int("length", 0, 65535), Raw("message", length_param="length", format_param=None, optional=True),
             family="mqtt", doc="Publish (message in the client's data format); QoS 1/2: +eventmqtt:operation,puback,<id>")
    @nwp
    async def at_mqttpublish(self, ctx: Ctx, idx: int, topic: str, qos, retain: int, length: int, message) -> None:
        c = self.mqtt_client(idx)
        q = qos_of(qos)
        payload = decode_data(c["fmt"], message, length)
        s = self.connected_session(c)
        if any(ch in topic for ch in "+#"):
            raise param_error("no wildcards in a publish topic")

        def done(mid):
            if q:
                self.module.urc(f"+eventmqtt:operation,puback,{mid}")
        await self.mqtt_op(c, s.publish(topic, payload, qos=q, retain=bool(retain)), done)

    @command("+MqttSubscribe", Form.WRITE, Int("index", 0, 255), Int("count", 1, 4),
             *[p for i in range(1, 5) for p in (OS(f"topic{i}"), OS(f"qos{i}"), OS(f"persistent{i}"))],
             family="mqtt", doc="Subscribe to 1..4 topics: +eventmqtt:operation,suback,<id>,<granted QoS...>")
    @nwp
    async def at_mqttsubscribe(self, ctx: Ctx, idx: int, count: int, *fields) -> None:
        c = self.mqtt_client(idx)
        topics = [(t, qos_of(q)) for t, q in topic_groups(count, fields, 3)]
        s = self.connected_session(c)

        async def sub():
            granted = await s.subscribe(topics)
            return s.last_mid, granted

        def done(res):
            mid, granted = res
            self.module.urc("+eventmqtt:operation,suback," + ",".join(str(x) for x in [mid, *granted]))
        await self.mqtt_op(c, sub(), done)

    @command("+MqttUnsubscribe", Form.WRITE, Int("index", 0, 255), Int("count", 1, 4),
             *[p for i in range(1, 5) for p in (OS(f"topic{i}"), OS(f"persistent{i}"))],
             family="mqtt", doc="Unsubscribe: +eventmqtt:operation,unsuback,<id>")
    @nwp
    async def at_mqttunsubscribe(self, ctx: Ctx, idx: int, count: int, *fields) -> None:
        c = self.mqtt_client(idx)
        topics = [t for (t,) in topic_groups(count, fields, 2)]
        s = self.connected_session(c)

        async def unsub():
            await s.unsubscribe(topics)
            return s.last_mid

        await self.mqtt_op(c, unsub(), lambda mid: self.module.urc(f"+eventmqtt:operation,unsuback,{mid}"))

    @command("+MqttSet", Form.WRITE, Int("index", 0, 255), Keyword("option", values={k: k for k in ("user", "password", "will", "keepalive", "clean")}),
             OS("value1"), OS("value2"), OS("value3"), OS("value4"), Raw("value5", length_param="value4", format_param=None, optional=True),
             family="mqtt", doc="Set user, password, will (topic,qos,retain,length,message), keepalive, clean (before connect)")
    @nwp
    async def at_mqttset(self, ctx: Ctx, idx: int, option: str, v1, v2, v3, v4, v5) -> None:
        c = self.mqtt_client(idx)
        if c["session"] is not None and c["session"].connected:
            raise fail(E_MQTT_STATE, "options are set before MqttConnect")
        if option != "will" and any(v is not None for v in (v2, v3, v4, v5)):
            raise count_error(f"{option} takes one value")
        if option in ("user", "password"):
            if v1 is None:
                raise count_error("missing value")
            c[option] = v1
        elif option == "keepalive":
            c["keepalive"] = parse_num(v1, 0, 0xFFFF, "keepalive")
        elif option == "clean":
            c["clean"] = parse_num(v1, 0, 1, "clean")
        else:
            if v1 is None or v2 is None or v3 is None or v4 is None:
                raise count_error("will takes topic, QoS, retain, length and message")
            n = parse_num(v4, 0, 65535, "length")
            c["will"] = (v1, qos_of(v2), parse_num(v3, 0, 1, "retain"), decode_data(c["fmt"], v5, n))
