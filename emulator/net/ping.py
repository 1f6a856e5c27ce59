"""Real ICMP echo ("ping") without blocking the event loop.

Uses a raw ICMP socket when the process has CAP_NET_RAW (root), otherwise an
unprivileged ``SOCK_DGRAM`` ICMP socket when the sysctl
``net.ipv4.ping_group_range`` includes the process's group.  IPv4 (ICMP) and
IPv6 (ICMPv6) are supported.  Replies are read with ``loop.add_reader``.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .dns import _strip_brackets, ip_family
from .errors import NetError, classify

__all__ = ["PingResult", "PingSummary", "ping", "summarize", "PERM_HELP"]

PERM_HELP = (
    "ICMP ping needs a raw socket (run atemu as root or give python CAP_NET_RAW) "
    "or unprivileged ICMP sockets for your group; enable those with: "
    'sudo sysctl -w net.ipv4.ping_group_range="0 2147483647"'
)

_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)  # Linux value
_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0
_ICMP6_ECHO_REQUEST, _ICMP6_ECHO_REPLY = 128, 129
_FILLER = b"abcdefghijklmnopqrstuvwabcdefghi"


@dataclass(frozen=True)
class PingResult:
    """Outcome of one echo request.  ``rtt_ms``/``ttl`` are None unless a
    reply arrived; ``error`` is None for a reply, else ``"timeout"``,
    ``"unreachable"``, ``"ttl_exceeded"`` or ``"send_failed"``.  ``bytes``
    is the reply's payload size (the requested size when there was none)."""

    seq: int
    bytes: int
    rtt_ms: float | None
    ttl: int | None
    host: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True if an echo reply was received."""
        return self.error is None


@dataclass(frozen=True)
class PingSummary:
    """Statistics over a list of PingResult (rtt values in ms, None if no reply)."""

    sent: int
    received: int
    lost: int
    loss_percent: float
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None


def summarize(results: list[PingResult]) -> PingSummary:
    """Compute sent/received/loss and min/avg/max RTT for ``results``."""
    rtts = [r.rtt_ms for r in results if r.ok and r.rtt_ms is not None]
    sent = len(results)
    received = len(rtts)
    return PingSummary(
        sent=sent,
        received=received,
        lost=sent - received,
        loss_percent=(100.0 * (sent - received) / sent) if sent else 0.0,
        rtt_min=min(rtts) if rtts else None,
        rtt_avg=(sum(rtts) / received) if rtts else None,
        rtt_max=max(rtts) if rtts else None,
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _open_socket(family: int, method: str) -> tuple[socket.socket, bool]:
    """Return (socket, is_raw)."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    errors: list[OSError] = []
    if method in ("auto", "raw"):
        try:
            return socket.socket(family, socket.SOCK_RAW, proto), True
        except PermissionError as exc:
            errors.append(exc)
        except OSError as exc:
            raise classify(exc, "ping: raw socket") from exc
    if method in ("auto", "dgram"):
        try:
            return socket.socket(family, socket.SOCK_DGRAM, proto), False
        except (PermissionError, OSError) as exc:
            if isinstance(exc, PermissionError) or exc.errno in (1, 13):
                errors.append(exc)
            else:
                raise classify(exc, "ping: ICMP datagram socket") from exc
    if method not in ("auto", "raw", "dgram"):
        raise NetError("invalid", f"unknown ping method {method!r}")
    raise NetError("perm", PERM_HELP)


