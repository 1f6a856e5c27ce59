"""Virtual UARTs: the host side of an emulated module.

Each transport delivers received bytes to :meth:`Module.feed` and offers ``write``/``drain``
to the module's pacer. All are asyncio-native and never block the loop.

- :class:`PtyTransport`: a pseudo-terminal published as a symlink (socat's ``link=``). The
  emulator keeps the slave side open itself, so a host may close and reopen the port any number
  of times without the module noticing (like a UART), and so the host's termios speed can be read.
- :class:`TcpTransport`: raw serial-over-TCP (``socat TCP:...``, pyserial ``socket://``).
- :class:`Rfc2217Transport`: an RFC 2217 server (pyserial ``rfc2217://``) that honours baud
  rate requests by reporting them to the module.
- :class:`ChildTransport`: the module's UART is the terminal of a spawned program.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import termios
import tty
from pathlib import Path
from typing import Any

from .module import Module

log = logging.getLogger("atemu")

_SPEEDS = {getattr(termios, n): int(n[1:]) for n in dir(termios) if n.startswith("B") and n[1:].isdigit()}
_BCONST = {v: k for k, v in _SPEEDS.items()}


class TransportError(Exception):
    """A transport could not be set up; the message says what to do."""


class _FdWriter:
    """Non-blocking writes to a file descriptor with a drain() that waits for the kernel."""

    STALL = 2.0  # seconds a full tty may block us before unread output is discarded

    def __init__(self, fd: int, on_stall: Any = None):
        self.fd = fd
        self.buf = bytearray()
        self._drained = asyncio.Event()
        self._drained.set()
        self._writing = False
        self.on_stall = on_stall
        self.closed = False

    @property
    def backlog(self) -> int:
        """Bytes accepted but not yet taken by the kernel."""
        return len(self.buf)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.buf += data
        self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self.buf:
            try:
                n = os.write(self.fd, self.buf)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno in (errno.EIO, errno.EBADF, errno.EPIPE):
                    self.buf.clear()  # nobody on the other side: output is lost like on a UART
                    break
                raise
            del self.buf[:n]
        if self.buf:
            self._drained.clear()
            if not self._writing:
                self._writing = True
                loop.add_writer(self.fd, self._on_writable)
        else:
            self._drained.set()
            if self._writing:
                self._writing = False
                loop.remove_writer(self.fd)

    def _on_writable(self) -> None:
        self._flush()

    async def drain(self) -> None:
        if self._drained.is_set():
            return
        try:
            await asyncio.wait_for(self._drained.wait(), self.STALL)
        except asyncio.TimeoutError:
            if self.on_stall:
                self.on_stall()
            self._flush()
            if self.buf:
                log.warning("host is not reading the UART; %d bytes of output discarded", len(self.buf))
                self.buf.clear()
                self._drained.set()

    def close(self) -> None:
        self.closed = True
        if self._writing:
            try:
                asyncio.get_running_loop().remove_writer(self.fd)
            except Exception:
                pass
        self._drained.set()


class PtyTransport:
    """A raw pseudo-terminal, optionally published at ``link`` as a symlink."""

    def __init__(self, module: Module, link: str | Path | None = None):
        self.module = module
        self.link = Path(link) if link else None
        self.master = self.slave = -1
        self.slave_name = ""
        self._writer: _FdWriter | None = None
        self._last_speed: int | None = None

    @property
    def port(self) -> str:
        return str(self.link) if self.link else self.slave_name

    async def start(self) -> None:
        if self.link is not None:
            if self.link.is_dir() and not self.link.is_symlink():
                raise TransportError(f"--pty {self.link} is a folder; give the path of the link to create, "
                                     f"e.g. {self.link / 'ttyAT'}")
            if self.link.exists() and not self.link.is_symlink():
                raise TransportError(f"--pty {self.link}: a file that is not a symlink is already there; "
                                     "choose another path or remove it")
            if not self.link.parent.is_dir():
                raise TransportError(f"--pty {self.link}: folder {self.link.parent} does not exist")
            if self.link.is_symlink():
                # a pty slave exists only while its master is open: a link to a live one is taken
                target = os.readlink(self.link)
                if target.startswith("/dev/pts/") and os.path.exists(target):
                    raise TransportError(f"--pty {self.link} already links to {target}, which is open "
                                         "(another atemu running?); stop it, choose another path, "
                                         "or remove the link if it is stale")
        self.master, self.slave = os.openpty()
        self.slave_name = os.ttyname(self.slave)
        tty.setraw(self.slave)
        attrs = termios.tcgetattr(self.slave)
        speed = _BCONST.get(self.module.baud)
        if speed is not None:
            attrs[4] = attrs[5] = speed
        attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        self._last_speed = self._speed()
        os.set_blocking(self.master, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(self.master, self._on_read)
        self._writer = _FdWriter(self.master, on_stall=self._on_stall)
        self.module.attach(self._writer)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".atemu-tmp")
            try:
                if tmp.is_symlink():
                    tmp.unlink()
                os.symlink(self.slave_name, tmp)
                os.replace(tmp, self.link)
            except OSError as e:
                raise TransportError(f"--pty {self.link}: cannot create the link ({e.strerror})") from None

    def _speed(self) -> int | None:
        try:
            return _SPEEDS.get(termios.tcgetattr(self.slave)[5])
        except termios.error:
            return None

    def _on_read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.EIO:
                return
            raise
        sp = self._speed()
        if sp != self._last_speed:
            self._last_speed = sp
            self.module.host_baud_changed(sp)
        elif self.module.host_baud is None and sp is not None and sp != self.module.baud:
            self.module.host_baud_changed(sp)
        self.module.feed(data)

    def _on_stall(self) -> None:
        # the host holds the port closed or does not read: a UART would overrun; drop what waits
        try:
            termios.tcflush(self.slave, termios.TCIFLUSH)
        except termios.error:
            pass

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.master >= 0:
            loop.remove_reader(self.master)
            if self._writer:
                self._writer.close()
            self.module.attach(None)
            os.close(self.master)
            os.close(self.slave)
            self.master = self.slave = -1
        if self.link is not None and self.link.is_symlink():
            try:
                if os.readlink(self.link) == self.slave_name:
                    self.link.unlink()
            except OSError:
                pass


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT``."""
    t = text.strip()
    if t.startswith("["):
        host, _, port = t[1:].partition("]:")
    elif ":" in t:
        host, _, port = t.rpartition(":")
    else:
        host, port = default_host, t
    try:
        p = int(port)
        if not 0 <= p <= 65535:
            raise ValueError
    except ValueError:
        raise TransportError(f"{text!r} is not [HOST:]PORT") from None
    return host or default_host, p


