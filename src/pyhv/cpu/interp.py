"""The interpreter: the reference semantics of every instruction, and a fast one.

Each decoded instruction (isa/decoder.py) is turned once into a Python closure with its
operands and its own pc baked in; the closure performs the instruction and returns the
next pc. Closures are cached per translation context (privilege level and satp) keyed by
virtual pc, and dropped when their physical page is written (CodeWatch), on FENCE.I and
on SFENCE.VMA. The hot loop is then one dict lookup and one call per instruction.

Control leaves the hot loop through exceptions: :class:`~pyhv.cpu.trap.Trap` for guest
exceptions (precise: the faulting instruction's pc, nothing after it executed),
:class:`SliceBreak` after an instruction that changed privilege, translation or interrupt
enables (the loop re-reads its context), and :class:`StopRequest` when a device asked the
machine to stop (power-off) right after the current instruction.

Simple integer instructions and branch conditions are generated from their description
in isa/spec.py (the ``ALU`` and ``BRANCH`` tables below); the block translator uses the
same tables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..isa import csr as C
from ..isa import spec
from ..isa.decoder import PAUSE, Decoded, decode, spin_hint
from .code_cache import MAX_CONTEXTS, CodeCache
from .hart import Hart
from .mmu import LOAD, STORE, CodeWatch
from .run_loop import (
    SLICE_EXITS,
    CounterAccess,
    SliceBreak,
    SliceStrategy,
    YieldSlice,
)
from .trap import (
    BREAKPOINT,
    LOAD_MISALIGNED,
    MIP_SEIP,
    STORE_MISALIGNED,
    IllegalInstruction,
    Trap,
)

M64 = (1 << 64) - 1
SIGN = 1 << 63
Op = Callable[[], int]


_SLICE_BREAK = SliceBreak()
_COUNTER_ACCESS = CounterAccess()
_COUNTER_CSRS = frozenset((C.CYCLE, C.INSTRET, C.MCYCLE, C.MINSTRET))


def _s64(v: int) -> int:
    return v - ((v & SIGN) << 1)


def _sx32(v: int) -> int:
    return (((v & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) & M64


# Integer instructions that only compute rd from rs1/rs2/imm, and branch conditions:
# Python expressions made from their one description (isa/spec.py). `a` = x[rs1], `b` =
# x[rs2], `i` = immediate as unsigned 64-bit, `si` = immediate with the sign bit flipped
# (for signed compares), `sh` = shift amount. Values are unsigned 64-bit Python ints.
ALU: dict[str, str] = {name: spec.python(name) for name in spec.ALU}
BRANCH: dict[str, str] = {name: spec.python(name) for name in spec.BRANCHES}

# Loads/stores: the MMU method that performs the access.
LOADS = {n: f"load_{'s' if i.signed else 'u'}{8 * i.size}" for n, i in spec.LOADS.items()}
STORES = {n: f"store_u{8 * i.size}" for n, i in spec.STORES.items()}

_NS: dict[str, Any] = {"M64": M64, "SIGN": SIGN, "_sx32": _sx32, **spec.PY_HELPERS}


def _compile(src: str, name: str) -> Callable[..., Op]:
    ns = dict(_NS)
    exec(compile(src, f"<pyhv {name}>", "exec"), ns)
    return ns["make"]


def _uses(expr: str, var: str) -> bool:
    import re

    return re.search(rf"\b{var}\b", expr) is not None


def _alu_factory(name: str, expr: str) -> Callable[..., Op]:
    # Read operands from registers only when the expression needs them.
    lines = []
    if _uses(expr, "a"):
        lines.append("a = x[rs1]")
    if _uses(expr, "b"):
        lines.append("b = x[rs2]")
    body = "; ".join(lines + [f"x[rd] = {expr}"])
    src = f"""
def make(hart, d, pc, npc):
    x = hart.x
    rd, rs1, rs2 = d.rd, d.rs1, d.rs2
    i = d.imm & M64
    si = i ^ SIGN
    sh = d.imm & 63
    if rd == 0:
        def op():
            return npc
        return op
    def op():
        {body}
        return npc
    return op
