"""Every fault family through the in-process API (no pty): AT layer, device/UART, triggers, network."""
from __future__ import annotations

import asyncio
import re
import time

import pytest

from atemu import FaultError, astart, start
from atemu.net.errors import NetError
from atemu.net.sockets import TcpConnection

FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")


@pytest.fixture
def m(tmp_path):
    h = start("eseye-anynet", transport="inproc", state_dir=tmp_path)
    yield h
    h.close()


def cmd(m, line, timeout=3.0):
    m.write(line + "\r")
    buf = b""
    deadline = time.monotonic() + timeout
    while not FINAL.search(buf):
        if time.monotonic() > deadline:
            raise AssertionError(f"no final result for {line!r}: {buf!r}")
        buf += m.read(timeout=0.05)
    return buf


def quiet(m, t=0.3):
    time.sleep(t)
    return m.read()


def echo_off(m):
    assert cmd(m, "ATE0").endswith(b"OK\r\n")


# ---------------------------------------------------------------------------------------- AT layer

def test_at_error_once_then_normal(m):
    echo_off(m)
    assert m.module.fault_hooks is None              # nothing armed: no hooks on the hot path
    f = m.inject("at_error", command="+GSN")
    assert f["times"] == 1 and m.module.fault_hooks is not None
    assert cmd(m, "AT+QCCID").endswith(b"OK\r\n")    # other commands untouched
    assert cmd(m, "AT+GSN") == b"\r\nERROR\r\n"
    assert cmd(m, "AT+GSN") == b"\r\n356938035643809\r\n\r\nOK\r\n"
    assert m.faults() == [] and m.module.fault_hooks is None


def test_at_error_n_times_and_after_n_commands(m):
    echo_off(m)
    m.inject("at_error", times=2, after=1)           # the next command passes, the 2 after it fail
    assert cmd(m, "AT") == b"\r\nOK\r\n"
    assert cmd(m, "AT") == b"\r\nERROR\r\n"
    assert cmd(m, "AT") == b"\r\nERROR\r\n"
    assert cmd(m, "AT") == b"\r\nOK\r\n"


def test_at_error_uses_the_vendor_error_format(tmp_path):
    from atemu.api import wrap
    from atemu.module import Module
    from atemu.profile import CmdError
    from atemu.profiles.eseye_anynet import EseyeAnynet

    class Vendor(EseyeAnynet):
        name = "vendor-test"

        def format_error(self, err: CmdError) -> str:
            return f"+CME ERROR: {err.code if err.code is not None else 100}"

    async def go():
        mod = Module(Vendor, state_dir=tmp_path, pacing=False)
        h = wrap(mod)
        out = bytearray()

        class Sink:
            def write(self, d):
                out.extend(d)

            async def drain(self):
                pass
        mod.attach(Sink())
        await mod.start()
        try:
            h.inject("at_error", command="+GSN", code=3)
            mod.feed(b"AT+GSN\r")
            await asyncio.sleep(0.2)
            return bytes(out)
        finally:
            await h.aclose()
            await mod.stop()
    assert asyncio.run(go()).endswith(b"\r\n+CME ERROR: 3\r\n")


def test_delayed_response(m):
    echo_off(m)
    m.inject("at_delay", command="+AWSSTATE", delay=0.4)
    t0 = time.monotonic()
    assert cmd(m, "AT+AWSSTATE?") == b"\r\n+AWSSTATE: 0\r\n\r\nOK\r\n"
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    cmd(m, "AT+AWSSTATE?")
    assert time.monotonic() - t0 < 0.3


def test_urc_between_echo_and_final_result(m):
    m.inject("urc_inject", command="+AWSSTATE", text="+AWS:0,0")
    assert cmd(m, "AT+AWSSTATE?") == b"AT+AWSSTATE?\r\r\n+AWS:0,0\r\n\r\n+AWSSTATE: 0\r\n\r\nOK\r\n"


