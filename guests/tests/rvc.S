/* rvc: compressed (C extension) instructions, written with explicit c.*
 * mnemonics so each one is the 16-bit encoding.  Covers c.li/lui/addi/addiw/
 * nop, c.mv/add, c.slli/srli/srai/andi (incl. shamt >= 32), c.sub/xor/or/and/
 * subw/addw, c.addi16sp/addi4spn, c.lwsp/ldsp/swsp/sdsp, c.lw/ld/sw/sd,
 * c.j/jr/jalr/beqz/bnez, c.fld/fsd/fldsp/fsdsp. */

    .option rvc

    .section .rodata
    .globl  test_name
test_name:
    .asciz  "rvc"

    .set    chk_code, 0

/* CHK reg, imm, "msg": fail_val(code, msg, reg, imm) if reg != imm (uses t6, a0-a3) */
.macro CHK reg, expected, msg
    .set    chk_code, chk_code + 1
    li      t6, \expected
    beq     \reg, t6, .Lok\@
    mv      a2, \reg
    mv      a3, t6
    li      a0, chk_code
    la      a1, .Lmsg\@
    call    fail_val
.Lok\@:
    .pushsection .rodata
.Lmsg\@:
    .asciz  "\msg"
    .popsection
.endm

/* CHKR reg, reg2, "msg": register against register */
.macro CHKR reg, reg2, msg
    .set    chk_code, chk_code + 1
    beq     \reg, \reg2, .Lok\@
    mv      a3, \reg2
    mv      a2, \reg
    li      a0, chk_code
    la      a1, .Lmsg\@
    call    fail_val
.Lok\@:
    .pushsection .rodata
.Lmsg\@:
    .asciz  "\msg"
    .popsection
.endm

    .data
    .align  4
buf:
    .dword  0xfedcba9876543210
    .dword  0x8000000180000002
    .dword  0
    .dword  0
fbuf:
    .dword  0x400921fb54442d18      /* pi */
    .dword  0

    .text
    .globl  main
