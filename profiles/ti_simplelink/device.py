"""Device family: AT+Start, AT+Stop, AT+Get, AT+Set, AT+Test."""
from __future__ import annotations

import datetime as _dt
import os
import time

from atemu.grammar import Form, Int, Keyword
from atemu.module import Ctx
from atemu.profile import command

from .common import E_ALREADY, OS, S, count_error, fail, param_error, parse_num, pick

CHIP_ID = "0x31000019"
FW_VERSION = "3.7.0.1"
PHY_VERSION = "2.2.0.6"
NWP_VERSION = "3.7.0.1"
ROM_VERSION = "0"
#: AT+Get=Status,NETAPP bits set by the events (manual order); the station's are cleared by the next
#: association or address, ip_leased/ip_released by the read
NETAPP_EVENT_FLAGS = ("ip_leased", "ip_released", "ipv4_lost", "dhcp_acquire_timeout", "ip_collision", "ipv6_lost")


class DeviceMixin:
    @command("+Start", Form.EXEC, family="device", doc="Start the network processor (NWP)")
    async def at_start(self, ctx: Ctx) -> None:
        if self.started:
            raise fail(E_ALREADY, "the NWP is already started")
        await self.nwp_start()

    @command("+Stop", Form.WRITE, Int("timeout", 0, 0xFFFF), family="device",
             doc="Stop the NWP (0 = at once, 1..0xFFFF = let pending transmissions finish for up to timeout ms)")
    async def at_stop(self, ctx: Ctx, timeout: int) -> None:
        if self.started and timeout:
            await self.flush_sockets(min(timeout, 2000) / 1000.0)
        await self.nwp_stop()

    @command("+Test", Form.EXEC, family="device", doc="Test the AT command core: OK")
    async def at_test(self, ctx: Ctx) -> None:
        return None

    @command("+Get", Form.WRITE, Keyword("id", values={"Status": "status", "General": "general", "IOT": "iot"}),
             S("option"), family="device", doc="Get device status, version, time, persistence, UDID")
    async def at_get(self, ctx: Ctx, ident: str, option: str) -> None:
        if ident == "status":
            opt = pick(option, ("device", "wlan", "bsd", "netapp"), "option")
            if opt == "device":
                flags = ["general_error"] if self.status_flags.get("device") else []
            elif opt == "wlan":
                flags = ["sta_connected"] if self.wlan_connected else ["sta_disconnected"]
                if self.status_flags.get("connection_failed"):
                    flags.append("connection_failed")
            elif opt == "bsd":
                flags = ["tx_failed"] if self.status_flags.pop("tx_failed", False) else []
            else:
                flags = ["ipacquired"] if self.ip_up else []
                if self.ip_up and self.lease is not None and self.ipv6_enabled():
                    flags.append("ipacquired_v6")
                flags += [f for f in NETAPP_EVENT_FLAGS if self.status_flags.get(f)]
                for f in ("ip_leased", "ip_released"):      # DHCP server events: reported once
                    self.status_flags.pop(f, None)
            ctx.info("+get:" + "|".join(flags))
            return
        if ident == "general":
            opt = pick(option, ("version", "time", "persistent"), "option")
            if opt == "version":
                ctx.info(f"+get:{CHIP_ID},{FW_VERSION},{PHY_VERSION},{NWP_VERSION},{ROM_VERSION}")
            elif opt == "time":
                t = self.device_time()
                ctx.info(f"+get:{t.hour},{t.minute},{t.second},{t.day},{t.month},{t.year}")
            else:
                ctx.info(f"+get:{1 if self.persistent else 0}")
            return
        pick(option, ("udid",), "option")
        ctx.info("+get:" + self.udid())

    @command("+Set", Form.WRITE, Keyword("id", values={"General": "general"}), S("option"),
             OS("value1"), OS("value2"), OS("value3"), OS("value4"), OS("value5"), OS("value6"),
             family="device", doc="Set persistence mode or the device time")
    async def at_set(self, ctx: Ctx, ident: str, option: str, *values) -> None:
        opt = pick(option, ("persistent", "time"), "option")
        vals = [v for v in values]
        if opt == "persistent":
            if vals[0] is None or any(v is not None for v in vals[1:]):
                raise count_error("persistent takes one value")
            v = parse_num(vals[0], 0, 1)
            self.module.settings.set("ti.persistent", bool(v))
            if v:
                self.save_cfg()
            return
        if any(v is None for v in vals):
            raise count_error("time takes six values")
        h, mi, s = parse_num(vals[0], 0, 23), parse_num(vals[1], 0, 59), parse_num(vals[2], 0, 59)
        d, mo, y = parse_num(vals[3], 1, 31), parse_num(vals[4], 1, 12), parse_num(vals[5], 1970, 2100)
        try:
            target = _dt.datetime(y, mo, d, h, mi, s, tzinfo=_dt.timezone.utc)
        except ValueError:
            raise param_error("no such date") from None
        self.time_offset = target.timestamp() - time.time()

    # ---- helpers ---------------------------------------------------------------------------
    def device_time(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(time.time() + self.time_offset, _dt.timezone.utc)

    def udid(self) -> str:
        u = self.module.settings.get("ti.udid")
        if not u:
            u = os.urandom(16).hex()
            self.module.settings.set("ti.udid", u)
        return u
