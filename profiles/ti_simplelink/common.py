"""Shared pieces of the TI SimpleLink profile: dialect, error codes, data-field helpers."""
from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
from typing import Any

from atemu.grammar import Dialect, Int, Keyword, Str
from atemu.net.errors import NetError
from atemu.profile import CmdError

#: a raw (format 0) data field that stops arriving for this long is abandoned: ERROR:parse parameters
RAW_TIMEOUT = 2.0
DIALECT = Dialect(name="ti-simplelink", terminators=b"\r\n", echo_default=False, brackets=True,
                  test_forms=False, leading_crlf=False, max_line=8192, error_on_garbage=True,
                  raw_timeout=RAW_TIMEOUT)

# ---- error codes (SimpleLink style, negative) ------------------------------------------------
E_GENERAL = -1
E_INVALID = -2            # SL_RET_CODE_INVALID_INPUT
E_NOT_STARTED = -2018     # SL_RET_CODE_DEV_NOT_STARTED (our choice of number)
E_BADF = -9               # SL_ERROR_BSD_EBADF
E_AGAIN = -11             # SL_ERROR_BSD_EAGAIN (also "would block" / receive timeout)
E_NOMEM = -12
E_INVAL = -22             # SL_ERROR_BSD_EINVAL
E_NFILE = -23             # too many open sockets
E_DESTADDRREQ = -39
E_PROTOTYPE = -91
E_NOPROTOOPT = -92
E_PROTONOSUPPORT = -93
E_OPNOTSUPP = -95
E_AFNOSUPPORT = -97
E_ADDRINUSE = -98
E_NETUNREACH = -101
E_CONNRESET = -104
E_ISCONN = -106
E_NOTCONN = -107
E_TIMEDOUT = -110
E_CONNREFUSED = -111
E_ALREADY = -114
E_SEC_NOVERIFY = -453     # SL_ERROR_BSD_ESECSNOVERIFY
E_SEC_DATE = -461         # SL_ERROR_BSD_ESECDATEERROR
E_SEC_UNKNOWN_ROOT_CA = -468  # SL_ERROR_BSD_ESECUNKNOWNROOTCA
E_SEC_HANDSHAKE = -340    # generic TLS handshake failure (our choice)
E_DNS = -161              # SL_ERROR_NET_APP_DNS_QUERY_NO_RESPONSE (our choice)
E_FS_NOT_FOUND = -11300   # file system errors (our choice of numbers, SimpleLink-like range)
E_FS_EXISTS = -11301
E_FS_NAME = -11302
E_FS_FULL = -11303
E_FS_TOO_BIG = -11304
E_FS_BAD_MODE = -11305
E_FS_BAD_HANDLE = -11306
E_FS_OFFSET = -11307
E_FS_SIGNATURE = -11308
E_WLAN_MODE = -2060       # command not allowed in the current role (our choice)
E_WLAN_NOT_CONNECTED = -2071
E_WLAN_PROFILES_FULL = -2072
E_WLAN_BAD_PROFILE = -2073
E_NETAPP_NOT_RUNNING = -2180
E_NETAPP_HANDLE = -2181
E_MQTT = -3000            # MQTT client library errors
E_MQTT_BAD_INDEX = -3001
E_MQTT_STATE = -3002
E_HTTP = -3100            # HTTP client library errors
E_HTTP_BAD_INDEX = -3101
E_HTTP_STATE = -3102
E_HTTP_NO_HEADER = -3103
E_CRYPTO = -3200

NET_CODES = {
    "dns": E_DNS, "dns_timeout": E_DNS, "refused": E_CONNREFUSED, "timeout": E_TIMEDOUT,
    "unreachable": E_NETUNREACH, "reset": E_CONNRESET, "tls": E_SEC_HANDSHAKE,
    "tls_verify": E_SEC_UNKNOWN_ROOT_CA, "closed": E_NOTCONN, "addrinuse": E_ADDRINUSE,
    "invalid": E_INVAL, "perm": E_OPNOTSUPP, "other": E_GENERAL,
}


