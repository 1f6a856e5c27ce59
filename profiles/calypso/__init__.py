"""Würth Elektronik Calypso Wi-Fi module (``calypso``): a dialect of ``ti-simplelink``.

Calypso runs an AT firmware derived from TI's CC32xx AT command interpreter. Everything the two
share (sockets, TLS, WLAN, files, NetApp, NetCfg, MQTT, HTTP) is the ti-simplelink profile; this
module adds or changes only what Calypso does differently: the application processor boots with the
NWP running and prints ``+eventstartup``, device commands ``AT+reboot``, ``AT+factoryreset``,
``AT+sleep``, ``AT+powersave``, the ``UART`` and ``GPIO`` ids of ``AT+get``/``AT+set``, the Calypso
firmware version in ``AT+get=general,version``, the SNTP client (``AT+netAppUpdateTime``) and the
GPIO commands. Evidence for each difference: README.md next to this file.
"""
from __future__ import annotations

import re

from atemu.grammar import Form, Int, Keyword, UrcSpec
from atemu.module import Ctx
from atemu.profile import command
from atemu.profiles.ti_simplelink import DEVIATIONS as TI_DEVIATIONS, URCS as TI_URCS, TiSimpleLink
from atemu.profiles.ti_simplelink.common import OS, S, count_error, param_error, parse_num, pick
from atemu.profiles.ti_simplelink.device import CHIP_ID, FW_VERSION, NWP_VERSION, PHY_VERSION, ROM_VERSION

from .extra import CalypsoExtraMixin

#: Würth order code of the Calypso radio module (printed first in +eventstartup)
ARTICLE_NR = "2610011025000"
#: Calypso firmware version (last field of AT+get=general,version and of +eventstartup)
FIRMWARE = "2.2.0"
UART_DEFAULTS = {"baudrate": 921600, "parity": 1, "flowcontrol": False}
BAUDRATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 2000000,
             3000000)
SLEEP_MAX = 86400

DEVIATIONS = [
    "C1 (differs from ti-simplelink): after power-up, a hardware reset (ModuleHandle.reset, control POST .../reset), AT+reboot, AT+factoryreset and the end of AT+sleep the module prints +eventstartup:<article nr>,<chip id>,<MAC>,<major>.<minor>.<patch>; the NWP is already running (AT+start answers -114 until AT+stop); AT+start after AT+stop prints only OK (no +eventgeneral:init_complete).",
    "C2: UART 921600 8E1; AT+get=UART,baudrate|parity|flowcontrol print +get:921600, +get:1 (0 none, 1 even, 2 odd), +get:false; AT+set=UART stores the value, which applies from the next reset.",
    "C3: AT+get=general,version prints six fields (chip id, MAC, PHY, NWP, ROM version, Calypso firmware version); five when world option calypso.firmware is below 1.9.0.",
    "C4: AT+get=IOT,UDID prints the 16 bytes as 0x<hex> separated by commas (as TI's source; the WCON driver parses 16 comma-separated hex bytes).",
    "C5: AT+reboot: OK, then the reset; AT+factoryreset wipes files and stored settings (UDID and MAC stay), OK, then the reset; AT+sleep=<1..86400>: OK, the UART is ignored for that many seconds, then the module boots; AT+powersave: OK, the UART is ignored until the wake-up pin (ModuleHandle.wakeup, control POST .../wakeup), which prints +eventwakeup.",
    "C6: AT+get/set=GPIO,remote_lock; AT+gpioSet=<id 0..3>,<save>,<unused|input|output|pwm>,<value1>,<value2> and AT+gpioGet=<id>,<default> -> +gpioget:<id>,<type>,<values> in the WCON driver's layout; input levels from world option calypso.gpio_inputs.",
    "C7: AT+wlanSet=AP,SSID,<append MAC true|false>,<ssid> (the one-value TI form is accepted too).",
    "C8: AT+fileWrite with format 1 answers +filewrite:<Base64 characters consumed>.",
    "C9: AT+mqttSubscribe accepts up to four further empty fields after the four topic groups (the WCON driver writes them).",
    "C10: AT+httpSendReq accepts an absolute URI (http(s)://host/path): its path and query are requested on the connected server.",
    "C11: NetApp SNTP_CLIENT (enable, update_interval, time_zone, server_address <index>,<host>); AT+netAppUpdateTime asks the servers (real SNTP; host:port accepted for local test servers) and sets the device time to UTC + time_zone minutes, or ERROR:process command,-110.",
    "C12: a bind on the configured static station address is a bind on the module's own address, at once (the WCON socket examples bind right after AT+netCfgSet).",
    "C13: AT+wlanPolicyGet=PM|SCAN always print <option>,<value> (0 where the value does not apply).",
    "C14: events as ti-simplelink (+eventsock, not the old SDK's +eventsocket); never emitted: +eventfatalerror, +eventhttpget, +eventcustom. Not emulated: transparent mode, provisioning, OTA, AT+httpCustomResponse, the Cordelia-I IoT commands.",
]

