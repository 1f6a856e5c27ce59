"""Microchip family WLAN: scanning, station, soft-AP, provisioning over TCP."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

from atemu import wifi
from atemu.grammar import Form, Int, ParamError, Str, bind
from atemu.module import Ctx
from atemu.net.errors import NetError
from atemu.profile import CmdError, command
from atemu.world import AccessPoint

from .common import (E_STATE, E_NORES, E_BUSY, WSTAERR_NO_AP, WSTAERR_AUTH, WSTAERR_SECURITY,
                     REPORT_SEC, MAC, sfx, log, text_arg)

AP_GATEWAY = "192.168.1.1"      # the soft-AP's own address; its DHCP server leases 192.168.1.<99 + ASSOC_ID>


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


class WlanCommands:
    """Mixin of :class:`MicrochipWinc`: scans, station link, soft-AP and provisioning."""

    #: commands accepted over the provisioning TCP link
    PROV_COMMANDS = ("+WSTAC", "+WSCNA", "+WSCNP", "+WPROV")
    #: the WPROVC id of the provisioning port
    PROV_PORT_ID = 3

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
            ssid = text_arg(ctx, 1)
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
                if ap is getattr(self, "_own_ap", None):
                    continue
                name = b"" if (ap.hidden and not ssid) else ap.ssid.encode("utf-8", "surrogateescape")
                emit(f"+WSCNIND:{ap.rssi},{REPORT_SEC.get(ap.security, 0)},{ap.channel},\"{ap.bssid.upper()}\",{self.fmt(name) if name else '[]'}")
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
            ctx.info(f"+WSTA:1,1,{self.fmt(ap.ssid)},{ap.rssi},{REPORT_SEC.get(ap.security, 0)}")
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
        sec = self.STA_SEC[c[2]]
        cred = sfx(c[3])
        if sec == "wep" and "*" in cred:
            cred = cred.split("*", 1)[1]
        p5 = self.WSTAC.get(5)
        bssid = sfx(c[5]) if p5 is not None and p5.name == "BSSID" and c.get(5) else None
        identity, cred = self._sta_eap_credentials(sec, cred)
        res, ap = wifi.join(self.module.world, ssid, cred, sec, bssid=bssid, identity=identity)
        if res == wifi.JoinResult.OK and ((c[4] not in (0, 255) and ap.channel != c[4])
                                          or not self._channel_allowed(ap.channel)):
            res = wifi.JoinResult.NO_AP
        assoc = None
        if res == wifi.JoinResult.OK:
            # through the core, so a soft AP of any profile sees us (and its DHCP server leases us)
            station = wifi.Station(MAC.lower(), "", self._sta_link_lost)
            assoc = await wifi.associate(self.module.world, ap, station)
            if assoc is None:                 # an emulated module's soft AP turned us away
                res = wifi.JoinResult.SECURITY_MISMATCH
            else:
                self._sta_station = (ap, station)
        if res != wifi.JoinResult.OK:
            self.sta_state = 0
            code = {wifi.JoinResult.NO_AP: WSTAERR_NO_AP, wifi.JoinResult.WRONG_PASSWORD: WSTAERR_AUTH}.get(res, WSTAERR_SECURITY)
            self._aec_sta_error(code)
            return
        self.sta_ap = ap
        self.sta_state = 2
        self._aec_link_up(ap)
        try:
            await asyncio.sleep(0.05)
            if self.sta_state != 2 or self.sta_ap is not ap:
                return
            self.sta_ip = (assoc.lease or wifi.Lease.from_ap(ap)).ip
            self._aec_got_ip(self.sta_ip)
            while self.sta_state == 2:
                await wifi.air_change(self.module.world)     # no polling: the world says when the air changes
                if self.sta_state == 2 and not wifi.on_air(self.module.world, ap):
                    self._sta_task = None
                    self._stop_sta(silent=False)
                    return
        except asyncio.CancelledError:
            # the module stops or reboots while associated: a hosted soft AP hears we left
            # (_stop_sta already did it when it is the one cancelling us)
            assoc_, self._sta_station = getattr(self, "_sta_station", None), None
            if assoc_ is not None:
                wifi.disassociate(self.module.world, assoc_[0], assoc_[1])
            raise

    def _channel_allowed(self, channel: int) -> bool:
        """May the radio use this channel (a dialect's regulatory domain)?"""
        return True

    def _sta_eap_credentials(self, sec: str, cred: str) -> tuple[str | None, str]:
        """(EAP identity, password) from the configured credentials (a dialect with enterprise
        security says how they are written); default: no identity."""
        return None, cred

    # the station's AECs (a family dialect words them its own way)
    def _aec_sta_error(self, code: int) -> None:
        self.urc(f"+WSTAERR:{code}")

    def _aec_link_up(self, ap) -> None:
        self.urc(f'+WSTALU:1,"{ap.bssid.upper()}",{ap.channel}')

    def _aec_got_ip(self, ip: str) -> None:
        self.urc(f'+WSTAAIP:1,"{ip}"')
        server = self.cfg["WSTAC"].get(12)
        if server:
            self.module.spawn(self._ntp_sync(sfx(server)))

    def _aec_link_down(self) -> None:
        self.urc("+WSTALD:1")

    async def _ntp_sync(self, server: str) -> None:
        """Set the module clock from the WSTAC NTP server (real SNTP; 'host' or 'host:port')."""
        from atemu.net.sntp import sntp_query
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

    def _stop_sta(self, silent: bool, reason: int = wifi.REASON_LEAVING) -> None:
        was = self.sta_state
        self.sta_state = 0
        self.sta_ap = None
        self.sta_ip = None
        if self._sta_task is not None and self._sta_task is not asyncio.current_task():
            self._sta_task.cancel()
        self._sta_task = None
        assoc, self._sta_station = getattr(self, "_sta_station", None), None
        if assoc is not None:                 # a hosted soft AP (any profile) hears we left
            wifi.disassociate(self.module.world, assoc[0], assoc[1], reason)
        if was == 2 and not silent:
            self._aec_link_down()

    def _sta_link_lost(self, ap, reason: int) -> None:
        """(atemu.wifi station callback) the soft AP we are on stopped or dropped us."""
        if self.sta_state == 2 and self.sta_ap is ap:
            self._stop_sta(silent=False, reason=reason)

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
        self._raise_ap()

    def _check_ap_config(self) -> None:
        c = self.cfg["WAPC"]
        cred = c[3]
        if c[2] == 1:
            key = cred.split(b"*", 1)[1] if b"*" in cred else cred
            if len(key) not in (5, 13, 10, 26):
                raise self.fail(E_STATE, "WEP key must be 5/13 ASCII or 10/26 hex characters")
        elif c[2] not in (0, 1) and not 8 <= len(cred) <= 63:
            raise self.fail(E_STATE, "WPA passphrase must be 8..63 characters")

    def _raise_ap(self) -> None:
        """Put the soft-AP on the shared world's air: stations of any emulated module scan and join it
        (atemu.wifi), and we see them (+WAPSC/+WAPAIP, +WAPSD)."""
        c = self.cfg["WAPC"]
        sec = self.AP_SEC[c[2]]
        cred = sfx(c[3])
        if sec == "wep" and "*" in cred:
            cred = cred.split("*", 1)[1]
        ap = AccessPoint(ssid=sfx(c[1]), security=sec, password=cred if sec != "open" else "", channel=c[4],
                         rssi=-40, bssid=MAC.lower(), hidden=bool(c[5]), ip="192.168.1.100", gateway=AP_GATEWAY,
                         netmask="255.255.255.0", dns=AP_GATEWAY)
        self._own_ap = ap
        wifi.host_ap(self.module.world, ap, self)
        self._ap_keeper = self.module.spawn(self._keep_ap(ap), name="soft-ap")

    async def _keep_ap(self, ap) -> None:
        """Lives while the soft-AP runs: cancelled when the module stops or reboots, the AP leaves
        the air then too (its stations' modules lose the link)."""
        try:
            await asyncio.Event().wait()
        finally:
            wifi.unhost_ap(self.module.world, ap)

    def _stop_ap(self, silent: bool) -> None:
        if not self.ap_on:
            return
        self.ap_on = False
        stations, self.ap_stations = self.ap_stations, {}
        if not silent:
            for aid in sorted(stations):
                self.urc(f'+WAPSD:{aid},"{stations[aid]}"')
        ap, self._own_ap = getattr(self, "_own_ap", None), None
        if ap is not None:
            wifi.unhost_ap(self.module.world, ap)      # the stations' modules lose their link
        keeper, self._ap_keeper = getattr(self, "_ap_keeper", None), None
        if keeper is not None and keeper is not asyncio.current_task():
            keeper.cancel()

    # atemu.wifi owner callbacks: a station of any emulated module of the world joins or leaves
    def on_station_join(self, mac: str, name: str = "") -> wifi.Lease:
        if not self.ap_on:
            raise wifi.Refused(mac)
        aid = self.ap_station_join(mac)
        return self._ap_lease(aid)

    def _ap_lease(self, aid: int) -> "wifi.Lease | None":
        """The address the soft-AP's DHCP server leases to station ``aid`` (None: no DHCP server)."""
        return wifi.Lease(f"192.168.1.{99 + aid}", AP_GATEWAY, "255.255.255.0", AP_GATEWAY)

    def on_station_leave(self, mac: str, reason: int) -> None:
        try:
            self.ap_station_leave(mac)
        except KeyError:
            pass

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
        lease = self._ap_lease(aid)
        if lease is not None:
            self.urc(f'+WAPAIP:{aid},"{lease.ip}"')
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
        from atemu.net.sockets import TcpListener
        port = self.cfg["WPROVC"][self.PROV_PORT_ID]
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
        self._raise_ap()

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
        self._aec_prov_client(conn, attached=True)
        self.module.spawn(self._prov_serve(conn))

    def _aec_prov_client(self, conn, attached: bool) -> None:
        """A client attached to (or left) the provisioning service; the WINC manual reports nothing."""

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
            if conn in self._prov_conns and self.prov_on:
                self._aec_prov_client(conn, attached=False)
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
            if cl.name not in self.PROV_COMMANDS:
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
