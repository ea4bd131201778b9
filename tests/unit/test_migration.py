"""Live migration (vm/migration.py) between two machines of this process over a socket
pair: a guest printing a counter every 10 ms loses and repeats no value across the
move, converges even while it rewrites 16 MiB as fast as it can, and runs on at the
source when the destination refuses or dies."""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from pyhv.vm.config import MachineConfig
from pyhv.vm.machine import Machine
from pyhv.vm.migration import MigrationError, migrate, receive

ROOT = Path(__file__).resolve().parents[2]
COUNTER = ROOT / "guests" / "tests" / "counter.elf"


def source(count: int, dirty: bool = False, engine: str = "auto") -> Machine:
    cfg = MachineConfig(kernel=str(COUNTER), bios="none", engine=engine, no_reboot=True,
                        append=f"count={count} dirty={int(dirty)}")
    m = Machine(cfg)
    assert m.run_until("COUNT 20\n", timeout=60), m.console.text
    return m


def counts(*outputs: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"COUNT (\d+)\n", b"".join(outputs))]


def destination(sock: socket.socket, box: dict, **kw) -> threading.Thread:
    def run() -> None:
        try:
            box["vm"] = receive(sock, **kw)
        except MigrationError as e:
            box["error"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    return t


@pytest.mark.parametrize("dirty,engine", [(False, "auto"), (True, "auto"),
                                          (False, "interp")])
def test_a_counter_loses_and_repeats_nothing(dirty, engine):
    a, b = socket.socketpair()
    src = source(150, dirty, engine)
    box: dict = {}
    t = destination(b, box, engine=engine)
    try:
        result = migrate(src, a, max_rounds=10)
        t.join(60)
        assert result.ok, result
        assert result.rounds <= 10 and result.last_round_pages <= 4096 + 512, result
        before = bytes(src.console.output)
    finally:
        src.close()
        a.close()
        b.close()
    dst = box["vm"]
    try:
        r = dst.run(timeout=120)
        assert (r.reason, r.exit_code) == ("poweroff", 0)
        assert counts(before, bytes(dst.console.output)) == list(range(150))
    finally:
        dst.close()


def test_a_refusing_destination_leaves_the_source_running():
    a, b = socket.socketpair()
    src = source(60)
    box: dict = {}
    t = destination(b, box, token="secret")
    try:
        result = migrate(src, a, token="wrong")
        t.join(60)
        assert not result.ok and "wrong token" in result.reason, result
        assert "wrong token" in box["error"]
        r = src.run(timeout=60)
        assert (r.reason, r.exit_code) == ("poweroff", 0)
        assert counts(bytes(src.console.output)) == list(range(60))
    finally:
        src.close()
        a.close()
        b.close()


def test_a_destination_that_dies_mid_way_leaves_the_source_running():
    a, b = socket.socketpair()
    src = source(60, dirty=True)

    def die() -> None:
        b.recv(1 << 20)  # the hello and a first page or so, then gone
        b.close()

    t = threading.Thread(target=die)
    t.start()
    try:
        result = migrate(src, a)
        t.join(60)
        assert not result.ok and result.reason.startswith("failed"), result
        r = src.run(timeout=60)
        assert (r.reason, r.exit_code) == ("poweroff", 0)
        assert counts(bytes(src.console.output)) == list(range(60))
    finally:
        src.close()
        a.close()
