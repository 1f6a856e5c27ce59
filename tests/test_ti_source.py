"""TI SimpleLink against what TI's own AT interpreter source prints (atcmd_socket.c, atcmd_wlan.c,
atcmd_netapp.c, atcmd.c; see profiles/ti_simplelink/README.md), driven the way host drivers drive it:
lower-camel command names, CR LF line ends, empty optional fields as bare commas, exact output bytes.

Sockets bound to the module's own (virtual) addresses are reached by real local peers on the host's
listen address (127.0.0.1 / ::1)."""
from __future__ import annotations

import base64
import re
import socket
from pathlib import Path

import pytest

from test_ti_common import LAB, Ti, ti, world  # noqa: F401  (ti is a fixture)

STA_IP = LAB["ip"]                  # what +eventnetapp:ipv4_acquired reported


def free_port(kind=socket.SOCK_STREAM, fam=socket.AF_INET, host="127.0.0.1") -> int:
    s = socket.socket(fam, kind)
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def raw(e: Ti, line: str, until: bytes, timeout: float = 10.0) -> bytes:
    """Write ``line`` CR LF and return every byte up to and including ``until`` (a regex)."""
    e.write(line.encode() + b"\r\n")
    return e.read_until(until, timeout)


def sock(e: Ti, dom="INET", typ="STREAM", proto="TCP") -> int:
    out = e.ok(f"AT+socket={dom},{typ},{proto}")
    m = re.fullmatch(rb"\+socket:(\d+)\r\n", out)
    assert m, out
    return int(m.group(1))


# ---- Base64 lengths ------------------------------------------------------------------------------
def test_base64_length_counts_characters_both_ways(ti, tcp_echo):
    sd = sock(ti)
    assert raw(ti, f"AT+connect={sd},INET,{tcp_echo.port},127.0.0.1", rb"\+connect:[^\r]*\r\nOK\r\n") == \
        f"OK\r\n+connect:{tcp_echo.port},127.0.0.1\r\nOK\r\n".encode()
    # the line: 20 Base64 characters carrying 14 bytes
    assert ti.cmd(f"AT+send={sd},1,20,QmFzZTY0IHBheWxvYWQ=") == b"OK\r\n"
    tcp_echo.wait_received(14)
    assert raw(ti, f"AT+recv={sd},1,100", rb"\+recv:[^\r]*\r\nOK\r\n") == \
        f"OK\r\n+recv:{sd},1,20,QmFzZTY0IHBheWxvYWQ=\r\nOK\r\n".encode()
    # the decoded size is not the length of a Base64 field: refused, nothing sent
    assert ti.cmd(f"AT+send={sd},1,14,QmFzZTY0IHBheWxvYWQ=") == b"ERROR: parse parameters,-4\r\n"
    # format 0 still counts raw bytes
    assert ti.cmd(f"AT+send={sd},0,5,a,b\rc") == b"OK\r\n"
    assert raw(ti, f"AT+recv={sd},0,100", rb"\+recv:\d+,0,5,a,b\rc\r\nOK\r\n") == f"OK\r\n+recv:{sd},0,5,a,b\rc\r\nOK\r\n".encode()
    assert tcp_echo.wait_received(19) == 19


def test_base64_lengths_in_files(ti):
    out = ti.ok("AT+fileOpen=/b64.bin,CREATE|WRITE,64")
    fid = int(re.fullmatch(rb"\+fileopen:(\d+),0\r\n", out).group(1))
    assert ti.cmd(f"AT+fileWrite={fid},0,1,8,AAEC/w==") == b"+filewrite:4\r\nOK\r\n"    # 8 chars, 4 bytes
    assert ti.cmd(f"AT+fileClose={fid},,") == b"OK\r\n"
    fid = int(re.search(rb"\+fileopen:(\d+),", ti.ok("AT+fileOpen=/b64.bin,READ,")).group(1))
    assert ti.cmd(f"AT+fileRead={fid},0,1,4") == b"+fileread:1,8,AAEC/w==\r\nOK\r\n"


