"""The HTTP control plane from outside the process: `atemu run --control`, JSON endpoints, token,
the live websocket, and the web page in headless Chromium (driven over the DevTools protocol)."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from peers.aws import THING, aws_pki, broker, sim_world  # noqa: F401  (fixtures)
from test_faults_eseye import connect_host
from test_transcript import Proc, atemu

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run_with_control(tmp_path, world=None, extra=()):
    args = ["run", "eseye-anynet", "--pty", str(tmp_path / "tty"), "--no-pacing", "--state-dir", str(tmp_path / "st"),
            "--control", "127.0.0.1:0", *extra]
    if world is not None:
        wf = tmp_path / "world.yaml"
        wf.write_text(yaml.safe_dump(world))
        args += ["--world", str(wf)]
    p = Proc(*args)
    try:
        url = p.line("control on").split("control on ", 1)[1].rstrip("/")
    except BaseException:
        p.stop()
        raise
    return p, url


def http(method, url, body=None, token=None):
    async def go():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s:
            async with s.request(method, url, json=body, headers=headers) as r:
                return r.status, await r.json()
    return asyncio.run(go())


@pytest.fixture
def controlled(tmp_path, broker, aws_pki):
    p, url = run_with_control(tmp_path, sim_world(aws_pki, broker.tls_port))
    host = connect_host(str(tmp_path / "tty"))
    yield p, url, host
    host.ser.close()
    assert p.stop() == 0


def test_broker_drop_over_http(controlled):
    p, url, host = controlled
    status, mods = http("GET", f"{url}/api/modules")
    assert status == 200 and mods[0]["name"] == "eseye-anynet" and mods[0]["port"].endswith("tty")
    host.cmd('AT+AWSSUBOPEN=0,"cmd"')
    host.until(rb"\+AWSSUBOPEN:0,0\r\n")
    status, snap = http("GET", f"{url}/api/modules/eseye-anynet")
    assert status == 200
    assert snap["state"]["awsstate"] == 7 and snap["state"]["link"] == "up"
    assert snap["state"]["subscribe_topics"]["0"]["topic"] == f"cmd/{THING}"
    assert snap["net"]["mqtt"][0]["connected"] is True
    assert snap["coverage"]["AT+AWSSUBOPEN write"] == 1

    status, fault = http("POST", f"{url}/api/modules/eseye-anynet/faults", {"kind": "broker_disconnect"})
    assert status == 201 and fault["fired"] == 1
    host.wait_state(8, timeout=5)
    host.wait_state(7, timeout=15)

    status, tr = http("GET", f"{url}/api/modules/eseye-anynet/transcript?events=fault")
    assert [r["kind"] for r in tr["records"] if r["action"] == "fired"] == ["broker_disconnect"]


def test_bad_requests_answer_with_what_to_do(controlled):
    p, url, host = controlled
    status, body = http("POST", f"{url}/api/modules/eseye-anynet/faults", {"kind": "meteor"})
    assert status == 400 and "choose one of" in body["error"]
    status, body = http("GET", f"{url}/api/modules/nope")
    assert status == 404 and "eseye-anynet" in body["error"]
    status, body = http("POST", f"{url}/api/modules/eseye-anynet/faults", {"kind": "at_error", "probability": 7})
    assert status == 400 and "between 0 and 1" in body["error"]
    bad = [["a", "list"], {"kind": "at_error", "times": "x"}, {"kind": "rssi"}, {"kind": "urc_storm", "text": "x",
           "count": "many"}, {"kind": "reboot", "params": "nope"}, {"kind": "at_error", "times": 0}, {"nokind": 1},
           {"kind": "rssi_ramp", "ssid": "nowhere", "to": -80}, {"kind": "udp_drop", "direction": "up"},
           {"kind": "udp_unreachable", "error": "later"}, {"kind": "latency", "direction": "sideways"}]
    for body in bad:
        status, answer = http("POST", f"{url}/api/modules/eseye-anynet/faults", body)
        assert status == 400 and answer["error"], body
    status, answer = http("POST", f"{url}/api/modules/eseye-anynet/world", {"change": "remove_ap", "ssid": "ghost"})
    assert status == 400 and "no access point 'ghost'" in answer["error"]

    async def not_json():
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{url}/api/modules/eseye-anynet/faults", data=b"{{{",
                              headers={"Content-Type": "application/json"}) as r:
                return r.status, await r.json()
    status, answer = asyncio.run(not_json())
    assert status == 400 and "JSON object" in answer["error"]
    assert host.cmd("AT") == b"\r\nOK\r\n"  # the module did not notice
    assert http("GET", f"{url}/api/modules/eseye-anynet/faults")[1] == []


def test_at_error_and_world_change_over_http(controlled):
    p, url, host = controlled
    http("POST", f"{url}/api/modules/eseye-anynet/faults", {"kind": "at_error", "command": "+GSN", "times": 2})
    assert host.cmd("AT+QCCID").endswith(b"OK\r\n")
    assert host.cmd("AT+GSN") == b"\r\nERROR\r\n"
    assert host.cmd("AT+GSN") == b"\r\nERROR\r\n"
    assert host.cmd("AT+GSN") == b"\r\n356938035643809\r\n\r\nOK\r\n"
    status, _ = http("POST", f"{url}/api/modules/eseye-anynet/world", {"change": "set_dns", "host": "x.test", "ip": "127.0.0.9"})
    assert status == 200
    assert http("GET", f"{url}/api/modules/eseye-anynet")[1]["world"]["dns"]["x.test"] == "127.0.0.9"


def test_start_a_second_module_over_http(tmp_path):
    p, url = run_with_control(tmp_path)
    try:
        status, body = http("POST", f"{url}/api/modules", {"profile": "eseye-anynet", "transport": "inproc",
                                                           "world": {"cellular": {"iccid": "8944777"}}})
        assert status == 201 and body["name"] == "eseye-anynet-2" and body["port"] == "atemu://eseye-anynet-2"
        assert [m["name"] for m in http("GET", f"{url}/api/modules")[1]] == ["eseye-anynet", "eseye-anynet-2"]
        assert http("POST", f"{url}/api/modules/eseye-anynet-2/uart", {"text": "AT+QCCID\r"})[1] == {"sent": 9}
        deadline = time.monotonic() + 3
        while True:
            recs = http("GET", f"{url}/api/modules/eseye-anynet-2/transcript?events=tx")[1]["records"]
            out = b"".join(bytes.fromhex(r["data"]) for r in recs)
            if b"OK" in out or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert out == b"AT+QCCID\r\r\n+QCCID: 8944777\r\n\r\nOK\r\n"
        assert http("POST", f"{url}/api/modules", {"profile": "nope"})[0] == 400
        assert http("POST", f"{url}/api/modules", {"profile": "eseye-anynet", "world": {"bogus": 1}})[0] == 400
        assert http("DELETE", f"{url}/api/modules/eseye-anynet")[0] == 400      # the CLI's own module stays
        assert http("DELETE", f"{url}/api/modules/eseye-anynet-2")[1] == {"stopped": "eseye-anynet-2"}
        assert len(http("GET", f"{url}/api/modules")[1]) == 1
    finally:
        assert p.stop() == 0


def test_websocket_streams_live_uart(controlled):
    p, url, host = controlled

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(url.replace("http", "ws") + "/ws?module=eseye-anynet") as ws:
                await asyncio.sleep(0.2)
                await asyncio.get_running_loop().run_in_executor(None, host.cmd, "AT+GSN")
                seen = b""
                deadline = time.monotonic() + 5
                while b"356938035643809" not in seen and time.monotonic() < deadline:
                    msg = await ws.receive(timeout=5)
                    rec = json.loads(msg.data)
                    if rec["event"] == "tx":
                        seen += bytes.fromhex(rec["data"])
                return seen
    assert b"356938035643809" in asyncio.run(go())


def test_token_required_off_loopback_and_enforced(tmp_path):
    r = atemu("run", "eseye-anynet", "--pty", str(tmp_path / "t"), "--control", "0.0.0.0:0", "--state-dir", str(tmp_path))
    assert r.returncode == 2
    assert "--control-token" in r.stderr and "ATEMU_CONTROL_TOKEN" in r.stderr
    p, url = run_with_control(tmp_path, extra=("--control-token", "s3cret"))
    try:
        assert http("GET", f"{url}/api/modules")[0] == 401
        assert http("GET", f"{url}/api/modules", token="wrong")[0] == 401
        status, body = http("POST", f"{url}/api/modules/eseye-anynet/faults", {"kind": "reboot"})
        assert status == 401 and "token" in body["error"]
        status, mods = http("GET", f"{url}/api/modules", token="s3cret")
        assert status == 200 and mods[0]["profile"] == "eseye-anynet"
        assert http("GET", f"{url}/api/modules?token=s3cret")[0] == 200
    finally:
        p.stop()


# ------------------------------------------------------------------------------- web page in Chromium

class Cdp:
    """Minimal DevTools-protocol client over aiohttp's websocket."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def send(self, method, **params):
        self.n += 1
        mid = self.n
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive(timeout=10)).data)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg.get("result", {})

    async def js(self, expr):
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    async def wait_js(self, expr, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = await self.js(expr)
            if v:
                return v
            await asyncio.sleep(0.1)
        raise AssertionError(f"page never satisfied {expr}; body: {await self.js('document.body.innerText')!r}")

    async def click(self, element_id):
        box = await self.js(f"(() => {{ const r = document.getElementById({json.dumps(element_id)}).getBoundingClientRect();"
                            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert box, f"no element {element_id} on the page"
        for t in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=t, x=box[0], y=box[1], button="left", clickCount=1)


def chromium(url, profile_dir):
    return subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={profile_dir}", "--remote-debugging-port=0", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: `make test-deps` or `apt-get install -y chromium`")
