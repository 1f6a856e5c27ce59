"""Quectel FCM242D SSL (AT+QSSL*) over a real pty against real loopback TLS peers."""
from __future__ import annotations

import os
import threading
import time

import pytest

from peers.servers import TlsEchoServer
from quectel_helpers import cmd_ok, emu, join, urc, world

HOST = "test.atemu.invalid"      # in the test PKI's server certificate; the world maps it to 127.0.0.1


@pytest.fixture
def e():
    m = emu(world(hosts={HOST: "127.0.0.1", "wrong-name.example": "127.0.0.1"}))
    join(m)
    yield m
    m.stop()


def upload(e, name: str, data: bytes) -> None:
    out = e.cmd(f'AT+QFOPEN="{name}",1')
    h = int(out.split(b"+QFOPEN: ")[1].split(b"\r")[0])
    e.write(f"AT+QFWRITE={h},{len(data)}\r".encode())
    e.read_until(b"CONNECT\r\n")
    e.write(data)
    assert e.read_until(b"OK\r\n") == f"\r\n+QFWRITE: {len(data)},{len(data)}\r\nOK\r\n".encode().replace(b"\r\nOK", b"\r\n\r\nOK")
    cmd_ok(e, f"AT+QFCLOSE={h}")


def configure(e, pki, ctx=1, seclevel=1, client=False, ca=None):
    upload(e, "ca.pem", (ca or pki.ca_cert).read_bytes())
    cmd_ok(e, f'AT+QSSLCFG="cacert",{ctx},"ca.pem"')
    cmd_ok(e, f'AT+QSSLCFG="seclevel",{ctx},{seclevel}')
    if client:
        upload(e, "client.pem", pki.client_cert.read_bytes())
        upload(e, "client.key", pki.client_key.read_bytes())
        cmd_ok(e, f'AT+QSSLCFG="clientcert",{ctx},"client.pem"')
        cmd_ok(e, f'AT+QSSLCFG="clientkey",{ctx},"client.key"')


def ssl_open(e, port, ctx=1, cid=4, mode=0, host=HOST) -> bytes:
    cmd_ok(e, f'AT+QSSLOPEN={ctx},{cid},"{host}",{port},{mode}')
    return urc(e, rf"\+QSSLOPEN: {cid},\d+\r\n", timeout=10).group(0)


