"""rnwf02 MQTT 5 properties on the wire, over a pty with CR LF against a real mosquitto: what the
module sends (AT+MQTTPROPTX / AT+MQTTPROPTXS) as a paho v5 subscriber and a recording relay in
front of the broker see it, and what the broker sends (CONNACK, PUBLISH) as +MQTTPROPRX and
AT+MQTTPROPRX print it."""
from __future__ import annotations

import re

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from peers.mqtt_tap import MqttTap
from rnwf_helpers import Rnwf
from test_rnwf02_mqtt import V5_CONNACK_PROPS, configure, connect


@pytest.fixture
def e(mosquitto):
    with Rnwf() as emu:
        emu.join()
        yield emu


@pytest.fixture
def tap(mosquitto):
    with MqttTap(mosquitto.port) as t:
        yield t


def v5_probe(mqtt_probe, mosquitto):
    return mqtt_probe(mosquitto, protocol=paho.MQTTv5)


@pytest.mark.parametrize("host_style", ["CRLF", "CRLF-bytewise"], indirect=True)
def test_publish_properties_reach_the_subscriber(host_style, e, mosquitto, mqtt_probe):
    probe = v5_probe(mqtt_probe, mosquitto)
    probe.subscribe("rnwf/#", qos=1)
    configure(e, mosquitto.port, "rnwf-pub5")
    e.oks("AT+MQTTC=8,5",
          "AT+MQTTPROPTX=1,1", "AT+MQTTPROPTX=2,120", 'AT+MQTTPROPTX=3,"application/json"',
          'AT+MQTTPROPTX=8,"rnwf/reply"', "AT+MQTTPROPTX=9,[0A0B0C]",
          'AT+MQTTPROPTX=38,"site","lab 7"', 'AT+MQTTPROPTX=38,"fw","2.0"', "AT+MQTTPROPTX=17,300")
    # the Harmony driver's order: select, then set
    e.oks(*(f"AT+MQTTPROPTXS={i},1" for i in (1, 2, 3, 8, 9, 38)))
    assert e.cmd("AT+MQTTPROPTX") == (b'+MQTTPROPTX:1,1\r\n+MQTTPROPTX:2,120\r\n+MQTTPROPTX:3,"application/json"\r\n'
                                      b'+MQTTPROPTX:8,"rnwf/reply"\r\n+MQTTPROPTX:9,[0A0B0C]\r\n+MQTTPROPTX:17,300\r\n'
                                      b'+MQTTPROPTX:38,"site","lab 7"\r\n+MQTTPROPTX:38,"fw","2.0"\r\nOK\r\n')
    assert e.cmd("AT+MQTTPROPTXS=17") == b"+MQTTPROPTXS:17,0\r\nOK\r\n"
    connect(e, V5_CONNACK_PROPS)
    assert e.cmd('AT+MQTTPUB=0,1,0,"rnwf/state","{\\"t\\":21}"') == b"OK\r\n"
    assert re.fullmatch(rb"\r\+MQTTPUBACK:\d+\r\n", e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5))
    msg = probe.wait_message("rnwf/state")
    assert msg.payload == b'{"t":21}'
    p = msg.properties
    assert (p.PayloadFormatIndicator, p.ContentType, p.ResponseTopic, p.CorrelationData) == \
        (1, "application/json", "rnwf/reply", b"\x0a\x0b\x0c")
    assert 0 < p.MessageExpiryInterval <= 120
    assert p.UserProperty == [("site", "lab 7"), ("fw", "2.0")]
    assert not hasattr(p, "SessionExpiryInterval")        # a CONNECT property, and not selected
    # deselect everything (0 = all): the next PUBLISH carries no property at all
    e.ok("AT+MQTTPROPTXS=0,0")
    assert e.cmd("AT+MQTTPROPTXS=38") == b"+MQTTPROPTXS:38,0\r\nOK\r\n"
    assert e.cmd('AT+MQTTPUB=0,0,0,"rnwf/bare","x"') == b"OK\r\n"
    bare = probe.wait_message("rnwf/bare").properties
    assert [k for k in vars(bare) if bare.getIdentFromName(k) > 0] == []
    # removing a user property by its key alone
    e.oks('AT+MQTTPROPTX=38,"site"', "AT+MQTTPROPTXS=38,1")
    assert e.cmd("AT+MQTTPROPTX=38") == b'+MQTTPROPTX:38,"fw","2.0"\r\nOK\r\n'
    assert e.cmd('AT+MQTTPUB=0,0,0,"rnwf/one","y"') == b"OK\r\n"
    assert probe.wait_message("rnwf/one").properties.UserProperty == [("fw", "2.0")]


