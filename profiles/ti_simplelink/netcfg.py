"""NetCfg (addresses, MAC, DNS) and NetUtil (true random numbers, ECDSA keys: sign and verify)."""
from __future__ import annotations

import ipaddress
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.profile import command

from .common import (E_CRYPTO, E_WLAN_NOT_CONNECTED, OS, count_error, decode_data, encode_data, fail,
                     flags_of, nwp, param_error, parse_ip, parse_ipv4, parse_mac, parse_num, pick)

IF_FLAGS = ("IPV6_STA_LOCAL", "IPV6_STA_GLOBAL", "DISABLE_IPV4_DHCP", "IPV6_LOCAL_STATIC", "IPV6_LOCAL_STATELESS",
            "IPV6_LOCAL_STATEFUL", "IPV6_GLOBAL_STATIC", "IPV6_GLOBAL_STATEFUL", "DISABLE_IPV4_LLA",
            "ENABLE_DHCP_RELEASE", "IPV6_GLOBAL_STATELESS", "DISABLE_FAST_RENEW")
CFG_IDS = ("IF", "SET_MAC_ADDR", "IPV4_STA_ADDR", "IPV4_AP_ADDR", "IPV6_ADDR_LOCAL", "IPV6_ADDR_GLOBAL",
           "AP_STATION_DISCONNECT", "IPV4_DNS_CLIENT")
GET_IDS = ("GET_MAC_ADDR", "IPV4_STA_ADDR", "IPV4_AP_ADDR", "IF", "IPV6_ADDR_LOCAL", "IPV6_ADDR_GLOBAL",
           "AP_STATIONS_CONNECTED", "AP_STATIONS_INFO", "IPV4_DNS_CLIENT", "IPV4_DHCP_CLIENT")
MAX_KEYS = 8


