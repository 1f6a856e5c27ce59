"""pytest plugin (entry point ``pytest11: atemu``): the ``atemu_module`` fixture.

    def test_broker_drop(atemu_module):
        m = atemu_module("eseye-anynet", world={...})          # transport="pty" by default
        ser = serial.Serial(m.port, 9600, timeout=1)
        ...
        m.inject("broker_disconnect")

Every module started through the fixture is stopped after the test. Loading the plugin also
registers the ``atemu://`` pyserial URL scheme (``serial.serial_for_url("atemu://eseye-anynet")``).
"""
from __future__ import annotations

from typing import Any

import pytest


from atemu import register_serial_handler

register_serial_handler()        # importing the package already does it; kept explicit for readers


@pytest.fixture
def atemu_module(tmp_path_factory: Any):
    """Factory: ``atemu_module(profile, world=None, transport="pty", pacing=False, **kw)`` -> ModuleHandle."""
    from atemu.api import start
    handles = []

    def make(profile: str, *, world: Any = None, transport: str = "pty", pacing: bool = False, **kw: Any):
        kw.setdefault("state_dir", tmp_path_factory.mktemp("atemu-state"))
        h = start(profile, world=world, transport=transport, pacing=pacing, **kw)
        handles.append(h)
        return h

    yield make
    for h in reversed(handles):
        h.close()
