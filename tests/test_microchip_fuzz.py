"""microchip-winc robustness: a seeded, bounded fuzz of malformed command lines, binary phases fed
with noise, and raw binary garbage, over a real pty.

What a user must see: every command line gets one final result (OK or ERROR:<code>), never the
internal-error code 10; no handler or background task fails (no ERROR log records); afterwards the
module still answers and still moves data through a socket. Names never resolve (the resolver's
DNS fault), and every address is a loopback literal, so nothing leaves the host.
"""
from __future__ import annotations

import logging
import random
import re

import pytest

from atemu.grammar import Form, Int
from atemu.profiles.microchip_winc import MicrochipWinc
from test_microchip_util import FINAL, WORLD, Winc

NAMES = ["E", "+GMI", "+GMM", "+GMR", "+READCERT", "+LOADCERT", "+WSCNC", "+WSCNA", "+WSCNP", "+WSTAC", "+WSTA",
         "+WAPC", "+WAP", "+WPROVC", "+WPROV", "+MQTTC", "+MQTTCONN", "+MQTTSUB", "+MQTTUNSUB", "+MQTTPUB",
         "+MQTTDISCONN", "+SOCKO", "+SOCKCL", "+SOCKBL", "+SOCKBR", "+SOCKBM", "+SOCKTLS", "+SOCKLST", "+SOCKWR",
         "+SOCKWRTO", "+SOCKWRT0", "+SOCKRD", "+TLSC", "+DNSRESOLV", "+PING", "+NOPE", ""]
VALUES = ["0", "1", "2", "3", "4", "5", "7", "12", "13", "255", "-1", "99999", "0x10", "1500", "65535", "",
          '"x"', '"127.0.0.1"', '"::1"', "[3132372E302E302E31]", "[]", "[41]", "[zz]", "[4", '""', '"a,b"',
          '"Topic/#"', '"unterminated', '" spaced "', "=", "?", '"\u00e9"']
BINARY = ("+SOCKWR", "+SOCKWRTO", "+SOCKWRT0", "+LOADCERT")
PROBE = b'+GMI:"Microchip"\r\nOK\r\n'
STRINGS = ['"127.0.0.1"', '"::1"', '"x"', '"MyAP"', '"MyAPPSK-123"', '"a/b"', "[00FF0D0A]", '""', "[]"]


def plausible(rnd: random.Random) -> str:
    """A line built from a WRITE form's declaration: right arity, values mostly in range."""
    # (not +LOWPOWER: the module would sleep until woken; test_lowpower_and_wake covers it)
    key = rnd.choice(sorted(k for k, c in MicrochipWinc.commands.items()
                            if Form.WRITE in c.forms and k and k != "+LOWPOWER"))
    params = MicrochipWinc.commands[key].forms[Form.WRITE].params
    vals = []
    for p in params:
        if p.optional and rnd.random() < 0.4:
            break
        if isinstance(p, Int) and p.lo is None and p.hi is None and not p.choices:
            vals.append(str(rnd.choice([rnd.randint(0, 14)] * 6 + [65535, -1])))   # a parameter id
        elif isinstance(p, Int):
            lo, hi = p.lo if p.lo is not None else 0, p.hi if p.hi is not None else 65535
            pool = list(p.choices or ()) + [lo, hi, hi + 1, lo - 1, rnd.randint(lo, hi)] + [rnd.randint(0, 13)] * 3
            vals.append(str(rnd.choice(pool)))
        else:
            vals.append(rnd.choice(STRINGS))
    return "AT" + key + "=" + ",".join(vals)


def resync(e) -> bytes:
    """Get the module back to the command state (a data phase may still be waiting); return what came."""
    got = b""
    for _ in range(4):
        e.write(b"\rAT+GMI\r")
        try:
            got += e.read_until(re.escape(PROBE), timeout=1.0)
            return got
        except TimeoutError:
            continue
    raise AssertionError(f"the module stopped answering; last output {bytes(e.buf)!r}")


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_lines_and_noise(seed, tcp_echo, caplog):
    rnd = random.Random(seed)
    world = dict(WORLD, options={"microchip-winc.data_timeout": 0.3, "microchip-winc.ack_timeout": 0.5})
    caplog.set_level(logging.ERROR)
    with Winc(world=world) as e:
        e.join()
        e.sync(lambda: setattr(e.module.resolver, "fault", "fail"))   # no name ever reaches a DNS server
        for _ in range(400):
            name = rnd.choice(NAMES)
            r = rnd.random()
            if r < 0.35:
                line = plausible(rnd)
                name = line[2:].split("=", 1)[0]
            elif r < 0.45:
                line = "AT" + name
            elif r < 0.5:
                line = "AT" + name + rnd.choice(["?", "=?", " ", "=", "=,", ",1"])
            else:
                line = "AT" + name + "=" + ",".join(rnd.choice(VALUES) for _ in range(rnd.randint(1, 6)))
            if rnd.random() < 0.05:
                line = line.lower()
            e.write(line.encode() + b"\r")
            if name in BINARY and not line.rstrip().endswith(('"', "]")):
                # a data phase may follow: noise, a '#', more noise that may contain '+++'
                noise = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 40)))
                e.write(noise + b"#" + bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 1600))) + b"+++")
                out = resync(e)
            else:
                out = e.read_until(FINAL, timeout=3)
            assert b"ERROR:10" not in out, (line, out)
            if rnd.random() < 0.1:
                # raw binary garbage on the command line, then back to normal
                e.write(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300))))
                out = resync(e)
                assert b"ERROR:10" not in out
        out = resync(e)
        assert b"ERROR:10" not in out
        # still fully working: echo state known, a real socket round trip
        e.cmd("ATE0")
        for sid in range(1, 11):
            e.cmd(f"AT+SOCKCL={sid}")
        e.cmd("AT+WAP=0")
        e.cmd("AT+WPROV=0")
        e.drain(0.3)
        if e.cmd("AT+WSTA") != b'+WSTA:1,1,"MyAP",-50,3\r\nOK\r\n':
            e.cmd("AT+WSTA=0")
            e.drain(0.2)
            e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"', "AT+WSTAC=4,255",
                  'AT+WSTAC=12,""', "AT+WSTA=1")
            e.urc(rb'\+WSTAAIP:1,"192.168.0.20"\r\n')
        sid = int(re.match(rb"\+SOCKO:(\d+)\r\nOK\r\n", e.cmd("AT+SOCKO=2")).group(1))
        assert e.cmd(f'AT+SOCKBR={sid},"127.0.0.1",{tcp_echo.port}') == b"OK\r\n"
        e.urc(rf"\+SOCKIND:{sid},.*?\r\n".encode())
        e.write(f"AT+SOCKWR={sid},6\r#fuzzed".encode())
        assert e.read_until(FINAL) == b"OK\r\n"
        e.urc(rf"\+SOCKRXT:{sid},6\r\n".encode())
        assert e.cmd(f"AT+SOCKRD={sid},1,100") == f'+SOCKRD:{sid},6,"fuzzed"\r\nOK\r\n'.encode()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("atemu")]
    assert not errors, [r.getMessage()[:300] for r in errors]
