"""Loading guest images: every accepted format and every refusal, with real files.

The ELF files are built byte by byte here (a minimal ELF64 header plus program
headers), so the tests never depend on a cross compiler; one extra test uses
``riscv64-unknown-elf-gcc`` when it is installed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from pyhv.board import loader, memmap
from pyhv.board.loader import (
    LoadedImage,
    check_overlap,
    initrd_address,
    load_image,
    load_initrd,
    parse_size,
)
from pyhv.errors import ConfigError, ImageError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
BASE = memmap.DRAM_BASE


class FakeRAM:
    """Guest RAM stand-in: records writes, so a 128 MiB machine costs no memory."""

    def __init__(self, size: int = 128 * MiB, base: int = BASE, fill: int = 0) -> None:
        self.base = base
        self.size = size
        self.fill = fill
        self.writes: list[tuple[int, bytes]] = []

    def write_bytes(self, paddr: int, data: bytes) -> None:
        assert self.base <= paddr and paddr + len(data) <= self.base + self.size, hex(paddr)
        self.writes.append((paddr, bytes(data)))

    def read(self, paddr: int, length: int) -> bytes:
        out = bytearray([self.fill]) * length
        for addr, data in self.writes:
            lo, hi = max(addr, paddr), min(addr + len(data), paddr + length)
            if lo < hi:
                out[lo - paddr : hi - paddr] = data[lo - addr : hi - addr]
        return bytes(out)


# ------------------------------------------------------------------- ELF builder

PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4
EM_RISCV, EM_X86_64 = 243, 62
ET_EXEC, ET_DYN = 2, 3


def make_elf(
    segments: list[dict],
    entry: int,
    *,
    machine: int = EM_RISCV,
    etype: int = ET_EXEC,
    elfclass: int = 2,
    data_enc: int = 1,
) -> bytes:
    """A minimal ELF64 file: header, program headers, then each segment's bytes.

    Each segment is a dict with paddr, data and optionally vaddr, memsz, flags, type.
    """
    end = "<" if data_enc == 1 else ">"
    ehsize, phentsize = 64, 56
    phoff = ehsize
    offset = phoff + phentsize * len(segments)
    phdrs = b""
    body = b""
    for seg in segments:
        data = seg["data"]
        offset = (offset + 7) & ~7
        pad = offset - (phoff + phentsize * len(segments) + len(body))
        body += b"\0" * pad
        phdrs += struct.pack(
            end + "IIQQQQQQ",
            seg.get("type", PT_LOAD),
            seg.get("flags", PF_R | PF_X),
            offset,
            seg.get("vaddr", seg["paddr"]),
            seg["paddr"],
            len(data),
            seg.get("memsz", len(data)),
            0x1000,
        )
        body += data
        offset += len(data)
    ident = b"\x7fELF" + bytes([elfclass, data_enc, 1, 0]) + b"\0" * 8
    header = ident + struct.pack(
        end + "HHIQQQIHHHHHH",
        etype,
        machine,
        1,
        entry,
        phoff,
        0,  # no section headers
        0,
        ehsize,
        phentsize,
        len(segments),
        64,
        0,
        0,
    )
    return header + phdrs + body


CODE = bytes.fromhex("9302a00073001000") + b"\x13\x00\x00\x00" * 2  # li t0,10; ebreak; nops


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def linux_image(image_size: int, body: int = 0x100) -> bytes:
    hdr = bytearray(max(body, 64))
    hdr[0:4] = b"MZ\x13\x4a"  # EFI stub's first instruction pair, as real kernels have
    struct.pack_into("<QQQ", hdr, 8, 0x200000, image_size, 0)
    hdr[0x30:0x38] = b"RISCV\0\0\0"
    hdr[0x38:0x3C] = b"RSC\x05"
    return bytes(hdr)


# ------------------------------------------------------------------------- ELF


def test_elf_segments_loaded_at_paddr_with_bss_zeroed(tmp_path) -> None:
    data = b"\xaa" * 24
    elf = make_elf(
        [
            {"paddr": BASE, "data": CODE},
            {"paddr": BASE + 0x2000, "data": data, "memsz": 0x100, "flags": PF_R | PF_W},
        ],
        entry=BASE,
    )
    ram = FakeRAM(fill=0xFF)  # not zero, so the zero fill is observable
    img = load_image(write(tmp_path, "fw.elf", elf), ram, 0x8020_0000, what="firmware")
    assert img == LoadedImage(entry=BASE, low=BASE, high=BASE + 0x2100, kind="elf")
    assert ram.read(BASE, len(CODE)) == CODE
    assert ram.read(BASE + 0x2000, 24) == data
    assert ram.read(BASE + 0x2000 + 24, 0x100 - 24) == bytes(0x100 - 24)
    assert ram.read(BASE + 0x2100, 4) == b"\xff" * 4  # nothing past memsz
    assert ram.read(BASE + 0x1000, 4) == b"\xff" * 4  # gap between segments untouched


def test_elf_entry_translated_from_virtual(tmp_path) -> None:
    """A kernel linked high (vaddr) but loaded low (paddr): entry becomes physical."""
    vbase = 0xFFFF_FFFF_8000_0000
    elf = make_elf(
        [
            {"paddr": BASE + 0x20_0000, "vaddr": vbase, "data": CODE},
            {
                "paddr": BASE + 0x40_0000,
                "vaddr": vbase + 0x20_0000,
                "data": b"d" * 8,
                "flags": PF_R | PF_W,
            },
        ],  # fmt: skip
        entry=vbase + 4,
    )
    img = load_image(write(tmp_path, "vmlinux", elf), FakeRAM(), BASE, what="kernel")
    assert img.entry == BASE + 0x20_0004
    assert (img.low, img.high) == (BASE + 0x20_0000, BASE + 0x40_0008)


def test_elf_entry_not_translated_for_non_exec_segment(tmp_path) -> None:
    elf = make_elf(
        [{"paddr": BASE, "vaddr": 0x1000, "data": CODE, "flags": PF_R}],
        entry=0x1004,
    )
    img = load_image(write(tmp_path, "a.elf", elf), FakeRAM(), BASE, what="kernel")
    assert img.entry == 0x1004  # as QEMU: only executable segments translate the entry


def test_elf_skips_non_load_and_empty_segments(tmp_path) -> None:
    elf = make_elf(
        [
            {"paddr": 0, "data": b"note", "type": PT_NOTE},
            {"paddr": 0x1000, "data": b"", "memsz": 0},
            {"paddr": BASE, "data": CODE},
        ],
        entry=BASE,
    )
    img = load_image(write(tmp_path, "a.elf", elf), FakeRAM(), BASE, what="kernel")
    assert (img.low, img.high) == (BASE, BASE + len(CODE))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"elfclass": 1}, "32-bit ELF"),
        ({"data_enc": 2}, "big-endian"),
        ({"machine": EM_X86_64}, "EM_X86_64, not RISC-V"),
        ({"etype": ET_DYN}, r"not an executable ELF \(type ET_DYN\)"),
    ],
)
def test_elf_wrong_kind(tmp_path, kwargs, message) -> None:
    elf = make_elf([{"paddr": BASE, "data": CODE}], entry=BASE, **kwargs)
    path = write(tmp_path, "bad.elf", elf)
    with pytest.raises(ImageError, match=message) as e:
        load_image(path, FakeRAM(), BASE, what="kernel")
    assert path in str(e.value) and "\n" not in str(e.value)


def test_elf_segment_outside_ram(tmp_path) -> None:
    ram = FakeRAM(16 * MiB)
    elf = make_elf([{"paddr": BASE + 16 * MiB - 4, "data": CODE}], entry=BASE)
    with pytest.raises(ImageError, match="segment at 0x80fffffc-0x8100000c outside RAM"):
        load_image(write(tmp_path, "a.elf", elf), ram, BASE, what="kernel")
    elf = make_elf([{"paddr": 0x1000, "data": CODE}], entry=0x1000)
    with pytest.raises(ImageError, match="outside RAM"):
        load_image(write(tmp_path, "b.elf", elf), ram, BASE, what="kernel")
    assert ram.writes == []  # nothing half-loaded


def test_elf_bigger_than_ram(tmp_path) -> None:
    elf = make_elf([{"paddr": BASE, "data": CODE, "memsz": 200 * MiB}], entry=BASE)
    with pytest.raises(ImageError, match="is 200 MiB but the machine has 128 MiB of RAM"):
        load_image(write(tmp_path, "big.elf", elf), FakeRAM(), BASE, what="kernel")


def test_elf_no_loadable_segments(tmp_path) -> None:
    elf = make_elf([{"paddr": 0, "data": b"n", "type": PT_NOTE}], entry=BASE)
    with pytest.raises(ImageError, match="no loadable"):
        load_image(write(tmp_path, "a.elf", elf), FakeRAM(), BASE, what="kernel")


def test_elf_truncated(tmp_path) -> None:
    elf = make_elf([{"paddr": BASE, "data": CODE * 8}], entry=BASE)
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(write(tmp_path, "cut.elf", elf[:-16]), FakeRAM(), BASE, what="kernel")
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(write(tmp_path, "hdr.elf", elf[:40]), FakeRAM(), BASE, what="kernel")
    with pytest.raises(ImageError, match="truncated|corrupt"):
        load_image(write(tmp_path, "id.elf", elf[:10]), FakeRAM(), BASE, what="kernel")


def test_elf_filesz_larger_than_memsz(tmp_path) -> None:
    elf = make_elf([{"paddr": BASE, "data": CODE, "memsz": 4}], entry=BASE)
    with pytest.raises(ImageError, match="corrupt"):
        load_image(write(tmp_path, "a.elf", elf), FakeRAM(), BASE, what="kernel")


GCC = shutil.which("riscv64-unknown-elf-gcc")


@pytest.mark.skipif(GCC is None, reason="riscv64-unknown-elf-gcc not installed")
def test_elf_from_real_toolchain(tmp_path) -> None:
    assert GCC is not None
    src = tmp_path / "start.S"
    src.write_text(
        ".section .text\n.globl _start\n_start:\n  la t0, buf\n  j _start\n"
        ".section .bss\nbuf: .space 4096\n"
    )
    lds = tmp_path / "link.ld"
    lds.write_text(
        "ENTRY(_start)\nSECTIONS {\n  . = 0x80000000;\n  .text : { *(.text) }\n"
        "  .bss : { *(.bss) }\n}\n"
    )
    out = tmp_path / "prog.elf"
    subprocess.run(
        [GCC, "-march=rv64gc", "-mabi=lp64d", "-nostdlib", "-static", "-T", str(lds),
         "-o", str(out), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    ram = FakeRAM(fill=0x55)
    img = load_image(str(out), ram, BASE, what="kernel")
    assert img.kind == "elf" and img.entry == BASE and img.low == BASE
    assert img.high >= BASE + 4096  # the .bss is part of the footprint
    assert ram.read(BASE, 4) != b"\x55" * 4


REAL_ELFS = [  # Debian's qemu-system-data and u-boot-qemu, when installed
    ("/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.elf", 0x8000_0000),
    ("/usr/lib/u-boot/qemu-riscv64_smode/uboot.elf", 0x8020_0000),
]


@pytest.mark.parametrize("path,entry", REAL_ELFS)
def test_real_firmware_elf(path, entry) -> None:
    if not Path(path).is_file():
        pytest.skip(f"{path} not installed")
    img = load_image(path, FakeRAM(), BASE, what="firmware")
    assert (img.kind, img.entry, img.low) == ("elf", entry, entry)
    assert entry < img.high < entry + 2 * MiB


# ------------------------------------------------------------------------- raw


def test_raw_image_loaded_at_default(tmp_path) -> None:
    ram = FakeRAM()
    img = load_image(write(tmp_path, "fw.bin", CODE), ram, BASE, what="firmware")
    assert img == LoadedImage(entry=BASE, low=BASE, high=BASE + len(CODE), kind="raw")
    assert ram.read(BASE, len(CODE)) == CODE


def test_linux_image_reserves_image_size(tmp_path) -> None:
    ram = FakeRAM()
    data = linux_image(image_size=0xCE8000)
    img = load_image(write(tmp_path, "Image", data), ram, 0x8020_0000, what="kernel")
    assert img == LoadedImage(0x8020_0000, 0x8020_0000, 0x8020_0000 + 0xCE8000, "linux-image")
    assert ram.read(0x8020_0000, len(data)) == data


@pytest.mark.parametrize("linux", [False, True])
def test_large_image_read_straight_into_guest_ram(tmp_path, linux) -> None:
    """A file past its first 4 KiB is read into real guest RAM in place: every byte
    lands where it should, none after it."""
    from pyhv.memory.ram import GuestRAM

    body = os.urandom(300 * KiB + 3)
    data = linux_image(image_size=0x60000, body=0x1000) + body if linux else body
    ram = GuestRAM(BASE, 4 * MiB)
    try:
        ram.write_bytes(BASE + len(data), b"\xAA" * 8)  # what follows stays untouched
        img = load_image(write(tmp_path, "img", data), ram, BASE, what="kernel")
        assert img.high == BASE + max(len(data), 0x60000 if linux else 0)
        assert img.kind == ("linux-image" if linux else "raw")
        assert ram.read_bytes(BASE, len(data)) == data
        assert ram.read_bytes(BASE + len(data), 8) == b"\xAA" * 8
    finally:
        ram.close()


def test_linux_image_file_larger_than_image_size(tmp_path) -> None:
    data = linux_image(image_size=0x10, body=0x400)
    img = load_image(write(tmp_path, "Image", data), FakeRAM(), BASE, what="kernel")
    assert img.high == BASE + 0x400


def test_linux_image_reserved_size_must_fit(tmp_path) -> None:
    data = linux_image(image_size=15 * MiB)
    with pytest.raises(ImageError, match="does not fit in RAM"):
        load_image(write(tmp_path, "Image", data), FakeRAM(16 * MiB), BASE + 2 * MiB, what="k")


def test_linux_image_must_be_2mib_aligned(tmp_path) -> None:
    data = linux_image(image_size=0x1000)
    with pytest.raises(ImageError, match="2 MiB-aligned"):
        load_image(write(tmp_path, "Image", data), FakeRAM(), BASE + 0x1000, what="kernel")


@pytest.mark.skipif(
    not Path("/work/shared/guests/Image").is_file(), reason="test guest Image not present"
)
def test_real_linux_image() -> None:
    ram = FakeRAM()
    img = load_image("/work/shared/guests/Image", ram, 0x8020_0000, what="kernel")
    assert img.kind == "linux-image"
    assert (img.entry, img.low, img.high) == (0x8020_0000, 0x8020_0000, 0x80EE_8000)


def test_raw_bigger_than_ram(tmp_path) -> None:
    p = tmp_path / "huge.bin"
    with open(p, "wb") as f:
        f.write(CODE)
        f.truncate(200 * MiB)  # sparse: costs no disk
    with pytest.raises(ImageError) as e:
        load_image(str(p), FakeRAM(), BASE, what="kernel")
    assert str(e.value) == f"kernel '{p}' is 200 MiB but the machine has 128 MiB of RAM"


def test_raw_does_not_fit_after_default_addr(tmp_path) -> None:
    data = CODE * (2 * MiB // len(CODE))
    with pytest.raises(ImageError, match="does not fit in RAM.*0x80300000-0x80500000"):
        load_image(write(tmp_path, "a.bin", data), FakeRAM(4 * MiB), BASE + 3 * MiB, what="k")


def test_raw_default_addr_outside_ram(tmp_path) -> None:
    with pytest.raises(ImageError, match="does not fit in RAM"):
        load_image(write(tmp_path, "a.bin", CODE), FakeRAM(), 0x1000, what="kernel")


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("run.sh", b"#!/bin/sh\necho hi\n", "is a script"),
        ("Image.gz", gzip.compress(b"\0" * 1000), "gzip-compressed"),
        ("a.zip", b"PK\x03\x04" + b"\0" * 60, "zip archive"),
        ("k.xz", b"\xfd7zXZ\x00" + b"\0" * 60, "xz-compressed"),
        ("k.bz2", b"BZh9" + b"\0" * 60, "bzip2-compressed"),
        ("k.zst", b"\x28\xb5\x2f\xfd" + b"\0" * 60, "zstd-compressed"),
        ("uImage", b"\x27\x05\x19\x56" + b"\0" * 60, "U-Boot uImage"),
        ("x.dtb", b"\xd0\x0d\xfe\xed" + b"\0" * 60, "device tree blob"),
        ("rd.cpio", b"070701" + b"0" * 100, "cpio archive"),
        ("README", b"This is a kernel, honest.\n" * 10, "text file"),
        ("arm64", b"\0" * 0x38 + b"ARM\x64" + b"\0" * 8, "arm64 Linux Image"),
        ("bzImage", b"\0" * 0x202 + b"HdrS" + b"\0" * 8, "x86 Linux bzImage"),
    ],
)
def test_not_an_image(tmp_path, name, data, message) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(ImageError, match=message) as e:
        load_image(path, FakeRAM(), BASE, what="kernel")
    assert str(e.value).startswith(f"kernel '{path}' ")


def test_arbitrary_binary_is_allowed(tmp_path) -> None:
    data = bytes(range(256)) * 16
    img = load_image(write(tmp_path, "blob", data), FakeRAM(), BASE, what="firmware")
    assert img.kind == "raw" and img.high == BASE + len(data)


# ------------------------------------------------------------------- file errors


@pytest.mark.parametrize("fn", ["image", "initrd"])
def test_missing_file(tmp_path, fn) -> None:
    path = str(tmp_path / "nope.bin")
    with pytest.raises(ImageError, match="does not exist") as e:
        _load(fn, path)
    assert path in str(e.value)


@pytest.mark.parametrize("fn", ["image", "initrd"])
def test_directory(tmp_path, fn) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        _load(fn, str(tmp_path))


@pytest.mark.parametrize("fn", ["image", "initrd"])
def test_not_regular_file(tmp_path, fn) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        _load(fn, str(fifo))


@pytest.mark.parametrize("fn", ["image", "initrd"])
def test_empty_file(tmp_path, fn) -> None:
    with pytest.raises(ImageError, match="is empty"):
        _load(fn, write(tmp_path, "empty", b""))


@pytest.mark.parametrize("fn", ["image", "initrd"])
def test_broken_symlink(tmp_path, fn) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(ImageError, match="does not exist"):
        _load(fn, str(link))


@pytest.mark.parametrize("fn", ["image", "initrd"])
def test_unreadable_file(tmp_path, fn, monkeypatch) -> None:
    path = write(tmp_path, "secret.bin", CODE)
    os.chmod(path, 0)
    if os.geteuid() == 0:  # root reads anything: make open() fail as it would for a user

        def deny(*_a, **_k):
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr(loader, "open", deny, raising=False)
    try:
        with pytest.raises(ImageError, match="cannot be read: permission denied"):
            _load(fn, path)
    finally:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def _load(fn: str, path: str):
    if fn == "image":
        return load_image(path, FakeRAM(), BASE, what="kernel")
    return load_initrd(path, FakeRAM(), BASE + 2 * MiB)


# --------------------------------------------------------------------- overlap


def test_check_overlap() -> None:
    fw = LoadedImage(BASE, BASE, BASE + 0x48000, "raw")
    kernel = LoadedImage(BASE + 0x20_0000, BASE + 0x20_0000, BASE + 0xEE_8000, "linux-image")
    check_overlap(fw, kernel, ("firmware", "kernel"))
    check_overlap(kernel, (BASE + 0xEE_8000, BASE + 0xF0_0000), ("kernel", "initrd"))  # adjacent
    check_overlap(kernel, (BASE + 0x30_0000, BASE + 0x30_0000), ("kernel", "empty"))
    with pytest.raises(ImageError) as e:
        check_overlap(kernel, (0x8080_0000, 0x8100_0000), ("kernel", "dtb"))
    assert str(e.value) == ("kernel (0x80200000-0x80ee8000) overlaps dtb (0x80800000-0x81000000)")
    big_fw = LoadedImage(BASE, BASE, BASE + 0x30_0000, "elf")
    with pytest.raises(ImageError, match="firmware .* overlaps kernel"):
        check_overlap(big_fw, kernel, ("firmware", "kernel"))
    with pytest.raises(ImageError):
        check_overlap((0, 10), (9, 20), ("a", "b"))


# ---------------------------------------------------------------------- initrd


RD = bytes(range(256)) * 40


def test_initrd_qemu_placement_128m(tmp_path) -> None:
    ram = FakeRAM()
    kernel = LoadedImage(0x8020_0000, 0x8020_0000, 0x80EE_8000, "linux-image")
    start, end = load_initrd(write(tmp_path, "rd", RD), ram, kernel)
    assert (start, end) == (0x8420_0000, 0x8420_0000 + len(RD))  # as QEMU 7.2 with OpenSBI
    assert ram.read(start, len(RD)) == RD
    # The same with the end address and an explicit entry.
    path = write(tmp_path, "rd", RD)
    start, _ = load_initrd(path, ram, kernel.high, kernel_entry=kernel.entry)
    assert start == 0x8420_0000


def test_initrd_qemu_placement_bios_none(tmp_path) -> None:
    """-bios none: kernel at DRAM_BASE, initrd at 0x84000000 (as the QEMU 7.2 dump)."""
    kernel = LoadedImage(BASE, BASE, BASE + 0xCE8000, "linux-image")
    assert load_initrd(write(tmp_path, "rd", RD), FakeRAM(), kernel)[0] == 0x8400_0000


@pytest.mark.parametrize(
    "ram,expected",
    [(64 * MiB, 0x8220_0000), (256 * MiB, 0x8820_0000), (2 * GiB, 0x8820_0000)],
)
def test_initrd_offset_capped_at_128m(tmp_path, ram, expected) -> None:
    assert initrd_address(ram, 0x8020_0000) == expected
    path = write(tmp_path, "rd", RD)
    start, _ = load_initrd(path, FakeRAM(ram), 0x80EE_8000, kernel_entry=0x8020_0000)
    assert start == expected


def test_initrd_from_kernel_end_only(tmp_path) -> None:
    start, _ = load_initrd(write(tmp_path, "rd", RD), FakeRAM(), 0x80EE_8123)
    assert start == 0x80EE_9000 + 64 * MiB  # page-aligned end + min(ram/2, 128 MiB)


def test_initrd_does_not_fit(tmp_path) -> None:
    p = tmp_path / "big.cpio"
    with open(p, "wb") as f:
        f.truncate(40 * MiB)
    ram = FakeRAM(64 * MiB)
    with pytest.raises(ImageError, match="does not fit in RAM: it goes at 0x82200000"):
        load_initrd(str(p), ram, LoadedImage(0x8020_0000, 0x8020_0000, 0x8030_0000, "raw"))
    assert ram.writes == []
    with pytest.raises(ImageError, match="is 40 MiB but the machine has 32 MiB of RAM"):
        load_initrd(str(p), FakeRAM(32 * MiB), 0x8030_0000, kernel_entry=0x8020_0000)


def test_initrd_inside_kernel(tmp_path) -> None:
    kernel = LoadedImage(0x8020_0000, 0x8020_0000, 0x8020_0000 + 100 * MiB, "linux-image")
    with pytest.raises(ImageError, match="the kernel .* overlaps initrd"):
        load_initrd(write(tmp_path, "rd", RD), FakeRAM(), kernel)


def test_initrd_any_content(tmp_path) -> None:
    gz = gzip.compress(b"070701" + b"0" * 200)
    start, end = load_initrd(write(tmp_path, "rd.gz", gz), FakeRAM(), BASE, kernel_entry=BASE)
    assert end - start == len(gz)


# ------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    "text,value",
    [
        ("128M", 128 * MiB),
        ("128m", 128 * MiB),
        ("1G", GiB),
        ("1g", GiB),
        ("512", 512 * MiB),
        ("64m", 64 * MiB),
        ("2048K", 2 * MiB),
        ("2048k", 2 * MiB),
        ("1.5G", 1536 * MiB),
        ("0.5M", 512 * KiB),
        ("1T", 1 << 40),
        ("128MiB", 128 * MiB),
        ("128MB", 128 * MiB),
        (" 256M ", 256 * MiB),
        ("16777216B", 16 * MiB),
        ("1000K", 1000 * KiB),  # a multiple of 8 KiB: unchanged
        ("1001K", 1008 * KiB),  # rounded up to 8 KiB, as QEMU does
        ("100B", 8 * KiB),
    ],
)
def test_parse_size(text, value) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text",
    ["12Q", "", "M", "0", "0M", "-1", "-128M", "1.5", "abc", "128 M B", "1e3", "0x100", "128iB",
     "12MM", "1,5G"],
)  # fmt: skip
def test_parse_size_rejects(text) -> None:
    with pytest.raises(ConfigError) as e:
        parse_size(text)
    assert f"invalid memory size '{text}'" in str(e.value)
