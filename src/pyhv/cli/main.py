"""The `pyhv` command.

``pyhv run`` boots one machine in the foreground with its serial console on the
terminal, like ``qemu-system-riscv64 -nographic``; ``pyhv qemu-compat`` accepts QEMU's own
flags. User mistakes print one line (``pyhv: error: ...``) and exit non-zero; the exit
status of a guest that powers off is the code it wrote to the test device.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

from .. import IMPORTED_AT, __version__
from ..cpu.engines import DEFAULT_ENGINE
from ..errors import PyhvError
from ..vm.config import (
    ENGINES,
    BalloonSpec,
    ConsoleSpec,
    DeviceSpec,
    MachineConfig,
    RngSpec,
    parse_disk_option,
    parse_memory,
    parse_net_option,
    parse_share_option,
)
from .process import run_and_exit

EXIT_USER_ERROR = 2


def _seconds(text: str) -> float:
    """--timeout: a finite number of seconds above 0 (0, negative and nan used to mean
    'no timeout' without a word)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text}: give a number of seconds above 0 (leave it out for no timeout)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
    return value


def _add_machine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernel", "-k", metavar="FILE", help="kernel or bare-metal program (ELF or raw)"
    )
    p.add_argument(
        "--bios",
        default="default",
        metavar="FILE|none|default",
        help="firmware: 'default' is OpenSBI fw_dynamic from qemu-system-data; "
        "'none' runs the kernel in M-mode from 0x80000000",
    )
    p.add_argument("--initrd", metavar="FILE", help="initial ramdisk")
    p.add_argument("--append", metavar="ARGS", help="kernel command line")
    p.add_argument("--memory", "-m", default="128M", metavar="SIZE", help="RAM size (default 128M)")
    p.add_argument("--smp", type=int, default=1, metavar="N", help="number of harts, 1-8")
    p.add_argument(
        "--dtb", metavar="FILE", help="use this device tree instead of the generated one"
    )
    # No argparse `choices`: an unknown name is a one-line ConfigError like other mistakes.
    p.add_argument(
        "--engine",
        default=DEFAULT_ENGINE,
        metavar="{" + ",".join(ENGINES) + "}",
        help="CPU engine: 'interp' (the reference interpreter), 'translate' (hot blocks "
        "compiled to Python), 'jit' (LLVM, needs llvmlite), 'auto' (default: 'jit' where "
        "it works, else 'translate')",
    )
    p.add_argument("--no-reboot", action="store_true", help="exit instead of rebooting")
    p.add_argument(
        "--vmgenid", default="auto", metavar="auto|UUID|off",
        help="the VM generation ID device (microsoft,vmgenid), which a clone changes so "
        "the guest reseeds its RNG: 'auto' (default) a random identifier, a UUID that "
        "one, 'off' no device (the device tree exactly QEMU's)",
    )
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="stop after this many seconds")
    p.add_argument(
        "--max-instructions", type=_count, metavar="N", help="stop after N guest instructions"
    )
    p.add_argument(
        "--stats", action="store_true", help="print instructions and MIPS to stderr at exit"
    )
    p.add_argument(
        "--restore", metavar="FILE",
        help="start from the snapshot FILE (its machine: only --engine, the limits and "
        "--snapshot may be given)",
    )
    p.add_argument(
        "--snapshot", metavar="FILE",
        help="Ctrl-A s saves the running machine to FILE, and so does a stop at "
        "--max-instructions, --timeout or Ctrl-A x (not a power-off)",
    )
    p.add_argument("--no-verify", action="store_true",
                   help="with --restore: skip the RAM checksum (reads every stored page)")
    p.add_argument(
        "--gdb", metavar="tcp:127.0.0.1:PORT",
        help="open a gdb remote stub on this loopback address (docs/gdb.md): "
        "gdb-multiarch's 'target remote :PORT' then debugs the guest",
    )
    p.add_argument("--wait-gdb", action="store_true",
                   help="with --gdb: hold the guest at its first instruction until gdb "
                   "attaches (QEMU's -S)")
    dev = p.add_argument_group("virtio devices (in slot order, as on QEMU)")
    dev.add_argument(
        "--disk",
        action=_DeviceAction,
        metavar="PATH[,ro][,overlay[=FILE]][,bps=N][,iops=N]",
        help="virtio-blk disk from a raw image; 'overlay' alone keeps writes in a "
        "temporary copy-on-write file, overlay=FILE in a persistent one; bps= (bytes/s, "
        "e.g. 2M), iops= (requests/s) and their bursts bps_burst=, iops_burst= limit it",
    )
    dev.add_argument(
        "--net", action=_DeviceAction, metavar="switch=NAME|user[,hostfwd=...][,mac=ADDR]",
        help="virtio-net NIC on the in-host virtual switch NAME, or 'user': user-mode "
        "networking (libslirp) with DHCP 10.0.2.15, the host at 10.0.2.2, DNS at 10.0.2.3; "
        "hostfwd=tcp:[ADDR]:HOSTPORT-:GUESTPORT (repeatable; ADDR defaults to 127.0.0.1) "
        "forwards a host port to the guest, restrict=on keeps the guest in, mtu=N sets the "
        "link MTU (default 65520; 1500 as QEMU); tx_bps=, rx_bps= "
        "(bytes/s, e.g. 1M), tx_pps=, rx_pps= (frames/s), tx_bps_burst=, rx_bps_burst= "
        "limit each direction",
    )
    dev.add_argument(
        "--share", action=_DeviceAction, metavar="HOSTDIR,tag=TAG[,ro]",
        help="share the host directory HOSTDIR over virtio-9p; the guest mounts it with "
        "'mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt'; 'ro' refuses writes "
        "(repeatable, one tag each)",
    )
    dev.add_argument("--rng", action=_DeviceAction, nargs=0, help="virtio-rng (host entropy)")
    dev.add_argument("--balloon", action=_DeviceAction, nargs=0, help="virtio-balloon")
    dev.add_argument(
        "--vconsole", action=_DeviceAction, nargs=0, help="virtio-console (hvc0) on the terminal"
    )


