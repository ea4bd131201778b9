"""The device tree pyhv hands to the guest in ``a1``: QEMU 7.2's ``virt`` tree, rebuilt.

Why a copy of QEMU's tree rather than a minimal one: OpenSBI, U-Boot and Linux built for
QEMU ``virt`` find their devices through this tree, and some of them depend on details
(compatible strings and their order, phandle wiring, the PLIC context order M then S per
hart, ``stdout-path``). Reproducing QEMU's tree node by node -- in QEMU's node order,
property order and phandle numbering, so ``dtc -O dts`` of both can be diffed line by
line -- means guest software sees exactly what it was tested against.

What is left out, on purpose, because pyhv has no such device (nothing must be described
that does not answer at its address): ``pci@30000000``, ``flash@20000000``,
``fw-cfg@10100000`` and ``platform-bus@4000000`` (QEMU's container for dynamic sysbus
devices). ``/chosen/rng-seed`` is left out because it is random per boot.

One node QEMU's ``virt`` never has: ``rng@102000``, the VM generation ID
(``microsoft,vmgenid``, devices/vmgenid.py), when the machine has one (``vmgenid`` in
the spec); it comes last in ``/soc``, so the rest of the tree still diffs line by line
against QEMU's.

``riscv,ndev`` is ``memmap.PLIC_NUM_SOURCES - 1``: the highest source number the PLIC
model implements (96 on this board, as QEMU 7.2 says), so the tree never promises a
source the PLIC lacks.

One deliberate difference from the QEMU 7.2 dump: ``linux,initrd-start``/``-end`` are
one 32-bit cell each, as QEMU 7.2 writes them (``qemu_fdt_setprop_cell``), except that a
value at or above 4 GiB is written as two cells instead of being truncated. Consumers
read the property length, so both forms work.

Every address, size and interrupt number comes from :mod:`pyhv.board.memmap`.
"""

from __future__ import annotations

import fdt as _fdt

from ..errors import ConfigError
from ..lightdata import dataclass
from . import memmap

__all__ = ["DtbSpec", "build_dtb", "dtb_address", "STDOUT_PATH"]

STDOUT_PATH = f"/soc/serial@{memmap.UART0.base:x}"

# Interrupt numbers of the hart-local interrupt controller (mip bits).
_IRQ_M_SOFT = 3
_IRQ_M_TIMER = 7
_IRQ_S_EXT = 9
_IRQ_M_EXT = 11

# QEMU 7.2 "riscv,pmu" event map (hw/riscv/riscv_pmu.c with the default 16 counters):
# triples of (event first, event last, counter mask). Counters 3..18 are mhpmcounters.
_PMU_EVENT_MAP = (
    0x01, 0x01, 0x7FFF9,          # cycles -> mcycle + hpm counters
    0x02, 0x02, 0x7FFFC,          # instructions -> minstret + hpm counters
    0x10019, 0x10019, 0x7FFF8,    # DTLB read miss
    0x1001B, 0x1001B, 0x7FFF8,    # DTLB write miss
    0x10021, 0x10021, 0x7FFF8,    # ITLB read miss
    0x00, 0x00, 0x00, 0x00, 0x00,  # QEMU's zeroed tail, kept for an identical tree
)  # fmt: skip

_FDT_VERSION = 17  # what libfdt (and so QEMU) writes; last compatible version 16
VMGENID_SIZE = 16  # bytes of the generation ID (devices/vmgenid.py)
_GIB = 1 << 30
_MIB = 1 << 20


@dataclass(frozen=True)
class DtbSpec:
    """What the tree describes: the machine actually built."""

    num_harts: int
    ram_size: int
    bootargs: str | None = None
    initrd: tuple[int, int] | None = None  # (start, end), end exclusive
    isa: str = "rv64imafdc"
    mmu_type: str = "riscv,sv48"
    virtio_slots: int = memmap.VIRTIO_COUNT
    stdout_path: str = STDOUT_PATH
    vmgenid: bool = False  # the VM generation ID device (not on QEMU's board)


def _hi_lo(value: int) -> tuple[int, int]:
    return (value >> 32) & 0xFFFF_FFFF, value & 0xFFFF_FFFF


def _reg(region_base: int, size: int) -> _fdt.PropWords:
    return _fdt.PropWords("reg", *_hi_lo(region_base), *_hi_lo(size))


def _addr_cells(name: str, value: int) -> _fdt.PropWords:
    if value < (1 << 32):
        return _fdt.PropWords(name, value)
    return _fdt.PropWords(name, *_hi_lo(value))


def _text(name: str, *values: str) -> _fdt.PropStrings:
    for v in values:
        if "\0" in v or not v.isascii():
            raise ConfigError(f"device tree property {name} must be ASCII without NUL: {v!r}")
    return _fdt.PropStrings(name, *values)


