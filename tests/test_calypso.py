"""Würth Calypso (dialect of ti-simplelink) over a pty, driven as Würth's WCON driver does:
lower-case camel-case commands ending with CR LF, empty optional fields with their commas."""
from __future__ import annotations

import base64
import datetime as dt
import re
import socket
import time

import pytest

from atemu import api
from atemu.profiles.ti_simplelink import TiSimpleLink
from test_ti_common import Ti
from atemu.profiles.ti_simplelink.common import encode_data

FINAL = rb"(?:^|\r\n)(OK|ERROR:[^\r\n]*)\r\n"
LAB = {"ssid": "calypso_lab", "security": "wpa2", "password": "calypsowlan", "channel": 6, "rssi": -45,
       "bssid": "02:ca:1f:00:00:01", "ip": "192.168.178.43", "gateway": "192.168.178.1", "dns": "192.168.178.1"}
#: a MAC as ti-simplelink prints it: 02:11:.. (manual) or 0x2:0x11:.. (TI's source, issue 10)
MAC = rb"(?:0x[0-9a-f]{1,2}|[0-9a-f]{2})(?::(?:0x[0-9a-f]{1,2}|[0-9a-f]{2})){5}"
STARTUP = rb"\+eventstartup:2610011025000,0x31000019,(" + MAC + rb"),2\.2\.0\r\n"
#: ti-simplelink's startup_event hook (issue 10) lets a dialect print nothing after AT+start
HAS_START_HOOK = hasattr(TiSimpleLink, "startup_event")


def norm_mac(text: bytes) -> str:
    return ":".join(f"{int(p, 16):02x}" for p in text.decode().split(":"))
#: ti-simplelink counts Base64 characters in format-1 length fields (TI's AT interpreter; issue 10)
B64_CHARS = encode_data(1, b"abcd").startswith(b"1,8,")


def world(**extra) -> dict:
    w = {"wifi": {"access_points": [dict(LAB)]}}
    w.update(extra)
    return w


class Calypso(Ti):
    """The TI test module (CR LF commands, ``ok``/``later``) on the calypso profile and its lab."""

    PROFILE = "calypso"

    def __init__(self, *a, **kw):
        kw.setdefault("world", world())
        super().__init__(*a, **kw)

    def err(self, line, timeout: float = 5.0) -> bytes:
        """``<description>,<code>`` of the ERROR line (``ERROR:`` or TI's source ``ERROR: ``)."""
        out = self.cmd(line, timeout)
        m = re.search(rb"ERROR: ?([^\r\n]*)\r\n$", out)
        assert m, f"{line!r} expected an error, got {out!r}"
        return m.group(1)

    def bad(self, line, what: bytes = b"parse parameters") -> None:
        """A parameter error; its code is the dialect's (-2, or TI's source StrMpl code / 0)."""
        assert self.err(line).startswith(what + b","), line

    def handle(self) -> api.ModuleHandle:
        async def mk():
            return api.wrap(self.module)
        return self.call(mk())

    def reset(self, startup: bytes = STARTUP) -> bytes:
        """The host pulses the reset pin (control plane): the startup event comes first."""
        self.drain(0.1)
        self.handle().reset()                       # blocks until the module has booted
        return self.booted(startup)

    def booted(self, startup: bytes = STARTUP, timeout: float = 5.0) -> bytes:
        """Everything up to the startup event (and, without ti-simplelink's startup_event hook, the
        init_complete line its AT+start code then prints)."""
        out = self.read_until(startup, timeout)
        if not HAS_START_HOOK:
            self.read_until(rb"\+eventgeneral:init_complete,\w+\r\n")
        return out

    def join(self) -> None:
        self.ok(f"AT+wlanConnect={LAB['ssid']},,WPA_WPA2,{LAB['password']},,,")
        self.read_until(rb"\+eventwlan:connect,calypso_lab," + MAC + rb"\r\n")
        self.read_until(rb"\+eventnetapp:ipv4_acquired,192\.168\.178\.43,192\.168\.178\.1,192\.168\.178\.1\r\n")


@pytest.fixture
def cal():
    e = Calypso()
    e.start()
    try:
        e.reset()
        yield e
    finally:
        e.stop()


@pytest.fixture
def joined(cal):
    cal.join()
    return cal


