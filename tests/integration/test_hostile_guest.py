"""A hostile guest against every virtio device at once (guests/tests/hostile.c): the
largest requests the rules allow (256 MiB chains over one 256 KiB area; a stream of
frames and console input for its receive buffers), malformed ones
(loops, zero-length buffers, a 4 M-entry indirect table, 1,025-buffer chains, an
available index far ahead, buffers outside RAM), notify storms, and a second hart
scribbling over the first device's ring while the first one uses it.

Whatever it does, the host holds: the VM process's peak RSS stays under guest RAM + 100
MiB, the machine loop comes back to its host (the daemon's VM process serves its control
channel there) within 1 s every time, the devices report the malformed requests, and the
guest keeps running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "guests" / "tests" / "hostile.elf"
MiB = 1 << 20
GUEST_RAM = 256 * MiB
SECONDS = 6.0

HARNESS = r"""
import json, sys, time
from pyhv import BufferConsole, Machine, MachineConfig
from pyhv.vm.config import BalloonSpec, ConsoleSpec, DiskSpec, NetSpec, RngSpec

kernel, disk, switch, engine, seconds, memory = sys.argv[1:7]
devices = (DiskSpec(disk), NetSpec(switch), RngSpec(), BalloonSpec(), ConsoleSpec())
class Tail(BufferConsole):  # what a terminal shows: the output does not pile up here
    def write(self, data):
        super().write(data)
        del self.output[:-65536]

vm = Machine(MachineConfig(bios="none", kernel=kernel, memory=int(memory), smp=2,
                           engine=engine, devices=devices), console=Tail())
gaps = [0.0]
last = [time.monotonic()]

def between_rounds():
    now = time.monotonic()
    gaps.append(now - last[0])
    last[0] = now
    return False

# frames for the guest's receive buffers (256 MiB chains, scribbled over by hart 1)
import threading
from pyhv.net import SwitchPort
flooder = SwitchPort(switch)
stop = threading.Event()

def flood():
    frame = b"\xff" * 6 + bytes.fromhex("525400000099") + b"\x88\xb5" + bytes(100)
    while not stop.is_set():
        for _ in range(50):
            flooder.send(frame)
        time.sleep(0.002)

# ... and input for its console's receive buffers
for dev in vm.board.virtio_devices:
    if dev.name == "virtio-console":
        dev.input_source = lambda: b"hostile input " * 8

sender = threading.Thread(target=flood, daemon=True)
sender.start()
def guest_rounds():
    return int.from_bytes(vm.board.ram.read_bytes(0x80FF1000, 8), "little")

def every_device_hurt():
    errs = [s.errors for s in vm.board.virtio_slots if s.device is not None]
    return all(e > 0 for e in errs) and guest_rounds() >= 2

# at least `seconds`; on a slow (busy) host, on until the guest has gone round twice and
# every device has seen its malformed requests, for at most ten times as long
started = time.monotonic()
result = vm.run(timeout=float(seconds), stop_when=between_rounds)
while (result.reason == "timeout" and not every_device_hurt()
       and time.monotonic() - started < 10 * float(seconds)):
    last[0] = time.monotonic()  # (the gap between two run calls is the harness's own)
    result = vm.run(timeout=1.0, stop_when=between_rounds)
stop.set()
sender.join()
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({
    "reason": result.reason, "instructions": result.instructions,
    "max_gap": max(gaps), "rounds": len(gaps), "peak_rss": peak,
    "errors": {s.name: s.errors for s in vm.board.virtio_slots if s.device is not None},
    "stats": {s.name: getattr(s.device, "stats", None) for s in vm.board.virtio_slots
              if s.device is not None and isinstance(getattr(s.device, "stats", None), dict)},
    "guest_rounds": guest_rounds(),
}))
"""


def _run(tmp_path: Path, engine: str) -> dict:
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 30)  # sparse: 256 MiB reads are valid and read zeros
    env_switch = f"hostile-{tmp_path.name[-12:]}"
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, str(HOSTILE), str(disk), env_switch, engine,
         str(SECONDS), str(GUEST_RAM)],
        capture_output=True, text=True, timeout=10 * SECONDS + 120, stdin=subprocess.DEVNULL,
        env={**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_hostile_guest_cannot_hurt_the_host(tmp_path: Path, engine: str) -> None:
    if engine == "jit" and jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    got = _run(tmp_path, engine)
    assert got["reason"] == "timeout", got
    assert got["peak_rss"] < GUEST_RAM + 100 * MiB, got
    assert got["max_gap"] < 1.0, got
    assert got["guest_rounds"] >= 2, got  # the guest went on (its count, in its RAM)
    # every device that the guest can break reports it, and the frames and console input
    # sent to it reached its hostile receive buffers
    # (a receive queue is walked, and its malformed requests found, once input comes)
    for name in ("virtio-blk", "virtio-rng", "virtio-balloon", "virtio-net", "virtio-console"):
        assert any(name in k and v > 0 for k, v in got["errors"].items()), got["errors"]
    net = next(v for k, v in got["stats"].items() if "virtio-net" in k)
    assert net["rx_frames"] > 0, got["stats"]
