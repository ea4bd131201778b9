"""The CPU backends: the feedback scheduler on a simulated loaded host (outside processes
take their part of the CPUs, as the kernel divides them), and the cgroup backend's files
in a fake cgroup tree."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pyhv.host.cgroups import (
    CFS_PERIOD_US,
    SHARES_RANGE,
    SHARES_STEP,
    CgroupBackend,
    choose_backend,
    correct_shares,
    period_us,
    quota_us,
    v1_shares,
    v2_weight,
)
from pyhv.host.scheduler import ProportionalShare, Scheduler, Terms

STEP = 0.005


def simulate(terms: dict[str, Terms], cpus: int, outside: int, seconds: float,
             start: float = 2.0) -> tuple[dict[str, float], dict[str, list[float]], Scheduler]:
    """Run the scheduler over a host whose kernel divides ``cpus`` CPUs equally among the
    runnable processes (the granted VMs and ``outside`` CPU-bound ones; one CPU at most
    each). Returns each VM's CPU % after ``start`` seconds, the CPU each got per step,
    and the scheduler."""
    sched = Scheduler(ProportionalShare(), cpus)
    now = 0.0
    cpu = dict.fromkeys(terms, 0.0)
    for name, t in terms.items():
        sched.add(name, t, now, 0.0)
        sched.begin(name, now, 0.0)
    sched.update(now, cpu)
    decision = sched.decide(now)
    steps: dict[str, list[float]] = {n: [] for n in terms}
    base: dict[str, float] = {}
    while now < seconds:
        running = [n for n in terms if n in decision.run or n in decision.free]
        each = min(1.0, cpus / max(1, len(running) + outside))
        for name in terms:
            got = each * STEP if name in running else 0.0
            cpu[name] += got
            steps[name].append(got)
        now += STEP
        if now >= start and not base:
            base = dict(cpu)
        sched.update(now, cpu)
        decision = sched.decide(now)
    return ({n: (cpu[n] - base[n]) / (seconds - start) * 100 for n in terms}, steps, sched)


def test_feedback_delivers_a_reservation_with_an_outside_process() -> None:
    # Two CPUs, one outside CPU-bound process: a VM holding a CPU next to another VM gets
    # 2/3 of a CPU; the reservation of 80% is delivered all the same (from capacity the
    # host has: the scheduler learns to run fewer VMs while the reserved one is behind).
    terms = {"rsv": Terms(500, reservation=80), "a": Terms(), "b": Terms(), "c": Terms()}
    got, _, sched = simulate(terms, cpus=2, outside=1, seconds=20)
    assert got["rsv"] >= 80 * 0.98
    assert sched.squeeze == 1
    # the others still run, and share what is left equally
    rest = [got[n] for n in "abc"]
    assert min(rest) > 5
    assert max(rest) / min(rest) < 1.05


def test_without_outside_load_nothing_is_squeezed() -> None:
    terms = {"rsv": Terms(500, reservation=80), "a": Terms(), "b": Terms(), "c": Terms()}
    got, _, sched = simulate(terms, cpus=2, outside=0, seconds=10)
    assert sched.squeeze == 0
    assert got["rsv"] >= 80 * 0.98
    assert sum(got.values()) > 195  # both CPUs busy with VMs


def test_feedback_shares_split_the_capacity_received() -> None:
    terms = {f"s{i}": Terms((1000, 2000, 4000)[i % 3]) for i in range(6)}
    got, _, sched = simulate(terms, cpus=2, outside=1, seconds=20)
    total = sum(got.values())
    assert total < 150  # the outside process took its part
    for i in range(6):
        part = got[f"s{i}"] / total
        assert part == pytest.approx((1, 2, 4)[i % 3] / 14, rel=0.03)
    # the capacity estimate follows what the VMs got, not 200%
    assert sched.capacity == pytest.approx(total, rel=0.1)


def test_feedback_limit_is_a_cap_in_every_window() -> None:
    terms = {"lim": Terms(4000, limit=30), "a": Terms(), "b": Terms(), "c": Terms()}
    got, steps, _ = simulate(terms, cpus=2, outside=1, seconds=12)
    per_second = int(1 / STEP)
    series = steps["lim"][int(2 / STEP):]
    worst = max(sum(series[i:i + per_second]) for i in range(len(series) - per_second))
    assert worst * 100 <= 31.0
    assert got["lim"] > 25  # and it gets its limit: high shares, capacity to spare


def test_squeeze_is_bounded_and_decays() -> None:
    sched = Scheduler(ProportionalShare(), 2)
    sched.add("rsv", Terms(reservation=80), 0.0, 0.0)
    sched.begin("rsv", 0.0, 0.0)
    sched.update(0.0, {"rsv": 0.0})
    sched.decide(0.0)
    cpu = 0.0
    now = 0.0
    for _ in range(200):  # always short, however it is squeezed
        now += 0.05
        cpu += 0.01
        sched.update(now, {"rsv": cpu})
        sched.decide(now)
    assert sched.squeeze == 1  # at most cpus - 1
    for _ in range(400):  # no longer short: back to 0 after a while
        now += 0.05
        cpu += 0.05
        sched.update(now, {"rsv": cpu})
        sched.decide(now)
    assert sched.squeeze == 0


# ------------------------------------------------------------------------ cgroups


def test_term_mapping() -> None:
    assert v1_shares(1000) == 1024 and v1_shares(1) == 2 and v1_shares(10**9) == 262144
    assert v2_weight(1000) == 100 and v2_weight(1) == 1 and v2_weight(10**9) == 10000
    assert quota_us(None) is None
    assert quota_us(30) == 6_000 and quota_us(30, 100_000) == 30_000
    assert quota_us(150) == 30_000  # more than one CPU: for several threads
    # 20 ms periods, longer where the quota would be under the kernel's 1 ms
    assert period_us(None) == period_us(30) == CFS_PERIOD_US == 20_000
    assert period_us(2) == 50_000 and quota_us(2) == 1000
    assert period_us(0.05) == 1_000_000 and quota_us(0.05) == 1000  # (the longest: 0.1%)


def fake_v1(tmp_path: Path) -> Path:
    root = tmp_path / "cpu"
    root.mkdir()
    for f, text in (("cpu.shares", "1024"), ("cgroup.procs", "1\n"),
                    ("cpu.cfs_quota_us", "-1"), ("cpu.cfs_period_us", "100000")):
        (root / f).write_text(text)
    (root / "someone-else").mkdir()
    (root / "someone-else" / "cpu.shares").write_text("777")
    return root


def test_cgroup_v1_writes_and_cleans_up(tmp_path: Path) -> None:
    root = fake_v1(tmp_path)
    backend = CgroupBackend(root / "pyhv-42", 1, cpus=2, real=False)
    group = root / "pyhv-42"
    assert (group / "cpu.shares").read_text() == "2048"  # the VMs weigh as 2 processes
    backend.attach("web", 1234, 2000, 30.0)
    child = group / "vm-web"
    assert (child / "cpu.shares").read_text() == "2048"
    assert (child / "cpu.cfs_period_us").read_text() == str(CFS_PERIOD_US)
    assert (child / "cpu.cfs_quota_us").read_text() == "6000"
    assert (child / "cgroup.procs").read_text() == "1234"
    backend.set_terms("web", 500, None, boost=4.0)
    assert (child / "cpu.shares").read_text() == "2048"  # 500 x 4
    assert (child / "cpu.cfs_quota_us").read_text() == "-1"
    backend.attach("db", 99, 1000, None)
    backend.detach("web")
    assert not child.exists() and (group / "vm-db").exists()
    backend.set_terms("web", 1000, None)  # gone: nothing written
    assert not child.exists()
    backend.close()
    assert not group.exists()
    # never touches what it did not create
    assert (root / "someone-else" / "cpu.shares").read_text() == "777"
    assert (root / "cpu.shares").read_text() == "1024"


def test_cgroup_v2_writes(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    backend = CgroupBackend(root / "pyhv-7", 2, cpus=1, real=False)
    group = root / "pyhv-7"
    assert (group / "cgroup.subtree_control").read_text() == "+cpu"
    assert (group / "cpu.weight").read_text() == "100"
    backend.attach("a", 5, 4000, 50.0)
    assert (group / "vm-a" / "cpu.weight").read_text() == "400"
    assert (group / "vm-a" / "cpu.max").read_text() == f"10000 {CFS_PERIOD_US}"
    backend.set_terms("a", 4000, None)
    assert (group / "vm-a" / "cpu.max").read_text() == f"max {CFS_PERIOD_US}"
    backend.close()
    assert not group.exists()


def test_choose_backend(tmp_path: Path) -> None:
    root = fake_v1(tmp_path)
    mounts = f"cgroup {root} cgroup rw,relatime,cpu 0 0\n"
    auto = choose_backend("auto", "pyhv-1", 2, mounts_text=mounts, proc_cgroup="1:cpu:/\n")
    assert isinstance(auto, CgroupBackend) and auto.version == 1
    assert auto.group == root / "pyhv-1" and "cgroup v1" in auto.reason
    auto.real = False
    auto.close()
    assert not (root / "pyhv-1").exists()

    assert choose_backend("feedback", "x", 2).name == "feedback"
    # nothing usable: auto falls back to feedback and says why; cgroup is an error
    none = choose_backend("auto", "pyhv-1", 2, mounts_text="", proc_cgroup="0::/\n")
    assert none.name == "feedback" and "no cgroup CPU controller" in none.reason
    with pytest.raises(OSError, match="not usable"):
        choose_backend("cgroup", "pyhv-1", 2, mounts_text="", proc_cgroup="")
    # a v2 hierarchy without the cpu controller (as this kind of host mounts it)
    v2 = tmp_path / "unified"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("hugetlb\n")
    fb = choose_backend("auto", "pyhv-1", 2, mounts_text=f"cgroup2 {v2} cgroup2 rw 0 0\n",
                        proc_cgroup="0::/\n")
    assert fb.name == "feedback" and "cpu controller is not available" in fb.reason
    with pytest.raises(ValueError, match="unknown CPU backend"):
        choose_backend("kvm", "x", 1)


def kernel_split(tree: Path, names: list[str], bias: dict[str, float], total: float,
                 rng: random.Random) -> dict[str, float]:
    """What a kernel that is off gives each VM (CPU %): in proportion to the weight
    written in its group times its ``bias``, with some noise, ``total`` in all."""
    w = {n: int((tree / f"vm-{n}" / "cpu.shares").read_text()) * bias[n]
         * rng.uniform(0.95, 1.05) for n in names}
    return {n: total * w[n] / sum(w.values()) for n in names}


def run_split(backend: CgroupBackend, shares: dict[str, int], bias: dict[str, float],
              factors: dict[str, float], seconds: float, rng: random.Random
              ) -> tuple[dict[str, float], dict[str, float], float]:
    """Every 0.25 s: the kernel divides, the daemon measures (smoothed) and corrects.
    Returns each VM's CPU over the last 20 s, the factors, and the largest step seen."""
    names = list(shares)
    smoothed: dict[str, float] = {}
    got = dict.fromkeys(names, 0.0)
    steps = int(seconds / 0.25)
    biggest = 1.0
    for i in range(steps):
        rates = kernel_split(backend.group, names, bias, 133.3, rng)
        for n in names:
            smoothed[n] = rates[n] if n not in smoothed else smoothed[n] + 0.3 * (
                rates[n] - smoothed[n])
            if i >= steps - 80:
                got[n] += rates[n] / 80
        new = correct_shares(factors, smoothed, {n: float(shares[n]) for n in names})
        biggest = max([biggest] + [max(new[n] / factors.get(n, 1.0),
                                       factors.get(n, 1.0) / new[n]) for n in new])
        factors = new
        for n in names:
            backend.set_weight(n, shares[n], factors[n])
    return got, factors, biggest


