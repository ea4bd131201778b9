"""Snapshots (vm/snapshot.py): a machine saved part way and restored, under the same
engine or another, ends as the machine that ran straight through; the file is sparse
and mapped; damaged, truncated, newer, hostile and foreign files are clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pyhv import records
from pyhv.board import memmap
from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.vm import snapshot as S
from pyhv.vm.config import MachineConfig
from pyhv.vm.machine import Machine

ROOT = Path(__file__).resolve().parents[2]
CODEGEN = ROOT / "guests" / "bench" / "programs" / "codegen.elf"  # writes code, fence.i
TOTAL = 25_899_303  # its instructions to power-off

needs_jit = pytest.mark.skipif(jit_unavailable_reason() is not None,
                               reason=str(jit_unavailable_reason()))


def config(engine: str, program: Path = CODEGEN) -> MachineConfig:
    return MachineConfig(kernel=str(program), bios="none", engine=engine, no_reboot=True)


@pytest.fixture(scope="module")
def straight() -> tuple[bytes, int]:
    """codegen.elf run straight through: what it printed, its instructions."""
    m = Machine(config("jit" if jit_unavailable_reason() is None else "translate"))
    try:
        r = m.run(timeout=300)
        assert r.reason == "poweroff"
        return bytes(m.console.output), r.instructions
    finally:
        m.close()


@pytest.mark.parametrize("first,then,cut", [
    pytest.param("jit", "interp", TOTAL - 400_000, marks=needs_jit),
    pytest.param("interp", "jit", 200_000, marks=needs_jit),
    pytest.param("translate", "jit", 300_000, marks=needs_jit),
    pytest.param("jit", "translate", TOTAL - 2_000_000, marks=needs_jit),
])
def test_a_restored_machine_ends_as_one_that_ran_straight_through(tmp_path, straight, first,
                                                                    then, cut):
    out_ref, total = straight
    m = Machine(config(first))
    try:
        r = m.run(max_instructions=cut)
        assert r.reason == "limit"
        info = m.snapshot(str(tmp_path / "vm.snap"))
        before = bytes(m.console.output)
    finally:
        m.close()
    assert info["stored_bytes"] < 1 << 20 and info["ram_bytes"] == 128 << 20
    m2 = Machine.restore(str(tmp_path / "vm.snap"), engine=then)
    try:
        assert m2.instructions == r.instructions
        r2 = m2.run(timeout=300)
        assert (r2.reason, r2.exit_code) == ("poweroff", 0)
        assert before + bytes(m2.console.output) == out_ref
        assert r2.instructions == total
    finally:
        m2.close()


def _snap(tmp_path: Path, instructions: int = 50_000) -> Path:
    m = Machine(config("interp"))
    try:
        m.run(max_instructions=instructions)
        path = tmp_path / "vm.snap"
        m.snapshot(str(path))
        return path
    finally:
        m.close()


def test_the_file_is_sparse_and_restore_maps_it(tmp_path):
    path = _snap(tmp_path)
    st = path.stat()
    assert st.st_size > 128 << 20  # the whole RAM image's length ...
    assert st.st_blocks * 512 < 4 << 20  # ... but only the pages the guest used on disk
    m = Machine.restore(str(path), engine="interp")
    try:
        assert m.board.ram.file_backed
    finally:
        m.close()


def _rewrite_meta(path: Path, change) -> None:
    """Edit a snapshot's metadata and fix its checksum, as an attacker could."""
    raw = bytearray(path.read_bytes())
    _, fmt, flags, meta_at, meta_len, ram_at, ram_size, _ = S.HEADER.unpack_from(raw)
    meta = json.loads(raw[meta_at:meta_at + meta_len])
    change(meta)
    blob = json.dumps(meta).encode()
    assert meta_at + len(blob) <= ram_at
    raw[meta_at:meta_at + len(blob)] = blob
    S.HEADER.pack_into(raw, 0, S.MAGIC, fmt, flags, meta_at, len(blob), ram_at, ram_size,
                       hashlib.sha256(blob).digest())
    path.write_bytes(raw)


