"""Quectel FCM242D: general, Wi-Fi, files and network utilities over a real pty."""
from __future__ import annotations

import os
import time

import pytest

from harness import Emu
from quectel_helpers import PWD, SSID, cmd_ok, emu, join, urc, world


@pytest.fixture
def e():
    """A module with echo off (not joined)."""
    m = emu()
    cmd_ok(m, "AT+QECHO=0")
    yield m
    m.stop()


# ------------------------------------------------------------------------------------------ general

@pytest.mark.usefixtures("host_style")
def test_general_commands_echo_and_errors():
    e = emu()
    try:
        assert e.cmd("AT") == b"AT" + e.term + b"\r\nOK\r\n"                    # echo on after power-up
        assert e.cmd("AT+QECHO=0") == b"AT+QECHO=0" + e.term + b"\r\nOK\r\n"    # 0-based: 0 = off
        assert e.cmd("AT") == b"\r\nOK\r\n"
        assert e.cmd("AT+QECHO=2") == b"\r\nERROR\r\n"                # the dump's 1-based '2' is not valid
        assert e.cmd("AT+QVERSION").startswith(b"\r\n+QVERSION: FCM242D")
        assert e.cmd("AT+QWLMAC") == b"\r\n+QWLMAC: 88:00:33:77:69:cc\r\n\r\nOK\r\n"
        assert e.cmd("AT+QNOSUCH") == b"\r\nERROR\r\n"
        assert e.cmd("AT+QVERSION?") == b"\r\nERROR\r\n"              # undocumented form
        assert e.cmd('AT+QCFG="urc/pin"') == b'\r\n+QCFG: "urc/pin",0,120\r\n\r\nOK\r\n'
        cmd_ok(e, 'AT+QCFG="urc/pin",1,200')
        assert e.cmd('AT+QCFG="urc/pin"') == b'\r\n+QCFG: "urc/pin",1,200\r\n\r\nOK\r\n'
        assert e.cmd('AT+QCFG="urc/pin",1,20') == b"\r\nERROR\r\n"
        cmd_ok(e, "AT+QSCLK=1,3")
        assert e.cmd("AT+QSCLK?") == b"\r\n+QSCLK: 1,3\r\n\r\nOK\r\n"
        cmd_ok(e, "AT+QAIRKISS=1")
        cmd_ok(e, "AT+QWEBCFG=0")
        assert e.cmd("AT+QICLOSE=?") == b"\r\n+QICLOSE: (0-11),(1-120)\r\n\r\nOK\r\n"
        assert e.cmd("AT+QFLST=?") == b"\r\nOK\r\n"                      # documented: OK only
        for c in ("QRST", "QECHO", "QSTAAPINFO", "QWSCAN"):                    # no test form in the manual
            assert e.cmd(f"AT+{c}=?") == b"\r\nERROR\r\n", c
        assert e.cmd("AT+QIDNSCFG=?") == b"\r\n+QIDNSCFG: <pridnsaddr>,<secdnsaddr>\r\n\r\nOK\r\n"
        cmd_ok(e, "AT+QECHO=1")
        assert e.cmd("AT") == b"AT" + e.term + b"\r\nOK\r\n"
    finally:
        e.stop()


def test_qsetband_rate_saved_and_restored_after_qrst(tmp_path):
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        assert e.cmd("AT+QSETBAND=9600,0") == b"\r\nOK\r\n"
        assert e.sync(lambda: e.module.baud) == 9600
        assert e.cmd("AT+QSETBAND?") == b"\r\n+QSETBAND: 9600\r\n\r\nOK\r\n"
        cmd_ok(e, "AT+QRST")
        e.read_until(b"ready\r\n")
        assert e.sync(lambda: e.module.baud) == 115200                     # not saved: back to default
        assert e.cmd("AT+QSETBAND?").startswith(b"AT+QSETBAND?" + e.term + b"\r\n+QSETBAND: 115200")  # echo is volatile too
        cmd_ok(e, "AT+QSETBAND=57600,1")
        cmd_ok(e, "AT+QRST")
        e.read_until(b"ready\r\n")
        assert e.sync(lambda: e.module.baud) == 57600
    finally:
        e.stop()
    e2 = emu(state_dir=tmp_path)     # emulator restart: the saved rate is used
    try:
        assert e2.sync(lambda: e2.module.baud) == 57600
    finally:
        e2.stop()


def test_qsetband_ok_at_old_rate_then_new_rate_paces_output():
    e = Emu("quectel-fcm242d", world=world(), pacing=True)
    e.start()
    try:
        e.drain(0.1)
        e.cmd("AT+QECHO=0")
        assert e.cmd("AT+QSETBAND=2400,0") == b"\r\nOK\r\n"
        t0 = time.monotonic()
        out = e.cmd("AT+QWSCAN")                      # ~70 bytes at 2400 baud = ~0.3 s
        took = time.monotonic() - t0
        assert b"+QWSCAN:" in out
        assert took >= len(out) * 10 / 2400 * 0.8, took
    finally:
        e.stop()


