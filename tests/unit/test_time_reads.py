"""Reads of the time CSR (clock.next_time_read): a tick past the last read while close
to mtime, never back, on one hart or across harts; a guest write of mtime is followed."""

from __future__ import annotations

from pathlib import Path

from pyhv import Machine, MachineConfig
from pyhv.clock import TIME_READ_SLACK, next_time_read
from pyhv.devices.clint import MTIME

IDLE = Path(__file__).resolve().parents[2] / "guests" / "tests" / "idle.elf"


def test_reads_move_on_within_the_slack_and_never_go_back() -> None:
    last, seen = 0, []
    for _ in range(TIME_READ_SLACK + 5):
        last = next_time_read(last, 1000)
        seen.append(last)
    assert seen[0] == 1000 and seen[1] == 1001  # distinct while close to mtime
    assert seen[-1] == seen[-2] == 1000 + TIME_READ_SLACK  # then no further ahead
    assert next_time_read(last, 5000) == 5000  # mtime passed it: mtime
    assert next_time_read(5000, 4000) == 5000  # never back


def test_the_board_shares_the_last_read_between_harts_and_follows_mtime_writes() -> None:
    vm = Machine(MachineConfig(kernel=str(IDLE), bios="none", engine="interp", smp=2))
    try:
        board = vm.board
        h0, h1 = board.harts
        board.clint.write(MTIME, 8, 1_000_000)
        a, b, c = h0.read_mtime(), h1.read_mtime(), h0.read_mtime()
        assert 1_000_000 <= a < b < c  # one sequence for both harts
        board.clint.write(MTIME, 8, 5)  # the guest sets mtime back
        assert h1.read_mtime() < a  # reads follow it
    finally:
        vm.close()
