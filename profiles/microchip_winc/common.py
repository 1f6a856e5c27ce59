"""Constants, error codes and string helpers shared by the microchip-winc command families."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from atemu.grammar import Arg

log = logging.getLogger("atemu.microchip")

# ---- error codes (the manual documents none; see README) --------------------------------------
E_UNKNOWN = 1      # unknown command, bad line
E_PARAM = 2        # missing / wrong type / out of range parameter
E_STATE = 3        # not allowed in the current state
E_SOCKET = 4       # no such socket, or wrong socket type
E_NORES = 5        # no free socket / store full
E_BUSY = 6         # an operation of this kind is already pending
E_NOLINK = 7       # no WLAN link, or MQTT not connected
E_DATA = 8         # binary/inline data does not match <LENGTH>
E_CERT = 9         # certificate store error
E_INTERNAL = 10

# +SOCKERR status codes / +DNSERROR codes by NetError kind
NET_CODES = {"dns": 1, "dns_timeout": 2, "refused": 3, "timeout": 4, "unreachable": 5, "reset": 6,
             "tls": 7, "tls_verify": 8, "closed": 9, "addrinuse": 10, "invalid": 11, "perm": 12, "other": 99}

# +WSTAERR codes
WSTAERR_NO_AP, WSTAERR_AUTH, WSTAERR_SECURITY = 1, 2, 3

MAX_SOCKETS = 10
MAX_DATA = 1500
TLS_CONFS = 4
MAC = "F8:F0:05:E1:5C:01"
AP_IP = "192.168.1.1"

# security types: configuration (WSTAC) -> world security
STA_SEC = {0: "open", 1: "wep", 2: "wpa", 3: "wpa2", 4: "wpa2-wpa3", 5: "wpa3"}
AP_SEC = {0: "open", 1: "wep", 2: "wpa", 3: "wpa2"}
# world security -> reported SEC_TYPE (+WSCNIND, +WSTA)
REPORT_SEC = {"open": 0, "wep": 1, "wpa": 2, "wpa2": 3, "wpa-wpa2": 3, "wpa2-wpa3": 3, "wpa3": 5,
              "wpa2-enterprise": 4}


def fmt_str(value: bytes | str) -> str:
    """Quoted when printable ASCII without '"', else [HEX]."""
    b = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if all(0x20 <= c < 0x7F and c != 0x22 for c in b):
        return '"' + b.decode("ascii") + '"'
    return "[" + b.hex().upper() + "]"


def arg_bytes(arg: Arg) -> bytes:
    if arg.hexed:
        return arg.text.encode("latin-1", "surrogateescape")
    return arg.text.encode("utf-8", "surrogateescape")


def text_arg(ctx, index: int) -> str:
    """String argument ``index`` of the command line as the bytes written (``[hex]`` byte for byte,
    not the latin-1 text the grammar gives), decoded as UTF-8 (undecodable bytes kept as surrogates)."""
    return sfx(arg_bytes(ctx.line.args[index]))


def sfx(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


@dataclass
class _P:
    """One parameter of a configuration command."""
    name: str
    kind: str           # "int" | "str"
    default: Any
    lo: int = 0
    hi: int = 65535
    choices: tuple = ()
    max_len: int = 128
