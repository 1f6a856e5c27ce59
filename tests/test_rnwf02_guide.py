"""rnwf02: what the guide's pages say and the first version did not do, over a pty with CR LF:
status codes, ATM numeric mode, +IPR rates, +TLSCSC against a real TLS server, AT+ASSOC=<id>,
NETIFC lease times, enterprise credentials checked against the world's AP."""
from __future__ import annotations

import re
import time

from rnwf_helpers import Rnwf
from test_microchip_util import WORLD
from test_rnwf02_net import load, tcp_open

ENTERPRISE = {"wifi": {"access_points": [
    {"ssid": "corp", "security": "wpa2-enterprise", "identity": "alice", "password": "s3cret:with:colons",
     "channel": 6, "rssi": -55, "bssid": "00:0c:0c:0c:0c:01", "ip": "10.1.0.23", "gateway": "10.1.0.1"}]}}


def test_status_codes_of_the_guide():
    with Rnwf() as e:
        assert e.cmd("AT+FOO") == b'ERROR:0.3,"Unknown AT Command"\r\n'
        assert e.cmd("hello") == b'ERROR:0.2,"Invalid AT Command"\r\n'
        assert e.cmd("AT+SOCKCL=7") == b'ERROR:14.0,"Socket ID Not Found"\r\n'
        assert e.cmd("AT+SOCKO=1") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd("AT+SOCKTLS=1,1") == b'ERROR:14.3,"Invalid Socket Protocol"\r\n'
        assert e.cmd('AT+SOCKWR=1,3,"abc"') == b'ERROR:14.10,"Socket Destination Not Set"\r\n'
        assert e.cmd('AT+PING="127.0.0.1"') == b'ERROR:1.1,"STA Not Connected"\r\n'
        assert e.cmd("AT+MQTTDISCONN=0") == b'ERROR:8.0,"MQTT Error"\r\n'
        assert e.cmd('AT+FS=3,1,"nothing"') == b'ERROR:7.2,"File Not Found"\r\n'
        assert e.cmd("AT+ASSOC=1") == b'ERROR:22.0,"Association Not Found"\r\n'
        # the other verbosity levels print the same code
        assert e.cmd("ATV5") == b"OK\r\n"
        assert e.cmd("AT+ASSOC=1") == b'ERROR:22.0,"Association Not Found"\r\n'
        assert e.cmd("ATV4") == b"OK\r\n"
        assert e.cmd("AT+ASSOC=1") == b'ERROR:"Association Not Found"\r\n'
        assert e.cmd("ATV1", final=rb"(?:\A|\n)(0|1(:[\d.]+)?)\r\n") == b"0\r\n"
        assert e.cmd("AT+ASSOC=1", final=rb"(?:\A|\n)(0|1(:[\d.]+)?)\r\n") == b"1:22.0\r\n"


def test_ipr_rates_and_numeric_mode():
    with Rnwf(echo=True) as e:
        assert e.cmd("AT+IPR=9600") == b'AT+IPR=9600\r\nERROR:0.4,"Invalid Parameter"\r\n>'
        assert e.cmd("ATM1") == b"ATM1\r\nOK\r\n>"
        # responses and AECs by number (module 02 INTERNAL, command 01 GMM; 13 WSCN, 00 +WSCNIND)
        assert e.cmd("AT+GMM") == b'AT+GMM\r\n+02.01:"RNWF02"\r\nOK\r\n>'
        assert e.cmd("AT+02.01") == b'AT+02.01\r\n+02.01:"RNWF02"\r\nOK\r\n>'
        assert e.cmd("AT+0E.0B") == b"AT+0E.0B\r\n+0E.0B:\r\nOK\r\n>"            # +SOCKC: no sockets
        assert e.cmd("AT+14.0B") == b'AT+14.0B\r\nERROR:0.3,"Unknown AT Command"\r\n>'
        assert e.cmd("AT+0E.09=3") == b'AT+0E.09=3\r\nERROR:14.0,"Socket ID Not Found"\r\n>'
        assert e.cmd("AT+WSCN=1") == b"AT+WSCN=1\r\nOK\r\n>"
        got = e.read_until(rb"\+13\.01:\d+\r\n>", timeout=5)
        assert got.startswith(b'\r+13.00:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n\r+13.00:')   # one '>' per scan
        assert got.endswith(b"\r+13.01:5\r\n>")
        assert e.cmd("ATM0") == b"ATM0\r\nOK\r\n>"
        assert e.cmd("AT+02.01") == b'AT+02.01\r\n+GMM:"RNWF02"\r\nOK\r\n>'
        assert e.cmd("ATM2") == b'ATM2\r\nERROR:0.4,"Invalid Parameter"\r\n>'


