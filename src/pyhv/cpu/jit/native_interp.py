"""The native interpreter: cold guest code run by machine code, one instruction at a time.

Most of a Linux boot is code that runs a few times only (start-up paths, each program's
first run): compiling it costs more than it saves, and running it in Python costs ~1 us
an instruction plus a trip out of native code at every block that has no machine code.
So the dispatcher (codegen.DISPATCH) hands a pc without a compiled block to this
interpreter, written once in LLVM IR: it fetches (through the I-TLB and the native fetch
walk when instructions are translated), decodes (compressed instructions through a
65536-entry expansion table built from isa.compressed), and runs the integer, memory
and atomic instructions of RV64IMAC with the blocks' soft TLB, from one control transfer
to the next (a *stretch*, which stays in one page). What it does not do (CSRs, traps,
system and FP instructions, a fetch or access the soft TLB cannot do) leaves with
``EXIT_SLOW`` before the instruction, exactly like a block's slow exit, and Python runs
that one instruction.

Decoded cache: a per-hart table by pc (``state.DCACHE``) keeps each instruction's
decoded form with the bits it came from; while the bits at the pc are those, the common
integer, load, store and control-transfer instructions (``FAST_OPS``, ``fast_ops``) run
from it without expansion or decoding, each written only there; everything else goes
through the decoder's groups (``_decode_lazily``: each group decodes only its fields).

Threaded dispatch: after each fast op, a copy of the loop's common path (the budget, the
same page, a decoded-cache hit) dispatches the next instruction with a switch of its own
(``_dispatch_next``), so each op's indirect jump predicts its own successors; code that
is not a small loop (functions called in turn, a tokenizer's cases) ran 0.73-0.88x the
time with nothing compiled. The instruction's values are then in allocas, which LLVM
turns back into values (``_load_threaded``); the interpreter's object grew from ~130 to
~300 KiB, built once per pyhv version (~3 s, scripts/setup.sh).

Heat: each stretch start counts its runs in the context's heat table (``HEAT``); the
run that reaches the threshold leaves with ``EXIT_HOT`` before doing anything, and Python
queues the block there for the compiler; a start still interpreted after that asks again
every ``REHEAT`` runs (a safety net: a block dropped since, its page written, re-arms its
start's counter to leave at the next run), unless its block waits in the compiler's
queue (``WAITING``). A
start that the code cache may hold (its bit set in the ``KNOWN`` map) leaves on its
first run, so that a warm start installs cached machine code at once.

There is one interpreter per data-translation mode (bare or through the soft TLB),
generated from the same template; they live in the dispatcher's module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from ...isa import csr as C
from ...isa import spec
from ...isa.decoder import PAUSE, RELAX_DIV, RELAX_MASK
from ..trap import MIE_MASK, MIP_SEIP, MIP_SSIP, MIP_SW_MASK
from . import state as S
from .codegen import (
    _CI,
    _CX,
    FP_CMP,
    FP_TO_INT,
    INT_TO_FP,
    FpValues,
    TimeReads,
    code_granule_check,
    fma_invalid,
    fp_class,
    fp_from_u64,
    fp_minmax,
    fp_result,
    fp_sign_inject,
    fp_to_int,
    mxcsr_flags,
)

RAM_BASE = 0x80000000
_FP_D = [i for i in spec.FP.values() if i.fmt == "d"]  # double precision: isa/spec.py
_FP_S = [i for i in spec.FP.values() if i.fmt == "s"]  # single precision
NHEAT = 1 << 14  # heat counters per context (u32, indexed by pc >> 1)
# ... followed by NHEAT "asked" bits: the code cache was asked about that start's first
# run (kept across coolings, so a start the cache does not hold asks once)
HEAT_WORDS = NHEAT + NHEAT // 32
NKNOWN = 1 << 16  # bits of the map of starts the code cache may hold
# A stretch counts a run more for every 2**LONG_RUN_SHIFT instructions it ran (heat_length):
# 32. (With 8, a small kernel that execs programs into fresh pages 1,700 times,
# bench/procs.py, took 1.10x its time: their code got hot sooner, to be dropped at the
# next exec; Linux's 800-instruction blake2s stretches still heat in ~10 runs.)
LONG_RUN_SHIFT = 5
REHEAT = 4096  # a start past the threshold but still interpreted asks again this often
# The top bit of a start's count: its block is in the compiler's queue, so it does not ask
# (engine.py sets it when it queues the block and clears it when the block is ready; a
# cooling keeps it). Asking again every REHEAT runs, and once each cooling, took sort's
# first run out of native code ~1,900 times, a trip through Python each, for nothing.
WAITING = 1 << 31

# The instructions the decoded cache runs without the decoder (native_interp's fast_ops),
# numbered for the cache entries; branches, loads and stores are numbered by funct3 from
# their first (beq, lb, sb), holes included, which are no fast op.
FAST_OPS: dict[str, int] = {}
for _i, _name in enumerate((
        "lui", "auipc", "jal", "jalr",
        "beq", "bne", "", "", "blt", "bge", "bltu", "bgeu",
        "lb", "lh", "lw", "ld", "lbu", "lhu", "lwu", "",
        "sb", "sh", "sw", "sd",
        "addi", "slti", "sltiu", "xori", "ori", "andi", "slli", "srli", "srai",
        "add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and", "mul",
        "addiw", "slliw", "srliw", "sraiw", "addw", "subw", "sllw", "srlw", "sraw",
        # M's other instructions: a loop with a modulo or a division in it would
        # otherwise end its baseline block there (stencils.py), and each run leave the
        # decoded cache for the decoder's groups
        "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu",
        "mulw", "divw", "divuw", "remw", "remuw"), 1):
    if _name:
        FAST_OPS[_name] = _i


# The encodings predecode tells fast ops by (isa/spec.py): funct3 (I rows), funct7 << 3 |
# funct3 (R and SH5 rows), shift-field << 3 | funct3 (SH6 rows), per major opcode.
def _fast(opcode: int, forms: tuple[str, ...]) -> dict[int, int]:
    rows = [i for i in spec.INSNS.values()
            if i.opcode == opcode and i.form in forms and i.name in FAST_OPS]
    return {(i.fixed << 3 | i.funct3) if i.form != "I" else i.funct3: FAST_OPS[i.name]
            for i in rows}


# Branches, loads and stores are numbered by funct3 from their first: predecode adds it.
for _group in (spec.BRANCHES, spec.LOADS, spec.STORES):
    _first = min(_group.values(), key=lambda i: i.funct3)
    assert all(FAST_OPS[n] == FAST_OPS[_first.name] + i.funct3 - _first.funct3
               for n, i in _group.items() if n in FAST_OPS)


def _s64(v: int) -> int:
    """A 64-bit constant as LLVM reads it (signed)."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def _s32(v: int) -> int:
    """A 32-bit constant as LLVM reads it (signed)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _label(name: str) -> str:
    return name.replace(".", "_")


def heat_index(pc: int) -> int:
    return (pc >> 1) & (NHEAT - 1)


def known_index(pc: int) -> int:
    return (pc >> 1) & (NKNOWN - 1)


def _fp_cases() -> dict[int, str]:
    """OP-FP funct7 -> label of what _Gen.fp_single and fp_to_int do."""
    rows = [i for i in _FP_S if i.opcode == spec.OP_FP]

    def f7(op: str) -> int:
        return next(i.funct7 for i in rows if i.op == op)

    sd = next(i for i in rows if i.op == "cvt")
    ds = next(i for i in _FP_D if i.op == "cvt")
    tos = next(i for i in _FP_S if i.name in FP_TO_INT)
    tod = next(i for i in _FP_D if i.name in FP_TO_INT)
    return {**{f7(op): f"fsa_f{op}" for op in ("add", "sub", "mul", "div")},
            f7("sqrt"): "fssqrt", f7("sgnj"): "fssgnj", f7("eq"): "fscmp",
            f7("mv_x"): "fsmvxw", f7("mv_f"): "fsmvwx", f7("from_int"): "fscvtsi",
            sd.funct7: "fscvtsd", ds.funct7: "fdcvtds", tos.funct7: "ftis",
            tod.funct7: "ftid",
            **{i.funct7: f"fmm{i.fmt}" for i in spec.FP.values() if i.op == "minnum"}}


class _Gen(FpValues, TimeReads):
    def __init__(self, translated: bool) -> None:
        self.translated = translated
        self.mmio = False  # integer loads and stores may use the device callback
        self.threaded = False  # fast ops go on to the next one themselves (_dispatch_next)
        self._tails: dict[str, str] = {}  # kind of fast op -> its dispatch's label
        self._tail_lines: list[str] = []
        self.lines: list[str] = []
        self.n = 0
        self.k = 0  # label counter

    def op(self, expr: str) -> str:
        self.n += 1
        v = f"%v{self.n}"
        self.lines.append(f"  {v} = {expr}")
        return v

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def label(self, name: str) -> None:
        self.lines.append(f"{name}:")

    def fresh(self, stem: str) -> str:
        self.k += 1
        return f"{stem}{self.k}"

    def field(self, off: int, ty: str = "i64") -> str:
        p = self.op(f"getelementptr i8, ptr %s, i64 {off}")
        return self.op(f"load {ty}, ptr {p}")

    def all_of(self, *conds: str) -> str:
        """The i1 that is true when every one of ``conds`` is."""
        r = conds[0]
        for c in conds[1:]:
            r = self.op(f"and i1 {r}, {c}")
        return r

    def set_field(self, off: int, v: str, ty: str = "i64") -> None:
        p = self.op(f"getelementptr i8, ptr %s, i64 {off}")
        self.emit(f"store {ty} {v}, ptr {p}")

    def result(self, v: str) -> None:
        """The instruction's value for rd (x0 stays zero); then on to the next one."""
        rdx = self.op("zext i32 %rd to i64")
        self.emit(f"store i64 {v}, ptr {self.op(f'getelementptr i64, ptr %s, i64 {rdx}')}")
        self.emit("store i64 0, ptr %s")
        self.emit("br label %next")

    def sext32(self, v: str) -> str:
        t = self.op(f"trunc i64 {v} to i32")
        return self.op(f"sext i32 {t} to i64")

    # -- memory ------------------------------------------------------------------------
    def access(self, addr: str, size: int, store: bool, value: str | None = None,
               atomic: bool = False) -> str:
        """Host pointer for a guest access of ``size`` bytes; else leave for Python
        (before the instruction, with the access described for a refill). With
        ``value`` (integer loads and stores of the interpreter: "0" for a load, the
        value for a store), an aligned access to a device goes to the device callback
        (``mmiofn``) first: a load's pointer is then the value it read (``mmioval``), a
        store is done (its pointer is ``mmioval`` too, written to no effect). A
        misaligned access within a page is done here (codegen's access), an atomic's
        (``atomic``) is Python's."""
        fast, miss, out = self.fresh("mf"), self.fresh("mm"), self.fresh("mo")
        aligned = fits = "true"
        if size > 1:
            low = self.op(f"and i64 {addr}, {size - 1}")
            aligned = self.op(f"icmp eq i64 {low}, 0")
            if atomic:
                fits = aligned
            else:
                page_off = self.op(f"and i64 {addr}, 4095")
                fits = self.op(f"icmp ule i64 {page_off}, {4096 - size}")
        device = value if self.mmio else None
        if self.translated:
            vpn = self.op(f"lshr i64 {addr}, 12")
            idx = self.op(f"and i64 {vpn}, {S.NTLB - 1}")
            off = self.op(f"mul i64 {idx}, {S.TLB_ENTRY}")
            ent = self.op(f"getelementptr i8, ptr {self.field(S.TLBP, 'ptr')}, i64 {off}")
            tagp = self.op(f"getelementptr i8, ptr {ent}, i64 {8 if store else 0}")
            tag = self.op(f"load i64, ptr {tagp}")
            hit = self.op(f"icmp eq i64 {tag}, {vpn}")
            ok = self.op(f"and i1 {hit}, {fits}")
            self.emit(f"br i1 {ok}, label %{fast}, label %{miss}")
            self.label(miss)
            got = self.op(f"call i1 @pyhv_refill(ptr %s, i64 {addr}, i64 {size if store else 0})")
            ok2 = self.op(f"and i1 {got}, {aligned if store else fits}")
            self.emit(f"br i1 {ok2}, label %{fast}, label %{out}")
            if device is not None:
                # the refill proved addr maps to a device (mmiova, mmiopa): the callback
                self.label(out)
                pmva = self.op(f"getelementptr i8, ptr %s, i64 {S.MMIOVA}")
                proved = self.op(f"icmp eq i64 {self.op(f'load i64, ptr {pmva}')}, {addr}")
                self.emit(f"store i64 -1, ptr {pmva}")
                cb, slow = self.fresh("mb"), self.fresh("ms")
                self.emit(f"br i1 {self.op(f'and i1 {proved}, {aligned}')}, "
                          f"label %{cb}, label %{slow}")
                self.label(cb)
                join = self.fresh("mj")
                slot, done = self._device(self.field(S.MMIOPA), size, store, device, slow)
                self.emit(f"br label %{join}")
                self._slow_access(slow, addr, store, aligned)
                self.label(fast)
                addp = self.op(f"getelementptr i8, ptr {ent}, i64 16")
                host = self.op(f"add i64 {addr}, {self.op(f'load i64, ptr {addp}')}")
                hp = self.op(f"inttoptr i64 {host} to ptr")
                self.emit(f"br label %{join}")
                self.label(join)
                return self.op(f"phi ptr [ {hp}, %{fast} ], [ {slot}, %{done} ]")
            self._slow_access(out, addr, store, aligned)
            self.label(fast)
            addp = self.op(f"getelementptr i8, ptr {ent}, i64 16")
            add = self.op(f"load i64, ptr {addp}")
            host = self.op(f"add i64 {addr}, {add}")
            return self.op(f"inttoptr i64 {host} to ptr")
        off = self.op(f"sub i64 {addr}, {RAM_BASE}")
        lim = self.op(f"sub i64 %ramsize, {size - 1}")
        inr = self.op(f"icmp ult i64 {off}, {lim}")
        ok = self.op(f"and i1 {inr}, {fits if atomic else 'true'}")
        # a byte outside RAM may be the console UART's fast window (pyhv_mmio_slot)
        dev = self.fresh("md") if size == 1 else out
        if store:
            chk = self.fresh("mc")
            if fits == "true" or atomic:
                self.emit(f"br i1 {ok}, label %{chk}, label %{dev}")
            else:  # across two pages: the second must hold no code (the first is checked)
                inr2, cross = self.fresh("mr"), self.fresh("mx")
                self.emit(f"br i1 {ok}, label %{inr2}, label %{dev}")
                self.label(inr2)
                self.emit(f"br i1 {fits}, label %{chk}, label %{cross}")
                self.label(cross)
                last = self.op(f"lshr i64 {self.op(f'add i64 {off}, {size - 1}')}, 12")
                mp = self.op(f"getelementptr i8, ptr %codemap, i64 {last}")
                clean = self.op(f"icmp eq i8 {self.op(f'load i8, ptr {mp}')}, 0")
                self.emit(f"br i1 {clean}, label %{chk}, label %{out}")
            self.label(chk)
            self.lines.extend(code_granule_check(
                off, "%codemap", "@pyhv_granule_clear", fast, out, self.fresh("mg"),
                lambda: "%" + self.fresh("gt"), aligned))
        else:
            self.emit(f"br i1 {ok}, label %{fast}, label %{dev}")
        join = self.fresh("mj")
        arms = []
        if size == 1:
            self.label(dev)
            mp = self.op(f"call ptr @pyhv_mmio_slot(ptr %s, i64 {addr}, i64 {1 if store else 0})")
            has = self.op(f"icmp ne ptr {mp}, null")
            self.emit(f"br i1 {has}, label %{join}, label %{out}")
            arms.append((mp, dev))
        if device is not None:
            # outside RAM and aligned: the device callback (RAM's other slow paths, a
            # store over code, stay Python's)
            self.label(out)
            cb, slow = self.fresh("mb"), self.fresh("ms")
            dev_ok = self.op(f"and i1 {self.op(f'xor i1 {inr}, true')}, {aligned}")
            self.emit(f"br i1 {dev_ok}, label %{cb}, label %{slow}")
            self.label(cb)
            slot, done = self._device(addr, size, store, device, slow)
            self.emit(f"br label %{join}")
            arms.append((slot, done))
            out = slow
        self._slow_access(out, addr, store)
        self.label(fast)
        hp = self.op(f"getelementptr i8, ptr %ramhost, i64 {off}")
        if not arms:
            return hp
        self.emit(f"br label %{join}")
        self.label(join)
        return self.op("phi ptr " + ", ".join(
            f"[ {v}, %{lab} ]" for v, lab in [(hp, fast), *arms]))

    def _device(self, pa: str, size: int, store: bool, value: str, slow: str
                ) -> tuple[str, str]:
        """Call the device callback for the access at ``pa``; (pointer, the label it is
        valid at, which the caller branches on from). Not done: to ``slow``; done, but
        leave after the instruction (a store only): EXIT_IRQ, the store retired. A load
        of the CLINT's mtime register (``mtimepa``; whole, or either 32-bit half) reads
        the clock here, as the time CSR does: a program timing itself through it (a
        bare-metal ``clock()``) read it through Python at ~2 us a read, 22x QEMU's time."""
        done = self.fresh("md")
        if not store and size in (4, 8):
            mtp = self.field(S.MTIMEPA)
            rel = self.op(f"sub i64 {pa}, {mtp}")
            hit = self.op(f"icmp eq i64 {rel}, 0")
            if size == 4:
                hit = self.op(f"or i1 {hit}, {self.op(f'icmp eq i64 {rel}, 4')}")
            hit = self.op(f"and i1 {hit}, {self.op(f'icmp ne i64 {mtp}, 0')}")
            mt, dev = self.fresh("mt"), self.fresh("mv")
            self.emit(f"br i1 {hit}, label %{mt}, label %{dev}")
            self.label(mt)
            now = self.time_read(counted=False)  # (VirtBoard._next_time)
            if size == 4:
                now = self.mtime_half(now, rel)
            self.set_field(S.MMIOVAL, now)
            self.emit(f"br label %{done}")
            self.label(dev)
        fn = self.field(S.MMIOFN, "ptr")
        nofn = self.op(f"icmp eq ptr {fn}, null")
        call = self.fresh("mc")
        self.emit(f"br i1 {nofn}, label %{slow}, label %{call}")
        self.label(call)
        # (Python's own float arithmetic in the callback must not reach the guest's
        # fflags, which the dispatcher takes from MXCSR: it is saved and restored)
        self.emit("call void @llvm.x86.sse.stmxcsr(ptr %mxsave) #1")
        r = self.op(f"call i64 {fn}(i64 {pa}, i64 {size}, i64 {1 if store else 0}, "
                    f"i64 {value})")
        self.emit("call void @llvm.x86.sse.ldmxcsr(ptr %mxsave) #1")
        leave = self.fresh("ml") if store else done
        self.emit(f"switch i64 {r}, label %{slow} [ i64 1, label %{done} i64 2, "
                  f"label %{leave} ]")
        if store:  # (counted too)
            self.label(leave)
            self.set_field(S.NMMIO, self.op(f"add i64 {self.field(S.NMMIO)}, 1"))
            self.emit("br label %irqexit")
        self.label(done)
        self.set_field(S.NMMIO, self.op(f"add i64 {self.field(S.NMMIO)}, 1"))
        return self.op(f"getelementptr i8, ptr %s, i64 {S.MMIOVAL}"), done

    def _slow_access(self, label: str, addr: str, store: bool, aligned: str = "true") -> None:
        self.label(label)
        self.set_field(S.EXIT_VADDR, addr)
        self.emit(f"store i64 {2 if store else 1}, ptr %acc")
        # a misaligned access is Python's (its exception comes first where it has one)
        self.emit(f"store i1 {aligned}, ptr %pfok")
        self.emit("br label %slowmem")

    def guest_pa(self, ptr: str) -> str:
        h = self.op(f"ptrtoint ptr {ptr} to i64")
        host = self.op("ptrtoint ptr %ramhost to i64")
        off = self.op(f"sub i64 {h}, {host}")
        return self.op(f"add i64 {off}, {RAM_BASE}")

    # -- instruction groups ------------------------------------------------------------
    def switch(self, value: str, ty: str, cases: dict[int, str], default: str) -> None:
        arms = " ".join(f"{ty} {k}, label %{v}" for k, v in cases.items())
        self.emit(f"switch {ty} {value}, label %{default} [ {arms} ]")

    def spec_group(self, opcode: int) -> None:
        """The instructions of ``opcode`` (an integer ALU major opcode) that are no fast
        op (Zba, Zbb, Zbs, Zicond), from their description in
        isa/spec.py: matched by encoding, one after another; else Python (a reserved
        encoding: an illegal instruction)."""
        insns = [i for i in spec.ALU.values() if i.opcode == opcode and i.name not in FAST_OPS]
        for i in insns:
            nxt = self.fresh("sq")
            t = self.op(f"and i32 %w, {_s32(i.mask)}")
            c = self.op(f"icmp eq i32 {t}, {_s32(i.match)}")
            self.emit(f"br i1 {c}, label %sp_{_label(i.name)}, label %{nxt}")
            self.label(nxt)
        self.emit("br label %slow")
        for i in insns:
            self.label(f"sp_{_label(i.name)}")
            imm = {"I": "%immi", "SH6": "%shamt", "U": "0"}.get(i.form, "")
            if i.form == "SH5":
                imm = self.op("zext i32 %sh5 to i64")
            ua, ub = spec.operands(i.name)
            self.result(spec.llvm(i.name, self.op, "%a" if ua else "", "%b" if ub else "", imm))

    def fp_on(self, go: str) -> None:
        """On to ``go`` if FP is enabled (mstatus.FS != Off: the F registers were
        copied in), else leave for Python (which raises the illegal instruction)."""
        mode = self.field(S.FPMODE)
        on = self.op(f"and i64 {mode}, {S.FP_ENABLED}")
        ok = self.op(f"icmp ne i64 {on}, 0")
        self.emit(f"br i1 {ok}, label %{go}, label %slow")

    # -- double-precision arithmetic (the subset compiled blocks do: codegen.FP_NAMES) ----
    def _f(self, reg: str) -> str:
        fp = self.op(f"getelementptr i8, ptr %s, i64 {S.F}")
        r = self.op(f"zext i32 {reg} to i64")
        return self.op(f"load i64, ptr {self.op(f'getelementptr i64, ptr {fp}, i64 {r}')}")

    def _fset(self, v: str) -> None:
        """f[rd] = v, FS made dirty; on to the next instruction."""
        fp = self.op(f"getelementptr i8, ptr %s, i64 {S.F}")
        r = self.op("zext i32 %rd to i64")
        self.emit(f"store i64 {v}, ptr {self.op(f'getelementptr i64, ptr {fp}, i64 {r}')}")
        self.set_field(S.FSDIRTY, "1")
        self.emit("br label %next")

    def _rm_rne(self, go: str) -> None:
        """On to ``go`` if the instruction rounds to nearest-even: rm = RNE, or dynamic
        with frm = RNE; other modes are Python's (exact software FP)."""
        r0 = self.op("icmp eq i32 %f3, 0")
        dyn = self.op("icmp eq i32 %f3, 7")
        rne = self.op(f"and i64 {self.field(S.FPMODE)}, {S.FP_RNE}")
        frm = self.op(f"icmp ne i64 {rne}, 0")
        ok = self.op(f"and i1 {dyn}, {frm}")
        ok = self.op(f"or i1 {ok}, {r0}")
        self.emit(f"br i1 {ok}, label %{go}, label %slow")

    def fp_basic(self, fmt: str) -> None:
        """Arithmetic, sqrt, sign injection and compares of format ``fmt`` (s or d),
        at labels ``{p}a_fadd`` ..., ``{p}sqrt``, ``{p}sgnj``, ``{p}cmp`` (p: fs or fp)."""
        e = self.emit
        single = fmt == "s"
        p, fty, w = ("fs", "float", "f32") if single else ("fp", "double", "f64")
        rows = [i for i in (_FP_S if single else _FP_D) if i.opcode == spec.OP_FP]

        def operand(reg: str) -> str:
            return self.flt(self._f(reg)) if single else self.dbl(self._f(reg))

        for name in ("fadd", "fsub", "fmul", "fdiv"):
            self.label(f"{p}a_{name}")
            self._rm_rne(f"{p}a_{name}1")
            self.label(f"{p}a_{name}1")
            a, b = operand("%rs1"), operand("%rs2")
            r = self.op(f"call {fty} @llvm.experimental.constrained.{name}.{w}({fty} {a}, "
                        f"{fty} {b}, {_CI}) #1")
            self._fset(fp_result(self.op, r, single))
        self.label(f"{p}sqrt")
        e(f"br i1 {self.op('icmp eq i32 %rs2, 0')}, label %{p}sqrt0, label %slow")
        self.label(f"{p}sqrt0")
        self._rm_rne(f"{p}sqrt1")
        self.label(f"{p}sqrt1")
        a = operand("%rs1")
        self._fset(fp_result(self.op, self.op(
            f"call {fty} @llvm.experimental.constrained.sqrt.{w}({fty} {a}, {_CI}) #1"), single))
        self.label(f"{p}sgnj")
        self.switch("%f3", "i32", {i.funct3: f"{p}sg{i.arg}" for i in rows if i.op == "sgnj"},
                    "slow")
        for k in range(3):
            self.label(f"{p}sg{k}")
            a, b = self._f("%rs1"), self._f("%rs2")
            if single:
                r = fp_sign_inject(self.op, k, self.unbox(a), self.unbox(b), True)
                self._fset(self.box_bits(r))
            else:
                self._fset(fp_sign_inject(self.op, k, a, b, False))
        self.label(f"{p}cmp")
        cmps = [i for i in rows if i.name in FP_CMP]
        self.switch("%f3", "i32", {i.funct3: f"{p}{i.op}" for i in cmps}, "slow")
        for i in cmps:
            fn, cc = FP_CMP[i.name]
            self.label(f"{p}{i.op}")
            a, b = operand("%rs1"), operand("%rs2")
            c = self.op(f"call i1 @llvm.experimental.constrained.{fn}.{w}({fty} {a}, "
                        f'{fty} {b}, metadata !"{cc}", {_CX}) #1')
            self.set_field(S.FSDIRTY, "1")  # it may have raised flags
            self.result(self.op(f"zext i1 {c} to i64"))

    def fp_single(self) -> None:
        """OP-FP, single precision (codegen.fp_single's, on NaN-boxed operands):
        arithmetic, sqrt, sign injection, compares, moves, conversions from integers
        and between the formats (_fp_cases: their funct7s)."""
        e = self.emit
        rows = [i for i in _FP_S if i.opcode == spec.OP_FP]

        self.fp_basic("s")
        self.label("fsmvxw")  # fmv.x.w (funct3 1 is fclass.s): the low half, sign-extended
        plain = self.op("or i32 %f3, %rs2")
        e(f"br i1 {self.op(f'icmp eq i32 {plain}, 0')}, label %fsmvxw1, label %fsclass")
        self.label("fsclass")
        e(f"br i1 {self.op(f'icmp eq i32 {plain}, 1')}, label %fsclass1, label %slow")
        self.label("fsclass1")
        self.result(fp_class(self.op, self.unbox(self._f("%rs1")), True))
        self.label("fsmvxw1")
        low = self.op(f"trunc i64 {self._f('%rs1')} to i32")
        self.result(self.op(f"sext i32 {low} to i64"))
        self.label("fsmvwx")  # fmv.w.x: boxed
        plain = self.op("or i32 %f3, %rs2")
        e(f"br i1 {self.op(f'icmp eq i32 {plain}, 0')}, label %fsmvwx1, label %slow")
        self.label("fsmvwx1")
        self._fset(self.box_bits(self.op("trunc i64 %a to i32")))
        self.label("fscvtsi")  # fcvt.s.w / .wu / .l: all round (RNE only)
        cvt = {INT_TO_FP[i.name][0]: i.rs2 for i in rows if i.name in INT_TO_FP}
        lu = next(i.rs2 for i in rows if i.op == "from_int" and i.arg == 64 and not i.signed)
        ok = self.op(f"icmp ule i32 %rs2, {max(cvt.values())}")
        e(f"br i1 {ok}, label %fscvtsi0, label %fscvtslu")
        self.label("fscvtslu")
        e(f"br i1 {self.op(f'icmp eq i32 %rs2, {lu}')}, label %fscvtslu0, label %slow")
        self.label("fscvtslu0")
        self._rm_rne("fscvtslu1")
        self.label("fscvtslu1")
        r = fp_from_u64(self.op, "%a", True)
        self._fset(self.box_bits(self.op(f"bitcast float {r} to i32")))
        self.label("fscvtsi0")
        self._rm_rne("fscvtsi1")
        self.label("fscvtsi1")
        t = self.op("trunc i64 %a to i32")
        sx, zx = self.op(f"sext i32 {t} to i64"), self.op(f"zext i32 {t} to i64")
        isz = self.op(f"icmp eq i32 %rs2, {cvt['zext']}")
        iss = self.op(f"icmp eq i32 %rs2, {cvt['sext']}")
        v = self.op(f"select i1 {isz}, i64 {zx}, i64 %a")
        v = self.op(f"select i1 {iss}, i64 {sx}, i64 {v}")
        r = self.op(f"call float @llvm.experimental.constrained.sitofp.f32.i64(i64 {v}, "
                    f"{_CI}) #1")
        self._fset(self.box_bits(self.op(f"bitcast float {r} to i32")))
        # fcvt.s.d (rounds: RNE only) and fcvt.d.s (exact)
        sd = next(i for i in rows if i.op == "cvt")
        ds = next(i for i in _FP_D if i.op == "cvt")
        self.label("fscvtsd")
        e(f"br i1 {self.op(f'icmp eq i32 %rs2, {sd.rs2}')}, label %fscvtsd0, label %slow")
        self.label("fscvtsd0")
        self._rm_rne("fscvtsd1")
        self.label("fscvtsd1")
        x = self.dbl(self._f("%rs1"))
        self._fset(self.box(self.op(
            f"call float @llvm.experimental.constrained.fptrunc.f32.f64(double {x}, {_CI}) #1")))
        self.label("fdcvtds")
        e(f"br i1 {self.op(f'icmp eq i32 %rs2, {ds.rs2}')}, label %fdcvtds1, label %slow")
        self.label("fdcvtds1")
        x = self.flt(self._f("%rs1"))
        self._fset(self.canon(self.op(
            f"call double @llvm.experimental.constrained.fpext.f64.f32(float {x}, {_CX}) #1")))

    def fp_to_int(self) -> None:
        """fcvt.w/wu/l/lu.s/d in each static rounding mode (or dynamic with frm RNE),
        saturated as RISC-V does (codegen.fp_to_int)."""
        for fmt, rows in (("s", _FP_S), ("d", _FP_D)):
            convs = {i.rs2: i for i in rows if i.op == "to_int"}  # rs2: w, wu, l, lu
            self.label(f"fti{fmt}")
            self.switch("%rs2", "i32", {rs2: f"fti{fmt}{rs2}" for rs2 in convs}, "slow")
            for rs2, i in convs.items():
                lab = f"fti{fmt}{rs2}"
                self.label(lab)
                self.switch("%f3", "i32", {**{rm: f"{lab}r{rm}" for rm in range(5)},
                                           7: f"{lab}dyn"}, "slow")
                self.label(f"{lab}dyn")
                self._rm_rne(f"{lab}r0")
                for rm in range(5):  # RNE, RTZ, RDN, RUP, RMM
                    self.label(f"{lab}r{rm}")
                    bits = self.unbox(self._f("%rs1")) if fmt == "s" else self._f("%rs1")
                    r, nv = fp_to_int(self.op, bits, fmt == "s", i.arg, i.signed, rm)
                    self.set_field(S.FFLAGS, self.op(f"or i64 {self.field(S.FFLAGS)}, {nv}"))
                    self.set_field(S.FSDIRTY, "1")
                    self.result(r)

    def fp_ops(self) -> None:
        """OP-FP: arithmetic, sqrt, sign injection, compares, moves and conversions
        (between the formats, from integers, to signed integers) in single and double
        precision, with host FP (flags from MXCSR, as blocks do); the rest (other
        rounding modes, classify, min/max, unsigned results) in Python."""
        e = self.emit
        self.fp_on("opfp0")
        self.label("opfp0")
        # the encodings are isa/spec.py's (OP-FP: funct7, then funct3 or rs2)
        rows = [i for i in _FP_D if i.opcode == spec.OP_FP]

        def f7(op: str) -> int:
            return next(i.funct7 for i in rows if i.op == op)

        arith = {f7(op): "f" + op for op in ("add", "sub", "mul", "div")}
        self.switch("%f7", "i32", {**{k: f"fpa_{v}" for k, v in arith.items()},
                                   f7("sqrt"): "fpsqrt", f7("sgnj"): "fpsgnj",
                                   f7("eq"): "fpcmp", f7("mv_x"): "fpmvxd",
                                   f7("mv_f"): "fpmvdx", f7("from_int"): "fpcvtdi",
                                   **_fp_cases()}, "slow")
        self.fp_single()
        self.fp_to_int()
        for fmt in ("s", "d"):  # fmin/fmax: funct3 0 min, 1 max
            mm = {i.funct3: i.op == "maxnum" for i in spec.FP.values()
                  if i.fmt == fmt and i.op in ("minnum", "maxnum")}
            self.label(f"fmm{fmt}")
            self.switch("%f3", "i32", {f3: f"fmm{fmt}{f3}" for f3 in mm}, "slow")
            for f3, is_max in mm.items():
                self.label(f"fmm{fmt}{f3}")
                a, b = self._f("%rs1"), self._f("%rs2")
                if fmt == "s":
                    r = fp_minmax(self.op, self.unbox(a), self.unbox(b), is_max, True)
                    self._fset(self.box_bits(r))
                else:
                    self._fset(fp_minmax(self.op, a, b, is_max, False))
        self.fp_basic("d")
        self.label("fpmvxd")  # fmv.x.d (funct3 1 is fclass.d)
        plain = self.op("or i32 %f3, %rs2")
        ok = self.op(f"icmp eq i32 {plain}, 0")
        e(f"br i1 {ok}, label %fpmvxd1, label %fpclass")
        self.label("fpclass")
        e(f"br i1 {self.op(f'icmp eq i32 {plain}, 1')}, label %fpclass1, label %slow")
        self.label("fpclass1")
        self.result(fp_class(self.op, self._f("%rs1"), False))
        self.label("fpmvxd1")
        self.result(self._f("%rs1"))
        self.label("fpmvdx")
        ok = self.op("or i32 %f3, %rs2")
        ok = self.op(f"icmp eq i32 {ok}, 0")
        e(f"br i1 {ok}, label %fpmvdx1, label %slow")
        self.label("fpmvdx1")
        self._fset("%a")
        self.label("fpcvtdi")  # fcvt.d.w / .wu (exact) / .l (rounds: RNE only)
        cvt = {INT_TO_FP[i.name][0]: i.rs2 for i in rows if i.name in INT_TO_FP}
        lu = next(i.rs2 for i in rows if i.op == "from_int" and i.arg == 64 and not i.signed)
        self.switch("%rs2", "i32", {cvt["sext"]: "fpcvw", cvt["zext"]: "fpcvwu",
                                    cvt[None]: "fpcvl", lu: "fpcvlu"}, "slow")
        self.label("fpcvlu")
        self._rm_rne("fpcvlu1")
        self.label("fpcvlu1")
        r = fp_from_u64(self.op, "%a", False)
        self._fset(self.op(f"bitcast double {r} to i64"))
        self.label("fpcvw")
        e("br label %fpcv1")
        self.label("fpcvwu")
        e("br label %fpcv1")
        self.label("fpcvl")
        self._rm_rne("fpcv1")
        self.label("fpcv1")
        t = self.op("trunc i64 %a to i32")
        sx = self.op(f"sext i32 {t} to i64")
        zx = self.op(f"zext i32 {t} to i64")
        isw = self.op(f"icmp eq i32 %rs2, {cvt['sext']}")
        iswu = self.op(f"icmp eq i32 %rs2, {cvt['zext']}")
        v = self.op(f"select i1 {iswu}, i64 {zx}, i64 %a")
        v = self.op(f"select i1 {isw}, i64 {sx}, i64 {v}")
        r = self.op(f"call double @llvm.experimental.constrained.sitofp.f64.i64(i64 {v}, {_CI}) #1")
        self._fset(self.op(f"bitcast double {r} to i64"))

    def fp_fma(self) -> None:
        """fmadd/fmsub/fnmsub/fnmadd.s and .d, with RISC-V's invalid flag for inf * 0 +
        qNaN (the host raises none)."""
        self.fp_on("fma0")
        self.label("fma0")
        fmas = [i for i in _FP_D if i.op == "fma"]
        fmt = self.op("and i32 %f7, 3")
        single = next(i for i in _FP_S if i.op == "fma").funct7 & 3
        self.switch(fmt, "i32", {fmas[0].funct7 & 3: "fma1", single: "fmas1"}, "slow")
        for fmt_, (ty, fty, w, sign) in (("d", ("i64", "double", "f64", _s64(1 << 63))),
                                         ("s", ("i32", "float", "f32", str(-(1 << 31))))):
            lab = "fma" if fmt_ == "d" else "fmas"
            self.label(f"{lab}1")
            self._rm_rne(f"{lab}2")
            self.label(f"{lab}2")
            a, b = self._f("%rs1"), self._f("%rs2")
            c = self._f("%f5")  # rs3 = w[31:27]
            if fmt_ == "s":
                a, b, c = self.unbox(a), self.unbox(b), self.unbox(c)
            # fmadd: a*b+c; fmsub: a*b-c; fnmsub: -(a*b)+c; fnmadd: -(a*b)-c (by opcode)
            negp = negc = "false"
            for i in fmas:
                this = self.op(f"icmp eq i32 %opc, {i.opcode}")
                if i.arg & 1:
                    negp = self.op(f"or i1 {negp}, {this}")
                if i.arg & 2:
                    negc = self.op(f"or i1 {negc}, {this}")
            an = self.op(f"xor {ty} {a}, {sign}")
            a2 = self.op(f"select i1 {negp}, {ty} {an}, {ty} {a}")
            cn = self.op(f"xor {ty} {c}, {sign}")
            c2 = self.op(f"select i1 {negc}, {ty} {cn}, {ty} {c}")
            nv = fma_invalid(self.op, a, b, ty)  # (i64: the flag)
            old = self.field(S.FFLAGS)
            self.set_field(S.FFLAGS, self.op(f"or i64 {old}, {nv}"))
            fa, fb, fc = (self.op(f"bitcast {ty} {v} to {fty}") for v in (a2, b, c2))
            r = self.op(f"call {fty} @llvm.experimental.constrained.fma.{w}({fty} {fa}, "
                        f"{fty} {fb}, {fty} {fc}, {_CI}) #1")
            self._fset(self.canon(r) if fmt_ == "d" else self.box(r))

    def fp_loads(self) -> None:
        """flw and fld (a kernel's context switch saves and restores the F registers):
        plain loads into f[rd], NaN-boxing a single, FS made dirty."""
        self.fp_on("fld0")
        self.label("fld0")
        loads = {i.funct3: 8 * i.arg for i in spec.FP.values() if i.op == "load"}
        self.switch("%f3", "i32", {f3: f"fld{bits}" for f3, bits in loads.items()}, "slow")
        for bits in loads.values():
            name = f"fld{bits}"
            self.label(name)
            addr = self.op("add i64 %a, %immi")
            ptr = self.access(addr, bits // 8, store=False)
            v = self.op(f"load i{bits}, ptr {ptr}, align 1")
            if bits == 32:
                v = self.op(f"zext i32 {v} to i64")
                v = self.op(f"or i64 {v}, {_s64(0xFFFFFFFF00000000)}")
            rdx = self.op("zext i32 %rd to i64")
            fp = self.op(f"getelementptr i8, ptr %s, i64 {S.F}")
            self.emit(f"store i64 {v}, ptr {self.op(f'getelementptr i64, ptr {fp}, i64 {rdx}')}")
            self.set_field(S.FSDIRTY, "1")
            self.emit("br label %next")

    def fp_stores(self) -> None:
        """fsw and fsd of f[rs2]."""
        self.fp_on("fst0")
        self.label("fst0")
        stores = {i.funct3: 8 * i.arg for i in spec.FP.values() if i.op == "store"}
        self.switch("%f3", "i32", {f3: f"fst{bits}" for f3, bits in stores.items()}, "slow")
        for bits in stores.values():
            name = f"fst{bits}"
            self.label(name)
            addr = self.op("add i64 %a, %imms")
            ptr = self.access(addr, bits // 8, store=True)
            r2 = self.op("zext i32 %rs2 to i64")
            fp = self.op(f"getelementptr i8, ptr %s, i64 {S.F}")
            v = self.op(f"load i64, ptr {self.op(f'getelementptr i64, ptr {fp}, i64 {r2}')}")
            if bits == 32:
                v = self.op(f"trunc i64 {v} to i32")
            self.emit(f"store i{bits} {v}, ptr {ptr}, align 1")
            n = self.field(S.STORES)
            self.set_field(S.STORES, self.op(f"add i64 {n}, 1"))
            self.emit("br label %next")

    def atomics(self) -> None:
        self.switch("%f3", "i32", {2: "amow", 3: "amod"}, "slow")
        for width, bits in (("w", 32), ("d", 64)):
            ty = f"i{bits}"
            ops = {i.fixed: n for n, i in spec.AMOS.items() if n.endswith(width)}  # funct5
            cases = {f: f"a{width}{f}" for f in (2, 3, *ops)}
            self.label(f"amo{width}")
            self.switch("%f5", "i32", cases, "slow")

            def ext(v: str, ty: str = ty, bits: int = bits) -> str:
                return self.op(f"sext {ty} {v} to i64") if bits == 32 else v

            # lr: rs2 must be 0
            self.label(f"a{width}2")
            ok = self.op("icmp eq i32 %rs2, 0")
            go = self.fresh("lr")
            self.emit(f"br i1 {ok}, label %{go}, label %slow")
            self.label(go)
            ptr = self.access("%a", bits // 8, store=False, atomic=True)
            v = self.op(f"load {ty}, ptr {ptr}, align 1")
            self.set_field(S.RESV, self.guest_pa(ptr))
            self.result(ext(v))
            # sc
            self.label(f"a{width}3")
            ptr = self.access("%a", bits // 8, store=True, atomic=True)
            resv = self.field(S.RESV)
            ok = self.op(f"icmp eq i64 {resv}, {self.guest_pa(ptr)}")
            yes, join = self.fresh("scy"), self.fresh("scj")
            src = "%b" if bits == 64 else self.op("trunc i64 %b to i32")
            self.emit(f"br i1 {ok}, label %{yes}, label %{join}")
            self.label(yes)
            self.emit(f"store {ty} {src}, ptr {ptr}, align 1")
            self.emit(f"br label %{join}")
            self.label(join)
            self.set_field(S.RESV, "-1")
            self.result(self.op(f"select i1 {ok}, i64 0, i64 1"))
            for f5, name in ops.items():
                self.label(f"a{width}{f5}")
                ptr = self.access("%a", bits // 8, store=True, atomic=True)
                old = ext(self.op(f"load {ty}, ptr {ptr}, align 1"))
                new = spec.llvm(name, self.op, b="%b", m=old)  # isa/spec.py
                if bits == 32:
                    new = self.op(f"trunc i64 {new} to i32")
                self.emit(f"store {ty} {new}, ptr {ptr}, align 1")
                self.result(old)

    def system(self) -> None:
        """The CSR accesses worth doing natively: reading ``time`` (Linux's clock
        source) and sstatus reads and SIE set/clear in S-mode (local_irq_save/restore),
        with the interpreter's view of sstatus (FS dirty folded in, SD from FS). Setting
        SIE while an interrupt waits for it leaves after the instruction (EXIT_IRQ)."""
        e = self.emit
        csr = self.op("lshr i32 %w, 20")
        plain = {c: "pcsr" for c in (C.MSCRATCH, C.SSCRATCH, C.MEPC, C.SEPC, C.MCAUSE,
                                     C.SCAUSE, C.MTVAL, C.STVAL)}
        group = {c: "csrpre" for c in [C.MHARTID, C.MSTATUS, C.MISA, *plain]}
        fences = {0x120 | rs2: "sfence" for rs2 in range(32)}  # sfence.vma: funct7 9
        self.switch(csr, "i32", {C.TIME: "rdtime", C.SSTATUS: "sstat", **group, **fences,
                                 0x000: "ecall", 0x102: "sret", 0x302: "mret",
                                 C.MIE: "icsr", C.SIE: "icsr", C.MIP: "icsr",
                                 C.SIP: "icsr", C.STVEC: "tvec", C.MTVEC: "tvec",
                                 C.SATP: "satp", C.CYCLE: "cntr", C.INSTRET: "cntr",
                                 C.MCYCLE: "cntr", C.MINSTRET: "cntr",
                                 C.FFLAGS: "fcsr", C.FRM: "fcsr", C.FCSR: "fcsr"}, "slow")
        self.fp_csrs(csr)
        self.sfence()
        self.traps()
        self.irq_csrs(csr)
        self.trap_vectors(csr)
        self.satp(csr)
        self.counters(csr)
        self.label("csrpre")
        self.plain_csrs(csr, {C.MHARTID: "hartid", C.MSTATUS: "mstat", C.MISA: "misa",
                              **plain})
        self.label("rdtime")
        f2 = self.op("icmp eq i32 %f3, 2")
        r0 = self.op("icmp eq i32 %rs1, 0")
        ok = self.op(f"and i1 {f2}, {r0}")
        tok = self.op(f"icmp ne i64 {self.field(S.TIMEOK)}, 0")
        ok = self.op(f"and i1 {ok}, {tok}")
        e(f"br i1 {ok}, label %rdtime1, label %slow")
        self.label("rdtime1")
        self.result(self.time_read())
        self.label("sstat")
        iss = self.op(f"icmp eq i64 {self.field(S.PRIV)}, {C.PRV_S}")
        e(f"br i1 {iss}, label %sst1, label %slow")
        self.label("sst1")
        self.switch("%f3", "i32", {1: "sswreg", 2: "ssreg", 3: "ssreg", 5: "sswimm",
                                   6: "ssimm", 7: "ssimm"}, "slow")
        self.label("ssreg")
        e("br label %ssop")
        self.label("ssimm")
        uimm = self.op("zext i32 %rs1 to i64")
        e("br label %ssop")
        self.label("sswreg")
        e("br label %sswop")
        self.label("sswimm")
        uimm2 = self.op("zext i32 %rs1 to i64")
        e("br label %sswop")
        # The new writable bits from the value sstatus reads as (FS dirty folded in):
        # set/clear (csrrs/csrrc), or written whole (csrw, a trap return's restore).
        wm = C.SSTATUS_MASK & C.MSTATUS_WRITABLE
        self.label("ssop")
        bits = self.op(f"phi i64 [ %a, %ssreg ], [ {uimm}, %ssimm ]")
        ms = self.field(S.MSTATUS)
        val = self.sstatus_value(ms)
        eff = self.op(f"and i64 {val}, {wm}")
        wbits = self.op(f"and i64 {bits}, {wm}")
        f1 = self.op("and i32 %f3, 1")
        setting = self.op(f"icmp eq i32 {f1}, 0")
        inv = self.op(f"xor i64 {wbits}, -1")
        cleared = self.op(f"and i64 {eff}, {inv}")
        set_ = self.op(f"or i64 {eff}, {wbits}")
        put1 = self.op(f"select i1 {setting}, i64 {set_}, i64 {cleared}")
        e("br label %sschk")
        self.label("sswop")
        wv = self.op(f"phi i64 [ %a, %sswreg ], [ {uimm2}, %sswimm ]")
        put2 = self.op(f"and i64 {wv}, {wm}")
        e("br label %sschk")
        # SIE (local_irq_*), SUM (uaccess), SPIE/SPP and FS (trap entry and return) may
        # change natively; MXR (what a load may read) is Python's.
        self.label("sschk")
        put = self.op(f"phi i64 [ {put1}, %ssop ], [ {put2}, %sswop ]")
        ms = self.field(S.MSTATUS)
        val = self.sstatus_value(ms)
        eff = self.op(f"and i64 {val}, {wm}")
        diff = self.op(f"xor i64 {put}, {eff}")
        bad = self.op(f"and i64 {diff}, {C.MSTATUS_MXR}")
        okw = self.op(f"icmp eq i64 {bad}, 0")
        e(f"br i1 {okw}, label %sswrite, label %slow")
        self.label("sswrite")
        keep = self.op(f"and i64 {ms}, {_s64(~(wm | C.MSTATUS_SD))}")  # as Hart writes it
        new = self.op(f"or i64 {keep}, {put}")
        pms = self.op(f"getelementptr i8, ptr %s, i64 {S.MSTATUS}")
        e(f"store i64 {new}, ptr {pms}")
        # FS now says what it is: a pending "dirty" is folded into it (the F registers
        # still go back to Python: fcopy), and FP is on or off from here
        fsd = self.field(S.FSDIRTY)
        self.set_field(S.FCOPY, self.op(f"or i64 {self.field(S.FCOPY)}, {fsd}"))
        self.set_field(S.FSDIRTY, "0")
        fsbits = self.op(f"and i64 {new}, {C.MSTATUS_FS}")
        fson = self.op(f"icmp ne i64 {fsbits}, 0")
        mode = self.op(f"and i64 {self.field(S.FPMODE)}, {_s64(~S.FP_ENABLED)}")
        mode2 = self.op(f"or i64 {mode}, {S.FP_ENABLED}")
        self.set_field(S.FPMODE, self.op(f"select i1 {fson}, i64 {mode2}, i64 {mode}"))
        sum_ = self.op(f"and i64 {new}, {C.MSTATUS_SUM}")
        sumon = self.op(f"icmp ne i64 {sum_}, 0")
        sel = self.op(f"select i1 {sumon}, i64 {self.field(S.TLBP1)}, i64 {self.field(S.TLBP0)}")
        self.set_field(S.TLBP, sel)
        rdx = self.op("zext i32 %rd to i64")
        e(f"store i64 {val}, ptr {self.op(f'getelementptr i64, ptr %s, i64 {rdx}')}")
        e("store i64 0, ptr %s")
        sie = self.op(f"and i64 {new}, {C.MSTATUS_SIE}")
        on = self.op(f"icmp ne i64 {sie}, 0")
        want = self.op(f"icmp ne i64 {self.field(S.IRQSIE)}, 0")
        irq = self.op(f"and i1 {on}, {want}")
        e(f"br i1 {irq}, label %irqexit, label %next")
        self.label("irqexit")
        e("store i64 %npc, ptr %pcv")
        b1 = self.op("sub i64 %bud, 1")
        e(f"store i64 {b1}, ptr %budv")
        self._writeback(S.EXIT_IRQ)

    def traps(self) -> None:
        """A system call and its return, done natively while nothing else is at stake
        (Python prepared both contexts of the address space, no interrupt is pending,
        ``irqpend``): ECALL from U-mode delegated to S-mode, and SRET in S-mode (to
        U-mode, or to S-mode). Exactly what Hart.take_trap and Hart.sret do; the ECALL
        does not retire. A change of privilege switches the dispatch table, heat
        counters and soft TLBs to the prepared context (``ctxs``) and empties the I-TLB
        (its entries were checked for the other privilege); then the stretch ends."""
        e = self.emit
        self.label("ecall")
        ok0, ms, priv = self.trap_ready()
        isecall = self.op("icmp eq i32 %w, 115")  # 0x00000073
        fromu = self.op(f"icmp eq i64 {priv}, {C.PRV_U}")
        deleg = self.op(f"and i64 {self.field(S.MEDELEG)}, {1 << 8}")
        deleg = self.op(f"icmp ne i64 {deleg}, 0")
        ok = self.all_of(isecall, fromu, deleg, ok0)
        e(f"br i1 {ok}, label %ecall1, label %ecalls")
        self.label("ecall1")
        self.trap_from_u(ms, "8", "0", "%pc", S.NTRAPS)  # environment call from U-mode
        # from S-mode into the firmware (an SBI call), while MPRV is clear (M-mode's data
        # accesses are then untranslated: its context's interpreter is the bare one).
        # An interrupt delegated to S-mode may be pending: S-mode has it masked (else
        # it would have been taken) and M-mode never takes it, so the call goes on (a
        # kernel's timer interrupt handler asks for the next one, sbi_set_timer, while
        # STIP is pending; the firmware clears it, and an MRET with one still pending
        # is native too); one for M-mode would be taken before the ECALL: Python's.
        self.label("ecalls")
        froms = self.op(f"icmp eq i64 {priv}, {C.PRV_S}")
        mdeleg = self.op(f"and i64 {self.field(S.MEDELEG)}, {1 << 9}")
        undeleg = self.op(f"icmp eq i64 {mdeleg}, 0")
        mprv = self.op(f"and i64 {ms}, {C.MSTATUS_MPRV}")
        nomprv = self.op(f"icmp eq i64 {mprv}, 0")
        pend = self.op(f"or i64 {self.field(S.MIP)}, {self.field(S.MIPHW)}")
        pend = self.op(f"and i64 {pend}, {self.field(S.MIE)}")
        mlevel = self.op(f"and i64 {pend}, {self.op(f'xor i64 {self.field(S.MIDELEG)}, -1')}")
        quiet = self.op(f"icmp eq i64 {self.field(S.IRQPEND)}, 0")
        sonly = self.op(f"or i1 {quiet}, {self.op(f'icmp eq i64 {mlevel}, 0')}")
        ctxok = self.op(f"icmp ne i64 {self.field(S.CTXOK)}, 0")
        ok = self.all_of(isecall, froms, undeleg, nomprv, ctxok, sonly)
        e(f"br i1 {ok}, label %ecallm, label %slow")
        self.label("ecallm")
        self.trap_from_s_to_m(ms)
        self.label("mret")
        ok0, ms, priv = self.trap_ready()
        ismret = self.op("icmp eq i32 %w, 807403635")  # 0x30200073
        fromm = self.op(f"icmp eq i64 {priv}, {C.PRV_M}")
        mpp = self.op(f"and i64 {ms}, {C.MSTATUS_MPP}")
        low = self.op(f"icmp ule i64 {mpp}, {C.PRV_S << C.MSTATUS_MPP_SHIFT}")
        ok = self.all_of(ismret, fromm, low, ok0)
        e(f"br i1 {ok}, label %mret1, label %mretq")
        self.label("mretq")  # an interrupt is pending
        ctxok = self.op(f"icmp ne i64 {self.field(S.CTXOK)}, 0")
        e(f"br i1 {self.all_of(ismret, fromm, low, ctxok)}, label %mretirq, label %slow")
        self.mret_interrupt(ms, mpp)
        self.label("mret1")
        new = self.trap_pop(ms, C.MSTATUS_MIE, C.MSTATUS_MPIE, C.MSTATUS_MPP)
        e(f"store i64 {self.field(S.CSRS + 8 * 2)}, ptr %pcv")  # mepc
        self.set_field(S.NMRETS, self.op(f"add i64 {self.field(S.NMRETS)}, 1"))
        tou = self.op(f"icmp eq i64 {mpp}, 0")
        e(f"br i1 {tou}, label %mretu, label %mrets")
        for priv_to, lab in ((C.PRV_U, "mretu"), (C.PRV_S, "mrets")):
            self.label(lab)
            self.switch_context(priv_to, new)
            self.set_field(S.INTERP, self.field(S.SINTERP))
            self.set_field(S.ICHK, "1")
            e("br label %retire")
        self.label("sret")
        ok0, ms, priv = self.trap_ready()
        issret = self.op("icmp eq i32 %w, 270532723")  # 0x10200073
        froms = self.op(f"icmp eq i64 {priv}, {C.PRV_S}")
        tsr = self.op(f"and i64 {ms}, {C.MSTATUS_TSR}")
        notsr = self.op(f"icmp eq i64 {tsr}, 0")
        ok = self.all_of(issret, froms, notsr, ok0)
        e(f"br i1 {ok}, label %sret1, label %slow")
        self.label("sret1")
        new = self.trap_pop(ms, C.MSTATUS_SIE, C.MSTATUS_SPIE, C.MSTATUS_SPP)
        e(f"store i64 {self.field(S.CSRS + 8 * 3)}, ptr %pcv")  # sepc
        self.set_field(S.NRETS, self.op(f"add i64 {self.field(S.NRETS)}, 1"))
        spp = self.op(f"and i64 {ms}, {C.MSTATUS_SPP}")
        tou = self.op(f"icmp eq i64 {spp}, 0")
        e(f"br i1 {tou}, label %sretu, label %retire")
        self.label("sretu")
        self.switch_context(C.PRV_U, new)
        e("br label %retire")

    def irq_csrs(self, csr: str) -> None:
        """mie, sie, mip and sip (Hart.csr_read / csr_write: the WARL masks, sie and sip
        as mideleg shows them, mip's software bits), on the run's copies (mie, mip,
        miphw). A write after which an enabled interrupt is pending leaves after the
        instruction (EXIT_IRQ: Python takes it, or sees it cannot yet); one that leaves
        none pending goes on, and native traps may go on too (irqpend cleared)."""
        e = self.emit
        self.label("icsr")
        kind = self.op("and i32 %f3, 3")
        okind = self.op(f"icmp ne i32 {kind}, 0")
        nz = self.op("icmp ne i32 %rs1, 0")
        writes = self.op(f"or i1 {self.op(f'icmp eq i32 {kind}, 1')}, {nz}")
        isimm = self.op("and i32 %f3, 4")
        imm = self.op(f"icmp ne i32 {isimm}, 0")
        uimm = self.op("zext i32 %rs1 to i64")
        operand = self.op(f"select i1 {imm}, i64 {uimm}, i64 %a")
        lvl = self.op(f"lshr i32 {csr}, 8")
        lvl = self.op(f"zext i32 {self.op(f'and i32 {lvl}, 3')} to i64")
        allowed = self.op(f"icmp ule i64 {lvl}, {self.field(S.PRIV)}")
        e(f"br i1 {self.op(f'and i1 {allowed}, {okind}')}, label %icsr1, label %slow")
        self.label("icsr1")
        mie, mip, hw, deleg = (self.field(off) for off in (S.MIE, S.MIP, S.MIPHW, S.MIDELEG))
        sview = self.op(f"icmp eq i32 {self.op(f'and i32 {csr}, 768')}, 256")  # sie, sip
        ipreg = self.op(f"icmp eq i32 {self.op(f'and i32 {csr}, 255')}, 68")  # mip, sip
        pend = self.op(f"or i64 {mip}, {hw}")
        ie = self.op(f"select i1 {sview}, i64 {self.op(f'and i64 {mie}, {deleg}')}, "
                     f"i64 {mie}")
        ip = self.op(f"select i1 {sview}, i64 {self.op(f'and i64 {pend}, {deleg}')}, "
                     f"i64 {pend}")
        old = self.op(f"select i1 {ipreg}, i64 {ip}, i64 {ie}")
        # mip.SEIP: only the software-writable bit takes part in a CSRRS/CSRRC
        # read-modify-write, never the PLIC's signal (priv spec 3.1.9), as in interp.py
        ismip = self.op(f"and i1 {ipreg}, {self.op(f'xor i1 {sview}, true')}")
        hw_no_seip = self.op(f"and i64 {hw}, {_s64(~MIP_SEIP)}")
        base = self.op(f"select i1 {ismip}, i64 {self.op(f'or i64 {mip}, {hw_no_seip}')}, "
                       f"i64 {old}")
        set_ = self.op(f"or i64 {base}, {operand}")
        clr = self.op(f"and i64 {base}, {self.op(f'xor i64 {operand}, -1')}")
        k2 = self.op(f"icmp eq i32 {kind}, 2")
        k1 = self.op(f"icmp eq i32 {kind}, 1")
        new = self.op(f"select i1 {k1}, i64 {operand}, i64 "
                      f"{self.op(f'select i1 {k2}, i64 {set_}, i64 {clr}')}")
        # mie / sie
        smask = self.op(f"and i64 {deleg}, {MIE_MASK}")
        notdeleg = self.op(f"xor i64 {deleg}, -1")
        sie_new = self.op(f"or i64 {self.op(f'and i64 {mie}, {notdeleg}')}, "
                          f"{self.op(f'and i64 {new}, {smask}')}")
        ie_new = self.op(f"select i1 {sview}, i64 {sie_new}, i64 "
                         f"{self.op(f'and i64 {new}, {MIE_MASK}')}")
        # mip / sip: software bits only (sip: SSIP, where delegated)
        ipmask = self.op(f"select i1 {sview}, i64 {self.op(f'and i64 {deleg}, {MIP_SSIP}')}"
                         f", i64 {MIP_SW_MASK}")
        notmask = self.op(f"xor i64 {ipmask}, -1")
        ip_new = self.op(f"or i64 {self.op(f'and i64 {mip}, {notmask}')}, "
                         f"{self.op(f'and i64 {new}, {ipmask}')}")
        wie = self.op(f"and i1 {writes}, {self.op(f'xor i1 {ipreg}, true')}")
        wip = self.op(f"and i1 {writes}, {ipreg}")
        mie2 = self.op(f"select i1 {wie}, i64 {ie_new}, i64 {mie}")
        mip2 = self.op(f"select i1 {wip}, i64 {ip_new}, i64 {mip}")
        self.set_field(S.MIE, mie2)
        self.set_field(S.MIP, mip2)
        dirty = self.op(f"zext i1 {writes} to i64")
        self.set_field(S.IRQDIRTY, self.op(f"or i64 {self.field(S.IRQDIRTY)}, {dirty}"))
        rdx = self.op("zext i32 %rd to i64")
        e(f"store i64 {old}, ptr {self.op(f'getelementptr i64, ptr %s, i64 {rdx}')}")
        e("store i64 0, ptr %s")
        now = self.op(f"and i64 {self.op(f'or i64 {mip2}, {hw}')}, {mie2}")
        e(f"br i1 {writes}, label %icsrw, label %next")
        self.label("icsrw")
        # Hart.interrupt_to_take: M-level ones unless in M-mode with MIE clear, S-level
        # ones below S-mode or in S-mode with SIE set
        priv, ms = self.field(S.PRIV), self.field(S.MSTATUS)
        below_m = self.op(f"icmp ult i64 {priv}, {C.PRV_M}")
        mien = self.op(f"icmp ne i64 {self.op(f'and i64 {ms}, {C.MSTATUS_MIE}')}, 0")
        m_en = self.op(f"or i1 {below_m}, {mien}")
        sien = self.op(f"icmp ne i64 {self.op(f'and i64 {ms}, {C.MSTATUS_SIE}')}, 0")
        in_s = self.op(f"icmp eq i64 {priv}, {C.PRV_S}")
        below_s = self.op(f"icmp ult i64 {priv}, {C.PRV_S}")
        s_en = self.op(f"or i1 {below_s}, {self.op(f'and i1 {in_s}, {sien}')}")
        m_pend, s_bits = self.split_pending(now, deleg)
        s_pend = self.op(f"icmp ne i64 {s_bits}, 0")
        take = self.op(f"or i1 {self.op(f'and i1 {m_en}, {m_pend}')}, "
                       f"{self.op(f'and i1 {s_en}, {s_pend}')}")
        e(f"br i1 {take}, label %irqexit, label %icsrq")
        self.label("icsrq")
        # none to take now: traps and returns that could let one in stay in Python
        # while one is pending, and so does setting SIE (irqsie)
        waiting = self.op(f"zext i1 {self.op(f'icmp ne i64 {now}, 0')} to i64")
        self.set_field(S.IRQPEND, waiting)
        self.set_field(S.IRQSIE, waiting)
        e("br label %next")

    def split_pending(self, pend: str, deleg: str) -> tuple[str, str]:
        """Pending and enabled interrupts ``pend`` by level (priv spec 3.1.9, as
        Hart.interrupt_to_take): whether any is M-level (not delegated, i1), and the
        S-level ones (delegated by mideleg ``deleg``, i64)."""
        notdeleg = self.op(f"xor i64 {deleg}, -1")
        m_pend = self.op(f"icmp ne i64 {self.op(f'and i64 {pend}, {notdeleg}')}, 0")
        return m_pend, self.op(f"and i64 {pend}, {deleg}")

    def mret_interrupt(self, ms: str, mpp: str) -> None:
        """An MRET (to S- or U-mode) with an interrupt pending (``irqpend``), at label
        ``mretirq``: as Python would (the MRET retires, then run_slice takes the
        interrupt, Hart.interrupt_to_take and take_trap), one delegated to S-mode that
        the MRET lets in (SEI, SSI or STI; S-mode with SIE set, or U-mode), into a
        direct-mode stvec, is taken here: an IPI that OpenSBI hands to the kernel (it
        sets SSIP, then returns) goes on into the kernel's handler without a trip to
        Python. One not taken after the MRET either (masked) lets it go on natively;
        anything else (an M-level interrupt, a vectored stvec) goes to Python."""
        e = self.emit
        self.label("mretirq")
        mip, hw, mie = self.field(S.MIP), self.field(S.MIPHW), self.field(S.MIE)
        pend = self.op(f"and i64 {self.op(f'or i64 {mip}, {hw}')}, {mie}")
        m_pend, sbits = self.split_pending(pend, self.field(S.MIDELEG))
        tou = self.op(f"icmp eq i64 {mpp}, 0")
        sie = self.op(f"icmp ne i64 {self.op(f'and i64 {ms}, {C.MSTATUS_SIE}')}, 0")
        s_take = self.op(f"and i1 {self.op(f'or i1 {tou}, {sie}')}, "
                         f"{self.op(f'icmp ne i64 {sbits}, 0')}")
        e(f"br i1 {m_pend}, label %slow, label %mretirq1")
        self.label("mretirq1")
        e(f"br i1 {s_take}, label %mretirq2, label %mret1")
        self.label("mretirq2")

        def has(bit: int) -> str:
            return self.op(f"icmp ne i64 {self.op(f'and i64 {sbits}, {1 << bit}')}, 0")
        sei, ssi, sti = has(9), has(1), has(5)
        code = self.op(f"select i1 {sei}, i64 9, i64 "
                       f"{self.op(f'select i1 {ssi}, i64 1, i64 5')}")
        known = self.op(f"or i1 {sei}, {self.op(f'or i1 {ssi}, {sti}')}")
        stvec = self.field(S.STVEC)
        direct = self.op(f"icmp eq i64 {self.op(f'and i64 {stvec}, 3')}, 0")
        e(f"br i1 {self.op(f'and i1 {known}, {direct}')}, label %mretirq3, label %slow")
        self.label("mretirq3")
        new = self.trap_pop(ms, C.MSTATUS_MIE, C.MSTATUS_MPIE, C.MSTATUS_MPP)
        self.set_field(S.NMRETS, self.op(f"add i64 {self.field(S.NMRETS)}, 1"))
        epc = self.field(S.CSRS + 8 * 2)  # mepc: where the MRET went
        cause = self.op(f"or i64 {code}, {_s64(1 << 63)}")
        self.trap_record(C.PRV_S, epc, cause, "0")
        pushed = self.trap_push(new, C.MSTATUS_SIE, C.MSTATUS_SPIE, C.MSTATUS_SPP, 0)
        spp = self.op(f"select i1 {tou}, i64 0, i64 {C.MSTATUS_SPP}")
        new = self.op(f"or i64 {pushed}, {spp}")
        self.set_field(S.MSTATUS, new)
        self.switch_context(C.PRV_S, new)
        self.set_field(S.INTERP, self.field(S.SINTERP))
        self.set_field(S.ICHK, "1")
        e(f"store i64 {self.op(f'and i64 {stvec}, -4')}, ptr %pcv")
        self.set_field(S.NIRQS, self.op(f"add i64 {self.field(S.NIRQS)}, 1"))
        e("br label %retire")

    def trap_ready(self) -> tuple[str, str, str]:
        """(native traps allowed now, mstatus, privilege), loaded where it is emitted."""
        ok = self.op(f"icmp ne i64 {self.field(S.CTXOK)}, 0")
        quiet = self.op(f"icmp eq i64 {self.field(S.IRQPEND)}, 0")
        return (self.op(f"and i1 {ok}, {quiet}"), self.field(S.MSTATUS),
                self.field(S.PRIV))

    def trap_from_u(self, ms: str, cause: str, tval: str, epc: str, counter: int) -> None:
        """Take an exception from U-mode into S-mode (Hart.take_trap, delegated): sepc,
        scause, stval; SPIE = SIE, SIE = 0, SPP = U; the S-mode context; pc = stvec's
        base. Nothing retires; the stretch ends."""
        self.trap_record(C.PRV_S, epc, cause, tval)
        new = self.trap_push(ms, C.MSTATUS_SIE, C.MSTATUS_SPIE, C.MSTATUS_SPP, 0)
        self.switch_context(C.PRV_S, new)
        vec = self.op(f"and i64 {self.field(S.STVEC)}, -4")
        self.emit(f"store i64 {vec}, ptr %pcv")
        self.set_field(counter, self.op(f"add i64 {self.field(counter)}, 1"))
        self.emit("br label %leave")

    def trap_record(self, priv: int, epc: str, cause: str, tval: str) -> None:
        """The trap's epc, cause and tval in the CSRs of ``priv`` (M or S), and as the
        last trap taken natively (Python's last_trap)."""
        first = 0 if priv == C.PRV_M else 1  # csrs[]: (M, S) pairs of epc, cause, tval
        for k, v in enumerate((epc, cause, tval)):
            self.set_field(S.CSRS + 8 * (2 + 2 * k + first), v)
        self.set_field(S.CSRDIRTY, "1")
        self.set_field(S.TPC, epc)
        self.set_field(S.TCAUSE, cause)
        self.set_field(S.TTVAL, tval)

    def trap_push(self, ms: str, ie: int, pie: int, pp: int, pp_value: int) -> str:
        """mstatus on a trap's entry: xPIE = xIE, xIE = 0, xPP = ``pp_value``; stored
        and returned."""
        was = self.op(f"and i64 {ms}, {ie}")
        moved = self.op(f"shl i64 {was}, 4")  # xIE (bit 1 or 3) -> xPIE (bit 5 or 7)
        keep = self.op(f"and i64 {ms}, {_s64(~(pie | ie | pp))}")
        new = self.op(f"or i64 {keep}, {moved}")
        if pp_value:
            new = self.op(f"or i64 {new}, {pp_value}")
        self.set_field(S.MSTATUS, new)
        return new

    def trap_pop(self, ms: str, ie: int, pie: int, pp: int) -> str:
        """mstatus on a trap return below M-mode: xIE = xPIE, xPIE = 1, xPP = U, MPRV
        cleared; stored and returned."""
        was = self.op(f"and i64 {ms}, {pie}")
        moved = self.op(f"lshr i64 {was}, 4")
        keep = self.op(f"and i64 {ms}, {_s64(~(ie | pp | C.MSTATUS_MPRV))}")
        new = self.op(f"or i64 {keep}, {pie}")
        new = self.op(f"or i64 {new}, {moved}")
        self.set_field(S.MSTATUS, new)
        return new

    def trap_from_s_to_m(self, ms: str) -> None:
        """ECALL from S-mode into M-mode (Hart.take_trap, not delegated): mepc, mcause,
        mtval; MPIE = MIE, MIE = 0, MPP = S; M-mode's context (its table and heat, the
        bare interpreter, no I-TLB checks); pc = mtvec's base. Nothing retires."""
        self.trap_record(C.PRV_M, "%pc", "9", "0")  # environment call from S-mode
        self.trap_push(ms, C.MSTATUS_MIE, C.MSTATUS_MPIE, C.MSTATUS_MPP,
                       C.PRV_S << C.MSTATUS_MPP_SHIFT)
        for k, off in enumerate((S.TABLE, S.HEAT, S.INTERP, S.TIMEOK)):
            self.set_field(off, self.field(S.MCTX + 8 * k))
        self.set_field(S.ICHK, "0")
        # (dpriv stays: with tlbp0 it names the soft TLB set left in place, Python's key)
        for off in (S.PRIV, S.IPRIV):
            self.set_field(off, str(C.PRV_M))
        vec = self.op(f"and i64 {self.field(S.MTVEC)}, -4")
        self.emit(f"store i64 {vec}, ptr %pcv")
        self.set_field(S.NMTRAPS, self.op(f"add i64 {self.field(S.NMTRAPS)}, 1"))
        self.emit("br label %leave")

    def page_fault(self, go: str, otherwise: str, kind: str,
                   where: Callable[[], tuple[str, str]]) -> None:
        """At label ``go``: a page fault from U-mode (kind 0 fetch, 1 load, 2 store; at
        ``where()``: (address, pc)) taken natively if the walk proves one and S-mode
        takes it (medeleg); else on to ``otherwise``."""
        e = self.emit
        self.label(go)
        va, pc = where()
        ok0, ms, priv = self.trap_ready()
        fromu = self.op(f"icmp eq i64 {priv}, {C.PRV_U}")
        ok = self.op(f"and i1 {ok0}, {fromu}")
        walk, trap = self.fresh("pfw"), self.fresh("pft")
        e(f"br i1 {ok}, label %{walk}, label %{otherwise}")
        self.label(walk)
        cause = self.op(f"call i64 @pyhv_ufault(ptr %s, i64 {va}, i64 {kind})")
        isf = self.op(f"icmp sge i64 {cause}, 0")
        sh = self.op(f"and i64 {cause}, 63")
        deleg = self.op(f"lshr i64 {self.field(S.MEDELEG)}, {sh}")
        deleg = self.op(f"and i64 {deleg}, 1")
        deleg = self.op(f"icmp ne i64 {deleg}, 0")
        ok = self.op(f"and i1 {isf}, {deleg}")
        e(f"br i1 {ok}, label %{trap}, label %{otherwise}")
        self.label(trap)
        self.trap_from_u(ms, cause, va, pc, S.NFAULTS)

    def switch_context(self, priv: int, ms: str) -> None:
        """Point native code at the prepared context of ``priv`` (mstatus ``ms``)."""
        base = S.CTXS + S.CTX_BYTES * priv
        self.set_field(S.TABLE, self.field(base))
        self.set_field(S.HEAT, self.field(base + 8))
        tlbs = self.field(base + 16)
        self.set_field(S.TIMEOK, self.field(base + 24))
        tlbs1 = self.op(f"add i64 {tlbs}, {S.TLB_BYTES}")
        self.set_field(S.TLBP0, tlbs)
        self.set_field(S.TLBP1, tlbs1)
        if priv == C.PRV_S:  # the kernel's TLB with sstatus.SUM set, as in Python
            sum_ = self.op(f"and i64 {ms}, {C.MSTATUS_SUM}")
            on = self.op(f"icmp ne i64 {sum_}, 0")
            tlbs = self.op(f"select i1 {on}, i64 {tlbs1}, i64 {tlbs}")
        self.set_field(S.TLBP, tlbs)
        for off in (S.PRIV, S.IPRIV, S.DPRIV):
            self.set_field(off, str(priv))
        itlb = self.op(f"getelementptr i8, ptr %s, i64 {S.ITLB}")
        self.emit(f"call void @llvm.memset.p0.i64(ptr {itlb}, i8 -1, i64 {S.NITLB * 16}, "
                  "i1 false)")

    def sfence(self) -> None:
        """SFENCE.VMA in S-mode (TVM clear): the soft TLB and the I-TLB are emptied
        here (as a page fence does when superpages are mapped, which Linux's are), and
        the fence is noted (sfpend, sfvpn) for Python, which flushes its own TLB and
        checks pages of decoded code again before it next runs anything."""
        e = self.emit
        self.label("sfence")
        f0 = self.op("icmp eq i32 %f3, 0")
        r0 = self.op("icmp eq i32 %rd, 0")
        ok = self.op(f"and i1 {f0}, {r0}")
        iss = self.op(f"icmp eq i64 {self.field(S.PRIV)}, {C.PRV_S}")
        ok = self.op(f"and i1 {ok}, {iss}")
        tvm = self.op(f"and i64 {self.field(S.MSTATUS)}, {C.MSTATUS_TVM}")
        free = self.op(f"icmp eq i64 {tvm}, 0")
        ok = self.op(f"and i1 {ok}, {free}")
        e(f"br i1 {ok}, label %sfence1, label %slow")
        self.label("sfence1")
        # the other privilege's prepared TLB set may hold what this fence removes too:
        # emptied as well (Python outdates the parked sets after the run: _native_fences)
        ready = self.op(f"icmp ne i64 {self.field(S.CTXOK)}, 0")
        e(f"br i1 {ready}, label %sfencectx, label %sfence1b")
        self.label("sfencectx")
        for priv in (C.PRV_U, C.PRV_S):
            other = self.op(f"inttoptr i64 {self.field(S.CTXS + S.CTX_BYTES * priv + 16)} "
                            "to ptr")
            e(f"call void @llvm.memset.p0.i64(ptr {other}, i8 -1, i64 {2 * S.TLB_BYTES}, "
              "i1 false)")
        # other address spaces' sets are stale now (a satp write to one empties them
        # first); this one's were just emptied: stamped with the new count
        gen = self.op(f"add i64 {self.field(S.TLBGEN)}, 1")
        self.set_field(S.TLBGEN, gen)
        cur = self.field(S.SATP)
        for i in range(S.NSPACES):
            base = S.SPACES + S.SPACE_BYTES * i
            mine = self.op(f"icmp eq i64 {self.field(base)}, {cur}")
            self.set_field(base + 24, self.op(f"select i1 {mine}, i64 {gen}, "
                                               f"i64 {self.field(base + 24)}"))
        e("br label %sfence1b")
        self.label("sfence1b")
        tlbs = self.field(S.TLBP0, "ptr")  # both TLBs of the set, one after the other
        nz = self.op(f"icmp ne ptr {tlbs}, null")
        # (in S-mode it is usually the S context's set, just emptied: 48 KiB less)
        cur = self.field(S.TLBP0)
        sctx, uctx = (self.field(S.CTXS + S.CTX_BYTES * p + 16) for p in (C.PRV_S, C.PRV_U))
        dup = self.op(f"or i1 {self.op(f'icmp eq i64 {cur}, {sctx}')}, "
                      f"{self.op(f'icmp eq i64 {cur}, {uctx}')}")
        dup = self.op(f"and i1 {dup}, {self.op(f'icmp ne i64 {self.field(S.CTXOK)}, 0')}")
        go = self.op(f"and i1 {nz}, {self.op(f'xor i1 {dup}, true')}")
        e(f"br i1 {go}, label %sfence2, label %sfence3")
        self.label("sfence2")
        e(f"call void @llvm.memset.p0.i64(ptr {tlbs}, i8 -1, i64 {2 * S.TLB_BYTES}, i1 false)")
        e("br label %sfence3")
        self.label("sfence3")
        itlb = self.op(f"getelementptr i8, ptr %s, i64 {S.ITLB}")
        e(f"call void @llvm.memset.p0.i64(ptr {itlb}, i8 -1, i64 {S.NITLB * 16}, i1 false)")
        pend = self.field(S.SFPEND)
        page = self.op("icmp ne i32 %rs1, 0")
        e(f"br i1 {page}, label %sfpage, label %sfall")
        self.label("sfall")
        r2z = self.op("icmp eq i32 %rs2, 0")
        bits = self.op(f"select i1 {r2z}, i64 {S.SF_ALL | S.SF_SUP}, i64 {S.SF_ALL}")
        self.set_field(S.SFPEND, self.op(f"or i64 {pend}, {bits}"))
        e("br label %next")
        self.label("sfpage")
        n = self.field(S.SFN)
        room = self.op(f"icmp ult i64 {n}, {S.NSFVPN}")
        e(f"br i1 {room}, label %sfpage1, label %sfover")
        self.label("sfover")  # too many pages to list: fence everything
        self.set_field(S.SFPEND, self.op(f"or i64 {pend}, {S.SF_ALL | S.SF_SUP}"))
        e("br label %next")
        self.label("sfpage1")
        vpn = self.op("lshr i64 %a, 12")
        slot = self.op(f"getelementptr i8, ptr %s, i64 {S.SFVPN}")
        e(f"store i64 {vpn}, ptr {self.op(f'getelementptr i64, ptr {slot}, i64 {n}')}")
        self.set_field(S.SFN, self.op(f"add i64 {n}, 1"))
        self.set_field(S.SFPEND, self.op(f"or i64 {pend}, {S.SF_PAGES}"))
        e("br label %next")

    def sstatus_value(self, ms: str, mask: int = C.SSTATUS_MASK) -> str:
        """sstatus (or, with ``mask`` -1, mstatus) as the interpreter reads it: FS dirty
        folded in, SD from FS."""
        fsd = self.op(f"icmp ne i64 {self.field(S.FSDIRTY)}, 0")
        withfs = self.op(f"or i64 {ms}, {C.MSTATUS_FS}")
        m2 = self.op(f"select i1 {fsd}, i64 {withfs}, i64 {ms}")
        m3 = self.op(f"or i64 {m2}, {_s64(C.MSTATUS_UXL | C.MSTATUS_SXL)}")
        fs = self.op(f"and i64 {m3}, {C.MSTATUS_FS}")
        full = self.op(f"icmp eq i64 {fs}, {C.MSTATUS_FS}")
        sd = self.op(f"select i1 {full}, i64 {_s64(C.MSTATUS_SD)}, i64 0")
        m4 = self.op(f"and i64 {m3}, {_s64(~C.MSTATUS_SD)}")
        m5 = self.op(f"or i64 {m4}, {sd}")
        return m5 if mask == -1 else self.op(f"and i64 {m5}, {_s64(mask)}")

    def csr_operand(self) -> tuple[str, str, str, str, str]:
        """(kind, kind is valid, csrrw(i), writes at all, operand) of a CSR instruction:
        csrrw/s/c and their immediate forms (f3 & 3 = 1, 2, 3; f3 & 4: uimm in rs1);
        csrrs/csrrc with x0 or uimm 0 only read."""
        kind = self.op("and i32 %f3, 3")
        okind = self.op(f"icmp ne i32 {kind}, 0")
        writes0 = self.op(f"icmp eq i32 {kind}, 1")
        nz = self.op("icmp ne i32 %rs1, 0")
        writes = self.op(f"or i1 {writes0}, {nz}")
        imm = self.op(f"icmp ne i32 {self.op('and i32 %f3, 4')}, 0")
        uimm = self.op("zext i32 %rs1 to i64")
        operand = self.op(f"select i1 {imm}, i64 {uimm}, i64 %a")
        return kind, okind, writes0, writes, operand

    def csr_new_value(self, kind: str, writes0: str, old: str, operand: str) -> str:
        """What a CSR instruction of ``kind`` writes over ``old``: the operand
        (csrrw), old | operand (csrrs) or old & ~operand (csrrc)."""
        ored = self.op(f"or i64 {old}, {operand}")
        anded = self.op(f"and i64 {old}, {self.op(f'xor i64 {operand}, -1')}")
        isrs = self.op(f"icmp eq i32 {kind}, 2")
        new = self.op(f"select i1 {isrs}, i64 {ored}, i64 {anded}")
        return self.op(f"select i1 {writes0}, i64 {operand}, i64 {new}")

    def trap_vectors(self, csr: str) -> None:
        """stvec and mtvec (Hart.csr_write: a reserved mode, 2 or 3, keeps the old
        value): xv6 writes stvec at every trap entry and return, OpenSBI mtvec around
        its probes. Read and written in the run's copies (stvec, mtvec), which native
        traps take; Python takes both back after a write (tvdirty)."""
        e = self.emit
        self.label("tvec")
        kind, okind, writes0, writes, operand = self.csr_operand()
        lvl = self.op(f"lshr i32 {csr}, 8")
        lvl = self.op(f"zext i32 {self.op(f'and i32 {lvl}, 3')} to i64")
        allowed = self.op(f"icmp ule i64 {lvl}, {self.field(S.PRIV)}")
        e(f"br i1 {self.op(f'and i1 {allowed}, {okind}')}, label %tvec1, label %slow")
        self.label("tvec1")
        ism = self.op(f"icmp eq i32 {csr}, {C.MTVEC}")
        off = self.op(f"select i1 {ism}, i64 {S.MTVEC}, i64 {S.STVEC}")
        p = self.op(f"getelementptr i8, ptr %s, i64 {off}")
        old = self.op(f"load i64, ptr {p}")
        new = self.csr_new_value(kind, writes0, old, operand)
        legal = self.op(f"icmp ult i64 {self.op(f'and i64 {new}, 3')}, 2")
        e(f"br i1 {self.op(f'and i1 {writes}, {legal}')}, label %tvecw, label %tvecr")
        self.label("tvecw")
        e(f"store i64 {new}, ptr {p}")
        self.set_field(S.TVDIRTY, "1")
        e("br label %tvecr")
        self.label("tvecr")
        self.result(old)

    def counters(self, csr: str) -> None:
        """Reads of cycle, instret, mcycle and minstret (Hart.csr_read: cycle counts as
        instret does; the user-level ones as mcounteren and scounteren allow): the
        instructions retired before this one. Writes are Python's."""
        e = self.emit
        self.label("cntr")
        _kind, okind, _w0, writes, _operand = self.csr_operand()
        priv = self.field(S.PRIV)
        lvl = self.op(f"lshr i32 {csr}, 8")
        lvl = self.op(f"zext i32 {self.op(f'and i32 {lvl}, 3')} to i64")
        low5 = self.op(f"and i32 {csr}, 31")
        bit = self.op(f"shl i64 1, {self.op(f'zext i32 {low5} to i64')}")
        ism = self.op(f"icmp eq i64 {priv}, {C.PRV_M}")
        mok = self.op(f"icmp ne i64 {self.op(f'and i64 {self.field(S.MCNTEN)}, {bit}')}, 0")
        sok = self.op(f"icmp ne i64 {self.op(f'and i64 {self.field(S.SCNTEN)}, {bit}')}, 0")
        iss = self.op(f"icmp eq i64 {priv}, {C.PRV_S}")
        lower = self.op(f"and i1 {mok}, {self.op(f'or i1 {iss}, {sok}')}")
        allowed = self.op(f"and i1 {self.op(f'icmp ule i64 {lvl}, {priv}')}, "
                          f"{self.op(f'or i1 {ism}, {lower}')}")
        reads = self.op(f"and i1 {okind}, {self.op(f'xor i1 {writes}, true')}")
        e(f"br i1 {self.op(f'and i1 {allowed}, {reads}')}, label %cntr1, label %slow")
        self.label("cntr1")
        self.result(self.op(f"sub i64 {self.field(S.INSTRETB)}, %bud"))

    def fp_csrs(self, csr: str) -> None:
        """fflags, frm and fcsr, read and written (Linux saves and restores fcsr at each
        switch between processes that used the FPU), while FP is on (else Python
        raises the illegal instruction). The flags the instruction reads are the hart's
        at entry (FFLAGSIN) with those native code raised since: explicitly (FFLAGS) and
        in the host's MXCSR (read here, as the dispatcher does at its exit). A write
        replaces all three: FFLAGSIN takes the new flags, FFLAGS and MXCSR's are
        cleared, FRM takes the rounding mode (and FPMODE's RNE bit follows it: blocks
        check it at their first FP instruction), FCSRW tells Python, FS is made dirty."""
        e = self.emit
        self.label("fcsr")
        self.fp_on("fcsr1")
        self.label("fcsr1")
        kind, okind, writes0, writes, operand = self.csr_operand()
        e(f"br i1 {okind}, label %fcsr2, label %slow")
        self.label("fcsr2")
        e("call void @llvm.x86.sse.stmxcsr(ptr %mxsave) #1")
        mx = self.op(f"zext i32 {self.op('load i32, ptr %mxsave')} to i64")
        flags = self.op(f"or i64 {self.field(S.FFLAGSIN)}, {self.field(S.FFLAGS)}")
        flags = self.op(f"or i64 {flags}, {mxcsr_flags(self.op, mx)}")
        frm = self.field(S.FRM)
        fcsr = self.op(f"or i64 {self.op(f'shl i64 {frm}, 5')}, {flags}")
        isfl = self.op(f"icmp eq i32 {csr}, {C.FFLAGS}")
        isrm = self.op(f"icmp eq i32 {csr}, {C.FRM}")
        old = self.op(f"select i1 {isrm}, i64 {frm}, i64 {fcsr}")
        old = self.op(f"select i1 {isfl}, i64 {flags}, i64 {old}")
        e(f"br i1 {writes}, label %fcsrw, label %fcsrr")
        self.label("fcsrw")
        new = self.csr_new_value(kind, writes0, old, operand)
        nfl = self.op(f"select i1 {isrm}, i64 {flags}, i64 {self.op(f'and i64 {new}, 31')}")
        nrm_f = self.op(f"and i64 {self.op(f'lshr i64 {new}, 5')}, 7")
        nrm = self.op(f"select i1 {isrm}, i64 {self.op(f'and i64 {new}, 7')}, i64 {nrm_f}")
        nrm = self.op(f"select i1 {isfl}, i64 {frm}, i64 {nrm}")
        self.set_field(S.FFLAGSIN, nfl)
        self.set_field(S.FFLAGS, "0")
        e("store i32 8064, ptr %mxsave")  # 0x1F80: as the dispatcher sets it, flags clear
        e("call void @llvm.x86.sse.ldmxcsr(ptr %mxsave) #1")
        self.set_field(S.FRM, nrm)
        self.set_field(S.FCSRW, "1")
        self.set_field(S.FSDIRTY, "1")
        mode = self.op(f"and i64 {self.field(S.FPMODE)}, {_s64(~S.FP_RNE)}")
        rne = self.op(f"select i1 {self.op(f'icmp eq i64 {nrm}, 0')}, i64 {S.FP_RNE}, i64 0")
        self.set_field(S.FPMODE, self.op(f"or i64 {mode}, {rne}"))
        e("br label %fcsrr")
        self.label("fcsrr")
        self.result(old)

    def satp(self, csr: str) -> None:
        """satp: read in S-mode (TVM clear) and M-mode; written in S-mode to an Sv39 or
        Sv48 address space whose TLB sets Python keeps (``spaces``, under ctxok), as a
        kernel with a page table of its own switches at every trap entry and return
        (xv6's trampoline: a system call wrote satp twice, each a trip to Python). The
        write points the soft TLB and both prepared contexts at that space's sets
        (emptied first if a fence came since they were stamped), empties the I-TLB,
        and ends the stretch: what follows is fetched through the new page table. Any
        other write (a space Python has no sets for, Bare, another mode) is Python's."""
        e = self.emit
        self.label("satp")
        kind, okind, writes0, writes, operand = self.csr_operand()
        priv = self.field(S.PRIV)
        tvm = self.op(f"and i64 {self.field(S.MSTATUS)}, {C.MSTATUS_TVM}")
        iss = self.op(f"icmp eq i64 {priv}, {C.PRV_S}")
        sok = self.op(f"and i1 {iss}, {self.op(f'icmp eq i64 {tvm}, 0')}")
        ism = self.op(f"icmp eq i64 {priv}, {C.PRV_M}")
        ok = self.op(f"and i1 {self.op(f'or i1 {sok}, {ism}')}, {okind}")
        e(f"br i1 {ok}, label %satp1, label %slow")
        self.label("satp1")
        old = self.field(S.SATP)
        e(f"br i1 {writes}, label %satpw, label %satpr")
        self.label("satpr")
        self.result(old)
        self.label("satpw")
        new = self.csr_new_value(kind, writes0, old, operand)
        mode = self.op(f"lshr i64 {new}, 60")
        sv = self.op(f"or i1 {self.op(f'icmp eq i64 {mode}, 8')}, "
                     f"{self.op(f'icmp eq i64 {mode}, 9')}")
        ready = self.op(f"icmp ne i64 {self.field(S.CTXOK)}, 0")
        e(f"br i1 {self.all_of(sok, sv, ready)}, label %satpl0, label %slow")
        arms = []
        for i in range(S.NSPACES):
            self.label(f"satpl{i}")
            off = S.SPACES + S.SPACE_BYTES * i
            hit = self.op(f"icmp eq i64 {self.field(off)}, {new}")
            nxt = f"satpl{i + 1}" if i + 1 < S.NSPACES else "slow"
            e(f"br i1 {hit}, label %satph{i}, label %{nxt}")
            self.label(f"satph{i}")
            e("br label %satphit")
            arms.append(f"[ {off}, %satph{i} ]")
        self.label("satphit")
        picked = self.op("phi i64 " + ", ".join(arms))
        ent = self.op(f"getelementptr i8, ptr %s, i64 {picked}")
        uset = self.op(f"load i64, ptr {self.op(f'getelementptr i8, ptr {ent}, i64 8')}")
        sset = self.op(f"load i64, ptr {self.op(f'getelementptr i8, ptr {ent}, i64 16')}")
        stamp = self.op(f"getelementptr i8, ptr {ent}, i64 24")
        gen = self.field(S.TLBGEN)
        stale = self.op(f"icmp ne i64 {self.op(f'load i64, ptr {stamp}')}, {gen}")
        e(f"br i1 {stale}, label %satpfl, label %satpgo")
        self.label("satpfl")
        for tlbs in (uset, sset):
            e(f"call void @llvm.memset.p0.i64(ptr {self.op(f'inttoptr i64 {tlbs} to ptr')}, "
              f"i8 -1, i64 {2 * S.TLB_BYTES}, i1 false)")
        e(f"store i64 {gen}, ptr {stamp}")
        e("br label %satpgo")
        self.label("satpgo")
        self.set_field(S.CTXS + S.CTX_BYTES * C.PRV_U + 16, uset)
        self.set_field(S.CTXS + S.CTX_BYTES * C.PRV_S + 16, sset)
        sset1 = self.op(f"add i64 {sset}, {S.TLB_BYTES}")
        self.set_field(S.TLBP0, sset)
        self.set_field(S.TLBP1, sset1)
        sum_ = self.op(f"and i64 {self.field(S.MSTATUS)}, {C.MSTATUS_SUM}")
        on = self.op(f"icmp ne i64 {sum_}, 0")
        self.set_field(S.TLBP, self.op(f"select i1 {on}, i64 {sset1}, i64 {sset}"))
        self.set_field(S.SATP, new)
        self.set_field(S.NSATP, self.op(f"add i64 {self.field(S.NSATP)}, 1"))
        itlb = self.op(f"getelementptr i8, ptr %s, i64 {S.ITLB}")
        e(f"call void @llvm.memset.p0.i64(ptr {itlb}, i8 -1, i64 {S.NITLB * 16}, i1 false)")
        rdx = self.op("zext i32 %rd to i64")
        e(f"store i64 {old}, ptr {self.op(f'getelementptr i64, ptr %s, i64 {rdx}')}")
        e("store i64 0, ptr %s")
        e("store i64 %npc, ptr %pcv")
        e("br label %retire")

    def plain_csrs(self, csr: str, labels: dict[int, str]) -> None:
        """CSRs that only hold a value (the trap handlers' scratch, epc, cause and tval
        of M and S mode), mhartid, misa and mstatus reads, and M-mode mstatus writes of
        the trap stack's bits: done natively, with the privilege check of the CSR's
        number; the rest of the group (writes to read-only CSRs, a too-low privilege,
        other mstatus changes) leaves for Python, which raises or does it."""
        e = self.emit
        kind, okind, writes0, writes, operand = self.csr_operand()
        lvl = self.op(f"lshr i32 {csr}, 8")
        lvl = self.op(f"and i32 {lvl}, 3")
        lvl64 = self.op(f"zext i32 {lvl} to i64")
        priv = self.field(S.PRIV)
        allowed = self.op(f"icmp ule i64 {lvl64}, {priv}")
        allowed = self.op(f"and i1 {allowed}, {okind}")
        ro = self.op(f"xor i1 {writes}, true")
        ok = self.op(f"and i1 {allowed}, {ro}")
        self.switch(csr, "i32", labels, "slow")
        # mhartid and mstatus: reads only (csrrs/csrrc with x0 / uimm 0)
        self.label("hartid")
        e(f"br i1 {ok}, label %hartid1, label %slow")
        self.label("hartid1")
        self.result(self.field(S.MHARTID))
        # misa: read-only here (writes are ignored, as Hart.csr_write does)
        self.label("misa")
        e(f"br i1 {allowed}, label %misa1, label %slow")
        self.label("misa1")
        self.result(str(_s64(C.MISA_RV64GC)))
        # mstatus: reads; and writes in M-mode that change only the trap stack's bits
        # (SIE, SPIE, SPP, MPIE: a firmware's trap exit restoring what its entry saved)
        self.label("mstat")
        e(f"br i1 {ok}, label %mstat1, label %mstatw")
        self.label("mstat1")
        self.result(self.sstatus_value(self.field(S.MSTATUS), mask=-1))
        self.label("mstatw")
        ism = self.op(f"icmp eq i64 {priv}, {C.PRV_M}")
        okw = self.op(f"and i1 {ism}, {okind}")
        e(f"br i1 {okw}, label %mstatw1, label %slow")
        self.label("mstatw1")
        ms = self.field(S.MSTATUS)
        old = self.sstatus_value(ms, mask=-1)  # what the instruction reads
        wm = C.MSTATUS_WRITABLE
        inv = self.op(f"xor i64 {operand}, -1")
        setb = self.op(f"or i64 {old}, {operand}")
        clrb = self.op(f"and i64 {old}, {inv}")
        iss = self.op(f"icmp eq i32 {kind}, 2")
        sc = self.op(f"select i1 {iss}, i64 {setb}, i64 {clrb}")
        put = self.op(f"select i1 {writes0}, i64 {operand}, i64 {sc}")
        keep = self.op(f"and i64 {ms}, {_s64(~wm)}")
        wv = self.op(f"and i64 {put}, {wm}")
        new = self.op(f"or i64 {keep}, {wv}")
        new = self.op(f"and i64 {new}, {_s64(~C.MSTATUS_SD)}")
        diff = self.op(f"xor i64 {new}, {ms}")
        stack = C.MSTATUS_SIE | C.MSTATUS_SPIE | C.MSTATUS_SPP | C.MSTATUS_MPIE
        other = self.op(f"and i64 {diff}, {_s64(~stack)}")
        only = self.op(f"icmp eq i64 {other}, 0")
        e(f"br i1 {only}, label %mstatw2, label %slow")
        self.label("mstatw2")
        self.set_field(S.MSTATUS, new)
        self.result(old)
        # the plain ones: csrs[2 * (csr & 3) + (S ? 1 : 0)]
        self.label("pcsr")
        e(f"br i1 {allowed}, label %pcsr1, label %slow")
        self.label("pcsr1")
        which = self.op(f"and i32 {csr}, 3")
        sup = self.op(f"icmp eq i32 {lvl}, 1")
        sbit = self.op(f"zext i1 {sup} to i32")
        idx = self.op(f"shl i32 {which}, 1")
        idx = self.op(f"or i32 {idx}, {sbit}")
        idx64 = self.op(f"zext i32 {idx} to i64")
        off = self.op(f"shl i64 {idx64}, 3")
        off = self.op(f"add i64 {off}, {S.CSRS}")
        p = self.op(f"getelementptr i8, ptr %s, i64 {off}")
        old = self.op(f"load i64, ptr {p}")
        new = self.csr_new_value(kind, writes0, old, operand)
        isepc = self.op(f"icmp eq i32 {which}, 1")
        even = self.op(f"and i64 {new}, -2")
        new = self.op(f"select i1 {isepc}, i64 {even}, i64 {new}")  # IALIGN 16: bit 0 is 0
        e(f"br i1 {writes}, label %pcsrw, label %pcsrr")
        self.label("pcsrw")
        e(f"store i64 {new}, ptr {p}")
        self.set_field(S.CSRDIRTY, "1")
        e("br label %pcsrr")
        self.label("pcsrr")
        self.result(old)

    def fetch_page(self, va: str, fail: str) -> str:
        """Host address of the page instructions at ``va`` come from (I-TLB, else the
        native fetch walk); branches to ``fail`` if Python must fetch."""
        e = self.emit
        itlb, ihit, iwalk, ifill, itr, phys, ok = (self.fresh(n) for n in (
            "itlb", "ihit", "iwalk", "ifill", "itr", "phys", "pok"))
        start = self.fresh("fp")
        e(f"br label %{start}")
        self.label(start)
        vpage = self.op(f"and i64 {va}, -4096")
        ichk = self.op(f"icmp ne i64 {self.field(S.ICHK)}, 0")
        e(f"br i1 {ichk}, label %{itlb}, label %{phys}")
        self.label(itlb)
        vpn = self.op(f"lshr i64 {va}, 12")
        ii = self.op(f"and i64 {vpn}, {S.NITLB - 1}")
        io = self.op(f"shl i64 {ii}, 4")
        io = self.op(f"add i64 {io}, {S.ITLB}")
        ient = self.op(f"getelementptr i8, ptr %s, i64 {io}")
        itag = self.op(f"load i64, ptr {ient}")
        iep = self.op(f"getelementptr i8, ptr {ient}, i64 8")
        hit = self.op(f"icmp eq i64 {itag}, {vpn}")
        e(f"br i1 {hit}, label %{ihit}, label %{iwalk}")
        self.label(ihit)
        ippn = self.op(f"load i64, ptr {iep}")
        e(f"br label %{itr}")
        self.label(iwalk)
        np = self.op(f"call i64 @pyhv_fetch_page(ptr %s, i64 {va})")
        bad = self.op(f"icmp eq i64 {np}, -1")
        e(f"br i1 {bad}, label %{fail}, label %{ifill}")
        self.label(ifill)
        e(f"store i64 {vpn}, ptr {ient}")
        e(f"store i64 {np}, ptr {iep}")
        e(f"br label %{itr}")
        self.label(itr)
        ppn = self.op(f"phi i64 [ {ippn}, %{ihit} ], [ {np}, %{ifill} ]")
        tpage = self.op(f"shl i64 {ppn}, 12")
        e(f"br label %{phys}")
        self.label(phys)
        ppage = self.op(f"phi i64 [ {tpage}, %{itr} ], [ {vpage}, %{start} ]")
        poff = self.op(f"sub i64 {ppage}, {RAM_BASE}")
        inram = self.op(f"icmp ult i64 {poff}, %ramsize")
        e(f"br i1 {inram}, label %{ok}, label %{fail}")
        self.label(ok)
        hostp = self.op("ptrtoint ptr %ramhost to i64")
        return self.op(f"add i64 {hostp}, {poff}")

    # -- the decoded cache's instructions ---------------------------------------------------
    def predecode(self, w: str) -> tuple[str, str]:
        """(FAST_OPS number or 0, immediate as i32) of the 32-bit instruction ``w``:
        what the decoded cache keeps, so that a cached instruction runs without being
        expanded, decoded or switched on twice. 0: any other instruction, which the
        decoder's groups run. Each immediate is computed in its own arm only (a miss
        costs the decoder's work and this)."""
        e = self.emit
        k = self.fresh("pd")
        F = FAST_OPS
        opc = self.op(f"and i32 {w}, 127")
        f3 = self.op(f"lshr i32 {w}, 12")
        f3 = self.op(f"and i32 {f3}, 7")
        arms: list[tuple[str, str, str]] = []  # (label, op, imm)

        def pick(x: str, cases: dict[int, int]) -> str:
            """FAST_OPS number for the value x (i32) by ``cases``, else 0."""
            r = "0"
            for val, num in cases.items():
                c = self.op(f"icmp eq i32 {x}, {val}")
                r = self.op(f"select i1 {c}, i32 {num}, i32 {r}")
            return r

        def key() -> str:  # funct7 << 3 | funct3
            f7 = self.op(f"lshr i32 {w}, 25")
            return self.op(f"or i32 {self.op(f'shl i32 {f7}, 3')}, {f3}")

        def imm_i() -> str:
            return self.op(f"ashr i32 {w}, 20")

        def shamt(mask: int) -> str:
            return self.op(f"and i32 {self.op(f'lshr i32 {w}, 20')}, {mask}")

        def arm(name: str, make: Callable[[], tuple[str, str]]) -> None:
            lab = f"{k}{name}"
            self.label(lab)
            op, imm = make()
            arms.append((lab, op, imm))
            e(f"br label %{k}j")

        def imm_s() -> str:  # imm[11:5] = w[31:25], imm[4:0] = w[11:7]
            hi7 = self.op(f"shl i32 {self.op(f'ashr i32 {w}, 25')}, 5")
            lo5 = self.op(f"and i32 {self.op(f'lshr i32 {w}, 7')}, 31")
            return self.op(f"or i32 {hi7}, {lo5}")

        def imm_b() -> str:  # imm[12|10:5|4:1|11] = w[31|30:25|11:8|7]
            b12 = self.op(f"and i32 {self.op(f'ashr i32 {w}, 19')}, -4096")
            b105 = self.op(f"and i32 {self.op(f'lshr i32 {w}, 20')}, 2016")
            b41 = self.op(f"and i32 {self.op(f'lshr i32 {w}, 7')}, 30")
            b11 = self.op(f"and i32 {self.op(f'shl i32 {w}, 4')}, 2048")
            t = self.op(f"or i32 {b12}, {b105}")
            return self.op(f"or i32 {self.op(f'or i32 {t}, {b41}')}, {b11}")

        def imm_j() -> str:  # imm[20|10:1|11|19:12] = w[31|30:21|20|19:12]
            j20 = self.op(f"and i32 {self.op(f'ashr i32 {w}, 11')}, -1048576")
            j1912 = self.op(f"and i32 {w}, 1044480")
            j11 = self.op(f"and i32 {self.op(f'lshr i32 {w}, 9')}, 2048")
            j101 = self.op(f"and i32 {self.op(f'lshr i32 {w}, 20')}, 2046")
            t = self.op(f"or i32 {j20}, {j1912}")
            return self.op(f"or i32 {self.op(f'or i32 {t}, {j11}')}, {j101}")

        def is_shift(shifts: dict[int, int]) -> str:
            c = "false"
            for f in {k & 7 for k in shifts}:  # their funct3 values
                c = self.op(f"or i1 {c}, {self.op(f'icmp eq i32 {f3}, {f}')}")
            return c

        def op_imm() -> tuple[str, str]:
            plain = pick(f3, _fast(spec.OP_IMM, ("I",)))
            f6 = self.op(f"lshr i32 {w}, 26")
            shifts = _fast(spec.OP_IMM, ("SH6",))
            shift = pick(self.op(f"or i32 {self.op(f'shl i32 {f6}, 3')}, {f3}"), shifts)
            isshift = is_shift(shifts)
            return (self.op(f"select i1 {isshift}, i32 {shift}, i32 {plain}"),
                    self.op(f"select i1 {isshift}, i32 {shamt(63)}, i32 {imm_i()}"))

        def op_imm32() -> tuple[str, str]:
            # addiw (an I-immediate: any funct7); slliw, srliw, sraiw
            shifts = _fast(spec.OP_IMM_32, ("SH5",))
            shift = pick(key(), shifts)
            plain = pick(f3, _fast(spec.OP_IMM_32, ("I",)))
            isshift = is_shift(shifts)
            return (self.op(f"select i1 {isshift}, i32 {shift}, i32 {plain}"),
                    self.op(f"select i1 {isshift}, i32 {shamt(31)}, i32 {imm_i()}"))

        def stores() -> tuple[str, str]:
            small = self.op(f"icmp ult i32 {f3}, {len(spec.STORES)}")
            num = self.op(f"add i32 {f3}, {F['sb']}")
            return self.op(f"select i1 {small}, i32 {num}, i32 0"), imm_s()

        self.switch(opc, "i32", {spec.LUI: f"{k}lui", spec.AUIPC: f"{k}auipc",
                                 spec.JAL: f"{k}jal", spec.JALR: f"{k}jalr",
                                 spec.BRANCH: f"{k}br", spec.LOAD: f"{k}ld",
                                 spec.STORE: f"{k}st", spec.OP_IMM: f"{k}oi",
                                 spec.OP: f"{k}or", spec.OP_IMM_32: f"{k}ow",
                                 spec.OP_32: f"{k}ox"}, f"{k}none")
        arm("none", lambda: ("0", "0"))
        arm("lui", lambda: (str(F["lui"]), self.op(f"and i32 {w}, -4096")))
        arm("auipc", lambda: (str(F["auipc"]), self.op(f"and i32 {w}, -4096")))
        arm("jal", lambda: (str(F["jal"]), imm_j()))
        arm("jalr", lambda: (pick(f3, {spec.INSNS["jalr"].funct3: F["jalr"]}), imm_i()))
        # branches and loads: number = first + funct3 (the holes are no fast op)
        arm("br", lambda: (self.op(f"add i32 {f3}, {F['beq']}"), imm_b()))
        arm("ld", lambda: (self.op(f"add i32 {f3}, {F['lb']}"), imm_i()))
        arm("st", stores)
        arm("oi", op_imm)
        def op_reg() -> tuple[str, str]:
            # (Linux's cpu_relax(), a DIV by x0, stays with the decoder's groups: where
            # harts take turns it hands the slice over, "opreg")
            num = pick(key(), _fast(spec.OP, ("R",)))
            relax = self.op(f"icmp eq i32 {self.op(f'and i32 {w}, {_s32(RELAX_MASK)}')}, "
                            f"{RELAX_DIV}")
            return self.op(f"select i1 {relax}, i32 0, i32 {num}"), "0"

        arm("or", op_reg)
        arm("ow", op_imm32)
        arm("ox", lambda: (pick(key(), _fast(spec.OP_32, ("R",))), "0"))
        self.label(f"{k}j")
        op = self.op("phi i32 " + ", ".join(f"[ {o}, %{lab} ]" for lab, o, _ in arms))
        imm = self.op("phi i32 " + ", ".join(f"[ {i}, %{lab} ]" for lab, _, i in arms))
        return op, imm

    def xptr(self, r: str) -> str:
        """Pointer to the x register numbered by the i32 ``r`` (%qrd, %qrs1, %qrs2)."""
        x = self.op(f"zext i32 {r} to i64")
        return self.op(f"getelementptr i64, ptr %s, i64 {x}")

    def fast_ops(self, only: str | None = None) -> None:
        """The instructions the decoded cache runs directly (FAST_OPS): the integer,
        load, store and control-transfer instructions of most code, each the same as
        its case in the decoder's groups below."""
        e = self.emit

        def reg(r: str) -> str:
            return self.op(f"load i64, ptr {self.xptr(r)}")

        def res(v: str, kind: str) -> None:
            e(f"store i64 {v}, ptr {self.xptr('%qrd')}")
            e("store i64 0, ptr %s")
            self._next(kind)

        def go(target: str) -> None:  # jal, jalr: rd = the next pc, end the stretch
            e(f"store i64 %npc, ptr {self.xptr('%qrd')}")
            e("store i64 0, ptr %s")
            e(f"store i64 {target}, ptr %pcv")
            e("br label %xfer")

        imm = "%qimm"
        for name in FAST_OPS:  # the integer ALU: its description in isa/spec.py
            if name in spec.ALU:
                self.label(f"q_{name}")
                ua, ub = spec.operands(name)
                a = reg("%qrs1") if ua else ""
                b = reg("%qrs2") if ub else ""
                res(spec.llvm(name, self.op, a, b, "%qimm"), name)
        self.label("q_lui")
        res(imm, "lui")
        self.label("q_auipc")
        res(self.op(f"add i64 %pc, {imm}"), "auipc")
        self.label("q_jal")
        go(self.op(f"add i64 %pc, {imm}"))
        self.label("q_jalr")
        t = self.op(f"add i64 {reg('%qrs1')}, {imm}")
        go(self.op(f"and i64 {t}, -2"))
        for name in spec.BRANCHES:
            self.label(f"q_{name}")
            c = spec.llvm(name, self.op, reg("%qrs1"), reg("%qrs2"))
            tgt = self.op(f"add i64 %pc, {imm}")
            e(f"store i64 {self.op(f'select i1 {c}, i64 {tgt}, i64 %npc')}, ptr %pcv")
            e("br label %xfer")
        for name, i in spec.LOADS.items():  # access size and extension: isa/spec.py
            bits = 8 * i.size
            ext = "sext" if i.signed else "zext" if bits < 64 else None
            self.label(f"q_{name}")
            addr = self.op(f"add i64 {reg('%qrs1')}, {imm}")
            ptr = self.access(addr, bits // 8, store=False, value="0")
            v = self.op(f"load i{bits}, ptr {ptr}, align 1")
            res(self.op(f"{ext} i{bits} {v} to i64") if ext else v, name)
        for name, i in spec.STORES.items():
            bits = 8 * i.size
            self.label(f"q_{name}")
            addr = self.op(f"add i64 {reg('%qrs1')}, {imm}")
            b = reg("%qrs2")
            ptr = self.access(addr, bits // 8, store=True, value=b)
            v = b if bits == 64 else self.op(f"trunc i64 {b} to i{bits}")
            e(f"store i{bits} {v}, ptr {ptr}, align 1")
            n = self.field(S.STORES)
            self.set_field(S.STORES, self.op(f"add i64 {n}, 1"))
            self._next(name)
        self.lines += self._tail_lines
        self._tail_lines = []

    def _next(self, kind: str) -> None:
        """After a fast op: on to the next instruction, through the dispatch of ops of
        its ``kind`` (threaded: each op its own; ops of a kind sharing one, such as
        every load, made code calling 30 functions in turn 1.17x slower), else through
        the loop."""
        if not self.threaded:
            self.emit("br label %next")
            return
        label = f"tn_{kind}"
        self.emit(f"br label %{label}")
        if kind not in self._tails:
            self._tails[kind] = label
            here = len(self.lines)
            self.label(label)
            self._dispatch_next()
            self._tail_lines += self.lines[here:]
            del self.lines[here:]

    def _dispatch_next(self) -> None:
        """Retire this fast op and dispatch the next instruction from here: a copy of
        the loop's common path (budget, same page, decoded-cache hit) ending in a switch
        of its own, so that each fast op's indirect jump learns which ops follow it (one
        shared switch mispredicted most of the time on code that is not a small loop:
        30 functions called in turn ran at 108 guest MIPS, 2 at 180). Anything else goes
        round the loop, which does it all. The current instruction's values live in
        allocas (``_THREADED``, _thread_values) that each dispatch fills."""
        e = self.emit
        npc = self.op("load i64, ptr %A.npc")
        e(f"store i64 {npc}, ptr %pcv")
        bud = self.op(f"sub i64 {self.op('load i64, ptr %A.bud')}, 1")
        e(f"store i64 {bud}, ptr %budv")
        page, fetch, d16, d32, d32b, hit = (self.fresh(x) for x in (
            "tp", "tf", "t16", "t32", "t32b", "th"))
        e(f"br i1 {self.op(f'icmp sle i64 {bud}, 0')}, label %loop, label %{page}")
        self.label(page)
        pg = self.op(f"and i64 {npc}, -4096")
        same = self.op(f"icmp eq i64 {pg}, {self.op('load i64, ptr %vpagev')}")
        e(f"br i1 {same}, label %{fetch}, label %loop")
        self.label(fetch)
        ha = self.op(f"add i64 {npc}, {self.op('load i64, ptr %deltav')}")
        hptr = self.op(f"inttoptr i64 {ha} to ptr")
        lo = self.op(f"zext i16 {self.op(f'load i16, ptr {hptr}, align 1')} to i32")
        dci = self.op(f"and i64 {self.op(f'lshr i64 {npc}, 1')}, {S.NDCACHE - 1}")
        dco = self.op(f"mul i64 {dci}, {S.DC_BYTES}")
        dce = self.op(f"getelementptr i8, ptr %dcache, i64 {dco}")
        raw = self.op(f"load i32, ptr {dce}")
        is32 = self.op(f"icmp eq i32 {self.op(f'and i32 {lo}, 3')}, 3")
        e(f"br i1 {is32}, label %{d32}, label %{d16}")
        self.label(d16)
        e(f"br i1 {self.op(f'icmp eq i32 {raw}, {lo}')}, label %{hit}, label %loop")
        self.label(d32)
        cross = self.op(f"icmp ugt i64 {self.op(f'and i64 {npc}, 4095')}, 4092")
        e(f"br i1 {cross}, label %loop, label %{d32b}")
        self.label(d32b)
        cur = self.op(f"load i32, ptr {hptr}, align 1")
        e(f"br i1 {self.op(f'icmp eq i32 {cur}, {raw}')}, label %{hit}, label %loop")
        self.label(hit)
        n = self.op(f"phi i64 [ 2, %{d16} ], [ 4, %{d32b} ]")
        w = self.op(f"load i32, ptr {self.op(f'getelementptr i8, ptr {dce}, i64 4')}")
        f = self.op(f"load i32, ptr {self.op(f'getelementptr i8, ptr {dce}, i64 8')}")
        imm = self.op(f"load i32, ptr {self.op(f'getelementptr i8, ptr {dce}, i64 12')}")
        qop = self._thread_values(npc, bud, w, n, f, imm)
        self.switch(qop, "i32", {i: f"q_{name}" for name, i in FAST_OPS.items()}, "legacy")

    def _thread_values(self, pc: str, bud: str, w: str, n: str, f: str, imm: str) -> str:
        """Store the instruction's values (its pc, the budget, its word, length, decoded
        fields and immediate) where the ops read them (``%A.*``); returns its op."""
        vals = {"pc": pc, "bud": bud, "w": w, "len": n, "qf": f,
                "qimm": self.op(f"sext i32 {imm} to i64"), "npc": self.op(f"add i64 {pc}, {n}"),
                "qop": self.op(f"and i32 {f}, 255"),
                "qrd": self.op(f"and i32 {self.op(f'lshr i32 {f}, 8')}, 31"),
                "qrs1": self.op(f"and i32 {self.op(f'lshr i32 {f}, 16')}, 31"),
                "qrs2": self.op(f"lshr i32 {f}, 24")}
        for name, ty in _THREADED.items():
            self.emit(f"store {ty} {vals[name]}, ptr %A.{name}")
        return vals["qop"]

    def heat(self, pc: str, heat: str, hot: str, go: str) -> None:
        """Count a run of the stretch starting at ``pc`` in the heat table ``heat``; on
        to ``hot`` if it should leave for Python (``EXIT_HOT``: it just got hot, or it
        is past the threshold and due to ask again, or it is a first run of a start the
        code cache may hold), else to ``go``."""
        e = self.emit
        first, known, asked = self.fresh("hfirst"), self.fresh("hknown"), self.fresh("hasked")
        hi = self.op(f"lshr i64 {pc}, 1")
        hi = self.op(f"and i64 {hi}, {NHEAT - 1}")
        hp = self.op(f"getelementptr i32, ptr {heat}, i64 {hi}")
        h = self.op(f"load i32, ptr {hp}")
        h1 = self.op(f"add i32 {h}, 1")
        e(f"store i32 {h1}, ptr {hp}")
        thr = self.op(f"trunc i64 {self.field(S.THRESH)} to i32")
        is_hot = self.op(f"icmp eq i32 {h1}, {thr}")
        # past the threshold, ask again every REHEAT runs: a block dropped since (its
        # page written, say) is linked again or recompiled
        low = self.op(f"and i32 {h1}, {REHEAT - 1}")
        again = self.op(f"icmp eq i32 {low}, 0")
        # (signed: a count with WAITING set, a start in the compiler's queue, never asks)
        past = self.op(f"icmp sgt i32 {h1}, {thr}")
        again = self.op(f"and i1 {again}, {past}")
        is_hot = self.op(f"or i1 {is_hot}, {again}")
        e(f"br i1 {is_hot}, label %{hot}, label %{first}")
        self.label(first)
        once = self.op(f"icmp eq i32 {h1}, 1")
        e(f"br i1 {once}, label %{known}, label %{go}")
        self.label(known)
        ki = self.op(f"lshr i64 {pc}, 1")
        ki = self.op(f"and i64 {ki}, {NKNOWN - 1}")
        kb = self.op(f"lshr i64 {ki}, 3")
        kp = self.op(f"getelementptr i8, ptr {self.field(S.KNOWN, 'ptr')}, i64 {kb}")
        byte = self.op(f"load i8, ptr {kp}")
        bit8 = self.op(f"trunc i64 {self.op(f'and i64 {ki}, 7')} to i8")
        one = self.op(f"and i8 {self.op(f'lshr i8 {byte}, {bit8}')}, 1")
        isk = self.op(f"icmp ne i8 {one}, 0")
        e(f"br i1 {isk}, label %{asked}, label %{go}")
        # ... once: a start whose lookup found nothing (another program's block at the
        # same address, a colliding bit) is not asked about again at each cooling
        self.label(asked)
        abase = self.op(f"getelementptr i8, ptr {heat}, i64 {NHEAT * 4}")
        ap = self.op(f"getelementptr i8, ptr {abase}, i64 {self.op(f'lshr i64 {hi}, 3')}")
        av = self.op(f"load i8, ptr {ap}")
        abit8 = self.op(f"trunc i64 {self.op(f'and i64 {hi}, 7')} to i8")
        am = self.op(f"shl i8 1, {abit8}")
        was = self.op(f"and i8 {av}, {am}")
        e(f"store i8 {self.op(f'or i8 {av}, {am}')}, ptr {ap}")
        seen = self.op(f"icmp ne i8 {was}, 0")
        e(f"br i1 {seen}, label %{go}, label %{hot}")

    def heat_length(self) -> None:
        """The stretch that started at ``%startv`` ends here: it counted one run at its
        start (``heat``), and now a run more for every 2**LONG_RUN_SHIFT instructions it
        ran: one that ran long (a straight line of code, such as an unrolled hash round
        of hundreds of instructions) gets hot after about as many instructions as a
        short stretch does (the threshold counts runs). It stops one short of
        the threshold: the next run's count reaches it and asks Python (``heat``); a
        start already past the threshold counts runs alone."""
        e = self.emit
        add, done = self.fresh("hladd"), self.fresh("hldone")
        n = self.op(f"sub i64 {self.op('load i64, ptr %sbudv')}, {self.op('load i64, ptr %budv')}")
        k = self.op(f"lshr i64 {n}, {LONG_RUN_SHIFT}")
        e(f"br i1 {self.op(f'icmp ne i64 {k}, 0')}, label %{add}, label %{done}")
        self.label(add)
        pc = self.op("load i64, ptr %startv")
        hi = self.op(f"and i64 {self.op(f'lshr i64 {pc}, 1')}, {NHEAT - 1}")
        hp = self.op(f"getelementptr i32, ptr {self.field(S.HEAT, 'ptr')}, i64 {hi}")
        h = self.op(f"load i32, ptr {hp}")
        lim = self.op(f"sub i32 {self.op(f'trunc i64 {self.field(S.THRESH)} to i32')}, 1")
        room = self.op(f"zext i32 {self.op(f'sub i32 {lim}, {h}')} to i64")
        below = self.op(f"icmp ult i32 {h}, {lim}")  # (else room wrapped: > k)
        k = self.op(f"select i1 {self.op(f'icmp ult i64 {k}, {room}')}, i64 {k}, i64 {room}")
        h2 = self.op(f"add i32 {h}, {self.op(f'trunc i64 {k} to i32')}")
        e(f"store i32 {self.op(f'select i1 {below}, i32 {h2}, i32 {h}')}, ptr {hp}")
        e(f"br label %{done}")
        self.label(done)

    def table_ways(self, tab: str, slot: str) -> tuple[str, str]:
        """The two entries of dispatch table ``tab`` for slot ``slot`` (state.py: a pc's
        block is in slot ``(pc >> 1) & (NDISPATCH - 1)`` or the other of its pair)."""
        o = self.op(f"shl i64 {slot}, 5")
        return (self.op(f"getelementptr i8, ptr {tab}, i64 {o}"),
                self.op(f"getelementptr i8, ptr {tab}, i64 {self.op(f'xor i64 {o}, 32')}"))

    def transfer(self) -> None:
        """A control transfer (branch, jal, jalr) retires at label ``xfer``, its target
        in ``%pcv``. If the dispatch table has no block there, the target starts the
        next stretch right here (its heat counted as at the function's entry; a page
        of its own fetched through the I-TLB): a round trip through the dispatcher,
        the call, the stretch's set-up and the return cost about as much as the
        few instructions a stretch of kernel code runs. Otherwise, or when the budget
        is used up or that page needs Python, the dispatcher takes over."""
        e = self.emit
        self.label("xfer")
        b1 = self.op("sub i64 %bud, 1")
        e(f"store i64 {b1}, ptr %budv")
        over = self.op(f"icmp sle i64 {b1}, 0")
        e(f"br i1 {over}, label %leave, label %xlook")
        self.label("xlook")
        t = self.op("load i64, ptr %pcv")
        tab = self.field(S.TABLE, "ptr")
        slot = self.op(f"and i64 {self.op(f'lshr i64 {t}, 1')}, {S.NDISPATCH - 1}")
        # the pair's occupancy bit first (2 KiB, in the host's cache): most targets
        # of lukewarm code have no block, and their entries would miss
        pair = self.op(f"lshr i64 {slot}, 1")
        bits = self.op(f"getelementptr i8, ptr {tab}, i64 {S.OCCUPIED}")
        wp = self.op(f"getelementptr i64, ptr {bits}, i64 {self.op(f'lshr i64 {pair}, 6')}")
        word = self.op(f"load i64, ptr {wp}")
        sh = self.op(f"and i64 {pair}, 63")
        bit = self.op(f"and i64 {self.op(f'lshr i64 {word}, {sh}')}, 1")
        e(f"br i1 {self.op(f'icmp ne i64 {bit}, 0')}, label %xtags, label %xpage")
        self.label("xtags")
        e0, e1 = self.table_ways(tab, slot)
        tag0, tag1 = self.op(f"load i64, ptr {e0}"), self.op(f"load i64, ptr {e1}")
        want = self.op(f"or i64 {t}, 1")  # state.table_tag
        hit = self.op(f"or i1 {self.op(f'icmp eq i64 {tag0}, {want}')}, "
                      f"{self.op(f'icmp eq i64 {tag1}, {want}')}")
        e(f"br i1 {hit}, label %leave, label %xpage")
        self.label("xpage")
        vpage = self.op(f"and i64 {t}, -4096")
        same = self.op(f"icmp eq i64 {vpage}, {self.op('load i64, ptr %vpagev')}")
        e(f"br i1 {same}, label %xkick, label %xfetch")
        self.label("xfetch")
        hpage = self.fetch_page(t, "leave")
        e(f"store i64 {vpage}, ptr %vpagev")
        e(f"store i64 {self.op(f'sub i64 {hpage}, {vpage}')}, ptr %deltav")
        e("br label %xkick")
        # The compiler's thread finished a batch (state.KICKP): leave before the next
        # stretch, so that Python loads it now, not when the run's budget runs out
        # (several ms of interpreting a loop whose block is ready; starts waiting in
        # the queue no longer leave to ask again, engine.py).
        self.label("xkick")
        kick = self.op(f"load atomic i32, ptr {self.field(S.KICKP, 'ptr')} monotonic, align 4")
        e(f"br i1 {self.op(f'icmp ne i32 {kick}, 0')}, label %xkicked, label %xheat")
        self.label("xkicked")
        self._writeback(S.EXIT_BUDGET)
        self.label("xheat")
        self.heat_length()
        e(f"store i64 {t}, ptr %startv")
        e(f"store i64 {self.op('load i64, ptr %budv')}, ptr %sbudv")
        self.heat(t, self.field(S.HEAT, "ptr"), "xhot", "loop")
        self.label("xhot")
        self._writeback(S.EXIT_HOT)

    # -- the function ----------------------------------------------------------------------
    def build(self, name: str) -> str:  # noqa: PLR0915 - one function, in order
        e = self.emit
        self.mmio = True
        self.label("entry")
        e("%acc = alloca i64")
        e("%pfok = alloca i1")
        e("store i1 false, ptr %pfok")
        e("%pcv = alloca i64")
        e("%budv = alloca i64")
        e("%startv = alloca i64")  # the pc the current stretch started at
        e("%sbudv = alloca i64")  # the budget when it started (its length: heat_length)
        e("%vpagev = alloca i64")  # its page, and host address - guest address there
        e("%deltav = alloca i64")
        e("%mxsave = alloca i32")  # MXCSR around a device callback (_device)
        pc0 = self.field(S.PC)
        e(f"store i64 {pc0}, ptr %pcv")
        e(f"store i64 {self.field(S.BUDGET)}, ptr %budv")
        e(f"%ramhost = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.RAM_HOST}')}")
        e(f"%ramsize = load i64, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.RAM_SIZE}')}")
        e(f"%codemap = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.CODEMAP}')}")
        e(f"store i64 {pc0}, ptr %startv")
        e(f"store i64 {self.field(S.BUDGET)}, ptr %sbudv")
        heat = self.field(S.HEAT, "ptr")
        self.heat(pc0, heat, "hot", "fetchpage")
        self.label("hot")
        e(f"ret i32 {S.EXIT_HOT}")
        # the page of the stretch: host address = pc + delta
        self.label("fetchpage")
        vpage = self.op(f"and i64 {pc0}, -4096")
        hpage = self.fetch_page(pc0, "fetchfault" if self.translated else "slow")
        e(f"store i64 {vpage}, ptr %vpagev")
        e(f"store i64 {self.op(f'sub i64 {hpage}, {vpage}')}, ptr %deltav")
        e(f"%rvc = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.RVC}')}")
        e(f"%dcache = load ptr, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.DCACHE}')}")
        e(f"%yield = load i64, ptr {self.op(f'getelementptr i8, ptr %s, i64 {S.YIELD}')}")
        e("br label %loop")

        # one instruction
        self.label("loop")
        e("%pc = load i64, ptr %pcv")
        e("%bud = load i64, ptr %budv")
        over = self.op("icmp sle i64 %bud, 0")
        e(f"br i1 {over}, label %leave, label %l1")
        self.label("l1")
        pg = self.op("and i64 %pc, -4096")
        same = self.op(f"icmp eq i64 {pg}, {self.op('load i64, ptr %vpagev')}")
        e(f"br i1 {same}, label %fetch, label %leave")
        self.label("fetch")
        e("%pgo = and i64 %pc, 4095")
        ha = self.op(f"add i64 %pc, {self.op('load i64, ptr %deltav')}")
        e(f"%hptr = inttoptr i64 {ha} to ptr")
        lo = self.op("load i16, ptr %hptr, align 1")
        e(f"%lo32 = zext i16 {lo} to i32")
        # The decoded cache: the entry of this pc's slot holds the decoded form of the
        # instruction bits it names, which depends on nothing else: if they are the bits
        # here now, it is this instruction's (whatever pc or address space it was
        # decoded at; all zeros, an empty entry, names an illegal instruction).
        dci = self.op("lshr i64 %pc, 1")
        dci = self.op(f"and i64 {dci}, {S.NDCACHE - 1}")
        dco = self.op(f"mul i64 {dci}, {S.DC_BYTES}")
        e(f"%dce = getelementptr i8, ptr %dcache, i64 {dco}")
        e("%dcraw = load i32, ptr %dce")
        l3 = self.op("and i32 %lo32, 3")
        is32 = self.op(f"icmp eq i32 {l3}, 3")
        e(f"br i1 {is32}, label %dc32, label %dc16")
        self.label("dc16")
        same = self.op("icmp eq i32 %dcraw, %lo32")
        e(f"br i1 {same}, label %dchit, label %decode")
        self.label("dc32")
        cross = self.op("icmp ugt i64 %pgo, 4092")
        e(f"br i1 {cross}, label %decode, label %dc32b")
        self.label("dc32b")
        cur = self.op("load i32, ptr %hptr, align 1")
        same = self.op(f"icmp eq i32 {cur}, %dcraw")
        e(f"br i1 {same}, label %dchit, label %decode")
        self.label("dchit")
        hlen = self.op("phi i64 [ 2, %dc16 ], [ 4, %dc32b ]")
        hw = self.op(f"load i32, ptr {self.op('getelementptr i8, ptr %dce, i64 4')}")
        hf = self.op(f"load i32, ptr {self.op('getelementptr i8, ptr %dce, i64 8')}")
        himm = self.op(f"load i32, ptr {self.op('getelementptr i8, ptr %dce, i64 12')}")
        e("br label %exec")

        # not cached: fetch and expand, decode, and remember it
        self.label("decode")
        l3 = self.op("and i32 %lo32, 3")
        is32 = self.op(f"icmp eq i32 {l3}, 3")
        e(f"br i1 {is32}, label %f32, label %f16")
        self.label("f32")
        cross = self.op("icmp ugt i64 %pgo, 4092")
        e(f"br i1 {cross}, label %f32x, label %f32b")
        self.label("f32b")
        e("%w32 = load i32, ptr %hptr, align 1")
        e("br label %dec")
        # an instruction straddling two pages: its upper half from the next one
        self.label("f32x")
        pc2 = self.op("add i64 %pc, 2")
        h2 = self.fetch_page(pc2, "slow")
        hi = self.op(f"load i16, ptr {self.op(f'inttoptr i64 {h2} to ptr')}, align 1")
        hi = self.op(f"zext i16 {hi} to i32")
        hi = self.op(f"shl i32 {hi}, 16")
        e(f"%wx = or i32 %lo32, {hi}")
        e("br label %f32y")
        self.label("f32y")
        e("br label %dec")
        self.label("f16")
        lo64 = self.op("zext i32 %lo32 to i64")
        rp = self.op(f"getelementptr i32, ptr %rvc, i64 {lo64}")
        e(f"%w16 = load i32, ptr {rp}")
        ill = self.op("icmp eq i32 %w16, 0")
        e(f"br i1 {ill}, label %slow, label %dec")
        self.label("dec")
        e("%wd = phi i32 [ %w32, %f32b ], [ %w16, %f16 ], [ %wx, %f32y ]")
        e("%lend = phi i64 [ 4, %f32b ], [ 2, %f16 ], [ 4, %f32y ]")
        e("%rawd = phi i32 [ %w32, %f32b ], [ %lo32, %f16 ], [ %wx, %f32y ]")
        e("%keep = phi i1 [ true, %f32b ], [ true, %f16 ], [ false, %f32y ]")
        dop, dimm = self.predecode("%wd")
        e("br label %decoded")
        self.label("decoded")
        # fields: op (bits 0-7), rd (8-15), rs1 (16-23), rs2 (24-31)
        rd = self.op("lshr i32 %wd, 7")
        rd = self.op(f"and i32 {rd}, 31")
        r1 = self.op("lshr i32 %wd, 15")
        r1 = self.op(f"and i32 {r1}, 31")
        r2 = self.op("lshr i32 %wd, 20")
        r2 = self.op(f"and i32 {r2}, 31")
        f = self.op(f"shl i32 {rd}, 8")
        f = self.op(f"or i32 {f}, {dop}")
        t = self.op(f"shl i32 {r1}, 16")
        f = self.op(f"or i32 {f}, {t}")
        t = self.op(f"shl i32 {r2}, 24")
        dfields = self.op(f"or i32 {f}, {t}")
        e("br i1 %keep, label %remember, label %exec")
        self.label("remember")
        e("store i32 %rawd, ptr %dce")
        e(f"store i32 %wd, ptr {self.op('getelementptr i8, ptr %dce, i64 4')}")
        e(f"store i32 {dfields}, ptr {self.op('getelementptr i8, ptr %dce, i64 8')}")
        e(f"store i32 {dimm}, ptr {self.op('getelementptr i8, ptr %dce, i64 12')}")
        e("br label %exec")

        self.label("exec")
        w = self.op(f"phi i32 [ {hw}, %dchit ], [ %wd, %remember ], [ %wd, %decoded ]")
        n = self.op(f"phi i64 [ {hlen}, %dchit ], [ %lend, %remember ], [ %lend, %decoded ]")
        f = self.op(f"phi i32 [ {hf}, %dchit ], [ {dfields}, %remember ], [ {dfields}, %decoded ]")
        qi = self.op(f"phi i32 [ {himm}, %dchit ], [ {dimm}, %remember ], [ {dimm}, %decoded ]")
        qop = self._thread_values("%pc", "%bud", w, n, f, qi)
        self.switch(qop, "i32", {i: f"q_{n}" for n, i in FAST_OPS.items()}, "legacy")
        ops_at = len(self.lines)
        self.threaded = True
        self.fast_ops()
        self.threaded = False
        self.label("legacy")
        e("%opc = and i32 %w, 127")
        # (every valid LUI, AUIPC, JAL, JALR, branch, load and store instruction is a
        # fast op: their opcodes come here only as reserved encodings, which Python
        # turns into an illegal-instruction trap; OP-IMM and OP-IMM-32 also have the
        # bit-manipulation instructions, which are no fast ops)
        self.switch("%opc", "i32", {
            0x33: "opreg", 0x3B: "opreg32", 0x13: "opimm", 0x1B: "opimm32",
            0x0F: "miscmem", 0x2F: "amo", 0x73: "system",
            spec.LOAD_FP: "fload", spec.STORE_FP: "fstore", spec.OP_FP: "opfp",
            **{op: "opfma" for op in (spec.FMADD, spec.FMSUB, spec.FNMSUB, spec.FNMADD)}},
            "slow")
        groups = len(self.lines)

        self.label("fload")
        self.fp_loads()
        self.label("fstore")
        self.fp_stores()
        self.label("opfp")
        self.fp_ops()
        self.label("opfma")
        self.fp_fma()

        self.label("opreg")
        # Linux's cpu_relax() (isa.decoder.spin_hint: DIV by x0) where harts take turns:
        # to Python, whose DIV hands the rest of the slice over
        relax = self.op(f"and i32 %w, {_s32(RELAX_MASK)}")
        relax = self.op(f"icmp eq i32 {relax}, {RELAX_DIV}")
        both = self.op(f"and i1 {relax}, {self.op('icmp ne i64 %yield, 0')}")
        e(f"br i1 {both}, label %slow, label %opreg1")
        self.label("opreg1")
        self.spec_group(spec.OP)
        self.label("opreg32")
        self.spec_group(spec.OP_32)
        self.label("opimm")
        self.spec_group(spec.OP_IMM)
        self.label("opimm32")
        self.spec_group(spec.OP_IMM_32)
        self.label("amo")
        self.atomics()
        self.label("system")
        self.system()
        self.label("miscmem")
        self.switch("%f3", "i32", {0: "fence", 1: "next"}, "slow")  # fence.i: nothing
        self.label("fence")
        pause = self.op(f"icmp eq i32 %w, {PAUSE}")
        yld = self.op("icmp ne i64 %yield, 0")
        both = self.op(f"and i1 {pause}, {yld}")
        e(f"br i1 {both}, label %pause, label %next")
        self.label("pause")
        e("store i64 %npc, ptr %pcv")
        b1 = self.op("sub i64 %bud, 1")
        e(f"store i64 {b1}, ptr %budv")
        e("br label %yielded")

        self.lines[groups:] = _decode_lazily(self.lines[groups:])
        # retire, go on
        self.label("next")
        e("store i64 %npc, ptr %pcv")
        b1 = self.op("sub i64 %bud, 1")
        e(f"store i64 {b1}, ptr %budv")
        e("br label %loop")
        self.transfer()
        self.label("retire")  # a change of privilege: the dispatcher takes over
        b1 = self.op("sub i64 %bud, 1")
        e(f"store i64 {b1}, ptr %budv")
        e("br label %leave")

        self.label("leave")
        self._writeback(0)
        if self.translated:  # the stretch's first fetch failed: a page fault?
            self.page_fault("fetchfault", "slow", "0", lambda: (pc0, pc0))
        self.label("slow")
        # An instruction this interpreter does not do. Past the stretch's first
        # instruction, hand it back to the dispatcher, which runs a compiled block
        # starting here if there is one (FP code: blocks do it natively) or calls this
        # interpreter again, which then leaves for Python (and counts the pc's heat, so
        # such a block gets compiled).
        cur = self.op("load i64, ptr %pcv")
        first = self.op(f"icmp eq i64 {cur}, {self.op('load i64, ptr %startv')}")
        e("br i1 " + first + ", label %slowpy, label %leave")
        self.label("slowpy")
        e("store i64 0, ptr %acc")
        e("br label %slowmem")
        self.label("slowmem")
        acc = self.op("load i64, ptr %acc")
        self.set_field(S.EXIT_ACCESS, acc)
        if self.translated:  # a page fault from U-mode may be taken here
            mem = self.op(f"icmp ne i64 {acc}, 0")
            al = self.op("load i1, ptr %pfok")
            mem = self.op(f"and i1 {mem}, {al}")
            e(f"br i1 {mem}, label %pfmem, label %slowout")
            self.page_fault("pfmem", "slowout", acc, lambda: (
                self.field(S.EXIT_VADDR), self.op("load i64, ptr %pcv")))
            self.label("slowout")
        self._writeback(S.EXIT_SLOW)
        self.label("yielded")
        self._writeback(S.EXIT_YIELD)
        self.lines[ops_at:] = _load_threaded(self.lines[ops_at:])
        allocas = [f"  %A.{v} = alloca {ty}" for v, ty in _THREADED.items()]
        body = "\n".join(self.lines[:1] + allocas + self.lines[1:])
        return f"define i32 @{name}(ptr noalias %s) #0 {{\n{body}\n}}\n"

    def _writeback(self, code: int) -> None:
        self.heat_length()
        self.set_field(S.PC, self.op("load i64, ptr %pcv"))
        self.set_field(S.BUDGET, self.op("load i64, ptr %budv"))
        self.emit(f"ret i32 {code}")


# The instruction fields, each defined from the word %w (and the registers) by LLVM IR
# that may use fields defined before it.
_FIELDS: dict[str, tuple[str, ...]] = {
    "rd": ("{t} = lshr i32 %w, 7", "%rd = and i32 {t}, 31"),
    "f3": ("{t} = lshr i32 %w, 12", "%f3 = and i32 {t}, 7"),
    "rs1": ("{t} = lshr i32 %w, 15", "%rs1 = and i32 {t}, 31"),
    "rs2": ("{t} = lshr i32 %w, 20", "%rs2 = and i32 {t}, 31"),
    "f7": ("%f7 = lshr i32 %w, 25",),
    "f6": ("%f6 = lshr i32 %w, 26",),
    "f5": ("%f5 = lshr i32 %w, 27",),
    "key": ("{t} = shl i32 %f7, 3", "%key = or i32 {t}, %f3"),
    "a": ("{t} = zext i32 %rs1 to i64", "{u} = getelementptr i64, ptr %s, i64 {t}",
          "%a = load i64, ptr {u}"),
    "b": ("{t} = zext i32 %rs2 to i64", "{u} = getelementptr i64, ptr %s, i64 {t}",
          "%b = load i64, ptr {u}"),
    "a32": ("%a32 = trunc i64 %a to i32",),
    "immi": ("{t} = ashr i32 %w, 20", "%immi = sext i32 {t} to i64"),
    "sh5": ("{t} = lshr i32 %w, 20", "%sh5 = and i32 {t}, 31"),
    # bits 25:0 -> shamt in 25:20
    "shamt": ("{t} = and i32 %w, 67108863", "{u} = lshr i32 {t}, 20",
              "%shamt = zext i32 {u} to i64"),
    "sh6r": ("%sh6r = and i64 %b, 63",),
    # S-immediate: imm[11:5] = w[31:25], imm[4:0] = w[11:7]
    "imms": ("{t} = ashr i32 %w, 25", "{u} = shl i32 {t}, 5", "{t}x = or i32 {u}, %rd",
             "%imms = sext i32 {t}x to i64"),
}
_NEEDS = {"key": ("f7", "f3"), "a": ("rs1",), "b": ("rs2",), "a32": ("a",),
          "sh6r": ("b",), "imms": ("rd",)}


@lru_cache(maxsize=1)
def _field_re() -> re.Pattern[str]:
    """(Compiled on first use: only building the interpreter's IR needs it, once per
    pyhv version, not every run's import.)"""
    return re.compile(r"%(" + "|".join(sorted(_FIELDS, key=len, reverse=True)) + r")\b")


# The current instruction's values, which the ops and the decoder's groups read (each
# dispatch stores them: _Gen._thread_values) and their types.
_THREADED = {"pc": "i64", "bud": "i64", "w": "i32", "len": "i64", "qf": "i32",
             "qimm": "i64", "npc": "i64", "qop": "i32", "qrd": "i32", "qrs1": "i32",
             "qrs2": "i32"}


@lru_cache(maxsize=1)
def _threaded_re() -> re.Pattern[str]:
    return re.compile(r"%(" + "|".join(_THREADED) + r")(?![\w.])")


def _load_threaded(lines: list[str]) -> list[str]:
    """Each use of a current instruction's value (``%qrd``, ``%npc``, ...) after the
    dispatch becomes a load of its alloca just before it: the ops are reached from many
    dispatches (_Gen._dispatch_next), and LLVM's SROA turns the allocas back into
    values, with the phis at each op's entry that this would need by hand."""
    out: list[str] = []
    k = 0
    for line in lines:
        names = sorted(set(_threaded_re().findall(line)))
        if not names or line.endswith(":"):
            out.append(line)
            continue
        assert " phi " not in line, line
        for v in names:
            k += 1
            out.append(f"  %L{k}.{v} = load {_THREADED[v]}, ptr %A.{v}")
            line = re.sub(r"%" + v + r"(?![\w.])", f"%L{k}.{v}", line)
        out.append(line)
    return out


def _decode_lazily(lines: list[str]) -> list[str]:
    """Decode each instruction group's fields in that group only.

    Decoding every field of every instruction up front, before the opcode switch, kept
    some twenty values live across it: LLVM spilled them, and fetch and decode took
    more than half the interpreter's time. So the groups (from one opcode label to the
    next) are written against shared names (``%a``, ``%rd``, ...), and here each group
    gets its own copies of the fields it uses, defined at its entry."""
    out: list[str] = []
    group: list[str] = []
    name = ""

    def flush() -> None:
        used: set[str] = set()
        for line in group:
            used.update(_field_re().findall(line))
        order: list[str] = []

        def need(f: str) -> None:
            for d in _NEEDS.get(f, ()):
                need(d)
            if f not in order:
                order.append(f)

        for f in sorted(used):
            need(f)
        sfx = f".{name}"
        defs = []
        for f in order:
            t, u = f"%t.{f}{sfx}", f"%u.{f}{sfx}"
            defs += ["  " + d.format(t=t, u=u) for d in _FIELDS[f]]
        body = [_field_re().sub(lambda m: f"%{m.group(1)}{sfx}", line) for line in
                [*defs, *group[1:]]]
        out.extend([group[0], *body] if group else [])

    for line in lines:
        if not line.startswith(" ") and line.endswith(":") and line[:-1] in _GROUPS:
            if group:
                flush()
            group, name = [line], line[:-1]
        elif group:
            group.append(line)
        else:
            out.append(line)
    if group:
        flush()
    return out


_GROUPS = {"fload", "fstore", "opfp", "opfma", "opreg", "opreg32", "opimm", "opimm32", "amo",
           "system", "miscmem"}


def interpreter_ir() -> str:
    """Both interpreters (bare data accesses, soft-TLB data accesses)."""
    return (_Gen(False).build("pyhv_interp_bare") + "\n"
            + _Gen(True).build("pyhv_interp_tlb"))


__all__ = ["interpreter_ir", "heat_index", "WAITING", "known_index", "NHEAT", "NKNOWN",
           "HEAT_WORDS"]
