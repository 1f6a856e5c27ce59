"""Quectel FCM242D BLE (AT+QBLE*) over a real pty: central role against the world's virtual peers,
peripheral role against a remote central played through the profile's ``ble_remote_*`` methods."""
from __future__ import annotations

import time

import pytest

from harness import Emu
from quectel_helpers import all_ok, boot_quiet, urc_match as urc

SENSOR = "58:d3:91:01:02:03"
WORLD = {
    "options": {"quectel.escape_guard": 0.2},
    "ble": {"peers": [
        {"address": SENSOR, "name": "Thermo", "rssi": -48,
         "services": {"181a": {"2a6e": "e803", "2a6f": "3c00"}, "fff0": {"fff1": "68656c6c6f", "fff2": ""}},
         "notify": [{"characteristic": "2a6e", "value": "f401", "every": 0.1, "count": 0}]},
        {"address": "11:22:33:44:55:66", "name": "Beacon", "rssi": -80, "connectable": False},
    ]},
}


@pytest.fixture
def emu():
    e = boot_quiet(WORLD)
    yield e
    e.stop()


def prof(e: Emu):
    return e.module.profile


# ------------------------------------------------------------------------------------------ peripheral (E2)

def peripheral(e: Emu, name: str = "QuecFGM842D") -> None:
    all_ok(e, "AT+QBLEINIT=2,1", "AT+QBLEADVPARAM=150,150", f'AT+QBLENAME="{name}"', 'AT+QBLEGATTSSRV="FFF1"',
           'AT+QBLEGATTSCHAR="FFF2"', "AT+QBLEGATTSSRVDONE", "AT+QBLEADVSTART")


def transparent_then_link_loss(e: Emu, line: str) -> None:
    """Enter BLE transparent mode with ``line``; the remote central drops the link: NO CARRIER, DISCONNECTED."""
    e.write(line + "\r")
    e.read_until(rb"CONNECT\r\n")
    e.sync(prof(e).ble_remote_disconnect)
    assert e.read_until(rb"DISCONNECTED\r\n") == b"\r\nNO CARRIER\r\n\r\n+QBLESTAT: DISCONNECTED\r\n"


def test_e2_peripheral_exchange_with_a_phone(emu):
    assert emu.cmd("AT+QBLESTAT") == b"\r\n+QBLESTAT: NOINIT\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLEINIT=2,1") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEINIT?") == b"\r\n+QBLEINIT: 2\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLEADVPARAM=150,150") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEADVPARAM?") == b"\r\n+QBLEADVPARAM: 150,150\r\n\r\nOK\r\n"
    assert emu.cmd('AT+QBLENAME="QuecFGM842D"') == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLENAME?") == b'\r\n+QBLENAME: "QuecFGM842D"\r\n\r\nOK\r\n'
    assert emu.cmd("AT+QBLEADDR?") == b'\r\n+QBLEADDR: "c8e4a1b1c1f9"\r\n\r\nOK\r\n'
    assert emu.cmd('AT+QBLEGATTSSRV="FFF1"') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF2"') == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEGATTSSRVDONE") == b"\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_scan) is None          # not advertising yet
    assert emu.cmd("AT+QBLEADVSTART") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEADVSTART?") == b"\r\n+QBLEADVSTART: 1\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESTAT") == b"\r\n+QBLESTAT: ADVERTISING\r\n\r\nOK\r\n"
    seen = emu.sync(prof(emu).ble_remote_scan)
    assert seen["name"] == "QuecFGM842D" and seen["address"] == "c8e4a1b1c1f9"
    assert bytes.fromhex(seen["adv_data"]).endswith(b"\x09QuecFGM842D")
    # the phone connects
    assert emu.sync(prof(emu).ble_remote_connect, "5a:00:00:00:00:01", 185) is True
    assert emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n") == \
        b"\r\n+QBLESTAT: CONNECTED\r\n\r\n+QBLEMTU: 185\r\n\r\n+QBLECONNPARAM: 0,20,500,0\r\n"
    assert emu.sync(prof(emu).ble_remote_services) == {"fff1": {"fff2": {"props": 6, "value": ""}}}
    # phone -> module: "from phone" on FFF2 (default properties allow write without response)
    assert emu.sync(prof(emu).ble_remote_write, "fff2", b"from phone", False) is True
    assert emu.read_until(rb"from phone\r\n") == b'\r\n+QBLERECV: 0,"fff2",10\r\nfrom phone\r\n'
    assert emu.sync(prof(emu).ble_remote_write, "fff2", b"nope", True) is False   # no write-with-response
    # module -> phone by notification, once the phone enabled notifications
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF2","123456789"') == b"\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_notifications) == []
    assert emu.sync(prof(emu).ble_remote_subscribe, "FFF2") is True
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF2","123456789"') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF2",3,"00ff10"') == b"\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_notifications) == [("fff2", b"123456789"), ("fff2", b"\x00\xff\x10")]
    assert emu.sync(prof(emu).ble_remote_read, "fff2") == b"\x00\xff\x10"
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF2",3,"00ff"') == b"\r\nERROR\r\n"      # 3 bytes = 6 hex digits
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF9","x"') == b"\r\nERROR\r\n"           # no such characteristic
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF2","' + "x" * 183 + '"') == b"\r\nERROR\r\n"  # > MTU-3
    assert emu.cmd("AT+QBLESTAT") == b"\r\n+QBLESTAT: CONNECTED\r\n\r\nOK\r\n"
    # the phone leaves: advertising restarts (auto_adv 1)
    assert emu.sync(prof(emu).ble_remote_disconnect) is True
    assert emu.read_until(rb"DISCONNECTED\r\n") == b"\r\n+QBLESTAT: DISCONNECTED\r\n"
    assert emu.cmd("AT+QBLEADVSTART?") == b"\r\n+QBLEADVSTART: 1\r\n\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSNTFY=0,"FFF2","x"') == b"\r\nERROR\r\n"           # not connected


