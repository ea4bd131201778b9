"""CPU backends of the host daemon: who enforces the VMs' shares and limits.

* ``feedback`` (:class:`FeedbackBackend`): the daemon's own scheduler
  (:mod:`pyhv.host.scheduler`) grants the CPUs with SIGSTOP/SIGCONT quanta, measures what
  each VM process really got (its CPU clock) and what the VMs together got, and divides
  that: reservations first, then shares over the rest, limits as caps (token buckets).
  Works everywhere.
* ``cgroup`` (:class:`CgroupBackend`): the kernel's CPU controller, as libvirt uses it
  for KVM. The daemon creates one group of its own (``pyhv-<daemon pid>``, beside the
  group it runs in) and a child group per running VM, moves the VM process in, and
  writes the terms: shares to ``cpu.shares`` (v1, 1000 shares = 1024, the weight of an
  ordinary process) or ``cpu.weight`` (v2, 1000 shares = 100), limits to
  ``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (v1) or ``cpu.max`` (v2). The VM processes
  then run freely (no SIGSTOP quanta). The daemon's group weighs as much as ``cpus``
  ordinary processes, so that the VMs together compete with the host's other processes
  as ``cpus`` of them would. A reservation is not a kernel term: admission keeps the
  reservations within the host, and the daemon raises a reserved VM's weight
  (bounded, multiplicative steps) while it gets less than its reservation. CFS does
  not divide sibling groups across CPUs exactly in proportion to their weights, so the
  daemon also corrects the shares split (:func:`correct_shares`): each contending VM's
  part of what the VMs got together is compared with its part of their entitlements,
  and its weight is moved by a bounded factor until they agree.

Only groups this daemon created are written or removed; they are removed when their VM
stops and when the daemon exits. :func:`choose_backend` picks one per host (``auto``: the
kernel's where a writable CPU controller is found, else feedback) and says why.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: The period of the CFS bandwidth controller (microseconds) a limit is enforced over:
#: short, so that over any 1-second window a VM gets at most its limit plus one period's
#: quota (0.6 points at 30% with 20 ms; 100 ms, the kernel's default, allowed 3).
CFS_PERIOD_US = 20_000
MAX_PERIOD_US = 1_000_000  # the kernel's largest period (a limit under 5% needs longer)
MIN_QUOTA_US = 1000  # the kernel's minimum quota
BACKENDS = ("auto", "feedback", "cgroup")
#: How far (a factor) the daemon may raise a reserved VM's weight to deliver its reservation.
MAX_BOOST = 64.0
BOOST_UP = 1.25  # factor per step while a reserved VM gets less than its reservation
BOOST_DOWN = 1.1  # factor per step once it gets comfortably more
#: The shares correction: how far (a factor either way) a VM's weight may be moved from
#: its shares, the most it moves per step (0.25 s), how much of the measured error one
#: step corrects (as an exponent), the error it leaves alone, and how fast a factor goes
#: back to 1 while the split is in line (or the VM does not contend).
SHARES_RANGE = 4.0
SHARES_STEP = 1.1
SHARES_GAIN = 0.5
SHARES_TOLERANCE = 0.005
SHARES_DECAY = 1.002


def v1_shares(shares: int) -> int:
    """cpu.shares (v1) for ESXi shares: 1000 (normal) is 1024, the kernel's default."""
    return max(2, min(262144, round(shares * 1024 / 1000)))


def v2_weight(shares: int) -> int:
    """cpu.weight (v2) for ESXi shares: 1000 (normal) is 100, the kernel's default."""
    return max(1, min(10000, round(shares / 10)))


def period_us(limit: float | None) -> int:
    """The CFS period for a limit: :data:`CFS_PERIOD_US`, longer for a limit whose quota
    would be under the kernel's minimum (1 ms) in it."""
    if limit is None or limit <= 0:
        return CFS_PERIOD_US
    need = math.ceil(MIN_QUOTA_US * 100 / limit)
    return min(MAX_PERIOD_US, max(CFS_PERIOD_US, need))


def quota_us(limit: float | None, period: int | None = None) -> int | None:
    """CFS quota (microseconds per ``period``, by default :func:`period_us`'s) of a limit
    in percent of one CPU."""
    if limit is None:
        return None
    if period is None:
        period = period_us(limit)
    return max(MIN_QUOTA_US, round(limit / 100 * period))


class CpuBackend:
    """The feedback backend's interface (and its implementation: nothing to do)."""

    name = "feedback"
    #: whether the daemon grants CPUs with SIGSTOP/SIGCONT quanta
    quanta = True

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    def attach(self, vm: str, pid: int, shares: int, limit: float | None) -> None:
        """A VM process started (or its terms are new)."""

    def set_terms(self, vm: str, shares: int, limit: float | None, boost: float = 1.0) -> None:
        """New terms for a running VM (``boost``: a factor on its weight)."""

    def set_weight(self, vm: str, shares: int, boost: float = 1.0) -> None:
        """Only the weight of a running VM (its limit untouched)."""

    def detach(self, vm: str) -> None:
        """The VM process has gone."""

    def close(self) -> None:
        """The daemon stops: undo what was set up."""


