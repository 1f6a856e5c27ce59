"""rnwf02 against what public host code written for the real module sends and needs (README
"Checked against public host code"): each test writes the bytes the host writes (CR LF, echo left
on where the host leaves it on) and reads the way that host reads."""
from __future__ import annotations

import re
import socket

import pytest

from peers.certs import make_pki
from peers.servers import TlsEchoServer
from rnwf_helpers import Rnwf


def read_chunk(e: Rnwf, timeout: float = 5.0) -> bytes:
    """One piece as Microchip's Python demo reads it: everything up to and including a '>'."""
    return e.read_until(rb">", timeout)


def test_scan_results_arrive_as_one_prompted_piece():
    # The OOB demo (echo on) sends AT+WSCN=0 and parses one '>'-terminated piece holding every
    # +WSCNIND and the +WSCNDONE count (its Wi-Fi menu lists all APs from that one piece).
    with Rnwf(echo=True) as e:
        e.write(b"AT+WSCN=0\r\n")
        assert read_chunk(e) == b"AT+WSCN=0\r\nOK\r\n>"
        piece = read_chunk(e)
        assert piece.startswith(b'\r+WSCNIND:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n\r+WSCNIND:-57,0,1,')
        assert piece.endswith(b'\r\n\r+WSCNDONE:5\r\n>')
        lines = piece[:-1].split(b"\r\n")
        assert [x[:10] for x in lines if x] == [b"\r+WSCNIND:"] * 5 + [b"\r+WSCNDONE"]
        # what the demo does with it: drop CR, LF and quotes, split at +WSCNIND:, the last SSID
        # followed by the count
        flat = re.sub(rb'[\r\n"]', b"", piece).replace(b"+WSCNDONE:", b"\n")
        entries = flat.split(b"+WSCNIND:")[1:]
        assert entries[0] == b"-50,3,6,00:01:02:03:04:05,MyAP"
        assert entries[-1].split(b"\n") == [b"-70,1,11,24:F2:7F:A5:8B:82,", b"5>"]
        e.expect_nothing(0.3)


def test_rnwf11_tls_configuration_takes_the_ecc608_switch():
    # The OOB demo on an RNWF11 sends AT+TLSC=1,8,0 (device key from the files, not the ATECC608)
    # and stops at any error; RNWF02 has no id 8.
    with Rnwf(profile="rnwf11", echo=True) as e:
        assert e.cmd("AT+TLSC=1,8,0") == b"AT+TLSC=1,8,0\r\nOK\r\n>"
        assert e.cmd("AT+TLSC=1,8") == b"AT+TLSC=1,8\r\n+TLSC:8,0\r\nOK\r\n>"
    with Rnwf(echo=True) as e:
        assert e.cmd("AT+TLSC=1,8,0") == b'AT+TLSC=1,8,0\r\nERROR:0.4,"Invalid Parameter"\r\n>'


LONG_SNI = "file-download-files.s3-us-west-2.amazonaws.example"   # 51 characters


@pytest.fixture
def long_name_tls(tmp_path):
    pki = make_pki(tmp_path / "pki", hostnames=[LONG_SNI, "s3-us-west-2.amazonaws.example"])
    with TlsEchoServer(pki.server_cert, pki.server_key) as srv:
        yield pki, srv


def test_tls_socket_as_the_harmony_driver_opens_it(long_name_tls):
    # Microchip's Harmony driver (tls_client demo): echo off, the TLS configuration with a server
    # name longer than 32 characters, then AT+SOCKO, AT+SOCKBR and - without waiting for +SOCKIND -
    # AT+SOCKTLS; it writes its request when +SOCKTLS arrives.
    pki, srv = long_name_tls
    with Rnwf() as e:
        (e.state_dir / "fs" / "certs").mkdir(parents=True, exist_ok=True)
        (e.state_dir / "fs" / "certs" / "RootCA1").write_bytes(pki.ca_cert.read_bytes())
        e.join()
        for line in ("AT+TLSC=1,40,1", 'AT+TLSC=1,1,"RootCA1"', f'AT+TLSC=1,5,"{LONG_SNI}"', "AT+TLSC=1,41,1",
                     'AT+TLSC=1,6,"s3-us-west-2.amazonaws.example"'):
            assert e.cmd(line) == b"OK\r\n", line
        assert e.cmd("AT+TLSC=1,5") == f'+TLSC:5,"{LONG_SNI}"\r\nOK\r\n'.encode()
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{srv.address[1]}') == b"OK\r\n"
        # the connect may or may not be up when AT+SOCKTLS arrives: OK either way, +SOCKIND then +SOCKTLS
        e.write(b"AT+SOCKTLS=1,1\r\n")
        got = e.read_until(rb"\r\+SOCKTLS:1\r\n", timeout=10)
        ind = rb'\r\+SOCKIND:1,"127\.0\.0\.1",\d+,"127\.0\.0\.1",\d+\r\n'
        assert re.fullmatch(rb"(?:%s)?OK\r\n(?:%s)?\r\+SOCKTLS:1\r\n" % (ind, ind), got), got
        assert len(re.findall(ind, got)) == 1, got
        assert len(srv.wait_sessions(1)) == 1     # (SNI: see README, SERVER_NAME vs DOMAIN_NAME)
        e.write(b"AT+SOCKWR=1,14\r\n")
        assert e.read_until(b"#") == b"#"
        e.write(b"GET / HTTP/1.1")
        assert e.read_until(rb"OK\r\n") == b"OK\r\n"
        assert e.aec(rb"\r\+SOCKRXT:1,(\d+)\r\n").group(1) == b"14"
        e.write(b"AT+SOCKRD=1,2,14\r\n")
        assert e.read_until(rb"OK\r\n") == b"#GET / HTTP/1.1OK\r\n"
        # a second AT+SOCKTLS on that socket is refused; one on a socket never bound is taken for the
        # AT+SOCKBR that follows (the AT Command Specification's TLS client example, test_rnwf02_pages)
        assert e.cmd("AT+SOCKTLS=1,1") == b'ERROR:14.6,"Socket TLS Failed"\r\n'
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:2\r\nOK\r\n"
        assert e.cmd("AT+SOCKTLS=2,1") == b"OK\r\n"


