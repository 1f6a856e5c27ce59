"""Profiles: a vendor's dialect, its commands declared as data, and their handlers.

A profile subclasses :class:`Profile` and tags handler coroutines with :func:`command`::

    class Mine(Profile):
        name = "mine"
        @command("+FOO", Form.WRITE, Int("idx", 0, 7), Str("topic"), family="demo", doc="...")
        async def foo(self, ctx, idx, topic):
            ctx.info(f"+FOO: {idx}")
            # returning None sends the dialect's OK

The declarations feed the parser (typed parameters, ranges, quoting), ``AT+X=?`` answers,
``atemu describe`` and coverage, from one place. Profiles are discovered through the
``atemu.profiles`` entry-point group, so third parties can ship their own.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .grammar import CommandSpec, Dialect, Form, FormSpec, Int, Param, UrcSpec

if TYPE_CHECKING:  # pragma: no cover
    from .module import Ctx, Module


class CmdError(Exception):
    """A command failed. The profile turns it into its vendor's error line.

    ``kind``: ``unknown`` (no such command, or ``param_kind="form"``: a known command in a form it
    lacks), ``param`` (bad parameters: see ``param_kind``),
    ``syntax``, ``too_long``, ``garbage``, ``failed`` (operation failed), ``busy``, ``internal``.
    ``code`` is an optional vendor error code; ``message`` a human description (for logs).
    """

    def __init__(self, kind: str = "failed", code: Any = None, message: str = "", param_kind: str | None = None):
        super().__init__(message or kind)
        self.kind = kind
        self.code = code
        self.message = message or kind
        self.param_kind = param_kind


@dataclass
class _Decl:
    name: str
    form: Form
    params: tuple
    sub: str | None
    family: str | None
    doc: str
    test: str | None
    responses: tuple
    builtin: bool


def command(name: str, form: Form = Form.WRITE, *params: Param, sub: str | None = None,
            family: str | None = None, doc: str = "", test: str | None = None,
            responses: tuple | list = (), builtin: bool = False) -> Callable:
    """Declare that the decorated coroutine handles ``AT<name>`` in ``form``.

    ``sub`` selects a subcommand by the first (string) argument, e.g. ``AT+QICFG="keepalive",...``;
    its params then describe the arguments after the selector. ``test`` is the literal info line
    answering ``AT<name>=?`` (when omitted and the dialect has test forms, it is generated).
    """

    def deco(fn: Callable) -> Callable:
        decls = fn.__dict__.setdefault("_at_decls", [])
        decls.append(_Decl(name, form, tuple(params), sub, family, doc, test, tuple(responses), builtin))
        return fn

    return deco


def test_answer(name: str, text: str | None, family: str | None = None, doc: str = "") -> Callable:
    """Class decorator helper: register a literal ``=?`` answer without a handler."""

    def deco(cls):
        cls._extra_tests = dict(getattr(cls, "_extra_tests", {}))
        cls._extra_tests[name.upper()] = (name, text, family, doc)
        return cls

    return deco


def _canon(name: str, dialect: Dialect) -> str:
    return name.upper() if dialect.case_insensitive else name


class Profile:
    """Base class of every vendor profile. One instance per module boot."""

    #: profile id used on the command line
    name: str = ""
    aliases: tuple[str, ...] = ()
    summary: str = ""
    default_baud: int = 115200
    dialect: Dialect = Dialect()
    #: URCs the profile can emit (for describe and coverage)
    urcs: list[UrcSpec] = []
    #: command families in manual order (for describe)
    families: tuple[str, ...] = ()
    #: names of the commands that come from the manual (others are builtins)
    commands: dict[str, CommandSpec] = {}
    builtins: set[str] = set()
    #: saved settings holding secrets the key names do not show: settings key -> positions in its
    #: list value (snapshots mask them, see api.mask_secrets)
    secret_settings: dict[str, tuple[int, ...]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        specs: dict[str, CommandSpec] = {}
        builtins: set[str] = set()
        doc_from: dict[str, type] = {}      # the class whose declaration gave a command its doc
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                # the most derived definition of a handler wins: a subclass that redefines a
                # declared handler (or sets it to None) replaces (or drops) the base's declarations
                winner = cls._winning_attr(attr)
                if winner is not fn and (winner is None or getattr(winner, "_at_decls", None) is not None):
                    continue
                for d in getattr(fn, "_at_decls", ()):
                    key = _canon(d.name, cls.dialect)
                    spec = specs.get(key)
                    if spec is None:
                        spec = specs[key] = CommandSpec(d.name, family=d.family or "general", doc=d.doc)
                        if d.doc:
                            doc_from[key] = klass
                    if d.family:
                        spec.family = d.family
                    if d.doc and (not spec.doc or doc_from.get(key) is not klass):
                        spec.doc = d.doc          # a subclass redeclaring a command describes it anew
                        doc_from[key] = klass
                    fs = FormSpec(d.form, list(d.params), attr, d.sub, None, d.doc, list(d.responses))
                    if d.sub is not None:
                        table = spec.subs if d.form == Form.WRITE else spec.sub_read
                        table[d.sub.lower()] = fs
                    else:
                        spec.forms[d.form] = fs
                    if d.test is not None:
                        spec.forms[Form.TEST] = FormSpec(Form.TEST, [], None, None, d.test)
                    if d.builtin:
                        builtins.add(key)
                    elif key in builtins and klass is not Profile:
                        builtins.discard(key)
        for key, (name, text, family, doc) in getattr(cls, "_extra_tests", {}).items():
            k = _canon(name, cls.dialect)
            spec = specs.setdefault(k, CommandSpec(name, family=family or "general", doc=doc))
            spec.forms[Form.TEST] = FormSpec(Form.TEST, [], None, None, text)
        cls.commands = specs
        cls.builtins = builtins

    @classmethod
    def _winning_attr(cls, attr: str) -> Any:
        for klass in cls.__mro__:
            if attr in vars(klass):
                return vars(klass)[attr]
        return None

    def __init__(self, module: "Module"):
        self.module = module

    #: world-file ``options`` this profile reads: option name (without the prefix) -> meaning.
    #: ``None`` means the profile declares none and options are not checked.
    world_options: dict[str, str] | None = None
    #: the prefix of this profile's options (``<prefix>.<option>``); default: the profile name
    option_prefix: str | None = None

    @classmethod
    def validate_world(cls, world: Any) -> None:
        """Reject world options with this profile's prefix that it does not know (WorldError)."""
        if cls.world_options is None:
            return
        from .world import WorldError
        prefix = (cls.option_prefix or cls.name) + "."
        for key in getattr(world, "options", {}) or {}:
            if key.startswith(prefix) and key[len(prefix):] not in cls.world_options:
                known = ", ".join(prefix + k for k in sorted(cls.world_options)) or "none"
                where = f"{world.source}: " if getattr(world, "source", None) else ""
                raise WorldError(f"{where}unknown option '{key}' for {cls.name} (known: {known})")

    # ---- lifecycle hooks ------------------------------------------------------------------
    async def boot(self) -> None:
        """Called after power-up / reboot, once the UART is live: emit the ready banner here
        (``self.module.boot_cause`` says why: "power", "pin" or "command")."""

    #: True while :meth:`take_raw` wants the host's bytes before the AT engine sees them
    raw_input = False

    def take_raw(self, data: bytes) -> bytes:
        """Bytes from the host while :attr:`raw_input` is True (a bootloader's handshake, say):
        return what the AT engine should still see."""
        return data

    async def shutdown(self) -> None:
        """Release every network resource (sockets, MQTT, HTTP). Called on stop and reboot."""

    # ---- control-plane hooks (emulator/api.py, emulator/faults.py) -------------------------
    def wake_up(self) -> bool:
        """The host raised the module's wake-up pin (``ModuleHandle.wakeup``, control ``/wakeup``).
        A profile with a low-power mode leaves it here; return True when the module was asleep."""
        return False

    def snapshot(self) -> dict:
        """Profile-specific live state for ``ModuleHandle.snapshot()["state"]`` (JSON-able):
        link state, sockets, MQTT sessions... The generic part (world, coverage, settings, files)
        is added by the core."""
        return {}

    def world_changed(self, change: dict) -> None:
        """``module.world`` was just mutated by a test or a fault (``change["change"]``:
        ``ap_removed``/``remove_ap``, ``ap_added``/``add_ap``, ``deauth``, ``rssi``/``set_rssi``,
        ``cellular``, ``set_dns``, ``set_ble_value``, ``ble_notify``...). React like the module
        would (drop the Wi-Fi link, emit a URC)."""

    # ---- dialect hooks -----------------------------------------------------------------
    def format_error(self, err: CmdError) -> str:
        """The final result line for a failed command."""
        return "ERROR"

    def format_ok(self) -> str:
        return "OK"

    def result_suffix(self) -> bytes:
        """Bytes sent right after every final result line (a prompt such as ``>``); default none."""
        return b""

    def render_line(self, text: str) -> str:
        """A response or URC line as the module prints it (a dialect may rename lines, e.g. RNWF's
        numeric mode). Default: unchanged."""
        return text

    def frame_urc(self, chunk: bytes) -> bytes:
        """The bytes of an unsolicited result as framed by the dialect (line + data + trailer);
        a profile may wrap them (a leading CR over a prompt, a prompt after)."""
        return chunk

    def test_line(self, spec: CommandSpec) -> str | None:
        """Generated ``=?`` answer from the WRITE declaration (``+X: (0-1),<topic>``)."""
        fs = spec.forms.get(Form.WRITE)
        if fs is None or not fs.params:
            return None
        return f"{spec.name}: " + ",".join(p.range_text() for p in fs.params)

    # ---- builtins: every AT module has these -----------------------------------------
    @command("", Form.EXEC, doc="Attention: answers OK", builtin=True, family="basic")
    async def _at(self, ctx: "Ctx") -> None:
        return None

    @command("E", Form.EXEC, doc="Echo off (same as ATE0)", builtin=True, family="basic")
    async def _echo_exec(self, ctx: "Ctx") -> None:
        self.module.engine.echo = False

    @command("E", Form.WRITE, Int("n", 0, 1),
             doc="ATE0 echo off, ATE1 echo on", builtin=True, family="basic")
    async def _echo(self, ctx: "Ctx", n: int) -> None:
        self.module.engine.echo = bool(n)

    # ---- describe ---------------------------------------------------------------------
    #: manual entries that are not command lines (``+++`` escape sequences), for describe and counts:
    #: ``{"name": "+++", "family": ..., "doc": ..., "forms": {"escape": {...}}}``
    pseudo_commands: list[dict] = []

    @classmethod
    def manual_command_count(cls) -> int:
        return len(cls.commands) - len(cls.builtins) + len(cls.pseudo_commands)

    @classmethod
    def describe(cls) -> dict:
        manual = [s for k, s in cls.commands.items() if k not in cls.builtins]
        return {
            "profile": cls.name,
            "aliases": list(cls.aliases),
            "summary": cls.summary,
            "default_baud": cls.default_baud,
            "dialect": cls.dialect.name,
            "commands": [s.describe() for s in manual] + [dict(p) for p in cls.pseudo_commands],
            "builtins": [cls.commands[k].describe() for k in sorted(cls.builtins)],
            "urcs": [u.describe() for u in cls.urcs],
        }


