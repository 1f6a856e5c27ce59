"""Network faults and BLE world changes as a host sees them over a real pty (pyserial), armed through
the pytest fixture's ModuleHandle: microchip-winc UDP and TCP, TI SimpleLink UDP, Quectel BLE."""
from __future__ import annotations

import re
import time

import serial

from harness import SerialReader

from peers.servers import TcpSink
from test_microchip_util import WORLD as WINC_WORLD


class Host(SerialReader):
    """A host program on the pty: buffered reads, each wait consumes up to its match."""

    def __init__(self, port, baud=115200):
        super().__init__(serial.serial_for_url(port, baud, timeout=0.05))

    def close(self):
        self.ser.close()


# ------------------------------------------------------------------------------- microchip-winc

WINC_FINAL = rb"(?:\A|[\r\n])(OK|ERROR:\d+)\r\n"


def winc(atemu_module):
    m = atemu_module("microchip-winc", world=WINC_WORLD)
    h = Host(m.port)
    h.send("ATE0\r")
    h.until(rb"OK\r\n")
    for line in ('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"', "AT+WSTA=1"):
        assert winc_cmd(h, line).endswith(b"OK\r\n")
    h.until(rb'\+WSTAAIP:1,"192.168.0.20"\r\n')
    return m, h


def winc_cmd(h, line):
    h.send(line + "\r")
    return h.until(WINC_FINAL)


def test_winc_udp_drop_latency_and_unreachable(atemu_module, udp_echo):
    m, h = winc(atemu_module)
    try:
        assert winc_cmd(h, "AT+SOCKO=1") == b"+SOCKO:1\r\nOK\r\n"
        assert winc_cmd(h, f'AT+SOCKBR=1,"127.0.0.1",{udp_echo.port}') == b"OK\r\n"
        # the datagram the module sends is lost: OK, but no echo ever comes back
        f = m.inject("udp_drop", direction="tx")
        assert winc_cmd(h, 'AT+SOCKWR=1,4,"lost"') == b"OK\r\n"
        h.nothing(rb"\+SOCKRXU", 0.4)
        assert udp_echo.datagrams == [] and m.faults() == []
        # the echo of the next one is lost on its way back
        m.inject("udp_drop", direction="rx", port=udp_echo.port)
        assert winc_cmd(h, 'AT+SOCKWR=1,4,"back"') == b"OK\r\n"
        udp_echo.wait_datagrams(1)
        h.nothing(rb"\+SOCKRXU", 0.4)
        # then all is well
        assert winc_cmd(h, 'AT+SOCKWR=1,4,"echo"') == b"OK\r\n"
        h.until(rb'\+SOCKRXU:1,"127.0.0.1",\d+,4\r\n')
        assert winc_cmd(h, "AT+SOCKRD=1,1,10") == b'+SOCKRD:1,4,"echo"\r\nOK\r\n'

        # latency both ways: the echo arrives a full round trip later
        m.inject("latency", delay=0.25)
        t0 = time.monotonic()
        assert winc_cmd(h, 'AT+SOCKWR=1,4,"slow"') == b"OK\r\n"
        h.until(rb'\+SOCKRXU:1,"127.0.0.1",\d+,4\r\n', timeout=5)
        assert time.monotonic() - t0 >= 0.5
        assert winc_cmd(h, "AT+SOCKRD=1,1,10") == b'+SOCKRD:1,4,"slow"\r\nOK\r\n'
        m.clear()

        # no route to the peer: the send fails the way this module reports a socket error
        m.inject("udp_unreachable", error="network")
        assert winc_cmd(h, 'AT+SOCKWR=1,4,"gone"') == b"ERROR:4\r\n"
        assert winc_cmd(h, 'AT+SOCKWR=1,4,"here"') == b"OK\r\n"
        h.until(rb'\+SOCKRXU:1,"127.0.0.1",\d+,4\r\n')
        assert [d for d, _ in udp_echo.datagrams][-1] == b"here" and b"gone" not in [d for d, _ in udp_echo.datagrams]
        assert f["kind"] == "udp_drop"
    finally:
        h.close()


def test_winc_tcp_send_bandwidth_reaches_the_peer_slowly(atemu_module):
    m, h = winc(atemu_module)
    sink = TcpSink().start()
    try:
        out = winc_cmd(h, "AT+SOCKO=2")
        sid = int(re.match(rb"\+SOCKO:(\d+)\r\nOK\r\n", out).group(1))
        assert winc_cmd(h, f'AT+SOCKBR={sid},"127.0.0.1",{sink.port}') == b"OK\r\n"
        h.until(rb"\+SOCKIND:[^\r]*\r\n")
        sink.wait_connection()
        m.inject("bandwidth", bps=2000, direction="tx")
        payload = bytes(range(256)) * 5 + b"z" * 220                  # 1500 bytes: 0.75 s at 2000 B/s
        t0 = time.monotonic()
        h.send(f"AT+SOCKWR={sid},1500\r#".encode() + payload)
        h.until(WINC_FINAL)
        time.sleep(0.2)
        assert len(sink.data) < 1500                                   # still trickling out
        sink.wait_bytes(1500, timeout=5)
        assert time.monotonic() - t0 >= 0.6 and sink.data == payload
        # the module's close waits for the held data, then the peer sees FIN
        m.clear()
        m.inject("latency", delay=0.3, direction="tx")
        h.send(f'AT+SOCKWR={sid},4,"tail"\r')
        h.until(WINC_FINAL)
        assert winc_cmd(h, f"AT+SOCKCL={sid}") == b"OK\r\n"
        conn = sink.wait_eof(timeout=5)
        assert bytes(conn.data).endswith(b"tail") and not conn.reset
    finally:
        sink.stop()
        h.close()


