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
