"""The host daemon's figures in the Prometheus exposition format (``GET /metrics``).

:class:`HostCollector` is a ``prometheus_client`` custom collector: every scrape asks the
daemon for the same figures ``pyhv top`` and ``GET /v1/metrics`` show
(:meth:`pyhv.Host.metrics`), so nothing is counted twice and nothing goes stale between
scrapes. :func:`families` turns one such answer into metric families; it is a pure
function, tested on its own.

Names follow the Prometheus conventions: a ``pyhv_`` prefix, base units in the name
(``_bytes``, ``_seconds``), ``_total`` on counters, one ``vm`` label per VM. A VM's state
is an enum: ``pyhv_vm_state{vm, state}`` is 1 for its current state and 0 for the others,
so a state change moves a value instead of starting a new series. The counters and the
live figures of a VM (CPU, instructions, RSS, I/O) exist only while it runs: its VM process
keeps them, and they start from zero at each start, which Prometheus' ``rate()`` treats
as a counter reset. CPU percentages are of one host CPU, as everywhere in pyhv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Every state a VM can be in (``pyhv_vm_state``), as :attr:`pyhv.VM.state` reports it.
VM_STATES = ("starting", "running", "paused", "stopping", "stopped", "crashed")

# (metric name, kind, key in the daemon's per-VM figures, help) of a running VM.
_LIVE_VM: tuple[tuple[str, str, str, str], ...] = (
    ("pyhv_vm_cpu_percent", "gauge", "cpu_pct",
     "CPU used by the VM process over the last second, percent of one host CPU"),
    ("pyhv_vm_entitlement_percent", "gauge", "entitlement_pct",
     "CPU the scheduler entitles the VM to now, percent of one host CPU"),
    ("pyhv_vm_cpu_seconds", "counter", "cpu_seconds",
     "CPU time used by the VM process since it started"),
    ("pyhv_vm_guest_instructions", "counter", "instructions",
     "Guest instructions retired since the VM started"),
    ("pyhv_vm_mips", "gauge", "mips",
     "Guest instructions retired over the last second, millions per second"),
    ("pyhv_vm_rss_bytes", "gauge", "rss", "Resident memory of the VM process"),
    ("pyhv_vm_balloon_target_bytes", "gauge", "balloon_target",
     "Memory the host asked the VM's balloon to hold"),
    ("pyhv_vm_balloon_actual_bytes", "gauge", "balloon_actual",
     "Memory the guest's balloon driver says it holds"),
    ("pyhv_vm_memory_entitled_bytes", "gauge", "memory_entitled",
     "Memory the VM's terms entitle it to now (its limit unless the host is short)"),
    ("pyhv_vm_memory_granted_bytes", "gauge", "memory_granted",
     "Guest RAM outside the balloon (memory minus what the balloon holds)"),
    ("pyhv_vm_memory_held_bytes", "gauge", "memory_held",
     "Guest RAM resident in host memory"),
    ("pyhv_vm_memory_active_bytes", "gauge", "memory_active",
     "Guest RAM touched in the last sampling window (5 s)"),
    ("pyhv_vm_memory_shared_bytes", "gauge", "memory_shared",
     "Memory of the VM process merged with others by the host's KSM"),
    ("pyhv_vm_memory_swapped_bytes", "gauge", "memory_swapped",
     "Guest RAM the host swapped out"),
    ("pyhv_vm_disk_read_bytes", "counter", "disk_read", "Bytes read by virtio-blk requests"),
    ("pyhv_vm_disk_written_bytes", "counter", "disk_write",
     "Bytes written by virtio-blk requests"),
    ("pyhv_vm_net_transmitted_frames", "counter", "net_tx", "virtio-net frames sent"),
    ("pyhv_vm_net_received_frames", "counter", "net_rx", "virtio-net frames received"),
    ("pyhv_vm_console_output_bytes", "counter", "console_out",
     "Bytes the guest wrote to its serial console"),
    ("pyhv_vm_console_input_bytes", "counter", "console_in",
     "Bytes typed to the guest's serial console"),
    ("pyhv_vm_wakeups", "counter", "wakeups", "Times the machine woke from idle (WFI)"),
    ("pyhv_vm_uptime_seconds", "gauge", "uptime", "Seconds since the VM process started"),
)

# (metric name, key, help) of every defined VM, running or not: its definition's terms.
_DEFINED_VM: tuple[tuple[str, str, str], ...] = (
    ("pyhv_vm_vcpus", "vcpus", "vCPUs of the VM"),
    ("pyhv_vm_memory_bytes", "memory", "Guest RAM of the VM"),
    ("pyhv_vm_shares", "shares", "CPU shares of the VM (qos.shares)"),
    ("pyhv_vm_reservation_percent", "reservation",
     "CPU reserved for the VM, percent of one host CPU (qos.reservation)"),
    ("pyhv_vm_limit_percent", "limit",
     "CPU limit of the VM, percent of one host CPU (qos.limit; absent: unlimited)"),
)

# (metric name, kind, key, help) of the host.
_HOST: tuple[tuple[str, str, str, str], ...] = (
    ("pyhv_host_cpus", "gauge", "cpus", "Host CPUs the VMs may use"),
    ("pyhv_host_vms_running", "gauge", "vms_running", "VMs the daemon runs"),
    ("pyhv_host_cpu_percent", "gauge", "cpu_pct",
     "CPU used by all VM processes over the last second, percent of one host CPU"),
    ("pyhv_host_capacity_percent", "gauge", "capacity_pct",
     "CPU the VMs really get while they contend, percent of one host CPU"),
    ("pyhv_host_daemon_cpu_percent", "gauge", "daemon_cpu_pct",
     "CPU used by the daemon itself over the last second, percent of one host CPU"),
    ("pyhv_host_memory_budget_bytes", "gauge", "memory_budget",
     "Memory the VMs may hold together (host.toml memory)"),
    ("pyhv_host_memory_held_bytes", "gauge", "memory_held",
     "Guest RAM of all running VMs resident in host memory"),
    ("pyhv_host_memory_short", "gauge", "memory_short",
     "1 while the VMs hold more than the budget allows and balloons reclaim"),
    ("pyhv_host_uptime_seconds", "gauge", "uptime", "Seconds since the daemon started"),
)


def _number(value: Any) -> float | None:
    """A sample value, or None for a figure the daemon does not have (an RSS it could not
    read): such a sample is left out rather than reported as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def families(figures: Mapping[str, Any], version: str | None = None) -> list[Metric]:
    """The metric families of one :meth:`pyhv.Host.metrics` answer (``{"host": {...},
    "vms": [{...}, ...]}``); ``version`` (pyhv's) goes into ``pyhv_host_info``."""
    host = figures.get("host") or {}
    vms = [vm for vm in figures.get("vms") or [] if isinstance(vm, Mapping) and vm.get("name")]
    out: list[Metric] = []

    for name, kind, key, help_text in _HOST:
        value = _number(host.get(key))
        if value is not None:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            out.append(cls(name, help_text, value=value))
    out.append(GaugeMetricFamily("pyhv_host_vms_defined", "VMs defined in the state directory",
                                 value=len(vms)))
    info = GaugeMetricFamily("pyhv_host_info", "The daemon: its scheduling policy and version",
                             labels=["policy", "version"])
    info.add_metric([str(host.get("policy", "")), version or ""], 1)
    out.append(info)

    state = GaugeMetricFamily("pyhv_vm_state", "1 for the VM's current state, else 0",
                              labels=["vm", "state"])
    for vm in vms:
        current = vm.get("state")
        for s in VM_STATES:
            state.add_metric([vm["name"], s], 1 if s == current else 0)
    out.append(state)

    for name, key, help_text in _DEFINED_VM:
        gauge = GaugeMetricFamily(name, help_text, labels=["vm"])
        for vm in vms:
            value = _number(vm.get(key))
            if value is not None:
                gauge.add_metric([vm["name"]], value)
        out.append(gauge)

    running = [vm for vm in vms if vm.get("pid") is not None]
    vm_info = GaugeMetricFamily("pyhv_vm_info", "A running VM: its CPU engine",
                                labels=["vm", "engine"])
    idle = GaugeMetricFamily("pyhv_vm_idle", "1 while every vCPU of the VM waits in WFI",
                             labels=["vm"])
    for vm in running:
        vm_info.add_metric([vm["name"], str(vm.get("engine") or "")], 1)
        if vm.get("activity") is not None:
            idle.add_metric([vm["name"]], 1 if vm.get("activity") == "idle" else 0)
    out.extend((vm_info, idle))
    for name, kind, key, help_text in _LIVE_VM:
        family: CounterMetricFamily | GaugeMetricFamily
        if kind == "counter":
            family = CounterMetricFamily(name, help_text, labels=["vm"])
        else:
            family = GaugeMetricFamily(name, help_text, labels=["vm"])
        for vm in running:
            value = _number(vm.get(key))
            if value is not None:
                family.add_metric([vm["name"]], value)
        out.append(family)
    out.extend(_io_families(running))
    return out


