"""The VM process: one VM of the host daemon, in an OS process of its own.

    python -m pyhv.host.worker --state-dir DIR [--channel-fd FD] [--engine E]
                               [--restore FILE [--clone] | --incoming] NAME
    python -m pyhv.host.worker --state-dir DIR --channel-fd FD --clone-group FILE
                               --member-fds FD,FD,... NAME NAME...

A crash of the machine, of Python or of a hostile guest takes down only this process;
the daemon (:mod:`pyhv.host.daemon`) sees it exit and reports the VM crashed. The process
builds the :class:`~pyhv.vm.machine.Machine` of the VM's definition and runs it until
the guest powers off or the daemon says to stop; with ``--restore FILE`` it brings the
machine back from a snapshot file instead (``Machine.restore``: RAM mapped
copy-on-write, every part's state checked), and with ``--clone`` as a new machine (each
NIC a fresh MAC, the machine's generation one up). The definition then only names the
VM and its resources: the machine (devices, images) is the snapshot's. With
``--incoming`` it takes the machine from a live migration instead (below). In
``vms/NAME/run/`` it keeps:

* ``pid``: its pid and start time (so ``pyhv list`` sees it run without the daemon);
* ``console.sock``: the serial console (:class:`~pyhv.host.console.SocketConsole`),
  for ``pyhv console NAME`` and anything else that speaks bytes; ``console.log``: what
  the guest printed (capped);
* ``status``: the status page (:class:`~pyhv.host.ipc.StatusPage`): state (starting,
  running, idle), guest instructions retired, I/O counters, balloon, memory held,
  active (touched in the last 5 s), swapped and KSM-shared (each second), and per disk
  and NIC its I/O budgets and the time its requests waited for them.

**Control channel.** The daemon hands it one end of a socket pair (``--channel-fd``),
JSON lines both ways. From the daemon: ``powerdown`` (ask the guest to power off),
``quit`` (stop the machine now, host side), ``reboot`` (warm reset), ``balloon``
(``bytes``: the balloon size to ask for), ``io`` (new I/O budgets of one disk or NIC:
``disk`` or ``net``, its index; ``limits``, or ``tx``/``rx``: see :meth:`Worker.set_io`),
``snapshot`` (``path``, ``id``, optional
``hold``: save the machine to ``path``), ``release`` (end a ``hold``), ``migrate``
(``host``, ``port``, ``token``, ``id``: move the machine there). To the daemon:
``ready`` (machine built, console served; ``engine``, and ``macs``: the MAC of each NIC
in the config's device order), ``snapshot`` (``id``, ``ok``, and the figures
``ram_bytes``, ``stored_bytes``, ``file_bytes``, ``seconds``, or ``message``),
``listening`` (``--incoming``: ``port``, ``token``), ``migrate`` (``id``, ``ok``, and
the figures ``rounds``, ``pages_sent``, ``last_round_pages``, ``total_seconds``,
``downtime_seconds``, or ``message``),
``idle`` / ``wake`` (only when the status page's ``notify`` flags ask for them: the
scheduler wants them under contention), ``exit`` (``reason``: poweroff,
quit, crash, migrated; ``code``: the guest's exit code), ``error`` (the machine could not be
built: ``type``, ``status``, ``message``). The end of the channel (the daemon died)
stops the machine; the process asks for SIGCONT on its parent's death
(``PR_SET_PDEATHSIG``) so that it notices even while the daemon keeps it stopped.

**Snapshots.** A ``snapshot`` request stops the run loop at its next tick (as ``quit``
and ``reboot`` do), saves the machine with :meth:`Machine.snapshot` (disks flushed, the
file written beside its target and renamed into place, so a failure leaves an earlier
file untouched), answers, and runs the guest on. With ``hold`` (the daemon's paused VMs:
it lets the process continue only to take the snapshot) the guest is not run again
after it until ``release`` (or ``powerdown``, ``quit``): the daemon stops the process
again meanwhile.

**Live migration** (:mod:`pyhv.vm.migration`). A ``migrate`` request stops the run loop
at its next tick, connects to ``host:port`` and sends the machine, running the guest
between the page batches through the run loop's own tick (the console, the status page
and the channel are served meanwhile; a ``quit`` then aborts the migration). On success
the process answers with the figures and exits with reason ``migrated`` (the machine is
the destination's now); on failure it answers ``ok: false`` with the reason and the
guest runs on here, its disks taken back. ``--incoming`` is the other end: the process
listens on 127.0.0.1 on a free port with a fresh one-time token
(``secrets.token_hex``), tells the daemon both (``listening``), accepts one connection
within :data:`INCOMING_TIMEOUT` seconds and takes the machine from it
(:func:`~pyhv.vm.migration.receive`, which checks the token); then it runs it like any
other. A timeout, a wrong token or a failed transfer ends the process as a failed start
(the daemon removes the VM's definition again).

**Clone groups** (``--clone-group FILE NAME...``, :func:`clone_group`): one process
warms up (imports, LLVM, one checked restore of FILE as a clone: the machine), freezes
its heap and forks one VM process per NAME, each of which takes that machine over as a
clone of its own (fresh MACs, its own switch ports, console, status page and channel)
and is then served as a ``--restore FILE --clone`` process would be (:func:`serve_vm`);
the clones share every page of heap, code, LLVM, machine and engines none of them
writes. It reports each child's pid (with a pidfd) and exit status to the daemon on a
channel of its own, and continues its children when the daemon dies.

**Scheduling** is done from outside: the daemon stops and continues this process
(SIGSTOP/SIGCONT) to grant it CPU time. The process only says when the guest idles:
the machine's idle wait (every vCPU in WFI) is where it gives its CPU back.

**Power-off request.** The virt board has no power button; like a serial console
server, the host asks with a BREAK on the UART followed by a Magic SysRq key: ``s``
(sync), ``u`` (remount read-only), ``o`` (power off), half a second apart, which Linux
obeys (``CONFIG_MAGIC_SYSRQ_SERIAL``); pyhv's test guests power off on the BREAK.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import PyhvError
from ..vm.machine import EXIT_GUEST_CRASH, Machine, RunResult, tune_gc_for_vm
from .console import SocketConsole
from .ipc import (
    EXITING,
    IDLE,
    NOTIFY_IDLE,
    NOTIFY_WAKE,
    RUNNING,
    STARTING,
    LineBuffer,
    ProtocolError,
    StatusPage,
    encode,
)

EXIT_START_FAILED = 2
TICK = 0.001  # seconds between the run loop's checks of the channel and status updates
STATS_EVERY = 0.1  # seconds between I/O counter updates on the status page
MEMORY_EVERY = 1.0  # seconds between updates of the memory figures (smaps: ~1 ms)
ACTIVE_WINDOW = 5.0  # seconds of the window "active" memory was touched in
SYSRQ_POWEROFF = (b"s", b"u", b"o")  # sync, remount read-only, power off
SYSRQ_GAP = 0.5  # seconds between the SysRq keys
PR_SET_PDEATHSIG = 1
INCOMING_TIMEOUT = 60.0  # seconds an --incoming process waits for its source
CONNECT_TIMEOUT = 10.0  # seconds to reach a migration's destination
MIGRATION_TIMEOUT = 60.0  # seconds without progress before a migration fails
WARM_RUN = 0.3  # seconds a clone group's throwaway machine runs before the fork

_IDLE_MSG = encode({"ev": "idle"})
_WAKE_MSG = encode({"ev": "wake"})


def send_break(uart: Any, key: bytes = b"") -> None:
    """A serial BREAK, then ``key``: received as a NUL byte with LSR.BI set (what a
    16550 reports for a break condition), as Linux's 8250 driver expects for SysRq."""
    hook = getattr(uart, "send_break", None)
    if hook is not None:
        hook(key)
        return
    from ..devices.uart16550 import LSR_BI

    uart.receive(b"\0" + key)
    uart.lsr |= LSR_BI
    uart._update_irq()  # the model has no public way to raise a line-status event


