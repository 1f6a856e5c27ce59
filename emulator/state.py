"""Non-volatile module state under ``--state-dir``: saved settings and the flash file system."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def default_state_dir(profile: str) -> Path:
    """``$XDG_STATE_HOME/atemu/<profile>`` (``~/.local/state/atemu/<profile>`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "atemu" / profile


class Settings:
    """A small JSON key/value store that survives reboots and emulator restarts."""

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, Any] = {}
        try:
            self._data = json.loads(path.read_text())
        except (OSError, ValueError):
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
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