def _node(name: str, *items: object) -> _fdt.Node:
    node = _fdt.Node(name)
    for item in items:
        node.append(item)
    return node


def _check(spec: DtbSpec) -> None:
    if not 1 <= spec.num_harts <= memmap.MAX_HARTS:
        raise ConfigError(f"number of harts must be 1..{memmap.MAX_HARTS}, not {spec.num_harts}")
    if spec.ram_size <= 0:
        raise ConfigError(f"RAM size must be positive, not {spec.ram_size}")
    if memmap.DRAM_BASE + spec.ram_size > 1 << 64:
        raise ConfigError(f"RAM size {spec.ram_size:#x} does not fit in the address space")
    if not 0 <= spec.virtio_slots <= memmap.VIRTIO_COUNT:
        raise ConfigError(f"virtio slots must be 0..{memmap.VIRTIO_COUNT}, not {spec.virtio_slots}")
    if spec.initrd is not None:
        start, end = spec.initrd
        if not 0 <= start <= end < 1 << 64:
            raise ConfigError(f"invalid initrd range {start:#x}..{end:#x}")


def build_dtb(spec: DtbSpec) -> bytes:
    """Return the flattened device tree (DTB, version 17) for ``spec``.

    Phandles are numbered as QEMU 7.2 numbers them: the harts from the last to the first
    (cpu N-1 gets 1, its interrupt controller 2, ...), then the PLIC, then the test
    device (syscon).
    """
    _check(spec)
    n = spec.num_harts

    # Phandles, allocated in QEMU's order.
    cpu_ph: dict[int, int] = {}
    intc_ph: dict[int, int] = {}
    next_ph = 1
    for hart in reversed(range(n)):
        cpu_ph[hart] = next_ph
        intc_ph[hart] = next_ph + 1
        next_ph += 2
    plic_ph = next_ph
    test_ph = next_ph + 1

    # /cpus
    cpus = _node(
        "cpus",
        _fdt.PropWords("#address-cells", 1),
        _fdt.PropWords("#size-cells", 0),
        _fdt.PropWords("timebase-frequency", memmap.CLINT_TIMEBASE_HZ),
    )
    for hart in range(n):
        cpus.append(
            _node(
                f"cpu@{hart:x}",
                _fdt.PropWords("phandle", cpu_ph[hart]),
                _text("device_type", "cpu"),
                _fdt.PropWords("reg", hart),
                _text("status", "okay"),
                _text("compatible", "riscv"),
                _text("riscv,isa", spec.isa),
                _text("mmu-type", spec.mmu_type),
                _node(
                    "interrupt-controller",
                    _fdt.PropWords("#interrupt-cells", 1),
                    _fdt.Property("interrupt-controller"),
                    _text("compatible", "riscv,cpu-intc"),
                    _fdt.PropWords("phandle", intc_ph[hart]),
                ),
            )
        )
    cluster = _node("cluster0")
    for hart in range(n):
        cluster.append(_node(f"core{hart}", _fdt.PropWords("cpu", cpu_ph[hart])))
    cpus.append(_node("cpu-map", cluster))

    # /soc: the children appear in the order QEMU's dump shows them.
    def irq_device(name: str, region: memmap.Region, compatible: str, *extra: object):
        return _node(
            f"{name}@{region.base:x}",
            _fdt.PropWords("interrupts", region.irq),
            _fdt.PropWords("interrupt-parent", plic_ph),
            *extra,
            _reg(region.base, region.size),
            _text("compatible", compatible),
        )

    soc = _node(
        "soc",
        _fdt.PropWords("#address-cells", 2),
        _fdt.PropWords("#size-cells", 2),
        _text("compatible", "simple-bus"),
        _fdt.Property("ranges"),
    )
    soc.append(irq_device("rtc", memmap.RTC, "google,goldfish-rtc"))
    soc.append(
        irq_device(
            "serial",
            memmap.UART0,
            "ns16550a",
            _fdt.PropWords("clock-frequency", memmap.UART_CLOCK_HZ),
        )
    )
    soc.append(
        _node(
            f"test@{memmap.TEST.base:x}",
            _fdt.PropWords("phandle", test_ph),
            _reg(memmap.TEST.base, memmap.TEST.size),
            _text("compatible", "sifive,test1", "sifive,test0", "syscon"),
        )
    )
    # QEMU adds slots 0..7 and libfdt inserts each new node first: highest slot first.
    for region in reversed(memmap.VIRTIO[: spec.virtio_slots]):
        soc.append(irq_device("virtio_mmio", region, "virtio,mmio"))
    plic_ext: list[int] = []
    clint_ext: list[int] = []
    for hart in range(n):
        plic_ext += [intc_ph[hart], _IRQ_M_EXT, intc_ph[hart], _IRQ_S_EXT]
        clint_ext += [intc_ph[hart], _IRQ_M_SOFT, intc_ph[hart], _IRQ_M_TIMER]
    soc.append(
        _node(
            f"plic@{memmap.PLIC.base:x}",
            _fdt.PropWords("phandle", plic_ph),
            _fdt.PropWords("riscv,ndev", memmap.PLIC_NUM_SOURCES - 1),
            _reg(memmap.PLIC.base, memmap.PLIC.size),
            _fdt.PropWords("interrupts-extended", *plic_ext),
            _fdt.Property("interrupt-controller"),
            _text("compatible", "sifive,plic-1.0.0", "riscv,plic0"),
            _fdt.PropWords("#address-cells", 0),
            _fdt.PropWords("#interrupt-cells", 1),
        )
    )
    soc.append(
        _node(
            f"clint@{memmap.CLINT.base:x}",
            _fdt.PropWords("interrupts-extended", *clint_ext),
            _reg(memmap.CLINT.base, memmap.CLINT.size),
            _text("compatible", "sifive,clint0", "riscv,clint0"),
        )
    )

    if spec.vmgenid:
        # The binding (rng/microsoft,vmgenid.yaml): reg is the 16-byte identifier.
        soc.append(
            _node(
                f"rng@{memmap.VMGENID.base:x}",
                _fdt.PropWords("interrupts", memmap.VMGENID.irq),
                _fdt.PropWords("interrupt-parent", plic_ph),
                _reg(memmap.VMGENID.base, VMGENID_SIZE),
                _text("compatible", "microsoft,vmgenid"),
            )
        )

    # /chosen, in QEMU's property order.
    chosen = _node("chosen")
    if spec.initrd is not None:
        chosen.append(_addr_cells("linux,initrd-end", spec.initrd[1]))
        chosen.append(_addr_cells("linux,initrd-start", spec.initrd[0]))
    if spec.bootargs:  # QEMU omits an empty -append
        # As QEMU: the command line's bytes (UTF-8), control characters included; only
        # NUL, which would end the string early, is refused (MachineConfig).
        if "\0" in spec.bootargs:
            raise ConfigError("the kernel command line contains a NUL character")
        chosen.append(_fdt.PropBytes("bootargs", data=spec.bootargs.encode() + b"\0"))
    chosen.append(_text("stdout-path", spec.stdout_path))

    def syscon_node(name: str, value: int) -> _fdt.Node:
        return _node(
            name,
            _fdt.PropWords("value", value),
            _fdt.PropWords("offset", 0),
            _fdt.PropWords("regmap", test_ph),
            _text("compatible", f"syscon-{name}"),
        )

    root = _node(
        "/",
        _fdt.PropWords("#address-cells", 2),
        _fdt.PropWords("#size-cells", 2),
        _text("compatible", "riscv-virtio"),
        _text("model", "riscv-virtio,qemu"),
        _node(
            "pmu",
            _fdt.PropWords("riscv,event-to-mhpmcounters", *_PMU_EVENT_MAP),
            _text("compatible", "riscv,pmu"),
        ),
        chosen,
        syscon_node("poweroff", 0x5555),  # FINISHER_PASS of sifive,test
        syscon_node("reboot", 0x7777),  # FINISHER_RESET
        _node(
            f"memory@{memmap.DRAM_BASE:x}",
            _text("device_type", "memory"),
            _reg(memmap.DRAM_BASE, spec.ram_size),
        ),
        cpus,
        soc,
    )

    tree = _fdt.FDT(entries=[])
    tree.root = root
    return tree.to_dtb(version=_FDT_VERSION, last_comp_version=16, boot_cpuid_phys=0)


def dtb_address(ram_size: int, dtb_size: int) -> int:
    """Where QEMU 7.2 puts the DTB (hw/riscv/boot.c ``riscv_load_fdt``).

    As far up as possible so the kernel and initrd do not overwrite it, but below 3 GiB
    (absolute) so a 32-bit system can reach it, aligned down to 2 MiB:
    ``align_down(min(DRAM_BASE + ram_size, 3 GiB) - dtb_size, 2 MiB)``. With 128 MiB of
    RAM that is 0x87e00000; with 1 GiB or more it is 0xbfe00000.
    """
    if ram_size <= 0 or dtb_size <= 0:
        raise ConfigError(f"invalid RAM size {ram_size} or DTB size {dtb_size}")
    dram_end = memmap.DRAM_BASE + ram_size
    top = min(dram_end, 3 * _GIB) if memmap.DRAM_BASE < 3 * _GIB else dram_end
    addr = (top - dtb_size) & ~(memmap.FDT_ALIGN - 1)
    if addr < memmap.DRAM_BASE:
        raise ConfigError(
            f"{ram_size // _MIB} MiB of RAM is too small to hold the {dtb_size}-byte device tree"
        )
    return addr
