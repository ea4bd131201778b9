"""A debugger's breakpoints, watchpoints and single step (the gdb stub's, vm/gdbstub.py).

Why: under the block translator or the JIT, a breakpoint in the middle of a compiled
block would be run straight through. So while a debugger holds any breakpoint or
watchpoint, or steps, the machine runs the hart through one of two strategies here,
whatever the hart's engine:

- :class:`BreakpointInterpreter`, when there are only execute breakpoints: the
  decode-cached interpreter with one set lookup before each instruction (a Linux boot
  to ``start_kernel`` takes seconds, not minutes);
- :class:`DebugStepper` for a single step, watchpoints, or while the guest's own debug
  triggers are armed (cpu/triggers.py: they stay honoured): the interpreter's closures,
  one instruction a stretch, each checked first.

Nothing changes on the fast path: a machine with no debugger attached never looks here.

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

from .interp import Interpreter
from .mmu import CodeWatch
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


class BreakpointInterpreter(Interpreter):
    """The decode-cached interpreter that stops before any instruction at an address
    in ``points.execute`` (``stop`` says which). One per hart, kept by the debugger;
    its SFENCE hooks on the hart are the engine's again when the debugger lets go
    (:meth:`lend`)."""

    def __init__(self, hart: Hart, code: CodeWatch, points: Breakpoints) -> None:
        saved = hart.flush_decoded, hart.flush_decoded_page
        super().__init__(hart, code)
        hart.flush_decoded, hart.flush_decoded_page = saved
        self.points = points
        self.stop: DebugStop | None = None

    def lend(self, take: bool) -> None:
        """``take``: the hart's SFENCE hooks come here (what it decoded before is
        dropped: the engine ran meanwhile); else they go back to ``engine``."""
        hart = self.hart
        if take:
            self._saved = hart.flush_decoded, hart.flush_decoded_page
            self.flush()
            hart.flush_decoded, hart.flush_decoded_page = self.flush, self.flush_page
        else:
            hart.flush_decoded, hart.flush_decoded_page = self._saved

    def stretch(self, n: int) -> int:
        """Interpreter.stretch, with the breakpoint check (the one difference)."""
        hart = self.hart
        hart.context_changed = False
        cid, cache = self._cache()
        execute = self.points.execute
        pc = hart.pc
        i = 0
        op: Any = None
        get = cache.get
        try:
            for i in range(n):  # noqa: B007 - i is read after the loop
                if pc in execute:
                    self.stop = DebugStop("break", pc)
                    self.ended = True
                    hart.pc = pc
                    return i
                op = get(pc)
                if op is None:
                    op = self._decode_into(pc, cid, cache)
                pc = op()
        except SLICE_EXITS:
            self.at = (i, pc, op, getattr(op, "npc", pc))
            raise
        hart.pc = pc
        return n


def run_debug(hart: Hart, points: Breakpoints, budget: int,
              single: bool = False) -> tuple[int, DebugStop | None]:
    """Run up to ``budget`` instructions of ``hart``, each checked against ``points``
    (``single``: exactly one); returns (instructions retired, why it stopped or None)."""
    stepper = DebugStepper(hart, points, single)
    n = stepper.run(1 if single else budget)
    return n, stepper.stop


__all__ = ["ACCESS", "READ", "WRITE", "BreakpointInterpreter", "Breakpoints", "DebugStepper",
           "DebugStop", "run_debug"]