class _DeviceAction(argparse.Action):
    """Collects device options in command-line order (it decides the virtio slots)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        items = list(getattr(namespace, "devices", None) or [])
        items.append((self.dest, values))
        namespace.devices = items


def _device_spec(kind: str, value: object) -> DeviceSpec:
    if kind == "disk":
        return parse_disk_option(str(value))
    if kind == "net":
        return parse_net_option(str(value))
    if kind == "share":
        return parse_share_option(str(value))
    if kind == "rng":
        return RngSpec()
    if kind == "balloon":
        return BalloonSpec()
    return ConsoleSpec()


def build_config(ns: argparse.Namespace) -> MachineConfig:
    return MachineConfig(
        kernel=ns.kernel,
        bios=ns.bios,
        initrd=ns.initrd,
        append=ns.append,
        memory=parse_memory(ns.memory),
        smp=ns.smp,
        dtb=ns.dtb,
        engine=ns.engine,
        no_reboot=ns.no_reboot,
        devices=tuple(_device_spec(k, v) for k, v in (getattr(ns, "devices", None) or [])),
        vmgenid=None if ns.vmgenid == "off" else ns.vmgenid,
    )


_MACHINE_DEFAULTS = {"kernel": None, "bios": "default", "initrd": None, "append": None,
                     "memory": "128M", "smp": 1, "dtb": None, "no_reboot": False,
                     "devices": None, "vmgenid": "auto"}


def _restore_options(ns: argparse.Namespace) -> None:
    """``--restore`` takes the whole machine from its file: any option that describes
    another machine is a mistake, named."""
    for key, default in _MACHINE_DEFAULTS.items():
        if getattr(ns, key, default) != default:
            opt = {"devices": "device options", "no_reboot": "--no-reboot"}.get(
                key, f"--{key}")
            raise PyhvError(f"--restore: the snapshot holds the machine; drop {opt}")


def run_machine(
    config: MachineConfig | None,
    timeout: float | None = None,
    max_instructions: int | None = None,
    stats: bool = False,
    restore: str | None = None,
    snapshot: str | None = None,
    verify: bool = True,
    engine: str | None = None,
    gdb: str | None = None,
    wait_gdb: bool = False,
    gdb_option: str = "--gdb",
    hold: bool = False,
) -> int:
    """Build (or ``restore`` from a snapshot file) and run one machine on the terminal;
    with ``snapshot``, save it there on Ctrl-A s and when it stops before power-off;
    with ``gdb`` (an address), under a gdb remote stub (``wait_gdb``: held until gdb
    attaches; ``hold``: no gdb, the CPU never starts, as QEMU's -S alone). Returns the
    process exit status."""
    from ..vm.machine import tune_gc_for_vm

    tune_gc_for_vm()
    server = None
    if gdb is not None:  # listening first: a port in use stops here, nothing started
        from ..vm.gdbstub import GdbServer, parse_gdb_address

        server = GdbServer(*parse_gdb_address(gdb, gdb_option), option=gdb_option)
    elif wait_gdb:
        raise PyhvError("--wait-gdb needs --gdb tcp:127.0.0.1:PORT")
    if hold:
        return _hold(config, timeout)
    try:
        return _run_console(config, timeout, max_instructions, stats, restore, snapshot,
                            verify, engine, server, wait_gdb)
    finally:
        if server is not None:
            server.close()


def _hold(config: MachineConfig | None, timeout: float | None) -> int:
    """QEMU's -S without a gdb stub: the machine is built, its CPU never starts (QEMU
    waits for its monitor's 'cont', which pyhv does not have); Ctrl-A x quits."""
    import select

    from ..vm.console import StdioConsole
    from ..vm.machine import Machine

    assert config is not None
    console = StdioConsole()
    try:
        machine = Machine(config, console=console)
        try:
            print("pyhv: -S: the CPU is held (no gdb stub to start it: add -s); "
                  "Ctrl-A x quits", file=sys.stderr)
            began = time.monotonic()
            fd = console.input_fd()
            while not console.quit_requested:
                if timeout is not None and time.monotonic() - began >= timeout:
                    return 124
                ready = select.select([fd], [], [], 0.2)[0] if fd is not None else []
                if not console.read_input() and not console.quit_requested:
                    if ready:  # end of input (stdin closed): no busy loop
                        time.sleep(0.2)
                    elif fd is None:
                        time.sleep(0.2)
        finally:
            machine.close()
    finally:
        console.close()
    return 0


def _run_console(config: MachineConfig | None, timeout: float | None,
                 max_instructions: int | None, stats: bool, restore: str | None,
                 snapshot: str | None, verify: bool, engine: str | None, server: Any,
                 wait_gdb: bool) -> int:
    from ..vm.console import StdioConsole
    from ..vm.machine import Machine

    console = StdioConsole()
    t_start = time.perf_counter()
    try:
        if restore is not None:
            machine = Machine.restore(restore, console=console, engine=engine, verify=verify)
        else:
            assert config is not None
            machine = Machine(config, console=console)
        t_built = time.perf_counter()
        try:
            began = time.monotonic()
            while True:
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - began))
                if server is not None:
                    result = server.serve(machine, wait=wait_gdb, timeout=left,
                                          max_instructions=max_instructions)
                    wait_gdb = False
                else:
                    result = machine.run(max_instructions=max_instructions, timeout=left)
                if snapshot is not None and result.reason in ("snapshot", "limit", "timeout",
                                                              "quit"):
                    _save(machine, snapshot, console)
                if result.reason != "snapshot":
                    break
        finally:
            t_ran = time.perf_counter()
            machine.close()  # disks flushed and closed, the JIT's last batch cached
    finally:
        console.close()
    t_closed = time.perf_counter()
    if stats:
        print(
            f"pyhv: {result.reason}: {result.instructions} instructions in "
            f"{result.seconds:.2f} s ({result.mips:.2f} MIPS, engine {machine.engine_name})",
            file=sys.stderr,
        )
        started = machine.engine_start_seconds
        warmup = ("; the guest was done within the interpreter's warm-up: the JIT was "
                  "never started" if machine.warming_up else
                  f", {started:.3f} s of it starting the JIT after the warm-up"
                  if started else "")
        print(f"pyhv: time: {t_start - IMPORTED_AT:.3f} s imports, {t_built - t_start:.3f} s "
              f"building the machine, {t_ran - t_built:.3f} s running{warmup}, "
              f"{t_closed - t_ran:.3f} s stopping", file=sys.stderr)
        counters = machine.engine_stats()
        if counters:
            print(f"pyhv: {machine.engine_name}: "
                  + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counters.items()),
                  file=sys.stderr)
    if result.reason == "crash":
        print(f"pyhv: guest crashed: {machine.crash}", file=sys.stderr)
        return result.exit_code
    if result.reason == "timeout":
        print(f"pyhv: stopped after the {timeout} s timeout", file=sys.stderr)
        return 124
    return result.exit_code