main:
    /* ---------------- constants and immediates ---------------- */
    c.li    a0, -32
    CHK     a0, -32, "c.li a0, -32"
    c.li    a1, 31
    CHK     a1, 31, "c.li a1, 31"
    c.lui   a2, 0x1f
    CHK     a2, 0x1f000, "c.lui a2, 0x1f"
    c.lui   a3, 0xfffe0
    CHK     a3, 0xfffffffffffe0000, "c.lui a3, 0xfffe0 (sign-extended)"
    c.lui   s0, 1
    CHK     s0, 0x1000, "c.lui s0, 1"
    c.addi  a0, 5
    CHK     a0, -27, "c.addi a0, 5"
    c.addi  a1, -32
    CHK     a1, -1, "c.addi a1, -32"
    c.nop
    li      a2, 0x7fffffff
    c.addiw a2, 1
    CHK     a2, 0xffffffff80000000, "c.addiw overflow sign-extends"
    li      a2, 0x1234567800000005
    c.addiw a2, -6
    CHK     a2, -1, "c.addiw ignores upper bits"
    li      a2, 0x123456789abcdef0
    c.addiw a2, 0
    CHK     a2, 0xffffffff9abcdef0, "c.addiw a2, 0 (sext.w)"

    /* ---------------- c.mv / c.add ---------------- */
    li      a1, 0x1111111111111111
    li      a2, 0x2222222222222222
    c.mv    a4, a1
    CHK     a4, 0x1111111111111111, "c.mv"
    c.add   a4, a2
    CHK     a4, 0x3333333333333333, "c.add"
    c.mv    t0, a4
    c.add   t0, t0
    CHK     t0, 0x6666666666666666, "c.add t0, t0"

    /* ---------------- shifts / andi ---------------- */
    li      a0, 1
    c.slli  a0, 63
    CHK     a0, 0x8000000000000000, "c.slli 63"
    c.srai  a0, 32
    CHK     a0, 0xffffffff80000000, "c.srai 32"
    c.srli  a0, 63
    CHK     a0, 1, "c.srli 63"
    li      a1, -1
    c.srli  a1, 32
    CHK     a1, 0xffffffff, "c.srli 32"
    c.slli  a1, 40
    CHK     a1, 0xffffff0000000000, "c.slli 40"
    li      t2, 3
    c.slli  t2, 33
    CHK     t2, 0x600000000, "c.slli t2 (full register set), 33"
    li      a1, 0x12345678
    c.srai  a1, 4
    CHK     a1, 0x1234567, "c.srai positive"
    li      a1, 0x1234
    c.andi  a1, 0x1f
    CHK     a1, 0x14, "c.andi 0x1f"
    li      a1, 0x1234
    c.andi  a1, -16
    CHK     a1, 0x1230, "c.andi -16"
    li      a1, -1
    c.andi  a1, -32
    CHK     a1, 0xffffffffffffffe0, "c.andi -32 sign-extended imm"

    /* ---------------- register-register ALU ---------------- */
    li      s0, 0xff00ff00ff00ff00
    li      s1, 0x0ff00ff00ff00ff0
    c.mv    a0, s0
    c.and   a0, s1
    CHK     a0, 0x0f000f000f000f00, "c.and"
    c.mv    a0, s0
    c.or    a0, s1
    CHK     a0, 0xfff0fff0fff0fff0, "c.or"
    c.mv    a0, s0
    c.xor   a0, s1
    CHK     a0, 0xf0f0f0f0f0f0f0f0, "c.xor"
    c.mv    a0, s0
    c.sub   a0, s1
    CHK     a0, 0xef10ef10ef10ef10, "c.sub"
    li      a0, 0x80000000
    li      a1, 1
    c.subw  a0, a1
    CHK     a0, 0x7fffffff, "c.subw"
    li      a0, 0
    c.subw  a0, a1
    CHK     a0, -1, "c.subw 0 - 1"
    li      a0, 0x7fffffff
    c.addw  a0, a1
    CHK     a0, 0xffffffff80000000, "c.addw overflow"
    li      a0, 0x1234567800000002
    li      a1, 0x0000000f00000003
    c.addw  a0, a1
    CHK     a0, 5, "c.addw ignores upper bits"

    /* ---------------- stack-pointer based ---------------- */
    c.mv    s0, sp
    c.addi16sp sp, -64
    addi    t0, s0, -64
    CHKR    sp, t0, "c.addi16sp sp, -64"
    c.addi4spn a0, sp, 16
    addi    t0, sp, 16
    CHKR    a0, t0, "c.addi4spn a0, sp, 16"
    c.addi4spn a5, sp, 1020
    addi    t0, sp, 1020
    CHKR    a5, t0, "c.addi4spn a5, sp, 1020"
    li      a1, 0x0123456789abcdef
    c.sdsp  a1, 8(sp)
    c.ldsp  a2, 8(sp)
    CHK     a2, 0x0123456789abcdef, "c.sdsp/c.ldsp 8(sp)"
    ld      a3, 8(sp)
    CHK     a3, 0x0123456789abcdef, "c.sdsp stored to memory"
    sd      zero, 16(sp)
    li      a1, 0x80000000
    c.swsp  a1, 16(sp)
    c.lwsp  a3, 16(sp)
    CHK     a3, 0xffffffff80000000, "c.lwsp sign-extends"
    ld      a3, 16(sp)
    CHK     a3, 0x80000000, "c.swsp writes 32 bits"
    li      a4, 0x55aa55aa55aa55aa
    c.sdsp  a4, 56(sp)
    c.ldsp  t1, 56(sp)
    CHK     t1, 0x55aa55aa55aa55aa, "c.ldsp t1, 56(sp)"
    li      a4, 0x7eadbeef
    c.swsp  a4, 60(sp)
    c.lwsp  t2, 60(sp)
    CHK     t2, 0x7eadbeef, "c.lwsp t2, 60(sp)"
    c.addi16sp sp, 64
    CHKR    sp, s0, "c.addi16sp sp, 64"

    /* ---------------- register based loads/stores ---------------- */
    la      s1, buf
    c.ld    a0, 0(s1)
    CHK     a0, 0xfedcba9876543210, "c.ld 0(s1)"
    c.lw    a1, 8(s1)
    CHK     a1, 0xffffffff80000002, "c.lw 8(s1) sign-extends"
    c.lw    a2, 12(s1)
    CHK     a2, 0xffffffff80000001, "c.lw 12(s1)"
    c.sw    a0, 8(s1)
    c.ld    a3, 8(s1)
    CHK     a3, 0x8000000176543210, "c.sw writes low word"
    c.sd    a0, 24(s1)
    ld      a4, 24(s1)
    CHK     a4, 0xfedcba9876543210, "c.sd 24(s1)"
    c.li    a5, 0
    c.sd    a5, 24(s1)
    c.ld    a4, 24(s1)
    CHK     a4, 0, "c.sd/c.ld zero"

    /* ---------------- control flow ---------------- */
    li      a0, 0
    c.j     1f
    li      a0, 1