def test_urc_storm_never_splits_a_response(m):
    echo_off(m)
    m.inject("urc_storm", text="+AWSPUBCLOSE: 1, -2", count=200, interval=0.001)
    answers = [cmd(m, "AT+GSN") for _ in range(10)]
    time.sleep(0.4)
    total = b"".join(answers) + m.read()
    assert total.count(b"\r\n356938035643809\r\n\r\nOK\r\n") == 10   # every response in one piece
    assert total.count(b"\r\n+AWSPUBCLOSE: 1, -2\r\n") == 200


# ---------------------------------------------------------------------------------------- device / UART

def test_reboot_mid_command_after_n_commands(m):
    echo_off(m)
    m.inject("reboot", after=2)
    assert cmd(m, "AT") == b"\r\nOK\r\n"
    assert cmd(m, "AT") == b"\r\nOK\r\n"
    m.write("AT+GSN\r")                              # the module resets instead of answering
    assert quiet(m) == b""
    assert cmd(m, "AT") == b"AT\r\r\nOK\r\n"         # echo is back on: volatile state is gone
    assert [r["event"] for r in m.transcript({"reboot"})] == ["reboot"]


def test_reboot_now_and_freeze_thaw(m):
    echo_off(m)
    m.reboot()
    assert cmd(m, "AT") == b"AT\r\r\nOK\r\n"
    m.inject("freeze")
    m.write("AT\r")
    assert quiet(m) == b""
    m.inject("thaw")
    assert cmd(m, "AT") == b"AT\r\r\nOK\r\n"


def test_dropped_and_corrupted_bytes_tx(m):
    echo_off(m)
    m.inject("uart_drop", direction="tx")            # one byte lost on the way to the host
    m.write("AT\r")
    time.sleep(0.2)
    assert m.read() == b"\nOK\r\n"
    m.inject("uart_corrupt", direction="tx", times=None, probability=0.3, seed=1234)
    m.write("AT+QCCID\r")
    time.sleep(0.2)
    garbled = m.read()
    clean = b"\r\n+QCCID: 89440000000000000001\r\n\r\nOK\r\n"
    assert garbled != clean and len(garbled) == len(clean)      # bits flipped, nothing lost
    armed = [r for r in m.transcript({"fault"}) if r["action"] == "armed" and r["kind"] == "uart_corrupt"]
    assert armed[0]["seed"] == 1234


def test_seeded_corruption_replays_identically(tmp_path):
    outs = []
    for i in range(2):
        with start("eseye-anynet", transport="inproc", state_dir=tmp_path / str(i)) as h:
            echo_off(h)
            h.inject("uart_corrupt", direction="tx", times=None, probability=0.2, seed=99)
            h.write("AT+QCCID\r")
            time.sleep(0.2)
            outs.append(h.read())
    assert outs[0] == outs[1]
    assert outs[0] != b"\r\n+QCCID: 89440000000000000001\r\n\r\nOK\r\n"


def test_corrupted_rx_and_rx_overflow(m):
    echo_off(m)
    m.inject("uart_corrupt", direction="rx", times=None, probability=1.0, seed=5)
    m.write("AT\r")
    time.sleep(0.3)
    assert b"\r\nOK\r\n" not in m.read()              # the module saw garbage, not AT
    m.clear()
    m.write("\r")                                          # the host resynchronises with a bare CR
    quiet(m)
    assert cmd(m, "AT") == b"\r\nOK\r\n"                # and the module survived the garbage
    m.inject("rx_overflow", size=9)
    m.write("AT\rAT\rAT\rAT\rAT\rAT\r")              # 18 bytes in one burst: 9 are lost
    time.sleep(0.3)
    assert m.read().count(b"OK\r\n") == 3


def test_probability_is_reproducible_with_the_seed(tmp_path):
    patterns = []
    for i in range(2):
        with start("eseye-anynet", transport="inproc", state_dir=tmp_path / str(i)) as h:
            echo_off(h)
            f = h.inject("at_error", probability=0.5, seed=7, times=None)
            patterns.append([b"ERROR" in cmd(h, "AT") for _ in range(16)])
            assert f["seed"] == 7
    assert patterns[0] == patterns[1]
    assert 0 < sum(patterns[0]) < 16


