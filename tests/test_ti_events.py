"""TI SimpleLink events: the order a real connect / IP acquire / link loss produces them, their
fields, and that they never split a command's response (they wait for its final line)."""
from __future__ import annotations

import re

from test_ti_common import LAB, Ti, world


def test_connect_ipv6_and_loss_event_order_and_status_bits():
    with Ti() as e:
        e.boot()
        e.ok("AT+NetCfgSet=IF,STATE,IPV6_STA_LOCAL")
        mac = e.ok("AT+NetCfgGet=GET_MAC_ADDR").split(b":", 1)[1].strip()
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:\r\n"
        e.ok(f"AT+WlanConnect=lab,,WPA_WPA2,{LAB['password']},,,")
        evs = e.read_until(rb"ipv6_acquired[^\r]*\r\n")
        v6 = e.ok("AT+NetCfgGet=IPV6_ADDR_LOCAL").split(b",")[1].strip()
        assert re.fullmatch(rb"0xfe800000:0x0:0x[0-9a-f]+:0x[0-9a-f]+", v6) and mac    # four 32-bit words (TI)
        assert evs == (b"+eventwlan:connect,lab,0x2:0x11:0x22:0x33:0x44:0x55\r\n"
                       b"+eventnetapp:ipv4_acquired,192.168.7.20,192.168.7.1,192.168.7.1\r\n"
                       b"+eventnetapp:ipv6_acquired," + v6 + b",0x0:0x0:0x0:0x0\r\n")    # IPv6 DNS: none
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:ipacquired|ipacquired_v6\r\n"
        e.sync(lambda: e.module.world.access_points.clear())
        assert e.read_until(rb"ipv6_lost[^\r]*\r\n", 3) == (
            b"+eventwlan:disconnect,lab,0x2:0x11:0x22:0x33:0x44:0x55,4\r\n+eventnetapp:ipv4_lost,0\r\n"
            b"+eventnetapp:ipv6_lost," + v6 + b"\r\n")
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:ipv4_lost|ipv6_lost\r\n"


def test_dhcp_lla_falls_back_to_a_link_local_address():
    ap = dict(LAB, ssid="nodhcp", bssid="02:11:22:33:44:66", ip="0.0.0.0")
    with Ti(world={"wifi": {"access_points": [ap, dict(LAB)]}}) as e:
        e.boot()
        e.ok("AT+NetCfgSet=IPV4_STA_ADDR,DHCP_LLA,")
        e.ok(f"AT+WlanConnect=nodhcp,,WPA_WPA2,{LAB['password']},,,")
        out = e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
        m = re.fullmatch(rb"\+eventwlan:connect,nodhcp,0x2:0x11:0x22:0x33:0x44:0x66\r\n\+eventnetapp:dhcp_ipv4_acquire_timeout,-1\r\n"
                         rb"\+eventnetapp:ipv4_acquired,(169\.254\.\d+\.\d+),0\.0\.0\.0,0\.0\.0\.0\r\n", out)
        assert m, out
        assert e.ok("AT+NetCfgGet=IPV4_STA_ADDR") == b"+netcfgget:dhcp_lla," + m.group(1) + b",255.255.0.0,0.0.0.0,0.0.0.0\r\n"
        e.ok("AT+WlanDisconnect")
        e.read_until(rb"disconnect[^\r]*\r\n")
        e.ok("AT+NetCfgSet=IF,STATE,DISABLE_IPV4_LLA")            # no link-local fallback
        e.ok(f"AT+WlanConnect=nodhcp,,WPA_WPA2,{LAB['password']},,,")
        assert e.read_until(rb"timeout,-1\r\n", 5).endswith(b"+eventnetapp:dhcp_ipv4_acquire_timeout,-1\r\n")
        e.expect_nothing(0.3)
        e.ok("AT+NetCfgSet=IF,STATE,DISABLE_IPV4_DHCP|DISABLE_IPV4_LLA")  # no DHCP client: even lab gives nothing
        e.ok(f"AT+WlanConnect=lab,,WPA_WPA2,{LAB['password']},,,")
        assert e.read_until(rb"timeout,-1\r\n", 5).endswith(
            b"+eventwlan:connect,lab,0x2:0x11:0x22:0x33:0x44:0x55\r\n+eventnetapp:dhcp_ipv4_acquire_timeout,-1\r\n")
        e.expect_nothing(0.3)


