"""microchip-winc over a real pty: identity, echo, errors, low power, certificates, scanning, WLAN."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from peers.certs import der
from test_microchip_util import WORLD, Winc, prov_cmd, recv_to_eof


@pytest.fixture
def e():
    with Winc() as emu:
        yield emu


def test_describe_lists_35_commands_and_27_aecs():
    out = subprocess.run([sys.executable, "-m", "atemu.cli", "describe", "microchip-winc", "--json"],
                         capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    names = {c["name"] for c in d["commands"]}
    assert len(names) == 35
    for n in ("ATE", "AT+GMR", "AT+LOADCERT", "AT+WSCNP", "AT+WPROV", "AT+MQTTDISCONN", "AT+SOCKWRTO", "AT+TLSC", "AT+PING"):
        assert n in names
    urcs = {u["name"] for u in d["urcs"]}
    manual = {"+WSCNIND", "+WSCNDONE", "+WSCNERROR", "+WSTALU", "+WSTALD", "+WSTAAIP", "+WSTAERR", "+WAPSC",
              "+WAPSD", "+WAPAIP", "+WPROVEXIT", "+MQTTCONNACK", "+MQTTCONN", "+MQTTSUB", "+MQTTUNSUB",
              "+MQTTPUBACC", "+MQTTPUBCOMP", "+MQTTPUBERR", "+SOCKCL", "+SOCKIND", "+SOCKERR", "+SOCKTLS",
              "+SOCKRXT", "+SOCKRXU", "+DNSRESOLV", "+DNSERROR", "+PING"}
    assert len(manual) == 27 and manual <= urcs
    assert urcs - manual == {"+MQTTPUBRX"}  # the documented extension
    for c in d["commands"]:
        assert c["doc"], c["name"]


@pytest.mark.usefixtures("host_style")
def test_echo_identity_and_errors():
    with Winc() as e:
        # echo was on after reset (checked in Winc.start); ATE1 turns it back on
        assert e.cmd("ATE1") == b"OK\r\n"
        assert e.cmd("AT+GMI") == b'AT+GMI' + e.term + b'+GMI:"Microchip"\r\nOK\r\n'
        assert e.cmd("ATE0") == b"ATE0" + e.term + b"OK\r\n"
        assert e.cmd("AT") == b"OK\r\n"
        assert e.cmd("AT+GMM") == b'+GMM:"WINC1500"\r\nOK\r\n'
        assert e.cmd("AT+GMR") == b'+GMR:"15x0","19.6.1","19.6.1","19.5.3"\r\nOK\r\n'
        # lower case and LF after CR
        e.write(b"at+gmi\r\n")
        assert e.read_until(rb"OK\r\n") == b'+GMI:"Microchip"\r\nOK\r\n'
        assert e.cmd("AT+NOPE") == b"ERROR:1\r\n"
        assert e.cmd("HELLO") == b"ERROR:1\r\n"
        assert e.cmd("AT+GMI=?") == b"ERROR:1\r\n"
        assert e.cmd("AT+SOCKO=3") == b"ERROR:2\r\n"
        assert e.cmd("AT+SOCKO") == b"ERROR:1\r\n"
        assert e.cmd('AT+WSTAC=2,"x"') == b"ERROR:2\r\n"
        assert e.cmd("AT+WSTAC=99") == b"ERROR:2\r\n"
        assert e.cmd("AT+SOCKCL=9") == b"ERROR:4\r\n"
        assert e.cmd('AT+SOCKWR=1,3,"abc') == b"ERROR:1\r\n"
        assert e.cmd("AT+" + "X" * 5000) == b"ERROR:1\r\n"
        assert e.cmd("AT+GMI") == b'+GMI:"Microchip"\r\nOK\r\n'  # still alive


def test_gmr_prefix_option():
    world = dict(WORLD, options={"microchip-winc.gmr_prefix": "+VER"})
    with Winc(world=world) as e:
        assert e.cmd("AT+GMR") == b'+VER:"15x0","19.6.1","19.6.1","19.5.3"\r\nOK\r\n'


def test_lowpower_and_wake(e):
    e.join()
    assert e.cmd("AT+LOWPOWER=1") == b"ERROR:2\r\n"
    for sleep, probe, answer in (("AT+LOWPOWER=4", "AT+GMI", b'+GMI:"Microchip"\r\nOK\r\n'),
                                 ("AT+LOWPOWER", "AT", b"OK\r\n")):
        assert e.cmd(sleep) == b"OK\r\n"
        time.sleep(0.1)
        e.write(probe.encode() + b"\r")
        e.expect_nothing(0.3)            # asleep: the command is ignored
        e.sync(e.prof.wake)
        assert e.cmd(probe) == answer
        # the link was lost while asleep: reconfigure/reconnect needed
        assert e.cmd("AT+WSTA") == b"+WSTA:0,0\r\nOK\r\n"


def test_loadcert_readcert(e, pki):
    pem = pki.ca_cert.read_bytes()
    assert len(pem) <= 1500
    # appendix example: AT+LOADCERT=<len>, "<name>" then '#' and the bytes
    e.write(f'AT+LOADCERT={len(pem)}, "ca_pem"\r'.encode())
    e.expect_nothing(0.2)  # waiting for the binary data
    e.write(b"#" + pem)
    assert e.read_until(rb"OK\r\n") == b"+LOADCERT:0\r\nOK\r\n"
    assert (e.state_dir / "certs" / "ca_pem").read_bytes() == pem
    # DER, length unknown, ended by +++
    d = der(pki.client_cert)
    e.write(b'AT+LOADCERT=0,"client_der"\r#' + d + b"+++")
    assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:0\r\nOK\r\n"
    out = e.cmd("AT+READCERT=3")
    assert out == b"+READCERT:3," + str(len(d)).encode() + b",[" + d.hex().upper().encode() + b"]\r\nOK\r\n"
    # garbage is refused and not stored
    e.write(b'AT+LOADCERT=5,"junk"\r#hello')
    assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:1\r\nERROR:9\r\n"
    assert not (e.state_dir / "certs" / "junk").exists()
    # +++ before LEN bytes aborts
    e.write(b'AT+LOADCERT=100,"short"\r#abc+++')
    assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:1\r\nERROR:9\r\n"
    # a [hex] name is the bytes written (UTF-8 "c\u00e9rt"), as TLSC will name it
    e.write(f"AT+LOADCERT={len(pem)},[63C3A97274]\r#".encode() + pem)
    assert e.read_until(rb"OK\r\n") == b"+LOADCERT:0\r\nOK\r\n"
    assert (e.state_dir / "certs" / "c\u00e9rt").read_bytes() == pem
    assert e.cmd("AT+LOADCERT=1501,\"x\"") == b"ERROR:2\r\n"
    assert e.cmd('AT+LOADCERT=10,"../escape"') == b"ERROR:2\r\n"
    # TNG device and root certificates (DER, X.509, device signed by root)
    from cryptography import x509
    dev = e.cmd("AT+READCERT=1")
    root = e.cmd("AT+READCERT=2")
    assert e.cmd("AT+READCERT") == dev
    def parse(out):
        body = out.split(b"\r\n")[0]
        typ, n, data = body[len(b"+READCERT:"):].split(b",", 2)
        raw = bytes.fromhex(data[1:-1].decode())
        assert int(n) == len(raw)
        return x509.load_der_x509_certificate(raw)
    dc, rc = parse(dev), parse(root)
    assert dc.issuer == rc.subject
    dc.verify_directly_issued_by(rc)
    assert e.cmd("AT+READCERT=4") == b"ERROR:2\r\n"


def test_readcert_3_without_load(e):
    assert e.cmd("AT+READCERT=3") == b"ERROR:9\r\n"


def test_scan_config_and_scans(e):
    # E5
    assert e.cmd("AT+WSCNC") == b"+WSCNC:1,30\r\n+WSCNC:2,300\r\nOK\r\n"
    assert e.cmd("AT+WSCNC=2,50") == b"OK\r\n"
    assert e.cmd("AT+WSCNC=2") == b"+WSCNC:2,50\r\nOK\r\n"
    assert e.cmd("AT+WSCNC=1,-5") == b"ERROR:2\r\n"
    # E6: active scan on all channels
    assert e.cmd("AT+WSCNA=255") == b"OK\r\n"
    got = e.read_until(rb"\+WSCNDONE\r\n")
    assert got == (b'+WSCNIND:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n'
                   b'+WSCNIND:-57,0,1,"98:FC:11:41:E7:7C","test-network"\r\n'
                   b'+WSCNIND:-62,0,6,"24:F2:7F:A5:8B:81",[466F6F20C2A920626172]\r\n'
                   b'+WSCNIND:-63,4,1,"24:F2:7F:A5:8B:80","enterprise-secure"\r\n'
                   b'+WSCNIND:-70,1,11,"24:F2:7F:A5:8B:82",[]\r\n'
                   b"+WSCNDONE\r\n")
    # E7: passive scan, one channel
    assert e.cmd("AT+WSCNP=1") == b"OK\r\n"
    assert e.read_until(rb"\+WSCNDONE\r\n") == (b'+WSCNIND:-57,0,1,"98:FC:11:41:E7:7C","test-network"\r\n'
                                                 b'+WSCNIND:-63,4,1,"24:F2:7F:A5:8B:80","enterprise-secure"\r\n'
                                                 b"+WSCNDONE\r\n")
    # probing a hidden SSID (hex-written) reveals its name
    assert e.cmd("AT+WSCNA=255,[636C6F616B6564]") == b"OK\r\n"
    assert e.read_until(rb"\+WSCNDONE\r\n") == b'+WSCNIND:-70,1,11,"24:F2:7F:A5:8B:82","cloaked"\r\n+WSCNDONE\r\n'
    assert e.cmd("AT+WSCNA=15") == b"ERROR:2\r\n"
    # scan while the plain soft-AP runs: +WSCNERROR
    assert e.cmd("AT+WAP=1") == b"OK\r\n"
    assert e.cmd("AT+WSCNP=255") == b"OK\r\n"
    assert e.read_until(rb"\+WSCN\w+\r\n") == b"+WSCNERROR\r\n"
    # a second scan while one runs
    assert e.cmd("AT+WSCNP=255") == b"OK\r\n"
    assert e.cmd("AT+WSCNA=255") == b"ERROR:6\r\n"
    e.read_until(rb"\+WSCNERROR\r\n")


def test_station_connect_example_and_link_loss(e, sntp_server):
    # E8 adapted (WSTAC example uses WEP type 1; our AP is WPA2 = type 3)
    assert e.cmd("AT+WSTA") == b"+WSTA:0,0\r\nOK\r\n"
    assert e.cmd('AT+WSTAC=1, "MyAP"') == b"OK\r\n"
    assert e.cmd("AT+WSTAC=2, 3") == b"OK\r\n"
    assert e.cmd('AT+WSTAC=3,"MyAPPSK-123"') == b"OK\r\n"
    ntp = f"127.0.0.1:{sntp_server.port}"
    assert e.cmd(f'AT+WSTAC=12,"{ntp}"') == b"OK\r\n"
    assert e.cmd("AT+WSTAC") == (b'+WSTAC:1,"MyAP"\r\n+WSTAC:2,3\r\n+WSTAC:3,"MyAPPSK-123"\r\n+WSTAC:4,255\r\n'
                                 + f'+WSTAC:12,"{ntp}"\r\n+WSTAC:13,0\r\nOK\r\n'.encode())
    assert e.cmd("AT+WSTA=1") == b"OK\r\n"
    assert e.read_until(rb"\+WSTAAIP:.*?\r\n") == b'+WSTALU:1,"00:01:02:03:04:05",6\r\n+WSTAAIP:1,"192.168.0.20"\r\n'
    assert e.cmd("AT+WSTA") == b'+WSTA:1,1,"MyAP",-50,3\r\nOK\r\n'
    # the module set its clock from the configured NTP server (offset +1000 s)
    sntp_server.wait_requests(1)
    deadline = time.monotonic() + 3
    while "offset" not in e.sync(e.prof.snapshot)["ntp"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert abs(e.sync(e.prof.module_time) - time.time() - 1000) < 2
    assert e.cmd("AT+WSTAC=1,\"other\"") == b"ERROR:3\r\n"   # read-only while connected
    assert e.cmd("AT+WSTA=1") == b"ERROR:3\r\n"
    assert e.cmd("AT+WAP=1") == b"ERROR:3\r\n"
    # the control plane takes the AP off the air
    e.sync(lambda: e.module.world.access_points.pop(0))
    assert e.read_until(rb"\+WSTALD:\d\r\n", timeout=3) == b"+WSTALD:1\r\n"
    assert e.cmd("AT+WSTA") == b"+WSTA:0,0\r\nOK\r\n"
    assert e.cmd("AT+WSTA=1") == b"OK\r\n"
    assert e.read_until(rb"\+WSTAERR:\d\r\n") == b"+WSTAERR:1\r\n"


def test_station_errors_and_disconnect(e):
    assert e.cmd("AT+WSTA=1") == b"ERROR:3\r\n"    # no SSID configured
    e.ok('AT+WSTAC=1,"MyAP"')
    e.ok("AT+WSTAC=2,3")
    e.ok('AT+WSTAC=3,"wrong-key"')
    e.ok("AT+WSTA=1")
    assert e.read_until(rb"\+WSTAERR:\d\r\n") == b"+WSTAERR:2\r\n"
    e.ok("AT+WSTAC=2,0")
    e.ok("AT+WSTA=1")
    assert e.read_until(rb"\+WSTAERR:\d\r\n") == b"+WSTAERR:3\r\n"
    # channel constraint
    e.ok("AT+WSTAC=2,3")
    e.ok('AT+WSTAC=3,"MyAPPSK-123"')
    e.ok("AT+WSTAC=4,11")
    e.ok("AT+WSTA=1")
    assert e.read_until(rb"\+WSTAERR:\d\r\n") == b"+WSTAERR:1\r\n"
    e.ok("AT+WSTAC=4,6")
    # UTF-8 SSID written in hex, open network
    e.ok("AT+WSTAC=1,[466F6F20C2A920626172]")
    e.ok("AT+WSTAC=2,0")
    assert e.cmd("AT+WSTAC=1") == b"+WSTAC:1,[466F6F20C2A920626172]\r\nOK\r\n"
    e.ok("AT+WSTA=1")
    assert e.read_until(rb"\+WSTAAIP:.*?\r\n").startswith(b'+WSTALU:1,"24:F2:7F:A5:8B:81",6\r\n')
    assert e.cmd("AT+WSTA") == b"+WSTA:1,1,[466F6F20C2A920626172],-62,0\r\nOK\r\n"
    assert e.cmd("AT+WSTA=0") == b"OK\r\n"
    assert e.read_until(rb"\+WSTALD:\d\r\n") == b"+WSTALD:1\r\n"
    assert e.cmd("AT+WSTA=0") == b"OK\r\n"
    e.expect_nothing(0.2)
    # WEP with KEYINDEX*KEY against the hidden AP
    e.ok('AT+WSTAC=1,"cloaked"')
    e.ok("AT+WSTAC=2,1")
    e.ok('AT+WSTAC=3,"1*abcde"')
    e.ok("AT+WSTAC=4,255")
    e.ok("AT+WSTA=1")
    assert e.read_until(rb"\+WSTAAIP:.*?\r\n").startswith(b'+WSTALU:1,"24:F2:7F:A5:8B:82",11\r\n')


def test_soft_ap_example(e):
    # E9 (2 = WPA personal)
    assert e.cmd("AT+WAPC") == b'+WAPC:1,"DEMO_AP"\r\n+WAPC:2,0\r\n+WAPC:3,""\r\n+WAPC:4,6\r\n+WAPC:5,0\r\nOK\r\n'
    e.oks('AT+WAPC=1,"MyAPSSID"', "AT+WAPC=2,2", 'AT+WAPC=3,"MyAPPassword"', "AT+WAPC=4,11")
    assert e.cmd("AT+WAPC=2,4") == b"ERROR:2\r\n"
    assert e.cmd("AT+WAP") == b"+WAP:0\r\nOK\r\n"
    assert e.cmd("AT+WAP=1") == b"OK\r\n"
    assert e.cmd("AT+WAPC=4,1") == b"ERROR:3\r\n"   # read-only while the AP runs
    assert e.cmd("AT+WAP") == b"+WAP:1\r\nOK\r\n"
    assert e.sync(e.prof.ap_station_join, "00:01:02:03:04:05") == 1
    assert e.read_until(rb"\+WAPAIP:.*?\r\n") == b'+WAPSC:1,"00:01:02:03:04:05"\r\n+WAPAIP:1,"192.168.1.100"\r\n'
    assert e.cmd("AT+WAP") == b'+WAP:1,"00:01:02:03:04:05",-40\r\nOK\r\n'
    e.sync(e.prof.ap_station_join, "00:01:02:03:04:06")
    e.read_until(rb'\+WAPAIP:2,"192.168.1.101"\r\n')
    e.sync(e.prof.ap_station_leave, "00:01:02:03:04:05")
    assert e.read_until(rb"\+WAPSD:.*?\r\n") == b'+WAPSD:1,"00:01:02:03:04:05"\r\n'
    assert e.cmd("AT+WAP=0") == b"OK\r\n"
    assert e.read_until(rb"\+WAPSD:.*?\r\n") == b'+WAPSD:2,"00:01:02:03:04:06"\r\n'
    assert e.cmd("AT+WAP") == b"+WAP:0\r\nOK\r\n"
    # a short WPA passphrase is refused at start
    e.ok('AT+WAPC=3,"short"')
    assert e.cmd("AT+WAP=1") == b"ERROR:3\r\n"


def test_provisioning_over_tcp(e):
    # E10
    assert e.cmd("AT+WPROVC") == b"+WPROVC:1,2\r\n+WPROVC:2,[]\r\n+WPROVC:3,7777\r\nOK\r\n"
    assert e.cmd("AT+WPROVC=1,1") == b"ERROR:2\r\n"
    # the configured port is taken: the module falls back to another one
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    e.ok(f"AT+WPROVC=3,{taken}")
    assert e.cmd("AT+WPROV=1") == b"OK\r\n"
    port = e.sync(lambda: e.prof.provisioning_port)
    assert port and port != taken
    blocker.close()
    assert e.cmd("AT+WAP") == b"+WAP:1\r\nOK\r\n"
    assert e.cmd("AT+WPROVC=3,8888") == b"ERROR:3\r\n"
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        assert prov_cmd(c, b'AT+WSTAC=1,"MyAP"') == b"OK\r\n"
        assert prov_cmd(c, b"AT+WSTAC=2,3") == b"OK\r\n"
        assert prov_cmd(c, b'AT+WSTAC=3,"MyAPPSK-123"') == b"OK\r\n"
        assert prov_cmd(c, b"AT+WSTAC=1") == b'+WSTAC:1,"MyAP"\r\nOK\r\n'
        assert prov_cmd(c, b"AT+GMI") == b"ERROR:1\r\n"
        assert prov_cmd(c, b"AT+WSTAC=2,9") == b"ERROR:2\r\n"
        # scan results go to the TCP client, not the UART
        got = prov_cmd(c, b"AT+WSCNA=1")
        while not got.endswith(b"+WSCNDONE\r\n"):
            got += c.recv(4096)
        assert got == b'OK\r\n+WSCNIND:-57,0,1,"98:FC:11:41:E7:7C","test-network"\r\n+WSCNIND:-63,4,1,"24:F2:7F:A5:8B:80","enterprise-secure"\r\n+WSCNDONE\r\n'
        e.expect_nothing(0.2)
        c.sendall(b"AT+WPROV=0\r\n")
        assert recv_to_eof(c) == b"OK\r\n"   # then the link closes
    finally:
        c.close()
    assert e.read_until(rb"\+WPROVEXIT\r\n") == b"+WPROVEXIT\r\n"
    assert e.cmd("AT+WAP") == b"+WAP:0\r\nOK\r\n"
    # the server is gone
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # the host now connects with the provisioned credentials
    assert e.cmd("AT+WSTA=1") == b"OK\r\n"
    e.read_until(rb'\+WSTAAIP:1,"192.168.0.20"\r\n')


def test_provisioning_stop_from_uart(e):
    assert e.cmd("AT+WPROVC=3,0") == b"ERROR:2\r\n"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    free = s.getsockname()[1]
    s.close()
    e.ok(f"AT+WPROVC=3,{free}")
    e.ok("AT+WPROV=1")
    assert e.sync(lambda: e.prof.provisioning_port) == free
    assert e.cmd("AT+WPROV=1") == b"ERROR:3\r\n"
    assert e.cmd("AT+WAP=0") == b"ERROR:3\r\n"
    e.sync(e.prof.ap_station_join, "aa:bb:cc:dd:ee:ff")
    e.read_until(rb"\+WAPAIP:1,.*?\r\n")
    assert e.cmd("AT+WPROV=0") == b"OK\r\n"
    assert e.read_until(rb"\+WAPSD:.*?\r\n") == b'+WAPSD:1,"AA:BB:CC:DD:EE:FF"\r\n'
    e.expect_nothing(0.2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", free), timeout=1).close()


def test_deauth_fault_and_snapshot(e):
    e.join()
    snap = e.sync(e.prof.snapshot)
    assert snap["station"] == {"state": "connected", "ssid": "MyAP", "ip": "192.168.0.20"}
    e.sync(lambda: e.module.faults.inject("deauth", ssid="MyAP"))
    assert e.read_until(rb"\+WSTALD:\d\r\n") == b"+WSTALD:1\r\n"
    assert e.sync(e.prof.snapshot)["station"]["state"] == "idle"
    # reconnect, then the control plane removes the AP through the world API: immediate link down
    e.ok("AT+WSTA=1")
    e.read_until(rb"\+WSTAAIP:.*?\r\n")
    from atemu.api import change_world
    e.sync(lambda: change_world(e.module, "remove_ap", ssid="MyAP"))
    assert e.read_until(rb"\+WSTALD:\d\r\n", timeout=1) == b"+WSTALD:1\r\n"
    e.expect_nothing(0.4)   # reported once
