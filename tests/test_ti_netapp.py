"""TI SimpleLink NetApp: HTTP server on a host port, DNS, ping, mDNS services, settings."""
from __future__ import annotations

import base64
import re
import ssl
import threading
import urllib.error
import urllib.request

import pytest

from test_ti_common import joined, world


def fetch(url, data=None, headers=None, ctx=None, method=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type"), err.read()


def in_thread(fn, *a, **kw):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn(*a, **kw)), daemon=True)
    t.start()
    return t, box


@pytest.fixture
def ti():
    yield from joined(world(network={"hosts": {"printer.lab": "127.0.0.1"}},
                            options={"ti-simplelink.mdns_peers": [
                                {"name": "printer._ipp._tcp.local", "host": "printer.local", "ip": "127.0.0.1",
                                 "port": 631, "text": "rp=ipp/print"}]}))


def test_http_server_files_and_host_requests(ti):
    ti.put_file("/www/index.html", b"<h1>hello from flash</h1>")
    assert ti.ok("AT+NetAPPStart=HTTP_SERVER") == b""
    assert ti.err("AT+NetAPPStart=HTTP_SERVER") == b"process command,-114"
    port = ti.sync(lambda: ti.module.profile.http_port)
    base = f"http://127.0.0.1:{port}"
    assert fetch(base + "/") == (200, "text/html", b"<h1>hello from flash</h1>")
    # a request the NWP cannot answer goes to the host application
    body = b'{"led": "on", "x": 1}\r\nmore,data'
    t, box = in_thread(fetch, base + "/api/led?id=3", data=body, headers={"Content-Type": "application/json"})
    ev = ti.read_until(rb"\+eventnetapp:request,[^\r]*\r\n", 10)
    m = re.search(rb"\+eventnetapp:request,(\d+),post,/api/led\?id=3,(\d+)\r\n", ev)
    h, n = int(m.group(1)), int(m.group(2))
    assert n == len(body)
    ti.write(f"AT+NetAPPRecv={h},0,10\r\n".encode())     # TI: no early OK, the value line then OK
    head = ti.read_until(rb"\+netapprecv:\d+,\w+,0,\d+,")
    assert head == f"+netapprecv:{h},continuation,0,10,".encode()
    assert ti.read_exactly(10) == body[:10]
    ti.read_until(rb"\r\nOK\r\n")
    rest = ti.ok(f"AT+NetAPPRecv={h},1,100") + b"OK\r\n"
    assert rest == f"+netapprecv:{h},0,1,{len(base64.b64encode(body[10:]))},".encode() + base64.b64encode(body[10:]) + b"\r\nOK\r\n"
    ti.ok(f"AT+NetAPPSend={h},METADATA,0,20,201;application/json")
    ti.write(f"AT+NetAPPSend={h},CONTINUATION,0,8,".encode() + b'{"ok":\r\n' + b"\r\n")
    ti.read_until(rb"OK\r\n")
    ti.ok(f"AT+NetAPPSend={h},,1,4,{base64.b64encode(b' 1}').decode()}")
    t.join(10)
    assert box["r"] == (201, "application/json", b'{"ok":\r\n 1}')
    assert ti.err(f"AT+NetAPPSend={h},,0,1,x") == b"process command,-2181"
    assert ti.err("AT+NetAPPRecv=999,0,10") == b"process command,-2181"
    ti.ok("AT+NetAPPStop=HTTP_SERVER")
    with pytest.raises(OSError):
        fetch(base + "/")
    assert ti.err("AT+NetAPPStop=HTTP_SERVER") == b"process command,-2180"


def test_http_server_accumulated_answer(ti):
    """ACCUMULATION: the NWP collects the chunks; the one without CONTINUATION ends the answer."""
    ti.ok("AT+NetAPPStart=HTTP_SERVER")
    port = ti.sync(lambda: ti.module.profile.http_port)
    t, box = in_thread(fetch, f"http://127.0.0.1:{port}/api/acc")
    h = int(re.search(rb"\+eventnetapp:request,(\d+),get,/api/acc,0\r\n",
                      ti.read_until(rb"\+eventnetapp:request,[^\r]*\r\n", 10)).group(1))
    ti.ok(f"AT+NetAPPSend={h},METADATA,0,14,200;text/plain")
    ti.ok(f"AT+NetAPPSend={h},ACCUMULATION|CONTINUATION,0,3,ab,")
    ti.ok(f"AT+NetAPPSend={h},ACCUMULATION,0,2,cd")
    t.join(5)
    assert box.get("r") == (200, "text/plain", b"ab,cd")


