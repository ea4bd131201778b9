/* Kernel entry and trap vectors.
 *
 * _start (M-mode, from reset): boot stack, clear .bss, m_main() (kernel.c) sets up
 * delegation and mrets into S-mode.
 *
 * mtrap_entry: M-mode traps (the CLINT timer, the S-kernel's "SBI" ecalls, anything
 * unexpected).  mscratch holds the top of the M-mode stack; all integer registers are
 * saved there and m_trap(regs) may change them (an SBI call's a0 result).
 *
 * strap_entry: S-mode traps.  From U-mode, sscratch holds the current process's trap
 * frame (struct tf: x0..x31, pc); the registers go there and s_trap(tf) returns the
 * trap frame to resume (maybe another process's), which user_return loads before sret.
 * In the kernel sscratch is 0: a trap from S-mode is unexpected (s_kernel_fault). */

#define REGBYTES 8
#define TF_PC (32 * REGBYTES)

	.section .text.entry, "ax"
	.global _start
_start:
	csrw	mie, zero
	la	sp, kstack_top
	la	t0, __bss_start
	la	t1, __bss_end
1:	bgeu	t0, t1, 2f
	sd	zero, 0(t0)
	addi	t0, t0, 8
	j	1b
2:	call	m_main
3:	wfi
	j	3b

	.text
	.balign 4
	.global mtrap_entry
mtrap_entry:
	csrrw	sp, mscratch, sp
	addi	sp, sp, -32 * REGBYTES
	sd	x1, 1 * REGBYTES(sp)
	sd	x3, 3 * REGBYTES(sp)
	sd	x4, 4 * REGBYTES(sp)
	sd	x5, 5 * REGBYTES(sp)
	sd	x6, 6 * REGBYTES(sp)
	sd	x7, 7 * REGBYTES(sp)
	sd	x8, 8 * REGBYTES(sp)
	sd	x9, 9 * REGBYTES(sp)
	sd	x10, 10 * REGBYTES(sp)
	sd	x11, 11 * REGBYTES(sp)
	sd	x12, 12 * REGBYTES(sp)
	sd	x13, 13 * REGBYTES(sp)
	sd	x14, 14 * REGBYTES(sp)
	sd	x15, 15 * REGBYTES(sp)
	sd	x16, 16 * REGBYTES(sp)
	sd	x17, 17 * REGBYTES(sp)
	sd	x18, 18 * REGBYTES(sp)
	sd	x19, 19 * REGBYTES(sp)
	sd	x20, 20 * REGBYTES(sp)
	sd	x21, 21 * REGBYTES(sp)
	sd	x22, 22 * REGBYTES(sp)
	sd	x23, 23 * REGBYTES(sp)
	sd	x24, 24 * REGBYTES(sp)
	sd	x25, 25 * REGBYTES(sp)
	sd	x26, 26 * REGBYTES(sp)
	sd	x27, 27 * REGBYTES(sp)
	sd	x28, 28 * REGBYTES(sp)
	sd	x29, 29 * REGBYTES(sp)
	sd	x30, 30 * REGBYTES(sp)
	sd	x31, 31 * REGBYTES(sp)
	csrr	t0, mscratch
	sd	t0, 2 * REGBYTES(sp)
	mv	a0, sp
	call	m_trap
	ld	x1, 1 * REGBYTES(sp)
	ld	x3, 3 * REGBYTES(sp)
	ld	x4, 4 * REGBYTES(sp)
	ld	x5, 5 * REGBYTES(sp)
	ld	x6, 6 * REGBYTES(sp)
	ld	x7, 7 * REGBYTES(sp)
	ld	x8, 8 * REGBYTES(sp)
	ld	x9, 9 * REGBYTES(sp)
	ld	x10, 10 * REGBYTES(sp)
	ld	x11, 11 * REGBYTES(sp)
	ld	x12, 12 * REGBYTES(sp)
	ld	x13, 13 * REGBYTES(sp)
	ld	x14, 14 * REGBYTES(sp)
	ld	x15, 15 * REGBYTES(sp)
	ld	x16, 16 * REGBYTES(sp)
	ld	x17, 17 * REGBYTES(sp)
	ld	x18, 18 * REGBYTES(sp)
	ld	x19, 19 * REGBYTES(sp)
	ld	x20, 20 * REGBYTES(sp)
	ld	x21, 21 * REGBYTES(sp)
	ld	x22, 22 * REGBYTES(sp)
	ld	x23, 23 * REGBYTES(sp)
	ld	x24, 24 * REGBYTES(sp)
	ld	x25, 25 * REGBYTES(sp)
	ld	x26, 26 * REGBYTES(sp)
	ld	x27, 27 * REGBYTES(sp)
	ld	x28, 28 * REGBYTES(sp)
	ld	x29, 29 * REGBYTES(sp)
	ld	x30, 30 * REGBYTES(sp)
	ld	x31, 31 * REGBYTES(sp)
	addi	sp, sp, 32 * REGBYTES
	csrrw	sp, mscratch, sp
	mret

	.balign 4
	.global strap_entry