def test_received_publish_properties(e, mosquitto, mqtt_probe, tap):
    probe = v5_probe(mqtt_probe, mosquitto)
    configure(e, tap.port, "rnwf-rx5")
    e.oks("AT+MQTTC=8,5", "AT+MQTTPROPTX=11,7", 'AT+MQTTPROPTX=38,"app","demo"', "AT+MQTTPROPTXS=11,1",
          "AT+MQTTPROPTXS=38,1")
    connect(e, V5_CONNACK_PROPS)
    assert e.cmd('AT+MQTTSUB="cmd/#",1') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:1\r\n"
    sub = tap.props("SUBSCRIBE", tap.wait("SUBSCRIBE")[0])
    assert (sub.SubscriptionIdentifier, sub.UserProperty) == ([7], [("app", "demo")])
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "text/plain"
    props.ResponseTopic = "cmd/answer"
    props.CorrelationData = b"\x00\x01"
    props.MessageExpiryInterval = 3600
    props.UserProperty = ("k", "v \"q\"")
    props.UserProperty = ("n", "2")
    probe.publish("cmd/go", b"run", qos=1, properties=props)
    # every property is announced (in the order the broker sent them), then the message itself
    got = e.read_until(rb"\+MQTTSUBRX:.*\r\n", timeout=5)
    ids = [int(i) for i in re.findall(rb"\r\+MQTTPROPRX:(\d+)\r\n", got)]
    assert sorted(ids) == [2, 3, 8, 9, 11, 38] and len(ids) == 6
    assert got.endswith(b'\r+MQTTSUBRX:0,1,0,"cmd/go","run"\r\n')
    assert re.fullmatch(rb"(\r\+MQTTPROPRX:\d+\r\n)+\r\+MQTTSUBRX:.*\r\n", got)
    assert e.cmd("AT+MQTTPROPRX=3") == b'+MQTTPROPRX:3,"text/plain"\r\nOK\r\n'
    assert e.cmd("AT+MQTTPROPRX=8") == b'+MQTTPROPRX:8,"cmd/answer"\r\nOK\r\n'
    assert e.cmd("AT+MQTTPROPRX=9") == b"+MQTTPROPRX:9,[0001]\r\nOK\r\n"
    assert e.cmd("AT+MQTTPROPRX=11") == b"+MQTTPROPRX:11,7\r\nOK\r\n"        # our subscription id
    assert e.cmd("AT+MQTTPROPRX=38") == b'+MQTTPROPRX:38,"k","v \\"q\\""\r\n+MQTTPROPRX:38,"n","2"\r\nOK\r\n'
    expiry = int(re.fullmatch(rb"\+MQTTPROPRX:2,(\d+)\r\nOK\r\n", e.cmd("AT+MQTTPROPRX=2")).group(1))
    assert 3500 < expiry <= 3600
    listing = e.cmd("AT+MQTTPROPRX")
    assert listing.startswith(b'+MQTTPROPRX:2,') and b'+MQTTPROPRX:33,20\r\n+MQTTPROPRX:34,10\r\n' in listing
    assert e.cmd("AT+MQTTPROPRX=34,5") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'   # read-only
    # a message without properties: only the subscription id (ours) comes with it
    probe.publish("cmd/plain", b"p", qos=0)
    assert e.read_until(rb"\+MQTTSUBRX:.*\r\n", timeout=5) == b'\r+MQTTPROPRX:11\r\n\r+MQTTSUBRX:0,0,0,"cmd/plain","p"\r\n'
    # UNSUBSCRIBE carries the user property; DISCONNECT its reason string
    e.oks('AT+MQTTPROPTX=31,"bye"', "AT+MQTTPROPTXS=31,1")
    assert e.cmd('AT+MQTTUNSUB="cmd/#"') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTUNSUB:\d+\r\n", timeout=5) == b"\r+MQTTUNSUB:0\r\n"
    assert tap.props("UNSUBSCRIBE", tap.wait("UNSUBSCRIBE")[0]).UserProperty == [("app", "demo")]
    assert e.cmd("AT+MQTTDISCONN=0") == b"OK\r\n"
    e.read_until(rb"\+MQTTCONN:0\r\n", timeout=5)
    body = tap.wait("DISCONNECT")[0]
    dis = tap.props("DISCONNECT", body)
    assert (body[0], dis.ReasonString, dis.UserProperty) == (0, "bye", [("app", "demo")])


