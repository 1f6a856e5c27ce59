"""TI SimpleLink sockets over a real pty against real loopback TCP/UDP/TLS peers."""
from __future__ import annotations

import base64
import re
import socket
import time

import pytest

from test_ti_common import ti  # noqa: F401  (ti is a fixture)

PAYLOAD = b'a,b\r\nOK\r\n"q"\x00\xff,\n' + bytes(range(32))   # commas, quotes, CR, LF, NUL, "OK" inside


def sock(e, proto="TCP", typ="STREAM", dom="INET") -> int:
    return int(re.search(rb"\+socket:(\d+)", e.ok(f"AT+Socket={dom},{typ},{proto}")).group(1))


def recv(e, sd, n, fmt=0, timeout=10.0) -> bytes:
    e.ok(f"AT+Recv={sd},{fmt},{n}")
    head = e.read_until(rb"\+recv:\d+,\d,\d+,", timeout)
    m = re.search(rb"\+recv:(\d+),(\d),(\d+),$", head)
    assert int(m.group(1)) == sd and int(m.group(2)) == fmt
    n = int(m.group(3))
    if fmt == 0:
        data = e.read_exactly(n)
        assert e.read_until(rb"\r\nOK\r\n") == b"\r\nOK\r\n"
        return data
    rest = e.read_until(rb"\r\nOK\r\n")
    assert len(rest[:-6]) == n                     # TI prints the number of Base64 characters
    data = base64.b64decode(rest[:-6])
    return data


def test_tcp_echo_raw_and_base64(ti, tcp_echo):
    sd = sock(ti)
    assert ti.ok(f"AT+Connect={sd},INET,{tcp_echo.port},127.0.0.1") == b""
    assert ti.later(rb"\+connect:") == f"+connect:{tcp_echo.port},127.0.0.1\r\nOK\r\n".encode()
    # raw binary data field: CR, LF, commas, quotes and "OK" inside are data
    ti.write(f"AT+Send={sd},0,{len(PAYLOAD)},".encode() + PAYLOAD + b"\r\n")
    assert ti.read_until(rb"OK\r\n") == b"OK\r\n"
    tcp_echo.wait_received(len(PAYLOAD))
    got = b""
    while len(got) < len(PAYLOAD):
        got += recv(ti, sd, 1000)
    assert got == PAYLOAD
    # Base64 send and receive
    b = base64.b64encode(b"hello base64").decode()
    ti.ok(f"AT+Send={sd},1,{len(b)},{b}")                 # length: Base64 characters (TI)
    assert ti.err(f"AT+Send={sd},1,12,{b}") == b"parse parameters,-4"   # decoded size is not the length
    assert recv(ti, sd, 100, fmt=1) == b"hello base64"
    # length mismatch and bad base64 are refused without sending
    assert ti.err(f"AT+Send={sd},1,5,{b}") == b"parse parameters,-4"
    assert ti.err(f"AT+Send={sd},1,4,!!!!") == b"parse parameters,-4"
    assert ti.err(f"AT+Send={sd},0,3,abcdef") == b"parse parameters,-4"   # more data than <length>
    ti.ok(f"AT+Send={sd},0,3,a\rc")                                      # exactly 3 raw bytes
    assert recv(ti, sd, 10) == b"a\rc"
    assert ti.ok(f"AT+Close={sd}") == f"+close:{sd}\r\n".encode()


def test_connect_refused_and_not_connected(ti):
    sd = sock(ti)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    ti.ok(f"AT+Connect={sd},INET,{port},127.0.0.1")
    assert ti.read_until(rb"ERROR: [^\r]*\r\n") == b"ERROR: process command,-111\r\n"
    assert ti.err(f"AT+Send={sd},0,1,x") == b"process command,-107"
    assert ti.err(f"AT+Recv={sd},0,10") == b"process command,-107"
    assert ti.err("AT+Connect=9,INET,80,127.0.0.1") == b"process command,-9"
    assert ti.err(f"AT+Connect={sd},INET,80,300.1.1.1") == b"parse parameters,-4"
    assert ti.err("AT+Socket=RF,RAW,RAW") == b"process command,-93"


