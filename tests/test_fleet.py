"""``atemu fleet``: many modules in one process, each on its own port, one control API for all."""
from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import serial

ATEMU = [sys.executable, "-m", "atemu.cli"]


class Fleet:
    """``atemu fleet ...`` as a subprocess; waits for 'fleet ready' and collects the module ports."""

    def __init__(self, *args: str, timeout: float = 60.0):
        self.proc = subprocess.Popen([*ATEMU, "fleet", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith("atemu: fleet ready"):
                break
        if not self.lines or not self.lines[-1].startswith("atemu: fleet ready"):
            self.proc.kill()
            raise RuntimeError(f"fleet did not become ready: {self.lines} {self.proc.stderr.read()}")
        self.ports = {m[0]: m[2] for m in (re.fullmatch(r"atemu: (\S+) \((\S+)\) on (\S+)", ln) for ln in self.lines)
                      if m for m in [m.groups()]}
        ctl = [ln for ln in self.lines if ln.startswith("atemu: control on ")]
        self.control = ctl[0][len("atemu: control on "):].rstrip("/") if ctl else None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def at(ser, line: bytes, until: bytes = b"OK\r\n", timeout: float = 10.0) -> bytes:
    ser.write(line + b"\r\n")                       # like host code: CR LF
    got = b""
    deadline = time.monotonic() + timeout
    while until not in got and b"ERROR" not in got and time.monotonic() < deadline:
        got += ser.read(256)
    time.sleep(0.1)                                 # nothing may follow the answer (the LF is echoed with the CR)
    return got + ser.read(ser.in_waiting or 1)


def get(url: str, token: str | None = None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_fleet_file_mixed_groups_overrides_one_control_api(tmp_path):
    (tmp_path / "lab.yaml").write_text("wifi:\n  access_points:\n    - {ssid: lab, password: labpass123}\n")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(textwrap.dedent("""\
        world: lab.yaml
        modules:
          - {profile: eseye-anynet, count: 3, name: anynet}
          - profile: quectel
            count: 2
            transport: rfc2217
            overrides:
              1: {world: {wifi: {access_points: [{ssid: other, password: otherpass1, rssi: -61, channel: 11}]}}}
        """))
    f = Fleet(str(fleet), "--no-pacing", "--state-dir", str(tmp_path / "st"), "--control", "127.0.0.1:0",
              "--control-token", "tok3n")
    try:
        assert f.lines[-1] == "atemu: fleet ready: 5 modules"
        assert sorted(f.ports) == ["anynet-0", "anynet-1", "anynet-2", "quectel-fcm242d-0", "quectel-fcm242d-1"]
        assert all(u.startswith("socket://127.0.0.1:") for n, u in f.ports.items() if n.startswith("anynet"))
        assert all(u.startswith("rfc2217://127.0.0.1:") for n, u in f.ports.items() if n.startswith("quectel"))
        assert len(set(f.ports.values())) == 5                           # a port each
        # one control API lists every module, token required
        assert get(f"{f.control}/api/modules")[0] == 401
        status, mods = get(f"{f.control}/api/modules", "tok3n")
        assert status == 200
        assert {m["name"]: m["port"] for m in mods} == f.ports
        assert {m["name"]: m["profile"] for m in mods}["anynet-2"] == "eseye-anynet"
        # every module answers AT on its own port
        for name, url in f.ports.items():
            s = serial.serial_for_url(url, timeout=0.2)
            try:
                assert at(s, b"AT") == b"AT\r\n\r\nOK\r\n", name
            finally:
                s.close()
        # the group's world from the file; module 1's override replaces its access points
        scans = {}
        for name in ("quectel-fcm242d-0", "quectel-fcm242d-1"):
            s = serial.serial_for_url(f.ports[name], timeout=0.2)
            try:
                scans[name] = at(s, b"AT+QWSCAN")
            finally:
                s.close()
        assert scans["quectel-fcm242d-0"] == (b'AT+QWSCAN\r\n\r\n+QWSCAN: "lab",WPA2_PSK,-50,02:00:00:00:00:01,6\r\n'
                                               b'\r\nOK\r\n')
        assert scans["quectel-fcm242d-1"] == (b'AT+QWSCAN\r\n\r\n+QWSCAN: "other",WPA2_PSK,-61,02:00:00:00:00:01,11\r\n'
                                               b'\r\nOK\r\n')
        # the control plane changes one module's world, not its neighbour's
        req = urllib.request.Request(f"{f.control}/api/modules/quectel-fcm242d-0/world", method="POST",
                                     data=json.dumps({"change": "remove_ap", "ssid": "lab"}).encode(),
                                     headers={"Authorization": "Bearer tok3n", "Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
        s = serial.serial_for_url(f.ports["quectel-fcm242d-0"], timeout=0.2)
        try:
            assert at(s, b"AT+QWSCAN") == b"AT+QWSCAN\r\n\r\nOK\r\n"        # nothing in range
        finally:
            s.close()
        # state folders are per module
        assert sorted(p.name for p in (tmp_path / "st").iterdir()) == sorted(f.ports)
    finally:
        assert f.stop() == 0


def test_fleet_flags_consecutive_ports_and_transcripts(tmp_path):
    import random
    for attempt in range(10):     # a block of 3 free ports below the ephemeral range (other tests' connections)
        base = random.randrange(20000, 30000)
        try:
            for p in range(base, base + 3):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", p))
        except OSError:
            continue
        try:
            f = Fleet("--profile", "ti-simplelink", "--count", "3", "--tcp", f"127.0.0.1:{base}", "--name", "ti",
                      "--no-pacing", "--state-dir", str(tmp_path / "st"), "--log-dir", str(tmp_path / "logs"))
            break
        except RuntimeError as e:
            if "already in use" not in str(e):
                raise
    else:
        raise AssertionError("no block of 3 free ports found")
    try:
        assert f.ports == {f"ti-{i}": f"socket://127.0.0.1:{base + i}" for i in range(3)}
        s = serial.serial_for_url(f.ports["ti-2"], timeout=0.2)
        try:
            assert at(s, b"AT+Start") == b"OK\r\n"                 # TI's source: no startup event
            assert at(s, b"AT+Test") == b"OK\r\n"
        finally:
            s.close()
    finally:
        assert f.stop() == 0
    recs = [json.loads(x) for x in (tmp_path / "logs" / "ti-2.jsonl").read_text().splitlines()]
    assert recs[0]["event"] == "meta" and recs[0]["module"] == "ti-2"
    assert any(r["event"] == "command" and bytes.fromhex(r["line"]) == b"AT+Start" for r in recs
               if isinstance(r.get("line"), str))
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["ti-0.jsonl", "ti-1.jsonl", "ti-2.jsonl"]


def test_fleet_control_token_from_a_file(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret-from-file\n")
    f = Fleet("--profile", "rnwf02", "--count", "1", "--tcp", "127.0.0.1:0", "--no-pacing",
              "--state-dir", str(tmp_path / "st"), "--control", "127.0.0.1:0", "--control-token-file", str(tok))
    try:
        assert get(f"{f.control}/api/modules")[0] == 401
        assert get(f"{f.control}/api/modules", "s3cret-from-file\n".strip() + "x")[0] == 401
        status, mods = get(f"{f.control}/api/modules", "s3cret-from-file")
        assert status == 200 and [m["name"] for m in mods] == ["rnwf02-0"]
    finally:
        assert f.stop() == 0


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ATEMU, "fleet", *args], capture_output=True, text=True, timeout=60)


def test_fleet_check_and_one_line_errors(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("host: 0.0.0.0\nmodules:\n  - {profile: microchip-winc, count: 2, port: 7100}\n"
                     "  - {profile: eseye, transport: rfc2217, port: 7200, name: cell}\n")
    r = run(str(fleet), "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["microchip-winc-0\tmicrochip-winc\tsocket://0.0.0.0:7100",
                                     "microchip-winc-1\tmicrochip-winc\tsocket://0.0.0.0:7101",
                                     "cell-0\teseye-anynet\trfc2217://0.0.0.0:7200"]
    cases = {
        "modules: []\n": "'modules' must list at least one group",
        "modules:\n  - {profile: nonesuch}\n": "unknown profile",
        "modules:\n  - {profile: ti, cont: 2}\n": "unknown key 'cont'",
        "modules:\n  - {profile: ti, count: 0}\n": "count must be a whole number from 1",
        "modules:\n  - {profile: ti, transport: pty}\n": "transport must be one of tcp, rfc2217",
        "modules:\n  - {profile: ti, count: 3, port: 7000}\n  - {profile: eseye, port: 7002}\n":
            "port 7002 (eseye-anynet-0) is also used by ti-simplelink-2",
        "modules:\n  - {profile: ti, count: 2}\n  - {profile: ti}\n": "module name 'ti-simplelink-0' is used twice",
        "modules:\n  - {profile: ti, count: 2, overrides: {2: {baud: 9600}}}\n": "key 2 is not a module index 0..1",
        "modules:\n  - {profile: ti, overrides: {0: {port: 1}}}\n": "unknown key 'port'",
        "modules:\n  - {profile: ti, world: {wifi: {access_points: [{ssid: x, security: wpa2}]}}}\n": "password",
        "modules:\n  - {profile: ti, world: missing.yaml}\n": "cannot read it",
        "modules: [\n": "is not valid YAML",
    }
    for text, msg in cases.items():
        fleet.write_text(text)
        r = run(str(fleet), "--check")
        assert r.returncode == 2, text
        assert r.stderr.startswith("atemu: error: ") and msg in r.stderr, (text, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run("--profile", "ti", "--count", "2")
    assert r.returncode == 2 and "--tcp [HOST:]PORT or --rfc2217" in r.stderr


def test_fleet_port_in_use_is_one_line_and_nothing_stays_up(tmp_path):
    fleet = tmp_path / "fleet.yaml"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # the first module starts (any free port), the second finds its port taken: the first is stopped again
        fleet.write_text(f"modules:\n  - {{profile: eseye, name: first}}\n  - {{profile: ti, port: {port}}}\n")
        r = run(str(fleet), "--state-dir", str(tmp_path / "st"))
        assert r.returncode == 2
        assert r.stderr.strip() == (f"atemu: error: port 127.0.0.1:{port} is already in use; "
                                    "pick another port or stop the program using it")
        assert r.stdout == ""                                           # nothing announced as ready


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_shipped_bench_and_kubernetes_fleets_are_valid(tmp_path):
    """docker/bench/fleet.yaml and the fleet in docker/k8s/atemu-fleet.yaml's ConfigMap pass --check."""
    import yaml
    r = run(str(REPO / "docker" / "bench" / "fleet.yaml"), "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["wifi-0\tquectel-fcm242d\tsocket://0.0.0.0:7000",
                                     "wifi-1\tquectel-fcm242d\tsocket://0.0.0.0:7001",
                                     "cell-0\teseye-anynet\trfc2217://0.0.0.0:7100"]
    docs = list(yaml.safe_load_all((REPO / "docker" / "k8s" / "atemu-fleet.yaml").read_text()))
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    for name, text in cm["data"].items():
        (tmp_path / name).write_text(text)
    r = run(str(tmp_path / "fleet.yaml"), "--check")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 10
    # the pods' container ports name the first module of each group
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    ports = {p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {8000, 7000, 7100}


def test_manifest_for_podman_keeps_the_pod_template(tmp_path):
    import yaml
    out = subprocess.run([sys.executable, str(REPO / "docker" / "k8s" / "for-podman.py"),
                          str(REPO / "docker" / "k8s" / "atemu-fleet.yaml"), "--replicas", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment"]
    dep = docs[1]
    assert dep["spec"]["replicas"] == 2 and "serviceName" not in dep["spec"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:3] == ["atemu", "fleet", "/etc/atemu/fleet.yaml"]
    assert c["env"] == [{"name": "ATEMU_CONTROL_TOKEN", "value": "change-me-bench-token"}]
    assert "ports" not in c
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["fleet"] == {"name": "fleet", "configMap": {"name": "atemu-fleet"}}
    assert vols["certs"] == {"name": "certs", "emptyDir": {}}
    out = subprocess.run([sys.executable, str(REPO / "docker" / "k8s" / "for-podman.py"),
                          str(REPO / "docker" / "k8s" / "atemu-fleet.yaml"), "--suffix=-t1"],
                         capture_output=True, text=True, timeout=60)
    cm, dep = list(yaml.safe_load_all(out.stdout))
    assert cm["metadata"]["name"] == "atemu-fleet-t1" and dep["metadata"]["name"] == "atemu-t1"
    assert {"name": "fleet", "configMap": {"name": "atemu-fleet-t1"}} in dep["spec"]["template"]["spec"]["volumes"]
    assert dep["spec"]["replicas"] == 3                               # the manifest's own count
