"""The virtual radio world shared by the Wi-Fi profiles: scanning and joining the world's APs.

Profiles keep their own vendor state machines; this module only answers "what would the radio
see" from the (mutable) :class:`~emulator.world.World`, so the control plane can make an access
point vanish or its RSSI change and every profile sees it the same way.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .world import AccessPoint, World


class JoinResult(enum.Enum):
    OK = "ok"
    NO_AP = "no_ap"                   # SSID not on the air
    WRONG_PASSWORD = "wrong_password"
    SECURITY_MISMATCH = "security_mismatch"


# what a station configured with security X may join
_COMPATIBLE = {
    "open": {"open"},
    "wep": {"wep"},
    "wpa": {"wpa", "wpa-wpa2"},
    "wpa2": {"wpa2", "wpa-wpa2", "wpa2-wpa3"},
    "wpa3": {"wpa3", "wpa2-wpa3"},
    "wpa-wpa2": {"wpa", "wpa2", "wpa-wpa2", "wpa2-wpa3"},
    "wpa2-wpa3": {"wpa2", "wpa3", "wpa2-wpa3", "wpa-wpa2"},
    "wpa2-enterprise": {"wpa2-enterprise"},
}


def scan(world: World, *, channel: int | None = None, ssid: str | None = None, include_hidden: bool = False) -> list[AccessPoint]:
    """Access points on the air, strongest first (hidden ones only when probed by SSID)."""
    out = []
    for ap in world.access_points:
        if channel and ap.channel != channel:
            continue
        if ssid is not None and ap.ssid != ssid:
            continue
        if ap.hidden and not include_hidden and ssid is None:
            continue
        out.append(ap)
    return sorted(out, key=lambda a: a.rssi, reverse=True)


def join(world: World, ssid: str, password: str = "", security: str | None = None,
         bssid: str | None = None) -> tuple[JoinResult, AccessPoint | None]:
    """Would a station with these credentials associate? ``security=None`` means auto-detect."""
    for ap in world.access_points:
        if ap.ssid == ssid and (bssid is None or ap.bssid.lower() == bssid.lower()):
            break
    else:
        return JoinResult.NO_AP, None
    if security is not None and ap.security not in _COMPATIBLE.get(security, {security}):
        return JoinResult.SECURITY_MISMATCH, ap
    if ap.security != "open" and password != ap.password:
        return JoinResult.WRONG_PASSWORD, ap
    return JoinResult.OK, ap


def on_air(world: World, ap: AccessPoint) -> bool:
    """Is this access point (still) present? The control plane removes APs to simulate loss."""
    return any(a is ap or (a.ssid == ap.ssid and a.bssid == ap.bssid) for a in world.access_points)


@dataclass
class Lease:
    """What the AP's DHCP server gave the station."""

    ip: str
    gateway: str
    netmask: str
    dns: str

    @classmethod
    def from_ap(cls, ap: AccessPoint) -> "Lease":
        return cls(ap.ip, ap.gateway, ap.netmask, ap.dns)
