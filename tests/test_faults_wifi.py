"""Link faults against a Wi-Fi profile (quectel-fcm242d): the host sees +QSTASTAT when the AP goes."""
from __future__ import annotations

import re
import time

import serial

from harness import SerialReader

SSID, PWD = "lab-ap", "lab-pass-123"
WORLD = {"wifi": {"access_points": [{"ssid": SSID, "security": "wpa2", "password": PWD, "rssi": -40, "channel": 11}]},
         "options": {"quectel.join_delay": 0.05, "quectel.boot_delay": 0.05}}


def until(ser, pattern, timeout=5.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf):
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout}s; got {buf!r}"
        buf += ser.read(ser.in_waiting or 1)
    return buf


def join(ser):
    ser.write(b"AT+QECHO=0\r")
    until(ser, rb"OK\r\n")
    ser.write(f'AT+QSTAAPINFO="{SSID}","{PWD}"\r'.encode())
    return until(ser, rb"\+QSTASTAT: GOT_IP\r\n")


def test_ap_gone_gives_wlan_disconnected_then_rejoin(atemu_module):
    m = atemu_module("quectel-fcm242d", world=WORLD)
    ser = serial.serial_for_url(m.port, 115200, timeout=0.05)
    try:
        assert b"WLAN_CONNECTED" in join(ser)
        assert m.snapshot()["state"]["wifi"]["station"] == "up"

        m.inject("ap_gone", ssid=SSID)

        until(ser, rb"\+QSTASTAT: WLAN_DISCONNECTED\r\n", timeout=2)
        assert m.snapshot()["world"]["access_points"] == []
        ser.write(b"AT+QSTAST\r")
        assert until(ser, rb"OK\r\n").endswith(b"+QSTAST: STATION_DOWN\r\n\r\nOK\r\n")
        m.inject("ap_back")
        assert b"GOT_IP" in join(ser)
    finally:
        ser.close()


def test_deauth_and_rssi_ramp_in_process(atemu_module):
    # no pty at all: pyserial talks to the module through the atemu:// URL handler
    m = atemu_module("quectel-fcm242d", world=WORLD, transport="inproc")
    assert m.port == f"atemu://{m.name}"
    ser = serial.serial_for_url(m.port, 115200, timeout=0.05)
    try:
        join(ser)
        m.inject("deauth", ssid=SSID)
        until(ser, rb"\+QSTASTAT: WLAN_DISCONNECTED\r\n", timeout=2)
        m.inject("rssi_ramp", ssid=SSID, to=-90, steps=3, interval=0.05)
        deadline = time.monotonic() + 3
        while m.snapshot()["world"]["access_points"][0]["rssi"] != -90:
            assert time.monotonic() < deadline, "RSSI never reached -90"
            time.sleep(0.05)
        worlds = [r for r in m.transcript({"world"}) if r["change"] == "rssi"]
        assert [r["rssi"] for r in worlds] == [-57, -73, -90]
    finally:
        ser.close()


def test_remove_ap_through_world_api(atemu_module):
    m = atemu_module("quectel-fcm242d", world=WORLD)
    ser = serial.serial_for_url(m.port, 115200, timeout=0.05)
    try:
        join(ser)
        m.remove_ap(SSID)
        until(ser, rb"\+QSTASTAT: WLAN_DISCONNECTED\r\n", timeout=2)
        m.add_ap(SSID, password=PWD, security="wpa2")
        assert b"GOT_IP" in join(ser)
    finally:
        ser.close()



class Reader(SerialReader):
    """Buffered reads: each wait consumes up to its match and keeps the rest."""

    def cmd(self, line):
        self.ser.write(line.encode() + b"\r")
        return self.until(rb"\r\n(OK|ERROR)\r\n")


def test_peer_reset_refused_and_latency_seen_over_at(atemu_module, tcp_echo):
    m = atemu_module("quectel-fcm242d", world=WORLD)
    ser = serial.serial_for_url(m.port, 115200, timeout=0.05)
    r = Reader(ser)
    try:
        join(ser)
        # the peer refuses the first connection
        m.inject("connect_refused", port=tcp_echo.port)
        assert r.cmd(f'AT+QIOPEN=1,"TCP","127.0.0.1",{tcp_echo.port},0,0') == b"\r\nOK\r\n"
        assert r.until(rb"\+QIOPEN: 1,\d+\r\n") != b"\r\n+QIOPEN: 1,0\r\n"
        r.cmd("AT+QICLOSE=1")
        # then it works; latency on what the peer sends back
        r.cmd(f'AT+QIOPEN=1,"TCP","127.0.0.1",{tcp_echo.port},0,1')
        assert r.until(rb"\+QIOPEN: 1,\d+\r\n").endswith(b"+QIOPEN: 1,0\r\n")
        m.inject("latency", delay=0.4)
        ser.write(b"AT+QISEND=1,4\r")
        r.until(rb"> ")
        t0 = time.monotonic()
        ser.write(b"ping")
        assert r.until(rb"SEND OK\r\n")
        r.until(rb"ping", timeout=3)          # echoed back in push mode, after the added latency
        assert time.monotonic() - t0 >= 0.4
        m.clear()
        # the peer resets the connection: the host gets the "closed" URC
        assert m.inject("tcp_reset", port=tcp_echo.port)["result"] == 1      # one connection reset
        r.until(rb'\+QIURC: "closed",1\r\n', timeout=3)
    finally:
        ser.close()
