/* crt0 for the pyhv bare-metal guest tests.
 *
 * Entered on every hart at 0x80000000 in M-mode with a0 = hartid,
 * a1 = DTB address (QEMU virt, -bios none).
 *  - gp, per-hart stack (16 KiB each, up to 8 harts), mtvec = m_trap_entry
 *  - PMP entry 0 = whole address space RWX (so S/U-mode can access memory);
 *    if the PMP CSRs do not exist the write traps to a local label and we
 *    carry on.
 *  - mstatus.FS = Initial, fcsr = 0
 *  - hart 0 (by mhartid) clears .bss, sets boot_flag and calls
 *    main(a0, a1) with the a0/a1 values the loader passed;
 *    main returning 0 -> pass(), nonzero -> fail(ret, "main returned nonzero")
 *  - other harts wait for boot_flag and call secondary_main(hartid, dtb)
 *    (weak default: park in a wfi loop).
 */
#include "asm.h"

    .section .text.init, "ax", @progbits
    .globl _start
_start:
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
    csrr    t2, mhartid             /* a0 (hartid from the loader) is kept for main */
    li      t0, 8                   /* MAX_HARTS in link.ld */
    bgeu    t2, t0, .Lpark_forever

    /* per-hart stack */
    la      sp, __stack_top
    slli    t0, t2, 14              /* 16 KiB per hart */
    sub     sp, sp, t0

    /* PMP: allow everything for S/U (skipped if not implemented) */
    la      t0, .Lpmp_done
    csrw    mtvec, t0
    li      t0, -1
    csrw    pmpaddr0, t0
    li      t0, 0x1f                /* NAPOT | X | W | R */
    csrw    pmpcfg0, t0
    .align  2
.Lpmp_done:
    la      t0, m_trap_entry
    csrw    mtvec, t0
    csrw    mie, zero
    csrw    satp, zero

    /* FPU on (Initial) and clean fcsr */
    li      t0, (1 << 13)
    csrs    mstatus, t0
    csrwi   fcsr, 0

    bnez    t2, .Lsecondary

    /* hart 0: clear .bss */
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  fence   rw, rw
    la      t0, boot_flag
    li      t1, 1
    sw      t1, 0(t0)
    fence   rw, rw
    call    main
    tail    main_returned

.Lsecondary:
    la      t0, boot_flag
3:  lw      t1, 0(t0)
    beqz    t1, 3b
    fence   rw, rw
    call    secondary_main
.Lpark_forever:
    wfi
    j       .Lpark_forever

/* ------------------------------------------------------------------ */
/* Trap entries: save all integer registers on the current stack,     */
/* call the C handler with a pointer to the frame, restore, xRET.     */
/* ------------------------------------------------------------------ */
.macro SAVE_REGS
    addi    sp, sp, -FRAME_SIZE
    sd      x1, 1*8(sp)
    sd      x3, 3*8(sp)
    sd      x4, 4*8(sp)
    sd      x5, 5*8(sp)
    sd      x6, 6*8(sp)
    sd      x7, 7*8(sp)
    sd      x8, 8*8(sp)
    sd      x9, 9*8(sp)
    sd      x10, 10*8(sp)
    sd      x11, 11*8(sp)
    sd      x12, 12*8(sp)
    sd      x13, 13*8(sp)
    sd      x14, 14*8(sp)
    sd      x15, 15*8(sp)
    sd      x16, 16*8(sp)
    sd      x17, 17*8(sp)
    sd      x18, 18*8(sp)
    sd      x19, 19*8(sp)
    sd      x20, 20*8(sp)
    sd      x21, 21*8(sp)
    sd      x22, 22*8(sp)
    sd      x23, 23*8(sp)
    sd      x24, 24*8(sp)
    sd      x25, 25*8(sp)
    sd      x26, 26*8(sp)
    sd      x27, 27*8(sp)
    sd      x28, 28*8(sp)
    sd      x29, 29*8(sp)
    sd      x30, 30*8(sp)
    sd      x31, 31*8(sp)
    addi    t0, sp, FRAME_SIZE
    sd      t0, 2*8(sp)
    sd      zero, 0(sp)
    .option push
    .option norelax
    la      gp, __global_pointer$
    .option pop
.endm

