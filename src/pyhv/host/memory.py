"""Memory terms when the host is short of memory: who keeps how much, and the balloon
targets that take the rest back (ESXi's shares, reservation, limit and idle-memory tax).

Each VM has a size (its RAM), ``memory.shares``, ``memory.reservation`` and
``memory.limit`` (:class:`~pyhv.host.definition.MemoryTerms`); the host has a budget, the
memory its VMs may hold together (host.toml ``memory``, default the host's RAM). A VM's
*held* memory is its guest RAM resident in host memory; its *active* memory is what the
guest touched in the last sampling window (the host's accessed bits, through
``/proc/self/clear_refs`` and ``smaps``: the way ESXi samples a VM's working set).

What the daemon does, every second (:class:`MemoryManager`):

* A VM above its ``memory.limit`` is ballooned down to it, whatever the host has.
* When the VMs could want more than the budget (their limits add up to more) and what
  they hold reaches :data:`HIGH_WATER` of it, memory is *short*: every VM with a balloon
  is entitled to ``E = clamp(tax * active + c * shares, floor, limit)``, ``c`` chosen so
  the entitlements fill the budget (what VMs without a balloon hold cannot be taken back
  and is counted at their full size), and as ESXi does, a VM's balloon takes what it
  holds above ``E`` (what it holds, not its size: a guest that never touched part of
  its RAM gives nothing for it), and gives back, a step at a time, to one that holds
  less. With no tax, memory is split in proportion to shares; the tax (default 0.75,
  ESXi's) keeps most of a VM's active memory with it, so idle memory is taken first:
  ESXi's ``rho = shares / (pages * (f + k (1 - f)))``, ``k = 1 / (1 - tax)``, equal for
  all VMs, gives the same split. ``floor`` is the reservation (never taken back) and at
  least :data:`MIN_KEEP`, so a guest keeps enough to run.
* Memory stops being short when the VMs hold less than :data:`LOW_WATER` of the budget
  (the balloons are then let go by :data:`RELEASE_STEP` a second, so guests that take
  memory back bring the pressure back gently, not all at once), or when their limits
  fit in it (let go at once). In between, the balloons stay as they are.

Admission (:func:`~pyhv.host.registry.check_admission`) refuses a VM whose reservation
cannot be held beside the running VMs' reservations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MiB = 1 << 20
HIGH_WATER = 0.95  # memory is short once the VMs hold this part of the budget...
LOW_WATER = 0.80  # ...and no longer once they hold less than this part
MIN_KEEP = 48 * MiB  # the least a ballooned guest keeps (a Linux guest runs in it)
STEP = MiB  # entitlements are whole MiB (as balloon targets are)
RELEASE_STEP = 16 * MiB  # a balloon is let go by at most this much a second
SLACK = 2 * MiB  # what a VM may hold above its entitlement before its balloon grows
QUIET_TICKS = 2  # a balloon just changed is judged again after this many ticks (what the
# VM holds is sampled once a second, after the guest has moved its balloon)
DEFAULT_IDLE_TAX = 0.75


@dataclass(frozen=True)
class MemoryView:
    """One running VM as the memory manager sees it (bytes)."""

    name: str
    size: int
    shares: int
    reservation: int = 0
    limit: int | None = None  # None: its size
    held: int = 0  # guest RAM resident in host memory
    active: int = 0  # guest RAM touched in the last sampling window
    balloon: bool = True  # a balloon the host can set (else nothing can be taken back)
    asked: int = 0  # a balloon target set by hand (pyhv set --balloon): kept as a floor
    ballooned: int = 0  # what its balloon holds now (the guest driver's figure)

    @property
    def most(self) -> int:
        return self.size if self.limit is None else min(self.limit, self.size)

    @property
    def floor(self) -> int:
        return min(self.most, max(self.reservation, MIN_KEEP))


def entitlements(vms: Iterable[MemoryView], budget: int,
                 tax: float = DEFAULT_IDLE_TAX) -> dict[str, int]:
    """The memory each VM is entitled to when ``budget`` bytes are shared among ``vms``:
    ``clamp(tax * active + c * shares, floor, most)`` with the ``c`` that fills the budget
    (every VM its ``most`` when they fit; every VM its floor when not even those do)."""
    vms = list(vms)
    if not vms:
        return {}
    if sum(v.most for v in vms) <= budget:
        return {v.name: v.most for v in vms}

    def share(v: MemoryView, c: float) -> int:
        return int(min(v.most, max(v.floor, tax * v.active + c * v.shares)))

    lo, hi = 0.0, max(v.most / v.shares for v in vms)
    for _ in range(64):  # bisection on c: the total is monotone in it
        mid = (lo + hi) / 2
        if sum(share(v, mid) for v in vms) > budget:
            hi = mid
        else:
            lo = mid
    return {v.name: share(v, lo) // STEP * STEP for v in vms}


class MemoryManager:
    """The daemon's memory controller: :meth:`targets`, called once a second, gives each
    VM's balloon target (bytes the balloon should hold) from what the VMs hold now; see
    the module docstring. ``short`` tells whether memory is being reclaimed."""

    def __init__(self, budget: int, tax: float = DEFAULT_IDLE_TAX) -> None:
        self.budget = budget
        self.tax = tax
        self.short = False
        self.entitled: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._quiet: dict[str, int] = {}  # ticks before a changed balloon is judged again

    def targets(self, vms: Iterable[MemoryView]) -> dict[str, int]:
        vms = list(vms)
        reclaimable = [v for v in vms if v.balloon]
        fixed = sum(v.size for v in vms if not v.balloon)
        held = sum(v.held for v in vms)
        could_want = fixed + sum(v.most for v in reclaimable)
        floor = {v.name: max(v.size - v.most, v.asked, 0) for v in reclaimable}
        last = {v.name: self._last.get(v.name, v.ballooned) for v in reclaimable}
        if could_want <= self.budget:
            self.short = False
            self.entitled = {v.name: v.most for v in reclaimable}
            out = floor
        elif held >= HIGH_WATER * self.budget or (self.short and held >= LOW_WATER
                                                  * self.budget):
            self.short = True
            self.entitled = entitlements(reclaimable, max(0, self.budget - fixed), self.tax)
            out = {}
            for v in reclaimable:
                target = last[v.name]
                if self._quiet.get(v.name, 0) <= 0:
                    target = self._toward(v, self.entitled[v.name], target, floor[v.name])
                out[v.name] = max(target, floor[v.name])
        else:
            # Not short (or no longer): the balloons are let go step by step, so guests
            # that take their memory back bring the pressure back gently.
            self.short = False
            self.entitled = {v.name: v.most for v in reclaimable}
            release = held < LOW_WATER * self.budget
            out = {v.name: max(floor[v.name], last[v.name] - (RELEASE_STEP if release else 0))
                   for v in reclaimable}
        for name, target in out.items():
            if target != last[name]:
                self._quiet[name] = QUIET_TICKS
            else:
                self._quiet[name] = self._quiet.get(name, 0) - 1
        self._last = out
        return out

    @staticmethod
    def _toward(v: MemoryView, entitled: int, last: int, floor: int) -> int:
        """The balloon that brings what ``v`` holds to ``entitled``: the excess it holds
        is taken (more next time if the guest gave pages it had never touched), a VM
        below its entitlement gets memory back a step at a time. A balloon still moving
        to the last target keeps it (what the VM holds lags behind)."""
        if abs(v.ballooned - last) >= SLACK:
            target = last
        elif v.held > entitled + SLACK:
            target = v.ballooned + (v.held - entitled)
        elif v.held < entitled - SLACK:
            target = v.ballooned - min(entitled - v.held, RELEASE_STEP)
        else:
            target = last
        target = target // STEP * STEP
        return max(floor, min(target, v.size - v.floor))
