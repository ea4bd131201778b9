"""The snapshot file: a stopped machine's state and RAM, restored by mapping.

Layout (docs/snapshot.md): a 4 KiB header (magic, format version, where the metadata
and the RAM are, the metadata's SHA-256), the metadata (JSON: pyhv's version, the
machine's config, one section per part with its record's version and its state, the RAM
extents and their CRC-32), then the RAM image at a page-aligned offset. Pages of zeros
are holes in the file (it is sparse: a 2 GiB guest that used 40 MiB takes ~40 MiB on
disk), so a restore maps the image copy-on-write (MAP_PRIVATE) and reads a page only
when the guest touches it: restoring does not grow with RAM size, and clones of one
snapshot share every page none of them wrote.

The metadata's checksum is always checked (it names every value a part restores, each
checked again against its record); the RAM's CRC-32 reads every stored page, so it is
checked when asked (``verify``), the default of ``pyhv run --restore``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from .. import __version__, records
from ..board.config import (
    BalloonSpec,
    ConsoleSpec,
    DeviceSpec,
    DiskSpec,
    MachineConfig,
    NetSpec,
    RngSpec,
    ShareSpec,
    UserNetSpec,
)
from ..cpu.hart import HartState
from ..devices.clint import ClintState
from ..devices.plic import PlicState
from ..devices.rtc_goldfish import RtcState
from ..devices.uart16550 import UartState
from ..devices.virtio.mmio import TransportState
from ..devices.vmgenid import VmGenIdState
from ..errors import PyhvError
from ..memory.ram import GuestRAM
from ..records import MaxLen, StateError

if TYPE_CHECKING:
    from .machine import Machine

MAGIC = b"PYHVSNAP"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sII QQ QQ 32s")  # magic, format, flags, meta at/len, RAM at/len, sha
HEADER_SIZE = 4096
PAGE = 4096
MAX_META = 1 << 30

_SPECS: dict[str, type[DeviceSpec]] = {
    "disk": DiskSpec, "net": NetSpec, "rng": RngSpec, "balloon": BalloonSpec,
    "console": ConsoleSpec, "share": ShareSpec,
}


class SnapshotError(PyhvError):
    """A snapshot file that cannot be written or used."""


# -- the machine's config as data ---------------------------------------------------------

def config_data(config: MachineConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["devices"] = [
        {"kind": next(k for k, t in _SPECS.items() if isinstance(d, t)),
         **dataclasses.asdict(d)} for d in config.devices]
    return data


def config_from_data(data: Any, engine: str | None = None) -> MachineConfig:
    try:
        fields = dict(data)
        devices = []
        for d in fields.pop("devices"):
            d = dict(d)
            kind = d.pop("kind")
            if kind == "net" and d.get("user") is not None:  # a nested spec, as data
                u = dict(d["user"])
                d["user"] = UserNetSpec(tuple(u["hostfwd"]), bool(u["restrict"]),
                                        int(u.get("mtu", UserNetSpec.mtu)))
            devices.append(_SPECS[kind](**d))
        if engine is not None:
            fields["engine"] = engine
        return MachineConfig(**fields, devices=tuple(devices))
    except PyhvError as e:
        raise SnapshotError(f"snapshot's machine config: {e}") from None
    except (TypeError, KeyError, ValueError) as e:
        raise SnapshotError(f"snapshot's machine config is damaged ({e})") from None


# -- taking a snapshot --------------------------------------------------------------------

def machine_sections(machine: Machine) -> dict[str, records.Record]:
    """Every part's state record, by section name."""
    board = machine.board
    out: dict[str, records.Record] = {}
    for hart in board.harts:
        out[f"hart{hart.hartid}"] = hart.save()
    out["clint"] = board.clint.save()
    out["plic"] = board.plic.save()
    out["uart"] = board.uart.save()
    out["rtc"] = board.rtc.save()
    out["rom"] = RomState(bytes(board.rom.data))
    if board.vmgenid is not None:
        out["vmgenid"] = board.vmgenid.save()
    for i, slot in enumerate(board.virtio_slots):
        if slot.device is not None:
            out[f"virtio{i}"] = slot.save()
            out[f"virtio{i}.device"] = slot.device.save()
    out["machine"] = MachineState(machine.instructions, machine.generation)
    return out


