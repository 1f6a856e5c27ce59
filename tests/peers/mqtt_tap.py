"""A recording TCP relay in front of a real broker: what an MQTT client sends, packet by packet.

``MqttTap(broker_port)`` listens on a free 127.0.0.1 port; every connection to it is relayed to the
broker (both ways, byte for byte) and the client's bytes are kept. ``packets()`` splits them into
MQTT control packets, ``props(kind)`` decodes the MQTT 5 properties of the first packet of a kind
(paho's own decoder), so a test sees exactly what the module put on the wire while the real
broker answers. ``mute = True`` drops the broker's bytes (acknowledgements never arrive, the
connection stays up); ``close()`` cuts every relayed connection.
"""
from __future__ import annotations

import socket
import threading
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["MqttTap"]

#: MQTT control packet type (high nibble) -> name
TYPES = {1: "CONNECT", 3: "PUBLISH", 8: "SUBSCRIBE", 10: "UNSUBSCRIBE", 14: "DISCONNECT"}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7


class MqttTap:
    def __init__(self, broker_port: int, host: str = "127.0.0.1") -> None:
        self.broker = (host, broker_port)
        self._lst = socket.create_server((host, 0))
        self.port = self._lst.getsockname()[1]
        self.sent = bytearray()                  # everything clients sent, in order
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        self.mute = False                        # True: drop what the broker sends (the link stays up)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._lst.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.broker)
            self._socks += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record:
                    with self._lock:
                        self.sent += data
                elif self.mute:
                    continue                     # the broker's answers are dropped (PUBACK never comes)
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def packets(self) -> list[tuple[str, bytes]]:
        """(type name, variable header + payload) of every complete packet clients sent."""
        with self._lock:
            buf = bytes(self.sent)
        out, i = [], 0
        while i + 2 <= len(buf):
            try:
                length, j = _varint(buf, i + 1)
            except IndexError:
                break
            if j + length > len(buf):
                break
            out.append((TYPES.get(buf[i] >> 4, str(buf[i] >> 4)), buf[j:j + length]))
            i = j + length
        return out

    def wait(self, kind: str, n: int = 1, timeout: float = 5.0) -> list[bytes]:
        """The bodies of the first ``n`` packets of ``kind``, once they have passed."""
        deadline = time.monotonic() + timeout
        while True:
            bodies = [b for k, b in self.packets() if k == kind]
            if len(bodies) >= n:
                return bodies[:n]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {n} {kind} packet(s) passed the tap (saw {[k for k, _ in self.packets()]})")
            time.sleep(0.02)

    @staticmethod
    def props(kind: str, body: bytes) -> Properties:
        """The MQTT 5 properties of a CONNECT, SUBSCRIBE, UNSUBSCRIBE or DISCONNECT body."""
        offset = {"CONNECT": 10, "SUBSCRIBE": 2, "UNSUBSCRIBE": 2, "DISCONNECT": 1}[kind]
        if kind == "CONNECT":
            offset = 2 + int.from_bytes(body[:2], "big") + 4       # protocol name, level, flags, keep alive
        props = Properties(getattr(PacketTypes, kind))
        if len(body) > offset:
            props.unpack(body[offset:])
        return props

    @staticmethod
    def will_props(body: bytes) -> Properties:
        """The will properties of a CONNECT body (after the client identifier)."""
        i = 2 + int.from_bytes(body[:2], "big") + 4
        n, i = _varint(body, i)
        i += n
        i += 2 + int.from_bytes(body[i:i + 2], "big")              # client identifier
        props = Properties(PacketTypes.WILLMESSAGE)
        props.unpack(body[i:])
        return props

    def close(self) -> None:
        self._closed = True
        self._lst.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "MqttTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
