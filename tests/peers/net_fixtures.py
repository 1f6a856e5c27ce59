"""Pytest fixtures for the loopback network peers (see ``peers.servers``).

Loaded for every test through ``pytest_plugins`` in ``tests/conftest.py``.

* ``pki``          - session-scoped test PKI (``peers.certs.Pki``) in a tmp dir
* ``tcp_echo``     - ``TcpEchoServer`` on 127.0.0.1
* ``udp_echo``     - ``UdpEchoServer`` on 127.0.0.1
* ``tls_echo``     - ``TlsEchoServer`` with ``pki.server_cert``; client
  certificates are requested (verified against ``pki.ca_cert``) but optional
* ``tls_echo_mtls``- same, but a client certificate is required
* ``tcp_sink``     - ``TcpSink`` on 127.0.0.1
* ``sntp_server``  - ``SntpServer`` on 127.0.0.1 (offset +1000 s)

Each server fixture is function-scoped and stopped after the test.
"""

from __future__ import annotations

import pytest

from peers.certs import Pki, make_pki
from peers.servers import SntpServer, TcpEchoServer, TcpSink, TlsEchoServer, UdpEchoServer


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Session-wide test PKI (CA, server, client, expired, other-CA certs)."""
    return make_pki(tmp_path_factory.mktemp("pki"), hostnames=["localhost", "test.atemu.invalid"])


@pytest.fixture
def tcp_echo():
    """A running TcpEchoServer on 127.0.0.1 (``.port``)."""
    with TcpEchoServer() as srv:
        yield srv


@pytest.fixture
def udp_echo():
    """A running UdpEchoServer on 127.0.0.1 (``.port``)."""
    with UdpEchoServer() as srv:
        yield srv


@pytest.fixture
def tls_echo(pki: Pki):
    """A running TlsEchoServer using the test PKI; client cert optional."""
    with TlsEchoServer(pki.server_cert, pki.server_key, ca=pki.ca_cert) as srv:
        yield srv


@pytest.fixture
def tls_echo_mtls(pki: Pki):
    """A running TlsEchoServer that requires a client cert from ``pki.ca_cert``."""
    with TlsEchoServer(pki.server_cert, pki.server_key, ca=pki.ca_cert, require_client_cert=True) as srv:
        yield srv


@pytest.fixture
def tcp_sink():
    """A running TcpSink on 127.0.0.1 recording everything it receives."""
    with TcpSink() as srv:
        yield srv


@pytest.fixture
def sntp_server():
    """A running SntpServer on 127.0.0.1 whose clock is host time + 1000 s."""
    with SntpServer() as srv:
        yield srv
