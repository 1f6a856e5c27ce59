"""Sans-IO AT command engine.

Bytes go in with :meth:`Engine.feed`; parsed events come out of :meth:`Engine.next_event`;
bytes to send back (echo) come out of :meth:`Engine.take_output`. The engine never touches a
clock, a socket or a file: callers pass ``now`` (seconds, monotonic) where timing matters
(``+++`` guard times), so the whole protocol layer is testable with plain byte strings.

Parsing is *pull* based on purpose: the engine only scans input up to the end of the next
command line when asked, so bytes that follow a command (for example a payload written by a
host that did not wait for the ``>`` prompt) stay in the buffer untouched until the command's
handler switches the engine into a data mode. Nothing that arrived is ever dropped, except
what the module itself would drop (an oversized line, noise that is not a command).
"""
from __future__ import annotations

import enum
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Callable, Iterable, Sequence

CR, LF, BS, DEL, CTRLZ, ESC = 0x0D, 0x0A, 0x08, 0x7F, 0x1A, 0x1B


class Form(enum.Enum):
    """The four V.250 forms of an extended command."""

    EXEC = "exec"    # AT+X
    READ = "read"    # AT+X?
    WRITE = "write"  # AT+X=...
    TEST = "test"    # AT+X=?


@dataclass
class Dialect:
    """Per-vendor lexical choices. A profile builds one; the engine obeys it."""

    name: str = "v250"
    #: bytes that end a command line (LF right after CR is always swallowed)
    terminators: bytes = b"\r"
    #: command names match regardless of case
    case_insensitive: bool = True
    #: longest accepted command line in bytes (without terminator)
    max_line: int = 1024
    #: echo is on after reset
    echo_default: bool = True
    #: spaces allowed around ``=`` and ``,`` and trimmed from unquoted values
    loose_spaces: bool = True
    #: ``[68656c6c6f]`` is a string written in hex (Microchip)
    hex_strings: bool = False
    #: commas inside ``[...]`` do not split parameters (TI arrays and bitmasks)
    brackets: bool = False
    #: a backslash escapes the next character inside quotes
    backslash_escapes: bool = False
    #: information lines and final results are framed V.250 style (``\r\n`` before and after)
    leading_crlf: bool = True
    #: ``AT+X=?`` answered from declarations when the profile gives no literal
    test_forms: bool = True
    #: a line that does not start with ``AT`` gets an error (otherwise it is ignored silently)
    error_on_garbage: bool = True
    #: keyword between the command prefix and name: ``AT+``, ``AT#``, ``AT$``... are all names
    basic_commands: bool = True
    #: bytes are echoed while in a data (prompt) mode
    echo_data: bool = False
    #: a length-delimited :class:`Raw` field that gets no byte for this many seconds is abandoned:
    #: the line is a ``syntax`` error (a host that sent fewer bytes than its length), None = wait forever
    raw_timeout: float | None = None


# --------------------------------------------------------------------------------------------
# Events


@dataclass
class Arg:
    """One raw parameter as written on the line."""

    text: str
    quoted: bool = False
    hexed: bool = False          # written as [hex] (dialect.hex_strings)
    raw: bytes | None = None     # length-delimited binary field (Raw params)

    @property
    def empty(self) -> bool:
        return not self.quoted and not self.hexed and self.raw is None and self.text == ""


@dataclass
class CommandLine:
    """A parsed command: ``name`` is canonical upper case without ``AT`` (``+QIOPEN``, ``E``)."""

    name: str
    form: Form
    args: list[Arg]
    line: bytes                  # the whole line as received, without terminator
    arg_text: str = ""           # everything after ``=`` as text


@dataclass
class LineError:
    """A line that cannot be a command: ``kind`` is ``too_long``, ``garbage`` or ``syntax``."""

    kind: str
    line: bytes


@dataclass
class Data:
    """A data-mode payload is complete. ``reason``: ``length``, ``terminator``, ``escape``."""

    payload: bytes
    reason: str = "length"


