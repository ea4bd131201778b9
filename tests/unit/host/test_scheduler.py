"""The CPU scheduler's policies and bookkeeping, driven with simulated time.

A simulated host runs the scheduler's decisions exactly: every VM in ``Decision.run``
gets the CPU until ``next_at``; idle VMs use nothing unless a test says they wake.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import pytest

from pyhv.host.scheduler import (
    QUANTUM,
    Demand,
    ProportionalShare,
    RoundRobin,
    Scheduler,
    Terms,
    limit_burst,
    make_policy,
    water_fill,
)

# ------------------------------------------------------------------------ policy math


def test_water_fill_divides_in_proportion_to_weights() -> None:
    got = water_fill([("a", 1, 0, 100), ("b", 2, 0, 100), ("c", 4, 0, 100)], 140)
    assert got == pytest.approx({"a": 20, "b": 40, "c": 80})


def test_water_fill_gives_what_a_capped_item_cannot_take_to_the_others() -> None:
    # 1:2:4 of 200 would be 28.6 / 57.1 / 114.3, but nobody gets more than 100
    got = water_fill([("a", 1, 0, 100), ("b", 2, 0, 100), ("c", 4, 0, 100)], 200)
    assert got == pytest.approx({"a": 100 / 3, "b": 200 / 3, "c": 100})


def test_water_fill_honours_floors() -> None:
    got = water_fill([("r", 500, 80, 100), ("b", 1000, 0, 100), ("c", 1000, 0, 100)], 200)
    assert got == pytest.approx({"r": 80, "b": 60, "c": 60})


def test_water_fill_when_ceilings_do_not_add_up_to_the_capacity() -> None:
    assert water_fill([("a", 1, 0, 30), ("b", 1, 0, 50)], 200) == {"a": 30, "b": 50}
    assert water_fill([], 200) == {}


def test_water_fill_scales_floors_down_when_they_exceed_the_capacity() -> None:
    got = water_fill([("a", 1, 80, 100), ("b", 1, 80, 100)], 100)
    assert got == pytest.approx({"a": 50, "b": 50})


def test_proportional_share_entitlements() -> None:
    policy = ProportionalShare()
    demands = [
        Demand("low", Terms(shares=500)),
        Demand("high", Terms(shares=2000, limit=30)),
        Demand("res", Terms(shares=500, reservation=60)),
        Demand("idle", Terms(shares=8000), runnable=False),
    ]
    got = policy.entitlements(demands, cpus=1)
    # idle gets nothing; high is capped by its limit; res has its reservation as a floor
    assert set(got) == {"low", "high", "res"}
    assert got["high"] == pytest.approx(30)
    assert got["res"] == pytest.approx(60)
    assert got["low"] == pytest.approx(10)
    assert sum(got.values()) == pytest.approx(100)


def test_round_robin_entitlements_ignore_shares_and_reservations() -> None:
    demands = [Demand("a", Terms(shares=500, reservation=50)), Demand("b", Terms(4000)),
               Demand("c", Terms(1000, limit=20))]
    got = RoundRobin().entitlements(demands, cpus=1)
    assert got == pytest.approx({"a": 40, "b": 40, "c": 20})


def test_terms_are_checked() -> None:
    with pytest.raises(ValueError):
        Terms(shares=0)
    with pytest.raises(ValueError):
        Terms(reservation=50, limit=20)
    with pytest.raises(ValueError):
        make_policy("lottery")
    assert Terms(limit=250).ceiling == 100 and Terms().ceiling == 100


# ------------------------------------------------------------------------ the simulated host


class Host:
    """Runs a Scheduler's decisions with simulated time."""

    def __init__(self, policy: str, cpus: int, quantum: float = QUANTUM) -> None:
        self.sched = Scheduler(make_policy(policy), cpus, quantum)
        self.now = 0.0
        self.cpu: dict[str, float] = {}
        self.runnable: dict[str, bool] = {}
        self.decisions = 0
        self.efficiency: dict[str, float] = {}  # share of a granted CPU a VM really gets
        self.trace: dict[str, list[tuple[float, float]]] = {}  # (time, cpu) samples

    def add(self, name: str, terms: Terms, runnable: bool = True) -> None:
        self.cpu[name] = 0.0
        self.runnable[name] = runnable
        self.trace[name] = [(self.now, 0.0)]
        self.sched.add(name, terms, self.now, 0.0)

    def run(self, seconds: float, wake: Callable[[Host], None] | None = None,
            max_step: float = math.inf) -> dict[str, float]:
        """Run for ``seconds``; returns the CPU % each VM got over that time."""
        start = dict(self.cpu)
        end = self.now + seconds
        self.sched.update(self.now, self.cpu, self.runnable)
        while self.now < end - 1e-12:
            decision = self.sched.decide(self.now)
            self.decisions += 1
            assert len(decision.run) <= self.sched.cpus
            assert not decision.run & decision.hold
            step = max(min(decision.next_at, end, self.now + max_step) - self.now, 1e-6)
            for name in decision.run:
                if self.runnable[name]:
                    self.cpu[name] += step * self.efficiency.get(name, 1.0)
            self.now += step
            for name in self.cpu:
                self.trace[name].append((self.now, self.cpu[name]))
            if wake is not None:
                wake(self)
            self.sched.update(self.now, self.cpu, self.runnable)
        return {n: (self.cpu[n] - start[n]) / seconds * 100 for n in self.cpu}

    def max_window(self, name: str, window: float = 1.0) -> float:
        """The most CPU (%) ``name`` got in any ``window`` seconds of the run. Its CPU
        time is piecewise linear in time, so the most is found in a window that starts
        or ends at a sample."""
        samples = self.trace[name]
        times = [t for t, _ in samples]

        def cpu_at(t: float) -> float:
            i = bisect.bisect_right(times, t)
            if i == 0:
                return samples[0][1]
            if i == len(samples):
                return samples[-1][1]
            (t0, c0), (t1, c1) = samples[i - 1], samples[i]
            return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1

        best = 0.0
        for t, c in samples:
            if t - window >= times[0]:
                best = max(best, c - cpu_at(t - window))
            if t + window <= times[-1]:
                best = max(best, cpu_at(t + window) - c)
        return best / window * 100


