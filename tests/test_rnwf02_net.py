"""rnwf02 network stack over a real pty with CR LF: TCP/UDP sockets with the '#' binary prompt,
+SOCKRXT/+SOCKRD/+SOCKRDBUF, listening sockets, socket options, AT+FS over XMODEM/YMODEM, TLS,
DNS, ping and SNTP (+TIME) against real local peers."""
from __future__ import annotations

import binascii
import re
import socket
import time

import pytest

from peers.certs import der
from rnwf_helpers import Rnwf

NTP_EPOCH = 2208988800


@pytest.fixture
def e():
    with Rnwf() as emu:
        emu.join()
        yield emu


def tcp_open(e, port: int, sid: int = 1) -> None:
    assert e.cmd("AT+SOCKO=2,4") == f"+SOCKO:{sid}\r\nOK\r\n".encode()
    assert e.cmd(f'AT+SOCKBR={sid},"127.0.0.1",{port}') == b"OK\r\n"
    e.aec(rf'\r\+SOCKIND:{sid},"127\.0\.0\.1",\d+,"127\.0\.0\.1",{port}\r\n'.encode())


def test_tcp_binary_write_prompt_and_reads(e, tcp_sink):
    tcp_open(e, tcp_sink.port)
    tcp_sink.wait_connection()
    # binary write: the module prompts '#', then takes exactly 9 raw bytes (CR LF and +++ are data)
    e.write(b"AT+SOCKWR=1,9\r\n")
    assert e.read_until(b"#") == b"#"
    e.write(b"ab\r\n+++#x")
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    assert tcp_sink.wait_bytes(9) == b"ab\r\n+++#x"
    # inline data with JSON escapes
    assert e.cmd('AT+SOCKWR=1,7,"{\\"a\\":1}"') == b"OK\r\n"
    assert tcp_sink.wait_bytes(16) == b'ab\r\n+++#x{"a":1}'
    assert e.cmd('AT+SOCKWR=1,8,"{\\"a\\":1}"') == b'ERROR:14.1,"Length Mismatch"\r\n'
    assert e.cmd("AT+SOCKWR=1,0") == b'ERROR:0.4,"Invalid Parameter"\r\n'
    # the peer sends: +SOCKRXT gives the total; the binary read answers '#', the bytes and OK at once
    tcp_sink.push(b'he"llo\r\n')
    assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == b"\r+SOCKRXT:1,8\r\n"
    assert e.cmd("AT+SOCKRDBUF=1,1,3") == b'+SOCKRD:1,3,"he\\""\r\nOK\r\n'   # a peek
    e.write(b"AT+SOCKRD=1,2,5\r\n")
    assert e.read_until(rb"OK\r\n") == b'#he"llOK\r\n'
    # 3 bytes are left and the host stopped reading: announced again (rxt_reminder without a read)
    assert e.read_until(rb"\+SOCKRXT:.*?\r\n") == b"\r+SOCKRXT:1,3\r\n"
    assert e.cmd("AT+SOCKRD=1,1,100") == b'+SOCKRD:1,3,"o\r\n"\r\nOK\r\n'
    assert re.fullmatch(rf'\+SOCKLST:1,2,"127\.0\.0\.1",{tcp_sink.port},\d+\r\nOK\r\n'.encode(), e.cmd("AT+SOCKLST"))
    # the system information counts the traffic
    assert e.cmd("AT+SI=2").endswith(b"OK\r\n")
    tx, rx = map(int, e.aec(rb"\r\+SIWPKTS:(\d+),(\d+)\r\n").groups())
    assert tx >= 2 and rx >= 1
    # the peer closes
    tcp_sink.close_client()
    assert e.read_until(rb"\+SOCKCL:.*?\r\n") == b"\r+SOCKCL:1\r\n"
    assert e.cmd("AT+SOCKCL=1") == b"OK\r\n"


def test_binary_write_host_falls_silent(e, tcp_sink):
    tcp_open(e, tcp_sink.port)
    tcp_sink.wait_connection()
    t0 = time.monotonic()
    e.write(b"AT+SOCKWR=1,10\r\n")
    assert e.read_until(b"#") == b"#"
    e.write(b"abc")
    assert e.read_until(rb"ERROR[^\r]*\r\n", timeout=5) == b'ERROR:0.8,"Command Timed Out"\r\n'
    assert time.monotonic() - t0 >= 0.9
    assert e.cmd("AT") == b"OK\r\n"
    time.sleep(0.1)
    assert tcp_sink.data == b""


