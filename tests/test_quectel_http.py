"""Quectel FCM242D HTTP(S) (AT+QHTTP*) over a real pty against a real aiohttp server."""
from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from harness import Emu
from peers.httpserver import pattern
from quectel_helpers import boot_quiet as boot, lab_emu, lab_wifi_up as wifi_up, ufs_upload as upload
from quectel_helpers import all_ok, urc_match as urc


@pytest.fixture
def emu():
    yield from lab_emu()


def set_url(e: Emu, url: str) -> None:
    assert e.cmd(f'AT+QHTTPCFG="url","{url}"') == b"\r\nOK\r\n"


def read_body(e: Emu, wait: int = 80, timeout: float = 10.0) -> tuple[bytes, int]:
    """AT+QHTTPREAD: return (bytes between CONNECT and OK, +QHTTPREAD err)."""
    e.write(f"AT+QHTTPREAD={wait}\r")
    e.read_until(rb"^\r\nCONNECT\r\n", timeout)
    out = e.read_until(rb"\r\nOK\r\n\r\n\+QHTTPREAD: (\d+)\r\n", timeout)
    m = re.search(rb"\r\nOK\r\n\r\n\+QHTTPREAD: (\d+)\r\n$", out)
    return out[: m.start()], int(m.group(1))


def send_body(e: Emu, line: str, body: bytes, chunk: int = 65536) -> bytes:
    e.write(line + "\r")
    e.read_until(rb"\r\nCONNECT\r\n")
    for i in range(0, len(body), chunk):
        e.write(body[i:i + chunk])
    return e.read_until(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n", timeout=30)


# ------------------------------------------------------------------------------------------ E10 / E11 / E12

def test_e10_get_with_response_header(emu, http_server):
    assert emu.cmd('AT+QHTTPCFG="rsp/header",1') == b"\r\nOK\r\n"
    set_url(emu, http_server.url("/get?x=1"))
    assert emu.cmd("AT+QHTTPGET=80") == b"\r\nOK\r\n"
    m = urc(emu, r"\+QHTTPGET: 0,200,(\d+)\r\n")
    length = int(m.group(1))
    data, err = read_body(emu)
    assert err == 0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {length}".encode() in head
    assert len(body) == length
    req = json.loads(body)
    assert req["method"] == "GET" and req["query"] == {"x": ["1"]}
    assert http_server.last("/get").header("User-Agent") == "QUECTEL_MODULE"
    # the response was consumed: a second read has nothing to give
    assert emu.cmd("AT+QHTTPREAD=80") == b"\r\n+CME ERROR: 705\r\n"


@pytest.mark.parametrize("verb", ["POST", "PUT"])
def test_e11_e12_post_put_form_body(emu, http_server, verb):
    set_url(emu, http_server.url(f"/{verb.lower()}"))
    assert send_body(emu, f"AT+QHTTP{verb}=20,80,80", b"Message=HelloQuectel") == b"\r\nOK\r\n"
    m = urc(emu, rf"\+QHTTP{verb}: 0,200,(\d+)\r\n")
    body, err = read_body(emu)
    assert err == 0 and len(body) == int(m.group(1))
    seen = http_server.last(f"/{verb.lower()}")
    assert seen.method == verb and seen.body == b"Message=HelloQuectel"
    assert seen.header("Content-Type") == "application/x-www-form-urlencoded"
    assert json.loads(body)["sha256"] == hashlib.sha256(b"Message=HelloQuectel").hexdigest()


def test_custom_headers_auth_and_content_type(emu, http_server):
    all_ok(emu, 'AT+QHTTPCFG="header","Content-Type: application/json"', 'AT+QHTTPCFG="header","X-Dev: 42"',
                'AT+QHTTPCFG="header","X-Gone: 1"', 'AT+QHTTPCFG="header","X-Gone"', 'AT+QHTTPCFG="auth","bob:pw"')
    assert emu.cmd('AT+QHTTPCFG="header"') == (b'\r\n+QHTTPCFG: "header","Content-Type: application/json"\r\n'
                                              b'+QHTTPCFG: "header","X-Dev: 42"\r\n\r\nOK\r\n')
    set_url(emu, http_server.url("/post"))
    assert send_body(emu, "AT+QHTTPPOST=7", b'{"a":1}') == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPPOST: 0,200,\d+\r\n")
    seen = http_server.last("/post")
    assert seen.header("Content-Type") == "application/json"
    assert seen.header("X-Dev") == "42" and seen.header("X-Gone") is None
    assert seen.header("Authorization") == "Basic Ym9iOnB3"
    assert seen.body == b'{"a":1}'


def test_form_option_multipart(emu, http_server):
    assert emu.cmd('AT+QHTTPCFG="form/option","file","log.txt","text/plain"') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QHTTPCFG="form/option"') == b'\r\n+QHTTPCFG: "form/option","file","log.txt","text/plain"\r\n\r\nOK\r\n'
    set_url(emu, http_server.url("/post"))
    assert send_body(emu, "AT+QHTTPPOST=5,10,10", b"hello") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPPOST: 0,200,\d+\r\n")
    seen = http_server.last("/post")
    ctype = seen.header("Content-Type")
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("=", 1)[1].encode()
    assert seen.body.startswith(b"--" + boundary + b"\r\n")
    assert b'name="file"; filename="log.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--' + boundary + b"--\r\n" in seen.body


# ------------------------------------------------------------------------------------------ large bodies

def test_get_5mb_streamed_in_chunks(emu, http_server):
    size = 5 * 1024 * 1024
    set_url(emu, http_server.url(f"/big?size={size}"))
    assert emu.cmd("AT+QHTTPGET") == b"\r\nOK\r\n"
    urc(emu, rf"\+QHTTPGET: 0,200,{size}\r\n")
    emu.write("AT+QHTTPREAD=80\r")
    emu.read_until(rb"\r\nCONNECT\r\n")
    h = hashlib.sha256()
    got = 0
    while got < size:
        chunk = emu.read_exactly(min(1 << 20, size - got), timeout=30)
        h.update(chunk)
        got += len(chunk)
    assert h.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
    assert emu.read_until(rb"\+QHTTPREAD: \d+\r\n") == b"\r\nOK\r\n\r\n+QHTTPREAD: 0\r\n"


def test_chunked_response_without_length(emu, http_server):
    set_url(emu, http_server.url("/big?size=70000&chunked=1"))
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    assert urc(emu, r"\+QHTTPGET: 0,200(,\d+)?\r\n").group(1) is None   # no Content-Length, none reported
    body, err = read_body(emu)
    assert err == 0 and body == pattern(70000)


def test_post_maximum_body_streamed(emu, http_server):
    size = 1024000                                  # the manual's <data_length> maximum
    body = pattern(size, 123)
    set_url(emu, http_server.url("/post"))
    assert send_body(emu, f"AT+QHTTPPOST={size},60,60", body) == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPPOST: 0,200,\d+\r\n", timeout=30)
    seen = http_server.last("/post")
    assert seen.length == size and seen.sha256 == hashlib.sha256(body).hexdigest()
    assert seen.header("Content-Length") == str(size)
    assert emu.cmd(f"AT+QHTTPPOST={size + 1},60,60") == b"\r\n+CME ERROR: 724\r\n"


# ------------------------------------------------------------------------------------------ timeouts, errors

def test_input_timeout_and_recovery(emu, http_server):
    set_url(emu, http_server.url("/put"))
    emu.write("AT+QHTTPPUT=100,1,10\r")
    emu.read_until(rb"\r\nCONNECT\r\n")
    emu.write(b"only-part")
    assert emu.read_until(rb"\+QHTTPPUT: \d+\r\n", timeout=5) == b"\r\n+QHTTPPUT: 720\r\n"
    time.sleep(0.2)
    assert all(r.path != "/put" or r.length != 100 for r in http_server.requests)
    # back in command mode, nothing was lost or misparsed
    assert emu.cmd("AT") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QHTTPREAD") == b"\r\n+CME ERROR: 705\r\n"
    assert send_body(emu, "AT+QHTTPPUT=3,5,5", b"abc") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPPUT: 0,200,\d+\r\n")


def test_error_codes(emu, http_server):
    assert emu.cmd("AT+QHTTPGET=5") == b"\r\n+CME ERROR: 708\r\n"             # no URL yet
    assert emu.cmd('AT+QHTTPCFG="url","ftp://x/y"') == b"\r\nERROR\r\n"
    for bad in ("AT+QHTTPGET=0", "AT+QHTTPGET=65536", 'AT+QHTTPGET="5"', "AT+QHTTPGET=5,5", "AT+QHTTPPOST=10,5",
                "AT+QHTTPPOST=0", "AT+QHTTPPUT=1024001", "AT+QHTTPPUT=x", "AT+QHTTPREAD=0", "AT+QHTTPREAD=1,2"):
        assert emu.cmd(bad) == b"\r\n+CME ERROR: 724\r\n", bad
    set_url(emu, "http://no-such-host.invalid/")
    assert emu.cmd("AT+QHTTPGET=5") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 710\r\n")
    closed = http_server.url("/").rsplit(":", 1)[0] + ":1/"
    set_url(emu, closed)
    assert emu.cmd("AT+QHTTPGET=5") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 712\r\n")
    assert emu.cmd("AT+QHTTPPOST=4,5,5") == b"\r\n+CME ERROR: 712\r\n"       # no CONNECT without a server
    set_url(emu, http_server.url("/slow?delay=3"))
    assert emu.cmd("AT+QHTTPGET=1") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 722\r\n", timeout=5)
    set_url(emu, http_server.url("/status/404"))
    assert emu.cmd("AT+QHTTPGET=5") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 0,404,10\r\n")
    body, err = read_body(emu)
    assert (body, err) == (b"status 404", 0)
    # a body cut short: QHTTPREAD reports 715 after OK
    set_url(emu, http_server.url("/truncated?size=100000"))
    assert emu.cmd("AT+QHTTPGET=5") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 0,200,100000\r\n")
    body, err = read_body(emu)
    assert err == 715 and body == pattern(50000)


def test_busy_stop_and_wifi_required(http_server):
    e = boot()
    try:
        set_url(e, http_server.url("/get"))
        assert e.cmd("AT+QHTTPGET=5") == b"\r\n+CME ERROR: 706\r\n"          # Wi-Fi not connected
        wifi_up(e)
        set_url(e, http_server.url("/slow?delay=2"))
        assert e.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
        assert e.cmd("AT+QHTTPGET=10") == b"\r\n+CME ERROR: 703\r\n"         # busy
        assert e.cmd("AT+QHTTPSTOP") == b"\r\nOK\r\n"
        e.expect_nothing(0.3)
        set_url(e, http_server.url("/get"))
        assert e.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
        urc(e, r"\+QHTTPGET: 0,200,\d+\r\n")
        assert e.cmd("AT+QHTTPSTOP") == b"\r\nOK\r\n"
        assert e.cmd("AT+QHTTPREAD") == b"\r\n+CME ERROR: 705\r\n"
        assert e.cmd("AT+QHTTPSTOP=?") == b"\r\nOK\r\n"
    finally:
        e.stop()


def test_auto_output_and_closed_indication(emu, http_server):
    assert emu.cmd('AT+QHTTPCFG="rspout/auto",1') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QHTTPCFG="closed/ind",1') == b"\r\nOK\r\n"
    set_url(emu, http_server.url("/big?size=40000"))
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 0,200,40000\r\n")
    got = b""
    while len(got) < 40000:
        m = urc(emu, r'\+QHTTPURC: "recv",(\d+)\r\n')
        got += emu.read_exactly(int(m.group(1)))
    assert got == pattern(40000)
    urc(emu, r'\+QHTTPURC: "closed"\r\n')
    assert emu.cmd("AT+QHTTPREAD") == b"\r\n+CME ERROR: 705\r\n"


def test_cfg_queries_and_test_forms(emu):
    out = emu.cmd("AT+QHTTPCFG=?")
    assert out.count(b"+QHTTPCFG: ") == 8
    assert emu.cmd('AT+QHTTPCFG="sslctxid"') == b'\r\n+QHTTPCFG: "sslctxid",1\r\n\r\nOK\r\n'
    assert emu.cmd('AT+QHTTPCFG="sslctxid",6') == b"\r\nERROR\r\n"
    assert emu.cmd('AT+QHTTPCFG="url","http://a.example/x"') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QHTTPCFG="url"') == b'\r\n+QHTTPCFG: "url","http://a.example/x"\r\n\r\nOK\r\n'
    assert emu.cmd('AT+QHTTPCFG="rsp/header"') == b'\r\n+QHTTPCFG: "rsp/header",0\r\n\r\nOK\r\n'
    assert emu.cmd("AT+QHTTPGET=?") == b"\r\n+QHTTPGET: (1-65535)\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QHTTPPOST=?") == b"\r\n+QHTTPPOST: (1-1024000),(1-65535),(1-65535)\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QHTTPPUT=?") == b"\r\n+QHTTPPUT: (1-1024000),(1-65535),(1-65535)\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QHTTPREAD=?") == b"\r\n+QHTTPREAD: (1-65535)\r\n\r\nOK\r\n"


