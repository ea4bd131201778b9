"""Loads the JIT's relocatable objects into executable memory, without LLVM.

Every piece of machine code the JIT runs arrives as an ELF64 relocatable object: the
runtime (dispatcher and native interpreter, ~300 KiB, kept in the runtime directory),
each compiled batch of blocks, each object of the code cache. Loading one is small work
for the objects LLVM makes here (x86-64, large code model, static): copy the sections
that occupy memory, fill in the 64-bit absolute addresses the relocations ask for
(jump tables, constant pools, the C library's ``memset`` and ``round``), and find the
functions. Doing it here rather than through LLVM's MCJIT means a run that has its
runtime on disk starts the native interpreter without importing llvmlite (~40 ms, a
dynamic library of ~100 MB): LLVM loads on the compiler's thread while the guest
already runs (compiler.py), and a run served by its code cache needs no LLVM at all.

Memory: chunks mapped read-write while code is copied in, then read-execute (never
both: a page the next object shares is made writable again for the copy, which is
safe as every hart of a process runs on the thread that loads code). Code is never
unloaded, as with MCJIT (a block dropped by a write over its guest code leaves its
machine code in place: it is small, and the code cache holds its bytes anyway).
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Mapping
from typing import NamedTuple

CHUNK = 1 << 20  # bytes mapped at a time (an object larger than this gets its own)
PAGE = mmap.PAGESIZE

# ELF: section types and flags, symbol types, x86-64 relocation types (System V ABI)
_SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS = 2, 4, 8
_SHF_ALLOC = 0x2
_STT_SECTION, _STT_FUNC = 3, 2
R_64, R_PC32, R_PLT32, R_32, R_32S, R_PC64 = 1, 2, 4, 10, 11, 24
_EM_X86_64 = 62

# name, type, flags, address, offset, size, link, info, alignment, entry size
_SECTION = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")  # name, info, other, section, value, size
_RELA = struct.Struct("<QQq")  # offset, info, addend
_U64 = struct.Struct("<Q")


class LoadError(Exception):
    """An object this loader cannot place (not one LLVM makes for this host)."""


class Section(NamedTuple):
    name: str
    kind: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int


class Symbol(NamedTuple):
    name: str
    kind: int  # STT_*
    section: int  # 0: undefined
    value: int
    size: int


class ObjectFile:
    """The parts of an ELF64 little-endian x86-64 relocatable object a loader needs."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise LoadError("not an ELF64 little-endian object")
        machine, = struct.unpack_from("<H", data, 0x12)
        if machine != _EM_X86_64:
            raise LoadError(f"an object for ELF machine {machine}, not x86-64")
        self.data = data
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx][4] if shstrndx < shnum else 0
        self.sections = [Section(self._name(names, r[0]), r[1], r[2], r[4], r[5], r[6],
                                 r[7], max(1, r[8])) for r in raw]
        self.symbols: list[Symbol] = []
        for sec in self.sections:
            if sec.kind == _SHT_SYMTAB:
                strings = self.sections[sec.link].offset
                self.symbols = [
                    Symbol(self._name(strings, n), info & 0xF, shndx, value, size)
                    for n, info, _other, shndx, value, size
                    in _SYMBOL.iter_unpack(data[sec.offset:sec.offset + sec.size])]
                break

    def _name(self, table: int, at: int) -> str:
        data = self.data
        start = table + at
        return data[start:data.index(b"\0", start)].decode()

    def functions(self) -> dict[str, Symbol]:
        """Name -> symbol of every function the object defines."""
        return {s.name: s for s in self.symbols
                if s.kind == _STT_FUNC and s.section and s.size and s.name}


