"""Tests of atemu.net errors, DNS resolver, ping, SNTP and the test PKI."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import stat
import time

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from atemu.net.dns import Resolver, ip_family, is_ip_literal, parse_server
from atemu.net.errors import KINDS, NetError, classify
from atemu.net.ping import PERM_HELP, PingResult, ping, summarize
from atemu.net.sntp import from_ntp, sntp_query, to_ntp
from peers.certs import CLIENT_CN, make_pki
from peers.dns import DnsServer
from peers.servers import SntpServer


def run(coro, timeout: float = 10.0):
    """Run a coroutine on a fresh event loop with an overall timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "exc, kind",
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "reset"),
        (BrokenPipeError(errno.EPIPE, "pipe"), "reset"),
        (OSError(errno.ENETUNREACH, "net unreachable"), "unreachable"),
        (OSError(errno.EHOSTUNREACH, "host unreachable"), "unreachable"),
        (OSError(errno.EADDRINUSE, "in use"), "addrinuse"),
        (OSError(errno.ETIMEDOUT, "timed out"), "timeout"),
        (PermissionError(errno.EACCES, "denied"), "perm"),
        (OSError(errno.EINVAL, "invalid"), "invalid"),
        (OSError(errno.ENOTCONN, "not connected"), "closed"),
        (OSError(errno.ENOSPC, "odd"), "other"),
        (asyncio.TimeoutError(), "timeout"),
        (socket.timeout("timed out"), "timeout"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "dns"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls_verify"),
        (ssl.SSLError(1, "handshake failure"), "tls"),
        (ValueError("bad"), "invalid"),
        (RuntimeError("weird"), "other"),
    ],
)
def test_classify_maps_exceptions(exc, kind):
    err = classify(exc, "ctx")
    assert isinstance(err, NetError) and err.kind == kind
    assert err.message.startswith("ctx: ")
    assert str(err).startswith(kind + ": ")


def test_neterror_rejects_unknown_kind_and_passes_through():
    with pytest.raises(ValueError):
        NetError("bogus")
    e = NetError("closed")
    assert classify(e) is e and e.message and e.kind in KINDS


# ------------------------------------------------------------------------- DNS
def test_ip_literal_helpers():
    assert ip_family("10.1.2.3") == socket.AF_INET
    assert ip_family("[::1]") == socket.AF_INET6 and ip_family("fe80::1%eth0") == socket.AF_INET6
    assert not is_ip_literal("localhost") and not is_ip_literal("") and not is_ip_literal("300.1.1.1")


def test_resolver_literals_overrides_and_runtime_edits():
    async def main():
        r = Resolver({"Broker.Example": "127.0.0.5"})
        assert await r.resolve("10.9.8.7") == ["10.9.8.7"]
        assert await r.resolve("[::1]") == ["::1"]
        assert await r.resolve("broker.example") == ["127.0.0.5"]
        assert await r.resolve("BROKER.EXAMPLE.") == ["127.0.0.5"]
        # override beats the system resolver, even for localhost
        r.hosts["localhost"] = "127.0.0.9"
        assert await r.resolve_one("localhost") == "127.0.0.9"
        r.hosts["multi.test"] = ["::1", "127.0.0.3", "127.0.0.3"]
        assert await r.resolve("multi.test") == ["127.0.0.3", "::1"]
        assert await r.resolve("multi.test", family=socket.AF_INET6) == ["::1"]
        r.hosts["alias.test"] = "broker.example"
        assert await r.resolve("alias.test") == ["127.0.0.5"]
        del r.hosts["localhost"]
        assert "127.0.0.1" in await r.resolve("localhost")  # from /etc/hosts
        with pytest.raises(NetError) as ei:
            await r.resolve("127.0.0.1", family=socket.AF_INET6)
        assert ei.value.kind == "dns"
        with pytest.raises(NetError) as ei:
            await r.resolve("")
        assert ei.value.kind == "invalid"

    run(main())


def test_resolver_shares_the_given_dict():
    table: dict[str, str] = {}
    r = Resolver(table)
    table["late.test"] = "127.0.0.7"
    assert run(r.resolve_one("late.test")) == "127.0.0.7"


