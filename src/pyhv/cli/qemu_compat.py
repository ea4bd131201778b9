"""`pyhv-qemu` / `pyhv qemu-compat`: the common qemu-system-riscv64 flags.

Existing Makefiles and scripts work by swapping the program name, e.g.::

    pyhv-qemu -M virt -m 128M -smp 1 -nographic -bios default -kernel Image \\
        -initrd initramfs.cpio.gz -append "console=ttyS0"

Flags that only shape QEMU's own UI (``-nographic``, ``-serial mon:stdio``,
``-display none``, ``-monitor none``) are accepted because pyhv always behaves that way.
Flags for hardware pyhv does not have are refused with a one-line error rather than
silently ignored. Devices: ``-drive file=..,format=raw,if=none,id=X[,readonly=on]
[,snapshot=on]`` with ``-device virtio-blk-device,drive=X``; ``-netdev user,id=N
[,hostfwd=tcp:[ADDR]:PORT-:PORT]...[,restrict=on]`` (user-mode networking through
libslirp, as QEMU's; a forward listens on 127.0.0.1 unless ADDR says otherwise),
``-netdev tap,id=N,ifname=NAME[,script=no][,downscript=no]`` (an existing TAP interface) or
pyhv's own
``-netdev switch,id=N,name=SWITCH`` with ``-device virtio-net-device,netdev=N[,mac=..]``;
``-device virtio-rng-device``, ``virtio-balloon-device``, ``virtio-serial-device`` (+
``virtconsole``); ``-global virtio-mmio.force-legacy=false`` (pyhv is always modern); ``-device
vmgenid[,guid=auto|UUID]`` (the VM generation ID, as a ``microsoft,vmgenid`` devicetree
device: QEMU has it only through ACPI).
Host directory shares (virtio-9p): ``-virtfs local,path=DIR,mount_tag=TAG,
security_model=none[,readonly=on]``, or ``-fsdev local,id=F,path=DIR,security_model=none``
with ``-device virtio-9p-device,fsdev=F,mount_tag=TAG``.

CPU engine: ``-accel tcg`` (QEMU's default, so also no ``-accel`` at all; its properties
such as ``thread=single`` are ignored) runs pyhv's default engine ``auto`` (the LLVM JIT
where llvmlite works, else the block translator); ``-accel pyhv,engine=NAME`` picks one
of ``auto``, ``interp``, ``translate``, ``jit`` (``pyhv run --engine``). Several
``-accel`` options are tried in order, as QEMU does, so ``-accel kvm -accel tcg`` works;
accelerators pyhv does not have (kvm, hvf, ...) are skipped, and an error if none is left.

Debugging: ``-gdb tcp::PORT`` opens pyhv's gdb remote stub (docs/gdb.md) on loopback,
``-s`` is ``-gdb tcp::1234``, and ``-S`` holds the CPU at its first instruction until gdb
attaches (without a gdb stub it holds it for good, as QEMU does; Ctrl-A x quits).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from ..cpu.engines import DEFAULT_ENGINE
from ..errors import ConfigError, PyhvError
from ..vm.config import (
    ENGINES,
    BalloonSpec,
    ConsoleSpec,
    DeviceSpec,
    DiskSpec,
    MachineConfig,
    NetSpec,
    RngSpec,
    ShareSpec,
    UserNetSpec,
    parse_memory,
)
from .main import run_machine
from .process import run_and_exit


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"pyhv-qemu: error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pyhv-qemu",
        description="qemu-system-riscv64 compatible front end",
        epilog="Engines: -accel tcg (default) = --engine auto; -accel pyhv,engine=NAME "
        "= --engine NAME.",
    )
    p.add_argument("-machine", "-M", dest="machine", default="virt")
    p.add_argument("-bios", default="default")
    p.add_argument("-kernel")
    p.add_argument("-initrd")
    p.add_argument("-append")
    p.add_argument("-dtb")
    p.add_argument("-m", dest="memory", default="128M")
    p.add_argument("-smp", default="1")
    p.add_argument("-cpu", default="rv64")
    p.add_argument(
        "-accel",
        dest="accel",
        action="append",
        default=[],
        metavar="tcg|pyhv,engine=NAME",
        help="CPU engine: 'tcg' (the default) is pyhv's default engine 'auto' (the LLVM "
        "JIT where it works, else the block translator); 'pyhv,engine=NAME' picks one of "
        f"{', '.join(ENGINES)}. Repeatable: the first accelerator pyhv has wins "
        "(kvm, hvf, ... are skipped)",
    )
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
    p.add_argument("-object", dest="objects", action="append", default=[])
    p.add_argument("-chardev", dest="chardevs", action="append", default=[])
    p.add_argument("-virtfs", action="append", default=[])
    p.add_argument("-fsdev", action="append", default=[])
    p.add_argument("-gdb", metavar="tcp::PORT",
                   help="gdb remote stub on this loopback port (docs/gdb.md)")
    p.add_argument("-s", dest="gdb_default", action="store_true",
                   help="shorthand for -gdb tcp::1234")
    p.add_argument("-S", dest="freeze", action="store_true",
                   help="do not start the CPU: wait for gdb (or hold it, without one)")
    return p


GDB_DEFAULT_PORT = 1234  # QEMU's -s


def _opts(text: str, first_key: str) -> dict[str, str]:
    """QEMU's key=value,... option syntax (the first item may be a bare value)."""
    out: dict[str, str] = {}
    for i, part in enumerate(text.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            if i == 0:
                out[first_key] = key
            else:
                out[key] = "on"
        else:
            out[key] = value
    return out


def _on(value: str | None) -> bool:
    return value in ("on", "true", "yes", "1")


def _devices(ns: argparse.Namespace) -> tuple[DeviceSpec, ...]:
    """Translate -drive/-netdev/-object/-chardev/-device into pyhv device specs."""
    drives: dict[str, DiskSpec] = {}
    devices: list[DeviceSpec] = []
    for text in ns.drive:
        o = _opts(text, "file")
        _known(f"-drive {text}", o, DRIVE_KEYS)
        if "file" not in o:
            raise ConfigError(f"-drive {text}: file= is required")
        if o.get("format", "raw") != "raw":
            raise ConfigError(f"-drive {text}: only format=raw images are supported")
        if o.get("media", "disk") != "disk":
            raise ConfigError(f"-drive {text}: only media=disk is supported (no cdrom)")
        cache = o.get("cache", "writeback")
        if cache != "writeback":
            raise ConfigError(f"-drive {text}: cache={cache} is not supported (pyhv's disks "
                              "behave as cache=writeback: a guest FLUSH reaches the disk)")
        if o.get("discard", "ignore") not in ("ignore", "off"):
            raise ConfigError(f"-drive {text}: discard={o['discard']} is not supported (pyhv's "
                              "virtio-blk offers no discard: discard=ignore)")
        if o.get("aio", "threads") != "threads":
            raise ConfigError(f"-drive {text}: aio={o['aio']} is not supported (aio=threads)")
        read_only = _on(o.get("readonly"))
        spec = DiskSpec(o["file"], read_only, "" if _on(o.get("snapshot")) else None)
        interface = o.get("if", "none")
        if interface == "virtio":
            devices.append(spec)
        elif interface == "none":
            drives[o.get("id", "")] = spec
        else:
            raise ConfigError(f"-drive {text}: if={interface} is not supported (use if=none)")
    netdevs: dict[str, NetSpec] = {}  # the backend; the -device adds mac and slot
    for text in ns.netdev:
        o = _opts(text, "type")
        kind, ident = o.get("type"), o.get("id", "")
        if kind == "user":
            # User-mode networking (libslirp), as QEMU's; hostfwd= may repeat, which
            # the key=value dict cannot hold: those are taken from the text itself.
            _known(f"-netdev {text}", o, ("type", "id", "restrict", "hostfwd"))
            forwards = tuple(part.partition("=")[2] for part in text.split(",")[1:]
                             if part.startswith("hostfwd="))
            try:
                netdevs[ident] = NetSpec(None, user=UserNetSpec(forwards,
                                                                _on(o.get("restrict"))))
            except ConfigError as e:
                raise ConfigError(f"-netdev {text}: {e}") from None
        elif kind == "tap":
            # An interface made beforehand (or by a process with CAP_NET_ADMIN); pyhv
            # runs no helper scripts: script=no and downscript=no, as QEMU's default
            # /etc/qemu-ifup is not pyhv's to run.
            _known(f"-netdev {text}", o, ("type", "id", "ifname", "script", "downscript"))
            for key in ("script", "downscript"):
                if o.get(key, "no") != "no":
                    raise ConfigError(f"-netdev {text}: {key}={o[key]} is not supported "
                                      f"(pyhv runs no scripts: {key}=no, and set the "
                                      "interface up beforehand)")
            if not o.get("ifname"):
                raise ConfigError(f"-netdev {text}: ifname=NAME is required (pyhv does not "
                                  "pick a tapN name)")
            try:
                netdevs[ident] = NetSpec(None, tap=o["ifname"])
            except ConfigError as e:
                raise ConfigError(f"-netdev {text}: {e}") from None
        elif kind == "switch":  # pyhv's own: -netdev switch,id=n0,name=NAME
            _known(f"-netdev {text}", o, ("type", "id", "name"))
            if not o.get("name"):
                raise ConfigError(f"-netdev {text}: name=SWITCH is required")
            netdevs[ident] = NetSpec(o["name"])
        else:
            raise ConfigError(f"-netdev {text}: only 'user', 'tap' and pyhv's 'switch' are "
                              "supported")
    fsdevs = {o.get("id", ""): o for o in (_fsdev(f"-fsdev {t}", t) for t in ns.fsdev)}
    for text in ns.objects:
        kind = _opts(text, "type").get("type")
        if kind not in ("rng-builtin", "rng-random"):
            raise ConfigError(f"-object {text}: not supported")
    for text in ns.chardevs:
        kind = _opts(text, "type").get("type")
        if kind not in ("null", "stdio"):
            raise ConfigError(f"-chardev {text}: only null and stdio are supported")
    for text in ns.device:
        o = _opts(text, "driver")
        driver = o.get("driver")
        where = f"-device {text}"
        if driver == "virtconsole":
            _known(where, o, ("driver", "id", "chardev", "name", "bus"))
            continue  # the console port on virtio-serial-device
        if driver == "vmgenid":
            continue  # not a virtio device: _vmgenid
        if driver not in DEVICE_KEYS:
            raise ConfigError(f"{where}: device '{driver}' is not supported")
        _known(where, o, ("driver", "id", "bus", *DEVICE_KEYS[driver]))
        slot = _bus(where, o.get("bus"))
        if driver == "virtio-blk-device":
            drive = drives.pop(o.get("drive", ""), None)
            if drive is None:
                raise ConfigError(f"{where}: no -drive with id={o.get('drive')}")
            devices.append(dataclasses.replace(drive, slot=slot, serial=o.get("serial")))
        elif driver == "virtio-net-device":
            backend = netdevs.get(o.get("netdev", ""))
            if backend is None:
                raise ConfigError(f"{where}: no -netdev with id={o.get('netdev')}")
            devices.append(dataclasses.replace(backend, mac=o.get("mac"), slot=slot))
        elif driver == "virtio-9p-device":
            fs = fsdevs.get(o.get("fsdev", ""))
            if fs is None:
                raise ConfigError(f"{where}: no -fsdev with id={o.get('fsdev')}")
            if not o.get("mount_tag"):
                raise ConfigError(f"{where}: mount_tag= is required")
            devices.append(ShareSpec(fs["path"], o["mount_tag"], _on(fs.get("readonly")),
                                     slot))
        elif driver == "virtio-rng-device":
            devices.append(RngSpec(slot))
        elif driver == "virtio-balloon-device":
            devices.append(BalloonSpec(slot))
        else:  # virtio-serial-device
            devices.append(ConsoleSpec(slot))
    for text in ns.virtfs:
        o = _fsdev(f"-virtfs {text}", text, ("mount_tag",))
        if not o.get("mount_tag"):
            raise ConfigError(f"-virtfs {text}: mount_tag= is required")
        devices.append(ShareSpec(o["path"], o["mount_tag"], _on(o.get("readonly"))))
    for text in ns.globals:
        if text not in ("virtio-mmio.force-legacy=false", "virtio-mmio.force-legacy=off"):
            raise ConfigError(f"-global {text}: not supported (pyhv's virtio-mmio is modern)")
    return tuple(devices)


def _vmgenid(ns: argparse.Namespace) -> str | None:
    """``-device vmgenid[,guid=auto|UUID]`` (QEMU's VM generation ID; here the
    microsoft,vmgenid devicetree device, devices/vmgenid.py): its guid, ``auto`` as on
    QEMU when none is given; None without one. One at most, as QEMU says."""
    found: list[str] = []
    for text in ns.device:
        o = _opts(text, "driver")
        if o.get("driver") == "vmgenid":
            _known(f"-device {text}", o, ("driver", "id", "guid"))
            found.append(o.get("guid", "auto"))
    if len(found) > 1:
        raise ConfigError("-device vmgenid: at most one vmgenid device is permitted")
    return found[0] if found else None


def _fsdev(where: str, text: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """-fsdev/-virtfs ``local,path=DIR,security_model=none|passthrough[,readonly=on]``:
    pyhv's server acts as the host user it runs as (QEMU's ``none``; as root, that is
    ``passthrough`` without the ownership mapping)."""
    o = _opts(text, "type")
    _known(where, o, ("type", "id", "path", "security_model", "readonly", *extra))
    if o.get("type") != "local":
        raise ConfigError(f"{where}: only the 'local' file system driver is supported")
    if not o.get("path"):
        raise ConfigError(f"{where}: path=DIR is required")
    model = o.get("security_model")
    if model not in ("none", "passthrough"):
        raise ConfigError(f"{where}: security_model={model} is not supported (pyhv's "
                          "share acts as the host user: security_model=none)")
    return o


# The keys pyhv honours; any other is refused by name, never silently ignored.
DRIVE_KEYS = ("file", "format", "if", "id", "readonly", "snapshot", "cache", "discard", "aio",
              "media")
DEVICE_KEYS: dict[str, tuple[str, ...]] = {
    "virtio-blk-device": ("drive", "serial"),
    "virtio-net-device": ("netdev", "mac"),
    "virtio-rng-device": ("rng",),
    "virtio-9p-device": ("fsdev", "mount_tag"),
    "virtio-balloon-device": (),
    "virtio-serial-device": (),
}


def _known(where: str, opts: dict[str, str], keys: Sequence[str]) -> None:
    unknown = [k for k in opts if k not in keys]
    if unknown:
        raise ConfigError(f"{where}: option '{unknown[0]}' is not supported (pyhv honours: "
                          f"{', '.join(k for k in keys if k != 'driver')})")


def _bus(where: str, bus: str | None) -> int | None:
    """``bus=virtio-mmio-bus.N``: the virtio-mmio transport N (at 0x1000_1000 + N*0x1000)."""
    if bus is None:
        return None
    prefix = "virtio-mmio-bus."
    if not bus.startswith(prefix) or not bus[len(prefix):].isdigit():
        raise ConfigError(f"{where}: bus '{bus}' does not exist (virtio-mmio-bus.0 to .7)")
    return int(bus[len(prefix):])


MACHINE_DEFAULTS = {"aclint": "off", "aia": "none"}  # QEMU virt's, the only ones pyhv has


def _machine(value: str) -> dict[str, str]:
    """-machine virt[,dumpdtb=FILE][,accel=...]: its properties (others refused)."""
    o = _opts(value, "type")
    name = o.pop("type", "")
    if name != "virt":
        raise ConfigError(f"machine '{name}' is not supported: pyhv provides only 'virt'")
    for key, val in list(o.items()):
        if key in MACHINE_DEFAULTS and val == MACHINE_DEFAULTS[key]:
            del o[key]
        elif key not in ("dumpdtb", "accel"):
            raise ConfigError(f"-machine {value}: property '{key}={val}' is not supported "
                              "(pyhv honours: dumpdtb=FILE, accel=, aclint=off, aia=none)")
    return o


def _smp(value: str) -> int:
    """-smp N or cpus=N (or a topology, whose product is the hart count, as QEMU)."""
    o = _opts(value, "cpus")
    topology = ("sockets", "dies", "clusters", "cores", "threads")
    _known(f"-smp {value}", o, ("cpus", "maxcpus", *topology))
    try:
        numbers = {k: int(v) for k, v in o.items()}
    except ValueError:
        raise ConfigError(f"-smp '{value}': expected a number of harts") from None
    cpus = numbers.get("cpus")
    if cpus is None:
        cpus = 1
        for key in topology:
            cpus *= numbers.get(key, 1)
    if numbers.get("maxcpus", cpus) != cpus:
        raise ConfigError(f"-smp {value}: maxcpus other than cpus is not supported (no hart "
                          "hotplug)")
    return cpus


def _memory(value: str) -> int:
    o = _opts(value, "size")
    _known(f"-m {value}", o, ("size",))
    return parse_memory(o.get("size", "128M"))


def _engine(accels: list[str]) -> str:
    """The pyhv engine for QEMU's ``-accel`` options (the first one pyhv has wins)."""
    if not accels:
        return DEFAULT_ENGINE
    for text in accels:
        o = _opts(text, "accel")
        name = o.pop("accel", "")
        if name == "tcg":
            return DEFAULT_ENGINE  # tcg's own properties (thread=, tb-size=) do not apply
        if name == "pyhv":
            engine = o.pop("engine", DEFAULT_ENGINE)
            if o:
                raise ConfigError(
                    f"-accel {text}: unknown option '{next(iter(o))}' (known: engine=NAME)"
                )
            if engine not in ENGINES:
                raise ConfigError(
                    f"-accel {text}: engine '{engine}' is not available "
                    f"(choose from: {', '.join(ENGINES)})"
                )
            return engine
    names = ", ".join(_opts(t, "accel").get("accel", "") for t in accels)
    raise ConfigError(
        f"-accel {names}: not available; pyhv provides 'tcg' (its default engine) and "
        "'pyhv,engine=NAME'"
    )


GDB_CHARDEV_KEYS = ("server", "nowait", "server=on", "wait=off", "nodelay",
                    "nodelay=on")  # what a listening tcp chardev is anyway


def _gdb_chardev(text: str) -> str:
    """-gdb's chardev: ``tcp:[HOST]:PORT`` with the options that only say it listens
    (QEMU's own ``-gdb tcp::1234,server,nowait``); other chardevs and options refused."""
    address, *options = text.split(",")
    if not address.startswith("tcp:"):
        raise ConfigError(f"-gdb {text}: only tcp::PORT (or tcp:127.0.0.1:PORT) is "
                          "supported")
    for option in options:
        if option not in GDB_CHARDEV_KEYS:
            raise ConfigError(f"-gdb {text}: option '{option}' is not supported (pyhv "
                              "honours: server, nowait, server=on, wait=off, nodelay)")
    return address


def config_from_args(argv: Sequence[str]) -> tuple[MachineConfig, argparse.Namespace]:
    ns = _parser().parse_args(list(argv))
    machine = _machine(ns.machine)
    ns.dumpdtb = machine.get("dumpdtb")
    if "accel" in machine:
        ns.accel = [*machine["accel"].split(":"), *ns.accel]
    for serial in ns.serial:
        if serial not in ("mon:stdio", "stdio"):
            raise ConfigError(f"-serial {serial}: only 'stdio' and 'mon:stdio' are supported")
    if ns.cpu not in ("rv64", "any", "max"):
        raise ConfigError(f"-cpu {ns.cpu}: only rv64 (or any, max), without properties, is "
                          "supported: pyhv's hart is fixed (rv64gc, Sv39/Sv48)")
    if ns.display not in (None, "none"):
        raise ConfigError(f"-display {ns.display}: pyhv has no display (-display none, or "
                          "-nographic)")
    if ns.monitor not in (None, "none"):
        raise ConfigError(f"-monitor {ns.monitor}: pyhv has no QEMU monitor (-monitor none)")
    for flag, values in (("-nic", ns.nic), ("-net", ns.net)):
        if values is not None and values != "none":
            raise ConfigError(f"{flag} {values}: not supported; use -netdev user,id=N (or "
                              "pyhv's switch) with -device virtio-net-device,netdev=N")
    config = MachineConfig(
        kernel=ns.kernel,
        bios=ns.bios,
        initrd=ns.initrd,
        append=ns.append,
        memory=_memory(ns.memory),
        smp=_smp(ns.smp),
        dtb=ns.dtb,
        engine=_engine(ns.accel),
        no_reboot=ns.no_reboot,
        devices=_devices(ns),
        vmgenid=_vmgenid(ns),
    )
    return config, ns


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, ns = config_from_args(sys.argv[1:] if argv is None else argv)
        if ns.dumpdtb:
            return _dump_dtb(config, ns.dumpdtb)
        gdb, option = (ns.gdb, "-gdb") if ns.gdb is not None else \
            (f"tcp::{GDB_DEFAULT_PORT}", "-s") if ns.gdb_default else (None, "-gdb")
        if ns.gdb is not None and ns.gdb_default:
            raise ConfigError(f"-s and -gdb {ns.gdb}: give one gdb stub address")
        if gdb is not None:
            gdb = _gdb_chardev(gdb)
        return run_machine(config, gdb=gdb, wait_gdb=ns.freeze and gdb is not None,
                           hold=ns.freeze and gdb is None, gdb_option=option)
    except PyhvError as e:
        print(f"pyhv-qemu: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dump_dtb(config: MachineConfig, path: str) -> int:
    """-machine virt,dumpdtb=FILE: write the device tree the guest would get, and exit
    (as QEMU does: the machine is built, nothing runs)."""
    from ..vm.console import BufferConsole
    from ..vm.machine import Machine

    machine = Machine(config, console=BufferConsole())
    try:
        blob = machine.board.dtb
    finally:
        machine.close()
    try:
        with open(path, "wb") as f:
            f.write(blob)
    except OSError as e:
        raise ConfigError(f"dumpdtb={path}: {e.strerror}") from None
    print(f"pyhv-qemu: info: dtb dumped to {path}. Exiting.", file=sys.stderr)
    return 0


def entry() -> None:
    """The console script: main(), then an exit that does not wait for the JIT."""
    run_and_exit(main)


if __name__ == "__main__":
    entry()
