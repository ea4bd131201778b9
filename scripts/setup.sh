#!/usr/bin/env bash
# Install what pyhv and its tests need on a fresh Debian machine, then pyhv itself.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: OpenSBI firmware (qemu-system-data), U-Boot (u-boot-qemu), and QEMU
# itself as the reference the benchmarks compare against (qemu-system-misc).
need=()
[ -f /usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin ] || need+=(qemu-system-data)
[ -f /usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin ] || need+=(u-boot-qemu)
command -v qemu-system-riscv64 >/dev/null || need+=(qemu-system-misc)
command -v dtc >/dev/null || need+=(device-tree-compiler)  # DTB checks in the tests
# The dashboard: xterm.js comes from the npm registry; its browser test drives Debian's
# Chromium through its chromedriver (no browser download).
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
command -v gdb-multiarch >/dev/null || need+=(gdb-multiarch)  # the gdb stub's tests
# vmlinux-to-elf (a test extra: the Linux guest's symbols for the gdb test) depends on
# minilzo, which pip builds from source: a C compiler and Python's headers
command -v gcc >/dev/null || need+=(gcc)
python3 -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(
  sysconfig.get_paths()["include"], "Python.h")))' || need+=(python3-dev)
# user-mode networking (--net user): libslirp, the TCP/IP stack QEMU's -netdev user uses;
# its tests use unshare (util-linux) and ip (iproute2) for a private network namespace
dpkg -s libslirp0 >/dev/null 2>&1 || need+=(libslirp0)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

python3 -m pip install -q -e '.[test]'
# xterm.js for the dashboard's consoles (pyhv/host/dashboard.py serves it from here; never
# in git): pinned, installed once.
XTERM_VERSION=6.0.0
vendor=src/pyhv/host/web/vendor
if ! grep -qs "\"version\": \"$XTERM_VERSION\"" "$vendor/node_modules/@xterm/xterm/package.json"; then
  npm install --silent --no-audit --no-fund --no-save --prefix "$vendor" "@xterm/xterm@$XTERM_VERSION"
fi
# Byte-compile pyhv as a regular pip install does, so that every pyhv process starts from
# .pyc files even where PYTHONDONTWRITEBYTECODE is set (it would recompile every module
# from source at each start, ~0.2 s).
python3 -m compileall -q src/pyhv
# Likewise build pyhv's own native code once (the JIT's dispatcher and native interpreter,
# kept in ~/.cache/pyhv/runtime), so no run pays for it; nothing to do without llvmlite.
python3 -c 'from pyhv.cpu.engines import jit_unavailable_reason as r; r()'
