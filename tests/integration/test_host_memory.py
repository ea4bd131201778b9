"""Memory terms through the host daemon (issue 18): a reservation the host's budget cannot
hold is refused at start and when changed live, naming the field; a live memory.limit on
a Linux guest with a balloon is held by its balloon within seconds and let go again; the
figures (entitlement, what it holds) reach the metrics. The split among many VMs when the
budget is short is bench/memory.py's (four Linux guests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .linux_guest import IMAGE, INITRD, needs_linux
from .test_host_rest import IDLE, Api, definition, serve
from .test_host_rest import env as env  # the fixture

MiB = 1 << 20


@pytest.fixture
def api(tmp_path: Path, env: dict[str, str]) -> Iterator[Api]:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "host.toml").write_text(
        'memory = "512M"\nmemory_overcommit = 4\n')
    yield from serve(tmp_path, env)


def vm_metrics(api: Api, name: str) -> dict[str, Any]:
    return api.ok("GET", f"/v1/vms/{name}/metrics")  # type: ignore[no-any-return]


def test_reservations_beyond_the_budget_are_refused(api: Api) -> None:
    api.ok("POST", "/v1/vms", definition("one", IDLE, memory={
        "size": "384M", "reservation": "320M"}), status=201)
    api.ok("POST", "/v1/vms", definition("two", IDLE, memory={
        "size": "256M", "reservation": "256M"}), status=201)
    reply = api.request("POST", "/v1/vms", definition("big", IDLE, memory={
        "size": "1G", "reservation": "768M"}))
    assert reply.status == 422
    assert "memory.reservation: 768M is more than the host's memory budget" in reply.error
    api.ok("POST", "/v1/vms/one/start")
    reply = api.request("POST", "/v1/vms/two/start")
    assert reply.status == 409
    assert "memory.reservation 256 MiB does not fit" in reply.error
    # live: a reservation the budget cannot hold beside the others is refused and the
    # old one stays
    api.ok("POST", "/v1/vms", definition("three", IDLE, memory={
        "size": "256M", "reservation": "128M"}), status=201)
    api.ok("POST", "/v1/vms/three/start")
    reply = api.request("PATCH", "/v1/vms/three", {"memory_reservation": "256M"})
    assert reply.status == 409, reply.body
    assert "memory.reservation 256 MiB does not fit" in reply.error
    assert api.ok("GET", "/v1/vms/three")["definition"]["memory"]["reservation"] == "128M"
    reply = api.request("PATCH", "/v1/vms/three", {"memory_reservation": "1G"})
    assert reply.status == 422 and "memory.reservation: 1024 MiB is more than" in reply.error
    host = api.ok("GET", "/v1/metrics")["host"]
    assert host["memory_budget"] == 512 * MiB and host["memory_short"] is False
    one = vm_metrics(api, "one")
    assert one["memory_reservation"] == 320 * MiB and one["memory_held"] > 0


@needs_linux
@pytest.mark.slow
def test_a_live_memory_limit_is_held_by_the_balloon(api: Api) -> None:
    api.ok("POST", "/v1/vms", {
        "name": "linux", "memory": "256M", "devices": {"balloon": True},
        "boot": {"kernel": str(IMAGE), "initrd": str(INITRD), "cmdline": "console=ttyS0"},
    }, status=201)
    api.ok("POST", "/v1/vms/linux/start")

    def wait_for(check: Any, what: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            figures = vm_metrics(api, "linux")
            if check(figures):
                return figures
            assert time.monotonic() < deadline, f"{what}: {figures}"
            time.sleep(0.2)

    wait_for(lambda f: f["guest_available"] > 0, "the guest's balloon driver reports")
    api.ok("PATCH", "/v1/vms/linux", {"memory_limit": "128M"})
    start = time.monotonic()
    f = wait_for(lambda f: f["balloon_actual"] >= 128 * MiB, "the balloon holds 128M")
    took = time.monotonic() - start
    assert f["memory_entitled"] == 128 * MiB and f["memory_granted"] <= 128 * MiB
    assert f["memory_held"] <= 128 * MiB + 2 * MiB
    assert took < 30
    assert api.ok("GET", "/v1/vms/linux")["definition"]["memory"]["limit"] == "128M"
    api.ok("PATCH", "/v1/vms/linux", {"memory_limit": None})
    f = wait_for(lambda f: f["balloon_actual"] == 0, "the balloon is let go")
    assert f["memory_entitled"] == 256 * MiB
