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
    out = subprocess.run([sys.executable, "-m", "atemu.cli", "describe", "ti-simplelink", "--json"],
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
    import atemu.profiles.ti_simplelink as t
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


DOCUMENTED_ERRORS = re.compile(rb"ERROR:(command not exist,-1|number of parameters,-2|parse parameters,-2|allocate,-12|"
                               rb"process command,-(?!1\r)\d+)\r\n")


def test_raw_field_fuzz_wrong_lengths_cut_lines_and_base64_garbage(tcp_sink):
    """Seeded: raw fields longer or shorter than their length (cut lines followed by a new command,
    or by silence), Base64 garbage, bad length fields. Every answer is a documented one, the module
    stays in step (AT+Test answers OK after each case), and every accepted byte arrives: the TCP
    peer gets exactly the accepted Send payloads, the file exactly the accepted FileWrite data."""
    import base64
    import random
    from test_ti_common import LAB
    rnd = random.Random(11)
    alphabet = b'ab,"\r\n\x00\xffOK;|[]=+AT'

    def blob(n: int) -> bytes:
        return bytes(rnd.choice(alphabet) for _ in range(n))

    with Ti() as e:
        e.boot()
        e.join()
        assert LAB["ssid"] == "lab"
        e.ok("AT+Socket=INET,STREAM,TCP")
        e.ok(f"AT+Connect=0,INET,{tcp_sink.port},127.0.0.1")
        e.later(rb"\+connect:")
        e.ok("AT+FileOpen=/fz.bin,CREATE|WRITE,4096")
        e.ok("AT+MqttCreate=fz,ip4,127.0.0.1,1,,,,,,,v3_1_1,1,0")
        sent, written = bytearray(), bytearray()

        def answers(n: int) -> list[bytes]:
            out = [e.read_until(rb"(OK|ERROR:[^\r\n]*)\r\n", 5) for _ in range(n)]
            for a in out:
                assert a.endswith(b"OK\r\n") or DOCUMENTED_ERRORS.search(a), a
            return out

        def model(head: bytes, stream: bytes, length: int) -> tuple[bool, list[bytes]]:
            """What the framer makes of ``head`` + ``stream``: (first line accepted?, the later lines)."""
            rest = stream[length:]
            cut = min((i for i in (rest.find(b"\r"), rest.find(b"\n")) if i >= 0), default=len(rest))
            ok = cut == 0
            later = [x for x in rest[cut:].replace(b"\r", b"\n").split(b"\n") if x]
            return ok, later

        for i in range(150):
            kind = rnd.choice(["send", "send64", "long", "b64junk", "cut", "file", "filecut", "badlen", "mqtt", "verify"])
            n = rnd.randint(1, 40)
            data = blob(n)
            if kind == "send":
                assert e.cmd(b"AT+Send=0,0,%d," % n + data) == b"OK\r\n"
                sent += data
            elif kind == "send64":
                assert e.cmd(f"AT+Send=0,1,{n},{base64.b64encode(data).decode()}") == b"OK\r\n"
                sent += data
            elif kind == "long":                      # more bytes than the length: the line is refused
                extra = rnd.choice([b"x", b"xyz", b",1", b"\x00"])
                want = b"number of parameters" if extra == b",1" else b"parse parameters"   # an extra field / text
                assert e.cmd(b"AT+Send=0,0,%d," % n + data + extra) == b"ERROR:" + want + b",-2\r\n"
            elif kind == "b64junk":
                junk = rnd.choice([b"@@@@", b"YWJj=", b"YW Jj", base64.b64encode(data + b"!"), b"====", b"\xff\xfe"])
                assert e.cmd(b"AT+Send=0,1,%d," % n + junk) == b"ERROR:parse parameters,-2\r\n"
            elif kind in ("cut", "filecut"):          # fewer bytes than the length, then a new command
                short = data[:rnd.randint(0, n - 1)]
                follow = b"\r\nAT+Test\r\n"
                head = b"AT+Send=0,0,%d," % n if kind == "cut" else b"AT+FileWrite=1,%d,0,%d," % (len(written), n)
                stream = short + follow
                if len(stream) < n:
                    continue                          # would wait for more bytes: the silence case is below
                e.write(head + stream)
                ok, later = model(head, stream, n)
                got = answers(1 + len(later))
                if ok:
                    (sent if kind == "cut" else written).extend(stream[:n])
                    assert got[0] in (b"OK\r\n", b"+filewrite:%d\r\nOK\r\n" % n)
                else:
                    assert got[0] == b"ERROR:parse parameters,-2\r\n"
                for line, a in zip(later, got[1:]):
                    assert a == (b"OK\r\n" if line == b"AT+Test" else b"ERROR:parse parameters,-2\r\n"), (line, a)
            elif kind == "file":
                assert e.cmd(b"AT+FileWrite=1,%d,0,%d," % (len(written), n) + data) == b"+filewrite:%d\r\nOK\r\n" % n
                written += data
            elif kind == "badlen":
                bad = rnd.choice(["-1", "abc", "0x", "99999", "", "1.5"])
                out = e.cmd(f"AT+Send=0,0,{bad},abc")
                assert out in (b"ERROR:parse parameters,-2\r\n", b"ERROR:number of parameters,-2\r\n"), out
            elif kind == "mqtt":                      # raw framing from the client's data format (no broker)
                out = e.cmd(b"AT+MqttPublish=0,t,qos0,0,%d," % n + data + rnd.choice([b"", b"zz"]))
                assert out in (b"ERROR:process command,-3002\r\n", b"ERROR:parse parameters,-2\r\n"), out
            else:                                     # verify_msg: data and signature framed together
                out = e.cmd(b"AT+NetUtilCmd=verify_msg,0,0,%d,8," % n + data + blob(8))
                assert out in (b"+netutilcmd:failure\r\nOK\r\n",), out
            assert e.cmd("AT+Test") == b"OK\r\n", (i, kind)

        # a raw field cut and followed by silence is abandoned after the raw timeout: nothing is sent
        e.write(b"AT+Send=0,0,30,only-part")
        assert e.read_until(rb"\r\n", 5) == b"ERROR:parse parameters,-2\r\n"
        assert e.cmd("AT+Test") == b"OK\r\n"
        tcp_sink.wait_bytes(len(sent))
        e.expect_nothing(0.2)
        assert tcp_sink.data == bytes(sent)
        e.ok("AT+FileClose=1,,")
        assert e.ok("AT+FileOpen=/fz.bin,READ,") == b"+fileopen:2,0\r\n"
        out = e.ok(f"AT+FileRead=2,0,1,{max(1, len(written))}")
        assert base64.b64decode(out.split(b",", 2)[2]) == bytes(written)