def _save(machine: Any, path: str, console: Any) -> None:
    t0 = time.perf_counter()
    info = machine.snapshot(path)
    console.flush()
    sys.stderr.write(
        f"\r\npyhv: saved to {path} in {time.perf_counter() - t0:.2f} s "
        f"({info['stored_bytes'] >> 20} MiB of {info['ram_bytes'] >> 20} MiB RAM stored)\r\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="pyhv", description="pyhv: a RISC-V hypervisor written in Python"
    )
    parser.add_argument("--version", action="version", version=f"pyhv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="boot a machine in the foreground (serial console on this terminal)",
        description="Boot a QEMU-virt compatible RISC-V machine. Ctrl-A x quits.",
    )
    _add_machine_args(run)
    if argv[:1] == ["qemu-compat"]:
        from .qemu_compat import main as qemu_main

        return qemu_main(argv[1:])
    if argv[:1] != ["run"]:
        # the other commands' parsers (~10 ms to import and build) only when asked for,
        # or for the top-level help and errors, which list them
        _add_other_commands(sub)
        from .manage import add_manage_commands

        add_manage_commands(parser, sub)  # create, list, info, set, destroy
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    if getattr(ns, "manage_command", None) is not None:
        return int(ns.manage_command(ns))
    try:
        if ns.restore is not None:
            _restore_options(ns)
            return run_machine(None, ns.timeout, ns.max_instructions, ns.stats,
                               restore=ns.restore, snapshot=ns.snapshot,
                               verify=not ns.no_verify, engine=ns.engine, gdb=ns.gdb,
                               wait_gdb=ns.wait_gdb)
        config = build_config(ns)
        return run_machine(config, ns.timeout, ns.max_instructions, ns.stats,
                           snapshot=ns.snapshot, gdb=ns.gdb, wait_gdb=ns.wait_gdb)
    except PyhvError as e:
        print(f"pyhv: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _add_other_commands(sub: Any) -> None:
    """The subcommands besides ``run`` that this module parses itself."""
    sub.add_parser(
        "qemu-compat",
        help="accept qemu-system-riscv64 flags (also installed as pyhv-qemu)",
        add_help=False,
    )
    uplink = sub.add_parser(
        "uplink",
        help="give an in-host switch a NAT gateway (user-mode networking) for all its VMs",
        description="Join the in-host switch SWITCH as its uplink: a libslirp network "
        "(DHCP 10.0.2.15 upwards by MAC, gateway 10.0.2.2, DNS 10.0.2.3, NAT to the host "
        "and the world) that every VM on the switch shares. Runs until interrupted.",
    )
    uplink.add_argument("switch", metavar="SWITCH")
    uplink.add_argument("--hostfwd", action="append", default=[], metavar="FWD",
                        help="forward a host port to a guest: [tcp|udp]:[ADDR]:HOSTPORT-"
                        "[GUESTADDR]:GUESTPORT (ADDR defaults to 127.0.0.1, GUESTADDR to "
                        "10.0.2.15); repeatable")
    uplink.add_argument("--restrict", action="store_true",
                        help="the guests reach nothing outside (forwards still work)")
    uplink.add_argument("--timeout", type=float, default=None, help=argparse.SUPPRESS)
    uplink.set_defaults(manage_command=_uplink)


def _uplink(ns: argparse.Namespace) -> int:
    """``pyhv uplink SWITCH``: serve the switch's NAT gateway in the foreground."""
    import signal

    from ..net.uplink import SwitchUplink
    from ..net.user import parse_hostfwd

    try:
        try:
            forwards = tuple(parse_hostfwd(h) for h in ns.hostfwd)
        except PyhvError as e:
            raise type(e)(f"--hostfwd: {e}") from None
        up = SwitchUplink(ns.switch, forwards, restrict=ns.restrict)
    except PyhvError as e:
        print(f"pyhv: error: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: up.stop())
    print(f"pyhv: uplink of switch '{ns.switch}' ready (gateway 10.0.2.2)", flush=True)
    try:
        up.serve(ns.timeout)
    except KeyboardInterrupt:
        pass
    finally:
        up.close()
    return 0


def entry() -> None:
    """The console script: main(), then an exit that does not wait for the JIT."""
    run_and_exit(main)


if __name__ == "__main__":
    entry()
