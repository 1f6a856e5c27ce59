pytest_plugins = ["peers.net_fixtures", "peers.mqtt_fixtures"]