def test_peripheral_setup_rules_and_local_disconnect(emu):
    assert emu.cmd('AT+QBLEGATTSSRV="FFF1"') == b"\r\nERROR\r\n"        # BLE not initialised
    assert emu.cmd("AT+QBLEINIT=4") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEADVPARAM=100,100") == b"\r\nERROR\r\n"       # peripheral only
    assert emu.cmd("AT+QBLEINIT=2,0") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEINIT=1") == b"\r\nERROR\r\n"                 # once per boot
    assert emu.cmd("AT+QBLESCANPARAM=100,30") == b"\r\nERROR\r\n"       # central only
    assert emu.cmd("AT+QBLECFGMTU=100") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEADVSTART") == b"\r\nERROR\r\n"               # no service yet
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF2"') == b"\r\nERROR\r\n"       # no service yet
    assert emu.cmd('AT+QBLEGATTSSRV="FFF"') == b"\r\nERROR\r\n"         # 3 hex digits
    assert emu.cmd('AT+QBLEGATTSSRV="0000fff000001000800000805f9b34fb"') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF2",0F') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF3",1') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF4",4') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF5"') == b"\r\nERROR\r\n"       # 3 characteristics max
    assert emu.cmd('AT+QBLEGATTSCHAR="FFF6",XZ') == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEGATTSSRVDONE") == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTSSRV="FFE0"') == b"\r\nERROR\r\n"        # service already complete
    assert emu.cmd("AT+QBLEADVDATA=0201060709515545435445") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEADVDATA=020106FF") == b"\r\nERROR\r\n"       # AD structure overruns
    assert emu.cmd("AT+QBLEADVPARAM=31,100") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEADVPARAM=200,100") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEADVSTART") == b"\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_scan)["adv_data"] == "0201060709515545435445"
    assert emu.cmd("AT+QBLEADVSTOP") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEADVSTART?") == b"\r\n+QBLEADVSTART: 0\r\n\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_connect) is False              # not advertising
    assert emu.cmd("AT+QBLEADVSTART") == b"\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_connect) is True
    emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n")
    assert emu.sync(prof(emu).ble_remote_write, "FFF3", b"req", True) is True   # att_cfg 1: write
    assert emu.read_until(rb"req\r\n") == b'\r\n+QBLERECV: 0,"fff3",3\r\nreq\r\n'
    assert emu.sync(prof(emu).ble_remote_subscribe, "FFF3") is False    # no notify property
    assert emu.cmd("AT+QBLEDISCONN=0", final=rb"DISCONNECTED\r\n") == b"\r\nOK\r\n\r\n+QBLESTAT: DISCONNECTED\r\n"
    assert emu.cmd("AT+QBLEADVSTART?") == b"\r\n+QBLEADVSTART: 0\r\n\r\nOK\r\n"   # auto_adv 0
    assert emu.cmd("AT+QBLEDISCONN") == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEINIT=0") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLEINIT=1") == b"\r\nOK\r\n"


