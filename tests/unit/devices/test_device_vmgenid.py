"""The VM generation ID (devices/vmgenid.py) as Linux's vmgenid driver sees it: 16
read-only bytes it copies out with loads of any width, and a PLIC line that interrupts
once for each new identifier."""

from __future__ import annotations

import uuid

import pytest

from pyhv import records
from pyhv.cpu.trap import MIP_SEIP
from pyhv.devices.base import IrqLine
from pyhv.devices.plic import CONTEXT_BASE, ENABLE_BASE, Plic
from pyhv.devices.vmgenid import GUID_SIZE, VmGenId, VmGenIdState, parse_guid
from pyhv.errors import ConfigError
from pyhv.records import StateError

GUID = bytes(range(0xA0, 0xB0))


def test_reads_of_every_width_return_the_identifiers_bytes_little_endian():
    d = VmGenId(IrqLine(), GUID)
    for size in (1, 2, 4, 8):
        for offset in range(0, GUID_SIZE, size):
            assert d.read(offset, size) == int.from_bytes(GUID[offset:offset + size],
                                                          "little")
    assert d.read(0, 8) | d.read(8, 8) << 64 == int.from_bytes(GUID, "little")
    assert d.read(12, 8) == int.from_bytes(GUID[12:], "little")  # past the end: zeros
    assert d.read(16, 4) == 0 and d.read(0xFF8, 8) == 0


def test_writes_change_nothing():
    d = VmGenId(IrqLine(), GUID)
    for offset, size in ((0, 8), (8, 8), (3, 1), (14, 2), (16, 4)):
        d.write(offset, size, (1 << (8 * size)) - 1)
    assert d.guid == GUID and d.read(0, 8) == int.from_bytes(GUID[:8], "little")


def test_a_new_generation_interrupts_the_guest_once_per_identifier():
    """Through the PLIC as Linux programs it (S-mode context of hart 0): one interrupt
    for each new identifier, none again after the claim and completion."""
    seip = []
    plic = Plic(1, lambda hart, mask, level: seip.append(level) if mask == MIP_SEIP else None)
    d = VmGenId(plic.irq_line(12), GUID)
    plic.write(4 * 12, 4, 1)  # priority
    plic.write(ENABLE_BASE + 0x80 * 1, 4, 1 << 12)
    claim = CONTEXT_BASE + 0x1000 * 1 + 4
    assert plic.read(claim, 4) == 0
    first = d.new_generation()
    assert first != GUID and len(first) == GUID_SIZE and d.read(0, 8) != \
        int.from_bytes(GUID[:8], "little")
    assert seip[-1] is True
    assert plic.read(claim, 4) == 12
    plic.write(claim, 4, 12)  # complete
    assert seip[-1] is False and plic.read(claim, 4) == 0  # not again for the same one
    second = d.new_generation()
    assert second != first and seip[-1] is True and plic.read(claim, 4) == 12


def test_a_warm_reset_keeps_the_identifier_and_drops_the_line():
    line = IrqLine()
    d = VmGenId(line, GUID)
    guid = d.new_generation()
    assert line.level
    d.reset()
    assert not line.level and d.guid == guid


def test_state_round_trips_and_bad_state_is_refused():
    d = VmGenId(IrqLine(), GUID)
    data = records.dump(d.save())
    assert data == {"guid": GUID.hex()}
    other = VmGenId(IrqLine())
    other.restore(records.load(VmGenIdState, data, "vmgenid"))
    assert other.guid == GUID
    with pytest.raises(StateError, match="vmgenid.guid: 17 bytes, at most 16"):
        records.load(VmGenIdState, {"guid": "00" * 17}, "vmgenid")
    with pytest.raises(StateError, match="vmgenid.guid: expected hex"):
        records.load(VmGenIdState, {"guid": "not hex"}, "vmgenid")
    with pytest.raises(StateError, match="vmgenid.guid: 15 bytes"):
        other.restore(records.load(VmGenIdState, {"guid": "00" * 15}, "vmgenid"))
    assert other.guid == GUID


def test_guid_option():
    a, b = parse_guid("auto"), parse_guid("auto")
    assert len(a) == len(b) == GUID_SIZE and a != b
    text = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
    # QEMU's layout: the first three fields little-endian (Microsoft's GUID order)
    assert parse_guid(text) == bytes.fromhex("af6e4e32d1d1f64bbf41b9bb6c91fb87")
    assert parse_guid(text) == uuid.UUID(text).bytes_le
    for bad in ("", "on", "324e6eaf-d1d1-4bf6-bf41"):
        with pytest.raises(ConfigError, match="expected 'auto' or a UUID"):
            parse_guid(bad)
