"""rnwf02 MQTT end to end against a real mosquitto over a real pty with CR LF: configuration,
connect, subscribe, a retained publish, JSON with escapes both ways, +MQTTSUBRX (and its
notification form with AT+MQTTSUBRD), QoS acknowledgements, ERROR:8.0, will, v5."""
from __future__ import annotations

import re
import signal

import pytest

from peers.mqtt_tap import MqttTap
from rnwf_helpers import Rnwf


@pytest.fixture
def e(mosquitto):
    with Rnwf(echo=True) as emu:
        assert emu.cmd("ATE0") == b"ATE0\r\nOK\r\n"
        emu.join()
        yield emu


def configure(e, port, client_id="rnwf-test"):
    e.oks('AT+MQTTC=1,"127.0.0.1"', f"AT+MQTTC=2,{port}", f'AT+MQTTC=3,"{client_id}"', "AT+MQTTC=7,0")


#: what mosquitto's MQTT 5 CONNACK carries (Topic Alias Maximum, Receive Maximum), announced first
V5_CONNACK_PROPS = b"\r+MQTTPROPRX:34\r\n\r+MQTTPROPRX:33\r\n"


def connect(e, props=b""):
    assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10) == props + b"\r+MQTTCONNACK:0,0\r\n\r+MQTTCONN:1\r\n"


def test_session_end_to_end(e, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("rnwf/#")
    # a retained message already on the broker
    probe.publish("dev/cfg", b'{"rate":5,"name":"a \\"b\\""}', qos=1, retain=True)
    assert e.cmd("AT+MQTTC") == (b'+MQTTC:1,""\r\n+MQTTC:2,1883\r\n+MQTTC:3,"RNWF02_9A5C01"\r\n+MQTTC:4,""\r\n'
                                 b"+MQTTC:6,60\r\n+MQTTC:7,0\r\n+MQTTC:8,3\r\n+MQTTC:9,0\r\nOK\r\n")
    assert e.cmd('AT+MQTTSUB="dev/cfg",1') == b'ERROR:8.0,"MQTT Error"\r\n'
    configure(e, mosquitto.port)
    connect(e)
    assert e.cmd("AT+MQTTC=2,1884") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
    # subscribe: OK, then the SUBACK's granted QoS
    assert e.cmd('AT+MQTTSUB="dev/cfg",1') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:1\r\n"
    # the retained message arrives with its escapes intact
    m = e.aec(rb'\r\+MQTTSUBRX:0,1,1,"dev/cfg","(.*?)"\r\n', timeout=5)
    assert m.group(1) == rb'{\"rate\":5,\"name\":\"a \\\"b\\\"\"}'
    assert e.cmd("AT+MQTTSUBLST").startswith(b'+MQTTSUBLST:"dev/cfg",1\r\n')
    # publish JSON with escapes: the broker gets the plain JSON
    assert e.cmd('AT+MQTTPUB=0,1,1,"rnwf/state","{\\"temp\\":21.5,\\"ok\\":true}"') == b"OK\r\n"
    assert re.fullmatch(rb"\r\+MQTTPUBACK:\d+\r\n", e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5))
    payload, qos, retain = probe.wait_for("rnwf/state")
    assert (payload, qos) == (b'{"temp":21.5,"ok":true}', 1)
    assert e.cmd('AT+MQTTPUB=0,2,0,"rnwf/q2","x"') == b"OK\r\n"
    assert re.fullmatch(rb"\r\+MQTTPUBCOMP:\d+\r\n", e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5))
    assert e.cmd('AT+MQTTPUB=0,0,0,"rnwf/#","x"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
    # a message from elsewhere
    probe.publish("dev/cfg", b"plain", qos=0)
    assert e.aec(rb'\r\+MQTTSUBRX:0,0,0,"dev/cfg","plain"\r\n')
    # unsubscribe (unquoted topic, as the Harmony driver writes it) and a topic never subscribed
    assert e.cmd("AT+MQTTUNSUB=dev/cfg") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTUNSUB:\d+\r\n", timeout=5) == b"\r+MQTTUNSUB:0\r\n"
    assert e.cmd('AT+MQTTUNSUB="never"') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTUNSUB:\d+\r\n", timeout=5) == b"\r+MQTTUNSUB:15\r\n"
    assert e.cmd("AT+MQTTDISCONN=0") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=5) == b"\r+MQTTCONN:0\r\n"


