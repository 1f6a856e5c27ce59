"""The RNWF status response codes (guide 9.3) and which one each failure reports.

A status is ``<module>.<code>``: module 0 is the command line itself, module 1 the system, the
others are the firmware modules (the guide's chapter headings: 2 INTERNAL ... 26 DI). The table
below is the guide's 9.3 as far as it is readable (modules 1, 5, 7, 8, 11, 14, 16, 18; the page is
cut inside module 20), completed with the same firmware family's table in Microchip's own WINCS02
host driver (``microchip_wincs02_intf.h`` / ``winc_tables.c``: modules 0, 3, 13, 17, 20, 22 and the
texts' capitalisation, which matches the hardware's ``ERROR:0.5,"Incorrect Number of Parameters"``).
"""
from __future__ import annotations

from atemu.profile import CmdError
from atemu.profiles.microchip_common.common import (E_UNKNOWN, E_PARAM, E_STATE, E_SOCKET, E_NORES, E_BUSY,
                                                    E_NOLINK, E_DATA, E_CERT, E_INTERNAL)

STATUS: dict[tuple[int, int], str] = {
    (0, 0): "OK", (0, 1): "General Error", (0, 2): "Invalid AT Command", (0, 3): "Unknown AT Command",
    (0, 4): "Invalid Parameter", (0, 5): "Incorrect Number of Parameters", (0, 6): "Configuration Update Blocked",
    (0, 7): "Configuration Access Failed", (0, 8): "Command Timed Out", (0, 9): "Host Interface Failed",
    (0, 10): "Access Denied",
    (1, 0): "Wi-Fi Request Failed", (1, 1): "STA Not Connected", (1, 2): "Network Error", (1, 3): "File System Error",
    (3, 0): "Configuration not present",
    (5, 0): "DNS Type Not Supported", (5, 1): "DNS Query Timeout", (5, 2): "DNS Error",
    (7, 0): "Unsupported File Transfer Protocol", (7, 1): "File Exists", (7, 2): "File Not Found",
    (7, 3): "Invalid File Type",
    (8, 0): "MQTT Error",
    (11, 0): "Ping Failed",
    (13, 0): "NTP Server Timeout", (13, 1): "NTP Protocol Error",
    (14, 0): "Socket ID Not Found", (14, 1): "Length Mismatch", (14, 2): "No Free Sockets",
    (14, 3): "Invalid Socket Protocol", (14, 4): "Socket Close Failed", (14, 5): "Socket Bind Failed",
    (14, 6): "Socket TLS Failed", (14, 7): "Socket Connect Failed", (14, 8): "Socket Send Failed",
    (14, 9): "Socket Set Option Failed", (14, 10): "Socket Destination Not Set", (14, 11): "Multicast Error",
    (14, 12): "Socket Not Ready",
    (16, 0): "Time Error",
    (17, 0): "CA Cert Missing", (17, 1): "CA Cert Validation", (17, 2): "CA Cert Date Validation",
    (17, 3): "Key Pair Incomplete", (17, 4): "Peer Domain Missing",
    (18, 0): "Soft AP Stop Not Permitted", (18, 1): "Soft AP Stop Failed", (18, 2): "Soft AP Start Not Permitted",
    (18, 3): "Soft AP Start Failed", (18, 4): "Unsupported Security Type",
    (20, 0): "STA Disconnect Not Permitted", (20, 1): "STA Disconnect Failed", (20, 2): "STA Connection Not Permitted",
    (20, 3): "STA Connection Failed",
    (22, 0): "Association Not Found",
}

# the socket module's failure by command, when the shared socket code reports a generic one
_SOCK_FAIL = {"+SOCKBL": 5, "+SOCKBM": 11, "+SOCKBR": 7, "+SOCKTLS": 6, "+SOCKWR": 8, "+SOCKWRTO": 8, "+SOCKC": 9,
              "+SOCKCL": 4}


def status(mod: int, code: int, message: str = "") -> CmdError:
    """A failure reporting exactly the status ``<mod>.<code>`` of the table."""
    return CmdError("failed", code=(mod, code), message=message or STATUS.get((mod, code), "error"))


def status_of(err: CmdError, cmd: str, mod: int) -> tuple[int, int]:
    """The guide's status for a failure of command ``cmd`` (module ``mod``)."""
    if isinstance(err.code, tuple):
        return err.code
    kind, code, msg = err.kind, err.code, err.message or ""
    if kind in ("syntax", "garbage", "too_long"):
        return 0, 2
    if kind == "unknown" or code == E_UNKNOWN:
        # a known command written in a form it does not have: its parameters are wrong
        return (0, 5) if err.param_kind == "form" else (0, 3)
    if kind == "param" or code == E_PARAM:
        return (0, 5) if err.param_kind == "count" else (0, 4)
    if kind == "internal" or code == E_INTERNAL:
        return 0, 1
    if kind == "busy" or code == E_BUSY:
        return (8, 0) if mod == 8 else (1, 0)
    if code == E_NOLINK:
        return (8, 0) if mod == 8 else (1, 1)
    if mod == 14:
        if code == E_SOCKET:
            if "no socket" in msg:
                return 14, 0
            if "protocol" in msg:
                return 14, 3
            if "meanwhile" in msg:
                return 14, 12
            return 14, _SOCK_FAIL.get(cmd, 12)
        if code == E_NORES:
            return 14, 2
        if code == E_DATA:
            return (0, 8) if "silent" in msg else (14, 1)
        if code == E_CERT:
            return 17, 0
        if code == E_STATE:
            if "destination" in msg:
                return 14, 10
            if "bound" in msg or "in use" in msg and cmd in ("+SOCKBL", "+SOCKBM"):
                return 14, 5
            if cmd == "+SOCKTLS":
                return 14, 6
            return 14, 12
    if code == E_STATE and ("read-only" in msg or mod in (3, 4, 5, 9, 13, 17, 19, 25, 26)):
        return 0, 6                        # a configuration that cannot change now
    if code == E_DATA:
        return (0, 8) if "silent" in msg else ((1, 3) if mod == 7 else (0, 1))
    if code == E_CERT:
        return (7, 2) if mod == 7 else (17, 0)
    if code in (E_STATE, E_NORES):
        return {8: (8, 0), 18: (18, 2), 20: (20, 2), 7: (1, 3), 16: (16, 0)}.get(mod, (0, 1))
    return 0, 1