# ---- start-up and device ---------------------------------------------------------------------------
def test_reset_pin_reboot_and_running_nwp(cal):
    mac = re.search(STARTUP, cal.reset()).group(1)
    assert cal.ok("AT+netCfgGet=GET_MAC_ADDR") == b"+netcfgget:" + mac + b"\r\n"
    # the NWP runs without AT+start: socket commands work at once; AT+start says it already runs
    assert cal.ok("AT+socket=INET,STREAM,TCP") == b"+socket:0\r\n"
    assert cal.err("AT+start") == b"process command,-114"
    # AT+reboot: OK, then the startup event (sockets are gone afterwards)
    cal.write(b"AT+reboot\r\n")
    out = cal.booted()
    assert out.startswith(b"OK\r\n+eventstartup:2610011025000,0x31000019,")
    assert cal.err("AT+close=0") == b"process command,-9"


@pytest.mark.skipif(not HAS_START_HOOK, reason="needs ti-simplelink's startup_event hook (issue 10)")
def test_stop_start_prints_only_ok(cal):
    assert cal.cmd("AT+stop=0") == b"OK\r\n"
    assert cal.err("AT+socket=INET,STREAM,TCP") == b"process command,-2018"
    assert cal.cmd("AT+start") == b"OK\r\n"
    cal.expect_nothing(0.3)


