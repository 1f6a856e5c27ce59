"""MqttSession against a real mosquitto on 127.0.0.1 (and tiny fake brokers)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
import time

import pytest

from atemu.net.dns import Resolver
from atemu.net.errors import NetError
from atemu.net.mqtt import MqttSession, connack_v5_to_v311
from atemu.net.tls import client_context
from peers.certs import make_pki
from peers.httpserver import HangingListener

ALL_BYTES = bytes(range(256))


def run(coro, timeout: float = 20.0):
    """Run one async test body with an overall time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def session(port: int, client_id: str = "emu-1", **kw) -> MqttSession:
    kw.setdefault("resolver", Resolver())
    kw.setdefault("host", "127.0.0.1")
    kw.setdefault("connect_timeout", 5.0)
    return MqttSession(client_id=client_id, port=port, **kw)


def paho_threads(client_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"paho-mqtt-client-{client_id}" and t.is_alive()]


class Inbox:
    """Collects on_message/on_disconnect callbacks on the asyncio loop."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue = asyncio.Queue()
        self.disconnects: asyncio.Queue = asyncio.Queue()
        self.loop_thread = threading.current_thread()
        self.wrong_thread = False

    def on_message(self, topic, payload, qos, retain, mid):
        self.wrong_thread |= threading.current_thread() is not self.loop_thread
        self.messages.put_nowait((topic, payload, qos, retain))

    def on_disconnect(self, reason, rc):
        self.wrong_thread |= threading.current_thread() is not self.loop_thread
        self.disconnects.put_nowait((reason, rc))

    def attach(self, s: MqttSession) -> MqttSession:
        s.on_message = self.on_message
        s.on_disconnect = self.on_disconnect
        return s


async def in_thread(fn, *args, **kw):
    return await asyncio.to_thread(fn, *args, **kw)


# --------------------------------------------------------------- round trips
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_and_receive_binary_payload_at_each_qos(mosquitto, mqtt_probe, qos):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("dev/up/#")

    async def main():
        inbox = Inbox()
        s = inbox.attach(session(mosquitto.port))
        assert await s.connect() == 0
        assert s.connected
        assert await s.subscribe([("dev/down", qos)]) == [qos]
        mid = await s.publish("dev/up/data", ALL_BYTES, qos=qos)
        assert isinstance(mid, int) and mid > 0
        assert await in_thread(probe.wait_for, "dev/up/data") == (ALL_BYTES, qos, False)

        payload = ALL_BYTES[::-1] + b"\x00\r\n\x1a"
        await in_thread(probe.publish, "dev/down", payload, qos)
        topic, got, got_qos, retain = await asyncio.wait_for(inbox.messages.get(), 5)
        assert (topic, got, got_qos, retain) == ("dev/down", payload, qos, False)
        assert not inbox.wrong_thread
        await s.disconnect()
        assert not s.connected
        assert await asyncio.wait_for(inbox.disconnects.get(), 5) == ("local", 0)

    run(main())


@pytest.mark.parametrize("protocol", [3, 5])
def test_other_protocol_versions_round_trip(mosquitto, protocol):
    async def main():
        inbox = Inbox()
        s = inbox.attach(session(mosquitto.port, protocol=protocol))
        assert await s.connect() == 0
        assert s.connack_reason == 0
        assert await s.subscribe([("v/echo", 1)]) == [1]
        await s.publish("v/echo", b"\xff\x00v", qos=1)
        assert await asyncio.wait_for(inbox.messages.get(), 5) == ("v/echo", b"\xff\x00v", 1, False)
        await s.disconnect()

    run(main())
    assert protocol == 3 or "as emu-1 (p5" in mosquitto.log_text()
    assert protocol == 5 or f"as emu-1 (p{'2' if protocol == 4 else '1'}" in mosquitto.log_text()


def test_retained_message_reaches_later_subscriber(mosquitto):
    async def main():
        pub = session(mosquitto.port, "emu-pub")
        await pub.connect()
        await pub.publish("state/led", b"\x01on", qos=1, retain=True)
        await pub.disconnect()

        inbox = Inbox()
        sub = inbox.attach(session(mosquitto.port, "emu-sub"))
        await sub.connect()
        await sub.subscribe([("state/#", 1)])
        assert await asyncio.wait_for(inbox.messages.get(), 5) == ("state/led", b"\x01on", 1, True)
        sub.close()

    run(main())


def test_unsubscribe_stops_delivery(mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)

    async def main():
        inbox = Inbox()
        s = inbox.attach(session(mosquitto.port))
        await s.connect()
        await s.subscribe([("a", 0), ("b", 0)])
        await s.unsubscribe(["a"])
        await in_thread(probe.publish, "a", b"1", 1)
        await in_thread(probe.publish, "b", b"2", 1)
        # mosquitto delivers in order, so "a" would have arrived before "b"
        assert await asyncio.wait_for(inbox.messages.get(), 5) == ("b", b"2", 0, False)
        assert inbox.messages.empty()
        s.close()

    run(main())


def test_async_callbacks_are_awaited(mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)

    async def main():
        seen = asyncio.Queue()

        async def on_message(topic, payload, qos, retain, mid):
            await asyncio.sleep(0)
            await seen.put(payload)

        s = session(mosquitto.port, on_message=on_message)
        await s.connect()
        await s.subscribe([("t", 0)])
        await in_thread(probe.publish, "t", b"async", 0)
        assert await asyncio.wait_for(seen.get(), 5) == b"async"
        s.close()

    run(main())


async def read_packet(reader) -> tuple[int, bytes]:
    """Read one MQTT packet: (first byte, variable header + payload)."""
    first = (await reader.readexactly(1))[0]
    length, mult = 0, 1
    while True:
        b = (await reader.readexactly(1))[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return first, await reader.readexactly(length)


def test_refused_subscription_reports_0x80():
    """mosquitto 2.0 grants every filter, so a fake broker refuses one."""

    async def main():
        async def handle(reader, writer):
            await read_packet(reader)  # CONNECT
            writer.write(b"\x20\x02\x00\x00")
            first, body = await read_packet(reader)
            assert first >> 4 == 8  # SUBSCRIBE
            writer.write(b"\x90\x04" + body[:2] + b"\x01\x80")  # SUBACK: qos 1, failure
            await writer.drain()
            await reader.read()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        s = session(server.sockets[0].getsockname()[1])
        await s.connect()
        assert await s.subscribe([("open/x", 1), ("secret/x", 2)]) == [1, 0x80]
        s.close()
        server.close()

    run(main())


# ------------------------------------------------------------- will & close
def test_will_is_published_when_session_is_aborted(mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("will/#")

    async def main():
        inbox = Inbox()
        s = inbox.attach(session(mosquitto.port, will=("will/emu", b"\x00gone\xff", 1, False)))
        await s.connect()
        s.close()
        s.close()  # idempotent
        assert not s.connected
        assert await in_thread(probe.wait_for, "will/emu") == (b"\x00gone\xff", 1, False)
        assert paho_threads("emu-1") == []
        assert inbox.disconnects.empty()  # close() is silent

    run(main())


def test_graceful_disconnect_does_not_publish_will(mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("will/#")

    async def main():
        s = session(mosquitto.port, will=("will/emu", b"gone", 0, False))
        await s.connect()
        await s.disconnect()
        assert paho_threads("emu-1") == []

    run(main())
    # the broker handles clients in order: once our marker came back, a will
    # would already have been delivered
    probe.publish("will/marker", b"m", 1)
    assert probe.wait_for("will/#") == (b"m", 1, False)
    assert probe.received() == []


def test_close_stops_paho_thread_and_operations_fail_closed(mosquitto):
    async def main():
        s = session(mosquitto.port, "emu-threads")
        threads_before = threading.active_count()
        await s.connect()
        assert paho_threads("emu-threads") == [] and threading.active_count() == threads_before  # no thread per session
        s.close()
        assert paho_threads("emu-threads") == []
        with pytest.raises(NetError) as ei:
            await s.publish("x", b"1", qos=1)
        assert ei.value.kind == "closed"
        with pytest.raises(NetError) as ei:
            await s.subscribe([("x", 0)])
        assert ei.value.kind == "closed"
        # the session can connect again
        assert await s.connect() == 0
        s.close()
        assert paho_threads("emu-threads") == []

    run(main())


# ------------------------------------------------------- broker going away
@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_going_away_fires_on_disconnect(mosquitto, how):
    async def main():
        inbox = Inbox()
        s = inbox.attach(session(mosquitto.port))
        await s.connect()
        await in_thread(getattr(mosquitto, how))
        reason, rc = await asyncio.wait_for(inbox.disconnects.get(), 5)
        assert reason in ("remote", "error")
        assert rc != 0
        assert not s.connected
        with pytest.raises(NetError) as ei:
            await s.publish("x", b"1")
        assert ei.value.kind == "closed"
        await asyncio.sleep(0.2)
        assert paho_threads("emu-1") == []
        assert inbox.disconnects.empty()  # reported exactly once

        # broker back: the same session reconnects (profiles decide retries)
        await in_thread(mosquitto.start)
        assert await s.connect() == 0
        await s.publish("x", b"again", qos=1)
        await s.disconnect()

    run(main())


def test_v5_disconnect_from_broker_is_remote_with_reason_code():
    """mosquitto 2.0 closes sockets without an MQTT 5 DISCONNECT, so a fake
    broker sends DISCONNECT 0x8B (server shutting down)."""

    async def main():
        async def handle(reader, writer):
            first, _ = await read_packet(reader)
            assert first == 0x10  # CONNECT
            writer.write(b"\x20\x03\x00\x00\x00")  # v5 CONNACK, no properties
            await asyncio.sleep(0.1)
            writer.write(b"\xe0\x02\x8b\x00")  # DISCONNECT, server shutting down
            await writer.drain()
            await reader.read()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        inbox = Inbox()
        s = inbox.attach(session(server.sockets[0].getsockname()[1], protocol=5))
        assert await s.connect() == 0
        assert await asyncio.wait_for(inbox.disconnects.get(), 5) == ("remote", 0x8B)
        assert not s.connected
        await asyncio.sleep(0.1)
        assert inbox.disconnects.empty()
        server.close()

    run(main())


def test_publish_waits_for_ack_and_times_out_without_one():
    """A fake broker that accepts CONNECT but never acknowledges anything."""

    async def main():
        async def handle(reader, writer):
            await reader.read(1024)  # CONNECT
            writer.write(b"\x20\x02\x00\x00")  # CONNACK accepted
            await writer.drain()
            while await reader.read(1024):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        s = session(port)
        assert await s.connect() == 0
        t0 = time.monotonic()
        with pytest.raises(NetError) as ei:
            await s.publish("t", b"x", qos=1, timeout=0.5)
        assert ei.value.kind == "timeout"
        assert 0.4 < time.monotonic() - t0 < 3
        assert await s.publish("t", b"x", qos=0) > 0  # qos 0 needs no ack
        s.close()
        server.close()

    run(main())


def test_missing_ping_response_is_reported_as_error():
    async def main():
        async def handle(reader, writer):
            await reader.read(1024)
            writer.write(b"\x20\x02\x00\x00")
            await writer.drain()
            while await reader.read(1024):
                pass  # swallow PINGREQs

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        inbox = Inbox()
        s = inbox.attach(session(server.sockets[0].getsockname()[1], keepalive=1))
        await s.connect()
        assert await asyncio.wait_for(inbox.disconnects.get(), 6) == ("error", 16)
        s.close()
        server.close()

    run(main())


def test_peer_closing_tcp_is_reported_as_remote():
    async def main():
        async def handle(reader, writer):
            await reader.read(1024)
            writer.write(b"\x20\x02\x00\x00")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        inbox = Inbox()
        s = inbox.attach(session(server.sockets[0].getsockname()[1]))
        await s.connect()
        assert await asyncio.wait_for(inbox.disconnects.get(), 5) == ("remote", 7)
        server.close()

    run(main())


# ----------------------------------------------------------- connect errors
def test_refused_port_raises_refused():
    from peers.mosquitto import free_port

    async def main():
        s = session(free_port())
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "refused"
        assert not s.connected
        assert paho_threads("emu-1") == []

    run(main())


def test_silent_server_gives_connect_timeout():
    async def main():
        async def handle(reader, writer):
            await reader.read(1024)
            await asyncio.sleep(10)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        s = session(server.sockets[0].getsockname()[1], connect_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "timeout"
        assert time.monotonic() - t0 < 2
        assert paho_threads("emu-1") == []
        server.close()

    run(main())


def test_hanging_tcp_connect_times_out():
    async def main():
        with HangingListener() as hang:
            s = session(hang.port, connect_timeout=0.5)
            t0 = time.monotonic()
            with pytest.raises(NetError) as ei:
                await s.connect()
            assert ei.value.kind == "timeout"
            assert 0.4 < time.monotonic() - t0 < 2
            assert paho_threads("emu-1") == []

    run(main())


@pytest.mark.parametrize("stage", ["tcp", "tls"])
def test_close_interrupts_a_pending_connect_promptly(stage, pki):
    async def main():
        async def mute(reader, writer):
            await reader.read()  # never answers the TLS ClientHello

        with HangingListener() as hang:
            server = await asyncio.start_server(mute, "127.0.0.1", 0)
            port = hang.port if stage == "tcp" else server.sockets[0].getsockname()[1]
            s = session(port, connect_timeout=10, tls=client_context(ca=str(pki.ca_cert)))
            task = asyncio.create_task(s.connect())
            await asyncio.sleep(0.3)
            assert not task.done()
            t0 = time.monotonic()
            s.close()
            assert time.monotonic() - t0 < 0.5  # close() did not stall the loop
            assert paho_threads("emu-1") == []
            with pytest.raises(NetError) as ei:
                await task
            assert ei.value.kind == "closed"
            server.close()

    run(main())


def test_server_closing_before_connack_raises_closed():
    async def main():
        async def handle(reader, writer):
            await reader.read(1024)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        s = session(server.sockets[0].getsockname()[1])
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "closed"
        server.close()

    run(main())


def test_dns_failure_raises_dns():
    async def main():
        resolver = Resolver({})
        resolver.fault = "fail"
        s = session(1883, host="broker.test", resolver=resolver)
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "dns"
        assert paho_threads("emu-1") == []

    run(main())


@pytest.mark.parametrize("protocol", [4, 5])
def test_bad_credentials_return_refused_connack(mosquitto_factory, protocol):
    broker = mosquitto_factory(passwords={"device": "s3cret"}, allow_anonymous=False)

    async def main():
        good = session(broker.port, "emu-good", username="device", password="s3cret", protocol=protocol)
        assert await good.connect() == 0
        await good.disconnect()

        bad = session(broker.port, "emu-bad", username="device", password=b"wrong", protocol=protocol)
        rc = await bad.connect()
        assert not bad.connected
        if protocol == 4:
            assert rc in (4, 5) and bad.connack_reason == rc
        else:
            assert bad.connack_reason in (0x86, 0x87)
            assert rc == connack_v5_to_v311(bad.connack_reason) in (4, 5)
        assert paho_threads("emu-bad") == []
        with pytest.raises(NetError):
            await bad.publish("x", b"1")

    run(main())


# ---------------------------------------------------------------------- TLS
def tls_ctx(pki, *, ca=None, cert=True):
    return client_context(
        ca=str(ca or pki.ca_cert),
        cert=str(pki.client_cert) if cert else None,
        key=str(pki.client_key) if cert else None,
    )


def test_tls_with_client_certificate(mosquitto_tls, pki, mqtt_probe):
    probe = mqtt_probe(mosquitto_tls)
    probe.subscribe("tls/#")

    async def main():
        s = session(mosquitto_tls.tls_port, host="127.0.0.1", tls=tls_ctx(pki))
        assert await s.connect() == 0
        await s.publish("tls/x", ALL_BYTES, qos=1)
        assert await in_thread(probe.wait_for, "tls/x") == (ALL_BYTES, 1, False)
        await s.disconnect()

    run(main())
    # use_identity_as_username: the broker saw our client certificate's CN
    assert "u'thing_0001'" in mosquitto_tls.log_text()


def test_tls_wrong_ca_raises_tls_verify(mosquitto_tls, pki):
    async def main():
        s = session(mosquitto_tls.tls_port, tls=tls_ctx(pki, ca=pki.other_ca_cert))
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "tls_verify"
        assert paho_threads("emu-1") == []

    run(main())


def test_tls_hostname_mismatch_raises_tls_verify(mosquitto_tls, pki):
    async def main():
        s = session(
            mosquitto_tls.tls_port,
            host="127.0.0.1",
            server_hostname="not-in-the-cert.test",
            tls=tls_ctx(pki),
        )
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "tls_verify"

    run(main())


@pytest.mark.parametrize("max_version", [None, "TLSv1_2"])
def test_tls_without_client_certificate_is_rejected(mosquitto_tls, pki, max_version):
    """TLS 1.3 reports the missing certificate only after the client side of
    the handshake is done (alert on first read); TLS 1.2 during it."""

    async def main():
        ctx = client_context(
            ca=str(pki.ca_cert), max_version=getattr(ssl.TLSVersion, max_version) if max_version else None
        )
        s = session(mosquitto_tls.tls_port, tls=ctx)
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "tls"
        assert not s.connected
        assert paho_threads("emu-1") == []

    run(main())


def test_tls_client_certificate_from_unknown_ca_is_rejected(mosquitto_tls, pki, caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        ctx = client_context(
            ca=str(pki.ca_cert), cert=str(pki.other_client_cert), key=str(pki.other_client_key)
        )
        s = session(mosquitto_tls.tls_port, tls=ctx)
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "tls"
        assert "unknown ca" in str(ei.value).lower()

    run(main())
    # the user sees one line that says what failed and what to check (nothing from paho or asyncio)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1, loud
    assert "unknown ca" in loud[0].lower() and "client certificate" in loud[0]


def test_dns_override_with_tls_hostname_check(pki, tmp_path, mosquitto_factory):
    # the shared PKI may not name broker.test; make one that does if needed
    if "broker.test" not in pki.hostnames:
        pki = make_pki(tmp_path / "pki", hostnames=["broker.test"])
    broker = mosquitto_factory(
        tls=dict(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key)
    )

    async def main():
        resolver = Resolver({"broker.test": "127.0.0.1"})
        s = session(broker.tls_port, host="broker.test", resolver=resolver, tls=tls_ctx(pki))
        assert await s.connect() == 0
        assert s.remote_ip == "127.0.0.1"
        assert s.server_hostname == "broker.test"
        await s.publish("dns/ok", b"1", qos=1)
        s.close()

        # the same address under a name the certificate does not carry fails
        resolver.hosts["evil.test"] = "127.0.0.1"
        s2 = session(broker.tls_port, host="evil.test", resolver=resolver, tls=tls_ctx(pki))
        with pytest.raises(NetError) as ei:
            await s2.connect()
        assert ei.value.kind == "tls_verify"

    run(main())


def test_invalid_client_id_combination_raises_invalid(mosquitto):
    async def main():
        s = session(mosquitto.port, client_id="", clean_session=False)
        with pytest.raises(NetError) as ei:
            await s.connect()
        assert ei.value.kind == "invalid"

    run(main())


# ------------------------------------------------- open_transport + connect
class FakeBroker:
    """asyncio peer on 127.0.0.1: counts accepted connections, records what each sent and
    when it closed; answers CONNECT with CONNACK 0 unless told to hang up first."""

    def __init__(self) -> None:
        self.accepted = 0
        self.received: list[bytes] = []
        self.closed = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        self.accepted += 1
        self.writers.append(writer)
        got = b""
        try:
            while chunk := await reader.read(1024):
                if not got and chunk[0] >> 4 == 1:
                    writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
                got += chunk
        except ConnectionError:
            pass
        self.received.append(got)
        self.closed += 1
        writer.close()

    async def until(self, pred, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.02)


def connections_logged(broker) -> int:
    return broker.log_text().count("New connection from")


def test_open_transport_then_connect_is_one_connection(mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("one/#")
    before = connections_logged(mosquitto)

    async def main():
        s = session(mosquitto.port, client_id="")
        await s.open_transport()
        assert s.transport_open and not s.connected
        await in_thread(lambda: time.sleep(0.2))
        assert connections_logged(mosquitto) == before + 1     # the TCP connection is up...
        assert "as late-id" not in mosquitto.log_text()        # ...without CONNECT
        s.client_id, s.keepalive = "late-id", 30               # still settable before connect()
        assert await s.connect() == 0
        assert s.connected and not s.transport_open
        await s.publish("one/x", b"hi", qos=1)
        assert await in_thread(probe.wait_for, "one/x") == (b"hi", 1, False)
        await s.disconnect()

    run(main())
    assert re.search(r"New client connected from 127\.0\.0\.1:\d+ as late-id \(p2, c1, k30\)", mosquitto.log_text())
    assert connections_logged(mosquitto) == before + 1


def test_open_transport_does_the_tls_handshake_before_connect(mosquitto_tls, pki, mqtt_probe):
    probe = mqtt_probe(mosquitto_tls)
    probe.subscribe("tls1/#")
    before = connections_logged(mosquitto_tls)

    async def main():
        s = session(mosquitto_tls.tls_port, client_id="tls-late", tls=tls_ctx(pki))
        tls_up = []
        s.on_tls_up = lambda: tls_up.append(s.connected)
        await s.open_transport()
        await asyncio.sleep(0.05)
        assert tls_up == [False]                               # handshake done at open, before CONNECT
        assert await s.connect() == 0
        await s.publish("tls1/x", b"secure", qos=1)
        assert await in_thread(probe.wait_for, "tls1/x") == (b"secure", 1, False)
        await s.disconnect()
        assert tls_up == [False]

    run(main())
    assert connections_logged(mosquitto_tls) == before + 1

    async def wrong_ca():
        s = session(mosquitto_tls.tls_port, tls=tls_ctx(pki, ca=pki.other_ca_cert))
        with pytest.raises(NetError) as ei:
            await s.open_transport()
        assert ei.value.kind == "tls_verify"
        assert not s.transport_open

    run(wrong_ca())


def test_open_transport_close_and_peer_hangup():
    async def main():
        broker = FakeBroker()
        port = await broker.start()
        inbox = Inbox()
        # close() after open_transport: the peer sees the connection end, nothing sent
        s = inbox.attach(session(port))
        await s.open_transport()
        await broker.until(lambda: broker.accepted == 1)
        s.close()
        await broker.until(lambda: broker.closed == 1)
        assert broker.received == [b""] and not s.transport_open
        # the peer hangs up while the transport waits for connect(): on_disconnect, transport gone
        await s.open_transport()
        await broker.until(lambda: broker.accepted == 2)
        broker.writers[1].close()
        assert await asyncio.wait_for(inbox.disconnects.get(), 5) == ("remote", 7)
        assert not s.transport_open and not s.connected
        # connect() then dials a new connection
        assert await s.connect() == 0
        assert broker.accepted == 3 and s.connected
        s.close()
        assert inbox.disconnects.empty() and not inbox.wrong_thread
        with pytest.raises(NetError) as ei:                    # a second open while open is refused
            await s.open_transport()
            await s.open_transport()
        assert ei.value.kind == "invalid"
        s.close()
        broker.server.close()

    run(main())


def test_open_transport_errors_and_abort():
    from peers.mosquitto import free_port

    async def main():
        s = session(free_port())
        with pytest.raises(NetError) as ei:
            await s.open_transport()
        assert ei.value.kind == "refused"
        with HangingListener() as hang:
            s = session(hang.port, connect_timeout=10)
            task = asyncio.create_task(s.open_transport())
            await asyncio.sleep(0.3)
            assert not task.done()
            with pytest.raises(NetError) as ei:                # connect() while still opening
                await s.connect()
            assert ei.value.kind == "invalid"
            t0 = time.monotonic()
            s.close()
            assert time.monotonic() - t0 < 0.5
            with pytest.raises(NetError) as ei:
                await task
            assert ei.value.kind == "closed"
            assert not [t for t in threading.enumerate() if t.name.startswith("mqtt-open-") and t.is_alive()]

    run(main())


# ------------------------------------------------------------- many sessions
def test_twenty_sessions_share_the_loop_without_threads(mosquitto, mqtt_probe):
    """Smoke test of the scale benchmark (``make bench``): sessions live on the loop, no thread each."""
    probe = mqtt_probe(mosquitto)
    probe.subscribe("many/#")

    async def main():
        before = threading.active_count()
        sessions = [session(mosquitto.port, f"emu-many-{i}") for i in range(20)]
        assert await asyncio.gather(*(s.connect() for s in sessions)) == [0] * 20
        assert threading.active_count() == before
        for i, s in enumerate(sessions):
            await s.publish(f"many/{i}", b"m%d" % i, qos=1)
        got = await in_thread(lambda: [probe.wait_for("many/#") for _ in range(20)])
        assert sorted(p for p, _, _ in got) == sorted(b"m%d" % i for i in range(20))
        for s in sessions:
            await s.disconnect()
        assert not any(s.connected for s in sessions)

    run(main())


# --------------------------------------------------------------- MQTT 5 properties
def test_v5_properties_both_ways(mosquitto, mqtt_probe):
    import paho.mqtt.client as paho
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    probe = mqtt_probe(mosquitto, protocol=paho.MQTTv5)
    probe.subscribe(["up/#", "wills/#"])

    async def main():
        events: list = []
        s = session(mosquitto.port, "emu-v5", protocol=5, properties=[(17, 120), (38, ("dev", "emu"))],
                    will=("wills/emu", b"gone", 1, False), will_properties=[(3, "text/plain"), (38, ("w", "1"))],
                    on_properties=lambda packet, props: events.append((packet, props)),
                    on_message=lambda t, p, q, r, m: events.append(("message", t)))
        assert await s.connect() == 0
        # the CONNACK's properties: reported before connect() returned, and kept
        assert events == [("CONNACK", [(34, 10), (33, 20)])] and s.connack_properties == [(34, 10), (33, 20)]
        assert await s.subscribe([("down/#", 1)], properties=[(11, 9)]) == [1]
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("k", "v")
        props.CorrelationData = b"\x00\xff"
        await in_thread(probe.publish, "down/x", b"hi", 1, False, 5.0, props)
        for _ in range(50):
            if ("message", "down/x") in events:
                break
            await asyncio.sleep(0.05)
        packet, got = events[1]
        assert packet == "PUBLISH" and events[2] == ("message", "down/x")   # properties first, then the message
        assert sorted(got) == [(9, b"\x00\xff"), (11, 9), (38, ("k", "v"))]
        await s.publish("up/y", b"x", qos=1, properties=[(3, "application/json"), (2, 60), (38, ("a", "b"))])
        msg = await in_thread(probe.wait_message, "up/y")
        assert (msg.properties.ContentType, msg.properties.UserProperty) == ("application/json", [("a", "b")])
        assert 0 < msg.properties.MessageExpiryInterval <= 60
        with pytest.raises(NetError) as err:
            await s.publish("up/z", b"x", properties=[(35, 0)])          # Topic Alias 0 is not allowed
        assert err.value.kind == "invalid"
        with pytest.raises(NetError):
            await s.publish("up/z", b"x", properties=[(17, 5)])          # not a PUBLISH property
        await s.unsubscribe(["down/#"], properties=[(38, ("u", "1"))])
        await s.disconnect(reason_code=4)                                # with will message
        will = await in_thread(probe.wait_message, "wills/emu")
        assert (will.payload, will.properties.ContentType, will.properties.UserProperty) == \
            (b"gone", "text/plain", [("w", "1")])

    run(main())


def test_properties_need_protocol_5(mosquitto):
    from atemu.net.mqtt import props_for

    async def main():
        s = session(mosquitto.port, "emu-v4", protocol=4)
        assert await s.connect() == 0
        with pytest.raises(NetError) as err:
            await s.publish("a/b", b"x", properties=[(3, "text/plain")])
        assert err.value.kind == "invalid"
        await s.disconnect(reason_code=4, properties=[(31, "ignored with 3.1.1")])
        s2 = session(mosquitto.port, "emu-v4b", protocol=4, properties=[(17, 10)])
        with pytest.raises(NetError) as err:
            await s2.connect()
        assert err.value.kind == "invalid"

    run(main())
    mixed = [(17, 1), (3, "t"), (11, 2), (35, 4), (24, 5), (38, ("k", "v")), (31, "r"), (33, 3)]
    assert props_for("CONNECT", mixed) == [(17, 1), (38, ("k", "v")), (33, 3)]
    assert props_for("PUBLISH", mixed) == [(3, "t"), (35, 4), (38, ("k", "v"))]    # no subscription id from a client
    assert props_for("WILL", mixed) == [(3, "t"), (24, 5), (38, ("k", "v"))]
    assert props_for("SUBSCRIBE", mixed) == [(11, 2), (38, ("k", "v"))]
    assert props_for("DISCONNECT", mixed) == [(17, 1), (38, ("k", "v")), (31, "r")]
