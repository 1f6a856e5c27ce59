"""Transcripts: `atemu run --log`, `atemu replay`, `atemu coverage`, `atemu proxy`, as a user runs them."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import serial

from atemu import start

FINAL = re.compile(rb"\r\n(OK|ERROR)\r\n")


def atemu(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "atemu.cli", *args], capture_output=True, text=True, timeout=timeout)


class Proc:
    """`atemu ...` in the background; waits for the line containing `ready on`."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "atemu.cli", *args], stdout=subprocess.PIPE,
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
    assert b"+QCCID: 89440000000000000001" in got and b"+AWSPUBCLOSE: 3, -2" in got
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
    from atemu.profile import CmdError, Profile, find_profile
    from atemu.transcript import coverage, error_paths

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
    # coverage reads the commands back from the bytes (a proxy records no command events)
    cov = json.loads(atemu("coverage", str(log), "--json").stdout)
    assert cov["commands_sent"] == 3 and cov["source"].startswith("uart bytes")
    assert cov["per_command"]["+GSN"]["used"] == ["exec"] and cov["per_command"]["+AWSSTATE"]["used"] == ["read"]
    assert atemu("coverage", str(log)).stdout.startswith("eseye-anynet: 3 commands sent (read from the UART bytes")


def test_coverage_names_each_urc_once_and_reads_urcs_from_bytes():
    from atemu.profile import find_profile
    from atemu.transcript import coverage
    cls = find_profile("quectel")
    never = coverage([], cls)["urcs"]["never"]
    assert never.count("+QSSLURC") == 1 and len(never) == len(set(never))
    recs = [{"event": "rx", "data": b'AT+QIOPEN=1,"TCP","127.0.0.1",7,0,0\r\n'.hex()},
            {"event": "tx", "data": b'AT+QIOPEN=1,"TCP","127.0.0.1",7,0,0\r\r\nOK\r\n\r\n+QIOPEN: 1,0\r\n'.hex()},
            {"event": "rx", "data": b"AT+QIOPEN?\r\n".hex()},
            {"event": "tx", "data": b'\r\n+QIOPEN: 1,"TCP","127.0.0.1",7\r\n\r\nOK\r\n'.hex()}]
    cov = coverage(recs, cls)
    assert cov["commands_sent"] == 2 and cov["urcs"]["counts"] == {"+QIOPEN": 1}   # the read answer is not a URC


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


# ---- replay normalises what the world makes variable; bad files are one line; big files stream ------------

def until(ser, pattern, timeout=10.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf):
        assert time.monotonic() < deadline, f"no {pattern!r}: {buf!r}"
        buf += ser.read(256)
    return buf


def test_replay_of_the_readme_microchip_sequence_ignores_the_local_port(tmp_path, tcp_echo):
    log = tmp_path / "winc.jsonl"
    world = {"wifi": {"access_points": [{"ssid": "lab", "security": "wpa2", "password": "labpass123"}]}}
    wfile = tmp_path / "w.yaml"
    wfile.write_text(json.dumps(world))            # JSON is YAML
    with start("microchip-winc", transport="pty", log=log, world=world, state_dir=tmp_path / "st") as m:
        ser = serial.serial_for_url(m.port, 115200, timeout=0.05)
        try:
            for line, pattern in [('AT+WSTAC=1,"lab"', rb"OK\r\n"), ("AT+WSTAC=2,3", rb"OK\r\n"),
                                  ('AT+WSTAC=3,"labpass123"', rb"OK\r\n"), ("AT+WSTA=1", rb"\+WSTAAIP:.*\r\n"),
                                  ("AT+SOCKO=2", rb"OK\r\n"),
                                  (f'AT+SOCKBR=1,"127.0.0.1",{tcp_echo.port}', rb"\+SOCKIND:.*\r\n"),
                                  ('AT+SOCKWR=1,5,"hello"', rb"\+SOCKRXT:1,5\r\n"),
                                  ("AT+SOCKRD=1,1,100", rb"OK\r\n"), ("AT+SOCKCL=1", rb"OK\r\n")]:
                ser.write(line.encode() + b"\r\n")
                got = until(ser, pattern)
                if line.startswith("AT+SOCKBR"):
                    local = int(re.search(rb'\+SOCKIND:1,"127.0.0.1",(\d+),', got).group(1))
        finally:
            ser.close()
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert lo <= local <= hi
    r = atemu("replay", str(log), "--world", str(wfile))
    assert r.returncode == 0, r.stdout + r.stderr
    r = atemu("replay", str(log), "--world", str(wfile), "--raw")       # byte for byte: the local port differs
    assert r.returncode == 1 and "+SOCKIND:1" in r.stdout and f',{local},"127.0.0.1"' in r.stdout


