"""TI SimpleLink HTTP client against a real aiohttp server, HTTPS and a local HTTP proxy."""
from __future__ import annotations

import base64
import json
import re
import select
import socket
import threading


from peers.httpserver import pattern
from test_ti_common import ti  # noqa: F401  (ti is a fixture)

BODY = b'a=1,b="2"\r\n\x00\xffend'


class Proxy:
    """A tiny forwarding HTTP proxy (absolute-form requests, no CONNECT) that records request lines."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.lines: list[str] = []
        self.stop = False
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                c.close()
                return
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        first, *hdrs = head.split(b"\r\n")
        method, url, ver = first.decode().split(" ")
        self.lines.append(f"{method} {url}")
        m = re.match(r"http://([^/:]+):(\d+)(/.*)", url)
        up = socket.create_connection((m.group(1), int(m.group(2))))
        hdrs = [h for h in hdrs if not h.lower().startswith(b"proxy-")]
        up.sendall(f"{method} {m.group(3)} {ver}\r\n".encode() + b"\r\n".join(hdrs) + b"\r\n\r\n" + rest)
        socks = [c, up]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 10)
                if not r:
                    break
                for s in r:
                    d = s.recv(65536)
                    if not d:
                        raise EOFError
                    (up if s is c else c).sendall(d)
        except (EOFError, OSError):
            pass
        c.close()
        up.close()

    def close(self):
        self.stop = True
        self.srv.close()


def read_body(e, idx, chunk=700, fmt=0) -> tuple[bytes, int]:
    body, reads = b"", 0
    while True:
        reads += 1
        if fmt == 0:
            e.write(f"AT+HttpReadResBody={idx},0,{chunk}\r\n".encode())
            head = e.read_until(rb"\+httpreadresbody:\d+,\d,0,\d+,")
            more, n = map(int, re.search(rb",(\d),0,(\d+),$", head).groups())
            body += e.read_exactly(n)
            assert e.read_until(rb"\r\nOK\r\n") == b"\r\nOK\r\n"
        else:
            out = e.ok(f"AT+HttpReadResBody={idx},1,{chunk}")
            m = re.fullmatch(rb"\+httpreadresbody:\d+,(\d),1,(\d+),(\S*)\r\n", out)
            assert int(m.group(2)) == len(m.group(3))                    # Base64 characters, as TI prints
            more = int(m.group(1))
            body += base64.b64decode(m.group(3))
        if not more:
            return body, reads


def test_get_headers_and_chunked_body_reads(ti, http_server):
    assert ti.ok("AT+HttpCreate") == b"+httpcreate:0\r\n"
    assert ti.err("AT+HttpSendReq=0,get,/get,,,,") == b"process command,-3102"
    ti.ok(f"AT+HttpConnect=0,http://127.0.0.1:{http_server.port},,,,")
    ti.ok("AT+HttpSetHeader=0,req_user_agent,persistent,0,10,my-agent/1")
    ti.ok("AT+HttpSetHeader=0,req_accept,not_persistent,1,24," + base64.b64encode(b"application/json").decode())
    assert ti.ok("AT+HttpSendReq=0,get,/get?x=1,,,,") == b"+httpsendreq:200\r\n"
    body, _ = read_body(ti, 0, 40)
    seen = json.loads(body)
    hdrs = {k.lower(): v for k, v in seen["headers"]}
    assert hdrs["user-agent"] == "my-agent/1" and hdrs["accept"] == "application/json"
    assert seen["query"] in ({"x": "1"}, {"x": ["1"]})
    assert ti.ok("AT+HttpGetHeader=0,res_content_type,0,100").startswith(b"+httpgetheader:0,0,31,application/json")
    assert ti.err("AT+HttpGetHeader=0,res_etag,0,100") == b"process command,-3103"
    assert ti.err("AT+HttpGetHeader=0,req_accept,0,100") == b"process command,-3100"
    ti.ok("AT+HttpSendReq=0,get,/get,,,,")
    hdrs = {k.lower(): v for k, v in json.loads(read_body(ti, 0, 4000, fmt=1)[0])["headers"]}
    assert "accept" not in hdrs or hdrs["accept"] != "application/json"   # not persistent
    assert hdrs["user-agent"] == "my-agent/1"
    ti.ok("AT+HttpSetHeader=0,req_user_agent,persistent,0,0,")            # removed
    ti.ok("AT+HttpSendReq=0,get,/big?size=20000,,,,")
    body, reads = read_body(ti, 0, 3000)
    assert body == pattern(20000) and reads == 7
    ti.ok("AT+HttpSendReq=0,get,/big?size=5000,drop_body,,,")
    assert ti.ok("AT+HttpReadResBody=0,0,100") == b"+httpreadresbody:0,0,0,0,\r\n"



def test_response_header_filter(ti, http_server):
    """HttpSetHeader with a res_* option: only the named response headers are kept; not_persistent
    names for the next response only; HttpSetOpt res_filter_clear keeps all of them again."""
    ti.ok("AT+HttpCreate")
    ti.ok(f"AT+HttpConnect=0,127.0.0.1:{http_server.port},,,,")

    def has(option: str) -> bool:
        out = ti.cmd(f"AT+HttpGetHeader=0,{option},0,100")
        assert out.endswith(b"OK\r\n") or out == b"ERROR: process command,-3103\r\n", out
        return out.endswith(b"OK\r\n")

    ti.ok("AT+HttpSendReq=0,get,/get,drop_body,,,")
    assert has("res_content_type") and has("res_date") and has("res_server")       # no filter: all kept
    ti.ok("AT+HttpSetHeader=0,res_server,persistent,0,0,")
    ti.ok("AT+HttpSetHeader=0,res_content_type,not_persistent,0,0,")
    assert has("res_date")                                   # the filter applies from the next response
    ti.ok("AT+HttpSendReq=0,get,/get,drop_body,,,")
    assert has("res_server") and has("res_content_type") and not has("res_date")
    ti.ok("AT+HttpSendReq=0,get,/get,drop_body,,,")
    assert has("res_server") and not has("res_content_type") and not has("res_date")
    assert ti.err("AT+HttpSetHeader=0,res_server,sometimes,0,0,") == b"parse parameters,-4"
    ti.ok("AT+HttpSetOpt=0,res_filter_clear,1")
    ti.ok("AT+HttpSendReq=0,get,/get,drop_body,,,")
    assert has("res_server") and has("res_content_type") and has("res_date")


def test_post_raw_and_chunked(ti, http_server):
    ti.ok("AT+HttpCreate")
    ti.ok(f"AT+HttpConnect=0,127.0.0.1:{http_server.port},,,,")
    ti.write(f"AT+HttpSendReq=0,post,/post,,0,{len(BODY)},".encode() + BODY + b"\r\n")
    assert ti.read_until(rb"OK\r\n") == b"+httpsendreq:200\r\nOK\r\n"
    import hashlib
    info = json.loads(read_body(ti, 0)[0])
    assert info["length"] == len(BODY) and info["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert ti.err("AT+HttpSendReq=0,post,/post,,,,") == b"number of parameters,0"
    # chunked request body in three calls
    assert ti.ok("AT+HttpSendReq=0,put,/put,chunk_start,0,5,part1") == b"+httpsendreq:0\r\n"
    assert ti.ok("AT+HttpSendReq=0,put,/put,,1,8," + base64.b64encode(b"part2").decode()) == b"+httpsendreq:0\r\n"
    assert ti.ok("AT+HttpSendReq=0,put,/put,chunk_end,0,5,part3") == b"+httpsendreq:200\r\n"
    info = json.loads(read_body(ti, 0)[0])
    assert info["method"] == "PUT" and info["length"] == 15
    assert http_server.last("/put").body == b"part1part2part3"
    assert ti.ok("AT+HttpSendReq=0,del,/status/404,,,,") == b"+httpsendreq:404\r\n"
    assert ti.ok("AT+HttpSendReq=0,head,/get,,,,") == b"+httpsendreq:200\r\n"
    assert ti.ok("AT+HttpSendReq=0,options,/get,,,,") == b"+httpsendreq:200\r\n"


def test_redirects_and_options(ti, http_server):
    ti.ok("AT+HttpCreate")
    ti.ok(f"AT+HttpConnect=0,http://127.0.0.1:{http_server.port},,,,")
    assert ti.ok("AT+HttpSendReq=0,get,/redirect?to=/status/204,,,,") == b"+httpsendreq:204\r\n"
    ti.ok("AT+HttpSetOpt=0,redirect_feature,0")
    assert ti.ok("AT+HttpSendReq=0,get,/redirect?to=/status/204,,,,") == b"+httpsendreq:302\r\n"
    assert ti.ok("AT+HttpGetHeader=0,res_location,0,100") == b"+httpgetheader:0,0,11,/status/204\r\n"
    ti.ok("AT+HttpSetOpt=0,res_filter_clear,1")
    ti.ok("AT+HttpSetOpt=0,redirect_tls_downgrade,1")
    assert ti.err("AT+HttpSetOpt=0,bogus,1") == b"parse parameters,-4"
    ti.ok("AT+HttpDisconnect=0")
    assert ti.err("AT+HttpDisconnect=0") == b"process command,-3102"
    ti.ok("AT+HttpDestroy=0")
    assert ti.err("AT+HttpDestroy=0") == b"parse parameters,-4"           # TI: no such client


def test_https_redirect_to_http_needs_tls_downgrade(ti, https_server, http_server):
    ti.ok("AT+HttpCreate")
    ti.ok(f"AT+HttpConnect=0,https://127.0.0.1:{https_server.port},,,,")
    to_http = f"http://127.0.0.1:{http_server.port}/status/204"
    assert ti.ok("AT+HttpSendReq=0,get,/redirect?to=/status/201,,,,") == b"+httpsendreq:201\r\n"   # https -> https
    assert ti.err(f"AT+HttpSendReq=0,get,/redirect?to={to_http},,,,") == b"process command,-3017"
    assert http_server.requests == []                                     # the http hop was never made
    ti.ok("AT+HttpSetOpt=0,redirect_tls_downgrade,1")
    assert ti.ok(f"AT+HttpSendReq=0,get,/redirect?to={to_http},,,,") == b"+httpsendreq:204\r\n"


def test_https_ca_from_flash_and_errors(ti, https_server, pki):
    ti.put_file("/certs/ca.pem", pki.ca_cert.read_bytes())
    ti.put_file("/certs/other.pem", pki.other_ca_cert.read_bytes())
    ti.ok("AT+HttpCreate")
    ti.ok(f"AT+HttpConnect=0,https://localhost:{https_server.port},,,,/certs/ca.pem")
    assert ti.ok("AT+HttpSendReq=0,get,/get,,,,") == b"+httpsendreq:200\r\n"
    ti.ok("AT+HttpCreate")
    assert ti.err(f"AT+HttpConnect=1,https://localhost:{https_server.port},,,,/certs/other.pem") == b"process command,-468"
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    assert ti.err(f"AT+HttpConnect=1,http://127.0.0.1:{port},,,,") == b"process command,-111"
    assert ti.err("AT+HttpConnect=1,ftp://x,,,,") == b"parse parameters,-4"
    assert ti.err("AT+HttpConnect=7,http://x,,,,") == b"parse parameters,-4"
    for _ in range(2):
        ti.ok("AT+HttpCreate")
    assert ti.err("AT+HttpCreate") == b"process command,-3100"


def test_proxy(ti, http_server):
    proxy = Proxy()
    try:
        ti.ok(f"AT+HttpSetProxy=INET,{proxy.port},127.0.0.1")
        ti.ok("AT+HttpCreate")
        ti.ok(f"AT+HttpConnect=0,http://127.0.0.1:{http_server.port},,,,")
        assert ti.ok("AT+HttpSendReq=0,get,/get?via=proxy,,,,") == b"+httpsendreq:200\r\n"
        assert proxy.lines == [f"GET http://127.0.0.1:{http_server.port}/get?via=proxy"]
        ti.ok("AT+HttpCreate")
        ti.ok(f"AT+HttpConnect=1,http://127.0.0.1:{http_server.port},ignore_proxy,,,")
        assert ti.ok("AT+HttpSendReq=1,get,/get?via=direct,,,,") == b"+httpsendreq:200\r\n"
        assert len(proxy.lines) == 1
        ti.ok("AT+HttpSetProxy=INET,0,0.0.0.0")
        assert ti.err("AT+HttpSetProxy=INET,80,not-an-ip") == b"parse parameters,-4"
    finally:
        proxy.close()
