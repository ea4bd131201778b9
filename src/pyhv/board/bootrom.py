"""The boot ROM at 0x1000: QEMU 7.2's RV64 reset vector, byte for byte.

Why copy QEMU's ROM instead of setting registers from Python: every hart really starts
at 0x1000 and runs these six instructions, so a0 (hartid), a1 (DTB) and a2
(``fw_dynamic_info``) get their values the same way on pyhv as on QEMU, the ROM is
visible to the guest at the same address (some firmware reads it back), and the boot
path needs no special case in the CPU.

Layout (hw/riscv/boot.c ``riscv_setup_rom_reset_vec`` + ``riscv_rom_copy_firmware_info``)::

    +0   auipc t0, 0            t0 = 0x1000
    +4   addi  a2, t0, 40       a2 = &fw_dynamic_info
    +8   csrr  a0, mhartid
    +12  ld    a1, 32(t0)       a1 = DTB address
    +16  ld    t0, 24(t0)       t0 = start address
    +20  jr    t0
    +24  start address (u64)
    +32  DTB address (u64)
    +40  struct fw_dynamic_info: six u64, little-endian

Values chosen for ``fw_dynamic_info``, all as QEMU 7.2 writes them (checked against
hw/riscv/boot.c and include/hw/riscv/boot_opensbi.h, and read back from a running
``qemu-system-riscv64`` 7.2 with ``xp /12gx 0x1000``):

- ``magic`` 0x4942534f ("OSBI");
- ``version`` 2 (QEMU's ``FW_DYNAMIC_INFO_VERSION``: the version that has ``boot_hart``);
- ``next_addr``: the payload's entry (QEMU passes 0 when there is no ``-kernel``);
- ``next_mode`` 1 (S-mode);
- ``options`` 0 (OpenSBI prints its banner);
- ``boot_hart`` 0. With version 2 OpenSBI lets only this hart do its relocation copy; the
  cold-boot hart is still chosen by OpenSBI's lottery afterwards, which is why under
  ``-smp 4`` any hart may end up booting Linux.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "FW_DYNAMIC_INFO_MAGIC",
    "FW_DYNAMIC_INFO_VERSION",
    "NEXT_MODE_U",
    "NEXT_MODE_S",
    "NEXT_MODE_M",
    "RESET_VECTOR_WORDS",
    "FwDynamicInfo",
    "fw_dynamic_info",
    "build_reset_vector",
]

FW_DYNAMIC_INFO_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_INFO_VERSION = 2
NEXT_MODE_U = 0
NEXT_MODE_S = 1
NEXT_MODE_M = 3

_T0, _A0, _A1, _A2 = 5, 10, 11, 12
_CSR_MHARTID = 0xF14
_START_OFF = 24
_DTB_OFF = 32
_INFO_OFF = 40


def _i_type(imm: int, rs1: int, funct3: int, rd: int, opcode: int) -> int:
    return ((imm & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode


def _u_type(imm20: int, rd: int, opcode: int) -> int:
    return ((imm20 & 0xFFFFF) << 12) | (rd << 7) | opcode


# The six instructions, encoded here from their fields rather than copied as constants.
RESET_VECTOR_WORDS: tuple[int, ...] = (
    _u_type(0, _T0, 0x17),  # auipc t0, 0
    _i_type(_INFO_OFF, _T0, 0b000, _A2, 0x13),  # addi  a2, t0, 40
    _i_type(_CSR_MHARTID, 0, 0b010, _A0, 0x73),  # csrrs a0, mhartid, x0 (csrr)
    _i_type(_DTB_OFF, _T0, 0b011, _A1, 0x03),  # ld    a1, 32(t0)
    _i_type(_START_OFF, _T0, 0b011, _T0, 0x03),  # ld    t0, 24(t0)
    _i_type(0, _T0, 0b000, 0, 0x67),  # jalr  x0, 0(t0) (jr t0)
)


class FwDynamicInfo(NamedTuple):
    """OpenSBI's ``struct fw_dynamic_info``, fields in memory order."""

    magic: int
    version: int
    next_addr: int
    next_mode: int
    options: int
    boot_hart: int


def fw_dynamic_info(
    next_addr: int, next_mode: int = NEXT_MODE_S, *, options: int = 0, boot_hart: int = 0
) -> FwDynamicInfo:
    """The record QEMU 7.2 passes to OpenSBI ``fw_dynamic`` for a payload at ``next_addr``."""
    return FwDynamicInfo(
        FW_DYNAMIC_INFO_MAGIC, FW_DYNAMIC_INFO_VERSION, next_addr, next_mode, options, boot_hart
    )


_make_info = fw_dynamic_info  # build_reset_vector's parameter shadows the name


def build_reset_vector(
    start_addr: int, dtb_addr: int, fw_dynamic_info: tuple[int, ...] | None
) -> bytes:
    """The boot ROM contents: reset code, start and DTB addresses, then the firmware info.

    ``fw_dynamic_info`` is one of:

    - a full record in ``struct fw_dynamic_info`` order (any 6-tuple, e.g. from
      :func:`fw_dynamic_info`);
    - ``(next_addr, next_mode)`` or ``(next_addr, next_mode, boot_hart)``, completed with
      QEMU's magic, version 2 and options 0;
    - ``None``: no record, 40 bytes of ROM. QEMU always writes one (with ``-bios none``
      too, ``next_addr`` = the kernel entry); OpenSBI ``fw_dynamic`` stops if a2 does not
      point at a valid record.

    A field of -1 is stored as all ones (``target_long``), e.g. ``boot_hart = -1``.
    """
    for name, value in (("start address", start_addr), ("DTB address", dtb_addr)):
        if not 0 <= value < 1 << 64:
            raise ValueError(f"{name} {value:#x} does not fit in 64 bits")
    rom = struct.pack("<6I", *RESET_VECTOR_WORDS) + struct.pack("<QQ", start_addr, dtb_addr)
    if fw_dynamic_info is None:
        return rom
    fields = tuple(fw_dynamic_info)
    if len(fields) in (2, 3):
        boot_hart = fields[2] if len(fields) == 3 else 0
        fields = tuple(_make_info(fields[0], fields[1], boot_hart=boot_hart))
    if len(fields) != 6:
        raise ValueError(
            "fw_dynamic_info must be 6 fields, (next_addr, next_mode) or (next_addr, "
            f"next_mode, boot_hart), not {fields!r}"
        )
    if any(not -(1 << 63) <= f < 1 << 64 for f in fields):
        raise ValueError(f"fw_dynamic_info fields must fit in 64 bits: {fields!r}")
    return rom + struct.pack("<6Q", *(f & (1 << 64) - 1 for f in fields))
