#!/usr/bin/env python3
"""atemu soak test (``make soak``): one module under mixed load for a given time, RSS sampled.

    python tests/bench/soak.py [--seconds 600] [--interval 5] [--out bench-results] [--max-growth 20]

A quectel-fcm242d module runs in this process (in-process UART, pacing off) and a host driver on
the same loop keeps it busy, cycle after cycle, with what a real host mixes:

* plain commands (``AT``, ``AT+QSTAST``), one of them answered ERROR by an ``at_error`` fault;
* a TCP connection to a local echo server: open, send, the ``recv`` URC, read, close;
* MQTT against a local mosquitto (when installed): publish qos 1 to a topic the module subscribed
  to, so every cycle also brings a ``+QMTRECV``;
* flash files: open, write, close, delete;
* a URC storm (``urc_storm`` fault) every 10th cycle, a peer that closes the socket (``remote_close``)
  every 25th.

The resident set size (``VmRSS`` of this process: module, driver and loop) is sampled every
``--interval`` seconds, each time after a full garbage collection (closed connections live in
reference cycles until the collector's oldest generation runs: that is not a leak). Bounded
buffers fill during the run (the fault history keeps 1000 records). The run fails (exit 1) when a step gets no answer, or when RSS grows by more
than ``--max-growth`` MiB from the end of the first quarter (warm-up: caches, buffers, the first
pages of every code path) to the end. Results go to ``OUT/soak.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

WORLD = {"wifi": {"access_points": [{"ssid": "soak", "security": "wpa2", "password": "soakpass123"}]},
         "options": {"quectel.join_delay": 0.01, "quectel.boot_delay": 0.01}}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Stuck(Exception):
    pass


class Host:
    """The host side of the module's in-process UART, on the module's own loop."""

    def __init__(self, handle):
        self.h = handle
        self.buf = bytearray()
        self.event = asyncio.Event()
        handle.inproc.listeners.append(self._on)

    def _on(self, data: bytes) -> None:
        self.buf += data
        self.event.set()

    async def until(self, pattern: bytes, timeout: float = 10.0) -> bytes:
        rx = re.compile(pattern)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                got = bytes(self.buf[:m.end()])
                del self.buf[:m.end()]
                self.h.inproc.clear()          # nobody reads the port's own queue: keep it empty
                return got
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise Stuck(f"no {pattern!r} within {timeout} s; last output {bytes(self.buf[-200:])!r}")
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def cmd(self, line: str, until: bytes = rb"\r\nOK\r\n", timeout: float = 10.0) -> bytes:
        self.h.write(line.encode() + b"\r\n")
        return await self.until(until + rb"|\r\nERROR\r\n|\+CME ERROR: \d+\r\n", timeout)


async def echo_server() -> asyncio.AbstractServer:
    async def handle(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def soak(args) -> dict:
    from atemu.api import astart
    broker = None
    try:
        from peers.mosquitto import MOSQUITTO, Mosquitto
        if Path(MOSQUITTO).exists():
            broker = Mosquitto()
            broker.start()
    except Exception as e:  # no mosquitto: the soak runs without MQTT and says so
        print(f"soak: no MQTT ({e})", file=sys.stderr)
        broker = None
    srv = await echo_server()
    port = srv.sockets[0].getsockname()[1]
    counts = {"cycles": 0, "commands": 0, "tcp_round_trips": 0, "mqtt_publishes": 0, "mqtt_received": 0,
              "files": 0, "urc_storms": 0, "remote_closes": 0, "at_errors": 0}
    samples: list[dict] = []
    error = None
    with tempfile.TemporaryDirectory(prefix="atemu-soak-") as tmp:
        h = await astart("quectel-fcm242d", world=WORLD, transport="inproc", state_dir=tmp)
        host = Host(h)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + args.seconds

        async def sampler() -> None:
            while True:
                gc.collect()      # garbage in reference cycles is not a leak: count what stays reachable
                samples.append({"t": round(loop.time() - t0, 2), "rss_kib": rss_kib(), "cycles": counts["cycles"]})
                await asyncio.sleep(args.interval)

        sampling = asyncio.ensure_future(sampler())
        try:
            await host.cmd("AT")
            await host.cmd('AT+QSTAAPINFO="soak","soakpass123"', until=rb"GOT_IP\r\n")
            if broker is not None:
                await host.cmd(f'AT+QMTOPEN=0,"127.0.0.1",{broker.port}', until=rb"\+QMTOPEN: 0,0\r\n")
                await host.cmd('AT+QMTCONN=0,"soak"', until=rb"\+QMTCONN: 0,0,0\r\n")
                await host.cmd('AT+QMTSUB=0,1,"soak/loop",1', until=rb"\+QMTSUB: 0,1,0,1\r\n")
            mid = 1
            while loop.time() < end:
                c = counts["cycles"] = counts["cycles"] + 1
                await host.cmd("AT")
                await host.cmd("AT+QSTAST")
                counts["commands"] += 2
                if c % 7 == 0:
                    h.module.faults.inject("at_error", command="+QSTAST")
                    if b"ERROR" not in await host.cmd("AT+QSTAST"):
                        raise Stuck("at_error did not make AT+QSTAST answer ERROR")
                    counts["at_errors"] += 1
                await host.cmd(f'AT+QIOPEN=1,"TCP","127.0.0.1",{port},0,0', until=rb"\+QIOPEN: 1,0\r\n")
                payload = (b"soak %d " % c) * 20
                await host.cmd(f"AT+QISEND=1,{len(payload)}", until=rb"> ")
                h.write(payload)
                await host.until(rb'\+QIURC: "recv",1\r\n')
                got = await host.cmd("AT+QIRD=1,1500")
                if payload not in got:
                    raise Stuck(f"the echo did not come back: {got[:120]!r}")
                counts["tcp_round_trips"] += 1
                if c % 25 == 0:
                    h.module.faults.inject("remote_close", port=port)
                    await host.until(rb'\+QIURC: "closed",1\r\n')
                    counts["remote_closes"] += 1
                await host.cmd("AT+QICLOSE=1")
                if broker is not None:
                    mid = mid % 65535 + 1
                    text = b"tick %d" % c
                    await host.cmd(f'AT+QMTPUB=0,{mid},1,0,"soak/loop",{len(text)}', until=rb"> ")
                    h.write(text)
                    got = await host.until(rb'\+QMTRECV: 0,\d+,"soak/loop",\d+,"[^"]*"\r\n')   # one regex for all
                    if b',"%s"\r\n' % text not in got:
                        raise Stuck(f"+QMTRECV did not bring back {text!r}: {got[-80:]!r}")
                    counts["mqtt_publishes"] += 1
                    counts["mqtt_received"] += 1
                if c % 5 == 0:
                    fh = re.search(rb"\+QFOPEN: (\d+)", await host.cmd('AT+QFOPEN="soak.txt",0')).group(1).decode()
                    await host.cmd(f"AT+QFWRITE={fh},64", until=rb"CONNECT\r\n")
                    h.write(b"x" * 64)
                    await host.until(rb"\+QFWRITE: 64,64\r\n\r\nOK\r\n")
                    await host.cmd(f"AT+QFCLOSE={fh}")
                    await host.cmd('AT+QFDEL="soak.txt"')
                    counts["files"] += 1
                if c % 10 == 0:
                    h.module.faults.inject("urc_storm", text="+QSTASTAT: GOT_IP", count=50, interval=0)
                    counts["urc_storms"] += 1
                h.records.clear()                  # the handle's own transcript window is not a leak
        except Stuck as e:
            error = str(e)
        finally:
            sampling.cancel()
            samples.append({"t": round(loop.time() - t0, 2), "rss_kib": rss_kib(), "cycles": counts["cycles"]})
            await h.aclose()
            srv.close()
            if broker is not None:
                broker.close()
    return {"seconds": args.seconds, "counts": counts, "samples": samples, "error": error}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="how long to run (default 600)")
    ap.add_argument("--interval", type=float, default=None, help="RSS sampling interval (default seconds/40, 0.2..10)")
    ap.add_argument("--out", default="bench-results", help="folder for soak.json")
    ap.add_argument("--max-growth", type=float, default=20.0, metavar="MIB",
                    help="fail when RSS grows more than this after warm-up (default 20 MiB)")
    args = ap.parse_args()
    if not args.seconds > 0:
        ap.error("--seconds must be positive")
    if args.interval is None:
        args.interval = min(10.0, max(0.2, args.seconds / 40))
    res = asyncio.run(soak(args))
    s = res["samples"]
    warm = next((x for x in s if x["t"] >= args.seconds / 4), s[0])
    growth = (s[-1]["rss_kib"] - warm["rss_kib"]) / 1024
    res["rss_mib"] = {"start": round(s[0]["rss_kib"] / 1024, 1), "after_warmup": round(warm["rss_kib"] / 1024, 1),
                      "end": round(s[-1]["rss_kib"] / 1024, 1), "max": round(max(x["rss_kib"] for x in s) / 1024, 1),
                      "growth_after_warmup": round(growth, 2)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(res, indent=2))
    c = res["counts"]
    print(f"soak: {res['seconds']:g} s, {c['cycles']} cycles: {c['commands']} plain commands, {c['tcp_round_trips']} "
          f"TCP round trips, {c['mqtt_publishes']} MQTT publishes ({c['mqtt_received']} received), {c['files']} file "
          f"writes, {c['urc_storms']} URC storms, {c['remote_closes']} remote closes, {c['at_errors']} injected ERRORs")
    print("soak: RSS MiB " + "  ".join(f"{x['t']:g}s:{x['rss_kib'] / 1024:.1f}" for x in s[:: max(1, len(s) // 12)]))
    r = res["rss_mib"]
    print(f"soak: RSS start {r['start']} MiB, after warm-up {r['after_warmup']} MiB, end {r['end']} MiB, "
          f"max {r['max']} MiB; growth after warm-up {r['growth_after_warmup']} MiB (limit {args.max_growth:g})")
    print(f"soak: results in {out / 'soak.json'}")
    if res["error"]:
        print(f"soak: FAILED: {res['error']}", file=sys.stderr)
        return 1
    if growth > args.max_growth:
        print(f"soak: FAILED: RSS grew {growth:.1f} MiB after warm-up (limit {args.max_growth:g} MiB)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
