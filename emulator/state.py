"""Non-volatile module state under ``--state-dir``: saved settings and the flash file system.

Nothing atemu reads or writes inside the state folder follows a symbolic link: files are opened
with ``O_NOFOLLOW``, new files are created exclusively under a fresh name and moved into place
with an atomic rename, and a link planted where atemu keeps a file is refused with
:class:`StateError` (one line that says what to remove).
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class StateError(Exception):
    """A state-folder problem, one line saying what to do."""


def default_state_dir(profile: str) -> Path:
    """``$XDG_STATE_HOME/atemu/<profile>`` (``~/.local/state/atemu/<profile>`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "atemu" / profile


def _link_error(path: Path) -> StateError:
    return StateError(f"{path} is a symbolic link; atemu never follows links in the state folder: remove it")


def check_no_links(root: Path, relative: str | Path) -> None:
    """Raise StateError when an existing component of ``root/relative`` below ``root`` is a link."""
    p = Path(root)
    for part in Path(relative).parts:
        p = p / part
        try:
            if p.is_symlink():
                raise _link_error(p)
        except OSError:
            return


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (StateError)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(path) from None
        raise


def read_bytes(path: Path) -> bytes:
    """The file's bytes; FileNotFoundError when absent; StateError for a link."""
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: written to a new file created exclusively in the same folder
    (no link can redirect it), then renamed over ``path`` (a link at ``path`` is replaced, never
    followed)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def new_file(folder: Path, name: str):
    """A new, exclusively created file ``folder/.name.XXXX`` (``folder`` is made when missing and must
    not be a link): returns (path, binary file object). Move it into place with ``os.replace``."""
    if folder.is_symlink():
        raise _link_error(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    return Path(tmp), os.fdopen(fd, "wb")


def lock_state_dir(state_dir: Path):
    """Open and lock ``state_dir/.atemu-lock`` (never truncated, never through a link). Returns
    (file, held): ``held`` is False when another process holds the lock. StateError for a link."""
    import fcntl
    fd = open_nofollow(Path(state_dir) / ".atemu-lock", os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return f, False
    return f, True


class Settings:
    """A small JSON key/value store that survives reboots and emulator restarts."""

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, Any] = {}
        try:
            data = json.loads(read_bytes(path))
            self._data = data if isinstance(data, dict) else {}
        except (OSError, ValueError, RecursionError):
            self._data = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.save()

    def delete(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self.save()

    def items(self) -> dict[str, Any]:
        return dict(self._data)

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self._data, indent=1, sort_keys=True).encode())
