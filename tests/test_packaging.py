"""One installed import package, `atemu`: `import atemu`, `atemu.start`, the `atemu` pytest plugin, `atemu://`;
nothing installs a top-level `emulator` or `profiles` (the source folders keep those names)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_only_atemu_is_importable_outside_the_source_tree(tmp_path):
    code = ("import importlib.util as u, importlib.metadata as md; "
            "print(u.find_spec('emulator') is None, u.find_spec('profiles') is None); "
            "import atemu, atemu.profiles.eseye_anynet; print(callable(atemu.start)); "
            "print(sorted(ep.value for ep in md.entry_points(group='pytest11') if ep.name == 'atemu')); "
            "print(sorted(ep.value.split(':')[0] for ep in md.entry_points(group='atemu.profiles')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "True True"               # no top-level emulator / profiles installed
    assert lines[1] == "True"
    assert lines[2] == "['atemu.pytest_plugin']"
    assert all(m.startswith("atemu.profiles.") for m in eval(lines[3]))


def test_every_source_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {"atemu": "emulator", "atemu.profiles": "profiles"}
    found = {"atemu" + str(p.parent.relative_to(ROOT))[len("emulator"):].replace("/", ".")
             for p in (ROOT / "emulator").rglob("__init__.py")}
    found |= {"atemu." + str(p.parent.relative_to(ROOT)).replace("/", ".") for p in (ROOT / "profiles").rglob("__init__.py")}
    assert found == set(cfg["packages"]), "add the new package to [tool.setuptools] packages in pyproject.toml"
