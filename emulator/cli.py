"""``atemu`` command line."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__

log = logging.getLogger("atemu")


def _die(msg: str, code: int = 2) -> NoReturn:
    print(f"atemu: error: {msg}", file=sys.stderr)
    raise SystemExit(code)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other atemu error."""

    def error(self, message: str) -> NoReturn:
        _die(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="atemu", description="Emulate serial AT-command network modules on real networking.")
    p.add_argument("--version", action="version", version=f"atemu {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    r = sub.add_parser("run", help="run one emulated module")
    r.add_argument("profile", help="profile name or alias (see 'atemu profiles')")
    r.add_argument("--pty", metavar="PATH", help="publish a raw pseudo-terminal at PATH (a symlink)")
    r.add_argument("--tcp", metavar="[HOST:]PORT", help="serve raw serial over TCP (socket://), host 127.0.0.1 by default")
    r.add_argument("--rfc2217", metavar="[HOST:]PORT", help="serve RFC 2217 (rfc2217://), host 127.0.0.1 by default")
    r.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                   help="spawn CMD with the module as its terminal, or, if CMD contains {port}, with the port path; "
                        "exit with its status")
    r.add_argument("--baud", type=int, metavar="N", help="UART rate for pacing (default: the profile's)")
    r.add_argument("--no-pacing", action="store_true", help="send output as fast as possible")
    r.add_argument("--world", metavar="FILE", help="world file (YAML); default: a built-in world")
    r.add_argument("--state-dir", metavar="DIR", help="non-volatile state folder (default: XDG state dir)")
    r.add_argument("--log", metavar="FILE", help="append a JSON-lines transcript to FILE")
    r.add_argument("--control", metavar="[HOST:]PORT",
                   help="serve the control API and web page over HTTP (host 127.0.0.1 by default; port 0 = any)")
    r.add_argument("--control-token", metavar="TOKEN",
                   help="require this token on every control request (needed to bind beyond 127.0.0.1); "
                        "visible in ps: prefer env ATEMU_CONTROL_TOKEN or --control-token-file")
    r.add_argument("--control-token-file", metavar="FILE",
                   help="read the control token from the first line of FILE (or env ATEMU_CONTROL_TOKEN_FILE)")
    r.add_argument("--scenario", metavar="FILE",
                   help="judge the host program with a scenario file (YAML steps); exit 0 passed, 1 failed")
    r.add_argument("--junit", metavar="FILE", help="with --scenario: write a JUnit XML report (one test case per step)")
    r.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")

    pr = sub.add_parser("profiles", help="list installed profiles")
    pr.add_argument("--json", action="store_true")

    d = sub.add_parser("describe", help="every command and URC a profile implements")
    d.add_argument("profile")
    d.add_argument("--json", action="store_true")

    rp = sub.add_parser("replay", help="re-send a transcript's host side to a fresh module and report differences")
    rp.add_argument("file", help="JSON-lines transcript (atemu run --log / atemu proxy --log)")
    rp.add_argument("--profile", help="profile to replay against (default: the one recorded in the file)")
    rp.add_argument("--world", metavar="FILE", help="world file (YAML) for the fresh module")
    rp.add_argument("--settle", type=float, default=0.2, metavar="SECONDS",
                    help="quiet time that ends an answer (default 0.2)")
    rp.add_argument("--raw", action="store_true",
                    help="compare answers byte for byte (default: local ports, timestamps and the profile's volatile fields may differ)")
    rp.add_argument("--no-faults", action="store_true",
                    help="do not re-arm the faults recorded in the transcript (default: same faults, same seeds)")

    px = sub.add_parser("proxy", help="sit between a host and a real serial module and record a transcript")
    px.add_argument("device", help="the real module's serial port (e.g. /dev/ttyUSB0) or a pyserial URL")
    px.add_argument("--pty", metavar="PATH", help="publish the host-side pseudo-terminal at PATH (a symlink)")
    px.add_argument("--baud", type=int, default=115200, metavar="N", help="device line speed (default 115200)")
    px.add_argument("--log", metavar="FILE", required=True, help="append the JSON-lines transcript to FILE")
    px.add_argument("--profile", default="", help="profile name to record in the transcript (for replay)")

    cv = sub.add_parser("coverage", help="which commands, forms, URCs and error paths a transcript exercised")
    cv.add_argument("file", help="JSON-lines transcript")
    cv.add_argument("--profile", help="profile (default: the one recorded in the file)")
    cv.add_argument("--json", action="store_true")

    from .fleet import add_parser as _add_fleet_parser   # atemu fleet: emulator/fleet.py
    _add_fleet_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (``atemu describe ti | head``): stop quietly, like other tools
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return 0


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd is None:
        build_parser().print_help()
        return 2
    if args.cmd == "profiles":
        return cmd_profiles(args)
    if args.cmd == "describe":
        return cmd_describe(args)
    if args.cmd == "run":
        return cmd_run(args)
    if args.cmd == "fleet":
        from .fleet import cmd_fleet
        return cmd_fleet(args, _die)
    if args.cmd in ("replay", "proxy", "coverage"):
        from . import transcript
        from .uart import TransportError
        if args.cmd == "replay" and not args.settle > 0:
            _die(f"--settle must be a positive number of seconds (the quiet time that ends an answer), not {args.settle}")
        if args.cmd == "replay" and args.world is None:
            args.world = _recorded_world(args.file)
        try:
            return getattr(transcript, "cmd_" + args.cmd)(args)
        except TransportError as e:        # proxy --pty: missing folder, link in use...
            _die(str(e))
    return 2


