"""TI SimpleLink file system commands on the flash folder under --state-dir."""
from __future__ import annotations

import base64
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from test_ti_common import Ti

BLOB = b'line1\r\nline2,"quoted",\x00\x01\xfe\xffOK\r\n'


def fid_of(out: bytes) -> int:
    return int(re.search(rb"\+fileopen:(\d+),", out).group(1))


def test_create_write_read_raw_and_base64(tmp_path):
    with Ti(state_dir=tmp_path) as e:
        e.boot()
        out = e.ok("AT+FileOpen=/user/data.bin,CREATE|WRITE,100")
        assert re.fullmatch(rb"\+fileopen:\d+,0\r\n", out)
        fid = fid_of(out)
        e.write(f"AT+FileWrite={fid},0,0,{len(BLOB)},".encode() + BLOB + b"\r\n")
        assert e.read_until(rb"OK\r\n") == f"+filewrite:{len(BLOB)}\r\nOK\r\n".encode()
        e.ok(f"AT+FileWrite={fid},{len(BLOB)},1,4,{base64.b64encode(b'END').decode()}")   # length: Base64 chars
        assert e.err(f"AT+FileWrite={fid},98,0,5,12345") == b"process command,-11307"    # beyond max size
        assert e.err(f"AT+FileRead={fid},0,0,10") == b"process command,-11305"          # open for writing
        e.ok(f"AT+FileClose={fid},,")
        assert (tmp_path / "flash" / "user" / "data.bin").read_bytes() == BLOB + b"END"
        fid = fid_of(e.ok("AT+FileOpen=user/data.bin,READ,"))
        e.write(f"AT+FileRead={fid},0,0,{len(BLOB) + 3}\r\n".encode())
        head = e.read_until(rb"\+fileread:0,\d+,")
        n = int(re.search(rb",(\d+),$", head).group(1))
        assert e.read_exactly(n) == BLOB + b"END"
        e.read_until(rb"\r\nOK\r\n")
        out = e.ok(f"AT+FileRead={fid},5,1,7")
        assert out == b"+fileread:1,12," + base64.b64encode(BLOB[5:12]) + b"\r\n"     # 7 bytes = 12 Base64 chars
        assert e.err(f"AT+FileRead={fid},500,0,7") == b"process command,-11307"
        assert e.err(f"AT+FileWrite={fid},0,0,1,x") == b"process command,-11305"
        e.ok(f"AT+FileClose={fid},,")
        assert e.err(f"AT+FileClose={fid},,") == b"process command,-11306"
        info = e.ok("AT+FileGetInfo=/user/data.bin,")
        assert info == f"+filegetinfo:,{len(BLOB) + 3},4096,0,4096,1\r\n".encode()
        assert e.ok("AT+FileGetFileList") == b"+filegetfilelist:/user/data.bin,100,,1\r\n"


def test_open_modes_limits_and_escapes():
    with Ti() as e:
        e.boot()
        assert e.err("AT+FileOpen=/nope.txt,READ,") == b"process command,-11300"
        assert e.err("AT+FileOpen=/nope.txt,WRITE,") == b"process command,-11300"
        assert e.err("AT+FileOpen=/new.txt,CREATE,") == b"number of parameters,0"
        assert e.err("AT+FileOpen=/new.txt,READ|WRITE,") == b"process command,-11305"
        assert e.err("AT+FileOpen=/new.txt,CREATE_FAILSAFE,10") == b"process command,-11305"
        assert e.err("AT+FileOpen=/new.txt,BOGUS,10") == b"parse parameters,-4"
        assert e.err("AT+FileOpen=../../etc/passwd,READ,") == b"process command,-11302"
        assert e.err("AT+FileOpen=/a/../../x,CREATE,10") == b"process command,-11302"
        assert e.err("AT+FileOpen=/big.bin,CREATE,2000000") == b"parse parameters,-4"
        fid = fid_of(e.ok("AT+FileOpen=/new.txt,CREATE,10"))
        assert e.err("AT+FileOpen=/new.txt,WRITE,") == b"process command,-11305"   # one writer
        e.ok(f"AT+FileWrite={fid},0,0,5,hello")
        e.ok(f"AT+FileClose={fid},,")
        assert e.err("AT+FileOpen=/new.txt,CREATE,10") == b"process command,-11301"
        fid = fid_of(e.ok("AT+FileOpen=/new.txt,WRITE,"))          # rewrite the existing file
        e.ok(f"AT+FileWrite={fid},0,0,3,abc")
        e.ok(f"AT+FileClose={fid},,")
        fid = fid_of(e.ok("AT+FileOpen=/new.txt,READ,"))
        assert e.ok(f"AT+FileRead={fid},0,1,10") == b"+fileread:1,4," + base64.b64encode(b"abc") + b"\r\n"
        assert e.err("AT+FileDel=/new.txt,") == b"process command,-11305"           # still open
        e.ok(f"AT+FileClose={fid},,")
        e.ok("AT+FileDel=/new.txt,")
        assert e.err("AT+FileDel=/new.txt,") == b"process command,-11300"
        assert e.err("AT+FileGetInfo=/new.txt,") == b"process command,-11300"
        assert e.ok("AT+FileGetFileList") == b""


