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
  (bounded, multiplicative steps) while it gets less than its reservation.

Only groups this daemon created are written or removed; they are removed when their VM
stops and when the daemon exits. :func:`choose_backend` picks one per host (``auto``: the
kernel's where a writable CPU controller is found, else feedback) and says why.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

#: The period of the CFS bandwidth controller (microseconds) a limit is enforced over.
CFS_PERIOD_US = 100_000
MIN_QUOTA_US = 1000  # the kernel's minimum quota
BACKENDS = ("auto", "feedback", "cgroup")
#: How far (a factor) the daemon may raise a reserved VM's weight to deliver its reservation.
MAX_BOOST = 64.0
BOOST_UP = 1.25  # factor per step while a reserved VM gets less than its reservation
BOOST_DOWN = 1.1  # factor per step once it gets comfortably more


def v1_shares(shares: int) -> int:
    """cpu.shares (v1) for ESXi shares: 1000 (normal) is 1024, the kernel's default."""
    return max(2, min(262144, round(shares * 1024 / 1000)))


def v2_weight(shares: int) -> int:
    """cpu.weight (v2) for ESXi shares: 1000 (normal) is 100, the kernel's default."""
    return max(1, min(10000, round(shares / 10)))


def quota_us(limit: float | None, period: int = CFS_PERIOD_US) -> int | None:
    """CFS quota (microseconds per ``period``) of a limit in percent of one CPU."""
    if limit is None:
        return None
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

    def set_terms(self, vm: str, shares: int, limit: float | None, boost: float = 1.0) -> None:
        child = self.children.get(vm)
        if child is None:
            return
        weighted = max(1, round(shares * boost))
        quota = quota_us(limit)
        if self.version == 2:
            self._write(child / "cpu.weight", str(v2_weight(weighted)))
            self._write(child / "cpu.max",
                        f"{'max' if quota is None else quota} {CFS_PERIOD_US}")
        else:
            self._write(child / "cpu.shares", str(v1_shares(weighted)))
            self._write(child / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            self._write(child / "cpu.cfs_quota_us", str(-1 if quota is None else quota))

    def detach(self, vm: str) -> None:
        child = self.children.pop(vm, None)
        if child is not None:
            _remove_group(child, self.real)

    def close(self) -> None:
        for vm in list(self.children):
            self.detach(vm)
        _remove_group(self.group, self.real)


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