# ---- scan and profiles -----------------------------------------------------------------------------
def scan_world() -> dict:
    hidden = dict(LAB, ssid="secret", bssid="02:aa:bb:cc:dd:02", hidden=True, channel=1, rssi=-60)
    guest = {"ssid": "guest net", "security": "open", "channel": 11, "rssi": -70, "bssid": "02:aa:bb:cc:dd:01"}
    return {"wifi": {"access_points": [dict(LAB), hidden, guest]}}


def test_scan_one_line_per_network_and_profileget_fields():
    with Ti(world=scan_world()) as e:
        e.boot()
        assert e.cmd("AT+wlanScan=0,30") == (b"+wlanscan:lab,0x2:0x11:0x22:0x33:0x44:0x55,-40,6,wpa2,0,ccmp,psk\r\n"
                                            b"+wlanscan:guest net,0x2:0xaa:0xbb:0xcc:0xdd:0x1,-70,11,open,0,none,none\r\n"
                                            b"OK\r\n")
        assert e.cmd("AT+wlanScan=1,1") == b"OK\r\n"          # the hidden network only: not printed
        assert e.cmd(f"AT+wlanProfileAdd=lab,,WPA_WPA2,{LAB['password']},,,,5") == b"+wlanprofileadd:0\r\nOK\r\n"
        assert e.cmd("AT+wlanProfileAdd=guest net,02:aa:bb:cc:dd:01,OPEN,,,,,2") == b"+wlanprofileadd:1\r\nOK\r\n"
        # ssid, bssid, security, key (empty), user, anon user, eap (empty), priority
        assert e.cmd("AT+wlanProfileGet=0") == b"+wlanprofileget:lab,,wpa_wpa2,,,,,5\r\nOK\r\n"
        assert e.cmd("AT+wlanProfileGet=1") == b"+wlanprofileget:guest net,0x2:0xaa:0xbb:0xcc:0xdd:0x1,open,,,,,2\r\nOK\r\n"


# ---- blocking commands --------------------------------------------------------------------------
def test_blocking_sequences_as_ti_source():
    with Ti(world=world(network={"hosts": {"peer.example": "127.0.0.1"}})) as e:
        e.boot()
        e.join()
        # GetHostByName: no early OK; the value line, then OK
        assert raw(e, "AT+netAppGetHostByName=peer.example,INET", rb"OK\r\n") == \
            b"+netappgethostbyname:peer.example,127.0.0.1\r\nOK\r\n"
        # NetAPPRecv has no request here: the ERROR line alone (parameters are checked first)
        assert e.cmd("AT+netAppRecv=7,0,10") == b"ERROR: process command,-2181\r\n"
        # a failing lookup: the ERROR line alone
        e.sync(lambda: setattr(e.module.resolver, "fault", "timeout"))
        e.ok("AT+netAppSet=DNS_CLIENT,TIME,200,0")
        assert raw(e, "AT+netAppGetHostByName=slow.example,INET", rb"ERROR: [^\r]*\r\n") == \
            b"ERROR: process command,-161\r\n"


def test_ping_prints_ok_then_report_only():
    with Ti() as e:
        e.boot()
        e.join()
        out = raw(e, "AT+netAppPing=INET,127.0.0.1,8,0,1000,2,0", rb"\+netappping:[^\r]*\r\n")
        assert re.fullmatch(rb"OK\r\n\+netappping:2,2,\d+\r\n", out), out
        e.expect_nothing(0.4)