1:  CHK     a0, 0, "c.j forward"

    li      a0, 5
    li      a1, 0
2:  c.addi  a1, 1
    c.addi  a0, -1
    c.bnez  a0, 2b
    CHK     a1, 5, "c.bnez backward loop"

    li      a0, 3
    li      a2, 0
    c.j     4f
3:  c.addi  a2, 1
    c.j     5f
4:  c.addi  a2, 2
    c.j     3b
5:  CHK     a2, 3, "c.j backward"

    li      a0, 0
    li      a2, 0
    c.beqz  a0, 6f
    li      a2, 1
6:  CHK     a2, 0, "c.beqz taken"
    li      a0, 1
    li      a2, 0
    c.beqz  a0, 7f
    li      a2, 1
7:  CHK     a2, 1, "c.beqz not taken"
    li      a0, 0
    li      a2, 0
    c.bnez  a0, 8f
    li      a2, 1
8:  CHK     a2, 1, "c.bnez not taken"
    li      a0, -1
    li      a2, 0
    c.bnez  a0, 9f
    li      a2, 1
9:  CHK     a2, 0, "c.bnez taken (negative)"

    la      a5, 10f
    li      a2, 0
    c.jr    a5
    li      a2, 1
10: CHK     a2, 0, "c.jr"

    /* c.jalr: ra = address of c.jalr + 2 */
    la      t0, 11f
    li      a2, 0
    auipc   t1, 0
    c.jalr  t0
    li      a2, 1
    li      a2, 2
11: addi    t1, t1, 6
    CHKR    ra, t1, "c.jalr link = pc + 2"
    CHK     a2, 0, "c.jalr target"

    /* c.jalr clears bit 0 of the target */
    la      t0, 12f
    addi    t0, t0, 1
    li      a2, 0
    c.jalr  t0
    li      a2, 1
12: CHK     a2, 0, "c.jalr odd target"

    /* call/return through c.jalr / c.jr ra */
    la      t0, cfunc
    li      a0, 0
    c.jalr  t0
    CHK     a0, 9, "c.jalr call + c.jr ra return"

    /* ---------------- floating point loads/stores ---------------- */
    la      s1, fbuf
    c.fld   fa0, 0(s1)
    fmv.x.d a0, fa0
    CHK     a0, 0x400921fb54442d18, "c.fld"
    c.fsd   fa0, 8(s1)
    c.ld    a1, 8(s1)
    CHK     a1, 0x400921fb54442d18, "c.fsd"
    c.addi16sp sp, -32
    c.fsdsp fa0, 16(sp)
    c.ldsp  a2, 16(sp)
    CHK     a2, 0x400921fb54442d18, "c.fsdsp"
    li      a3, 0x3ff0000000000000
    c.sdsp  a3, 24(sp)
    c.fldsp fs1, 24(sp)
    fmv.x.d a4, fs1
    CHK     a4, 0x3ff0000000000000, "c.fldsp"
    c.addi16sp sp, 32

    .if chk_code >= 240
    .error "too many checks for distinct exit codes"
    .endif
    call    pass

cfunc:
    c.li    a0, 9
    c.jr    ra
