"""TI SimpleLink WLAN against the world's access points: events, profiles, policies, scan, roles."""
from __future__ import annotations

import re

from test_ti_common import LAB, Ti

OTHER = {"ssid": "guest net", "security": "open", "channel": 11, "rssi": -70, "bssid": "02:aa:bb:cc:dd:01",
         "ip": "10.9.8.7", "gateway": "10.9.8.1", "dns": "10.9.8.1"}
HIDDEN = {"ssid": "hidden", "security": "wpa2", "password": "hidden-pass", "channel": 1, "rssi": -60,
          "bssid": "02:aa:bb:cc:dd:02", "hidden": True}


def w3():
    return {"wifi": {"access_points": [dict(LAB), dict(OTHER), dict(HIDDEN)]}}


def test_connect_event_order_and_disconnect():
    with Ti(world=w3()) as e:
        e.boot()
        out = e.ok('AT+WlanConnect="guest net",,OPEN,,,,')
        assert out == b""
        evs = e.read_until(rb"ipv4_acquired[^\r]*\r\n")
        assert evs == b"+eventwlan:connect,guest net,02:aa:bb:cc:dd:01\r\n+eventnetapp:ipv4_acquired,10.9.8.7,10.9.8.1,10.9.8.1\r\n"
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:ipacquired\r\n"
        assert e.ok("AT+NetCfgGet=IPV4_STA_ADDR") == b"+netcfgget:dhcp,10.9.8.7,255.255.255.0,10.9.8.1,10.9.8.1\r\n"
        # connecting elsewhere first drops the current link
        e.ok(f"AT+WlanConnect=lab,{LAB['bssid']},WPA_WPA2,{LAB['password']},,,")
        out = e.read_until(rb"ipv4_acquired[^\r]*\r\n")
        assert out.startswith(b"+eventwlan:disconnect,guest net,02:aa:bb:cc:dd:01,200\r\n+eventwlan:connect,lab,")
        assert e.ok("AT+WlanDisconnect") == b""
        assert e.read_until(rb"\r\n") == b"+eventwlan:disconnect,lab,02:11:22:33:44:55,200\r\n"
        assert e.err("AT+WlanDisconnect") == b"process command,-2071"
        assert e.ok("AT+WlanGet=CONNECTION,") == b"+wlanget:sta,disconnected,,,,\r\n"


def test_connect_failures():
    with Ti(world=w3()) as e:
        e.boot()
        e.ok("AT+WlanConnect=lab,,WPA_WPA2,wrong-password,,,")
        assert e.read_until(rb"\r\n") == b"+eventwlan:disconnect,lab,02:11:22:33:44:55,15\r\n"
        assert e.ok("AT+Get=Status,WLAN") == b"+get:sta_disconnected|connection_failed\r\n"
        e.ok("AT+WlanConnect=nowhere,,OPEN,,,,")
        assert e.read_until(rb"\r\n") == b"+eventwlan:disconnect,nowhere,00:00:00:00:00:00,201\r\n"
        e.ok("AT+WlanConnect=lab,,OPEN,,,,")
        assert e.read_until(rb"\r\n") == b"+eventwlan:disconnect,lab,02:11:22:33:44:55,23\r\n"
        assert e.err("AT+WlanConnect=lab,,WPA_WPA2,,,,") == b"number of parameters,-2"
        assert e.err("AT+WlanConnect=lab,,WPA_WPA2,short,,,") == b"parse parameters,-2"
        assert e.err("AT+WlanConnect=lab,,BOGUS,x,,,") == b"parse parameters,-2"
        assert e.err("AT+WlanConnect=lab,zz:11,OPEN,,,,") == b"parse parameters,-2"
        assert e.err("AT+WlanConnect=lab,,WPS_PBC,,,,") == b"process command,-95"
        # hidden SSID joins when named
        e.ok("AT+WlanConnect=hidden,,WPA_WPA2,hidden-pass,,,")
        assert e.read_until(rb"ipv4_acquired[^\r]*\r\n").startswith(b"+eventwlan:connect,hidden,02:aa:bb:cc:dd:02\r\n")


