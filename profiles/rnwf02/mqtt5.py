"""RNWF MQTT 5 properties: AT+MQTTPROPTX / +MQTTPROPTXS (what the module sends) and AT+MQTTPROPRX
with the +MQTTPROPRX AEC (what the broker sent).

The guide (9.10.1.8-9.10.1.10, 9.10.2.9): defined *and* selected transmit properties are added to
the MQTT packets they apply to; received properties are kept, announced by
``+MQTTPROPRX:<PROP_ID>`` and read with ``AT+MQTTPROPRX[=<ID>]``. Which ids can be sent, their
sizes, and ``AT+MQTTPROPTXS=0,<sel>`` (0 = every property) come from Microchip's WINCS02 driver
(the same firmware over SPI), which also shows that the properties of a PUBLISH are announced
before its ``+MQTTSUBRX`` and that the will's properties are taken when ``AT+MQTTLWT`` is given.
The packets are real: the core MQTT session sends them through paho (``atemu.net.mqtt``).
"""
from __future__ import annotations

from typing import Any

from atemu.grammar import Bytes, Form, Int, Str
from atemu.net.mqtt import props_for
from atemu.profile import CmdError, command

from atemu.profiles.microchip_common.common import E_NORES, E_STATE, MAX_DATA, arg_bytes
from atemu.profiles.microchip_common.mqtt import _topic

#: transmit properties (the WINCS02 firmware's selectable ids): id -> (name, kind, low, high / max length)
TX = {
    1: ("PAYLOAD_FORMAT_IND", "int", 0, 1), 2: ("MSG_EXPIRY_INTERVAL", "int", 0, 0xFFFFFFFF),
    3: ("CONTENT_TYPE", "str", 0, 16), 8: ("RESP_TOPIC", "str", 1, 16), 9: ("CORRELATION_DATA", "bin", 0, 16),
    11: ("SUBSCRIPTION_ID", "int", 1, 268435455), 17: ("SESSION_EXPIRY_INTERVAL", "int", 0, 0xFFFFFFFF),
    23: ("REQ_PROB_INFO", "int", 0, 1), 24: ("WILL_DELAY_INTERVAL", "int", 0, 0xFFFFFFFF),
    25: ("REQ_RESP_INFO", "int", 0, 1), 31: ("REASON_STR", "str", 0, 32), 33: ("RECEIVE_MAX", "int", 1, 65535),
    34: ("TOPIC_ALIAS_MAX", "int", 0, 65535), 35: ("TOPIC_ALIAS", "int", 1, 65535),
    38: ("USER_PROP", "pair", 0, 0), 39: ("MAX_PACKET_SZ", "int", 1, 268435455),
}
USER_PROPS = 10          # the guide: 38 is a multiple value parameter 38.0-38.9
ALL = 0                  # AT+MQTTPROPTXS=0,<sel>: every property (WINC_CONST_MQTT_PROP_ID_ALL)
#: MQTT 5 property ids the broker can send (CONNACK, PUBLISH, acks, DISCONNECT)
RX_IDS = (1, 2, 3, 8, 9, 11, 17, 18, 19, 21, 22, 26, 28, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42)


def _utf8(arg, name: str) -> str:
    """A string property as MQTT 5 carries it: UTF-8 without NUL (a broker drops a client that
    sends another: refused here, as a malformed topic is)."""
    try:
        text = arg_bytes(arg).decode("utf-8")
    except UnicodeDecodeError:
        raise CmdError("param", message=f"{name} must be UTF-8") from None
    if "\x00" in text:
        raise CmdError("param", message=f"{name} must not contain NUL")
    return text


