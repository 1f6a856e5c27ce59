"""The virtual world a module lives in, loaded from a YAML world file.

One model shared by every profile: DNS overrides, the cellular subscription, the AWS IoT
material on the Eseye SIM, Wi-Fi access points and BLE peers. The world is mutable at run time
(the control plane adds or removes access points, changes RSSI, edits DNS), and profiles read it
at the moment they need it. Unknown keys are errors that name the key, so a typo never passes
silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class WorldError(Exception):
    """A world file problem, with a one-line message that says where and what to do."""


def read_yaml(path: str | Path, what: str = "world file") -> Any:
    """A YAML file's document; WorldError (one line: the file, the line, the problem) when unreadable."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise WorldError(f"{what} {p}: cannot read it ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise WorldError(f"{what} {p}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None


SECURITIES = ("open", "wep", "wpa", "wpa2", "wpa3", "wpa2-wpa3", "wpa-wpa2", "wpa2-enterprise")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


@dataclass
class AccessPoint:
    ssid: str
    security: str = "wpa2"
    password: str = ""
    channel: int = 6
    rssi: int = -50
    bssid: str = "02:00:00:00:00:01"
    hidden: bool = False
    #: wpa2-enterprise: the EAP identity the AP's authentication server accepts (with ``password``);
    #: empty: any identity with the right password
    identity: str = ""
    #: addresses the AP's DHCP server hands out
    ip: str = "192.168.1.100"
    gateway: str = "192.168.1.1"
    netmask: str = "255.255.255.0"
    dns: str = "192.168.1.1"


@dataclass
class Notify:
    characteristic: str
    value: str            # hex
    every: float = 1.0
    count: int = 0        # 0 = forever


@dataclass
class BlePeer:
    address: str
    name: str = ""
    rssi: int = -60
    services: dict[str, dict[str, str]] = field(default_factory=dict)  # service uuid -> char uuid -> hex value
    notify: list[Notify] = field(default_factory=list)
    connectable: bool = True


@dataclass
class Network:
    hosts: dict[str, str] = field(default_factory=dict)
    #: host TCP port where a profile's built-in HTTP server listens (TI NetApp HTTP server); 0 = any free
    http_server_port: int = 0
    #: host addresses where a module's sockets bound to its own (virtual) or wildcard address listen
    listen_host: str = "127.0.0.1"
    listen_host6: str = "::1"


@dataclass
class Cellular:
    iccid: str = "89440000000000000001"
    imei: str = "356938035643809"
    operator: str = "Eseye"
    attached: bool = True
    rssi: int = -70


@dataclass
class Aws:
    endpoint: str = ""        # host:port
    thing_name: str = "thing_0001"
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @property
    def host(self) -> str:
        return self.endpoint.rsplit(":", 1)[0] if ":" in self.endpoint else self.endpoint

    @property
    def port(self) -> int:
        if ":" in self.endpoint:
            return int(self.endpoint.rsplit(":", 1)[1])
        return 8883


class AirList(list):
    """The world's access points: a list that tells the world's air watchers (``atemu.wifi.watch_air``)
    when it changes, however it is changed (control plane, faults, a soft AP going down, a test's
    ``access_points.clear()``), so no module has to poll the air."""

    def __init__(self, items=(), on_change=None):
        super().__init__(items)
        self._on_change = on_change

    def _changed(self) -> None:
        fn = getattr(self, "_on_change", None)
        if fn is not None:
            fn()


def _notifying(name: str):
    base = getattr(list, name)

    def method(self, *args, **kwargs):
        result = base(self, *args, **kwargs)
        self._changed()
        return result
    method.__name__ = name
    return method


for _name in ("append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",
              "__setitem__", "__delitem__", "__iadd__"):
    setattr(AirList, _name, _notifying(_name))