def test_udp_connect_send_recv_and_sendto_recvfrom(ti, udp_echo):
    sd = sock(ti, "UDP", "DGRAM")
    assert ti.err(f"AT+Send={sd},0,3,abc") == b"process command,-39"
    ti.write(f"AT+SendTo={sd},INET,{udp_echo.port},127.0.0.1,0,{len(PAYLOAD)},".encode() + PAYLOAD + b"\r\n")
    assert ti.read_until(rb"OK\r\n") == b"OK\r\n"
    ti.ok(f"AT+RecvFrom={sd},INET,{udp_echo.port},127.0.0.1,0,1000")
    head = ti.read_until(rb"\+recvfrom:\d+,0,\d+,")
    n = int(re.search(rb",(\d+),$", head).group(1))
    assert ti.read_exactly(n) == PAYLOAD
    ti.read_until(rb"\r\nOK\r\n")
    # connected UDP: AT+Send; a datagram longer than the buffer is truncated
    sd2 = sock(ti, "UDP", "DGRAM")
    ti.ok(f"AT+Connect={sd2},INET,{udp_echo.port},127.0.0.1")
    ti.later(rb"\+connect:")
    ti.ok(f"AT+Send={sd2},1,16,{base64.b64encode(b'0123456789').decode()}")
    assert recv(ti, sd2, 4) == b"0123"
    ti.ok(f"AT+Send={sd2},0,2,ab")
    assert recv(ti, sd2, 4) == b"ab"                             # the rest of the first one was dropped
    # RX_NO_IP_BOUNDARY: the unread end of a datagram is kept for the next receive
    ti.ok(f"AT+SetSockOpt={sd2},SOCKET,RX_NO_IP_BOUNDARY,1,")
    ti.ok(f"AT+Send={sd2},0,10,0123456789")
    assert recv(ti, sd2, 4) == b"0123"
    ti.ok(f"AT+Select={sd2 + 1},{sd2},0,0")
    assert ti.later(rb"\+select:") == f"+select:{sd2}\r\nOK\r\n".encode()
    assert recv(ti, sd2, 4) == b"4567" and recv(ti, sd2, 100) == b"89"


def test_udp_unreachable_gives_tx_failed_event(ti):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    sd = sock(ti, "UDP", "DGRAM")
    ti.ok(f"AT+Connect={sd},INET,{port},127.0.0.1")
    ti.later(rb"\+connect:")
    ti.ok(f"AT+Send={sd},0,4,ping")
    ti.read_until(rb"\+eventsock:tx_failed,%d,-111\r\n" % sd)
    assert ti.ok("AT+Get=Status,BSD") == b"+get:tx_failed\r\n"
    assert ti.ok("AT+Get=Status,BSD") == b"+get:\r\n"


def test_bind_listen_accept_select(ti):
    lsd = sock(ti)
    ti.ok(f"AT+Bind={lsd},INET,0,127.0.0.1")
    ti.ok(f"AT+Listen={lsd},2")
    port = ti.sync(lambda: ti.module.profile.sockets[lsd].listener.port)
    # select with a timeout and nothing ready: empty list
    ti.ok(f"AT+Select={lsd + 1},{lsd},0,100000")
    assert ti.later(rb"\+select:") == b"+select:\r\nOK\r\n"
    ti.ok(f"AT+Accept={lsd},INET")
    c = socket.create_connection(("127.0.0.1", port))
    out = ti.later(rb"\+accept:")
    m = re.search(rb"\+accept:(\d+),inet,(\d+),127\.0\.0\.1\r\n", out)
    nsd = int(m.group(1))
    assert int(m.group(2)) == c.getsockname()[1]
    ti.ok(f"AT+Select=16,[{lsd}|{nsd}],2,0")
    c.sendall(b"from host, with comma")
    assert ti.later(rb"\+select:") == f"+select:{nsd}\r\nOK\r\n".encode()
    assert recv(ti, nsd, 100) == b"from host, with comma"
    ti.ok(f"AT+Send={nsd},0,5,reply")
    assert c.recv(100) == b"reply"
    c.close()
    assert recv(ti, nsd, 100) == b""          # peer closed: zero-length receive
    assert ti.err(f"AT+Select=16,{nsd} 12,0,0") == b"process command,-9"
    assert ti.err(f"AT+Select={nsd},{nsd},0,0") == b"parse parameters,-4"


