"""In-process fuzz harness: every profile's engine and handlers fed seeded host input at full speed.

Each module runs on this process's asyncio loop with no pty in between (the host side is an
in-memory sink), so one input costs what the emulator spends on it. Inputs are generated from
the profile's own command declarations (right arity, values in and just outside their ranges,
names and ports of real local peers), mixed with malformed lines, raw bytes, data-phase bursts,
escape sequences, long lines and byte-by-byte writes. Commands that reach the network reach real
peers on 127.0.0.1: a TCP and a UDP echo server, an aiohttp server and mosquitto; at the start and
every fifth batch the harness does what a host does first (join the access point, open a TCP
socket and send on it, open an MQTT session: ``SETUP``), so fuzzed commands meet live sockets. An
audit hook refuses any connect, send or name lookup that would leave the host, so nothing does.

After every batch the harness checks that no handler or background task raised (no ERROR record
from the ``atemu`` loggers, no unhandled task exception, no "Exception ignored"), that the module answers ``AT`` (getting
it out of a data phase, transparent mode or sleep the way a host would), and that resident memory
stays bounded. A run is replayable from its seed::

    python tests/fuzzer.py --profile quectel-fcm242d --inputs 1000000 --seed 7
    make fuzz                      # every profile, 1e6 inputs each

Exit status 0 when every profile passed, 1 with the seed and input number of the first failure.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import logging
import os
import random
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from atemu.grammar import Flags, Form, Int, Keyword, Raw, Rest, Str  # noqa: E402
from atemu.module import Module  # noqa: E402
from atemu.profile import find_profile, installed_profiles  # noqa: E402
from atemu.world import World  # noqa: E402

PAGE = 4096
_ALPHA = b"AT+=?,\"\r\n#\x1a\x1b\x08\x00\xff[]0123456789abcdefQSWx"
_TABLE = bytes(_ALPHA[i % len(_ALPHA)] for i in range(256))   # random bytes -> AT-ish bytes
HOSTS = ("echo.test", "broker.test", "www.test")


# ---------------------------------------------------------------------------------------- loopback only

def _loopback(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    h = host.strip("[]").split("%", 1)[0]
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _guard(event: str, args: tuple) -> None:
    """Audit hook: while a fuzz runs, the fuzzer's modules may only talk to 127.0.0.0/8 and ::1.
    (An audit hook cannot be removed: outside a fuzz run it lets everything through.)"""
    if not _ACTIVE:
        return
    if event in ("socket.connect", "socket.sendto"):
        sock, addr = args[0], args[-1]
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and isinstance(addr, tuple):
            if not _loopback(addr[0]):
                raise OSError(errno.ENETUNREACH, f"fuzz: {addr[0]} is not loopback")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if host is not None and not _loopback(host) and host not in ("", b""):
            try:
                ipaddress.ip_address((host.decode() if isinstance(host, bytes) else str(host)).strip("[]"))
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "fuzz: no name lookups leave the host") from None
            if not _loopback(host):
                raise socket.gaierror(socket.EAI_NONAME, "fuzz: only loopback addresses") from None


_GUARDED = False
_ACTIVE = 0      # fuzz runs in progress


def install_guard() -> None:
    global _GUARDED
    if not _GUARDED:
        sys.addaudithook(_guard)
        _GUARDED = True


# ---------------------------------------------------------------------------------------- peers

class Peers:
    """Real local peers (context manager): TCP/UDP echo, an HTTP server, mosquitto when installed."""

    def __enter__(self) -> "Peers":
        from peers.httpserver import HttpServer
        from peers.servers import TcpEchoServer, UdpEchoServer
        self.tcp = TcpEchoServer().__enter__()
        self.udp = UdpEchoServer().__enter__()
        self.http = HttpServer()
        self.http.start()
        self.http.add_file("fw.bin", os.urandom(3000))
        self.mqtt = None
        try:
            from peers.mosquitto import Mosquitto
            self.mqtt = Mosquitto()
            self.mqtt.start()
        except Exception as e:   # mosquitto missing: MQTT commands meet a closed port instead
            print(f"fuzz: mosquitto not started ({e}); MQTT commands get connection refused", file=sys.stderr)
            self.mqtt = None
        return self

    def counts(self) -> dict:
        """What reached the peers so far: TCP connections and bytes, HTTP requests, MQTT clients."""
        mqtt = 0
        if self.mqtt is not None:
            try:
                mqtt = self.mqtt.log_text().count("New client connected")
            except Exception:
                pass
        return {"tcp_connections": self.tcp.connections, "tcp_bytes": self.tcp.received,
                "http_requests": len(self.http.requests), "mqtt_clients": mqtt}

    @property
    def ports(self) -> list[int]:
        return [self.tcp.port, self.udp.port, self.http.port] + ([self.mqtt.port] if self.mqtt else [])

    def __exit__(self, *exc) -> None:
        for p in (self.mqtt, self.http):
            if p is not None:
                try:
                    p.stop()
                except Exception:
                    pass
        self.udp.__exit__(None, None, None)
        self.tcp.__exit__(None, None, None)


def fuzz_world(peers: Peers | None) -> dict:
    return {
        "network": {"hosts": {h: "127.0.0.1" for h in HOSTS}},
        "aws": {"endpoint": f"broker.test:{peers.mqtt.port if peers and peers.mqtt else 1883}"},
        "wifi": {"access_points": [
            {"ssid": "fuzz-ap", "security": "wpa2", "password": "fuzz-pass-1", "channel": 6, "rssi": -50},
            {"ssid": "open-ap", "security": "open", "channel": 1, "rssi": -70},
            {"ssid": "MyAP", "security": "wpa2", "password": "MyAPPSK-123", "channel": 11, "rssi": -60},
        ]},
    }


# ---------------------------------------------------------------------------------------- inputs

#: commands the generator leaves out: Calypso's AT+sleep=<s> hibernates for up to a day (the UART is
#: ignored, as on the device, until the time is up or the host pulses the reset pin)
NOT_FUZZED = {"+SLEEP"}


class Generator:
    """Seeded host input for one profile, built from its declarations."""

    def __init__(self, cls, seed: int, ports: list[int]):
        self.rnd = random.Random(seed)
        self.cls = cls
        self.ports = ports or [7]
        self.writes = sorted(k for k, c in cls.commands.items()
                             if (Form.WRITE in c.forms or c.subs) and k.upper() not in NOT_FUZZED)
        self.names = sorted(k for k in cls.commands if k.upper() not in NOT_FUZZED)
        p = self.ports
        self.strings = ['"fuzz-ap"', '"fuzz-pass-1"', '"open-ap"', '"127.0.0.1"', '"::1"', '"echo.test"',
                        '"broker.test"', '"www.test"', f'"http://www.test:{p[2 % len(p)]}/file/fw.bin"',
                        f'"http://127.0.0.1:{p[2 % len(p)]}/get"', '"d"', '"d/f"', '"a/b/c"', '"x"', '""',
                        '"unterminated', '" spaced "', '"\u00e9t\u00e9"', "[41]", "[zz]", "[", "[]", '"a,b"',
                        '"Topic/#"', '"t/+/x"', '"../etc"', '"/abs"', "x" * 300, '"' + "y" * 120 + '"']

    def _int(self, p: Int) -> str:
        r = self.rnd
        if p.choices:
            pool = list(p.choices) + [max(p.choices) + 1, -1]
        else:
            lo = p.lo if p.lo is not None else 0
            hi = p.hi if p.hi is not None else 65535
            pool = [lo, hi, lo - 1, hi + 1, r.randint(lo, hi), r.randint(lo, min(hi, lo + 16)),
                    r.randint(lo, min(hi, lo + 16))]
            if lo <= 1 and hi >= 65535:
                pool += self.ports * 2
        v = r.choice(pool)
        return hex(v) if r.random() < 0.02 and v >= 0 else str(v)

    def value(self, p) -> str:
        r = self.rnd
        if isinstance(p, Int):
            return self._int(p)
        if isinstance(p, Keyword) and p.values:
            k = r.choice(list(p.values))
            return k.lower() if r.random() < 0.2 else k
        if isinstance(p, Flags) and p.values:
            return "|".join(r.sample(list(p.values), r.randint(1, min(3, len(p.values)))))
        if isinstance(p, Str) and p.choices:
            c = r.choice(list(p.choices))
            return f'"{c}"' if p.quoted is not False else c
        if isinstance(p, (Raw, Rest)):
            return r.choice(["0", "1", "4", "abcd", "QUJD"])
        s = r.choice(self.strings)
        if isinstance(p, Str) and p.quoted is False and s.startswith('"') and s.endswith('"') and len(s) > 1:
            s = s[1:-1]
        return s

    def line(self) -> str:
        """One command line (without terminator)."""
        r = self.rnd
        x = r.random()
        if x < 0.6 and self.writes:
            spec = self.cls.commands[r.choice(self.writes)]
            if spec.subs and (Form.WRITE not in spec.forms or r.random() < 0.6):
                key = r.choice(sorted(spec.subs))
                fs = spec.subs[key]
                vals = [f'"{key}"' if self.cls.dialect.name != "ti" else key]
                params = fs.params
            else:
                fs = spec.forms[Form.WRITE]
                vals, params = [], fs.params
            for p in params:
                if p.optional and r.random() < 0.35:
                    if r.random() < 0.3:
                        vals.append("")    # hosts pad optional fields with empty commas
                        continue
                    break
                vals.append(self.value(p))
            if r.random() < 0.05:
                vals.append(self.value(Str("extra")))
            elif r.random() < 0.05 and vals:
                vals.pop()
            return "AT" + spec.name + "=" + ",".join(vals)
        name = r.choice(self.names) if self.names else ""
        if x < 0.8:
            return "AT" + name + r.choice(["", "?", "=?", " ", "=", "=,", ",1", "?=", "=??"])
        vals = [r.choice(self.strings + ["0", "1", "2", "-1", "99999", "0x10", str(r.choice(self.ports))])
                for _ in range(r.randint(1, 7))]
        return "AT" + name + "=" + ",".join(vals)

    def noise(self, n: int) -> bytes:
        data = self.rnd.randbytes(n)
        return data if self.rnd.random() < 0.5 else data.translate(_TABLE)

    def next(self) -> list[bytes]:
        """The bytes of one input, as one or more writes."""
        r = self.rnd
        x = r.random()
        if x < 0.78:
            line = self.line()
            if r.random() < 0.05:
                line = line.lower()
            term = r.choice([b"\r\n"] * 8 + [b"\r", b"\n"])
            data = line.encode("utf-8") + term
            if r.random() < 0.04:
                return [data[i:i + 1] for i in range(len(data))]       # byte by byte
            if r.random() < 0.25:
                # the payload a data phase may want, in the same burst as the command
                data += self.noise(r.choice([0, 1, 4, 16, 64, 300]))
                if r.random() < 0.3:
                    data += r.choice([b"#", b"+++", b"\x1a", b"\x1b"]) + self.noise(r.randint(0, 40))
            return [data]
        if x < 0.88:
            return [self.noise(r.randint(1, 200))]
        if x < 0.92:
            m = self.cls.dialect.max_line
            return [b"A" * r.choice([m - 1, m, m + 1, 2 * m + 3]) + b"\r\n"]
        if x < 0.96:
            return [self.noise(r.randint(1, 3000) if r.random() < 0.3 else r.randint(1, 300))]
        return [r.choice([b"+++", b"\x1b", b"\x1a", b"#", b"\r\n", b"AT\r\n", b"ATE0\r\n", b"ATE1\r\n"])]


# ---------------------------------------------------------------------------------------- network set-up

#: what a host does first, per profile, so that fuzzed commands meet a joined module with sockets and
#: MQTT sessions open to the real peers ({tcp}, {udp}, {mqtt}: their ports). Lines may fail: the
#: fuzz does not care, it only wants the state. (Eseye reaches the network only through AWS IoT
#: with the SIM's client certificate, which the fuzz world does not hold.)
SETUP = {
    "quectel-fcm242d": ['AT+QSTAAPINFO="fuzz-ap","fuzz-pass-1"', 0.5,
                        'AT+QIOPEN=1,"TCP","127.0.0.1",{tcp},0,0', 'AT+QIOPEN=2,"UDP","127.0.0.1",{udp},0,0',
                        0.3, b"AT+QISEND=1,5\r", 0.1, b"hello", 'AT+QMTOPEN=0,"127.0.0.1",{mqtt}', 0.3,
                        'AT+QMTCONN=0,"fuzz"', 0.3],
    "ti-simplelink": ["AT+Start", 0.2, "AT+WlanConnect=fuzz-ap,,WPA_WPA2,fuzz-pass-1,,,", 0.5,
                      "AT+Socket=INET,STREAM,TCP", "AT+Connect=0,INET,{tcp},127.0.0.1", 0.3,
                      b"AT+Send=0,0,5,hello\r\n", "AT+Socket=INET,DLGR,UDP"],
    "microchip-winc": ['AT+WSTAC=1,"fuzz-ap"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"fuzz-pass-1"', "AT+WSTA=1", 0.5,
                       "AT+SOCKO=2", 'AT+SOCKBR=1,"127.0.0.1",{tcp}', 0.3, b"AT+SOCKWR=1,5\r#hello",
                       'AT+MQTTC=1,"127.0.0.1"', "AT+MQTTC=2,{mqtt}",
                       'AT+MQTTC=3,"fuzz"', "AT+MQTTC=7,0", "AT+MQTTCONN=1", 0.3],
}


async def setup(module: Module, peers: "Peers | None") -> None:
    if peers is None:
        return
    ports = {"tcp": peers.tcp.port, "udp": peers.udp.port, "mqtt": peers.mqtt.port if peers.mqtt else 1}
    for step in SETUP.get(module.profile_cls.name, []):
        if isinstance(step, float):
            await asyncio.sleep(step)
        elif isinstance(step, bytes):
            module.feed(step)
            await _settle(module, 0.2)
        else:
            module.feed(step.format(**ports).encode() + b"\r\n")
            await _settle(module, 0.2)


# ---------------------------------------------------------------------------------------- the run

class Sink:
    """The host side of the UART: keeps the tail of what the module sent."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 65536:
            del self.buf[:-8192]

    async def drain(self) -> None:
        return None


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("atemu"):
            self.records.append(record.getMessage()[:2000])


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class FuzzFailure(AssertionError):
    pass


