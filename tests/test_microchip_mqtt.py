"""microchip-winc MQTT over a real pty against a real mosquitto (plain and TLS with client certificates)."""
from __future__ import annotations

import signal

import pytest

from peers.certs import der
from test_microchip_util import WORLD, Winc


def winc(opts=None):
    world = dict(WORLD, options=dict(opts or {}))
    e = Winc(world=world)
    e.start()
    e.join()
    return e


@pytest.fixture
def e(mosquitto):
    emu = winc({"microchip-winc.ack_timeout": 1.0})
    yield emu
    emu.stop()


def configure(e, port, tls_idx=0, client_id="winc-test"):
    e.ok('AT+MQTTC=1,"127.0.0.1"')
    e.ok(f"AT+MQTTC=2,{port}")
    e.ok(f'AT+MQTTC=3,"{client_id}"')
    e.ok(f"AT+MQTTC=7,{tls_idx}")


def connect(e, arg="=1"):
    assert e.cmd(f"AT+MQTTCONN{arg}") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10) == b"+MQTTCONNACK:0,0\r\n+MQTTCONN:1\r\n"


def test_config_defaults_and_checks(mosquitto):
    with Winc() as e:
        assert e.cmd("AT+MQTTC") == (b'+MQTTC:1,""\r\n+MQTTC:2,8883\r\n+MQTTC:3,"WINC1500_E15C01"\r\n+MQTTC:4,""\r\n'
                                     b"+MQTTC:6,60\r\n+MQTTC:7,1\r\nOK\r\n")
        assert e.cmd("AT+MQTTC=2,70000") == b"ERROR:2\r\n"
        assert e.cmd("AT+MQTTC=2") == b"+MQTTC:2,8883\r\nOK\r\n"
        assert e.cmd("AT+MQTTC=5") == b"ERROR:2\r\n"        # the password is write-only
        assert e.cmd('AT+MQTTC=5,"pw"') == b"OK\r\n"
        assert e.cmd("AT+MQTTCONN=1") == b"ERROR:7\r\n"      # no WLAN link yet
        assert e.cmd('AT+MQTTSUB="a",0') == b"ERROR:7\r\n"
        assert e.cmd("AT+MQTTDISCONN") == b"ERROR:7\r\n"
        e.join()
        assert e.cmd("AT+MQTTCONN=1") == b"ERROR:3\r\n"      # no broker configured
        configure(e, mosquitto.port)
        e.ok('AT+MQTTC=5,""')
        connect(e, "")                                        # bare AT+MQTTCONN connects (M22)
        assert e.cmd("AT+MQTTCONN") == b"+MQTTCONN:1\r\nOK\r\n"
        assert e.cmd("AT+MQTTCONN=1") == b"ERROR:3\r\n"
        assert e.cmd("AT+MQTTC=2,1883") == b"ERROR:3\r\n"    # read-only while connected
        assert e.cmd('AT+MQTTPUB=0,0,0,"a/+","x"') == b"ERROR:2\r\n"


