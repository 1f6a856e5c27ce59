"""Eseye AnyNet profile over a real pty against a real mosquitto with TLS client certificates."""
from __future__ import annotations

import shutil
import time

import pytest

from harness import Emu, host_styles
from peers.aws import AWS_HOST, THING, aws_pki, broker, sim_world  # noqa: F401  (fixtures)
from peers.mosquitto import MqttProbe, free_port
import atemu.profiles.eseye_anynet as eseye


# every test runs once per host style: CR, CR LF, CR LF written byte by byte (Emu.cmd and the
# lines written here end with emu.term)
host_style = host_styles("CR", "CRLF", "CRLF-bytewise")


@pytest.fixture
def emu(broker, aws_pki):
    e = Emu("eseye-anynet", world=sim_world(aws_pki, broker.tls_port))
    e.start()
    e.cmd("ATE0")
    e.drain()
    yield e
    e.stop()


@pytest.fixture
def probe(broker):
    p = MqttProbe(broker.port)
    yield p
    p.close()


def open_pub(emu, idx=0, topic="temperature"):
    assert emu.cmd(f'AT+AWSPUBOPEN={idx},"{topic}"') == b"\r\nOK\r\n"
    return emu.read_until(rb"\+AWSPUBOPEN:\d,-?\d\r\n", timeout=10)


def open_sub(emu, idx=0, topic="resolution"):
    assert emu.cmd(f'AT+AWSSUBOPEN={idx},"{topic}"') == b"\r\nOK\r\n"
    return emu.read_until(rb"\+AWSSUBOPEN:\d,-?\d\r\n", timeout=10)


# ---------------------------------------------------------------------------------------- identity

def test_identity_and_test_forms():
    with Emu("eseye-anynet") as e:
        # echo is on after power-up: the whole line with its terminator, then the result
        assert e.cmd("AT") == b"AT" + e.term + b"\r\nOK\r\n"
        assert e.cmd("ATE0") == b"ATE0" + e.term + b"\r\nOK\r\n"
        e.expect_nothing(0.1)
        assert e.cmd("AT+QCCID") == b"\r\n+QCCID: 89440000000000000001\r\n\r\nOK\r\n"
        assert e.cmd("AT+GSN") == b"\r\n356938035643809\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSVER").startswith(b"\r\n+AWSVER: ")
        for c in ("QCCID", "GSN", "AWSVER"):
            assert e.cmd(f"AT+{c}=?") == b"\r\nOK\r\n"
            assert e.cmd(f"AT+{c}?") == b"\r\nERROR\r\n"
        assert e.cmd("AT+AWSPUBOPEN=?") == b"\r\n+AWSPUBOPEN: (0-1),<awstopic>\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSPUBLISH=?") == b"\r\nAWSPUBLISH: (0-1), (1-240)[,(0-1)]\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSSUBOPEN=?") == b"\r\n+AWSSUBOPEN: (0-1),<awstopic>\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSPUBCLOSE=?") == b"\r\n+AWSPUBCLOSE: (0-7)\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSSUBCLOSE=?") == b"\r\n+AWSSUBCLOSE: (0-7)\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSSTATE=?") == b"\r\n+AWSSTATE: (0-8)\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 0\r\n\r\nOK\r\n"
        for c in ("AWSPUBLISH", "AWSPUBCLOSE", "AWSSUBCLOSE"):
            assert e.cmd(f"AT+{c}?") == b"\r\nOK\r\n"
        assert e.cmd("AT+AWSPUBOPEN?") == b"\r\nOK\r\n"
        assert e.cmd("AT+AWSSUBOPEN?") == b"\r\nOK\r\n"
        assert e.cmd("AT+NOPE") == b"\r\nERROR\r\n"
        assert e.cmd("AT+AWSSTATE=1") == b"\r\nERROR\r\n"


