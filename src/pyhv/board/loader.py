"""Putting guest images (firmware, kernel, initrd) into guest RAM, the way QEMU does.

Why this is its own module: every image the user names is untrusted input, and a wrong
one (a compressed kernel, an x86 binary, a file too big for the RAM given) must stop the
VM before it starts, with one line that names the file and the problem -- not become a
guest that silently jumps into garbage. So everything is checked before the first byte
is written to guest RAM.

What is accepted, as in QEMU 7.2 (hw/riscv/boot.c, hw/core/loader.c):

- ELF64 little-endian RISC-V executables: each ``PT_LOAD`` segment is copied to its
  *physical* address (``p_paddr``) and zero-filled up to ``p_memsz``. The entry is
  ``e_entry``, translated to physical when it lies in an executable segment whose
  ``p_vaddr`` differs from ``p_paddr`` (QEMU's ``load_elf`` rule).
- anything else is a raw image loaded at the caller's default address. A Linux RISC-V
  ``Image`` (magic ``RISCV\\0\\0\\0`` at 0x30, ``RSC\\x05`` at 0x38) is raw too, but it
  reserves its header's ``image_size`` (BSS and early page tables included), so the
  overlap checks see the memory the kernel will really use.
- the initrd is placed at ``kernel_entry + min(ram_size / 2, 128 MiB)`` (QEMU's
  ``riscv_load_initrd``).

The RAM this writes into is anything with ``base``, ``size`` and ``write_bytes(paddr,
data)`` (see :class:`GuestMemory`), so tests can use a plain ``bytearray`` wrapper.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from typing import BinaryIO, Literal, Protocol

from ..errors import ConfigError, ImageError
from ..lightdata import dataclass

__all__ = [
    "GuestMemory",
    "LoadedImage",
    "load_image",
    "check_overlap",
    "load_initrd",
    "initrd_address",
    "parse_size",
]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

_INITRD_MAX_OFFSET = 128 * MiB  # QEMU: "for boards with 256MB of RAM or more ... 128MB"
_LINUX_ALIGN = 2 * MiB  # RV64 kernels must start on a PMD (2 MiB) boundary
_ZERO_CHUNK = 1 * MiB

ImageKind = Literal["elf", "raw", "linux-image"]


class GuestMemory(Protocol):
    """The part of guest RAM the loader needs (pyhv.memory.ram.GuestRAM fits)."""

    base: int
    size: int

    def write_bytes(self, paddr: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class LoadedImage:
    """Where an image went: ``[low, high)`` is the guest-physical footprint."""

    entry: int
    low: int
    high: int  # exclusive
    kind: ImageKind


# ---------------------------------------------------------------------------- helpers


def _fmt_size(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            text = f"{n / unit:.1f}".removesuffix(".0")
            return f"{text} {name}"
    return f"{n} bytes"


def _label(what: str, path: str) -> str:
    return f"{what} '{path}'"


def _open_checked(path: str, what: str) -> tuple[BinaryIO, int]:
    """Open ``path`` for reading after checking it is a non-empty regular file."""
    label = _label(what, path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{label} does not exist") from None
    except PermissionError:
        raise ImageError(f"{label} cannot be read: permission denied") from None
    except OSError as e:
        raise ImageError(f"{label} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{label} is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{label} is not a regular file")
    if st.st_size == 0:
        raise ImageError(f"{label} is empty")
    try:
        f = open(path, "rb")  # closed by the caller (``with f:``)
    except PermissionError:
        raise ImageError(f"{label} cannot be read: permission denied") from None
    except OSError as e:
        raise ImageError(f"{label} cannot be read: {e.strerror or e}") from None
    return f, st.st_size


def _read_all(f: BinaryIO, label: str) -> bytes:
    try:
        return f.read()
    except OSError as e:
        raise ImageError(f"{label} cannot be read: {e.strerror or e}") from None


def _ram_end(ram: GuestMemory) -> int:
    return ram.base + ram.size


def _check_fits(label: str, low: int, high: int, ram: GuestMemory) -> None:
    """Raise unless ``[low, high)`` lies inside guest RAM."""
    size = high - low
    if size > ram.size:
        raise ImageError(
            f"{label} is {_fmt_size(size)} but the machine has {_fmt_size(ram.size)} of RAM"
        )
    if low < ram.base or high > _ram_end(ram):
        raise ImageError(
            f"{label} does not fit in RAM: it would occupy {low:#x}-{high:#x} but "
            f"RAM is {ram.base:#x}-{_ram_end(ram):#x}"
        )


def _write_zeros(ram: GuestMemory, paddr: int, length: int) -> None:
    while length > 0:
        n = min(length, _ZERO_CHUNK)
        ram.write_bytes(paddr, bytes(n))
        paddr += n
        length -= n


# Signatures of files that are certainly not a bootable raw RISC-V image, with the hint
# given to the user. A raw image may otherwise hold any bytes at all.
_NOT_AN_IMAGE: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x1f\x8b", "is gzip-compressed; decompress it first (pyhv loads ELF or raw images)"),
    (0, b"BZh", "is bzip2-compressed; decompress it first (pyhv loads ELF or raw images)"),
    (0, b"\xfd7zXZ\x00", "is xz-compressed; decompress it first (pyhv loads ELF or raw images)"),
    (0, b"\x28\xb5\x2f\xfd", "is zstd-compressed; decompress it first"),
    (0, b"\x04\x22\x4d\x18", "is lz4-compressed; decompress it first"),
    (0, b"\x89LZO", "is lzo-compressed; decompress it first"),
    (0, b"PK\x03\x04", "is a zip archive, not a kernel or firmware image"),
    (0, b"\x27\x05\x19\x56", "is a U-Boot uImage, which pyhv does not load; use the raw image"),
    (0, b"\xd0\x0d\xfe\xed", "is a device tree blob, not a kernel or firmware image"),
    (0, b"070701", "is a cpio archive (an initrd?), not a kernel or firmware image"),
    (0, b"070702", "is a cpio archive (an initrd?), not a kernel or firmware image"),
    (0, b"#!", "is a script (it starts with '#!'), not a kernel or firmware image"),
    (0x38, b"ARM\x64", "is an arm64 Linux Image, not a RISC-V one"),
    (0x202, b"HdrS", "is an x86 Linux bzImage, not a RISC-V kernel"),
)
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}


def _not_an_image_reason(data: bytes) -> str | None:
    for offset, magic, reason in _NOT_AN_IMAGE:
        if data[offset : offset + len(magic)] == magic:
            return reason
    head = data[:4096]
    if len(head) >= 4 and all(b in _TEXT_BYTES for b in head):
        return "looks like a text file, not a kernel or firmware image"
    return None


def _is_linux_image(data: bytes) -> bool:
    return data[0x30:0x38] == b"RISCV\0\0\0" and data[0x38:0x3C] == b"RSC\x05"


# ------------------------------------------------------------------------------- ELF

_ELF_MAGIC = b"\x7fELF"
_EI_CLASS, _EI_DATA = 4, 5
_ELFCLASS64, _ELFDATA2LSB = 2, 1
# ELF64 (System V gABI): the file header after e_ident, and a program header. Read with
# struct rather than a library: it is all the loader needs, and pyelftools' import
# (its DWARF and construct modules) cost ~12 ms of every start.
_EHDR = struct.Struct("<16xHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_PT_LOAD, _PF_X, _ET_EXEC, _EM_RISCV = 1, 1, 2, 243
_MACHINES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
             40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
             258: "EM_LOONGARCH"}
_ELF_TYPES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}


def _load_elf(f: BinaryIO, label: str, ram: GuestMemory) -> LoadedImage:
    ident = f.read(16)
    f.seek(0)
    if len(ident) < 16:
        raise ImageError(f"{label} is a truncated ELF file")
    if ident[_EI_CLASS] != _ELFCLASS64:
        bits = {1: "a 32-bit"}.get(ident[_EI_CLASS], "an unknown-class")
        raise ImageError(f"{label} is {bits} ELF; pyhv runs RV64 (ELF64) images")
    if ident[_EI_DATA] != _ELFDATA2LSB:
        raise ImageError(f"{label} is a big-endian ELF; RISC-V images are little-endian")
    try:
        header = f.read(_EHDR.size)
        if len(header) < _EHDR.size:
            raise ImageError(f"{label} is a truncated ELF file")
        etype, machine, _version, e_entry, phoff, _shoff, _flags, _ehsize, phentsize, \
            phnum = _EHDR.unpack(header)[:10]
        if machine != _EM_RISCV:
            name = _MACHINES.get(machine, f"machine {machine}")
            raise ImageError(f"{label} is an ELF for {name}, not RISC-V (EM_RISCV)")
        if etype != _ET_EXEC:
            kind = _ELF_TYPES.get(etype, str(etype))
            raise ImageError(
                f"{label} is not an executable ELF (type {kind}); link it as a static, "
                "non-PIE executable"
            )
        if phnum and phentsize < _PHDR.size:
            raise ImageError(f"{label} is a corrupt ELF file: program headers too small")
        if phnum == 0xFFFF:  # PN_XNUM: more headers than fit the field (never a kernel)
            raise ImageError(f"{label} is a corrupt ELF file: too many program headers")
        segments = []
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            raw = f.read(_PHDR.size)
            if len(raw) < _PHDR.size:
                raise ImageError(f"{label} is a truncated ELF: program headers are missing")
            ptype, pflags, offset, vaddr, paddr, filesz, memsz, _align = _PHDR.unpack(raw)
            if ptype != _PT_LOAD or memsz == 0:
                continue
            if filesz > memsz:
                raise ImageError(
                    f"{label} is a corrupt ELF: a segment's file size exceeds its memory size"
                )
            f.seek(offset)
            data = f.read(filesz)
            if len(data) != filesz:
                raise ImageError(f"{label} is a truncated ELF: segment data is missing")
            segments.append((paddr, vaddr, memsz, pflags, data))
    except ImageError:
        raise
    except (struct.error, ValueError, OSError, OverflowError) as e:
        raise ImageError(f"{label} is a corrupt ELF file: {e}") from None
    if not segments:
        raise ImageError(f"{label} has no loadable (PT_LOAD) segments")

    low = min(s[0] for s in segments)
    high = max(s[0] + s[2] for s in segments)
    if high - low > ram.size:
        raise ImageError(
            f"{label} is {_fmt_size(high - low)} but the machine has {_fmt_size(ram.size)} of RAM"
        )
    for paddr, _vaddr, memsz, _flags, _data in segments:
        if paddr < ram.base or paddr + memsz > _ram_end(ram):
            raise ImageError(
                f"{label} has a segment at {paddr:#x}-{paddr + memsz:#x} outside RAM "
                f"({ram.base:#x}-{_ram_end(ram):#x})"
            )

    entry = e_entry
    for paddr, vaddr, _memsz, flags, data in segments:
        if flags & _PF_X and vaddr != paddr and vaddr <= e_entry < vaddr + len(data):
            entry = e_entry - vaddr + paddr
            break

    for paddr, _vaddr, memsz, _flags, data in segments:
        if data:
            ram.write_bytes(paddr, data)
        _write_zeros(ram, paddr + len(data), memsz - len(data))
    return LoadedImage(entry=entry, low=low, high=high, kind="elf")


# ------------------------------------------------------------------------ public API


def load_image(path: str, ram: GuestMemory, default_addr: int, *, what: str) -> LoadedImage:
    """Load an ELF or raw image into ``ram`` and say where it went.

    ``what`` names the image in error messages ("kernel", "firmware", ...). A raw image
    goes to ``default_addr`` and is entered there. Raises :class:`ImageError` with a
    one-line message for every unusable file; nothing is written to RAM in that case.
    """
    label = _label(what, path)
    f, file_size = _open_checked(path, what)
    with f:
        magic = f.read(4)
        f.seek(0)
        if magic == _ELF_MAGIC:
            return _load_elf(f, label, ram)
        if file_size > ram.size:
            raise ImageError(
                f"{label} is {_fmt_size(file_size)} but the machine has "
                f"{_fmt_size(ram.size)} of RAM"
            )
        # the header decides; the rest goes straight into guest RAM where it can
        # (a 13 MiB kernel: one copy and ~10 ms fewer than reading it into bytes first)
        data = _read_all(f, label) if not hasattr(ram, "read_file_into") else f.read(4096)
        if not data:
            raise ImageError(f"{label} is empty")
        reason = _not_an_image_reason(data)
        if reason is not None:
            raise ImageError(f"{label} {reason}")

        kind: ImageKind = "raw"
        footprint = file_size if len(data) < file_size else len(data)
        if _is_linux_image(data):
            kind = "linux-image"
            (image_size,) = struct.unpack_from("<Q", data, 16)
            footprint = max(footprint, image_size)
            if default_addr % _LINUX_ALIGN:
                raise ImageError(
                    f"{label} is a Linux Image and must be loaded at a 2 MiB-aligned address, "
                    f"not {default_addr:#x}"
                )
        _check_fits(label, default_addr, default_addr + footprint, ram)
        if len(data) < file_size:
            f.seek(0)
            err: OSError | None = None
            try:
                got = ram.read_file_into(default_addr, f, file_size)  # type: ignore[attr-defined]
            except OSError as e:
                got, err = -1, e
            if got != file_size:  # a read error or a file cut short as it was read
                ram.write_bytes(default_addr, bytes(file_size))
                why = "it changed while it was read"
                if err is not None:
                    why = err.strerror or str(err)
                raise ImageError(f"{label} cannot be read: {why}")
        else:
            ram.write_bytes(default_addr, data)
    return LoadedImage(
        entry=default_addr, low=default_addr, high=default_addr + footprint, kind=kind
    )


def _as_range(r: LoadedImage | tuple[int, int]) -> tuple[int, int]:
    if isinstance(r, LoadedImage):
        return r.low, r.high
    start, end = r
    return start, end


def check_overlap(
    a: LoadedImage | tuple[int, int],
    b: LoadedImage | tuple[int, int],
    names: tuple[str, str],
) -> None:
    """Raise :class:`ImageError` if ranges ``a`` and ``b`` (``[start, end)``) overlap.

    ``names`` label them in the message, e.g. ``("kernel 'Image'", "firmware")``.
    Empty ranges overlap nothing.
    """
    a0, a1 = _as_range(a)
    b0, b1 = _as_range(b)
    if a0 < a1 and b0 < b1 and a0 < b1 and b0 < a1:
        raise ImageError(f"{names[0]} ({a0:#x}-{a1:#x}) overlaps {names[1]} ({b0:#x}-{b1:#x})")


def initrd_address(ram_size: int, kernel_entry: int) -> int:
    """QEMU 7.2's initrd start: far enough above the kernel that unpacking it leaves the
    initrd alone (half of RAM), but no more than 128 MiB up so it stays in low memory."""
    return kernel_entry + min(ram_size // 2, _INITRD_MAX_OFFSET)


def load_initrd(
    path: str,
    ram: GuestMemory,
    kernel_end: int | LoadedImage,
    *,
    kernel_entry: int | None = None,
) -> tuple[int, int]:
    """Load the initrd above the kernel; return ``(start, end)``, end exclusive.

    QEMU 7.2 measures from the kernel's *entry*: ``start = kernel_entry + min(ram_size /
    2, 128 MiB)``. Pass the kernel's :class:`LoadedImage` (its ``entry``, ``low`` and
    ``high`` are used) or its end address plus ``kernel_entry=`` to get exactly QEMU's
    address. Given only the end address, the same distance is measured from the
    page-aligned kernel end instead (a little higher than QEMU, never inside the kernel).

    An initrd that would not fit in RAM, or would start inside the kernel, is refused
    with :class:`ImageError`. The contents are not interpreted (cpio, gzip-compressed
    cpio, anything the kernel understands). Whether it overlaps the device tree is the
    caller's check (the DTB's place is known only once its size is).
    """
    if isinstance(kernel_end, LoadedImage):
        kernel_low, kernel_high = kernel_end.low, kernel_end.high
        entry: int | None = kernel_end.entry if kernel_entry is None else kernel_entry
    else:
        kernel_high = kernel_end
        entry = kernel_entry
        kernel_low = kernel_entry if kernel_entry is not None else kernel_end
    if entry is not None:
        start = initrd_address(ram.size, entry)
    else:
        start = initrd_address(ram.size, (kernel_high + 0xFFF) & ~0xFFF)

    label = _label("initrd", path)
    f, file_size = _open_checked(path, "initrd")
    end = start + file_size
    with f:
        if file_size > ram.size:
            raise ImageError(
                f"{label} is {_fmt_size(file_size)} but the machine has "
                f"{_fmt_size(ram.size)} of RAM"
            )
        if start < ram.base or end > _ram_end(ram):
            raise ImageError(
                f"{label} ({_fmt_size(file_size)}) does not fit in RAM: it goes at "
                f"{start:#x} and RAM ends at {_ram_end(ram):#x}; give the machine more memory"
            )
        data = _read_all(f, label)
    if len(data) != file_size:
        raise ImageError(f"{label} changed size while it was being read")
    check_overlap((kernel_low, kernel_high), (start, end), ("the kernel", label))
    ram.write_bytes(start, data)
    return start, end


_SIZE_RE = re.compile(
    r"""^\s*
    (?P<num>[0-9]+(?:\.[0-9]+)?)
    \s*(?P<unit>[bBkKmMgGtT]?)(?P<tail>(?:[iI]?[bB])?)
    \s*$""",
    re.VERBOSE,
)
_UNITS = {"b": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Parse a memory size as QEMU's ``-m`` does; return bytes.

    ``128M``, ``1G``, ``2048K``, ``64m``; a plain number means MiB (``512`` = 512 MiB);
    ``B`` means bytes. Suffixes are binary (K = 1024) and case-insensitive; ``MiB``/``MB``
    are read as ``M``. A fraction needs a suffix (``1.5G``). As QEMU does, the result is
    rounded up to a multiple of 8 KiB. Junk, zero and negative sizes raise
    :class:`ConfigError`.
    """
    s = str(text)
    m = _SIZE_RE.match(s)
    bad = ConfigError(
        f"invalid memory size '{s}' (expected a positive size such as 128M, 1G or 2048K; "
        "a plain number means MiB)"
    )
    if m is None:
        raise bad
    unit = m["unit"].lower()
    if m["tail"] and unit in ("", "b"):
        raise bad  # "128iB", "128BB"
    num = m["num"]
    if "." in num:
        if not unit:
            raise bad
        whole, frac = num.split(".")
        scale = _UNITS[unit]
        value = int(whole) * scale + (int(frac) * scale) // (10 ** len(frac))
    else:
        value = int(num) * (_UNITS[unit] if unit else MiB)
    if value <= 0:
        raise bad
    return (value + 8 * KiB - 1) // (8 * KiB) * (8 * KiB)