def test_ap_removed_by_control_plane_gives_disconnect_event():
    with Ti(world=w3()) as e:
        e.boot()
        e.join()
        e.sync(lambda: e.module.world.access_points.pop(0))
        assert e.read_until(rb"lost[^\r]*\r\n", 3) == b"+eventwlan:disconnect,lab,02:11:22:33:44:55,4\r\n+eventnetapp:ipv4_lost,0\r\n"
        assert e.ok("AT+Get=Status,WLAN") == b"+get:sta_disconnected\r\n"
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:ipv4_lost\r\n"
        assert e.ok("AT+Socket=INET,STREAM,TCP") == b"+socket:0\r\n"
        assert e.err("AT+Connect=0,INET,80,127.0.0.1") == b"process command,-101"   # no IP any more


def test_profiles_policy_autoconnect_and_persistence(tmp_path):
    with Ti(world=w3(), state_dir=tmp_path) as e:
        e.boot()
        e.ok("AT+WlanPolicySet=CONNECTION,,")                # no option: auto-connect off
        assert e.ok("AT+WlanPolicyGet=CONNECTION") == b"+wlanpolicyget:,0\r\n"
        assert e.ok(f"AT+WlanProfileAdd=lab,,WPA_WPA2,{LAB['password']},,,,7") == b"+wlanprofileadd:0\r\n"
        assert e.ok('AT+WlanProfileAdd="guest net",02:aa:bb:cc:dd:01,OPEN,,,,,3') == b"+wlanprofileadd:1\r\n"
        assert e.ok("AT+WlanProfileAdd=ent,,WPA_ENT,secret,user1,anon,PEAP0_MSCHAPv2,1") == b"+wlanprofileadd:2\r\n"
        assert e.ok("AT+WlanProfileGet=0") == b"+wlanprofileget:lab,,wpa_wpa2,,,,7\r\n"
        assert e.ok("AT+WlanProfileGet=2") == b"+wlanprofileget:ent,,wpa_ent,user1,anon,peap0_mschapv2,1\r\n"
        assert e.ok("AT+WlanProfileDel=2") == b""
        assert e.err("AT+WlanProfileGet=2") == b"process command,-2073"
        assert e.err("AT+WlanProfileDel=9") == b"parse parameters,-2"
        e.expect_nothing(0.4)                                   # policy off: nothing connects
        e.ok("AT+WlanPolicySet=CONNECTION,Auto|Fast,")
        assert e.ok("AT+WlanPolicyGet=CONNECTION") == b"+wlanpolicyget:auto|fast,0\r\n"
        out = e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
        assert out.startswith(b"+eventwlan:connect,lab,")        # highest priority on the air
    # a new power-up: profiles and policy survive, auto-connect after AT+Start
    with Ti(world=w3(), state_dir=tmp_path) as e:
        e.ok("AT+Start")
        out = e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
        assert out.startswith(b"+eventgeneral:init_complete,sta\r\n+eventwlan:connect,lab,")
        # AP gone: the module reconnects to the next stored profile on the air
        e.sync(lambda: e.module.world.access_points.pop(0))
        out = e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
        assert out.startswith(b"+eventwlan:disconnect,lab,02:11:22:33:44:55,4\r\n+eventnetapp:ipv4_lost,0\r\n"
                              b"+eventwlan:connect,guest net,")
        e.ok("AT+WlanProfileDel=0xFF")
        assert e.err("AT+WlanProfileGet=0") == b"process command,-2073"


