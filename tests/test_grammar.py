"""The sans-IO engine on its own: bytes in, events and echo bytes out. No pty, no clock."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from atemu.grammar import (Arg, CommandLine, CommandSpec, Data, DataCancelled, DataOverflow, Dialect, Engine,
                              EscapeSequence, Flags, Form, FormSpec, Int, Keyword, LineError, ParamError, Raw, Rest,
                              Str, Bytes, TransparentData, bind, split_args)


def events(engine: Engine) -> list:
    out = []
    while True:
        ev = engine.next_event()
        if ev is None:
            return out
        out.append(ev)


def one(data: bytes, dialect: Dialect | None = None, specs=None):
    e = Engine(dialect or Dialect(echo_default=False), specs)
    e.feed(data)
    evs = events(e)
    assert len(evs) == 1, evs
    return evs[0]


def test_forms():
    assert one(b"AT\r") == CommandLine("", Form.EXEC, [], b"AT")
    ev = one(b"AT+AWSSTATE?\r")
    assert (ev.name, ev.form) == ("+AWSSTATE", Form.READ)
    ev = one(b"at+awsstate=?\r")
    assert (ev.name, ev.form) == ("+AWSSTATE", Form.TEST)
    ev = one(b"AT+QCCID\r")
    assert (ev.name, ev.form, ev.args) == ("+QCCID", Form.EXEC, [])
    ev = one(b'AT+AWSPUBOPEN=0, "my topic, with comma"\r')
    assert ev.form == Form.WRITE
    assert ev.args == [Arg("0"), Arg("my topic, with comma", quoted=True)]


def test_basic_commands():
    ev = one(b"ATE0\r")
    assert (ev.name, ev.form, ev.args[0].text) == ("E", Form.WRITE, "0")
    ev = one(b"ATE\r")
    assert (ev.name, ev.form) == ("E", Form.EXEC)
    assert isinstance(one(b"ATEx\r"), LineError)


def test_crlf_and_cr_and_lf_swallowed():
    e = Engine(Dialect(echo_default=False))
    e.feed(b"AT\r\nAT\rAT\r\n")
    evs = events(e)
    assert [type(x) for x in evs] == [CommandLine] * 3


def test_echo_is_exact_input():
    e = Engine(Dialect(echo_default=True))
    e.feed(b"AT+X=1\r\n")
    events(e)
    assert e.take_output() == b"AT+X=1\r\n"


def test_backspace_edits_line():
    ev = one(b"AT+QCX\x08CID\r")
    assert ev.name == "+QCCID"


def test_oversized_line_rejected_and_resync():
    e = Engine(Dialect(echo_default=False, max_line=16))
    e.feed(b"AT+" + b"X" * 100 + b"\rAT\r")
    evs = events(e)
    assert isinstance(evs[0], LineError) and evs[0].kind == "too_long"
    assert evs[1] == CommandLine("", Form.EXEC, [], b"AT")


def test_garbage_line():
    ev = one(b"\x00\xffhello\r")
    assert isinstance(ev, LineError) and ev.kind == "garbage"
    e = Engine(Dialect(echo_default=False, error_on_garbage=False))
    e.feed(b"hello\r\r\n\r")
    assert events(e) == []


def test_empty_lines_ignored():
    e = Engine(Dialect(echo_default=False))
    e.feed(b"\r\n\r\n  \r")
    assert events(e) == []


def test_unterminated_quote_is_syntax_error():
    ev = one(b'AT+X="abc\r')
    assert isinstance(ev, LineError) and ev.kind == "syntax"


def test_pull_keeps_bytes_after_line_for_data_mode():
    e = Engine(Dialect(echo_default=True))
    e.feed(b"AT+AWSPUBLISH=0,5\rAT\r\nX")   # a payload that looks like a command
    ev = e.next_event()
    assert ev.name == "+AWSPUBLISH"
    assert e.take_output() == b"AT+AWSPUBLISH=0,5\r"   # the payload is not echoed as a command
    e.expect_data(5)
    assert e.next_event() == Data(b"AT\r\nX", "length")
    assert e.take_output() == b""
    assert e.next_event() is None


def test_lf_of_a_crlf_command_is_not_payload():
    # hosts end the command with CR LF and write the payload after the prompt: the LF is not data
    e = Engine(Dialect(echo_default=False))
    e.feed(b"AT+QMTPUB=0,1,1,0,\"t\",5\r\n")
    assert e.next_event().name == "+QMTPUB"
    e.expect_data(5)
    e.feed(b"hello")
    assert e.next_event() == Data(b"hello", "length")
    e.feed(b"AT+QISEND=0,2\r")              # the LF comes in a later write, after the data phase began
    assert e.next_event().name == "+QISEND"
    e.expect_data(2)
    assert e.next_event() is None
    e.feed(b"\nab")
    assert e.next_event() == Data(b"ab", "length")
    e.feed(b"AT+QISEND=0,2\r")              # CR only: a payload may start with LF
    e.next_event()
    e.expect_data(2)
    e.feed(b"x\n")
    assert e.next_event() == Data(b"x\n", "length")


def test_data_modes():
    e = Engine(Dialect(echo_default=False))
    e.expect_data(None, terminator=b"\x1a", cancel=b"\x1b", max_len=10)
    e.feed(b"hel")
    assert e.next_event() is None
    e.feed(b"lo\x1aAT\r")
    assert e.next_event() == Data(b"hello", "terminator")
    assert isinstance(e.next_event(), CommandLine)
    e.expect_data(None, terminator=b"\x1a", cancel=b"\x1b")
    e.feed(b"abc\x1b")
    assert e.next_event() == DataCancelled(b"abc")
    e.expect_data(None, terminator=b"\x1a", max_len=3)
    e.feed(b"abcdef")
    assert isinstance(e.next_event(), DataOverflow)
    # Microchip: '#' marker then length, or length 0 until +++
    e = Engine(Dialect(echo_default=False))
    e.expect_data(3, marker=b"#")
    e.feed(b"\r\n#a#b")
    assert e.next_event() == Data(b"a#b", "length")
    e.expect_data(None, marker=b"#", terminator=b"+++")
    e.feed(b"#One fine day+++")
    assert e.next_event() == Data(b"One fine day", "terminator")


def test_cancel_data_returns_partial():
    e = Engine(Dialect())
    e.expect_data(10)
    e.feed(b"abc")
    assert e.next_event() is None
    assert e.cancel_data() == b"abc"
    assert not e.in_data_mode


def test_transparent_escape_guard_times():
    e = Engine(Dialect())
    e.enter_transparent(guard=1.0, now=0.0)
    e.feed(b"data+++", now=0.5)              # +++ inside data: not an escape
    assert e.next_event() == TransparentData(b"data+++")
    e.feed(b"+++", now=2.0)                  # 1.5 s of silence before
    assert e.next_event() is None
    assert e.poll(2.5) is None               # trailing guard not over yet
    assert e.next_deadline() == 3.0
    assert isinstance(e.poll(3.01), EscapeSequence)
    assert not e.transparent
    # +++ followed by data within the guard is data
    e.enter_transparent(guard=1.0, now=10.0)
    e.feed(b"+++", now=12.0)
    e.feed(b"x", now=12.5)
    assert e.next_event() == TransparentData(b"+++x")
    # split +++
    e.feed(b"+", now=20.0)
    e.feed(b"++", now=20.1)
    assert isinstance(e.poll(21.2), EscapeSequence)


def test_split_args_dialects():
    d = Dialect()
    assert split_args(' 1 , "a b" ,,x', d) == [Arg("1"), Arg("a b", quoted=True), Arg(""), Arg("x")]
    assert split_args("1,", d) == [Arg("1"), Arg("")]
    hx = Dialect(hex_strings=True)
    assert split_args('[68656c6c6f],"x"', hx) == [Arg("hello", hexed=True), Arg("x", quoted=True)]
    with pytest.raises(ParamError):
        split_args("[6g]", hx)
    br = Dialect(brackets=True)
    assert split_args("INET,[1.2.3.4],a|b", br) == [Arg("INET"), Arg("[1.2.3.4]"), Arg("a|b")]
    esc = Dialect(backslash_escapes=True)
    assert split_args(r'"a\"b"', esc) == [Arg('a"b', quoted=True)]


def test_bind_types_and_errors():
    d = Dialect()
    fs = FormSpec(Form.WRITE, [Int("i", 0, 7), Str("s"), Int("q", 0, 2, optional=True, default=1)])
    assert bind(fs, split_args('3,"x"', d), d) == [3, "x", 1]
    assert bind(fs, split_args('0x7,"x",2', d), d) == [7, "x", 2]
    for bad, kind in [('8,"x"', "range"), ('a,"x"', "type"), ("1,x", "quote"), ("1", "count"),
                      ('1,"x",1,1', "count"), ('"1","x"', "type")]:
        with pytest.raises(ParamError) as ei:
            bind(fs, split_args(bad, d), d)
        assert ei.value.kind == kind, bad
    kw = FormSpec(Form.WRITE, [Keyword("fam", values={"INET": 2, "INET6": 10}), Flags("f", values={"a": 1, "b": 4})])
    assert bind(kw, split_args("inet6,a|b", d), d) == [10, 5]
    with pytest.raises(ParamError):
        bind(kw, split_args("nope,a", d), d)
    rest = FormSpec(Form.WRITE, [Int("i"), Rest("tail")])
    assert bind(rest, split_args('1,a,"b",c', d), d) == [1, 'a,"b",c']
    by = FormSpec(Form.WRITE, [Bytes("b", quoted=None)])
    assert bind(by, split_args("[00ff]", Dialect(hex_strings=True)), Dialect(hex_strings=True)) == [b"\x00\xff"]


def test_raw_length_delimited_field():
    spec = CommandSpec("+SEND", forms={Form.WRITE: FormSpec(Form.WRITE, [Int("sd"), Int("format"), Int("length"), Raw("data")])})
    d = Dialect(echo_default=False, brackets=True)
    e = Engine(d, {"+SEND": spec})
    payload = b'a,b\r\n"q"\x00\xff'
    e.feed(b"AT+Send=0,0,%d," % len(payload) + payload + b"\r\nAT\r\n")
    ev = e.next_event()
    assert ev.name == "+SEND"
    assert bind(spec.forms[Form.WRITE], ev.args, d) == [0, 0, len(payload), payload]
    assert isinstance(e.next_event(), CommandLine)
    # format 1 (Base64) is plain text
    e.feed(b"AT+Send=0,1,4,aGk=\r")
    ev = e.next_event()
    assert bind(spec.forms[Form.WRITE], ev.args, d) == [0, 1, 4, "aGk="]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_any_bytes_never_raise(data, chunk):
    """Whatever arrives, in whatever chunks: events come out, nothing raises, nothing hangs."""
    spec = CommandSpec("+SEND", forms={Form.WRITE: FormSpec(Form.WRITE, [Int("sd"), Int("format"), Int("length"), Raw("data")])})
    e = Engine(Dialect(max_line=64, brackets=True, hex_strings=True), {"+SEND": spec})
    for i in range(0, len(data), chunk):
        e.feed(data[i:i + chunk])
        events(e)
        e.take_output()
    e.feed(b"\rAT\r")
    evs = events(e)
    # the final AT always comes out as a command once the line is resynchronised
    assert any(isinstance(x, CommandLine) and x.name == "" for x in evs) or e._raw_need > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_data_mode_any_bytes(data):
    e = Engine(Dialect())
    e.expect_data(None, terminator=b"\x1a", cancel=b"\x1b", max_len=100)
    e.feed(data)
    evs = events(e)
    assert all(not isinstance(x, Exception) for x in evs)


# --------------------------------------------------------------------------------------------
# Line discipline: whatever terminator the host uses and however it splits its writes, the
# module sees the same commands and the same payload bytes, and the echo is the host's line
# (terminator included) before anything else.

SEND = CommandSpec("+SEND", forms={Form.WRITE: FormSpec(Form.WRITE, [Int("n")])})
SENDZ = CommandSpec("+SENDZ", forms={Form.EXEC: FormSpec(Form.EXEC, [])})
RAWSEND = CommandSpec("+RAW", forms={Form.WRITE: FormSpec(Form.WRITE, [Int("format"), Int("length"), Raw("data")])})
GRACE = 0.02

_plain = st.sampled_from([b"AT", b"at+x=1,\"a b\"", b"AT+Y?", b"ATE", b"at+z=?", b"AT+Q=,,3", b"AT+GARBAGE=\"\"", b"hello"])
# A payload that starts with LF written right after a CR-only line is ambiguous: the LF directly
# after a line's CR is always that line's terminator (as a CR LF host means it), in every state,
# so such a payload loses its first LF (documented in README "Line endings"). Generated payloads
# avoid that one case.
_payload = st.binary(min_size=0, max_size=40).filter(lambda p: not p.startswith(b"\n"))
_item = st.one_of(
    _plain.map(lambda c: ("cmd", c, b"")),
    st.just(("empty", b"", b"")),
    _payload.map(lambda p: ("send", b"AT+SEND=%d" % len(p), p)),
    _payload.map(lambda p: p.replace(b"\x1a", b"").replace(b"\x1b", b""))
      .filter(lambda p: not p.startswith(b"\n"))       # (b"\x1a\n" loses its Ctrl+Z: filter again)
      .map(lambda p: ("sendz", b"at+sendz", p)),
    st.binary(min_size=0, max_size=40).map(lambda p: ("raw", b"AT+RAW=0,%d," % len(p) + p, b"")),
)


def _drive(dialect: Dialect, items: list, term: bytes, cuts: list[int], echo: bool) -> tuple[list, bytes, list]:
    """Feed the host's bytes cut at ``cuts``, each write within the LF grace of the previous one,
    and react like a module: a +SEND line opens a data phase of n bytes, +SENDZ one ended by
    Ctrl+Z. Returns (events, echo bytes, echo checks) where an echo check is the echo taken when a
    command line event came out."""
    stream = bytearray()
    for kind, line, payload in items:
        stream += line + term
        if kind == "send":
            stream += payload
        elif kind == "sendz":
            stream += payload + b"\x1a"
    e = Engine(dialect, {"+SEND": SEND, "+SENDZ": SENDZ, "+RAW": RAWSEND}, lf_grace=GRACE)
    e.echo = echo
    evs: list = []
    echoes = bytearray()
    at_event: list = []
    now = 0.0

    def pump(ev):
        while ev is not None:
            out = e.take_output()
            echoes.extend(out)
            if isinstance(ev, (CommandLine, LineError)):
                at_event.append(bytes(echoes))
            if isinstance(ev, CommandLine):
                evs.append((ev.name, ev.form, [a.raw if a.raw is not None else a.text for a in ev.args]))
                if ev.name == "+SEND":
                    if int(ev.args[0].text):
                        e.expect_data(int(ev.args[0].text))
                    else:
                        evs.append(("data", b""))
                elif ev.name == "+SENDZ":
                    e.expect_data(None, terminator=b"\x1a", cancel=b"\x1b")
            elif isinstance(ev, Data):
                evs.append(("data", ev.payload))
            else:
                evs.append((type(ev).__name__, getattr(ev, "kind", None)))
            ev = e.next_event()
        echoes.extend(e.take_output())

    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
    for a, b in zip(bounds, bounds[1:]):
        now += GRACE / 4
        e.feed(bytes(stream[a:b]), now)
        pump(e.next_event())
    now += 10 * GRACE
    pump(e.poll(now))
    assert e.next_event() is None and not e.in_data_mode
    return evs, bytes(echoes), at_event


@settings(max_examples=150, deadline=None)
@given(st.lists(_item, max_size=8), st.lists(st.integers(0, 2000), max_size=30), st.booleans(), st.booleans())
def test_terminator_and_write_splitting_do_not_change_events(items, cuts, echo, ti):
    """CR, CR LF (and LF where the dialect takes it), one burst, every byte alone or random cuts:
    identical commands, identical payload bytes; the echo is exactly the command lines with their
    terminators, and a line's whole terminator is echoed before the line is reported."""
    d = Dialect(terminators=b"\r\n", brackets=True) if ti else Dialect()
    terms = [b"\r", b"\r\n"] + ([b"\n"] if ti else [])
    reference = None
    for term in terms:
        total = sum(len(line) + len(term) + len(p) + (k == "sendz") for k, line, p in items)
        for split in ([], list(range(total + 1)), cuts):
            evs, echoed, at_event = _drive(d, items, term, split, echo)
            if reference is None:
                reference = evs
            assert evs == reference, (term, split)
            lines = b"".join(line + term for _, line, _ in items)
            assert echoed == (lines if echo else b"")
            if echo:
                lines = [line for kind, line, _ in items if kind != "empty"]
                assert len(at_event) == len(lines)
                for line, so_far in zip(lines, at_event):
                    assert so_far.endswith(line + term), (line, so_far)