class _StreamSink:
    def __init__(self, writer: asyncio.StreamWriter, escape: Any = None):
        self.writer = writer
        self.escape = escape

    @property
    def backlog(self) -> int:
        t = self.writer.transport
        return t.get_write_buffer_size() if t is not None and not t.is_closing() else 0

    def write(self, data: bytes) -> None:
        if self.escape is not None:
            data = b"".join(self.escape(data))
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        if not self.writer.is_closing():
            await self.writer.drain()


class TcpTransport:
    """Raw serial over TCP: one host at a time; a new connection takes over from the old one."""

    rfc2217 = False

    def __init__(self, module: Module, host: str, port: int):
        self.module = module
        self.host, self.requested_port = host, port
        self.server: asyncio.base_events.Server | None = None
        self._client: asyncio.StreamWriter | None = None
        self.port_number = port

    @property
    def port(self) -> str:
        scheme = "rfc2217" if self.rfc2217 else "socket"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port_number}"

    async def start(self) -> None:
        try:
            self.server = await asyncio.start_server(self._on_client, self.host, self.requested_port)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise TransportError(f"port {self.host}:{self.requested_port} is already in use; "
                                     "pick another port or stop the program using it") from None
            raise TransportError(f"cannot listen on {self.host}:{self.requested_port}: {e.strerror}") from None
        self.port_number = self.server.sockets[0].getsockname()[1]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._client is not None:
            self._client.close()
        self._client = writer
        filt = self._make_filter(writer)
        self.module.attach(_StreamSink(writer, getattr(filt, "escape", None)))
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if filt is not None:
                    data = b"".join(filt.filter(data))
                self.module.feed(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._client is writer:
                self._client = None
                self.module.attach(None)
            writer.close()

    def _make_filter(self, writer: asyncio.StreamWriter) -> Any:
        return None

    async def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        self.module.attach(None)


class _SerialShim:
    """The settings object pyserial's RFC 2217 PortManager drives: baud changes reach the module."""

    def __init__(self, module: Module):
        self._module = module
        self._baud = module.baud
        self.bytesize, self.parity, self.stopbits = 8, "N", 1
        self.rts = self.dtr = True
        self.rtscts = self.xonxoff = False
        self.break_condition = False
        self.cts = self.dsr = self.cd = True
        self.ri = False

    @property
    def baudrate(self) -> int:
        return self._baud

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        self._baud = int(value)
        self._module.host_baud_changed(int(value))

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        self._module.pacer.discard()


class Rfc2217Transport(TcpTransport):
    """RFC 2217 (Telnet COM-PORT-OPTION) server; the client's baud rate is reported to the module."""

    rfc2217 = True

    def _make_filter(self, writer: asyncio.StreamWriter) -> Any:
        import serial.rfc2217 as rfc

        class _Conn:
            def write(self_inner, data: bytes) -> None:
                if not writer.is_closing():
                    writer.write(data)

        return rfc.PortManager(_SerialShim(self.module), _Conn(), logger=None)


class ChildTransport:
    """Spawn ``argv`` with a pty as its controlling terminal; that terminal is the module's UART."""

    def __init__(self, module: Module, argv: list[str]):
        self.module = module
        self.argv = argv
        self.proc: Any = None
        self._writer: _FdWriter | None = None
        self.exited: asyncio.Future = asyncio.get_running_loop().create_future()

    @property
    def port(self) -> str:
        return f"the terminal of {self.argv[0]} (pid {self.proc.pid})" if self.proc else "child"

    async def start(self) -> None:
        import ptyprocess
        try:
            self.proc = ptyprocess.PtyProcess.spawn(self.argv, echo=False)
        except (OSError, FileNotFoundError) as e:
            raise TransportError(f"--exec: cannot start {self.argv[0]!r}: {e}") from None
        fd = self.proc.fd
        attrs = termios.tcgetattr(fd)
        # raw: no echo, no line editing, no CR/NL translation (the module sees exact bytes)
        attrs[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON | termios.ISTRIP)
        attrs[1] &= ~termios.OPOST
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._on_read)
        self._writer = _FdWriter(fd)
        self.module.attach(self._writer)

    def _on_read(self) -> None:
        try:
            data = os.read(self.proc.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.proc.fd)
            asyncio.get_running_loop().create_task(self._reap())
            return
        self.module.feed(data)

    async def _reap(self) -> None:
        while self.proc.isalive():
            await asyncio.sleep(0.02)
        if not self.exited.done():
            status = self.proc.exitstatus if self.proc.exitstatus is not None else 128 + (self.proc.signalstatus or 0)
            self.exited.set_result(status)

    async def stop(self) -> None:
        if self._writer:
            self._writer.close()
        self.module.attach(None)
        if self.proc is not None and self.proc.isalive():
            self.proc.terminate(force=True)
