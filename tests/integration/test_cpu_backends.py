"""The host daemon with each CPU backend (``--cpu-backend feedback`` and ``cgroup``, the
latter where this host lets the daemon write a CPU controller): ``pyhv host info`` names
the backend, and two spinning VMs run. Timing is checked loosely only (the precise
figures are bench/scheduler.py's, phase ``outside``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon_process import stop_daemon
from pyhv.host import Host
from pyhv.host.cgroups import choose_backend

ROOT = Path(__file__).resolve().parents[2]
SPIN = ROOT / "guests" / "tests" / "spin.elf"


def cgroup_unusable() -> str:
    try:
        backend = choose_backend("cgroup", f"pyhv-probe-{os.getpid()}", 1)
    except OSError as exc:
        return str(exc.strerror or exc)
    backend.close()
    return ""


@pytest.mark.parametrize("backend", ["feedback", "cgroup"])
def test_daemon_runs_vms_with_the_cpu_backend(tmp_path: Path, backend: str) -> None:
    if backend == "cgroup" and (why := cgroup_unusable()):
        pytest.skip(f"no writable cgroup CPU controller here: {why}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYHV_STATE_DIR",)}
    env["HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = str(ROOT / "src")
    state = tmp_path / "state"
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host",
             "serve", "--cpus", "2", "--shutdown-timeout", "3", "--listen", "none",
             "--cpu-backend", backend],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        deadline = time.monotonic() + 20
        while not (state / "daemon.sock").exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.05)
        info = subprocess.run(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host",
             "info", "--json"], capture_output=True, text=True, env=env, timeout=30)
        assert info.returncode == 0, info.stderr
        doc = json.loads(info.stdout)
        assert doc["cpu_backend"] == backend and doc["cpu_backend_reason"]
        text = subprocess.run(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host",
             "info"], capture_output=True, text=True, env=env, timeout=30).stdout
        assert f"cpu backend:  {backend}" in text
        host = Host(state)
        pids = {}
        for name, terms in (("a", {"shares": 1000}), ("b", {"shares": 2000, "limit": 40})):
            host.create({"name": name, "memory": "32M", "engine": "interp",
                         "boot": {"firmware": "none", "kernel": str(SPIN)}, "qos": terms})
            pid = host.start(name).pid
            assert pid is not None
            pids[name] = pid
        group = None
        if backend == "cgroup":
            group = Path(doc["cpu_backend_reason"].rsplit("group ", 1)[1])
            assert str(pids["b"]) in (group / "vm-b" / "cgroup.procs").read_text()
            quota = (group / "vm-b" / "cpu.cfs_quota_us")
            if quota.exists():
                assert quota.read_text().strip() == "8000"  # 40% of a 20 ms period
        clock = {n: ((~p) << 3) | 2 for n, p in pids.items()}
        start = {n: time.clock_gettime(c) for n, c in clock.items()}
        time.sleep(3)
        got = {n: (time.clock_gettime(c) - start[n]) / 3 * 100 for n, c in clock.items()}
        assert got["a"] > 10 and got["b"] > 10, got  # both run
        assert got["b"] < 40 * 1.25, got  # loosely under its limit
        host.stop("a", force=True)
        if group is not None:
            assert not (group / "vm-a").exists()
    finally:
        assert stop_daemon(proc, 30) == 0, log.read_text()
        for pid_file in state.glob("vms/*/run/pid"):
            with __import__("contextlib").suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), 9)
    if backend == "cgroup":
        assert group is not None and not group.exists()  # cleaned up at exit
