"""The virtual radio world shared by the Wi-Fi profiles: scanning and joining the world's APs, and
the soft APs modules host (who is associated with whom).

Profiles keep their own vendor state machines; this module only answers "what would the radio
see" from the (mutable) :class:`~atemu.world.World`, so the control plane can make an access
point vanish or its RSSI change and every profile sees it the same way.
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

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
         bssid: str | None = None, identity: str | None = None) -> tuple[JoinResult, AccessPoint | None]:
    """Would a station with these credentials associate? ``security=None`` means auto-detect.

    A ``wpa2-enterprise`` AP with an ``identity`` checks the station's EAP identity too (the
    authentication server accepts that identity with the AP's ``password``)."""
    for ap in world.access_points:
        if ap.ssid == ssid and (bssid is None or ap.bssid.lower() == bssid.lower()):
            break
    else:
        return JoinResult.NO_AP, None
    if security is not None and ap.security not in _COMPATIBLE.get(security, {security}):
        return JoinResult.SECURITY_MISMATCH, ap
    if ap.security != "open" and password != ap.password:
        return JoinResult.WRONG_PASSWORD, ap
    if ap.security == "wpa2-enterprise" and ap.identity and identity != ap.identity:
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


# ---- soft APs hosted by emulated modules ---------------------------------------------------------
#
# A module in the AP role puts its access point on the air with :func:`host_ap`, naming itself as the
# owner. A station of ANY profile joins through :func:`associate` and leaves through
# :func:`disassociate`, so every profile's AP sees every profile's stations. Each module may run its
# own event loop (one thread per module in the tests), so the core calls the owner on the loop it
# hosted the AP from and the station on the loop it associated from. The registry lives on the World
# object (``World.hosted_aps``, keyed by the AP's identity), outside its YAML-facing fields.

#: reasons (802.11 reason codes) given to stations that lose their link, and to owners when one leaves
REASON_LEAVING = 3        # the station leaves (AT command, reboot)
REASON_AP_GONE = 4        # the AP stopped (disassociated due to inactivity / beacon loss)
REASON_KICKED = 8         # the AP dropped the station


class Refused(Exception):
    """Raised by an owner's ``on_station_join`` when the AP turns the station away (ACL, full)."""


class ApOwner(Protocol):
    """What a module hosting a soft AP implements; called on the loop that hosted the AP."""

    def on_station_join(self, mac: str, name: str) -> "Lease | None":
        """A station associates: the URCs of the AP side, and the DHCP lease it gets (None: the AP
        answers no DHCP). Raise :class:`Refused` to turn it away. Called again for a station that
        is already there (re-association): answer the same lease without a second URC."""

    def on_station_leave(self, mac: str, reason: int) -> None:
        """A station left (it disconnected, rebooted, or lost the link)."""


@dataclass(eq=False)
class Station:
    """A module's station as an AP sees it. ``on_link_lost(ap, reason)`` runs on the station's
    loop when the AP stops (:data:`REASON_AP_GONE`) or drops it (:func:`kick`)."""

    mac: str
    name: str = ""
    on_link_lost: Callable[[AccessPoint, int], None] | None = None


@dataclass
class Association:
    """The result of :func:`associate`."""

    ap: AccessPoint
    #: what the AP's DHCP server gave the station; None when no DHCP server answers
    lease: Lease | None
    #: the AP is an emulated module's soft AP (its owner saw the station join)
    hosted: bool


@dataclass(eq=False)
class _Hosted:
    ap: AccessPoint
    owner: Any
    loop: asyncio.AbstractEventLoop
    stations: dict[int, tuple[Station, asyncio.AbstractEventLoop]] = field(default_factory=dict)


def _registry(world: World) -> dict[int, _Hosted]:
    return world.hosted_aps


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop`` (at once when that is the running loop); a stopped loop is ignored."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if loop is running:
        fn(*args)
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:      # that module has stopped
        pass


def watch_air(world: World, key: Any, fn: Callable[[], None]) -> None:
    """Call ``fn()`` on the caller's loop whenever the world's access points change (one watcher per
    ``key``; replaces an earlier one). Event-driven replacement for polling :func:`on_air`."""
    loop = asyncio.get_running_loop()
    world.air_watchers[key] = lambda: _call_soon(loop, fn)


