"""Line discipline per profile, as hosts write: every data phase once per host style (CR, CR LF,
CR LF byte by byte; LF for TI), with echo on and off, with the payload written after the prompt
and in the same write as the command. The assertions are the exact bytes the host reads on the
UART and the exact bytes that reach the peer (TCP sink, file, broker). Eseye's publish is in
test_eseye.py (test_publish_exact_bytes)."""
from __future__ import annotations

import re

import pytest

from harness import HOST_STYLES, Emu
from quectel_helpers import cmd_ok, emu as quectel_emu, join as quectel_join, urc
from test_microchip_util import Winc
from test_ti_common import Ti

# a payload with every awkward byte: CR, LF, "OK", Ctrl+Z, Esc, '#', '+++', NUL, 0xff. It does not
# start with LF: an LF right after the CR that ends the command line is the line's, by definition
PAYLOAD = b"a\r\nOK\r\n\x1a\x1b#+++\x00\xff\n"
STYLES = ["CR", "CRLF", "CRLF-bytewise"]
ECHO = pytest.mark.parametrize("echo", [True, False], ids=["echo-on", "echo-off"])
BURST = pytest.mark.parametrize("burst", [False, True], ids=["wait-prompt", "one-write"])


def styled(e: Emu, style: str) -> Emu:
    e.term, e.bytewise = HOST_STYLES[style]
    return e


def echoed(e: Emu, line: bytes, echo: bool) -> bytes:
    return line + e.term if echo else b""


# ------------------------------------------------------------------------------------------ Quectel

@pytest.fixture
def quectel():
    e = quectel_emu()
    quectel_join(e)                      # echo off, joined
    yield e
    e.stop()


def quectel_echo(e: Emu, echo: bool) -> None:
    if echo:
        assert e.cmd("AT+QECHO=1") == b"\r\nOK\r\n"