"""
    return _compile(src, name)


def _branch_factory(name: str, cond: str) -> Callable[..., Op]:
    src = f"""
def make(hart, d, pc, npc):
    x = hart.x
    rs1, rs2 = d.rs1, d.rs2
    t = (pc + d.imm) & M64
    def op():
        a = x[rs1]; b = x[rs2]
        return t if {cond} else npc
    return op
"""
    return _compile(src, name)


def _load_factory(name: str, method: str) -> Callable[..., Op]:
    src = f"""
def make(hart, d, pc, npc):
    x = hart.x
    rd, rs1, imm = d.rd, d.rs1, d.imm
    ld = hart.mmu.{method}
    if rd == 0:
        def op():
            ld((x[rs1] + imm) & M64)
            return npc
        return op
    def op():
        x[rd] = ld((x[rs1] + imm) & M64)
        return npc
    return op
"""
    return _compile(src, name)


def _store_factory(name: str, method: str) -> Callable[..., Op]:
    src = f"""
def make(hart, d, pc, npc):
    x = hart.x
    rs1, rs2, imm = d.rs1, d.rs2, d.imm
    st = hart.mmu.{method}
    def op():
        st((x[rs1] + imm) & M64, x[rs2])
        return npc
    return op
"""
    return _compile(src, name)


class _Factories(dict):
    """name -> the factory of its closures. The generated ones (ALU, branches, loads,
    stores, AMOs: Python compiled from their descriptions) are made the first time an
    instruction of that name is decoded: compiling all ~120 of them cost ~7 ms at
    every start, where a short guest uses a few dozen."""

    def __init__(self) -> None:
        super().__init__()
        self.lazy: dict[str, Callable[[], Callable[..., Op]]] = {}

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        made = dict.get(self, name)
        if made is None:
            build = self.lazy.pop(name, None)
            if build is None:
                return default
            made = self[name] = build()
        return made

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self.lazy


FACTORIES = _Factories()
for _n, _e in ALU.items():
    FACTORIES.lazy[_n] = partial(_alu_factory, _n, _e)
for _n, _e in BRANCH.items():
    FACTORIES.lazy[_n] = partial(_branch_factory, _n, _e)
for _n, _m in LOADS.items():
    FACTORIES.lazy[_n] = partial(_load_factory, _n, _m)
for _n, _m in STORES.items():
    FACTORIES.lazy[_n] = partial(_store_factory, _n, _m)


def _factory(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
    def deco(fn: Callable[..., Op]) -> Callable[..., Op]:
        FACTORIES[name] = fn
        return fn

    return deco


@_factory("lui")
def _lui(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    x, rd, v = hart.x, d.rd, d.imm & M64
    if rd == 0:
        return lambda: npc

    def op() -> int:
        x[rd] = v
        return npc

    return op


@_factory("auipc")
def _auipc(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    x, rd, v = hart.x, d.rd, (pc + d.imm) & M64
    if rd == 0:
        return lambda: npc

    def op() -> int:
        x[rd] = v
        return npc

    return op


@_factory("jal")
def _jal(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    x, rd, t = hart.x, d.rd, (pc + d.imm) & M64
    if rd == 0:
        return lambda: t

    def op() -> int:
        x[rd] = npc
        return t

    return op


@_factory("jalr")
def _jalr(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    x, rd, rs1, imm = hart.x, d.rd, d.rs1, d.imm
    mask = M64 & ~1

    def op() -> int:
        t = (x[rs1] + imm) & mask
        if rd:
            x[rd] = npc
        return t

    return op


_YIELD = YieldSlice()


@_factory("fence")
def _fence(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    if d.raw == PAUSE:
        # A spinning hart waits for another one (a lock holder, a flag): with all harts
        # taking turns on one host thread, the best use of the rest of its slice is to
        # hand it over. Single-hart machines ignore the hint.
        def pause() -> int:
            if hart.yield_on_pause:
                hart.pc = npc
                raise _YIELD
            return npc

        return pause
    return lambda: npc  # one sequentially consistent memory: nothing to order


@_factory("fence.i")
def _fence_i(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    # Decoded instructions are dropped the moment their page is written (CodeWatch), by
    # any hart, the page walker or a loader, so instruction fetch is always coherent with
    # memory and FENCE.I has nothing left to do. (Flushing here would make every Linux
    # flush_icache_all re-decode the whole kernel.)
    return lambda: npc


@_factory("sfence.vma")
def _sfence_vma(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    raw, x, rs1, rs2 = d.raw, hart.x, d.rs1, d.rs2

    def op() -> int:
        hart.check_sfence(raw)
        if rs1:
            vpn = x[rs1] >> 12
            hart.mmu.flush_page(vpn)
            hart.flush_decoded_page(vpn)
        else:
            hart.mmu.flush()
            # An ASID-specific fence (rs2 != x0) leaves global mappings alone; S-mode
            # only ever fetches from non-user pages, which Linux maps global.
            hart.flush_decoded(all_contexts=False, supervisor=rs2 == 0)
        hart.pc = npc
        raise _SLICE_BREAK

    return op


@_factory("ecall")
def _ecall(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    def op() -> int:
        raise Trap(hart.ecall_cause(), 0)

    return op


@_factory("ebreak")
def _ebreak(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    def op() -> int:
        raise Trap(BREAKPOINT, pc)

    return op


@_factory("illegal")
def _illegal(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    raw = d.raw

    def op() -> int:
        raise IllegalInstruction(raw)

    return op


@_factory("mret")
def _mret(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    raw = d.raw

    def op() -> int:
        hart.pc = hart.mret(raw)
        raise _SLICE_BREAK

    return op


@_factory("sret")
def _sret(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    raw = d.raw

    def op() -> int:
        hart.pc = hart.sret(raw)
        raise _SLICE_BREAK

    return op


@_factory("wfi")
def _wfi(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
    raw = d.raw

    def op() -> int:
        hart.check_wfi(raw)
        hart.pc = npc
        # Sleep only if nothing enabled is pending (WFI ignores global enables).
        if not (hart.mip | hart.mip_hw) & hart.mie:
            hart.waiting = True
        elif hart.yield_on_pause:
            # Awake at once with interrupts masked: firmware wait loops (OpenSBI's HSM
            # wait) spin like this; let the other harts run instead.
            raise _YIELD
        raise _SLICE_BREAK

    return op


def _csr_factory(kind: str, imm_form: bool) -> Callable[..., Op]:
    def make(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
        x, rd, src, csr, raw = hart.x, d.rd, d.rs1, d.csr, d.raw
        write = kind == "w" or src != 0  # csrrs/csrrc with x0/0 do not write
        read = kind != "w" or rd != 0  # csrrw with rd=x0 does not read

        def op() -> int:
            v = src if imm_form else x[src]
            old = hart.csr_read(csr, raw) if read else 0
            if write:
                if kind == "w":
                    new = v
                else:
                    # mip.SEIP: only the software-writable bit takes part in a CSRRS/
                    # CSRRC read-modify-write, never the PLIC's signal (priv spec 3.1.9).
                    cur = hart.mip | (hart.mip_hw & ~MIP_SEIP) if csr == C.MIP else old
                    new = cur | v if kind == "s" else cur & ~v
                hart.csr_write(csr, new, raw)
            if rd:
                x[rd] = old
            if hart.context_changed:
                hart.pc = npc
                if hart.leave_slice:  # a debug trigger armed or disarmed: see triggers
                    hart.leave_slice = False
                    raise _YIELD
                raise _SLICE_BREAK
            return npc

        if csr in _COUNTER_CSRS:
            def counter_op() -> int:
                raise _COUNTER_ACCESS

            counter_op.exact = op  # type: ignore[attr-defined]
            return counter_op
        return op

    return make


for _n, _k, _i in (
    ("csrrw", "w", False), ("csrrs", "s", False), ("csrrc", "c", False),
    ("csrrwi", "w", True), ("csrrsi", "s", True), ("csrrci", "c", True),
):
    FACTORIES[_n] = _csr_factory(_k, _i)


# -- A extension ----------------------------------------------------------------------------

def _amo_factory(base: str, width: int, fn: Callable[[int, int], int] | None
                 ) -> Callable[..., Op]:
    """LR, SC, or an AMO whose new memory value is ``fn(old as read, x[rs2])``."""
    mask = (1 << (8 * width)) - 1

    def make(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
        x, rd, rs1, rs2 = hart.x, d.rd, d.rs1, d.rs2
        mmu = hart.mmu
        ld = mmu.load_u64 if width == 8 else mmu.load_u32
        st = mmu.store_u64 if width == 8 else mmu.store_u32
        ext = (lambda v: v) if width == 8 else _sx32

        if base == "lr":

            def op() -> int:
                a = x[rs1]
                if a & (width - 1):
                    raise Trap(LOAD_MISALIGNED, a)
                pa = mmu.translate(a, LOAD)
                v = ld(a)
                hart.reservation = pa
                if rd:
                    x[rd] = ext(v)
                return npc

            return op

        if base == "sc":

            def op() -> int:
                a = x[rs1]
                if a & (width - 1):
                    raise Trap(STORE_MISALIGNED, a)
                pa = mmu.translate(a, STORE)
                ok = hart.reservation == pa
                hart.reservation = None
                if ok:
                    st(a, x[rs2] & mask)
                if rd:
                    x[rd] = 0 if ok else 1
                return npc

            return op

        assert fn is not None

        def amo() -> int:
            a = x[rs1]
            if a & (width - 1):
                raise Trap(STORE_MISALIGNED, a)
            mmu.translate(a, STORE)  # store/AMO faults take precedence (cause 15/7)
            old = ext(ld(a))
            st(a, fn(old, x[rs2]) & mask)
            if rd:
                x[rd] = old
            return npc

        return amo

    return make


for _w, _size in (("w", 4), ("d", 8)):
    FACTORIES[f"lr.{_w}"] = _amo_factory("lr", _size, None)
    FACTORIES[f"sc.{_w}"] = _amo_factory("sc", _size, None)

def _amo_of(name: str) -> Callable[..., Op]:
    """An AMO whose new memory value is its description's (isa/spec.py)."""
    fn = eval(f"lambda m, b: {spec.python(name)}", dict(_NS))  # noqa: S307 - generated
    return _amo_factory(name.partition(".")[0], 8 if name.endswith(".d") else 4, fn)


