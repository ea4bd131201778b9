#!/usr/bin/env bash
# Run every pyhv guest test program on QEMU (virt, -bios none) and print a
# PASS/FAIL table.  A row passes when the sifive,test finisher exit status and
# the last line of UART output are the expected ones.
#
#   guests/tests/run_on_qemu.sh            main runs + every program again with -smp 2
#   guests/tests/run_on_qemu.sh --quick    main runs only
#
# Environment: QEMU (default qemu-system-riscv64), TIMEOUT seconds (default 20),
# KEEP_LOGS=dir to keep each run's output.
set -u

HERE="$(cd "$(dirname "$0")" && pwd)"
QEMU="${QEMU:-qemu-system-riscv64}"
TIMEOUT="${TIMEOUT:-20}"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

# name | elf (relative to guests/tests) | -smp | expected exit | expected last line
TESTS=(
  "rv64i|rv64i.elf|1|0|PASS rv64i"
  "rv64m|rv64m.elf|1|0|PASS rv64m"
  "rv64a|rv64a.elf|1|0|PASS rv64a"
  "rvc|rvc.elf|1|0|PASS rvc"
  "fp|fp.elf|1|0|PASS fp"
  "traps|traps.elf|1|0|PASS traps"
  "paging|paging.elf|1|0|PASS paging"
  "timer_irq|timer_irq.elf|1|0|PASS timer_irq"
  "plic_uart|plic_uart.elf|1|0|PASS plic_uart"
  "smp|smp.elf|4|0|PASS smp"
  "exit_code|exit_code.elf|1|3|FAIL exit_code: deliberate exit code 3"
  "exit_pass|exit_pass.elf|1|0|PASS exit_pass"
  "debugme|debugme.elf|1|0|PASS debugme"
  "bench-small|../bench/bench-small.elf|1|0|PASS bench-small"
  "bench|../bench/bench.elf|1|0|PASS bench"
)

if ! command -v "$QEMU" >/dev/null 2>&1; then
  echo "error: $QEMU not found" >&2
  exit 2
fi

LOGDIR="${KEEP_LOGS:-$(mktemp -d)}"
mkdir -p "$LOGDIR"
failures=0
total=0

printf '%-12s %4s %5s %5s  %-6s %s\n' PROGRAM SMP WANT GOT RESULT "LAST LINE"
printf '%-12s %4s %5s %5s  %-6s %s\n' ------- --- ---- --- ------ ---------

run_one() {
  local name="$1" elf="$2" smp="$3" want="$4" want_line="$5"
  local log="$LOGDIR/$name-smp$smp.log" got last result
  if [ ! -f "$HERE/$elf" ]; then
    printf '%-12s %4s %5s %5s  %-6s %s\n' "$name" "$smp" "$want" "-" FAIL "(missing $elf)"
    failures=$((failures + 1)); total=$((total + 1))
    return
  fi
  timeout "$TIMEOUT" "$QEMU" -M virt -m 128M -smp "$smp" -nographic -bios none \
      -kernel "$HERE/$elf" </dev/null >"$log" 2>&1
  got=$?
  last="$(tr -d '\r' <"$log" | grep -v '^qemu-system' | grep -v '^$' | tail -n 1)"
  if [ "$got" = "$want" ] && [ "$last" = "$want_line" ]; then
    result=PASS
  else
    result=FAIL
    failures=$((failures + 1))
  fi
  total=$((total + 1))
  [ "$got" = 124 ] && last="(timeout) $last"
  printf '%-12s %4s %5s %5s  %-6s %s\n' "$name" "$smp" "$want" "$got" "$result" "$last"
}

for t in "${TESTS[@]}"; do
  IFS='|' read -r name elf smp want line <<<"$t"
  run_one "$name" "$elf" "$smp" "$want" "$line"
done

if [ "$QUICK" = 0 ]; then
  # every program again with a second hart that must stay parked
  for t in "${TESTS[@]}"; do
    IFS='|' read -r name elf smp want line <<<"$t"
    [ "$smp" = 1 ] || continue
    case "$name" in bench) continue ;; esac
    run_one "$name" "$elf" 2 "$want" "$line"
  done
fi

echo
echo "$((total - failures))/$total runs as expected (logs in $LOGDIR)"
[ -z "${KEEP_LOGS:-}" ] && rm -rf "$LOGDIR"
[ "$failures" = 0 ]
