"""microchip-winc raw binary mode edge cases over a real pty (M35/M38/M39/M40, README "binary mode").

What the host sees: '#' may arrive in a read of its own and bytes before it are skipped; '+++'
inside a fixed-length payload is data; a '+++' split over several writes still ends a length-0
payload; a host that falls silent mid-payload gets ERROR:8 after `data_timeout` seconds of silence
and nothing is sent; SOCKRD mode 2 prints the count it really has.
"""
from __future__ import annotations

import socket
import time

import pytest

from test_microchip_util import WORLD, Winc

IDLE = 0.5   # microchip-winc.data_timeout for these tests
FINAL = rb"(?:\A|\n)(OK|ERROR:\d+)\r\n"


@pytest.fixture
def e():
    with Winc(world=dict(WORLD, options={"microchip-winc.data_timeout": IDLE})) as emu:
        emu.join()
        yield emu


def tcp_to(e, sink) -> int:
    assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
    assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{sink.port}') == b"OK\r\n"
    e.read_until(rb"\+SOCKIND:1,.*?\r\n")
    sink.wait_connection()
    return 1


def udp_pair(e, sid=1):
    """A new UDP socket ``sid`` on the module, its default destination a local receiver."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    assert e.cmd("AT+SOCKO=1") == f"+SOCKO:{sid}\r\nOK\r\n".encode()
    assert e.cmd(f'AT+SOCKBR={sid},"127.0.0.1",{rx.getsockname()[1]}') == b"OK\r\n"
    return rx


def pieces(e, *parts: bytes, pause: float = 0.12) -> bytes:
    """Write ``parts`` one by one; the module must stay silent between them. Returns the answer."""
    for i, part in enumerate(parts):
        if i:
            e.expect_nothing(pause)
        e.write(part)
    return e.read_until(FINAL)


def test_marker_split_and_noise_before_it(e, tcp_sink):
    tcp_to(e, tcp_sink)
    # the command, then '#' on its own, then the payload in two pieces
    # (no prompt: the module waits for '#')
    assert pieces(e, b"AT+SOCKWR=1,5\r", b"#", b"hel", b"lo") == b"OK\r\n"
    assert tcp_sink.wait_bytes(5) == b"hello"
    # LF after CR, stray bytes ('+', '++' and digits) before the marker are skipped, not sent
    e.write(b"AT+SOCKWR=1,4\r\nnoise++-+123#data")
    assert e.read_until(FINAL) == b"OK\r\n"
    assert tcp_sink.wait_bytes(9) == b"hellodata"
    # with echo on, the command line is echoed but the payload (and anything before '#') is not
    assert e.cmd("ATE1") == b"OK\r\n"
    e.write(b"AT+SOCKWR=1,2\rxy#ab")
    assert e.read_until(rb"OK\r\n") == b"AT+SOCKWR=1,2\rOK\r\n"
    assert e.cmd("ATE0") == b"ATE0" + e.term + b"OK\r\n"
    assert tcp_sink.wait_bytes(11) == b"hellodataab"
    # a '#' inside the payload is data (only the first one is the marker)
    e.write(b"AT+SOCKWR=1,3\r##x#")
    assert e.read_until(FINAL) == b"OK\r\n"
    assert tcp_sink.wait_bytes(14) == b"hellodataab#x#"
    e.expect_nothing(0.1)
    assert e.cmd("AT") == b"OK\r\n"


def test_plus_inside_fixed_length_is_data(e, tcp_sink):
    tcp_to(e, tcp_sink)
    # exactly '+++', written alone after a pause (as an escape would be): still 3 bytes of data
    e.write(b"AT+SOCKWR=1,3\r#")
    time.sleep(0.2)
    e.write(b"+++")
    assert e.read_until(FINAL) == b"OK\r\n"
    e.write(b"AT+SOCKWR=1,7\r#ab+++cd")
    assert e.read_until(FINAL) == b"OK\r\n"
    assert tcp_sink.wait_bytes(10) == b"+++ab+++cd"
    e.expect_nothing(0.1)


def test_escape_split_across_reads_in_length_0_mode(e, tcp_sink):
    tcp_to(e, tcp_sink)
    assert pieces(e, b"AT+SOCKWR=1,0\r#abc+", b"+", b"+") == b"OK\r\n"
    assert tcp_sink.wait_bytes(3) == b"abc"
    # '+' and '++' that are not followed by a third '+' are data
    assert pieces(e, b"AT+SOCKWR=1,0\r#1+2++", b"3+++") == b"OK\r\n"
    assert tcp_sink.wait_bytes(9) == b"abc1+2++3"
    # UDP: one datagram per +++
    rx = udp_pair(e, 2)
    try:
        e.write(b"AT+SOCKWR=2,0\r#dgram+")
        e.write(b"++")
        assert e.read_until(FINAL) == b"OK\r\n"
        assert rx.recvfrom(100)[0] == b"dgram"
    finally:
        rx.close()


def test_tcp_length_0_streams_in_chunks(e, tcp_sink):
    tcp_to(e, tcp_sink)
    # the peer gets the data while the host is still sending (nothing piles up in the module)
    big = bytes(range(256)) * 400                           # 102400 bytes, '+' included
    e.write(b"AT+SOCKWR=1,0\r#" + big[:3000])
    assert tcp_sink.wait_bytes(1500) == big[:len(tcp_sink.data)]
    e.expect_nothing(0.1)                                    # no OK before the +++
    e.write(big[3000:] + b"+++")
    assert e.read_until(FINAL, timeout=10) == b"OK\r\n"
    assert tcp_sink.wait_bytes(len(big)) == big
    sent = len(big)
    # a +++ straddling a chunk boundary still ends the data; '++' + another byte there is data
    for body in (b"x" * 1502, b"x" * 1501, b"x" * 1500, b"x" * 1501 + b"++y", b"z" * 1502 + b"+a", b"w" * 3005):
        e.write(b"AT+SOCKWR=1,0\r#" + body + b"+++")
        assert e.read_until(FINAL, timeout=3) == b"OK\r\n", len(body)
        sent += len(body)
        assert tcp_sink.wait_bytes(sent)[-len(body):] == body
        assert len(tcp_sink.data) == sent
    # the host falls silent mid-stream: full chunks went out, the unfilled rest is dropped, ERROR:8
    e.write(b"AT+SOCKWR=1,0\r#" + b"s" * 2000)
    assert e.read_until(FINAL, timeout=3) == b"ERROR:8\r\n"
    time.sleep(0.1)
    assert 1500 <= len(tcp_sink.data) - sent < 2000 and set(tcp_sink.data[sent:]) == {ord("s")}
    assert e.cmd("AT") == b"OK\r\n"


def test_udp_length_0_limits_and_overflow_resync(e):
    rx = udp_pair(e)
    try:
        # exactly 1500 bytes then +++: one full datagram (not an overflow)
        e.write(b"AT+SOCKWR=1,0\r#" + b"a" * 1500 + b"+++")
        assert e.read_until(FINAL) == b"OK\r\n"
        assert rx.recvfrom(2000)[0] == b"a" * 1500
        # 1501 and 1502 bytes: refused, nothing sent, the module is back at once
        for n in (1501, 1502, 1503, 2000):
            e.write(b"AT+SOCKWR=1,0\r#" + b"b" * n + b"+++")
            assert e.read_until(FINAL, timeout=2) == b"ERROR:8\r\n", n
            assert e.cmd("AT") == b"OK\r\n", n
        # an overflow whose +++ straddles the limit, written in pieces
        e.write(b"AT+SOCKWR=1,0\r#" + b"c" * 1502 + b"+")
        e.write(b"+")
        e.write(b"+")
        assert e.read_until(FINAL, timeout=2) == b"ERROR:8\r\n"
        assert e.cmd("AT") == b"OK\r\n"
        rx.settimeout(0.2)
        with pytest.raises(socket.timeout):
            rx.recvfrom(4000)
    finally:
        rx.close()


def test_host_falls_silent_mid_payload(e, tcp_sink):
    tcp_to(e, tcp_sink)
    # fixed length: 3 of 10 bytes, then silence -> ERROR:8 after data_timeout, nothing sent
    t0 = time.monotonic()
    e.write(b"AT+SOCKWR=1,10\r#abc")
    e.expect_nothing(IDLE * 0.6)
    assert e.read_until(FINAL, timeout=3) == b"ERROR:8\r\n"
    assert time.monotonic() - t0 >= IDLE * 0.9
    assert e.cmd("AT") == b"OK\r\n"
    # silence before the '#'
    e.write(b"AT+SOCKWR=1,4\r")
    assert e.read_until(FINAL, timeout=3) == b"ERROR:8\r\n"
    # length 0 without +++: abandoned too
    e.write(b"AT+SOCKWR=1,0\r#partial")
    assert e.read_until(FINAL, timeout=3) == b"ERROR:8\r\n"
    time.sleep(0.1)
    assert tcp_sink.data == b""
    # the clock is per byte, not per transfer: a slow host that keeps sending is served
    e.write(b"AT+SOCKWR=1,0\r#")
    for piece in (b"s", b"l", b"o", b"w"):
        time.sleep(IDLE * 0.5)
        e.write(piece)
    e.write(b"+++")
    assert e.read_until(FINAL, timeout=3) == b"OK\r\n"
    assert tcp_sink.wait_bytes(4) == b"slow"
    # the socket still works normally afterwards
    assert e.cmd('AT+SOCKWR=1,2,"ok"') == b"OK\r\n"
    assert tcp_sink.wait_bytes(6) == b"slowok"


def test_loadcert_host_falls_silent(e):
    e.write(b'AT+LOADCERT=100,"partial"\r#-----BEGIN')
    assert e.read_until(FINAL, timeout=3) == b"+LOADCERT:1\r\nERROR:9\r\n"
    assert not (e.state_dir / "certs" / "partial").exists()
    assert e.cmd("AT") == b"OK\r\n"


def test_sockrd_binary_when_less_is_buffered(e, tcp_sink):
    tcp_to(e, tcp_sink)
    # nothing buffered: n = 0 and a bare '#'
    assert e.cmd("AT+SOCKRD=1,2,100") == b"+SOCKRD:1,0,#\r\nOK\r\n"
    tcp_sink.push(b"a\r\nOK\r\n#")          # bytes that look like protocol are data
    assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == b"+SOCKRXT:1,8\r\n"
    e.write(b"AT+SOCKRD=1,2,1000\r")
    assert e.read_until(rb"\+SOCKRD:1,\d+,#") == b"+SOCKRD:1,8,#"
    assert e.read_exactly(8 + 6) == b"a\r\nOK\r\n#\r\nOK\r\n"
    e.expect_nothing(0.2)                    # everything read: no new +SOCKRXT
    # UDP: the datagram is shorter than asked
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert e.cmd("AT+SOCKO=1") == b"+SOCKO:2\r\nOK\r\n"
        assert e.cmd("AT+SOCKBL=2,0") == b"OK\r\n"
        port = e.sync(lambda: e.prof.socks[2].udp.port)
        u.sendto(b"\x00\xff", ("127.0.0.1", port))
        e.read_until(rb"\+SOCKRXU:2,.*?,2\r\n")
        e.write(b"AT+SOCKRD=2,2,1500\r")
        assert e.read_until(rb"\+SOCKRD:2,2,#") == b"+SOCKRD:2,2,#"
        assert e.read_exactly(2 + 6) == b"\x00\xff\r\nOK\r\n"
        assert e.cmd("AT+SOCKRD=2,2,1500") == b"+SOCKRD:2,0,#\r\nOK\r\n"
    finally:
        u.close()


def test_wait_for_marker_ends_at_a_fixed_deadline(e, tcp_sink):
    """A host that polls AT every 0.2 s (faster than data_timeout) while the module waits for
    '#' gets the module back data_timeout after the command: skipped bytes do not extend it."""
    tcp_to(e, tcp_sink)
    t0 = time.monotonic()
    e.write(b"AT+SOCKWR=1,4\r\n")
    got = b""
    while b"ERROR:8\r\n" not in got and time.monotonic() - t0 < IDLE * 6:
        e.write(b"AT\r\n")
        got += e.drain(0.2)
    assert got.startswith(b"ERROR:8\r\n"), got
    assert IDLE * 0.9 <= time.monotonic() - t0 < IDLE * 6
    e.drain(0.3)
    assert e.cmd("AT") == b"OK\r\n"                 # commands work again
    time.sleep(0.1)
    assert tcp_sink.data == b""


@pytest.mark.parametrize("cmd", [b"AT+SOCKWR=1,4", b"AT+SOCKWR=1,0"])
def test_escape_before_marker_aborts(e, tcp_sink, cmd):
    tcp_to(e, tcp_sink)
    e.write(cmd + b"\r\n+")
    e.expect_nothing(0.1)
    e.write(b"++")                                   # a '+++' split over writes, before any '#'
    assert e.read_until(FINAL, timeout=3) == b"ERROR:8\r\n"
    assert e.cmd("AT") == b"OK\r\n"                 # right away, not after data_timeout
    time.sleep(0.1)
    assert tcp_sink.data == b""


def test_loadcert_escape_before_marker_aborts(e):
    e.write(b'AT+LOADCERT=100,"gone"\r\n+++')
    assert e.read_until(FINAL, timeout=3) == b"+LOADCERT:1\r\nERROR:9\r\n"
    assert not (e.state_dir / "certs" / "gone").exists()
