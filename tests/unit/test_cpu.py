"""Unit tests for the tricky parts of the CPU: CSR WARL rules, interrupt selection,
the Sv39/Sv48 walk with A/D updates, misaligned and page-crossing accesses, exact
counters, and decoded-instruction invalidation on stores (self-modifying code)."""

from __future__ import annotations

import struct

import pytest

from pyhv.cpu.hart import Hart
from pyhv.cpu.interp import Interpreter
from pyhv.cpu.mmu import PTE_A, PTE_D, PTE_R, PTE_U, PTE_V, PTE_W, CodeWatch
from pyhv.cpu.trap import (
    LOAD_PAGE_FAULT,
    MIP_MTIP,
    MIP_SEIP,
    MIP_SSIP,
    MIP_STIP,
    STORE_PAGE_FAULT,
    IllegalInstruction,
    Trap,
)
from pyhv.isa import csr as C
from pyhv.isa.decoder import decode
from pyhv.memory.bus import Bus
from pyhv.memory.ram import GuestRAM

BASE = 0x8000_0000


def machine(words: list[int] | None = None) -> tuple[Hart, Interpreter, GuestRAM]:
    ram = GuestRAM(BASE, 4 << 20)
    code = CodeWatch()
    hart = Hart(0, ram, Bus(), code)
    interp = Interpreter(hart, code)
    if words:
        ram.write_bytes(BASE, struct.pack(f"<{len(words)}I", *words))
    hart.pc = BASE
    return hart, interp, ram


# -- decoder ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "word,name,fields",
    [
        (0x00A58593, "addi", {"rd": 11, "rs1": 11, "imm": 10}),
        (0xFFF00513, "addi", {"rd": 10, "rs1": 0, "imm": -1}),
        (0x40B50533, "sub", {"rd": 10, "rs1": 10, "rs2": 11}),
        (0x02B50533, "mul", {}),
        (0xFE000EE3, "beq", {"imm": -4}),
        (0x0000006F, "jal", {"imm": 0}),
        (0x34202573, "csrrs", {"rd": 10, "csr": 0x342}),
        (0x30200073, "mret", {}),
        (0x10500073, "wfi", {}),
        (0x12000073, "sfence.vma", {}),
        (0x0005B52F, "amoadd.d", {"rd": 10, "rs1": 11}),
        (0x1005A52F, "lr.w", {}),
        (0x02B57553, "fadd.d", {"rm": 7, "rs2": 11}),
        (0xC0051553, "fcvt.w.s", {"rm": 1}),
        (0x4025D513, "srai", {"imm": 2}),
        (0x43F5D513, "srai", {"imm": 63}),
        (0xFFFFFFFF, "illegal", {}),
        (0x00000000, "illegal", {}),
    ],
)
def test_decoder(word: int, name: str, fields: dict[str, int]) -> None:
    d = decode(word)
    assert d.name == name
    for key, value in fields.items():
        assert getattr(d, key) == value


def test_compressed_decodes_to_its_expansion() -> None:
    d = decode(0x4505, length=2)  # c.li a0, 1
    assert (d.name, d.rd, d.rs1, d.imm, d.length, d.raw) == ("addi", 10, 0, 1, 2, 0x4505)
    assert decode(0x0000, length=2).name == "illegal"


# -- CSRs ------------------------------------------------------------------------------


def test_satp_unsupported_mode_is_ignored() -> None:
    hart, _, _ = machine()
    hart.csr_write(C.SATP, (8 << 60) | 0x1234, 0)
    assert hart.satp == (8 << 60) | 0x1234
    hart.csr_write(C.SATP, (10 << 60) | 0x5678, 0)  # Sv57: not supported, WARL
    assert hart.satp == (8 << 60) | 0x1234
    hart.csr_write(C.SATP, (9 << 60) | 0x5678, 0)  # Sv48
    assert hart.satp >> 60 == 9


def test_csr_privilege_and_read_only() -> None:
    hart, _, _ = machine()
    hart.priv = C.PRV_S
    with pytest.raises(IllegalInstruction):
        hart.csr_read(C.MSTATUS, 0x30002573)
    with pytest.raises(IllegalInstruction):
        hart.csr_write(C.CYCLE, 1, 0)  # read-only CSR
    hart.priv = C.PRV_M
    with pytest.raises(IllegalInstruction):
        hart.csr_read(0x7C0, 0)  # unimplemented custom CSR


