"""``pyhv create|list|info|set|destroy``: manage the VMs defined in a state directory.

(The commands that need the host daemon, ``pyhv host serve``, ``start``, ``stop``,
``reboot``, ``pause``, ``resume``, ``console``, ``top``, ``snapshot``, ``restore``,
``clone`` and ``migrate``, are in :mod:`.lifecycle`;
they are registered here too, with the same ``--state-dir`` and error handling.)

These commands are thin wrappers around :class:`pyhv.Host` (the Python API the REST API
uses too). ``--state-dir DIR`` (before or after the command) chooses the state
directory; the default is ``$PYHV_STATE_DIR``, else ``$XDG_DATA_HOME/pyhv``, else
``~/.local/share/pyhv``. A mistake prints one line, ``pyhv: error: ...``, and exits 2 (1
when the host itself failed, e.g. an unreadable state directory).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import PyhvError

if TYPE_CHECKING:
    from ..host.api import VM, Host

EXIT_USER_ERROR = 2
EXIT_HOST_ERROR = 1
COMMANDS = ("create", "list", "info", "set", "destroy", "host", "start", "stop", "reboot",
            "pause", "resume", "console", "top", "snapshot", "restore", "clone", "migrate")

_STATE_DIR_HELP = (
    "state directory of the VM definitions (default: $PYHV_STATE_DIR, else "
    "$XDG_DATA_HOME/pyhv, else ~/.local/share/pyhv)"
)


def add_manage_commands(
    parser: argparse.ArgumentParser, sub: argparse._SubParsersAction[argparse.ArgumentParser]
) -> None:
    """Register the commands (and the global ``--state-dir``) on the ``pyhv`` parser; the
    parsed namespace then has ``manage_command(ns) -> exit status``."""
    parser.add_argument("--state-dir", metavar="DIR", help=_STATE_DIR_HELP)

    def command(name: str, handler: Callable[[argparse.Namespace], int], **kw: Any) -> Any:
        p = sub.add_parser(name, **kw)
        p.add_argument(
            "--state-dir", metavar="DIR", default=argparse.SUPPRESS, help=_STATE_DIR_HELP
        )
        p.set_defaults(manage_command=lambda ns: _guarded(handler, ns))
        return p

    p = command(
        "create",
        _create,
        help="define a VM (from a TOML file and/or flags)",
        description="Define a VM from a TOML definition (docs/vm-definition.md) and/or "
        "flags; flags override the file's values, --disk/--net add devices. Relative paths "
        "in FILE are relative to FILE's directory, those of flags to the current directory.",
    )
    p.add_argument("file", nargs="?", metavar="FILE.toml", help="the VM definition")
    p.add_argument("--name", "-n", help="VM name (lowercase letters, digits, '-', '_')")
    p.add_argument("--vcpus", "--smp", dest="vcpus", metavar="N", help="vCPUs, 1-8 (default 1)")
    p.add_argument("--memory", "-m", metavar="SIZE", help="RAM, e.g. 256M, 1G (default 128M)")
    p.add_argument("--engine", metavar="auto|interp|translate|jit", help="CPU engine")
    p.add_argument(
        "--firmware", "--bios", dest="firmware", metavar="FILE|none|default",
        help="firmware: 'default' is OpenSBI fw_dynamic, 'none' runs the kernel in M-mode",
    )
    p.add_argument("--kernel", "-k", metavar="FILE", help="kernel or bare-metal program")
    p.add_argument("--initrd", metavar="FILE", help="initial ramdisk")
    p.add_argument("--cmdline", "--append", dest="cmdline", metavar="ARGS",
                   help="kernel command line")
    p.add_argument("--dtb", metavar="FILE", help="device tree instead of the generated one")
    p.add_argument("--disk", action="append", default=[], metavar="PATH[,ro][,overlay[=FILE]]",
                   help="add a virtio-blk disk (repeatable); I/O budget: ,bps=2M,iops=200 "
                   "(,bps_burst=,iops_burst=)")
    p.add_argument("--net", action="append", default=[], metavar="switch=NAME[,mac=ADDR]",
                   help="add a virtio-net NIC on a virtual switch (repeatable); I/O "
                   "budgets: ,tx_bps=1M,rx_pps=100 (tx_/rx_ bps, pps, bps_burst)")
    p.add_argument("--share", action="append", default=[], metavar="HOSTDIR,tag=TAG[,ro]",
                   help="share a host directory over virtio-9p (repeatable); the guest "
                   "mounts it by TAG")
    p.add_argument("--rng", action="store_true", default=None, help="virtio-rng")
    p.add_argument("--balloon", action="store_true", default=None, help="virtio-balloon")
    p.add_argument("--vconsole", action="store_true", default=None, help="virtio-console")
    _add_qos_args(p)
    p.add_argument("--autostart", action=argparse.BooleanOptionalAction, default=None,
                   help="start the VM when the daemon starts")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resulting definition and create nothing")

    p = command("list", _list, help="list the defined VMs",
                description="List the defined VMs with their state and resources.")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("info", _info, help="show a VM's definition and state")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "set",
        _set,
        help="change a VM's QoS, I/O budgets, memory, balloon target or autostart",
        description="Change fields of a VM's definition. On a VM the host daemon runs, "
        "--shares, --reservation, --limit and --io apply at once (a reservation the host cannot "
        "give is refused) and --balloon sets its balloon target; --memory and "
        "--autostart apply at its next start.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--memory", "-m", metavar="SIZE", help="RAM, e.g. 512M")
    _add_qos_args(p)
    p.add_argument("--balloon", metavar="SIZE|none",
                   help="running VM with a balloon: the memory its guest should keep "
                   "(the balloon takes the rest); none gives it all back")
    p.add_argument("--autostart", action=argparse.BooleanOptionalAction, default=None,
                   help="start the VM when the daemon starts")
    p.add_argument("--io", action="append", default=[], metavar="DEV.KEY=RATE|none,...",
                   help="I/O budgets (repeatable): DEV is disk0, disk1, ... or net0, ...; "
                   "KEY bps, iops, bps_burst, iops_burst (disks), tx_bps, tx_pps, "
                   "tx_bps_burst, rx_bps, rx_pps, rx_bps_burst (NICs); e.g. "
                   "--io disk0.bps=2M,disk0.iops=200,net0.tx_bps=none; at once on a "
                   "running VM")

    p = command("destroy", _destroy, help="delete a stopped VM and its directory",
                description="Delete a stopped VM: its definition and everything in its "
                "directory of the state directory (disk images elsewhere are kept).")
    p.add_argument("name", metavar="NAME")

    from .lifecycle import add_lifecycle_commands

    add_lifecycle_commands(command)


def _add_qos_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shares", metavar="N|low|normal|high",
                   help="CPU weight under contention (default normal: 1000 per vCPU)")
    p.add_argument("--reservation", metavar="PERCENT",
                   help="guaranteed CPU, in percent of one host CPU (default 0)")
    p.add_argument("--limit", metavar="PERCENT|none",
                   help="maximum CPU, in percent of one host CPU (default none: unlimited)")
    p.add_argument("--mem-shares", metavar="N|low|normal|high",
                   help="memory weight when the host's memory is short (default normal: "
                   "10 per MiB)")
    p.add_argument("--mem-reservation", metavar="SIZE",
                   help="memory never taken back from the guest (default 0)")
    p.add_argument("--mem-limit", metavar="SIZE|none",
                   help="the most memory the guest may hold, through its balloon (default "
                   "none: its memory)")


# ------------------------------------------------------------------------ plumbing


def _guarded(handler: Callable[[argparse.Namespace], int], ns: argparse.Namespace) -> int:
    """Run a command; every failure is one line on stderr and an exit status."""
    from ..host.errors import HostError

    try:
        return handler(ns)
    except HostError as e:
        _error(str(e))
        return EXIT_USER_ERROR if 400 <= e.http_status < 500 else EXIT_HOST_ERROR
    except PyhvError as e:
        _error(str(e))
        return EXIT_USER_ERROR
    except OSError as e:
        if isinstance(e, BrokenPipeError):
            return EXIT_HOST_ERROR
        where = f"{e.filename}: " if e.filename else ""
        _error(f"{where}{e.strerror or e}")
        return EXIT_HOST_ERROR
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    print(f"pyhv: error: {message}", file=sys.stderr)


def _host(ns: argparse.Namespace) -> Host:
    from ..host.api import Host

    return Host(getattr(ns, "state_dir", None) or None)


def _usage(message: str) -> PyhvError:
    from ..host.errors import Invalid

    return Invalid(message)


def _number(text: str, flag: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise _usage(f"{flag} '{text}': expected a number (percent of one host CPU)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _usage(f"{flag} '{text}': expected a finite number")
    return int(value) if value.is_integer() else value


def _shares(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # a level name ("high"); the definition checks it


def _limit(text: str) -> int | float | None:
    if text.lower() in ("none", "unlimited"):
        return None
    return _number(text, "--limit")


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


# ------------------------------------------------------------------------ create


def _create(ns: argparse.Namespace) -> int:
    from ..host.definition import VMDefinition
    from ..host.errors import DefinitionError

    if ns.file is None and ns.name is None:
        raise _usage("create: give a definition FILE.toml, or --name NAME and other flags")
    doc: dict[str, Any] = {}
    source: str | None = None
    base_dir = os.getcwd()
    if ns.file is not None:
        import tomllib

        source = ns.file
        base_dir = os.path.dirname(os.path.abspath(ns.file))
        try:
            with open(ns.file, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise DefinitionError(None, f"cannot read: {e.strerror}", ns.file) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise DefinitionError(None, f"invalid TOML: {e}", ns.file) from None
    _merge_flags(doc, ns)
    if ns.dry_run:
        definition = VMDefinition.from_dict(doc, source, base_dir)
        sys.stdout.write(definition.to_toml())
        return 0
    vm = _host(ns).create(doc, source=source, base_dir=base_dir)
    print(f"created VM '{vm.name}' ({vm.path / 'vm.toml'})")
    return 0


def _merge_flags(doc: dict[str, Any], ns: argparse.Namespace) -> None:
    """Flags override the file's values (paths made absolute: they are relative to the
    current directory); --disk and --net add devices."""
    from ..host.definition import DISK_RATES, NET_RATES
    from ..vm.config import parse_disk_option, parse_net_option, parse_share_option

    for key in ("name", "engine"):
        if getattr(ns, key) is not None:
            doc[key] = getattr(ns, key)
    if ns.vcpus is not None:
        try:
            doc["vcpus"] = int(ns.vcpus)
        except ValueError:
            raise _usage(f"--vcpus '{ns.vcpus}': expected a number of vCPUs") from None
    memory_flags = _memory_flags(ns)
    if ns.memory is not None:
        if isinstance(doc.get("memory"), dict):
            doc["memory"]["size"] = ns.memory
        else:
            doc["memory"] = ns.memory
    if memory_flags:
        if not isinstance(doc.get("memory"), dict):
            doc["memory"] = {"size": doc["memory"]} if "memory" in doc else {}
        for key, value in memory_flags.items():
            key = key.removeprefix("memory_")
            if value is None:
                doc["memory"].pop(key, None)
            else:
                doc["memory"][key] = value
    if ns.autostart is not None:
        doc["autostart"] = ns.autostart

    boot = doc.get("boot") if isinstance(doc.get("boot"), dict) else None
    for key in ("firmware", "kernel", "initrd", "cmdline", "dtb"):
        value = getattr(ns, key)
        if value is None:
            continue
        if boot is None:
            boot = doc.setdefault("boot", {})
            if not isinstance(boot, dict):
                break  # the definition reports the bad [boot]
        if key == "cmdline" or (key == "firmware" and value in ("default", "none")):
            boot[key] = value
        else:
            boot[key] = _abspath(value) if value else value

    for text in ns.disk:
        spec = parse_disk_option(text)
        entry: dict[str, Any] = {"path": _abspath(spec.path), "readonly": spec.read_only}
        if spec.overlay is not None:
            entry["overlay"] = _abspath(spec.overlay) if spec.overlay else True
        entry.update({k: getattr(spec, k) for k in DISK_RATES if getattr(spec, k) is not None})
        _append(doc, "disk", entry)
    for text in ns.net:
        spec_n = parse_net_option(text)
        backend: dict[str, Any] = {"switch": spec_n.switch} if spec_n.user is None else {
            "user": True, "hostfwd": list(spec_n.user.hostfwd),
            "restrict": spec_n.user.restrict, "mtu": spec_n.user.mtu}
        if spec_n.tap is not None:
            backend = {"tap": spec_n.tap}
        _append(doc, "net", {**backend,
                             **({"mac": spec_n.mac} if spec_n.mac else {}),
                             **{k: getattr(spec_n, k) for k in NET_RATES
                                if getattr(spec_n, k) is not None}})

    for text in ns.share:
        spec_s = parse_share_option(text)
        _append(doc, "share", {"path": _abspath(spec_s.path), "tag": spec_s.tag,
                               "readonly": spec_s.read_only})

    for key in ("rng", "balloon", "vconsole"):
        if getattr(ns, key):
            devices = doc.setdefault("devices", {})
            if isinstance(devices, dict):
                devices[key] = True

    qos_flags = _qos_flags(ns)
    if qos_flags:
        qos = doc.setdefault("qos", {})
        if isinstance(qos, dict):
            for key, value in qos_flags.items():
                if value is None:
                    qos.pop(key, None)
                else:
                    qos[key] = value


def _append(doc: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
    items = doc.setdefault(key, [])
    if isinstance(items, list):
        items.append(entry)


def _memory_terms_text(d: Any) -> str:
    """`` (shares 2560, reservation 64M, limit 200M)``: the memory terms."""
    from ..host.definition import format_memory

    t = d.memory_terms
    parts = [f"shares {t.shares}"]
    if t.reservation:
        parts.append(f"reservation {format_memory(t.reservation)}")
    if t.limit is not None:
        parts.append(f"limit {format_memory(t.limit)}")
    return f" ({', '.join(parts)})"


def _memory_flags(ns: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if ns.mem_shares is not None:
        flags["memory_shares"] = _shares(ns.mem_shares)
    if ns.mem_reservation is not None:
        flags["memory_reservation"] = ns.mem_reservation
    if ns.mem_limit is not None:
        flags["memory_limit"] = None if ns.mem_limit.lower() == "none" else ns.mem_limit
    return flags


def _qos_flags(ns: argparse.Namespace) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    if ns.shares is not None:
        flags["shares"] = _shares(ns.shares)
    if ns.reservation is not None:
        flags["reservation"] = _number(ns.reservation, "--reservation")
    if ns.limit is not None:
        flags["limit"] = _limit(ns.limit)
    return flags


# ------------------------------------------------------------------------ list, info


def _summary(vm: VM) -> dict[str, Any]:
    d = vm.definition
    return {
        "name": d.name,
        "state": vm.state,
        "vcpus": d.vcpus,
        "memory": d.memory,
        "shares": d.qos.shares,
        "reservation": d.qos.reservation,
        "limit": d.qos.limit,
        "autostart": d.autostart,
    }


def _list(ns: argparse.Namespace) -> int:
    from ..host.definition import format_memory, format_percent

    vms, broken = _host(ns).scan()
    for error in broken.values():
        print(f"pyhv: warning: {error}", file=sys.stderr)
    if ns.json:
        print(json.dumps([_summary(vm) for vm in vms], indent=2))
        return 0
    rows = [("NAME", "STATE", "VCPUS", "MEMORY", "SHARES", "RESERVATION", "LIMIT", "AUTOSTART")]
    for vm in vms:
        d = vm.definition
        rows.append((
            d.name,
            vm.state,
            str(d.vcpus),
            format_memory(d.memory),
            str(d.qos.shares),
            format_percent(d.qos.reservation),
            format_percent(d.qos.limit),
            "yes" if d.autostart else "no",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _budgets(device: Any, keys: tuple[str, ...]) -> str:
    """A disk's or NIC's I/O budgets for ``pyhv info``: ``, bps 2M, iops 200``."""
    from ..host.definition import format_rate

    return "".join(f", {k} {format_rate(getattr(device, k), k)}" for k in keys
                   if getattr(device, k) is not None)


def _info(ns: argparse.Namespace) -> int:
    from ..host.definition import DISK_RATES, NET_RATES, format_memory, format_percent

    vm = _host(ns).get(ns.name)
    if ns.json:
        print(json.dumps(vm.to_dict(), indent=2))
        return 0
    d = vm.definition
    pid = vm.pid
    devices = [k for k in ("rng", "balloon", "vconsole") if getattr(d, k)]
    state = vm.state
    lines: list[tuple[str, str]] = [
        ("Name", d.name),
        ("State", state + (f" (pid {pid})" if pid is not None else "")),
        ("vCPUs", str(d.vcpus)),
        ("Memory", format_memory(d.memory) + _memory_terms_text(d)),
        ("Engine", d.engine),
        ("Shares", str(d.qos.shares)),
        ("Reservation", format_percent(d.qos.reservation)),
        ("Limit", format_percent(d.qos.limit)),
        ("Autostart", "yes" if d.autostart else "no"),
        ("Firmware", d.boot.firmware),
    ]
    for key in ("kernel", "initrd", "cmdline", "dtb"):
        value = getattr(d.boot, key)
        if value is not None:
            lines.append((key.capitalize() if key != "dtb" else "DTB", value))
    for i, disk in enumerate(d.disks):
        mode = "read-only" if disk.readonly else "read-write"
        if disk.overlay is not None:
            mode = f"overlay {disk.overlay}" if disk.overlay else "temporary overlay"
        lines.append((f"Disk {i}", f"{disk.path} ({mode}{_budgets(disk, DISK_RATES)})"))
    for i, net in enumerate(d.nets):
        where = (f"tap {net.tap}" if net.tap is not None else
                 f"switch {net.switch}" if not net.user else ",".join(
            ["user", *(f"hostfwd={h}" for h in net.hostfwd),
             *(["restrict=on"] if net.restrict else []),
             *([f"mtu={net.mtu}"] if net.mtu is not None else [])]))
        lines.append((f"NIC {i}", f"{where}, mac {net.mac or 'random'}"
                      f"{_budgets(net, NET_RATES)}"))
    for i, sh in enumerate(d.shares):
        lines.append((f"Share {i}", f"{sh.path} as '{sh.tag}'"
                      f"{' (read-only)' if sh.readonly else ''}"))
    lines.append(("Devices", ", ".join(devices) or "-"))
    gen = vm.generation_id
    if gen is not None:
        lines.append(("Generation ID", gen))
    crash = vm.crash if state == "crashed" else None
    if crash is not None:
        lines.append(("Crash", str(crash.get("reason", "unknown"))))
    lines.append(("Definition", str(vm.path / "vm.toml")))
    width = max(len(k) for k, _ in lines) + 1
    for key, value in lines:
        print(f"{key + ':':<{width}} {value}")
    return 0


# ------------------------------------------------------------------------ set, destroy


def _set(ns: argparse.Namespace) -> int:
    from ..host.api import LIVE, RUNNING_STATES, parse_io_changes
    from ..host.definition import DISK_RATES, NET_RATES, format_memory, format_percent, format_rate

    changes: dict[str, Any] = {**_qos_flags(ns), **_memory_flags(ns)}
    if ns.memory is not None:
        changes["memory"] = ns.memory
    if ns.autostart is not None:
        changes["autostart"] = ns.autostart
    if ns.balloon is not None:
        changes["balloon"] = None if ns.balloon.lower() == "none" else ns.balloon
    if ns.io:
        changes["io"] = parse_io_changes(ns.io)
    if not changes:
        raise _usage(
            "set: nothing to change (use --shares, --reservation, --limit, --memory, "
            "--mem-shares, --mem-reservation, --mem-limit, --balloon, --io, "
            "--autostart/--no-autostart)"
        )
    host = _host(ns)
    current = host.get(ns.name)
    before = current.definition
    live = current.state in RUNNING_STATES and host.daemon_pid is not None
    vm = host.set(ns.name, **changes)
    after = vm.definition

    def show(d: Any) -> dict[str, str]:
        return {
            "memory": format_memory(d.memory),
            "memory.shares": str(d.memory_terms.shares),
            "memory.reservation": format_memory(d.memory_terms.reservation)
            if d.memory_terms.reservation else "0",
            "memory.limit": "none" if d.memory_terms.limit is None
            else format_memory(d.memory_terms.limit),
            "qos.shares": str(d.qos.shares),
            "qos.reservation": format_percent(d.qos.reservation),
            "qos.limit": format_percent(d.qos.limit),
            "autostart": "yes" if d.autostart else "no",
            **{f"disk[{i}].{k}": _rate(getattr(disk, k), k)
               for i, disk in enumerate(d.disks) for k in DISK_RATES},
            **{f"net[{i}].{k}": _rate(getattr(net, k), k)
               for i, net in enumerate(d.nets) for k in NET_RATES},
        }

    def _rate(value: int | None, key: str) -> str:
        return "unlimited" if value is None else str(format_rate(value, key))

    old, new = show(before), show(after)
    diff = [f"{k} {old[k]} -> {new[k]}" for k in new if old[k] != new[k]]
    if "balloon" in changes:
        target = changes["balloon"]
        diff.append("balloon target " + ("none" if target is None else str(target)))
    note = ""
    if vm.state in RUNNING_STATES and diff:
        later = [k for k in changes if k not in LIVE]
        if not live:
            note = " (applies at its next start)"
        elif later:
            note = f" (QoS applied now; {', '.join(later)} at its next start)"
        else:
            note = " (applied now)"
    print(f"VM '{vm.name}': " + (", ".join(diff) if diff else "unchanged") + note)
    return 0


def _destroy(ns: argparse.Namespace) -> int:
    _host(ns).destroy(ns.name)
    print(f"destroyed VM '{ns.name}'")
    return 0