class _WorkerMachine(Machine):
    """A :class:`Machine` that tells its VM process when the guest idles and wakes."""

    worker: Worker | None = None

    def _idle(self, run_deadline: float | None) -> None:
        worker = self.worker
        if worker is None:
            super()._idle(run_deadline)
            return
        worker.idle_begin()
        try:
            super()._idle(run_deadline)
        finally:
            worker.idle_end()


class Worker:
    """Runs one VM's machine under the daemon's control (module docstring)."""

    def __init__(
        self,
        machine: Machine,
        console: SocketConsole,
        status: StatusPage,
        channel: socket.socket | None,
    ) -> None:
        self.machine = machine
        self.console = console
        self.status = status
        self.channel = channel
        self.request: str | None = None  # "quit", "reboot", "snapshot": stop the run loop
        self.snapshots: list[dict[str, Any]] = []  # requests to save the machine, in order
        self.held = False  # a snapshot with "hold": the guest waits for "release"
        self.migrations: list[dict[str, Any]] = []  # requests to migrate, in order
        self._ended: RunResult | None = None  # a run that ended the guest mid-migration
        self._lines = LineBuffer()
        self._next_tick = 0.0
        self._next_stats = 0.0
        self._next_memory = 0.0
        self._next_window = 0.0
        self._sysrq: list[tuple[float, bytes]] = []
        self._io: list[tuple[str, int, int, Any]] | None = None  # see io_devices
        self.gdb: Any = None  # the gdb stub, once ``debug`` opened it (vm/gdbstub.py)
        if channel is not None:
            channel.setblocking(False)
            console.watch(channel.fileno(), self._on_channel)
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        console.watch(self._wakeup_r, self._on_signal)

    # ----------------------------------------------------------------- running

    def run(self) -> tuple[str, int, str | None]:
        """Run the machine until it powers off, crashes or is told to quit: (reason, the
        guest's exit code, the crash description)."""
        machine = self.machine
        old = signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self.status.state = RUNNING
            while True:
                if self.gdb is not None:  # gdb may hold the guest: the stub runs it
                    result = self.gdb.run_with(machine, self.tick)
                else:
                    result = machine.run(stop_when=self.tick)
                if result.reason == "stopped":
                    request, self.request = self.request, None
                    self._take_snapshots()
                    if self.migrations:
                        if request == "quit":
                            self._refuse_migrations("the VM is stopping")
                        elif self._migrate():
                            return "migrated", 0, None
                        elif self._ended is not None:  # it stopped meanwhile
                            ended = self._ended
                            if ended.reason == "crash":
                                return "crash", ended.exit_code, machine.crash
                            return ended.reason, ended.exit_code, None
                        # a request that came meanwhile (reboot, snapshot) stays in
                        # self.request: the next run stops at once for it
                    if request != "quit" and self.held:
                        request = self._wait_released()
                    if request == "quit":
                        return "quit", 0, None
                    if request == "reboot":
                        machine.reset()
                    continue
                if result.reason == "crash":
                    return "crash", result.exit_code, machine.crash
                return result.reason, result.exit_code, None
        finally:
            if self.gdb is not None:
                self.gdb.close()
            signal.set_wakeup_fd(old)
            self.status.instructions = machine.instructions
            self.status.state = EXITING

    def _take_snapshots(self) -> None:
        """Save the machine (stopped between runs) for each pending request, answering
        each: the figures, or why it failed (one line; the guest runs on either way)."""
        while self.snapshots:
            request = self.snapshots.pop(0)
            reply: dict[str, Any] = {"ev": "snapshot", "id": request.get("id")}
            path = request.get("path")
            t0 = time.monotonic()
            try:
                if not isinstance(path, str) or not path:
                    raise PyhvError(f"snapshot: bad path {path!r}")
                figures = self.machine.snapshot(path)
            except (PyhvError, OSError) as e:
                message = str(e) if not isinstance(e, OSError) else (
                    f"cannot write snapshot '{path}': {e.strerror or e}")
                reply.update(ok=False, message=message.splitlines()[0] if message else
                             type(e).__name__)
            else:
                reply.update(ok=True, seconds=round(time.monotonic() - t0, 3), **figures)
            if request.get("hold"):
                self.held = True
            self.send(reply)

    def _migrate(self) -> bool:
        """Move the machine (stopped between runs) to each requested destination in
        turn until one takes it (True: the machine is gone, the process ends), answering
        each request; on failure the guest runs on here."""
        from ..vm.migration import migrate

        while self.migrations:
            request = self.migrations.pop(0)
            reply: dict[str, Any] = {"ev": "migrate", "id": request.get("id")}
            host, port, token = request.get("host"), request.get("port"), request.get("token")
            if not (isinstance(host, str) and isinstance(port, int)
                    and isinstance(token, str)):
                reply.update(ok=False, message=f"migrate: a bad request {request!r}")
                self.send(reply)
                continue
            try:
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            except OSError as e:
                reply.update(ok=False, message=f"cannot reach the destination's VM process "
                             f"at {host}:{port}: {e.strerror or e}")
                self.send(reply)
                continue
            try:
                sock.settimeout(MIGRATION_TIMEOUT)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._ended = None
                result = migrate(self.machine, sock, token=token, runner=self._run_slice,
                                 reply_timeout=MIGRATION_TIMEOUT)
            finally:
                sock.close()
            if result.ok:
                reply.update(ok=True, rounds=result.rounds, pages_sent=result.pages_sent,
                             last_round_pages=result.last_round_pages,
                             total_seconds=round(result.total_seconds, 4),
                             downtime_seconds=round(result.downtime_seconds, 4),
                             stop_copy_seconds=round(result.stop_copy_seconds, 4),
                             build_seconds=round(result.build_seconds, 4))
                self.send(reply)
                self._refuse_migrations("the VM has migrated already")
                return True
            why = result.reason
            if self._ended is not None:
                why = f"the guest stopped during the migration ({self._ended.reason})"
            elif why.startswith("failed: "):
                why = why[len("failed: "):]
            reply.update(ok=False, message=why.splitlines()[0] if why else "failed")
            self.send(reply)
            if self._ended is not None:
                self._refuse_migrations("the guest stopped")
                return False
        return False

    def _refuse_migrations(self, why: str) -> None:
        while self.migrations:
            request = self.migrations.pop(0)
            self.send({"ev": "migrate", "id": request.get("id"), "ok": False, "message": why})

    def _run_slice(self, seconds: float) -> RunResult:
        """migrate()'s runner: run the guest for ``seconds`` with the run loop's tick (the
        console, channel and status page served); a ``quit`` meanwhile ends it."""
        result = self.machine.run(timeout=seconds, stop_when=self.tick)
        if result.reason == "stopped" and self.request == "quit":
            result = dataclasses.replace(result, reason="quit")
        if result.reason not in ("timeout", "limit", "stopped"):
            self._ended = result
        return result

    def _wait_released(self) -> str | None:
        """Keep the guest stopped after a held snapshot (the daemon's paused VM) until
        ``release``; serve the console and the channel meanwhile. Returns the request
        that ended the wait (None for a plain release)."""
        while self.held:
            self.console.service()
            if self.snapshots:
                self._take_snapshots()
            if self.request == "snapshot":
                self.request = None
            if self.request == "quit":
                break
            if self.held:
                time.sleep(TICK * 5)
        self.held = False
        request, self.request = self.request, None
        return request

    def tick(self) -> bool:
        """The run loop's ``stop_when``, called after every round of hart slices: every
        TICK seconds, serve the channel and the console and update the status page."""
        now = time.monotonic()
        if now < self._next_tick:
            return self.request is not None
        self._next_tick = now + TICK
        status = self.status
        status.instructions = self.machine.instructions
        status.heartbeat_ns = time.monotonic_ns()
        console = self.console
        console.service()
        if console.has_input():
            # Typed bytes read from the socket just now: hand them to the UART before
            # the machine may go idle (its idle wait only sees bytes still in a socket).
            data = console.read_input()
            if data:
                self.machine.board.uart.receive(data)
        if self._sysrq and now >= self._sysrq[0][0]:
            _, key = self._sysrq.pop(0)
            send_break(self.machine.board.uart, key)
        if now >= self._next_stats:
            self._next_stats = now + STATS_EVERY
            self._update_stats()
        return self.request is not None

    def idle_begin(self) -> None:
        status = self.status
        status.instructions = self.machine.instructions
        status.state = IDLE
        if status.notify & NOTIFY_IDLE:
            self._notify(_IDLE_MSG)

    def idle_end(self) -> None:
        status = self.status
        status.state = RUNNING
        status.wakeups += 1
        if status.notify & NOTIFY_WAKE:
            self._notify(_WAKE_MSG)

    def _update_stats(self) -> None:
        status = self.status
        console = self.console
        status.console_out = console.bytes_out
        status.console_in = console.bytes_in
        disk_read = disk_write = net_tx = net_rx = 0
        for device in self.machine.board.virtio_devices:
            stats = getattr(device, "stats", None)
            if isinstance(stats, dict):
                disk_read += stats.get("read_bytes", 0)
                disk_write += stats.get("write_bytes", 0)
                net_tx += stats.get("tx_frames", 0)
                net_rx += stats.get("rx_frames", 0)
        status.disk_read = disk_read
        status.disk_write = disk_write
        status.net_tx = net_tx
        status.net_rx = net_rx
        self._update_io_table()
        balloon = self._balloon()
        if balloon is not None:
            status.balloon_target = balloon.target_bytes()
            status.balloon_actual = balloon.actual_bytes()
        now = time.monotonic()
        if now >= self._next_memory:
            self._next_memory = now + MEMORY_EVERY
            if balloon is not None:
                stats = balloon.stats()
                status.guest_free = stats.get("free_memory", 0)
                status.guest_available = stats.get("available_memory", 0)
                balloon.request_stats()  # the next report, for the next update
            self._update_memory(now)

    def _update_memory(self, now: float) -> None:
        """Held, active (touched in the last window of ACTIVE_WINDOW seconds), swapped and
        KSM-shared memory, for the host's memory manager (host/memory.py)."""
        restart = now >= self._next_window
        if restart:
            self._next_window = now + ACTIVE_WINDOW
        ram = self.machine.board.ram
        usage = ram.usage(restart=restart)
        if usage is None:
            return
        status = self.status
        status.held, referenced, status.swapped = usage
        if restart:
            status.active = referenced
        merged = ram.ksm_merged_pages()
        status.shared = 0 if merged is None else merged * 4096

    def io_devices(self) -> list[tuple[str, int, int, Any]]:
        """(``"disk"`` or ``"net"``, its index among the disks or NICs, its position in
        the machine's config, the device) of every disk and NIC, in the config's order
        (a definition's ``[[disk]]`` and ``[[net]]`` order)."""
        if self._io is None:
            from ..vm.config import DiskSpec, NetSpec, place

            devices = self.machine.config.devices
            slots = self.machine.board.virtio_slots
            counts = {"disk": 0, "net": 0}
            self._io = []
            for pos, (spec, slot) in enumerate(zip(devices, place(devices), strict=True)):
                kind = "disk" if isinstance(spec, DiskSpec) else "net" if isinstance(
                    spec, NetSpec) else None
                if kind is not None:
                    self._io.append((kind, counts[kind], pos, slots[slot].device))
                    counts[kind] += 1
        return self._io

    def _update_io_table(self) -> None:
        """Each disk's and NIC's throttled time and waits, bytes or frames, and the
        budgets it applies now, on the status page's I/O table."""
        from .ipc import IO_DISK, IO_NET, IO_SLOTS

        for slot, (kind, index, _, device) in enumerate(self.io_devices()[:IO_SLOTS]):
            stats = getattr(device, "stats", {})
            if kind == "disk":
                budget = device.budget
                lim = budget.limits
                self.status.set_io(slot, IO_DISK, index, {
                    "throttled_ns": int(budget.throttled_seconds * 1e9),
                    "throttled": budget.throttled,
                    "read_bytes": stats.get("read_bytes", 0),
                    "write_bytes": stats.get("write_bytes", 0),
                    "bps": lim.bps, "iops": lim.ops, "bps_burst": lim.bps_burst,
                    "iops_burst": lim.ops_burst})
            else:
                values: dict[str, int | None] = {
                    "tx_frames": stats.get("tx_frames", 0),
                    "rx_frames": stats.get("rx_frames", 0)}
                for way, budget in (("tx", device.tx_budget), ("rx", device.rx_budget)):
                    lim = budget.limits
                    values.update({f"{way}_throttled_ns": int(budget.throttled_seconds * 1e9),
                                   f"{way}_throttled": budget.throttled,
                                   f"{way}_bps": lim.bps, f"{way}_pps": lim.ops,
                                   f"{way}_bps_burst": lim.bps_burst})
                self.status.set_io(slot, IO_NET, index, values)

    def set_io(self, message: dict[str, Any]) -> None:
        """``io``: new I/O budgets for one disk (``disk``: its index; ``limits``: [bps,
        iops, bps_burst, iops_burst]) or NIC (``net``; ``tx``, ``rx``: [bps, pps,
        bps_burst], either left out to keep it), at once. The machine's config follows,
        so a snapshot or a migration keeps them."""
        from ..devices.io_budget import Limits
        from ..errors import ConfigError

        kind = "disk" if "disk" in message else "net"
        index = message.get(kind)
        found = [(pos, device) for k, i, pos, device in self.io_devices()
                 if k == kind and i == index]
        if not found:
            print(f"pyhv worker: io: no {kind} {index!r}", file=sys.stderr)
            return
        pos, device = found[0]
        config = self.machine.config
        spec = config.devices[pos]
        try:
            if kind == "disk":
                bps, iops, bps_burst, iops_burst = message["limits"]
                device.set_limits(Limits(bps, iops, bps_burst, iops_burst))
                spec = dataclasses.replace(spec, bps=bps, iops=iops, bps_burst=bps_burst,
                                           iops_burst=iops_burst)
            else:
                ways = {way: message[way] for way in ("tx", "rx") if message.get(way)}
                limits = {way: Limits(bps, pps, burst)
                          for way, (bps, pps, burst) in ways.items()}
                device.set_limits(tx=limits.get("tx"), rx=limits.get("rx"))
                for way, (bps, pps, burst) in ways.items():
                    spec = dataclasses.replace(spec, **{f"{way}_bps": bps, f"{way}_pps": pps,
                                                        f"{way}_bps_burst": burst})
        except (ConfigError, TypeError, ValueError, KeyError) as e:
            print(f"pyhv worker: io {message!r}: {e}", file=sys.stderr)
            return
        devices = list(config.devices)
        devices[pos] = spec
        self.machine.config = dataclasses.replace(config, devices=tuple(devices))
        self._update_io_table()

    def _balloon(self) -> Any:
        from ..devices.virtio.balloon import VirtioBalloon

        for device in self.machine.board.virtio_devices:
            if isinstance(device, VirtioBalloon):
                return device
        return None

    # ----------------------------------------------------------------- the channel

    def _open_gdb(self, request: dict[str, Any]) -> None:
        """``debug``: open the VM's gdb stub on a free loopback port (once; later
        requests get the same port) and answer with it. The run loop switches to the
        stub's at its next tick; the guest runs on until gdb attaches."""
        reply: dict[str, Any] = {"ev": "debug", "id": request.get("id")}
        if self.gdb is None:
            from ..vm.gdbstub import GdbServer

            try:
                self.gdb = GdbServer("127.0.0.1", 0, option="debug", log=sys.stderr)
            except PyhvError as e:
                reply.update(ok=False, message=str(e))
                self.send(reply)
                return
            self.request = self.request or "debug"  # leave machine.run for the stub's
        reply.update(ok=True, port=self.gdb.port)
        self.send(reply)

    def send(self, message: dict[str, Any]) -> None:
        """A message the daemon must get (blocks until sent; a dead daemon is ignored)."""
        if self.channel is None:
            return
        try:
            self.channel.setblocking(True)
            self.channel.sendall(encode(message))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.channel.setblocking(False)

    def _notify(self, data: bytes) -> None:
        """A hint (idle, wake): dropped when the channel is full, the status page has it."""
        if self.channel is None:
            return
        with contextlib.suppress(OSError):
            self.channel.send(data, socket.MSG_DONTWAIT)

    def _on_channel(self) -> None:
        assert self.channel is not None
        try:
            data = self.channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the daemon is gone: stop, cleanly
            self.console.unwatch(self.channel.fileno())
            self.channel.close()
            self.channel = None
            self.request = "quit"
            return
        try:
            messages = self._lines.feed(data)
        except ProtocolError:
            return
        for message in messages:
            self.handle(message)

    def handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "quit":
            self.request = "quit"
        elif op == "reboot":
            self.request = self.request or "reboot"
        elif op == "snapshot":
            self.snapshots.append(message)
            self.request = self.request or "snapshot"
        elif op == "migrate":
            self.migrations.append(message)
            self.request = self.request or "migrate"
        elif op == "debug":
            self._open_gdb(message)
        elif op in ("release", "powerdown"):
            self.held = False
            for pending in self.snapshots:  # resumed before the snapshot was taken
                pending["hold"] = False
        if op == "powerdown":
            now = time.monotonic()
            self._sysrq = [(now + i * SYSRQ_GAP, key) for i, key in enumerate(SYSRQ_POWEROFF)]
        elif op == "io":
            self.set_io(message)
        elif op == "balloon":
            balloon = self._balloon()
            size = message.get("bytes")
            if balloon is not None and isinstance(size, int):
                balloon.set_target(size)
                self.status.balloon_target = balloon.target_bytes()

    def _on_signal(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self._wakeup_r, 512)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.request = "quit"


