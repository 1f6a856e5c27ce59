"""An "AWS IoT" endpoint on loopback for the Eseye tests: a TLS mosquitto that requires the SIM's
client certificate, a PKI whose server certificate names the AWS endpoint, and the world that
maps that name to 127.0.0.1. Fixtures ``aws_pki`` (module scope) and ``broker`` come from here."""
from __future__ import annotations

import pytest

from peers.certs import make_pki
from peers.mosquitto import Mosquitto

AWS_HOST = "a1b2c3-ats.iot.eu-west-1.amazonaws.com"
THING = "thing_0001"


@pytest.fixture(scope="module")
def aws_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("awspki"), hostnames=[AWS_HOST])


@pytest.fixture
def broker(aws_pki):
    from peers.mqtt_fixtures import require_mosquitto
    require_mosquitto()
    b = Mosquitto(tls=dict(cafile=aws_pki.ca_cert, certfile=aws_pki.server_cert, keyfile=aws_pki.server_key),
                  require_certificate=True)
    b.start()
    yield b
    b.close()


def sim_world(pki, port, *, ca=None, cert=None, key=None) -> dict:
    """World dict whose AnyNet SIM carries ``pki``'s client material, endpoint on 127.0.0.1:port."""
    return {
        "network": {"hosts": {AWS_HOST: "127.0.0.1"}},
        "aws": {"endpoint": f"{AWS_HOST}:{port}", "thing_name": THING,
                "ca": str(ca or pki.ca_cert), "cert": str(cert or pki.client_cert), "key": str(key or pki.client_key)},
    }