strap_entry:
	csrrw	sp, sscratch, sp
	beqz	sp, strap_from_kernel
	sd	x1, 1 * REGBYTES(sp)
	sd	x3, 3 * REGBYTES(sp)
	sd	x4, 4 * REGBYTES(sp)
	sd	x5, 5 * REGBYTES(sp)
	sd	x6, 6 * REGBYTES(sp)
	sd	x7, 7 * REGBYTES(sp)
	sd	x8, 8 * REGBYTES(sp)
	sd	x9, 9 * REGBYTES(sp)
	sd	x10, 10 * REGBYTES(sp)
	sd	x11, 11 * REGBYTES(sp)
	sd	x12, 12 * REGBYTES(sp)
	sd	x13, 13 * REGBYTES(sp)
	sd	x14, 14 * REGBYTES(sp)
	sd	x15, 15 * REGBYTES(sp)
	sd	x16, 16 * REGBYTES(sp)
	sd	x17, 17 * REGBYTES(sp)
	sd	x18, 18 * REGBYTES(sp)
	sd	x19, 19 * REGBYTES(sp)
	sd	x20, 20 * REGBYTES(sp)
	sd	x21, 21 * REGBYTES(sp)
	sd	x22, 22 * REGBYTES(sp)
	sd	x23, 23 * REGBYTES(sp)
	sd	x24, 24 * REGBYTES(sp)
	sd	x25, 25 * REGBYTES(sp)
	sd	x26, 26 * REGBYTES(sp)
	sd	x27, 27 * REGBYTES(sp)
	sd	x28, 28 * REGBYTES(sp)
	sd	x29, 29 * REGBYTES(sp)
	sd	x30, 30 * REGBYTES(sp)
	sd	x31, 31 * REGBYTES(sp)
	csrr	t0, sscratch
	sd	t0, 2 * REGBYTES(sp)
	csrw	sscratch, zero
	csrr	t0, sepc
	sd	t0, TF_PC(sp)
	mv	a0, sp
	la	sp, kstack_top
	call	s_trap
	/* fall through: a0 = the trap frame to resume */

	.global user_return
user_return:
	ld	t0, TF_PC(a0)
	csrw	sepc, t0
	csrw	sscratch, a0
	ld	x1, 1 * REGBYTES(a0)
	ld	x2, 2 * REGBYTES(a0)
	ld	x3, 3 * REGBYTES(a0)
	ld	x4, 4 * REGBYTES(a0)
	ld	x5, 5 * REGBYTES(a0)
	ld	x6, 6 * REGBYTES(a0)
	ld	x7, 7 * REGBYTES(a0)
	ld	x8, 8 * REGBYTES(a0)
	ld	x9, 9 * REGBYTES(a0)
	ld	x11, 11 * REGBYTES(a0)
	ld	x12, 12 * REGBYTES(a0)
	ld	x13, 13 * REGBYTES(a0)
	ld	x14, 14 * REGBYTES(a0)
	ld	x15, 15 * REGBYTES(a0)
	ld	x16, 16 * REGBYTES(a0)
	ld	x17, 17 * REGBYTES(a0)
	ld	x18, 18 * REGBYTES(a0)
	ld	x19, 19 * REGBYTES(a0)
	ld	x20, 20 * REGBYTES(a0)
	ld	x21, 21 * REGBYTES(a0)
	ld	x22, 22 * REGBYTES(a0)
	ld	x23, 23 * REGBYTES(a0)
	ld	x24, 24 * REGBYTES(a0)
	ld	x25, 25 * REGBYTES(a0)
	ld	x26, 26 * REGBYTES(a0)
	ld	x27, 27 * REGBYTES(a0)
	ld	x28, 28 * REGBYTES(a0)
	ld	x29, 29 * REGBYTES(a0)
	ld	x30, 30 * REGBYTES(a0)
	ld	x31, 31 * REGBYTES(a0)
	ld	x10, 10 * REGBYTES(a0)
	sret

strap_from_kernel:
	csrrw	sp, sscratch, sp	/* sp back, sscratch 0 again */
	la	sp, panic_stack_top
	call	s_kernel_fault
4:	j	4b

	.bss
	.balign 16
	.global kstack_top, mstack_top
	.space	16384
kstack_top:
	.space	4096
mstack_top:
	.space	4096
panic_stack_top:

	/* the user programs, flat images (user.ld; the Makefile builds them in build/) */
	.section .rodata.blobs, "a"
	.balign 8
	.global blob_init, blob_strings, blob_sort, blob_sieve, blob_forker, blob_end
blob_init:
	.incbin	"build/init.bin"
	.balign 8
blob_strings:
	.incbin	"build/strings.bin"
	.balign 8
blob_sort:
	.incbin	"build/sort.bin"
	.balign 8
blob_sieve:
	.incbin	"build/sieve.bin"
	.balign 8
blob_forker:
	.incbin	"build/forker.bin"
	.balign 8
blob_end:
