"""WLAN family: connect/disconnect against the world's access points, profiles, policies, scan, mode."""
from __future__ import annotations

import asyncio
import ipaddress
import logging

from atemu import wifi
from atemu.grammar import Form, Int, Keyword
from atemu.module import Ctx
from atemu.profile import command
from atemu.world import AccessPoint

from .common import (E_OPNOTSUPP, E_WLAN_BAD_PROFILE, E_WLAN_MODE, E_WLAN_NOT_CONNECTED, E_WLAN_PROFILES_FULL, OS, S,
                     count_error, fail, flags_of, nwp, param_error, parse_mac, parse_num, pick)

log = logging.getLogger("atemu.ti")

SECURITY = ("OPEN", "WEP", "WEP_SHARED", "WPA_WPA2", "WPA2_PLUS", "WPA3", "WPA_ENT", "WPS_PBC", "WPS_PIN")
EAP = ("TLS", "TTLS_TLS", "TTLS_MSCHAPv2", "TTLS_PSK", "PEAP0_TLS", "PEAP0_MSCHAPv2", "PEAP0_PSK", "PEAP1_TLS", "PEAP1_PSK")
#: station security -> atemu.wifi security class
JOIN_SEC = {"open": "open", "wep": "wep", "wep_shared": "wep", "wpa_wpa2": "wpa-wpa2", "wpa2_plus": "wpa2",
            "wpa3": "wpa3", "wpa_ent": "wpa2-enterprise"}
SCAN_SEC = {"open": "open", "wep": "wep", "wpa": "wpa", "wpa2": "wpa2", "wpa-wpa2": "wpa_wpa2", "wpa3": "wpa3",
            "wpa2-wpa3": "wpa3", "wpa2-enterprise": "wpa2"}
CONN_SEC = {"open": "open", "wep": "wep", "wpa": "wpa_wpa2", "wpa2": "wpa_wpa2", "wpa-wpa2": "wpa_wpa2",
            "wpa3": "wpa_wpa2", "wpa2-wpa3": "wpa_wpa2", "wpa2-enterprise": "wpa_ent"}
MAX_PROFILES = 7
REASON_USER = 200          # SL_WLAN_DISCONNECT_USER_INITIATED
REASON_NO_AP = 201         # our choice: SSID not on the air
REASON_AP_LOST = 4         # 802.11: disassociated (beacon loss)
REASON_WRONG_KEY = 15      # 802.11: 4-way handshake timeout
REASON_SEC_MISMATCH = 23   # 802.11: authentication failed
REASON_KICKED = 8          # 802.11: disassociated because the AP dropped the station
DHCP_TIMEOUT = 1.0         # seconds without a DHCP server before dhcp_ipv4_acquire_timeout

AP_OPTS = ("SSID", "CHANNEL", "HIDDEN_SSID", "SECURITY", "PASSWORD", "MAX_STATIONS", "MAX_STA_AGING",
           "ACCESS_LIST_MODE", "ACCESS_LIST_ADD_MAC", "ACCESS_LIST_DEL_MAC", "ACCESS_LIST_DEL_IDX")
GENERAL_OPTS = ("COUNTRY_CODE", "STA_TX_POWER", "AP_TX_POWER", "INFO_ELEMENT", "SCAN_PARAMS", "SUSPEND_PROFILES",
                "DISABLE_ENT_SERVER_AUTH")
P2P_OPTS = ("DEV_TYPE", "CHANNEL_N_REGS")
RXF_OPTS = ("STATE", "SYS_STATE", "REMOVE", "STORE")


def check_key(sec: str, key: str | None) -> None:
    if sec in ("open", "wps_pbc"):
        return
    if key is None or key == "":
        raise count_error("a security key is needed")
    if sec in ("wep", "wep_shared"):
        if len(key) not in (5, 13, 10, 26):
            raise param_error("WEP key must be 5 or 13 characters (10 or 26 hex digits)")
    elif sec in ("wpa_wpa2", "wpa2_plus", "wpa3") and not 8 <= len(key) <= 64:
        raise param_error("WPA key must be 8..63 characters (or 64 hex digits)")


def bitmap(text, nbytes: int) -> str:
    t = (text or "").strip().strip("[]")
    parts = t.split(":") if t else []
    try:
        vals = [int(p, 16) for p in parts]
    except ValueError:
        raise param_error("bitmap must be xx:xx:...") from None
    if len(vals) != nbytes or not all(0 <= v < 256 for v in vals):
        raise param_error(f"bitmap must be {nbytes} bytes xx:xx")
    return ":".join(f"{v:02x}" for v in vals)


