"""An idle machine sleeps until its next timer deadline or until input arrives.

Every hart in WFI must cost the host nothing: the run loop waits in one ``select`` on
the console's fd (and device fds) with the next timer deadline as its timeout, instead
of waking every ``MAX_IDLE_SLEEP`` seconds to look. Input must still wake the guest at
once and timers must still fire on time. Input the loop cannot wait on (a console with
no fd, or a full UART receive queue whose fd stays readable) is polled instead.
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
from pathlib import Path

import pytest

import pyhv.vm.machine as machine_mod
from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.vm.console import Console

# M-mode, no firmware. Routes UART RX (PLIC source 10) to context 0 with IER.ERBFI and
# mie.MEIE (mstatus.MIE off: WFI just wakes), then: wfi; echo a received byte; claim and
# complete at the PLIC; repeat.
ECHO = [
    0x0C0002B7, 0x00100313, 0x0262A423,  # lui t0,0xc000; li t1,1; sw t1,40(t0)  priority
    0x0C0022B7, 0x40000313, 0x0062A023,  # lui t0,0xc002; li t1,0x400; sw t1,0(t0) enable
    0x0C2002B7, 0x0002A023,              # lui t0,0xc200; sw zero,0(t0)           threshold
    0x100002B7, 0x00100313, 0x006280A3,  # lui t0,0x10000; li t1,1; sb t1,1(t0)   IER
    0x00001337, 0x8003031B, 0x30432073,  # li t1,0x800; csrs mie,t1               MEIE
    0x10500073,                          # loop: wfi
    0x0052C303, 0x00137313, 0x00030663,  # lbu t1,5(t0); andi t1,t1,1; beqz t1,claim
    0x0002C383, 0x00728023,              # lbu t2,0(t0); sb t2,0(t0)              echo
    0x0C200E37, 0x004E0E1B,              # claim: li t3,0x0c200004
    0x000E2E83, 0x01DE2023,              # lw t4,0(t3); sw t4,0(t3)
    0xFD9FF06F,                          # j loop
]

# Arms mtimecmp = mtime + 2,000,000 ticks (0.2 s at 10 MHz), enables MTIE, waits in WFI
# until MTIP, prints "T" and powers off (0x5555 to the test device).
TIMER = [
    0x0200C2B7, 0xFF82829B, 0x0002B303,  # li t0,0x0200bff8; ld t1,0(t0)          mtime
    0x001E83B7, 0x4803839B, 0x00730333,  # li t2,2000000; add t1,t1,t2
    0x020042B7, 0x0062B023,              # li t0,0x02004000; sd t1,0(t0)         mtimecmp
    0x08000313, 0x30432073,              # li t1,0x80; csrs mie,t1               MTIE
    0x10500073, 0x34402373,              # 1: wfi; csrr t1,mip
    0x08037313, 0xFE030AE3,              # andi t1,t1,0x80; beqz t1,1b
    0x100002B7, 0x05400313, 0x00628023,  # li t0,0x10000000; li t1,'T'; sb t1,0(t0)
    0x001002B7, 0x00005337, 0x5553031B,  # li t0,0x100000; li t1,0x5555
    0x0062A023, 0x0000006F,              # sw t1,0(t0); j .
]

TIMER_DELAY = 0.2


class PipeConsole(Console):
    """A console whose input comes through a pipe, as a terminal's would."""

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe()
        self.output = bytearray()

    def write(self, data: bytes) -> None:
        self.output += data

    def input_fd(self) -> int | None:
        return self.rfd

    def read_input(self) -> bytes:
        ready, _, _ = select.select([self.rfd], [], [], 0)
        return os.read(self.rfd, 4096) if ready else b""

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


def image(tmp_path: Path, words: list[int]) -> str:
    path = tmp_path / "prog.bin"
    path.write_bytes(struct.pack(f"<{len(words)}I", *words))
    return str(path)


class _Patched:
    """A module with some attributes replaced."""

    def __init__(self, module: object, **replaced: object) -> None:
        self._module = module
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> object:
        return getattr(self._module, name)


