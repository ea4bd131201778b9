"""The debug trigger module (Sdtrig) of a hart, as QEMU 7.2's ``virt`` CPU has it.

Why: debuggers set hardware breakpoints and watchpoints through these CSRs, OpenSBI and
Linux probe them, and the official ISA suite's ``rv64mi-p-breakpoint`` uses them. Two
address/data match triggers sit behind ``tselect`` (0x7A0), ``tdata1``-``tdata3``
(0x7A1-0x7A3) and ``tinfo`` (0x7A4), all M-mode CSRs. What QEMU 7.2 keeps of a write
(measured with guests/tests/triggers.c on qemu-system-riscv64 7.2):

- ``tselect``: 0 or 1; larger values are ignored. ``tinfo`` reads 0x44 (types 2, 6).
- ``tdata1``: type 2 (mcontrol) or 6 (mcontrol6); a write of another type is ignored.
  Kept: the U/S/M mode bits, execute/store/load, a supported size (1, 2, 4 or 8 bytes;
  any other encoding reads 0, "any"), and type 6's VS/VU bits; match, chain, action,
  timing, select, hit and dmode read 0 (an equality match whose action is a breakpoint
  exception). Reset: type 2, nothing armed. ``tdata2``: the address. ``tdata3`` reads 0.
- A trigger fires when the hart's privilege has its mode bit: an execute trigger before
  the instruction at ``tdata2`` runs, a load or store trigger before an access that
  overlaps ``tdata2`` .. ``tdata2 + size`` (size "any": 8 bytes). The exception is a
  breakpoint (cause 3) at that instruction, ``xtval`` 0 (as QEMU).

While a trigger is armed the machine runs that hart through :func:`run_checked`, the
interpreter one instruction at a time with these checks, whatever its engine (QEMU
flushes its translated code for the same reason); disarmed, its engine resumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from ..isa import spec
from ..isa.decoder import decode
from ..records import U64, MaxLen, Record, StateError, record
from .run_loop import SLICE_EXITS, SliceStrategy
from .trap import Trap

if TYPE_CHECKING:
    from .hart import Hart

TSELECT, TDATA1, TDATA2, TDATA3, TINFO = 0x7A0, 0x7A1, 0x7A2, 0x7A3, 0x7A4
TRIGGER_CSRS = (TSELECT, TDATA1, TDATA2, TDATA3, TINFO)
NUM_TRIGGERS = 2
TYPE_MCONTROL, TYPE_MCONTROL6 = 2, 6
TINFO_VALUE = 1 << TYPE_MCONTROL | 1 << TYPE_MCONTROL6
M64 = (1 << 64) - 1

LOAD, STORE, EXECUTE = 1 << 0, 1 << 1, 1 << 2
MODE_U, MODE_S, MODE_M = 1 << 3, 1 << 4, 1 << 6
_KEEP = MODE_U | MODE_S | MODE_M | LOAD | STORE | EXECUTE
_SIZELO = 3 << 16
_SIZEHI = 3 << 21  # type 2 (RV64)
_SIZE6 = 0xF << 16  # type 6
_VS_VU = 3 << 23  # type 6
_SIZES = {0: 0, 1: 1, 2: 2, 3: 4, 5: 8}  # the size encodings QEMU accepts (bytes)
CAUSE_BREAKPOINT = 3

# loads and stores by instruction name: (bytes, reads, writes), from isa/spec.py
_ACCESSES: dict[str, tuple[int, bool, bool]] = {
    **{n: (i.size, True, False) for n, i in spec.LOADS.items()},
    **{n: (i.size, False, True) for n, i in spec.STORES.items()},
    **{n: (i.arg, i.op == "load", i.op == "store") for n, i in spec.FP.items()
       if i.op in ("load", "store")},
    "lr.w": (4, True, False), "lr.d": (8, True, False),
    "sc.w": (4, False, True), "sc.d": (8, False, True),
}


def access_of(name: str) -> tuple[int, bool, bool] | None:
    """(bytes, reads, writes) of the memory access the instruction ``name`` makes, or
    None for an instruction that touches no data memory."""
    got = _ACCESSES.get(name)
    if got is None and name.startswith("amo"):
        return (4 if name.endswith(".w") else 8, True, True)
    return got


class TriggerModule:
    """The trigger CSRs of one hart, and the checks they arm."""

    def __init__(self) -> None:
        self.select = 0
        self.tdata1 = [TYPE_MCONTROL << 60] * NUM_TRIGGERS
        self.tdata2 = [0] * NUM_TRIGGERS
        self.armed: list[tuple[int, int, int, int]] = []  # (kinds, modes, addr, size)

    # -- CSRs ----------------------------------------------------------------------------

    def read(self, num: int) -> int:
        if num == TSELECT:
            return self.select
        if num == TDATA1:
            return self.tdata1[self.select]
        if num == TDATA2:
            return self.tdata2[self.select]
        if num == TDATA3:
            return 0
        return TINFO_VALUE

    def write(self, num: int, value: int) -> bool:
        """Apply a CSR write; returns whether the set of armed triggers changed."""
        if num == TSELECT:
            if value < NUM_TRIGGERS:
                self.select = value
            return False
        if num == TDATA1:
            kind = value >> 60
            if kind == TYPE_MCONTROL:
                size = (value & _SIZELO) >> 16 | (value & _SIZEHI) >> 19
                keep = value & _KEEP | (value & (_SIZELO | _SIZEHI) if size in _SIZES else 0)
            elif kind == TYPE_MCONTROL6:
                size = (value & _SIZE6) >> 16
                keep = value & (_KEEP | _VS_VU) | (value & _SIZE6 if size in _SIZES else 0)
            else:
                return False  # other types are not there: the write is ignored
            self.tdata1[self.select] = kind << 60 | keep
        elif num == TDATA2:
            self.tdata2[self.select] = value & M64
        else:
            return False  # tdata3 and tinfo: nothing to keep
        return self._arm()

    def _arm(self) -> bool:
        armed = []
        for t1, addr in zip(self.tdata1, self.tdata2, strict=True):
            kinds = t1 & (LOAD | STORE | EXECUTE)
            modes = t1 & (MODE_U | MODE_S | MODE_M)
            if kinds and modes:
                if t1 >> 60 == TYPE_MCONTROL:
                    code = (t1 & _SIZELO) >> 16 | (t1 & _SIZEHI) >> 19
                else:
                    code = (t1 & _SIZE6) >> 16
                armed.append((kinds, modes, addr, _SIZES.get(code, 0) or 8))
        changed = armed != self.armed
        self.armed = armed
        return changed

    def save(self) -> TriggerState:
        return TriggerState(self.select, list(self.tdata1), list(self.tdata2))

    def restore(self, state: TriggerState) -> None:
        if (len(state.tdata1), len(state.tdata2)) != (NUM_TRIGGERS, NUM_TRIGGERS) \
                or state.select >= NUM_TRIGGERS:
            raise StateError(f"triggers: this hart has {NUM_TRIGGERS}")
        self.select = state.select
        self.tdata1 = list(state.tdata1)
        self.tdata2 = list(state.tdata2)
        self._arm()

    # -- checks --------------------------------------------------------------------------

    def fires(self, hart: Hart, pc: int, name: str, rs1: int, imm: int) -> bool:
        """Whether the instruction ``name`` at ``pc`` (about to run) hits a trigger."""
        mode_bit = (MODE_U, MODE_S, 0, MODE_M)[hart.priv]
        access = None
        for kinds, modes, addr, size in self.armed:
            if not modes & mode_bit:
                continue
            if kinds & EXECUTE and pc == addr:
                return True
            if kinds & (LOAD | STORE):
                if access is None:
                    access = access_of(name) or (0, False, False)
                length, reads, writes = access
                if not length or not (reads and kinds & LOAD or writes and kinds & STORE):
                    continue
                base = hart.x[rs1] if name.startswith(("lr.", "sc.", "amo")) else \
                    (hart.x[rs1] + imm) & M64
                if base < addr + size and addr < base + length:
                    return True
        return False


class _CheckedStepper(SliceStrategy):
    """The run loop's strategy while triggers are armed: one instruction a stretch,
    checked against the triggers first (a hit is a breakpoint exception at it)."""

    def __init__(self, hart: Hart) -> None:
        self.hart = hart

    def stretch(self, n: int) -> int:
        from .interp import make_op  # (the interpreter imports the hart, which imports us)

        hart = self.hart
        module = hart.triggers
        if not module.armed:
            self.ended = True
            return 0
        mmu = hart.mmu
        pc = hart.pc
        op: Any = None
        try:
            lo, _ = mmu.fetch16(pc)
            if lo & 3 == 3:
                hi, _ = mmu.fetch16((pc + 2) & M64)
                d = decode(lo | hi << 16, 4)
            else:
                d = decode(lo, 2)
            if module.fires(hart, pc, d.name, d.rs1, d.imm):
                raise Trap(CAUSE_BREAKPOINT, 0)
            op = make_op(hart, d, pc)
            hart.pc = op()
        except SLICE_EXITS:
            self.at = (0, pc, op, getattr(op, "npc", pc))
            raise
        return 1


def run_checked(hart: Hart, budget: int) -> int:
    """Run up to ``budget`` instructions of ``hart`` one at a time, each checked against
    its armed triggers first (a hit is a breakpoint exception at it); returns the
    instructions retired. Stops early when the triggers are disarmed, the hart waits
    in WFI or a device asks to stop."""
    return _CheckedStepper(hart).run(budget)


@record
class TriggerState(Record):
    """The debug triggers' CSRs (tselect, tdata1/2 of each trigger)."""

    select: U64
    tdata1: Annotated[list[U64], MaxLen(NUM_TRIGGERS)]
    tdata2: Annotated[list[U64], MaxLen(NUM_TRIGGERS)]
