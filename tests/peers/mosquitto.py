"""A real mosquitto broker for tests, plus a small synchronous MQTT probe.

``Mosquitto`` starts ``/usr/sbin/mosquitto`` on free 127.0.0.1 ports with a
generated configuration in a private temp directory.  ``MqttProbe`` is a
paho client with its own network thread that tests use to watch what the
emulator published and to inject messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["MOSQUITTO", "MosquittoNotInstalled", "Mosquitto", "MqttProbe", "free_port"]

MOSQUITTO = "/usr/sbin/mosquitto"
_INSTALL_HINT = (
    "mosquitto is not installed ({path} missing): run `make test` (which installs it) "
    "or `apt-get install -y mosquitto`"
)


class MosquittoNotInstalled(RuntimeError):
    """Raised when the mosquitto binary is missing."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """A mosquitto process on 127.0.0.1 (context manager; starts on enter).

    ``tls=dict(cafile=..., certfile=..., keyfile=...)`` adds a TLS listener
    on ``tls_port`` (``require_certificate`` and ``use_identity_as_username``
    configure it).  ``passwords={"user": "pass"}`` installs a password file
    (anonymous clients stay allowed unless ``allow_anonymous=False``).
    """

    def __init__(
        self,
        *,
        tls: dict | None = None,
        require_certificate: bool = True,
        use_identity_as_username: bool = False,
        passwords: dict[str, str] | None = None,
        allow_anonymous: bool = True,
        extra_config: list[str] | None = None,
        binary: str = MOSQUITTO,
        start_timeout: float = 5.0,
    ) -> None:
        self.binary = binary
        self.tls = dict(tls) if tls else None
        self.require_certificate = require_certificate
        self.use_identity_as_username = use_identity_as_username
        self.passwords = dict(passwords) if passwords else None
        self.allow_anonymous = allow_anonymous
        self.extra_config = list(extra_config or [])
        self.start_timeout = start_timeout
        self.port: int = 0
        self.tls_port: int | None = None
        self.host = "127.0.0.1"
        self._dir: Path | None = None
        self._proc: subprocess.Popen | None = None

    # -- lifecycle ------------------------------------------------------------
    def __enter__(self) -> "Mosquitto":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def directory(self) -> Path:
        """The private working directory (config, log, password file)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="atemu-mosquitto-"))
        return self._dir

    @property
    def log_path(self) -> Path:
        """Path of mosquitto's log file."""
        return self.directory / "mosquitto.log"

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the broker (allocating ports on first start) and wait until
        it accepts connections; raise RuntimeError with its log otherwise."""
        if not os.path.exists(self.binary):
            raise MosquittoNotInstalled(_INSTALL_HINT.format(path=self.binary))
        if self.running:
            return
        fresh_ports = not self.port
        for attempt in range(3):
            if fresh_ports:
                self.port = free_port()
                self.tls_port = free_port() if self.tls else None
            self._write_config()
            if self._spawn():
                return
            if not fresh_ports or attempt == 2:
                break
        raise RuntimeError(
            f"mosquitto did not start listening on 127.0.0.1:{self.port} within "
            f"{self.start_timeout:g}s; log:\n{self.log_text()}"
        )

    def _write_config(self) -> None:
        d = self.directory
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence false",
            f"log_dest file {d / 'mosquitto.log'}",
            "log_type all",
            "connection_messages true",
            "log_timestamp true",
            "max_keepalive 65535",
        ]
        if os.geteuid() == 0:
            # otherwise mosquitto drops to user "mosquitto", which cannot read our temp dir
            lines.append("user root")
        if self.passwords:
            pw = d / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.tls:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls['cafile']}",
                f"certfile {self.tls['certfile']}",
                f"keyfile {self.tls['keyfile']}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
            if self.use_identity_as_username:
                lines.append("use_identity_as_username true")
        lines += self.extra_config
        (d / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def _spawn(self) -> bool:
        d = self.directory
        out = open(d / "stdout.log", "ab")
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(d / "mosquitto.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=d,
            )
        finally:
            out.close()
        deadline = time.monotonic() + self.start_timeout
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if all(_port_open(p) for p in ports):
                return True
            time.sleep(0.02)
        self.kill()
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker gracefully (SIGTERM); ports stay reserved for restart()."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Kill the broker abruptly (SIGKILL)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_text(self) -> str:
        """mosquitto's log (plus anything it printed to stdout/stderr)."""
        parts = []
        for name in ("stdout.log", "mosquitto.log"):
            p = self.directory / name
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def probe(self, **kwargs) -> "MqttProbe":
        """An MqttProbe connected to this broker's plain listener."""
        return MqttProbe(self.port, **kwargs)


class MqttProbe:
    """Synchronous test-side MQTT client (paho, own network thread).

    ``subscribe()`` topics, then ``wait_for(topic)`` returns the next
    ``(payload, qos, retain)`` received on a topic matching ``topic``;
    ``publish()`` injects messages and waits for their acknowledgement.
    """

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        client_id: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        protocol: int = paho.MQTTv311,
        timeout: float = 5.0,
    ) -> None:
        self.client_id = client_id or f"probe-{uuid.uuid4().hex[:8]}"
        self._cond = threading.Condition()
        self._messages: list[paho.MQTTMessage] = []
        self._connected = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol, reconnect_on_failure=False
        )
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, u, f, rc, p: rc == 0 and self._connected.set()
        if tls_context is not None:
            self._client.tls_set_context(tls_context)
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TimeoutError(f"MqttProbe could not connect to {host}:{port}")

    def _on_message(self, _client, _userdata, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    def subscribe(self, topics: str | list[str], qos: int = 2, timeout: float = 5.0) -> list[int]:
        """Subscribe to one or more topic filters; wait for SUBACK."""
        if isinstance(topics, str):
            topics = [topics]
        done = threading.Event()
        granted: list[int] = []

        def on_subscribe(_c, _u, _mid, reason_codes, _p):
            granted.extend(int(r.value) for r in reason_codes)
            done.set()

        self._client.on_subscribe = on_subscribe
        rc, _ = self._client.subscribe([(t, qos) for t in topics])
        if rc != 0 or not done.wait(timeout):
            raise TimeoutError(f"no SUBACK for {topics}")
        return granted

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, timeout: float = 5.0,
                properties=None) -> None:
        """Publish and wait until it is sent (qos 0) or acknowledged (``properties``: paho
        Properties, with ``protocol=paho.MQTTv5``)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise TimeoutError(f"publish to {topic} not acknowledged")

    def wait_for(self, topic: str, timeout: float = 5.0) -> tuple[bytes, int, bool]:
        """Pop and return the first received message whose topic matches
        ``topic`` (exact or filter) as ``(payload, qos, retain)``."""
        msg = self.wait_message(topic, timeout)
        return bytes(msg.payload), msg.qos, bool(msg.retain)

    def wait_message(self, topic: str, timeout: float = 5.0) -> paho.MQTTMessage:
        """Like :meth:`wait_for`, but the whole paho message (MQTT 5: ``.properties``)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, msg in enumerate(self._messages):
                    if msg.topic == topic or paho.topic_matches_sub(topic, msg.topic):
                        del self._messages[i]
                        return msg
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.topic for m in self._messages]
                    raise TimeoutError(f"no message on {topic!r} within {timeout:g}s (pending: {seen})")
                self._cond.wait(remaining)

    def received(self) -> list[tuple[str, bytes, int, bool]]:
        """All messages not yet consumed by wait_for, as (topic, payload, qos, retain)."""
        with self._cond:
            return [(m.topic, bytes(m.payload), m.qos, bool(m.retain)) for m in self._messages]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
