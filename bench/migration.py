#!/usr/bin/env python3
"""Live migration of a Linux guest between two pyhv processes over loopback TCP.

The source process boots ``../shared/guests`` (256 MiB, JIT) to its shell and starts a
counter in the background (``echo C$i`` every 10 ms); a destination process (this
script with ``--receive``) listens on 127.0.0.1. After a second of counting the source
migrates the running guest (vm/migration.py) and prints the rounds, pages sent, total
time and downtime (the source's last guest instruction to the destination's machine
ready, on the host's monotonic clock); the destination runs the guest on for a second
and hands back what its console printed; the counter lines of both consoles together
must run on with no value lost or repeated. Then the same with the guest also writing
16 MiB of fresh random data to tmpfs again and again (``dd if=/dev/urandom``), as fast as
it can (pages rewritten with the same bytes are not sent again: what counts is what
the destination does not have). Target (issue 17): downtime
under 100 ms.

    python3 bench/migration.py [--memory 256M] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pyhv import BufferConsole, Machine, MachineConfig  # noqa: E402
from pyhv.vm.config import parse_memory  # noqa: E402
from pyhv.vm.migration import migrate, receive  # noqa: E402

GUESTS = ROOT.parent / "shared" / "guests"
PROMPT = b"pyhv:/# "
COUNTER = "i=0; while [ $i -lt 1000000 ]; do echo C$i; i=$((i+1)); usleep 10000; done &"
LINE = r"(?m)C(\d+)\r?$"  # (a line may follow the echo of a typed command)
HAMMER = "while :; do dd if=/dev/urandom of=/tmp/f bs=1M count=16 2>/dev/null; done &"


def destination(token: str) -> int:
    """--receive: accept one migration, run the guest a second, print its console."""
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    console = BufferConsole()
    vm = receive(conn, console=console, token=token)
    conn.close()
    try:
        vm.run(timeout=1.0)
        json.dump({"output": console.text}, sys.stdout)
    finally:
        vm.close()
    return 0


def run_for(vm: Machine, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        vm.run(timeout=end - time.monotonic())


def once(memory: str, hammer: bool) -> dict[str, float]:
    token = secrets.token_hex(16)
    dst = subprocess.Popen([sys.executable, __file__, "--receive", token],
                           stdout=subprocess.PIPE, text=True)
    assert dst.stdout is not None
    port = int(dst.stdout.readline())
    cfg = MachineConfig(kernel=str(GUESTS / "Image"), initrd=str(GUESTS / "initramfs.cpio"),
                        memory=parse_memory(memory), append="console=ttyS0", engine="jit")
    console = BufferConsole()
    vm = Machine(cfg, console=console)
    try:
        if not vm.run_until(PROMPT, timeout=600):
            raise SystemExit(f"no shell prompt: {console.text[-500:]}")
        if hammer:
            console.send(HAMMER + "\n")
        console.send(COUNTER + "\n")
        run_for(vm, 1.0)
        sock = socket.create_connection(("127.0.0.1", port))
        result = migrate(vm, sock, token=token)
        sock.close()
        if not result.ok:
            raise SystemExit(f"migration failed: {result.reason}")
        before = console.text
    finally:
        vm.close()
    out, _ = dst.communicate(timeout=120)
    after = json.loads(out)["output"]
    seq = [int(n) for n in re.findall(LINE, before + after)]
    if not seq or seq != list(range(seq[0], seq[0] + len(seq))):
        bad = next((i for i in range(1, len(seq)) if seq[i] != seq[i - 1] + 1), 0)
        lines = len(re.findall(LINE, before))
        raise SystemExit(f"the counter lost or repeated values: {seq[max(0, bad - 5):bad + 5]} "
                         f"(the source printed {lines} lines)")
    return {"downtime": result.downtime_seconds, "total": result.total_seconds,
            "rounds": result.rounds, "pages": result.pages_sent,
            "last": result.last_round_pages, "counted": len(seq),
            "after": len(re.findall(LINE, after))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memory", default="256M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--receive", metavar="TOKEN", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receive:
        return destination(args.receive)
    print(f"Linux at its shell ({args.memory}, jit), a counter every 10 ms, migrated "
          f"over loopback TCP to a second process (median of {args.runs})")
    print(f"{'guest':<26} {'downtime ms':>11} {'total ms':>9} {'rounds':>6} "
          f"{'pages sent':>10} {'last round':>10} {'counter lines':>13}")
    for hammer in (False, True):
        runs = [once(args.memory, hammer) for _ in range(args.runs)]

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        name = "counter + 16 MiB urandom loop" if hammer else "counter"
        print(f"{name:<26} {med('downtime') * 1e3:11.1f} {med('total') * 1e3:9.0f} "
              f"{med('rounds'):6.0f} {med('pages'):10.0f} {med('last'):10.0f} "
              f"{med('counted'):13.0f}")
    print("no counter value lost or repeated in any run (source's lines, then the "
          "destination's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
