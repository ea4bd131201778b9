"""The generated device tree against QEMU 7.2's own ``virt`` tree.

The reference DTS files were dumped from QEMU 7.2 (``-machine dumpdtb``). pyhv's tree
must match them node for node and property for property, except for what pyhv
deliberately leaves out (devices it does not have, the random seed). That difference is
asserted explicitly, so any other drift fails. ``riscv,ndev`` follows the PLIC model
(memmap.PLIC_NUM_SOURCES); if that ever stops being QEMU's 96, the difference is listed
in EXPECTED_PROP_DIFFS.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import fdt
import pytest

from pyhv.board import memmap
from pyhv.board.fdt import STDOUT_PATH, DtbSpec, build_dtb, dtb_address
from pyhv.errors import ConfigError

MiB = 1 << 20
GiB = 1 << 30

QEMU_ISA = "rv64imafdch_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc"

# Nodes in QEMU's tree that pyhv does not generate: devices pyhv does not have.
EXCLUDED_NODES = {
    "/fw-cfg@10100000",
    "/flash@20000000",
    "/platform-bus@4000000",
    "/soc/pci@30000000",
}
# Properties that differ on purpose: (path, name) -> (QEMU 7.2 value, pyhv value).
_NDEV = memmap.PLIC_NUM_SOURCES - 1
EXPECTED_PROP_DIFFS = (
    {} if _NDEV == 96 else {("/soc/plic@c000000", "riscv,ndev"): ("<0x60>", f"<{_NDEV:#04x}>")}
)

HAVE_DTC = shutil.which("dtc") is not None
needs_dtc = pytest.mark.skipif(not HAVE_DTC, reason="dtc (device-tree-compiler) not installed")


def _guest_dir() -> Path | None:
    for cand in (
        os.environ.get("PYHV_GUESTS_DIR"),
        Path(__file__).resolve().parents[2] / "guests",
        "/work/shared/guests",
    ):
        if cand and (Path(cand) / "qemu-virt-smp1.dts").is_file():
            return Path(cand)
    return None


GUESTS = _guest_dir()
needs_reference = pytest.mark.skipif(GUESTS is None, reason="QEMU reference DTS not found")


def decompile(blob: bytes) -> str:
    out = subprocess.run(
        ["dtc", "-I", "dtb", "-O", "dts", "-"],
        input=blob,
        capture_output=True,
        check=True,
    )
    return out.stdout.decode()


_NODE_RE = re.compile(r"^\s*(?:[\w-]+:\s*)?([^\s{]+) \{$")
_PROP_RE = re.compile(r"^\s*([^\s=;]+)(?: = (.*))?;$")


def parse_dts(text: str) -> dict[str, list[tuple[str, str | None]]]:
    """dtc's output -> {node path: [(property, value), ...]}, both in file order."""
    nodes: dict[str, list[tuple[str, str | None]]] = {}
    stack: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("/dts-v1/"):
            continue
        if line.strip() == "};":
            stack.pop()
            continue
        m = _NODE_RE.match(line)
        if m:
            name = m.group(1)
            path = "/" if name == "/" else (stack[-1].rstrip("/") + "/" + name)
            stack.append(path)
            nodes[path] = []
            continue
        m = _PROP_RE.match(line)
        assert m, f"unparsed dts line: {line!r}"
        nodes[stack[-1]].append((m.group(1), m.group(2)))
    assert not stack
    return nodes


def _without(nodes: dict, excluded: set[str]) -> dict:
    return {
        p: props
        for p, props in nodes.items()
        if not any(p == x or p.startswith(x + "/") for x in excluded)
    }


# --------------------------------------------------------- comparison with QEMU's tree