ANSWER = re.compile(rb"(?:^|[\r\n])OK\r")


async def _settle(module: Module, budget: float) -> None:
    """Let the module work on what it got: until it is idle or ``budget`` seconds passed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + budget
    for i in range(100000):
        await asyncio.sleep(0)
        if not module._rx.is_set() and (not module._busy or module.engine.in_data_mode
                                        or module.engine.transparent):
            return          # idle, or a data phase / transparent session waiting for more bytes
        if i > 20:
            if loop.time() > end:
                return
            await asyncio.sleep(0.0005)


async def answers_at(module: Module, sink: Sink, stats: dict, deadline: float = 240.0) -> None:
    """Get an answer to ``AT`` the way a host would: a fresh line, Esc, Ctrl+Z, ``+++`` with guard
    times, a ``#`` marker, filling a data phase, the wake pin, or staying silent until the module's
    own timeouts end what it waits for. Raises FuzzFailure when nothing works within ``deadline``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    steps = ["line", "esc", "ctrlz", "guard", "hash", "fill", "guard", "wake", "silence"]
    i = 0
    while True:
        step = steps[i % len(steps)] if i < len(steps) else steps[1 + (i - 1) % (len(steps) - 1)]
        if step == "esc":
            module.feed(b"\x1b")
        elif step == "ctrlz":
            module.feed(b"\x1a")
        elif step == "guard":
            await asyncio.sleep(1.2)
            module.feed(b"+++")
            await asyncio.sleep(1.2)
        elif step == "hash":
            module.feed(b"#")
        elif step == "fill":
            module.feed(b"\x00" * 70000)
            await _settle(module, 1.0)
        elif step == "wake":
            module.profile.wake_up()
        elif step == "silence":
            await asyncio.sleep(12.0)
        mark = len(sink.buf)
        module.feed(b"\r\nAT\r\n")
        t_end = loop.time() + (0.3 if step == "line" else 1.0)
        while loop.time() < t_end:
            await asyncio.sleep(0.002)
            if len(sink.buf) < mark:      # the sink trimmed its buffer
                mark = 0
            if ANSWER.search(bytes(sink.buf[max(0, mark - 2):])):
                stats["recovered_by"][step] = stats["recovered_by"].get(step, 0) + 1
                return
        i += 1
        if loop.time() > end:
            raise FuzzFailure(f"the module stopped answering AT; last output {bytes(sink.buf[-300:])!r}")