FeedbackBackend = CpuBackend


@dataclass
class CgroupBackend(CpuBackend):
    """The kernel's CPU controller (module docstring). ``group``: the directory of the
    daemon's own group (created here); ``version``: 1 or 2; ``cpus``: how many ordinary
    processes the VMs together weigh as."""

    group: Path
    version: int
    cpus: int = 1
    reason: str = ""
    children: dict[str, Path] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)  # the weight last written
    real: bool = True  # False: a fake tree of plain files (tests)
    name = "cgroup"
    quanta = False

    def __post_init__(self) -> None:
        self.group.mkdir()
        try:
            if self.version == 2:
                self._write(self.group / "cgroup.subtree_control", "+cpu")
                self._write(self.group / "cpu.weight", str(v2_weight(1000 * self.cpus)))
            else:
                self._write(self.group / "cpu.shares", str(v1_shares(1000 * self.cpus)))
        except OSError:
            self.group.rmdir()
            raise

    @staticmethod
    def _write(path: Path, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    def _child(self, vm: str) -> Path:
        return self.group / f"vm-{vm}"

    def attach(self, vm: str, pid: int, shares: int, limit: float | None) -> None:
        child = self._child(vm)
        if vm not in self.children:
            with contextlib.suppress(FileExistsError):
                child.mkdir()
            self.children[vm] = child
        self.set_terms(vm, shares, limit)
        self._write(child / "cgroup.procs", str(pid))

    def _weight(self, shares: int, boost: float) -> tuple[str, str]:
        weighted = max(1, round(shares * boost))
        if self.version == 2:
            return "cpu.weight", str(v2_weight(weighted))
        return "cpu.shares", str(v1_shares(weighted))

    def set_terms(self, vm: str, shares: int, limit: float | None, boost: float = 1.0) -> None:
        child = self.children.get(vm)
        if child is None:
            return
        period = period_us(limit)
        quota = quota_us(limit, period)
        file, value = self._weight(shares, boost)
        self._write(child / file, value)
        self.weights[vm] = value
        if self.version == 2:
            self._write(child / "cpu.max", f"{'max' if quota is None else quota} {period}")
        else:
            self._write(child / "cpu.cfs_quota_us", "-1")  # (a period shorter than the
            self._write(child / "cpu.cfs_period_us", str(period))  # quota is refused)
            if quota is not None:
                self._write(child / "cpu.cfs_quota_us", str(quota))

    def set_weight(self, vm: str, shares: int, boost: float = 1.0) -> None:
        """Only the weight, and only when it changes (the quota is not rewritten: that
        would restart the group's bandwidth period)."""
        child = self.children.get(vm)
        if child is None:
            return
        file, value = self._weight(shares, boost)
        if self.weights.get(vm) != value:
            self._write(child / file, value)
            self.weights[vm] = value

    def detach(self, vm: str) -> None:
        self.weights.pop(vm, None)
        child = self.children.pop(vm, None)
        if child is not None:
            _remove_group(child, self.real)

    def close(self) -> None:
        for vm in list(self.children):
            self.detach(vm)
        _remove_group(self.group, self.real)


def correct_shares(
    factors: dict[str, float], received: dict[str, float], targets: dict[str, float]
) -> dict[str, float]:
    """One step of the shares correction: the new weight factor of every VM in
    ``factors`` (VMs that are not there start at 1).

    ``received``: what each VM that contends for CPU by its shares got (smoothed CPU %);
    ``targets``: what it is entitled to. Among those VMs (two at least), one whose part of
    what they got together is off its part of their entitlements by more than
    ``SHARES_TOLERANCE`` has its factor multiplied by ``(target part / part) **
    SHARES_GAIN``, at most ``SHARES_STEP`` either way; one in line drifts back towards 1
    by ``SHARES_DECAY``, and so, by ``SHARES_STEP``, does every VM that does not contend.
    The factors are then centred (only the ratios of sibling weights count) and kept
    within ``1 / SHARES_RANGE`` .. ``SHARES_RANGE``."""
    names = [n for n in received if targets.get(n, 0.0) > 0]
    total_r = sum(received[n] for n in names)
    total_t = sum(targets[n] for n in names)
    contending = set(names) if len(names) >= 2 and total_r > 0 else set()
    new: dict[str, float] = {}
    for name in set(factors) | contending:
        f = factors.get(name, 1.0)
        if name in contending:
            part = received[name] / total_r
            want = targets[name] / total_t
            if part <= 0:
                f *= SHARES_STEP
            elif abs(part / want - 1) > SHARES_TOLERANCE:
                f *= min(SHARES_STEP, max(1 / SHARES_STEP, (want / part) ** SHARES_GAIN))
            else:
                f = _towards_one(f, SHARES_DECAY)
        else:
            f = _towards_one(f, SHARES_STEP)
        new[name] = f
    if contending:
        mean = 1.0
        for name in contending:
            mean *= new[name]
        mean **= 1 / len(contending)
        for name in contending:
            new[name] /= mean
    return {n: min(SHARES_RANGE, max(1 / SHARES_RANGE, f)) for n, f in new.items()}


def _towards_one(f: float, step: float) -> float:
    return max(1.0, f / step) if f > 1 else min(1.0, f * step)


def _remove_group(path: Path, real: bool = True) -> None:
    """Remove a group of ours; processes still in it (a VM process that outlived its
    daemon) are moved to the parent group first. (``real`` False: a plain directory
    standing for one, in the tests: its files go with it.)"""
    if not real:
        shutil.rmtree(path, ignore_errors=True)
        return
    for _ in range(3):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                return
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError), open(path.parent / "cgroup.procs",
                                                        "w") as f:
                    f.write(pid)