@needs_dtc
@needs_reference
@pytest.mark.parametrize("harts", [1, 4])
def test_matches_qemu_reference(harts: int) -> None:
    assert GUESTS is not None
    ref = parse_dts((GUESTS / f"qemu-virt-smp{harts}.dts").read_text())
    ours = parse_dts(decompile(build_dtb(DtbSpec(harts, 128 * MiB, isa=QEMU_ISA))))

    # The difference in nodes is exactly the devices pyhv does not have.
    assert EXCLUDED_NODES <= set(ref), "reference lost a node this test expects"
    assert set(ref) - set(ours) == EXCLUDED_NODES
    assert set(ours) - set(ref) == set()
    # Same nodes in the same order.
    assert list(ours) == list(_without(ref, EXCLUDED_NODES))

    # Same properties, in the same order, with the same values, but for the listed ones.
    for path, ref_props in _without(ref, EXCLUDED_NODES).items():
        ours_props = ours[path]
        assert [n for n, _ in ours_props] == [n for n, _ in ref_props], path
        for (name, ref_val), (_, our_val) in zip(ref_props, ours_props, strict=True):
            diff = EXPECTED_PROP_DIFFS.get((path, name))
            if diff is None:
                assert our_val == ref_val, (path, name)
            else:
                assert (ref_val, our_val) == diff, (path, name)
    # The random seed is not in the reference (removed) and not in ours.
    assert all(n != "rng-seed" for n, _ in ours["/chosen"])


@needs_reference
@pytest.mark.parametrize("harts", [1, 4])
def test_reference_dtb_parses_like_ours(harts: int) -> None:
    """Without dtc: compare with the reference .dtb through the fdt package."""
    assert GUESTS is not None
    ref = fdt.parse_dtb((GUESTS / f"qemu-virt-smp{harts}.dtb").read_bytes())
    ours = fdt.parse_dtb(build_dtb(DtbSpec(harts, 128 * MiB, isa=QEMU_ISA)))
    ref_paths = {_join(path, n.name) for path, nodes, _ in ref.walk() for n in nodes}
    our_paths = {_join(path, n.name) for path, nodes, _ in ours.walk() for n in nodes}
    assert ref_paths - our_paths == EXCLUDED_NODES
    assert our_paths <= ref_paths
    for path in our_paths:
        ref_node, our_node = ref.get_node(path), ours.get_node(path)
        for prop in ref_node.props:
            if (path, prop.name) in EXPECTED_PROP_DIFFS:
                continue
            assert our_node.get_property(prop.name) == prop, (path, prop.name)
            assert getattr(our_node.get_property(prop.name), "data", None) == getattr(
                prop, "data", None
            ), (path, prop.name)
        assert len(our_node.props) == len(ref_node.props), path


def _join(path: str, name: str) -> str:
    return (path.rstrip("/") + "/" + name) if path else "/" + name


QEMU = shutil.which("qemu-system-riscv64")


