"""Scenario files: `atemu run PROFILE --exec "HOST {port}" --scenario FILE [--junit X]` judges a host program."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOST = Path(__file__).resolve().parent / "hosts" / "quectel_mqtt_host.py"
WORLD = textwrap.dedent("""\
    wifi:
      access_points:
        - {ssid: "lab", security: wpa2, password: "labpass123"}
    options: {quectel.join_delay: 0.05, quectel.boot_delay: 0.05}
    """)


def atemu(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atemu.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def judge(tmp_path: Path, scenario: str, host: str, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "world.yaml").write_text(WORLD)
    (tmp_path / "scenario.yaml").write_text(scenario)
    return atemu("run", "quectel-fcm242d", "--no-pacing", "--world", "world.yaml", "--state-dir", "state",
                 "--scenario", "scenario.yaml", "--junit", "report.xml", "--exec", host, *extra, cwd=tmp_path)


def readme_scenarios() -> dict[str, str]:
    """The scenario examples of README.md, by name."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(name: .*?)```", text, re.S)
    return {re.match(r"name: (.*)", b).group(1).strip(): b for b in blocks}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["reconnect after broker_disconnect", "recovery from ap_gone"])
def test_readme_examples_pass_with_a_host_program(tmp_path, mosquitto, name):
    scenario = readme_scenarios()[name].replace("port: 1883", f"port: {mosquitto.port}")
    r = judge(tmp_path, scenario, f"{sys.executable} {HOST} {{port}} {mosquitto.port}")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = len(re.findall(r"^  - ", scenario, re.M))
    assert f"atemu: scenario {name!r}: {steps} steps passed" in r.stdout
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert suite.get("name") == name and suite.get("failures") == "0" and suite.get("tests") == str(steps)
    cases = suite.findall("testcase")
    assert len(cases) == steps and cases[0].get("name").startswith("step 1: ")
    assert all(c.find("failure") is None for c in cases)


