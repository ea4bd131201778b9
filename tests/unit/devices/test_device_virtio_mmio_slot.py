"""An empty virtio-mmio slot answers Linux's probe with 'no device'."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyhv.devices.virtio_mmio_slot import EmptyVirtioSlot


def test_probe_values():
    v = EmptyVirtioSlot()
    assert v.read(0x000, 4) == 0x74726976
    assert v.read(0x000, 4).to_bytes(4, "little") == b"virt"
    assert v.read(0x004, 4) == 2
    assert v.read(0x008, 4) == 0
    assert v.read(0x00C, 4) == 0x554D4551
    assert v.read(0x00C, 4).to_bytes(4, "little") == b"QEMU"
    assert v.read(0x010, 4) == 0  # DeviceFeatures
    assert v.read(0x070, 4) == 0  # Status


def test_writes_ignored():
    v = EmptyVirtioSlot()
    v.write(0x070, 4, 0xFF)
    v.write(0x000, 4, 0)
    assert v.read(0x070, 4) == 0
    assert v.read(0x000, 4) == 0x74726976


def test_legacy_version_parameter():
    assert EmptyVirtioSlot(version=1).read(4, 4) == 1


@given(
    st.one_of(st.integers(0, 0xFFF), st.integers(-(2**64), 2**64)),
    st.sampled_from([1, 2, 4, 8, 0, 3, 16]),
    st.integers(0, 2**64 - 1),
)
def test_fuzz_no_exception(off, size, value):
    v = EmptyVirtioSlot()
    v.write(off, size, value)
    assert 0 <= v.read(off, size) <= 0xFFFF_FFFF
