"""File system family: the module's serial flash (atemu.files.FlashFS under --state-dir)."""
from __future__ import annotations

import base64
import binascii
import os

from atemu.files import FlashFS, FsError
from atemu.grammar import Form, Int, Keyword, Raw
from atemu.module import Ctx
from atemu.profile import command

from .common import (E_FS_BAD_HANDLE, E_FS_BAD_MODE, E_FS_EXISTS, E_FS_FULL, E_FS_NAME, E_FS_NOT_FOUND, E_FS_OFFSET,
                     E_FS_SIGNATURE, E_FS_TOO_BIG, FORMAT, OS, S, count_error, decode_data, encode_data, fail,
                     flags_of, nwp, param_error, pick)

FLASH_CAPACITY = 1 << 20
BLOCK = 4096
MAX_NAME = 180
MAX_OPEN = 8
OPEN_FLAGS = ("READ", "WRITE", "CREATE", "OVERWRITE", "CREATE_FAILSAFE", "CREATE_SECURE", "CREATE_NOSIGNATURE",
              "CREATE_STATIC_TOKEN", "CREATE_VENDOR_TOKEN", "CREATE_PUBLIC_WRITE", "CREATE_PUBLIC_READ")
FS_CODES = {"invalid": E_FS_NAME, "not_found": E_FS_NOT_FOUND, "exists": E_FS_EXISTS, "full": E_FS_FULL,
            "too_big": E_FS_TOO_BIG, "io": E_FS_FULL}


def fs_fail(e: FsError):
    return fail(FS_CODES.get(e.kind, E_FS_NAME), str(e))


def norm(name: str) -> str:
    """``/cert/ca.pem`` and ``cert/ca.pem`` name the same file (one leading slash is dropped)."""
    n = (name or "").strip()
    return n[1:] if n.startswith("/") else n