def test_web_page_shows_state_and_fault_button_works(controlled, tmp_path):
    p, url, host = controlled
    host.cmd('AT+AWSSUBOPEN=0,"cmd"')
    host.until(rb"\+AWSSUBOPEN:0,0\r\n")
    prof = Path(tempfile.mkdtemp(prefix="atemu-chromium-"))
    browser = chromium(url + "/", prof)
    try:
        port_file = prof / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not start its DevTools endpoint"
            time.sleep(0.1)
        dport = int(port_file.read_text().split()[0])

        async def go():
            async with aiohttp.ClientSession() as s:
                for _ in range(100):
                    async with s.get(f"http://127.0.0.1:{dport}/json/list") as r:
                        pages = [t for t in await r.json() if t["type"] == "page"]
                    if pages:
                        break
                    await asyncio.sleep(0.1)
                async with s.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    cdp = Cdp(ws)
                    # live state: the subscribed topic and AWS state 7
                    await cdp.wait_js("(document.getElementById('state-eseye-anynet')||{}).textContent"
                                      "?.includes('\"awsstate\": 7')")
                    # the UART history from before the page opened is shown too
                    await cdp.wait_js("document.getElementById('uart-eseye-anynet').textContent"
                                      ".includes('AT+AWSSUBOPEN=0,\"cmd\"')")
                    # live UART traffic: a command typed by the host appears on the page
                    await asyncio.get_running_loop().run_in_executor(None, host.cmd, "AT+GSN")
                    await cdp.wait_js("document.getElementById('uart-eseye-anynet').textContent.includes('356938035643809')")
                    # a fault button: drop the broker
                    await cdp.click("fault-eseye-anynet-broker_disconnect")
                    return await cdp.wait_js("document.getElementById('uart-eseye-anynet').textContent"
                                             ".includes('broker_disconnect')")
        assert asyncio.run(go())
        host.wait_state(8, timeout=5)
        host.wait_state(7, timeout=15)
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(prof, ignore_errors=True)
