"""The in-process fuzz harness (tests/fuzzer.py) as a smoke run: 20k seeded inputs over the four
profiles against real local peers; `make fuzz` runs the same harness with 1e6 inputs per profile."""
from __future__ import annotations

import asyncio

import pytest

from atemu.profile import find_profile, installed_profiles
from fuzzer import FuzzFailure, Peers, fuzz_profile

# the smoke covers the four original profiles (each takes minutes of wall time: its set-up, escape
# guard times and silences); `make fuzz` runs every installed profile
PROFILES = sorted(p for p in installed_profiles() if p in ("eseye-anynet", "quectel-fcm242d", "ti-simplelink", "microchip-winc"))
PER_PROFILE = 20_000 // len(PROFILES)


@pytest.fixture(scope="module")
def peers():
    with Peers() as p:
        yield p


@pytest.mark.timeout(900)
@pytest.mark.parametrize("profile", PROFILES)
def test_fuzz_smoke(profile, peers):
    stats = asyncio.run(fuzz_profile(profile, PER_PROFILE, 20261203, peers=peers, batch=500, quiet=True))
    assert stats["inputs"] == PER_PROFILE
    # the generator reaches the handlers, not just the line parser
    assert stats["commands"] > PER_PROFILE // 10 and stats["covered"] >= 20, stats
    assert stats["recovered_by"], stats      # the module answered AT after every batch
    if profile != "eseye-anynet":            # (Eseye reaches the network only through AWS IoT with the SIM's keys)
        assert stats["peers"]["tcp_connections"] >= 1 and stats["peers"]["tcp_bytes"] >= 5, stats
    if profile in ("microchip-winc", "quectel-fcm242d"):
        assert stats["peers"]["mqtt_clients"] >= 1, stats


def test_fuzz_catches_a_handler_that_raises(peers, monkeypatch):
    cls = find_profile("eseye-anynet")
    for spec in cls.commands.values():
        for fs in list(spec.forms.values()) + list(spec.subs.values()):
            if fs.handler:
                async def boom(self, ctx, *a):
                    raise ZeroDivisionError("planted")
                monkeypatch.setattr(cls, fs.handler, boom)
    with pytest.raises(FuzzFailure, match="eseye-anynet seed 4: input 200: .*internal error"):
        asyncio.run(fuzz_profile("eseye-anynet", 1000, 4, peers=peers, batch=200, quiet=True))


# ------------------------------------------------------------------------------- what the fuzz found

def test_mqtt_client_paho_refuses_leaves_no_traceback(mosquitto, capfd, monkeypatch):
    """Found by `make fuzz` (microchip-winc, seed 1): an empty client id without a clean session makes
    paho refuse the client; its half-built object then printed 'Exception ignored ... AttributeError'
    on stderr when collected. The host sees the module's error, and stderr stays clean."""
    import gc
    import sys

    from test_microchip_util import Winc
    ignored = []      # what Python would print as "Exception ignored in ..." (pytest hides it otherwise)
    monkeypatch.setattr(sys, "unraisablehook", lambda u: ignored.append(f"{u.object!r}: {u.exc_value!r}"))
    with Winc() as e:
        e.join()
        e.oks('AT+MQTTC=1,"127.0.0.1"', f"AT+MQTTC=2,{mosquitto.port}", 'AT+MQTTC=3,""', "AT+MQTTC=7,0")
        assert e.cmd("AT+MQTTCONN=0") == b"OK\r\n"
        e.urc(rb"\+MQTTCONN:0\r\n")
        assert e.cmd("AT+GMI") == b'+GMI:"Microchip"\r\nOK\r\n'
    # the refused client object itself, collected now (in the module it goes whenever the
    # collector runs): nothing may be "ignored" on the way
    # (only while the core subclasses paho's Client; a core on paho's public interface has no such object)
    from paho.mqtt.client import CallbackAPIVersion

    from atemu.net import mqtt as core_mqtt
    client_cls = getattr(core_mqtt, "_PahoClient", None)
    if client_cls is not None:
        with pytest.raises(ValueError, match="client id must be provided"):
            client_cls(None, ("127.0.0.1", mosquitto.port), callback_api_version=CallbackAPIVersion.VERSION2,
                       client_id="", clean_session=False)
    gc.collect()
    err = capfd.readouterr().err
    assert not ignored, ignored
    assert "Exception ignored" not in err and "Traceback" not in err, err
