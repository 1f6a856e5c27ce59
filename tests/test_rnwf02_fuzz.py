"""rnwf02 robustness: a seeded fuzz of malformed and plausible command lines, binary phases fed
with noise, and raw garbage, over a real pty with CR LF.

What a user must see: every line gets its final result, never the internal error (0.6); no handler
or background task fails (no ERROR log records); afterwards the module still answers and still
moves data through a socket. Names never resolve (the resolver's DNS fault) and every address is
a loopback literal, so nothing leaves the host.
"""
from __future__ import annotations

import logging
import random
import re

from atemu.grammar import Form, Int
from atemu.profiles.rnwf02 import Rnwf02
from rnwf_helpers import FINAL, Rnwf

VALUES = ["0", "1", "2", "3", "4", "5", "9", "13", "40", "65535", "-1", "99999", "0x10", "1460", "",
          '"x"', '"127.0.0.1"', "127.0.0.1", "[3132372E302E302E31]", "[]", "[zz]", '""', '"a,b"', '"a\\"b"',
          '"Topic/#"', '"unterminated', "=", "?", '"\u00e9"']
STRINGS = ['"127.0.0.1"', '"x"', '"MyAP"', '"a/b"', "[00FF0D0A]", '""', '"{\\"k\\":1}"']
PROBE = b'+GMI:"Microchip Technology Inc."\r\nOK\r\n'
SKIP = {"+RST", "+CFG", "+IPR", "V", "M"}   # a reset, a baud change, ATV0/1 or ATM1 (numeric) answers would only test the fuzzer


def plausible(rnd: random.Random) -> str:
    key = rnd.choice(sorted(k for k, c in Rnwf02.commands.items() if Form.WRITE in c.forms and k and k not in SKIP))
    vals = []
    for p in Rnwf02.commands[key].forms[Form.WRITE].params:
        if p.optional and rnd.random() < 0.4:
            break
        if isinstance(p, Int):
            lo, hi = (p.lo if p.lo is not None else 0), (p.hi if p.hi is not None else 60)
            vals.append(str(rnd.choice(list(p.choices or ()) + [lo, hi, hi + 1, rnd.randint(lo, min(hi, lo + 50))])))
        else:
            vals.append(rnd.choice(STRINGS))
    return "AT" + key + "=" + ",".join(vals)


def resync(e) -> bytes:
    got = b""
    for _ in range(6):
        e.write(b"\r\nAT+GMI\r\n")
        try:
            return got + e.read_until(re.escape(PROBE), timeout=1.0)
        except TimeoutError:
            continue
    raise AssertionError(f"the module stopped answering; last output {bytes(e.buf)!r}")


def test_fuzz(tcp_echo, caplog):
    rnd = random.Random(11)
    caplog.set_level(logging.ERROR)
    with Rnwf(opts={"rnwf02.data_timeout": 0.3, "rnwf02.ack_timeout": 0.5}) as e:
        e.join()
        e.sync(lambda: setattr(e.module.resolver, "fault", "fail"))
        names = sorted(k for k in Rnwf02.commands if k not in SKIP) + ["+NOPE"]
        for _ in range(300):
            r = rnd.random()
            if r < 0.45:
                line = plausible(rnd)
            elif r < 0.55:
                line = "AT" + rnd.choice(names)
            else:
                line = "AT" + rnd.choice(names) + "=" + ",".join(rnd.choice(VALUES) for _ in range(rnd.randint(1, 6)))
            if rnd.random() < 0.05:
                line = line.lower()
            e.write(line.encode() + b"\r\n")
            # a binary phase may follow: give it some bytes, then get the module back
            if re.match(r"(?i)AT\+(SOCKWR|SOCKWRTO|FS)=", line):
                e.write(bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 80))))
                out = resync(e)
            else:
                out = e.read_until(FINAL, timeout=3)
            # (an internal error answers 0.1 "General Error" like some real failures: the log check
            # at the end catches it)
            assert out, line
            if rnd.random() < 0.08:
                e.write(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 200))))
                resync(e)
        resync(e)
        # still working: a socket round trip
        e.drain(0.5)
        e.write(b"ATE0\r\n")
        e.read_until(FINAL)
        e.drain(0.3)
        for sid in range(1, 11):
            e.cmd(f"AT+SOCKCL={sid}")
        e.cmd("AT+WAP=0")
        e.cmd("AT+WPROV=0")
        e.drain(0.3)
        if e.cmd("AT+WSTA") != b"+WSTA:1\r\nOK\r\n":
            e.cmd("AT+WSTA=0")
            e.drain(0.3)
            e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"', "AT+WSTAC=4,0", 'AT+WSTAC=5,""',
                  'AT+WIFIC=10,"GEN"', "AT+WSTA=1")
            e.aec(rb'\+WSTAAIP:\d+,"192\.168\.0\.20"\r\n')
        sid = int(re.search(rb"\+SOCKO:(\d+)\r\nOK\r\n", e.cmd("AT+SOCKO=2,4")).group(1))
        assert e.cmd(f'AT+SOCKBR={sid},"127.0.0.1",{tcp_echo.port}') == b"OK\r\n"
        e.aec(rf"\+SOCKIND:{sid},.*?\r\n".encode())
        e.write(f"AT+SOCKWR={sid},6\r\n".encode())
        assert e.read_until(b"#").endswith(b"#")
        e.write(b"fuzzed")
        assert e.read_until(FINAL).endswith(b"OK\r\n")
        e.aec(rf"\+SOCKRXT:{sid},6\r\n".encode())
        assert e.cmd(f"AT+SOCKRD={sid},1,100") == f'+SOCKRD:{sid},6,"fuzzed"\r\nOK\r\n'.encode()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("atemu")]
    assert not errors, [r.getMessage()[:300] for r in errors]
