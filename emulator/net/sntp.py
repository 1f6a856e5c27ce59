"""Minimal real SNTP v4 client (RFC 4330) over asyncio UDP."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from dataclasses import dataclass

from .dns import Resolver, _strip_brackets, ip_family
from .errors import NetError, classify

__all__ = ["SntpResult", "sntp_query", "NTP_EPOCH_OFFSET", "to_ntp", "from_ntp"]

#: Seconds between the NTP epoch (1900-01-01) and the Unix epoch.
NTP_EPOCH_OFFSET = 2208988800
_ERA = 1 << 32


def to_ntp(unix_time: float) -> bytes:
    """Encode Unix time as a 64-bit NTP timestamp (era wrap after 2036 handled)."""
    whole = int(unix_time // 1)
    frac = int((unix_time - whole) * _ERA) & 0xFFFFFFFF
    return struct.pack("!II", (whole + NTP_EPOCH_OFFSET) % _ERA, frac)


def from_ntp(data: bytes) -> float:
    """Decode a 64-bit NTP timestamp to Unix time.  Seconds values with the
    top bit clear are taken as era 1 (2036-2104), per RFC 4330 section 3."""
    secs, frac = struct.unpack("!II", data[:8])
    if secs & 0x80000000 == 0:
        secs += _ERA
    return secs - NTP_EPOCH_OFFSET + frac / _ERA


@dataclass(frozen=True)
class SntpResult:
    """One SNTP answer.  ``unix_time`` is the corrected current time when the
    reply arrived (local clock + ``offset``); ``offset`` is server minus local
    clock and ``delay`` the round-trip delay, both in seconds."""

    unix_time: float
    offset: float
    stratum: int
    server: str
    delay: float = 0.0
    leap: int = 0
    version: int = 4
    reference_id: str = ""
    transmit_time: float = 0.0


class _Proto(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.queue.put_nowait((data, time.time()))

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait((exc, time.time()))


def _refid(stratum: int, raw: bytes) -> str:
    if stratum <= 1:
        return raw.rstrip(b"\0").decode("ascii", "replace")
    return socket.inet_ntoa(raw)


async def sntp_query(
    server_ip: str,
    port: int = 123,
    *,
    timeout: float = 5.0,
    resolver: Resolver | None = None,
    version: int = 4,
) -> SntpResult:
    """Send one SNTP client request to ``server_ip``:``port`` and return the
    validated answer.  ``server_ip`` may be a host name when ``resolver`` is
    given.  Replies that are too short, not mode 4 (server), or do not echo
    our transmit timestamp are ignored.  Raises NetError: "timeout" (no valid
    answer in ``timeout`` s), "refused" (ICMP port unreachable), "other"
    (kiss-o'-death, unsynchronized server, or only bogus replies), "invalid"."""
    host = _strip_brackets(server_ip) if isinstance(server_ip, str) else server_ip
    if not ip_family(host):
        if resolver is None:
            raise NetError("invalid", f"SNTP server must be an IP address, got {server_ip!r}")
        host = await resolver.resolve_one(host, timeout=timeout)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise NetError("invalid", f"invalid port {port!r}")
    if version not in (1, 2, 3, 4):
        raise NetError("invalid", f"bad NTP version {version}")

    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Proto, remote_addr=(host, port), family=ip_family(host)
        )
    except OSError as exc:
        raise classify(exc, f"sntp {host}:{port}") from exc
    try:
        t1 = time.time()
        # Transmit timestamp = our clock with random low fraction bits: the
        # server must echo these exact 8 bytes as originate timestamp.
        xmit = to_ntp(t1)[:6] + os.urandom(2)
        t1 = from_ntp(xmit)
        request = bytes([(0 << 6) | (version << 3) | 3]) + b"\0" * 39 + xmit
        transport.sendto(request)
        deadline = loop.time() + timeout
        bogus: str | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                data, t4 = await asyncio.wait_for(proto.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if isinstance(data, Exception):
                err = classify(data, f"sntp {host}:{port}")
                if err.kind in ("refused", "unreachable"):
                    raise err
                continue
            if len(data) < 48:
                bogus = f"short reply ({len(data)} bytes)"
                continue
            leap, vn, mode = data[0] >> 6, (data[0] >> 3) & 7, data[0] & 7
            if mode != 4:
                bogus = f"reply has mode {mode}, expected 4"
                continue
            if data[24:32] != xmit:
                bogus = "reply does not echo our transmit timestamp"
                continue
            stratum = data[1]
            if stratum == 0:
                code = data[12:16].rstrip(b"\0").decode("ascii", "replace")
                raise NetError("other", f"SNTP server sent kiss-o'-death {code!r}")
            if leap == 3:
                raise NetError("other", "SNTP server clock is not synchronized")
            if data[40:48] == b"\0" * 8:
                bogus = "reply has zero transmit timestamp"
                continue
            t2 = from_ntp(data[32:40])
            t3 = from_ntp(data[40:48])
            offset = ((t2 - t1) + (t3 - t4)) / 2.0
            delay = max(0.0, (t4 - t1) - (t3 - t2))
            return SntpResult(
                unix_time=t4 + offset,
                offset=offset,
                stratum=stratum,
                server=host,
                delay=delay,
                leap=leap,
                version=vn,
                reference_id=_refid(stratum, data[12:16]),
                transmit_time=t3,
            )
        if bogus:
            raise NetError("other", f"no valid SNTP answer from {host}:{port}: {bogus}")
        raise NetError("timeout", f"no SNTP answer from {host}:{port} within {timeout:g}s")
    finally:
        transport.close()