def test_connect_properties_and_their_effects(e, mosquitto, mqtt_probe, tap):
    probe = v5_probe(mqtt_probe, mosquitto)
    probe.subscribe("wills/#")
    configure(e, tap.port, "rnwf-conn5")
    e.oks("AT+MQTTC=8,5", "AT+MQTTPROPTX=17,300", "AT+MQTTPROPTX=33,5", "AT+MQTTPROPTX=39,512",
          "AT+MQTTPROPTX=23,0", 'AT+MQTTPROPTX=38,"dev","rnwf02"', 'AT+MQTTPROPTX=3,"text/plain"',
          "AT+MQTTPROPTXS=0,1")
    # the will takes the properties selected when AT+MQTTLWT is given
    e.ok('AT+MQTTLWT=1,0,"wills/rnwf","offline"')
    e.ok("AT+MQTTPROPTXS=3,0")
    connect(e, V5_CONNACK_PROPS)
    body = tap.wait("CONNECT")[0]
    assert body[6] == 5                                             # protocol level 5
    c = tap.props("CONNECT", body)
    assert (c.SessionExpiryInterval, c.ReceiveMaximum, c.MaximumPacketSize, c.RequestProblemInformation,
            c.UserProperty) == (300, 5, 512, 0, [("dev", "rnwf02")])
    assert not hasattr(c, "ContentType")                            # not a CONNECT property
    w = tap.will_props(body)
    assert (w.ContentType, w.UserProperty) == ("text/plain", [("dev", "rnwf02")])
    # Maximum Packet Size 512: the broker does not send the module a larger message
    assert e.cmd('AT+MQTTSUB="big/#",0') == b"OK\r\n"
    assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:0\r\n"
    probe.publish("big/a", b"x" * 2000)
    probe.publish("big/b", b"small")
    assert e.read_until(rb"\+MQTTSUBRX:.*\r\n", timeout=5).endswith(b'\r+MQTTSUBRX:0,0,0,"big/b","small"\r\n')
    # DISCONNECT with reason 4 (with will message): the broker publishes the will, with its properties
    assert e.cmd("AT+MQTTDISCONN=3") == b'ERROR:0.4,"Invalid Parameter"\r\n'     # not a DISCONNECT reason
    assert e.cmd("AT+MQTTDISCONN=4") == b"OK\r\n"
    e.read_until(rb"\+MQTTCONN:0\r\n", timeout=5)
    will = probe.wait_message("wills/rnwf", timeout=5)
    assert (will.payload, will.properties.ContentType) == (b"offline", "text/plain")
    # Session Expiry 300: the session outlived the connection (session present on reconnect)
    assert e.cmd("AT+MQTTCONN=0") == b"OK\r\n"
    assert e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10) == \
        V5_CONNACK_PROPS + b"\r+MQTTCONNACK:1,0\r\n\r+MQTTCONN:1\r\n"


def test_connack_assigned_client_id(mosquitto):
    with Rnwf(opts={"rnwf02.proprx_values": True}) as e:
        e.join()
        e.oks('AT+MQTTC=1,"127.0.0.1"', f"AT+MQTTC=2,{mosquitto.port}", 'AT+MQTTC=3,""', "AT+MQTTC=8,5")
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        got = e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10)
        m = re.fullmatch(rb'\r\+MQTTPROPRX:34,10\r\n\r\+MQTTPROPRX:18,"(auto-[0-9A-F-]+)"\r\n\r\+MQTTPROPRX:33,20\r\n'
                         rb"\r\+MQTTCONNACK:0,0\r\n\r\+MQTTCONN:1\r\n", got)
        assert m, got
        assert e.cmd("AT+MQTTPROPRX=18") == b'+MQTTPROPRX:18,"' + m.group(1) + b'"\r\nOK\r\n'
        assert e.cmd("AT+MQTTPROPRX=17") == b"OK\r\n"               # nothing of that id received


def test_properties_leave_mqtt_311_alone(e, mosquitto, mqtt_probe, tap):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("v3/#")
    configure(e, tap.port, "rnwf-v3")
    e.oks('AT+MQTTPROPTX=38,"a","b"', "AT+MQTTPROPTX=17,60", "AT+MQTTPROPTXS=0,1")
    connect(e)                                                       # no +MQTTPROPRX
    assert tap.wait("CONNECT")[0][6] == 4                            # 3.1.1, no properties field
    assert e.cmd('AT+MQTTPUB=0,1,0,"v3/x","plain"') == b"OK\r\n"
    assert re.fullmatch(rb"\r\+MQTTPUBACK:\d+\r\n", e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5))
    assert probe.wait_for("v3/x")[0] == b"plain"


