"""Quectel FCM242D / FGM842D, part 1: dialect, general, Wi-Fi, TCP/IP, SSL, network utilities, files.

Manual: ../shared/specs/quectel-fcm242d-fgm842d-at.txt; inventory (with the 0-based enum fix and
the ambiguity list §5.Z): ../shared/reference/inventory-quectel-fcm242d.md. Every choice this part
makes is in ``DEVIATIONS`` below and in README.md next to this file.

Shared state for the MQTT/HTTP/BLE mixins (part 2):

* ``self.ssl_ctx[i]`` -> :class:`SslConfig` (AT+QSSLCFG), ``client_context(server_hostname)``;
* ``self.fs`` -> :class:`~atemu.files.FlashFS` (the module's UFS);
* ``self.wifi_connected()``, ``self.ip_address``;
* ``self._teardown_hooks`` -> awaited by :meth:`shutdown` (reboot / power off);
* ``format_error``: ``CmdError(code=N)`` -> ``+CME ERROR: N``, anything else -> ``ERROR``.
"""
from __future__ import annotations

import asyncio
import binascii
import fnmatch
import ipaddress
import logging
import os
import ssl
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from atemu import wifi
from atemu.files import FlashFS, FsError
from atemu.grammar import (Data, DataCancelled, DataOverflow, Dialect, EscapeSequence, Form, Int, Str,
                              TransparentData, UrcSpec)
from atemu.module import Ctx
from atemu.net.dns import parse_server
from atemu.net.errors import NetError
from atemu.net.sockets import TcpConnection, TcpListener, UdpSocket
from atemu.profile import CmdError, Profile, command
from atemu.world import AccessPoint

log = logging.getLogger("atemu.quectel")

VERSION = "FCM242DAAR01A01_ATEMU"
DEFAULT_MAC = "88:00:33:77:69:cc"
MAX_SOCKETS = 12
SEND_MAX = 1460
READ_MAX = 1500
AP_ADDRESSING = ("192.168.4.1", "255.255.255.0", "192.168.4.1", "192.168.4.1")   # soft AP: IP, mask, gate, DNS
RX_HIGH_WATER = 4 << 20       # pause reading (TCP window closes) above this; nothing is dropped

ERR_TEXT = {
    0: "Operation success", 550: "Unknown error", 551: "Operation blocked", 552: "Invalid parameters",
    553: "Memory not enough", 554: "Socket creation failed", 555: "Operation not supported",
    556: "Socket bind failed", 557: "Socket listen failed", 558: "Socket write failed",
    559: "Socket read failed", 560: "Socket accept failed", 561: "Socket identity has been used",
    562: "DNS busy", 563: "DNS failed", 564: "Socket connect failed", 565: "Socket has been closed",
    566: "Operation busy", 567: "Operation timeout", 568: "Cancel sending", 569: "Operation not allowed",
    570: "Port busy",
}

# NetError.kind -> result code (§4.1)
NET_CODE = {"dns": 563, "dns_timeout": 562, "refused": 564, "timeout": 567, "unreachable": 564,
            "reset": 565, "closed": 565, "tls": 564, "tls_verify": 564, "addrinuse": 570,
            "invalid": 552, "perm": 569, "other": 550}

# socket states (0-based, §0.1)
ST_INITIAL, ST_OPENING, ST_CONNECTED, ST_LISTENING, ST_CLOSING = range(5)

CIPHERS = {
    0x0035: "AES256-SHA", 0x002F: "AES128-SHA", 0x0005: "RC4-SHA", 0x000A: "DES-CBC3-SHA",
    0x003D: "AES256-SHA256", 0xC003: "ECDH-ECDSA-DES-CBC3-SHA", 0xC004: "ECDH-ECDSA-AES128-SHA",
    0xC005: "ECDH-ECDSA-AES256-SHA", 0xC008: "ECDHE-ECDSA-DES-CBC3-SHA", 0xC009: "ECDHE-ECDSA-AES128-SHA",
    0xC00A: "ECDHE-ECDSA-AES256-SHA", 0xC011: "ECDHE-RSA-RC4-SHA", 0xC012: "ECDHE-RSA-DES-CBC3-SHA",
    0xC013: "ECDHE-RSA-AES128-SHA", 0xC014: "ECDHE-RSA-AES256-SHA", 0xC00D: "ECDH-RSA-DES-CBC3-SHA",
    0xC00E: "ECDH-RSA-AES128-SHA", 0xC00F: "ECDH-RSA-AES256-SHA", 0xC023: "ECDHE-ECDSA-AES128-SHA256",
    0xC024: "ECDHE-ECDSA-AES256-SHA384", 0xC025: "ECDH-ECDSA-AES128-SHA256", 0xC026: "ECDH-ECDSA-AES256-SHA384",
    0xC027: "ECDHE-RSA-AES128-SHA256", 0xC028: "ECDHE-RSA-AES256-SHA384", 0xC029: "ECDH-RSA-AES128-SHA256",
    0xC02A: "ECDH-RSA-AES256-SHA384", 0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
}
TLS_VERSIONS = {1: ssl.TLSVersion.TLSv1, 2: ssl.TLSVersion.TLSv1_1, 3: ssl.TLSVersion.TLSv1_2}

PSK_NAMES = {"open": "OPEN", "wep": "WEP", "wpa": "WPA_PSK", "wpa2": "WPA2_PSK", "wpa3": "WPA3_SAE",
             "wpa-wpa2": "WPA_WPA2_PSK", "wpa2-wpa3": "WPA2_WPA3", "wpa2-enterprise": "WPA2_ENTERPRISE"}

DEVIATIONS = [
    "Z1: enumerations use the real 0-based values (AT+QECHO=0 is off, AT+QISTATE state 2 = connected, ...); the dump's 1-based lists are not accepted.",
    "Z1: AT+QICFG=\"tcp/tw_cycle\": 0 = enable quick TIME_WAIT recycling, 1 = disable (only stored; the host OS owns TIME_WAIT).",
    "Z2: default 115200 8N1; echo is ON after power-up (AT+QECHO=0 turns it off; ATE0/ATE1 also work). AT+QSETBAND answers OK at the old rate, then switches.",
    "Z3: +++ needs 1 s of silence before and after (world option quectel.escape_guard, seconds); it answers OK; ATO resumes the last transparent socket.",
    "Z4: Esc during AT+QISEND/AT+QSSLSEND discards the data and answers SEND FAIL; AT+QIGETERROR then reports 568.",
    "Z5: the data prompt is CR LF '> ' (with a space).",
    "Line endings: a command ends with CR or CR LF; a lone LF is ignored (manual: 'A newline character is ignored'); the LF of CR LF is echoed with the CR and never becomes payload.",
    "Z6: string parameters may be quoted or bare.",
    "Z7: TCP/IP, SSL, Wi-Fi, file and utility commands fail with a bare ERROR (details through AT+QIGETERROR for TCP/IP/SSL); +CME ERROR: <n> is only produced when a handler raises with a code (HTTP, part 2).",
    "Z8: URCs have a space after the colon (+QSTASTAT: GOT_IP); event words are unquoted; WLAN_DISCONNECTED uses an underscore.",
    "Z9: AT+QWLMAC prints colon-separated lower-case hex (world option quectel.mac overrides).",
    "Z10: AT+QGETIP prints +QGETIP: <IP>,<gate>,<mask>,<DNS> unquoted, in the parameter-list order.",
    "Z20: AT+QICFG=\"dataformat\" hex: AT+QISEND lengths count bytes (2 hex characters each); received data is printed as hex with the byte count.",
    "Z21: AT+QIOPEN <local_port> 0 means automatic; AT+QIACT does not exist.",
    "Z22: the UDP SERVICE AT+QIRD header has no trailing comma: +QIRD: <len>,\"<ip>\",<port>.",
    "Z23: AT+QISEND=<id>,0 is the acknowledgement query; AT+QSSLRECV has no statistics form; an empty read answers +QSSLRECV: 0 / +QIRD: 0.",
    "Z24: AT+QSSLSTATE=0,<ctx> lists the connections of SSL context <ctx>; =1,<id> one connection; <serverID> prints the connectID.",
    "Z26: AT+QSSLCFG=\"clientkey\",<ctx>,<path>[,<key_pwd>]: <key_pwd> is the key's password. Every QSSLCFG key with no value answers its current value.",
    "Z37: AT+QFOPEN default mode 0; handles start at 1; AT+QFDEL=\"*\" or \"UFS:\" deletes every file; AT+QFLST patterns use * and ?; a leading 'UFS:' is ignored.",
    "Z39: AT+QSTAAPINFO/AT+QSOFTAP answer OK at once; the result comes as +QSTASTAT/+QAPSTAT URCs (unknown SSID: SCAN_NO_AP; wrong password or security: WLAN_DISCONNECTED).",
    "QSSLCFG defaults: sslversion 4 (TLS 1.0-1.2; the module has no TLS 1.3), seclevel 0, ciphersuite 0xFFFF, negotiatetime 300, sni 0, ignorelocaltime 1, session_cache 0. sslversion 0 (SSL 3.0) cannot be negotiated (OpenSSL has no SSLv3) and fails.",
    "QSSLCFG sni 0 with verification: the name is still checked against the certificate, but not sent in the ClientHello.",
    "TLS failures (handshake, verification) report 564; unreadable certificate files report 552.",
    "QSSLCFG session_cache 1 allows session tickets but connections are not resumed (asyncio cannot pass a saved session).",
    "QIOPEN/QSSLOPEN without Wi-Fi answer ERROR (AT+QIGETERROR: 569). An occupied <connectID> answers ERROR (561). Transparent mode for a LISTENER/SERVICE (or AT+QISWTMD on one) is 555; a second AT+QPING while one runs is 566, a second AT+QIDNSGIP 562; a listen failure other than a taken port is 557; a datagram the host refuses (e.g. to 255.255.255.255 while udp/broadcast is 0) answers SEND FAIL with 558 and is not counted as sent.",
    "TCP LISTENER / UDP SERVICE bind on the host at world option quectel.listen_host (default 127.0.0.1) and the given port.",
    "AT+QICFG=\"tcp/accept\",1 (default) accepts incoming clients automatically; with 0 the +QIURC: \"incoming\" URC names the ID that AT+QIACCEPT=<listener>,1[,<id>] will use, AT+QIACCEPT=<listener>,0 rejects (RST).",
    "After +++ a transparent socket keeps its received data buffered; ATO (or AT+QISWTMD=<id>,2) delivers it; AT+QIRD may also read it.",
    "A remote close in transparent mode prints the rest of the data, then NO CARRIER; the socket is then in state 4 until AT+QICLOSE.",
    "AT+QISEND (variable) reads up to 1460 bytes; more before Ctrl+Z answers ERROR. qisend/timeout 0 (default) waits forever. With more than 256 KiB waiting to leave, AT+QISEND/AT+QSSLSEND answer SEND FAIL without a prompt (AT+QIGETERROR: 551, the write would block).",
    "AT+QIDNSCFG servers are really asked (UDP DNS, the core's client) by every lookup after the world's host overrides; none set: the host resolver.",
    "AT+QNTP without a server uses world option quectel.ntp_server (default pool.ntp.org); <time> is UTC, printed \"YY/MM/DD,hh:mm:ss+00\".",
    "AT+QPING prints +QPING: 0,\"<ip>\",<bytes>,<ms>,<ttl> per reply, +QPING: 567 per lost reply, then +QPING: 0,<sent>,<rcvd>,<lost>,<min>,<max>,<avg>.",
    "AT+QWLANOTA downloads the image over real HTTP(S) into <state-dir>/ota/firmware.bin (not flashed); +QOTASTAT: START_DOWNLOAD, DOWNLOADING (per 25%), DOWNLOAD_SUCCEED or DOWNLOAD_FAILED.",
    "AT+QSCLK and AT+QCFG=\"urc/pin\" store and report their settings; sleep and the indication pin have nothing to act on in an emulator (the UART stays awake).",
    "AT+QWEBCFG=1 raises an open soft AP (FCM242D_<last 4 MAC digits>, unless one is up) and serves the provisioning form on the host (quectel.listen_host, world option quectel.webcfg_port, default any free port); POST /config with ssid/password saves the hotspot and joins it. AT+QWEBCFG=0 stops both.",
    "AT+QAIRKISS=1 listens for AirKiss: the control plane calls profile.airkiss_broadcast(ssid, password) in place of the phone; the credentials are saved and joined. With AT+QAIRKISS=0 the broadcast is ignored.",
    "AT+QSOFTAP puts the access point into the shared world: other emulated modules scan and join it. A station of any emulated module of the world (any profile, through atemu.wifi) that joins it gets the next free address of the AP's network from the soft AP (+QAPSTAT: AP_CONNECT; AP_DISCONNECT when it leaves). Tests and the control plane add stations with profile.ap_station_join(mac) / ap_station_leave(mac). Stopping (or restarting) the soft AP prints AP_DISCONNECT per station before AP_DOWN (AP_UP) and drops the emulated stations' links.",
    "AT+QRST: OK, then the module reboots (sockets closed, volatile settings reset) and prints 'ready' after world option quectel.boot_delay (default 0.5 s).",
    "Flash (UFS): 512 KiB, 64 files, 80-byte names, 64 KiB per file.",
    "AT+QICFG=\"dataformat\" applies to TCP/UDP sockets only; SSL data is always raw.",
    "When the station loses its AP (AT+QSTASTOP, AP gone, deauth, joining another AP) every socket using the station's address is reset: +QSTASTAT: WLAN_DISCONNECTED, then +QIURC/+QSSLURC: \"closed\" (state 4, unread data stays readable; a transparent session ends with NO CARRIER; an open in progress reports 564). AT+QSOFTAPSTOP does the same to sockets opened with <ap_priority>=1 without a station.",
    "ATE0/ATE1 (not in the manual) are accepted as on other Quectel firmware; ATO0 is accepted as ATO. Forms the manual does not document for a command (AT+QVERSION?, AT+QECHO=?, ATO=?, ...) answer ERROR.",
    "AT+QSTASTATIC/AT+QAPSTATIC answer ERROR unless the four values are IPv4 addresses and <mask> is a netmask; AT+QAPSTATIC also for a network with no address left for a station (/32).",
]


