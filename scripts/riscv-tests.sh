#!/usr/bin/env bash
# Build the official RISC-V ISA tests (riscv-tests) beside pyhv, with pyhv's own test
# environment (scripts/riscv-tests-env), for QEMU's virt board and pyhv:
#
#   bash scripts/riscv-tests.sh /path/to/riscv-tests [OUTDIR]
#
# OUTDIR (default: riscv-tests-build beside the checkout) gets one ELF per test of the
# single-core user-level suites: rv64ui, rv64um, rv64ua, rv64uf, rv64ud, rv64uzba,
# rv64uzbb, rv64uzbs and rv64uzicond. Nothing of riscv-tests is copied into pyhv. Then:
#
#   PYHV_RISCV_TESTS=OUTDIR python3 -m pytest -q tests/conformance/test_riscv_tests.py
set -euo pipefail
src=${1:?usage: riscv-tests.sh RISCV_TESTS_DIR [OUTDIR]}
out=${2:-$(dirname "$(realpath "$src")")/riscv-tests-build}
here=$(dirname "$(realpath "$0")")/riscv-tests-env
cc=${CROSS:-riscv64-unknown-elf-}gcc
mkdir -p "$out"
march=rv64gc_zba_zbb_zbs
suites="rv64ui rv64um rv64ua rv64uf rv64ud rv64uzba rv64uzbb rv64uzbs rv64uzicond"
zicond=-DPYHV_ZICOND_MACROS  # (the env writes Zicond with .insn for an older assembler)
if echo 'czero.eqz a0, a1, a2' | ${CROSS:-riscv64-unknown-elf-}as -march=${march}_zicond \
        -o /dev/null - 2>/dev/null; then
    march=${march}_zicond
    zicond=
fi
n=0
for suite in $suites; do
    for t in "$src/isa/$suite"/*.S; do
        name=$(basename "$t" .S)
        "$cc" -march=$march $zicond -mabi=lp64 -static -mcmodel=medany -fvisibility=hidden \
            -nostdlib -nostartfiles -I"$here" -I"$src/isa/macros/scalar" \
            -T"$here/link.ld" "$t" -o "$out/$suite-$name.elf"
        n=$((n + 1))
    done
done
echo "built $n tests into $out"