# ------------------------------------------------------------------------------------------ HTTPS (E13-E15)

def test_e13_https_get_without_verification(emu, https_server):
    all_ok(emu, 'AT+QHTTPCFG="rsp/header",1', 'AT+QHTTPCFG="sslctxid",1', 'AT+QSSLCFG="sslversion",1,3',
                'AT+QSSLCFG="ciphersuite",1,0xFFFF', 'AT+QSSLCFG="seclevel",1,0')
    set_url(emu, https_server.url("/get"))
    assert emu.cmd("AT+QHTTPGET=80") == b"\r\nOK\r\n"
    length = int(urc(emu, r"\+QHTTPGET: 0,200,(\d+)\r\n").group(1))
    data, err = read_body(emu)
    head, _, body = data.partition(b"\r\n\r\n")
    assert err == 0 and head.startswith(b"HTTP/1.1 200 OK") and len(body) == length


@pytest.mark.parametrize("verb", ["POST", "PUT"])
def test_e14_e15_https_verified_with_certificates(emu, https_server, pki, verb):
    upload(emu, "ca.pem", pki.ca_cert.read_bytes())
    upload(emu, "user.pem", pki.client_cert.read_bytes())
    upload(emu, "user_key.pem", pki.client_key.read_bytes())
    all_ok(emu, 'AT+QHTTPCFG="sslctxid",1', 'AT+QSSLCFG="sslversion",1,4', 'AT+QSSLCFG="ciphersuite",1,0xFFFF',
                'AT+QSSLCFG="seclevel",1,2', 'AT+QSSLCFG="cacert",1,"ca.pem"',
                'AT+QSSLCFG="clientcert",1,"user.pem"', 'AT+QSSLCFG="clientkey",1,"user_key.pem"')
    set_url(emu, https_server.url(f"/{verb.lower()}"))
    body = b"Message=1111&Appleqty=2222&Orangeqty=3333&find=1"[:48]
    assert send_body(emu, f"AT+QHTTP{verb}=48,80,80", body) == b"\r\nOK\r\n"
    m = urc(emu, rf"\+QHTTP{verb}: 0,200,(\d+)\r\n")
    out, err = read_body(emu)
    assert err == 0 and len(out) == int(m.group(1))
    assert json.loads(out)["sha256"] == hashlib.sha256(body).hexdigest()
    assert https_server.last(f"/{verb.lower()}").body == body