def _expect(path: Path, *words: str, verify: bool = True) -> None:
    with pytest.raises(S.SnapshotError) as e:
        Machine.restore(str(path), engine="interp", verify=verify)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_missing_and_foreign_files(tmp_path):
    _expect(tmp_path / "none.snap", "No such file")
    (tmp_path / "text").write_text("hello")
    _expect(tmp_path / "text", "not a pyhv snapshot")


def test_truncated_file(tmp_path):
    path = _snap(tmp_path)
    os.truncate(path, path.stat().st_size - 4096)
    _expect(path, "truncated")


def test_damaged_state_and_damaged_ram(tmp_path):
    path = _snap(tmp_path)
    raw = bytearray(path.read_bytes())
    meta_at = S.HEADER.unpack_from(raw)[3]
    ram_at = S.HEADER.unpack_from(raw)[5]
    raw[meta_at + 20] ^= 0x01
    bad = tmp_path / "bad-meta.snap"
    bad.write_bytes(raw)
    _expect(bad, "damaged", "checksum")
    raw = bytearray(path.read_bytes())
    meta = json.loads(raw[meta_at:meta_at + S.HEADER.unpack_from(raw)[4]])
    page = meta["ram"]["extents"][0][0]
    raw[ram_at + page * 4096 + 100] ^= 0xFF
    path.write_bytes(raw)
    _expect(path, "RAM is damaged")
    Machine.restore(str(path), engine="interp", verify=False).close()  # asked not to check


def test_a_newer_format_is_refused_with_both_versions(tmp_path):
    path = _snap(tmp_path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 8, S.FORMAT_VERSION + 1)
    path.write_bytes(raw)
    _expect(path, f"format version {S.FORMAT_VERSION + 1}", f"reads version {S.FORMAT_VERSION}")


@pytest.mark.parametrize("section,field,value,words", [
    ("hart0", "priv", 2, ["hart 0", "not an architectural state"]),
    ("hart0", "pc", 1 << 64, ["hart0.pc", "out of range"]),
    ("uart", "ier", 300, ["uart.ier", "out of range"]),
    ("uart", "rx", "zz", ["uart.rx", "hex"]),
    ("clint", "mtimecmp", [1, 2], ["clint", "harts"]),
    ("plic", "priority", [9] * 97, ["plic.priority[0]", "out of range"]),
    ("hart0", "x", [1] * 32, ["hart 0"]),
    ("machine", "instructions", -1, ["machine.instructions", "out of range"]),
])
def test_hostile_values_are_errors_naming_the_field(tmp_path, section, field, value, words):
    path = _snap(tmp_path)

    def change(meta):
        meta["sections"][section]["state"][field] = value

    _rewrite_meta(path, change)
    _expect(path, *words)


def test_a_section_of_a_newer_record_version_or_another_machine(tmp_path):
    path = _snap(tmp_path)
    _rewrite_meta(path, lambda m: m["sections"]["uart"].update(version=99))
    _expect(path, "section 'uart' has version 99")
    path = _snap(tmp_path)
    _rewrite_meta(path, lambda m: m["sections"].pop("hart0"))
    _expect(path, "another machine", "hart0")
    path = _snap(tmp_path)
    _rewrite_meta(path, lambda m: m["config"].update(smp=2))
    _expect(path, "another machine", "hart1")


def test_a_failed_write_leaves_the_earlier_file_untouched(tmp_path, monkeypatch):
    path = _snap(tmp_path)
    before = path.read_bytes()
    m = Machine(config("interp"))
    try:
        m.run(max_instructions=80_000)
        real = os.pwrite
        calls = []

        def full_disk(fd, data, at):
            calls.append(at)
            if len(calls) > 2:
                raise OSError(28, "No space left on device")
            return real(fd, data, at)

        monkeypatch.setattr(S.os, "pwrite", full_disk)
        with pytest.raises(S.SnapshotError, match="No space left"):
            m.snapshot(str(path))
    finally:
        m.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vm.snap"]  # no temporary left