class WlanMixin:
    # ---- state helpers ------------------------------------------------------------------------
    @property
    def wlan_connected(self) -> bool:
        return self.wlan_ap is not None

    @property
    def ip_up(self) -> bool:
        return self.started and ((self.role == "sta" and self.lease is not None) or self.role in ("ap", "p2p"))

    def profiles(self) -> list:
        p = self.module.settings.get("ti.profiles")
        if not isinstance(p, list) or len(p) != MAX_PROFILES:
            p = [None] * MAX_PROFILES
        return p

    def sta_lease(self, ap: AccessPoint) -> dict:
        st = self.cfg.get("netcfg.ipv4_sta", {"mode": "dhcp"})
        if st.get("mode") == "static":
            return {"ip": st["ip"], "mask": st["mask"], "gw": st["gw"], "dns": st["dns"], "dhcp": False}
        lease = wifi.Lease.from_ap(ap)
        return {"ip": lease.ip, "mask": lease.netmask, "gw": lease.gateway, "dns": lease.dns, "dhcp": True}

    def lla_lease(self) -> dict | None:
        """IPV4_STA_ADDR DHCP_LLA without a DHCP answer: a link-local 169.254.x.y address from the MAC
        (unless NetCfgSet IF DISABLE_IPV4_LLA)."""
        if self.cfg.get("netcfg.ipv4_sta", {}).get("mode") != "dhcp_lla" or \
                "disable_ipv4_lla" in self.cfg.get("netcfg.if", []):
            return None
        b = [int(x, 16) for x in self.mac().split(":")]
        ip = f"169.254.{min(max(b[4], 1), 254)}.{b[5]}"
        return {"ip": ip, "mask": "255.255.0.0", "gw": "0.0.0.0", "dns": "0.0.0.0", "dhcp": False}

    def wlan_event_disconnect(self, ssid: str, bssid: str, reason: int) -> None:
        self.module.urc(f"+eventwlan:disconnect,{ssid},{bssid},{reason}")

    def drop_link(self, reason: int, *, lost: bool = False) -> None:
        ap = self.wlan_ap
        if ap is None:
            return
        had = self.lease
        self.wlan_ap = None
        self.lease = None
        self.wlan_event_disconnect(ap.ssid, ap.bssid.lower(), reason)
        if lost and had is not None:
            self.status_flags["ipv4_lost"] = True
            self.module.urc("+eventnetapp:ipv4_lost,0")
            if self.ipv6_enabled():
                self.status_flags["ipv6_lost"] = True
                self.module.urc(f"+eventnetapp:ipv6_lost,{self.ipv6_local()}")
        self.wlan_leave(reason)

    def wlan_leave(self, reason: int) -> None:
        """Tell the AP we associated with that we left (a soft AP hosted by any emulated module
        hears it, whatever its profile)."""
        assoc, self.wlan_assoc = getattr(self, "wlan_assoc", None), None
        if assoc is not None:
            wifi.disassociate(self.module.world, assoc[0], assoc[1], reason)

    def wlan_link_lost(self, ap: AccessPoint, reason: int) -> None:
        """(core callback) the soft AP we are associated with stopped or dropped us."""
        if self.wlan_ap is ap:
            self.drop_link(reason, lost=True)

    def ipv6_enabled(self) -> bool:
        return any(f.startswith("ipv6_") for f in self.cfg.get("netcfg.if", []))

    async def wlan_join(self, ssid: str, bssid: str | None, sec: str | None, key: str) -> bool:
        """Associate and get an address; emits the events. True on success."""
        await asyncio.sleep(0.05)
        result, ap = wifi.join(self.module.world, ssid, key or "", JOIN_SEC.get(sec) if sec else None, bssid=bssid)
        assoc = None
        if result == wifi.JoinResult.OK:
            station = wifi.Station(self.mac(), self.napp("device.urn"), self.wlan_link_lost)
            assoc = await wifi.associate(self.module.world, ap, station)
            if assoc is None:                  # the AP (an emulated module's soft AP) refused us
                result = wifi.JoinResult.SECURITY_MISMATCH
            else:
                self.wlan_leave(REASON_USER)   # a stale association (AT+Stop cleared the link)
                self.wlan_assoc = (ap, station)
        if result != wifi.JoinResult.OK:
            reason = {wifi.JoinResult.NO_AP: REASON_NO_AP, wifi.JoinResult.WRONG_PASSWORD: REASON_WRONG_KEY,
                      wifi.JoinResult.SECURITY_MISMATCH: REASON_SEC_MISMATCH}[result]
            self.status_flags["connection_failed"] = True
            self.wlan_event_disconnect(ssid, (bssid or (ap.bssid if ap else "00:00:00:00:00:00")).lower(), reason)
            return False
        for f in ("connection_failed", "dhcp_acquire_timeout", "ip_collision"):
            self.status_flags.pop(f, None)
        self.wlan_ap = ap
        self.wlan_sec = sec or CONN_SEC.get(ap.security, "open")
        self.module.settings.set("ti.last_ap", [ssid, bssid, sec, key or ""])   # for the Fast policy
        self.module.urc(f"+eventwlan:connect,{ap.ssid},{ap.bssid.lower()}")
        await asyncio.sleep(0.02)
        if self.wlan_ap is not ap:
            return False
        lease = self.sta_lease(ap)
        if assoc.hosted and lease["dhcp"]:
            g = assoc.lease
            lease = {"ip": g.ip, "mask": g.netmask, "gw": g.gateway, "dns": g.dns, "dhcp": True} if g else None
        elif lease["dhcp"] and (ap.ip in ("", "0.0.0.0") or "disable_ipv4_dhcp" in self.cfg.get("netcfg.if", [])):
            lease = None                       # the AP runs no DHCP server, or our DHCP client is off
        if lease is None:
            await asyncio.sleep(DHCP_TIMEOUT)
            if self.wlan_ap is not ap:
                return True
            self.status_flags["dhcp_acquire_timeout"] = True
            self.module.urc("+eventnetapp:dhcp_ipv4_acquire_timeout,-1")
            lease = self.lla_lease()
            if lease is None:
                return True
        collision = lease["ip"] in (ap.gateway, ap.dns) and not lease["dhcp"]
        if collision:
            self.status_flags["ip_collision"] = True
            self.module.urc(f"+eventnetapp:ip_collision,{lease['ip']},{ap.bssid.lower()},{lease['dns']}")
            return True
        self.lease = lease
        for f in ("ipv4_lost", "ipv6_lost"):
            self.status_flags.pop(f, None)
        le = self.lease
        self.module.urc(f"+eventnetapp:ipv4_acquired,{le['ip']},{le['gw']},{le['dns']}")
        if self.ipv6_enabled():
            v6 = self.ipv6_local()
            self.module.urc(f"+eventnetapp:ipv6_acquired,{v6},{le['dns']}")
        return True

    def world_changed(self, change: dict | None = None) -> None:
        """Core hook (control plane, faults): a deauthentication drops the link at once; AP
        removals are also noticed by the supervisor's polling of the air."""
        change = change or {}
        ap = self.wlan_ap
        if ap is None:
            return
        kind = change.get("change")
        if kind == "deauth" and change.get("ssid") in (None, ap.ssid):
            self.drop_link(int(change.get("reason") or 3), lost=True)
        elif kind in ("ap_removed", "remove_ap") and not wifi.on_air(self.module.world, ap):
            self.drop_link(REASON_AP_LOST, lost=True)

    # ---- the AP role seen from stations of the same world (atemu.wifi owner callbacks) -------
    def on_station_join(self, mac: str, name: str = "") -> wifi.Lease | None:
        """A station (of any emulated module of this world) associates with our AP: sta_added (and
        ip_leased when our DHCP server runs). Raises wifi.Refused (deny list, AP full)."""
        lease = self.station_join(mac.lower(), name)
        if lease == "denied":
            raise wifi.Refused(mac)
        return wifi.Lease(lease["ip"], lease["gw"], lease["mask"], lease["dns"]) if lease else None

    def on_station_leave(self, mac: str, reason: int) -> None:
        self.station_left(mac.lower(), reason)

    def ap_station_join(self, mac: str, name: str = "") -> str | None:
        """Control plane / tests: a station with this MAC associates with the AP. Returns the
        address our DHCP server leased it (None: no DHCP server); ValueError if the AP is not up
        or turns the station away."""
        lease = self.station_join(parse_mac(mac), name)
        if lease == "denied":
            raise ValueError(f"the AP does not accept station {mac}")
        return lease["ip"] if lease else None

    def ap_station_leave(self, mac: str) -> bool:
        """Control plane / tests: the station leaves (sta_removed, ip_released). False if it was not there."""
        mac = parse_mac(mac)
        if mac not in self.stations:
            return False
        self.station_left(mac, wifi.REASON_LEAVING)
        return True

    def station_join(self, mac: str, name: str) -> dict | str | None:
        if self.own_ap is None:
            return "denied"
        if self.cfg.get("ap.access_list_mode") == "deny_list" and mac in self.cfg.get("ap.access_list", []):
            return "denied"
        if mac in self.stations:                 # re-association: the same address, no second event
            st = self.stations[mac]
            ap = self.ap_addr()
            return {"ip": st["ip"], "mask": ap["mask"], "gw": ap["ip"], "dns": ap["ip"]} if st.get("ip") else None
        if len(self.stations) >= self.cfg.get("ap.max_stations", 4):
            return "denied"
        lease = None
        if "dhcp_server" in self.apps:
            lease_time, first, last = self.napp("dhcp_server.basic")
            used = {st["ip"] for st in self.stations.values() if st.get("ip")}
            a = int(ipaddress.IPv4Address(first))
            while a <= int(ipaddress.IPv4Address(last)) and str(ipaddress.IPv4Address(a)) in used:
                a += 1
            if a <= int(ipaddress.IPv4Address(last)):
                ap = self.ap_addr()
                lease = {"ip": str(ipaddress.IPv4Address(a)), "mask": ap["mask"], "gw": ap["ip"], "dns": ap["ip"]}
        self.stations[mac] = {"ip": lease["ip"] if lease else "", "name": name}
        self.module.urc(f"+eventwlan:sta_added,{mac}")
        if lease:
            self.status_flags["ip_leased"] = True
            self.module.urc(f"+eventnetapp:ip_leased,{lease['ip']},{self.napp('dhcp_server.basic')[0]},{mac}")
        return lease

    def station_left(self, mac: str, reason: int) -> None:
        st = self.stations.pop(mac, None)
        if st is None:
            return
        self.module.urc(f"+eventwlan:sta_removed,{mac}")
        if st.get("ip"):
            self.status_flags["ip_released"] = True
            self.module.urc(f"+eventnetapp:ip_released,{st['ip']},{mac},{reason}")

    def kick_station(self, mac: str) -> bool:
        if mac not in self.stations:
            return False
        if not (self.own_ap is not None and wifi.kick(self.module.world, self.own_ap, mac, REASON_KICKED)):
            self.station_left(mac, REASON_KICKED)      # a control-plane station: no module to tell
        return True

    async def wlan_supervise(self, first=None) -> None:
        """Connect (first = explicit credentials), then watch the AP; reconnect from profiles (auto policy)."""
        try:
            if first is not None:
                await self.wlan_join(*first)
            while True:
                if self.wlan_ap is not None:
                    if not wifi.on_air(self.module.world, self.wlan_ap):
                        self.drop_link(REASON_AP_LOST, lost=True)
                        continue
                    await asyncio.sleep(0.1)
                    continue
                if "auto" in self.cfg.get("policy.connection", ["auto"]) and any(self.profiles()):
                    cand = self.best_profile()
                    if cand is not None:
                        if await self.wlan_join(cand["ssid"], cand["bssid"] or None, cand["sec"], cand["key"]):
                            continue
                    await asyncio.sleep(0.5)
                    continue
                return
        except asyncio.CancelledError:
            raise

    def best_profile(self):
        onair = {a.ssid for a in wifi.scan(self.module.world, include_hidden=True)}
        cands = [p for p in self.profiles() if p and p["ssid"] in onair and not self.profile_suspended(p)]
        if not cands:
            return None
        return max(cands, key=lambda p: p["priority"])

    def profile_suspended(self, p) -> bool:
        mask = self.cfg.get("general.suspend_profiles", 0)
        idx = self.profiles().index(p)
        return bool(mask & (1 << idx))

    def start_supervisor(self, first=None) -> None:
        if self.wlan_task is not None and not self.wlan_task.done():
            self.wlan_task.cancel()
        self.wlan_task = self.module.spawn(self.wlan_supervise(first), name="wlan")

    # ---- commands ------------------------------------------------------------------------------
    @command("+WlanConnect", Form.WRITE, S("ssid", min_len=1, max_len=32), OS("bssid"),
             Keyword("security", values={k: k.lower() for k in SECURITY}), OS("key"), OS("ext_user"),
             OS("ext_anon_user"), Keyword("eap_method", values={k: k.lower() for k in EAP}, optional=True),
             family="wlan", doc="Connect to an access point: OK, then +eventwlan:connect and +eventnetapp:ipv4_acquired")
    @nwp
    async def at_wlanconnect(self, ctx: Ctx, ssid, bssid, sec, key, user, anon, eap) -> None:
        if self.role != "sta":
            raise fail(E_WLAN_MODE, "WlanConnect needs the station role")
        bssid = parse_mac(bssid) if bssid else None
        if sec in ("wps_pbc", "wps_pin"):
            raise fail(E_OPNOTSUPP, "no access point of the world runs WPS")
        check_key(sec, key)
        if sec == "wpa_ent" and not user:
            raise count_error("WPA_ENT needs a user name")
        if self.wlan_ap is not None:
            if self.wlan_task is not None:
                self.wlan_task.cancel()
            self.drop_link(REASON_USER)
        self.start_supervisor((ssid, bssid, sec, key or ""))

    @command("+WlanDisconnect", Form.EXEC, family="wlan", doc="Disconnect from the access point")
    @nwp
    async def at_wlandisconnect(self, ctx: Ctx) -> None:
        if self.wlan_task is not None:
            self.wlan_task.cancel()
            self.wlan_task = None
        if self.wlan_ap is None:
            raise fail(E_WLAN_NOT_CONNECTED, "not connected")
        self.drop_link(REASON_USER)

    @command("+WlanProfileAdd", Form.WRITE, S("ssid", min_len=1, max_len=32), OS("bssid"),
             Keyword("security", values={k: k.lower() for k in SECURITY}), OS("key"), OS("ext_user"),
             OS("ext_anon_user"), Keyword("eap_method", values={k: k.lower() for k in EAP}, optional=True),
             Int("priority", 0, 15), family="wlan", doc="Store a connection profile: +wlanprofileadd:<index>")
    @nwp
    async def at_profileadd(self, ctx: Ctx, ssid, bssid, sec, key, user, anon, eap, prio) -> None:
        bssid = parse_mac(bssid) if bssid else ""
        check_key(sec, key)
        profs = self.profiles()
        for i, p in enumerate(profs):
            if p is None:
                profs[i] = {"ssid": ssid, "bssid": bssid, "sec": sec, "key": key or "", "user": user or "",
                            "anon": anon or "", "eap": eap or "", "priority": prio}
                self.module.settings.set("ti.profiles", profs)
                ctx.info(f"+wlanprofileadd:{i}")
                if self.role == "sta" and self.wlan_ap is None and (self.wlan_task is None or self.wlan_task.done()) \
                        and "auto" in self.cfg.get("policy.connection", ["auto"]):
                    self.start_supervisor()
                return
        raise fail(E_WLAN_PROFILES_FULL, "all profile slots are used")

    @command("+WlanProfileGet", Form.WRITE, Int("index", 0, MAX_PROFILES - 1), family="wlan",
             doc="Read a stored profile (without its key)")
    @nwp
    async def at_profileget(self, ctx: Ctx, idx: int) -> None:
        p = self.profiles()[idx]
        if p is None:
            raise fail(E_WLAN_BAD_PROFILE, "no profile at this index")
        ctx.info(f"+wlanprofileget:{p['ssid']},{p['bssid']},{p['sec']},{p['user']},{p['anon']},{p['eap']},{p['priority']}")

    @command("+WlanProfileDel", Form.WRITE, Int("index", 0, 0xFF), family="wlan",
             doc="Delete a profile (0xFF: all)")
    @nwp
    async def at_profiledel(self, ctx: Ctx, idx: int) -> None:
        profs = self.profiles()
        if idx == 0xFF:
            profs = [None] * MAX_PROFILES
        elif idx >= MAX_PROFILES:
            raise param_error("index out of range")
        elif profs[idx] is None:
            raise fail(E_WLAN_BAD_PROFILE, "no profile at this index")
        else:
            profs[idx] = None
        self.module.settings.set("ti.profiles", profs)

    @command("+WlanPolicySet", Form.WRITE, Keyword("type", values={"CONNECTION": "connection", "SCAN": "scan", "PM": "pm", "P2P": "p2p"}),
             OS("option"), OS("value"), family="wlan", doc="Set a connection/scan/power/P2P policy")
    @nwp
    async def at_policyset(self, ctx: Ctx, typ: str, option, value) -> None:
        if typ == "connection":
            opts = flags_of(option, ("Auto", "Fast", "P2P", "Auto_Provisioning"), "connection option")
            self.set_cfg("policy.connection", opts, always=True)
            if "auto" in opts and self.role == "sta" and self.wlan_ap is None and \
                    (self.wlan_task is None or self.wlan_task.done()) and any(self.profiles()):
                self.start_supervisor()
        elif typ == "scan":
            opt = pick(option, ("Hidden_SSID", "No_Hidden_SSID", "Disable_Scan"), "scan option")
            val = 0 if opt == "disable_scan" else parse_num(value, 1, 0x7FFFFFFF, "interval")
            self.set_cfg("policy.scan", [opt, val], always=True)
        elif typ == "pm":
            opt = pick(option, ("Normal", "Low_Latency", "Low_Power", "Always_On", "Long_Sleep"), "pm option")
            val = parse_num(value, 1, 0x7FFFFFFF, "max sleep") if opt == "long_sleep" else 0
            self.set_cfg("policy.pm", [opt, val], always=True)
        else:
            opt = pick(option, ("CLIENT", "GROUP_OWNER", "NEGOTIATE"), "p2p role")
            val = pick(value, ("ACTIVE", "PASSIVE", "RAND_BACKOFF"), "negotiation initiator")
            self.set_cfg("policy.p2p", [opt, val], always=True)

    @command("+WlanPolicyGet", Form.WRITE, Keyword("type", values={"CONNECTION": "connection", "SCAN": "scan", "PM": "pm", "P2P": "p2p"}),
             family="wlan", doc="Read a policy: +wlanpolicyget:<option>,<value>")
    @nwp
    async def at_policyget(self, ctx: Ctx, typ: str) -> None:
        if typ == "connection":
            ctx.info(f"+wlanpolicyget:{'|'.join(self.cfg.get('policy.connection', ['auto']))},0")
        elif typ == "scan":
            o, v = self.cfg.get("policy.scan", ["hidden_ssid", 600])
            ctx.info(f"+wlanpolicyget:{o},{v}")
        elif typ == "pm":
            o, v = self.cfg.get("policy.pm", ["normal", 0])
            ctx.info(f"+wlanpolicyget:{o},{v}")
        else:
            o, v = self.cfg.get("policy.p2p", ["negotiate", "rand_backoff"])
            ctx.info(f"+wlanpolicyget:{o},{v}")

    @command("+WlanScan", Form.WRITE, Int("index", 0, 29), Int("count", 1, 30), family="wlan",
             doc="Scan results: +wlanscan:<ssid>,<bssid>,<rssi>,<channel>,<security>,<hidden>,<cipher>,<key_mgmt>;...")
    @nwp
    async def at_wlanscan(self, ctx: Ctx, index: int, count: int) -> None:
        if self.role != "sta":
            raise fail(E_WLAN_MODE, "scanning needs the station role")
        mask, threshold = self.cfg.get("general.scan_params", [0x1FFF, -95])   # WlanSet GENERAL SCAN_PARAMS
        aps = [a for a in wifi.scan(self.module.world, include_hidden=True)
               if not (a.ssid == self.cfg.get("ap.ssid") and self.role == "ap")
               and 1 <= a.channel <= 32 and mask >> (a.channel - 1) & 1 and a.rssi >= threshold]
        entries = []
        for ap in aps[index:index + count]:
            sec = ap.security
            cipher = {"open": "none", "wep": "wep40" if len(ap.password) in (5, 10) else "wep104", "wpa": "tkip",
                      "wpa-wpa2": "tkip_ccmp"}.get(sec, "ccmp")
            mgmt = "none" if sec in ("open", "wep") else ("802_1_x" if "enterprise" in sec else "psk")
            ssid = "" if ap.hidden else ap.ssid
            entries.append(f"{ssid},{ap.bssid.lower()},{ap.rssi},{ap.channel},{SCAN_SEC.get(sec, sec)},"
                           f"{1 if ap.hidden else 0},{cipher},{mgmt}")
        ctx.info("+wlanscan:" + ";".join(entries))

    @command("+WlanSetMode", Form.WRITE, Keyword("mode", values={"STA": "sta", "AP": "ap", "P2P": "p2p"}),
             family="wlan", doc="Set the role used from the next AT+Start")
    @nwp
    async def at_setmode(self, ctx: Ctx, mode: str) -> None:
        self.set_cfg("mode", mode, always=True)

    @command("+WlanSet", Form.WRITE, Keyword("id", values={"AP": "ap", "GENERAL": "general", "P2P": "p2p", "RX_FILTER": "rx_filter"}),
             S("option"), OS("value1"), OS("value2"), OS("value3"), OS("value4"), OS("value5"), OS("value6"), OS("value7"),
             family="wlan", doc="Set AP/general/P2P/RX filter configuration")
    @nwp
    async def at_wlanset(self, ctx: Ctx, ident: str, option: str, *vals) -> None:
        table = {"ap": AP_OPTS, "general": GENERAL_OPTS, "p2p": P2P_OPTS, "rx_filter": RXF_OPTS}[ident]
        opt = pick(option, table, "option")
        v = list(vals)
        n_expected = {"info_element": 7, "scan_params": 2, "channel_n_regs": 4, "store": 0}.get(opt, 1)
        given = [x for x in v if x is not None]
        if len(given) != n_expected or any(x is None for x in v[:n_expected]):
            raise count_error(f"{opt} takes {n_expected} values")
        key = f"{ident}.{opt}"
        if ident == "ap":
            if opt == "ssid":
                if not 1 <= len(v[0]) <= 32:
                    raise param_error("SSID is 1..32 characters")
                val = v[0]
            elif opt == "channel":
                val = parse_num(v[0], 1, 11, "channel")
            elif opt == "hidden_ssid":
                val = parse_num(v[0], 0, 2)
            elif opt == "security":
                val = pick(v[0], ("OPEN", "WEP", "WPA_WPA2"), "security")
            elif opt == "password":
                sec = self.cfg.get("ap.security", "open")
                if sec == "wep" and len(v[0]) not in (5, 13):
                    raise param_error("WEP password is 5 or 13 characters")
                if sec != "wep" and not 8 <= len(v[0]) <= 63:
                    raise param_error("WPA password is 8..63 characters")
                val = v[0]
            elif opt == "max_stations":
                val = parse_num(v[0], 1, 4)
            elif opt == "max_sta_aging":
                val = parse_num(v[0], 1, 0x7FFFFFFF)
            elif opt == "access_list_mode":
                val = pick(v[0], ("DISABLE", "DENY_LIST"), "mode")
            elif opt in ("access_list_add_mac", "access_list_del_mac", "access_list_del_idx"):
                lst = list(self.cfg.get("ap.access_list", []))
                if opt == "access_list_add_mac":
                    mac = parse_mac(v[0])
                    if mac not in lst:
                        if len(lst) >= 8:
                            raise fail(E_WLAN_PROFILES_FULL, "access list is full")
                        lst.append(mac)
                elif opt == "access_list_del_mac":
                    mac = parse_mac(v[0])
                    if mac not in lst:
                        raise fail(E_WLAN_BAD_PROFILE, "MAC not in the access list")
                    lst.remove(mac)
                else:
                    i = parse_num(v[0], 0, 7)
                    if i >= len(lst):
                        raise fail(E_WLAN_BAD_PROFILE, "no such access list entry")
                    del lst[i]
                self.set_cfg("ap.access_list", lst)
                return
            self.set_cfg(key, val)
            if self.role == "ap" and self.own_ap is not None:
                self.publish_own_ap()
            return
        if ident == "general":
            if opt == "country_code":
                if len(v[0]) != 2 or not v[0].isalpha():
                    raise param_error("country code is two letters")
                val = v[0].upper()
            elif opt in ("sta_tx_power", "ap_tx_power"):
                val = parse_num(v[0], 0, 15)
            elif opt == "info_element":
                idx = parse_num(v[0], 0, 3)
                role = pick(v[1], ("AP", "P2P"), "role")
                ie_id = parse_num(v[2], 0, 255)
                oui = [parse_num(x, 0, 255) for x in v[3:6]]
                if len(v[6]) > 252:
                    raise param_error("info element is at most 252 characters")
                ies = dict(self.cfg.get("general.info_element", {}))
                ies[f"{role}{idx}"] = [idx, role, ie_id, *oui, v[6]]
                val = ies
            elif opt == "scan_params":
                val = [parse_num(v[0], 0, 0xFFFFFFFF), parse_num(v[1], -95, 0, "rssi threshold")]
            elif opt == "suspend_profiles":
                val = parse_num(v[0], 0, (1 << MAX_PROFILES) - 1)
            else:
                val = parse_num(v[0], 0, 1)
            self.set_cfg(key, val)
            return
        if ident == "p2p":
            if opt == "dev_type":
                if not 1 <= len(v[0]) <= 17:
                    raise param_error("device type is at most 17 characters")
                val = v[0]
            else:
                lc, lr, oc, orc = (parse_num(x) for x in v[:4])
                if lc not in (1, 6, 11) or oc not in (1, 6, 11) or lr != 81 or orc != 81:
                    raise param_error("channels 1, 6 or 11 with regulatory class 81")
                val = [lc, lr, oc, orc]
            self.set_cfg(key, val)
            return
        # rx filters
        if opt == "store":
            self.set_cfg("rx_filter.stored", dict(self.rx_filters), always=True)
            return
        if opt == "sys_state":
            self.rx_filters["sys_state"] = bitmap(v[0], 4)
        elif opt == "state":
            self.rx_filters["state"] = bitmap(v[0], 16)
        else:
            rm = bytes(int(x, 16) for x in bitmap(v[0], 16).split(":"))
            cur = bytes(int(x, 16) for x in self.rx_filters.get("state", ":".join(["00"] * 16)).split(":"))
            self.rx_filters["state"] = ":".join(f"{a & ~b & 0xFF:02x}" for a, b in zip(cur, rm))

    @command("+WlanGet", Form.WRITE, Keyword("id", values={"AP": "ap", "GENERAL": "general", "P2P": "p2p", "RX_FILTER": "rx_filter",
                                                          "ACCESS_LIST": "access_list", "CONNECTION": "connection"}),
             OS("option"), family="wlan", doc="Read WLAN configuration or the connection status")
    @nwp
    async def at_wlanget(self, ctx: Ctx, ident: str, option) -> None:
        c = self.cfg
        if ident == "connection":
            if self.role == "sta":
                if self.wlan_ap is not None:
                    ap = self.wlan_ap
                    ctx.info(f"+wlanget:sta,station_connected,{self.wlan_sec},{ap.ssid},{ap.bssid.lower()},")
                else:
                    ctx.info("+wlanget:sta,disconnected,,,,")
            elif self.role == "ap":
                status = "ap_connected_stations" if self.stations else "disconnected"
                ctx.info(f"+wlanget:ap,{status},{c.get('ap.security', 'open')},{self.ap_ssid()},{self.mac()},")
            else:
                ctx.info("+wlanget:p2p,disconnected,,,,")
            return
        if ident == "access_list":
            start = parse_num(option, 0, 7, "start index") if option else 0
            ctx.info("+wlanget:" + ";".join(c.get("ap.access_list", [])[start:]))
            return
        if ident == "ap":
            opt = pick(option, AP_OPTS[:7] + ("ACCESS_LIST_MODE", "ACCESS_LIST_NUM_ENTRIES"), "option")
            defaults = {"ssid": self.ap_ssid(), "channel": 6, "hidden_ssid": 0, "security": "open", "password": "",
                        "max_stations": 4, "max_sta_aging": 60, "access_list_mode": "disable"}
            if opt == "access_list_num_entries":
                val = len(c.get("ap.access_list", []))
            elif opt == "ssid":
                val = self.ap_ssid()
            else:
                val = c.get(f"ap.{opt}", defaults[opt])
            ctx.info(f"+wlanget:{val}")
            return
        if ident == "general":
            opt = pick(option, ("COUNTRY_CODE", "STA_TX_POWER", "AP_TX_POWER", "SCAN_PARAMS"), "option")
            defaults = {"country_code": "EU", "sta_tx_power": 0, "ap_tx_power": 0, "scan_params": [0x1FFF, -95]}
            val = c.get(f"general.{opt}", defaults[opt])
            ctx.info("+wlanget:" + (",".join(str(x) for x in val) if isinstance(val, list) else str(val)))
            return
        if ident == "p2p":
            pick(option, ("CHANNEL_N_REGS",), "option")
            ctx.info("+wlanget:" + ",".join(str(x) for x in c.get("p2p.channel_n_regs", [1, 81, 6, 81])))
            return
        opt = pick(option, ("STATE", "SYS_STATE"), "option")
        default = ":".join(["00"] * (16 if opt == "state" else 4))
        ctx.info(f"+wlanget:{self.rx_filters.get(opt, default)}")

    # ---- AP role -------------------------------------------------------------------------------
    def ap_ssid(self) -> str:
        return self.cfg.get("ap.ssid") or "mysimplelink-" + self.mac().replace(":", "")[-6:].upper()

    def publish_own_ap(self) -> None:
        """In the AP role the module's own access point is on the air of the shared world."""
        self.withdraw_own_ap()
        sec = {"open": "open", "wep": "wep", "wpa_wpa2": "wpa-wpa2"}[self.cfg.get("ap.security", "open")]
        ip = self.ap_addr()["ip"]
        ap = AccessPoint(ssid=self.ap_ssid(), security=sec, password=self.cfg.get("ap.password", ""),
                         channel=self.cfg.get("ap.channel", 6), rssi=-40, bssid=self.mac(),
                         hidden=bool(self.cfg.get("ap.hidden_ssid", 0)), ip=ip, gateway=ip, dns=ip)
        wifi.host_ap(self.module.world, ap, self)   # stations of any profile of this world report to us
        self.own_ap = ap

    def withdraw_own_ap(self) -> None:
        self.wlan_leave(REASON_USER)          # AT+Stop as a station: the AP we were on hears we left
        for mac in list(self.stations):
            self.station_left(mac, REASON_AP_LOST)
        if self.own_ap is not None:
            ap, self.own_ap = self.own_ap, None
            wifi.unhost_ap(self.module.world, ap, REASON_AP_LOST)   # the stations' modules lose the link
