from harness import host_styles

pytest_plugins = ["peers.net_fixtures", "peers.mqtt_fixtures"]

# ``@pytest.mark.usefixtures("host_style")`` runs a test once per host style: CR, CR LF, CR LF
# byte by byte (a module may define its own, autouse, to run all its tests so)
host_style = host_styles("CR", "CRLF", "CRLF-bytewise", autouse=False)
