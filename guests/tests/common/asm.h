/* Constants shared between assembly and C. */
#ifndef PYHV_GUEST_ASM_H
#define PYHV_GUEST_ASM_H
#define FRAME_SIZE  256          /* 32 x 8-byte register slots */
#define MAGIC_EXIT  0x5EC0DE     /* a7 value of the "return to M-mode" ecall */
#endif