def blocks(n: int) -> int:
    return max(1, (n + BLOCK - 1) // BLOCK)


class FileMixin:
    def fs_init(self) -> None:
        self.fs = FlashFS(self.module.state_dir / "flash", capacity=FLASH_CAPACITY, max_file=FLASH_CAPACITY,
                          max_name=MAX_NAME, max_files=240)
        self.fs_bak = FlashFS(self.module.state_dir / "flash_bak", capacity=FLASH_CAPACITY, max_name=MAX_NAME)

    def fs_meta(self) -> dict:
        m = self.module.settings.get("ti.fsmeta")
        return dict(m) if isinstance(m, dict) else {}

    def fs_set_meta(self, meta: dict) -> None:
        self.module.settings.set("ti.fsmeta", meta)

    def fs_read(self, name: str) -> bytes:
        try:
            return self.fs.read(norm(name))
        except FsError as e:
            raise fs_fail(e) from None

    def fs_read_material(self, name: str) -> bytes:
        return self.fs_read(name)

    def fs_info(self, name: str) -> dict:
        n = norm(name)
        try:
            if not self.fs.exists(n):
                raise fail(E_FS_NOT_FOUND, f"{name}: no such file")
        except FsError as e:
            raise fs_fail(e) from None
        size = self.fs.path(n).stat().st_size
        meta = self.fs_meta().get(n, {})
        return {"size": size, "max": meta.get("max", size), "flags": meta.get("flags", []),
                "token": meta.get("token", 0), "wc": meta.get("wc", 0)}

    def check_token(self, name: str, token) -> None:
        info = self.fs_info(name)
        if "create_secure" in info["flags"] and info["token"] and token != info["token"]:
            raise fail(E_FS_BAD_MODE, "wrong secure token")

    def handle(self, fid: int, mode: str | None = None) -> dict:
        h = self.files.get(fid)
        if h is None:
            raise fail(E_FS_BAD_HANDLE, f"file id {fid} is not open")
        if mode and h["mode"] != mode:
            raise fail(E_FS_BAD_MODE, f"file id {fid} is not open for {mode}")
        return h

    # ---- commands ---------------------------------------------------------------------------
    @command("+FileOpen", Form.WRITE, S("filename", min_len=1, max_len=MAX_NAME), S("options"),
             Int("max_size", 0, FLASH_CAPACITY, optional=True, default=0), family="file",
             doc="Open a file: +fileopen:<file id>,<secure token>")
    @nwp
    async def at_fileopen(self, ctx: Ctx, filename: str, options: str, size: int) -> None:
        name = norm(filename)
        try:
            self.fs.path(name)
            exists = self.fs.exists(name)
        except FsError as e:
            raise fs_fail(e) from None
        flags = flags_of(options, OPEN_FLAGS, "open option")
        if not flags:
            raise count_error("no open option")
        create_flags = [f.lower() for f in OPEN_FLAGS if f.lower() in flags and f.startswith("CREATE_")]
        if len(self.files) >= MAX_OPEN:
            raise fail(E_FS_FULL, "too many open files")
        meta = self.fs_meta()
        token = 0
        if "read" in flags:
            if len(flags) != 1:
                raise fail(E_FS_BAD_MODE, "READ takes no other option")
            if not exists:
                raise fail(E_FS_NOT_FOUND, f"{filename}: no such file")
            mode = "read"
            token = meta.get(name, {}).get("token", 0)
        else:
            if create_flags and "create" not in flags:
                raise fail(E_FS_BAD_MODE, "creation flags need CREATE")
            if "create" in flags:
                if exists and "overwrite" not in flags:
                    raise fail(E_FS_EXISTS, f"{filename} exists (add OVERWRITE)")
                if not exists:
                    if size <= 0:
                        raise count_error("CREATE needs the maximum file size")
                    if size > self.fs.free() + 0:
                        raise fail(E_FS_FULL, "not enough flash for this file")
                    token = int.from_bytes(os.urandom(4), "big") if "create_secure" in flags else 0
                    meta[name] = {"max": size, "flags": create_flags, "token": token, "wc": 0}
                    try:
                        self.fs.write(name, b"")
                    except FsError as e:
                        raise fs_fail(e) from None
                    self.fs_set_meta(meta)
            elif not exists:
                raise fail(E_FS_NOT_FOUND, f"{filename}: no such file")
            if any(h["name"] == name and h["mode"] == "write" for h in self.files.values()):
                raise fail(E_FS_BAD_MODE, "the file is already open for writing")
            mode = "write"
            info = meta.get(name, {})
            token = info.get("token", 0)
        max_size = meta.get(name, {}).get("max") or max(size, len(self.fs.read(name)))
        fid = self.next_fid
        self.next_fid += 1
        self.files[fid] = {"name": name, "mode": mode, "buf": bytearray(), "max": max_size, "written": False}
        ctx.info(f"+fileopen:{fid},{token}")

    @command("+FileClose", Form.WRITE, Int("file_id", 0, 0x7FFFFFFF), OS("certificate"), OS("signature"),
             family="file", doc="Close a file; writes are committed here (signature: Base64, verified with the certificate)")
    @nwp
    async def at_fileclose(self, ctx: Ctx, fid: int, cert, signature) -> None:
        h = self.handle(fid)
        self.files.pop(fid)
        if h["mode"] != "write":
            if signature:
                raise fail(E_FS_SIGNATURE, "a signature is only given when closing a written file")
            return
        data = bytes(h["buf"])
        if signature:
            if not cert:
                raise count_error("a signature needs the certificate file name")
            self.verify_file_signature(data, cert, signature)
        meta = self.fs_meta()
        m = meta.setdefault(h["name"], {"max": h["max"], "flags": [], "token": 0, "wc": 0})
        try:
            if "create_failsafe" in m.get("flags", []):
                old = self.fs.read(h["name"])
                self.fs_bak.write(h["name"], old)
                m["pending"] = True
            self.fs.write(h["name"], data)
        except FsError as e:
            raise fs_fail(e) from None
        m["wc"] = m.get("wc", 0) + 1
        self.fs_set_meta(meta)

    def verify_file_signature(self, data: bytes, cert_name: str, signature: str) -> None:
        from cryptography import x509
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        try:
            sig = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise param_error("signature must be Base64") from None
        pem = self.fs_read(cert_name)
        try:
            c = x509.load_pem_x509_certificate(pem) if b"-----BEGIN" in pem else x509.load_der_x509_certificate(pem)
        except ValueError:
            raise fail(E_FS_SIGNATURE, "certificate file is not a certificate") from None
        pub = c.public_key()
        for h in (hashes.SHA1(), hashes.SHA256()):
            try:
                if isinstance(pub, rsa.RSAPublicKey):
                    pub.verify(sig, data, padding.PKCS1v15(), h)
                elif isinstance(pub, ec.EllipticCurvePublicKey):
                    pub.verify(sig, data, ec.ECDSA(h))
                else:
                    break
                return
            except InvalidSignature:
                continue
        raise fail(E_FS_SIGNATURE, "signature does not match")

    @command("+FileCtl", Form.WRITE,
             Keyword("command", values={k: k.lower() for k in ("RESTORE", "ROLLBACK", "COMMIT", "RENAME", "GET_STORAGE_INFO",
                                                                 "BUNDLE_ROLLBACK", "BUNDLE_COMMIT")}),
             Int("secure_token", 0, 0xFFFFFFFF, optional=True, default=0), OS("filename"), OS("data"),
             family="file", doc="File control: +filectl:<new token>,<output data>")
    @nwp
    async def at_filectl(self, ctx: Ctx, cmd: str, token: int, filename, data) -> None:
        meta = self.fs_meta()
        if cmd == "restore":
            pick(data, ("FACTORY_IMAGE", "FACTORY_DEFAULT"), "restore target")
            ctx.info("+filectl:0,")
            self.module.spawn(self.factory_restore(), name="restore")
            return
        if cmd == "get_storage_info":
            used = sum(blocks(s) for _, s in self.fs.list())
            cap = FLASH_CAPACITY // BLOCK
            reserved = 32
            nfiles = len(self.fs.list())
            vals = [BLOCK, cap, used + reserved, reserved, reserved, cap - used - reserved, cap - used - reserved,
                    240, 1, 0, 32, nfiles, 0, 0, 64, sum(m.get("wc", 0) for m in meta.values())]
            ctx.info("+filectl:0," + ",".join(str(v) for v in vals))
            return
        if cmd in ("bundle_rollback", "bundle_commit"):
            for name, m in meta.items():
                if m.get("pending"):
                    self._commit_or_rollback(name, m, cmd == "bundle_rollback")
            self.fs_set_meta(meta)
            ctx.info("+filectl:0,")
            return
        if not filename:
            raise count_error("a file name is needed")
        name = norm(filename)
        self.check_token(name, token or None)
        m = meta.setdefault(name, {"max": self.fs_info(name)["size"], "flags": [], "token": 0, "wc": 0})
        if cmd in ("rollback", "commit"):
            if "create_failsafe" not in m.get("flags", []):
                raise fail(E_FS_BAD_MODE, "only fail-safe files can be committed or rolled back")
            if not m.get("pending"):
                raise fail(E_FS_BAD_MODE, "nothing to commit or roll back")
            self._commit_or_rollback(name, m, cmd == "rollback")
            if m.get("token"):
                m["token"] = int.from_bytes(os.urandom(4), "big")
            self.fs_set_meta(meta)
            ctx.info(f"+filectl:{m.get('token', 0)},")
            return
        # rename
        if not data:
            raise count_error("RENAME needs the new name")
        new = norm(data)
        try:
            if self.fs.exists(new):
                raise fail(E_FS_EXISTS, f"{data} exists")
            content = self.fs.read(name)
            self.fs.path(new)
            self.fs.delete(name)
            self.fs.write(new, content)
        except FsError as e:
            raise fs_fail(e) from None
        meta[new] = meta.pop(name)
        self.fs_set_meta(meta)
        ctx.info("+filectl:0,")

    def _commit_or_rollback(self, name: str, m: dict, rollback: bool) -> None:
        try:
            if rollback:
                self.fs.write(name, self.fs_bak.read(name))
            self.fs_bak.delete(name)
        except FsError:
            pass
        m["pending"] = False

    async def factory_restore(self) -> None:
        """FileCtl RESTORE: wipe user files and stored configuration, then the NWP restarts."""
        await self.module.drain_output()
        await self.nwp_stop()
        self.files.clear()
        self.fs.delete_all()
        self.fs_bak.delete_all()
        for key in list(self.module.settings.items()):
            if key.startswith("ti.") and key not in ("ti.udid",):
                self.module.settings.delete(key)
        await self.nwp_start()

    @command("+FileDel", Form.WRITE, S("filename", min_len=1, max_len=MAX_NAME),
             Int("secure_token", 0, 0xFFFFFFFF, optional=True, default=0), family="file", doc="Delete a file")
    @nwp
    async def at_filedel(self, ctx: Ctx, filename: str, token: int) -> None:
        name = norm(filename)
        self.check_token(name, token or None)
        if any(h["name"] == name for h in self.files.values()):
            raise fail(E_FS_BAD_MODE, "the file is open")
        try:
            self.fs.delete(name)
        except FsError as e:
            raise fs_fail(e) from None
        meta = self.fs_meta()
        meta.pop(name, None)
        self.fs_set_meta(meta)

    @command("+FileGetFileList", Form.EXEC, family="file",
             doc="List files: +filegetfilelist:<name>,<max size>,<properties>,<allocated blocks>;...")
    @nwp
    async def at_filelist(self, ctx: Ctx) -> None:
        meta = self.fs_meta()
        entries = []
        for name, size in self.fs.list():
            m = meta.get(name, {})
            mx = m.get("max", size)
            entries.append(f"/{name},{mx},{'|'.join(f[7:] for f in m.get('flags', []))},{blocks(mx)}")
        ctx.info("+filegetfilelist:" + ";".join(entries))

    @command("+FileGetInfo", Form.WRITE, S("filename", min_len=1, max_len=MAX_NAME),
             Int("secure_token", 0, 0xFFFFFFFF, optional=True, default=0), family="file",
             doc="+filegetinfo:<flags>,<file size>,<allocated size>,<tokens>,<storage size>,<write counter>")
    @nwp
    async def at_fileinfo(self, ctx: Ctx, filename: str, token: int) -> None:
        info = self.fs_info(filename)
        if token:                                     # optional; a wrong one is refused like FileDel's
            self.check_token(filename, token)
        flags = "|".join(f[7:] for f in info["flags"])
        if any(h["name"] == norm(filename) and h["mode"] == "write" for h in self.files.values()):
            flags = (flags + "|" if flags else "") + "open_write"
        tok = info["token"] if token and token == info["token"] else 0
        ctx.info(f"+filegetinfo:{flags},{info['size']},{blocks(info['max']) * BLOCK},{tok},"
                 f"{blocks(info['max']) * BLOCK},{info['wc']}")

    @command("+FileRead", Form.WRITE, Int("file_id", 0, 0x7FFFFFFF), Int("offset", 0, FLASH_CAPACITY), FORMAT,
             Int("length", 1, 4096), family="file", doc="Read: +fileread:<format>,<read bytes>,<data>")
    @nwp
    async def at_fileread(self, ctx: Ctx, fid: int, offset: int, fmt: int, length: int) -> None:
        h = self.handle(fid, "read")
        data = self.fs_read(h["name"])
        if offset > len(data):
            raise fail(E_FS_OFFSET, "offset beyond the end of the file")
        ctx.info(b"+fileread:" + encode_data(fmt, data[offset:offset + length]))

    @command("+FileWrite", Form.WRITE, Int("file_id", 0, 0x7FFFFFFF), Int("offset", 0, FLASH_CAPACITY), FORMAT,
             Int("length", 1, 4096), Raw("data"), family="file", doc="Write: +filewrite:<written bytes>")
    @nwp
    async def at_filewrite(self, ctx: Ctx, fid: int, offset: int, fmt: int, length: int, data) -> None:
        h = self.handle(fid, "write")
        payload = decode_data(fmt, data, length)
        if offset + len(payload) > h["max"]:
            raise fail(E_FS_OFFSET, f"write beyond the maximum file size {h['max']}")
        buf = h["buf"]
        if len(buf) < offset:
            buf.extend(b"\xff" * (offset - len(buf)))
        buf[offset:offset + len(payload)] = payload
        ctx.info(f"+filewrite:{len(payload)}")
