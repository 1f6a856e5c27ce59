"""TI SimpleLink Wi-Fi CC32xx AT command profile (``ti-simplelink``).

Manual: ../shared/specs/ti-simplelink-wifi-at.txt; inventory and its numbered ambiguities:
../shared/reference/inventory-ti-simplelink.md. Choices are listed in ``DEVIATIONS`` (printed by
``atemu describe``) and explained in README.md next to this file.

The profile is split by command family (device, sockets, wlan, files, netapp, netcfg/netutil,
mqtt, http); this module glues the mixins together and owns the NWP life cycle.
"""
from __future__ import annotations

import logging

from atemu.grammar import Form, Int, UrcSpec
from atemu import wifi
from atemu.profile import CmdError, Profile

from .common import DIALECT, format_error
from .device import DeviceMixin
from .files import FileMixin
from .http import HttpMixin
from .mqtt import MqttMixin
from .netapp import NetAppMixin
from .netcfg import NetCfgMixin
from .sockets import SocketMixin
from .wlan import WlanMixin

log = logging.getLogger("atemu.ti")

DEVIATIONS = [
    "T1 framing: a command ends with CR, LF or CR LF; every response/event line ends with CR LF (no leading CR LF); echo off (ATE1 turns it on); 115200 8N1.",
    "T3: every comma is written, also for empty optional fields; fewer fields give ERROR:number of parameters,-2 (except the commands whose value list depends on an ID/option).",
    "T2/T8: command names, keywords and bitmask names are case-insensitive; spaces around '=' and ',' and after 'AT+' are ignored; output is lower case with no space after ':' (+socket:0).",
    "T9: errors are ERROR:<description>,<code> with the core's descriptions (command not exist, parse parameters, number of parameters, process command, allocate) and negative SimpleLink-style codes (see README table).",
    "T7: Accept, Connect, Select, Recv, RecvFrom, NetAPPGetHostByName, NetAPPGetHostByService, NetAPPRecv and NetAPPPing validate, answer OK, and later print their value line followed by OK, or an ERROR line; bad parameters give an immediate ERROR instead of OK.",
    "T10: format 0 data is exactly <length> raw bytes (CR, LF, commas, quotes are data); format 1 is Base64 up to the next comma/end of line; <length> always counts decoded bytes; a raw field that stops arriving for 2 s is abandoned with ERROR:parse parameters,-2. MQTT messages use the client's data format (AT+MqttCreate).",
    "T37: at power-up the NWP is stopped: every command except AT, ATE, AT+Start, AT+Stop and AT+Test answers ERROR:process command,-2018 until AT+Start. AT+Start prints OK then the startup event +eventgeneral:init_complete,<role> (not in the manual) and auto-connects from stored profiles (policy Auto, default on).",
    "Reset: AT+Stop closes every socket, server, ping and MQTT/HTTP connection (clients stay allocated), drops Wi-Fi; volatile configuration (persistence off) reverts. FileCtl RESTORE wipes flash and stored configuration and restarts the NWP (init_complete again).",
    "T12: AT+RecvFrom's family/port/address are validated and otherwise ignored; the response carries no source address, as printed.",
    "T15: AT+Select readsds is a list of descriptors separated by spaces or '|' (optionally bracketed); +select: lists the ready ones separated by '|' (empty on timeout).",
    "T16/T17: AT+WlanScan prints one +wlanscan: line with entries separated by ';', fields SSID,BSSID,RSSI,Channel,security,hidden,cipher,key_mgmt (syntax-line order).",
    "T18: WlanPolicySet CONNECTION with an empty option disables all; WlanPolicyGet prints <option>,<value> (CONNECTION: options joined by '|', value 0).",
    "T20/T28: WlanGet has IDs AP, GENERAL, P2P, RX_FILTER, ACCESS_LIST, CONNECTION; NetCfgGet IF prints disable_ipv4_lls as the manual does; SET_MAC_ADDR applies from the next AT+Start.",
    "T25: HTTP server requests the module cannot answer from flash (www/<path> or <path>) are passed to the host as +eventnetapp:request,<handle>,<method>,<uri>,<body length>; the host reads the body with AT+NetAPPRecv and answers with AT+NetAPPSend (METADATA data '<status>[;<content type>]', then body chunks, CONTINUATION while more follows).",
    "T26: NetAPPPing flags 0/2 print one +netappping:<sent>,<received>,<average ms> line, flags 1 one line per ping (<sent>,<received>,<this round trip ms>); destination 0 stops a running ping, which then prints its summary and OK.",
    "T29: AT+NetUtilGet=public_key,<format>[,<key index>] prints the uncompressed P-256 point; true_random,<n> prints n random bytes as decimals separated by ';'. sign_msg/verify_msg use ECDSA P-256 with SHA-256 (signature DER); verify_msg prints success or failure; temp_keys/install_op print the key index.",
    "T31: MQTT QoS tokens are qos0/qos1/qos2 (0/1/2 accepted); subscribe topics are topic,qos,persistent triples; +eventmqtt:recv prints qos<n> and dup 0.",
    "T32: connack value is (session present << 8) | return code; puback/suback/unsuback carry the real packet identifier.",
    "T33: HttpSendReq with chunk_start starts a chunked request and prints +httpsendreq:0; further HttpSendReq calls add chunks; chunk_end sends the last chunk and prints the real status. HttpReadResBody's flag is 1 while more body remains.",
    "TLS: the module speaks TLS 1.0-1.2 only; without a CA file a secure socket/HTTP client connects without verification (as SimpleLink does); with one, a failed verification gives +eventsock:async_event,<sd>,wrong_root_ca,-468 and ERROR; hostname checks only with SECURE_DOMAIN_NAME_VERIFICATION.",
    "Files: a leading '/' is dropped (/cert/ca.pem == cert/ca.pem); names may not escape the flash folder; writes are buffered and committed at AT+FileClose (WRITE/OVERWRITE rewrite the file); fail-safe files keep the previous image for FileCtl ROLLBACK/COMMIT; FileClose signatures are Base64 and verified against the certificate file.",
    "AP role: the module's access point joins the shared world's air; other emulated modules of that world can associate (sta_added, ip_leased from the DHCP_SERVER range, sta_removed, ip_released, AP_STATION_DISCONNECT). Link loss gives +eventwlan:disconnect then +eventnetapp:ipv4_lost (and ipv6_lost when IPv6 is on).",
    "Not emulated (answer an error or are never emitted): RF/RAW sockets and PHY options, WPS, P2P discovery/negotiation and the P2P/provisioning events, fatal-error and general error events, mDNS on the wire (the peer cache comes from world option ti-simplelink.mdns_peers plus own registered services), the DNS server beyond its on/off state.",
]