def test_world_identity_used():
    w = {"cellular": {"iccid": "8944123", "imei": "490154203237518"}}
    with Emu("eseye-anynet", world=w) as e:
        e.cmd("ATE0")
        assert e.cmd("AT+QCCID") == b"\r\n+QCCID: 8944123\r\n\r\nOK\r\n"
        assert e.cmd("AT+GSN") == b"\r\n490154203237518\r\n\r\nOK\r\n"


def test_lower_case_cr_only_and_crlf():
    with Emu("eseye-anynet") as e:
        e.write(b"ate0\r")
        e.read_until(b"OK\r\n")
        e.write(b"at+awsstate?\r\n")
        assert e.read_until(b"OK\r\n") == b"\r\n+AWSSTATE: 0\r\n\r\nOK\r\n"
        e.write(b"aT+aWsVeR\r")
        assert b"+AWSVER: " in e.read_until(b"OK\r\n")


def test_burst_of_50_ate0():
    with Emu("eseye-anynet") as e:
        e.write(b"ATE0\r\n" * 50)
        got = b""
        deadline = time.monotonic() + 10
        while got.count(b"OK\r\n") < 50 and time.monotonic() < deadline:
            got += e.drain(0.2)
        assert got.count(b"OK\r\n") == 50
        assert b"ERROR" not in got


# ---------------------------------------------------------------------------------------- AWS flow

def test_publish_end_to_end(emu, probe):
    probe.subscribe(f"temperature/{THING}")
    urc = open_pub(emu)
    assert urc.endswith(b"+AWSPUBOPEN:0,0\r\n")
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 6\r\n\r\nOK\r\n"
    assert emu.cmd("AT+AWSPUBOPEN?") == f"\r\n0: temperature/{THING}\r\n\r\nOK\r\n".encode()
    emu.write(b"AT+AWSPUBLISH=0,5" + emu.term)
    assert emu.read_until(b"> ") == b"> "
    emu.write(b"21.5C")
    assert emu.read_until(Emu.FINAL) == b"\r\nSEND OK\r\n"
    payload, qos, retain = probe.wait_for(f"temperature/{THING}")
    assert (payload, qos) == (b"21.5C", 0)
    # qos 2 = acknowledged: MQTT QoS 1 to the broker; binary payload, every awkward byte
    data = bytes([0x0D, 0x0A, 0x1A, 0x1B, 0x00, 0xFF, 0x2B, 0x2B, 0x2B, 0x22])
    emu.write(f"AT+AWSPUBLISH=0,{len(data)},2".encode() + emu.term)
    emu.read_until(b"> ")
    emu.write(data)
    assert emu.read_until(Emu.FINAL) == b"\r\nSEND OK\r\n"
    assert probe.wait_for(f"temperature/{THING}")[:2] == (data, 1)


