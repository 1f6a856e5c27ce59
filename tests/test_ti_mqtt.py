"""TI SimpleLink MQTT client against a real mosquitto (plain and TLS with client certificates)."""
from __future__ import annotations

import base64
import re

import pytest

from test_ti_common import joined, world

MSG = b'temp=21,5\r\n"unit":"C"\x00end'


@pytest.fixture
def ti():
    yield from joined(world(network={"hosts": {"test.atemu.invalid": "127.0.0.1", "broker.other": "127.0.0.1"}}))


def event(e, pattern, timeout=10) -> bytes:
    return e.read_until(pattern, timeout)


def test_raw_format_session(ti, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe(["dev/out", "dev/will"])
    assert ti.err("AT+MqttConnect=0") == b"parse parameters,-4"        # TI: no such client
    out = ti.ok(f"AT+MqttCreate=dev1,ip4,127.0.0.1,{mosquitto.port},,,,,,,v3_1_1,1,0")
    assert out == b"+mqttcreate:0\r\n"
    assert ti.err("AT+MqttPublish=0,dev/out,qos0,0,2,hi") == b"process command,-3002"
    ti.ok("AT+MqttSet=0,keepalive,30")
    ti.ok("AT+MqttSet=0,clean,1")
    ti.ok("AT+MqttSet=0,user,alice")
    ti.ok("AT+MqttSet=0,password,secret")
    ti.write(b"AT+MqttSet=0,will,dev/will,qos1,0,8,gone,\r\nx\r\n")
    assert ti.read_until(rb"OK\r\n") == b"OK\r\n"
    assert ti.err("AT+MqttSet=0,keepalive,30,1") == b"number of parameters,0"
    assert ti.ok("AT+MqttConnect=0") == b""
    assert event(ti, rb"connack,\d+\r\n") == b"+eventmqtt:operation,connack,0\r\n"
    assert ti.err("AT+MqttSet=0,user,bob") == b"process command,-3002"
    assert ti.err("AT+MqttConnect=0") == b"process command,-3002"
    ti.ok("AT+MqttSubscribe=0,2,dev/in,qos1,,dev/cmd/#,qos2,0")
    m = re.fullmatch(rb"\+eventmqtt:operation,suback,1,2\r\n", event(ti, rb"suback[^\r]*\r\n"))   # return codes (TI)
    assert m
    assert ti.err("AT+MqttSubscribe=0,2,dev/in,qos1,") == b"parse parameters,-1"    # the 2nd topic is missing
    assert ti.err("AT+MqttSubscribe=0,1,dev/in,qos7,") == b"parse parameters,-4"
    probe.publish("dev/cmd/x", MSG, qos=1)
    head = event(ti, rb"\+eventmqtt:recv,dev/cmd/x,qos\d,0,0,0,\d+,")
    n = int(re.search(rb",(\d+),$", head).group(1))
    assert ti.read_exactly(n) == MSG and ti.read_exactly(2) == b"\r\n"
    # raw publish with CR, LF, commas and quotes; blocking send: OK after PUBACK, then the event
    ti.write(f"AT+MqttPublish=0,dev/out,qos1,1,{len(MSG)},".encode() + MSG + b"\r\n")
    assert ti.read_until(rb"OK\r\n") == b"OK\r\n"
    assert event(ti, rb"puback[^\r]*\r\n") == b"+eventmqtt:operation,puback,0\r\n"
    assert probe.wait_for("dev/out") == (MSG, 1, False)
    ti.ok("AT+MqttPublish=0,dev/out,qos0,0,3,abc")
    assert probe.wait_for("dev/out") == (b"abc", 0, False)
    assert ti.err("AT+MqttPublish=0,dev/#,qos0,0,3,abc") == b"parse parameters,-4"
    ti.ok("AT+MqttUnsubscribe=0,1,dev/cmd/#,")
    assert event(ti, rb"unsuback[^\r]*\r\n") == b"+eventmqtt:operation,unsuback,0\r\n"
    probe.publish("dev/cmd/x", b"not delivered", qos=1)
    probe.publish("dev/in", b"delivered", qos=1)
    head = event(ti, rb"\+eventmqtt:recv,[^,]*,")
    assert head.endswith(b"+eventmqtt:recv,dev/in,")
    assert ti.err("AT+MqttDelete=0") == b"process command,-3002"
    ti.drain()
    ti.ok("AT+MqttDisconnect=0")
    assert event(ti, rb"\+eventmqtt:disconnect,\r\n") == b"+eventmqtt:disconnect,\r\n"
    assert ti.err("AT+MqttDisconnect=0") == b"process command,-3002"
    assert probe.received() == []                             # graceful: no will
    # abrupt loss (NWP stop) publishes the will
    ti.ok("AT+MqttConnect=0")
    event(ti, rb"connack,0\r\n")
    ti.ok("AT+Stop=0")
    assert event(ti, rb"\+eventmqtt:disconnect,\r\n") == b"+eventmqtt:disconnect,\r\n"
    assert probe.wait_for("dev/will") == (b"gone,\r\nx", 1, False)
    ti.boot()
    ti.ok("AT+MqttDelete=0")
    assert ti.err("AT+MqttDelete=0") == b"parse parameters,-4"


def test_base64_format_nonblocking_and_broker_loss(ti, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("b64/#")
    ti.ok(f"AT+MqttCreate=dev2,ip4,[127.0.0.1],{mosquitto.port},,,,,,,v3_1,0,1")
    ti.ok("AT+MqttConnect=0")
    event(ti, rb"connack,0\r\n")
    ti.ok("AT+MqttSubscribe=0,1,b64/in,qos0,")
    event(ti, rb"suback,0\r\n")
    b = base64.b64encode(MSG).decode()
    assert ti.ok(f"AT+MqttPublish=0,b64/out,qos2,0,{len(b)},{b}") == b""     # OK before the ack
    event(ti, rb"puback,0\r\n")
    assert probe.wait_for("b64/out") == (MSG, 2, False)
    assert ti.err(f"AT+MqttPublish=0,b64/out,qos0,0,3,{b}") == b"parse parameters,-4"
    probe.publish("b64/in", MSG, retain=False)
    ev = event(ti, rb"\+eventmqtt:recv,[^\r]*\r\n")
    assert ev == f"+eventmqtt:recv,b64/in,qos0,0,0,1,{len(b)},{b}\r\n".encode()
    mosquitto.close()
    assert event(ti, rb"\+eventmqtt:disconnect,\r\n") == b"+eventmqtt:disconnect,\r\n"


def test_tls_broker_with_client_certificate(ti, mosquitto_tls, pki):
    for name, path in (("ca", pki.ca_cert), ("other", pki.other_ca_cert), ("cert", pki.client_cert), ("key", pki.client_key)):
        ti.put_file(f"/mqtt/{name}.pem", path.read_bytes())
    assert ti.err("AT+MqttCreate=x,ip4|sec,127.0.0.1,1,,,,,,,v3_1_1,1,0") == b"number of parameters,0"
    ti.ok(f"AT+MqttCreate=tls1,url|sec,test.atemu.invalid,{mosquitto_tls.tls_port},TLSV1_2,"
          f"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256|TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,"
          f"/mqtt/key.pem,/mqtt/cert.pem,/mqtt/ca.pem,,v3_1_1,1,0")
    ti.ok("AT+MqttConnect=0")
    assert event(ti, rb"connack,\d+\r\n") == b"+eventmqtt:operation,connack,0\r\n"
    ti.ok("AT+MqttPublish=0,secure/t,qos1,0,2,ok")
    event(ti, rb"puback,0\r\n")
    # wrong root CA: the TLS handshake fails, nothing connects
    ti.ok(f"AT+MqttCreate=tls2,url|sec,test.atemu.invalid,{mosquitto_tls.tls_port},TLSV1_2,,/mqtt/key.pem,"
          f"/mqtt/cert.pem,/mqtt/other.pem,,v3_1_1,1,0")
    assert ti.err("AT+MqttConnect=1") == b"process command,-468"
    # a name the certificate does not carry fails unless skip_domain_verify
    ti.ok(f"AT+MqttCreate=tls3,url|sec,broker.other,{mosquitto_tls.tls_port},TLSV1_2,,/mqtt/key.pem,"
          f"/mqtt/cert.pem,/mqtt/ca.pem,,v3_1_1,1,0")
    assert ti.err("AT+MqttConnect=2") == b"process command,-468"
    ti.ok(f"AT+MqttCreate=tls4,url|sec|skip_domain_verify,broker.other,{mosquitto_tls.tls_port},TLSV1_2,,/mqtt/key.pem,"
          f"/mqtt/cert.pem,/mqtt/ca.pem,,v3_1_1,1,0")
    ti.ok("AT+MqttConnect=3")
    assert event(ti, rb"connack,\d+\r\n") == b"+eventmqtt:operation,connack,0\r\n"
    assert ti.err("AT+MqttCreate=tls5,ip4,127.0.0.1,1,,,,,,,v3_1_1,1,0") == b"process command,-3000"   # 4 clients max