.macro RESTORE_REGS
    ld      x1, 1*8(sp)
    ld      x3, 3*8(sp)
    ld      x4, 4*8(sp)
    ld      x5, 5*8(sp)
    ld      x6, 6*8(sp)
    ld      x7, 7*8(sp)
    ld      x8, 8*8(sp)
    ld      x9, 9*8(sp)
    ld      x10, 10*8(sp)
    ld      x11, 11*8(sp)
    ld      x12, 12*8(sp)
    ld      x13, 13*8(sp)
    ld      x14, 14*8(sp)
    ld      x15, 15*8(sp)
    ld      x16, 16*8(sp)
    ld      x17, 17*8(sp)
    ld      x18, 18*8(sp)
    ld      x19, 19*8(sp)
    ld      x20, 20*8(sp)
    ld      x21, 21*8(sp)
    ld      x22, 22*8(sp)
    ld      x23, 23*8(sp)
    ld      x24, 24*8(sp)
    ld      x25, 25*8(sp)
    ld      x26, 26*8(sp)
    ld      x27, 27*8(sp)
    ld      x28, 28*8(sp)
    ld      x29, 29*8(sp)
    ld      x30, 30*8(sp)
    ld      x31, 31*8(sp)
    addi    sp, sp, FRAME_SIZE
.endm

    .text
    .align  4
    .globl  m_trap_entry
m_trap_entry:
    SAVE_REGS
    mv      a0, sp
    call    m_trap_c
    RESTORE_REGS
    mret

    .align  4
    .globl  s_trap_entry
s_trap_entry:
    SAVE_REGS
    mv      a0, sp
    call    s_trap_c
    RESTORE_REGS
    sret

/* uint64_t run_in_mode(int mode, uint64_t (*fn)(uint64_t), uint64_t arg)
 * Enter fn(arg) in privilege `mode` (0=U, 1=S, 3=M) via mret.  When fn returns
 * (to lower_exit) or calls lower_exit(v), the magic ecall brings us back here
 * in M-mode returning fn's a0.  mstatus.MIE is restored to its value at the
 * call; in the lower mode mstatus.MIE = 0 (M interrupts are enabled there
 * anyway).  Not reentrant, one hart at a time. */
    .globl  run_in_mode
run_in_mode:
    la      t0, rim_ctx
    sd      ra, 0*8(t0)
    sd      sp, 1*8(t0)
    sd      s0, 2*8(t0)
    sd      s1, 3*8(t0)
    sd      s2, 4*8(t0)
    sd      s3, 5*8(t0)
    sd      s4, 6*8(t0)
    sd      s5, 7*8(t0)
    sd      s6, 8*8(t0)
    sd      s7, 9*8(t0)
    sd      s8, 10*8(t0)
    sd      s9, 11*8(t0)
    sd      s10, 12*8(t0)
    sd      s11, 13*8(t0)
    sd      tp, 14*8(t0)
    csrr    t1, mstatus
    sd      t1, 15*8(t0)
    /* MPP = mode; MPIE = 0 so that mstatus.MIE is 0 after the magic ecall's
     * mret back to M (restored from the saved mstatus in rim_return) */
    li      t1, (3 << 11) | (1 << 7)
    csrc    mstatus, t1
    andi    a0, a0, 3
    slli    a0, a0, 11
    csrs    mstatus, a0
    csrw    mepc, a1
    mv      a0, a2
    la      ra, lower_exit
    mret

    .globl  lower_exit
lower_exit:
    li      a7, MAGIC_EXIT
    ecall
1:  j       1b

    .globl  rim_return
rim_return:
    la      t0, rim_ctx
    ld      ra, 0*8(t0)
    ld      sp, 1*8(t0)
    ld      s0, 2*8(t0)
    ld      s1, 3*8(t0)
    ld      s2, 4*8(t0)
    ld      s3, 5*8(t0)
    ld      s4, 6*8(t0)
    ld      s5, 7*8(t0)
    ld      s6, 8*8(t0)
    ld      s7, 9*8(t0)
    ld      s8, 10*8(t0)
    ld      s9, 11*8(t0)
    ld      s10, 12*8(t0)
    ld      s11, 13*8(t0)
    ld      tp, 14*8(t0)
    ld      t1, 15*8(t0)
    andi    t1, t1, (1 << 3)        /* restore the caller's mstatus.MIE */
    csrs    mstatus, t1
    ret

    .data
    .align  3
    .globl  boot_flag
boot_flag:
    .word   0
    .word   0
    .bss
    .align  3
rim_ctx:
    .zero   16*8
