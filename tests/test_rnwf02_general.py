"""rnwf02: the serial interface (echo, '>' prompt, AEC framing), identity, reset, status codes,
configuration, time, system and device information - over a real pty with CR LF."""
from __future__ import annotations

import re
import time

from atemu.profile import find_profile
from rnwf_helpers import Rnwf


def test_echo_prompt_and_ate0_until_reset():
    with Rnwf(echo=True) as e:
        # echo on after power-up: the line comes back with its CR LF, the answer ends with a bare '>'
        assert e.cmd("AT") == b"AT\r\nOK\r\n>"
        assert e.cmd("at+gmm") == b'at+gmm\r\n+GMM:"RNWF02"\r\nOK\r\n>'
        assert e.cmd("AT+GMI") == b'AT+GMI\r\n+GMI:"Microchip Technology Inc."\r\nOK\r\n>'
        assert e.cmd("AT+FOO") == b'AT+FOO\r\nERROR:0.3,"Unknown AT Command"\r\n>'
        # ATE0: no echo and no prompt
        assert e.cmd("ATE0") == b"ATE0\r\nOK\r\n"
        assert e.cmd("AT") == b"OK\r\n"
        assert e.cmd("AT+GMR") == b'+GMR:"2.0.0 0 e41f977cb [16:31:26 Apr 12 2024]"\r\nOK\r\n'
        # AT+RST: OK, then (a moment later) +BOOT with the banner; echo and prompt are back
        t0 = time.monotonic()
        e.write(b"AT+RST\r\n")
        assert e.read_until(rb"OK\r\n") == b"OK\r\n"      # (read directly: echo comes back with the reset)
        boot = e.read_until(rb">", timeout=10)
        assert boot == b'\r+BOOT:"RNWF - AT Command Interface v2.0.0 - Microchip Technology Inc"\r\n>'
        assert time.monotonic() - t0 >= 0.15
        assert e.cmd("AT") == b"AT\r\nOK\r\n>"


def test_byte_by_byte_host_and_lower_case():
    with Rnwf() as e:
        for b in b"at+gmm\r\n":
            e.write(bytes([b]))
        assert e.read_until(rb"OK\r\n") == b'+GMM:"RNWF02"\r\nOK\r\n'
        e.expect_nothing(0.2)


def test_factory_uart():
    assert find_profile("rnwf02").default_baud == 230400
    assert find_profile("rnwf11").default_baud == 230400


def test_rnwf11_model():
    with Rnwf(profile="rnwf11") as e:
        assert e.cmd("AT+GMM") == b'+GMM:"RNWF11"\r\nOK\r\n'
        assert e.cmd("AT+MQTTC=3") == b'+MQTTC:3,"RNWF11_9A5C01"\r\nOK\r\n'


