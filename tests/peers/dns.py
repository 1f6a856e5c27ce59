"""A tiny real DNS server peer (UDP on 127.0.0.1, a free port) for resolver tests.

``DnsServer(records)`` answers standard queries from ``records``: name -> list of
``("A", "1.2.3.4")``, ``("AAAA", "2001:db8::1")`` or ``("CNAME", "other.name")``; a CNAME is
followed inside the answer (as recursive servers do) unless ``follow_cname=False``. A name it
does not know gets NXDOMAIN; ``silent=True`` reads queries and never answers (a dead server);
``rcode=2`` answers every query SERVFAIL. ``queries`` lists what it was asked, ``(name, qtype)``,
in order. It is written independently of ``atemu.net.dns`` (its own encoder and parser).
"""
from __future__ import annotations

import ipaddress
import socket
import struct
import threading

__all__ = ["DnsServer"]

TYPES = {"A": 1, "CNAME": 5, "AAAA": 28}


def _name(msg: bytes, i: int) -> tuple[str, int]:
    labels = []
    while msg[i]:
        labels.append(msg[i + 1:i + 1 + msg[i]].decode())
        i += 1 + msg[i]
    return ".".join(labels), i + 1


def _enc(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


class DnsServer:
    def __init__(self, records: dict[str, list[tuple[str, str]]] | None = None, *, silent: bool = False,
                 rcode: int = 0, follow_cname: bool = True) -> None:
        self.records = {k.lower(): v for k, v in (records or {}).items()}
        self.silent, self.rcode, self.follow_cname = silent, rcode, follow_cname
        self.queries: list[tuple[str, int]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def count(self, name: str) -> int:
        return sum(1 for n, _t in self.queries if n.lower() == name.lower())

    def _serve(self) -> None:
        while True:
            try:
                msg, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                qid, _flags = struct.unpack("!HH", msg[:4])
                qname, i = _name(msg, 12)
                qtype = struct.unpack("!H", msg[i:i + 2])[0]
                question = msg[12:i + 4]
            except (struct.error, IndexError, UnicodeDecodeError):
                continue
            self.queries.append((qname, qtype))
            if self.silent:
                continue
            answers, rcode = self._answer(qname, qtype)
            if self.rcode:
                answers, rcode = [], self.rcode
            head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
            try:
                self._sock.sendto(head + question + b"".join(answers), peer)
            except OSError:
                return

    def _answer(self, qname: str, qtype: int) -> tuple[list[bytes], int]:
        name, out = qname, []
        if name.lower() not in self.records:
            return [], 3                                 # NXDOMAIN
        for _ in range(10):
            recs = self.records.get(name.lower(), [])
            cname = next((v for t, v in recs if t == "CNAME"), None)
            if cname is not None:
                out.append(self._rr(name, 5, _enc(cname)))
                if not self.follow_cname:
                    break
                name = cname
                continue
            for t, v in recs:
                if TYPES[t] == qtype:
                    out.append(self._rr(name, qtype, ipaddress.ip_address(v).packed))
            break
        return out, 0

    @staticmethod
    def _rr(name: str, rtype: int, rdata: bytes) -> bytes:
        return _enc(name) + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "DnsServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