@pytest.mark.parametrize("style", STYLES)
@ECHO
@BURST
def test_quectel_qisend_exact(quectel, tcp_sink, style, echo, burst):
    e = styled(quectel, style)
    cmd_ok(e, f'AT+QIOPEN=1,"TCP","127.0.0.1",{tcp_sink.port},0,0')
    urc(e, r"\+QIOPEN: 1,0\r\n")
    tcp_sink.wait_connection()
    quectel_echo(e, echo)
    line = b"AT+QISEND=1,%d" % len(PAYLOAD)
    if burst:
        e.write(line + e.term + PAYLOAD)
        assert e.read_until(rb"SEND OK\r\n") == echoed(e, line, echo) + b"\r\n> \r\nSEND OK\r\n"
    else:
        e.write(line + e.term)
        assert e.read_until(b"> ") == echoed(e, line, echo) + b"\r\n> "
        e.write(PAYLOAD)
        assert e.read_until(rb"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert tcp_sink.wait_bytes(len(PAYLOAD)) == PAYLOAD
    # Ctrl+Z-terminated form: the payload is everything up to the Ctrl+Z
    e.write(b"AT+QISEND=1" + e.term + b"zz\r\n" + b"\x1a")
    assert e.read_until(rb"SEND OK\r\n") == echoed(e, b"AT+QISEND=1", echo) + b"\r\n> \r\nSEND OK\r\n"
    assert tcp_sink.wait_bytes(len(PAYLOAD) + 4) == PAYLOAD + b"zz\r\n"
    assert e.cmd("at") == echoed(e, b"at", echo) + b"\r\nOK\r\n"
    e.expect_nothing(0.1)


@pytest.mark.parametrize("style", STYLES)
@ECHO
@BURST
def test_quectel_qfwrite_file_exact(tmp_path, style, echo, burst):
    e = styled(quectel_emu(state_dir=tmp_path), style)
    try:
        assert e.cmd("AT+QECHO=%d" % echo) == echoed(e, b"AT+QECHO=%d" % echo, True) + b"\r\nOK\r\n"
        assert e.cmd('AT+QFOPEN="f.bin",0') == echoed(e, b'AT+QFOPEN="f.bin",0', echo) + b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        line = b"AT+QFWRITE=1,%d" % len(PAYLOAD)
        done = b"\r\n+QFWRITE: %d,%d\r\n\r\nOK\r\n" % (len(PAYLOAD), len(PAYLOAD))
        if burst:
            e.write(line + e.term + PAYLOAD)
            assert e.read_until(b"OK\r\n") == echoed(e, line, echo) + b"\r\nCONNECT\r\n" + done
        else:
            e.write(line + e.term)
            assert e.read_until(b"CONNECT\r\n") == echoed(e, line, echo) + b"\r\nCONNECT\r\n"
            e.write(PAYLOAD)
            assert e.read_until(b"OK\r\n") == done
        cmd_ok(e, "AT+QFCLOSE=1")
        assert (tmp_path / "flash" / "f.bin").read_bytes() == PAYLOAD
    finally:
        e.stop()


@pytest.mark.parametrize("style", STYLES)
@ECHO
@BURST
def test_quectel_qmtpub_broker_exact(quectel, mosquitto, mqtt_probe, style, echo, burst):
    e = styled(quectel, style)
    probe = mqtt_probe(mosquitto)
    probe.subscribe("ld/#")
    assert e.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{mosquitto.port}') == b"\r\nOK\r\n"
    urc(e, r"\+QMTOPEN: 0,0\r\n")
    assert e.cmd('AT+QMTCONN=0,"ld"') == b"\r\nOK\r\n"
    urc(e, r"\+QMTCONN: 0,0,0\r\n")
    quectel_echo(e, echo)
    line = b'AT+QMTPUB=0,0,0,0,"ld/x",%d' % len(PAYLOAD)
    if burst:
        e.write(line + e.term + PAYLOAD)
        assert e.read_until(rb"\r\nOK\r\n") == echoed(e, line, echo) + b"\r\n> \r\nOK\r\n"
    else:
        e.write(line + e.term)
        assert e.read_until(b"> ") == echoed(e, line, echo) + b"\r\n> "
        e.write(PAYLOAD)
        assert e.read_until(rb"\r\nOK\r\n") == b"\r\nOK\r\n"
    assert urc(e, r"\+QMTPUB: 0,0,0\r\n")
    assert probe.wait_for("ld/x")[0] == PAYLOAD


# ------------------------------------------------------------------------------------------ TI

@pytest.mark.parametrize("style", STYLES + ["LF"])
@ECHO
def test_ti_send_and_filewrite_exact(tcp_sink, style, echo):
    with Ti() as t:
        e = styled(t, style)
        e.boot()
        e.join()
        sd = int(re.search(rb"\+socket:(\d+)", e.ok("AT+Socket=INET,STREAM,TCP")).group(1))
        e.ok(f"AT+Connect={sd},INET,{tcp_sink.port},127.0.0.1")
        e.later(rb"\+connect:")
        if echo:
            assert e.cmd("ATE1") == b"OK\r\n"
        line = b"AT+Send=%d,0,%d," % (sd, len(PAYLOAD)) + PAYLOAD      # "\r\nOK\r\n" inside: read by count
        e.write(line + e.term)
        want = echoed(e, line, echo) + b"OK\r\n"
        assert e.read_exactly(len(want)) == want
        assert tcp_sink.wait_bytes(len(PAYLOAD)) == PAYLOAD
        out = e.ok("AT+FileOpen=/user/ld.bin,CREATE|WRITE,100")
        fid = int(re.search(rb"\+fileopen:(\d+)", out).group(1))
        line = b"AT+FileWrite=%d,0,0,%d," % (fid, len(PAYLOAD)) + PAYLOAD
        e.write(line + e.term)
        want = echoed(e, line, echo) + b"+filewrite:%d\r\nOK\r\n" % len(PAYLOAD)
        assert e.read_exactly(len(want)) == want
        assert e.cmd(f"AT+FileClose={fid},,", final=rb"OK\r\n") == echoed(e, b"AT+FileClose=%d,," % fid, echo) + b"OK\r\n"
        assert (e.state_dir / "flash" / "user" / "ld.bin").read_bytes() == PAYLOAD
        assert e.cmd("AT+Test", final=rb"OK\r\n") == echoed(e, b"AT+Test", echo) + b"OK\r\n"
        e.expect_nothing(0.1)


# ------------------------------------------------------------------------------------------ Microchip

@pytest.mark.parametrize("style", STYLES)
@ECHO
@BURST
def test_microchip_sockwr_exact(tcp_sink, style, echo, burst):
    with Winc() as w:
        e = styled(w, style)
        e.join()
        assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{tcp_sink.port}') == b"OK\r\n"
        e.read_until(rb"\+SOCKIND:1,.*?\r\n")
        tcp_sink.wait_connection()
        if echo:
            assert e.cmd("ATE1") == b"OK\r\n"
        line = b"AT+SOCKWR=1,%d" % len(PAYLOAD)
        if burst:
            e.write(line + e.term + b"#" + PAYLOAD)
            assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == echoed(e, line, echo) + b"OK\r\n"
        else:
            e.write(line + e.term)
            assert e.read_exactly(len(echoed(e, line, echo))) == echoed(e, line, echo)
            e.expect_nothing(0.1)          # no prompt: the module waits for the host's '#'
            e.write(b"#" + PAYLOAD)
            assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"OK\r\n"
        assert tcp_sink.wait_bytes(len(PAYLOAD)) == PAYLOAD
        assert e.cmd("AT", final=rb"OK\r\n") == echoed(e, b"AT", echo) + b"OK\r\n"
        e.expect_nothing(0.1)


@pytest.mark.parametrize("style", STYLES)
@ECHO
@BURST
def test_quectel_qhttppost_body_exact(quectel, http_server, style, echo, burst):
    e = styled(quectel, style)
    assert e.cmd(f'AT+QHTTPCFG="url","{http_server.url("/post")}"') == b"\r\nOK\r\n"
    quectel_echo(e, echo)
    line = b"AT+QHTTPPOST=%d" % len(PAYLOAD)
    if burst:
        e.write(line + e.term + PAYLOAD)
        assert e.read_until(rb"\r\nOK\r\n") == echoed(e, line, echo) + b"\r\nCONNECT\r\n\r\nOK\r\n"
    else:
        e.write(line + e.term)
        assert e.read_until(b"CONNECT\r\n") == echoed(e, line, echo) + b"\r\nCONNECT\r\n"
        e.write(PAYLOAD)
        assert e.read_until(rb"\r\nOK\r\n") == b"\r\nOK\r\n"
    urc(e, r"\+QHTTPPOST: 0,200,\d+\r\n")
    assert http_server.last("/post").body == PAYLOAD


@pytest.mark.parametrize("style", STYLES)
def test_quectel_transparent_mode_gets_no_lf(quectel, tcp_sink, style):
    """The LF of the line that enters transparent mode (QIOPEN access mode 2, QISWTMD, ATO) is not data."""
    e = styled(quectel, style)
    e.write(f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,2'.encode() + e.term + b"abc")
    assert e.read_until(rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    e.write(b"def")
    assert tcp_sink.wait_bytes(6) == b"abcdef"
    e.expect_nothing(0.3)                                    # guard time before +++
    e.write(b"+++")
    assert e.read_until(rb"OK\r\n", timeout=5) == b"\r\nOK\r\n"
    assert e.cmd("ATO", final=rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    e.write(b"ghi")
    assert tcp_sink.wait_bytes(9) == b"abcdefghi"


# ------------------------------------------------------------------------------------------ lone LF, empty lines

def test_lone_lf_and_empty_lines_per_profile(tmp_path):
    """Quectel, Eseye and Microchip ignore a lone LF (echoed when echo is on); TI ends a line with
    it. An empty line gets no answer, only its echo."""
    q = quectel_emu()
    try:
        q.write(b"AT\n")                                     # not a line end: nothing yet
        assert q.drain(0.2) == b"AT\n"
        q.write(b"\r\n")
        assert q.read_until(b"OK\r\n") == b"\r\n\r\nOK\r\n"
        q.write(b"\n\nAT+QECHO=0\r\n")
        assert q.read_until(b"OK\r\n") == b"\n\nAT+QECHO=0\r\n\r\nOK\r\n"
        q.write(b"\r\n\r\n\n")
        q.expect_nothing(0.2)
    finally:
        q.stop()
    with Emu("eseye-anynet") as e:
        e.write(b"\r\n")
        assert e.drain(0.2) == b"\r\n"                     # echo only
        e.write(b"\nA\nT\r\n")
        assert e.read_until(b"OK\r\n") == b"\nA\nT\r\n\r\nOK\r\n"
    with Winc() as w:                                       # echo off after Winc.start
        w.write(b"\n\nAT\r")
        assert w.read_until(b"OK\r\n") == b"OK\r\n"
        w.write(b"\r\n\n\r")
        w.expect_nothing(0.2)
    with Ti() as t:
        t.write(b"AT+Test\n")
        assert t.read_until(b"OK\r\n") == b"OK\r\n"
        t.write(b"ATE1\nAT+Test\r\n\n")
        assert t.read_until(b"OK\r\n") == b"OK\r\n"
        assert t.read_until(b"OK\r\n") == b"AT+Test\r\nOK\r\n"
        assert t.drain(0.2) == b"\n"                         # the empty line: its echo, no answer