def test_status_codes_and_verbosity():
    with Rnwf() as e:
        assert e.cmd("AT+FOO") == b'ERROR:0.3,"Unknown AT Command"\r\n'
        assert e.cmd("AT+WSTAC=2,77") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd('AT+WSTAC=2,"3"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+SOCKO") == b'ERROR:0.5,"Incorrect Number of Parameters"\r\n'
        assert e.cmd("AT+SOCKO=1,4,9") == b'ERROR:0.5,"Incorrect Number of Parameters"\r\n'
        assert e.cmd('AT+GMM="x') == b'ERROR:0.2,"Invalid AT Command"\r\n'
        assert e.cmd("hello") == b'ERROR:0.2,"Invalid AT Command"\r\n'
        # a module's failure: <module>.<code> (14 = SOCKET: no such socket; 8 = MQTT: not connected)
        assert e.cmd("AT+SOCKCL=3") == b'ERROR:14.0,"Socket ID Not Found"\r\n'
        assert e.cmd("AT+SOCKCL=65535") == b'ERROR:14.0,"Socket ID Not Found"\r\n'
        assert e.cmd("AT+SOCKCL=0") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd('AT+MQTTPUB=0,0,0,"t","x"') == b'ERROR:8.0,"MQTT Error"\r\n'
        assert e.cmd("AT+DNSRESOLV=1,\"example.com\"") == b'ERROR:1.1,"STA Not Connected"\r\n'
        # the guide's verbosity levels (3, the default, with the text as the hardware prints it)
        assert e.cmd("ATV5") == b"OK\r\n"
        assert e.cmd("AT+FOO") == b'ERROR:0.3,"Unknown AT Command"\r\n'
        assert e.cmd("ATV4") == b"OK\r\n"
        assert e.cmd("AT+FOO") == b'ERROR:"Unknown AT Command"\r\n'
        assert e.cmd("ATV2") == b"OK\r\n"
        assert e.cmd("AT+SOCKCL=3") == b"ERROR\r\n"
        assert e.cmd("ATV1", final=rb"(?:\A|\n)(0|1(:[\d.]+)?)\r\n") == b"0\r\n"
        assert e.cmd("AT+FOO", final=rb"(?:\A|\n)(0|1(:[\d.]+)?)\r\n") == b"1:0.3\r\n"
        assert e.cmd("ATV0", final=rb"(?:\A|\n)(0|1)\r\n") == b"0\r\n"
        assert e.cmd("AT+SOCKCL=3", final=rb"(?:\A|\n)(0|1)\r\n") == b"1\r\n"
        assert e.cmd("AT", final=rb"(?:\A|\n)(0|1)\r\n") == b"0\r\n"
        assert e.cmd("ATV3") == b"OK\r\n"
        assert e.cmd("ATV6") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("AT+IPR") == b"+IPR:230400\r\nOK\r\n"
        assert e.cmd("AT+IPR=1234") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        # a line of 5000 bytes
        assert e.cmd("AT+GMM" + "x" * 5000) == b'ERROR:0.2,"Invalid AT Command"\r\n'
        assert e.cmd("AT") == b"OK\r\n"


def test_aec_framing_with_and_without_echo():
    with Rnwf(echo=True) as e:
        assert e.cmd("AT+WSCNC=2,10") == b"AT+WSCNC=2,10\r\nOK\r\n>"
        assert e.cmd("AT+WSCN=1") == b"AT+WSCN=1\r\nOK\r\n>"
        got = e.read_until(rb"\+WSCNDONE:\d+\r\n>", timeout=5)
        # every AEC: CR (over the prompt), the line, CR LF; a scan's AECs are one event: one prompt
        assert got.startswith(b'\r+WSCNIND:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n\r+WSCNIND:')
        assert got.endswith(b"\r+WSCNDONE:5\r\n>") and got.count(b">") == 1
        e.write(b"AT+WSTAC=1,\"MyAP\"\r\nAT+WSTAC=2,3\r\nAT+WSTAC=3,\"MyAPPSK-123\"\r\nAT+WSTA=1\r\n")
        got = e.read_until(rb'\+WSTAAIP:1,"192[^\r]*\r\n>', timeout=5)
        # other AECs: each with its own prompt
        assert re.search(rb'OK\r\n>\r\+WSTALU:1,"00:01:02:03:04:05",6\r\n>\r\+WSTAAIP:1,"FE80::[0-9A-F:]+"\r\n>'
                         rb'\r\+WSTAAIP:1,"192\.168\.0\.20"\r\n>\Z', got), got
        assert e.cmd("ATE0") == b"ATE0\r\nOK\r\n"
        assert e.cmd("AT+WSCN=0") == b"OK\r\n"
        got = e.read_until(rb"\+WSCNDONE:\d+\r\n", timeout=5)
        assert got.startswith(b'\r+WSCNIND:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n\r+WSCNIND:')
        assert got.endswith(b"\r+WSCNDONE:5\r\n")


def test_cfg_time_si_di():
    with Rnwf() as e:
        # the guide's CFG table has one parameter: 1 DEVICE_NAME (at most 32)
        assert e.cmd("AT+CFG") == b'+CFG:1,"RNWF02"\r\nOK\r\n'
        assert e.cmd('AT+CFG=1,"sensor-7"') == b"OK\r\n"
        assert e.cmd("AT+CFG=1") == b'+CFG:1,"sensor-7"\r\nOK\r\n'
        assert e.cmd("AT+CFG=2") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd('AT+CFG=1,"' + "x" * 33 + '"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
        # the clock: set in UTC seconds, read back in the three formats
        assert e.cmd("AT+TIME=1,1700000000") == b"OK\r\n"
        # a query answers OK, then the AEC +TIME:<TIME> (the guide lists +TIME only as an AEC)
        assert e.cmd("AT+TIME=1") == b"OK\r\n"
        assert e.read_until(rb"\+TIME:.*?\r\n") in (b"\r+TIME:1700000000\r\n", b"\r+TIME:1700000001\r\n")
        assert e.time("AT+TIME=2") in (b"3908988800", b"3908988801")
        assert e.time("AT+TIME=3").startswith(b'"2023-11-14T22:13:2')
        assert e.cmd('AT+TIME=3,"2024-04-12T16:31:26Z"') == b"OK\r\n"
        assert e.time("AT+TIME=1") in (b"1712939486", b"1712939487")
        assert e.cmd('AT+TIME=3,"yesterday"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd('AT+TIME=3,"2024-04-12T16:31:26Z"') == b"OK\r\n"
        assert re.fullmatch(rb"\+SI:\d+\r\nOK\r\n", e.cmd("AT+SI"))
        out = e.cmd("AT+SI=0x0A")                   # packets and stack: +SI, OK, then the AECs
        assert re.fullmatch(rb"\+SI:\d+\r\nOK\r\n", out)
        assert e.read_until(rb"\+SISTACK:.*?\r\n") == b"\r+SIWPKTS:0,0\r\n\r+SISTACK:1024,8192,2048\r\n"
        assert e.cmd("AT+SI=16") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        # the guide's example: device id, number of images, image info (ATN16: hexadecimal)
        assert e.cmd("AT+DI") == b"+DI:1,700907603\r\n+DI:14,1\r\n+DI:15.0,4293844431,4278256128,1610612736\r\nOK\r\n"
        assert e.cmd("ATN16") == b"OK\r\n"
        assert e.cmd("AT+DI") == b"+DI:1,0x29c70053\r\n+DI:14,0x00000001\r\n+DI:15.0,0xffeeddcf,0xff010200,0x60000000\r\nOK\r\n"
        assert e.cmd("AT+DI=1") == b"+DI:1,0x29c70053\r\nOK\r\n"
        assert e.cmd("AT+DI=2") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd("ATN8") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        # AT+TIME reads in the current format: the last one asked for
        assert e.time("AT+TIME=1") in (b"1712939486", b"1712939487")
        assert e.time("AT+TIME") in (b"1712939486", b"1712939487")


def test_describe_lists_the_guide_commands():
    cls = find_profile("rnwf02")
    names = {c["name"] for c in cls.describe()["commands"]}
    for n in ("+GMI", "+GMM", "+GMR", "+IPR", "+CFG", "+DHCPSC", "+DNSC", "+DNSRESOLV", "+FS", "+MQTTC", "+MQTTCONN",
              "+MQTTSUB", "+MQTTUNSUB", "+MQTTPUB", "+MQTTDISCONN", "+MQTTLWT", "+MQTTSUBLST", "+MQTTSUBRD",
              "+NETIFC", "+PING", "+RST", "+SNTPC", "+SOCKO", "+SOCKBL", "+SOCKBR", "+SOCKBM", "+SOCKTLS",
              "+SOCKWR", "+SOCKWRTO", "+SOCKRD", "+SOCKRDBUF", "+SOCKCL", "+SOCKLST", "+SOCKC", "+TIME", "+TLSC",
              "+WAPC", "+WAP", "+WSCNC", "+WSCN", "+WSTAC", "+WSTA", "+ASSOC", "+SI", "+WPROVC", "+WPROV", "+DI",
              "+WIFIC"):
        assert "AT" + n in names, n
    # the WINC commands the RNWF guide does not have are gone
    for n in ("+WSCNA", "+WSCNP", "+LOWPOWER", "+READCERT", "+LOADCERT", "+SOCKWRT0"):
        assert "AT" + n not in names
    urcs = {u["name"] for u in cls.describe()["urcs"]}
    assert {"+BOOT", "+MQTTSUBRX", "+WSCNDONE", "+DNSERR", "+TIME", "+ASSOC", "+SIWPKTS", "+SIHEAP", "+SISTACK"} <= urcs