def test_rcvtimeo_nonblocking_keepalive_options(ti, tcp_sink):
    sd = sock(ti)
    ti.ok(f"AT+Connect={sd},INET,{tcp_sink.port},127.0.0.1")
    ti.later(rb"\+connect:")
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,RCVTIMEO,0,200000")
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,RCVTIMEO") == b"+getsockopt:0,200000\r\n"
    t0 = time.monotonic()
    ti.ok(f"AT+Recv={sd},0,10")
    assert ti.read_until(rb"ERROR: [^\r]*\r\n") == b"ERROR: process command,-11\r\n"
    assert 0.15 < time.monotonic() - t0 < 2
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,NONBLOCKING,1")
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,NONBLOCKING") == b"+getsockopt:1\r\n"
    ti.ok(f"AT+Recv={sd},0,10")
    assert ti.read_until(rb"ERROR: [^\r]*\r\n", 1) == b"ERROR: process command,-11\r\n"
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,KEEPALIVE,0")
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,KEEPALIVE") == b"+getsockopt:0\r\n"
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,KEEPALIVE,1")
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,KEEPALIVETIME,77")
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,KEEPALIVE") == b"+getsockopt:1\r\n"
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,KEEPALIVETIME") == b"+getsockopt:77\r\n"
    conn = ti.sync(lambda: ti.module.profile.sockets[sd].conn)
    assert ti.sync(lambda: conn.get_keepalive()) ["idle"] == 77
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,LINGER,1,0")
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,LINGER") == b"+getsockopt:1,0\r\n"
    assert ti.err(f"AT+SetSockOpt={sd},SOCKET,SECMETHOD,TLSV1_2") == b"process command,-92"
    assert ti.err(f"AT+SetSockOpt={sd},SOCKET,BOGUS,1") == b"parse parameters,-4"
    assert ti.err(f"AT+SetSockOpt={sd},PHY,PHY_TX_POWER,5") == b"process command,-95"
    assert ti.err(f"AT+SetSockOpt={sd},PHY,PHY_TX_POWER,99") == b"parse parameters,-4"
    assert ti.err(f"AT+SetSockOpt={sd},SOCKET,CHANGE_CHANNEL,3") == b"process command,-95"
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,RCVBUF,4096")
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,RCVBUF") == b"+getsockopt:4096\r\n"
    # linger 1,0 closes with a reset
    ti.ok(f"AT+Close={sd}")
    deadline = time.monotonic() + 5
    while not tcp_sink._conn(0).closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tcp_sink._conn(0).reset


def test_multicast_membership(ti):
    sd = sock(ti, "UDP", "DGRAM")
    ti.ok(f"AT+Bind={sd},INET,0,0.0.0.0")
    ti.ok(f"AT+SetSockOpt={sd},IP,ADD_MEMBERSHIP,239.255.42.7,127.0.0.1")
    assert ti.ok(f"AT+GetSockOpt={sd},IP,ADD_MEMBERSHIP") == b"+getsockopt:239.255.42.7\r\n"
    ti.ok(f"AT+SetSockOpt={sd},IP,MULTICAST_TTL,3")
    ti.ok(f"AT+SetSockOpt={sd},IP,DROP_MEMBERSHIP,239.255.42.7,127.0.0.1")
    assert ti.err(f"AT+SetSockOpt={sd},IP,ADD_MEMBERSHIP,10.0.0.1,127.0.0.1") == b"process command,-22"


def load_pki(ti, pki):
    ti.put_file("/cert/ca.pem", pki.ca_cert.read_bytes())
    ti.put_file("/cert/other-ca.pem", pki.other_ca_cert.read_bytes())
    ti.put_file("/cert/client.pem", pki.client_cert.read_bytes())
    ti.put_file("/cert/client.key", pki.client_key.read_bytes())


def tls_sock(ti, ca="/cert/ca.pem", domain=None, extra=()):
    sd = sock(ti, "SEC")
    if ca:
        ti.ok(f"AT+SetSockOpt={sd},SOCKET,SECURE_FILES_CA_FILE_NAME,{ca}")
    if domain:
        ti.ok(f"AT+SetSockOpt={sd},SOCKET,SECURE_DOMAIN_NAME_VERIFICATION,{domain}")
    for line in extra:
        ti.ok(line.format(sd=sd))
    return sd