class Mqtt5Commands:
    """Mixin of :class:`Rnwf02`: the MQTT 5 property tables and what goes on the wire."""

    def _mqtt5_init(self) -> None:
        self.prop_tx: dict[int, Any] = {}                 # defined transmit values (38: list of pairs)
        self.prop_tx[38] = []
        self.prop_sel: set[int] = set()                   # AT+MQTTPROPTXS selections
        self.prop_rx: dict[int, Any] = {}                 # received values (38: list of pairs)
        self.lwt_props: list = []                         # the will's properties, taken at AT+MQTTLWT
        self.proprx_values = str(self.option("proprx_values", False)).lower() in ("1", "true", "yes")

    # ------------------------------------------------------------------ what is sent
    def _tx_props(self, packet: str) -> list:
        """The defined and selected transmit properties ``packet`` may carry (MQTT 5 only)."""
        if self.cfg["MQTTC"][8] != 5:
            return []
        pairs: list = []
        for pid in sorted(self.prop_sel):
            if pid == 38:
                pairs += [(38, (k, v)) for k, v in self.prop_tx[38]]
            elif pid in self.prop_tx:
                pairs.append((pid, self.prop_tx[pid]))
        return props_for(packet, pairs)

    def _connack_code(self, session, rc: int) -> int:
        """MQTT 5: the CONNACK's reason code (134 bad user name or password...), as the WINCS02
        firmware's CONN_REASON_CODE constants are; 3.1.1: its return code."""
        return (session.connack_reason if session.protocol == 5 and session.connack_reason is not None
                else super()._connack_code(session, rc))

    def _mqtt_props(self, packet: str) -> dict:
        props = self._tx_props(packet)
        return {"properties": props} if props else {}

    # ------------------------------------------------------------------ what is received
    def _mqtt_received(self, packet: str, props: list) -> None:
        """Properties of a packet from the broker: keep them, announce each id once (in packet
        order), before the AEC of the packet itself (+MQTTCONNACK, +MQTTSUBRX...)."""
        order: list[int] = []
        for pid, value in props:
            first = pid not in order
            if first:
                order.append(pid)
            if pid == 38:
                if first:
                    self.prop_rx[38] = []              # a packet's user properties replace the last ones
                if len(self.prop_rx[38]) < USER_PROPS:
                    self.prop_rx[38].append(value)
            elif first:                                # (11 may repeat: the first subscription id)
                self.prop_rx[pid] = value
        for pid in order:
            if not self.proprx_values:
                self.urc(f"+MQTTPROPRX:{pid}")
            elif pid == 38:
                for k, v in self.prop_rx[38]:
                    self.urc(f"+MQTTPROPRX:38,{self.fmt(k)},{self.fmt(v)}")
            else:
                self.urc(f"+MQTTPROPRX:{pid},{self._prop_text(self.prop_rx[pid])}")

    def _prop_text(self, v: Any) -> str:
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return self.fmt(v)
        b = bytes(v)
        if all(0x20 <= c < 0x7F for c in b):
            return self.fmt(b)
        return "[" + b.hex().upper() + "]"

    def _prop_lines(self, name: str, store: dict, pids) -> list[str]:
        out = []
        for pid in pids:
            if pid == 38:
                out += [f"{name}:38,{self.fmt(k)},{self.fmt(v)}" for k, v in store.get(38, [])]
            elif pid in store:
                out.append(f"{name}:{pid},{self._prop_text(store[pid])}")
        return out

    # ------------------------------------------------------------------ commands
    @command("+MQTTPUB", Form.WRITE, Int("DUP", 0, 1), Int("QOS", 0, 2), Int("RETAIN", 0, 1),
             Str("TOPIC_NAME", quoted=None, min_len=1, max_len=256), Bytes("TOPIC_PAYLOAD", quoted=True, max_len=MAX_DATA),
             family="mqtt", doc="Publish: OK, then +MQTTPUBACK (QoS 1), +MQTTPUBCOMP (QoS 2) or +MQTTPUBERR. "
                                "MQTT 5: an unquoted number as TOPIC_NAME publishes by that topic alias alone")
    async def mqttpub(self, ctx, dup: int, qos: int, retain: int, topic: str, payload: bytes) -> None:
        s = self._need_mqtt()
        arg = ctx.line.args[3]
        props = self._tx_props("PUBLISH")
        if arg.quoted or arg.hexed:
            topic = _topic(ctx, 3, wildcards=False)
        else:
            # the WINCS02 driver's integer <TOPIC_NAME>: a topic alias the broker learnt from an
            # earlier PUBLISH that carried the topic and TOPIC_ALIAS (35)
            text = arg.text.strip()
            if self.cfg["MQTTC"][8] != 5 or not text.isdigit() or not 1 <= int(text) <= 65535:
                raise CmdError("param", message="the topic is a quoted string (or, with MQTT 5, a topic alias 1-65535)")
            topic = ""
            props = [p for p in props if p[0] != 35] + [(35, int(text))]
        ctx.ok()
        self.module.spawn(self._publish(s, topic, payload, qos, bool(retain), properties=props or None))

    @command("+MQTTPROPTX", Form.EXEC, family="mqtt", doc="List the defined MQTT 5 transmit properties")
    @command("+MQTTPROPTX", Form.WRITE, Int("ID", 0, 255), Str("VAL", quoted=None, optional=True),
             Str("VALS", quoted=None, optional=True), family="mqtt",
             doc="Read or set a transmit property (sent when selected by +MQTTPROPTXS): 1 PAYLOAD_FORMAT_IND, "
                 "2 MSG_EXPIRY_INTERVAL, 3 CONTENT_TYPE, 8 RESP_TOPIC, 9 CORRELATION_DATA, 11 SUBSCRIPTION_ID, "
                 "17 SESSION_EXPIRY_INTERVAL, 23 REQ_PROB_INFO, 24 WILL_DELAY_INTERVAL, 25 REQ_RESP_INFO, "
                 "31 REASON_STR, 33 RECEIVE_MAX, 34 TOPIC_ALIAS_MAX, 35 TOPIC_ALIAS, 38 USER_PROP "
                 "(38,<KEY>,<VALS> adds, 38,<KEY> removes), 39 MAX_PACKET_SZ")
    async def mqttproptx(self, ctx, pid: int | None = None, val: Any = None, vals: Any = None) -> None:
        if pid is None:
            for line in self._prop_lines("+MQTTPROPTX", self.prop_tx, sorted(TX)):
                ctx.info(line)
            return
        if pid not in TX:
            raise CmdError("param", message=f"no transmit property {pid}")
        name, kind, lo, hi = TX[pid]
        args = ctx.line.args
        if val is None:
            for line in self._prop_lines("+MQTTPROPTX", self.prop_tx, [pid]):
                ctx.info(line)
            return
        if kind == "pair":
            key = _utf8(args[1], name)
            pairs = [(k, v) for k, v in self.prop_tx[38] if k != key]
            if vals is not None:
                if not key:
                    raise CmdError("param", message="a user property needs a key")
                if len(pairs) >= USER_PROPS:
                    raise self.fail(E_NORES, f"at most {USER_PROPS} user properties")
                pairs.append((key, _utf8(args[2], name)))
            self.prop_tx[38] = pairs
            return
        if vals is not None:
            raise CmdError("param", param_kind="count", message=f"{name} takes one value")
        arg = args[1]
        if kind == "int":
            if arg.quoted or arg.hexed or not arg.text.strip().isdigit():
                raise CmdError("param", message=f"{name} is a number")
            v = int(arg.text)
            if not lo <= v <= hi:
                raise CmdError("param", message=f"{name} must be in {lo}..{hi}")
            self.prop_tx[pid] = v
            return
        if not (arg.quoted or arg.hexed):
            raise CmdError("param", message=f"{name} is a string")
        b = arg_bytes(arg)
        if not lo <= len(b) <= hi:
            raise CmdError("param", message=f"{name} is {lo}..{hi} bytes long")
        if kind == "str":
            text = _utf8(arg, name)
            if pid == 8 and ("+" in text or "#" in text):
                raise CmdError("param", message="a response topic has no wildcards")
            self.prop_tx[pid] = text
        else:
            self.prop_tx[pid] = b

    @command("+MQTTPROPTXS", Form.EXEC, family="mqtt", doc="List which transmit properties are selected: +MQTTPROPTXS:<PROP_ID>,<PROP_SEL>")
    @command("+MQTTPROPTXS", Form.WRITE, Int("PROP_ID", 0, 255), Int("PROP_SEL", 0, 1, optional=True), family="mqtt",
             doc="Select (1) or deselect (0) a transmit property; PROP_ID 0 = every property")
    async def mqttproptxs(self, ctx, pid: int | None = None, sel: int | None = None) -> None:
        if pid is not None and pid != ALL and pid not in TX:
            raise CmdError("param", message=f"no transmit property {pid}")
        ids = sorted(TX) if pid in (None, ALL) else [pid]
        if sel is None:
            for i in ids:
                ctx.info(f"+MQTTPROPTXS:{i},{int(i in self.prop_sel)}")
            return
        if sel:
            self.prop_sel.update(ids)
        else:
            self.prop_sel.difference_update(ids)

    @command("+MQTTPROPRX", Form.EXEC, family="mqtt", doc="List the MQTT 5 properties received from the broker")
    @command("+MQTTPROPRX", Form.WRITE, Int("ID", 0, 255), Str("VAL", quoted=None, optional=True), family="mqtt",
             doc="Read one received property (read-only): +MQTTPROPRX:<ID>,<VAL> (38: +MQTTPROPRX:38,<KEY>,<VALS> per pair)")
    async def mqttproprx(self, ctx, pid: int | None = None, val: Any = None) -> None:
        if pid is not None and pid not in RX_IDS:
            raise CmdError("param", message=f"no receive property {pid}")
        if val is not None:
            raise self.fail(E_STATE, "receive properties are read-only")
        for line in self._prop_lines("+MQTTPROPRX", self.prop_rx, RX_IDS if pid is None else [pid]):
            ctx.info(line)
