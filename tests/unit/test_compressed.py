"""RVC expansion (pyhv.isa.compressed) against independent references.

* ``data/rvc_golden.txt.gz`` holds the expected 32-bit word for every one of the
  49152 compressed halfwords; it was checked against GNU objdump's RV64GC
  decoder by ``data/make_rvc_golden.py`` (see its docstring to regenerate).
* The hand-written cases below were produced by assembling each line with GNU
  ``as -march=rv64gc`` twice: once as the compressed instruction and once as the
  base instruction it is defined to expand to (``.option norvc``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pyhv.isa.compressed import expand, is_compressed

GOLDEN = Path(__file__).parent / "data" / "rvc_golden.txt.gz"


def _load_golden() -> dict[int, int]:
    with gzip.open(GOLDEN, "rt") as f:
        return {int(h, 16): int(w, 16) for h, w in (line.split() for line in f)}


def test_golden_whole_space() -> None:
    golden = _load_golden()
    assert sorted(golden) == [h for h in range(0x10000) if h & 3 != 3]
    bad = [(h, w, expand(h)) for h, w in golden.items() if expand(h) != w]
    assert not bad, [f"{h:04x}: want {w:08x} got {g:08x}" for h, w, g in bad[:20]]


# (halfword, 32-bit word, assembler source of the compressed instruction)
HAND = [
    (0x7101, 0xE0010113, "c.addi16sp sp,-512"),
    (0x617D, 0x1F010113, "c.addi16sp sp,496"),
    (0x6141, 0x01010113, "c.addi16sp sp,16"),
    (0x717D, 0xFF010113, "c.addi16sp sp,-16"),
    (0x7501, 0xFFFE0537, "c.lui a0,0xfffe0"),
    (0x77FD, 0xFFFFF7B7, "c.lui a5,0xfffff"),
    (0x64FD, 0x0001F4B7, "c.lui s1,0x1f"),
    (0x6F85, 0x00001FB7, "c.lui t6,1"),
    (0x0048, 0x00410513, "c.addi4spn a0,sp,4"),
    (0x1FE4, 0x3FC10493, "c.addi4spn s1,sp,1020"),
    (0x70FE, 0x1F813083, "c.ldsp ra,504(sp)"),
    (0x6422, 0x00813403, "c.ldsp s0,8(sp)"),
    (0xFF86, 0x1E113C23, "c.sdsp ra,504(sp)"),
    (0xE46E, 0x01B13423, "c.sdsp s11,8(sp)"),
    (0x557E, 0x0FC12503, "c.lwsp a0,252(sp)"),
    (0xDF96, 0x0E512E23, "c.swsp t0,252(sp)"),
    (0x357E, 0x1F813507, "c.fldsp fa0,504(sp)"),
    (0xA26E, 0x11B13027, "c.fsdsp fs11,256(sp)"),
    (0x7F7C, 0x0F873783, "c.ld a5,248(a4)"),
    (0xE0C0, 0x0884B023, "c.sd s0,128(s1)"),
    (0x5F7C, 0x07C72783, "c.lw a5,124(a4)"),
    (0xC0A0, 0x0484A023, "c.sw s0,64(s1)"),
    (0x3C7C, 0x0F843787, "c.fld fa5,248(s0)"),
    (0xA780, 0x0087B427, "c.fsd fs0,8(a5)"),
    (0x9501, 0x42055513, "c.srai a0,32"),
    (0x97FD, 0x43F7D793, "c.srai a5,63"),
    (0x9005, 0x02145413, "c.srli s0,33"),
    (0x1FFE, 0x03FF9F93, "c.slli t6,63"),
    (0x9901, 0xFE057513, "c.andi a0,-32"),
    (0x357D, 0xFFF5051B, "c.addiw a0,-1"),
    (0x1501, 0xFE050513, "c.addi a0,-32"),
    (0x42FD, 0x01F00293, "c.li t0,31"),
    (0x9D1D, 0x40F5053B, "c.subw a0,a5"),
    (0x9C25, 0x0094043B, "c.addw s0,s1"),
    (0x8E15, 0x40D60633, "c.sub a2,a3"),
    (0x8F3D, 0x00F74733, "c.xor a4,a5"),
    (0x8C45, 0x00946433, "c.or s0,s1"),
    (0x8D6D, 0x00B57533, "c.and a0,a1"),
    (0x857E, 0x01F00533, "c.mv a0,t6"),
    (0x908A, 0x002080B3, "c.add ra,sp"),
    (0x8082, 0x00008067, "c.jr ra"),
    (0x9282, 0x000280E7, "c.jalr t0"),
    (0x9002, 0x00100073, "c.ebreak"),
    (0x0001, 0x00000013, "c.nop"),
    (0xB001, 0x801FF06F, "c.j .-2048"),
    (0xAFFD, 0x7FE0006F, "c.j .+2046"),
    (0xAFF5, 0x7FC0006F, "c.j .+2044"),
    (0xBFFD, 0xFFFFF06F, "c.j .-2"),
    (0xA009, 0x0020006F, "c.j .+2"),
    (0xA001, 0x0000006F, "c.j .+0"),
    (0xAB91, 0x5540006F, "c.j .+1364"),
    (0xB46D, 0xAABFF06F, "c.j .-1366"),
    (0xD101, 0xF00500E3, "c.beqz a0,.-256"),
    (0xCFFD, 0x0E078F63, "c.beqz a5,.+254"),
    (0xE089, 0x00049163, "c.bnez s1,.+2"),
    (0xFC7D, 0xFE041FE3, "c.bnez s0,.-2"),
    (0xE6CD, 0x0A069563, "c.bnez a3,.+170"),
    (0xDA31, 0xF4060AE3, "c.beqz a2,.-172"),
]


@pytest.mark.parametrize("half,word,asm", HAND, ids=[a for _, _, a in HAND])
def test_hand_cases(half: int, word: int, asm: str) -> None:
    assert expand(half) == word, f"{asm}: got {expand(half):08x}"


# HINTs: must decode (non-zero) to an instruction with no architectural effect.
HINTS = [
    (0x6005, 0x00001037, "c.lui x0,1 -> lui x0,1"),
    (0x0082, 0x00009093, "c.slli64 ra -> slli ra,ra,0"),
    (0x8001, 0x00045413, "c.srli64 s0 -> srli s0,s0,0"),
    (0x8401, 0x40045413, "c.srai64 s0 -> srai s0,s0,0"),
    (0x4005, 0x00100013, "c.li x0,1 -> addi x0,x0,1"),
    (0x8006, 0x00100033, "c.mv x0,ra -> add x0,x0,ra"),
    (0x9006, 0x00100033, "c.add x0,ra -> add x0,x0,ra"),
    (0x0081, 0x00008093, "c.addi ra,0 -> addi ra,ra,0"),
    (0x0005, 0x00100013, "c.nop 1 -> addi x0,x0,1"),
    (0x0006, 0x00101013, "c.slli x0,1 -> slli x0,x0,1"),
]


@pytest.mark.parametrize("half,word,desc", HINTS, ids=[d for _, _, d in HINTS])
def test_hints_are_noops(half: int, word: int, desc: str) -> None:
    assert expand(half) == word


ILLEGAL = [
    (0x0000, "all-zero halfword"),
    (0x0008, "c.addi4spn a0,sp,0 (nzuimm=0)"),
    (0x001C, "c.addi4spn a5,sp,0 (nzuimm=0)"),
    (0x8000, "quadrant 0 funct3=100 reserved"),
    (0x9FFC, "quadrant 0 funct3=100 reserved"),
    (0x6101, "c.addi16sp nzimm=0"),
    (0x6501, "c.lui a0,0"),
    (0x6001, "c.lui x0,0"),
    (0x8002, "c.jr x0"),
    (0x2001, "c.addiw x0,0"),
    (0x307D, "c.addiw x0,-1"),
    (0x6002, "c.ldsp x0,0(sp)"),
    (0x707E, "c.ldsp x0,504(sp)"),
    (0x4002, "c.lwsp x0,0(sp)"),
    (0x9C41, "quadrant 1 reserved (bit12=1, op=10)"),
    (0x9C61, "quadrant 1 reserved (bit12=1, op=11)"),
    (0x0003, "quadrant 3: not compressed"),
    (0xFFFF, "quadrant 3: not compressed"),
]


@pytest.mark.parametrize("half,desc", ILLEGAL, ids=[d for _, d in ILLEGAL])
def test_illegal(half: int, desc: str) -> None:
    assert expand(half) == 0


def test_is_compressed() -> None:
    for half in range(0x10000):
        assert is_compressed(half) == (half & 3 != 3)


def test_expansions_are_32bit() -> None:
    for half in range(0x10000):
        word = expand(half)
        assert word == 0 or (word & 3 == 3 and word >> 32 == 0)
