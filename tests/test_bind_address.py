"""atemu.net.sockets.host_bind_address and the world's network.listen_host(6): a module's own
(virtual) and wildcard addresses map to the host listen address, host addresses are kept."""
from __future__ import annotations

import pytest

from atemu.net.sockets import host_bind_address
from atemu.world import World, WorldError


@pytest.mark.parametrize("address, own, expect", [
    ("192.168.1.100", ["192.168.1.100"], "127.0.0.1"),      # the station address of the IP event
    ("10.123.45.1", ["192.168.1.100", "10.123.45.1"], "127.0.0.1"),   # the soft-AP address
    ("0.0.0.0", [], "127.0.0.1"),
    ("", [], "127.0.0.1"),
    ("::", [], "::1"),
    ("fe80::a00:28ff:fe01:203", ["fe80::a00:28ff:fe01:203"], "::1"),
    ("[fe80::a00:28ff:fe01:203]", ["fe80::a00:28ff:fe01:203%eth0"], "::1"),
    ("127.0.0.1", ["192.168.1.100"], "127.0.0.1"),           # host addresses: as given
    ("127.0.0.2", [], "127.0.0.2"),
    ("::1", [], "::1"),
    ("192.168.1.77", ["192.168.1.100"], "192.168.1.77"),     # not the module's: as given (the bind decides)
])
def test_mapping(address, own, expect):
    assert host_bind_address(address, own) == expect


def test_listen_hosts_from_arguments():
    assert host_bind_address("192.168.1.100", ["192.168.1.100"], listen_host="127.0.0.5") == "127.0.0.5"
    assert host_bind_address("::", (), listen_host6="::1") == "::1"


def test_world_listen_host_keys():
    w = World.from_dict({"network": {"listen_host": "127.0.0.3", "listen_host6": "::1"}})
    assert (w.network.listen_host, w.network.listen_host6) == ("127.0.0.3", "::1")
    assert World.from_dict({}).network.listen_host == "127.0.0.1"
    with pytest.raises(WorldError, match="network.listen_host must be an IPv4 address"):
        World.from_dict({"network": {"listen_host": "::1"}})
    with pytest.raises(WorldError, match="network.listen_host6 must be an IPv6 address"):
        World.from_dict({"network": {"listen_host6": "localhost"}})
