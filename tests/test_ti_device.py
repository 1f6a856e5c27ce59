"""TI SimpleLink: framing, error lines, NWP life cycle, AT+Get/Set/Test, describe."""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys

from test_ti_common import Ti


def test_framing_errors_and_gating():
    with Ti() as e:
        assert e.cmd("AT") == b"OK\r\n"                       # echo off, no leading CR LF
        assert e.cmd("AT+Test") == b"OK\r\n"                  # works before AT+Start
        assert e.cmd("AT+Socket=INET,STREAM,TCP") == b"ERROR:process command,-2018\r\n"
        assert e.cmd("AT+NoSuchThing=1") == b"ERROR:command not exist,-1\r\n"
        assert e.cmd("AT+Stop") == b"ERROR:command not exist,-1\r\n"   # no exec form
        assert e.cmd("AT+Stop=1,2") == b"ERROR:number of parameters,-2\r\n"
        assert e.cmd("AT+Stop=abc") == b"ERROR:parse parameters,-2\r\n"
        assert e.cmd("hello") == b"ERROR:parse parameters,-2\r\n"
        assert e.cmd("AT+Socket=?") == b"ERROR:command not exist,-1\r\n"  # no test forms
        assert e.cmd("AT+Start") == b"OK\r\n"
        assert e.read_until(rb"\r\n") == b"+eventgeneral:init_complete,sta\r\n"
        assert e.cmd("AT+Start") == b"ERROR:process command,-114\r\n"
        # case, spaces, LF-only terminator
        e.write(b"at+socket = inet , stream , tcp\n")
        assert e.read_until(rb"OK\r\n") == b"+socket:0\r\nOK\r\n"
        assert e.cmd("AT+ Close = 0") == b"+close:0\r\nOK\r\n"
        assert e.cmd("AT+Close=0") == b"ERROR:process command,-9\r\n"
        assert e.cmd("AT+Get=Status,Bogus") == b"ERROR:parse parameters,-2\r\n"
        assert e.cmd("A" + "T+Test" + "x" * 9000) == b"ERROR:allocate,-12\r\n"
        assert e.cmd("AT+Test") == b"OK\r\n"                 # still alive after every bad line


def test_get_set_version_time_persistent_udid():
    with Ti() as e:
        e.boot()
        assert e.ok("AT+Get=General,Version") == b"+get:0x31000019,3.7.0.1,2.2.0.6,3.7.0.1,0\r\n"
        assert e.ok("AT+Set=General,Time,13,45,30,24,12,2030") == b""
        h, mi, s, d, mo, y = map(int, re.search(rb"\+get:([\d,]+)", e.ok("AT+Get=General,Time")).group(1).split(b","))
        got = dt.datetime(y, mo, d, h, mi, s)
        assert abs((got - dt.datetime(2030, 12, 24, 13, 45, 30)).total_seconds()) < 5
        assert e.err("AT+Set=General,Time,25,0,0,1,1,2030") == b"parse parameters,-2"
        assert e.err("AT+Set=General,Time,1,0,0,31,2,2030") == b"parse parameters,-2"
        assert e.err("AT+Set=General,Time,1,0,0") == b"number of parameters,-2"
        assert e.ok("AT+Get=General,Persistent") == b"+get:1\r\n"
        assert e.ok("AT+Set=General,Persistent,0") == b""
        assert e.ok("AT+Get=General,Persistent") == b"+get:0\r\n"
        udid = e.ok("AT+Get=IOT,UDID")
        assert re.fullmatch(rb"\+get:[0-9a-f]{32}\r\n", udid)
        assert e.ok("AT+Get=IOT,UDID") == udid
        assert e.ok("AT+Get=Status,WLAN") == b"+get:sta_disconnected\r\n"
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:\r\n"
        assert e.ok("AT+Get=Status,Device") == b"+get:\r\n"
        assert e.ok("AT+Get=Status,BSD") == b"+get:\r\n"