def test_peripheral_transparent_mode(emu):
    peripheral(emu)
    assert emu.sync(prof(emu).ble_remote_connect, "5a:00:00:00:00:02", 23) is True
    emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n")
    assert emu.sync(prof(emu).ble_remote_subscribe, "fff2") is True
    emu.write('AT+QBLETRANMODE="FFF2",1\r')
    assert emu.read_until(rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    emu.write(b"0123456789abcdefghijklmnopqrstuvwxyz\r\n")   # 38 bytes: MTU 23 -> 20-byte notifications
    time.sleep(0.4)
    assert emu.sync(prof(emu).ble_remote_notifications) == [("fff2", b"0123456789abcdefghij"),
                                                          ("fff2", b"klmnopqrstuvwxyz\r\n")]
    assert emu.sync(prof(emu).ble_remote_write, "fff2", b"raw in", False) is True
    assert emu.read_exactly(6) == b"raw in"                  # no URC in transparent mode
    time.sleep(0.3)
    emu.write(b"+++")
    assert emu.read_until(rb"OK\r\n", timeout=3) == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLESTAT") == b"\r\n+QBLESTAT: CONNECTED\r\n\r\nOK\r\n"
    # again, and this time the link drops: NO CARRIER
    transparent_then_link_loss(emu, 'AT+QBLETRANMODE="FFF2"')
    assert emu.cmd("AT") == b"\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_connect, "5a:00:00:00:00:03", 23) is True
    emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n")
    emu.expect_nothing(0.3)                                  # <state> 0: no automatic re-entry
    # <state> 1: after a link loss the module goes transparent again by itself on the next connection
    transparent_then_link_loss(emu, 'AT+QBLETRANMODE="FFF2",1')
    assert emu.cmd("AT+QBLESTAT") == b"\r\n+QBLESTAT: ADVERTISING\r\n\r\nOK\r\n"
    assert emu.sync(prof(emu).ble_remote_connect, "5a:00:00:00:00:04", 23) is True
    assert emu.read_until(rb"CONNECT\r\n") == (b"\r\n+QBLESTAT: CONNECTED\r\n\r\n+QBLEMTU: 23\r\n"
                                                b"\r\n+QBLECONNPARAM: 0,20,500,0\r\n\r\nCONNECT\r\n")
    assert emu.sync(prof(emu).ble_remote_write, "fff2", b"back", False) is True
    assert emu.read_exactly(4) == b"back"
    time.sleep(0.3)
    emu.write(b"+++")
    assert emu.read_until(rb"OK\r\n", timeout=3) == b"\r\nOK\r\n"
    # +++ cancelled the automatic re-entry
    emu.sync(prof(emu).ble_remote_disconnect)
    emu.read_until(rb"DISCONNECTED\r\n")
    assert emu.sync(prof(emu).ble_remote_connect, "5a:00:00:00:00:05", 23) is True
    emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n")
    emu.expect_nothing(0.3)
    assert emu.cmd("AT") == b"\r\nOK\r\n"


# ------------------------------------------------------------------------------------------ central

def central_connect(emu) -> None:
    assert emu.cmd("AT+QBLEINIT=1") == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLECONN=0,"58D391010203"') == b"\r\nOK\r\n"
    emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n")


def test_central_scan(emu):
    assert emu.cmd("AT+QBLESCAN=1") == b"\r\nERROR\r\n"                 # not initialised as central
    assert emu.cmd("AT+QBLEINIT=1") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCANPARAM?") == b"\r\n+QBLESCANPARAM: 100,30\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCANPARAM=30,40") == b"\r\nERROR\r\n"        # window > interval
    assert emu.cmd("AT+QBLESCANPARAM=64,32") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCANPARAM?") == b"\r\n+QBLESCANPARAM: 64,32\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCAN=1") == b"\r\nOK\r\n"
    got = emu.read_until(rb'"Beacon",0,"112233445566"\r\n')
    assert b'\r\n+QBLESCAN: "Thermo",0,"58D391010203"\r\n' in got
    assert emu.cmd("AT+QBLESCAN?") == b"\r\n+QBLESCAN: 1\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCAN=0") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCAN?") == b"\r\n+QBLESCAN: 0\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCAN=2") == b"\r\nERROR\r\n"                 # needs <timeout>
    # mode 3: connectable only, with RSSI and advertising data; stops by itself
    assert emu.cmd("AT+QBLESCAN=3,300") == b"\r\nOK\r\n"
    m = urc(emu, r'\+QBLESCAN: "Thermo",0,"58D391010203",-48,([0-9A-F]+)\r\n')
    adv = bytes.fromhex(m.group(1).decode())
    assert adv == bytes.fromhex("020106") + b"\x07\x09Thermo" + bytes.fromhex("05031a18f0ff")
    time.sleep(0.5)
    assert b"Beacon" not in emu.drain()
    assert emu.cmd("AT+QBLESCAN?") == b"\r\n+QBLESCAN: 0\r\n\r\nOK\r\n"


