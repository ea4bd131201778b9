"""The serial console on a real terminal: raw mode, typed input, Ctrl-A x quits."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

GUESTS = Path(__file__).resolve().parents[2] / "guests" / "tests"


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf


def test_ctrl_a_x_quits_and_restores_the_terminal(tmp_path: Path) -> None:
    # A guest that never powers off on its own: park every hart in WFI.
    prog = tmp_path / "spin.bin"
    prog.write_bytes(bytes.fromhex("73005010" "6ff0dfff"))  # wfi; j -4
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel", str(prog)],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )
    os.close(slave)
    try:
        time.sleep(1.5)
        assert proc.poll() is None  # still running: the guest sleeps in WFI
        os.write(master, b"\x01x")  # Ctrl-A x
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_typed_input_reaches_the_guest_uart() -> None:
    """Keys typed on the terminal arrive at the guest's UART (guests/tests/echo.c)."""
    echo = GUESTS / "echo.elf"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--bios", "none", "--kernel", str(echo)],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )
    os.close(slave)
    try:
        assert b"ECHO-READY" in read_until(master, b"ECHO-READY", 30)
        os.write(master, b"hi!q")
        out = read_until(master, b"ECHO-DONE", 30)
        assert b"hi!" in out and b"ECHO-DONE" in out
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_ctrl_a_s_saves_a_snapshot_that_restores_to_the_same_session(tmp_path: Path) -> None:
    """Ctrl-A s (with --snapshot FILE) saves the running machine and it runs on; a
    ``pyhv run --restore FILE`` later is the same session: the echo guest keeps echoing
    and ends as the saved one would (guests/tests/echo.c)."""
    echo = GUESTS / "echo.elf"
    snap = tmp_path / "echo.snap"

    def start(*args: str) -> tuple[subprocess.Popen, int]:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "pyhv.cli.main", "run", *args],
                                stdin=slave, stdout=slave, stderr=slave, close_fds=True)
        os.close(slave)
        return proc, master

    proc, master = start("--bios", "none", "--kernel", str(echo), "--snapshot", str(snap))
    try:
        assert b"ECHO-READY" in read_until(master, b"ECHO-READY", 30)
        os.write(master, b"ab")
        assert b"ab" in read_until(master, b"ab", 30)
        os.write(master, b"\x01s")  # Ctrl-A s: save, and run on
        assert b"saved to" in read_until(master, b"saved to", 30)
        os.write(master, b"c")
        assert b"c" in read_until(master, b"c", 30)
        os.write(master, b"\x01x")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    proc, master = start("--restore", str(snap))
    try:
        os.write(master, b"zq")  # the restored guest is past ECHO-READY, echoing
        out = read_until(master, b"ECHO-DONE", 30)
        assert b"z" in out and b"ECHO-DONE" in out and b"ECHO-READY" not in out, out
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
