"""Tier 1 of the fast engine: hot guest code compiled into Python functions, one per block.

Why: the interpreter pays a dict lookup, a closure call and a ``return npc`` per guest
instruction. The translator generates one Python function per guest block in which
integer ALU operations, loads, stores and branches are plain Python statements on Python
locals, so only one dispatch per block remains (none per loop iteration). ``compile()``
is expensive (about 60 µs per guest instruction here), so code runs *cold* first, one
instruction at a time through the interpreter's own closures, and a block is compiled
only once ``threshold`` instructions have run cold from its start pc.

How:

* **One semantics.** Instructions come from the one decoder (isa/decoder.py). The inline
  Python is generated from the interpreter's ``ALU`` / ``BRANCH`` expression tables and
  its ``LOADS`` / ``STORES`` MMU methods; every other instruction (CSR, AMO, LR/SC, F/D,
  system) is a call to the closure that the interpreter's ``make_op`` builds for it.
* **Blocks.** A block is a small tree of paths from its start pc. A path goes through
  not-taken conditional branches and through ``jal`` to targets in the same page; it
  ends with (and includes) ``jalr``, a ``jal`` it does not follow, any instruction whose
  closure may raise :class:`SliceBreak`, :class:`YieldSlice` or :class:`CounterAccess`
  or always traps (CSR accesses, ``mret``/``sret``/``wfi``/``sfence.vma``/``pause``,
  ``ecall``/``ebreak``/illegal), ``fence.i``, or the last instruction that starts in
  the start pc's 4 KiB virtual page. The taken side of a branch is either
  a side exit or, while the block's budget of ``MAX_BLOCK`` instructions lasts, a path of
  its own (if-then-else code stays inside the function). A branch or jump back to the
  start makes the function a ``while`` loop, bounded by the run loop's remaining budget.
  Code fetched from outside RAM (the boot ROM) is never read ahead and never compiled.
* **Registers** read repeatedly or written are Python locals. Outside loops every write
  also goes to ``hart.x`` (``x[5] = r5 = ...``), so exits, traps and interpreter
  closures need no write-back. Loop functions load their locals on entry and write the
  written ones back at every exit, before every closure call and, through a ``try``/
  ``except`` around the loop (free in CPython 3.11 until something is raised), when
  anything is raised. Constants and known value widths are propagated along each path,
  so ``auipc``/``lui`` address arithmetic folds and provably useless 64-bit masks and
  signed-compare fix-ups go. Where data translation is off (M-mode, bare S-mode; part of
  the cache key) loads and stores index guest RAM inline on small offsets and call the
  MMU only for MMIO, misaligned or out-of-range addresses; otherwise they call the MMU.
* **Precise traps.** When instruction j of a block raises, the hart (after the loop
  write-back) holds exactly the effects of the instructions before it. The run loop only
  needs j, and gets it for free from the exception's traceback: every instruction is
  emitted on its own source lines, so the line number in the block's frame maps back to
  j, and the frame's ``k`` counts the instructions of earlier loop iterations. Nothing is
  counted on the fast path. From j the loop derives the faulting pc, the exact retired
  count (instret), where a :class:`StopRequest` resumes and which closure performs an
  exact counter access. Cold code runs like the interpreter: pc is the faulting one.
* **Caching and invalidation** follow the interpreter: per translation context
  (privilege, satp, data translation on/off) one dict of compiled blocks and one of
  decoded instructions for cold code, keyed by virtual pc; every physical page an
  instruction came from is registered with the machine's :class:`CodeWatch`, so a store
  into it (by any hart, the page walker or a device) drops what was built from it, and
  SFENCE.VMA drops the virtual pages it names (``flush``/``flush_page``, installed as
  ``hart.flush_decoded*``). A store that drops the block executing it ends the block
  right after the store, so even self-modifying code without FENCE.I sees its new
  instructions at once, as on the interpreter (and QEMU). A block dropped again and
  again (code sharing a page with written data) needs twice as many cold instructions
  before each recompilation.
* **Interrupts** are checked at the start of each ``run`` slice, as in the interpreter.
  ``run(budget)`` runs whole blocks and loop iterations until the budget is used up, so
  it may overshoot by less than one path (``MAX_BLOCK`` instructions); the count it
  returns and ``hart.instret`` are exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..isa import csr as C
from ..isa.decoder import Decoded, decode
from .hart import Hart
from .interp import (
    _MAX_CONTEXTS,
    _NS,
    ALU,
    BRANCH,
    LOADS,
    M64,
    PAUSE,
    SIGN,
    STORES,
    CounterAccess,
    GuestCrash,
    SliceBreak,
    StopRequest,
    YieldSlice,
    make_op,
)
from .mmu import CodeWatch
from .trap import Trap

MAX_BLOCK = 64  # instructions per block path at most
# Instructions run cold (through interpreter closures) from a block's start pc before the
# block is compiled: compiling costs about as much as interpreting a thousand instructions.
HOT_THRESHOLD = 1000

_BRANCHES = frozenset(BRANCH)
# Instructions that always end a block (inclusive), besides branches and jal not followed.
_ENDS_BLOCK = frozenset(
    {"jalr", "ecall", "ebreak", "illegal", "mret", "sret", "wfi", "sfence.vma", "fence.i",
     "csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci"}
)
_VARS = re.compile(r"\b(a|b|i|si|sh|M64|SIGN)\b")
_LITERALS = {"M64": hex(M64), "SIGN": hex(SIGN)}
_MASKED = " & M64"
# "(((((E) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & M64)": the table's sign extension
# of a 32-bit result, emitted as a cheaper conditional.
_SEXT32 = re.compile(r"^\(\(\(\(\((.*)\) & 0xFFFFFFFF\) \^ 0x80000000\) - 0x80000000\) & M64\)$")
_HI32 = 0xFFFFFFFF00000000
# Signed compares that equal their unsigned forms when both operands are below 2**63.
_UNSIGNED_FORM = {"blt": "bltu", "bge": "bgeu", "slt": "sltu", "slti": "sltiu"}
# Inline loads: (ram view attribute, size, sign-extend to 64 bits, result bits).
_LOAD_VIEWS = {
    "lb": ("s8", 1, True, 64), "lh": ("s16", 2, True, 64), "lw": ("s32", 4, True, 64),
    "ld": ("u64", 8, False, 64), "lbu": ("u8", 1, False, 8), "lhu": ("u16", 2, False, 16),
    "lwu": ("u32", 4, False, 32),
}
_STORE_VIEWS = {"sb": ("u8", 1), "sh": ("u16", 2), "sw": ("u32", 4), "sd": ("u64", 8)}
_VIEW_SHIFT = {1: 0, 2: 1, 4: 2, 8: 3}
_IDENT = re.compile(r"\b[A-Za-z]")
_MISS = -(1 << 70)  # TLB miss: far below any RAM offset

Block = Callable[[int], tuple[int, int]]


class _StoreExit(Exception):
    """Raised by a block right after a store that dropped the block itself."""


_STORE_EXIT = _StoreExit()


# A block is a tree of paths: [pc, decoded, taken] entries, where ``taken`` is the path
# compiled for a taken conditional branch (None: the branch leaves the block).
Path = list[list[Any]]


class BlockInfo:
    """What the run loop needs to know about a block when one of its instructions raises.

    Per instruction (in source order; a block tree may hold a pc more than once): its pc,
    where it resumes, its closure (if it runs one) and how many instructions of the
    current iteration retired before it.
    """

    __slots__ = ("start", "pcs", "npcs", "ops", "depth", "lines", "code")

    def __init__(self, start: int) -> None:
        self.start = start
        self.pcs: list[int] = []
        self.npcs: list[int] = []
        self.ops: list[Any] = []
        self.depth: list[int] = []
        self.lines: list[int] = []  # source line -> instruction
        self.code: Any = None  # the code object of the block's function

    def add(self, pc: int, d: Decoded, depth: int) -> int:
        self.pcs.append(pc)
        self.npcs.append((pc + d.length) & M64)
        self.ops.append(None)
        self.depth.append(depth)
        return len(self.pcs) - 1


def _walk(tree: Path):
    """Every (pc, decoded) of a block tree."""
    for pc, d, taken in tree:
        yield pc, d
        if taken:
            yield from _walk(taken)


def _subst(expr: str, values: dict[str, str]) -> str:
    """Put operands (and the M64/SIGN constants, as literals) into a table expression."""
    values = {**_LITERALS, **values}
    return _VARS.sub(lambda m: values[m.group(1)], expr)


@lru_cache(maxsize=1 << 12)
def _fold(expr: str) -> int | None:
    """The value of an expression without register operands, else None."""
    # Any name but the table helpers (_div, ...) is a register, temporary or call.
    if _IDENT.search(expr):
        return None
    return eval(expr, dict(_NS)) & M64  # noqa: S307 - our own generated expression


def _bits(v: int) -> int:
    return max(v.bit_length(), 1)


def _ends_block(d: Decoded) -> bool:
    """Whether ``d`` always ends a block (besides branches and jal not followed)."""
    return d.name in _ENDS_BLOCK or d.raw == PAUSE  # pause may yield the slice


def _writes_x(name: str) -> bool:
    """Whether an instruction run through its closure may write an integer register."""
    if name.startswith(("f", "fence")):  # F/D: only compares, fclass, fmv.x, fcvt to int
        return name.startswith(("feq", "flt", "fle", "fclass", "fmv.x", "fcvt.w", "fcvt.l"))
    return True


def _stores(name: str) -> bool:
    """Whether an instruction run through its closure may store to memory."""
    return name.startswith(("amo", "sc.")) or name in ("fsw", "fsd")


def _uses_b(name: str) -> bool:
    return re.search(r"\bb\b", ALU[name]) is not None


def _operands(d: Decoded) -> tuple[tuple[int, ...], int]:
    """(integer registers the generated code reads, register it writes) for ``d``."""
    name = d.name
    if name in ALU:
        return ((d.rs1, d.rs2) if _USES_B[name] else (d.rs1,)), d.rd
    if name in LOADS or name == "jalr":
        return (d.rs1,), d.rd
    if name in STORES or name in _BRANCHES:
        return (d.rs1, d.rs2), 0
    if name in ("lui", "auipc", "jal"):
        return (), d.rd
    # fence, or a closure (it works on hart.x; its rd is reloaded after it)
    return (), 0


_USES_B = {name: _uses_b(name) for name in ALU}


class _Emitter:
    """Generates the source of one block function (see the module docstring).

    Invariants along the path: a register in ``locals`` is either unbound (not yet read or
    written: its value is in x) or holds its current value; ``written`` holds the locals
    that may differ from x. Values are always unsigned 64-bit, as in the interpreter.
    """

    def __init__(
        self, hart: Hart, info: BlockInfo, tree: Path, inline_ram: bool, cache: dict[int, Any]
    ) -> None:
        self.hart = hart
        self.info = info
        self.inline_ram = inline_ram
        self.ram_base = hart.mmu.ram_base
        self.ram_size = hart.mmu.ram_size
        self.body: list[str] = []
        self.line_insn: list[int] = []  # per body line: instruction index
        self.closure_lines: list[int] = []  # body lines that call interpreter closures
        self.env: dict[str, Any] = {"x": hart.x, "cache": cache, "mmu": hart.mmu}
        self.tlbs: set[str] = set()  # TLB lookups used (bound on entry)
        self.idx = 0
        self.indent = 1
        self.const: dict[int, int] = {}  # register -> known value along the path
        self.width: dict[int, int] = {}  # register -> known bit width (absent: 64)
        self.written: set[int] = set()  # locals written since x was last brought up to date
        self.bound: set[int] = set()  # locals assigned so far along the path
        start = info.start
        insns = list(_walk(tree))
        # A branch or jal back to the start makes the block a loop.
        self.loop = any(
            (d.name in _BRANCHES or d.name == "jal") and (pc + d.imm) & M64 == start
            for pc, d in insns
        )
        reads: dict[int, int] = {}
        writes: set[int] = set()
        for _pc, d in insns:
            srcs, dst = _operands(d)
            for r in srcs:
                if r:
                    reads[r] = reads.get(r, 0) + 1
            if dst:
                writes.add(dst)
        # Locals: registers read more than once, or read and written, or read in a loop.
        # Those only written are stored straight into x; those read once read from x.
        self.locals = {r for r, cnt in reads.items() if r in writes or cnt > 1 or self.loop}
        self.all_written = writes & self.locals
        if self.loop:
            # Every local is loaded on entry; at the top of an iteration whatever the
            # previous one wrote is dirty.
            self.bound = set(self.locals)
            self.written = set(self.all_written)
            self.indent = 2
            self.emit("while True:")
            self.indent = 3

    # -- plumbing ---------------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.body.append("    " * self.indent + line)
        self.line_insn.append(self.idx)

    def bind(self, name: str, value: Any) -> str:
        self.env[name] = value
        return name

    def read(self, r: int) -> str:
        """An expression for the current value of x[r] (emitting a lazy load if needed)."""
        if r == 0:
            return "0"
        if r in self.const:
            return hex(self.const[r])
        if r not in self.locals:
            return f"x[{r}]"
        if r not in self.bound:
            self.emit(f"r{r} = x[{r}]")
            self.bound.add(r)
        return f"r{r}"

    def write(self, r: int, expr: str, width: int = 64) -> None:
        """Emit ``x[r] = expr`` (to a local or to x) and track what is known about it."""
        if r == 0:
            return
        value = _fold(expr)
        if value is not None:
            self.const[r] = value
            self.width[r] = _bits(value)
            expr = hex(value)
        else:
            self.const.pop(r, None)
            if width < 64:
                self.width[r] = width
            else:
                self.width.pop(r, None)
        if r not in self.locals:
            self.emit(f"x[{r}] = {expr}")
        elif self.loop:
            self.emit(f"r{r} = {expr}")
            self.written.add(r)
            self.bound.add(r)
        else:  # outside loops x stays up to date: exits and traps need no write-back
            self.emit(f"x[{r}] = r{r} = {expr}")
            self.bound.add(r)

    def wide(self, r: int) -> int:
        """Known bit width of x[r]."""
        return 0 if r == 0 else self.width.get(r, 64)

    def writeback(self) -> None:
        """Bring x up to date with the locals."""
        regs = sorted(self.written)
        if regs:
            self.emit("; ".join(f"x[{r}] = r{r}" for r in regs))

    def exit(self, target: str, n: int) -> None:
        """Leave the block after ``n`` instructions of this iteration, going to ``target``."""
        self.writeback()
        if self.loop:
            self.emit(f"return ({target}, k + {n})")
        else:
            self.emit(f"return ({target}, {n})")

    def back_edge(self, n: int) -> None:
        """Jump back to the start: iterate while the budget lasts, else exit."""
        self.emit(f"k += {n}")
        self.emit("if k < rem:")
        self.emit("    continue")
        self.writeback()
        self.emit(f"return ({self.info.start:#x}, k)")

    def source(self) -> str:
        params = ", ".join(f"{k}={k}" for k in self.env)
        head = [f"def block(rem, {params}):"]
        if self.tlbs:  # the TLBs of the current context (SUM, MXR and MPRV pick them)
            head.append("    " + "; ".join(
                f"{t} = mmu.tlb_{t[-1]}.get" for t in sorted(self.tlbs)))
        if not self.loop:
            self.head_lines = len(head)
            return "\n".join([*head, *self.body, ""])
        entry = [f"r{r} = x[{r}]" for r in sorted(self.locals)]
        head.append("    " + "; ".join([*entry, "k = 0"]))
        head.append("    try:")
        regs = sorted(self.all_written)
        if regs:
            # On any exception, write the bound locals back: the hart then holds exactly
            # the effects of the instructions before the one that raised. After a closure
            # call raised, x is already right (written back before it; the closure may
            # have changed x[rd]).
            tail = ["    except BaseException as exc:"]
            wb = [
                "        loc = locals()",
                f"        for r in {tuple(regs)}:",
                "            v = loc.get(f'r{r}')",
                "            if v is not None:",
                "                x[r] = v",
            ]
            if self.closure_lines:
                lines = {len(head) + 1 + b for b in self.closure_lines}
                tail.append(f"        if exc.__traceback__.tb_lineno not in {lines}:")
                wb = ["    " + line for line in wb]
            tail += [*wb, "        raise"]
        else:
            tail = ["    except BaseException:", "        raise"]
        self.head_lines = len(head)
        return "\n".join([*head, *self.body, *tail, ""])

    # -- instructions -----------------------------------------------------------------------

    def path(self, path: Path, depth: int) -> None:
        """Emit a path of the block tree whose first instruction has ``depth`` before it."""
        for p, (pc, d, taken) in enumerate(path):
            if self.insn(pc, d, depth + p, p == len(path) - 1, taken):
                return
        raise AssertionError("a path always leaves the block")

    def insn(self, pc: int, d: Decoded, depth: int, last: bool, taken: Path | None) -> bool:
        """Emit one instruction; return True if control never falls through it."""
        j = self.idx = self.info.add(pc, d, depth)
        name = d.name
        n = depth + 1  # instructions of this iteration retired after it
        npc = (pc + d.length) & M64
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        start = self.info.start
        if name in ALU:
            self.alu(name, d)
        elif name == "lui" or name == "auipc":
            self.write(rd, hex((d.imm + (pc if name == "auipc" else 0)) & M64))
        elif name in LOADS:
            self.load(name, d)
        elif name in STORES:
            self.store(name, d)
        elif name in _BRANCHES:
            t = (pc + d.imm) & M64
            if name in _UNSIGNED_FORM and max(self.wide(rs1), self.wide(rs2)) < 64:
                name = _UNSIGNED_FORM[name]
            cond = _subst(BRANCH[name], {"a": self.read(rs1), "b": self.read(rs2)})
            value = _fold(cond)
            if value == 0 or (t == npc and not last):
                pass  # never taken, or taken to where it falls through anyway
            else:
                if value is None:
                    self.emit(f"if {cond}:")
                    self.indent += 1
                if taken:  # the taken side is compiled too: fork what is known
                    saved = (dict(self.const), dict(self.width), set(self.written),
                             set(self.bound))
                    self.path(taken, n)
                    self.const, self.width, self.written, self.bound = saved
                elif t == start and self.loop:
                    self.back_edge(n)
                else:
                    self.exit(hex(t), n)
                if value is None:
                    self.indent -= 1
                else:
                    return True  # always taken
        elif name == "jal":
            t = (pc + d.imm) & M64
            self.write(rd, hex(npc))
            if last:
                if t == start and self.loop:
                    self.back_edge(n)
                else:
                    self.exit(hex(t), n)
                return True
            return False  # followed: the path goes on at the target
        elif name == "jalr":
            base = self.read(rs1)
            target = f"({base} + {d.imm}) & {M64 & ~1:#x}" if d.imm else f"{base} & {M64 & ~1:#x}"
            value = _fold(target)
            if value is not None:
                target = hex(value)
            elif rd and rd == rs1:
                self.emit(f"t = {target}")
                target = "t"
            self.write(rd, hex(npc))
            self.exit(target, n)
            return True
        elif name == "fence" and d.raw != PAUSE:
            pass  # one sequentially consistent memory: nothing to order
        else:
            op = make_op(self.hart, d, pc)
            self.info.ops[j] = op
            ref = self.bind(f"op{j}", op)
            self.writeback()  # the closure works on hart.x
            self.written.clear()
            self.closure_lines.append(len(self.body))
            self.emit(f"t = {ref}()" if last else f"{ref}()")
            if rd and _writes_x(name):  # closures write at most x[rd]
                self.const.pop(rd, None)
                self.width.pop(rd, None)
                if rd in self.bound:
                    self.emit(f"r{rd} = x[{rd}]")
            if last:
                self.exit("t", n)
                return True
            if _stores(name):
                self.smc_guard()
        if last:
            self.exit(hex(npc), n)
            return True
        return False

    def alu(self, name: str, d: Decoded) -> None:
        rd, rs1, rs2 = d.rd, d.rs1, d.rs2
        if not rd:
            return
        imm = d.imm
        i = imm & M64
        sh = imm & 63
        wa, wb = self.wide(rs1), self.wide(rs2) if _USES_B[name] else _bits(i)
        if name in _UNSIGNED_FORM and max(wa, wb) < 64 and (name != "slti" or imm >= 0):
            name = _UNSIGNED_FORM[name]
        if (name == "addi" and imm == 0) or (name in ("add", "or", "xor") and rs2 == 0):
            self.write(rd, self.read(rs1), wa or 1)  # a move
            return
        if name in ("add", "or", "xor") and rs1 == 0:
            self.write(rd, self.read(rs2), wb or 1)
            return
        expr = ALU[name]
        values = {"a": self.read(rs1), "i": hex(i),
                  "si": hex(i ^ SIGN), "sh": str(sh)}
        if _USES_B[name]:
            values["b"] = self.read(rs2)
        full = _subst(expr, values)
        if _fold(full) is not None:
            self.write(rd, full)
            return
        width = 64
        sext = _SEXT32.match(expr)
        if sext is not None:
            inner = _subst(sext.group(1), values)
            if name == "addiw" and not imm:
                inner = values["a"]
            if name == "srliw" and sh:  # below 2**31: the sign extension does nothing
                self.write(rd, inner, 32 - sh)
                return
            self.emit(f"w = ({inner}) & 0xFFFFFFFF")
            self.write(rd, f"w if w < 0x80000000 else w | {_HI32:#x}")
            return
        if expr.endswith(_MASKED):
            inner = _subst(expr[: -len(_MASKED)], values)
            if name in ("add", "addi") and imm >= 0 and max(wa, wb) < 64:
                full, width = inner, max(wa, wb) + 1
            elif name == "slli" and wa + sh <= 64:
                full, width = inner, wa + sh
        elif name in ("and", "andi"):
            width = min(wa, wb)
        elif name in ("or", "xor", "ori", "xori"):
            width = max(wa, wb)
        elif name == "srli":
            width = max(wa - sh, 1)
        elif name == "srl":
            width = wa
        elif name in ("sltu", "sltiu", "slt", "slti"):
            width = 1
        self.write(rd, full, width)

    # -- memory -------------------------------------------------------------------------------

    def _inline_offset(
        self, d: Decoded, size: int, store: bool = False
    ) -> tuple[str, str, int | None]:
        """Emit what an inline access needs: (condition for the fast path, address for
        the MMU slow path, constant RAM offset or None). The offset lands in ``o``."""
        base = self.read(d.rs1)
        imm = d.imm
        value = _fold(base)
        if not self.inline_ram:
            # Translated: look the page up in the MMU's TLB (the dict of the current
            # translation context, fetched on entry); a miss gives a hugely negative
            # offset, so the MMU method (which fills the TLB) does the access. An
            # unmasked address (>= 2**64 or < 0) misses as well.
            tlb = "tlbw" if store else "tlbr"
            self.tlbs.add(tlb)
            if value is not None:
                a = (value + imm) & M64
                self.emit(f"o = {tlb}({a >> 12:#x}, {_MISS}) + {(a & 0xFFF) - self.ram_base}")
                cond = f"0 <= o < {self.ram_size:#x}"
                return (f"not o & {size - 1} and {cond}" if size > 1 else cond), hex(a), None
            if imm:
                self.emit(f"a = {base} + {imm}")
                base, addr = "a", f"a & {M64:#x}"
            else:
                addr = base
            self.emit(f"o = {tlb}({base} >> 12, {_MISS}) - {self.ram_base:#x} + ({base} & 0xFFF)")
            cond = f"0 <= o < {self.ram_size:#x}"
            if size > 1:
                cond = f"not o & {size - 1} and {cond}"
            return cond, addr, None
        if value is not None:
            addr = (value + imm) & M64
            off = addr - self.ram_base
            ok = 0 <= off < self.ram_size and not off & (size - 1)
            return ("True" if ok else "False"), hex(addr), off
        # o may be off by a multiple of 2**64 (the address is not masked): then it is out
        # of range and the slow path masks it.
        k = imm - self.ram_base
        self.emit(f"o = {base} {'-' if k < 0 else '+'} {abs(k):#x}")
        cond = f"0 <= o < {self.ram_size:#x}"
        if size > 1:
            cond = f"not o & {size - 1} and {cond}"
        addr = f"({base} + {imm}) & {M64:#x}" if imm else base
        return cond, addr, None

    def load(self, name: str, d: Decoded) -> None:
        mmu = self.hart.mmu
        method = self.bind(LOADS[name], getattr(mmu, LOADS[name]))
        view_name, size, signed, width = _LOAD_VIEWS[name]
        view = self.bind(view_name, getattr(mmu.ram, view_name))
        cond, addr, off = self._inline_offset(d, size)
        shift = _VIEW_SHIFT[size]
        if off is not None:
            index = str(off >> shift)
        else:
            index = f"o >> {shift}" if shift else "o"
        fast = f"{view}[{index}]" + (f" & {M64:#x}" if signed else "")
        slow = f"{method}({addr})"
        expr = fast if cond == "True" else slow if cond == "False" else (
            f"{fast} if {cond} else {slow}"
        )
        if d.rd:
            self.write(d.rd, expr, width)
        else:
            self.emit(expr)

    def smc_guard(self) -> None:
        """After a store: if it dropped this block (self-modifying code), leave the block
        right after the store, so the next instruction is fetched anew (as QEMU does)."""
        self.bind("store_exit", _STORE_EXIT)
        self.emit(f"if {self.info.start:#x} not in cache: raise store_exit")

    def store_helpers(self) -> None:
        """Bind ``smc(ppn)`` (a store hit a page holding code) and ``sst(method, addr,
        value)`` (a store through the MMU): both leave the block if it was dropped."""
        if "smc" in self.env:
            return
        cache, start = self.env["cache"], self.info.start
        invalidate = self.hart.mmu.code.invalidate

        def smc(ppn: int) -> None:
            invalidate(ppn)
            if start not in cache:
                raise _STORE_EXIT

        def sst(method: Callable[[int, int], None], addr: int, value: int) -> None:
            method(addr, value)
            if start not in cache:
                raise _STORE_EXIT

        self.bind("smc", smc)
        self.bind("sst", sst)

    def store(self, name: str, d: Decoded) -> None:
        mmu = self.hart.mmu
        method = self.bind(STORES[name], getattr(mmu, STORES[name]))
        view_name, size = _STORE_VIEWS[name]
        value = self.read(d.rs2)
        view = self.bind(view_name, getattr(mmu.ram, view_name))
        self.bind("code_pages", mmu.code_pages)
        self.store_helpers()
        cond, addr, off = self._inline_offset(d, size, store=True)
        slow = f"sst({method}, {addr}, {value})"
        if cond == "False":
            self.emit(slow)
            return
        literal = _fold(value)
        mask = (1 << (8 * size)) - 1
        if literal is not None:
            value = hex(literal & mask)
        elif self.wide(d.rs2) > 8 * size:
            value = f"{value} & {mask:#x}"
        shift = _VIEW_SHIFT[size]
        if off is not None:
            index, page = str(off >> shift), hex((off + self.ram_base) >> 12)
        else:  # the page from the (small) offset: cheaper than from the address
            index = f"o >> {shift}" if shift else "o"
            page = f"(o >> 12) + {self.ram_base >> 12:#x}"
        if cond != "True":
            self.emit(f"if {cond}:")
            self.indent += 1
        self.emit(f"{view}[{index}] = {value}")
        self.emit(f"if {page} in code_pages: smc({page})")
        if cond != "True":
            self.indent -= 1
            self.emit(f"else: {slow}")


def translate(
    hart: Hart, start: int, tree: Path, cache: dict[int, Any], inline_ram: bool = False
) -> Block:
    """Compile a scanned block tree into one function ``block(rem) -> (next pc, retired)``.

    ``cache`` is the block cache it goes into: a store that drops the block from it ends
    the block. ``inline_ram``: data accesses are not translated in the block's context,
    so guest RAM is indexed inline.
    """
    info = BlockInfo(start)
    em = _Emitter(hart, info, tree, inline_ram, cache)
    em.path(tree, 0)
    src = em.source()
    ns = {**_NS, **em.env}  # helpers (_div, ...) as globals, the rest as default args
    exec(compile(src, f"<pyhv block {info.start:#x}>", "exec"), ns)  # noqa: S102
    fn = ns["block"]
    # Source lines are 1-based; the body follows the head lines; the tail maps to nothing.
    info.lines = [0] * (em.head_lines + 1) + em.line_insn + [0] * 12
    info.code = fn.__code__
    fn.info = info
    fn.source = src
    return fn


class _Context:
    """The caches of one translation context (privilege, satp, data translation on/off)."""

    __slots__ = ("blocks", "ops", "heat", "recompiles", "block_id", "op_id")

    def __init__(self, code: CodeWatch, free: list[tuple[int, int]]) -> None:
        # Compiled blocks by start pc, and decoded instructions for cold code by pc, as
        # (closure, pc the path goes on at or -1 if the instruction ends a block). Both
        # are registered with the CodeWatch, which drops entries whose pages are written.
        self.blocks: dict[int, Block] = {}
        self.ops: dict[int, tuple[Any, int]] = {}
        # Block start -> instructions run cold from there (negative after a compile: how
        # many more it needs if the block is dropped), and how often it was compiled.
        self.heat: dict[int, int] = {}
        self.recompiles: dict[int, int] = {}
        if free:
            self.block_id, self.op_id = free.pop()
            code.caches[self.block_id] = self.blocks
            code.caches[self.op_id] = self.ops
        else:
            self.block_id = code.register(self.blocks)
            self.op_id = code.register(self.ops)


@lru_cache(maxsize=1 << 16)
def _decode(word: int, length: int) -> Decoded:
    return decode(word, length)


class Translator:
    """Runs one hart through compiled blocks; same interface as :class:`Interpreter`.

    Cold code is interpreted one instruction at a time through the interpreter's
    closures (decoded once per context, as the interpreter does). A cold stretch runs
    from a block start (the target of a taken jump or branch, or the instruction after
    one that ends blocks) to the next one; its length is added to its start's heat, and
    once that reaches ``threshold`` instructions the block there is compiled. A block
    that stores drop again and again (code sharing a page with written data) needs
    twice as much heat for each recompilation; a flush (SFENCE.VMA, reset) only resets
    the heat.
    """

    def __init__(
        self, hart: Hart, code: CodeWatch, threshold: int = HOT_THRESHOLD,
        max_block: int = MAX_BLOCK, superblocks: bool = True,
    ) -> None:
        self.hart = hart
        self.code = code
        self.threshold = max(threshold, 1)  # cold instructions from a start pc
        self.max_block = max_block
        self.superblocks = superblocks
        self.compiled = 0  # blocks compiled so far (statistics)
        self._contexts: dict[tuple[int, int, bool], _Context] = {}
        self._free_ids: list[tuple[int, int]] = []
        # Per registered cache id: virtual page -> pcs from it, for SFENCE.VMA of a page.
        self._vpages: dict[int, dict[int, list[int]]] = {}
        hart.flush_decoded = self.flush  # type: ignore[method-assign]
        hart.flush_decoded_page = self.flush_page  # type: ignore[method-assign]

    # -- caches -----------------------------------------------------------------------------

    def flush(self, all_contexts: bool = True, supervisor: bool = True) -> None:
        """Drop blocks and decoded instructions: all, or those fetched through translation.

        With ``all_contexts`` False only translated contexts (S and U) are dropped, and
        S-mode ones only if ``supervisor``.
        """
        for key, ctx in self._contexts.items():
            priv = key[0]
            if all_contexts or priv == C.PRV_U or (priv == C.PRV_S and supervisor):
                for cid, cache in ((ctx.block_id, ctx.blocks), (ctx.op_id, ctx.ops)):
                    cache.clear()
                    self._vpages.get(cid, {}).clear()
                ctx.heat.clear()  # not the blocks' fault: no backoff
                ctx.recompiles.clear()

    def flush_page(self, vpn: int) -> None:
        """SFENCE.VMA of one virtual page: drop what was fetched from it."""
        for key, ctx in self._contexts.items():
            if key[0] == C.PRV_M:
                continue
            for cid, cache in ((ctx.block_id, ctx.blocks), (ctx.op_id, ctx.ops)):
                pcs = self._vpages.get(cid, {}).pop(vpn, None)
                if pcs:
                    for pc in pcs:
                        cache.pop(pc, None)  # type: ignore[arg-type]

    def _context(self) -> _Context:
        # Like the interpreter's contexts, plus whether data accesses are translated
        # (MPRV), which inline RAM accesses depend on; it only changes with a SliceBreak.
        hart = self.hart
        key = (hart.priv, hart.satp if hart.priv != C.PRV_M else 0, hart.mmu.dmode)
        ctx = self._contexts.get(key)
        if ctx is None:
            if len(self._contexts) >= _MAX_CONTEXTS:
                for old in self._contexts.values():
                    old.blocks.clear()
                    old.ops.clear()
                    for cid in (old.block_id, old.op_id):
                        self._vpages.pop(cid, None)
                    self._free_ids.append((old.block_id, old.op_id))
                self._contexts.clear()
            ctx = self._contexts[key] = _Context(self.code, self._free_ids)
        return ctx

    def _register(self, cid: int, start: int, pages: set[int], vpns: set[int]) -> None:
        for ppn in pages:
            self.code.add(ppn, cid, start)
        if self.hart.mmu.imode:
            vpages = self._vpages.setdefault(cid, {})
            for vpn in vpns:
                vpages.setdefault(vpn, []).append(start)

    def _fetch(self, pc: int) -> tuple[Decoded, list[int], int]:
        """Fetch and decode at ``pc``: (decoded, physical pages, physical address)."""
        mmu = self.hart.mmu
        pa = mmu.translate_fetch(pc)
        off = pa - mmu.ram_base
        if 0 <= off < mmu.ram_size - 2 and (pa & 0xFFF) < 0xFFE:  # RAM, within a page
            lo = mmu.u16[off >> 1]
            if lo & 3 == 3:
                return _decode(lo | mmu.u16[(off >> 1) + 1] << 16, 4), [pa >> 12], pa
            return _decode(lo, 2), [pa >> 12], pa
        lo, pa = mmu.fetch16(pc)
        if lo & 3 == 3:
            hi, pa2 = mmu.fetch16((pc + 2) & M64)
            return _decode(lo | hi << 16, 4), [pa >> 12, pa2 >> 12], pa
        return _decode(lo, 2), [pa >> 12], pa

    def _decode_op(self, pc: int, ctx: _Context) -> tuple[Any, int]:
        """Decode one instruction for cold execution (raises its fetch fault)."""
        d, ppns, _ = self._fetch(pc)
        op = make_op(self.hart, d, pc)
        npc = (pc + d.length) & M64
        ends = _ends_block(d) or npc >> 12 != pc >> 12
        entry = (op, -1 if ends else npc)
        ctx.ops[pc] = entry
        last = ((pc + d.length - 1) & M64) >> 12
        self._register(ctx.op_id, pc, set(ppns), {pc >> 12, last})
        return entry

    # -- building blocks --------------------------------------------------------------------

    def _scan(self, start: int) -> tuple[Path, set[int], bool]:
        """Decode the block tree at ``start``: (tree, physical pages, in RAM).

        The main path goes through not-taken branches and followed jumps; then, while
        the instruction budget lasts, the taken side of each branch (in path order) that
        stays in the page and does not go back to the path gets its own path. A fetch
        fault on the first instruction is raised (it is that instruction's trap); one
        further on just ends the path before it.
        """
        mmu = self.hart.mmu
        ram_lo, ram_hi = mmu.ram_base, mmu.ram_base + mmu.ram_size
        pages: set[int] = set()
        page = start >> 12
        budget = [self.max_block]
        in_ram = [True]
        superblocks = self.superblocks

        def path(pc: int, on: set[int]) -> Path:
            out: Path = []
            on = set(on)
            while budget[0] > 0:
                try:
                    d, ppns, pa = self._fetch(pc)
                except Trap:
                    if pc == start:
                        raise
                    break
                budget[0] -= 1
                out.append([pc, d, None])
                on.add(pc)
                pages.update(ppns)
                if not ram_lo <= pa < ram_hi:
                    in_ram[0] = False
                    break  # never read ahead from a device
                name = d.name
                npc = (pc + d.length) & M64
                if _ends_block(d):
                    break
                if name == "jal":
                    pc = (pc + d.imm) & M64
                    if not superblocks or pc == start or pc >> 12 != page or pc in on:
                        break
                    continue
                if name in _BRANCHES and not superblocks:
                    break
                if npc >> 12 != page or npc in on:
                    break
                pc = npc
            if superblocks:
                prefix = set(on)
                for entry in out:
                    pc, d = entry[0], entry[1]
                    prefix.add(pc)
                    if d.name not in _BRANCHES or budget[0] < 2:
                        continue
                    t = (pc + d.imm) & M64
                    if t != start and t >> 12 == page and t not in prefix:
                        entry[2] = path(t, {p for p in prefix})
            return out

        tree = path(start, set())
        return tree, pages, in_ram[0]

    def _compile(self, pc: int, ctx: _Context) -> Block | None:
        """Compile the block at ``pc`` into ``ctx``; None if it must stay cold."""
        try:
            tree, pages, in_ram = self._scan(pc)
        except Trap:
            return None  # the cold path raises the fetch fault
        if not in_ram:
            ctx.heat[pc] = -(1 << 62)  # code outside RAM (the boot ROM) stays cold
            return None
        vpns = set()
        for ipc, d in _walk(tree):
            vpns.add(ipc >> 12)
            vpns.add(((ipc + d.length - 1) & M64) >> 12)
        self._register(ctx.block_id, pc, pages, vpns)
        fn = translate(self.hart, pc, tree, ctx.blocks, inline_ram=not self.hart.mmu.dmode)
        ctx.blocks[pc] = fn
        self.compiled += 1
        # If it is dropped (its page written), it must get hotter to be compiled again.
        again = ctx.recompiles.get(pc, -1) + 1
        ctx.recompiles[pc] = again
        ctx.heat[pc] = -(self.threshold << min(again, 16)) + self.threshold
        return fn

    # -- running --------------------------------------------------------------------------

    @staticmethod
    def _faulting(e: Block, exc: BaseException) -> tuple[int, int]:
        """(instructions retired in block ``e`` before the one that raised, its index)."""
        info: BlockInfo = e.info  # type: ignore[attr-defined]
        tb = exc.__traceback__
        code = info.code
        while tb is not None and tb.tb_frame.f_code is not code:
            tb = tb.tb_next
        assert tb is not None, "exception did not come through the block"
        j = info.lines[tb.tb_lineno]
        return tb.tb_frame.f_locals.get("k", 0) + info.depth[j], j

    def run(self, budget: int) -> int:
        """Execute about ``budget`` instructions (whole blocks); return how many retired.

        Returns early when the hart enters WFI or a device requests a stop.
        """
        hart = self.hart
        threshold = self.threshold - 1
        done = 0
        trapped = 0  # trapping instructions retire nothing but still use up the budget
        base = hart.instret  # hart.instret = base + done, written back on the way out
        while done + trapped < budget:
            if hart.waiting:
                break
            if (hart.mip | hart.mip_hw) & hart.mie:
                irq = hart.interrupt_to_take()
                if irq is not None:
                    hart.take_trap(irq, 0, hart.pc, interrupt=True)
            hart.context_changed = False
            ctx = self._context()
            bget = ctx.blocks.get
            oget = ctx.ops.get
            heat = ctx.heat
            pc = hart.pc
            limit = budget - trapped
            e: Any = None
            op: Any = None
            try:
                while done < limit:
                    e = bget(pc)
                    if e is None:
                        h = heat.get(pc, 0)
                        if h >= threshold:
                            e = self._compile(pc, ctx)
                    if e is not None:
                        pc, k = e(limit - done)
                        done += k
                        continue
                    # Cold: interpret up to a taken jump, an instruction ending blocks, or
                    # the end of the budget. On an exception pc is the faulting insn's.
                    start = pc
                    first = done
                    while True:
                        o = oget(pc)
                        if o is None:
                            o = self._decode_op(pc, ctx)
                        op, nx = o
                        pc = op()
                        done += 1
                        if pc != nx or done >= limit:
                            break
                    heat[start] = h + done - first
                hart.pc = pc
            except Trap as t:
                if e is None:  # cold (or fetching): pc is the faulting instruction's
                    fpc = pc
                else:
                    k, j = self._faulting(e, t)
                    done += k
                    fpc = e.info.pcs[j]
                trapped += 1
                hart.take_trap(t.cause, t.tval, fpc)
                if hart.pc == fpc:
                    # The trap handler's first instruction is the one that just trapped:
                    # the hart would trap forever. Report it instead of spinning.
                    hart.instret = base + done
                    raise GuestCrash(hart) from None
            except SliceBreak as s:
                # The closure has set hart.pc.
                done += 1 if e is None else self._faulting(e, s)[0] + 1
                s.__traceback__ = None  # a shared instance: do not let tracebacks pile up
            except YieldSlice as y:  # pause / wfi on a multi-hart machine: hand over
                done += 1 if e is None else self._faulting(e, y)[0] + 1
                y.__traceback__ = None
                break
            except CounterAccess as c:
                if e is None:
                    fpc = pc
                else:
                    k, j = self._faulting(e, c)
                    done += k
                    op, fpc = e.info.ops[j], e.info.pcs[j]
                c.__traceback__ = None
                hart.instret = base + done
                try:
                    hart.pc = op.exact()
                    base = hart.instret - done  # a write to minstret moves the base
                    done += 1
                except SliceBreak as s:
                    s.__traceback__ = None
                    base = hart.instret - done
                    done += 1
                except Trap as t:
                    trapped += 1
                    hart.take_trap(t.cause, t.tval, fpc)
            except _StoreExit as s:
                k, j = self._faulting(e, s)
                s.__traceback__ = None
                done += k + 1
                pc = e.info.npcs[j]
                hart.pc = pc
            except StopRequest as s:
                if e is None:
                    done += 1
                    hart.pc = op.npc
                else:
                    k, j = self._faulting(e, s)
                    done += k + 1
                    hart.pc = e.info.npcs[j]
                break
        hart.instret = base + done
        return done


__all__ = ["HOT_THRESHOLD", "MAX_BLOCK", "BlockInfo", "Translator", "translate"]