def test_read_threshold_notification_and_subrd(e, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    configure(e, mosquitto.port, "rnwf-thr")
    assert e.cmd("AT+MQTTC=9,8") == b"OK\r\n"
    connect(e)
    assert e.cmd('AT+MQTTSUB="big/+",0') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:0\r\n"
    probe.publish("big/a", b"short", qos=0)
    assert e.aec(rb'\r\+MQTTSUBRX:0,0,0,"big/a","short"\r\n')
    probe.publish("big/b", b"0123456789ABCDEF", qos=0)
    m = e.aec(rb'\r\+MQTTSUBRX:0,0,0,"big/b",(\d+),16\r\n')
    mid = int(m.group(1))
    assert e.cmd(f'AT+MQTTSUBRD="big/b",{mid},10') == b'+MQTTSUBRD:10,"0123456789"\r\nOK\r\n'
    assert e.cmd(f'AT+MQTTSUBRD="big/b",{mid},10') == b'+MQTTSUBRD:6,"ABCDEF"\r\nOK\r\n'
    assert e.cmd(f'AT+MQTTSUBRD="big/b",{mid},10') == b'ERROR:8.0,"MQTT Error"\r\n'


def test_will_and_protocol_v5(e, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("wills/#")
    configure(e, mosquitto.port, "rnwf-v5")
    e.oks("AT+MQTTC=8,5", "AT+MQTTC=6,1", 'AT+MQTTLWT=1,0,"wills/rnwf","{\\"gone\\":1}"')
    assert e.cmd("AT+MQTTC=8,4") == b'ERROR:0.4,"Invalid Parameter"\r\n'
    connect(e, V5_CONNACK_PROPS)
    assert e.cmd('AT+MQTTLWT=0,0,"x","y"') == b'ERROR:8.0,"MQTT Error"\r\n'
    # the link vanishes without DISCONNECT (the AP disappears): the broker publishes the will
    e.sync(lambda: e.prof.mqtt.close())
    payload, qos, retain = probe.wait_for("wills/rnwf", timeout=10)
    assert payload == b'{"gone":1}'


def test_subscribe_before_suback_is_busy(e, mosquitto):
    configure(e, mosquitto.port, "rnwf-busy")
    connect(e)
    mosquitto._proc.send_signal(signal.SIGSTOP)      # the broker stops answering
    try:
        assert e.cmd('AT+MQTTSUB="a/b",1') == b"OK\r\n"
        assert e.cmd('AT+MQTTSUB="c/d",1') == b'ERROR:8.0,"MQTT Error"\r\n'
        assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:128\r\n"   # no SUBACK in time
        assert e.cmd('AT+MQTTPUB=0,1,0,"a/b","x"') == b"OK\r\n"
        # the failed publish's message id (the SUBSCRIBE took 1)
        assert e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5) == b"\r+MQTTPUBERR:2\r\n"
    finally:
        mosquitto._proc.send_signal(signal.SIGCONT)


def _published_id(tap: MqttTap, topic: bytes) -> int:
    """The packet id of the last QoS 1/2 PUBLISH to ``topic`` the broker was sent (v3.1.1)."""
    body = [b for kind, b in tap.packets() if kind == "PUBLISH" and b[2:2 + len(topic)] == topic][-1]
    return int.from_bytes(body[2 + len(topic):4 + len(topic)], "big")


def test_puberr_carries_the_failed_message_id(e, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("rnwf/#")
    with MqttTap(mosquitto.port) as tap:
        configure(e, tap.port, "rnwf-puberr")
        connect(e)
        assert e.cmd('AT+MQTTPUB=0,1,0,"rnwf/a","1"') == b"OK\r\n"
        first = int(e.aec(rb"\r\+MQTTPUBACK:(\d+)\r\n").group(1))
        assert _published_id(tap, b"rnwf/a") == first
        # the broker gets the message, its PUBACK never reaches the module: +MQTTPUBERR:<that id>
        tap.mute = True
        assert e.cmd('AT+MQTTPUB=0,1,0,"rnwf/b","2"') == b"OK\r\n"
        assert probe.wait_for("rnwf/b")[0] == b"2"
        lost = _published_id(tap, b"rnwf/b")
        assert lost != first
        assert e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=8) == f"\r+MQTTPUBERR:{lost}\r\n".encode()
        # a QoS 2 publish pending when the link is cut: its id too
        assert e.cmd('AT+MQTTPUB=0,2,0,"rnwf/c","3"') == b"OK\r\n"
        tap.wait("PUBLISH", n=3)
        cut = _published_id(tap, b"rnwf/c")
        assert cut not in (first, lost)
        tap.close()
        out = e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=8)
        assert out.endswith(f"\r+MQTTPUBERR:{cut}\r\n".encode()), out


def test_mqtt_over_tls_with_files_from_fs(pki, mosquitto_tls, mqtt_probe):
    from peers.certs import der
    from test_rnwf02_net import load
    with Rnwf() as e:
        e.join()
        load(e, 1, "ca", pki.ca_cert.read_bytes())
        load(e, 1, "dev", der(pki.client_cert))
        load(e, 2, "devkey", pki.client_key.read_bytes())
        e.oks('AT+TLSC=1,1,"ca"', 'AT+TLSC=1,2,"dev"', 'AT+TLSC=1,3,"devkey"', 'AT+TLSC=1,6,"localhost"')
        configure(e, mosquitto_tls.tls_port, "rnwf-tls")
        e.ok("AT+MQTTC=7,1")
        connect(e)
        probe = mqtt_probe(mosquitto_tls)
        probe.subscribe("tls/#")
        assert e.cmd('AT+MQTTPUB=0,1,0,"tls/t","secure"') == b"OK\r\n"
        assert re.fullmatch(rb"\r\+MQTTPUBACK:\d+\r\n", e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5))
        assert probe.wait_for("tls/t")[0] == b"secure"
        e.ok("AT+MQTTDISCONN=0")
        e.read_until(rb"\+MQTTCONN:0\r\n")
        # configuration 2 trusts another CA: no connection...
        load(e, 1, "other", pki.other_ca_cert.read_bytes())
        e.oks('AT+TLSC=2,1,"other"', 'AT+TLSC=2,2,"dev"', 'AT+TLSC=2,3,"devkey"', "AT+MQTTC=7,2")
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        assert e.read_until(rb"\+MQTTCONN\w*:.*?\r\n", timeout=10) == b"\r+MQTTCONN:0\r\n"
        # ...unless peer authentication is off (PEER_AUTH 0): the client certificate still goes
        e.ok("AT+TLSC=2,40,0")
        connect(e)