def test_fast_policy_reconnects_to_the_last_ap_at_start():
    with Ti(world=w3()) as e:
        e.boot()
        e.ok("AT+WlanPolicySet=CONNECTION,Fast,")
        e.ok('AT+WlanConnect="guest net",,OPEN,,,,')
        e.read_until(rb"ipv4_acquired[^\r]*\r\n")
        e.ok("AT+Stop=0")
        e.ok("AT+Start")                                         # no profile: the last AP, at once
        assert e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5) == (
            b"+eventgeneral:init_complete,sta\r\n+eventwlan:connect,guest net,02:aa:bb:cc:dd:01\r\n"
            b"+eventnetapp:ipv4_acquired,10.9.8.7,10.9.8.1,10.9.8.1\r\n")
        e.ok("AT+WlanPolicySet=CONNECTION,,")                    # no option: no automatic connection
        e.ok("AT+Stop=0")
        e.ok("AT+Start")
        assert e.read_until(rb"\r\n") == b"+eventgeneral:init_complete,sta\r\n"
        e.expect_nothing(0.5)


def test_policies_scan_and_set_get():
    with Ti(world=w3()) as e:
        e.boot()
        e.ok("AT+WlanPolicySet=SCAN,Hidden_SSID,30")
        assert e.ok("AT+WlanPolicyGet=SCAN") == b"+wlanpolicyget:hidden_ssid,30\r\n"
        e.ok("AT+WlanPolicySet=PM,Long_Sleep,800")
        assert e.ok("AT+WlanPolicyGet=PM") == b"+wlanpolicyget:long_sleep,800\r\n"
        e.ok("AT+WlanPolicySet=P2P,GROUP_OWNER,ACTIVE")
        assert e.ok("AT+WlanPolicyGet=P2P") == b"+wlanpolicyget:group_owner,active\r\n"
        assert e.err("AT+WlanPolicySet=PM,Sleepy,") == b"parse parameters,-2"
        assert e.err("AT+WlanPolicySet=SCAN,Hidden_SSID,") == b"number of parameters,-2"
        out = e.ok("AT+WlanScan=0,30")
        assert out == (b"+wlanscan:lab,02:11:22:33:44:55,-40,6,wpa2,0,ccmp,psk;"
                       b",02:aa:bb:cc:dd:02,-60,1,wpa2,1,ccmp,psk;guest net,02:aa:bb:cc:dd:01,-70,11,open,0,none,none\r\n")
        assert e.ok("AT+WlanScan=2,1") == b"+wlanscan:guest net,02:aa:bb:cc:dd:01,-70,11,open,0,none,none\r\n"
        assert e.err("AT+WlanScan=0,31") == b"parse parameters,-2"
        e.ok("AT+WlanSet=GENERAL,COUNTRY_CODE,jp")
        assert e.ok("AT+WlanGet=GENERAL,COUNTRY_CODE") == b"+wlanget:JP\r\n"
        e.ok("AT+WlanSet=GENERAL,STA_TX_POWER,3")
        assert e.ok("AT+WlanGet=GENERAL,STA_TX_POWER") == b"+wlanget:3\r\n"
        e.ok("AT+WlanSet=GENERAL,SCAN_PARAMS,0x7FF,-80")
        assert e.ok("AT+WlanGet=GENERAL,SCAN_PARAMS") == b"+wlanget:2047,-80\r\n"
        # the scan follows the channel mask (bit 0 = channel 1) and the RSSI threshold
        assert e.ok("AT+WlanScan=0,30") == b"+wlanscan:lab,02:11:22:33:44:55,-40,6,wpa2,0,ccmp,psk;" \
                                           b",02:aa:bb:cc:dd:02,-60,1,wpa2,1,ccmp,psk;guest net,02:aa:bb:cc:dd:01,-70,11,open,0,none,none\r\n"
        e.ok("AT+WlanSet=GENERAL,SCAN_PARAMS,0x3FF,-80")          # channels 1-10: not guest net (11)
        assert e.ok("AT+WlanScan=0,30") == b"+wlanscan:lab,02:11:22:33:44:55,-40,6,wpa2,0,ccmp,psk;" \
                                           b",02:aa:bb:cc:dd:02,-60,1,wpa2,1,ccmp,psk\r\n"
        e.ok("AT+WlanSet=GENERAL,SCAN_PARAMS,0x1FFF,-50")         # only the strong one
        assert e.ok("AT+WlanScan=0,30") == b"+wlanscan:lab,02:11:22:33:44:55,-40,6,wpa2,0,ccmp,psk\r\n"
        e.ok("AT+WlanSet=GENERAL,SCAN_PARAMS,0x1,-95")            # channel 1 only
        assert e.ok("AT+WlanScan=0,30") == b"+wlanscan:,02:aa:bb:cc:dd:02,-60,1,wpa2,1,ccmp,psk\r\n"
        e.ok("AT+WlanSet=GENERAL,INFO_ELEMENT,0,AP,221,0x00,0x11,0x22,hello")
        e.ok("AT+WlanSet=GENERAL,SUSPEND_PROFILES,3")
        e.ok("AT+WlanSet=GENERAL,DISABLE_ENT_SERVER_AUTH,1")
        e.ok("AT+WlanSet=P2P,DEV_TYPE,1-0050F204-1")
        e.ok("AT+WlanSet=P2P,CHANNEL_N_REGS,11,81,6,81")
        assert e.ok("AT+WlanGet=P2P,CHANNEL_N_REGS") == b"+wlanget:11,81,6,81\r\n"
        assert e.err("AT+WlanSet=P2P,CHANNEL_N_REGS,2,81,6,81") == b"parse parameters,-2"
        e.ok("AT+WlanSet=RX_FILTER,STATE,[ff:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01]")
        e.ok("AT+WlanSet=RX_FILTER,REMOVE,01:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01")
        assert e.ok("AT+WlanGet=RX_FILTER,STATE") == b"+wlanget:fe:00:00:00:00:00:00:00:00:00:00:00:00:00:00:00\r\n"
        e.ok("AT+WlanSet=RX_FILTER,SYS_STATE,01:02:03:04")
        assert e.ok("AT+WlanGet=RX_FILTER,SYS_STATE") == b"+wlanget:01:02:03:04\r\n"
        e.ok("AT+WlanSet=RX_FILTER,STORE")
        assert e.err("AT+WlanSet=RX_FILTER,STATE,01:02") == b"parse parameters,-2"
        assert e.err("AT+WlanSet=GENERAL,STA_TX_POWER") == b"number of parameters,-2"


