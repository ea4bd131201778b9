"""The platform-level interrupt controller: routes device interrupts to harts.

Why it exists: on the QEMU ``virt`` board every device interrupt (UART 10, RTC 11,
virtio-mmio 1..8) goes through a SiFive PLIC (``riscv,plic0`` at 0x0C00_0000). OpenSBI
and Linux's irq-sifive-plic driver program it; its outputs are the harts' machine and
supervisor external interrupt pending bits (MEIP, SEIP).

What it follows: the RISC-V PLIC specification with QEMU 7.2's ``virt`` layout
(hw/intc/sifive_plic.c, hart config "MS" per hart):

- source priority ``4*src`` (sources 1..num_sources-1, 3 bits: 0 = never interrupts,
  1..7; writes keep the low 3 bits, WARL like QEMU; source 0 does not exist, reads 0);
- pending bits at 0x1000 (read-only; writes ignored);
- enable bits at 0x2000 + 0x80*ctx;
- priority threshold at 0x20_0000 + 0x1000*ctx, claim/complete at 0x20_0004 +
  0x1000*ctx.

Context ``2h`` is hart ``h`` in M-mode (drives MIP_MEIP), ``2h+1`` hart ``h`` in S-mode
(drives MIP_SEIP). A context's output is high while some source is pending, enabled for
it, not claimed and of priority above its threshold. A claim returns the highest-priority
such source (ties: the lowest id), clears its pending bit and marks it claimed; 0 if
there is none.

Inputs behave as QEMU 7.2's (``sifive_plic_irq_request``), which drivers written
against QEMU rely on: each time a device raises its line (every ``IrqLine.set(True)``,
whether the level changed or not: a device re-evaluates its interrupt condition on its
register accesses), the source becomes pending, claimed or not; lowering the line
withdraws it. A completion only ends the claim: a line that stays high without being
raised again does not make the source pending again (a 16550 whose THR-empty condition
a driver leaves standing interrupts once, not in a storm). Registers are 32-bit: other
access sizes (bus errors in QEMU) and misaligned offsets read 0 and are ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from ..cpu.trap import MIP_MEIP, MIP_SEIP
from ..records import U3, MaxLen, Range, Record, StateError, record
from .base import Device, IrqLine

PLIC_NUM_SOURCES = 97  # source 0 (none) + sources 1..96: riscv,ndev = 96, as QEMU 7.2
PLIC_NUM_PRIORITIES = 7
PRIORITY_BASE = 0x0000
PENDING_BASE = 0x1000
ENABLE_BASE = 0x2000
ENABLE_STRIDE = 0x80
CONTEXT_BASE = 0x20_0000
CONTEXT_STRIDE = 0x1000
CONTEXT_THRESHOLD = 0x0
CONTEXT_CLAIM = 0x4

PRIORITY_MASK = PLIC_NUM_PRIORITIES  # 7: three priority bits


class Plic(Device):
    """SiFive PLIC with an M-mode and an S-mode context per hart."""

    name = "plic"
    native_access = True  # (see Device)
    size = 0x60_0000

    def __init__(
        self,
        num_harts: int,
        set_mip: Callable[[int, int, bool], None],
        num_sources: int = PLIC_NUM_SOURCES,
    ) -> None:
        if num_harts < 1:
            raise ValueError("num_harts must be at least 1")
        if not 2 <= num_sources <= 1024:
            raise ValueError("num_sources must be in 2..1024 (source 0 included)")
        self.num_harts = num_harts
        self.num_contexts = 2 * num_harts
        self.num_sources = num_sources
        self.set_mip = set_mip
        self._words = (num_sources + 31) >> 5
        # Bits of the sources that exist (1..num_sources-1).
        self._valid = ((1 << num_sources) - 1) & ~1
        self._lines: dict[int, IrqLine] = {}
        self.outputs = [False] * self.num_contexts
        self.reset()

    # -- board side ------------------------------------------------------------------

    def irq_line(self, source: int) -> IrqLine:
        """The wire a device drives into ``source`` (the same object on every call)."""
        if not 1 <= source < self.num_sources:
            raise ValueError(f"PLIC source {source} out of range 1..{self.num_sources - 1}")
        line = self._lines.get(source)
        if line is None:
            def sink(level: bool, source: int = source) -> None:
                self._set_input(source, level)

            line = IrqLine(sink)
            self._lines[source] = line
        return line

    def reset(self) -> None:
        """Reset: all priorities, thresholds, enables and pending bits 0, outputs low.

        Input line levels are kept (they belong to the devices driving them).
        """
        self.priority = [0] * self.num_sources
        self.threshold = [0] * self.num_contexts
        self.enable = [0] * self.num_contexts  # bitmask over source ids
        self.claimed = 0
        self.levels = 0
        for source, line in self._lines.items():
            if line.level:
                self.levels |= 1 << source
        self.pending = self.levels
        self._update()  # nothing is enabled now: lowers any output that was high

    # -- core ------------------------------------------------------------------------

    def _set_input(self, source: int, level: bool) -> None:
        bit = 1 << source
        if level:
            self.levels |= bit
            self.pending |= bit
        else:
            self.levels &= ~bit
            self.pending &= ~bit
        self._update()

    def _best(self, ctx: int) -> int:
        """The source a claim on ``ctx`` would return, or 0."""
        candidates = self.pending & ~self.claimed & self.enable[ctx]
        best = 0
        best_prio = self.threshold[ctx]
        priority = self.priority
        while candidates:
            low = candidates & -candidates
            source = low.bit_length() - 1
            candidates ^= low
            prio = priority[source]
            if prio > best_prio:
                best = source
                best_prio = prio
        return best

    def _update(self) -> None:
        outputs = self.outputs
        for ctx in range(self.num_contexts):
            level = self._best(ctx) != 0
            if outputs[ctx] != level:
                outputs[ctx] = level
                self.set_mip(ctx >> 1, MIP_SEIP if ctx & 1 else MIP_MEIP, level)

    def _claim(self, ctx: int) -> int:
        source = self._best(ctx)
        if source:
            bit = 1 << source
            self.pending &= ~bit
            self.claimed |= bit
        self._update()
        return source

    def _complete(self, source: int) -> None:
        if not 0 < source < self.num_sources:
            return
        bit = 1 << source
        if not self.claimed & bit:
            return
        self.claimed &= ~bit
        self._update()

    # -- MMIO ------------------------------------------------------------------------

    def read(self, offset: int, size: int) -> int:
        if size != 4 or offset & 3 or offset < 0:
            return 0
        if offset < PENDING_BASE:
            source = offset >> 2
            if source < self.num_sources:
                return self.priority[source]
            return 0
        if offset < ENABLE_BASE:
            word = (offset - PENDING_BASE) >> 2
            if word < self._words:
                return (self.pending >> (32 * word)) & 0xFFFF_FFFF
            return 0
        if offset < CONTEXT_BASE:
            rel = offset - ENABLE_BASE
            ctx = rel // ENABLE_STRIDE
            word = (rel % ENABLE_STRIDE) >> 2
            if ctx < self.num_contexts and word < self._words:
                return (self.enable[ctx] >> (32 * word)) & 0xFFFF_FFFF
            return 0
        rel = offset - CONTEXT_BASE
        ctx = rel // CONTEXT_STRIDE
        if ctx >= self.num_contexts:
            return 0
        reg = rel % CONTEXT_STRIDE
        if reg == CONTEXT_THRESHOLD:
            return self.threshold[ctx]
        if reg == CONTEXT_CLAIM:
            return self._claim(ctx)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 3 or offset < 0:
            return
        value &= 0xFFFF_FFFF
        if offset < PENDING_BASE:
            source = offset >> 2
            if 0 < source < self.num_sources:
                self.priority[source] = value & PRIORITY_MASK
                self._update()
            return
        if offset < ENABLE_BASE:
            return  # pending bits are read-only
        if offset < CONTEXT_BASE:
            rel = offset - ENABLE_BASE
            ctx = rel // ENABLE_STRIDE
            word = (rel % ENABLE_STRIDE) >> 2
            if ctx < self.num_contexts and word < self._words:
                shift = 32 * word
                enable = self.enable[ctx] & ~(0xFFFF_FFFF << shift)
                self.enable[ctx] = (enable | (value << shift)) & self._valid
                self._update()
            return
        rel = offset - CONTEXT_BASE
        ctx = rel // CONTEXT_STRIDE
        if ctx >= self.num_contexts:
            return
        reg = rel % CONTEXT_STRIDE
        if reg == CONTEXT_THRESHOLD:
            self.threshold[ctx] = value & PRIORITY_MASK
            self._update()
        elif reg == CONTEXT_CLAIM:
            self._complete(value)

    # -- snapshot ------------------------------------------------------------------

    def save(self) -> PlicState:
        return PlicState(list(self.priority), list(self.threshold), list(self.enable),
                         self.pending, self.claimed, self.levels)

    def restore(self, state: PlicState) -> None:
        ns, nc = self.num_sources, self.num_contexts
        if len(state.priority) != ns or len(state.threshold) != nc or len(state.enable) != nc:
            raise StateError(f"plic: saved for another board ({ns} sources, {nc} contexts here)")
        self.priority = list(state.priority)
        self.priority[0] = 0
        self.threshold = list(state.threshold)
        self.enable = [v & self._valid for v in state.enable]
        self.pending = state.pending & self._valid
        self.claimed = state.claimed & self._valid
        self.levels = state.levels & self._valid
        for source, line in self._lines.items():
            line.level = bool(self.levels >> source & 1)
        for ctx in range(nc):
            level = self._best(ctx) != 0
            self.outputs[ctx] = level
            self.set_mip(ctx >> 1, MIP_SEIP if ctx & 1 else MIP_MEIP, level)


SOURCE_BITS = Annotated[int, Range(0, (1 << 1024) - 1)]  # a bit per source (at most 1024)


@record
class PlicState(Record):
    """Priorities, per context threshold and enables, and the pending, claimed and
    level bits of the sources."""

    priority: Annotated[list[U3], MaxLen(1024)]
    threshold: Annotated[list[U3], MaxLen(15872)]
    enable: Annotated[list[SOURCE_BITS], MaxLen(15872)]
    pending: SOURCE_BITS
    claimed: SOURCE_BITS
    levels: SOURCE_BITS