def test_publish_without_waiting_for_prompt(emu, probe):
    probe.subscribe(f"t/{THING}")
    open_pub(emu, 1, "t")
    body = bytes(range(200))
    emu.write(b"AT+AWSPUBLISH=1,200,1" + emu.term + body)   # payload right behind the command
    assert emu.read_until(Emu.FINAL) == b"> \r\nSEND OK\r\n"
    assert probe.wait_for(f"t/{THING}")[0] == body
    assert emu.cmd("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("echo", [True, False], ids=["echo-on", "echo-off"])
@pytest.mark.parametrize("burst", [False, True], ids=["wait-prompt", "one-write"])
def test_publish_exact_bytes(broker, aws_pki, probe, echo, burst):
    """The host's line is echoed whole (terminator included) before the prompt; the broker gets
    exactly the payload, never the LF of CR LF; the next command is clean."""
    probe.subscribe(f"x/{THING}")
    with Emu("eseye-anynet", world=sim_world(aws_pki, broker.tls_port)) as e:
        e.cmd("ATE1" if echo else "ATE0")
        e.drain(0.1)
        assert e.cmd('AT+AWSPUBOPEN=0,"x"') == (b'AT+AWSPUBOPEN=0,"x"' + e.term if echo else b"") + b"\r\nOK\r\n"
        assert e.read_until(rb"\+AWSPUBOPEN:\d,-?\d\r\n", timeout=10) == b"\r\n+AWSPUBOPEN:0,0\r\n"
        payload = b"hi\r\n\x00\n> AT\r"
        line = b"AT+AWSPUBLISH=0,%d" % len(payload)
        echoed = line + e.term if echo else b""
        if burst:
            e.write(line + e.term + payload)
            assert e.read_until(Emu.FINAL) == echoed + b"> \r\nSEND OK\r\n"
        else:
            e.write(line + e.term)
            assert e.read_until(b"> ") == echoed + b"> "
            e.write(payload)
            assert e.read_until(Emu.FINAL) == b"\r\nSEND OK\r\n"
        assert probe.wait_for(f"x/{THING}")[0] == payload
        assert e.cmd("at") == (b"at" + e.term if echo else b"") + b"\r\nOK\r\n"
        e.write(e.term)                 # an empty line: its echo only, no answer
        assert e.drain(0.2) == (e.term if echo else b"")


def test_subscribe_receives(emu, probe):
    urc = open_sub(emu, 3, "resolution")
    assert urc.endswith(b"+AWSSUBOPEN:3,0\r\n")
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 7\r\n\r\nOK\r\n"
    assert emu.cmd("AT+AWSSUBOPEN?") == f"\r\n3: resolution/{THING}\r\n\r\nOK\r\n".encode()
    msg = b"1080\r\n\x00\xff"
    probe.publish(f"resolution/{THING}", msg, qos=1)
    head = emu.read_until(rb"\+AWS:3,8\r\n", timeout=5)
    assert head == b"\r\n+AWS:3,8\r\n"
    assert emu.read_exactly(8) == msg
    # close: +AWSSUBCLOSE:i,c as the device prints (C3), back to state 6, no more data
    assert emu.cmd("AT+AWSSUBCLOSE=3") == b"\r\nOK\r\n"
    assert emu.read_until(rb"CLOSE:3,-?\d\r\n", timeout=5) == b"\r\n+AWSSUBCLOSE:3,0\r\n"
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 6\r\n\r\nOK\r\n"
    probe.publish(f"resolution/{THING}", b"late", qos=1)
    emu.expect_nothing(0.5)


def test_slot_errors(emu):
    open_pub(emu)
    assert emu.cmd('AT+AWSPUBOPEN=0,"temperature"') == b"\r\nOK\r\n"
    assert emu.read_until(rb"\+AWSPUBOPEN:0,-?\d\r\n") == b"\r\n+AWSPUBOPEN:0,-2\r\n"
    assert emu.cmd("AT+AWSPUBOPEN=0,temperature") == b"\r\nERROR\r\n"   # topic must be quoted
    assert emu.cmd('AT+AWSPUBOPEN=2,"x"') == b"\r\nERROR\r\n"           # publish slots are 0-1
    assert emu.cmd('AT+AWSSUBOPEN=8,"x"') == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBLISH=1,5") == b"\r\nERROR\r\n"             # slot 1 never opened
    assert emu.cmd("AT+AWSPUBLISH=0,0") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBLISH=0,241") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBLISH=0,5,3") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBLISH=0,6,MIKROE") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBLISH=0") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBCLOSE=1") == b"\r\nOK\r\n"
    assert emu.read_until(rb"\+AWSPUBCLOSE:1,-?\d\r\n") == b"\r\n+AWSPUBCLOSE:1,-2\r\n"
    assert emu.cmd("AT+AWSPUBCLOSE=5") == b"\r\nOK\r\n"
    assert emu.read_until(rb"\+AWSPUBCLOSE:5,-?\d\r\n") == b"\r\n+AWSPUBCLOSE:5,-2\r\n"
    assert emu.cmd("AT+AWSPUBCLOSE=8") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSSUBCLOSE=2") == b"\r\nOK\r\n"
    assert emu.read_until(rb"CLOSE:2,-?\d\r\n") == b"\r\n+AWSSUBCLOSE:2,-2\r\n"
    assert emu.cmd("AT+AWSPUBCLOSE=0") == b"\r\nOK\r\n"
    assert emu.read_until(rb"\+AWSPUBCLOSE:0,-?\d\r\n") == b"\r\n+AWSPUBCLOSE:0,0\r\n"
    assert emu.cmd("AT+AWSPUBLISH=0,5") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+AWSPUBOPEN?") == b"\r\nOK\r\n"


