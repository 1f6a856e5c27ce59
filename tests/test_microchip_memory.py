"""microchip family: a long fuzz session accumulates nothing.

Issue 16 reported RSS growing 4.7 MB per 5-minute fuzz run of microchip-winc. Measured in-process
(figures in the report of issue 11): RSS grows ~3 MB during the first few hundred fuzz lines and
then stays flat (65.0 -> 65.1 MB over 4800 more lines): the first AT+READCERT / AT+LOADCERT import
and initialise `cryptography` (x509, EC key generation, ~1.8 MB) and TLS contexts load the CA
store; nothing grows per command. This test keeps it so: after a warm-up batch, a second batch of
the same fuzz must not leave more than a little Python memory behind (tracemalloc).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import random
import tracemalloc

import pytest

from atemu.module import Module
from atemu.profile import find_profile
from atemu.world import World
from test_microchip_fuzz import BINARY, NAMES, VALUES, plausible
from test_microchip_util import WORLD


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


async def _session(profile: str, tmp_path, lines: int) -> int:
    prefix = find_profile(profile).option_prefix or profile
    world = World.from_dict(dict(WORLD, options={f"{prefix}.data_timeout": 0.05, f"{prefix}.ack_timeout": 0.2}))
    m = Module(find_profile(profile), world=world, state_dir=tmp_path, pacing=False)
    m.attach(_Sink())
    await m.start()
    for line in (b'AT+WSTAC=1,"MyAP"', b"AT+WSTAC=2,3", b'AT+WSTAC=3,"MyAPPSK-123"', b"AT+WSTA=1"):
        m.feed(line + b"\r\n")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    m.resolver.fault = "fail"                  # no name ever reaches a DNS server
    rnd = random.Random(7)

    async def batch() -> None:
        for _ in range(lines):
            name = rnd.choice(NAMES)
            if rnd.random() < 0.4:
                line = plausible(rnd)
                name = line[2:].split("=", 1)[0]
            else:
                line = "AT" + name + "=" + ",".join(rnd.choice(VALUES) for _ in range(rnd.randint(1, 6)))
            if "LOWPOWER" in line:
                continue
            m.feed(line.encode() + b"\r\n")
            if name in BINARY:
                m.feed(bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 40))) + b"#"
                       + bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300))) + b"+++")
            if rnd.random() < 0.1:
                m.feed(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300))))
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
        m.feed(b"\r\nAT\r\n")
        await asyncio.sleep(0.1)

    try:
        await batch()                          # warm-up: lazy imports, caches, sockets opened
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await batch()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        assert len(m.tasks) < 10 and not m._deferred
        return grown
    finally:
        tracemalloc.stop()
        await m.stop()


@pytest.mark.parametrize("profile", ["microchip-winc", "rnwf02"])
def test_fuzz_session_does_not_accumulate(profile, tmp_path):
    logging.disable(logging.CRITICAL)
    try:
        grown = asyncio.run(_session(profile, tmp_path, 600))
    finally:
        logging.disable(logging.NOTSET)
    assert grown < 48 * 1024, f"{grown} bytes left behind by 600 fuzz lines"