def test_shares_split_one_to_two_to_four() -> None:
    host = Host("shares", cpus=2)
    for i, shares in enumerate([1000, 2000, 4000] * 2):
        host.add(f"v{i}", Terms(shares))
    got = host.run(30.0)
    total = 7 * 2
    for i, shares in enumerate([1, 2, 4] * 2):
        assert got[f"v{i}"] == pytest.approx(200 * shares / total, rel=0.02)


def test_shares_with_a_vm_capped_at_one_cpu() -> None:
    host = Host("shares", cpus=2)
    for name, shares in (("a", 1000), ("b", 2000), ("c", 4000)):
        host.add(name, Terms(shares))
    got = host.run(20.0)
    assert got == pytest.approx({"a": 100 / 3, "b": 200 / 3, "c": 100}, rel=0.02)


def test_a_reservation_is_delivered_under_contention() -> None:
    host = Host("shares", cpus=2)
    host.add("r", Terms(shares=500, reservation=80))
    for name in "bcd":
        host.add(name, Terms(1000))
    got = host.run(20.0)
    assert got["r"] >= 80 * 0.99
    assert got["b"] == pytest.approx(40, rel=0.03)


def test_a_reservation_is_delivered_when_other_vms_use_more_than_measured() -> None:
    """Time the host loses (the CPU a VM is granted but does not get) is made up."""
    host = Host("shares", cpus=1)
    host.add("r", Terms(shares=100, reservation=50))
    host.add("b", Terms(shares=10000))
    host.efficiency["r"] = 0.8  # r gets only 80% of the CPU time it is granted
    got = host.run(10.0)
    assert got["r"] >= 50 * 0.99


def test_a_limit_is_never_exceeded_over_any_second() -> None:
    host = Host("shares", cpus=2)
    host.add("l", Terms(shares=4000, limit=30))
    for name in "bcd":
        host.add(name, Terms(1000))
    got = host.run(20.0)
    assert got["l"] == pytest.approx(30, rel=0.01)
    assert host.max_window("l") <= 30 + 100 * limit_burst(30) + 0.01
    assert host.max_window("l") <= 30 * 1.01 + 0.01


def test_a_limit_holds_without_contention_too() -> None:
    host = Host("shares", cpus=2)
    host.add("l", Terms(limit=25))
    got = host.run(10.0)
    assert got["l"] == pytest.approx(25, rel=0.01)
    assert host.max_window("l") <= 25 * 1.01 + 0.01


def test_idle_vms_hold_no_cpu_and_others_get_it() -> None:
    host = Host("shares", cpus=1)
    host.add("busy", Terms(1000))
    host.add("idle", Terms(100000), runnable=False)
    got = host.run(5.0)
    assert got["busy"] == pytest.approx(100)
    decision = host.sched.decide(host.now)
    assert "idle" in decision.free and "idle" not in decision.hold


