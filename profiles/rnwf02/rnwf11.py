"""RNWF11: the RNWF02 AT interface plus the RNWF11-only modules of the RNWF11 Application
Developer's Guide's AT chapter: MDNS (21), ECC (26), TBL (27), READAPPIMAGE (28), AZURE (29) and
IOMGR (30). The RNWF11 guide has no WPROV (25) and no DI (26 is ECC there): both are dropped.

Everything runs on the core: mDNS answers real multicast DNS queries (``atemu.net.mdns``), the
ATECC608 is ``atemu.secure_element`` (real P-256 keys and certificates in the state folder, used by
TLS when ``AT+TLSC=<n>,8,1``), Azure DPS runs over the core's MQTT (+TLS) session. Choices and their
evidence are in README.md ("RNWF11") and INVENTORY.md.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import urllib.parse
from typing import Any

from atemu.grammar import Form, Int, Str, UrcSpec
from atemu.net.errors import NetError
from atemu.profile import CmdError, command
from atemu.secure_element import ROOT, SeError, SecureElement

from atemu.profiles.microchip_common.common import E_STATE, _P, arg_bytes, log, sfx

from .guide import NumericNames
from .profile import DEVIATIONS, MODULE_IDS, Rnwf02
from .status import status

#: the RNWF11 guide's module ids (26 is ECC there; the RNWF02 guide's DI and WPROV are not in it)
RNWF11_MODULE_IDS = {k: v for k, v in MODULE_IDS.items() if k not in ("+DI", "+WPROVC", "+WPROV")}
RNWF11_MODULE_IDS.update({
    "+MDNSC": 21, "+ECCRDCERT": 26, "+ECCRDSER": 26, "+ECCWRDEVTYPE": 26, "+ECCWRSLOT": 26, "+ECCRDSLOT": 26,
    "+TBL": 27, "+READAPPIMAGE": 28, "+AZUREC": 29, "+IOCFG": 30, "+DIGRD": 30, "+DIGWR": 30, "+DIGPU": 30,
    "+ADCRD": 30, "+PWMCFG": 30, "+PWMSTART": 30, "+PWMSTOP": 30,
})

#: the application image AT+READAPPIMAGE reads (the address and size Microchip's OTA demo uses)
APP_IMAGE_ADDR = 0x90000000
APP_IMAGE_SIZE = 0x100000
#: the username form of a DPS registration: <ID scope>/registrations/<registration id>/api-version=...
DPS_USER = re.compile(r"^[^/]+/registrations/[^/]+/")
HUB_API_VERSION = "2021-04-12"
NUM_PINS = 30
#: the timer clock of the PWM (output compare) modules: the guide's 2 ms = 0xC350 ticks
PWM_CLOCK = 25_000_000


class _Quiet:
    """A stand-in command context for a command run internally (its OK is not printed)."""
    line = None

    def ok(self) -> None:
        pass

    def info(self, text: str) -> None:
        pass


def _slot_text(data: bytes) -> str:
    """Slot data as the guide's example prints it: printable text quoted, NUL as \\0, other bytes \\xHH."""
    out = []
    for b in data:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif b == 0:
            out.append("\\0")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\x{b:02X}")
    return '"' + "".join(out) + '"'


