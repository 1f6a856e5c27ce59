"""microchip-winc sockets, binary mode, TLS, DNS and ping over a real pty against real local peers."""
from __future__ import annotations

import os
import re
import socket
import time

import pytest

from peers.certs import der
from peers.servers import MulticastSender
from test_microchip_util import WORLD, Winc

NET_WORLD = dict(WORLD, network={"hosts": {"www.example.com": "127.0.0.1", "v6.example.com": "::1",
                                            "localhost": "127.0.0.1"}})


@pytest.fixture
def e():
    with Winc(world=NET_WORLD) as emu:
        emu.join()
        yield emu


def sockind(e, sid=None) -> re.Match:
    return e.urc(rb'\+SOCKIND:(\d+),"([\d.]+)",(\d+),"([\d.]+)",(\d+)\r\n')


def open_tcp(e, port) -> int:
    out = e.cmd("AT+SOCKO=2")
    sid = int(re.match(rb"\+SOCKO:(\d+)\r\nOK\r\n", out).group(1))
    assert e.cmd(f'AT+SOCKBR={sid},"127.0.0.1",{port}') == b"OK\r\n"
    m = sockind(e)
    assert int(m.group(1)) == sid and int(m.group(5)) == port
    return sid


def read_all(e, sid, n, mode=2, chunk=1500) -> bytes:
    """Read n bytes from a TCP socket, waiting for +SOCKRXT as needed."""
    got = bytearray()
    while len(got) < n:
        e.read_until(rf"\+SOCKRXT:{sid},\d+\r\n".encode(), timeout=10)
        while len(got) < n:
            e.write(f"AT+SOCKRD={sid},{mode},{chunk}\r".encode())
            hdr = e.read_until(rf"\+SOCKRD:{sid},\d+,#".encode())
            k = int(hdr.rsplit(b",", 2)[-2])
            got += e.read_exactly(k)
            assert e.read_exactly(6) == b"\r\nOK\r\n"
            if k < chunk:
                break
    return bytes(got)


def test_no_link_no_sockets():
    with Winc(world=NET_WORLD) as e:
        assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd('AT+SOCKBR=1,"127.0.0.1",9') == b"ERROR:7\r\n"
        assert e.cmd('AT+DNSRESOLV=1,"www.example.com"') == b"ERROR:7\r\n"
        assert e.cmd('AT+PING="127.0.0.1"') == b"ERROR:7\r\n"
        # a running soft-AP is a link too
        e.ok("AT+WAP=1")
        assert e.cmd('AT+DNSRESOLV=1,"www.example.com"') == b"OK\r\n"
        assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b'+DNSRESOLV:1,"www.example.com","127.0.0.1"\r\n'


def test_socket_table(e):
    # E16
    assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
    assert e.cmd("AT+SOCKO=1") == b"+SOCKO:2\r\nOK\r\n"
    assert e.cmd("AT+SOCKBL=1,0") == b"OK\r\n"
    port = e.sync(lambda: e.prof.socks[1].listener.port)
    assert e.cmd("AT+SOCKLST") == f'+SOCKLST:1,2,"",0,{port}\r\n+SOCKLST:2,1,"",0,0\r\nOK\r\n'.encode()
    assert e.cmd("AT+SOCKLST=2") == b'+SOCKLST:2,1,"",0,0\r\nOK\r\n'
    assert e.cmd("AT+SOCKLST=7") == b"ERROR:4\r\n"
    assert e.cmd("AT+SOCKCL=1") == b"OK\r\n"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert e.cmd("AT+SOCKCL=1") == b"ERROR:4\r\n"
    for i in range(9):
        assert e.cmd("AT+SOCKO=1").startswith(b"+SOCKO:")
    assert e.cmd("AT+SOCKO=1") == b"ERROR:5\r\n"
    assert e.cmd('AT+SOCKTLS=2,1') == b"ERROR:4\r\n"   # UDP
    assert e.cmd('AT+SOCKBM=2,"127.0.0.1",5000') == b"ERROR:2\r\n"


