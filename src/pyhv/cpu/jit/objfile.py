"""What a relocatable object file defines: its functions' sections, offsets and sizes.

Read from the ELF64 symbol table with ``struct`` (llvmlite does not list an object's
symbols). The code cache's loader uses it to find every block of an object it loads
with one symbol lookup per section instead of one per block (a lookup through the
execution engine costs ~25 us; a warm Linux boot installs ~2,000 blocks from ~500
objects), and ``perfmap`` to name the functions' code for ``perf``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

_SHT_SYMTAB = 2
_STT_FUNC = 2


class Function(NamedTuple):
    section: int  # index of the section that holds its code
    offset: int  # its start in that section
    size: int


def functions(obj: bytes) -> dict[str, Function]:
    """Name -> where its code is, for every function an ELF64 little-endian object
    defines ({} if it is not one)."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return {}
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    out: dict[str, Function] = {}
    for i in range(shnum):
        sh = shoff + i * shentsize
        sh_type, = struct.unpack_from("<I", obj, sh + 4)
        if sh_type != _SHT_SYMTAB:
            continue
        off, size, link, _info, _align, entsize = struct.unpack_from("<QQIIQQ", obj, sh + 0x18)
        stroff, = struct.unpack_from("<Q", obj, shoff + link * shentsize + 0x18)
        for s in range(off, off + size, entsize):
            name, info, _other, shndx, value, sym_size = struct.unpack_from("<IBBHQQ", obj, s)
            if info & 0xF == _STT_FUNC and sym_size:
                end = obj.index(b"\0", stroff + name)
                out[obj[stroff + name:end].decode()] = Function(shndx, value, sym_size)
    return out


def addresses(obj: bytes, address_of: Callable[[str], int]) -> dict[str, int]:
    """Name -> address of every function of ``obj`` once loaded, asking ``address_of``
    (the execution engine's lookup) for one function of each section only: a loader
    places a section whole, so the others are at their offsets from it."""
    out: dict[str, int] = {}
    base: dict[int, int] = {}
    for name, f in functions(obj).items():
        if f.section not in base:
            addr = address_of(name)
            if not addr:
                continue
            base[f.section] = addr - f.offset
        out[name] = base[f.section] + f.offset
    return out
