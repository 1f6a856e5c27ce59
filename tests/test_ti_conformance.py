"""TI SimpleLink: every one of the 71 commands against the request/response templates of the manual
(inventory §5.1), over the pty: one successful and one failing call each, in the printed order
(value line then OK; for the blocked commands the order of TI's source: OK, value line, OK for
Accept/Connect/Select/Recv/RecvFrom; value line then OK, later, for GetHostByName/GetHostByService/
NetAPPRecv; OK then the report line and no second OK for NetAPPPing; OK alone for the rest).
Commands are spelt as host drivers spell them (lower camel case: AT+wlanConnect, AT+netAppPing), end
with CR LF (test_ti_common.Ti.cmd) and pad empty fields with commas; output lines are exact bytes.

Everything stays on loopback: the module talks to itself (listening socket, its own HTTP server)."""
from __future__ import annotations

import re
import socket

from harness import host_styles
from test_ti_common import LAB, Ti, world

# every table runs once per host style: CR, CR LF, LF (the TI dialect ends a line with any of
# them) and CR LF written byte by byte
host_style = host_styles("CR", "CRLF", "LF", "CRLF-bytewise")

ERR_PARSE = b"ERROR: parse parameters,-4\r\n"
ERR_COUNT = b"ERROR: number of parameters,0\r\n"
ERR_MISSING = b"ERROR: parse parameters,-1\r\n"       # a value that is not there (TI's StrMpl: -1)
ERR_UNKNOWN = b"ERROR: command not exist,0\r\n"


def proc(code: int) -> bytes:
    return b"ERROR: process command,%d\r\n" % code


