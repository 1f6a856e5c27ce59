"""TI SimpleLink NetCfg (addressing, MAC, DNS) and NetUtil (random numbers, ECDSA keys)."""
from __future__ import annotations

import base64
import re

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.exceptions import InvalidSignature
import pytest

from test_ti_common import Ti

MSG = b'sign me,\r\n"please"\x00'


def test_mac_static_ip_dns_if(tmp_path):
    with Ti(state_dir=tmp_path) as e:
        e.boot()
        mac = e.ok("AT+NetCfgGet=GET_MAC_ADDR")
        assert re.fullmatch(rb"\+netcfgget:0x8:0x0:0x28(:0x[0-9a-f]{1,2}){3}\r\n", mac)
        e.ok("AT+NetCfgSet=SET_MAC_ADDR,,[02:12:34:56:78:9A]")
        assert e.ok("AT+NetCfgGet=GET_MAC_ADDR") == mac                      # from the next start
        assert e.err("AT+NetCfgSet=SET_MAC_ADDR,,01:00:00:00:00:01") == b"parse parameters,-4"
        e.ok("AT+NetCfgSet=IPV4_STA_ADDR,STATIC,192.168.7.77,255.255.255.0,192.168.7.1,[8.8.8.8]")
        assert e.err("AT+NetCfgSet=IPV4_STA_ADDR,STATIC,192.168.7.77,255.255.255.0") == b"parse parameters,-1"
        assert e.err("AT+NetCfgSet=IPV4_STA_ADDR,STATIC,192.168.7.777,255.255.255.0,1.1.1.1,1.1.1.1") == b"parse parameters,-4"
        e.ok("AT+NetCfgSet=IPV4_DNS_CLIENT,,9.9.9.9")
        assert e.ok("AT+NetCfgGet=IPV4_DNS_CLIENT") == b"+netcfgget:9.9.9.9\r\n"
        e.ok("AT+NetCfgSet=IF,STATE,IPV6_STA_LOCAL|DISABLE_IPV4_LLA")
        assert e.ok("AT+NetCfgGet=IF") == b"+netcfgget:ipv6_sta_local|disable_ipv4_lla\r\n"
        e.ok("AT+NetCfgSet=IPV6_ADDR_LOCAL,STATIC,fe80::1")
        assert e.ok("AT+NetCfgGet=IPV6_ADDR_LOCAL") == b"+netcfgget:static,0xfe800000:0x0:0x0:0x1\r\n"
        e.ok("AT+NetCfgSet=IPV6_ADDR_GLOBAL,STATIC,0x20010db8:0:0:1,2001:db8::53")
        assert e.ok("AT+NetCfgGet=IPV6_ADDR_GLOBAL") == b"+netcfgget:static,0x20010db8:0x0:0x0:0x1\r\n"
        e.ok("AT+NetCfgSet=IPV4_AP_ADDR,STATIC,10.1.1.1,255.255.255.0,10.1.1.1,10.1.1.1")
        assert e.ok("AT+NetCfgGet=IPV4_AP_ADDR") == b"+netcfgget:static,10.1.1.1,255.255.255.0,10.1.1.1,10.1.1.1\r\n"
        e.ok("AT+NetCfgSet=IPV4_STA_ADDR,RELEASE_IP_SET,")
        assert e.err("AT+NetCfgSet=AP_STATION_DISCONNECT,,02:00:00:00:00:01") == b"process command,-2071"
        assert e.ok("AT+NetCfgGet=AP_STATIONS_INFO") == b"+netcfgget:\r\n"
        assert e.ok("AT+NetCfgGet=IPV4_DHCP_CLIENT") == b"+netcfgget:0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0,0,unknown\r\n"
        e.ok("AT+Stop=0")
        e.boot()
        assert e.ok("AT+NetCfgGet=GET_MAC_ADDR") == b"+netcfgget:0x2:0x12:0x34:0x56:0x78:0x9a\r\n"
        e.ok("AT+WlanConnect=lab,,WPA_WPA2,lab-pass-123,,,")
        out = e.read_until(rb"ipv6_acquired[^\r]*\r\n")
        assert b"+eventnetapp:ipv4_acquired,192.168.7.77,192.168.7.1,8.8.8.8\r\n" in out
        assert out.endswith(b"+eventnetapp:ipv6_acquired,0xfe800000:0x0:0x0:0x1,0x0:0x0:0x0:0x0\r\n")
        assert e.ok("AT+NetCfgGet=IPV4_STA_ADDR") == b"+netcfgget:static,192.168.7.77,255.255.255.0,192.168.7.1,8.8.8.8\r\n"
        e.ok("AT+NetCfgSet=IPV4_STA_ADDR,DHCP,")
        assert e.ok("AT+NetCfgGet=IPV4_DHCP_CLIENT") == b"+netcfgget:0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0,0,0,disabled\r\n"
        e.ok("AT+WlanDisconnect")
        e.ok("AT+WlanConnect=lab,,WPA_WPA2,lab-pass-123,,,")
        e.read_until(rb"ipv6_acquired[^\r]*\r\n")
        assert e.ok("AT+NetCfgGet=IPV4_DHCP_CLIENT") == \
            b"+netcfgget:192.168.7.20,255.255.255.0,192.168.7.1,192.168.7.1,9.9.9.9,192.168.7.1,86400,43200,bound\r\n"


