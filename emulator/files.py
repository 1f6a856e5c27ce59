"""The module's flash file system: a folder under ``--state-dir`` that names cannot escape.

Shared by every profile with files (Quectel QF*, TI File*, Microchip certificate store).
Names are flat or slash-separated relative paths; ``..``, absolute paths, NUL bytes, backslashes
and control characters are refused with :class:`FsError` before anything is touched.
"""
from __future__ import annotations

import os
from pathlib import Path


class FsError(Exception):
    """``kind``: ``invalid`` (bad name), ``not_found``, ``exists``, ``full``, ``too_big``, ``io``."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(message or kind)
        self.kind = kind


class FlashFS:
    """A size-limited flat-ish file store rooted at ``root``."""

    def __init__(self, root: Path | str, *, capacity: int = 1 << 20, max_file: int | None = None,
                 max_name: int = 80, max_files: int = 128):
        self.root = Path(root)
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
        return p

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def list(self) -> list[tuple[str, int]]:
        """(name, size) of every file, sorted by name."""
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                full = Path(dirpath) / f
                if full.is_symlink():
                    continue
                out.append((full.relative_to(self.root).as_posix(), full.stat().st_size))
        return sorted(out)

    def used(self) -> int:
        return sum(s for _, s in self.list())

    def free(self) -> int:
        return max(0, self.capacity - self.used())

    def read(self, name: str) -> bytes:
        p = self.path(name)
        if not p.is_file():
            raise FsError("not_found", f"{name}: no such file")
        return p.read_bytes()

    def write(self, name: str, data: bytes, *, append: bool = False) -> None:
        """Create or replace (or append to) ``name``, within the size limits."""
        p = self.path(name)
        old = p.stat().st_size if p.is_file() else 0
        new_size = old + len(data) if append else len(data)
        if self.max_file is not None and new_size > self.max_file:
            raise FsError("too_big", f"{name}: file would exceed {self.max_file} bytes")
        if not p.exists() and len(self.list()) >= self.max_files:
            raise FsError("full", "too many files")
        if self.used() - old + new_size > self.capacity:
            raise FsError("full", "flash is full")
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "ab" if append else "wb") as f:
            f.write(data)

    def delete(self, name: str) -> None:
        p = self.path(name)
        if not p.is_file():
            raise FsError("not_found", f"{name}: no such file")
        p.unlink()

    def delete_all(self) -> None:
        for name, _ in self.list():
            (self.root / name).unlink()