# ------------------------------------------------------------------------ the process


def _continue_when_parent_dies() -> None:
    """Get SIGCONT when the daemon dies, so a VM process it keeps stopped wakes up and
    sees its channel closed (a daemon already gone shows as a closed channel at once)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGCONT, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def generation_id(machine: Machine) -> str | None:
    """The VM generation ID its guest reads (devices/vmgenid.py), as a UUID (the
    device holds it in QEMU's byte order, ``bytes_le``); None without the device."""
    import uuid

    dev = machine.board.vmgenid
    return None if dev is None else str(uuid.UUID(bytes_le=bytes(dev.guid)))


def nic_macs(machine: Machine) -> list[str]:
    """The MAC of each NIC of ``machine``, in its config's device order (a definition's
    ``[[net]]`` order)."""
    from ..vm.config import NetSpec, place

    devices = machine.config.devices
    slots = machine.board.virtio_slots
    macs = []
    for spec, slot in zip(devices, place(devices), strict=True):
        if isinstance(spec, NetSpec):
            mac = getattr(slots[slot].device, "mac", b"")
            macs.append(":".join(f"{b:02x}" for b in mac))
    return macs


def receive_incoming(channel: socket.socket | None, console: SocketConsole,
                     engine: str | None, timeout: float = INCOMING_TIMEOUT) -> Machine:
    """``--incoming``: listen on 127.0.0.1 (a free port) with a fresh one-time token, tell
    the daemon both, accept one connection within ``timeout`` seconds and take the
    machine a live migration sends over it. A ``quit`` from the daemon (or its end)
    meanwhile stops the wait. :class:`PyhvError` for anything that fails."""
    from ..vm.migration import receive

    token = secrets.token_hex(16)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        if channel is not None:
            channel.sendall(encode({"ev": "listening", "port": port, "token": token}))
        else:  # run by hand: say it on stdout
            print(f"listening on 127.0.0.1:{port} token {token}", flush=True)
        deadline = time.monotonic() + timeout
        lines = LineBuffer()
        watched: list[Any] = [listener] + ([channel] if channel is not None else [])
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PyhvError(f"no migration came within {timeout:g} s")
            ready, _, _ = select.select(watched, [], [], left)
            if channel is not None and channel in ready:
                data = channel.recv(65536)
                try:
                    messages = lines.feed(data) if data else [{"op": "quit"}]
                except ProtocolError:
                    messages = []
                if any(m.get("op") == "quit" for m in messages):
                    raise PyhvError("stopped while it waited for the migration")
            if listener in ready:
                conn, _ = listener.accept()
                break
    finally:
        listener.close()
    try:
        conn.setblocking(True)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return receive(conn, console, engine=engine, token=token, timeout=timeout,
                       machine_class=_WorkerMachine)
    finally:
        conn.close()


def _error_message(error: BaseException) -> dict[str, Any]:
    from .errors import HostError

    status = error.http_status if isinstance(error, HostError) else 422
    if isinstance(error, OSError):
        status = 500
    return {"ev": "error", "type": type(error).__name__, "status": status, "message": str(error)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyhv.host.worker",
        description="Run one VM of a pyhv state directory (the host daemon starts these).",
    )
    parser.add_argument("--state-dir", required=True, metavar="DIR")
    parser.add_argument("--channel-fd", type=int, metavar="FD",
                        help="the daemon's end of the control channel (a socket)")
    parser.add_argument("--engine", metavar="NAME", help="override the definition's engine")
    parser.add_argument("--restore", metavar="FILE",
                        help="bring the machine back from this snapshot file instead of "
                        "building it from the definition")
    parser.add_argument("--clone", action="store_true",
                        help="with --restore: a new machine (fresh MACs, generation + 1)")
    parser.add_argument("--incoming", action="store_true",
                        help="take the machine from a live migration: listen on 127.0.0.1 "
                        "(a free port, a one-time token, both told to the daemon)")
    parser.add_argument("--clone-group", metavar="FILE",
                        help="start one clone of FILE per NAME, forked from this process "
                        "once it has warmed up (--channel-fd: the group's channel; "
                        "--member-fds: each NAME's control channel)")
    parser.add_argument("--member-fds", metavar="FD,FD,...",
                        help="with --clone-group: each NAME's control channel, in order")
    parser.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    if args.clone and args.restore is None:
        parser.error("--clone needs --restore FILE")
    if args.incoming and args.restore is not None:
        parser.error("--incoming and --restore exclude each other")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when VMs stop
    if args.clone_group is not None:
        if args.restore is not None or args.incoming or args.clone:
            parser.error("--clone-group excludes --restore, --clone and --incoming")
        try:
            fds = [int(fd) for fd in (args.member_fds or "").split(",") if fd]
        except ValueError:
            parser.error(f"--member-fds {args.member_fds!r}: expected FD,FD,...")
        if args.channel_fd is None or len(fds) != len(args.names):
            parser.error("--clone-group needs --channel-fd and one --member-fds FD per NAME")
        return clone_group(args.state_dir, args.clone_group, args.names, fds,
                           args.channel_fd, args.engine)
    if len(args.names) != 1:
        parser.error("one NAME (several only with --clone-group)")
    channel = socket.socket(fileno=args.channel_fd) if args.channel_fd is not None else None
    return serve_vm(args.state_dir, args.names[0], channel, engine=args.engine,
                    restore=args.restore, clone=args.clone, incoming=args.incoming)


def serve_vm(state_dir: str, name: str, channel: socket.socket | None, *,
             engine: str | None = None, restore: str | None = None, clone: bool = False,
             incoming: bool = False, verify: bool = True,
             prebuilt: _WorkerMachine | None = None) -> int:
    """Build (or restore, or receive) VM ``name``'s machine and run it under the daemon
    (the module docstring); the process's exit status. ``prebuilt``: a clone's machine
    restored by the clone group's process this one was forked from, taken over here
    (:meth:`~pyhv.vm.machine.Machine.take_over_as_clone`) instead of restored again."""
    from .registry import Registry, write_pid_file

    if channel is not None:
        _continue_when_parent_dies()
    registry = Registry(state_dir)
    status: StatusPage | None = None
    console: SocketConsole | None = None
    machine: _WorkerMachine | None = None

    def failed(error: BaseException) -> int:
        message = _error_message(error)
        print(f"pyhv worker: cannot start VM '{name}': {error}", file=sys.stderr)
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.sendall(encode(message))
        if console is not None:
            console.close()
        return EXIT_START_FAILED

    try:
        definition = registry.load(name)
        run_dir = registry.run_dir(name)
        run_dir.mkdir(mode=0o700, exist_ok=True)
        if channel is None:
            write_pid_file(run_dir / "pid", os.getpid())
        status = StatusPage(run_dir / "status", create=channel is None)
        status.pid = os.getpid()
        status.state = STARTING
        status.started_ns = time.monotonic_ns()
        status.memory = definition.memory
        console = SocketConsole(run_dir / "console.sock", log=run_dir / "console.log")
        tune_gc_for_vm()
        if prebuilt is not None:
            prebuilt.take_over_as_clone(console)
            machine = prebuilt
        elif restore is not None:
            restored = _WorkerMachine.restore(restore, console, engine=engine, clone=clone,
                                              verify=verify)
            assert isinstance(restored, _WorkerMachine)
            machine = restored
        elif incoming:
            received = receive_incoming(channel, console, engine)
            assert isinstance(received, _WorkerMachine)
            machine = received
        else:
            machine = _WorkerMachine(definition.to_machine_config(engine=engine), console)
    except (PyhvError, OSError, ValueError) as e:
        return failed(e)
    console.uart = machine.board.uart
    status.engine = machine.engine_name
    worker = Worker(machine, console, status, channel)
    machine.worker = worker
    worker.send({"ev": "ready", "pid": os.getpid(), "engine": machine.engine_name,
                 "macs": nic_macs(machine), "generation_id": generation_id(machine)})
    reason, code, crash = "crash", EXIT_GUEST_CRASH, None
    try:
        reason, code, crash = worker.run()
    finally:
        try:
            machine.close()
        finally:
            console.close()
            worker.send({"ev": "exit", "reason": reason, "code": code, "crash": crash,
                         "instructions": machine.instructions})
            if channel is None:
                for leftover in ("pid", "status"):
                    with contextlib.suppress(OSError):
                        (Path(run_dir) / leftover).unlink()
    return EXIT_GUEST_CRASH if reason == "crash" else 0


# ------------------------------------------------------------------------ clone groups


def _threads() -> int:
    """The OS threads of this process (LLVM or a C library may start some Python does
    not know of)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def clone_group(state_dir: str, path: str, names: Sequence[str], fds: Sequence[int],
                group_fd: int, engine: str | None = None) -> int:
    """``--clone-group FILE``: one process that warms up (imports, the JIT's LLVM, a
    throwaway run: :func:`_warm_jit`, one restore of FILE as a clone that checks its
    RAM checksum), freezes its heap for the collector and forks one VM process per
    name: each child takes the restored machine over
    (:meth:`~pyhv.vm.machine.Machine.take_over_as_clone`: fresh MACs, a switch port of
    its own) and serves its VM as a ``--restore FILE --clone`` process would (its own
    run directory, console, status page, control channel ``fds[i]``), sharing with its
    siblings every page of interpreter heap, code, LLVM, machine and engine tables none
    of them wrote (ten clones of a Linux snapshot: 3.2x one VM's memory, against 4.3x
    when each restored its own: README). A machine with parts that cannot be shared
    that way (disks, shared directories: :meth:`~pyhv.vm.machine.Machine.forkable`) is
    closed instead, and each child restores its own clone of FILE. On the group's channel
    (``group_fd``) this process tells the daemon each child's pid with a pidfd of it
    (``forked``, SCM_RIGHTS: the daemon watches the very process, no pid reuse race)
    and, once it has reaped one, how it ended (``reaped``: ``status``, a
    ``Popen.returncode``: negative for a signal). When the group's channel ends (the
    daemon died) it continues every child it has (SIGCONT: the daemon may have left
    them stopped; each then sees its own channel closed and stops its machine). It
    exits when its last child has.

    Forking is only safe from a single-threaded process; should anything have started a
    thread by then, each child execs a plain ``--restore FILE --clone`` VM process
    instead (still a child of this one, reported the same way)."""
    from ..vm.console import BufferConsole
    from .registry import Registry

    group = socket.socket(fileno=group_fd)
    members = dict(zip(names, fds, strict=True))
    _continue_when_parent_dies()
    registry = Registry(state_dir)

    def fail_all(error: BaseException) -> int:
        print(f"pyhv worker: cannot start the clones of '{path}': {error}", file=sys.stderr)
        message = _error_message(error)
        for fd in members.values():
            with contextlib.suppress(OSError):
                os.write(fd, encode(message))
        return EXIT_START_FAILED

    try:
        for name in names:
            registry.load(name)
        from ..cpu.engines import jit_unavailable_reason

        if jit_unavailable_reason() is None:  # LLVM up before the fork: shared by every child
            from ..cpu.jit.compiler import load_llvm

            load_llvm()
        restored = _WorkerMachine.restore(path, BufferConsole(), engine=engine, clone=True,
                                          verify=True)
        assert isinstance(restored, _WorkerMachine)
        forking = _threads() == 1
        warm: _WorkerMachine | None = None  # the clones' shared machine
        if forking and restored.forkable():
            _warm_jit(path, engine)
            restored.prepare_fork()
            warm = restored
        else:
            restored.close()
    except (PyhvError, OSError, ValueError) as e:
        return fail_all(e)
    if not forking:
        print(f"pyhv worker: {_threads()} threads after warming up: the clones are "
              "started as processes of their own (no fork)", file=sys.stderr)
    gc.collect()
    gc.freeze()  # the collector leaves the shared heap's objects (and pages) alone
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, tuple[int, str]] = {}  # pidfd -> (pid, name)
    for name, fd in members.items():
        if forking:
            pid = os.fork()
            if pid == 0:
                group.close()
                _clone_child(registry, name, fd,
                             [*(f for f in members.values() if f != fd), *children],
                             path, engine, warm)
        else:
            pid = _spawn_clone(registry, name, fd, state_dir, path, engine)
        pidfd = os.pidfd_open(pid)
        children[pidfd] = (pid, name)
        with contextlib.suppress(OSError):
            socket.send_fds(group, [encode({"ev": "forked", "name": name, "pid": pid,
                                            "fork": forking})], [pidfd])
    for fd in members.values():
        os.close(fd)
    if warm is not None:
        warm.close()  # the children have it (copy-on-write); its RAM mapping goes here
    del warm, restored
    daemon_gone = False
    while children:
        watched: list[Any] = list(children)
        if not daemon_gone:
            watched.append(group)
        ready, _, _ = select.select(watched, [], [])
        if group in ready:
            try:
                data = group.recv(4096)
            except OSError:
                data = b""
            if not data:  # the daemon is gone: wake the children it may hold stopped
                daemon_gone = True
                for pid, _ in children.values():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
        for pidfd in [fd for fd in ready if isinstance(fd, int)]:
            pid, name = children.pop(pidfd)
            _, wait_status = os.waitpid(pid, 0)
            os.close(pidfd)
            code = os.waitstatus_to_exitcode(wait_status)
            if not daemon_gone:
                with contextlib.suppress(OSError):
                    group.sendall(encode({"ev": "reaped", "name": name, "pid": pid,
                                          "status": code}))
    return 0


def _warm_jit(path: str, engine: str | None) -> None:
    """Run a throwaway clone of ``path`` here for :data:`WARM_RUN` seconds (a newline
    typed on its console), then close it: the JIT loads from its code cache (or
    compiles, on this thread: no thread may run at the fork) the code the guest runs
    there, and the interpreter specialises the Python code the run takes; the clones
    forked afterwards share that code instead of each loading it again."""
    from ..cpu.engines import jit_unavailable_reason
    from ..vm.console import BufferConsole

    jit = None
    if jit_unavailable_reason() is None:
        from ..cpu.jit.compiler import compiler

        jit = compiler()
    background = jit.background if jit is not None else False
    console = BufferConsole()
    throwaway = _WorkerMachine.restore(path, console, engine=engine, clone=True, verify=False)
    throwaway.unplug_nics()  # what it sends must not reach the clones' network
    try:
        if jit is not None:
            jit.background = False
        console.send("\n")
        throwaway.run(timeout=WARM_RUN)
    finally:
        if jit is not None:
            jit.background = background
        throwaway.close()


def _clone_child(registry: Any, name: str, fd: int, others: Sequence[int], path: str,
                 engine: str | None, machine: _WorkerMachine | None = None) -> None:
    """A forked child of a clone group: VM ``name``'s process from here on, taking over
    the group's ``machine`` (or restoring its own clone of ``path`` without one). Never
    returns (``os._exit``: the parent's cleanups are not this process's)."""
    code = 1
    try:
        for other in others:
            with contextlib.suppress(OSError):
                os.close(other)
        vm_dir = registry.vm_dir(name)
        out = os.open(vm_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        os.chdir(vm_dir)
        code = serve_vm(str(registry.root), name, socket.socket(fileno=fd), engine=engine,
                        restore=path, clone=True, verify=False, prebuilt=machine)
    except BaseException:  # noqa: BLE001 - this process ends here, whatever happened
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _spawn_clone(registry: Any, name: str, fd: int, state_dir: str, path: str,
                 engine: str | None) -> int:
    """No fork: a plain ``--restore FILE --clone`` VM process, a child of this one."""
    vm_dir = registry.vm_dir(name)
    with open(vm_dir / "worker.log", "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.host.worker", "--state-dir", state_dir,
             "--channel-fd", str(fd), "--restore", path, "--clone",
             *(["--engine", engine] if engine else []), name],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, cwd=vm_dir)
    proc.returncode = 0  # reaped by clone_group with os.waitpid, not by Popen
    return proc.pid


if __name__ == "__main__":
    sys.exit(main())