# ------------------------------------------------------------------------------- TI SimpleLink

def test_ti_udp_port_unreachable_gives_tx_failed(atemu_module, udp_echo):
    from test_ti_common import LAB, world
    m = atemu_module("ti-simplelink", world=world())
    h = Host(m.port)
    try:
        def ok(line):
            h.send(line + "\r\n")
            out = h.until(rb"(?:^|\r\n)(OK|ERROR:[^\r\n]*)\r\n")
            assert out.endswith(b"OK\r\n"), (line, out)
            return out

        ok("AT+Start")
        ok(f'AT+WlanConnect={LAB["ssid"]},,WPA_WPA2,{LAB["password"]},,,')
        h.until(rb"\+eventnetapp:ipv4_acquired,[^\r]*\r\n")
        sd = int(re.search(rb"\+socket:(\d+)", ok("AT+Socket=INET,DGRAM,UDP")).group(1))
        # the peer is up (it would echo), but the fault answers with ICMP port unreachable
        m.inject("udp_unreachable", port=udp_echo.port)
        ok(f"AT+SendTo={sd},INET,{udp_echo.port},127.0.0.1,0,4,ping")
        h.until(rb"\+eventsock:tx_failed,%d,-111\r\n" % sd)
        assert udp_echo.datagrams == []
        ok(f"AT+SendTo={sd},INET,{udp_echo.port},127.0.0.1,0,4,pong")
        assert udp_echo.wait_datagrams(1)[0][0] == b"pong"
    finally:
        h.close()


# ------------------------------------------------------------------------------- Quectel BLE

SENSOR = "58:d3:91:01:02:03"
BLE_WORLD = {"ble": {"peers": [{"address": SENSOR, "name": "Thermo", "rssi": -48,
                                "services": {"fff0": {"fff1": "68656c6c6f"}}}]},
             "options": {"quectel.boot_delay": 0.05}}


class BleHost(Host):
    def cmd(self, line):
        self.send(line + "\r")
        return self.until(rb"\r\n(OK|ERROR)\r\n")

    def central_connect(self):
        """Echo off, BLE central role, connected to the sensor."""
        self.cmd("AT+QECHO=0")
        assert self.cmd("AT+QBLEINIT=1").endswith(b"OK\r\n")
        assert self.cmd(f'AT+QBLECONN=0,"{SENSOR}",5000').endswith(b"OK\r\n")
        self.until(rb"\+QBLESTAT: CONNECTED\r\n")
        self.until(rb"\+QBLECONNPARAM: [^\r]*\r\n")


def test_quectel_central_sees_ble_world_changes(atemu_module):
    m = atemu_module("quectel-fcm242d", world=BLE_WORLD)
    h = BleHost(m.port)
    cmd = h.cmd
    try:
        h.central_connect()
        # a value changed by the world is what the next read returns
        m.set_ble_value(SENSOR, "fff0", "fff1", "6e6577")
        assert cmd('AT+QBLEGATTCRD=0,"FFF1"').endswith(b"OK\r\n")
        assert h.until(rb"new\r\n").endswith(b"\r\nnew\r\n")
        # a notification: nothing while notifications are off, +QBLERECV once they are on
        m.ble_notify(SENSOR, "fff1", "6f6666")
        h.nothing(rb"QBLERECV", 0.4)
        assert cmd('AT+QBLEGATTCNTFCFG=0,"FFF1",1').endswith(b"OK\r\n")
        m.ble_notify(SENSOR, "fff1", "7075736821")
        assert h.until(rb"\+QBLERECV: [^\r]*\r\n[^\r]*\r\n", timeout=3).endswith(
            b'\r\n+QBLERECV: 0,"fff1",5\r\npush!\r\n')
        h.nothing(rb"QBLERECV", 0.3)                       # sent once
        worlds = [r["change"] for r in m.transcript({"world"})]
        assert worlds == ["set_ble_value", "ble_notify", "ble_notify"]
    finally:
        h.close()


def test_quectel_ble_notify_while_disconnected_is_not_replayed(atemu_module):
    """A notification the peer 'sends' with no central connected goes nowhere; the peer keeps the
    value, and nothing is replayed at the next connection."""
    m = atemu_module("quectel-fcm242d", world=BLE_WORLD)
    h = BleHost(m.port)
    cmd = h.cmd
    try:
        m.ble_notify(SENSOR, "fff1", "6f6c64")            # "old", before any connection
        h.central_connect()
        assert cmd('AT+QBLEGATTCNTFCFG=0,"FFF1",1').endswith(b"OK\r\n")
        h.nothing(rb"QBLERECV", 0.4)
        assert cmd('AT+QBLEGATTCRD=0,"FFF1"').endswith(b"OK\r\n")
        assert h.until(rb"old\r\n").endswith(b"\r\nold\r\n")
        assert m.module.world.ble_peers[0].notify == []
    finally:
        h.close()
