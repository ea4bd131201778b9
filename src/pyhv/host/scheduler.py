"""The CPU scheduler: which VM processes hold the host's CPUs, and until when.

The terms are ESXi's (DESIGN.md, "Scheduling terms"): per VM, ``shares`` (weight under
contention), ``reservation`` (CPU guaranteed whenever the VM is runnable) and ``limit``
(CPU never exceeded), both in percent of one host CPU. The host has ``cpus`` CPUs.

Two layers, both pure bookkeeping over time (no processes, no clock of their own: every
call is given ``now``), so the tests drive them with simulated time:

* a :class:`Policy` says what each runnable VM is *entitled* to (:meth:`Policy.entitlements`)
  and who goes first when there are more runnable VMs than CPUs (:meth:`Policy.key`).
  :class:`ProportionalShare` (``"shares"``) is ESXi's: reservations are floors, limits
  ceilings, and the rest of the host is divided in proportion to shares (a "water fill"),
  delivered by weighted fair queueing on virtual time. :class:`RoundRobin`
  (``"round-robin"``) gives the runnable VMs equal turns and ignores shares and
  reservations (limits still hold: they are enforced below the policy).
* the :class:`Scheduler` keeps one :class:`Account` per VM. It is fed what was measured
  (CPU seconds each VM process has used, whether it is runnable or idle: all vCPUs in
  WFI) and answers with a :class:`Decision`: the VMs that hold a CPU now (at most
  ``cpus`` of them), the idle ones left free to wake up on their own, the ones to keep
  stopped, and when to decide again. The daemon applies it with SIGCONT/SIGSTOP.

How the promises are kept:

* **Shares**: each VM's virtual time advances by the CPU it used divided by its
  entitlement; the VMs with the least virtual time run next, for a quantum (20 ms). Usage
  is what the process really consumed (charged after the fact), so time lost to other
  processes or to a VM that gave its slice back is made up in later quanta and the split
  converges on the entitlements.
* **Reservation**: the entitlement is at least the reservation; on top of that a VM that
  has fallen behind its reservation (a credit of ``reservation x time`` minus use, reset
  while it idles: a reservation cannot be banked) goes before everything but stopping
  VMs.
* **Limit**: a token bucket per limited VM, refilled at the limit and at most
  ``burst`` deep (a few ms: 1% of a second at the limit). A VM runs only with tokens, and
  its grant ends when they would run out, so over any window ``W`` it gets at most
  ``limit x W + burst`` (plus the daemon's reaction time).
* **Capacity**: entitlements divide what the VMs really get while they contend (an
  average over 2 s of the CPU they used), not ``100 x cpus``: when other processes of
  the host take CPU, a limited VM still gets its limit and a reserved VM its
  reservation, and the others share what is left (as ESXi divides what it has left
  for VMs).
* **Reservation under outside load**: the kernel divides a CPU among the processes
  that want it, pyhv's or not, so a reserved VM that holds a CPU next to an outside
  CPU-bound process may get less than its reservation (two VMs and one outside process
  on two CPUs: two thirds of a CPU each). When a reserved VM falls behind its
  reservation *while it holds a CPU*, the scheduler learns that the host is loaded
  (:attr:`Scheduler.squeeze`, a bounded correction: one CPU more each time it is
  still short while squeezed, at most every 0.5 s; one less after 5 s in which no VM
  holding a CPU got less than 90% of it) and, while a reserved VM is behind, grants
  ``cpus - squeeze`` CPUs only (at least one per reserved VM that is behind): fewer
  runnable processes, so the kernel gives the reserved VM a CPU of its own until it has
  caught up. The other VMs run again as soon as it has: a duty cycle the reservation
  credit settles.
* **Idle**: a VM whose vCPUs all wait (WFI) is not runnable and holds no CPU; it gives a
  granted slice back at once (the daemon hears it from the VM process) and is left free,
  so a timer or console input wakes it without the daemon. A woken VM whose virtual time
  is not ahead of the others gets the next CPU (preempting the VM furthest ahead), which
  keeps interactive latency low; it cannot bank CPU by idling because its virtual time is
  brought up to the others' (minus one quantum) when it wakes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

QUANTUM = 0.020  # seconds a grant lasts when others wait
IDLE_TICK = 0.25  # decide at least this often (for accounting) when nothing contends
#: One VM process runs all its vCPUs on one host thread: it can use at most one CPU.
MAX_VM_CPU = 100.0
RESERVATION_SLACK = 0.002  # CPU seconds behind its reservation before a VM jumps the queue
RESERVATION_BURST = 0.050  # how far ahead or behind its reservation a VM may be
MIN_RUN = 0.0002  # a limited VM with fewer tokens than this (CPU seconds) stops
MIN_WEIGHT = 0.1  # percent: the weight of a VM entitled to nothing (it runs only on spare CPU)
CAPACITY_TAU = 2.0  # seconds over which the CPU the VMs really get is averaged
MIN_CAPACITY = 0.1  # the estimate never goes below this part of the nominal capacity
SHORT_MARGIN = 0.98  # a granted reserved VM that got less than this x its reservation is short
SQUEEZE_UP = 0.5  # seconds between two increases of the squeeze
SQUEEZE_DOWN = 5.0  # seconds without a shortfall before the squeeze decreases
LOADED_SPEED = 0.9  # a VM holding a CPU that gets less than this part of it: host loaded
MIN_SHORT_DT = 0.005  # intervals shorter than this (seconds) say nothing about shortfalls


def limit_burst(limit: float) -> float:
    """Depth of a limited VM's token bucket, in CPU seconds: 1% of one second at the limit
    (so no 1-second window sees more than 1.01 x limit), between 1 and 5 ms."""
    return min(max(limit / 100 * 0.01, 0.001), 0.005)


@dataclass(frozen=True)
class Terms:
    """The CPU terms of one VM: ``shares`` (> 0), ``reservation`` and ``limit`` in percent
    of one host CPU (``limit`` None: unlimited)."""

    shares: int = 1000
    reservation: float = 0.0
    limit: float | None = None

    def __post_init__(self) -> None:
        if self.shares <= 0:
            raise ValueError(f"shares {self.shares} must be positive")
        if self.reservation < 0:
            raise ValueError(f"reservation {self.reservation} is negative")
        if self.limit is not None and self.limit < self.reservation:
            raise ValueError(f"limit {self.limit} is below the reservation {self.reservation}")

    @property
    def ceiling(self) -> float:
        """The most this VM can be given: its limit, and one host CPU."""
        return MAX_VM_CPU if self.limit is None else min(self.limit, MAX_VM_CPU)


@dataclass(frozen=True)
class Demand:
    """What a policy knows of one VM: its terms and whether it wants CPU now."""

    id: str
    terms: Terms
    runnable: bool = True


# ------------------------------------------------------------------------ the water fill


def water_fill(
    items: Sequence[tuple[str, float, float, float]], capacity: float
) -> dict[str, float]:
    """Divide ``capacity`` among ``(id, weight, floor, ceiling)`` items: each gets
    ``clamp(level x weight, floor, ceiling)`` for the one ``level`` at which the total is
    ``capacity``: in proportion to the weights, except that nobody goes below its floor
    or above its ceiling, and what a capped item cannot take goes to the others.

    When even the ceilings do not add up to ``capacity`` everyone gets its ceiling; when
    the floors alone exceed it (admission control prevents that) they are scaled down."""
    if not items:
        return {}
    floors = [min(lo, hi) for _, _, lo, hi in items]
    ceilings = [hi for _, _, _, hi in items]
    if sum(ceilings) <= capacity:
        return {item[0]: hi for item, hi in zip(items, ceilings, strict=True)}
    total_floor = sum(floors)
    if total_floor >= capacity:
        scale = capacity / total_floor if total_floor > 0 else 0.0
        return {item[0]: lo * scale for item, lo in zip(items, floors, strict=True)}
    weights = [w for _, w, _, _ in items]

    def total(level: float) -> float:
        return sum(
            min(max(level * w, lo), hi)
            for w, lo, hi in zip(weights, floors, ceilings, strict=True)
        )

    # total() is piecewise linear and non-decreasing in the level, with kinks where an
    # item leaves its floor (lo / w) or reaches its ceiling (hi / w): find the segment.
    kinks = sorted(
        {lo / w for w, lo in zip(weights, floors, strict=True)}
        | {hi / w for w, hi in zip(weights, ceilings, strict=True)}
    )
    low, low_total = 0.0, total(0.0)
    level = kinks[-1]
    for kink in kinks:
        kink_total = total(kink)
        if kink_total >= capacity:
            if kink_total > low_total:
                level = low + (capacity - low_total) * (kink - low) / (kink_total - low_total)
            else:
                level = kink
            break
        low, low_total = kink, kink_total
    return {
        item[0]: min(max(level * w, lo), hi)
        for item, w, lo, hi in zip(items, weights, floors, ceilings, strict=True)
    }


# ------------------------------------------------------------------------ policies


@dataclass
class Account:
    """The scheduler's bookkeeping for one VM (times in seconds, CPU in CPU seconds)."""

    id: str
    terms: Terms
    runnable: bool = True  # wants CPU (some vCPU is not in WFI)
    paused: bool = False  # held stopped by the user
    urgent: bool = False  # must run now whatever the policy says (e.g. shutting down)
    entitlement: float = 0.0  # percent of one CPU, from the policy's last decision
    weight: float = MIN_WEIGHT  # what its CPU use is divided by (percent): see decide()
    vtime: float = 0.0  # CPU used / entitlement (ProportionalShare's clock)
    tokens: float = 0.0  # limit bucket (CPU seconds); unused without a limit
    reserve_credit: float = 0.0  # CPU seconds the VM is behind its reservation
    cpu: float | None = None  # last measured CPU time of the process
    used: float = 0.0  # CPU seconds charged in total
    granted: bool = False  # holds a CPU
    slice_end: float = 0.0  # when the current grant ends
    turn: int = 0  # when its last grant began, counted in grants (RoundRobin's order)
    woken: bool = False  # became runnable (or got limit tokens back) since it last ran
    throttled: bool = False  # out of limit tokens at the last decision

    @property
    def limited(self) -> bool:
        return self.terms.limit is not None

    @property
    def burst(self) -> float:
        return limit_burst(self.terms.limit) if self.terms.limit is not None else math.inf