def test_a_granted_vm_that_goes_idle_gives_its_cpu_back_at_once() -> None:
    sched = Scheduler(ProportionalShare(), cpus=1)
    sched.add("a", Terms(), 0.0, 0.0)
    sched.add("b", Terms(), 0.0, 0.0)
    first = sched.decide(0.0)
    assert len(first.run) == 1 and first.notify_idle == first.run  # b waits: say when idle
    (holder,) = first.run
    other = "b" if holder == "a" else "a"
    sched.update(0.001, {holder: 0.001}, {holder: False})  # 1 ms into its quantum
    second = sched.decide(0.001)
    assert second.run == {other} and holder in second.free


def test_a_woken_vm_gets_the_next_cpu_but_cannot_bank_idle_time() -> None:
    host = Host("shares", cpus=1)
    host.add("busy", Terms(1000))
    host.add("sleeper", Terms(1000), runnable=False)
    host.run(5.0)  # the sleeper idles for 5 s
    host.runnable["sleeper"] = True
    host.sched.update(host.now, host.cpu, host.runnable)
    decision = host.sched.decide(host.now)
    assert decision.run == {"sleeper"}  # priority for the woken VM...
    got = host.run(4.0)
    assert got["sleeper"] == pytest.approx(50, abs=2)  # ...but no catching up on 5 s


def test_woken_vm_waits_while_its_wake_notification_is_needed() -> None:
    sched = Scheduler(ProportionalShare(), cpus=1)
    sched.add("busy", Terms(), 0.0, 0.0)
    sched.add("idle", Terms(), 0.0, 0.0)
    sched.update(0.0, {}, {"idle": False})
    decision = sched.decide(0.0)
    assert decision.run == {"busy"}
    assert decision.notify_wake == {"idle"}  # no CPU free: it must say when it wakes
    sched2 = Scheduler(ProportionalShare(), cpus=2)
    sched2.add("busy", Terms(), 0.0, 0.0)
    sched2.add("idle", Terms(), 0.0, 0.0)
    sched2.update(0.0, {}, {"idle": False})
    assert sched2.decide(0.0).notify_wake == frozenset()  # a CPU is free


def test_paused_vms_are_held_and_get_nothing() -> None:
    host = Host("shares", cpus=1)
    host.add("a", Terms())
    host.add("b", Terms())
    host.sched.set_paused("b", True)
    got = host.run(2.0)
    assert got["b"] == 0 and got["a"] == pytest.approx(100)
    assert "b" in host.sched.decide(host.now).hold
    host.sched.set_paused("b", False)
    got = host.run(4.0)
    assert got["b"] == pytest.approx(50, abs=2)


def test_urgent_vms_run_first_and_are_never_held() -> None:
    sched = Scheduler(ProportionalShare(), cpus=1)
    for name in "abc":
        sched.add(name, Terms(limit=10 if name == "c" else None), 0.0, 0.0)
    sched.set_urgent("c", True)
    decision = sched.decide(0.0)
    assert decision.run == {"c"}
    sched.update(0.1, {"c": 0.1})  # c is out of tokens: still not held
    assert "c" not in sched.decide(0.1).hold


def test_round_robin_takes_turns() -> None:
    host = Host("round-robin", cpus=1)
    for name, shares in (("a", 500), ("b", 1000), ("c", 8000)):
        host.add(name, Terms(shares))
    order = []
    for _ in range(6):
        decision = host.sched.decide(host.now)
        (name,) = decision.run
        order.append(name)
        host.cpu[name] += QUANTUM
        host.now += QUANTUM
        host.sched.update(host.now, host.cpu, host.runnable)
    assert order[:3] == order[3:] and sorted(order[:3]) == ["a", "b", "c"]
    got = host.run(9.0)
    for name in "abc":
        assert got[name] == pytest.approx(100 / 3, rel=0.02)


def test_round_robin_still_enforces_limits() -> None:
    host = Host("round-robin", cpus=1)
    host.add("a", Terms())
    host.add("l", Terms(limit=20))
    got = host.run(10.0)
    assert got["l"] <= 20 * 1.01
    assert host.max_window("l") <= 20 * 1.01 + 0.01