@dataclass
class World:
    network: Network = field(default_factory=Network)
    cellular: Cellular = field(default_factory=Cellular)
    aws: Aws = field(default_factory=Aws)
    access_points: list[AccessPoint] = field(default_factory=list)
    ble_peers: list[BlePeer] = field(default_factory=list)
    #: per-profile options, keys prefixed by the profile (``eseye.subclose_urc``); profiles validate them
    options: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def __post_init__(self) -> None:
        #: soft APs hosted by emulated modules (``atemu.wifi.host_ap``), keyed by the AP's identity;
        #: run-time state, not a dataclass field, so it never reaches a world file
        self.hosted_aps: dict[int, Any] = {}
        #: who hears that the set of access points on the air changed (``atemu.wifi.watch_air``)
        self.air_watchers: dict[Any, Any] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "access_points" and not isinstance(value, AirList):
            value = AirList(value, self._air_changed)
        super().__setattr__(name, value)

    def _air_changed(self) -> None:
        for notify in list(getattr(self, "air_watchers", {}).values()):
            notify()

    @classmethod
    def default(cls) -> "World":
        """The built-in world: no AWS keys on the SIM, one open lab access point, no peers.

        With it ``atemu run eseye-anynet`` works with nothing installed; opening a topic fails
        like a module whose SIM holds no AWS security material (no traffic leaves the host).
        """
        return cls(access_points=[AccessPoint(ssid="atemu-lab", security="wpa2", password="atemu-pass",
                                              channel=6, rssi=-52)])

    @classmethod
    def load(cls, path: str | Path) -> "World":
        p = Path(path)
        return cls.from_dict(read_yaml(p) or {}, base=p.parent, source=p)

    @classmethod
    def from_dict(cls, doc: Any, base: Path | None = None, source: Path | None = None) -> "World":
        where = str(source) if source else "world"
        v = _V(where)
        v.mapping(doc, "", {"network", "cellular", "aws", "wifi", "ble", "options"})
        w = cls(source=source)
        opts = doc.get("options") or {}
        v.mapping(opts, "options", None)
        for k in opts:
            if "." not in str(k):
                raise WorldError(f"{where}: options key {k!r} must be '<profile>.<option>', e.g. eseye.subclose_urc")
        w.options = {str(k): val for k, val in opts.items()}
        net = doc.get("network") or {}
        v.mapping(net, "network", {"hosts", "http_server_port", "listen_host", "listen_host6"})
        hosts = net.get("hosts") or {}
        v.mapping(hosts, "network.hosts", None)
        w.network = Network(hosts={str(k).lower(): v.host_target(val, f"network.hosts.{k}") for k, val in hosts.items()},
                            http_server_port=v.integer(net.get("http_server_port", 0), "network.http_server_port", 0, 65535),
                            listen_host=v.ip_literal(net.get("listen_host", "127.0.0.1"), "network.listen_host", 4),
                            listen_host6=v.ip_literal(net.get("listen_host6", "::1"), "network.listen_host6", 6))
        cell = doc.get("cellular") or {}
        v.mapping(cell, "cellular", {"iccid", "imei", "operator", "attached", "rssi"})
        c = Cellular()
        for k in ("iccid", "imei", "operator"):
            if k in cell:
                setattr(c, k, v.string(cell[k], f"cellular.{k}"))
        if "attached" in cell:
            c.attached = v.boolean(cell["attached"], "cellular.attached")
        if "rssi" in cell:
            c.rssi = v.integer(cell["rssi"], "cellular.rssi", -140, 0)
        w.cellular = c
        aws = doc.get("aws") or {}
        v.mapping(aws, "aws", {"endpoint", "thing_name", "ca", "cert", "key"})
        a = Aws()
        if "endpoint" in aws:
            a.endpoint = v.string(aws["endpoint"], "aws.endpoint")
            if ":" in a.endpoint:
                v.integer(a.endpoint.rsplit(":", 1)[1], "aws.endpoint (port)", 1, 65535)
        if "thing_name" in aws:
            a.thing_name = v.string(aws["thing_name"], "aws.thing_name")
        for k in ("ca", "cert", "key"):
            if k in aws and aws[k] is not None:
                fp = Path(v.string(aws[k], f"aws.{k}"))
                if not fp.is_absolute() and base is not None:
                    fp = base / fp
                setattr(a, k, fp)
        w.aws = a
        wifi = doc.get("wifi") or {}
        v.mapping(wifi, "wifi", {"access_points"})
        aps = wifi.get("access_points") or []
        v.sequence(aps, "wifi.access_points")
        for i, ap in enumerate(aps):
            w.access_points.append(v.access_point(ap, f"wifi.access_points[{i}]", i))
        ble = doc.get("ble") or {}
        v.mapping(ble, "ble", {"peers"})
        peers = ble.get("peers") or []
        v.sequence(peers, "ble.peers")
        for i, pr in enumerate(peers):
            w.ble_peers.append(v.ble_peer(pr, f"ble.peers[{i}]"))
        return w

    # ---- queries profiles use --------------------------------------------------------------
    def find_ap(self, ssid: str) -> AccessPoint | None:
        for ap in self.access_points:
            if ap.ssid == ssid:
                return ap
        return None

    def find_peer(self, address: str) -> BlePeer | None:
        for p in self.ble_peers:
            if p.address.lower() == address.lower():
                return p
        return None