class Policy(ABC):
    """How CPU is divided among VMs (one policy per host)."""

    name: ClassVar[str]
    #: Whether a VM that wakes from idle may jump the queue (see :meth:`may_boost`).
    boosts_woken: ClassVar[bool] = True

    @abstractmethod
    def entitlements(
        self, demands: Sequence[Demand], cpus: int, capacity: float | None = None
    ) -> dict[str, float]:
        """Percent of one CPU each runnable VM should get while these VMs are runnable
        (VMs that are not runnable get 0). Never more than a VM's ceiling; the total is
        at most ``capacity``: the CPU the VMs can have (default ``100 x cpus``)."""

    @abstractmethod
    def key(self, account: Account) -> float:
        """Order among waiting VMs: the smallest key runs first."""

    def may_boost(self, account: Account, floor_vtime: float, quantum: float) -> bool:
        """May this woken VM go before VMs that hold a CPU?"""
        return self.boosts_woken and account.vtime <= floor_vtime + quantum


class ProportionalShare(Policy):
    """ESXi's policy: reservations as floors, limits (and one CPU per VM) as ceilings,
    the rest in proportion to shares; delivered by weighted fair queueing on virtual
    time (the runnable VMs with the least CPU per entitlement run next)."""

    name = "shares"

    def entitlements(
        self, demands: Sequence[Demand], cpus: int, capacity: float | None = None
    ) -> dict[str, float]:
        items = [
            (d.id, float(d.terms.shares), min(d.terms.reservation, d.terms.ceiling),
             d.terms.ceiling)
            for d in demands
            if d.runnable
        ]
        return water_fill(items, 100.0 * cpus if capacity is None else capacity)

    def key(self, account: Account) -> float:
        return account.vtime