@dataclass
class DataCancelled:
    """The host cancelled a data phase (Esc). ``payload`` holds what had been typed."""

    payload: bytes


@dataclass
class DataOverflow:
    """More bytes than the data phase allows arrived before its terminator."""

    payload: bytes


@dataclass
class TransparentData:
    """Bytes received in transparent (online data) mode."""

    payload: bytes


@dataclass
class EscapeSequence:
    """``+++`` with guard times: leave transparent mode."""


Event = CommandLine | LineError | Data | DataCancelled | DataOverflow | TransparentData | EscapeSequence


# --------------------------------------------------------------------------------------------
# Parameters declared as data


class ParamError(Exception):
    """Raised when bound arguments do not fit the declaration. ``kind``: count, type, range, quote."""

    def __init__(self, kind: str, param: str | None, message: str):
        super().__init__(message)
        self.kind = kind
        self.param = param


_MISSING = object()


@dataclass
class Param:
    """Base class of typed parameters. ``optional`` params may be omitted or left empty."""

    name: str
    _: KW_ONLY
    optional: bool = False
    default: Any = None
    doc: str = ""

    kind = "any"

    def convert(self, arg: Arg, dialect: Dialect) -> Any:  # pragma: no cover - overridden
        return arg.text

    def range_text(self) -> str:
        return f"<{self.name}>"

    def describe(self) -> dict:
        d = {"name": self.name, "type": self.kind, "optional": self.optional}
        if self.default is not None:
            d["default"] = self.default
        if self.doc:
            d["doc"] = self.doc
        return d


def parse_int(text: str) -> int:
    """Decimal (optionally signed) or ``0x`` hexadecimal integer; ValueError otherwise."""
    t = text.strip()
    if t[:1] in "+-":
        sign, body = (-1 if t[0] == "-" else 1), t[1:]
    else:
        sign, body = 1, t
    if body[:2].lower() == "0x" and len(body) > 2:
        return sign * int(body[2:], 16)
    if not body.isdigit() or not body.isascii():
        raise ValueError(text)
    return sign * int(body)


@dataclass
class Int(Param):
    """Integer in ``lo..hi`` (inclusive), or one of ``choices``."""

    lo: int | None = None
    hi: int | None = None
    choices: Sequence[int] | None = None
    allow_hex: bool = True
    allow_quoted: bool = False

    kind = "int"

    def convert(self, arg: Arg, dialect: Dialect) -> int:
        if (arg.quoted and not self.allow_quoted) or arg.hexed or arg.raw is not None:
            raise ParamError("type", self.name, f"<{self.name}> must be an unquoted number")
        try:
            if not self.allow_hex and arg.text.strip().lower().startswith(("0x", "-0x", "+0x")):
                raise ValueError
            v = parse_int(arg.text)
        except ValueError:
            raise ParamError("type", self.name, f"<{self.name}> must be a number, got {arg.text!r}") from None
        if self.choices is not None and v not in self.choices:
            raise ParamError("range", self.name, f"<{self.name}> must be one of {list(self.choices)}")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise ParamError("range", self.name, f"<{self.name}> must be in {self.lo}..{self.hi}, got {v}")
        return v

    def range_text(self) -> str:
        if self.choices is not None:
            return "(" + ",".join(str(c) for c in self.choices) + ")"
        if self.lo is not None and self.hi is not None:
            return f"({self.lo}-{self.hi})"
        return f"<{self.name}>"

    def describe(self) -> dict:
        d = super().describe()
        if self.choices is not None:
            d["choices"] = list(self.choices)
        else:
            d["range"] = [self.lo, self.hi]
        return d


