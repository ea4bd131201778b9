"""One slice of a hart, for every engine: the budget, interrupts, WFI, traps and the ways
a slice ends early, written once.

An engine (the interpreter, the block translator, the JIT, or the trigger-checked
stepper) is the strategy that runs guest code, chosen when the hart is built:
``stretch(n)`` runs up to ``n`` instructions from ``hart.pc`` and returns how many
retired, leaving ``hart.pc`` after them. An instruction that cannot finish inside the
stretch raises one of the exceptions below; before it propagates, the engine notes in
``at`` where: (instructions the stretch retired before it, its pc, its closure, the pc
after it). Everything that follows (taking the trap, counting, the exact counter
access, stopping) is :func:`run_slice`'s, the same for all engines, as QEMU's cpu_exec
loop is for all its accelerators.

- :class:`~pyhv.cpu.trap.Trap`: the instruction raised an exception; it did not retire.
- ``SliceBreak``: it retired and changed what the engine depends on (privilege, satp,
  a fence): the next stretch looks again.
- ``YieldSlice``: it retired and the hart gives the rest of its slice to the others
  (WFI or a pause hint on a machine of several harts).
- ``CounterAccess``: it reads or writes cycle/instret, which must be exact: the loop
  brings instret up to date and runs its exact form (``op.exact``).
- ``StopRequest``: a device asked to stop once this instruction is done.

An engine can also end the slice without an exception (``ended``: native code asked to
yield, or handed over after an IPI), and it gets ``begin(budget)`` and ``end()`` around
the slice. Engines derive from :class:`SliceStrategy`, whose ``run(budget)`` is this loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .trap import Trap

if TYPE_CHECKING:
    from .hart import Hart


class SliceBreak(Exception):
    """Raised after an instruction that requires the run loop to re-read its context."""


class YieldSlice(Exception):
    """Raised after a spin-wait hint (or WFI on a machine of several harts): end this
    hart's slice so another hart can run."""


class CounterAccess(Exception):
    """Raised by an instruction that reads or writes cycle/instret: the run loop knows
    the exact retired count mid-slice, so it performs the access itself (``op.exact``)."""


class StopRequest(Exception):
    """Raised by a device callback: finish the current instruction, then stop."""


class GuestCrash(Exception):
    """The hart can never make progress again: the first instruction of its trap handler
    raises the very exception that sent it there."""

    def __init__(self, hart: Hart) -> None:
        from .hart import EXCEPTION_NAMES  # (the hart module imports the engines' parts)

        first = hart.prev_trap if hart.prev_trap and hart.prev_trap[2] != hart.pc else None
        what = ""
        if first is not None:
            code, tval, pc = first
            name = EXCEPTION_NAMES.get(code, f"cause {code:#x}")
            what = f"{name} (tval {tval:#x}) at pc {pc:#x}, then "
        code, tval, _pc = hart.last_trap or (0, 0, 0)
        name = EXCEPTION_NAMES.get(code, f"cause {code:#x}")
        super().__init__(
            f"hart {hart.hartid}: {what}the trap handler at {hart.pc:#x} itself raises "
            f"{name} (tval {tval:#x}); mtvec {hart.mtvec:#x}, stvec {hart.stvec:#x}"
        )


# what leaves a stretch, for the engines' notes (``at``)
SLICE_EXITS = (Trap, SliceBreak, YieldSlice, CounterAccess, StopRequest)


class SliceStrategy(ABC):
    """An engine as the run loop sees it: ``stretch`` runs guest code; ``begin`` and
    ``end`` (nothing by default) come around each slice; ``run`` is one slice."""

    hart: Hart
    # where the last stretch left: (retired before the raising instruction, its pc, its
    # closure, the pc after it)
    at: tuple[int, int, Any, int] = (0, 0, None, 0)
    ended = False  # the stretch that just returned ends the slice

    def run(self, budget: int) -> int:
        """Run up to ``budget`` instructions; return how many retired (run_slice)."""
        return run_slice(self, budget)

    def begin(self, budget: int) -> None:  # noqa: B027 - optional: nothing by default
        """Before a slice."""

    def end(self) -> None:  # noqa: B027 - optional: nothing by default
        """After a slice, however it ended."""

    @abstractmethod
    def stretch(self, n: int) -> int:
        """Run up to ``n`` instructions from the hart's pc; return how many retired
        (each engine's own way: interpret, run a block, enter native code)."""


def run_slice(engine: SliceStrategy, budget: int) -> int:
    """Run ``engine``'s hart for up to ``budget`` instructions (traps count against the
    budget too); returns the instructions retired, which ``hart.instret`` counts. Ends
    early when the hart waits for an interrupt, yields or a device asks to stop."""
    hart = engine.hart
    done = 0
    trapped = 0  # trapping instructions retire nothing but still use up the budget
    base = hart.instret  # hart.instret = base + done, written back on the way out
    engine.ended = False
    engine.begin(budget)
    try:
        while done + trapped < budget:
            if hart.waiting:
                break
            if (hart.mip | hart.mip_hw) & hart.mie:
                irq = hart.interrupt_to_take()
                if irq is not None:
                    hart.take_trap(irq, 0, hart.pc, interrupt=True)
            try:
                hart.instret = base + done  # (exact as it goes in: native counter reads)
                done += engine.stretch(budget - done - trapped)
                if engine.ended:
                    break
            except Trap as t:
                retired, pc, _op, _npc = engine.at
                done += retired
                trapped += 1
                hart.take_trap(t.cause, t.tval, pc)
                if hart.pc == pc:
                    # The trap handler's first instruction is the one that just trapped
                    # (e.g. mtvec unset and nothing mapped there): the hart would trap
                    # forever. Report it instead of spinning.
                    hart.instret = base + done
                    raise GuestCrash(hart) from None
            # The shared exception instances below would keep growing their traceback
            # each time they are raised again: drop it in every handler.
            except SliceBreak as s:
                s.__traceback__ = None
                done += engine.at[0] + 1
            except YieldSlice as y:
                y.__traceback__ = None
                done += engine.at[0] + 1
                break
            except CounterAccess as c:
                c.__traceback__ = None
                retired, pc, op, _npc = engine.at
                done += retired
                hart.instret = base + done
                try:
                    hart.pc = op.exact()
                    base = hart.instret - done  # a write to minstret moves the base
                    done += 1
                except SliceBreak as s:
                    s.__traceback__ = None
                    base = hart.instret - done
                    done += 1
                except Trap as t:
                    trapped += 1
                    hart.take_trap(t.cause, t.tval, pc)
            except StopRequest:
                retired, _pc, _op, npc = engine.at
                done += retired + 1
                hart.pc = npc
                break
    finally:
        hart.instret = base + done
        engine.end()
    return done


__all__ = ["SliceStrategy", "run_slice", "SliceBreak", "YieldSlice", "CounterAccess",
           "StopRequest", "GuestCrash", "SLICE_EXITS"]