def test_resolver_faults():
    async def main():
        r = Resolver({"a.test": "127.0.0.1"})
        r.fault = "fail"
        with pytest.raises(NetError) as e1:
            await r.resolve("a.test")
        assert await r.resolve("127.0.0.1") == ["127.0.0.1"]  # literals need no DNS
        r.fault = "timeout"
        t0 = time.monotonic()
        with pytest.raises(NetError) as e2:
            await r.resolve("a.test", timeout=0.3)
        elapsed = time.monotonic() - t0
        r.fault = None
        assert await r.resolve("a.test") == ["127.0.0.1"]
        return e1.value.kind, e2.value.kind, elapsed

    k1, k2, elapsed = run(main())
    assert (k1, k2) == ("dns", "dns_timeout") and 0.25 < elapsed < 2


def test_resolver_timeout_does_not_block_the_loop():
    async def main():
        r = Resolver()
        r.fault = "timeout"
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.ensure_future(ticker())
        with pytest.raises(NetError):
            await r.resolve("x.test", timeout=0.3)
        t.cancel()
        return ticks

    assert run(main()) > 10


# ------------------------------------------------------------------------ ping
needs_raw = pytest.mark.skipif(os.geteuid() != 0, reason="raw ICMP needs root")


@needs_raw
def test_resolver_asks_its_dns_servers():
    recs = {"a.test": [("A", "10.0.0.1"), ("A", "10.0.0.2"), ("AAAA", "2001:db8::1")],
            "v6.test": [("AAAA", "2001:db8::6")], "alias.test": [("CNAME", "a.test")],
            "empty.test": [("CNAME", "a.test")]}
    with DnsServer(recs) as srv, DnsServer(recs, follow_cname=False) as lazy, DnsServer(silent=True) as dead:
        async def main():
            r = Resolver({"over.test": "10.9.9.9"})
            r.servers = ["0.0.0.0", srv.address]
            assert await r.resolve("a.test") == ["10.0.0.1", "10.0.0.2"]
            assert await r.resolve("A.TEST.", family=socket.AF_INET6) == ["2001:db8::1"]
            # no A record: AAAA is asked next when no family is given
            assert await r.resolve("v6.test") == ["2001:db8::6"]
            assert await r.resolve("alias.test") == ["10.0.0.1", "10.0.0.2"]
            assert await r.resolve("over.test") == ["10.9.9.9"]          # overrides first
            with pytest.raises(NetError) as ei:
                await r.resolve("v6.test", family=socket.AF_INET)
            assert ei.value.kind == "dns"
            with pytest.raises(NetError) as ei:
                await r.resolve("missing.test")
            assert ei.value.kind == "dns"
            # a server that gives only the alias: its end is asked for
            r.servers = [lazy.address]
            assert await r.resolve("empty.test", family=socket.AF_INET) == ["10.0.0.1", "10.0.0.2"]
            assert lazy.queries == [("empty.test", 1), ("a.test", 1)]
            # a closed port (ICMP refused), then a silent server, then one that answers
            r.servers = ["127.0.0.1:1", dead.address, srv.address]
            r.dns_try_timeout = 0.3
            assert await r.resolve("a.test") == ["10.0.0.1", "10.0.0.2"]
            r.servers = [dead.address]
            with pytest.raises(NetError) as ei:
                await r.resolve("a.test", timeout=5)
            assert ei.value.kind == "dns_timeout"
            r.servers = ["127.0.0.1:1"]
            with pytest.raises(NetError) as ei:
                await r.resolve("a.test")
            assert ei.value.kind == "dns"
            r.servers.clear()
            assert await r.resolve("localhost", family=socket.AF_INET) == ["127.0.0.1"]
        run(main())
        assert srv.queries[:3] == [("a.test", 1), ("a.test", 28), ("v6.test", 1)]   # names go out in lower case
        assert dead.queries.count(("a.test", 1)) == 3      # once in the first lookup, two rounds alone