def test_publish_timeout_sends_fail(emu, monkeypatch):
    monkeypatch.setattr(eseye, "PUBLISH_TIMEOUT", 0.5)
    open_pub(emu)
    emu.write(b"AT+AWSPUBLISH=0,10" + emu.term)
    emu.read_until(b"> ")
    emu.write(b"abc")
    assert emu.read_until(Emu.FINAL, timeout=5) == b"\r\nSEND FAIL\r\n"
    assert emu.cmd("AT") == b"\r\nOK\r\n"


def test_manual_format_option(broker, aws_pki):
    """eseye.format: manual prints the manual's typography (the old default): a space after the
    colon, '+AWSPUBCLOSE: i, c', and AT+AWSSUBCLOSE answered with the +AWSPUBCLOSE prefix."""
    w = sim_world(aws_pki, broker.tls_port)
    w["options"] = {"eseye.format": "manual"}
    with Emu("eseye-anynet", world=w) as e:
        e.cmd("ATE0")
        assert e.cmd('AT+AWSSUBOPEN=1,"cfg"') == b"\r\nOK\r\n"
        assert e.read_until(rb"\+AWSSUBOPEN: \d,-?\d\r\n", timeout=10) == b"\r\n+AWSSUBOPEN: 1,0\r\n"
        assert e.cmd("AT+AWSSUBCLOSE=1") == b"\r\nOK\r\n"
        assert e.read_until(rb"CLOSE: 1, -?\d\r\n") == b"\r\n+AWSPUBCLOSE: 1, 0\r\n"
        assert e.cmd('AT+AWSPUBOPEN=0,"t"') == b"\r\nOK\r\n"
        assert e.read_until(rb"\+AWSPUBOPEN: \d,-?\d\r\n", timeout=10) == b"\r\n+AWSPUBOPEN: 0,0\r\n"
        assert e.cmd("AT+AWSPUBCLOSE=0") == b"\r\nOK\r\n"
        assert e.read_until(rb"CLOSE: 0, -?\d\r\n") == b"\r\n+AWSPUBCLOSE: 0, 0\r\n"
    w["options"] = {"eseye.format": "manual", "eseye.subclose_urc": "AWSSUBCLOSE"}
    with Emu("eseye-anynet", world=w) as e:
        e.cmd("ATE0")
        assert e.cmd("AT+AWSSUBCLOSE=4") == b"\r\nOK\r\n"
        assert e.read_until(rb"CLOSE: 4, -?\d\r\n") == b"\r\n+AWSSUBCLOSE: 4, -2\r\n"
    w["options"] = {"eseye.subclose_urc": "AWSPUBCLOSE"}
    with Emu("eseye-anynet", world=w) as e:
        e.cmd("ATE0")
        assert e.cmd("AT+AWSSUBCLOSE=4") == b"\r\nOK\r\n"
        assert e.read_until(rb"CLOSE:4,-?\d\r\n") == b"\r\n+AWSPUBCLOSE:4,-2\r\n"


def test_awsreset_while_opening(emu, probe):
    """AT+AWSRESET while an open is still connecting: no result code for it, no link left up."""
    import asyncio
    prof = emu.module.profile
    connect = prof._connect

    async def slow_connect():          # a cellular attach that takes its time
        await asyncio.sleep(0.5)
        return await connect()
    emu.sync(setattr, prof, "_connect", slow_connect)
    assert emu.cmd('AT+AWSSUBOPEN=0,"cmd"') == b"\r\nOK\r\n"
    assert emu.cmd("AT+AWSRESET") == b"\r\nOK\r\n"
    emu.expect_nothing(1.0)
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 0\r\n\r\nOK\r\n"
    assert emu.module.profile.mqtt is None
    assert open_sub(emu, 0, "cmd").endswith(b"+AWSSUBOPEN:0,0\r\n")


