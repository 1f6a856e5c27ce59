"""rnwf02 against what public host code written for the real module sends and needs (README
"Checked against public host code"): each test writes the bytes the host writes (CR LF, echo left
on where the host leaves it on) and reads the way that host reads."""
from __future__ import annotations

import re

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