def test_udp_write_to_and_receive(e, udp_echo):
    assert e.cmd("AT+SOCKO=1,4") == b"+SOCKO:1\r\nOK\r\n"
    e.write(f'AT+SOCKWRTO=1,"127.0.0.1",{udp_echo.port},5\r\n'.encode())
    assert e.read_until(b"#") == b"#"
    e.write(b"pi\x00ng")
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    m = e.aec(rb'\r\+SOCKRXU:1,"127\.0\.0\.1",(\d+),5\r\n')
    assert int(m.group(1)) == udp_echo.port
    e.write(b"AT+SOCKRD=1,2,100\r\n")
    assert e.read_until(rb"OK\r\n") == b"#pi\x00ngOK\r\n"
    assert e.cmd(f'AT+SOCKWRTO=1,"127.0.0.1",{udp_echo.port},2,"ok"') == b"OK\r\n"
    e.aec(rb"\+SOCKRXU:1,.*?,2\r\n")
    assert e.cmd("AT+SOCKRD=1,1,100") == b'+SOCKRD:1,2,"ok"\r\nOK\r\n'


def test_listen_accept_and_options(e):
    assert e.cmd("AT+SOCKO=2,4") == b"+SOCKO:1\r\nOK\r\n"
    assert e.cmd("AT+SOCKBL=1,0,2") == b"OK\r\n"
    port = int(re.search(rb'\+SOCKLST:1,2,"",0,(\d+)', e.cmd("AT+SOCKLST")).group(1))
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        m = e.aec(rb'\r\+SOCKIND:2,"127\.0\.0\.1",(\d+),"127\.0\.0\.1",(\d+)\r\n')
        assert int(m.group(1)) == port and int(m.group(2)) == c.getsockname()[1]
        # the guide's socket options (9.15.1.12), read back as +SOCKC:<ID>,<VAL>, applied to the real socket
        assert e.cmd("AT+SOCKC") == b"+SOCKC:1,2\r\nOK\r\n"
        assert e.cmd("AT+SOCKC=2") == b"+SOCKC:1,0\r\n+SOCKC:2,0\r\n+SOCKC:3,0\r\n+SOCKC:4,5840\r\n+SOCKC:32,0\r\nOK\r\n"
        assert e.cmd("AT+SOCKC=2,2,1") == b"OK\r\n"
        assert e.cmd("AT+SOCKC=2,3,30") == b"OK\r\n"
        assert e.cmd("AT+SOCKC=2,2") == b"+SOCKC:2,1\r\nOK\r\n"
        conn = e.prof.socks[2].conn
        assert e.sync(conn.get_option, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert e.sync(conn.get_keepalive)["enabled"] and e.sync(conn.get_keepalive)["idle"] == 30
        assert e.cmd("AT+SOCKC=2,1,1") == b"OK\r\n"
        assert e.sync(conn.get_option, socket.SOL_SOCKET, socket.SO_LINGER, 8)[:4] == b"\x01\x00\x00\x00"
        assert e.cmd("AT+SOCKC=2,9,1") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+SOCKC=2,4,100") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+SOCKC=9,2,1") == b'ERROR:14.0,"Socket ID Not Found"\r\n'
        assert e.cmd('AT+SOCKWR=2,3,"hi!"') == b"OK\r\n"
        assert c.recv(10) == b"hi!"
    finally:
        c.close()


def _block(n: int, body: bytes, blen: int, crc: bool, pad: bytes = b"\x1a") -> bytes:
    body = body.ljust(blen, pad)
    chk = binascii.crc_hqx(body, 0).to_bytes(2, "big") if crc else bytes([sum(body) & 0xFF])
    return (b"\x02" if blen == 1024 else b"\x01") + bytes([n & 0xFF, 0xFF - (n & 0xFF)]) + body + chk


