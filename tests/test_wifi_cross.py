"""Soft APs and stations of DIFFERENT profiles in one shared world (atemu.wifi host_ap/associate).

Each test runs two or three modules over real ptys, every one on its own event loop, sharing ONE
World object; what is asserted is what each firmware reads on its UART.
"""
from __future__ import annotations

from atemu.world import World
from quectel_helpers import cmd_ok, emu, urc, world as quectel_world
from test_microchip_util import Winc
from test_ti_common import Ti

Q_MAC = "88:00:33:77:69:cc"          # the Quectel's default MAC (its soft AP's BSSID)
M_MAC = "f8:f0:05:e1:5c:01"          # the Microchip's MAC


def shared_world() -> World:
    return World.from_dict(quectel_world())


def quectel(w: World):
    q = emu(w)
    cmd_ok(q, "AT+QECHO=0")
    q.drain(0.1)
    return q


def microchip_ap(m: Winc, ssid: str, pwd: str) -> None:
    m.oks(f'AT+WAPC=1,"{ssid}"', "AT+WAPC=2,3", f'AT+WAPC=3,"{pwd}"')
    assert m.cmd("AT+WAP=1") == b"OK\r\n"


def ti_ap(t: Ti, ssid: str, pwd: str) -> str:
    """Restart the TI in the AP role with its DHCP server running; returns its MAC (the BSSID)."""
    t.boot()
    t.ok(f"AT+WlanSet=AP,SSID,{ssid}")
    t.ok("AT+WlanSet=AP,SECURITY,WPA_WPA2")
    t.ok(f"AT+WlanSet=AP,PASSWORD,{pwd}")
    t.ok("AT+WlanSetMode=AP")
    t.ok("AT+Stop=0")
    t.boot()
    t.ok("AT+NetAPPStart=DHCP_SERVER")
    return t.sync(lambda: t.module.profile.mac())


