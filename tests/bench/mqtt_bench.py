"""MQTT benchmarks (part of ``make bench``; ``tests/bench/run.py --only mqtt_latency,mqtt_scale,mqtt_tls``).

Everything runs on loopback against a local mosquitto. Modules run in this process on one asyncio
loop with an in-process UART (the bytes a host would write are fed to the module, what it prints is
collected); the subscriber that timestamps arrivals is a bare paho client in its own process
(``time.perf_counter`` is CLOCK_MONOTONIC on Linux, so both sides share the clock).

* latency: payload's last byte -> subscriber, per profile, beside a bare paho client publishing the
  same payload to the same broker in the same run (QoS 0; Eseye over TLS, beside bare paho over TLS).
* scale: N Quectel modules each joined to Wi-Fi with a live session (QMTOPEN + QMTCONN), each
  publishing every 10 s: connected count, publish p50/p99, threads, RSS per module, CPU.
* tls: the same with N Eseye modules (TLS with a client certificate): connected, handshake rate.

Measured, never asserted.
"""
from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PAYLOAD_LEN = 100

SUBSCRIBER = r'''
import sys, time, ssl
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port = int(sys.argv[1])
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
def on_message(cl, u, m):
    t = time.perf_counter()
    tag = m.payload[:24].split()[0].decode("ascii", "replace")
    sys.stdout.write(f"{t:.6f} {tag}\n"); sys.stdout.flush()
def on_subscribe(*a):
    sys.stdout.write("ready\n"); sys.stdout.flush()
c.on_message = on_message
c.on_subscribe = on_subscribe
c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("#", 0)
c.connect("127.0.0.1", port, 60)
c.loop_forever()
'''


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def os_threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Arrivals:
    """The subscriber process: arrival time of every tagged message."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.times: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future] = {}

    async def __aenter__(self) -> "Arrivals":
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SUBSCRIBER, str(self.port),
                                                         stdout=subprocess.PIPE)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 10)
        assert line.strip() == b"ready", line
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            try:
                t, tag = line.decode().split()
            except ValueError:
                continue
            self.times[tag] = float(t)
            fut = self.waiters.pop(tag, None)
            if fut is not None and not fut.done():
                fut.set_result(float(t))

    async def wait(self, tag: str, timeout: float = 10.0) -> float:
        if tag in self.times:
            return self.times[tag]
        fut = asyncio.get_running_loop().create_future()
        self.waiters[tag] = fut
        return await asyncio.wait_for(fut, timeout)

    async def __aexit__(self, *exc: Any) -> None:
        self.proc.kill()
        await self.proc.wait()
        self.task.cancel()


class Uart:
    """In-process host side of a module's UART."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.buf = bytearray()
        self.ev = asyncio.Event()
        module.attach(self)

    def write(self, data: bytes) -> None:
        self.buf += data
        self.ev.set()

    async def drain(self) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.module.feed(data)

    async def until(self, pattern: bytes, timeout: float = 10.0) -> re.Match:
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(bytes(self.buf))
            if m:
                del self.buf[:m.end()]
                return m
            self.ev.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{pattern!r} not seen; got {bytes(self.buf[-200:])!r}")
            try:
                await asyncio.wait_for(self.ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def cmd(self, line: str, expect: bytes = rb"\r\nOK\r\n", timeout: float = 10.0) -> re.Match:
        self.send(line.encode() + b"\r\n")
        return await self.until(expect, timeout)


def payload(tag: str) -> bytes:
    head = (tag + " ").encode()
    return head + b"p" * (PAYLOAD_LEN - len(head))


# ---- profiles: bring a module up to a live session, publish one message ----------------------------
def quectel_world() -> dict:
    from quectel_helpers import world
    return world()


class Quectel:
    profile = "quectel-fcm242d"

    def __init__(self, broker_port: int, **_: Any) -> None:
        self.port = broker_port

    def world(self, i: int) -> dict:
        return quectel_world()

    async def up(self, u: Uart, i: int) -> None:
        from quectel_helpers import PWD, SSID
        await u.cmd("AT")
        await u.cmd(f'AT+QSTAAPINFO="{SSID}","{PWD}"')
        await u.until(rb"\+QSTASTAT: GOT_IP\r\n")
        await u.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{self.port}')
        m = await u.until(rb"\+QMTOPEN: 0,(-?\d+)\r\n", 60)
        if m.group(1) != b"0":
            raise RuntimeError(f"QMTOPEN {m.group(0)!r}")
        await u.cmd(f'AT+QMTCONN=0,"bench-q{i}"')
        m = await u.until(rb"\+QMTCONN: 0,(\d+)(?:,(\d+))?\r\n", 60)
        if m.group(1) != b"0" or m.group(2) not in (b"0", None):
            raise RuntimeError(f"QMTCONN {m.group(0).decode().strip()}")

    async def publish(self, u: Uart, tag: str) -> float:
        # CR only: with CR LF the profile takes the LF as the payload's first byte (reported, not ours)
        u.send(f'AT+QMTPUB=0,0,0,0,"bench/q",{PAYLOAD_LEN}\r'.encode())
        await u.until(rb"\r\n> ")
        t0 = time.perf_counter()
        u.send(payload(tag))
        await u.until(rb"\+QMTPUB: 0,0,(\d)\r\n")
        return t0


class Eseye:
    profile = "eseye-anynet"

    def __init__(self, broker_port: int, pki: Any = None, host: str = "bench.iot.example", **_: Any) -> None:
        self.port, self.pki, self.host = broker_port, pki, host

    def world(self, i: int) -> dict:
        pki = self.pki
        return {"network": {"hosts": {self.host: "127.0.0.1"}},
                "aws": {"endpoint": f"{self.host}:{self.port}", "thing_name": f"bench-e{i}",
                        "ca": str(pki.ca_cert), "cert": str(pki.client_cert), "key": str(pki.client_key)}}

    async def up(self, u: Uart, i: int) -> None:
        await u.cmd("AT")
        await u.cmd('AT+AWSPUBOPEN=0,"bench"')
        m = await u.until(rb"\+AWSPUBOPEN: ?0,(-?\d+)\r\n", 60)
        if m.group(1) != b"0":
            raise RuntimeError(f"AWSPUBOPEN {m.group(1).decode()}")

    async def publish(self, u: Uart, tag: str) -> float:
        u.send(f"AT+AWSPUBLISH=0,{PAYLOAD_LEN},0\r".encode())   # 0: fire and forget (MQTT QoS 0)
        await u.until(rb"> ")
        t0 = time.perf_counter()
        u.send(payload(tag))
        await u.until(rb"SEND (OK|FAIL)\r\n")
        return t0


class Ti:
    profile = "ti-simplelink"

    def __init__(self, broker_port: int, **_: Any) -> None:
        self.port = broker_port

    def world(self, i: int) -> dict:
        from test_ti_common import world
        return world()

    async def up(self, u: Uart, i: int) -> None:
        from test_ti_common import LAB
        ok = rb"(?:^|\r\n)OK\r\n"
        await u.cmd("AT+Start", ok)
        await u.cmd(f'AT+WlanConnect={LAB["ssid"]},,WPA_WPA2,{LAB["password"]},,,', ok)
        await u.until(rb"\+eventnetapp:ipv4_acquired,[^\r]*\r\n")
        await u.cmd(f"AT+MqttCreate=bench-t{i},ip4,127.0.0.1,{self.port},,,,,,,v3_1_1,1,0", ok)
        await u.cmd("AT+MqttConnect=0", ok)
        m = await u.until(rb"\+eventmqtt:operation,connack,(\d+)\r\n", 60)
        if m.group(1) != b"0":
            raise RuntimeError(f"MqttConnect {m.group(0)!r}")

    async def publish(self, u: Uart, tag: str) -> float:
        line = f"AT+MqttPublish=0,bench/t,qos0,0,{PAYLOAD_LEN},".encode() + payload(tag) + b"\r\n"
        t0 = time.perf_counter()   # the payload's last byte is the line's end: one burst
        u.send(line)
        await u.until(rb"(?:^|\r\n)(OK|ERROR:[^\r\n]*)\r\n")
        return t0


class Winc:
    profile = "microchip-winc"

    def __init__(self, broker_port: int, **_: Any) -> None:
        self.port = broker_port

    def world(self, i: int) -> dict:
        from test_microchip_util import WORLD
        return dict(WORLD)

    async def up(self, u: Uart, i: int) -> None:
        ok = rb"(?:^|[\r\n])OK\r\n"
        await u.cmd("AT", ok)
        for line in ('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"', "AT+WSTA=1"):
            await u.cmd(line, ok)
        await u.until(rb'\+WSTAAIP:1,"[^"]*"\r\n')
        for line in ('AT+MQTTC=1,"127.0.0.1"', f"AT+MQTTC=2,{self.port}", f'AT+MQTTC=3,"bench-w{i}"', "AT+MQTTC=7,0"):
            await u.cmd(line, ok)
        await u.cmd("AT+MQTTCONN=1", ok)
        m = await u.until(rb"\+MQTTCONN:(\d)\r\n", 60)
        if m.group(1) != b"1":
            raise RuntimeError(f"MQTTCONN {m.group(0)!r}")

    async def publish(self, u: Uart, tag: str) -> float:
        body = payload(tag).decode()
        line = f'AT+MQTTPUB=0,0,0,"bench/w","{body}"\r\n'.encode()
        t0 = time.perf_counter()   # the payload is inside the command line: its end is the last byte
        u.send(line)
        await u.until(rb"(?:^|[\r\n])(OK|ERROR:\d+)\r\n")
        return t0


async def new_module(kind: Any, i: int, d: str) -> tuple[Any, Uart]:
    from atemu.module import Module
    from atemu.profile import find_profile
    from atemu.world import World
    cls = find_profile(kind.profile)
    world = World.from_dict(kind.world(i))
    cls.validate_world(world)
    m = Module(cls, world=world, state_dir=os.path.join(d, str(i)), pacing=False, name=f"m{i}")
    u = Uart(m)
    await m.start()
    return m, u


# ---- latency -----------------------------------------------------------------------------------------
def bare_paho_latency(port: int, n: int, arrivals: Arrivals, loop: asyncio.AbstractEventLoop,
                      tls: Any = None, run: str = "") -> list[float]:
    """A bare paho client (threaded loop, as users run it) publishing QoS 0; runs in a worker thread."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    if tls is not None:
        c.tls_set_context(tls)
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", port, 60)
    c.loop_start()
    up.wait(10)
    out = []
    try:
        for k in range(n):
            tag = f"bare{run}-{k}"
            fut = asyncio.run_coroutine_threadsafe(arrivals.wait(tag), loop)
            t0 = time.perf_counter()
            c.publish("bench/bare", payload(tag), 0)
            out.append((fut.result(10) - t0) * 1000)
    finally:
        c.disconnect()
        c.loop_stop()
    return out


async def module_latency(kind: Any, n: int, arrivals: Arrivals, d: str) -> list[float]:
    m, u = await new_module(kind, 0, d)
    try:
        await kind.up(u, 0)
        out = []
        for k in range(n):
            tag = f"{kind.profile}-{k}"
            t0 = await kind.publish(u, tag)
            out.append((await arrivals.wait(tag) - t0) * 1000)
        return out
    finally:
        await m.stop()


def bench_latency(n: int) -> dict:
    from peers.certs import make_pki
    from peers.mosquitto import Mosquitto
    from atemu.net.tls import client_context
    host = "bench.iot.example"
    res: dict = {}
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d) / "pki", hostnames=[host])
        bare_tls = client_context(ca=str(pki.ca_cert), cert=str(pki.client_cert), key=str(pki.client_key))
        bare_tls.check_hostname = False   # the bare client dials 127.0.0.1; the chain is still verified
        with Mosquitto(tls=dict(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key),
                       require_certificate=True) as b:
            async def main() -> None:
                loop = asyncio.get_running_loop()
                async with Arrivals(b.port) as arr:
                    warm = max(20, n // 10)
                    for name, kind, tls in (("quectel-fcm242d", Quectel(b.port), None),
                                            ("ti-simplelink", Ti(b.port), None),
                                            ("microchip-winc", Winc(b.port), None),
                                            ("eseye-anynet", Eseye(b.tls_port, pki=pki, host=host), bare_tls)):
                        port = b.tls_port if tls is not None else b.port
                        # side by side: bare, module, bare again (both warmed up)
                        await asyncio.to_thread(bare_paho_latency, port, warm, arr, loop, tls, name + "w")
                        bare = await asyncio.to_thread(bare_paho_latency, port, n, arr, loop, tls, name)
                        emu = (await module_latency(kind, n + warm, arr, d))[warm:]
                        res[name] = {"transport": "tls" if tls is not None else "tcp", "n": n,
                                     "bare_p50_ms": pct(bare, 50), "bare_p99_ms": pct(bare, 99),
                                     "atemu_p50_ms": pct(emu, 50), "atemu_p99_ms": pct(emu, 99),
                                     "ratio_p50": pct(emu, 50) / pct(bare, 50),
                                     "ratio_p99": pct(emu, 99) / pct(bare, 99)}
            asyncio.run(main())
    return res


# ---- scale ---------------------------------------------------------------------------------------
async def _scale(kind: Any, n: int, seconds: float, interval: float, arr: Arrivals, d: str,
                 concurrency: int = 64) -> dict:
    raise_fd_limit()
    before_rss, before_threads = rss(), threading.active_count()
    sem = asyncio.Semaphore(concurrency)
    mods: list[tuple[Any, Uart]] = []
    failures: dict[str, int] = {}
    t_start = time.perf_counter()

    async def bring(i: int) -> tuple[Any, Uart] | None:
        async with sem:
            m, u = await new_module(kind, i, d)
            try:
                await kind.up(u, i)
                return m, u
            except Exception as e:  # noqa: BLE001 - counted
                key = str(e).split(";")[0][:60]
                failures[key] = failures.get(key, 0) + 1
                mods.append((m, u))
                return None

    ups = await asyncio.gather(*(bring(i) for i in range(n)))
    t_up = time.perf_counter() - t_start
    live = [x for x in ups if x is not None]
    after_rss = rss()
    import gc
    gc.collect()   # steady state: the bring-up's one full collection (its survivors) happens before the window
    if os.environ.get("ATEMU_BENCH_GC_FREEZE"):   # experiment: long-lived objects out of the cyclic GC
        import gc
        gc.collect()
        gc.freeze()
    if os.environ.get("ATEMU_BENCH_GC_THRESHOLD"):   # experiment: e.g. 50000 (default 700)
        import gc
        gc.set_threshold(int(os.environ["ATEMU_BENCH_GC_THRESHOLD"]), 10, 10)
    # idle: every module up with its live session, nobody publishing (per-module timers show here)
    ri0, wi0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.sleep(5.0)
    ri1, idle_wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wi0
    idle_cpu = (ri1.ru_utime - ri0.ru_utime) + (ri1.ru_stime - ri0.ru_stime)
    lat: list[float] = []
    lost = 0
    import gc
    gc_time = [0.0, 0.0, 0]   # seconds in the cyclic GC during the steady phase, start of the current one, gen2 runs

    def gc_cb(phase: str, info: dict) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]
            gc_time[2] += info.get("generation") == 2
    gc.callbacks.append(gc_cb)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    prof = None
    if os.environ.get("ATEMU_BENCH_PROFILE"):   # where the time goes in the steady phase (cProfile stats file)
        import cProfile
        prof = cProfile.Profile()
        prof.enable()

    async def publisher(i: int, m: Any, u: Uart) -> None:
        nonlocal lost
        await asyncio.sleep(interval * i / max(1, len(live)))
        k = 0
        while time.perf_counter() - w0 < seconds:
            tag = f"s{i}-{k}"
            t_next = time.perf_counter() + interval
            try:
                t0 = await kind.publish(u, tag)
                lat.append((await arr.wait(tag, 15) - t0) * 1000)
            except (TimeoutError, asyncio.TimeoutError):
                lost += 1
            k += 1
            await asyncio.sleep(max(0.0, t_next - time.perf_counter()))

    await asyncio.gather(*(publisher(i, m, u) for i, (m, u) in enumerate(live)))
    wall = time.perf_counter() - w0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    gc.callbacks.remove(gc_cb)
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["ATEMU_BENCH_PROFILE"])
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    threads = threading.active_count()
    proc_threads = os_threads()
    for m, _ in live + mods:
        await m.stop()
    return {"modules": n, "connected": len(live), "failures": failures, "bring_up_s": t_up,
            "connects_per_s": len(live) / t_up if t_up else 0.0,
            "publishes": len(lat), "lost": lost, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "python_threads": threads, "threads_before": before_threads, "os_threads": proc_threads,
            "rss_per_module_kb": (after_rss - before_rss) / max(1, n) / 1024,
            "cpu_pct_of_one_core": 100 * cpu / wall if wall else 0.0,
            "idle_cpu_pct_of_one_core": 100 * idle_cpu / idle_wall,
            "gc_pct_of_wall": 100 * gc_time[0] / wall if wall else 0.0, "gc_full_runs": gc_time[2],
            "loadavg_1min": os.getloadavg()[0]}


def bench_scale(counts: list[int], seconds: float, tls: bool = False) -> dict:
    """Each count in a fresh process (so RSS and threads are its own)."""
    import json
    res: dict = {}
    for n in counts:
        out = subprocess.run([sys.executable, __file__, "scale", str(n), str(seconds), "tls" if tls else "tcp"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        lines = out.stdout.strip().splitlines()
        res[str(n)] = json.loads(lines[-1]) if out.returncode == 0 and lines else \
            {"modules": n, "error": f"exit {out.returncode}"}
    return res


def scale_child(n: int, seconds: float, tls: bool) -> dict:
    from peers.certs import make_pki
    from peers.mosquitto import Mosquitto
    raise_fd_limit()   # before mosquitto starts: it inherits the limit
    host = "bench.iot.example"
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d) / "pki", hostnames=[host])
        with Mosquitto(tls=dict(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key),
                       require_certificate=True) as b:
            kind = Eseye(b.tls_port, pki=pki, host=host) if tls else Quectel(b.port)

            async def main() -> dict:
                async with Arrivals(b.port) as arr:
                    # one module up and down first: code loaded and first-use costs paid before counting
                    m, u = await new_module(kind, 999999, d)
                    await kind.up(u, 999999)
                    await kind.publish(u, "warmup")
                    await m.stop()
                    return await _scale(kind, n, seconds, 10.0, arr, d)
            return asyncio.run(main())


def sessions_child(n: int, tls: bool) -> dict:
    """n bare MqttSessions (no module, no profile) to one mosquitto: connect rate (TCP + TLS handshake
    with a client certificate + CONNECT/CONNACK), idle CPU over 10 s, RSS and threads."""
    from peers.certs import make_pki
    from peers.mosquitto import Mosquitto
    from atemu.net.dns import Resolver
    from atemu.net.mqtt import MqttSession
    from atemu.net.tls import client_context
    raise_fd_limit()
    host = "bench.iot.example"
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d) / "pki", hostnames=[host])
        with Mosquitto(tls=dict(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key),
                       require_certificate=True) as b:
            async def main() -> dict:
                ctx = client_context(ca=str(pki.ca_cert), cert=str(pki.client_cert), key=str(pki.client_key)) \
                    if tls else None
                resolver = Resolver({host: "127.0.0.1"})

                def make(i: int) -> MqttSession:
                    return MqttSession(client_id=f"bench-s{i}", host=host, port=b.tls_port if tls else b.port,
                                       resolver=resolver, tls=ctx, keepalive=60)
                warm = make(999999)
                await warm.connect()
                await warm.disconnect()
                r0, threads0 = rss(), threading.active_count()
                sem = asyncio.Semaphore(64)

                async def one(s: MqttSession) -> int:
                    async with sem:
                        try:
                            return await s.connect()
                        except Exception:  # noqa: BLE001 - counted
                            return -1
                sessions = [make(i) for i in range(n)]
                t0 = time.perf_counter()
                rcs = await asyncio.gather(*(one(s) for s in sessions))
                took = time.perf_counter() - t0
                r1 = rss()
                ru0 = resource.getrusage(resource.RUSAGE_SELF)
                w0 = time.perf_counter()
                await asyncio.sleep(10)
                ru1 = resource.getrusage(resource.RUSAGE_SELF)
                w = time.perf_counter() - w0
                out = {"sessions": n, "connected": rcs.count(0), "connect_s": took,
                       "connects_per_s": rcs.count(0) / took if took else 0.0,
                       "threads": threading.active_count(), "threads_before": threads0,
                       "rss_per_session_kb": (r1 - r0) / n / 1024,
                       "idle_cpu_pct_of_one_core": 100 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / w,
                       "loadavg_1min": os.getloadavg()[0]}
                for s in sessions:
                    s.close()
                return out
            return asyncio.run(main())


def bench_sessions(counts: list[int], tls: bool) -> dict:
    import json
    res: dict = {}
    for n in counts:
        out = subprocess.run([sys.executable, __file__, "sessions", str(n), "tls" if tls else "tcp"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        lines = out.stdout.strip().splitlines()
        res[str(n)] = json.loads(lines[-1]) if out.returncode == 0 and lines else {"sessions": n, "error": f"exit {out.returncode}"}
    return res


def print_sessions(title: str, r: dict) -> None:
    print(title)
    for n, x in r.items():
        if "error" in x:
            print(f"  {n:>5} sessions: failed ({x['error']})")
            continue
        print(f"  {n:>5} sessions: {x['connected']}/{x['sessions']} connected in {x['connect_s']:.1f} s "
              f"({x['connects_per_s']:.0f}/s), threads {x['threads']} (before {x['threads_before']}), "
              f"RSS/session {x['rss_per_session_kb']:.0f} KiB, idle CPU {x['idle_cpu_pct_of_one_core']:.1f}% of a core, "
              f"load average {x['loadavg_1min']:.1f}")


def print_latency(r: dict) -> None:
    print("MQTT publish, payload's last byte -> subscriber (QoS 0, 100 bytes), beside a bare paho client "
          "(goal <= 5x):")
    for name, x in r.items():
        print(f"  {name:<16} ({x['transport']}) atemu p50 {x['atemu_p50_ms']:.2f} ms p99 {x['atemu_p99_ms']:.2f} ms | "
              f"bare paho p50 {x['bare_p50_ms']:.2f} ms p99 {x['bare_p99_ms']:.2f} ms | "
              f"x{x['ratio_p50']:.1f} p50, x{x['ratio_p99']:.1f} p99")


def print_scale(title: str, r: dict) -> None:
    print(title)
    for n, x in r.items():
        if "error" in x:
            print(f"  {n:>5} modules: failed ({x['error']})")
            continue
        print(f"  {n:>5} modules: {x['connected']}/{x['modules']} connected in {x['bring_up_s']:.1f} s "
              f"({x['connects_per_s']:.0f}/s), {x['publishes']} publishes (lost {x['lost']}), "
              f"p50 {x['p50_ms']:.2f} ms p99 {x['p99_ms']:.2f} ms, threads {x['python_threads']} "
              f"(before {x['threads_before']}), RSS/module {x['rss_per_module_kb']:.0f} KiB, "
              f"CPU {x['cpu_pct_of_one_core']:.0f}% of a core (idle {x.get('idle_cpu_pct_of_one_core', 0):.1f}%) (GC {x.get('gc_pct_of_wall', 0):.1f}% of the time), "
              f"load average {x.get('loadavg_1min', 0):.1f}"
              + (f", failures {x['failures']}" if x["failures"] else ""))


if __name__ == "__main__":
    if sys.argv[1:2] == ["sessions"]:   # one bench_sessions count, in its own process
        import json
        print(json.dumps(sessions_child(int(sys.argv[2]), sys.argv[3] == "tls")))
    elif sys.argv[1:2] == ["scale"]:   # one bench_scale count, in its own process
        import json
        print(json.dumps(scale_child(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "tls")))
    else:                            # quick look: python tests/bench/mqtt_bench.py
        print_latency(bench_latency(200))
        print_scale("Quectel sessions:", bench_scale([20], 12))