class RoundRobin(Policy):
    """Plain round robin: the runnable VMs take turns of one quantum, the one that waited
    longest first; shares and reservations are ignored, limits still hold. A woken VM
    waits for its turn like any other."""

    name = "round-robin"
    boosts_woken = False

    def entitlements(
        self, demands: Sequence[Demand], cpus: int, capacity: float | None = None
    ) -> dict[str, float]:
        items = [(d.id, 1.0, 0.0, d.terms.ceiling) for d in demands if d.runnable]
        return water_fill(items, 100.0 * cpus if capacity is None else capacity)

    def key(self, account: Account) -> float:
        return account.turn


POLICIES: dict[str, type[Policy]] = {
    ProportionalShare.name: ProportionalShare,
    RoundRobin.name: RoundRobin,
}


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown scheduling policy {name!r} (choose from: {', '.join(POLICIES)})"
        ) from None


# ------------------------------------------------------------------------ the scheduler


@dataclass(frozen=True)
class Decision:
    """What the daemon applies until ``next_at``.

    ``run``: the VMs that hold a CPU (at most ``cpus``); ``free``: VMs left to run on
    their own: idle ones (they wake on a timer or input and then hold no CPU until the
    next decision) and urgent ones; ``hold``: VMs to keep stopped (waiting for a CPU,
    out of limit tokens, or paused). ``notify_idle``: VMs that should say at once when
    they go idle (others wait for their CPU); ``notify_wake``: idle VMs that should say
    at once when they wake (no CPU is free, or they are limited)."""

    run: frozenset[str]
    free: frozenset[str]
    hold: frozenset[str]
    next_at: float
    notify_idle: frozenset[str] = field(default_factory=frozenset)
    notify_wake: frozenset[str] = field(default_factory=frozenset)