def test_ti_station_joins_a_quectel_soft_ap():
    w = shared_world()
    q = quectel(w)
    try:
        with Ti(world=w) as t:
            t.boot()
            cmd_ok(q, 'AT+QSOFTAP="qhub","qhub-pass-1"')
            urc(q, r"\+QAPSTAT: AP_UP\r\n")
            t.ok("AT+WlanConnect=qhub,,WPA_WPA2,qhub-pass-1,,,")
            ti_mac = t.sync(lambda: t.module.profile.mac())
            assert t.read_until(rb"ipv4_acquired[^\r]*\r\n", 5) == (
                f"+eventwlan:connect,qhub,{Q_MAC}\r\n"
                "+eventnetapp:ipv4_acquired,192.168.4.2,192.168.4.1,192.168.4.1\r\n").encode()
            assert q.read_until(rb"AP_CONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_CONNECT\r\n"
            assert q.sync(lambda: q.module.profile.snapshot()["wifi"]["softap_stations"]) == ["192.168.4.2"]
            assert q.sync(lambda: sorted(q.module.profile.ap_stations)) == [ti_mac]
            # the TI leaves: the Quectel sees it go
            assert t.ok("AT+WlanDisconnect") == b""
            assert t.read_until(rb"\r\n") == f"+eventwlan:disconnect,qhub,{Q_MAC},200\r\n".encode()
            assert q.read_until(rb"AP_DISCONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n"
            # back again, then the soft AP stops: the TI loses its link and its address
            t.ok("AT+WlanConnect=qhub,,WPA_WPA2,qhub-pass-1,,,")
            t.read_until(rb"ipv4_acquired,192\.168\.4\.2[^\r]*\r\n", 5)
            urc(q, r"AP_CONNECT\r\n", 3)
            assert q.cmd("AT+QSOFTAPSTOP") == b"\r\nOK\r\n"
            assert q.read_until(rb"AP_DOWN\r\n") == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n\r\n+QAPSTAT: AP_DOWN\r\n"
            assert t.read_until(rb"ipv4_lost[^\r]*\r\n", 3) == \
                f"+eventwlan:disconnect,qhub,{Q_MAC},4\r\n+eventnetapp:ipv4_lost,0\r\n".encode()
            q.expect_nothing(0.3)                   # the TI's leave finds no AP left to tell
            assert t.ok("AT+WlanGet=CONNECTION,") == b"+wlanget:sta,disconnected,,,,\r\n"
            # joined again, then AT+Stop: the TI reports the link going down (reason 200), the AP sees it leave
            cmd_ok(q, 'AT+QSOFTAP="qhub","qhub-pass-1"')
            urc(q, r"\+QAPSTAT: AP_UP\r\n")
            t.ok("AT+WlanConnect=qhub,,WPA_WPA2,qhub-pass-1,,,")
            t.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
            urc(q, r"AP_CONNECT\r\n", 3)
            t.ok("AT+Stop=0")
            assert b"+eventwlan:disconnect,qhub," + Q_MAC.encode() + b",200\r\n" in t.drain(0.3)
            assert q.read_until(rb"AP_DISCONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n"
    finally:
        q.stop()


def test_quectel_station_joins_a_microchip_soft_ap():
    w = shared_world()
    q = quectel(w)
    try:
        with Winc(world=w) as m:
            microchip_ap(m, "mhub", "mhub-pass-1")
            cmd_ok(q, 'AT+QSTAAPINFO="mhub","wrong-pass-1"')            # the key is checked first
            urc(q, r"\+QSTASTAT: WLAN_DISCONNECTED\r\n")
            m.expect_nothing(0.3)
            cmd_ok(q, 'AT+QSTAAPINFO="mhub","mhub-pass-1"')
            assert q.read_until(rb"GOT_IP\r\n") == b"\r\n+QSTASTAT: WLAN_CONNECTED\r\n\r\n+QSTASTAT: GOT_IP\r\n"
            assert m.read_until(rb"\+WAPAIP:.*?\r\n", 3) == \
                f'+WAPSC:1,"{Q_MAC.upper()}"\r\n+WAPAIP:1,"192.168.1.100"\r\n'.encode()
            # the address the soft-AP's DHCP server leased is the one the Quectel uses
            assert q.cmd('AT+QGETIP="station"') == \
                b"\r\n+QGETIP: 192.168.1.100,192.168.1.1,255.255.255.0,192.168.1.1\r\n\r\nOK\r\n"
            assert m.cmd("AT+WAP") == f'+WAP:1,"{Q_MAC.upper()}",-40\r\nOK\r\n'.encode()
            cmd_ok(q, "AT+QSTASTOP")
            urc(q, r"WLAN_DISCONNECTED\r\n")
            assert m.read_until(rb"\+WAPSD:.*?\r\n", 3) == f'+WAPSD:1,"{Q_MAC.upper()}"\r\n'.encode()
            # it joins again (the next ASSOC_ID and address), then the soft-AP stops
            cmd_ok(q, 'AT+QSTAAPINFO="mhub","mhub-pass-1"')
            urc(q, r"GOT_IP\r\n")
            assert m.read_until(rb"\+WAPAIP:.*?\r\n", 3) == \
                f'+WAPSC:2,"{Q_MAC.upper()}"\r\n+WAPAIP:2,"192.168.1.101"\r\n'.encode()
            assert b"+QGETIP: 192.168.1.101," in q.cmd('AT+QGETIP="station"')
            assert m.cmd("AT+WAP=0") == b"OK\r\n"
            assert m.read_until(rb"\+WAPSD:.*?\r\n") == f'+WAPSD:2,"{Q_MAC.upper()}"\r\n'.encode()
            assert q.read_until(rb"WLAN_DISCONNECTED\r\n", 3) == b"\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n"
            m.expect_nothing(0.3)
            assert b"mhub" not in q.cmd("AT+QWSCAN")          # off the air
    finally:
        q.stop()


def test_microchip_station_joins_a_ti_ap():
    w = shared_world()
    with Ti(world=w) as t, Winc(world=w) as m:
        ti_mac = ti_ap(t, "tihub", "tihub-pass-1")
        m.oks('AT+WSTAC=1,"tihub"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"tihub-pass-1"')
        m.ok("AT+WSTA=1")
        assert m.read_until(rb"\+WSTAAIP:.*?\r\n", 5) == \
            f'+WSTALU:1,"{ti_mac.upper()}",6\r\n+WSTAAIP:1,"10.123.45.2"\r\n'.encode()
        assert t.read_until(rb"ip_leased[^\r]*\r\n", 5) == \
            f"+eventwlan:sta_added,{M_MAC}\r\n+eventnetapp:ip_leased,10.123.45.2,4096,{M_MAC}\r\n".encode()
        assert t.ok("AT+NetCfgGet=AP_STATIONS_CONNECTED") == b"+netcfgget:1\r\n"
        # a control-plane station joins too (the hook TI now shares with the other profiles)
        assert t.sync(lambda: t.module.profile.ap_station_join("02:00:00:00:00:77")) == "10.123.45.3"
        t.read_until(rb"ip_leased,10\.123\.45\.3,4096,02:00:00:00:00:77\r\n", 3)
        assert t.sync(lambda: t.module.profile.ap_station_leave("02:00:00:00:00:77")) is True
        assert t.read_until(rb"ip_released[^\r]*\r\n", 3) == \
            b"+eventwlan:sta_removed,02:00:00:00:00:77\r\n+eventnetapp:ip_released,10.123.45.3,02:00:00:00:00:77,3\r\n"
        # the AP drops the Microchip station
        t.ok(f"AT+NetCfgSet=AP_STATION_DISCONNECT,,{M_MAC}")
        assert m.read_until(rb"\+WSTALD:.*?\r\n", 3) == b"+WSTALD:1\r\n"
        assert t.read_until(rb"ip_released[^\r]*\r\n", 5) == \
            f"+eventwlan:sta_removed,{M_MAC}\r\n+eventnetapp:ip_released,10.123.45.2,{M_MAC},8\r\n".encode()
        # it joins again, then the TI stops its AP: the station is dropped
        m.ok("AT+WSTA=1")
        m.read_until(rb'\+WSTAAIP:1,"10\.123\.45\.2"\r\n', 5)
        t.read_until(rb"ip_leased[^\r]*\r\n", 5)
        t.ok("AT+Stop=0")
        assert t.read_until(rb"ip_released[^\r]*\r\n", 3) == \
            f"+eventwlan:sta_removed,{M_MAC}\r\n+eventnetapp:ip_released,10.123.45.2,{M_MAC},4\r\n".encode()
        assert m.read_until(rb"\+WSTALD:.*?\r\n", 3) == b"+WSTALD:1\r\n"
        assert m.cmd("AT+WSTA") == b"+WSTA:0,0\r\nOK\r\n"


def test_stopping_a_microchip_soft_ap_drops_ti_and_quectel_stations():
    w = shared_world()
    q = quectel(w)
    try:
        with Winc(world=w) as m, Ti(world=w) as t:
            t.boot()
            ti_mac = t.sync(lambda: t.module.profile.mac())
            microchip_ap(m, "mhub", "mhub-pass-1")
            t.ok("AT+WlanConnect=mhub,,WPA_WPA2,mhub-pass-1,,,")
            assert t.read_until(rb"ipv4_acquired[^\r]*\r\n", 5) == (
                f"+eventwlan:connect,mhub,{M_MAC}\r\n"
                "+eventnetapp:ipv4_acquired,192.168.1.100,192.168.1.1,192.168.1.1\r\n").encode()
            assert m.read_until(rb"\+WAPAIP:.*?\r\n", 3) == \
                f'+WAPSC:1,"{ti_mac.upper()}"\r\n+WAPAIP:1,"192.168.1.100"\r\n'.encode()
            cmd_ok(q, 'AT+QSTAAPINFO="mhub","mhub-pass-1"')
            urc(q, r"GOT_IP\r\n")
            assert m.read_until(rb"\+WAPAIP:.*?\r\n", 3) == \
                f'+WAPSC:2,"{Q_MAC.upper()}"\r\n+WAPAIP:2,"192.168.1.101"\r\n'.encode()
            assert m.cmd("AT+WAP=0") == b"OK\r\n"
            assert m.read_until(rb'\+WAPSD:2,.*?\r\n') == \
                f'+WAPSD:1,"{ti_mac.upper()}"\r\n+WAPSD:2,"{Q_MAC.upper()}"\r\n'.encode()
            assert t.read_until(rb"ipv4_lost[^\r]*\r\n", 3) == \
                f"+eventwlan:disconnect,mhub,{M_MAC},4\r\n+eventnetapp:ipv4_lost,0\r\n".encode()
            assert q.read_until(rb"WLAN_DISCONNECTED\r\n", 3) == b"\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n"
            m.expect_nothing(0.3)
    finally:
        q.stop()


def test_a_microchip_powering_off_leaves_the_ap_it_hosts_and_the_one_it_joined():
    w = shared_world()
    q = quectel(w)
    try:
        # the Microchip is a station of the Quectel's soft AP, then powers off: the AP sees it leave
        m = Winc(world=w).start()
        try:
            cmd_ok(q, 'AT+QSOFTAP="qhub","qhub-pass-1"')
            urc(q, r"\+QAPSTAT: AP_UP\r\n")
            m.oks('AT+WSTAC=1,"qhub"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"qhub-pass-1"', "AT+WSTA=1")
            assert m.read_until(rb"\+WSTAAIP:.*?\r\n", 5) == \
                f'+WSTALU:1,"{Q_MAC.upper()}",6\r\n+WSTAAIP:1,"192.168.4.2"\r\n'.encode()
            assert q.read_until(rb"AP_CONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_CONNECT\r\n"
        finally:
            m.stop()
        assert q.read_until(rb"AP_DISCONNECT\r\n", 3) == b"\r\n+QAPSTAT: AP_DISCONNECT\r\n"
        assert q.sync(lambda: q.module.profile.ap_stations) == {}
        cmd_ok(q, "AT+QSOFTAPSTOP")
        urc(q, r"AP_DOWN\r\n")
        # the Microchip hosts a soft-AP the Quectel joined, then powers off: the Quectel loses its link
        m = Winc(world=w).start()
        try:
            microchip_ap(m, "mhub", "mhub-pass-1")
            cmd_ok(q, 'AT+QSTAAPINFO="mhub","mhub-pass-1"')
            urc(q, r"GOT_IP\r\n")
            m.read_until(rb"\+WAPAIP:1,.*?\r\n", 3)
        finally:
            m.stop()
        assert q.read_until(rb"WLAN_DISCONNECTED\r\n", 3) == b"\r\n+QSTASTAT: WLAN_DISCONNECTED\r\n"
        assert b"mhub" not in q.cmd("AT+QWSCAN")
    finally:
        q.stop()