def test_tcp_client_text_hex_and_binary(e, tcp_echo):
    sid = open_tcp(e, tcp_echo.port)
    assert e.cmd(f'AT+SOCKLST={sid}').startswith(f'+SOCKLST:{sid},2,"127.0.0.1",{tcp_echo.port},'.encode())
    # E23 terminal mode (ASCII and hex)
    assert e.cmd(f'AT+SOCKWR={sid},7,"hello2u"') == b"OK\r\n"
    assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == f"+SOCKRXT:{sid},7\r\n".encode()
    assert e.cmd(f"AT+SOCKRD={sid},1,999") == f'+SOCKRD:{sid},7,"hello2u"\r\nOK\r\n'.encode()
    assert e.cmd(f"AT+SOCKWR={sid},7,[68656c6c663275]") == b"OK\r\n"
    e.read_until(rb"\+SOCKRXT:.*?\r\n")
    assert e.cmd(f"AT+SOCKRD={sid},1,999") == f'+SOCKRD:{sid},7,"hellf2u"\r\nOK\r\n'.encode()
    # non-ASCII comes back as hex (E25)
    assert e.cmd(f"AT+SOCKWR={sid},8,[466F6FC2A9626172]") == b"OK\r\n"
    e.read_until(rb"\+SOCKRXT:.*?\r\n")
    assert e.cmd(f"AT+SOCKRD={sid},1,999") == f"+SOCKRD:{sid},8,[466F6FC2A9626172]\r\nOK\r\n".encode()
    # wrong inline length
    assert e.cmd(f'AT+SOCKWR={sid},3,"hello"') == b"ERROR:8\r\n"
    assert e.cmd(f'AT+SOCKWR={sid},1501,"x"') == b"ERROR:2\r\n"
    # binary, known length: all 256 byte values (CR, LF, '#', '+' included)
    payload = bytes(range(256))
    e.write(f"AT+SOCKWR={sid},256\r".encode())
    e.expect_nothing(0.1)
    e.write(b"#" + payload)
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    assert read_all(e, sid, 256) == payload
    # binary, known length, with +++ inside (data, not an escape)
    e.write(f"AT+SOCKWR={sid},6\r#ab+++c".encode())
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    assert read_all(e, sid, 6) == b"ab+++c"
    # E23 non-terminal mode, unknown length
    e.write(f"AT+SOCKWR={sid},0\r".encode())
    e.write(b"#One fine day+++")
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    assert read_all(e, sid, 12) == b"One fine day"
    # partial reads: the rest stays, and is announced again
    assert e.cmd(f'AT+SOCKWR={sid},10,"0123456789"') == b"OK\r\n"
    e.read_until(re.escape(f"+SOCKRXT:{sid},10\r\n".encode()))
    assert e.cmd(f"AT+SOCKRD={sid},1,4") == f'+SOCKRD:{sid},4,"0123"\r\nOK\r\n'.encode()
    assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == f"+SOCKRXT:{sid},6\r\n".encode()
    assert e.cmd(f"AT+SOCKRD={sid},2,100") == f"+SOCKRD:{sid},6,#456789\r\nOK\r\n".encode()
    assert e.cmd(f"AT+SOCKRD={sid},1,100") == f'+SOCKRD:{sid},0,""\r\nOK\r\n'.encode()
    assert e.cmd(f"AT+SOCKCL={sid}") == b"OK\r\n"
    assert e.cmd(f'AT+SOCKWR={sid},1,"x"') == b"ERROR:4\r\n"


def test_tcp_1mb_transfer(e, tcp_echo):
    sid = open_tcp(e, tcp_echo.port)
    data = os.urandom(1 << 20)
    got = bytearray()
    pos = 0
    while pos < len(data) or len(got) < len(data):
        if pos < len(data):
            chunk = data[pos:pos + 1500]
            e.write(f"AT+SOCKWR={sid},{len(chunk)}\r#".encode() + chunk)
            e.read_until(rb"(?:\A|\n)OK\r\n")
            pos += len(chunk)
        if len(got) < len(data) and (b"+SOCKRXT" in e.buf or pos >= len(data)):
            e.write(f"AT+SOCKRD={sid},2,1500\r".encode())
            hdr = e.read_until(rf"\+SOCKRD:{sid},\d+,#".encode(), timeout=10)
            k = int(hdr.rsplit(b",", 2)[-2])
            got += e.read_exactly(k)
            assert e.read_exactly(6) == b"\r\nOK\r\n"
            if k == 0:
                time.sleep(0.01)
    assert len(got) == len(data)
    assert bytes(got) == data
    assert tcp_echo.wait_received(len(data)) >= len(data)