def test_control_plane_reset_and_wakeup_routes(cal):
    async def serve():
        from atemu.control import ControlServer
        srv = ControlServer("127.0.0.1", 0, modules=lambda: {"calypso": handle})
        await srv.start()
        return srv
    handle = cal.handle()
    srv = cal.call(serve())
    try:
        import urllib.request

        def post(path):
            req = urllib.request.Request(f"{srv.url}/api/modules/calypso/{path}", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.read()
        assert cal.cmd("AT+powersave") == b"OK\r\n"
        cal.write(b"AT+test\r\n")
        cal.expect_nothing(0.4)                     # asleep: the UART is ignored
        assert b'"woke": true' in post("wakeup")
        assert cal.read_until(rb"\r\n") == b"+eventwakeup\r\n"
        assert b'"woke": false' in post("wakeup")
        assert cal.cmd("AT+test") == b"OK\r\n"
        assert post("reset") == b'{"ok": true}'
        assert re.fullmatch(STARTUP, cal.booted())           # the reply came after the module booted
    finally:
        cal.call(srv.stop())


def test_version_uart_udid_time(cal):
    assert cal.ok("AT+get=general,version") == b"+get:0x31000019,3.7.0.1,2.2.0.6,3.7.0.1,0,2.2.0\r\n"
    assert cal.ok("AT+get=UART,baudrate") == b"+get:921600\r\n"
    assert cal.ok("AT+get=UART,parity") == b"+get:1\r\n"
    assert cal.ok("AT+get=UART,flowcontrol") == b"+get:false\r\n"
    assert re.fullmatch(rb"\+get:0x[0-9a-f]{1,2}(,0x[0-9a-f]{1,2}){15}\r\n", cal.ok("AT+get=IOT,UDID"))
    assert cal.ok("AT+set=general,time,13,45,30,24,12,2030") == b""
    h, mi, s, d, mo, y = map(int, re.search(rb"\+get:([\d,]+)", cal.ok("AT+get=general,time")).group(1).split(b","))
    assert abs((dt.datetime(y, mo, d, h, mi, s) - dt.datetime(2030, 12, 24, 13, 45, 30)).total_seconds()) < 5
    cal.bad("AT+set=UART,baudrate,12345")
    cal.bad("AT+set=UART,parity,3")
    cal.bad("AT+set=UART,baudrate", b"number of parameters")
    cal.bad("AT+get=UART,speed")
    # settings are stored and apply from the next reset
    assert cal.ok("AT+set=UART,baudrate,115200") == b""
    assert cal.ok("AT+set=UART,flowcontrol,true") == b""
    assert cal.ok("AT+get=UART,baudrate") == b"+get:115200\r\n"
    assert cal.module.baud == 921600
    cal.reset()
    assert cal.module.baud == 115200
    assert cal.ok("AT+get=UART,flowcontrol") == b"+get:true\r\n"


def test_world_option_firmware_is_checked():
    from atemu.world import WorldError
    with pytest.raises(WorldError, match="calypso.firmware"):
        Calypso(world=world(options={"calypso.firmware": "2.2"}))


def test_firmware_before_1_9_prints_five_version_fields():
    with Calypso(world=world(options={"calypso.firmware": "1.8.3"})) as e:
        assert e.reset(rb"\+eventstartup:2610011025000,0x31000019," + MAC + rb",1\.8\.3\r\n")
        assert e.ok("AT+get=general,version") == b"+get:0x31000019,3.7.0.1,2.2.0.6,3.7.0.1,0\r\n"


def test_sleep_ignores_the_uart_then_boots(cal):
    assert cal.cmd("AT+sleep=1") == b"OK\r\n"
    t0 = time.monotonic()
    cal.write(b"AT+test\r\n")                      # lost: the module hibernates
    out = cal.booted(timeout=10)
    assert time.monotonic() - t0 > 0.8
    assert out.startswith(b"+eventstartup:")      # no answer to the command sent while asleep
    assert cal.cmd("AT+test") == b"OK\r\n"
    cal.bad("AT+sleep=0")
    cal.bad("AT+sleep=86401")


def test_factoryreset_wipes_files_and_settings(cal):
    mac = re.search(STARTUP, cal.reset()).group(1)
    udid = cal.ok("AT+get=IOT,UDID")
    fid = int(re.search(rb"\+fileopen:(\d+),", cal.ok("AT+fileOpen=keep.txt,CREATE|WRITE,64")).group(1))
    cal.write(f"AT+fileWrite={fid},0,0,5,hello\r\n".encode())
    assert cal.read_until(FINAL) == b"+filewrite:5\r\nOK\r\n"
    cal.ok(f"AT+fileClose={fid},,")
    cal.ok("AT+set=UART,parity,0")
    cal.ok(f"AT+wlanProfileAdd={LAB['ssid']},,WPA_WPA2,{LAB['password']},,,,15")
    cal.drain(0.5)
    cal.write(b"AT+factoryreset\r\n")
    out = cal.booted(timeout=15)
    assert out.startswith(b"OK\r\n+eventstartup:")
    cal.expect_nothing(0.5)                         # no stored profile: no auto-connect
    assert cal.err("AT+fileOpen=keep.txt,READ,64") == b"process command,-11300"
    assert cal.ok("AT+get=UART,parity") == b"+get:1\r\n"
    assert re.search(STARTUP, out).group(1) == mac              # burned in: the MAC and UDID stay
    assert cal.ok("AT+get=IOT,UDID") == udid


def test_gpio_set_get(cal):
    assert cal.ok("AT+gpioSet=0,false,output,high,") == b""
    assert cal.ok("AT+gpioGet=0,false") == b"+gpioget:0,output,high,\r\n"
    assert cal.ok("AT+gpioSet=1,true,input,pullup,") == b""
    assert cal.ok("AT+gpioGet=1,false") == b"+gpioget:1,input,low,pullup\r\n"
    assert cal.ok("AT+gpioSet=2,false,pwm,100,40") == b""
    assert cal.ok("AT+gpioGet=2,false") == b"+gpioget:2,pwm,100,40\r\n"
    assert cal.ok("AT+gpioGet=3,false") == b"+gpioget:3,unused,,\r\n"
    assert cal.err("AT+gpioSet=0,false,pwm,100,40") == b"process command,-1"     # PWM on GPIO 2 and 3 only
    cal.bad("AT+gpioSet=0,false,output,medium,")
    cal.reset()
    assert cal.ok("AT+gpioGet=0,false") == b"+gpioget:0,unused,,\r\n"             # not saved
    assert cal.ok("AT+gpioGet=1,true") == b"+gpioget:1,input,low,pullup\r\n"      # saved


def test_gpio_input_level_from_the_world():
    with Calypso(world=world(options={"calypso.gpio_inputs": {"1": 1}})) as e:
        e.reset()
        e.ok("AT+gpioSet=1,false,input,nopull,")
        assert e.ok("AT+gpioGet=1,false") == b"+gpioget:1,input,high,nopull\r\n"


# ---- WLAN, sockets ---------------------------------------------------------------------------------
def test_wlan_ap_ssid_append_mac(cal):
    mac = norm_mac(re.search(STARTUP, cal.reset()).group(1)).replace(":", "")[-6:].upper().encode()
    assert cal.ok("AT+wlanSet=AP,SSID,false,Calypso-42") == b""
    assert cal.ok("AT+wlanGet=AP,SSID") == b"+wlanget:Calypso-42\r\n"
    assert cal.ok("AT+wlanSet=AP,SSID,true,Calypso") == b""
    assert cal.ok("AT+wlanGet=AP,SSID") == b"+wlanget:Calypso-" + mac + b"\r\n"
    cal.bad("AT+wlanSet=AP,SSID,maybe,Calypso")


def test_stored_profile_reconnects_after_reboot(cal):
    """The WCON WLAN example: add a profile, reboot, the module joins by itself after +eventstartup."""
    assert cal.ok("AT+wlanPolicySet=connection,auto,") == b""
    assert cal.ok(f"AT+wlanProfileAdd={LAB['ssid']},,WPA_WPA2,{LAB['password']},,,,15") == b"+wlanprofileadd:0\r\n"
    cal.drain(1.0)
    cal.write(b"AT+reboot\r\n")
    out = cal.read_until(rb"\+eventnetapp:ipv4_acquired,192\.168\.178\.43,[^\r]*\r\n", timeout=10)
    init = b"" if HAS_START_HOOK else rb"\+eventgeneral:init_complete,sta\r\n"
    assert re.match(rb"OK\r\n" + STARTUP + init + rb"\+eventwlan:connect,calypso_lab," + MAC + rb"\r\n", out), out
    assert cal.ok("AT+wlanProfileDel=0") == b""
    assert cal.err("AT+wlanProfileGet=0") == b"process command,-2073"


def test_policy_get_always_prints_a_value(cal):
    assert cal.ok("AT+wlanPolicyGet=PM") == b"+wlanpolicyget:normal,0\r\n"     # the driver reads an integer
    cal.ok("AT+wlanPolicySet=PM,long_sleep,123")
    assert cal.ok("AT+wlanPolicyGet=PM") == b"+wlanpolicyget:long_sleep,123\r\n"


def test_tcp_client_send_and_receive_event(joined, tcp_echo):
    cal = joined
    assert cal.ok("AT+socket=INET,STREAM,TCP") == b"+socket:0\r\n"
    cal.write(f"AT+connect=0,INET,{tcp_echo.port},127.0.0.1\r\n".encode())
    assert cal.read_until(rf"\+connect:{tcp_echo.port},127\.0\.0\.1\r\n".encode()).startswith(b"OK\r\n")
    cal.drain(0.3)
    payload = b"0\r\n1,2\r\n"
    cal.write(b"AT+send=0,0,%d,%s\r\n" % (len(payload), payload))
    assert cal.read_until(FINAL).endswith(b"OK\r\n")
    tcp_echo.wait_received(len(payload))
    cal.write(b"AT+recv=0,0,1460\r\n")
    assert cal.read_until(rb"\+recv:0,0,8,0\r\n1,2\r\n").startswith(b"OK\r\n")
    cal.drain(0.3)
    assert cal.ok("AT+close=0") == b"+close:0\r\n"


def test_tcp_server_accept_and_peer_close(joined):
    cal = joined
    cal.ok("AT+socket=INET,STREAM,TCP")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cal.ok(f"AT+bind=0,INET,{port},127.0.0.1")
    cal.ok("AT+listen=0,10")
    cal.write(b"AT+accept=0,INET\r\n")
    peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    out = cal.read_until(rb"\+accept:1,inet,\d+,127\.0\.0\.1\r\n")
    assert out.startswith(b"OK\r\n")
    assert int(re.search(rb"\+accept:1,inet,(\d+),", out).group(1)) == peer.getsockname()[1]
    cal.drain(0.3)
    peer.sendall(b"ping-1")
    time.sleep(0.2)
    cal.write(b"AT+recv=1,0,1460\r\n")
    assert cal.read_until(rb"\+recv:1,0,6,ping-1\r\n").startswith(b"OK\r\n")
    cal.drain(0.3)
    cal.write(b"AT+send=1,0,4,pong\r\n")
    cal.read_until(FINAL)
    assert peer.recv(10) == b"pong"
    peer.close()
    cal.write(b"AT+recv=1,0,1460\r\n")              # the WCON example re-listens on a zero-length receive
    cal.read_until(rb"\+recv:1,0,0,\r\n")


@pytest.mark.skipif(not hasattr(__import__("atemu.net.sockets", fromlist=["x"]), "host_bind_address"),
                    reason="binding the module's own address needs the core's host_bind_address (issue 10)")
def test_bind_on_own_address_as_the_driver_example_does(joined):
    cal = joined
    cal.ok("AT+socket=INET,STREAM,TCP")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cal.ok(f"AT+bind=0,INET,{port},192.168.178.43")          # the DHCP lease
    cal.ok("AT+listen=0,10")
    cal.write(b"AT+accept=0,INET\r\n")
    peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    cal.read_until(rb"\+accept:1,inet,\d+,127\.0\.0\.1\r\n")
    peer.close()
    cal.drain(0.3)
    # the WCON TCP server example: a static address configured while associated, bound at once
    cal.ok("AT+netCfgSet=IPV4_STA_ADDR,STATIC,192.168.178.42,255.255.255.0,192.168.178.1,192.168.178.1")
    assert cal.ok("AT+socket=INET,DGRAM,UDP") == b"+socket:2\r\n"
    cal.ok(f"AT+bind=2,INET,{port},192.168.178.42")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"dgram", ("127.0.0.1", port))
    cal.write(b"AT+recvFrom=2,INET,8888,192.168.178.43,0,1460\r\n")
    assert cal.read_until(rb"\+recvfrom:2,0,5,dgram\r\n").startswith(b"OK\r\n")
    sender.close()