def test_http_server_auth_and_https(ti, pki):
    ti.ok("AT+NetAPPSet=HTTP_SERVER,AUTH_CHECK,1")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,AUTH_NAME,user")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,AUTH_PASSWORD,pw")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,AUTH_REALM,myrealm")
    assert ti.err("AT+NetAPPSet=HTTP_SERVER,AUTH_NAME,abcdefghijklmnopqrstuvwxyz") == b"parse parameters,-4"
    ti.put_file("/srv/cert.pem", pki.server_cert.read_bytes())
    ti.put_file("/srv/key.pem", pki.server_key.read_bytes())
    ti.put_file("/www/a.txt", b"secret text")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,DEV_CERT_FILE,/srv/cert.pem")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,PRIV_KEY_FILE,/srv/key.pem")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,PRIM_PORT_SEC_EN,1")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,PRIM_PORT_NUM,443")
    assert ti.ok("AT+NetAPPGet=HTTP_SERVER,PRIM_PORT_NUM") == b"+netappget:443\r\n"
    assert ti.err("AT+NetAPPGet=HTTP_SERVER,PRIV_KEY_FILE") == b"parse parameters,-4"
    ti.ok("AT+NetAPPStart=HTTP_SERVER")
    port = ti.sync(lambda: ti.module.profile.http_port)
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    url = f"https://localhost:{port}/a.txt"
    st, _, _ = fetch(url, ctx=ctx)
    assert st == 401
    auth = "Basic " + base64.b64encode(b"user:pw").decode()
    assert fetch(url, headers={"Authorization": auth}, ctx=ctx) == (200, "text/plain", b"secret text")


def test_dns_and_dns_client_time(ti):
    assert ti.ok("AT+netAppGetHostByName=printer.lab,INET") == b"+netappgethostbyname:printer.lab,127.0.0.1\r\n"
    ti.ok("AT+NetAPPSet=DNS_CLIENT,TIME,300,0")
    assert ti.ok("AT+NetAPPGet=DNS_CLIENT,TIME") == b"+netappget:300,0\r\n"
    ti.sync(lambda: setattr(ti.module.resolver, "fault", "timeout"))
    assert ti.err("AT+NetAPPGetHostByName=slow.example,INET") == b"process command,-161"   # no OK before it
    ti.sync(lambda: setattr(ti.module.resolver, "fault", None))
    assert ti.err("AT+NetAPPGetHostByName=printer.lab,IPX") == b"parse parameters,-4"


def test_ping_loopback(ti):
    # TI: OK when the ping starts, then the report line(s) and no second OK
    assert ti.ok("AT+netAppPing=INET,127.0.0.1,32,10,1000,3,0") == b""
    out = ti.read_until(rb"\+netappping:[^\r]*\r\n", 10)
    assert re.fullmatch(rb"\+netappping:3,3,\d+\r\n", out)
    ti.expect_nothing(0.3)
    ti.ok("AT+NetAPPPing=INET,127.0.0.1,16,10,1000,2,1")
    out = ti.read_until(rb"\+netappping:2,2,\d+\r\n", 10)
    assert re.fullmatch(rb"\+netappping:1,1,\d+\r\n\+netappping:2,2,\d+\r\n", out)
    ti.expect_nothing(0.3)
    ti.ok("AT+NetAPPPing=INET,127.0.0.1,16,50,1000,0,0")           # forever, until stopped
    assert ti.err("AT+NetAPPPing=INET,127.0.0.1,16,50,1000,0,0") == b"process command,-114"
    import time
    time.sleep(0.3)
    assert ti.ok("AT+NetAPPPing=INET,0,0,0,1,0,0") == b""
    out = ti.read_until(rb"\+netappping:[^\r]*\r\n", 5)
    sent, recv = map(int, re.search(rb"\+netappping:(\d+),(\d+),", out).groups())
    assert sent >= 2 and recv == sent
    assert ti.err("AT+NetAPPPing=INET,0,0,0,1,0,0") == b"process command,-2180"
    ti.ok("AT+NetAPPPing=INET,127.0.0.1,16,0,1000,5,2")               # stop at the first success
    assert ti.read_until(rb"\+netappping:[^\r]*\r\n", 10).startswith(b"+netappping:1,1,")
    ti.expect_nothing(0.3)


