"""Host name resolution for emulated modules.

Order of resolution: IP literals -> per-world overrides (``Resolver.hosts``)
-> the module's own DNS servers when its profile set some (``Resolver.servers``,
asked with :class:`DnsClient`: real UDP queries) -> otherwise the host's real
resolver (``loop.getaddrinfo``, run in a thread so the event loop never blocks).  Fault injection (``Resolver.fault``) lets a
control plane simulate a dead DNS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
import struct
from collections.abc import Iterable
from typing import Any

from .errors import NetError, classify

__all__ = ["Resolver", "DnsClient", "parse_server", "is_ip_literal", "ip_family"]

log = logging.getLogger(__name__)


def is_ip_literal(host: str) -> bool:
    """Return True if ``host`` is an IPv4 or IPv6 address literal (IPv6 may
    carry a ``%scope`` suffix and may be wrapped in ``[]``)."""
    return ip_family(host) != 0


def ip_family(host: str) -> int:
    """Return ``socket.AF_INET``/``AF_INET6`` for an IP literal, else 0."""
    if not isinstance(host, str) or not host:
        return 0
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return 0
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _family_ok(ip: str, family: int) -> bool:
    return family in (0, socket.AF_UNSPEC) or ip_family(ip) == family


def _order(ips: Iterable[str]) -> list[str]:
    """Deduplicate preserving order, IPv4 addresses first."""
    seen: list[str] = []
    for ip in ips:
        if ip not in seen:
            seen.append(ip)
    return sorted(seen, key=lambda ip: 0 if ip_family(ip) == socket.AF_INET else 1)


class Resolver:
    """Asynchronous name resolver with runtime-editable overrides and faults.

    ``hosts`` maps hostname -> IP (or a list of IPs, or another hostname used
    as an alias); lookups are case-insensitive and ignore a trailing dot.  The
    dict passed in is used as-is (not copied), so a control plane may share
    and edit it at runtime.  ``fault`` is ``None``, ``"fail"`` (every name
    lookup raises ``NetError("dns")``) or ``"timeout"`` (every name lookup waits
    for the caller's timeout then raises ``NetError("dns_timeout")``).  Faults
    do not affect IP literals, which never need a lookup.
    """

    def __init__(self, hosts: dict[str, str] | None = None):
        self.hosts: dict[str, str] = hosts if hosts is not None else {}
        self.fault: str | None = None
        #: DNS servers the module was configured with (``"a.b.c.d"`` or ``"a.b.c.d:port"``; a
        #: profile may hand its own list and edit it in place). Unspecified addresses
        #: (``0.0.0.0``) do not count; with none, names go to the host's resolver.
        self.servers: list[str] = []
        self.dns_try_timeout = 2.0      # seconds a query waits for one server's answer
        self.dns_attempts = 2           # rounds over the servers

    def _override(self, name: str):
        key = name.rstrip(".").lower()
        for k, v in list(self.hosts.items()):
            if isinstance(k, str) and k.rstrip(".").lower() == key:
                return v
        return None

    async def resolve(self, host: str, *, family: int = 0, timeout: float = 10.0) -> list[str]:
        """Resolve ``host`` to a non-empty list of IP strings (deduplicated,
        IPv4 first), optionally restricted to ``family`` (AF_INET/AF_INET6).
        Raises ``NetError`` kind ``"dns"``, ``"dns_timeout"`` or ``"invalid"``."""
        return await self._resolve(host, family, timeout, depth=0)

    async def resolve_one(self, host: str, *, family: int = 0, timeout: float = 10.0) -> str:
        """Resolve ``host`` and return the preferred (first) address."""
        return (await self.resolve(host, family=family, timeout=timeout))[0]

    async def _resolve(self, host: str, family: int, timeout: float, depth: int) -> list[str]:
        if not isinstance(host, str) or not host.strip():
            raise NetError("invalid", f"empty or invalid host name {host!r}")
        host = host.strip()
        literal = _strip_brackets(host)
        fam = ip_family(literal)
        if fam:
            if not _family_ok(literal, family):
                raise NetError("dns", f"{host} is not an address of the requested family")
            return [literal]

        faults = getattr(self, "faults", None)  # the module's fault registry (emulator/faults.py)
        if faults is not None:
            await faults.before_lookup(host, timeout)
        if self.fault == "fail":
            raise NetError("dns", f"cannot resolve {host}: DNS failure (injected)")
        if self.fault == "timeout":
            await asyncio.sleep(max(0.0, timeout))
            raise NetError("dns_timeout", f"cannot resolve {host}: DNS timeout (injected)")

        override = self._override(host)
        if override is not None:
            values = [override] if isinstance(override, str) else list(override)
            result: list[str] = []
            for value in values:
                if is_ip_literal(value):
                    value = _strip_brackets(value)
                    if _family_ok(value, family):
                        result.append(value)
                elif depth < 8:
                    try:
                        result.extend(await self._resolve(value, family, timeout, depth + 1))
                    except NetError:
                        pass
            if not result:
                raise NetError("dns", f"cannot resolve {host}: override {override!r} has no usable address")
            return _order(result)

        client = DnsClient(self.servers, try_timeout=self.dns_try_timeout, attempts=self.dns_attempts)
        if client.servers:
            return await self._ask_servers(client, host, family, timeout)

        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM),
                timeout,
            )
        except asyncio.TimeoutError:
            raise NetError("dns_timeout", f"cannot resolve {host}: timed out after {timeout:g}s") from None
        except (OSError, UnicodeError) as exc:
            err = classify(exc, f"cannot resolve {host}")
            raise NetError("dns", err.message, errno=err.errno) from exc
        ips = [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        if not ips:
            raise NetError("dns", f"cannot resolve {host}: no addresses")
        return _order(ips)

    @staticmethod
    async def _ask_servers(client: "DnsClient", host: str, family: int, timeout: float) -> list[str]:
        """The configured servers: A (or AAAA for AF_INET6); with no family, AAAA only when the
        name has no A record."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        qtypes = [QTYPE_AAAA] if family == socket.AF_INET6 else [QTYPE_A] if family == socket.AF_INET \
            else [QTYPE_A, QTYPE_AAAA]
        for qtype in qtypes:
            ips = await client.lookup(host, qtype, deadline - loop.time())
            if ips:
                return _order(ips)
        raise NetError("dns", f"cannot resolve {host}: no address record")


# ---------------------------------------------------------------------------------------------
# A small DNS client (RFC 1035 over UDP): the servers a profile configures (AT+DNSC...) are
# really asked.  A and AAAA queries, a random id per query, answers matched on id and question,
# CNAME chains followed inside the answer (and asked again for the chain's end when the server
# gave only the alias), each server in turn for a number of rounds.

DNS_PORT = 53
QTYPE_A, QTYPE_CNAME, QTYPE_AAAA = 1, 5, 28
RCODE_NXDOMAIN = 3


def parse_server(text: str) -> tuple[str, int]:
    """``"a.b.c.d"``, ``"a.b.c.d:port"``, ``"x::y"`` or ``"[x::y]:port"`` -> (ip, port).
    Raises ValueError for anything else (names are not accepted: a DNS server is an address)."""
    s = str(text).strip()
    port = DNS_PORT
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep:
            raise ValueError(f"bad DNS server {text!r}")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad DNS server {text!r}")
            port = int(rest[1:])
        s = host
    elif s.count(":") == 1:
        s, p = s.split(":")
        port = int(p)
    ipaddress.ip_address(s)
    if not 0 < port < 65536:
        raise ValueError(f"bad DNS server port in {text!r}")
    return s, port


def _usable(server: str) -> tuple[str, int] | None:
    try:
        ip, port = parse_server(server)
    except (ValueError, TypeError):
        return None
    return None if ipaddress.ip_address(ip).is_unspecified else (ip, port)


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        try:
            raw = label.encode("idna") if label else b""
        except UnicodeError:
            raw = b""
        if not raw or len(raw) > 63:
            raise NetError("invalid", f"bad host name {name!r}")
        out += bytes([len(raw)]) + raw
    if len(out) > 254:
        raise NetError("invalid", f"host name too long: {name!r}")
    return bytes(out) + b"\0"


def _ascii(name: str) -> str:
    """``name`` as it goes on the wire (IDNA labels), lower case, no trailing dot."""
    wire, i, labels = encode_name(name), 0, []
    while wire[i]:
        labels.append(wire[i + 1:i + 1 + wire[i]].decode("ascii"))
        i += 1 + wire[i]
    return ".".join(labels).lower()


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A standard query with recursion desired."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


def decode_name(msg: bytes, off: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``off``: (dotted name, offset after it). Raises ValueError
    when malformed. Shared by the DNS client and the mDNS responder."""
    labels: list[str] = []
    end = -1
    for _ in range(128):
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise ValueError("bad pointer")
            if end < 0:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n & 0xC0:
            raise ValueError("bad label")
        off += 1
        if n == 0:
            return ".".join(labels), (end if end >= 0 else off)
        labels.append(msg[off:off + n].decode("utf-8", "replace"))
        off += n
    raise ValueError("name loop")


def parse_response(msg: bytes) -> tuple[int, int, str, int, list[tuple[str, int, Any]]]:
    """-> (id, rcode, question name, question type, answers as (name, type, value)); value is an
    address string (A/AAAA), a name (CNAME) or the raw rdata.  Raises ValueError when malformed."""
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if not flags & 0x8000:
        raise ValueError("not a response")
    i = 12
    qname, qtype = "", 0
    for k in range(qd):
        name, i = decode_name(msg, i)
        t, _c = struct.unpack("!HH", msg[i:i + 4])
        i += 4
        if k == 0:
            qname, qtype = name, t
    answers: list[tuple[str, int, Any]] = []
    for _ in range(an):
        name, i = decode_name(msg, i)
        t, _c, _ttl, ln = struct.unpack("!HHIH", msg[i:i + 10])
        i += 10
        rdata = msg[i:i + ln]
        if len(rdata) != ln:
            raise ValueError("short record")
        if t == QTYPE_A and ln == 4:
            value: Any = str(ipaddress.IPv4Address(rdata))
        elif t == QTYPE_AAAA and ln == 16:
            value = str(ipaddress.IPv6Address(rdata))
        elif t == QTYPE_CNAME:
            value, _ = decode_name(msg, i)
        else:
            value = rdata
        answers.append((name, t, value))
        i += ln
    return qid, flags & 0x0F, qname, qtype, answers


class _ServerFailed(Exception):
    """This server gave no usable answer (no reply, refused, SERVFAIL...): ask the next one."""

    def __init__(self, timeout: bool, why: str) -> None:
        super().__init__(why)
        self.timeout = timeout


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, qid: int, fut: asyncio.Future) -> None:
        self.qid, self.fut = qid, fut

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.fut.done() or len(data) < 12 or struct.unpack("!H", data[:2])[0] != self.qid:
            return                      # not ours (a late answer to an earlier query): keep waiting
        self.fut.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.fut.done():
            self.fut.set_exception(exc)


async def dns_query(server: tuple[str, int], name: str, qtype: int, timeout: float) -> tuple[int, list]:
    """Ask one server once: -> (rcode, answers).  Raises _ServerFailed."""
    loop = asyncio.get_running_loop()
    qid = secrets.randbits(16)
    fut: asyncio.Future = loop.create_future()
    fam = socket.AF_INET6 if ip_family(server[0]) == socket.AF_INET6 else socket.AF_INET
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Answer(qid, fut), remote_addr=server, family=fam)
    except OSError as exc:
        raise _ServerFailed(False, f"{server[0]}: {exc}") from None
    try:
        transport.sendto(build_query(qid, name, qtype))
        while True:
            try:
                data = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except (asyncio.TimeoutError, TimeoutError):
                raise _ServerFailed(True, f"{server[0]}:{server[1]} did not answer") from None
            except OSError as exc:
                raise _ServerFailed(False, f"{server[0]}:{server[1]}: {exc.strerror or exc}") from None
            try:
                _id, rcode, qn, qt, answers = parse_response(data)
            except (ValueError, IndexError, struct.error):
                raise _ServerFailed(False, f"{server[0]}:{server[1]} sent a malformed answer") from None
            if qn.rstrip(".").lower() != _ascii(name) or qt != qtype:
                fut = loop.create_future()            # an answer to another question: keep listening
                transport.get_protocol().fut = fut
                continue
            return rcode, answers
    finally:
        if not fut.done():
            fut.cancel()
        transport.close()


class DnsClient:
    """Asks ``servers`` (``"a.b.c.d"`` or ``"a.b.c.d:port"``; unspecified addresses are skipped)
    for A/AAAA records: each server in turn, ``attempts`` rounds, ``try_timeout`` seconds a try,
    all within the caller's overall timeout.  NXDOMAIN or an answer without an address ends the
    lookup (NetError "dns"); no answer from any server is NetError "dns_timeout"; servers that
    refuse (ICMP, REFUSED, SERVFAIL, malformed) are skipped, and "dns" if none answered."""

    def __init__(self, servers: Iterable[str], *, try_timeout: float = 2.0, attempts: int = 2) -> None:
        self.servers = [s for s in (_usable(x) for x in servers) if s is not None]
        self.try_timeout = try_timeout
        self.attempts = attempts

    async def lookup(self, name: str, qtype: int, timeout: float) -> list[str]:
        """The addresses of ``name`` (``[]`` when it exists without a record of ``qtype``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        target = _ascii(name)
        for _ in range(8):                              # CNAME hops asked again
            rcode, answers = await self._ask(target, qtype, deadline)
            if rcode == RCODE_NXDOMAIN:
                raise NetError("dns", f"cannot resolve {name}: no such name (NXDOMAIN)")
            # follow the chain inside the answer: qname -> CNAME -> ... -> A/AAAA
            cur = target.lower()
            for _hop in range(16):
                nxt = next((v for n, t, v in answers if t == QTYPE_CNAME and n.rstrip(".").lower() == cur), None)
                if nxt is None:
                    break
                cur = str(nxt).rstrip(".").lower()
            ips = [v for n, t, v in answers if t == qtype and n.rstrip(".").lower() == cur]
            if ips or cur == target.lower():
                return ips                               # [] : the name exists, without such a record
            target = cur                                 # the alias's end was not in the answer: ask for it
        raise NetError("dns", f"cannot resolve {name}: CNAME chain too long")

    async def _ask(self, name: str, qtype: int, deadline: float) -> tuple[int, list]:
        loop = asyncio.get_running_loop()
        timed_out, why = True, "no DNS server"
        for _round in range(max(1, self.attempts)):
            for server in self.servers:
                left = deadline - loop.time()
                if left <= 0:
                    raise NetError("dns_timeout", f"cannot resolve {name}: no answer from the DNS servers")
                try:
                    rcode, answers = await dns_query(server, name, qtype, min(self.try_timeout, left))
                except _ServerFailed as f:
                    log.debug("DNS %s: %s", name, f)
                    timed_out = timed_out and f.timeout
                    why = str(f)
                    continue
                if rcode in (0, RCODE_NXDOMAIN):
                    return rcode, answers
                timed_out = False
                why = f"{server[0]}:{server[1]} answered rcode {rcode}"
        if timed_out and self.servers:
            raise NetError("dns_timeout", f"cannot resolve {name}: no answer from the DNS servers")
        raise NetError("dns", f"cannot resolve {name}: {why}")