def fail(code: int, message: str = "") -> CmdError:
    return CmdError("failed", code=code, message=message or f"error {code}")


def net_fail(e: NetError) -> CmdError:
    code = NET_CODES.get(e.kind, E_GENERAL)
    if e.kind == "tls_verify" and "expired" in str(e.message).lower():
        code = E_SEC_DATE
    return CmdError("failed", code=code, message=str(e))


def format_error(err: CmdError) -> str:
    if err.kind == "unknown":
        return f"ERROR:command not exist,{E_GENERAL}"
    if err.kind == "param":
        if err.param_kind == "count":
            return f"ERROR:number of parameters,{E_INVALID}"
        return f"ERROR:parse parameters,{E_INVALID}"
    if err.kind in ("syntax", "garbage"):
        return f"ERROR:parse parameters,{E_INVALID}"
    if err.kind == "too_long":
        return f"ERROR:allocate,{E_NOMEM}"
    if err.kind == "count":
        return f"ERROR:number of parameters,{E_INVALID}"
    code = err.code if isinstance(err.code, int) else E_GENERAL
    return f"ERROR:process command,{code}"


def param_error(message: str = "") -> CmdError:
    return CmdError("param", message=message, param_kind="range")


def count_error(message: str = "") -> CmdError:
    return CmdError("param", message=message, param_kind="count")


# ---- parameter helpers ----------------------------------------------------------------------
def S(name: str, **kw: Any) -> Str:
    """A string whose quotes are optional (TI: quotes only needed for spaces/commas)."""
    kw.setdefault("quoted", None)
    return Str(name, **kw)


def OS(name: str, **kw: Any) -> Str:
    return S(name, optional=True, **kw)


FORMAT = Int("format", 0, 1, doc="0 binary (raw, length-delimited), 1 Base64")
FAMILY = Keyword("family", values={"INET": 4, "INET6": 6})
MAX_DATA = 16000
#: ``format,length`` of the commands that return data (Recv, RecvFrom, NetAPPRecv, HttpReadResBody)
RECV = (FORMAT, Int("length", 1, MAX_DATA, doc="most bytes to return"))


def lookup(table: dict, key: int, code: int, what: str):
    """The entry ``key`` of a handle table (sockets, MQTT/HTTP clients), or ERROR with ``code``."""
    item = table.get(key)
    if item is None:
        raise fail(code, f"no {what} {key}")
    return item


def free_index(table: dict, size: int, code: int, what: str) -> int:
    """The lowest index below ``size`` not used in ``table``, or ERROR with ``code``."""
    for i in range(size):
        if i not in table:
            return i
    raise fail(code, f"no free {what}")


def kw(values: list[str] | tuple[str, ...]) -> dict[str, str]:
    return {v: v.lower() for v in values}


def decode_data(fmt: int, data: Any, length: int | None, *, exact: bool = True) -> bytes:
    """The payload of a ``format,length,data`` triple (length counts decoded bytes)."""
    if data is None:
        data = b""
    if fmt == 0:
        raw = data if isinstance(data, (bytes, bytearray)) else str(data).encode("latin-1", "replace")
    else:
        text = data.decode("latin-1") if isinstance(data, (bytes, bytearray)) else str(data)
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise param_error("bad Base64 data") from None
    if length is not None and exact and len(raw) != length:
        raise param_error(f"data is {len(raw)} bytes, length says {length}")
    return bytes(raw)


def encode_data(fmt: int, raw: bytes) -> bytes:
    """``<format>,<length>,<data>`` as bytes for a response line."""
    if fmt == 0:
        return b"%d,%d," % (fmt, len(raw)) + raw
    return b"%d,%d," % (fmt, len(raw)) + base64.b64encode(raw)


def parse_ipv4(text: str) -> str:
    t = (text or "").strip().strip("[]").strip()
    try:
        return str(ipaddress.IPv4Address(t))
    except ValueError:
        raise param_error(f"bad IPv4 address {text!r}") from None