class Rnwf11Commands:
    """Mixin of :class:`Rnwf11` (listed first, so its declarations win)."""

    # the RNWF11 guide has neither WPROV nor DI
    wprovc = None
    wprov_read = None
    wprov = None
    di = None

    # ================================================================== MDNS (21)
    @command("+MDNSC", Form.EXEC, family="mdns", doc="List the mDNS configurations: +MDNSC:1")
    @command("+MDNSC", Form.WRITE, Int("CONF", 1, 1), Int("ID", optional=True), Str("VAL", quoted=None, optional=True),
             family="mdns", doc="mDNS configuration 1: 1 ENABLED, 2 STARTED (read-only), 3 NAME (service instance), "
                                "4 TYPE (e.g. \"_http._tcp\"), 5 PORT, 6 TXT; reads +MDNSC:<ID>,<VAL>")
    async def mdnsc(self, ctx, conf: int | None = None, pid: int | None = None, val: Any = None) -> None:
        if conf is None:
            ctx.info("+MDNSC:1")
            return
        live = dict(self.cfg["MDNSC"])
        live[2] = int(self._mdns is not None)
        if pid == 2 and val is not None:
            raise self.fail(E_STATE, "STARTED is read-only")
        self._cfg(ctx, "MDNSC", self.MDNSC, live, pid, val, arg_index=2)
        if val is None:
            return
        self.cfg["MDNSC"][pid] = live[pid]
        await self._mdns_apply(restart=pid != 1)

    def _mdns_service(self):
        from atemu.net.mdns import Service
        c = self.cfg["MDNSC"]
        if not c[4]:
            return None
        txt = [sfx(c[6]).encode()] if c[6] else []
        return Service(name=sfx(c[3]) or sfx(self.hostname), type=sfx(c[4]), port=c[5], txt=txt)

    async def _mdns_apply(self, restart: bool = False) -> None:
        """Run the responder while ENABLED and the station has an address (STARTED follows)."""
        want = bool(self.cfg["MDNSC"][1]) and bool(self.sta_ip)
        if self._mdns is not None and (restart or not want):
            self._mdns.close()
            self._mdns = None
        if want and self._mdns is None:
            from atemu.net.mdns import MdnsResponder
            r = MdnsResponder(sfx(self.hostname), lambda: self.sta_ip, self._mdns_service(),
                              iface=str(self.option("mdns_iface", "127.0.0.1")),
                              port=int(self.option("mdns_port", 5353)))
            try:
                await r.start()
            except OSError as e:
                log.warning("mDNS responder not started: %s", e)
                raise self.fail(E_STATE, f"mDNS: {e}") from None
            self._mdns = r

    def _aec_got_ip(self, ip: str) -> None:
        super()._aec_got_ip(ip)
        if self.cfg["MDNSC"][1]:
            self.module.spawn(self._mdns_quiet())

    def _aec_link_down(self) -> None:
        super()._aec_link_down()
        if self._mdns is not None:
            self._mdns.close()
            self._mdns = None

    async def _mdns_quiet(self) -> None:
        try:
            await self._mdns_apply()
        except CmdError:
            pass

    # ================================================================== ECC (26)
    @property
    def ecc(self) -> SecureElement:
        """The selected ATECC608 (AT+ECCWRDEVTYPE: 1 Trust&GO, 2 TrustFLEX), one folder each."""
        kind = "tng" if self.ecc_devtype == 1 else "tflex"
        se = self._ecc.get(kind)
        if se is None:
            folder = self.module.state_dir / "ecc608" / kind
            se = self._ecc[kind] = SecureElement(folder, seed=f"{self.module.name}/{kind}/{folder.resolve()}")
        return se

    @command("+ECCRDSER", Form.EXEC, family="ecc", doc='Serial number of the ECC device: +ECCRDSER:<digits>,"<SERNUM>"')
    async def eccrdser(self, ctx) -> None:
        sn = self.ecc.serial.hex().upper()
        ctx.info(f'+ECCRDSER:{len(sn)},"{sn}"')

    @command("+ECCRDCERT", Form.WRITE, Int("CERTIFICATE", 1, 3), Int("LENGTH", 1, 4096), family="ecc",
             doc="Read the next LENGTH bytes of certificate 1 device, 2 signer (PEM), 3 root (DER): "
                 "+ECCRDCERT:<TOTLENGTH>,<remaining>,<DATA>")
    async def eccrdcert(self, ctx, kind: int, length: int) -> None:
        data = self.ecc.cert_der(kind) if kind == ROOT else self.ecc.cert_pem(kind)
        pos = self._cert_pos.get(kind, 0)
        chunk = data[pos:pos + length]
        pos += len(chunk)
        remaining = len(data) - pos
        self._cert_pos[kind] = pos if remaining else 0
        if kind == ROOT:
            text = "[" + chunk.hex().upper() + "]"
        else:
            text = '"' + chunk.decode("ascii").replace("\n", "\\n") + '"'
        ctx.info(f"+ECCRDCERT:{len(data)},{remaining},{text}")

    @command("+ECCWRDEVTYPE", Form.WRITE, Int("ECCDEVTYPE", 1, 2), family="ecc",
             doc="Select the ECC device: 1 Trust&GO, 2 TrustFLEX")
    async def eccwrdevtype(self, ctx, devtype: int) -> None:
        self.ecc_devtype = devtype
        self._cert_pos.clear()

    @command("+ECCWRSLOT", Form.WRITE, Int("ZONE_OR_SLOT", 0, 15), Int("SLOT_OR_OFFSET", 0, 416),
             Int("OFFSET_OR_LENGTH", 0, 416), Str("LENGTH_OR_DATA", quoted=None, max_len=416),
             Str("DATA", quoted=None, optional=True, max_len=416), family="ecc",
             doc="Write a slot: AT+ECCWRSLOT=[<ZONE 1 config|2 OTP|3 data>,]<SLOT>,<OFFSET>,<LENGTH>,<DATA>; "
                 "DATA shorter than LENGTH is padded with zeros")
    async def eccwrslot(self, ctx, a: int, b: int, c: int, d: str, e: str | None = None) -> None:
        args = ctx.line.args
        if e is None:
            zone, slot, offset = 3, a, b
            length_arg, data_arg = args[2], args[3]
        else:
            zone, slot, offset = a, b, c
            length_arg, data_arg = args[3], args[4]
        if length_arg.quoted or length_arg.hexed or not length_arg.text.strip().isdigit():
            raise CmdError("param", message="<LENGTH> must be a number")
        length = int(length_arg.text)
        data = arg_bytes(data_arg)
        if len(data) > length:
            raise CmdError("param", message="<DATA> longer than <LENGTH>")
        try:
            self.ecc.write(zone, slot, offset, data + b"\0" * (length - len(data)))
        except SeError as err:
            raise (status(0, 10, str(err)) if err.kind == "locked" else CmdError("param", message=str(err))) from None

    @command("+ECCRDSLOT", Form.WRITE, Int("ZONE_OR_SLOT", 0, 15), Int("SLOT_OR_OFFSET", 0, 416),
             Int("OFFSET_OR_LENGTH", 0, 416), Int("LENGTH", 1, 416, optional=True), family="ecc",
             doc="Read a slot: AT+ECCRDSLOT=[<ZONE>,]<SLOT>,<OFFSET>,<LENGTH> -> +ECCRDCERT:<LENGTH>,\"<DATA>\" "
                 "(the prefix the guide's example and the host drivers use)")
    async def eccrdslot(self, ctx, a: int, b: int, c: int, d: int | None = None) -> None:
        zone, slot, offset, length = (3, a, b, c) if d is None else (a, b, c, d)
        try:
            data = self.ecc.read(zone, slot, offset, length)
        except SeError as err:
            raise (status(0, 10, str(err)) if err.kind == "locked" else CmdError("param", message=str(err))) from None
        prefix = "+ECCRDSLOT" if self.option("eccrdslot_prefix", "ECCRDCERT").upper() == "ECCRDSLOT" else "+ECCRDCERT"
        ctx.info(f"{prefix}:{len(data)},{_slot_text(data)}")

    def _tls_identity(self, c: dict, load) -> tuple[Any, Any, Any]:
        """TLSC id 8 (USE_ECC608) 1: the client certificate chain and key are the ECC device's."""
        if c.get(8):
            cert, key = self.ecc.tls_identity()
            return cert, key, None
        return super()._tls_identity(c, load)

    # ================================================================== TBL (27)
    @command("+TBL", Form.EXEC, family="tbl", doc="Reset to the bootloader: OK, then the AT interface is gone until "
                                                  "the bootloader starts the application again (+BOOT)")
    async def tbl(self, ctx) -> None:
        ctx.ok()
        self.module.request_reboot(boot_delay=float(self.option("bootloader_time", 5.0)))

    # ================================================================== READAPPIMAGE (28)
    @command("+READAPPIMAGE", Form.WRITE, Str("ADDRESS", quoted=False, min_len=1, max_len=12), Int("LENGTH", 1, 4096),
             family="readappimage", doc="Read the application image: '#', LENGTH raw bytes and their checksum "
                                        "(one's complement of the byte sum), then OK")
    async def readappimage(self, ctx, addr: str, length: int) -> None:
        try:
            a = int(addr.strip(), 0)
        except ValueError:
            raise CmdError("param", message="<ADDRESS> must be a number") from None
        if not (APP_IMAGE_ADDR <= a and a + length <= APP_IMAGE_ADDR + APP_IMAGE_SIZE):
            raise CmdError("param", message="outside the application image")
        image = self._app_image()
        data = image[a - APP_IMAGE_ADDR:a - APP_IMAGE_ADDR + length]
        ctx.raw(b"#" + data + bytes([~sum(data) & 0xFF]))

    def _app_image(self) -> bytes:
        """The image: the file of world option rnwf11.app_image, else a deterministic generated one."""
        if self._image is None:
            path = self.option("app_image")
            if path:
                with open(path, "rb") as f:
                    img = f.read(APP_IMAGE_SIZE)
            else:
                from .profile import GMR
                seed = f"RNWF11 application {GMR}".encode()
                head = seed.ljust(256, b"\xff")
                img = bytearray(head)
                n = 0
                while len(img) < APP_IMAGE_SIZE:
                    img += hashlib.sha256(seed + n.to_bytes(4, "big")).digest()
                    n += 1
            self._image = bytes(img[:APP_IMAGE_SIZE]).ljust(APP_IMAGE_SIZE, b"\xff")
        return self._image

    # ================================================================== AZURE (29)
    @command("+AZUREC", Form.EXEC, family="azure", doc="Read the Azure configuration (1 DEVICE_TEMPLATE)")
    @command("+AZUREC", Form.WRITE, Int("ID"), Str("VAL", quoted=None, optional=True), family="azure",
             doc="1 DEVICE_TEMPLATE: the model id (DTMI) sent at DPS registration and to the hub")
    async def azurec(self, ctx, pid: int | None = None, val: Any = None) -> None:
        self._cfg(ctx, "AZUREC", self.AZUREC, self.cfg["AZUREC"], pid, val)

    @command("+MQTTCONN", Form.EXEC, family="mqtt", doc="Connect (or, when connected, report +MQTTCONN:1)")
    @command("+MQTTCONN", Form.WRITE, Int("CLEAN", 0, 1), family="mqtt",
             doc="Connect; with MQTTC 10 (Azure) 1 and a DPS username the module registers with Azure DPS first, "
                 "then connects to the assigned hub")
    async def mqttconn(self, ctx, clean: int | None = None) -> None:
        c = self.cfg["MQTTC"]
        if clean is None or self.mqtt_state != 0 or c[10] != 1 or not DPS_USER.match(sfx(c[4])):
            await super().mqttconn(ctx, clean)
            return
        self.need_link()
        if not c[1]:
            raise self.fail(E_STATE, "no broker configured")
        tls, sni = self._tls_context(c[7], sfx(c[1])) if c[7] else (None, None)
        self.mqtt_state = 1
        ctx.ok()
        self.module.spawn(self._azure_provision(clean, tls, sni))

    async def _azure_provision(self, clean: int, tls, sni) -> None:
        """Azure DPS over MQTT (the topics Azure documents), then the hub connection."""
        from atemu.net.mqtt import MqttSession
        c = self.cfg["MQTTC"]
        regid = sfx(c[3])
        inbox: asyncio.Queue = asyncio.Queue()
        dps = MqttSession(client_id=regid, host=sfx(c[1]), port=c[2], resolver=self.module.resolver, tls=tls,
                          server_hostname=sni, keepalive=c[6], clean_session=True, username=sfx(c[4]),
                          password=c[5] or None, on_message=lambda t, p, q, r, m: inbox.put_nowait((t, p)))
        timeout = float(self.option("dps_timeout", 30.0))
        result = None
        try:
            rc = await dps.connect()
            if rc != 0:
                self.urc(f"+MQTTCONNACK:0,{rc}")
                raise NetError("refused", f"DPS refused the connection ({rc})")
            await dps.subscribe([("$dps/registrations/res/#", 1)], timeout=self.ack_timeout)
            body: dict = {"registrationId": regid}
            if self.cfg["AZUREC"][1]:
                body["payload"] = {"modelId": sfx(self.cfg["AZUREC"][1])}
            rid = 1
            await dps.publish(f"$dps/registrations/PUT/iotdps-register/?$rid={rid}", json.dumps(body).encode(), qos=1,
                              timeout=self.ack_timeout)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while result is None:
                topic, payload = await asyncio.wait_for(inbox.get(), max(0.1, deadline - loop.time()))
                m = re.match(r"\$dps/registrations/res/(\d+)/\?(.*)$", topic)
                if not m:
                    continue
                status, query = int(m.group(1)), urllib.parse.parse_qs(m.group(2))
                doc = json.loads(payload or b"{}")
                if not isinstance(doc, dict):
                    raise ValueError(f"DPS answered {doc!r}")
                if status >= 300:
                    raise NetError("refused", f"DPS answered {status}: {doc}")
                if doc.get("status") == "assigned":
                    result = doc.get("registrationState") or {}
                    break
                if doc.get("status") not in ("assigning", None) or "operationId" not in doc:
                    raise NetError("refused", f"DPS status {doc.get('status')!r}")
                wait = min(float((query.get("retry-after") or ["3"])[0]), float(self.option("dps_poll_max", 3.0)))
                await asyncio.sleep(wait)
                rid += 1
                await dps.publish(f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}"
                                  f"&operationId={doc['operationId']}", b"", qos=1, timeout=self.ack_timeout)
        except Exception as e:                       # whatever DPS does, the module reports +MQTTCONN:0
            log.info("Azure DPS failed: %s", e)
            result = None
        finally:
            try:
                await asyncio.wait_for(dps.disconnect(), 2)
            except Exception:
                dps.close()
        self.mqtt_state = 0
        hub, device = (result or {}).get("assignedHub"), (result or {}).get("deviceId")
        if not hub or not device:
            self.urc("+MQTTCONN:0")
            return
        # the hub: MQTTC 1 and 4 now name it (AT+MQTTC=4 shows the hub username, as the OOB demo reads it)
        user = f"{hub}/{device}/?api-version={HUB_API_VERSION}"
        if self.cfg["AZUREC"][1]:
            user += "&model-id=" + urllib.parse.quote(sfx(self.cfg["AZUREC"][1]), safe=":;")
        c[1], c[3], c[4] = hub.encode(), device.encode(), user.encode()
        try:
            await super().mqttconn(_Quiet(), clean)
        except CmdError as e:
            log.info("Azure hub connect: %s", e)
            self.urc("+MQTTCONN:0")

    # ================================================================== IOMGR (30)
    def _pin(self, pin: int) -> dict:
        p = self.pins.get(pin)
        if p is None:
            raise CmdError("param", message=f"pin {pin} is not configured (AT+IOCFG)")
        return p

    @command("+IOCFG", Form.WRITE, Int("PIN", 0, NUM_PINS - 1), Int("TYPE", 0, 2), Int("DIR", 0, 1, optional=True),
             family="iomgr", doc="Configure a pin: TYPE 0 digital I/O (DIR 0 output, 1 input), 1 ADC, 2 PWM")
    async def iocfg(self, ctx, pin: int, typ: int, direction: int | None = None) -> None:
        if typ == 0 and direction is None:
            raise CmdError("param", param_kind="count", message="a digital pin needs <DIR>")
        if typ != 0 and direction is not None:
            raise CmdError("param", param_kind="count", message="<DIR> is for digital pins")
        old = self.pins.get(pin, {})
        self.pins[pin] = {"type": typ, "dir": direction, "value": old.get("value", 0) if direction == 0 else 0,
                          "pullup": old.get("pullup", 0)}

    @command("+DIGRD", Form.WRITE, Int("PIN", 0, NUM_PINS - 1), family="iomgr",
             doc="Read a digital pin: +DIGRD:<PIN>,<0|1>")
    async def digrd(self, ctx, pin: int) -> None:
        p = self._pin(pin)
        if p["type"] != 0:
            raise CmdError("param", message=f"pin {pin} is not a digital pin")
        ctx.info(f"+DIGRD:{pin},{self.pin_level(pin)}")

    @command("+DIGWR", Form.WRITE, Int("PIN", 0, NUM_PINS - 1), Int("VALUE", 0, 1), family="iomgr",
             doc="Drive a digital output pin")
    async def digwr(self, ctx, pin: int, value: int) -> None:
        p = self._pin(pin)
        if p["type"] != 0 or p["dir"] != 0:
            raise CmdError("param", message=f"pin {pin} is not a digital output")
        p["value"] = value

    @command("+DIGPU", Form.WRITE, Int("PIN", 0, NUM_PINS - 1), Int("PULLUP", 0, 1), family="iomgr",
             doc="Pull-up on (1) or off (0) on a digital pin")
    async def digpu(self, ctx, pin: int, pullup: int) -> None:
        p = self._pin(pin)
        if p["type"] != 0:
            raise CmdError("param", message=f"pin {pin} is not a digital pin")
        p["pullup"] = pullup

    @command("+ADCRD", Form.WRITE, Int("PIN", 0, NUM_PINS - 1), family="iomgr",
             doc="Read an ADC channel: OK, then +ADCRDVAL:<value 0-4095>,<channel>")
    async def adcrd(self, ctx, pin: int) -> None:
        p = self.pins.get(pin)
        if p is not None and p["type"] != 1:
            raise CmdError("param", message=f"pin {pin} is not an ADC pin")
        ctx.ok()
        self.urc(f"+ADCRDVAL:{self.adc_value(pin)},{pin}")

    def adc_value(self, channel: int) -> int:
        """What the ADC converts on ``channel`` (12 bits): ``drive_adc``, the world option rnwf11.adc
        {channel: value}, else 0."""
        if channel in self.adc_driven:
            return self.adc_driven[channel]
        world = self.option("adc") or {}
        return max(0, min(4095, int(world.get(str(channel), world.get(channel, 0)))))

    def drive_adc(self, channel: int, value: int | None) -> None:
        """Put ``value`` (0-4095) on ADC ``channel`` (None: back to the world option)."""
        if value is None:
            self.adc_driven.pop(channel, None)
        else:
            self.adc_driven[channel] = max(0, min(4095, int(value)))

    @staticmethod
    def _word(text: str, what: str) -> int:
        try:
            v = int(text.strip(), 0)
        except ValueError:
            raise CmdError("param", message=f"<{what}> must be a number (0x.... or decimal)") from None
        if not 0 <= v <= 0xFFFF:
            raise CmdError("param", message=f"<{what}> out of range (0-0xFFFF)")
        return v

    @command("+PWMCFG", Form.WRITE, Int("PWM_MOD", 1, 4), Str("PRD", quoted=False, min_len=1, max_len=8),
             family="iomgr", doc="Set the period of output compare module 1-4 (timer ticks, 0x0000-0xFFFF, 25 MHz)")
    async def pwmcfg(self, ctx, mod: int, period: str) -> None:
        prd = self._word(period, "PRD")
        if prd == 0:
            raise CmdError("param", message="<PRD> 0")
        pwm = self.pwm.setdefault(mod, {"period": 0, "duty": 0, "running": False})
        pwm["period"] = prd
        if pwm["duty"] > prd:
            pwm["duty"] = prd

    @command("+PWMSTART", Form.WRITE, Int("PWM_MOD", 1, 4), Str("DUTY", quoted=False, min_len=1, max_len=8),
             family="iomgr", doc="Set the duty cycle (ticks, at most the period) and start the output")
    async def pwmstart(self, ctx, mod: int, duty: str) -> None:
        pwm = self.pwm.get(mod)
        if pwm is None:
            raise CmdError("param", message=f"PWM module {mod} has no period (AT+PWMCFG)")
        d = self._word(duty, "DUTY")
        if d > pwm["period"]:
            raise CmdError("param", message="<DUTY> over the period")
        pwm.update(duty=d, running=True)

    @command("+PWMSTOP", Form.WRITE, Int("PWM_MOD", 1, 4), family="iomgr", doc="Stop the output of a PWM module")
    async def pwmstop(self, ctx, mod: int) -> None:
        pwm = self.pwm.get(mod)
        if pwm is None:
            raise CmdError("param", message=f"PWM module {mod} is not configured")
        pwm["running"] = False

    def pwm_output(self, mod: int) -> dict | None:
        """What a scope on output compare module ``mod`` sees: frequency (Hz) and duty (%), or None."""
        pwm = self.pwm.get(mod)
        if pwm is None or not pwm["running"]:
            return None
        return {"frequency_hz": PWM_CLOCK / pwm["period"], "duty_percent": 100.0 * pwm["duty"] / pwm["period"]}

    def pin_level(self, pin: int) -> int:
        """An output reads back what was written; an input reads what drives it (``drive_pin`` or the
        world option rnwf11.pins {pin: level}), else its pull-up (1) or 0."""
        p = self.pins[pin]
        if p["dir"] == 0:
            return p["value"]
        if pin in self.driven:
            return self.driven[pin]
        world = self.option("pins") or {}
        if str(pin) in world or pin in world:
            return int(world.get(str(pin), world.get(pin)))
        return 1 if p["pullup"] else 0

    def drive_pin(self, pin: int, level: int | None) -> None:
        """What the outside world puts on an input pin (None: nothing, the pull-up decides)."""
        if level is None:
            self.driven.pop(pin, None)
        else:
            self.driven[pin] = int(bool(level))