def test_subscribe_publish_unsubscribe_examples(e, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("Topic/#", qos=2)
    configure(e, mosquitto.port)
    connect(e)                                                # E11
    # E12 (no <MAX_QOS>: default 0)
    assert e.cmd('AT+MQTTSUB="Topic/name"') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d\r\n") == b"+MQTTSUB:0\r\n"
    assert e.cmd("AT+MQTTSUB=[546F7069632F62696E],2") == b"OK\r\n"   # "Topic/bin" in hex
    assert e.read_until(rb"\+MQTTSUB:\d\r\n") == b"+MQTTSUB:0\r\n"
    # incoming messages (extension +MQTTPUBRX)
    probe.publish("Topic/name", b"hello", qos=1)
    assert e.read_until(rb"\+MQTTPUBRX:.*?\r\n") == b'+MQTTPUBRX:0,0,0,"Topic/name",5,"hello"\r\n'
    probe.publish("Topic/bin", b"\x00\xff\r\n", qos=2)
    assert e.read_until(rb"\+MQTTPUBRX:.*?\r\n") == b'+MQTTPUBRX:0,2,0,"Topic/bin",4,[00FF0D0A]\r\n'
    # E14: QoS 1 -> +MQTTPUBACC
    assert e.cmd('AT+MQTTPUB=0,1,0,"Topic/name","123456"') == b"OK\r\n"
    out = e.read_until(rb"\+MQTTPUBACC\r\n")
    assert b"+MQTTPUBACC\r\n" in out
    assert probe.wait_for("Topic/name")[0] in (b"hello", b"123456")
    # QoS 2 -> +MQTTPUBCOMP; retain; hex payload
    assert e.cmd('AT+MQTTPUB=0,2,1,"Topic/q2",[DEADBEEF]') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTPUB\w+\r\n") == b"+MQTTPUBCOMP\r\n"
    assert probe.wait_for("Topic/q2") == (b"\xde\xad\xbe\xef", 2, False)
    # QoS 0: nothing after OK
    assert e.cmd('AT+MQTTPUB=0,0,0,"Topic/q0","zero"') == b"OK\r\n"
    assert probe.wait_for("Topic/q0")[0] == b"zero"
    e.expect_nothing(0.2)
    # retained message reaches a later subscriber
    late = mqtt_probe(mosquitto)
    late.subscribe("Topic/q2")
    assert late.wait_for("Topic/q2")[0] == b"\xde\xad\xbe\xef"
    # E13 with the table's codes: 2 = succeeded, 1 = failed
    assert e.cmd('AT+MQTTUNSUB="Topic/name"') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTUNSUB:\d\r\n") == b"+MQTTUNSUB:2\r\n"
    assert e.cmd('AT+MQTTUNSUB="Topic/name"') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTUNSUB:\d\r\n") == b"+MQTTUNSUB:1\r\n"
    probe.publish("Topic/name", b"not for you", qos=1)
    e.expect_nothing(0.3)
    # E15
    assert e.cmd("AT+MQTTDISCONN") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTCONN:\d\r\n") == b"+MQTTCONN:0\r\n"
    assert e.cmd("AT+MQTTDISCONN") == b"ERROR:7\r\n"
    assert e.cmd('AT+MQTTPUB=0,0,0,"a","b"') == b"ERROR:7\r\n"


def test_topics_are_checked_and_hex_topics_are_bytes(e, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("#", qos=1)
    configure(e, mosquitto.port)
    connect(e)
    # malformed topics are refused before they reach the broker (which would drop the connection)
    for line in ("AT+MQTTSUB=[FF00],1", "AT+MQTTSUB=[C3],0", "AT+MQTTSUB=[612F0062],0", 'AT+MQTTSUB="a/#/b",0',
                 'AT+MQTTSUB="a/b+",0', 'AT+MQTTSUB="a#",0', "AT+MQTTUNSUB=[FF]", 'AT+MQTTUNSUB="x/#/y"',
                 'AT+MQTTPUB=0,1,0,[FF],"x"', 'AT+MQTTPUB=0,0,0,"a/+","x"', 'AT+MQTTPUB=0,0,0,"a/#","x"',
                 'AT+MQTTPUB=0,0,0,[00],"x"'):
        assert e.cmd(line) == b"ERROR:2\r\n", line
    e.expect_nothing(0.3)                                    # still connected: no +MQTTCONN:0
    assert e.cmd("AT+MQTTCONN") == b"+MQTTCONN:1\r\nOK\r\n"
    # valid filters with wildcards
    assert e.cmd('AT+MQTTSUB="+/x/#",0') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d\r\n") == b"+MQTTSUB:0\r\n"
    # a [hex] topic is taken byte for byte: UTF-8 "caf\u00e9/\u00a9" reaches the broker as such
    topic = "caf\u00e9/\u00a9"
    hexed = topic.encode().hex().upper()
    assert e.cmd(f"AT+MQTTSUB=[{hexed}],1") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d\r\n") == b"+MQTTSUB:0\r\n"
    assert e.cmd(f'AT+MQTTPUB=0,1,0,[{hexed}],"utf8"') == b"OK\r\n"
    assert probe.wait_for(topic)[0] == b"utf8"
    rx = f"+MQTTPUBRX:0,1,0,[{hexed}],4,\"utf8\"\r\n".encode()
    got = e.read_until(rb"\+MQTTPUBRX:.*?\r\n")
    if b"+MQTTPUBACC" not in got:
        got += e.read_until(rb"\+MQTTPUBACC\r\n")
    assert sorted(got.splitlines(keepends=True)) == sorted([b"+MQTTPUBACC\r\n", rx]), got
    assert e.cmd(f"AT+MQTTUNSUB=[{hexed}]") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTUNSUB:\d\r\n").endswith(b"+MQTTUNSUB:2\r\n")


def test_second_subscribe_while_pending_and_puberr(e, mosquitto):
    configure(e, mosquitto.port)
    connect(e)
    mosquitto._proc.send_signal(signal.SIGSTOP)      # the broker stops answering
    try:
        assert e.cmd('AT+MQTTSUB="a/b",1') == b"OK\r\n"
        assert e.cmd('AT+MQTTSUB="c/d",1') == b"ERROR:6\r\n"
        assert e.read_until(rb"\+MQTTSUB:\d\r\n", timeout=5) == b"+MQTTSUB:1\r\n"   # no SUBACK in time
        assert e.cmd('AT+MQTTPUB=0,1,0,"a/b","x"') == b"OK\r\n"
        assert e.read_until(rb"\+MQTTPUB\w+\r\n", timeout=5) == b"+MQTTPUBERR\r\n"
    finally:
        mosquitto._proc.send_signal(signal.SIGCONT)
    assert e.cmd('AT+MQTTSUB="c/d",1') == b"OK\r\n"
    out = e.read_until(rb"\+MQTTSUB:\d\r\n")
    # the broker handled the late SUBSCRIBE and PUBLISH once it ran again: the message comes in
    assert out.endswith(b"+MQTTSUB:0\r\n")
    assert out in (b"+MQTTSUB:0\r\n", b'+MQTTPUBRX:0,1,0,"a/b",1,"x"\r\n+MQTTSUB:0\r\n')


def test_broker_loss_and_refusals(e, mosquitto, mosquitto_factory):
    configure(e, mosquitto.port)
    connect(e)
    mosquitto.kill()
    assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=5) == b"+MQTTCONN:0\r\n"
    # nothing listens any more: no CONNACK, just +MQTTCONN:0
    assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTCONN\w*:.*?\r\n", timeout=10) == b"+MQTTCONN:0\r\n"
    # the broker refuses bad credentials: CONNACK code 5 (not authorised) or 4
    strict = mosquitto_factory(passwords={"user": "good"}, allow_anonymous=False)
    e.ok(f"AT+MQTTC=2,{strict.port}")
    e.ok('AT+MQTTC=4,"user"')
    e.ok('AT+MQTTC=5,"bad"')
    assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
    out = e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10)
    assert out in (b"+MQTTCONNACK:0,4\r\n+MQTTCONN:0\r\n", b"+MQTTCONNACK:0,5\r\n+MQTTCONN:0\r\n")
    e.ok('AT+MQTTC=5,"good"')
    connect(e)