# ---- servers on the module's own addresses ---------------------------------------------------------
def tcp_server_roundtrip(e: Ti, sd: int, fam: str, host: str, port: int) -> None:
    """``sd`` is bound and listening: a local peer connects to ``host``:``port``, both directions carry data."""
    af = socket.AF_INET6 if fam == "INET6" else socket.AF_INET
    peer = socket.socket(af, socket.SOCK_STREAM)
    peer.settimeout(10)
    peer.connect((host, port))
    try:
        out = raw(e, f"AT+accept={sd},{fam}", rb"\+accept:[^\r]*\r\nOK\r\n")
        m = re.fullmatch(rb"OK\r\n\+accept:(\d+),(inet6?),(\d+),([0-9a-fx.:]+)\r\nOK\r\n", out)
        assert m, out
        nsd = int(m.group(1))
        assert m.group(2).decode() == fam.lower() and int(m.group(3)) == peer.getsockname()[1]
        peer.sendall(b"ping")
        assert raw(e, f"AT+recv={nsd},0,10", rb"\+recv:[^\r]*\r\nOK\r\n") == f"OK\r\n+recv:{nsd},0,4,ping\r\nOK\r\n".encode()
        assert e.cmd(f"AT+send={nsd},0,4,pong") == b"OK\r\n"
        assert peer.recv(10) == b"pong"
        assert e.cmd(f"AT+close={nsd}") == f"+close:{nsd}\r\nOK\r\n".encode()
    finally:
        peer.close()


def udp_server_roundtrip(e: Ti, sd: int, fam: str, host: str, port: int) -> None:
    af = socket.AF_INET6 if fam == "INET6" else socket.AF_INET
    peer = socket.socket(af, socket.SOCK_DGRAM)
    peer.settimeout(10)
    peer.bind((host, 0))
    try:
        peer.sendto(b"dgram", (host, port))
        any_addr = "::" if fam == "INET6" else "0.0.0.0"
        assert raw(e, f"AT+recvFrom={sd},{fam},0,{any_addr},0,10", rb"\+recvfrom:[^\r]*\r\nOK\r\n") == \
            f"OK\r\n+recvfrom:{sd},0,5,dgram\r\nOK\r\n".encode()
        assert e.cmd(f"AT+sendTo={sd},{fam},{peer.getsockname()[1]},{host},0,5,hello") == b"OK\r\n"
        data, src = peer.recvfrom(100)
        assert data == b"hello" and src[1] == port                 # from the bound port
    finally:
        peer.close()


def test_bind_station_address_tcp_and_udp(ti):
    port = free_port()
    sd = sock(ti)
    assert ti.cmd(f"AT+bind={sd},INET,{port},{STA_IP}") == b"OK\r\n"       # the line
    assert ti.cmd(f"AT+listen={sd},1") == b"OK\r\n"
    tcp_server_roundtrip(ti, sd, "INET", "127.0.0.1", port)
    uport = free_port(socket.SOCK_DGRAM)
    ud = sock(ti, typ="DGRAM", proto="UDP")
    assert ti.cmd(f"AT+bind={ud},INET,{uport},{STA_IP}") == b"OK\r\n"
    udp_server_roundtrip(ti, ud, "INET", "127.0.0.1", uport)
    # the wildcard address: the same host listen address
    wport = free_port()
    wd = sock(ti)
    assert ti.cmd(f"AT+bind={wd},INET,{wport},0.0.0.0") == b"OK\r\n"
    assert ti.cmd(f"AT+listen={wd},1") == b"OK\r\n"
    tcp_server_roundtrip(ti, wd, "INET", "127.0.0.1", wport)


def test_bind_ipv6_link_local_and_wildcard_tcp_and_udp():
    with Ti() as e:
        e.boot()
        e.ok("AT+netCfgSet=IF,STATE,IPV6_STA_LOCAL")
        e.join()
        v6 = e.read_until(rb"\+eventnetapp:ipv6_acquired,[^,]+,[^\r]*\r\n")
        own = re.search(rb"ipv6_acquired,([^,]+),", v6).group(1).decode()
        assert re.fullmatch(r"0xfe800000:0x0:0x[0-9a-f]+:0x[0-9a-f]+", own)   # four 32-bit words, as TI prints
        port = free_port(fam=socket.AF_INET6, host="::1")
        sd = sock(e, dom="INET6")
        assert e.cmd(f"AT+bind={sd},INET6,{port},{own}") == b"OK\r\n"
        assert e.cmd(f"AT+listen={sd},1") == b"OK\r\n"
        tcp_server_roundtrip(e, sd, "INET6", "::1", port)
        uport = free_port(socket.SOCK_DGRAM, socket.AF_INET6, "::1")
        ud = sock(e, dom="INET6", typ="DGRAM", proto="UDP")
        assert e.cmd(f"AT+bind={ud},INET6,{uport},::") == b"OK\r\n"
        udp_server_roundtrip(e, ud, "INET6", "::1", uport)


