"""The compose bench's helper services, one program: ``python3 services.py COMMAND``.

  broker   generate the bench PKI into $CERTS if it is not there yet (CA, broker certificate for the
           names in $BROKER_NAMES, client certificate CN thing_0001), then run mosquitto: TLS with
           client certificates on $TLS_PORT (8883), plain MQTT on $MQTT_PORT (1883, for the witness)
  peers    TCP and UDP echo on $ECHO_PORT (7007) and an HTTP server on $HTTP_PORT (8080):
           GET / answers "hello from the bench", POST /echo answers the body
  witness  subscribe to '#' on the broker and print every message as one line "topic payload"
  health   exit 0 when a service answers: health control URL N | health tcp HOST PORT
  fleetcheck URL...  for each control API URL: list its modules, send AT (CR LF) to every one
           through the control API's host name, expect OK; one line per module, exit 0 if all answer
  wait     wait for files to exist, then run a command: wait FILE... -- CMD ARGS
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

ENV = os.environ.get


def cmd_broker() -> int:
    certs = Path(ENV("CERTS", "/certs"))
    names = [n for n in ENV("BROKER_NAMES", "broker,localhost").split(",") if n]
    have = all((certs / f).exists() for f in ("ca.crt", "server.crt", "server.key"))   # e.g. a Kubernetes Secret
    if not have and not (certs / ".complete").exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from certs import make_pki                        # tests/peers/certs.py, copied into the image
        make_pki(certs, hostnames=names)
        (certs / ".complete").write_text("")
        print(f"broker: certificates for {', '.join(names)} written to {certs}", flush=True)
    conf = Path(ENV("MOSQUITTO_CONF", "/tmp/mosquitto.conf"))
    conf.write_text("\n".join([
        "per_listener_settings false", "allow_anonymous true", "log_dest stderr", "log_type all",
        f"listener {ENV('TLS_PORT', '8883')}", f"cafile {certs}/ca.crt", f"certfile {certs}/server.crt", f"keyfile {certs}/server.key",
        "require_certificate true",
        f"listener {ENV('MQTT_PORT', '1883')}", ""]))
    os.execvp("mosquitto", ["mosquitto", "-c", str(conf)])
    return 1


async def _peers() -> None:
    from aiohttp import web
    port = int(ENV("ECHO_PORT", "7007"))

    async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    class UdpEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport

        def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
            self.transport.sendto(data, addr)

    await asyncio.start_server(tcp_echo, "0.0.0.0", port)
    await asyncio.get_running_loop().create_datagram_endpoint(UdpEcho, local_addr=("0.0.0.0", port))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the bench\n")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type=request.content_type)

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", int(ENV("HTTP_PORT", "8080"))).start()
    print(f"peers: TCP and UDP echo on {port}, HTTP on {ENV('HTTP_PORT', '8080')}", flush=True)
    await asyncio.Event().wait()


def cmd_witness() -> int:
    import paho.mqtt.client as mqtt
    host, port = ENV("BROKER_HOST", "broker"), int(ENV("BROKER_PORT", "1883"))

    def on_connect(c, userdata, flags, reason, props=None):  # type: ignore[no-untyped-def]
        c.subscribe("#", qos=1)
        print(f"witness: subscribed to '#' on {host}:{port}", flush=True)

    def on_message(c, userdata, msg):  # type: ignore[no-untyped-def]
        print(f"witness: {msg.topic} {msg.payload.decode(errors='replace')}", flush=True)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-witness")
    c.on_connect, c.on_message = on_connect, on_message
    while True:                                          # wait for the broker to come up
        try:
            c.connect(host, port)
            break
        except OSError:
            time.sleep(1)
    c.loop_forever(retry_first_connection=True)
    return 0


def cmd_health(args: list[str]) -> int:
    try:
        if args[0] == "control":
            url, want = args[1], int(args[2]) if len(args) > 2 else 1
            token = ENV("ATEMU_CONTROL_TOKEN", "")
            req = urllib.request.Request(f"{url}/api/modules", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return 0 if len(json.load(r)) >= want else 1
        if args[0] == "tcp":
            with socket.create_connection((args[1], int(args[2])), timeout=5):
                return 0
    except (OSError, ValueError, IndexError):
        return 1
    print("usage: health control URL [N] | health tcp HOST PORT", file=sys.stderr)
    return 2


def cmd_fleetcheck(urls: list[str]) -> int:
    import re
    from urllib.parse import urlsplit

    import serial
    token = ENV("ATEMU_CONTROL_TOKEN", "")
    bad = total = 0
    for url in urls:
        host = urlsplit(url).hostname
        req = urllib.request.Request(f"{url}/api/modules", headers={"Authorization": f"Bearer {token}"})
        mods = None
        for _ in range(int(ENV("CHECK_WAIT", "60"))):
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    mods = json.load(r)
                break
            except OSError:
                time.sleep(1)
        if mods is None:
            print(f"fleetcheck: {url}: control API does not answer", flush=True)
            bad += 1
            continue
        for m in mods:
            total += 1
            port = re.sub(r"//[^/]*:(\d+)$", lambda x: f"//{host}:{x.group(1)}", m["port"])
            try:
                s = serial.serial_for_url(port, timeout=0.2)
                try:
                    s.write(b"AT\r\n")
                    got, end = b"", time.monotonic() + 10
                    while b"OK\r\n" not in got and time.monotonic() < end:
                        got += s.read(256)
                finally:
                    s.close()
            except (OSError, serial.SerialException) as e:
                got = str(e).encode()
            ok = b"OK\r\n" in got
            bad += not ok
            print(f"fleetcheck: {m['name']} {port} {'OK' if ok else 'FAILED ' + repr(got)}", flush=True)
    print(f"fleetcheck: {total - bad} of {total} modules answered AT", flush=True)
    return 0 if bad == 0 and total > 0 else 1


def cmd_wait(args: list[str]) -> int:
    if "--" not in args:
        print("usage: wait FILE... -- CMD ARGS", file=sys.stderr)
        return 2
    i = args.index("--")
    files, cmd = args[:i], args[i + 1:]
    while not all(Path(f).exists() for f in files):
        time.sleep(0.5)
    os.execvp(cmd[0], cmd)
    return 1


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "broker":
        return cmd_broker()
    if cmd == "peers":
        asyncio.run(_peers())
        return 0
    if cmd == "witness":
        return cmd_witness()
    if cmd == "health":
        return cmd_health(rest)
    if cmd == "fleetcheck":
        return cmd_fleetcheck(rest)
    if cmd == "wait":
        return cmd_wait(rest)
    print(f"unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