def test_fault_at_a_time(m):
    echo_off(m)
    m.inject("at_error", at=0.3, times=None)
    assert cmd(m, "AT") == b"\r\nOK\r\n"
    time.sleep(0.4)
    assert cmd(m, "AT") == b"\r\nERROR\r\n"
    assert m.clear() == 1
    assert cmd(m, "AT") == b"\r\nOK\r\n"


def test_bad_fault_requests_say_what_to_do(m):
    with pytest.raises(FaultError, match="choose one of"):
        m.inject("meteor")
    with pytest.raises(FaultError, match="between 0 and 1"):
        m.inject("at_error", probability=2)
    with pytest.raises(FaultError, match="bad parameters for urc"):
        m.inject("urc")                                  # no text
    with pytest.raises(FaultError, match="bps must be between"):
        m.inject("bandwidth", bps=0)
    with pytest.raises(FaultError, match="delay must be a number"):
        m.inject("at_delay", delay="soon")
    with pytest.raises(FaultError, match="direction must be"):
        m.inject("uart_drop", direction="sideways")
    with pytest.raises(FaultError, match="must be numbers"):
        m.inject("at_error", after="two")
    with pytest.raises(FaultError, match="between 0 and 1"):
        m.inject("at_error", probability=float("nan"))
    assert m.faults() == []
    assert cmd(m, "AT").endswith(b"OK\r\n")


def test_every_fault_is_in_the_transcript(m):
    m.inject("urc", text="+AWS:1,0")
    m.inject("at_error", probability=0.5, seed=3)
    recs = m.transcript({"fault"})
    assert [(r["action"], r["kind"]) for r in recs] == [("armed", "urc"), ("fired", "urc"), ("armed", "at_error")]
    assert recs[2]["seed"] == 3 and recs[2]["probability"] == 0.5


# ---------------------------------------------------------------------------------------- network (core layer)

def test_network_faults_at_the_socket_layer(tcp_echo, tmp_path):
    async def go():
        m = await astart("eseye-anynet", transport="inproc", state_dir=tmp_path)
        res = m.module.resolver
        try:
            m.inject("connect_refused", port=tcp_echo.port)
            with pytest.raises(NetError) as e:
                await TcpConnection.open("127.0.0.1", tcp_echo.port, resolver=res, timeout=3)
            assert e.value.kind == "refused"

            c = await TcpConnection.open("127.0.0.1", tcp_echo.port, resolver=res, timeout=3)
            closes = []
            c.on_close = lambda conn, why: closes.append(why)
            assert m.snapshot()["net"]["tcp"][0]["remote"] == ["127.0.0.1", tcp_echo.port]
            m.inject("tcp_reset", port=tcp_echo.port)
            await c.wait_closed(2)
            assert closes == ["reset"] and c.close_reason == "reset"
            with pytest.raises(NetError) as e:
                await c.send(b"x")
            assert e.value.kind == "reset"

            c = await TcpConnection.open("127.0.0.1", tcp_echo.port, resolver=res, timeout=3)
            m.inject("remote_close")
            await c.wait_closed(2)
            assert c.close_reason == "remote" and c.remote_eof

            m.inject("latency", delay=0.3, times=None)
            c = await TcpConnection.open("127.0.0.1", tcp_echo.port, resolver=res, timeout=3)
            t0 = time.monotonic()
            await c.send(b"ping")
            assert await c.read_exactly(4, timeout=3) == b"ping"
            assert time.monotonic() - t0 >= 0.3
            m.clear()
            m.inject("bandwidth", bps=20000, times=None)
            c2 = await TcpConnection.open("127.0.0.1", tcp_echo.port, resolver=res, timeout=3)
            t0 = time.monotonic()
            await c2.send(b"z" * 8000)
            assert await c2.read_exactly(8000, timeout=5) == b"z" * 8000
            assert time.monotonic() - t0 >= 0.35
            c.abort()
            c2.abort()
            m.clear()

            m.inject("tls_fail")
            import ssl
            with pytest.raises(NetError) as e:
                await TcpConnection.open("127.0.0.1", tcp_echo.port, resolver=res, ssl=ssl.create_default_context(),
                                         server_hostname="localhost", timeout=3)
            assert e.value.kind == "tls"

            m.inject("dns_timeout", host="peer.test")
            with pytest.raises(NetError) as e:
                await res.resolve_one("peer.test", timeout=0.2)
            assert e.value.kind == "dns_timeout"
            m.clear()
            m.change_world("set_dns", host="peer.test", ip="127.0.0.1")
            assert await res.resolve_one("peer.test") == "127.0.0.1"
            m.inject("dns_fail")                         # once: the next lookup fails, then all is well
            with pytest.raises(NetError) as e:
                await res.resolve_one("peer.test")
            assert e.value.kind == "dns"
            assert await res.resolve_one("peer.test") == "127.0.0.1"
        finally:
            await m.aclose()
    asyncio.run(go())