def test_udp_sendto_and_recvfrom(joined, udp_echo):
    cal = joined
    assert cal.ok("AT+socket=INET,DGRAM,UDP") == b"+socket:0\r\n"
    cal.ok("AT+bind=0,INET,0,127.0.0.1")
    cal.write(f"AT+sendTo=0,INET,{udp_echo.port},127.0.0.1,0,11,Hello World\r\n".encode())
    assert cal.read_until(FINAL).endswith(b"OK\r\n")
    cal.write(f"AT+recvFrom=0,INET,{udp_echo.port},127.0.0.1,0,1460\r\n".encode())
    assert cal.read_until(rb"\+recvfrom:0,0,11,Hello World\r\n").startswith(b"OK\r\n")
    cal.drain(0.3)
    cal.ok("AT+close=0")


# ---- files -----------------------------------------------------------------------------------------
def test_file_write_read_list_delete_binary(cal):
    out = cal.ok("AT+fileOpen=testfile,CREATE|WRITE,4096")
    fid = int(re.fullmatch(rb"\+fileopen:(\d+),0\r\n", out).group(1))
    cal.write(f"AT+fileWrite={fid},0,0,11,Hello World\r\n".encode())
    assert cal.read_until(FINAL) == b"+filewrite:11\r\nOK\r\n"
    assert cal.ok(f"AT+fileClose={fid},,") == b""
    fid = int(re.search(rb"\+fileopen:(\d+),", cal.ok("AT+fileOpen=testfile,READ,4096")).group(1))
    assert cal.ok(f"AT+fileRead={fid},0,0,11") == b"+fileread:0,11,Hello World\r\n"
    cal.ok(f"AT+fileClose={fid},,")
    assert b"+filegetfilelist:/testfile,4096," in cal.ok("AT+fileGetFileList")
    assert cal.ok("AT+fileDel=testfile,0") == b""
    assert (cal.state_dir / "flash" / "testfile").exists() is False


