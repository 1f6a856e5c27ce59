"""Building ``ssl.SSLContext`` objects from what an AT module was given.

Certificates and keys arrive as PEM *or* DER ``bytes`` (as uploaded through
AT commands) or as a file path ``str``.  All problems with that material are
reported as ``NetError("invalid")`` with a message saying what was wrong.

Building a context is synchronous and cheap (it only parses the given data
and, for a path, reads a small local file); it does no network I/O.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from pathlib import Path

from .errors import NetError

__all__ = [
    "client_context",
    "server_context",
    "load_material",
    "is_pem",
    "to_pem_certs",
    "X509_V_FLAG_NO_CHECK_TIME",
]

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME (not exported by Python's ssl module).
#: Setting it in ``SSLContext.verify_flags`` makes OpenSSL skip the
#: notBefore/notAfter checks while still verifying signatures, chain and name.
X509_V_FLAG_NO_CHECK_TIME = 0x200000

_PEM_MARK = b"-----BEGIN "


def is_pem(data: bytes) -> bool:
    """True if ``data`` looks like PEM (contains a ``-----BEGIN`` line)."""
    return _PEM_MARK in data


def load_material(value: bytes | bytearray | str | os.PathLike, what: str) -> bytes:
    """Return raw bytes for certificate/key material: bytes are returned as is;
    a str starting with ``-----BEGIN`` is PEM text; any other str/PathLike is a
    file path that is read.  Raises ``NetError("invalid")``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        data = value.encode("ascii", "replace")
    elif isinstance(value, (str, os.PathLike)):
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise NetError("invalid", f"cannot read {what} file {value!s}: {exc.strerror or exc}") from exc
    else:
        raise NetError("invalid", f"{what} must be bytes or a file path, not {type(value).__name__}")
    if not data.strip():
        raise NetError("invalid", f"{what} is empty")
    return data


def to_pem_certs(data: bytes, what: str = "certificate") -> str:
    """Return PEM text for certificate data given as PEM (one or several
    certificates) or DER (exactly one certificate).  Raises NetError("invalid")."""
    if is_pem(data):
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise NetError("invalid", f"{what}: PEM data is not ASCII") from exc
        if "-----BEGIN CERTIFICATE-----" not in text and "-----BEGIN TRUSTED CERTIFICATE-----" not in text:
            raise NetError("invalid", f"{what}: PEM data contains no CERTIFICATE block")
        return text
    try:
        from cryptography import x509

        x509.load_der_x509_certificate(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means bad DER
        raise NetError("invalid", f"{what}: neither PEM nor a valid DER certificate ({exc})") from exc
    return ssl.DER_cert_to_PEM_cert(data)


def _key_to_pem(data: bytes, password: bytes | None, what: str) -> tuple[bytes, bytes | None]:
    """Return (PEM key bytes, password to give OpenSSL).  PEM keys are passed
    through untouched (encrypted keys stay encrypted); DER keys are parsed with
    ``cryptography`` and re-serialised as unencrypted PKCS#8 PEM."""
    if is_pem(data):
        if b"PRIVATE KEY-----" not in data:
            raise NetError("invalid", f"{what}: PEM data contains no PRIVATE KEY block")
        return data, password
    try:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_der_private_key(data, password=password)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    except TypeError as exc:  # password missing / given for an unencrypted key
        raise NetError("invalid", f"{what}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001
        raise NetError("invalid", f"{what}: neither PEM nor a valid DER private key ({exc})") from exc
    return pem, None


def _load_cert_chain(
    ctx: ssl.SSLContext,
    cert: bytes | str,
    key: bytes | str | None,
    key_password: bytes | None,
) -> None:
    """Load a certificate (chain) and key into ``ctx`` via private temp files.

    ``SSLContext.load_cert_chain`` only accepts file names, so the material is
    written to a fresh 0700 directory as 0600 files that are deleted as soon
    as OpenSSL has read them.
    """
    cert_pem = to_pem_certs(load_material(cert, "certificate"), "certificate").encode("ascii")
    key_pem: bytes | None = None
    password = key_password
    if key is not None:
        key_pem, password = _key_to_pem(load_material(key, "private key"), key_password, "private key")
    elif b"PRIVATE KEY-----" not in cert_pem:
        # no separate key and the certificate PEM does not embed one either
        raise NetError("invalid", "certificate given without a private key")

    tmpdir = tempfile.mkdtemp(prefix="atemu-tls-")  # mode 0700
    try:
        cert_path = os.path.join(tmpdir, "cert.pem")
        _write_private(cert_path, cert_pem)
        key_path = None
        if key_pem is not None:
            key_path = os.path.join(tmpdir, "key.pem")
            _write_private(key_path, key_pem)
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as exc:
            raise NetError("invalid", f"cannot load certificate/key: {exc.reason or exc}") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise NetError("invalid", f"cannot load certificate/key: {exc}") from exc
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _load_ca(ctx: ssl.SSLContext, ca: bytes | str) -> None:
    data = load_material(ca, "CA certificate")
    try:
        if is_pem(data):
            ctx.load_verify_locations(cadata=to_pem_certs(data, "CA certificate"))
        else:
            to_pem_certs(data, "CA certificate")  # validates the DER
            ctx.load_verify_locations(cadata=data)
    except ssl.SSLError as exc:
        raise NetError("invalid", f"cannot load CA certificate: {exc.reason or exc}") from exc


def _apply_common(
    ctx: ssl.SSLContext,
    min_version: ssl.TLSVersion | None,
    max_version: ssl.TLSVersion | None,
    ciphers: str | None,
    alpn: list[str] | None,
) -> None:
    try:
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
    except (ValueError, ssl.SSLError) as exc:
        raise NetError("invalid", f"unsupported TLS version setting: {exc}") from exc
    if ciphers:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise NetError("invalid", f"no usable cipher in {ciphers!r}") from exc
    if alpn:
        try:
            ctx.set_alpn_protocols(list(alpn))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise NetError("invalid", f"bad ALPN list {alpn!r}: {exc}") from exc


def client_context(
    *,
    ca: bytes | str | None = None,
    cert: bytes | str | None = None,
    key: bytes | str | None = None,
    key_password: bytes | None = None,
    verify: bool = True,
    check_hostname: bool = True,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    ignore_time: bool = False,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """Build a TLS client context.

    ``ca``/``cert``/``key``: PEM or DER bytes, PEM text, or a file path.
    ``verify=False`` disables all certificate checks (CERT_NONE, no hostname
    check; ``ca`` is then ignored).  ``verify=True`` without ``ca`` trusts the
    system default CAs.  ``check_hostname`` applies only when verifying.  The
    client certificate is offered only when ``cert`` is given.
    ``ignore_time=True`` sets OpenSSL's X509_V_FLAG_NO_CHECK_TIME: validity
    dates are not checked, everything else still is.  ``ciphers`` is an
    OpenSSL cipher string (affects TLS <= 1.2 only; TLS 1.3 suites are fixed).
    ``alpn`` is an optional list of ALPN protocol names.
    Raises ``NetError("invalid")`` for unreadable or malformed material.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.check_hostname = bool(check_hostname)
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca is not None:
            _load_ca(ctx, ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if ignore_time:
            ctx.verify_flags = ctx.verify_flags | X509_V_FLAG_NO_CHECK_TIME
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if key is not None and cert is None:
        raise NetError("invalid", "private key given without a certificate")
    if cert is not None:
        _load_cert_chain(ctx, cert, key, key_password)
    _apply_common(ctx, min_version, max_version, ciphers, alpn)
    return ctx


def server_context(
    cert: bytes | str,
    key: bytes | str | None,
    ca: bytes | str | None = None,
    require_client_cert: bool = False,
    *,
    key_password: bytes | None = None,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """Build a TLS server context from a certificate (chain) and key.

    With ``ca`` given, client certificates are requested and, when
    presented, verified against it (CERT_OPTIONAL); ``require_client_cert``
    makes one mandatory (CERT_REQUIRED, needs ``ca``).  Without ``ca`` no
    client certificate is requested.  Raises ``NetError("invalid")``.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load_cert_chain(ctx, cert, key, key_password)
    if ca is not None:
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise NetError("invalid", "require_client_cert needs a CA to verify client certificates")
    else:
        ctx.verify_mode = ssl.CERT_NONE
    _apply_common(ctx, min_version, max_version, ciphers, alpn)
    return ctx
