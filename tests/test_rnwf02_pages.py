"""rnwf02: the guide's pages the first readings could not reach, read in Microchip's AT Command
Reference for RNWF02 (MicrochipTech/WINCS02-RNWF02-Releases, RNWF02/doc): +MQTTPUBACK:<PACKET_ID>,
+MQTTPUBCOMP:<PACKET_ID>, +MQTTSUB:<REASON_CODE>; checked over a pty with CR LF against mosquitto."""
from __future__ import annotations

import re
import time

from atemu.profile import find_profile
from rnwf_helpers import Rnwf
from test_rnwf02_mqtt import configure, connect, e  # noqa: F401  (e: the joined module fixture)
from test_rnwf02_net import load, xmodem_send


def broker_packet_id(mosquitto, client: str, qos: int, topic: str, timeout: float = 5.0) -> int:
    """The packet id mosquitto logged for the PUBLISH ``client`` sent on ``topic``."""
    pat = re.compile(rf"Received PUBLISH from {re.escape(client)} \(d0, q{qos}, r0, m(\d+), '{re.escape(topic)}'")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = pat.search(mosquitto.log_path.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError(f"mosquitto did not log the PUBLISH on {topic}")


def test_publish_acks_carry_the_packet_id(e, mosquitto):
    configure(e, mosquitto.port, client_id="rnwf-pages")
    connect(e)
    ids = []
    for qos, topic, aec in ((1, "pages/a", b"PUBACK"), (1, "pages/b", b"PUBACK"), (2, "pages/c", b"PUBCOMP")):
        assert e.cmd(f'AT+MQTTPUB=0,{qos},0,"{topic}","x"') == b"OK\r\n"
        got = e.read_until(rb"\+MQTTPUB\w+:\d+\r\n", timeout=5)
        m = re.fullmatch(rb"\r\+MQTT" + aec + rb":(\d+)\r\n", got)
        assert m, got
        # the AEC's <PACKET_ID> is the id of the PUBLISH packet the broker received
        assert int(m.group(1)) == broker_packet_id(mosquitto, "rnwf-pages", qos, topic)
        ids.append(int(m.group(1)))
    assert len(set(ids)) == 3


def test_subscribe_reports_the_granted_qos(e, mosquitto):
    configure(e, mosquitto.port, client_id="rnwf-pages-sub")
    connect(e)
    for qos in (2, 0):
        assert e.cmd(f'AT+MQTTSUB="pages/q{qos}",{qos}') == b"OK\r\n"
        assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:%d\r\n" % qos
    assert e.cmd("AT+MQTTSUBLST") == b'+MQTTSUBLST:"pages/q2",2\r\n+MQTTSUBLST:"pages/q0",0\r\nOK\r\n'


def test_describe_shows_the_reference_forms():
    d = find_profile("rnwf02").describe()
    urcs = {u["name"]: u for u in d["urcs"]}
    assert "<PACKET_ID>" in urcs["+MQTTPUBACK"]["format"] and "<PACKET_ID>" in urcs["+MQTTPUBCOMP"]["format"]
    sub = [c for c in d["commands"] if c["name"] == "AT+MQTTSUB"]
    assert sub and all("granted QoS" in c["doc"] and "1 (failed)" not in c["doc"] for c in sub)


def test_rnwf11_read_threshold_defaults_to_128(mosquitto, mqtt_probe):
    """RNWF11 guide, Appendix A.5: READ_THRESHOLD is 128 by default; a longer message is announced
    with its message id and length and read with AT+MQTTSUBRD."""
    probe = mqtt_probe(mosquitto)
    with Rnwf(profile="rnwf11") as e:
        assert e.cmd("AT+MQTTC=9") == b"+MQTTC:9,128\r\nOK\r\n"
        e.join()
        configure(e, mosquitto.port, client_id="rnwf11-pages")
        connect(e)
        assert e.cmd('AT+MQTTSUB="twin/res",1') == b"OK\r\n"
        assert e.read_until(rb"\+MQTTSUB:\d+\r\n", timeout=5) == b"\r+MQTTSUB:1\r\n"
        probe.publish("twin/res", b"s" * 128, qos=0)
        assert e.aec(rb'\r\+MQTTSUBRX:0,0,0,"twin/res","(s+)"\r\n', timeout=5).group(1) == b"s" * 128
        long = b'{"desired":{"rate":' + b"7" * 150 + b"}}"
        probe.publish("twin/res", long, qos=0)
        m = e.aec(rb'\r\+MQTTSUBRX:0,0,0,"twin/res",(\d+),(\d+)\r\n', timeout=5)
        assert int(m.group(2)) == len(long)
        assert e.cmd(f'AT+MQTTSUBRD="twin/res",{m.group(1).decode()},{len(long)}') == (
            b'+MQTTSUBRD:%d,"%s"\r\nOK\r\n' % (len(long), long.replace(b'"', b'\\"')))


def test_socktls_before_sockbr_opens_a_tls_client_socket(pki, tls_echo):
    """The specification's example "Open a TLS client socket": AT+SOCKTLS on the new socket, then
    AT+SOCKBR; +SOCKIND when connected, +SOCKTLS after the handshake (SNI: the host connected to)."""
    with Rnwf() as e:
        e.join()
        load(e, 1, "ca", pki.ca_cert.read_bytes())
        assert e.cmd("AT+SOCKO=2") == b"+SOCKO:1\r\nOK\r\n"
        e.oks('AT+TLSC=2,1,"nothere"', 'AT+TLSC=1,1,"ca"')
        # the configuration is checked at once: a CA file not in the file system is 17.0
        assert e.cmd("AT+SOCKTLS=1,2") == b'ERROR:17.0,"CA Cert Missing"\r\n'
        assert e.cmd("AT+SOCKTLS=1,1") == b"OK\r\n"
        assert e.cmd(f'AT+SOCKBR=1,"localhost",{tls_echo.address[1]}') == b"OK\r\n"
        got = e.read_until(rb"\+SOCK(?:TLS|ERR):.*?\r\n", timeout=10)
        assert re.fullmatch(rb'\r\+SOCKIND:1,"127\.0\.0\.1",\d+,"127\.0\.0\.1",%d\r\n\r\+SOCKTLS:1\r\n'
                            % tls_echo.address[1], got), got
        assert e.cmd('AT+SOCKWR=1,9,"over tls!"') == b"OK\r\n"
        e.aec(rb"\+SOCKRXT:1,9\r\n")
        assert e.cmd("AT+SOCKRD=1,1,100") == b'+SOCKRD:1,9,"over tls!"\r\nOK\r\n'
        assert tls_echo.wait_sessions(1)[0].sni == "localhost"
        # a TLS listening socket (AT+SOCKTLS before AT+SOCKBL) is not emulated: 14.6, said at once
        assert e.cmd("AT+SOCKO=2") == b"+SOCKO:2\r\nOK\r\n"
        assert e.cmd("AT+SOCKTLS=2,1") == b"OK\r\n"
        assert e.cmd("AT+SOCKBL=2,0") == b'ERROR:14.6,"Socket TLS Failed"\r\n'


def test_fs_load_prints_the_raw_mode_hash_before_the_xmodem_handshake(pki):
    """The specification's "File transfer using XModem+CRC" example: AT+FS=1,..., then '#' (raw
    binary mode indicator), then 'C' ...; public RNWF11 upload scripts wait for the '#'."""
    ca = pki.ca_cert.read_bytes()
    with Rnwf(echo=True) as e:
        line = f'AT+FS=1,1,2,"ISRGRootX1",{len(ca)}\r\n'.encode()
        e.write(line)
        assert e.read_until(b"C", timeout=5) == line + b"#C"
        xmodem_send(e, ca, 2)
        assert e.read_until(rb"OK\r\n>") == b"OK\r\n>"
        assert (e.state_dir / "fs" / "certs" / "ISRGRootX1").read_bytes() == ca


def test_time_query_answers_ok_then_the_time_report_aec():
    """9.16.1.1 has no response, 9.16.2.1 is the AEC +TIME:<TIME> "Time report"; the specification's
    example: AT+TIME=3, OK, +TIME:"2025-10-24T18:03:43.00Z"."""
    with Rnwf(echo=True) as e:
        assert e.cmd('AT+TIME=3,"2025-10-24T18:03:43.00Z"') == b'AT+TIME=3,"2025-10-24T18:03:43.00Z"\r\nOK\r\n>'
        assert e.cmd("AT+TIME=3") == b"AT+TIME=3\r\nOK\r\n>"
        got = e.read_until(rb"\+TIME:.*?\r\n>", timeout=5)
        assert re.fullmatch(rb'\r\+TIME:"2025-10-24T18:03:4\d\.\d\dZ"\r\n>', got), got
        assert e.cmd("AT+TIME") == b"AT+TIME\r\nOK\r\n>"          # the current format: the last one asked
        assert re.fullmatch(rb'\r\+TIME:"2025-10-24T18:0\d:\d\d\.\d\dZ"\r\n>', e.read_until(rb"\r\n>", timeout=5))


def test_wscnc_ssid_filter_async_notify_and_scan_results():
    """The RNWF02 guide's 9.19.1.1 lists WSCNC 7 SEC_FILTER, 8 ASYNC_NOTIFY, 10 SSID filter list
    (10.0-10.3) and 20 SCAN_RESULTS; its example 9.19.3 sets the SSID filter."""
    with Rnwf(echo=True) as e:
        assert e.cmd("ATE0") == b"ATE0\r\nOK\r\n"
        # the guide's example, byte for byte
        for ssid in ("SSID1", "SSID2", "SSID3"):
            assert e.cmd(f'AT+WSCNC=10,"{ssid}"') == b"OK\r\n"
        assert e.cmd("AT+WSCNC=10") == b'+WSCNC:10.0,"SSID1"\r\n+WSCNC:10.1,"SSID2"\r\n+WSCNC:10.2,"SSID3"\r\nOK\r\n'
        assert e.cmd('AT+WSCNC=10.1,""') == b"OK\r\n"
        assert e.cmd("AT+WSCNC=10") == b'+WSCNC:10.0,"SSID1"\r\n+WSCNC:10.1,"SSID3"\r\nOK\r\n'
        assert e.cmd('AT+WSCNC=10,""') == b"OK\r\n"
        assert e.cmd("AT+WSCNC=10") == b"OK\r\n"
        # a filter on one SSID: the scan lists that AP only
        assert e.cmd('AT+WSCNC=10,"MyAP"') == b"OK\r\n"
        assert e.cmd("AT+WSCN=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSCNDONE:\d+\r\n", timeout=5) == (
            b'\r+WSCNIND:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n\r+WSCNDONE:1\r\n')
        assert e.cmd("AT+WSCNC=20") == b'+WSCNC:20.0,-50,3,6,"00:01:02:03:04:05","MyAP"\r\nOK\r\n'
        assert e.cmd("AT+WSCNC=20,1") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
        # ASYNC_NOTIFY 0: no +WSCNIND, the count and SCAN_RESULTS only
        assert e.cmd('AT+WSCNC=10,""') == b"OK\r\n"
        assert e.cmd("AT+WSCNC=8,0") == b"OK\r\n"
        assert e.cmd("AT+WSCN=0") == b"OK\r\n"
        assert e.read_until(rb"\+WSCNDONE:\d+\r\n", timeout=5) == b"\r+WSCNDONE:5\r\n"
        results = e.cmd("AT+WSCNC=20")
        assert results.startswith(b'+WSCNC:20.0,-50,3,6,"00:01:02:03:04:05","MyAP"\r\n+WSCNC:20.1,')
        assert results.count(b"+WSCNC:20.") == 5
        assert e.cmd("AT+WSCNC=7,0x22") == b"OK\r\n"
        assert e.cmd("AT+WSCNC=7") == b"+WSCNC:7,34\r\nOK\r\n"
        assert e.cmd("AT+WSCNC=8,2") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+WSCNC=9") == b'ERROR:0.4,"Invalid Parameter"\r\n'


def test_netifc_lease_times_are_0_without_a_lease():
    with Rnwf() as e:
        for fmt in ("1", "2", "3"):
            e.time(f"AT+TIME={fmt}")
            assert e.cmd("AT+NETIFC=0,11") == b"+NETIFC:11,0\r\nOK\r\n"
            assert e.cmd("AT+NETIFC=0,12") == b"+NETIFC:12,0\r\nOK\r\n"
        e.join()
        e.time("AT+TIME=2")
        start = int(re.fullmatch(rb"\+NETIFC:11,(\d+)\r\nOK\r\n", e.cmd("AT+NETIFC=0,11")).group(1))
        assert abs(start - 2208988800 - time.time()) < 30          # NTP seconds, the current format