def parse_ip(text: str, family: int = 0) -> str:
    """IPv4 ``x.x.x.x``, IPv6 standard text or the manual's four 32-bit words ``x:x:x:x``."""
    t = (text or "").strip().strip("[]").strip()
    if family != 6:
        try:
            return str(ipaddress.IPv4Address(t))
        except ValueError:
            if family == 4:
                raise param_error(f"bad IPv4 address {text!r}") from None
    parts = t.split(":")
    if len(parts) == 4 and all(p for p in parts):
        try:
            words = [int(p, 0) if p.lower().startswith("0x") else int(p, 16) for p in parts]
            if all(0 <= w < 1 << 32 for w in words):
                v = 0
                for w in words:
                    v = (v << 32) | w
                return str(ipaddress.IPv6Address(v))
        except ValueError:
            pass
    try:
        return str(ipaddress.IPv6Address(t))
    except ValueError:
        raise param_error(f"bad IP address {text!r}") from None


def parse_mac(text: str) -> str:
    t = (text or "").strip().strip("[]").strip()
    parts = t.split(":")
    try:
        vals = [int(p, 16) for p in parts]
    except ValueError:
        raise param_error(f"bad MAC {text!r}") from None
    if len(vals) != 6 or not all(0 <= v < 256 for v in vals):
        raise param_error(f"bad MAC {text!r}")
    return ":".join(f"{v:02x}" for v in vals)


def parse_num(text: Any, lo: int | None = None, hi: int | None = None, name: str = "value") -> int:
    if text is None or str(text).strip() == "":
        raise count_error(f"missing {name}")
    t = str(text).strip()
    try:
        v = int(t, 16) if t.lower().startswith("0x") else int(t)
    except ValueError:
        raise param_error(f"{name} must be a number") from None
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise param_error(f"{name} out of range")
    return v


def pick(text: Any, choices: list[str] | tuple[str, ...], name: str = "value") -> str:
    if text is None or str(text).strip() == "":
        raise count_error(f"missing {name}")
    t = str(text).strip().lower()
    for c in choices:
        if c.lower() == t:
            return c.lower()
    raise param_error(f"{name} must be one of {choices}")


def flags_of(text: Any, names: list[str] | tuple[str, ...], name: str = "flags") -> list[str]:
    """``a|b|c`` or ``[a|b]`` (or empty) -> list of lower-case names, validated."""
    t = "" if text is None else str(text).strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    out: list[str] = []
    low = {n.lower() for n in names}
    for part in t.replace(" ", "|").split("|"):
        p = part.strip().lower()
        if not p:
            continue
        if p not in low:
            raise param_error(f"unknown {name} {part!r}")
        if p not in out:
            out.append(p)
    return out


#: commands whose number of values varies with an ID/option (TI's parameter count 0xFF); every other
#: command needs all its commas, empty optional fields included (manual §5.1, inventory T3)
VARIABLE_COUNT = {"+SET", "+SETSOCKOPT", "+WLANSET", "+NETAPPSET", "+NETCFGSET", "+NETUTILGET", "+NETUTILCMD",
                  "+MQTTSUBSCRIBE", "+MQTTUNSUBSCRIBE", "+MQTTSET"}


def check_count(ctx) -> None:
    """A fixed-count command written with fewer fields (``AT+FileClose=1`` for ``AT+FileClose=1,,``)."""
    cl, fs = ctx.line, ctx.form_spec
    if fs is not None and cl.args and cl.name.upper() not in VARIABLE_COUNT and len(cl.args) < len(fs.params):
        raise count_error(f"{len(fs.params)} parameters expected (write the commas of empty ones)")


def nwp(fn):
    """Handler needs the network processor started (AT+Start)."""

    @functools.wraps(fn)
    async def wrapper(self, ctx, *args):
        check_count(ctx)
        if not self.started:
            raise fail(E_NOT_STARTED, "the NWP is not started: send AT+Start")
        return await fn(self, ctx, *args)

    return wrapper
