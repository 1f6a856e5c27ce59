"""Quectel FCM242D / FGM842D profile: part 1 (base.py) combined with the MQTT, HTTP and BLE mixins.

The mixins live in mqtt.py, http.py and ble.py; while one of them does not exist yet the profile
still loads (an empty class takes its place).
"""
from __future__ import annotations

from .base import QuectelBase, SslConfig  # noqa: F401


from .ble import DEVIATIONS_BLE, URCS_BLE, QuectelBle
from .http import DEVIATIONS_HTTP, URCS_HTTP, QuectelHttp
from .mqtt import DEVIATIONS_MQTT, URCS_MQTT, QuectelMqtt
from .base import DEVIATIONS


class QuectelFcm242d(QuectelBase, QuectelMqtt, QuectelHttp, QuectelBle):
    """Quectel FCM242D / FGM842D (alias quectel-fgm842d)."""

    name = "quectel-fcm242d"
    aliases = ("quectel-fgm842d", "fcm242d", "fgm842d", "quectel")
    urcs = QuectelBase.urcs + URCS_MQTT + URCS_HTTP + URCS_BLE
    deviations = DEVIATIONS + DEVIATIONS_MQTT + DEVIATIONS_HTTP + DEVIATIONS_BLE
    option_prefix = "quectel"
    #: values the world chooses on every run, ignored by ``atemu replay`` (unless --raw): the broker's packet id
    replay_volatile = (r"^\+QMTRECV: \d+,(\d+),",)
    world_options = {
        "escape_guard": "+++ guard time in seconds (default 1.0; TCP/IP, SSL and BLE transparent modes)",
        "boot_delay": "seconds from AT+QRST's OK to 'ready' (default 0.5)",
        "join_delay": "seconds an association takes (default 0.2)",
        "connect_timeout": "TCP/SSL connect timeout in seconds (default 150)",
        "listen_host": "host address for TCP LISTENER / UDP SERVICE and the QWEBCFG form (default 127.0.0.1)",
        "ntp_server": "server of AT+QNTP without arguments (default pool.ntp.org)",
        "mac": "AT+QWLMAC and the soft-AP BSSID (default 88:00:33:77:69:cc)",
        "webcfg_port": "port of the AT+QWEBCFG provisioning form (default 0 = any free port)",
        "webcfg_ssid": "soft AP raised by AT+QWEBCFG=1 (default FCM242D_69CC)",
        "ble_address": "the module's BLE address (default c8e4a1b1c1f9)",
        "mqtt_input_timeout": "seconds AT+QMTPUB waits for its payload (default 60)",
    }
    pseudo_commands = [{
        "name": "+++", "family": "tcpip, ble",
        "doc": "Leave transparent mode (TCP/IP, SSL, BLE): 1 s of silence, +++, 1 s of silence -> OK; "
               "the socket or BLE link stays open (ATO / AT+QBLETRANMODE re-enter)",
        "forms": {"escape": {"params": [], "responses": ["OK", "ERROR"]}},
    }]

    def snapshot(self) -> dict:
        state = super().snapshot()
        state.update(mqtt=self.mqtt_snapshot(), http=self.http_snapshot(), ble=self.ble_snapshot())
        return state