@pytest.mark.skipif(not B64_CHARS, reason="needs ti-simplelink's Base64-character lengths (issue 10)")
def test_file_write_base64_reports_the_characters_consumed(cal):
    fid = int(re.search(rb"\+fileopen:(\d+),", cal.ok("AT+fileOpen=b64,CREATE|WRITE,4096")).group(1))
    enc = base64.b64encode(b"Hello World").decode()
    # the WCON driver advances through its encoded chunk by the returned count
    assert cal.ok(f"AT+fileWrite={fid},0,1,{len(enc)},{enc}") == b"+filewrite:16\r\n"
    cal.ok(f"AT+fileClose={fid},,")
    fid = int(re.search(rb"\+fileopen:(\d+),", cal.ok("AT+fileOpen=b64,READ,4096")).group(1))
    assert cal.ok(f"AT+fileRead={fid},0,1,11") == b"+fileread:1,16," + enc.encode() + b"\r\n"
    cal.ok(f"AT+fileClose={fid},,")


# ---- MQTT, HTTP, SNTP ------------------------------------------------------------------------------
def test_mqtt_session_as_the_wcon_driver_sends_it(joined, mosquitto, mqtt_probe):
    cal = joined
    probe = mqtt_probe(mosquitto)
    probe.subscribe(["kitchen/#"])
    assert cal.ok(f"AT+mqttCreate=testClient,ip4,127.0.0.1,{mosquitto.port},,,,,,,v3_1_1,0,0") == b"+mqttcreate:0\r\n"
    cal.ok("AT+mqttConnect=0")
    cal.read_until(rb"\+eventmqtt:operation,connack,0\r\n")
    cal.write(b"AT+mqttPublish=0,kitchen/temp,QOS0,0,8,10.4 deg\r\n")
    assert cal.read_until(FINAL) == b"OK\r\n"
    assert probe.wait_for("kitchen/temp")[0] == b"10.4 deg"
    # the driver writes four empty fields more than the four topic groups
    assert cal.ok("AT+mqttSubscribe=0,2,kitchen/temp,QOS0,,kitchen/humidity,QOS0,,,,,,,,,,,") == b""
    cal.read_until(rb"\+eventmqtt:operation,suback(?:,\d+)?,0,0\r\n")   # [packet id,] granted QoS per topic
    assert cal.err("AT+mqttSubscribe=0,1,kitchen/temp,QOS0,,,,,,,,,,,x,,,").split(b",")[0] in (
        b"number of parameters", b"parse parameters")                    # a non-empty extra field
    probe.publish("kitchen/humidity", b"55%")
    assert cal.read_until(rb"\+eventmqtt:recv,[^\r]*\r\n") == b"+eventmqtt:recv,kitchen/humidity,qos0,0,0,0,3,55%\r\n"
    assert cal.ok("AT+mqttUnsubscribe=0,1,kitchen/temp,,,,,,,") == b""
    cal.read_until(rb"\+eventmqtt:operation,unsuback[,\d]*\r\n")
    cal.ok("AT+mqttDisconnect=0")
    cal.read_until(rb"\+eventmqtt:disconnect,?\r\n")
    cal.ok("AT+mqttDelete=0")