def test_records_round_trip_and_reject_unknown_fields():
    from pyhv.devices.uart16550 import UartState

    st = UartState(1, 2, 3, 4, 5, 6, 7, 8, 9, True, b"abc")
    assert records.load(UartState, json.loads(json.dumps(records.dump(st))), "uart") == st
    data = records.dump(st) | {"extra": 1}
    with pytest.raises(records.StateError, match="unknown field 'extra'"):
        records.load(UartState, data, "uart")


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyhv.cli.main", "run", *args],
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_cli_saves_at_the_limit_and_restores(tmp_path):
    path = tmp_path / "echo.snap"
    whole = _cli("--bios", "none", "--kernel", str(CODEGEN))
    first = _cli("--bios", "none", "--kernel", str(CODEGEN),
                 "--max-instructions", "20000000", "--snapshot", str(path))
    assert first.returncode == 0, first.stderr
    assert b"saved to" in first.stderr
    rest = _cli("--restore", str(path))
    assert rest.returncode == 0, rest.stderr
    assert first.stdout + rest.stdout == whole.stdout
    bad = _cli("--restore", str(path), "--memory", "256M")
    assert bad.returncode == 1
    assert b"drop --memory" in bad.stderr and b"Traceback" not in bad.stderr


def test_clones_get_fresh_macs_and_a_generation_and_run_on(tmp_path, straight):
    from pyhv.vm.config import NetSpec

    out_ref, total = straight
    cfg = MachineConfig(kernel=str(CODEGEN), bios="none", engine="interp", no_reboot=True,
                        devices=(NetSpec(f"clones-{tmp_path.name}", "52:54:00:aa:bb:cc"),),
                        vmgenid="auto")
    m = Machine(cfg)
    try:
        m.run(max_instructions=100_000)
        m.snapshot(str(tmp_path / "vm.snap"))
        before = bytes(m.console.output)
        origin = m.board.vmgenid.guid
    finally:
        m.close()
    same = Machine.restore(str(tmp_path / "vm.snap"), engine="interp")
    try:
        assert same.board.virtio_devices[0].mac == bytes.fromhex("525400aabbcc")
        assert same.generation == 0
        assert same.board.vmgenid.guid == origin  # the same machine, going on
        assert not same.board.plic.pending >> memmap.VMGENID.irq & 1  # nothing to tell
    finally:
        same.close()
    macs, guids = set(), set()
    for _ in range(2):
        c = Machine.restore(str(tmp_path / "vm.snap"), clone=True,
                            engine="jit" if jit_unavailable_reason() is None else "translate")
        try:
            macs.add(c.board.virtio_devices[0].mac)
            guids.add(c.board.bus.read(memmap.VMGENID.base, 8).to_bytes(8, "little")
                      + c.board.bus.read(memmap.VMGENID.base + 8, 8).to_bytes(8, "little"))
            assert c.generation == 1
            assert c.board.virtio_slots[-1].config_generation >= 1  # the driver is told
            assert c.board.plic.pending >> memmap.VMGENID.irq & 1  # and the guest
            r = c.run(timeout=300)
            assert r.instructions == total and before + bytes(c.console.output) == out_ref
        finally:
            c.close()
    assert len(macs) == 2 and bytes.fromhex("525400aabbcc") not in macs
    assert len(guids) == 2 and origin not in guids


def test_a_vmgenid_section_is_checked(tmp_path):
    """A machine with the VM generation ID device saves its identifier (section
    ``vmgenid``); a damaged one is an error naming it, and a machine without one
    (older files: its config lacks the key) restores as before."""
    m = Machine(MachineConfig(kernel=str(CODEGEN), bios="none", engine="interp",
                              vmgenid="324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"))
    try:
        m.run(max_instructions=20_000)
        m.snapshot(str(tmp_path / "vm.snap"))
    finally:
        m.close()
    path = tmp_path / "vm.snap"
    snap = S.open_snapshot(path)
    snap.close()
    assert snap.meta["sections"]["vmgenid"] == {
        "version": 1, "state": {"guid": "af6e4e32d1d1f64bbf41b9bb6c91fb87"}}
    _rewrite_meta(path, lambda m: m["sections"]["vmgenid"]["state"].update(guid="00" * 15))
    _expect(path, "vmgenid.guid: 15 bytes")
    _rewrite_meta(path, lambda m: m["sections"].pop("vmgenid"))
    _expect(path, "another machine", "vmgenid")
    old = _snap(tmp_path)
    _rewrite_meta(old, lambda m: m["config"].pop("vmgenid"))
    r = Machine.restore(str(old), engine="interp")
    try:
        assert r.board.vmgenid is None
    finally:
        r.close()