class Rnwf11(Rnwf11Commands, Rnwf02):
    """RNWF11: the RNWF02 AT interface with model RNWF11 and the RNWF11-only modules."""
    name = "rnwf11"
    aliases = ("rnwf11pc",)
    summary = "Microchip RNWF11 Wi-Fi AT firmware (the RNWF02 AT set with mDNS, ECC608, Azure DPS, IOMGR)"
    model = "RNWF11"
    option_prefix = "rnwf11"
    module_ids = RNWF11_MODULE_IDS
    SI_FILTERS = 0x03          # the RNWF11 guide's +SI lists Wi-Fi memory and packet statistics only
    deviations = DEVIATIONS + [
        "RNWF11: no WPROV and no DI (the RNWF11 guide has neither; 26 is ECC); module ids 21 MDNS, 26 ECC, 27 TBL, "
        "28 READAPPIMAGE, 29 AZURE, 30 IOMGR.",
        "MDNS: a real mDNS responder (A, PTR, SRV, TXT) on 224.0.0.251 joined on rnwf11.mdns_iface (default "
        "127.0.0.1) while MDNSC ENABLED and the station has an address; TXT is one entry.",
        "ECC: an emulated ATECC608 per device type with real P-256 keys and root/signer/device certificates in the "
        "state folder; certificates are read in pieces (+ECCRDCERT:<total>,<remaining>,<data>), PEM with \\n, the "
        "root as [HEX] DER; AT+ECCRDSLOT answers +ECCRDCERT:<len>,\"<data>\" as the guide's example and the host "
        "drivers (rnwf11.eccrdslot_prefix); TLSC id 8 makes TLS use the device certificate and key.",
        "AZURE: with MQTTC 10 = 1 and a DPS user name, AT+MQTTCONN=1 registers with Azure DPS over MQTT, then "
        "connects to the assigned hub (MQTTC 1, 3, 4 show it); the DPS exchange prints nothing.",
        "TBL: OK, then the bootloader (AT ignored, no DFU protocol) for rnwf11.bootloader_time seconds, then +BOOT.",
        "After a hardware reset the bootloader answers the host's 0xAA (start the application) or 0xA7 (stay) with "
        "0x50, as Microchip's RNWF11 host code expects; without either the application starts after "
        "rnwf11.bootloader_wait seconds (default 3). Power-up and AT+RST start it at once.",
        "+WSTAAIP carries the IPv4 address only (RNWF11 host code takes every +WSTAAIP as IPv4 ready); "
        "rnwf11.ipv6_aip: true adds the link-local one first, as rnwf02.",
        "READAPPIMAGE: '#', the bytes, a checksum byte (one's complement of their sum), OK (as Microchip's OTA demo "
        "reads it); the image is rnwf11.app_image or a generated one.",
        "IOMGR: AT+IOCFG TYPE 0 digital, 1 ADC, 2 PWM and DIR 0 output, 1 input (the guide's example); input "
        "levels and ADC values come from the world (rnwf11.pins, rnwf11.adc, drive_pin, drive_adc).",
    ]
    families = tuple(f for f in Rnwf02.families if f not in ("wprov", "di")) + (
        "mdns", "ecc", "tbl", "readappimage", "azure", "iomgr")
    world_options = dict(Rnwf02.world_options, **{
        "mdns_iface": "interface address the mDNS responder joins 224.0.0.251 on (default 127.0.0.1)",
        "mdns_port": "UDP port of the mDNS responder (default 5353)",
        "eccrdslot_prefix": "AT+ECCRDSLOT answers +ECCRDCERT:... as the guide's example and host drivers (default) "
                            "or +ECCRDSLOT:... (the guide's response table)",
        "bootloader_time": "seconds the module stays in its bootloader after AT+TBL (or the host's 0xA7 after a "
                           "hardware reset) before +BOOT (default 5)",
        "bootloader_wait": "seconds the bootloader waits for the host's 0xAA/0xA7 after a hardware reset before it "
                           "starts the application by itself (default 3)",
        "app_image": "file whose bytes AT+READAPPIMAGE reads from 0x90000000 (default: a generated 1 MiB image)",
        "dps_timeout": "seconds the Azure DPS registration may take (default 30)",
        "dps_poll_max": "longest wait between DPS status polls, seconds (default 3; DPS's retry-after if shorter)",
        "pins": "levels on input pins, {pin: 0|1} (AT+DIGRD)",
        "adc": "values on ADC channels, {channel: 0-4095} (AT+ADCRD; default 0)",
    })
    urcs = [u for u in Rnwf02.urcs if u.family not in ("wprov",)] + [
        UrcSpec("+ADCRDVAL", "+ADCRDVAL:<ADCRDVAL>,<ADDCH>", "the value AT+ADCRD converted (12 bits) and its channel", "iomgr")]

    MDNSC = {1: _P("ENABLED", "int", 0, 0, 1), 2: _P("STARTED", "int", 0, 0, 1),
             3: _P("NAME", "str", b"", max_len=32), 4: _P("TYPE", "str", b"", max_len=32),
             5: _P("PORT", "int", 80, 0, 65535), 6: _P("TXT", "str", b"", max_len=255)}
    AZUREC = {1: _P("DEVICE_TEMPLATE", "str", b"", max_len=128)}
    # READ_THRESHOLD is 128 by default on RNWF11 (the guide's Appendix A.5 "MQTT Buffer Length Handling")
    MQTTC = {**Rnwf02.MQTTC, 4: _P("USERNAME", "str", b"", max_len=256), 9: _P("READ_THRESHOLD", "int", 128, 0, 4096),
             10: _P("AZURE_DPS", "int", 0, 0, 1)}
    TLSC = dict(sorted({**Rnwf02.TLSC, 8: _P("USE_ECC608", "int", 0, 0, 1)}.items()))
    CONFIG_TABLES = Rnwf02.CONFIG_TABLES + ("MDNSC", "AZUREC")

    #: RNWF11 host code (Harmony and 8-bit, "feature additions from FW v2.0.0" only in the RNWF02
    #: code) takes every +WSTAAIP as "IPv4 ready": the RNWF11 sends the IPv4 one only
    IPV6_AIP = False
    #: the bootloader's handshake after a hardware reset (RNWF11 host code: BL_CMD_ENTER_APP 0xAA,
    #: BL_CMD_ENTER_BTL 0xA7, answered BL_RESP_OK 0x50)
    BL_ENTER_APP, BL_ENTER_BTL, BL_OK = 0xAA, 0xA7, 0x50

    def __init__(self, module):
        super().__init__(module)
        self.in_dfu = False
        self._mdns = None
        self._ecc: dict[str, SecureElement] = {}
        self.ecc_devtype = 1
        self._cert_pos: dict[int, int] = {}
        self._image: bytes | None = None
        self.pins: dict[int, dict] = {}
        self.driven: dict[int, int] = {}
        self.adc_driven: dict[int, int] = {}
        self.pwm: dict[int, dict] = {}

    # ================================================================== bootloader
    async def boot(self) -> None:
        """After a hardware reset the RNWF11 starts in its bootloader, which waits for the host's
        byte: 0xAA starts the application (+BOOT follows), 0xA7 keeps the bootloader (for a firmware
        update, not emulated: after rnwf11.bootloader_time it starts the application); both are
        answered 0x50. Without a byte the application starts after rnwf11.bootloader_wait seconds.
        Power-up and AT+RST start the application at once."""
        if self.module.boot_cause != "pin":
            await super().boot()
            return
        self.raw_input = True
        self.module.spawn(self._bootloader_timeout(float(self.option("bootloader_wait", 3.0)), dfu=False))

    def take_raw(self, data: bytes) -> bytes:
        for b in data:                       # the bootloader reads single bytes; others are dropped
            if b in (self.BL_ENTER_APP, self.BL_ENTER_BTL) and not self.in_dfu:
                self.module.write(bytes([self.BL_OK]))
                if b == self.BL_ENTER_APP:
                    self._start_application()
                    break
                self.in_dfu = True
                self.module.spawn(self._bootloader_timeout(float(self.option("bootloader_time", 5.0)), dfu=True))
        return b""

    def _start_application(self) -> None:
        if self.raw_input:
            self.raw_input = False
            self.module.spawn(super().boot())

    async def _bootloader_timeout(self, seconds: float, dfu: bool) -> None:
        await asyncio.sleep(seconds)
        if self.in_dfu == dfu:               # the wait for the host's byte ends unless it asked for DFU
            self._start_application()

    async def shutdown(self) -> None:
        if self._mdns is not None:
            self._mdns.close()
            self._mdns = None
        await super().shutdown()

    def snapshot(self) -> dict:
        snap = super().snapshot()
        snap["mdns"] = {"started": self._mdns is not None, "answered": self._mdns.answered if self._mdns else 0}
        snap["pins"] = {str(k): dict(v, level=self.pin_level(k) if v["type"] == 0 else None)
                        for k, v in self.pins.items()}
        snap["pwm"] = {str(m): dict(v, output=self.pwm_output(m)) for m, v in self.pwm.items()}
        return snap


Rnwf11.commands = NumericNames(Rnwf11.commands)