@dataclass
class Str(Param):
    """String. ``quoted``: True = quotes required, False = must be bare, None = either."""

    quoted: bool | None = True
    max_len: int | None = None
    min_len: int = 0
    choices: Sequence[str] | None = None

    kind = "string"

    def convert(self, arg: Arg, dialect: Dialect) -> str:
        if arg.raw is not None:
            raise ParamError("type", self.name, f"<{self.name}> must be a string")
        if arg.hexed:
            text = arg.text
        else:
            if self.quoted is True and not arg.quoted:
                raise ParamError("quote", self.name, f"<{self.name}> must be in double quotes")
            if self.quoted is False and arg.quoted:
                raise ParamError("quote", self.name, f"<{self.name}> must not be quoted")
            text = arg.text
        if self.choices is not None:
            for c in self.choices:
                if c.lower() == text.lower():
                    return c
            raise ParamError("range", self.name, f"<{self.name}> must be one of {list(self.choices)}")
        n = len(text.encode("utf-8", "surrogateescape"))
        if n < self.min_len or (self.max_len is not None and n > self.max_len):
            raise ParamError("range", self.name, f"<{self.name}> length must be {self.min_len}..{self.max_len}")
        return text

    def range_text(self) -> str:
        if self.choices is not None:
            return "(" + ",".join(f'"{c}"' for c in self.choices) + ")"
        return f"<{self.name}>"

    def describe(self) -> dict:
        d = super().describe()
        if self.choices is not None:
            d["choices"] = list(self.choices)
        if self.max_len is not None:
            d["max_len"] = self.max_len
        d["quoted"] = self.quoted
        return d


@dataclass
class Bytes(Str):
    """Like :class:`Str` but the value is ``bytes`` (``[hex]`` decoded exactly)."""

    kind = "bytes"

    def convert(self, arg: Arg, dialect: Dialect) -> bytes:
        text = super().convert(arg, dialect)
        return text.encode("latin-1", "surrogateescape") if arg.hexed else text.encode("utf-8", "surrogateescape")


@dataclass
class Keyword(Param):
    """Symbolic value, case-insensitive (``INET``, ``STREAM``): maps to ``values[keyword]``."""

    values: dict[str, Any] = field(default_factory=dict)
    allow_number: bool = False

    kind = "keyword"

    def convert(self, arg: Arg, dialect: Dialect) -> Any:
        key = arg.text.strip().lower()
        for k, v in self.values.items():
            if k.lower() == key:
                return v
        if self.allow_number:
            try:
                return parse_int(arg.text)
            except ValueError:
                pass
        raise ParamError("range", self.name, f"<{self.name}> must be one of {', '.join(self.values)}")

    def range_text(self) -> str:
        return "(" + ",".join(self.values) + ")"

    def describe(self) -> dict:
        d = super().describe()
        d["choices"] = list(self.values)
        return d


@dataclass
class Flags(Param):
    """Bitmask written as ``a|b|c`` or ``[a|b]``; value is the OR of ``values`` (or a number)."""

    values: dict[str, int] = field(default_factory=dict)

    kind = "flags"

    def convert(self, arg: Arg, dialect: Dialect) -> int:
        text = arg.text.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        total = 0
        for part in text.split("|"):
            p = part.strip()
            if not p:
                continue
            for k, v in self.values.items():
                if k.lower() == p.lower():
                    total |= v
                    break
            else:
                try:
                    total |= parse_int(p)
                except ValueError:
                    raise ParamError("range", self.name, f"<{self.name}>: unknown flag {p!r}") from None
        return total

    def describe(self) -> dict:
        d = super().describe()
        d["flags"] = dict(self.values)
        return d


@dataclass
class Raw(Param):
    """Length-delimited binary field (TI ``format,length,data``).

    When the value of parameter ``format_param`` equals ``raw_format`` (or there is no format
    param), the engine reads exactly ``length_param`` bytes after the comma verbatim, so the data
    may contain commas, quotes, CR and LF. Otherwise the field is text (e.g. Base64) up to the
    next comma / end of line. The value is ``bytes`` (raw) or ``str`` (text).
    """

    length_param: str = "length"
    format_param: str | None = "format"
    raw_format: int = 0

    kind = "data"

    def convert(self, arg: Arg, dialect: Dialect) -> Any:
        if arg.raw is not None:
            return arg.raw
        return arg.text


@dataclass
class Rest(Param):
    """Everything that remains on the line, verbatim (for free-form tails)."""

    kind = "rest"

    def convert(self, arg: Arg, dialect: Dialect) -> str:
        return arg.text


