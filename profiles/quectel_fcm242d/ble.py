"""Quectel FCM242D / FGM842D: Bluetooth LE commands (AT+QBLE*), mixin ``QuectelBle``.

There is no radio: the air is the world file. As a **central** the module scans
``world.ble_peers``, connects to one, discovers its characteristics, reads and writes their
values (a write is visible to later reads, and to ``world.ble_peers`` itself) and receives the
notifications the world schedules (``notify: [{characteristic, value, every, count}]``) once the
host enabled them with AT+QBLEGATTCNTFCFG.

As a **peripheral** the module exposes the GATT server the host built (QBLEGATTSSRV/
QBLEGATTSCHAR/QBLEGATTSSRVDONE) and advertises it. The remote central (a phone running nRF
Connect in the manual's E2) is played by tests or the control plane through plain methods,
called on the module's loop (``emu.sync(profile.ble_remote_connect)``):

* ``ble_remote_scan() -> dict | None``: what a scanner sees (name, address, adv_data hex, services)
  while the module advertises, else None.
* ``ble_remote_connect(address="5a:00:00:00:00:01", mtu=247) -> bool``: connect (only while
  advertising); the module reports +QBLESTAT: CONNECTED, +QBLEMTU and +QBLECONNPARAM.
* ``ble_remote_services() -> dict``: {service uuid: {char uuid: {"props": int, "value": hex}}}.
* ``ble_remote_write(uuid, data: bytes, with_response=True) -> bool``: write a characteristic;
  the module prints +QBLERECV: 0,"<uuid>",<len><CR><LF><data><CR><LF> (or raw bytes in
  transparent mode). Refused (False) if the characteristic lacks the write property.
* ``ble_remote_read(uuid) -> bytes``: read a characteristic's current value.
* ``ble_remote_subscribe(uuid, enable=True) -> bool``: write the CCCD (notifications on/off).
* ``ble_remote_notifications() -> list[(uuid, bytes)]``: notifications received so far (popped).
* ``ble_remote_disconnect() -> bool``: drop the link (+QBLESTAT: DISCONNECTED; advertising
  restarts when QBLEINIT's <auto_adv> is 1).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from atemu.grammar import EscapeSequence, Form, Int, Str, TransparentData, UrcSpec
from atemu.module import Ctx
from atemu.profile import CmdError, Profile, command

log = logging.getLogger("atemu.quectel.ble")

DEFAULT_ADDR = "c8e4a1b1c1f9"
MAX_SERVICES = 3
MAX_CHARS = 3
PROP_WRITE, PROP_WRITE_NR, PROP_NOTIFY = 1, 2, 4

#: parameters shared by the GATT commands: <conn_idx> (always 0), <UUID>, and [<hex_length>,]<data>
_CONN = Int("conn_idx", 0, 0)
_UUID = Str("UUID", quoted=None, min_len=4, max_len=32)
_DATA = (Str("hex_length_or_data", quoted=None, max_len=1024), Str("data", quoted=None, max_len=1024, optional=True))

DEVIATIONS_BLE = [
    "B1 (item 1/§0.1): 0-based enums: QBLEINIT <role> 0 none, 1 central, 2 peripheral, 3 peripheral for Wi-Fi "
    "provisioning; <auto_adv>, QBLEADVSTART? <adv_state>, QBLESCAN <scan> 0-3, <address_type>/<addr_type> 0 public "
    "1 random, QBLEGATTCNTFCFG <enable>, QBLETRANMODE <state> all 0-based. QBLESCAN? <scan_state> 1 = scanning.",
    "B2 (item 12): +QBLEADDR: \"c8e4a1b1c1f9\" (quoted, lower case, as in E2; world option "
    "quectel.ble_address overrides). Scan results print peer addresses as 12 upper-case hex digits in "
    "quotes (\"58D391010203\" style); QBLECONN accepts either case, with or without colons.",
    "B3 (item 13): QBLECONN <timeout> default 15000 ms; OK comes at once, the result is URCs: success "
    "+QBLESTAT: CONNECTED, one +QBLEINFO: \"<char uuid>\" per peer characteristic, +QBLEINFO: DOWN, +QBLEMTU: "
    "<mtu>, +QBLECONNPARAM: 0,<interval>,<timeout>,<latency>; an unknown or non-connectable peer gives "
    "+QBLESTAT: DISCONNECTED after <timeout>.",
    "B4 (item 14): central MTU = QBLECFGMTU (default 64); a peripheral's MTU is what the remote central asks "
    "(default 23). Notify/write/transparent packets must be <= MTU-3 bytes (else ERROR / split in transparent "
    "mode).",
    "B5 (item 15): the discovery end marker is printed literally as +QBLEINFO: DOWN.",
    "B6 (item 16): QBLEGATTCRD prints OK, then the value as raw bytes on its own line (<CR><LF><data><CR><LF>).",
    "B7 (item 17): <hex_length> counts bytes: with it, <data> must be exactly 2*<hex_length> hex digits; without "
    "it <data> is sent as typed (text).",
    "B8 (items 19, 4 of U4): +QBLESTAT URC and AT+QBLESTAT answer are unquoted: +QBLESTAT: CONNECTED / "
    "DISCONNECTED / NOINIT / INIT / ADVERTISING. +QBLENAME: \"<name>\" is quoted.",
    "B9: QBLESCAN=1 reports +QBLESCAN: \"<name>\",<address_type>,\"<addr>\"; 2/3 add <RSSI>,<adv_data> (unquoted "
    "hex of flags, complete local name and 16-bit service UUIDs built from the world peer). Each peer is reported "
    "once per scan; a scan with <timeout> stops by itself, 1 without <timeout> runs until QBLESCAN=0.",
    "B10: BLE transparent mode (QBLETRANMODE) ends with +++ (guard time: world option "
    "quectel.escape_guard, default 1 s) answering OK, or when the link drops (then NO CARRIER). A peripheral "
    "that entered with <state>=1 and lost its link re-enters by itself when the next central connects: after "
    "+QBLESTAT: CONNECTED/+QBLEMTU/+QBLECONNPARAM it prints CONNECT and is transparent again; +++ cancels that.",
    "B11: QBLEINIT may be issued once per boot (role != 0 answers ERROR) except QBLEINIT=0, which de-initialises "
    "(drops links, stops advertising and scans, forgets the GATT server).",
    "B12: GATT server limits: 3 services, 3 characteristics per service, services only before QBLEGATTSSRVDONE; "
    "<att_cfg> is hex (e.g. 0E), bit 0 write, bit 1 write-no-response, bit 2 notify; default 06.",
    "B13: a notification (QBLEGATTSNTFY) reaches the remote central only after it enabled notifications "
    "(ble_remote_subscribe); the command still answers OK when it did not.",
    "B14: advertising commands (QBLEADVPARAM/ADVDATA/ADVSTART/ADVSTOP, GATTS*) need role 2/3, central commands "
    "(QBLESCAN/SCANPARAM/CONN/CONNPARAM/CFGMTU/GATTC*) need role 1; otherwise ERROR. A peripheral's link drop "
    "ends its transparent mode with NO CARRIER.",
    "B15: world changes while connected: set_ble_value is visible to the next read; a notification added to a "
    "connected peer (control plane ble_notify) is sent once at once and then removed from the peer's list.",
]

URCS_BLE = [
    UrcSpec("+QBLESTAT", "+QBLESTAT: <event>", "BLE link: CONNECTED / DISCONNECTED", "ble"),
    UrcSpec("+QBLEMTU", "+QBLEMTU: <MTU_value>", "MTU negotiated", "ble"),
    UrcSpec("+QBLERECV", "+QBLERECV: <conn_idx>,<UUID>,<length><CR><LF><data><CR><LF>",
            "data written by the peer (peripheral) or notified (central)", "ble"),
    UrcSpec("+QBLEINFO", "+QBLEINFO: <char>", "central: a discovered characteristic UUID; DOWN ends the list", "ble"),
    UrcSpec("+QBLECONNPARAM", "+QBLECONNPARAM: <conn_idx>,<con_interval>,<timeout>,<latency>",
            "connection parameters updated", "ble"),
    UrcSpec("+QBLESCAN", "+QBLESCAN: <name>,<address_type>,<BLE_addr>[,<RSSI>,<adv_data>]", "scan result", "ble"),
]


def _norm_addr(a: str) -> str:
    return a.replace(":", "").replace("-", "").lower()


def _norm_uuid(u: str) -> str:
    return u.strip().lower()


def _valid_uuid(u: str) -> bool:
    return len(u) in (4, 32) and all(c in "0123456789abcdefABCDEF" for c in u)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@dataclass
class _Char:
    uuid: str
    props: int
    value: bytes = b""


@dataclass
class _Service:
    uuid: str
    chars: list = field(default_factory=list)


@dataclass
class _Link:
    role: str                   # "central" (we connected to a world peer) / "peripheral" (remote connected to us)
    address: str
    peer: object | None = None  # BlePeer when central
    mtu: int = 23
    mtu_set: bool = False
    notify_on: set = field(default_factory=set)      # central: uuids with notifications enabled
    remote_sub: set = field(default_factory=set)     # peripheral: uuids the remote subscribed to
    inbox: list = field(default_factory=list)        # peripheral: notifications the remote got
    tasks: list = field(default_factory=list)


class QuectelBle(Profile):
    """Every AT+QBLE* command, plus the remote-central methods ``ble_remote_*`` (mixin)."""

    def __init__(self, module):
        super().__init__(module)
        opts = getattr(module.world, "options", {}) or {}
        self.ble_addr = _norm_addr(str(opts.get("quectel.ble_address", DEFAULT_ADDR)))
        self._ble_guard = float(opts.get("quectel.escape_guard", 1.0))
        self.ble_role = 0
        self.ble_auto_adv = 1
        self.ble_name = "FCM242D"
        self.ble_adv_param = (160, 160)
        self.ble_adv_data = b""
        self.ble_services: list[_Service] = []
        self.ble_srv_done = False
        self.ble_advertising = False
        self.ble_state = "NOINIT"
        self.ble_link: _Link | None = None
        self.ble_scan_task: asyncio.Task | None = None
        self.ble_scan_param = (100, 30)
        self.ble_conn_param = (20, 500, 0)
        self.ble_cfg_mtu = 64
        self.ble_tran: dict | None = None        # active transparent session: {"uuid", "queue"}
        self.ble_tran_auto = 0
        self._ble_tran_resume: str | None = None   # peripheral: re-enter on the next connection (<state> 1)
        self._ble_conn_task: asyncio.Task | None = None
        hooks = getattr(self, "_teardown_hooks", None)
        if hooks is None:
            hooks = self._teardown_hooks = []
        hooks.append(self._ble_teardown)

    def ble_snapshot(self) -> dict:
        """Live BLE state for ``snapshot()`` (JSON-able)."""
        link = self.ble_link
        return {"role": self.ble_role, "state": self.ble_state, "name": self.ble_name, "address": self.ble_addr,
                "advertising": self.ble_advertising, "scanning": self.ble_scan_task is not None,
                "services": self.ble_remote_services(),
                "link": None if link is None else {"role": link.role, "peer": link.address, "mtu": link.mtu,
                                                   "notify": sorted(link.notify_on | link.remote_sub)},
                "transparent": None if self.ble_tran is None else self.ble_tran["uuid"]}

    # ---- helpers ----------------------------------------------------------------------------------
    async def _ble_teardown(self) -> None:
        self._ble_stop_scan()
        if self._ble_conn_task is not None:
            self._ble_conn_task.cancel()
        self._ble_drop_link(report=False)

    def _ble_need_role(self, *roles: int) -> None:
        if self.ble_role not in roles:
            raise CmdError("failed", message=f"BLE role is {self.ble_role}, needs {roles}")

    def _ble_chars(self):
        for s in self.ble_services:
            for c in s.chars:
                yield s, c

    def _ble_find_local(self, uuid: str) -> _Char | None:
        u = _norm_uuid(uuid)
        for _, c in self._ble_chars():
            if c.uuid == u:
                return c
        return None

    def _ble_peer_char(self, uuid: str):
        """(the peer service's characteristic dict, the key of ``uuid`` in it), or None."""
        link = self.ble_link
        if link is None or link.peer is None:
            return None
        u = _norm_uuid(uuid)
        for svc, chars in link.peer.services.items():
            for key in chars:
                if key.lower() == u:
                    return chars, key
        return None

    def _ble_data(self, a: str, b) -> bytes:
        """(<hex_length>,<data>) or (<data>) -> bytes."""
        if b is None:
            return a.encode("utf-8", "surrogateescape")
        try:
            n = int(a)
        except ValueError:
            raise CmdError("param", message="<hex_length> must be a number") from None
        if n < 1 or len(b) != 2 * n:
            raise CmdError("param", message="<data> must have 2*<hex_length> hex digits")
        try:
            return bytes.fromhex(b)
        except ValueError:
            raise CmdError("param", message="<data> is not hex") from None

    def _ble_set_state(self, state: str, urc: bool = False) -> None:
        self.ble_state = state
        if urc:
            self.module.urc(f"+QBLESTAT: {state}")

    def _ble_stop_scan(self) -> None:
        t = self.ble_scan_task
        self.ble_scan_task = None
        if t is not None and not t.done() and t is not asyncio.current_task():
            t.cancel()

    def _ble_drop_link(self, report: bool = True) -> None:
        link = self.ble_link
        if link is None:
            return
        self.ble_link = None
        for t in link.tasks:
            t.cancel()
        if self.ble_tran is not None:
            self.ble_tran["lost"].set()
        if report:
            self._ble_set_state("DISCONNECTED", urc=True)
        else:
            self.ble_state = "DISCONNECTED"
        if link.role == "peripheral" and self.ble_auto_adv and self.ble_role in (2, 3):
            self.ble_advertising = True
            self.ble_state = "ADVERTISING"

    def _ble_connparam_line(self) -> str:
        i, t, l_ = self.ble_conn_param
        return f"+QBLECONNPARAM: 0,{i},{t},{l_}"

    def _ble_link_up(self, link: _Link, peer_chars: list[str] | None = None) -> None:
        """A link is up (B3): CONNECTED, the central's discovery (+QBLEINFO ... DOWN), MTU, parameters."""
        self.ble_link = link
        self._ble_set_state("CONNECTED", urc=True)
        if peer_chars is not None:
            for cu in peer_chars:
                self.module.urc(f'+QBLEINFO: "{cu}"')
            self.module.urc("+QBLEINFO: DOWN")
        self.module.urc(f"+QBLEMTU: {link.mtu}")
        self.module.urc(self._ble_connparam_line())

    def _ble_deliver(self, uuid: str, data: bytes) -> None:
        """Data for the host: raw in transparent mode on that characteristic, else +QBLERECV."""
        tran = self.ble_tran
        if tran is not None and tran["uuid"] == uuid:
            self.module.write(data)
            return
        self.module.urc(f'+QBLERECV: 0,"{uuid}",{len(data)}', data, trailer=b"\r\n")

    def _ble_adv_bytes(self) -> bytes:
        if self.ble_adv_data:
            return self.ble_adv_data
        name = self.ble_name.encode()[:26]
        return bytes([2, 1, 6, len(name) + 1, 9]) + name

    # ---- init / identity --------------------------------------------------------------------------
    @command("+QBLEINIT", Form.WRITE, Int("role", 0, 3), Int("auto_adv", 0, 1, optional=True), family="ble",
             doc="Initialise BLE: 1 central, 2 peripheral, 3 peripheral for Wi-Fi provisioning",
             test="+QBLEINIT: (0-3),(0,1)")
    async def qbleinit(self, ctx: Ctx, role: int, auto_adv):
        if role == 0:
            self._ble_stop_scan()
            self._ble_drop_link(report=self.ble_link is not None)
            self.ble_role, self.ble_services, self.ble_srv_done = 0, [], False
            self.ble_advertising = False
            self.ble_state = "NOINIT"
            return
        if self.ble_role != 0:
            raise CmdError("failed", message="BLE is already initialised")
        if auto_adv is not None and role == 1:
            raise CmdError("param", message="<auto_adv> is for the peripheral role")
        self.ble_role = role
        self.ble_auto_adv = 1 if auto_adv is None else auto_adv
        self.ble_state = "INIT"

    @command("+QBLEINIT", Form.READ, family="ble")
    async def qbleinit_read(self, ctx: Ctx):
        ctx.info(f"+QBLEINIT: {self.ble_role}")

    @command("+QBLEADDR", Form.READ, family="ble", doc="Query the BLE address", test="")
    async def qbleaddr(self, ctx: Ctx):
        ctx.info(f'+QBLEADDR: "{self.ble_addr}"')

    @command("+QBLENAME", Form.WRITE, Str("BLE_name", quoted=None, min_len=1, max_len=25), family="ble",
             doc="Set the BLE device name", test="+QBLENAME: <BLE_name>")
    async def qblename(self, ctx: Ctx, name: str):
        self.ble_name = name

    @command("+QBLENAME", Form.READ, family="ble")
    async def qblename_read(self, ctx: Ctx):
        ctx.info(f'+QBLENAME: "{self.ble_name}"')

    # ---- advertising --------------------------------------------------------------------------------
    @command("+QBLEADVPARAM", Form.WRITE, Int("adv_int_min", 32, 16384), Int("adv_int_max", 32, 16384),
             family="ble", doc="Set the advertising interval (0.625 ms units)", test="+QBLEADVPARAM: (32-16384),(32-16384)")
    async def qbleadvparam(self, ctx: Ctx, lo: int, hi: int):
        self._ble_need_role(2, 3)
        if lo > hi:
            raise CmdError("param", message="<adv_int_min> must not exceed <adv_int_max>")
        self.ble_adv_param = (lo, hi)

    @command("+QBLEADVPARAM", Form.READ, family="ble")
    async def qbleadvparam_read(self, ctx: Ctx):
        ctx.info(f"+QBLEADVPARAM: {self.ble_adv_param[0]},{self.ble_adv_param[1]}")

    @command("+QBLEADVDATA", Form.WRITE, Str("adv_data", quoted=None, min_len=2, max_len=62), family="ble",
             doc="Set raw advertising data (hex AD structures)", test="+QBLEADVDATA: <adv_data>")
    async def qbleadvdata(self, ctx: Ctx, hexdata: str):
        self._ble_need_role(2, 3)
        try:
            data = bytes.fromhex(hexdata)
        except ValueError:
            raise CmdError("param", message="<adv_data> must be hex") from None
        i = 0
        while i < len(data):
            n = data[i]
            if n == 0 or n > 0x1E or i + 1 + n > len(data):
                raise CmdError("param", message="malformed AD structure")
            i += 1 + n
        self.ble_adv_data = data

    @command("+QBLEADVSTART", Form.EXEC, family="ble", doc="Start advertising", test="")
    async def qbleadvstart(self, ctx: Ctx):
        self._ble_need_role(2, 3)
        if not self.ble_srv_done or self.ble_link is not None:
            raise CmdError("failed", message="GATT service not complete, or connected")
        self.ble_advertising = True
        self.ble_state = "ADVERTISING"

    @command("+QBLEADVSTART", Form.READ, family="ble")
    async def qbleadvstart_read(self, ctx: Ctx):
        ctx.info(f"+QBLEADVSTART: {1 if self.ble_advertising else 0}")

    @command("+QBLEADVSTOP", Form.EXEC, family="ble", doc="Stop advertising", test="")
    async def qbleadvstop(self, ctx: Ctx):
        self._ble_need_role(2, 3)
        self.ble_advertising = False
        if self.ble_state == "ADVERTISING":
            self.ble_state = "INIT"

    # ---- GATT server ----------------------------------------------------------------------------------
    @command("+QBLEGATTSSRV", Form.WRITE, Str("srv_UUID", quoted=None, min_len=4, max_len=32), family="ble",
             doc="Create a GATT service", test="+QBLEGATTSSRV: <srv_UUID>")
    async def qblegattssrv(self, ctx: Ctx, u: str):
        self._ble_need_role(2, 3)
        if not _valid_uuid(u) or self.ble_srv_done or len(self.ble_services) >= MAX_SERVICES:
            raise CmdError("failed", message="bad UUID, service complete, or 3 services already")
        if any(s.uuid == _norm_uuid(u) for s in self.ble_services):
            raise CmdError("failed", message="service exists")
        self.ble_services.append(_Service(_norm_uuid(u)))

    @command("+QBLEGATTSCHAR", Form.WRITE, Str("char_UUID", quoted=None, min_len=4, max_len=32),
             Str("att_cfg", quoted=None, min_len=1, max_len=2, optional=True), family="ble",
             doc="Add a characteristic to the last service", test="+QBLEGATTSCHAR: <char_UUID>,(0-FF)")
    async def qblegattschar(self, ctx: Ctx, u: str, cfg):
        self._ble_need_role(2, 3)
        try:
            props = 0x06 if cfg is None else int(cfg, 16)
        except ValueError:
            raise CmdError("param", message="<att_cfg> is hex 0-FF") from None
        if not _valid_uuid(u) or not self.ble_services or self.ble_srv_done:
            raise CmdError("failed", message="bad UUID, no service, or service complete")
        svc = self.ble_services[-1]
        if len(svc.chars) >= MAX_CHARS or self._ble_find_local(u) is not None:
            raise CmdError("failed", message="3 characteristics already, or duplicate")
        svc.chars.append(_Char(_norm_uuid(u), props))

    @command("+QBLEGATTSSRVDONE", Form.EXEC, family="ble", doc="Finish adding the GATT service", test="")
    async def qblegattssrvdone(self, ctx: Ctx):
        self._ble_need_role(2, 3)
        if not self.ble_services or self.ble_srv_done:
            raise CmdError("failed", message="no service, or already done")
        self.ble_srv_done = True

    @command("+QBLEGATTSNTFY", Form.WRITE, _CONN, _UUID, *_DATA, family="ble", doc="Send a notification (peripheral)", test="+QBLEGATTSNTFY: 0,<UUID>,<hex_length>,<data>")
    async def qblegattsntfy(self, ctx: Ctx, conn: int, u: str, a: str, b):
        self._ble_need_role(2, 3)
        data = self._ble_data(a, b)
        link = self.ble_link
        ch = self._ble_find_local(u)
        if link is None or link.role != "peripheral" or ch is None or not ch.props & PROP_NOTIFY:
            raise CmdError("failed", message="not connected, unknown characteristic, or no notify property")
        if not data or len(data) > link.mtu - 3:
            raise CmdError("failed", message=f"notification must be 1..{link.mtu - 3} bytes")
        ch.value = data
        if ch.uuid in link.remote_sub:
            link.inbox.append((ch.uuid, data))

    # ---- scanning (central) ----------------------------------------------------------------------------
    @command("+QBLESCAN", Form.WRITE, Int("scan", 0, 3), Int("timeout", 100, 10000, optional=True), family="ble",
             doc="Start/stop scanning (central)", test="+QBLESCAN: (0-3),(100-10000)")
    async def qblescan(self, ctx: Ctx, scan: int, timeout):
        self._ble_need_role(1)
        if scan == 0:
            self._ble_stop_scan()
            return
        if scan >= 2 and timeout is None:
            raise CmdError("param", message="scan modes 2 and 3 need <timeout>")
        if self.ble_link is not None:
            raise CmdError("failed", message="connected")
        self._ble_stop_scan()
        ctx.ok()
        self.ble_scan_task = self.module.spawn(self._ble_scan(scan, timeout))

    async def _ble_scan(self, mode: int, timeout) -> None:
        t0 = time.monotonic()
        try:
            seen = set()
            window = self.ble_scan_param[0] * 0.000625
            while True:
                for p in list(self.module.world.ble_peers):
                    a = _norm_addr(p.address)
                    if a in seen or (mode == 3 and not p.connectable):
                        continue
                    seen.add(a)
                    line = f'+QBLESCAN: "{p.name}",0,"{a.upper()}"'
                    if mode >= 2:
                        line += f",{p.rssi},{self._ble_peer_adv(p).hex().upper()}"
                    self.module.urc(line)
                await asyncio.sleep(window)
                if timeout is not None and time.monotonic() - t0 >= timeout / 1000:
                    return
        finally:
            if self.ble_scan_task is asyncio.current_task():
                self.ble_scan_task = None

    @staticmethod
    def _ble_peer_adv(p) -> bytes:
        out = bytes([2, 1, 6])
        if p.name:
            n = p.name.encode()[:20]
            out += bytes([len(n) + 1, 9]) + n
        short = [s for s in p.services if len(s) == 4]
        if short:
            body = b"".join(bytes.fromhex(s)[::-1] for s in short[:2])
            out += bytes([len(body) + 1, 3]) + body
        return out

    @command("+QBLESCAN", Form.READ, family="ble")
    async def qblescan_read(self, ctx: Ctx):
        ctx.info(f"+QBLESCAN: {1 if self.ble_scan_task is not None else 0}")

    @command("+QBLESCANPARAM", Form.WRITE, Int("scan_interval", 18, 4096), Int("scan_window", 17, 4096),
             family="ble", doc="Set scan interval and window", test="+QBLESCANPARAM: (18-4096),(17-4096)")
    async def qblescanparam(self, ctx: Ctx, interval: int, window: int):
        self._ble_need_role(1)
        if window > interval:
            raise CmdError("param", message="<scan_window> must not exceed <scan_interval>")
        self.ble_scan_param = (interval, window)

    @command("+QBLESCANPARAM", Form.READ, family="ble")
    async def qblescanparam_read(self, ctx: Ctx):
        ctx.info(f"+QBLESCANPARAM: {self.ble_scan_param[0]},{self.ble_scan_param[1]}")

    # ---- connection (central) -------------------------------------------------------------------------
    @command("+QBLECONN", Form.WRITE, Int("addr_type", 0, 1), Str("peer_addr", quoted=None, min_len=12, max_len=17),
             Int("timeout", 1000, 60000, optional=True, default=15000), family="ble",
             doc="Connect to a peripheral (central)", test="+QBLECONN: (0,1),<peer_addr>,(1000-60000)")
    async def qbleconn(self, ctx: Ctx, addr_type: int, addr: str, timeout: int):
        self._ble_need_role(1)
        a = _norm_addr(addr)
        if len(a) != 12 or any(c not in "0123456789abcdef" for c in a):
            raise CmdError("param", message="bad address")
        if self.ble_link is not None or (self._ble_conn_task is not None and not self._ble_conn_task.done()):
            raise CmdError("failed", message="already connected or connecting")
        self._ble_stop_scan()
        ctx.ok()
        self._ble_conn_task = self.module.spawn(self._ble_connect(a, timeout))

    async def _ble_connect(self, a: str, timeout: int) -> None:
        peer = next((p for p in self.module.world.ble_peers if _norm_addr(p.address) == a), None)
        if peer is None or not peer.connectable:
            await asyncio.sleep(timeout / 1000)
            self._ble_set_state("DISCONNECTED", urc=True)
            return
        await asyncio.sleep(0.02)
        link = _Link("central", a, peer=peer, mtu=self.ble_cfg_mtu)
        self._ble_link_up(link, [cu for chars in peer.services.values() for cu in chars])
        for n in list(peer.notify):
            if n.every <= 0:
                # a one-shot notification (control plane ble_notify) made while no central was
                # connected went nowhere: the peer keeps the new value, nothing is replayed
                found = self._ble_peer_char(n.characteristic)
                if found is not None:
                    found[0][found[1]] = n.value.lower()
                peer.notify[:] = [x for x in peer.notify if x is not n]
                continue
            link.tasks.append(self.module.spawn(self._ble_peer_notifier(link, n)))
        link.tasks.append(self.module.spawn(self._ble_watch_peer(link, list(peer.notify))))

    async def _ble_watch_peer(self, link: _Link, known: list) -> None:
        """Notifications added to the world while connected (control plane ``ble_notify``) are sent
        once; a one-shot entry is then removed so that it does not replay on the next connection."""
        peer = link.peer
        while self.ble_link is link:
            for n in list(peer.notify):
                if not any(n is k for k in known):
                    known.append(n)
                    link.tasks.append(self.module.spawn(self._ble_peer_notifier(link, n, one_shot=n.count > 0)))
            await asyncio.sleep(0.05)

    async def _ble_peer_notifier(self, link: _Link, n, one_shot: bool = False) -> None:
        sent = 0
        while n.count == 0 or sent < n.count:
            await asyncio.sleep(max(0.0 if one_shot else 0.01, float(n.every)))
            if self.ble_link is not link:
                return
            value = bytes.fromhex(n.value)
            found = self._ble_peer_char(n.characteristic)
            if found is not None:
                found[0][found[1]] = n.value.lower()
            sent += 1
            u = _norm_uuid(n.characteristic)
            if u in link.notify_on or (self.ble_tran is not None and self.ble_tran["uuid"] == u):
                self._ble_deliver(u, value[: link.mtu - 3])
        if one_shot:
            link.peer.notify[:] = [x for x in link.peer.notify if x is not n]

    @command("+QBLECONNPARAM", Form.WRITE, Int("conn_idx", 0, 0), Int("con_interval", 6, 3200),
             Int("timeout", 10, 3200), Int("latency", 0, 499), family="ble",
             doc="Set connection parameters", test="+QBLECONNPARAM: 0,(6-3200),(10-3200),(0-499)")
    async def qbleconnparam(self, ctx: Ctx, conn: int, interval: int, timeout: int, latency: int):
        self._ble_need_role(1)
        # Bluetooth Core rule: supervision timeout > (1 + latency) * interval * 2
        if timeout * 10 <= (1 + latency) * interval * 1.25 * 2:
            raise CmdError("param", message="<timeout> too short for <con_interval> and <latency>")
        self.ble_conn_param = (interval, timeout, latency)
        if self.ble_link is not None:
            ctx.ok()
            self.module.urc(self._ble_connparam_line())

    @command("+QBLECONNPARAM", Form.READ, family="ble")
    async def qbleconnparam_read(self, ctx: Ctx):
        ctx.info(self._ble_connparam_line())

    @command("+QBLECFGMTU", Form.WRITE, Int("MTU_value", 64, 512), family="ble", doc="Set the MTU (central)",
             test="+QBLECFGMTU: (64-512)")
    async def qblecfgmtu(self, ctx: Ctx, mtu: int):
        self._ble_need_role(1)
        link = self.ble_link
        if link is not None:
            if link.mtu_set:
                raise CmdError("failed", message="MTU can be set once per connection")
            link.mtu_set = True
            link.mtu = mtu
            self.ble_cfg_mtu = mtu
            ctx.ok()
            self.module.urc(f"+QBLEMTU: {mtu}")
            return
        self.ble_cfg_mtu = mtu

    @command("+QBLECFGMTU", Form.READ, family="ble")
    async def qblecfgmtu_read(self, ctx: Ctx):
        ctx.info(f"+QBLECFGMTU: {self.ble_cfg_mtu}")

    # ---- GATT client (central) ----------------------------------------------------------------------
    def _ble_central_char(self, u: str) -> tuple[dict, str]:
        self._ble_need_role(1)
        link = self.ble_link
        if link is None or link.role != "central":
            raise CmdError("failed", message="not connected")
        found = self._ble_peer_char(u)
        if found is None:
            raise CmdError("failed", message=f"peer has no characteristic {u}")
        return found

    @command("+QBLEGATTCNTFCFG", Form.WRITE, _CONN, _UUID,
             Int("enable", 0, 1), family="ble", doc="Enable/disable notifications of a peer characteristic",
             test="+QBLEGATTCNTFCFG: 0,<UUID>,(0,1)")
    async def qblegattcntfcfg(self, ctx: Ctx, conn: int, u: str, enable: int):
        self._ble_central_char(u)
        link = self.ble_link
        if enable:
            link.notify_on.add(_norm_uuid(u))
        else:
            link.notify_on.discard(_norm_uuid(u))

    @command("+QBLEGATTCRD", Form.WRITE, _CONN, _UUID,
             family="ble", doc="Read a peer characteristic", test="+QBLEGATTCRD: 0,<UUID>")
    async def qblegattcrd(self, ctx: Ctx, conn: int, u: str):
        chars, key = self._ble_central_char(u)
        value = bytes.fromhex(chars[key])
        ctx.ok()
        self.module.urc(_text(value))

    @command("+QBLEGATTCWRCMD", Form.WRITE, _CONN, _UUID, *_DATA, family="ble",
             doc="Write a peer characteristic without response", test="+QBLEGATTCWRCMD: 0,<UUID>,<hex_length>,<data>")
    @command("+QBLEGATTCWRREQ", Form.WRITE, _CONN, _UUID, *_DATA, family="ble",
             doc="Write a peer characteristic with response", test="+QBLEGATTCWRREQ: 0,<UUID>,<hex_length>,<data>")
    async def qblegattcwrite(self, ctx: Ctx, conn: int, u: str, a: str, b):
        """Both write forms: the world peer holds the value at once (there is no air to lose it)."""
        chars, key = self._ble_central_char(u)
        data = self._ble_data(a, b)
        if not data or len(data) > self.ble_link.mtu - 3:
            raise CmdError("failed", message=f"write must be 1..{self.ble_link.mtu - 3} bytes")
        chars[key] = data.hex()

    # ---- link / state ----------------------------------------------------------------------------------
    @command("+QBLEDISCONN", Form.EXEC, family="ble")
    @command("+QBLEDISCONN", Form.WRITE, _CONN, family="ble", doc="Disconnect the BLE link",
             test="+QBLEDISCONN: 0")
    async def qbledisconn(self, ctx: Ctx, conn: int = 0):
        if self.ble_link is None:
            raise CmdError("failed", message="not connected")
        ctx.ok()
        self._ble_drop_link()

    @command("+QBLESTAT", Form.EXEC, family="ble", doc="Query the BLE state", test="")
    async def qblestat(self, ctx: Ctx):
        ctx.info(f"+QBLESTAT: {self.ble_state}")

    # ---- transparent mode --------------------------------------------------------------------------------
    @command("+QBLETRANMODE", Form.WRITE, _UUID,
             Int("state", 0, 1, optional=True), family="ble", doc="Enter BLE transparent mode",
             test="+QBLETRANMODE: <UUID>,(0,1)")
    async def qbletranmode(self, ctx: Ctx, u: str, state):
        link = self.ble_link
        uu = _norm_uuid(u)
        if self.ble_role == 1:
            self._ble_central_char(u)
        elif self.ble_role in (2, 3):
            ch = self._ble_find_local(u)
            if ch is None or not (self.ble_advertising or link is not None):
                raise CmdError("failed", message="unknown characteristic, or neither advertising nor connected")
            self.ble_tran_auto = state or 0
        else:
            raise CmdError("failed", message="BLE not initialised")
        ctx.final("CONNECT")
        self._ble_tran_resume = None
        lost = asyncio.Event()
        self.ble_tran = {"uuid": uu, "lost": lost}
        eng = self.module.engine
        rest = eng.enter_transparent(guard=self._ble_guard, now=time.monotonic())
        try:
            if rest:
                self._ble_tran_send(uu, rest)
            while True:
                pull = asyncio.ensure_future(self.module._pull())
                lw = asyncio.ensure_future(lost.wait())
                done, _ = await asyncio.wait({pull, lw}, return_when=asyncio.FIRST_COMPLETED)
                if pull not in done:
                    pull.cancel()
                    lw.cancel()
                    eng.leave_transparent()
                    self.module._write_line("NO CARRIER")
                    if self.ble_role in (2, 3) and self.ble_tran_auto:
                        self._ble_tran_resume = uu
                    return
                lw.cancel()
                ev = pull.result()
                if isinstance(ev, EscapeSequence):
                    self.module._write_line(self.format_ok())
                    self.ble_tran_auto = 0          # note 3: +++ cancels the automatic re-entry
                    return
                if isinstance(ev, TransparentData):
                    self._ble_tran_send(uu, ev.payload)
        finally:
            self.ble_tran = None
            if eng.transparent:
                eng.leave_transparent()

    def _ble_tran_send(self, uuid: str, data: bytes) -> None:
        link = self.ble_link
        if link is None:
            return
        size = max(1, link.mtu - 3)
        for i in range(0, len(data), size):
            part = data[i:i + size]
            if link.role == "central":
                found = self._ble_peer_char(uuid)
                if found is not None:
                    found[0][found[1]] = part.hex()
            else:
                ch = self._ble_find_local(uuid)
                if ch is not None:
                    ch.value = part
                if uuid in link.remote_sub:
                    link.inbox.append((uuid, part))

    # ---- the remote central (tests / control plane) -------------------------------------------------------
    def ble_remote_scan(self) -> dict | None:
        """What a scanning phone sees while the module advertises (None when it does not)."""
        if not self.ble_advertising:
            return None
        return {"name": self.ble_name, "address": self.ble_addr, "adv_data": self._ble_adv_bytes().hex(),
                "interval": self.ble_adv_param, "services": [s.uuid for s in self.ble_services]}

    def ble_remote_connect(self, address: str = "5a:00:00:00:00:01", mtu: int = 23) -> bool:
        """A remote central connects (only while advertising)."""
        if not self.ble_advertising or self.ble_link is not None:
            return False
        self.ble_advertising = False
        self._ble_link_up(_Link("peripheral", _norm_addr(address), mtu=max(23, min(int(mtu), 512))))
        uuid, self._ble_tran_resume = self._ble_tran_resume, None
        if uuid is not None and self.ble_tran_auto and self.ble_tran is None:
            # <state> 1: back into transparent mode by itself, as if the host had typed the command
            self.module.inject(self.module.engine.parse_command(f'AT+QBLETRANMODE="{uuid}",1'.encode()))
        return True

    def ble_remote_services(self) -> dict:
        return {s.uuid: {c.uuid: {"props": c.props, "value": c.value.hex()} for c in s.chars}
                for s in self.ble_services}

    def _ble_remote_link(self) -> _Link | None:
        link = self.ble_link
        return link if link is not None and link.role == "peripheral" else None

    def ble_remote_write(self, uuid: str, data: bytes, with_response: bool = True) -> bool:
        """The remote central writes a characteristic of the module's GATT server."""
        link = self._ble_remote_link()
        ch = self._ble_find_local(uuid)
        need = PROP_WRITE if with_response else PROP_WRITE_NR
        if link is None or ch is None or not ch.props & need or not data or len(data) > link.mtu - 3:
            return False
        ch.value = bytes(data)
        self._ble_deliver(ch.uuid, bytes(data))
        return True

    def ble_remote_read(self, uuid: str) -> bytes | None:
        link = self._ble_remote_link()
        ch = self._ble_find_local(uuid)
        if link is None or ch is None:
            return None
        return ch.value

    def ble_remote_subscribe(self, uuid: str, enable: bool = True) -> bool:
        link = self._ble_remote_link()
        ch = self._ble_find_local(uuid)
        if link is None or ch is None or not ch.props & PROP_NOTIFY:
            return False
        (link.remote_sub.add if enable else link.remote_sub.discard)(ch.uuid)
        return True

    def ble_remote_notifications(self) -> list[tuple[str, bytes]]:
        link = self._ble_remote_link()
        if link is None:
            return []
        out, link.inbox = link.inbox, []
        return out

    def ble_remote_disconnect(self) -> bool:
        if self._ble_remote_link() is None:
            return False
        self._ble_drop_link()
        return True
