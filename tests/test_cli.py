"""The ``atemu`` command line and its transports, run as a user would run them."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import serial

from harness import Cli

ATEMU = [sys.executable, "-m", "atemu.cli"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*ATEMU, *args], capture_output=True, text=True, timeout=timeout)


def at(ser, line: bytes, until: bytes = b"OK\r\n", timeout: float = 5.0) -> bytes:
    ser.write(line + b"\r")
    got = b""
    deadline = time.monotonic() + timeout
    while until not in got and b"ERROR" not in got and time.monotonic() < deadline:
        got += ser.read(256)
    return got


def test_version_profiles_describe():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("atemu ")
    r = run("profiles", "--json")
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["eseye-anynet"]["default_baud"] == 9600
    assert rows["eseye-anynet"]["commands"] == 9
    r = run("describe", "eseye-anynet", "--json")
    d = json.loads(r.stdout)
    names = sorted(c["name"] for c in d["commands"])
    assert names == sorted(["AT+QCCID", "AT+GSN", "AT+AWSVER", "AT+AWSPUBOPEN", "AT+AWSPUBLISH", "AT+AWSSUBOPEN",
                            "AT+AWSPUBCLOSE", "AT+AWSSUBCLOSE", "AT+AWSSTATE"])
    assert sorted(u["name"] for u in d["urcs"]) == ["+AWS", "+AWSPUBCLOSE", "+AWSPUBOPEN", "+AWSSUBOPEN"]
    pub = next(c for c in d["commands"] if c["name"] == "AT+AWSPUBLISH")
    assert [p["name"] for p in pub["forms"]["write"]["params"]] == ["awspindex", "length", "qos"]
    assert pub["forms"]["write"]["params"][1]["range"] == [1, 240]
    r = run("describe", "eseye")   # alias, text form
    assert "AT+AWSPUBLISH=<awspindex>,<length>,[<qos>]" in r.stdout
    r = run("describe", "nonesuch")
    assert r.returncode == 2 and "unknown profile" in r.stderr and "Traceback" not in r.stderr


def test_run_pty_ready_line_and_clean_stop(tmp_path):
    link = tmp_path / "ttyEseye"
    cli = Cli("run", "eseye-anynet", "--pty", str(link), "--no-pacing", "--state-dir", str(tmp_path / "st"))
    try:
        assert cli.ready_line == f"atemu: eseye-anynet ready on {link}"
        with serial.Serial(str(link), 9600, timeout=0.1) as s:
            assert at(s, b"AT").endswith(b"OK\r\n")
    finally:
        assert cli.stop(signal.SIGTERM) == 0
    assert not link.exists() and not link.is_symlink()


def test_run_default_pty_prints_path(tmp_path):
    cli = Cli("run", "eseye", "--no-pacing", "--state-dir", str(tmp_path))
    try:
        path = cli.ready_line.rsplit(" ", 1)[1]
        assert path.startswith("/dev/pts/")
        with serial.Serial(path, 9600, timeout=0.1) as s:
            assert b"+QCCID: " in at(s, b"AT+QCCID")
    finally:
        assert cli.stop(signal.SIGINT) == 0


def test_bad_world_file_is_one_clear_line(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text("aws:\n  endpont: x:1\n")
    r = run("run", "eseye", "--world", str(w))
    assert r.returncode == 2
    assert "unknown key 'aws.endpont'" in r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("atemu: error:")]
    assert "Traceback" not in r.stderr and len(errors) == 1
    w.write_text("wifi: {access_points: [{ssid: lab, security: wpa9, password: x}]}\n")
    r = run("run", "eseye", "--world", str(w))
    assert r.returncode == 2 and "security" in r.stderr and "Traceback" not in r.stderr
    w.write_text("network: [\n")
    r = run("run", "eseye", "--world", str(w))
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = run("run", "eseye", "--world", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_tcp_transport_and_port_in_use(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    r = run("run", "eseye", "--tcp", str(port), "--state-dir", str(tmp_path))
    assert r.returncode == 2 and "already in use" in r.stderr and "Traceback" not in r.stderr
    busy.close()
    cli = Cli("run", "eseye", "--tcp", f"127.0.0.1:{port}", "--no-pacing", "--state-dir", str(tmp_path))
    try:
        assert cli.ready_line.endswith(f"socket://127.0.0.1:{port}")
        s = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.1)
        assert at(s, b"ATE0").endswith(b"OK\r\n")
        s.close()
        s = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.1)   # reconnect: state kept (echo off)
        assert at(s, b"AT") == b"\r\nOK\r\n"
        s.close()
    finally:
        cli.stop()


def test_rfc2217_sets_baud(tmp_path):
    from peers.mosquitto import free_port
    port = free_port()
    cli = Cli("run", "eseye", "--rfc2217", str(port), "--no-pacing", "--state-dir", str(tmp_path))
    try:
        assert cli.ready_line.endswith(f"rfc2217://127.0.0.1:{port}")
        s = serial.serial_for_url(f"rfc2217://127.0.0.1:{port}", baudrate=9600, timeout=0.1)
        assert at(s, b"ATE0").endswith(b"OK\r\n")
        s.baudrate = 115200
        assert at(s, b"AT") == b"\r\nOK\r\n"
        s.close()
    finally:
        cli.stop()
    err = cli.stderr()
    assert "115200" in err and "9600" in err


def test_pty_baud_mismatch_warns(tmp_path):
    link = tmp_path / "tty"
    cli = Cli("run", "eseye", "--pty", str(link), "--no-pacing", "--state-dir", str(tmp_path / "s"))
    try:
        with serial.Serial(str(link), 115200, timeout=0.1) as s:
            assert at(s, b"AT").endswith(b"OK\r\n")
    finally:
        cli.stop()
    err = cli.stderr()
    assert "115200" in err and "9600" in err


def test_exec_child_terminal_exit_status(tmp_path):
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        os.write(1, b"ATE0\\r")
        buf = b""
        t = time.time()
        while b"OK" not in buf and time.time() - t < 5:
            buf += os.read(0, 100)
        os.write(1, b"AT+GSN\\r")
        buf = b""
        while b"OK" not in buf and time.time() - t < 5:
            buf += os.read(0, 100)
        sys.exit(7 if b"356938035643809" in buf else 1)
    """))
    r = run("run", "eseye", "--no-pacing", "--state-dir", str(tmp_path / "s"), "--exec", f"{sys.executable} {script}")
    assert r.returncode == 7, r.stderr