class Scheduler:
    """Grants the host's ``cpus`` CPUs to VMs under a :class:`Policy` (module docstring).

    Feed it with :meth:`update` (CPU time used and runnable flags, measured) and ask
    :meth:`decide`; call both whenever something changes (a VM goes idle or wakes, a VM
    is added) and at the latest at ``Decision.next_at``."""

    def __init__(self, policy: Policy, cpus: int, quantum: float = QUANTUM) -> None:
        if cpus < 1:
            raise ValueError(f"cpus {cpus} must be at least 1")
        self.policy = policy
        self.cpus = cpus
        self.quantum = quantum
        self.accounts: dict[str, Account] = {}
        self._last: float | None = None
        # The virtual time of the VMs that run: never goes back, so a VM added or woken
        # while nothing else runs does not start far behind the others.
        self._vclock = 0.0
        self._turns = 0  # grants given so far
        self._terms_version = 0  # bumped when terms change: the entitlements are redone
        self._entitled_for: object = None
        # What the VMs really get while they contend (percent of one CPU): less than
        # 100 x cpus when other processes of the host take CPU. Entitlements are shares of
        # it, as ESXi's are of the capacity it has left for VMs.
        self.nominal = 100.0 * cpus
        self.capacity = self.nominal
        self._contended = False
        # CPUs kept from the VMs while a reserved VM is behind (see the module docstring)
        self.squeeze = 0
        self._squeezed = False  # the last decision granted fewer CPUs because of it
        self._squeeze_at = -math.inf  # when the squeeze last went up
        self._short_at = -math.inf  # when a reserved VM was last short while holding a CPU

    # ----------------------------------------------------------------- membership

    def add(self, vm_id: str, terms: Terms, now: float, cpu: float | None = None) -> Account:
        """A new VM (runnable: it is starting). ``cpu``: its process's CPU time so far."""
        if vm_id in self.accounts:
            raise KeyError(f"VM {vm_id!r} is already scheduled")
        account = Account(vm_id, terms, cpu=cpu, woken=True)
        account.vtime = self._vclock  # level with the others: neither owed nor owing CPU
        self._turns += 1
        account.turn = self._turns  # last in the round
        account.tokens = account.burst if account.limited else 0.0
        self.accounts[vm_id] = account
        self._terms_version += 1
        return account

    def begin(self, vm_id: str, now: float, cpu: float | None = None) -> None:
        """The VM's guest starts now (its machine is built): charge it from here. What
        its process used before (Python start-up, building the machine) is the host's
        cost of starting it, not the VM's: it is neither counted against its limit nor
        its shares. ``cpu``: its process's CPU time now."""
        account = self.accounts[vm_id]
        if cpu is not None:
            account.cpu = cpu
        account.vtime = max(self._vclock, min(
            (a.vtime for a in self.accounts.values()
             if a.runnable and not a.paused and a is not account), default=self._vclock))
        account.tokens = account.burst if account.limited else 0.0
        account.reserve_credit = 0.0
        account.woken = True

    def remove(self, vm_id: str) -> None:
        self.accounts.pop(vm_id, None)
        self._terms_version += 1

    def set_terms(self, vm_id: str, terms: Terms) -> None:
        account = self.accounts[vm_id]
        account.terms = terms
        self._terms_version += 1
        if account.limited:
            account.tokens = min(account.tokens, account.burst)
        else:
            account.tokens = 0.0

    def set_paused(self, vm_id: str, paused: bool) -> None:
        account = self.accounts[vm_id]
        account.paused = paused
        if paused:
            account.granted = False
            account.reserve_credit = 0.0
        else:
            account.woken = account.runnable
            # No catching up on the time it was paused.
            account.vtime = max(account.vtime, self._vclock - self.quantum)

    def set_urgent(self, vm_id: str, urgent: bool) -> None:
        self.accounts[vm_id].urgent = urgent

    # ----------------------------------------------------------------- measuring

    def update(
        self,
        now: float,
        cpu: Mapping[str, float] | None = None,
        runnable: Mapping[str, bool] | None = None,
    ) -> None:
        """Account for the time since the last update: refill limit buckets and
        reservation credits, charge the CPU each VM used (``cpu``: total CPU seconds of
        its process, as measured), and take the new runnable flags."""
        cpu = cpu or {}
        runnable = runnable or {}
        dt = 0.0 if self._last is None else max(0.0, now - self._last)
        self._last = now
        woken: list[Account] = []
        used_by_all = 0.0
        short = loaded = False
        for account in self.accounts.values():
            terms = account.terms
            used = 0.0
            total = cpu.get(account.id)
            if total is not None:
                if account.cpu is not None:
                    used = max(0.0, total - account.cpu)
                account.cpu = total
            used_by_all += used
            if (account.granted and account.runnable and not account.paused
                    and dt >= MIN_SHORT_DT and runnable.get(account.id, True)):
                # It held a CPU all along: did it get it?
                if used < LOADED_SPEED * dt:
                    loaded = True  # others (outside processes) share the CPUs
                if used < terms.reservation / 100 * dt * SHORT_MARGIN:
                    short = True  # and got less than its reservation
            if account.limited:
                assert terms.limit is not None
                # Refill and use happen together: clamp after both, or the refill
                # during a slice would be lost.
                account.tokens = min(
                    account.tokens + terms.limit / 100 * dt - used, account.burst
                )
            if account.runnable and not account.paused and terms.reservation > 0:
                account.reserve_credit = min(
                    account.reserve_credit + terms.reservation / 100 * dt, RESERVATION_BURST
                )
            account.reserve_credit = max(account.reserve_credit - used, -RESERVATION_BURST)
            account.vtime += used / (account.weight / 100)
            account.used += used
            was = account.runnable
            account.runnable = runnable.get(account.id, was)
            if account.runnable and not was:
                woken.append(account)
            elif not account.runnable:
                account.reserve_credit = 0.0  # no banking of a reservation while idle
                account.woken = False
        if dt > 0:
            # While VMs wait for CPUs, the CPUs were busy with VMs: what they got is what
            # the host has for VMs. Otherwise drift back to the nominal capacity.
            seen = min(used_by_all / dt * 100, self.nominal) if self._contended else (
                self.nominal)
            self.capacity += min(1.0, dt / CAPACITY_TAU) * (seen - self.capacity)
            self.capacity = max(self.capacity, MIN_CAPACITY * self.nominal)
        self._adjust_squeeze(now, short, loaded)
        others = [
            a.vtime for a in self.accounts.values()
            if a.runnable and not a.paused and a not in woken
        ]
        if others:
            self._vclock = max(self._vclock, min(others))
        for account in woken:
            account.woken = True
            account.reserve_credit = 0.0
            # No CPU banked by idling, but a quantum's head start over the others.
            account.vtime = max(account.vtime, self._vclock - self.quantum)

    def _adjust_squeeze(self, now: float, short: bool, loaded: bool) -> None:
        """Learn how many CPUs to keep from the other VMs while a reserved VM is behind:
        more when it was short although it held a CPU; fewer once the host has not been
        seen loaded (a VM holding a CPU got less than 90% of it) for a while."""
        if short or loaded:
            self._short_at = now
        if short:
            if self.squeeze == 0 or (self._squeezed and now - self._squeeze_at >= SQUEEZE_UP):
                if self.squeeze < self.cpus - 1:
                    self.squeeze += 1
                    self._squeeze_at = now
        elif self.squeeze > 0 and now - max(self._short_at, self._squeeze_at) >= SQUEEZE_DOWN:
            self.squeeze -= 1
            self._squeeze_at = self._short_at = now

    # ----------------------------------------------------------------- deciding

    def _entitle(self, accounts: list[Account], active: list[Account]) -> None:
        """Set every account's entitlement and weight (the policy's answer only changes
        with the set of runnable VMs and their terms: it is kept until then)."""
        capacity = round(self.capacity / self.nominal * 200) / 200 * self.nominal
        key = (self._terms_version, capacity,
               tuple((a.id, a.runnable, a.paused) for a in accounts))
        if key == self._entitled_for:
            return
        self._entitled_for = key
        entitled = self.policy.entitlements(
            [Demand(a.id, a.terms, True) for a in active], self.cpus, capacity
        )
        # An idle VM that wakes runs before the next decision: its CPU is charged at what
        # it would be entitled to if every VM were runnable (a conservative weight).
        idle = any(not a.runnable and not a.paused for a in accounts)
        potential = self.policy.entitlements(
            [Demand(a.id, a.terms, True) for a in accounts if not a.paused], self.cpus,
            capacity,
        ) if idle else {}
        for account in accounts:
            account.entitlement = entitled.get(account.id, 0.0)
            weight = account.entitlement or potential.get(account.id, 0.0)
            account.weight = max(weight, MIN_WEIGHT)

    def _throttled(self, account: Account) -> bool:
        if not account.limited:
            return False
        # A VM that holds a CPU keeps it until its tokens are gone; one that waits starts
        # again only with a full bucket, so slices are not needlessly short.
        need = MIN_RUN if account.granted else account.burst * 0.999
        return account.tokens <= need

    def decide(self, now: float) -> Decision:
        accounts = list(self.accounts.values())
        active = [a for a in accounts if a.runnable and not a.paused]
        self._entitle(accounts, active)

        candidates = []
        for account in active:
            throttled = self._throttled(account)
            if account.throttled and not throttled:
                # Tokens back: like a VM waking up, it may take a CPU at once (else the
                # refill it cannot bank while it waits for a quantum to end is lost).
                account.woken = True
            account.throttled = throttled
            if not throttled:
                candidates.append(account)
        floor_vtime = min((a.vtime for a in candidates if not a.woken), default=math.inf)
        policy = self.policy

        def rank(a: Account) -> tuple[int, float]:
            if a.urgent:
                return (0, policy.key(a))
            if a.terms.reservation > 0 and a.reserve_credit > RESERVATION_SLACK:
                return (1, -a.reserve_credit)
            if a.woken and policy.may_boost(a, floor_vtime, self.quantum):
                return (2, policy.key(a))
            if a.granted and a.slice_end > now:
                return (3, policy.key(a))  # finishes its quantum
            return (4, policy.key(a))

        candidates.sort(key=rank)
        slots = self.cpus
        behind = sum(1 for a in candidates if rank(a)[0] == 1)
        if behind and self.squeeze:
            # A reserved VM is behind on a loaded host: fewer runnable VM processes, so
            # the kernel gives it a CPU of its own until it has caught up.
            slots = max(behind + sum(1 for a in candidates if a.urgent),
                        self.cpus - self.squeeze)
        self._squeezed = slots < self.cpus
        chosen = candidates[:slots]
        contended = len(candidates) > slots
        self._contended = contended
        run: set[str] = set()
        next_at = now + IDLE_TICK
        for account in chosen:
            if not (account.granted and account.slice_end > now):
                account.slice_end = now + self.quantum
                self._turns += 1
                account.turn = self._turns
            account.granted = True
            account.woken = False
            run.add(account.id)
            if contended:
                next_at = min(next_at, account.slice_end)
            if account.limited:
                # Its grant ends when the tokens would be gone at full speed (using one
                # CPU while the bucket refills at the limit).
                assert account.terms.limit is not None
                drain = max(1.0 - account.terms.limit / 100, 0.01)
                next_at = min(next_at, now + max(account.tokens, 0.0) / drain)
        for account in accounts:
            if account.id not in run:
                account.granted = False

        free: set[str] = set()
        hold: set[str] = set()
        for account in accounts:
            if account.id in run:
                continue
            if account.paused:
                hold.add(account.id)
            elif account.urgent:
                free.add(account.id)
            elif self._throttled(account):
                hold.add(account.id)
                assert account.terms.limit is not None
                refill = (account.burst - account.tokens) / (account.terms.limit / 100)
                next_at = min(next_at, now + max(refill, 0.0005))
            elif account.runnable:
                hold.add(account.id)  # waits for a CPU
            else:
                free.add(account.id)  # idle: wakes up on its own
        waiting = any(a.runnable for a in accounts if a.id in hold and not a.paused)
        no_cpu_free = len(run) >= self.cpus
        notify_idle = frozenset(run) if waiting else frozenset()
        notify_wake = frozenset(
            a.id for a in accounts
            if a.id in free and not a.runnable and (no_cpu_free or a.limited)
        )
        return Decision(
            run=frozenset(run),
            free=frozenset(free),
            hold=frozenset(hold),
            next_at=next_at,
            notify_idle=notify_idle,
            notify_wake=notify_wake,
        )

    def decide_free(self, now: float) -> Decision:
        """The decision when the kernel enforces shares and limits (the cgroup backend):
        the entitlements are worked out (for reporting), and every VM but the paused
        ones runs freely."""
        accounts = list(self.accounts.values())
        self._entitle(accounts, [a for a in accounts if a.runnable and not a.paused])
        self._squeezed = False
        for account in accounts:
            account.granted = False
        return Decision(
            run=frozenset(),
            free=frozenset(a.id for a in accounts if not a.paused),
            hold=frozenset(a.id for a in accounts if a.paused),
            next_at=now + IDLE_TICK,
        )

    # ----------------------------------------------------------------- reporting

    def entitlement(self, vm_id: str) -> float:
        account = self.accounts.get(vm_id)
        return account.entitlement if account is not None else 0.0

    def ids(self) -> Iterable[str]:
        return self.accounts.keys()