# ------------------------------------------------------------------------ detection


def _own_groups(proc_cgroup: str) -> dict[str, str]:
    """controller (or "" for v2) -> this process's group path, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            groups[""] = path
        for c in controllers.split(","):
            if c:
                groups[c] = path
    return groups


def _mounts(mounts_text: str) -> list[tuple[str, str, set[str]]]:
    """(fstype, mount point, options) of the cgroup mounts, from /proc/self/mounts."""
    found = []
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
            found.append((parts[2], parts[1], set(parts[3].split(","))))
    return found


def candidate_dirs(mounts_text: str, proc_cgroup: str) -> list[tuple[int, Path]]:
    """Where a group of ours could go: (version, the directory of the group this process
    is in) for v1's ``cpu`` hierarchy and for cgroup v2 with the cpu controller."""
    groups = _own_groups(proc_cgroup)
    found: list[tuple[int, Path]] = []
    for fstype, point, options in _mounts(mounts_text):
        if fstype == "cgroup" and "cpu" in options and "cpu" in groups:
            found.append((1, Path(point) / groups["cpu"].lstrip("/")))
        elif fstype == "cgroup2" and "" in groups:
            found.append((2, Path(point) / groups[""].lstrip("/")))
    return found


def choose_backend(
    wanted: str,
    name: str,
    cpus: int,
    *,
    mounts_text: str | None = None,
    proc_cgroup: str | None = None,
) -> CpuBackend:
    """The CPU backend for ``wanted`` ("auto", "feedback" or "cgroup"), with the reason
    it was chosen. ``name``: the daemon's group's name (``pyhv-<pid>``). "cgroup" that
    cannot be had raises :class:`OSError` saying why; "auto" then falls back to feedback."""
    if wanted not in BACKENDS:
        raise ValueError(f"unknown CPU backend {wanted!r} (choose from: {', '.join(BACKENDS)})")
    if wanted == "feedback":
        return CpuBackend("asked for (--cpu-backend feedback)")
    if mounts_text is None:
        mounts_text = _read("/proc/self/mounts")
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup")
    tried: list[str] = []
    for version, base in candidate_dirs(mounts_text, proc_cgroup):
        why = _unusable(version, base)
        if why:
            tried.append(f"v{version} {base}: {why}")
            continue
        try:
            backend = CgroupBackend(base / name, version, cpus)
        except OSError as exc:
            tried.append(f"v{version} {base}: {exc.strerror or exc}")
            continue
        backend.reason = (f"{'asked for' if wanted == 'cgroup' else 'auto'}: cgroup v{version} "
                          f"CPU controller writable, group {backend.group}")
        return backend
    why = "; ".join(tried) if tried else "no cgroup CPU controller mounted"
    if wanted == "cgroup":
        raise OSError(errno.EPERM, f"the kernel's CPU controller is not usable here ({why})")
    return CpuBackend(f"auto: no writable cgroup CPU controller ({why})")


def _unusable(version: int, base: Path) -> str:
    if not base.is_dir():
        return "no such group directory"
    if version == 2:
        try:
            controllers = (base / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return exc.strerror or str(exc)
        if "cpu" not in controllers:
            return "the cpu controller is not available in this cgroup v2 hierarchy"
        if _has_procs(base) and not _is_root(base):
            # v2's no-internal-process rule: a group with processes (other than the
            # root) cannot enable controllers for children
            return "our group has processes (cgroup v2 cannot delegate below it)"
    else:
        if not (base / "cpu.shares").exists():
            return "no cpu.shares"
    if not os.access(base, os.W_OK):
        return "not writable"
    return ""


def _has_procs(base: Path) -> bool:
    try:
        return bool((base / "cgroup.procs").read_text().split())
    except OSError:
        return True


def _is_root(base: Path) -> bool:
    return not (base / "cgroup.type").exists()


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