# --------------------------------------------------------------------------------------------
# Command declarations


@dataclass
class FormSpec:
    """One form of one command: its parameters and its handler."""

    form: Form
    params: list[Param] = field(default_factory=list)
    handler: str | None = None          # attribute name on the profile
    sub: str | None = None              # first-argument selector (``AT+QICFG="keepalive",...``)
    test: str | None = None             # literal answer to =? (info line), for Form.TEST
    doc: str = ""
    responses: list[str] = field(default_factory=list)  # documented response lines, for describe


@dataclass
class CommandSpec:
    """Everything the module knows about one command, declared as data."""

    name: str                                   # canonical, e.g. "+AWSPUBOPEN", "E", "+Socket"
    family: str = "general"
    doc: str = ""
    forms: dict[Form, FormSpec] = field(default_factory=dict)
    subs: dict[str, FormSpec] = field(default_factory=dict)   # WRITE subcommands by lower key
    sub_read: dict[str, FormSpec] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.name.upper()

    def describe(self) -> dict:
        out: dict[str, Any] = {"name": "AT" + self.name, "family": self.family, "doc": self.doc, "forms": {}}
        for form, fs in self.forms.items():
            out["forms"][form.value] = _describe_form(fs)
        if self.subs:
            out["forms"].setdefault("write", {"params": []})
            out["forms"]["write"]["subcommands"] = {k: _describe_form(v) for k, v in self.subs.items()}
        if self.sub_read:
            out["forms"].setdefault("write", {"params": []})
            out["forms"]["write"]["query_subcommands"] = {k: _describe_form(v) for k, v in self.sub_read.items()}
        return out


def _describe_form(fs: FormSpec) -> dict:
    d: dict[str, Any] = {"params": [p.describe() for p in fs.params]}
    if fs.test:
        d["answer"] = fs.test
    if fs.doc:
        d["doc"] = fs.doc
    if fs.responses:
        d["responses"] = fs.responses
    return d


@dataclass
class UrcSpec:
    """An unsolicited result code, for ``atemu describe`` and coverage."""

    name: str
    format: str
    doc: str = ""
    family: str = "general"

    def describe(self) -> dict:
        return {"name": self.name, "format": self.format, "doc": self.doc, "family": self.family}


def bind(fs: FormSpec, args: list[Arg], dialect: Dialect, skip: int = 0) -> list[Any]:
    """Convert raw ``args`` (after ``skip`` leading ones) to typed values per ``fs.params``.

    Missing optional params get their default; an empty field counts as missing. Raises
    :class:`ParamError` with ``kind`` ``count``, ``type``, ``range`` or ``quote``.
    """
    args = args[skip:]
    params = fs.params
    if params and isinstance(params[-1], Rest):
        if len(args) >= len(params):
            tail = args[len(params) - 1:]
            merged = ",".join(('"%s"' % a.text) if a.quoted else a.text for a in tail)
            args = args[: len(params) - 1] + [Arg(merged)]
    if len(args) > len(params):
        raise ParamError("count", None, f"too many parameters: {len(args)} given, at most {len(params)}")
    values: list[Any] = []
    for i, p in enumerate(params):
        if i >= len(args) or args[i].empty:
            if not p.optional:
                raise ParamError("count", p.name, f"missing parameter <{p.name}>")
            values.append(p.default)
            continue
        values.append(p.convert(args[i], dialect))
    return values


# --------------------------------------------------------------------------------------------
# Argument tokenizer