def test_secure_token_failsafe_commit_rollback_rename_storage():
    with Ti() as e:
        e.boot()
        out = e.ok("AT+FileOpen=/sec.bin,CREATE|CREATE_SECURE|CREATE_FAILSAFE,64")
        token = int(re.search(rb",(\d+)\r\n", out).group(1))
        assert token != 0
        fid = fid_of(out)
        e.ok(f"AT+FileWrite={fid},0,0,2,v1")
        e.ok(f"AT+FileClose={fid},,")
        out = e.ok(f"AT+FileCtl=COMMIT,{token},/sec.bin,")
        token2 = int(re.search(rb"\+filectl:(\d+),", out).group(1))
        assert token2 not in (0, token)                         # a new secure token
        token = token2
        fid = fid_of(e.ok("AT+FileOpen=/sec.bin,WRITE,"))
        e.ok(f"AT+FileWrite={fid},0,0,2,v2")
        e.ok(f"AT+FileClose={fid},,")
        assert e.err("AT+FileCtl=ROLLBACK,1,/sec.bin,") == b"process command,-11305"   # wrong token
        out = e.ok(f"AT+FileCtl=ROLLBACK,{token},/sec.bin,")
        new_token = int(re.search(rb"\+filectl:(\d+),", out).group(1))
        fid = fid_of(e.ok("AT+FileOpen=/sec.bin,READ,"))
        assert e.ok(f"AT+FileRead={fid},0,1,10") == b"+fileread:1,4," + base64.b64encode(b"v1") + b"\r\n"
        e.ok(f"AT+FileClose={fid},,")
        assert e.err(f"AT+FileCtl=COMMIT,{new_token},/sec.bin,") == b"process command,-11305"  # nothing pending
        info = e.ok(f"AT+FileGetInfo=/sec.bin,{new_token}")
        assert info == f"+filegetinfo:failsafe|secure,2,4096,{new_token},4096,2\r\n".encode()
        assert e.ok("AT+FileGetInfo=/sec.bin,") == b"+filegetinfo:failsafe|secure,2,4096,0,4096,2\r\n"  # optional
        assert e.err(f"AT+FileGetInfo=/sec.bin,{new_token ^ 1}") == b"process command,-11305"     # wrong token
        e.ok(f"AT+FileCtl=RENAME,{new_token},/sec.bin,/renamed.bin")
        assert e.ok("AT+FileGetFileList").startswith(b"+filegetfilelist:/renamed.bin,64,failsafe|secure,1")
        assert e.err("AT+FileDel=/renamed.bin,") == b"process command,-11305"
        e.ok(f"AT+FileDel=/renamed.bin,{new_token}")
        fid = fid_of(e.ok("AT+FileOpen=/b.bin,CREATE|CREATE_FAILSAFE,10"))
        e.ok(f"AT+FileClose={fid},,")
        assert e.ok("AT+FileCtl=BUNDLE_COMMIT,,,") == b""                  # TI: OK alone
        assert e.ok("AT+FileCtl=BUNDLE_ROLLBACK,,,") == b""
        info = e.ok("AT+FileCtl=GET_STORAGE_INFO,,,")
        assert info.startswith(b"+filectl:,")                               # TI: no token for storage info
        vals = info[len(b"+filectl:,"):-2].split(b",")
        assert len(vals) == 16 and vals[0] == b"4096" and vals[1] == b"256" and vals[11] == b"1"


def test_close_with_signature_verified(pki):
    key = load_pem_private_key(pki.client_key.read_bytes(), None)
    data = b"firmware image"
    good = base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()
    bad = base64.b64encode(key.sign(b"other", ec.ECDSA(hashes.SHA256()))).decode()
    with Ti() as e:
        e.boot()
        e.put_file("/cert/signer.pem", pki.client_cert.read_bytes())
        fid = fid_of(e.ok("AT+FileOpen=/fw.bin,CREATE,100"))
        e.ok(f"AT+FileWrite={fid},0,0,{len(data)},{data.decode()}")
        assert e.err(f"AT+FileClose={fid},/cert/signer.pem,{bad}") == b"process command,-11308"
        assert e.ok("AT+FileGetInfo=/fw.bin,").startswith(b"+filegetinfo:,0,")     # not committed
        fid = fid_of(e.ok("AT+FileOpen=/fw.bin,WRITE,"))
        e.ok(f"AT+FileWrite={fid},0,0,{len(data)},{data.decode()}")
        e.ok(f"AT+FileClose={fid},/cert/signer.pem,{good}")
        assert e.ok("AT+FileGetInfo=/fw.bin,").startswith(b"+filegetinfo:,14,")


def test_factory_restore_wipes_and_restarts(tmp_path):
    with Ti(state_dir=tmp_path) as e:
        e.boot()
        e.put_file("/keep.txt", b"x")
        e.ok("AT+WlanProfileAdd=lab,,OPEN,,,,,1")
        assert e.ok("AT+FileCtl=RESTORE,,,FACTORY_DEFAULT") == b""
        e.expect_nothing(0.3)                                    # restarted: no startup event (TI)
        assert e.ok("AT+FileGetFileList") == b""
        assert e.err("AT+WlanProfileGet=0") == b"process command,-2073"
        assert e.err("AT+FileCtl=RESTORE,,,NOPE") == b"parse parameters,-4"
