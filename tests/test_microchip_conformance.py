"""microchip-winc conformance tables over a real pty: exact bytes per command form (inventory §2,
§5 E1-E28), forms the manual does not have, and the choices for its syntax oddities (M6, M34,
M45, M46, M51). Rows that need a network link run on one joined module, in order."""
from __future__ import annotations

import re
import socket

import pytest

from harness import host_styles
from test_microchip_util import Winc

# every table runs once per host style: CR, CR LF, CR LF written byte by byte; <T> in an expected
# answer is the host's terminator, echoed with the line
host_style = host_styles("CR", "CRLF", "CRLF-bytewise")

COMMANDS = ["E", "+GMI", "+GMM", "+GMR", "+LOWPOWER", "+READCERT", "+LOADCERT", "+WSCNC", "+WSCNA", "+WSCNP",
            "+WSTAC", "+WSTA", "+WAPC", "+WAP", "+WPROVC", "+WPROV", "+MQTTC", "+MQTTCONN", "+MQTTSUB",
            "+MQTTUNSUB", "+MQTTPUB", "+MQTTDISCONN", "+SOCKO", "+SOCKCL", "+SOCKBL", "+SOCKBR", "+SOCKBM",
            "+SOCKTLS", "+SOCKLST", "+SOCKWR", "+SOCKWRTO", "+SOCKRD", "+TLSC", "+DNSRESOLV", "+PING"]


@pytest.fixture
def e():
    with Winc() as emu:
        yield emu


def test_35_commands_have_no_read_or_test_form(e):
    assert len(COMMANDS) == 35
    for name in COMMANDS + ["+SOCKWRT0"]:
        for suffix in ("?", "=?"):
            assert e.cmd(f"AT{name}{suffix}") == b"ERROR:1\r\n", name + suffix


