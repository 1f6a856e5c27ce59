"""An emulated ATECC608 secure element (Microchip Trust&GO / TrustFLEX), one per module.

What host code sees of the chip: a 9-byte serial number, the compressed certificate chain (root CA,
signer CA, device) and 16 slots, a configuration zone and an OTP zone. The emulation keeps real
keys: a P-256 root, signer and device key per chip, generated on first use and kept in the module's
state folder, so the chain verifies with any TLS stack and signatures made with the device key
verify against the device certificate. Unlike the real chip the device key lives on disk (the host
emulator's TLS needs it); the module never prints it.

Layout of the ATECC608 (datasheet, DS40001977): configuration zone 128 bytes (serial number at
bytes 0-3 and 8-12), OTP zone 64 bytes, data slots 0-7 of 36 bytes (private keys: neither read
nor written), slot 8 of 416 bytes, slots 9-15 of 72 bytes. Trust&GO ships locked: the
configuration and OTP zones are read-only.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CONFIG, OTP, DATA = 1, 2, 3                  # zone numbers as the RNWF11 AT commands give them
SLOT_SIZES = [36] * 8 + [416] + [72] * 7
KEY_SLOTS = range(0, 8)
ZONE_SIZES = {CONFIG: 128, OTP: 64}
DEVICE, SIGNER, ROOT = 1, 2, 3               # certificate kinds of AT+ECCRDCERT


class SeError(Exception):
    """A request the chip refuses (kind: 'range' bad slot/offset/length, 'locked' read-only zone or
    key slot)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _name(cn: str, org: str = "Microchip Technology Inc (atemu emulated)") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class SecureElement:
    """One chip; its files live in ``folder`` (created on first use)."""

    def __init__(self, folder: Path | str, seed: str = "") -> None:
        self.folder = Path(folder)
        self.seed = seed
        self._keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._certs: dict[int, x509.Certificate] = {}
        self._serial: bytes | None = None
        self._zones: dict | None = None

    # ------------------------------------------------------------------ identity
    def _load(self) -> None:
        if self._serial is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "chip.json"
        if meta.exists():
            info = json.loads(meta.read_text())
            self._serial = bytes.fromhex(info["serial"])
            for k in ("root", "signer", "device"):
                self._keys[k] = serialization.load_pem_private_key((self.folder / f"{k}.key").read_bytes(), None)
            for kind, k in ((ROOT, "root"), (SIGNER, "signer"), (DEVICE, "device")):
                self._certs[kind] = x509.load_pem_x509_certificate((self.folder / f"{k}.crt").read_bytes())
            return
        # a serial like the chip's: 01 23, then 6 bytes, then the lot byte (deterministic per seed)
        digest = hashlib.sha256((self.seed or os.urandom(8).hex()).encode()).digest()
        self._serial = b"\x01\x23" + digest[:7]
        for k in ("root", "signer", "device"):
            self._keys[k] = ec.generate_private_key(ec.SECP256R1())
        sn = self._serial.hex().upper()
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0) - _dt.timedelta(days=1)
        root_name = _name("Crypto Authentication Root CA 002")
        signer_name = _name(f"Crypto Authentication Signer {sn[4:8]}")
        self._certs[ROOT] = self._issue(root_name, root_name, self._keys["root"].public_key(), self._keys["root"],
                                        now, ca=True)
        self._certs[SIGNER] = self._issue(signer_name, root_name, self._keys["signer"].public_key(), self._keys["root"],
                                          now, ca=True)
        self._certs[DEVICE] = self._issue(_name("sn" + sn), signer_name, self._keys["device"].public_key(),
                                          self._keys["signer"], now, ca=False)
        for k in ("root", "signer", "device"):
            path = self.folder / f"{k}.key"
            path.write_bytes(self._keys[k].private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
            os.chmod(path, 0o600)
        for kind, k in ((ROOT, "root"), (SIGNER, "signer"), (DEVICE, "device")):
            (self.folder / f"{k}.crt").write_bytes(self._certs[kind].public_bytes(serialization.Encoding.PEM))
        meta.write_text(json.dumps({"serial": self._serial.hex()}))

    @staticmethod
    def _issue(subject, issuer, public_key, signing_key, now, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
             .serial_number(x509.random_serial_number()).not_valid_before(now)
             .not_valid_after(now + _dt.timedelta(days=365 * 30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca and subject != issuer else None),
                            critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        else:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True)
            b = b.add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return b.sign(signing_key, hashes.SHA256())

    @property
    def serial(self) -> bytes:
        self._load()
        assert self._serial is not None
        return self._serial

    def certificate(self, kind: int) -> x509.Certificate:
        self._load()
        return self._certs[kind]

    def cert_pem(self, kind: int) -> bytes:
        return self.certificate(kind).public_bytes(serialization.Encoding.PEM)

    def cert_der(self, kind: int) -> bytes:
        return self.certificate(kind).public_bytes(serialization.Encoding.DER)

    def tls_identity(self) -> tuple[bytes, bytes]:
        """(device certificate + signer certificate as PEM, device key as PEM) for a TLS client."""
        self._load()
        key = self._keys["device"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption())
        return self.cert_pem(DEVICE) + self.cert_pem(SIGNER), key

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 signature (DER) of ``data`` with the device key."""
        self._load()
        return self._keys["device"].sign(data, ec.ECDSA(hashes.SHA256()))

    # ------------------------------------------------------------------ zones and slots
    def _zones_load(self) -> dict:
        if self._zones is None:
            path = self.folder / "zones.json"
            if path.exists():
                raw = json.loads(path.read_text())
                self._zones = {k: bytearray.fromhex(v) for k, v in raw.items()}
            else:
                config = bytearray(128)
                sn = self.serial
                config[0:4], config[8:13] = sn[0:4], sn[4:9]
                config[4:8] = b"\x00\x00\x60\x03"          # RevNum of an ATECC608B
                config[86], config[87] = 0x00, 0x00       # LockValue / LockConfig: locked
                self._zones = {"config": config, "otp": bytearray(64)}
                for i, size in enumerate(SLOT_SIZES):
                    self._zones[f"slot{i}"] = bytearray(size)
        return self._zones

    def _area(self, zone: int, slot: int, write: bool) -> bytearray:
        if zone not in (CONFIG, OTP, DATA):
            raise SeError("range", "no such zone")
        if not 0 <= slot <= 15:
            raise SeError("range", "slot out of range (0-15)")
        z = self._zones_load()
        if zone == CONFIG:
            if write:
                raise SeError("locked", "the configuration zone is locked")
            return z["config"]
        if zone == OTP:
            if write:
                raise SeError("locked", "the OTP zone is locked")
            return z["otp"]
        if slot in KEY_SLOTS:
            raise SeError("locked", f"slot {slot} holds a private key")
        return z[f"slot{slot}"]

    def read(self, zone: int, slot: int, offset: int, length: int) -> bytes:
        area = self._area(zone, slot, write=False)
        if offset < 0 or length < 0 or offset + length > len(area):
            raise SeError("range", f"offset + length over the {len(area)} bytes of the area")
        return bytes(area[offset:offset + length])

    def write(self, zone: int, slot: int, offset: int, data: bytes) -> None:
        area = self._area(zone, slot, write=True)
        if offset < 0 or offset + len(data) > len(area):
            raise SeError("range", f"offset + length over the {len(area)} bytes of the area")
        area[offset:offset + len(data)] = data
        self.folder.mkdir(parents=True, exist_ok=True)
        zones = self._zones_load()
        (self.folder / "zones.json").write_text(json.dumps({k: v.hex() for k, v in zones.items()}))
