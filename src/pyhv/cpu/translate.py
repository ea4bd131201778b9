"""Tier 1 of the fast engine: guest code compiled into Python functions, one per block.

Why: the interpreter pays a dict lookup, a closure call and a ``return npc`` per guest
instruction. The block translator generates one Python function per guest block in which
integer ALU operations, loads, stores and branches are plain Python statements, guest
registers live in Python locals, and only one dispatch per block remains. ``compile()``
is expensive (~250 µs for a 10-instruction block), so a block first runs *cold* through
the interpreter's own closures and is compiled once it has started ``threshold`` times.

How:

* **One semantics.** Instructions come from the one decoder (isa/decoder.py). The inline
  Python is generated from the interpreter's ``ALU`` / ``BRANCH`` expression tables and
  its ``LOADS`` / ``STORES`` MMU methods; every other instruction (CSR, AMO, LR/SC, F/D,
  system) is a call to the interpreter closure that ``make_op`` builds for it.
* **Blocks** follow one path from their start pc: through not-taken conditional branches
  (a taken branch is a side exit) and through ``jal`` to a target in the same page. A
  block ends with (and includes) ``jalr``, a ``jal`` or branch it does not follow, any
  instruction whose closure may raise :class:`SliceBreak` or :class:`CounterAccess` or
  always traps (CSR accesses, ``mret``/``sret``/``wfi``/``sfence.vma``, ``ecall``/
  ``ebreak``/illegal), ``fence.i`` (so code stored before it is re-fetched after it), the
  last instruction that starts in the start pc's 4 KiB virtual page, or the
  ``MAX_BLOCK``-th instruction. A branch or jump back to the block's own start becomes a
  ``while`` loop inside the function, bounded by the run loop's remaining budget. Code
  fetched from outside RAM (the boot ROM) is never read ahead and never compiled.
* **Registers** that a block reads repeatedly or writes are Python locals, loaded on
  entry and written back at every exit, before every interpreter-closure call (closures
  use ``hart.x``) and, through a ``try``/``except`` around the body (free in CPython
  3.11 unless an exception occurs), when anything is raised. Constants and known value
  widths are propagated along the path, so ``auipc``/``lui`` address arithmetic folds and
  provably unneeded 64-bit masks are dropped. Loads and stores whose translation context
  has data translation off (M-mode, bare S-mode) index guest RAM inline and call the MMU
  only for MMIO, misaligned or out-of-range addresses; otherwise they call the MMU method.
* **Precise traps.** When instruction j of a block raises, its locals hold exactly the
  effects of the instructions before it, and the handler writes them back. The run loop
  then only needs j, and gets it for free from the exception's traceback: every
  instruction is emitted on its own source lines, so the traceback's line number in the
  block's frame maps back to j (a loop block adds its local iteration count ``k``; a cold
  block's frame holds its loop index). Nothing is counted on the fast path. From j the
  loop derives the faulting pc, the exact retired count (instret), where a
  :class:`StopRequest` resumes and which closure performs an exact counter access.
* **Caching and invalidation** follow the interpreter: one block cache per translation
  context (privilege, satp, and whether data accesses are translated, since that is baked
  into inline loads) keyed by virtual pc; every physical page an instruction of the block
  came from is registered with the machine's :class:`CodeWatch`, so any store into it (by
  any hart, the page walker or a device) drops the block; SFENCE.VMA drops the blocks of
  the flushed virtual pages (``flush``/``flush_page``, installed as
  ``hart.flush_decoded*``). A store into the block that is executing drops it for its
  next execution, but the current execution finishes with the instructions it was
  compiled from (RISC-V only guarantees that a hart sees its own instruction stores
  after FENCE.I, which ends a block; QEMU re-translates mid-block, no known guest needs
  it). The same holds for a loop block until its budget runs out.
* **Interrupts** are checked at the start of each ``run`` slice, as in the interpreter.
  ``run(budget)`` runs whole blocks (and loop iterations) until the budget is used up,
  so it may overshoot it by less than one block path (``MAX_BLOCK`` instructions); the
  returned count and ``hart.instret`` are exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
    SIGN,
    STORES,
    CounterAccess,
    GuestCrash,
    Interpreter,
    SliceBreak,
    StopRequest,
    make_op,
)
from .mmu import CodeWatch
from .trap import Trap

MAX_BLOCK = 64  # instructions per block path at most
HOT_THRESHOLD = 8  # times a block starts cold (interpreter closures) before it is compiled

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
_NAMES = re.compile(r"\b[A-Za-z_]\w*")

Block = Callable[[int], tuple[int, int]]


class BlockInfo:
    """What the run loop needs to know about a block when one of its instructions raises."""

    __slots__ = ("start", "insns", "pcs", "npcs", "ops", "lines", "hits", "code")

    def __init__(self, start: int, insns: list[Decoded], pcs: list[int]) -> None:
        self.start = start
        self.insns = insns
        self.pcs = pcs  # path order: pcs[j] is the j-th instruction executed
        self.npcs = [(pc + d.length) & M64 for pc, d in zip(pcs, insns, strict=True)]
        self.ops: list[Any] = [None] * len(insns)  # interpreter closures, where built
        self.lines: list[int] | None = None  # source line -> instruction (compiled only)
        self.hits = 0
        self.code: Any = None  # the code object of the function that runs the block


def _subst(expr: str, values: dict[str, str]) -> str:
    """Put operands (and the M64/SIGN constants, as literals) into a table expression."""
    values = {**_LITERALS, **values}
    return _VARS.sub(lambda m: values[m.group(1)], expr)


def _fold(expr: str) -> int | None:
    """The value of an expression without register operands, else None."""
    if any(name not in _NS for name in _NAMES.findall(expr)):
        return None
    return eval(expr, dict(_NS)) & M64  # noqa: S307 - our own generated expression


def _bits(v: int) -> int:
    return max(v.bit_length(), 1)


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

    def __init__(self, hart: Hart, info: BlockInfo, inline_ram: bool) -> None:
        self.hart = hart
        self.info = info
        self.inline_ram = inline_ram
        self.ram_base = hart.mmu.ram_base
        self.ram_size = hart.mmu.ram_size
        self.body: list[str] = []
        self.line_insn: list[int] = []  # per body line: instruction index
        self.closure_lines: list[int] = []  # body lines that call interpreter closures
        self.env: dict[str, Any] = {"x": hart.x}
        self.idx = 0
        self.indent = 2
        self.const: dict[int, int] = {}  # register -> known value along the path
        self.width: dict[int, int] = {}  # register -> known bit width (absent: 64)
        self.written: set[int] = set()  # locals written since x was last brought up to date
        self.bound: set[int] = set()  # locals assigned so far along the path
        start = info.start
        self.n = len(info.insns)
        # A branch or jal back to the start makes the block a loop.
        back = [
            j for j, (pc, d) in enumerate(zip(info.pcs, info.insns, strict=True))
            if (d.name in _BRANCHES or d.name == "jal") and (pc + d.imm) & M64 == start
        ]
        self.loop = bool(back)
        reads: dict[int, int] = {}
        writes: set[int] = set()
        live_in: set[int] = set()  # read before any write along the path
        for d in info.insns:
            srcs, dst = _operands(d)
            for r in srcs:
                if r:
                    reads[r] = reads.get(r, 0) + 1
                    if r not in writes:
                        live_in.add(r)
            if dst:
                writes.add(dst)
        # Locals: registers read more than once, or read and written, or read in a loop.
        # Those only written are stored straight into x; those read once read from x.
        self.locals = {r for r, cnt in reads.items() if r in writes or cnt > 1 or self.loop}
        self.all_written = writes & self.locals
        # In a loop, what an earlier iteration wrote is dirty anywhere in the body.
        self.loop_written: set[int] = set()
        self.entry: list[int] = []
        if self.loop:
            for d in info.insns[: back[-1] + 1]:
                dst = _operands(d)[1]
                if dst in self.locals:
                    self.loop_written.add(dst)
            # Live-in locals are loaded on entry; the others are written before any read
            # in every iteration (until then their value is in x).
            self.entry = sorted(self.locals & live_in)
            self.bound = set(self.entry)
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
        if r in self.locals:
            self.emit(f"r{r} = {expr}")
            self.written.add(r)
            self.bound.add(r)
        else:
            self.emit(f"x[{r}] = {expr}")

    def wide(self, r: int) -> int:
        """Known bit width of x[r]."""
        return 0 if r == 0 else self.width.get(r, 64)

    def writeback(self) -> None:
        """Bring x up to date with the locals."""
        regs = sorted(self.written | (self.loop_written & self.bound))
        if regs:
            self.emit("; ".join(f"x[{r}] = r{r}" for r in regs))
        # Locals a previous iteration wrote that this one has not bound yet.
        later = sorted(self.loop_written - self.bound)
        if later:
            self.emit("if k: " + "; ".join(f"x[{r}] = r{r}" for r in later))

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
        if self.loop:
            entry = [f"r{r} = x[{r}]" for r in self.entry]
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

    def insn(self, j: int, pc: int, d: Decoded) -> bool:
        """Emit instruction ``j`` of the path; return True if control never falls through."""
        self.idx = j
        name = d.name
        n = j + 1
        last = j == self.n - 1
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
                if t == start and self.loop:
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
        elif name == "fence":
            pass  # one sequentially consistent memory: nothing to order
        else:
            op = make_op(self.hart, d, pc)
            self.info.ops[j] = op
            ref = self.bind(f"op{j}", op)
            self.writeback()  # the closure works on hart.x
            self.written.clear()
            self.closure_lines.append(len(self.body))
            self.emit(f"t = {ref}()" if last else f"{ref}()")
            # Closures write at most x[rd] (for F/D ones rd may name an f register: then
            # reloading x[rd] is merely useless).
            if rd:
                self.const.pop(rd, None)
                self.width.pop(rd, None)
                if rd in self.bound:
                    self.emit(f"r{rd} = x[{rd}]")
            if last:
                self.exit("t", n)
                return True
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

    def _inline_offset(self, d: Decoded, size: int) -> tuple[str, str, int | None]:
        """Emit what an inline access needs: (condition for the fast path, address for
        the MMU slow path, constant RAM offset or None). The offset lands in ``o``."""
        base = self.read(d.rs1)
        imm = d.imm
        value = _fold(base)
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
        if not self.inline_ram:
            base = self.read(d.rs1)
            value = _fold(base)
            if value is not None:
                addr = hex((value + d.imm) & M64)
            else:
                addr = f"({base} + {d.imm}) & {M64:#x}" if d.imm else base
            if d.rd:
                self.write(d.rd, f"{method}({addr})", width)
            else:
                self.emit(f"{method}({addr})")
            return
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

    def store(self, name: str, d: Decoded) -> None:
        mmu = self.hart.mmu
        method = self.bind(STORES[name], getattr(mmu, STORES[name]))
        view_name, size = _STORE_VIEWS[name]
        value = self.read(d.rs2)
        if not self.inline_ram:
            base = self.read(d.rs1)
            folded = _fold(base)
            if folded is not None:
                addr = hex((folded + d.imm) & M64)
            else:
                addr = f"({base} + {d.imm}) & {M64:#x}" if d.imm else base
            self.emit(f"{method}({addr}, {value})")
            return
        view = self.bind(view_name, getattr(mmu.ram, view_name))
        self.bind("code_pages", mmu.code_pages)
        self.bind("invalidate", mmu.code.invalidate)
        cond, addr, off = self._inline_offset(d, size)
        slow = f"{method}({addr}, {value})"
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
        else:
            index = f"o >> {shift}" if shift else "o"
            base = self.read(d.rs1)
            page = f"({base} + {d.imm}) >> 12" if d.imm else f"{base} >> 12"
        if cond != "True":
            self.emit(f"if {cond}:")
            self.indent += 1
        self.emit(f"{view}[{index}] = {value}")
        self.emit(f"if {page} in code_pages: invalidate({page})")
        if cond != "True":
            self.indent -= 1
            self.emit("else:")
            self.emit(f"    {slow}")


def translate(hart: Hart, info: BlockInfo, inline_ram: bool = False) -> Block:
    """Compile a scanned block into one function ``block(rem) -> (next pc, retired)``.

    ``inline_ram``: data accesses are not translated in the block's context, so guest
    RAM is indexed inline.
    """
    info = BlockInfo(info.start, info.insns, info.pcs)  # its own ops and line table
    em = _Emitter(hart, info, inline_ram)
    for j, (pc, d) in enumerate(zip(info.pcs, info.insns, strict=True)):
        if em.insn(j, pc, d):
            break
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


class Translator(Interpreter):
    """Runs one hart through compiled blocks; same interface as :class:`Interpreter`."""

    def __init__(
        self, hart: Hart, code: CodeWatch, threshold: int = HOT_THRESHOLD,
        max_block: int = MAX_BLOCK, superblocks: bool = True,
    ) -> None:
        super().__init__(hart, code)
        self.threshold = threshold
        self.max_block = max_block
        self.superblocks = superblocks
        self.compiled = 0  # blocks compiled so far (statistics)

    # -- caches -----------------------------------------------------------------------------

    def _cache(self) -> tuple[int, dict[int, Any]]:
        # Like the interpreter's, plus whether data accesses are translated (MPRV): inline
        # RAM accesses depend on it. Every change of it goes through a SliceBreak.
        hart = self.hart
        key = (hart.priv, hart.satp if hart.priv != C.PRV_M else 0, hart.mmu.dmode)
        entry = self._caches.get(key)  # type: ignore[call-overload]
        if entry is None:
            if len(self._caches) >= _MAX_CONTEXTS:
                for old_id, old_cache in self._caches.values():
                    old_cache.clear()
                    self._vpages.pop(old_id, None)
                    self._free_ids.append(old_id)
                self._caches.clear()
            cache: dict[int, Any] = {}
            if self._free_ids:
                cid = self._free_ids.pop()
                self.code.caches[cid] = cache
            else:
                cid = self.code.register(cache)
            entry = self._caches[key] = (cid, cache)  # type: ignore[index]
        return entry

    # -- building blocks --------------------------------------------------------------------

    def _scan(self, start: int) -> tuple[list[int], list[Decoded], set[int], bool]:
        """Decode the block path at ``start``: (pcs, decoded, physical pages, in RAM).

        A fetch fault on the first instruction is raised (it is that instruction's trap);
        one further on just ends the block before it.
        """
        mmu = self.hart.mmu
        ram_lo, ram_hi = mmu.ram_base, mmu.ram_base + mmu.ram_size
        pcs: list[int] = []
        insns: list[Decoded] = []
        pages: set[int] = set()
        seen: set[int] = set()
        page = start >> 12
        pc = start
        in_ram = True
        while True:
            try:
                lo, pa = mmu.fetch16(pc)
                ppns = [pa >> 12]
                if lo & 3 == 3:
                    hi, pa2 = mmu.fetch16((pc + 2) & M64)
                    ppns.append(pa2 >> 12)
                    d = decode(lo | hi << 16, 4)
                else:
                    d = decode(lo, 2)
            except Trap:
                if not pcs:
                    raise
                break
            pcs.append(pc)
            insns.append(d)
            seen.add(pc)
            pages.update(ppns)
            if not ram_lo <= pa < ram_hi:
                in_ram = False
                break  # never read ahead from a device
            name = d.name
            npc = (pc + d.length) & M64
            if len(pcs) >= self.max_block or name in _ENDS_BLOCK:
                break
            if name == "jal":
                pc = (pc + d.imm) & M64
                if not self.superblocks or pc == start or pc >> 12 != page or pc in seen:
                    break
                continue
            if name in _BRANCHES and not self.superblocks:
                break
            if npc >> 12 != page or npc in seen:
                break
            pc = npc
        return pcs, insns, pages, in_ram

    def _miss(self, pc: int, cid: int, cache: dict[int, Any]) -> Block:
        pcs, insns, pages, in_ram = self._scan(pc)
        info = BlockInfo(pc, insns, pcs)
        for ppn in pages:
            self.code.add(ppn, cid, pc)
        if self.hart.mmu.imode:
            vpns = set()
            for ipc, d in zip(pcs, insns, strict=True):
                vpns.add(ipc >> 12)
                vpns.add(((ipc + d.length - 1) & M64) >> 12)
            vpages = self._vpages.setdefault(cid, {})
            for vpn in vpns:
                vpages.setdefault(vpn, []).append(pc)
        if in_ram and self.threshold <= 1:
            fn = self._translate(info)
        else:
            fn = self._cold(info, cache, in_ram)
        cache[pc] = fn
        return fn

    def _translate(self, info: BlockInfo) -> Block:
        self.compiled += 1
        return translate(self.hart, info, inline_ram=not self.hart.mmu.dmode)

    def _cold(self, info: BlockInfo, cache: dict[int, Any], in_ram: bool) -> Block:
        """A block run through interpreter closures; compiled once it is hot."""
        hart = self.hart
        ops = []
        for j, (pc, d) in enumerate(zip(info.pcs, info.insns, strict=True)):
            op = make_op(hart, d, pc)
            info.ops[j] = op
            ops.append(op)
        n = len(ops)
        nxt = [*info.pcs[1:], -1]  # where the path goes on after each instruction
        threshold = self.threshold if in_ram else 1 << 62
        promote = self._promote

        def cold(rem: int) -> tuple[int, int]:
            info.hits += 1
            if info.hits >= threshold:
                promote(info, cache, cold)
            for i in range(n):
                pc = ops[i]()
                if pc != nxt[i]:
                    return pc, i + 1
            raise AssertionError("unreachable: the last instruction always leaves")

        cold.info = info  # type: ignore[attr-defined]
        info.code = cold.__code__
        return cold

    def _promote(self, info: BlockInfo, cache: dict[int, Any], cold: Block) -> None:
        if cache.get(info.start) is cold:  # still current: not invalidated meanwhile
            cache[info.start] = self._translate(info)

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
        if info.lines is None:  # cold
            j = tb.tb_frame.f_locals["i"]
            return j, j
        j = info.lines[tb.tb_lineno]
        return tb.tb_frame.f_locals.get("k", 0) + j, j

    def run(self, budget: int) -> int:
        """Execute about ``budget`` instructions (whole blocks); return how many retired.

        Returns early when the hart enters WFI or a device requests a stop.
        """
        hart = self.hart
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
            cid, cache = self._cache()
            get = cache.get
            pc = hart.pc
            limit = budget - trapped
            e: Any = None
            try:
                while done < limit:
                    e = get(pc)
                    if e is None:
                        e = self._miss(pc, cid, cache)
                    pc, k = e(limit - done)
                    done += k
                hart.pc = pc
            except Trap as t:
                if e is None:  # fetching the block's first instruction faulted
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
                k, _ = self._faulting(e, s)
                done += k + 1  # the closure has set hart.pc
            except CounterAccess as c:
                k, j = self._faulting(e, c)
                done += k
                hart.instret = base + done
                op = e.info.ops[j]
                try:
                    hart.pc = op.exact()
                    base = hart.instret - done  # a write to minstret moves the base
                    done += 1
                except SliceBreak:
                    base = hart.instret - done
                    done += 1
                except Trap as t:
                    trapped += 1
                    hart.take_trap(t.cause, t.tval, e.info.pcs[j])
            except StopRequest as s:
                k, j = self._faulting(e, s)
                done += k + 1
                hart.pc = e.info.npcs[j]
                break
        hart.instret = base + done
        return done


__all__ = ["HOT_THRESHOLD", "MAX_BLOCK", "BlockInfo", "Translator", "translate"]