def unwatch_air(world: World, key: Any) -> None:
    world.air_watchers.pop(key, None)


async def air_change(world: World, wake: asyncio.Event | None = None) -> None:
    """Return once the world's access points change (or ``wake`` is set): how a station notices its
    AP leaving the air without polling :func:`on_air`."""
    ev = wake if wake is not None else asyncio.Event()
    watch_air(world, ev, ev.set)
    try:
        await ev.wait()
    finally:
        unwatch_air(world, ev)


def host_ap(world: World, ap: AccessPoint, owner: ApOwner) -> None:
    """Put ``ap`` on the air as a soft AP of ``owner`` (call from the owner's loop)."""
    _registry(world)[id(ap)] = _Hosted(ap, owner, asyncio.get_running_loop())
    if not any(a is ap for a in world.access_points):
        world.access_points.append(ap)


def unhost_ap(world: World, ap: AccessPoint, reason: int = REASON_AP_GONE) -> None:
    """Take the soft AP off the air; each associated station's module is told (``on_link_lost``).
    The owner reports its own stations' departures (its vendor's URCs) itself."""
    aps = world.access_points
    for i, a in enumerate(aps):
        if a is ap:
            del aps[i]
            break
    entry = _registry(world).pop(id(ap), None)
    if entry is None:
        return
    for station, loop in entry.stations.values():
        if station.on_link_lost is not None:
            _call_soon(loop, station.on_link_lost, ap, reason)


def hosted_by(world: World, ap: AccessPoint | None) -> Any:
    """The owner of a hosted soft AP, or None for a plain access point of the world."""
    entry = _registry(world).get(id(ap)) if ap is not None else None
    return entry.owner if entry is not None and entry.ap is ap else None


async def associate(world: World, ap: AccessPoint, station: Station, timeout: float = 5.0) -> Association | None:
    """A station joins ``ap`` (after :func:`join` said the credentials fit). A plain AP of the world
    leases its configured addresses (none when its ``ip`` is 0.0.0.0); a hosted soft AP's owner
    decides. None when the AP refuses the station or has stopped meanwhile."""
    entry = _registry(world).get(id(ap))
    if entry is None or entry.ap is not ap:
        return Association(ap, Lease.from_ap(ap) if ap.ip not in ("", "0.0.0.0") else None, False)
    me = asyncio.get_running_loop()

    def grant() -> Lease | None:
        if _registry(world).get(id(ap)) is not entry:
            raise Refused("the AP stopped")
        lease = entry.owner.on_station_join(station.mac, station.name)
        entry.stations[id(station)] = (station, me)
        return lease

    try:
        if entry.loop is me:
            lease = grant()
        else:
            async def remote() -> Lease | None:
                return grant()
            fut = asyncio.run_coroutine_threadsafe(remote(), entry.loop)
            lease = await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
    except asyncio.CancelledError:
        disassociate(world, ap, station, REASON_LEAVING)
        raise
    except Exception:  # noqa: BLE001  Refused, or the owner's module stopped
        return None
    return Association(ap, lease, True)


def disassociate(world: World, ap: AccessPoint | None, station: Station | None, reason: int = REASON_LEAVING) -> None:
    """The station leaves ``ap``: a hosted AP's owner hears ``on_station_leave`` (once; nothing when
    the AP already stopped or never saw this station). Safe to call for plain APs."""
    if ap is None or station is None:
        return
    entry = _registry(world).get(id(ap))
    if entry is None or entry.ap is not ap:
        return

    def leave() -> None:
        if entry.stations.pop(id(station), None) is not None:
            entry.owner.on_station_leave(station.mac, reason)
    _call_soon(entry.loop, leave)


def kick(world: World, ap: AccessPoint, mac: str, reason: int = REASON_KICKED) -> bool:
    """The AP drops the station(s) with this MAC (call from the owner's loop): their modules lose
    the link and then leave as usual. False if no module's station with that MAC is associated."""
    entry = _registry(world).get(id(ap))
    if entry is None:
        return False
    found = False
    for station, loop in list(entry.stations.values()):
        if station.mac.lower() == mac.lower():
            found = True
            if station.on_link_lost is not None:
                _call_soon(loop, station.on_link_lost, ap, reason)
    return found
