"""LLVM: turns batches of block IR into machine code, and keeps it on disk.

One :class:`Compiler` per process serves every hart and machine in it. A batch of blocks
becomes one module, optimised with a light pipeline (SROA/mem2reg, instcombine,
simplifycfg: most of O2's speed for a fraction of its cost on small blocks), turned into
an object file by the target machine and loaded by pyhv's own loader (loader.py). The
same object is written to the code cache directory, keyed by the blocks' content (engine
version, host CPU, translation mode, pc and instruction bytes), so a second run of the
same guest loads machine code instead of compiling it. The code holds no host addresses
(everything goes through the hart-state pointer), which is what makes reloading it in
another process valid.

LLVM (llvmlite) is imported only to compile, on the compiler's thread (``load_llvm``):
a run starts the native interpreter from the runtime object on disk at once, and LLVM
loads while the guest runs.

Cache location: ``$PYHV_JIT_CACHE`` (``off`` disables it), else
``$XDG_CACHE_HOME/pyhv/jit`` or ``~/.cache/pyhv/jit``; one subdirectory per host CPU and
engine version. Objects are written to a temporary name and renamed, index lines are
appended with one ``write``: two pyhv processes can share the cache.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import os
import queue
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ... import clock, lightdata
from ...isa import compressed, csr, decoder, spec
from ...isa.compressed import expand
from .. import trap
from . import codegen, loader, native_interp, perfmap, stencils
from . import state as S

ENGINE_VERSION = "pyhv-jit-2"
# Blocks per module, quick and optimised. Small: the guest waits for the first block of
# a batch as long as for the last, and the hot loop that made a program slow is usually
# among the first blocks queued; but each module has a fixed cost (LLVM's set-up, then
# loading it on the guest thread). Measured with bench/programs.py's programs (empty
# code cache, 9-15 paired whole-process runs) against the former 64 and 16: 8 and 2
# were 6-10% faster on fp, strings and bench.elf and the same on sort; 2 and 1 were
# 23% faster on fp but 10% slower on sort (the compiler's CPU time grew 15%); a Linux
# boot was the same with either.
MAX_BATCH = 8
MAX_BATCH_OPT = 2
# Blocks compiled only while nothing else waits (submit's ``idle``), this many a batch:
# a region asked for meanwhile waits for one such batch at most.
MAX_BATCH_IDLE = 4
# An optimised block is compiled before waiting quick ones once its quick block ran this
# many times the instructions they ran interpreted (Compiler._worth_first)
OPT_FIRST = 100
COMPILE_SHARE = float(os.environ.get("PYHV_JIT_COMPILE_SHARE", "0.35"))  # see over_budget
COMPILE_GRACE = 0.15  # seconds of compiling before COMPILE_SHARE applies
WARM_SHARE = 0.25  # the least part of COMPILE_SHARE left to a run fed by the code cache
QUEUE_LIMIT = 128
OPT = "_o"  # key suffix of a block compiled again, optimised (see Compiler.submit)
SWITCH_INTERVAL = float(os.environ.get("PYHV_JIT_SWITCH", "0.001"))
# IR passes before code generation (PYHV_JIT_OPT=0 skips them: faster compiles, slower code)
OPT_PASSES = os.environ.get("PYHV_JIT_OPT", "1") != "0"
# The IR passes of optimised blocks (Compiler._optimise). Blocks keep guest registers in
# SSA values between one load at entry and stores at the exits, so what pays is folding
# (instcombine), redundancy removal (GVN), dead stores and a clean CFG; LLVM's whole O2
# pipeline added loop and inter-procedural passes that found little more here (sort's
# optimised regions: 5% more machine code with O2) for about twice the IR-pass time
# (its instcombine runs six times); a second instcombine after GVN took 17% of the IR
# passes' time for 0.3% less machine code (sort's regions, best of three compiles each).
# ``PYHV_JIT_OPT_PIPELINE=o2`` brings O2 back (without unrolling or vectorising), or
# names passes of llvmlite's pass manager (add_X_pass).
OPT_PIPELINE = tuple(os.environ.get(
    "PYHV_JIT_OPT_PIPELINE",
    "sroa,instruction_combine,simplify_cfg,new_gvn,dead_store_elimination,simplify_cfg"
).split(","))


def generator_modules() -> tuple[Any, ...]:
    """Every pyhv module whose source decides the machine code the JIT generates or the
    tables it keeps in the code cache (tests/unit/test_jit_cache_key.py checks that
    their pyhv imports stay within this set; perfmap, which only names code for perf,
    and loader, which loads object files, are in it for that rule's sake)."""
    return (codegen, native_interp, stencils, S, decoder, compressed, csr, spec, perfmap,
            loader, clock, trap, lightdata, sys.modules[__name__])


def cache_tag(cpu: str, features: str, sources: Iterable[bytes]) -> str:
    """The code cache's directory name: engine version, host CPU, IR pass setting and the
    sources of :func:`generator_modules`; any change starts a new cache rather than
    reusing machine code the generator would no longer produce."""
    h = hashlib.sha256(f"{ENGINE_VERSION}|{cpu}|{features}|opt={int(OPT_PASSES)}|"
                       f"{','.join(OPT_PIPELINE)}|".encode())
    for src in sources:
        h.update(hashlib.sha256(src).digest())
    return h.hexdigest()[:16]


def _runtime_root() -> Path | None:
    """Where pyhv keeps its own machine code (the dispatcher and native interpreter,
    compiled optimised) and the RVC table: built once per pyhv version and host CPU,
    like byte-compiled Python, whatever the guest code cache is (``PYHV_JIT_CACHE``
    starts empty or off); ``PYHV_JIT_RUNTIME`` moves it (``off``: rebuild every run)."""
    env = os.environ.get("PYHV_JIT_RUNTIME")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyhv" / "runtime"


def _cache_root() -> Path | None:
    env = os.environ.get("PYHV_JIT_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyhv" / "jit"



_LLVM: Any = None  # llvmlite.binding, once load_llvm() has imported it
_LLVM_LOCK = threading.Lock()


def load_llvm() -> Any:
    """llvmlite's binding, with LLVM's native target set up: imported on first use,
    which is the compiler's thread as the first block is queued (or the guest thread
    when it compiles itself: PYHV_JIT_SYNC, building the runtime). LLVM's library is
    mapped first by a plain ``dlopen`` call, which lets the guest thread run Python
    meanwhile (loading it through ctypes holds the GIL for ~15 ms)."""
    global _LLVM
    if _LLVM is None:
        with _LLVM_LOCK:
            if _LLVM is None:
                _preload_llvm()
                import llvmlite.binding as llvm

                llvm.initialize_native_target()
                llvm.initialize_native_asmprinter()
                # LLVM's quick code generator (opt level 0) with the optimising register
                # allocator. At level 0 LLVM pairs its fast instruction selector with its
                # fast register allocator, which keeps every value that crosses a basic
                # block in a stack slot; a block's memory accesses branch (TLB, code
                # watch), so quick blocks spent much of their time storing and reloading
                # guest registers. The greedy allocator makes them about half as long
                # for ~30% more compile time. (A command-line option: one per process,
                # and only level 0 code generation reads it.)
                llvm.set_option("pyhv", "-optimize-regalloc")
                # Without loop strength reduction (optimised regions: the level 0 code
                # generator does not run it). It took ~9% of their code generation
                # (20% less without it over sort's regions, best of three compiles
                # each) and rewrote a guest loop's address arithmetic into what the
                # host's addressing modes do anyway: sort's hottest loop is as long
                # without it, its set-up shorter.
                llvm.set_option("pyhv", "-disable-lsr")
                _LLVM = llvm
    return _LLVM


def _preload_llvm() -> None:
    """Map llvmlite's library with a plain ``dlopen`` call (ctypes releases the GIL
    around foreign calls), so that ``import llvmlite.binding`` finds it mapped."""
    try:
        from importlib.util import find_spec

        spec = find_spec("llvmlite")
        if spec is None or not spec.submodule_search_locations:
            return
        lib = Path(next(iter(spec.submodule_search_locations))) / "binding" / "libllvmlite.so"
        if lib.is_file():
            dlopen = ctypes.CDLL(None).dlopen
            dlopen.argtypes, dlopen.restype = (ctypes.c_char_p, ctypes.c_int), ctypes.c_void_p
            dlopen(str(lib).encode(), os.RTLD_NOW | os.RTLD_LOCAL)
    except (OSError, AttributeError, ValueError, StopIteration):
        pass  # llvmlite's own import finds (or fails to find) it


def host_cpu() -> tuple[str, str]:
    """(name, features) of the host CPU for the code cache's key, read from
    /proc/cpuinfo without LLVM (LLVM targets the same CPU: its own names would say
    the same); LLVM's names where there is no /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if not fields.get("flags"):
        llvm = load_llvm()
        return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    name = "/".join(fields.get(k, "") for k in ("vendor_id", "cpu family", "model",
                                                 "model name"))
    return name, hashlib.sha256(fields["flags"].encode()).hexdigest()[:16]


# llvmlite runs every LLVM call under one process-wide lock. The worker's two long calls
# (the IR passes and code generation: tens of ms a batch) work on its own context, module
# and target machine, which LLVM lets threads use independently; under the lock they
# held the guest thread's short calls (loading an object, an address) for as long:
# 0.39 s of a warm Linux boot was spent waiting there. So the worker makes these two
# calls without the lock; every other call still takes it.
def _unlocked(fn: Any) -> Callable[..., Any]:
    """The raw ctypes function behind llvmlite's locking wrapper ``fn``."""
    return fn._cfn if hasattr(fn, "_cfn") else fn


def _emit_object_unlocked(tm: Any, mod: Any) -> bytes:
    """``tm.emit_object(mod)`` without llvmlite's lock (see above)."""
    from llvmlite.binding import ffi

    lib = ffi.lib
    with ffi.OutputString() as outerr:
        mb = _unlocked(lib.LLVMPY_TargetMachineEmitToMemory)(tm, mod, 1, outerr)
        if not mb:
            raise RuntimeError(str(outerr))
    try:
        return ctypes.string_at(lib.LLVMPY_GetBufferStart(mb), lib.LLVMPY_GetBufferSize(mb))
    finally:
        lib.LLVMPY_DisposeMemoryBuffer(mb)

_SCHEDULING: bool | None = None  # LLVM's machine scheduler as last set


def _schedule(on: bool) -> None:
    """The machine instruction scheduler only for optimised code. The optimising
    register allocator brings it into quick code generation too, where it took ~24% of
    the code generator's time (sort's 144 quick blocks: 1.89 -> 1.43 ms a block without
    it) for nothing an out-of-order host needs in code run a few thousand times. An
    LLVM command-line option, so set before each batch (the one thread that generates
    code at a time: the worker, or the guest thread with no worker)."""
    global _SCHEDULING
    if _SCHEDULING is not on:
        load_llvm().set_option("pyhv", f"-enable-misched={'true' if on else 'false'}")
        _SCHEDULING = on


def target_machine(opt: int) -> Any:
    """A target machine for this host, quick (``opt`` 0) or optimising (1), for one
    thread. The large code model: the C library's functions the code calls
    (``memset``, ``round``) may lie further from the code heap than a 32-bit offset
    reaches; 64-bit references cost nothing measurable here. Static, not PIC:
    absolute addresses the loader fills in (large PIC code reaches its constants
    through GOT-relative relocations: MCJIT once resolved them wrongly, FP results
    with the wrong constants, tests/unit/test_jit.py)."""
    llvm = load_llvm()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
        opt=opt, reloc="static", codemodel="large")


Source = str | Callable[[], str]  # a block's IR, or what makes it (see submit)


def _text(ir: Source) -> str:
    return ir if isinstance(ir, str) else ir()


class Compiler:
    """Compiles and loads native blocks; ``address(key)`` finds one compiled before."""

    def __init__(self) -> None:
        cpu, features = host_cpu()
        self.heap = loader.CodeHeap()  # every object's code, and its functions by name
        # target machines (quick, optimised) of the thread that compiles when there is
        # no worker (the worker has its own: _work)
        self._tms: list[Any] = [None, None]
        self._started: float | None = None  # first asked to compile (over_budget)
        self._busy_since = 0.0  # when the batch being compiled was sent (0: none)
        self._passes: dict[tuple[int, bool], tuple[Any, Any, Any]] = {}
        self.blocks_compiled = 0
        self.blocks_loaded = 0
        # blocks compiled and loaded from the code cache lately (halved every second):
        # how much of what got hot the cache had (over_budget)
        self._recent = [0.0, 0.0]
        self._recent_at = 0.0
        self.compile_seconds = 0.0
        # of which on quick blocks asked for ``idle`` (submit): they do not count against
        # the budget of the rest (over_budget); the batch in flight is one of them
        self.idle_seconds = 0.0
        self._idle_keys: set[str] = set()
        self._busy_idle = False
        tag = cache_tag(cpu, features,
                        (Path(m.__file__).read_bytes() for m in generator_modules()))
        root = _cache_root()
        self.cache_dir = root / tag if root is not None else None
        runtime = _runtime_root()
        self.runtime_dir = runtime / tag if runtime is not None else None
        if self.runtime_dir is not None:
            try:
                if not self.runtime_dir.is_dir():
                    self.runtime_dir.mkdir(parents=True)
                    prune_versions(self.runtime_dir)
                else:
                    os.utime(self.runtime_dir)
            except OSError:
                self.runtime_dir = None
        self._index: dict[str, str] = {}  # block key -> object file name
        self.known: dict[str, int] = {}  # block key -> address, for every hart and machine
        # Start pc -> {(mode, length in bytes)} of every block compiled or on disk: only
        # these are worth a lookup, and the length finds the bytes to hash without
        # decoding them.
        self.starts: dict[int, set[tuple[str, int]]] = {}
        # ... and by virtual page: a warm start found in the code cache brings the
        # others of its page along (engine._relink_page)
        self.page_starts: dict[int, set[int]] = {}
        self._loaded_files: set[str] = set()
        # symbol -> address of the blocks of loaded objects not asked for yet (cached)
        self._loaded: dict[str, int] = {}
        # For the native interpreter: which starts the code cache may hold (a bit map
        # indexed by pc, shared by every hart), and the compressed-instruction table.
        self.known_map = (ctypes.c_uint8 * (native_interp.NKNOWN // 8))()
        self._load_index()
        self.rvc = self._rvc_table()
        self.dispatch = self._compile_dispatch()
        made = self.heap.externals
        self.refill = made["pyhv_refill"]
        self.revoke = made["pyhv_revoke"]
        self.clock_load = made["pyhv_clock_load"]
        self.granule_clear = made["pyhv_granule_clear"]
        self.range_clear = made["pyhv_range_clear"]
        self._stencils: list[dict[str, stencils.Stencil]] | None = None  # see baseline()
        self.background = os.environ.get("PYHV_JIT_SYNC", "0") in ("", "0")
        self._batch: list[tuple[str, Source]] = []
        self._heat: dict[str, Callable[[], int]] = {}  # key -> its heat (submit)
        self._batch_opt: list[tuple[str, Source]] = []  # optimised recompiles, sent after
        self._batch_idle: list[tuple[str, Source]] = []  # quick ones for when idle
        self._waiting: dict[str, list[Callable[[int], None]]] = {}
        self._todo: queue.Queue = queue.Queue()
        # Finished batches: appended by the worker, taken by ``poll`` (a deque: checking
        # it costs nothing on the guest thread's hot path, unlike a Queue's locks).
        self._done: collections.deque = collections.deque()
        self._finished = threading.Event()
        # set by the worker when a batch is done, cleared by ``poll``: the native
        # interpreter of every hart leaves at its next stretch start while it is set
        # (state.KICKP), so a block the guest waits for is loaded at once
        self.kick = ctypes.c_uint32(0)
        self._inflight = 0
        self._worker: threading.Thread | None = None

    # -- the disk cache -----------------------------------------------------------------
    def _load_index(self) -> None:
        if self.cache_dir is None:
            return
        try:
            if not self.cache_dir.is_dir():
                self.cache_dir.mkdir(parents=True)
                prune_versions(self.cache_dir)
            else:
                os.utime(self.cache_dir)  # in use: the newest versions are kept
            text = (self.cache_dir / "index").read_text()
        except FileNotFoundError:
            return
        except OSError:
            self.cache_dir = None  # unusable: run without a cache
            return
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:
                self._index[parts[0]] = parts[1]
                self._add_start(parts[0])

    def _rvc_table(self) -> ctypes.Array:
        """Compressed instruction -> its 32-bit expansion (0: illegal), for the native
        interpreter; kept in the cache directory (building it takes ~40 ms)."""
        table = (ctypes.c_uint32 * 65536)()
        path = self.runtime_dir / "rvc.bin" if self.runtime_dir is not None else None
        if path is not None:
            try:
                data = path.read_bytes()
                if len(data) == ctypes.sizeof(table):
                    ctypes.memmove(table, data, len(data))
                    return table
            except OSError:
                pass
        for h in range(65536):
            if h & 3 != 3:
                table[h] = expand(h)
        if path is not None:
            self._write_atomic(path, bytes(table))
        return table

    def _write_atomic(self, path: Path, data: bytes) -> None:
        try:
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            pass

    def _add_start(self, key: str) -> None:
        shape = key_shape(key)
        if shape is not None:
            self.starts.setdefault(shape[0], set()).add(shape[1:])
            self.page_starts.setdefault(shape[0] >> 12, set()).add(shape[0])
            # Installed at its start's first run, quick blocks too (a warm Linux boot
            # 0.91x of the time of installing only optimised ones; before quick blocks
            # had their registers allocated, 1.15x).
            i = native_interp.known_index(shape[0])
            self.known_map[i >> 3] |= 1 << (i & 7)

    def _store(self, keys: list[str], obj: bytes) -> str | None:
        """Write a compiled object and its index lines to the disk cache: its file name,
        or None (no cache, or the disk refused). Touches no shared state: the worker
        thread does it for the batches it compiles (~0.45 ms a batch that the guest's
        thread spent there before)."""
        if self.cache_dir is None:
            return None
        name = hashlib.sha256(obj).hexdigest()[:24] + ".o"
        try:
            tmp = self.cache_dir / f".{name}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_bytes(obj)
            os.replace(tmp, self.cache_dir / name)
            lines = "".join(f"{k} {name}\n" for k in keys).encode()
            fd = os.open(self.cache_dir / "index", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, lines)
            finally:
                os.close(fd)
        except OSError:
            return None
        return name

    def _stored(self, keys: list[str], name: str | None) -> None:
        """Record that ``keys`` are in the cache file ``name`` (from ``_store``)."""
        if name is None:
            return
        for k in keys:
            self._index[k] = name
        self._loaded_files.add(name)

    def cached(self, key: str) -> int | None:
        """Address of block ``key`` from the disk cache (loading its object), or None."""
        fname = self._index.get(key)
        if fname is None:
            return None
        if fname not in self._loaded_files:
            assert self.cache_dir is not None
            try:
                data = (self.cache_dir / fname).read_bytes()
            except OSError:
                self._index.pop(key, None)
                return None
            self._loaded_files.add(fname)
            try:
                addresses = self.heap.load(data)
            except (loader.LoadError, struct.error, ValueError, IndexError):
                self._index.pop(key, None)  # damaged: compiled again when hot
                return None
            perfmap.record(data, addresses)
            self._loaded.update(addresses)  # every block of the object at once
        addr = self._loaded.pop(symbol(key), None)
        if addr is None:
            addr = self.heap.externals.get(symbol(key))
        if not addr:
            return None
        self.blocks_loaded += 1
        self._recent[1] += 1
        return addr

    # -- compiling --------------------------------------------------------------------------
    def _optimise(self, mod: Any, tm: Any, full: bool = False, unlocked: bool = False
                  ) -> None:
        """The IR passes: a light pipeline (SROA, simplifycfg) for quick blocks;
        ``OPT_PIPELINE`` for optimised ones (``full``). (Quick blocks went without
        instcombine: it took 28% of their compile time, sort's quick blocks 1.43 -> 1.11
        ms each, for code 7% smaller; paired warm boots, which run mostly quick blocks,
        took 0.99x the time without it.)"""
        if not OPT_PASSES:
            return
        llvm = load_llvm()
        passes = self._passes.get((id(tm), full))
        if passes is None:  # built once per target machine (thread): not per batch
            tuning = llvm.create_pipeline_tuning_options(speed_level=2 if full else 1)
            if full:
                tuning.loop_unrolling = False
                tuning.loop_vectorization = False
                tuning.slp_vectorization = False
            pb = llvm.create_pass_builder(tm, tuning)
            mpm = None
            names = OPT_PIPELINE if full else ("sroa", "simplify_cfg")
            if names != ("o2",):
                mpm = llvm.create_new_module_pass_manager()
                for name in names:
                    add = getattr(mpm, f"add_{name.strip()}_pass", None)
                    if add is None:
                        raise RuntimeError(f"PYHV_JIT_OPT_PIPELINE: no LLVM pass {name!r}")
                    add()
            passes = self._passes[(id(tm), full)] = (tm, pb, mpm)
        # (LLVM's default pipeline gives its passes away when it runs: one per module)
        mpm = passes[2] if passes[2] is not None else passes[1].getModulePassManager()
        if unlocked:
            _unlocked(llvm.ffi.lib.LLVMPY_RunNewModulePassManager)(mpm, mod, passes[1])
        else:
            mpm.run(mod, passes[1])

    def _load(self, ir: str, opt: bool = False) -> tuple[bytes, dict[str, int]]:
        """Compile ``ir`` on this thread and load it: (object, its functions' addresses)."""
        mod = load_llvm().parse_assembly(ir)
        tm = self._tms[opt]
        if tm is None:
            tm = self._tms[opt] = target_machine(int(opt))
        self._optimise(mod, tm, full=opt)
        _schedule(opt)
        obj = tm.emit_object(mod)
        addresses = self.heap.load(obj)
        perfmap.record(obj, addresses)
        return obj, addresses

    def _compile_dispatch(self) -> int:
        t0 = time.perf_counter()
        # The dispatcher and the native interpreter: loaded from the runtime directory
        # (compiling them, optimised, takes ~150 ms), else compiled and kept there.
        path = self.runtime_dir / "dispatch.o" if self.runtime_dir is not None else None
        obj = None
        if path is not None:
            try:
                obj = path.read_bytes()
            except OSError:
                obj = None
        addresses = None
        if obj and hashlib.sha256(obj[32:]).digest() == obj[:32]:  # whole, not torn
            try:
                addresses = self.heap.load(obj[32:])
            except loader.LoadError:
                addresses = None  # (another LLVM's object, say): built again
            else:
                perfmap.record(obj[32:], addresses)
        if addresses is None:
            obj, addresses = self._load(
                codegen.HEADER + codegen.DISPATCH + native_interp.interpreter_ir(), opt=True)
            if path is not None:
                self._write_atomic(path, hashlib.sha256(obj).digest() + obj)
        self.interp_bare = addresses["pyhv_interp_bare"]
        self.interp_tlb = addresses["pyhv_interp_tlb"]
        self.dispatch_seconds = time.perf_counter() - t0
        return addresses["pyhv_dispatch"]

    def baseline(self) -> stencils.Baseline:
        """A builder of baseline blocks (stencils.py) for one machine; the stencils,
        compiled once (~0.2 s) and kept in the runtime directory, are shared."""
        if self._stencils is None:
            def compile_ir(ir: str) -> bytes:
                # the small code model: holes are 32-bit fields, calls and the run
                # counter rel32 (the arena keeps what they reach within its chunk)
                llvm = load_llvm()
                tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
                    cpu=llvm.get_host_cpu_name(),
                    features=llvm.get_host_cpu_features().flatten(),
                    opt=2, reloc="static", codemodel="small")
                mod = llvm.parse_assembly(ir)
                self._optimise(mod, tm, full=True)
                _schedule(True)
                return tm.emit_object(mod)
            self._stencils = stencils.load_or_build(self.runtime_dir, compile_ir)
        return stencils.Baseline(self._stencils, {
            "pyhv_refill": self.refill,
            "pyhv_mmio_slot": self.heap.externals["pyhv_mmio_slot"],
            "pyhv_granule_clear": self.granule_clear})

    def compile(self, blocks: list[tuple[str, Source]]) -> dict[str, int]:
        """Compile ``(key, ir)`` blocks as one module now; return key -> address."""
        t0 = time.perf_counter()
        ir = codegen.HEADER + "\n".join(_text(ir) for _key, ir in blocks)
        obj, addresses = self._load(ir, opt=blocks[0][0].endswith(OPT))
        keys = [k for k, _ in blocks]
        self._stored(keys, self._store(keys, obj))
        out = {k: addresses[symbol(k)] for k in keys}
        self.known.update(out)
        for k in keys:
            self._add_start(k)
        self.blocks_compiled += len(blocks)
        self._recent[0] += len(blocks)
        self._spend(keys, time.perf_counter() - t0)
        return out

    def _spend(self, keys: list[str], seconds: float) -> None:
        """A batch of ``keys`` took ``seconds`` to compile."""
        self.compile_seconds += seconds
        if keys[0] in self._idle_keys:
            self.idle_seconds += seconds
            self._idle_keys.difference_update(keys)

    # -- compiling in the background ---------------------------------------------------------
    #
    # Generating machine code is the expensive part (a few ms a block) and llvmlite drops
    # the GIL while LLVM works, so a worker thread does it on another host CPU while the
    # hart goes on running the block cold. Only the worker parses, optimises and emits
    # (in its own LLVMContext and target machine); loading objects (loader.py) stays on
    # the thread that runs guest code, at a point of its choosing (``poll``): when MCJIT
    # loaded them on the worker, its many short LLVM calls each took the GIL back from
    # the guest thread, which measured 20% slower on a Linux boot.

    def submit(self, key: str, ir: Source, done: Callable[[int], None],
               heat: Callable[[], int] | None = None, idle: bool = False) -> None:
        """Queue one block (its IR, or a function that makes it: the worker calls it,
        in parallel with native guest code, which runs without the GIL); ``done(address)``
        runs on the guest thread once it is loaded;
        ``heat()``, if given, says how much the guest runs it cold now (the hottest
        waiting blocks are compiled first).

        Two tiers: a block is first compiled quickly (light IR passes, LLVM's fast
        instruction selector with the greedy register allocator); one that then runs a
        lot is compiled again, usually as a region, under the key ``key + OPT`` with
        the O2 pipeline and the optimising code generator (several times the compile
        time). Optimised batches wait for the quick ones, which cold code is waiting
        for, unless none of those runs now (``_next_batch``). A quick block asked for
        ``idle`` (code that already runs as a baseline block: stencils.py) is compiled
        only while nothing else waits: it makes that code a little faster and, through
        the disk cache, the next run's start cheaper, but the regions the guest's hot
        loops wait for must not queue behind it."""
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(done)
            return
        self._waiting[key] = [done]
        if idle:
            self._idle_keys.add(key)
        (self._batch_opt if key.endswith(OPT) else self._batch_idle if idle
         else self._batch).append((key, ir))
        if heat is not None:
            self._heat[key] = heat
        if self.background and self._inflight == 0:
            self._send()

    def withdraw(self, key: str) -> bool:
        """Take the optimised block ``key`` out of the queue if it is still waiting
        there (not sent to the worker): whoever asked no longer wants it."""
        for i, (k, _ir) in enumerate(self._batch_opt):
            if k == key:
                del self._batch_opt[i]
                self._waiting.pop(key, None)
                self._heat.pop(key, None)
                return True
        return False

    def find(self, key: str) -> tuple[int, bool] | None:
        """(address, optimised) of block ``key`` compiled before (this process or the
        disk cache): its optimised version if there is one."""
        for k in (key + OPT, key):
            addr = self.known.get(k)
            if addr is None:
                addr = self.cached(k)
                if addr is not None:
                    self.known[k] = addr
            if addr is not None:
                return addr, k is not key
        return None

    def _hottest_first(self, queue: list[tuple[str, Source]], batch: int) -> None:
        """Sort ``queue`` hottest first if it holds more than one ``batch``."""
        heat = self._heat
        if len(queue) > batch and heat:
            queue.sort(key=lambda b: -heat[b[0]]() if b[0] in heat else 0)

    def _next_batch(self, force_idle: bool = False) -> list[tuple[str, Source]]:
        # The hottest first: code that became hot early may have cooled since, while
        # the loop the guest is in now waits behind it, interpreted; optimised ones
        # too: the quick block running most since it asked first.
        self._hottest_first(self._batch, MAX_BATCH)
        self._hottest_first(self._batch_opt, MAX_BATCH_OPT)
        if self._batch and self._batch_opt and (
                all(self._cold(k) for k, _ in self._batch[:MAX_BATCH])
                or self._worth_first(self._batch_opt[0][0], self._batch[:MAX_BATCH])):
            # nothing waiting quick runs now (the hottest are first, if there are more
            # than a batch), or the optimised block is worth more: it comes first
            batch = self._batch_opt[:MAX_BATCH_OPT]
            self._batch_opt = self._batch_opt[MAX_BATCH_OPT:]
            return batch
        if self._batch:
            batch, self._batch = self._batch[:MAX_BATCH], self._batch[MAX_BATCH:]
        elif self._batch_opt:
            batch = self._batch_opt[:MAX_BATCH_OPT]
            self._batch_opt = self._batch_opt[MAX_BATCH_OPT:]
        elif force_idle or self._idle_allowed():
            # nothing else waits: the quick blocks of baseline blocks
            self._hottest_first(self._batch_idle, MAX_BATCH_IDLE)
            batch = self._batch_idle[:MAX_BATCH_IDLE]
            self._batch_idle = self._batch_idle[MAX_BATCH_IDLE:]
        else:
            batch = []
        return batch

    def _queued(self) -> bool:
        return bool(self._batch or self._batch_opt or self._batch_idle)

    def _worth_first(self, opt_key: str, quick: list[tuple[str, Source]]) -> bool:
        """Whether the optimised block ``opt_key`` should go before the quick batch
        ``quick``: what a compile gains is the instructions it speeds up times what it
        saves on each, over what it costs. A quick block saves ~5 ns an instruction run
        in the native interpreter and costs ~1.5 ms; an optimised one saves ~1 ns on
        each run in its quick block and costs ~30 ms (sort's, 2026-12-06): the
        optimised block first once its quick block ran OPT_FIRST times the instructions
        the whole quick batch ran interpreted (the quick blocks' counted since the last
        cooling, the optimised one's since it asked)."""
        heat = self._heat
        hot = heat.get(opt_key)
        if hot is None:
            return False
        cold = sum(heat[k]() for k, _ in quick if k in heat)
        return hot() > OPT_FIRST * cold

    def _cold(self, key: str) -> bool:
        """Whether waiting block ``key`` has not run since its heat was last cooled."""
        heat = self._heat.get(key)
        return heat is not None and heat() == 0

    def _send(self, force_idle: bool = False) -> bool:
        """Send the worker the next batch; whether there was one (``force_idle``: a
        batch of the idle queue even over the budget)."""
        batch = self._next_batch(force_idle)
        if not batch:
            return False
        if self._worker is None:
            # The guest thread gives the GIL up for every native run and must get it
            # back at once, not after the default 5 ms switch interval.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            self._worker = threading.Thread(target=self._work, name="pyhv-jit", daemon=True)
            self._worker.start()
        self._inflight += 1
        self._busy_idle = batch[0][0] in self._idle_keys
        self._busy_since = time.perf_counter()
        self._todo.put(batch)
        return True

    def _work(self) -> None:
        # LLVM comes up here, while the guest runs (see load_llvm)
        failed: Exception | None = None
        try:
            llvm = load_llvm()
            tms = (target_machine(0), target_machine(1))
        except Exception as e:  # noqa: BLE001 - reported on the guest thread, per batch
            failed = e
        if self.cache_dir is not None:
            sweep_temporaries(self.cache_dir)  # (once a process, off the guest's thread)
        while True:
            batch = self._todo.get()
            t0 = time.perf_counter()
            try:
                if failed is not None:
                    raise failed
                ctx = llvm.create_context()
                ir = codegen.HEADER + "\n".join(_text(text) for _key, text in batch)
                mod = llvm.parse_assembly(ir, context=ctx)
                opt = batch[0][0].endswith(OPT)
                tm = tms[1 if opt else 0]
                self._optimise(mod, tm, full=opt, unlocked=True)
                _schedule(opt)
                obj = _emit_object_unlocked(tm, mod)
                keys = [k for k, _ in batch]
                seconds = time.perf_counter() - t0
                self._done.append((keys, obj, seconds, self._store(keys, obj)))
            except Exception as e:  # noqa: BLE001 - reported on the guest thread
                self._done.append(([k for k, _ in batch], e, time.perf_counter() - t0, None))
            self.kick.value = 1
            self._finished.set()

    def poll(self, wait: bool = False, finishing: bool = False) -> int:
        """Load what the worker finished (all of it, with ``wait``); returns blocks loaded."""
        if not self.background:
            loaded = 0
            while self._queued():
                batch = self._next_batch(force_idle=True)
                self._finish([k for k, _ in batch], self.compile(batch))
                loaded += len(batch)
            return loaded
        loaded = 0
        if self.kick.value:
            self.kick.value = 0  # (before taking what is done: a later batch sets it again)
        while self._inflight:
            if not self._done:
                if not wait:
                    break
                self._finished.wait()
                self._finished.clear()
                continue
            keys, obj, seconds, stored = self._done.popleft()
            self._inflight -= 1
            self._busy_since = 0.0
            self._spend(keys, seconds)
            if isinstance(obj, Exception):
                raise RuntimeError(f"JIT compile failed: {obj}") from obj
            loaded_at = self.heap.load(obj)
            perfmap.record(obj, loaded_at)
            self._stored(keys, stored)
            addrs = {k: loaded_at[symbol(k)] for k in keys}
            self.known.update(addrs)
            for k in keys:
                self._add_start(k)
            self.blocks_compiled += len(keys)
            self._recent[0] += len(keys)
            self._finish(keys, addrs)
            loaded += len(keys)
        if self._queued() and self._inflight == 0 and not finishing:
            self._send(force_idle=wait)
            if wait:
                loaded += self.poll(wait=True)
        return loaded

    def wait_until(self, ready: Callable[[], bool]) -> None:
        """Wait for the worker until ``ready()`` (a block the guest is stuck on got
        installed), batch by batch, never longer than the queue lasts."""
        while not ready():
            if self._done:
                self.poll()
            elif self._inflight:
                self._finished.wait(0.5)
                self._finished.clear()
            elif self._queued():
                if not self.background:
                    self.poll()
                else:
                    self._send(force_idle=True)
            else:
                return

    def finish(self) -> None:
        """A machine stops: load (and so cache on disk) the batch being compiled, but
        start no new one, so exit waits for one batch at most. Blocks still queued stay
        queued for other machines of this process. A command-line process that is about
        to exit does not wait (cli/process.py): the batch only served later runs."""
        # (pyhv.cpu.jit.LEAVING, read through sys.modules: the generator modules import
        # only one another, test_jit_cache_key.py)
        package = sys.modules.get(__package__ or "")
        if self.background and not getattr(package, "LEAVING", False):
            self.poll(wait=True, finishing=True)

    def compiling(self) -> bool:
        """Whether the worker thread is in the middle of a batch."""
        return self._inflight > 0

    def _finish(self, keys: list[str], addrs: dict[str, int]) -> None:
        for k in keys:
            self._heat.pop(k, None)
            for done in self._waiting.pop(k, ()):
                done(addrs[k])

    def pending(self) -> int:
        return len(self._waiting)

    def over_budget(self) -> bool:
        """Whether more compile work now would cost the guest more than it gains. The
        compiler's thread shares the host's CPUs with the guest's (on this kind of
        machine the two CPUs are not independent: a busy second thread slows the
        first by ~40%), and most code that gets warm runs little after: so it may use
        COMPILE_SHARE of the time since it started (after a grace period), with at
        most QUEUE_LIMIT blocks waiting. Hot code asks again later (engine._hot).
        The quick blocks of baseline blocks (``idle``) are not counted: they are
        compiled only in what this budget leaves (_idle_allowed), and when they
        counted, a run whose compiler had been idle early spent its budget on them
        and then put off the regions of the loops it went on to (a Linux self-test:
        25 regions instead of 33, and ~250 quick blocks compiled instead of ~40)."""
        if len(self._waiting) - len(self._batch_idle) >= QUEUE_LIMIT:
            return True
        now = time.perf_counter()
        if self._started is None:
            self._started = now
            return False
        busy = 0.0 if self._busy_idle or not self._busy_since else now - self._busy_since
        return self.compile_seconds - self.idle_seconds + busy > self._allowance(now)

    def _idle_allowed(self) -> bool:
        """Whether the idle queue may have the compiler: all compiling so far, its own
        included, is within the budget."""
        if self._started is None:
            return True
        now = time.perf_counter()
        busy = self._busy_since and now - self._busy_since
        return self.compile_seconds + busy <= self._allowance(now)

    def _allowance(self, now: float) -> float:
        """Seconds of compiling the budget allows by ``now``."""
        # While the hot code mostly comes from the code cache (the same guest again),
        # the share is smaller: what is left to compile is code that only just got hot
        # this time, and gains less than the compiler's thread takes from the guest's.
        # (Paired runs, warm code cache: a Linux boot 0.78-0.86x of the time, bench.elf
        # 0.70x, sort 0.78x; an empty cache compiles as before.) A guest that goes on to
        # new code gets the whole share back as its compiles outweigh the cache's blocks.
        assert self._started is not None
        share = COMPILE_SHARE
        compiled, loaded = self._lately(now)
        if compiled + loaded:
            share *= max(WARM_SHARE, compiled / (compiled + loaded))
        return COMPILE_GRACE + share * (now - self._started)

    def _lately(self, now: float) -> list[float]:
        """Blocks compiled and blocks loaded from the code cache lately (halved every
        second)."""
        if now - self._recent_at >= 1.0:
            self._recent_at = now
            self._recent = [n / 2 for n in self._recent]
        return self._recent

    def mostly_cached(self) -> bool:
        """Whether the code cache has lately supplied most of the blocks that got hot
        (the same guest run again): code not in it then is lukewarm, mostly."""
        compiled, loaded = self._lately(time.perf_counter())
        return loaded > 2 * compiled


KEEP_VERSIONS = 4  # code cache and runtime directories kept per root (prune_versions)


def prune_versions(current: Path, keep: int = KEEP_VERSIONS) -> list[Path]:
    """Remove the code of old pyhv versions beside ``current`` (just created).

    Every change of pyhv or of the host CPU starts a new directory (:func:`cache_tag`);
    without this, a cache grows by one directory (tens of MB for a Linux guest) for
    every upgrade. The ``keep`` most recently used directories stay (``current`` among
    them: a run of the JIT marks its directory used), so a few versions installed side
    by side keep their caches; a process of a removed version that still runs only
    loses its cache (its reads and writes there fail quietly). Returns what it removed."""
    removed: list[Path] = []
    try:
        siblings = [p for p in current.parent.iterdir()
                    if p != current and p.is_dir() and len(p.name) == 16
                    and all(c in "0123456789abcdef" for c in p.name)]
        siblings.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return removed
    for old in siblings[max(0, keep - 1):]:
        try:
            shutil.rmtree(old)
            removed.append(old)
        except OSError:
            pass
    return removed


def sweep_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary files (``.NAME.PID[.THREAD]``, written and then renamed
    into place: ``_store``, ``_write_atomic``) that processes no longer running left
    in ``directory``: a process that exits while its compiler's thread writes a batch
    leaves one. Files of running processes stay. Returns what it removed."""
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(directory) if e.name.startswith(".")]
    except OSError:
        return removed
    for entry in entries:
        # ".NAME.PID.THREAD" (_store) or ".NAME.PID" (_write_atomic); NAME has a dot
        parts = entry.name.split(".")
        if len(parts) < 4 or not parts[-1].isdigit():
            continue
        pid = parts[-2] if parts[-2].isdigit() else parts[-1]
        try:
            os.kill(int(pid), 0)
            continue  # its writer still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue  # another user's process, or no pid at all
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def symbol(key: str) -> str:
    return "b" + key


def key_shape(key: str) -> tuple[int, str, int] | None:
    """(start pc, mode, length in bytes) of a block key (None for other keys)."""
    try:
        pc, length, _digest = key[2:].removesuffix(OPT).split("_")
        return int(pc, 16), key[:2], int(length, 16)
    except ValueError:
        return None


def block_key(translated: bool, start: int, raw: bytes, supervisor: bool = False,
              clock: bool = False) -> str:
    """Content key of a block: translation mode, privilege class, start pc and bytes;
    ``clock``: compiled with native reads of mtime at some of its loads (a block of the
    same bytes without them is another block: codegen.block_ir)."""
    digest = hashlib.blake2b(raw + (b"\0clock" if clock else b""),
                             digest_size=16).hexdigest()
    return f"{int(translated)}{int(supervisor)}{start:x}_{len(raw):x}_{digest}"


_COMPILER: Compiler | None = None

def busy() -> bool:
    """Whether this process's compiler (if it has one) is in the middle of a batch."""
    return _COMPILER is not None and _COMPILER.compiling()


def compiler() -> Compiler:
    global _COMPILER
    if _COMPILER is None:
        _COMPILER = Compiler()
    return _COMPILER
