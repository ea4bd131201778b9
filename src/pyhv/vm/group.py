"""Several machines in one process, run in turn on one thread: clones that share memory.

A clone in a process of its own shares the snapshot's RAM and the parent's pages, but
CPython writes the reference count of every object it touches, so each clone process
soon owns a copy of most of the interpreter heap it runs (~15 MiB of its own, ten clones
3.1x one VM's memory: bench/snapshot.py). Clones of one snapshot in one process share
all of it once: the interpreter, LLVM, the JIT's code cache and compiled blocks, and the
snapshot's RAM mapped copy-on-write (each machine's own is only what its guest wrote and
the engine's per-hart tables). Ten Linux clones at their shells took 1.1x one VM's
memory this way.

The group runs each machine for a time quantum in turn (``Machine.run(until_idle=True)``
returns early when all its harts wait); when every machine waits, the group sleeps once
for them all, until the earliest timer of any or input for any (``Machine.idle_wait``).
A power-off, crash or quit ends that machine's part; the others go on. What this does
not give is isolation between the group's guests beyond what the VMM gives each (one
process: a host-side fault takes the group down) and parallelism (one host thread, as
``-smp`` harts within a machine): it is for many light machines, such as clones idling
at their shells, not for CPU-bound ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .console import BufferConsole
from .machine import Machine, RunResult, sleep_idle

QUANTUM = 0.005  # seconds a machine runs before the next one's turn
ENDED = ("poweroff", "crash", "quit")  # a machine's part of the group run is over


class MachineGroup:
    """Machines run in turn on the calling thread (see the module's docstring)."""

    def __init__(self, machines: Iterable[Machine] = (), quantum: float = QUANTUM) -> None:
        if quantum <= 0:
            raise ValueError("quantum must be positive")
        self.machines: list[Machine] = list(machines)
        self.quantum = quantum
        self.results: dict[int, RunResult] = {}  # index -> how its machine ended

    @classmethod
    def clones(cls, path: str, count: int, quantum: float = QUANTUM,
               verify: bool = False) -> tuple[MachineGroup, list[BufferConsole]]:
        """``count`` clones of the snapshot at ``path`` (``Machine.restore(clone=True)``:
        fresh MACs and VM generation IDs each), each with a console of its own."""
        if count < 1:
            raise ValueError("a group needs at least one clone")
        consoles: list[BufferConsole] = []
        group = cls(quantum=quantum)
        try:
            for _ in range(count):
                console = BufferConsole()
                group.machines.append(Machine.restore(path, console=console, clone=True,
                                                      verify=verify))
                consoles.append(console)
        except BaseException:
            group.close()
            raise
        return group, consoles

    def running(self) -> list[int]:
        """Indexes of the machines whose run has not ended."""
        return [i for i in range(len(self.machines)) if i not in self.results]

    def run(self, timeout: float | None = None,
            stop_when: Callable[[], bool] | None = None) -> bool:
        """Run the machines in turn until ``stop_when()`` (checked after every turn),
        ``timeout`` seconds, or every machine's run ended (``results``). True if
        ``stop_when`` ended it."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        while True:
            live = self.running()
            if not live:
                return False
            idle = True
            for i in live:
                vm = self.machines[i]
                left = None if deadline is None else deadline - time.monotonic()
                quantum = self.quantum if left is None else max(0.0, min(self.quantum, left))
                result = vm.run(timeout=quantum, stop_when=stop_when, until_idle=True)
                if result.reason in ENDED:
                    self.results[i] = result
                elif result.reason != "idle":
                    idle = False
                if stop_when is not None and stop_when():
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if idle:
                self._sleep(deadline)

    def _sleep(self, deadline: float | None) -> None:
        """Every machine waits: sleep until the earliest of their timers, input for any
        of them, or the run's deadline."""
        wait, fds = 86400.0, []
        for i in self.running():
            w, f = self.machines[i].idle_wait(deadline)
            wait = min(wait, w)
            fds += f
        sleep_idle(wait, fds)

    def close(self) -> None:
        for vm in self.machines:
            vm.close()

    def __enter__(self) -> MachineGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
