"""A running virtual machine: the board plus the loop that runs its harts.

The loop gives each runnable hart a slice of instructions in turn, then lets devices
catch up (timers, console input). Harts in WFI cost nothing: when every hart waits, the
loop sleeps until the next timer deadline or console input. A power-off or reset written
to the test device stops the loop right after the writing instruction.
"""

from __future__ import annotations

import gc
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..board.virt import VirtBoard
from ..clock import Clock
from ..cpu.engines import jit_probed, jit_worth_trying, make_engines, resolve_engine
from ..cpu.hart import Hart
from ..cpu.run_loop import GuestCrash, StopRequest
from ..cpu.triggers import run_checked
from ..lightdata import dataclass
from .config import MachineConfig
from .console import BufferConsole, Console
from .guest_time import GuestTime

if TYPE_CHECKING:
    from ..memory.ram import GuestRAM

EXIT_GUEST_CRASH = 125  # process exit status when the guest crashed beyond recovery
SLICE = 4096  # instructions per hart turn: bounds interrupt and console latency
# (an engine may prefer another slice: its ``preferred_slice`` attribute)
MAX_IDLE_SLEEP = 0.05
# A round of turns shorter than this (wall seconds) with every budget used up doubles
# the next round's budgets, up to MAX_STRETCH times the engines' slices; a round twice
# as long halves them. Native code runs 65,536 instructions in ~50 us, and the loop's
# own work between rounds (timers, devices, console: ~8 us) was ~15% of a compute-bound
# guest's run; interrupt and console latency stays within about a millisecond.
ROUND_SECONDS = 0.0005
MAX_STRETCH = 16
# ``auto`` starts on the interpreter and brings the JIT up (its modules, the dispatcher
# and native interpreter loaded from the runtime directory: ~25 ms; LLVM itself loads
# later, on the compiler's thread) only after this many guest instructions (~10 ms of
# interpreting): a guest that is done by then never pays for it.
JIT_WARMUP = 30_000


def sleep_idle(wait: float, fds: list[int]) -> None:
    """Sleep up to ``wait`` seconds, less if one of ``fds`` gets input (none: at most
    MAX_IDLE_SLEEP, as input that cannot be waited on is polled)."""
    if wait <= 0:
        return
    if fds:
        try:
            select.select(fds, [], [], wait)
            return
        except (OSError, ValueError):  # a closed fd: poll as if there were none
            pass
    time.sleep(min(wait, MAX_IDLE_SLEEP))


@dataclass
class RunResult:
    # "poweroff", "quit", "limit", "timeout", "stopped", "crash", "snapshot", "debug"
    reason: str
    exit_code: int
    instructions: int
    seconds: float

    @property
    def mips(self) -> float:
        return self.instructions / self.seconds / 1e6 if self.seconds > 0 else 0.0


def tune_gc_for_vm() -> None:
    """For a process that runs a VM: collect cyclic garbage less often. The engines keep
    hundreds of thousands of long-lived objects (decoded instructions, blocks), which
    every full collection walks for nothing (measured: a warm Linux boot ~5% faster).
    Called by the CLI and the host's VM processes, not by library users' processes."""
    gc.set_threshold(100_000, 50, 1000)