def test_misa_and_mstatus_xlen_fields() -> None:
    hart, _, _ = machine()
    misa = hart.csr_read(C.MISA, 0)
    assert misa >> 62 == 2
    for ext in "IMAFDCSU":
        assert misa & (1 << (ord(ext) - ord("A")))
    ms = hart.csr_read(C.MSTATUS, 0)
    assert (ms >> 32) & 3 == 2 and (ms >> 34) & 3 == 2


def test_mip_seip_rmw_uses_software_bit_only() -> None:
    # csrs mip, a0 (a0 = STIP) while the PLIC drives SEIP: SEIP must not stick.
    hart, interp, _ = machine([0x34452073, 0x0000006F])  # csrs mip, a0 ; j .
    hart.x[10] = MIP_STIP
    hart.set_mip_hw(MIP_SEIP, True)
    interp.run(1)
    assert hart.mip == MIP_STIP
    hart.set_mip_hw(MIP_SEIP, False)
    assert hart.csr_read(C.MIP, 0) & MIP_SEIP == 0


def test_interrupt_priority_and_delegation() -> None:
    hart, _, _ = machine()
    hart.mie = MIP_MTIP | MIP_SSIP | MIP_STIP
    hart.mip = MIP_SSIP | MIP_STIP
    hart.mip_hw = MIP_MTIP
    hart.mideleg = MIP_SSIP | MIP_STIP
    hart.priv = C.PRV_M
    hart.mstatus |= C.MSTATUS_MIE
    assert hart.interrupt_to_take() == 7  # M timer beats delegated ones
    hart.mip_hw = 0
    assert hart.interrupt_to_take() is None  # delegated interrupts never preempt M
    hart.priv = C.PRV_S
    assert hart.interrupt_to_take() is None  # SIE clear
    hart.mstatus |= C.MSTATUS_SIE
    assert hart.interrupt_to_take() == 1  # SSI before STI
    hart.priv = C.PRV_U
    hart.mstatus &= ~C.MSTATUS_SIE
    assert hart.interrupt_to_take() == 1  # always enabled below S


def test_trap_to_s_mode_updates_status() -> None:
    hart, _, _ = machine()
    hart.priv = C.PRV_U
    hart.medeleg = 1 << 8
    hart.stvec = 0x8000_1000
    hart.mstatus |= C.MSTATUS_SIE
    hart.take_trap(8, 0, 0x1234)
    assert (hart.priv, hart.pc, hart.scause, hart.sepc) == (C.PRV_S, 0x8000_1000, 8, 0x1234)
    assert hart.mstatus & C.MSTATUS_SPIE and not hart.mstatus & C.MSTATUS_SIE
    assert not hart.mstatus & C.MSTATUS_SPP  # came from U


# -- paging --------------------------------------------------------------------------------


def sv39(ram: GuestRAM, va: int, pa: int, flags: int) -> int:
    """Map one 4 KiB page with a 3-level table at BASE+1M; return satp."""
    root, mid, leaf = BASE + 0x10_0000, BASE + 0x10_1000, BASE + 0x10_2000
    vpn = [(va >> (12 + 9 * i)) & 0x1FF for i in range(3)]
    ram.write(root + vpn[2] * 8, 8, ((mid >> 12) << 10) | PTE_V)
    ram.write(mid + vpn[1] * 8, 8, ((leaf >> 12) << 10) | PTE_V)
    ram.write(leaf + vpn[0] * 8, 8, ((pa >> 12) << 10) | flags)
    return (8 << 60) | (root >> 12)


def test_sv39_walk_sets_accessed_and_dirty() -> None:
    hart, _, ram = machine()
    va, pa = 0x4000_0000, BASE + 0x20_0000
    hart.satp = sv39(ram, va, pa, PTE_V | PTE_R | PTE_W)
    hart.priv = C.PRV_S
    hart.mmu.update_mode()
    leaf = BASE + 0x10_2000 + ((va >> 12) & 0x1FF) * 8
    ram.write(pa + 8, 8, 0x1122334455667788)
    assert hart.mmu.load_u64(va + 8) == 0x1122334455667788
    assert ram.read(leaf, 8) & (PTE_A | PTE_D) == PTE_A
    hart.mmu.store_u32(va + 16, 0xDEADBEEF)
    assert ram.read(leaf, 8) & PTE_D
    assert ram.read(pa + 16, 4) == 0xDEADBEEF