def test_tcp_refused_and_remote_close(e, tcp_sink):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
    assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{dead}') == b"OK\r\n"
    assert e.read_until(rb"\+SOCK\w+:.*?\r\n").startswith(b"+SOCKERR:1,3,")
    # retry on a live peer, then the peer sends and closes
    sid = 1
    assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{tcp_sink.port}') == b"OK\r\n"
    sockind(e)
    assert e.cmd('AT+SOCKWR=1,5,"hello"') == b"OK\r\n"
    assert tcp_sink.wait_bytes(5) == b"hello"
    tcp_sink.push(b"bye!")
    assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == b"+SOCKRXT:1,4\r\n"
    tcp_sink.close_client()
    assert e.read_until(rb"\+SOCKCL:.*?\r\n") == b"+SOCKCL:1\r\n"
    # unread data survives the remote close
    assert e.cmd(f"AT+SOCKRD={sid},1,10") == b'+SOCKRD:1,4,"bye!"\r\nOK\r\n'
    assert e.cmd('AT+SOCKWR=1,1,"x"') == b"ERROR:3\r\n"
    assert e.cmd("AT+SOCKCL=1") == b"OK\r\n"


def test_refused_code(e):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    e.cmd("AT+SOCKO=2")
    assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{dead}') == b"OK\r\n"
    line = e.read_until(rb"\+SOCK\w+:.*?\r\n")
    assert line.startswith(b"+SOCKERR:1,3,")


def test_tcp_listen_accept(e):
    # E18: listening socket; the accepted connection gets a NEW id
    e.cmd("AT+SOCKO=2")
    assert e.cmd("AT+SOCKBL=1,0") == b"OK\r\n"
    port = e.sync(lambda: e.prof.socks[1].listener.port)
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        m = sockind(e)
        assert m.group(1) == b"2" and int(m.group(3)) == port and m.group(4) == b"127.0.0.1"
        assert int(m.group(5)) == c.getsockname()[1]
        c.sendall(b"ping")
        assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == b"+SOCKRXT:2,4\r\n"
        assert e.cmd("AT+SOCKRD=2,1,10") == b'+SOCKRD:2,4,"ping"\r\nOK\r\n'
        assert e.cmd('AT+SOCKWR=2,4,"pong"') == b"OK\r\n"
        assert c.recv(10) == b"pong"
        c2 = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert sockind(e).group(1) == b"3"
        c2.close()
        assert e.read_until(rb"\+SOCKCL:.*?\r\n") == b"+SOCKCL:3\r\n"
    finally:
        c.close()
    assert e.read_until(rb"\+SOCKCL:.*?\r\n") == b"+SOCKCL:2\r\n"
    assert e.cmd("AT+SOCKBL=1,0") == b"ERROR:3\r\n"


