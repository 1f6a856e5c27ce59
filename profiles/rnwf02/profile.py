"""Microchip RNWF02 / RNWF11 AT firmware (the successor of the WINC AT set), 230400 8N1.

Source: Microchip's "RNWF02 Application Developer's Guide", chapter "AT Commands" (and the RNWF11
guide). The inventory is ``INVENTORY.md`` next to this file, the choices are in ``README.md``.

RNWF02 is a dialect of the family ``microchip-winc`` also belongs to: the station, soft-AP, scanning,
provisioning, socket, TLS, DNS, ping and MQTT machinery is shared (this class derives from
:class:`profiles.microchip_common.MicrochipFamily`); this package holds only what the RNWF dialect
says differently: the prompt and AEC framing, ``ERROR:<module>.<code>`` status codes, the
configuration tables, the ``#`` prompt of the binary phases, ``+MQTTSUBRX``, ``+WSCN`` and the
modules WINC does not have (RST, SNTP/TIME, FS, NETIF, DHCP, DNSC, ASSOC, SI, DI, CFG).
"""
from __future__ import annotations

import time
from typing import Any

from atemu.files import FlashFS
from atemu.grammar import Dialect, UrcSpec
from atemu.profile import CmdError

from atemu.profiles.microchip_common import MicrochipFamily
from atemu.profiles.microchip_common.common import _P

from .commands import RnwfCommands
from .mqtt5 import Mqtt5Commands
from .guide import NUMERIC_CMD, GuideCommands, NumericNames
from .status import STATUS, status_of

#: module id of every command (the guide numbers its chapters by firmware module)
MODULE_IDS = {
    "E": 2, "V": 2, "N": 2, "M": 2, "+IPR": 2, "+GMI": 2, "+GMM": 2, "+GMR": 2, "": 2,
    "+CFG": 3, "+WIFIC": 3, "+DHCPSC": 4, "+DNSC": 5, "+DNSRESOLV": 5, "+FS": 7,
    "+MQTTC": 8, "+MQTTCONN": 8, "+MQTTSUB": 8, "+MQTTUNSUB": 8, "+MQTTPUB": 8, "+MQTTDISCONN": 8,
    "+MQTTLWT": 8, "+MQTTSUBLST": 8, "+MQTTSUBRD": 8, "+MQTTPROPTX": 8, "+MQTTPROPRX": 8, "+MQTTPROPTXS": 8,
    "+NETIFC": 9, "+PING": 11, "+RST": 12, "+SNTPC": 13,
    "+SOCKO": 14, "+SOCKBL": 14, "+SOCKBR": 14, "+SOCKBM": 14, "+SOCKTLS": 14, "+SOCKWR": 14, "+SOCKWRTO": 14,
    "+SOCKRD": 14, "+SOCKRDBUF": 14, "+SOCKCL": 14, "+SOCKLST": 14, "+SOCKC": 14,
    "+TIME": 16, "+TLSC": 17, "+TLSCSC": 17, "+WAPC": 18, "+WAP": 18, "+WSCNC": 19, "+WSCN": 19, "+WSTAC": 20, "+WSTA": 20,
    "+ASSOC": 22, "+SI": 23, "+WPROVC": 25, "+WPROV": 25, "+DI": 26,
}


MAC = "04:91:62:9A:5C:01"
GMR = "2.0.0 0 e41f977cb [16:31:26 Apr 12 2024]"

