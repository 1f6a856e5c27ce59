"""Tests of atemu.net.sockets (TCP/TLS/UDP) against loopback peers only."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import time

import pytest

from atemu.net.dns import Resolver
from atemu.net.errors import NetError
from atemu.net.sockets import TcpConnection, TcpListener, UdpSocket
from atemu.net.tls import client_context, server_context
from peers.certs import CLIENT_CN
from peers.servers import MulticastReceiver, MulticastSender, TcpEchoServer, TlsEchoServer, UdpEchoServer


def run(coro, timeout: float = 10.0):
    """Run a coroutine on a fresh event loop with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_port(family=socket.AF_INET, kind=socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (nothing listens on it)."""
    with socket.socket(family, kind) as s:
        s.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------- plain TCP
def test_tcp_echo_roundtrip_counters_and_local_close(tcp_echo):
    closes = []

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_echo.port)
        conn.on_close = lambda c, reason: closes.append(reason)
        assert conn.remote_addr == ("127.0.0.1", tcp_echo.port)
        assert conn.local_addr[0] == "127.0.0.1" and conn.local_addr[1] > 0
        await conn.send(b"hello ")
        await conn.send(b"world")
        assert await conn.read_exactly(11, timeout=3) == b"hello world"
        assert conn.total_sent == 11 and conn.total_received == 11
        assert conn.available == 0
        conn.close()
        await conn.wait_closed(3)
        assert conn.closed and conn.close_reason == "local"
        with pytest.raises(NetError) as ei:
            await conn.send(b"x")
        assert ei.value.kind == "closed"

    run(main())
    assert closes == ["local"]
    tcp_echo.wait_until(lambda: tcp_echo.closed_by_client == 1, 3, "client FIN")


def test_tcp_one_megabyte_is_buffered_without_loss(tcp_echo):
    payload = os.urandom(1 << 20)
    notifications = []

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_echo.port)
        conn.on_data = lambda c: notifications.append(c.available)
        for i in range(0, len(payload), 8192):
            await conn.send(payload[i : i + 8192])
        # do not read until everything has arrived: it must all wait in rx
        deadline = time.monotonic() + 5
        while conn.total_received < len(payload) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert conn.available == len(payload)
        got = conn.read(1000) + conn.read()
        await conn.aclose()
        return got

    got = run(main())
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert len(notifications) >= 2 and notifications[-1] == len(payload)


def test_tcp_sink_receives_exact_bytes(tcp_sink):
    payload = os.urandom(300_000)

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        await conn.send(payload)
        await conn.aclose()

    run(main())
    assert tcp_sink.wait_bytes(len(payload)) == payload
    assert tcp_sink.wait_eof().eof


def test_tcp_manual_pause_stops_reading_and_loses_nothing(tcp_sink):
    chunk = os.urandom(1 << 20)

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        tcp_sink.wait_connection()
        conn.pause_reading()
        assert conn.reading_paused
        await asyncio.to_thread(tcp_sink.push, chunk * 4)
        await asyncio.sleep(0.3)
        assert conn.available == 0  # nothing is read while paused
        conn.resume_reading()
        data = bytearray()
        while len(data) < len(chunk) * 4:
            data += await conn.recv(timeout=3)
        await conn.aclose()
        return bytes(data)

    assert run(main()) == chunk * 4


def test_tcp_rx_high_water_bounds_buffer(tcp_sink):
    payload = os.urandom(3 << 20)

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        conn.rx_high_water = 64 * 1024
        tcp_sink.wait_connection()
        await asyncio.to_thread(tcp_sink.push, payload)
        await asyncio.sleep(0.3)
        # auto-paused: buffer bounded by high-water + one asyncio read chunk
        assert conn.reading_paused
        assert 64 * 1024 < conn.available <= 64 * 1024 + 256 * 1024
        data = bytearray()
        while len(data) < len(payload):
            data += await conn.recv(4096, timeout=3)
            assert conn.available <= 64 * 1024 + 256 * 1024
        assert not conn.reading_paused
        await conn.aclose()
        return bytes(data)

    assert run(main()) == payload


def test_tcp_edge_notification_only_when_buffer_was_empty(tcp_sink):
    calls = []

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        conn.notify = "edge"
        conn.on_data = lambda c: calls.append(c.available)
        tcp_sink.wait_connection()
        expected = 0
        for part in (b"one", b"two", b"three"):
            expected += len(part)
            await asyncio.to_thread(tcp_sink.push, part)
            while conn.total_received < expected:
                await asyncio.sleep(0.005)
        assert len(calls) == 1  # no read happened: one edge only
        assert conn.read() == b"onetwothree"
        await asyncio.to_thread(tcp_sink.push, b"four")
        await conn.wait_data(3)
        assert len(calls) == 2  # buffer was drained -> new edge
        await conn.aclose()

    run(main())


def test_tcp_every_notification_with_async_callback(tcp_sink):
    seen = []

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)

        async def on_data(c):
            seen.append(c.read())

        conn.on_data = on_data
        tcp_sink.wait_connection()
        for part in (b"a", b"b", b"c"):
            await asyncio.to_thread(tcp_sink.push, part)
            await asyncio.sleep(0.05)
        await conn.aclose()

    run(main())
    assert b"".join(seen) == b"abc" and len(seen) == 3


def test_tcp_remote_fin_reported_and_unread_data_kept(tcp_sink):
    events = []

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        conn.on_close = lambda c, r: events.append((r, c.available))
        tcp_sink.wait_connection()
        tcp_sink.push(b"last words")
        tcp_sink.close_client()
        await conn.wait_closed(3)
        assert conn.remote_eof and conn.close_reason == "remote"
        assert conn.read() == b"last words"
        assert await conn.recv(timeout=1) == b""  # EOF, no block

    run(main())
    assert events == [("remote", len(b"last words"))]


def test_tcp_reset_by_peer_reported_as_reset(tcp_sink):
    events = []

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        conn.on_close = lambda c, r: events.append(r)
        tcp_sink.wait_connection()
        tcp_sink.reset_client()
        await conn.wait_closed(3)
        assert conn.close_reason == "reset"
        assert conn.error is not None and conn.error.kind == "reset"
        with pytest.raises(NetError) as ei:
            await conn.send(b"x")
        assert ei.value.kind == "reset"

    run(main())
    assert events == ["reset"]


def test_tcp_echo_server_reset_after_option_gives_reset():
    async def main(port):
        conn = await TcpConnection.open("127.0.0.1", port)
        await conn.send(b"12345")
        await conn.wait_closed(3)
        return conn.close_reason

    with TcpEchoServer(reset_after=5) as srv:
        assert run(main(srv.port)) == "reset"


def test_tcp_echo_server_greet_and_close_after():
    async def main(port):
        conn = await TcpConnection.open("127.0.0.1", port)
        await conn.send(b"abcdefgh")
        await conn.wait_closed(3)
        return conn.read(), conn.close_reason

    with TcpEchoServer(greet=b"HELLO\r\n", close_after=4) as srv:
        data, reason = run(main(srv.port))
    assert data == b"HELLO\r\nabcd" and reason == "remote"


def test_tcp_abort_sends_rst_and_close_sends_fin(tcp_sink):
    async def main():
        a = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        tcp_sink.wait_connection(1)
        a.abort()
        await a.wait_closed(2)
        assert a.close_reason == "local"
        b = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        tcp_sink.wait_connection(2)
        b.close()
        await b.wait_closed(2)

    run(main())
    tcp_sink.wait_until(lambda: all(c.closed for c in tcp_sink.conns), 3, "both closed")
    assert tcp_sink.conns[0].reset and not tcp_sink.conns[0].eof
    assert tcp_sink.conns[1].eof and not tcp_sink.conns[1].reset


def test_tcp_refused_port():
    port = free_port()

    async def main():
        with pytest.raises(NetError) as ei:
            await TcpConnection.open("127.0.0.1", port, timeout=3)
        return ei.value.kind

    assert run(main()) == "refused"


def test_tcp_connect_timeout_when_backlog_full():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue; later SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(lsock.getsockname())
            fillers.append(s)
        time.sleep(0.1)

        async def main():
            t0 = time.monotonic()
            with pytest.raises(NetError) as ei:
                await TcpConnection.open("127.0.0.1", lsock.getsockname()[1], timeout=0.5)
            return ei.value.kind, time.monotonic() - t0

        kind, elapsed = run(main())
        assert kind == "timeout" and 0.4 < elapsed < 3
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_tcp_invalid_port_and_dns_failure():
    async def main():
        with pytest.raises(NetError) as e1:
            await TcpConnection.open("127.0.0.1", 0)
        r = Resolver()
        r.fault = "fail"
        with pytest.raises(NetError) as e2:
            await TcpConnection.open("example.invalid", 80, resolver=r)
        return e1.value.kind, e2.value.kind

    assert run(main()) == ("invalid", "dns")


def test_tcp_connect_by_overridden_name(tcp_echo):
    async def main():
        r = Resolver({"Broker.Example.COM": "127.0.0.1"})
        conn = await TcpConnection.open("broker.example.com", tcp_echo.port, resolver=r)
        await conn.send(b"ping")
        data = await conn.read_exactly(4, 3)
        await conn.aclose()
        return data

    assert run(main()) == b"ping"


def test_tcp_open_tries_next_address_after_refusal():
    async def main(port):
        # IPv4 first (nothing listens there), then IPv6 where the server is
        r = Resolver({"dual.test": ["::1", "127.0.0.1"]})
        conn = await TcpConnection.open("dual.test", port, resolver=r)
        addr = conn.remote_addr
        await conn.aclose()
        return addr

    with TcpEchoServer("::1") as srv:
        with socket.socket() as probe:  # is the same port free on IPv4?
            try:
                probe.bind(("127.0.0.1", srv.port))
            except OSError:
                pytest.skip("port taken on IPv4 by something else")
        assert run(main(srv.port)) == ("::1", srv.port)


def test_tls_handshake_timeout_against_silent_server(pki, tcp_sink):
    async def main():
        t0 = time.monotonic()
        with pytest.raises(NetError) as ei:
            await TcpConnection.open("localhost", tcp_sink.port, ssl=client_context(ca=str(pki.ca_cert)), timeout=0.5)
        return ei.value.kind, time.monotonic() - t0

    kind, elapsed = run(main())
    assert kind == "timeout" and 0.4 < elapsed < 3
    assert tcp_sink.wait_bytes(1)[:1] == b"\x16"  # a ClientHello record did go out


def test_tcp_ipv6_echo():
    async def main(port):
        conn = await TcpConnection.open("::1", port)
        assert conn.remote_addr == ("::1", port)
        await conn.send(b"six")
        data = await conn.read_exactly(3, 3)
        await conn.aclose()
        return data

    with TcpEchoServer("::1") as srv:
        assert run(main(srv.port)) == b"six"


def test_tcp_local_port_binding(tcp_sink):
    port = free_port()

    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port, local_port=port)
        assert conn.local_addr == ("127.0.0.1", port)
        tcp_sink.wait_connection()
        await conn.aclose()

    run(main())
    assert tcp_sink.conns[0].peer[1] == port


def test_tcp_keepalive_settings(tcp_echo):
    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_echo.port)
        assert conn.get_keepalive()["enabled"] is False
        conn.set_keepalive(True, idle=30, interval=7, count=4)
        ka = conn.get_keepalive()
        conn.set_keepalive(False)
        off = conn.get_keepalive()["enabled"]
        await conn.aclose()
        return ka, off

    ka, off = run(main())
    assert ka == {"enabled": True, "idle": 30, "interval": 7, "count": 4}
    assert off is False


def test_tcp_acked_tracks_unacknowledged_bytes(tcp_sink):
    async def main():
        conn = await TcpConnection.open("127.0.0.1", tcp_sink.port)
        tcp_sink.wait_connection()
        await asyncio.to_thread(tcp_sink.pause_reading)
        conn.write(os.urandom(8 << 20))  # far more than socket buffers hold
        await asyncio.sleep(0.2)
        assert conn.total_sent == 8 << 20
        stuck = conn.acked
        assert stuck < conn.total_sent
        await asyncio.to_thread(tcp_sink.resume_reading)
        deadline = time.monotonic() + 5
        while conn.acked < conn.total_sent and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert conn.acked == conn.total_sent
        await conn.aclose()

    run(main())
    assert len(tcp_sink.wait_bytes(8 << 20)) == 8 << 20


def test_tcp_half_close_keeps_sending_side_open():
    async def main():
        async def handler(reader, writer):
            writer.write(b"bye")
            writer.write_eof()
            rest = await reader.read()  # until the client's FIN
            writer.close()
            got.set_result(rest)

        got = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await TcpConnection.open("127.0.0.1", port)
        conn.half_close = True
        eofs, closes = [], []
        conn.on_eof = lambda c: eofs.append(c.read())
        conn.on_close = lambda c, r: closes.append(r)
        while not conn.remote_eof:
            await asyncio.sleep(0.01)
        assert eofs == [b"bye"] and not conn.closed
        await conn.send(b"still here")
        conn.close()
        rest = await asyncio.wait_for(got, 3)
        await conn.wait_closed(3)
        server.close()
        return rest, closes

    rest, closes = run(main())
    assert rest == b"still here" and closes == ["remote"]


# ------------------------------------------------------------------- listener
def test_listener_accepts_and_reports_addrinuse():
    async def main():
        lst = await TcpListener.open("127.0.0.1", 0)
        assert lst.port > 0
        accepted = []
        lst.on_accept = accepted.append
        client = await TcpConnection.open("127.0.0.1", lst.port)
        while not accepted:
            await asyncio.sleep(0.01)
        server_side = accepted[0]
        assert server_side.remote_addr == client.local_addr
        await client.send(b"up")
        assert await server_side.read_exactly(2, 3) == b"up"
        await server_side.send(b"down")
        assert await client.read_exactly(4, 3) == b"down"
        with pytest.raises(NetError) as ei:
            await TcpListener.open("127.0.0.1", lst.port)
        lst.close()
        await client.aclose()
        await server_side.wait_closed(3)
        assert server_side.close_reason == "remote"
        return ei.value.kind

    assert run(main()) == "addrinuse"


def test_listener_ipv6_and_accept_queue():
    async def main():
        lst = await TcpListener.open("::1", 0)
        client = await TcpConnection.open("::1", lst.port)
        conn = await lst.accept(timeout=3)
        assert conn.remote_addr[0] == "::1"
        await conn.send(b"v6")
        assert await client.read_exactly(2, 3) == b"v6"
        with pytest.raises(NetError) as ei:
            await lst.accept(timeout=0.1)
        assert ei.value.kind == "timeout"
        lst.close()
        await client.aclose()

    run(main())


def test_listener_dual_stack_when_host_empty():
    async def main():
        lst = await TcpListener.open(None, 0)
        c4 = await TcpConnection.open("127.0.0.1", lst.port)
        c6 = await TcpConnection.open("::1", lst.port)
        a = await lst.accept(timeout=3)
        b = await lst.accept(timeout=3)
        peers = sorted([a.remote_addr[0], b.remote_addr[0]])
        for c in (c4, c6, a, b):
            c.abort()
        lst.close()
        return peers

    assert run(main()) == ["127.0.0.1", "::1"]


# ------------------------------------------------------------------------ TLS
def _tls_roundtrip(port, ctx, host="localhost", **kw):
    async def main():
        conn = await TcpConnection.open(host, port, ssl=ctx, timeout=5, **kw)
        await conn.send(b"secret")
        data = await conn.read_exactly(6, 3)
        info = conn.tls_info
        await conn.aclose()
        return data, info

    return run(main())


def _tls_error(port, ctx, host="localhost", **kw) -> NetError:
    async def main():
        with pytest.raises(NetError) as ei:
            await TcpConnection.open(host, port, ssl=ctx, timeout=5, **kw)
        return ei.value

    return run(main())


@pytest.mark.parametrize("form", ["path", "pem", "der"])
def test_tls_verify_with_right_ca(pki, tls_echo, form):
    ca = {"path": str(pki.ca_cert), "pem": pki.ca_cert.read_bytes(), "der": pki.der(pki.ca_cert)}[form]
    data, info = _tls_roundtrip(tls_echo.port, client_context(ca=ca))
    assert data == b"secret"
    assert info["version"] in ("TLSv1.2", "TLSv1.3") and info["peer_cert_der"] == pki.der(pki.server_cert)
    s = tls_echo.wait_sessions(1)[0]
    assert s.sni == "localhost" and s.client_cert_presented is False


def test_tls_wrong_ca_fails_verify(pki, tls_echo):
    err = _tls_error(tls_echo.port, client_context(ca=str(pki.other_ca_cert)))
    assert err.kind == "tls_verify"


def test_tls_system_cas_do_not_trust_test_ca(tls_echo):
    assert _tls_error(tls_echo.port, client_context()).kind == "tls_verify"


def test_tls_expired_cert_fails_and_ignore_time_accepts(pki):
    with TlsEchoServer(pki.expired_cert, pki.expired_key) as srv:
        err = _tls_error(srv.port, client_context(ca=str(pki.ca_cert)))
        assert err.kind == "tls_verify" and "expired" in err.message
        data, _ = _tls_roundtrip(srv.port, client_context(ca=str(pki.ca_cert), ignore_time=True))
        assert data == b"secret"
    # ignore_time does not switch off the other checks
    with TlsEchoServer(pki.unknown_cert, pki.unknown_key) as srv:
        err = _tls_error(srv.port, client_context(ca=str(pki.ca_cert), ignore_time=True))
        assert err.kind == "tls_verify"


def test_tls_verify_false_accepts_unknown_ca(pki):
    with TlsEchoServer(pki.unknown_cert, pki.unknown_key) as srv:
        assert _tls_error(srv.port, client_context(ca=str(pki.ca_cert))).kind == "tls_verify"
        data, info = _tls_roundtrip(srv.port, client_context(verify=False))
        assert data == b"secret" and info["peer_cert_der"] == pki.der(pki.unknown_cert)


def test_tls_hostname_check_and_sni(pki, tls_echo):
    ca = str(pki.ca_cert)
    err = _tls_error(tls_echo.port, client_context(ca=ca), host="127.0.0.1", server_hostname="wrong.example")
    assert err.kind == "tls_verify" and "wrong.example" in err.message
    data, _ = _tls_roundtrip(
        tls_echo.port, client_context(ca=ca, check_hostname=False), host="127.0.0.1", server_hostname="wrong.example"
    )
    assert data == b"secret"
    # explicit SNI different from the address we connect to
    _tls_roundtrip(tls_echo.port, client_context(ca=ca), host="127.0.0.1", server_hostname="test.atemu.invalid")
    # connecting by IP: verified against the IP SAN, and no SNI is sent
    _tls_roundtrip(tls_echo.port, client_context(ca=ca), host="127.0.0.1")
    snis = [s.sni for s in tls_echo.wait_sessions(3)]
    assert snis == ["wrong.example", "test.atemu.invalid", None]


def test_tls_client_cert_only_when_given(pki, tls_echo):
    ca = str(pki.ca_cert)
    _tls_roundtrip(tls_echo.port, client_context(ca=ca))
    _tls_roundtrip(tls_echo.port, client_context(ca=ca, cert=str(pki.client_cert), key=str(pki.client_key)))
    _tls_roundtrip(
        tls_echo.port, client_context(ca=ca, cert=pki.der(pki.client_cert), key=pki.der(pki.client_key))
    )
    _tls_roundtrip(
        tls_echo.port,
        client_context(
            ca=ca,
            cert=pki.client_cert.read_bytes(),
            key=pki.client_key_encrypted.read_bytes(),
            key_password=pki.key_password,
        ),
    )
    sessions = tls_echo.wait_sessions(4)
    assert [s.client_cert_presented for s in sessions] == [False, True, True, True]
    assert all(s.client_cn == CLIENT_CN for s in sessions[1:])
    assert sessions[1].client_cert_der == pki.der(pki.client_cert)


def test_tls_mutual_auth_rejects_missing_or_foreign_client_cert(pki, tls_echo_mtls):
    ca = str(pki.ca_cert)

    async def attempt(ctx):
        try:
            conn = await TcpConnection.open("localhost", tls_echo_mtls.port, ssl=ctx, timeout=5)
        except NetError as exc:
            return exc.kind
        # TLS 1.3: the client finishes its handshake before the server has
        # checked the client certificate; the rejection then ends the
        # connection (with an alert, or just a close) and nothing is echoed.
        with contextlib.suppress(NetError):
            await conn.send(b"x")
            await conn.recv(timeout=3)
        await conn.wait_closed(3)
        assert conn.total_received == 0
        assert conn.close_reason == "error", conn.close_reason
        return conn.error.kind

    assert run(attempt(client_context(ca=ca))) == "tls"
    foreign = client_context(ca=ca, cert=str(pki.other_client_cert), key=str(pki.other_client_key))
    assert run(attempt(foreign)) == "tls"
    tls_echo_mtls.wait_handshake_failures(2)
    assert tls_echo_mtls.sessions == []
    data, _ = _tls_roundtrip(
        tls_echo_mtls.port, client_context(ca=ca, cert=str(pki.client_cert), key=str(pki.client_key))
    )
    assert data == b"secret" and tls_echo_mtls.wait_sessions(1)[0].client_cn == CLIENT_CN


def test_tls_version_bounds_and_alpn(pki):
    ca = str(pki.ca_cert)
    with TlsEchoServer(pki.server_cert, pki.server_key, max_version=ssl.TLSVersion.TLSv1_2, alpn=["mqtt"]) as srv:
        _, info = _tls_roundtrip(srv.port, client_context(ca=ca, alpn=["mqtt", "http/1.1"]))
        assert info["version"] == "TLSv1.2" and info["alpn"] == "mqtt"
        err = _tls_error(srv.port, client_context(ca=ca, min_version=ssl.TLSVersion.TLSv1_3))
        assert err.kind == "tls"
        _, info = _tls_roundtrip(srv.port, client_context(ca=ca, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
        assert info["cipher"] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_tls_context_rejects_bad_material(pki, tmp_path):
    cases = [
        dict(ca=b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
        dict(ca=b"\x30\x03garbage"),
        dict(ca=str(tmp_path / "missing.pem")),
        dict(ca=pki.server_key.read_bytes()),  # a key is not a certificate
        dict(cert=str(pki.client_cert)),  # no key
        dict(key=str(pki.client_key)),  # key without certificate
        dict(cert=str(pki.client_cert), key=str(pki.other_client_key)),  # mismatch
        dict(cert=str(pki.client_cert), key=str(pki.client_key_encrypted), key_password=b"wrong"),
        dict(cert=str(pki.client_cert), key=b"\x30\x05nokey"),
        dict(ciphers="NO-SUCH-CIPHER"),
    ]
    for kw in cases:
        with pytest.raises(NetError) as ei:
            client_context(**kw)
        assert ei.value.kind == "invalid", kw
        assert ei.value.message
    with pytest.raises(NetError):
        server_context(str(pki.server_cert), None)
    with pytest.raises(NetError):
        server_context(str(pki.server_cert), str(pki.server_key), require_client_cert=True)


def test_tls_verify_false_really_disables_checks():
    ctx = client_context(verify=False, ca=b"garbage is ignored when not verifying")
    assert ctx.verify_mode == ssl.CERT_NONE and ctx.check_hostname is False


def test_tls_listener_with_server_context_and_client_cert(pki):
    sctx = server_context(
        pki.server_cert.read_bytes(), pki.der(pki.server_key), ca=pki.der(pki.ca_cert), require_client_cert=True
    )
    cctx = client_context(ca=str(pki.ca_cert), cert=str(pki.client_cert), key=str(pki.client_key))

    async def main():
        lst = await TcpListener.open("127.0.0.1", 0, ssl=sctx)
        client = await TcpConnection.open("localhost", lst.port, ssl=cctx)
        server_side = await lst.accept(timeout=3)
        assert server_side.tls and client.tls
        assert server_side.tls_info["peer_cert_der"] == pki.der(pki.client_cert)
        await client.send(b"over tls")
        assert await server_side.read_exactly(8, 3) == b"over tls"
        client.close()
        await server_side.wait_closed(3)
        lst.close()
        return server_side.close_reason

    assert run(main()) == "remote"


def test_start_tls_upgrade_both_sides(pki):
    sctx = server_context(str(pki.server_cert), str(pki.server_key))
    cctx = client_context(ca=str(pki.ca_cert))

    async def main():
        lst = await TcpListener.open("127.0.0.1", 0)
        client = await TcpConnection.open("127.0.0.1", lst.port)
        server_side = await lst.accept(timeout=3)
        await client.send(b"STARTTLS\r\n")
        assert await server_side.read_exactly(10, 3) == b"STARTTLS\r\n"
        await server_side.send(b"OK\r\n")
        assert await client.read_exactly(4, 3) == b"OK\r\n"
        assert not client.tls
        await asyncio.gather(
            server_side.start_tls(sctx, server_side=True),
            client.start_tls(cctx, server_hostname="localhost"),
        )
        assert client.tls and server_side.tls
        await client.send(b"encrypted now")
        assert await server_side.read_exactly(13, 3) == b"encrypted now"
        await server_side.send(b"yes")
        assert await client.read_exactly(3, 3) == b"yes"
        assert client.tls_info["peer_cert_der"] == pki.der(pki.server_cert)
        await client.aclose()
        lst.close()

    run(main())


def test_start_tls_verification_failure_closes_connection(pki):
    sctx = server_context(str(pki.unknown_cert), str(pki.unknown_key))

    async def main():
        lst = await TcpListener.open("127.0.0.1", 0)
        client = await TcpConnection.open("127.0.0.1", lst.port)
        server_side = await lst.accept(timeout=3)
        closes = []
        client.on_close = lambda c, r: closes.append(r)
        srv_task = asyncio.ensure_future(server_side.start_tls(sctx, server_side=True))
        with pytest.raises(NetError) as ei:
            await client.start_tls(client_context(ca=str(pki.ca_cert)), server_hostname="localhost")
        with pytest.raises(NetError):
            await srv_task
        lst.close()
        return ei.value.kind, client.closed, closes

    kind, closed, closes = run(main())
    assert kind == "tls_verify" and closed and closes == ["error"]


# ------------------------------------------------------------------------ UDP
def test_udp_datagram_boundaries_preserved(udp_echo):
    sizes = [1, 100, 1400, 9000, 0, 60000]
    arrivals = []

    async def main():
        sock = await UdpSocket.open(local_host="127.0.0.1", remote=("127.0.0.1", udp_echo.port))
        sock.on_datagram = lambda s: arrivals.append(s.available)
        payloads = [os.urandom(n) for n in sizes]
        for p in payloads:
            sock.sendto(p)
        got = [await sock.recv(timeout=3) for _ in payloads]
        assert sock.recvfrom() is None
        sock.close()
        return payloads, got

    payloads, got = run(main())
    assert [d for d, _ in got] == payloads
    assert all(addr == ("127.0.0.1", udp_echo.port) for _, addr in got)
    assert len(arrivals) == len(sizes)
    assert [d for d, _ in udp_echo.wait_datagrams(len(sizes))] == payloads


def test_udp_sendto_host_uses_resolver_and_rejects_names_in_sendto(udp_echo):
    async def main():
        r = Resolver({"echo.test": "127.0.0.1"})
        sock = await UdpSocket.open(resolver=r)
        await sock.sendto_host(b"named", "echo.test", udp_echo.port)
        data, addr = await sock.recv(timeout=3)
        with pytest.raises(NetError) as ei:
            sock.sendto(b"x", ("echo.test", udp_echo.port))
        with pytest.raises(NetError) as ei2:
            sock.sendto(b"x" * 70000, ("127.0.0.1", udp_echo.port))
        sock.close()
        with pytest.raises(NetError) as ei3:
            sock.sendto(b"x", ("127.0.0.1", udp_echo.port))
        return data, addr, ei.value.kind, ei2.value.kind, ei3.value.kind

    assert run(main()) == (b"named", ("127.0.0.1", udp_echo.port), "invalid", "invalid", "closed")


def test_udp_ipv6_and_dual_stack():
    async def main(v6port, v4port):
        s6 = await UdpSocket.open(local_host="::1")
        s6.sendto(b"six", ("::1", v6port))
        d6 = await s6.recv(timeout=3)
        dual = await UdpSocket.open(local_host="::")
        dual.sendto(b"four", ("127.0.0.1", v4port))
        d4 = await dual.recv(timeout=3)
        s6.close()
        dual.close()
        return d6, d4

    with UdpEchoServer("::1") as e6, UdpEchoServer() as e4:
        d6, d4 = run(main(e6.port, e4.port))
    assert d6 == (b"six", ("::1", e6.port))
    assert d4 == (b"four", ("127.0.0.1", e4.port))


def test_udp_queue_limit_drops_and_counts():
    async def main():
        rx = await UdpSocket.open(local_host="127.0.0.1")
        rx.max_queue = 3
        tx = await UdpSocket.open(local_host="127.0.0.1")
        for i in range(5):
            tx.sendto(bytes([i]), ("127.0.0.1", rx.port))
        while rx.available + rx.dropped < 5:
            await asyncio.sleep(0.01)
        got = [rx.recvfrom()[0] for _ in range(rx.available)]
        rx.close()
        tx.close()
        return got, rx.dropped, rx.total_received

    assert run(main()) == ([b"\x00", b"\x01", b"\x02"], 2, 3)


def test_udp_connected_socket_reports_refused():
    port = free_port(kind=socket.SOCK_DGRAM)

    async def main():
        errors = []
        sock = await UdpSocket.open(remote=("127.0.0.1", port), connect=True)
        sock.on_error = lambda s, e: errors.append(e.kind)
        sock.sendto(b"anyone?")
        deadline = time.monotonic() + 3
        while not errors and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            sock.sendto(b"anyone?")
        sock.close()
        return errors

    assert run(main())[0] == "refused"


def test_udp_reuse_and_addrinuse():
    async def main():
        a = await UdpSocket.open(local_host="127.0.0.1", reuse=True)
        b = await UdpSocket.open(local_host="127.0.0.1", local_port=a.port, reuse=True)
        c = await UdpSocket.open(local_host="127.0.0.1")
        with pytest.raises(NetError) as ei:
            await UdpSocket.open(local_host="127.0.0.1", local_port=c.port)
        for s in (a, b, c):
            s.close()
        return b.port == a.port, ei.value.kind

    assert run(main()) == (True, "addrinuse")


def test_udp_multicast_join_receive_and_leave():
    group = "239.255.77.1"

    async def main():
        sock = await UdpSocket.open(local_host="0.0.0.0", reuse=True)
        sock.join_multicast(group, "127.0.0.1")
        with MulticastSender(group, sock.port) as tx:
            tx.send(b"hello group")
            data, addr = await sock.recv(timeout=3)
            assert addr == ("127.0.0.1", tx.port)
            sock.leave_multicast(group, "127.0.0.1")
            tx.send(b"after leave")
            await asyncio.sleep(0.3)
            assert sock.available == 0
        with pytest.raises(NetError) as ei:
            sock.join_multicast("10.0.0.1", "127.0.0.1")
        sock.close()
        return data, ei.value.kind

    assert run(main()) == (b"hello group", "invalid")


def test_udp_multicast_send_to_group():
    group = "239.255.77.2"
    with MulticastReceiver(group) as rx:

        async def main():
            sock = await UdpSocket.open(local_host="127.0.0.1")
            sock.set_multicast_options(ttl=1, loop=True, iface="127.0.0.1")
            sock.sendto(b"to the group", (group, rx.port))
            await asyncio.sleep(0.05)
            sock.close()

        run(main())
        assert rx.wait_datagrams(1)[0][0] == b"to the group"
