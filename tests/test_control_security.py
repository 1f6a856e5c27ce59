"""What the HTTP control plane refuses: requests from other web pages (Origin), other host names
(DNS rebinding), non-JSON state changes, foreign websocket upgrades; what it never does: a 500 with
a traceback, secrets in snapshots, unvalidated world changes. And the ways that keep working: the
Python client (aiohttp with JSON), curl without Origin, a token from a file, the wake pin."""
from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse

import pytest

from test_control_http import http, run_with_control
from test_transcript import atemu


def raw(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
        host: str | bytes | None = None) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request written byte for byte (any header value, any Host); (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    hdrs = {"Host": host if host is not None else u.netloc, "Connection": "close"}
    hdrs.update(headers or {})
    if body or method in ("POST", "PUT", "DELETE"):
        hdrs["Content-Length"] = str(len(body))
    req = f"{method} {path} HTTP/1.1\r\n".encode()
    for k, v in hdrs.items():
        req += k.encode() + b": " + (v if isinstance(v, bytes) else str(v).encode()) + b"\r\n"
    req += b"\r\n" + body
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(req)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if b" 101 " in data.split(b"\r\n", 1)[0] and b"\r\n\r\n" in data:
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    h = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return status, h, rest


def error_of(body: bytes) -> str:
    msg = json.loads(body)["error"]
    assert "\n" not in msg and "Traceback" not in msg
    return msg


EVIL = "http://evil.example"


@pytest.fixture
def ctl(tmp_path):
    p, url = run_with_control(tmp_path)
    yield url
    assert p.stop() == 0


def uart_rx(url) -> bytes:
    recs = http("GET", f"{url}/api/modules/eseye-anynet/transcript?events=rx")[1]["records"]
    return b"".join(bytes.fromhex(r["data"]) for r in recs)


def test_foreign_origin_and_plain_text_posts_are_refused(ctl):
    url = ctl
    text = json.dumps({"text": "AT+GSN\r"}).encode()
    uart = "/api/modules/eseye-anynet/uart"
    # the drive-by form/fetch of a web page: text/plain with a foreign Origin
    st, _, body = raw(url, "POST", uart, text, {"Content-Type": "text/plain", "Origin": EVIL})
    assert st == 403 and "evil.example" in error_of(body)
    st, _, body = raw(url, "POST", uart, text, {"Content-Type": "application/json", "Origin": EVIL})
    assert st == 403
    for path, b in [("/api/modules/eseye-anynet/faults", {"kind": "reboot"}), ("/api/modules/eseye-anynet/freeze", {}),
                    ("/api/modules", {"profile": "eseye-anynet", "transport": "inproc"})]:
        st, _, _ = raw(url, "POST", path, json.dumps(b).encode(), {"Content-Type": "application/json", "Origin": EVIL})
        assert st == 403, path
    st, _, body = raw(url, "GET", "/api/modules/eseye-anynet", headers={"Origin": "null"})
    assert st == 403
    # no Origin but not JSON (curl -d, an HTML form): 415
    st, _, body = raw(url, "POST", uart, text, {"Content-Type": "text/plain"})
    assert st == 415 and "application/json" in error_of(body)
    st, _, body = raw(url, "POST", uart, text)
    assert st == 415
    st, _, body = raw(url, "POST", "/api/modules/eseye-anynet/freeze", b"", {"Content-Type": "text/plain"})
    assert st == 415
    time.sleep(0.3)
    assert uart_rx(url) == b""                                    # nothing reached the module
    assert len(http("GET", f"{url}/api/modules")[1]) == 1         # nothing started
    assert http("GET", f"{url}/api/modules/eseye-anynet/faults")[1] == []
    # the page's own origin and the Python client (aiohttp, JSON) keep working
    st, _, body = raw(url, "POST", uart, text, {"Content-Type": "application/json", "Origin": url})
    assert st == 200 and json.loads(body) == {"sent": 7}
    assert http("POST", f"{url}{uart}", {"text": "AT\r"}) == (200, {"sent": 3})
    deadline = time.monotonic() + 5
    while uart_rx(url) != b"AT+GSN\rAT\r" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uart_rx(url) == b"AT+GSN\rAT\r"
    # without a body no content type is needed (curl -X DELETE / -X POST)
    assert raw(url, "DELETE", "/api/modules/eseye-anynet/faults")[0] == 200
    assert raw(url, "POST", "/api/modules/eseye-anynet/thaw")[0] == 200


def test_host_header_must_name_this_server(ctl):
    url = ctl
    port = urllib.parse.urlsplit(url).port
    for host in ("rebind.evil.example", f"rebind.evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.2",
                 f"[::1]:{port}", b"\xff\xfe"):
        st, _, body = raw(url, "GET", "/api/modules/eseye-anynet", host=host)
        assert st in (400, 403), host
        if st == 403:
            assert "is not this control plane's address" in error_of(body)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", "LOCALHOST"):
        assert raw(url, "GET", "/api/modules", host=host)[0] == 200, host
    st, _, _ = raw(url, "GET", "/", host="rebind.evil.example")
    assert st == 403                                              # the page itself too


def test_websocket_upgrade_checks_origin(ctl):
    url = ctl
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    st, _, _ = raw(url, "GET", "/ws", headers={**ws, "Origin": EVIL})
    assert st == 403
    st, _, _ = raw(url, "GET", "/ws", headers={**ws, "Origin": url}, host=urllib.parse.urlsplit(url).netloc)
    assert st == 101
    st, _, _ = raw(url, "GET", "/ws", headers=ws)                 # no Origin: not a browser
    assert st == 101


def test_bad_bodies_and_tokens_are_one_line_errors(ctl, tmp_path):
    url = ctl
    deep = b"[" * 100_000 + b"]" * 100_000
    st, _, body = raw(url, "POST", "/api/modules/eseye-anynet/faults", deep, {"Content-Type": "application/json"})
    assert st == 400 and "nested too deeply" in error_of(body)
    assert http("GET", f"{url}/api/modules")[0] == 200
    p, turl = run_with_control(tmp_path / "t", extra=("--control-token", "s3cret"))
    try:
        for tok in (b"\xff\xfe\xfd", b"s3cret\xe9", "sécret".encode()):
            st, _, body = raw(turl, "GET", "/api/modules", headers={"X-Atemu-Token": tok})
            assert st == 401 and "token" in error_of(body), tok
            st, _, body = raw(turl, "GET", "/api/modules", headers={"Authorization": b"Bearer " + tok})
            assert st == 401, tok
        assert raw(turl, "GET", "/api/modules", headers={"X-Atemu-Token": "s3cret"})[0] == 200
        # with a token, other host names are served (a proxy in front), foreign Origins still are not
        assert raw(turl, "GET", "/api/modules", headers={"X-Atemu-Token": "s3cret"}, host="atemu.lab:80")[0] == 200
        assert raw(turl, "GET", "/api/modules", headers={"X-Atemu-Token": "s3cret", "Origin": EVIL})[0] == 403
    finally:
        p.stop()


def test_token_from_a_file_or_its_environment_variable(tmp_path, monkeypatch):
    tf = tmp_path / "token"
    tf.write_text("from-a-file\n")
    p, url = run_with_control(tmp_path / "a", extra=("--control-token-file", str(tf)))
    try:
        assert http("GET", f"{url}/api/modules")[0] == 401
        assert http("GET", f"{url}/api/modules", token="from-a-file")[0] == 200
    finally:
        p.stop()
    monkeypatch.setenv("ATEMU_CONTROL_TOKEN_FILE", str(tf))
    p, url = run_with_control(tmp_path / "b")
    try:
        assert http("GET", f"{url}/api/modules")[0] == 401
        assert http("GET", f"{url}/api/modules", token="from-a-file")[0] == 200
    finally:
        p.stop()
    monkeypatch.delenv("ATEMU_CONTROL_TOKEN_FILE")
    for bad, why in ((tmp_path / "missing", "cannot read it"), (tmp_path / "empty", "first line")):
        if "empty" in str(bad):
            bad.write_text("\n\n")
        r = atemu("run", "eseye-anynet", "--pty", str(tmp_path / "t"), "--control", "127.0.0.1:0",
                  "--control-token-file", str(bad), "--state-dir", str(tmp_path / "c"))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and why in r.stderr, r.stderr
    monkeypatch.setenv("ATEMU_CONTROL_TOKEN", "from-env")
    p, url = run_with_control(tmp_path / "d")
    try:
        assert http("GET", f"{url}/api/modules", token="from-env")[0] == 200
    finally:
        p.stop()


def wait_tx(url, name, pattern, timeout=10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        recs = http("GET", f"{url}/api/modules/{name}/transcript?events=tx")[1]["records"]
        out = b"".join(bytes.fromhex(r["data"]) for r in recs)
        if re.search(pattern, out) or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def test_snapshot_masks_secrets_unless_asked(ctl):
    url = ctl
    world = {"wifi": {"access_points": [{"ssid": "lab", "security": "wpa2", "password": "lab-pass-123"}]},
             "options": {"quectel.join_delay": 0.05}}
    st, body = http("POST", f"{url}/api/modules", {"profile": "quectel-fcm242d", "transport": "inproc",
                                                   "world": world, "name": "q"})
    assert st == 201
    http("POST", f"{url}/api/modules/q/uart", {"text": 'AT+QSTAAPINFODEF="lab","lab-pass-123"\r\n'})
    assert b"GOT_IP" in wait_tx(url, "q", rb"GOT_IP")
    snap = http("GET", f"{url}/api/modules/q")[1]
    assert snap["settings"]["quectel.default_ap"] == {"ssid": "lab", "pwd": "***"}
    assert "lab-pass-123" not in json.dumps(snap)
    snap = http("GET", f"{url}/api/modules/q?secrets=1")[1]
    assert snap["settings"]["quectel.default_ap"] == {"ssid": "lab", "pwd": "lab-pass-123"}


def test_world_changes_are_validated_like_the_world_file(ctl):
    url = ctl
    w = f"{url}/api/modules/eseye-anynet/world"
    bad = [({"change": "add_ap", "ssid": 5}, "ssid must be a string"),
           ({"change": "add_ap", "ssid": "x", "security": "bogus"}, "security is 'bogus'"),
           ({"change": "add_ap", "ssid": "x", "security": "wpa2"}, "has no 'password'"),
           ({"change": "add_ap", "ssid": "x", "security": "wpa2", "password": "short"}, "8 to 63"),
           ({"change": "add_ap", "ssid": "x", "security": "open", "channel": 999}, "channel is 999"),
           ({"change": "add_ap", "ssid": "x", "security": "open", "color": "red"}, "unknown key"),
           ({"change": "set_rssi", "ssid": "atemu-lab", "rssi": 1e300}, "between -127 and 0"),
           ({"change": "set_rssi", "ssid": "atemu-lab", "rssi": "loud"}, "whole number"),
           ({"change": "set_rssi", "rssi": 5}, "between -140 and 0"),
           ({"change": "set_rssi", "ssid": "atemu-lab"}, "needs 'rssi'"),
           ({"change": "cellular", "attached": "yes"}, "true or false"),
           ({"change": "cellular", "rssi": -50}, "takes attached"),
           ({"change": "set_dns", "host": "a.test", "ip": "not an ip!"}, "not an IP address"),
           ({"change": "add_ble_peer", "address": "zz"}, "six hex pairs"),
           ({"change": "set_ble_value", "address": "02:00:00:00:00:09", "service": "s", "characteristic": "c",
             "value": "zz"}, "no BLE peer"),
           ({"change": "teleport"}, "unknown world change")]
    for body, why in bad:
        st, answer = http("POST", w, body)
        assert st == 400 and why in answer["error"], (body, answer)
    assert http("GET", f"{url}/api/modules/eseye-anynet")[1]["world"]["access_points"] == [
        {"ssid": "atemu-lab", "rssi": -52, "channel": 6, "security": "wpa2"}]
    assert http("POST", w, {"change": "add_ap", "ssid": "new", "security": "wpa2", "password": "new-pass-1",
                            "rssi": -61})[0] == 200
    assert http("POST", w, {"change": "set_rssi", "rssi": -90})[0] == 200
    snap = http("GET", f"{url}/api/modules/eseye-anynet")[1]
    assert snap["world"]["access_points"][1] == {"ssid": "new", "rssi": -61, "channel": 6, "security": "wpa2"}
    assert snap["world"]["cellular"]["rssi"] == -90
    assert http("POST", w, {"change": "add_ble_peer", "address": "02:00:00:00:00:09", "services": {"s": {"c": "00"}}})[0] == 200
    assert http("POST", w, {"change": "set_ble_value", "address": "02:00:00:00:00:09", "service": "s",
                            "characteristic": "c", "value": "zz"})[0] == 400
    recs = http("GET", f"{url}/api/modules/eseye-anynet/transcript?events=world")[1]["records"]
    assert "new-pass-1" not in json.dumps(recs)                 # the transcript keeps no password either


def test_wake_a_sleeping_microchip_over_http(ctl):
    url = ctl
    st, _ = http("POST", f"{url}/api/modules", {"profile": "microchip-winc", "transport": "inproc", "name": "w"})
    assert st == 201
    http("POST", f"{url}/api/modules/w/uart", {"text": "AT+LOWPOWER=4\r\n"})
    wait_tx(url, "w", rb"LOWPOWER=4\r\r?\n?OK\r\n")
    http("POST", f"{url}/api/modules/w/uart", {"text": "AT+GMI\r\n"})
    time.sleep(0.5)
    assert b"+GMI" not in wait_tx(url, "w", rb"\+GMI", timeout=0.2)        # asleep: ignored
    assert http("POST", f"{url}/api/modules/w/wakeup") == (200, {"ok": True, "woke": True})
    http("POST", f"{url}/api/modules/w/uart", {"text": "AT+GMI\r\n"})
    assert b'+GMI:"Microchip"\r\nOK\r\n' in wait_tx(url, "w", rb'\+GMI:"Microchip"\r\nOK\r\n')
    assert http("POST", f"{url}/api/modules/w/wakeup") == (200, {"ok": True, "woke": False})   # awake
    assert http("POST", f"{url}/api/modules/eseye-anynet/wakeup") == (200, {"ok": True, "woke": False})