async def fuzz_profile(profile: str, inputs: int, seed: int, *, peers: Peers | None, batch: int = 1000,
                       rss_slack: int = 64 << 20, quiet: bool = False) -> dict:
    """Fuzz one profile; returns figures; raises FuzzFailure with seed and input number."""
    global _ACTIVE
    install_guard()
    _ACTIVE += 1
    try:
        return await _fuzz_profile(profile, inputs, seed, peers=peers, batch=batch, rss_slack=rss_slack, quiet=quiet)
    finally:
        _ACTIVE -= 1


async def _fuzz_profile(profile: str, inputs: int, seed: int, *, peers: Peers | None, batch: int,
                        rss_slack: int, quiet: bool) -> dict:
    cls = find_profile(profile)
    errs = Errors()
    logging.getLogger("atemu").addHandler(errs)
    loop = asyncio.get_running_loop()
    unhandled: list[str] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _l, ctx: unhandled.append(str(ctx.get("exception") or ctx.get("message"))))
    # what Python would print as "Exception ignored in ..." (a __del__ or a callback that raised)
    old_unraisable = sys.unraisablehook
    sys.unraisablehook = lambda u: unhandled.append(f"exception ignored in {u.object!r}: {u.exc_value!r}")
    world = World.from_dict(fuzz_world(peers))
    cls.validate_world(world)
    stats: dict = {"profile": cls.name, "seed": seed, "inputs": 0, "recovered_by": {}, "bytes_in": 0}
    with tempfile.TemporaryDirectory(prefix="atemu-fuzz-") as state:
        module = Module(cls, world=world, state_dir=state, pacing=False, name=f"fuzz-{cls.name}")
        sink = Sink()
        module.attach(sink)
        await module.start()
        gen = Generator(cls, seed, peers.ports if peers else [])
        before = peers.counts() if peers else {}
        await setup(module, peers)
        t0 = time.perf_counter()
        rss0 = None
        import collections
        last: collections.deque = collections.deque(maxlen=12)
        try:
            for n in range(inputs):
                chunks = gen.next()
                last.append(b"".join(chunks)[:200])
                for chunk in chunks:
                    module.feed(chunk)
                    stats["bytes_in"] += len(chunk)
                    await _settle(module, 0.004)
                if module.profile.wake_up():    # the host toggles the wake pin (AT+LOWPOWER, AT+powersave)
                    stats["woken"] = stats.get("woken", 0) + 1
                stats["inputs"] = n + 1
                if (n + 1) % batch == 0 or n + 1 == inputs:
                    if errs.records or unhandled:
                        raise FuzzFailure(f"input {n + 1}: {(errs.records or unhandled)[0]}")
                    await answers_at(module, sink, stats)
                    if (n + 1) % (batch * 5) == 0:
                        await setup(module, peers)      # join again, reopen sockets and sessions
                    now = rss()
                    if rss0 is None and n + 1 >= min(inputs, 20 * batch):
                        rss0 = now
                    stats["rss_mb"] = round(now / 2**20, 1)
                    if rss0 is not None and now - rss0 > rss_slack:
                        raise FuzzFailure(f"input {n + 1}: resident memory grew {(now - rss0) >> 20} MB "
                                          f"after warm-up (limit {rss_slack >> 20} MB)")
                    if not quiet and (n + 1) % (batch * int(os.environ.get("FUZZ_REPORT", "50"))) == 0:
                        el = time.perf_counter() - t0
                        print(f"fuzz {cls.name}: {n + 1} inputs, {(n + 1) / el:.0f}/s, rss {stats['rss_mb']} MB",
                              file=sys.stderr, flush=True)
            if errs.records or unhandled:
                raise FuzzFailure(f"after input {inputs}: {(errs.records or unhandled)[0]}")
        except FuzzFailure as e:
            stats["last_inputs"] = list(last)
            raise FuzzFailure(f"{cls.name} seed {seed}: {e}; last inputs: {list(last)!r}") from None
        finally:
            stats["seconds"] = round(time.perf_counter() - t0, 1)
            stats["rate"] = round(stats["inputs"] / max(stats["seconds"], 1e-6))
            stats["rss_growth_mb"] = round((rss() - rss0) / 2**20, 1) if rss0 is not None else None
            stats["commands"] = sum(module.coverage.values())
            stats["covered"] = len(module.coverage)
            if peers:
                stats["peers"] = {k: v - before.get(k, 0) for k, v in peers.counts().items()}
            await module.stop()
            logging.getLogger("atemu").removeHandler(errs)
            loop.set_exception_handler(old_handler)
            sys.unraisablehook = old_unraisable
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", action="append", help="profile(s) to fuzz (default: all installed)")
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    profiles = a.profile or sorted(installed_profiles())
    results, failed = [], None

    async def run() -> None:
        nonlocal failed
        with Peers() as peers:
            for p in profiles:
                try:
                    s = await fuzz_profile(p, a.inputs, a.seed, peers=peers, batch=a.batch)
                except FuzzFailure as e:
                    failed = str(e)
                    print(f"fuzz: FAILED {e}", file=sys.stderr)
                    return
                results.append(s)
                print(f"fuzz {s['profile']}: {s['inputs']} inputs in {s['seconds']} s ({s['rate']}/s), "
                      f"{s['commands']} commands, {s['covered']} forms covered, rss {s['rss_mb']} MB "
                      f"(growth after warm-up {s['rss_growth_mb']} MB), recoveries {s['recovered_by']}, "
                      f"peers {s.get('peers')}: ok",
                      flush=True)
    asyncio.run(run())
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "failed": failed}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
