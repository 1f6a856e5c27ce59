"""Transcripts: `atemu run --log`, `atemu replay`, `atemu coverage`, `atemu proxy`, as a user runs them."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import serial

from emulator import start

FINAL = re.compile(rb"\r\n(OK|ERROR)\r\n")


def atemu(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "emulator.cli", *args], capture_output=True, text=True, timeout=timeout)


class Proc:
    """`atemu ...` in the background; waits for the line containing `ready on`."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "emulator.cli", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"atemu exited: {self.proc.stderr.read()}")
                self.lines.append(line.strip())
                if "ready on" in line:
                    if "--control" in args:   # the control address follows the ready line
                        self.lines.append(self.proc.stdout.readline().strip())
                    return
            raise RuntimeError("atemu did not become ready")
        except BaseException:
            self.proc.kill()   # never leave an emulator behind when a test fails early
            self.proc.wait()
            raise

    def line(self, word):
        return next(l for l in self.lines if word in l)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def talk(port, lines, baud=9600):
    ser = serial.serial_for_url(port, baud, timeout=0.05)
    out = []
    try:
        for line in lines:
            ser.write(line.encode() + b"\r")
            buf = b""
            deadline = time.monotonic() + 5
            while not FINAL.search(buf):
                assert time.monotonic() < deadline, f"no final result for {line!r}: {buf!r}"
                buf += ser.read(256)
            out.append(buf)
    finally:
        ser.close()
    return out


SESSION = ["AT", "ATE0", "AT+QCCID", "AT+GSN", "AT+AWSSTATE?", "AT+NOPE", "AT+AWSPUBOPEN=?", "AT+AWSSTATE=1",
           "AT+AWSPUBCLOSE=3"]


def record(tmp_path, world=None):
    log = tmp_path / "run.jsonl"
    args = ["run", "eseye-anynet", "--pty", str(tmp_path / "tty"), "--no-pacing", "--log", str(log),
            "--state-dir", str(tmp_path / "state")]
    if world:
        args += ["--world", str(world)]
    p = Proc(*args)
    try:
        answers = talk(str(tmp_path / "tty"), SESSION)
        time.sleep(0.3)  # the +AWSPUBCLOSE URC after OK
    finally:
        assert p.stop() == 0
    return log, answers


def test_log_is_complete(tmp_path):
    log, answers = record(tmp_path)
    assert answers[2] == b"\r\n+QCCID: 89440000000000000001\r\n\r\nOK\r\n"
    recs = [json.loads(l) for l in log.read_text().splitlines()]
    events = {r["event"] for r in recs}
    assert {"meta", "boot", "rx", "tx", "command", "result", "error", "urc"} <= events
    assert recs[0]["event"] == "meta" and recs[0]["profile"] == "eseye-anynet"
    ts = [r["t"] for r in recs]
    assert ts == sorted(ts)  # monotonic timestamps
    sent = b"".join(bytes.fromhex(r["data"]) for r in recs if r["event"] == "rx")
    assert sent == b"".join(l.encode() + b"\r" for l in SESSION)
    got = b"".join(bytes.fromhex(r["data"]) for r in recs if r["event"] == "tx")
    assert b"+QCCID: 89440000000000000001" in got and b"+AWSPUBCLOSE:3,-2" in got
    lines = [bytes.fromhex(r["line"]) for r in recs if r["event"] == "command"]  # the line's bytes, hex
    assert lines[:3] == [b"AT", b"ATE0", b"AT+QCCID"]


def test_replay_identical_then_different(tmp_path):
    log, _ = record(tmp_path)
    r = atemu("replay", str(log))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no differences" in r.stdout
    world = tmp_path / "w.yaml"
    world.write_text("cellular:\n  iccid: '8944999'\n")
    r = atemu("replay", str(log), "--profile", "eseye-anynet", "--world", str(world))
    assert r.returncode == 1
    assert "+QCCID: 89440000000000000001" in r.stdout and "+QCCID: 8944999" in r.stdout
    assert "step 3" in r.stdout