def test_crlf_before_data_phase_never_reaches_payload():
    """The LF of ``AT+SEND=5\\r\\n`` is the line's: the payload is exactly the next five bytes,
    whether the LF comes in the same write, alone (within the grace), or after the release."""
    for chunks in ([b"AT+SEND=5\r\nhello"], [b"AT+SEND=5\r", b"\nhello"], [b"AT+SEND=5\r", b"\n", b"hel", b"lo"]):
        e = Engine(Dialect(), {"+SEND": SEND}, lf_grace=GRACE)
        got = []
        for i, c in enumerate(chunks):
            e.feed(c, now=i * GRACE / 4)
            while (ev := e.next_event()) is not None:
                got.append(ev)
                if isinstance(ev, CommandLine):
                    assert e.take_output() == b"AT+SEND=5\r\n"   # CR LF echoed at once, before the prompt
                    e.expect_data(5)
        assert [type(x) for x in got] == [CommandLine, Data] and got[1].payload == b"hello", chunks


def test_held_line_released_by_poll_and_late_lf_swallowed():
    e = Engine(Dialect(), lf_grace=GRACE)
    e.feed(b"AT\r", now=1.0)
    assert e.next_event() is None                 # maybe an LF is on its way
    assert e.take_output() == b"AT\r"
    assert e.next_deadline() == pytest.approx(1.0 + GRACE)
    assert e.poll(1.0 + GRACE / 2) is None
    assert e.poll(1.0 + GRACE) == CommandLine("", Form.EXEC, [], b"AT")
    e.feed(b"\nAT\r\n", now=2.0)                   # the LF came late: still the old line's, echoed
    assert e.next_event() == CommandLine("", Form.EXEC, [], b"AT")
    assert e.take_output() == b"\nAT\r\n"
    e.feed(b"AT\r", now=3.0)
    e.feed(b"AT\r", now=3.001)                    # not an LF: the held line goes at once
    assert isinstance(e.next_event(), CommandLine)
    e.reset()
    assert e.lf_grace == GRACE