def test_bind_soft_ap_address_tcp_and_udp():
    with Ti() as e:
        e.boot()
        assert e.cmd("AT+wlanSetMode=AP") == b"OK\r\n"
        assert e.cmd("AT+stop=0") == b"OK\r\n"
        assert e.cmd("AT+start") == b"OK\r\n"
        mac = e.ok("AT+netCfgGet=GET_MAC_ADDR")[len(b"+netcfgget:"):-2]
        assert re.fullmatch(rb"\+wlanget:ap,disconnected,open,[^,]+,%s\r\nOK\r\n" % re.escape(mac),
                            e.cmd("AT+wlanGet=CONNECTION,"))          # the AP role, known without an event
        ap_ip = re.search(rb"\d+\.\d+\.\d+\.\d+", e.ok("AT+netCfgGet=IPV4_AP_ADDR")).group(0).decode()
        assert ap_ip == "10.123.45.1"
        port = free_port()
        sd = sock(e)
        assert e.cmd(f"AT+bind={sd},INET,{port},{ap_ip}") == b"OK\r\n"
        assert e.cmd(f"AT+listen={sd},1") == b"OK\r\n"
        tcp_server_roundtrip(e, sd, "INET", "127.0.0.1", port)
        uport = free_port(socket.SOCK_DGRAM)
        ud = sock(e, typ="DGRAM", proto="UDP")
        assert e.cmd(f"AT+bind={ud},INET,{uport},{ap_ip}") == b"OK\r\n"
        udp_server_roundtrip(e, ud, "INET", "127.0.0.1", uport)


def test_listen_host_from_the_world():
    """network.listen_host moves where module-address binds listen (here another loopback address)."""
    with Ti(world=world(network={"listen_host": "127.0.0.2"})) as e:
        e.boot()
        e.join()
        port = free_port(host="127.0.0.2")
        sd = sock(e)
        assert e.cmd(f"AT+bind={sd},INET,{port},{STA_IP}") == b"OK\r\n"
        assert e.cmd(f"AT+listen={sd},1") == b"OK\r\n"
        tcp_server_roundtrip(e, sd, "INET", "127.0.0.2", port)