def test_async_api_over_tcp_transport(tmp_path):
    async def go():
        async with await astart("eseye-anynet", transport="tcp", state_dir=tmp_path) as m:
            assert m.port.startswith("socket://127.0.0.1:")
            host, port = m.port[len("socket://"):].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"AT+GSN\r")
            got = await asyncio.wait_for(reader.readuntil(b"OK\r\n"), 3)
            m.inject("at_error", command="AT+GSN")        # plain methods work on the module's own loop
            writer.write(b"AT+GSN\r")
            got2 = await asyncio.wait_for(reader.readuntil(b"ERROR\r\n"), 3)
            snap = m.snapshot()
            writer.close()
            return got, got2, snap
    got, got2, snap = asyncio.run(go())
    assert got == b"AT+GSN\r\r\n356938035643809\r\n\r\nOK\r\n"
    assert got2 == b"AT+GSN\r\r\nERROR\r\n"
    assert snap["coverage"] == {"AT+GSN exec": 1} and snap["state"]["awsstate"] == 0


def test_world_api_reaches_the_profile_hook(tmp_path):
    from atemu.api import wrap
    from atemu.module import Module
    from atemu.profiles.eseye_anynet import EseyeAnynet

    seen = []

    class Watching(EseyeAnynet):
        name = "watching-test"

        def world_changed(self, change):
            seen.append(change["change"])

    async def go():
        mod = Module(Watching, state_dir=tmp_path, pacing=False)
        await mod.start()
        h = wrap(mod)
        try:
            h.change_world("add_ble_peer", address="AA:BB:CC:DD:EE:01", name="sensor")
            h.set_ble_value("AA:BB:CC:DD:EE:01", "180F", "2A19", "64")
            h.ble_notify("AA:BB:CC:DD:EE:01", "2A19", "63")
            h.set_dns("broker.test", "127.0.0.1")
            h.set_rssi(None, -99)
            h.add_ap("lab2", password="pw123456")
            h.remove_ap("lab2")
            with pytest.raises(Exception, match="no access point 'lab2'"):
                h.remove_ap("lab2")
            return h.snapshot(), mod.world, h.transcript({"world"})
        finally:
            await h.aclose()
            await mod.stop()
    snap, world, recs = asyncio.run(go())
    assert seen == ["add_ble_peer", "set_ble_value", "ble_notify", "set_dns", "set_rssi", "add_ap", "remove_ap"]
    assert [r["change"] for r in recs] == seen
    peer = world.find_peer("AA:BB:CC:DD:EE:01")
    assert peer.services == {"180F": {"2A19": "64"}} and peer.notify[0].value == "63"
    assert snap["world"]["dns"]["broker.test"] == "127.0.0.1"
    assert snap["world"]["cellular"]["rssi"] == -99
    assert snap["world"]["ble_peers"] == [{"address": "AA:BB:CC:DD:EE:01", "name": "sensor", "rssi": -60}]
