"""System calls under the JIT: ECALL from U-mode and SRET back, done in native code.

A program's system call used to cost two trips to Python (the ECALL's trap into the
kernel, the kernel's SRET), each with every register copied out and back; a process-
heavy guest made tens of thousands of them a second. The native interpreter now does
both while Python has prepared the two contexts of the address space and no interrupt
waits. Checked against the interpreter, compiled and in the native interpreter: a U-mode
loop of system calls into an S-mode handler under Sv39 (every register and CSR the
same, instret included), an interrupt raised inside the handler and taken right after
the SRET as on the interpreter, and mstatus.TSR making SRET illegal.
"""

from __future__ import annotations

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")

from test_jit import BASE, WFI, addi, bne, i_type  # noqa: E402
from test_jit_smc import ROOT, TIERS, _lu32, _pair, s_mode_entry  # noqa: E402

import engine_world as W  # noqa: E402

H = W.H
S_TRAP = BASE + 0x1000  # S-mode handler (VA = PA, not user-accessible)
S_INIT = BASE + 0x1800
M_TRAP = BASE + 0x1C00
U_CODE = 0x4000_2000  # VA of the user program (PA BASE + 0x2000, a U gigapage)
L1 = BASE + 0x21000  # level-1 table of the user's data (VA 0xC000_0000)
REMAP = BASE + 0x1F00  # the data megapage's new PTE, and where it goes
N = 300  # system calls
K = 120  # the one after which the handler raises a supervisor software interrupt
K2 = 200  # the one in which it moves the user's data page (no interrupt pending then)


