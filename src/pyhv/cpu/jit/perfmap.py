"""Names for the JIT's machine code in Linux ``perf``: ``/tmp/perf-PID.map``.

``perf record`` attributes samples in anonymous executable memory to ``[JIT]``; with
a map file (one ``ADDRESS SIZE NAME`` line per function, perf's documented JIT
interface) ``perf report`` names the block (its guest pc and tier) or the runtime
function (dispatcher, native interpreter, refill) where the host time went. Enabled by
``PYHV_JIT_PERFMAP=1``; off, it costs nothing. Sizes come from the object file's own
symbol table (ELF64, read with ``struct``): llvmlite does not list an object's symbols.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

ENABLED = os.environ.get("PYHV_JIT_PERFMAP", "") not in ("", "0")

_SHT_SYMTAB = 2
_STT_FUNC = 2


def functions(obj: bytes) -> dict[str, int]:
    """Function name -> size in bytes, from a relocatable ELF64 object ({} if not one)."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return {}
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    out: dict[str, int] = {}
    for i in range(shnum):
        sh = shoff + i * shentsize
        sh_type, = struct.unpack_from("<I", obj, sh + 4)
        if sh_type != _SHT_SYMTAB:
            continue
        off, size, link, _info, _align, entsize = struct.unpack_from("<QQIIQQ", obj, sh + 0x18)
        stroff, = struct.unpack_from("<Q", obj, shoff + link * shentsize + 0x18)
        for s in range(off, off + size, entsize):
            name, info, _other, _shndx, _value, sym_size = struct.unpack_from("<IBBHQQ", obj, s)
            if info & 0xF == _STT_FUNC and sym_size:
                end = obj.index(b"\0", stroff + name)
                out[obj[stroff + name:end].decode()] = sym_size
    return out


def record(obj: bytes, address_of: Callable[[str], int]) -> None:
    """Append the functions of a just-loaded object to this process's map file."""
    if not ENABLED:
        return
    lines = []
    for name, size in functions(obj).items():
        addr = address_of(name)
        if addr:
            lines.append(f"{addr:x} {size:x} {name}\n")
    try:
        with open(f"/tmp/perf-{os.getpid()}.map", "a") as f:
            f.writelines(lines)
    except OSError:
        pass
