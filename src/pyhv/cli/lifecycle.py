"""``pyhv host serve`` and the commands that need it: ``start``, ``stop``, ``reboot``,
``pause``, ``resume``, ``console``, ``top``, ``snapshot``, ``restore``, ``clone`` and
``migrate``.

``pyhv host serve`` runs the host daemon (:mod:`pyhv.host.daemon`) in the foreground,
with the REST API (:mod:`pyhv.host.rest`, loopback by default); the other commands
ask it, through :class:`pyhv.Host`, over its control socket, and fail with one line when
no daemon serves the state directory. ``pyhv console NAME`` attaches the terminal to a
running VM's serial console like ``virsh console`` (``Ctrl-]`` detaches); ``pyhv top``
shows per-VM CPU %, entitlement, guest MIPS, memory, I/O and state, refreshed every
second, like esxtop or virt-top.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

TOP_FIELDS = ("NAME", "STATE", "ACT", "CPU%", "ENT%", "SHARES", "RSV%", "LIMIT%", "MIPS",
              "MEMORY", "MEM-ENT", "HELD", "ACTIVE", "SHARED", "SWAP", "RSS", "BALLOON",
              "DISK-R", "DISK-W", "NET-TX", "NET-RX", "IO-WAIT", "UPTIME")


def add_lifecycle_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the commands with ``command(name, handler, **add_parser_kwargs)`` (the
    helper of :func:`pyhv.cli.manage.add_manage_commands`)."""
    p = command(
        "host", _host_command, help="run the host daemon (pyhv host serve)",
        description="The host daemon runs VMs, each in its own process, and shares the "
        "host's CPUs among them under their shares, reservations and limits.",
    )
    p.add_argument("action", choices=["serve", "info"],
                   help="serve: run the daemon in the foreground; info: show the running "
                   "daemon's pid, CPUs, policy and CPU backend")
    p.add_argument("--cpu-backend", choices=["auto", "feedback", "cgroup"],
                   default="feedback",
                   help="who enforces the VMs' CPU shares and limits: feedback (default: "
                   "the daemon's own SIGSTOP/SIGCONT quanta, measured and corrected; it "
                   "held every term under outside load in bench/scheduler.py, the kernel's "
                   "shares split did not), cgroup (the kernel's CPU controller, in groups "
                   "the daemon creates), auto (cgroup where the host lets the daemon write "
                   "it, else feedback)")
    p.add_argument("--json", action="store_true", help="info: print JSON")
    p.add_argument("--policy", choices=["shares", "round-robin"],
                   help="CPU scheduling policy (default: host.toml's, else shares)")
    p.add_argument("--cpus", type=int, metavar="N",
                   help="host CPUs the VMs may use (default: host.toml's, else all)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long guests get to power off before they are "
                   "stopped (default 30)")
    p.add_argument("--quantum-ms", type=float, default=20.0, metavar="MS",
                   help="scheduling quantum (default 20 ms)")
    p.add_argument("--listen", nargs="?", const="", metavar="ADDR:PORT",
                   help="serve the REST API on TCP too, at ADDR:PORT (PORT 0: any free port; "
                   "alone: host.toml's api.bind, else 127.0.0.1:7480; 'none': not on TCP), "
                   "with a token. It is always served on the state directory's api.sock, "
                   "which only the daemon's user can open. Default: host.toml's api.bind "
                   "if set, else no TCP")
    p.add_argument("--token-file", metavar="FILE",
                   help="the token TCP requests must send ('Authorization: Bearer TOKEN'): "
                   "this file's contents, mode 0600 (default: $PYHV_API_TOKEN, if set)")
    p.add_argument("--socket-group", metavar="GROUP",
                   help="let the members of GROUP use api.sock too (as libvirt's "
                   "unix_sock_group); the files their requests name must be theirs to use")

    p = command("start", _start, help="start a VM (needs the host daemon)")
    p.add_argument("name", metavar="NAME")
    p = command("stop", _stop, help="stop a running VM: guest power-off, then forced",
                description="Ask the guest to power off; stop it from the host side if it "
                "has not after --timeout seconds (or at once with --force).")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true", help="stop the machine at once")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="how long the guest gets to power off (default: the daemon's, 30 s)")
    p = command("reboot", _reboot, help="warm-reset a running VM")
    p.add_argument("name", metavar="NAME")
    p = command("pause", _pause, help="stop running a VM's guest until resumed")
    p.add_argument("name", metavar="NAME")
    p = command("resume", _resume, help="resume a paused VM")
    p.add_argument("name", metavar="NAME")
    p = command("snapshot", _snapshot, help="save a running VM to a snapshot file",
                description="Save a running VM's state and RAM to FILE (its disks flushed "
                "first); the guest runs on. A paused VM is saved as it is and stays "
                "paused. An earlier snapshot at FILE is replaced; any other file is not "
                "overwritten.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE")
    p = command("restore", _restore, help="define and start a VM from a snapshot file",
                description="Define a VM from the machine saved in FILE (resources, images "
                "and devices; default QoS) and start it from there: the guest goes on "
                "where it was saved. A later 'pyhv start' boots it afresh from its images.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", "-n", metavar="NAME",
                   help="the new VM's name (default: FILE's name without its extension)")
    p = command("clone", _clone, help="start N new VMs from a snapshot file",
                description="Define and start COUNT VMs named PREFIX-1 .. PREFIX-COUNT from "
                "the machine saved in FILE, each a new machine (every NIC with a MAC of its "
                "own); they share the file's RAM copy-on-write. All or nothing.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--count", "-c", type=int, default=1, metavar="N",
                   help="how many (1 to 64, default 1)")
    p.add_argument("--name", "-n", metavar="PREFIX",
                   help="name prefix (default: FILE's name without its extension)")
    p = command("migrate", _migrate, help="live-migrate a running VM to another host daemon",
                description="Move a running VM to the host daemon whose REST API is at URL "
                "(http://HOST:PORT): its RAM is copied while the guest runs, then the guest "
                "stops here and goes on there, its console where it left off. The VM's "
                "definition stays here, stopped. If the destination cannot be reached or "
                "refuses, the VM runs on here.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--to", required=True, metavar="URL",
                   help="the destination daemon's REST API, e.g. http://127.0.0.1:7480")
    p.add_argument("--token-file", metavar="FILE",
                   help="the destination's API token (mode 0600; default: $PYHV_API_TOKEN)")
    p = command("console", _console, help="attach to a running VM's serial console",
                description="Attach this terminal to a running VM's serial console "
                "(Ctrl-] detaches). Piped input is sent to the guest.")
    p.add_argument("name", metavar="NAME")
    p = command("debug", _debug, help="open a running VM's gdb stub and print its port",
                description="Open the gdb remote stub of a running VM (on a free port of "
                "127.0.0.1, in the VM's process) and print the port; the guest runs on "
                "until gdb attaches: gdb-multiarch -ex 'target remote 127.0.0.1:PORT'. "
                "See docs/gdb.md.")
    p.add_argument("name", metavar="NAME")
    p = command("top", _top, help="live per-VM CPU, MIPS, memory, I/O and state",
                description="Show what every VM gets, refreshed every --delay seconds: "
                "CPU % of one host CPU over the last second (CPU%%) and what the scheduler "
                "entitles it to (ENT%%), shares, reservation, limit, guest MIPS, memory, "
                "I/O counters and state (ACT: running or idle: every vCPU in WFI).")
    p.add_argument("--delay", "-d", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--iterations", "-n", type=int, metavar="N", help="stop after N updates")
    p.add_argument("--batch", "-b", action="store_true",
                   help="print one table after another (no screen refresh)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON lines")


def _host(ns: argparse.Namespace) -> Any:
    from ..host.api import Host

    return Host(getattr(ns, "state_dir", None) or None)


def _host_command(ns: argparse.Namespace) -> int:
    from ..host.daemon import serve
    from ..host.errors import Invalid

    if ns.quantum_ms <= 0 or ns.shutdown_timeout < 0:
        raise Invalid("--quantum-ms must be positive and --shutdown-timeout not negative")
    host = _host(ns)
    if ns.action == "info":
        return _host_info(host, ns.json)
    api = _api_config(ns, host)
    group = _group_id(ns.socket_group) if ns.socket_group is not None else None
    return serve(host.state_dir, policy=ns.policy, cpus=ns.cpus,
                 shutdown_timeout=ns.shutdown_timeout, quantum=ns.quantum_ms / 1000, api=api,
                 socket_group=group, cpu_backend=ns.cpu_backend)


def _host_info(host: Any, as_json: bool) -> int:
    """``pyhv host info``: who serves this state directory, and how it runs the VMs."""
    import json

    info = host.daemon_info()
    if as_json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"daemon:       pid {info['pid']}, version {info['version']}, up "
          f"{info['uptime']:g} s")
    print(f"state dir:    {info['state_dir']}")
    print(f"cpus:         {info['cpus']}")
    print(f"policy:       {info['policy']}")
    print(f"cpu backend:  {info.get('cpu_backend', 'feedback')} "
          f"({info.get('cpu_backend_reason', '')})")
    print(f"VMs running:  {info['vms_running']}")
    return 0


def _group_id(name: str) -> int:
    """--socket-group: a group name or number of this host."""
    import grp

    from ..host.errors import Invalid

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        pass
    if name.isdigit():
        return int(name)
    raise Invalid(f"--socket-group {name}: no such group on this host")


def _api_config(ns: argparse.Namespace, host: Any) -> Any:
    """The REST API's TCP address and token from --listen, host.toml's api.bind and
    --token-file (None: not on TCP). Checked before the daemon starts: TCP without a
    token is refused."""
    from ..host.errors import Invalid
    from ..host.registry import DEFAULT_API_BIND
    from ..host.rest import ApiConfig, parse_listen, read_token

    # Off by default; host.toml's api.bind turns it on. Asked for explicitly, a port in
    # use is an error; configured in host.toml, the daemon runs without it.
    if ns.listen is None and host.settings.api_bind is None:
        text = "none"
    else:
        text = ns.listen or host.settings.api_bind or DEFAULT_API_BIND
    address = parse_listen(text)
    if address is None:
        if ns.token_file is not None:
            raise Invalid("--token-file is for the REST API on TCP (--listen ADDR:PORT)")
        return None
    return ApiConfig(address[0], address[1], read_token(ns.token_file),
                     required=ns.listen is not None)


def _start(ns: argparse.Namespace) -> int:
    vm = _host(ns).start(ns.name)
    print(f"started VM '{vm.name}' (pid {vm.pid})")
    return 0


def _stop(ns: argparse.Namespace) -> int:
    outcome = _host(ns).stop(ns.name, force=ns.force, timeout=ns.timeout)
    how = {
        "poweroff": "the guest powered off",
        "quit": "stopped by the host",
        "killed": "its process was killed",
    }.get(outcome.get("reason") or "", outcome.get("reason") or "")
    state = outcome.get("state", "stopped")
    print(f"VM '{ns.name}' {state}" + (f" ({how})" if how else ""))
    return 0


def _reboot(ns: argparse.Namespace) -> int:
    _host(ns).reboot(ns.name)
    print(f"rebooting VM '{ns.name}'")
    return 0


def _pause(ns: argparse.Namespace) -> int:
    _host(ns).pause(ns.name)
    print(f"paused VM '{ns.name}'")
    return 0


def _resume(ns: argparse.Namespace) -> int:
    _host(ns).resume(ns.name)
    print(f"resumed VM '{ns.name}'")
    return 0


def _bytes(value: Any) -> str:
    text = _size(value)
    return text + "iB" if text[-1:].isalpha() else text + " B"


def _snapshot(ns: argparse.Namespace) -> int:
    import os

    path = os.path.abspath(os.path.expanduser(ns.file))  # the client's current directory
    result = _host(ns).snapshot(ns.name, path)
    seconds = float(result.get("seconds") or 0.0)
    took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
    print(f"saved VM '{ns.name}' to {result['path']} in {took} (RAM "
          f"{_bytes(result.get('ram_bytes'))}, {_bytes(result.get('stored_bytes'))} stored, "
          f"{_bytes(result.get('file_bytes'))} on disk)")
    return 0


def _restore(ns: argparse.Namespace) -> int:
    import os

    vm = _host(ns).restore(os.path.abspath(os.path.expanduser(ns.file)), ns.name)
    print(f"restored VM '{vm.name}' (pid {vm.pid})")
    return 0


def _clone(ns: argparse.Namespace) -> int:
    import os

    vms = _host(ns).clone(os.path.abspath(os.path.expanduser(ns.file)), ns.count, ns.name)
    for vm in vms:
        print(f"started VM '{vm.name}' (pid {vm.pid})")
    return 0


def _migrate(ns: argparse.Namespace) -> int:
    from ..host.rest import read_token

    token = read_token(ns.token_file)
    result = _host(ns).migrate(ns.name, ns.to, token)

    def ms(value: Any) -> str:
        seconds = float(value or 0.0)
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"

    rounds = int(result.get("rounds") or 0)
    print(f"migrated VM '{ns.name}' to {result.get('to', ns.to)}: {rounds} "
          f"round{'s' if rounds != 1 else ''}, {int(result.get('pages_sent') or 0)} pages "
          f"({int(result.get('last_round_pages') or 0)} in the last), total "
          f"{ms(result.get('total_seconds'))}, downtime {ms(result.get('downtime_seconds'))}")
    return 0


def _debug(ns: argparse.Namespace) -> int:
    port = _host(ns).debug(ns.name)
    print(port)
    print(f"gdb-multiarch -ex 'set architecture riscv:rv64' -ex 'target remote "
          f"127.0.0.1:{port}'", file=sys.stderr)
    return 0


def _console(ns: argparse.Namespace) -> int:
    from ..host.console import attach, connect
    from ..host.errors import Conflict

    path = _host(ns).console_path(ns.name)
    try:
        sock = connect(path)
    except OSError:
        raise Conflict(f"VM '{ns.name}' is not running (its console does not answer)") from None
    with sock:
        return attach(sock, ns.name)


# ------------------------------------------------------------------------ top


def _size(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    return "-"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}:{s % 60:02d}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _throttled(seconds: Any) -> str:
    """Time the VM's I/O waited for its budgets (disks and NICs together)."""
    if not isinstance(seconds, int | float):
        return "-"
    return f"{seconds:.1f}s" if seconds < 1000 else _duration(seconds)


def top_table(metrics: dict[str, Any]) -> list[str]:
    """The lines ``pyhv top`` prints for one :meth:`pyhv.Host.metrics` answer."""
    host = metrics["host"]
    lines = [
        f"pyhv top - {time.strftime('%H:%M:%S')}  {host['cpus']} CPUs, policy "
        f"{host['policy']}, {host['vms_running']} VM(s) running; VMs use "
        f"{host['cpu_pct']:.1f}% CPU (capacity {host.get('capacity_pct', 0):.0f}%), the "
        f"daemon {host['daemon_cpu_pct']:.1f}%",
    ]
    if host.get("memory_budget"):
        ksm = host.get("ksm") or {}
        lines.append(
            f"memory: VMs hold {_size(host.get('memory_held', 0))} of a budget of "
            f"{_size(host['memory_budget'])}"
            + ("; short: reclaiming through balloons" if host.get("memory_short") else "")
            + (f"; KSM on, saving {_size(ksm.get('pages_sharing', 0) * 4096)}"
               if ksm.get("run") == 1 else ""))
    lines.append("")
    rows = [TOP_FIELDS]
    for vm in metrics["vms"]:
        running = vm.get("pid") is not None
        limit = vm.get("limit")
        rows.append((
            vm["name"],
            vm["state"],
            vm.get("activity", "-") if running else "-",
            _pct(vm.get("cpu_pct")) if running else "-",
            _pct(vm.get("entitlement_pct")) if running else "-",
            str(vm.get("shares", "-")),
            _pct(vm.get("reservation")),
            "-" if limit is None else _pct(limit),
            f"{vm['mips']:.2f}" if running else "-",
            _size(vm.get("memory")),
            *((_size(vm.get(k)) for k in ("memory_entitled", "memory_held", "memory_active",
                                          "memory_shared", "memory_swapped"))
              if running else ("-",) * 5),
            _size(vm.get("rss")) if running else "-",
            _size(vm.get("balloon_target")) if running and vm.get("balloon_target") else "-",
            _size(vm.get("disk_read")) if running else "-",
            _size(vm.get("disk_write")) if running else "-",
            str(vm.get("net_tx", "-")) if running else "-",
            str(vm.get("net_rx", "-")) if running else "-",
            _throttled(vm.get("io_throttled_seconds")) if running else "-",
            _duration(vm.get("uptime")) if running else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(TOP_FIELDS))]
    for r in rows:
        lines.append("  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip())
    return lines


def _top(ns: argparse.Namespace) -> int:
    host = _host(ns)
    refresh = not ns.batch and not ns.json and sys.stdout.isatty()
    count = 0
    while True:
        metrics = host.metrics()
        if ns.json:
            print(json.dumps(metrics), flush=True)
        else:
            text = "\n".join(top_table(metrics))
            if refresh:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            else:
                sys.stdout.write(text + "\n\n")
            sys.stdout.flush()
        count += 1
        if ns.iterations is not None and count >= ns.iterations:
            return 0
        time.sleep(max(ns.delay, 0.1))