def free_port(kind=socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check(e: Ti, line: str, expect, later=None, second_ok=True) -> None:
    """``expect``: the exact response (bytes) or a regex (str) it must match in full; ``later``: the
    deferred value lines of an OK-first command (regex, without the trailing OK; ``second_ok``: whether
    an OK follows them)."""
    out = e.cmd(line, timeout=8)
    if isinstance(expect, bytes):
        assert out == expect, f"{line!r} -> {out!r}, expected {expect!r}"
    else:
        assert re.fullmatch(expect.encode(), out, re.S), f"{line!r} -> {out!r}, expected /{expect}/"
    if later is not None and not second_ok:
        got = e.read_until((later + r"\r\n").encode(), 10)
        assert re.fullmatch((later + r"\r\n").encode(), got, re.S), f"{line!r} later -> {got!r}"
        e.expect_nothing(0.2)                                          # no second OK
    elif later is not None:
        got = e.read_until(rb"(?:^|\r\n)(OK|ERROR: [^\r\n]*)\r\n", 10)
        assert re.fullmatch((later + r"\r\nOK\r\n").encode(), got, re.S), f"{line!r} later -> {got!r}"


def run_table(e: Ti, table) -> None:
    for row in table:
        check(e, *row)


def test_device_sockets_templates():
    tport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    with Ti() as e:
        check(e, "AT+socket=INET,STREAM,TCP", proc(-2018))           # the NWP is not started yet
        check(e, "AT+start", b"OK\r\n")
        e.join()
        run_table(e, [
            # ---- device
            ("AT+start", proc(-114)),
            ("AT+test", b"OK\r\n"),
            ("AT+test=1", ERR_UNKNOWN),
            ("AT+get=General,Persistent", b"+get:1\r\nOK\r\n"),
            ("AT+get=General", ERR_COUNT),
            ("AT+get=Status,WLAN", b"+get:sta_connected\r\nOK\r\n"),
            ("AT+get=Status,NETAPP", b"+get:ipacquired\r\nOK\r\n"),
            ("AT+set=General,Persistent,1", b"OK\r\n"),
            ("AT+set=General,Bogus,1", ERR_PARSE),
            ("AT+stop=0x10000", ERR_PARSE),
            # ---- sockets: a listening socket, a client connecting to it, the accepted peer
            ("AT+socket=INET,STREAM,TCP", b"+socket:0\r\nOK\r\n"),
            ("AT+socket=INET,DGRAM,TCP", proc(-91)),
            (f"AT+bind=0,INET,{tport},127.0.0.1", b"OK\r\n"),
            (f"AT+bind=9,INET,{tport},127.0.0.1", proc(-9)),
            ("AT+listen=0,2", b"OK\r\n"),
            ("AT+listen=0,2", proc(-106)),
            ("AT+socket=INET,STREAM,TCP", b"+socket:1\r\nOK\r\n"),
            (f"AT+connect=1,INET,{tport},127.0.0.1", b"OK\r\n", rf"\+connect:{tport},127\.0\.0\.1"),
            ("AT+connect=1,INET,0,127.0.0.1", ERR_PARSE),
            ("AT+accept=0,INET", b"OK\r\n", r"\+accept:2,inet,\d+,127\.0\.0\.1"),
            ("AT+accept=1,INET", proc(-22)),
            ("AT+send=1,0,7,he,l\r\nx", b"OK\r\n"),
            ("AT+send=1,1,5,!!!!", ERR_PARSE),
            ("AT+select=3,2,1,0", b"OK\r\n", r"\+select:2"),
            ("AT+select=2,2,0,0", ERR_PARSE),
            ("AT+recv=2,0,7", b"OK\r\n", "\\+recv:2,0,7,he,l\r\nx"),
            ("AT+recv=0,0,5", proc(-107)),
            ("AT+setSockOpt=1,SOCKET,KEEPALIVE,1", b"OK\r\n"),
            ("AT+setSockOpt=1,SOCKET,KEEPALIVE,2", ERR_PARSE),
            ("AT+getSockOpt=1,SOCKET,KEEPALIVE", b"+getsockopt:1\r\nOK\r\n"),
            ("AT+getSockOpt=1,PHY,PHY_RATE", proc(-95)),
            # ---- UDP
            ("AT+socket=INET,DGRAM,UDP", b"+socket:3\r\nOK\r\n"),
            (f"AT+bind=3,INET,{uport},127.0.0.1", b"OK\r\n"),
            (f"AT+sendTo=3,INET,{uport},127.0.0.1,1,8,cGluZw==", b"OK\r\n"),
            ("AT+sendTo=3,INET,0,127.0.0.1,0,1,x", ERR_PARSE),
            ("AT+recvFrom=3,INET,0,0.0.0.0,1,10", b"OK\r\n", r"\+recvfrom:3,1,8,cGluZw=="),
            ("AT+recvFrom=3,INET6,0,1.2.3.4,0,10", ERR_PARSE),
            ("AT+close=3", b"+close:3\r\nOK\r\n"),
            ("AT+close=3", proc(-9)),
        ])


def test_wlan_files_netcfg_netutil_templates():
    with Ti() as e:
        e.boot()
        e.join()
        run_table(e, [
            # ---- WLAN
            ("AT+wlanConnect=lab,,WPA_WPA2,,,,", ERR_COUNT),
            ("AT+wlanProfileAdd=lab,,WPA_WPA2,lab-pass-123,,,,3", b"+wlanprofileadd:0\r\nOK\r\n"),
            ("AT+wlanProfileAdd=lab,,OPEN,,,,,16", ERR_PARSE),
            ("AT+wlanProfileGet=0", b"+wlanprofileget:lab,,wpa_wpa2,,,,,3\r\nOK\r\n"),
            ("AT+wlanProfileGet=1", proc(-2073)),
            ("AT+ wlanProfileDel = 0", b"OK\r\n"),
            ("AT+wlanProfileDel=0", proc(-2073)),
            ("AT+wlanPolicySet=SCAN,Hidden_SSID,30", b"OK\r\n"),
            ("AT+wlanPolicySet=SCAN,Bogus,1", ERR_PARSE),
            ("AT+wlanPolicyGet=SCAN", b"+wlanpolicyget:hidden_ssid,30\r\nOK\r\n"),
            ("AT+wlanPolicyGet=BOGUS", ERR_PARSE),
            ("AT+wlanScan=0,30", b"+wlanscan:lab,0x2:0x11:0x22:0x33:0x44:0x55,-40,6,wpa2,0,ccmp,psk\r\nOK\r\n"),
            ("AT+wlanScan=30,1", ERR_PARSE),
            ("AT+wlanSet=AP,CHANNEL,11", b"OK\r\n"),
            ("AT+wlanSet=AP,CHANNEL,12", ERR_PARSE),
            ("AT+wlanGet=AP,CHANNEL", b"+wlanget:11\r\nOK\r\n"),
            ("AT+wlanGet=AP,BOGUS", ERR_PARSE),
            ("AT+wlanGet=CONNECTION,", b"+wlanget:sta,station_connected,wpa_wpa2,lab,0x2:0x11:0x22:0x33:0x44:0x55\r\nOK\r\n"),
            ("AT+wlanSetMode=STA", b"OK\r\n"),
            ("AT+wlanSetMode=XX", ERR_PARSE),
            # ---- files
            ("AT+fileOpen=/t.txt,CREATE|WRITE,64", b"+fileopen:1,0\r\nOK\r\n"),
            ("AT+fileOpen=../t.txt,CREATE,64", proc(-11302)),
            ("AT+fileWrite=1,0,0,5,he\r\nl", b"+filewrite:5\r\nOK\r\n"),
            ("AT+fileWrite=1,60,0,5,hello", proc(-11307)),
            ("AT+fileClose=1,,", b"OK\r\n"),
            ("AT+fileClose=1,,", proc(-11306)),
            ("AT+fileGetInfo=/t.txt,", b"+filegetinfo:,5,4096,0,4096,1\r\nOK\r\n"),
            ("AT+fileGetInfo=/none,", proc(-11300)),
            ("AT+fileGetFileList", b"+filegetfilelist:/t.txt,64,,1\r\nOK\r\n"),
            ("AT+fileGetFileList=1", ERR_UNKNOWN),
            ("AT+fileOpen=/t.txt,READ,", b"+fileopen:2,0\r\nOK\r\n"),
            ("AT+fileRead=2,0,0,5", b"+fileread:0,5,he\r\nl\r\nOK\r\n"),
            ("AT+fileRead=2,9,0,5", proc(-11307)),
            ("AT+fileClose=2,,", b"OK\r\n"),
            ("AT+fileCtl=RENAME,,/t.txt,/u.txt", b"OK\r\n"),
            ("AT+fileCtl=COMMIT,,/u.txt,", proc(-11305)),
            ("AT+fileDel=/u.txt,", b"OK\r\n"),
            ("AT+fileDel=/u.txt,", proc(-11300)),
            # ---- NetCfg / NetUtil
            ("AT+netCfgSet=IPV4_DNS_CLIENT,,8.8.4.4", b"OK\r\n"),
            ("AT+netCfgSet=IPV4_STA_ADDR,STATIC,1.2.3.4", ERR_MISSING),
            ("AT+netCfgGet=IPV4_DNS_CLIENT", b"+netcfgget:8.8.4.4\r\nOK\r\n"),
            ("AT+netCfgGet=IPV4_STA_ADDR", b"+netcfgget:dhcp,192.168.7.20,255.255.255.0,192.168.7.1,192.168.7.1\r\nOK\r\n"),
            ("AT+netCfgGet=BOGUS", ERR_PARSE),
            ("AT+netUtilGet=true_random,4", r"\+netutilget:0x[0-9a-f]{1,2}(:0x[0-9a-f]{1,2}){3}\r\nOK\r\n"),
            ("AT+netUtilGet=true_random,173", ERR_PARSE),
            ("AT+netUtilCmd=temp_keys,1,create", b"OK\r\n"),                 # TI: no value line
            ("AT+netUtilCmd=temp_keys,0,create", proc(-3200)),
            # ---- user disconnect, last
            ("AT+wlanDisconnect", b"OK\r\n"),
        ])
        assert e.read_until(rb"\r\n") == b"+eventwlan:disconnect,lab,0x2:0x11:0x22:0x33:0x44:0x55,200\r\n"
        check(e, "AT+wlanDisconnect", proc(-2071))


def test_netapp_mqtt_http_templates():
    w = world(network={"hosts": {"peer.example": "127.0.0.1"}})
    with Ti(world=w) as e:
        e.boot()
        e.join()
        e.put_file("/www/index.html", b"<p>hi</p>")
        mqtt_port = free_port()
        run_table(e, [
            # ---- NetApp
            ("AT+netAppStart=HTTP_SERVER|MDNS", b"OK\r\n"),
            ("AT+netAppStart=MDNS", proc(-114)),
            ("AT+netAppSet=DEVICE,URN,dev1", b"OK\r\n"),
            ("AT+netAppSet=DEVICE,URN", ERR_COUNT),
            ("AT+netAppGet=DEVICE,URN", b"+netappget:dev1\r\nOK\r\n"),
            ("AT+netAppGet=DEVICE,BOGUS", ERR_PARSE),
            ("AT+netAppRegisterService=svc._http._tcp.local,txt,8080,60,", b"OK\r\n"),
            ("AT+netAppRegisterService=svc,txt,8080,60,", ERR_PARSE),
            ("AT+netAppGetServiceList=0,5,FULL_IPV4_WITH_TEXT",
             b"+netappgetservicelist:192.168.7.20,8080,svc._http._tcp.local,dev1.local,txt\r\nOK\r\n"),
            ("AT+netAppGetServiceList=0,5,BOGUS", ERR_PARSE),
            ("AT+netAppGetHostByService=svc,INET",                     # TI: no early OK, value then OK
             r"\+netappgethostbyservice:svc\._http\._tcp\.local,8080,192\.168\.7\.20,txt\r\nOK\r\n"),
            ("AT+netAppGetHostByService=svc,BOGUS", ERR_PARSE),
            ("AT+netAppUnRegisterService=svc._http._tcp.local,", b"OK\r\n"),
            ("AT+netAppUnRegisterService=svc._http._tcp.local,", proc(-2181)),
            ("AT+netAppGetHostByName=peer.example,INET", b"+netappgethostbyname:peer.example,127.0.0.1\r\nOK\r\n"),
            ("AT+netAppGetHostByName=peer.example,INET7", ERR_PARSE),
            ("AT+netAppPing=INET,127.0.0.1,8,0,2000,1,0", b"OK\r\n", r"\+netappping:1,1,\d+", False),  # no 2nd OK
            ("AT+netAppPing=INET,0,8,0,100,1,0", proc(-2180)),
            ("AT+netAppSend=9,METADATA,0,3,200", proc(-2181)),
            ("AT+netAppSend=9,BOGUS,0,3,200", ERR_PARSE),
            ("AT+netAppRecv=9,0,10", proc(-2181)),
            ("AT+netAppRecv=9,2,10", ERR_PARSE),
            ("AT+netAppStop=MDNS", b"OK\r\n"),
            ("AT+netAppStop=MDNS", proc(-2180)),
            # ---- MQTT without a broker (sessions with a broker: test_ti_mqtt.py)
            (f"AT+mqttCreate=c1,ip4,127.0.0.1,{mqtt_port},,,,,,,v3_1_1,1,0", b"+mqttcreate:0\r\nOK\r\n"),
            ("AT+mqttCreate=c1,ip4,127.0.0.1,1883,,,,,,,v5,1,0", ERR_PARSE),
            ("AT+mqttSet=0,keepalive,30", b"OK\r\n"),
            ("AT+mqttSet=0,keepalive,70000", ERR_PARSE),
            ("AT+mqttConnect=0", proc(-111)),                       # nobody listens there
            ("AT+mqttConnect=1", ERR_PARSE),                          # TI: no such client is a parse error
            ("AT+mqttPublish=0,t,qos1,0,1,a", proc(-3002)),
            ("AT+mqttSubscribe=0,1,t,qos0,", proc(-3002)),
            ("AT+mqttUnsubscribe=0,1,t,", proc(-3002)),
            ("AT+mqttDisconnect=0", proc(-3002)),
            ("AT+mqttDelete=0", b"OK\r\n"),
            ("AT+mqttDelete=0", ERR_PARSE),
        ])
        port = e.sync(lambda: e.module.profile.http_port)
        run_table(e, [
            # ---- HTTP client against the module's own HTTP server
            ("AT+httpCreate", b"+httpcreate:0\r\nOK\r\n"),
            ("AT+httpCreate=1", ERR_UNKNOWN),
            ("AT+httpSetOpt=0,redirect_feature,0", b"OK\r\n"),
            ("AT+httpSetOpt=0,redirect_feature,2", ERR_PARSE),
            ("AT+httpSetProxy=INET,0,0.0.0.0", b"OK\r\n"),
            ("AT+httpSetProxy=INET,80,notip", ERR_PARSE),
            (f"AT+httpConnect=0,127.0.0.1:{port},,,,", b"OK\r\n"),
            (f"AT+httpConnect=0,127.0.0.1:{port},,,,", proc(-3102)),
            ("AT+httpSetHeader=0,req_accept,persistent,0,9,text/html", b"OK\r\n"),
            ("AT+httpSetHeader=0,req_date,sometimes,0,1,a", ERR_PARSE),
            ("AT+httpSendReq=0,get,/index.html,,,,", b"+httpsendreq:200\r\nOK\r\n"),
            ("AT+httpSendReq=0,bogus,/index.html,,,,", ERR_PARSE),
            ("AT+httpGetHeader=0,res_content_type,0,100", b"+httpgetheader:0,0,9,text/html\r\nOK\r\n"),
            ("AT+httpGetHeader=0,res_etag,0,100", proc(-3103)),
            ("AT+httpReadResBody=0,0,100", b"+httpreadresbody:0,0,0,9,<p>hi</p>\r\nOK\r\n"),
            ("AT+httpReadResBody=0,0,0", ERR_PARSE),
            ("AT+httpDisconnect=0", b"OK\r\n"),
            ("AT+httpDisconnect=0", proc(-3102)),
            ("AT+httpDestroy=0", b"OK\r\n"),
            ("AT+httpDestroy=0", ERR_PARSE),                          # TI: no such client
        ])
        assert LAB["ssid"] == "lab"


def test_optional_fields_still_need_their_commas():
    """Manual §5.1 (T3): an empty optional field keeps its comma; TI's core checks the parameter count.
    A line that drops trailing commas is refused and changes nothing."""
    with Ti() as e:
        e.boot()
        run_table(e, [
            (f"AT+wlanConnect=lab,,WPA_WPA2,{LAB['password']}", ERR_COUNT),
            ("AT+fileOpen=/x,CREATE|WRITE", ERR_COUNT),
            ("AT+fileGetFileList", b"OK\r\n"),                                  # nothing was created
            ("AT+fileOpen=/x,CREATE|WRITE,16", b"+fileopen:1,0\r\nOK\r\n"),
            ("AT+fileClose=1", ERR_COUNT),
            ("AT+fileClose=1,,", b"OK\r\n"),
            ("AT+fileGetInfo=/x", ERR_COUNT),
            ("AT+fileCtl=GET_STORAGE_INFO", ERR_COUNT),
            ("AT+wlanGet=CONNECTION", ERR_COUNT),
            ("AT+wlanGet=CONNECTION,", b"+wlanget:sta,disconnected,,,\r\nOK\r\n"),
            ("AT+netAppPing=INET,127.0.0.1,8,0,100,1", ERR_COUNT),
            ("AT+httpSendReq=0,get,/", ERR_COUNT),
            ("AT+fileDel=/x", ERR_COUNT),
            ("AT+fileDel=/x,", b"OK\r\n"),
        ])
        e.expect_nothing(0.3)                                                 # no event from the refused connect
        assert e.ok("AT+wlanGet=CONNECTION,") == b"+wlanget:sta,disconnected,,,\r\n"


def test_mqtt_session_and_stop_templates(mosquitto):
    """The OK-only MQTT commands with a real broker: OK first, the acknowledgement event after it."""
    with Ti() as e:
        e.boot()
        e.join()

        def ok_then(line: str, event: bytes) -> None:
            check(e, line, b"OK\r\n")
            got = e.read_until(rb"(?:operation[^\r]*|disconnect,)\r\n")
            assert re.fullmatch(event, got), (line, got)

        check(e, f"AT+mqttCreate=c1,ip4,127.0.0.1,{mosquitto.port},,,,,,,v3_1_1,1,0", b"+mqttcreate:0\r\nOK\r\n")
        ok_then("AT+mqttConnect=0", rb"\+eventmqtt:operation,connack,0\r\n")
        ok_then("AT+mqttSubscribe=0,1,c/t,qos1,", rb"\+eventmqtt:operation,suback,1\r\n")
        check(e, "AT+mqttSubscribe=0,1,c/t,qos7,", ERR_PARSE)
        check(e, "AT+mqttPublish=0,c/t,qos1,0,3,a,b", b"OK\r\n")     # our own message comes back too,
        got = sorted(e.read_until(rb"\r\n") for _ in range(2))             # in the broker's order
        assert got[1] == b"+eventmqtt:recv,c/t,qos1,0,0,0,3,a,b\r\n" and got[0] == b"+eventmqtt:operation,puback,0\r\n", got
        check(e, "AT+mqttPublish=0,c/#,qos1,0,3,a,b", ERR_PARSE)
        ok_then("AT+mqttUnsubscribe=0,1,c/t,", rb"\+eventmqtt:operation,unsuback,0\r\n")
        check(e, "AT+mqttUnsubscribe=0,5,c/t,", ERR_PARSE)
        ok_then("AT+mqttDisconnect=0", rb"\+eventmqtt:disconnect,\r\n")
        run_table(e, [
            ("AT+mqttDisconnect=9", ERR_PARSE),
            ("AT+stop=0", b"OK\r\n"),
            ("AT+stop=1,2", ERR_COUNT),
            ("AT+mqttConnect=0", proc(-2018)),
        ])