def test_assoc_by_id_and_netif_lease():
    with Rnwf() as e:
        e.join()
        assert e.cmd("AT+ASSOC=1") == b"OK\r\n"
        assert e.read_until(rb"\+ASSOC:.*?\r\n") == b'\r+ASSOC:1,0,"00:01:02:03:04:05",-50\r\n'
        assert e.cmd("AT+ASSOC=2") == b'ERROR:22.0,"Association Not Found"\r\n'
        e.time("AT+TIME=1")               # lease times print in the current AT+TIME format: UTC seconds
        start = int(re.fullmatch(rb"\+NETIFC:11,(\d+)\r\nOK\r\n", e.cmd("AT+NETIFC=0,11")).group(1))
        end = int(re.fullmatch(rb"\+NETIFC:12,(\d+)\r\nOK\r\n", e.cmd("AT+NETIFC=0,12")).group(1))
        assert abs(start - time.time()) < 30 and end - start == 86400
        assert e.cmd("AT+NETIFC=0,13") == b'+NETIFC:13,"192.168.0.1"\r\nOK\r\n'
        assert e.cmd("AT+NETIFC=0,61") == b'+NETIFC:61,"FE80::691:62FF:FE9A:5C01"\r\nOK\r\n'
        assert e.cmd("AT+NETIFC=0,11,5") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'


def test_enterprise_credentials_checked_against_the_world():
    with Rnwf(world=ENTERPRISE) as e:
        e.oks('AT+WSTAC=1,"corp"', "AT+WSTAC=2,7")
        # CREDENTIALS "<identity>:<password>" (the password may hold colons)
        for cred in ("bob:s3cret:with:colons", "alice:wrong", "s3cret:with:colons"):
            assert e.cmd(f'AT+WSTAC=3,"{cred}"') == b"OK\r\n"
            assert e.cmd("AT+WSTA=1") == b"OK\r\n"
            assert e.read_until(rb"\+WSTA\w+:.*?\r\n") == b"\r+WSTAERR:3\r\n", cred
        assert e.cmd('AT+WSTAC=3,"alice:s3cret:with:colons"') == b"OK\r\n"
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSTALU:.*?\r\n") == b'\r+WSTALU:1,"00:0C:0C:0C:0C:01",6\r\n'
        e.aec(rb'\r\+WSTAAIP:1,"10\.1\.0\.23"\r\n')
        # a personal security type does not join the enterprise AP
        assert e.cmd("AT+WSTA=0") == b"OK\r\n"
        e.aec(rb"\+WSTALD:1\r\n")
        assert e.cmd("AT+WSTAC=2,3") == b"OK\r\n"
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSTA\w+:.*?\r\n") == b"\r+WSTAERR:3\r\n"


def test_enterprise_world_key_is_validated():
    import pytest
    from atemu.world import World, WorldError
    with pytest.raises(WorldError, match="identity is for wpa2-enterprise"):
        World.from_dict({"wifi": {"access_points": [{"ssid": "x", "security": "wpa2", "password": "12345678",
                                                     "identity": "alice"}]}})


