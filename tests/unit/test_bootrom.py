"""The boot ROM: QEMU 7.2's reset vector and fw_dynamic_info record, byte for byte.

``QEMU_ROM_LINUX`` was read from a running ``qemu-system-riscv64`` 7.2
(``-M virt -m 128M -bios default -kernel Image``, monitor ``xp /12gx 0x1000``).
"""

from __future__ import annotations

import struct

import pytest

from pyhv.board import memmap
from pyhv.board.bootrom import (
    FW_DYNAMIC_INFO_MAGIC,
    FW_DYNAMIC_INFO_VERSION,
    NEXT_MODE_S,
    RESET_VECTOR_WORDS,
    FwDynamicInfo,
    build_reset_vector,
    fw_dynamic_info,
)

KNOWN_WORDS = (0x00000297, 0x02828613, 0xF1402573, 0x0202B583, 0x0182B283, 0x00028067)

QEMU_ROM_LINUX = struct.pack(
    "<11Q",
    0x0282861300000297,
    0x0202B583F1402573,
    0x000280670182B283,
    0x0000000080000000,  # start: OpenSBI
    0x0000000087E00000,  # DTB
    0x000000004942534F,  # magic "OSBI"
    0x0000000000000002,  # version
    0x0000000080200000,  # next_addr: the kernel
    0x0000000000000001,  # next_mode: S
    0x0000000000000000,  # options
    0x0000000000000000,  # boot_hart
)


def _decode(word: int) -> dict[str, int]:
    imm = word >> 20
    if imm & 0x800:
        imm -= 0x1000
    return {
        "opcode": word & 0x7F,
        "rd": (word >> 7) & 0x1F,
        "funct3": (word >> 12) & 7,
        "rs1": (word >> 15) & 0x1F,
        "imm_i": imm,
        "imm_u": word >> 12,
        "csr": word >> 20,
    }


T0, A0, A1, A2 = 5, 10, 11, 12


def test_words_are_the_known_encodings() -> None:
    assert RESET_VECTOR_WORDS == KNOWN_WORDS
    rom = build_reset_vector(0x8000_0000, 0x87E0_0000, None)
    assert struct.unpack_from("<6I", rom) == KNOWN_WORDS


def test_words_decode_to_the_right_instructions() -> None:
    auipc, addi, csrr, ld_a1, ld_t0, jr = (_decode(w) for w in RESET_VECTOR_WORDS)
    assert (auipc["opcode"], auipc["rd"], auipc["imm_u"]) == (0x17, T0, 0)  # auipc t0, 0
    assert (addi["opcode"], addi["funct3"], addi["rd"], addi["rs1"], addi["imm_i"]) == (
        0x13, 0, A2, T0, 40,
    )  # addi a2, t0, 40  # fmt: skip
    assert (csrr["opcode"], csrr["funct3"], csrr["rd"], csrr["rs1"], csrr["csr"]) == (
        0x73, 2, A0, 0, 0xF14,
    )  # csrrs a0, mhartid, zero  # fmt: skip
    assert (ld_a1["opcode"], ld_a1["funct3"], ld_a1["rd"], ld_a1["rs1"], ld_a1["imm_i"]) == (
        0x03, 3, A1, T0, 32,
    )  # ld a1, 32(t0)  # fmt: skip
    assert (ld_t0["opcode"], ld_t0["funct3"], ld_t0["rd"], ld_t0["rs1"], ld_t0["imm_i"]) == (
        0x03, 3, T0, T0, 24,
    )  # ld t0, 24(t0)  # fmt: skip
    assert (jr["opcode"], jr["funct3"], jr["rd"], jr["rs1"], jr["imm_i"]) == (
        0x67, 0, 0, T0, 0,
    )  # jalr zero, 0(t0)  # fmt: skip


def test_identical_to_qemu_7_2() -> None:
    rom = build_reset_vector(0x8000_0000, 0x87E0_0000, fw_dynamic_info(0x8020_0000))
    assert rom == QEMU_ROM_LINUX


def test_layout_and_offsets_match_the_code() -> None:
    start, dtb, nxt = 0x8000_0000, 0xBFE0_0000, 0x8020_0000
    rom = build_reset_vector(start, dtb, fw_dynamic_info(nxt))
    assert len(rom) == 40 + 48 <= memmap.BOOT_ROM.size
    # What the six instructions compute, with t0 = ROM base (auipc t0, 0 at +0):
    t0 = memmap.BOOT_ROM.base
    a2 = t0 + 40
    (a1,) = struct.unpack_from("<Q", rom, 32)
    (target,) = struct.unpack_from("<Q", rom, 24)
    assert (a1, target) == (dtb, start)
    info = FwDynamicInfo(*struct.unpack_from("<6Q", rom, a2 - t0))
    assert info == FwDynamicInfo(FW_DYNAMIC_INFO_MAGIC, 2, nxt, NEXT_MODE_S, 0, 0)
    assert info.magic.to_bytes(4, "little") == b"OSBI"
    assert FW_DYNAMIC_INFO_VERSION == 2


def test_info_forms_are_equivalent() -> None:
    full = build_reset_vector(1, 2, fw_dynamic_info(0x8020_0000))
    assert build_reset_vector(1, 2, (0x8020_0000, 1)) == full
    assert build_reset_vector(1, 2, (0x8020_0000, 1, 0)) == full
    assert build_reset_vector(1, 2, tuple(fw_dynamic_info(0x8020_0000))) == full


def test_no_info() -> None:
    rom = build_reset_vector(0x8000_0000, 0x87E0_0000, None)
    assert len(rom) == 40
    assert rom == QEMU_ROM_LINUX[:40]


def test_boot_hart_minus_one_is_all_ones() -> None:
    rom = build_reset_vector(0, 0, fw_dynamic_info(0x8020_0000, boot_hart=-1))
    assert rom[-8:] == b"\xff" * 8
    rom = build_reset_vector(0, 0, (0x8020_0000, 1, 3))
    assert struct.unpack_from("<Q", rom, 80)[0] == 3


def test_high_addresses() -> None:
    rom = build_reset_vector(0xFFFF_FFFF_8000_0000, 0x1_0000_0000, None)
    assert struct.unpack_from("<QQ", rom, 24) == (0xFFFF_FFFF_8000_0000, 0x1_0000_0000)


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, None),
        (0, 1 << 64, None),
        (0, 0, (1, 2, 3, 4)),
        (0, 0, (1,)),
        (0, 0, (1 << 64, 1)),
    ],
)
def test_rejects_bad_values(args) -> None:
    with pytest.raises(ValueError):
        build_reset_vector(*args)
