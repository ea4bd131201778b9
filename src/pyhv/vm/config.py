"""A validated, immutable description of one machine (what `pyhv run` is asked to build)."""

from __future__ import annotations

from dataclasses import dataclass

from ..board import memmap
from ..errors import ConfigError

ENGINES = ("interp",)
MIN_RAM = 16 * 1024 * 1024
MAX_RAM = 16 * 1024 * 1024 * 1024


def parse_memory(text: str) -> int:
    """A user's memory size ("128M", "1G", QEMU's -m syntax), checked against the limits."""
    from ..board.loader import parse_size

    size = parse_size(text)
    if not MIN_RAM <= size <= MAX_RAM:
        raise ConfigError(
            f"memory size '{text}' is out of range ({MIN_RAM >> 20} MiB to {MAX_RAM >> 30} GiB)"
        )
    if size % (1024 * 1024):
        raise ConfigError(f"memory size '{text}' must be a whole number of MiB")
    return size


@dataclass(frozen=True)
class MachineConfig:
    kernel: str | None = None
    bios: str = "default"  # "default" (OpenSBI fw_dynamic), "none", or a firmware path
    initrd: str | None = None
    append: str | None = None
    memory: int = 128 * 1024 * 1024
    smp: int = 1
    dtb: str | None = None
    engine: str = "interp"
    no_reboot: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.smp <= memmap.MAX_HARTS:
            raise ConfigError(
                f"--smp {self.smp}: the virt board supports 1 to {memmap.MAX_HARTS} harts"
            )
        if not MIN_RAM <= self.memory <= MAX_RAM:
            raise ConfigError(
                f"memory size {self.memory // (1024 * 1024)} MiB is out of range "
                f"({MIN_RAM >> 20} MiB to {MAX_RAM >> 30} GiB)"
            )
        if self.memory % (1024 * 1024):
            raise ConfigError(f"memory size {self.memory} must be a whole number of MiB")
        if self.engine not in ENGINES:
            raise ConfigError(
                f"engine '{self.engine}' is not available (choose from: {', '.join(ENGINES)})"
            )
        if self.bios == "none" and self.kernel is None:
            raise ConfigError("--bios none needs a --kernel to run")
        if self.initrd is not None and self.kernel is None:
            raise ConfigError("--initrd needs a --kernel")