def split_args(text: str, dialect: Dialect, raw_fields: dict[int, bytes] | None = None) -> list[Arg]:
    """Split the text after ``=`` into :class:`Arg` items.

    Commas inside quotes (and inside brackets when ``dialect.brackets``) do not split. A
    ``[hex]`` string becomes ``Arg(hexed=True)`` with its decoded text when ``dialect.hex_strings``.
    ``raw_fields`` maps field index to the verbatim bytes captured by the framer.
    Raises :class:`ParamError` (``syntax``) for an unterminated quote or bad hex.
    """
    args: list[Arg] = []
    if text.strip() == "" and not raw_fields:
        return args
    i, n = 0, len(text)
    idx = 0
    while True:
        if raw_fields and idx in raw_fields:
            # the framer replaced this field with a placeholder NUL; skip it
            j = text.find(",", i)
            if text[i:j if j >= 0 else n] != "\0":
                raise ParamError("syntax", None, "text after a length-delimited data field")
            args.append(Arg("", raw=raw_fields[idx]))
            if j < 0:
                break
            i = j + 1
            idx += 1
            continue
        # skip leading spaces
        if dialect.loose_spaces:
            while i < n and text[i] in " \t":
                i += 1
        if i < n and text[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ParamError("syntax", None, "unterminated quoted string")
                c = text[i]
                if c == "\\" and dialect.backslash_escapes and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c == '"':
                    i += 1
                    break
                buf.append(c)
                i += 1
            arg = Arg("".join(buf), quoted=True)
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] != ",":
                raise ParamError("syntax", None, "text after closing quote")
        else:
            start = i
            depth = 0
            while i < n:
                c = text[i]
                if c == "[" and dialect.brackets:
                    depth += 1
                elif c == "]" and dialect.brackets and depth:
                    depth -= 1
                elif c == "," and depth == 0:
                    break
                i += 1
            tok = text[start:i]
            if dialect.loose_spaces:
                tok = tok.strip(" \t")
            if dialect.hex_strings and len(tok) >= 2 and tok[0] == "[" and tok[-1] == "]":
                h = tok[1:-1]
                try:
                    arg = Arg(bytes.fromhex(h).decode("latin-1"), hexed=True)
                except ValueError:
                    raise ParamError("syntax", None, f"bad hex string {tok!r}") from None
            else:
                arg = Arg(tok)
        args.append(arg)
        idx += 1
        if i >= n:
            break
        # at a comma
        i += 1
        if i >= n:
            if raw_fields and idx in raw_fields:
                args.append(Arg("", raw=raw_fields[idx]))
            else:
                args.append(Arg(""))
            break
    return args


# --------------------------------------------------------------------------------------------
# The engine


@dataclass
class _DataMode:
    length: int | None              # exact byte count, or None for terminator-delimited
    marker: bytes | None = None     # skip input until this byte (Microchip '#')
    terminator: bytes | None = None  # b"\x1a" or b"+++"
    cancel: bytes | None = None      # b"\x1b"
    max_len: int | None = None
    marker_seen: bool = False


@dataclass
class _Transparent:
    guard: float
    pending: bytearray = field(default_factory=bytearray)
    last_rx: float = -1e9
    pending_since: float = 0.0
    quiet_before: bool = False