def test_page_faults_and_user_bit() -> None:
    hart, _, ram = machine()
    va = 0x4000_0000
    hart.satp = sv39(ram, va, BASE + 0x20_0000, PTE_V | PTE_R | PTE_U)
    hart.priv = C.PRV_S
    hart.mmu.update_mode()
    with pytest.raises(Trap) as e:
        hart.mmu.load_u8(va)  # S-mode touching a U page without SUM
    assert (e.value.cause, e.value.tval) == (LOAD_PAGE_FAULT, va)
    hart.mstatus |= C.MSTATUS_SUM
    hart.mmu.update_mode()
    assert hart.mmu.load_u8(va) == 0
    with pytest.raises(Trap) as e:
        hart.mmu.store_u8(va, 1)  # read-only page
    assert e.value.cause == STORE_PAGE_FAULT
    with pytest.raises(Trap) as e:
        hart.mmu.load_u8(0x4000_1000)  # unmapped
    assert (e.value.cause, e.value.tval) == (LOAD_PAGE_FAULT, 0x4000_1000)
    with pytest.raises(Trap) as e:
        hart.mmu.load_u8(1 << 40)  # not sign-extended from bit 38
    assert e.value.cause == LOAD_PAGE_FAULT


def test_misaligned_access_across_pages_translates_both() -> None:
    hart, _, ram = machine()
    va = 0x4000_0FFC
    satp = sv39(ram, 0x4000_0000, BASE + 0x20_0000, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
    sv39(ram, 0x4000_1000, BASE + 0x30_0000, PTE_V | PTE_R | PTE_W | PTE_A | PTE_D)
    hart.satp = satp
    hart.priv = C.PRV_S
    hart.mmu.update_mode()
    hart.mmu.store_u64(va, 0x0807060504030201)
    assert ram.read_bytes(BASE + 0x20_0FFC, 4) == b"\x01\x02\x03\x04"
    assert ram.read_bytes(BASE + 0x30_0000, 4) == b"\x05\x06\x07\x08"
    assert hart.mmu.load_u64(va) == 0x0807060504030201


# -- interpreter ------------------------------------------------------------------------------


def test_self_modifying_code_is_seen_without_fence_i() -> None:
    # 0: addi a0, zero, 1 ; 4: sw a1, 0(a2) ; 8: j 0  -- the store rewrites insn 0
    hart, interp, _ = machine([0x00100513, 0x00B62023, 0xFF9FF06F])
    hart.x[12] = BASE
    hart.x[11] = 0x00200513  # addi a0, zero, 2
    interp.run(3)  # addi, sw, j
    assert hart.pc == BASE and hart.x[10] == 1
    interp.run(1)
    assert hart.x[10] == 2


def test_instret_is_exact_mid_slice() -> None:
    # nop x5 ; csrr a0, instret ; nop ; csrr a1, instret
    words = [0x00000013] * 5 + [0xC0202573, 0x00000013, 0xC02025F3]
    hart, interp, _ = machine(words)
    assert interp.run(8) == 8
    assert hart.x[10] == 5 and hart.x[11] == 7
    assert hart.instret == 8


def test_trap_is_precise() -> None:
    # addi a0, zero, 7 ; ld a1, 0(zero) -> access fault ; addi a0, zero, 9
    words = [0x00700513, 0x00003583, 0x00900513] + [0] * 61 + [0x0000006F]  # handler: j .
    hart, interp, _ = machine(words)
    hart.mtvec = BASE + 0x100
    interp.run(2)
    assert hart.x[10] == 7
    assert (hart.mcause, hart.mepc, hart.mtval) == (5, BASE + 4, 0)
    assert hart.pc == BASE + 0x100


def test_trap_storm_is_reported_not_spun() -> None:
    # mtvec points at an illegal instruction: every trap re-enters the same handler.
    from pyhv.cpu.run_loop import GuestCrash

    hart, interp, _ = machine([0x00003583])  # ld a1, 0(zero) -> access fault
    hart.mtvec = BASE + 0x100  # zeros there: illegal instruction
    with pytest.raises(GuestCrash) as e:
        interp.run(1000)
    assert "load access fault (tval 0x0) at pc 0x80000000" in str(e.value)
    assert "itself raises illegal instruction" in str(e.value)


def test_control_flow_exceptions_do_not_accumulate_tracebacks() -> None:
    """The run loop reuses exception instances; their tracebacks must not grow."""
    from pyhv.cpu import interp

    hart, it, _ = machine([0x30001073, 0xFFDFF06F])  # csrw mstatus, zero ; j -4
    it.run(20_000)  # 10,000 SliceBreaks
    assert interp._SLICE_BREAK.__traceback__ is None