class Machine:
    """One VM: build it from a config, then ``run()`` it until it powers off."""

    def __init__(
        self,
        config: MachineConfig,
        console: Console | None = None,
        clock: Clock | None = None,
        restore: tuple[GuestRAM, Any] | None = None,
        clone: bool = False,
    ) -> None:
        """``restore``: (RAM, the parts' saved sections) the machine starts from instead
        of loading its images: a snapshot's (``Machine.restore``) or a migration's
        (vm/migration.py). Every section is checked against its part's record first."""
        self.config = config
        self.console = console if console is not None else BufferConsole()
        self.host_clock = clock if clock is not None else Clock()
        self.clock = GuestTime(self.host_clock)  # what mtime and the timers follow
        self._power: tuple[str, int] | None = None
        self.instructions = 0
        # Clones made of this machine's line (snapshots restored as new machines): a
        # guest agent reads it to know it must take a new identity (vm/snapshot.py).
        self.generation = 0
        # overlay disks copied from a snapshot for this machine (Machine.restore)
        self._restored_overlays: Any = None
        ram = restore[0] if restore is not None else None
        self.board = VirtBoard(config, self.clock, self.console.write, self._on_power, ram=ram)
        self.harts = self.board.harts
        if restore is not None:
            try:
                from .snapshot import load_sections, restore_sections

                restore_sections(self, load_sections(restore[1], self), clone=clone)
            except BaseException:
                self.board.close()
                raise
        self._warmup: int | None = None  # instructions before the JIT comes up (auto)
        self.engine_start_seconds = 0.0  # bringing the JIT up after the warm-up
        try:
            if config.engine == "auto" and not jit_probed() and jit_worth_trying():
                self.engine_name = "jit"  # "auto" made concrete when the JIT comes up
                self.engines = make_engines("interp", self.board)
                self._warmup = JIT_WARMUP
            else:
                self.engine_name = resolve_engine(config.engine)  # "auto" made concrete
                self.engines = make_engines(self.engine_name, self.board)
        except BaseException:
            self.board.close()
            raise
        for hart in self.harts:
            hart.yield_on_pause = len(self.harts) > 1
        self._seen = 0
        # A debugger's hold on the harts (vm/gdbstub.py): while set, every hart runs
        # through its ``run_hart`` (checked stepping) and the run ends when it has a
        # ``stop``; None (no debugger, or one that lets the guest run free): the
        # engines' fast path, untouched. ``watch_fds``: fds that end an idle wait (a
        # debugger's socket, so Ctrl-C is seen at once).
        self.debug: Any = None
        self.watch_fds: list[int] = []
        self.crash: str | None = None
        self.last_result: RunResult | None = None

    @classmethod
    def restore(cls, path: str, console: Console | None = None, clock: Clock | None = None,
                engine: str | None = None, verify: bool = True, clone: bool = False
                ) -> Machine:
        """A machine brought back from the snapshot file ``path`` (``snapshot``), its RAM
        mapped copy-on-write from the file (machines restored from one file share every
        page none of them wrote); ``engine`` may differ from the one it was taken under;
        ``verify`` checks its RAM's checksum (reads every stored page). A ``clone`` is a
        new machine, not the saved one come back: each NIC gets a fresh MAC (its config
        space changes, with a config interrupt), the machine's ``generation`` goes up by
        one and its VM generation ID device, if it has one, a new identifier."""
        import tempfile

        from .snapshot import open_snapshot

        snap = open_snapshot(path)
        overlays = tempfile.TemporaryDirectory(prefix="pyhv-restore-") \
            if snap.meta.get("overlays") else None
        try:
            config = snap.config(engine, overlays.name if overlays else None)
            if clone:
                config = config.with_fresh_macs()
            machine = cls(config, console, clock, restore=(snap.map_ram(),
                                                           snap.meta.get("sections")),
                          clone=clone)
            machine._restored_overlays = overlays  # removed when the machine closes
            overlays = None
            if verify:
                try:
                    snap.verify_ram(machine.board.ram)
                except BaseException:
                    machine.close()
                    raise
        finally:
            snap.close()  # (the RAM's mapping holds the file)
            if overlays is not None:
                overlays.cleanup()
        return machine

    def forkable(self) -> bool:
        """Whether a process forked from this one may take this machine over as a clone
        of its own (:meth:`prepare_fork`, :meth:`take_over_as_clone`): its devices keep
        nothing a clone must not share but their switch ports (NICs on a switch,
        entropy, balloon). Disks (their overlays), shared directories (open files), user
        networking and TAP NICs (host sockets) are per machine, and so is an engine that
        says so (its ``forkable``)."""
        from .config import BalloonSpec, NetSpec, RngSpec

        return (all(isinstance(d, (RngSpec, BalloonSpec))
                    or isinstance(d, NetSpec) and d.switch is not None  # (user networking
                    for d in self.config.devices)  # and TAP hold host sockets and ports)
                and all(getattr(e, "forkable", True) for e in self.engines))

    def prepare_fork(self) -> None:
        """Before forking the processes that take this (never run) machine over: take
        each NIC off its switch here (each clone opens a port of its own), leaving the
        machine otherwise whole for them to share copy-on-write, and have the engines
        make what a first run would (the JIT's dispatch tables and TLBs of the harts'
        modes): the clones then copy only the pages of it they write."""
        self.unplug_nics()
        for engine in self.engines:
            prepare = getattr(engine, "prepare", None)
            if prepare is not None:
                prepare()

    def unplug_nics(self) -> None:
        """Take each NIC off its switch (its port closed, frames from the guest dropped):
        a machine that is only run to warm a process up, or only copied into others."""
        from ..devices.virtio.net import Unplugged, VirtioNet

        for dev in self.board.virtio_devices:
            if isinstance(dev, VirtioNet):
                dev.port.close()
                dev.port = Unplugged()

    def take_over_as_clone(self, console: Console) -> None:
        """In a process forked from the one that built this machine (restored as a clone,
        :meth:`prepare_fork`), make it this process's own clone: each NIC a fresh MAC
        (the driver told by a config interrupt, as ``restore(clone=True)`` does) on a
        switch port of its own, ``console`` its console, a new VM generation ID (its
        interrupt tells the guest), and guest time going on from now. Everything else
        (RAM mapped from the snapshot, engines, compiled code) stays shared with the
        siblings until one of them writes it."""
        from ..devices.virtio.net import VirtioNet, random_mac
        from ..net.switch import SwitchPort
        from .config import NetSpec, place

        devices = self.config.devices
        for spec, at in zip(devices, place(devices), strict=True):
            slot = self.board.virtio_slots[at]
            dev = slot.device
            if isinstance(spec, NetSpec) and isinstance(dev, VirtioNet):
                assert spec.switch is not None  # (forkable: only switch NICs)
                dev.port.close()
                dev.port = SwitchPort(spec.switch)
                dev.mac = random_mac()
                slot.notify_config()
        if self.board.vmgenid is not None:
            self.board.vmgenid.new_generation()
        self.console = console
        self.board.console_out = console.write
        self.board.uart.output = console.write
        self.clock.rebase()

    def snapshot(self, path: str) -> dict[str, int]:
        """Save this machine (stopped: between ``run`` calls) to the file ``path``, its
        disks flushed first; ``Machine.restore`` brings it back. Returns the RAM size,
        the bytes of RAM stored (zero pages are not) and the file's size on disk."""
        from .snapshot import save

        for engine in self.engines:
            sync = getattr(engine, "sync_hart", None)
            if sync is not None:
                sync()
        return save(self, path)

    def _on_power(self, event: str, code: int) -> None:
        self._power = (event, code)
        raise StopRequest()

    def _feed_console(self) -> None:
        uart = self.board.uart
        space = uart.rx_space()
        if space > 0:
            data = self.console.read_input()
            if data:
                uart.receive(data[:space])

    def run_until(self, text: str | bytes, timeout: float) -> bool:
        """Run until the console output contains ``text`` (BufferConsole only).

        Returns True when it appeared, False on timeout or power-off. Output already
        seen before this call counts only if it comes after the last ``run_until`` match.
        """
        console = self.console
        if not isinstance(console, BufferConsole):
            raise TypeError("run_until needs a BufferConsole")
        needle = text.encode() if isinstance(text, str) else text
        start = self._seen
        found = console.output.find(needle, start)
        if found < 0:
            def check() -> bool:
                return console.output.find(needle, max(start, len(console.output) - 65536)) >= 0

            self.last_result = self.run(timeout=timeout, stop_when=check)
            found = console.output.find(needle, start)
        if found < 0:
            return False
        self._seen = found + len(needle)
        return True

    def run(
        self,
        max_instructions: int | None = None,
        timeout: float | None = None,
        stop_when: Callable[[], bool] | None = None,
        until_idle: bool = False,
    ) -> RunResult:
        """Run until power-off (or reset with ``no_reboot``), a quit key, or a limit.

        ``stop_when`` is checked after every round of hart slices. With ``until_idle``
        the run ends (reason ``"idle"``) when every hart waits, instead of sleeping:
        whoever runs several machines on one thread (vm/group.py) sleeps for them all.
        """
        start = time.monotonic()
        deadline = start + timeout if timeout is not None else None
        board = self.board
        console = self.console
        harts = self.harts
        turns = self._turns()
        multi = len(harts) > 1
        reason = "poweroff"
        code = 0
        stretch = 1
        clock = time.perf_counter
        debug = self.debug
        try:
            while True:
                ran = 0
                full = True  # every hart that ran used its whole budget
                began = clock()
                if (max_instructions is not None and max_instructions - self.instructions
                        < MAX_STRETCH * sum(t[2] for t in turns)):
                    stretch = 1  # near a limit: stop close to it, as before
                for hart, engine, budget in turns:
                    if hart.waiting or hart.stopped:
                        continue
                    if multi:
                        hart.reservation = None  # another hart ran since its LR
                    try:
                        if debug is not None:  # a debugger holds the harts
                            n = debug.run_hart(hart, budget * stretch)
                        elif hart.triggers.armed:  # debug triggers: checked stepping
                            n = run_checked(hart, budget * stretch)
                            if not hart.triggers.armed:
                                engine.flush()  # its code ran while another did
                        else:
                            n = engine.run(budget * stretch)
                        ran += n
                        if n < budget * stretch:
                            full = False
                    except GuestCrash as crash:
                        self.crash = str(crash)
                        self.instructions += ran
                        return RunResult("crash", EXIT_GUEST_CRASH, self.instructions,
                                         time.monotonic() - start)
                    if self._power is not None or debug is not None and debug.stop:
                        break
                self.instructions += ran
                self.clock.advance(ran)
                took = clock() - began
                if full and took < ROUND_SECONDS and stretch < MAX_STRETCH:
                    stretch *= 2
                elif took > 2 * ROUND_SECONDS and stretch > 1:
                    stretch //= 2
                if self._warmup is not None and self.instructions >= self._warmup:
                    self._bring_up_jit()
                    turns = self._turns()
                if self._power is not None:
                    event, code = self._power
                    self._power = None
                    if event != "reset" or self.config.no_reboot:
                        reason = "poweroff"
                        break
                    self.reset()  # a warm reboot, then carry on (limits still apply)
                board.poll()
                self._feed_console()
                console.flush()
                if debug is not None and debug.stop:
                    reason, code = "debug", 0
                    break
                if stop_when is not None and stop_when():
                    reason, code = "stopped", 0
                    break
                if console.quit_requested:
                    reason, code = "quit", 0
                    break
                if console.snapshot_requested:
                    console.snapshot_requested = False
                    reason, code = "snapshot", 0
                    break
                if max_instructions is not None and self.instructions >= max_instructions:
                    reason, code = "limit", 0
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    reason, code = "timeout", 0
                    break
                if all(h.waiting or h.stopped for h in harts):
                    if until_idle:
                        # the host time since its last turn was the idle guest's
                        self.clock.advance(0, idle=True)
                        board.poll()
                        if all(h.waiting or h.stopped for h in harts):
                            reason, code = "idle", 0
                            break
                        continue  # a timer of its own fired meanwhile
                    self._idle(deadline)
                    self.clock.advance(0, idle=True)
        finally:
            console.flush()
        return RunResult(reason, code, self.instructions, time.monotonic() - start)

    @property
    def warming_up(self) -> bool:
        """Whether ``auto`` still runs on the interpreter, the JIT not yet started."""
        return self._warmup is not None

    def _turns(self) -> list[tuple[Hart, Any, int]]:
        return [(h, e, getattr(e, "preferred_slice", SLICE))
                for h, e in zip(self.harts, self.engines, strict=True)]

    def _bring_up_jit(self) -> None:
        """End of the warm-up: the JIT (or ``translate``, where it cannot run) takes
        over from the interpreter, whose decoded code is dropped."""
        t0 = time.perf_counter()
        self._warmup = None
        self.engine_name = resolve_engine("auto")
        for engine in self.engines:
            engine.flush()
        self.board.code.invalidate_range(self.board.ram.base, self.board.ram.size)
        self.engines = make_engines(self.engine_name, self.board)
        self.engine_start_seconds = time.perf_counter() - t0

    def _idle(self, run_deadline: float | None) -> None:
        """Every hart waits: sleep until a timer fires or input arrives.

        The sleep lasts until the next timer deadline (or the run's deadline), however
        far off, and waitable input (the console's fd, device fds) ends it at once, so
        an idle guest costs nothing between its own timer interrupts. Input that cannot
        be waited on is polled every MAX_IDLE_SLEEP seconds instead: a console with no
        fd (BufferConsole, fed by send()), a device ``input_source`` without an fd, and
        console input held back while the UART's receive queue is full (its fd would
        stay readable and turn the wait into a busy loop).
        """
        sleep_idle(*self.idle_wait(run_deadline))

    def idle_wait(self, run_deadline: float | None = None) -> tuple[float, list[int]]:
        """How long an idle machine may sleep (seconds; 0: not at all) and the fds whose
        input ends the sleep (see _idle)."""
        board = self.board
        if board.io_pending():  # requests left for the next round: no sleep
            return 0.0, []
        wait = 86400.0  # no limit (a day keeps the timeout in select()'s range)
        fds = board.wait_fds() + self.watch_fds
        fd = self.console.input_fd()
        if fd is not None and board.uart.rx_space() > 0:
            fds.append(fd)
        else:
            wait = MAX_IDLE_SLEEP
        if any(getattr(dev, "input_source", None) is not None and not dev.wait_fds()
               for dev in board.virtio_devices):
            wait = MAX_IDLE_SLEEP
        next_ns = board.next_deadline_ns()
        if next_ns is not None:
            wait = min(wait, max(0.0, (next_ns - self.clock.monotonic_ns()) / 1e9))
        if run_deadline is not None:
            wait = min(wait, max(0.0, run_deadline - time.monotonic()))
        io_at = board.io_deadline()  # a request waiting for its I/O budget
        if io_at is not None:
            wait = min(wait, max(0.0, io_at - time.monotonic()))
        return wait, fds

    def reset(self) -> None:
        self.board.reset()
        for engine in self.engines:
            engine.flush()

    def engine_stats(self) -> dict[str, int]:
        """The engine's counters summed over the harts (``pyhv run --stats``); empty for
        an engine that keeps none."""
        total: dict[str, int] = {}
        for engine in self.engines:
            stats = getattr(engine, "stats", None)
            if callable(stats):
                for key, value in stats().items():
                    total[key] = total.get(key, 0) + value
        return total

    def close(self) -> None:
        try:
            self._close()
        finally:
            tmp = getattr(self, "_restored_overlays", None)
            if tmp is not None:
                tmp.cleanup()

    def _close(self) -> None:
        for engine in self.engines:
            finish = getattr(engine, "close", None)
            if finish is not None:
                finish()  # e.g. the JIT saves what it compiled to its code cache
        self.board.close()