class Engine:
    """The sans-IO AT engine for one module.

    ``specs`` maps canonical upper-case command names (``+AWSPUBOPEN``) to :class:`CommandSpec`;
    it is only consulted for :class:`Raw` fields that must be framed by length.
    """

    def __init__(self, dialect: Dialect, specs: dict[str, CommandSpec] | None = None):
        self.dialect = dialect
        self.specs = specs or {}
        self.echo = dialect.echo_default
        self._in = bytearray()
        self._out = bytearray()
        self._line = bytearray()
        self._overflow = False
        self._raw_need = 0                 # bytes still to copy verbatim into the line
        self._last_rx = 0.0                # when bytes last arrived (dialect.raw_timeout)
        self._raw_fields: dict[int, bytes] = {}
        self._raw_acc = bytearray()
        self._raw_idx = 0
        self._after_cr = False
        self._data: _DataMode | None = None
        self._data_buf = bytearray()
        self._transparent: _Transparent | None = None
        self.last_line: bytes | None = None
        #: optional profile hook deciding the framing of a :class:`Raw` field at run time:
        #: ``hook(command_name, field_index, args_so_far) -> None`` (use the declaration),
        #: ``-1`` (the field is text) or ``n >= 0`` (read exactly ``n`` bytes verbatim)
        self.raw_field_hook: Callable[[str, int, list[Arg]], int | None] | None = getattr(self, "raw_field_hook", None)

    # ---- input / output ----------------------------------------------------------------
    def feed(self, data: bytes, now: float = 0.0) -> None:
        """Append received bytes. In transparent mode, also tracks guard timing."""
        if self._transparent is not None and data:
            self._feed_transparent(bytes(data), now)
            return
        self._in += data
        self._last_rx = now

    def take_output(self) -> bytes:
        """Bytes the engine wants sent to the host (echo), in order."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._in) + len(self._line) + len(self._data_buf)

    def reset(self) -> None:
        """Forget all input (module reboot) and restore the dialect's echo default."""
        self.__init__(self.dialect, self.specs)

    # ---- modes --------------------------------------------------------------------------
    def expect_data(self, length: int | None = None, *, marker: bytes | None = None,
                    terminator: bytes | None = None, cancel: bytes | None = None,
                    max_len: int | None = None) -> None:
        """Switch to a data phase; bytes already buffered count toward it."""
        self._data = _DataMode(length, marker, terminator, cancel, max_len)
        self._data_buf.clear()

    def cancel_data(self) -> bytes:
        """Leave the data phase (e.g. on timeout) and return the bytes collected so far."""
        got = bytes(self._data_buf)
        self._data = None
        self._data_buf.clear()
        return got

    @property
    def in_data_mode(self) -> bool:
        return self._data is not None

    def enter_transparent(self, guard: float = 1.0, now: float = 0.0) -> bytes:
        """Switch to transparent mode; returns bytes already buffered (to forward as data)."""
        self._transparent = _Transparent(guard=guard, last_rx=now)
        rest = bytes(self._in)
        self._in.clear()
        return rest

    def leave_transparent(self) -> None:
        self._transparent = None

    @property
    def transparent(self) -> bool:
        return self._transparent is not None

    # ---- transparent mode ---------------------------------------------------------------
    def _feed_transparent(self, data: bytes, now: float) -> None:
        t = self._transparent
        assert t is not None
        quiet = (now - t.last_rx) >= t.guard
        t.last_rx = now
        if not t.pending and quiet and data and set(data) <= {0x2B} and len(data) <= 3:
            t.pending += data
            t.pending_since = now
            return
        if t.pending:
            if set(data) <= {0x2B} and len(t.pending) + len(data) <= 3 and (now - t.pending_since) < t.guard:
                t.pending += data
                return
            self._in += t.pending
            t.pending.clear()
        self._in += data

    def next_deadline(self) -> float | None:
        """When :meth:`poll` should next be called (transparent escape guard), or None."""
        t = self._transparent
        if t is not None and len(t.pending) == 3:
            return t.last_rx + t.guard
        if self._raw_need and self.dialect.raw_timeout is not None:
            return self._last_rx + self.dialect.raw_timeout
        return None

    def poll(self, now: float) -> EscapeSequence | LineError | None:
        """Timer tick: report ``+++`` once the trailing guard time has passed in silence; abandon a
        raw field that stopped arriving (``dialect.raw_timeout``) with a ``syntax`` line error."""
        if self._raw_need and self.dialect.raw_timeout is not None and not self._in \
                and now - self._last_rx >= self.dialect.raw_timeout:
            line = bytes(self._line)
            self._line.clear()
            self._raw_fields = {}
            self._raw_need = 0
            self._raw_acc = bytearray()
            return LineError("syntax", line)
        t = self._transparent
        if t is not None and len(t.pending) == 3 and now - t.last_rx >= t.guard:
            t.pending.clear()
            self._transparent = None
            return EscapeSequence()
        if t is not None and t.pending and len(t.pending) < 3 and now - t.pending_since >= t.guard:
            self._in += t.pending
            t.pending.clear()
        return None

    # ---- event extraction ---------------------------------------------------------------
    def next_event(self) -> Event | None:
        """Parse and return the next event from buffered input, or None if more is needed."""
        if self._transparent is not None:
            if self._in:
                data = bytes(self._in)
                self._in.clear()
                return TransparentData(data)
            return None
        if self._data is not None:
            return self._next_data()
        return self._next_line()

    def _next_data(self) -> Event | None:
        d = self._data
        assert d is not None
        buf = self._in
        i = 0
        ev: Event | None = None
        if self._after_cr and buf and not self._data_buf:
            # the host ended the command with CR LF: the LF belongs to the line, not to the payload
            if buf[0] == LF:
                del buf[0]
            self._after_cr = False
        if d.marker is not None and not d.marker_seen:
            j = buf.find(d.marker)
            if j < 0:
                del buf[:]
                return None
            del buf[: j + len(d.marker)]
            d.marker_seen = True
        while i < len(buf):
            if d.length is not None and d.length > 0 and len(self._data_buf) >= d.length:
                break
            b = buf[i]
            if d.cancel is not None and b == d.cancel[0]:
                i += 1
                ev = DataCancelled(bytes(self._data_buf))
                break
            self._data_buf.append(b)
            i += 1
            if d.terminator is not None and self._data_buf.endswith(d.terminator):
                del self._data_buf[-len(d.terminator):]
                ev = Data(bytes(self._data_buf), "terminator")
                break
            if d.max_len is not None and len(self._data_buf) > d.max_len:
                ev = DataOverflow(bytes(self._data_buf))
                break
        if self.dialect.echo_data and self.echo:
            self._out += buf[:i]
        del buf[:i]
        if ev is None and d.length is not None and d.length > 0 and len(self._data_buf) >= d.length:
            ev = Data(bytes(self._data_buf), "length")
        if ev is not None:
            self._data = None
            self._data_buf.clear()
        return ev

    def _raw_field_length(self) -> int | None:
        """At a comma inside a line: should the next field be taken verbatim? Returns its length."""
        line = bytes(self._line)
        try:
            text = line.decode("latin-1")
        except Exception:  # pragma: no cover
            return None
        up = text.upper()
        if not up.startswith("AT") or "=" not in text:
            return None
        name, _, rest = text[2:].partition("=")
        spec = self.specs.get(name.strip().upper())
        if spec is None:
            return None
        fs = spec.forms.get(Form.WRITE)
        if fs is None:
            return None
        raw_params = [p for p in fs.params if isinstance(p, Raw)]
        if not raw_params:
            return None
        try:
            args = split_args(rest + "\0", self.dialect, dict(self._raw_fields))
        except ParamError:
            return None
        idx = len(args) - 1          # index of the field that starts after this comma
        if idx >= len(fs.params) or not isinstance(fs.params[idx], Raw):
            return None
        p: Raw = fs.params[idx]  # type: ignore[assignment]
        names = [q.name for q in fs.params]
        if self.raw_field_hook is not None:
            try:
                hooked = self.raw_field_hook(spec.key, idx, args[:idx])
            except Exception:
                hooked = -1
            if hooked is not None:
                if hooked < 0 or hooked > 1 << 20:
                    return None
                self._raw_idx = idx
                return hooked
        try:
            if p.format_param is not None:
                fi = names.index(p.format_param)
                if parse_int(args[fi].text) != p.raw_format:
                    return None
            li = names.index(p.length_param)
            length = parse_int(args[li].text)
        except (ValueError, IndexError):
            return None
        if length < 0 or length > 1 << 20:
            return None
        self._raw_idx = idx
        return length

    def _next_line(self) -> Event | None:
        d = self.dialect
        buf = self._in
        i = 0
        n = len(buf)
        result: Event | None = None
        echo = self.echo
        while i < n:
            if self._raw_need:
                take = min(self._raw_need, n - i)
                chunk = buf[i:i + take]
                self._raw_acc += chunk
                if echo:
                    self._out += chunk
                self._raw_need -= take
                i += take
                if not self._raw_need:
                    self._raw_fields[self._raw_idx] = bytes(self._raw_acc)
                    self._line += b"\0"
                continue
            b = buf[i]
            i += 1
            if b == LF and self._after_cr:
                self._after_cr = False
                if echo:
                    self._out.append(b)
                continue
            self._after_cr = False
            if b in d.terminators or (b == LF and LF in d.terminators):
                if echo:
                    self._out.append(b)
                self._after_cr = b == CR
                result = self._finish_line()
                if result is not None:
                    break
                continue
            if b in (BS, DEL):
                if echo:
                    self._out += bytes([b])
                if self._line and not self._raw_fields:
                    del self._line[-1]
                continue
            if echo:
                self._out.append(b)
            if self._overflow:
                continue
            if len(self._line) >= d.max_line:
                self._overflow = True
                self._line.clear()
                self._raw_fields = {}
                continue
            self._line.append(b)
            if b == 0x2C and self.specs and not self._in_quotes():
                n_raw = self._raw_field_length()
                if n_raw is not None:
                    if n_raw == 0:
                        self._raw_fields[self._raw_idx] = b""
                        self._line += b"\0"
                    else:
                        self._raw_need = n_raw
                        self._raw_acc = bytearray()
        del buf[:i]
        return result

    def _in_quotes(self) -> bool:
        return self._line.count(b'"') % 2 == 1

    def _finish_line(self) -> Event | None:
        line = bytes(self._line)
        self._line.clear()
        raw_fields, self._raw_fields = self._raw_fields, {}
        if self._overflow:
            self._overflow = False
            return LineError("too_long", b"")
        if not line.strip(b" \t\0"):
            return None
        stripped = line.strip(b" \t") if raw_fields else line.strip(b" \t\0")
        if stripped[:2].upper() != b"AT":
            if self.dialect.error_on_garbage:
                return LineError("garbage", line)
            return None
        try:
            ev = self.parse_command(stripped, raw_fields)
        except ParamError:
            return LineError("syntax", line)
        if isinstance(ev, CommandLine):
            self.last_line = stripped
        return ev

    def parse_command(self, line: bytes, raw_fields: dict[int, bytes] | None = None) -> CommandLine:
        """Parse one complete line starting with ``AT`` (no terminator)."""
        text = line.decode("latin-1")
        body = text[2:]
        d = self.dialect
        if d.loose_spaces:
            body = body.lstrip(" ")
        if body == "":
            return CommandLine("", Form.EXEC, [], line)
        # name: extended (+X, #X, $X, %X, &X..) or basic (E0, V1, Z, &F)
        if body[0] in "+#$%^*":
            j = 1
            if d.loose_spaces:
                while j < len(body) and body[j] == " ":
                    j += 1
            k = j
            while k < len(body) and (body[k].isalnum() or body[k] in "_.-") and body[k].isascii():
                k += 1
            name = body[0] + body[j:k]
            rest = body[k:]
            if k == j:
                raise ParamError("syntax", None, "empty command name")
        else:
            # basic command: one letter (or &+letter) followed by an optional number
            k = 1 if body[0] != "&" else 2
            if k > len(body) or not body[k - 1].isalpha():
                raise ParamError("syntax", None, "bad basic command")
            name = body[:k]
            rest = body[k:]
            if not rest.startswith(("=", "?")) and not rest.lstrip().startswith("="):
                num = rest.strip()
                if num and not num.isdigit():
                    raise ParamError("syntax", None, "bad basic command argument")
                return CommandLine(name.upper() if d.case_insensitive else name, Form.WRITE if num else Form.EXEC,
                                   [Arg(num)] if num else [], line, num)
        if d.case_insensitive:
            name = name.upper()
        r = rest.strip(" ") if d.loose_spaces else rest
        if r == "":
            return CommandLine(name, Form.EXEC, [], line)
        if r == "?":
            return CommandLine(name, Form.READ, [], line)
        if r.startswith("="):
            after = r[1:]
            if (after.strip(" ") if d.loose_spaces else after) == "?":
                return CommandLine(name, Form.TEST, [], line)
            return CommandLine(name, Form.WRITE, split_args(after, d, raw_fields), line, after)
        raise ParamError("syntax", None, "unexpected text after command name")