def test_events_wait_for_a_slow_command(http_server):
    """The AP disappears while AT+HttpSendReq waits ~1 s for a slow server: the response comes
    whole, then the link-loss events in order, then the next command answers normally."""
    with Ti(world=world()) as e:
        e.boot()
        e.join()
        e.ok("AT+HttpCreate")
        e.ok(f"AT+HttpConnect=0,127.0.0.1:{http_server.port},,,,")
        e.write(b"AT+HttpSendReq=0,get,/slow?delay=1,,,,\r\n")
        e.expect_nothing(0.3)                                    # the request is on its way
        e.sync(lambda: e.module.world.access_points.clear())
        out = e.read_until(rb"ipv4_lost,0\r\n", 5)
        assert out == (b"+httpsendreq:200\r\nOK\r\n"
                       b"+eventwlan:disconnect,lab,0x2:0x11:0x22:0x33:0x44:0x55,4\r\n+eventnetapp:ipv4_lost,0\r\n")
        assert e.ok("AT+HttpReadResBody=0,0,100") == b"+httpreadresbody:0,0,0,4,slow\r\n"


def test_events_never_split_a_deferred_result_or_a_raw_response(tcp_echo):
    """A link-loss event fired while a raw +recv: line is written comes before or after it, never inside."""
    payload = b"x\r\n+eventwlan:fake\r\n" * 40
    with Ti(world=world()) as e:
        e.boot()
        e.join()
        e.ok("AT+Socket=INET,STREAM,TCP")
        e.ok(f"AT+Connect=0,INET,{tcp_echo.port},127.0.0.1")
        e.read_until(rb"\+connect:[^\r]*\r\nOK\r\n")
        e.write(f"AT+Send=0,0,{len(payload)},".encode() + payload + b"\r\n")
        e.read_until(rb"OK\r\n")
        tcp_echo.wait_received(len(payload))
        e.write(b"AT+Recv=0,0,16000\r\n")
        e.sync(lambda: e.module.world.access_points.clear())
        out = e.read_until(rb"ipv4_lost,0\r\n", 5)
        out += e.drain(0.3)
        assert out.startswith(b"OK\r\n")
        i = out.index(b"+recv:0,0,")
        n = int(re.match(rb"\+recv:0,0,(\d+),", out[i:]).group(1))
        start = out.index(b",", i + 10) + 1
        assert out[start:start + n] == payload[:n]                   # the data is whole, no event inside
        assert out[start + n:start + n + 6] == b"\r\nOK\r\n"
        assert out.count(b"+eventwlan:disconnect,lab,0x2:0x11:0x22:0x33:0x44:0x55,4\r\n") == 1


def test_retained_message_comes_after_the_suback_event(mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.publish("dev/ret", b"kept", qos=1, retain=True)
    with Ti(world=world()) as e:
        e.boot()
        e.join()
        for blocking in (1, 0):
            e.ok(f"AT+MqttCreate=r{blocking},ip4,127.0.0.1,{mosquitto.port},,,,,,,v3_1_1,{blocking},0")
        for idx in (0, 1):
            e.ok(f"AT+MqttConnect={idx}")
            e.read_until(rb"connack,0\r\n")
            e.ok(f"AT+MqttSubscribe={idx},1,dev/ret,qos1,")
            out = e.read_until(rb"\+eventmqtt:recv,dev/ret,qos1,1,0,0,4,kept\r\n", 5)
            assert re.fullmatch(rb"\+eventmqtt:operation,suback,1\r\n\+eventmqtt:recv,dev/ret,qos1,1,0,0,4,kept\r\n",
                                out), (idx, out)
        probe.publish("dev/ret", b"", qos=1, retain=True)