URCS = [
    UrcSpec("+eventgeneral:init_complete", "+eventgeneral:init_complete,<role>", "NWP started (our startup event, not in the manual)", "device"),
    UrcSpec("+eventgeneral:reset_request", "+eventgeneral:reset_request,<error code>,<sender>", "device asks for a reset (never emitted)", "device"),
    UrcSpec("+eventgeneral:error", "+eventgeneral:error,<error code>,<sender>", "device error indication (never emitted)", "device"),
    UrcSpec("+eventfatalerror:device_abort", "+eventfatalerror:device_abort,<type>,<data>", "fatal device error (never emitted)", "device"),
    UrcSpec("+eventfatalerror:no_cmd_ack", "+eventfatalerror:no_cmd_ack,<opcode>", "command not acknowledged (never emitted)", "device"),
    UrcSpec("+eventfatalerror:cmd_timeout", "+eventfatalerror:cmd_timeout,<opcode>", "command timeout (never emitted)", "device"),
    UrcSpec("+eventfatalerror:driver_abort", "+eventfatalerror:driver_abort", "driver abort (never emitted)", "device"),
    UrcSpec("+eventfatalerror:sync_loss", "+eventfatalerror:sync_loss", "sync loss (never emitted)", "device"),
    UrcSpec("+eventwlan:connect", "+eventwlan:connect,<ssid>,<bssid>", "station associated", "wlan"),
    UrcSpec("+eventwlan:disconnect", "+eventwlan:disconnect,<ssid>,<bssid>,<reason>", "station disconnected or connect failed (200 user, 201 not found, 15 wrong key, 23 security mismatch, 4 AP lost)", "wlan"),
    UrcSpec("+eventwlan:p2p_connect", "+eventwlan:p2p_connect,<ssid>,<bssid>,<go name>", "P2P (never emitted)", "wlan"),
    UrcSpec("+eventwlan:p2p_disconnect", "+eventwlan:p2p_disconnect,<ssid>,<bssid>,<reason>,<go name>", "P2P (never emitted)", "wlan"),
    UrcSpec("+eventwlan:sta_added", "+eventwlan:sta_added,<mac>", "a station (another emulated module of the same world) joined our AP", "wlan"),
    UrcSpec("+eventwlan:sta_removed", "+eventwlan:sta_removed,<mac>", "a station left or was dropped (AP_STATION_DISCONNECT)", "wlan"),
    UrcSpec("+eventwlan:p2p_client_added", "+eventwlan:p2p_client_added,<mac>,<go name>,<ssid>", "never emitted", "wlan"),
    UrcSpec("+eventwlan:p2p_client_removed", "+eventwlan:p2p_client_removed,<mac>,<go name>,<ssid>", "never emitted", "wlan"),
    UrcSpec("+eventwlan:p2p_devfound", "+eventwlan:p2p_devfound,<go name>,<mac>,<wps method>", "never emitted", "wlan"),
    UrcSpec("+eventwlan:p2p_request", "+eventwlan:p2p_request,<go name>,<mac>,<wps method>", "never emitted", "wlan"),
    UrcSpec("+eventwlan:p2p_connectfail", "+eventwlan:p2p_connectfail,<status>", "never emitted", "wlan"),
    UrcSpec("+eventwlan:provisioning_status", "+eventwlan:provisioning_status,<status>", "never emitted", "wlan"),
    UrcSpec("+eventwlan:provisioning_profile_added", "+eventwlan:provisioning_profile_added,<status>,<ssid>", "never emitted", "wlan"),
    UrcSpec("+eventnetapp:ipv4_acquired", "+eventnetapp:ipv4_acquired,<ip>,<gateway>,<dns>", "IPv4 address obtained", "netapp"),
    UrcSpec("+eventnetapp:ipv6_acquired", "+eventnetapp:ipv6_acquired,<ip>,<dns>", "IPv6 link-local address (when IF enables IPv6)", "netapp"),
    UrcSpec("+eventnetapp:ip_collision", "+eventnetapp:ip_collision,<ip>,<mac>,<dns>", "static address equals the AP gateway/DNS", "netapp"),
    UrcSpec("+eventnetapp:ip_leased", "+eventnetapp:ip_leased,<ip>,<lease time>,<mac>", "our DHCP server leased an address to a station", "netapp"),
    UrcSpec("+eventnetapp:ip_released", "+eventnetapp:ip_released,<ip>,<mac>,<reason>", "a station holding a lease left", "netapp"),
    UrcSpec("+eventnetapp:ipv4_lost", "+eventnetapp:ipv4_lost,<status>", "address lost because the link was lost (AP gone, dropped by AP)", "netapp"),
    UrcSpec("+eventnetapp:dhcp_ipv4_acquire_timeout", "+eventnetapp:dhcp_ipv4_acquire_timeout,<status>", "associated but no DHCP answer (AP ip 0.0.0.0, or our AP without DHCP server) within 1 s", "netapp"),
    UrcSpec("+eventnetapp:ipv6_lost", "+eventnetapp:ipv6_lost,<ip>", "link lost while IPv6 was enabled", "netapp"),
    UrcSpec("+eventnetapp:request", "+eventnetapp:request,<handle>,<method>,<uri>,<body length>", "HTTP server request for the host (T25, our format)", "netapp"),
    UrcSpec("+eventsock:tx_failed", "+eventsock:tx_failed,<sd>,<status>", "a datagram could not be delivered (ICMP error)", "socket"),
    UrcSpec("+eventsock:async_event", "+eventsock:async_event,<sd>,<connected_secured|wrong_root_ca>,<error>", "TLS connect result", "socket"),
    UrcSpec("+eventmqtt:operation", "+eventmqtt:operation,<connack|puback|suback|unsuback>,<values>", "MQTT acknowledgements", "mqtt"),
    UrcSpec("+eventmqtt:recv", "+eventmqtt:recv,<topic>,<qos>,<retain>,<dup>,<format>,<length>,<message>", "MQTT message received", "mqtt"),
    UrcSpec("+eventmqtt:disconnect", "+eventmqtt:disconnect", "MQTT connection closed", "mqtt"),
]