def test_udp_datagram_rules(e, udp_echo):
    # UDP bound to a local port: +SOCKRXU one datagram at a time, unread remainder discarded
    assert e.cmd("AT+SOCKO=1") == b"+SOCKO:1\r\nOK\r\n"
    assert e.cmd("AT+SOCKBL=1,0") == b"OK\r\n"
    port = e.sync(lambda: e.prof.socks[1].udp.port)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    up = u.getsockname()[1]
    try:
        u.sendto(b"first-datagram", ("127.0.0.1", port))
        u.sendto(b"second", ("127.0.0.1", port))
        u.sendto(bytes(range(256)), ("127.0.0.1", port))
        assert e.read_until(rb"\+SOCKRXU:.*?\r\n") == f'+SOCKRXU:1,"127.0.0.1",{up},14\r\n'.encode()
        e.expect_nothing(0.2)  # only one +SOCKRXU until it is read
        assert e.cmd("AT+SOCKRD=1,1,5") == b'+SOCKRD:1,5,"first"\r\nOK\r\n'
        assert e.read_until(rb"\+SOCKRXU:.*?\r\n") == f'+SOCKRXU:1,"127.0.0.1",{up},6\r\n'.encode()
        assert e.cmd("AT+SOCKRD=1,1,100") == b'+SOCKRD:1,6,"second"\r\nOK\r\n'
        assert e.read_until(rb"\+SOCKRXU:.*?\r\n") == f'+SOCKRXU:1,"127.0.0.1",{up},256\r\n'.encode()
        e.write(b"AT+SOCKRD=1,2,999\r")
        assert e.read_until(rb"\+SOCKRD:1,256,#") == b"+SOCKRD:1,256,#"
        assert e.read_exactly(256) == bytes(range(256))
        assert e.read_exactly(6) == b"\r\nOK\r\n"
        e.expect_nothing(0.2)
        # reply to the sender: SOCKWRTO (E24), also with the manual's WRT0 spelling
        assert e.cmd(f'AT+SOCKWRTO=1,"127.0.0.1",{up},7,"hello2u"') == b"OK\r\n"
        assert u.recvfrom(100)[0] == b"hello2u"
        assert e.cmd(f'AT+SOCKWRT0=1,"127.0.0.1",{up},7,[68656c6c6f3275]') == b"OK\r\n"
        assert u.recvfrom(100)[0] == b"hello2u"
        e.write(f'AT+SOCKWRTO=1,"127.0.0.1",{up},0\r#One fine day+++'.encode())
        assert e.read_until(rb"OK\r\n") == b"OK\r\n"
        assert u.recvfrom(100)[0] == b"One fine day"
        e.write(f'AT+SOCKWRTO=1,"127.0.0.1",{up},5\r#hello'.encode())
        assert e.read_until(rb"OK\r\n") == b"OK\r\n"
        assert u.recvfrom(100)[0] == b"hello"
        e.write(f'AT+SOCKWRTO=1,"127.0.0.1",{up},256\r#'.encode() + bytes(range(256)))
        assert e.read_until(rb"OK\r\n") == b"OK\r\n"
        assert u.recvfrom(1000)[0] == bytes(range(256))
        # no destination yet for SOCKWR on UDP
        assert e.cmd("AT+SOCKO=1") == b"+SOCKO:2\r\nOK\r\n"
        assert e.cmd('AT+SOCKWR=2,1,"x"') == b"ERROR:3\r\n"
        assert e.cmd('AT+SOCKWRTO=3,"127.0.0.1",9,1,"x"') == b"ERROR:4\r\n"
        # E19 (UDP): SOCKBR sets the default destination; the echo comes back
        assert e.cmd(f'AT+SOCKBR=2,"127.0.0.1",{udp_echo.port}') == b"OK\r\n"
        assert e.cmd('AT+SOCKWR=2,4,"echo"') == b"OK\r\n"
        m = e.urc(rb'\+SOCKRXU:2,"127.0.0.1",(\d+),4\r\n')
        assert int(m.group(1)) == udp_echo.port
        assert e.cmd("AT+SOCKRD=2,1,10") == b'+SOCKRD:2,4,"echo"\r\nOK\r\n'
        # a UDP datagram longer than 1500 bytes in +++ mode is refused
        e.write(b"AT+SOCKWR=2,0\r#" + b"x" * 1501 + b"+++")
        assert e.read_until(rb"ERROR:\d+\r\n") == b"ERROR:8\r\n"
        assert e.cmd("AT") == b"OK\r\n"
    finally:
        u.close()


