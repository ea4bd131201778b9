"""One RISC-V hart: architectural state, CSRs, traps and interrupts.

The state is plain attributes (registers are lists of unsigned 64-bit ints) so the
interpreter's closures can reach it at Python speed; ``save()``/``restore()`` turn it into
a dict for snapshots. Privileged behaviour follows the RISC-V privileged spec 1.11 as
QEMU 7.2 implements it for rv64 (M, S, U; Sv39/Sv48; 16 PMP entries, not enforced).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from ..isa import csr as C
from ..memory.bus import Bus
from ..memory.ram import GuestRAM
from ..records import U3, U5, U64, MaxLen, Record, StateError, record
from .mmu import CodeWatch, Mmu
from .trap import (
    ECALL_FROM_M,
    ECALL_FROM_S,
    ECALL_FROM_U,
    IRQ_PRIORITY,
    MIE_MASK,
    MIP_SEIP,
    MIP_SSIP,
    MIP_STIP,
    MIP_SW_MASK,
    IllegalInstruction,
)
from .triggers import TRIGGER_CSRS, TriggerModule, TriggerState

M64 = (1 << 64) - 1
_MIDELEG_MASK = MIP_SSIP | MIP_STIP | MIP_SEIP
# medeleg: every exception except ecall-from-M and the reserved causes.
_MEDELEG_MASK = sum(1 << c for c in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 15))
_SATP_PPN_ASID = (1 << 60) - 1
_ASID_BITS = ((1 << 16) - 1) << 44
_PMPADDR_MASK = (1 << 54) - 1


EXCEPTION_NAMES = {
    0: "instruction address misaligned", 1: "instruction access fault",
    2: "illegal instruction", 3: "breakpoint", 4: "load address misaligned",
    5: "load access fault", 6: "store/AMO address misaligned", 7: "store/AMO access fault",
    8: "ecall from U-mode", 9: "ecall from S-mode", 11: "ecall from M-mode",
    12: "instruction page fault", 13: "load page fault", 15: "store/AMO page fault",
}



def _nothing(*args: object, **kwargs: object) -> None:
    """A hook with nothing to do."""

class Hart:
    """Architectural state of one hart plus its privileged-architecture behaviour."""

    def __init__(
        self,
        hartid: int,
        ram: GuestRAM,
        bus: Bus,
        code: CodeWatch,
        read_mtime: Callable[[], int] = lambda: 0,
    ) -> None:
        self.hartid = hartid
        self.read_mtime = read_mtime
        self.x: list[int] = [0] * 32
        self.f: list[int] = [0] * 32
        self.pc = 0
        self.priv = C.PRV_M
        self.fflags = 0
        self.frm = 0
        self.mstatus = C.MSTATUS_UXL | C.MSTATUS_SXL
        self.medeleg = 0
        self.mideleg = 0
        self.mie = 0
        self.mip = 0  # software-written bits (SSIP, STIP, SEIP)
        self.mip_hw = 0  # device-driven bits (MSIP, MTIP, MEIP, SEIP from the PLIC)
        self.mtvec = 0
        self.stvec = 0
        self.mscratch = 0
        self.sscratch = 0
        self.mepc = 0
        self.sepc = 0
        self.mcause = 0
        self.scause = 0
        self.mtval = 0
        self.stval = 0
        self.satp = 0
        self.mcounteren = 0
        self.scounteren = 0
        self.mcountinhibit = 0
        self.pmpcfg = [0, 0]  # pmpcfg0, pmpcfg2 (RV64: 8 entries each)
        self.pmpaddr = [0] * 16
        self.instret = 0  # instructions retired (advanced by the run loop)
        self.reservation: int | None = None  # LR/SC reserved physical address
        self.waiting = False  # in WFI
        self.yield_on_pause = False  # set by the machine when other harts share the host thread
        self.stopped = False  # not running (e.g. parked by the board)
        self.mmu = Mmu(self, ram, bus, code)
        # Set by CSR writes and xRET that change translation, privilege or interrupt
        # enables: the run loop then re-reads its context before the next instruction.
        self.context_changed = False
        # The debug triggers (cpu/triggers.py); ``leave_slice``: a trigger CSR write
        # armed or disarmed one, so the engine hands the hart back to the machine now.
        self.triggers = TriggerModule()
        self.leave_slice = False
        # The engine's hooks for SFENCE.VMA: drop decoded/translated code (set by the
        # engine that runs this hart; nothing to drop before one does).
        self.flush_decoded: Callable[..., None] = _nothing
        self.flush_decoded_page: Callable[[int], None] = _nothing
        # CSRs whose read is a plain attribute or a masked view (hot in trap handlers).
        self._simple_csrs: dict[int, Callable[[], int | None]] = {
            C.SIE: lambda: self.mie & self.mideleg,
            C.SIP: lambda: (self.mip | self.mip_hw) & self.mideleg,
            C.STVEC: lambda: self.stvec,
            C.SCOUNTEREN: lambda: self.scounteren,
            C.SSCRATCH: lambda: self.sscratch,
            C.SEPC: lambda: self.sepc,
            C.SCAUSE: lambda: self.scause,
            C.STVAL: lambda: self.stval,
            C.SATP: self._read_satp,
            C.MISA: lambda: C.MISA_RV64GC,
            C.MEDELEG: lambda: self.medeleg,
            C.MIDELEG: lambda: self.mideleg,
            C.MIE: lambda: self.mie,
            C.MTVEC: lambda: self.mtvec,
            C.MCOUNTEREN: lambda: self.mcounteren,
            C.MCOUNTINHIBIT: lambda: self.mcountinhibit,
            C.MSCRATCH: lambda: self.mscratch,
            C.MEPC: lambda: self.mepc,
            C.MCAUSE: lambda: self.mcause,
            C.MTVAL: lambda: self.mtval,
            C.MIP: lambda: self.mip | self.mip_hw,
            C.MVENDORID: lambda: 0,
            C.MARCHID: lambda: 0,
            C.MIMPID: lambda: 0,
            C.MHARTID: lambda: self.hartid,
        }
        # The two most recent traps (mcause-style code, tval, pc): crash reports use them.
        self.prev_trap: tuple[int, int, int] | None = None
        self.last_trap: tuple[int, int, int] | None = None

    # -- interrupts -------------------------------------------------------------------

    def set_mip_hw(self, mask: int, level: bool) -> None:
        """Device side: raise or lower an interrupt-pending wire (MSIP, MTIP, MEIP, SEIP)."""
        if level:
            self.mip_hw |= mask
            if self.mie & mask:
                self.waiting = False  # WFI wakes on any enabled pending interrupt
        else:
            self.mip_hw &= ~mask

    @property
    def pending(self) -> int:
        return (self.mip | self.mip_hw) & self.mie

    def interrupt_to_take(self) -> int | None:
        """The interrupt the hart must take now, or None (priv spec 3.1.9)."""
        pend = (self.mip | self.mip_hw) & self.mie
        if not pend:
            return None
        priv = self.priv
        ms = self.mstatus
        m_enabled = priv < C.PRV_M or ms & C.MSTATUS_MIE
        s_enabled = priv < C.PRV_S or (priv == C.PRV_S and ms & C.MSTATUS_SIE)
        m_pend = pend & ~self.mideleg if m_enabled else 0
        s_pend = pend & self.mideleg if s_enabled else 0
        for bits in (m_pend, s_pend):
            if bits:
                for irq in IRQ_PRIORITY:
                    if bits & (1 << irq):
                        return irq
        return None

    # -- traps ------------------------------------------------------------------------

    def take_trap(self, cause: int, tval: int, pc: int, interrupt: bool = False) -> None:
        """Enter the trap handler for ``cause`` raised at ``pc`` (priv spec 3.1.6-3.1.20)."""
        deleg = self.mideleg if interrupt else self.medeleg
        code = cause | (1 << 63) if interrupt else cause
        self.prev_trap, self.last_trap = self.last_trap, (code, tval, pc)
        ms = self.mstatus
        if self.priv <= C.PRV_S and (deleg >> cause) & 1:
            self.scause = code
            self.sepc = pc
            self.stval = tval
            ms = (ms & ~(C.MSTATUS_SPIE | C.MSTATUS_SIE | C.MSTATUS_SPP)) | (
                C.MSTATUS_SPIE if ms & C.MSTATUS_SIE else 0
            ) | (C.MSTATUS_SPP if self.priv == C.PRV_S else 0)
            self.priv = C.PRV_S
            vec = self.stvec
        else:
            self.mcause = code
            self.mepc = pc
            self.mtval = tval
            ms = (ms & ~(C.MSTATUS_MPIE | C.MSTATUS_MIE | C.MSTATUS_MPP)) | (
                C.MSTATUS_MPIE if ms & C.MSTATUS_MIE else 0
            ) | (self.priv << C.MSTATUS_MPP_SHIFT)
            self.priv = C.PRV_M
            vec = self.mtvec
        self.mstatus = ms
        base = vec & ~3
        self.pc = base + 4 * cause if (interrupt and vec & 1) else base
        self.mmu.update_mode()
        self.context_changed = True

    def ecall_cause(self) -> int:
        return (ECALL_FROM_U, ECALL_FROM_S, 0, ECALL_FROM_M)[self.priv]

    def mret(self, raw: int) -> int:
        if self.priv < C.PRV_M:
            raise IllegalInstruction(raw)
        ms = self.mstatus
        mpp = (ms >> C.MSTATUS_MPP_SHIFT) & 3
        ms = (ms & ~(C.MSTATUS_MIE | C.MSTATUS_MPP)) | C.MSTATUS_MPIE
        if self.mstatus & C.MSTATUS_MPIE:
            ms |= C.MSTATUS_MIE
        if mpp != C.PRV_M:
            ms &= ~C.MSTATUS_MPRV
        self.mstatus = ms
        self.priv = mpp
        self.mmu.update_mode()
        self.context_changed = True
        return self.mepc

    def sret(self, raw: int) -> int:
        if self.priv < C.PRV_S or (self.priv == C.PRV_S and self.mstatus & C.MSTATUS_TSR):
            raise IllegalInstruction(raw)
        ms = self.mstatus
        spp = C.PRV_S if ms & C.MSTATUS_SPP else C.PRV_U
        ms = (ms & ~(C.MSTATUS_SIE | C.MSTATUS_SPP)) | C.MSTATUS_SPIE
        if self.mstatus & C.MSTATUS_SPIE:
            ms |= C.MSTATUS_SIE
        ms &= ~C.MSTATUS_MPRV  # returning to a mode below M clears MPRV (priv 1.12)
        self.mstatus = ms
        self.priv = spp
        self.mmu.update_mode()
        self.context_changed = True
        return self.sepc

    def check_wfi(self, raw: int) -> None:
        if self.priv == C.PRV_U or (self.priv == C.PRV_S and self.mstatus & C.MSTATUS_TW):
            raise IllegalInstruction(raw)

    def check_sfence(self, raw: int) -> None:
        if self.priv == C.PRV_U or (self.priv == C.PRV_S and self.mstatus & C.MSTATUS_TVM):
            raise IllegalInstruction(raw)

    # -- FP status --------------------------------------------------------------------

    def fp_enabled(self) -> bool:
        return bool(self.mstatus & C.MSTATUS_FS)

    def mark_fs_dirty(self) -> None:
        self.mstatus |= C.MSTATUS_FS | C.MSTATUS_SD

    # -- CSRs -------------------------------------------------------------------------

    def _counter_allowed(self, num: int) -> bool:
        bit = 1 << (num & 31)
        if self.priv == C.PRV_M:
            return True
        if not self.mcounteren & bit:
            return False
        return self.priv == C.PRV_S or bool(self.scounteren & bit)

    def csr_read(self, num: int, raw: int) -> int:
        """Read CSR ``num`` with the privilege checks of an instruction (raises illegal)."""
        if (num >> 8) & 3 > self.priv:
            raise IllegalInstruction(raw)
        value = self._csr_get(num)
        if value is None:
            raise IllegalInstruction(raw)
        return value

    def _csr_get(self, num: int) -> int | None:  # noqa: C901 - a table in code form
        if num == C.SSTATUS:
            return self._read_mstatus() & C.SSTATUS_MASK
        if num == C.MSTATUS:
            return self._read_mstatus()
        if num in (C.FFLAGS, C.FRM, C.FCSR):
            if not self.fp_enabled():
                return None
            return (self.fflags, self.frm, self.frm << 5 | self.fflags)[num - 1]
        if num in (C.CYCLE, C.INSTRET) or C.HPMCOUNTER3 <= num <= C.HPMCOUNTER31:
            if not self._counter_allowed(num):
                return None
            return self.instret if num <= C.INSTRET else 0
        if num == C.TIME:
            if not self._counter_allowed(num):
                return None
            return self.read_mtime() & M64
        if num in (C.MCYCLE, C.MINSTRET):
            return self.instret
        if C.MHPMCOUNTER3 <= num <= C.MHPMCOUNTER31 or C.MHPMEVENT3 <= num <= C.MHPMEVENT31:
            return 0
        simple = self._simple_csrs.get(num)
        if simple is not None:
            return simple()
        if num in (C.PMPCFG0, C.PMPCFG0 + 2):
            return self.pmpcfg[(num - C.PMPCFG0) >> 1]
        if C.PMPADDR0 <= num <= C.PMPADDR15:
            return self.pmpaddr[num - C.PMPADDR0]
        if num in TRIGGER_CSRS:
            return self.triggers.read(num)
        return None

    def debug_csr_read(self, num: int) -> int | None:
        """A debugger's read of CSR ``num``: at any privilege, FP CSRs even with FS off;
        None for a CSR this hart does not have."""
        if num in (C.FFLAGS, C.FRM, C.FCSR):
            return (self.fflags, self.frm, self.frm << 5 | self.fflags)[num - 1]
        return self._csr_get(num)

    def debug_csr_write(self, num: int, value: int) -> bool:
        """A debugger's write of CSR ``num`` with the CSR's own WARL rules, as M-mode
        would do it (read-only CSRs refuse); returns whether it was written."""
        priv, self.priv = self.priv, C.PRV_M
        try:
            self.csr_write(num, value, 0)
        except IllegalInstruction:
            return False
        finally:
            self.priv = priv
        self.context_changed = True
        return True

    def _read_mstatus(self) -> int:
        ms = self.mstatus | C.MSTATUS_UXL | C.MSTATUS_SXL
        if (ms & C.MSTATUS_FS) == C.MSTATUS_FS:
            ms |= C.MSTATUS_SD
        else:
            ms &= ~C.MSTATUS_SD
        return ms

    def _read_satp(self) -> int | None:
        if self.priv == C.PRV_S and self.mstatus & C.MSTATUS_TVM:
            return None
        return self.satp

    def csr_write(self, num: int, value: int, raw: int) -> None:
        """Write CSR ``num`` (WARL rules applied); raises illegal on a bad access."""
        if (num >> 8) & 3 > self.priv or (num >> 10) == 3:
            raise IllegalInstruction(raw)
        value &= M64
        if num in TRIGGER_CSRS:
            if self.triggers.write(num, value):
                self.context_changed = self.leave_slice = True
            return
        if num == C.MSTATUS:
            self._write_mstatus(value, C.MSTATUS_WRITABLE)
        elif num == C.SSTATUS:
            self._write_mstatus(value, C.SSTATUS_MASK & C.MSTATUS_WRITABLE)
        elif num in (C.FFLAGS, C.FRM, C.FCSR):
            if not self.fp_enabled():
                raise IllegalInstruction(raw)
            if num == C.FFLAGS:
                self.fflags = value & 31
            elif num == C.FRM:
                self.frm = value & 7
            else:
                self.fflags = value & 31
                self.frm = (value >> 5) & 7
            self.mark_fs_dirty()
        elif num == C.MIE:
            self.mie = value & MIE_MASK
            self.context_changed = True
        elif num == C.SIE:
            self.mie = (self.mie & ~self.mideleg) | (value & self.mideleg & MIE_MASK)
            self.context_changed = True
        elif num == C.MIP:
            self.mip = (self.mip & ~MIP_SW_MASK) | (value & MIP_SW_MASK)
            self.context_changed = True
        elif num == C.SIP:
            mask = self.mideleg & MIP_SSIP
            self.mip = (self.mip & ~mask) | (value & mask)
            self.context_changed = True
        elif num == C.MIDELEG:
            self.mideleg = value & _MIDELEG_MASK
            self.context_changed = True
        elif num == C.MEDELEG:
            self.medeleg = value & _MEDELEG_MASK
        elif num in (C.MTVEC, C.STVEC):
            if value & 3 >= 2:  # reserved mode: keep the old value (WARL), as QEMU
                return
            if num == C.MTVEC:
                self.mtvec = value
            else:
                self.stvec = value
        elif num == C.MEPC:
            self.mepc = value & ~1
        elif num == C.SEPC:
            self.sepc = value & ~1
        elif num == C.MSCRATCH:
            self.mscratch = value
        elif num == C.SSCRATCH:
            self.sscratch = value
        elif num == C.MCAUSE:
            self.mcause = value
        elif num == C.SCAUSE:
            self.scause = value
        elif num == C.MTVAL:
            self.mtval = value
        elif num == C.STVAL:
            self.stval = value
        elif num == C.SATP:
            if self.priv == C.PRV_S and self.mstatus & C.MSTATUS_TVM:
                raise IllegalInstruction(raw)
            mode = value >> 60
            if mode not in (C.SATP_MODE_BARE, C.SATP_MODE_SV39, C.SATP_MODE_SV48):
                return  # unsupported mode: satp keeps its value (WARL), Linux probes this
            self.satp = value if mode else 0
            self.mmu.flush()
            self.mmu.update_mode()
            self.context_changed = True
        elif num == C.MCOUNTEREN:
            self.mcounteren = value & 0xFFFFFFFF
        elif num == C.SCOUNTEREN:
            self.scounteren = value & 0xFFFFFFFF
        elif num == C.MCOUNTINHIBIT:
            self.mcountinhibit = value & 0xFFFFFFFD
        elif num in (C.MCYCLE, C.MINSTRET):
            self.instret = value
        elif C.MHPMCOUNTER3 <= num <= C.MHPMCOUNTER31 or C.MHPMEVENT3 <= num <= C.MHPMEVENT31:
            return  # no hardware performance counters: read-only zero
        elif num in (C.PMPCFG0, C.PMPCFG0 + 2):
            self.pmpcfg[(num - C.PMPCFG0) >> 1] = self._pmpcfg_legal(
                self.pmpcfg[(num - C.PMPCFG0) >> 1], value
            )
        elif C.PMPADDR0 <= num <= C.PMPADDR15:
            self.pmpaddr[num - C.PMPADDR0] = value & _PMPADDR_MASK
        elif num in (C.MISA, C.MVENDORID, C.MARCHID, C.MIMPID, C.MHARTID):
            return  # misa is read-only here (WARL); the others cannot be written
        else:
            raise IllegalInstruction(raw)

    @staticmethod
    def _pmpcfg_legal(old: int, value: int) -> int:
        """Per-byte WARL: locked entries keep their value; R=0,W=1 is reserved."""
        out = 0
        for i in range(8):
            ob = (old >> (8 * i)) & 0xFF
            nb = (value >> (8 * i)) & 0x9F
            if ob & 0x80:
                nb = ob
            elif nb & 3 == 2:
                nb = ob
            out |= nb << (8 * i)
        return out

    def _write_mstatus(self, value: int, mask: int) -> None:
        ms = self.mstatus
        new = (ms & ~mask) | (value & mask)
        if ((new >> C.MSTATUS_MPP_SHIFT) & 3) == 2:  # reserved MPP: keep the old one
            new = (new & ~C.MSTATUS_MPP) | (ms & C.MSTATUS_MPP)
        self.mstatus = new & ~C.MSTATUS_SD
        if (ms ^ new) & (C.MSTATUS_MPRV | C.MSTATUS_SUM | C.MSTATUS_MXR | C.MSTATUS_MPP):
            self.mmu.update_mode()
        self.context_changed = True

    # -- snapshots --------------------------------------------------------------------------

    _SCALARS = (
        "pc priv fflags frm mstatus medeleg mideleg mie mip mtvec stvec mscratch sscratch "
        "mepc sepc mcause scause mtval stval satp mcounteren scounteren mcountinhibit "
        "instret waiting stopped"
    ).split()

    def save(self) -> HartState:
        return HartState(**{k: getattr(self, k) for k in self._SCALARS},
                         x=list(self.x), f=list(self.f), pmpcfg=list(self.pmpcfg),
                         pmpaddr=list(self.pmpaddr), triggers=self.triggers.save())

    def restore(self, state: HartState) -> None:
        """Take ``state`` (checked against HartState's ranges when it was loaded), with
        the WARL rules of the CSR writes where a range is not enough."""
        if state.priv == 2 or state.x[0] != 0 or len(state.x) != 32 or len(state.f) != 32:
            raise StateError(f"hart {self.hartid}: not an architectural state")
        for k in self._SCALARS:
            setattr(self, k, getattr(state, k))
        self.mstatus = C.MSTATUS_UXL | C.MSTATUS_SXL
        self._write_mstatus(state.mstatus, ~(C.MSTATUS_UXL | C.MSTATUS_SXL) & ((1 << 64) - 1))
        self.x[:] = state.x
        self.f[:] = state.f
        self.pmpcfg[:] = [self._pmpcfg_legal(0, v) for v in state.pmpcfg]
        self.pmpaddr[:] = [v & ((1 << 54) - 1) for v in state.pmpaddr]
        self.triggers.restore(state.triggers)
        self.reservation = None
        self.mmu.flush()
        self.mmu.update_mode()
        self.context_changed = True


@record
class HartState(Record):
    """A hart's architectural state: registers, CSRs, privilege, WFI; no engine's."""

    pc: U64
    priv: U3
    fflags: U5
    frm: U3
    mstatus: U64
    medeleg: U64
    mideleg: U64
    mie: U64
    mip: U64
    mtvec: U64
    stvec: U64
    mscratch: U64
    sscratch: U64
    mepc: U64
    sepc: U64
    mcause: U64
    scause: U64
    mtval: U64
    stval: U64
    satp: U64
    mcounteren: U64
    scounteren: U64
    mcountinhibit: U64
    instret: U64
    waiting: bool
    stopped: bool
    x: Annotated[list[U64], MaxLen(32)]
    f: Annotated[list[U64], MaxLen(32)]
    pmpcfg: Annotated[list[U64], MaxLen(2)]
    pmpaddr: Annotated[list[U64], MaxLen(16)]
    triggers: TriggerState
