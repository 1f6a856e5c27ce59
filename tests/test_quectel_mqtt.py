"""Quectel FCM242D MQTT (AT+QMT*) over a real pty against a real mosquitto (plain and TLS)."""
from __future__ import annotations

import re
import time

import pytest

from harness import Emu
from quectel_helpers import LAB_WORLD as WORLD, boot_quiet as boot, lab_emu, lab_wifi_up as wifi_up
from quectel_helpers import all_ok, ufs_upload as upload, urc_match as urc


@pytest.fixture
def emu():
    yield from lab_emu()


def expect_all(e: Emu, *patterns: str, timeout: float = 8.0) -> bytes:
    """Read until every pattern has appeared (in any order); return all that was read."""
    got = b""
    deadline = time.monotonic() + timeout
    while not all(re.search(p.encode(), got) for p in patterns):
        left = deadline - time.monotonic()
        assert left > 0, f"missing {[p for p in patterns if not re.search(p.encode(), got)]} in {got!r}"
        e._fill()
        got += bytes(e.buf)
        e.buf.clear()
    return got


def open_conn(e: Emu, port: int, idx: int = 0, client: str = "dev1", host: str = "127.0.0.1") -> None:
    assert e.cmd(f'AT+QMTOPEN={idx},"{host}",{port}') == b"\r\nOK\r\n"
    urc(e, rf"\+QMTOPEN: {idx},0\r\n")
    assert e.cmd(f'AT+QMTCONN={idx},"{client}"') == b"\r\nOK\r\n"
    urc(e, rf"\+QMTCONN: {idx},0,0\r\n")


def publish(e: Emu, line: str, payload: bytes) -> bytes:
    e.write(line + "\r")
    e.read_until(rb"\r\n> ")
    e.write(payload)
    return e.read_until(rb"\r\n(OK|ERROR)\r\n")


# ------------------------------------------------------------------------------------------ E8

