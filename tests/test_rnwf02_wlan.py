"""rnwf02 Wi-Fi: scan (+WSCNIND/+WSCNDONE), station (+WSTALU, IPv6 link-local then IPv4 +WSTAAIP,
association count), +WSTA/+ASSOC/+NETIFC, soft-AP with a (control-plane) station, the DHCP server configuration."""
from __future__ import annotations

import socket

from rnwf_helpers import Rnwf
from test_microchip_util import prov_cmd, recv_to_eof


def test_scan_filters():
    with Rnwf() as e:
        assert e.cmd("AT+WSCNC") == (b"+WSCNC:1,0\r\n+WSCNC:2,20\r\n+WSCNC:3,120\r\n+WSCNC:4,2\r\n"
                                     b"+WSCNC:5,2\r\n+WSCNC:6,0\r\n+WSCNC:7,119\r\n+WSCNC:8,1\r\nOK\r\n")
        assert e.cmd("AT+WSCNC=1,11") == b"OK\r\n"
        assert e.cmd("AT+WSCN=0") == b"OK\r\n"
        # channel 11 holds the hidden AP only: listed without a name
        assert e.read_until(rb"\+WSCNDONE:\d+\r\n") == b'\r+WSCNIND:-70,1,11,"24:F2:7F:A5:8B:82",""\r\n\r+WSCNDONE:1\r\n'
        # an RSSI threshold drops the weaker APs
        e.oks("AT+WSCNC=1,0", "AT+WSCNC=6,-60")
        assert e.cmd("AT+WSCN=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSCNDONE:\d+\r\n") == (b'\r+WSCNIND:-50,3,6,"00:01:02:03:04:05","MyAP"\r\n'
                                                         b'\r+WSCNIND:-57,0,1,"98:FC:11:41:E7:7C","test-network"\r\n'
                                                         b"\r+WSCNDONE:2\r\n")
        assert e.cmd("AT+WSCNC=2,5") == b'ERROR:0.4,"Invalid Parameter"\r\n'
        # a scan while one runs (passive slots of 1.2 s)
        e.oks("AT+WSCNC=6,0", "AT+WSCNC=3,1200")
        assert e.cmd("AT+WSCN=0") == b"OK\r\n"
        assert e.cmd("AT+WSCN=0") == b'ERROR:1.0,"Wi-Fi Request Failed"\r\n'
        assert e.read_until(rb"\+WSCNDONE:5\r\n", timeout=8).count(b"+WSCNIND:") == 5


def test_station_addresses_and_association_count():
    with Rnwf() as e:
        assert e.cmd("AT+WSTA") == b"+WSTA:0\r\nOK\r\n"
        assert e.cmd("AT+ASSOC") == b"OK\r\n"               # not associated: no report
        e.expect_nothing(0.2)
        e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"')
        assert e.cmd("AT+WSTAC") == (b'+WSTAC:1,"MyAP"\r\n+WSTAC:2,3\r\n+WSTAC:3,"MyAPPSK-123"\r\n+WSTAC:4,0\r\n'
                                     b'+WSTAC:5,""\r\n+WSTAC:7,10000\r\n+WSTAC:8,0\r\nOK\r\n')
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        got = e.read_until(rb'\+WSTAAIP:1,"192\.168\.0\.20"\r\n')
        # link up, then the IPv6 link-local address (EUI-64 of the MAC), then the DHCP address
        assert got == (b'\r+WSTALU:1,"00:01:02:03:04:05",6\r\n\r+WSTAAIP:1,"FE80::691:62FF:FE9A:5C01"\r\n'
                       b'\r+WSTAAIP:1,"192.168.0.20"\r\n')
        assert e.cmd("AT+WSTA") == b"+WSTA:1\r\nOK\r\n"
        assert e.cmd("AT+ASSOC") == b"OK\r\n"               # the report follows as an AEC
        assert e.read_until(rb"\+ASSOC:.*?\r\n") == b'\r+ASSOC:1,0,"00:01:02:03:04:05",-50\r\n'
        assert e.cmd("AT+NETIFC") == b"+NETIFC:0,1\r\nOK\r\n"
        assert e.cmd("AT+NETIFC=0,1") == b'+NETIFC:1,"wlan0"\r\nOK\r\n'
        assert e.cmd("AT+NETIFC=0,40") == b'+NETIFC:40,"192.168.0.20/24"\r\nOK\r\n'
        assert e.cmd("AT+NETIFC=0,2") == b'+NETIFC:2,"04:91:62:9A:5C:01"\r\nOK\r\n'
        assert e.cmd("AT+NETIFC=0,10") == b"+NETIFC:10,1\r\nOK\r\n"
        assert e.cmd('AT+NETIFC=0,40,"10.0.0.1"') == b'ERROR:0.6,"Configuration Update Blocked"\r\n'   # DHCP on
        assert e.cmd("AT+WSTAC=1,\"other\"") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
        assert e.cmd("AT+WSTA=0") == b"OK\r\n"
        assert e.read_until(rb"\+WSTALD:\d+\r\n") == b"\r+WSTALD:1\r\n"
        # the next association is number 2
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        got = e.read_until(rb'\+WSTAAIP:2,"192\.168\.0\.20"\r\n')
        assert got.startswith(b'\r+WSTALU:2,"00:01:02:03:04:05",6\r\n\r+WSTAAIP:2,"FE80::')
        # the AP disappears from the world: link down
        e.sync(lambda: e.world.access_points.pop(0))
        assert e.read_until(rb"\+WSTALD:\d+\r\n", timeout=3) == b"\r+WSTALD:2\r\n"


