"""The RNWF dialect's commands: what differs from the WINC AT set, and the modules WINC lacks.

Handlers defined here replace the WINC ones of the same name (the most derived declaration
wins); a handler set to ``None`` drops a WINC command the RNWF guide does not have.
"""
from __future__ import annotations

import asyncio
import binascii
import datetime as _dt
import ipaddress
import time
from typing import Any

from atemu import wifi
from atemu.files import FsError
from atemu.net.dns import DNS_PORT, parse_server
from atemu.grammar import Bytes, Data, Form, Int, Str
from atemu.profiles.microchip_common.wlan import WlanCommands
from atemu.net.errors import NetError
from atemu.profile import CmdError, command

from atemu.profiles.microchip_common.common import (E_STATE, E_DATA, E_CERT, E_BUSY, NET_CODES,
                                               _P, arg_bytes, sfx, log, text_arg, valid_material)
from atemu.profiles.microchip_common.mqtt import MqttCommands, _topic
from atemu.profiles.microchip_common.sockets import SocketCommands, Sock

from .status import status

MAX_WRITE = 1460
SOH, STX, EOT, ACK, NAK, CAN = b"\x01", b"\x02", b"\x04", b"\x06", b"\x15", b"\x18"
#: addresses in the soft-AP's DHCP pool (DHCPSC 2 POOL_START .. 3 POOL_END)
DHCP_POOL = 10
#: the UART rates of AT+IPR (guide 9.5.1.4)
IPR_RATES = (115200, 230400, 460800, 921600)
#: +SOCKC parameters (guide 9.15.1.12): id -> (default, min, max)
SOCK_OPTS = {1: (0, 0, 1), 2: (0, 0, 1), 3: (0, 0, 65535), 4: (5840, 1460, 11680), 32: (0, 0, 255)}
#: regulatory domains of AT+WIFIC=10 and their highest channel
REG_DOMAINS = {"GEN": 13, "USA": 11, "EMEA": 13}
NTP_EPOCH = 2208988800          # seconds from 1900-01-01 to 1970-01-01
LEASE_SECONDS = 86400           # the DHCP lease time the world's APs grant (NETIFC 12)


def _read_options(ctx, prefix: str, vals: dict, pid: int | None, val: Any, unknown: str) -> bool:
    """The read side of an ``<id>[,<value>]`` configuration command: no id lists every value, an id
    without a value shows that one (an unknown id is a parameter error). True when answered."""
    if pid is None:
        for k, v in vals.items():
            ctx.info(f"{prefix}{k},{v}")
        return True
    if pid not in vals:
        raise CmdError("param", message=unknown)
    if val is None:
        ctx.info(f"{prefix}{pid},{vals[pid]}")
        return True
    return False


