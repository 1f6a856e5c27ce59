"""Host name resolution for emulated modules.

Order of resolution: IP literals -> per-world overrides (``Resolver.hosts``)
-> the host's real resolver (``loop.getaddrinfo``, run in a thread so the
event loop never blocks).  Fault injection (``Resolver.fault``) lets a
control plane simulate a dead DNS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

from .errors import NetError, classify

__all__ = ["Resolver", "is_ip_literal", "ip_family"]


def is_ip_literal(host: str) -> bool:
    """Return True if ``host`` is an IPv4 or IPv6 address literal (IPv6 may
    carry a ``%scope`` suffix and may be wrapped in ``[]``)."""
    return ip_family(host) != 0


def ip_family(host: str) -> int:
    """Return ``socket.AF_INET``/``AF_INET6`` for an IP literal, else 0."""
    if not isinstance(host, str) or not host:
        return 0
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return 0
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _family_ok(ip: str, family: int) -> bool:
    return family in (0, socket.AF_UNSPEC) or ip_family(ip) == family


def _order(ips: Iterable[str]) -> list[str]:
    """Deduplicate preserving order, IPv4 addresses first."""
    seen: list[str] = []
    for ip in ips:
        if ip not in seen:
            seen.append(ip)
    return sorted(seen, key=lambda ip: 0 if ip_family(ip) == socket.AF_INET else 1)


class Resolver:
    """Asynchronous name resolver with runtime-editable overrides and faults.

    ``hosts`` maps hostname -> IP (or a list of IPs, or another hostname used
    as an alias); lookups are case-insensitive and ignore a trailing dot.  The
    dict passed in is used as-is (not copied), so a control plane may share
    and edit it at runtime.  ``fault`` is ``None``, ``"fail"`` (every name
    lookup raises ``NetError("dns")``) or ``"timeout"`` (every name lookup waits
    for the caller's timeout then raises ``NetError("dns_timeout")``).  Faults
    do not affect IP literals, which never need a lookup.
    """

    def __init__(self, hosts: dict[str, str] | None = None):
        self.hosts: dict[str, str] = hosts if hosts is not None else {}
        self.fault: str | None = None

    def _override(self, name: str):
        key = name.rstrip(".").lower()
        for k, v in list(self.hosts.items()):
            if isinstance(k, str) and k.rstrip(".").lower() == key:
                return v
        return None

    async def resolve(self, host: str, *, family: int = 0, timeout: float = 10.0) -> list[str]:
        """Resolve ``host`` to a non-empty list of IP strings (deduplicated,
        IPv4 first), optionally restricted to ``family`` (AF_INET/AF_INET6).
        Raises ``NetError`` kind ``"dns"``, ``"dns_timeout"`` or ``"invalid"``."""
        return await self._resolve(host, family, timeout, depth=0)

    async def resolve_one(self, host: str, *, family: int = 0, timeout: float = 10.0) -> str:
        """Resolve ``host`` and return the preferred (first) address."""
        return (await self.resolve(host, family=family, timeout=timeout))[0]

    async def _resolve(self, host: str, family: int, timeout: float, depth: int) -> list[str]:
        if not isinstance(host, str) or not host.strip():
            raise NetError("invalid", f"empty or invalid host name {host!r}")
        host = host.strip()
        literal = _strip_brackets(host)
        fam = ip_family(literal)
        if fam:
            if not _family_ok(literal, family):
                raise NetError("dns", f"{host} is not an address of the requested family")
            return [literal]

        faults = getattr(self, "faults", None)  # the module's fault registry (emulator/faults.py)
        if faults is not None:
            await faults.before_lookup(host, timeout)
        if self.fault == "fail":
            raise NetError("dns", f"cannot resolve {host}: DNS failure (injected)")
        if self.fault == "timeout":
            await asyncio.sleep(max(0.0, timeout))
            raise NetError("dns_timeout", f"cannot resolve {host}: DNS timeout (injected)")

        override = self._override(host)
        if override is not None:
            values = [override] if isinstance(override, str) else list(override)
            result: list[str] = []
            for value in values:
                if is_ip_literal(value):
                    value = _strip_brackets(value)
                    if _family_ok(value, family):
                        result.append(value)
                elif depth < 8:
                    try:
                        result.extend(await self._resolve(value, family, timeout, depth + 1))
                    except NetError:
                        pass
            if not result:
                raise NetError("dns", f"cannot resolve {host}: override {override!r} has no usable address")
            return _order(result)

        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM),
                timeout,
            )
        except asyncio.TimeoutError:
            raise NetError("dns_timeout", f"cannot resolve {host}: timed out after {timeout:g}s") from None
        except (OSError, UnicodeError) as exc:
            err = classify(exc, f"cannot resolve {host}")
            raise NetError("dns", err.message, errno=err.errno) from exc
        ips = [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        if not ips:
            raise NetError("dns", f"cannot resolve {host}: no addresses")
        return _order(ips)
