"""A small mDNS / DNS-SD responder (RFC 6762, RFC 6763) on the host's multicast.

One responder per emulated module: it answers real multicast DNS queries for the module's host
name (``<host>.local`` A) and for one advertised service (``<type>.local`` PTR, ``<name>.<type>.local``
SRV and TXT, and the ``_services._dns-sd._udp.local`` enumeration). The address it gives is the
module's (emulated) station address. It listens on ``group:port`` (224.0.0.251:5353 by default)
joined on one interface address (127.0.0.1 by default: traffic stays on the loopback unless the
world chooses another interface). A query from a port other than the mDNS port is a "legacy
unicast" query (RFC 6762 section 6.7): the answer goes back to the sender with the query's id; other
answers are multicast to the group. On start the responder announces its records once.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Callable

from .dns import decode_name

log = logging.getLogger("atemu.mdns")

GROUP = "224.0.0.251"
PORT = 5353
A, PTR, TXT, SRV, ANY = 1, 12, 16, 33, 255
IN, CACHE_FLUSH = 1, 0x8000
TTL = 120
SERVICES = "_services._dns-sd._udp.local"


@dataclass
class Service:
    name: str                 # instance name, e.g. "My Device"
    type: str                 # e.g. "_http._tcp"
    port: int
    txt: list[bytes] = field(default_factory=list)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("utf-8")[:63]
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def parse_questions(msg: bytes) -> tuple[int, int, list[tuple[str, int, bool]]]:
    """(id, flags, [(name, type, unicast-response bit)]) of a DNS message."""
    if len(msg) < 12:
        raise ValueError("short message")
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    off, qs = 12, []
    for _ in range(qd):
        name, off = decode_name(msg, off)
        if off + 4 > len(msg):
            raise ValueError("short question")
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        off += 4
        qs.append((name, qtype, bool(qclass & 0x8000)))
    return qid, flags, qs


def _rr(name: str, rtype: int, data: bytes, ttl: int, flush: bool) -> bytes:
    return encode_name(name) + struct.pack("!HHIH", rtype, IN | (CACHE_FLUSH if flush else 0), ttl, len(data)) + data


class MdnsResponder:
    """Answers mDNS queries for ``host``.local and an optional :class:`Service`; ``address()`` gives
    the IPv4 address to announce (None: the module has none, nothing is answered)."""

    def __init__(self, host: str, address: Callable[[], str | None], service: Service | None = None, *,
                 iface: str = "127.0.0.1", port: int = PORT, group: str = GROUP) -> None:
        self.host = host
        self.address = address
        self.service = service
        self.iface = iface
        self.port = port
        self.group = group
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0

    @property
    def host_name(self) -> str:
        return f"{self.host}.local"

    def _service_names(self) -> tuple[str, str] | None:
        if self.service is None or not self.service.type:
            return None
        stype = self.service.type.rstrip(".")
        if stype.endswith(".local"):
            stype = stype[:-6]
        return f"{stype}.local", f"{self.service.name or self.host}.{stype}.local"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(("", self.port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            socket.inet_aton(self.group) + socket.inet_aton(self.iface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.iface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        self.announce()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def announce(self) -> None:
        """One unsolicited response with every record (RFC 6762 section 8.3)."""
        names = self._service_names()
        answers, extra = self._answers([(self.host_name, A, False)] + ([(names[0], PTR, False)] if names else []))
        if answers and self.transport is not None:
            self.transport.sendto(self._message(0, [], (answers + extra, []), TTL), (self.group, self.port))

    # ------------------------------------------------------------------ answering
    def _records(self, name: str, qtype: int) -> list[tuple[str, int, bytes, bool]]:
        """Records (name, type, rdata, unique) answering one question."""
        ip = self.address()
        out: list[tuple[str, int, bytes, bool]] = []
        lname = name.lower()
        names = self._service_names()
        if lname == self.host_name.lower() and qtype in (A, ANY) and ip:
            out.append((self.host_name, A, socket.inet_aton(ip), True))
        if names and ip:
            stype, inst = names
            if lname == stype.lower() and qtype in (PTR, ANY):
                out.append((stype, PTR, encode_name(inst), False))
            if lname == inst.lower() and qtype in (SRV, ANY):
                out.append((inst, SRV, struct.pack("!HHH", 0, 0, self.service.port) + encode_name(self.host_name), True))
            if lname == inst.lower() and qtype in (TXT, ANY):
                txt = b"".join(bytes([len(t[:255])]) + t[:255] for t in self.service.txt) or b"\0"
                out.append((inst, TXT, txt, True))
            if lname == SERVICES and qtype in (PTR, ANY):
                out.append((SERVICES, PTR, encode_name(stype), False))
        return out

    def _answers(self, questions) -> tuple[list, list]:
        """(answers, additional records) for ``questions``."""
        answers: list[tuple[str, int, bytes, bool]] = []
        for name, qtype, _ in questions:
            for rec in self._records(name, qtype):
                if rec not in answers:
                    answers.append(rec)
        # additional records a resolver needs (PTR -> SRV, TXT, A; SRV -> A)
        names = self._service_names()
        extra = []
        if names and any(r[1] == PTR and r[0] == names[0] for r in answers):
            extra += self._records(names[1], SRV) + self._records(names[1], TXT)
        if any(r[1] == SRV for r in answers + extra):
            extra += self._records(self.host_name, A)
        additional: list[tuple[str, int, bytes, bool]] = []
        for r in extra:
            if r not in answers and r not in additional:
                additional.append(r)
        return answers, additional

    @staticmethod
    def _message(qid: int, questions, records: tuple[list, list], ttl: int) -> bytes:
        answers, additional = records
        head = struct.pack("!HHHHHH", qid, 0x8400, len(questions), len(answers), 0, len(additional))
        body = b"".join(encode_name(n) + struct.pack("!HH", t, IN) for n, t, _ in questions)
        body += b"".join(_rr(n, t, d, ttl, u and ttl > 10) for n, t, d, u in answers + additional)
        return head + body

    def handle(self, data: bytes, addr) -> None:
        try:
            qid, flags, questions = parse_questions(data)
        except ValueError:
            return
        if flags & 0x8000 or not questions:           # a response, not a query
            return
        answers = self._answers(questions)
        if not answers[0] or self.transport is None:
            return
        self.answered += 1
        if addr[1] != self.port:                       # legacy unicast: to the sender, its id, short TTL
            self.transport.sendto(self._message(qid, questions, answers, 10), addr)
            return
        if all(qu for _, _, qu in questions):          # QU questions: a unicast response
            self.transport.sendto(self._message(0, [], answers, TTL), addr)
            return
        self.transport.sendto(self._message(0, [], answers, TTL), (self.group, self.port))


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, responder: MdnsResponder) -> None:
        self.responder = responder

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.responder.handle(data, addr)
        except Exception:                              # a bad packet never stops the responder
            log.exception("mDNS packet from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("mDNS: %s", exc)