def test_ap_mode_after_restart_puts_own_ap_on_the_air():
    with Ti(world=w3()) as e:
        e.boot()
        e.ok("AT+WlanSet=AP,SSID,my-device")
        e.ok("AT+WlanSet=AP,CHANNEL,11")
        e.ok("AT+WlanSet=AP,SECURITY,WPA_WPA2")
        assert e.err("AT+WlanSet=AP,PASSWORD,short") == b"parse parameters,-2"
        e.ok("AT+WlanSet=AP,PASSWORD,device-pass")
        e.ok("AT+WlanSet=AP,HIDDEN_SSID,0")
        e.ok("AT+WlanSet=AP,MAX_STATIONS,2")
        e.ok("AT+WlanSet=AP,MAX_STA_AGING,120")
        e.ok("AT+WlanSet=AP,ACCESS_LIST_MODE,DENY_LIST")
        e.ok("AT+WlanSet=AP,ACCESS_LIST_ADD_MAC,02:00:00:00:00:09")
        e.ok("AT+WlanSet=AP,ACCESS_LIST_ADD_MAC,[02:00:00:00:00:0a]")
        e.ok("AT+WlanSet=AP,ACCESS_LIST_DEL_IDX,0")
        assert e.ok("AT+WlanGet=ACCESS_LIST,0") == b"+wlanget:02:00:00:00:00:0a\r\n"
        e.ok("AT+WlanSet=AP,ACCESS_LIST_DEL_MAC,02:00:00:00:00:0a")
        assert e.ok("AT+WlanGet=AP,ACCESS_LIST_NUM_ENTRIES") == b"+wlanget:0\r\n"
        assert e.err("AT+WlanSet=AP,CHANNEL,13") == b"parse parameters,-2"
        e.ok("AT+WlanSetMode=AP")
        assert e.ok("AT+WlanGet=CONNECTION,").startswith(b"+wlanget:sta,")   # applies on the next start
        e.ok("AT+Stop=0")
        e.boot()
        assert e.ok("AT+WlanGet=AP,SSID") == b"+wlanget:my-device\r\n"
        assert e.ok("AT+WlanGet=AP,MAX_STATIONS") == b"+wlanget:2\r\n"
        aps = e.sync(lambda: [(a.ssid, a.channel, a.security) for a in e.module.world.access_points])
        assert ("my-device", 11, "wpa-wpa2") in aps
        assert e.err("AT+WlanScan=0,5") == b"process command,-2060"
        assert e.err("AT+WlanConnect=lab,,OPEN,,,,") == b"process command,-2060"
        assert e.ok("AT+WlanGet=CONNECTION,").startswith(b"+wlanget:ap,disconnected,wpa_wpa2,my-device,")
        assert e.ok("AT+NetCfgGet=AP_STATIONS_CONNECTED") == b"+netcfgget:0\r\n"
        e.ok("AT+WlanSetMode=P2P")
        e.ok("AT+Stop=0")
        aps = e.sync(lambda: [a.ssid for a in e.module.world.access_points])
        assert "my-device" not in aps
        e.boot()
        assert e.ok("AT+WlanGet=CONNECTION,") == b"+wlanget:p2p,disconnected,,,,\r\n"