@pytest.fixture
def idle_calls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The timeout of each idle sleep of the run loop, select() or time.sleep()."""
    calls: list[float] = []
    real_select, real_sleep = select.select, time.sleep

    def counted_select(r, w, x, timeout=None):  # type: ignore[no-untyped-def]
        calls.append(timeout)
        return real_select(r, w, x, timeout)

    def counted_sleep(seconds: float) -> None:
        calls.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(machine_mod, "select", _Patched(select, select=counted_select))
    monkeypatch.setattr(machine_mod, "time", _Patched(time, sleep=counted_sleep))
    return calls


def test_idle_guest_sleeps_until_input_and_input_wakes_it_at_once(
        tmp_path: Path, idle_calls: list[float]) -> None:
    console = PipeConsole()
    vm = Machine(MachineConfig(bios="none", kernel=image(tmp_path, ECHO)), console=console)
    sent: list[float] = []

    def type_key() -> None:
        time.sleep(0.4)
        sent.append(time.monotonic())
        os.write(console.wfd, b"x")

    typist = threading.Thread(target=type_key)
    try:
        typist.start()
        result = vm.run(timeout=10, stop_when=lambda: b"x" in console.output)
        woke = time.monotonic()
    finally:
        typist.join()
        vm.close()
        console.close()
    assert result.reason == "stopped" and bytes(console.output) == b"x"
    assert woke - sent[0] < 0.25  # the key woke the sleeping loop at once (slack: busy CI)
    # No timer is armed: one sleep until the key (bounded only by the run's timeout),
    # not one every MAX_IDLE_SLEEP (8 of them in 0.4 s).
    assert 1 <= len(idle_calls) <= 2, idle_calls
    assert idle_calls[0] > 5


def test_timer_fires_on_time_from_a_single_sleep(
        tmp_path: Path, idle_calls: list[float]) -> None:
    console = PipeConsole()
    vm = Machine(MachineConfig(bios="none", kernel=image(tmp_path, TIMER)), console=console)
    try:
        start = time.monotonic()
        result = vm.run(timeout=10)
        took = time.monotonic() - start
    finally:
        vm.close()
        console.close()
    assert (result.reason, bytes(console.output)) == ("poweroff", b"T")
    assert TIMER_DELAY <= took < TIMER_DELAY + 0.25
    # The sleep ends at the mtimecmp deadline (a few more only if select woke early).
    assert 1 <= len(idle_calls) <= 3, idle_calls
    assert TIMER_DELAY - 0.05 < idle_calls[0] <= TIMER_DELAY


def test_console_without_fd_is_still_polled(tmp_path: Path, idle_calls: list[float]) -> None:
    """BufferConsole input comes from send(), maybe from another thread: keep looking."""
    console = BufferConsole()
    vm = Machine(MachineConfig(bios="none", kernel=image(tmp_path, ECHO)), console=console)
    timer = threading.Timer(0.2, console.send, (b"y",))
    try:
        timer.start()
        result = vm.run(timeout=10, stop_when=lambda: b"y" in console.output)
    finally:
        timer.join()
        vm.close()
    assert result.reason == "stopped" and console.text == "y"
    assert all(t <= machine_mod.MAX_IDLE_SLEEP for t in idle_calls)


def test_full_receive_queue_does_not_busy_loop(tmp_path: Path, idle_calls: list[float]) -> None:
    """Input the UART cannot take leaves the fd readable: poll it, do not spin on it."""
    console = PipeConsole()
    # The guest parks in WFI with no interrupt enabled and never reads its UART.
    park = image(tmp_path, [0x10500073, 0xFFDFF06F])  # wfi; j -4
    vm = Machine(MachineConfig(bios="none", kernel=park), console=console)
    vm.board.uart.receive(b"z" * vm.board.uart.rx_space())  # the receive queue is full
    os.write(console.wfd, b"more")
    try:
        result = vm.run(timeout=0.5)
    finally:
        vm.close()
        console.close()
    assert result.reason == "timeout"
    assert 5 <= len(idle_calls) <= 15, len(idle_calls)  # ~0.5 s / MAX_IDLE_SLEEP