class _V:
    """Validation helpers that raise WorldError naming the offending key."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, msg: str) -> None:
        raise WorldError(f"{self.where}: {msg}")

    def mapping(self, obj: Any, path: str, allowed: set[str] | None) -> None:
        if not isinstance(obj, dict):
            self.fail(f"{path or 'the top level'} must be a mapping (key: value)")
        if allowed is not None:
            for k in obj:
                if k not in allowed:
                    full = f"{path}.{k}" if path else str(k)
                    self.fail(f"unknown key '{full}' (expected one of: {', '.join(sorted(allowed))})")

    def sequence(self, obj: Any, path: str) -> None:
        if not isinstance(obj, list):
            self.fail(f"{path} must be a list")

    def ip_literal(self, obj: Any, path: str, version: int) -> str:
        import ipaddress
        text = self.string(obj, path).strip().strip("[]")
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            self.fail(f"{path} must be an IPv{version} address, got {text!r}")
        if ip.version != version:
            self.fail(f"{path} must be an IPv{version} address, got {text!r}")
        return str(ip)

    def string(self, obj: Any, path: str) -> str:
        if isinstance(obj, bool) or not isinstance(obj, (str, int, float)):
            self.fail(f"{path} must be a string")
        return str(obj)

    def integer(self, obj: Any, path: str, lo: int, hi: int) -> int:
        try:
            if isinstance(obj, bool) or (isinstance(obj, float) and not obj.is_integer()):
                raise ValueError
            val = int(obj)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{path} must be a whole number")
        if not lo <= val <= hi:
            self.fail(f"{path} is {val}; it must be between {lo} and {hi}")
        return val

    def boolean(self, obj: Any, path: str) -> bool:
        if not isinstance(obj, bool):
            self.fail(f"{path} must be true or false")
        return obj

    def mac(self, obj: Any, path: str) -> str:
        s = self.string(obj, path)
        if not _MAC.match(s):
            self.fail(f"{path} is {s!r}; write it as six hex pairs like 02:00:00:00:00:01")
        return s.lower()

    def ipv4(self, obj: Any, path: str) -> str:
        import ipaddress
        s = self.string(obj, path)
        try:
            ipaddress.IPv4Address(s)
        except ValueError:
            self.fail(f"{path} is {s!r}, not an IPv4 address")
        return s

    def host_target(self, obj: Any, path: str) -> Any:
        """A DNS override: an IP address, a list of them, or another host name (an alias)."""
        import ipaddress
        items = obj if isinstance(obj, list) else [obj]
        if not items:
            self.fail(f"{path} is an empty list; give at least one address")
        out = []
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if isinstance(obj, list) else path
            text = self.string(item, where).strip()
            try:
                ipaddress.ip_address(text.strip("[]"))
            except ValueError:
                if all(c.isdigit() or c == "." for c in text) or not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
                    self.fail(f"{where} is {text!r}: not an IP address nor a host name")
                if isinstance(obj, list):
                    self.fail(f"{where} is {text!r}: a list may hold IP addresses only")
            out.append(text)
        return out if isinstance(obj, list) else out[0]

    def passphrase(self, security: str, password: str, path: str) -> None:
        """WPA passphrases are 8-63 characters (or 64 hex digits); WEP keys 5/13 characters or 10/26 hex."""
        hexed = all(c in "0123456789abcdefABCDEF" for c in password)
        if security in ("wpa", "wpa2", "wpa3", "wpa-wpa2", "wpa2-wpa3"):
            if not (8 <= len(password) <= 63 or (len(password) == 64 and hexed)):
                self.fail(f"{path} must be 8 to 63 characters (or 64 hex digits) for {security}; "
                          f"it has {len(password)}")
        elif security == "wep":
            if not (len(password) in (5, 13) or (len(password) in (10, 26) and hexed)):
                self.fail(f"{path} must be a WEP key of 5 or 13 characters (or 10 or 26 hex digits)")

    def hexstr(self, obj: Any, path: str) -> str:
        s = self.string(obj, path)
        try:
            bytes.fromhex(s)
        except ValueError:
            self.fail(f"{path} is {s!r}; values are hex bytes like '68656c6c6f'")
        return s.lower()

    # ---- whole entries (the world file and run-time world changes share these) -----------------
    def access_point(self, ap: Any, path: str, index: int) -> AccessPoint:
        where = self.where
        self.mapping(ap, path, {"ssid", "security", "password", "identity", "channel", "rssi", "bssid", "hidden",
                                "ip", "gateway", "netmask", "dns"})
        if "ssid" not in ap:
            raise WorldError(f"{where}: {path} needs an 'ssid'")
        a_ = AccessPoint(ssid=self.ssid(ap["ssid"], f"{path}.ssid"))
        if "security" in ap:
            sec = self.string(ap["security"], f"{path}.security").lower()
            if sec not in SECURITIES:
                raise WorldError(f"{where}: {path}.security is {sec!r}; use one of {', '.join(SECURITIES)}")
            a_.security = sec
        if "password" in ap:
            a_.password = self.string(ap["password"], f"{path}.password")
        if a_.security != "open" and not a_.password:
            raise WorldError(f"{where}: {path} is {a_.security} but has no 'password'")
        self.passphrase(a_.security, a_.password, f"{path}.password")
        if "identity" in ap:
            if a_.security != "wpa2-enterprise":
                raise WorldError(f"{where}: {path}.identity is for wpa2-enterprise access points (this one is {a_.security})")
            a_.identity = self.string(ap["identity"], f"{path}.identity")
        if "channel" in ap:
            a_.channel = self.integer(ap["channel"], f"{path}.channel", 1, 196)
        if "rssi" in ap:
            a_.rssi = self.integer(ap["rssi"], f"{path}.rssi", -127, 0)
        if "bssid" in ap:
            a_.bssid = self.mac(ap["bssid"], f"{path}.bssid")
        else:
            a_.bssid = f"02:00:00:00:00:{(index + 1) & 0xff:02x}"
        if "hidden" in ap:
            a_.hidden = self.boolean(ap["hidden"], f"{path}.hidden")
        for k in ("ip", "gateway", "netmask", "dns"):
            if k in ap:
                setattr(a_, k, self.ipv4(ap[k], f"{path}.{k}"))
        return a_

    def ble_peer(self, pr: Any, path: str) -> BlePeer:
        where = self.where
        self.mapping(pr, path, {"address", "name", "rssi", "services", "notify", "connectable"})
        if "address" not in pr:
            raise WorldError(f"{where}: {path} needs an 'address'")
        peer = BlePeer(address=self.mac(pr["address"], f"{path}.address"))
        if "name" in pr:
            peer.name = self.string(pr["name"], f"{path}.name")
        if "rssi" in pr:
            peer.rssi = self.integer(pr["rssi"], f"{path}.rssi", -127, 20)
        if "connectable" in pr:
            peer.connectable = self.boolean(pr["connectable"], f"{path}.connectable")
        svcs = pr.get("services") or {}
        self.mapping(svcs, f"{path}.services", None)
        for su, chars in svcs.items():
            self.mapping(chars, f"{path}.services.{su}", None)
            peer.services[str(su).lower()] = {str(cu).lower(): self.hexstr(val, f"{path}.services.{su}.{cu}")
                                              for cu, val in (chars or {}).items()}
        notes = pr.get("notify") or []
        self.sequence(notes, f"{path}.notify")
        for j, n in enumerate(notes):
            np_ = f"{path}.notify[{j}]"
            self.mapping(n, np_, {"characteristic", "value", "every", "count"})
            if "characteristic" not in n or "value" not in n:
                raise WorldError(f"{where}: {np_} needs 'characteristic' and 'value'")
            ch = self.string(n["characteristic"], f"{np_}.characteristic").lower()
            if not any(ch in chars for chars in peer.services.values()):
                raise WorldError(f"{where}: {np_}.characteristic {ch!r} is not in the peer's services")
            peer.notify.append(Notify(ch, self.hexstr(n["value"], f"{np_}.value"),
                                      self.seconds(n.get("every", 1.0), f"{np_}.every"),
                                      self.integer(n.get("count", 0), f"{np_}.count", 0, 10**9)))
        return peer

    def ssid(self, obj: Any, path: str) -> str:
        """An SSID is a string of 1 to 32 bytes (a YAML number is a mistake, not a name)."""
        if not isinstance(obj, str):
            self.fail(f"{path} must be a string (quote it if it looks like a number)")
        if not 1 <= len(obj.encode("utf-8", "surrogateescape")) <= 32:
            self.fail(f"{path} must be 1 to 32 bytes long")
        return obj

    def seconds(self, obj: Any, path: str, zero: bool = False) -> float:
        import math
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj) \
                or obj < 0 or (obj == 0 and not zero) or obj > 86400 * 365:
            self.fail(f"{path} must be a positive number of seconds")
        return float(obj)