_FORK_CLONES = """
import json, os, sys
from pyhv import BufferConsole, Machine
snap, n = sys.argv[1], int(sys.argv[2])
shared = Machine.restore(snap, clone=True, engine=sys.argv[3])
assert shared.forkable()
shared.prepare_fork()  # what a clone group does before it forks
print(json.dumps({"group": shared.board.virtio_devices[0].mac.hex(),
                  "guid": shared.board.vmgenid.guid.hex()}), flush=True)
kids = []
for _ in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            console = BufferConsole()
            shared.take_over_as_clone(console)
            dev = shared.board.virtio_devices[0]
            res = shared.run(timeout=300)
            os.write(w, json.dumps({
                "mac": dev.mac.hex(), "port": dev.port.path, "gen": shared.generation,
                "instructions": res.instructions, "out": console.output.hex(),
                "told": shared.board.virtio_slots[-1].config_generation,
                "guid": shared.board.vmgenid.guid.hex()}).encode())
            shared.close()
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    kids.append((pid, r))
shared.close()
for pid, r in kids:
    with os.fdopen(r) as fh:
        print(fh.read(), flush=True)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
"""


@needs_jit
def test_clones_forked_from_one_restored_machine_run_apart(tmp_path, straight):
    """A clone group's way (host/worker.py): one process restores the clone, forks, and
    each child takes the machine over; run at once, each gets its own MAC (the driver
    told) and switch port and runs the program to its end as the machine it came from
    would have: nothing the JIT writes as it runs (decoded instructions, code granules,
    written into by the program itself) is shared between them."""
    from pyhv.vm.config import NetSpec

    out_ref, total = straight
    cfg = MachineConfig(kernel=str(CODEGEN), bios="none", engine="jit", no_reboot=True,
                        devices=(NetSpec(f"forks-{tmp_path.name}", "52:54:00:aa:bb:cc"),),
                        vmgenid="auto")
    m = Machine(cfg)
    try:
        m.run(max_instructions=300_000)
        m.snapshot(str(tmp_path / "vm.snap"))
        before = bytes(m.console.output)
        origin = m.board.vmgenid.guid.hex()
    finally:
        m.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, "-c", _FORK_CLONES, str(tmp_path / "vm.snap"), "3",
                           "jit"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    group, kids = lines[0]["group"], lines[1:]
    assert len(kids) == 3
    for kid in kids:
        assert kid["instructions"] == total
        assert before + bytes.fromhex(kid["out"]) == out_ref
        assert kid["gen"] == 1 and kid["told"] >= 1
    macs = {kid["mac"] for kid in kids}
    assert len(macs) == 3 and group not in macs and "525400aabbcc" not in macs
    guids = {kid["guid"] for kid in kids}  # each its own generation ID
    assert len(guids) == 3 and lines[0]["guid"] not in guids and origin not in guids
    assert len({kid["port"] for kid in kids}) == 3


def test_only_machines_without_disks_shares_or_host_network_are_forked(tmp_path):
    from pyhv.vm.config import DiskSpec, RngSpec

    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    with_rng = Machine(MachineConfig(kernel=str(CODEGEN), bios="none", engine="interp",
                                     devices=(RngSpec(),)))
    with_disk = Machine(MachineConfig(kernel=str(CODEGEN), bios="none", engine="interp",
                                      devices=(DiskSpec(str(disk)),)))
    from pyhv.vm.config import NetSpec, UserNetSpec

    with_user_net = Machine(MachineConfig(kernel=str(CODEGEN), bios="none", engine="interp",
                                          devices=(NetSpec(None, user=UserNetSpec()),)))
    try:
        assert with_rng.forkable() and not with_disk.forkable()
        assert not with_user_net.forkable()  # its libslirp instance holds host sockets
    finally:
        with_rng.close()
        with_disk.close()
        with_user_net.close()
