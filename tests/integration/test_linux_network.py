"""Two Linux VMs, each in its own `pyhv run` process, ping each other through the
in-host virtual switch (virtio-net). Marked slow: two real kernels boot."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from .linux_guest import IMAGE, INITRD, PROMPT, needs_linux

pytestmark = [pytest.mark.slow, needs_linux]
BOOT_TIMEOUT = float(os.environ.get("PYHV_TEST_BOOT_TIMEOUT", "900"))


class GuestProcess:
    """A `pyhv run` child whose serial console is driven through pipes."""

    def __init__(self, switch: str, mac: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "run", "--kernel", str(IMAGE),
             "--initrd", str(INITRD), "--append", "console=ttyS0",
             "--net", f"switch={switch},mac={mac}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.out = bytearray()
        self.seen = 0

    def expect(self, text: str, timeout: float) -> str:
        needle = text.encode()
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while needle not in self.out[self.seen :]:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                tail = self.out[-3000:].decode(errors="replace")
                raise AssertionError(f"no {text!r} in:\n{tail}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                self.out += os.read(fd, 65536)
        pos = self.out.index(needle, self.seen) + len(needle)
        chunk = self.out[self.seen : pos].decode(errors="replace")
        self.seen = pos
        return chunk

    def run(self, command: str, timeout: float = 300) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        return self.expect(PROMPT, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"poweroff -f\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=120)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def test_two_vms_ping_each_other_over_the_switch(tmp_path) -> None:
    switch = f"pingtest-{os.getpid()}"
    a = GuestProcess(switch, "52:54:00:00:00:0a")
    b = GuestProcess(switch, "52:54:00:00:00:0b")
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