@pytest.mark.skipif(QEMU is None or not HAVE_DTC, reason="qemu-system-riscv64 or dtc missing")
@pytest.mark.parametrize("harts,mem", [(2, 256), (8, 64)])
def test_matches_live_qemu_with_bootargs_and_initrd(tmp_path, harts: int, mem: int) -> None:
    """Dump QEMU's tree with -append and -initrd and compare, /chosen included."""
    assert QEMU is not None
    kernel = tmp_path / "k.bin"
    kernel.write_bytes(b"\x6f\x00\x00\x00")  # j .
    initrd = tmp_path / "rd.bin"
    initrd.write_bytes(bytes(range(256)) * 4)
    dump = tmp_path / "q.dtb"
    args = "console=ttyS0 root=/dev/vda rw"
    subprocess.run(
        [QEMU, "-M", f"virt,dumpdtb={dump}", "-m", f"{mem}M", "-smp", str(harts),
         "-display", "none", "-bios", "none", "-kernel", str(kernel),
         "-initrd", str(initrd), "-append", args],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    ref = parse_dts(decompile(dump.read_bytes()))
    isa = dict(ref["/cpus/cpu@0"])["riscv,isa"].strip('"')
    # QEMU -bios none: kernel at DRAM_BASE, initrd at entry + min(ram/2, 128 MiB).
    start = memmap.DRAM_BASE + min(mem * MiB // 2, 128 * MiB)
    spec = DtbSpec(harts, mem * MiB, bootargs=args, initrd=(start, start + 1024), isa=isa)
    ours = parse_dts(decompile(build_dtb(spec)))
    ref["/chosen"] = [(n, v) for n, v in ref["/chosen"] if n != "rng-seed"]
    ref = _without(ref, EXCLUDED_NODES)
    assert list(ours) == list(ref)
    for path, props in ref.items():
        for name, val in props:
            diff = EXPECTED_PROP_DIFFS.get((path, name))
            expected = val if diff is None else diff[1]
            assert (name, expected) in ours[path], (path, name)
        assert len(ours[path]) == len(props), path


# ------------------------------------------------------------- self-contained checks


def _tree(**kw) -> fdt.FDT:
    kw.setdefault("num_harts", 2)
    kw.setdefault("ram_size", 128 * MiB)
    return fdt.parse_dtb(build_dtb(DtbSpec(**kw)))


def _words(tree: fdt.FDT, path: str, name: str) -> list[int]:
    return list(tree.get_property(name, path).data)


def test_header_is_version_17() -> None:
    blob = build_dtb(DtbSpec(1, 128 * MiB))
    magic, total, _struct, _strings, rsv, version, last_comp = struct.unpack_from(">7I", blob)
    assert magic == 0xD00DFEED
    assert total == len(blob)
    assert rsv == 0x28
    assert (version, last_comp) == (17, 16)
    assert struct.unpack_from(">I", blob, 28)[0] == 0  # boot_cpuid_phys


def test_parse_back_layout() -> None:
    t = _tree(num_harts=3, ram_size=256 * MiB)
    root = t.get_node("/")
    assert [n.name for n in root.nodes] == [
        "pmu", "chosen", "poweroff", "reboot", "memory@80000000", "cpus", "soc",
    ]  # fmt: skip
    assert t.get_property("compatible", "/").value == "riscv-virtio"
    assert t.get_property("model", "/").value == "riscv-virtio,qemu"
    assert _words(t, "/memory@80000000", "reg") == [0, 0x8000_0000, 0, 256 * MiB]
    assert _words(t, "/cpus", "timebase-frequency") == [10_000_000]
    soc = [n.name for n in t.get_node("/soc").nodes]
    assert soc == [
        "rtc@101000", "serial@10000000", "test@100000",
        *[f"virtio_mmio@{0x10001000 + 0x1000 * i:x}" for i in reversed(range(8))],
        "plic@c000000", "clint@2000000",
    ]  # fmt: skip


def test_phandle_wiring() -> None:
    n = 4
    t = _tree(num_harts=n)
    intc = [_words(t, f"/cpus/cpu@{h}/interrupt-controller", "phandle")[0] for h in range(n)]
    cpu = [_words(t, f"/cpus/cpu@{h}", "phandle")[0] for h in range(n)]
    # QEMU numbers from the last hart down.
    assert cpu == [7, 5, 3, 1] and intc == [8, 6, 4, 2]
    plic = _words(t, "/soc/plic@c000000", "phandle")[0]
    test = _words(t, "/soc/test@100000", "phandle")[0]
    assert (plic, test) == (9, 10)
    assert len({*cpu, *intc, plic, test}) == 2 * n + 2
    plic_ext = _words(t, "/soc/plic@c000000", "interrupts-extended")
    clint_ext = _words(t, "/soc/clint@2000000", "interrupts-extended")
    # PLIC context 2h is hart h's M-mode external interrupt (11), 2h+1 its S-mode one (9).
    assert plic_ext == [x for h in range(n) for x in (intc[h], 11, intc[h], 9)]
    assert clint_ext == [x for h in range(n) for x in (intc[h], 3, intc[h], 7)]
    for h in range(n):
        assert _words(t, f"/cpus/cpu-map/cluster0/core{h}", "cpu") == [cpu[h]]
    for dev in ("/soc/serial@10000000", "/soc/rtc@101000", "/soc/virtio_mmio@10001000"):
        assert _words(t, dev, "interrupt-parent") == [plic]
    for node in ("/poweroff", "/reboot"):
        assert _words(t, node, "regmap") == [test]
        assert _words(t, node, "offset") == [0]
    assert _words(t, "/poweroff", "value") == [0x5555]
    assert _words(t, "/reboot", "value") == [0x7777]


def test_devices_come_from_memmap() -> None:
    t = _tree()
    for region, path in (
        (memmap.UART0, "/soc/serial@10000000"),
        (memmap.RTC, "/soc/rtc@101000"),
        *((r, f"/soc/virtio_mmio@{r.base:x}") for r in memmap.VIRTIO),
    ):
        assert _words(t, path, "reg") == [0, region.base, 0, region.size]
        assert _words(t, path, "interrupts") == [region.irq]
    assert _words(t, "/soc/serial@10000000", "clock-frequency") == [3_686_400]
    assert _words(t, "/soc/plic@c000000", "riscv,ndev") == [memmap.PLIC_NUM_SOURCES - 1]
    assert _words(t, "/soc/plic@c000000", "reg") == [0, 0x0C00_0000, 0, 0x60_0000]
    assert _words(t, "/soc/clint@2000000", "reg") == [0, 0x0200_0000, 0, 0x10000]
    assert list(t.get_property("compatible", "/soc/plic@c000000").data) == [
        "sifive,plic-1.0.0",
        "riscv,plic0",
    ]
    assert list(t.get_property("compatible", "/soc/test@100000").data) == [
        "sifive,test1",
        "sifive,test0",
        "syscon",
    ]
    assert t.get_property("compatible", "/soc/rtc@101000").value == "google,goldfish-rtc"


def test_cpu_properties_follow_spec() -> None:
    t = _tree(num_harts=2, isa="rv64imafdc_zicsr", mmu_type="riscv,sv39")
    for h in range(2):
        assert t.get_property("riscv,isa", f"/cpus/cpu@{h}").value == "rv64imafdc_zicsr"
        assert t.get_property("mmu-type", f"/cpus/cpu@{h}").value == "riscv,sv39"
        assert t.get_property("status", f"/cpus/cpu@{h}").value == "okay"
        assert _words(t, f"/cpus/cpu@{h}", "reg") == [h]
        intc = f"/cpus/cpu@{h}/interrupt-controller"
        assert t.get_property("compatible", intc).value == "riscv,cpu-intc"
        assert t.exist_property("interrupt-controller", intc)


def test_chosen_minimal() -> None:
    t = _tree()
    chosen = t.get_node("/chosen")
    assert [p.name for p in chosen.props] == ["stdout-path"]
    assert chosen.get_property("stdout-path").value == "/soc/serial@10000000" == STDOUT_PATH


def test_chosen_bootargs_and_initrd() -> None:
    t = _tree(bootargs="console=ttyS0 pyhv.selftest=1", initrd=(0x8420_0000, 0x842E_9C45))
    chosen = t.get_node("/chosen")
    assert [p.name for p in chosen.props] == [
        "linux,initrd-end",
        "linux,initrd-start",
        "bootargs",
        "stdout-path",
    ]
    assert chosen.get_property("bootargs").value == "console=ttyS0 pyhv.selftest=1"
    # One cell each below 4 GiB, as QEMU 7.2 writes them.
    assert list(chosen.get_property("linux,initrd-start").data) == [0x8420_0000]
    assert list(chosen.get_property("linux,initrd-end").data) == [0x842E_9C45]


def test_initrd_above_4g_uses_two_cells() -> None:
    t = _tree(ram_size=8 * GiB, initrd=(0x1_0000_0000, 0x1_0010_0000))
    assert _words(t, "/chosen", "linux,initrd-start") == [1, 0]
    assert _words(t, "/chosen", "linux,initrd-end") == [1, 0x0010_0000]
    assert _words(t, "/memory@80000000", "reg") == [0, 0x8000_0000, 2, 0]


def test_empty_bootargs_omitted_and_custom_stdout() -> None:
    t = _tree(bootargs="", stdout_path="/soc/virtio_mmio@10001000")
    assert not t.exist_property("bootargs", "/chosen")
    assert t.get_property("stdout-path", "/chosen").value == "/soc/virtio_mmio@10001000"


def test_fewer_virtio_slots() -> None:
    t = _tree(virtio_slots=2)
    names = [n.name for n in t.get_node("/soc").nodes if n.name.startswith("virtio")]
    assert names == ["virtio_mmio@10002000", "virtio_mmio@10001000"]
    t = _tree(virtio_slots=0)
    assert not any(n.name.startswith("virtio") for n in t.get_node("/soc").nodes)


@pytest.mark.parametrize(
    "kw",
    [
        {"num_harts": 0},
        {"num_harts": memmap.MAX_HARTS + 1},
        {"ram_size": 0},
        {"virtio_slots": 9},
        {"virtio_slots": -1},
        {"bootargs": "a\0b"},
        {"initrd": (0x8400_0000, 0x8300_0000)},
    ],
)
def test_invalid_spec(kw) -> None:
    with pytest.raises(ConfigError):
        _tree(**kw)


def test_spec_is_frozen() -> None:
    spec = DtbSpec(1, 128 * MiB)
    with pytest.raises(AttributeError):
        spec.num_harts = 2  # type: ignore[misc]


@needs_dtc
@pytest.mark.parametrize("harts", [1, 2, 8])
def test_dtc_accepts_it(harts: int) -> None:
    blob = build_dtb(DtbSpec(harts, 1 * GiB, bootargs="x", initrd=(0x8800_0000, 0x8900_0000)))
    out = subprocess.run(
        ["dtc", "-I", "dtb", "-O", "dtb", "-o", os.devnull, "-"],
        input=blob,
        capture_output=True,
    )
    assert out.returncode == 0, out.stderr.decode()


# ------------------------------------------------------------------------ placement


@pytest.mark.parametrize(
    "ram,size,addr",
    [
        (128 * MiB, 0x1000, 0x87E0_0000),
        (128 * MiB, 1 * MiB, 0x87E0_0000),  # QEMU's unpacked 1 MiB tree lands there too
        (64 * MiB, 0x1000, 0x83E0_0000),
        (1 * GiB, 0x1000, 0xBFE0_0000),
        (2 * GiB, 0x1000, 0xBFE0_0000),  # capped at 3 GiB (absolute) for 32-bit reach
        (16 * GiB, 0x1000, 0xBFE0_0000),
        (128 * MiB, 3 * MiB, 0x87C0_0000),
    ],
)
def test_dtb_address(ram: int, size: int, addr: int) -> None:
    assert dtb_address(ram, size) == addr
    assert addr % (2 * MiB) == 0
    assert addr + size <= memmap.DRAM_BASE + ram


def test_dtb_address_ram_too_small() -> None:
    assert dtb_address(1 * MiB, 0x2000) == memmap.DRAM_BASE  # tiny, but it fits
    with pytest.raises(ConfigError, match="too small"):
        dtb_address(1 * MiB, 3 * MiB)
    with pytest.raises(ConfigError):
        dtb_address(0, 0x2000)


def test_bootargs_are_the_command_line_bytes_as_qemu_writes_them() -> None:
    """Control characters and UTF-8 go into /chosen/bootargs as QEMU 7.2 puts them
    (``-append $'a\\x01b é'`` dumps as [61 01 62 20 c3 a9 00]); they used to stop the
    tree builder with a traceback."""
    blob = build_dtb(DtbSpec(1, 128 * MiB, bootargs="a\x01b é"))
    assert b"a\x01b \xc3\xa9\x00" in blob
    prop = fdt.parse_dtb(blob).get_property("bootargs", "/chosen")
    assert bytes(prop.data) == bytes([0x61, 0x01, 0x62, 0x20, 0xC3, 0xA9, 0x00])


def test_the_vm_generation_id_node_follows_its_binding() -> None:
    """rng/microsoft,vmgenid.yaml: compatible, reg (the 16-byte identifier), interrupts
    (on the PLIC); last in /soc, so the nodes before it are QEMU's, in QEMU's order; no
    such node unless asked for (the QEMU comparisons above)."""
    t = _tree(vmgenid=True)
    path = f"/soc/rng@{memmap.VMGENID.base:x}"
    assert t.get_property("compatible", path).value == "microsoft,vmgenid"
    assert _words(t, path, "reg") == [0, memmap.VMGENID.base, 0, 16]
    assert _words(t, path, "interrupts") == [memmap.VMGENID.irq]
    assert _words(t, path, "interrupt-parent") == _words(t, "/soc/plic@c000000", "phandle")
    assert [n.name for n in t.get_node("/soc").nodes][-1] == "rng@102000"
    assert [n.name for n in t.get_node("/soc").nodes][:-1] == [
        n.name for n in _tree().get_node("/soc").nodes]
    taken = {r.irq for r in (memmap.UART0, memmap.RTC, *memmap.VIRTIO)}
    assert memmap.VMGENID.irq not in taken
    ends = sorted((r.base, r.base + r.size) for r in (
        memmap.BOOT_ROM, memmap.TEST, memmap.RTC, memmap.VMGENID, memmap.CLINT,
        memmap.PLIC, memmap.UART0, *memmap.VIRTIO))
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:], strict=False))
