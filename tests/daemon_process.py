"""Shared by the host daemon tests (tests/integration/test_host_*.py): stopping a
``pyhv host serve`` process the way an operator would."""

from __future__ import annotations

import signal
import subprocess


def stop_daemon(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM (the daemon stops its VMs, then itself); SIGKILL if it has not exited
    after ``timeout`` seconds. Returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