@pytest.mark.parametrize("host_style", ["CRLF", "CRLF-bytewise"], indirect=True)
def test_property_commands_validate(e, host_style):
    assert e.cmd("AT+MQTTPROPTX=4,1") == b'ERROR:0.4,"Invalid Parameter"\r\n'          # no such property
    assert e.cmd("AT+MQTTPROPTX=33,0") == b'ERROR:0.4,"Invalid Parameter"\r\n'         # receive maximum 1-65535
    assert e.cmd('AT+MQTTPROPTX=2,"60"') == b'ERROR:0.4,"Invalid Parameter"\r\n'       # a number
    assert e.cmd("AT+MQTTPROPTX=3,text") == b'ERROR:0.4,"Invalid Parameter"\r\n'       # a string
    assert e.cmd('AT+MQTTPROPTX=3,"0123456789abcdefX"') == b'ERROR:0.4,"Invalid Parameter"\r\n'  # 16 bytes at most
    assert e.cmd('AT+MQTTPROPTX=8,"a/#"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
    assert e.cmd("AT+MQTTPROPTX=3,[610062]") == b'ERROR:0.4,"Invalid Parameter"\r\n'          # NUL
    assert e.cmd('AT+MQTTPROPTX=38,"k",[FF]') == b'ERROR:0.4,"Invalid Parameter"\r\n'         # not UTF-8
    assert e.cmd("AT+MQTTPROPTX=2,5,6") == b'ERROR:0.5,"Incorrect Number of Parameters"\r\n'
    for i in range(10):
        e.ok(f'AT+MQTTPROPTX=38,"k{i}","v"')
    assert e.cmd('AT+MQTTPROPTX=38,"k10","v"') == b'ERROR:8.0,"MQTT Error"\r\n'
    e.ok('AT+MQTTPROPTX=38,"k3","new"')                                                # same key: replaced
    assert e.cmd("AT+MQTTPROPTX=38").count(b"+MQTTPROPTX:38,") == 10
    assert e.cmd("AT+MQTTPROPTXS=12,1") == b'ERROR:0.4,"Invalid Parameter"\r\n'
    assert e.cmd("AT+MQTTPROPTXS") == b"".join(b"+MQTTPROPTXS:%d,0\r\n" % i for i in
                                               (1, 2, 3, 8, 9, 11, 17, 23, 24, 25, 31, 33, 34, 35, 38, 39)) + b"OK\r\n"
    assert e.cmd("AT+MQTTPROPRX=4") == b'ERROR:0.4,"Invalid Parameter"\r\n'
    assert e.cmd("AT+MQTTPROPRX") == b"OK\r\n"


def test_refused_v5_connect_reports_the_reason_code(mosquitto_factory):
    broker = mosquitto_factory(passwords={"device": "s3cret"}, allow_anonymous=False)
    with Rnwf() as e:
        e.join()
        configure(e, broker.port, "rnwf-auth")
        e.oks('AT+MQTTC=4,"device"', 'AT+MQTTC=5,"wrong"')
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        v3 = e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10)
        # 3.1.1: the broker's return code 4/5, printed as the guide's MQTT 5 reason code 134/135
        assert re.fullmatch(rb"\r\+MQTTCONNACK:0,(134|135)\r\n\r\+MQTTCONN:0\r\n", v3), v3
        e.ok("AT+MQTTC=8,5")
        assert e.cmd("AT+MQTTCONN=1") == b"OK\r\n"
        v5 = e.read_until(rb"\+MQTTCONN:\d\r\n", timeout=10)
        assert re.fullmatch(rb"(\r\+MQTTPROPRX:\d+\r\n)*\r\+MQTTCONNACK:0,(134|135)\r\n\r\+MQTTCONN:0\r\n", v5), v5


def test_publish_by_topic_alias(e, mosquitto, mqtt_probe):
    probe = v5_probe(mqtt_probe, mosquitto)
    probe.subscribe("tele/#", qos=1)
    configure(e, mosquitto.port, "rnwf-alias")
    assert e.cmd('AT+MQTTPUB=0,0,0,3,"x"') == b'ERROR:8.0,"MQTT Error"\r\n'
    e.oks("AT+MQTTC=8,5", "AT+MQTTPROPTX=35,3", "AT+MQTTPROPTXS=35,1")
    connect(e, V5_CONNACK_PROPS)
    # the first PUBLISH carries the topic and alias 3; then the alias alone names the topic
    assert e.cmd('AT+MQTTPUB=0,1,0,"tele/dev7/temperature","21.5"') == b"OK\r\n"
    e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5)
    assert probe.wait_for("tele/#")[0] == b"21.5"
    e.ok("AT+MQTTPROPTXS=35,0")
    assert e.cmd('AT+MQTTPUB=0,1,0,3,"22.0"') == b"OK\r\n"
    assert re.fullmatch(rb"\r\+MQTTPUBACK:\d+\r\n", e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5))
    msg = probe.wait_message("tele/#")
    assert (msg.topic, msg.payload) == ("tele/dev7/temperature", b"22.0")
    assert e.cmd('AT+MQTTPUB=0,0,0,0,"x"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
    assert e.cmd('AT+MQTTPUB=0,0,0,tele/x,"x"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