# ---- lower camel case, empty commas, README ----------------------------------------------------------
def test_lower_camel_names_and_empty_comma_padding(mosquitto):
    with Ti() as e:
        assert e.cmd("AT+start") == b"OK\r\n"
        assert raw(e, f"AT+wlanConnect={LAB['ssid']},,WPA_WPA2,{LAB['password']},,,", rb"ipv4_acquired[^\r]*\r\n") == (
            b"OK\r\n+eventwlan:connect,lab,0x2:0x11:0x22:0x33:0x44:0x55\r\n"
            b"+eventnetapp:ipv4_acquired,192.168.7.20,192.168.7.1,192.168.7.1\r\n")
        # the trailing empty fields must be there (TI's ATCmd_checkNumParams), as the manual's form shows
        assert e.cmd(f"AT+wlanConnect={LAB['ssid']},,WPA_WPA2,{LAB['password']}") == b"ERROR: number of parameters,0\r\n"
        assert e.cmd(f"AT+mqttCreate=c1,ip4,127.0.0.1,{mosquitto.port},,,,,,,v3_1_1,1,0") == b"+mqttcreate:0\r\nOK\r\n"
        assert raw(e, "AT+mqttConnect=0", rb"connack[^\r]*\r\n") == b"OK\r\n+eventmqtt:operation,connack,0\r\n"
        assert e.cmd("AT+mqttDelete=0") in (b"ERROR: process command,-3002\r\n", b"OK\r\n")


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_ti_steps() -> list[tuple[str, list[str]]]:
    text = README.read_text()
    block = text[text.index("`ti-simplelink` (115200 baud"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    steps: list[tuple[str, list[str]]] = []
    for line in block.strip("\n").splitlines():
        if not line.strip():
            continue
        if line.startswith(" "):                                  # continuation of the expectations
            steps[-1][1].extend(split_expect(line.strip()))
            continue
        cmd, exp = line.split("=>")
        steps.append((cmd.strip(), split_expect(exp.strip())))
    return steps


def split_expect(text: str) -> list[str]:
    text = re.sub(r"\s*\([^)]*\)", "", text)                       # remarks in parentheses
    return [t.strip() for t in re.split(r", (?=[+A-Z])", text) if t.strip()]


def test_readme_first_steps_work_as_written(tcp_echo):
    steps = readme_ti_steps()
    assert steps[1][0].startswith("AT+wlanConnect=")
    w = {"wifi": {"access_points": [{"ssid": "lab", "security": "wpa2", "password": "labpass123", "channel": 6,
                                      "rssi": -52, "bssid": "02:00:00:00:00:01", "ip": "192.168.1.100",
                                      "gateway": "192.168.1.1", "netmask": "255.255.255.0", "dns": "192.168.1.1"}]}}
    with Ti(world=w) as e:
        for cmd, expect in steps:
            cmd = cmd.replace("17007", str(tcp_echo.port))
            expect = [x.replace("17007", str(tcp_echo.port)) for x in expect]
            e.write(cmd.encode() + b"\r\n")
            got = [e.read_until(rb"\r\n", 10)[:-2].decode("latin-1") for _ in expect]
            assert got == expect, (cmd, got)
            if cmd.startswith("AT+send"):
                tcp_echo.wait_received(5 if ",0,5," in cmd else 10)
        e.expect_nothing(0.3)


def test_describe_shows_fields_that_may_be_empty():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "atemu.cli", "describe", "ti-simplelink"], capture_output=True,
                       text=True, timeout=60)
    text = r.stdout
    i = text.index("AT+WlanConnect=")
    block = text[i:text.index("\n  AT+", i)]
    assert block.startswith("AT+WlanConnect=<ssid>,<bssid>,<security>,<key>,<ext_user>,<ext_anon_user>,<eap_method>\n")
    assert "may be empty (keep the comma): <bssid>, <key>, <ext_user>, <ext_anon_user>, <eap_method>" in block
    assert "[<" not in block


@pytest.mark.parametrize("line", ["AT+send=0,1,3,AAA=", "AT+send=0,1,4,AAA"])
def test_bad_base64_lengths_never_crash(ti, line):
    sock(ti)
    assert ti.cmd(line) == b"ERROR: parse parameters,-4\r\n"
    assert ti.cmd("AT+test") == b"OK\r\n"


def test_manual_output_option_keeps_the_manual_typography():
    """World option ti-simplelink.output: manual prints MACs as 02:11:..., IPv6 as text, ERROR:<text>,<code>."""
    with Ti(world=world(options={"ti-simplelink.output": "manual"})) as e:
        assert e.cmd("AT+start") == b"OK\r\n"
        assert e.read_until(rb"\r\n") == b"+eventgeneral:init_complete,sta\r\n"     # manual: atemu's startup event
        e.ok("AT+netCfgSet=IF,STATE,IPV6_STA_LOCAL")
        e.write(f"AT+wlanConnect=lab,,WPA_WPA2,{LAB['password']},,,\r\n".encode())
        out = e.read_until(rb"ipv6_acquired[^\r]*\r\n")
        assert out.startswith(b"OK\r\n+eventwlan:connect,lab,02:11:22:33:44:55\r\n")
        assert re.search(rb"\+eventnetapp:ipv6_acquired,fe80::[0-9a-f:]+,192\.168\.7\.1\r\n$", out)
        assert e.cmd("AT+wlanScan=0,1") == b"+wlanscan:lab,02:11:22:33:44:55,-40,6,wpa2,0,ccmp,psk\r\nOK\r\n"
        assert e.cmd("AT+socket=INET,BOGUS,TCP") == b"ERROR:parse parameters,-2\r\n"
        assert e.cmd("AT+socket=INET,STREAM") == b"ERROR:number of parameters,-2\r\n"
        assert e.cmd("AT+bogus") == b"ERROR:command not exist,-1\r\n"