class TiSimpleLink(DeviceMixin, SocketMixin, WlanMixin, FileMixin, NetAppMixin, NetCfgMixin, MqttMixin, HttpMixin, Profile):
    name = "ti-simplelink"
    aliases = ("ti", "cc3220", "simplelink")
    summary = "TI SimpleLink Wi-Fi CC32xx AT commands (sockets, TLS, WLAN, files, NetApp, MQTT, HTTP)"
    default_baud = 115200
    dialect = DIALECT
    families = ("device", "socket", "wlan", "file", "netapp", "netcfg", "netutil", "mqtt", "http")
    deviations = DEVIATIONS
    world_options = {
        "mdns_peers": "list of mDNS services the module's cache sees (NetAPPGetHostByService, GetServiceList)",
        "http_server_host": "host address the NetApp HTTP server binds (default 127.0.0.1)",
    }
    urcs = URCS

    def __init__(self, module):
        super().__init__(module)
        self.started = False
        self.role = "sta"
        self.cfg: dict = {}
        self.time_offset = 0.0
        self.status_flags: dict = {}
        self.sockets: dict = {}
        self.wlan_ap = None
        self.wlan_sec = "open"
        self.lease = None
        self.wlan_task = None
        self.own_ap = None
        self.stations: dict = {}
        self.active_mac = None
        self.rx_filters: dict = {}
        self.files: dict = {}
        self.next_fid = 1
        self.apps: set = set()
        self.http_runner = None
        self.http_port = None
        self.requests: dict = {}
        self.next_handle = 1
        self.ping_task = None
        self.ping_stopping = False
        self.services: dict = {}
        self.temp_keys: dict = {}
        self.mqtt: dict = {}
        self.http: dict = {}
        self.http_proxy = None
        self.fs_init()
        module.engine.raw_field_hook = self.raw_field_hook

    # ---- dialect ------------------------------------------------------------------------------
    def format_error(self, err: CmdError) -> str:
        return format_error(err)

    def raw_field_hook(self, name: str, idx: int, args) -> int | None:
        """Framing of data fields whose format is not in the command itself (MQTT, NetUtilCmd)."""
        def num(i):
            return int(args[i].text.strip(), 0)
        if name == "+MQTTPUBLISH" and idx == 5:
            return num(4) if self.mqtt_fmt(args) == 0 else -1
        if name == "+MQTTSET" and idx == 6:
            if args[1].text.strip().lower() == "will" and self.mqtt_fmt(args) == 0:
                return num(5)
            return -1
        spec = self.commands.get(name)
        fs = spec.forms.get(Form.WRITE) if spec is not None else None
        if fs is not None and name not in ("+NETUTILCMD",):
            raw = fs.params[idx]
            lp = next((q for q in fs.params if q.name == getattr(raw, "length_param", None)), None)
            if isinstance(lp, Int) and lp.hi is not None:
                try:
                    if num(fs.params.index(lp)) > lp.hi:
                        return -1          # out of range: not framed, the command fails with a parse error
                except (ValueError, IndexError):
                    return -1
        if name == "+NETUTILCMD" and idx in (4, 5):
            cmd = args[0].text.strip().lower()
            if cmd == "sign_msg" and idx == 4 and num(2) == 0:
                return num(3)
            if cmd == "verify_msg" and idx == 5 and num(2) == 0:
                return num(3) + num(4)
            return -1
        return None

    # ---- configuration ----------------------------------------------------------------------
    @property
    def persistent(self) -> bool:
        return bool(self.module.settings.get("ti.persistent", True))

    def load_cfg(self) -> None:
        c = self.module.settings.get("ti.cfg")
        self.cfg = dict(c) if isinstance(c, dict) else {}

    def save_cfg(self) -> None:
        self.module.settings.set("ti.cfg", self.cfg)

    def set_cfg(self, key: str, value, *, always: bool = False) -> None:
        """'System configured' persistence: saved when persistence is on (or for always-persistent items)."""
        self.cfg[key] = value
        if always or self.persistent:
            stored = self.module.settings.get("ti.cfg")
            stored = dict(stored) if isinstance(stored, dict) else {}
            stored[key] = value
            self.module.settings.set("ti.cfg", stored)

    # ---- NWP life cycle ----------------------------------------------------------------------
    async def nwp_start(self) -> None:
        self.load_cfg()
        self.started = True
        self.role = self.cfg.get("mode", "sta")
        self.active_mac = None
        self.active_mac = self.mac()
        self.status_flags = {}
        rf = self.cfg.get("rx_filter.stored")
        self.rx_filters = dict(rf) if isinstance(rf, dict) else {}
        svc = self.module.settings.get("ti.services")
        self.services = dict(svc) if isinstance(svc, dict) else {}
        self.module.urc(f"+eventgeneral:init_complete,{self.role}")
        if self.role == "ap":
            self.publish_own_ap()
        elif self.role == "sta":
            policy = self.cfg.get("policy.connection", ["auto"])
            last = self.module.settings.get("ti.last_ap")
            if "fast" in policy and isinstance(last, list) and len(last) == 4:
                self.start_supervisor(tuple(last))         # fast connect: the last AP first
            elif "auto" in policy and any(self.profiles()):
                self.start_supervisor()

    async def nwp_stop(self, emit: bool = True) -> None:
        if self.wlan_task is not None:
            self.wlan_task.cancel()
            self.wlan_task = None
        if self.wlan_ap is not None and wifi.hosted_by(self.module.world, self.wlan_ap) is not None:
            self.drop_link(200)
        self.wlan_ap = None
        self.lease = None
        self.withdraw_own_ap()
        await self.close_all_sockets()
        await self.stop_apps()
        await self.mqtt_close_all(emit=emit)
        await self.http_close_all()
        self.files.clear()
        self.temp_keys.clear()
        self.started = False
        self.active_mac = None

    async def shutdown(self) -> None:
        try:
            await self.nwp_stop(emit=False)
        except Exception as e:  # pragma: no cover - best effort on power off
            log.warning("ti shutdown: %s", e)
