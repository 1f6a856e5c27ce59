"""rnwf02: the DNS servers of AT+DNSC are really asked (a real local DNS server peer, UDP), for
DNSRESOLV and for every other name the module looks up (SOCKBR, PING); host CR LF."""
from __future__ import annotations

import pytest

from peers.dns import DnsServer
from rnwf_helpers import Rnwf

RECORDS = {
    "name.test": [("A", "10.20.30.40"), ("AAAA", "2001:db8::40")],
    "www.name.test": [("CNAME", "edge.name.test")],
    "edge.name.test": [("CNAME", "name.test")],
    "echo.test": [("A", "127.0.0.1")],
}
DNS_AEC = rb"\r\+DNS\w+:[^\r]*\r\n"


@pytest.fixture
def e():
    with Rnwf() as emu:
        emu.join()
        yield emu


@pytest.fixture
def dns():
    with DnsServer(RECORDS) as srv:
        yield srv


def resolve(e, typ: int, name: str, timeout: float = 5.0) -> bytes:
    assert e.cmd(f'AT+DNSRESOLV={typ},"{name}"') == b"OK\r\n"
    return e.read_until(DNS_AEC, timeout)


def test_dnsc_server_answers_resolv(e, dns):
    assert e.cmd(f'AT+DNSC=1.0,"{dns.address}"') == b"OK\r\n"
    assert e.cmd("AT+DNSC") == f'+DNSC:1.0,"{dns.address}"\r\n+DNSC:1.1,"0.0.0.0"\r\nOK\r\n'.encode()
    assert resolve(e, 1, "name.test") == b'\r+DNSRESOLV:1,"name.test","10.20.30.40"\r\n'
    assert dns.queries == [("name.test", 1)]
    assert resolve(e, 28, "name.test") == b'\r+DNSRESOLV:28,"name.test","2001:db8::40"\r\n'
    assert dns.queries[-1] == ("name.test", 28)
    # a CNAME chain in the answer ends at the address
    assert resolve(e, 1, "www.name.test") == b'\r+DNSRESOLV:1,"www.name.test","10.20.30.40"\r\n'
    # a name the server does not know (NXDOMAIN): the DNS module's 5.2 DNS error
    assert resolve(e, 1, "nope.test") == b"\r+DNSERR:2\r\n"
    assert dns.count("nope.test") == 1          # NXDOMAIN is an answer: not asked again
    # a name that cannot be a DNS name: the same error, nothing sent
    n = len(dns.queries)
    assert resolve(e, 1, "a..b") == b"\r+DNSERR:2\r\n"
    assert len(dns.queries) == n
    # "localhost" is not known to the server either: the host's resolver is no longer asked
    assert resolve(e, 1, "localhost") == b"\r+DNSERR:2\r\n"
    # back to no server: the host's resolver answers again
    assert e.cmd('AT+DNSC=1.0,"0.0.0.0"') == b"OK\r\n"
    n = len(dns.queries)
    assert resolve(e, 1, "localhost") == b'\r+DNSRESOLV:1,"localhost","127.0.0.1"\r\n'
    assert len(dns.queries) == n


def test_world_override_wins_over_the_server(e, dns):
    e.sync(lambda: e.module.resolver.hosts.__setitem__("name.test", "10.9.9.9"))
    assert e.cmd(f'AT+DNSC=1.1,"{dns.address}"') == b"OK\r\n"
    assert resolve(e, 1, "name.test") == b'\r+DNSRESOLV:1,"name.test","10.9.9.9"\r\n'
    assert dns.queries == []


def test_silent_server_times_out_and_second_server_is_tried(e, dns):
    with DnsServer(silent=True) as dead:
        assert e.cmd(f'AT+DNSC=1.0,"{dead.address}"') == b"OK\r\n"
        # the only server never answers: 5.1 DNS query timeout, after a retry
        assert resolve(e, 1, "name.test", timeout=15) == b"\r+DNSERR:1\r\n"
        assert dead.count("name.test") == 2
        # a second server: asked after the first one's timeout, its answer is the result
        assert e.cmd(f'AT+DNSC=1.1,"{dns.address}"') == b"OK\r\n"
        assert resolve(e, 1, "echo.test", timeout=15) == b'\r+DNSRESOLV:1,"echo.test","127.0.0.1"\r\n'
        assert dead.count("echo.test") == 1 and dns.count("echo.test") == 1