def test_multicast_membership(e):
    group = "239.255.77.1"
    assert e.cmd("AT+SOCKO=1") == b"+SOCKO:1\r\nOK\r\n"
    probe = socket.socket()
    probe.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert e.cmd(f'AT+SOCKBM=1,"{group}",{port}') == b"OK\r\n"
    assert e.cmd(f'AT+SOCKBM=1,"10.0.0.1",{port}') == b"ERROR:2\r\n"
    with MulticastSender(group, port, iface="127.0.0.1", ttl=0) as tx:
        tx.send(b"to-the-group")
        m = e.urc(rb'\+SOCKRXU:1,"127.0.0.1",(\d+),12\r\n')
        assert int(m.group(1)) == tx.port
    assert e.cmd("AT+SOCKRD=1,1,100") == b'+SOCKRD:1,12,"to-the-group"\r\nOK\r\n'


def load(e, name: str, data: bytes) -> None:
    e.write(f'AT+LOADCERT={len(data)},"{name}"\r#'.encode() + data)
    assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:0\r\nOK\r\n"


def test_socktls_upgrade(pki, tls_echo_mtls, e):
    load(e, "ca", pki.ca_cert.read_bytes())
    load(e, "client", der(pki.client_cert))
    load(e, "client_key", pki.client_key.read_bytes())
    assert e.cmd("AT+TLSC=1") == b'+TLSC:1,""\r\n+TLSC:2,""\r\n+TLSC:3,""\r\n+TLSC:4,""\r\n+TLSC:5,""\r\nOK\r\n'
    e.oks('AT+TLSC=1,1,"ca"', 'AT+TLSC=1,2,"client"', 'AT+TLSC=1,3,"client_key"', 'AT+TLSC=1,5,"localhost"')
    assert e.cmd("AT+TLSC=1,5") == b'+TLSC:5,"localhost"\r\nOK\r\n'
    assert e.cmd("AT+TLSC=9,1") == b"ERROR:2\r\n"
    port = tls_echo_mtls.address[1]
    sid = open_tcp(e, port)
    # E21 / appendix step 3
    assert e.cmd(f"AT+SOCKTLS={sid}, 1") == b"OK\r\n"
    assert e.read_until(rb"\+SOCK\w+:.*?\r\n", timeout=10) == f"+SOCKTLS:{sid}\r\n".encode()
    assert e.cmd(f"AT+SOCKTLS={sid},1") == b"ERROR:3\r\n"
    assert e.cmd(f'AT+SOCKWR={sid},9,"over tls!"') == b"OK\r\n"
    e.read_until(rb"\+SOCKRXT:.*?\r\n")
    assert e.cmd(f"AT+SOCKRD={sid},1,100") == f'+SOCKRD:{sid},9,"over tls!"\r\nOK\r\n'.encode()
    sess = tls_echo_mtls.wait_sessions(1)[0]
    assert sess.sni == "localhost"
    assert sess.client_cert_der == der(pki.client_cert)


def test_socktls_verification_failure(pki, tls_echo, e):
    load(e, "other_ca", pki.other_ca_cert.read_bytes())
    e.ok('AT+TLSC=2,1,"other_ca"')
    sid = open_tcp(e, tls_echo.address[1])
    assert e.cmd(f"AT+SOCKTLS={sid},2") == b"OK\r\n"
    line = e.read_until(rb"\+SOCK\w+:.*?\r\n", timeout=10)
    assert line.startswith(f"+SOCKERR:{sid},8,".encode()), line
    e.expect_nothing(0.2)  # no +SOCKCL for the failed upgrade
    assert e.cmd(f'AT+SOCKWR={sid},1,"x"') == b"ERROR:3\r\n"
    # a missing certificate name in the configuration
    e.ok('AT+TLSC=3,1,"nope"')
    sid2 = open_tcp(e, tls_echo.address[1])
    assert e.cmd(f"AT+SOCKTLS={sid2},3") == b"ERROR:9\r\n"