def test_source_error_lines():
    """TI's atcmd_defs.c strings: "ERROR: <description>,<code>"; count and unknown carry 0, parse errors
    StrMpl's code (-1 missing value, -4 wrong value)."""
    with Ti() as e:
        e.boot()
        assert e.cmd("AT+socket=INET,BOGUS,TCP") == b"ERROR: parse parameters,-4\r\n"
        assert e.cmd("AT+socket=INET,STREAM") == b"ERROR: number of parameters,0\r\n"
        assert e.cmd("AT+socket=INET,,TCP") == b"ERROR: parse parameters,-1\r\n"
        assert e.cmd("AT+bogus") == b"ERROR: command not exist,0\r\n"
        assert e.cmd("AT+close=9") == b"ERROR: process command,-9\r\n"


def test_bad_output_option_is_refused():
    from atemu.world import World, WorldError
    from atemu.profiles.ti_simplelink import TiSimpleLink
    w = World.from_dict({"options": {"ti-simplelink.output": "fancy"}})
    with pytest.raises(WorldError, match="ti-simplelink.output must be one of source, manual"):
        TiSimpleLink.validate_world(w)


def test_secure_mask_names_of_ti_source_and_manual_alias(ti):
    sd = sock(ti, proto="SEC")
    assert ti.cmd(f"AT+setSockOpt={sd},SOCKET,SECURE_MASK,TLS_RSA_WITH_AES_128_CBC_SHA|TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384") == b"OK\r\n"
    # bit 2 is SL_SEC_MASK_TLS_RSA_WITH_AES_256_CBC_SHA in TI's table: printed with that name
    assert ti.cmd(f"AT+getSockOpt={sd},SOCKET,SECURE_MASK") == \
        b"+getsockopt:tls_rsa_with_aes_256_cbc_sha|tls_ecdhe_rsa_with_aes_256_gcm_sha384\r\nOK\r\n"


def test_help_form_prints_the_usage_string():
    with Ti() as e:                                     # before AT+start too (TI checks help first)
        assert e.cmd("AT+wlanConnect=?") == \
            b"[ssid],[bssid],[security],[key],[ext_user],[ext_anon_user],[eap_method]\r\nOK\r\n"
        assert e.cmd("AT+wlanDisconnect=?") == b"OK\r\n"


def test_file_list_one_line_per_file_and_filectl_lines(ti):
    ti.put_file("/a.txt", b"a")
    ti.put_file("/b.txt", b"bb")
    assert ti.cmd("AT+fileGetFileList") == (b"+filegetfilelist:/a.txt,65,,1\r\n"
                                           b"+filegetfilelist:/b.txt,66,,1\r\nOK\r\n")
    assert ti.cmd("AT+fileCtl=RENAME,,/a.txt,/c.txt") == b"OK\r\n"            # TI: no value line
    assert re.fullmatch(rb"\+filectl:,\d+(,\d+){15}\r\nOK\r\n", ti.cmd("AT+fileCtl=GET_STORAGE_INFO,,,"))


def test_empty_secure_mask_restores_the_default_list(ti):
    sd = sock(ti, proto="SEC")
    assert ti.cmd(f"AT+setSockOpt={sd},SOCKET,SECURE_MASK,TLS_RSA_WITH_AES_128_GCM_SHA256") == b"OK\r\n"
    assert ti.cmd(f"AT+setSockOpt={sd},SOCKET,SECURE_MASK,") == b"OK\r\n"       # TI: missing mask = default
    out = ti.cmd(f"AT+getSockOpt={sd},SOCKET,SECURE_MASK")
    assert out.startswith(b"+getsockopt:ssl_rsa_with_rc4_128_sha|") and out.count(b"|") == 22
