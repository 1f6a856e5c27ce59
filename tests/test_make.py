"""The Makefile as a new user meets it: what `make test` announces, `make run` under Ctrl+C, `make soak`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", f"VENV={VENV}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, **kw)


def test_make_test_announces_what_it_installs_and_runs():
    # -n: print, do not run; -W pyproject.toml: as if it had just changed (the install steps are due)
    r = make("-n", "-W", "pyproject.toml", "test")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "installing Debian package chromium with apt-get (for the control web page tests; about a minute" in out
    assert "installing Debian package mosquitto" in out
    assert "installing atemu with its test extras (pytest, hypothesis, pytest-timeout)" in out
    assert "running the test suite" in out


@pytest.mark.skipif(not (VENV / "bin" / "atemu").exists(), reason="the tests do not run from atemu's virtualenv")
def test_make_run_stops_cleanly_on_ctrl_c(tmp_path):
    link = tmp_path / "tty"
    # a new session, SIGINT at its default (as in a terminal), then Ctrl+C to the whole foreground group
    p = subprocess.Popen(["make", "--no-print-directory", f"VENV={VENV}", "-o", f"{VENV}/.atemu-installed", "run",
                          f"ARGS=--pty {link} --state-dir {tmp_path / 'state'} --no-pacing"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    out = b""
    deadline = time.monotonic() + 60
    try:
        while b"ready on" not in out:
            assert time.monotonic() < deadline and p.poll() is None, out
            out += p.stdout.read1(4096)
        assert link.is_symlink()
        os.killpg(p.pid, signal.SIGINT)
        out += p.stdout.read()
        p.wait(20)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    text = out.decode()
    assert "ready on" in text and "Traceback" not in text
    assert "Interrupt" not in text and "Error" not in text and "***" not in text, text   # make adds nothing
    assert not link.exists()                                                            # atemu cleaned up


def test_soak_smoke(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "soak.py"), "--seconds", "3", "--interval",
                        "0.5", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((tmp_path / "soak.json").read_text())
    c = res["counts"]
    assert c["cycles"] >= 5 and c["tcp_round_trips"] == c["cycles"] and res["error"] is None
    if os.path.exists("/usr/sbin/mosquitto"):
        assert c["mqtt_publishes"] == c["mqtt_received"] == c["cycles"]
    assert len(res["samples"]) >= 4 and all(s["rss_kib"] > 0 for s in res["samples"])
    assert "soak: RSS start" in r.stdout and "growth after warm-up" in r.stdout


def test_readme_peer_set_up_runs_in_a_scratch_folder_on_chosen_ports(tmp_path):
    import re
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "make_pki" in b)
    ports = {"ECHO_PORT": free_port(), "TLS_PORT": free_port(), "MQTT_PORT": free_port()}
    assert "mkdir -p /tmp/atemu-lab && cd /tmp/atemu-lab" in block and "ECHO_PORT=17007 TLS_PORT=18883 MQTT_PORT=18830" in block
    block = block.replace("/tmp/atemu-lab", str(tmp_path / "lab"))
    block = block.replace("ECHO_PORT=17007 TLS_PORT=18883 MQTT_PORT=18830", " ".join(f"{k}={v}" for k, v in ports.items()))
    if os.geteuid() != 0:
        block = block.replace("'user root' ", "")
    before = {p.name for p in ROOT.iterdir()}
    p = subprocess.Popen(["bash", "-c", block + "\nwait\n"], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        up: set[int] = set()
        while up != set(ports.values()):
            assert time.monotonic() < deadline and p.poll() is None, f"peers not up: {up} of {ports}"
            for port in set(ports.values()) - up:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        up.add(port)
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", ports["ECHO_PORT"]), timeout=5) as s:
            s.sendall(b"hello")
            assert s.recv(16) == b"hello"
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    assert {"ca.crt", "client.crt", "client.key"} <= {f.name for f in (tmp_path / "lab" / "certs").iterdir()}
    assert (tmp_path / "lab" / "mosquitto.conf").is_file()
    assert {p.name for p in ROOT.iterdir()} - before == set()        # nothing written into the repository
