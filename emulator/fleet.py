"""``atemu fleet``: many emulated modules in one process, each on its own TCP / RFC 2217 port.

A fleet file (YAML) lists groups of identical modules; every key but ``profile`` is optional::

    host: 0.0.0.0                # address the module ports bind (default 127.0.0.1)
    world: world.yaml            # every module's world: a file (relative to this file) or a mapping
    pacing: true                 # pace output at the UART rate (default true)
    modules:
      - profile: eseye-anynet
        count: 10                # modules in this group (default 1)
        transport: tcp           # tcp (socket://) or rfc2217 (rfc2217://)
        port: 7000               # first port: module i of the group listens on port + i
        name: anynet             # module names anynet-0 .. anynet-9 (default: the profile name)
        world: other.yaml        # this group's world instead of the fleet's
        baud: 9600               # UART rate for pacing (default: the profile's)
        overrides:               # per module, by index in the group
          3: {world: {wifi: {access_points: []}}, baud: 115200}

An override's ``world`` mapping is merged key by key over the group's world (nested mappings merge,
anything else replaces); a string names another world file. Each module gets a world object of its
own (the control plane changes one module's world, not its neighbours') and a state folder of its
own, ``STATE_DIR/<name>``. One asyncio loop serves the whole fleet; one control API lists every module.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


log = logging.getLogger("atemu.fleet")

FLEET_KEYS = {"host", "world", "pacing", "modules"}
GROUP_KEYS = {"profile", "count", "transport", "port", "name", "world", "baud", "pacing", "overrides"}
OVERRIDE_KEYS = {"world", "baud", "pacing"}
TRANSPORTS = ("tcp", "rfc2217")
MAX_MODULES = 10_000


class FleetError(Exception):
    """A bad fleet file or flag; the message names the key and says what to do."""


@dataclass
class ModuleSpec:
    name: str
    profile: str
    transport: str
    host: str
    port: int
    world_doc: dict
    world_base: Path | None
    world_source: Path | None
    baud: int | None = None
    pacing: bool = True


@dataclass
class FleetSpec:
    modules: list[ModuleSpec] = field(default_factory=list)


def _merge(base: Any, over: Any) -> Any:
    """Mappings merge key by key (recursively); anything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _read_yaml(path: Path, what: str) -> Any:
    from .world import WorldError, read_yaml
    try:
        return read_yaml(path, what)
    except WorldError as e:
        raise FleetError(str(e)) from None