def test_changing_terms_takes_effect() -> None:
    host = Host("shares", cpus=1)
    host.add("a", Terms(1000))
    host.add("b", Terms(1000))
    assert host.run(4.0)["a"] == pytest.approx(50, abs=2)
    host.sched.set_terms("a", Terms(3000))
    assert host.run(8.0)["a"] == pytest.approx(75, abs=2)
    host.sched.set_terms("a", Terms(3000, limit=10))
    assert host.run(4.0)["a"] == pytest.approx(10, abs=0.5)


def test_a_vm_added_later_starts_level_with_the_others() -> None:
    host = Host("shares", cpus=1)
    host.add("old", Terms())
    host.run(5.0)
    host.add("new", Terms())
    got = host.run(4.0)
    assert got["new"] == pytest.approx(50, abs=3)  # not 100%: no catching up on 5 s


def test_a_vm_that_idles_between_short_bursts_does_not_starve_others() -> None:
    """A VM that runs 1 ms, idles 1 ms, again and again (waking with priority each time)
    still gets only its share."""
    host = Host("shares", cpus=1)
    host.add("busy", Terms(1000))
    host.add("bursty", Terms(1000))
    mark = {"cpu": 0.0, "idle_since": 0.0}

    def toggle(h: Host) -> None:
        if h.runnable["bursty"]:
            if h.cpu["bursty"] - mark["cpu"] >= 0.001:  # ran 1 ms: sleeps
                h.runnable["bursty"] = False
                mark["idle_since"] = h.now
        elif h.now - mark["idle_since"] >= 0.001:  # slept 1 ms: wakes
            h.runnable["bursty"] = True
            mark["cpu"] = h.cpu["bursty"]

    got = host.run(10.0, wake=toggle, max_step=0.0005)
    assert got["bursty"] <= 52
    assert got["busy"] >= 48


def test_starting_a_vm_is_not_charged_to_it() -> None:
    """The daemon runs a starting VM at once (urgent) and charges it from when its guest
    starts (begin): the start-up CPU counts neither against its limit nor its shares."""
    sched = Scheduler(ProportionalShare(), cpus=1)
    sched.add("old", Terms(), 0.0, 0.0)
    sched.add("new", Terms(limit=10), 0.0, 0.0)
    sched.set_urgent("new", True)
    assert sched.decide(0.0).run == {"new"}
    sched.update(1.0, {"old": 0.0, "new": 1.0})  # a whole second of start-up
    sched.set_urgent("new", False)
    sched.begin("new", 1.0, cpu=1.0)
    new, old = sched.accounts["new"], sched.accounts["old"]
    assert new.tokens == pytest.approx(new.burst) and new.vtime == old.vtime  # no debt
    sched.update(1.0, {"new": 1.0, "old": 0.0})
    sched.decide(1.0)
    assert not new.throttled
    host_cpu = {"new": 1.0, "old": 0.0}
    for step in range(1, 200):  # from here on its limit holds
        now = 1.0 + step * 0.005
        decision = sched.decide(now)
        for name in decision.run:
            host_cpu[name] += 0.005
        sched.update(now + 0.005, host_cpu)
    assert host_cpu["new"] - 1.0 == pytest.approx(0.1, abs=0.01)  # 10% of 1 s


def test_entitlements_divide_the_cpu_the_vms_really_get() -> None:
    """Other processes take half of every CPU: the VMs get 100% instead of 200%; the
    limited VM still gets its limit and the reserved one its reservation."""
    host = Host("shares", cpus=2)
    host.add("l", Terms(4000, limit=30))
    host.add("r", Terms(500, reservation=40))
    for name in "bc":
        host.add(name, Terms(1000))
    for name in "lrbc":
        host.efficiency[name] = 0.5
    host.run(5.0)
    got = host.run(20.0)
    assert host.sched.capacity == pytest.approx(100, rel=0.05)
    assert got["l"] == pytest.approx(30, rel=0.03)
    assert got["r"] == pytest.approx(40, rel=0.03)
    assert got["b"] == pytest.approx(15, rel=0.1)
    assert host.max_window("l") <= 30 * 1.01 + 0.01


def test_the_capacity_estimate_returns_to_nominal_without_contention() -> None:
    host = Host("shares", cpus=2)
    for name in "abc":
        host.add(name, Terms())
        host.efficiency[name] = 0.5
    host.run(10.0)
    assert host.sched.capacity == pytest.approx(100, rel=0.05)
    host.runnable["c"] = False  # no more waiting: nothing tells what the host has
    host.run(10.0)
    assert host.sched.capacity == pytest.approx(200, rel=0.01)