def test_central_connect_read_write_notify(emu):
    assert emu.cmd("AT+QBLEINIT=1") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLECFGMTU=100") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLECFGMTU?") == b"\r\n+QBLECFGMTU: 100\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLECONNPARAM=0,24,400,0") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLECONNPARAM=0,400,10,0") == b"\r\nERROR\r\n"   # timeout too short
    assert emu.cmd('AT+QBLECONN=0,"58:d3:91:01:02:03",5000') == b"\r\nOK\r\n"
    got = emu.read_until(rb"\+QBLECONNPARAM: [^\r]*\r\n")
    assert got == (b'\r\n+QBLESTAT: CONNECTED\r\n\r\n+QBLEINFO: "2a6e"\r\n\r\n+QBLEINFO: "2a6f"\r\n'
                   b'\r\n+QBLEINFO: "fff1"\r\n\r\n+QBLEINFO: "fff2"\r\n\r\n+QBLEINFO: DOWN\r\n'
                   b'\r\n+QBLEMTU: 100\r\n\r\n+QBLECONNPARAM: 0,24,400,0\r\n')
    assert emu.cmd("AT+QBLESTAT") == b"\r\n+QBLESTAT: CONNECTED\r\n\r\nOK\r\n"
    assert emu.cmd('AT+QBLECONN=0,"58D391010203"') == b"\r\nERROR\r\n"   # already connected
    # read: OK, then the value
    assert emu.cmd('AT+QBLEGATTCRD=0,"FFF1"') == b"\r\nOK\r\n"
    assert emu.read_until(rb"hello\r\n") == b"\r\nhello\r\n"
    # write with response, then read it back; the world peer holds the new value
    assert emu.cmd('AT+QBLEGATTCWRREQ=0,"FFF1","new value"') == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLEGATTCRD=0,"fff1"') == b"\r\nOK\r\n"
    assert emu.read_until(rb"value\r\n") == b"\r\nnew value\r\n"
    assert emu.cmd('AT+QBLEGATTCWRCMD=0,"FFF2",4,"DEADBEEF"') == b"\r\nOK\r\n"
    peer = emu.module.world.ble_peers[0]
    assert emu.sync(lambda: peer.services["fff0"]["fff2"]) == "deadbeef"
    assert emu.cmd('AT+QBLEGATTCWRCMD=0,"FFF2",4,"DEAD"') == b"\r\nERROR\r\n"
    assert emu.cmd('AT+QBLEGATTCWRREQ=0,"AAAA","x"') == b"\r\nERROR\r\n"  # peer has no such characteristic
    assert emu.cmd('AT+QBLEGATTCWRREQ=0,"FFF1","' + "y" * 98 + '"') == b"\r\nERROR\r\n"  # > MTU-3
    assert emu.cmd("AT+QBLECFGMTU=200", final=rb"QBLEMTU: \d+\r\n") == b"\r\nOK\r\n\r\n+QBLEMTU: 200\r\n"
    assert emu.cmd("AT+QBLECONNPARAM?") == b"\r\n+QBLECONNPARAM: 0,24,400,0\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLECONNPARAM=0,40,600,2", final=rb"QBLECONNPARAM: [^\r]*\r\n") == \
        b"\r\nOK\r\n\r\n+QBLECONNPARAM: 0,40,600,2\r\n"
    assert emu.cmd("AT+QBLECONNPARAM?") == b"\r\n+QBLECONNPARAM: 0,40,600,2\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLECFGMTU=300") == b"\r\nERROR\r\n"             # once per connection
    # notifications: nothing until enabled, then the world's schedule (every 0.1 s)
    emu.drain(0.3)
    assert emu.cmd('AT+QBLEGATTCNTFCFG=0,"2A6E",1') == b"\r\nOK\r\n"
    for _ in range(3):
        assert emu.read_until(rb'\+QBLERECV: [^\r]*\r\n[^\r]*\r\n', timeout=2) .endswith(
            b'\r\n+QBLERECV: 0,"2a6e",2\r\n\xf4\x01\r\n')
    assert emu.cmd('AT+QBLEGATTCNTFCFG=0,"2A6E",0').endswith(b"OK\r\n")
    emu.drain(0.3)
    emu.expect_nothing(0.3)
    assert emu.cmd('AT+QBLEGATTCRD=0,"2a6e"') == b"\r\nOK\r\n"
    assert emu.read_until(rb"\r\n[^\r]*\r\n") == b"\r\n\xf4\x01\r\n"  # the notified value is the current value
    assert emu.cmd("AT+QBLEDISCONN", final=rb"DISCONNECTED\r\n") == b"\r\nOK\r\n\r\n+QBLESTAT: DISCONNECTED\r\n"
    assert emu.cmd('AT+QBLEGATTCRD=0,"FFF1"') == b"\r\nERROR\r\n"