def test_http_absolute_uri_as_the_wcon_driver_sends_it(joined, http_server):
    cal = joined
    assert cal.ok("AT+httpCreate") == b"+httpcreate:0\r\n"
    cal.ok(f"AT+httpConnect=0,http://127.0.0.1:{http_server.port}/,ignore_proxy,,,")
    assert cal.ok(f"AT+httpSendReq=0,get,http://127.0.0.1:{http_server.port}/get?x=1,,0,0,") == b"+httpsendreq:200\r\n"
    assert http_server.last().path == "/get"
    body = cal.ok("AT+httpReadResBody=0,0,1000")
    assert body.startswith(b"+httpreadresbody:0,0,0,") and b'"path": "/get"' in body
    cal.ok("AT+httpDisconnect=0")
    cal.ok("AT+httpDestroy=0")


def test_sntp_client_updates_the_device_time(joined, sntp_server):
    cal = joined
    assert cal.err("AT+netAppUpdateTime") == b"process command,-110"          # no server yet
    cal.ok("AT+netAppSet=SNTP_CLIENT,enable,1")
    cal.ok("AT+netAppSet=SNTP_CLIENT,time_zone,60")
    cal.ok(f"AT+netAppSet=SNTP_CLIENT,server_address,0,127.0.0.1:{sntp_server.port}")
    assert cal.ok("AT+netAppGet=SNTP_CLIENT,time_zone") == b"+netappget:60\r\n"
    assert cal.ok("AT+netAppGet=SNTP_CLIENT,server_address") == \
        f"+netappget:[0]:127.0.0.1:{sntp_server.port}\n[1]:\n[2]:\n\r\n".encode()
    assert cal.ok("AT+netAppUpdateTime", timeout=10) == b""
    h, mi, s, d, mo, y = map(int, re.search(rb"\+get:([\d,]+)", cal.ok("AT+get=general,time")).group(1).split(b","))
    want = dt.datetime.utcfromtimestamp(time.time() + 1000 + 3600)          # server: +1000 s, zone +60 min
    assert abs((dt.datetime(y, mo, d, h, mi, s) - want).total_seconds()) < 5
    assert len(sntp_server.requests) >= 1