def _recorded_world(path: str) -> str | None:
    """The world file an ``atemu run --world W --log FILE`` recording ran with, if it is still there."""
    from .transcript import TranscriptError, meta as read_meta
    try:
        meta = read_meta(path)
    except TranscriptError:
        return None                     # replay itself reports an unusable file
    world = meta.get("world") if isinstance(meta, dict) and meta.get("event") == "meta" else None
    if not isinstance(world, str):
        return None
    if not Path(world).is_file():
        print(f"atemu: the recorded world {world} is gone; replaying with the built-in world "
              "(give one with --world)", file=sys.stderr)
        return None
    print(f"atemu: replaying with the recorded world {world} (--world to choose another)", file=sys.stderr)
    return world


def _profile(name: str):
    from .profile import find_profile
    try:
        return find_profile(name)
    except KeyError as e:
        _die(str(e.args[0]))


def cmd_profiles(args) -> int:
    from .profile import installed_profiles
    rows = []
    for name, cls in sorted(installed_profiles().items()):
        rows.append({"name": name, "aliases": list(cls.aliases), "default_baud": cls.default_baud,
                     "commands": cls.manual_command_count(), "urcs": len(cls.urcs), "summary": cls.summary})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            al = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
            print(f"{r['name']}{al}: {r['summary']}; {r['default_baud']} baud, {r['commands']} commands, {r['urcs']} URCs")
    return 0


def cmd_describe(args) -> int:
    cls = _profile(args.profile)
    d = cls.describe()
    d["deviations"] = list(getattr(cls, "deviations", []))
    prefix = (getattr(cls, "option_prefix", None) or cls.name) + "."
    d["world_options"] = {prefix + k: v for k, v in sorted((getattr(cls, "world_options", None) or {}).items())}
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['profile']}: {d['summary']} ({d['default_baud']} baud)")
    fam = None
    for c in sorted(d["commands"], key=lambda c: (c["family"], c["name"])):
        if c["family"] != fam:
            fam = c["family"]
            print(f"\n[{fam}]")
        forms = []
        values = {}
        empties: list[str] = []
        for form, f in c["forms"].items():
            ps = ",".join(("[" if p["optional"] else "") + "<" + p["name"] + ">" + ("]" if p["optional"] else "")
                          for p in f.get("params", []))
            forms.append({"exec": c["name"], "read": c["name"] + "?", "test": c["name"] + "=?",
                          "write": f"{c['name']}={ps}"}.get(form, c["name"]))
            for sub in f.get("subcommands", {}):
                forms.append(f'{c["name"]}="{sub}",...')
            for p in f.get("params", []):
                if p.get("empty") and p["name"] not in empties:
                    empties.append(p["name"])
                if p.get("choices"):
                    values.setdefault(p["name"], "|".join(str(x) for x in p["choices"]))
                elif p.get("range"):
                    values.setdefault(p["name"], f"{p['range'][0]}..{p['range'][1]}")
        print(f"  {' | '.join(forms)}\n      {c['doc']}")
        if values:
            print("      values: " + "; ".join(f"<{k}> {v}" for k, v in values.items()))
        if empties:   # present but may be empty: the field's comma is always written
            print("      may be empty (keep the comma): " + ", ".join(f"<{n}>" for n in empties))
    print("\nURCs:")
    for u in d["urcs"]:
        print(f"  {u['format']}\n      {u['doc']}")
    if d["world_options"]:
        print("\nWorld options (world file 'options:'):")
        for k, v in d["world_options"].items():
            print(f"  {k}\n      {v}")
    if d["deviations"]:
        print("\nDocumented choices:")
        for x in d["deviations"]:
            print(f"  - {x}")
    return 0