class RnwfCommands:
    """Mixin of :class:`Rnwf02` (listed before the family class, so its handlers win)."""

    # ---- shared (WINC-worded) commands the RNWF guide does not have --------------------------
    wscna = None
    wscnp = None

    #: +SI filter bits the model has (RNWF02: 0x01-0x08; the RNWF11 guide lists 0x01 and 0x02)
    SI_FILTERS = 0x0F

    #: commands accepted over the provisioning TCP link (scan results go to the UART)
    PROV_COMMANDS = ("+WSTAC", "+WPROV")
    PROV_PORT_ID = 1

    # ================================================================== WPROV (25)
    @command("+WPROVC", Form.EXEC, family="wprov", doc="Read the provisioning configuration (1 PORT, 2 ASCII)")
    @command("+WPROVC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="wprov",
             doc="1 PORT (service listening port), 2 ASCII (read-only: 1, the service speaks the ASCII protocol)")
    async def wprovc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        if pid == 2 and val is not None:
            raise self.fail(E_STATE, "ASCII is read-only")
        self._cfg(ctx, "WPROVC", self.WPROVC, self.cfg["WPROVC"], pid, val, writable=lambda: not self.prov_on)

    @command("+WPROV", Form.EXEC, family="wprov", doc="Provisioning service state: +WPROV:<0|1>")
    async def wprov_read(self, ctx) -> None:
        ctx.info(f"+WPROV:{int(self.prov_on)}")

    def _aec_prov_client(self, conn, attached: bool) -> None:
        cid = self.prov_ids.setdefault(id(conn), len(self.prov_ids) + 1)
        if attached:
            addr = conn.remote_addr or ("0.0.0.0", 0)
            self.urc(f'+WPROVAT:{cid},"{addr[0]}",{addr[1]}')
        else:
            self.urc(f"+WPROVDT:{cid}")

    # ================================================================== INTERNAL (2)
    @command("E", Form.WRITE, Int("N", 0, 1), family="general", doc="ATE0 echo and prompt off, ATE1 on (until reset)")
    async def ate(self, ctx, n: int) -> None:
        self.module.engine.echo = bool(n)

    @command("V", Form.EXEC, family="general", doc="ATV: verbosity 0 (same as ATV0)")
    @command("V", Form.WRITE, Int("N", 0, 5), family="general",
             doc="Response verbosity: 0 '0'/'1', 1 '0'/'1:<code>', 2 OK/ERROR, 3 (default) OK/ERROR:<code>,\"<text>\", "
                 "4 OK/ERROR:\"<text>\", 5 OK/ERROR:<code>,\"<text>\"")
    async def atv(self, ctx, level: int = 0) -> None:
        self.verbosity = level

    @command("+IPR", Form.EXEC, family="general", doc="Read the UART rate: +IPR:<baud>")
    @command("+IPR", Form.WRITE, Int("BAUD_RATE", choices=IPR_RATES),
             family="general", doc="Set the UART rate (115200, 230400, 460800, 921600): OK at the old rate, then the new one")
    async def ipr(self, ctx, baud: int | None = None) -> None:
        if baud is None:
            ctx.info(f"+IPR:{self.module.baud}")
            return
        ctx.ok()
        await self.module.drain_output()
        self.module.set_baud(baud)

    @command("+GMI", Form.EXEC, family="general", doc="Manufacturer identification")
    async def gmi(self, ctx) -> None:
        ctx.info('+GMI:"Microchip Technology Inc."')

    @command("+GMM", Form.EXEC, family="general", doc="Model identification")
    async def gmm(self, ctx) -> None:
        ctx.info(f'+GMM:"{self.model}"')

    @command("+GMR", Form.EXEC, family="general", doc='Firmware revision "<version> <build> <hash> [<date>]"')
    async def gmr(self, ctx) -> None:
        from .profile import GMR
        ctx.info(f'+GMR:"{GMR}"')

    # ================================================================== CFG (3), DHCP (4), DNS (5), SNTP (13)
    @command("+CFG", Form.EXEC, family="cfg", doc="Read the system configuration (1 DEVICE_NAME)")
    @command("+CFG", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="cfg",
             doc="System configuration: 1 DEVICE_NAME (string, at most 32)")
    async def cfgc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        self._cfg(ctx, "CFG", self.CFG, self.cfg["CFG"], pid, val)

    @command("+WIFIC", Form.EXEC, family="cfg", doc="Read the Wi-Fi configuration (RNWF02 v2)")
    @command("+WIFIC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="cfg",
             doc="10 REG_DOMAIN (GEN, USA, EMEA: channels 1-13, 1-11, 1-13), 20 POWERSAVE, 30 COEX_ENABLE, "
                 "31 COEX_INTERFACE, 32 COEX_RX_PRIO, 33 COEX_TX_PRIO, 34 COEX_ANTENNA")
    async def wific(self, ctx, pid: int | None = None, val: Any = None) -> None:
        if pid in (11, 12):
            # read-only: the domains the module knows (multiple value 11.0-11.n) and the channel mask of
            # the selected one (Microchip's WINCS02 driver: REGDOMAIN_AVAILABLE, REGDOMAIN_CHANMASK24)
            if val is not None:
                raise self.fail(E_STATE, "read-only parameter")
            self._wific_extra(ctx, pid)
            return
        if pid is None:
            self._cfg(ctx, "WIFIC", self.WIFIC, self.cfg["WIFIC"], None, None)
            self._wific_extra(ctx, 11)
            self._wific_extra(ctx, 12)
            return
        if val is not None and pid == 10 and sfx(arg_bytes(ctx.line.args[1])).upper() not in REG_DOMAINS:
            raise CmdError("param", message="unknown regulatory domain")
        self._cfg(ctx, "WIFIC", self.WIFIC, self.cfg["WIFIC"], pid, val,
                  writable=lambda: pid != 11 and (pid != 10 or (self.sta_state == 0 and not self.ap_on)))
        if val is not None and pid == 10:
            self.cfg["WIFIC"][10] = self.cfg["WIFIC"][10].upper()

    def _wific_extra(self, ctx, pid: int) -> None:
        if pid == 11:
            ctx.info(f"+WIFIC:11,{len(REG_DOMAINS)}")
            for i, d in enumerate(REG_DOMAINS):
                ctx.info(f'+WIFIC:11.{i},"{d}"')
        else:
            top = REG_DOMAINS.get(sfx(self.cfg["WIFIC"][10]), 13)
            ctx.info(f"+WIFIC:12,0x{(1 << top) - 1:04X}")

    def _channel_allowed(self, channel: int) -> bool:
        return channel <= REG_DOMAINS.get(sfx(self.cfg["WIFIC"][10]), 13)

    @command("+DHCPSC", Form.EXEC, family="dhcp", doc="List the DHCP server pools: +DHCPSC:<IDX>")
    @command("+DHCPSC", Form.WRITE, Int("IDX", 0, 0), Int("ID", optional=True), Str("VAL", quoted=None, optional=True),
             family="dhcp", doc="DHCP server pool 0 (the soft-AP's): 1 ENABLED, 2 POOL_START, 3 POOL_END (read-only), "
                                "4 POOL_LEASES (read-only), 5 NETIF_IDX, 10 GATEWAY; read-only while the soft-AP runs")
    async def dhcpsc(self, ctx, iface: int | None = None, pid: int | None = None, val: Any = None) -> None:
        if iface is None:
            ctx.info("+DHCPSC:0")
            return
        c = self.cfg["DHCPSC"]
        start = ipaddress.IPv4Address(sfx(c[2]))
        c[3] = str(start + DHCP_POOL - 1).encode()
        c[4] = len(self.ap_stations) if self.ap_on and c[1] else 0
        if val is not None and pid in (3, 4):
            raise self.fail(E_STATE, "read-only parameter")
        if val is not None and pid in (2, 10):
            try:
                ipaddress.IPv4Address(sfx(arg_bytes(ctx.line.args[2])))
            except ValueError:
                raise CmdError("param", message="not an IPv4 address") from None
        self._cfg(ctx, "DHCPSC", self.DHCPSC, c, pid, val, writable=lambda: not self.ap_on, arg_index=2)

    def _ap_lease(self, aid: int):
        # the soft-AP's DHCP server hands out DHCPSC's pool (POOL_START onwards) with its GATEWAY
        c = self.cfg["DHCPSC"]
        if not c[1] or aid > DHCP_POOL:
            return None
        gw = sfx(c[10])
        return wifi.Lease(str(ipaddress.IPv4Address(sfx(c[2])) + aid - 1), gw, "255.255.255.0", gw)

    @command("+DNSC", Form.EXEC, family="dns", doc="Read the DNS configuration: 1 DNS_SVR, two values 1.0 and 1.1")
    @command("+DNSC", Form.WRITE, Str("ID", quoted=False, max_len=4), Str("VAL", quoted=None, optional=True), family="dns",
             doc="AT+DNSC=1[.<n>][,\"a.b.c.d\"]: the DNS servers (multiple value 1.0-1.1)")
    async def dnsc(self, ctx, pid: str | None = None, val: Any = None) -> None:
        servers = self.dns_servers
        if pid is None:
            for i, v in enumerate(servers):
                ctx.info(f'+DNSC:1.{i},"{v}"')
            return
        key = pid.strip()
        if key not in ("1", "1.0", "1.1"):
            raise CmdError("param", message="unknown parameter id")
        idx = [0, 1] if key == "1" else [int(key[-1])]
        if val is None:
            for i in idx:
                ctx.info(f'+DNSC:1.{i},"{servers[i]}"')
            return
        arg = ctx.line.args[1]
        ip = self._dns_server_arg(sfx(arg_bytes(arg))) if (arg.quoted or arg.hexed) else None
        if ip is None or len(idx) != 1:
            raise CmdError("param", message="DNS_SVR 1.0 or 1.1 takes a quoted IPv4 address")
        servers[idx[0]] = ip            # the list is the module resolver's: the next lookup asks it

    @staticmethod
    def _dns_server_arg(text: str) -> str | None:
        """The guide's "a.b.c.d", or (for local test servers) "a.b.c.d:port"; normalised, or None."""
        try:
            ip, port = parse_server(text)
            ip = str(ipaddress.IPv4Address(ip))
        except ValueError:
            return None
        return ip if port == DNS_PORT and ":" not in text else f"{ip}:{port}"

    @command("+DNSRESOLV", Form.WRITE, Int("TYPE", choices=(1, 28)), Str("DOMAIN_NAME", quoted=True, min_len=1, max_len=128),
             family="dns", doc="Resolve (record type 1 A; 28 AAAA): OK, then +DNSRESOLV:<type>,\"<name>\",\"<address>\" "
                               "or +DNSERR:<code> (1 timeout, 2 DNS error)")
    async def dnsresolv(self, ctx, typ: int, name: str) -> None:
        name = text_arg(ctx, 1)
        self.need_link()
        ctx.ok()
        self.module.spawn(self._rnwf_resolve(typ, name))

    async def _rnwf_resolve(self, typ: int, name: str) -> None:
        import socket
        try:
            ip = await self.module.resolver.resolve_one(name, family=socket.AF_INET if typ == 1 else socket.AF_INET6,
                                                        timeout=10.0)
        except NetError as e:
            # the DNS module's status codes (9.3): 5.1 DNS query timeout, 5.2 DNS error
            self._aec_dns_error(1 if e.kind == "dns_timeout" else 2)
            return
        self.urc(f'+DNSRESOLV:{typ},{self.fmt(name)},"{ip}"')

    def need_link(self) -> None:
        if not self.link_up():
            raise status(1, 1, "no Wi-Fi link")            # 1.1 STA Not Connected

    def _aec_ping_failed(self, ip: str | None, kind: str) -> None:
        # the guide's +PINGERR:<ERROR_CODE>, with the PING module's one status code (11.0 Ping Failed)
        self.urc("+PINGERR:0")

    def _aec_dns_error(self, code: int) -> None:
        self.urc(f"+DNSERR:{code}")

    @command("+SNTPC", Form.EXEC, family="sntp", doc="Read the SNTP configuration (1 NTP_ENABLED, 2 NTP_STATIC, 3 NTP_SVR)")
    @command("+SNTPC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="sntp")
    async def sntpc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        was = self.cfg["SNTPC"][1]
        self._cfg(ctx, "SNTPC", self.SNTPC, self.cfg["SNTPC"], pid, val)
        if val is not None and pid == 1 and not was and self.cfg["SNTPC"][1] and self.sta_ip:
            self.module.spawn(self._sntp())

    async def _sntp(self) -> None:
        """Set the clock from the SNTPC server (real SNTP; 'host' or 'host:port') and report +TIME."""
        await self._ntp_sync(sfx(self.cfg["SNTPC"][3]))
        if "offset" in self.ntp:
            self.clock_offset = 0.0
            self.urc(self._time_line())

    # ================================================================== TIME (16)
    @command("+TIME", Form.EXEC, family="time", doc="Read the clock in the current format: OK, then the AEC +TIME:<TIME>")
    @command("+TIME", Form.WRITE, Int("FORMAT", 1, 3), Str("TIME", quoted=None, optional=True), family="time",
             doc="AT+TIME=<1 UTC seconds|2 NTP seconds|3 RFC 3339> reads in that format (it becomes the current "
                 "one): OK, then the AEC +TIME:<TIME>; with a value sets the clock")
    async def timec(self, ctx, fmt: int | None = None, val: Any = None) -> None:
        if fmt is None:
            fmt = self.time_format
        self.time_format = fmt
        if val is not None:
            arg = ctx.line.args[1]
            try:
                if fmt == 3:
                    if not (arg.quoted or arg.hexed):
                        raise ValueError
                    t = _dt.datetime.fromisoformat(sfx(arg_bytes(arg)).replace("Z", "+00:00"))
                    if t.tzinfo is None:
                        t = t.replace(tzinfo=_dt.timezone.utc)
                    secs = t.timestamp()
                else:
                    if arg.quoted or arg.hexed:
                        raise ValueError
                    secs = int(arg.text) - (NTP_EPOCH if fmt == 2 else 0)
            except ValueError:
                raise CmdError("param", message="bad time value") from None
            self.clock_offset = secs - time.time() - float(self.ntp.get("offset", 0.0))
            return
        self._time_report(ctx)

    def _time_report(self, ctx) -> None:
        # a query answers OK, then the AEC +TIME:<TIME> ("Time report"): the guide's 9.16.1.1 has no
        # response, only the AEC 9.16.2.1, and the AT Command Specification's example reads
        # AT+TIME=3, OK, +TIME:"2025-10-24T18:03:43.00Z"
        ctx.ok()
        self.urc(self._time_line())

    def _time_line(self) -> str:
        """+TIME:<now in the current format> (the AT+TIME answer and the AEC after SNTP)."""
        return f"+TIME:{self._time_value(self.module_time())}"

    def _time_value(self, now: float) -> str:
        """A module time in the current AT+TIME format (the guide's "system time format")."""
        if self.time_format == 1:
            return str(int(now))
        if self.time_format == 2:
            return str(int(now) + NTP_EPOCH)
        t = _dt.datetime.fromtimestamp(now, _dt.timezone.utc)
        return f'"{t.strftime("%Y-%m-%dT%H:%M:%S")}.{t.microsecond // 10000:02d}Z"'

    # ================================================================== RST (12)
    @command("+RST", Form.EXEC, family="rst", doc="Reset: OK, then +BOOT after the reboot")
    async def rst(self, ctx) -> None:
        ctx.ok()
        self.module.request_reboot(boot_delay=self.boot_delay)

    # ================================================================== FS (7)
    @command("+FS", Form.WRITE, Int("OP", 1, 4), Int("FILETYPE", 1, 2, optional=True),
             Str("FILENAME_OR_TSFRPROT", quoted=None, optional=True, min_len=1, max_len=32),
             Str("FILENAME", quoted=True, optional=True, min_len=1, max_len=32), Int("FILELENGTH", 1, 8192, optional=True),
             family="fs", doc="File system: AT+FS=4 info, =2,<type> list, =3,<type>,<name> delete, "
                              "=1,<type>,<prot>,<name>,<length> load (prot 1 XMODEM, 2 XMODEM-CRC, 3 XMODEM-1K, 4 YMODEM), "
                              "=1,<type>,4 YMODEM batch; type 1 certificate, 2 private key")
    async def fsc(self, ctx, op: int, typ: int | None, third: str | None, name: str | None, length: int | None) -> None:
        nargs = len(ctx.line.args)
        if op == 4:
            if nargs != 1:
                raise CmdError("param", param_kind="count", message="AT+FS=4 takes no more parameters")
            handles = 32 - sum(len(f.list()) for f in self.fs.values())
            ctx.info(f"+FS:4,{sum(f.free() for f in self.fs.values())},{handles}")
            return
        if typ is None:
            raise CmdError("param", param_kind="count", message="<FILETYPE> missing")
        store = self.fs[typ]
        if op == 2:
            if nargs != 2:
                raise CmdError("param", param_kind="count", message="AT+FS=2,<type>")
            for n, _ in store.list():
                ctx.info(f"+FS:2,{typ},{self.fmt(n)}")
            return
        if op == 3:
            if nargs != 3 or not (ctx.line.args[2].quoted or ctx.line.args[2].hexed):
                raise CmdError("param", param_kind="count" if nargs != 3 else None, message='AT+FS=3,<type>,"<name>"')
            fname = self._fs_name(store, text_arg(ctx, 2))
            try:
                store.delete(fname)
            except FsError:
                raise status(7, 2, "no such file") from None          # 7.2 File Not Found
            return
        # load: AT+FS=1,<type>,<prot>,"<name>",<length> (single) or AT+FS=1,<type>,4 (YMODEM batch)
        arg = ctx.line.args[2] if nargs > 2 else None
        if arg is None or arg.quoted or arg.hexed or not arg.text.strip().isdigit():
            raise CmdError("param", message="<TSFRPROT> must be 1-4")
        if arg.text.strip() not in ("1", "2", "3", "4"):
            raise status(7, 0, "<TSFRPROT> must be 1-4")        # 7.0 Unsupported File Transfer Protocol
        prot = int(arg.text)
        if nargs == 3:
            if prot != 4:
                raise CmdError("param", message="a batch load needs YMODEM (4)")
            fname = None
        elif nargs == 5 and name is not None and length is not None:
            fname = self._fs_name(store, text_arg(ctx, 3))
        else:
            raise CmdError("param", param_kind="count", message='AT+FS=1,<type>,<prot>,"<name>",<length>')
        files = await self._xmodem_receive(ctx, prot)
        if fname is not None:
            files = [(fname, files[0][1][:length])] if files else []
        if not files:
            raise self.fail(E_DATA, "no file received")
        for n, data in files:
            n = self._fs_name(store, n)
            if not valid_material(data):
                raise status(7, 3, f"{n!r} is not a PEM/DER certificate or key")   # 7.3 Invalid File Type
            try:
                store.write(n, data)
            except FsError as e:
                raise status(1, 3, str(e)) from None                               # 1.3 File System Error

    @staticmethod
    def _fs_name(store, name: str) -> str:
        try:
            store.path(name)
        except FsError:
            raise CmdError("param", message="bad file name") from None
        return name

    async def _xmodem_receive(self, ctx, prot: int) -> list[tuple[str | None, bytes]]:
        """Receive with XMODEM (1 checksum, 2 CRC-16, 3 1K) or YMODEM (4, batch): the module asks with
        NAK or 'C' every second until the first block; each good block is ACKed, a bad one NAKed; EOT
        ends a file. Gives up (E_DATA) when the host is silent for data_timeout seconds. Returns
        [(name from YMODEM block 0 or None, data)]; XMODEM data keeps its padding (the caller trims)."""
        crc = prot != 1
        ask = b"C" if crc else NAK
        files: list[tuple[str | None, bytes]] = []
        name, size, data, expect = None, None, bytearray(), 0 if prot == 4 else 1
        started = False
        eots = 0
        poll = min(1.0, self.data_timeout / 4)
        silent_since = time.monotonic()
        # leaving terminal mode the module prints '#' (the AT Command Specification's XMODEM+CRC
        # example: '#', then 'CC'...; public RNWF11 upload scripts wait for that '#')
        ctx.raw(b"#" + ask)
        while True:
            ev = await ctx.read_data(1, timeout=poll)
            if not (isinstance(ev, Data) and ev.reason == "length"):
                if time.monotonic() - silent_since >= self.data_timeout:
                    ctx.raw(CAN * 2)
                    raise self.fail(E_DATA, "the host fell silent during the file transfer")
                if not started or expect == 0:
                    ctx.raw(ask)                 # (YMODEM: also asks for the next file's block 0)
                continue
            silent_since = time.monotonic()
            head = ev.payload[0]
            if head == EOT[0]:
                if prot == 4 and eots == 0:      # YMODEM: NAK the first EOT, ACK the second
                    eots = 1
                    ctx.raw(NAK)
                    continue
                ctx.raw(ACK)
                files.append((name, bytes(data[:size] if size is not None else data)))
                if prot != 4:
                    return files
                name, size, data, expect, eots, started = None, None, bytearray(), 0, 0, False
                ctx.raw(ask)
                continue
            if head == CAN[0]:
                raise self.fail(E_DATA, "the host cancelled the transfer")
            if head not in (SOH[0], STX[0]) or (head == STX[0] and prot == 1):
                continue                         # noise between blocks
            blen = 128 if head == SOH[0] else 1024
            need = 2 + blen + (2 if crc else 1)
            ev = await ctx.read_data(need, timeout=self.data_timeout)
            if not (isinstance(ev, Data) and ev.reason == "length"):
                raise self.fail(E_DATA, "the host fell silent in a block")
            blk, inv, body, check = ev.payload[0], ev.payload[1], ev.payload[2:2 + blen], ev.payload[2 + blen:]
            good = blk ^ inv == 0xFF and (
                check == binascii.crc_hqx(body, 0).to_bytes(2, "big") if crc else check[0] == sum(body) & 0xFF)
            if not good:
                ctx.raw(NAK)
                continue
            if blk == (expect - 1) & 0xFF and started:
                ctx.raw(ACK)                     # a repeat of the block already taken
                continue
            if blk != expect & 0xFF:
                ctx.raw(CAN * 2)
                raise self.fail(E_DATA, "block out of sequence")
            started = True
            if prot == 4 and expect == 0:        # YMODEM block 0: "<name>\0<size> ..." (empty: end of batch)
                if not body.strip(b"\0"):
                    ctx.raw(ACK)
                    return files
                fname, _, rest = body.partition(b"\0")
                name = sfx(fname)
                try:
                    size = int(rest.split(b"\0")[0].split(b" ")[0] or b"0")
                except ValueError:
                    size = None
                expect = 1
                ctx.raw(ACK)
                ctx.raw(b"C")
                continue
            data += body
            if len(data) > 64 * 1024:
                ctx.raw(CAN * 2)
                raise self.fail(E_DATA, "file too large")
            expect += 1
            ctx.raw(ACK)

    # ================================================================== binary phases
    async def _binary(self, ctx, length: int) -> bytes:
        """The module prompts '#', then takes exactly ``length`` raw bytes ('+++' is data). A host
        silent for data_timeout seconds abandons it (the partial data is dropped)."""
        ctx.raw(b"#")
        ev = await ctx.read_data(length, idle=self.data_timeout)
        if not (isinstance(ev, Data) and ev.reason == "length" and len(ev.payload) == length):
            raise self.fail(E_DATA, "binary data incomplete (the host fell silent)")
        return ev.payload

    async def _payload(self, ctx, length: int, data: bytes | None) -> bytes:
        if data is not None:
            if len(data) != length:
                raise self.fail(E_DATA, "data does not match <LENGTH>")
            return data
        if length == 0:
            raise CmdError("param", message="<LENGTH> 0 without data")
        return await self._binary(ctx, length)

    # ================================================================== SOCKET (14)
    @command("+SOCKO", Form.WRITE, Int("PROTOCOL", 1, 2), Int("PROTOCOL_VERSION", choices=(4,), optional=True),
             family="socket", doc="Open a socket: 1 UDP, 2 TCP (IPv4) -> +SOCKO:<SOCK_ID>")
    async def socko(self, ctx, proto: int, ver: int | None = None) -> None:
        await SocketCommands.socko(self, ctx, proto)

    @command("+SOCKBL", Form.WRITE, Int("SOCK_ID", 1, 65535), Int("LCL_PORT", 0, 65535),
             Int("PEND_SKTS", 1, 10, optional=True), family="socket",
             doc="Bind to a local port and listen (TCP: +SOCKIND:<new id>,... per connection)")
    async def sockbl(self, ctx, sid: int, port: int, pend: int | None = None) -> None:
        if self._sock(sid).tls_conf is not None:
            # AT+SOCKTLS before AT+SOCKBL would make a TLS server socket: not emulated
            raise status(14, 6, "TLS listening sockets are not emulated")
        await SocketCommands.sockbl(self, ctx, sid, port)

    # (the guide's socket ids are 1-65535: an id no socket has is "no such socket", 14.4)
    @command("+SOCKCL", Form.WRITE, Int("SOCK_ID", 1, 65535), family="socket", doc="Close a socket")
    async def sockcl(self, ctx, sid: int) -> None:
        await SocketCommands.sockcl(self, ctx, sid)

    @command("+SOCKBR", Form.WRITE, Int("SOCK_ID", 1, 65535), Str("RMT_ADDR", quoted=True, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), family="socket",
             doc="Bind to a remote address: TCP connects (+SOCKIND or +SOCKERR); UDP sets the default destination")
    async def sockbr(self, ctx, sid: int, host: str, port: int) -> None:
        s = self._sock(sid)
        tls = None
        if s.proto == 2 and s.tls_conf is not None:
            tls = self._tls_context(s.tls_conf, text_arg(ctx, 1))      # SNI: the host connected to
        await SocketCommands.sockbr(self, ctx, sid, host, port)
        if tls is not None and s.connecting:
            # AT+SOCKTLS came first: the handshake follows the connect (+SOCKIND, then +SOCKTLS)
            s.tls_conf, s.tls_after_connect = None, tls

    @command("+SOCKLST", Form.EXEC, family="socket", doc="List sockets: +SOCKLST:<id>,<proto>,<rmt addr>,<rmt port>,<lcl port>")
    @command("+SOCKLST", Form.WRITE, Int("SOCK_ID", 1, 65535), family="socket")
    async def socklst(self, ctx, sid: int | None = None) -> None:
        await SocketCommands.socklst(self, ctx, sid)

    @command("+SOCKTLS", Form.WRITE, Int("SOCK_ID", 1, 65535), Int("TLS_CONF", 1, 2), family="socket",
             doc="Upgrade a TCP socket to TLS with configuration TLS_CONF: connected (or connecting): OK, then "
                 "+SOCKTLS or +SOCKERR; before AT+SOCKBR: OK, and the connect that follows makes the handshake")
    async def socktls(self, ctx, sid: int, conf: int) -> None:
        s = self._sock(sid, 2)
        if s.conn is None and not s.connecting and s.listener is None:
            self._socktls_before_bind(s, conf)
            return
        await SocketCommands.socktls(self, ctx, sid, conf)

    def _socktls_before_bind(self, s: Sock, conf: int) -> None:
        """AT+SOCKTLS on a TCP socket not bound yet (Microchip's AT Command Specification, example
        "Open a TLS client socket": AT+SOCKTLS, then AT+SOCKBR, +SOCKIND, +SOCKTLS): the
        configuration is checked now (its files must exist) and used by the next AT+SOCKBR."""
        self._tls_context(conf, "")
        s.tls_conf = conf

    def _sockerr(self, s: Sock, e: NetError) -> None:
        # the socket module's status codes (9.3): 14.6 Socket TLS Failed, 14.7 Socket Connect Failed
        if self.socks.get(s.id) is s:
            self.urc(f"+SOCKERR:{s.id},{6 if e.kind in ('tls', 'tls_verify') else 7}")

    @command("+SOCKWR", Form.WRITE, Int("SOCK_ID", 1, 65535), Int("LENGTH", 0, MAX_WRITE),
             Bytes("DATA", quoted=True, optional=True, max_len=MAX_WRITE), family="socket",
             doc="Send on a connected socket; without DATA the module prompts '#' and takes LENGTH raw bytes")
    async def sockwr(self, ctx, sid: int, length: int, data: bytes | None) -> None:
        s = self._sock(sid)
        self._check_sendable(s)
        await self._send_payload(sid, s, await self._payload(ctx, length, data))

    @command("+SOCKBM", Form.WRITE, Int("SOCK_ID", 1, 65535), Str("MCAST_ADDR", quoted=None, min_len=1, max_len=64),
             Int("MCAST_PORT", 1, 65535), family="socket",
             doc="Join a multicast group on a UDP socket bound to MCAST_PORT (address quoted or not, as the Harmony driver writes it)")
    async def sockbm(self, ctx, sid: int, group: str, port: int) -> None:
        await SocketCommands.sockbm(self, ctx, sid, text_arg(ctx, 1), port)

    @command("+SOCKWRTO", Form.WRITE, Int("SOCK_ID", 1, 65535), Str("RMT_ADDR", quoted=None, min_len=1, max_len=128),
             Int("RMT_PORT", 1, 65535), Int("LENGTH", 1, MAX_WRITE), Bytes("DATA", quoted=True, optional=True, max_len=MAX_WRITE),
             family="socket", doc="Send a UDP datagram to an address; without DATA: '#' prompt and LENGTH raw bytes")
    async def sockwrto(self, ctx, sid: int, host: str, port: int, length: int, data: bytes | None) -> None:
        await SocketCommands.sockwrto(self, ctx, sid, host, port, length, data)

    @command("+SOCKRD", Form.WRITE, Int("SOCK_ID", 1, 65535), Int("OUTPUT_MODE", 1, 2), Int("LENGTH", 1, 65535),
             family="socket", doc="Read and consume: mode 1 +SOCKRD:<id>,<n>,\"<data>\"; mode 2 +SOCKRD:<id>,<n>,# and the raw bytes, then OK")
    async def sockrd(self, ctx, sid: int, mode: int, length: int) -> None:
        await self._sock_read(ctx, sid, mode, length, consume=True)

    @command("+SOCKRDBUF", Form.WRITE, Int("SOCK_ID", 1, 65535), Int("OUTPUT_MODE", 1, 2), Int("LENGTH", 1, 65535),
             family="socket", doc="Read without consuming (peek): same output as +SOCKRD")
    async def sockrdbuf(self, ctx, sid: int, mode: int, length: int) -> None:
        await self._sock_read(ctx, sid, mode, length, consume=False)

    async def _sock_read(self, ctx, sid: int, mode: int, length: int, consume: bool) -> None:
        s = self._sock(sid)
        if s.proto == 2:
            if s.conn is None:
                data = b""
            elif consume:
                data = s.conn.read(length)
            else:
                data = s.conn.peek(length)
        else:
            item = (s.udp.recvfrom() if consume else (s.udp.rx[0] if s.udp.rx else None)) if s.udp is not None else None
            data = item[0][:length] if item else b""
        if mode == 1:
            ctx.info(f"+SOCKRD:{sid},{len(data)},{self.fmt(data)}")
        else:
            # then OK at once; the device answers a bare '#' (the hardware facts; the AVR/PIC
            # MCC driver enters raw mode only when '#' is the first byte of the answer), the guide
            # declares the count first (world option binary_read: guide)
            head = self.render_line(f"+SOCKRD:{sid},{len(data)},#") if self.binary_read == "guide" else "#"
            ctx.raw(head.encode() + data)
        if consume:
            if s.proto == 2:
                self._after_tcp_read(s, len(data))
            else:
                s.announced = False
                self._udp_data(s)

    def _after_tcp_read(self, s, n: int) -> None:
        """A read of n bytes: while the host is still reading what the last +SOCKRXT announced, no
        new +SOCKRXT (a host that reads an announcement in pieces would find stale ones queued);
        once it is read, data that came since is announced (the total). A host that stops reading
        before the end is reminded (the total left) after rxt_reminder seconds without a read."""
        if s.reminder is not None:
            s.reminder.cancel()
            s.reminder = None
        s.rx_left = max(0, s.rx_left - n)
        if s.rx_left and s.conn is not None and s.conn.available:
            s.reminder = asyncio.get_running_loop().call_later(self.rxt_reminder, self._remind, s)
            return
        s.rx_left = 0
        s.announced = False
        self._tcp_data(s)

    def _remind(self, s) -> None:
        s.reminder = None
        if self.socks.get(s.id) is s and s.conn is not None and s.conn.available:
            s.announced = False
            self._tcp_data(s)

    @command("+SOCKC", Form.EXEC, family="socket", doc="List the open sockets' ids: +SOCKC:<id>,<id>...")
    @command("+SOCKC", Form.WRITE, Int("SOCK_ID", 1, 65535), Int("ID", optional=True), Int("VAL", optional=True),
             family="socket", doc="Socket configuration: 1 SO_LINGER (0/1), 2 SO_NODELAY (0/1), 3 SO_KEEPALIVE (seconds, 0 off), "
                                  "4 SO_RCVBUF (1460-11680), 32 IP_TOS; reads +SOCKC:<ID>,<VAL>")
    async def sockc(self, ctx, sid: int | None = None, pid: int | None = None, val: int | None = None) -> None:
        if sid is None:
            ctx.info("+SOCKC:" + ",".join(str(i) for i in sorted(self.socks)))
            return
        s = self._sock(sid)
        opts = s.options
        for k, v in SOCK_OPTS.items():
            opts.setdefault(k, v[0])
        if _read_options(ctx, "+SOCKC:", {k: opts[k] for k in SOCK_OPTS}, pid, val, "unknown socket option"):
            return
        lo, hi = SOCK_OPTS[pid][1:]
        if not lo <= val <= hi:
            raise CmdError("param", message=f"option {pid} out of range")
        opts[pid] = val
        if not self._apply_sockopts(s):
            raise status(14, 9, "the host refused the option")     # 14.9 Socket Set Option Failed

    def _established(self, s: Sock) -> None:
        # options set with AT+SOCKC before the connection existed take effect when it is up
        if 3 in s.options:
            self._apply_sockopts(s)
        SocketCommands._established(self, s)

    def _apply_sockopts(self, s: Sock) -> bool:
        """Apply the +SOCKC options to the real TCP socket (when it exists: the next connect does too)."""
        import socket as _socket
        import struct
        conn, opts = s.conn, s.options
        if s.proto != 2 or conn is None or conn.closed:
            return True
        try:
            conn.set_option(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", int(bool(opts.get(1))), 0))
            conn.set_nodelay(bool(opts.get(2)))
            conn.set_keepalive(bool(opts.get(3)), idle=opts.get(3) or None)
            if opts.get(4):
                conn.set_option(_socket.SOL_SOCKET, _socket.SO_RCVBUF, int(opts[4]))
            conn.set_option(_socket.IPPROTO_IP, _socket.IP_TOS, int(opts.get(32, 0)))
        except NetError as e:
            log.info("socket options: %s", e)
            return False
        return True

    def _cfg_value(self, p, arg) -> Any:
        # a BSSID may be written bare (AT+WSTAC=5,<mac> in the Harmony driver)
        if p.name == "BSSID" and not (arg.quoted or arg.hexed):
            arg = type(arg)(arg.text.strip(), quoted=True)
        value = super()._cfg_value(p, arg)
        if p.name == "BSSID" and value and not _is_mac(sfx(value)):
            raise CmdError("param", message="<BSSID> must be a MAC address")
        return value

    # ================================================================== TLS (17)
    @command("+TLSC", Form.EXEC, family="tls", doc="List the TLS configurations: +TLSC:<CONF>,<CONF>")
    @command("+TLSC", Form.WRITE, Int("CONF", 1, 2), Int("ID", optional=True), Str("VAL", quoted=None, optional=True),
             family="tls", doc="TLS configuration CONF: 1 CA_CERT_NAME, 2 CERT_NAME, 3 PRI_KEY_NAME, 4 PRI_KEY_PASSWORD, "
                               "5 SERVER_NAME (SNI), 6 DOMAIN_NAME (verified), 7 CIPHER_SUITE (1-2), 40 PEER_AUTH, "
                               "41 PEER_DOMAIN_VERIFY; reads +TLSC:<ID>,<VAL>")
    async def tlsc(self, ctx, idx: int | None = None, pid: int | None = None, val: Any = None) -> None:
        if idx is None:
            ctx.info("+TLSC:" + ",".join(str(i) for i in self.TLS_INDEXES))
            return
        self._cfg(ctx, "TLSC", self.TLSC, self.tls_confs[idx], pid, val, arg_index=2)

    def _tls_context(self, idx: int, default_name: str):
        from atemu.net.tls import client_context
        c = self.tls_confs.get(idx)
        if c is None:
            raise CmdError("param", message="no such TLS configuration")

        def load(typ: int, name: bytes, ca: bool = False) -> bytes | None:
            if not name:
                return None
            try:
                return self.fs[typ].read(sfx(name))
            except FsError:
                # 17.0 CA Cert Missing, 17.3 Key Pair Incomplete
                raise status(17, 0 if ca else 3, f"file {sfx(name)!r} not in the file system") from None

        verify = bool(c[40])
        cert, key, password = self._tls_identity(c, load)
        try:
            tctx = client_context(ca=load(1, c[1], ca=True), cert=cert, key=key, key_password=password,
                                  verify=verify, check_hostname=verify and bool(c[41]), **self._cipher_options(c))
        except NetError as e:
            raise self.fail(E_CERT, str(e)) from None
        name = sfx(c[6]) or sfx(c[5]) or default_name
        return tctx, name

    def _tls_identity(self, c: dict, load) -> tuple[Any, Any, Any]:
        """(client certificate, key, key password) of TLS configuration ``c``: the FS files it names
        (rnwf11 can take them from its ECC608 instead)."""
        return load(1, c[2]), load(2, c[3]), c[4] or None

    # ================================================================== WSCN / WSTA / WAP tables
    # the shared handlers, declared again for the guide's parameter ids (describe, =?)
    @command("+WSCNC", Form.EXEC, family="scan", doc="Read the scan configuration")
    @command("+WSCNC", Form.WRITE, Str("ID", quoted=False, min_len=1, max_len=4), Str("VAL", quoted=None, optional=True),
             family="scan",
             doc="1 CHANNEL (0 all), 2 ACT_SLOT_TIME ms, 3 PASV_SLOT_TIME ms, 4 NUM_SLOTS, 5 PROBES_PER_SLOT, "
                 "6 RSSI_THRESH (0 none), 7 SEC_FILTER (stored), 8 ASYNC_NOTIFY (0: no +WSCNIND), "
                 "10 FILT_LIST (SSID filter 10.0-10.3), 20 SCAN_RESULTS (read-only, the last scan's best 20.0-20.7)")
    async def wscnc(self, ctx, pid: str | None = None, val: Any = None) -> None:
        if pid is None:
            await WlanCommands.wscnc(self, ctx, None, None)
            self._wscnc_list(ctx)
            return
        base, _, sub = pid.strip().partition(".")
        if base in ("7", "8", "10", "20"):
            self._wscnc_extra(ctx, int(base), sub, val)
            return
        if sub or not base.isdigit():
            raise CmdError("param", message="unknown parameter id")
        await WlanCommands.wscnc(self, ctx, int(base), val)

    def _wscn_state(self) -> dict:
        """The guide's WSCNC ids beyond the scan timing (9.19.1.1: 7 SEC_FILTER, 8 ASYNC_NOTIFY,
        10 SSID filter list 10.0-10.3, 20 the last scan's results 20.0-20.7)."""
        st = getattr(self, "_wscn_extra", None)
        if st is None:
            st = self._wscn_extra = {7: 0x77, 8: 1, 10: [], 20: []}
        return st

    def _wscnc_list(self, ctx, only: int | None = None) -> None:
        st = self._wscn_state()
        for pid in (7, 8, 10, 20) if only is None else (only,):
            if pid in (7, 8):
                ctx.info(f"+WSCNC:{pid},{st[pid]}")
            elif pid == 10:
                for i, ssid in enumerate(st[10]):
                    ctx.info(f"+WSCNC:10.{i},{self.fmt(ssid)}")
            else:
                for i, r in enumerate(st[20]):
                    ctx.info(f"+WSCNC:20.{i},{r}")

    def _wscnc_extra(self, ctx, pid: int, sub: str, val: Any) -> None:
        st = self._wscn_state()
        if sub and (pid in (7, 8) or not sub.isdigit() or int(sub) > (3 if pid == 10 else 7)):
            raise CmdError("param", message="unknown parameter id")
        idx = int(sub) if sub else None
        if val is None:
            if idx is None:
                self._wscnc_list(ctx, pid)
            elif idx < len(st[pid]):
                ctx.info(f"+WSCNC:{pid}.{idx},{self.fmt(st[pid][idx]) if pid == 10 else st[pid][idx]}")
            return
        if pid == 20:
            raise self.fail(E_STATE, "SCAN_RESULTS is read-only")
        if self._scanning:
            raise self.fail(E_STATE, "scan in progress")
        arg = ctx.line.args[1]
        if pid in (7, 8):
            v = self._cfg_value(_P("SEC_FILTER" if pid == 7 else "ASYNC_NOTIFY", "int", 0,
                                   0, 0x7F if pid == 7 else 1), arg)
            st[pid] = v
            return
        ssid = sfx(self._cfg_value(_P("FILT_LIST", "str", b"", max_len=32), arg))
        if idx is None:
            # "10,<ssid>" adds an entry, "10,\"\"" removes them all (the guide's example 9.19.3)
            if not ssid:
                st[10].clear()
            elif len(st[10]) >= 4:
                raise CmdError("param", message="SSID filter list full (10.0-10.3)")
            else:
                st[10].append(ssid)
        elif ssid:
            if idx >= len(st[10]):
                raise CmdError("param", message="no such filter entry")
            st[10][idx] = ssid
        elif idx < len(st[10]):
            del st[10][idx]                      # "10.<n>,\"\"" removes that entry

    @command("+WSTAC", Form.EXEC, family="wlan", doc="Read the station configuration")
    @command("+WSTAC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="wlan",
             doc="1 SSID, 2 SEC_TYPE (0 open, 2 WPA2 mixed, 3 WPA2, 4 WPA3 transition, 5 WPA3, 6-9 Enterprise), "
                 "3 CREDENTIALS, 4 CHANNEL (0 any), 5 BSSID, 7 CONN_TIMEOUT ms, 8 NETIF_IDX; set while idle")
    async def wstac(self, ctx, pid: int | None = None, val: Any = None) -> None:
        await WlanCommands.wstac(self, ctx, pid, val)

    @command("+WAPC", Form.EXEC, family="wlan", doc="Read the soft-AP configuration")
    @command("+WAPC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="wlan",
             doc="1 SSID, 2 SEC_TYPE (0, 2-5), 3 CREDENTIALS, 4 CHANNEL (1-13), 5 HIDDEN, 7 L2_ONLY, 8 NETIF_IDX; "
                 "set while the soft-AP is off")
    async def wapc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        await WlanCommands.wapc(self, ctx, pid, val)

    # ================================================================== MQTT (8)
    @command("+MQTTC", Form.EXEC, family="mqtt", doc="Read the MQTT configuration (password not shown)")
    @command("+MQTTC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="mqtt",
             doc="1 BROKER_ADDR, 2 BROKER_PORT, 3 CLIENT_ID, 4 USERNAME, 5 PASSWORD, 6 KEEP_ALIVE, 7 TLS_CONF_IDX (0 plain), "
                 "8 PROTOCOL_VERSION (3 = 3.1.1, 5), 9 READ_THRESHOLD (0 off)")
    async def mqttc(self, ctx, pid: int | None = None, val: Any = None) -> None:
        await MqttCommands.mqttc(self, ctx, pid, val)

    def _mqtt_options(self) -> dict:
        c = self.cfg["MQTTC"]
        opts: dict = {"protocol": 5 if c[8] == 5 else 4}
        if self.lwt is not None:
            qos, retain, topic, msg = self.lwt
            opts["will"] = (topic, msg, qos, bool(retain))
        if c[8] == 5:                               # MQTT 5: the selected properties (mqtt5.py)
            opts.update(properties=self._tx_props("CONNECT"), on_properties=self._mqtt_received,
                        will_properties=self.lwt_props if self.lwt is not None else [])
            self.prop_rx = {}                       # a new connection: nothing received yet
        return opts

    @command("+MQTTLWT", Form.WRITE, Int("QOS", 0, 2), Int("RETAIN", 0, 1),
             Str("TOPIC_NAME", quoted=True, min_len=1, max_len=256), Bytes("MESSAGE", quoted=True, max_len=1024),
             family="mqtt", doc="Last will: sent by the broker if the connection is lost")
    async def mqttlwt(self, ctx, qos: int, retain: int, topic: str, msg: bytes) -> None:
        if self.mqtt_state != 0:
            raise self.fail(E_STATE, "set the will before connecting")
        self.lwt = (qos, retain, _topic(ctx, 2, wildcards=False), msg)
        self.lwt_props = self._tx_props("WILL")     # the will's properties are those selected now

    @command("+MQTTSUB", Form.WRITE, Str("TOPIC_NAME", quoted=True, min_len=1, max_len=256),
             Int("MAX_QOS", 0, 2, optional=True, default=0), family="mqtt",
             doc="Subscribe: OK, then +MQTTSUB:<REASON_CODE>, the SUBACK's granted QoS (0-2) or its refusal "
                 "(128 and up; 128 also when no SUBACK came)")
    async def mqttsub(self, ctx, topic: str, qos: int) -> None:
        await MqttCommands.mqttsub(self, ctx, topic, qos)

    async def _subscribe(self, s, topic: str, qos: int, properties=None) -> None:
        try:
            granted = await s.subscribe([(topic, qos)], timeout=self.ack_timeout, properties=properties)
            code = granted[0] if granted else 128
        except NetError as e:
            log.info("subscribe failed: %s", e)
            code = 128
        finally:
            self._sub_pending = False
        if code < 0x80:
            self.mqtt_subs[topic] = code
        if self.mqtt is s:
            self.urc(f"+MQTTSUB:{code}")

    @command("+MQTTUNSUB", Form.WRITE, Str("TOPIC_NAME", quoted=None, min_len=1, max_len=256), family="mqtt",
             doc="Unsubscribe: OK, then +MQTTUNSUB:0 (or 15: no subscription existed)")
    async def mqttunsub(self, ctx, topic: str) -> None:
        await MqttCommands.mqttunsub(self, ctx, topic)

    async def _unsubscribe(self, s, topic: str, properties=None) -> None:
        known = topic in self.mqtt_subs
        code = 15                                # the guide's "No subscription existed"
        if known:
            try:
                await s.unsubscribe([topic], timeout=self.ack_timeout, properties=properties)
                self.mqtt_subs.pop(topic, None)
                code = 0
            except NetError:
                code = 128
        if self.mqtt is s:
            self.urc(f"+MQTTUNSUB:{code}")

    async def _publish(self, s, topic: str, payload: bytes, qos: int, retain: bool, properties=None) -> None:
        try:
            mid = await s.publish(topic, payload, qos=qos, retain=retain, timeout=self.ack_timeout, properties=properties)
        except NetError as e:
            log.info("publish failed: %s", e)
            self.urc(f"+MQTTPUBERR:{e.mid or 0}")      # the failed publish's message id (0: it got none)
            return
        if qos == 1:
            self.urc(f"+MQTTPUBACK:{mid}")
        elif qos == 2:
            self.urc(f"+MQTTPUBCOMP:{mid}")

    def _mqtt_message(self, topic: str, payload: bytes, qos: int, retain: bool, mid: int) -> None:
        limit = self.cfg["MQTTC"][9]
        head = f"+MQTTSUBRX:0,{qos},{int(bool(retain))},{self.fmt(topic)}"
        if limit and len(payload) > limit:
            key = (mid or 0) if (mid or 0) not in self.mqtt_held else max(self.mqtt_held) + 1
            if len(self.mqtt_held) >= 16:          # the module's buffer: the oldest unread message goes
                self.mqtt_held.pop(min(self.mqtt_held))
            self.mqtt_held[key] = (topic, payload)
            self.urc(f"{head},{key},{len(payload)}")
            return
        self.urc(f"{head},{self.fmt(payload)}")

    @command("+MQTTSUBRD", Form.WRITE, Str("TOPIC_NAME", quoted=True, min_len=1, max_len=256), Int("MSG_ID", 0, 65535),
             Int("LENGTH", 1, 4096), family="mqtt",
             doc="Read (part of) a message announced by the +MQTTSUBRX notification: +MQTTSUBRD:<length>,\"<data>\"")
    async def mqttsubrd(self, ctx, topic: str, mid: int, length: int) -> None:
        held = self.mqtt_held.get(mid)
        if held is None or held[0] != text_arg(ctx, 0):
            raise self.fail(E_STATE, "no such message")
        chunk, rest = held[1][:length], held[1][length:]
        if rest:
            self.mqtt_held[mid] = (held[0], rest)
        else:
            del self.mqtt_held[mid]
        ctx.info(f"+MQTTSUBRD:{len(chunk)},{self.fmt(chunk)}")

    @command("+MQTTSUBLST", Form.EXEC, family="mqtt", doc="List subscriptions: +MQTTSUBLST:\"<topic>\",<qos>")
    async def mqttsublst(self, ctx) -> None:
        for t, q in self.mqtt_subs.items():
            ctx.info(f"+MQTTSUBLST:{self.fmt(t)},{q}")

    # ================================================================== NETIF (9)
    @command("+NETIFC", Form.EXEC, family="netif", doc="List the interfaces: +NETIFC:<IF>,<IF>")
    @command("+NETIFC", Form.WRITE, Int("IF", 0, 1), Int("ID", optional=True), Str("VAL", quoted=None, optional=True),
             family="netif", doc="Interface IF (0 station, 1 soft-AP): 1 NAME, 2 ETHER (MAC), 3 HOSTNAME, 10 DHCPC_EN, "
                                 "11 DHCP lease start, 12 lease end (time in the AT+TIME format), 13 DHCP server, "
                                 "40 IPv4 address/prefix, 41 gateway, 61 IPv6 link-local")
    async def netifc(self, ctx, iface: int | None = None, pid: int | None = None, val: Any = None) -> None:
        from .profile import MAC
        if iface is None:
            ctx.info("+NETIFC:0,1")             # the guide's list response +NETIFC:<IF>,<IF>
            return
        lease = self._lease() if iface == 0 else None
        mac = MAC if iface == 0 else _ap_mac(MAC)
        if iface == 0:
            addr = f"{self.sta_ip}/{_prefix(lease.netmask)}" if self.sta_ip and lease else \
                (self.static_ip if not self.dhcpc else "0.0.0.0/0")
        else:
            addr = "192.168.1.1/24" if self.ap_on else "0.0.0.0/0"
        leased = lease is not None and self.dhcpc and self.lease_at is not None
        vals = {1: f'"wlan{iface}"', 2: f'"{mac}"', 3: self.fmt(self.hostname), 10: str(int(self.dhcpc)),
                11: self._time_value(self.lease_at) if leased else "0",          # 0: no lease (README)
                12: self._time_value(self.lease_at + LEASE_SECONDS) if leased else "0",
                13: f'"{lease.gateway if lease and self.dhcpc else "0.0.0.0"}"', 40: f'"{addr}"',
                41: f'"{lease.gateway if lease else "0.0.0.0"}"', 61: f'"{_link_local(mac)}"'}
        if _read_options(ctx, "+NETIFC:", vals, pid, val, "unknown interface parameter"):
            return
        if iface != 0 or pid not in (3, 10, 40):
            raise self.fail(E_STATE, "read-only parameter")
        arg = ctx.line.args[2]
        if pid == 10:
            if arg.quoted or arg.hexed or arg.text.strip() not in ("0", "1"):
                raise CmdError("param", message="DHCPC_EN is 0 or 1")
            self.dhcpc = arg.text.strip() == "1"
            return
        b = arg_bytes(arg)
        if pid == 3:
            if not b or len(b) > 16:
                raise CmdError("param", message="bad host name")
            self.hostname = b
            return
        if self.dhcpc or self.sta_state != 0:
            raise self.fail(E_STATE, "a static address needs DHCPC_EN 0 and an idle station")
        try:
            net = ipaddress.IPv4Interface(sfx(b) if "/" in sfx(b) else sfx(b) + "/24")
        except ValueError:
            raise CmdError("param", message="not an IPv4 address") from None
        self.static_ip = str(net.with_prefixlen)

    def _lease(self):
        if self.sta_state != 2 or self.sta_ap is None:
            return None
        return wifi.Lease.from_ap(self.sta_ap)

    # ================================================================== WSCN (19)
    @command("+WSCN", Form.WRITE, Int("ACT_PASV", 0, 1), family="scan",
             doc="Scan (0 passive, 1 active) with the +WSCNC settings (1 CHANNEL, 2 ACT_SLOT_TIME, 3 PASV_SLOT_TIME, "
                 "4 NUM_SLOTS, 5 PROBES_PER_SLOT, 6 RSSI_THRESH): +WSCNIND per AP, then +WSCNDONE:<count>")
    async def wscn(self, ctx, active: int) -> None:
        if self._scanning:
            raise self.fail(E_BUSY, "scan in progress")
        self._scanning = True
        self.module.spawn(self._rnwf_scan(bool(active)))

    async def _rnwf_scan(self, active: bool) -> None:
        try:
            c = self.cfg["WSCNC"]
            channels = 1 if c[1] else REG_DOMAINS.get(sfx(self.cfg["WIFIC"][10]), 13)
            # slot time x slots on each channel scanned (capped: the emulated radio need not be slow)
            await asyncio.sleep(min(c[2 if active else 3] * c[4] * channels / 1000.0, 3.0))
            aps = wifi.scan(self.module.world, channel=c[1] or None, include_hidden=True)
            st = self._wscn_state()
            found = []
            for ap in aps:
                if ap is getattr(self, "_own_ap", None) or not self._channel_allowed(ap.channel) \
                        or (c[6] and ap.rssi < c[6]):
                    continue
                name = "" if ap.hidden else ap.ssid
                if st[10] and name not in st[10]:           # WSCNC 10: only the SSIDs of the filter list
                    continue
                found.append(f'{ap.rssi},{self.REPORT_SEC.get(ap.security, 0)},{ap.channel},'
                             f'"{ap.bssid.upper()}",{self.fmt(name)}')
            st[20] = found[:8]                              # WSCNC 20: the best results (aps come strongest first)
            lines = [f"+WSCNIND:{r}" for r in found] if st[8] else []   # WSCNC 8 ASYNC_NOTIFY 0: no +WSCNIND
            self.urc_batch(lines + [f"+WSCNDONE:{len(found)}"])
        finally:
            self._scanning = False

    # ================================================================== WSTA (20), ASSOC (22)
    @command("+WSTA", Form.EXEC, family="wlan", doc="Station state: +WSTA:<0|1>")
    async def wsta_read(self, ctx) -> None:
        ctx.info(f"+WSTA:{1 if self.sta_state == 2 else 0}")

    def _aec_sta_error(self, code: int) -> None:
        # the WSTA module's status code for any failed association (9.3: 20.3 STA Connection Failed)
        self.urc("+WSTAERR:3")

    def _sta_eap_credentials(self, sec: str, cred: str) -> tuple[str | None, str]:
        # enterprise security (SEC_TYPE 6-9): the guide's WSTAC has one CREDENTIALS string, written
        # "<identity>:<password>" (atemu's choice; README)
        if sec == "wpa2-enterprise":
            identity, sep, password = cred.partition(":")
            return (identity, password) if sep else (None, cred)
        return None, cred

    def _connack_code(self, session, rc: int) -> int:
        # the guide's +MQTTCONNACK return codes are MQTT 5 reason codes, also for a 3.1.1 broker's
        # refusals (1 protocol version, 2 client id, 3 server unavailable, 4 user/password, 5 not authorized)
        return {1: 132, 2: 133, 3: 136, 4: 134, 5: 135}.get(rc, rc)

    def _aec_link_up(self, ap) -> None:
        self.assoc_count += 1
        self.urc(f'+WSTALU:{self.assoc_count},"{ap.bssid.upper()}",{ap.channel}')

    def _aec_got_ip(self, ip: str) -> None:
        from .profile import MAC
        self.lease_at = self.module_time() if self.dhcpc else None
        if not self.dhcpc:                   # NETIFC 10 = 0: the static address of NETIFC 40
            ip = self.sta_ip = self.static_ip.split("/")[0]
        if self.ipv6_aip:
            self.urc(f'+WSTAAIP:{self.assoc_count},"{_link_local(MAC)}"')
        self.urc(f'+WSTAAIP:{self.assoc_count},"{ip}"')
        if self.cfg["SNTPC"][1]:
            self.module.spawn(self._sntp())

    def _aec_link_down(self) -> None:
        self.urc(f"+WSTALD:{self.assoc_count}")

    @command("+ASSOC", Form.WRITE, Int("ASSOC_ID", 1, 65535), family="assoc", doc="Report one association (22.0 if none has that id)")
    @command("+ASSOC", Form.EXEC, family="assoc",
             doc='Report the associations: OK, then one AEC each: +ASSOC:<id>,<0 the peer is an AP|1 a station>,"<peer MAC>",<RSSI>')
    async def assoc(self, ctx, aid: int | None = None) -> None:
        # the guide lists +ASSOC under the module's AECs, and the OOB demo completes AT+ASSOC on
        # "+ASSOC:" rather than on OK: the reports follow the OK
        lines = []
        if self.sta_state == 2 and self.sta_ap is not None:
            lines.append((self.assoc_count, f'+ASSOC:{self.assoc_count},0,"{self.sta_ap.bssid.upper()}",{self.sta_ap.rssi}'))
        for i, mac in sorted(self.ap_stations.items()):
            lines.append((i, f'+ASSOC:{i},1,"{mac}",-40'))
        if aid is not None:
            lines = [x for x in lines if x[0] == aid]
            if not lines:
                raise status(22, 0, f"no association {aid}")       # 22.0 Association Not Found
        ctx.ok()
        for _, line in lines:
            self.urc(line)

    # ================================================================== SI (23), DI (26)
    @command("+SI", Form.EXEC, family="si", doc="System information: +SI:<uptime seconds>")
    @command("+SI", Form.WRITE, Int("FILTER", 0, 0x0F), family="si",
             doc="+SI:<uptime>, then per FILTER bit: 0x01 +SIMSTAT/+SIMERR (Wi-Fi memory), 0x02 +SIWPKTS "
                 "(packets), 0x04 +SIHEAP/+SIHERR (heap), 0x08 +SISTACK (stack)")
    async def si(self, ctx, mask: int = 0) -> None:
        import sys
        if mask & ~self.SI_FILTERS:
            raise CmdError("param", message="filter bit not supported")
        ctx.info(f"+SI:{int(time.monotonic() - self.booted_at)}")
        ctx.ok()
        blocks = sys.getallocatedblocks()       # the emulator's own heap stands in for the module's
        if mask & 0x01:
            # +SIMSTAT:<TYPE>,<ALLOC>,<FREE>,<ALLOC_SZ>,<FREE_SZ> per pool: 0 memory, 1 config,
            # 2/3 high priority TX/RX, 4/5 normal priority TX/RX (the packet counts stand in for the buffers)
            tx, rx = self.pkts
            pools = [(len(self.socks) + 1, 0, 2048 * (len(self.socks) + 1), 0), (1, 0, 512, 0),
                     (0, 0, 0, 0), (0, 0, 0, 0), (tx, tx, tx * 1536, tx * 1536), (rx, rx, rx * 1536, rx * 1536)]
            for typ, (a, f, asz, fsz) in enumerate(pools):
                self.urc(f"+SIMSTAT:{typ},{a},{f},{asz},{fsz}")
            self.urc("+SIMERR:0")
        if mask & 0x02:
            self.urc(f"+SIWPKTS:{self.pkts[0]},{self.pkts[1]}")
        if mask & 0x04:
            self.urc(f"+SIHEAP:{blocks},{max(0, blocks - 1000)},{blocks * 64},{max(0, blocks - 1000) * 64},{blocks * 64}")
            self.urc("+SIHERR:0")
        if mask & 0x08:
            self.urc("+SISTACK:1024,8192,2048")

    async def _tcp_send(self, s, payload: bytes) -> None:
        await SocketCommands._tcp_send(self, s, payload)
        self.pkts[0] += 1

    def _tcp_data(self, s) -> None:
        announcing = self.socks.get(s.id) is s and not s.announced and s.conn is not None and s.conn.available
        if announcing:
            self.pkts[1] += 1
        SocketCommands._tcp_data(self, s)
        if announcing:
            s.rx_left = s.conn.available        # what this +SOCKRXT told the host

    @command("+DI", Form.EXEC, family="di", doc="Device information: 1 DEVICE_ID, 14 NUM_IMAGES, 15.n IMAGE_INFO")
    @command("+DI", Form.WRITE, Int("ID"), family="di")
    async def di(self, ctx, pid: int | None = None) -> None:
        vals = {1: [0x29C70053], 14: [len(IMAGES)]}
        lines = {k: [f"+DI:{k}," + ",".join(self.num(v) for v in vs)] for k, vs in vals.items()}
        lines[15] = [f"+DI:15.{i}," + ",".join(self.num(v) for v in img) for i, img in enumerate(IMAGES)]
        if pid is not None and pid not in lines:
            raise CmdError("param", message="unknown parameter id")
        for k in ([pid] if pid is not None else lines):
            for line in lines[k]:
                ctx.info(line)

    @command("N", Form.WRITE, Int("BASE", choices=(10, 16)), family="general",
             doc="Number system of integers the module prints where the guide allows it (ATN16: hexadecimal, +DI)")
    async def atn(self, ctx, base: int) -> None:
        self.number_base = base

    def num(self, v: int) -> str:
        return f"0x{v:08x}" if self.number_base == 16 else str(v)


#: the two flash images +DI reports: <SEQ_NUM>,<VERSION>,<SRC_ADDR> (the guide's example, then a second bank)
IMAGES = [(0xFFEEDDCF, 0xFF010200, 0x60000000)]


def _link_local(mac: str) -> str:
    """The IPv6 link-local address derived from a MAC (modified EUI-64), upper case like the module."""
    b = bytearray(int(x, 16) for x in mac.split(":"))
    b[0] ^= 0x02
    eui = bytes(b[:3]) + b"\xff\xfe" + bytes(b[3:])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui)).upper()


def _prefix(netmask: str) -> int:
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError:
        return 24


def _ap_mac(mac: str) -> str:
    last = (int(mac[-2:], 16) + 1) & 0xFF
    return f"{mac[:-2]}{last:02X}"


def _is_mac(text: str) -> bool:
    parts = text.split(":")
    return len(parts) == 6 and all(len(x) == 2 and all(c in "0123456789abcdefABCDEF" for c in x) for x in parts)
