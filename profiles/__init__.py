"""Vendor profiles shipped with atemu (each is also registered as an ``atemu.profiles`` entry point)."""
import importlib
import logging

_MODULES = {
    "eseye_anynet": "EseyeAnynet",
    "quectel_fcm242d": "QuectelFcm242d",
    "ti_simplelink": "TiSimpleLink",
    "microchip_winc": "MicrochipWinc",
    "rnwf02": "Rnwf02",
    "calypso": "Calypso",
}

BUILTIN_PROFILES = []
for _mod, _cls in _MODULES.items():
    try:
        BUILTIN_PROFILES.append(getattr(importlib.import_module(f"{__name__}.{_mod}"), _cls))
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_mod}":
            logging.getLogger("atemu").warning("profile %s failed to load: %s", _mod, _e)
    except Exception as _e:  # one broken profile must not take the others down
        logging.getLogger("atemu").warning("profile %s failed to load: %s", _mod, _e)