def test_tlscsc_cipher_lists_reach_the_handshake(pki, tls_echo):
    with Rnwf(world=WORLD) as e:
        assert e.cmd("AT+TLSCSC") == b"+TLSCSC:1,2\r\nOK\r\n"
        avail = e.cmd("AT+TLSCSC=1,2")
        assert avail.startswith(b"+TLSCSC:2.0,4865\r\n+TLSCSC:2.1,4866\r\n+TLSCSC:2.2,4867\r\n+TLSCSC:2.3,49195\r\n")
        # list 2: only the AES-128-GCM ECDHE suites (no TLS 1.3 suite: TLS 1.2)
        for _ in range(15):
            e.ok("AT+TLSCSC=2,1.0,0")
        assert e.cmd("AT+TLSCSC=2,1") == b"OK\r\n"
        e.oks("AT+TLSCSC=2,1.0,49195", "AT+TLSCSC=2,1.1,49199")
        assert e.cmd("AT+TLSCSC=2,1") == b"+TLSCSC:1.0,49195\r\n+TLSCSC:1.1,49199\r\nOK\r\n"
        assert e.cmd("AT+TLSCSC=2,1.5,49195") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+TLSCSC=2,1.2,1234") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+TLSCSC=2,2.0,1") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
        assert e.cmd("ATN16") == b"OK\r\n"
        assert e.cmd("AT+TLSCSC=2,1.1") == b"+TLSCSC:1.1,0x0000c02f\r\nOK\r\n"
        e.join()
        load(e, 1, "ca", pki.ca_cert.read_bytes())
        e.oks('AT+TLSC=1,1,"ca"', 'AT+TLSC=1,5,"localhost"', "AT+TLSC=1,7,2")
        tcp_open(e, tls_echo.address[1])
        assert e.cmd("AT+SOCKTLS=1,1") == b"OK\r\n"
        assert e.read_until(rb"\+SOCK\w+:.*?\r\n", timeout=10) == b"\r+SOCKTLS:1\r\n"
        sess = tls_echo.wait_sessions(1)[0]
        assert sess.version == "TLSv1.2" and "AES128-GCM" in sess.cipher, (sess.version, sess.cipher)
        # configuration 2 keeps the default list (all suites): TLS 1.3
        e.oks('AT+TLSC=2,1,"ca"', 'AT+TLSC=2,5,"localhost"')
        tcp_open(e, tls_echo.address[1], sid=2)
        assert e.cmd("AT+SOCKTLS=2,2") == b"OK\r\n"
        assert e.read_until(rb"\+SOCK\w+:.*?\r\n", timeout=10) == b"\r+SOCKTLS:2\r\n"
        assert tls_echo.wait_sessions(2)[1].version == "TLSv1.3"


def test_connack_reason_codes_of_the_guide(mosquitto_factory):
    # a 3.1.1 broker refusing the user: the guide's +MQTTCONNACK return code 135 (not authorized;
    # mosquitto answers 5 to a wrong password) / 134 (bad user name or password, 4)
    broker = mosquitto_factory(passwords={"dev": "right-pass"}, allow_anonymous=False)
    with Rnwf() as e:
        e.join()
        e.oks('AT+MQTTC=1,"127.0.0.1"', f"AT+MQTTC=2,{broker.port}", 'AT+MQTTC=3,"rnwf-auth"',
              'AT+MQTTC=4,"dev"', 'AT+MQTTC=5,"wrong-pass"')
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        got = e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10)
        assert re.fullmatch(rb"\r\+MQTTCONNACK:0,13[45]\r\n\r\+MQTTCONN:0\r\n", got), got
        e.ok('AT+MQTTC=5,"right-pass"')
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10) == b"\r+MQTTCONNACK:0,0\r\n\r+MQTTCONN:1\r\n"


def test_socket_options_set_before_the_connect_apply(tcp_sink):
    import socket
    with Rnwf() as e:
        e.join()
        assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
        e.oks("AT+SOCKC=1,3,45", "AT+SOCKC=1,2,1")
        assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{tcp_sink.port}') == b"OK\r\n"
        e.aec(rb'\r\+SOCKIND:1,.*?\r\n')
        conn = e.prof.socks[1].conn
        assert e.sync(conn.get_keepalive)["idle"] == 45
        assert e.sync(conn.get_option, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_rnwf11_si_filter_is_its_guides():
    with Rnwf(profile="rnwf11") as e:
        assert e.cmd("AT+SI=4") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert re.fullmatch(rb"\+SI:\d+\r\nOK\r\n", e.cmd("AT+SI=2"))
        assert e.read_until(rb"\+SIWPKTS:.*?\r\n") == b"\r+SIWPKTS:0,0\r\n"
    with Rnwf() as e:
        assert re.fullmatch(rb"\+SI:\d+\r\nOK\r\n", e.cmd("AT+SI=4"))
        e.aec(rb"\+SIHERR:0\r\n")