def test_late_lf_is_payload_only_for_a_known_cr_only_host():
    """Echo off, lines run at once. A CR LF host's LF, arriving after the line opened its data
    phase, is the line's; once a host has ended a line with CR alone, an LF it writes after the
    prompt is payload."""
    for first, payload in ((b"AT\r\n", b"hi"), (b"AT\r", b"\nh")):
        e = Engine(Dialect(echo_default=False), {"+SEND": SEND}, lf_grace=GRACE)
        e.feed(first, now=1.0)
        assert isinstance(e.next_event(), CommandLine)
        e.feed(b"AT", now=1.5)                      # the CR-only host's next line shows its habit
        e.feed(b"+SEND=2\r", now=1.6)
        ev = e.next_event()
        assert isinstance(ev, CommandLine) and ev.name == "+SEND"
        e.expect_data(2)
        e.feed(b"\nhi", now=1.7)
        ev = e.next_event()
        assert isinstance(ev, Data) and ev.payload == payload, first


def test_late_lf_echoed_as_its_cr_was_when_the_line_switches_echo():
    """Echo off: the line runs at once (no wait); its LF, arriving after ``ATE1`` switched echo on,
    is still the old line's terminator and is not echoed. Echo on and ``ATE0``: the LF's echo comes
    with the CR, before the answer."""
    e = Engine(Dialect(echo_default=False), lf_grace=GRACE)
    e.feed(b"ATE1\r", now=1.0)
    ev = e.next_event()
    assert isinstance(ev, CommandLine) and ev.line == b"ATE1"   # at once, no wait for an LF
    e.echo = True                                  # what the handler of ATE1 does
    e.feed(b"\n", now=1.0 + 2 * GRACE)
    assert e.next_event() is None and e.take_output() == b""
    e.feed(b"AT\r\n", now=2.0)
    assert isinstance(e.next_event(), CommandLine) and e.take_output() == b"AT\r\n"
    e.feed(b"ATE0\r", now=3.0)
    assert e.next_event() is None                  # echo on: wait for the LF
    e.feed(b"\n", now=3.0 + GRACE / 4)
    assert isinstance(e.next_event(), CommandLine) and e.take_output() == b"ATE0\r\n"