def dump_sections(machine: Machine) -> dict[str, Any]:
    """Every part's state as data: {section: {"version", "state"}}."""
    return {name: {"version": type(rec).VERSION, "state": records.dump(rec)}
            for name, rec in machine_sections(machine).items()}


@records.record
class RomState(records.Record):
    """The boot ROM's bytes (the reset vector the board wrote for its images)."""

    data: Annotated[bytes, MaxLen(1 << 16)]


@records.record
class MachineState(records.Record):
    """What the machine loop keeps: the guest instructions run so far, and how many
    clones separate this machine from the one first booted."""

    instructions: records.U64
    generation: records.U32


def copy_sparse(src: str, dst: str) -> None:
    """Copy the file ``src`` to ``dst`` keeping its holes (an overlay is mostly holes),
    through a temporary beside ``dst`` renamed into place."""
    tmp = f"{dst}.{os.getpid()}.tmp"
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            size = os.fstat(fin).st_size
            at = 0
            while at < size:
                try:
                    at = os.lseek(fin, at, os.SEEK_DATA)
                except OSError:  # no data after ``at``
                    break
                end = os.lseek(fin, at, os.SEEK_HOLE)
                while at < end:
                    n = os.copy_file_range(fin, fout, end - at, at, at)
                    if n <= 0:
                        raise OSError(f"copying {src}: no progress")
                    at += n
            os.ftruncate(fout, size)
            os.fsync(fout)
        finally:
            os.close(fout)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fin)


def _overlays(machine: Machine) -> dict[int, str]:
    """Device index -> the overlay file of each disk that writes to one."""
    from ..devices.virtio.block_backend import OverlayDisk

    out = {}
    for i, dev in enumerate(machine.board.virtio_devices):
        disk = getattr(dev, "disk", None)
        if isinstance(disk, OverlayDisk):
            out[i] = disk.path
    return out


