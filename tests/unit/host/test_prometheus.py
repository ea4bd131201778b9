"""The daemon's figures as Prometheus metrics: rendered by prometheus_client and read back
with its own parser, as a Prometheus server would."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from pyhv.host.errors import Unavailable
from pyhv.host.prometheus import VM_STATES, HostCollector, families

FIGURES: dict[str, Any] = {
    "host": {"cpus": 2, "policy": "shares", "vms_running": 1, "cpu_pct": 97.5,
             "capacity_pct": 180.0, "daemon_cpu_pct": 2.25, "uptime": 12.5, "pid": 42},
    "vms": [
        {"name": "db", "state": "stopped", "pid": None, "vcpus": 2, "memory": 256 << 20,
         "shares": 2000, "reservation": 0, "limit": None},
        {"name": "web", "state": "running", "pid": 1234, "activity": "idle",
         "engine": "interp", "vcpus": 1, "memory": 32 << 20, "shares": 1000,
         "reservation": 25, "limit": 50, "cpu_pct": 48.5, "entitlement_pct": 50.0,
         "cpu_seconds": 3.25, "mips": 12.5, "instructions": 40_000_000, "rss": None,
         "balloon_target": 0, "balloon_actual": 0, "disk_read": 4096, "disk_write": 512,
         "net_tx": 3, "net_rx": 4, "console_in": 5, "console_out": 60, "wakeups": 7,
         "uptime": 9.5},
    ],
}


def scrape(figures: dict[str, Any], version: str | None = "1.2.3") -> dict[str, Any]:
    """Render through a registry, parse back: {family name: {(labels...): value}}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(lambda: figures, version))
    text = generate_latest(registry).decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def test_host_figures() -> None:
    m = scrape(FIGURES)
    assert m["pyhv_host_cpus"][()] == 2
    assert m["pyhv_host_vms_running"][()] == 1
    assert m["pyhv_host_cpu_percent"][()] == 97.5
    assert m["pyhv_host_capacity_percent"][()] == 180
    assert m["pyhv_host_daemon_cpu_percent"][()] == 2.25
    assert m["pyhv_host_vms_defined"][()] == 2
    assert m["pyhv_host_info"] == {(("policy", "shares"), ("version", "1.2.3")): 1}
    assert "pyhv_host_pid" not in m  # not a metric: it is in /v1/host


def test_state_is_an_enum_over_every_state() -> None:
    m = scrape(FIGURES)["pyhv_vm_state"]
    assert len(m) == 2 * len(VM_STATES)
    assert m[(("state", "running"), ("vm", "web"))] == 1
    assert m[(("state", "stopped"), ("vm", "db"))] == 1
    assert sum(m.values()) == 2


def test_running_vm_counters_and_gauges() -> None:
    m = scrape(FIGURES)
    web = (("vm", "web"),)
    assert m["pyhv_vm_cpu_seconds_total"][web] == 3.25
    assert m["pyhv_vm_guest_instructions_total"][web] == 40_000_000
    assert m["pyhv_vm_cpu_percent"][web] == 48.5
    assert m["pyhv_vm_entitlement_percent"][web] == 50
    assert m["pyhv_vm_mips"][web] == 12.5
    assert m["pyhv_vm_disk_read_bytes_total"][web] == 4096
    assert m["pyhv_vm_disk_written_bytes_total"][web] == 512
    assert m["pyhv_vm_net_transmitted_frames_total"][web] == 3
    assert m["pyhv_vm_net_received_frames_total"][web] == 4
    assert m["pyhv_vm_console_output_bytes_total"][web] == 60
    assert m["pyhv_vm_wakeups_total"][web] == 7
    assert m["pyhv_vm_idle"][web] == 1
    assert m["pyhv_vm_info"] == {(("engine", "interp"), ("vm", "web")): 1}
    # a figure the daemon could not read is left out, not reported as 0
    assert "pyhv_vm_rss_bytes" not in m


def test_stopped_vm_has_its_terms_but_no_live_figures() -> None:
    m = scrape(FIGURES)
    db = (("vm", "db"),)
    assert m["pyhv_vm_memory_bytes"][db] == 256 << 20
    assert m["pyhv_vm_vcpus"][db] == 2
    assert m["pyhv_vm_shares"][db] == 2000
    assert m["pyhv_vm_reservation_percent"][db] == 0
    assert db not in m["pyhv_vm_limit_percent"]  # unlimited: no sample
    assert m["pyhv_vm_limit_percent"][(("vm", "web"),)] == 50
    for name in ("pyhv_vm_cpu_seconds_total", "pyhv_vm_guest_instructions_total",
                 "pyhv_vm_cpu_percent"):
        assert db not in m[name]


def test_no_vms_and_missing_figures() -> None:
    m = scrape({"host": {}, "vms": []}, version=None)
    assert m["pyhv_host_vms_defined"][()] == 0
    assert "pyhv_host_cpus" not in m
    assert "pyhv_vm_state" not in m  # an empty family has no samples
    # hostile-ish input: non-numbers and nameless entries are skipped, not fatal
    m = scrape({"host": {"cpus": "two", "uptime": True},
                "vms": [{"state": "running"}, "junk", {"name": "x", "pid": 1, "mips": "fast"}]})
    assert "pyhv_host_cpus" not in m and "pyhv_host_uptime_seconds" not in m
    assert m["pyhv_vm_state"][(("state", "running"), ("vm", "x"))] == 0
    assert "pyhv_vm_mips" not in m


def test_openmetrics_rendering_parses_too() -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(lambda: FIGURES))
    text = generate_openmetrics(registry).decode()
    assert text.endswith("# EOF\n")
    names = {f.name for f in om_parse(text)}
    assert {"pyhv_vm_cpu_seconds", "pyhv_vm_state", "pyhv_host_cpus"} <= names


def test_a_failing_source_fails_the_scrape() -> None:
    def source() -> dict[str, Any]:
        raise Unavailable("the host daemon is shutting down")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(source))  # registering does not scrape
    with pytest.raises(Unavailable, match="shutting down"):
        generate_latest(registry)


def test_families_are_plain_prometheus_metrics() -> None:
    kinds = {f.name: f.type for f in families(FIGURES)}
    assert kinds["pyhv_vm_cpu_seconds"] == "counter"
    assert kinds["pyhv_vm_cpu_percent"] == "gauge"
    assert kinds["pyhv_vm_state"] == "gauge"
