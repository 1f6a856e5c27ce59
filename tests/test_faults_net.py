"""Network faults on the core socket objects, both directions: UDP loss / unreachable / latency,
TCP latency and bandwidth on what the module sends, ordering of data and closes, ``times``.

The sockets are opened with the module's resolver (as every profile does), so they are the
module's sockets; the peers are real loopback servers (tests/peers/servers.py)."""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from atemu import astart
from atemu.net.errors import NetError
from atemu.net.sockets import TcpConnection, UdpSocket


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_udp_drop_both_ways_seeded_and_zero_cost(tmp_path, udp_echo):
    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            res = m.module.resolver
            u = await UdpSocket.open(local_host="127.0.0.1", remote=("127.0.0.1", udp_echo.port), resolver=res)
            try:
                assert u.faults is None                      # nothing armed: no hook on the datagram path
                # the next datagram the module sends is lost; the one after goes through
                f = m.inject("udp_drop", direction="tx")
                assert u.faults is not None and f["times"] == 1
                u.sendto(b"lost")
                u.sendto(b"kept")
                got, _ = await u.recv(timeout=3)
                assert got == b"kept" and [d for d, _ in udp_echo.datagrams] == [b"kept"]
                assert m.faults() == [] and u.faults is None  # spent: hook gone again
                assert m.snapshot()["net"]["udp"][0]["dropped"] == 1

                # random loss of what the module receives, the same datagrams on every run with a seed
                m.inject("udp_drop", direction="rx", probability=0.5, seed=11, times=None)
                for i in range(20):
                    u.sendto(b"%02d" % i)
                await until(lambda: len(udp_echo.datagrams) == 21, what="20 datagrams at the peer")
                await asyncio.sleep(0.3)
                rng = random.Random(11)
                expected = [b"%02d" % i for i in range(20) if rng.random() >= 0.5]
                received = [d for d, _ in list(u.rx)]
                u.rx.clear()
                assert received == expected and 0 < len(expected) < 20
                m.clear()
                assert u.faults is None
                u.sendto(b"after")
                assert (await u.recv(timeout=3))[0] == b"after"
            finally:
                u.close()
    run(go())


def test_udp_unreachable_and_latency_with_times(tmp_path, udp_echo):
    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            res = m.module.resolver
            u = await UdpSocket.open(local_host="127.0.0.1", resolver=res)
            errors = []
            u.on_error = lambda _s, e: errors.append(e.kind)
            dest = ("127.0.0.1", udp_echo.port)
            try:
                # ICMP port unreachable: the datagram never reaches the peer, the error comes back later
                m.inject("udp_unreachable", port=udp_echo.port)
                u.sendto(b"a", dest)
                await until(lambda: errors, what="the ICMP error")
                assert errors == ["refused"] and udp_echo.datagrams == []
                m.inject("udp_unreachable", error="host")
                u.sendto(b"b", dest)
                await until(lambda: len(errors) == 2, what="the second ICMP error")
                assert errors[1] == "unreachable"
                # no route: the send itself fails
                m.inject("udp_unreachable", error="network")
                with pytest.raises(NetError) as e:
                    u.sendto(b"c", dest)
                assert e.value.kind == "unreachable" and udp_echo.datagrams == []

                # latency both ways: a round trip takes at least twice the delay
                m.inject("latency", delay=0.6, port=udp_echo.port)
                t0 = time.monotonic()
                u.sendto(b"slow", dest)
                await asyncio.sleep(0.1)   # generous margin: a loaded machine may oversleep
                assert udp_echo.datagrams == []              # still held on the way out
                assert (await u.recv(timeout=5))[0] == b"slow"
                assert time.monotonic() - t0 >= 1.2
                m.clear()

                # times=1: only the next delivery is delayed, but what follows it is never reordered
                f = m.inject("latency", delay=0.3, direction="tx", times=1)
                assert f["times"] == 1
                t0 = time.monotonic()
                u.sendto(b"1", dest)
                u.sendto(b"2", dest)
                await until(lambda: len(udp_echo.datagrams) == 3, what="2 more datagrams")
                assert [d for d, _ in udp_echo.datagrams] == [b"slow", b"1", b"2"]
                assert time.monotonic() - t0 >= 0.3
                assert m.faults() == []                      # fired once, then gone
                assert [r["n"] for r in m.transcript(["fault"]) if r.get("action") == "fired"
                        and r["kind"] == "latency"] == [1]
                # the echoes of 1 and 2 are still on their way back: take them first
                assert [(await u.recv(timeout=3))[0] for _ in range(2)] == [b"1", b"2"]
                t0 = time.monotonic()
                u.sendto(b"3", dest)
                assert (await u.recv(timeout=3))[0] == b"3"
                assert time.monotonic() - t0 < 0.25
            finally:
                u.close()
    run(go())