def test_a_failed_step_is_exit_1_with_the_step_the_expectation_and_the_uart(tmp_path, mosquitto):
    scenario = textwrap.dedent(f"""\
        name: never publishes to cmd
        broker: {{port: {mosquitto.port}}}
        steps:
          - wait_urc: '\\+QMTCONN: 0,0,0'
          - expect_broker: {{topic: cmd/#, payload: 'x'}}
            timeout: 1.5
          - expect_host: 'AT\\+QMTDISC'
        """)
    r = judge(tmp_path, scenario, f"{sys.executable} {HOST} {{port}} {mosquitto.port}")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("atemu: scenario 'never publishes to cmd' failed at step 2: expect_broker topic=cmd/#, "
                        "payload=x (scenario.yaml:5): expected a message on 'cmd/#' with a payload matching 'x' at "
                        "the broker; not seen within 1.5 s (messages since the last match: none)")
    assert lines[1].startswith("atemu: last UART lines (> host, < module): ") and "> hello 1" in lines[1]
    assert "Traceback" not in r.stderr
    suite = ET.parse(tmp_path / "report.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    failure = suite.findall("testcase")[1].find("failure")
    assert "not seen within 1.5 s" in failure.get("message") and "> AT+QMTPUB=0,1,1,0" in failure.text


def test_peer_file_and_variables(tmp_path):
    peer = free_port()
    host = tmp_path / "host.py"
    host.write_text(textwrap.dedent('''\
        import re, sys, time, serial
        s = serial.serial_for_url(sys.argv[1], 115200, timeout=0.05)
        buf = b""
        def at(line, until=rb"\\r\\nOK\\r\\n"):
            global buf
            s.write(line.encode() + b"\\r\\n")
            while not (m := re.search(until, buf)):
                buf += s.read(256)
            got, buf = buf[:m.end()], buf[m.end():]
            return got
        at('AT+QSTAAPINFO="lab","labpass123"', rb"GOT_IP\\r\\n")
        at(f'AT+QIOPEN=1,"TCP","127.0.0.1",{sys.argv[2]},0,0', rb"\\+QIOPEN: 1,0\\r\\n")
        at("AT+QISEND=1,5", rb"> ")
        s.write(b"hello")
        at("", rb"SEND OK\\r\\n")
        fh = re.search(rb"\\+QFOPEN: (\\d+)", at('AT+QFOPEN="log.txt",0')).group(1).decode()
        at(f"AT+QFWRITE={fh},9", rb"CONNECT\\r\\n")
        s.write(b"booted ok")
        at("", rb"\\+QFWRITE: 9,9\\r\\n\\r\\nOK\\r\\n")
        at(f"AT+QFCLOSE={fh}")
        time.sleep(60)
        '''))
    scenario = textwrap.dedent(f"""\
        name: peer and file
        timeout: 15
        peers: {{sink: {{port: {peer}, echo: true}}}}
        steps:
          - expect_host: 'AT\\+QIOPEN=1,"TCP","127.0.0.1",(?P<port>\\d+)'
          - expect_module: '\\+QIOPEN: 1,0'
          - expect_module: '^> $'
          - expect_peer: {{peer: sink, data: 'hel+o'}}
          - wait_urc: '\\+QIURC: "recv",1'
          - expect_module: '\\+QFOPEN: (?P<fh>\\d+)'
          - expect_host: 'AT\\+QFWRITE=${{fh}},9'
          - expect_host: '^booted ok$'
          - expect_file: {{name: flash/log.txt, contains: 'booted ok'}}
        """)
    r = judge(tmp_path, scenario, f"{sys.executable} {host} {{port}} {peer}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "9 steps passed" in r.stdout


def test_the_host_program_exiting_early_fails_the_scenario(tmp_path):
    r = judge(tmp_path, "steps:\n  - expect_host: 'AT\\+QMTOPEN'\n    timeout: 1\n", "false")
    assert r.returncode == 1
    assert "failed at step 1" in r.stderr and "(the host program had exited)" in r.stderr


@pytest.mark.parametrize("text, words", [
    ("steps: []\n", "scenario.yaml:1: 'steps' must be a non-empty list"),
    ("stepz:\n  - wait: 1\n", "scenario.yaml:1: unknown key 'stepz'; a scenario has name, timeout, broker, peers, steps"),
    ("steps:\n  - wait: 1\n  - expect_host: '('\n", "scenario.yaml:3: steps[2].expect_host: not a valid regular expression"),
    ("steps:\n  - expect_module: 'OK ${x}'\n", "steps[1].expect_module: ${x} is not set by an earlier step"),
    ("steps:\n  - inject: wifi_gone\n", "steps[1].inject: unknown fault 'wifi_gone'; choose one of: ap_back, ap_gone"),
    ("steps:\n  - inject: {kind: latency, delay: -1}\n", "steps[1].inject: latency: delay must be between 0 and 3600"),
    ("steps:\n  - expect_peer: {peer: sink, data: x}\n", "steps[1].expect_peer must be a mapping with 'peer'"),
    ("steps:\n  - expect_broker: {topic: a}\n", "needs a top-level 'broker: {host: ..., port: ...}'"),
    ("steps:\n  - wait: 1\n    expect_host: AT\n", "steps[1]: needs exactly one of"),
    ("steps:\n  - wait: 1\n    timout: 3\n", "steps[1]: unknown key 'timout'"),
    ("steps:\n  - world: {change: explode}\n", "steps[1].world must be a mapping with 'change' (one of add_ap"),
    ("steps:\n  - expect_file: ../../etc/passwd\n", "relative to the module's state folder"),
    ("steps: [\n", "scenario.yaml:2: not valid YAML"),
    ("timeout: -1\nsteps:\n  - wait: 1\n", "timeout must be a positive number of seconds, not -1"),
])
def test_a_bad_scenario_file_is_exit_2_naming_the_key(tmp_path, text, words):
    (tmp_path / "scenario.yaml").write_text(text)
    r = atemu("run", "quectel", "--state-dir", "state", "--scenario", "scenario.yaml", "--exec", "true", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atemu: error: --scenario scenario.yaml"), r.stderr
    assert words in lines[0]
    assert "ready on" not in r.stdout     # nothing started


def test_junit_needs_a_scenario_and_non_utf8_scenario(tmp_path):
    r = atemu("run", "quectel", "--junit", "x.xml", "--exec", "true", cwd=tmp_path)
    assert r.returncode == 2 and "--junit needs --scenario" in r.stderr
    (tmp_path / "s.yaml").write_bytes(b"steps:\n  - wait: \xff\n")
    r = atemu("run", "quectel", "--scenario", "s.yaml", "--exec", "true", cwd=tmp_path)
    assert r.returncode == 2 and "not UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_lines_stream_matches_a_prompt_once():
    import collections
    from atemu.scenario import _Lines
    out = _Lines(collections.deque(maxlen=5), "<")
    out.feed(b"AT+QISEND=1,5\r\r\n> ")
    assert out.find(re.compile("^> $"), tail=True) is not None       # the prompt, before any line end
    assert out.find(re.compile("^> $"), tail=True) is None
    out.feed(b"\r\nSEND OK\r\n")
    assert out.find(re.compile("^> $"), tail=True) is None           # the completed prompt line is not a second one
    assert out.find(re.compile("SEND OK")) is not None
