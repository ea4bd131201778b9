"""`pyhv-qemu` / `pyhv qemu-compat`: the common qemu-system-riscv64 flags.

Existing Makefiles and scripts work by swapping the program name, e.g.::

    pyhv-qemu -M virt -m 128M -smp 1 -nographic -bios default -kernel Image \\
        -initrd initramfs.cpio.gz -append "console=ttyS0"

Flags that only shape QEMU's own UI (``-nographic``, ``-serial mon:stdio``,
``-display none``, ``-monitor none``) are accepted because pyhv always behaves that way.
Flags for hardware pyhv does not have yet are refused with a one-line error rather than
silently ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ConfigError, PyhvError
from ..vm.config import MachineConfig, parse_memory
from .main import run_machine


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"pyhv-qemu: error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyhv-qemu", description="qemu-system-riscv64 compatible front end")
    p.add_argument("-machine", "-M", dest="machine", default="virt")
    p.add_argument("-bios", default="default")
    p.add_argument("-kernel")
    p.add_argument("-initrd")
    p.add_argument("-append")
    p.add_argument("-dtb")
    p.add_argument("-m", dest="memory", default="128M")
    p.add_argument("-smp", default="1")
    p.add_argument("-cpu", default="rv64")
    p.add_argument("-accel", default="tcg")
    p.add_argument("-nographic", action="store_true")
    p.add_argument("-no-reboot", dest="no_reboot", action="store_true")
    p.add_argument("-serial", action="append", default=[])
    p.add_argument("-display")
    p.add_argument("-monitor")
    p.add_argument("-nic")
    p.add_argument("-net")
    p.add_argument("-name")
    p.add_argument("-device", action="append", default=[])
    p.add_argument("-drive", action="append", default=[])
    p.add_argument("-netdev", action="append", default=[])
    p.add_argument("-global", dest="globals", action="append", default=[])
    return p


def _machine(value: str) -> None:
    name = value.split(",")[0]
    if name != "virt":
        raise ConfigError(f"machine '{name}' is not supported: pyhv provides only 'virt'")


def _smp(value: str) -> int:
    cpus = None
    for i, part in enumerate(value.split(",")):
        key, _, val = part.partition("=")
        if not val and i == 0:
            val, key = key, "cpus"
        if key == "cpus":
            cpus = val
    try:
        return int(cpus if cpus is not None else "1")
    except ValueError:
        raise ConfigError(f"-smp '{value}': expected a number of harts") from None


def _memory(value: str) -> int:
    size = value
    for part in value.split(","):
        key, _, val = part.partition("=")
        if val and key == "size":
            size = val
    return parse_memory(size)


def config_from_args(argv: Sequence[str]) -> tuple[MachineConfig, argparse.Namespace]:
    ns = _parser().parse_args(list(argv))
    _machine(ns.machine)
    for flag, values in (("-device", ns.device), ("-drive", ns.drive), ("-netdev", ns.netdev)):
        if values:
            raise ConfigError(
                f"{flag} {values[0]}: devices beyond the base board are not supported yet"
            )
    for serial in ns.serial:
        if serial not in ("mon:stdio", "stdio"):
            raise ConfigError(f"-serial {serial}: only 'stdio' and 'mon:stdio' are supported")
    if ns.cpu.split(",")[0] not in ("rv64", "any", "max"):
        raise ConfigError(f"-cpu {ns.cpu}: only rv64 is supported")
    config = MachineConfig(
        kernel=ns.kernel,
        bios=ns.bios,
        initrd=ns.initrd,
        append=ns.append,
        memory=_memory(ns.memory),
        smp=_smp(ns.smp),
        dtb=ns.dtb,
        no_reboot=ns.no_reboot,
    )
    return config, ns


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, _ns = config_from_args(sys.argv[1:] if argv is None else argv)
        return run_machine(config)
    except PyhvError as e:
        print(f"pyhv-qemu: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