def pubkey(e, idx=0) -> ec.EllipticCurvePublicKey:
    out = e.ok(f"AT+NetUtilGet=public_key,1,{idx}")
    m = re.fullmatch(rb"\+netutilget:1,88,([A-Za-z0-9+/=]{88})\r\n", out)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), base64.b64decode(m.group(1)))


def sign(e, idx, fmt=0) -> bytes:
    if fmt == 0:
        e.write(f"AT+NetUtilCmd=sign_msg,{idx},0,{len(MSG)},".encode() + MSG + b"\r\n")
        head = e.read_until(rb"\+netutilcmd:0,\d+,")
        sig = e.read_exactly(int(re.search(rb",(\d+),$", head).group(1)))
        e.read_until(rb"\r\nOK\r\n")
        return sig
    enc = base64.b64encode(MSG).decode()
    out = e.ok(f"AT+NetUtilCmd=sign_msg,{idx},1,{len(enc)},{enc}")          # length: Base64 characters
    m = re.fullmatch(rb"\+netutilcmd:1,(\d+),(\S+)\r\n", out)
    assert int(m.group(1)) == len(m.group(2))                                # printed: Base64 characters
    return base64.b64decode(m.group(2))


def test_random_and_device_key_sign_verify(tmp_path):
    with Ti(state_dir=tmp_path) as e:
        e.boot()
        nums = e.ok("AT+NetUtilGet=true_random,172")[len(b"+netutilget:"):-2].split(b":")     # 0x%x, ':' (TI)
        assert len(nums) == 172 and all(n.startswith(b"0x") and 0 <= int(n, 16) < 256 for n in nums) and len(set(nums)) > 20
        assert e.err("AT+NetUtilGet=true_random,173") == b"parse parameters,-4"
        pub = pubkey(e)
        for fmt in (0, 1):
            sig = sign(e, 0, fmt)
            pub.verify(sig, MSG, ec.ECDSA(hashes.SHA256()))                 # a real signature
        sig = sign(e, 0)
        blob = MSG + sig
        e.write(f"AT+NetUtilCmd=verify_msg,0,0,{len(MSG)},{len(sig)},".encode() + blob + b"\r\n")
        assert e.read_until(rb"OK\r\n") == b"+netutilcmd:success\r\nOK\r\n"
        m64, s64 = base64.b64encode(MSG[:-1] + b"X").decode(), base64.b64encode(sig).decode()
        assert e.ok(f"AT+NetUtilCmd=verify_msg,0,1,{len(m64)},{len(s64)},{m64}{s64}") == b"+netutilcmd:failure\r\n"
        m64 = base64.b64encode(MSG).decode()
        assert e.ok(f"AT+NetUtilCmd=verify_msg,0,1,{len(m64)},{len(s64)},{m64}{s64}") == b"+netutilcmd:success\r\n"
        raw_pub = e.ok("AT+NetUtilGet=public_key,0")
        assert raw_pub.startswith(b"+netutilget:0,65,\x04")
    with Ti(state_dir=tmp_path) as e:                   # the device key survives a power cycle
        e.boot()
        assert pubkey(e).public_numbers() == pub.public_numbers()


def test_temp_keys_and_install_op(pki):
    with Ti() as e:
        e.boot()
        assert e.err("AT+NetUtilGet=public_key,0,2") == b"process command,-3200"
        assert e.ok("AT+NetUtilCmd=temp_keys,2,create") == b""            # TI: OK alone
        pub = pubkey(e, 2)
        pub.verify(sign(e, 2), MSG, ec.ECDSA(hashes.SHA256()))
        with pytest.raises(InvalidSignature):
            pubkey(e, 0).verify(sign(e, 2), MSG, ec.ECDSA(hashes.SHA256()))
        e.ok("AT+NetUtilCmd=temp_keys,2,remove")
        assert e.err("AT+NetUtilCmd=temp_keys,2,remove") == b"process command,-3200"
        assert e.err("AT+NetUtilCmd=temp_keys,0,create") == b"process command,-3200"
        # install the client key of the test PKI from flash and sign with it
        e.put_file("/keys/client.pem", pki.client_cert.read_bytes())
        e.put_file("/keys/client.key", pki.client_key.read_bytes())
        assert e.ok("AT+NetUtilCmd=install_op,3,install,ec,secp256r1,/keys/client.pem,/keys/client.key") == b""
        key = serialization.load_pem_private_key(pki.client_key.read_bytes(), None)
        key.public_key().verify(sign(e, 3), MSG, ec.ECDSA(hashes.SHA256()))
        assert e.err("AT+NetUtilCmd=install_op,4,install,ec,secp256r1,/keys/client.pem,/keys/none.key") == b"process command,-11300"
        assert e.err("AT+NetUtilCmd=install_op,4,install,none,,/keys/client.pem,/keys/client.key") == b"process command,-3200"
        e.ok("AT+NetUtilCmd=install_op,3,uninstall,,,,")
        assert e.err("AT+NetUtilGet=public_key,1,3") == b"process command,-3200"
        assert e.err("AT+NetUtilCmd=frobnicate,1") == b"parse parameters,-4"