URCS = [
    UrcSpec("+eventstartup", "+eventstartup:<article nr>,<chip id>,<MAC>,<major>.<minor>.<patch>",
            "the application processor booted (power-up, reset pin, reboot, factory reset, end of sleep)", "device"),
    UrcSpec("+eventwakeup", "+eventwakeup", "woken from AT+powersave by the wake-up pin", "device"),
] + [u for u in TI_URCS if u.name != "+eventgeneral:init_complete"]


class Calypso(CalypsoExtraMixin, TiSimpleLink):
    name = "calypso"
    aliases = ("wurth-calypso", "we-calypso")
    summary = "Würth Elektronik Calypso Wi-Fi (TI CC32xx-based AT firmware): ti-simplelink plus Calypso device commands"
    default_baud = 921600
    families = TiSimpleLink.families + ("gpio",)
    deviations = [d.replace("; 115200 8N1.", "; UART as C2.") for d in TI_DEVIATIONS if not d.startswith("T37")] + DEVIATIONS
    urcs = URCS
    option_prefix = "calypso"
    world_options = {
        "article_nr": f"article number printed in +eventstartup (default {ARTICLE_NR})",
        "firmware": f"Calypso firmware version major.minor.patch (default {FIRMWARE})",
        "boot_delay": "seconds from a reset to +eventstartup (default 0.05)",
        "gpio_inputs": "{gpio id: 0|1} levels read by AT+gpioGet for GPIOs configured as inputs",
    }

    @classmethod
    def validate_world(cls, world) -> None:
        super().validate_world(world)
        fw = (getattr(world, "options", {}) or {}).get("calypso.firmware")
        if fw is not None and not re.fullmatch(r"\d{1,3}\.\d{1,3}\.\d{1,3}", str(fw)):
            from atemu.world import WorldError
            where = f"{world.source}: " if getattr(world, "source", None) else ""
            raise WorldError(f"{where}calypso.firmware must be major.minor.patch (like 2.2.0), got {fw!r}")

    def __init__(self, module):
        super().__init__(module)
        self.dozing = False

    # ---- options ----------------------------------------------------------------------------
    def opt(self, key: str, default):
        return (self.module.world.options or {}).get(f"calypso.{key}", default)

    def firmware(self) -> str:
        return str(self.opt("firmware", FIRMWARE))

    def firmware_tuple(self) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in self.firmware().split("."))
        except ValueError:
            return (0,)

    def uart_cfg(self) -> dict:
        stored = self.module.settings.get("calypso.uart")
        cfg = dict(UART_DEFAULTS)
        if isinstance(stored, dict):
            cfg.update(stored)
        return cfg

    # ---- life cycle ---------------------------------------------------------------------------
    async def boot(self) -> None:
        """Power-up/reset: the NWP starts by itself and +eventstartup comes first."""
        stored = self.module.settings.get("calypso.uart")
        if isinstance(stored, dict) and stored.get("baudrate") and stored["baudrate"] != self.module.baud:
            self.module.set_baud(int(stored["baudrate"]))
        mac = self.out_mac(self.mac()) if hasattr(self, "out_mac") else self.mac()   # as the module prints MACs
        self.module.urc(f"+eventstartup:{self.opt('article_nr', ARTICLE_NR)},{CHIP_ID},{mac},{self.firmware()}")
        await self.nwp_start()

    def startup_event(self) -> str | None:
        """ti-simplelink's hook for the line after AT+start's OK: Calypso prints none (its startup
        event comes from the boot, see boot())."""
        return None

    def reset_later(self, delay: float | None = None) -> None:
        """Reset after the current answer, as the reset pin or AT+reboot does."""
        self.module.request_reboot(float(self.opt("boot_delay", 0.05)) if delay is None else delay)

    # ---- device -----------------------------------------------------------------------------
    @command("+reboot", Form.EXEC, family="device", doc="Reboot the module: OK, then +eventstartup")
    async def at_reboot(self, ctx: Ctx) -> None:
        self.reset_later()

    @command("+factoryreset", Form.EXEC, family="device",
             doc="Wipe files and stored settings (factory image; UDID and MAC stay), OK, then reboot (+eventstartup)")
    async def at_factoryreset(self, ctx: Ctx) -> None:
        await self.nwp_stop(emit=False)
        self.fs.delete_all()
        self.fs_bak.delete_all()
        for key in list(self.module.settings.items()):
            if (key.startswith("ti.") and key not in ("ti.udid", "ti.mac")) or key.startswith("calypso."):
                self.module.settings.delete(key)
        self.reset_later()

    @command("+sleep", Form.WRITE, Int("timeout", 1, SLEEP_MAX, doc="seconds in hibernate"), family="device",
             doc="Hibernate for timeout seconds (UART ignored), then boot: +eventstartup")
    async def at_sleep(self, ctx: Ctx, timeout: int) -> None:
        self.reset_later(float(timeout))

    @command("+powersave", Form.EXEC, family="device",
             doc="Low-power mode: OK, UART ignored until the wake-up pin (control API /wakeup): +eventwakeup")
    async def at_powersave(self, ctx: Ctx) -> None:
        self.dozing = True

        async def doze() -> None:
            await self.module.drain_output()
            self.module.frozen = True
        self.module.spawn(doze(), name="powersave")

    def wake_up(self) -> bool:
        """The wake-up pin's rising edge: leave AT+powersave (prints +eventwakeup). False when awake."""
        if not self.dozing:
            return False
        self.dozing = False
        self.module.frozen = False
        self.module.urc("+eventwakeup")
        return True

    @command("+get", Form.WRITE,
             Keyword("id", values={"Status": "status", "General": "general", "IOT": "iot", "UART": "uart",
                                   "GPIO": "gpio"}),
             S("option"), family="device", doc="Get device status, version, time, persistence, UDID, UART settings")
    async def at_get(self, ctx: Ctx, ident: str, option: str) -> None:
        if ident == "uart":
            opt = pick(option, ("baudrate", "parity", "flowcontrol"), "option")
            v = self.uart_cfg()[opt]
            ctx.info("+get:" + (("true" if v else "false") if opt == "flowcontrol" else str(v)))
            return
        if ident == "gpio":
            pick(option, ("remote_lock",), "option")
            ctx.info("+get:" + ("true" if self.module.settings.get("calypso.gpio_remote_lock") else "false"))
            return
        if ident == "iot":
            pick(option, ("udid",), "option")
            ctx.info("+get:" + ",".join(f"0x{b:x}" for b in bytes.fromhex(self.udid())))
            return
        if ident == "general" and str(option).strip().lower() == "version":
            fields = [CHIP_ID, FW_VERSION, PHY_VERSION, NWP_VERSION, ROM_VERSION]   # ti-simplelink's five
            if self.firmware_tuple() >= (1, 9, 0):      # the WCON driver: the sixth field from firmware 1.9.0
                fields.append(self.firmware())
            ctx.info("+get:" + ",".join(fields))
            return
        await super().at_get(ctx, ident, option)

    @command("+set", Form.WRITE, Keyword("id", values={"General": "general", "UART": "uart", "GPIO": "gpio"}),
             S("option"), OS("value1"), OS("value2"), OS("value3"), OS("value4"), OS("value5"), OS("value6"),
             family="device", doc="Set persistence, the device time, UART settings (from the next reset)")
    async def at_set(self, ctx: Ctx, ident: str, option: str, *values) -> None:
        if ident in ("uart", "gpio"):
            if values[0] is None or any(v is not None for v in values[1:]):
                raise count_error(f"{ident} settings take one value")
            v = str(values[0]).strip()
            if ident == "gpio":
                pick(option, ("remote_lock",), "option")
                self.module.settings.set("calypso.gpio_remote_lock", pick(v, ("false", "true")) == "true")
                return
            opt = pick(option, ("baudrate", "parity", "flowcontrol"), "option")
            if opt == "baudrate":
                val: object = parse_num(v, name="baudrate")
                if val not in BAUDRATES:
                    raise param_error(f"baudrate must be one of {BAUDRATES}")
            elif opt == "parity":
                val = parse_num(v, 0, 2, "parity")
            else:
                val = pick(v, ("false", "true", "0", "1"), "flowcontrol") in ("true", "1")
            stored = self.module.settings.get("calypso.uart")
            stored = dict(stored) if isinstance(stored, dict) else {}
            stored[opt] = val
            self.module.settings.set("calypso.uart", stored)
            return
        await super().at_set(ctx, ident, option, *values)

    # ---- helpers for the control plane --------------------------------------------------------
    def snapshot(self) -> dict:
        snap = super().snapshot()
        snap["calypso"] = {"uart": self.uart_cfg(), "powersave": self.dozing, "firmware": self.firmware()}
        return snap


__all__ = ["Calypso"]