def test_mdns_services_and_settings(ti):
    assert ti.err("AT+NetAPPGetServiceList=0,10,FULL_IPV4") == b"process command,-2180"
    ti.ok("AT+NetAPPStart=MDNS|DHCP_SERVER")
    ti.ok('AT+NetAPPRegisterService=dev1._http._tcp.local,"path=/,x",8080,120,IS_UNIQUE_BIT')
    assert ti.err("AT+NetAPPRegisterService=dev1._http._tcp.local,t,8080,120,") == b"process command,-114"
    ti.ok("AT+NetAPPRegisterService=dev1._http._tcp.local,new text,8080,120,UPDATE_TEXT|IS_NOT_PERSISTENT")
    assert ti.err("AT+NetAPPRegisterService=nodots,t,1,1,") == b"parse parameters,-4"
    out = ti.ok("AT+NetAPPGetServiceList=0,10,FULL_IPV4_WITH_TEXT")
    assert out == (b"+netappgetservicelist:127.0.0.1,631,printer._ipp._tcp.local,printer.local,rp=ipp/print;"
                   b"192.168.7.20,8080,dev1._http._tcp.local,mysimplelink.local,new text\r\n")
    assert ti.ok("AT+NetAPPGetServiceList=1,1,SHORT_IPV4") == b"+netappgetservicelist:192.168.7.20,8080\r\n"
    assert ti.ok("AT+NetAPPGetServiceList=0,5,SHORT_IPV6") == b"+netappgetservicelist:\r\n"
    assert ti.ok("AT+NetAPPGetHostByService=printer._ipp._tcp.local,INET") == \
        b"+netappgethostbyservice:printer._ipp._tcp.local,631,127.0.0.1,rp=ipp/print\r\n"
    assert ti.ok("AT+NetAPPGetHostByService=_http._tcp,INET").startswith(      # partial name
        b"+netappgethostbyservice:dev1._http._tcp.local,8080,192.168.7.20,")
    ti.ok("AT+NetAPPSet=DNS_CLIENT,TIME,100,0")
    assert ti.err("AT+NetAPPGetHostByService=nothing._x._tcp.local,INET") == b"process command,-161"
    ti.ok("AT+NetAPPUnRegisterService=dev1._http._tcp.local,")
    assert ti.err("AT+NetAPPUnRegisterService=dev1._http._tcp.local,") == b"process command,-2181"
    ti.ok("AT+NetAPPSet=HTTP_SERVER,TMP_REGISTER_SERVICE,tmp._http._tcp.local")
    assert b"tmp._http._tcp.local" in ti.ok("AT+NetAPPGetServiceList=0,10,FULL_IPV4")
    ti.ok("AT+NetAPPSet=HTTP_SERVER,TMP_UNREGISTER_SERVICE,tmp._http._tcp.local")
    ti.ok("AT+NetAPPSet=MDNS,CONT_QUERY,_ipp._tcp.local")
    assert ti.ok("AT+NetAPPGet=MDNS,CONT_QUERY") == b"+netappget:_ipp._tcp.local\r\n"
    ti.ok("AT+NetAPPSet=MDNS,QEVETN_MASK,ipp|http")
    assert ti.ok("AT+NetAPPGet=MDNS,QEVENT_MASK") == b"+netappget:ipp|http\r\n"
    ti.ok("AT+NetAPPSet=MDNS,TIMING_PARAMS,100,3,2,0,0,0")
    assert ti.ok("AT+NetAPPGet=MDNS,TIMING_PARAMS") == b"+netappget:100,3,2,0,0,0\r\n"
    ti.ok("AT+NetAPPSet=DHCP_SERVER,BASIC,3600,10.123.45.10,10.123.45.20")
    assert ti.ok("AT+NetAPPGet=DHCP_SERVER,BASIC") == b"+netappget:3600,10.123.45.10,10.123.45.20\r\n"
    assert ti.err("AT+NetAPPSet=DHCP_SERVER,BASIC,3600,10.123.45.30,10.123.45.20") == b"parse parameters,-4"
    assert ti.err("AT+NetAPPSet=DEVICE,URN,abcdefghijklmnopqrstuvwxyz0123456789") == b"parse parameters,-4"
    ti.ok("AT+NetAPPSet=HTTP_SERVER,ROM_PAGES_ACCESS,0")
    assert ti.ok("AT+NetAPPGet=HTTP_SERVER,ROM_PAGES_ACCESS") == b"+netappget:0\r\n"
    ti.ok("AT+NetAPPStop=DHCP_SERVER|MDNS")
    assert ti.err("AT+NetAPPStart=") == b"number of parameters,0"
    assert ti.err("AT+NetAPPStart=FTP_SERVER") == b"parse parameters,-4"
