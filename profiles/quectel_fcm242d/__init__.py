"""Quectel FCM242D / FGM842D profile: part 1 (base.py) combined with the MQTT, HTTP and BLE mixins.

The mixins live in mqtt.py, http.py and ble.py; while one of them does not exist yet the profile
still loads (an empty class takes its place).
"""
from __future__ import annotations

import importlib
import logging

from .base import QuectelBase, SslConfig  # noqa: F401


def _mixin(module: str, cls: str) -> type:
    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module}":
            logging.getLogger("atemu.quectel").warning("quectel %s mixin failed to load: %s", module, e)
        return type(cls, (), {})
    return getattr(mod, cls)


QuectelMqtt = _mixin("mqtt", "QuectelMqtt")
QuectelHttp = _mixin("http", "QuectelHttp")
QuectelBle = _mixin("ble", "QuectelBle")


class QuectelFcm242d(QuectelBase, QuectelMqtt, QuectelHttp, QuectelBle):
    """Quectel FCM242D / FGM842D (alias quectel-fgm842d)."""

    name = "quectel-fcm242d"
    aliases = ("quectel-fgm842d", "fcm242d", "fgm842d")