async def ping(
    host_ip: str,
    *,
    count: int = 4,
    size: int = 32,
    timeout: float = 1.0,
    ttl: int = 64,
    interval: float = 1.0,
    on_result: Callable[[PingResult], object] | None = None,
    method: str = "auto",
) -> list[PingResult]:
    """Send ``count`` ICMP echo requests with ``size`` payload bytes to the IP
    literal ``host_ip``, one every ``interval`` seconds, each waiting up to
    ``timeout`` seconds for its reply; ``ttl`` sets the outgoing TTL/hop
    limit.  Returns one :class:`PingResult` per request, in sequence order
    (seq starts at 1); ``on_result`` is called as each one completes.
    ``method`` is "auto" (raw, then unprivileged), "raw" or "dgram".
    Raises NetError("perm") with instructions when ICMP is not allowed,
    NetError("invalid") for bad arguments."""
    host_ip = _strip_brackets(host_ip) if isinstance(host_ip, str) else host_ip
    family = ip_family(host_ip)
    if not family:
        raise NetError("invalid", f"ping needs an IP address, got {host_ip!r}")
    if not 1 <= count <= 65535:
        raise NetError("invalid", f"count must be 1..65535, got {count}")
    if not 0 <= size <= 65500:
        raise NetError("invalid", f"size must be 0..65500, got {size}")
    if not 1 <= ttl <= 255:
        raise NetError("invalid", f"ttl must be 1..255, got {ttl}")
    if timeout <= 0 or interval < 0:
        raise NetError("invalid", "timeout must be > 0 and interval >= 0")

    loop = asyncio.get_running_loop()
    sock, raw = _open_socket(family, method)
    v6 = family == socket.AF_INET6
    ident = random.getrandbits(16)
    token = os.urandom(min(size, 8))
    payload = token + (_FILLER * (size // len(_FILLER) + 1))[: max(0, size - len(token))]
    pending: dict[int, tuple[float, asyncio.Future]] = {}
    results: dict[int, PingResult] = {}
    dest_norm = socket.inet_pton(family, host_ip.split("%")[0])
    try:  # numeric only (no DNS); keeps an IPv6 %scope
        dest_addr = socket.getaddrinfo(host_ip, 0, family, 0, 0, socket.AI_NUMERICHOST)[0][4]
    except socket.gaierror as exc:
        sock.close()
        raise NetError("invalid", f"bad address {host_ip!r}") from exc

    def finish(seq: int, result: PingResult) -> None:
        entry = pending.pop(seq, None)
        if entry is None:
            return
        results[seq] = result
        if not entry[1].done():
            entry[1].set_result(result)
        if on_result is not None:
            try:
                on_result(result)
            except Exception:  # noqa: BLE001
                pass

    def handle(packet: bytes, ancdata: list, src: tuple, now: float) -> None:
        reply_ttl = None
        if not v6 and raw:
            if len(packet) < 20:
                return
            ihl = (packet[0] & 0x0F) * 4
            reply_ttl = packet[8]
            icmp = packet[ihl:]
        else:
            icmp = packet
            for level, kind, data in ancdata:
                if len(data) >= 4 and (
                    (level == socket.IPPROTO_IP and kind == socket.IP_TTL)
                    or (level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT)
                ):
                    reply_ttl = struct.unpack("i", data[:4])[0]
        if len(icmp) < 8:
            return
        icmp_type, _code, _ck, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
        reply_type = _ICMP6_ECHO_REPLY if v6 else _ICMP_ECHO_REPLY
        if icmp_type == reply_type:
            try:
                if socket.inet_pton(family, src[0].split("%")[0]) != dest_norm:
                    return
            except OSError:
                return
            if raw and rid != ident:
                return
            if rseq not in pending or icmp[8:] != payload:
                return
            sent_at = pending[rseq][0]
            finish(rseq, PingResult(rseq, len(icmp) - 8, round((now - sent_at) * 1000.0, 3), reply_ttl, host_ip))
            return
        # ICMP errors quoting our request (only seen on raw sockets)
        if not raw:
            return
        if v6:
            errors = {1: "unreachable", 3: "ttl_exceeded"}
            inner = icmp[8 + 40:]
        else:
            errors = {3: "unreachable", 11: "ttl_exceeded"}
            quoted = icmp[8:]
            if len(quoted) < 20:
                return
            inner = quoted[(quoted[0] & 0x0F) * 4:]
        if icmp_type not in errors or len(inner) < 8:
            return
        q_type, _qc, _qck, q_id, q_seq = struct.unpack("!BBHHH", inner[:8])
        if q_type == (_ICMP6_ECHO_REQUEST if v6 else _ICMP_ECHO_REQUEST) and q_id == ident and q_seq in pending:
            finish(q_seq, PingResult(q_seq, size, None, None, host_ip, errors[icmp_type]))

    def on_readable() -> None:
        while True:
            try:
                packet, ancdata, _flags, src = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            handle(packet, ancdata, src, loop.time())

    timers: list[asyncio.TimerHandle] = []
    try:
        sock.setblocking(False)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if not raw:
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
        loop.add_reader(sock.fileno(), on_readable)
        start = loop.time()
        waits: list[asyncio.Future] = []
        for i in range(count):
            seq = (i + 1) & 0xFFFF
            delay = start + i * interval - loop.time()
            if i and delay > 0:
                await asyncio.sleep(delay)
            req_type = _ICMP6_ECHO_REQUEST if v6 else _ICMP_ECHO_REQUEST
            header = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
            if not v6:
                header = struct.pack("!BBHHH", req_type, 0, _checksum(header + payload), ident, seq)
            fut = loop.create_future()
            waits.append(fut)
            dest = dest_addr
            try:
                pending[seq] = (loop.time(), fut)
                await loop.sock_sendto(sock, header + payload, dest)
            except OSError as exc:
                kind = classify(exc).kind
                finish(seq, PingResult(seq, size, None, None, host_ip,
                                       "unreachable" if kind == "unreachable" else "send_failed"))
                continue
            timers.append(
                loop.call_later(timeout, lambda s=seq: finish(s, PingResult(s, size, None, None, host_ip, "timeout")))
            )
        await asyncio.gather(*waits)
    finally:
        for t in timers:
            t.cancel()
        try:
            loop.remove_reader(sock.fileno())
        except (ValueError, OSError):
            pass
        sock.close()
    return [results[k] for k in sorted(results)]
