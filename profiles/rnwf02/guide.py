"""Commands of the guide's AT chapter that the first rnwf02 version lacked: ATM (numeric mode, 9.1.5 /
9.4.1.2) and AT+TLSCSC (TLS cipher suite lists, 9.17.1.2).

Numeric mode: "each command, response and AEC has a two part ID: a module ID and a command/AEC ID";
commands may be written ``AT+MM.NN`` (hexadecimal module and command ids) and, in numeric mode,
responses and AECs are printed ``+MM.NN:``. The guide does not list the ids; they are the ones of
the same firmware family in Microchip's WINCS02 host driver (``microchip_wincs02_intf.h``:
``WINC_CMD_ID_*`` / ``WINC_AEC_ID_*``, ``<MODULE_ID> | <CMD_ID>``), which agree with the guide's module
numbers.
"""
from __future__ import annotations

from typing import Any

from atemu.grammar import Form, Int, Str
from atemu.profile import CmdError, command

from atemu.profiles.microchip_common.common import E_STATE

#: command name -> (module id, command id)
CMD_IDS: dict[str, tuple[int, int]] = {
    "+GMI": (2, 0), "+GMM": (2, 1), "+GMR": (2, 2), "+IPR": (2, 3), "+CFG": (3, 0), "+DHCPSC": (4, 0),
    "+DNSC": (5, 0), "+DNSRESOLV": (5, 1), "+FS": (7, 0),
    "+MQTTC": (8, 0), "+MQTTCONN": (8, 1), "+MQTTSUB": (8, 2), "+MQTTSUBLST": (8, 3), "+MQTTSUBRD": (8, 4),
    "+MQTTUNSUB": (8, 5), "+MQTTPUB": (8, 6), "+MQTTLWT": (8, 7), "+MQTTDISCONN": (8, 8), "+MQTTPROPTX": (8, 9),
    "+MQTTPROPRX": (8, 10), "+MQTTPROPTXS": (8, 11), "+NETIFC": (9, 0), "+PING": (11, 0), "+RST": (12, 0),
    "+SNTPC": (13, 0), "+SOCKO": (14, 0), "+SOCKBL": (14, 1), "+SOCKBR": (14, 2), "+SOCKBM": (14, 3),
    "+SOCKTLS": (14, 4), "+SOCKWR": (14, 5), "+SOCKWRTO": (14, 6), "+SOCKRD": (14, 7), "+SOCKRDBUF": (14, 8),
    "+SOCKCL": (14, 9), "+SOCKLST": (14, 10), "+SOCKC": (14, 11), "+TIME": (16, 0), "+TLSC": (17, 0),
    "+TLSCSC": (17, 1), "+WAPC": (18, 0), "+WAP": (18, 1), "+WSCNC": (19, 0), "+WSCN": (19, 1),
    "+WSTAC": (20, 0), "+WSTA": (20, 1), "+ASSOC": (22, 0), "+SI": (23, 0), "+WPROVC": (25, 0), "+WPROV": (25, 1),
    "+DI": (26, 0), "+WIFIC": (28, 0),
}
#: AEC name -> (module id, AEC id)
AEC_IDS: dict[str, tuple[int, int]] = {
    "+BOOT": (1, 0), "+DNSRESOLV": (5, 0), "+DNSERR": (5, 1), "+MQTTCONN": (8, 0), "+MQTTCONNACK": (8, 1),
    "+MQTTPUBACK": (8, 2), "+MQTTPUBCOMP": (8, 3), "+MQTTPUBERR": (8, 4), "+MQTTSUB": (8, 5), "+MQTTUNSUB": (8, 6),
    "+MQTTSUBRX": (8, 7), "+MQTTPROPRX": (8, 8), "+PING": (11, 0), "+PINGERR": (11, 1), "+SOCKIND": (14, 0),
    "+SOCKRXT": (14, 1), "+SOCKRXU": (14, 2), "+SOCKCL": (14, 3), "+SOCKTLS": (14, 4), "+SOCKERR": (14, 5),
    "+TIME": (16, 0), "+WAPAIP": (18, 0), "+WAPSC": (18, 1), "+WAPSD": (18, 2), "+WSCNIND": (19, 0),
    "+WSCNDONE": (19, 1), "+WSTAAIP": (20, 0), "+WSTALD": (20, 1), "+WSTAERR": (20, 2), "+WSTALU": (20, 3),
    "+ASSOC": (22, 0), "+SIMSTAT": (23, 0), "+SIMERR": (23, 1), "+SIWPKTS": (23, 2), "+SIHEAP": (23, 3),
    "+SIHERR": (23, 4), "+SISTACK": (23, 5), "+WPROVAT": (25, 0), "+WPROVDT": (25, 1),
}
NUMERIC_CMD = {f"+{m:02X}.{i:02X}": n for n, (m, i) in CMD_IDS.items()}


def numeric(ids: tuple[int, int]) -> str:
    return f"+{ids[0]:02X}.{ids[1]:02X}"


class NumericNames(dict):
    """The profile's command table, also answering ``+MM.NN`` (numeric mode input: "the DCE will
    still accept full command name strings as well as numeric format")."""

    def get(self, key, default=None):
        hit = super().get(key)
        if hit is None and isinstance(key, str) and key.startswith("+") and "." in key:
            name = NUMERIC_CMD.get(key.upper())
            return super().get(name, default) if name else default
        return hit if hit is not None else default


