"""The memory manager's split (host/memory.py) and the memory terms of a definition."""

from __future__ import annotations

import pytest

from pyhv.host.definition import VMDefinition
from pyhv.host.errors import DefinitionError, InsufficientResources
from pyhv.host.memory import MIN_KEEP, MemoryManager, MemoryView, entitlements
from pyhv.host.registry import HostSettings, check_admission, check_fits

MiB = 1 << 20


def _four(held: int = 240 * MiB, active: int = 0, reservation: int = 0) -> list[MemoryView]:
    return [MemoryView(name, 256 * MiB, shares, reservation if name == "a" else 0,
                       held=held, active=active)
            for name, shares in (("a", 1000), ("b", 1000), ("c", 2000), ("d", 4000))]


def test_idle_vms_split_the_budget_by_their_shares_within_their_sizes() -> None:
    got = entitlements(_four(), 640 * MiB)
    # d's half (320 MiB) is more than its 256 MiB: the other 384 MiB go 1:1:2.
    assert got["d"] == 256 * MiB
    assert got["a"] == got["b"] == 96 * MiB
    assert got["c"] == 192 * MiB
    assert sum(got.values()) <= 640 * MiB


def test_a_reservation_is_never_taken_back() -> None:
    got = entitlements(_four(reservation=160 * MiB), 640 * MiB)
    assert got["a"] == 160 * MiB and got["d"] == 256 * MiB
    assert abs(got["c"] - 2 * got["b"]) <= MiB
    assert sum(got.values()) <= 640 * MiB


def test_idle_memory_is_taken_first() -> None:
    """Two VMs of equal shares, one with 200 MiB active: the idle one gives more."""
    vms = [MemoryView("busy", 256 * MiB, 1000, active=200 * MiB),
           MemoryView("idle", 256 * MiB, 1000, active=0)]
    got = entitlements(vms, 320 * MiB)
    assert got["busy"] > got["idle"] + 100 * MiB
    assert entitlements(vms, 320 * MiB, tax=0.0) == {"busy": 160 * MiB, "idle": 160 * MiB}


def test_no_split_when_the_limits_fit() -> None:
    vms = [MemoryView("a", 256 * MiB, 1000, limit=200 * MiB), MemoryView("b", 256 * MiB, 1000)]
    assert entitlements(vms, 1024 * MiB) == {"a": 200 * MiB, "b": 256 * MiB}


def test_a_guest_keeps_enough_to_run_when_the_budget_is_tiny() -> None:
    got = entitlements(_four(), 64 * MiB)
    assert all(v == MIN_KEEP for v in got.values())


def test_the_manager_reclaims_only_under_pressure_and_lets_go_after() -> None:
    m = MemoryManager(640 * MiB)
    # Fresh guests hold little: no reclaim, although their sizes add up to 1 GiB.
    assert m.targets(_four(held=60 * MiB)) == dict.fromkeys("abcd", 0)
    assert not m.short
    # They touch memory: past 95% of the budget the balloons take the excess.
    balloons = m.targets(_four(held=200 * MiB))
    assert m.short
    assert balloons == {"a": 160 * MiB, "b": 160 * MiB, "c": 64 * MiB, "d": 0}
    # Between the marks nothing changes; below 80% the balloons are let go.
    assert m.targets(_four(held=140 * MiB)) == balloons
    assert m.targets(_four(held=120 * MiB)) == dict.fromkeys("abcd", 0)


def test_a_limit_holds_whatever_the_host_has_and_a_hand_set_target_stays() -> None:
    m = MemoryManager(16 << 30)
    vms = [MemoryView("a", 256 * MiB, 1000, limit=128 * MiB),
           MemoryView("b", 256 * MiB, 1000, asked=32 * MiB),
           MemoryView("c", 256 * MiB, 1000, balloon=False)]
    assert m.targets(vms) == {"a": 128 * MiB, "b": 32 * MiB}


def test_vms_without_a_balloon_count_at_their_size() -> None:
    m = MemoryManager(512 * MiB)
    vms = [MemoryView("fixed", 256 * MiB, 1000, held=250 * MiB, balloon=False),
           MemoryView("x", 256 * MiB, 1000, held=250 * MiB)]
    assert m.targets(vms) == {"x": 0}  # 500 MiB held of 512: short, but x fits in 256
    m = MemoryManager(400 * MiB)
    assert m.targets(vms) == {"x": 112 * MiB}


def _vm(name: str, reservation: str, size: str = "256M") -> VMDefinition:
    return VMDefinition.from_toml(f'name = "{name}"\n[memory]\nsize = "{size}"\n'
                                  f'reservation = "{reservation}"\n')


def test_admission_holds_the_reservations() -> None:
    settings = HostSettings(memory=640 * MiB, memory_overcommit=2)
    check_admission([_vm("a", "256M"), _vm("b", "256M")], _vm("c", "128M"), settings)
    with pytest.raises(InsufficientResources, match="memory.reservation 192 MiB"):
        check_admission([_vm("a", "256M"), _vm("b", "256M")], _vm("c", "192M"), settings)
    with pytest.raises(DefinitionError, match="memory.reservation: 1G is more than "
                       "the host's memory budget"):
        check_fits(_vm("big", "1G", "2G"), HostSettings(memory=640 * MiB,
                                                          memory_overcommit=4))


@pytest.mark.parametrize(("toml", "message"), [
    ('[memory]\nsize = "256M"\nreservation = "300M"',
     "memory.reservation: 300 MiB is more than the VM's memory"),
    ('[memory]\nsize = "256M"\nlimit = "128M"', "memory.limit: needs devices.balloon"),
    ('[memory]\nreservation = "96M"\nlimit = "64M"\n[devices]\nballoon = true',
     "memory.limit: 64 MiB is below memory.reservation 96 MiB"),
    ('[memory]\nshares = 0', "memory.shares: 0 is out of range"),
    ('[memory]\nshares = "lots"', "memory.shares: 'lots' is not a share level"),
    ('[memory]\nlimit = "1G"', "memory.limit: 1024 MiB is more than the VM's memory"),
    ('[memory]\nsize = "256M"\nswap = 1', "memory.swap: unknown key"),
])
def test_bad_terms_name_the_field(toml: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        VMDefinition.from_toml('name = "a"\n' + toml)


def test_terms_round_trip_through_toml_and_default_shares_follow_the_size() -> None:
    d = VMDefinition.from_toml('name = "a"\n[memory]\nsize = "256M"\nshares = "high"\n'
                               'reservation = "64M"\nlimit = "200M"\n[devices]\nballoon = true\n')
    assert (d.memory_terms.shares, d.memory_terms.reservation, d.memory_terms.limit) == (
        20 * 256, 64 * MiB, 200 * MiB)
    assert VMDefinition.from_toml(d.to_toml()) == d
    plain = VMDefinition.from_toml('name = "b"\nmemory = "512M"\n')
    assert plain.memory_terms.shares == 10 * 512 and plain.to_dict()["memory"] == "512M"
    with pytest.raises(DefinitionError, match="memory: 0 must be positive"):
        HostSettings.from_dict({"memory": 0})