# ------------------------------------------------------------------------------------------
# SSL contexts


def _name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def cert_matches(cert: dict, host: str) -> bool:
    """Does the verified peer certificate (``getpeercert()``) name ``host``?"""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    sans = cert.get("subjectAltName", ())
    for kind, value in sans:
        if ip is not None and kind == "IP Address":
            try:
                if ipaddress.ip_address(value.strip()) == ip:
                    return True
            except ValueError:
                pass
        elif ip is None and kind == "DNS" and _name_matches(value, host):
            return True
    if not any(k == "DNS" for k, _ in sans) and ip is None:
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName" and _name_matches(v, host):
                    return True
    return False


@dataclass
class SslConfig:
    """One AT+QSSLCFG context."""

    owner: Any = None
    version: int = 4
    seclevel: int = 0
    cipher: int = 0xFFFF
    negotiate_time: int = 300
    sni: int = 0
    cacert: str = ""
    clientcert: str = ""
    clientkey: str = ""
    key_pwd: str = ""
    ignore_ltime: int = 1
    session_cache: int = 0

    def _file(self, name: str, what: str) -> bytes:
        try:
            return self.owner.fs.read(name)
        except FsError as e:
            raise NetError("invalid", f"{what} {name!r}: {e}") from None

    def client_context(self, server_hostname: str | None = None) -> ssl.SSLContext:
        """An SSLContext as the module would negotiate with this configuration.

        seclevel 0: no verification at all; 1: the server's chain (CA file from the UFS, which is
        required) and name; 2: as 1 and the client certificate/key from the UFS are presented.
        Raises NetError("invalid") when configured files are missing or malformed.
        """
        from atemu.net.tls import client_context
        verify = self.seclevel >= 1
        ca = None
        if verify:
            if not self.cacert:
                raise NetError("invalid", "seclevel 1/2 needs AT+QSSLCFG=\"cacert\"")
            ca = self._file(self.cacert, "CA certificate")
        cert = key = None
        if self.seclevel >= 2:
            if not (self.clientcert and self.clientkey):
                raise NetError("invalid", "seclevel 2 needs \"clientcert\" and \"clientkey\"")
            cert = self._file(self.clientcert, "client certificate")
            key = self._file(self.clientkey, "client key")
        if self.version == 0:
            raise NetError("invalid", "SSL 3.0 is not available")
        ciphers = None
        if self.cipher != 0xFFFF:
            ciphers = CIPHERS.get(self.cipher)
            if ciphers is None:
                raise NetError("invalid", f"unknown cipher suite 0x{self.cipher:04X}")
        if self.version in (1, 2):
            ciphers = (ciphers or "DEFAULT") + ":@SECLEVEL=0"
        minv = TLS_VERSIONS.get(self.version, ssl.TLSVersion.TLSv1 if self.version == 4 else None)
        maxv = TLS_VERSIONS.get(self.version, ssl.TLSVersion.TLSv1_2)
        if self.version == 4:
            ciphers = ciphers or "DEFAULT:@SECLEVEL=0"
        with warnings.catch_warnings():     # TLS 1.0/1.1 are deprecated in Python, not on the module
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = client_context(ca=ca, cert=cert, key=key, key_password=self.key_pwd.encode() if self.key_pwd else None,
                                 verify=verify, check_hostname=verify and bool(server_hostname),
                                 min_version=minv, max_version=maxv, ciphers=ciphers,
                                 ignore_time=bool(self.ignore_ltime))
        if not self.session_cache:
            ctx.options |= ssl.OP_NO_TICKET
        return ctx

    def open_params(self, host: str) -> tuple[ssl.SSLContext, str, str | None]:
        """(context, server_hostname for the handshake, name to check afterwards or None)."""
        is_ip = _is_ip(host)
        if self.sni and not is_ip:
            return self.client_context(host), host, None
        ctx = self.client_context(None)
        return ctx, "", (host if self.seclevel >= 1 else None)