def test_e8_mqtt_without_ssl(emu, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("topic/#")
    assert emu.cmd('AT+QMTCFG="recv/mode",0,0') == b"\r\nOK\r\n"
    assert emu.cmd("AT+QMTOPEN=?") == b"\r\n+QMTOPEN: (0-5),<host_name>,(1-65535)\r\n\r\nOK\r\n"
    assert emu.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{mosquitto.port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 0,0\r\n")
    assert emu.cmd("AT+QMTOPEN?") == f'\r\n+QMTOPEN: 0,"127.0.0.1",{mosquitto.port}\r\n\r\nOK\r\n'.encode()
    assert emu.cmd("AT+QMTCONN=?") == b"\r\n+QMTCONN: (0-5),<clientID>,<username>,<password>\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,1\r\n\r\nOK\r\n"
    assert emu.cmd('AT+QMTCONN=0,"test","quectel","quectel"') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTCONN: 0,0,0\r\n")
    assert emu.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,3\r\n\r\nOK\r\n"
    snap = emu.sync(emu.module.profile.mqtt_snapshot)
    assert snap["0"]["state"] == "connected" and snap["0"]["port"] == mosquitto.port
    assert emu.cmd("AT+QMTSUB=?") == b"\r\n+QMTSUB: (0-5),(0-65535),<topic>,(0-2)\r\n\r\nOK\r\n"
    assert emu.cmd('AT+QMTSUB=0,1,"topic/example",2') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 0,1,0,2\r\n")
    assert emu.cmd('AT+QMTSUB=0,1,"topic/pub",0') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 0,1,0,0\r\n")
    probe.publish("topic/example", b"This is the payload related to topic", qos=0)
    urc(emu, r'\+QMTRECV: 0,0,"topic/example",36,"This is the payload related to topic"\r\n')
    assert emu.cmd('AT+QMTUNS=0,2,"topic/example"') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTUNS: 0,2,0\r\n")
    assert emu.cmd("AT+QMTPUB=?") == b"\r\n+QMTPUB: (0-5),(0-65535),(0-2),(0,1),<topic>,(1-2048)\r\n\r\nOK\r\n"
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"topic/pub",30', b"This is test data, hello MQTT.") == b"\r\nOK\r\n"
    # our own subscription to topic/pub delivers it back
    expect_all(emu, r"\+QMTPUB: 0,0,0\r\n", r'\+QMTRECV: 0,0,"topic/pub",30,"This is test data, hello MQTT."\r\n')
    assert probe.wait_for("topic/pub") == (b"This is test data, hello MQTT.", 0, False)
    # unsubscribed: nothing arrives any more on topic/example
    probe.publish("topic/example", b"late", qos=1)
    emu.expect_nothing(0.4)
    assert emu.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTDISC: 0,0\r\n")
    assert emu.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QMTOPEN?") == b"\r\nOK\r\n"


# ------------------------------------------------------------------------------------------ E9 (TLS)

def tls_client_0(e: Emu, pki, ctx: int) -> None:
    """Client 0 uses SSL context <ctx>: the lab CA, the client certificate and key, seclevel 2."""
    upload(e, "ca.pem", pki.ca_cert.read_bytes())
    upload(e, "user.pem", pki.client_cert.read_bytes())
    upload(e, "user_key.pem", pki.client_key.read_bytes())
    all_ok(e, f'AT+QMTCFG="ssl",0,1,{ctx}', f'AT+QSSLCFG="cacert",{ctx},"ca.pem"',
           f'AT+QSSLCFG="clientcert",{ctx},"user.pem"', f'AT+QSSLCFG="clientkey",{ctx},"user_key.pem"',
           f'AT+QSSLCFG="seclevel",{ctx},2')


def test_e9_mqtt_with_ssl_client_certificate(emu, mosquitto_tls, pki, mqtt_probe):
    probe = mqtt_probe(mosquitto_tls)
    probe.subscribe("$aws/#")
    assert emu.cmd('AT+QMTCFG="recv/mode",0,0') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QMTCFG="ssl",0,1,2') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QMTCFG="ssl",0') == b'\r\n+QMTCFG: "ssl",1,2\r\n\r\nOK\r\n'
    upload(emu, "ca.pem", pki.ca_cert.read_bytes())
    upload(emu, "user.pem", pki.client_cert.read_bytes())
    upload(emu, "user_key.pem", pki.client_key.read_bytes())
    # (E9 configures the files on ctx 1 and the level on ctx 2, item 42: we configure ctx 2 throughout)
    all_ok(emu, 'AT+QSSLCFG="cacert",2,"ca.pem"', 'AT+QSSLCFG="clientcert",2,"user.pem"',
                'AT+QSSLCFG="clientkey",2,"user_key.pem"', 'AT+QSSLCFG="seclevel",2,2',
                'AT+QSSLCFG="sslversion",2,4', 'AT+QSSLCFG="ciphersuite",2,0xFFFF',
                'AT+QSSLCFG="ignorelocaltime",2,1')
    assert emu.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{mosquitto_tls.tls_port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 0,0\r\n")
    assert emu.cmd('AT+QMTCONN=0,"test","quectel","quectel"') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTCONN: 0,0,0\r\n")
    topic = "$aws/things/M26_0206/shadow/update/accepted"
    assert emu.cmd(f'AT+QMTSUB=0,1,"{topic}",1') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 0,1,0,1\r\n")
    assert publish(emu, f'AT+QMTPUB=0,1,1,0,"{topic}",32', b"This is publish data from client") == b"\r\nOK\r\n"
    recv = r'\+QMTRECV: 0,(\d+),"\$aws/things/M26_0206/shadow/update/accepted",32,"This is publish data from client"\r\n'
    got = expect_all(emu, r"\+QMTPUB: 0,1,0\r\n", recv)
    assert int(re.search(recv.encode(), got).group(1)) > 0  # a QoS 1 delivery carries its packet id
    assert probe.wait_for(topic) == (b"This is publish data from client", 1, False)
    assert emu.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTDISC: 0,0\r\n")


def test_tls_verify_failure_and_no_client_cert(emu, mosquitto_tls, pki):
    # a CA that did not sign the broker: the handshake at QMTOPEN fails
    upload(emu, "other.pem", pki.other_ca_cert.read_bytes())
    all_ok(emu, 'AT+QMTCFG="ssl",1,1,3', 'AT+QSSLCFG="cacert",3,"other.pem"', 'AT+QSSLCFG="seclevel",3,1')
    assert emu.cmd(f'AT+QMTOPEN=1,"127.0.0.1",{mosquitto_tls.tls_port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 1,3\r\n")
    # right CA, but no client certificate: the broker requires one, CONNECT fails
    upload(emu, "ca.pem", pki.ca_cert.read_bytes())
    assert emu.cmd('AT+QSSLCFG="cacert",3,"ca.pem"') == b"\r\nOK\r\n"
    assert emu.cmd(f'AT+QMTOPEN=1,"127.0.0.1",{mosquitto_tls.tls_port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 1,3\r\n")


# ------------------------------------------------------------------------------------------ QoS / retain / binary

def test_qos_retain_and_binary_payloads_at_the_broker(emu, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("dev/#", qos=2)
    open_conn(emu, mosquitto.port)
    binary = bytes(range(256))[:200] + b"\r\n\x1a\x1b\"," + b"\x00" * 10
    for qos, mid in ((0, 0), (1, 7), (2, 65535)):
        assert publish(emu, f'AT+QMTPUB=0,{mid},{qos},0,"dev/q{qos}",{len(binary)}', binary) == b"\r\nOK\r\n"
        urc(emu, rf"\+QMTPUB: 0,{mid},0\r\n")
        assert probe.wait_for(f"dev/q{qos}") == (binary, qos, False)
    # retain: a client that subscribes later still gets it, flagged as retained
    assert publish(emu, 'AT+QMTPUB=0,3,1,1,"dev/state",2', b"on") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTPUB: 0,3,0\r\n")
    late = mqtt_probe(mosquitto)
    late.subscribe("dev/state")
    assert late.wait_for("dev/state") == (b"on", 1, True)
    # variable length, ended by Ctrl+Z
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"dev/z"', b"typed text\x1a") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTPUB: 0,0,0\r\n")
    assert probe.wait_for("dev/z")[0] == b"typed text"
    # Esc cancels: ERROR and nothing published
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"dev/esc"', b"abc\x1b") == b"\r\nERROR\r\n"
    # receiving binary: the payload bytes come verbatim inside the quotes, <len> tells where they end
    assert emu.cmd('AT+QMTSUB=0,5,"in/bin",2') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 0,5,0,2\r\n")
    probe.publish("in/bin", binary, qos=2)
    head = emu.read_until(rb'\+QMTRECV: 0,\d+,"in/bin",216,"', timeout=5)
    assert head
    assert emu.read_exactly(len(binary) + 3) == binary + b'"\r\n'
    time.sleep(0.3)
    assert probe.received() == [] or all(t != "dev/esc" for t, *_ in probe.received())


def test_hex_dataformat(emu, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("hex/#")
    assert emu.cmd('AT+QMTCFG="dataformat",0,1,1') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QMTCFG="dataformat",0') == b'\r\n+QMTCFG: "dataformat",1,1\r\n\r\nOK\r\n'
    open_conn(emu, mosquitto.port)
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"hex/out",8', b"00FF0D0A") == b"\r\nOK\r\n"
    assert probe.wait_for("hex/out")[0] == b"\x00\xff\r\n"
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"hex/out",3', b"0GZ") == b"\r\nERROR\r\n"
    assert emu.cmd('AT+QMTSUB=0,1,"hex/in",0') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 0,1,0,0\r\n")
    probe.publish("hex/in", b"\x01\x02\xab")
    urc(emu, r'\+QMTRECV: 0,0,"hex/in",3,"0102AB"\r\n')


# ------------------------------------------------------------------------------------------ buffer mode

def test_buffer_receive_mode(emu, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    assert emu.cmd('AT+QMTCFG="recv/mode",0,1') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QMTCFG="recv/mode",0') == b'\r\n+QMTCFG: "recv/mode",1\r\n\r\nOK\r\n'
    open_conn(emu, mosquitto.port)
    assert emu.cmd('AT+QMTSUB=0,1,"buf/#",1') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 0,1,0,1\r\n")
    probe.publish("buf/a", b"first", qos=1)
    urc(emu, r"\+QMTRECV: 0,0\r\n")
    probe.publish("buf/b", b"second", qos=0)
    urc(emu, r"\+QMTRECV: 0,1\r\n")
    assert emu.cmd("AT+QMTRECV?") == b"\r\n+QMTRECV: 0,1,1,0,0,0\r\n\r\nOK\r\n"
    out = emu.cmd("AT+QMTRECV=0,1")
    assert out == b'\r\n+QMTRECV: 0,0,"buf/b",6,"second"\r\n\r\nOK\r\n'
    out = emu.cmd("AT+QMTRECV=0")
    assert re.fullmatch(rb'\r\n\+QMTRECV: 0,\d+,"buf/a",5,"first"\r\n\r\nOK\r\n', out)
    assert emu.cmd("AT+QMTRECV?") == b"\r\n+QMTRECV: 0,0,0,0,0,0\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QMTRECV=?") == b"\r\nOK\r\n"
    # five slots; the sixth message is dropped, nothing is overwritten
    for i in range(6):
        probe.publish(f"buf/{i}", str(i).encode(), qos=1)
    for i in range(5):
        urc(emu, rf"\+QMTRECV: 0,{i}\r\n")
    emu.expect_nothing(0.4)
    out = emu.cmd("AT+QMTRECV=0")
    assert [m.group(1) for m in re.finditer(rb'"buf/(\d)"', out)] == [b"0", b"1", b"2", b"3", b"4"]


# ------------------------------------------------------------------------------------------ link loss, will, errors

def test_broker_drop_gives_qmtstat_and_will_is_published(mosquitto_factory, mqtt_probe):
    broker = mosquitto_factory()
    watcher = mqtt_probe(broker)
    watcher.subscribe("will/#")
    e = boot()
    try:
        wifi_up(e)
        assert e.cmd('AT+QMTCFG="will",0,1,1,0,"will/dev1","gone"') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="will",0') == b'\r\n+QMTCFG: "will",1,1,0,"will/dev1","gone"\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="keepalive",0,30') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="keepalive",0') == b'\r\n+QMTCFG: "keepalive",30\r\n\r\nOK\r\n'
        open_conn(e, broker.port)
        # QMTCLOSE drops the network without DISCONNECT: the broker publishes the will
        assert e.cmd("AT+QMTCLOSE=0") == b"\r\nOK\r\n"
        urc(e, r"\+QMTCLOSE: 0,0\r\n")
        assert watcher.wait_for("will/dev1") == (b"gone", 1, False)
        e.expect_nothing(0.3)          # a local close is not a +QMTSTAT
        open_conn(e, broker.port)
        watcher.close()
        broker.kill()
        urc(e, r"\+QMTSTAT: 0,1\r\n", timeout=10)
        assert e.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTPUB=0,0,0,0,"x",1') == b"\r\nERROR\r\n"
        # broker gone: QMTOPEN reports a network error
        assert e.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{broker.port}') == b"\r\nOK\r\n"
        urc(e, r"\+QMTOPEN: 0,3\r\n")
    finally:
        e.stop()


def test_errors_and_state_rules(mosquitto, mqtt_probe):
    e = boot()
    try:
        # no Wi-Fi: network error
        assert e.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{mosquitto.port}') == b"\r\nOK\r\n"
        urc(e, r"\+QMTOPEN: 0,3\r\n")
        wifi_up(e)
        # DNS failure
        assert e.cmd('AT+QMTOPEN=0,"no-such-host.invalid",1883') == b"\r\nOK\r\n"
        urc(e, r"\+QMTOPEN: 0,4\r\n")
        assert e.cmd("AT+QMTCONN=0,\"x\"") == b"\r\nERROR\r\n"       # not open
        assert e.cmd("AT+QMTCLOSE=0") == b"\r\nERROR\r\n"
        assert e.cmd("AT+QMTOPEN=6,\"127.0.0.1\",1883") == b"\r\nERROR\r\n"
        assert e.cmd("AT+QMTOPEN=0,\"127.0.0.1\",0") == b"\r\nERROR\r\n"
        open_conn(e, mosquitto.port)
        # index already in use
        assert e.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{mosquitto.port}') == b"\r\nOK\r\n"
        urc(e, r"\+QMTOPEN: 0,2\r\n")
        assert e.cmd('AT+QMTCONN=0,"again"') == b"\r\nERROR\r\n"      # already connected
        assert e.cmd('AT+QMTPUB=0,1,0,0,"t",1') == b"\r\nERROR\r\n"    # QoS 0 needs msgID 0
        assert e.cmd('AT+QMTPUB=0,0,1,0,"t",1') == b"\r\nERROR\r\n"    # QoS 1 needs msgID > 0
        assert e.cmd('AT+QMTPUB=0,0,0,0,"t/#",1') == b"\r\nERROR\r\n"  # no wildcards
        assert e.cmd('AT+QMTPUB=0,0,0,0,"t",2049') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QMTSUB=0,0,"t",0') == b"\r\nERROR\r\n"        # packet id 0
        assert e.cmd('AT+QMTSUB=0,1,"t",3') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QMTCONN=0,"c","user"') == b"\r\nERROR\r\n"    # username without password
        # several topics in one SUBSCRIBE
        assert e.cmd('AT+QMTSUB=0,9,"a/1",0,"a/2",1,"a/3",2') == b"\r\nOK\r\n"
        urc(e, r"\+QMTSUB: 0,9,0,0,1,2\r\n")
        assert e.cmd('AT+QMTUNS=0,10,"a/1","a/2"') == b"\r\nOK\r\n"
        urc(e, r"\+QMTUNS: 0,10,0\r\n")
        assert publish(e, 'AT+QMTPUB=0,0,0,0,"t",3', b"abc") == b"\r\nOK\r\n"
        urc(e, r"\+QMTPUB: 0,0,0\r\n")
        # the emulator survives garbage and keeps working
        assert e.cmd('AT+QMTCFG="nonsense",0') == b"\r\nERROR\r\n"
        assert e.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
        urc(e, r"\+QMTDISC: 0,0\r\n")
        assert e.cmd("AT+QMTDISC=0") == b"\r\nERROR\r\n"
    finally:
        e.stop()


def test_connack_refused_and_credentials(mosquitto_factory):
    broker = mosquitto_factory(passwords={"alice": "secret"}, allow_anonymous=False)
    e = boot()
    try:
        wifi_up(e)
        assert e.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{broker.port}') == b"\r\nOK\r\n"
        urc(e, r"\+QMTOPEN: 0,0\r\n")
        assert e.cmd('AT+QMTCONN=0,"c1","alice","wrong"') == b"\r\nOK\r\n"
        urc(e, r"\+QMTCONN: 0,0,5\r\n")
        assert e.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,1\r\n\r\nOK\r\n"
        assert e.cmd('AT+QMTCONN=0,"c1","alice","secret"') == b"\r\nOK\r\n"
        urc(e, r"\+QMTCONN: 0,0,0\r\n")
    finally:
        e.stop()


def test_cfg_queries_and_test_form():
    e = boot()
    try:
        out = e.cmd("AT+QMTCFG=?")
        assert out.count(b"+QMTCFG: ") == 10 and out.endswith(b"\r\nOK\r\n")
        assert e.cmd('AT+QMTCFG="version",0') == b'\r\n+QMTCFG: "version",4\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="version",0,3') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="version",0') == b'\r\n+QMTCFG: "version",3\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="version",0,5') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QMTCFG="session",0,0') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="session",0') == b'\r\n+QMTCFG: "session",0\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="timeout",0,10,2,1') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="timeout",0') == b'\r\n+QMTCFG: "timeout",10,2,1\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="timeout",0,1201') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QMTCFG="aliauth",0,"pk","dn","ds"') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="aliauth",0') == b'\r\n+QMTCFG: "aliauth","pk","dn","ds"\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="onenet",0,"pid","key"') == b"\r\nOK\r\n"
        assert e.cmd('AT+QMTCFG="onenet",0') == b'\r\n+QMTCFG: "onenet","pid","key"\r\n\r\nOK\r\n'
        assert e.cmd('AT+QMTCFG="will",0,1') == b"\r\nERROR\r\n"
        assert e.cmd("AT+QMTCLOSE=?") == b"\r\n+QMTCLOSE: (0-5)\r\n\r\nOK\r\n"
        assert e.cmd("AT+QMTDISC=?") == b"\r\n+QMTDISC: (0-5)\r\n\r\nOK\r\n"
        assert e.cmd("AT+QMTUNS=?") == b"\r\n+QMTUNS: (0-5),(0-65535),<topic>\r\n\r\nOK\r\n"
    finally:
        e.stop()


