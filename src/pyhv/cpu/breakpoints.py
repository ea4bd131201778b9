"""A debugger's breakpoints, watchpoints and single step (the gdb stub's, vm/gdbstub.py).

Why a stepper: under the block translator or the JIT, a breakpoint in the middle of a
compiled block would be run straight through. So while a debugger holds any breakpoint
or watchpoint, or steps, the machine runs the hart with :class:`DebugStepper`: the
interpreter's own closures, one instruction a stretch, each checked first, whatever the
hart's engine (as the guest's own debug triggers do, cpu/triggers.py; the guest's
triggers stay honoured meanwhile). Nothing changes on the fast path: a machine with no
debugger attached never looks here.

What a stop means, as gdb expects it (the RSP's stop replies):

- a breakpoint stops *before* the instruction at its address runs;
- a watchpoint stops *before* the load or store that would touch its bytes (the pc is
  that instruction's), as the RISC-V debug triggers do: gdb's RISC-V target knows its
  watchpoints as "non-steppable", so it takes the watchpoint out, steps over the
  access itself and then compares the old and new values (a stub that stopped after
  the access would have gdb step one instruction too far);
- a single step stops after exactly one instruction (or the first instruction of the
  trap handler it raised into: the interpreter's own sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .run_loop import SLICE_EXITS, SliceStrategy
from .trap import Trap
from .triggers import CAUSE_BREAKPOINT, M64, access_of

if TYPE_CHECKING:
    from .hart import Hart

WRITE, READ, ACCESS = "watch", "rwatch", "awatch"  # the stop reply's words (RSP)


@dataclass
class DebugStop:
    """Why a hart stopped for the debugger: ``kind`` is "break", "step" or one of the
    watch words; ``addr`` the breakpoint's or the watched address."""

    kind: str
    addr: int = 0


@dataclass
class Breakpoints:
    """What the debugger asked to stop at (shared by every hart, as gdb's all-stop
    mode has it): execute addresses, and watched ranges (kind, address, length)."""

    execute: set[int] = field(default_factory=set)
    watches: list[tuple[str, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.execute or self.watches)

    def watch_hit(self, hart: Hart, name: str, rs1: int, imm: int) -> DebugStop | None:
        """The watchpoint the instruction ``name`` (about to run) will touch, if any."""
        access = access_of(name)
        if access is None:
            return None
        length, reads, writes = access
        base = hart.x[rs1] if name.startswith(("lr.", "sc.", "amo")) else \
            (hart.x[rs1] + imm) & M64
        for kind, addr, size in self.watches:
            if not (writes and kind != READ or reads and kind != WRITE):
                continue
            if base < addr + size and addr < base + length:
                return DebugStop(kind, addr)
        return None


class DebugStepper(SliceStrategy):
    """A hart's strategy while a debugger holds it: one checked instruction a stretch.
    ``stop`` is set (and the slice ends) when a breakpoint or watchpoint is hit, or
    after the one instruction of a ``single`` step."""

    def __init__(self, hart: Hart, points: Breakpoints, single: bool = False) -> None:
        self.hart = hart
        self.points = points
        self.single = single
        self.stop: DebugStop | None = None

    def stretch(self, n: int) -> int:
        from ..isa.decoder import decode  # (kept out of the import of the hart module)
        from .interp import make_op  # (the interpreter imports the hart, which imports us)

        if self.stop is not None:
            self.ended = True
            return 0
        hart = self.hart
        points = self.points
        pc = hart.pc
        if pc in points.execute:
            self.stop = DebugStop("break", pc)
            self.ended = True
            return 0
        op: Any = None
        try:
            mmu = hart.mmu
            lo, _ = mmu.fetch16(pc)
            if lo & 3 == 3:
                hi, _ = mmu.fetch16((pc + 2) & M64)
                d = decode(lo | hi << 16, 4)
            else:
                d = decode(lo, 2)
            triggers = hart.triggers
            if triggers.armed and triggers.fires(hart, pc, d.name, d.rs1, d.imm):
                raise Trap(CAUSE_BREAKPOINT, 0)  # the guest's own trigger comes first
            if points.watches:
                watched = points.watch_hit(hart, d.name, d.rs1, d.imm)
                if watched is not None:
                    self.stop = watched
                    self.ended = True
                    return 0
            op = make_op(hart, d, pc)
            hart.pc = op()
        except SLICE_EXITS:
            self.at = (0, pc, op, getattr(op, "npc", pc))
            if self.single:
                self.stop = DebugStop("step")
            raise
        if self.single:
            self.stop = DebugStop("step")
            self.ended = True
        return 1


def run_debug(hart: Hart, points: Breakpoints, budget: int,
              single: bool = False) -> tuple[int, DebugStop | None]:
    """Run up to ``budget`` instructions of ``hart``, each checked against ``points``
    (``single``: exactly one); returns (instructions retired, why it stopped or None)."""
    stepper = DebugStepper(hart, points, single)
    n = stepper.run(1 if single else budget)
    return n, stepper.stop


__all__ = ["ACCESS", "READ", "WRITE", "Breakpoints", "DebugStepper",
           "DebugStop", "run_debug"]