def test_exec_with_port_placeholder(tmp_path):
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent("""
        import sys, serial, time
        s = serial.Serial(sys.argv[1], 9600, timeout=0.2)
        s.write(b"AT\\r")
        buf = b""
        t = time.time()
        while b"OK" not in buf and time.time() - t < 5:
            buf += s.read(100)
        sys.exit(0 if buf.endswith(b"OK\\r\\n") else 3)
    """))
    r = run("run", "eseye", "--no-pacing", "--state-dir", str(tmp_path / "s"),
            "--exec", f"{sys.executable} {script} {{port}}")
    assert r.returncode == 0, r.stderr
    r = run("run", "eseye", "--no-pacing", "--state-dir", str(tmp_path / "s"),
            "--exec", f"{sys.executable} -c 'import sys; sys.exit(5)' {{port}}")
    assert r.returncode == 5


def test_log_transcript(tmp_path):
    link = tmp_path / "tty"
    log = tmp_path / "t.jsonl"
    cli = Cli("run", "eseye", "--pty", str(link), "--no-pacing", "--log", str(log), "--state-dir", str(tmp_path / "s"))
    try:
        with serial.Serial(str(link), 9600, timeout=0.1) as s:
            at(s, b"AT+AWSSTATE?")
    finally:
        cli.stop()
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    kinds = {r["event"] for r in recs}
    assert {"rx", "tx", "command", "result"} <= kinds
    rx = b"".join(bytes.fromhex(r["data"]) for r in recs if r["event"] == "rx")
    assert rx == b"AT+AWSSTATE?\r"