def _world_ref(ref: Any, base: Path, where: str) -> tuple[dict, Path | None, Path | None]:
    """A world given as a file name or a mapping -> (document, folder for relative paths, source file)."""
    if ref is None:
        return {}, None, None
    if isinstance(ref, str):
        p = (base / ref) if not Path(ref).is_absolute() else Path(ref)
        doc = _read_yaml(p, "world file") or {}
        if not isinstance(doc, dict):
            raise FleetError(f"world file {p} must be a mapping (see the README's world file)")
        return doc, p.parent, p
    if isinstance(ref, dict):
        return ref, base, None
    raise FleetError(f"{where}: world must be a file name or a mapping, not {type(ref).__name__}")


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FleetError(f"{where} must be a whole number from {lo} to {hi}, not {v!r}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise FleetError(f"{where} must be true or false, not {v!r}")
    return v


def _keys(obj: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(obj, dict):
        raise FleetError(f"{where} must be a mapping")
    bad = sorted(str(k) for k in obj if k not in allowed)
    if bad:
        raise FleetError(f"{where}: unknown key {bad[0]!r} (known: {', '.join(sorted(allowed))})")
    return obj


def parse(doc: Any, base: Path = Path("."), source: str = "fleet", host: str | None = None) -> FleetSpec:
    """Validate a fleet document and expand it into one spec per module (no I/O but world files)."""
    from .profile import find_profile
    doc = _keys(doc if doc is not None else {}, FLEET_KEYS, source)
    fleet_host = host or doc.get("host") or "127.0.0.1"
    if not isinstance(fleet_host, str):
        raise FleetError(f"{source}: host must be an address such as 0.0.0.0 or 127.0.0.1")
    fleet_world = _world_ref(doc.get("world"), base, f"{source}: world")
    fleet_pacing = _bool(doc.get("pacing", True), f"{source}: pacing")
    groups = doc.get("modules")
    if not isinstance(groups, list) or not groups:
        raise FleetError(f"{source}: 'modules' must list at least one group, e.g. "
                         "[{profile: eseye-anynet, count: 4, port: 7000}]")
    spec = FleetSpec()
    names: dict[str, str] = {}
    ports: dict[tuple[str, int], str] = {}
    for gi, g in enumerate(groups):
        gw = f"{source}: modules[{gi}]"
        _keys(g, GROUP_KEYS, gw)
        if not g.get("profile"):
            raise FleetError(f"{gw}: give a profile (see 'atemu profiles')")
        try:
            cls = find_profile(str(g["profile"]))
        except KeyError as e:
            raise FleetError(f"{gw}: {e.args[0]}") from None
        count = _int(g.get("count", 1), f"{gw}.count", 1, MAX_MODULES)
        transport = g.get("transport", "tcp")
        if transport not in TRANSPORTS:
            raise FleetError(f"{gw}.transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        port = _int(g.get("port", 0), f"{gw}.port", 0, 65535)
        if port and port + count - 1 > 65535:
            raise FleetError(f"{gw}: ports {port}..{port + count - 1} run past 65535; lower port or count")
        prefix = str(g.get("name") or cls.name)
        gworld = _world_ref(g["world"], base, f"{gw}.world") if "world" in g else fleet_world
        baud = _int(g["baud"], f"{gw}.baud", 1, 10_000_000) if "baud" in g else None
        pacing = _bool(g.get("pacing", fleet_pacing), f"{gw}.pacing")
        overrides = g.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise FleetError(f"{gw}.overrides must map a module index (0..{count - 1}) to its keys")
        for k in overrides:
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
                raise FleetError(f"{gw}.overrides: key {k!r} is not a module index 0..{count - 1}")
        for i in range(count):
            name = f"{prefix}-{i}"
            if name in names:
                raise FleetError(f"{gw}: module name {name!r} is used twice; give the groups different 'name's")
            names[name] = gw
            m = ModuleSpec(name=name, profile=cls.name, transport=transport, host=fleet_host,
                           port=port + i if port else 0, world_doc=gworld[0], world_base=gworld[1],
                           world_source=gworld[2], baud=baud, pacing=pacing)
            ov = overrides.get(i)
            if ov is not None:
                ow = f"{gw}.overrides.{i}"
                _keys(ov, OVERRIDE_KEYS, ow)
                if "world" in ov:
                    if isinstance(ov["world"], dict):
                        m.world_doc = _merge(m.world_doc, ov["world"])
                        m.world_source = None
                        m.world_base = m.world_base or base
                    else:
                        m.world_doc, m.world_base, m.world_source = _world_ref(ov["world"], base, f"{ow}.world")
                if "baud" in ov:
                    m.baud = _int(ov["baud"], f"{ow}.baud", 1, 10_000_000)
                if "pacing" in ov:
                    m.pacing = _bool(ov["pacing"], f"{ow}.pacing")
            if m.port:
                if (m.host, m.port) in ports:
                    raise FleetError(f"{gw}: port {m.port} ({name}) is also used by {ports[(m.host, m.port)]}; "
                                     "give the groups port ranges that do not overlap")
                ports[(m.host, m.port)] = name
            spec.modules.append(m)
    if len(spec.modules) > MAX_MODULES:
        raise FleetError(f"{source}: {len(spec.modules)} modules; at most {MAX_MODULES} per process "
                         "(run more processes or pods, see the README's fleets section)")
    return spec


def load(path: str | Path, host: str | None = None) -> FleetSpec:
    p = Path(path)
    return parse(_read_yaml(p, "fleet file"), base=p.parent, source=str(p), host=host)


def make_world(m: ModuleSpec):
    """A world object of the module's own (raises WorldError naming the key)."""
    from .profile import find_profile
    from .world import World
    w = World.from_dict(copy.deepcopy(m.world_doc), base=m.world_base, source=m.world_source) \
        if (m.world_doc or m.world_source) else World.default()
    find_profile(m.profile).validate_world(w)
    return w


class Fleet:
    """The running fleet: one :class:`atemu.api.ModuleHandle` per module (what the control plane lists)."""

    def __init__(self, spec: FleetSpec, *, state_dir: str | Path | None = None, log_dir: str | Path | None = None,
                 observers: list | None = None):
        self.spec = spec
        self.state_dir = Path(state_dir) if state_dir else None
        self.log_dir = Path(log_dir) if log_dir else None
        self.observers = observers or []
        self.handles: dict[str, Any] = {}

    async def start(self) -> None:
        """Start every module; on any failure stop those already started and re-raise."""
        from . import api
        from .state import default_state_dir
        worlds = [make_world(m) for m in self.spec.modules]   # every world error before anything listens
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for m, world in zip(self.spec.modules, worlds):
                self.handles[m.name] = await api.astart(
                    m.profile, world=world, transport=m.transport, host=m.host, tcp_port=m.port, name=m.name,
                    state_dir=(self.state_dir / m.name) if self.state_dir else default_state_dir(m.name),
                    pacing=m.pacing, baud=m.baud, observers=self.observers,
                    log=(self.log_dir / f"{m.name}.jsonl") if self.log_dir is not None else None)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for h in reversed(list(self.handles.values())):
            await h.aclose()
        self.handles.clear()


# ------------------------------------------------------------------------------------------------
# command line (kept apart from emulator/cli.py: cli.py only adds the parser and dispatches here)

def add_parser(sub: Any) -> None:
    f = sub.add_parser("fleet", help="run many modules in one process, each on its own TCP/RFC 2217 port",
                       description="Serve many emulated modules from one process: from a fleet file, or N modules "
                                   "of one profile with --profile/--count/--tcp|--rfc2217.")
    f.add_argument("file", nargs="?", help="fleet file (YAML); see the README's fleets section")
    f.add_argument("--profile", help="without a file: the profile of every module")
    f.add_argument("--count", type=int, default=1, metavar="N", help="without a file: how many modules (default 1)")
    f.add_argument("--tcp", metavar="[HOST:]PORT", help="without a file: first raw TCP port (module i on PORT+i)")
    f.add_argument("--rfc2217", metavar="[HOST:]PORT", help="without a file: first RFC 2217 port (module i on PORT+i)")
    f.add_argument("--name", help="without a file: module name prefix (default: the profile name)")
    f.add_argument("--world", metavar="FILE", help="world file for every module (a file's own 'world' wins)")
    f.add_argument("--host", metavar="HOST", help="address the module ports bind (overrides the file's 'host')")
    f.add_argument("--no-pacing", action="store_true", help="send output as fast as possible")
    f.add_argument("--state-dir", metavar="DIR", help="state folders go to DIR/<module name> "
                                                      "(default: $XDG_STATE_HOME/atemu/<module name>)")
    f.add_argument("--log-dir", metavar="DIR", help="write each module's JSON-lines transcript to DIR/<name>.jsonl")
    f.add_argument("--control", metavar="[HOST:]PORT", help="serve one control API for the whole fleet")
    f.add_argument("--control-token", metavar="TOKEN",
                   help="require this token on every control request (default: env ATEMU_CONTROL_TOKEN); "
                        "visible in ps: prefer env ATEMU_CONTROL_TOKEN or --control-token-file")
    f.add_argument("--control-token-file", metavar="FILE",
                   help="read the control token from the first line of FILE (or env ATEMU_CONTROL_TOKEN_FILE)")
    f.add_argument("--check", action="store_true", help="validate the fleet (and worlds), print the module table, exit")
    f.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")


def _spec_from_args(args: Any) -> FleetSpec:
    from .uart import TransportError, parse_hostport
    if args.file:
        if args.profile or args.tcp or args.rfc2217 or args.name or args.count != 1:
            raise FleetError("give either a fleet file or --profile/--count/--tcp|--rfc2217, not both")
        spec = load(args.file, host=args.host)
        if args.world:
            raise FleetError("--world goes with --profile; a fleet file names its world in 'world:'")
    else:
        if not args.profile:
            raise FleetError("give a fleet file or --profile P --count N --tcp [HOST:]PORT (see 'atemu fleet --help')")
        if args.tcp and args.rfc2217:
            raise FleetError("choose one of --tcp, --rfc2217")
        hp = args.tcp or args.rfc2217
        if not hp:
            raise FleetError("give the first port: --tcp [HOST:]PORT or --rfc2217 [HOST:]PORT")
        try:
            host, port = parse_hostport(hp)
        except TransportError as e:
            raise FleetError(str(e)) from None
        group: dict = {"profile": args.profile, "count": args.count, "port": port,
                       "transport": "rfc2217" if args.rfc2217 else "tcp"}
        if args.name:
            group["name"] = args.name
        doc = {"host": host, "modules": [group]}
        if args.world:
            doc["world"] = str(Path(args.world).resolve())
        spec = parse(doc, source="atemu fleet", host=args.host)
    if args.no_pacing:
        for m in spec.modules:
            m.pacing = False
    return spec


def cmd_fleet(args: Any, die: Any) -> int:
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="atemu: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    from .world import WorldError
    try:
        spec = _spec_from_args(args)
        for m in spec.modules:
            make_world(m)                  # a bad world is one line before anything listens
    except (FleetError, WorldError) as e:
        die(str(e))
    _raise_nofile(len(spec.modules))
    if args.check:
        for m in spec.modules:
            scheme = "socket" if m.transport == "tcp" else m.transport
            print(f"{m.name}\t{m.profile}\t{scheme}://{m.host}:{m.port or 'any'}")
        return 0
    try:
        return asyncio.run(_serve(spec, args, die))
    except KeyboardInterrupt:
        return 130


def _raise_nofile(modules: int) -> None:
    """A module needs a listening socket, its host's connection and its own sockets: lift the soft
    open-files limit (often 1024) towards the hard one so a 500-module fleet does not hit EMFILE."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 8 * modules + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning("open files limited to %d (hard limit); %d modules may need %d: raise it with "
                            "ulimit -Hn", new, modules, want)
    except (ImportError, ValueError, OSError):
        pass


async def _serve(spec: FleetSpec, args: Any, die: Any) -> int:
    from . import api
    from .control import ControlError, ControlServer
    from .uart import TransportError, parse_hostport
    from .world import WorldError
    observers = []
    if args.verbose:
        from .cli import _LogTrace
        observers.append(_LogTrace(debug=args.verbose >= 2))
    fleet = Fleet(spec, state_dir=args.state_dir, log_dir=args.log_dir, observers=observers)
    try:
        await fleet.start()
    except (TransportError, WorldError, api.ApiError) as e:
        die(str(e))
    except OSError as e:
        die(f"{e.filename or 'state or log folder'}: {e.strerror or e}; pass --state-dir/--log-dir folders you can write")
    control = None
    if args.control:
        try:
            chost, cport = parse_hostport(args.control)
            control = ControlServer(chost, cport, token=args.control_token, token_file=args.control_token_file,
                                    modules=lambda: dict(fleet.handles))
            await control.start()
        except (ControlError, TransportError, ValueError) as e:
            await fleet.stop()
            die(str(e))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for name, h in fleet.handles.items():
        print(f"atemu: {name} ({h.profile}) on {h.port}")
    if control is not None:
        print(f"atemu: control on {control.url}/")
    print(f"atemu: fleet ready: {len(fleet.handles)} modules", flush=True)
    await stop.wait()
    if control is not None:
        await control.stop()
    await fleet.stop()
    return 0