def test_aliauth_signs_connect(mosquitto_factory):
    import hashlib
    import hmac
    pw = hmac.new(b"secret", b"clientIdc9deviceNamedevproductKeyprod", hashlib.sha1).hexdigest()
    broker = mosquitto_factory(passwords={"dev&prod": pw}, allow_anonymous=False)
    e = boot()
    try:
        wifi_up(e)
        assert e.cmd('AT+QMTCFG="aliauth",0,"prod","dev","secret"') == b"\r\nOK\r\n"
        assert e.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{broker.port}') == b"\r\nOK\r\n"
        urc(e, r"\+QMTOPEN: 0,0\r\n")
        assert e.cmd('AT+QMTCONN=0,"c9"') == b"\r\nOK\r\n"
        urc(e, r"\+QMTCONN: 0,0,0\r\n")
    finally:
        e.stop()


# ------------------------------------------------------------------------------------------ a broker that never acks

class MuteBroker:
    """TCP peer on 127.0.0.1 that answers CONNECT with CONNACK 0 and then never acknowledges anything
    (no SUBACK/UNSUBACK/PUBACK/PINGRESP). Records the packet types it received."""

    def __init__(self, connack: bool = True) -> None:
        import socket
        import threading
        self.connack = connack
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.types: list[int] = []
        self.conns = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read(self, c, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _serve(self, c) -> None:
        try:
            while True:
                first = self._read(c, 1)[0]
                length, mult = 0, 1
                while True:
                    b = self._read(c, 1)[0]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    if not b & 0x80:
                        break
                self._read(c, length)
                self.types.append(first >> 4)
                if first >> 4 == 1 and self.connack:
                    c.sendall(b"\x20\x02\x00\x00")
        except (EOFError, OSError):
            pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def mute_broker():
    b = MuteBroker()
    yield b
    b.close()


def test_retransmission_reports_and_inflight_window(emu, mute_broker):
    assert emu.cmd('AT+QMTCFG="timeout",0,1,2,1') == b"\r\nOK\r\n"
    open_conn(emu, mute_broker.port)
    t0 = time.monotonic()
    assert emu.cmd('AT+QMTSUB=0,4,"s/x",1') == b"\r\nOK\r\n"
    assert emu.read_until(rb"\+QMTSUB: 0,4,2\r\n", timeout=6) == \
        b"\r\n+QMTSUB: 0,4,1,1\r\n\r\n+QMTSUB: 0,4,1,2\r\n\r\n+QMTSUB: 0,4,2\r\n"
    assert 2.7 < time.monotonic() - t0 < 4.5              # <pkt_timeout> 1 s x (1 + <retry_times> 2)
    assert 8 in mute_broker.types                         # the SUBSCRIBE really went out
    assert emu.cmd('AT+QMTCFG="timeout",0,1,0,0') == b"\r\nOK\r\n"
    for mid in range(1, 6):
        assert publish(emu, f'AT+QMTPUB=0,{mid},1,0,"p/x",1', b"x") == b"\r\nOK\r\n"
    assert emu.cmd('AT+QMTPUB=0,6,1,0,"p/x",1') == b"\r\nERROR\r\n"    # 5 unacknowledged: window full
    got = b""
    for mid in range(1, 6):
        got += emu.read_until(rf"\+QMTPUB: 0,{mid},2\r\n".encode(), timeout=4)
    assert b",1,1" not in got                             # <retry_times> 0: no retransmission reports
    assert publish(emu, 'AT+QMTPUB=0,6,1,0,"p/x",1', b"x") == b"\r\nOK\r\n"   # window free again
    deadline = time.monotonic() + 3
    while mute_broker.types.count(3) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mute_broker.types.count(3) == 6


def test_keepalive_timeout_gives_qmtstat_2(emu, mute_broker):
    assert emu.cmd('AT+QMTCFG="keepalive",0,1') == b"\r\nOK\r\n"
    open_conn(emu, mute_broker.port)
    urc(emu, r"\+QMTSTAT: 0,2\r\n", timeout=8)
    assert emu.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"


def test_publish_input_timeout():
    world = {**WORLD, "options": {"quectel.mqtt_input_timeout": 0.5}}
    from peers.mosquitto import Mosquitto
    from peers.mqtt_fixtures import require_mosquitto
    require_mosquitto()
    with Mosquitto() as broker:
        probe = broker.probe()
        probe.subscribe("slow/#")
        e = boot(world)
        try:
            wifi_up(e)
            open_conn(e, broker.port)
            e.write('AT+QMTPUB=0,0,0,0,"slow/x",10\r')
            e.read_until(rb"\r\n> ")
            e.write(b"12345")
            assert e.read_until(rb"\r\n(OK|ERROR)\r\n", timeout=3) == b"\r\nERROR\r\n"
            assert e.cmd("AT") == b"\r\nOK\r\n"
            time.sleep(0.3)
            assert probe.received() == []
        finally:
            e.stop()
            probe.close()


def test_wifi_loss_drops_the_session(emu, mosquitto, mqtt_probe):
    open_conn(emu, mosquitto.port)
    assert emu.cmd(f'AT+QMTOPEN=1,"127.0.0.1",{mosquitto.port}') == b"\r\nOK\r\n"   # opened, not connected
    urc(emu, r"\+QMTOPEN: 1,0\r\n")
    assert emu.cmd("AT+QSTASTOP") == b"\r\nOK\r\n"
    got = expect_all(emu, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n", r"\+QMTSTAT: 0,7\r\n", r"\+QMTSTAT: 1,7\r\n",
                     timeout=3)
    assert got.count(b"+QMTSTAT") == 2
    assert emu.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"


def test_ap_leaving_the_air_drops_the_session(emu, mosquitto, mqtt_probe):
    """Nobody tells the module: the world's access-point list changes and the station hears it."""
    probe = mqtt_probe(mosquitto)
    probe.subscribe("gone/#")
    assert emu.cmd('AT+QMTCFG="will",0,1,0,0,"gone/dev1","bye"') == b"\r\nOK\r\n"
    open_conn(emu, mosquitto.port)
    emu.sync(lambda: emu.world.access_points.clear())
    got = expect_all(emu, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n", r"\+QMTSTAT: 0,7\r\n", timeout=3)
    assert got.index(b"WLAN_DISCONNECTED") < got.index(b"+QMTSTAT: 0,7")
    assert got.count(b"+QMTSTAT") == 1
    assert emu.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"
    assert probe.wait_for("gone/dev1", timeout=5) == (b"bye", 0, False)   # the link really died (no DISCONNECT)


def test_mqtt31_persistent_session_keeps_subscriptions(emu, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    assert emu.cmd('AT+QMTCFG="version",2,3') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QMTCFG="session",2,0') == b"\r\nOK\r\n"
    open_conn(emu, mosquitto.port, idx=2, client="keeper")
    assert emu.cmd('AT+QMTSUB=2,1,"keep/#",1') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTSUB: 2,1,0,1\r\n")
    assert emu.cmd("AT+QMTDISC=2") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTDISC: 2,0\r\n")
    probe.publish("keep/offline", b"queued while away", qos=1)
    # reconnect with the same client id, no new SUBSCRIBE: the broker kept the session
    open_conn(emu, mosquitto.port, idx=2, client="keeper")
    m = urc(emu, r'\+QMTRECV: 2,(\d+),"keep/offline",17,"queued while away"\r\n')
    assert int(m.group(1)) > 0
    assert re.search(r"as keeper \(p1, c0", mosquitto.log_text())   # MQTT 3.1, clean session off


def test_injected_network_faults_hit_open_and_connect(emu, mosquitto):
    faults = emu.module.faults
    emu.sync(lambda: faults.inject("connect_refused", port=mosquitto.port))
    assert emu.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{mosquitto.port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 0,3\r\n")
    emu.sync(lambda: faults.inject("dns_fail", host="broker.example"))
    emu.sync(lambda: emu.module.world.network.hosts.__setitem__("broker.example", "127.0.0.1"))
    assert emu.cmd(f'AT+QMTOPEN=0,"broker.example",{mosquitto.port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 0,4\r\n")
    open_conn(emu, mosquitto.port)           # the faults fired once each


def test_tls_host_name_is_verified(emu, mosquitto_tls, pki):
    hosts = emu.module.world.network.hosts
    emu.sync(lambda: hosts.update({"test.atemu.invalid": "127.0.0.1", "wrong.example": "127.0.0.1"}))
    tls_client_0(emu, pki, 4)
    assert emu.cmd(f'AT+QMTOPEN=0,"wrong.example",{mosquitto_tls.tls_port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 0,3\r\n")                     # the certificate does not name wrong.example
    assert emu.cmd(f'AT+QMTOPEN=0,"test.atemu.invalid",{mosquitto_tls.tls_port}') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTOPEN: 0,0\r\n")
    assert emu.cmd('AT+QMTCONN=0,"named"') == b"\r\nOK\r\n"
    urc(emu, r"\+QMTCONN: 0,0,0\r\n")
    assert emu.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTDISC: 0,0\r\n")


def test_reboot_closes_the_session(emu, mosquitto, mqtt_probe):
    watcher = mqtt_probe(mosquitto)
    watcher.subscribe("will/#")
    assert emu.cmd('AT+QMTCFG="will",0,1,0,0,"will/rebooted","bye"') == b"\r\nOK\r\n"
    open_conn(emu, mosquitto.port)
    assert emu.cmd("AT+QRST") == b"\r\nOK\r\n"
    emu.read_until(rb"ready\r\n", timeout=5)
    assert watcher.wait_for("will/rebooted") == (b"bye", 0, False)   # the link was dropped, not closed cleanly
    assert emu.cmd("AT+QECHO=0").endswith(b"OK\r\n")
    emu.drain()
    assert emu.cmd("AT+QMTCONN?") == b"\r\nOK\r\n"                      # nothing survives a reboot
    assert emu.cmd('AT+QMTCFG="will",0') == b'\r\n+QMTCFG: "will",0\r\n\r\nOK\r\n'


def test_connect_without_connack_reports_and_fails(emu):
    broker = MuteBroker(connack=False)
    try:
        assert emu.cmd('AT+QMTCFG="timeout",0,1,1,1') == b"\r\nOK\r\n"
        assert emu.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{broker.port}') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTOPEN: 0,0\r\n")
        assert emu.cmd('AT+QMTCONN=0,"silent"') == b"\r\nOK\r\n"
        assert emu.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,2\r\n\r\nOK\r\n"      # connecting
        assert emu.read_until(rb"\+QMTCONN: 0,2\r\n", timeout=5) == b"\r\n+QMTCONN: 0,1\r\n\r\n+QMTCONN: 0,2\r\n"
        assert 1 in broker.types                                  # the CONNECT really went out
        assert emu.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,1\r\n\r\nOK\r\n"      # back to opened
    finally:
        broker.close()


def test_same_client_id_elsewhere_kicks_the_module(emu, mosquitto, mqtt_probe):
    open_conn(emu, mosquitto.port, client="dup")
    mqtt_probe(mosquitto, client_id="dup")          # the broker drops the older connection (the module's)
    urc(emu, r"\+QMTSTAT: 0,1\r\n")
    assert emu.cmd("AT+QMTOPEN?") == b"\r\nOK\r\n"


# ------------------------------------------------------------------------------------------ M1: one connection

class CountingProxy:
    """TCP proxy on 127.0.0.1 in front of a broker: what the broker sees, connection by connection.
    ``sent[i]`` is what the module sent on connection i, ``ended[i]`` is set once the module closed it;
    ``drop(i)`` cuts connection i as a broker dropping the link would."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading
        self.target = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sent: list[bytearray] = []
        self.ended: list[threading.Event] = []
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def _accept(self) -> None:
        import socket
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            self.sent.append(bytearray())
            self.ended.append(threading.Event())
            self.conns.append((c, up))
            i = len(self.conns) - 1
            threading.Thread(target=self._pump, args=(c, up, i), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, c, None), daemon=True).start()

    def _pump(self, src, dst, i) -> None:
        import socket
        try:
            while data := src.recv(65536):
                if i is not None:
                    self.sent[i] += data
                dst.sendall(data)
        except OSError:
            pass
        if i is not None:
            self.ended[i].set()
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self, i: int) -> None:
        import socket
        for s in self.conns[i]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_accepted(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.accepted < n:
            assert time.monotonic() < deadline, f"{self.accepted} connections, expected {n}"
            time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()
        for i in range(len(self.conns)):
            self.drop(i)


def test_open_dials_and_connect_sends_connect_on_that_connection(emu, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("m1/#")
    proxy = CountingProxy(mosquitto.port)
    try:
        assert emu.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{proxy.port}') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTOPEN: 0,0\r\n")
        proxy.wait_accepted(1)
        emu.expect_nothing(0.2)
        assert proxy.sent[0] == b""                           # connected, nothing sent before QMTCONN
        assert emu.cmd('AT+QMTCONN=0,"m1dev"') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTCONN: 0,0,0\r\n")
        assert proxy.accepted == 1 and proxy.sent[0][0] == 0x10   # CONNECT went out on QMTOPEN's connection
        assert publish(emu, 'AT+QMTPUB=0,0,0,0,"m1/a",2', b"ok") == b"\r\nOK\r\n"
        urc(emu, r"\+QMTPUB: 0,0,0\r\n")
        assert probe.wait_for("m1/a") == (b"ok", 0, False)
        assert emu.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
        urc(emu, r"\+QMTDISC: 0,0\r\n")
        assert proxy.ended[0].wait(5) and proxy.accepted == 1

        # QMTCLOSE after QMTOPEN without CONNECT closes that connection
        assert emu.cmd(f'AT+QMTOPEN=1,"127.0.0.1",{proxy.port}') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTOPEN: 1,0\r\n")
        proxy.wait_accepted(2)
        assert emu.cmd("AT+QMTCLOSE=1") == b"\r\nOK\r\n"
        urc(emu, r"\+QMTCLOSE: 1,0\r\n")
        assert proxy.ended[1].wait(5) and proxy.sent[1] == b""

        # the broker drops the link between QMTOPEN and QMTCONN: +QMTSTAT 1, the client is idle again
        assert emu.cmd(f'AT+QMTOPEN=2,"127.0.0.1",{proxy.port}') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTOPEN: 2,0\r\n")
        proxy.wait_accepted(3)
        proxy.drop(2)
        assert emu.read_until(rb"\+QMTSTAT: 2,1\r\n", timeout=5) == b"\r\n+QMTSTAT: 2,1\r\n"
        assert emu.cmd("AT+QMTOPEN?") == b"\r\nOK\r\n"
        assert emu.cmd('AT+QMTCONN=2,"late"') == b"\r\nERROR\r\n"
        assert proxy.accepted == 3
    finally:
        proxy.close()


def test_tls_handshake_at_open_and_one_connection(emu, mosquitto_tls, pki, mqtt_probe):
    proxy = CountingProxy(mosquitto_tls.tls_port)
    try:
        tls_client_0(emu, pki, 1)
        assert emu.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{proxy.port}') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTOPEN: 0,0\r\n")
        proxy.wait_accepted(1)
        assert proxy.sent[0][:1] == b"\x16"                   # the TLS handshake happened at QMTOPEN
        handshake = len(proxy.sent[0])
        assert emu.cmd('AT+QMTCONN=0,"m1tls"') == b"\r\nOK\r\n"
        urc(emu, r"\+QMTCONN: 0,0,0\r\n")
        assert proxy.accepted == 1 and len(proxy.sent[0]) > handshake
        assert emu.cmd("AT+QMTDISC=0") == b"\r\nOK\r\n"
        urc(emu, r"\+QMTDISC: 0,0\r\n")
    finally:
        proxy.close()


def test_bytes_beyond_publish_length_are_deleted(emu, mosquitto, mqtt_probe):
    """M6: "If the actual size of data is greater than <length>, extra byte(s) will be deleted"."""
    probe = mqtt_probe(mosquitto)
    probe.subscribe("extra/#")
    open_conn(emu, mosquitto.port)
    # the extra bytes look like a command: were they kept, the module would answer them (ERROR / OK)
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"extra/a",3', b"abcAT+QMTDISC=0\r\nXYZ\r\n") == b"\r\nOK\r\n"
    urc(emu, r"\+QMTPUB: 0,0,0\r\n")
    assert probe.wait_for("extra/a") == (b"abc", 0, False)
    emu.expect_nothing(0.3)
    assert emu.cmd("AT+QMTCONN?") == b"\r\n+QMTCONN: 0,3\r\n\r\nOK\r\n"     # still connected: no QMTDISC ran
    # after the pause the UART is command input again; without <length> nothing is deleted (Ctrl+Z ends it)
    assert publish(emu, 'AT+QMTPUB=0,0,0,0,"extra/b"', b"tail\x1a") == b"\r\nOK\r\n"
    assert probe.wait_for("extra/b") == (b"tail", 0, False)