def test_tls_requested_while_the_connect_runs(tls_echo, pki):
    # AT+SOCKBR and AT+SOCKTLS in one burst: the TLS request is taken while the connect runs and the
    # handshake follows it
    with Rnwf() as e:
        (e.state_dir / "fs" / "certs").mkdir(parents=True, exist_ok=True)
        (e.state_dir / "fs" / "certs" / "ca").write_bytes(pki.ca_cert.read_bytes())
        e.join()
        e.oks('AT+TLSC=2,1,"ca"', 'AT+TLSC=2,5,"localhost"')
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
        e.write(f'AT+SOCKBR=1,"127.0.0.1",{tls_echo.address[1]}\r\nAT+SOCKTLS=1,2\r\n'.encode())
        got = e.read_until(rb"\r\+SOCKTLS:1\r\n", timeout=10)
        assert re.fullmatch(rb'OK\r\nOK\r\n\r\+SOCKIND:1,"127\.0\.0\.1",\d+,"127\.0\.0\.1",\d+\r\n\r\+SOCKTLS:1\r\n', got), got
        assert tls_echo.wait_sessions(1)[0].sni == "localhost"
        assert e.cmd('AT+SOCKWR=1,4,"ping"') == b"OK\r\n"
        e.aec(rb"\r\+SOCKRXT:1,4\r\n")
        assert e.cmd("AT+SOCKRD=1,1,10") == b'+SOCKRD:1,4,"ping"\r\nOK\r\n'


def test_tls_requested_while_connecting_to_nothing_reports_the_connect_failure():
    with Rnwf() as e:
        e.join()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()                       # nobody listens there
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
        e.write(f'AT+SOCKBR=1,"127.0.0.1",{port}\r\nAT+SOCKTLS=1,1\r\n'.encode())
        assert e.read_until(rb"OK\r\nOK\r\n") == b"OK\r\nOK\r\n"
        assert e.read_until(rb"\r\+SOCK\w+:[^\r]*\r\n", timeout=10) == b"\r+SOCKERR:1,7\r\n"
        e.expect_nothing(0.5)


def test_an_announcement_read_in_pieces_leaves_no_stale_announcements(tcp_sink):
    # The Harmony tls_client demo reads each +SOCKRXT:<id>,<n> in full, in pieces of at most its
    # buffer (6144), all before it looks at the next AEC; a +SOCKRXT sent after each piece would
    # be stale when it gets to it (it then reads 0 bytes and leaves raw mode with '+++').
    with Rnwf(opts={"rnwf02.rxt_reminder": 0.5}) as e:
        e.join()
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{tcp_sink.port}') == b"OK\r\n"
        e.aec(rb"\r\+SOCKIND:1,[^\r]*\r\n")
        tcp_sink.wait_connection()
        body = bytes(range(256)) * 40                      # 10240 bytes
        tcp_sink.push(body)
        got = b""
        while len(got) < len(body):        # (one announcement, unless the peer's bytes came in parts)
            left = int(e.aec(rb"\r\+SOCKRXT:1,(\d+)\r\n").group(1))
            while left:
                n = min(4096, left)
                e.write(f"AT+SOCKRD=1,2,{n}\r\n".encode())
                head = e.read_until(rb"#")
                assert head == b"#", head                       # no AEC in between
                got += e.read_exactly(n)
                assert e.read_exactly(4) == b"OK\r\n"
                left -= n
        assert got == body
        e.expect_nothing(1.0)                              # nothing stale, no reminder
        # data that arrives while the host works through an announcement is announced (the total)
        # once the announced bytes are read
        tcp_sink.push(b"A" * 100)
        assert e.read_until(rb"\+SOCKRXT:[^\r]*\r\n", timeout=5) == b"\r+SOCKRXT:1,100\r\n"
        assert e.cmd("AT+SOCKRD=1,1,60") == b'+SOCKRD:1,60,"' + b"A" * 60 + b'"\r\nOK\r\n'
        tcp_sink.push(b"B" * 10)
        e.expect_nothing(0.2)                              # 40 announced bytes still unread
        assert e.cmd("AT+SOCKRD=1,1,40") == b'+SOCKRD:1,40,"' + b"A" * 40 + b'"\r\nOK\r\n'
        assert e.read_until(rb"\+SOCKRXT:[^\r]*\r\n", timeout=5) == b"\r+SOCKRXT:1,10\r\n"
        # a host that stops before the end is reminded of the total left
        assert e.cmd("AT+SOCKRD=1,1,4") == b'+SOCKRD:1,4,"BBBB"\r\nOK\r\n'
        assert e.read_until(rb"\+SOCKRXT:[^\r]*\r\n", timeout=5) == b"\r+SOCKRXT:1,6\r\n"


