"""pytest fixtures for MQTT and HTTP peers (loaded via tests/conftest.py).

* ``mosquitto``      a fresh broker on a free 127.0.0.1 port (plain only)
* ``mosquitto_tls``  a broker with a plain listener and a TLS listener that
  requires a client certificate from the ``pki`` CA
* ``mqtt_probe``     factory: ``mqtt_probe(broker_or_port, **kw) -> MqttProbe``
  (closed automatically)
* ``http_server``    an aiohttp server (plain HTTP) in its own thread
* ``https_server``   the same with TLS, server cert from the ``pki`` CA
"""

from __future__ import annotations

import os

import pytest

from peers.httpserver import HttpServer
from peers.mosquitto import MOSQUITTO, Mosquitto, MqttProbe

_MISSING = (
    f"mosquitto is not installed ({MOSQUITTO} missing): run `make test` (which installs it) "
    "or `apt-get install -y mosquitto`"
)


def require_mosquitto() -> None:
    """Fail the test with one clear line when mosquitto is missing."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail(_MISSING, pytrace=False)


def _start(broker: Mosquitto) -> Mosquitto:
    try:
        broker.start()
    except RuntimeError as exc:
        broker.close()
        pytest.fail(str(exc), pytrace=False)
    return broker


@pytest.fixture
def mosquitto():
    """A running mosquitto with a plain listener on 127.0.0.1 (``.port``)."""
    require_mosquitto()
    broker = _start(Mosquitto())
    yield broker
    broker.close()


@pytest.fixture
def mosquitto_tls(pki):
    """A running mosquitto with ``.port`` (plain) and ``.tls_port`` (TLS,
    client certificate from the ``pki`` CA required, CN used as username)."""
    require_mosquitto()
    broker = _start(
        Mosquitto(
            tls=dict(cafile=pki.ca_cert, certfile=pki.server_cert, keyfile=pki.server_key),
            require_certificate=True,
            use_identity_as_username=True,
        )
    )
    yield broker
    broker.close()


@pytest.fixture
def mosquitto_factory():
    """Factory ``mosquitto_factory(**Mosquitto kwargs) -> running Mosquitto``."""
    require_mosquitto()
    brokers: list[Mosquitto] = []

    def make(**kwargs) -> Mosquitto:
        broker = Mosquitto(**kwargs)
        brokers.append(broker)
        return _start(broker)

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def mqtt_probe():
    """Factory ``mqtt_probe(broker_or_port, **kw) -> MqttProbe`` (auto-closed)."""
    probes: list[MqttProbe] = []

    def make(target, **kwargs) -> MqttProbe:
        port = target.port if isinstance(target, Mosquitto) else int(target)
        probe = MqttProbe(port, **kwargs)
        probes.append(probe)
        return probe

    yield make
    for probe in probes:
        probe.close()


@pytest.fixture
def http_server():
    """A plain-HTTP :class:`HttpServer` on 127.0.0.1."""
    with HttpServer() as server:
        yield server


@pytest.fixture
def https_server(pki):
    """An HTTPS :class:`HttpServer` on 127.0.0.1 with the ``pki`` server cert."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    with HttpServer(ssl_context=ctx) as server:
        yield server
