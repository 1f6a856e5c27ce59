"""Microchip WINC1500 / PIC32MZW1 AT firmware, 115200 8N1.

Manual: ../shared/specs/microchip-winc-at.txt; inventory and its numbered contradictions:
../shared/reference/inventory-microchip-winc.md. Every choice is listed in ``DEVIATIONS`` and
explained in ``README.md`` next to this file.

This file assembles the profile class (metadata, configuration tables, state, shared plumbing);
the commands live in one mixin per manual chapter: ``general.py`` (ch. 3), ``wlan.py`` (ch. 4-5),
``mqtt.py`` (ch. 6), ``sockets.py`` (ch. 7); ``common.py`` holds codes and string helpers.

Lines end with CR (a following LF is ignored); responses end with CR LF; information lines come
before ``OK``, AECs after it. Strings are accepted quoted or as ``[hex]`` and printed quoted when
they are printable ASCII without ``"``, else as ``[hex]``.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from atemu.files import FlashFS
from atemu.grammar import Arg, Dialect, Engine, UrcSpec
from atemu.profile import CmdError, Profile

from .common import (E_UNKNOWN, E_PARAM, E_STATE, E_BUSY, E_NOLINK, E_INTERNAL, MAX_DATA, TLS_CONFS, MAC,
                     fmt_str, arg_bytes, _P)

from .general import GeneralCommands
from .mqtt import MqttCommands
from .sockets import Sock, SocketCommands
from .wlan import WlanCommands

DEVIATIONS = [
    "M1: AT+SOCKWRTO is the canonical name; AT+SOCKWRT0 (digit zero, as in the heading) is accepted as an alias.",
    "M3: AT+GMR answers +GMR:<CHIP_ID>,<FW_VER>,<DRV_VER>,<RB_FW> as in the example (not +VER:); world option microchip-winc.gmr_prefix=\"+VER\" switches.",
    "M4: AT+LOWPOWER=4 (or bare AT+LOWPOWER) answers OK, then the module is silent and ignores the UART until wake() (control plane: profile.wake()). Modes 0-3 are placeholders: ERROR:2. Sleeping drops the WLAN link, soft-AP, sockets and MQTT silently.",
    "M5: AT+READCERT[=<TYPE>] answers +READCERT:<TYPE>,<LENGTH>,<DATA> (DER, printed as [hex]) then OK; the TNG device/root certificates are generated once per state dir; type 3 without a loaded certificate: ERROR:9. Default type 1.",
    "M6: AT+LOADCERT=<LEN>,<NAME>: no prompt; the host sends '#' then LEN bytes (LEN 0: bytes until +++; LEN>0: +++ before LEN bytes aborts). Then +LOADCERT:0 and OK, or +LOADCERT:1 and ERROR:9 (not a PEM/DER certificate or key, or over 1500 bytes).",
    "M7: SEC_TYPE in WSTAC: 0 open,1 WEP,2 WPA,3 WPA2,4 WPA2/WPA3 mixed,5 WPA3. Reports (+WSCNIND, +WSTA): 0 open,1 WEP,2 WPA,3 WPA2 (also WPA/WPA2 and WPA2/WPA3 transition APs),4 Enterprise,5 WPA3 - active and passive scans alike. WAPC: 0-3 only (4 Enterprise refused with ERROR:2).",
    "M8: +WSCNP <SSID> is a string like +WSCNA.",
    "M10: WSCNC defaults 30 ms (active) and 300 ms (passive); a scan lasts that long.",
    "M11/M16: credentials: WEP 'KEYINDEX*KEY' (the key after '*' must match; a bare key is accepted), WPA/WPA2/WPA3 the passphrase.",
    "M12: +WSTA reports the AP's RSSI from the world (the example's -50 style), not 0.",
    "M14/M15: AECs are printed without spaces: +WSTALD:<ASSOC_ID> always carries the id; spaces after commas are accepted on input.",
    "M17: +WAP:<STATE>[,<BSSID>,<RSSI>] lists the first associated station.",
    "M19: empty strings print as \"\"; only the unused WPROVC PIN prints as [] (as in the example).",
    "Bare AT+WPROV starts provisioning (as AT+WPROV=1).",
    "M20: AT+WPROV=0 over the provisioning TCP link answers OK there, closes the link and stops the soft-AP, then +WPROVEXIT on the UART; AT+WPROV=0 on the UART stops quietly (OK only).",
    "Provisioning port: the TCP server listens on 127.0.0.1:<PROV_PORT>; if that port is taken the module falls back to an OS-chosen free port (logged, readable as profile.provisioning_port).",
    "M22: bare AT+MQTTCONN answers +MQTTCONN:1 then OK when connected, otherwise it connects like AT+MQTTCONN=1.",
    "M23: +MQTTSUB <MAX_QOS> is optional (default 0); a second AT+MQTTSUB while one awaits its SUBACK answers ERROR:6.",
    "MQTT topics are the bytes written ([hex] byte for byte) and must be UTF-8 without NUL, with well-placed wildcards (filters) or none (publish), else ERROR:2.",
    "M24: +MQTTUNSUB:<RESULT> follows the table: 2 = succeeded, 1 = failed (topic not subscribed or no UNSUBACK).",
    "M25 (extension): incoming messages are reported as +MQTTPUBRX:<DUP>,<QOS>,<RETAIN>,<TOPIC>,<LENGTH>,<PAYLOAD> (strings quoted or [hex]); loss of the broker gives +MQTTCONN:0.",
    "M21 (extension): MQTTC also has id 5 PASSWORD and id 6 KEEP_ALIVE (s, default 60); id 7 TLS_CONF_IDX 0 = plain MQTT, n = +TLSC configuration n.",
    "M29: +SOCKIND after SOCKBL carries the NEW socket's id (as in the example); addresses are the real local/remote ones.",
    "M32: no AEC when a UDP socket is closed; UDP SOCKBR only sets the default destination (OK).",
    "M33: AT+SOCKTLS=<id>[,<conf>] (conf default 1) answers OK, then +SOCKTLS:<id> or +SOCKERR:<id>,<code>,<msg> after the handshake.",
    "M35/M38/M39: SOCKWR/SOCKWRTO LENGTH 0..1500; without <DATA> the host sends '#' then exactly LENGTH raw bytes (+++ is data), or with LENGTH 0 raw bytes until +++ (TCP: any size, forwarded in ~1500-byte chunks as they fill; UDP: one datagram of at most 1500). OK follows the data. Inline data must be exactly LENGTH bytes.",
    "Binary phases: bytes before '#' are skipped; a host silent for data_timeout seconds (world option, default 10) abandons the transfer: nothing sent (TCP length 0: forwarded chunks stay sent), ERROR:8 (LOADCERT: +LOADCERT:1, ERROR:9).",
    "M40/M41: SOCKRD <LENGTH> counts payload bytes; mode 1 prints quoted ASCII or [hex]; mode 2 prints +SOCKRD:<id>,<n>,# then exactly n raw bytes, CR LF, OK.",
    "M42/M43: +SOCKRXT:<id>,<n> gives the total bytes buffered; it is sent when data arrives on an empty (or already read) buffer and again after a SOCKRD that leaves data. One +SOCKRXU per datagram; the next one follows the SOCKRD that consumed the previous (its unread remainder is discarded).",
    "M44: TLSC certificate names refer to the LOADCERT store; an empty CA name trusts the host's default roots; SERVER_NAME empty = the address given to SOCKBR/MQTTC (verified).",
    "M46: AT+PING sends one echo request: +PING:<IP>,<RTT ms>; no reply within 4 s: +PING:<IP>,-1; a name that does not resolve: +DNSERROR:<code>.",
    "M47/M31: error, +SOCKERR, +DNSERROR and +WSTAERR codes are atemu's (README tables).",
    "M51: echo is on after reset; ATE0/ATE1 switch it; bare ATE = ATE0.",
    "Errors are ERROR:<code> without a space everywhere (also LOWPOWER/READCERT).",
    "Sockets, DNS, ping and MQTT need a link: a station connection with an address or a running soft-AP (else ERROR:7).",
    "WINC1500 runs one mode at a time: AT+WSTA=1 while the soft-AP runs (or AT+WAP=1 while connected) answers ERROR:3; a scan while the plain soft-AP runs gives +WSCNERROR.",
]


class MicrochipWinc(SocketCommands, MqttCommands, WlanCommands, GeneralCommands, Profile):
    # (mixins listed last-first: the core collects commands along the reversed MRO, so `describe`
    # lists them in the manual's order: general, WLAN, MQTT, network stack)
    name = "microchip-winc"
    aliases = ("winc1500", "winc", "pic32mzw1", "microchip")
    summary = "Microchip WINC1500 / PIC32MZW1 Wi-Fi AT firmware (scan, STA, soft-AP, provisioning, sockets, TLS, MQTT)"
    default_baud = 115200
    dialect = Dialect(name="microchip", echo_default=True, hex_strings=True, test_forms=False,
                      leading_crlf=False, max_line=4096)
    families = ("general", "scan", "wlan", "mqtt", "socket", "tls", "dns", "ping")
    deviations = DEVIATIONS
    world_options = {
        "ack_timeout": "seconds MQTT SUBACK/UNSUBACK/PUBACK are awaited (default 10)",
        "data_timeout": "seconds of host silence after which a binary data phase is abandoned (default 10)",
        "gmr_prefix": "+GMR (default, as the example) or +VER (as the syntax table)",
        "bind_host": "host address listening sockets and provisioning bind (default 127.0.0.1 for TCP, 0.0.0.0 for UDP)",
        "multicast_iface": "host interface address for +SOCKBM memberships (default 127.0.0.1)",
    }
    urcs = [
        UrcSpec("+WSCNIND", "+WSCNIND:<RSSI>,<SEC_TYPE>,<CHANNEL>,<BSSID>,<SSID>", "one access point found by a scan", "scan"),
        UrcSpec("+WSCNDONE", "+WSCNDONE", "scan completed", "scan"),
        UrcSpec("+WSCNERROR", "+WSCNERROR", "scan failed (radio busy as soft-AP)", "scan"),
        UrcSpec("+WSTALU", "+WSTALU:<ASSOC_ID>,<BSSID>,<CHANNEL>", "station link up", "wlan"),
        UrcSpec("+WSTALD", "+WSTALD:<ASSOC_ID>", "station link down (AT+WSTA=0 or AP gone)", "wlan"),
        UrcSpec("+WSTAAIP", "+WSTAAIP:<ASSOC_ID>,<IP_ADDRESS>", "station got its address (DHCP)", "wlan"),
        UrcSpec("+WSTAERR", "+WSTAERR:<ERROR_CODE>", "station connection failed: 1 no AP, 2 wrong key, 3 security mismatch", "wlan"),
        UrcSpec("+WAPSC", "+WAPSC:<ASSOC_ID>,<BSSID>", "a station joined the soft-AP", "wlan"),
        UrcSpec("+WAPSD", "+WAPSD:<ASSOC_ID>,<BSSID>", "a station left the soft-AP", "wlan"),
        UrcSpec("+WAPAIP", "+WAPAIP:<ASSOC_ID>,<IP_ADDRESS>", "the soft-AP's DHCP server gave a station an address", "wlan"),
        UrcSpec("+WPROVEXIT", "+WPROVEXIT", "provisioning ended by AT+WPROV=0 over the provisioning link", "wlan"),
        UrcSpec("+MQTTCONNACK", "+MQTTCONNACK:<CONNACK_FLAGS>,<RETURN_CODE>", "broker answered CONNECT", "mqtt"),
        UrcSpec("+MQTTCONN", "+MQTTCONN:<CONN_STATE>", "MQTT connection state: 1 connected, 0 not connected", "mqtt"),
        UrcSpec("+MQTTSUB", "+MQTTSUB:<REASON_CODE>", "subscribe result: 0 ok, 1 failed", "mqtt"),
        UrcSpec("+MQTTUNSUB", "+MQTTUNSUB:<RESULT>", "unsubscribe result: 2 ok, 1 failed", "mqtt"),
        UrcSpec("+MQTTPUBACC", "+MQTTPUBACC", "QoS 1 publish acknowledged", "mqtt"),
        UrcSpec("+MQTTPUBCOMP", "+MQTTPUBCOMP", "QoS 2 publish completed", "mqtt"),
        UrcSpec("+MQTTPUBERR", "+MQTTPUBERR", "publish failed", "mqtt"),
        UrcSpec("+MQTTPUBRX", "+MQTTPUBRX:<DUP>,<QOS>,<RETAIN>,<TOPIC>,<LENGTH>,<PAYLOAD>",
                "(extension, not in the manual) a message arrived on a subscribed topic", "mqtt"),
        UrcSpec("+SOCKCL", "+SOCKCL:<SOCK_ID>", "the peer closed the socket (or it failed); AT+SOCKCL still needed", "socket"),
        UrcSpec("+SOCKIND", "+SOCKIND:<SOCK_ID>,<LCL_ADDR>,<LCL_PORT>,<RMT_ADDR>,<RMT_PORT>", "TCP connection established (SOCKBR) or accepted (SOCKBL, new socket id)", "socket"),
        UrcSpec("+SOCKERR", "+SOCKERR:<SOCK_ID>,<STATUS_CODE>,<STATUS_MSG>", "connect or TLS upgrade failed", "socket"),
        UrcSpec("+SOCKTLS", "+SOCKTLS:<SOCK_ID>", "TLS negotiation succeeded", "socket"),
        UrcSpec("+SOCKRXT", "+SOCKRXT:<SOCK_ID>,<LENGTH>", "TCP data available (bytes buffered)", "socket"),
        UrcSpec("+SOCKRXU", "+SOCKRXU:<SOCK_ID>,<RMT_ADDR>,<RMT_PORT>,<LENGTH>", "oldest UDP datagram available", "socket"),
        UrcSpec("+DNSRESOLV", "+DNSRESOLV:<TYPE>,<DOMAIN_NAME>,<QUERY_RESP>", "name resolved", "dns"),
        UrcSpec("+DNSERROR", "+DNSERROR:<ERROR_CODE>", "name resolution failed: 1 not found, 2 timeout", "dns"),
        UrcSpec("+PING", "+PING:<IP_ADDRESS>,<RTT>", "echo reply (RTT ms, -1 = no reply)", "ping"),
    ]

    WSCNC = {1: _P("SCAN_TIME", "int", 30, 1, 60000), 2: _P("PASV_LISTEN", "int", 300, 1, 60000)}
    WSTAC = {1: _P("SSID", "str", b"", max_len=32), 2: _P("SEC_TYPE", "int", 0, 0, 5),
             3: _P("CREDENTIALS", "str", b"", max_len=128), 4: _P("CHANNEL", "int", 255, choices=tuple(range(1, 15)) + (255,)),
             12: _P("NTP_SVR", "str", b"", max_len=64), 13: _P("NTP_STATIC", "int", 0, 0, 1)}
    WAPC = {1: _P("SSID", "str", b"DEMO_AP", max_len=32), 2: _P("SEC_TYPE", "int", 0, 0, 3),
            3: _P("CREDENTIALS", "str", b"", max_len=128), 4: _P("CHANNEL", "int", 6, 1, 14), 5: _P("HIDDEN", "int", 0, 0, 1)}
    WPROVC = {1: _P("MODE", "int", 2, choices=(2,)), 2: _P("PIN", "str", b"", max_len=8), 3: _P("PROV_PORT", "int", 7777, 1, 65535)}
    MQTTC = {1: _P("BROKER_ADDR", "str", b"", max_len=128), 2: _P("BROKER_PORT", "int", 8883, 1, 65535),
             3: _P("CLIENT_ID", "str", None, max_len=64), 4: _P("USERNAME", "str", b"", max_len=64),
             5: _P("PASSWORD", "str", b"", max_len=128), 6: _P("KEEP_ALIVE", "int", 60, 0, 65535),
             7: _P("TLS_CONF_IDX", "int", 1, 0, TLS_CONFS)}
    TLSC = {1: _P("CA_CERT_NAME", "str", b"", max_len=64), 2: _P("CERT_NAME", "str", b"", max_len=64),
            3: _P("PRI_KEY_NAME", "str", b"", max_len=64), 4: _P("PRI_KEY_PASSWORD", "str", b"", max_len=64),
            5: _P("SERVER_NAME", "str", b"", max_len=128)}

    def __init__(self, module):
        super().__init__(module)
        self.asleep = False
        self._down = False
        self.opts = getattr(module.world, "options", {}) or {}
        self.cfg: dict[str, dict[int, Any]] = {}
        for name in ("WSCNC", "WSTAC", "WAPC", "WPROVC", "MQTTC"):
            self.cfg[name] = {i: p.default for i, p in getattr(self, name).items()}
        self.cfg["MQTTC"][3] = ("WINC1500_" + MAC.replace(":", "")[-6:]).encode()
        self.tls_confs = {i: {k: p.default for k, p in self.TLSC.items()} for i in range(1, TLS_CONFS + 1)}
        # station
        self.sta_state = 0            # 0 idle, 1 connecting, 2 connected
        self.sta_ap = None
        self.sta_ip: str | None = None
        self._sta_task: asyncio.Task | None = None
        self.ntp: dict = {}
        # soft-AP
        self.ap_on = False
        self.ap_stations: dict[int, str] = {}     # assoc id -> MAC
        self._ap_next = 1
        # provisioning
        self.prov_on = False
        self.prov_listener = None
        self.provisioning_port: int | None = None
        self._prov_conns: set = set()
        self._prov_engine = Engine(self.dialect, self.commands)
        # scan
        self._scanning = False
        # sockets
        self.socks: dict[int, Sock] = {}
        # mqtt
        self.mqtt = None
        self.mqtt_state = 0            # 0 idle, 1 connecting, 2 connected
        self.mqtt_subs: dict[str, int] = {}
        self._sub_pending = False
        self.ack_timeout = float(self.opts.get("microchip-winc.ack_timeout", 10.0))
        #: seconds of host silence after which a binary phase (SOCKWR/SOCKWRTO/LOADCERT) gives up
        self.data_timeout = float(self.opts.get("microchip-winc.data_timeout", 10.0))
        # certificates
        self.store = FlashFS(module.state_dir / "certs", capacity=64 * 1024, max_file=MAX_DATA, max_name=64)
        self.tng = FlashFS(module.state_dir / "tng", capacity=16 * 1024)

    # ================================================================== plumbing
    def urc(self, text: str, data: bytes = b"") -> None:
        if self.asleep or self._down:
            return
        self.module.urc(text, data)

    def format_error(self, err: CmdError) -> str:
        if err.code is not None:
            return f"ERROR:{err.code}"
        code = {"unknown": E_UNKNOWN, "syntax": E_UNKNOWN, "garbage": E_UNKNOWN, "too_long": E_UNKNOWN,
                "param": E_PARAM, "busy": E_BUSY, "internal": E_INTERNAL}.get(err.kind, E_STATE)
        return f"ERROR:{code}"

    @staticmethod
    def fail(code: int, message: str = "") -> CmdError:
        return CmdError("failed", code=code, message=message or f"error {code}")

    def link_up(self) -> bool:
        return (self.sta_state == 2 and self.sta_ip is not None) or self.ap_on

    def need_link(self) -> None:
        if not self.link_up():
            raise self.fail(E_NOLINK, "no WLAN link")

    # ---- configuration commands (shared) ---------------------------------------------------------
    def _cfg_line(self, cmd: str, pid: int, value: Any) -> str:
        p = getattr(self, cmd)[pid]
        if p.kind == "int":
            return f"+{cmd}:{pid},{value}"
        if cmd == "WPROVC" and pid == 2 and not value:
            return f"+{cmd}:{pid},[]"
        return f"+{cmd}:{pid},{fmt_str(value or b'')}"

    def _cfg_value(self, p: _P, arg: Arg) -> Any:
        if p.kind == "int":
            if arg.quoted or arg.hexed:
                raise CmdError("param", message=f"<{p.name}> must be a number")
            try:
                from atemu.grammar import parse_int
                v = parse_int(arg.text)
            except ValueError:
                raise CmdError("param", message=f"<{p.name}> must be a number") from None
            if p.choices:
                if v not in p.choices:
                    raise CmdError("param", message=f"<{p.name}> out of range")
            elif not p.lo <= v <= p.hi:
                raise CmdError("param", message=f"<{p.name}> out of range")
            return v
        if not (arg.quoted or arg.hexed):
            raise CmdError("param", message=f"<{p.name}> must be a quoted or [hex] string")
        b = arg_bytes(arg)
        if len(b) > p.max_len:
            raise CmdError("param", message=f"<{p.name}> too long")
        return b

    def _cfg(self, ctx, cmd: str, table: dict, store: dict, pid: int | None, val: Any, writable: Callable[[], bool] | None = None,
             arg_index: int = 1) -> None:
        if pid is None:
            for i in table:
                ctx.info(self._cfg_line(cmd, i, store[i]))
            return
        if pid not in table:
            raise CmdError("param", message=f"unknown parameter id {pid}")
        if val is None:
            ctx.info(self._cfg_line(cmd, pid, store[pid]))
            return
        if writable is not None and not writable():
            raise self.fail(E_STATE, f"{cmd} is read-only now")
        store[pid] = self._cfg_value(table[pid], ctx.line.args[arg_index])

    def snapshot(self) -> dict:
        """Control-plane view of the module's state."""
        return {
            "asleep": self.asleep,
            "station": {"state": ["idle", "connecting", "connected"][self.sta_state],
                        "ssid": self.sta_ap.ssid if self.sta_ap else None, "ip": self.sta_ip},
            "ntp": dict(self.ntp),
            "soft_ap": {"on": self.ap_on, "stations": {str(k): v for k, v in self.ap_stations.items()}},
            "provisioning": {"on": self.prov_on, "port": self.provisioning_port},
            "sockets": [{"id": s.id, "proto": "udp" if s.proto == 1 else "tcp", "remote": list(s.remote) if s.remote else None,
                         "local_port": s.local_port, "listening": s.listener is not None,
                         "tls": bool(s.conn is not None and s.conn.tls),
                         "buffered": (s.conn.available if s.conn is not None else (len(s.udp.rx) if s.udp is not None else 0))}
                        for s in self.socks.values()],
            "mqtt": {"state": ["disconnected", "connecting", "connected"][self.mqtt_state],
                     "subscriptions": dict(self.mqtt_subs)},
            "certificates": [n for n, _ in self.store.list()],
        }

    # ================================================================== lifecycle
    async def shutdown(self) -> None:
        self._down = True  # powering off: nothing more reaches the UART
        for s in list(self.socks.values()):
            self._close_sock(s)
        self.socks.clear()
        await self._stop_prov()
        s, self.mqtt = self.mqtt, None
        if s is not None:
            try:
                await asyncio.wait_for(s.disconnect(), 2)
            except Exception:
                s.close()