def test_no_dhcp_and_ip_collision():
    nodhcp = dict(OTHER, ssid="nodhcp", bssid="02:aa:bb:cc:dd:03", ip="0.0.0.0")
    with Ti(world={"wifi": {"access_points": [dict(LAB), nodhcp]}}) as e:
        e.boot()
        e.ok("AT+WlanConnect=nodhcp,,OPEN,,,,")
        out = e.read_until(rb"timeout[^\r]*\r\n", 5)
        assert out == b"+eventwlan:connect,nodhcp,02:aa:bb:cc:dd:03\r\n+eventnetapp:dhcp_ipv4_acquire_timeout,-1\r\n"
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:dhcp_acquire_timeout\r\n"
        e.ok("AT+NetCfgSet=IPV4_STA_ADDR,STATIC,192.168.7.1,255.255.255.0,192.168.7.1,192.168.7.1")
        e.ok(f"AT+WlanConnect=lab,,WPA_WPA2,{LAB['password']},,,")
        out = e.read_until(rb"ip_collision[^\r]*\r\n", 5)
        assert out.endswith(b"+eventwlan:connect,lab,02:11:22:33:44:55\r\n+eventnetapp:ip_collision,192.168.7.1,02:11:22:33:44:55,192.168.7.1\r\n")
        assert e.ok("AT+Get=Status,NETAPP") == b"+get:ip_collision\r\n"      # the timeout bit went with the new association
        e.ok("AT+NetCfgSet=IF,STATE,IPV6_STA_LOCAL")
        e.ok("AT+NetCfgSet=IPV4_STA_ADDR,DHCP,")
        e.ok(f"AT+WlanConnect=lab,,WPA_WPA2,{LAB['password']},,,")
        e.read_until(rb"ipv6_acquired[^\r]*\r\n", 5)
        e.sync(lambda: e.module.world.access_points.remove(e.module.world.access_points[0]))
        out = e.read_until(rb"ipv6_lost[^\r]*\r\n", 5)
        assert re.search(rb"\+eventnetapp:ipv4_lost,0\r\n\+eventnetapp:ipv6_lost,fe80::[0-9a-f:]+\r\n$", out)