DEVIATIONS = [
    "Framing: echo and prompt are on after every reset: each final result is followed by a bare '>'; an AEC is sent as CR, the line, CR LF and (echo on) '>'; a scan's +WSCNIND lines and +WSCNDONE are one event with one '>' after the last (the OOB demo reads a scan up to one '>'). ATE0 turns echo and prompt off until the next reset.",
    "Errors: ERROR:<module>.<code>,\"<text>\" at ATV3 (the default; the hardware prints the text, the guide's table only the code: world option rnwf02.atv3_text=false); ATV0-2, 4, 5 as the guide's table. The codes are the guide's 9.3 table completed from Microchip's WINCS02 driver; which failure reports which code is atemu's mapping (README).",
    "AT+TIME queries answer OK, then the AEC +TIME:<time> (the guide's 9.16.1.1 has no response; +TIME is its AEC 9.16.2.1).",
    "AT+RST answers OK, then the module reboots and prints +BOOT:\"RNWF - AT Command Interface v<version>...\" after rnwf02.boot_delay seconds (default 1.5).",
    "AT+FS=1 loads files with XMODEM (1 checksum, 2 CRC, 3 1K) or YMODEM (4, also batch): the module prints '#' (raw mode), then asks with NAK/'C' each second, ACKs blocks and answers OK after the EOT; data trimmed to <FILELENGTH>.",
    "Binary phases (SOCKWR/SOCKWRTO without data): the module prompts with '#', then takes exactly <LENGTH> raw bytes (+++ is data); a host silent for data_timeout seconds (default 10) abandons it: ERROR:0.8 (Command Timed Out).",
    "AT+SOCKRD=<id>,2,<n> answers '#', then the raw bytes (what it has, at most n), then OK at once, as the hardware does (the AVR/PIC MCC driver needs '#' first); world option rnwf02.binary_read=guide gives the guide's +SOCKRD:<id>,<count>,# before the bytes. Mode 1 answers +SOCKRD:<id>,<count>,\"<data>\".",
    "+SOCKRXT:<id>,<n> gives the total buffered, sent when data arrives on an empty buffer or once the host has read what the last one announced and more is there: every announcement can be read in full, and a host reading one in pieces finds no stale ones. A host that stops reading before the end is told the total left after rnwf02.rxt_reminder seconds (default 1) without a read.",
    "Strings the module prints are quoted with '\\\"' and '\\\\' escaped (JSON payloads read as sent); input strings accept the same escapes and [hex].",
    "+MQTTSUBRX:<dup>,<qos>,<retain>,\"<topic>\",\"<payload>\"; with AT+MQTTC=9,<n> (n > 0) a longer payload is announced +MQTTSUBRX:<dup>,<qos>,<retain>,\"<topic>\",<msg id>,<length> and read with AT+MQTTSUBRD.",
    "After AT+WSTA=1: +WSTALU:<assoc>,\"<bssid>\",<ch>, +WSTAAIP:<assoc>,\"FE80::...\" (link-local from the MAC), then +WSTAAIP:<assoc>,\"<IPv4>\"; <assoc> counts associations since reset. With SNTP enabled, +TIME:<NTP seconds> after the real SNTP exchange.",
    "+WSCNIND:<rssi>,<sec>,<ch>,\"<bssid>\",\"<ssid>\" with the WSTAC security numbering, then +WSCNDONE:<count>.",
    "MQTT 5 (AT+MQTTC=8,5): transmit properties defined with AT+MQTTPROPTX and selected with AT+MQTTPROPTXS (0 = all) go on the packets that may carry them (CONNECT, will as at AT+MQTTLWT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT); each property the broker sends (CONNACK, PUBLISH, acks, DISCONNECT) is kept for AT+MQTTPROPRX and announced +MQTTPROPRX:<id> before the packet's own AEC (world option rnwf02.proprx_values=true: +MQTTPROPRX:<id>,<value>).",
    "Late failures come as the guide's AECs with the module's status code: +PINGERR:0, +DNSERR:1|2, +SOCKERR:<id>,6|7, +WSTAERR:3.",
    "Enterprise security (WSTAC SEC_TYPE 6-9): CREDENTIALS is \"<identity>:<password>\", checked against the world AP's identity and password.",
    "ATM1 (numeric mode): responses and AECs as +MM.NN: with the WINCS02 driver's module/command ids; AT+MM.NN accepted in both modes.",
    "AT+WIFIC (firmware v2, from the Harmony driver): 10 REG_DOMAIN GEN/USA/EMEA limits scan and join channels (USA 1-11); power save and coexistence are stored.",
    "AT+SOCKTLS is accepted while the connect of AT+SOCKBR runs (Microchip's Harmony and Arduino drivers send it right after SOCKBR's OK): +SOCKIND, then +SOCKTLS after the handshake.",
    "Addresses the Harmony driver writes unquoted are accepted unquoted too (SOCKWRTO, SOCKBM, WSTAC=5, MQTTUNSUB); WSTAC id 5 (BSSID) pins the AP.",
    "AT+ASSOC answers OK, then one +ASSOC AEC per association (the guide files +ASSOC under AECs; the OOB demo completes the command on it).",
    "RNWF11 (profile rnwf11) is this interface with +GMM:\"RNWF11\", without WPROV and DI, plus MDNS, ECC, TBL, READAPPIMAGE, AZURE and IOMGR (README, section RNWF11).",
]