def xmodem_send(e, data: bytes, prot: int, name: str | None = None) -> None:
    """A host's XMODEM (1 checksum, 2 CRC, 3 1K) or YMODEM (4) sender over the module's UART."""
    crc = prot != 1
    ask = b"C" if crc else b"\x15"
    assert e.read_until(re.escape(ask), timeout=5).endswith(ask)
    blen = 1024 if prot in (3, 4) else 128

    def send(frame: bytes) -> None:
        e.write(frame)
        got = e.read_until(rb"[\x06\x15\x18]", timeout=5)
        assert got.endswith(b"\x06"), got

    if prot == 4:
        send(_block(0, name.encode() + b"\0" + str(len(data)).encode() + b" 0", 128, True, b"\0"))
        assert e.read_until(b"C").endswith(b"C")
    for i in range(0, max(len(data), 1), blen):
        send(_block(i // blen + 1, data[i:i + blen], blen, crc))
    if prot == 4:
        e.write(b"\x04")
        assert e.read_until(rb"[\x06\x15]").endswith(b"\x15")    # YMODEM: the first EOT is NAKed
        send(b"\x04")
        assert e.read_until(b"C").endswith(b"C")
        send(_block(0, b"", 128, True, b"\0"))                    # end of batch
    else:
        send(b"\x04")


def load(e, typ: int, name: str, data: bytes, prot: int = 2) -> None:
    e.write(f'AT+FS=1,{typ},{prot},"{name}",{len(data)}\r\n'.encode())
    xmodem_send(e, data, prot, name)
    assert e.read_until(rb"(OK|ERROR[^\r]*)\r\n") == b"OK\r\n"


def test_fs_xmodem_and_ymodem(e, pki):
    ca = pki.ca_cert.read_bytes()
    for prot in (1, 2, 3):
        load(e, 1, f"ca{prot}", ca, prot)
        assert (e.state_dir / "fs" / "certs" / f"ca{prot}").read_bytes() == ca      # padding trimmed
    # YMODEM batch: the name and size come from block 0
    e.write(b"AT+FS=1,2,4\r\n")
    xmodem_send(e, pki.client_key.read_bytes(), 4, "batchkey")
    assert e.read_until(rb"(OK|ERROR[^\r]*)\r\n") == b"OK\r\n"
    assert (e.state_dir / "fs" / "keys" / "batchkey").read_bytes() == pki.client_key.read_bytes()
    assert e.cmd("AT+FS=2,2") == b'+FS:2,2,"batchkey"\r\nOK\r\n'
    assert e.cmd("AT+FS=2,1") == b'+FS:2,1,"ca1"\r\n+FS:2,1,"ca2"\r\n+FS:2,1,"ca3"\r\nOK\r\n'
    assert re.fullmatch(rb"\+FS:4,\d+,28\r\nOK\r\n", e.cmd("AT+FS=4"))
    # a corrupted block is NAKed and sent again
    e.write(b'AT+FS=1,1,2,"again",5\r\n')
    assert e.read_until(b"C").endswith(b"C")
    good = _block(1, b"-----", 128, True)
    e.write(good[:-1] + bytes([good[-1] ^ 1]))
    assert e.read_until(rb"[\x06\x15]").endswith(b"\x15")
    e.write(good)
    assert e.read_until(rb"[\x06\x15]").endswith(b"\x06")
    e.write(b"\x04")
    assert e.read_until(rb"(OK|ERROR[^\r]*)\r\n").endswith(b'ERROR:7.3,"Invalid File Type"\r\n')  # not a cert
    # a host that never sends: the module gives up after data_timeout
    e.write(b'AT+FS=1,1,2,"silent",5\r\n')
    assert e.read_until(rb"ERROR[^\r]*\r\n", timeout=5).endswith(b'ERROR:0.8,"Command Timed Out"\r\n')
    assert e.cmd("AT") == b"OK\r\n"
    assert e.cmd('AT+FS=1,1,9,"x",5') == b'ERROR:7.0,"Unsupported File Transfer Protocol"\r\n'
    assert e.cmd('AT+FS=1,1,2,"x"') == b'ERROR:0.5,"Incorrect Number of Parameters"\r\n'


def test_fs_and_tls(e, pki, tls_echo_mtls):
    load(e, 1, "ca", pki.ca_cert.read_bytes())
    load(e, 1, "client", der(pki.client_cert))
    load(e, 2, "client_key", pki.client_key.read_bytes())
    assert e.cmd("AT+FS=2,1") == b'+FS:2,1,"ca"\r\n+FS:2,1,"client"\r\nOK\r\n'
    assert e.cmd("AT+FS=2,2") == b'+FS:2,2,"client_key"\r\nOK\r\n'
    e.oks('AT+TLSC=1,1,"ca"', 'AT+TLSC=1,2,"client"', 'AT+TLSC=1,3,"client_key"', 'AT+TLSC=1,5,"localhost"')
    assert e.cmd("AT+TLSC") == b"+TLSC:1,2\r\nOK\r\n"
    assert e.cmd("AT+TLSC=1,40") == b"+TLSC:40,1\r\nOK\r\n"
    assert e.cmd("AT+TLSC=1") == (b'+TLSC:1,"ca"\r\n+TLSC:2,"client"\r\n+TLSC:3,"client_key"\r\n+TLSC:4,""\r\n'
                                  b'+TLSC:5,"localhost"\r\n+TLSC:6,""\r\n+TLSC:7,1\r\n+TLSC:40,1\r\n+TLSC:41,1\r\nOK\r\n')
    assert e.cmd("AT+TLSC=3,1") == b'ERROR:0.4,"Invalid Parameter"\r\n'
    tcp_open(e, tls_echo_mtls.address[1])
    assert e.cmd("AT+SOCKTLS=1,1") == b"OK\r\n"
    assert e.read_until(rb"\+SOCK\w+:.*?\r\n", timeout=10) == b"\r+SOCKTLS:1\r\n"
    assert e.cmd('AT+SOCKWR=1,9,"over tls!"') == b"OK\r\n"
    e.aec(rb"\+SOCKRXT:1,9\r\n")
    assert e.cmd("AT+SOCKRD=1,1,100") == b'+SOCKRD:1,9,"over tls!"\r\nOK\r\n'
    sess = tls_echo_mtls.wait_sessions(1)[0]
    assert sess.sni == "localhost"
    assert sess.client_cert_der == der(pki.client_cert)
    # a CA that did not sign the server: +SOCKERR with the socket module's 14.6 Socket TLS Failed
    load(e, 1, "other", pki.other_ca_cert.read_bytes())
    e.oks('AT+TLSC=2,1,"other"', 'AT+TLSC=2,5,"localhost"')
    tcp_open(e, tls_echo_mtls.address[1], sid=2)
    assert e.cmd("AT+SOCKTLS=2,2") == b"OK\r\n"
    assert e.read_until(rb"\+SOCK\w+:.*?\r\n", timeout=10) == b"\r+SOCKERR:2,6\r\n"
    assert e.cmd('AT+FS=3,1,"other"') == b"OK\r\n"
    assert e.cmd('AT+FS=3,1,"other"') == b'ERROR:7.2,"File Not Found"\r\n'
    assert e.cmd("AT+FS=2,1") == b'+FS:2,1,"ca"\r\n+FS:2,1,"client"\r\nOK\r\n'


def test_dns_ping(e):
    assert e.cmd('AT+DNSRESOLV=1,"localhost"') == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n") == b'\r+DNSRESOLV:1,"localhost","127.0.0.1"\r\n'
    assert e.cmd("AT+DNSC") == b'+DNSC:1.0,"0.0.0.0"\r\n+DNSC:1.1,"0.0.0.0"\r\nOK\r\n'
    assert e.cmd('AT+DNSC=1.1,"127.0.0.53"') == b"OK\r\n"
    assert e.cmd("AT+DNSC=1.1") == b'+DNSC:1.1,"127.0.0.53"\r\nOK\r\n'
    assert e.cmd('AT+DNSC=1.2,"1.2.3.4"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
    assert e.cmd('AT+DNSC=1.1,"0.0.0.0"') == b"OK\r\n"       # no server: the host's resolver (tests/test_rnwf02_dns.py)
    assert e.cmd('AT+PING="127.0.0.1"') == b"OK\r\n"
    e.aec(rb'\r\+(?:PING:"127\.0\.0\.1",\d+|PINGERR:0)\r\n', timeout=6)   # (no ICMP here: no reply)
    # a name that does not resolve: the late failure form
    e.sync(lambda: setattr(e.module.resolver, "fault", "fail"))
    assert e.cmd('AT+PING="nowhere.example"') == b"OK\r\n"
    assert e.read_until(rb"\+PING\w*:.*?\r\n", timeout=6) == b'\r+PINGERR:0\r\n'
    # DNS: the guide's record types (1 A, 28 AAAA) and +DNSERR with the DNS module's codes (2 DNS error)
    assert e.cmd('AT+DNSRESOLV=1,"nowhere.example"') == b"OK\r\n"
    assert e.read_until(rb"\+DNS\w+:.*?\r\n", timeout=6) == b'\r+DNSERR:2\r\n'
    assert e.cmd('AT+DNSRESOLV=2,"localhost"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
    e.sync(lambda: setattr(e.module.resolver, "fault", None))
    assert e.cmd('AT+DNSRESOLV=28,"localhost"') == b"OK\r\n"
    assert re.fullmatch(rb'\r\+(DNSRESOLV:28,"localhost","::1"|DNSERR:2)\r\n', e.read_until(rb"\+DNS\w+:.*?\r\n", timeout=6))


def test_sntp_sets_the_clock_after_the_link(sntp_server):
    with Rnwf() as e:
        assert e.cmd("AT+SNTPC") == b'+SNTPC:1,0\r\n+SNTPC:2,0\r\n+SNTPC:3,"0.in.pool.ntp.org"\r\nOK\r\n'
        e.oks("AT+SNTPC=2,1", f'AT+SNTPC=3,"127.0.0.1:{sntp_server.port}"', "AT+SNTPC=1,1")
        e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"')
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        m = e.aec(rb"\r\+TIME:(\d+)\r\n", timeout=10)
        # the server's clock runs 1000 s ahead of the host
        assert abs(int(m.group(1)) - NTP_EPOCH - time.time() - 1000) < 30
        got = int(e.time("AT+TIME=1"))
        assert abs(got - time.time() - 1000) < 30


def test_harmony_driver_spellings(e, udp_echo):
    """The Microchip Harmony driver writes some addresses unquoted (SOCKWRTO, SOCKBM, WSTAC=5)."""
    assert e.cmd("AT+SOCKO=1,4") == b"+SOCKO:1\r\nOK\r\n"
    e.write(f"AT+SOCKWRTO=1,127.0.0.1,{udp_echo.port},3\r\n".encode())
    assert e.read_until(b"#") == b"#"
    e.write(b"abc")
    assert e.read_until(rb"OK\r\n") == b"OK\r\n"
    e.aec(rb"\+SOCKRXU:1,.*?,3\r\n")
    assert e.cmd("AT+SOCKO=1,4") == b"+SOCKO:2\r\nOK\r\n"
    assert e.cmd("AT+SOCKBM=2,239.1.2.3,45454") == b"OK\r\n"
    assert e.cmd("AT+SOCKBM=2,10.0.0.1,45454") == b'ERROR:0.4,"Invalid Parameter"\r\n'
    assert e.cmd("AT+WSTAC=5,00:01:02:03:04:05") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'   # connected
    assert e.cmd("AT+WSTA=0") == b"OK\r\n"
    assert e.read_until(rb"\+WSTALD:1\r\n") == b"\r+WSTALD:1\r\n"
    assert e.cmd("AT+WSTAC=5,00:01:02:03:04:05") == b"OK\r\n"
    assert e.cmd("AT+WSTAC=5") == b'+WSTAC:5,"00:01:02:03:04:05"\r\nOK\r\n'
    assert e.cmd('AT+WSTAC=5,"nonsense"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
    # the BSSID pins the AP: another BSSID is "no such AP"
    assert e.cmd("AT+WSTA=1") == b"OK\r\n"
    e.aec(rb'\+WSTAAIP:2,"192\.168\.0\.20"\r\n')
    assert e.cmd("AT+WSTA=0") == b"OK\r\n"
    e.aec(rb"\+WSTALD:2\r\n")
    assert e.cmd('AT+WSTAC=5,"00:01:02:03:04:06"') == b"OK\r\n"
    assert e.cmd("AT+WSTA=1") == b"OK\r\n"
    assert e.read_until(rb"\+WSTA\w+:.*?\r\n") == b"\r+WSTAERR:3\r\n"