def test_e4_configure_context(e, pki):
    assert e.cmd('AT+QSSLCFG="sslversion",1,1') == b"\r\nOK\r\n"
    assert e.cmd('AT+QSSLCFG="ciphersuite",1,0x0035') == b"\r\nOK\r\n"
    assert e.cmd('AT+QSSLCFG="ciphersuite",1,0x1234') == b"\r\nERROR\r\n"
    assert e.cmd('AT+QSSLCFG="seclevel",1,1') == b"\r\nOK\r\n"
    assert e.cmd('AT+QFOPEN="ca.pem"') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
    ca = pki.ca_cert.read_bytes()
    e.write(f"AT+QFWRITE=1,{len(ca)}\r".encode())
    assert e.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    e.write(ca)
    assert e.read_until(b"OK\r\n") == f"\r\n+QFWRITE: {len(ca)},{len(ca)}\r\n\r\nOK\r\n".encode()
    assert e.cmd('AT+QSSLCFG="cacert",1,"ca.pem"') == b"\r\nOK\r\n"
    assert e.cmd('AT+QSSLCFG="cacert",1,"../ca.pem"') == b"\r\nERROR\r\n"
    assert e.cmd('AT+QSSLCFG="sslversion",1') == b'\r\n+QSSLCFG: "sslversion",1,1\r\n\r\nOK\r\n'
    assert e.cmd('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0X0035\r\n\r\nOK\r\n'
    assert e.cmd('AT+QSSLCFG="cacert",1') == b'\r\n+QSSLCFG: "cacert",1,"ca.pem"\r\n\r\nOK\r\n'
    assert e.cmd('AT+QSSLCFG="seclevel",6,1') == b"\r\nERROR\r\n"
    assert e.cmd('AT+QSSLCFG="seclevel",1,3') == b"\r\nERROR\r\n"
    assert e.cmd("AT+QSSLCFG=?").count(b"+QSSLCFG: ") == 10


def test_e5_buffer_mode(e, pki, tls_echo):
    configure(e, pki)
    assert ssl_open(e, tls_echo.port) == b"+QSSLOPEN: 4,0\r\n"
    st = e.cmd("AT+QSSLSTATE")
    assert st.startswith(f'\r\n+QSSLSTATE: 4,"SSLClient","{HOST}",{tls_echo.port},'.encode())
    assert st.endswith(b',2,4,0,"uart1",1\r\n\r\nOK\r\n')
    assert e.cmd("AT+QSSLSTATE=1,4") == st
    assert e.cmd("AT+QSSLSTATE=0,1") == st
    assert e.cmd("AT+QSSLSTATE=0,2") == b"\r\nOK\r\n"
    assert e.cmd("AT+QISTATE") == b"\r\nOK\r\n"                          # SSL sockets are not QISTATE's
    e.write(b"AT+QSSLSEND=4\r")
    assert e.read_until(b"> ") == b"\r\n> "
    e.write(b"Test data from SSL\x1a")
    assert e.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert urc(e, r'\+QSSLURC: "recv",4\r\n')
    e.write(b"AT+QSSLSEND=4,18\r")
    e.read_until(b"> ")
    e.write(b"Test data from SSL")
    assert e.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    time.sleep(0.3)
    e.expect_nothing(0.1)                                                # edge-triggered: no 2nd URC yet
    assert e.cmd("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 36\r\n" + b"Test data from SSL" * 2 + b"\r\nOK\r\n"
    assert e.cmd("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
    assert e.cmd("AT+QSSLRECV=4,0") == b"\r\nERROR\r\n"
    assert e.cmd("AT+QIRD=4") == b"\r\nERROR\r\n"                        # not a TCP/IP socket
    assert e.cmd("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert e.cmd("AT+QSSLSTATE") == b"\r\nOK\r\n"
    sess = tls_echo.last_session
    assert sess is not None and sess.client_cert_presented is False and sess.sni is None     # sni default 0


def test_e6_direct_push_with_sni_and_client_certificate(e, pki, tls_echo_mtls):
    configure(e, pki, seclevel=2, client=True)
    cmd_ok(e, 'AT+QSSLCFG="sni",1,1')
    assert ssl_open(e, tls_echo_mtls.port, mode=1) == b"+QSSLOPEN: 4,0\r\n"
    assert e.cmd("AT+QSSLSTATE").endswith(b',2,4,1,"uart1",1\r\n\r\nOK\r\n')
    e.write(b"AT+QSSLSEND=4,18\r")
    e.read_until(b"> ")
    e.write(b"Test data from SSL")
    assert e.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert e.read_until(b"from SSL") == b'\r\n+QSSLURC: "recv",4,18\r\nTest data from SSL'
    sess = tls_echo_mtls.last_session
    assert sess.client_cert_presented and sess.sni == HOST
    cmd_ok(e, "AT+QSSLCLOSE=4")
    # the same server refuses a module that does not present a certificate (seclevel 1)
    cmd_ok(e, 'AT+QSSLCFG="seclevel",1,1')
    assert ssl_open(e, tls_echo_mtls.port, mode=1) == b"+QSSLOPEN: 4,564\r\n"   # TLS 1.2: fails in the handshake


def test_e7_transparent_and_1mb_roundtrip(e, pki, tls_echo):
    configure(e, pki)
    assert e.cmd(f'AT+QSSLOPEN=1,4,"{HOST}",{tls_echo.port},2', final=rb"CONNECT\r\n|ERROR\r\n",
                 timeout=10) == b"\r\nCONNECT\r\n"
    data = os.urandom(1 << 20)
    writer = threading.Thread(target=lambda: [e.ser.write(data[i:i + 4096]) for i in range(0, len(data), 4096)])
    writer.start()
    got = e.read_exactly(len(data), timeout=40)
    writer.join(10)
    assert got == data                                              # up through TLS and back, byte for byte
    time.sleep(0.3)
    e.write(b"+++")
    assert e.read_until(b"OK\r\n", timeout=3) == b"\r\nOK\r\n"
    assert e.cmd("AT+QSSLSTATE").endswith(b',2,4,2,"uart1",1\r\n\r\nOK\r\n')
    assert e.cmd("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


def test_expired_certificate_and_ignore_local_time(e, pki):
    with TlsEchoServer(pki.expired_cert, pki.expired_key) as srv:
        configure(e, pki)
        cmd_ok(e, 'AT+QSSLCFG="ignorelocaltime",1,0')
        assert ssl_open(e, srv.port) == b"+QSSLOPEN: 4,564\r\n"
        assert e.cmd("AT+QIGETERROR") == b"\r\n+QIGETERROR: 564,Socket connect failed\r\n\r\nOK\r\n"
        assert e.cmd("AT+QSSLSTATE") == b"\r\nOK\r\n"
        cmd_ok(e, 'AT+QSSLCFG="ignorelocaltime",1,1')                 # the validity period is not checked
        assert ssl_open(e, srv.port) == b"+QSSLOPEN: 4,0\r\n"
        cmd_ok(e, "AT+QSSLCLOSE=4")


def test_unknown_ca_name_mismatch_and_seclevel_0(e, pki):
    with TlsEchoServer(pki.unknown_cert, pki.unknown_key) as srv:
        configure(e, pki)
        assert ssl_open(e, srv.port) == b"+QSSLOPEN: 4,564\r\n"
        assert srv.wait_handshake_failures(1) >= 1                     # the module aborted the handshake
        cmd_ok(e, 'AT+QSSLCFG="seclevel",1,0')                         # no authentication really means none
        assert ssl_open(e, srv.port) == b"+QSSLOPEN: 4,0\r\n"
        cmd_ok(e, "AT+QSSLCLOSE=4")
    with TlsEchoServer(pki.server_cert, pki.server_key) as srv:
        cmd_ok(e, 'AT+QSSLCFG="seclevel",1,1')
        assert ssl_open(e, srv.port, host="wrong-name.example") == b"+QSSLOPEN: 4,564\r\n"
        cmd_ok(e, 'AT+QSSLCFG="sni",1,1')
        assert ssl_open(e, srv.port, host="wrong-name.example") == b"+QSSLOPEN: 4,564\r\n"
        assert ssl_open(e, srv.port, host="127.0.0.1") == b"+QSSLOPEN: 4,0\r\n"     # IP SAN
        cmd_ok(e, "AT+QSSLCLOSE=4")


def test_version_and_cipher_suite_reach_the_wire(e, pki, tls_echo):
    configure(e, pki)
    cmd_ok(e, 'AT+QSSLCFG="sslversion",1,3')
    cmd_ok(e, 'AT+QSSLCFG="ciphersuite",1,0xC023')
    assert ssl_open(e, tls_echo.port) == b"+QSSLOPEN: 4,0\r\n"
    s = tls_echo.wait_sessions(1)[-1]
    assert s.version == "TLSv1.2" and s.cipher == "ECDHE-ECDSA-AES128-SHA256"
    cmd_ok(e, "AT+QSSLCLOSE=4")
    cmd_ok(e, 'AT+QSSLCFG="ciphersuite",1,0x002F')        # RSA key exchange: impossible with an EC server key
    assert ssl_open(e, tls_echo.port) == b"+QSSLOPEN: 4,564\r\n"
    cmd_ok(e, 'AT+QSSLCFG="ciphersuite",1,0xFFFF')
    cmd_ok(e, 'AT+QSSLCFG="sslversion",1,0')              # SSL 3.0 cannot be negotiated
    assert ssl_open(e, tls_echo.port) == b"+QSSLOPEN: 4,552\r\n"
    cmd_ok(e, 'AT+QSSLCFG="sslversion",1,4')
    assert ssl_open(e, tls_echo.port) == b"+QSSLOPEN: 4,0\r\n"
    assert tls_echo.wait_sessions(2)[-1].version == "TLSv1.2"      # the module has no TLS 1.3
    assert e.cmd(f'AT+QSSLOPEN=1,4,"{HOST}",{tls_echo.port},0') == b"\r\nERROR\r\n"   # id in use
    cmd_ok(e, "AT+QSSLCLOSE=4")


def test_remote_close_and_missing_ca_file(e, pki):
    with TlsEchoServer(pki.server_cert, pki.server_key, close_after=5) as srv:
        configure(e, pki)
        assert ssl_open(e, srv.port) == b"+QSSLOPEN: 4,0\r\n"
        e.write(b"AT+QSSLSEND=4,5\r")
        e.read_until(b"> ")
        e.write(b"12345")
        e.read_until(b"SEND OK\r\n")
        out = e.read_until(rb'"closed",4\r\n', timeout=5)
        assert b'+QSSLURC: "recv",4\r\n' in out
        assert e.cmd("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 5\r\n12345\r\nOK\r\n"
        assert b",4,4,0," in e.cmd("AT+QSSLSTATE")
        cmd_ok(e, "AT+QSSLCLOSE=4")
        cmd_ok(e, 'AT+QSSLCFG="cacert",2,"nothere.pem"')
        cmd_ok(e, 'AT+QSSLCFG="seclevel",2,1')
        assert ssl_open(e, srv.port, ctx=2) == b"+QSSLOPEN: 4,552\r\n"


def test_encrypted_client_key_with_password(e, pki, tls_echo_mtls):
    configure(e, pki, seclevel=2)
    upload(e, "client.pem", pki.client_cert.read_bytes())
    upload(e, "client_enc.key", pki.client_key_encrypted.read_bytes())
    cmd_ok(e, 'AT+QSSLCFG="clientcert",1,"client.pem"')
    cmd_ok(e, 'AT+QSSLCFG="clientkey",1,"client_enc.key","not-the-password"')
    assert ssl_open(e, tls_echo_mtls.port) == b"+QSSLOPEN: 4,552\r\n"          # the key cannot be decrypted
    cmd_ok(e, f'AT+QSSLCFG="clientkey",1,"client_enc.key","{pki.key_password.decode()}"')
    assert e.cmd('AT+QSSLCFG="clientkey",1') == b'\r\n+QSSLCFG: "clientkey",1,"client_enc.key"\r\n\r\nOK\r\n'
    assert ssl_open(e, tls_echo_mtls.port) == b"+QSSLOPEN: 4,0\r\n"
    assert tls_echo_mtls.wait_sessions(1)[-1].client_cert_presented
    cmd_ok(e, "AT+QSSLCLOSE=4")