# ------------------------------------------------------------------------------------------
# Registry


def installed_profiles() -> dict[str, type[Profile]]:
    """All profiles from the ``atemu.profiles`` entry points, by name (aliases not included)."""
    found: dict[str, type[Profile]] = {}
    for ep in importlib.metadata.entry_points(group="atemu.profiles"):
        try:
            cls = ep.load()
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("atemu.profiles."):
                continue  # a built-in profile not present in this checkout
            import logging
            logging.getLogger("atemu").warning("profile %s failed to load: %s", ep.name, e)
            continue
        except Exception as e:  # a broken third-party plugin must not break the CLI
            import logging
            logging.getLogger("atemu").warning("profile %s failed to load: %s", ep.name, e)
            continue
        found[cls.name or ep.name] = cls
    if not found:  # running from a source tree without an install
        from atemu.profiles import BUILTIN_PROFILES
        for cls in BUILTIN_PROFILES:
            found[cls.name] = cls
    return found


def find_profile(name: str) -> type[Profile]:
    """Look a profile up by name or alias (case-insensitive); KeyError with the choices."""
    profs = installed_profiles()
    key = name.lower()
    for cls in profs.values():
        if cls.name.lower() == key or key in (a.lower() for a in cls.aliases):
            return cls
    raise KeyError(f"unknown profile {name!r}; installed: {', '.join(sorted(profs))}")
