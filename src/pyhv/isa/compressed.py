"""RVC (compressed instruction) expansion for RV64GC.

:func:`expand` maps a 16-bit compressed instruction onto the equivalent 32-bit
base instruction word, following the tables of the RISC-V unprivileged spec
("C" Standard Extension for Compressed Instructions).  The RV64 flavour is
implemented: C.LD/C.SD/C.LDSP/C.SDSP, C.ADDIW, C.SUBW/C.ADDW, the D-extension
loads/stores C.FLD/C.FSD/C.FLDSP/C.FSDSP, and 6-bit shift amounts.  RV32-only
encodings (C.FLW/C.FSW/C.JAL) do not exist in RV64 and are not produced.

Reserved encodings return ``0`` (which the decoder treats as an illegal
instruction).  HINT encodings expand to an instruction with no architectural
effect (e.g. ``c.slli rd, 0`` becomes ``slli rd, rd, 0`` and ``c.li x0, imm``
becomes ``addi x0, x0, imm``).
"""

from __future__ import annotations

__all__ = ["expand", "is_compressed"]

# Major opcodes of the 32-bit base encoding.
_LOAD = 0x03
_LOAD_FP = 0x07
_OP_IMM = 0x13
_OP_IMM_32 = 0x1B
_STORE = 0x23
_STORE_FP = 0x27
_OP = 0x33
_LUI = 0x37
_OP_32 = 0x3B
_BRANCH = 0x63
_JALR = 0x67
_JAL = 0x6F

_EBREAK = 0x00100073


def is_compressed(half: int) -> bool:
    """True when the low two bits say this is a 16-bit instruction."""
    return (half & 3) != 3