def csr(f3: int, rd: int, num: int, rs1: int) -> int:
    return (num << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x73


def beq(rs1, rs2, off):
    return H.enc_b(0, rs1, rs2, off)


def blt(rs1, rs2, off):
    return H.enc_b(4, rs1, rs2, off)


ECALL, SRET = 0x00000073, 0x10200073
SCAUSE, SEPC, SIP, SIE, STVEC, SSTATUS = 0x142, 0x141, 0x144, 0x104, 0x105, 0x100


def _program(w, tsr: bool) -> None:
    # Sv39: VA 0x8000_0000 -> RAM (kernel), VA 0x4000_0000 -> RAM with U set (user)
    w.ram.write_bytes(ROOT + 8 * 2, (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little"))
    w.ram.write_bytes(ROOT + 8 * 1, (((BASE >> 12) << 10) | 0xDF).to_bytes(8, "little"))
    boot = _lu32(30, 1 << 8) + [csr(1, 0, 0x302, 30)]  # medeleg: ECALL from U
    boot += _lu32(30, 1 << 1) + [csr(1, 0, 0x303, 30)]  # mideleg: SSIP
    boot += _lu32(30, M_TRAP) + [csr(1, 0, 0x305, 30)]  # mtvec
    if tsr:
        boot += _lu32(30, 1 << 22) + [csr(2, 0, 0x300, 30)]  # mstatus.TSR
    w.put(BASE, boot + s_mode_entry(S_INIT))
    s_init = _lu32(5, S_TRAP) + [csr(1, 0, STVEC, 5)]
    s_init += _lu32(5, U_CODE) + [csr(1, 0, SEPC, 5)]
    s_init += _lu32(5, 1 << 8) + [csr(3, 0, SSTATUS, 5)]  # SPP = U
    s_init += [csr(6, 0, SIE, 2), SRET]  # sie.SSIE; to user mode
    w.put(S_INIT, s_init)
    # in system call K: raise SSIP; in K2: move the user's data megapage (its PTE
    # rewritten, then SFENCE.VMA, both in the kernel) before returning
    remap = _lu32(28, REMAP) + [W.ld(29, 28, 0), W.ld(30, 28, 8), W.sd(29, 30, 0),
                                0x12000073]  # sfence.vma
    head = [
        csr(2, 5, SCAUSE, 0),  # t0 = scause
        None,  # blt t0, x0, irq
        csr(2, 6, SEPC, 0),
        addi(6, 6, 4),
        csr(1, 0, SEPC, 6),  # past the ecall
        addi(10, 10, 3),  # a0 += 3
        addi(7, 0, -1),
        None,  # beq a7, t2, done
        addi(9, 9, 1),  # s1 = system calls
        addi(28, 0, K),
        None,  # bne s1, t3, other
        csr(6, 0, SIP, 2),  # raise SSIP (SIE is 0 in the handler)
        addi(28, 0, K2),  # other:
        None,  # bne s1, t3, ret
    ] + remap
    ret = len(head)
    irq = ret + 2
    done = irq + 3
    handler = head + [
        SRET,  # ret
        0x13,
        csr(7, 0, SIP, 2),  # irq: clear SSIP
        addi(18, 18, 1),  # s2 = interrupts
        SRET,
        WFI,  # done
    ]
    handler[1] = blt(5, 0, 4 * (irq - 1))
    handler[7] = beq(17, 7, 4 * (done - 7))
    handler[10] = bne(9, 28, 8)
    handler[13] = bne(9, 28, 4 * (ret - 13))
    w.put(S_TRAP, handler)
    w.put(M_TRAP, [WFI])
    # VA 0xC000_0000: a level-1 table whose first megapage (U R W) is RAM's first 2 MiB,
    # then (after system call K) its second: the data word at 0x3000 in it differs
    w.ram.write_bytes(ROOT + 8 * 3, (((L1 >> 12) << 10) | 0x01).to_bytes(8, "little"))
    w.ram.write_bytes(L1, (((BASE >> 12) << 10) | 0xD7).to_bytes(8, "little"))
    new_pte = (((BASE + (2 << 20)) >> 12) << 10) | 0xD7
    w.ram.write_bytes(REMAP, new_pte.to_bytes(8, "little") + L1.to_bytes(8, "little"))
    w.ram.write_bytes(BASE + 0x3000, (1).to_bytes(8, "little"))
    w.ram.write_bytes(BASE + (2 << 20) + 0x3000, (1000).to_bytes(8, "little"))
    user = _lu32(19, 0xC000_3000) + [  # s3 = the data word's VA
        addi(8, 0, N), ECALL, W.ld(21, 19, 0), W.add(20, 20, 21),  # s4 += *s3
        addi(11, 11, 1), addi(8, 8, -1), bne(8, 0, -20),
        addi(17, 0, -1), ECALL]
    w.put(BASE + 0x2000, user)
    w.hart.pc = BASE


@TIERS
def test_system_calls_run_natively_as_on_the_interpreter(threshold):
    interp, jit = _pair(threshold, lambda w: _program(w, tsr=False))
    h = interp.hart
    assert (h.x[10], h.x[9], h.x[18], h.x[11]) == (3 * (N + 1), N, 1, N)
    assert h.x[20] == (K2 - 1) * 1 + (N - K2 + 1) * 1000  # the new mapping seen at once
    assert h.priv == 1 and h.scause == 8
    assert jit.state() == interp.state()
    assert (jit.hart.stval, jit.hart.last_trap) == (interp.hart.stval, interp.hart.last_trap)
    stats = jit.engine.stats()
    assert stats["native_syscalls"] >= N - 10, stats
    assert stats["native_trap_returns"] >= N - 10, stats


@TIERS
def test_sret_with_tsr_set_is_left_to_python(threshold):
    """mstatus.TSR: the handler's first SRET is illegal (to M-mode), on both."""
    interp, jit = _pair(threshold, lambda w: _program(w, tsr=True))
    assert interp.hart.priv == 3 and interp.hart.mcause == 2
    assert jit.state() == interp.state()


# -- page faults from U-mode ---------------------------------------------------------------
L0 = BASE + 0x22000  # level-0 table of the user's demand-paged region (VA 0xC000_0000)
FRAMES = BASE + 0x100000  # frame i of that region: PA FRAMES + i * 4096
FUNC_PAGE = 16  # a page of the region holding a function (an instruction page fault)


def _sh(f3, rd, rs1, sh):
    return i_type(0x13, rd, f3, rs1, sh)


def _fault_program(w) -> None:
    """U-mode code touches a region whose pages are mapped on demand by the S-mode
    handler: pages 0-3 not mapped (load faults), 4-7 mapped read-only (store faults:
    made writable, then SFENCE.VMA), page 16 holds a function, not mapped (a fetch
    fault). Then an ECALL with a7 = -1 parks the hart in the handler."""
    w.ram.write_bytes(ROOT + 8 * 2, (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little"))
    w.ram.write_bytes(ROOT + 8 * 1, (((BASE >> 12) << 10) | 0xDF).to_bytes(8, "little"))
    w.ram.write_bytes(ROOT + 8 * 3, (((L1 >> 12) << 10) | 0x01).to_bytes(8, "little"))
    w.ram.write_bytes(L1, (((L0 >> 12) << 10) | 0x01).to_bytes(8, "little"))
    for i in range(4, 8):  # read-only, user, accessed
        pte = (((FRAMES >> 12) + i) << 10) | 0x53
        w.ram.write_bytes(L0 + 8 * i, pte.to_bytes(8, "little"))
    for i in range(8):
        w.ram.write_bytes(FRAMES + i * 4096, (i * 100).to_bytes(8, "little"))
    w.put(FRAMES + FUNC_PAGE * 4096, [addi(20, 20, 1), i_type(0x67, 0, 0, 1, 0)])
    deleg = (1 << 8) | (1 << 12) | (1 << 13) | (1 << 15)
    boot = _lu32(30, deleg) + [csr(1, 0, 0x302, 30)]  # medeleg
    boot += _lu32(30, M_TRAP) + [csr(1, 0, 0x305, 30)]  # mtvec
    w.put(BASE, boot + s_mode_entry(S_INIT))
    s_init = _lu32(5, S_TRAP) + [csr(1, 0, STVEC, 5)]
    s_init += _lu32(5, U_CODE) + [csr(1, 0, SEPC, 5)]
    s_init += _lu32(5, 1 << 8) + [csr(3, 0, SSTATUS, 5)]  # SPP = U
    s_init += _lu32(21, L0) + _lu32(22, FRAMES >> 12) + [SRET]  # s5, s6: the kernel's
    w.put(S_INIT, s_init)
    handler = [
        csr(2, 5, SCAUSE, 0),  # 0: t0 = scause
        addi(6, 0, 8),  # 4
        None,  # 8: beq t0, t1, syscall
        csr(2, 6, 0x143, 0),  # 12: t1 = stval
        _sh(5, 6, 6, 12),  # 16: t1 >>= 12
        _sh(7, 6, 6, 511),  # 20: t1 &= 511 (andi)
        _sh(1, 7, 6, 3),  # 24: t2 = t1 << 3
        W.add(7, 7, 21),  # 28: t2 = &L0[t1]
        W.add(28, 6, 22),  # 32: t3 = frame PPN
        _sh(1, 28, 28, 10),  # 36
        _sh(6, 28, 28, 0xDF),  # 40: V R W X U A D (ori)
        W.ld(29, 7, 0),  # 44: t4 = the old PTE
        W.sd(28, 7, 0),  # 48
        _sh(7, 29, 29, 1),  # 52: was it valid?
        beq(29, 0, 8),  # 56: -> 64
        0x12000073,  # 60: sfence.vma
        addi(23, 23, 1),  # 64: s7 = faults
        SRET,  # 68
        addi(7, 0, -1),  # 72: syscall: a7 == -1 -> park
        beq(17, 7, 8),  # 76 -> 84
        WFI,  # 80 (not reached)
        WFI,  # 84
    ]
    handler[2] = beq(5, 6, 72 - 8)
    w.put(S_TRAP, handler)
    w.put(M_TRAP, [WFI])
    user = _lu32(19, 0xC000_0000) + _lu32(18, 0xC000_0000 + FUNC_PAGE * 4096) + [
        addi(8, 0, 40),  # s0 = 40 rounds
        _sh(7, 12, 8, 7),  # loop: a2 = s0 & 7
        _sh(1, 12, 12, 12),  # a2 <<= 12
        W.add(13, 19, 12),  # a3 = the page
        W.ld(11, 13, 0),  # a1 = *a3 (load fault on pages 0-3)
        W.add(20, 20, 11),  # s4 += a1
        W.sd(8, 13, 8),  # a3[1] = s0 (store fault on pages 4-7)
        i_type(0x67, 1, 0, 18, 0),  # jalr ra, s2: the function (fetch fault once)
        addi(8, 8, -1),
        bne(8, 0, -32),
        addi(17, 0, -1), ECALL,
    ]
    w.put(BASE + 0x2000, user)
    w.hart.pc = BASE


@TIERS
def test_page_faults_from_user_mode_natively_as_on_the_interpreter(threshold):
    interp, jit = _pair(threshold, _fault_program)
    h = interp.hart
    assert h.x[23] == 9  # 4 load faults, 4 store faults, 1 fetch fault
    assert h.x[20] == 5 * sum(i * 100 for i in range(8)) + 40
    assert jit.state() == interp.state()
    assert (jit.hart.stval, jit.hart.last_trap) == (interp.hart.stval, interp.hart.last_trap)
    assert jit.ram.read_bytes(L0, 8 * 17) == interp.ram.read_bytes(L0, 8 * 17)
    stats = jit.engine.stats()
    assert stats["native_page_faults"] >= 5, stats


# -- SBI calls: ECALL from S-mode into M-mode and MRET back ----------------------------------
SBI_N = 240  # calls
SBI_DATA = BASE + 0x3000


def _sbi_program(w, vectored: bool = False) -> None:
    """S-mode (Sv39) makes SBI_N calls into an M-mode handler that returns a value of
    a0 and a7 and, on every eighth call, raises a supervisor software interrupt on its
    way out (as OpenSBI hands an IPI to the kernel): the MRET lets it in, and S-mode's
    handler runs next; between calls S-mode loads and stores through its soft TLB, which
    the round trip into M-mode must leave usable. ``vectored``: stvec in vectored mode
    (the interrupt's handler at its base + 4)."""
    w.ram.write_bytes(ROOT + 8 * 2, (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little"))
    boot = _lu32(30, 1 << 1) + [csr(1, 0, 0x303, 30)]  # mideleg: SSIP
    boot += _lu32(30, M_TRAP) + [csr(1, 0, 0x305, 30)]  # mtvec
    w.put(BASE, boot + s_mode_entry(S_INIT))
    s_code = _lu32(5, S_TRAP + 1 if vectored else S_TRAP + 4)
    s_code += [csr(1, 0, STVEC, 5), csr(6, 0, SIE, 2),  # sie.SSIE
               csr(6, 0, SSTATUS, 2)]  # sstatus.SIE
    s_code += _lu32(19, SBI_DATA) + [addi(8, 0, SBI_N)]  # s3 = data, s0 = calls
    loop = len(s_code)
    s_code += [
        i_type(0x13, 17, 7, 8, 3),  # a7 = s0 & 3
        addi(10, 8, 0),  # a0 = s0
        ECALL,
        W.add(20, 20, 10),  # s4 += a0
        W.ld(6, 19, 0), W.add(6, 6, 10), W.sd(6, 19, 0),  # *s3 += a0
        addi(8, 8, -1),
    ]
    s_code += [bne(8, 0, 4 * (loop - len(s_code))), WFI]
    w.put(S_INIT, s_code)
    # S-mode's interrupt handler: clear SSIP, count (at S_TRAP + 4: SSI's vector)
    w.put(S_TRAP, [WFI, csr(7, 0, SIP, 2), addi(18, 18, 1), SRET])
    # M-mode: mepc += 4; a0 = 2 * a0 + a7; s5 += 1; every eighth call mip.SSIP = 1
    m = [csr(2, 30, 0x341, 0), addi(30, 30, 4), csr(1, 0, 0x341, 30),
         W.add(10, 10, 10), W.add(10, 10, 17), addi(21, 21, 1),
         i_type(0x13, 31, 7, 21, 7)]  # t6 = s5 & 7
    m += [bne(31, 0, 8), csr(6, 0, 0x344, 2), 0x30200073]  # (csrrsi mip, SSIP); mret
    w.put(M_TRAP, m)
    w.hart.pc = BASE


@TIERS
@pytest.mark.parametrize("vectored", [False, True], ids=["direct", "vectored"])
def test_sbi_calls_run_natively_as_on_the_interpreter(threshold, vectored):
    interp, jit = _pair(threshold, lambda w: _sbi_program(w, vectored))
    h = interp.hart
    total = sum(2 * k + (k & 3) for k in range(1, SBI_N + 1))
    assert (h.x[21], h.x[20], h.x[18]) == (SBI_N, total, SBI_N // 8)
    assert int.from_bytes(interp.ram.read_bytes(SBI_DATA, 8), "little") == total
    assert h.priv == 1 and h.mcause == 9
    assert jit.state() == interp.state()
    assert jit.hart.last_trap == interp.hart.last_trap
    assert int.from_bytes(jit.ram.read_bytes(SBI_DATA, 8), "little") == total
    stats = jit.engine.stats()
    assert stats["native_sbi_calls"] >= SBI_N - 10, stats
    if vectored:  # (an MRET that lets an interrupt into a vectored stvec: Python)
        assert stats["native_interrupts"] == 0, stats
        assert stats["native_mrets"] >= SBI_N * 7 // 8 - 10, stats
    else:  # the interrupts the MRETs let in taken there too
        assert stats["native_interrupts"] >= SBI_N // 8 - 3, stats
        assert stats["native_mrets"] >= SBI_N - 10, stats


@TIERS
def test_sbi_calls_with_an_s_level_interrupt_pending_run_natively(threshold):
    """SBI calls made while a timer interrupt for S-mode is pending and masked there (a
    kernel's timer handler asking for the next one, sbi_set_timer), into a firmware
    that clears or raises STIP: natively, as on the interpreter (M-mode never takes an
    interrupt delegated to S-mode; S-mode, SIE clear, does not take it either)."""
    n = 200
    w_boot = _lu32(30, 1 << 5)  # t5 = STIP / STIE
    boot = w_boot + [csr(1, 0, 0x303, 30), csr(2, 0, 0x304, 30)]  # mideleg, mie
    boot += _lu32(29, M_TRAP) + [csr(1, 0, 0x305, 29)]  # mtvec

    def setup(w) -> None:
        w.ram.write_bytes(ROOT + 8 * 2, (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little"))
        w.put(BASE, boot + s_mode_entry(S_INIT))
        s_code = _lu32(5, S_TRAP) + [csr(1, 0, STVEC, 5), addi(7, 0, 1 << 5),
                                     csr(2, 0, SIE, 7)]  # sie.STIE
        s_code += [addi(8, 0, n)]
        loop = len(s_code)
        # (a read of scounteren before each call is Python's: native code is entered
        # again right before the ECALL, with STIP pending on every other one)
        s_code += [addi(10, 8, 0), csr(2, 6, 0x106, 0), ECALL, W.add(20, 20, 10),
                   addi(8, 8, -1)]
        s_code += [bne(8, 0, 4 * (loop - len(s_code))), WFI]
        w.put(S_INIT, s_code)
        w.put(S_TRAP, [WFI])  # (never: SIE stays clear)
        # M-mode: mepc += 4; a0 *= 2; s5 += 1; STIP raised on odd calls, cleared on even
        m = [csr(2, 31, 0x341, 0), addi(31, 31, 4), csr(1, 0, 0x341, 31),
             W.add(10, 10, 10), addi(21, 21, 1), i_type(0x13, 31, 7, 21, 1),
             addi(28, 0, 1 << 5)]  # t3 = STIP
        m += [bne(31, 0, 12), csr(3, 0, 0x344, 28), 0x30200073,  # even: clear; mret
              csr(2, 0, 0x344, 28), 0x30200073]  # odd: raise; mret
        w.put(M_TRAP, m)
        w.hart.pc = BASE

    interp, jit = _pair(threshold, setup)
    h = interp.hart
    assert (h.x[21], h.x[20], h.mip & (1 << 5)) == (n, n * (n + 1), 0)
    assert jit.state() == interp.state()
    stats = jit.engine.stats()
    assert stats["native_sbi_calls"] >= n - 10, stats


# -- the interrupt CSRs: mie, sie, mip, sip ---------------------------------------------------
IRQ_N = 150


def _irq_csr_program(w) -> None:
    """S-mode masks its software interrupt (sie), makes it pending (sip), reads it back,
    and unmasks it with SIE set: the interrupt comes exactly at the unmask; its handler
    clears it (sip). M-mode first sets mie and mideleg the same way, and sets and
    clears mip.SSIP while a device holds SEIP high (which a read-modify-write of mip
    must not copy into mip's own SEIP bit). Only the unmask that lets the interrupt in
    needs Python."""
    w.ram.write_bytes(ROOT + 8 * 2, (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little"))
    boot = _lu32(30, 1 << 1) + [csr(1, 0, 0x303, 30)]  # mideleg: SSIP
    boot += [csr(6, 0, 0x304, 2), csr(2, 29, 0x304, 0)]  # csrsi mie, SSIE; t4 = mie
    boot += [csr(6, 0, 0x344, 2), csr(7, 28, 0x344, 2)]  # mip.SSIP set, then cleared
    w.put(BASE, boot + s_mode_entry(S_INIT))
    s_code = _lu32(5, S_TRAP) + [csr(1, 0, STVEC, 5), csr(6, 0, SSTATUS, 2)]  # SIE on
    s_code += [addi(8, 0, IRQ_N)]
    loop = len(s_code)
    s_code += [
        csr(7, 0, SIE, 2),  # mask SSIE
        csr(6, 0, SIP, 2),  # SSIP pending (masked)
        csr(2, 6, SIP, 0),  # t1 = sip
        W.add(20, 20, 6),  # s4 += t1
        csr(2, 7, SIE, 0),  # t2 = sie
        W.add(20, 20, 7),
        csr(6, 0, SIE, 2),  # unmask: the interrupt comes here
        addi(8, 8, -1),
    ]
    s_code += [bne(8, 0, 4 * (loop - len(s_code))), WFI]
    w.put(S_INIT, s_code)
    w.put(S_TRAP, [csr(7, 0, SIP, 2), addi(18, 18, 1), csr(2, 9, SIE, 0),  # s1 = sie
                   SRET])
    w.put(M_TRAP, [WFI])
    w.hart.set_mip_hw(1 << 9, True)  # SEIP: an external interrupt (not enabled in mie)
    w.hart.pc = BASE


@TIERS
def test_interrupt_csrs_natively_as_on_the_interpreter(threshold):
    interp, jit = _pair(threshold, _irq_csr_program)
    h = interp.hart
    assert (h.x[18], h.x[20], h.x[9], h.x[29], h.x[28]) == (IRQ_N, 2 * IRQ_N, 2, 2, 0x202)
    assert h.mie == 2 and h.mip == 0 and h.scause == (1 << 63) | 1
    assert jit.state() == interp.state()
    assert (jit.hart.mie, jit.hart.mip) == (h.mie, h.mip)
    e = jit.engine
    assert e.irq_exits >= IRQ_N - 10, e.stats()
    assert e.slow_exits < IRQ_N, e.stats()  # (before: five a round)


# -- a kernel with a page table of its own (xv6): satp written at every trap ---------------
UROOT_A = BASE + 0x23000  # the two processes' root tables (the kernel's is ROOT)
UROOT_B = BASE + 0x24000
L1_A, L1_B = BASE + 0x25000, BASE + 0x26000  # their data megapages' level-1 tables
S_TRAP2 = BASE + 0x1400  # a second trap vector the handler writes on the way (never used)


def _xor(rd, rs1, rs2):
    return H.enc_r(0x33, rd, 4, rs1, rs2, 0)


def _satp_into(rd: int, root: int) -> list[int]:
    """rd = Sv39 satp of ``root`` (t6 as scratch)."""
    return [addi(rd, 0, 8), i_type(0x13, rd, 1, rd, 60)] + _lu32(31, root >> 12) + [
        H.enc_r(0x33, rd, 6, rd, 31, 0)]  # or rd, rd, t6


def _space_program(w) -> None:
    """xv6's shape: the kernel runs on a page table of its own (ROOT: its code, no user
    memory); each process has its own (the kernel's code, supervisor-only, as the
    trampoline, plus the user's code and a data megapage: A's holds 1, B's 1000 at the
    same virtual address). The trap handler writes satp (the kernel's), fences, reads
    satp back, rewrites stvec twice, then fences and switches to the other process (as
    xv6's userret, without its second fence) and returns: every system call writes
    satp twice."""
    kernel = (((BASE >> 12) << 10) | 0xCF).to_bytes(8, "little")
    w.ram.write_bytes(ROOT + 8 * 2, kernel)
    for root, l1, data in ((UROOT_A, L1_A, BASE), (UROOT_B, L1_B, BASE + (2 << 20))):
        w.ram.write_bytes(root + 8 * 2, kernel)
        w.ram.write_bytes(root + 8 * 1, (((BASE >> 12) << 10) | 0xDF).to_bytes(8, "little"))
        w.ram.write_bytes(root + 8 * 3, (((l1 >> 12) << 10) | 0x01).to_bytes(8, "little"))
        w.ram.write_bytes(l1, (((data >> 12) << 10) | 0xD7).to_bytes(8, "little"))
    w.ram.write_bytes(BASE + 0x3000, (1).to_bytes(8, "little"))
    w.ram.write_bytes(BASE + (2 << 20) + 0x3000, (1000).to_bytes(8, "little"))
    boot = _lu32(30, 1 << 8) + [csr(1, 0, 0x302, 30)]  # medeleg: ECALL from U
    boot += _lu32(30, M_TRAP) + [csr(1, 0, 0x305, 30)]  # mtvec
    w.put(BASE, boot + s_mode_entry(S_INIT))
    s_init = _lu32(5, S_TRAP) + [csr(1, 0, STVEC, 5)]
    s_init += _lu32(5, U_CODE) + [csr(1, 0, SEPC, 5)]
    s_init += _lu32(5, 1 << 8) + [csr(3, 0, SSTATUS, 5)]  # SPP = U
    s_init += _satp_into(26, ROOT) + _satp_into(25, UROOT_A) + _satp_into(24, UROOT_B)
    # s9: the next process; the fence before the write covers every address space (the
    # moved megapage below), so none is needed after it
    userret = [0x12000073, csr(1, 0, 0x180, 25), SRET]
    w.put(S_INIT, s_init + userret)
    head = [
        csr(1, 0, 0x180, 26), 0x12000073,  # the kernel's page table; sfence.vma
        csr(2, 6, 0x180, 0),  # t1 = satp
        H.enc_r(0x33, 7, 0, 6, 26, 0x20),  # t2 = t1 - s10
        bne(7, 0, 8), addi(27, 27, 1),  # s11 counts satp reads of the kernel's
        addi(7, 0, -1),
        None,  # beq a7, t2, done
        csr(2, 6, SEPC, 0), addi(6, 6, 4), csr(1, 0, SEPC, 6),  # past the ecall
        addi(10, 10, 3),
    ] + _lu32(28, S_TRAP2) + [csr(1, 0, STVEC, 28)] + _lu32(28, S_TRAP) + [
        csr(1, 0, STVEC, 28),
        _xor(25, 25, 24), _xor(24, 24, 25), _xor(25, 25, 24),  # the other process next
    ]
    # in system call K2 (from B), A's data megapage moves onto B's (its parked TLB set
    # is stale after the fences: a native switch back to A must empty it first)
    remap = _lu32(28, REMAP) + [W.ld(29, 28, 0), W.ld(30, 28, 8), W.sd(29, 30, 0)]
    head += [addi(9, 9, 1), addi(28, 0, K2), bne(9, 28, 4 * (1 + len(remap))), *remap]
    w.ram.write_bytes(REMAP, ((((BASE + (2 << 20)) >> 12) << 10) | 0xD7).to_bytes(8, "little")
                      + L1_A.to_bytes(8, "little"))
    done = len(head) + len(userret)
    handler = head + userret + [WFI]
    handler[7] = beq(17, 7, 4 * (done - 7))
    w.put(S_TRAP, handler)
    w.put(M_TRAP, [WFI])
    user = _lu32(19, 0xC000_3000) + [
        addi(8, 0, N), ECALL, W.ld(21, 19, 0), W.add(20, 20, 21),  # s4 += *s3
        addi(8, 8, -1), bne(8, 0, -16),
        addi(17, 0, -1), ECALL]
    w.put(BASE + 0x2000, user)
    w.hart.pc = BASE


@TIERS
@pytest.mark.parametrize("native_writes", [True, False], ids=["native", "python"])
def test_satp_written_at_every_trap_natively_as_on_the_interpreter(threshold, native_writes,
                                                                  monkeypatch):
    """Each system call writes satp twice (each was a trip to Python): natively, with
    the TLB sets of both processes and the kernel kept, emptied after the fences that
    passed them, and the data each process reads its own. Without the spaces published
    for native writes, Python does each write and keeps the sets the same way."""
    if not native_writes:
        from pyhv.cpu.jit.engine import JitEngine
        monkeypatch.setattr(JitEngine, "_publish_spaces", lambda self, mxr: None)
    interp, jit = _pair(threshold, _space_program)
    h = interp.hart
    assert (h.x[10], h.x[27], h.x[9]) == (3 * N, N + 1, N)
    # after system call k the other process reads its word: B (k odd) 1000, A 1 until
    # its megapage moved (system call K2), then 1000
    assert h.x[20] == sum(1000 if k % 2 or k >= K2 else 1 for k in range(1, N + 1))
    assert jit.state() == interp.state()
    for name in ("satp", "stvec", "stval", "sscratch"):
        assert getattr(jit.hart, name) == getattr(h, name), name
    stats = jit.engine.stats()
    assert stats["native_syscalls"] >= N - 10, stats
    if native_writes:
        assert stats["native_satp_writes"] >= 2 * N - 20, stats
    else:
        assert stats["native_satp_writes"] == 0, stats
