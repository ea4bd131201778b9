"""pyhv: a hypervisor written in Python, starting with a QEMU-virt compatible RISC-V machine.

The public Python API: build a :class:`MachineConfig`, make a :class:`Machine` from it and
``run()`` it; the serial console is a :class:`BufferConsole` unless you pass another.
:class:`Host` and :class:`VM` manage the VMs defined in a state directory (``pyhv create``,
``pyhv list``, ...).

The names are imported on first use, so ``import pyhv`` (and the ``pyhv`` command) stays
cheap.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
IMPORTED_AT = time.perf_counter()  # when pyhv's first module loaded (``run --stats``)

from .errors import ConfigError, ImageError, PyhvError  # noqa: E402

_LAZY = {
    "BufferConsole": "pyhv.vm.console",
    "Host": "pyhv.host.api",
    "Machine": "pyhv.vm.machine",
    "MachineConfig": "pyhv.vm.config",
    "MachineGroup": "pyhv.vm.group",
    "RunResult": "pyhv.vm.machine",
    "VM": "pyhv.host.api",
}

if TYPE_CHECKING:
    from .host.api import VM, Host
    from .vm.config import MachineConfig
    from .vm.console import BufferConsole
    from .vm.group import MachineGroup
    from .vm.machine import Machine, RunResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyhv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BufferConsole",
    "ConfigError",
    "Host",
    "ImageError",
    "Machine",
    "MachineConfig",
    "MachineGroup",
    "PyhvError",
    "RunResult",
    "VM",
    "__version__",
]