#: The I/O budget figures per device and direction (the daemon's ``io`` entries).
_IO_LIMITS = (("bps", "pyhv_vm_io_limit_bytes_per_second",
               "I/O budget of a disk or NIC direction, bytes a second (absent: no limit)"),
              ("ops", "pyhv_vm_io_limit_ops_per_second",
               "I/O budget of a disk (requests) or NIC direction (frames), a second "
               "(absent: no limit)"))


def _io_families(running: list[Mapping[str, Any]]) -> list[Metric]:
    labels = ["vm", "device", "direction"]
    seconds = CounterMetricFamily(
        "pyhv_vm_io_throttled_seconds",
        "Time requests (disk) or frames (NIC) waited for their I/O budget", labels=labels)
    waits = CounterMetricFamily(
        "pyhv_vm_io_throttled", "Requests (disk) or frames (NIC) that waited for their "
        "I/O budget", labels=labels)
    limits = {key: GaugeMetricFamily(name, text, labels=labels) for key, name, text in _IO_LIMITS}
    for vm in running:
        for entry in vm.get("io") or []:
            if not isinstance(entry, Mapping):
                continue
            key = [vm["name"], str(entry.get("device", "")), str(entry.get("direction", ""))]
            for family, field in ((seconds, "throttled_seconds"), (waits, "throttled")):
                value = _number(entry.get(field))
                if value is not None:
                    family.add_metric(key, value)
            terms = entry.get("limits") or {}
            for name, value in terms.items() if isinstance(terms, Mapping) else ():
                kind = "bps" if name.endswith("bps") else "ops" if name.endswith(
                    ("iops", "pps")) else None
                number = _number(value)
                if kind is not None and number is not None:
                    limits[kind].add_metric(key, number)
    return [seconds, waits, *limits.values()]


class HostCollector(Collector):
    """Reads the daemon's figures on every scrape (``source``: e.g. ``host.metrics``).
    An error of ``source`` (the daemon shutting down...) propagates, so the scrape fails
    with it instead of reporting stale or empty figures."""

    def __init__(self, source: Callable[[], Mapping[str, Any]], version: str | None = None):
        self.source = source
        self.version = version

    def collect(self) -> Iterator[Metric]:
        yield from families(self.source(), self.version)

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not scrape the daemon