def _libc_address(name: str) -> int:
    """A C library function's address in this process (the JIT's code calls ``memset``
    and libm's rounding functions, as LLVM lowers them; Python links both)."""
    try:
        return ctypes.cast(getattr(_libc, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


_libc = ctypes.CDLL(None, use_errno=True)
_mprotect = _libc.mprotect
_mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_mprotect.restype = ctypes.c_int
_RW = mmap.PROT_READ | mmap.PROT_WRITE
_RX = mmap.PROT_READ | mmap.PROT_EXEC


class CodeHeap:
    """Executable memory that objects are loaded into; ``load`` returns the addresses of
    an object's functions. ``externals`` resolves symbols an object leaves undefined
    (then the C library); each loaded function is known by name for later objects."""

    def __init__(self, externals: Mapping[str, int] | None = None) -> None:
        self.externals: dict[str, int] = dict(externals or {})
        self._maps: list[mmap.mmap] = []  # kept alive: the code is in them
        self._base = 0  # the current chunk's address ...
        self._size = 0  # ... its size
        self._at = 0  # ... and its first free byte
        self._rx_to = 0  # bytes of it made read-execute (whole pages from its start)
        self.loaded_bytes = 0

    def load(self, data: bytes) -> dict[str, int]:
        """Place the object ``data``: its memory sections copied, relocated and made
        executable; returns function name -> address (raises LoadError)."""
        obj = ObjectFile(data)
        placed: dict[int, int] = {}  # section index -> offset in the image
        size = 0
        for i, sec in enumerate(obj.sections):
            # (unwind tables are left out: nothing unwinds through the JIT's code)
            if sec.flags & _SHF_ALLOC and sec.size and sec.name != ".eh_frame":
                size = (size + sec.align - 1) & -sec.align
                placed[i] = size
                size += sec.size
        size = (size + 7) & -8  # (whole 64-bit words: _relocate writes them as such)
        base = self._reserve(size, max((obj.sections[i].align for i in placed), default=1))
        image = bytearray(size)
        for i, off in placed.items():
            sec = obj.sections[i]
            if sec.kind != _SHT_NOBITS:
                image[off:off + sec.size] = data[sec.offset:sec.offset + sec.size]
        addresses = {}
        for sym in obj.symbols:
            if sym.section in placed and sym.kind == _STT_FUNC and sym.name:
                addresses[sym.name] = base + placed[sym.section] + sym.value
        for sec in obj.sections:
            if sec.kind == _SHT_RELA and sec.info in placed:
                self._relocate(obj, sec, image, base, placed, addresses)
        self._write(base, image)
        self.externals.update(addresses)
        self.loaded_bytes += size
        return addresses

    def _relocate(self, obj: ObjectFile, rela: Section, image: bytearray, base: int,
                  placed: dict[int, int], defined: dict[str, int]) -> None:
        target = placed[rela.info]
        symbols = obj.symbols
        where: dict[int, int] = {}  # symbol index -> its address (those referenced)
        words = memoryview(image).cast("Q") if len(image) % 8 == 0 else None
        for offset, info, addend in _RELA.iter_unpack(
                obj.data[rela.offset:rela.offset + rela.size]):
            index = info >> 32
            s = where.get(index)
            if s is None:
                s = where[index] = self._symbol_address(symbols[index], base, placed, defined)
            kind = info & 0xFFFFFFFF
            at = target + offset
            if kind == R_64:
                value = (s + addend) & 0xFFFF_FFFF_FFFF_FFFF
                if words is not None and not at & 7:
                    words[at >> 3] = value  # (jump tables: most of the runtime's)
                else:
                    _U64.pack_into(image, at, value)
            elif kind == R_PC64:
                _U64.pack_into(image, at, (s + addend - (base + at)) & 0xFFFF_FFFF_FFFF_FFFF)
            elif kind in (R_PC32, R_PLT32):
                value = s + addend - (base + at)
                if not -(1 << 31) <= value < 1 << 31:
                    raise LoadError(f"a 32-bit relative reference to {symbols[index].name!r} "
                                    "out of reach")
                struct.pack_into("<i", image, at, value)
            elif kind in (R_32, R_32S):
                value = s + addend
                lo, hi = (0, 1 << 32) if kind == R_32 else (-(1 << 31), 1 << 31)
                if not lo <= value < hi:
                    raise LoadError(f"a 32-bit absolute reference to {symbols[index].name!r} "
                                    "out of reach")
                struct.pack_into("<I" if kind == R_32 else "<i", image, at, value)
            else:
                raise LoadError(f"relocation type {kind} (x86-64) is not supported")
        if words is not None:
            words.release()

    def _symbol_address(self, sym: Symbol, base: int, placed: dict[int, int],
                        defined: dict[str, int]) -> int:
        if sym.section == 0:
            s = defined.get(sym.name) or self.externals.get(sym.name) or \
                _libc_address(sym.name)
            if not s:
                raise LoadError(f"undefined symbol {sym.name!r}")
            return s
        if sym.section in placed:
            return base + placed[sym.section] + (0 if sym.kind == _STT_SECTION else sym.value)
        raise LoadError(f"a relocation against section {sym.section}, not loaded")

    def _reserve(self, size: int, align: int) -> int:
        """Room for ``size`` bytes aligned to ``align``: its address."""
        align = max(align, 16)
        at = (self._at + align - 1) & -align
        if not self._base or at + size > self._size:
            length = max(CHUNK, (size + PAGE - 1) & -PAGE)
            # private: a process forked from this one (the daemon's clones) writes its
            # own later code into its own copy of the chunk
            mem = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=_RW)
            self._maps.append(mem)
            self._base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
            self._size, self._rx_to, at = length, 0, 0
        self._at = at + size
        return self._base + at

    def _write(self, addr: int, image: bytearray) -> None:
        """Copy ``image`` to ``addr`` (in the current chunk), then make its pages
        read-execute (the first one writable again first, if an object before this one
        made it executable)."""
        if not image:
            return
        first = (addr - self._base) & -PAGE
        end = (addr - self._base + len(image) + PAGE - 1) & -PAGE
        if first < self._rx_to:
            self._protect(first, PAGE, _RW)
        ctypes.memmove(addr, (ctypes.c_char * len(image)).from_buffer(image), len(image))
        self._protect(first, end - first, _RX)
        self._rx_to = max(self._rx_to, end)

    def _protect(self, offset: int, length: int, prot: int) -> None:
        if _mprotect(self._base + offset, length, prot) != 0:
            raise OSError(ctypes.get_errno(), "mprotect of JIT code memory failed")


def function_sizes(data: bytes) -> dict[str, int]:
    """Name -> size of each function an object defines ({} if it is no such object):
    for naming loaded code to ``perf`` (perfmap.py)."""
    try:
        return {name: s.size for name, s in ObjectFile(data).functions().items()}
    except (LoadError, struct.error, ValueError, IndexError):
        return {}

