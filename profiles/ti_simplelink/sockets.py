"""Socket family: BSD-style sockets over real host TCP/UDP/TLS (atemu.net.sockets + tls)."""
from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.net.sockets import TcpConnection, TcpListener, UdpSocket
from atemu.net.tls import client_context, server_context
from atemu.profile import CmdError, command

from .common import (E_AGAIN, E_ALREADY, E_BADF, E_DESTADDRREQ, E_INVAL, E_ISCONN, E_NETUNREACH, E_NFILE,
                     E_NOPROTOOPT, E_NOTCONN, E_OPNOTSUPP, E_PROTONOSUPPORT, E_PROTOTYPE,
                     FAMILY, FORMAT, MAX_DATA, OS, RECV, S, count_error, decode_data, encode_data, fail,
                     flags_of, free_index, lookup, net_fail, nwp, param_error, parse_ip, parse_num, pick)

MAX_SOCKETS = 16

SECMETHODS = ("SSLV3", "TLSV1", "TLSV1_1", "TLSV1_2", "SSLV3_TLSV1_2")

#: SimpleLink cipher keywords (bit i = 1 << i) and their OpenSSL names
CIPHERS = [
    ("SSL_RSA_WITH_RC4_128_SHA", "RC4-SHA"),
    ("SSL_RSA_WITH_RC4_128_MD5", "RC4-MD5"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
    ("TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA"),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", "ECDHE-RSA-RC4-SHA"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA256", "AES256-SHA256"),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"),
    ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DHE-RSA-AES128-GCM-SHA256"),
    ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
    ("TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "DHE-RSA-CHACHA20-POLY1305"),
]
#: AT+MqttCreate prints entries 3-5 with AES_256 (inventory T30): same bits, other suites
MQTT_CIPHERS = list(CIPHERS)
MQTT_CIPHERS[2] = ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA")
MQTT_CIPHERS[3] = ("TLS_DHE_RSA_WITH_AES_256_CBC_SHA", "DHE-RSA-AES256-SHA")
MQTT_CIPHERS[4] = ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA")

ALPN = {"h1": ["http/1.1"], "h2": ["h2"], "h2c": ["h2c"], "h2_14": ["h2-14"], "h2_16": ["h2-16"],
        "full_list": ["http/1.1", "h2", "h2c", "h2-14", "h2-16"]}

SOCKET_OPTS = ("KEEPALIVE", "KEEPALIVETIME", "RX_NO_IP_BOUNDARY", "RCVTIMEO", "RCVBUF", "NONBLOCKING",
               "SECMETHOD", "SECURE_MASK", "SECURE_FILES_CA_FILE_NAME", "SECURE_FILES_PRIVATE_KEY_FILE_NAME",
               "SECURE_FILES_CERTIFICATE_FILE_NAME", "SECURE_FILES_DH_KEY_FILE_NAME", "CHANGE_CHANNEL",
               "SECURE_ALPN", "LINGER", "SECURE_EXT_CLIENT_CHLNG_RESP", "SECURE_DOMAIN_NAME_VERIFICATION")
IP_OPTS = ("MULTICAST_TTL", "ADD_MEMBERSHIP", "DROP_MEMBERSHIP", "RAW_RX_NO_HEADER", "HDRINCL", "RAW_IPV6_HDRINCL")
PHY_OPTS = ("PHY_RATE", "PHY_TX_POWER", "PHY_NUM_FRAMES_TO_TX", "PHY_PREAMBLE", "PHY_TX_INHIBIT_THRESHOLD",
            "PHY_TX_TIMEOUT", "PHY_ALLOW_ACKS")


def tls_versions(method: str | None) -> tuple[Any, Any]:
    """(min, max) TLS versions for a SECMETHOD; the CC32xx speaks at most TLS 1.2."""
    V = ssl.TLSVersion
    if method is None:
        return None, V.TLSv1_2
    m = method.lower()
    if m == "sslv3":
        raise fail(E_PROTONOSUPPORT, "SSLv3 is not available on this host's TLS library")
    return {"tlsv1": (V.TLSv1, V.TLSv1), "tlsv1_1": (V.TLSv1_1, V.TLSv1_1), "tlsv1_2": (V.TLSv1_2, V.TLSv1_2),
            "sslv3_tlsv1_2": (V.TLSv1, V.TLSv1_2)}[m]


def cipher_string(names: list[str] | None, table=CIPHERS) -> str | None:
    if not names:
        return None
    lut = {k.lower(): v for k, v in table}
    return ":".join(lut[n] for n in names)


@dataclass
class Sock:
    sd: int
    family: int
    kind: str                 # "stream" | "dgram"
    sec: bool
    bound: tuple[str, int] | None = None
    listener: TcpListener | None = None
    conn: TcpConnection | None = None
    udp: UdpSocket | None = None
    remote: tuple[str, int] | None = None
    opts: dict[str, Any] = field(default_factory=dict)
    task: asyncio.Task | None = None
    closing: bool = False
    rest: bytes = b""          # unread end of a datagram (RX_NO_IP_BOUNDARY)

    @property
    def nonblocking(self) -> bool:
        return bool(self.opts.get("nonblocking", 0))

    @property
    def rcvtimeo(self) -> float | None:
        t = self.opts.get("rcvtimeo")
        if not t or (t[0] == 0 and t[1] == 0):
            return None
        return t[0] + t[1] / 1e6

    def readable(self) -> bool:
        if self.listener is not None:
            return not self.listener._queue.empty()
        if self.conn is not None:
            return bool(self.conn.available) or self.conn.remote_eof or self.conn.closed
        if self.udp is not None:
            return bool(self.udp.rx) or bool(self.rest)
        return False


class SocketMixin:
    # ---- helpers ---------------------------------------------------------------------------
    def sock(self, sd: int) -> Sock:
        return lookup(self.sockets, sd, E_BADF, "open socket")

    def sock_ip(self, sd: int, address: str, fam: int) -> tuple[Sock, str]:
        """The open socket ``sd`` and the address of a Bind/Connect/SendTo/RecvFrom (checked in that order)."""
        return self.sock(sd), parse_ip(address, fam)

    def need_ip(self) -> None:
        if not self.ip_up:
            raise fail(E_NETUNREACH, "no IP connectivity (connect to an access point first)")

    def start_blocking(self, s: Sock | None, coro, name: str) -> None:
        """The OK-first commands: OK now, the result line (and OK) or an ERROR later."""
        if s is not None and s.task is not None and not s.task.done():
            coro.close()
            raise fail(E_ALREADY, f"socket {s.sd} already has an operation in progress")

        async def run() -> None:
            try:
                out = await coro
            except asyncio.CancelledError:
                if s is not None and s.closing:
                    self.module.urc(self.format_error(fail(E_BADF, "socket closed")))
                raise
            except CmdError as e:
                self.module.urc(self.format_error(e))
                return
            except NetError as e:
                self.module.urc(self.format_error(net_fail(e)))
                return
            for line in out or ():
                self.module.urc(line)
            self.module.urc("OK")

        task = self.module.spawn(run(), name=name)
        if s is not None:
            s.task = task

    async def close_sock(self, s: Sock, *, abort: bool = False) -> None:
        s.closing = True
        if s.task is not None and not s.task.done():
            s.task.cancel()
        linger = s.opts.get("linger")
        if s.conn is not None:
            if abort or (linger and linger[0] and linger[1] == 0):
                s.conn.abort()
            else:
                s.conn.close()
        if s.listener is not None:
            s.listener.close()
        if s.udp is not None:
            s.udp.close()
        self.sockets.pop(s.sd, None)

    async def close_all_sockets(self) -> None:
        for s in list(self.sockets.values()):
            await self.close_sock(s, abort=True)

    async def flush_sockets(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        for s in list(self.sockets.values()):
            if s.conn is not None and not s.conn.closed:
                try:
                    await asyncio.wait_for(s.conn.drain(), max(0.01, end - loop.time()))
                except (asyncio.TimeoutError, NetError, Exception):
                    pass

    def new_sd(self) -> int:
        return free_index(self.sockets, MAX_SOCKETS, E_NFILE, "socket")

    def tls_client(self, opts: dict, *, server_hostname_default: str | None = None) -> tuple[ssl.SSLContext, str | None]:
        ca_name = opts.get("secure_files_ca_file_name")
        cert_name = opts.get("secure_files_certificate_file_name")
        key_name = opts.get("secure_files_private_key_file_name")
        domain = opts.get("secure_domain_name_verification")
        lo, hi = tls_versions(opts.get("secmethod"))
        ciphers = cipher_string(opts.get("secure_mask"))
        alpn = None
        if opts.get("secure_alpn"):
            alpn = []
            for a in opts["secure_alpn"]:
                for n in ALPN[a]:
                    if n not in alpn:
                        alpn.append(n)
        ca = self.fs_read_material(ca_name) if ca_name else None
        cert = self.fs_read_material(cert_name) if cert_name else None
        key = self.fs_read_material(key_name) if key_name else None
        try:
            ctx = client_context(ca=ca, cert=cert, key=key, verify=ca is not None, check_hostname=bool(domain),
                                 min_version=lo, max_version=hi, ciphers=ciphers, alpn=alpn)
        except NetError as e:
            raise net_fail(e) from None
        return ctx, domain

    # ---- commands --------------------------------------------------------------------------
    @command("+Socket", Form.WRITE, Keyword("domain", values={"INET": 4, "INET6": 6, "RF": "rf"}),
             Keyword("type", values={"STREAM": "stream", "DGRAM": "dgram", "RAW": "raw"}),
             Keyword("protocol", values={"TCP": "tcp", "UDP": "udp", "RAW": "raw", "SEC": "sec"}),
             family="socket", doc="Create a socket: +socket:<sd>")
    @nwp
    async def at_socket(self, ctx: Ctx, domain, typ, proto) -> None:
        if domain == "rf" or typ == "raw" or proto == "raw":
            raise fail(E_PROTONOSUPPORT, "RAW/RF (transceiver) sockets are not supported by the emulator")
        if (typ == "stream" and proto not in ("tcp", "sec")) or (typ == "dgram" and proto != "udp"):
            raise fail(E_PROTOTYPE, f"{proto} does not fit {typ}")
        sd = self.new_sd()
        self.sockets[sd] = Sock(sd, domain, typ, proto == "sec", opts={"keepalive": 1})
        ctx.info(f"+socket:{sd}")

    @command("+Close", Form.WRITE, Int("sd", 0, 255), family="socket", doc="Close a socket: +close:<sd>")
    @nwp
    async def at_close(self, ctx: Ctx, sd: int) -> None:
        await self.close_sock(self.sock(sd))
        ctx.info(f"+close:{sd}")

    @command("+Bind", Form.WRITE, Int("sd", 0, 255), FAMILY, Int("port", 0, 65535), S("address"),
             family="socket", doc="Bind a socket to a local port and address")
    @nwp
    async def at_bind(self, ctx: Ctx, sd: int, fam: int, port: int, address: str) -> None:
        s, ip = self.sock_ip(sd, address, fam)
        if s.bound is not None or s.conn is not None or s.listener is not None:
            raise fail(E_INVAL, "socket is already bound")
        if s.kind == "dgram":
            try:
                s.udp = await UdpSocket.open(local_host=ip, local_port=port, resolver=self.module.resolver)
            except NetError as e:
                raise net_fail(e) from None
            self.watch_udp(s)
            s.bound = s.udp.local_addr
        else:
            s.bound = (ip, port)

    @command("+Listen", Form.WRITE, Int("sd", 0, 255), Int("backlog", 0, 16), family="socket",
             doc="Listen for connections on a bound stream socket")
    @nwp
    async def at_listen(self, ctx: Ctx, sd: int, backlog: int) -> None:
        s = self.sock(sd)
        if s.kind != "stream":
            raise fail(E_OPNOTSUPP, "listen needs a stream socket")
        if s.listener is not None or s.conn is not None:
            raise fail(E_ISCONN, "socket is already listening or connected")
        host, port = s.bound or ("0.0.0.0", 0)
        sslctx = None
        if s.sec:
            cert_name = s.opts.get("secure_files_certificate_file_name")
            key_name = s.opts.get("secure_files_private_key_file_name")
            if not cert_name or not key_name:
                raise fail(E_INVAL, "a secure server socket needs certificate and key files")
            ca_name = s.opts.get("secure_files_ca_file_name")
            lo, hi = tls_versions(s.opts.get("secmethod"))
            try:
                sslctx = server_context(self.fs_read_material(cert_name), self.fs_read_material(key_name),
                                        self.fs_read_material(ca_name) if ca_name else None,
                                        min_version=lo, max_version=hi, ciphers=cipher_string(s.opts.get("secure_mask")))
            except NetError as e:
                raise net_fail(e) from None
        try:
            s.listener = await TcpListener.open(host if host not in ("0.0.0.0", "::") else None, port,
                                                backlog=max(1, backlog), ssl=sslctx,
                                                resolver=self.module.resolver)
        except NetError as e:
            raise net_fail(e) from None
        s.bound = (host, s.listener.port)

    @command("+Accept", Form.WRITE, Int("sd", 0, 255), FAMILY, family="socket",
             doc="Accept a connection: OK, then +accept:<new sd>,<family>,<port>,<address> and OK")
    @nwp
    async def at_accept(self, ctx: Ctx, sd: int, fam: int) -> None:
        s = self.sock(sd)
        if s.listener is None:
            raise fail(E_INVAL, "socket is not listening")

        async def go():
            lst = s.listener
            if s.nonblocking and lst._queue.empty():
                raise fail(E_AGAIN, "no pending connection")
            try:
                conn = await lst.accept(timeout=s.rcvtimeo)
            except NetError:
                raise fail(E_AGAIN, "accept timed out") from None
            try:
                nsd = self.new_sd()
            except CmdError:
                conn.abort()
                raise
            ns = Sock(nsd, s.family, "stream", s.sec, conn=conn, opts={"keepalive": 1})
            self.sockets[nsd] = ns
            self.watch_conn(ns)
            ip, port = conn.remote_addr or ("0.0.0.0", 0)
            fam_txt = "inet6" if ":" in ip else "inet"
            return [f"+accept:{nsd},{fam_txt},{port},{ip}"]

        self.start_blocking(s, go(), f"accept-{sd}")

    @command("+Connect", Form.WRITE, Int("sd", 0, 255), FAMILY, Int("port", 1, 65535), S("address"),
             family="socket", doc="Connect: OK, then +connect:<port>,<address> and OK")
    @nwp
    async def at_connect(self, ctx: Ctx, sd: int, fam: int, port: int, address: str) -> None:
        s, ip = self.sock_ip(sd, address, fam)
        self.need_ip()
        if s.listener is not None or (s.conn is not None and not s.conn.closed):
            raise fail(E_ISCONN, "socket is already connected")
        if s.kind == "dgram":
            async def go_udp():
                if s.udp is None:
                    s.udp = await UdpSocket.open(local_host="::" if fam == 6 else "0.0.0.0", remote=(ip, port),
                                                 connect=True, resolver=self.module.resolver)
                    self.watch_udp(s)
                else:
                    s.udp.remote = (ip, port)
                    try:   # a real connected UDP socket: the kernel filters peers and reports ICMP errors
                        s.udp._sock.connect(s.udp._dest((ip, port)))
                        s.udp._connected = True
                    except OSError as e:
                        raise fail(E_INVAL, str(e)) from None
                s.remote = (ip, port)
                return [f"+connect:{port},{ip}"]
            self.start_blocking(s, go_udp(), f"connect-{sd}")
            return
        sslctx = domain = None
        if s.sec:
            sslctx, domain = self.tls_client(s.opts)

        async def go():
            local_host, local_port = (s.bound if s.bound else (None, None))
            try:
                conn = await TcpConnection.open(ip, port, ssl=sslctx, server_hostname=domain, timeout=10.0,
                                                resolver=self.module.resolver, local_port=local_port or None,
                                                local_host=local_host if local_host not in ("0.0.0.0", "::") else None)
            except NetError as e:
                if s.sec and e.kind == "tls_verify":
                    err = net_fail(e)
                    self.module.urc(f"+eventsock:async_event,{sd},wrong_root_ca,{err.code}")
                    raise err from None
                raise
            if s.closing:
                conn.abort()
                raise fail(E_BADF, "socket closed")
            s.conn = conn
            self.watch_conn(s)
            if s.opts.get("keepalive"):
                try:
                    conn.set_keepalive(True, idle=s.opts.get("keepalivetime"))
                except NetError:
                    pass
            if s.opts.get("rcvbuf"):
                conn.rx_high_water = int(s.opts["rcvbuf"])
            if s.sec:
                self.module.urc(f"+eventsock:async_event,{sd},connected_secured,0")
            return [f"+connect:{port},{ip}"]

        self.start_blocking(s, go(), f"connect-{sd}")

    def watch_conn(self, s: Sock) -> None:
        pass

    def watch_udp(self, s: Sock) -> None:
        udp = s.udp

        def on_error(_sock, err: NetError) -> None:
            self.status_flags["tx_failed"] = True
            code = net_fail(err).code
            self.module.urc(f"+eventsock:tx_failed,{s.sd},{code}")

        udp.on_error = on_error

    @command("+Select", Form.WRITE, Int("nfds", 1, 256), S("readsds"), Int("timeout_sec", 0, 0x7FFFFFFF),
             Int("timeout_usec", 0, 999999), family="socket",
             doc="Wait until sockets are readable: OK, then +select:<ready sds separated by |> and OK")
    @nwp
    async def at_select(self, ctx: Ctx, nfds: int, readsds: str, tsec: int, tusec: int) -> None:
        t = readsds.strip()
        if t.startswith("[") and t.endswith("]"):
            t = t[1:-1]
        sds = []
        for part in t.replace("|", " ").replace(";", " ").split():
            v = parse_num(part, 0, 255, "socket")
            if v >= nfds:
                raise param_error("socket above nfds")
            if v not in sds:
                sds.append(v)
        if not sds:
            raise param_error("no socket to select")
        for sd in sds:
            self.sock(sd)
        timeout = tsec + tusec / 1e6

        async def go():
            loop = asyncio.get_running_loop()
            end = loop.time() + timeout
            while True:
                ready = [sd for sd in sds if sd in self.sockets and self.sockets[sd].readable()]
                missing = [sd for sd in sds if sd not in self.sockets]
                if missing:
                    raise fail(E_BADF, f"socket {missing[0]} was closed")
                if ready or loop.time() >= end:
                    return ["+select:" + "|".join(str(x) for x in ready)]
                await asyncio.sleep(min(0.02, max(0.0, end - loop.time())))

        self.start_blocking(None, go(), "select")

    @command("+SetSockOpt", Form.WRITE, Int("sd", 0, 255), Keyword("level", values={"SOCKET": "socket", "IP": "ip", "PHY": "phy"}),
             S("option"), OS("value1"), OS("value2"), family="socket", doc="Set a socket option (see README)")
    @nwp
    async def at_setsockopt(self, ctx: Ctx, sd: int, level: str, option: str, v1, v2) -> None:
        s = self.sock(sd)
        table = {"socket": SOCKET_OPTS, "ip": IP_OPTS, "phy": PHY_OPTS}[level]
        opt = pick(option, table, "option")
        one = lambda lo=None, hi=None: parse_num(v1, lo, hi, opt)  # noqa: E731
        if opt in ("keepalive", "rx_no_ip_boundary", "nonblocking", "secure_ext_client_chlng_resp"):
            v = one(0, 1) if opt != "secure_ext_client_chlng_resp" else 1
            s.opts[opt] = v
            if opt == "keepalive" and s.conn is not None and not s.conn.closed:
                try:
                    s.conn.set_keepalive(bool(v), idle=s.opts.get("keepalivetime"))
                except NetError as e:
                    raise net_fail(e) from None
        elif opt == "keepalivetime":
            v = one(1, 0x7FFFFFFF)
            s.opts[opt] = v
            if s.conn is not None and not s.conn.closed and s.opts.get("keepalive"):
                try:
                    s.conn.set_keepalive(True, idle=v)
                except NetError as e:
                    raise net_fail(e) from None
        elif opt == "rcvtimeo":
            sec = one(0, 0x7FFFFFFF)
            usec = parse_num(v2, 0, 999999, "usec") if v2 is not None else 0
            s.opts[opt] = (sec, (usec // 10000) * 10000)
        elif opt == "rcvbuf":
            v = one(1, 1 << 20)
            s.opts[opt] = v
            if s.conn is not None:
                s.conn.rx_high_water = v
        elif opt == "secmethod":
            if not s.sec:
                raise fail(E_NOPROTOOPT, "not a secure socket")
            s.opts[opt] = pick(v1, SECMETHODS, "method")
        elif opt == "secure_mask":
            if not s.sec:
                raise fail(E_NOPROTOOPT, "not a secure socket")
            names = flags_of(v1, [c for c, _ in CIPHERS], "cipher")
            if not names:
                raise param_error("empty cipher mask")
            s.opts[opt] = names
        elif opt.startswith("secure_files_") or opt == "secure_domain_name_verification":
            if not s.sec:
                raise fail(E_NOPROTOOPT, "not a secure socket")
            if v1 is None or not str(v1).strip():
                raise count_error("missing value")
            s.opts[opt] = str(v1)
        elif opt == "secure_alpn":
            names = flags_of(v1, list(ALPN), "alpn")
            if not names:
                raise param_error("empty ALPN list")
            s.opts[opt] = names
        elif opt == "linger":
            s.opts[opt] = (one(0, 1), parse_num(v2, 0, 0xFFFF, "linger time") if v2 is not None else 0)
        elif opt == "multicast_ttl":
            v = one(0, 255)
            if s.udp is None:
                raise fail(E_INVAL, "bind the UDP socket first")
            try:
                s.udp.set_multicast_options(ttl=v)
            except NetError as e:
                raise net_fail(e) from None
            s.opts[opt] = v
        elif opt in ("add_membership", "drop_membership"):
            group = parse_ip(v1, 4)
            iface = parse_ip(v2, 4) if v2 is not None else "0.0.0.0"
            if s.kind != "dgram" or s.udp is None:
                raise fail(E_INVAL, "multicast needs a bound UDP socket")
            try:
                (s.udp.join_multicast if opt == "add_membership" else s.udp.leave_multicast)(group, iface)
            except NetError as e:
                raise net_fail(e) from None
            groups = s.opts.setdefault("groups", [])
            if opt == "add_membership":
                groups.append(group)
            elif group in groups:
                groups.remove(group)
        else:
            # transceiver (RF) / RAW socket options: validated, but this socket kind cannot use them
            if opt == "change_channel":
                one(1, 13)
            elif opt == "phy_tx_power":
                one(1, 15)
            elif opt == "phy_tx_timeout":
                one(0, 10)
            elif opt == "phy_tx_inhibit_threshold":
                pick(v1, ("MIN", "LOW", "DEFAULT", "MED", "HIGH", "MAX"), "threshold")
            else:
                one(0, 0x7FFFFFFF)
            raise fail(E_OPNOTSUPP, f"{opt} applies to RAW/RF sockets only")

    @command("+GetSockOpt", Form.WRITE, Int("sd", 0, 255), Keyword("level", values={"SOCKET": "socket", "IP": "ip", "PHY": "phy"}),
             S("option"), family="socket", doc="Get a socket option: +getsockopt:<values>")
    @nwp
    async def at_getsockopt(self, ctx: Ctx, sd: int, level: str, option: str) -> None:
        s = self.sock(sd)
        table = {"socket": SOCKET_OPTS, "ip": IP_OPTS, "phy": PHY_OPTS}[level]
        opt = pick(option, table, "option")
        o = s.opts
        if opt == "keepalive":
            val = o.get("keepalive", 0)
            if s.conn is not None and not s.conn.closed:
                try:
                    val = int(s.conn.get_keepalive()["enabled"])
                except NetError:
                    pass
            out = str(val)
        elif opt == "keepalivetime":
            val = o.get("keepalivetime")
            if val is None and s.conn is not None and not s.conn.closed:
                try:
                    val = s.conn.get_keepalive()["idle"]
                except NetError:
                    val = None
            out = str(val if val is not None else 7200)
        elif opt == "rcvtimeo":
            sec, usec = o.get("rcvtimeo", (0, 0))
            out = f"{sec},{usec}"
        elif opt == "linger":
            a, b = o.get("linger", (0, 0))
            out = f"{a},{b}"
        elif opt in ("secure_mask", "secure_alpn"):
            out = "|".join(o.get(opt) or ([c.lower() for c, _ in CIPHERS] if opt == "secure_mask" else []))
        elif opt in ("nonblocking", "rx_no_ip_boundary", "secure_ext_client_chlng_resp"):
            out = str(o.get(opt, 0))
        elif opt == "rcvbuf":
            out = str(o.get(opt, 65535))
        elif opt == "secmethod":
            out = o.get(opt, "sslv3_tlsv1_2")
        elif opt in ("multicast_ttl",):
            out = str(o.get(opt, 1))
        elif opt in ("add_membership", "drop_membership"):
            out = "|".join(o.get("groups", []))
        elif opt.startswith("secure_") :
            out = o.get(opt, "")
        else:
            raise fail(E_OPNOTSUPP, f"{opt} applies to RAW/RF sockets only")
        ctx.info(f"+getsockopt:{out}")

    @command("+Recv", Form.WRITE, Int("sd", 0, 255), *RECV, family="socket",
             doc="Receive: OK, then +recv:<sd>,<format>,<length>,<data> and OK")
    @nwp
    async def at_recv(self, ctx: Ctx, sd: int, fmt: int, length: int) -> None:
        s = self.sock(sd)
        self.recv_precheck(s)
        self.start_blocking(s, self._recv(s, fmt, length, "+recv"), f"recv-{sd}")

    @command("+RecvFrom", Form.WRITE, Int("sd", 0, 255), FAMILY, Int("port", 0, 65535), S("address"), *RECV,
             family="socket",
             doc="Receive a datagram: OK, then +recvfrom:<sd>,<format>,<length>,<data> and OK")
    @nwp
    async def at_recvfrom(self, ctx: Ctx, sd: int, fam: int, port: int, address: str, fmt: int, length: int) -> None:
        s, _ip = self.sock_ip(sd, address, fam)
        self.recv_precheck(s)
        self.start_blocking(s, self._recv(s, fmt, length, "+recvfrom"), f"recvfrom-{sd}")

    def recv_precheck(self, s: Sock) -> None:
        if s.kind == "stream" and s.conn is None:
            raise fail(E_NOTCONN, "socket is not connected")
        if s.kind == "dgram" and s.udp is None:
            raise fail(E_NOTCONN, "socket is neither bound nor connected")

    async def _recv(self, s: Sock, fmt: int, length: int, prefix: str) -> list:
        if s.kind == "stream":
            conn = s.conn
            if conn is None:
                raise fail(E_NOTCONN, "socket is not connected")
            if not conn.available and not (conn.remote_eof or conn.closed):
                if s.nonblocking:
                    raise fail(E_AGAIN, "no data")
                try:
                    await conn.wait_data(s.rcvtimeo)
                except NetError:
                    raise fail(E_AGAIN, "receive timed out") from None
            data = conn.read(length)
        else:
            udp = s.udp
            if udp is None:
                raise fail(E_NOTCONN, "socket is neither bound nor connected")
            if s.rest:                                # RX_NO_IP_BOUNDARY: the unread end of a datagram
                data, s.rest = s.rest[:length], s.rest[length:]
                return [f"{prefix}:{s.sd},".encode() + encode_data(fmt, data)]
            if not udp.rx and s.nonblocking:
                raise fail(E_AGAIN, "no datagram")
            try:
                data, _addr = await udp.recv(s.rcvtimeo)
            except NetError as e:
                if e.kind == "timeout":
                    raise fail(E_AGAIN, "receive timed out") from None
                raise
            if s.opts.get("rx_no_ip_boundary"):
                s.rest = data[length:]                # kept for the next receive instead of dropped
            data = data[:length]
        return [f"{prefix}:{s.sd},".encode() + encode_data(fmt, data)]

    @command("+Send", Form.WRITE, Int("sd", 0, 255), FORMAT, Int("length", 1, MAX_DATA), Raw("data"),
             family="socket", doc="Send data on a connected socket")
    @nwp
    async def at_send(self, ctx: Ctx, sd: int, fmt: int, length: int, data) -> None:
        s = self.sock(sd)
        payload = decode_data(fmt, data, length)
        self._send(s, payload, None)

    @command("+SendTo", Form.WRITE, Int("sd", 0, 255), FAMILY, Int("port", 1, 65535), S("address"), FORMAT,
             Int("length", 1, MAX_DATA), Raw("data"), family="socket", doc="Send a datagram to an address")
    @nwp
    async def at_sendto(self, ctx: Ctx, sd: int, fam: int, port: int, address: str, fmt: int, length: int, data) -> None:
        s, ip = self.sock_ip(sd, address, fam)
        payload = decode_data(fmt, data, length)
        self.need_ip()
        if s.kind == "dgram" and s.udp is None:
            try:
                s.udp = await UdpSocket.open(local_host="::" if fam == 6 else "0.0.0.0", resolver=self.module.resolver)
            except NetError as e:
                raise net_fail(e) from None
            self.watch_udp(s)
        self._send(s, payload, (ip, port))

    def _send(self, s: Sock, payload: bytes, dest) -> None:
        if s.kind == "stream":
            if s.conn is None:
                raise fail(E_NOTCONN, "socket is not connected")
            if s.conn.closed:
                self.status_flags["tx_failed"] = True
                raise fail(-104 if s.conn.close_reason in ("reset", "error") else E_NOTCONN, "connection closed")
            try:
                s.conn.write(payload)
            except NetError as e:
                self.status_flags["tx_failed"] = True
                raise net_fail(e) from None
            return
        if s.udp is None:
            raise fail(E_DESTADDRREQ, "no destination: connect the socket or use AT+SendTo")
        try:
            s.udp.sendto(payload, dest)
        except NetError as e:
            if dest is None and e.kind == "invalid":
                raise fail(E_DESTADDRREQ, str(e)) from None
            raise net_fail(e) from None
