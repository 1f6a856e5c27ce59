"""Microchip WINC1500 / PIC32MZW1 AT firmware, 115200 8N1.

Manual: ../shared/specs/microchip-winc-at.txt; inventory and its numbered contradictions:
../shared/reference/inventory-microchip-winc.md. Every choice is listed in ``DEVIATIONS`` and
explained in ``README.md`` next to this file.

Lines end with CR (a following LF is ignored); responses end with CR LF; information lines come
before ``OK``, AECs after it. Strings are accepted quoted or as ``[hex]`` and printed quoted when
they are printable ASCII without ``"``, else as ``[hex]``.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from emulator import wifi
from emulator.files import FlashFS, FsError
from emulator.grammar import (Arg, Data, DataOverflow, Dialect, Engine, Form, Int, ParamError, Str, Bytes,
                              UrcSpec, bind)
from emulator.module import Ctx
from emulator.net.errors import NetError
from emulator.profile import CmdError, Profile, command

log = logging.getLogger("atemu.microchip")

# ---- error codes (the manual documents none; see README) --------------------------------------
E_UNKNOWN = 1      # unknown command, bad line
E_PARAM = 2        # missing / wrong type / out of range parameter
E_STATE = 3        # not allowed in the current state
E_SOCKET = 4       # no such socket, or wrong socket type
E_NORES = 5        # no free socket / store full
E_BUSY = 6         # an operation of this kind is already pending
E_NOLINK = 7       # no WLAN link, or MQTT not connected
E_DATA = 8         # binary/inline data does not match <LENGTH>
E_CERT = 9         # certificate store error
E_INTERNAL = 10

# +SOCKERR status codes / +DNSERROR codes by NetError kind
NET_CODES = {"dns": 1, "dns_timeout": 2, "refused": 3, "timeout": 4, "unreachable": 5, "reset": 6,
             "tls": 7, "tls_verify": 8, "closed": 9, "addrinuse": 10, "invalid": 11, "perm": 12, "other": 99}

# +WSTAERR codes
WSTAERR_NO_AP, WSTAERR_AUTH, WSTAERR_SECURITY = 1, 2, 3

MAX_SOCKETS = 10
MAX_DATA = 1500
TLS_CONFS = 4
MAC = "F8:F0:05:E1:5C:01"
AP_IP = "192.168.1.1"

# security types: configuration (WSTAC) -> world security
STA_SEC = {0: "open", 1: "wep", 2: "wpa", 3: "wpa2", 4: "wpa2-wpa3", 5: "wpa3"}
AP_SEC = {0: "open", 1: "wep", 2: "wpa", 3: "wpa2"}
# world security -> reported SEC_TYPE (+WSCNIND, +WSTA)
REPORT_SEC = {"open": 0, "wep": 1, "wpa": 2, "wpa2": 3, "wpa-wpa2": 3, "wpa2-wpa3": 3, "wpa3": 5,
              "wpa2-enterprise": 4}

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
    "M24: +MQTTUNSUB:<RESULT> follows the table: 2 = succeeded, 1 = failed (topic not subscribed or no UNSUBACK).",
    "M25 (extension): incoming messages are reported as +MQTTPUBRX:<DUP>,<QOS>,<RETAIN>,<TOPIC>,<LENGTH>,<PAYLOAD> (strings quoted or [hex]); loss of the broker gives +MQTTCONN:0.",
    "M21 (extension): MQTTC also has id 5 PASSWORD and id 6 KEEP_ALIVE (s, default 60); id 7 TLS_CONF_IDX 0 = plain MQTT, n = +TLSC configuration n.",
    "M29: +SOCKIND after SOCKBL carries the NEW socket's id (as in the example); addresses are the real local/remote ones.",
    "M32: no AEC when a UDP socket is closed; UDP SOCKBR only sets the default destination (OK).",
    "M33: AT+SOCKTLS=<id>[,<conf>] (conf default 1) answers OK, then +SOCKTLS:<id> or +SOCKERR:<id>,<code>,<msg> after the handshake.",
    "M35/M38/M39: SOCKWR/SOCKWRTO LENGTH 0..1500; without <DATA> the host sends '#' then exactly LENGTH raw bytes (+++ is data), or with LENGTH 0 raw bytes until +++ (TCP: any size; UDP: one datagram of at most 1500). OK follows the data. Inline data must be exactly LENGTH bytes.",
    "Binary phases: bytes before '#' are skipped; a host silent for data_timeout seconds (world option, default 10) abandons the transfer: nothing sent, ERROR:8 (LOADCERT: +LOADCERT:1, ERROR:9).",
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


def fmt_str(value: bytes | str) -> str:
    """Quoted when printable ASCII without '"', else [HEX]."""
    b = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if all(0x20 <= c < 0x7F and c != 0x22 for c in b):
        return '"' + b.decode("ascii") + '"'
    return "[" + b.hex().upper() + "]"


def arg_bytes(arg: Arg) -> bytes:
    if arg.hexed:
        return arg.text.encode("latin-1", "surrogateescape")
    return arg.text.encode("utf-8", "surrogateescape")


def sfx(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


@dataclass
class _P:
    """One parameter of a configuration command."""
    name: str
    kind: str           # "int" | "str"
    default: Any
    lo: int = 0
    hi: int = 65535
    choices: tuple = ()
    max_len: int = 128


@dataclass
class Sock:
    id: int
    proto: int                     # 1 UDP, 2 TCP
    conn: Any = None               # TcpConnection
    listener: Any = None           # TcpListener
    udp: Any = None                # UdpSocket
    remote: tuple[str, int] | None = None
    connecting: bool = False
    upgrading: bool = False
    announced: bool = False        # a +SOCKRXT / +SOCKRXU is outstanding
    bound: bool = False            # bound to a local port by SOCKBL (UDP)
    groups: list = field(default_factory=list)

    @property
    def local_port(self) -> int:
        if self.listener is not None:
            return self.listener.port
        if self.conn is not None and self.conn.local_addr:
            return self.conn.local_addr[1]
        if self.udp is not None:
            return self.udp.port
        return 0


class _ProvCtx:
    """A Ctx look-alike for commands arriving over the provisioning TCP link."""

    def __init__(self, conn):
        self.conn = conn
        self.finished = False

    def _w(self, text: str) -> None:
        if not self.conn.closed:
            self.conn.write(text.encode("utf-8", "surrogateescape") + b"\r\n")

    def info(self, text: str) -> None:
        self._w(text)

    def prov_emit(self, text: str) -> None:
        self._w(text)

    def final(self, text: str) -> None:
        if not self.finished:
            self.finished = True
            self._w(text)

    def ok(self) -> None:
        self.final("OK")

    def raw(self, data: bytes) -> None:
        if not self.conn.closed:
            self.conn.write(data)


class MicrochipWinc(Profile):
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
                from emulator.grammar import parse_int
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

    # ================================================================== general
    @command("E", Form.WRITE, Int("N", 0, 1), family="general", doc="ATE0 echo off, ATE1 echo on")
    async def ate(self, ctx: Ctx, n: int) -> None:
        self.module.engine.echo = bool(n)

    @command("+GMI", Form.EXEC, family="general", doc="Manufacturer identification")
    async def gmi(self, ctx: Ctx) -> None:
        ctx.info('+GMI:"Microchip"')

    @command("+GMM", Form.EXEC, family="general", doc="Model identification")
    async def gmm(self, ctx: Ctx) -> None:
        ctx.info('+GMM:"WINC1500"')

    @command("+GMR", Form.EXEC, family="general", doc="Revision: chip, firmware, driver, rollback firmware")
    async def gmr(self, ctx: Ctx) -> None:
        prefix = str(self.opts.get("microchip-winc.gmr_prefix", "+GMR")).strip() or "+GMR"
        ctx.info(f'{prefix}:"15x0","19.6.1","19.6.1","19.5.3"')

    @command("+LOWPOWER", Form.EXEC, family="general", doc="Enter low power mode (mode 4)")
    @command("+LOWPOWER", Form.WRITE, Int("MODE", 0, 4), family="general")
    async def lowpower(self, ctx: Ctx, mode: int = 4) -> None:
        if mode != 4:
            raise CmdError("param", message="low power modes 0-3 are placeholders")
        ctx.ok()
        await self.module.drain_output()
        await self._sleep()

    async def _sleep(self) -> None:
        self.asleep = True
        self.module.frozen = True
        echo = self.module.engine.echo
        self.module.engine.reset()
        self.module.engine.echo = echo
        self._stop_sta(silent=True)
        await self._stop_prov()
        self._stop_ap(silent=True)
        for s in list(self.socks.values()):
            self._close_sock(s)
        self.socks.clear()
        await self._mqtt_drop()

    def wake(self) -> None:
        """Wake the module from AT+LOWPOWER (the wake GPIO). Call on the module's loop."""
        self.asleep = False
        self.module.frozen = False
        echo = self.module.engine.echo
        self.module.engine.reset()
        self.module.engine.echo = echo

    @command("+READCERT", Form.EXEC, family="general", doc="Read certificate 1 device (TNG), 2 root, 3 last loaded")
    @command("+READCERT", Form.WRITE, Int("TYPE", 1, 3), family="general")
    async def readcert(self, ctx: Ctx, typ: int = 1) -> None:
        if typ == 3:
            name = self.module.settings.get("microchip.last_cert")
            try:
                data = self.store.read(name) if name else None
            except FsError:
                data = None
            if data is None:
                raise self.fail(E_CERT, "no certificate loaded")
        else:
            data = self._tng(typ)
        ctx.info(f"+READCERT:{typ},{len(data)},{fmt_str(data)}")

    def _tng(self, typ: int) -> bytes:
        name = "device.der" if typ == 1 else "root.der"
        try:
            return self.tng.read(name)
        except FsError:
            pass
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        now = _dt.datetime.now(_dt.timezone.utc)
        rkey = ec.generate_private_key(ec.SECP256R1())
        rname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Microchip Technology Inc (atemu)"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "Crypto Authentication Root CA 002")])
        root = (x509.CertificateBuilder().subject_name(rname).issuer_name(rname).public_key(rkey.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
                .not_valid_after(now + _dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(rkey, hashes.SHA256()))
        dkey = ec.generate_private_key(ec.SECP256R1())
        dname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Microchip Technology Inc (atemu)"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "sn0123" + MAC.replace(":", ""))])
        dev = (x509.CertificateBuilder().subject_name(dname).issuer_name(rname).public_key(dkey.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
               .not_valid_after(now + _dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .sign(rkey, hashes.SHA256()))
        self.tng.write("root.der", root.public_bytes(serialization.Encoding.DER))
        self.tng.write("device.der", dev.public_bytes(serialization.Encoding.DER))
        return self.tng.read(name)

    @command("+LOADCERT", Form.WRITE, Int("LEN", 0, MAX_DATA), Str("NAME", quoted=True, min_len=1, max_len=64),
             family="general", doc="Load a PEM or DER certificate/key into the store (binary phase: '#' then LEN bytes or until +++)")
    async def loadcert(self, ctx: Ctx, length: int, name: str) -> str | None:
        try:
            self.store.path(name)
        except FsError:
            raise CmdError("param", message="bad certificate name") from None
        ev = await ctx.read_data(length or None, marker=b"#", terminator=b"+++", max_len=MAX_DATA + 2,
                                 idle=self.data_timeout)
        if isinstance(ev, DataOverflow):
            await self._skip_to_escape(ctx, ev.payload)
        data = ev.payload
        complete = isinstance(ev, Data) and (ev.reason == "length" if length else ev.reason == "terminator")
        ok = complete and len(data) <= MAX_DATA and self._valid_material(data)
        if ok:
            try:
                self.store.write(name, data)
            except FsError as e:
                log.info("certificate store: %s", e)
                ok = False
        if not ok:
            ctx.info("+LOADCERT:1")
            raise self.fail(E_CERT, "certificate rejected")
        self.module.settings.set("microchip.last_cert", name)
        ctx.info("+LOADCERT:0")
        return None

    async def _skip_to_escape(self, ctx, seen: bytes) -> None:
        """After an overflow in +++ mode, discard the rest of the host's data up to its +++.

        The +++ may straddle the overflow point (``seen`` ends with ``+`` or ``++``). Gives up
        after ``data_timeout`` seconds of silence, like the data phase itself."""
        plus = min(2, len(seen) - len(seen.rstrip(b"+")))
        while plus:
            ev = await ctx.read_data(1, idle=self.data_timeout)
            if not isinstance(ev, Data) or ev.reason != "length":
                return
            plus = plus + 1 if ev.payload == b"+" else 0
            if plus == 3:
                return
        await ctx.read_data(None, terminator=b"+++", idle=self.data_timeout)

    @staticmethod
    def _valid_material(data: bytes) -> bool:
        if not data:
            return False
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        for fn in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
            try:
                fn(data)
                return True
            except Exception:
                pass
        if b"-----BEGIN" in data and b"PRIVATE KEY-----" in data:
            return True
        try:
            serialization.load_der_private_key(data, None)
            return True
        except TypeError:
            return True   # a valid but encrypted DER key: TLSC id 4 holds its password
        except Exception:
            return False

    # ================================================================== scanning
    @command("+WSCNC", Form.EXEC, family="scan", doc="Read all scan parameters (1 SCAN_TIME ms, 2 PASV_LISTEN ms)")
    @command("+WSCNC", Form.WRITE, Int("param_id"), Str("param_val", quoted=None, optional=True), family="scan")
    async def wscnc(self, ctx: Ctx, pid: int | None = None, val: Any = None) -> None:
        self._cfg(ctx, "WSCNC", self.WSCNC, self.cfg["WSCNC"], pid, val)

    @command("+WSCNA", Form.WRITE, Int("CHANNEL", choices=tuple(range(1, 15)) + (255,)), Str("SSID", quoted=True, optional=True, max_len=32),
             family="scan", doc="Active scan: +WSCNIND per AP, then +WSCNDONE")
    async def wscna(self, ctx, channel: int, ssid: str | None) -> None:
        self._start_scan(ctx, True, channel, ssid)

    @command("+WSCNP", Form.WRITE, Int("CHANNEL", choices=tuple(range(1, 15)) + (255,)), Str("SSID", quoted=True, optional=True, max_len=32),
             family="scan", doc="Passive scan: +WSCNIND per AP, then +WSCNDONE")
    async def wscnp(self, ctx, channel: int, ssid: str | None) -> None:
        self._start_scan(ctx, False, channel, ssid)

    def _start_scan(self, ctx, active: bool, channel: int, ssid: str | None) -> None:
        if self._scanning:
            raise self.fail(E_BUSY, "scan in progress")
        if ssid is not None and len(ctx.line.args) > 1:
            ssid = sfx(arg_bytes(ctx.line.args[1]))
        emit = getattr(ctx, "prov_emit", None) or self.urc
        self._scanning = True
        self.module.spawn(self._scan(active, channel, ssid, emit))

    async def _scan(self, active: bool, channel: int, ssid: str | None, emit: Callable[[str], None]) -> None:
        try:
            ms = self.cfg["WSCNC"][1 if active else 2]
            await asyncio.sleep(ms / 1000.0)
            if self.ap_on and not self.prov_on:
                emit("+WSCNERROR")
                return
            aps = wifi.scan(self.module.world, channel=None if channel == 255 else channel, ssid=ssid or None,
                            include_hidden=True)
            for ap in aps:
                name = b"" if (ap.hidden and not ssid) else ap.ssid.encode("utf-8", "surrogateescape")
                emit(f"+WSCNIND:{ap.rssi},{REPORT_SEC.get(ap.security, 0)},{ap.channel},\"{ap.bssid.upper()}\",{fmt_str(name) if name else '[]'}")
            emit("+WSCNDONE")
        finally:
            self._scanning = False

    # ================================================================== station
    @command("+WSTAC", Form.EXEC, family="wlan", doc="Read station configuration (1 SSID, 2 SEC_TYPE, 3 CREDENTIALS, 4 CHANNEL, 12 NTP_SVR, 13 NTP_STATIC)")
    @command("+WSTAC", Form.WRITE, Int("param_id"), Str("param_val", quoted=None, optional=True), family="wlan")
    async def wstac(self, ctx, pid: int | None = None, val: Any = None) -> None:
        self._cfg(ctx, "WSTAC", self.WSTAC, self.cfg["WSTAC"], pid, val, writable=lambda: self.sta_state == 0)

    @command("+WSTA", Form.EXEC, family="wlan", doc="Station state: +WSTA:<ASSOC_ID>,<STATE>[,<SSID>,<RSSI>,<SEC_TYPE>]")
    async def wsta_read(self, ctx: Ctx) -> None:
        if self.sta_state == 2 and self.sta_ap is not None:
            ap = self.sta_ap
            ctx.info(f"+WSTA:1,1,{fmt_str(ap.ssid)},{ap.rssi},{REPORT_SEC.get(ap.security, 0)}")
        else:
            ctx.info("+WSTA:0,0")

    @command("+WSTA", Form.WRITE, Int("STATE", 0, 1), family="wlan", doc="0 disconnect, 1 connect with the +WSTAC configuration")
    async def wsta(self, ctx: Ctx, state: int) -> None:
        if state == 0:
            ctx.ok()
            self._stop_sta(silent=False)
            return
        if self.sta_state != 0:
            raise self.fail(E_STATE, "station already active")
        if self.ap_on:
            raise self.fail(E_STATE, "soft-AP is running")
        if not self.cfg["WSTAC"][1]:
            raise self.fail(E_STATE, "no SSID configured")
        self.sta_state = 1
        ctx.ok()
        self._sta_task = self.module.spawn(self._sta_connect())

    async def _sta_connect(self) -> None:
        c = self.cfg["WSTAC"]
        await asyncio.sleep(0.05)
        ssid = sfx(c[1])
        sec = STA_SEC[c[2]]
        cred = sfx(c[3])
        if sec == "wep" and "*" in cred:
            cred = cred.split("*", 1)[1]
        res, ap = wifi.join(self.module.world, ssid, cred, sec)
        if res == wifi.JoinResult.OK and c[4] != 255 and ap.channel != c[4]:
            res = wifi.JoinResult.NO_AP
        if res != wifi.JoinResult.OK:
            self.sta_state = 0
            code = {wifi.JoinResult.NO_AP: WSTAERR_NO_AP, wifi.JoinResult.WRONG_PASSWORD: WSTAERR_AUTH}.get(res, WSTAERR_SECURITY)
            self.urc(f"+WSTAERR:{code}")
            return
        self.sta_ap = ap
        self.sta_state = 2
        self.urc(f'+WSTALU:1,"{ap.bssid.upper()}",{ap.channel}')
        await asyncio.sleep(0.05)
        self.sta_ip = wifi.Lease.from_ap(ap).ip
        self.urc(f'+WSTAAIP:1,"{self.sta_ip}"')
        if c[12]:
            self.module.spawn(self._ntp_sync(sfx(c[12])))
        while self.sta_state == 2:
            await asyncio.sleep(0.2)
            if self.sta_state == 2 and not wifi.on_air(self.module.world, ap):
                self._sta_task = None
                self._stop_sta(silent=False)
                return

    async def _ntp_sync(self, server: str) -> None:
        """Set the module clock from the WSTAC NTP server (real SNTP; 'host' or 'host:port')."""
        from emulator.net.sntp import sntp_query
        host, port = server, 123
        if server.count(":") == 1:
            h, _, p = server.partition(":")
            if p.isdigit():
                host, port = h, int(p)
        try:
            res = await sntp_query(host, port, timeout=5.0, resolver=self.module.resolver)
        except NetError as e:
            log.info("NTP %s: %s", server, e)
            self.ntp = {"server": server, "error": str(e)}
            return
        self.ntp = {"server": server, "offset": res.offset, "stratum": res.stratum}

    def module_time(self) -> float:
        """The module's clock (Unix time): host time plus the offset learned from NTP."""
        return time.time() + float(self.ntp.get("offset", 0.0))

    def _stop_sta(self, silent: bool) -> None:
        was = self.sta_state
        self.sta_state = 0
        self.sta_ap = None
        self.sta_ip = None
        if self._sta_task is not None and self._sta_task is not asyncio.current_task():
            self._sta_task.cancel()
        self._sta_task = None
        if was == 2 and not silent:
            self.urc("+WSTALD:1")

    def world_changed(self, change: dict) -> None:
        """Control-plane hook: react at once to deauthentication or a vanished access point."""
        kind = change.get("change")
        if self.sta_state != 2 or self.sta_ap is None:
            return
        ssid = change.get("ssid")
        if kind == "deauth" and (ssid is None or ssid == self.sta_ap.ssid):
            self._stop_sta(silent=False)
        elif kind in ("ap_removed", "remove_ap") and not wifi.on_air(self.module.world, self.sta_ap):
            self._stop_sta(silent=False)

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

    # ================================================================== soft-AP
    @command("+WAPC", Form.EXEC, family="wlan", doc="Read soft-AP configuration (1 SSID, 2 SEC_TYPE, 3 CREDENTIALS, 4 CHANNEL, 5 HIDDEN)")
    @command("+WAPC", Form.WRITE, Int("param_id"), Str("param_val", quoted=None, optional=True), family="wlan")
    async def wapc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        self._cfg(ctx, "WAPC", self.WAPC, self.cfg["WAPC"], pid, val, writable=lambda: not self.ap_on)

    @command("+WAP", Form.EXEC, family="wlan", doc="Soft-AP state: +WAP:<STATE>[,<BSSID>,<RSSI>]")
    async def wap_read(self, ctx: Ctx) -> None:
        if self.ap_on and self.ap_stations:
            first = min(self.ap_stations)
            ctx.info(f'+WAP:1,"{self.ap_stations[first]}",-40')
        else:
            ctx.info(f"+WAP:{int(self.ap_on)}")

    @command("+WAP", Form.WRITE, Int("STATE", 0, 1), family="wlan", doc="0 stop, 1 start the soft-AP")
    async def wap(self, ctx: Ctx, state: int) -> None:
        if state == 0:
            if self.prov_on:
                raise self.fail(E_STATE, "provisioning runs the soft-AP; use AT+WPROV=0")
            ctx.ok()
            self._stop_ap(silent=False)
            return
        if self.ap_on:
            raise self.fail(E_STATE, "soft-AP already running")
        if self.sta_state != 0:
            raise self.fail(E_STATE, "station is active")
        self._check_ap_config()
        self.ap_on = True

    def _check_ap_config(self) -> None:
        c = self.cfg["WAPC"]
        cred = c[3]
        if c[2] == 1:
            key = cred.split(b"*", 1)[1] if b"*" in cred else cred
            if len(key) not in (5, 13, 10, 26):
                raise self.fail(E_STATE, "WEP key must be 5/13 ASCII or 10/26 hex characters")
        elif c[2] in (2, 3) and not 8 <= len(cred) <= 63:
            raise self.fail(E_STATE, "WPA passphrase must be 8..63 characters")

    def _stop_ap(self, silent: bool) -> None:
        if not self.ap_on:
            return
        self.ap_on = False
        stations, self.ap_stations = self.ap_stations, {}
        if not silent:
            for aid in sorted(stations):
                self.urc(f'+WAPSD:{aid},"{stations[aid]}"')

    def ap_station_join(self, mac: str) -> int:
        """Control plane: a virtual station associates with the soft-AP. Returns its ASSOC_ID."""
        if not self.ap_on:
            raise RuntimeError("soft-AP is not running")
        mac = mac.upper()
        for aid, m in self.ap_stations.items():
            if m == mac:
                return aid
        aid = self._ap_next
        self._ap_next += 1
        self.ap_stations[aid] = mac
        self.urc(f'+WAPSC:{aid},"{mac}"')
        self.urc(f'+WAPAIP:{aid},"192.168.1.{99 + aid}"')
        return aid

    def ap_station_leave(self, mac: str) -> None:
        """Control plane: a virtual station leaves the soft-AP."""
        mac = mac.upper()
        for aid, m in list(self.ap_stations.items()):
            if m == mac:
                del self.ap_stations[aid]
                self.urc(f'+WAPSD:{aid},"{mac}"')
                return
        raise KeyError(mac)

    # ================================================================== provisioning
    @command("+WPROVC", Form.EXEC, family="wlan", doc="Read provisioning configuration (1 MODE, 2 PIN, 3 PROV_PORT)")
    @command("+WPROVC", Form.WRITE, Int("param_id"), Str("param_val", quoted=None, optional=True), family="wlan")
    async def wprovc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        self._cfg(ctx, "WPROVC", self.WPROVC, self.cfg["WPROVC"], pid, val, writable=lambda: not self.prov_on)

    @command("+WPROV", Form.EXEC, family="wlan", doc="Bare AT+WPROV starts provisioning (as AT+WPROV=1)")
    @command("+WPROV", Form.WRITE, Int("STATE", 0, 1), family="wlan",
             doc="1 start provisioning (soft-AP + TCP server on PROV_PORT taking AT+WSTAC/WSCNA/WSCNP/WPROV=0), 0 stop")
    async def wprov(self, ctx, state: int = 1) -> None:
        if isinstance(ctx, _ProvCtx):
            if state == 1:
                raise self.fail(E_STATE, "provisioning already running")
            ctx.final("OK")
            conn = ctx.conn
            await asyncio.sleep(0.05)
            await self._stop_prov()
            try:
                conn.close()
            except Exception:
                pass
            self.urc("+WPROVEXIT")
            return
        if state == 0:
            if not self.prov_on:
                return
            await self._stop_prov()
            return
        if self.prov_on or self.ap_on:
            raise self.fail(E_STATE, "soft-AP already running")
        if self.sta_state != 0:
            raise self.fail(E_STATE, "station is active")
        from emulator.net.sockets import TcpListener
        port = self.cfg["WPROVC"][3]
        try:
            lst = await TcpListener.open("127.0.0.1", port)
        except NetError as e:
            log.warning("provisioning port %d unavailable (%s); falling back to a free port", port, e)
            try:
                lst = await TcpListener.open("127.0.0.1", 0)
            except NetError:
                raise self.fail(E_NORES, "cannot listen") from None
            log.warning("provisioning server listens on 127.0.0.1:%d instead of %d", lst.port, port)
        lst.on_accept = self._prov_accept
        self.prov_listener = lst
        self.provisioning_port = lst.port
        self.prov_on = True
        self.ap_on = True

    async def _stop_prov(self) -> None:
        if not self.prov_on:
            return
        self.prov_on = False
        if self.prov_listener is not None:
            self.prov_listener.close()
            self.prov_listener = None
        for c in list(self._prov_conns):
            c.close()
        self._prov_conns.clear()
        self.provisioning_port = None
        self._stop_ap(silent=False)

    def _prov_accept(self, conn) -> None:
        self._prov_conns.add(conn)
        self.module.spawn(self._prov_serve(conn))

    async def _prov_serve(self, conn) -> None:
        buf = bytearray()
        try:
            while not conn.closed or conn.available:
                chunk = await conn.recv()
                if not chunk:
                    break
                buf += chunk
                while True:
                    idx = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
                    if not idx:
                        break
                    i = min(idx)
                    line = bytes(buf[:i]).strip()
                    del buf[: i + 1]
                    if line:
                        await self._prov_line(conn, line)
                if len(buf) > 4096:
                    buf.clear()
        except NetError:
            pass
        finally:
            self._prov_conns.discard(conn)

    async def _prov_line(self, conn, line: bytes) -> None:
        ctx = _ProvCtx(conn)
        try:
            if line[:2].upper() != b"AT":
                raise CmdError("garbage")
            try:
                cl = self._prov_engine.parse_command(line)
            except ParamError:
                raise CmdError("syntax") from None
            if cl.name not in ("+WSTAC", "+WSCNA", "+WSCNP", "+WPROV"):
                raise CmdError("unknown", message="not available over the provisioning link")
            spec, fs, skip = self.module.resolve(cl)
            if fs is None or fs.handler is None:
                raise CmdError("unknown")
            try:
                values = bind(fs, cl.args, self.dialect, skip)
            except ParamError as e:
                raise CmdError("param", message=str(e)) from None
            ctx.line = cl
            await getattr(self, fs.handler)(ctx, *values)
            if not ctx.finished:
                ctx.final("OK")
        except CmdError as e:
            ctx.final(self.format_error(e))
        except Exception:
            log.exception("provisioning command failed")
            ctx.final(self.format_error(CmdError("internal")))

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
        from emulator.net.mqtt import MqttSession
        session = MqttSession(client_id=sfx(c[3]), host=host, port=c[2], resolver=self.module.resolver, tls=tls,
                              server_hostname=sni, keepalive=c[6], clean_session=clean != 0,
                              username=sfx(c[4]) or None, password=c[5] or None,
                              on_message=self._mqtt_message, on_disconnect=self._mqtt_disconnected)
        self.mqtt = session
        self.mqtt_state = 1
        self.mqtt_subs.clear()
        ctx.ok()
        self.module.spawn(self._mqtt_connect(session))

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
        self.urc(f"+MQTTCONNACK:{int(bool(session.session_present))},{rc}")
        if rc == 0:
            self.mqtt_state = 2
            self.urc("+MQTTCONN:1")
        else:
            self.mqtt = None
            self.mqtt_state = 0
            self.urc("+MQTTCONN:0")

    def _mqtt_message(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        self.urc(f"+MQTTPUBRX:0,{qos},{int(bool(retain))},{fmt_str(topic)},{len(payload)},{fmt_str(payload)}")

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
        if "+" in topic or "#" in topic:
            raise CmdError("param", message="wildcards are not allowed in a publish topic")
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

    # ================================================================== TLS configuration
    @command("+TLSC", Form.WRITE, Int("conf_idx", 1, TLS_CONFS), Int("param_id", optional=True),
             Str("param_val", quoted=None, optional=True), family="tls",
             doc="TLS configuration <conf_idx>: 1 CA_CERT_NAME, 2 CERT_NAME, 3 PRI_KEY_NAME, 4 PRI_KEY_PASSWORD, 5 SERVER_NAME")
    async def tlsc(self, ctx, idx: int, pid: int | None, val: Any) -> None:
        self._cfg(ctx, "TLSC", self.TLSC, self.tls_confs[idx], pid, val, arg_index=2)

    def _tls_context(self, idx: int, default_name: str):
        from emulator.net.tls import client_context
        c = self.tls_confs.get(idx)
        if c is None:
            raise CmdError("param", message="no such TLS configuration")

        def load(name: bytes) -> bytes | None:
            if not name:
                return None
            try:
                return self.store.read(sfx(name))
            except FsError:
                raise self.fail(E_CERT, f"certificate {sfx(name)!r} not in the store") from None

        ca, cert, key = load(c[1]), load(c[2]), load(c[3])
        try:
            ctx = client_context(ca=ca, cert=cert, key=key, key_password=c[4] or None)
        except NetError as e:
            raise self.fail(E_CERT, str(e)) from None
        return ctx, (sfx(c[5]) or default_name)

    # ================================================================== sockets
    def _sock(self, sid: int, proto: int | None = None) -> Sock:
        s = self.socks.get(sid)
        if s is None:
            raise self.fail(E_SOCKET, f"no socket {sid}")
        if proto is not None and s.proto != proto:
            raise self.fail(E_SOCKET, f"socket {sid} has the wrong protocol")
        return s

    def _new_id(self) -> int | None:
        for i in range(1, MAX_SOCKETS + 1):
            if i not in self.socks:
                return i
        return None

    @property
    def bind_host_tcp(self) -> str:
        return str(self.opts.get("microchip-winc.bind_host", "127.0.0.1"))

    @property
    def bind_host_udp(self) -> str:
        return str(self.opts.get("microchip-winc.bind_host", "0.0.0.0"))

    @property
    def mcast_iface(self) -> str:
        return str(self.opts.get("microchip-winc.multicast_iface", "127.0.0.1"))

    @command("+SOCKO", Form.WRITE, Int("PROTOCOL", 1, 2), family="socket", doc="Open a socket: 1 UDP, 2 TCP -> +SOCKO:<SOCK_ID>")
    async def socko(self, ctx, proto: int) -> None:
        sid = self._new_id()
        if sid is None:
            raise self.fail(E_NORES, "no free socket")
        self.socks[sid] = Sock(sid, proto)
        ctx.info(f"+SOCKO:{sid}")

    @command("+SOCKCL", Form.WRITE, Int("SOCK_ID", 0, 255), family="socket", doc="Close a socket")
    async def sockcl(self, ctx, sid: int) -> None:
        s = self._sock(sid)
        del self.socks[sid]
        self._close_sock(s)

    def _close_sock(self, s: Sock) -> None:
        for obj in (s.conn, s.listener, s.udp):
            if obj is not None:
                try:
                    if getattr(obj, "on_close", None) is not None:
                        obj.on_close = None
                    obj.close()
                except Exception:
                    pass

    @command("+SOCKBL", Form.WRITE, Int("SOCK_ID", 0, 255), Int("LCL_PORT", 0, 65535), family="socket",
             doc="Bind to a local port and listen (TCP: +SOCKIND:<new id>,... per connection)")
    async def sockbl(self, ctx, sid: int, port: int) -> None:
        s = self._sock(sid)
        self.need_link()
        if s.conn is not None or s.listener is not None or s.connecting or s.bound:
            raise self.fail(E_STATE, "socket already bound")
        if s.proto == 2:
            from emulator.net.sockets import TcpListener
            try:
                lst = await TcpListener.open(self.bind_host_tcp, port)
            except NetError as e:
                raise self.fail(E_STATE if e.kind == "addrinuse" else E_SOCKET, str(e)) from None
            lst.on_accept = lambda conn, _s=s: self._accepted(_s, conn)
            s.listener = lst
        else:
            # a UDP socket SOCKBR bound to an ephemeral port moves to <LCL_PORT>, keeping its destination
            remote = s.udp.remote if s.udp is not None else None
            await self._udp_open(s, port)
            s.udp.remote = remote
            s.bound = True

    def _accepted(self, lst_sock: Sock, conn) -> None:
        if self.socks.get(lst_sock.id) is not lst_sock:
            conn.abort()
            return
        sid = self._new_id()
        if sid is None:
            conn.abort()
            return
        s = Sock(sid, 2, conn=conn, remote=conn.remote_addr)
        self.socks[sid] = s
        self._wire_tcp(s)
        la, ra = conn.local_addr or ("", 0), conn.remote_addr or ("", 0)
        self.urc(f'+SOCKIND:{sid},"{la[0]}",{la[1]},"{ra[0]}",{ra[1]}')
        if conn.available:
            self._tcp_data(s)

    def _wire_tcp(self, s: Sock) -> None:
        conn = s.conn
        conn.rx_high_water = 64 * 1024
        conn.on_data = lambda c, _s=s: self._tcp_data(_s)
        conn.on_close = lambda c, reason, _s=s: self._tcp_closed(_s, reason)

    def _tcp_data(self, s: Sock) -> None:
        if self.socks.get(s.id) is not s or s.announced or s.conn is None or not s.conn.available:
            return
        s.announced = True
        self.urc(f"+SOCKRXT:{s.id},{s.conn.available}")

    def _tcp_closed(self, s: Sock, reason: str) -> None:
        if reason == "local" or s.upgrading or self.socks.get(s.id) is not s:
            return
        self.urc(f"+SOCKCL:{s.id}")

    async def _udp_open(self, s: Sock, port: int, remote: tuple[str, int] | None = None, reuse: bool = False) -> None:
        from emulator.net.sockets import UdpSocket
        if s.udp is not None:
            s.udp.close()
            s.udp = None
        try:
            u = await UdpSocket.open(local_host=self.bind_host_udp, local_port=port, remote=remote,
                                     resolver=self.module.resolver, reuse=reuse)
        except NetError as e:
            raise self.fail(E_STATE if e.kind == "addrinuse" else E_SOCKET, str(e)) from None
        u.max_queue = 64
        u.on_datagram = lambda _u, _s=s: self._udp_data(_s)
        s.udp = u

    def _udp_data(self, s: Sock) -> None:
        if self.socks.get(s.id) is not s or s.announced or s.udp is None or not s.udp.rx:
            return
        s.announced = True
        data, addr = s.udp.rx[0]
        self.urc(f'+SOCKRXU:{s.id},"{addr[0]}",{addr[1]},{len(data)}')

    @command("+SOCKBR", Form.WRITE, Int("SOCK_ID", 0, 255), Str("RMT_ADDR", quoted=True, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), family="socket",
             doc="Bind to a remote address: TCP connects (+SOCKIND or +SOCKERR); UDP sets the default destination")
    async def sockbr(self, ctx, sid: int, host: str, port: int) -> None:
        s = self._sock(sid)
        self.need_link()
        if s.proto == 1:
            try:
                ip = await self.module.resolver.resolve_one(host, timeout=10.0)
            except NetError as e:
                raise self.fail(E_SOCKET, str(e)) from None
            if s.udp is None:
                await self._udp_open(s, 0)
            s.udp.remote = (ip, port)
            s.remote = (ip, port)
            return
        if s.conn is not None or s.listener is not None or s.connecting:
            raise self.fail(E_STATE, "socket already in use")
        s.connecting = True
        s.remote = (host, port)
        ctx.ok()
        self.module.spawn(self._tcp_connect(s, host, port))

    async def _tcp_connect(self, s: Sock, host: str, port: int) -> None:
        from emulator.net.sockets import TcpConnection
        try:
            conn = await TcpConnection.open(host, port, resolver=self.module.resolver, timeout=10.0)
        except NetError as e:
            s.connecting = False
            if self.socks.get(s.id) is s:
                self.urc(f"+SOCKERR:{s.id},{NET_CODES.get(e.kind, 99)},{fmt_str(e.message)}")
            return
        s.connecting = False
        if self.socks.get(s.id) is not s:
            conn.abort()
            return
        s.conn = conn
        s.remote = conn.remote_addr
        self._wire_tcp(s)
        la, ra = conn.local_addr or ("", 0), conn.remote_addr or ("", 0)
        self.urc(f'+SOCKIND:{s.id},"{la[0]}",{la[1]},"{ra[0]}",{ra[1]}')
        if conn.available:
            self._tcp_data(s)

    @command("+SOCKBM", Form.WRITE, Int("SOCK_ID", 0, 255), Str("MCAST_ADDR", quoted=True, min_len=1, max_len=64),
             Int("MCAST_PORT", 1, 65535), family="socket", doc="Join a multicast group on a UDP socket bound to MCAST_PORT")
    async def sockbm(self, ctx, sid: int, group: str, port: int) -> None:
        s = self._sock(sid, 1)
        self.need_link()
        import ipaddress
        try:
            if not ipaddress.ip_address(group).is_multicast:
                raise ValueError
        except ValueError:
            raise CmdError("param", message="not a multicast address") from None
        if s.udp is None or s.udp.port != port:
            remote = s.udp.remote if s.udp is not None else None
            await self._udp_open(s, port, reuse=True)
            if remote:
                s.udp.remote = remote
        try:
            s.udp.join_multicast(group, self.mcast_iface)
            s.udp.set_multicast_options(ttl=1, loop=True, iface=self.mcast_iface)
        except NetError as e:
            raise self.fail(E_SOCKET, str(e)) from None
        s.groups.append(group)
        s.bound = True

    @command("+SOCKTLS", Form.WRITE, Int("SOCK_ID", 0, 255), Int("TLS_CONF_IDX", 1, TLS_CONFS, optional=True, default=1),
             family="socket", doc="Upgrade a connected TCP socket to TLS: OK, then +SOCKTLS:<id> or +SOCKERR")
    async def socktls(self, ctx, sid: int, conf: int) -> None:
        s = self._sock(sid, 2)
        if s.conn is None or s.conn.closed or s.upgrading:
            raise self.fail(E_STATE, "socket is not connected")
        if s.conn.tls:
            raise self.fail(E_STATE, "already TLS")
        default = s.remote[0] if s.remote else ""
        tctx, sni = self._tls_context(conf, default)
        s.upgrading = True
        ctx.ok()
        self.module.spawn(self._tls_upgrade(s, tctx, sni))

    async def _tls_upgrade(self, s: Sock, tctx, sni: str) -> None:
        try:
            await s.conn.start_tls(tctx, sni, timeout=15.0)
        except NetError as e:
            s.upgrading = False
            if self.socks.get(s.id) is s:
                self.urc(f"+SOCKERR:{s.id},{NET_CODES.get(e.kind, 99)},{fmt_str(e.message[:120])}")
            return
        s.upgrading = False
        if self.socks.get(s.id) is s:
            self.urc(f"+SOCKTLS:{s.id}")
            if s.conn.available:
                self._tcp_data(s)

    @command("+SOCKLST", Form.EXEC, family="socket", doc="List sockets: +SOCKLST:<id>,<proto>,<rmt addr>,<rmt port>,<lcl port>")
    @command("+SOCKLST", Form.WRITE, Int("SOCK_ID", 0, 255), family="socket")
    async def socklst(self, ctx, sid: int | None = None) -> None:
        ids = sorted(self.socks) if sid is None else [self._sock(sid).id]
        for i in ids:
            s = self.socks[i]
            r = s.remote
            if s.proto == 2 and s.conn is not None and s.conn.remote_addr:
                r = s.conn.remote_addr
            ctx.info(f'+SOCKLST:{i},{s.proto},"{r[0] if r else ""}",{r[1] if r else 0},{s.local_port}')

    async def _payload(self, ctx, length: int, data: bytes | None, udp: bool) -> bytes:
        if data is not None:
            if len(data) != length:
                raise self.fail(E_DATA, "data does not match <LENGTH>")
            return data
        if length:
            ev = await ctx.read_data(length, marker=b"#", idle=self.data_timeout)
            complete = isinstance(ev, Data) and ev.reason == "length" and len(ev.payload) == length
        else:
            # +2: a datagram of exactly MAX_DATA bytes is followed by +++ (3 bytes), not overflowed
            ev = await ctx.read_data(None, marker=b"#", terminator=b"+++", max_len=MAX_DATA + 2 if udp else None,
                                     idle=self.data_timeout)
            if isinstance(ev, DataOverflow):
                await self._skip_to_escape(ctx, ev.payload)
            complete = isinstance(ev, Data) and ev.reason == "terminator" and not (udp and len(ev.payload) > MAX_DATA)
        if not complete:
            raise self.fail(E_DATA, "binary data incomplete, too long, or the host fell silent")
        return ev.payload

    @command("+SOCKWR", Form.WRITE, Int("SOCK_ID", 0, 255), Int("LENGTH", 0, MAX_DATA),
             Bytes("DATA", quoted=True, optional=True, max_len=MAX_DATA), family="socket",
             doc="Send on a connected TCP socket or a UDP socket with a destination; without DATA: '#' + LENGTH raw bytes (0: until +++)")
    async def sockwr(self, ctx, sid: int, length: int, data: bytes | None) -> None:
        s = self._sock(sid)
        if data is not None and length == 0:
            raise CmdError("param", message="inline data needs its length")
        if s.proto == 2:
            if s.conn is None or s.conn.closed or s.upgrading:
                raise self.fail(E_STATE, "socket is not connected")
        elif s.udp is None or s.udp.remote is None:
            raise self.fail(E_STATE, "no destination (use AT+SOCKBR or AT+SOCKWRTO)")
        payload = await self._payload(ctx, length, data, s.proto == 1)
        if self.socks.get(sid) is not s:
            raise self.fail(E_SOCKET, "socket closed meanwhile")
        try:
            if s.proto == 2:
                if s.conn.closed:
                    raise NetError("closed")
                s.conn.write(payload)
                if s.conn.write_buffer_size > 256 * 1024:
                    await asyncio.wait_for(s.conn.drain(), 10.0)
            else:
                s.udp.sendto(payload)
        except (NetError, asyncio.TimeoutError) as e:
            raise self.fail(E_SOCKET, str(e)) from None

    @command("+SOCKWRTO", Form.WRITE, Int("SOCK_ID", 0, 255), Str("RMT_ADDR", quoted=True, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), Int("LENGTH", 0, MAX_DATA), Bytes("DATA", quoted=True, optional=True, max_len=MAX_DATA),
             family="socket", doc="Send a UDP datagram to an address (alias AT+SOCKWRT0)")
    @command("+SOCKWRT0", Form.WRITE, Int("SOCK_ID", 0, 255), Str("RMT_ADDR", quoted=True, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), Int("LENGTH", 0, MAX_DATA), Bytes("DATA", quoted=True, optional=True, max_len=MAX_DATA),
             family="socket", doc="Alias of AT+SOCKWRTO (the manual's heading spells it with a zero)", builtin=True)
    async def sockwrto(self, ctx, sid: int, host: str, port: int, length: int, data: bytes | None) -> None:
        s = self._sock(sid, 1)
        self.need_link()
        if data is not None and length == 0:
            raise CmdError("param", message="inline data needs its length")
        try:
            ip = await self.module.resolver.resolve_one(host, timeout=10.0)
        except NetError as e:
            raise self.fail(E_SOCKET, str(e)) from None
        if s.udp is None:
            await self._udp_open(s, 0)
        payload = await self._payload(ctx, length, data, True)
        if self.socks.get(sid) is not s or s.udp is None:
            raise self.fail(E_SOCKET, "socket closed meanwhile")
        try:
            s.udp.sendto(payload, (ip, port))
        except NetError as e:
            raise self.fail(E_SOCKET, str(e)) from None

    @command("+SOCKRD", Form.WRITE, Int("SOCK_ID", 0, 255), Int("OUTPUT_MODE", 1, 2), Int("LENGTH", 1, 65535),
             family="socket", doc="Read: +SOCKRD:<id>,<n>,<data> (mode 1 quoted/[hex], mode 2 '#'+raw bytes)")
    async def sockrd(self, ctx, sid: int, mode: int, length: int) -> None:
        s = self._sock(sid)
        if s.proto == 2:
            data = s.conn.read(length) if s.conn is not None else b""
        else:
            item = s.udp.recvfrom() if s.udp is not None else None
            data = item[0][:length] if item else b""
        s.announced = False
        if mode == 1:
            ctx.info(f"+SOCKRD:{sid},{len(data)},{fmt_str(data)}")
        else:
            ctx.raw(f"+SOCKRD:{sid},{len(data)},#".encode() + data + b"\r\n")
        if s.proto == 2:
            self._tcp_data(s)
        else:
            self._udp_data(s)

    # ================================================================== DNS, ping
    @command("+DNSRESOLV", Form.WRITE, Int("TYPE", 1, 2), Str("DOMAIN_NAME", quoted=True, min_len=1, max_len=253),
             family="dns", doc="Resolve: OK, then +DNSRESOLV:<type>,<name>,<address> or +DNSERROR:<code>")
    async def dnsresolv(self, ctx, typ: int, name: str) -> None:
        self.need_link()
        ctx.ok()
        self.module.spawn(self._resolve(typ, name))

    async def _resolve(self, typ: int, name: str) -> None:
        import socket
        fam = socket.AF_INET if typ == 1 else socket.AF_INET6
        try:
            ip = await self.module.resolver.resolve_one(name, family=fam, timeout=10.0)
        except NetError as e:
            self.urc(f"+DNSERROR:{2 if e.kind == 'dns_timeout' else 1}")
            return
        self.urc(f'+DNSRESOLV:{typ},{fmt_str(name)},"{ip}"')

    @command("+PING", Form.WRITE, Str("TARGET_ADDR", quoted=True, min_len=1, max_len=253), Int("IP_PROTOCOL_VERSION", 1, 2, optional=True),
             family="ping", doc="Ping once: OK, then +PING:<ip>,<rtt ms> (-1: no reply)")
    async def ping(self, ctx, target: str, ver: int | None) -> None:
        self.need_link()
        ctx.ok()
        self.module.spawn(self._ping(target, ver))

    async def _ping(self, target: str, ver: int | None) -> None:
        import socket
        from emulator.net.ping import ping
        fam = {1: socket.AF_INET, 2: socket.AF_INET6}.get(ver or 0, 0)
        try:
            ip = await self.module.resolver.resolve_one(target, family=fam, timeout=10.0)
        except NetError as e:
            self.urc(f"+DNSERROR:{2 if e.kind == 'dns_timeout' else 1}")
            return
        try:
            res = await ping(ip, count=1, timeout=4.0)
            r = res[0]
            rtt = max(0, round(r.rtt_ms)) if r.ok and r.rtt_ms is not None else -1
        except NetError as e:
            log.warning("ping: %s", e)
            rtt = -1
        self.urc(f'+PING:"{ip}",{rtt}')

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
