"""The host daemon (``pyhv host serve``): runs VMs, shares the CPUs among them, and
answers the CLI, the Python API and, with ``--listen``, the REST API.

    pyhv host serve [--state-dir DIR] [--policy shares|round-robin] [--cpus N]
                    [--cpu-backend auto|feedback|cgroup]
                    [--listen [ADDR:PORT]] [--token-file FILE]

**One process per VM.** Each running VM is a VM process (:mod:`pyhv.host.worker`),
started with one end of a socket pair as its control channel, a status page in shared
memory (:class:`~pyhv.host.ipc.StatusPage`) and a pidfd that tells the daemon when it
exits. A VM process that dies, however it dies, takes only its VM along: the VM is
reported ``crashed`` (reason and the end of its log in ``vms/NAME/crashed``) and can be
started again; an ``autostart`` VM is restarted after 1, 5, then 30 s, at most three
times in ten minutes. Autostart VMs are started when the daemon starts.

**Clone groups.** ``clone`` of several VMs starts one clone group process
(:func:`pyhv.host.worker.clone_group`) that warms up once and forks their VM processes,
so that they share its interpreter heap, code and LLVM copy-on-write. A clone's process
is then the group's child, not the daemon's: the group process sends each one's pid with
a pidfd of it (SCM_RIGHTS) and, once it has reaped one, its exit status; the daemon
handles the clone as any VM process otherwise (``fork_clones=False`` or
``PYHV_FORK_CLONES=0``: separate VM processes).

**Scheduling.** The :class:`~pyhv.host.scheduler.Scheduler` decides which VM processes
hold the host's CPUs (at most ``cpus`` at a time); the daemon applies each decision with
SIGSTOP/SIGCONT, measures what every process really used (its CPU clock,
``clock_gettime`` of the process) and feeds that back, so the split converges on the
targets. It decides again when a quantum or a limited VM's tokens run out, and at once
when a VM process says it went idle or woke up (it says so only when the status page
asks it to: under contention, or for a limited VM). A stopped VM process still gets its
control messages: they wait in the channel. That is the ``feedback`` CPU backend; with
``cgroup`` (:mod:`pyhv.host.cgroups`) the kernel enforces shares and limits in a group
per VM, the VM processes run freely, and the daemon only raises a reserved VM's weight
while it gets less than its reservation (``--cpu-backend``, default ``auto``: cgroup
where this host lets the daemon write a CPU controller).

**Stopping.** ``stop`` asks the guest to power off (:mod:`pyhv.host.worker`) and, after
a timeout (default 30 s), stops the machine from the host side (``quit``: disks closed
cleanly), then SIGKILLs the process 3 s later if it is still there. SIGTERM or SIGINT to
the daemon stops every VM that way (``--shutdown-timeout``) and then the daemon.

**Requests.** :meth:`Daemon.submit` (thread-safe) and the control socket
(:mod:`pyhv.host.control`) run the operations, each a method that returns a
:class:`~concurrent.futures.Future`: ``start``, ``stop``, ``reboot``, ``pause``,
``resume``, ``set`` (QoS and I/O budgets live, balloon target), ``snapshot`` (save a running VM to a
file; a paused one stays paused), ``restore`` and ``clone`` (define VMs from a snapshot
file and start them from it, all or nothing), ``migrate`` (move a running VM to another
daemon) and ``incoming`` (its other end), ``list``, ``metrics``, ``ping``. Errors are
:class:`~pyhv.host.errors.HostError` s, raised before anything is changed: an unknown
VM, a reservation that does not fit (admission control, as in
:func:`~pyhv.host.registry.check_admission`), a disk in use by another running VM.

**Live migration.** ``migrate(name, to, token)`` asks the daemon at ``to`` (its REST
API's base URL) for an incoming slot (``POST /v1/vms/incoming`` with the VM's
definition, in a thread: the loop does not wait for the network), then tells the VM
process where to send the machine (:mod:`pyhv.host.worker`); the VM's process exits
with reason ``migrated`` once the destination runs it, and its definition stays here,
stopped (as libvirt keeps a migrated domain's unless asked to undefine it).
``incoming(definition, name)`` defines the VM and starts its process with
``--incoming``: it answers with the port and one-time token the process listens with;
if no migration comes, or it fails, the process ends and the definition is removed.

**The REST API** (:mod:`pyhv.host.rest`, off unless ``--listen``) is an HTTP server in a
thread of this process; it reaches the operations through :meth:`Daemon.submit`, like
the control socket. Its port is bound before anything else starts, so a port in use
stops the daemon at once; requests still queued when the daemon stops fail with
:class:`~pyhv.host.errors.Unavailable` (503) instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import http.client
import ipaddress
import json
import os
import queue
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import __version__
from ..errors import PyhvError
from .api import (
    MAX_CLONES,
    Host,
    _apply,
    check_files,
    check_snapshot_target,
    snapshot_config,
    snapshot_definition,
    snapshot_names,
)
from .cgroups import (
    BOOST_DOWN,
    BOOST_UP,
    MAX_BOOST,
    CpuBackend,
    choose_backend,
    correct_shares,
)
from .control import LOCK_NAME, PID_NAME, SOCKET_NAME, error_from_dict, error_to_dict
from .definition import (
    DISK_RATES,
    NET_RATES,
    VMDefinition,
    _is_int,
    format_memory,
    parse_memory_value,
)
from .errors import (
    Conflict,
    DefinitionError,
    DuplicateName,
    HostError,
    InsufficientResources,
    Invalid,
    MigrationFailed,
    NotFound,
    Unavailable,
    VMRunning,
)
from .ipc import (
    IDLE,
    NOTIFY_IDLE,
    NOTIFY_WAKE,
    LineBuffer,
    ProtocolError,
    StatusPage,
    encode,
    unix_address,
)
from .memory import MemoryManager, MemoryView
from .registry import (
    HostSettings,
    Registry,
    atomic_write,
    check_admission,
    check_fits,
    write_pid_file,
)
from .scheduler import MAX_VM_CPU, QUANTUM, Scheduler, Terms, make_policy

if TYPE_CHECKING:
    from .rest import ApiConfig, ApiServer

SHUTDOWN_TIMEOUT = 30.0  # seconds a guest gets to power off before the host stops it
QUIT_GRACE = 3.0  # seconds a VM process gets to close down before SIGKILL
START_TIMEOUT = 120.0  # seconds to build a machine
METRICS_EVERY = 1.0  # seconds between metric samples (CPU %, MIPS)
RESTART_DELAYS = (1.0, 5.0, 30.0)  # autostart VMs that crash are restarted after these
RESTART_WINDOW = 600.0
LOG_TAIL = 2000  # characters of a crashed VM process's log kept in its crash record
CRASH_FILE = "crashed"
INCOMING_TIMEOUT = 60.0  # seconds an incoming VM process waits for its source (worker's)
SLOT_TIMEOUT = 60.0  # seconds to get an incoming slot from a destination daemon
STATE_FILE = "state"


def _cpu_clock(pid: int) -> int:
    """The clock id of process ``pid``'s CPU time (Linux: CPUCLOCK_SCHED of the process,
    the precise sum of its threads' run time)."""
    return ((~pid) << 3) | 2


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} pyhv host: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Running:
    """A VM the daemon runs: its process and everything the daemon holds of it."""

    name: str
    definition: VMDefinition
    # its process: the daemon's child (proc), or a clone group's (clone_group; its pid
    # and pidfd come from the group's process once it has forked it: 0 and -1 until)
    proc: subprocess.Popen[bytes] | None
    pidfd: int
    channel: socket.socket
    status: StatusPage
    run_dir: Path
    started: float  # monotonic
    started_wall: float
    state: str = "starting"  # starting, running, paused, stopping
    ready: bool = False
    sigstopped: bool = False
    notify: int = 0  # the notify flags last written to its status page
    start_waiters: list[Future[Any]] = dataclasses.field(default_factory=list)
    stop_waiters: list[Future[Any]] = dataclasses.field(default_factory=list)
    snapshot_waiters: dict[int, tuple[Future[Any], str]] = dataclasses.field(
        default_factory=dict)
    debug_waiters: dict[int, Future[Any]] = dataclasses.field(default_factory=dict)
    # restored from a snapshot or cloned: its definition was made for this start and is
    # removed again if the start (of any VM of its group) fails
    group: _Group | None = None
    # live migration: an incoming VM's answer (its port and token), and an outgoing
    # migration (id, its future, the destination's URL)
    listen_waiter: Future[Any] | None = None
    migrating: bool = False
    migrate_waiter: tuple[int, Future[Any], str] | None = None
    migrate_target: tuple[tuple[str, int, str], str | None] | None = None  # address, token
    lines: LineBuffer = dataclasses.field(default_factory=LineBuffer)
    exit_info: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    quit_at: float | None = None  # when to stop the machine host-side
    kill_at: float | None = None  # when to SIGKILL
    start_deadline: float = 0.0
    killed: bool = False  # the daemon SIGKILLed it
    stopping: bool = False  # the daemon asked it to stop
    cpu_clock: int = 0
    outside: int = 0  # samples in a row whose process state disagrees with sigstopped
    # metrics
    sample_at: float = 0.0
    sample_cpu: float = 0.0
    sample_instr: int = 0
    cpu_pct: float = 0.0
    mips: float = 0.0
    clone_group: _CloneGroup | None = None
    # memory: a balloon target set by hand (pyhv set --balloon; the memory manager keeps
    # at least this), the target last sent to the VM process, the entitlement
    balloon_asked: int = 0
    balloon_sent: int = -1
    entitled: int = 0
    forked_pid: int = 0
    early_ready: dict[str, Any] | None = None  # a clone's "ready" before its "forked"
    generation_id: str | None = None  # the VM generation ID its guest reads (a UUID)
    exit_code: int | None = None  # a clone's, as its group's process reaped it
    exit_seen: bool = False  # a clone's pidfd said it ended: its status is to come

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else self.forked_pid

    def cpu_seconds(self) -> float | None:
        if self.pid <= 0:
            return None
        try:
            return time.clock_gettime(self.cpu_clock)
        except OSError:
            return None


@dataclasses.dataclass
class _CloneGroup:
    """One process that forks the VM processes of several clones of one snapshot
    (:func:`pyhv.host.worker.clone_group`): the daemon's child; it tells over its own
    channel each clone's pid (with a pidfd of it) and, having reaped one, its exit
    status."""

    proc: subprocess.Popen[bytes]
    pidfd: int
    channel: socket.socket
    members: dict[str, _Running]
    lines: LineBuffer = dataclasses.field(default_factory=LineBuffer)
    fds: list[int] = dataclasses.field(default_factory=list)  # pidfds not yet taken
    closed: bool = False  # its channel has ended
    kill_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclasses.dataclass
class _Group:
    """VMs defined and started together from one snapshot (``restore``: one, ``clone``:
    N): the answer waits for all of them; if one fails to start, all are stopped and
    undefined, and the answer is that failure."""

    names: list[str]
    future: Future[Any]
    ready: set[str] = dataclasses.field(default_factory=set)
    alive: set[str] = dataclasses.field(default_factory=set)
    error: BaseException | None = None