for _name in spec.AMOS:
    FACTORIES.lazy[_name] = partial(_amo_of, _name)


# -- F and D extensions ------------------------------------------------------------------------

_FS_DIRTY = C.MSTATUS_FS | C.MSTATUS_SD
_BOX = 0xFFFFFFFF00000000


def _fp_load_factory(width: int) -> Callable[..., Op]:
    def make(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
        x, f, rd, rs1, imm, raw = hart.x, hart.f, d.rd, d.rs1, d.imm, d.raw
        ld = hart.mmu.load_u64 if width == 8 else hart.mmu.load_u32
        box = 0 if width == 8 else _BOX

        def op() -> int:
            if not hart.mstatus & C.MSTATUS_FS:
                raise IllegalInstruction(raw)
            f[rd] = ld((x[rs1] + imm) & M64) | box
            hart.mstatus |= _FS_DIRTY
            return npc

        return op

    return make


def _fp_store_factory(width: int) -> Callable[..., Op]:
    def make(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
        x, f, rs1, rs2, imm, raw = hart.x, hart.f, d.rs1, d.rs2, d.imm, d.raw
        st = hart.mmu.store_u64 if width == 8 else hart.mmu.store_u32
        mask = M64 if width == 8 else 0xFFFFFFFF

        def op() -> int:
            if not hart.mstatus & C.MSTATUS_FS:
                raise IllegalInstruction(raw)
            st((x[rs1] + imm) & M64, f[rs2] & mask)
            return npc

        return op

    return make


for _fpn, _fpi in spec.FP.items():  # flw, fld, fsw, fsd: their width from isa/spec.py
    if _fpi.op == "load":
        FACTORIES[_fpn] = _fp_load_factory(_fpi.arg)
    elif _fpi.op == "store":
        FACTORIES[_fpn] = _fp_store_factory(_fpi.arg)


def _fp_op_factory(fn: Callable[[Any, Decoded], None]) -> Callable[..., Op]:
    def make(hart: Hart, d: Decoded, pc: int, npc: int) -> Op:
        raw = d.raw

        def op() -> int:
            if not hart.mstatus & C.MSTATUS_FS:
                raise IllegalInstruction(raw)
            fn(hart, d)
            hart.mstatus |= _FS_DIRTY
            return npc

        return op

    return make


def _install_fp_ops() -> None:
    from .fpu import FP_OPS

    for name, fn in FP_OPS.items():
        FACTORIES[name] = _fp_op_factory(fn)


_install_fp_ops()


def make_op(hart: Hart, d: Decoded, pc: int) -> Op:
    """Turn one decoded instruction at ``pc`` into its executable closure."""
    npc = (pc + d.length) & M64
    factory = FACTORIES.get(d.name) or FACTORIES["illegal"]
    op = factory(hart, d, pc, npc)
    if d.name == "div" and spin_hint(d.raw):
        op = _relaxing(hart, op, npc)
    op.npc = npc  # type: ignore[attr-defined]  # where a StopRequest resumes
    return op


def _relaxing(hart: Hart, div: Op, npc: int) -> Op:
    """Linux's cpu_relax() without Zihintpause (isa.decoder.spin_hint): the DIV, then,
    with other harts taking turns on this thread, the rest of the slice to them (as a
    PAUSE does: the hart spins until another one releases what it waits for)."""

    def op() -> int:
        div()
        if hart.yield_on_pause:
            hart.pc = npc
            raise _YIELD
        return npc

    return op


# -- the run loop --------------------------------------------------------------------------------

_MAX_CONTEXTS = MAX_CONTEXTS  # (kept for importers)


class Interpreter(SliceStrategy):
    """Runs one hart: fetch through the decode cache, execute closures, take traps."""

    def __init__(self, hart: Hart, code: CodeWatch) -> None:
        self.hart = hart
        self.code = code
        # Decoded closures by virtual pc, one table per translation context.
        self.cache = CodeCache(hart, code)
        hart.flush_decoded = self.flush
        hart.flush_decoded_page = self.flush_page

    def flush(self, all_contexts: bool = True, supervisor: bool = True) -> None:
        """Drop decoded instructions: all, or those fetched through translation.

        With ``all_contexts`` False only translated contexts (S and U) are dropped, and
        S-mode ones only if ``supervisor``.
        """
        self.cache.flush(all_contexts, supervisor)

    def flush_page(self, vpn: int) -> None:
        """SFENCE.VMA of one virtual page: drop what was decoded from it."""
        self.cache.flush_page(vpn)

    def _cache(self) -> tuple[int, dict[int, Op]]:
        ctx = self.cache.current()
        return ctx.ids[0], ctx.tables[0]

    def _decode_into(self, pc: int, cid: int, cache: dict[int, Op]) -> Op:
        mmu = self.hart.mmu
        lo, pa = mmu.fetch16(pc)
        if lo & 3 == 3:
            hi, pa2 = mmu.fetch16((pc + 2) & M64)
            pages: tuple[int, ...] = (pa >> 12, pa2 >> 12)
            d = decode(lo | hi << 16, 4)
        else:
            pages = (pa >> 12,)
            d = decode(lo, 2)
        op = make_op(self.hart, d, pc)
        cache[pc] = op
        self.cache.add_insn(cid, pc, pa, pages, d.length)
        return op

    # -- the run loop's strategy (cpu/run_loop.py) -----------------------------------------
    def stretch(self, n: int) -> int:
        """Up to ``n`` instructions through the decode cache of the current context."""
        hart = self.hart
        hart.context_changed = False
        cid, cache = self._cache()
        pc = hart.pc
        i = 0
        op: Op | None = None
        get = cache.get
        try:
            for i in range(n):  # noqa: B007 - i is read after the loop
                op = get(pc)
                if op is None:
                    op = self._decode_into(pc, cid, cache)
                pc = op()
        except SLICE_EXITS:
            self.at = (i, pc, op, getattr(op, "npc", pc))
            raise
        hart.pc = pc
        return n
