#!/usr/bin/env python3
"""Which 4 KiB pages of a benchmark program hold both code and writable data.

    python3 pages.py X.elf ...            prints, per ELF, the shared pages
    python3 pages.py --expect X.elf ...   also fails (exit 1) unless every X.elf shares
                                          a page and every X-aligned.elf shares none
Reads the section table with riscv64-unknown-elf-objdump -h."""

import subprocess
import sys

PAGE = 4096


def sections(elf: str) -> list[tuple[str, int, int, list[str]]]:
    out = subprocess.run(["riscv64-unknown-elf-objdump", "-h", elf], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    found = []
    for i, line in enumerate(out):
        f = line.split()
        if len(f) >= 7 and f[0].isdigit():
            flags = out[i + 1].replace(",", " ").split()
            found.append((f[1], int(f[3], 16), int(f[2], 16), flags))
    return found


def pages(lo: int, size: int) -> set[int]:
    return set(range(lo // PAGE, (lo + size - 1) // PAGE + 1)) if size else set()


def shared(elf: str) -> list[str]:
    code: set[int] = set()
    data: dict[int, list[str]] = {}
    for name, vma, size, flags in sections(elf):
        if "ALLOC" not in flags:
            continue
        if "CODE" in flags:
            code |= pages(vma, size)
        elif "READONLY" not in flags and not name.startswith(".rodata"):
            # (.rodata holds .init_array, so it is not READONLY: still not written)
            for p in pages(vma, size):
                data.setdefault(p, []).append(name)
    return [f"{p * PAGE:#x} (code + {' '.join(data[p])})" for p in sorted(code & data.keys())]


def main(argv: list[str]) -> int:
    expect = "--expect" in argv
    status = 0
    for elf in (a for a in argv if a != "--expect"):
        found = shared(elf)
        print(f"{elf}: {', '.join(found) if found else 'no page holds both code and data'}")
        want = not elf.endswith("-aligned.elf")
        if expect and bool(found) != want:
            print(f"{elf}: expected {'a shared page' if want else 'no shared page'}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