def test_central_connect_failures(emu):
    assert emu.cmd("AT+QBLEINIT=1") == b"\r\nOK\r\n"
    assert emu.cmd('AT+QBLECONN=0,"112233445566",1000') == b"\r\nOK\r\n"    # not connectable
    t0 = time.monotonic()
    assert emu.read_until(rb"\+QBLESTAT: DISCONNECTED\r\n", timeout=3) == b"\r\n+QBLESTAT: DISCONNECTED\r\n"
    assert time.monotonic() - t0 >= 0.8
    assert emu.cmd('AT+QBLECONN=0,"XYZ"') == b"\r\nERROR\r\n"
    assert emu.cmd('AT+QBLECONN=2,"58D391010203"') == b"\r\nERROR\r\n"
    assert emu.cmd('AT+QBLECONN=0,"58D391010203",999') == b"\r\nERROR\r\n"


def test_central_transparent_mode(emu):
    central_connect(emu)
    emu.write('AT+QBLETRANMODE="2A6E"\r')
    assert emu.read_until(rb"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    # the peer's notifications on that characteristic come raw, with no URC framing
    assert emu.read_exactly(4, timeout=2) == b"\xf4\x01\xf4\x01"
    time.sleep(0.3)
    emu.write(b"+++")
    emu.read_until(rb"\r\nOK\r\n", timeout=3)
    emu.drain(0.3)
    emu.expect_nothing(0.3)                                   # notifications are not enabled outside
    # host bytes become writes to the peer's characteristic
    emu.write('AT+QBLETRANMODE="FFF2"\r')
    emu.read_until(rb"CONNECT\r\n")
    emu.write(b"\x10\x20hi")
    time.sleep(0.4)
    emu.write(b"+++")
    assert emu.read_until(rb"\r\nOK\r\n", timeout=3) == b"\r\nOK\r\n"
    peer = emu.module.world.ble_peers[0]
    assert emu.sync(lambda: peer.services["fff0"]["fff2"]) == "10206869"
    assert emu.cmd('AT+QBLETRANMODE="AAAA"') == b"\r\nERROR\r\n"
    assert emu.cmd("AT+QBLEDISCONN", final=rb"DISCONNECTED\r\n") == b"\r\nOK\r\n\r\n+QBLESTAT: DISCONNECTED\r\n"


def test_test_forms(emu):
    assert emu.cmd("AT+QBLEINIT=?") == b"\r\n+QBLEINIT: (0-3),(0,1)\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESCAN=?") == b"\r\n+QBLESCAN: (0-3),(100-10000)\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLECFGMTU=?") == b"\r\n+QBLECFGMTU: (64-512)\r\n\r\nOK\r\n"
    assert emu.cmd("AT+QBLESTAT=?") == b"\r\nOK\r\n"
    assert emu.cmd("AT+QBLESTAT?") == b"\r\nERROR\r\n"          # undocumented form