class _LogTrace:
    """``-v``: commands, results, URCs, errors, faults and world changes on stderr; ``-vv``: also UART bytes."""

    def __init__(self, debug: bool):
        self.debug = debug

    def __call__(self, rec: dict) -> None:
        ev = rec.get("event")
        if ev in ("rx", "tx"):
            if self.debug:
                log.debug("%s %s %r", rec.get("module"), ev, bytes.fromhex(rec.get("data", "")))
            return
        if ev == "command":
            what = repr(bytes.fromhex(rec["line"])) if isinstance(rec.get("line"), str) else rec.get("name")
        elif ev == "result" or ev == "urc":
            what = rec.get("text")
        else:
            what = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("t", "module", "event"))
        log.info("%s %s%s", rec.get("module"), ev, f" {what}" if what else "")


def _lock_state_dir(state_dir: Path):
    """Hold a lock on the state folder while running; warn when another ``atemu run`` holds it."""
    from .state import StateError, lock_state_dir
    try:
        f, held = lock_state_dir(state_dir)
    except StateError as e:
        _die(f"state folder: {e}")
    except OSError:
        return None
    if not held:
        log.warning("another atemu run uses the state folder %s, so saved settings and files are shared; "
                    "give each run its own --state-dir", state_dir)
    return f


def _exec_argv(cmd: str) -> list[str]:
    """``--exec CMD`` split like a shell; a missing program is a one-line error before anything starts."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        _die(f"--exec {cmd!r}: {e}")
    if not argv:
        _die("--exec needs a command, e.g. --exec \"python3 host.py {port}\"")
    prog = argv[0]
    if "/" in prog:
        if not (os.path.isfile(prog) and os.access(prog, os.X_OK)):
            _die(f"--exec: cannot start {prog!r}: no such executable file")
    elif shutil.which(prog) is None:
        _die(f"--exec: cannot start {prog!r}: not found on PATH (give its full path or install it)")
    return argv


def _check_hostports(args) -> None:
    """``--tcp``, ``--rfc2217``, ``--control``: a bad value names its flag before anything starts."""
    from .uart import TransportError, parse_hostport
    for flag in ("tcp", "rfc2217", "control"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        try:
            parse_hostport(value)
        except TransportError:
            _die(f"--{flag} {value!r}: not a port; give PORT (0..65535) or HOST:PORT, e.g. --{flag} 7000 "
                 f"or --{flag} 0.0.0.0:7000")


def cmd_run(args) -> int:
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="atemu: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    cls = _profile(args.profile)
    from .world import World, WorldError
    try:
        world = World.load(args.world) if args.world else World.default()
        if hasattr(cls, "validate_world"):
            cls.validate_world(world)
    except WorldError as e:
        _die(str(e))
    if sum(bool(x) for x in (args.pty, args.tcp, args.rfc2217)) > 1:
        _die("choose one of --pty, --tcp, --rfc2217")
    if args.baud is not None and args.baud <= 0:
        _die("--baud must be a positive number")
    _check_hostports(args)
    args.exec_argv = _exec_argv(args.exec_cmd) if args.exec_cmd is not None else None
    args.scenario_obj = _load_scenario(args)
    try:
        return asyncio.run(_run(cls, world, args))
    except KeyboardInterrupt:
        return 130


async def _run(cls, world, args) -> int:
    from .module import Module
    from .transcript import JsonlTranscript
    from .uart import ChildTransport, PtyTransport, Rfc2217Transport, TcpTransport, TransportError, parse_hostport
    from .state import StateError
    try:
        module = Module(cls, world=world, state_dir=args.state_dir, baud=args.baud, pacing=not args.no_pacing)
    except StateError as e:
        _die(f"state folder: {e}")
    except OSError as e:
        where = e.filename or args.state_dir or "the state folder"
        why = "a file is in the way" if isinstance(e, FileExistsError) else (e.strerror or str(e))
        _die(f"state folder {where}: {why}; pass --state-dir with a folder you can write")
    transcript = None
    if args.log:
        try:
            meta = {"profile": cls.name, "baud": module.baud, "module": module.name}
            if args.world:
                meta["world"] = str(Path(args.world).resolve())
            transcript = JsonlTranscript(args.log, meta=meta)
        except OSError as e:
            _die(f"--log {args.log}: {e.strerror}")
        module.observers.append(transcript)
    if args.verbose:
        module.observers.append(_LogTrace(debug=args.verbose >= 2))
    judge = _scenario_runner(args, module)
    exec_argv = args.exec_argv
    child_terminal = exec_argv is not None and not any("{port}" in a for a in exec_argv)
    try:
        if child_terminal:
            transport = ChildTransport(module, exec_argv)
        elif args.tcp:
            transport = TcpTransport(module, *parse_hostport(args.tcp))
        elif args.rfc2217:
            transport = Rfc2217Transport(module, *parse_hostport(args.rfc2217))
        else:
            transport = PtyTransport(module, args.pty)
        await module.start()
        await transport.start()
    except TransportError as e:
        await module.stop()
        _die(str(e))
    # after the transport: a run refused for its port says only that, not that the state folder is shared
    state_lock = _lock_state_dir(module.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    control = None
    if args.control:
        from . import api
        from .control import ControlError, ControlServer
        handle = api.wrap(module, transport)
        try:
            chost, cport = parse_hostport(args.control)
            control = ControlServer(chost, cport, token=args.control_token, token_file=args.control_token_file,
                                    modules=lambda: {handle.name: handle})
            await control.start()
        except (ControlError, TransportError, ValueError) as e:
            await transport.stop()
            await module.stop()
            _die(str(e))
    if judge is not None:
        await _scenario_setup(judge, transport, module)
    print(f"atemu: {cls.name} ready on {transport.port}", flush=True)
    if control is not None:
        print(f"atemu: control on {control.url}/", flush=True)
    status = 0
    waiters = [asyncio.ensure_future(stop.wait())]
    child = None
    if child_terminal:
        waiters.append(transport.exited)
    elif exec_argv is not None:
        argv = [a.replace("{port}", transport.port) for a in exec_argv]
        try:
            child = await asyncio.create_subprocess_exec(*argv)
        except OSError as e:
            await transport.stop()
            await module.stop()
            _die(f"--exec: cannot start {argv[0]!r}: {e.strerror or e}")
        waiters.append(asyncio.ensure_future(child.wait()))
    if judge is not None:
        verdict = await _scenario_judge(judge, args, waiters)
    else:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if child_terminal and transport.exited.done():
        status = transport.exited.result()
    elif child is not None:
        if child.returncode is None:
            child.terminate()
            status = await child.wait()
            status = 128 + signal.SIGTERM if status < 0 else status
        else:
            status = child.returncode if child.returncode >= 0 else 128 - child.returncode
    if control is not None:
        await control.stop()
    await transport.stop()
    await module.stop()
    if transcript:
        transcript.close()
    if state_lock is not None:
        state_lock.close()
    for w in waiters:
        if not w.done():
            w.cancel()
    if judge is not None:
        await judge.close()
        return verdict
    return status


# ---- scenario files (--scenario, --junit) -------------------------------------------------------------

def _load_scenario(args):
    """The checked scenario of ``--scenario`` (exit 2 naming the key when it is bad), or None."""
    if args.junit and not args.scenario:
        _die("--junit needs --scenario FILE (the report has one test case per scenario step)")
    if not args.scenario:
        return None
    from .scenario import ScenarioError, load
    try:
        return load(args.scenario)
    except ScenarioError as e:
        _die(f"--scenario {e}")


def _scenario_runner(args, module):
    if getattr(args, "scenario_obj", None) is None:
        return None
    from .scenario import ScenarioRun
    judge = ScenarioRun(args.scenario_obj, module)
    module.observers.append(judge.observe)      # before boot: the banner counts
    return judge


async def _scenario_setup(judge, transport, module) -> None:
    """Peers and the broker watcher are up before the host program starts."""
    from .scenario import ScenarioError
    try:
        await judge.setup()
    except ScenarioError as e:
        await judge.close()
        await transport.stop()
        await module.stop()
        _die(f"--scenario {e}")


async def _scenario_judge(judge, args, waiters) -> int:
    """Run the steps until they end or SIGINT/SIGTERM; print the verdict, write --junit.

    Returns 0 (passed), 1 (a step failed, the host program failed, or interrupted)."""
    stop_wait, host_waiters = waiters[0], waiters[1:]
    host = host_waiters[0] if host_waiters else None
    task = asyncio.ensure_future(judge.run(host_exited=host))
    await asyncio.wait([task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        task.cancel()
        print(f"atemu: scenario {judge.sc.name!r} interrupted before its end", file=sys.stderr, flush=True)
        return 1
    result = task.result()
    if args.junit:
        from .scenario import junit_xml
        try:
            Path(args.junit).write_text(junit_xml(result))
        except OSError as e:
            print(f"atemu: error: --junit {args.junit}: {e.strerror}", file=sys.stderr)
    if not result.passed:
        print(result.summary(), file=sys.stderr, flush=True)
        return 1
    print(result.summary(), flush=True)
    if host is not None and host.done():
        code = host.result()
        if code:
            print(f"atemu: the host program exited with status {code} during the scenario", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