def test_dns(e):
    # E26 adapted (the world maps www.example.com to 127.0.0.1)
    assert e.cmd('AT+DNSRESOLV=1, "www.example.com"') == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b'+DNSRESOLV:1,"www.example.com","127.0.0.1"\r\n'
    assert e.cmd('AT+DNSRESOLV=2,"v6.example.com"') == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b'+DNSRESOLV:2,"v6.example.com","::1"\r\n'
    assert e.cmd('AT+DNSRESOLV=2,"www.example.com"') == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b"+DNSERROR:1\r\n"
    e.sync(lambda: setattr(e.module.resolver, "fault", "fail"))
    assert e.cmd('AT+DNSRESOLV=1,"www.example.com"') == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b"+DNSERROR:1\r\n"
    assert e.cmd('AT+DNSRESOLV=3,"x"') == b"ERROR:2\r\n"
    # a [hex] name is the bytes written: UTF-8 "caf\u00e9.example" (a world override) resolves
    e.sync(lambda: setattr(e.module.resolver, "fault", None))
    e.sync(lambda: e.module.resolver.hosts.__setitem__("caf\u00e9.example", "127.0.0.1"))
    hexed = "caf\u00e9.example".encode().hex().upper()
    assert e.cmd(f"AT+DNSRESOLV=1,[{hexed}]") == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n") == f'+DNSRESOLV:1,[{hexed}],"127.0.0.1"\r\n'.encode()


def test_ping(e):
    # E27 adapted: one echo to the loopback host
    assert e.cmd('AT+PING="www.example.com"') == b"OK\r\n"
    m = e.urc(rb'\+PING:"127.0.0.1",(-?\d+)\r\n', timeout=6)
    assert 0 <= int(m.group(1)) < 1000
    assert e.cmd('AT+PING="::1",2') == b"OK\r\n"
    m = e.urc(rb'\+PING:"::1",(-?\d+)\r\n', timeout=6)
    assert 0 <= int(m.group(1)) < 1000
    e.sync(lambda: setattr(e.module.resolver, "fault", "fail"))
    assert e.cmd('AT+PING="www.example.com"') == b"OK\r\n"
    assert e.read_until(rb"\+\w+:.*?\r\n") == b"+DNSERROR:1\r\n"


def test_reboot_drops_everything_quietly(tcp_sink, e):
    sid = open_tcp(e, tcp_sink.port)
    e.ok("AT+SOCKO=1")
    e.sync(lambda: e.module.faults.inject("reboot"))
    time.sleep(0.3)
    assert e.drain(0.2) == b""                    # no AECs from the old instance
    assert e.cmd("ATE0") == b"ATE0" + e.term + b"OK\r\n"       # echo back on after reset
    assert e.cmd("AT+SOCKLST") == b"OK\r\n"
    assert e.cmd("AT+WSTA") == b"+WSTA:0,0\r\nOK\r\n"
    tcp_sink.wait_eof()                           # the peer saw the connection go
    assert sid == 1


def test_names_and_socklst_example(tcp_echo, udp_echo, e):
    # E22 adapted: a listener, a TCP connection (by name, through the world's DNS) and a UDP peer
    e.ok("AT+SOCKO=2")
    e.ok("AT+SOCKBL=1,0")
    lport = e.sync(lambda: e.prof.socks[1].listener.port)
    e.ok("AT+SOCKO=2")
    assert e.cmd(f'AT+SOCKBR=2,"www.example.com",{tcp_echo.port}') == b"OK\r\n"
    m = sockind(e)
    assert m.group(1) == b"2" and m.group(4) == b"127.0.0.1"
    e.ok("AT+SOCKO=1")
    e.ok(f'AT+SOCKBR=3,"www.example.com",{udp_echo.port}')
    uport = e.sync(lambda: e.prof.socks[3].udp.port)
    assert e.cmd("AT+SOCKLST") == (f'+SOCKLST:1,2,"",0,{lport}\r\n'
                                   f'+SOCKLST:2,2,"127.0.0.1",{tcp_echo.port},{m.group(3).decode()}\r\n'
                                   f'+SOCKLST:3,1,"127.0.0.1",{udp_echo.port},{uport}\r\nOK\r\n').encode()
    e.sync(lambda: setattr(e.module.resolver, "fault", "fail"))
    e.ok("AT+SOCKO=2")
    assert e.cmd('AT+SOCKBR=4,"www.example.com",80') == b"OK\r\n"
    assert e.read_until(rb"\+SOCK\w+:.*?\r\n").startswith(b"+SOCKERR:4,1,")