# (command, exact answer): no link needed; state carries over from row to row
OFFLINE = [
    # E1 / M51: ATE [<N>]; the syntax line's space is accepted; bare ATE = ATE0
    ("ATE 0", b"OK\r\n"),
    ("ATE2", b"ERROR:2\r\n"),
    ("ATE1", b"OK\r\n"),
    ("ATE", b"ATE<T>OK\r\n"),                 # echoed (echo was on), then off
    ("AT", b"OK\r\n"),
    # E2-E4
    ("AT+GMI", b'+GMI:"Microchip"\r\nOK\r\n'),
    ("AT+GMM", b'+GMM:"WINC1500"\r\nOK\r\n'),
    ("AT+GMR", b'+GMR:"15x0","19.6.1","19.6.1","19.5.3"\r\nOK\r\n'),
    ("AT+GMI=1", b"ERROR:1\r\n"),
    # LOWPOWER: modes 0-3 are placeholders (4 is exercised in test_lowpower_and_wake)
    ("AT+LOWPOWER=0", b"ERROR:2\r\n"),
    ("AT+LOWPOWER=3", b"ERROR:2\r\n"),
    ("AT+LOWPOWER=5", b"ERROR:2\r\n"),
    # READCERT / LOADCERT (M5, M6: both LOADCERT parameters are required)
    ("AT+READCERT=0", b"ERROR:2\r\n"),
    ("AT+READCERT=3", b"ERROR:9\r\n"),
    ("AT+LOADCERT", b"ERROR:1\r\n"),
    ("AT+LOADCERT=10", b"ERROR:2\r\n"),
    ('AT+LOADCERT=10,""', b"ERROR:2\r\n"),
    ("AT+LOADCERT=10,name", b"ERROR:2\r\n"),
    # WSCNC: read one id, unknown id, quoted/hex number
    ("AT+WSCNC=1", b"+WSCNC:1,30\r\nOK\r\n"),
    ("AT+WSCNC=3", b"ERROR:2\r\n"),
    ('AT+WSCNC=1,"30"', b"ERROR:2\r\n"),
    ("AT+WSCNC=1,[3330]", b"ERROR:2\r\n"),
    ("AT+WSCNC=1,40", b"OK\r\n"),
    ("AT+WSCNC", b"+WSCNC:1,40\r\n+WSCNC:2,300\r\nOK\r\n"),
    ("AT+WSCNA", b"ERROR:1\r\n"),
    ("AT+WSCNP=0", b"ERROR:2\r\n"),
    # WSTAC: every id reads back in the syntax +WSTAC:<id>,<val>
    ("AT+WSTAC=1", b'+WSTAC:1,""\r\nOK\r\n'),
    ("AT+WSTAC=2", b"+WSTAC:2,0\r\nOK\r\n"),
    ("AT+WSTAC=3", b'+WSTAC:3,""\r\nOK\r\n'),
    ("AT+WSTAC=4", b"+WSTAC:4,255\r\nOK\r\n"),
    ("AT+WSTAC=12", b'+WSTAC:12,""\r\nOK\r\n'),
    ("AT+WSTAC=13", b"+WSTAC:13,0\r\nOK\r\n"),
    ("AT+WSTAC=5", b"ERROR:2\r\n"),
    ("AT+WSTAC=2,6", b"ERROR:2\r\n"),
    ("AT+WSTAC=4,0", b"ERROR:2\r\n"),
    ("AT+WSTAC=13,1", b"OK\r\n"),
    ("AT+WSTAC=13", b"+WSTAC:13,1\r\nOK\r\n"),
    ("AT+WSTAC=1,MyAP", b"ERROR:2\r\n"),            # a string must be quoted or [hex]
    ("AT+WSTAC=1," + '"' + "x" * 33 + '"', b"ERROR:2\r\n"),
    ("AT+WSTA=2", b"ERROR:2\r\n"),
    # WAPC ids
    ("AT+WAPC=5", b"+WAPC:5,0\r\nOK\r\n"),
    ("AT+WAPC=6", b"ERROR:2\r\n"),
    ("AT+WAPC=5,2", b"ERROR:2\r\n"),
    ("AT+WAP=2", b"ERROR:2\r\n"),
    # WPROVC (E10): PIN prints [] while unset, quoted once set
    ("AT+WPROVC=1", b"+WPROVC:1,2\r\nOK\r\n"),
    ("AT+WPROVC=2", b"+WPROVC:2,[]\r\nOK\r\n"),
    ('AT+WPROVC=2,"1234"', b"OK\r\n"),
    ("AT+WPROVC=2", b'+WPROVC:2,"1234"\r\nOK\r\n'),
    ('AT+WPROVC=2,""', b"OK\r\n"),
    ("AT+WPROVC=2", b"+WPROVC:2,[]\r\nOK\r\n"),
    ("AT+WPROVC=4", b"ERROR:2\r\n"),
    ("AT+WPROV=2", b"ERROR:2\r\n"),
    # MQTTC ids (M21)
    ("AT+MQTTC=1", b'+MQTTC:1,""\r\nOK\r\n'),
    ("AT+MQTTC=3", b'+MQTTC:3,"WINC1500_E15C01"\r\nOK\r\n'),
    ("AT+MQTTC=6", b"+MQTTC:6,60\r\nOK\r\n"),
    ("AT+MQTTC=7", b"+MQTTC:7,1\r\nOK\r\n"),
    ("AT+MQTTC=7,5", b"ERROR:2\r\n"),
    ("AT+MQTTC=8", b"ERROR:2\r\n"),
    ("AT+MQTTC=1,[3132372E302E302E31]", b"OK\r\n"),
    ("AT+MQTTC=1", b'+MQTTC:1,"127.0.0.1"\r\nOK\r\n'),
    ("AT+MQTTCONN=2", b"ERROR:2\r\n"),
    ('AT+MQTTSUB="t",3', b"ERROR:2\r\n"),
    ('AT+MQTTSUB=t', b"ERROR:2\r\n"),
    ('AT+MQTTPUB=0,3,0,"t","x"', b"ERROR:2\r\n"),
    ('AT+MQTTPUB=0,0,0,"t"', b"ERROR:2\r\n"),
    ("AT+MQTTDISCONN=0", b"ERROR:7\r\n"),
    # TLSC (M44): the index is required; reads print no index
    ("AT+TLSC", b"ERROR:1\r\n"),
    ("AT+TLSC=0", b"ERROR:2\r\n"),
    ("AT+TLSC=5", b"ERROR:2\r\n"),
    ("AT+TLSC=4", b'+TLSC:1,""\r\n+TLSC:2,""\r\n+TLSC:3,""\r\n+TLSC:4,""\r\n+TLSC:5,""\r\nOK\r\n'),
    ('AT+TLSC=4,4,"secret"', b"OK\r\n"),
    ("AT+TLSC=4,4", b'+TLSC:4,"secret"\r\nOK\r\n'),
    ("AT+TLSC=3,4", b'+TLSC:4,""\r\nOK\r\n'),          # configurations are independent
    ("AT+TLSC=4,6", b"ERROR:2\r\n"),
    ("AT+TLSC=4,1,7", b"ERROR:2\r\n"),
    # sockets without a link: the table works, the network does not
    ("AT+SOCKO=0", b"ERROR:2\r\n"),
    ("AT+SOCKO=2", b"+SOCKO:1\r\nOK\r\n"),
    ("AT+SOCKLST", b'+SOCKLST:1,2,"",0,0\r\nOK\r\n'),
    ("AT+SOCKLST =1", b'+SOCKLST:1,2,"",0,0\r\nOK\r\n'),   # M34: the syntax line's space
    ("AT+SOCKBL=1,6000", b"ERROR:7\r\n"),
    ("AT+SOCKCL=1", b"OK\r\n"),
    ("AT+SOCKLST", b"OK\r\n"),
    ('AT+DNSRESOLV=1,"www.example.com"', b"ERROR:7\r\n"),
    ('AT+PING="127.0.0.1"', b"ERROR:7\r\n"),
]