def _norm_mac(mac: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` from any common spelling; ValueError if it is not a MAC address."""
    digits = str(mac).replace(":", "").replace("-", "").lower()
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def _strip_ufs(name: str) -> str:
    """A UFS file name or pattern without its optional ``UFS:`` drive prefix."""
    return name[4:] if name.upper().startswith("UFS:") else name


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------
# sockets


@dataclass
class Sock:
    id: int
    service: str                  # TCP, UDP, TCP LISTENER, UDP SERVICE, TCP INCOMING, SSL
    host: str
    rport: int
    lport: int = 0
    mode: int = 0
    state: int = ST_OPENING
    server_id: int = -1
    ssl_ctx: int = -1
    conn: TcpConnection | None = None
    udp: UdpSocket | None = None
    listener: TcpListener | None = None
    notified: bool = False        # edge-triggered recv URC sent, not yet drained
    have_read: int = 0
    closed_evt: asyncio.Event = field(default_factory=asyncio.Event)
    pending: list = field(default_factory=list)   # listener: connections awaiting AT+QIACCEPT
    task: asyncio.Task | None = None
    active: bool = False          # a transparent session is running on it right now
    via_ap: bool = False          # uses the soft AP's address (AT+QIOPEN <ap_priority>=1)
    wake: Callable[[], Any] | None = None   # wakes a running transparent session

    @property
    def is_ssl(self) -> bool:
        return self.service == "SSL"

    @property
    def urc(self) -> str:
        """Prefix of this socket's "recv"/"closed" URCs."""
        return "+QSSLURC" if self.is_ssl else "+QIURC"

    @property
    def open_urc(self) -> str:
        """Prefix of this socket's open result (URC of modes 0/1)."""
        return "+QSSLOPEN" if self.is_ssl else "+QIOPEN"

    def buffered(self) -> int:
        if self.conn is not None:
            return self.conn.available
        if self.udp is not None:
            return self.udp.pending_bytes
        return 0

    def total_received(self) -> int:
        if self.conn is not None:
            return self.conn.total_received
        if self.udp is not None:
            return self.udp.total_received
        return 0


def _qicfg_int(key: str, attr: str, param: Int, **kw: Any) -> Callable:
    """The handler of ``AT+QICFG=<key>[,<value>]`` for a key holding one integer (attribute ``attr``):
    with no value it answers ``+QICFG: "<key>",<value>``."""

    @command("+QICFG", Form.WRITE, param, sub=key, family="tcpip", **kw)
    async def handler(self: "QuectelBase", ctx: Ctx, v: int | None) -> None:
        if v is None:
            ctx.info(f'+QICFG: "{key}",{getattr(self, attr)}')
        else:
            setattr(self, attr, v)
    return handler


def _sslcfg(key: str, param: Any, attr: str | None = None, fmt: str = "{}", **kw: Any) -> Callable:
    """The handler of ``AT+QSSLCFG=<key>,<ctxID>[,<value>]`` for a key holding one integer or (``Str``
    parameter) one UFS file name, in :class:`SslConfig` attribute ``attr`` (default: the key)."""
    attr = attr or key

    @command("+QSSLCFG", Form.WRITE, Int("SSL_ctxID", 0, 5), param, sub=key, family="ssl", **kw)
    async def handler(self: "QuectelBase", ctx: Ctx, cid: int, v: Any) -> None:
        if isinstance(param, Str):
            self._cfg_path(ctx, key, attr, cid, v)
        else:
            self._cfg_int(ctx, key, attr, cid, v, fmt)
    return handler


class QuectelBase(Profile):
    name = "quectel-fcm242d"
    aliases = ("quectel-fgm842d", "fcm242d", "fgm842d")
    summary = "Quectel FCM242D / FGM842D Wi-Fi + BLE module (TCP/UDP/SSL, MQTT, HTTP(S), BLE)"
    default_baud = 115200
    dialect = Dialect(name="quectel", echo_default=True, max_line=2048)
    families = ("general", "wifi", "ble", "tcpip", "ssl", "mqtt", "http", "net", "file")
    deviations = DEVIATIONS
    urcs = [
        UrcSpec("+QSTASTAT", "+QSTASTAT: <event>", "station: WLAN_CONNECTED, GOT_IP, WLAN_DISCONNECTED, SCAN_NO_AP", "wifi"),
        UrcSpec("+QAPSTAT", "+QAPSTAT: <event>",
                "soft AP: AP_UP, AP_DOWN, AP_CONNECT (a station joined), AP_DISCONNECT (a station left)", "wifi"),
        UrcSpec("+QOTASTAT", "+QOTASTAT: <event>", "OTA download progress", "general"),
        UrcSpec("+QIOPEN", "+QIOPEN: <connectID>,<err>", "result of AT+QIOPEN (modes 0/1)", "tcpip"),
        UrcSpec("+QIURC", "+QIURC: \"recv\",<connectID>[,<len>[,<ip>,<port>]]<CR><LF><data>", "data arrived", "tcpip"),
        UrcSpec("+QIURC", "+QIURC: \"closed\",<connectID>", "the peer closed the socket", "tcpip"),
        UrcSpec("+QIURC", "+QIURC: \"incoming\",<connectID>,<serverID>,<ip>,<port>", "a listener got a client", "tcpip"),
        UrcSpec("+QIURC", "+QIURC: \"incoming full\"", "no free connectID for a client", "tcpip"),
        UrcSpec("+QIURC", "+QIURC: \"dnsgip\",<err>,<count>,<ttl> / +QIURC: \"dnsgip\",<ip>", "AT+QIDNSGIP result", "net"),
        UrcSpec("+QSSLOPEN", "+QSSLOPEN: <connectID>,<err>", "result of AT+QSSLOPEN", "ssl"),
        UrcSpec("+QSSLURC", "+QSSLURC: \"recv\",<connectID>[,<len>]<CR><LF><data>", "SSL data arrived", "ssl"),
        UrcSpec("+QSSLURC", "+QSSLURC: \"closed\",<connectID>", "the SSL connection closed", "ssl"),
        UrcSpec("+QPING", "+QPING: <result>[,...]", "AT+QPING results", "net"),
        UrcSpec("+QNTP", "+QNTP: <err>,<time>", "AT+QNTP result", "net"),
    ]

    def __init__(self, module):
        self.module = module
        self._teardown_hooks: list[Callable[[], Awaitable]] = []
        opts = getattr(module.world, "options", {}) or {}
        self.opts = opts
        self.fs = FlashFS(module.state_dir / "flash", capacity=512 * 1024, max_file=64 * 1024, max_name=80, max_files=64)
        self.ssl_ctx: dict[int, SslConfig] = {i: SslConfig(owner=self) for i in range(6)}
        # Wi-Fi
        self.sta_up = False            # associated
        self.sta_ap: AccessPoint | None = None
        self.sta_ip = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")   # ip, gate, mask, dns
        self.dhcp = 1
        self.sta_static: tuple[str, str, str, str] | None = None     # ip, mask, gate, dns (as typed)
        self.softap: AccessPoint | None = None
        # stations associated with the soft AP (control plane, or any emulated module of the world
        # through atemu.wifi): MAC -> {"ip": leased address}
        self.ap_stations: dict[str, dict] = {}
        self._ap_lease: wifi.Lease | None = None   # what the AP's DHCP server leased us (atemu.wifi.associate)
        self._station: wifi.Station | None = None  # our station as the AP we are associated with knows it
        self.ap_static: tuple[str, str, str, str] | None = None
        self.dns_cfg: tuple[str, str] | None = None
        self._join_task: asyncio.Task | None = None
        # general
        self.urc_pin = (0, 120)
        self.sclk = (0, 1)
        self.airkiss = 0
        self.webcfg = 0
        # TCP/IP
        self.socks: dict[int, Sock] = {}
        self.last_err = 0
        self.transpktsize = 1024
        self.transwaittm = 2
        self.tcp_accept = 1
        self.qisend_timeout = 0
        self.passiveclosed = 0
        self.send_hex = 0
        self.recv_hex = 0
        self.close_mode = 0
        self.kalive = (0, 7200, 10, 8)
        self.tw_cycle = 1
        self.udp_broadcast = 0
        self.last_transparent: int | None = None
        self.files: dict[int, list] = {}   # handle -> [name, mode, pos]
        self._ping_task: asyncio.Task | None = None
        self._web = None
        self._web_ap = False
        self.webcfg_port = 0
        self._dns_task: asyncio.Task | None = None
        super().__init__(module)

    # ---- shared API ------------------------------------------------------------------------
    def wifi_connected(self) -> bool:
        return self.sta_up and self.sta_ip[0] != "0.0.0.0"

    @property
    def ip_address(self) -> str:
        if self.wifi_connected():
            return self.sta_ip[0]
        if self.softap is not None:
            return self.softap.gateway
        return "0.0.0.0"

    def format_error(self, err: CmdError) -> str:
        if err.code is not None and err.kind == "failed":
            return f"+CME ERROR: {err.code}"
        return "ERROR"

    def opt(self, key: str, default: Any) -> Any:
        return self.opts.get(f"quectel.{key}", default)

    # ---- lifecycle ----------------------------------------------------------------------------
    async def boot(self) -> None:
        m = self.module
        if not hasattr(m, "_quectel_base_baud"):
            m._quectel_base_baud = m.baud
        saved = m.settings.get("quectel.baud")
        target = int(saved) if saved else m._quectel_base_baud
        if target != m.baud:
            m.set_baud(target)
        m.urc("ready")
        d = m.settings.get("quectel.default_ap")
        if isinstance(d, dict) and d.get("ssid"):
            self._start_join(d["ssid"], d.get("pwd", ""))

    async def shutdown(self) -> None:
        for hook in list(self._teardown_hooks):
            try:
                await hook()
            except Exception as e:  # noqa: BLE001
                log.warning("teardown hook failed: %s", e)
        if self._join_task is not None:
            self._join_task.cancel()
        if self.sta_up:
            self._sta_down()
        for s in list(self.socks.values()):
            self._drop_sock(s, abort=True)
        self.socks.clear()
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        self._remove_softap(announce=False)

    # ==== general ===============================================================================
    @command("+QRST", Form.EXEC, family="general", doc="Reboot the module")
    async def qrst(self, ctx: Ctx) -> None:
        ctx.ok()
        self.module.request_reboot(float(self.opt("boot_delay", 0.5)))

    @command("+QVERSION", Form.EXEC, family="general", doc="Firmware version")
    async def qversion(self, ctx: Ctx) -> None:
        ctx.info(f"+QVERSION: {VERSION}")

    @command("+QECHO", Form.WRITE, Int("enable", 0, 1), family="general", doc="Echo on/off (not saved)")
    async def qecho(self, ctx: Ctx, enable: int) -> None:
        self.module.engine.echo = bool(enable)

    @command("+QSETBAND", Form.WRITE, Int("baud_rate", 1200, 2000000), Int("save", 0, 1), family="general",
             doc="UART baud rate")
    async def qsetband(self, ctx: Ctx, baud: int, save: int) -> None:
        if save:
            self.module.settings.set("quectel.baud", baud)
        ctx.ok()
        await self.module.drain_output()
        self.module.set_baud(baud)

    @command("+QSETBAND", Form.READ, family="general")
    async def qsetband_read(self, ctx: Ctx) -> None:
        ctx.info(f"+QSETBAND: {self.module.baud}")

    @command("+QWLANOTA", Form.WRITE, Str("URL", quoted=None, min_len=1, max_len=512), family="general",
             doc="Download a firmware image over HTTP(S)")
    async def qwlanota(self, ctx: Ctx, url: str) -> None:
        if not url.lower().startswith(("http://", "https://")) or not self.wifi_connected():
            raise CmdError("failed", message="OTA needs an http(s) URL and Wi-Fi")
        ctx.ok()
        self.module.spawn(self._ota(url))

    async def _ota(self, url: str) -> None:
        from atemu.net.http import HttpClient
        self.module.urc("+QOTASTAT: START_DOWNLOAD")
        from atemu.state import StateError, new_file
        dest_dir = self.module.state_dir / "ota"
        client = HttpClient(self.module.resolver)
        ok = False
        tmp = None
        try:
            resp = await client.get(url, timeout=30)
            try:
                if resp.status != 200:
                    raise NetError("other", f"HTTP {resp.status}")
                total = int(resp.header("Content-Length") or 0)
                got, next_mark = 0, 25
                tmp, f = new_file(dest_dir, "firmware.part")   # never through a planted link
                with f:
                    while True:
                        chunk = await resp.read(65536)
                        if not chunk:
                            break
                        f.write(chunk)
                        got += len(chunk)
                        while total and got * 100 >= next_mark * total and next_mark < 100:
                            self.module.urc("+QOTASTAT: DOWNLOADING")
                            next_mark += 25
                ok = got > 0 and (not total or got == total)
            finally:
                await resp.close()
        except (NetError, StateError, OSError) as e:
            log.info("OTA download failed: %s", e)
            ok = False
        finally:
            await client.close()
        if ok and tmp is not None:
            os.replace(tmp, dest_dir / "firmware.bin")
            self.module.urc("+QOTASTAT: DOWNLOAD_SUCCEED")
        else:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            self.module.urc("+QOTASTAT: DOWNLOAD_FAILED")

    @command("+QSCLK", Form.WRITE, Int("mode", 0, 3), Int("dtim", 1, 30, optional=True), family="general",
             doc="Low-power mode (stored)")
    async def qsclk(self, ctx: Ctx, mode: int, dtim: int | None) -> None:
        self.sclk = (mode, dtim if dtim is not None else self.sclk[1])

    @command("+QSCLK", Form.READ, family="general")
    async def qsclk_read(self, ctx: Ctx) -> None:
        ctx.info(f"+QSCLK: {self.sclk[0]},{self.sclk[1]}")

    @command("+QCFG", Form.WRITE, Int("enable", 0, 1, optional=True), Int("pulse", 60, 300, optional=True),
             sub="urc/pin", family="general", doc="URC indication pin", test='+QCFG: "urc/pin",(0,1),(60-300)')
    async def qcfg_urcpin(self, ctx: Ctx, enable: int | None, pulse: int | None) -> None:
        if enable is None:
            ctx.info(f'+QCFG: "urc/pin",{self.urc_pin[0]},{self.urc_pin[1]}')
            return
        self.urc_pin = (enable, pulse if pulse is not None else self.urc_pin[1])

    @command("+QAIRKISS", Form.WRITE, Int("enable", 0, 1), family="wifi", doc="AirKiss provisioning")
    async def qairkiss(self, ctx: Ctx, enable: int) -> None:
        self.airkiss = enable

    def airkiss_broadcast(self, ssid: str, password: str = "") -> bool:
        """Control-plane hook standing in for the phone app: the AirKiss frames carrying these
        credentials are on the air. Only a module with AT+QAIRKISS=1 picks them up (and joins)."""
        if not self.airkiss:
            return False
        self._provisioned(ssid, password)
        return True

    def _provisioned(self, ssid: str, password: str) -> None:
        self.module.settings.set("quectel.default_ap", {"ssid": ssid, "pwd": password})
        self._start_join(ssid, password)

    @command("+QWEBCFG", Form.WRITE, Int("enable", 0, 1), family="wifi",
             doc="Web provisioning: soft AP + HTTP form on the host")
    async def qwebcfg(self, ctx: Ctx, enable: int) -> None:
        if enable and self._web is None:
            await self._start_webcfg()
        elif not enable and self._web is not None:
            await self._stop_webcfg()
        self.webcfg = enable

    async def _start_webcfg(self) -> None:
        from aiohttp import web

        async def page(request):
            return web.Response(content_type="text/html", text=(
                "<html><body><form method='post' action='/config'>SSID <input name='ssid'> "
                "Password <input name='password' type='password'> <input type='submit'></form></body></html>"))

        async def submit(request):
            form = await request.post()
            ssid, pwd = str(form.get("ssid", "")), str(form.get("password", ""))
            if not 1 <= len(ssid.encode()) <= 32 or (pwd and not 8 <= len(pwd.encode()) <= 63):
                return web.Response(status=400, text="bad SSID or password\n")
            self._provisioned(ssid, pwd)
            return web.Response(text="OK\n")

        app = web.Application()
        app.router.add_get("/", page)
        app.router.add_post("/config", submit)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, str(self.opt("listen_host", "127.0.0.1")), int(self.opt("webcfg_port", 0)))
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise CmdError("failed", message=f"web provisioning server: {e}") from None
        self._web = runner
        self.webcfg_port = runner.addresses[0][1]
        log.info("web provisioning form on http://%s:%d/", runner.addresses[0][0], self.webcfg_port)
        if self.softap is None:
            mac = str(self.opt("mac", DEFAULT_MAC)).replace(":", "")
            self._raise_softap(str(self.opt("webcfg_ssid", f"FCM242D_{mac[-4:].upper()}")), None, AP_ADDRESSING)
            self._web_ap = True
            self.module.urc("+QAPSTAT: AP_UP")

    async def _stop_webcfg(self) -> None:
        runner, self._web = self._web, None
        if runner is not None:
            await runner.cleanup()
        if self._web_ap:
            self._web_ap = False
            if self.softap is not None:
                self._remove_softap()
                self.module.urc("+QAPSTAT: AP_DOWN")

    # ==== Wi-Fi =================================================================================
    @command("+QGETIP", Form.WRITE, Str("mode", quoted=None, choices=("station", "ap")), family="wifi",
             doc="IP configuration")
    async def qgetip(self, ctx: Ctx, mode: str) -> None:
        if mode == "station":
            ip, gw, mask, dns = self.sta_ip if self.sta_up else ("0.0.0.0",) * 4
        else:
            if self.softap is None:
                ip = gw = mask = dns = "0.0.0.0"
            else:
                ip, gw, mask, dns = self.softap.gateway, self.softap.gateway, self.softap.netmask, self.softap.dns
                if self.ap_static is None:
                    gw = "0.0.0.0"
        ctx.info(f"+QGETIP: {ip},{gw},{mask},{dns}")

    @command("+QWLMAC", Form.EXEC, family="wifi", doc="MAC address")
    async def qwlmac(self, ctx: Ctx) -> None:
        ctx.info(f"+QWLMAC: {self.opt('mac', DEFAULT_MAC)}")

    @command("+QSTAST", Form.EXEC, family="wifi", doc="Station state")
    async def qstast(self, ctx: Ctx) -> None:
        ctx.info(f"+QSTAST: {'STATION_UP' if self.sta_up else 'STATION_DOWN'}")

    @command("+QSTADHCP", Form.WRITE, Int("enable", 0, 1), family="wifi", doc="Station DHCP on/off")
    async def qstadhcp(self, ctx: Ctx, enable: int) -> None:
        self.dhcp = enable
        if self.sta_up and self.sta_ap is not None:
            self._apply_addressing(self.sta_ap)
            self._station_check()

    @command("+QSTADHCP", Form.READ, family="wifi")
    async def qstadhcp_read(self, ctx: Ctx) -> None:
        ctx.info(f"+QSTADHCP: {self.dhcp}")

    @staticmethod
    def _ipv4(*values: str) -> None:
        for v in values:
            try:
                ipaddress.IPv4Address(v)
            except ValueError:
                raise CmdError("param", message=f"{v!r} is not an IPv4 address") from None

    @classmethod
    def _addressing(cls, ip: str, mask: str, gate: str, dns: str) -> ipaddress.IPv4Network:
        """AT+QSTASTATIC / AT+QAPSTATIC values: four IPv4 addresses, ``mask`` a real netmask."""
        cls._ipv4(ip, mask, gate, dns)
        try:
            return ipaddress.IPv4Network(f"{ip}/{mask}", strict=False)
        except ValueError:
            raise CmdError("param", message=f"{mask!r} is not a netmask") from None

    _ADDRESSING = (Str("IP", quoted=None), Str("mask", quoted=None), Str("gate", quoted=None), Str("DNS", quoted=None))

    @command("+QSTASTATIC", Form.WRITE, *_ADDRESSING, family="wifi", doc="Station static IP (disables DHCP)")
    async def qstastatic(self, ctx: Ctx, ip: str, mask: str, gate: str, dns: str) -> None:
        self._addressing(ip, mask, gate, dns)
        self.sta_static = (ip, mask, gate, dns)
        self.dhcp = 0
        if self.sta_up and self.sta_ap is not None:
            self._apply_addressing(self.sta_ap)
            self._station_check()

    @command("+QSTASTOP", Form.EXEC, family="wifi", doc="Stop the station")
    async def qstastop(self, ctx: Ctx) -> None:
        if self._join_task is not None:
            self._join_task.cancel()
            self._join_task = None
        was = self.sta_up
        ctx.ok()
        if was:
            self._link_down()

    @command("+QSOFTAP", Form.WRITE, Str("SSID", quoted=None, min_len=1, max_len=32),
             Str("key", quoted=None, min_len=8, max_len=63, optional=True), family="wifi", doc="Start the soft AP")
    async def qsoftap(self, ctx: Ctx, ssid: str, key: str | None) -> None:
        self._remove_softap()
        self._raise_softap(ssid, key, self.ap_static or AP_ADDRESSING)
        ctx.ok()
        self.module.urc("+QAPSTAT: AP_UP")

    def _raise_softap(self, ssid: str, key: str | None, addressing: tuple[str, str, str, str]) -> None:
        """Put the soft AP on the shared world's air (other modules scan and join it)."""
        ip, mask, _gate, dns = addressing
        base = ipaddress.IPv4Network(f"{ip}/{mask}", strict=False)
        client_ip = str(next(h for h in base.hosts() if str(h) != ip))
        self.softap = AccessPoint(ssid=ssid, security="wpa2" if key else "open", password=key or "", channel=6,
                                  rssi=-40, bssid=str(self.opt("mac", DEFAULT_MAC)), ip=client_ip, gateway=ip,
                                  netmask=mask, dns=dns)
        wifi.host_ap(self.module.world, self.softap, self)   # stations of any profile report to us

    def _remove_softap(self, announce: bool = True) -> None:
        """Take the soft AP off the air; its stations are dropped (+QAPSTAT: AP_DISCONNECT each, unless
        the module is shutting down) and emulated stations lose their link."""
        if self.softap is not None:
            ap, self.softap = self.softap, None
            stations, self.ap_stations = self.ap_stations, {}
            if announce:
                for _ in stations:
                    self.module.urc("+QAPSTAT: AP_DISCONNECT")
            wifi.unhost_ap(self.module.world, ap)       # the stations' modules lose their link

    # ---- stations of the soft AP ----------------------------------------------------------------
    def ap_station_join(self, mac: str) -> str | None:
        """Control plane / tests: a station with this MAC associates with the soft AP:
        +QAPSTAT: AP_CONNECT. Returns the address the AP's DHCP server leases it (the same again if
        it is already associated: no second URC); None when no soft AP is up or no address is free.
        Stations of other emulated modules of the same world come here by joining the SSID."""
        return self._station_join(_norm_mac(mac))

    def ap_station_leave(self, mac: str) -> bool:
        """Control plane / tests: the station leaves: +QAPSTAT: AP_DISCONNECT. False if it was not associated."""
        return self._station_leave(_norm_mac(mac))

    def on_station_join(self, mac: str, name: str = "") -> wifi.Lease:
        """(atemu.wifi owner callback) a station of any emulated module joins: AP_CONNECT and the
        next free address; wifi.Refused when no address is left (or the soft AP is down)."""
        ip = self._station_join(_norm_mac(mac))
        if ip is None or self.softap is None:
            raise wifi.Refused(mac)
        ap = self.softap
        return wifi.Lease(ip, ap.gateway, ap.netmask, ap.dns)

    def on_station_leave(self, mac: str, reason: int) -> None:
        self._station_leave(_norm_mac(mac))

    def _station_join(self, key: str) -> str | None:
        if self.softap is None:
            return None
        st = self.ap_stations.get(key)
        if st is not None:
            return st["ip"]
        gw = self.softap.gateway
        used = {gw} | {s["ip"] for s in self.ap_stations.values()}
        net = ipaddress.IPv4Network(f"{gw}/{self.softap.netmask}", strict=False)
        ip = next((str(h) for h in net.hosts() if str(h) not in used), None)
        if ip is None:
            return None
        self.ap_stations[key] = {"ip": ip}
        self.module.urc("+QAPSTAT: AP_CONNECT")
        return ip

    def _station_leave(self, key: str) -> bool:
        if self.ap_stations.pop(key, None) is None:
            return False
        self.module.urc("+QAPSTAT: AP_DISCONNECT")
        return True

    def _ap_gone(self, ap: AccessPoint, reason: int = wifi.REASON_AP_GONE) -> None:
        """(atemu.wifi station callback) the soft AP of another module we are associated with
        stopped or dropped us."""
        if self.sta_up and self.sta_ap is ap:
            self._link_down(reason)

    @command("+QAPSTATE", Form.EXEC, family="wifi", doc="Soft AP state")
    async def qapstate(self, ctx: Ctx) -> None:
        ctx.info(f"+QAPSTATE: {'SOFTAP_UP' if self.softap else 'SOFTAP_DOWN'}")

    @command("+QAPSTATIC", Form.WRITE, *_ADDRESSING, family="wifi", doc="Soft AP static IP")
    async def qapstatic(self, ctx: Ctx, ip: str, mask: str, gate: str, dns: str) -> None:
        if not any(str(h) != ip for h in self._addressing(ip, mask, gate, dns).hosts()):
            raise CmdError("param", message="no address left for a station")
        self.ap_static = (ip, mask, gate, dns)

    @command("+QSOFTAPSTOP", Form.EXEC, family="wifi", doc="Stop the soft AP")
    async def qsoftapstop(self, ctx: Ctx) -> None:
        was = self.softap is not None
        self._remove_softap()
        ctx.ok()
        if was:
            self.module.urc("+QAPSTAT: AP_DOWN")
            self._network_gone(via_ap=True)

    def _check_creds(self, pwd: str | None) -> None:
        if pwd is not None and pwd != "" and not 8 <= len(pwd.encode()) <= 63:
            raise CmdError("param", message="password must be 8..63 bytes")

    _HOTSPOT = (Str("SSID", quoted=None, min_len=1, max_len=32), Str("pwd", quoted=None, max_len=63, optional=True))

    @command("+QSTAAPINFO", Form.WRITE, *_HOTSPOT, family="wifi", doc="Join an access point")
    async def qstaapinfo(self, ctx: Ctx, ssid: str, pwd: str | None) -> None:
        self._join_cmd(ctx, ssid, pwd, save=False)

    @command("+QSTAAPINFODEF", Form.WRITE, *_HOTSPOT, family="wifi",
             doc="Join an access point and save it as the default hotspot")
    async def qstaapinfodef(self, ctx: Ctx, ssid: str, pwd: str | None) -> None:
        self._join_cmd(ctx, ssid, pwd, save=True)

    def _join_cmd(self, ctx: Ctx, ssid: str, pwd: str | None, save: bool) -> None:
        """AT+QSTAAPINFO[DEF]: OK at once, the result comes as +QSTASTAT URCs."""
        self._check_creds(pwd)
        if save:
            self.module.settings.set("quectel.default_ap", {"ssid": ssid, "pwd": pwd or ""})
        ctx.ok()
        self._start_join(ssid, pwd or "")

    @command("+QSTAAPINFORMV", Form.EXEC, family="wifi", doc="Forget the saved hotspot")
    async def qstaapinformv(self, ctx: Ctx) -> None:
        self.module.settings.delete("quectel.default_ap")

    @command("+QGETWIFISTATE", Form.EXEC, family="wifi", doc="Connected hotspot")
    async def qgetwifistate(self, ctx: Ctx) -> None:
        ap = self.sta_ap
        if not self.sta_up or ap is None:
            raise CmdError("failed", message="not connected")
        ctx.info(f"+QGETWIFISTATE: ssid={ap.ssid},bssid={ap.bssid.lower()},rssi={ap.rssi},"
                 f"psk_type={PSK_NAMES.get(ap.security, ap.security.upper())}")

    @command("+QWSCAN", Form.EXEC, family="wifi", doc="Scan for access points")
    async def qwscan(self, ctx: Ctx) -> None:
        for ap in wifi.scan(self.module.world):
            if ap is self.softap:
                continue
            ctx.info(f'+QWSCAN: "{ap.ssid}",{PSK_NAMES.get(ap.security, ap.security.upper())},{ap.rssi},'
                     f'{ap.bssid.lower()},{ap.channel}')

    @command("+QIDNSCFG", Form.WRITE, Str("pridnsaddr", quoted=None), Str("secdnsaddr", quoted=None, optional=True),
             family="wifi", doc="DNS servers", test="+QIDNSCFG: <pridnsaddr>,<secdnsaddr>")
    async def qidnscfg(self, ctx: Ctx, pri: str, sec: str | None) -> None:
        for v in (pri, *([sec] if sec else [])):
            try:                                # IPv4; "a.b.c.d:port" for local test servers
                ipaddress.IPv4Address(parse_server(v)[0])
            except ValueError:
                raise CmdError("param", message=f"{v!r} is not an IPv4 address") from None
        self.dns_cfg = (pri, sec or (self.dns_cfg[1] if self.dns_cfg else "0.0.0.0"))
        self.module.resolver.servers = list(self.dns_cfg)   # every lookup asks them (0.0.0.0: none)

    @command("+QIDNSCFG", Form.READ, family="wifi")
    async def qidnscfg_read(self, ctx: Ctx) -> None:
        pri, sec = self.dns_cfg or (self.sta_ip[3] if self.sta_up else "0.0.0.0", "0.0.0.0")
        ctx.info(f"+QIDNSCFG: {pri},{sec}")

    # ---- station machinery -----------------------------------------------------------------------
    def _start_join(self, ssid: str, pwd: str) -> None:
        if self._join_task is not None:
            self._join_task.cancel()
        if self.sta_up:
            self._link_down()
        self._join_task = self.module.spawn(self._join(ssid, pwd))

    async def _join(self, ssid: str, pwd: str) -> None:
        await asyncio.sleep(float(self.opt("join_delay", 0.2)))
        result, ap = wifi.join(self.module.world, ssid, pwd, None)
        if result == wifi.JoinResult.NO_AP or ap is None or ap is self.softap:
            self.module.urc("+QSTASTAT: SCAN_NO_AP")
            return
        if result == wifi.JoinResult.OK:
            # through the core, so a soft AP of any profile sees us (and its DHCP server leases us)
            station = wifi.Station(_norm_mac(str(self.opt("mac", DEFAULT_MAC))), "", self._ap_gone)
            assoc = await wifi.associate(self.module.world, ap, station)
            if assoc is None:
                result = wifi.JoinResult.NO_AP
            else:
                self._station, self._ap_lease = station, assoc.lease
                if assoc.hosted and assoc.lease is None:       # that soft AP runs no DHCP server
                    self._ap_lease = wifi.Lease("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
        if result != wifi.JoinResult.OK:
            self.module.urc("+QSTASTAT: WLAN_DISCONNECTED")
            return
        self.sta_up = True
        self.sta_ap = ap
        self.module.urc("+QSTASTAT: WLAN_CONNECTED")
        if self._apply_addressing(ap):
            self.module.urc("+QSTASTAT: GOT_IP")
        wifi.watch_air(self.module.world, id(self), self.world_changed)   # the AP leaving the air: _link_down

    def _apply_addressing(self, ap: AccessPoint) -> bool:
        if self.dhcp:
            lease = self._ap_lease or wifi.Lease.from_ap(ap)
            self.sta_ip = (lease.ip, lease.gateway, lease.netmask, lease.dns)
        elif self.sta_static is not None:
            ip, mask, gate, dns = self.sta_static
            self.sta_ip = (ip, gate, mask, dns)
        else:
            self.sta_ip = ("0.0.0.0",) * 4
        return self.sta_ip[0] != "0.0.0.0"

    def _sta_down(self, reason: int = wifi.REASON_LEAVING) -> None:
        ap = self.sta_ap
        self.sta_up = False
        self.sta_ap = None
        self.sta_ip = ("0.0.0.0",) * 4
        self._ap_lease = None
        station, self._station = self._station, None
        wifi.unwatch_air(self.module.world, id(self))
        wifi.disassociate(self.module.world, ap, station, reason)   # a hosted soft AP hears we left

    def world_changed(self, change: dict | None = None) -> None:
        """The control plane changed the world: drop the link if our AP left the air (or deauth)."""
        if not self.sta_up or self.sta_ap is None:
            return
        deauth = bool(change) and change.get("change") == "deauth" and change.get("ssid") in (None, self.sta_ap.ssid)
        if deauth or not wifi.on_air(self.module.world, self.sta_ap):
            self._link_down()

    def _link_down(self, reason: int = wifi.REASON_LEAVING) -> None:
        """The station lost its AP: URC, then every socket that used the station's address dies."""
        self._sta_down(reason)
        self.module.urc("+QSTASTAT: WLAN_DISCONNECTED")
        self._network_gone(via_ap=False)
        self._station_check()

    def _station_check(self) -> None:
        """The station is down or has no address: tell the mixins that hold links over it (MQTT:
        +QMTSTAT 7). Event-driven: every path that takes the station down ends here."""
        if self.wifi_connected():
            return
        for hook in getattr(self, "_station_lost_hooks", ()):
            try:
                hook()
            except Exception:  # pragma: no cover - defensive
                log.exception("station-lost hook failed")

    def _network_gone(self, via_ap: bool) -> None:
        for s in list(self.socks.values()):
            if s.via_ap != via_ap or s.state == ST_CLOSING or (s.state == ST_OPENING and s.mode == 2):
                continue        # (a transparent open in progress answers CONNECT/ERROR itself)
            if s.state == ST_OPENING:
                self.socks.pop(s.id, None)
                self._drop_sock(s, abort=True)
                self.last_err = 564
                self.module.urc(f"{s.open_urc}: {s.id},564")
                continue
            s.state = ST_CLOSING
            if not s.active:
                self.module.urc(f'{s.urc}: "closed",{s.id}')
            self._drop_sock(s, abort=True)
            if s.active and s.wake is not None:
                s.wake()

    def snapshot(self) -> dict:
        return {
            "wifi": {"station": "up" if self.sta_up else "down", "ssid": self.sta_ap.ssid if self.sta_ap else None,
                     "ip": self.sta_ip[0], "softap": self.softap.ssid if self.softap else None,
                     "softap_stations": sorted(st["ip"] for st in self.ap_stations.values())},
            "sockets": {str(i): {"service": s.service, "host": s.host, "port": s.rport, "state": s.state,
                                 "mode": s.mode, "buffered": s.buffered()} for i, s in sorted(self.socks.items())},
            "last_error": self.last_err,
            "files_open": {str(h): f[0] for h, f in self.files.items()},
        }

    # ==== TCP/IP ================================================================================
    def _err(self, code: int, msg: str = "") -> CmdError:
        self.last_err = code
        return CmdError("failed", message=msg or ERR_TEXT.get(code, ""))

    def _use(self, cid: int, ssl: bool | None) -> Sock:
        """A command on one socket starts: clear the last error, find the socket of the right family."""
        self.last_err = 0
        return self._sock(cid, ssl_only=ssl)

    def _sock(self, cid: int, *, ssl_only: bool | None = None) -> Sock:
        s = self.socks.get(cid)
        if s is None or (ssl_only is True and not s.is_ssl) or (ssl_only is False and s.is_ssl):
            raise self._err(565 if s is None else 569, f"socket {cid} is not open")
        return s

    def _need_wifi(self) -> None:
        """AT+QPING / AT+QIDNSGIP / AT+QNTP start: clear the last error; no station address is 569."""
        self.last_err = 0
        if not self.wifi_connected():
            raise self._err(569, "no Wi-Fi")

    def _free_id(self) -> int | None:
        for i in range(MAX_SOCKETS):
            if i not in self.socks:
                return i
        return None

    qicfg_pkt = _qicfg_int("transpktsize", "transpktsize", Int("transpktsize", 1, 1460, optional=True),
                           doc="Socket options", test="\r\n".join([
                               '+QICFG: "transpktsize",(1-1460)', '+QICFG: "transwaittm",(0-20)',
                               '+QICFG: "tcp/accept",(0,1)', '+QICFG: "qisend/timeout",(0-120)',
                               '+QICFG: "passiveclosed",(0,1)', '+QICFG: "dataformat",(0,1),(0,1)',
                               '+QICFG: "close/mode",(0,1)', '+QICFG: "tcp/kalive",(0,1),(60-7200),(10-20),(1-8)',
                               '+QICFG: "tcp/tw_cycle",(0,1)', '+QICFG: "udp/broadcast",(0,1)']))
    qicfg_wait = _qicfg_int("transwaittm", "transwaittm", Int("transwaittm", 0, 20, optional=True))
    qicfg_accept = _qicfg_int("tcp/accept", "tcp_accept", Int("state", 0, 1, optional=True))
    qicfg_sendto = _qicfg_int("qisend/timeout", "qisend_timeout", Int("timeout", 0, 120, optional=True))
    qicfg_passive = _qicfg_int("passiveclosed", "passiveclosed", Int("closed", 0, 1, optional=True))

    @command("+QICFG", Form.WRITE, Int("send_data_format", 0, 1, optional=True),
             Int("recv_data_format", 0, 1, optional=True), sub="dataformat", family="tcpip")
    async def qicfg_fmt(self, ctx: Ctx, snd: int | None, rcv: int | None) -> None:
        if snd is None:
            ctx.info(f'+QICFG: "dataformat",{self.send_hex},{self.recv_hex}')
            return
        self.send_hex = snd
        if rcv is not None:
            self.recv_hex = rcv

    qicfg_close = _qicfg_int("close/mode", "close_mode", Int("close_mode", 0, 1, optional=True))

    @command("+QICFG", Form.WRITE, Int("kalive_onoff", 0, 1, optional=True), Int("kalive_idle", 60, 7200, optional=True),
             Int("kalive_interval", 10, 20, optional=True), Int("kalive_cnt", 1, 8, optional=True),
             sub="tcp/kalive", family="tcpip")
    async def qicfg_kalive(self, ctx: Ctx, on: int | None, idle: int | None, intv: int | None, cnt: int | None) -> None:
        if on is None:
            ctx.info('+QICFG: "tcp/kalive",{},{},{},{}'.format(*self.kalive))
            return
        o = self.kalive
        self.kalive = (on, idle if idle is not None else o[1], intv if intv is not None else o[2],
                       cnt if cnt is not None else o[3])
        for s in self.socks.values():
            self._apply_keepalive(s)

    def _apply_keepalive(self, s: Sock) -> None:
        if s.conn is not None and not s.conn.closed:
            on, idle, intv, cnt = self.kalive
            try:
                s.conn.set_keepalive(bool(on), idle, intv, cnt)
            except NetError:
                pass

    qicfg_tw = _qicfg_int("tcp/tw_cycle", "tw_cycle", Int("tw_enable", 0, 1, optional=True))
    qicfg_bcast = _qicfg_int("udp/broadcast", "udp_broadcast", Int("udp/broadcast", 0, 1, optional=True))

    # ---- open -----------------------------------------------------------------------------------
    @command("+QIOPEN", Form.WRITE, Int("connectID", 0, 11),
             Str("service_type", quoted=None, choices=("TCP", "UDP", "TCP LISTENER", "UDP SERVICE")),
             Str("IP_address", quoted=None, min_len=1, max_len=150), Int("remote_port", 0, 65535),
             Int("local_port", 0, 65535, optional=True, default=0), Int("access_mode", 0, 2, optional=True, default=0),
             Int("ap_priority", 0, 1, optional=True, default=0), family="tcpip", doc="Open a socket",
             test='+QIOPEN: (0-11),("TCP","UDP","TCP LISTENER","UDP SERVICE"),<IP_address>/<domain_name>,(0-65535),(0-65535),(0-2),(0,1)')
    async def qiopen(self, ctx: Ctx, cid: int, service: str, host: str, rport: int, lport: int, mode: int, prio: int):
        self.last_err = 0
        server = service in ("TCP LISTENER", "UDP SERVICE")
        if server and mode == 2:
            raise self._err(555, "a listener/service cannot be transparent")
        if server and lport == 0:
            raise self._err(552, "a listener/service needs a local port")
        if not server and rport == 0:
            raise self._err(552, "remote port 0")
        self._check_open(cid, via_ap_ok=prio == 1)
        await self._start_open(ctx, Sock(cid, service, host, rport, lport, mode, via_ap=not self.wifi_connected()))

    def _check_open(self, cid: int, via_ap_ok: bool = False) -> None:
        """AT+QIOPEN / AT+QSSLOPEN: the ID must be free (561) and there must be a network (569)."""
        if cid in self.socks:
            raise self._err(561)
        if not (self.wifi_connected() or (via_ap_ok and self.softap is not None)):
            raise self._err(569, "no Wi-Fi")

    async def _start_open(self, ctx: Ctx, s: Sock) -> None:
        """Mode 2 blocks until CONNECT (then runs the transparent session) or ERROR; modes 0/1
        answer OK and report +QIOPEN/+QSSLOPEN when the open has finished."""
        self.socks[s.id] = s
        if s.mode == 2:
            err = await self._open_sock(s)
            if err:
                self.socks.pop(s.id, None)
                raise self._err(err)
            ctx.final("CONNECT")
            await self._transparent(s)
            return
        ctx.ok()
        s.task = self.module.spawn(self._open_async(s))

    async def _open_async(self, s: Sock) -> None:
        err = await self._open_sock(s)
        if self.socks.get(s.id) is not s:
            return
        if err:
            self.socks.pop(s.id, None)
            self.last_err = err
            self.module.urc(f"{s.open_urc}: {s.id},{err}")
            return
        self.module.urc(f"{s.open_urc}: {s.id},0")
        self._deliver(s)  # data that arrived before the URC

    async def _open_sock(self, s: Sock) -> int:
        """Open the real socket; 0 or an error code."""
        timeout = float(self.opt("connect_timeout", 150.0))
        listen_host = str(self.opt("listen_host", "127.0.0.1"))
        try:
            if s.service in ("TCP", "SSL"):
                ssl_ctx, sni, check = None, None, None
                if s.is_ssl:
                    cfg = self.ssl_ctx[s.ssl_ctx]
                    ssl_ctx, sni, check = cfg.open_params(s.host)
                    timeout = min(timeout, 150.0) + cfg.negotiate_time
                conn = await TcpConnection.open(s.host, s.rport, resolver=self.module.resolver,
                                                local_port=s.lport or None, ssl=ssl_ctx, server_hostname=sni,
                                                timeout=timeout)
                if check is not None:
                    sslobj = conn._transport.get_extra_info("ssl_object") if conn._transport else None
                    peer = sslobj.getpeercert() if sslobj is not None else {}
                    if not cert_matches(peer or {}, check):
                        conn.abort()
                        raise NetError("tls_verify", f"certificate does not name {check}")
                self._attach_conn(s, conn)
                s.state = ST_CONNECTED
                self._apply_keepalive(s)
            elif s.service == "UDP":
                u = await UdpSocket.open(local_port=s.lport, remote=(s.host, s.rport), resolver=self.module.resolver,
                                         connect=True, broadcast=bool(self.udp_broadcast))
                self._attach_udp(s, u)
                s.state = ST_CONNECTED
            elif s.service == "UDP SERVICE":
                u = await UdpSocket.open(local_host=listen_host, local_port=s.lport, resolver=self.module.resolver,
                                         broadcast=bool(self.udp_broadcast))
                self._attach_udp(s, u)
                s.state = ST_LISTENING
            else:  # TCP LISTENER
                lst = await TcpListener.open(listen_host, s.lport, backlog=8, resolver=self.module.resolver)
                lst.on_accept = lambda conn, s=s: self._incoming(s, conn)
                s.listener = lst
                s.state = ST_LISTENING
        except NetError as e:
            log.info("open %s %s:%s failed: %s", s.service, s.host, s.rport, e)
            if s.service in ("TCP LISTENER", "UDP SERVICE") and e.kind == "addrinuse":
                return 570
            if e.kind == "addrinuse":
                return 556
            if s.service == "TCP LISTENER" and e.kind not in ("dns", "dns_timeout"):
                return 557
            return NET_CODE.get(e.kind, 550)
        return 0

    def _attach_conn(self, s: Sock, conn: TcpConnection) -> None:
        s.conn = conn
        conn.rx_high_water = RX_HIGH_WATER
        self._bind(s)

    def _attach_udp(self, s: Sock, u: UdpSocket) -> None:
        s.udp = u
        u.max_queue = 4096            # bounded like a real stack; 4096 datagrams is far beyond any host's need
        self._bind(s)

    def _bind(self, s: Sock) -> None:
        """Route the socket's events to the buffer/push machinery (outside transparent sessions)."""
        if s.conn is not None:
            s.conn.on_data = lambda c, s=s: self._on_rx(s)
            s.conn.on_close = lambda c, reason, s=s: self._on_close(s, reason)
        elif s.udp is not None:
            s.udp.on_datagram = lambda _u, s=s: self._on_rx(s)

    def _incoming(self, lst: Sock, conn: TcpConnection) -> None:
        if self.socks.get(lst.id) is not lst:
            conn.abort()
            return
        cid = self._free_id()
        if cid is None:
            self.module.urc('+QIURC: "incoming full"')
            conn.abort()
            return
        ip, port = conn.remote_addr or ("0.0.0.0", 0)
        if not self.tcp_accept:
            conn.pause_reading()
            lst.pending.append(conn)
            conn.on_close = lambda c, r, lst=lst: lst.pending.remove(c) if c in lst.pending else None
            self.module.urc(f'+QIURC: "incoming",{cid},{lst.id},"{ip}",{port}')
            return
        s = self._adopt(lst, conn, cid)
        self.module.urc(f'+QIURC: "incoming",{cid},{lst.id},"{ip}",{port}')
        self._deliver(s)

    def _adopt(self, lst: Sock, conn: TcpConnection, cid: int) -> Sock:
        ip, port = conn.remote_addr or ("0.0.0.0", 0)
        s = Sock(cid, "TCP INCOMING", ip, port, lst.lport, lst.mode, ST_CONNECTED, server_id=lst.id, via_ap=lst.via_ap)
        self.socks[cid] = s
        self._attach_conn(s, conn)
        self._apply_keepalive(s)
        return s

    @command("+QIACCEPT", Form.WRITE, Int("listener_socketID", 0, 11), Int("accept", 0, 1),
             Int("incoming_socketID", 0, 11, optional=True), family="tcpip", doc="Accept or reject a client",
             test="+QIACCEPT: (0-11),(0,1),(0-11)")
    async def qiaccept(self, ctx: Ctx, lid: int, accept: int, iid: int | None) -> None:
        self.last_err = 0
        lst = self.socks.get(lid)
        if lst is None or lst.service != "TCP LISTENER":
            raise self._err(552, "not a listener")
        if not lst.pending:
            raise self._err(569, "no pending client")
        conn = lst.pending.pop(0)
        if not accept:
            conn.abort()
            return
        cid = iid if iid is not None else self._free_id()
        if cid is None or cid in self.socks:
            lst.pending.insert(0, conn)
            raise self._err(561)
        s = self._adopt(lst, conn, cid)
        conn.resume_reading()
        ip, port = conn.remote_addr or ("0.0.0.0", 0)
        ctx.info(f'+QIACCEPT: {cid},"{ip}",{port}')
        ctx.ok()
        self._deliver(s)

    # ---- receive path ------------------------------------------------------------------------------
    def _on_rx(self, s: Sock) -> None:
        if self.socks.get(s.id) is not s or s.state == ST_OPENING:
            return
        self._deliver(s)

    def _fmt(self, data: bytes, s: Sock | None = None) -> bytes:
        return binascii.hexlify(data).upper() if self.recv_hex and not (s is not None and s.is_ssl) else data

    def _deliver(self, s: Sock) -> None:
        if s.mode == 2 or self.socks.get(s.id) is not s:
            return  # transparent: the session forwards (or keeps it for ATO)
        if not s.buffered():
            return
        if s.mode == 0:
            if not s.notified:
                s.notified = True
                self.module.urc(f'{s.urc}: "recv",{s.id}')
            return
        # direct push
        if s.conn is not None:
            while s.conn.available:
                data = s.conn.read(READ_MAX)
                s.have_read += len(data)
                self.module.urc(f'{s.urc}: "recv",{s.id},{len(data)}', self._fmt(data, s))
        elif s.udp is not None:
            while True:
                item = s.udp.recvfrom()
                if item is None:
                    break
                data, (ip, port) = item
                s.have_read += len(data)
                sender = f',"{ip}",{port}' if s.service == "UDP SERVICE" else ""
                self.module.urc(f'+QIURC: "recv",{s.id},{len(data)}{sender}', self._fmt(data))

    def _on_close(self, s: Sock, reason: str) -> None:
        s.closed_evt.set()
        if self.socks.get(s.id) is not s or reason == "local" or s.state == ST_CLOSING:
            return
        if s.state != ST_OPENING:
            s.state = ST_CLOSING
            if s.mode == 1:
                self._deliver(s)
            if not s.active:
                self.module.urc(f'{s.urc}: "closed",{s.id}')
                if self.passiveclosed and not s.buffered():
                    self.socks.pop(s.id, None)       # released at once: no AT+QICLOSE needed
                    self._drop_sock(s)

    @command("+QIRD", Form.WRITE, Int("connectID", 0, 11), Int("read_length", 0, READ_MAX, optional=True),
             family="tcpip", doc="Read buffered data", test="+QIRD: (0-11),(0-1500)")
    async def qird(self, ctx: Ctx, cid: int, n: int | None) -> None:
        s = self._use(cid, ssl=False)
        if s.service == "TCP LISTENER":
            raise self._err(569)
        if n == 0:
            total = s.total_received()
            ctx.info(f"+QIRD: {total},{s.have_read},{total - s.have_read}")
            return
        self._read_out(ctx, s, READ_MAX if n is None else n, "+QIRD")

    def _read_out(self, ctx: Ctx, s: Sock, n: int, prefix: str) -> None:
        data, hdr = b"", ""
        if s.conn is not None:
            data = s.conn.read(n)
        elif s.udp is not None and s.udp.rx:
            d, (ip, port) = s.udp.rx[0]
            if len(d) > n:
                s.udp.rx[0] = (d[n:], (ip, port))
                data = d[:n]
            else:
                s.udp.recvfrom()
                data = d
            if s.service == "UDP SERVICE":
                hdr = f',"{ip}",{port}'
        s.have_read += len(data)
        if not s.buffered():
            s.notified = False
        ctx.info(f"{prefix}: {len(data)}{hdr}")
        if data:
            ctx.raw(self._fmt(data, s))

    # ---- send ----------------------------------------------------------------------------------------
    @command("+QISEND", Form.WRITE, Int("connectID", 0, 11), Int("send_length", 0, SEND_MAX, optional=True),
             Str("remoteIP", quoted=None, optional=True), Int("remote_port", 1, 65535, optional=True),
             family="tcpip", doc="Send data", test="+QISEND: (0-11),(0-1460),<remoteIP>,(1-65535)")
    async def qisend(self, ctx: Ctx, cid: int, n: int | None, rip: str | None, rport: int | None):
        s = self._use(cid, ssl=False)
        if n == 0 and rip is None:
            sent = s.conn.total_sent if s.conn else (s.udp.total_sent if s.udp else 0)
            acked = s.conn.acked if s.conn else sent
            ctx.info(f"+QISEND: {sent},{acked},{sent - acked}")
            return None
        if s.service == "TCP LISTENER":
            raise self._err(569)
        if s.service == "UDP SERVICE":
            if rip is None or rport is None or not n:
                raise self._err(552, "UDP SERVICE needs <len>,<ip>,<port>")
            self._ipv4(rip)
        elif rip is not None or rport is not None:
            raise self._err(552, "remote address only for UDP SERVICE")
        return await self._send(ctx, s, n, (rip, rport) if rip else None)

    async def _send(self, ctx: Ctx, s: Sock, n: int | None, dest: tuple | None):
        if s.state != ST_CONNECTED and not (s.service == "UDP SERVICE" and s.state == ST_LISTENING):
            raise self._err(565)
        if s.conn is not None and s.conn.write_buffer_size > 256 * 1024:
            self.last_err = 551     # the send buffer is full: the write would block; no prompt, nothing taken
            return "SEND FAIL"
        hexmode = bool(self.send_hex) and not s.is_ssl
        timeout = self.qisend_timeout or None
        ctx.raw(b"\r\n> ")
        if n is None:
            ev = await ctx.read_data(None, terminator=b"\x1a", cancel=b"\x1b",
                                     max_len=SEND_MAX * (2 if hexmode else 1), timeout=timeout)
        else:
            ev = await ctx.read_data(n * (2 if hexmode else 1), timeout=timeout)
        if isinstance(ev, DataCancelled):
            self.last_err = 568
            return "SEND FAIL"
        if isinstance(ev, DataOverflow):
            raise self._err(552, "more than 1460 bytes")
        assert isinstance(ev, Data)
        payload = ev.payload
        if ev.reason == "timeout":
            self.last_err = 567
            return "SEND FAIL"
        if hexmode:
            try:
                payload = binascii.unhexlify(payload)
            except (binascii.Error, ValueError):
                raise self._err(552, "bad hex data") from None
        try:
            if s.conn is not None:
                s.conn.write(payload)
            elif s.udp is not None:
                before = s.udp.last_error
                s.udp.sendto(payload, dest)
                if s.udp.last_error is not before:   # the kernel refused this datagram (asyncio reports it
                    s.udp.total_sent -= len(payload)  # to error_received, not to the caller): not sent
                    raise s.udp.last_error
            else:
                raise NetError("closed")
        except NetError as e:
            if e.kind in ("closed", "reset"):
                raise self._err(565) from None
            self.last_err = 558
            return "SEND FAIL"
        return "SEND OK"

    # ---- close / state / mode ------------------------------------------------------------------------
    @command("+QICLOSE", Form.WRITE, Int("connectID", 0, 11), Int("timeout", 1, 120, optional=True, default=10),
             family="tcpip", doc="Close a socket", test="+QICLOSE: (0-11),(1-120)")
    async def qiclose(self, ctx: Ctx, cid: int, timeout: int) -> None:
        await self._close_cmd(cid, timeout, ssl=False)

    async def _close_cmd(self, cid: int, timeout: float, ssl: bool) -> None:
        """AT+QICLOSE / AT+QSSLCLOSE: closing a closed socket is harmless; the other family's is 569."""
        self.last_err = 0
        s = self.socks.get(cid)
        if s is None:
            return
        if s.is_ssl != ssl:
            raise self._err(569)
        await self._close(s, timeout)

    async def _close(self, s: Sock, timeout: float) -> None:
        self.socks.pop(s.id, None)
        if self.last_transparent == s.id:
            self.last_transparent = None
        if s.task is not None and not s.task.done():
            s.task.cancel()
        if s.conn is not None and not s.conn.closed:
            if self.close_mode:
                s.conn.close()
                self.module.spawn(s.conn.aclose(timeout))
            else:
                await s.conn.aclose(timeout)
        self._drop_sock(s)

    def _drop_sock(self, s: Sock, abort: bool = False) -> None:
        if s.conn is not None and not s.conn.closed:
            s.conn.abort() if abort else s.conn.close()
        if s.udp is not None:
            s.udp.close()
        if s.listener is not None:
            s.listener.close()
            for c in s.pending:
                c.abort()
        if s.task is not None and not s.task.done():
            s.task.cancel()

    def _state_line(self, s: Sock) -> str:
        if s.service in ("TCP LISTENER", "UDP SERVICE"):
            ip, rport = self.ip_address, 0
        else:
            ip, rport = s.host, s.rport
        lport = s.lport
        if s.conn is not None and s.conn.local_addr:
            lport = s.conn.local_addr[1]
        elif s.udp is not None:
            lport = s.udp.port
        if s.is_ssl:
            return (f'+QSSLSTATE: {s.id},"SSLClient","{ip}",{rport},{lport},{s.state},{s.id},{s.mode},'
                    f'"uart1",{s.ssl_ctx}')
        sid = s.server_id if s.server_id >= 0 else s.id
        return f'+QISTATE: {s.id},"{s.service}","{ip}",{rport},{lport},{s.state},{sid},{s.mode},"uart1"'

    @command("+QISTATE", Form.READ, family="tcpip", doc="Socket states", test="")
    @command("+QISTATE", Form.EXEC, family="tcpip")
    async def qistate(self, ctx: Ctx) -> None:
        self._states(ctx, lambda s: not s.is_ssl)

    @command("+QISTATE", Form.WRITE, Int("connectID", 0, 11), family="tcpip")
    async def qistate_one(self, ctx: Ctx, cid: int) -> None:
        self._states(ctx, lambda s: not s.is_ssl and s.id == cid)

    def _states(self, ctx: Ctx, keep: Callable[[Sock], bool]) -> None:
        """One +QISTATE/+QSSLSTATE line per socket ``keep`` selects, by ID."""
        for cid in sorted(self.socks):
            if keep(self.socks[cid]):
                ctx.info(self._state_line(self.socks[cid]))

    @command("+QISWTMD", Form.WRITE, Int("connectID", 0, 11), Int("access_mode", 0, 2), family="tcpip",
             doc="Switch access mode", test="+QISWTMD: (0-11),(0-2)")
    async def qiswtmd(self, ctx: Ctx, cid: int, mode: int) -> None:
        s = self._use(cid, ssl=None)
        if s.service in ("TCP LISTENER", "UDP SERVICE"):
            raise self._err(555, "a listener/service has no access mode to switch")
        if s.state != ST_CONNECTED:
            raise self._err(565)
        s.mode = mode
        if mode == 2:
            ctx.final("CONNECT")
            await self._transparent(s)
            return
        s.notified = False
        ctx.ok()
        self._deliver(s)

    @command("+QIGETERROR", Form.EXEC, family="tcpip", doc="Last TCP/IP error", test="")
    async def qigeterror(self, ctx: Ctx) -> None:
        ctx.info(f"+QIGETERROR: {self.last_err},{ERR_TEXT.get(self.last_err, 'Unknown error')}")

    @command("O", Form.EXEC, family="tcpip", doc="Return to transparent mode")
    @command("O", Form.WRITE, Int("n", 0, 0), family="tcpip")
    async def ato(self, ctx: Ctx, n: int = 0) -> None:
        s = self.socks.get(self.last_transparent) if self.last_transparent is not None else None
        if s is None or s.state != ST_CONNECTED:
            ctx.final("NO CARRIER")
            return
        s.mode = 2
        ctx.final("CONNECT")
        await self._transparent(s)

    # ---- transparent mode ----------------------------------------------------------------------------
    async def _transparent(self, s: Sock) -> None:
        """Run a transparent session on ``s`` until +++ or the peer closes. CONNECT was printed."""
        m = self.module
        loop = asyncio.get_running_loop()
        self.last_transparent = s.id
        guard = float(self.opt("escape_guard", 1.0))
        out = bytearray(m.engine.enter_transparent(guard=guard, now=time.monotonic()))
        pkt = self.transpktsize
        wait = self.transwaittm * 0.1
        last_in = loop.time()
        conn, udp = s.conn, s.udp
        rx_evt = asyncio.Event()

        def on_rx(*_: Any) -> None:
            rx_evt.set()

        if conn is not None:
            conn.on_data = on_rx
            conn.on_close = lambda c, reason, s=s: (rx_evt.set(), self._on_close(s, reason))
        elif udp is not None:
            udp.on_datagram = on_rx
        rx_evt.set()
        s.active = True
        s.wake = rx_evt.set
        pull: asyncio.Task | None = None
        rxw: asyncio.Task | None = None
        closed = False
        try:
            while True:
                # network -> UART
                if conn is not None and conn.available:
                    data = conn.read()
                    s.have_read += len(data)
                    m.write(data)
                    if m.pacer.pending > 256 * 1024:
                        conn.pause_reading()
                        await m.drain_output()
                        conn.resume_reading()
                        continue
                elif udp is not None:
                    while udp.rx:
                        data, _ = udp.recvfrom()
                        s.have_read += len(data)
                        m.write(data)
                if (conn is not None and conn.closed and not conn.available) or (udp is not None and udp.closed):
                    closed = True
                # UART -> network
                while len(out) >= pkt:
                    await self._tsend(s, bytes(out[:pkt]))
                    del out[:pkt]
                if out and (wait == 0 or loop.time() - last_in >= wait or closed):
                    await self._tsend(s, bytes(out))
                    out.clear()
                if closed:
                    break
                if pull is None:
                    pull = asyncio.ensure_future(m._pull())
                if rxw is None:
                    rx_evt.clear()
                    if (conn is not None and (conn.available or conn.closed)) or (udp is not None and (udp.rx or udp.closed)):
                        rx_evt.set()
                    rxw = asyncio.ensure_future(rx_evt.wait())
                timeout = None
                if out:
                    timeout = max(0.0, last_in + wait - loop.time())
                done, _ = await asyncio.wait({pull, rxw}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if rxw in done:
                    rxw = None
                if pull in done:
                    ev = pull.result()
                    pull = None
                    if isinstance(ev, TransparentData):
                        out += ev.payload
                        last_in = loop.time()
                    elif isinstance(ev, EscapeSequence):
                        if out:
                            await self._tsend(s, bytes(out))
                            out.clear()
                        m.write(b"\r\nOK\r\n")
                        return
        except NetError:
            closed = True
        finally:
            for t in (pull, rxw):
                if t is not None and not t.done():
                    t.cancel()
            m.engine.leave_transparent()
            s.active = False
            s.wake = None
            self._bind(s)
        if closed:
            s.state = ST_CLOSING
            self.last_transparent = None
            m.write(b"\r\nNO CARRIER\r\n")

    async def _tsend(self, s: Sock, data: bytes) -> None:
        if s.conn is not None:
            s.conn.write(data)
            await s.conn.drain()
        elif s.udp is not None:
            s.udp.sendto(data)

    # ==== SSL ===================================================================================
    def _cfg(self, ctx_id: int) -> SslConfig:
        return self.ssl_ctx[ctx_id]

    _SSLCFG_TEST = "\r\n".join([
        '+QSSLCFG: "sslversion",(0-5),(0-4)', '+QSSLCFG: "seclevel",(0-5),(0-2)',
        '+QSSLCFG: "ciphersuite",(0-5),(0X0035,0X002F,0X0005,0X000A,0X003D,0XC003,0XC004,0XC005,0XC008,0XC009,'
        '0XC00A,0XC011,0XC012,0XC013,0XC014,0XC00D,0XC00E,0XC00F,0XC023,0XC024,0XC025,0XC026,0XC027,0XC028,'
        '0XC029,0XC02A,0XC02F,0XC030,0XFFFF)',
        '+QSSLCFG: "negotiatetime",(0-5),(10-300)', '+QSSLCFG: "sni",(0-5),(0,1)',
        '+QSSLCFG: "cacert",(0-5),<cacertpath>', '+QSSLCFG: "clientcert",(0-5),<client_cert_path>',
        '+QSSLCFG: "clientkey",(0-5),<client_key_path>,<key_pwd>', '+QSSLCFG: "ignorelocaltime",(0-5),(0,1)',
        '+QSSLCFG: "session_cache",(0-5),(0,1)'])

    def _cfg_int(self, ctx: Ctx, key: str, attr: str, cid: int, v: int | None, fmt: str = "{}") -> None:
        c = self._cfg(cid)
        if v is None:
            ctx.info(f'+QSSLCFG: "{key}",{cid},{fmt.format(getattr(c, attr))}')
        else:
            setattr(c, attr, v)

    sslcfg_ver = _sslcfg("sslversion", Int("SSL_version", 0, 4, optional=True), "version",
                         doc="SSL context configuration", test=_SSLCFG_TEST)
    sslcfg_sec = _sslcfg("seclevel", Int("seclevel", 0, 2, optional=True))
    sslcfg_cipher = _sslcfg("ciphersuite", Int("cipher_suites", choices=tuple(CIPHERS) + (0xFFFF,), optional=True,
                                               allow_quoted=True), "cipher", "0X{:04X}")
    sslcfg_neg = _sslcfg("negotiatetime", Int("negotiate_time", 10, 300, optional=True), "negotiate_time")
    sslcfg_sni = _sslcfg("sni", Int("SNI", 0, 1, optional=True))
    sslcfg_ilt = _sslcfg("ignorelocaltime", Int("ignore_ltime", 0, 1, optional=True), "ignore_ltime")
    sslcfg_cache = _sslcfg("session_cache", Int("session_cache_enable", 0, 1, optional=True))

    def _cfg_path(self, ctx: Ctx, key: str, attr: str, cid: int, path: str | None) -> None:
        c = self._cfg(cid)
        if path is None:
            ctx.info(f'+QSSLCFG: "{key}",{cid},"{getattr(c, attr)}"')
            return
        path = _strip_ufs(path)
        if path:
            try:
                self.fs.path(path)
            except FsError:
                raise CmdError("param", message="bad file name") from None
        setattr(c, attr, path)

    sslcfg_ca = _sslcfg("cacert", Str("cacertpath", quoted=None, optional=True, max_len=84))
    sslcfg_cert = _sslcfg("clientcert", Str("client_cert_path", quoted=None, optional=True, max_len=84))

    @command("+QSSLCFG", Form.WRITE, Int("SSL_ctxID", 0, 5), Str("client_key_path", quoted=None, optional=True, max_len=84),
             Str("key_pwd", quoted=None, optional=True, max_len=255), sub="clientkey", family="ssl")
    async def sslcfg_key(self, ctx: Ctx, cid: int, path: str | None, pwd: str | None) -> None:
        self._cfg_path(ctx, "clientkey", "clientkey", cid, path)
        if path is not None:
            self._cfg(cid).key_pwd = pwd or ""

    @command("+QSSLOPEN", Form.WRITE, Int("SSL_ctxID", 0, 5), Int("connectID", 0, 11),
             Str("server_address", quoted=None, min_len=1, max_len=150), Int("server_port", 1, 65535),
             Int("access_mode", 0, 2, optional=True, default=0), family="ssl", doc="Open an SSL client",
             test="+QSSLOPEN: (0-5),(0-11),<server_address>,<server_port>,(0-2)")
    async def qsslopen(self, ctx: Ctx, ctx_id: int, cid: int, host: str, port: int, mode: int):
        self.last_err = 0
        self._check_open(cid)
        await self._start_open(ctx, Sock(cid, "SSL", host, port, 0, mode, ssl_ctx=ctx_id))

    @command("+QSSLSEND", Form.WRITE, Int("connectID", 0, 11), Int("send_length", 1, SEND_MAX, optional=True),
             family="ssl", doc="Send over SSL", test="+QSSLSEND: (0-11),(1-1460)")
    async def qsslsend(self, ctx: Ctx, cid: int, n: int | None):
        return await self._send(ctx, self._use(cid, ssl=True), n, None)

    @command("+QSSLRECV", Form.WRITE, Int("connectID", 0, 11), Int("read_length", 1, READ_MAX),
             family="ssl", doc="Read SSL data", test="+QSSLRECV: (0-11),(1-1500)")
    async def qsslrecv(self, ctx: Ctx, cid: int, n: int) -> None:
        self._read_out(ctx, self._use(cid, ssl=True), n, "+QSSLRECV")

    @command("+QSSLCLOSE", Form.WRITE, Int("connectID", 0, 11), Int("close_timeout", 0, 65535, optional=True, default=10),
             family="ssl", doc="Close an SSL connection", test="+QSSLCLOSE: (0-11),(0-65535)")
    async def qsslclose(self, ctx: Ctx, cid: int, timeout: int) -> None:
        await self._close_cmd(cid, max(0.1, timeout), ssl=True)

    @command("+QSSLSTATE", Form.READ, family="ssl", doc="SSL connection states", test="")
    @command("+QSSLSTATE", Form.EXEC, family="ssl")
    async def qsslstate(self, ctx: Ctx) -> None:
        self._states(ctx, lambda s: s.is_ssl)

    @command("+QSSLSTATE", Form.WRITE, Int("query_type", 0, 1), Int("connectID", 0, 11), family="ssl")
    async def qsslstate_q(self, ctx: Ctx, qt: int, ident: int) -> None:
        self._states(ctx, lambda s: s.is_ssl and (s.ssl_ctx if qt == 0 else s.id) == ident)

    # ==== network utilities =======================================================================
    @command("+QPING", Form.WRITE, Str("host", quoted=None, min_len=1, max_len=150), Int("timeout", 1, 255, optional=True, default=4),
             Int("pingnum", 1, 10, optional=True, default=4), family="net", doc="ICMP echo",
             test="+QPING: <host>,(1-255),(1-10)")
    async def qping(self, ctx: Ctx, host: str, timeout: int, count: int) -> None:
        self._need_wifi()
        if self._ping_task is not None and not self._ping_task.done():
            raise self._err(566, "a ping is running")
        ctx.ok()
        self._ping_task = self.module.spawn(self._ping(host, timeout, count))

    async def _ping(self, host: str, timeout: int, count: int) -> None:
        from atemu.net.ping import ping
        try:
            ip = await self.module.resolver.resolve_one(host, timeout=10)
        except NetError as e:
            self.module.urc(f"+QPING: {NET_CODE.get(e.kind, 563) if e.kind.startswith('dns') else 563}")
            return

        def each(r) -> None:
            if r.ok:
                self.module.urc(f'+QPING: 0,"{ip}",{r.bytes},{max(1, round(r.rtt_ms or 0))},{r.ttl}')
            else:
                self.module.urc("+QPING: 567")
        try:
            results = await ping(ip, count=count, timeout=float(timeout), interval=1.0, on_result=each)
        except NetError as e:
            log.info("ping %s: %s", ip, e)
            self.module.urc(f"+QPING: {NET_CODE.get(e.kind, 550)}")
            return
        rtts = [round(r.rtt_ms or 0) for r in results if r.ok]
        if not rtts:
            self.module.urc(f"+QPING: 567,{len(results)},0,{len(results)},0,0,0")
            return
        self.module.urc(f"+QPING: 0,{len(results)},{len(rtts)},{len(results) - len(rtts)},"
                        f"{min(rtts)},{max(rtts)},{round(sum(rtts) / len(rtts))}")

    @command("+QIDNSGIP", Form.WRITE, Str("hostname", quoted=None, min_len=1, max_len=150), family="net",
             doc="Resolve a host name", test="+QIDNSGIP: <hostname>")
    async def qidnsgip(self, ctx: Ctx, host: str) -> None:
        self._need_wifi()
        if self._dns_task is not None and not self._dns_task.done():
            raise self._err(562, "a lookup is running")
        ctx.ok()
        self._dns_task = self.module.spawn(self._dnsgip(host))

    async def _dnsgip(self, host: str) -> None:
        try:
            ips = await self.module.resolver.resolve(host, timeout=60)
        except NetError as e:
            code = 562 if e.kind == "dns_timeout" else 563
            self.module.urc(f'+QIURC: "dnsgip",{code}')
            return
        self.module.urc(f'+QIURC: "dnsgip",0,{len(ips)},600')
        for ip in ips:
            self.module.urc(f'+QIURC: "dnsgip","{ip}"')

    @command("+QNTP", Form.WRITE, Str("server", quoted=None, min_len=1, max_len=50), Int("port", 1, 65535, optional=True, default=123),
             family="net", doc="Query an SNTP server", test='+QNTP: "<server>",(1-65535)')
    async def qntp(self, ctx: Ctx, server: str, port: int) -> None:
        self._need_wifi()
        ctx.ok()
        self.module.spawn(self._ntp(server, port))

    @command("+QNTP", Form.EXEC, family="net")
    async def qntp_exec(self, ctx: Ctx) -> None:
        await self.qntp(ctx, str(self.opt("ntp_server", "pool.ntp.org")), 123)

    async def _ntp(self, server: str, port: int) -> None:
        from atemu.net.sntp import sntp_query
        try:
            r = await sntp_query(server, port, timeout=10.0, resolver=self.module.resolver)
        except NetError as e:
            code = {"dns": 563, "dns_timeout": 562, "timeout": 567}.get(e.kind, 550)
            self.module.urc(f"+QNTP: {code}")
            return
        t = time.gmtime(r.unix_time)
        self.module.urc(f'+QNTP: 0,"{time.strftime("%y/%m/%d,%H:%M:%S", t)}+00"')

    # ==== files (UFS) ===============================================================================
    def _fname(self, name: str) -> str:
        name = _strip_ufs(name)
        try:
            self.fs.path(name)
        except FsError:
            raise CmdError("failed", message="bad file name") from None
        return name

    @command("+QFOPEN", Form.WRITE, Str("filename", quoted=None, min_len=1, max_len=84), Int("mode", 0, 2, optional=True, default=0),
             family="file", doc="Open a file", test="+QFOPEN: <filename>,(0-2)")
    async def qfopen(self, ctx: Ctx, name: str, mode: int) -> None:
        name = self._fname(name)
        exists = self.fs.exists(name)
        if any(f[0] == name for f in self.files.values()):
            raise CmdError("failed", message="file already open")
        try:
            if mode == 2 and not exists:
                raise CmdError("failed", message="no such file")
            if mode == 1 or not exists:
                self.fs.write(name, b"")
        except FsError as e:
            raise CmdError("failed", message=str(e)) from None
        h = 1
        while h in self.files:
            h += 1
        self.files[h] = [name, mode, 0]
        ctx.info(f"+QFOPEN: {h}")

    @command("+QFOPEN", Form.READ, family="file")
    async def qfopen_read(self, ctx: Ctx) -> None:
        for h in sorted(self.files):
            name, mode, _ = self.files[h]
            ctx.info(f'+QFOPEN: "{name}",{h},{mode}')

    def _handle(self, h: int) -> list:
        f = self.files.get(h)
        if f is None:
            raise CmdError("failed", message="bad file handle")
        return f

    @command("+QFREAD", Form.WRITE, Int("filehandle", 0, 0x7FFFFFFF), Int("length", 1, 0x7FFFFFFF, optional=True),
             family="file", doc="Read a file", test="+QFREAD: <filehandle>,<length>")
    async def qfread(self, ctx: Ctx, h: int, n: int | None) -> None:
        f = self._handle(h)
        try:
            data = self.fs.read(f[0])
        except FsError as e:
            raise CmdError("failed", message=str(e)) from None
        chunk = data[f[2]: f[2] + n] if n is not None else data[f[2]:]
        f[2] += len(chunk)
        ctx.info(f"CONNECT {len(chunk)}")
        ctx.raw(chunk)

    @command("+QFWRITE", Form.WRITE, Int("filehandle", 0, 0x7FFFFFFF), Int("length", 1, 65535, optional=True, default=10240),
             Int("timeout", 1, 179, optional=True, default=5), family="file", doc="Write a file",
             test="+QFWRITE: <filehandle>,<length>,<timeout>")
    async def qfwrite(self, ctx: Ctx, h: int, n: int, timeout: int) -> None:
        f = self._handle(h)
        if f[1] == 2:
            raise CmdError("failed", message="read-only")
        ctx.info("CONNECT")
        ev = await ctx.read_data(n, timeout=float(timeout))
        data = ev.payload
        try:
            old = self.fs.read(f[0])
            new = old[: f[2]] + data + old[f[2] + len(data):]
            self.fs.write(f[0], new)
        except FsError as e:
            raise CmdError("failed", message=str(e)) from None
        f[2] += len(data)
        ctx.raw(f"\r\n+QFWRITE: {len(data)},{len(new)}\r\n")

    @command("+QFCLOSE", Form.WRITE, Int("filehandle", 0, 0x7FFFFFFF), family="file", doc="Close a file",
             test="+QFCLOSE: <filehandle>")
    async def qfclose(self, ctx: Ctx, h: int) -> None:
        self._handle(h)
        del self.files[h]

    @command("+QFLST", Form.EXEC, family="file", doc="List files", test="")
    async def qflst(self, ctx: Ctx) -> None:
        for name, size in self.fs.list():
            ctx.info(f'+QFLST: "{name}",{size}')

    @command("+QFLST", Form.WRITE, Str("name_pattern", quoted=None, min_len=1, max_len=84), family="file")
    async def qflst_pat(self, ctx: Ctx, pat: str) -> None:
        pat = _strip_ufs(pat) or "*"
        for name, size in self.fs.list():
            if fnmatch.fnmatchcase(name, pat):
                ctx.info(f'+QFLST: "{name}",{size}')

    @command("+QFDEL", Form.WRITE, Str("file_name", quoted=None, min_len=1, max_len=84), family="file",
             doc="Delete a file (or * / UFS: for all)", test="+QFDEL: <file_name>")
    async def qfdel(self, ctx: Ctx, name: str) -> None:
        if name.upper() in ("*", "UFS:", "UFS:*"):
            open_names = {f[0] for f in self.files.values()}
            for n, _ in self.fs.list():
                if n not in open_names:
                    self.fs.delete(n)
            return
        name = self._fname(name)
        if any(f[0] == name for f in self.files.values()):
            raise CmdError("failed", message="file is open")
        try:
            self.fs.delete(name)
        except FsError as e:
            raise CmdError("failed", message=str(e)) from None

    # ---- forms the manual does not document answer ERROR ----------------------------------------
    _NO_TEST_FORM = ("+QRST", "+QVERSION", "+QECHO", "+QGETIP", "+QSETBAND", "+QWLANOTA", "+QWLMAC", "+QSTAST",
                     "+QSTADHCP", "+QSTASTATIC", "+QSTASTOP", "+QSOFTAP", "+QAPSTATE", "+QAPSTATIC", "+QSOFTAPSTOP",
                     "+QSTAAPINFO", "+QSTAAPINFODEF", "+QGETWIFISTATE", "+QWSCAN", "+QWEBCFG", "+QSTAAPINFORMV",
                     "+QSCLK", "+QAIRKISS", "O")

    async def _undocumented_test_form(self, ctx: Ctx) -> None:
        raise CmdError("unknown", message="the manual documents no test form for this command")

    for _n in _NO_TEST_FORM:
        _undocumented_test_form = command(_n, Form.TEST)(_undocumented_test_form)
    del _n
