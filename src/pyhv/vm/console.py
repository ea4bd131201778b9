"""Serial console back-ends: the terminal (like QEMU's -nographic) or a memory buffer.

The terminal console puts a TTY in raw mode so every key reaches the guest, and reads
the QEMU escape sequences: Ctrl-A x quits, Ctrl-A Ctrl-A sends a literal Ctrl-A
(and pyhv's Ctrl-A s saves a snapshot, with ``pyhv run --snapshot FILE``). When
stdin is not a TTY (a pipe or a file), input is passed through unchanged.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from abc import ABC, abstractmethod
from typing import BinaryIO

CTRL_A = 0x01


class Console(ABC):
    """Where guest serial output goes and where guest input comes from."""

    quit_requested = False
    snapshot_requested = False  # Ctrl-A s (pyhv run --snapshot FILE)

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Guest output (bytes from the UART or virtio-console)."""

    def read_input(self) -> bytes:
        """Input available now, without blocking (b"" when none)."""
        return b""

    def input_fd(self) -> int | None:
        """A file descriptor to wait on for input while the guest idles, if any."""
        return None

    def flush(self) -> None:  # noqa: B027 - unbuffered consoles need nothing
        """Push buffered output out."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Restore the terminal and release resources."""


class BufferConsole(Console):
    """Collects output in memory; input is queued by ``send`` (tests, the Python API)."""

    def __init__(self, echo: BinaryIO | None = None) -> None:
        self.output = bytearray()
        self._input = bytearray()
        self._echo = echo

    def write(self, data: bytes) -> None:
        self.output += data
        if self._echo is not None:
            self._echo.write(data)

    def send(self, data: bytes | str) -> None:
        self._input += data.encode() if isinstance(data, str) else data

    def read_input(self) -> bytes:
        data = bytes(self._input)
        self._input.clear()
        return data

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")


class StdioConsole(Console):
    """The host terminal: stdout for output, stdin (raw mode if a TTY) for input."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer
        self._pending = bytearray()
        try:
            self._in_fd: int | None = sys.stdin.fileno()
        except (OSError, ValueError, AttributeError):
            self._in_fd = None
        self._saved_tty = None
        self._escape = False
        self._tty_fd = self._in_fd
        if self._in_fd is not None and os.isatty(self._in_fd):
            self._saved_tty = termios.tcgetattr(self._in_fd)
            tty.setraw(self._in_fd, termios.TCSANOW)  # keep keys typed ahead (as QEMU)

    def write(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) > 4096:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            try:
                self._out.write(self._pending)
                self._out.flush()
            except BrokenPipeError:
                pass
            self._pending.clear()

    def input_fd(self) -> int | None:
        return self._in_fd

    def read_input(self) -> bytes:
        fd = self._in_fd
        if fd is None:
            return b""
        try:
            ready, _, _ = select.select([fd], [], [], 0)
        except (OSError, ValueError):
            self._in_fd = None
            return b""
        if not ready:
            return b""
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:  # EOF: stop watching stdin, keep running the guest
            self._in_fd = None
            return b""
        if self._saved_tty is None:
            return data
        return self._filter_escapes(data)

    def _filter_escapes(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self._escape:
                self._escape = False
                if b in (ord("x"), ord("X")):
                    self.quit_requested = True
                elif b in (ord("s"), ord("S")):
                    self.snapshot_requested = True
                elif b == CTRL_A:
                    out.append(CTRL_A)
                # other escapes (c, h, ...) are not implemented: ignored
            elif b == CTRL_A:
                self._escape = True
            else:
                out.append(b)
        return bytes(out)

    def close(self) -> None:
        self.flush()
        if self._saved_tty is not None and self._tty_fd is not None:
            termios.tcsetattr(self._tty_fd, termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None
