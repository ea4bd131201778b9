"""A host directory shared into the Linux guest over virtio-9p (``--share``): the guest
mounts it with the kernel's own 9P client, reads what the host wrote, writes what the
host then reads (1 MiB with matching sha256 both ways), lists, makes, moves and removes
files; the host's files outside the share stay out of reach (``..``, absolute and
relative symlinks planted by the host); a read-only share refuses writes.
Also the command-line errors (fast). Marked slow where a kernel boots."""

from __future__ import annotations

import hashlib
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyhv.vm.config import ShareSpec

from .linux_guest import BOOT_TIMEOUT, IMAGE, INITRD, PROMPT, boot, needs_linux, shell

MOUNT = "mount -t 9p -o trans=virtio,version=9p2000.L"
MARKER = "HOST-ONLY-SECRET-7d41"


@pytest.fixture
def host_dirs(tmp_path: Path) -> tuple[Path, Path]:
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("written by the host\n")
    (share / "host-blob.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "secret.txt").write_text(MARKER + "\n")  # beside the share, not in it
    (share / "abs-escape").symlink_to(tmp_path / "secret.txt")
    (share / "rel-escape").symlink_to("../secret.txt")
    (share / "etc-link").symlink_to("/etc")
    many = share / "many"
    many.mkdir()
    for i in range(500):
        (many / f"file-{i:04}").write_text(str(i))
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("read only\n")
    return share, ro


@pytest.mark.slow
@needs_linux
def test_guest_mounts_reads_writes_and_cannot_escape(host_dirs: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    share, ro = host_dirs
    vm, console = boot("", devices=(ShareSpec(str(share), "hostshare"),
                                    ShareSpec(str(ro), "roshare", read_only=True)))
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        assert "9p" in shell(vm, console, "grep 9p /proc/filesystems")
        out = shell(vm, console, f"mkdir -p /mnt /ro && {MOUNT} hostshare /mnt && "
                    f"{MOUNT} roshare /ro && echo MOUNTED")
        assert "MOUNTED" in out, out

        # host -> guest
        assert "written by the host" in shell(vm, console, "cat /mnt/hello.txt")
        want = hashlib.sha256((share / "host-blob.bin").read_bytes()).hexdigest()
        assert want in shell(vm, console, "sha256sum /mnt/host-blob.bin")

        # guest -> host, a line and 1 MiB
        shell(vm, console, "echo 'written by the guest' > /mnt/guest.txt")
        assert (share / "guest.txt").read_text() == "written by the guest\n"
        shell(vm, console, "echo more >> /mnt/guest.txt; "
              "touch -d '2020-01-02 03:04:05' /mnt/hello.txt; chmod 600 /mnt/hello.txt")
        assert (share / "guest.txt").read_text() == "written by the guest\nmore\n"
        st = (share / "hello.txt").stat()
        assert st.st_mtime == 1577934245 and st.st_mode & 0o777 == 0o600
        out = shell(vm, console, "yes pyhv-share | head -c 1048576 > /mnt/blob.bin && "
                    "sha256sum /mnt/blob.bin")
        data = (share / "blob.bin").read_bytes()
        assert data == (b"pyhv-share\n" * 100_000)[: 1 << 20]
        assert hashlib.sha256(data).hexdigest() in out

        # ls -l shows the host's sizes; mkdir / mv / rm reach the host
        out = shell(vm, console, "ls -l /mnt")
        assert re.search(r"1048576 .* blob\.bin", out), out
        assert re.search(r"abs-escape -> " + re.escape(str(tmp_path / "secret.txt")), out)
        out = shell(vm, console,
                    "ls -l /mnt/many | grep -c ' file-'; cat /mnt/many/file-0499; echo")
        assert out.split()[:2] == ["500", "499"], out
        shell(vm, console, "mkdir /mnt/newdir && mv /mnt/guest.txt /mnt/newdir/moved.txt")
        assert (share / "newdir" / "moved.txt").read_text() == "written by the guest\nmore\n"
        assert not (share / "guest.txt").exists()
        shell(vm, console, "rm /mnt/newdir/moved.txt && rmdir /mnt/newdir && "
              "ln -s / /mnt/guest-link")
        assert not (share / "newdir").exists()
        assert os.readlink(share / "guest-link") == "/"  # stored as data, never followed

        # escapes: each resolves in the guest's own namespace, never to the host's file
        out = shell(vm, console, "cat /mnt/../../secret.txt /mnt/abs-escape /mnt/rel-escape "
                    "/mnt/etc-link/../secret.txt /mnt/guest-link/secret.txt; "
                    "ls /mnt/..; echo DONE")
        assert "DONE" in out and MARKER not in out, out
        out = shell(vm, console, "cd /mnt && cd .. && cd .. && pwd && ls; cd /")
        assert MARKER not in out and "share" not in out.split(), out

        # the read-only share
        assert "read only" in shell(vm, console, "cat /ro/keep.txt")
        out = shell(vm, console, "echo x > /ro/new.txt; echo y >> /ro/keep.txt; "
                    "mkdir /ro/d; rm /ro/keep.txt; echo RO-DONE")
        assert "Read-only file system" in out and "RO-DONE" in out, out
        assert sorted(p.name for p in ro.iterdir()) == ["keep.txt"]
        assert (ro / "keep.txt").read_text() == "read only\n"
        assert "UMOUNTED" in shell(vm, console, "umount /mnt && umount /ro && echo UMOUNTED")
    finally:
        vm.close()


@pytest.mark.slow
@needs_linux
def test_guest_reads_racing_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    """While the guest reads share/sub/inner.txt in a loop, a host thread swaps sub/ for
    a symlink to a directory outside the share (absolute, and relative: ../outside) and
    back: the guest reads the inner file or gets an error, never the outside one."""
    import threading

    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    (share / "sub" / "inner.txt").write_text("inner\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "inner.txt").write_text(MARKER + "\n")
    (share / "abs").symlink_to(outside)
    (share / "rel").symlink_to("../outside")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            for link in ("abs", "rel"):
                os.rename(share / "sub", share / "sub.real")
                os.rename(share / link, share / "sub")
                time.sleep(0.001)
                os.rename(share / "sub", share / link)
                os.rename(share / "sub.real", share / "sub")
                time.sleep(0.001)

    vm, console = boot("", devices=(ShareSpec(str(share), "race"),))
    flipper = threading.Thread(target=flip)
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        shell(vm, console, f"mkdir -p /mnt && {MOUNT} race /mnt")
        flipper.start()
        out = shell(vm, console, "i=0; while [ $i -lt 300 ]; do cat /mnt/sub/inner.txt; "
                    "i=$((i+1)); done 2>&1 | sort | uniq -c", timeout=120)
    finally:
        stop.set()
        if flipper.is_alive():
            flipper.join()
        vm.close()
    assert MARKER not in out, out
    assert re.search(r"^ *\d+ inner\r?$", out, re.M), out  # and it did read the file


@pytest.mark.slow
@needs_linux
def test_a_mounted_share_survives_a_snapshot_restore(tmp_path: Path) -> None:
    """The guest has the share mounted, a file open on a shell descriptor and its working
    directory inside the share; after a restore (fids walked again from their saved
    paths) all three still work."""
    from pyhv import BufferConsole, Machine

    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    (share / "sub" / "open.txt").write_text("held open across the snapshot\n")
    vm, console = boot("", devices=(ShareSpec(str(share), "snapshare"),))
    try:
        assert vm.run_until(PROMPT, timeout=BOOT_TIMEOUT), console.text[-3000:]
        out = shell(vm, console, f"mkdir -p /mnt && {MOUNT} snapshare /mnt && "
                    "exec 3< /mnt/sub/open.txt && cd /mnt/sub && echo READY; "
                    # the prompt the helpers wait for, spelled so that its echo is not it
                    "PS1=\"pyhv:/\"'# '", timeout=60)
        assert "READY" in out, out
        vm.snapshot(str(tmp_path / "vm.snap"))
    finally:
        vm.close()
    console2 = BufferConsole()
    vm2 = Machine.restore(str(tmp_path / "vm.snap"), console=console2)
    try:
        out = shell(vm2, console2, "cat <&3; ls; echo after > made-after.txt; pwd",
                    timeout=60)
        assert "held open across the snapshot" in out and "open.txt" in out, out
        assert (share / "sub" / "made-after.txt").read_text() == "after\n"
    finally:
        vm2.close()


@pytest.mark.slow
@needs_linux
def test_pyhv_run_share_option_boots_with_the_share(tmp_path: Path) -> None:
    """The command line end to end: `pyhv run --share DIR,tag=T,ro` in its own process,
    the guest typing at its console through pipes."""
    (tmp_path / "from-cli.txt").write_text("shared from the command line\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhv.cli.main", "run", "--kernel", str(IMAGE), "--initrd",
         str(INITRD), "--append", "console=ttyS0", "--share", f"{tmp_path},tag=cli,ro"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    out = bytearray()

    def expect(text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while text.encode() not in out:
            assert time.monotonic() < end and proc.poll() is None, out[-2000:].decode()
            if select.select([proc.stdout], [], [], 1.0)[0]:
                out.extend(os.read(proc.stdout.fileno(), 65536))

    try:
        expect(PROMPT, BOOT_TIMEOUT)
        proc.stdin.write(f"mkdir -p /mnt && {MOUNT} cli /mnt && cat /mnt/from-cli.txt && "
                         "touch /mnt/new; echo CLI-''DONE\n".encode())
        proc.stdin.flush()
        expect("CLI-DONE", 120)
        text = out.decode(errors="replace")
        assert "shared from the command line" in text and "Read-only file system" in text
        assert sorted(p.name for p in tmp_path.iterdir()) == ["from-cli.txt"]
    finally:
        proc.kill()
        proc.wait()


def _pyhv(*args: str, entry: str = "pyhv.cli.main") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", entry, *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("opt, words", [
    ("{missing},tag=t", ["--share", "does not exist"]),
    ("{share},tag=" + "x" * 80, ["--share", "tag"]),
    ("{share}", ["--share", "tag=TAG is required"]),
])
def test_bad_share_options_are_one_line_errors(tmp_path: Path, opt: str,
                                               words: list[str]) -> None:
    text = opt.format(missing=tmp_path / "missing", share=tmp_path)
    proc = _pyhv("run", "--bios", "none", "--kernel", "/nonexistent", "--share", text)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def test_duplicate_tags_are_refused(tmp_path: Path) -> None:
    proc = _pyhv("run", "--bios", "none", "--kernel", "/nonexistent",
                 "--share", f"{tmp_path},tag=same", "--share", f"{tmp_path},tag=same")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--share" in proc.stderr and "same" in proc.stderr


def test_qemu_virtfs_flags(tmp_path: Path) -> None:
    from pyhv.cli.qemu_compat import config_from_args

    base = ["-M", "virt", "-bios", "none", "-kernel", "/nonexistent"]
    cfg, _ = config_from_args([*base, "-virtfs", f"local,path={tmp_path},mount_tag=h,"
                               "security_model=none,readonly=on"])
    assert cfg.devices == (ShareSpec(str(tmp_path), "h", True),)
    cfg, _ = config_from_args([*base, "-fsdev", f"local,id=f0,path={tmp_path},"
                               "security_model=none", "-device",
                               "virtio-9p-device,fsdev=f0,mount_tag=t0"])
    assert cfg.devices == (ShareSpec(str(tmp_path), "t0", False),)
    proc = _pyhv(*base, "-virtfs", f"local,path={tmp_path},mount_tag=h,"
                 "security_model=mapped-xattr", entry="pyhv.cli.qemu_compat")
    assert proc.returncode != 0 and "security_model=mapped-xattr" in proc.stderr
