"""The memory manager's split (host/memory.py) and the memory terms of a definition."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhv.host.definition import VMDefinition
from pyhv.host.errors import DefinitionError, InsufficientResources
from pyhv.host.memory import (
    MIN_KEEP,
    RELEASE_STEP,
    MemoryManager,
    MemoryView,
    entitlements,
)
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


def _run(m: MemoryManager, touched: dict[str, int], seconds: int = 20,
         untouched_first: bool = False, **kw: int) -> dict[str, int]:
    """Guests that touched ``touched`` bytes under the manager for ``seconds`` ticks: each
    balloon reaches its target in a tick and takes touched pages first (as Linux, whose
    free lists hand out recently freed pages first) or untouched ones first. What each
    VM holds at the end."""
    balloon = dict.fromkeys(touched, 0)
    held = dict(touched)
    for _ in range(seconds):
        vms = [MemoryView(v.name, v.size, v.shares, v.reservation, held=held[v.name],
                          ballooned=balloon[v.name], **kw) for v in _four()]
        for name, target in m.targets(vms).items():
            free = 256 * MiB - touched[name]  # never touched, not held
            if untouched_first:
                held[name] = touched[name] - max(0, target - free)
            else:
                held[name] = max(0, touched[name] - target)
            balloon[name] = target
    return held


@pytest.mark.parametrize("untouched_first", [False, True])
def test_the_manager_trims_what_each_holds_to_its_entitlement(untouched_first: bool) -> None:
    m = MemoryManager(640 * MiB)
    # Fresh guests hold little: no reclaim, although their sizes add up to 1 GiB.
    assert m.targets(_four(held=60 * MiB)) == dict.fromkeys("abcd", 0)
    assert not m.short
    # They touch memory: past 95% of the budget the balloons take the excess.
    held = _run(m, dict.fromkeys("abcd", 240 * MiB), untouched_first=untouched_first)
    assert m.short
    want = {"a": 96 * MiB, "b": 96 * MiB, "c": 192 * MiB, "d": 240 * MiB}
    for name, value in want.items():
        assert abs(held[name] - value) <= 3 * MiB, (name, held[name] / MiB)


def test_balloons_are_let_go_step_by_step_when_memory_is_no_longer_short() -> None:
    m = MemoryManager(640 * MiB)
    held = _run(m, dict.fromkeys("abcd", 240 * MiB))
    balloons = dict(m._last)
    # between the marks (80% to 95% of the budget): as they are
    vms = [MemoryView(n, 256 * MiB, 1000, held=140 * MiB, ballooned=balloons[n]) for n in held]
    m.short = False
    assert m.targets(vms) == balloons
    # below 80%: a step a second
    vms = [MemoryView(n, 256 * MiB, 1000, held=100 * MiB, ballooned=balloons[n]) for n in held]
    stepped = m.targets(vms)
    assert stepped == {n: max(0, b - RELEASE_STEP) for n, b in balloons.items()}
    assert not m.short


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
    assert m.targets(vms) == {"x": 0}  # 500 MiB held of 512: x fits in 256
    m = MemoryManager(400 * MiB)
    assert m.targets(vms) == {"x": 106 * MiB}  # it holds 250: 106 above its 144


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


def test_set_memory_terms_and_bad_ones_change_nothing(tmp_path: Path) -> None:
    from pyhv.host import Host

    host = Host(tmp_path / "state")
    host.registry.root.mkdir(parents=True, exist_ok=True)
    (host.state_dir / "host.toml").write_text('memory = "512M"\n')
    host.create({"name": "web", "memory": "256M", "devices": {"balloon": True}})
    d = host.set("web", memory_shares="high", memory_reservation="128M",
                 memory_limit="192M").definition
    assert (d.memory_terms.shares, d.memory_terms.reservation, d.memory_terms.limit) == (
        20 * 256, 128 * MiB, 192 * MiB)
    before = host.registry.definition_path("web").read_text()
    for changes, message in (
            ({"memory_limit": "64M"}, "web: memory.limit: 64 MiB is below memory.reservation"),
            ({"memory": "1G", "memory_limit": None, "memory_reservation": "768M"},
             "memory.reservation: 768M is more than the host's memory budget"),
            ({"memory_shares": 0}, "memory.shares: 0 is out of range")):
        with pytest.raises(DefinitionError, match=message):
            host.set("web", **changes)
        assert host.registry.definition_path("web").read_text() == before
    d = host.set("web", memory_limit=None, memory="384M").definition
    assert d.memory_terms.limit is None and d.memory == 384 * MiB
    assert d.memory_terms.shares == 20 * 256  # set by hand: it stays
    plain = host.create({"name": "db", "memory": "128M"}).definition
    assert host.set("db", memory="256M").definition.memory_terms.shares == 2560  # follows
    assert plain.memory_terms.shares == 1280
