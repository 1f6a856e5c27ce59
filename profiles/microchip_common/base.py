"""The machinery of Microchip's Wi-Fi AT family (WINC1500 / PIC32MZW1 and its successor RNWF02/RNWF11).

:class:`MicrochipFamily` holds the state and the plumbing every dialect shares (configuration
tables, station/soft-AP/provisioning/socket/MQTT state, snapshot, shutdown) and combines the shared
command mixins (``wlan.py``, ``mqtt.py``, ``sockets.py``). A dialect (``profiles.microchip_winc``,
``profiles.rnwf02``) subclasses it with its name, dialect, configuration tables, error format and
the commands it words differently; a handler set to ``None`` drops a shared command it lacks.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from atemu.files import FlashFS
from atemu.grammar import Arg, Engine
from atemu.profile import CmdError, Profile

from .common import (STA_SEC, AP_SEC, E_STATE, E_NOLINK, MAX_DATA,
                     TLS_CONFS, fmt_str, arg_bytes, _P)
from .mqtt import MqttCommands
from .sockets import Sock, SocketCommands
from .wlan import WlanCommands


class MicrochipFamily(SocketCommands, MqttCommands, WlanCommands, Profile):
    # (mixins listed last-first: the core collects commands along the reversed MRO, so `describe`
    # lists them in the manuals' order: WLAN, MQTT, network stack)
    STA_SEC = STA_SEC
    AP_SEC = AP_SEC
    #: the configuration tables (id -> _P) a dialect defines: WSCNC, WSTAC, WAPC, WPROVC, MQTTC, TLSC
    CONFIG_TABLES = ("WSCNC", "WSTAC", "WAPC", "WPROVC", "MQTTC")
    #: an unused WPROVC PIN prints as [] (the WINC manual's example) rather than ""
    EMPTY_PIN_AS_HEX = False
    #: AT+SOCKTLS accepted while the TCP connect of AT+SOCKBR runs (the handshake follows the connect)
    TLS_WHILE_CONNECTING = False
    #: TLS configuration indexes
    TLS_INDEXES = tuple(range(1, TLS_CONFS + 1))

    def __init__(self, module):
        super().__init__(module)
        self.asleep = False
        self._down = False
        self.opts = getattr(module.world, "options", {}) or {}
        self.cfg: dict[str, dict[int, Any]] = {}
        for name in self.CONFIG_TABLES:
            self.cfg[name] = {i: p.default for i, p in getattr(self, name).items()}
        self.tls_confs = {i: {k: p.default for k, p in self.TLSC.items()} for i in self.TLS_INDEXES}
        # station
        self.sta_state = 0            # 0 idle, 1 connecting, 2 connected
        self.sta_ap = None
        self.sta_ip: str | None = None
        self._sta_task: asyncio.Task | None = None
        self.ntp: dict = {}
        # soft-AP
        self.ap_on = False
        self.ap_stations: dict[int, str] = {}     # assoc id -> MAC
        self._ap_next = 1
        # provisioning
        self.prov_on = False
        self.prov_listener = None
        self.provisioning_port: int | None = None
        self._prov_conns: set = set()
        self._prov_engine = Engine(self.dialect, self.commands)
        # scan
        self._scanning = False
        # sockets
        self.socks: dict[int, Sock] = {}
        # mqtt
        self.mqtt = None
        self.mqtt_state = 0            # 0 idle, 1 connecting, 2 connected
        self.mqtt_subs: dict[str, int] = {}
        self._sub_pending = False
        self.ack_timeout = float(self.option("ack_timeout", 10.0))
        #: seconds of host silence after which a binary phase (SOCKWR/SOCKWRTO/LOADCERT) gives up
        self.data_timeout = float(self.option("data_timeout", 10.0))
        # certificates and keys TLSC names
        self.store = FlashFS(module.state_dir / "certs", capacity=64 * 1024, max_file=MAX_DATA, max_name=64)

    def option(self, key: str, default: Any = None) -> Any:
        """The world option ``<prefix>.<key>`` (prefix: the profile's option_prefix or name)."""
        return self.opts.get(f"{self.option_prefix or self.name}.{key}", default)


    # ================================================================== plumbing
    #: how the module prints a string it reports (quoted or [HEX]); a family dialect may escape instead
    fmt = staticmethod(fmt_str)

    def urc(self, text: str, data: bytes = b"") -> None:
        if self.asleep or self._down:
            return
        self.module.urc(text, data)

    @staticmethod
    def fail(code: int, message: str = "") -> CmdError:
        return CmdError("failed", code=code, message=message or f"error {code}")

    def link_up(self) -> bool:
        return (self.sta_state == 2 and self.sta_ip is not None) or self.ap_on

    def need_link(self) -> None:
        if not self.link_up():
            raise self.fail(E_NOLINK, "no WLAN link")

    # ---- configuration commands (shared) ---------------------------------------------------------
    def _cfg_line(self, cmd: str, pid: int, value: Any) -> str:
        p = getattr(self, cmd)[pid]
        if p.kind == "int":
            return f"+{cmd}:{pid},{value}"
        if cmd == "WPROVC" and pid == 2 and not value and self.EMPTY_PIN_AS_HEX:
            return f"+{cmd}:{pid},[]"
        return f"+{cmd}:{pid},{self.fmt(value or b'')}"

    def _cfg_value(self, p: _P, arg: Arg) -> Any:
        if p.kind == "int":
            if arg.quoted or arg.hexed:
                raise CmdError("param", message=f"<{p.name}> must be a number")
            try:
                from atemu.grammar import parse_int
                v = parse_int(arg.text)
            except ValueError:
                raise CmdError("param", message=f"<{p.name}> must be a number") from None
            if p.choices:
                if v not in p.choices:
                    raise CmdError("param", message=f"<{p.name}> out of range")
            elif not p.lo <= v <= p.hi:
                raise CmdError("param", message=f"<{p.name}> out of range")
            return v
        if not (arg.quoted or arg.hexed):
            raise CmdError("param", message=f"<{p.name}> must be a quoted or [hex] string")
        b = arg_bytes(arg)
        if len(b) > p.max_len:
            raise CmdError("param", message=f"<{p.name}> too long")
        return b

    def _cfg(self, ctx, cmd: str, table: dict, store: dict, pid: int | None, val: Any, writable: Callable[[], bool] | None = None,
             arg_index: int = 1) -> None:
        if pid is None:
            for i in table:
                ctx.info(self._cfg_line(cmd, i, store[i]))
            return
        if pid not in table:
            raise CmdError("param", message=f"unknown parameter id {pid}")
        if val is None:
            ctx.info(self._cfg_line(cmd, pid, store[pid]))
            return
        if writable is not None and not writable():
            raise self.fail(E_STATE, f"{cmd} is read-only now")
        store[pid] = self._cfg_value(table[pid], ctx.line.args[arg_index])

    def snapshot(self) -> dict:
        """Control-plane view of the module's state."""
        return {
            "asleep": self.asleep,
            "station": {"state": ["idle", "connecting", "connected"][self.sta_state],
                        "ssid": self.sta_ap.ssid if self.sta_ap else None, "ip": self.sta_ip},
            "ntp": dict(self.ntp),
            "soft_ap": {"on": self.ap_on, "stations": {str(k): v for k, v in self.ap_stations.items()}},
            "provisioning": {"on": self.prov_on, "port": self.provisioning_port},
            "sockets": [{"id": s.id, "proto": "udp" if s.proto == 1 else "tcp", "remote": list(s.remote) if s.remote else None,
                         "local_port": s.local_port, "listening": s.listener is not None,
                         "tls": bool(s.conn is not None and s.conn.tls),
                         "buffered": (s.conn.available if s.conn is not None else (len(s.udp.rx) if s.udp is not None else 0))}
                        for s in self.socks.values()],
            "mqtt": {"state": ["disconnected", "connecting", "connected"][self.mqtt_state],
                     "subscriptions": dict(self.mqtt_subs)},
            "certificates": [n for n, _ in self.store.list()],
        }

    # ================================================================== lifecycle
    async def shutdown(self) -> None:
        self._down = True  # powering off: nothing more reaches the UART
        for s in list(self.socks.values()):
            self._close_sock(s)
        self.socks.clear()
        await self._stop_prov()
        s, self.mqtt = self.mqtt, None
        if s is not None:
            try:
                await asyncio.wait_for(s.disconnect(), 2)
            except Exception:
                s.close()