def test_unknown_profile_option_is_rejected(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text("options: {eseye.subclose_ur: AWSSUBCLOSE, ti-simplelink.nonsense: 1}\n")
    r = run("run", "eseye", "--world", str(w))
    assert r.returncode == 2
    assert "unknown option 'eseye.subclose_ur'" in r.stderr and "eseye.subclose_urc" in r.stderr
    w.write_text("options: {ti-simplelink.nonsense: 1}\n")   # another profile's options are not ours to judge
    r = run("run", "eseye", "--world", str(w), "--exec", "true")
    assert r.returncode == 0, r.stderr


def test_describe_into_a_closed_pipe_is_quiet():
    r = subprocess.run(f"{sys.executable} -m atemu.cli describe ti-simplelink | head -1", shell=True,
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.startswith("ti-simplelink: ")
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


def test_exec_missing_program_fails_before_the_ready_line(tmp_path):
    for cmd in ("atemu-no-such-program {port}", "atemu-no-such-program", str(tmp_path / "nope.sh"), ""):
        r = run("run", "eseye", "--state-dir", str(tmp_path), "--exec", cmd)
        assert r.returncode == 2, cmd
        assert r.stdout == "", cmd                       # no ready line: nothing was started
        errors = r.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("atemu: error: --exec"), r.stderr
    r = run("run", "eseye", "--state-dir", str(tmp_path), "--exec", "atemu-no-such-program {port}")
    assert "not found on PATH" in r.stderr


def test_second_run_on_a_live_pty_link_is_refused(tmp_path):
    link = tmp_path / "ttyE"
    first = Cli("run", "eseye", "--pty", str(link), "--no-pacing", "--state-dir", str(tmp_path / "a"))
    try:
        target = os.readlink(link)
        r = run("run", "eseye", "--pty", str(link), "--state-dir", str(tmp_path / "b"), timeout=15)
        assert r.returncode == 2 and "already links to" in r.stderr and "Traceback" not in r.stderr
        assert os.readlink(link) == target               # the first module keeps its link
        with serial.Serial(str(link), 9600, timeout=0.1) as s:
            assert at(s, b"AT").endswith(b"OK\r\n")
    finally:
        assert first.stop(signal.SIGINT) == 0
    stale = tmp_path / "ttyStale"
    os.symlink("/dev/pts/987654", stale)                # left behind by a killed run: replaced
    cli = Cli("run", "eseye", "--pty", str(stale), "--no-pacing", "--state-dir", str(tmp_path / "c"))
    try:
        assert cli.ready_line.endswith(str(stale)) and os.readlink(stale).startswith("/dev/pts/")
    finally:
        cli.stop()


def test_verbose_logs_commands_and_results(tmp_path):
    link = tmp_path / "tty"
    cli = Cli("run", "eseye", "--pty", str(link), "--no-pacing", "-v", "--state-dir", str(tmp_path / "s"))
    try:
        with serial.Serial(str(link), 9600, timeout=0.1) as s:
            at(s, b"AT+GSN")
            at(s, b"AT+NOSUCH")
    finally:
        cli.stop()
    err = cli.stderr()
    assert "command b'AT+GSN'" in err and "result OK" in err
    assert "unknown command AT+NOSUCH" in err and "Using selector" not in err


def test_unusable_state_dir_and_pty_folder_are_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    r = run("run", "eseye", "--state-dir", str(afile / "sub"), "--exec", "true")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "[Errno" not in r.stderr
    assert r.stderr.startswith("atemu: error: state folder ") and "--state-dir" in r.stderr
    r = run("run", "eseye", "--state-dir", str(tmp_path / "s"), "--pty", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr and str(tmp_path / "ttyAT") in r.stderr


def test_usage_mistakes_are_one_line():
    for args, words in ((("run", "eseye", "--baud", "abc"), "invalid int value"),
                        (("run",), "required: profile"),
                        (("proxy", "/dev/ttyUSB0"), "--log"),
                        (("run", "eseye", "--bogus"), "unrecognized arguments: --bogus")):
        r = run(*args)
        assert r.returncode == 2, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("atemu: error: ") and words in lines[0], r.stderr
        assert "--help" in lines[0]


def test_describe_lists_world_options_and_readme_documents_them():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for profile in ("eseye-anynet", "quectel-fcm242d", "ti-simplelink", "microchip-winc"):
        d = json.loads(run("describe", profile, "--json").stdout)
        assert d["world_options"], profile
        for key in d["world_options"]:
            assert f"`{key}`" in readme, f"README.md does not document the world option {key}"
    r = run("describe", "eseye")
    assert "World options" in r.stdout and "eseye.subclose_urc" in r.stdout


def test_replay_uses_the_recorded_world(tmp_path):
    world = tmp_path / "w.yaml"
    world.write_text('cellular: {iccid: "89440000000000000777"}\n')
    link, log = tmp_path / "tty", tmp_path / "t.jsonl"
    cli = Cli("run", "eseye", "--pty", str(link), "--no-pacing", "--world", str(world), "--log", str(log),
              "--state-dir", str(tmp_path / "s"))
    try:
        with serial.Serial(str(link), 9600, timeout=0.1) as s:
            assert b"89440000000000000777" in at(s, b"AT+QCCID")
    finally:
        cli.stop()
    assert json.loads(log.read_text().splitlines()[0])["world"] == str(world.resolve())
    r = run("replay", str(log), "--settle", "0.1")
    assert r.returncode == 0 and "recorded world" in r.stderr, r.stdout + r.stderr
    r = run("replay", str(log), "--settle", "-1")
    assert r.returncode == 2 and "--settle must be a positive number" in r.stderr
    world.unlink()
    r = run("replay", str(log), "--settle", "0.1")
    assert r.returncode == 1 and "is gone" in r.stderr and "Traceback" not in r.stderr


def test_two_runs_on_one_state_folder_warn(tmp_path):
    state = tmp_path / "state"
    first = Cli("run", "eseye", "--no-pacing", "--state-dir", str(state))
    try:
        r = run("run", "eseye", "--no-pacing", "--state-dir", str(state), "--exec", "true")
        assert r.returncode == 0
        assert "another atemu run uses the state folder" in r.stderr and "--state-dir" in r.stderr
    finally:
        first.stop()
    r = run("run", "eseye", "--no-pacing", "--state-dir", str(state), "--exec", "true")
    assert r.returncode == 0 and "another atemu" not in r.stderr


def test_describe_text_shows_parameter_values():
    r = run("describe", "ti-simplelink")
    assert "values: <security> OPEN|WEP|WEP_SHARED|WPA_WPA2" in r.stdout
    r = run("describe", "eseye")
    assert "values: <awspindex> 0..1; <length> 1..240" in r.stdout


def test_proxy_pty_problems_are_one_line(tmp_path):
    device = socket.socket()                       # a "module" the proxy can open
    device.bind(("127.0.0.1", 0))
    device.listen()
    try:
        url = f"socket://127.0.0.1:{device.getsockname()[1]}"
        link = tmp_path / "nodir" / "tty"
        r = run("proxy", url, "--pty", str(link), "--log", str(tmp_path / "p.jsonl"))
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [f"atemu: error: --pty {link}: folder {link.parent} does not exist"]
    finally:
        device.close()


def test_world_values_are_checked(tmp_path):
    w = tmp_path / "w.yaml"
    for text, expect in [
        ("network: {hosts: {a.example: 1.2.3}}", "network.hosts.a.example"),
        ("network: {hosts: {a.example: [127.0.0.1, other.name]}}", "IP addresses only"),
        ("wifi: {access_points: [{ssid: lab, security: wpa2, password: short}]}", "8 to 63 characters"),
        ("wifi: {access_points: [{ssid: lab, security: wep, password: abc}]}", "WEP key"),
    ]:
        w.write_text(text + "\n")
        r = run("run", "eseye", "--world", str(w))
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, (text, r.stderr)
    w.write_text("network: {hosts: {a.example: [127.0.0.1, '::1'], b.example: a.example}}\n"
                 "wifi: {access_points: [{ssid: lab, security: wep, password: abcde}, {ssid: o, security: open}]}\n")
    r = run("run", "eseye", "--world", str(w), "--exec", "true")
    assert r.returncode == 0, r.stderr


def test_control_port_in_use_is_one_line(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = run("run", "eseye", "--control", f"127.0.0.1:{port}", "--state-dir", str(tmp_path))
    finally:
        busy.close()
    assert r.returncode == 2 and "already in use" in r.stderr and "Errno" not in r.stderr, r.stderr


def test_bad_host_port_values_name_their_flag(tmp_path):
    for flag in ("--tcp", "--rfc2217", "--control"):
        r = run("run", "eseye", "--state-dir", str(tmp_path), flag, "notaport", "--exec", "true")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f"atemu: error: {flag} 'notaport': not a port"), r.stderr


def test_refused_second_run_on_the_same_state_folder_says_only_why(tmp_path):
    link, state = tmp_path / "ttyE", tmp_path / "state"
    first = Cli("run", "eseye", "--pty", str(link), "--no-pacing", "--state-dir", str(state))
    try:
        r = run("run", "eseye", "--pty", str(link), "--state-dir", str(state), timeout=15)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "already links to" in lines[0], r.stderr
    finally:
        first.stop()


def test_in_process_baud_warning_has_the_atemu_prefix(tmp_path):
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent("""
        import serial, time
        from atemu import start
        with start("eseye-anynet", transport="pty") as m:
            with serial.Serial(m.port, 115200, timeout=0.1) as s:
                s.write(b"AT\\r\\n")
                deadline = time.monotonic() + 5
                got = b""
                while b"OK" not in got and time.monotonic() < deadline:
                    got += s.read(64)
        """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == [
        "atemu: WARNING: eseye-anynet: host opened the port at 115200 baud but the module runs at 9600 baud; "
        "a real module would see garbage"]


def test_atemu_url_works_after_importing_the_package_outside_pytest(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""
        import time
        import serial
        import atemu                      # the import alone registers the atemu:// scheme
        s = serial.serial_for_url("atemu://eseye-anynet", timeout=0.1)
        s.write(b"AT+GSN\\r\\n")
        got, deadline = b"", time.monotonic() + 5
        while b"OK" not in got and time.monotonic() < deadline:
            got += s.read(64)
        s.close()
        print(got)
        """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "356938035643809" in r.stdout and "OK" in r.stdout