def test_https_verification_fails_with_wrong_ca(emu, https_server, pki):
    upload(emu, "other.pem", pki.other_ca_cert.read_bytes())
    all_ok(emu, 'AT+QHTTPCFG="sslctxid",2', 'AT+QSSLCFG="seclevel",2,1', 'AT+QSSLCFG="cacert",2,"other.pem"')
    set_url(emu, https_server.url("/get"))
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 712\r\n")
    assert https_server.requests == []
    # the right CA: verified, request reaches the server
    upload(emu, "ca.pem", pki.ca_cert.read_bytes())
    assert emu.cmd('AT+QSSLCFG="cacert",2,"ca.pem"') == b"\r\nOK\r\n"
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 0,200,\d+\r\n")
    assert https_server.last("/get").method == "GET"
    # seclevel 1 without a CA file configured: the SSL context is unusable
    assert emu.cmd('AT+QHTTPCFG="sslctxid",3') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QSSLCFG="seclevel",3,1') == b"\r\nOK\r\n"
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\n+CME ERROR: 712\r\n"


def test_read_wait_time_expires_on_a_stalled_body(emu):
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    conns = []

    def serve():
        c, _ = srv.accept()
        conns.append(c)
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")

    threading.Thread(target=serve, daemon=True).start()
    try:
        set_url(emu, f"http://127.0.0.1:{srv.getsockname()[1]}/stall")
        assert emu.cmd("AT+QHTTPGET=5") == b"\r\nOK\r\n"
        urc(emu, r"\+QHTTPGET: 0,200,100\r\n")
        t0 = time.monotonic()
        body, err = read_body(emu, wait=1)
        assert (body, err) == (b"0123456789", 721)
        assert 0.9 < time.monotonic() - t0 < 3
        # again, and this time the AP goes away while the module waits for more of the body
        from atemu.api import change_world
        conns.clear()
        threading.Thread(target=serve, daemon=True).start()
        assert emu.cmd("AT+QHTTPGET=5") == b"\r\nOK\r\n"
        urc(emu, r"\+QHTTPGET: 0,200,100\r\n")
        emu.write("AT+QHTTPREAD=30\r")
        emu.read_until(rb"0123456789")
        emu.sync(lambda: change_world(emu.module, "remove_ap", ssid="lab"))
        out = emu.read_until(rb"\+QHTTPREAD: \d+\r\n", timeout=3)
        assert out == b"\r\nOK\r\n\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n\r\n+QHTTPREAD: 706\r\n"
    finally:
        srv.close()
        for c in conns:
            c.close()


