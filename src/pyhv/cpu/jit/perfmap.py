"""Names for the JIT's machine code in Linux ``perf``: ``/tmp/perf-PID.map``.

``perf record`` attributes samples in anonymous executable memory to ``[JIT]``; with
a map file (one ``ADDRESS SIZE NAME`` line per function, perf's documented JIT
interface) ``perf report`` names the block (its guest pc and tier) or the runtime
function (dispatcher, native interpreter, refill) where the host time went. Enabled by
``PYHV_JIT_PERFMAP=1``; off, it costs nothing. Sizes come from the object file's own
symbol table (``loader``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .loader import function_sizes

ENABLED = os.environ.get("PYHV_JIT_PERFMAP", "") not in ("", "0")


def name(addr: int, size: int, what: str) -> None:
    """Name one piece of generated code (a baseline block: stencils.py)."""
    if ENABLED:
        _append([f"{addr:x} {size:x} {what}\n"])


def record(obj: bytes, addresses: Mapping[str, int]) -> None:
    """Append the functions of a just-loaded object (at ``addresses``) to this
    process's map file."""
    if not ENABLED:
        return
    _append([f"{addresses[name]:x} {size:x} {name}\n"
             for name, size in function_sizes(obj).items() if addresses.get(name)])


def _append(lines: list[str]) -> None:
    try:
        with open(f"/tmp/perf-{os.getpid()}.map", "a") as f:
            f.writelines(lines)
    except OSError:
        pass
