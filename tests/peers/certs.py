"""Throw-away PKI for tests (EC P-256, generated with ``cryptography``).

``make_pki(dir)`` writes PEM files and returns a :class:`Pki` whose attributes
are their paths:

* ``ca_cert/ca_key``                   - the trusted test CA
* ``server_cert/server_key``           - server cert from the CA; SANs: the
  requested hostnames + DNS:localhost + IP:127.0.0.1 + IP:::1
* ``client_cert/client_key``           - client cert from the CA (clientAuth,
  CN "thing_0001"); ``client_key_encrypted`` is the same key encrypted with
  ``key_password``
* ``expired_cert/expired_key``         - server cert from the CA whose
  validity ended yesterday (same SANs)
* ``other_ca_cert/other_ca_key``       - an unrelated CA
* ``unknown_cert/unknown_key``         - server cert (same SANs) from the other CA
* ``other_client_cert/other_client_key`` - client cert from the other CA

Files are 0644 and the directory 0755 so a broker that drops privileges
(mosquitto) can read them.  Generation takes a few milliseconds.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki", "der", "CLIENT_CN"]

CLIENT_CN = "thing_0001"
KEY_PASSWORD = b"atemu-test-pass"


@dataclass(frozen=True)
class Pki:
    """Paths of the generated PEM files (see module docstring)."""

    directory: Path
    hostnames: tuple[str, ...]
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path
    key_password: bytes
    expired_cert: Path
    expired_key: Path
    other_ca_cert: Path
    other_ca_key: Path
    unknown_cert: Path
    unknown_key: Path
    other_client_cert: Path
    other_client_key: Path

    def der(self, path: Path) -> bytes:
        """DER bytes of a PEM certificate or private key file."""
        return der(path)


def der(path: Path | str) -> bytes:
    """Return the DER encoding of a PEM certificate or private key file
    (keys come out as unencrypted PKCS#8)."""
    data = Path(path).read_bytes()
    if b"CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(data, password=None)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "atemu tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)


def _builder(cn: str, issuer: x509.Name, key, not_before: _dt.datetime, not_after: _dt.datetime, *, ca: bool):
    """What CA and leaf certificates share: names, validity, basic constraints, key usage."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(cn, _name(cn), key, now - _dt.timedelta(days=1), now + _dt.timedelta(days=3650), ca=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    cn: str,
    ca_cert: x509.Certificate,
    ca_key,
    *,
    server: bool,
    hostnames: list[str] | None = None,
    not_before: _dt.datetime | None = None,
    not_after: _dt.datetime | None = None,
):
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        _builder(cn, ca_cert.subject, key, not_before or now - _dt.timedelta(days=1),
                 not_after or now + _dt.timedelta(days=825), ca=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        sans: list[x509.GeneralName] = []
        seen: set[str] = set()
        for h in list(hostnames or []) + ["localhost", "127.0.0.1", "::1"]:
            if h in seen:
                continue
            seen.add(h)
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn.replace("_", "-"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o644)
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    return _write(path, cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key, password: bytes | None = None) -> Path:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))


def make_pki(directory: Path, *, hostnames: list[str] | None = None) -> Pki:
    """Generate the whole test PKI into ``directory`` (created if needed) and
    return the :class:`Pki` of file paths.  ``hostnames`` defaults to
    ``["localhost"]``; they become DNS (or IP) SANs of the server certs."""
    hostnames = list(hostnames) if hostnames else ["localhost"]
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)

    ca_cert, ca_key = _make_ca("atemu test CA")
    other_ca_cert, other_ca_key = _make_ca("atemu other CA")
    server_cert, server_key = _make_leaf(hostnames[0], ca_cert, ca_key, server=True, hostnames=hostnames)
    client_cert, client_key = _make_leaf(CLIENT_CN, ca_cert, ca_key, server=False)
    now = _now()
    expired_cert, expired_key = _make_leaf(
        hostnames[0],
        ca_cert,
        ca_key,
        server=True,
        hostnames=hostnames,
        not_before=now - _dt.timedelta(days=30),
        not_after=now - _dt.timedelta(days=1),
    )
    unknown_cert, unknown_key = _make_leaf(hostnames[0], other_ca_cert, other_ca_key, server=True, hostnames=hostnames)
    other_client_cert, other_client_key = _make_leaf(CLIENT_CN, other_ca_cert, other_ca_key, server=False)

    return Pki(
        directory=d,
        hostnames=tuple(hostnames),
        ca_cert=_write_cert(d / "ca.crt", ca_cert),
        ca_key=_write_key(d / "ca.key", ca_key),
        server_cert=_write_cert(d / "server.crt", server_cert),
        server_key=_write_key(d / "server.key", server_key),
        client_cert=_write_cert(d / "client.crt", client_cert),
        client_key=_write_key(d / "client.key", client_key),
        client_key_encrypted=_write_key(d / "client.enc.key", client_key, KEY_PASSWORD),
        key_password=KEY_PASSWORD,
        expired_cert=_write_cert(d / "expired.crt", expired_cert),
        expired_key=_write_key(d / "expired.key", expired_key),
        other_ca_cert=_write_cert(d / "other_ca.crt", other_ca_cert),
        other_ca_key=_write_key(d / "other_ca.key", other_ca_key),
        unknown_cert=_write_cert(d / "unknown.crt", unknown_cert),
        unknown_key=_write_key(d / "unknown.key", unknown_key),
        other_client_cert=_write_cert(d / "other_client.crt", other_client_cert),
        other_client_key=_write_key(d / "other_client.key", other_client_key),
    )