def test_replay_of_bad_file_says_what_to_do(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("hello\n")
    r = atemu("replay", str(bad), "--profile", "eseye-anynet")
    assert r.returncode == 2
    assert "not JSON" in r.stderr and "atemu --log" in r.stderr


def test_coverage(tmp_path):
    log, _ = record(tmp_path)
    r = atemu("coverage", str(log), "--json")
    assert r.returncode == 0, r.stderr
    cov = json.loads(r.stdout)
    assert cov["profile"] == "eseye-anynet"
    assert cov["commands_sent"] == len(SESSION)
    assert "exec" in cov["per_command"]["+QCCID"]["used"]
    assert "write" in cov["per_command"]["+AWSPUBOPEN"]["missing"]
    assert cov["urcs"]["counts"] == {"+AWSPUBCLOSE": 1}
    assert "+AWS" in cov["urcs"]["never"]
    assert cov["errors"]["counts"].get("unknown") == 2  # AT+NOPE and AT+AWSSTATE=1
    # the error paths come from the engine and the profile's own code
    assert cov["errors"]["paths"] == {"unknown": "engine", "param": "engine", "line:syntax": "engine",
                                      "line:too_long": "engine", "line:garbage": "engine", "failed": "profile"}
    assert cov["errors"]["used"] == 1 and cov["errors"]["declared"] == 6
    assert "line:too_long" in cov["errors"]["never"] and "unknown" not in cov["errors"]["never"]
    assert cov["unknown_commands"] == {"+NOPE": 1}
    text = atemu("coverage", str(log)).stdout
    assert "AT+QCCID" in text and "URCs never seen" in text
    assert "errors:   1/6" in text and "error paths never taken: param, line:syntax" in text


def test_error_paths_are_taken_from_the_profile():
    from emulator.profile import CmdError, Profile, find_profile
    from emulator.transcript import coverage, error_paths

    # microchip-winc raises "garbage" and "syntax" itself (binary data phases); eseye-anynet does not
    assert {"garbage", "syntax", "failed"} <= set(error_paths(find_profile("microchip-winc")))
    assert "garbage" not in error_paths(find_profile("eseye-anynet"))

    class Busy(Profile):
        name = "busy-test"

        async def handler(self, ctx):
            raise CmdError("busy", message="try again")

    paths = error_paths(Busy)
    assert paths["busy"] == "profile" and "internal" not in paths
    records = [{"event": "error", "kind": "busy"}, {"event": "line_error", "kind": "too_long"},
               {"event": "error", "kind": "internal"}]
    cov = coverage(records, Busy)["errors"]
    assert cov["used"] == 2 and cov["undeclared"] == ["internal"] and "busy" not in cov["never"]


def test_proxy_records_a_device(tmp_path):
    # the "real" module is a second emulated one on its own pty
    dev = start("eseye-anynet", transport="pty", state_dir=tmp_path / "dev")
    try:
        log = tmp_path / "proxy.jsonl"
        p = Proc("proxy", dev.port, "--baud", "9600", "--pty", str(tmp_path / "host"), "--log", str(log),
                 "--profile", "eseye-anynet")
        try:
            answers = talk(str(tmp_path / "host"), ["ATE0", "AT+GSN", "AT+AWSSTATE?"])
        finally:
            assert p.stop() == 0
    finally:
        dev.close()
    assert answers[1] == b"\r\n356938035643809\r\n\r\nOK\r\n"
    recs = [json.loads(l) for l in log.read_text().splitlines()]
    assert recs[0]["event"] == "meta" and recs[0]["device"] == dev.port
    sent = b"".join(bytes.fromhex(r["data"]) for r in recs if r["event"] == "rx")
    assert sent == b"ATE0\rAT+GSN\rAT+AWSSTATE?\r"
    # and the proxy's transcript replays against the emulator with no differences
    r = atemu("replay", str(log))
    assert r.returncode == 0, r.stdout + r.stderr


def test_transcript_with_seeded_faults_replays_identically(tmp_path):
    log = tmp_path / "faults.jsonl"
    with start("eseye-anynet", transport="pty", log=log, state_dir=tmp_path / "st") as m:
        m.inject("at_error", probability=0.4, seed=11, times=None)
        m.inject("uart_corrupt", direction="tx", probability=0.05, seed=5, times=None)
        ser = serial.serial_for_url(m.port, 9600, timeout=0.05)
        try:
            for _ in range(8):
                ser.write(b"AT+GSN\r")
                time.sleep(0.1)
                ser.read(4096)
        finally:
            ser.close()
    r = atemu("replay", str(log))
    assert r.returncode == 0, r.stdout + r.stderr
    r = atemu("replay", str(log), "--no-faults")                 # without the faults the answers differ
    assert r.returncode == 1 and "step" in r.stdout