def test_lone_lf_per_dialect():
    """Quectel/Eseye/Microchip ignore a lone LF (Quectel manual: "A newline character is ignored");
    TI ends a line with it; ``lone_lf="char"`` keeps it as a character of the line."""
    e = Engine(Dialect())
    e.feed(b"\n\nAT\n+X=1\r\n\n")
    assert [(x.name, [a.text for a in x.args]) for x in events(e)] == [("+X", ["1"])]
    assert e.take_output() == b"\n\nAT\n+X=1\r\n\n"
    e = Engine(Dialect(terminators=b"\r\n", echo_default=False))
    e.feed(b"AT\nAT+X=1\r\n\nAT\r")
    assert [x.name for x in events(e)] == ["", "+X", ""]
    e = Engine(Dialect(lone_lf="char", echo_default=False))
    e.feed(b"\nAT\r")
    assert isinstance(e.next_event(), LineError)


def test_empty_line_gets_only_its_echo():
    e = Engine(Dialect(), lf_grace=GRACE)
    e.feed(b"\r\n", now=0.0)
    assert e.next_event() is None and e.poll(1.0) is None
    assert e.take_output() == b"\r\n"


def test_cr_only_host_waits_only_once():
    """The engine learns the host's line ending: after one CR without LF, CR-ended lines run at
    once; a CR LF seen later turns the wait on again."""
    e = Engine(Dialect(echo_default=False), lf_grace=GRACE)
    e.feed(b"AT\r", now=1.0)
    assert isinstance(e.next_event(), CommandLine)         # echo off: nothing to order, at once
    e = Engine(Dialect(echo_default=True), lf_grace=GRACE)
    e.feed(b"AT\r", now=1.0)
    assert e.next_event() is None                          # unknown host: wait for a possible LF
    assert isinstance(e.poll(1.0 + GRACE), CommandLine)    # none came
    e.feed(b"AT\r", now=2.0)
    assert isinstance(e.next_event(), CommandLine)          # CR-only host: at once
    e.feed(b"AT\r\n", now=3.0)                              # the host switched to CR LF
    assert isinstance(e.next_event(), CommandLine)
    e.feed(b"AT\r", now=4.0)
    assert e.next_event() is None                           # its LF is awaited again
    e.feed(b"\n", now=4.001)
    assert isinstance(e.next_event(), CommandLine) and e.next_event() is None
    e = Engine(Dialect(echo_default=True), lf_grace=GRACE)
    e.feed(b"AT\rAT\r", now=1.0)                            # CR then a non-LF byte: CR-only host
    assert isinstance(e.next_event(), CommandLine)
    assert isinstance(e.next_event(), CommandLine)
