"""The QEMU ``virt`` board: RAM, devices, harts and the boot flow, built from a config.

Everything is placed from the table in memmap.py, and the DTB is generated from the same
machine, so what the guest is told always matches what it gets. Boot follows QEMU:
every hart starts in M-mode at the boot ROM (0x1000), whose reset vector jumps to the
firmware (or, with ``bios=none``, to the kernel) with a0 = hartid, a1 = DTB address and
a2 = the fw_dynamic_info record naming the payload at 0x8020_0000 for OpenSBI.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..clock import Clock, next_time_read
from ..cpu.hart import Hart
from ..cpu.mmu import CodeWatch
from ..devices.base import Device
from ..devices.clint import MTIME as CLINT_MTIME
from ..devices.clint import Clint
from ..devices.plic import Plic
from ..devices.rom import Rom
from ..devices.rtc_goldfish import GoldfishRtc
from ..devices.syscon import SifiveTest
from ..devices.uart16550 import Uart16550
from ..devices.virtio.device import VirtioDevice
from ..devices.virtio.dma import GuestDMA
from ..devices.virtio.mmio import VirtioMmio
from ..devices.vmgenid import VmGenId, parse_guid
from ..errors import ConfigError, ImageError
from ..isa import spec
from ..lightdata import dataclass
from ..memory.bus import Bus
from ..memory.ram import GuestRAM
from . import memmap
from .bootrom import build_reset_vector
from .config import (
    BalloonSpec,
    ConsoleSpec,
    DeviceSpec,
    DiskSpec,
    MachineConfig,
    NetSpec,
    RngSpec,
    ShareSpec,
    place,
)
from .fdt import DtbSpec, build_dtb, dtb_address
from .loader import LoadedImage, check_overlap, load_image, load_initrd

DEFAULT_BIOS_PATHS = (
    "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin",
    "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin",
)
# What the DT advertises: RV64GC, plus Zihintpause so that Linux's cpu_relax() spins on
# `pause`, which pyhv turns into "let another hart run" (see interp's fence factory), and
# the extensions described beyond RV64GC in isa/spec.py (Zba, Zbb, Zbs, as QEMU's rv64
# has them, and Zicond).
ISA_STRING = "rv64imafdc_zicsr_zifencei_zihintpause" + "".join(
    f"_{ext.lower()}" for ext in spec.EXTENSIONS)

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    """This module's logger; ``logging`` is imported only where something is logged
    (~8 ms of every run's start otherwise)."""
    import logging

    return logging.getLogger(__name__)


def default_bios() -> str:
    for path in DEFAULT_BIOS_PATHS:
        if os.path.isfile(path):
            return path
    raise ImageError(
        "no default firmware: OpenSBI fw_dynamic not found at "
        f"{DEFAULT_BIOS_PATHS[0]} (install the Debian package qemu-system-data, "
        "or pass --bios FILE or --bios none)"
    )


@dataclass
class BootInfo:
    firmware: LoadedImage | None
    kernel: LoadedImage | None
    initrd: tuple[int, int] | None
    dtb_addr: int
    dtb: bytes


class VirtBoard:
    """All the hardware of one virt machine, wired together."""

    def __init__(
        self,
        config: MachineConfig,
        clock: Clock,
        console_out: Callable[[bytes], None],
        on_power: Callable[[str, int], None],
        ram: GuestRAM | None = None,
    ) -> None:
        """``ram``: the guest's RAM as a snapshot left it (vm/snapshot.py): no image is
        loaded, and the parts' states are restored by the caller."""
        self.config = config
        self.clock = clock
        restoring = ram is not None
        self.ram = ram if ram is not None else GuestRAM(memmap.DRAM_BASE, config.memory)
        self.bus = Bus()
        self.code = CodeWatch()
        self.harts: list[Hart] = []

        def set_mip(hartid: int, mask: int, level: bool) -> None:
            if 0 <= hartid < len(self.harts):
                self.harts[hartid].set_mip_hw(mask, level)

        self.rom = Rom("mrom", memmap.BOOT_ROM.size)
        self.test = SifiveTest(on_power)
        self.clint = Clint(config.smp, clock, set_mip)
        # what the last read of the time CSR returned (any hart, Python or native code)
        self.time_last = ctypes.c_uint64(0)
        self.clint.on_mtime_write = self._mtime_written
        self.clint.read_mtime = self._next_time
        self.mtime_pa = memmap.CLINT.base + CLINT_MTIME  # the JIT's native reads of it
        self.plic = Plic(config.smp, set_mip)
        self.uart = Uart16550(self.plic.irq_line(memmap.UART0.irq or 0), console_out)
        self.uart_base = memmap.UART0.base  # where the JIT's native window finds it
        self.rtc = GoldfishRtc(self.plic.irq_line(memmap.RTC.irq or 0), clock)
        self.dma = GuestDMA(self.ram, self.code)
        self.console_out = console_out
        # As on QEMU, the first -device lands in the highest slot (0x1000_8000), which the
        # DTB lists first, so the guest numbers devices in command-line order; a device
        # may name its slot (bus=virtio-mmio-bus.N). See vm.config.place.
        slot_devices: list[VirtioDevice | None] = [None] * len(memmap.VIRTIO)
        self.virtio_devices: list[VirtioDevice] = []
        try:
            for spec, slot in zip(config.devices, place(config.devices, len(memmap.VIRTIO)),
                                  strict=True):
                dev = self._make_device(spec)
                self.virtio_devices.append(dev)
                slot_devices[slot] = dev
        except BaseException:
            self.close()
            raise
        self.virtio_slots = [
            VirtioMmio(self.plic.irq_line(region.irq or 0), self.dma, dev)
            for region, dev in zip(memmap.VIRTIO, slot_devices, strict=True)
        ]
        self._active_slots = [slot for slot in self.virtio_slots if slot.device is not None]
        self.vmgenid = (VmGenId(self.plic.irq_line(memmap.VMGENID.irq or 0),
                                parse_guid(config.vmgenid))
                        if config.vmgenid is not None else None)
        self.devices: list[tuple[memmap.Region, Device]] = [
            (memmap.BOOT_ROM, self.rom),
            (memmap.TEST, self.test),
            (memmap.RTC, self.rtc),
            (memmap.CLINT, self.clint),
            (memmap.PLIC, self.plic),
            (memmap.UART0, self.uart),
            *zip(memmap.VIRTIO, self.virtio_slots, strict=False),
        ]
        if self.vmgenid is not None:  # (after the PLIC: a reset lowers its line last)
            self.devices.append((memmap.VMGENID, self.vmgenid))
        for region, device in self.devices:
            self.bus.attach(region.base, region.size, device)
        for hartid in range(config.smp):
            self.harts.append(Hart(hartid, self.ram, self.bus, self.code, self._read_time))
        self.boot: BootInfo | None = None
        self.dtb = b""
        if restoring:
            return
        try:
            self.boot = self._load()
        except BaseException:
            self.close()  # release disk locks and sockets opened above
            raise
        self.reset_harts()

    # -- boot ------------------------------------------------------------------------

    def _load(self) -> BootInfo:
        cfg = self.config
        ram = self.ram
        firmware = None
        if cfg.bios != "none":
            bios = default_bios() if cfg.bios == "default" else cfg.bios
            firmware = load_image(bios, ram, memmap.DRAM_BASE, what="firmware")
        kernel = None
        if cfg.kernel is not None:
            kaddr = (
                memmap.DRAM_BASE
                if firmware is None
                else memmap.DRAM_BASE + memmap.KERNEL_OFFSET_WITH_FIRMWARE
            )
            kernel = load_image(cfg.kernel, ram, kaddr, what="kernel")
            if firmware is not None:
                check_overlap(firmware, kernel, ("firmware", "kernel"))
        initrd = None
        if cfg.initrd is not None:
            assert kernel is not None
            initrd = load_initrd(cfg.initrd, ram, kernel)
        if cfg.dtb is not None:
            dtb = _read_dtb(cfg.dtb)
        else:
            dtb = build_dtb(
                DtbSpec(
                    num_harts=cfg.smp,
                    ram_size=cfg.memory,
                    bootargs=cfg.append,
                    initrd=initrd,
                    isa=ISA_STRING,
                    mmu_type="riscv,sv48",
                    vmgenid=self.vmgenid is not None,
                )
            )
        self.dtb = dtb  # what the guest gets (pyhv-qemu -machine virt,dumpdtb=FILE)
        dtb_addr = dtb_address(cfg.memory, len(dtb))
        dtb_range = (dtb_addr, dtb_addr + len(dtb))
        for image, name in ((firmware, "firmware"), (kernel, "kernel")):
            if image is not None:
                check_overlap(image, dtb_range, (name, "device tree"))
        if initrd is not None:
            check_overlap(initrd, dtb_range, ("initrd", "device tree"))
        ram.write_bytes(dtb_addr, dtb)
        if firmware is not None:
            start = firmware.entry
            next_addr = (
                kernel.entry
                if kernel is not None
                else memmap.DRAM_BASE + memmap.KERNEL_OFFSET_WITH_FIRMWARE
            )
            fw_info = (next_addr, 1)  # (next_addr, next_mode = S)
        else:
            assert kernel is not None
            start = kernel.entry
            fw_info = (kernel.entry, 1)  # QEMU writes the record even without firmware
        self.rom.load(build_reset_vector(start, dtb_addr, fw_info))
        return BootInfo(firmware, kernel, initrd, dtb_addr, dtb)

    def reset_harts(self) -> None:
        for hart in self.harts:
            hart.restore(Hart(hart.hartid, self.ram, self.bus, self.code).save())
            hart.pc = memmap.BOOT_ROM.base
            hart.mip_hw = 0

    def reset(self) -> None:
        """Warm reset (syscon reboot): reload the images, reset devices and harts."""
        self.ram.clear()
        self.code.invalidate_range(self.ram.base, self.ram.size)
        for _region, dev in self.devices:
            reset = getattr(dev, "reset", None)
            if reset is not None:
                reset()
        self.boot = self._load()
        self.reset_harts()

    def _read_time(self) -> int:
        """The `time` CSR. Counting the reads tells GuestTime when the guest polls; each
        read a tick past the last one while that is close to mtime (next_time_read; the
        last value is in ``time_last``, which the JIT's native reads share)."""
        reads = getattr(self.clock, "time_reads", None)
        if reads is not None:
            self.clock.time_reads = reads + 1  # type: ignore[attr-defined]
        return self._next_time()

    def _next_time(self) -> int:
        """The next value of the guest's clock as the time CSR and the CLINT's mtime
        register read it (one sequence for both, and for every hart)."""
        value = next_time_read(self.time_last.value, self.clint.mtime())
        self.time_last.value = value
        return value

    def _mtime_written(self) -> None:
        self.time_last.value = 0  # reads follow the new mtime, even one set back

    def _make_device(self, spec: DeviceSpec) -> VirtioDevice:
        if isinstance(spec, DiskSpec):
            from ..devices.virtio.blk import VirtioBlk
            from ..devices.virtio.block_backend import open_disk

            overlay = spec.overlay
            if overlay == "":
                overlay = self._temporary_overlay(spec.path)
            serial = spec.serial.encode() if spec.serial is not None else None
            return VirtioBlk(open_disk(spec.path, read_only=spec.read_only, overlay=overlay),
                             serial=serial, limits=spec.limits)
        if isinstance(spec, NetSpec):
            from ..devices.virtio.net import VirtioNet

            if spec.user is not None:
                return VirtioNet.on_user_network(spec.user.hostfwd, spec.user.restrict,
                                                 spec.mac, spec.tx_limits, spec.rx_limits,
                                                 spec.user.mtu)
            if spec.tap is not None:
                return VirtioNet.on_tap(spec.tap, spec.mac, spec.tx_limits, spec.rx_limits)
            assert spec.switch is not None
            return VirtioNet.on_switch(spec.switch, spec.mac, spec.tx_limits, spec.rx_limits)
        if isinstance(spec, RngSpec):
            from ..devices.virtio.rng import VirtioRng

            return VirtioRng()
        if isinstance(spec, BalloonSpec):
            from ..devices.virtio.balloon import VirtioBalloon, madvise_release

            return VirtioBalloon(self.ram, madvise_release(self.ram))
        if isinstance(spec, ConsoleSpec):
            from ..devices.virtio.console import VirtioConsole

            return VirtioConsole(self.console_out)
        if isinstance(spec, ShareSpec):
            from ..devices.virtio.p9 import Virtio9p
            from ..devices.virtio.p9fs import P9Server

            try:
                server = P9Server(spec.path, read_only=spec.read_only)
            except OSError as e:
                raise ConfigError(f"--share '{spec.path}': {e.strerror}") from None
            return Virtio9p(server, spec.tag)
        raise TypeError(f"unknown device spec {spec!r}")

    def release_disks(self) -> None:
        """Flush and close every disk (its lock goes with it), keeping the devices: a
        migration hands the files to the destination. ``reclaim_disks`` opens them again
        (the migration failed: the source runs on)."""
        from ..devices.virtio.blk import VirtioBlk

        for dspec, dev in zip(self.config.devices, self.virtio_devices, strict=True):
            if isinstance(dev, VirtioBlk) and isinstance(dspec, DiskSpec):
                dev.disk.flush()
                dev.disk.close()

    def reclaim_disks(self) -> None:
        from ..devices.virtio.blk import VirtioBlk
        from ..devices.virtio.block_backend import open_disk

        for dspec, dev in zip(self.config.devices, self.virtio_devices, strict=True):
            if isinstance(dev, VirtioBlk) and isinstance(dspec, DiskSpec):
                dev.disk = open_disk(dspec.path, read_only=dspec.read_only,
                                     overlay=dspec.overlay)

    def release_host_ports(self) -> None:
        """Close every user-mode NIC's network (its hostfwd sockets with it) and every
        TAP NIC's attachment, so that a migration's destination on the same host can
        listen on the same ports and attach to the same interface; ``reclaim_host_ports``
        opens them again (the migration failed: the source runs on, a user-mode guest's
        connections lost as after a restore)."""
        from ..devices.virtio.net import VirtioNet

        for dspec, dev in zip(self.config.devices, self.virtio_devices, strict=True):
            if isinstance(dev, VirtioNet) and isinstance(dspec, NetSpec) and (
                    dspec.user or dspec.tap):
                dev.port.close()

    def reclaim_host_ports(self) -> None:
        from ..devices.virtio.net import VirtioNet

        for dspec, dev in zip(self.config.devices, self.virtio_devices, strict=True):
            if isinstance(dev, VirtioNet) and isinstance(dspec, NetSpec) and dspec.user:
                try:
                    dev.port = VirtioNet.on_user_network(
                        dspec.user.hostfwd, dspec.user.restrict, mtu=dspec.user.mtu).port
                except ConfigError as e:  # a forwarded port taken meanwhile: NIC stays down
                    _log().warning("user-mode NIC not reopened: %s", e)
            elif isinstance(dev, VirtioNet) and isinstance(dspec, NetSpec) and dspec.tap:
                try:
                    dev.port = VirtioNet.on_tap(dspec.tap).port
                except ConfigError as e:
                    _log().warning("TAP NIC not reattached: %s", e)

    def _temporary_overlay(self, base: str) -> str:
        import tempfile

        if not hasattr(self, "_tmpdir"):
            self._tmpdir = tempfile.TemporaryDirectory(prefix="pyhv-overlay-")
        name = os.path.basename(base) or "disk"
        return os.path.join(self._tmpdir.name, f"{len(os.listdir(self._tmpdir.name))}-{name}.ovl")

    def poll(self) -> None:
        """Let time-driven devices raise their interrupts, and host I/O reach the guest."""
        self.clint.poll()
        self.rtc.poll()
        for slot in self._active_slots:
            slot.poll()

    def io_pending(self) -> bool:
        """Whether a virtio queue has requests left over from an earlier round (its work
        budget ran out): the machine must not sleep before serving them."""
        return any(slot.busy for slot in self._active_slots)

    def wait_fds(self) -> list[int]:
        fds: list[int] = []
        for dev in self.virtio_devices:
            fds.extend(dev.wait_fds())
        return fds

    def io_deadline(self) -> float | None:
        """The earliest time (host monotonic seconds) a request held back by an I/O
        budget may go, if any is held."""
        times = [t for t in (dev.io_deadline() for dev in self.virtio_devices)
                 if t is not None]
        return min(times) if times else None

    def next_deadline_ns(self) -> int | None:
        deadlines = [d for d in (self.clint.next_deadline_ns(), self.rtc.next_deadline_ns())
                     if d is not None]
        return min(deadlines) if deadlines else None

    def close(self) -> None:
        for dev in getattr(self, "virtio_devices", []):
            dev.close()
        tmp = getattr(self, "_tmpdir", None)
        if tmp is not None:
            tmp.cleanup()
        self.ram.close()


def _read_dtb(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageError(f"device tree '{path}': no such file") from None
    except OSError as e:
        raise ImageError(f"device tree '{path}': {e.strerror}") from None
    if data[:4] != b"\xd0\x0d\xfe\xed":
        raise ImageError(f"device tree '{path}' is not a flattened device tree blob (.dtb)")
    return data