def test_cgroup_shares_split_is_corrected(tmp_path: Path) -> None:
    # The kernel gives the 1000-share VMs 20% less than their weights say (as measured
    # with an outside process): the correction brings every part within 2%, in bounded
    # steps, without touching the limits; when the kernel is right again the factors
    # go back to 1.
    root = fake_v1(tmp_path)
    backend = CgroupBackend(root / "pyhv-1", 1, cpus=2, real=False)
    shares = {f"s{i}": (1000, 2000, 4000)[i % 3] for i in range(6)}
    for i, (n, s) in enumerate(shares.items()):
        backend.attach(n, 100 + i, s, 90.0 if n == "s2" else None)
    bias = {n: 0.8 if s == 1000 else 1.05 for n, s in shares.items()}
    rng = random.Random(1)
    factors: dict[str, float] = {}

    def worst(got: dict[str, float]) -> float:
        total = sum(got.values())
        return max(abs(got[n] / total / (s / 14000) - 1) for n, s in shares.items())

    got_plain = kernel_split(backend.group, list(shares), bias, 133.3, random.Random(2))
    assert worst(got_plain) > 0.1  # uncorrected: the 1000-share VMs are 15% short

    got, factors, biggest = run_split(backend, shares, bias, factors, 30, rng)
    assert worst(got) < 0.02
    assert biggest <= SHARES_STEP ** 2 + 1e-9  # a step, then the centring
    assert all(1 / SHARES_RANGE <= f <= SHARES_RANGE for f in factors.values())
    assert factors["s0"] > factors["s1"]  # the short-changed VMs weigh more
    # the limit was written once and left alone
    assert (root / "pyhv-1" / "vm-s2" / "cpu.cfs_quota_us").read_text() == "18000"  # 90% of 20 ms

    # the kernel is right again: back to the plain shares
    got, factors, _ = run_split(backend, shares, dict.fromkeys(shares, 1.0), factors, 30,
                                rng)
    assert worst(got) < 0.02
    assert all(abs(f - 1) < 0.03 for f in factors.values())
    backend.close()


def test_shares_correction_is_bounded_and_decays() -> None:
    # a VM that gets nothing whatever its weight: raised step by step, up to the range
    factors: dict[str, float] = {}
    for _ in range(100):
        new = correct_shares(factors, {"a": 100.0, "b": 0.0}, {"a": 50.0, "b": 50.0})
        assert all(new[n] / factors.get(n, 1.0) <= SHARES_STEP ** 2 + 1e-9 for n in new)
        factors = new
    assert factors["b"] == SHARES_RANGE and factors["a"] == 1 / SHARES_RANGE
    # it stops contending (idle): both drift back to 1
    for _ in range(30):
        factors = correct_shares(factors, {"a": 100.0}, {"a": 50.0})
    assert factors == {"a": 1.0, "b": 1.0}
