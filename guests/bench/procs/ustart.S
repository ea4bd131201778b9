/* User programs' entry: the kernel starts them with sp at the top of their stack and
 * the exec argument in a0; main's return value is the exit code. */
#include "syscalls.h"

	.section .text.start, "ax"
	.global _start
_start:
	call	main
	li	a7, SYS_EXIT
	ecall
1:	j	1b
