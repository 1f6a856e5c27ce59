"""Network error type shared by all atemu network services.

Every failure coming out of :mod:`atemu.net` is a :class:`NetError` whose
``kind`` is one short, stable string.  Vendor profiles translate ``kind`` into
their own AT error codes, so they never have to look at errno values or
``ssl`` exception classes themselves.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import socket
import ssl

__all__ = ["NetError", "KINDS", "classify"]

#: Every valid value of :attr:`NetError.kind`.
KINDS: frozenset[str] = frozenset(
    {
        "dns",  # name could not be resolved
        "dns_timeout",  # resolver did not answer in time
        "refused",  # peer actively refused (TCP RST on SYN, ICMP port unreachable)
        "timeout",  # operation timed out
        "unreachable",  # no route / network or host unreachable
        "reset",  # connection reset by peer (or broken pipe)
        "tls",  # TLS protocol/handshake failure other than verification
        "tls_verify",  # peer certificate verification failed
        "closed",  # operation on a connection that is already closed
        "addrinuse",  # local address/port already in use
        "invalid",  # bad argument / bad certificate or key data
        "perm",  # not permitted (privileges, sysctl)
        "other",  # anything else
    }
)

_DEFAULT_MESSAGES = {
    "dns": "name resolution failed",
    "dns_timeout": "name resolution timed out",
    "refused": "connection refused",
    "timeout": "operation timed out",
    "unreachable": "network unreachable",
    "reset": "connection reset by peer",
    "tls": "TLS failure",
    "tls_verify": "certificate verification failed",
    "closed": "connection is closed",
    "addrinuse": "address already in use",
    "invalid": "invalid argument",
    "perm": "operation not permitted",
    "other": "network error",
}


class NetError(Exception):
    """A network failure with a machine-readable ``kind`` (see :data:`KINDS`)
    and a human-readable ``message``; ``errno`` holds the OS errno when known; ``mid`` the
    message id of the MQTT publish that failed (when the message got one)."""

    def __init__(self, kind: str, message: str | None = None, *, errno: int | None = None,
                 mid: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown NetError kind {kind!r}")
        self.kind = kind
        self.message = message or _DEFAULT_MESSAGES[kind]
        self.errno = errno
        self.mid = mid
        super().__init__(kind, self.message)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __repr__(self) -> str:
        return f"NetError({self.kind!r}, {self.message!r})"


_ERRNO_KINDS: dict[int, str] = {}


def _map(kind: str, *names: str) -> None:
    for name in names:
        value = getattr(_errno, name, None)
        if value is not None:
            _ERRNO_KINDS.setdefault(value, kind)


_map("refused", "ECONNREFUSED")
_map("reset", "ECONNRESET", "EPIPE", "ECONNABORTED")
_map("timeout", "ETIMEDOUT")
_map("unreachable", "ENETUNREACH", "EHOSTUNREACH", "EHOSTDOWN", "ENETDOWN", "ENONET")
_map("addrinuse", "EADDRINUSE")
_map("perm", "EACCES", "EPERM")
_map("closed", "EBADF", "ENOTCONN", "ESHUTDOWN")
_map(
    "invalid",
    "EINVAL",
    "EAFNOSUPPORT",
    "EPROTONOSUPPORT",
    "EADDRNOTAVAIL",
    "EMSGSIZE",
    "EDESTADDRREQ",
    "EISCONN",
    "ENOPROTOOPT",
)


def classify(exc: BaseException, context: str | None = None) -> NetError:
    """Map any exception (OSError errno, ssl error, timeout, gaierror, ...) to a
    :class:`NetError`; a NetError is returned unchanged.  ``context`` (e.g.
    ``"connect 1.2.3.4:80"``) is prefixed to the message."""
    if isinstance(exc, NetError):
        return exc
    prefix = f"{context}: " if context else ""
    err = getattr(exc, "errno", None)
    detail = str(exc) or exc.__class__.__name__

    # Order matters: ssl errors and TimeoutError are OSError subclasses.
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or detail
        return NetError("tls_verify", prefix + reason)
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)
        text = detail if not reason else f"{reason} ({detail})"
        return NetError("tls", prefix + text)
    if isinstance(exc, socket.gaierror):
        if err == getattr(socket, "EAI_AGAIN", object()):
            return NetError("dns", prefix + f"temporary resolver failure: {detail}", errno=err)
        return NetError("dns", prefix + detail, errno=err)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, socket.timeout)):
        return NetError("timeout", prefix + "operation timed out", errno=err)
    if isinstance(exc, ConnectionRefusedError):
        return NetError("refused", prefix + detail, errno=err)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return NetError("reset", prefix + detail, errno=err)
    if isinstance(exc, PermissionError):
        return NetError("perm", prefix + detail, errno=err)
    if isinstance(exc, OSError) and err is not None:
        return NetError(_ERRNO_KINDS.get(err, "other"), prefix + detail, errno=err)
    if isinstance(exc, (ValueError, TypeError, UnicodeError)):
        return NetError("invalid", prefix + detail)
    return NetError("other", prefix + f"{exc.__class__.__name__}: {detail}", errno=err)