def test_station_errors():
    with Rnwf() as e:
        e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"wrong-pass"')
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSTAERR:\d+\r\n") == b"\r+WSTAERR:3\r\n"
        e.oks('AT+WSTAC=1,"nowhere"')
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSTAERR:\d+\r\n") == b"\r+WSTAERR:3\r\n"
        # WPA3 configured, WPA2-only AP
        e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,5", 'AT+WSTAC=3,"MyAPPSK-123"')
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSTAERR:\d+\r\n") == b"\r+WSTAERR:3\r\n"
        assert e.cmd("AT+WSTAC=2,1") == b'ERROR:0.4,"Invalid Parameter"\r\n'   # WEP is not offered


def test_soft_ap_stations_and_dhcp_server():
    with Rnwf() as ap:
        ap.oks('AT+WAPC=1,"rnwf-ap"', "AT+WAPC=2,3", 'AT+WAPC=3,"secret-pass"', "AT+WAPC=4,6")
        assert ap.cmd("AT+WAP=1") == b"OK\r\n"
        assert ap.cmd("AT+WAP") == b"+WAP:1\r\nOK\r\n"
        # a virtual station joins through the control plane
        aid = ap.sync(ap.prof.ap_station_join, "02:00:00:00:00:07")
        assert aid == 1
        assert ap.read_until(rb"\+WAPAIP:.*?\r\n") == b'\r+WAPSC:1,"02:00:00:00:00:07"\r\n\r+WAPAIP:1,"192.168.1.100"\r\n'
        assert ap.cmd("AT+ASSOC") == b"OK\r\n"
        assert ap.read_until(rb"\+ASSOC:.*?\r\n") == b'\r+ASSOC:1,1,"02:00:00:00:00:07",-40\r\n'
        assert ap.cmd("AT+DHCPSC=0,2") == b'+DHCPSC:2,"192.168.1.100"\r\nOK\r\n'
        assert ap.cmd('AT+DHCPSC=0,2,"192.168.1.50"') == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
        assert ap.cmd("AT+WAP=0") == b"OK\r\n"
        assert ap.read_until(rb"\+WAPSD:.*?\r\n") == b'\r+WAPSD:1,"02:00:00:00:00:07"\r\n'
        assert ap.cmd('AT+DHCPSC=0,2,"192.168.1.x"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
        # the guide's DHCPSC table: the pool list, 3/4 read-only, and the pool start really leased
        assert ap.cmd("AT+DHCPSC") == b"+DHCPSC:0\r\nOK\r\n"
        assert ap.cmd('AT+DHCPSC=0,2,"10.9.0.50"') == b"OK\r\n"
        assert ap.cmd('AT+DHCPSC=0,10,"10.9.0.1"') == b"OK\r\n"
        assert ap.cmd("AT+DHCPSC=0") == (b'+DHCPSC:1,1\r\n+DHCPSC:2,"10.9.0.50"\r\n+DHCPSC:3,"10.9.0.59"\r\n+DHCPSC:4,0\r\n'
                                         b'+DHCPSC:5,1\r\n+DHCPSC:10,"10.9.0.1"\r\nOK\r\n')
        assert ap.cmd('AT+DHCPSC=0,3,"10.9.0.99"') == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
        assert ap.cmd("AT+WAP=1") == b"OK\r\n"
        assert ap.sync(ap.prof.ap_station_join, "02:00:00:00:00:08") == 2
        assert ap.read_until(rb"\+WAPAIP:.*?\r\n") == b'\r+WAPSC:2,"02:00:00:00:00:08"\r\n\r+WAPAIP:2,"10.9.0.51"\r\n'
        assert ap.cmd("AT+DHCPSC=0,4") == b"+DHCPSC:4,1\r\nOK\r\n"
        assert ap.cmd("AT+WAP=0") == b"OK\r\n"
        ap.aec(rb"\+WAPSD:2,.*?\r\n")
        assert ap.cmd('AT+WAPC=3,"short"') == b"OK\r\n"
        assert ap.cmd("AT+WAP=1") == b'ERROR:18.2,"Soft AP Start Not Permitted"\r\n'


def test_provisioning_over_tcp():
    with Rnwf() as e:
        assert e.cmd("AT+WPROVC") == b"+WPROVC:1,80\r\n+WPROVC:2,1\r\nOK\r\n"
        assert e.cmd("AT+WPROVC=2,1") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'   # read-only
        assert e.cmd("AT+WPROV") == b"+WPROV:0\r\nOK\r\n"
        assert e.cmd("AT+WPROV=1") == b"OK\r\n"
        assert e.cmd("AT+WPROV") == b"+WPROV:1\r\nOK\r\n"
        port = e.sync(lambda: e.prof.provisioning_port)      # 80 is taken for a user: a free port
        assert port
        assert e.cmd("AT+WAP") == b"+WAP:1\r\nOK\r\n"
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            assert e.read_until(rb"\+WPROVAT:.*?\r\n") == f'\r+WPROVAT:1,"127.0.0.1",{c.getsockname()[1]}\r\n'.encode()
            assert prov_cmd(c, b'AT+WSTAC=1,"MyAP"') == b"OK\r\n"
            assert prov_cmd(c, b"AT+WSTAC=2,3") == b"OK\r\n"
            assert prov_cmd(c, b'AT+WSTAC=3,"MyAPPSK-123"') == b"OK\r\n"
            assert prov_cmd(c, b"AT+WSTAC=1") == b'+WSTAC:1,"MyAP"\r\nOK\r\n'
            assert prov_cmd(c, b"AT+GMI") == b'ERROR:0.3,"Unknown AT Command"\r\n'
            c.sendall(b"AT+WPROV=0\r\n")
            assert recv_to_eof(c) == b"OK\r\n"          # then the link closes
        finally:
            c.close()
        assert e.read_until(rb"\+WPROVEXIT\r\n") == b"\r+WPROVEXIT\r\n"
        assert e.cmd("AT+WAP") == b"+WAP:0\r\nOK\r\n"
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        e.aec(rb'\+WSTAAIP:1,"192\.168\.0\.20"\r\n')


def test_regulatory_domain_limits_channels():
    world = {"wifi": {"access_points": [
        {"ssid": "ch6", "security": "open", "channel": 6, "rssi": -50, "bssid": "00:00:00:00:00:06"},
        {"ssid": "ch13", "security": "open", "channel": 13, "rssi": -60, "bssid": "00:00:00:00:00:0d"}]}}
    with Rnwf(world=world) as e:
        assert e.cmd("AT+WIFIC") == (b'+WIFIC:10,"GEN"\r\n+WIFIC:20,0\r\n+WIFIC:30,0\r\n+WIFIC:31,0\r\n'
                                     b"+WIFIC:32,0\r\n+WIFIC:33,0\r\n+WIFIC:34,0\r\n"
                                     b'+WIFIC:11,3\r\n+WIFIC:11.0,"GEN"\r\n+WIFIC:11.1,"USA"\r\n+WIFIC:11.2,"EMEA"\r\n'
                                     b"+WIFIC:12,0x1FFF\r\nOK\r\n")
        assert e.cmd("AT+WSCN=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSCNDONE:\d+\r\n").endswith(b"\r+WSCNDONE:2\r\n")
        assert e.cmd('AT+WIFIC=10,"MARS"') == b'ERROR:0.4,"Invalid Parameter"\r\n'
        assert e.cmd('AT+WIFIC=10,"usa"') == b"OK\r\n"
        assert e.cmd("AT+WIFIC=10") == b'+WIFIC:10,"USA"\r\nOK\r\n'
        assert e.cmd("AT+WIFIC=12") == b"+WIFIC:12,0x07FF\r\nOK\r\n"
        assert e.cmd("AT+WIFIC=12,1") == b'ERROR:0.6,"Configuration Update Blocked"\r\n'
        assert e.cmd("AT+WSCN=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSCNDONE:\d+\r\n") == b'\r+WSCNIND:-50,0,6,"00:00:00:00:00:06","ch6"\r\n\r+WSCNDONE:1\r\n'
        e.oks('AT+WSTAC=1,"ch13"', "AT+WSTAC=2,0")
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        assert e.read_until(rb"\+WSTA\w+:.*?\r\n") == b"\r+WSTAERR:3\r\n"


def test_static_address():
    with Rnwf() as e:
        e.oks("AT+NETIFC=0,10,0", 'AT+NETIFC=0,40,"192.168.0.77/24"', 'AT+NETIFC=0,3,"sensor-7"')
        assert e.cmd("AT+NETIFC=0,3") == b'+NETIFC:3,"sensor-7"\r\nOK\r\n'
        e.oks('AT+WSTAC=1,"MyAP"', "AT+WSTAC=2,3", 'AT+WSTAC=3,"MyAPPSK-123"')
        assert e.cmd("AT+WSTA=1") == b"OK\r\n"
        e.aec(rb'\r\+WSTAAIP:1,"192\.168\.0\.77"\r\n')
        assert e.cmd("AT+NETIFC=0,40") == b'+NETIFC:40,"192.168.0.77/24"\r\nOK\r\n'