def test_offline_forms_exact_bytes(e):
    e.cmd("ATE0")
    for line, want in OFFLINE:
        assert e.cmd(line) == want.replace(b"<T>", e.term), line
    e.cmd("ATE0")


# with a station link; {u} is a local UDP receiver's port
ONLINE = [
    ("AT+SOCKO=1", b"+SOCKO:1\r\nOK\r\n"),
    ("AT+SOCKO=2", b"+SOCKO:2\r\nOK\r\n"),
    # UDP SOCKBR (E19): destination only, no AEC; SOCKBL then moves it to a local port and keeps it
    ('AT+SOCKBR=1,"127.0.0.1",{u}', b"OK\r\n"),
    ('AT+SOCKWR=1,5,"first"', b"OK\r\n"),
    ("AT+SOCKBL=1,0", b"OK\r\n"),
    ('AT+SOCKWR=1,6,"second"', b"OK\r\n"),
    ("AT+SOCKBL=1,0", b"ERROR:3\r\n"),               # already bound
    # wrong socket type / state
    ('AT+SOCKBM=2,"239.1.2.3",5000', b"ERROR:4\r\n"),
    ('AT+SOCKWRTO=2,"127.0.0.1",{u},1,"x"', b"ERROR:4\r\n"),
    ("AT+SOCKTLS=1", b"ERROR:4\r\n"),
    ("AT+SOCKTLS=2", b"ERROR:3\r\n"),
    ("AT+SOCKTLS=2,5", b"ERROR:2\r\n"),
    ('AT+SOCKWR=2,1,"x"', b"ERROR:3\r\n"),
    ('AT+SOCKWR=1,0,"x"', b"ERROR:2\r\n"),
    ('AT+SOCKWR=1,2,"x"', b"ERROR:8\r\n"),
    ('AT+SOCKWRTO=1,"127.0.0.1",{u},2,[41]', b"ERROR:8\r\n"),
    ("AT+SOCKRD=1,3,5", b"ERROR:2\r\n"),
    ("AT+SOCKRD=1,1,0", b"ERROR:2\r\n"),
    ("AT+SOCKRD=1,1,65536", b"ERROR:2\r\n"),
    ("AT+SOCKRD=2,1,5", b'+SOCKRD:2,0,""\r\nOK\r\n'),
    ("AT+SOCKRD=2,2,5", b"+SOCKRD:2,0,#\r\nOK\r\n"),
    ("AT+SOCKRD=9,1,5", b"ERROR:4\r\n"),
    ("AT+SOCKCL=0", b"ERROR:4\r\n"),
    ("AT+SOCKBR=2,\"127.0.0.1\",0", b"ERROR:2\r\n"),
    # M45: the comma the syntax line lacks is required; M46: the comma before the optional version
    ('AT+DNSRESOLV=1"www.example.com"', b"ERROR:2\r\n"),
    ('AT+PING="127.0.0.1",3', b"ERROR:2\r\n"),
]


def test_online_forms_exact_bytes(e):
    e.join()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    u = rx.getsockname()[1]
    try:
        for line, want in ONLINE:
            assert e.cmd(line.replace("{u}", str(u))) == want, line
        assert rx.recvfrom(100)[0] == b"first"
        assert rx.recvfrom(100)[0] == b"second"      # the destination survived SOCKBL
        # E26 with the example's space after the comma; the AEC follows the OK
        e.write(b'AT+DNSRESOLV=1, "localhost"' + e.term)
        assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b'OK\r\n+DNSRESOLV:1,"localhost","127.0.0.1"\r\n'
        # +SOCKERR:<SOCK_ID>,<STATUS_CODE>,<STATUS_MSG>: 3 = refused, the message a quoted string
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        dead.close()
        e.write(f'AT+SOCKBR=2,"127.0.0.1",{port}'.encode() + e.term)
        got = e.read_until(rb"\+SOCK\w+:.*?\r\n")
        assert re.fullmatch(rb'OK\r\n\+SOCKERR:2,3,"[ -!#-~]+"\r\n', got), got
        e.write(b'AT+PING="127.0.0.1",' + e.term)
        got = e.read_until(rb"\+PING:.*?\r\n", timeout=6)
        assert re.fullmatch(rb'OK\r\n\+PING:"127\.0\.0\.1",\d+\r\n', got), got
    finally:
        rx.close()
        for sid in (1, 2):
            e.cmd(f"AT+SOCKCL={sid}")
