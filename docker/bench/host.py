"""Example host application for the compose bench: talks AT to emulated modules over the network.

What a firmware team replaces with its own application. It uses only pyserial (``socket://`` and
``rfc2217://`` URLs) and the standard library, writes commands with CR LF and leaves echo on, like
host code on a real UART. Exit status 0 when every step worked, 1 (and one line saying which step
failed) otherwise.

Steps, on the Quectel FCM242D module (raw TCP):
  1. wait until the control API lists the modules (JSON, token from ATEMU_CONTROL_TOKEN), reboot
     the module through it for a clean start
  2. join Wi-Fi, open a TCP socket to the echo peer, send a line, read the same line back
  3. copy the CA, client certificate and key onto the module, open MQTT over TLS with the client
     certificate to the broker, publish one message
And on the Eseye AnyNet module (RFC 2217): publish one message through the SIM's AWS identity.

Settings (environment): MODULE_URL, MODULE_NAME, ESEYE_URL, ESEYE_NAME, CONTROL_URL, ATEMU_CONTROL_TOKEN, WIFI_SSID,
WIFI_PASSWORD, ECHO_HOST, ECHO_PORT, BROKER_HOST, BROKER_TLS_PORT, CERTS, TOPIC, MESSAGE, AT_EOL
(crlf, the default, or cr).
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

import serial

ENV = os.environ.get
MODULE_URL, MODULE_NAME = ENV("MODULE_URL", "socket://atemu:7000"), ENV("MODULE_NAME", "wifi-0")
ESEYE_URL, ESEYE_NAME = ENV("ESEYE_URL", ""), ENV("ESEYE_NAME", "cell-0")   # empty URL: skip the Eseye step
CONTROL_URL = ENV("CONTROL_URL", "http://atemu:8000")
TOKEN = ENV("ATEMU_CONTROL_TOKEN", "")
SSID, PASSWORD = ENV("WIFI_SSID", "lab"), ENV("WIFI_PASSWORD", "labpass123")
ECHO_HOST, ECHO_PORT = ENV("ECHO_HOST", "peers"), int(ENV("ECHO_PORT", "7007"))
BROKER, BROKER_TLS_PORT = ENV("BROKER_HOST", "broker"), int(ENV("BROKER_TLS_PORT", "8883"))
CERTS = ENV("CERTS", "/certs")
TOPIC, MESSAGE = ENV("TOPIC", "bench/hello"), ENV("MESSAGE", "hello from the bench host")
READY_TIMEOUT = float(ENV("READY_TIMEOUT", "120"))
EOL = {"crlf": b"\r\n", "cr": b"\r"}[ENV("AT_EOL", "crlf").lower()]     # how the host ends command lines


class StepFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"host: {msg}", flush=True)


class Modem:
    """A serial line to one module: write commands, read until a pattern."""

    def __init__(self, url: str, baud: int):
        self.url = url
        self.ser = serial.serial_for_url(url, baudrate=baud, timeout=0.1)   # rfc2217:// tells the module
        self.buf = b""

    def close(self) -> None:
        self.ser.close()

    def expect(self, pattern: bytes, timeout: float = 15.0, fail: bytes = rb"\r\n(\+CME )?ERROR[^\r]*\r\n") -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.buf)
            if m:
                got, self.buf = self.buf[:m.end()], self.buf[m.end():]
                return got
            if fail and re.search(fail, self.buf):
                got, self.buf = self.buf, b""
                raise StepFailed(f"{self.url}: waiting for {pattern!r}, got {got!r}")
            if time.monotonic() > deadline:
                raise StepFailed(f"{self.url}: no {pattern!r} within {timeout:.0f} s (got {self.buf!r})")
            self.buf += self.ser.read(4096)

    def cmd(self, line: str, until: bytes = rb"\r\nOK\r\n", timeout: float = 15.0) -> bytes:
        self.buf = b""
        self.ser.write(line.encode() + EOL)
        return self.expect(until, timeout)

    def send(self, line: str, payload: bytes, until: bytes, timeout: float = 15.0) -> bytes:
        """A command with a '> ' prompt, then the raw payload."""
        self.cmd(line, until=rb"> ", timeout=timeout)
        self.ser.write(payload)
        return self.expect(until, timeout)


def control(method: str, path: str, body: dict | None = None) -> object:
    """One control API call: JSON in and out, the token in the Authorization header."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(f"{CONTROL_URL}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def wait_for_control() -> list[str]:
    """Poll the control API until it answers with the module list (the token travels in a header)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            return [m["name"] for m in control("GET", "/api/modules")]
        except urllib.error.HTTPError as e:
            raise StepFailed(f"control API {CONTROL_URL}: HTTP {e.code} {e.read()[:200]!r}") from None
        except (OSError, ValueError) as e:
            last = str(e)
            time.sleep(1)
    raise StepFailed(f"control API {CONTROL_URL} not ready within {READY_TIMEOUT:.0f} s ({last})")


def fresh(url: str, name: str, baud: int) -> "Modem":
    """Reboot the module through the control API (a clean start for every bench run), then open it."""
    control("POST", f"/api/modules/{name}/reboot", {})
    m = Modem(url, baud)
    for _ in range(50):                         # until the rebooted module answers
        try:
            m.cmd("AT", timeout=1)
            return m
        except StepFailed:
            pass
    m.close()
    raise StepFailed(f"{url}: no answer to AT after the reboot")


def upload(m: Modem, name: str, data: bytes) -> None:
    """Write a file onto the module's flash (AT+QFOPEN / AT+QFWRITE / AT+QFCLOSE)."""
    out = m.cmd(f'AT+QFOPEN="{name}",1')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))
    m.cmd(f"AT+QFWRITE={handle},{len(data)}", until=rb"CONNECT\r\n")
    m.ser.write(data)
    m.expect(rb"\r\nOK\r\n")
    m.cmd(f"AT+QFCLOSE={handle}")