def test_tcp_send_latency_keeps_data_before_close(tmp_path, tcp_sink):
    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            res = m.module.resolver
            m.inject("latency", delay=0.4, direction="tx")
            c = await TcpConnection.open("127.0.0.1", tcp_sink.port, resolver=res, timeout=3)
            t0 = time.monotonic()
            c.write(b"hello ")
            c.write(b"world")
            assert c.write_buffer_size >= 11                 # held: not acknowledged yet
            c.close()                                        # the FIN leaves after the data
            with pytest.raises(NetError):
                c.write(b"more")
            await asyncio.sleep(0.2)
            assert tcp_sink.data == b"" and not tcp_sink.conns[0].eof
            await until(lambda: tcp_sink.conns[0].eof or tcp_sink.conns[0].closed, what="FIN at the sink")
            assert time.monotonic() - t0 >= 0.4
            assert bytes(tcp_sink.conns[0].data) == b"hello world" and not tcp_sink.conns[0].reset
            await c.wait_closed(3)
            assert c.close_reason == "local" and c.total_sent == 11
            m.clear()
    run(go())


def test_tcp_send_bandwidth_and_backpressure(tmp_path, tcp_sink):
    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            res = m.module.resolver
            c = await TcpConnection.open("127.0.0.1", tcp_sink.port, resolver=res, timeout=3)
            tcp_sink.wait_connection()
            m.inject("bandwidth", bps=20000, direction="tx", port=tcp_sink.port)
            t0 = time.monotonic()
            for _ in range(10):
                c.write(b"x" * 1000)                         # 10 000 bytes at 20 000 B/s: ~0.5 s
            await asyncio.sleep(0.2)
            assert 0 < len(tcp_sink.data) < 10000            # arriving, at the limited rate
            await until(lambda: len(tcp_sink.data) == 10000, what="all bytes at the sink")
            assert time.monotonic() - t0 >= 0.4
            # drain() pushes back while more than 64 KiB are held, like a full TCP window
            m.clear()
            m.inject("bandwidth", bps=100000, direction="tx")
            t0 = time.monotonic()
            await c.send(b"y" * 100000)                      # ~1 s at the limit; drain returns at <= 64 KiB held
            assert time.monotonic() - t0 >= 0.25
            assert c.write_buffer_size <= 65536 + 10000
            c.abort()                                        # held data is dropped with the connection
            await c.wait_closed(3)
            m.clear()
    run(go())


def test_tcp_receive_latency_keeps_data_before_fin(tmp_path, tcp_sink):
    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            res = m.module.resolver
            c = await TcpConnection.open("127.0.0.1", tcp_sink.port, resolver=res, timeout=3)
            events = []
            c.on_data = lambda conn: events.append(("data", conn.available))
            c.on_close = lambda conn, why: events.append(("close", why))
            tcp_sink.wait_connection()
            m.inject("latency", delay=0.3, direction="rx")
            t0 = time.monotonic()
            tcp_sink.push(b"last words")
            tcp_sink.close_client()
            await asyncio.sleep(0.15)
            assert events == [] and not c.remote_eof         # neither the data nor the FIN yet
            await c.wait_closed(3)
            assert time.monotonic() - t0 >= 0.3
            assert events == [("data", 10), ("close", "remote")] and c.read() == b"last words"

            # the same for an injected peer close: it comes after the data held before it
            c2 = await TcpConnection.open("127.0.0.1", tcp_sink.port, resolver=res, timeout=3)
            tcp_sink.wait_connection(2)
            events.clear()
            c2.on_data = lambda conn: events.append(("data", conn.available))
            c2.on_close = lambda conn, why: events.append(("close", why))
            tcp_sink.push(b"abc")
            await asyncio.sleep(0.05)
            assert m.inject("remote_close", port=tcp_sink.port)["result"] == 1
            await c2.wait_closed(3)
            assert events == [("data", 3), ("close", "remote")]
            m.clear()
    run(go())


def test_accepted_connections_get_network_faults(tmp_path):
    """A connection the module accepted as a server is reset by the tcp_reset fault like one it opened."""
    from atemu.net.sockets import TcpListener

    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            lst = await TcpListener.open("127.0.0.1", 0, resolver=m.module.resolver)
            client = await TcpConnection.open("127.0.0.1", lst.port, timeout=5)
            server = await lst.accept(timeout=5)
            reasons = []
            server.on_close = lambda _c, reason: reasons.append(reason)
            n = m.inject("tcp_reset", port=lst.port)
            await until(lambda: reasons, what="the accepted connection to be reset")
            assert reasons == ["reset"] and n
            client.close()
            lst.close()
    asyncio.run(go())