def test_bad_format_option_is_one_clear_line(broker, aws_pki):
    from atemu.world import WorldError
    w = sim_world(aws_pki, broker.tls_port)
    w["options"] = {"eseye.format": "pretty"}
    with pytest.raises(WorldError, match="eseye.format.*device, manual"):
        Emu("eseye-anynet", world=w)


def test_awsreset_closes_everything(emu, probe):
    """AT+AWSRESET (sent by host drivers' init): every topic and the link closed, state 0, OK,
    no result codes; the next open connects again."""
    open_sub(emu, 0, "cmd")
    open_pub(emu, 1, "tele")
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 7\r\n\r\nOK\r\n"
    assert emu.cmd("AT+AWSRESET") == b"\r\nOK\r\n"
    emu.expect_nothing(0.3)
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 0\r\n\r\nOK\r\n"
    assert emu.cmd("AT+AWSSUBOPEN?") == b"\r\nOK\r\n"
    assert emu.cmd("AT+AWSPUBOPEN?") == b"\r\nOK\r\n"
    assert emu.cmd("AT+AWSPUBLISH=1,3") == b"\r\nERROR\r\n"
    probe.publish(f"cmd/{THING}", b"gone", qos=1)
    emu.expect_nothing(0.5)
    assert emu.module.profile.mqtt is None
    assert emu.cmd("AT+AWSRESET=?") == b"\r\nOK\r\n"
    assert open_pub(emu, 0, "tele").endswith(b"+AWSPUBOPEN:0,0\r\n")


# ---------------------------------------------------------------------------------------- failures

def test_no_sim_material_fails_without_traffic():
    with Emu("eseye-anynet") as e:   # built-in world: SIM has no AWS keys
        e.cmd("ATE0")
        assert open_pub(e) == b"\r\n+AWSPUBOPEN:0,-1\r\n"
        assert e.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 8\r\n\r\nOK\r\n"
        assert e.cmd("AT+AWSPUBOPEN?") == b"\r\nOK\r\n"


def test_broker_down(aws_pki):
    port = free_port()  # nothing listens there
    with Emu("eseye-anynet", world=sim_world(aws_pki, port)) as e:
        e.cmd("ATE0")
        assert open_pub(e).endswith(b"+AWSPUBOPEN:0,-1\r\n")
        assert e.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 8\r\n\r\nOK\r\n"
        assert open_sub(e).endswith(b"+AWSSUBOPEN:0,-1\r\n")


def test_wrong_ca_then_new_material_is_read(broker, aws_pki, tmp_path):
    sim = tmp_path / "sim"
    sim.mkdir()
    shutil.copy(aws_pki.other_ca_cert, sim / "ca.pem")     # SIM trusts the wrong CA
    shutil.copy(aws_pki.client_cert, sim / "cert.pem")
    shutil.copy(aws_pki.client_key, sim / "key.pem")
    w = sim_world(aws_pki, broker.tls_port, ca=sim / "ca.pem", cert=sim / "cert.pem", key=sim / "key.pem")
    with Emu("eseye-anynet", world=w) as e:
        e.cmd("ATE0")
        assert open_pub(e).endswith(b"+AWSPUBOPEN:0,-1\r\n")
        assert e.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 8\r\n\r\nOK\r\n"
        shutil.copy(aws_pki.ca_cert, sim / "ca.pem")       # new security material on the SIM
        assert open_pub(e).endswith(b"+AWSPUBOPEN:0,0\r\n")
        assert e.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 6\r\n\r\nOK\r\n"