def test_tls_verified_with_client_cert(tls_echo, pki, ti):
    load_pki(ti, pki)
    sd = tls_sock(ti, domain="localhost", extra=(
        "AT+SetSockOpt={sd},SOCKET,SECURE_FILES_CERTIFICATE_FILE_NAME,/cert/client.pem",
        "AT+SetSockOpt={sd},SOCKET,SECURE_FILES_PRIVATE_KEY_FILE_NAME,/cert/client.key",
        "AT+SetSockOpt={sd},SOCKET,SECMETHOD,TLSV1_2",
        "AT+SetSockOpt={sd},SOCKET,SECURE_MASK,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "AT+SetSockOpt={sd},SOCKET,SECURE_ALPN,H1|H2"))
    ti.ok(f"AT+Connect={sd},INET,{tls_echo.port},127.0.0.1")
    out = ti.later(rb"\+connect:", 15)
    assert out == (f"+eventsock:async_event,{sd},connected_secured,0\r\n"
                   f"+connect:{tls_echo.port},127.0.0.1\r\nOK\r\n").encode()
    sess = tls_echo.wait_sessions(1)[0]
    assert sess.client_cert_presented and sess.sni == "localhost"
    assert sess.version == "TLSv1.2" and sess.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    ti.write(f"AT+Send={sd},0,{len(PAYLOAD)},".encode() + PAYLOAD + b"\r\n")
    ti.read_until(rb"OK\r\n")
    got = b""
    while len(got) < len(PAYLOAD):
        got += recv(ti, sd, 1000)
    assert got == PAYLOAD
    assert ti.ok(f"AT+GetSockOpt={sd},SOCKET,SECMETHOD") == b"+getsockopt:tlsv1_2\r\n"


def test_tls_wrong_root_ca_and_hostname(tls_echo, pki, ti):
    load_pki(ti, pki)
    sd = tls_sock(ti, ca="/cert/other-ca.pem")
    ti.ok(f"AT+Connect={sd},INET,{tls_echo.port},127.0.0.1")
    out = ti.read_until(rb"ERROR: [^\r]*\r\n", 15)
    assert f"+eventsock:async_event,{sd},wrong_root_ca,-468\r\n".encode() in out
    assert out.endswith(b"ERROR: process command,-468\r\n")
    sd = tls_sock(ti, domain="wrong.example")
    ti.ok(f"AT+Connect={sd},INET,{tls_echo.port},127.0.0.1")
    assert ti.read_until(rb"ERROR: [^\r]*\r\n", 15).endswith(b"ERROR: process command,-468\r\n")
    # an RSA-only cipher mask cannot talk to the ECDSA server
    sd = tls_sock(ti, extra=("AT+SetSockOpt={sd},SOCKET,SECURE_MASK,TLS_RSA_WITH_AES_128_GCM_SHA256",
                             "AT+SetSockOpt={sd},SOCKET,SECMETHOD,TLSV1_2"))
    ti.ok(f"AT+Connect={sd},INET,{tls_echo.port},127.0.0.1")
    assert ti.read_until(rb"ERROR: [^\r]*\r\n", 15) == b"ERROR: process command,-340\r\n"
    # missing CA file
    sd = tls_sock(ti, ca="/cert/none.pem")
    assert ti.err(f"AT+Connect={sd},INET,{tls_echo.port},127.0.0.1") == b"process command,-11300"


def test_tls_without_ca_connects_unverified(tls_echo, ti):
    sd = tls_sock(ti, ca=None)
    ti.ok(f"AT+Connect={sd},INET,{tls_echo.port},127.0.0.1")
    ti.later(rb"\+connect:", 15)
    ti.ok(f"AT+Send={sd},0,2,hi")
    assert recv(ti, sd, 10) == b"hi"


def test_tls_server_socket(ti, pki):
    ti.put_file("/srv/cert.pem", pki.server_cert.read_bytes())
    ti.put_file("/srv/key.pem", pki.server_key.read_bytes())
    sd = sock(ti, "SEC")
    assert ti.err(f"AT+Listen={sd},1") == b"process command,-22"
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,SECURE_FILES_CERTIFICATE_FILE_NAME,/srv/cert.pem")
    ti.ok(f"AT+SetSockOpt={sd},SOCKET,SECURE_FILES_PRIVATE_KEY_FILE_NAME,/srv/key.pem")
    ti.ok(f"AT+Bind={sd},INET,0,127.0.0.1")
    ti.ok(f"AT+Listen={sd},1")
    port = ti.sync(lambda: ti.module.profile.sockets[sd].listener.port)
    ti.ok(f"AT+Accept={sd},INET")
    import ssl
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as c:
        out = ti.later(rb"\+accept:", 10)
        nsd = int(re.search(rb"\+accept:(\d+)", out).group(1))
        c.sendall(b"secret")
        assert recv(ti, nsd, 10) == b"secret"


def test_close_cancels_pending_recv(ti, tcp_sink):
    sd = sock(ti)
    ti.ok(f"AT+Connect={sd},INET,{tcp_sink.port},127.0.0.1")
    ti.later(rb"\+connect:")
    ti.ok(f"AT+Recv={sd},0,10")
    assert ti.err(f"AT+Recv={sd},0,10") == b"process command,-114"
    out = ti.cmd(f"AT+Close={sd}")
    out += ti.read_until(rb"ERROR: [^\r]*\r\n")
    assert b"+close:%d\r\nOK\r\n" % sd in out and b"ERROR: process command,-9\r\n" in out
    assert tcp_sink.wait_eof().eof


def test_ipv6_tcp_with_manual_address_format(ti):
    from peers.servers import TcpEchoServer
    try:
        srv = TcpEchoServer("::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    try:
        sd = sock(ti, dom="INET6")
        ti.ok(f"AT+Connect={sd},INET6,{srv.port},0:0:0:1")        # the manual's four 32-bit words
        # TI prints an IPv6 address as four 32-bit words in hex (StrMpl_setArrayVal HEX|SIZE_32)
        assert ti.later(rb"\+connect:") == f"+connect:{srv.port},0x0:0x0:0x0:0x1\r\nOK\r\n".encode()
        ti.ok(f"AT+Send={sd},0,4,v6ok")
        assert recv(ti, sd, 10) == b"v6ok"
        assert ti.err(f"AT+Connect={sd},INET,{srv.port},::1") == b"parse parameters,-4"
    finally:
        srv.stop()