def load(e, name: str, data: bytes) -> None:
    e.write(f'AT+LOADCERT={len(data)},"{name}"\r#'.encode() + data)
    assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:0\r\nOK\r\n"


def test_mqtt_over_tls_with_client_certificate(pki, mosquitto_tls, mqtt_probe):
    e = winc()
    try:
        load(e, "ca.pem", pki.ca_cert.read_bytes())
        load(e, "dev.der", der(pki.client_cert))
        load(e, "dev.key", pki.client_key.read_bytes())
        e.ok('AT+TLSC=1,1,"ca.pem"')
        e.ok('AT+TLSC=1,2,"dev.der"')
        e.ok('AT+TLSC=1,3,"dev.key"')
        e.ok('AT+TLSC=1,5,"localhost"')
        configure(e, mosquitto_tls.tls_port, tls_idx=1)
        connect(e)
        probe = mqtt_probe(mosquitto_tls)
        probe.subscribe("tls/#")
        assert e.cmd('AT+MQTTPUB=0,1,0,"tls/t","secure"') == b"OK\r\n"
        assert e.read_until(rb"\+MQTTPUB\w+\r\n") == b"+MQTTPUBACC\r\n"
        assert probe.wait_for("tls/t")[0] == b"secure"
        e.ok("AT+MQTTDISCONN")
        e.read_until(rb"\+MQTTCONN:0\r\n")
        # the broker's certificate does not verify against another CA: no connection
        load(e, "other.pem", pki.other_ca_cert.read_bytes())
        e.ok('AT+TLSC=2,1,"other.pem"')
        e.ok('AT+TLSC=2,2,"dev.der"')
        e.ok('AT+TLSC=2,3,"dev.key"')
        e.ok("AT+MQTTC=7,2")
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        assert e.read_until(rb"\+MQTTCONN\w*:.*?\r\n", timeout=10) == b"+MQTTCONN:0\r\n"
        # a configuration naming a certificate that is not in the store
        e.ok('AT+TLSC=3,1,"missing"')
        e.ok("AT+MQTTC=7,3")
        assert e.cmd("AT+MQTTCONN=1") == b"ERROR:9\r\n"
    finally:
        e.stop()
