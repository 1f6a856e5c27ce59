"""A small host program, as a firmware team would write it, for the scenario tests.

    python3 quectel_mqtt_host.py PORT BROKER_PORT

Talks to a quectel-fcm242d module on PORT (pyserial URL or path) at 115200: joins the access point
``lab`` / ``labpass123``, connects MQTT client 0 to 127.0.0.1:BROKER_PORT and publishes
``hello 1`` (qos 1) to ``dev/up``. Then it keeps the link up like firmware would: on
``+QSTASTAT: WLAN_DISCONNECTED`` it joins again every second until ``GOT_IP``, on ``+QMTSTAT`` it
opens and connects again; after each recovery it publishes ``hello again``. Lines end with CR LF,
echo stays on, commands are lower-case where the module allows it.
"""
import re
import sys
import time

import serial

port, broker = sys.argv[1], int(sys.argv[2])
ser = serial.serial_for_url(port, 115200, timeout=0.05)
buf = b""
msgid = 0
wifi_lost = False
mqtt_lost = False


def wait(pattern: bytes, timeout: float = 10.0) -> bytes:
    """Read until ``pattern`` (regex) shows up; return the bytes up to its end and keep the rest."""
    global buf, wifi_lost, mqtt_lost
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, buf)
        if m:
            got, buf = buf[:m.end()], buf[m.end():]
            wifi_lost = wifi_lost or b"WLAN_DISCONNECTED" in got
            mqtt_lost = mqtt_lost or b"+QMTSTAT:" in got     # it may come while we wait for something else
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"host: no {pattern!r} within {timeout} s; got {buf[-200:]!r}")
        buf += ser.read(ser.in_waiting or 1)


def cmd(line: str, until: bytes = rb"\r\nOK\r\n") -> bytes:
    ser.write(line.encode() + b"\r\n")
    return wait(until + rb"|\r\nERROR\r\n|\+CME ERROR: \d+\r\n")


def join() -> None:
    global wifi_lost
    wifi_lost = False
    while True:
        cmd('AT+QSTAAPINFO="lab","labpass123"')
        got = wait(rb"\+QSTASTAT: (GOT_IP|WLAN_DISCONNECTED|SCAN_NO_AP)\r\n", 15)
        if b"GOT_IP" in got:
            return
        time.sleep(1.0)


def mqtt_up() -> None:
    global mqtt_lost
    mqtt_lost = False
    cmd(f'AT+QMTOPEN=0,"127.0.0.1",{broker}')
    wait(rb"\+QMTOPEN: 0,0\r\n")
    cmd('AT+QMTCONN=0,"scenario-host"')
    wait(rb"\+QMTCONN: 0,0,0\r\n")


def publish(text: str) -> None:
    global msgid
    msgid = msgid % 65535 + 1
    cmd(f'AT+QMTPUB=0,{msgid},1,0,"dev/up",{len(text)}', until=rb"> ")
    ser.write(text.encode())
    wait(rb"\+QMTPUB: 0,%d,\d\r\n" % msgid)     # 0 sent, 1 retried, 2 failed (the link dropped)


cmd("AT")
join()
mqtt_up()
publish("hello 1")
while True:
    if not (wifi_lost or mqtt_lost):
        wait(rb"\+QSTASTAT: WLAN_DISCONNECTED\r\n|\+QMTSTAT: 0,\d+\r\n", timeout=3600)
    if wifi_lost:
        time.sleep(0.3)
        join()
    mqtt_up()
    publish("hello again")