def test_normaliser_rules():
    from atemu.profile import find_profile
    from atemu.transcript import Normaliser
    n = Normaliser(find_profile("quectel"))
    assert n.same(b'+SOCKIND:1,"127.0.0.1",40001,"127.0.0.1",17007', b'+SOCKIND:1,"127.0.0.1",51234,"127.0.0.1",17007')
    assert not n.same(b'+SOCKIND:1,"127.0.0.1",40001,"127.0.0.1",17007', b'+SOCKIND:2,"127.0.0.1",51234,"127.0.0.1",17007')
    assert not n.same(b"+QIRD: 5", b"+QIRD: 6")                       # small numbers are data
    assert n.same(b'+QLTS: "2026/12/03,14:00:00+00"', b'+QLTS: "2026/12/03,14:00:07+00"')
    assert n.same(b'+QMTRECV: 0,17,"cmd",4,"ping"', b'+QMTRECV: 0,3,"cmd",4,"ping"')   # the broker's packet id
    assert not n.same(b'+QMTRECV: 0,17,"cmd",4,"ping"', b'+QMTRECV: 0,17,"cmd",4,"pong"')
    assert not Normaliser(find_profile("quectel"), raw=True).same(b"+X: 40001", b"+X: 51234")


BAD_FILES = [
    (b'{"t": 0, "event": "meta", "profile": "eseye-anynet"}\n{"t": 1, "event": "rx", "data": "4154\xff"}\n',
     "x.jsonl:2: not UTF-8 text"),
    (b'{"t": 0, "event": "meta", "profile": ["eseye"]}\n', "x.jsonl:1: the meta record's 'profile' must be a profile name"),
    (b'{"t": 0, "event": "meta", "profile": "eseye-anynet"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n",
     "x.jsonl:2: "),
    (b'{"t": 0, "event": "meta", "profile": "eseye-anynet"}\n{"t": "soon", "event": "rx", "data": "4154"}\n',
     "x.jsonl:2: 't' must be a number of seconds, not 'soon'"),
    (b'{"t": 0, "event": "meta", "profile": "eseye-anynet"}\n{"t": 1, "event": "rx", "data": "zz"}\n',
     "x.jsonl:2: 'data' of an rx record must be hex bytes"),
    (b'{"t": 0, "event": "meta", "profile": "eseye-anynet"}\n{"t": 1, "event": "x", "v": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}\n", "x.jsonl:2: a JSON value nested too deeply"),
]


@pytest.mark.parametrize("content, words", BAD_FILES)
@pytest.mark.parametrize("command", ["replay", "coverage"])
def test_bad_transcripts_are_one_line_naming_the_line(tmp_path, command, content, words):
    (tmp_path / "x.jsonl").write_bytes(content)
    r = subprocess.run([sys.executable, "-m", "atemu.cli", command, "x.jsonl"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atemu: error: ") and words in lines[0], r.stderr


def _peak_rss_kib(*args, cwd):
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True); "
            "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.stderr.write(p.stdout.decode()[-500:] + p.stderr.decode()[-500:])")
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "atemu.cli", *args], capture_output=True,
                       text=True, timeout=300, cwd=cwd)
    rc, rss = r.stdout.split()
    return int(rc), int(rss), r.stderr


def test_replay_and_coverage_stream_a_big_transcript(tmp_path):
    def write(path, writes, filler):
        with open(path, "w") as f:
            f.write(json.dumps({"t": 0, "event": "meta", "profile": "eseye-anynet", "module": "m"}) + "\n")
            t = 1.0
            for i in range(writes):
                f.write(json.dumps({"t": t, "module": "m", "event": "rx", "data": b"AT\r\n".hex()}) + "\n")
                f.write(json.dumps({"t": t + 0.001, "module": "m", "event": "tx", "data": b"AT\r\r\nOK\r\n".hex()}) + "\n")
                for _ in range(filler):   # what a busy module also logs: URCs, world changes...
                    f.write(json.dumps({"t": t + 0.002, "module": "m", "event": "world", "change": "note",
                                        "text": "x" * 2000}) + "\n")
                t += 0.005
    write(tmp_path / "small.jsonl", 100, 0)
    write(tmp_path / "big.jsonl", 100, 100)
    size = (tmp_path / "big.jsonl").stat().st_size
    assert size > 20_000_000
    for command in ("replay", "coverage"):
        rc_s, small, err = _peak_rss_kib(command, "small.jsonl", cwd=tmp_path)
        assert rc_s == 0, err
        rc_b, big, err = _peak_rss_kib(command, "big.jsonl", cwd=tmp_path)
        assert rc_b == 0, err
        # loading the records would cost several times the file size; streaming costs about nothing
        assert big - small < size / 1024 / 4, (command, small, big, size)
