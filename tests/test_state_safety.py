"""The state folder: nothing atemu reads or writes there follows a planted symbolic link, and a name
used both as a file and as a folder answers the module's error instead of an internal error."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from quectel_helpers import PWD, SSID, cmd_ok, emu, join
from test_microchip_util import Winc
from test_ti_common import Ti
from test_ti_files import fid_of

ATEMU = [sys.executable, "-m", "atemu.cli"]
SECRET = b"precious, must stay as it is\n"


def run(*args, timeout=30):
    return subprocess.run([*ATEMU, *args], capture_output=True, text=True, timeout=timeout)


def victim(tmp_path):
    v = tmp_path / "victim.txt"
    v.write_bytes(SECRET)
    return v


# ------------------------------------------------------------------------------ planted links

@pytest.mark.parametrize("name", [".atemu-lock", "settings.json", "flash"])
def test_run_refuses_a_planted_link_in_one_line(tmp_path, name):
    state = tmp_path / "st"
    state.mkdir()
    v = victim(tmp_path)
    (state / name).symlink_to(v)
    r = run("run", "quectel-fcm242d", "--state-dir", str(state), "--exec", "true")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atemu: error: state folder: ") and name in lines[0], r.stderr
    assert "symbolic link" in lines[0] and "remove it" in lines[0]
    assert v.read_bytes() == SECRET


def test_settings_save_never_writes_through_a_link(tmp_path):
    v = victim(tmp_path)
    (tmp_path / "settings.tmp").symlink_to(v)          # the old fixed temporary name
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        cmd_ok(e, f'AT+QSTAAPINFODEF="{SSID}","{PWD}"')
        e.read_until(rb"GOT_IP\r\n")
    finally:
        e.stop()
    assert v.read_bytes() == SECRET
    settings = tmp_path / "settings.json"
    assert not settings.is_symlink()
    assert json.loads(settings.read_text())["quectel.default_ap"] == {"ssid": SSID, "pwd": PWD}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == ["settings.tmp"]


def test_ota_download_never_writes_through_a_link(http_server, tmp_path):
    image = os.urandom(5000)
    url = http_server.url(http_server.add_file("fw.bin", image))
    v = victim(tmp_path)
    (tmp_path / "ota").mkdir()
    (tmp_path / "ota" / "firmware.part").symlink_to(v)
    (tmp_path / "ota" / "firmware.bin").symlink_to(v)
    e = emu(state_dir=tmp_path)
    try:
        join(e)
        cmd_ok(e, f'AT+QWLANOTA="{url}"')
        out = e.read_until(rb"DOWNLOAD_(SUCCEED|FAILED)\r\n", timeout=10)
        assert out.endswith(b"+QOTASTAT: DOWNLOAD_SUCCEED\r\n")
        fw = tmp_path / "ota" / "firmware.bin"
        assert not fw.is_symlink() and fw.read_bytes() == image
        assert v.read_bytes() == SECRET
        # the ota folder itself a link: the download fails, nothing is written there
        other = tmp_path / "elsewhere"
        other.mkdir()
        for p in (tmp_path / "ota").iterdir():
            p.unlink()
        (tmp_path / "ota").rmdir()
        (tmp_path / "ota").symlink_to(other)
        cmd_ok(e, f'AT+QWLANOTA="{url}"')
        out = e.read_until(rb"DOWNLOAD_(SUCCEED|FAILED)\r\n", timeout=10)
        assert out.endswith(b"+QOTASTAT: DOWNLOAD_FAILED\r\n")
        assert list(other.iterdir()) == []
        assert cmd_ok(e, "AT")
    finally:
        e.stop()


def test_links_in_flash_are_not_files(tmp_path):
    v = victim(tmp_path)
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "link.txt").symlink_to(v)
    (flash / "dirlink").symlink_to(tmp_path)
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        assert e.cmd("AT+QFLST") == b"\r\nOK\r\n"
        assert e.cmd('AT+QFOPEN="link.txt",2') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QFOPEN="link.txt",1') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QFOPEN="dirlink/victim.txt",0') == b"\r\nERROR\r\n"
        snap = e.sync(lambda: __import__("atemu.api", fromlist=["snapshot"]).snapshot(e.module))
        assert snap["files"] == []
    finally:
        e.stop()
    assert v.read_bytes() == SECRET


# ------------------------------------------------------------------------------ file and folder clash

def test_quectel_file_and_folder_of_one_name(tmp_path):
    e = emu(state_dir=tmp_path)
    try:
        cmd_ok(e, "AT+QECHO=0")
        assert e.cmd('AT+QFOPEN="d/f",0') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        cmd_ok(e, "AT+QFCLOSE=1")
        assert e.cmd('AT+QFOPEN="d",0') == b"\r\nERROR\r\n"          # d is a folder
        assert e.cmd('AT+QFOPEN="d",1') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QFOPEN="d",2') == b"\r\nERROR\r\n"
        assert e.cmd('AT+QFOPEN="x",0') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        cmd_ok(e, "AT+QFCLOSE=1")
        assert e.cmd('AT+QFOPEN="x/y",0') == b"\r\nERROR\r\n"        # x is a file
        assert e.cmd('AT+QFDEL="d"') == b"\r\nERROR\r\n"
        cmd_ok(e, 'AT+QFDEL="d/f"')                                  # the emptied folder goes too
        assert e.cmd('AT+QFOPEN="d",0') == b"\r\n+QFOPEN: 1\r\n\r\nOK\r\n"
        assert e.cmd("AT+QFLST") == b'\r\n+QFLST: "d",0\r\n+QFLST: "x",0\r\n\r\nOK\r\n'
    finally:
        e.stop()


def test_ti_file_and_folder_of_one_name(tmp_path):
    with Ti(state_dir=tmp_path) as e:
        e.boot()
        fid = fid_of(e.ok("AT+FileOpen=/d/f,CREATE|WRITE,100"))
        e.ok(f"AT+FileClose={fid},,")
        assert e.err("AT+FileOpen=/d,CREATE|WRITE,100") == b"process command,-11301"     # exists (a folder)
        assert e.err("AT+FileOpen=/d,READ,") == b"process command,-11300"                  # not a file
        fid = fid_of(e.ok("AT+FileOpen=x,CREATE|WRITE,100"))
        e.ok(f"AT+FileClose={fid},,")
        assert e.err("AT+FileOpen=x/y,CREATE|WRITE,100") == b"process command,-11302"    # bad name
        assert e.ok("AT") == b""


def test_microchip_loadcert_file_and_folder_of_one_name(pki, tmp_path):
    pem = pki.ca_cert.read_bytes()
    with Winc(state_dir=tmp_path) as e:
        e.write(f'AT+LOADCERT={len(pem)},"d/f"\r#'.encode() + pem)
        assert e.read_until(rb"OK\r\n") == b"+LOADCERT:0\r\nOK\r\n"
        e.write(f'AT+LOADCERT={len(pem)},"d"\r#'.encode() + pem)
        assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:1\r\nERROR:9\r\n"
        e.write(f'AT+LOADCERT={len(pem)},"d/f/g"\r#'.encode() + pem)
        assert e.read_until(rb"(OK|ERROR:\d+)\r\n") == b"+LOADCERT:1\r\nERROR:9\r\n"
        assert e.cmd("AT") == b"OK\r\n"