def test_bad_client_certificate(broker, aws_pki):
    w = sim_world(aws_pki, broker.tls_port, cert=aws_pki.other_client_cert, key=aws_pki.other_client_key)
    with Emu("eseye-anynet", world=w) as e:
        e.cmd("ATE0")
        assert open_pub(e).endswith(b"+AWSPUBOPEN:0,-1\r\n")
        assert e.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 8\r\n\r\nOK\r\n"


def test_broker_restart_link_recovers(emu, broker, monkeypatch):
    monkeypatch.setattr(eseye, "RETRY_DELAYS", (0.3, 0.5))
    open_sub(emu, 0, "cmd")
    broker.stop()
    deadline = time.monotonic() + 10
    while b"+AWSSTATE: 8" not in emu.cmd("AT+AWSSTATE?"):
        assert time.monotonic() < deadline, "state never went to 8 after the broker stopped"
        time.sleep(0.1)
    broker.start()   # same ports
    deadline = time.monotonic() + 15
    while b"+AWSSTATE: 7" not in emu.cmd("AT+AWSSTATE?"):
        assert time.monotonic() < deadline, "link did not recover"
        time.sleep(0.2)
    p = MqttProbe(broker.port)
    try:
        p.publish(f"cmd/{THING}", b"again", qos=1)
        emu.read_until(rb"\+AWS:0,5\r\n", timeout=5)
        assert emu.read_exactly(5) == b"again"
    finally:
        p.close()


# ---------------------------------------------------------------------------------------- UART

def test_pty_reopen_keeps_session(emu, probe):
    open_sub(emu, 0, "keep")
    emu.close_serial()
    time.sleep(0.2)
    emu.open()
    probe.publish(f"keep/{THING}", b"still here", qos=1)
    emu.read_until(rb"\+AWS:0,10\r\n", timeout=5)
    assert emu.read_exactly(10) == b"still here"
    assert emu.cmd("AT+AWSSTATE?") == b"\r\n+AWSSTATE: 7\r\n\r\nOK\r\n"


def test_oversized_line_and_noise():
    with Emu("eseye-anynet") as e:
        e.cmd("ATE0")
        e.write(b"AT+AWSPUBOPEN=0,\"" + b"x" * 3000 + b"\"" + e.term)
        assert e.read_until(Emu.FINAL) == b"\r\nERROR\r\n"
        assert e.cmd("AT") == b"\r\nOK\r\n"
        e.write(bytes(range(256)) + e.term)
        got = e.drain(0.3)
        assert b"ERROR" in got
        assert e.cmd("AT") == b"\r\nOK\r\n"


def test_pacing_9600():
    with Emu("eseye-anynet", pacing=True) as e:
        e.write(b"AT+AWSSTATE?\r")   # echo on: 13 + 18 + 6 = 37 bytes
        e.read_until(b"OK\r\n")
        line = b"A" * 958
        t0 = time.monotonic()
        e.write(line + b"\r")          # echo (959 bytes) + ERROR (9 bytes) = 968 bytes = 1.008 s
        e.read_until(b"ERROR\r\n", timeout=10)
        dt = time.monotonic() - t0
        assert 0.85 < dt < 3.0, dt