def test_control_plane_world_changes_reach_the_central(emu):
    from atemu.api import change_world
    central_connect(emu)
    assert emu.cmd('AT+QBLEGATTCNTFCFG=0,"FFF1",1') == b"\r\nOK\r\n"
    emu.sync(lambda: change_world(emu.module, "set_ble_value", address=SENSOR, service="fff0",
                                  characteristic="fff1", value="6e6577"))
    assert emu.cmd('AT+QBLEGATTCRD=0,"FFF1"') == b"\r\nOK\r\n"
    assert emu.read_until(rb"new\r\n") == b"\r\nnew\r\n"
    emu.sync(lambda: change_world(emu.module, "ble_notify", address=SENSOR, characteristic="fff1",
                                  value="7075736821"))
    assert emu.read_until(rb"push!\r\n", timeout=2) == b'\r\n+QBLERECV: 0,"fff1",5\r\npush!\r\n'
    emu.expect_nothing(0.3)                                   # sent once
    peer = emu.module.world.ble_peers[0]
    assert emu.sync(lambda: [n.characteristic for n in peer.notify]) == ["2a6e"]


def test_garbage_never_breaks_the_module(emu, caplog):
    """Every part-2 command with malformed arguments answers a final result and the module stays usable."""
    import logging
    caplog.set_level(logging.ERROR)
    cmds = ["+QMTCFG", "+QMTOPEN", "+QMTCLOSE", "+QMTCONN", "+QMTDISC", "+QMTSUB", "+QMTUNS", "+QMTRECV",
            "+QHTTPCFG", "+QHTTPGET", "+QHTTPREAD", "+QHTTPSTOP", "+QBLEINIT", "+QBLEADDR", "+QBLENAME",
            "+QBLEADVPARAM", "+QBLEADVDATA", "+QBLEGATTSSRV", "+QBLEGATTSCHAR", "+QBLEGATTSSRVDONE",
            "+QBLEADVSTART", "+QBLEADVSTOP", "+QBLEGATTSNTFY", "+QBLESCAN", "+QBLESCANPARAM", "+QBLECONN",
            "+QBLECONNPARAM", "+QBLECFGMTU", "+QBLEGATTCNTFCFG", "+QBLEGATTCRD", "+QBLEGATTCWRCMD",
            "+QBLEGATTCWRREQ", "+QBLEDISCONN", "+QBLESTAT"]
    args = ["", "?", "=", "=-1", "=99999999999", '=""', "=,", "=0,0,0,0,0,0,0,0,0,0,0,0,0", '="version",0,9',
            '=0,"FFF2",3,"zz"', '=0,"\\"', "= 1 , 2"]
    for c in cmds:
        for a in args:
            emu.write(f"AT{c}{a}\r")
            out = emu.read_until(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n", timeout=3)
            assert out, (c, a)
    emu.drain(0.2)
    assert emu.cmd("AT") == b"\r\nOK\r\n"
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
