"""Two Linux VMs, each in its own `pyhv run` process, ping each other through the
in-host virtual switch (virtio-net). Marked slow: two real kernels boot."""

from __future__ import annotations

import os
import sys

import pytest

from .linux_guest import IMAGE, INITRD, PROMPT, GuestProcess, needs_linux

pytestmark = [pytest.mark.slow, needs_linux]
BOOT_TIMEOUT = float(os.environ.get("PYHV_TEST_BOOT_TIMEOUT", "900"))


def guest_on_switch(switch: str, mac: str) -> GuestProcess:
    """`pyhv run` of the Linux guest with one NIC on ``switch``."""
    return GuestProcess(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--kernel", str(IMAGE),
         "--initrd", str(INITRD), "--append", "console=ttyS0",
         "--net", f"switch={switch},mac={mac}"], run_timeout=300, stop_timeout=120)


def test_two_vms_ping_each_other_over_the_switch(tmp_path) -> None:
    switch = f"pingtest-{os.getpid()}"
    a = guest_on_switch(switch, "52:54:00:00:00:0a")
    b = guest_on_switch(switch, "52:54:00:00:00:0b")
    try:
        a.expect(PROMPT, BOOT_TIMEOUT)
        b.expect(PROMPT, BOOT_TIMEOUT)
        a.run("ip addr add 10.0.0.1/24 dev eth0 && ip link set eth0 up")
        b.run("ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up")
        out = a.run("ping -c 3 -W 10 10.0.0.2", timeout=600)
        assert "3 packets transmitted, 3 packets received" in out, out
        out = b.run("ping -c 2 -W 10 10.0.0.1", timeout=600)
        assert "2 packets transmitted, 2 packets received" in out, out
    finally:
        a.stop()
        b.stop()
    assert a.proc.returncode == 0 and b.proc.returncode == 0