def _i(opcode: int, rd: int, funct3: int, rs1: int, imm: int) -> int:
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _s(opcode: int, funct3: int, rs1: int, rs2: int, imm: int) -> int:
    return (
        ((imm >> 5 & 0x7F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | ((imm & 0x1F) << 7)
        | opcode
    )


def _r(opcode: int, rd: int, funct3: int, rs1: int, rs2: int, funct7: int) -> int:
    return (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _b(funct3: int, rs1: int, rs2: int, imm: int) -> int:
    return (
        ((imm >> 12 & 1) << 31)
        | ((imm >> 5 & 0x3F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | ((imm >> 1 & 0xF) << 8)
        | ((imm >> 11 & 1) << 7)
        | _BRANCH
    )


def _j(rd: int, imm: int) -> int:
    return (
        ((imm >> 20 & 1) << 31)
        | ((imm >> 1 & 0x3FF) << 21)
        | ((imm >> 11 & 1) << 20)
        | ((imm >> 12 & 0xFF) << 12)
        | (rd << 7)
        | _JAL
    )


def _imm6(half: int) -> int:
    """Sign-extended imm[5] = bit 12, imm[4:0] = bits 6:2 (CI format)."""
    imm = ((half >> 7) & 0x20) | ((half >> 2) & 0x1F)
    return imm - 0x40 if imm & 0x20 else imm


def _shamt(half: int) -> int:
    """Unsigned 6-bit shift amount: shamt[5] = bit 12, shamt[4:0] = bits 6:2."""
    return ((half >> 7) & 0x20) | ((half >> 2) & 0x1F)


def expand(half: int) -> int:
    """Expand a 16-bit RVC instruction to its 32-bit equivalent; 0 if illegal/reserved."""
    half &= 0xFFFF
    quadrant = half & 3
    funct3 = half >> 13

    if quadrant == 0:
        rd_p = ((half >> 2) & 7) + 8  # rd' / rs2' (bits 4:2)
        rs1_p = ((half >> 7) & 7) + 8  # rs1' (bits 9:7)
        if funct3 == 0:  # c.addi4spn -> addi rd', x2, nzuimm
            imm = (
                ((half >> 7) & 0x30)  # nzuimm[5:4] <- bits 12:11
                | ((half >> 1) & 0x3C0)  # nzuimm[9:6] <- bits 10:7
                | ((half >> 4) & 0x4)  # nzuimm[2]   <- bit 6
                | ((half >> 2) & 0x8)  # nzuimm[3]   <- bit 5
            )
            if imm == 0:
                return 0  # includes the all-zero (defined illegal) halfword
            return _i(_OP_IMM, rd_p, 0, 2, imm)
        if funct3 == 2:  # c.lw: uimm[5:3] <- 12:10, uimm[2] <- 6, uimm[6] <- 5
            imm = ((half >> 7) & 0x38) | ((half >> 4) & 0x4) | ((half << 1) & 0x40)
            return _i(_LOAD, rd_p, 2, rs1_p, imm)
        if funct3 == 6:  # c.sw
            imm = ((half >> 7) & 0x38) | ((half >> 4) & 0x4) | ((half << 1) & 0x40)
            return _s(_STORE, 2, rs1_p, rd_p, imm)
        # c.fld / c.ld / c.fsd / c.sd: uimm[5:3] <- 12:10, uimm[7:6] <- 6:5
        imm = ((half >> 7) & 0x38) | ((half << 1) & 0xC0)
        if funct3 == 1:  # c.fld
            return _i(_LOAD_FP, rd_p, 3, rs1_p, imm)
        if funct3 == 3:  # c.ld
            return _i(_LOAD, rd_p, 3, rs1_p, imm)
        if funct3 == 5:  # c.fsd
            return _s(_STORE_FP, 3, rs1_p, rd_p, imm)
        if funct3 == 7:  # c.sd
            return _s(_STORE, 3, rs1_p, rd_p, imm)
        return 0  # funct3 == 4: reserved

    if quadrant == 1:
        rd = (half >> 7) & 0x1F
        if funct3 == 0:  # c.addi / c.nop (rd=0 or imm=0 are HINTs)
            return _i(_OP_IMM, rd, 0, rd, _imm6(half))
        if funct3 == 1:  # c.addiw (RV64)
            if rd == 0:
                return 0
            return _i(_OP_IMM_32, rd, 0, rd, _imm6(half))
        if funct3 == 2:  # c.li -> addi rd, x0, imm (rd=0 is a HINT)
            return _i(_OP_IMM, rd, 0, 0, _imm6(half))
        if funct3 == 3:
            if rd == 2:  # c.addi16sp
                imm = (
                    ((half >> 3) & 0x200)  # nzimm[9]   <- bit 12
                    | ((half >> 2) & 0x10)  # nzimm[4]   <- bit 6
                    | ((half << 1) & 0x40)  # nzimm[6]   <- bit 5
                    | ((half << 4) & 0x180)  # nzimm[8:7] <- bits 4:3
                    | ((half << 3) & 0x20)  # nzimm[5]   <- bit 2
                )
                if imm == 0:
                    return 0
                if imm & 0x200:
                    imm -= 0x400
                return _i(_OP_IMM, 2, 0, 2, imm)
            # c.lui: nzimm[17] <- bit 12, nzimm[16:12] <- bits 6:2 (rd=0 is a HINT)
            imm = _imm6(half)
            if imm == 0:
                return 0
            return ((imm & 0xFFFFF) << 12) | (rd << 7) | _LUI
        if funct3 == 4:
            rd_p = ((half >> 7) & 7) + 8
            funct2 = (half >> 10) & 3
            if funct2 == 0:  # c.srli (shamt=0 is a HINT)
                return _i(_OP_IMM, rd_p, 5, rd_p, _shamt(half))
            if funct2 == 1:  # c.srai
                return _i(_OP_IMM, rd_p, 5, rd_p, 0x400 | _shamt(half))
            if funct2 == 2:  # c.andi
                return _i(_OP_IMM, rd_p, 7, rd_p, _imm6(half))
            rs2_p = ((half >> 2) & 7) + 8
            op2 = (half >> 5) & 3
            if half & 0x1000 == 0:
                if op2 == 0:  # c.sub
                    return _r(_OP, rd_p, 0, rd_p, rs2_p, 0x20)
                if op2 == 1:  # c.xor
                    return _r(_OP, rd_p, 4, rd_p, rs2_p, 0)
                if op2 == 2:  # c.or
                    return _r(_OP, rd_p, 6, rd_p, rs2_p, 0)
                return _r(_OP, rd_p, 7, rd_p, rs2_p, 0)  # c.and
            if op2 == 0:  # c.subw
                return _r(_OP_32, rd_p, 0, rd_p, rs2_p, 0x20)
            if op2 == 1:  # c.addw
                return _r(_OP_32, rd_p, 0, rd_p, rs2_p, 0)
            return 0  # reserved
        if funct3 == 5:  # c.j -> jal x0, offset[11|4|9:8|10|6|7|3:1|5]
            imm = (
                ((half >> 1) & 0x800)  # [11]  <- bit 12
                | ((half >> 7) & 0x10)  # [4]   <- bit 11
                | ((half >> 1) & 0x300)  # [9:8] <- bits 10:9
                | ((half << 2) & 0x400)  # [10]  <- bit 8
                | ((half >> 1) & 0x40)  # [6]   <- bit 7
                | ((half << 1) & 0x80)  # [7]   <- bit 6
                | ((half >> 2) & 0xE)  # [3:1] <- bits 5:3
                | ((half << 3) & 0x20)  # [5]   <- bit 2
            )
            if imm & 0x800:
                imm -= 0x1000
            return _j(0, imm)
        # c.beqz / c.bnez -> beq/bne rs1', x0, offset[8|4:3] [7:6|2:1|5]
        rs1_p = ((half >> 7) & 7) + 8
        imm = (
            ((half >> 4) & 0x100)  # [8]   <- bit 12
            | ((half >> 7) & 0x18)  # [4:3] <- bits 11:10
            | ((half << 1) & 0xC0)  # [7:6] <- bits 6:5
            | ((half >> 2) & 0x6)  # [2:1] <- bits 4:3
            | ((half << 3) & 0x20)  # [5]   <- bit 2
        )
        if imm & 0x100:
            imm -= 0x200
        return _b(0 if funct3 == 6 else 1, rs1_p, 0, imm)

    if quadrant == 2:
        rd = (half >> 7) & 0x1F
        rs2 = (half >> 2) & 0x1F
        if funct3 == 0:  # c.slli (rd=0 or shamt=0 are HINTs)
            return _i(_OP_IMM, rd, 1, rd, _shamt(half))
        if funct3 == 2:  # c.lwsp: uimm[5] <- 12, uimm[4:2] <- 6:4, uimm[7:6] <- 3:2
            if rd == 0:
                return 0
            imm = ((half >> 7) & 0x20) | ((half >> 2) & 0x1C) | ((half << 4) & 0xC0)
            return _i(_LOAD, rd, 2, 2, imm)
        if funct3 == 1 or funct3 == 3:
            # c.fldsp / c.ldsp: uimm[5] <- 12, uimm[4:3] <- 6:5, uimm[8:6] <- 4:2
            imm = ((half >> 7) & 0x20) | ((half >> 2) & 0x18) | ((half << 4) & 0x1C0)
            if funct3 == 1:
                return _i(_LOAD_FP, rd, 3, 2, imm)
            if rd == 0:
                return 0
            return _i(_LOAD, rd, 3, 2, imm)
        if funct3 == 4:
            if half & 0x1000 == 0:
                if rs2 == 0:  # c.jr
                    if rd == 0:
                        return 0
                    return _i(_JALR, 0, 0, rd, 0)
                return _r(_OP, rd, 0, 0, rs2, 0)  # c.mv -> add rd, x0, rs2
            if rs2 == 0:
                if rd == 0:
                    return _EBREAK  # c.ebreak
                return _i(_JALR, 1, 0, rd, 0)  # c.jalr
            return _r(_OP, rd, 0, rd, rs2, 0)  # c.add
        if funct3 == 6:  # c.swsp: uimm[5:2] <- 12:9, uimm[7:6] <- 8:7
            imm = ((half >> 7) & 0x3C) | ((half >> 1) & 0xC0)
            return _s(_STORE, 2, 2, rs2, imm)
        # c.fsdsp / c.sdsp: uimm[5:3] <- 12:10, uimm[8:6] <- 9:7
        imm = ((half >> 7) & 0x38) | ((half >> 1) & 0x1C0)
        if funct3 == 5:
            return _s(_STORE_FP, 3, 2, rs2, imm)
        return _s(_STORE, 3, 2, rs2, imm)  # c.sdsp

    return 0  # quadrant 3: not a compressed instruction
