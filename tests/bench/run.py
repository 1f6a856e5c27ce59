#!/usr/bin/env python3
"""atemu benchmarks (``make bench``). Prints a table and writes bench-results/bench.json.

Measured, never asserted: these machines are shared and noisy. Everything runs on loopback.

1. AT -> OK round trip over a real pty, pacing off (the emulator in its own process), against a
   bare Python responder with a lookup table on the same kind of pty.
2. Pacing accuracy over 10 KB of output at 9600, 115200 and 921600 baud.
3. Eseye publish throughput to a local mosquitto over TLS (qos 1 = fire and forget, qos 2 = acked).
4. Modules served by one process, each answering one AT per second (latency p50/p99).
5. Resident memory per idle module.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


def open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


def roundtrips(fd: int, n: int, cmd: bytes = b"AT\r", expect: bytes = b"OK\r\n") -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        os.write(fd, cmd)
        buf = b""
        while not buf.endswith(expect):
            r, _, _ = select.select([fd], [], [], 2)
            if not r:
                raise TimeoutError(f"no answer, got {buf!r}")
            buf += os.read(fd, 4096)
        out.append((time.perf_counter() - t0) * 1000)
    return out


BARE = r'''
import asyncio, os, sys, tty
TABLE = {b"AT": b"\r\nOK\r\n", b"ATE0": b"\r\nOK\r\n"}
async def main():
    m, s = os.openpty(); tty.setraw(s)
    os.set_blocking(m, False)
    print(os.ttyname(s), flush=True)
    buf = bytearray()
    def rd():
        buf.extend(os.read(m, 4096))
        while b"\r" in buf:
            i = buf.index(b"\r"); line = bytes(buf[:i]); del buf[:i+1]
            os.write(m, TABLE.get(line.strip(), b"\r\nERROR\r\n"))
    asyncio.get_running_loop().add_reader(m, rd)
    await asyncio.Event().wait()
asyncio.run(main())
'''


def bench_roundtrip(n: int) -> dict:
    res = {}
    # bare responder
    p = subprocess.Popen([sys.executable, "-c", BARE], stdout=subprocess.PIPE, text=True)
    path = p.stdout.readline().strip()
    fd = open_raw(path)
    roundtrips(fd, 200)
    bare = roundtrips(fd, n)
    os.close(fd)
    p.kill()
    # the emulator, as a user runs it
    with tempfile.TemporaryDirectory() as d:
        link = os.path.join(d, "tty")
        p = subprocess.Popen([sys.executable, "-m", "atemu.cli", "run", "eseye-anynet", "--pty", link, "--no-pacing",
                              "--state-dir", d], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        p.stdout.readline()
        fd = open_raw(link)
        roundtrips(fd, 1, b"ATE0\r")
        roundtrips(fd, 200)
        emu = roundtrips(fd, n)
        os.close(fd)
        p.terminate()
        p.wait()
    res["bare_p50_ms"], res["bare_p99_ms"] = pct(bare, 50), pct(bare, 99)
    res["atemu_p50_ms"], res["atemu_p99_ms"] = pct(emu, 50), pct(emu, 99)
    res["ratio_p50"] = res["atemu_p50_ms"] / res["bare_p50_ms"]
    res["n"] = n
    return res


def bench_pacing(size: int, bauds: list[int]) -> dict:
    from harness import Emu
    res = {}
    for baud in bauds:
        with Emu("eseye-anynet", pacing=True, baud=baud, open_serial=False) as e:
            fd = open_raw(str(e.link))
            termios.tcflush(fd, termios.TCIFLUSH)
            payload = b"x" * size
            got = 0
            first = last = None
            t0 = time.perf_counter()
            e.loop.call_soon_threadsafe(e.module.write, payload)
            while got < size:
                r, _, _ = select.select([fd], [], [], 5)
                if not r:
                    break
                chunk = os.read(fd, 65536)
                now = time.perf_counter()
                if first is None:
                    first = now
                got += len(chunk)
                last = now
            os.close(fd)
            expected = size * 10 / baud
            took = last - t0
            res[str(baud)] = {"bytes": got, "expected_s": expected, "measured_s": took,
                              "error_pct": (took - expected) / expected * 100}
    return res


def bench_publish(n: int) -> dict:
    from harness import Emu
    from peers.certs import make_pki
    from peers.mosquitto import Mosquitto
    host = "bench.iot.example"
    res = {}
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(Path(d) / "pki", hostnames=[host])
        with Mosquitto(tls=dict(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key),
                       require_certificate=True) as b:
            world = {"network": {"hosts": {host: "127.0.0.1"}},
                     "aws": {"endpoint": f"{host}:{b.tls_port}", "thing_name": "bench",
                             "ca": str(pki.ca_cert), "cert": str(pki.client_cert), "key": str(pki.client_key)}}
            with Emu("eseye-anynet", world=world) as e:
                e.cmd("ATE0")
                e.cmd('AT+AWSPUBOPEN=0,"bench"')
                e.read_until(rb"\+AWSPUBOPEN: 0,0", timeout=10)
                payload = b"p" * 100
                for qos in (1, 2):
                    t0 = time.perf_counter()
                    for _ in range(n):
                        e.write(b"AT+AWSPUBLISH=0,100,%d\r" % qos + payload)
                        e.read_until(b"SEND OK\r\n", timeout=10)
                    dt = time.perf_counter() - t0
                    res[f"qos{qos}_msgs_per_s"] = n / dt
    return res


SERVER = r'''
import asyncio, json, os, sys, tempfile, resource
sys.path[:0] = [sys.argv[3]]
from atemu.module import Module
from atemu.uart import PtyTransport
from atemu.profile import find_profile
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
async def main():
    n = int(sys.argv[1]); d = sys.argv[2]
    cls = find_profile("eseye-anynet")
    mods = []
    # warm one up so imports and first-use costs are not counted per module
    m0 = Module(cls, state_dir=os.path.join(d, "w"), pacing=False); t0 = PtyTransport(m0); await t0.start(); await m0.start()
    before = rss()
    paths = []
    for i in range(n):
        m = Module(cls, state_dir=os.path.join(d, str(i)), pacing=False, name=f"m{i}")
        t = PtyTransport(m); await t.start(); await m.start()
        mods.append((m, t)); paths.append(t.slave_name)
    after = rss()
    print(json.dumps({"paths": paths, "rss_per_module": (after - before) / n, "rss_total": after}), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''


def bench_scale(n: int, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([sys.executable, "-c", SERVER, str(n), d, str(ROOT)], stdout=subprocess.PIPE, text=True)
        info = json.loads(p.stdout.readline())
        fds = [open_raw(path) for path in info["paths"]]
        lat: list[float] = []
        sent: dict[int, float] = {}
        bufs = {fd: b"" for fd in fds}
        start = time.perf_counter()
        # each module gets one AT per second, staggered evenly
        schedule = [(start + i / n, fd) for i, fd in enumerate(fds)]
        poll = select.epoll()
        for fd in fds:
            poll.register(fd, select.EPOLLIN)
        errors = 0
        idx = 0
        while time.perf_counter() - start < seconds:
            now = time.perf_counter()
            while schedule[idx][0] <= now:
                t, fd = schedule[idx]
                if fd not in sent:
                    os.write(fd, b"AT\r")
                    sent[fd] = time.perf_counter()
                schedule[idx] = (t + 1.0, fd)
                idx = (idx + 1) % n
            timeout = max(0.0, schedule[idx][0] - time.perf_counter())
            for fd, _ in poll.poll(min(timeout, 0.01)):
                bufs[fd] += os.read(fd, 4096)
                if bufs[fd].endswith(b"OK\r\n"):
                    # echo is on: "AT\r\r\nOK\r\n"
                    lat.append((time.perf_counter() - sent.pop(fd)) * 1000)
                    bufs[fd] = b""
        missing = len(sent)
        for fd in fds:
            os.close(fd)
        p.kill()
        return {"modules": n, "answers": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                "unanswered_at_end": missing, "rss_per_module_kb": info["rss_per_module"] / 1024}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--only", help="comma list: roundtrip,pacing,publish,scale")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else {"roundtrip", "pacing", "publish", "scale"}
    results: dict = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]}}
    if "roundtrip" in only:
        results["roundtrip"] = r = bench_roundtrip(500 if a.quick else 5000)
        print(f"AT->OK round trip over a pty (pacing off), n={r['n']}:")
        print(f"  bare responder p50 {r['bare_p50_ms']:.3f} ms  p99 {r['bare_p99_ms']:.3f} ms")
        print(f"  atemu          p50 {r['atemu_p50_ms']:.3f} ms  p99 {r['atemu_p99_ms']:.3f} ms  "
              f"(x{r['ratio_p50']:.2f} of bare; goal p50 <= 0.1 ms, p99 <= 0.5 ms)")
    if "pacing" in only:
        results["pacing"] = r = bench_pacing(2048 if a.quick else 10240, [9600, 115200, 921600])
        print("Pacing accuracy (goal within 1% of 10 bits per byte):")
        for baud, x in r.items():
            print(f"  {baud:>7} baud: {x['bytes']} bytes in {x['measured_s']:.4f} s, expected {x['expected_s']:.4f} s, "
                  f"error {x['error_pct']:+.2f}%")
    if "publish" in only:
        results["publish"] = r = bench_publish(50 if a.quick else 500)
        print(f"Eseye publish to local mosquitto over TLS, 100-byte payloads: qos1 {r['qos1_msgs_per_s']:.0f} msg/s, "
              f"qos2 (acked) {r['qos2_msgs_per_s']:.0f} msg/s")
    if "scale" in only:
        results["scale"] = r = bench_scale(50 if a.quick else 500, 5 if a.quick else 20)
        print(f"{r['modules']} modules in one process, one AT per second each: {r['answers']} answers, "
              f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms (goal p99 <= 20 ms); "
              f"idle RSS per module {r['rss_per_module_kb']:.0f} KiB (goal <= 2048 KiB)")
    out = Path(a.out)
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
