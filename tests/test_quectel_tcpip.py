"""Quectel FCM242D TCP/IP over a real pty against real loopback peers."""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from quectel_helpers import cmd_ok, emu, join, urc, world


@pytest.fixture
def e():
    m = emu()
    join(m)
    yield m
    m.stop()


def open_tcp(e, cid, port, mode=0, host="127.0.0.1"):
    cmd_ok(e, f'AT+QIOPEN={cid},"TCP","{host}",{port},0,{mode}')
    assert urc(e, rf"\+QIOPEN: {cid},\d+\r\n").group(0) == f"+QIOPEN: {cid},0\r\n".encode()


def send(e, line, payload, final=rb"SEND OK\r\n|SEND FAIL\r\n|ERROR\r\n"):
    e.write(line.encode() + b"\r")
    assert e.read_until(b"> ") == b"\r\n> "
    e.write(payload)
    return e.read_until(final)


@pytest.fixture
def udp_peer():
    """A UDP socket on loopback standing for the remote host of a UDP SERVICE."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(3)
    yield peer
    peer.close()


def open_service(e, cid, port, mode):
    cmd_ok(e, f'AT+QIOPEN={cid},"UDP SERVICE","127.0.0.1",0,{port},{mode}')
    assert urc(e, rf"\+QIOPEN: {cid},\d+\r\n").group(0) == f"+QIOPEN: {cid},0\r\n".encode()


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --------------------------------------------------------------------------------- buffer mode

def test_tcp_buffer_mode_send_forms_and_edge_triggered_recv(e, tcp_sink):
    open_tcp(e, 1, tcp_sink.port)
    conn = tcp_sink.wait_connection()
    assert send(e, "AT+QISEND=1,5", b"he\x1allo"[:5]) == b"\r\nSEND OK\r\n"    # fixed length: Ctrl+Z is data
    assert send(e, "AT+QISEND=1", b"world\x1a") == b"\r\nSEND OK\r\n"
    assert send(e, "AT+QISEND=1", b"discard me\x1b") == b"\r\nSEND FAIL\r\n"  # Esc cancels
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 568,Cancel sending\r\n\r\nOK\r\n"
    tcp_sink.wait_bytes(10)
    time.sleep(0.1)
    assert conn.data == b"he\x1allworld"
    assert e.cmd("AT+QISEND=1,0") == b"\r\n+QISEND: 10,10,0\r\n\r\nOK\r\n"
    # edge-triggered "recv": one URC until the buffer has been drained
    tcp_sink.push(b"first ")
    assert e.read_until(rb'\+QIURC: "recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
    tcp_sink.push(b"second")
    e.expect_nothing(0.3)
    assert e.cmd("AT+QIRD=1,4") == b"\r\n+QIRD: 4\r\nfirs\r\nOK\r\n"
    tcp_sink.push(b"!")
    e.expect_nothing(0.3)                                            # not drained yet: still no URC
    assert e.cmd("AT+QIRD=1") == b"\r\n+QIRD: 9\r\nt second!\r\nOK\r\n"
    assert e.cmd("AT+QIRD=1") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert e.cmd("AT+QIRD=1,0") == b"\r\n+QIRD: 13,13,0\r\n\r\nOK\r\n"
    tcp_sink.push(b"again")
    assert e.read_until(rb'"recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'   # re-armed after the drain
    st = e.cmd("AT+QISTATE")
    assert st.startswith(f'\r\n+QISTATE: 1,"TCP","127.0.0.1",{tcp_sink.port},'.encode()) and b',2,1,0,"uart1"\r\n' in st
    # too long variable-length data is refused; the module keeps working
    assert send(e, "AT+QISEND=1", b"x" * 1461) == b"\r\nERROR\r\n"
    assert e.cmd("AT+QISEND=1,1461") == b"\r\nERROR\r\n"
    e.drain(0.1)
    # the peer closes: URC, state 4, unread data still readable, then QICLOSE
    tcp_sink.close_client()
    assert e.read_until(rb'"closed",1\r\n') .endswith(b'+QIURC: "closed",1\r\n')
    assert b",4,1,0," in e.cmd("AT+QISTATE=1")
    assert e.cmd("AT+QIRD=1") == b"\r\n+QIRD: 5\r\nagain\r\nOK\r\n"
    assert e.cmd("AT+QISEND=1,1") == b"\r\nERROR\r\n"                    # no prompt on a closed socket
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 565,Socket has been closed\r\n\r\nOK\r\n"
    cmd_ok(e, "AT+QICLOSE=1")
    assert e.cmd("AT+QISTATE") == b"\r\nOK\r\n"


def test_direct_push_and_hex_dataformat(e, tcp_sink):
    open_tcp(e, 0, tcp_sink.port, mode=1)
    tcp_sink.wait_connection()
    tcp_sink.push(b"Test 1")
    assert e.read_until(rb"Test 1") == b'\r\n+QIURC: "recv",0,6\r\nTest 1'
    cmd_ok(e, 'AT+QICFG="dataformat",1,1')
    assert e.cmd('AT+QICFG="dataformat"') == b'\r\n+QICFG: "dataformat",1,1\r\n\r\nOK\r\n'
    assert send(e, "AT+QISEND=0,3", b"414243") == b"\r\nSEND OK\r\n"       # 3 bytes typed as 6 hex chars
    assert tcp_sink.wait_bytes(3) == b"ABC"
    tcp_sink.push(b"\x00\xff")
    assert e.read_until(rb"00FF") == b'\r\n+QIURC: "recv",0,2\r\n00FF'
    # switch to buffer mode with QISWTMD: data then waits for QIRD
    cmd_ok(e, 'AT+QICFG="dataformat",0,0')
    cmd_ok(e, "AT+QISWTMD=0,0")
    tcp_sink.push(b"buffered")
    urc(e, r'"recv",0\r\n')
    assert e.cmd("AT+QIRD=0") == b"\r\n+QIRD: 8\r\nbuffered\r\nOK\r\n"
    cmd_ok(e, "AT+QICLOSE=0")


def test_udp_client_buffer_and_push(e, udp_echo):
    cmd_ok(e, f'AT+QIOPEN=2,"UDP","127.0.0.1",{udp_echo.port},0,0')
    urc(e, r"\+QIOPEN: 2,0\r\n")
    assert send(e, "AT+QISEND=2,4", b"ping") == b"\r\nSEND OK\r\n"
    urc(e, r'"recv",2\r\n')
    assert e.cmd("AT+QIRD=2") == b"\r\n+QIRD: 4\r\nping\r\nOK\r\n"
    cmd_ok(e, "AT+QISWTMD=2,1")
    assert send(e, "AT+QISEND=2", b"dgram\x1a") == b"\r\nSEND OK\r\n"
    assert e.read_until(b"dgram") == b'\r\n+QIURC: "recv",2,5\r\ndgram'
    assert b'+QISTATE: 2,"UDP","127.0.0.1"' in e.cmd("AT+QISTATE")
    cmd_ok(e, "AT+QICLOSE=2")


def test_udp_service_push_and_send_to_address(e, udp_peer):
    port = free_port(socket.SOCK_DGRAM)
    peer = udp_peer
    open_service(e, 3, port, 1)
    peer.sendto(b"hello service", ("127.0.0.1", port))
    pp = peer.getsockname()[1]
    assert e.read_until(b"hello service") == f'\r\n+QIURC: "recv",3,13,"127.0.0.1",{pp}\r\nhello service'.encode()
    assert send(e, f'AT+QISEND=3,5,"127.0.0.1",{pp}', b"reply") == b"\r\nSEND OK\r\n"
    assert peer.recvfrom(100) == (b"reply", ("127.0.0.1", port))
    assert e.cmd("AT+QISEND=3,5") == b"\r\nERROR\r\n"                 # a service needs the address
    # buffer mode read shows the sender
    assert e.cmd("AT+QISWTMD=3,0") == b"\r\nERROR\r\n"                # not allowed for a service
    assert e.cmd("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 555,")
    cmd_ok(e, "AT+QICLOSE=3")
    open_service(e, 3, port, 0)
    peer.sendto(b"abc", ("127.0.0.1", port))
    urc(e, r'"recv",3\r\n')
    assert e.cmd("AT+QIRD=3") == f'\r\n+QIRD: 3,"127.0.0.1",{pp}\r\nabc\r\nOK\r\n'.encode()
    # port busy: a second service on the same port
    cmd_ok(e, f'AT+QIOPEN=4,"UDP SERVICE","127.0.0.1",0,{port},0')
    assert urc(e, r"\+QIOPEN: 4,\d+\r\n").group(0) == b"+QIOPEN: 4,570\r\n"
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 570,Port busy\r\n\r\nOK\r\n"


def test_tcp_listener_auto_and_manual_accept(e):
    port = free_port()
    cmd_ok(e, f'AT+QIOPEN=5,"TCP LISTENER","127.0.0.1",0,{port},0')
    urc(e, r"\+QIOPEN: 5,0\r\n")
    c1 = socket.create_connection(("127.0.0.1", port), timeout=3)
    try:
        m = urc(e, rb'\+QIURC: "incoming",(\d+),5,"127.0.0.1",(\d+)\r\n')
        cid, rport = int(m.group(1)), int(m.group(2))
        assert cid == 0 and rport == c1.getsockname()[1]
        c1.sendall(b"from client")
        urc(e, rf'"recv",{cid}\r\n')
        assert e.cmd(f"AT+QIRD={cid}") == b"\r\n+QIRD: 11\r\nfrom client\r\nOK\r\n"
        assert send(e, f"AT+QISEND={cid},2", b"hi") == b"\r\nSEND OK\r\n"
        assert c1.recv(10) == b"hi"
        st = e.cmd("AT+QISTATE")
        assert f'+QISTATE: 0,"TCP INCOMING","127.0.0.1",{rport},{port},2,5,0,"uart1"'.encode() in st
        assert f'+QISTATE: 5,"TCP LISTENER","192.168.50.23",0,{port},3,5,0,"uart1"'.encode() in st
        # manual accept
        cmd_ok(e, 'AT+QICFG="tcp/accept",0')
        c2 = socket.create_connection(("127.0.0.1", port), timeout=3)
        m = urc(e, rb'\+QIURC: "incoming",(\d+),5,"127.0.0.1",(\d+)\r\n')
        assert m.group(1) == b"1"
        out = e.cmd("AT+QIACCEPT=5,1,7")
        assert out == f'\r\n+QIACCEPT: 7,"127.0.0.1",{c2.getsockname()[1]}\r\n\r\nOK\r\n'.encode()
        c2.sendall(b"x")
        urc(e, r'"recv",7\r\n')
        c3 = socket.create_connection(("127.0.0.1", port), timeout=3)
        urc(e, rb'\+QIURC: "incoming",1,5')
        cmd_ok(e, "AT+QIACCEPT=5,0")                                   # reject: the client sees a reset
        c3.settimeout(3)
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            if c3.recv(10) == b"":
                raise ConnectionResetError
        assert e.cmd("AT+QIACCEPT=5,1") == b"\r\nERROR\r\n"              # nothing pending
        c2.close(); c3.close()
    finally:
        c1.close()


def test_open_errors_are_reachable(e):
    closed = free_port()
    cmd_ok(e, f'AT+QIOPEN=0,"TCP","127.0.0.1",{closed},0,0')
    assert urc(e, r"\+QIOPEN: 0,\d+\r\n").group(0) == b"+QIOPEN: 0,564\r\n"          # refused
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 564,Socket connect failed\r\n\r\nOK\r\n"
    cmd_ok(e, 'AT+QIOPEN=0,"TCP","no-such-host.invalid",80,0,0')
    assert urc(e, r"\+QIOPEN: 0,\d+\r\n", timeout=10).group(0) == b"+QIOPEN: 0,563\r\n"   # DNS
    # socket identity in use
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    try:
        cmd_ok(e, f'AT+QIOPEN=0,"TCP","127.0.0.1",{lst.getsockname()[1]},0,0')
        urc(e, r"\+QIOPEN: 0,0\r\n")
        assert e.cmd(f'AT+QIOPEN=0,"TCP","127.0.0.1",{lst.getsockname()[1]},0,0') == b"\r\nERROR\r\n"
        assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 561,Socket identity has been used\r\n\r\nOK\r\n"
        assert e.cmd('AT+QIOPEN=1,"TCP LISTENER","127.0.0.1",0,0,0') == b"\r\nERROR\r\n"   # needs a port
        assert e.cmd("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 552,")
        assert e.cmd('AT+QIOPEN=1,"TCP","127.0.0.1",80,0,3') == b"\r\nERROR\r\n"
        assert e.cmd("AT+QISEND=9,3") == b"\r\nERROR\r\n"
        assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 565,Socket has been closed\r\n\r\nOK\r\n"
    finally:
        lst.close()
    # local port already taken (a listening socket holds it)
    held = socket.socket()
    held.bind(("0.0.0.0", 0))
    held.listen(1)
    try:
        cmd_ok(e, f'AT+QIOPEN=3,"TCP","127.0.0.1",{free_port()},{held.getsockname()[1]},0')
        assert urc(e, r"\+QIOPEN: 3,\d+\r\n").group(0) == b"+QIOPEN: 3,556\r\n"
        assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 556,Socket bind failed\r\n\r\nOK\r\n"
    finally:
        held.close()
    assert e.cmd(f'AT+QIOPEN=3,"TCP LISTENER","127.0.0.1",0,{free_port()},2') == b"\r\nERROR\r\n"
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 555,Operation not supported\r\n\r\nOK\r\n"
    # a second lookup while one is running: DNS busy
    e.write(b'AT+QIDNSGIP="no-such-host.invalid"\rAT+QIDNSGIP="localhost"\r')
    assert e.read_until(rb"ERROR\r\n") == b"\r\nOK\r\n\r\nERROR\r\n"
    out = e.cmd("AT+QIGETERROR")
    failed = b'\r\n+QIURC: "dnsgip",563\r\n'              # the first lookup may already have failed
    assert out.removeprefix(failed) == b"\r\n+QIGETERROR: 562,DNS busy\r\n\r\nOK\r\n"
    if not out.startswith(failed):
        e.read_until(rb'"dnsgip",563\r\n', timeout=10)
    cmd_ok(e, "AT+QSTASTOP")
    e.drain(0.1)
    assert e.cmd('AT+QIOPEN=2,"TCP","127.0.0.1",80,0,0') == b"\r\nERROR\r\n"
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,Operation not allowed\r\n\r\nOK\r\n"


def test_connect_timeout_567():
    m = emu(world(connect_timeout=0.5))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(lsock.getsockname())
            fillers.append(s)
        time.sleep(0.1)
        join(m)
        cmd_ok(m, f'AT+QIOPEN=0,"TCP","127.0.0.1",{lsock.getsockname()[1]},0,0')
        cmd_ok(m, f'AT+QIOPEN=1,"TCP","127.0.0.1",{lsock.getsockname()[1]},0,0')
        assert b'+QISTATE: 1,"TCP","127.0.0.1",' in m.cmd("AT+QISTATE=1") and b",1,1,0," in m.cmd("AT+QISTATE=1")
        cmd_ok(m, "AT+QICLOSE=1")                                    # give up while it is still opening
        assert urc(m, r"\+QIOPEN: \d,\d+\r\n").group(0) == b"+QIOPEN: 0,567\r\n"
        m.expect_nothing(0.8)                                        # and no +QIOPEN: 1 ever comes
    finally:
        for s in fillers:
            s.close()
        lsock.close()
        m.stop()


def test_keepalive_applies_to_the_real_socket(e, tcp_sink):
    open_tcp(e, 0, tcp_sink.port)
    cmd_ok(e, 'AT+QICFG="tcp/kalive",1,120,15,3')
    assert e.cmd('AT+QICFG="tcp/kalive"') == b'\r\n+QICFG: "tcp/kalive",1,120,15,3\r\n\r\nOK\r\n'
    ka = e.sync(lambda: e.module.profile.socks[0].conn.get_keepalive())
    assert ka == {"enabled": True, "idle": 120, "interval": 15, "count": 3}
    assert e.cmd('AT+QICFG="tcp/kalive",1,30,15,3') == b"\r\nERROR\r\n"


# --------------------------------------------------------------------------------- transparent

def test_e3_transparent_escape_ato_and_close(e, tcp_sink):
    assert e.cmd(f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,2', final=rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    tcp_sink.wait_connection()
    tcp_sink.push(b"Test 1")
    assert e.read_exactly(6) == b"Test 1"
    e.write(b"AT+QISTATE\r")                                   # just data in transparent mode
    assert tcp_sink.wait_bytes(11) == b"AT+QISTATE\r"
    time.sleep(0.3)
    e.write(b"+++")
    assert e.read_until(b"OK\r\n", timeout=2) == b"\r\nOK\r\n"
    assert b',2,0,2,"uart1"' in e.cmd("AT+QISTATE=0")         # still connected, mode 2
    tcp_sink.push(b"while away")                                # kept for ATO
    e.expect_nothing(0.3)
    assert e.cmd("ATO", final=rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert e.read_exactly(10) == b"while away"
    e.write(b"a+++b")                                           # '+++' inside data is data
    time.sleep(0.3)
    e.write(b"+++")
    e.read_until(b"OK\r\n", timeout=2)
    assert tcp_sink.wait_bytes(16)[11:] == b"a+++b"
    tcp_sink.close_client()                                     # the peer leaves while we are escaped
    assert e.read_until(rb'"closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
    assert e.cmd("ATO", final=rb"NO CARRIER\r\n") == b"\r\nNO CARRIER\r\n"
    assert e.cmd("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert e.cmd("ATO", final=rb"NO CARRIER\r\n") == b"\r\nNO CARRIER\r\n"


def test_transparent_remote_close_gives_no_carrier(e, tcp_sink):
    e.cmd(f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,2', final=rb"CONNECT\r\n")
    tcp_sink.wait_connection()
    tcp_sink.push(b"bye")
    time.sleep(0.1)
    tcp_sink.close_client()
    assert e.read_until(b"NO CARRIER\r\n") == b"bye\r\nNO CARRIER\r\n"
    assert b",4,0,2," in e.cmd("AT+QISTATE=0")
    cmd_ok(e, "AT+QICLOSE=0")


def test_transparent_packet_size_and_wait_time(e, tcp_sink):
    cmd_ok(e, 'AT+QICFG="transpktsize",10')
    cmd_ok(e, 'AT+QICFG="transwaittm",5')
    e.cmd(f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,2', final=rb"CONNECT\r\n")
    conn = tcp_sink.wait_connection()
    e.write(b"12345")
    time.sleep(0.25)
    assert conn.data == b""                                     # held: less than a packet, wait 500 ms
    tcp_sink.wait_bytes(5, timeout=2)
    e.write(b"abcdefghij")                                      # a full packet goes at once
    t0 = time.monotonic()
    tcp_sink.wait_bytes(15, timeout=2)
    assert time.monotonic() - t0 < 0.45                          # well before the 500 ms wait time
    time.sleep(0.3)
    e.write(b"+++")
    e.read_until(b"OK\r\n", timeout=2)


def test_transparent_1mb_each_direction(e, tcp_sink):
    up = os.urandom(1 << 20)
    down = os.urandom(1 << 20)
    e.cmd(f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,2', final=rb"CONNECT\r\n")
    conn = tcp_sink.wait_connection()
    writer = threading.Thread(target=lambda: [e.ser.write(up[i:i + 4096]) for i in range(0, len(up), 4096)])
    writer.start()
    tcp_sink.push(down)
    got = e.read_exactly(len(down), timeout=30)
    writer.join(30)
    tcp_sink.wait_bytes(len(up), timeout=30)
    assert got == down
    assert conn.data == up
    time.sleep(0.3)
    e.write(b"+++")
    assert e.read_until(b"OK\r\n", timeout=3) == b"\r\nOK\r\n"
    cmd_ok(e, "AT+QICLOSE=0")


def test_passiveclosed_releases_the_socket(e, tcp_sink):
    cmd_ok(e, 'AT+QICFG="passiveclosed",1')
    open_tcp(e, 0, tcp_sink.port, mode=1)
    tcp_sink.wait_connection()
    tcp_sink.push(b"last words")
    tcp_sink.close_client()
    assert e.read_until(rb'"closed",0\r\n') == b'\r\n+QIURC: "recv",0,10\r\nlast words\r\n+QIURC: "closed",0\r\n'
    assert e.cmd("AT+QISTATE") == b"\r\nOK\r\n"                   # gone without AT+QICLOSE
    open_tcp(e, 0, tcp_sink.port)                                   # the ID is free again


def test_switch_buffered_socket_to_transparent_and_udp_transparent(e, tcp_sink, udp_echo):
    open_tcp(e, 0, tcp_sink.port)
    tcp_sink.wait_connection()
    tcp_sink.push(b"waiting in the buffer")
    urc(e, r'"recv",0\r\n')
    assert e.cmd("AT+QISWTMD=0,2", final=rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert e.read_exactly(21) == b"waiting in the buffer"          # buffered data comes first
    time.sleep(0.3)
    e.write(b"+++")
    e.read_until(b"OK\r\n", timeout=2)
    cmd_ok(e, "AT+QICLOSE=0")
    assert e.cmd(f'AT+QIOPEN=1,"UDP","127.0.0.1",{udp_echo.port},0,2', final=rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    e.write(b"datagram")
    assert e.read_exactly(8, timeout=3) == b"datagram"             # out as UDP, echoed back, raw on the UART
    time.sleep(0.3)
    e.write(b"+++")
    e.read_until(b"OK\r\n", timeout=2)
    assert b'+QISTATE: 1,"UDP"' in e.cmd("AT+QISTATE")


def test_transparent_with_uart_pacing_loses_nothing(tcp_sink):
    from harness import Emu
    m = Emu("quectel-fcm242d", world=world(), pacing=True)
    m.start()
    try:
        m.drain(0.1)
        join(m)
        m.cmd(f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,2', final=rb"CONNECT\r\n")
        tcp_sink.wait_connection()
        data = os.urandom(12000)                                   # ~1 s at 115200 baud
        t0 = time.monotonic()
        tcp_sink.push(data)
        assert m.read_exactly(len(data), timeout=10) == data
        assert time.monotonic() - t0 >= len(data) * 10 / 115200 * 0.8   # really paced
    finally:
        m.stop()


def test_incoming_full_when_every_id_is_taken(e, tcp_echo):
    port = free_port()
    cmd_ok(e, f'AT+QIOPEN=0,"TCP LISTENER","127.0.0.1",0,{port},0')
    urc(e, r"\+QIOPEN: 0,0\r\n")
    seen = b""
    for cid in range(1, 12):
        seen += cmd_ok(e, f'AT+QIOPEN={cid},"TCP","127.0.0.1",{tcp_echo.port},0,0')
    deadline = time.monotonic() + 5
    while seen.count(b",0\r\n") < 11 and time.monotonic() < deadline:
        seen += e.drain(0.1)
    assert sorted(int(x) for x in re.findall(rb"\+QIOPEN: (\d+),0\r\n", seen)) == list(range(1, 12))
    c = socket.socket()
    c.settimeout(3)
    try:
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            c.connect(("127.0.0.1", port))             # the RST may even beat connect()'s return
            if c.recv(10) == b"":
                raise AssertionError("closed with FIN, expected a reset")
        assert e.read_until(rb"incoming full\"\r\n") == b'\r\n+QIURC: "incoming full"\r\n'
        assert e.cmd(f'AT+QIOPEN=3,"TCP","127.0.0.1",{tcp_echo.port},0,0') == b"\r\nERROR\r\n"   # 561
    finally:
        c.close()


def test_link_loss_resets_sockets(e, tcp_sink):
    open_tcp(e, 0, tcp_sink.port)
    conn = tcp_sink.wait_connection()
    tcp_sink.push(b"unread")
    urc(e, r'"recv",0\r\n')
    e.cmd(f'AT+QIOPEN=1,"TCP","127.0.0.1",{tcp_sink.port},0,2', final=rb"CONNECT\r\n")
    tcp_sink.wait_connection(2)
    e.sync(lambda: e.world.access_points.clear())                  # the AP goes away
    assert e.read_until(b"NO CARRIER\r\n", timeout=3) == b"\r\nNO CARRIER\r\n"
    out = e.read_until(rb'"closed",0\r\n', timeout=3)
    assert out == b'\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n\r\n+QIURC: "closed",0\r\n'
    tcp_sink.wait_until(lambda: conn.closed and conn.reset, 3, "reset at the peer")
    assert b",4,0,0," in e.cmd("AT+QISTATE=0") and b",4,1,2," in e.cmd("AT+QISTATE=1")
    assert e.cmd("AT+QIRD=0") == b"\r\n+QIRD: 6\r\nunread\r\nOK\r\n"
    cmd_ok(e, "AT+QICLOSE=0")
    cmd_ok(e, "AT+QICLOSE=1")


def test_udp_transparent_ends_on_link_loss(e, udp_echo):
    e.cmd(f'AT+QIOPEN=2,"UDP","127.0.0.1",{udp_echo.port},0,2', final=rb"CONNECT\r\n")
    e.write(b"x")
    assert e.read_exactly(1, timeout=3) == b"x"
    e.sync(lambda: e.module.profile.world_changed({"change": "deauth", "ssid": None}))
    assert e.read_until(b"NO CARRIER\r\n", timeout=3) == b"\r\nNO CARRIER\r\n"
    assert e.read_until(rb"WLAN_DISCONNECTED\r\n") == b"\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n"
    assert b",4,2,2," in e.cmd("AT+QISTATE=2")


def test_udp_datagram_refused_by_the_host_is_558(e, udp_peer):
    port = free_port(socket.SOCK_DGRAM)
    open_service(e, 3, port, 0)
    # udp/broadcast is 0 (no SO_BROADCAST): the kernel refuses a datagram to the broadcast address,
    # nothing leaves the host, and the module must not say SEND OK
    assert send(e, 'AT+QISEND=3,5,"255.255.255.255",9', b"bcast") == b"\r\nSEND FAIL\r\n"
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 558,Socket write failed\r\n\r\nOK\r\n"
    assert e.cmd("AT+QISEND=3,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"           # not counted as sent
    pp = udp_peer.getsockname()[1]
    assert send(e, f'AT+QISEND=3,4,"127.0.0.1",{pp}', b"next") == b"\r\nSEND OK\r\n"   # still usable
    assert udp_peer.recvfrom(100) == (b"next", ("127.0.0.1", port))
    assert e.cmd("AT+QISEND=3,0") == b"\r\n+QISEND: 4,4,0\r\n\r\nOK\r\n"
    cmd_ok(e, "AT+QICLOSE=3")


def test_listen_failure_other_than_a_taken_port_is_557():
    m = emu(world(listen_host="192.0.2.1"))          # TEST-NET-1: an address this host does not have
    try:
        join(m)
        port = free_port()
        cmd_ok(m, f'AT+QIOPEN=5,"TCP LISTENER","127.0.0.1",0,{port},0')
        assert urc(m, r"\+QIOPEN: 5,\d+\r\n").group(0) == b"+QIOPEN: 5,557\r\n"
        assert m.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 557,Socket listen failed\r\n\r\nOK\r\n"
        assert m.cmd("AT+QISTATE") == b"\r\nOK\r\n"                                    # the ID is free again
    finally:
        m.stop()


def test_full_send_buffer_answers_send_fail_551_and_loses_nothing(e, tcp_sink):
    open_tcp(e, 0, tcp_sink.port)
    conn = tcp_sink.wait_connection()
    e.sync(lambda: e.module.faults.inject("bandwidth", bps=1, direction="tx", port=tcp_sink.port))   # a stuck link
    block = os.urandom(1460)
    accepted = 0
    for _ in range(250):
        e.write(b"AT+QISEND=0,1460\r")
        out = e.read_until(rb"> |SEND FAIL\r\n")
        if out.endswith(b"SEND FAIL\r\n"):
            break
        e.write(block)
        assert e.read_until(rb"SEND OK\r\n|SEND FAIL\r\n|ERROR\r\n") == b"\r\nSEND OK\r\n"
        accepted += 1
    assert out == b"\r\nSEND FAIL\r\n"                                  # no prompt: the data is not taken
    assert 256 * 1024 <= accepted * 1460 <= 256 * 1024 + 1460
    assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 551,Operation blocked\r\n\r\nOK\r\n"
    n = accepted * 1460                                                 # all of it queued, none of the refused
    assert e.cmd("AT+QISEND=0,0") == f"\r\n+QISEND: {n},0,{n}\r\n\r\nOK\r\n".encode()
    assert conn.data == b""                                             # the link really did not move
    e.sync(lambda: e.module.faults.clear())