class Daemon:
    """The host daemon of one state directory (module docstring)."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        policy: str | None = None,
        cpus: int | None = None,
        quantum: float = QUANTUM,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        api: ApiConfig | None = None,
        socket_group: int | None = None,
        fork_clones: bool | None = None,
        cpu_backend: str = "feedback",
    ) -> None:
        self.host = Host(state_dir)
        self.cpu_backend_wanted = cpu_backend
        # chosen when the daemon has its state directory (serve()): feedback until then
        self.cpu: CpuBackend = CpuBackend("not chosen yet")
        self._boost: dict[str, float] = {}  # cgroup backend: weight factor of reserved VMs
        self._split: dict[str, float] = {}  # cgroup backend: shares correction factor
        self._rates: dict[str, tuple[float, float, float]] = {}  # at, CPU s, smoothed %

        self.registry: Registry = self.host.registry
        self.root = self.registry.root
        settings = self.registry.load_settings()
        changes: dict[str, Any] = {}
        if cpus is not None:
            changes["cpus"] = cpus
        if policy is not None:
            changes["policy"] = policy
        self.settings: HostSettings = dataclasses.replace(settings, **changes)
        self.cpus = self.settings.host_cpus
        self.scheduler = Scheduler(make_policy(self.settings.policy), self.cpus, quantum)
        self.memory = MemoryManager(self.settings.host_memory, self.settings.memory_idle_tax)
        self.shutdown_timeout = shutdown_timeout
        self.vms: dict[str, _Running] = {}
        self.clone_groups: list[_CloneGroup] = []
        # several clones: one clone group process forks them (worker.clone_group)
        self.fork_clones = (os.environ.get("PYHV_FORK_CLONES", "1") != "0"
                            if fork_clones is None else fork_clones)
        self.crashes: dict[str, list[float]] = {}  # restart history of autostart VMs
        self.restarts: dict[str, float] = {}  # name -> when to restart it
        self.shutting_down = False
        self._sel = selectors.DefaultSelector()
        self._requests: queue.SimpleQueue[tuple[str, dict[str, Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._resched = True
        self._next_at = 0.0
        self._next_metrics = 0.0
        self._listener: socket.socket | None = None
        self._lock_fd: int | None = None
        self._clients: dict[int, tuple[socket.socket, LineBuffer]] = {}
        self._started = time.monotonic()
        self.api_config = api
        self.socket_group = socket_group
        self._api_socket: socket.socket | None = None
        self._api_unix: socket.socket | None = None
        self._api: ApiServer | None = None
        self._closed = False  # no more requests: submit() fails them at once
        self._submit_lock = threading.Lock()
        self._own_cpu = (time.process_time(), time.monotonic())
        self.daemon_cpu_pct = 0.0
        self._snapshot_ids = 0
        self._ops: dict[str, Callable[..., Future[Any]]] = {
            "ping": self.ping,
            "start": self.start,
            "stop": self.stop,
            "reboot": self.reboot,
            "pause": self.pause,
            "resume": self.resume,
            "set": self.set_live,
            "snapshot": self.snapshot,
            "restore": self.restore,
            "clone": self.clone,
            "migrate": self.migrate,
            "incoming": self.incoming,
            "list": self.list,
            "metrics": self.metrics,
            "debug": self.debug,
        }

    # ================================================================= the loop

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`shutdown`); then stop every VM. Returns
        the process exit status."""
        self._open()
        try:
            try:
                self.cpu = choose_backend(self.cpu_backend_wanted, f"pyhv-{os.getpid()}",
                                          self.cpus)
            except (OSError, ValueError) as exc:
                raise Invalid(f"--cpu-backend {self.cpu_backend_wanted}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
            log(f"CPU backend {self.cpu.name}: {self.cpu.reason}")
            self._start_api()
            self._recover()
            self._autostart()
            log(
                f"serving {self.root} ({self.cpus} CPU{'s' if self.cpus > 1 else ''}, "
                f"policy {self.scheduler.policy.name}, pid {os.getpid()})"
            )
            while True:
                self._poll()
                if self.shutting_down and not self.vms and not self.clone_groups:
                    break
        finally:
            self._close()
        log("stopped")
        return 0

    def submit(self, op: str, **args: Any) -> Future[Any]:
        """Run operation ``op`` in the daemon's loop (callable from any thread)."""
        future: Future[Any] = Future()
        with self._submit_lock:
            if self._closed:
                future.set_exception(Unavailable("the host daemon has stopped"))
                return future
            self._requests.put((op, args, future))
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"r")
        return future

    def shutdown(self) -> None:
        """Stop every VM, then the daemon (callable from any thread)."""
        self.submit("_shutdown")

    def _open(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Unavailable(f"another pyhv host daemon already serves {self.root}") from None
            raise
        from .rest import API_SOCKET, bind, bind_unix

        try:
            self._api_unix = bind_unix(self.root / API_SOCKET, self.socket_group)
        except BaseException:
            os.close(fd)
            raise
        if self.api_config is not None:
            try:
                self._api_socket = bind(self.api_config)
            except Unavailable as e:
                if self.api_config.required:
                    os.close(fd)
                    self._api_unix.close()
                    raise
                log(f"{e}; the daemon serves the API on {API_SOCKET} only (--listen "
                    "ADDR:PORT for another address)")
            except BaseException:
                os.close(fd)
                self._api_unix.close()
                raise
        self._lock_fd = fd
        write_pid_file(self.root / PID_NAME, os.getpid())
        path = self.root / SOCKET_NAME
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with unix_address(path) as address:
            listener.bind(address)
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, self._on_accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        signal.set_wakeup_fd(self._wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _start_api(self) -> None:
        if self._api_unix is None:
            return
        from .rest import ApiServer

        self._api = ApiServer(self, self.api_config if self._api_socket else None,
                              self._api_unix, self._api_socket, self.socket_group)
        self._api.start()
        who = "its owner"
        if self.socket_group is not None:
            import grp

            try:
                who += f" and group {grp.getgrgid(self.socket_group).gr_name}"
            except KeyError:
                who += f" and group {self.socket_group}"
        log(f"REST API on unix:{self._api.path} ({who})")
        if self._api.url:
            log(f"REST API on {self._api.url} (bearer token required)")
            log(f"web dashboard on {self._api.url}/ui/ (it asks for the token)")

    def _close(self) -> None:
        signal.set_wakeup_fd(-1)
        for vm in list(self.vms.values()):  # only after an error in the loop
            if vm.pid > 0:
                with contextlib.suppress(OSError):
                    os.kill(vm.pid, signal.SIGKILL)
            self._on_exit(vm, final=True)
        with contextlib.suppress(OSError):
            self.cpu.close()
        for group in list(self.clone_groups):
            with contextlib.suppress(OSError):
                os.kill(group.pid, signal.SIGKILL)
            self._on_group_exit(group)
        # Nobody may wait for an answer that will never come (a REST request's thread).
        with self._submit_lock:
            self._closed = True
        while True:
            try:
                _, _, future = self._requests.get_nowait()
            except queue.Empty:
                break
            future.set_exception(Unavailable("the host daemon has stopped"))
        if self._api is not None:
            self._api.stop()
        else:
            for sock in (self._api_socket, self._api_unix):
                if sock is not None:
                    sock.close()
        with contextlib.suppress(FileNotFoundError):
            from .rest import API_SOCKET

            (self.root / API_SOCKET).unlink()
        for sock, _ in list(self._clients.values()):
            sock.close()
        if self._listener is not None:
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                (self.root / SOCKET_NAME).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.root / PID_NAME).unlink()
        self._sel.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def _poll(self) -> None:
        now = time.monotonic()
        deadline = min(self._next_at, self._next_metrics, self._timers_due())
        if self._resched:
            deadline = now
        events = self._sel.select(max(0.0, deadline - now))
        for key, _mask in events:
            try:
                key.data(key)
            except Exception:  # a bug in handling one event must not stop every VM
                log("internal error:\n" + traceback.format_exc())
        while True:
            try:
                op, args, future = self._requests.get_nowait()
            except queue.Empty:
                break
            self._run_op(op, args, future)
        now = time.monotonic()
        try:
            self._run_timers(now)
            if self._resched or now >= self._next_at:
                self._schedule(now)
            if now >= self._next_metrics:
                self._sample_metrics(now)
        except Exception:
            log("internal error:\n" + traceback.format_exc())
            self._next_at = now + 0.1  # the VMs keep their last grants meanwhile

    # ================================================================= scheduling

    def _schedule(self, now: float) -> None:
        self._resched = False
        cpu: dict[str, float] = {}
        runnable: dict[str, bool] = {}
        for name, vm in self.vms.items():
            used = vm.cpu_seconds()
            if used is not None:
                cpu[name] = used
            runnable[name] = vm.status.state != IDLE
        sched = self.scheduler
        sched.update(now, cpu, runnable)
        if self.cpu.quanta:
            decision = sched.decide(now)
        else:
            decision = sched.decide_free(now)
            self._boost_reservations(now, cpu)
        # Stop first, then continue: never more than `cpus` VM processes running.
        for name in decision.hold:
            vm = self.vms[name]
            if not vm.sigstopped:
                self._signal(vm, signal.SIGSTOP)
                vm.sigstopped = True
        for name, vm in self.vms.items():
            if name not in decision.hold and vm.sigstopped:
                self._signal(vm, signal.SIGCONT)
                vm.sigstopped = False
            flags = (NOTIFY_IDLE if name in decision.notify_idle else 0) | (
                NOTIFY_WAKE if name in decision.notify_wake else 0
            )
            if vm.notify != flags:
                vm.status.notify = vm.notify = flags
        self._next_at = decision.next_at

    def _boost_reservations(self, now: float, cpu: dict[str, float]) -> None:
        """The cgroup backend: the kernel knows no reservation. Every 0.25 s, a reserved
        VM that got less than its reservation (smoothed over about a second) has its
        weight raised by a bounded factor; one that got comfortably more, lowered
        again (never below its shares). In the same step the shares split is corrected
        (:meth:`_correct_split`)."""
        measured = False
        for name, used in cpu.items():
            account = self.scheduler.accounts.get(name)
            vm = self.vms.get(name)
            if account is None or vm is None:
                continue
            last = self._rates.get(name)
            if last is None:
                self._rates[name] = (now, used, 0.0)
                continue
            at, before, smoothed = last
            if now - at < 0.25:
                continue
            measured = True
            rate = (used - before) / (now - at) * 100
            smoothed = rate if smoothed == 0.0 else smoothed + 0.3 * (rate - smoothed)
            self._rates[name] = (now, used, smoothed)
            reservation = account.terms.reservation
            boost = self._boost.get(name, 1.0)
            if reservation <= 0 or not account.runnable or account.paused:
                new = 1.0
            elif smoothed < reservation * 0.995:
                new = min(boost * BOOST_UP, MAX_BOOST)
            elif smoothed > reservation * 1.03:
                new = max(boost / BOOST_DOWN, 1.0)
            else:
                new = boost
            self._boost[name] = new
        if measured:
            self._correct_split()
        for name in cpu:
            account = self.scheduler.accounts.get(name)
            if account is None or name not in self.vms:
                continue
            try:
                self.cpu.set_weight(name, account.terms.shares, self._weight_factor(name))
            except OSError as exc:
                log(f"VM '{name}': its CPU group could not be written ({exc})")

    def _correct_split(self) -> None:
        """The cgroup backend: CFS divides sibling groups across CPUs only roughly in
        proportion to their weights. The VMs that contend by their shares (runnable, not
        paused, no reservation, not held at their limit) are compared: each one's part
        of what they got together (smoothed CPU) against its part of their entitlements,
        and its weight factor moved in bounded steps (:func:`correct_shares`)."""
        received: dict[str, float] = {}
        targets: dict[str, float] = {}
        for name, account in self.scheduler.accounts.items():
            rate = self._rates.get(name)
            limit = account.terms.limit
            if (rate is None or rate[2] <= 0.0 or not account.runnable or account.paused
                    or account.terms.reservation > 0 or self._boost.get(name, 1.0) != 1.0
                    or (limit is not None and account.entitlement >= limit * 0.99)):
                continue
            received[name] = rate[2]
            targets[name] = account.entitlement
        self._split = correct_shares(self._split, received, targets)

    def _weight_factor(self, name: str) -> float:
        """What a VM's shares are multiplied by in its group's weight (cgroup backend)."""
        return self._boost.get(name, 1.0) * self._split.get(name, 1.0)

    def _cpu_attach(self, vm: _Running) -> None:
        """Put a VM process under the CPU backend (cgroup: into its group)."""
        if vm.pid <= 0:
            return
        terms = self._terms(vm.definition)
        try:
            self.cpu.attach(vm.name, vm.pid, terms.shares, terms.limit)
        except OSError as exc:
            log(f"VM '{vm.name}': could not be put in its CPU group ({exc}); it runs "
                "without the kernel's terms")

    def _signal(self, vm: _Running, signum: int) -> None:
        pid = vm.pid
        if pid <= 0:  # a clone its group's process has not forked yet
            if signum != signal.SIGKILL or vm.clone_group is None:
                return  # (it starts urgent: nothing holds it)
            pid = vm.clone_group.pid  # a start that takes too long: the group's warm-up
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def _terms(self, definition: VMDefinition) -> Terms:
        qos = definition.qos
        assert qos.shares is not None
        return Terms(qos.shares, float(qos.reservation),
                     None if qos.limit is None else float(qos.limit))

    # ================================================================= VM processes

    def _spawn(self, definition: VMDefinition, restore: str | None = None,
               clone: bool = False, incoming: bool = False) -> _Running:
        name = definition.name
        run_dir, status, ours, theirs = self._prepare_run(name)
        vm_dir = self.registry.vm_dir(name)
        try:
            proc = self._popen(
                ["--channel-fd", str(theirs.fileno()),
                 *(["--restore", restore] if restore is not None else []),
                 *(["--clone"] if clone else []),
                 *(["--incoming"] if incoming else []), name],
                (theirs.fileno(),), vm_dir / "worker.log", vm_dir)
        except BaseException:
            ours.close()
            status.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        pidfd = os.pidfd_open(proc.pid)
        return self._add_vm(definition, run_dir, status, ours, proc, pidfd,
                            START_TIMEOUT + (INCOMING_TIMEOUT if incoming else 0))

    def _spawn_clones(self, definitions: list[VMDefinition], path: str) -> list[_Running]:
        """Several clones of snapshot ``path`` in one clone group: one process that warms
        up once and forks a VM process for each (:func:`pyhv.host.worker.clone_group`)."""
        prepared: list[tuple[VMDefinition, Path, StatusPage, socket.socket,
                             socket.socket]] = []
        group_ours, group_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for definition in definitions:
                prepared.append((definition, *self._prepare_run(definition.name)))
                with open(self.registry.vm_dir(definition.name) / "worker.log", "wb"):
                    pass
            first = self.registry.vm_dir(definitions[0].name)
            member_fds = [p[4].fileno() for p in prepared]
            proc = self._popen(
                ["--channel-fd", str(group_theirs.fileno()), "--clone-group", path,
                 "--member-fds", ",".join(map(str, member_fds)),
                 *(d.name for d in definitions)],
                (group_theirs.fileno(), *member_fds), first / "worker.log", first)
        except BaseException:
            group_ours.close()
            for _, run_dir, status, ours, _theirs in prepared:
                ours.close()
                status.close()
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        finally:
            group_theirs.close()
            for p in prepared:
                p[4].close()
        group_ours.setblocking(False)
        group = _CloneGroup(proc, os.pidfd_open(proc.pid), group_ours, {})
        vms = []
        for definition, run_dir, status, ours, _ in prepared:
            vm = self._add_vm(definition, run_dir, status, ours, None, -1, START_TIMEOUT,
                              pid_file=proc.pid)
            vm.clone_group = group
            group.members[definition.name] = vm
            vms.append(vm)
        self.clone_groups.append(group)
        self._sel.register(group_ours, selectors.EVENT_READ,
                           lambda key: self._on_group_channel(group))
        self._sel.register(group.pidfd, selectors.EVENT_READ,
                           lambda key: self._on_group_exit(group))
        return vms

    def _prepare_run(self, name: str) -> tuple[Path, StatusPage, socket.socket,
                                               socket.socket]:
        """A fresh run directory and status page for VM ``name``, and its control
        channel (ours, theirs)."""
        run_dir = self.registry.run_dir(name)
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            (self.registry.vm_dir(name) / CRASH_FILE).unlink()
        status = StatusPage(run_dir / "status", create=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return run_dir, status, ours, theirs

    def _popen(self, args: list[str], fds: tuple[int, ...], log_path: Path,
               cwd: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH")) if p
        )
        with open(log_path, "wb") as log_file:
            return subprocess.Popen(
                [sys.executable, "-m", "pyhv.host.worker", "--state-dir", str(self.root),
                 *args],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )

    def _add_vm(self, definition: VMDefinition, run_dir: Path, status: StatusPage,
                ours: socket.socket, proc: subprocess.Popen[bytes] | None, pidfd: int,
                start_timeout: float, pid_file: int | None = None) -> _Running:
        name = definition.name
        pid = proc.pid if proc is not None else 0
        # The state file first: whoever sees the pid file sees the VM as starting. (A
        # clone not yet forked shows its group's process: the one to stop if need be.)
        atomic_write(run_dir / STATE_FILE, "starting\n")
        write_pid_file(run_dir / "pid", pid or pid_file or 0)
        ours.setblocking(False)
        now = time.monotonic()
        vm = _Running(
            name=name, definition=definition, proc=proc, pidfd=pidfd, channel=ours,
            status=status, run_dir=run_dir, started=now, started_wall=time.time(),
            start_deadline=now + start_timeout,
            cpu_clock=_cpu_clock(pid) if pid else 0,
            sample_at=now,
        )
        self.vms[name] = vm
        self._sel.register(ours, selectors.EVENT_READ, lambda key: self._on_channel(vm))
        if pidfd >= 0:
            self._sel.register(pidfd, selectors.EVENT_READ, lambda key: self._on_exit(vm))
        self.scheduler.add(name, self._terms(definition), now, vm.cpu_seconds())
        self._cpu_attach(vm)
        # Starting (Python, building the machine) is the host's work: it runs at once,
        # whatever the VM's terms; the VM is charged from when its guest starts.
        self.scheduler.set_urgent(name, True)
        self._write_state(vm)
        self._resched = True
        return vm

    # ----------------------------------------------------------------- clone groups

    def _on_group_channel(self, group: _CloneGroup) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(group.channel, 65536, 64)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        group.fds.extend(fds)
        if not data:
            self._group_channel_closed(group)
            return
        try:
            messages = group.lines.feed(data)
        except ProtocolError as e:
            log(f"clone group (pid {group.pid}): bad message: {e}")
            return
        for message in messages:
            event = message.get("ev")
            if event == "forked":
                fd = group.fds.pop(0) if group.fds else -1
                self._clone_forked(group, message, fd)
            elif event == "reaped":
                vm = group.members.get(str(message.get("name")))
                code = message.get("status")
                if (vm is None or self.vms.get(vm.name) is not vm
                        or vm.forked_pid != message.get("pid") or not isinstance(code, int)):
                    continue
                vm.exit_code = code
                if vm.exit_seen:
                    self._on_exit(vm)

    def _clone_forked(self, group: _CloneGroup, message: dict[str, Any], pidfd: int) -> None:
        """The group's process has forked clone ``name``: its process from now on."""
        vm = group.members.get(str(message.get("name")))
        pid = message.get("pid")
        if (vm is None or self.vms.get(vm.name) is not vm or pidfd < 0
                or not isinstance(pid, int) or pid <= 0):
            if pidfd >= 0:
                os.close(pidfd)
            return
        vm.forked_pid = pid
        vm.pidfd = pidfd
        vm.cpu_clock = _cpu_clock(pid)
        vm.sample_cpu = vm.cpu_seconds() or 0.0
        with contextlib.suppress(OSError):
            write_pid_file(vm.run_dir / "pid", pid)
        self._sel.register(pidfd, selectors.EVENT_READ, lambda key: self._on_exit(vm))
        vm.sigstopped = False  # nothing was stopped: it did not exist
        self._cpu_attach(vm)
        self._resched = True
        if not message.get("fork", True):
            log(f"VM '{vm.name}': its clone group could not fork (threads): a process "
                "of its own")
        if vm.early_ready is not None:
            ready, vm.early_ready = vm.early_ready, None
            self._on_ready(vm, ready)

    def _group_channel_closed(self, group: _CloneGroup) -> None:
        if group.closed:
            return
        group.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(group.channel)
        for vm in list(group.members.values()):  # ended, but no status will come now
            if vm.exit_seen and self.vms.get(vm.name) is vm:
                self._on_exit(vm, final=True)

    def _on_group_exit(self, group: _CloneGroup) -> None:
        """The group's process has ended (after its last clone, or killed): reap it; a
        clone it had not forked yet failed to start with it."""
        if group not in self.clone_groups:
            return
        for _ in range(64):  # its last words (reaped statuses), then its end
            if group.closed:
                break
            self._on_group_channel(group)
        self._group_channel_closed(group)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(group.pidfd)
        code = group.proc.wait()
        os.close(group.pidfd)
        group.channel.close()
        for fd in group.fds:
            os.close(fd)
        group.fds.clear()
        self.clone_groups.remove(group)
        if code != 0:
            log(f"clone group process {group.pid} {self._how(code)}")
        for vm in list(group.members.values()):
            if self.vms.get(vm.name) is vm and vm.forked_pid == 0:
                vm.exit_code = code
                self._on_exit(vm, final=True)

    def _write_state(self, vm: _Running) -> None:
        with contextlib.suppress(OSError):
            atomic_write(vm.run_dir / STATE_FILE, vm.state + "\n")

    def _send(self, vm: _Running, message: dict[str, Any]) -> None:
        """A control message; it waits in the channel while the process is stopped."""
        try:
            vm.channel.send(encode(message))
        except BlockingIOError:
            log(f"VM '{vm.name}': control channel full, {message.get('op')} dropped")
        except OSError:
            pass

    def _on_channel(self, vm: _Running) -> None:
        try:
            data = vm.channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(vm.channel)
            return
        try:
            messages = vm.lines.feed(data)
        except ProtocolError as e:
            log(f"VM '{vm.name}': bad message from its process: {e}")
            return
        for message in messages:
            event = message.get("ev")
            if event in ("idle", "wake"):
                self._resched = True
            elif event == "ready":
                if vm.clone_group is not None and vm.forked_pid == 0:
                    # A clone ready before its group's "forked" (its pid and pidfd) has
                    # come: it counts as ready once that has (_clone_forked).
                    vm.early_ready = message
                else:
                    self._on_ready(vm, message)
            elif event == "snapshot":
                self._snapshot_done(vm, message)
            elif event == "debug":
                waiter = vm.debug_waiters.pop(message.get("id"), None)  # type: ignore[arg-type]
                if waiter is not None and message.get("ok"):
                    waiter.set_result({"name": vm.name, "port": message.get("port")})
                elif waiter is not None:
                    waiter.set_exception(Conflict(str(message.get("message"))))
            elif event == "listening":
                self._listening(vm, message)
            elif event == "migrate":
                self._migrate_done(vm, message)
            elif event == "exit":
                vm.exit_info = message
            elif event == "error":
                vm.error = message

    def _on_ready(self, vm: _Running, message: dict[str, Any]) -> None:
        """VM ``vm``'s process has built its machine and serves it: running."""
        vm.ready = True
        if vm.state == "starting":
            vm.state = "running"
            self._write_state(vm)
        if not vm.stopping:
            self.scheduler.set_urgent(vm.name, False)
            self.scheduler.begin(vm.name, time.monotonic(), vm.cpu_seconds())
            self._resched = True
        log(f"VM '{vm.name}' running (pid {vm.pid}, engine {message.get('engine')})")
        self._record_macs(vm, message.get("macs"))
        gen = message.get("generation_id")
        if isinstance(gen, str) and len(gen) <= 64:
            vm.generation_id = gen
            with contextlib.suppress(OSError):  # (read by api.VM.generation_id)
                tmp = vm.run_dir / ".generation_id"
                tmp.write_text(gen + "\n")
                tmp.replace(vm.run_dir / "generation_id")
        for future in vm.start_waiters:
            future.set_result(self._describe(vm.name))
        vm.start_waiters.clear()
        if vm.group is not None:
            self._group_ready(vm)

    def _on_exit(self, vm: _Running, final: bool = False) -> None:
        """The VM process is gone: reap it, record how it ended, clean up. A clone's
        process is its group's child: its exit status comes from the group's process
        (``reaped``); until then the VM waits, unless ``final`` (the status is lost)."""
        if self.vms.get(vm.name) is not vm:
            return
        code: int | None
        if vm.proc is not None:
            code = None
        else:
            code = vm.exit_code
            group = vm.clone_group
            if code is None and not final and group is not None and not group.closed:
                if not vm.exit_seen:
                    vm.exit_seen = True
                    with contextlib.suppress(KeyError, ValueError):
                        self._sel.unregister(vm.pidfd)
                return
        self._on_channel(vm)  # the last messages (exit, error) may still be unread
        for obj in (vm.channel, vm.pidfd):
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(obj)
        if vm.proc is not None:
            code = vm.proc.wait()
        vm.channel.close()
        if vm.pidfd >= 0:
            os.close(vm.pidfd)
        vm.status.close()
        del self.vms[vm.name]
        self.scheduler.remove(vm.name)
        self._boost.pop(vm.name, None)
        self._split.pop(vm.name, None)
        self._rates.pop(vm.name, None)
        with contextlib.suppress(OSError):
            self.cpu.detach(vm.name)
        self._resched = True
        shutil.rmtree(vm.run_dir, ignore_errors=True)
        for future, _ in vm.snapshot_waiters.values():
            future.set_exception(Conflict(f"VM '{vm.name}' stopped before its snapshot "
                                          "was taken"))
        vm.snapshot_waiters.clear()
        for waiter in vm.debug_waiters.values():
            waiter.set_exception(Conflict(f"VM '{vm.name}' stopped"))
        vm.debug_waiters.clear()
        if vm.migrate_waiter is not None:
            _, future, url = vm.migrate_waiter
            vm.migrate_waiter = None
            if not future.done():
                future.set_exception(Conflict(f"VM '{vm.name}' stopped before it migrated "
                                              f"to {url}"))

        info = vm.exit_info or {}
        reason = info.get("reason")
        outcome: dict[str, Any] = {"name": vm.name, "state": "stopped", "reason": reason}
        if not vm.ready:
            error: HostError
            if vm.error is not None:
                error = error_from_dict({**vm.error, "message": (
                    f"VM '{vm.name}' failed to start: {vm.error.get('message')}")})
            elif vm.stopping:
                error = Conflict(f"VM '{vm.name}' was stopped while it started")
            else:
                error = Unavailable(
                    f"VM '{vm.name}' failed to start ({self._how(code)}): "
                    f"{self._log_tail(vm.name, 300).strip() or 'no output'}"
                )
            log(f"VM '{vm.name}' did not start: {error}")
            if vm.group is not None:
                self._group_exit(vm, error)
            for future in vm.start_waiters:
                future.set_exception(error)
            vm.start_waiters.clear()
            if vm.listen_waiter is not None and not vm.listen_waiter.done():
                vm.listen_waiter.set_exception(error)
            if code is not None and code < 0 and not (vm.killed or vm.stopping):
                outcome.update(state="crashed", reason=f"VM process {self._how(code)}")
                self._record_crash(vm, outcome["reason"], code)
            self._finish_stop(vm, outcome)
            return
        if reason == "migrated":
            log(f"VM '{vm.name}' migrated: it runs at its destination now; its definition "
                "stays here")
            outcome["exit_code"] = info.get("code")
        elif reason in ("poweroff", "quit", "stopped", "timeout", "limit"):
            log(f"VM '{vm.name}' stopped ({reason}, guest exit code {info.get('code')})")
            outcome["exit_code"] = info.get("code")
        elif vm.killed or (vm.stopping and reason is None):
            outcome["reason"] = "killed"
            log(f"VM '{vm.name}' stopped (killed after the stop timeout)")
        else:
            if reason == "crash":
                why = f"guest crashed: {info.get('crash')}"
            else:
                why = f"VM process {self._how(code)}"
            outcome.update(state="crashed", reason=why)
            self._record_crash(vm, why, code)
        self._finish_stop(vm, outcome)

    def _finish_stop(self, vm: _Running, outcome: dict[str, Any]) -> None:
        if vm.group is not None and vm.name in vm.group.alive:  # it had started
            self._group_exit(vm, Conflict(
                f"VM '{vm.name}' {outcome['state']} ({outcome.get('reason')}) before the "
                "others of its group had started"))
        for future in vm.stop_waiters:
            future.set_result(outcome)
        vm.stop_waiters.clear()

    @staticmethod
    def _how(code: int | None) -> str:
        if code is None:
            return "ended (its exit status was lost with its clone group's process)"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with status {code}"

    def _log_tail(self, name: str, size: int = LOG_TAIL) -> str:
        try:
            with open(self.registry.vm_dir(name) / "worker.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _record_crash(self, vm: _Running, why: str, code: int | None) -> None:
        log(f"VM '{vm.name}' crashed: {why}")
        record = {"time": time.time(), "reason": why, "status": code,
                  "log": self._log_tail(vm.name)}
        with contextlib.suppress(OSError, NotFound):
            atomic_write(self.registry.vm_dir(vm.name) / CRASH_FILE, json.dumps(record) + "\n")
        if vm.definition.autostart and not self.shutting_down:
            now = time.monotonic()
            history = [t for t in self.crashes.get(vm.name, []) if now - t < RESTART_WINDOW]
            if len(history) < len(RESTART_DELAYS):
                delay = RESTART_DELAYS[len(history)]
                history.append(now)
                self.restarts[vm.name] = now + delay
                log(f"VM '{vm.name}' (autostart) will be restarted in {delay:g} s")
            else:
                log(f"VM '{vm.name}' (autostart) crashed {len(history)} times in "
                    f"{RESTART_WINDOW / 60:g} minutes: not restarted")
            self.crashes[vm.name] = history

    # ================================================================= timers

    def _timers_due(self) -> float:
        times = [t for t in self.restarts.values()]
        times.extend(g.kill_at for g in self.clone_groups if g.kill_at is not None)
        for vm in self.vms.values():
            times.extend(t for t in (vm.quit_at, vm.kill_at) if t is not None)
            if not vm.ready:
                times.append(vm.start_deadline)
        return min(times, default=float("inf"))

    def _run_timers(self, now: float) -> None:
        for vm in list(self.vms.values()):
            if vm.quit_at is not None and now >= vm.quit_at:
                vm.quit_at = None
                log(f"VM '{vm.name}' did not power off in time: stopping it")
                self._quit(vm, now)
            if vm.kill_at is not None and now >= vm.kill_at:
                vm.kill_at = None
                vm.killed = True
                log(f"VM '{vm.name}' did not stop: killing its process {vm.pid}")
                self._signal(vm, signal.SIGKILL)
            if not vm.ready and now >= vm.start_deadline and not vm.killed:
                vm.killed = True
                vm.error = error_to_dict(Unavailable(
                    f"VM '{vm.name}' did not start within {START_TIMEOUT:g} s"))
                self._signal(vm, signal.SIGKILL)
        for group in self.clone_groups:
            if group.kill_at is None and not any(
                    self.vms.get(n) is vm for n, vm in group.members.items()):
                group.kill_at = now + QUIT_GRACE  # it ends after its last clone
            elif group.kill_at is not None and now >= group.kill_at:
                group.kill_at = None
                log(f"clone group process {group.pid} did not end: killing it")
                with contextlib.suppress(OSError):
                    os.kill(group.pid, signal.SIGKILL)
        for name, when in list(self.restarts.items()):
            if now >= when:
                del self.restarts[name]
                self._start_logged(name, "restarted")

    def _quit(self, vm: _Running, now: float) -> None:
        self._send(vm, {"op": "quit"})
        vm.kill_at = now + QUIT_GRACE

    # ================================================================= start-up

    def _recover(self) -> None:
        """Clean up after a daemon that died: run directories of VMs it ran (their
        processes end when they see it gone; stragglers are killed)."""
        names = self.registry.names()
        stragglers = []
        for name in names:
            pid = self.registry.running_pid(name)
            if pid is not None:
                stragglers.append((name, pid))
        deadline = time.monotonic() + QUIT_GRACE
        for name, pid in stragglers:
            log(f"VM '{name}': process {pid} of a previous daemon is still there: stopping it")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
        for name, pid in stragglers:
            while time.monotonic() < deadline and self.registry.running_pid(name) == pid:
                time.sleep(0.05)
            if self.registry.running_pid(name) == pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for name in names:
            with contextlib.suppress(NotFound):
                shutil.rmtree(self.registry.run_dir(name), ignore_errors=True)

    def _autostart(self) -> None:
        vms, broken = self.host.scan()
        for name, error in broken.items():
            log(f"VM '{name}' skipped: {error}")
        for vm in vms:
            if vm.definition.autostart:
                self._start_logged(vm.name, "started")

    def _start_logged(self, name: str, what: str) -> None:
        """Start an autostart VM; a failure is logged (nobody waits for the answer)."""
        try:
            future = self.start(name)
        except HostError as e:
            log(f"VM '{name}' (autostart) not {what}: {e}")
            return

        def done(f: Future[Any]) -> None:  # never f.exception() before done: it blocks
            if f.exception() is not None:
                log(f"VM '{name}' (autostart) not {what}: {f.exception()}")

        future.add_done_callback(done)

    # ================================================================= signals, clients

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            return  # a closed terminal does not stop the VMs
        self._requests.put(("_shutdown", {}, Future()))

    def _on_wake(self, key: selectors.SelectorKey) -> None:
        with contextlib.suppress(OSError):
            os.read(self._wake_r, 4096)

    def _on_accept(self, key: selectors.SelectorKey) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            self._clients[sock.fileno()] = (sock, LineBuffer())
            self._sel.register(sock, selectors.EVENT_READ, self._on_client)

    def _on_client(self, key: selectors.SelectorKey) -> None:
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        fd = sock.fileno()
        entry = self._clients.get(fd)
        if entry is None:
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(sock)
            return
        try:
            requests = entry[1].feed(data)
        except ProtocolError as e:
            self._reply(sock, {"ok": False, "error": error_to_dict(Invalid(str(e)))})
            self._drop_client(sock)
            return
        for request in requests:
            op = request.get("op")
            args = request.get("args") or {}
            future: Future[Any] = Future()
            if not isinstance(op, str) or op.startswith("_") or not isinstance(args, dict):
                future.set_exception(Invalid(f"bad request: {request!r}"))
            else:
                self._run_op(op, args, future)

            def done(f: Future[Any], sock: socket.socket = sock) -> None:
                error = f.exception()
                if error is None:
                    self._reply(sock, {"ok": True, "result": f.result()})
                else:
                    self._reply(sock, {"ok": False, "error": error_to_dict(error)})

            future.add_done_callback(done)

    def _reply(self, sock: socket.socket, message: dict[str, Any]) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(5.0)
            sock.sendall(encode(message))
            sock.setblocking(False)
        except OSError:
            self._drop_client(sock)

    def _drop_client(self, sock: socket.socket) -> None:
        if self._clients.pop(sock.fileno(), None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
            sock.close()

    def _run_op(self, op: str, args: dict[str, Any], future: Future[Any]) -> None:
        if op == "_shutdown":
            self._begin_shutdown()
            future.set_result(None)
            return
        if op == "_call":  # work a thread hands back to the loop (_in_loop)
            try:
                args["fn"]()
            except Exception as e:
                log("internal error:\n" + traceback.format_exc())
                future.set_exception(e)
            else:
                future.set_result(None)
            return
        method = self._ops.get(op)
        if method is None:
            future.set_exception(Invalid(f"unknown operation {op!r}"))
            return
        try:
            result = method(**args)
        except TypeError as e:
            future.set_exception(Invalid(f"{op}: {e}"))
            return
        except (HostError, PyhvError) as e:
            future.set_exception(e if isinstance(e, HostError) else Invalid(str(e)))
            return
        except Exception as e:  # a bug must not take the daemon down
            log(f"operation {op} failed: {type(e).__name__}: {e}")
            future.set_exception(e)
            return

        def chain(f: Future[Any]) -> None:
            error = f.exception()
            if error is None:
                future.set_result(f.result())
            else:
                future.set_exception(error)

        result.add_done_callback(chain)

    def _begin_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        self.restarts.clear()
        log(f"shutting down: stopping {len(self.vms)} VM(s)")
        for vm in list(self.vms.values()):
            self._begin_stop(vm, force=False, timeout=self.shutdown_timeout)

    # ================================================================= operations

    @staticmethod
    def _done(value: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(value)
        return future

    def _running(self, name: str) -> _Running:
        if not isinstance(name, str):
            raise Invalid(f"a VM name must be a string, not {name!r}")
        vm = self.vms.get(name)
        if vm is None:
            self.registry.load(name)  # NotFound for an unknown VM
            raise Conflict(f"VM '{name}' is not running")
        return vm

    def ping(self) -> Future[Any]:
        """Who answers: the daemon's pid, state directory, version, CPUs and policy."""
        return self._done({
            "pid": os.getpid(),
            "state_dir": str(self.root),
            "version": __version__,
            "cpus": self.cpus,
            "policy": self.scheduler.policy.name,
            "cpu_backend": self.cpu.name,
            "cpu_backend_reason": self.cpu.reason,
            "uptime": round(time.monotonic() - self._started, 1),
            "vms_running": len(self.vms),
            "shutting_down": self.shutting_down,
        })

    def start(self, name: str) -> Future[Any]:
        """Start VM ``name``; the future resolves when its machine is built and its
        console served (or with the error that stopped it)."""
        if self.shutting_down:
            raise Unavailable("the host daemon is shutting down")
        if not isinstance(name, str):
            raise Invalid(f"a VM name must be a string, not {name!r}")
        if name in self.vms:
            raise VMRunning(f"VM '{name}' is already running")
        # Under the state directory's lock from reading the definition until the pid
        # file is written: a destroy (another thread or process) either finishes first
        # (NotFound here) or sees the VM running; never a process without its VM.
        with self.registry.lock():
            definition = self.registry.load(name)
            try:
                check_files(definition)
            except DefinitionError as e:
                raise e.with_source(name) from None
            if definition.qos.reservation > MAX_VM_CPU:
                raise InsufficientResources(
                    f"VM '{name}': qos.reservation {definition.qos.reservation:g}% cannot be "
                    f"delivered: a VM's vCPUs run on one host CPU (at most {MAX_VM_CPU:g}%)"
                )
            running = [vm.definition for vm in self.vms.values()]
            check_admission(running, definition, self.settings)
            self.restarts.pop(name, None)
            vm = self._spawn(definition)
        log(f"VM '{name}' starting (pid {vm.pid})")
        future: Future[Any] = Future()
        vm.start_waiters.append(future)
        return future

    def stop(self, name: str, force: bool = False, timeout: float | None = None) -> Future[Any]:
        """Stop VM ``name``: ask the guest to power off, and after ``timeout`` seconds
        (default: the daemon's shutdown timeout) stop it from the host side; ``force``
        stops it host-side at once. Resolves when its process has exited."""
        vm = self._running(name)
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise Invalid(f"stop timeout {timeout!r}: expected a number of seconds >= 0")
        future: Future[Any] = Future()
        vm.stop_waiters.append(future)
        self._begin_stop(vm, force=bool(force),
                         timeout=self.shutdown_timeout if timeout is None else float(timeout))
        return future

    def _begin_stop(self, vm: _Running, force: bool, timeout: float) -> None:
        now = time.monotonic()
        if vm.state == "paused":
            self.scheduler.set_paused(vm.name, False)
        if not vm.stopping:
            vm.stopping = True
            vm.state = "stopping"
            self._write_state(vm)
            self.scheduler.set_urgent(vm.name, True)
            self._resched = True
        if force or not vm.ready:
            if vm.kill_at is None:
                vm.quit_at = None
                self._quit(vm, now)
        elif vm.kill_at is None:
            if vm.quit_at is None:
                self._send(vm, {"op": "powerdown"})
                vm.quit_at = now + timeout
            else:  # stopped again (SIGTERM, a second request): the earlier deadline holds
                vm.quit_at = min(vm.quit_at, now + timeout)

    def reboot(self, name: str) -> Future[Any]:
        """Warm reset of a running VM (as the guest's own reboot request does)."""
        vm = self._running(name)
        if vm.state != "running":
            raise Conflict(f"VM '{name}' is {vm.state}: it cannot be rebooted now")
        self._send(vm, {"op": "reboot"})
        return self._done(self._describe(name))

    def pause(self, name: str) -> Future[Any]:
        """Stop running the VM's guest (its process is kept stopped) until resumed."""
        vm = self._running(name)
        if vm.state not in ("running", "paused"):
            raise Conflict(f"VM '{name}' is {vm.state}: it cannot be paused now")
        if vm.migrating:
            raise Conflict(f"VM '{name}' is migrating: it cannot be paused now")
        if vm.state == "running":
            vm.state = "paused"
            if not vm.snapshot_waiters:  # else when the snapshot is done
                self.scheduler.set_paused(name, True)
            self._write_state(vm)
            self._schedule(time.monotonic())
        return self._done(self._describe(name))

    def resume(self, name: str) -> Future[Any]:
        vm = self._running(name)
        if vm.state not in ("running", "paused"):
            raise Conflict(f"VM '{name}' is {vm.state}: it cannot be resumed now")
        if vm.state == "paused":
            vm.state = "running"
            self.scheduler.set_paused(name, False)
            self._send(vm, {"op": "release"})  # after a snapshot taken while paused
            self._write_state(vm)
            self._schedule(time.monotonic())
        return self._done(self._describe(name))

    def set_live(self, name: str, **changes: Any) -> Future[Any]:
        """Change a running VM's CPU terms (``shares``, ``reservation``, ``limit``: kept
        in its definition too) and its balloon target (``balloon``: the memory the guest
        should keep, bytes or a size such as "256M"; None: give it all back) at once."""
        vm = self._running(name)
        allowed = ("shares", "reservation", "limit", "balloon", "io", "memory_shares",
                   "memory_reservation", "memory_limit")
        unknown = [k for k in changes if k not in allowed]
        if unknown:
            raise DefinitionError(unknown[0], "cannot be changed on a running VM (live: "
                                  f"{', '.join(allowed)})", name)
        if not changes:
            raise Invalid(f"{name}: nothing to change (live: {', '.join(allowed)})")
        if "io" in changes and (not vm.ready or vm.migrating or vm.stopping):
            why = "migrating" if vm.migrating else vm.state
            raise Conflict(f"VM '{name}' is {why}: its I/O budgets cannot be changed now")
        balloon_bytes: int | None = None
        if "balloon" in changes:
            balloon_bytes = self._balloon_size(vm, changes.pop("balloon"))
        updated = vm.definition
        if changes:
            with self.registry.lock():
                current = self.registry.load(name)
                try:
                    updated = _apply(current, changes)
                except DefinitionError as e:
                    raise e.with_source(name) from None
                if updated.qos.reservation > MAX_VM_CPU:
                    raise InsufficientResources(
                        f"VM '{name}': qos.reservation {updated.qos.reservation:g}% cannot "
                        f"be delivered: a VM's vCPUs run on one host CPU"
                    )
                others = [v.definition for v in self.vms.values() if v.name != name]
                check_admission(others, updated, self.settings)
                if updated != current:
                    self.registry.replace(updated)
            # What runs keeps its memory and devices: only the terms change.
            before = vm.definition
            vm.definition = dataclasses.replace(
                before, qos=updated.qos, memory_terms=updated.memory_terms,
                disks=_with_rates(before.disks, updated.disks, DISK_RATES),
                nets=_with_rates(before.nets, updated.nets, NET_RATES))
            for message in _io_messages(before, vm.definition):
                self._send(vm, message)
            terms = self._terms(vm.definition)
            self.scheduler.set_terms(name, terms)
            try:
                self.cpu.set_terms(name, terms.shares, terms.limit,
                                   self._weight_factor(name))
            except OSError as exc:
                log(f"VM '{name}': its CPU group could not be written ({exc})")
            self._resched = True
        if balloon_bytes is not None:
            vm.balloon_asked = balloon_bytes
            self._manage_memory()
        elif changes:
            self._manage_memory()
        return self._done(self._describe(name))

    # ----------------------------------------------------------------- snapshots

    def snapshot(self, name: str, path: str) -> Future[Any]:
        """Save running VM ``name`` to the snapshot file ``path`` (absolute); the guest
        runs on. A paused VM is saved as it is and stays paused, as ``virsh save`` and
        QEMU's savevm do: its process is continued to save it (it finishes the slice of
        guest code it was stopped in) and runs no guest code after. Resolves with the
        figures once the file is in place."""
        vm = self._running(name)
        if not vm.ready or vm.stopping or vm.state not in ("running", "paused"):
            raise Conflict(f"VM '{name}' is {vm.state}: it cannot be snapshotted now")
        if vm.migrating:
            raise Conflict(f"VM '{name}' is migrating: it cannot be snapshotted now")
        target = check_snapshot_target(path)
        self._snapshot_ids += 1
        sid = self._snapshot_ids
        future: Future[Any] = Future()
        paused = vm.state == "paused"
        vm.snapshot_waiters[sid] = (future, target)
        self._send(vm, {"op": "snapshot", "path": target, "id": sid, "hold": paused})
        if paused:
            self.scheduler.set_paused(name, False)
        # Saving is the host's work: the process runs at once, whatever its terms.
        self.scheduler.set_urgent(name, True)
        self._resched = True
        log(f"VM '{name}': snapshot to {target}")
        return future

    def debug(self, name: str) -> Future[Any]:
        """Open the gdb stub of running VM ``name`` (vm/gdbstub.py) on a free loopback
        port in its process, or find the one open: resolves with ``{"name", "port"}``.
        The guest runs on until gdb attaches."""
        vm = self._running(name)
        if not vm.ready or vm.stopping or vm.state != "running":
            raise Conflict(f"VM '{name}' is {vm.state}: resume it to debug it")
        self._snapshot_ids += 1  # (one id sequence for requests answered by the VM)
        future: Future[Any] = Future()
        vm.debug_waiters[self._snapshot_ids] = future
        self._send(vm, {"op": "debug", "id": self._snapshot_ids})
        log(f"VM '{name}': gdb stub requested")
        return future

    def _snapshot_done(self, vm: _Running, message: dict[str, Any]) -> None:
        entry = vm.snapshot_waiters.pop(message.get("id"), None)  # type: ignore[arg-type]
        if not vm.snapshot_waiters:
            if vm.state == "paused":
                self.scheduler.set_paused(vm.name, True)
            if not vm.stopping:
                self.scheduler.set_urgent(vm.name, False)
            self._resched = True
        if entry is None:
            return
        future, target = entry
        if message.get("ok"):
            result: dict[str, Any] = {"name": vm.name, "path": target}
            for key in ("seconds", "ram_bytes", "stored_bytes", "file_bytes"):
                result[key] = message.get(key)
            log(f"VM '{vm.name}': saved to {target} in {result['seconds']} s")
            future.set_result(result)
        else:
            why = str(message.get("message") or "the snapshot failed")
            log(f"VM '{vm.name}': snapshot to {target} failed: {why}")
            future.set_exception(Invalid(f"VM '{vm.name}': {why}"))

    def restore(self, path: str, name: str | None = None) -> Future[Any]:
        """Define VM ``name`` (default: the file's stem) from the snapshot file
        ``path`` and start it from there (the VM process's ``--restore``). Resolves
        with ``[VM]`` once it runs; if it fails, its definition is gone again."""
        config = snapshot_config(path)
        return self._from_snapshot(path, config, snapshot_names(path, name), clone=False)

    def clone(self, path: str, count: int, prefix: str | None = None) -> Future[Any]:
        """``count`` new VMs ``prefix-1`` .. ``prefix-N`` from the snapshot file
        ``path``, each started as a clone (``--restore FILE --clone``). All are admitted
        before any is defined; if one fails to start, all are stopped and undefined."""
        if not _is_int(count) or not 1 <= count <= MAX_CLONES:
            raise Invalid(f"clone count {count!r}: expected 1 to {MAX_CLONES}")
        config = snapshot_config(path)
        return self._from_snapshot(path, config, snapshot_names(path, prefix, count),
                                   clone=True)

    def _from_snapshot(self, path: str, config: Any, names: list[str],
                       clone: bool) -> Future[Any]:
        if self.shutting_down:
            raise Unavailable("the host daemon is shutting down")
        path = os.path.normpath(path)
        with self.registry.lock():
            for name in names:
                if self.registry.exists(name):
                    raise DuplicateName(f"a VM named '{name}' already exists")
            definitions = [snapshot_definition(config, name, fresh_macs=clone)
                           for name in names]
            running = [vm.definition for vm in self.vms.values()]
            for definition in definitions:
                try:
                    check_files(definition, boot_files=False)
                except DefinitionError as e:
                    raise e.with_source(definition.name) from None
                check_admission(running, definition, self.settings)
                running.append(definition)
            group = _Group(names, Future())
            created: list[str] = []
            try:
                for definition in definitions:
                    self.registry.create(definition)
                    created.append(definition.name)
                if clone and len(definitions) > 1 and self.fork_clones:
                    # one process warms up and forks them all (clone_group)
                    for vm in self._spawn_clones(definitions, path):
                        vm.group = group
                        group.alive.add(vm.name)
                else:
                    for definition in definitions:
                        vm = self._spawn(definition, restore=path, clone=clone)
                        vm.group = group
                        group.alive.add(definition.name)
            except BaseException as e:
                group.error = e
                for name in created:
                    if name in group.alive:
                        self._begin_stop(self.vms[name], force=True, timeout=0)
                    else:
                        with contextlib.suppress(HostError, OSError):
                            self.registry.remove(name)
                raise
        what = "clones" if clone else "restored"
        quoted = ", ".join(f"'{name}'" for name in names)
        log(f"VM{'s' if len(names) > 1 else ''} {quoted} starting ({what} from {path})")
        return group.future

    def _group_ready(self, vm: _Running) -> None:
        group = vm.group
        assert group is not None
        group.ready.add(vm.name)
        if group.error is not None or group.ready != set(group.names):
            return
        for name in group.names:  # theirs for good now
            member = self.vms.get(name)
            if member is not None:
                member.group = None
        group.future.set_result([self._describe(name) for name in group.names])

    def _group_exit(self, vm: _Running, error: BaseException) -> None:
        """A VM of a group that is not all up yet has stopped: undo the group."""
        group = vm.group
        assert group is not None
        group.alive.discard(vm.name)
        with contextlib.suppress(HostError, OSError):
            self.registry.remove(vm.name)
        if group.error is None:
            group.error = error
            for name in sorted(group.alive):
                other = self.vms.get(name)
                if other is not None:
                    self._begin_stop(other, force=True, timeout=0)
        if not group.alive and not group.future.done():
            group.future.set_exception(group.error)

    # ----------------------------------------------------------------- live migration

    def incoming(self, definition: Any, name: str | None = None) -> Future[Any]:
        """Take a VM that another daemon migrates here: define it from ``definition``
        (its TOML document as a dict; ``name`` instead of the one it holds) and start its
        process with ``--incoming``. Resolves with ``{"name", "port", "token"}`` once
        the process listens (on 127.0.0.1, a one-time token). If no migration comes
        within a minute, or it fails, the process ends and the definition is removed."""
        if self.shutting_down:
            raise Unavailable("the host daemon is shutting down")
        if not isinstance(definition, dict):
            raise Invalid(f"incoming: expected the VM's definition (a JSON object), got "
                          f"{type(definition).__name__}")
        if name is not None:
            definition = {**definition, "name": name}
        parsed = VMDefinition.from_dict(definition, base_dir="/")
        name = parsed.name
        with self.registry.lock():
            if self.registry.exists(name):
                raise DuplicateName(f"a VM named '{name}' already exists")
            try:
                check_fits(parsed, self.settings)
                check_files(parsed, boot_files=False)
            except DefinitionError as e:
                raise e.with_source(name) from None
            if parsed.qos.reservation > MAX_VM_CPU:
                raise InsufficientResources(
                    f"VM '{name}': qos.reservation {parsed.qos.reservation:g}% cannot be "
                    f"delivered: a VM's vCPUs run on one host CPU (at most {MAX_VM_CPU:g}%)")
            check_admission([vm.definition for vm in self.vms.values()], parsed,
                            self.settings)
            self.registry.create(parsed)
            try:
                vm = self._spawn(parsed, incoming=True)
            except BaseException:
                with contextlib.suppress(HostError, OSError):
                    self.registry.remove(name)
                raise
        # made for this migration: removed again if it fails (the group's undo)
        vm.group = _Group([name], Future())
        vm.group.alive.add(name)
        vm.listen_waiter = Future()
        log(f"VM '{name}' incoming (pid {vm.pid})")
        return vm.listen_waiter

    def _listening(self, vm: _Running, message: dict[str, Any]) -> None:
        waiter, vm.listen_waiter = vm.listen_waiter, None
        port, token = message.get("port"), message.get("token")
        if waiter is None or waiter.done():
            return
        if not isinstance(port, int) or not isinstance(token, str):
            waiter.set_exception(Unavailable(f"VM '{vm.name}': a bad answer from its "
                                             "process"))
            return
        log(f"VM '{vm.name}' waits for its migration on 127.0.0.1:{port}")
        waiter.set_result({"name": vm.name, "port": port, "token": token})

    def migrate(self, name: str, to: str, token: str | None = None) -> Future[Any]:
        """Move running VM ``name`` to the daemon whose REST API is at ``to``
        (``http://HOST:PORT``; ``token`` its API token). Resolves with the figures
        (``rounds``, ``pages_sent``, ``total_seconds``, ``downtime_seconds``...) once
        the VM runs there; its process here then ends (reason ``migrated``) and its
        definition stays. :class:`MigrationFailed` (502) when the destination cannot
        be reached, refuses or the transfer breaks off: the VM runs on here."""
        vm = self._running(name)
        if not vm.ready or vm.stopping or vm.state != "running":
            raise Conflict(f"VM '{name}' is {vm.state}: it cannot be migrated now")
        if vm.migrating:
            raise Conflict(f"VM '{name}' is migrating already")
        url, address = _destination(to)
        if token is not None and not isinstance(token, str):
            raise Invalid("migrate: the token must be a string")
        vm.migrating = True
        future: Future[Any] = Future()
        definition = vm.definition.to_dict()
        log(f"VM '{name}': migrating to {url}")
        threading.Thread(target=self._ask_slot, name=f"pyhv-migrate-{name}", daemon=True,
                         args=(vm, url, address, token, definition, future)).start()
        return future

    def _ask_slot(self, vm: _Running, url: str, address: tuple[str, int, str],
                  token: str | None, definition: dict[str, Any], future: Future[Any]) -> None:
        """(A thread.) Ask the destination daemon for an incoming slot; then hand the
        rest back to the loop."""
        try:
            answer = _request_slot(address, token, vm.name, definition)
        except MigrationFailed as e:
            error = MigrationFailed(f"VM '{vm.name}' not migrated to {url}: {e}")
            self._in_loop(lambda: self._migrate_failed(vm, future, error), future)
            return
        self._in_loop(lambda: self._migrate_go(vm, url, address, token, answer, future),
                      future)

    def _in_loop(self, fn: Callable[[], None], future: Future[Any]) -> None:
        """Run ``fn`` in the daemon's loop; if the daemon has stopped, fail ``future``."""
        done = self.submit("_call", fn=fn)

        def check(f: Future[Any]) -> None:
            error = f.exception()
            if error is not None and not future.done():
                future.set_exception(error)

        done.add_done_callback(check)

    def _migrate_failed(self, vm: _Running, future: Future[Any], error: HostError) -> None:
        vm.migrating = False
        log(str(error))
        if not future.done():
            future.set_exception(error)

    def _migrate_go(self, vm: _Running, url: str, address: tuple[str, int, str],
                    token: str | None, answer: dict[str, Any], future: Future[Any]) -> None:
        if self.vms.get(vm.name) is not vm or vm.stopping:
            vm.migrating = False
            future.set_exception(Conflict(f"VM '{vm.name}' stopped before it could migrate "
                                          f"(the destination gives its slot up in "
                                          f"{INCOMING_TIMEOUT:g} s)"))
            return
        self._snapshot_ids += 1
        mid = self._snapshot_ids
        vm.migrate_waiter = (mid, future, url)
        vm.migrate_target = (address, token)
        self._send(vm, {"op": "migrate", "host": answer["host"], "port": answer["port"],
                        "token": answer["token"], "id": mid})
        # Sending the machine is the host's work: the process runs at once.
        self.scheduler.set_urgent(vm.name, True)
        self._resched = True

    def _migrate_done(self, vm: _Running, message: dict[str, Any]) -> None:
        entry = vm.migrate_waiter
        if entry is None or entry[0] != message.get("id"):
            return
        vm.migrate_waiter = None
        vm.migrating = False
        if not vm.stopping:
            self.scheduler.set_urgent(vm.name, False)
        self._resched = True
        _, future, url = entry
        if message.get("ok"):
            result: dict[str, Any] = {"name": vm.name, "to": url}
            for key in ("rounds", "pages_sent", "last_round_pages", "total_seconds",
                        "downtime_seconds", "stop_copy_seconds", "build_seconds"):
                result[key] = message.get(key)
            log(f"VM '{vm.name}' migrated to {url}: {result['rounds']} round(s), "
                f"{result['pages_sent']} pages in {result['total_seconds']} s, downtime "
                f"{result['downtime_seconds']} s")
            self._autostart_off(vm)
            target, vm.migrate_target = vm.migrate_target, None
            if target is None:
                future.set_result(result)
                return

            def confirm() -> None:  # (a thread) answer once the destination says running
                _wait_running(target[0], target[1], vm.name)
                self._in_loop(lambda: future.set_result(result), future)

            threading.Thread(target=confirm, name=f"pyhv-migrated-{vm.name}",
                             daemon=True).start()
        else:
            why = str(message.get("message") or "the migration failed")
            error = MigrationFailed(f"VM '{vm.name}' not migrated to {url}: {why} (it runs "
                                    "on here)")
            log(str(error))
            future.set_exception(error)

    def _autostart_off(self, vm: _Running) -> None:
        """A VM that migrated away keeps its definition here, but must not start here
        again with this daemon while it runs at its destination: autostart goes off."""
        if not vm.definition.autostart:
            return
        try:
            with self.registry.lock():
                current = self.registry.load(vm.name)
                if current.autostart:
                    self.registry.replace(dataclasses.replace(current, autostart=False))
            vm.definition = dataclasses.replace(vm.definition, autostart=False)
            log(f"VM '{vm.name}': autostart turned off here (it runs at its destination)")
        except (HostError, OSError) as e:
            log(f"VM '{vm.name}': cannot turn its autostart off: {e}")

    def _record_macs(self, vm: _Running, macs: Any) -> None:
        """Keep in the definition the MAC each NIC really has (a clone's are new)."""
        nets = vm.definition.nets
        if not isinstance(macs, list) or len(macs) != len(nets):
            return
        if all(n.mac == m for n, m in zip(nets, macs, strict=True)):
            return
        try:
            with self.registry.lock():
                current = self.registry.load(vm.name)
                if len(current.nets) != len(macs):
                    return
                updated = dataclasses.replace(current, nets=tuple(
                    dataclasses.replace(n, mac=m) for n, m in zip(current.nets, macs,
                                                                   strict=True)))
                self.registry.replace(updated)
            vm.definition = dataclasses.replace(vm.definition, nets=updated.nets)
        except (HostError, OSError) as e:
            log(f"VM '{vm.name}': cannot record its MACs: {e}")

    def _balloon_size(self, vm: _Running, value: Any) -> int:
        if not vm.definition.balloon:
            raise Invalid(f"VM '{vm.name}' has no balloon device (devices.balloon = false)")
        memory = vm.definition.memory
        if value is None:
            return 0
        keep = value if isinstance(value, int) and not isinstance(value, bool) else (
            parse_memory_value(value, "balloon"))
        if not 0 < keep <= memory:
            raise DefinitionError(
                "balloon", f"{format_memory(keep)} is out of range (the VM has "
                f"{format_memory(memory)})", vm.name)
        return memory - keep

    def list(self) -> Future[Any]:
        return self._done([self._describe(name) for name in sorted(self.vms)])

    def metrics(self, name: str | None = None) -> Future[Any]:
        """Per-VM figures (every defined VM, or ``name``): state, CPU % over the last
        second, entitlement, guest MIPS, memory, I/O counters; plus the host's."""
        if name is not None:
            self.registry.load(name)
            names = [name]
        else:
            names = self.registry.names()
        vms = [self._vm_metrics(n) for n in names]
        return self._done({
            "host": {
                "cpus": self.cpus,
                "policy": self.scheduler.policy.name,
                "cpu_backend": self.cpu.name,
                "vms_running": len(self.vms),
                "cpu_pct": round(sum(v.cpu_pct for v in self.vms.values()), 2),
                # what the VMs get while they contend (less than cpus x 100 when other
                # processes take CPU): the entitlements divide this
                "capacity_pct": round(self.scheduler.capacity, 1),
                "daemon_cpu_pct": round(self.daemon_cpu_pct, 2),
                # the memory budget, what the VMs hold of it, whether it is reclaiming
                "memory_budget": self.memory.budget,
                "memory_held": sum(vm.status.held for vm in self.vms.values()),
                "memory_short": self.memory.short,
                "ksm": _ksm_state(),
                "uptime": round(time.monotonic() - self._started, 1),
                "pid": os.getpid(),
            },
            "vms": vms,
        })

    # ================================================================= reporting

    def _describe(self, name: str) -> dict[str, Any]:
        vm = self.vms.get(name)
        if vm is None:
            return {"name": name, "state": self._stopped_state(name), "pid": None}
        return {"name": name, "state": vm.state, "pid": vm.pid or None}

    def _stopped_state(self, name: str) -> str:
        with contextlib.suppress(NotFound):
            if (self.registry.vm_dir(name) / CRASH_FILE).exists():
                return "crashed"
        return "stopped"

    def _vm_metrics(self, name: str) -> dict[str, Any]:
        vm = self.vms.get(name)
        if vm is None:
            data: dict[str, Any] = {"name": name, "state": self._stopped_state(name),
                                    "pid": None}
            with contextlib.suppress(HostError):
                d = self.registry.load(name)
                data.update(vcpus=d.vcpus, memory=d.memory, shares=d.qos.shares,
                            reservation=d.qos.reservation, limit=d.qos.limit)
            return data
        d = vm.definition
        status = vm.status.snapshot()
        account = self.scheduler.accounts.get(name)
        return {
            "name": name,
            "state": vm.state,
            "pid": vm.pid or None,
            "activity": status["state"],  # starting, running, idle, exiting
            "engine": status["engine"],
            "generation_id": vm.generation_id,
            "vcpus": d.vcpus,
            "memory": d.memory,
            "shares": d.qos.shares,
            "reservation": d.qos.reservation,
            "limit": d.qos.limit,
            "cpu_pct": round(vm.cpu_pct, 2),
            "entitlement_pct": round(account.entitlement, 2) if account else 0.0,
            "cpu_seconds": round(vm.cpu_seconds() or vm.sample_cpu, 3),
            "mips": round(vm.mips, 3),
            "instructions": status["instructions"],
            "rss": _rss(vm.pid),
            # what the host asked (the VM's process reports it back once it has the
            # message: a status it wrote just before still holds the old target)
            "balloon_target": vm.balloon_sent if vm.balloon_sent >= 0
            else status["balloon_target"],
            "balloon_actual": status["balloon_actual"],
            # memory terms and what the VM holds (host/memory.py)
            "memory_shares": d.memory_terms.shares,
            "memory_reservation": d.memory_terms.reservation,
            "memory_limit": d.memory_terms.limit,
            "memory_entitled": vm.entitled or d.memory_limit,
            "memory_granted": d.memory - status["balloon_actual"],
            "memory_held": status["held"],
            "memory_active": status["active"],
            "memory_shared": status["shared"],
            "memory_swapped": status["swapped"],
            "guest_free": status["guest_free"],
            "guest_available": status["guest_available"],
            "disk_read": status["disk_read"],
            "disk_write": status["disk_write"],
            "net_tx": status["net_tx"],
            "net_rx": status["net_rx"],
            "console_in": status["console_in"],
            "console_out": status["console_out"],
            "wakeups": status["wakeups"],
            "uptime": round(time.monotonic() - vm.started, 1),
            **_io_figures(vm.status.io()),
        }

    def _check_signals_from_outside(self, vm: _Running) -> None:
        """The daemon alone stops and continues VM processes (SIGSTOP/SIGCONT are how
        it grants CPU). A VM someone else stopped is reported paused (``pyhv resume``
        continues it); one someone else continued while the daemon holds it is stopped
        again. Two samples in a row must agree: a signal just sent takes a moment."""
        if not vm.ready or vm.stopping:
            vm.outside = 0
            return
        state = _process_state(vm.pid)
        stopped = state in ("T", "t")
        if state is None or stopped == vm.sigstopped:
            vm.outside = 0
            return
        vm.outside += 1
        if vm.outside < 2:
            return
        vm.outside = 0
        if stopped:
            log(f"VM '{vm.name}' was stopped from outside the daemon (SIGSTOP): it is "
                "paused now; 'pyhv resume' continues it")
            vm.sigstopped = True
            if vm.state == "running":
                vm.state = "paused"
                self.scheduler.set_paused(vm.name, True)
                self._write_state(vm)
                self._resched = True
        else:
            log(f"VM '{vm.name}' was continued from outside the daemon (SIGCONT) while "
                "the daemon held it: stopped again")
            self._signal(vm, signal.SIGSTOP)

    def _sample_metrics(self, now: float) -> None:
        self._next_metrics = now + METRICS_EVERY
        for vm in self.vms.values():
            cpu = vm.cpu_seconds()
            instr = vm.status.instructions
            dt = now - vm.sample_at
            if cpu is not None and dt > 0:
                vm.cpu_pct = max(0.0, cpu - vm.sample_cpu) / dt * 100
                vm.mips = max(0, instr - vm.sample_instr) / dt / 1e6
                vm.sample_cpu = cpu
            vm.sample_instr = instr
            vm.sample_at = now
            self._check_signals_from_outside(vm)
        self._manage_memory()
        own, at = self._own_cpu
        cpu_now = time.process_time()
        if now > at:
            self.daemon_cpu_pct = (cpu_now - own) / (now - at) * 100
        self._own_cpu = (cpu_now, now)


    def _manage_memory(self) -> None:
        """Each second: the balloon targets of the memory terms (host/memory.py) from
        what the VMs hold now, sent to the VM processes whose target changed."""
        views = []
        for vm in self.vms.values():
            if vm.pid <= 0 or vm.stopping:
                continue
            d = vm.definition
            t = d.memory_terms
            assert t.shares is not None
            views.append(MemoryView(
                vm.name, d.memory, t.shares, t.reservation, t.limit,
                held=vm.status.held, active=vm.status.active,
                balloon=d.balloon and vm.ready and not vm.migrating,
                asked=vm.balloon_asked, ballooned=vm.status.balloon_actual))
        was_short = self.memory.short
        targets = self.memory.targets(views)
        if self.memory.short != was_short:
            held = sum(v.held for v in views) >> 20
            log(f"memory {'short' if self.memory.short else 'no longer short'}: the VMs hold "
                f"{held} MiB of a budget of {self.memory.budget >> 20} MiB"
                + ("; reclaiming through their balloons" if self.memory.short else ""))
        for name, target in targets.items():
            vm = self.vms[name]
            vm.entitled = self.memory.entitled.get(name, vm.definition.memory)
            if target != vm.balloon_sent:
                self._send(vm, {"op": "balloon", "bytes": target})
                vm.balloon_sent = target
                vm.status.balloon_target = target


def _ksm_state() -> dict[str, int] | None:
    """The host's KSM settings and counters (/sys/kernel/mm/ksm, read, never changed):
    ``run`` (0 off, 1 merging), pages_to_scan, sleep_millisecs, pages_shared (pages
    kept), pages_sharing (pages that point to them: the memory saved). None without."""
    root = "/sys/kernel/mm/ksm/"
    out: dict[str, int] = {}
    for key in ("run", "pages_to_scan", "sleep_millisecs", "pages_shared", "pages_sharing"):
        try:
            with open(root + key) as fh:
                out[key] = int(fh.read())
        except (OSError, ValueError):
            return None if key == "run" else out
    return out


def _with_rates(running: tuple[Any, ...], stored: tuple[Any, ...],
                keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The running VM's disks or NICs with the I/O budgets of its stored definition."""
    if len(running) != len(stored):
        return running
    return tuple(dataclasses.replace(r, **{k: getattr(s, k) for k in keys})
                 for r, s in zip(running, stored, strict=True))


def _io_messages(before: VMDefinition, after: VMDefinition) -> list[dict[str, Any]]:
    """The ``io`` control messages that bring a VM process from ``before``'s budgets to
    ``after``'s (a NIC's direction only when it changed: new terms refill its buckets)."""
    messages: list[dict[str, Any]] = []
    for i, (old, new) in enumerate(zip(before.disks, after.disks, strict=False)):
        terms = [getattr(new, k) for k in DISK_RATES]
        if terms != [getattr(old, k) for k in DISK_RATES]:
            messages.append({"op": "io", "disk": i, "limits": terms})
    for i, (old_n, new_n) in enumerate(zip(before.nets, after.nets, strict=False)):
        message: dict[str, Any] = {"op": "io", "net": i}
        for way in ("tx", "rx"):
            keys = (f"{way}_bps", f"{way}_pps", f"{way}_bps_burst")
            terms = [getattr(new_n, k) for k in keys]
            if terms != [getattr(old_n, k) for k in keys]:
                message[way] = terms
        if len(message) > 2:
            messages.append(message)
    return messages


def _io_figures(table: list[dict[str, Any]]) -> dict[str, Any]:
    """A running VM's I/O budget figures from its status page: ``io``, one entry per
    disk (direction ``rw``) and NIC direction (``tx``, ``rx``) with the budgets the VM
    process applies now (``limits``, None: no limit), the seconds and the times its
    requests (frames) waited for them, and its bytes (frames); and
    ``io_throttled_seconds``, the VM's total."""
    entries: list[dict[str, Any]] = []
    for e in table:
        device = f"{e['kind']}{e['index']}"
        if e["kind"] == "disk":
            entries.append({
                "device": device, "direction": "rw",
                "throttled_seconds": round(e["throttled_ns"] / 1e9, 3),
                "throttled": e["throttled"],
                "read_bytes": e["read_bytes"], "write_bytes": e["write_bytes"],
                "limits": {k: e[k] or None for k in DISK_RATES}})
            continue
        for way in ("tx", "rx"):
            entries.append({
                "device": device, "direction": way,
                "throttled_seconds": round(e[f"{way}_throttled_ns"] / 1e9, 3),
                "throttled": e[f"{way}_throttled"],
                "frames": e[f"{way}_frames"],
                "limits": {k: e[k] or None for k in NET_RATES if k.startswith(way)}})
    return {"io": entries,
            "io_throttled_seconds": round(sum(x["throttled_seconds"] for x in entries), 3)}


def _destination(to: object) -> tuple[str, tuple[str, int, str]]:
    """A destination daemon's REST base URL (``http://HOST:PORT[/PREFIX]``): the URL as
    shown, and (host, port, path prefix). :class:`Invalid` (422) for anything else."""
    if not isinstance(to, str) or not to:
        raise Invalid(f"migrate: expected the destination's URL (http://HOST:PORT), got "
                      f"{to!r}")
    try:
        parts = urlsplit(to.strip())
        port = parts.port
    except ValueError as e:
        raise Invalid(f"migrate: bad destination URL '{to}': {e}") from None
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise Invalid(f"migrate: bad destination URL '{to}': expected http://HOST:PORT (the "
                      "destination daemon's REST API)")
    url = f"http://{parts.netloc}{parts.path.rstrip('/')}"
    return url, (parts.hostname, port or 80, parts.path.rstrip("/"))


def _connect_host(host: str) -> str:
    """Where a destination's VM process listens: 127.0.0.1 on that host (both daemons on
    one host is what is supported: a loopback name or address means 127.0.0.1)."""
    if host == "localhost":
        return "127.0.0.1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return "127.0.0.1"
    return host


def _request_slot(address: tuple[str, int, str], token: str | None, name: str,
                  definition: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/vms/incoming`` at the destination daemon: ``{"name", "port",
    "token"}``, or :class:`MigrationFailed` with the destination's one line."""
    host, port, prefix = address
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"name": name, "definition": definition})
    conn = http.client.HTTPConnection(host, port, timeout=SLOT_TIMEOUT)
    try:
        conn.request("POST", prefix + "/v1/vms/incoming", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read(1 << 20)
    except ConnectionRefusedError:
        raise MigrationFailed("no daemon answers there (connection refused)") from None
    except TimeoutError:
        raise MigrationFailed(f"the destination did not answer within {SLOT_TIMEOUT:g} s") \
            from None
    except (OSError, http.client.HTTPException) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise MigrationFailed(f"cannot reach the destination: {why or type(e).__name__}") \
            from None
    finally:
        conn.close()
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if resp.status != 201:
        error = answer.get("error") if isinstance(answer, dict) else None
        why = error if isinstance(error, str) else (
            data[:200].decode("utf-8", "replace").strip() or resp.reason)
        raise MigrationFailed(f"the destination answered {resp.status}: "
                              f"{why.splitlines()[0] if why else resp.reason}")
    if not (isinstance(answer, dict) and isinstance(answer.get("port"), int)
            and isinstance(answer.get("token"), str)):
        raise MigrationFailed("the destination's answer is not a pyhv incoming slot")
    return {"port": answer["port"], "token": answer["token"], "host": _connect_host(host)}


def _wait_running(address: tuple[str, int, str], token: str | None, name: str,
                  timeout: float = 10.0) -> None:
    """After a migration: wait (at most ``timeout`` s) until the destination daemon has
    heard from its VM process that the machine runs (it answers the source first), so
    that whoever asked sees the VM running there on return."""
    host, port, prefix = address
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, port, timeout=5.0)
        try:
            conn.request("GET", f"{prefix}/v1/vms/{name}", headers=headers)
            resp = conn.getresponse()
            data = json.loads(resp.read(1 << 20))
            if resp.status != 200 or data.get("state") != "starting":
                return
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return
        finally:
            conn.close()
        time.sleep(0.02)


def _process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (R, S, T for stopped...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
        return text[text.rindex(b")") + 2:][:1].decode()
    except (OSError, ValueError):
        return None


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def serve(
    state_dir: str | os.PathLike[str] | None = None,
    policy: str | None = None,
    cpus: int | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    quantum: float = QUANTUM,
    api: ApiConfig | None = None,
    socket_group: int | None = None,
    cpu_backend: str = "feedback",
) -> int:
    """``pyhv host serve``: run a daemon in the foreground until SIGTERM/SIGINT, serving
    the REST API on its state directory's UNIX socket (its owner and ``socket_group``)
    and, with ``api``, on TCP with a token."""
    daemon = Daemon(state_dir, policy=policy, cpus=cpus, quantum=quantum,
                    shutdown_timeout=shutdown_timeout, api=api, socket_group=socket_group,
                    cpu_backend=cpu_backend)
    return daemon.serve()

