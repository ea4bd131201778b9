"""Regenerate ``rvc_golden.txt.gz``: the golden RVC expansion table for ``test_compressed.py``.

Every 16-bit halfword whose low two bits are not ``0b11`` is expanded with
:func:`pyhv.isa.compressed.expand` and cross-checked against GNU objdump, used
as an independent reference decoder:

* each halfword and its 32-bit expansion are assembled with ``.insn`` into one
  ELF (``-march=rv64gc``, so objdump decodes exactly RV64GC), disassembled once
  with ``objdump -d -M no-aliases``;
* objdump's text for the compressed form (``c.addi a0,1``) is rewritten into the
  base form it is defined to expand to (``addi a0,a0,1``), branch/jump targets
  are made PC-relative, and the result must equal objdump's text for the 32-bit
  word we produced;
* halfwords objdump cannot decode (``.2byte``/``c.unimp``) must expand to 0;
  halfwords objdump decodes must expand to a non-zero word, except reserved
  ones it is lax about (:func:`_objdump_accepted_reserved`).  objdump decodes
  the HINT encodings (``c.li zero,1``, ``c.slli64 ra``, ``c.lui zero,0x1``...),
  so their no-op expansions are checked like any other instruction.

Only if every halfword checks out is the golden file written, as gzip'd lines of
``HHHH WWWWWWWW`` (halfword, expected 32-bit word; 0 means illegal/reserved).

Rerun (needs binutils for RISC-V, e.g. Debian's ``binutils-riscv64-unknown-elf``)::

    python tests/unit/data/make_rvc_golden.py

Pass ``--check`` to only compare against objdump without rewriting the file.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pyhv.isa.compressed import expand

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "rvc_golden.txt.gz"
PREFIX = "riscv64-unknown-elf-"

# Compressed mnemonic -> how to rebuild the base instruction's operand list from
# the compressed one's operands (a list of strings).  Immediates / register
# names come straight from objdump, so the bit scrambling is checked by it.
_REWRITE = {
    "c.addi4spn": lambda o: ("addi", o),
    "c.fld": lambda o: ("fld", o),
    "c.lw": lambda o: ("lw", o),
    "c.ld": lambda o: ("ld", o),
    "c.fsd": lambda o: ("fsd", o),
    "c.sw": lambda o: ("sw", o),
    "c.sd": lambda o: ("sd", o),
    "c.nop": lambda o: ("addi", ["zero", "zero", o[0] if o else "0"]),
    "c.addi": lambda o: ("addi", [o[0], o[0], o[1]]),
    "c.addiw": lambda o: ("addiw", [o[0], o[0], o[1]]),
    "c.li": lambda o: ("addi", [o[0], "zero", o[1]]),
    "c.addi16sp": lambda o: ("addi", [o[0], o[0], o[1]]),
    "c.lui": lambda o: ("lui", o),
    "c.srli": lambda o: ("srli", [o[0], o[0], o[1]]),
    "c.srai": lambda o: ("srai", [o[0], o[0], o[1]]),
    "c.slli": lambda o: ("slli", [o[0], o[0], o[1]]),
    "c.srli64": lambda o: ("srli", [o[0], o[0], "0"]),
    "c.srai64": lambda o: ("srai", [o[0], o[0], "0"]),
    "c.slli64": lambda o: ("slli", [o[0], o[0], "0"]),
    "c.andi": lambda o: ("andi", [o[0], o[0], o[1]]),
    "c.sub": lambda o: ("sub", [o[0], o[0], o[1]]),
    "c.xor": lambda o: ("xor", [o[0], o[0], o[1]]),
    "c.or": lambda o: ("or", [o[0], o[0], o[1]]),
    "c.and": lambda o: ("and", [o[0], o[0], o[1]]),
    "c.subw": lambda o: ("subw", [o[0], o[0], o[1]]),
    "c.addw": lambda o: ("addw", [o[0], o[0], o[1]]),
    "c.j": lambda o: ("jal", ["zero", o[0]]),
    "c.beqz": lambda o: ("beq", [o[0], "zero", o[1]]),
    "c.bnez": lambda o: ("bne", [o[0], "zero", o[1]]),
    "c.fldsp": lambda o: ("fld", o),
    "c.lwsp": lambda o: ("lw", o),
    "c.ldsp": lambda o: ("ld", o),
    "c.fsdsp": lambda o: ("fsd", o),
    "c.swsp": lambda o: ("sw", o),
    "c.sdsp": lambda o: ("sd", o),
    "c.jr": lambda o: ("jalr", ["zero", f"0({o[0]})"]),
    "c.jalr": lambda o: ("jalr", ["ra", f"0({o[0]})"]),
    "c.mv": lambda o: ("add", [o[0], "zero", o[1]]),
    "c.add": lambda o: ("add", [o[0], o[0], o[1]]),
    "c.ebreak": lambda o: ("ebreak", o),
}

_BRANCHES = {"c.j", "c.beqz", "c.bnez", "jal", "beq", "bne"}

_LINE = re.compile(r"^\s*([0-9a-f]+):\s+([0-9a-f]+)\s+(\S+)\s*(.*?)\s*$")


def _objdump_accepted_reserved(half: int) -> bool:
    """Reserved encodings objdump still decodes; the spec makes them illegal.

    Only ``c.addi16sp sp, 0`` (0x6101): "the code point with nzimm=0 is reserved".
    """
    return half == 0x6101


def _disassemble(pairs: list[tuple[int, int]], tmp: Path) -> list[tuple[int, str, str]]:
    src = tmp / "rvc.s"
    obj = tmp / "rvc.o"
    lines = []
    for half, word in pairs:
        lines.append(f".insn 2, {half:#x}")
        if word:
            lines.append(f".insn 4, {word:#x}")
    src.write_text("\n".join(lines) + "\n")
    subprocess.run([PREFIX + "as", "-march=rv64gc", "-o", str(obj), str(src)], check=True)
    out = subprocess.run(
        [PREFIX + "objdump", "-d", "-M", "no-aliases", str(obj)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m and not line.rstrip().endswith(">:"):
            result.append((int(m.group(1), 16), m.group(3), m.group(4)))
    return result


_NUM = re.compile(r"^(-?(?:0x[0-9a-f]+|[0-9]+))(\(.*\))?$")


def _normalise(pc: int | None, mnem: str, ops: str) -> tuple[str, list[str]]:
    """Canonical (mnemonic, operands) for comparison.

    Drops objdump's ``# address`` comments, writes numbers in decimal and makes
    branch/jump targets relative to ``pc`` (``None``: already relative).
    """
    ops = ops.split("#", 1)[0].strip()  # objdump's "# <address>" annotations
    operands = ops.split(",") if ops else []
    if pc is not None and mnem in _BRANCHES:
        target = operands[-1].split()[0]
        operands[-1] = str(int(target, 16) - pc)
    for k, op in enumerate(operands):
        m = _NUM.match(op)
        if m:
            operands[k] = str(int(m.group(1), 0)) + (m.group(2) or "")
    return mnem, operands


def build() -> tuple[dict[int, int], list[str]]:
    halves = [h for h in range(0x10000) if h & 3 != 3]
    pairs = [(h, expand(h)) for h in halves]
    with tempfile.TemporaryDirectory() as d:
        dis = _disassemble(pairs, Path(d))
    errors: list[str] = []
    exceptions = 0
    golden: dict[int, int] = {}
    i = 0
    for half, word in pairs:
        pc, mnem, ops = dis[i]
        i += 1
        golden[half] = word
        if mnem in (".2byte", "c.unimp"):
            if word:
                errors.append(f"{half:04x}: objdump says illegal, expand gave {word:08x}")
                i += 1  # skip the 32-bit line we emitted
            continue
        if not word:
            if _objdump_accepted_reserved(half):
                exceptions += 1
                continue
            errors.append(f"{half:04x}: objdump decodes '{mnem} {ops}', expand gave 0")
            continue
        cmnem, cops = _normalise(pc, mnem, ops)
        rewrite = _REWRITE.get(cmnem)
        if rewrite is None:
            errors.append(f"{half:04x}: no rewrite rule for '{mnem} {ops}'")
            i += 1
            continue
        want = rewrite(cops)
        want = _normalise(None, want[0], ",".join(want[1]))
        pc2, mnem2, ops2 = dis[i]
        i += 1
        got = _normalise(pc2, mnem2, ops2)
        if (want[0], list(want[1])) != (got[0], got[1]):
            errors.append(f"{half:04x} '{mnem} {ops}' -> {word:08x} '{mnem2} {ops2}' (want {want})")
    assert i == len(dis), (i, len(dis))
    print(f"{exceptions} documented objdump disagreements (reserved encodings)")
    return golden, errors


def main() -> int:
    if shutil.which(PREFIX + "objdump") is None:
        print(f"{PREFIX}objdump not found", file=sys.stderr)
        return 2
    golden, errors = build()
    for e in errors[:50]:
        print(e)
    if errors:
        print(f"{len(errors)} mismatches; golden file NOT written", file=sys.stderr)
        return 1
    legal = sum(1 for w in golden.values() if w)
    print(f"{len(golden)} halfwords checked against objdump, {legal} legal")
    if "--check" not in sys.argv[1:]:
        text = "".join(f"{h:04x} {w:08x}\n" for h, w in sorted(golden.items()))
        with gzip.GzipFile(GOLDEN, "wb", mtime=0) as f:
            f.write(text.encode())
        print(f"wrote {GOLDEN}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