def test_cli_end_to_end_with_world_file(broker, aws_pki, tmp_path):
    """The issue's 'done when': atemu run ... --pty --world W; a pyserial script publishes and receives."""
    import serial
    from harness import Cli
    certs = tmp_path / "certs"
    certs.mkdir()
    for src, dst in ((aws_pki.ca_cert, "ca.pem"), (aws_pki.client_cert, "device.pem"), (aws_pki.client_key, "device.key")):
        shutil.copy(src, certs / dst)
    world = tmp_path / "world.yaml"
    world.write_text(f"""
network:
  hosts: {{"{AWS_HOST}": "127.0.0.1"}}
aws:
  endpoint: "{AWS_HOST}:{broker.tls_port}"
  thing_name: "{THING}"
  ca: certs/ca.pem
  cert: certs/device.pem
  key: certs/device.key
""")
    link = tmp_path / "ttyEseye"
    cli = Cli("run", "eseye-anynet", "--pty", str(link), "--world", str(world), "--state-dir", str(tmp_path / "st"))
    probe = MqttProbe(broker.port)
    try:
        probe.subscribe(f"temperature/{THING}")
        s = serial.Serial(str(link), 9600, timeout=0.2)

        def until(token: bytes, timeout: float = 10.0) -> bytes:
            buf = b""
            deadline = time.monotonic() + timeout
            while token not in buf:
                assert time.monotonic() < deadline, buf
                buf += s.read(max(1, s.in_waiting))
            return buf

        def line_after(prefix: bytes, timeout: float = 10.0) -> bytes:
            buf = until(prefix, timeout)
            rest = buf[buf.index(prefix):]
            deadline = time.monotonic() + timeout
            while b"\r\n" not in rest:              # the line may arrive in pieces at 9600 baud
                assert time.monotonic() < deadline, rest
                rest += s.read(max(1, s.in_waiting))
            return rest.split(b"\r\n")[0]

        s.write(b"ATE0\r")
        until(b"OK\r\n")
        s.write(b'AT+AWSPUBOPEN=0,"temperature"\r')
        assert line_after(b"+AWSPUBOPEN:") == b"+AWSPUBOPEN:0,0"
        s.write(b'AT+AWSSUBOPEN=0,"resolution"\r')
        assert line_after(b"+AWSSUBOPEN:") == b"+AWSSUBOPEN:0,0"
        s.write(b"AT+AWSPUBLISH=0,4\r")
        until(b"> ")
        s.write(b"23.1")
        until(b"SEND OK\r\n")
        assert probe.wait_for(f"temperature/{THING}")[0] == b"23.1"
        probe.publish(f"resolution/{THING}", b"hi!", qos=1)
        assert until(b"+AWS:0,3\r\nhi!").endswith(b"+AWS:0,3\r\nhi!")
        s.close()
    finally:
        probe.close()
        assert cli.stop() == 0


@pytest.mark.parametrize("host_style", ["CRLF"], indirect=True)
def test_readme_first_steps_with_crlf(broker, aws_pki, probe):
    """README "First steps", eseye-anynet, as written there: CR LF, echo on, 9600 baud pacing."""
    with Emu("eseye-anynet", world=sim_world(aws_pki, broker.tls_port), pacing=True, term=b"\r\n") as e:
        probe.subscribe(f"tele/{THING}")
        assert e.cmd('AT+AWSSUBOPEN=0,"cmd"') == b'AT+AWSSUBOPEN=0,"cmd"\r\n\r\nOK\r\n'
        assert e.read_until(rb"\r\n\+AWSSUBOPEN:.*?\r\n", timeout=10) == b"\r\n+AWSSUBOPEN:0,0\r\n"
        assert e.cmd("AT+AWSSTATE?") == b"AT+AWSSTATE?\r\n\r\n+AWSSTATE: 7\r\n\r\nOK\r\n"
        assert e.cmd('AT+AWSPUBOPEN=0,"tele"') == b'AT+AWSPUBOPEN=0,"tele"\r\n\r\nOK\r\n'
        assert e.read_until(rb"\r\n\+AWSPUBOPEN:.*?\r\n", timeout=10) == b"\r\n+AWSPUBOPEN:0,0\r\n"
        e.write(b"AT+AWSPUBLISH=0,5\r\n")
        assert e.read_until(b"> ") == b"AT+AWSPUBLISH=0,5\r\n> "
        e.write(b"hello")
        assert e.read_until(Emu.FINAL) == b"\r\nSEND OK\r\n"
        assert probe.wait_for(f"tele/{THING}")[0] == b"hello"
        probe.publish(f"cmd/{THING}", b"ping!", qos=1)
        assert e.read_until(rb"\+AWS:0,5\r\n", timeout=5) == b"\r\n+AWS:0,5\r\n"
        assert e.read_exactly(5) == b"ping!"
