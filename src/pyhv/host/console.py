"""A daemon-run VM's serial console: served on a UNIX socket, attached to like
``virsh console``.

:class:`SocketConsole` is the VM process's side: a :class:`~pyhv.vm.console.Console`
whose output goes to every client connected to ``vms/NAME/run/console.sock`` (and to
``console.log`` beside it, capped) and whose input is what the clients type. Its
``input_fd()`` is an epoll descriptor that becomes readable on a new client, client
input or any other descriptor registered with :meth:`SocketConsole.watch` (the VM
process's control channel), so the run loop's idle wait ends on all of them at once.
A slow client never blocks the guest: output it cannot take is dropped for it.

:func:`attach` is the client's side (``pyhv console NAME``): the terminal in raw mode,
keys to the guest, ``Ctrl-]`` to detach.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..vm.console import Console
from .ipc import unix_address

if TYPE_CHECKING:
    from ..devices.uart16550 import Uart16550

LOG_LIMIT = 1 << 20  # console.log is cut back to its last half beyond this size
INPUT_LIMIT = 1 << 16  # typed bytes held for the guest before clients are read no more
DETACH = 0x1D  # Ctrl-]
SERVICE_EVERY = 0.001  # seconds between looks at the sockets while the guest runs


class SocketConsole(Console):
    """The serial console of a VM process, on a UNIX socket (module docstring)."""

    def __init__(self, path: str | os.PathLike[str], log: str | os.PathLike[str] | None = None):
        self.path = Path(path)
        self.uart: Uart16550 | None = None  # set once the machine exists: input is paced by it
        self.bytes_out = 0
        self.bytes_in = 0
        self._pending = bytearray()
        self._input = bytearray()
        self._clients: dict[int, socket.socket] = {}
        self._watched: dict[int, Callable[[], None]] = {}
        self._epoll = select.epoll()
        self._next_service = 0.0
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(self.path) as address:
                self._listener.bind(address)
            os.chmod(self.path, 0o600)
            self._listener.listen(8)
            self._listener.setblocking(False)
            self._epoll.register(self._listener.fileno(), select.EPOLLIN)
        except BaseException:
            self._listener.close()
            self._epoll.close()
            raise
        self._log = open(log, "ab", buffering=0) if log is not None else None  # noqa: SIM115

    # ----------------------------------------------------------------- Console

    def write(self, data: bytes) -> None:
        self._pending += data

    def flush(self) -> None:
        if not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        self.bytes_out += len(data)
        if self._log is not None:
            self._write_log(data)
        for fd, client in list(self._clients.items()):
            try:
                client.send(data)  # non-blocking: a client too slow to read loses output
            except BlockingIOError:
                pass
            except OSError:
                self._drop(fd)

    def input_fd(self) -> int | None:
        return self._epoll.fileno()

    def read_input(self) -> bytes:
        # The run loop asks after every round of hart slices: look at the sockets at most
        # every SERVICE_EVERY seconds (after an idle wait, at once), not once per round.
        if not self._input:
            now = time.monotonic()
            if now < self._next_service:
                return b""
            self._next_service = now + SERVICE_EVERY
            self.service()
            if not self._input:
                return b""
        room = self.uart.rx_space() if self.uart is not None else len(self._input)
        data = bytes(self._input[:room])
        del self._input[:room]
        return data

    def has_input(self) -> bool:
        return bool(self._input)

    def close(self) -> None:
        self.flush()
        for fd in list(self._clients):
            self._drop(fd)
        with contextlib.suppress(OSError):
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._epoll.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    # ----------------------------------------------------------------- the sockets

    def watch(self, fd: int, on_ready: Callable[[], None]) -> None:
        """Call ``on_ready()`` from :meth:`service` whenever ``fd`` is readable."""
        self._watched[fd] = on_ready
        self._epoll.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        if self._watched.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def service(self) -> None:
        """Handle whatever is ready: new clients, client input, watched descriptors.
        Never blocks."""
        for fd, _events in self._epoll.poll(0):
            if fd == self._listener.fileno():
                self._accept()
            elif fd in self._clients:
                self._receive(fd)
            else:
                handler = self._watched.get(fd)
                if handler is not None:
                    handler()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            client.setblocking(False)
            self._clients[client.fileno()] = client
            self._epoll.register(client.fileno(), select.EPOLLIN)

    def _receive(self, fd: int) -> None:
        client = self._clients[fd]
        try:
            data = client.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        self.bytes_in += len(data)
        self._input += data
        if len(self._input) > INPUT_LIMIT:
            del self._input[: len(self._input) - INPUT_LIMIT]  # the guest does not read

    def _drop(self, fd: int) -> None:
        client = self._clients.pop(fd, None)
        if client is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
            client.close()

    def _write_log(self, data: bytes) -> None:
        assert self._log is not None
        try:
            self._log.write(data)
            if self._log.tell() > LOG_LIMIT:
                self._log.close()
                path = Path(self._log.name)  # type: ignore[arg-type]
                tail = path.read_bytes()[-LOG_LIMIT // 2 :]
                path.write_bytes(tail)
                self._log = open(path, "ab", buffering=0)  # noqa: SIM115
        except OSError:
            pass  # a full disk must not stop the guest


# ------------------------------------------------------------------------ the client side


def connect(path: str | os.PathLike[str], timeout: float | None = 5.0) -> socket.socket:
    """A connection to a console socket (OSError when the VM does not serve one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with unix_address(path) as address:
            sock.connect(address)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def attach(sock: socket.socket, name: str, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Copy between the terminal and the console until the VM stops (returns 0) or the
    user types ``Ctrl-]`` (returns 0). Stdin that is not a terminal is passed on as it
    is; at its end, what the guest prints until it is quiet for half a second is shown,
    then the console detaches."""
    is_tty = os.isatty(stdin_fd)
    saved = None
    if is_tty:
        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd, termios.TCSANOW)  # keys typed ahead are kept, not flushed
        # Only now: whoever sees this may type, and every key reaches the guest.
        sys.stderr.write(f"Connected to VM '{name}' (escape character is ^])\r\n")
        sys.stderr.flush()
    fd = sock.fileno()
    try:
        while True:
            ready, _, _ = select.select([fd, stdin_fd], [], [])
            if fd in ready:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    if is_tty:
                        sys.stderr.write("\r\nThe VM's console closed (the VM stopped).\r\n")
                    return 0
                _write_all(stdout_fd, data)
            if stdin_fd in ready:
                data = os.read(stdin_fd, 4096)
                if not data:
                    # End of piped input: show what the guest still answers, then detach.
                    _drain(sock, stdout_fd, quiet=0.5)
                    return 0
                if is_tty and DETACH in data:
                    data = data[: data.index(DETACH)]
                    if data:
                        sock.sendall(data)
                    sys.stderr.write("\r\n")
                    return 0
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)


def _drain(sock: socket.socket, stdout_fd: int, quiet: float) -> None:
    while select.select([sock], [], [], quiet)[0]:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        _write_all(stdout_fd, data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                select.select([], [fd], [])
                continue
            raise
        view = view[n:]