def test_qrst_tears_down_sockets_and_prints_ready(tcp_sink):
    e = emu()
    try:
        join(e)
        cmd_ok(e, f'AT+QIOPEN=0,"TCP","127.0.0.1",{tcp_sink.port},0,0')
        urc(e, r"\+QIOPEN: 0,0\r\n")
        conn = tcp_sink.wait_connection()
        assert e.cmd("AT+QRST") == b"\r\nOK\r\n"
        e.read_until(b"\r\nready\r\n", timeout=5)
        tcp_sink.wait_until(lambda: conn.closed or conn.eof, 5, "close")
        assert e.cmd("AT+QISTATE") == b"AT+QISTATE" + e.term + b"\r\nOK\r\n"    # echo back on, no sockets
        assert e.cmd("AT+QSTAST").endswith(b"+QSTAST: STATION_DOWN\r\n\r\nOK\r\n")
    finally:
        e.stop()


# ------------------------------------------------------------------------------------------ Wi-Fi

def test_scan_join_wrong_password_unknown_ssid_and_state():
    w = world(extra_aps=[{"ssid": "weak-open", "security": "open", "rssi": -80, "channel": 1}])
    e = emu(w)
    try:
        cmd_ok(e, "AT+QECHO=0")
        out = e.cmd("AT+QWSCAN")
        assert out == (b'\r\n+QWSCAN: "lab-ap",WPA2_PSK,-40,02:00:00:00:00:01,11\r\n'
                       b'+QWSCAN: "weak-open",OPEN,-80,02:00:00:00:00:02,1\r\n\r\nOK\r\n')
        cmd_ok(e, f'AT+QSTAAPINFO="{SSID}","wrong-password"')
        urc(e, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n")
        cmd_ok(e, 'AT+QSTAAPINFO="nobody-here","whatever12"')
        urc(e, r"\+QSTASTAT: SCAN_NO_AP\r\n")
        assert e.cmd(f'AT+QSTAAPINFO="{SSID}","short"') == b"\r\nERROR\r\n"   # 8..63 bytes
        assert e.cmd("AT+QGETWIFISTATE") == b"\r\nERROR\r\n"
        cmd_ok(e, f'AT+QSTAAPINFO="{SSID}","{PWD}"')
        assert e.read_until(rb"GOT_IP\r\n") == b"\r\n+QSTASTAT: WLAN_CONNECTED\r\n\r\n+QSTASTAT: GOT_IP\r\n"
        assert e.cmd('AT+QGETIP="station"') == b"\r\n+QGETIP: 192.168.50.23,192.168.50.1,255.255.255.0,192.168.50.1\r\n\r\nOK\r\n"
        assert e.cmd("AT+QSTAST") == b"\r\n+QSTAST: STATION_UP\r\n\r\nOK\r\n"
        assert e.cmd("AT+QGETWIFISTATE") == (b"\r\n+QGETWIFISTATE: ssid=lab-ap,bssid=02:00:00:00:00:01,rssi=-40,"
                                              b"psk_type=WPA2_PSK\r\n\r\nOK\r\n")
        cmd_ok(e, "AT+QSTASTOP")
        urc(e, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n")
        assert e.cmd('AT+QGETIP="station"') == b"\r\n+QGETIP: 0.0.0.0,0.0.0.0,0.0.0.0,0.0.0.0\r\n\r\nOK\r\n"
        cmd_ok(e, 'AT+QSTAAPINFO="weak-open"')                          # open network, no password
        urc(e, r"GOT_IP\r\n")
    finally:
        e.stop()


def test_static_addressing_and_dhcp_switch(e):
    assert e.cmd("AT+QSTADHCP?") == b"\r\n+QSTADHCP: 1\r\n\r\nOK\r\n"
    assert e.cmd('AT+QSTASTATIC="10.1.2.3","255.255.0.0","10.1.0.1","8.8.8.8"') == b"\r\nOK\r\n"
    assert e.cmd('AT+QSTASTATIC="10.1.2.300","255.255.0.0","10.1.0.1","8.8.8.8"') == b"\r\nERROR\r\n"
    assert e.cmd("AT+QSTADHCP?") == b"\r\n+QSTADHCP: 0\r\n\r\nOK\r\n"
    cmd_ok(e, f'AT+QSTAAPINFO="{SSID}","{PWD}"')
    urc(e, r"GOT_IP\r\n")
    assert e.cmd('AT+QGETIP="station"') == b"\r\n+QGETIP: 10.1.2.3,10.1.0.1,255.255.0.0,8.8.8.8\r\n\r\nOK\r\n"
    cmd_ok(e, "AT+QSTADHCP=1")
    assert e.cmd('AT+QGETIP="station"').startswith(b"\r\n+QGETIP: 192.168.50.23,")
    cmd_ok(e, 'AT+QIDNSCFG="1.1.1.1","9.9.9.9"')
    assert e.cmd("AT+QIDNSCFG?") == b"\r\n+QIDNSCFG: 1.1.1.1,9.9.9.9\r\n\r\nOK\r\n"


def test_link_down_urc_when_control_plane_removes_ap():
    e = emu()
    try:
        join(e)
        e.sync(lambda: e.world.access_points.clear())      # the AP leaves the air, nobody tells the module
        t0 = time.monotonic()
        urc(e, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n", timeout=3)
        assert time.monotonic() - t0 < 1.5
        assert e.cmd("AT+QSTAST") == b"\r\n+QSTAST: STATION_DOWN\r\n\r\nOK\r\n"
        # world_changed() reacts at once (deauth while the AP stays on air)
        e.sync(lambda: e.world.access_points.extend(__import__("atemu.world", fromlist=["World"]).World.from_dict(world()).access_points))
        cmd_ok(e, f'AT+QSTAAPINFO="{SSID}","{PWD}"')
        urc(e, r"GOT_IP\r\n")
        e.sync(lambda: e.module.profile.world_changed({"change": "deauth", "ssid": SSID}))
        assert e.read_until(rb"WLAN_DISCONNECTED\r\n", timeout=0.5)
    finally:
        e.stop()


def test_default_hotspot_survives_qrst_and_restart(tmp_path):
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        cmd_ok(e, f'AT+QSTAAPINFODEF="{SSID}","{PWD}"')
        urc(e, r"GOT_IP\r\n")
        cmd_ok(e, "AT+QRST")
        out = e.read_until(rb"GOT_IP\r\n", timeout=5)            # reconnects by itself after boot
        assert b"ready\r\n" in out and b"WLAN_CONNECTED" in out
    finally:
        e.stop()
    e2 = emu(state_dir=tmp_path)
    try:
        e2.cmd("AT+QECHO=0")
        for _ in range(50):
            if b"STATION_UP" in e2.cmd("AT+QSTAST"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("default hotspot not joined after restart")
        cmd_ok(e2, "AT+QSTAAPINFORMV")
        cmd_ok(e2, "AT+QRST")
        e2.read_until(b"ready\r\n")
        assert e2.expect_nothing(0.5) is None                      # no reconnect any more
    finally:
        e2.stop()


def test_soft_ap_is_visible_in_the_world(e):
    assert e.cmd("AT+QAPSTATE") == b"\r\n+QAPSTATE: SOFTAP_DOWN\r\n\r\nOK\r\n"
    cmd_ok(e, 'AT+QAPSTATIC="192.168.9.1","255.255.255.0","192.168.9.1","192.168.9.1"')
    assert e.cmd('AT+QSOFTAP="testap","1234567"') == b"\r\nERROR\r\n"     # key 8..63
    cmd_ok(e, 'AT+QSOFTAP="testap","12345678"')
    urc(e, r"\+QAPSTAT: AP_UP\r\n")
    assert e.cmd("AT+QAPSTATE") == b"\r\n+QAPSTATE: SOFTAP_UP\r\n\r\nOK\r\n"
    assert e.cmd('AT+QGETIP="ap"') == b"\r\n+QGETIP: 192.168.9.1,192.168.9.1,255.255.255.0,192.168.9.1\r\n\r\nOK\r\n"
    aps = e.sync(lambda: [(a.ssid, a.security, a.password) for a in e.world.access_points])
    assert ("testap", "wpa2", "12345678") in aps
    cmd_ok(e, "AT+QSOFTAPSTOP")
    urc(e, r"\+QAPSTAT: AP_DOWN\r\n")
    assert "testap" not in e.sync(lambda: [a.ssid for a in e.world.access_points])


def test_bad_static_addressing_is_refused_and_the_running_ap_stays(e):
    cmd_ok(e, 'AT+QSOFTAP="first","12345678"')
    urc(e, r"\+QAPSTAT: AP_UP\r\n")
    for mask in ("255.0.255.0", "255.255.255.255"):          # not a netmask / no room for a station
        assert e.cmd(f'AT+QAPSTATIC="192.168.9.1","{mask}","192.168.9.1","192.168.9.1"') == b"\r\nERROR\r\n", mask
    assert e.cmd('AT+QSTASTATIC="10.1.2.3","255.0.255.0","10.1.0.1","8.8.8.8"') == b"\r\nERROR\r\n"
    assert e.cmd("AT+QSTADHCP?") == b"\r\n+QSTADHCP: 1\r\n\r\nOK\r\n"              # nothing was taken
    assert e.cmd("AT+QAPSTATE") == b"\r\n+QAPSTATE: SOFTAP_UP\r\n\r\nOK\r\n"
    cmd_ok(e, 'AT+QSOFTAP="second","12345678"')                # the default addressing is still in force
    urc(e, r"\+QAPSTAT: AP_UP\r\n")
    assert e.cmd('AT+QGETIP="ap"') == b"\r\n+QGETIP: 192.168.4.1,0.0.0.0,255.255.255.0,192.168.4.1\r\n\r\nOK\r\n"
    assert e.sync(lambda: [a.ssid for a in e.world.access_points if a.ssid in ("first", "second")]) == ["second"]
    cmd_ok(e, 'AT+QAPSTATIC="192.168.9.1","255.255.255.254","192.168.9.1","192.168.9.1"')   # /31: one station
    e.expect_nothing(0.1)


def test_e1_sta_then_ap(e):
    assert e.cmd(f'AT+QSTAAPINFO="{SSID}","{PWD}"') == b"\r\nOK\r\n"
    assert e.cmd('AT+QSOFTAP="testap","12345678"') == b"\r\nOK\r\n"
    out = e.read_until(rb"GOT_IP\r\n")
    assert b"AP_UP" in out + e.drain(0.2)


# ------------------------------------------------------------------------------------------ files

def test_files_write_read_list_delete_on_disk(tmp_path):
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        assert e.cmd('AT+QFOPEN="test.txt",0') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        e.write(b"AT+QFWRITE=1,10\r")
        assert e.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        e.write(b"0123\r\n6789")
        assert e.read_until(b"OK\r\n") == b"\r\n+QFWRITE: 10,10\r\n\r\nOK\r\n"
        assert (tmp_path / "flash" / "test.txt").read_bytes() == b"0123\r\n6789"
        assert e.cmd("AT+QFOPEN?") == b'\r\n+QFOPEN: "test.txt",1,0\r\n\r\nOK\r\n'
        cmd_ok(e, "AT+QFCLOSE=1")
        assert e.cmd("AT+QFCLOSE=1") == b"\r\nERROR\r\n"
        assert e.cmd('AT+QFOPEN="test.txt",2') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        assert e.cmd("AT+QFREAD=1,4") == b"\r\nCONNECT 4\r\n0123\r\nOK\r\n"
        assert e.cmd("AT+QFREAD=1") == b"\r\nCONNECT 6\r\n\r\n6789\r\nOK\r\n"
        e.write(b"AT+QFWRITE=1,3\r")
        assert e.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"            # read-only mode
        cmd_ok(e, "AT+QFCLOSE=1")
        assert e.cmd('AT+QFOPEN="missing.bin",2') == b"\r\nERROR\r\n"
        # timeout ends a short write
        assert e.cmd('AT+QFOPEN="b.bin",1') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        e.write(b"AT+QFWRITE=1,100,1\r")
        e.read_until(b"CONNECT\r\n")
        e.write(b"abc")
        assert e.read_until(b"OK\r\n", timeout=3) == b"\r\n+QFWRITE: 3,3\r\n\r\nOK\r\n"
        cmd_ok(e, "AT+QFCLOSE=1")
        assert e.cmd("AT+QFLST") == b'\r\n+QFLST: "b.bin",3\r\n+QFLST: "test.txt",10\r\n\r\nOK\r\n'
        assert e.cmd('AT+QFLST="*.txt"') == b'\r\n+QFLST: "test.txt",10\r\n\r\nOK\r\n'
        cmd_ok(e, 'AT+QFDEL="test.txt"')
        assert not (tmp_path / "flash" / "test.txt").exists()
        assert e.cmd('AT+QFDEL="test.txt"') == b"\r\nERROR\r\n"
        cmd_ok(e, 'AT+QFDEL="*"')
        assert e.cmd("AT+QFLST") == b"\r\nOK\r\n"
    finally:
        e.stop()


def test_file_names_cannot_escape_and_size_limit(tmp_path):
    state = tmp_path / "state"
    e = emu(state_dir=state)
    try:
        cmd_ok(e, "AT+QECHO=0")
        for bad in ('"../evil.txt"', '"/tmp/evil.txt"', '"a/../../evil.txt"', '"a\x00b"'):
            assert e.cmd(f"AT+QFOPEN={bad},1".encode("latin-1")) == b"\r\nERROR\r\n", bad
            assert e.cmd(f"AT+QFDEL={bad}".encode("latin-1")) == b"\r\nERROR\r\n", bad
        assert not (tmp_path / "evil.txt").exists() and not (state / "evil.txt").exists()
        assert sorted(p.name for p in (state / "flash").iterdir()) == []
        # 64 KiB per file
        assert e.cmd('AT+QFOPEN="big.bin",1') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        e.write(b"AT+QFWRITE=1,65535\r")
        e.read_until(b"CONNECT\r\n")
        e.write(os.urandom(65535))
        assert e.read_until(b"OK\r\n", timeout=10) == b"\r\n+QFWRITE: 65535,65535\r\n\r\nOK\r\n"
        e.write(b"AT+QFWRITE=1,2\r")
        e.read_until(b"CONNECT\r\n")
        e.write(b"xy")
        assert e.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
        assert (state / "flash" / "big.bin").stat().st_size == 65535
        assert e.cmd("AT+QFWRITE=1,0") == b"\r\nERROR\r\n"
        assert e.cmd("AT") == b"\r\nOK\r\n"
    finally:
        e.stop()


# ------------------------------------------------------------------------------------------ OTA

def test_qwlanota_downloads_the_image(http_server, tmp_path):
    image = os.urandom(200_000)
    url = http_server.url(http_server.add_file("fw.bin", image))
    e = emu(state_dir=tmp_path)
    try:
        assert e.cmd(f'AT+QWLANOTA="{url}"').endswith(b"ERROR\r\n")        # no Wi-Fi yet
        join(e)
        cmd_ok(e, f'AT+QWLANOTA="{url}"')
        out = e.read_until(rb"DOWNLOAD_(SUCCEED|FAILED)\r\n", timeout=10)
        assert out.startswith(b"\r\n+QOTASTAT: START_DOWNLOAD\r\n")
        assert out.count(b"DOWNLOADING") == 3 and out.endswith(b"+QOTASTAT: DOWNLOAD_SUCCEED\r\n")
        assert (tmp_path / "ota" / "firmware.bin").read_bytes() == image
        cmd_ok(e, f'AT+QWLANOTA="{http_server.url("/status/404")}"')
        out = e.read_until(rb"DOWNLOAD_(SUCCEED|FAILED)\r\n", timeout=10)
        assert out.endswith(b"+QOTASTAT: DOWNLOAD_FAILED\r\n")
        assert (tmp_path / "ota" / "firmware.bin").read_bytes() == image
    finally:
        e.stop()


# ------------------------------------------------------------------------------------------ utilities

def test_qidnscfg_servers_are_asked(tcp_echo):
    from peers.dns import DnsServer
    with DnsServer({"echo.test": [("A", "127.0.0.1")]}) as dns, DnsServer(silent=True) as dead:
        e = emu(world(hosts={"device.example.test": "127.0.0.1"}))
        try:
            cmd_ok(e, "AT+QECHO=0")
            join(e)
            assert e.cmd('AT+QIDNSCFG="dns.test"') == b"\r\nERROR\r\n"
            cmd_ok(e, f'AT+QIDNSCFG="{dead.address}","{dns.address}"')
            assert e.cmd("AT+QIDNSCFG?") == f"\r\n+QIDNSCFG: {dead.address},{dns.address}\r\n\r\nOK\r\n".encode()
            # the primary never answers, the secondary does
            cmd_ok(e, 'AT+QIDNSGIP="echo.test"')
            assert e.read_until(rb'"127.0.0.1"\r\n', timeout=15) == b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","127.0.0.1"\r\n'
            assert dead.count("echo.test") == 1 and dns.count("echo.test") == 1
            # unknown to the server (NXDOMAIN): 563; the world's overrides still come first
            cmd_ok(e, 'AT+QIDNSGIP="nope.test"')
            assert e.read_until(rb"dnsgip\",\d+\r\n", timeout=15) == b'\r\n+QIURC: "dnsgip",563\r\n'
            cmd_ok(e, 'AT+QIDNSGIP="device.example.test"')
            assert e.read_until(rb'"127.0.0.1"\r\n', timeout=5).endswith(b'+QIURC: "dnsgip","127.0.0.1"\r\n')
            assert dns.count("device.example.test") == 0
            # a TCP connect by name asks them too
            cmd_ok(e, f'AT+QIOPEN=0,"TCP","echo.test",{tcp_echo.port},0,0')
            assert e.read_until(rb"\+QIOPEN: 0,\d+\r\n", timeout=15).endswith(b"+QIOPEN: 0,0\r\n")
            assert dns.count("echo.test") == 2
            # only a silent server: 562 (timeout)
            cmd_ok(e, f'AT+QIDNSCFG="{dead.address}","0.0.0.0"')
            cmd_ok(e, 'AT+QIDNSGIP="echo.test"')
            assert e.read_until(rb"dnsgip\",\d+\r\n", timeout=20) == b'\r\n+QIURC: "dnsgip",562\r\n'
        finally:
            e.stop()


def test_dns_ping_ntp(sntp_server):
    e = emu(world(hosts={"device.example.test": "127.0.0.1"}))
    try:
        cmd_ok(e, "AT+QECHO=0")
        assert e.cmd('AT+QIDNSGIP="device.example.test"') == b"\r\nERROR\r\n"       # no Wi-Fi
        join(e)
        cmd_ok(e, 'AT+QIDNSGIP="device.example.test"')
        assert e.read_until(rb'"127.0.0.1"\r\n') == b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","127.0.0.1"\r\n'
        cmd_ok(e, 'AT+QIDNSGIP="no-such-host.invalid"')
        assert e.read_until(rb"dnsgip\",\d+\r\n", timeout=10) == b'\r\n+QIURC: "dnsgip",563\r\n'
        cmd_ok(e, f'AT+QNTP="127.0.0.1",{sntp_server.port}')
        m = urc(e, rb'\+QNTP: 0,"(\d\d)/(\d\d)/(\d\d),(\d\d):(\d\d):(\d\d)\+00"\r\n')
        yy, mo, dd, hh, mi, ss = (int(x) for x in m.groups())
        import calendar
        got = calendar.timegm((2000 + yy, mo, dd, hh, mi, ss))
        assert abs(got - (time.time() + 1000)) < 5                      # the server's clock, not ours
        assert len(sntp_server.requests) == 1
        cmd_ok(e, 'AT+QNTP="127.0.0.1",9')                                # nobody answers SNTP there
        assert e.read_until(rb"\+QNTP: \d+\r\n", timeout=15) in (b"\r\n+QNTP: 567\r\n", b"\r\n+QNTP: 550\r\n")
        cmd_ok(e, 'AT+QPING="device.example.test",2,1')
        out = e.read_until(rb"\+QPING: \d+,\d+,\d+,\d+,\d+,\d+,\d+\r\n|\+QPING: 569\r\n|\+QPING: 55\d\r\n", timeout=10)
        if b"+QPING: 569" in out or b"QPING: 55" in out:
            pytest.skip("ICMP not permitted on this host")
        assert b'+QPING: 0,"127.0.0.1",32,' in out
        assert out.endswith(b"\r\n") and b"+QPING: 0,1,1,0," in out
    finally:
        e.stop()


def test_web_and_airkiss_provisioning(tmp_path):
    import urllib.parse
    import urllib.request
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        assert e.sync(lambda: e.module.profile.airkiss_broadcast(SSID, PWD)) is False   # not listening
        e.expect_nothing(0.3)
        cmd_ok(e, "AT+QWEBCFG=1")
        urc(e, r"\+QAPSTAT: AP_UP\r\n")
        assert "FCM242D_69CC" in e.sync(lambda: [a.ssid for a in e.world.access_points])
        port = e.sync(lambda: e.module.profile.webcfg_port)
        assert b"<form" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3).read()
        body = urllib.parse.urlencode({"ssid": SSID, "password": PWD}).encode()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/config", body, timeout=3).read() == b"OK\n"
        assert e.read_until(rb"GOT_IP\r\n").endswith(b"+QSTASTAT: GOT_IP\r\n")
        cmd_ok(e, "AT+QWEBCFG=0")
        urc(e, r"\+QAPSTAT: AP_DOWN\r\n")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        cmd_ok(e, "AT+QSTASTOP")
        e.drain(0.1)
        cmd_ok(e, "AT+QAIRKISS=1")
        assert e.sync(lambda: e.module.profile.airkiss_broadcast(SSID, PWD)) is True
        assert e.read_until(rb"GOT_IP\r\n").endswith(b"+QSTASTAT: GOT_IP\r\n")
        cmd_ok(e, "AT+QRST")                                          # provisioned credentials are saved
        e.read_until(rb"GOT_IP\r\n", timeout=5)
    finally:
        e.stop()


def test_soft_ap_stations_from_the_control_plane(e):
    prof = lambda: e.module.profile   # noqa: E731
    assert e.sync(lambda: prof().ap_station_join("02:11:22:33:44:55")) is None     # no soft AP yet
    e.expect_nothing(0.2)
    cmd_ok(e, 'AT+QSOFTAP="testap","12345678"')
    urc(e, r"\+QAPSTAT: AP_UP\r\n")
    assert e.sync(lambda: prof().ap_station_join("02:11:22:33:44:55")) == "192.168.4.2"
    assert e.read_until(rb"AP_CONNECT\r\n") == b"\r\n+QAPSTAT: AP_CONNECT\r\n"
    assert e.sync(lambda: prof().ap_station_join("02-11-22-33-44-55")) == "192.168.4.2"   # already there
    assert e.sync(lambda: prof().ap_station_join("021122334466")) == "192.168.4.3"
    assert e.read_until(rb"AP_CONNECT\r\n") == b"\r\n+QAPSTAT: AP_CONNECT\r\n"        # one URC, not two
    assert e.sync(lambda: prof().snapshot()["wifi"]["softap_stations"]) == ["192.168.4.2", "192.168.4.3"]
    with pytest.raises(ValueError):
        e.sync(lambda: prof().ap_station_join("not-a-mac"))
    assert e.sync(lambda: prof().ap_station_leave("02:11:22:33:44:55")) is True
    assert e.read_until(rb"AP_DISCONNECT\r\n") == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n"
    assert e.sync(lambda: prof().ap_station_leave("02:11:22:33:44:55")) is False      # not there any more
    e.expect_nothing(0.2)
    # stopping the AP drops the station that is left, then the AP goes down
    assert e.cmd("AT+QSOFTAPSTOP") == b"\r\nOK\r\n"
    assert e.read_until(rb"AP_DOWN\r\n") == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n\r\n+QAPSTAT: AP_DOWN\r\n"
    assert e.sync(lambda: prof().ap_station_leave("02:11:22:33:44:66")) is False


def test_another_quectel_joins_the_soft_ap():
    from atemu.world import World
    shared = World.from_dict(world())
    ap, sta = emu(shared), emu(shared)
    try:
        cmd_ok(ap, "AT+QECHO=0")
        cmd_ok(sta, "AT+QECHO=0")
        cmd_ok(ap, 'AT+QSOFTAP="hub","hub-pass-1"')
        urc(ap, r"\+QAPSTAT: AP_UP\r\n")
        assert ap.sync(lambda: ap.module.profile.ap_station_join("02:00:00:00:00:aa")) == "192.168.4.2"
        urc(ap, r"AP_CONNECT\r\n")
        assert b'+QWSCAN: "hub",WPA2_PSK,-40,88:00:33:77:69:cc,6' in sta.cmd("AT+QWSCAN")
        cmd_ok(sta, 'AT+QSTAAPINFO="hub","wrong-pass-1"')                      # the AP checks the key
        urc(sta, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n")
        ap.expect_nothing(0.3)
        cmd_ok(sta, 'AT+QSTAAPINFO="hub","hub-pass-1"')
        assert sta.read_until(rb"GOT_IP\r\n") == b"\r\n+QSTASTAT: WLAN_CONNECTED\r\n\r\n+QSTASTAT: GOT_IP\r\n"
        assert ap.read_until(rb"AP_CONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_CONNECT\r\n"
        # the soft AP's DHCP server leased the next free address
        assert sta.cmd('AT+QGETIP="station"') == b"\r\n+QGETIP: 192.168.4.3,192.168.4.1,255.255.255.0,192.168.4.1\r\n\r\nOK\r\n"
        cmd_ok(sta, "AT+QSTASTOP")
        urc(sta, r"WLAN_DISCONNECTED\r\n")
        assert ap.read_until(rb"AP_DISCONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n"
        cmd_ok(sta, 'AT+QSTAAPINFO="hub","hub-pass-1"')
        urc(sta, r"GOT_IP\r\n")
        urc(ap, r"AP_CONNECT\r\n", 3)
        # the AP stops: both stations are dropped, the emulated one loses its link
        assert ap.cmd("AT+QSOFTAPSTOP") == b"\r\nOK\r\n"
        assert ap.read_until(rb"AP_DOWN\r\n") == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n" * 2 + b"\r\n+QAPSTAT: AP_DOWN\r\n"
        assert sta.read_until(rb"WLAN_DISCONNECTED\r\n", 3) == b"\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n"
        ap.expect_nothing(0.3)                                   # its leave finds nothing to report
        # a station rebooting leaves the AP
        cmd_ok(ap, 'AT+QSOFTAP="hub","hub-pass-1"')
        urc(ap, r"AP_UP\r\n")
        cmd_ok(sta, 'AT+QSTAAPINFO="hub","hub-pass-1"')
        urc(sta, r"GOT_IP\r\n")
        urc(ap, r"AP_CONNECT\r\n", 3)
        cmd_ok(sta, "AT+QRST")
        assert ap.read_until(rb"AP_DISCONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n"
    finally:
        sta.stop()
        ap.stop()


# ------------------------------------------------------------------------------------------ conformance

# the forms of every part-1 command in the inventory (§2.1): T test, R read, W write, E execute
PART1_FORMS = {
    "+QRST": "E", "+QVERSION": "E", "+QECHO": "W", "+QGETIP": "W", "+QSETBAND": "WR", "+QWLANOTA": "W",
    "+QWLMAC": "E", "+QSTAST": "E", "+QSTADHCP": "RW", "+QSTASTATIC": "W", "+QSTASTOP": "E", "+QSOFTAP": "W",
    "+QAPSTATE": "E", "+QAPSTATIC": "W", "+QSOFTAPSTOP": "E", "+QSTAAPINFO": "W", "+QSTAAPINFODEF": "W",
    "+QGETWIFISTATE": "E", "+QWSCAN": "E", "+QIDNSCFG": "TRW", "+QWEBCFG": "W", "+QSTAAPINFORMV": "E",
    "+QSCLK": "RW", "+QAIRKISS": "W", "+QCFG": "TW", "+QICFG": "TW", "+QIOPEN": "TW", "+QICLOSE": "TW",
    "+QISTATE": "TREW", "+QISEND": "TW", "+QIRD": "TW", "+QIACCEPT": "TW", "+QISWTMD": "TW", "+QIGETERROR": "TE",
    "O": "E", "+QSSLCFG": "TW", "+QSSLOPEN": "TW", "+QSSLSEND": "TW", "+QSSLRECV": "TW", "+QSSLCLOSE": "TW",
    "+QSSLSTATE": "TRWE", "+QPING": "TW", "+QIDNSGIP": "TW", "+QNTP": "TWE", "+QFOPEN": "TRW", "+QFREAD": "TW",
    "+QFWRITE": "TW", "+QFCLOSE": "TW", "+QFLST": "TWE", "+QFDEL": "TW",
}
# the test-form answers (info lines before OK; "" = OK alone), from the manual's T rows
TEST_ANSWERS = {
    "+QIDNSCFG": "+QIDNSCFG: <pridnsaddr>,<secdnsaddr>",
    "+QCFG": '+QCFG: "urc/pin",(0,1),(60-300)',
    "+QICFG": "\r\n".join([
        '+QICFG: "transpktsize",(1-1460)', '+QICFG: "transwaittm",(0-20)', '+QICFG: "tcp/accept",(0,1)',
        '+QICFG: "qisend/timeout",(0-120)', '+QICFG: "passiveclosed",(0,1)', '+QICFG: "dataformat",(0,1),(0,1)',
        '+QICFG: "close/mode",(0,1)', '+QICFG: "tcp/kalive",(0,1),(60-7200),(10-20),(1-8)',
        '+QICFG: "tcp/tw_cycle",(0,1)', '+QICFG: "udp/broadcast",(0,1)']),
    "+QIOPEN": '+QIOPEN: (0-11),("TCP","UDP","TCP LISTENER","UDP SERVICE"),<IP_address>/<domain_name>,'
               '(0-65535),(0-65535),(0-2),(0,1)',
    "+QICLOSE": "+QICLOSE: (0-11),(1-120)",
    "+QISTATE": "",
    "+QISEND": "+QISEND: (0-11),(0-1460),<remoteIP>,(1-65535)",
    "+QIRD": "+QIRD: (0-11),(0-1500)",
    "+QIACCEPT": "+QIACCEPT: (0-11),(0,1),(0-11)",
    "+QISWTMD": "+QISWTMD: (0-11),(0-2)",
    "+QIGETERROR": "",
    "+QSSLOPEN": "+QSSLOPEN: (0-5),(0-11),<server_address>,<server_port>,(0-2)",
    "+QSSLSEND": "+QSSLSEND: (0-11),(1-1460)",
    "+QSSLRECV": "+QSSLRECV: (0-11),(1-1500)",
    "+QSSLCLOSE": "+QSSLCLOSE: (0-11),(0-65535)",
    "+QSSLSTATE": "",
    "+QPING": "+QPING: <host>,(1-255),(1-10)",
    "+QIDNSGIP": "+QIDNSGIP: <hostname>",
    "+QNTP": '+QNTP: "<server>",(1-65535)',
    "+QFOPEN": "+QFOPEN: <filename>,(0-2)",
    "+QFREAD": "+QFREAD: <filehandle>,<length>",
    "+QFWRITE": "+QFWRITE: <filehandle>,<length>,<timeout>",
    "+QFCLOSE": "+QFCLOSE: <filehandle>",
    "+QFLST": "",
    "+QFDEL": "+QFDEL: <file_name>",
}
SSLCFG_KEYS = ["sslversion", "seclevel", "ciphersuite", "negotiatetime", "sni", "cacert", "clientcert", "clientkey",
               "ignorelocaltime", "session_cache"]
# documented execute/read forms that are safe to run here (no reboot, no network needed)
HARMLESS = {"+QVERSION", "+QWLMAC", "+QSTAST", "+QSTASTOP", "+QAPSTATE", "+QSOFTAPSTOP", "+QWSCAN", "+QSTAAPINFORMV",
            "+QISTATE", "+QIGETERROR", "+QSSLSTATE", "+QFLST", "+QSETBAND", "+QSTADHCP", "+QIDNSCFG", "+QSCLK", "+QFOPEN"}


@pytest.mark.usefixtures("host_style")            # CR, CR LF, CR LF byte by byte
def test_every_part1_form_answers_as_documented(e):
    for name, forms in PART1_FORMS.items():
        test = e.cmd(f"AT{name}=?")
        if "T" not in forms:
            assert test == b"\r\nERROR\r\n", (name, test)              # undocumented test form
        elif name == "+QSSLCFG":
            lines = test.split(b"\r\n")[1:-3]
            assert [ln.split(b",")[0] for ln in lines] == [f'+QSSLCFG: "{k}"'.encode() for k in SSLCFG_KEYS]
            assert all(ln.split(b",")[1] == b"(0-5)" for ln in lines) and test.endswith(b"\r\n\r\nOK\r\n")
        else:
            info = TEST_ANSWERS[name]
            assert test == (f"\r\n{info}\r\n\r\nOK\r\n" if info else "\r\nOK\r\n").encode(), (name, test)
        read = e.cmd(f"AT{name}?")
        if "R" not in forms:
            assert read == b"\r\nERROR\r\n", (name, read)
        elif name in HARMLESS:
            assert read.endswith(b"\r\nOK\r\n"), (name, read)
        if "E" not in forms:
            assert e.cmd(f"AT{name}") == b"\r\nERROR\r\n", name
        elif name in HARMLESS:
            assert e.cmd(f"AT{name}").endswith(b"\r\nOK\r\n"), name
        if "W" not in forms:
            assert e.cmd(f"AT{name}=1") == b"\r\nERROR\r\n", name     # no write form either
    assert e.cmd("AT") == b"\r\nOK\r\n"
