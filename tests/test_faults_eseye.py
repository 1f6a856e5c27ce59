"""Faults from a test's point of view: an Eseye module started with the atemu_module fixture,
a host talking to it over a real pty with pyserial, the world misbehaving on demand."""
from __future__ import annotations

import re
import time

import pytest
import serial

from harness import SerialReader
from peers.aws import AWS_HOST, THING, aws_pki, broker, sim_world  # noqa: F401  (fixtures)

class Host(SerialReader):
    """A minimal host application loop: send a command, wait for its final result line."""

    FINAL = re.compile(rb"\r\n(OK|ERROR|SEND OK|SEND FAIL)\r\n")

    def until(self, pattern, timeout=10.0):
        return super().until(pattern, timeout)

    def cmd(self, line, timeout=10.0):
        self.ser.write(line.encode() + b"\r")
        return self.until(self.FINAL, timeout)

    def awsstate(self):
        m = re.search(rb"\+AWSSTATE: (\d)", self.cmd("AT+AWSSTATE?"))
        assert m, "no +AWSSTATE line"
        return int(m.group(1))

    def wait_state(self, want, timeout=15.0):
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            s = self.awsstate()
            seen.append(s)
            if s == want:
                return seen
            time.sleep(0.05)
        raise AssertionError(f"AT+AWSSTATE? never reached {want}; saw {seen[-10:]}")


def connect_host(port, baud=9600):
    ser = serial.serial_for_url(port, baud, timeout=0.05)
    host = Host(ser)
    host.cmd("ATE0")
    return host


def test_broker_drop_shows_state_8_then_recovers(atemu_module, broker, aws_pki):
    m = atemu_module("eseye-anynet", world=sim_world(aws_pki, broker.tls_port))
    host = connect_host(m.port)
    assert host.cmd('AT+AWSSUBOPEN=0,"cmd"') == b"\r\nOK\r\n"
    assert host.until(rb"\+AWSSUBOPEN:0,-?\d\r\n").endswith(b"+AWSSUBOPEN:0,0\r\n")
    assert host.awsstate() == 7
    assert m.snapshot()["state"]["link"] == "up"

    fault = m.inject("broker_disconnect")

    assert fault["kind"] == "broker_disconnect" and fault["result"] == 1   # one MQTT link dropped
    seen = host.wait_state(8, timeout=5)         # the documented error state
    assert seen[-1] == 8
    host.wait_state(7, timeout=15)               # the module retries and resubscribes
    # and the link really works again: a message to the subscribed topic reaches the host
    probe = broker.probe()
    try:
        probe.publish(f"cmd/{THING}", b"hello", qos=1)
    finally:
        probe.close()
    assert host.until(rb"\+AWS:0,5\r\nhello", timeout=10)
    fired = [r for r in m.transcript({"fault"}) if r["action"] == "fired"]
    assert fired and fired[0]["kind"] == "broker_disconnect"


def test_broker_refuses_connect(atemu_module, broker, aws_pki):
    m = atemu_module("eseye-anynet", world=sim_world(aws_pki, broker.tls_port))
    m.inject("broker_refuse", code=5)
    host = connect_host(m.port)
    host.cmd('AT+AWSPUBOPEN=0,"t"')
    assert host.until(rb"\+AWSPUBOPEN:0,-?\d\r\n").endswith(b"+AWSPUBOPEN:0,-1\r\n")
    assert host.awsstate() == 8
    # the refusal fired once: the next open succeeds
    host.cmd('AT+AWSPUBOPEN=1,"t"')
    assert host.until(rb"\+AWSPUBOPEN:1,-?\d\r\n").endswith(b"+AWSPUBOPEN:1,0\r\n")


def test_tls_failure_and_dns_failure(atemu_module, broker, aws_pki):
    m = atemu_module("eseye-anynet", world=sim_world(aws_pki, broker.tls_port))
    host = connect_host(m.port)
    m.inject("tls_fail")
    host.cmd('AT+AWSPUBOPEN=0,"t"')
    assert host.until(rb"\+AWSPUBOPEN:0,-?\d\r\n").endswith(b"0,-1\r\n")
    f = m.inject("dns_fail", times=None)
    host.cmd('AT+AWSPUBOPEN=0,"t"')
    assert host.until(rb"\+AWSPUBOPEN:0,-?\d\r\n").endswith(b"0,-1\r\n")
    assert m.clear(f["id"]) == 1
    host.cmd('AT+AWSPUBOPEN=0,"t"')
    assert host.until(rb"\+AWSPUBOPEN:0,-?\d\r\n").endswith(b"0,0\r\n")


def test_cellular_detach_drops_link(atemu_module, broker, aws_pki):
    m = atemu_module("eseye-anynet", world=sim_world(aws_pki, broker.tls_port))
    host = connect_host(m.port)
    host.cmd('AT+AWSPUBOPEN=0,"t"')
    host.until(rb"\+AWSPUBOPEN:0,0\r\n")
    m.inject("cellular_detach")
    host.wait_state(8, timeout=5)
    assert m.snapshot()["world"]["cellular"]["attached"] is False
    time.sleep(1.5)  # retries fail while detached
    assert host.awsstate() == 8
    m.inject("cellular_attach")
    host.wait_state(6, timeout=15)
