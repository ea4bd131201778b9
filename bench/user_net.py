#!/usr/bin/env python3
"""User-mode networking (``-netdev user``) on pyhv next to QEMU, measured in the same run.

The same Linux guest (../shared/guests Image + initramfs) boots on qemu-system-riscv64
and on pyhv (``pyhv-qemu``, so both get the very same command line with
``-netdev user,id=n0,hostfwd=tcp:127.0.0.1:PORT-:80,hostfwd=tcp:127.0.0.1:PORT-:5001``),
takes its DHCP lease, and then moves N MiB each way; every server is on the host's
127.0.0.1:

* host->guest via NAT: the guest ``wget``s N MiB from the host through 10.0.2.2
  (timed from the command to the guest's "done" line);
* guest->host via NAT: the guest ``wget --post-file``s N MiB of text (busybox sends the
  file as a C string) to the host's sink
  (timed by the sink, first byte to last);
* host->guest via hostfwd: a host client writes N MiB into the guest's ``nc -l``
  (timed from connect to the guest's "done" line);
* guest->host via hostfwd: a host client fetches N MiB from the guest's ``httpd``;
* latency: a host client's request of a small file from the guest's ``httpd`` through
  hostfwd, connect to last byte (median of R requests), and the guest's ``wget`` of a
  small file from the host (the mean of R in a row, busybox's process start included).

    python bench/user_net.py [--mib 32] [--requests 20] [--no-qemu]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUESTS = ROOT.parent / "shared" / "guests"
PROMPT = b"pyhv:/# "
DHCP = (r"printf '#!/bin/sh\ncase $1 in bound) ip addr add $ip/$mask dev $interface;"
        r" ip route add default via $router;; esac\n' > /tmp/dhcp.sh && chmod +x /tmp/dhcp.sh"
        " && ip link set eth0 up && udhcpc -i eth0 -q -n -t 5 -s /tmp/dhcp.sh")
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Guest:
    """A VM process whose serial console is driven through pipes."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.out = bytearray()
        self.seen = 0

    def expect(self, needle: bytes, timeout: float = 600) -> str:
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while needle not in self.out[self.seen:]:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise RuntimeError(f"no {needle!r} in: {self.out[-2000:].decode(errors='replace')}")
            if select.select([fd], [], [], min(left, 1.0))[0]:
                self.out += os.read(fd, 65536)
        pos = self.out.index(needle, self.seen) + len(needle)
        text = self.out[self.seen:pos].decode(errors="replace")
        self.seen = pos
        return text

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def run(self, command: str, timeout: float = 600) -> str:
        self.send(command)
        return self.expect(PROMPT, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("poweroff -f")
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class HostServers:
    """On 127.0.0.1: an HTTP source (GET /N: N bytes) and an HTTP sink (POST: reads the
    body, notes how long it took from its first byte to its last)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.uploads: list[tuple[int, float]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            header, _, body = head.partition(b"\r\n\r\n")
            lines = header.decode(errors="replace").split("\r\n")
            method, path = lines[0].split()[:2]
            if method == "POST":
                length = next(int(h.split(":", 1)[1]) for h in lines[1:]
                              if h.lower().startswith("content-length:"))
                first = time.monotonic()
                got = len(body)
                while got < length:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                self.uploads.append((got, time.monotonic() - first))
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                size = int(path.strip("/") or 0)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                block = bytes(1 << 20)
                left = size
                while left > 0:
                    n = min(left, len(block))
                    conn.sendall(block[:n])
                    left -= n

    def close(self) -> None:
        self.sock.close()


def http_get(port: int, path: str) -> tuple[int, float]:
    """(body bytes, seconds from connect to the last byte) of GET path via 127.0.0.1."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 20):
            data += chunk
    elapsed = time.monotonic() - start
    return len(data) - (data.find(b"\r\n\r\n") + 4), elapsed


def measure(name: str, argv: list[str], fwd_http: int, fwd_nc: int, servers: HostServers,
            mib: int, requests: int) -> dict[str, float]:
    size = mib * MiB
    g = Guest(argv)
    out: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        g.expect(PROMPT)
        out["boot_s"] = time.monotonic() - t0
        lease = g.run(DHCP, timeout=120)
        if "lease of 10.0.2.15" not in lease:
            raise RuntimeError(f"{name}: no DHCP lease: {lease}")
        g.run(f"mkdir -p /www && head -c {size} /dev/zero > /www/big && echo hi > /www/small"
              f" && httpd -p 80 -h /www && yes pyhv-user-net | head -c {size} > /tmp/up.bin")
        # host -> guest via NAT (10.0.2.2)
        t = time.monotonic()
        done = g.run(f"wget -q -O /dev/null http://10.0.2.2:{servers.port}/{size} && echo GOT-OK")
        out["down_nat_MiBps"] = mib / (time.monotonic() - t)
        assert "GOT-OK" in done, done
        # guest -> host via NAT
        servers.uploads.clear()
        done = g.run(f"wget -q -O /dev/null --post-file /tmp/up.bin "
                     f"http://10.0.2.2:{servers.port}/sink && echo PUT-OK")
        assert "PUT-OK" in done and servers.uploads and servers.uploads[-1][0] == size, (
            done, servers.uploads, size)
        out["up_nat_MiBps"] = mib / servers.uploads[-1][1]
        # host -> guest via hostfwd (nc -l in the guest)
        g.send("nc -l -p 5001 > /dev/null; echo NC-DONE")
        time.sleep(0.5)
        block = bytes(MiB)
        t = time.monotonic()
        for attempt in range(50):
            try:
                s = socket.create_connection(("127.0.0.1", fwd_nc), timeout=120)
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
        with s:
            t = time.monotonic()
            for _ in range(mib):
                s.sendall(block)
        g.expect(b"NC-DONE\r\n")
        out["down_fwd_MiBps"] = mib / (time.monotonic() - t)
        g.expect(PROMPT)
        # guest -> host via hostfwd (httpd in the guest)
        got, secs = http_get(fwd_http, "/big")
        assert got == size, (got, size)
        out["up_fwd_MiBps"] = mib / secs
        # latency
        rtts = []
        for _ in range(requests):
            got, secs = http_get(fwd_http, "/small")
            assert got == 3
            rtts.append(secs)
        out["fwd_request_ms"] = statistics.median(rtts) * 1000
        t = time.monotonic()
        g.run(f"i=0; while [ $i -lt {requests} ]; do "
              f"wget -q -O /dev/null http://10.0.2.2:{servers.port}/3; i=$((i+1)); done")
        out["guest_wget_ms"] = (time.monotonic() - t) / requests * 1000
    finally:
        g.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=32, help="MiB moved per direction")
    ap.add_argument("--requests", type=int, default=20, help="requests for the latency")
    ap.add_argument("--no-qemu", action="store_true", help="skip qemu-system-riscv64")
    args = ap.parse_args()
    image, initrd = GUESTS / "Image", GUESTS / "initramfs.cpio"
    servers = HostServers()
    fwd_http, fwd_nc = free_port(), free_port()
    common = ["-M", "virt", "-m", "256M", "-smp", "1", "-bios", "default",
              "-display", "none", "-monitor", "none", "-serial", "stdio",
              "-kernel", str(image), "-initrd", str(initrd), "-append", "console=ttyS0",
              "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{fwd_http}-:80,"
                         f"hostfwd=tcp:127.0.0.1:{fwd_nc}-:5001",
              "-device", "virtio-net-device,netdev=n0"]
    runners = []
    qemu = None if args.no_qemu else shutil.which("qemu-system-riscv64")
    if qemu:
        runners.append(("qemu-system-riscv64 (TCG)", [qemu, *common]))
    runners.append(("pyhv (jit)", [sys.executable, "-m", "pyhv.cli.qemu_compat", *common]))
    results = []
    for name, argv in runners:
        results.append((name, measure(name, argv, fwd_http, fwd_nc, servers, args.mib,
                                      args.requests)))
    servers.close()
    keys = [("down_nat_MiBps", "host->guest TCP via 10.0.2.2 (wget)", "MiB/s", True),
            ("up_nat_MiBps", "guest->host TCP via 10.0.2.2 (wget --post-file)", "MiB/s", True),
            ("down_fwd_MiBps", "host->guest TCP via hostfwd (nc -l)", "MiB/s", True),
            ("up_fwd_MiBps", "guest->host TCP via hostfwd (httpd)", "MiB/s", True),
            ("fwd_request_ms", "host request via hostfwd, connect to last byte", "ms", False),
            ("guest_wget_ms", "guest wget of 3 bytes via 10.0.2.2 (process incl.)", "ms",
             False)]
    print(f"user-mode networking, {args.mib} MiB per direction, {args.requests} requests; "
          f"libslirp on both sides")
    head = f"{'measure':52} " + " ".join(f"{n:>26}" for n, _ in results)
    if len(results) == 2:
        head += f" {'pyhv/QEMU':>10}"
    print(head)
    for key, label, unit, higher in keys:
        row = f"{label + ' (' + unit + ')':52} "
        row += " ".join(f"{r.get(key, float('nan')):>26.2f}" for _, r in results)
        if len(results) == 2:
            q, p = results[0][1].get(key), results[1][1].get(key)
            if q and p:
                ratio = p / q
                row += f" {ratio:>9.2f}x" + ("" if higher else " (lower is better)")
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