def test_persistence_mode_controls_what_survives_a_restart():
    with Ti() as e:
        e.boot()
        e.ok("AT+NetAPPSet=DEVICE,URN,kept-name")
        e.ok("AT+Set=General,Persistent,0")
        e.ok("AT+NetAPPSet=DEVICE,DOMAIN,volatile.example")
        assert e.ok("AT+NetAPPGet=DEVICE,DOMAIN") == b"+netappget:volatile.example\r\n"
        e.ok("AT+Stop=0")
        assert e.cmd("AT+NetAPPGet=DEVICE,URN") == b"ERROR:process command,-2018\r\n"
        e.boot()
        assert e.ok("AT+NetAPPGet=DEVICE,URN") == b"+netappget:kept-name\r\n"
        assert e.ok("AT+NetAPPGet=DEVICE,DOMAIN") == b"+netappget:mysimplelink.net\r\n"


def test_stop_clears_state(tcp_echo):
    with Ti() as e:
        e.boot()
        e.join()
        assert e.ok("AT+Socket=INET,STREAM,TCP") == b"+socket:0\r\n"
        e.ok(f"AT+Connect=0,INET,{tcp_echo.port},127.0.0.1")
        e.later(rb"\+connect:")
        e.ok("AT+Stop=100")
        e.boot()
        assert e.cmd("AT+Close=0") == b"ERROR:process command,-9\r\n"
        assert e.ok("AT+Get=Status,WLAN") == b"+get:sta_disconnected\r\n"


def test_describe_lists_71_commands_and_events():
    out = subprocess.run([sys.executable, "-m", "emulator.cli", "describe", "ti-simplelink", "--json"],
                         capture_output=True, text=True, timeout=60, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    names = {c["name"].lower() for c in d["commands"]}
    assert len(names) == 71
    for n in ("at+start", "at+netappping", "at+mqttcreate", "at+httpsetproxy", "at+filegetfilelist", "at+wlanget"):
        assert n in names
    urcs = {u["name"] for u in d["urcs"]}
    for ev in ("+eventwlan:connect", "+eventnetapp:ipv4_acquired", "+eventmqtt:recv", "+eventsock:tx_failed",
               "+eventfatalerror:sync_loss", "+eventgeneral:reset_request"):
        assert ev in urcs


def test_random_bad_input_never_breaks_the_module():
    import random
    import profiles.ti_simplelink as t
    rnd = random.Random(7)
    tokens = ["", "0", "1", "-1", "0xFF", "99999", "INET", "STREAM", "abc", '"q,q"', "[1|2]", "1.2.3.4", "a|b",
              "qos1", "will", "sign_msg", "verify_msg", "STATIC", "HTTP_SERVER", "READ", "CREATE|WRITE", "../z",
              "post", "req_accept", "DEVICE", "SOCKET", "RCVTIMEO", "AP", "GENERAL", "Status"]
    names = [s.name for k, s in t.TiSimpleLink.commands.items() if k not in t.TiSimpleLink.builtins and s.name != "+Stop"]
    with Ti() as e:
        e.boot()
        e.ok("AT+Socket=INET,STREAM,TCP")
        e.ok("AT+MqttCreate=c,ip4,127.0.0.1,1,,,,,,,v3_1_1,0,0")
        for _ in range(300):
            name = rnd.choice(names)
            args = ",".join(rnd.choice(tokens) for _ in range(rnd.randint(0, 9)))
            out = e.cmd(f"AT{name}={args}", timeout=3)
            assert b"process command,-1\r\n" not in out        # never an internal error
        e.drain(0.3)
        # a raw length beyond the command's range is not framed: the line fails, nothing is swallowed
        assert e.err("AT+Send=0,0,99999,abc") == b"parse parameters,-2"
        assert e.cmd("AT+Test") == b"OK\r\n"
        assert e.ok("AT+Close=0") == b"+close:0\r\n"