def test_wific_reports_the_number_of_regulatory_domains():
    # Microchip's OOB demo reads AT+WIFIC as <id>,<value> pairs and takes id 11 as the number of
    # regulatory domains (it drops the domain from its report when 11 is missing); the AVR/PIC MCC
    # driver asks AT+WIFIC=11 before joining.
    with Rnwf(echo=True) as e:
        assert e.cmd("AT+WIFIC=11") == (b'AT+WIFIC=11\r\n+WIFIC:11,3\r\n+WIFIC:11.0,"GEN"\r\n+WIFIC:11.1,"USA"\r\n'
                                         b'+WIFIC:11.2,"EMEA"\r\nOK\r\n>')
        out = e.cmd("AT+WIFIC")
        pairs = re.sub(rb'[">]|OK|AT\+WIFIC\r\n', b"", out).replace(b"\r\n", b"").replace(b"+WIFIC:", b",").split(b",")[1:]
        table = dict(zip(pairs[::2], pairs[1::2]))
        assert table[b"10"] == b"GEN" and int(table[b"11"]) == 3
        assert e.cmd("AT+WIFIC=11,4") == b'AT+WIFIC=11,4\r\nERROR:0.6,"Configuration Update Blocked"\r\n>'


def test_binary_read_answers_a_bare_hash_first(tcp_sink):
    # The AVR/PIC MCC driver (RNWF02 firmware v2) sends AT+SOCKRD=<id>,2,<n> for a +SOCKRXT and
    # switches to raw mode only when the first byte of the answer is '#'; then it reads exactly
    # <n> bytes and expects OK CR LF (the hardware facts of issue 11). Binary read and peek alike.
    with Rnwf() as e:
        e.join()
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{tcp_sink.port}') == b"OK\r\n"
        e.aec(rb"\r\+SOCKIND:1,[^\r]*\r\n")
        tcp_sink.wait_connection()
        tcp_sink.push(b"ab#\r\nOK\r\n")
        assert e.aec(rb"\r\+SOCKRXT:1,(\d+)\r\n").group(1) == b"9"
        e.write(b"AT+SOCKRDBUF=1,2,9\r\n")
        assert e.read_exactly(1 + 9 + 4) == b"#ab#\r\nOK\r\nOK\r\n"
        e.write(b"AT+SOCKRD=1,2,9\r\n")
        assert e.read_exactly(1 + 9 + 4) == b"#ab#\r\nOK\r\nOK\r\n"
        e.expect_nothing(0.3)
    # the guide's form, for hosts written from the guide
    with Rnwf(opts={"rnwf02.binary_read": "guide"}) as e:
        e.join()
        assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
        assert e.cmd(f'AT+SOCKBR=1,"127.0.0.1",{tcp_sink.port}') == b"OK\r\n"
        e.aec(rb"\r\+SOCKIND:1,[^\r]*\r\n")
        tcp_sink.wait_connection(2)
        tcp_sink.push(b"xyz")
        e.aec(rb"\r\+SOCKRXT:1,3\r\n")
        e.write(b"AT+SOCKRD=1,2,3\r\n")
        assert e.read_until(rb"OK\r\n") == b"+SOCKRD:1,3,#xyzOK\r\n"


def test_binary_read_option_is_checked():
    from atemu.world import World, WorldError
    from atemu.profile import find_profile
    w = World.from_dict({"options": {"rnwf02.binary_read": "manual"}})
    with pytest.raises(WorldError, match="binary_read"):
        find_profile("rnwf02").validate_world(w)