def save(machine: Machine, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``machine`` (stopped between runs) to ``path``: its disks are flushed
    first, and each overlay disk's overlay is captured beside it (``PATH.diskN.ovl``),
    so a restore sees the blocks the guest saw; the file is written beside it and
    renamed into place, so a failure (a full disk) leaves any earlier file there
    untouched. Returns figures for the caller."""
    board = machine.board
    for dev in board.virtio_devices:
        disk = getattr(dev, "disk", None)
        if disk is not None:
            disk.flush()
    target = Path(path)
    captured: dict[str, str] = {}
    try:
        for i, ovl in _overlays(machine).items():
            name = f"{target.name}.disk{i}.ovl"
            copy_sparse(ovl, str(target.with_name(name)))
            captured[str(i)] = name
    except OSError as e:
        raise SnapshotError(f"snapshot '{path}': capturing an overlay disk: "
                            f"{e.strerror or e}") from None
    sections = dump_sections(machine)
    ram = board.ram
    zero = bytes(PAGE)
    mv = ram.mv
    extents: list[list[int]] = []
    for page in ram.resident_pages():
        off = page * PAGE
        if mv[off:off + PAGE] == zero:
            continue
        if extents and extents[-1][0] + extents[-1][1] == page:
            extents[-1][1] += 1
        else:
            extents.append([page, 1])
    crc = 0
    for page, count in extents:
        crc = zlib.crc32(mv[page * PAGE:(page + count) * PAGE], crc)
    meta = json.dumps({
        "pyhv": __version__,
        "config": config_data(machine.config),
        "sections": sections,
        "ram": {"base": ram.base, "size": ram.size, "extents": extents, "crc32": crc},
        "overlays": captured,
    }, separators=(",", ":")).encode()
    meta_at = HEADER_SIZE
    ram_at = (meta_at + len(meta) + PAGE - 1) // PAGE * PAGE
    header = HEADER.pack(MAGIC, FORMAT_VERSION, 0, meta_at, len(meta), ram_at, ram.size,
                         hashlib.sha256(meta).digest())
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise SnapshotError(f"snapshot '{path}': {e.strerror}") from None
    try:
        try:
            _pwrite_all(fd, header.ljust(HEADER_SIZE, b"\0"), 0)
            _pwrite_all(fd, meta, meta_at)
            for page, count in extents:
                _pwrite_all(fd, mv[page * PAGE:(page + count) * PAGE], ram_at + page * PAGE)
            os.ftruncate(fd, ram_at + ram.size)  # the zero pages after the last: a hole
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise SnapshotError(f"snapshot '{path}': {e.strerror or e}") from None
    stored = sum(c for _, c in extents) * PAGE
    return {"ram_bytes": ram.size, "stored_bytes": stored, "file_bytes": ram_at + stored}


def _pwrite_all(fd: int, data: Any, at: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


# -- reading one --------------------------------------------------------------------------

@dataclasses.dataclass
class Snapshot:
    """An opened, checked snapshot file: its metadata, and an fd for its RAM."""

    path: str
    meta: dict[str, Any]
    fd: int
    ram_at: int

    def config(self, engine: str | None = None, overlays_in: str | None = None
               ) -> MachineConfig:
        """The saved machine's config; with ``overlays_in`` (a directory), each overlay
        disk's captured overlay is copied there and the disk uses the copy (so the
        snapshot's own stays as it was, for the next restore)."""
        config = config_from_data(self.meta["config"], engine)
        captured = self.meta.get("overlays") or {}
        if not captured or overlays_in is None:
            return config
        if not isinstance(captured, dict) or not all(
                isinstance(k, str) and k.isdigit() for k in captured):
            raise SnapshotError(f"snapshot '{self.path}': its overlays are damaged")
        devices = list(config.devices)
        for key, name in captured.items():
            i = int(key)
            src = os.path.join(os.path.dirname(os.path.abspath(self.path)), str(name))
            disk = devices[i] if 0 <= i < len(devices) else None
            if os.sep in str(name) or not isinstance(disk, DiskSpec):
                raise SnapshotError(f"snapshot '{self.path}': its overlays are damaged")
            dst = os.path.join(overlays_in, f"disk{i}.ovl")
            try:
                copy_sparse(src, dst)
            except OSError as e:
                raise SnapshotError(f"snapshot '{self.path}': its overlay disk {i} "
                                    f"('{src}'): {e.strerror or e}") from None
            devices[i] = dataclasses.replace(disk, overlay=dst)
        return dataclasses.replace(config, devices=tuple(devices))

    def map_ram(self) -> GuestRAM:
        ram = self.meta["ram"]
        return GuestRAM(ram["base"], ram["size"], backing=(self.fd, self.ram_at))

    def verify_ram(self, ram: GuestRAM) -> None:
        """Check the stored pages' CRC-32 (reads each: the RAM is then in the page cache)."""
        crc = 0
        mv = ram.mv
        for page, count in self.meta["ram"]["extents"]:
            crc = zlib.crc32(mv[page * PAGE:(page + count) * PAGE], crc)
        if crc != self.meta["ram"]["crc32"]:
            raise SnapshotError(f"snapshot '{self.path}': its RAM is damaged (checksum)")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Open ``path`` and check all but its RAM pages: a clear SnapshotError for a file
    that is missing, not a snapshot, of a newer format, truncated or damaged."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError as e:
        raise SnapshotError(f"snapshot '{name}': {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER.size, 0)
        if len(head) < HEADER.size or head[:8] != MAGIC:
            raise SnapshotError(f"'{name}' is not a pyhv snapshot")
        _, fmt, _flags, meta_at, meta_len, ram_at, ram_size, digest = HEADER.unpack(head)
        if fmt > FORMAT_VERSION:
            raise SnapshotError(f"snapshot '{name}' has format version {fmt}; this pyhv "
                                f"({__version__}) reads version {FORMAT_VERSION} and older")
        if (meta_len > MAX_META or meta_at < HEADER.size or ram_at % PAGE
                or ram_at < meta_at + meta_len or size < ram_at + ram_size):
            raise SnapshotError(f"snapshot '{name}' is truncated or damaged "
                                f"({size} bytes, {ram_at + ram_size} expected)")
        meta_bytes = os.pread(fd, meta_len, meta_at)
        if hashlib.sha256(meta_bytes).digest() != digest:
            raise SnapshotError(f"snapshot '{name}' is damaged (checksum of its state)")
        try:
            meta = json.loads(meta_bytes)
            ram = meta["ram"]
            ok = (ram["size"] == ram_size and ram_size % PAGE == 0
                  and all(0 <= p and 0 < c and (p + c) * PAGE <= ram_size
                          for p, c in ram["extents"]))
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise SnapshotError(f"snapshot '{name}': its metadata is not pyhv's")
    except BaseException:
        os.close(fd)
        raise
    return Snapshot(name, meta, fd, ram_at)


_PARTS: dict[str, type[records.Record]] = {
    "clint": ClintState, "plic": PlicState, "uart": UartState, "rtc": RtcState,
    "rom": RomState, "machine": MachineState,
}


def load_sections(sections: Any, machine: Machine) -> dict[str, records.Record]:
    """Check every saved section (a snapshot's or a migration's) against the record of
    the part it goes to (in ``machine``, built from the saved config): nothing is
    restored unless all of them fit."""
    where = "snapshot"
    if not isinstance(sections, dict):
        raise SnapshotError(f"{where}: no machine state")
    want: dict[str, type[records.Record]] = dict(_PARTS)
    board = machine.board
    if board.vmgenid is not None:
        want["vmgenid"] = VmGenIdState
    for hart in board.harts:
        want[f"hart{hart.hartid}"] = HartState
    for i, slot in enumerate(board.virtio_slots):
        if slot.device is not None:
            want[f"virtio{i}"] = TransportState
            want[f"virtio{i}.device"] = slot.device.STATE
    if set(sections) != set(want):
        odd = sorted(set(sections) ^ set(want))
        raise SnapshotError(f"{where} is of another machine (part '{odd[0]}')")
    out = {}
    for name, cls in want.items():
        sec = sections[name]
        if not isinstance(sec, dict) or set(sec) != {"version", "state"}:
            raise SnapshotError(f"{where}: section '{name}' is damaged")
        if sec["version"] != cls.VERSION:
            raise SnapshotError(f"{where}: section '{name}' has version "
                                f"{sec['version']}, this pyhv reads {cls.VERSION}")
        try:
            out[name] = records.load(cls, sec["state"], name)
        except StateError as e:
            raise SnapshotError(f"{where}: {e}") from None
    return out


def restore_sections(machine: Machine, sections: dict[str, records.Record],
                     clone: bool = False) -> None:
    """Give each part its state (harts first: the devices then drive their lines). A
    clone keeps the fresh MACs its NICs were built with (a config interrupt tells the
    driver), counts one more generation and gets a new VM generation ID (its interrupt
    tells the guest)."""
    board = machine.board
    try:
        for hart in board.harts:
            hart.restore(sections[f"hart{hart.hartid}"])  # type: ignore[arg-type]
            hart.mip_hw = 0
        board.clint.restore(sections["clint"])  # type: ignore[arg-type]
        board.plic.restore(sections["plic"])  # type: ignore[arg-type]
        board.uart.restore(sections["uart"])  # type: ignore[arg-type]
        board.rtc.restore(sections["rtc"])  # type: ignore[arg-type]
        rom = sections["rom"]
        assert isinstance(rom, RomState)
        board.rom.load(rom.data)
        for i, slot in enumerate(board.virtio_slots):
            if slot.device is not None:
                slot.restore(sections[f"virtio{i}"])  # type: ignore[arg-type]
                fresh = getattr(slot.device, "mac", None) if clone else None
                slot.device.restore(sections[f"virtio{i}.device"])
                if fresh is not None and fresh != getattr(slot.device, "mac", None):
                    slot.device.mac = fresh  # type: ignore[attr-defined]
                    slot.notify_config()
        if board.vmgenid is not None:
            board.vmgenid.restore(sections["vmgenid"])  # type: ignore[arg-type]
            if clone:
                board.vmgenid.new_generation()
        state = sections["machine"]
        assert isinstance(state, MachineState)
        machine.instructions = state.instructions
        machine.generation = state.generation + (1 if clone else 0)
    except (StateError, ValueError) as e:
        raise SnapshotError(f"snapshot: {e}") from None
