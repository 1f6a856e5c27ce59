"""microchip-winc general commands (manual ch. 3): ATE, GMI/GMM/GMR, LOWPOWER, READCERT, LOADCERT."""
from __future__ import annotations

import datetime as _dt

from atemu.files import FsError
from atemu.grammar import Data, DataOverflow, Form, Int, Str
from atemu.module import Ctx
from atemu.profile import CmdError, command

from .common import E_CERT, MAX_DATA, MAC, fmt_str, log, text_arg


class GeneralCommands:
    """Mixin of :class:`MicrochipWinc`: identity, echo, low power, certificate store."""

    @command("E", Form.WRITE, Int("N", 0, 1), family="general", doc="ATE0 echo off, ATE1 echo on")
    async def ate(self, ctx: Ctx, n: int) -> None:
        self.module.engine.echo = bool(n)

    @command("+GMI", Form.EXEC, family="general", doc="Manufacturer identification")
    async def gmi(self, ctx: Ctx) -> None:
        ctx.info('+GMI:"Microchip"')

    @command("+GMM", Form.EXEC, family="general", doc="Model identification")
    async def gmm(self, ctx: Ctx) -> None:
        ctx.info('+GMM:"WINC1500"')

    @command("+GMR", Form.EXEC, family="general", doc="Revision: chip, firmware, driver, rollback firmware")
    async def gmr(self, ctx: Ctx) -> None:
        prefix = str(self.opts.get("microchip-winc.gmr_prefix", "+GMR")).strip() or "+GMR"
        ctx.info(f'{prefix}:"15x0","19.6.1","19.6.1","19.5.3"')

    @command("+LOWPOWER", Form.EXEC, family="general", doc="Enter low power mode (mode 4)")
    @command("+LOWPOWER", Form.WRITE, Int("MODE", 0, 4), family="general")
    async def lowpower(self, ctx: Ctx, mode: int = 4) -> None:
        if mode != 4:
            raise CmdError("param", message="low power modes 0-3 are placeholders")
        ctx.ok()
        await self.module.drain_output()
        await self._sleep()

    async def _sleep(self) -> None:
        self.asleep = True
        self.module.frozen = True
        echo = self.module.engine.echo
        self.module.engine.reset()
        self.module.engine.echo = echo
        self._stop_sta(silent=True)
        await self._stop_prov()
        self._stop_ap(silent=True)
        for s in list(self.socks.values()):
            self._close_sock(s)
        self.socks.clear()
        await self._mqtt_drop()

    def wake(self) -> None:
        """Wake the module from AT+LOWPOWER (the wake GPIO). Call on the module's loop."""
        self.asleep = False
        self.module.frozen = False
        echo = self.module.engine.echo
        self.module.engine.reset()
        self.module.engine.echo = echo

    @command("+READCERT", Form.EXEC, family="general", doc="Read certificate 1 device (TNG), 2 root, 3 last loaded")
    @command("+READCERT", Form.WRITE, Int("TYPE", 1, 3), family="general")
    async def readcert(self, ctx: Ctx, typ: int = 1) -> None:
        if typ == 3:
            name = self.module.settings.get("microchip.last_cert")
            try:
                data = self.store.read(name) if name else None
            except FsError:
                data = None
            if data is None:
                raise self.fail(E_CERT, "no certificate loaded")
        else:
            data = self._tng(typ)
        ctx.info(f"+READCERT:{typ},{len(data)},{fmt_str(data)}")

    def _tng(self, typ: int) -> bytes:
        name = "device.der" if typ == 1 else "root.der"
        try:
            return self.tng.read(name)
        except FsError:
            pass
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        now = _dt.datetime.now(_dt.timezone.utc)
        rkey = ec.generate_private_key(ec.SECP256R1())
        rname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Microchip Technology Inc (atemu)"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "Crypto Authentication Root CA 002")])
        root = (x509.CertificateBuilder().subject_name(rname).issuer_name(rname).public_key(rkey.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
                .not_valid_after(now + _dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(rkey, hashes.SHA256()))
        dkey = ec.generate_private_key(ec.SECP256R1())
        dname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Microchip Technology Inc (atemu)"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "sn0123" + MAC.replace(":", ""))])
        dev = (x509.CertificateBuilder().subject_name(dname).issuer_name(rname).public_key(dkey.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
               .not_valid_after(now + _dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .sign(rkey, hashes.SHA256()))
        self.tng.write("root.der", root.public_bytes(serialization.Encoding.DER))
        self.tng.write("device.der", dev.public_bytes(serialization.Encoding.DER))
        return self.tng.read(name)

    @command("+LOADCERT", Form.WRITE, Int("LEN", 0, MAX_DATA), Str("NAME", quoted=True, min_len=1, max_len=64),
             family="general", doc="Load a PEM or DER certificate/key into the store (binary phase: '#' then LEN bytes or until +++)")
    async def loadcert(self, ctx: Ctx, length: int, name: str) -> str | None:
        name = text_arg(ctx, 1)   # the name TLSC will use (both take [hex] byte for byte)
        try:
            self.store.path(name)
        except FsError:
            raise CmdError("param", message="bad certificate name") from None
        ev = await ctx.read_data(length or None, marker=b"#", terminator=b"+++", max_len=MAX_DATA + 2,
                                 idle=self.data_timeout)
        if isinstance(ev, DataOverflow):
            await self._skip_to_escape(ctx, ev.payload)
        data = ev.payload
        complete = isinstance(ev, Data) and (ev.reason == "length" if length else ev.reason == "terminator")
        ok = complete and len(data) <= MAX_DATA and self._valid_material(data)
        if ok:
            try:
                self.store.write(name, data)
            except FsError as e:
                log.info("certificate store: %s", e)
                ok = False
        if not ok:
            ctx.info("+LOADCERT:1")
            raise self.fail(E_CERT, "certificate rejected")
        self.module.settings.set("microchip.last_cert", name)
        ctx.info("+LOADCERT:0")
        return None

    async def _skip_to_escape(self, ctx, seen: bytes) -> None:
        """After an overflow in +++ mode, discard the rest of the host's data up to its +++.

        The +++ may straddle the overflow point (``seen`` ends with ``+`` or ``++``). Gives up
        after ``data_timeout`` seconds of silence, like the data phase itself."""
        plus = min(2, len(seen) - len(seen.rstrip(b"+")))
        while plus:
            ev = await ctx.read_data(1, idle=self.data_timeout)
            if not isinstance(ev, Data) or ev.reason != "length":
                return
            plus = plus + 1 if ev.payload == b"+" else 0
            if plus == 3:
                return
        await ctx.read_data(None, terminator=b"+++", idle=self.data_timeout)

    @staticmethod
    def _valid_material(data: bytes) -> bool:
        if not data:
            return False
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        for fn in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
            try:
                fn(data)
                return True
            except Exception:
                pass
        if b"-----BEGIN" in data and b"PRIVATE KEY-----" in data:
            return True
        try:
            serialization.load_der_private_key(data, None)
            return True
        except TypeError:
            return True   # a valid but encrypted DER key: TLSC id 4 holds its password
        except Exception:
            return False
