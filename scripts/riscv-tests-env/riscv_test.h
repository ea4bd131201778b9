/* pyhv's own environment for the official riscv-tests (github.com/riscv-software-src/
 * riscv-tests), written for pyhv and QEMU's virt board: bare metal, M-mode, -bios none.
 * A test passes by writing 0x5555 to the sifive,test finisher (power off, exit status
 * 0) and fails with 0x3333 | TESTNUM << 16 (exit status: the failing test's number).
 * Only what the single-core user-level tests (rv64ui, um, ua, uf, ud, uzba, uzbb, uzbs,
 * uzicond) use; see scripts/riscv-tests.sh. */
#ifndef PYHV_RISCV_TEST_H
#define PYHV_RISCV_TEST_H

#define TESTNUM gp
#define FINISHER 0x100000

#define RVTEST_RV64U .macro init; .endm
#define RVTEST_RV32U RVTEST_RV64U
/* F and D: the FPU on (mstatus.FS Initial), fcsr cleared */
#define RVTEST_RV64UF .macro init; li a0, 0x2000; csrs mstatus, a0; csrwi fcsr, 0; .endm
#define RVTEST_RV32UF RVTEST_RV64UF

#define RVTEST_CODE_BEGIN \
        .section .text.init; \
        .align 6; \
        .globl _start; \
_start: \
        csrr a0, mhartid; \
1:      bnez a0, 1b; \
        li TESTNUM, 0; \
        la t0, trap; \
        csrw mtvec, t0; \
        init;

#define RVTEST_CODE_END \
        .align 2; \
trap: \
        li TESTNUM, 1337; \
        RVTEST_FAIL; \
        unimp

#define RVTEST_PASS \
        fence; \
        li t0, FINISHER; \
        li t1, 0x5555; \
        sw t1, 0(t0); \
1:      j 1b;

#define RVTEST_FAIL \
        fence; \
        li t0, FINISHER; \
        slli t1, TESTNUM, 16; \
        li t2, 0x3333; \
        or t1, t1, t2; \
        sw t1, 0(t0); \
1:      j 1b;

#define EXTRA_DATA

#define RVTEST_DATA_BEGIN \
        EXTRA_DATA \
        .pushsection .tohost, "aw", @progbits; \
        .align 6; .global tohost; tohost: .dword 0; .size tohost, 8; \
        .align 6; .global fromhost; fromhost: .dword 0; .size fromhost, 8; \
        .popsection; \
        .align 4; .global begin_signature; begin_signature:

#define RVTEST_DATA_END .align 4; .global end_signature; end_signature:

/* Zicond for an assembler that does not know it (GNU binutils before 2.41): the
 * ratified encodings (funct7 0000111, funct3 101/111, OP), written with .insn. */
#ifdef PYHV_ZICOND_MACROS
.macro czero.eqz rd, rs1, rs2
.insn r 0x33, 5, 7, \rd, \rs1, \rs2
.endm
.macro czero.nez rd, rs1, rs2
.insn r 0x33, 7, 7, \rd, \rs1, \rs2
.endm
#endif

#endif