def test_parse_dns_server():
    assert parse_server("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_server(" 127.0.0.1:5300 ") == ("127.0.0.1", 5300)
    assert parse_server("::1") == ("::1", 53)
    assert parse_server("[::1]:5353") == ("::1", 5353)
    for bad in ("dns.test", "1.2.3.4:0", "1.2.3.4:x", "[::1]x", "", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_server(bad)


def test_ping_loopback_ipv4():
    seen: list[PingResult] = []
    results = run(ping("127.0.0.1", count=3, size=56, interval=0.05, timeout=1.0, on_result=seen.append))
    assert [r.seq for r in results] == [1, 2, 3]
    assert all(r.ok and r.bytes == 56 and r.rtt_ms is not None and r.rtt_ms >= 0 for r in results)
    assert all(r.ttl == 64 for r in results)  # loopback: no hop decrements it
    assert len(seen) == 3
    s = summarize(results)
    assert (s.sent, s.received, s.lost, s.loss_percent) == (3, 3, 0, 0.0)
    assert s.rtt_min <= s.rtt_avg <= s.rtt_max


@needs_raw
def test_ping_loopback_ipv6():
    results = run(ping("::1", count=2, size=0, interval=0.05, timeout=1.0))
    assert [r.ok for r in results] == [True, True] and all(r.bytes == 0 for r in results)
    assert all(r.ttl is not None and r.ttl > 0 for r in results)


@needs_raw
def test_ping_sends_requests_with_requested_ttl():
    # capture our own echo requests on loopback with a second raw socket
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as spy:
        spy.setblocking(False)
        results = run(ping("127.0.0.1", count=2, size=77, interval=0.05, ttl=9, timeout=1.0))
        requests = []
        while True:
            try:
                pkt = spy.recv(65535)
            except BlockingIOError:
                break
            ihl = (pkt[0] & 0x0F) * 4
            if pkt[ihl] == 8 and len(pkt) - ihl - 8 == 77:  # echo request, our size
                requests.append(pkt[8])  # IPv4 TTL field
    assert all(r.ok for r in results)
    assert requests == [9, 9]


def test_ping_rejects_bad_arguments():
    for kwargs in ({"host_ip": "localhost"}, {"host_ip": "127.0.0.1", "count": 0},
                   {"host_ip": "127.0.0.1", "size": 70000}, {"host_ip": "127.0.0.1", "ttl": 0}):
        with pytest.raises(NetError) as ei:
            run(ping(**kwargs))
        assert ei.value.kind == "invalid"


def _gid_allowed_for_icmp_dgram() -> bool:
    try:
        lo, hi = map(int, open("/proc/sys/net/ipv4/ping_group_range").read().split())
    except OSError:
        return True
    return any(lo <= g <= hi for g in {os.getgid(), *os.getgroups()})


@pytest.mark.skipif(_gid_allowed_for_icmp_dgram(), reason="unprivileged ICMP is allowed here")
def test_ping_without_permission_explains_what_to_do():
    with pytest.raises(NetError) as ei:
        run(ping("127.0.0.1", count=1, method="dgram"))
    assert ei.value.kind == "perm"
    assert 'sysctl -w net.ipv4.ping_group_range="0 2147483647"' in ei.value.message
    assert "root" in ei.value.message and ei.value.message == PERM_HELP


@pytest.mark.skipif(not _gid_allowed_for_icmp_dgram(), reason="unprivileged ICMP not allowed here")
def test_ping_unprivileged_dgram_socket():
    results = run(ping("127.0.0.1", count=2, interval=0.05, method="dgram"))
    assert all(r.ok for r in results)


def test_summarize_counts_losses():
    rs = [PingResult(1, 32, 2.0, 64, "h"), PingResult(2, 32, None, None, "h", "timeout"),
          PingResult(3, 32, 4.0, 64, "h")]
    s = summarize(rs)
    assert (s.sent, s.received, s.lost) == (3, 2, 1)
    assert round(s.loss_percent, 2) == 33.33 and (s.rtt_min, s.rtt_avg, s.rtt_max) == (2.0, 3.0, 4.0)


# ------------------------------------------------------------------------ SNTP
def test_sntp_against_local_server(sntp_server):
    before = time.time()
    result = run(sntp_query("127.0.0.1", sntp_server.port, timeout=2))
    after = time.time()
    assert abs(result.offset - sntp_server.offset) < 0.5
    assert before + sntp_server.offset - 0.5 < result.unix_time < after + sntp_server.offset + 0.5
    assert result.stratum == 2 and result.server == "127.0.0.1" and result.version == 4
    assert 0 <= result.delay < 0.5 and result.leap == 0 and result.reference_id == "127.0.0.1"
    packet, _ = sntp_server.wait_requests(1)[0]
    assert len(packet) == 48 and packet[0] & 7 == 3 and (packet[0] >> 3) & 7 == 4


def test_sntp_negative_offset_ipv6_and_resolver():
    with SntpServer("::1", offset=-12345.0) as srv:
        r = Resolver({"time.test": "::1"})
        result = run(sntp_query("time.test", srv.port, timeout=2, resolver=r))
    assert abs(result.offset + 12345.0) < 0.5 and result.server == "::1"


def test_sntp_timeout_when_server_silent():
    with SntpServer(silent=True) as srv:
        t0 = time.monotonic()
        with pytest.raises(NetError) as ei:
            run(sntp_query("127.0.0.1", srv.port, timeout=0.3))
        assert ei.value.kind == "timeout" and 0.25 < time.monotonic() - t0 < 2
        assert len(srv.wait_requests(1)) == 1


def test_sntp_rejects_reply_with_wrong_originate_timestamp():
    with SntpServer(wrong_origin=True) as srv:
        with pytest.raises(NetError) as ei:
            run(sntp_query("127.0.0.1", srv.port, timeout=0.3))
    assert ei.value.kind == "other" and "transmit timestamp" in ei.value.message


def test_sntp_kiss_of_death_and_unsynchronized():
    with SntpServer(kiss_code="RATE") as srv:
        with pytest.raises(NetError) as ei:
            run(sntp_query("127.0.0.1", srv.port, timeout=1))
    assert ei.value.kind == "other" and "RATE" in ei.value.message
    with SntpServer(leap=3) as srv:
        with pytest.raises(NetError) as ei:
            run(sntp_query("127.0.0.1", srv.port, timeout=1))
    assert "not synchronized" in ei.value.message


def test_sntp_closed_port_is_refused_and_names_need_resolver():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NetError) as ei:
        run(sntp_query("127.0.0.1", port, timeout=2))
    assert ei.value.kind in ("refused", "timeout")
    with pytest.raises(NetError) as ei:
        run(sntp_query("pool.ntp.org", timeout=0.1))
    assert ei.value.kind == "invalid"


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_ntp_timestamp_roundtrip_including_era_1(t):
    assert abs(from_ntp(to_ntp(t)) - t) < 1e-6


def test_ntp_known_values():
    assert to_ntp(0.0) == bytes.fromhex("83aa7e80 00000000")
    assert to_ntp(1.5)[4:] == bytes.fromhex("80000000")
    # 2036-02-07 06:28:16 UTC is NTP second 2**32 -> wraps to 0 (era 1)
    assert to_ntp(2085978496.0)[:4] == b"\0\0\0\0"
    assert from_ntp(b"\0" * 8) == 2085978496.0


# ------------------------------------------------------------------------- PKI
def test_pki_files_modes_and_contents(tmp_path):
    pki = make_pki(tmp_path / "p", hostnames=["broker.test", "10.1.2.3"])
    assert stat.S_IMODE(os.stat(pki.directory).st_mode) == 0o755
    for name in ("ca_cert", "server_key", "client_cert", "expired_cert", "unknown_key", "other_client_cert"):
        assert stat.S_IMODE(os.stat(getattr(pki, name)).st_mode) == 0o644
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"broker.test", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1", "::1"}
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    assert client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == CLIENT_CN
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    expired = x509.load_pem_x509_certificate(pki.expired_cert.read_bytes())
    assert expired.not_valid_after_utc.timestamp() < time.time()
    unknown = x509.load_pem_x509_certificate(pki.unknown_cert.read_bytes())
    other_ca = x509.load_pem_x509_certificate(pki.other_ca_cert.read_bytes())
    assert unknown.issuer == other_ca.subject and unknown.issuer != server.issuer
    assert pki.der(pki.ca_cert)[:1] == b"\x30" and pki.der(pki.client_key)[:1] == b"\x30"
