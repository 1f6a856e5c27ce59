"""Microchip family network stack: sockets, binary mode, TLS configuration, DNS, ping."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from atemu.files import FsError
from atemu.grammar import Bytes, Data, DataOverflow, Form, Int, Str
from atemu.net.errors import NetError
from atemu.profile import CmdError, command

from .common import (E_STATE, E_SOCKET, E_NORES, E_DATA, E_CERT, NET_CODES, MAX_SOCKETS, MAX_DATA, TLS_CONFS,
                     sfx, log, text_arg)


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
    tls_after_connect: Any = None  # (TLS context, SNI) of an AT+SOCKTLS sent while the connect runs
    tls_conf: int | None = None    # RNWF: TLS configuration of an AT+SOCKTLS sent before AT+SOCKBR
    announced: bool = False        # a +SOCKRXT / +SOCKRXU is outstanding
    rx_left: int = 0               # RNWF: bytes of the last +SOCKRXT the host has not read yet
    reminder: Any = None           # RNWF: timer that announces again what a host left unread
    bound: bool = False            # bound to a local port by SOCKBL (UDP)
    groups: list = field(default_factory=list)
    options: dict = field(default_factory=lambda: {1: 0, 2: 0})   # socket options (RNWF +SOCKC)

    @property
    def local_port(self) -> int:
        if self.listener is not None:
            return self.listener.port
        if self.conn is not None and self.conn.local_addr:
            return self.conn.local_addr[1]
        if self.udp is not None:
            return self.udp.port
        return 0


class SocketCommands:
    """Mixin of :class:`MicrochipWinc`: up to 10 TCP/UDP sockets, TLS upgrade, DNS and ping."""

    # ================================================================== TLS configuration
    @command("+TLSC", Form.WRITE, Int("conf_idx", 1, TLS_CONFS), Int("param_id", optional=True),
             Str("param_val", quoted=None, optional=True), family="tls",
             doc="TLS configuration <conf_idx>: 1 CA_CERT_NAME, 2 CERT_NAME, 3 PRI_KEY_NAME, 4 PRI_KEY_PASSWORD, 5 SERVER_NAME")
    async def tlsc(self, ctx, idx: int, pid: int | None, val: Any) -> None:
        self._cfg(ctx, "TLSC", self.TLSC, self.tls_confs[idx], pid, val, arg_index=2)

    def _tls_context(self, idx: int, default_name: str):
        from atemu.net.tls import client_context
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
            from atemu.net.sockets import TcpListener
            try:
                lst = await TcpListener.open(self.bind_host_tcp, port, resolver=self.module.resolver)
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
        self._established(s)

    def _established(self, s: Sock) -> None:
        """A TCP connection is up (accepted or connected): wire it and announce +SOCKIND."""
        conn = s.conn
        self._wire_tcp(s)
        la, ra = conn.local_addr or ("", 0), conn.remote_addr or ("", 0)
        self.urc(f'+SOCKIND:{s.id},"{la[0]}",{la[1]},"{ra[0]}",{ra[1]}')
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
        from atemu.net.sockets import UdpSocket
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

    async def _udp_destination(self, s: Sock, host: str) -> str:
        """Resolve a UDP destination (ERROR:4 if it does not resolve); an unbound socket gets an
        ephemeral local port."""
        try:
            ip = await self.module.resolver.resolve_one(host, timeout=10.0)
        except NetError as e:
            raise self.fail(E_SOCKET, str(e)) from None
        if s.udp is None:
            await self._udp_open(s, 0)
        return ip

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
        host = text_arg(ctx, 1)
        s = self._sock(sid)
        self.need_link()
        if s.proto == 1:
            ip = await self._udp_destination(s, host)
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
        from atemu.net.sockets import TcpConnection
        try:
            conn = await TcpConnection.open(host, port, resolver=self.module.resolver, timeout=10.0)
        except NetError as e:
            s.connecting = False
            s.tls_after_connect = None
            self._sockerr(s, e)
            return
        s.connecting = False
        if self.socks.get(s.id) is not s:
            conn.abort()
            return
        s.conn = conn
        s.remote = conn.remote_addr
        self._established(s)
        if s.tls_after_connect is not None:        # AT+SOCKTLS came while connecting
            tctx, sni = s.tls_after_connect
            s.tls_after_connect = None
            s.upgrading = True
            await self._tls_upgrade(s, tctx, sni)

    def _sockerr(self, s: Sock, e: NetError) -> None:
        """+SOCKERR:<id>,<code>,<message> for a failed connect or TLS upgrade (if the socket still exists)."""
        if self.socks.get(s.id) is s:
            self.urc(f"+SOCKERR:{s.id},{NET_CODES.get(e.kind, 99)},{self.fmt(e.message[:120])}")

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
        if self.TLS_WHILE_CONNECTING and s.connecting and s.conn is None and s.tls_after_connect is None:
            # the TCP connect of AT+SOCKBR still runs: the handshake follows it (+SOCKIND, then +SOCKTLS)
            s.tls_after_connect = self._tls_context(conf, s.remote[0] if s.remote else "")
            return
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
            self._sockerr(s, e)
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

    @property
    def _marker_wait(self) -> dict:
        """How a binary phase waits for the host's '#': at most data_timeout seconds from the
        command (a fixed deadline: the bytes it skips meanwhile do not extend it), and a '+++'
        among those skipped bytes abandons the transfer."""
        return {"marker_timeout": self.data_timeout, "abort": b"+++"}

    async def _payload(self, ctx, length: int, data: bytes | None) -> bytes:
        """The data of SOCKWR/SOCKWRTO: inline, LENGTH raw bytes after '#', or (UDP) one datagram
        of at most MAX_DATA bytes ended by '+++' (TCP length 0 streams: see _tcp_stream)."""
        if data is not None:
            if len(data) != length:
                raise self.fail(E_DATA, "data does not match <LENGTH>")
            return data
        if length:
            ev = await ctx.read_data(length, marker=b"#", idle=self.data_timeout, **self._marker_wait)
            complete = isinstance(ev, Data) and ev.reason == "length" and len(ev.payload) == length
        else:
            # +2: a datagram of exactly MAX_DATA bytes is followed by +++ (3 bytes), not overflowed
            ev = await ctx.read_data(None, marker=b"#", terminator=b"+++", max_len=MAX_DATA + 2,
                                     idle=self.data_timeout, **self._marker_wait)
            if isinstance(ev, DataOverflow):
                await self._skip_to_escape(ctx, ev.payload)
            complete = isinstance(ev, Data) and ev.reason == "terminator" and len(ev.payload) <= MAX_DATA
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
        self._check_sendable(s)
        if s.proto == 2 and length == 0 and data is None:
            await self._tcp_stream(ctx, s)
            return
        await self._send_payload(sid, s, await self._payload(ctx, length, data))

    def _check_sendable(self, s: Sock) -> None:
        """AT+SOCKWR's state check: a connected TCP socket, or a UDP socket with a destination."""
        if s.proto == 2:
            if s.conn is None or s.conn.closed or s.upgrading:
                raise self.fail(E_STATE, "socket is not connected")
        elif s.udp is None or s.udp.remote is None:
            raise self.fail(E_STATE, "no destination (use AT+SOCKBR or AT+SOCKWRTO)")

    async def _send_payload(self, sid: int, s: Sock, payload: bytes) -> None:
        """Send AT+SOCKWR's payload: queued on TCP, one datagram on UDP."""
        if s.proto == 2:
            await self._tcp_send(s, payload)
            return
        if self.socks.get(sid) is not s:
            raise self.fail(E_SOCKET, "socket closed meanwhile")
        try:
            s.udp.sendto(payload)
        except NetError as e:
            raise self.fail(E_SOCKET, str(e)) from None

    async def _tcp_send(self, s: Sock, payload: bytes) -> None:
        """Queue ``payload`` on a TCP socket (ERROR:4 if it is gone or closed)."""
        try:
            if self.socks.get(s.id) is not s or s.conn is None or s.conn.closed:
                raise NetError("closed", "the socket was closed")
            s.conn.write(payload)
            if s.conn.write_buffer_size > 256 * 1024:
                await asyncio.wait_for(s.conn.drain(), 10.0)
        except (NetError, asyncio.TimeoutError) as e:
            raise self.fail(E_SOCKET, str(e)) from None

    async def _tcp_stream(self, ctx, s: Sock) -> None:
        """SOCKWR=<id>,0 on TCP: after '#', forward the host's bytes in chunks of about MAX_DATA as
        they fill (the module flushes as it goes; nothing piles up), the remainder at '+++'. A '+++'
        straddling a chunk boundary still ends the data. If the host falls silent (data_timeout) the
        unfilled remainder is dropped and ERROR:8 follows (chunks already forwarded stay sent); if
        the socket fails meanwhile the rest is read up to '+++' and ERROR:4 follows."""
        failed: CmdError | None = None

        async def send(chunk: bytes) -> None:
            nonlocal failed
            if chunk and failed is None:
                try:
                    await self._tcp_send(s, chunk)
                except CmdError as e:
                    failed = e

        marker = b"#"
        while True:
            ev = await ctx.read_data(None, marker=marker, terminator=b"+++", max_len=MAX_DATA + 2,
                                     idle=self.data_timeout, **(self._marker_wait if marker else {}))
            marker = None
            if isinstance(ev, Data) and ev.reason == "terminator":
                await send(ev.payload)
                break
            if not isinstance(ev, DataOverflow):
                raise self.fail(E_DATA, "the host fell silent before +++")
            held = min(2, len(ev.payload) - len(ev.payload.rstrip(b"+")))   # may start the +++
            await send(ev.payload[:len(ev.payload) - held])
            while held:
                ev = await ctx.read_data(1, idle=self.data_timeout)
                if not isinstance(ev, Data) or ev.reason != "length":
                    raise self.fail(E_DATA, "the host fell silent before +++")
                if ev.payload != b"+":
                    await send(b"+" * held + ev.payload)
                    held = 0
                elif held == 2:
                    held = 3
                    break
                else:
                    held += 1
            if held == 3:
                break
        if failed is not None:
            raise failed

    @command("+SOCKWRTO", Form.WRITE, Int("SOCK_ID", 0, 255), Str("RMT_ADDR", quoted=True, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), Int("LENGTH", 0, MAX_DATA), Bytes("DATA", quoted=True, optional=True, max_len=MAX_DATA),
             family="socket", doc="Send a UDP datagram to an address (alias AT+SOCKWRT0)")
    @command("+SOCKWRT0", Form.WRITE, Int("SOCK_ID", 0, 255), Str("RMT_ADDR", quoted=True, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), Int("LENGTH", 0, MAX_DATA), Bytes("DATA", quoted=True, optional=True, max_len=MAX_DATA),
             family="socket", doc="Alias of AT+SOCKWRTO (the manual's heading spells it with a zero)", builtin=True)
    async def sockwrto(self, ctx, sid: int, host: str, port: int, length: int, data: bytes | None) -> None:
        host = text_arg(ctx, 1)
        s = self._sock(sid, 1)
        self.need_link()
        if data is not None and length == 0:
            raise CmdError("param", message="inline data needs its length")
        ip = await self._udp_destination(s, host)
        payload = await self._payload(ctx, length, data)
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
            ctx.info(f"+SOCKRD:{sid},{len(data)},{self.fmt(data)}")
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
        name = text_arg(ctx, 1)
        self.need_link()
        ctx.ok()
        self.module.spawn(self._resolve(typ, name))

    async def _resolve(self, typ: int, name: str) -> None:
        import socket
        fam = socket.AF_INET if typ == 1 else socket.AF_INET6
        try:
            ip = await self.module.resolver.resolve_one(name, family=fam, timeout=10.0)
        except NetError as e:
            self._aec_dns_error(2 if e.kind == 'dns_timeout' else 1)
            return
        self.urc(f'+DNSRESOLV:{typ},{self.fmt(name)},"{ip}"')

    def _aec_dns_error(self, code: int) -> None:
        self.urc(f"+DNSERROR:{code}")

    @command("+PING", Form.WRITE, Str("TARGET_ADDR", quoted=True, min_len=1, max_len=253), Int("IP_PROTOCOL_VERSION", 1, 2, optional=True),
             family="ping", doc="Ping once: OK, then +PING:<ip>,<rtt ms> (-1: no reply)")
    async def ping(self, ctx, target: str, ver: int | None) -> None:
        target = text_arg(ctx, 0)
        self.need_link()
        ctx.ok()
        self.module.spawn(self._ping(target, ver))

    async def _ping(self, target: str, ver: int | None) -> None:
        import socket
        from atemu.net.ping import ping
        fam = {1: socket.AF_INET, 2: socket.AF_INET6}.get(ver or 0, 0)
        try:
            ip = await self.module.resolver.resolve_one(target, family=fam, timeout=10.0)
        except NetError as e:
            self._aec_ping_failed(None, e.kind)
            return
        try:
            res = await ping(ip, count=1, timeout=4.0)
            r = res[0]
            rtt = max(0, round(r.rtt_ms)) if r.ok and r.rtt_ms is not None else -1
        except NetError as e:
            log.warning("ping: %s", e)
            rtt = -1
        if rtt < 0:
            self._aec_ping_failed(ip, "timeout")
            return
        self.urc(f'+PING:"{ip}",{rtt}')

    def _aec_ping_failed(self, ip: str | None, kind: str) -> None:
        """No reply (``ip`` set) or the name did not resolve (``ip`` None, ``kind`` the DNS failure)."""
        if ip is None:
            self._aec_dns_error(2 if kind == "dns_timeout" else 1)
        else:
            self.urc(f'+PING:"{ip}",-1')