def test_station_module_joins_our_access_point():
    from atemu.world import World
    shared = World.from_dict({"wifi": {"access_points": [dict(LAB)]}})
    with Ti(world=shared) as ap, Ti(world=shared) as sta:
        ap.boot()
        ap.ok("AT+WlanSet=AP,SSID,hub")
        ap.ok("AT+WlanSet=AP,SECURITY,WPA_WPA2")
        ap.ok("AT+WlanSet=AP,PASSWORD,hub-pass-1")
        ap.ok("AT+WlanSetMode=AP")
        ap.ok("AT+Stop=0")
        ap.boot()
        ap.ok("AT+NetAPPStart=DHCP_SERVER")
        sta.boot()
        sta_mac = sta.ok("AT+NetCfgGet=GET_MAC_ADDR")[len(b"+netcfgget:"):-2].decode()
        sta.ok("AT+NetAPPSet=DEVICE,URN,sensor-1")
        sta.ok("AT+WlanConnect=hub,,WPA_WPA2,hub-pass-1,,,")
        out = sta.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
        assert out.endswith(b"+eventnetapp:ipv4_acquired,10.123.45.2,10.123.45.1,10.123.45.1\r\n")
        assert ap.read_until(rb"ip_leased[^\r]*\r\n", 5) == \
            f"+eventwlan:sta_added,{sta_mac}\r\n+eventnetapp:ip_leased,10.123.45.2,4096,{sta_mac}\r\n".encode()
        assert ap.ok("AT+Get=Status,NETAPP") == b"+get:ipacquired|ip_leased\r\n"
        assert ap.ok("AT+Get=Status,NETAPP") == b"+get:ipacquired\r\n"          # reported once
        assert ap.ok("AT+NetCfgGet=AP_STATIONS_CONNECTED") == b"+netcfgget:1\r\n"
        assert ap.ok("AT+NetCfgGet=AP_STATIONS_INFO") == f"+netcfgget:10.123.45.2,{sta_mac},sensor-1\r\n".encode()
        assert ap.ok("AT+WlanGet=CONNECTION,").startswith(b"+wlanget:ap,ap_connected_stations,wpa_wpa2,hub,")
        # the AP drops the station
        ap.ok(f"AT+NetCfgSet=AP_STATION_DISCONNECT,,{sta_mac}")
        assert sta.read_until(rb"ipv4_lost[^\r]*\r\n", 5).startswith(b"+eventwlan:disconnect,hub,")
        assert ap.read_until(rb"ip_released[^\r]*\r\n", 5) == \
            f"+eventwlan:sta_removed,{sta_mac}\r\n+eventnetapp:ip_released,10.123.45.2,{sta_mac},8\r\n".encode()
        assert ap.ok("AT+Get=Status,NETAPP") == b"+get:ipacquired|ip_released\r\n"
        # deny list keeps it out
        ap.ok("AT+WlanSet=AP,ACCESS_LIST_MODE,DENY_LIST")
        ap.ok(f"AT+WlanSet=AP,ACCESS_LIST_ADD_MAC,{sta_mac}")
        sta.ok("AT+WlanConnect=hub,,WPA_WPA2,hub-pass-1,,,")
        assert sta.read_until(rb"disconnect[^\r]*\r\n", 5).endswith(b",23\r\n")


def test_deauth_fault_drops_link_and_auto_reconnects():
    with Ti(world=w3()) as e:
        e.boot()
        e.ok(f"AT+WlanProfileAdd=lab,,WPA_WPA2,{LAB['password']},,,,5")
        e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)                 # auto policy connects at once
        e.sync(lambda: e.module.faults.inject("deauth", ssid="lab", reason=7))
        out = e.read_until(rb"ipv4_acquired[^\r]*\r\n", 5)
        assert out == (b"+eventwlan:disconnect,lab,02:11:22:33:44:55,7\r\n+eventnetapp:ipv4_lost,0\r\n"
                       b"+eventwlan:connect,lab,02:11:22:33:44:55\r\n"
                       b"+eventnetapp:ipv4_acquired,192.168.7.20,192.168.7.1,192.168.7.1\r\n")
