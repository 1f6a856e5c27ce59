"""HttpClient against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import tracemalloc

import pytest

from atemu.net.dns import Resolver
from atemu.net.errors import NetError
from atemu.net.http import HttpClient
from atemu.net.tls import client_context
from peers.httpserver import HangingListener, pattern
from peers.mosquitto import free_port

MB = 1 << 20


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def read_all(resp, chunk: int = 65536) -> bytes:
    parts = []
    while True:
        data = await resp.read(chunk)
        if not data:
            return b"".join(parts)
        assert len(data) <= chunk
        parts.append(data)


def test_get_sends_custom_headers_and_exposes_response_headers(http_server):
    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request(
                "GET",
                http_server.url("/get?a=1&a=2&b=x"),
                headers=[("X-Device", "thing-1"), ("X-Multi", "one"), ("X-Multi", "two")],
            )
            assert (resp.status, resp.reason) == (200, "OK")
            assert resp.header("content-type").startswith("application/json")
            names = [n.lower() for n, _ in resp.headers]
            assert "content-length" in names and "date" in names
            raw = resp.raw_header_bytes()
            assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
            assert raw.endswith(b"\r\n\r\n")
            assert b"\r\nContent-Type: application/json" in raw
            body = json.loads(await read_all(resp))
            assert resp.content_length == len(json.dumps(body)) or resp.content_length > 0
            await resp.close()
        return body

    body = run(main())
    assert body["method"] == "GET"
    assert body["query"] == {"a": ["1", "2"], "b": ["x"]}
    rec = http_server.last("/get")
    assert rec.header("X-Device") == "thing-1"
    assert [v for n, v in rec.headers if n == "X-Multi"] == ["one", "two"]
    # bodies are passed through raw, so no compression is asked for
    assert rec.header("Accept-Encoding") is None


def test_dict_headers_and_dns_override_for_fake_hostname(http_server):
    async def main():
        resolver = Resolver({"api.device.test": "127.0.0.1"})
        async with HttpClient(resolver) as client:
            resp = await client.request(
                "GET", http_server.url("/get", host="api.device.test"), headers={"Authorization": "Bearer t0k"}
            )
            assert resp.status == 200
            await read_all(resp)

    run(main())
    rec = http_server.last("/get")
    assert rec.header("Host") == f"api.device.test:{http_server.port}"
    assert rec.header("Authorization") == "Bearer t0k"


def test_plain_http_proxy_gets_absolute_form_request(http_server):
    """The test server doubles as a forward proxy: the client must hand the
    whole URL to it and never resolve the origin host itself."""

    async def main():
        resolver = Resolver()
        resolver.fault = "fail"  # any name lookup would fail
        async with HttpClient(resolver) as client:
            resp = await client.request(
                "GET", "http://origin.device.test/get?via=proxy", proxy=http_server.url("")
            )
            assert resp.status == 200
            return json.loads(await read_all(resp))

    body = run(main())
    assert body["query"] == {"via": ["proxy"]}
    assert http_server.last("/get").header("Host") == "origin.device.test"


def test_post_streams_a_5mb_body_from_an_async_iterator(http_server):
    size = 5 * MB
    expected = hashlib.sha256(pattern(size)).hexdigest()
    produced = []

    async def body():
        for off in range(0, size, 256 * 1024):
            chunk = pattern(min(256 * 1024, size - off), off)
            produced.append(len(chunk))
            yield chunk

    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request(
                "POST",
                http_server.url("/post"),
                headers={"Content-Type": "application/octet-stream"},
                body=body(),
            )
            assert resp.status == 200
            return json.loads(await read_all(resp))

    echo = run(main())
    assert echo["length"] == size and echo["sha256"] == expected
    assert echo["content_type"] == "application/octet-stream"
    assert echo["chunked"] is True  # streamed, not buffered into one body
    assert len(produced) == 20


def test_put_bytes_body_with_content_length(http_server):
    payload = bytes(range(256)) * 3

    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request("PUT", http_server.url("/put"), body=payload)
            return json.loads(await read_all(resp))

    echo = run(main())
    assert echo["method"] == "PUT"
    assert echo["length"] == len(payload) and not echo["chunked"]
    assert http_server.last("/put").body == payload


@pytest.mark.parametrize("chunked", [False, True])
def test_get_streams_a_5mb_response_without_buffering_it(http_server, chunked):
    size = 5 * MB

    async def main():
        async with HttpClient(Resolver()) as client:
            url = http_server.url(f"/big?size={size}" + ("&chunked=1" if chunked else ""))
            resp = await client.request("GET", url)
            assert resp.status == 200
            assert resp.content_length == (None if chunked else size)
            h = hashlib.sha256()
            total = 0
            tracemalloc.start()
            try:
                while True:
                    data = await resp.read(4096)
                    if not data:
                        break
                    h.update(data)
                    total += len(data)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert resp.at_eof
            assert await resp.read(10) == b""
            return total, h.hexdigest(), peak

    total, digest, peak = run(main())
    assert total == size
    assert digest == hashlib.sha256(pattern(size)).hexdigest()
    assert peak < 2 * MB  # the body never sat in memory whole


def test_file_route_and_readexactly(http_server):
    blob = bytes(range(256)) * 40
    path = http_server.add_file("fw.bin", blob)

    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request("GET", http_server.url(path))
            head = await resp.readexactly(1000)
            rest = await resp.readexactly(100000)
            return head, rest

    head, rest = run(main())
    assert head == blob[:1000] and rest == blob[1000:]


def test_error_status_is_a_response_not_an_exception(http_server):
    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request("GET", http_server.url("/status/404"))
            assert (resp.status, resp.reason) == (404, "Not Found")
            assert await read_all(resp) == b"status 404"
            assert resp.raw_header_bytes().startswith(b"HTTP/1.1 404 Not Found\r\n")

    run(main())


def test_redirects_followed_only_when_asked(http_server):
    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request("GET", http_server.url("/redirect?to=/get"))
            assert resp.status == 302
            assert resp.header("Location") == "/get"
            await resp.close()
            resp = await client.request("GET", http_server.url("/redirect?to=/get"), allow_redirects=True)
            assert resp.status == 200
            assert resp.url.endswith("/get")
            await read_all(resp)

    run(main())


def test_slow_server_times_out(http_server):
    async def main():
        async with HttpClient(Resolver()) as client:
            t0 = time.monotonic()
            with pytest.raises(NetError) as ei:
                await client.request("GET", http_server.url("/slow?delay=3"), timeout=0.3)
            assert ei.value.kind == "timeout"
            assert time.monotonic() - t0 < 2

    run(main())


def test_hanging_connect_times_out():
    async def main():
        with HangingListener() as hang:
            async with HttpClient(Resolver()) as client:
                t0 = time.monotonic()
                with pytest.raises(NetError) as ei:
                    await client.request("GET", f"http://127.0.0.1:{hang.port}/", timeout=0.4)
                assert ei.value.kind == "timeout"
                assert time.monotonic() - t0 < 2

    run(main())


def test_truncated_body_raises_closed(http_server):
    async def main():
        async with HttpClient(Resolver()) as client:
            resp = await client.request("GET", http_server.url("/truncated?size=200000"))
            assert resp.content_length == 200000
            with pytest.raises(NetError) as ei:
                await read_all(resp)
            assert ei.value.kind == "closed"
            assert resp.bytes_read == 100000

    run(main())


def test_refused_port_raises_refused():
    async def main():
        async with HttpClient(Resolver()) as client:
            with pytest.raises(NetError) as ei:
                await client.request("GET", f"http://127.0.0.1:{free_port()}/", timeout=5)
            assert ei.value.kind == "refused"

    run(main())


def test_dns_failure_keeps_resolver_error_kind():
    async def main():
        resolver = Resolver()
        async with HttpClient(resolver) as client:
            resolver.fault = "fail"
            with pytest.raises(NetError) as ei:
                await client.request("GET", "http://nowhere.device.test/")
            assert ei.value.kind == "dns"
            resolver.fault = "timeout"
            with pytest.raises(NetError) as ei:
                await client.request("GET", "http://nowhere.device.test/", timeout=0.2)
            assert ei.value.kind == "dns_timeout"

    run(main())


def test_invalid_url_raises_invalid():
    async def main():
        async with HttpClient(Resolver()) as client:
            with pytest.raises(NetError) as ei:
                await client.request("GET", "ftp://127.0.0.1/x")
            assert ei.value.kind == "invalid"

    run(main())


# ---------------------------------------------------------------------- TLS
def test_https_verified_against_test_ca(https_server, pki):
    async def main():
        async with HttpClient(Resolver()) as client:
            ctx = client_context(ca=str(pki.ca_cert))
            resp = await client.request("GET", https_server.url("/get", host="localhost"), ssl=ctx)
            assert resp.status == 200
            return json.loads(await read_all(resp))

    assert run(main())["method"] == "GET"


def test_https_with_fake_hostname_through_dns_override(https_server, pki):
    name = next(h for h in pki.hostnames if h != "localhost" and not h[0].isdigit())

    async def main():
        async with HttpClient(Resolver({name: "127.0.0.1"})) as client:
            ctx = client_context(ca=str(pki.ca_cert))
            resp = await client.request("GET", https_server.url("/get", host=name), ssl=ctx)
            assert resp.status == 200
            await read_all(resp)

    run(main())
    assert https_server.last("/get").header("Host") == f"{name}:{https_server.port}"


def test_https_wrong_ca_raises_tls_verify(https_server, pki):
    async def main():
        async with HttpClient(Resolver()) as client:
            ctx = client_context(ca=str(pki.other_ca_cert))
            with pytest.raises(NetError) as ei:
                await client.request("GET", https_server.url("/get", host="localhost"), ssl=ctx)
            assert ei.value.kind == "tls_verify"
            # system CAs do not know the test CA either
            with pytest.raises(NetError) as ei:
                await client.request("GET", https_server.url("/get", host="localhost"))
            assert ei.value.kind == "tls_verify"
            # verification off: the same server is reachable
            resp = await client.request("GET", https_server.url("/get", host="localhost"), ssl=False)
            assert resp.status == 200
            await read_all(resp)

    run(main())


def test_https_hostname_mismatch_raises_tls_verify(https_server, pki):
    async def main():
        resolver = Resolver({"elsewhere.device.test": "127.0.0.1"})
        async with HttpClient(resolver) as client:
            ctx = client_context(ca=str(pki.ca_cert))
            with pytest.raises(NetError) as ei:
                await client.request("GET", https_server.url("/get", host="elsewhere.device.test"), ssl=ctx)
            assert ei.value.kind == "tls_verify"

    run(main())
