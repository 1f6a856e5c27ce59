"""The module's flash file system: a folder under ``--state-dir`` that names cannot escape.

Shared by every profile with files (Quectel QF*, TI File*, Microchip certificate store).
Names are flat or slash-separated relative paths; ``..``, absolute paths, NUL bytes, backslashes
and control characters are refused with :class:`FsError` before anything is touched.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .state import StateError, check_no_links


class FsError(Exception):
    """``kind``: ``invalid`` (bad name), ``not_found``, ``exists``, ``full``, ``too_big``, ``io``.

    A name used both as a file and as a folder gives ``exists`` (creating ``d`` while ``d/f`` exists)
    or ``invalid`` (creating ``d/f`` while the file ``d`` exists); a symlink planted in the flash
    folder gives ``invalid``: each profile maps the kinds to its module's error."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(message or kind)
        self.kind = kind


class FlashFS:
    """A size-limited flat-ish file store rooted at ``root``."""

    def __init__(self, root: Path | str, *, capacity: int = 1 << 20, max_file: int | None = None,
                 max_name: int = 80, max_files: int = 128):
        self.root = Path(root)
        if self.root.is_symlink():
            raise StateError(f"{self.root} is a symbolic link; atemu never follows links in the state folder: "
                             "remove it")
        self.root.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.max_file = max_file
        self.max_name = max_name
        self.max_files = max_files

    def path(self, name: str) -> Path:
        """The host path for ``name``; raises FsError('invalid') for any escape attempt."""
        if not name or len(name) > self.max_name:
            raise FsError("invalid", f"file name must be 1..{self.max_name} characters")
        if "\0" in name or "\\" in name or any(ord(c) < 0x20 for c in name):
            raise FsError("invalid", "file name contains a forbidden character")
        if name.startswith("/") or name.startswith("~"):
            raise FsError("invalid", "absolute file names are not allowed")
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise FsError("invalid", "file name must not contain empty, '.' or '..' parts")
        p = (self.root / name)
        root = self.root.resolve()
        try:
            p.resolve().relative_to(root)
        except ValueError:
            raise FsError("invalid", "file name leaves the flash folder") from None
        try:
            check_no_links(self.root, name)
        except StateError as e:
            raise FsError("invalid", str(e)) from None
        return p

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.lstat(self.path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, name: str) -> bool:
        st = self._lstat(name)
        return st is not None and stat.S_ISREG(st.st_mode)

    def size(self, name: str) -> int:
        st = self._lstat(name)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise FsError("not_found", f"{name}: no such file")
        return st.st_size

    def list(self) -> list[tuple[str, int]]:
        """(name, size) of every file, sorted by name (symbolic links are not files of the module)."""
        return list_files(self.root)

    def used(self) -> int:
        return sum(s for _, s in self.list())

    def free(self) -> int:
        return max(0, self.capacity - self.used())

    def read(self, name: str) -> bytes:
        p = self.path(name)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise self._error(name, e) from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise FsError("not_found", f"{name}: no such file")
            return f.read()

    @staticmethod
    def _error(name: str, e: OSError) -> FsError:
        """The FsError a module sees for an OS error on ``name``."""
        if isinstance(e, IsADirectoryError):
            return FsError("exists", f"{name}: a folder of that name exists")
        if isinstance(e, (NotADirectoryError, FileExistsError)):
            return FsError("invalid", f"{name}: a part of the name is a file, not a folder")
        if isinstance(e, FileNotFoundError):
            return FsError("not_found", f"{name}: no such file")
        if e.errno == errno.ELOOP:
            return FsError("invalid", f"{name}: is a symbolic link in the flash folder (never followed)")
        if e.errno == errno.ENOSPC:
            return FsError("full", f"{name}: the host disk is full")
        return FsError("io", f"{name}: {e.strerror or e}")

    def write(self, name: str, data: bytes, *, append: bool = False) -> None:
        """Create or replace (or append to) ``name``, within the size limits."""
        p = self.path(name)
        st = self._lstat(name)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise FsError("exists", f"{name}: a folder of that name exists")
        old = st.st_size if st is not None else 0
        new_size = old + len(data) if append else len(data)
        if self.max_file is not None and new_size > self.max_file:
            raise FsError("too_big", f"{name}: file would exceed {self.max_file} bytes")
        if st is None and len(self.list()) >= self.max_files:
            raise FsError("full", "too many files")
        if self.used() - old + new_size > self.capacity:
            raise FsError("full", "flash is full")
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, flags, 0o644)
        except OSError as e:
            raise self._error(name, e) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def delete(self, name: str) -> None:
        p = self.path(name)
        if not self.exists(name):
            raise FsError("not_found", f"{name}: no such file")
        p.unlink()
        self._prune(p.parent)

    def _prune(self, folder: Path) -> None:
        """Remove folders left empty by a delete, so their names can become files again."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def delete_all(self) -> None:
        for name, _ in self.list():
            (self.root / name).unlink()
            self._prune((self.root / name).parent)


def list_files(root: Path) -> list[tuple[str, int]]:
    """(relative name, size) of the regular files under ``root``, sorted; symbolic links (to files or
    folders) are skipped, never followed."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            full = Path(dirpath) / f
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((full.relative_to(root).as_posix(), st.st_size))
    return sorted(out)