class NetCfgMixin:
    def mac(self) -> str:
        if self.active_mac:
            return self.active_mac
        m = self.module.settings.get("ti.mac")
        if not m:
            m = "08:00:28:" + ":".join(f"{b:02x}" for b in os.urandom(3))
            self.module.settings.set("ti.mac", m)
        return m

    def ap_addr(self) -> dict:
        return self.cfg.get("netcfg.ipv4_ap", {"ip": "10.123.45.1", "mask": "255.255.255.0",
                                                "gw": "10.123.45.1", "dns": "10.123.45.1"})

    def ipv6_local(self) -> str:
        st = self.cfg.get("netcfg.ipv6_local", {"mode": "stateless"})
        if st.get("mode") == "static":
            return st["ip"]
        b = bytes(int(x, 16) for x in self.mac().split(":"))
        eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
        return str(ipaddress.IPv6Address(b"\xfe\x80" + b"\0" * 6 + eui))

    @command("+NetCfgSet", Form.WRITE, Keyword("config_id", values={k: k.lower() for k in CFG_IDS}), OS("config_opt"),
             OS("value1"), OS("value2"), OS("value3"), OS("value4"), family="netcfg",
             doc="Set interface modes, MAC, IPv4/IPv6 addressing, DNS")
    @nwp
    async def at_netcfgset(self, ctx: Ctx, cid: str, opt, v1, v2, v3, v4) -> None:
        vals = [v1, v2, v3, v4]
        if cid == "if":
            pick(opt, ("STATE",), "config option")
            self.set_cfg("netcfg.if", flags_of(v1, IF_FLAGS, "interface mode"))
        elif cid == "set_mac_addr":
            mac = parse_mac(v1 if v1 is not None else opt)
            if int(mac.split(":")[0], 16) & 1:
                raise param_error("multicast MAC addresses are not allowed")
            self.module.settings.set("ti.mac", mac)       # applies from the next AT+Start
        elif cid in ("ipv4_sta_addr", "ipv4_ap_addr"):
            choices = ("STATIC", "DHCP", "DHCP_LLA", "RELEASE_IP_SET", "RELEASE_IP_OFF") if cid == "ipv4_sta_addr" else ("STATIC",)
            mode = pick(opt, choices, "config option")
            if mode == "static":
                if any(v is None for v in vals):
                    raise count_error("STATIC needs address, mask, gateway and DNS")
                ip, mask, gw, dns = (parse_ipv4(v) for v in vals)
                entry = {"mode": "static", "ip": ip, "mask": mask, "gw": gw, "dns": dns}
                self.set_cfg("netcfg.ipv4_sta" if cid == "ipv4_sta_addr" else "netcfg.ipv4_ap", entry)
            elif mode in ("release_ip_set", "release_ip_off"):
                self.set_cfg("netcfg.release_ip", mode == "release_ip_set")
            else:
                self.set_cfg("netcfg.ipv4_sta", {"mode": mode})
        elif cid in ("ipv6_addr_local", "ipv6_addr_global"):
            choices = ("STATIC", "STATELESS", "STATEFUL") if cid == "ipv6_addr_local" else ("STATIC", "STATEFUL")
            mode = pick(opt, choices, "config option")
            entry = {"mode": mode}
            if mode == "static":
                entry["ip"] = parse_ip(v1, 6)
                if cid == "ipv6_addr_global":
                    entry["dns"] = parse_ip(v2, 6) if v2 else "::"
            self.set_cfg("netcfg." + cid.replace("_addr", ""), entry)
        elif cid == "ap_station_disconnect":
            mac = parse_mac(v1 if v1 is not None else opt)
            if not self.kick_station(mac):
                raise fail(E_WLAN_NOT_CONNECTED, f"no station {mac} is connected to this AP")
        else:
            self.set_cfg("netcfg.dns2", parse_ipv4(v1 if v1 is not None else opt))

    @command("+NetCfgGet", Form.WRITE, Keyword("config_id", values={k: k.lower() for k in GET_IDS}), family="netcfg",
             doc="Read network configuration: +netcfgget:<values>")
    @nwp
    async def at_netcfgget(self, ctx: Ctx, cid: str) -> None:
        if cid == "get_mac_addr":
            out = self.mac()
        elif cid == "ipv4_sta_addr":
            st = self.cfg.get("netcfg.ipv4_sta", {"mode": "dhcp"})
            le = self.lease or {"ip": "0.0.0.0", "mask": "0.0.0.0", "gw": "0.0.0.0", "dns": "0.0.0.0"}
            if st["mode"] == "static":
                le = st
            out = f"{st['mode']},{le['ip']},{le['mask']},{le['gw']},{le['dns']}"
        elif cid == "ipv4_ap_addr":
            a = self.ap_addr()
            out = f"static,{a['ip']},{a['mask']},{a['gw']},{a['dns']}"
        elif cid == "if":
            out = "|".join(f.replace("disable_ipv4_lla", "disable_ipv4_lls") for f in self.cfg.get("netcfg.if", []))
        elif cid == "ipv6_addr_local":
            st = self.cfg.get("netcfg.ipv6_local", {"mode": "stateless"})
            out = f"{st['mode']},{self.ipv6_local()}"
        elif cid == "ipv6_addr_global":
            st = self.cfg.get("netcfg.ipv6_global", {"mode": "stateful"})
            out = f"{st['mode']},{st.get('ip', '::')}"
        elif cid == "ap_stations_connected":
            out = str(len(self.stations))
        elif cid == "ap_stations_info":
            out = ";".join(f"{st['ip'] or '0.0.0.0'},{mac},{st['name']}" for mac, st in self.stations.items())
        elif cid == "ipv4_dns_client":
            out = self.cfg.get("netcfg.dns2", "0.0.0.0")
        else:
            le = self.lease
            if le is None or not le.get("dhcp"):
                out = "0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0,0," + ("disabled" if le else "unknown")
            else:
                out = (f"{le['ip']},{le['mask']},{le['gw']},{le['dns']},{self.cfg.get('netcfg.dns2', '0.0.0.0')},"
                       f"{le['gw']},86400,43200,bound")
        ctx.info(f"+netcfgget:{out}")

    # ---- NetUtil ------------------------------------------------------------------------------
    def key(self, idx: int) -> ec.EllipticCurvePrivateKey:
        if idx == 0:
            pem = self.module.settings.get("ti.devkey")
            if not pem:
                k = ec.generate_private_key(ec.SECP256R1())
                pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
                self.module.settings.set("ti.devkey", pem)
            return serialization.load_pem_private_key(pem.encode(), None)
        if idx in self.temp_keys:
            return self.temp_keys[idx]
        inst = (self.module.settings.get("ti.installed") or {}).get(str(idx))
        if inst:
            data = self.fs_read(inst["key"])
            try:
                k = (serialization.load_pem_private_key(data, None) if b"-----BEGIN" in data
                     else serialization.load_der_private_key(data, None))
            except (ValueError, TypeError):
                raise fail(E_CRYPTO, "installed key file is not a private key") from None
            if not isinstance(k, ec.EllipticCurvePrivateKey):
                raise fail(E_CRYPTO, "installed key is not an EC key")
            return k
        raise fail(E_CRYPTO, f"no key at index {idx}")

    @command("+NetUtilGet", Form.WRITE, Keyword("id", values={"public_key": "public_key", "true_random": "true_random"}),
             Int("option", 0, 172), Int("key_index", 0, MAX_KEYS - 1, optional=True, default=0), family="netutil",
             doc="public_key,<format>[,<key index>] -> +netutilget:<format>,<length>,<key>; true_random,<n> -> n random bytes")
    @nwp
    async def at_netutilget(self, ctx: Ctx, ident: str, option: int, idx: int) -> None:
        if ident == "true_random":
            if option < 1:
                raise param_error("at least one random number")
            ctx.info("+netutilget:" + ";".join(str(b) for b in os.urandom(option)))
            return
        if option not in (0, 1):
            raise param_error("format is 0 or 1")
        pub = self.key(idx).public_key().public_bytes(serialization.Encoding.X962,
                                                      serialization.PublicFormat.UncompressedPoint)
        ctx.info(b"+netutilget:" + encode_data(option, pub))

    @command("+NetUtilCmd", Form.WRITE, Keyword("cmd", values={k: k for k in ("sign_msg", "verify_msg", "temp_keys", "install_op")}),
             OS("value1"), OS("value2"), OS("value3"), Raw("value4", length_param="value3", format_param="value2", optional=True),
             Raw("value5", length_param="value3", format_param="value2", optional=True), OS("value6"),
             family="netutil", doc="sign_msg / verify_msg (ECDSA P-256, SHA-256), temp_keys, install_op")
    @nwp
    async def at_netutilcmd(self, ctx: Ctx, cmd: str, v1, v2, v3, v4, v5, v6) -> None:
        idx = parse_num(v1, 0, MAX_KEYS - 1, "key index")
        if cmd == "sign_msg":
            fmt = parse_num(v2, 0, 1, "format")
            n = parse_num(v3, 1, 1500, "length")
            if v5 is not None or v6 is not None:
                raise count_error("sign_msg takes four values")
            data = decode_data(fmt, v4, n)
            sig = self.key(idx).sign(data, ec.ECDSA(hashes.SHA256()))
            ctx.info(b"+netutilcmd:" + encode_data(fmt, sig))
        elif cmd == "verify_msg":
            fmt = parse_num(v2, 0, 1, "format")
            n = parse_num(v3, 1, 1500, "data length")
            m = parse_num(v4.decode() if isinstance(v4, bytes) else v4, 1, 255, "signature length")
            if v6 is not None:
                raise count_error("verify_msg takes five values")
            blob = decode_data(fmt, v5, n + m)
            try:
                self.key(idx).public_key().verify(blob[n:], blob[:n], ec.ECDSA(hashes.SHA256()))
                ok = "success"
            except InvalidSignature:
                ok = "failure"
            ctx.info(f"+netutilcmd:{ok}")
        elif cmd == "temp_keys":
            op = pick(v2, ("create", "remove"), "operation")
            if idx == 0:
                raise fail(E_CRYPTO, "index 0 is the device key")
            if v3 is not None or v4 is not None:
                raise count_error("temp_keys takes two values")
            if op == "create":
                self.temp_keys[idx] = ec.generate_private_key(ec.SECP256R1())
            elif self.temp_keys.pop(idx, None) is None:
                raise fail(E_CRYPTO, f"no temporary key at index {idx}")
            ctx.info(f"+netutilcmd:{idx}")
        else:
            op = pick(v2, ("install", "uninstall"), "operation")
            if idx == 0:
                raise fail(E_CRYPTO, "index 0 is the device key")
            inst = dict(self.module.settings.get("ti.installed") or {})
            if op == "uninstall":
                if inst.pop(str(idx), None) is None:
                    raise fail(E_CRYPTO, f"no installed key at index {idx}")
            else:
                algo = pick(v3, ("none", "ec"), "algorithm")
                curve = pick(v4.decode() if isinstance(v4, bytes) else v4, ("none", "secp256r1"), "curve") if v4 else "none"
                cert = v5.decode() if isinstance(v5, bytes) else v5
                if not v6:
                    raise count_error("install needs certificate and key file names")
                if algo != "ec" or curve != "secp256r1":
                    raise fail(E_CRYPTO, "only ec / secp256r1 keys can be installed")
                if cert:
                    self.fs_read(cert)
                inst[str(idx)] = {"cert": cert or "", "key": v6}
                self.module.settings.set("ti.installed", inst)
                try:
                    self.key(idx)
                except Exception:
                    inst.pop(str(idx))
                    self.module.settings.set("ti.installed", inst)
                    raise
            self.module.settings.set("ti.installed", inst)
            ctx.info(f"+netutilcmd:{idx}")