class Rnwf02(Mqtt5Commands, RnwfCommands, GuideCommands, MicrochipFamily):
    name = "rnwf02"
    aliases = ("rnwf", "rnwf02pc", "rnwf02uc", "wincs02")
    summary = "Microchip RNWF02 Wi-Fi AT firmware (scan, STA, soft-AP, sockets, TLS, MQTT, SNTP, FS)"
    default_baud = 230400
    model = "RNWF02"
    option_prefix = "rnwf02"
    module_ids = MODULE_IDS       # command -> the guide's module id (ERROR:<module>.<code>)
    dialect = Dialect(name="rnwf", echo_default=True, hex_strings=True, backslash_escapes=True, test_forms=False,
                      leading_crlf=False, max_line=4096)
    families = ("general", "cfg", "dhcp", "dns", "fs", "mqtt", "netif", "ping", "rst", "sntp", "socket", "time",
                "tls", "wap", "scan", "wlan", "assoc", "si", "wprov", "di")
    deviations = DEVIATIONS
    world_options = {
        "ack_timeout": "seconds MQTT SUBACK/UNSUBACK/PUBACK are awaited (default 10)",
        "data_timeout": "seconds a binary data phase waits for the host (default 10)",
        "boot_delay": "seconds between AT+RST's OK and +BOOT (default 1.5)",
        "ipv6_aip": "true (rnwf02's default, firmware v2): +WSTAAIP with the IPv6 link-local address before the IPv4 "
                    "one; false (rnwf11's default): the IPv4 one only",
        "binary_read": "device (default): AT+SOCKRD/AT+SOCKRDBUF in mode 2 answer '#', the bytes, OK; guide: +SOCKRD:<id>,<n>,# first",
        "rxt_reminder": "seconds without a read after which data left unread is announced again with +SOCKRXT (default 1)",
        "atv3_text": "ATV3 (the default) prints ERROR:<code>,\"<text>\" as the hardware does (true, default) or the guide's ERROR:<code> (false)",
        "bind_host": "host address listening sockets bind (default 127.0.0.1 for TCP, 0.0.0.0 for UDP)",
        "multicast_iface": "host interface address for +SOCKBM memberships (default 127.0.0.1)",
        "proprx_values": "+MQTTPROPRX AECs carry the value too: +MQTTPROPRX:<id>,<value> (default false: the guide's +MQTTPROPRX:<id>)",
    }
    urcs = [
        UrcSpec("+BOOT", '+BOOT:"<banner>"', "the module booted (power-up or AT+RST)", "rst"),
        UrcSpec("+DNSRESOLV", "+DNSRESOLV:<TYPE>,<DOMAIN_NAME>,<QUERY_RESP>", "name resolved (type 1 A, 28 AAAA)", "dns"),
        UrcSpec("+DNSERR", "+DNSERR:<ERROR_CODE>", "name resolution failed: the DNS module's code, 1 query timeout, 2 DNS error", "dns"),
        UrcSpec("+MQTTCONNACK", "+MQTTCONNACK:<CONNACK_FLAGS>,<RETURN_CODE>",
                "broker answered CONNECT (return code as MQTT 5 reason code: 0, 132-136 for a 3.1.1 refusal...)", "mqtt"),
        UrcSpec("+MQTTCONN", "+MQTTCONN:<CONN_STATE>", "1 connected, 0 disconnected", "mqtt"),
        UrcSpec("+MQTTPUBACK", "+MQTTPUBACK:<PACKET_ID>", "QoS 1 publish acknowledged (the PUBLISH packet's id)", "mqtt"),
        UrcSpec("+MQTTPUBCOMP", "+MQTTPUBCOMP:<PACKET_ID>", "QoS 2 publish completed (the PUBLISH packet's id)", "mqtt"),
        UrcSpec("+MQTTPUBERR", "+MQTTPUBERR:<MSG_ID>", "publish failed or not acknowledged", "mqtt"),
        UrcSpec("+MQTTSUB", "+MQTTSUB:<REASON_CODE>", "SUBACK: the granted QoS, or 128 refused", "mqtt"),
        UrcSpec("+MQTTUNSUB", "+MQTTUNSUB:<RESULT>", "UNSUBACK: 0 success, 15 no subscription existed, 128 error", "mqtt"),
        UrcSpec("+MQTTSUBRX", '+MQTTSUBRX:<DUP>,<QOS>,<RETAIN>,"<TOPIC>","<PAYLOAD>" | ...,"<TOPIC>",<MSG_ID>,<LENGTH>',
                "a message arrived on a subscription (or its notification when over MQTTC id 9)", "mqtt"),
        UrcSpec("+MQTTPROPRX", "+MQTTPROPRX:<PROP_ID>", "an MQTT 5 property arrived (CONNACK, PUBLISH...): read it with AT+MQTTPROPRX=<PROP_ID>; "
                "announced before the packet's own AEC (+MQTTCONNACK, +MQTTSUBRX)", "mqtt"),
        UrcSpec("+PING", '+PING:<IP_ADDRESS>,<RTT>', "echo reply (RTT ms)", "ping"),
        UrcSpec("+PINGERR", "+PINGERR:<ERROR_CODE>", "no reply or the name did not resolve: 0 (11.0 Ping Failed)", "ping"),
        UrcSpec("+SOCKIND", "+SOCKIND:<SOCK_ID>,<LCL_ADDR>,<LCL_PORT>,<RMT_ADDR>,<RMT_PORT>", "TCP connection up (connected or accepted)", "socket"),
        UrcSpec("+SOCKRXT", "+SOCKRXT:<SOCK_ID>,<LENGTH>", "TCP data buffered", "socket"),
        UrcSpec("+SOCKRXU", "+SOCKRXU:<SOCK_ID>,<RMT_ADDR>,<RMT_PORT>,<LENGTH>", "UDP datagram buffered", "socket"),
        UrcSpec("+SOCKCL", "+SOCKCL:<SOCK_ID>", "the peer closed the socket", "socket"),
        UrcSpec("+SOCKTLS", "+SOCKTLS:<SOCK_ID>", "TLS handshake done", "socket"),
        UrcSpec("+SOCKERR", "+SOCKERR:<SOCK_ID>,<ERROR_CODE>", "connect (7) or TLS (6) failure: the socket module's code", "socket"),
        UrcSpec("+TIME", "+TIME:<NTP_SECONDS>", "the clock was set by SNTP", "time"),
        UrcSpec("+WAPAIP", '+WAPAIP:<ASSOC_ID>,"<IP>"', "the soft-AP's DHCP server leased an address", "wap"),
        UrcSpec("+WAPSC", '+WAPSC:<ASSOC_ID>,"<MAC>"', "a station joined the soft-AP", "wap"),
        UrcSpec("+WAPSD", '+WAPSD:<ASSOC_ID>,"<MAC>"', "a station left the soft-AP", "wap"),
        UrcSpec("+WSCNIND", '+WSCNIND:<RSSI>,<SEC_TYPE>,<CHANNEL>,"<BSSID>","<SSID>"', "one AP found", "scan"),
        UrcSpec("+WSCNDONE", "+WSCNDONE:<COUNT>", "scan finished", "scan"),
        UrcSpec("+WSTAAIP", '+WSTAAIP:<ASSOC_ID>,"<IP>"', "an address: IPv6 link-local first, then IPv4 (DHCP)", "wlan"),
        UrcSpec("+WSTALD", "+WSTALD:<ASSOC_ID>", "station link down", "wlan"),
        UrcSpec("+WSTAERR", "+WSTAERR:<ERROR_CODE>", "connection failed: 3 (20.3 STA Connection Failed)", "wlan"),
        UrcSpec("+WSTALU", '+WSTALU:<ASSOC_ID>,"<BSSID>",<CHANNEL>', "station link up", "wlan"),
        UrcSpec("+ASSOC", '+ASSOC:<ASSOC_ID>,<AP_STA>,"<MAC>",<RSSI>', "an association, reported after AT+ASSOC's OK (0: the peer is an AP, 1: a station)", "assoc"),
        UrcSpec("+SIMSTAT", "+SIMSTAT:<TYPE>,<ALLOC>,<FREE>,<ALLOC_SZ>,<FREE_SZ>",
                "Wi-Fi memory statistics per pool (AT+SI=0x01): 0 memory, 1 config, 2/3 high priority TX/RX, 4/5 normal TX/RX", "si"),
        UrcSpec("+SIMERR", "+SIMERR:<ALLOC_ERR>", "Wi-Fi memory allocation errors (AT+SI=0x01)", "si"),
        UrcSpec("+SIWPKTS", "+SIWPKTS:<TX>,<RX>", "Wi-Fi packets (AT+SI=0x02)", "si"),
        UrcSpec("+SIHEAP", "+SIHEAP:<ALLOC>,<FREE>,<ALLOC_SZ>,<FREE_SZ>,<PEAK_ALLOC_SZ>", "heap statistics (AT+SI=0x04)", "si"),
        UrcSpec("+SIHERR", "+SIHERR:<ALLOC_ERR>", "heap allocation errors (AT+SI=0x04)", "si"),
        UrcSpec("+SISTACK", "+SISTACK:<STACK_MIN_RESERVED>,<STACK_RESERVED>,<STACK_USAGE>", "stack usage (AT+SI=0x08)", "si"),
        UrcSpec("+WPROVAT", '+WPROVAT:<ID>,"<IP_ADDRESS>",<PORT>', "a client attached to the provisioning service", "wprov"),
        UrcSpec("+WPROVDT", "+WPROVDT:<ID>", "a provisioning client detached", "wprov"),
        UrcSpec("+WPROVEXIT", "+WPROVEXIT", "provisioning ended over the provisioning link", "wprov"),
    ]

    # security numbering of WSTAC/WAPC/+WSCNIND (the guide's table)
    STA_SEC = {0: "open", 1: "wep", 2: "wpa-wpa2", 3: "wpa2", 4: "wpa2-wpa3", 5: "wpa3",
               6: "wpa2-enterprise", 7: "wpa2-enterprise", 8: "wpa2-enterprise", 9: "wpa2-enterprise"}
    REPORT_SEC = {"open": 0, "wep": 1, "wpa": 2, "wpa-wpa2": 2, "wpa2": 3, "wpa2-wpa3": 4, "wpa3": 5, "wpa2-enterprise": 7}

    WSCNC = {1: _P("CHANNEL", "int", 0, 0, 13), 2: _P("ACT_SLOT_TIME", "int", 20, 10, 250),
             3: _P("PASV_SLOT_TIME", "int", 120, 10, 1200), 4: _P("NUM_SLOTS", "int", 2, 1, 10),
             5: _P("PROBES_PER_SLOT", "int", 2, 1, 10), 6: _P("RSSI_THRESH", "int", 0, -128, 0)}
    WSTAC = {1: _P("SSID", "str", b"", max_len=32), 2: _P("SEC_TYPE", "int", 0, choices=(0, 2, 3, 4, 5, 6, 7, 8, 9)),
             3: _P("CREDENTIALS", "str", b"", max_len=128), 4: _P("CHANNEL", "int", 0, 0, 13),
             5: _P("BSSID", "str", b"", max_len=17), 7: _P("CONN_TIMEOUT", "int", 10000, 0, 65535),
             8: _P("NETIF_IDX", "int", 0, 0, 1)}
    WAPC = {1: _P("SSID", "str", b"RNWF02_AP", max_len=32), 2: _P("SEC_TYPE", "int", 0, choices=(0, 2, 3, 4, 5)),
            3: _P("CREDENTIALS", "str", b"", max_len=128), 4: _P("CHANNEL", "int", 1, 1, 13), 5: _P("HIDDEN", "int", 0, 0, 1),
            7: _P("L2_ONLY", "int", 0, 0, 1), 8: _P("NETIF_IDX", "int", 1, 0, 1)}
    WPROVC = {1: _P("PORT", "int", 80, 1, 65535), 2: _P("ASCII", "int", 1, 0, 1)}
    MQTTC = {1: _P("BROKER_ADDR", "str", b"", max_len=64), 2: _P("BROKER_PORT", "int", 1883, 1, 65535),
             3: _P("CLIENT_ID", "str", None, max_len=23), 4: _P("USERNAME", "str", b"", max_len=128),
             5: _P("PASSWORD", "str", b"", max_len=256), 6: _P("KEEP_ALIVE", "int", 60, 0, 65535),
             7: _P("TLS_CONF_IDX", "int", 0, 0, 2), 8: _P("PROTOCOL_VERSION", "int", 3, choices=(3, 5)),
             9: _P("READ_THRESHOLD", "int", 0, 0, 4096)}
    TLSC = {1: _P("CA_CERT_NAME", "str", b"", max_len=32), 2: _P("CERT_NAME", "str", b"", max_len=32),
            3: _P("PRI_KEY_NAME", "str", b"", max_len=32), 4: _P("PRI_KEY_PASSWORD", "str", b"", max_len=32),
            5: _P("SERVER_NAME", "str", b"", max_len=64), 6: _P("DOMAIN_NAME", "str", b"", max_len=64),
            7: _P("CIPHER_SUITE", "int", 1, 1, 2),
            40: _P("PEER_AUTH", "int", 1, 0, 1), 41: _P("PEER_DOMAIN_VERIFY", "int", 1, 0, 1)}
    SNTPC = {1: _P("NTP_ENABLED", "int", 0, 0, 1), 2: _P("NTP_STATIC", "int", 0, 0, 1),
             3: _P("NTP_SVR", "str", b"0.in.pool.ntp.org", max_len=128)}
    DHCPSC = {1: _P("ENABLED", "int", 1, 0, 1), 2: _P("POOL_START", "str", b"192.168.1.100", max_len=15),
              3: _P("POOL_END", "str", b"192.168.1.109", max_len=15), 4: _P("POOL_LEASES", "int", 0, 0, 65535),
              5: _P("NETIF_IDX", "int", 1, 0, 1), 10: _P("GATEWAY", "str", b"192.168.1.1", max_len=15)}
    CFG = {1: _P("DEVICE_NAME", "str", b"", max_len=32)}

    # 11 (the number of domains, then 11.n their names) and 12 (channel mask) are read-only and
    # printed by the command itself: the OOB demo reads 11 from AT+WIFIC, the AVR/PIC MCC driver
    # asks AT+WIFIC=11
    WIFIC = {10: _P("REG_DOMAIN", "str", b"GEN", max_len=6), 20: _P("POWERSAVE", "int", 0, 0, 1),
             30: _P("COEX_ENABLE", "int", 0, 0, 1), 31: _P("COEX_INTERFACE", "int", 0, 0, 1),
             32: _P("COEX_RX_PRIO", "int", 0, 0, 1), 33: _P("COEX_TX_PRIO", "int", 0, 0, 1),
             34: _P("COEX_ANTENNA", "int", 0, 0, 1)}

    TLS_INDEXES = (1, 2)
    #: +WSTAAIP with the IPv6 link-local address (RNWF02 firmware v2, a hardware fact of issue 11)
    IPV6_AIP = True
    #: Microchip's host drivers (Harmony, Arduino) send AT+SOCKTLS right after AT+SOCKBR's OK
    TLS_WHILE_CONNECTING = True
    CONFIG_TABLES = MicrochipFamily.CONFIG_TABLES + ("SNTPC", "DHCPSC", "WIFIC", "CFG")

    def __init__(self, module):
        super().__init__(module)
        self.boot_delay = float(self.option("boot_delay", 1.5))
        self.rxt_reminder = float(self.option("rxt_reminder", 1.0))
        self.binary_read = str(self.option("binary_read", "device")).lower()
        self.atv3_text = str(self.option("atv3_text", True)).lower() not in ("0", "false", "no")
        self.ipv6_aip = str(self.option("ipv6_aip", self.IPV6_AIP)).lower() not in ("0", "false", "no")
        self.cfg["MQTTC"][3] = (self.model + "_" + MAC.replace(":", "")[-6:]).encode()
        self.cfg["CFG"][1] = self.model.encode()
        self._guide_init()
        self.lease_at: float | None = None    # module time the DHCP lease began (NETIFC 11)
        self.verbosity = 3
        self.hostname = self.model.encode()
        self.pkts = [0, 0]                # data packets sent / received, for +SIWPKTS
        self.time_format = 2              # AT+TIME's current format (NTP seconds, as +TIME after SNTP shows)
        self.number_base = 10             # ATN10 / ATN16
        self.dhcpc = True                 # NETIFC 10: DHCP client on the station interface
        self.static_ip = "0.0.0.0/0"      # NETIFC 40 with DHCPC_EN 0
        self.dns_servers = ["0.0.0.0", "0.0.0.0"]   # DNSC 1.0 / 1.1: the module's resolver asks them (none set:
        module.resolver.servers = self.dns_servers  # world overrides, then the host's resolver)
        self.prov_ids: dict[int, int] = {}           # provisioning client -> the id of +WPROVAT/+WPROVDT
        self.assoc_count = 0
        self.booted_at = time.monotonic()
        self.clock_offset = 0.0          # module clock = host clock + offset (AT+TIME=..., SNTP)
        self.mqtt_held: dict[int, tuple[str, bytes]] = {}   # MQTTC id 9: messages awaiting MQTTSUBRD
        self._mqtt5_init()
        self.lwt: tuple[int, int, str, bytes] | None = None
        self.fs = {1: FlashFS(module.state_dir / "fs" / "certs", capacity=64 * 1024, max_file=4096, max_name=32),
                   2: FlashFS(module.state_dir / "fs" / "keys", capacity=32 * 1024, max_file=4096, max_name=32)}
        self.store = self.fs[1]

    @classmethod
    def validate_world(cls, world) -> None:
        super().validate_world(world)
        from atemu.world import WorldError
        key = f"{cls.option_prefix}.binary_read"
        opts = getattr(world, "options", {}) or {}
        if key in opts and str(opts[key]).lower() not in ("device", "guide"):
            where = f"{world.source}: " if getattr(world, "source", None) else ""
            raise WorldError(f"{where}option '{key}' must be one of device, guide, not {opts[key]!r}")

    # ================================================================== framing
    def result_suffix(self) -> bytes:
        return b">" if self.module.engine.echo else b""

    def frame_urc(self, chunk: bytes) -> bytes:
        prompt = self.module.engine.echo and not getattr(self, "_in_batch", False)
        return b"\r" + chunk + (b">" if prompt else b"")

    def urc_batch(self, lines: list[str]) -> None:
        """AECs the module prints as one event (a scan's +WSCNIND lines and +WSCNDONE): each keeps
        its leading CR, the prompt comes once, after the last (Microchip's OOB demo reads a whole
        scan up to one '>')."""
        self._in_batch = True
        try:
            for line in lines[:-1]:
                self.urc(line)
        finally:
            self._in_batch = False
        if lines:
            self.urc(lines[-1])

    @staticmethod
    def fmt(value: bytes | str) -> str:
        """Quoted, with '"' and '\\' escaped by a backslash (how JSON reaches the host)."""
        text = value if isinstance(value, str) else bytes(value).decode("utf-8", "surrogateescape")
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def format_error(self, err: CmdError) -> str:
        cl = self.module.current_line
        name = cl.name if cl is not None else ""
        name = NUMERIC_CMD.get(name.upper(), name)
        mod, code = status_of(err, name, self.module_ids.get(name, 0))
        return self.status_line(f"{mod}.{code}", STATUS.get((mod, code), "General Error"))

    def status_line(self, code: str, text: str) -> str:
        """An error in the ATV level's format (the guide's table; level 3 carries the text, as the
        hardware prints it, unless the world option rnwf02.atv3_text is false)."""
        v = self.verbosity
        if v == 0:
            return "1"
        if v == 1:
            return f"1:{code}"
        if v == 2:
            return "ERROR"
        if v == 4:
            return f'ERROR:"{text}"'
        if v == 3 and not self.atv3_text:
            return f"ERROR:{code}"
        return f'ERROR:{code},"{text}"'

    def format_ok(self) -> str:
        return "0" if self.verbosity < 2 else "OK"

    # ================================================================== lifecycle
    async def boot(self) -> None:
        self.urc(f'+BOOT:"RNWF - AT Command Interface v{GMR.split()[0]} - Microchip Technology Inc"')

    def module_time(self) -> float:
        return time.time() + self.clock_offset + float(self.ntp.get("offset", 0.0))


Rnwf02.commands = NumericNames(Rnwf02.commands)