def test_refusing_server_then_second(e, dns):
    with DnsServer(rcode=2) as failing:             # SERVFAIL to everything
        assert e.cmd(f'AT+DNSC=1.0,"{failing.address}"') == b"OK\r\n"
        assert resolve(e, 1, "name.test") == b"\r+DNSERR:2\r\n"
        assert e.cmd(f'AT+DNSC=1.1,"{dns.address}"') == b"OK\r\n"
        assert resolve(e, 1, "name.test") == b'\r+DNSRESOLV:1,"name.test","10.20.30.40"\r\n'
        assert failing.count("name.test") == 3 and dns.count("name.test") == 1


def test_sockbr_by_name_uses_the_server(e, dns, tcp_echo):
    assert e.cmd(f'AT+DNSC=1.0,"{dns.address}"') == b"OK\r\n"
    assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
    assert e.cmd(f'AT+SOCKBR=1,"echo.test",{tcp_echo.port}') == b"OK\r\n"
    e.aec(rf'\r\+SOCKIND:1,"127\.0\.0\.1",\d+,"127\.0\.0\.1",{tcp_echo.port}\r\n'.encode())
    assert ("echo.test", 1) in dns.queries
    # a name the server does not know: the socket is not connected
    assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:2\r\nOK\r\n"
    assert e.cmd(f'AT+SOCKBR=2,"nope.test",{tcp_echo.port}') == b"OK\r\n"
    e.aec(rb"\r\+SOCKERR:2,\d+\r\n")
    assert dns.count("nope.test") >= 1


def test_ping_by_name_uses_the_server(e, dns):
    assert e.cmd(f'AT+DNSC=1.0,"{dns.address}"') == b"OK\r\n"
    assert e.cmd('AT+PING="echo.test"') == b"OK\r\n"
    e.aec(rb'\r\+(?:PING:"127\.0\.0\.1",\d+|PINGERR:0)\r\n', timeout=8)   # (no ICMP here: no reply)
    assert dns.count("echo.test") == 1
    assert e.cmd('AT+PING="nope.test"') == b"OK\r\n"
    assert e.read_until(rb"\+PING\w*:.*?\r\n", timeout=8) == b"\r+PINGERR:0\r\n"


def test_dnsc_values(e):
    assert e.cmd('AT+DNSC=1.0,"127.0.0.1:5300"') == b"OK\r\n"
    assert e.cmd("AT+DNSC=1.0") == b'+DNSC:1.0,"127.0.0.1:5300"\r\nOK\r\n'
    for bad in ('"dns.test"', '"127.0.0.1:0"', '"::1"', "1.2.3.4", '"1.2.3.4:x"'):
        assert e.cmd(f"AT+DNSC=1.1,{bad}") == b'ERROR:0.4,"Invalid Parameter"\r\n', bad
    assert e.cmd("AT+DNSC=1.1") == b'+DNSC:1.1,"0.0.0.0"\r\nOK\r\n'


def test_reset_forgets_the_servers(e, dns):
    assert e.cmd(f'AT+DNSC=1.0,"{dns.address}"') == b"OK\r\n"
    e.write(b"AT+RST\r\n")
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    e.read_until(rb"\+BOOT:[^\r]*\r\n>", timeout=10)
    assert e.cmd("ATE0") == b"ATE0\r\nOK\r\n"
    assert e.cmd("AT+DNSC=1.0") == b'+DNSC:1.0,"0.0.0.0"\r\nOK\r\n'
    e.join()
    assert resolve(e, 1, "localhost") == b'\r+DNSRESOLV:1,"localhost","127.0.0.1"\r\n'
    assert dns.queries == []


def test_mqtt_broker_and_sntp_server_names_use_the_server(mosquitto, sntp_server):
    import time
    with DnsServer({"broker.test": [("A", "127.0.0.1")], "ntp.test": [("CNAME", "broker.test")]}) as dns, \
            Rnwf() as e:
        assert e.cmd(f'AT+DNSC=1.0,"{dns.address}"') == b"OK\r\n"
        e.oks("AT+SNTPC=2,1", f'AT+SNTPC=3,"ntp.test:{sntp_server.port}"', "AT+SNTPC=1,1")
        e.join()
        m = e.aec(rb"\r\+TIME:(\d+)\r\n", timeout=10)
        assert abs(int(m.group(1)) - 2208988800 - time.time() - 1000) < 30     # the peer's clock (+1000 s)
        assert dns.count("ntp.test") >= 1
        e.oks('AT+MQTTC=1,"broker.test"', f"AT+MQTTC=2,{mosquitto.port}", 'AT+MQTTC=3,"rnwf-dns"', "AT+MQTTC=7,0")
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10).endswith(b"\r+MQTTCONNACK:0,0\r\n\r+MQTTCONN:1\r\n")
        assert dns.count("broker.test") == 1