def test_early_answer_while_the_host_is_still_sending(emu, http_server):
    # /status/413 answers without reading the body: the module keeps taking the body from the UART
    set_url(emu, http_server.url("/status/413"))
    body = pattern(300000)
    out = send_body(emu, f"AT+QHTTPPOST={len(body)},20,20", body)
    assert out == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPPOST: 0,413,10\r\n")
    body_out, err = read_body(emu)
    assert (body_out, err) == (b"status 413", 0)
    assert emu.cmd("AT") == b"\r\nOK\r\n"                       # none of the body was taken as a command
    assert http_server.last("/status/413").method == "POST"


def test_https_host_name_is_verified(emu, https_server, pki):
    hosts = emu.module.world.network.hosts
    emu.sync(lambda: hosts.update({"test.atemu.invalid": "127.0.0.1", "wrong.example": "127.0.0.1"}))
    upload(emu, "ca.pem", pki.ca_cert.read_bytes())
    all_ok(emu, 'AT+QHTTPCFG="sslctxid",4', 'AT+QSSLCFG="seclevel",4,1', 'AT+QSSLCFG="cacert",4,"ca.pem"')
    set_url(emu, https_server.url("/get", host="wrong.example"))
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 712\r\n")
    set_url(emu, https_server.url("/get", host="test.atemu.invalid"))
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    urc(emu, r"\+QHTTPGET: 0,200,\d+\r\n")
    body, err = read_body(emu)
    assert err == 0 and ["Host", f"test.atemu.invalid:{https_server.port}"] in json.loads(body)["headers"]


def test_wifi_loss_while_waiting_for_the_response(emu, http_server):
    from atemu.api import change_world
    set_url(emu, http_server.url("/slow?delay=3"))
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\nOK\r\n"
    emu.sync(lambda: change_world(emu.module, "remove_ap", ssid="lab"))
    got = emu.read_until(rb"\+QHTTPGET: \d+\r\n", timeout=3)
    assert got.endswith(b"+QHTTPGET: 706\r\n") and b"WLAN_DISCONNECTED" in got
    assert emu.cmd("AT+QHTTPGET=10") == b"\r\n+CME ERROR: 706\r\n"
