"""``latency`` and ``bandwidth`` faults on MQTT sessions (emulator/net/mqtt.py, shaped in paho's
network thread): what the module publishes reaches a real mosquitto late or slowly, what the broker
sends reaches the host late, order is kept, clearing restores speed, nothing is paid when unarmed.

Bare sessions use a module's resolver (as every profile does), so they are the module's sessions;
the Eseye test goes through a real pty and the AWS-style TLS broker."""
from __future__ import annotations

import asyncio
import contextlib
import re
import time

import pytest
import serial

from atemu import astart
from atemu.net.mqtt import MqttSession
from harness import SerialReader
from peers.aws import THING, aws_pki, broker, sim_world  # noqa: F401  (fixtures)


def run(coro, timeout: float = 40.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def open_session(m, port: int, client_id: str = "emu-shaped") -> MqttSession:
    s = MqttSession(client_id=client_id, host="127.0.0.1", port=port, resolver=m.module.resolver,
                    connect_timeout=5.0)
    assert await s.connect() == 0
    return s

@contextlib.asynccontextmanager
async def shaped_session(tmp_path, port: int):
    """An Eseye module (for its fault registry and resolver) and an MQTT session to the broker."""
    async with await astart("eseye-anynet", state_dir=tmp_path) as m:
        s = await open_session(m, port)
        try:
            yield m, s
        finally:
            s.close()



async def arrivals(probe, topic: str, n: int, t0: float, timeout: float = 15.0) -> list[tuple[bytes, float]]:
    """The next n messages on topic at the probe, each with its arrival time relative to t0."""
    out = []
    for _ in range(n):
        payload, _, _ = await asyncio.to_thread(probe.wait_for, topic, timeout)
        out.append((payload, time.monotonic() - t0))
    return out


def test_tx_latency_delays_publishes_in_order_and_clear_restores_speed(tmp_path, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("t/#", qos=0)

    async def go():
        async with shaped_session(tmp_path, mosquitto.port) as (m, s):
            assert s.shaping is None                     # nothing armed: paho asks nobody
            # armed on an already-open session
            f = m.inject("latency", delay=1.0, direction="tx", port=mosquitto.port)
            assert s.shaping is not None and f["times"] is None
            t0 = time.monotonic()
            for i in range(5):
                await s.publish("t/a", b"m%d" % i, qos=0)
            got = await arrivals(probe, "t/a", 5, t0)
            assert [p for p, _ in got] == [b"m%d" % i for i in range(5)]   # never reordered
            assert min(t for _, t in got) >= 1.0, got
            # QoS 1: PUBLISH delayed, so the PUBACK too
            t0 = time.monotonic()
            await s.publish("t/a", b"q1", qos=1)
            assert time.monotonic() - t0 >= 1.0
            assert (await arrivals(probe, "t/a", 1, t0))[0][0] == b"q1"

            # cleared while data is held: the later publish does not overtake the held one
            t0 = time.monotonic()
            await s.publish("t/a", b"held", qos=0)
            m.clear()
            assert s.shaping is None
            await s.publish("t/a", b"after", qos=0)
            got = await arrivals(probe, "t/a", 2, t0)
            assert [p for p, _ in got] == [b"held", b"after"] and got[1][1] >= 1.0, got
            # and then full speed again
            t0 = time.monotonic()
            await s.publish("t/a", b"fast", qos=0)
            got = await arrivals(probe, "t/a", 1, t0)
            assert got[0][1] < 0.9, got
            assert not s._client._atemu_txq

    run(go())


def test_disconnect_goes_out_after_held_publishes(tmp_path, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("d/#", qos=0)

    async def go():
        async with shaped_session(tmp_path, mosquitto.port) as (m, s):
            reasons = []
            s.on_disconnect = lambda reason, rc: reasons.append((reason, rc))
            m.inject("latency", delay=1.0, direction="tx")
            t0 = time.monotonic()
            await s.publish("d/x", b"last words", qos=0)
            await s.disconnect()                 # DISCONNECT is queued behind the held PUBLISH
            got = await arrivals(probe, "d/x", 1, t0)
            assert got[0][0] == b"last words" and got[0][1] >= 1.0
            assert reasons == [("local", 0)]

    run(go())


def test_times_counts_writes_and_port_host_filter(tmp_path, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("t/#", qos=0)

    async def go():
        async with shaped_session(tmp_path, mosquitto.port) as (m, s):
            # another broker's port or host: not this session
            m.inject("latency", delay=1.0, port=1 if mosquitto.port != 1 else 2)
            m.inject("latency", delay=1.0, host="broker.example")
            t0 = time.monotonic()
            await s.publish("t/x", b"unshaped", qos=0)
            assert (await arrivals(probe, "t/x", 1, t0))[0][1] < 0.9
            m.clear()
            # times=1: one write paho makes (here: one PUBLISH) is delayed, the next is not
            f = m.inject("latency", delay=1.0, direction="tx", host="127.0.0.1", times=1)
            t0 = time.monotonic()
            await s.publish("t/x", b"one", qos=0)
            got = await arrivals(probe, "t/x", 1, t0)
            assert got[0][1] >= 1.0
            await asyncio.sleep(0.05)
            assert m.faults() == [] and s.shaping is None     # spent: hook gone
            t0 = time.monotonic()
            await s.publish("t/x", b"two", qos=0)
            assert (await arrivals(probe, "t/x", 1, t0))[0][1] < 0.9
            fired = [r for r in m.transcript({"fault"}) if r["action"] == "fired" and r["id"] == f["id"]]
            assert len(fired) == 1 and fired[0]["direction"] == "tx"

    run(go())


def test_rx_latency_delays_messages_from_the_broker(tmp_path, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)

    async def go():
        async with shaped_session(tmp_path, mosquitto.port) as (m, s):
            inbox: list[tuple[bytes, float]] = []
            s.on_message = lambda topic, payload, qos, retain, mid: inbox.append((payload, time.monotonic()))
            assert await s.subscribe([("in/#", 1)]) == [1]
            m.inject("latency", delay=1.0, direction="rx")
            t0 = time.monotonic()
            await asyncio.to_thread(probe.publish, "in/a", b"r1", 1)
            await asyncio.to_thread(probe.publish, "in/a", b"r2", 1)
            deadline = time.monotonic() + 10
            while len(inbox) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert [p for p, _ in inbox] == [b"r1", b"r2"]
            assert inbox[0][1] - t0 >= 1.0, inbox
            # tx is not shaped by an rx fault: a publish goes out at once
            probe.subscribe("out", qos=0)
            t1 = time.monotonic()
            await s.publish("out", b"o", qos=0)
            assert (await arrivals(probe, "out", 1, t1))[0][1] < 0.9
            m.clear()
            inbox.clear()
            t0 = time.monotonic()
            await asyncio.to_thread(probe.publish, "in/a", b"r3", 1)
            while not inbox and time.monotonic() < t0 + 10:
                await asyncio.sleep(0.01)
            assert inbox and inbox[0][0] == b"r3" and inbox[0][1] - t0 < 0.9

    run(go())


def test_bandwidth_limits_a_burst_and_clear_restores_speed(tmp_path, mosquitto, mqtt_probe):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("b/#", qos=0)
    payload = b"x" * 500

    async def go():
        async with shaped_session(tmp_path, mosquitto.port) as (m, s):
            m.inject("bandwidth", bps=2000, direction="tx")
            t0 = time.monotonic()
            for _ in range(8):                  # ~4100 bytes at 2000 B/s: ~2 s
                await s.publish("b/t", payload, qos=0)
            got = await arrivals(probe, "b/t", 8, t0)
            span = got[-1][1]
            assert 1.6 <= span <= 8.0, got
            assert got[0][1] < 1.0             # paced, not all held to the end
            m.clear()
            t0 = time.monotonic()
            for _ in range(8):
                await s.publish("b/t", payload, qos=0)
            got = await arrivals(probe, "b/t", 8, t0)
            assert got[-1][1] < 0.8, got

    run(go())


def test_no_shaping_work_when_nothing_is_armed(tmp_path, mosquitto, mqtt_probe, monkeypatch):
    probe = mqtt_probe(mosquitto)
    probe.subscribe("z/#", qos=0)

    async def go():
        async with await astart("eseye-anynet", state_dir=tmp_path) as m:
            calls = []
            reg = m.module.resolver.faults
            real = reg.mqtt_shaping
            monkeypatch.setattr(reg, "mqtt_shaping", lambda *a: calls.append(a) or real(*a))
            s = await open_session(m, mosquitto.port)
            s.on_message = lambda *a: None
            try:
                m.inject("dns_fail", host="elsewhere.example")    # another condition: still no shaping
                assert s.shaping is None
                assert await s.subscribe([("z/#", 0)]) == [0]
                t0 = time.monotonic()
                for i in range(20):
                    await s.publish("z/n", b"%d" % i, qos=1)
                await arrivals(probe, "z/n", 20, t0)
                assert calls == [] and not s._client._atemu_txq and not s._client._atemu_rxq
                # sanity: the counter does see shaping once a fault is armed
                m.inject("latency", delay=0.01)
                await s.publish("z/n", b"x", qos=1)
                assert calls
            finally:
                s.close()

    run(go())


class Host(SerialReader):
    FINAL = re.compile(rb"\r\n(OK|ERROR)\r\n")

    def cmd(self, line, timeout=10.0):
        self.ser.write(line.encode() + b"\r")
        return self.until(self.FINAL, timeout)


def test_eseye_rx_latency_delays_the_aws_urc(atemu_module, broker, aws_pki):
    m = atemu_module("eseye-anynet", world=sim_world(aws_pki, broker.tls_port))
    host = Host(serial.serial_for_url(m.port, 9600, timeout=0.05))
    host.cmd("ATE0")
    assert host.cmd('AT+AWSSUBOPEN=0,"cmd"') == b"\r\nOK\r\n"
    assert host.until(rb"\+AWSSUBOPEN: 0,-?\d\r\n", 15).endswith(b"+AWSSUBOPEN: 0,0\r\n")
    probe = broker.probe()
    try:
        m.inject("latency", delay=1.5, direction="rx", port=broker.tls_port)   # the open session too
        t0 = time.monotonic()
        probe.publish(f"cmd/{THING}", b"late", qos=1)
        host.until(rb"\+AWS:0,4\r\nlate", 10)
        assert time.monotonic() - t0 >= 1.5
        m.clear()
        t0 = time.monotonic()
        probe.publish(f"cmd/{THING}", b"soon", qos=1)
        host.until(rb"\+AWS:0,4\r\nsoon", 10)
        assert time.monotonic() - t0 < 1.2
    finally:
        probe.close()
