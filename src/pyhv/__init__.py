"""pyhv: a hypervisor written in Python, starting with a QEMU-virt compatible RISC-V machine.

The public Python API: build a :class:`MachineConfig`, make a :class:`Machine` from it and
``run()`` it; the serial console is a :class:`BufferConsole` unless you pass another.
"""

__version__ = "0.1.0"

from .errors import ConfigError, ImageError, PyhvError  # noqa: E402
from .vm.config import MachineConfig  # noqa: E402
from .vm.console import BufferConsole  # noqa: E402
from .vm.machine import Machine, RunResult  # noqa: E402

__all__ = [
    "BufferConsole",
    "ConfigError",
    "ImageError",
    "Machine",
    "MachineConfig",
    "PyhvError",
    "RunResult",
    "__version__",
]