def quectel_steps() -> None:
    m = fresh(MODULE_URL, MODULE_NAME, 115200)
    try:
        m.cmd(f'AT+QSTAAPINFO="{SSID}","{PASSWORD}"')
        m.expect(rb"\+QSTASTAT: GOT_IP\r\n", timeout=30)
        log(f"joined Wi-Fi {SSID!r}")

        # a TCP round trip through the module to the echo peer
        m.cmd(f'AT+QIOPEN=1,"TCP","{ECHO_HOST}",{ECHO_PORT},0,0')
        m.expect(rb"\+QIOPEN: 1,0\r\n", timeout=30)
        line = b"ping through the emulated module\n"
        m.send(f"AT+QISEND=1,{len(line)}", line, rb"SEND OK\r\n")
        m.expect(rb'\+QIURC: "recv",1\r\n')
        out = m.cmd("AT+QIRD=1,1500")
        if line not in out:
            raise StepFailed(f"the echo peer sent back {out!r}, expected {line!r}")
        m.cmd("AT+QICLOSE=1")
        log(f"TCP round trip with {ECHO_HOST}:{ECHO_PORT} ok")

        # MQTT over TLS with a client certificate
        for fname, src in (("ca.pem", "ca.crt"), ("user.pem", "client.crt"), ("user_key.pem", "client.key")):
            with open(os.path.join(CERTS, src), "rb") as f:
                upload(m, fname, f.read())
        for c in ('AT+QMTCFG="ssl",0,1,2', 'AT+QSSLCFG="cacert",2,"ca.pem"', 'AT+QSSLCFG="clientcert",2,"user.pem"',
                  'AT+QSSLCFG="clientkey",2,"user_key.pem"', 'AT+QSSLCFG="seclevel",2,2'):
            m.cmd(c)
        for attempt in range(1, 11):            # the broker may still be starting: retry like firmware does
            m.cmd(f'AT+QMTOPEN=0,"{BROKER}",{BROKER_TLS_PORT}')
            got = m.expect(rb"\+QMTOPEN: 0,(-?\d+)\r\n", timeout=30)
            if got.endswith(b"0,0\r\n"):
                break
            log(f"MQTT open attempt {attempt}: {got.strip()!r}; retrying")
            time.sleep(2)
        else:
            raise StepFailed(f"cannot open MQTT to {BROKER}:{BROKER_TLS_PORT}")
        m.cmd('AT+QMTCONN=0,"bench-host"')
        m.expect(rb"\+QMTCONN: 0,0,0\r\n", timeout=30)
        payload = MESSAGE.encode()
        m.send(f'AT+QMTPUB=0,1,1,0,"{TOPIC}",{len(payload)}', payload, rb"\r\nOK\r\n")
        m.expect(rb"\+QMTPUB: 0,1,0\r\n", timeout=30)
        m.cmd("AT+QMTDISC=0")
        log(f"published {MESSAGE!r} to {TOPIC!r} on {BROKER}:{BROKER_TLS_PORT} (TLS, client certificate)")
    finally:
        m.close()


def eseye_steps() -> None:
    m = fresh(ESEYE_URL, ESEYE_NAME, 9600)
    try:
        for attempt in range(1, 11):
            m.cmd('AT+AWSPUBOPEN=0,"tele"')
            got = m.expect(rb"\+AWSPUBOPEN: ?0,(-?\d+)\r\n", timeout=30)     # the device prints no space
            if got.endswith(b"0,0\r\n"):
                break
            log(f"AWS open attempt {attempt}: {got.strip()!r}; retrying")
            time.sleep(2)
        else:
            raise StepFailed("the Eseye module cannot open its AWS connection")
        payload = b"hello from the eseye module"
        m.send(f"AT+AWSPUBLISH=0,{len(payload)}", payload, rb"SEND OK\r\n", timeout=30)
        m.cmd("AT+AWSPUBCLOSE=0", until=rb"\r\nOK\r\n")
        log("published through the Eseye module's AWS identity")
    finally:
        m.close()


def main() -> int:
    try:
        names = wait_for_control()
        log(f"control API lists {len(names)} modules: {', '.join(names)}")
        quectel_steps()
        if ESEYE_URL:
            eseye_steps()
    except (StepFailed, OSError, ValueError, serial.SerialException) as e:
        print(f"host: FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    log("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