#: TLS 1.2 cipher suites the host's OpenSSL offers, by IANA number (what +TLSCSC lists and selects)
SUITES: dict[int, str] = {
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256", 0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
    0xC023: "ECDHE-ECDSA-AES128-SHA256", 0xC027: "ECDHE-RSA-AES128-SHA256",
    0x009E: "DHE-RSA-AES128-GCM-SHA256", 0x009F: "DHE-RSA-AES256-GCM-SHA384",
    0x009C: "AES128-GCM-SHA256", 0x009D: "AES256-GCM-SHA384",
}
#: TLS 1.3 suites (OpenSSL offers all three whenever TLS 1.3 is allowed: a list without any of them
#: limits the connection to TLS 1.2)
SUITES13: dict[int, str] = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
                            0x1303: "TLS_CHACHA20_POLY1305_SHA256"}
AVAILABLE = list(SUITES13) + list(SUITES)
MAX_SUITES = 32


class GuideCommands:
    """Mixin of :class:`Rnwf02` (before the family class)."""

    numeric_mode = False

    # ================================================================== INTERNAL: ATM
    @command("M", Form.WRITE, Int("N", 0, 1), family="general",
             doc="Command/response mode: 0 names (default), 1 numeric: responses and AECs as +MM.NN: (hexadecimal "
                 "module and command ids); AT+MM.NN commands are accepted in both modes")
    async def atm(self, ctx, n: int) -> None:
        self.numeric_mode = bool(n)

    def render_line(self, text: str) -> str:
        """A response or AEC line as the mode prints it (numeric mode: +MM.NN:...)."""
        if not self.numeric_mode or not text.startswith("+"):
            return text
        head, sep, rest = text.partition(":")
        cl = self.module.current_line
        ids = None
        if cl is not None and self.module._busy:
            name = NUMERIC_CMD.get(cl.name.upper(), cl.name)
            if head == name:
                ids = CMD_IDS.get(name)
        if ids is None:
            ids = AEC_IDS.get(head) or CMD_IDS.get(head)
        return numeric(ids) + sep + rest if ids else text

    # ================================================================== TLS: +TLSCSC
    @command("+TLSCSC", Form.EXEC, family="tls", doc="List the cipher suite lists: +TLSCSC:<CSL_IDX>,<CSL_IDX>")
    @command("+TLSCSC", Form.WRITE, Int("CSL_IDX", 1, 2), Str("ID", quoted=False, optional=True, max_len=5),
             Int("VAL", 0, 0xFFFF, optional=True), family="tls",
             doc="Cipher suite list CSL_IDX (the one TLSC id 7 CIPHER_SUITE selects): 1 CIPHER_SUITES (multiple value "
                 "1.0-1.31, IANA numbers; 0 clears an entry), 2 CIPHER_SUITES_AVAIL (read-only); reads +TLSCSC:<ID>,<VAL>")
    async def tlscsc(self, ctx, idx: int | None = None, pid: str | None = None, val: int | None = None) -> None:
        if idx is None:
            ctx.info("+TLSCSC:1,2")
            return
        lst = self.cipher_lists[idx]
        if pid is None:
            self._csc_show(ctx, "1", lst)
            self._csc_show(ctx, "2", AVAILABLE)
            return
        key = pid.strip()
        base, _, sub = key.partition(".")
        if base not in ("1", "2") or (sub and not (sub.isdigit() and int(sub) < MAX_SUITES)):
            raise CmdError("param", message="unknown parameter id")
        if val is None:
            values = lst if base == "1" else AVAILABLE
            if sub:
                n = int(sub)
                if n >= len(values):
                    raise CmdError("param", message="no such entry")
                ctx.info(f"+TLSCSC:{base}.{n},{self.num(values[n])}")
            else:
                self._csc_show(ctx, base, values)
            return
        if base == "2":
            raise self.fail(E_STATE, "read-only parameter")
        if not sub:
            raise CmdError("param", message="CIPHER_SUITES is set one entry at a time: 1.<n>")
        n = int(sub)
        if val == 0:
            if n < len(lst):
                del lst[n]
            return
        if val not in SUITES and val not in SUITES13:
            raise CmdError("param", message="cipher suite not available")
        if n < len(lst):
            lst[n] = val
        elif n == len(lst):
            lst.append(val)
        else:
            raise CmdError("param", message="entries are filled in order")

    def _csc_show(self, ctx, base: str, values: list[int]) -> None:
        for i, v in enumerate(values):
            ctx.info(f"+TLSCSC:{base}.{i},{self.num(v)}")

    def _cipher_options(self, conf: dict[int, Any]) -> dict:
        """client_context arguments for the cipher suite list a TLS configuration selects (TLSC id 7):
        the OpenSSL cipher string of its TLS 1.2 suites, and TLS 1.2 at most when it has no TLS 1.3 one."""
        import ssl
        chosen = self.cipher_lists.get(conf.get(7, 1)) or AVAILABLE      # an emptied list: the default
        names = [SUITES[s] for s in chosen if s in SUITES]
        if not names:
            return {"min_version": ssl.TLSVersion.TLSv1_3}
        opts: dict = {"ciphers": ":".join(names)}
        if not any(s in SUITES13 for s in chosen):
            opts["max_version"] = ssl.TLSVersion.TLSv1_2
        return opts

    def _guide_init(self) -> None:
        self.cipher_lists: dict[int, list[int]] = {1: list(AVAILABLE), 2: list(AVAILABLE)}
        self.numeric_mode = False

