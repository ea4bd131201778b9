"""Tier 2: the native JIT engine (same interface as the interpreter).

How control moves:

* Python copies the registers into the hart's C struct (state.py) and calls the native
  dispatch loop, which runs until the budget is used up (``EXIT_BUDGET``) or an
  instruction needs Python (``EXIT_SLOW``). At each pc it looks up the context's
  dispatch table: a compiled block runs the whole block; a pc without one goes to the
  native interpreter (native_interp.py), which runs the stretch up to the next control
  transfer one instruction at a time, decoding as it goes. Cold code so never leaves
  native code; Python runs only what native code does not do (CSR accesses other than
  time, sstatus, the trap vectors, the interrupt enables and pending bits, satp and the
  plain scratch/epc/cause/tval ones; traps other than a system call or page fault from
  U-mode; MRET and SRET with an interrupt waiting; WFI; a satp write to an address
  space without kept TLB sets; MMIO of devices that do not allow native access), one
  instruction at a time, with precise state.
* System calls and page faults: an ECALL from U-mode into S-mode, a page fault of
  U-mode the native walk proves (codegen's ``pyhv_ufault``) and the SRET back switch
  natively between the two contexts of the address space, which Python prepares
  (``ctxs``) when satp, MXR or the counter enables change (``_prepare_traps``). An
  S-mode satp write switches natively to another address space whose TLB sets Python
  keeps (``_publish_spaces``): a kernel on a page table of its own (xv6) writes satp
  at every trap entry and return.
* Each stretch start counts its runs; at ``hot_runs`` the interpreter leaves with
  ``EXIT_HOT`` and its block is compiled (codegen.py → compiler.py, on a worker thread)
  and linked into the dispatch table. A start the disk cache may hold leaves at its
  first run, and its machine code is loaded at once.
* A soft-TLB miss walks the page tables natively (codegen.REFILL); what that cannot do
  (setting A/D bits, a fault, MMIO, a store into a code page, a misaligned access)
  exits, and Python runs that one instruction (or refills the TLB after its own walk
  and goes straight back).
* Interrupts are checked between runs, as in the interpreter; every instruction that can
  change the interrupt state (CSR writes, mret/sret, wfi) runs in Python, except
  setting sstatus.SIE, which leaves native code (``EXIT_IRQ``) when an interrupt waits.
* ``PYHV_JIT_INTERP=0`` runs cold code in Python instead (the tier before the native
  interpreter: decoded closures, in stretches heated by instructions run).

Invalidation: native blocks are registered with the machine's CodeWatch with the bytes
they came from, like decoded instructions, so a write over those bytes (any hart, the
page walker, DMA) unlinks them from the dispatch table. A native store into a page
holding code checks the CodeWatch's granule bitmap (inline in bare mode; through a
``CODE_TAG`` write tag and the refill when translated): a store next to code stays
native, one over code exits to Python, which does the store and the invalidation.

Address spaces: code fetched through translation belongs to a context shared by every
satp (one per privilege and translation mode, ``_Context``), remembered with the
physical page it came from. After a satp write or SFENCE.VMA a page is checked again
before its code runs: in Python before it runs an instruction of it (``_verify``: a
page that maps elsewhere now loses its code), and in the native dispatcher through an I-TLB
filled by a native fetch walk (a block whose page maps elsewhere is not entered). So
the kernel, and a program run by many processes, are decoded and compiled once.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ...isa import csr as C
from ...isa.decoder import Decoded, decode
from ..code_cache import insn_spans
from ..hart import Hart
from ..interp import (
    make_op,
)
from ..mmu import FETCH, LOAD, STORE, CodeWatch
from ..run_loop import (
    SLICE_EXITS,
    SliceBreak,
    SliceStrategy,
)
from ..trap import Trap
from . import codegen, native_interp, stencils
from . import state as S
from .compiler import OPT, Compiler, block_key

M64 = (1 << 64) - 1
# Cold instructions run from a block start before it is compiled (PYHV_JIT_THRESHOLD).
HOT_THRESHOLD = int(os.environ.get("PYHV_JIT_THRESHOLD", "300"))
# With the native interpreter: runs of a stretch start before its block is compiled.
DEFAULT_HOT_RUNS = 256
HOT_RUNS = int(os.environ.get("PYHV_JIT_HOT_RUNS", str(DEFAULT_HOT_RUNS)))
# With the baseline tier (stencils.py): runs of a stretch start in the native interpreter
# (within a cooling period, COOL_PERIOD) before it gets a baseline block (copied
# stencils), which asks for its quick LLVM block at once. A block costs ~0.15-0.2 ms of
# Python to scan, build and link, and saves ~50 ns a run of ten instructions against the
# native interpreter: ~4,000 runs pay it back, which a start run 1,024 times in 50 ms
# (20,000 a second) does within ~0.2 s; a Linux boot's lukewarm code mostly does not.
# (Paired first runs, 2026-12-07: at 256 runs `sort` 0.76-0.85x the time without the
# tier but a Linux boot 1.10x, 1.16x at -smp 4; at 1,024 `sort` 0.83-0.98x, the boot
# 0.93x, 1.02x at -smp 4.)
BASE_RUNS = int(os.environ.get("PYHV_JIT_BASE_RUNS", "1024"))
# PYHV_JIT_BASELINE=0: no baseline tier (warm code waits for its quick LLVM block).
BASELINE = os.environ.get("PYHV_JIT_BASELINE", "1") not in ("", "0")
# PYHV_JIT_INTERP=0: cold code runs in Python (the tier before the native interpreter).
NATIVE_INTERP = os.environ.get("PYHV_JIT_INTERP", "1") != "0"
# PYHV_JIT_STATS=1: each hart prints its native-run counters when the machine stops.
STATS = os.environ.get("PYHV_JIT_STATS", "") not in ("", "0")
MAX_CONTEXTS = 64
COOL_PERIOD = float(os.environ.get("PYHV_JIT_COOL", "0.05"))  # seconds; see JitEngine._cool
ASK_AGAIN = 20  # coolings after which a start's first run asks the code cache again
MAX_THRESH = 1 << 16  # the hot threshold while the compiler is over its budget, at most
# Guest instructions a second from one stretch start that get its block compiled even
# while the compiler is over its budget, and how many it runs between two asks
# (JitEngine._defer).
HOT_IPS = float(os.environ.get("PYHV_JIT_HOT_IPS", "8e6"))
ASK_INSNS = 1 << 17
MAX_TLB_SETS = 16  # soft-TLB sets kept for data-translation contexts (48 KiB each)
SLOW_HOT = 16  # slow exits at a stretch start before its block is compiled (see _slow_heat)
STUCK = 8  # a queued block this many thresholds hot: wait for the compiler
_ENDS_COLD = frozenset(
    {"jalr", "ecall", "ebreak", "illegal", "mret", "sret", "wfi", "sfence.vma", "fence.i",
     "csrrw", "csrrs", "csrrc", "csrrwi", "csrrsi", "csrrci"} | set(codegen.BRANCHES) | {"jal"}
)
_REGS = struct.Struct("<32Q")
_CSRS = struct.Struct("<8Q")  # state.PLAIN_CSRS
_PC_BUDGET = struct.Struct("<Qq")
_FS_DIRTY = C.MSTATUS_FS | C.MSTATUS_SD
_DISPATCH = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_REVOKE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64)
# state.MMIOFN: (physical address, size, store, value) -> 0 not done, 1 done, 2 leave after
_DEVICE = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                           ctypes.c_uint64)
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: M64}
_NOTHING_KNOWN = (ctypes.c_uint8 * (native_interp.NKNOWN // 8))()  # no start may be cached


@lru_cache(maxsize=1 << 16)
def _decode(word: int, length: int) -> Decoded:
    return decode(word, length)


@lru_cache(maxsize=1 << 16)
def _scanned(word: int, length: int, supervisor: bool) -> tuple[Decoded, bool, bool]:
    """An instruction as a block scan sees it: decoded, whether native code does it
    (codegen.supported) and whether it ends a block, remembered by its bits."""
    d = _decode(word, length)
    return d, codegen.supported(d, supervisor), codegen.ends_block(d)


def _after_call(ram: memoryview, off: int, pc: int) -> bool:
    """Whether the instruction before ``pc`` (RAM offset ``off``), in its page, looks
    like a call (jal or jalr linking ra or t0; c.jalr): ``pc`` is a return address,
    entered by every return: a region that holds it (compiled from a start before
    the call) does not stop it getting its own, as it does a loop's inner blocks
    (JitEngine._reoptimise). Recursive code (fib: a return address after each of its
    unrolled calls) ran ~30% of its time there as baseline blocks; 0.79-0.92x the
    whole-process time. Bytes that only look like a call cost one region more.
    (A call's fall-through is also reached by a jump: no matter.)"""
    at = pc & 0xFFF
    if at >= 4:
        w = int.from_bytes(ram[off - 4:off], "little")
        if w & 0x7F in (0x6F, 0x67) and (w >> 7) & 0x1F in (1, 5):
            return True
    if at >= 2:
        h = int.from_bytes(ram[off - 2:off], "little")
        if h & 0xF07F == 0x9002 and h & 0x0F80:  # c.jalr rs1 (rs1 != 0, rs2 = 0)
            return True
    return False


def _region_runs(n: int) -> int:
    """Runs of a baseline block of ``n`` instructions after which it asks for its region."""
    return max(1, codegen.OPT_AFTER // n)


class _NativeBlocks(dict):
    """pc -> (native function address, physical page) for one context; dropping an
    entry (CodeWatch, a page that maps elsewhere) also unlinks it from the context's
    dispatch table."""

    def __init__(self, table: ctypes.Array, runs: ctypes.Array, hot_runs: int) -> None:
        super().__init__()
        self.table = table
        self.runs = runs  # the native interpreter's run counters of the context
        self.rearm = max(0, min(hot_runs, (1 << 32) - 1) - 1)
        self._flip = False
        self.invalidated = 0  # blocks dropped by writes over their code (statistics)
        self.optimised: set[int] = set()  # starts compiled again, optimised (or queued)
        self.dropped: set[int] = set()  # starts dropped by writes, not installed since
        self.drops: dict[int, int] = {}  # start -> blocks of it dropped by writes
        self.waited: dict[int, int] = {}  # start -> rounds of heat it waited since
        # start -> what Python keeps of it, for starts whose code is a baseline block
        self.baseline: dict[int, _Based] = {}
        # virtual page -> {start: (end, key)} of each optimised region compiled or queued
        # there, and starts put off once for lying inside one (JitEngine._reoptimise)
        self.regions: dict[int, dict[int, tuple[int, str]]] = {}
        self.put_off: set[int] = set()

    def pop(self, pc: int, default: Any = None) -> Any:  # type: ignore[override]
        """The CodeWatch drops the block: a write overlapped its bytes. Its start heats
        up again from the beginning, and each such drop doubles the runs it needs
        before it is compiled again (``_hot``): code that is rewritten all the time (a
        JIT inside the guest) stays in the native interpreter instead of being
        compiled, dropped and compiled again."""
        value = self.forget(pc, default, rearm=False)
        if value is not None:
            self.invalidated += 1
            self.dropped.add(pc)
            self.drops[pc] = self.drops.get(pc, 0) + 1
            self.runs[native_interp.heat_index(pc)] = 1  # past the code-cache check
        return value

    def forget(self, pc: int, default: Any = None, rearm: bool = True) -> Any:
        """Drop the block at ``pc`` (its bytes changed, or its page maps elsewhere)."""
        value = dict.pop(self, pc, default)
        self.optimised.discard(pc)
        self.baseline.pop(pc, None)
        self.unlink(pc)
        if value is not None and rearm:
            # its next run in the native interpreter asks for the block again
            i = native_interp.heat_index(pc)
            if self.runs[i] > self.rearm:
                self.runs[i] = self.rearm
        return value

    def backoff(self, pc: int) -> bool:
        """Whether the start ``pc``, hot again after writes dropped its block ``d``
        times, must heat up again (2**d rounds of the threshold in all, at most 64) first."""
        d = self.drops.get(pc)
        if not d:
            return False
        waited = self.waited.get(pc, 0) + 1
        if waited < 1 << min(d, 6):
            self.waited[pc] = waited
            self.runs[native_interp.heat_index(pc)] = 1
            return True
        self.waited.pop(pc, None)
        return False

    def clear(self) -> None:
        dict.clear(self)
        self.dropped.clear()
        self.drops.clear()
        self.waited.clear()
        self.optimised.clear()
        self.baseline.clear()
        self.regions.clear()
        self.put_off.clear()
        S.empty_table(self.table)
        ctypes.memset(self.runs, 0, ctypes.sizeof(self.runs))

    def unlink(self, pc: int) -> None:
        """Take ``pc`` out of the table (it stays known: ``link`` puts it back)."""
        table = self.table
        i, tag = S.slot(pc), S.table_tag(pc)
        a, b = 4 * i, 4 * (i ^ 1)
        for j in (a, b):
            if table[j] == tag:
                table[j] = S.FREE_SLOT
                if table[a] == table[b] == S.FREE_SLOT:
                    S.mark_occupied(table, i, False)

    def install(self, pc: int, addr: int, ppn: int) -> None:
        self[pc] = (addr, ppn)
        self.link(pc)

    def link(self, pc: int) -> None:
        """Put ``pc`` in one of its two slots: a free one, else evict the other way's."""
        table = self.table
        i, tag = S.slot(pc), S.table_tag(pc)
        a, b = 4 * i, 4 * (i ^ 1)
        if table[a] == tag or table[b] == tag:
            return
        if table[a] == S.FREE_SLOT or table[b] != S.FREE_SLOT and self._flip:
            j = a
        else:
            j = b
        self._flip = not self._flip
        table[j] = tag
        table[j + 1], table[j + 2] = self[pc]
        S.mark_occupied(table, i, True)

    def replace(self, pc: int, addr: int) -> None:
        """The block at ``pc`` compiled again (optimised): new code, same everything."""
        self[pc] = (addr, self[pc][1])
        i, tag = S.slot(pc), S.table_tag(pc)
        for j in (4 * i, 4 * (i ^ 1)):
            if self.table[j] == tag:
                self.table[j + 1] = addr


class _Based:
    """A baseline block's run counter (in the arena), its instructions, the count at
    which it asks Python (its ``lim``: the counter is set back from it to ask again),
    whether its quick block was asked for yet, and since when it counts how many runs
    (its rate at the next ask)."""

    __slots__ = ("counter", "n", "lim", "quick", "since", "runs")

    def __init__(self, counter: int, n: int, lim: int, quick: bool) -> None:
        self.counter = ctypes.c_uint32.from_address(counter)
        self.n = n
        self.lim = lim
        self.quick = quick
        self.since = time.monotonic()
        self.runs = lim

    def ask_after(self, runs: int) -> None:
        """Count ``runs`` more runs, then ask again."""
        self.runs = max(1, min(runs, 1 << 31))
        self.counter.value = (self.lim - self.runs) & 0xFFFFFFFF
        self.since = time.monotonic()

    def rate(self) -> float:
        """Instructions a second it ran since it last counted from the start."""
        return self.runs * self.n / max(time.monotonic() - self.since, 1e-6)


class _OpCache(dict):
    """pc -> (closure, next pc) of the instructions one context ran cold. Registered with
    the CodeWatch under one key per virtual page (``("v", vpn)``), with the bytes of
    each instruction: a write over any of them drops every instruction of that virtual
    page (``pop(("v", vpn))``); a write to other bytes drops none."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[int, list[int]] = {}  # virtual page -> pcs decoded there

    def pop(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        if type(key) is tuple:  # ("v", vpn): the whole virtual page
            for pc in self.pages.pop(key[1], ()):
                dict.pop(self, pc, None)
            return default
        return dict.pop(self, key, default)

    def clear(self) -> None:
        dict.clear(self)
        self.pages.clear()


class _Context:
    """The code of one translation context: privilege, instruction translation on or
    off, data translation on or off. Code fetched through translation is shared by every
    address space (satp): each virtual page remembers the physical page its code came
    from (``vmap``) and is checked against the page tables the first time it runs after
    a satp write or SFENCE.VMA (``verified``), as QEMU finds its translations by
    physical address. So the kernel, and a program run by many processes, are decoded,
    heated and compiled once, not once per process."""

    __slots__ = ("native", "ops", "heat", "nojit", "queued", "native_id", "op_id",
                 "table_addr", "translated", "key", "vmap", "verified", "satp",
                 "runs", "runs_addr", "page_blocks", "cache_swept", "unbased", "deferred")

    def __init__(self, code: CodeWatch, key: tuple[int, int, bool], hot_runs: int) -> None:
        table = S.new_table()
        # virtual page -> {start: its bytes} of every block linked there (JitEngine._relink_page)
        self.page_blocks: dict[int, dict[int, bytes]] = {}
        # virtual pages whose blocks in the code cache were all looked for (_relink_page)
        self.cache_swept: set[int] = set()
        # stretch start -> (when it was put off, its block's length, its run count then),
        # for starts found hot while the compiler was over its budget (JitEngine._defer)
        self.deferred: dict[int, tuple[float, int, int]] = {}
        # stretch-start run counters of the native interpreter (native_interp.py)
        self.runs = (ctypes.c_uint32 * native_interp.HEAT_WORDS)()
        self.runs_addr = ctypes.addressof(self.runs)
        self.native = _NativeBlocks(table, self.runs, hot_runs)
        self.table_addr = ctypes.addressof(table)
        self.ops = _OpCache()
        self.heat: dict[int, int] = {}
        self.nojit: set[int] = set()  # starts that cannot be compiled (first insn unsupported)
        self.queued: set[int] = set()  # starts waiting for the compiler
        self.unbased: set[int] = set()  # starts no baseline block can start at
        self.vmap: dict[int, int] = {}  # virtual page -> physical page code came from
        self.verified: set[int] = set()  # virtual pages checked since the last fence
        self.satp = -1  # the address space ``verified`` holds for
        self.native_id = code.register(self.native)
        self.op_id = code.register(self.ops)
        self.key = key
        self.translated = key[2]


class JitMachine:
    """What the harts of one machine share: the compiler, the code map, their engines."""

    def __init__(self, board: Any, compiler: Compiler, threshold: int = HOT_THRESHOLD,
                 sync: bool = False, native_interp: bool | None = None,
                 hot_runs: int | None = None, compiled: bool = True,
                 baseline: bool | None = None, base_runs: int | None = None) -> None:
        self.board = board
        self.compiled = compiled  # False: nothing compiled or loaded (tests' cold tier)
        self.native_interp = NATIVE_INTERP if native_interp is None else native_interp
        # runs of a stretch start that make it hot; an explicit instruction threshold
        # (tests: 1 = compile at once, huge = never) carries over
        self.hot_runs = hot_runs or (HOT_RUNS if threshold == HOT_THRESHOLD else threshold)
        self.sync = sync  # compile on the guest thread, at once (tests: deterministic)
        # The baseline tier: a start the native interpreter ran interp_runs times gets a
        # baseline block, which asks for its quick LLVM block (for when the compiler is
        # idle) after hot_runs in all (at once if that is fewer), and for its region as
        # a quick block would (JitEngine._promote). A hot threshold set lower than
        # that (tests, PYHV_JIT_HOT_RUNS) comes first.
        want = (BASELINE or base_runs is not None) if baseline is None else baseline
        self.baseline: stencils.Baseline | None = (
            compiler.baseline() if want and compiled and self.native_interp
            and stencils.host_supported() else None)
        self.interp_runs = self.hot_runs
        if self.baseline is not None:
            self.interp_runs = base_runs or (
                BASE_RUNS if self.hot_runs == DEFAULT_HOT_RUNS
                else min(BASE_RUNS, self.hot_runs))
        # baseline blocks also while the code cache supplies most blocks (JitEngine._hot):
        # with base_runs given (tests' baseline tier)
        self.always_baseline = base_runs is not None
        self.closed = False
        self.compiler = compiler
        ram = board.ram
        self.ram_base = ram.base
        self.ram_size = ram.size
        self.ram_host = ram.host_address()
        self.ram_mv = ram.mv
        self.codemap = (ctypes.c_uint8 * (ram.size >> 12))()
        # The CodeWatch's code granules (one bit per 8 bytes of RAM), which native stores
        # into pages holding code check. Anonymous memory: only the parts that describe
        # code pages are ever touched (1/64 of RAM's size, most of it never resident).
        # Private: a process forked with this machine (a clone group's VM) writes its own.
        self._codebits_map = mmap.mmap(-1, max(4096, ram.size >> 6),
                                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.codebits = (ctypes.c_uint8 * len(self._codebits_map)).from_buffer(
            self._codebits_map)
        self.codebits_addr = ctypes.addressof(self.codebits)
        # quick blocks' instruction counters (codegen._Block.count), for every hart
        self.counters = (ctypes.c_uint64 * S.NCOUNTERS)()
        self.time_last = ctypes.c_uint64(0)  # for a board without its own (tests' worlds)
        # (virtual start, physical start) -> (instructions, bytes) of a scanned block;
        # valid while RAM still holds those bytes (checked on use)
        self.scans: dict[tuple, tuple[list, bytes]] = {}  # (start, pa, sup[, region])
        # pcs of (bare-mode) loads seen reading the CLINT's mtime: compiled to read it
        # natively from then on (JitEngine._clock_read; codegen.block_ir's ``clock``)
        self.clock_loads: set[int] = set()
        self.engines = [JitEngine(h, self, threshold) for h in board.harts]
        code: CodeWatch = board.code
        for ppn, mask in code.masks.items():
            self.watch(ppn, mask)
        code.watchers.append(self.watch)

    def reset_baseline(self) -> None:
        """The baseline arena is full: drop every baseline block, then empty it."""
        for e in self.engines:
            for ctx in e._contexts.values():
                for pc in list(ctx.native.baseline):
                    ctx.native.forget(pc)
        assert self.baseline is not None
        self.baseline.arena.reset()

    def watch(self, ppn: int, mask: int) -> None:
        """The code granules of a physical page changed (mask 0: it holds no code)."""
        i = ppn - (self.ram_base >> 12)
        if not 0 <= i < len(self.codemap):
            return
        self._codebits_map[i << 6:(i + 1) << 6] = mask.to_bytes(64, "little")
        had = self.codemap[i]
        self.codemap[i] = 1 if mask else 0
        if mask and not had:
            host = self.ram_host + (i << 12)
            for e in self.engines:
                e._outdate_parked_tlbs()  # parked TLBs may allow writes to the page
                e._revoke(e.st_addr, host)



def _left_queue(queued: set[int], pc: int) -> Callable[[], bool]:
    """Whether the block at ``pc`` has left the compile queue (Compiler.wait_until)."""
    return lambda: pc not in queued

class JitEngine(SliceStrategy):
    """Runs one hart: cold code in Python, hot blocks native."""

    preferred_slice = 65536

    def __init__(self, hart: Hart, machine: JitMachine, threshold: int) -> None:
        self.hart = hart
        self.machine = machine
        self.code: CodeWatch = machine.board.code
        self.compiler = machine.compiler
        self.threshold = max(1, threshold)
        self.st = S.HartState()
        self.st_addr = ctypes.addressof(self.st)
        self.st.ram_host = machine.ram_host
        self.st.mhartid = hart.hartid
        self.st.ram_size = machine.ram_size
        self.st.codemap = ctypes.addressof(machine.codemap)
        self.st.codebits = machine.codebits_addr
        S.flush_tlb(self.st)
        # data-translation context -> its soft TLBs (state.TlbSet)
        self._tlb_sets: dict[tuple[int, ...], ctypes.Array] = {}
        # ... and the st.tlbgen each was last emptied at: one older than st.tlbgen may
        # hold what a fence since removed, and is emptied before it is used again
        self._tlb_stamps: dict[tuple[int, ...], int] = {}
        self._published: list[tuple[tuple[int, ...], ...]] = []  # keys of st.spaces' sets
        self.st_mv = memoryview(self.st).cast("B")
        self._tlb_key: tuple[int, ...] | None = None
        self._entry: tuple[Any, ...] | None = None  # what _enter last wrote for a context
        self._itlb_for: tuple[Any, ...] | None = None  # (context key, satp) of the I-TLB
        self._dispatch = _DISPATCH(self.compiler.dispatch)
        self._revoke = _REVOKE(self.compiler.revoke)
        self.st.refill = self.compiler.refill
        self.st.clockfn = self.compiler.clock_load
        self.st.kickp = ctypes.addressof(self.compiler.kick)
        self.st.granulefn = self.compiler.granule_clear
        self.st.rangefn = self.compiler.range_clear
        # The console UART's native window (state.UART_*): bytes its THR got natively
        # wait in txbuf until the run ends.
        uart = getattr(machine.board, "uart", None)
        self._uart = uart if hasattr(uart, "native_window") else None
        self._txbuf = (ctypes.c_uint8 * S.TXCAP)()
        self.st.txbuf = ctypes.addressof(self._txbuf)
        self.st.uart_base = getattr(machine.board, "uart_base", 0) if self._uart else 0
        self.console_bytes = 0  # bytes the guest wrote to the UART's THR natively
        self._uart_gen = -1  # uart.gen when st.uart_flags/uart_lsr were last set
        # device accesses from inside native code (_device_access)
        self._bus = getattr(hart.mmu, "bus", None)
        self._device_error: BaseException | None = None
        self._device_fn = _DEVICE(self._device_access)
        if self._bus is not None and machine.native_interp:
            self.st.mmiofn = ctypes.cast(self._device_fn, ctypes.c_void_p).value
        self._traps_for: tuple[int, ...] | None = None  # what st.ctxs were prepared for
        self._ntraps = 0  # st.ntraps when Python last looked
        self._nsatp = 0  # st.nsatp when Python last followed a native satp write
        self._tvecs: tuple[int, int] | None = None  # (stvec, mtvec) as st holds them
        self._cnten: tuple[int, int] | None = None  # (mcounteren, scounteren) as in st
        self.st.rvc = ctypes.addressof(self.compiler.rvc)
        self._dcache = S.new_dcache()
        self.st.dcache = S.buffer_address(self._dcache)
        self.st.counters = ctypes.addressof(machine.counters)
        self.st.known = ctypes.addressof(
            self.compiler.known_map if machine.compiled else _NOTHING_KNOWN)
        self.st.thresh = min(machine.interp_runs, (1 << 32) - 1)
        self._interp = ((self.compiler.interp_bare, self.compiler.interp_tlb)
                        if machine.native_interp else (0, 0))
        # cold code in the native interpreter (else in Python, one instruction at a time)
        self._native_cold = machine.native_interp
        self._ctx: _Context | None = None  # the context of the slice's last stretch
        self._refilled = -1  # pc of the last TLB refill (a second miss there runs in Python)
        # the time CSR, read natively: mtime without counting a read (native reads are
        # counted in the state and handed to the guest clock after each run)
        clint = getattr(machine.board, "clint", None)
        self._clint = clint
        # what the last time read returned, shared with the other harts and Python (the
        # board's; a board without one gets the JIT machine's, shared by its harts)
        cell = getattr(machine.board, "time_last", None)
        if cell is None:
            cell = machine.time_last
        self.st.tlast = ctypes.addressof(cell)
        self._mtime_writes = 0  # clint.mtime_writes when st.mtime was last set
        self._mtime = clint.mtime if clint is not None else None
        self._clock = getattr(machine.board, "clock", None)
        # native loads of the CLINT's mtime read the clock as the time CSR does
        # (native_interp._device), on a board that says where that register is
        if self._mtime is not None:
            self.st.mtimepa = getattr(machine.board, "mtime_pa", 0)
        self._contexts: dict[tuple[int, int, bool], _Context] = {}
        self._vpages: dict[int, dict[int, list[int]]] = {}  # cache id -> vpn -> pcs
        self._op_pool: dict[tuple[int, int], tuple[Any, int]] = {}
        self.native_instructions = 0
        self.native_entries = 0
        self.slow_exits = 0
        self.tlb_fills = 0
        self.irq_exits = 0
        self.ipi_handovers = 0  # slices ended after sending another hart an IPI
        self._invalidated_gone = 0  # invalidations counted by contexts since dropped
        self.deferred = 0  # compiles put off while the compiler was over its budget
        self.inner_regions_put_off = 0  # optimised regions not compiled: inside another
        self._cooled = time.monotonic()  # when run counts were last forgotten (_cool)
        self._coolings = 0
        self.slow_stores = 0  # stores done in Python (a TLB miss Python walks, MMIO, code)
        self.retranslations = 0  # blocks installed again after a write dropped them
        self.baseline_blocks = 0  # baseline blocks built (stencils.py)
        hart.flush_decoded = self.flush
        hart.flush_decoded_page = self.flush_page
        mmu = hart.mmu
        mmu_flush, mmu_flush_page = mmu.flush, mmu.flush_page

        def flush_all() -> None:
            mmu_flush()
            self.flush_tlb()

        def flush_page(vpn: int) -> None:
            mmu_flush_page(vpn)
            self.flush_tlb()

        mmu.flush = flush_all  # type: ignore[method-assign]
        mmu.flush_page = flush_page  # type: ignore[method-assign]
        self._mmu_flush, self._mmu_flush_page = mmu_flush, mmu_flush_page

    def close(self) -> None:
        """The machine stops: the batch being compiled still reaches the disk cache."""
        self.compiler.finish()
        self.machine.closed = True
        if STATS:
            st = self.stats()
            print(f"pyhv jit: hart {self.hart.hartid}: "
                  + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in st.items())
                  + f"; compiler: {self.compiler.blocks_compiled} blocks compiled in "
                  f"{self.compiler.compile_seconds:.2f} s, {self.compiler.blocks_loaded} "
                  "loaded from the disk cache", file=sys.stderr)

    def stats(self) -> dict[str, int]:
        """This hart's counters (``pyhv run --stats``): how much ran natively, and how
        stores met translated code (a pathology shows as many slow stores, blocks
        invalidated by writes and retranslations)."""
        return {
            "native_instructions": self.native_instructions,
            "native_entries": self.native_entries,
            "slow_exits": self.slow_exits,
            "native_stores": self.st.stores,
            "native_stores_near_code": self.st.smcok,
            "slow_path_stores": self.slow_stores,
            "blocks_invalidated_by_writes": self.invalidated,
            # (the machine's CodeWatch: counted once, with hart 0)
            "code_pages_swept": self.code.sweeps if self.hart.hartid == 0 else 0,
            "retranslations": self.retranslations,
            "compiles_deferred": self.deferred,
            "inner_regions_put_off": self.inner_regions_put_off,
            "soft_tlb_fills": self.tlb_fills,
            "irq_exits": self.irq_exits,
            "ipi_handovers": self.ipi_handovers,
            "native_console_bytes": self.console_bytes,
            "native_syscalls": self.st.ntraps,
            "native_page_faults": self.st.nfaults,
            "native_trap_returns": self.st.nrets,
            "native_sbi_calls": self.st.nmtraps,
            "native_mrets": self.st.nmrets,
            "native_device_accesses": self.st.nmmio,
            "native_interrupts": self.st.nirqs,
            "native_satp_writes": self.st.nsatp,
            "baseline_blocks": self.baseline_blocks,
        }

    @property
    def invalidated(self) -> int:
        return self._invalidated_gone + sum(
            c.native.invalidated for c in self._contexts.values())

    # -- caches --------------------------------------------------------------------------
    def flush_tlb(self) -> None:
        """Forget every soft-TLB entry: the current set's, and the parked sets."""
        S.flush_tlb(self.st)
        self._outdate_parked_tlbs()

    def _outdate_parked_tlbs(self) -> None:
        """The TLB sets of other contexts may hold stale entries (a fence, a page that
        now holds code): they are emptied before they are used again (a new count in
        st.tlbgen; the current set stays as it is, stamped with it)."""
        st = self.st
        self._take_space_stamps()
        self._traps_for = None  # native traps and satp writes wait for _prepare_traps
        st.ctxok = 0
        st.spaces[0::4] = [0] * S.NSPACES
        st.tlbgen += 1
        if self._tlb_key in self._tlb_sets:
            self._tlb_stamps[self._tlb_key] = st.tlbgen  # type: ignore[index]

    def _free_parked_tlbs(self) -> None:
        """Too many TLB sets kept: every one but the current set's goes."""
        self._outdate_parked_tlbs()
        keep = self._tlb_key
        for key in [k for k in self._tlb_sets if k != keep]:
            del self._tlb_sets[key]
            self._tlb_stamps.pop(key, None)

    def _tlb_set(self, key: tuple[int, ...]) -> ctypes.Array:
        """The TLB set of data-translation context ``key``, emptied if a fence came
        since it was last (kept from its last use, else a new one)."""
        tlbs = self._tlb_sets.get(key)
        gen = self.st.tlbgen
        if tlbs is None:
            if len(self._tlb_sets) >= MAX_TLB_SETS:
                self._free_parked_tlbs()
                gen = self.st.tlbgen
            tlbs = self._tlb_sets[key] = S.new_tlb_set()
        elif self._tlb_stamps.get(key) != gen:
            ctypes.memset(tlbs, 0xFF, ctypes.sizeof(tlbs))
        self._tlb_stamps[key] = gen
        return tlbs

    def _switch_tlb(self, key: tuple[int, ...]) -> None:
        """Another data-translation context (privilege, MXR, satp): point native code at
        the TLB set of ``key`` (two TLBs: without and with SUM, which the kernel's
        uaccess toggles switch between natively), kept from its last use, else a new
        empty one. A trap into the kernel and back, or a process switch, copies nothing."""
        tlbs = self._tlb_set(key)
        self._tlb_key = key
        st = self.st
        addr = ctypes.addressof(tlbs)
        st.tlbp0, st.tlbp1 = addr, addr + S.TLB_BYTES
        st.dpriv, st.satp = key[0], key[2]  # what the native refill walks with

    def prepare(self) -> None:
        """Make the context the hart's state runs in, with its dispatch table, and the
        trap contexts and TLB sets of its address space, as its first run would. Made
        before a fork (a clone group's machine), their pages stay shared with the
        clones until one writes them."""
        self._context()
        self._prepare_traps()

    def flush(self, all_contexts: bool = True, supervisor: bool = True) -> None:
        """SFENCE.VMA (``all_contexts=False``) or reset: code fetched through
        translation is checked again, page by page, before it runs next (``_verify``);
        a reset forgets all code."""
        for ctx in self._contexts.values():
            if all_contexts:
                ctx.native.clear()
                ctx.ops.clear()
                ctx.heat.clear()
                ctx.nojit.clear()
                ctx.queued.clear()
                ctx.vmap.clear()
                ctx.page_blocks.clear()
                ctx.verified.clear()
                self._vpages.get(ctx.native_id, {}).clear()
            elif ctx.key[1]:
                self._unverify(ctx)
        self.flush_tlb()

    def flush_page(self, vpn: int) -> None:
        """SFENCE.VMA of one page: check that page again before its code runs."""
        for ctx in self._contexts.values():
            if ctx.key[1]:
                ctx.verified.discard(vpn)
        itlb = self.st.itlb
        i = 2 * (vpn & (S.NITLB - 1))
        if itlb[i] == vpn:
            itlb[i] = S.EMPTY_TAG

    def _unverify(self, ctx: _Context) -> None:
        ctx.verified.clear()
        S.flush_itlb(self.st)

    def _verify(self, ctx: _Context, vpn: int) -> None:
        """First run of virtual page ``vpn`` since a fence or satp write: keep its code if
        the page still maps, executable, to the physical page it was fetched from, else
        drop it; then link its native blocks again."""
        ppn = ctx.vmap.get(vpn)
        if ppn is not None:
            try:
                now = self.hart.mmu.walk(vpn << 12, FETCH, ctx.key[0]) >> 12
            except Trap:
                now = -1
            if now != ppn:
                del ctx.vmap[vpn]
                ctx.ops.pop(("v", vpn))
                for pc in self._vpages.get(ctx.native_id, {}).pop(vpn, ()):
                    ctx.native.forget(pc)
        ctx.verified.add(vpn)

    def _current_key(self) -> tuple[int, int, bool]:
        """The translation context: privilege, instruction and data translation."""
        hart = self.hart
        mmu = hart.mmu
        return (hart.priv, 1 if mmu.imode else 0, mmu.dmode)

    def _fetch_pa(self, pc: int) -> int | None:
        try:
            return self.hart.mmu.translate_fetch(pc)
        except Trap:
            return None

    def _context(self) -> _Context:
        return self._context_of(self._current_key())

    def _context_of(self, key: tuple[int, int, bool]) -> _Context:
        ctx = self._contexts.get(key)
        if ctx is None:
            if len(self._contexts) >= MAX_CONTEXTS:
                self._invalidated_gone = self.invalidated
                self.flush()
                for old in self._contexts.values():
                    self.code.caches[old.native_id] = {}
                    self.code.caches[old.op_id] = _OpCache()
                self._contexts.clear()
                self._vpages.clear()
                self._traps_for = None
                self.st.ctxok = 0
            ctx = self._contexts[key] = _Context(self.code, key, self.machine.interp_runs)
        if key[1] and ctx.satp != self.hart.satp:
            self._unverify(ctx)  # another address space: check pages again
            ctx.satp = self.hart.satp
        return ctx

    def _prepare_traps(self) -> None:
        """Both contexts of this address space, U-mode's and S-mode's, for native code
        to switch between at an ECALL from U-mode and an SRET to it (native_interp:
        traps), and M-mode's (untranslated) for an ECALL from S-mode into the firmware
        and its MRET back; their TLB sets are kept from last time or made. Prepared
        again when satp, MXR or the counter enables change, or parked TLB sets were outdated."""
        hart, st = self.hart, self.st
        want = (hart.satp, hart.mstatus & C.MSTATUS_MXR, hart.mcounteren, hart.scounteren)
        if want == self._traps_for:
            return
        st.ctxok = 0
        self._traps_for = None
        if (not hart.satp >> 60 or not self.machine.native_interp
                or len(self._contexts) > MAX_CONTEXTS - 3):
            return
        if len(self._tlb_sets) > MAX_TLB_SETS - 2:
            self._free_parked_tlbs()
        self._take_space_stamps()
        satp, mxr, mcounteren, scounteren = want
        tm = 1 << (C.TIME & 31)
        for priv in (C.PRV_U, C.PRV_S):
            ctx = self._context_of((priv, 1, True))
            tlbs = self._tlb_set((priv, mxr, satp))
            timeok = (self._mtime is not None and bool(mcounteren & tm)
                      and (priv == C.PRV_S or bool(scounteren & tm)))
            i = 4 * priv
            st.ctxs[i:i + 4] = [ctx.table_addr, ctx.runs_addr, ctypes.addressof(tlbs),
                                int(timeok)]
        mctx = self._context_of((C.PRV_M, 0, False))
        st.mctx[:] = [mctx.table_addr, mctx.runs_addr, self._interp[0] or 0,
                      int(self._mtime is not None)]
        st.sinterp = self._interp[1]
        self._publish_spaces(mxr)
        st.ctxok = 1
        self._traps_for = want

    def _publish_spaces(self, mxr: int) -> None:
        """The address spaces whose U- and S-mode TLB sets are kept (this one's among
        them), for a native satp write to switch to (native_interp: satp), with the count of
        fences their sets were last emptied at: a write to one that a fence has passed
        since empties its sets first."""
        sets, stamps, st = self._tlb_sets, self._tlb_stamps, self.st
        spaces: list[int] = []
        published: list[tuple[tuple[int, ...], ...]] = []
        for (priv, m, satp), sset in sets.items():
            if priv == C.PRV_S and m == mxr and satp >> 60:
                ukey = (C.PRV_U, mxr, satp)
                uset = sets.get(ukey)
                if uset is None:
                    continue
                skey = (priv, m, satp)
                # one stamp for both: the older of the two (the write empties both)
                gen = min(stamps.get(ukey, -1), stamps.get(skey, -1)) & M64
                if len(published) < S.NSPACES:
                    spaces += [satp, ctypes.addressof(uset), ctypes.addressof(sset), gen]
                    published.append((ukey, skey))
        st.spaces[:] = spaces + [0] * (4 * S.NSPACES - len(spaces))
        self._published = published

    def _take_space_stamps(self) -> None:
        """Native satp writes and fences emptied the sets of published spaces: their
        stamps come back (so that Python does not empty them again)."""
        sp, stamps = self.st.spaces, self._tlb_stamps
        for i, keys in enumerate(self._published):
            if sp[4 * i]:
                for key in keys:
                    if key in stamps:
                        stamps[key] = max(stamps[key], sp[4 * i + 3])
        self._published = []

    def _native_satp(self) -> None:
        """Native code wrote satp (an S-mode switch to a published address space):
        Python's view of the hart follows, as Hart.csr_write would have left it; the
        prepared contexts now hold that space's TLB sets."""
        hart, st = self.hart, self.st
        self._nsatp = st.nsatp
        hart.satp = st.satp
        hart.mmu.flush()
        hart.mmu.update_mode()
        hart.context_changed = True
        mxr = hart.mstatus & C.MSTATUS_MXR
        self._tlb_key = (st.dpriv, mxr, hart.satp)
        if hart.priv <= C.PRV_S:
            self._itlb_for = ((hart.priv, 1, True), hart.satp)  # emptied natively
        self._traps_for = (hart.satp, mxr, hart.mcounteren, hart.scounteren)
        self._entry = None

    def _flush_tx(self, uart: Any) -> None:
        """Hand the console UART the bytes native code wrote to its THR."""
        st = self.st
        n = st.txn
        st.txn = 0
        self.console_bytes += n
        uart.transmitted(ctypes.string_at(st.txbuf, n))

    def _device_access(self, pa: int, size: int, store: int, value: int) -> int:
        """``state.MMIOFN``: an aligned load or store of the native interpreter to the
        device at ``pa``, done while native code waits (no exit, no copying of the
        hart's state), for devices that allow it (``Device.native_access``): 0 if not
        done (Python then runs the instruction as before), 1 done (a load's value in
        ``mmioval``), 2 done, and native code leaves after the instruction: a store
        raised an interrupt wire of this hart. An interrupt a load raises, or one
        lowered, updates native code's copy of the wires (and pending interrupts then
        leave traps and SIE to Python until the next run)."""
        try:
            assert self._bus is not None  # (mmiofn is set only with a bus)
            hit = self._bus.find(pa, size)
            if hit is None or not hit[0].native_access:
                return 0
            dev, off = hit
            if store and not dev.native_store(off):
                return 0
            clint = self._clint
            hart, st = self.hart, self.st
            wires = hart.mip_hw
            uart = self._uart
            if dev is uart and st.txn:  # what the native window took goes out first
                self._flush_tx(uart)
            if store:
                dev.write(off, size, value & _SIZE_MASK[size])
            else:
                st.mmioval = dev.read(off, size) & _SIZE_MASK[size]
            if dev is uart:  # what the native window may do now
                self._uart_gen = uart.gen
                st.uart_flags, st.uart_lsr = uart.native_window()
            now = hart.mip_hw
            if now != wires:
                st.miphw = now
                if now & ~wires:
                    st.irqpend = st.irqsie = 1
                    return 2
            if dev is clint and clint.ipi_sent:
                return 2  # an IPI to another hart: the slice is handed over after it
            return 1
        except BaseException as e:  # noqa: BLE001 - raised in Python after the run
            self._device_error = e
            return 0

    def _handover_after_ipi(self) -> bool:
        """The hart just sent another one an IPI (CLINT msip): its slice ends, so that
        the other hart runs now (an IPI is usually waited for). Whether it did."""
        clint = self._clint
        if clint is not None and getattr(clint, "ipi_sent", False):
            clint.ipi_sent = False
            self.ipi_handovers += 1
            self.ended = True
            return True
        return False

    def _native_switch(self) -> None:
        """Native code trapped from U-mode into S-mode, from S-mode into M-mode, or
        returned (native_interp: traps): Python's view of the hart follows. (M-mode's
        data accesses are untranslated: the soft TLB in use stays the one it left.)"""
        hart, st = self.hart, self.st
        hart.priv = st.priv
        hart.mmu.update_mode()
        hart.context_changed = True
        self._tlb_key = (st.dpriv, hart.mstatus & C.MSTATUS_MXR, hart.satp)
        if hart.priv <= C.PRV_S:
            self._itlb_for = ((hart.priv, 1, True), hart.satp)  # emptied natively
        self._entry = None

    def _register(self, cid: int, pc: int, spans: tuple[tuple[int, int, int], ...],
                  vpns: set[int]) -> None:
        """Entry ``pc`` of cache ``cid`` came from the physical bytes ``spans`` ((ppn,
        offset, size)), fetched through the virtual pages ``vpns``."""
        for ppn, off, size in spans:
            self.code.add(ppn, cid, pc, off, size)
        if self.hart.mmu.imode:
            vpages = self._vpages.setdefault(cid, {})
            for vpn in vpns:
                vpages.setdefault(vpn, []).append(pc)

    # -- fetching --------------------------------------------------------------------------
    def _fetch(self, pc: int) -> tuple[int, int, tuple[int, ...]]:
        """(instruction word, length, physical page of each half) at ``pc``; raises
        fetch faults."""
        mmu = self.hart.mmu
        pa = mmu.translate_fetch(pc)
        m = self.machine
        off = pa - m.ram_base
        if 0 <= off < m.ram_size - 4 and (pa & 0xFFF) < 0xFFD:  # RAM, within a page
            mv = m.ram_mv
            lo = mv[off] | mv[off + 1] << 8
            if lo & 3 == 3:
                return lo | (mv[off + 2] | mv[off + 3] << 8) << 16, 4, (pa >> 12,)
            return lo, 2, (pa >> 12,)
        lo, pa = mmu.fetch16(pc)
        if lo & 3 == 3:
            hi, pa2 = mmu.fetch16((pc + 2) & M64)
            return lo | hi << 16, 4, (pa >> 12, pa2 >> 12)
        return lo, 2, (pa >> 12,)

    def _decode_op(self, pc: int, ctx: _Context) -> tuple[Any, int]:
        word, length, ppns = self._fetch(pc)
        # The closure for an instruction depends only on its pc and bytes: contexts (other
        # address spaces running the same program, code dropped by a fence) share it.
        entry = self._op_pool.get((pc, word))
        npc = (pc + length) & M64
        if entry is None:
            d = _decode(word, length)
            op = make_op(self.hart, d, pc)
            # A stretch also ends after an instruction native code does not do, so that
            # what follows it starts a stretch of its own, gets heat and is compiled.
            ends = (d.name in _ENDS_COLD or not codegen.supported(d)
                    or npc >> 12 != pc >> 12)
            entry = (op, -1 if ends else npc)
            if len(self._op_pool) >= 1 << 20:
                self._op_pool.clear()
            self._op_pool[(pc, word)] = entry
        vpns = (pc >> 12, ((pc + 2) & M64) >> 12) if len(ppns) == 2 else (pc >> 12,)
        if ctx.key[1]:
            # Fetched through translation: remember where each page mapped (an
            # instruction straddling two pages is registered under both, so a change
            # of either drops it). Code of a page that maps elsewhere than its other
            # code came from runs, but is not kept.
            vmap = ctx.vmap
            for vpn, ppn in zip(vpns, ppns, strict=True):
                if vmap.setdefault(vpn, ppn) != ppn:
                    return entry
        ops = ctx.ops
        ops[pc] = entry
        spans = insn_spans((ppns[0] << 12) | (pc & 0xFFF), length, ppns)
        for vpn, (ppn, off, size) in zip(vpns, spans, strict=False):  # one span: one page
            ops.pages.setdefault(vpn, []).append(pc)
            self.code.add(ppn, ctx.op_id, ("v", vpn), off, size)
        return entry

    def _code_pa(self, ctx: _Context, start: int) -> int | None:
        """The physical address of the code at ``start`` if a block may be made of it:
        None on a fetch fault (the cold path raises it) or outside RAM (never compile
        code from devices, such as the boot ROM: the start is marked ``nojit``)."""
        try:
            pa = self.hart.mmu.translate_fetch(start)
        except Trap:
            return None
        m = self.machine
        if not m.ram_base <= pa & ~0xFFF < m.ram_base + m.ram_size:
            ctx.nojit.add(start)
            return None
        return pa

    def _scan(self, start: int, pa: int, supervisor: bool, region: bool = False
              ) -> tuple[list[tuple[int, Decoded]], bytes]:
        """The native block at ``start`` (physical ``pa``, in RAM; blocks never leave
        its page): its instructions and their bytes; with ``region``, the region
        there (for an optimised block: see below)."""
        m = self.machine
        off = pa - m.ram_base
        end = (off | 0xFFF) + 1
        mv = m.ram_mv
        insns: list[tuple[int, Decoded]] = []
        pc = start
        o = off
        # A region goes on past its first branch or jump while code ahead can still be
        # reached from within it (``ahead``: the furthest forward branch target seen,
        # within REGION_REACH of the start); if in the end none of its branches lands
        # on its own instructions, it ends at the first one, as a block. Regions are
        # for optimised blocks only: they take ~2.5x a block's compile time (~6 ms
        # quick, ~40 ms optimised for 64 instructions of branchy code), which cold
        # code waiting for its quick blocks cannot afford, and pay back in hot loops
        # (one function, branches within it: memcmp's loop 1.3x faster whole-process).
        first = 0
        ahead = start
        reach = start + codegen.REGION_REACH
        while (len(insns) < codegen.MAX_INSNS
               or not first and len(insns) < codegen.MAX_STRAIGHT) and o + 2 <= end:
            lo = mv[o] | mv[o + 1] << 8
            if lo & 3 == 3:
                if o + 4 > end:
                    break  # straddles the page end
                d, ok, ends = _scanned(lo | (mv[o + 2] | mv[o + 3] << 8) << 16, 4, supervisor)
            else:
                d, ok, ends = _scanned(lo, 2, supervisor)
            if not ok:
                break
            insns.append((pc, d))
            o += d.length
            if ends:
                if not first:
                    first = len(insns)
                if d.name != "jalr":
                    target = (pc + d.imm) & M64
                    if pc < target < reach and target >> 12 == start >> 12:
                        ahead = max(ahead, target)
                if region and (d.name != "jalr" and d.name != "jal" or ahead > pc):
                    pc = (pc + d.length) & M64
                    continue
                break
            pc = (pc + d.length) & M64
        if first and len(insns) > first and not codegen.internal_edges(start, insns):
            insns = insns[:first]
        if insns:
            last_pc, last_d = insns[-1]
            o = off + (last_pc - start) + last_d.length
        return insns, bytes(mv[off:o])

    def _jit(self, ctx: _Context, start: int, compile_now: bool,
             runs: Callable[[], int] | None = None, idle: bool = False) -> bool:
        """Install the native block at ``start`` if it exists (this process or the disk
        cache); else, with ``compile_now``, queue it for the compiler (``idle``: for
        when it has nothing else to do). True if installed."""
        if not self.machine.compiled:
            return False
        m = self.machine
        pa = self._code_pa(ctx, start)
        if pa is None:
            return False
        page = pa & ~0xFFF
        sup = ctx.key[0] == C.PRV_S
        comp = self.compiler
        if not compile_now:
            # A start compiled before (this process or the disk cache): find the block by
            # its bytes, without decoding them.
            mode = f"{int(ctx.translated)}{int(sup)}"
            off = pa - m.ram_base
            room = 0x1000 - (pa & 0xFFF)
            for shape, length in comp.starts.get(start, ()):
                if shape != mode or length > room:
                    continue
                key = block_key(ctx.translated, start, bytes(m.ram_mv[off:off + length]), sup,
                                bool(self._clock_pcs(ctx, start, length)))
                found = comp.find(key)
                if found is None:
                    continue
                return self._install(ctx, start, page, found, length)
            return False
        cached = m.scans.get((start, pa, sup))
        if cached is not None and m.ram_mv[pa - m.ram_base:pa - m.ram_base + len(cached[1])] \
                == cached[1]:
            insns, raw = cached
        else:
            insns, raw = m.scans[(start, pa, sup)] = self._scan(start, pa, sup)
        if not insns:
            ctx.nojit.add(start)
            return False
        clock = self._clock_pcs(ctx, start, len(raw))
        key = block_key(ctx.translated, start, raw, sup, bool(clock))
        found = comp.find(key)
        if found is not None:
            return self._install(ctx, start, page, found, len(raw))
        if start in ctx.queued:
            return False
        ctx.queued.add(start)
        # the native interpreter stops asking about it while it waits (native_interp)
        ctx.runs[native_interp.heat_index(start)] |= native_interp.WAITING
        translated = ctx.translated

        def ir() -> str:  # made by the compiler's thread
            return codegen.block_ir(f"b{key}", start, insns, translated, counted=True,
                                    clock=clock)

        def done(addr: int) -> None:
            ctx.queued.discard(start)
            ctx.runs[native_interp.heat_index(start)] &= native_interp.WAITING - 1
            if m.closed:
                return  # its machine is gone (RAM unmapped)
            # Still wanted? The context may be gone, the page rewritten, or the block
            # installed by another route meanwhile.
            off = pa - m.ram_base
            if (self._contexts.get(ctx.key) is ctx
                    and (start not in ctx.native or start in ctx.native.baseline)
                    and self._current_key() == ctx.key and self._fetch_pa(start) == pa
                    and m.ram_mv[off:off + len(raw)] == raw):
                self._install(ctx, start, page, (addr, False), len(raw))

        n = len(insns)
        if runs is None:
            counts, hi = ctx.runs, native_interp.heat_index(start)
            runs = lambda: counts[hi] & (native_interp.WAITING - 1)  # noqa: E731
        comp.submit(key, ir, done, heat=lambda: runs() * n, idle=idle)
        if self.machine.sync:
            comp.poll(wait=True)
            return start in ctx.native
        return False

    def _clock_pcs(self, ctx: _Context, start: int, length: int) -> frozenset[int]:
        """The loads of the block at ``start`` (``length`` bytes) that read mtime
        natively (bare mode: the only one where compiled loads call the clock)."""
        marks = self.machine.clock_loads
        if not marks or ctx.translated:
            return frozenset()
        return frozenset(pc for pc in marks if start <= pc < start + length)

    def _clock_read(self, pc: int) -> None:
        """A compiled load at ``pc`` left its block to read the CLINT's mtime (the
        native interpreter or Python read it): it is
        compiled to read it natively from now on, so the blocks holding it are dropped,
        to be found again (in the code cache, under their key with the clock) or
        compiled."""
        marks = self.machine.clock_loads
        if pc in marks:
            return
        marks.add(pc)
        for c in self._contexts.values():
            if c.translated:
                continue
            for start, raw in list(c.page_blocks.get(pc >> 12, {}).items()):
                if start <= pc < start + len(raw) and start in c.native:
                    c.native.forget(start)

    def _reoptimise(self, ctx: _Context, start: int,
                    heat: Callable[[], int] | None = None) -> None:
        """The quickly compiled (or baseline) block at ``start`` ran codegen.OPT_AFTER
        instructions: have it compiled again, optimised, and swap it in when it is
        ready (if its code and mapping are still what it was compiled from). ``heat``:
        its instructions run since (a quick block's are found here)."""
        native = ctx.native
        if start in native.optimised or start not in native:
            return
        # (no compile budget here: a block that ran OPT_AFTER instructions will run
        # more, and optimised it runs ~2x faster)
        native.optimised.add(start)
        ppn = native[start][1]
        m = self.machine
        pa = (ppn << 12) | (start & 0xFFF)
        off = pa - m.ram_base
        sup = ctx.key[0] == C.PRV_S
        cached = m.scans.get((start, pa, sup, True))
        if cached is not None and m.ram_mv[off:off + len(cached[1])] == cached[1]:
            insns, raw = cached
        else:
            insns, raw = m.scans[(start, pa, sup, True)] = self._scan(start, pa, sup, True)
        if not insns:
            return
        clock = self._clock_pcs(ctx, start, len(raw))
        key = block_key(ctx.translated, start, raw, sup, bool(clock)) + OPT
        comp = self.compiler

        def done(addr: int) -> None:
            if m.closed:
                return
            now = native.get(start)
            if (self._contexts.get(ctx.key) is ctx and now is not None and now[1] == ppn
                    and m.ram_mv[off:off + len(raw)] == raw):
                # (a region may cover more bytes than the quick block it replaces)
                self._register(ctx.native_id, start, ((ppn, start & 0xFFF, len(raw)),),
                               {start >> 12})
                ctx.page_blocks.setdefault(start >> 12, {})[start] = raw
                native.baseline.pop(start, None)  # (a baseline block's region: it is gone)
                native.replace(start, addr)

        found = comp.find(key[:-len(OPT)])
        if found is not None and found[1]:
            done(found[0])
            return
        regions = native.regions.setdefault(start >> 12, {})
        if start not in native.put_off and not _after_call(m.ram_mv, off, start) and any(
                lo < start < hi for lo, (hi, _key) in regions.items()):
            # Inside a region compiled (or queued) from an earlier start, which runs this
            # code from now on: a loop's inner blocks each ran hot before the region that
            # holds them was ready, and each region of them took as long to compile
            # (the clock program: four regions of the same 200 bytes, ~40 ms each). The
            # block asks again after codegen.RECOUNT more instructions if it still runs
            # (entered from outside: a region's exit mid-loop), and gets its own then.
            # Not a return address: every return enters there (_after_call).
            native.put_off.add(start)
            native.optimised.discard(start)
            self.inner_regions_put_off += 1
            return
        end = start + len(raw)
        for inner, (_hi, inner_key) in list(regions.items()):
            # ... and the regions of such blocks still waiting in the queue when the one
            # holding them asks: withdrawn, put off the same way
            if (start < inner < end and not _after_call(m.ram_mv, off - start + inner, inner)
                    and comp.withdraw(inner_key)):
                del regions[inner]
                native.put_off.add(inner)
                native.optimised.discard(inner)
                self.inner_regions_put_off += 1
        regions[start] = (end, key)
        translated = ctx.translated
        # its heat: what its quick block has run since it asked (Compiler._worth_first)
        quick = ctx.page_blocks.get(start >> 12, {}).get(start)
        if heat is None and quick is not None and start not in native.baseline:
            counters = m.counters
            i = codegen.counter_index("b" + block_key(
                translated, start, quick, sup, bool(self._clock_pcs(ctx, start, len(quick)))))
            at = counters[i]
            heat = lambda: counters[i] - at  # noqa: E731 - the queue calls it later
        comp.submit(key, lambda: codegen.block_ir(f"b{key}", start, insns, translated,
                                                  clock=clock), done,
                    heat=heat)
        if self.machine.sync:
            comp.poll(wait=True)

    def _install(self, ctx: _Context, start: int, page: int, found: tuple[int, bool],
                 length: int) -> bool:
        """Link the native block at ``start`` (physical page ``page``, ``length`` bytes of
        code; ``found``: its address and whether it is the optimised version); False if
        the virtual page's code came from another physical page (it stays cold)."""
        addr, optimised = found
        if ctx.key[1]:
            vpn = start >> 12
            if vpn not in ctx.verified:
                self._verify(ctx, vpn)
            if ctx.vmap.setdefault(vpn, page >> 12) != page >> 12:
                return False
        self._register(ctx.native_id, start, ((page >> 12, start & 0xFFF, length),),
                       {start >> 12})
        off = page - self.machine.ram_base + (start & 0xFFF)
        blocks = ctx.page_blocks.get(start >> 12)
        if blocks is None:
            blocks = ctx.page_blocks[start >> 12] = {}
        blocks[start] = bytes(self.machine.ram_mv[off:off + length])
        if start in ctx.native.dropped:
            ctx.native.dropped.discard(start)
            self.retranslations += 1
        if start in ctx.native.baseline:  # its LLVM block replaces the baseline one
            ctx.native.forget(start, rearm=False)
        ctx.native.install(start, addr, page >> 12)
        if optimised:
            ctx.native.optimised.add(start)
        return True

    # -- native runs -------------------------------------------------------------------------
    def _enter(self, ctx: _Context, budget: int) -> tuple[int, int]:
        """Run native code from hart.pc; return (instructions retired, exit code)."""
        hart, st = self.hart, self.st
        mmu = hart.mmu
        ms = hart.mstatus
        if mmu.dmode:
            key = (mmu.dpriv, ms & C.MSTATUS_MXR, hart.satp)
            if key != self._tlb_key:
                self._switch_tlb(key)
        st.tlbp = st.tlbp1 if mmu.dpriv == C.PRV_S and ms & C.MSTATUS_SUM else st.tlbp0
        mv = self.st_mv
        _REGS.pack_into(mv, S.X, *hart.x)
        _CSRS.pack_into(mv, S.CSRS, hart.mscratch, hart.sscratch, hart.mepc,
                        hart.sepc, hart.mcause, hart.scause, hart.mtval, hart.stval)
        # the F registers always (native code may turn FS on), FP enabled while FS is on
        _REGS.pack_into(mv, S.F, *hart.f)
        st.fpmode = (S.FP_ENABLED if ms & C.MSTATUS_FS else 0) | (
            S.FP_RNE if hart.frm == 0 else 0)
        st.fflagsin, st.frm = hart.fflags, hart.frm  # (native fcsr accesses: native_interp)
        _PC_BUDGET.pack_into(mv, S.PC, hart.pc, budget)
        st.instretb = (hart.instret + budget) & M64
        cnten = (hart.mcounteren, hart.scounteren)
        if cnten != self._cnten:
            self._cnten = cnten
            st.mcnten, st.scnten = cnten
        # What depends only on the context, the privilege and satp: written when one of
        # them changed since the last run (most runs follow one in the same context).
        entry = (ctx, hart.priv, hart.satp, mmu.dmode, hart.yield_on_pause)
        if entry != self._entry:
            self._entry = entry
            st.satp = hart.satp  # (what a native satp read returns)
            st.table = ctx.table_addr
            st.priv = hart.priv
            st.heat = ctx.runs_addr
            st.interp = self._interp[1 if mmu.dmode else 0]
            st.yield_ = hart.yield_on_pause
            if ctx.key[1]:
                st.ichk = 1
                st.ipriv = hart.priv
                st.satp = hart.satp
                if self._itlb_for != (ctx.key, hart.satp):
                    S.flush_itlb(st)  # checked for another context or address space
                    self._itlb_for = (ctx.key, hart.satp)
            else:
                st.ichk = 0
        resv = hart.reservation
        st.resv = M64 if resv is None else resv
        st.mstatus = ms
        st.mie, st.mip, st.miphw, st.mideleg = hart.mie, hart.mip, hart.mip_hw, hart.mideleg
        if (hart.priv == C.PRV_S and not ms & C.MSTATUS_SIE
                and (hart.mip | hart.mip_hw) & hart.mie):
            # Would setting SIE let a pending interrupt in? (Then native code exits.)
            hart.mstatus = ms | C.MSTATUS_SIE
            st.irqsie = hart.interrupt_to_take() is not None
            hart.mstatus = ms
        else:
            st.irqsie = 0
        if (ctx.key[1] and hart.priv <= C.PRV_S) or (
                hart.priv == C.PRV_M and not mmu.dmode and hart.satp >> 60):
            self._prepare_traps()
            st.medeleg = hart.medeleg
            st.irqpend = 1 if (hart.mip | hart.mip_hw) & hart.mie else 0
            st.satp = hart.satp  # (what an MRET's context translates with)
        else:
            st.ctxok = 0
            self._traps_for = None
        tvecs = (hart.stvec, hart.mtvec)
        if tvecs != self._tvecs:  # (native traps go there; native writes come back)
            self._tvecs = tvecs
            st.stvec, st.mtvec = tvecs
        uart = self._uart
        if uart is not None and uart.gen != self._uart_gen:
            self._uart_gen = uart.gen
            st.uart_flags, st.uart_lsr = uart.native_window()
        tlbp0 = st.tlbp0
        code = self._dispatch(self.st_addr)
        if uart is not None and st.txn:  # sent before Python does anything else
            self._flush_tx(uart)
        if st.mstatus != ms:
            changed = st.mstatus ^ ms
            hart.mstatus = st.mstatus
            if changed & (C.MSTATUS_SUM | C.MSTATUS_MXR):
                mmu.update_mode()  # Python's TLBs are kept per SUM too
        if st.tvdirty:
            st.tvdirty = 0
            hart.stvec, hart.mtvec = self._tvecs = (st.stvec, st.mtvec)
        if st.nsatp != self._nsatp:
            self._native_satp()
        if st.priv != hart.priv:
            self._native_switch()
        elif st.tlbp0 != tlbp0:  # there and back (M -> S -> M): another TLB set in use
            self._tlb_key = (st.dpriv, hart.mstatus & C.MSTATUS_MXR, hart.satp)
        hart.x[:] = _REGS.unpack_from(mv, S.X)
        pc, left = _PC_BUDGET.unpack_from(mv, S.PC)
        hart.pc = pc
        if st.csrdirty:
            st.csrdirty = 0
            (hart.mscratch, hart.sscratch, hart.mepc, hart.sepc, hart.mcause, hart.scause,
             hart.mtval, hart.stval) = _CSRS.unpack_from(self.st_mv, S.CSRS)
        resv = st.resv
        hart.reservation = None if resv == M64 else resv
        if st.fsdirty or st.fcopy:
            hart.f[:] = _REGS.unpack_from(mv, S.F)
            if st.fsdirty:
                hart.mstatus |= _FS_DIRTY
            st.fsdirty = st.fcopy = 0
        if st.fcsrw:  # native code wrote fflags, frm or fcsr (native_interp.fp_csrs)
            st.fcsrw = 0
            hart.frm = st.frm
            hart.fflags = (st.fflagsin | st.fflags) & 31
            st.fflags = 0
        elif st.fflags:
            hart.fflags |= st.fflags
            st.fflags = 0
        if st.irqdirty:  # mie, sie, mip or sip written natively
            st.irqdirty = 0
            hart.mie, hart.mip = st.mie, st.mip
        if st.sfpend:
            self._native_fences()
        if st.clockpc:  # a block left at a load of mtime there (the dispatcher noted it)
            self._clock_read(st.clockpc)
            st.clockpc = 0
        traps = st.ntraps + st.nfaults + st.nmtraps + st.nirqs
        if traps != self._ntraps:  # (the last, for diagnostics)
            self._ntraps = traps
            hart.prev_trap, hart.last_trap = hart.last_trap, (st.tcause, st.ttval, st.tpc)
        n = budget - left
        self.native_instructions += n
        self.native_entries += 1
        return n, code

    def _native_fences(self) -> None:
        """Native code did SFENCE.VMA (and emptied its own TLBs): Python's TLB and its
        record of checked code pages follow (what the instruction does in Python)."""
        st = self.st
        pend, n = st.sfpend, st.sfn
        st.sfpend = st.sfn = 0
        if pend & S.SF_ALL:
            self._mmu_flush()
            self.flush(all_contexts=False, supervisor=bool(pend & S.SF_SUP))
        else:
            for vpn in st.sfvpn[:n]:
                self._mmu_flush_page(vpn)
                self.flush_page(vpn)
            self._outdate_parked_tlbs()

    def _fill(self) -> bool:
        """After a slow exit: refill the soft TLB if that is all it takes."""
        st, mmu = self.st, self.hart.mmu
        if not mmu.dmode:
            return False
        va, access = st.exit_vaddr, st.exit_access
        if access not in (1, 2):
            return False
        try:
            pa = mmu.translate(va, STORE if access == 2 else LOAD)
        except Trap:
            return False
        page = pa & ~0xFFF
        m = self.machine
        if not m.ram_base <= page < m.ram_base + m.ram_size:
            return False
        vpn = va >> 12
        idx = vpn & (S.NTLB - 1)
        e = S.TlbEntry.from_address(st.tlbp + idx * S.TLB_ENTRY)
        addend = (m.ram_host + (page - m.ram_base) - (vpn << 12)) & M64
        if e.addend != addend or e.rtag != vpn:
            e.wtag = S.INVALID_TLB
        e.addend = addend
        e.rtag = vpn
        if access == 2:
            if self.code.masks.get(pa >> 12):
                # A page holding code: each store checks its granule (codegen.REFILL).
                e.wtag = vpn | S.CODE_TAG
                if self.code.holds_code(pa, 1):
                    return False  # over code: Python stores and drops what it overlaps
            else:
                e.wtag = vpn
        self.tlb_fills += 1
        return True

    # -- the run loop --------------------------------------------------------------------------
    # -- the run loop's strategy (cpu/run_loop.py) -----------------------------------------
    def begin(self, budget: int) -> None:
        self._ctx = None
        self._refilled = -1
        if self._native_cold:
            self._sync_time()
            now = time.monotonic()
            if now - self._cooled >= COOL_PERIOD:
                self._cool(now)

    def end(self) -> None:
        st = self.st
        if st.treads:
            if self._clock is not None and hasattr(self._clock, "time_reads"):
                self._clock.time_reads += st.treads
            st.treads = 0

    def stretch(self, n: int) -> int:
        if self._native_cold:
            return self._stretch_native(n)
        return self._stretch_python(n)

    def _current(self) -> _Context:
        """The context to run in: the last one, unless privilege, satp or mstatus moved."""
        hart = self.hart
        ctx = self._ctx
        if ctx is None or hart.context_changed:
            hart.context_changed = False
            ctx = self._ctx = self._context()
            if self._native_cold:
                self.st.timeok = 1 if self._mtime and hart._counter_allowed(C.TIME) else 0
        return ctx

    def _stretch_python(self, n: int) -> int:  # noqa: C901 - one stretch, in order
        """Native blocks where there are, cold code in Python up to its next block."""
        hart = self.hart
        comp = self.compiler
        threshold = self.threshold
        if comp._done or comp._batch or comp._batch_opt or comp._batch_idle:
            comp.poll()
        ctx = self._current()
        native = ctx.native
        pc = hart.pc
        if ctx.key[1] and pc >> 12 not in ctx.verified:
            self._verify(ctx, pc >> 12)
        done = 0
        op: Any = None
        step = False
        start: int | None = None
        h = first = 0
        heat = ctx.heat
        try:
            if pc in native:
                native.link(pc)
                k, code = self._enter(ctx, n)
                done += k
                if code != S.EXIT_SLOW:
                    if code == S.EXIT_IRQ:
                        self.irq_exits += 1
                    elif code == S.EXIT_OPT:
                        self._reoptimise(ctx, self.st.exit_vaddr)
                    elif code == S.EXIT_YIELD:
                        self.ended = True
                        return done
                    if code != S.EXIT_LOOKUP or k or hart.pc != pc:
                        return done
                    # Native code would not run this block (its page did not
                    # check out natively): one instruction in Python moves on.
                else:
                    self.slow_exits += 1
                    pc = hart.pc
                    if pc != self._refilled and self._fill():
                        self._refilled = pc
                        return done
                    if self.st.exit_access == 2:
                        self.slow_stores += 1
                step = True  # run the instruction that exited in Python
            self._refilled = -1
            h = heat.get(pc, 0)
            if h == 0 and not step and pc in comp.starts and pc not in ctx.nojit:
                if self._jit(ctx, pc, compile_now=False):
                    return done  # compiled before (another hart, machine or run)
            start = pc
            first = done
            oget = ctx.ops.get
            while True:
                o = oget(pc)
                if o is None:
                    o = self._decode_op(pc, ctx)
                op, nx = o
                pc = op()
                done += 1
                if pc != nx or done >= n or step or pc in native:
                    break
            hart.pc = pc
            if not step:
                self._heated(ctx, start, h + done - first, threshold, wait=True)
            return done
        except SLICE_EXITS as x:
            self.at = (done, pc, op, getattr(op, "npc", pc))
            if isinstance(x, SliceBreak) and start is not None and not step:
                # a stretch ending in a CSR write or fence still heats its start
                self._heated(ctx, start, h + done + 1 - first, threshold, wait=False)
            raise

    def _heated(self, ctx: _Context, start: int, h: int, threshold: int, wait: bool) -> None:
        """The cold stretch from ``start`` has run ``h`` instructions in all: compile it
        once that reaches the threshold."""
        ctx.heat[start] = h
        if h >= threshold and start not in ctx.native and start not in ctx.nojit:
            if wait and start in ctx.queued and h >= threshold * STUCK:
                # The guest keeps running this block cold while it waits for the
                # compiler: waiting costs less than running it in Python.
                self.compiler.wait_until(_left_queue(ctx.queued, start))
            else:
                self._jit(ctx, start, compile_now=True)

    # -- the run loop with the native interpreter -------------------------------------------
    def _hot(self, ctx: _Context, pc: int) -> None:
        """The native interpreter found the stretch start ``pc`` hot (or its first run,
        with a block for it perhaps in the code cache): install, build or queue its
        block; or the baseline block at ``pc`` asks (its counter reached its lim)."""
        if pc in ctx.native:
            if pc in ctx.native.baseline:
                self._promote(ctx, pc)
            else:
                ctx.native.link(pc)  # known, but pushed out of its table slots
            return
        if pc in ctx.nojit or pc in ctx.queued:
            return
        if ctx.key[1] and pc >> 12 not in ctx.verified:
            self._verify(ctx, pc >> 12)
        # Machine code for these very bytes (the same program exec'd again into pages
        # that held it, a block dropped and its bytes written back) costs nothing to
        # link: no back-off for it, only for what would have to be compiled again.
        if pc in self.compiler.starts and self._jit(ctx, pc, compile_now=False):
            self._relink_page(ctx, pc)
            return
        i = native_interp.heat_index(pc)
        if ctx.native.backoff(pc):
            m = self.machine
            if m.interp_runs < m.hot_runs:
                # (with the baseline tier the start asks at interp_runs: it waits rounds
                # of hot_runs all the same)
                ctx.runs[i] = (m.interp_runs - m.hot_runs + 1) & 0xFFFFFFFF
            return
        if self.machine.baseline is not None:
            # (code that writes were dropping, a JIT's inside the guest, goes on as
            # without the tier: built at once, it would only be dropped again)
            if (pc not in ctx.native.drops
                    and (self.machine.always_baseline or not self.compiler.mostly_cached())
                    and self._baseline(ctx, pc)):
                return
            # No baseline block starts here (its first instruction is not a fast op; or
            # none is built): its LLVM block after hot_runs runs, as without the tier
            # (at once if the start asked later than that). The run counter
            # is set back (modulo 2**32: it asks when it equals the threshold) so that
            # the start asks again only then.
            if pc not in ctx.unbased:
                ctx.unbased.add(pc)
                rest = min(self.machine.hot_runs - self.machine.interp_runs, 1 << 31)
                if rest > 0:
                    ctx.runs[i] = (self.machine.interp_runs - rest) & 0xFFFFFFFF
                    return
            ctx.runs[i] = self.machine.hot_runs
        if ctx.runs[i] >= self.machine.hot_runs:
            if self.compiler.over_budget() and not self.machine.sync and self._defer(ctx, pc, i):
                return
            self._jit(ctx, pc, compile_now=True)

    def _defer(self, ctx: _Context, pc: int, i: int) -> bool:
        """The compiler is over its budget: put off compiling the hot stretch start
        ``pc`` (heat slot ``i``), unless it runs so much of the guest's time that its
        block is worth compiling at once. The budget is for the many blocks of lukewarm
        code (a Linux boot's); a program's hot loop that starts after it is spent
        (md5sum's rounds after a boot) would otherwise run interpreted, at a fifth of
        its compiled speed, for as long as it runs. So a start put off asks again after
        ~ASK_INSNS more of its instructions (within the same cooling period: lukewarm
        code does not get there), and its rate between the two asks decides: HOT_IPS
        guest instructions a second or more, and it is compiled. Returns whether it
        was put off."""
        now = time.monotonic()
        seen = ctx.deferred.get(pc)
        if seen is None:
            pa = self._code_pa(ctx, pc)
            if pa is None:
                return False  # (_jit marks it or leaves the fault to the cold path)
            if len(ctx.deferred) >= 1 << 16:
                ctx.deferred.clear()
            n = max(1, len(self._scan(pc, pa, ctx.key[0] == C.PRV_S)[0]))
        else:
            when, n, base = seen
            if when < self._cooled:  # its count started again from 0 at the cooling
                when, base = self._cooled, 0
            if (ctx.runs[i] - base) * n >= HOT_IPS * max(now - when, 1e-4):
                del ctx.deferred[pc]
                return False
        self.deferred += 1
        # and new starts ask less often while the compiler is over its budget (each ask
        # is a trip to Python): the threshold doubles until the next cooling
        st = self.st
        st.thresh = min(st.thresh * 2, MAX_THRESH)
        base = max(1, st.thresh - -(-ASK_INSNS // n))
        ctx.runs[i] = base
        ctx.deferred[pc] = (now, n, base)
        return True

    def _baseline(self, ctx: _Context, start: int) -> bool:
        """Build and link a baseline block at ``start``: its fast ops up to its first
        control transfer, an instruction it does not do, or its page's end. False if
        none can start there."""
        m = self.machine
        bl = m.baseline
        assert bl is not None
        pa = self._code_pa(ctx, start)
        if pa is None:
            return False
        # its quick block's scan (kept for it: _jit), up to the first instruction that
        # is no fast op
        sup = ctx.key[0] == C.PRV_S
        off = pa - m.ram_base
        cached = m.scans.get((start, pa, sup))
        if cached is not None and m.ram_mv[off:off + len(cached[1])] == cached[1]:
            insns, raw = cached
        else:
            insns, raw = m.scans[(start, pa, sup)] = self._scan(start, pa, sup)
        for k, (at, d) in enumerate(insns):
            if not bl.supported(d):
                insns, raw = insns[:k], raw[:at - start]
                break
        if not insns:
            return False
        pc = (start + len(raw)) & M64
        n = len(insns)
        # its first ask: for its quick block, or (asked for at once) its region
        quick_after = m.hot_runs - m.interp_runs
        lim = min(quick_after if quick_after > 0 else _region_runs(n), (1 << 31) - 1)
        built = bl.build(ctx.translated, insns, start, pc, lim)
        if built is None and bl.arena.full(stencils.MAX_BLOCK_BYTES):
            m.reset_baseline()
            built = bl.build(ctx.translated, insns, start, pc, lim)
        if built is None:
            return False
        addr, counter = built
        if not self._install(ctx, start, pa & ~0xFFF, (addr, False), len(raw)):
            return False
        based = ctx.native.baseline[start] = _Based(counter, n, lim, quick_after <= 0)
        self.baseline_blocks += 1
        if based.quick:
            self._ask_quick(ctx, start, based)
        return True

    def _ask_quick(self, ctx: _Context, start: int, based: _Based) -> None:
        """Queue the quick LLVM block of the baseline block at ``start``, to be compiled
        while the compiler has nothing else to do (unless it is over its budget)."""
        if self.compiler.over_budget() and not self.machine.sync:
            self.deferred += 1
        elif start not in ctx.queued:
            counter, n, v0 = based.counter, based.n, based.counter.value
            self._jit(ctx, start, compile_now=True, idle=True,
                      runs=lambda: (counter.value - v0) % (1 << 32) * n)

    def _promote(self, ctx: _Context, start: int) -> None:
        """The baseline block at ``start`` asks (its counter reached its ``lim``). Its
        quick LLVM block is asked for once (after hot_runs runs in all; at once by
        default): it is compiled while the compiler has nothing else to do, takes the
        baseline block's place when ready, and goes to the disk cache for the next
        run. Then its counter goes on to codegen.OPT_AFTER instructions, as a quick
        block's does, and its optimised region is asked for, as a quick block's is.
        So the regions a program's hot loops wait for come first, not after every
        warm block's quick compile (sort's first run: ~130 quick blocks, ~0.3 s of
        the compiler's thread, before its ~15 regions). While the compiler is over
        its budget, only a block that ran those instructions at HOT_IPS or more gets
        its region: the many blocks of a Linux boot that get there slowly would take
        ~80 ms each of it."""
        native = ctx.native
        based = native.baseline[start]
        if based.counter.value != based.lim:
            native.link(start)  # (the interpreter found it out of its table slots)
            return
        n = based.n
        if not based.quick:
            based.quick = True
            based.ask_after(_region_runs(n))
            self._ask_quick(ctx, start, based)
            return
        if based.rate() < HOT_IPS and self.compiler.over_budget() and not self.machine.sync:
            based.ask_after(_region_runs(n))
            self.deferred += 1
            return
        counter, lim = based.counter, based.lim
        self._reoptimise(ctx, start, heat=lambda: (counter.value - lim) % (1 << 32) * n)
        if start in native.put_off and start in native.baseline:
            based.ask_after(codegen.RECOUNT // n)  # inside a region already

    def _relink_page(self, ctx: _Context, pc: int) -> None:
        """A block came back by its bytes (its page was written, or is another copy of
        the same program, or a warm start found it in the code cache): bring back at
        once every other block of the page whose bytes are there too, rather than one
        trip to Python for each as it heats up or first runs (a teaching kernel's exec
        copies a program into fresh pages each time; a warm Linux boot installs ~2,000
        blocks from the cache, and each trip costs ~50-100 us of Python). The code
        cache's blocks of the page are looked for once per context and page."""
        native = ctx.native
        if pc not in native:
            return
        comp = self.compiler
        if pc >> 12 not in ctx.cache_swept:
            # once a page: a program exec'd again and again into the same virtual pages
            # (a teaching kernel's) finds its blocks through page_blocks below, and the
            # page's cache list, every start any program had there, would cost more
            ctx.cache_swept.add(pc >> 12)
            for start in tuple(comp.page_starts.get(pc >> 12, ())):
                if start not in native and start not in ctx.queued and start not in ctx.nojit:
                    self._jit(ctx, start, compile_now=False)
        blocks = ctx.page_blocks.get(pc >> 12)
        if not blocks:
            return
        m = self.machine
        ppn = native[pc][1]
        base = (ppn << 12) - m.ram_base
        sup = ctx.key[0] == C.PRV_S
        for start, raw in list(blocks.items()):
            if start in native or start in ctx.queued:
                continue
            off = base + (start & 0xFFF)
            if m.ram_mv[off:off + len(raw)] != raw:
                continue
            found = comp.find(block_key(ctx.translated, start, raw, sup,
                                        bool(self._clock_pcs(ctx, start, len(raw)))))
            if found is not None:
                self._install(ctx, start, ppn << 12, found, len(raw))

    def _slow_heat(self, ctx: _Context, pc: int) -> None:
        """The native interpreter left at ``pc`` for an instruction it does not do (FP,
        say): each run costs a trip to Python, so a block starting there is compiled
        after SLOW_HOT runs, not the usual hot_runs; while it is being compiled, and the
        guest keeps coming back, wait for the compiler rather than run it in Python."""
        n = ctx.heat.get(pc, 0) + 1
        ctx.heat[pc] = n
        if n == SLOW_HOT:
            self._jit(ctx, pc, compile_now=True)  # nojit if no block can start here
        elif n % (SLOW_HOT * STUCK * 8) == 0 and pc in ctx.queued:
            self.compiler.wait_until(_left_queue(ctx.queued, pc))

    def _cool(self, now: float) -> None:
        """Forget the native interpreter's run counts every COOL_PERIOD: a start is hot
        when it runs hot_runs times within one period (a loop), not over a whole boot
        (a kernel path a few hundred times a second runs well interpreted; compiling
        it costs more than it gains)."""
        self._cooled = now
        self._coolings += 1
        # the counts; every ASK_AGAIN coolings the asked bits too (native_interp)
        size = native_interp.NHEAT * 4
        if self._coolings % ASK_AGAIN == 0:
            size = native_interp.HEAT_WORDS * 4
        for ctx in self._contexts.values():
            ctypes.memset(ctx.runs, 0, size)
            for start in ctx.queued:  # (still waiting: still not asking)
                ctx.runs[native_interp.heat_index(start)] = native_interp.WAITING
        if self.st.thresh != self.machine.interp_runs and not self.compiler.over_budget():
            self.st.thresh = min(self.machine.interp_runs, (1 << 32) - 1)

    def _sync_time(self) -> None:
        """What native reads of the time CSR see: guest time moves between runs only
        (GuestTime), so mtime is fixed for a run, unless the guest writes it (MMIO,
        done in Python: synced again after each such access)."""
        st = self.st
        if self._mtime is None:
            st.timeok = 0
            return
        self._mtime_writes = getattr(self._clint, "mtime_writes", 0)
        st.mtime = self._mtime()
        st.timeok = 1 if self.hart._counter_allowed(C.TIME) else 0

    def _stretch_native(self, n: int) -> int:  # noqa: C901 - one stretch, in order
        """Native code (blocks and the native interpreter) until it leaves; then the one
        instruction it left to Python, if any."""
        hart = self.hart
        comp = self.compiler
        st = self.st
        # (the kick too: the worker sets it just after it hands a batch over, so a poll
        # in between may find the batch and leave the kick set, nothing else to do)
        if comp._done or comp._batch or comp._batch_opt or comp._batch_idle or comp.kick.value:
            comp.poll()
        ctx = self._current()
        pc = hart.pc
        op: Any = None
        done = 0
        try:
            # (native code checks pages of code after a fence itself, through its
            # I-TLB; Python checks a page only before it runs an instruction of it)
            done, code = self._enter(ctx, n)
            if self._device_error is not None:  # a device failed inside native code
                err, self._device_error = self._device_error, None
                raise err
            ctx = self._current()  # native code trapped or returned
            if code == S.EXIT_SLOW:
                self.slow_exits += 1
                pc = hart.pc
                if pc != self._refilled and self._fill():
                    self._refilled = pc
                    return done
                if st.exit_access == 2:
                    self.slow_stores += 1
                elif not st.exit_access and pc not in ctx.nojit:
                    self._slow_heat(ctx, pc)
                elif (st.mtimepa and not ctx.translated
                      and st.mtimepa <= st.exit_vaddr < st.mtimepa + 8):
                    self._clock_read(pc)
            elif code == S.EXIT_HOT:
                self._hot(ctx, hart.pc)
                return done
            elif code == S.EXIT_OPT:
                self._reoptimise(ctx, st.exit_vaddr)
                return done
            elif code == S.EXIT_YIELD:
                self.ended = True
                return done
            elif code == S.EXIT_IRQ:
                self.irq_exits += 1
                self._handover_after_ipi()
                return done
            elif code != S.EXIT_LOOKUP:
                return done  # the budget is used up
            self._refilled = -1
            pc = hart.pc
            if ctx.key[1] and pc >> 12 not in ctx.verified:
                self._verify(ctx, pc >> 12)
            o = ctx.ops.get(pc)
            if o is None:
                o = self._decode_op(pc, ctx)
            op = o[0]
            hart.pc = op()
            done += 1
            if self._handover_after_ipi():
                return done
            clint = self._clint
            if st.exit_access == 2 and \
                    getattr(clint, "mtime_writes", 0) != self._mtime_writes:
                self._sync_time()  # the guest wrote mtime (MMIO): what native reads
            return done
        except SLICE_EXITS:
            self.at = (done, pc, op, getattr(op, "npc", pc))
            raise
