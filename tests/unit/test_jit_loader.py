"""pyhv's loader of the JIT's objects (cpu/jit/loader.py): what LLVM makes for this host
(jump tables, constant pools, calls into the C library) runs where it is placed, pages
are never writable and executable at once, and objects it cannot place are refused
with a reason, not run."""

from __future__ import annotations

import ctypes

import pytest

from pyhv.cpu.engines import jit_unavailable_reason

pytestmark = pytest.mark.skipif(jit_unavailable_reason() is not None,
                                reason=f"jit unavailable: {jit_unavailable_reason()}")

# a switch dense enough for a jump table (relocations in .rodata), a double constant
# (a constant pool), libm's round and the C library's memset (undefined symbols)
IR = """
declare double @llvm.round.f64(double)
declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)

define i64 @pick(i64 %x) {
entry:
  switch i64 %x, label %other [ i64 0, label %a  i64 1, label %b  i64 2, label %c
                                i64 3, label %d  i64 4, label %e  i64 5, label %f ]
a:
  ret i64 101
b:
  ret i64 202
c:
  ret i64 303
d:
  ret i64 404
e:
  ret i64 505
f:
  ret i64 606
other:
  ret i64 -1
}

define double @scale(double %x) {
  %y = fmul double %x, 2.718281828459045
  %r = call double @llvm.round.f64(double %y)
  ret double %r
}

define void @fill(ptr %p, i64 %n) {
  call void @llvm.memset.p0.i64(ptr %p, i8 90, i64 %n, i1 false)
  ret void
}
"""


def compile_object(ir: str, opt: int = 1) -> bytes:
    from pyhv.cpu.jit.compiler import load_llvm, target_machine

    mod = load_llvm().parse_assembly(ir)
    return target_machine(opt).emit_object(mod)


def test_what_llvm_makes_runs_where_it_is_loaded():
    from pyhv.cpu.jit.loader import CodeHeap

    obj = compile_object(IR)
    heap = CodeHeap()
    at = heap.load(obj)
    assert set(at) == {"pick", "scale", "fill"}
    pick = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(at["pick"])
    assert [pick(i) for i in range(-1, 8)] == [-1, 101, 202, 303, 404, 505, 606, -1, -1]
    scale = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(at["scale"])
    assert scale(10.0) == 27.0 and scale(-1.0) == -3.0
    buf = ctypes.create_string_buffer(16)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(at["fill"])(buf, 5)
    assert buf.raw[:6] == b"ZZZZZ\0"


def test_code_pages_are_never_writable_and_executable():
    """Each load leaves its pages read-execute; the next object, on a page the first
    shares, is written in and both run."""
    from pyhv.cpu.jit.loader import CodeHeap

    heap = CodeHeap()
    first = heap.load(compile_object(IR))
    second = heap.load(compile_object(IR.replace("@pick", "@pick2")
                                      .replace("@scale", "@scale2").replace("@fill", "@fill2")))
    assert abs(second["pick2"] - first["pick"]) < 4096 * 4  # packed, not a page each
    for addr in (first["pick"], second["pick2"]):
        assert _permissions(addr) == "r-xp"
        assert ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(addr)(3) == 404


def _permissions(addr: int) -> str:
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            lo, hi = (int(x, 16) for x in span.split("-"))
            if lo <= addr < hi:
                return perms
    raise AssertionError(f"{addr:#x} is not mapped")


def test_objects_it_cannot_place_are_refused():
    from pyhv.cpu.jit.loader import CodeHeap, LoadError

    heap = CodeHeap()
    with pytest.raises(LoadError, match="not an ELF64"):
        heap.load(b"garbage" * 20)
    undefined = compile_object("declare i64 @nowhere_at_all(i64)\n"
                               "define i64 @f(i64 %x) {\n"
                               "  %r = call i64 @nowhere_at_all(i64 %x)\n  ret i64 %r\n}\n")
    with pytest.raises(LoadError, match="nowhere_at_all"):
        heap.load(undefined)
    # a symbol of an earlier object resolves a later one's reference
    heap.load(compile_object("define i64 @nowhere_at_all(i64 %x) {\n"
                             "  %r = mul i64 %x, 7\n  ret i64 %r\n}\n"))
    at = heap.load(undefined)
    assert ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(at["f"])(6) == 42


def test_a_damaged_object_in_the_code_cache_is_compiled_again(tmp_path, monkeypatch):
    """A cached object that does not load (truncated on disk) is not found: the block
    is compiled again rather than the run failing."""
    from pyhv.cpu.jit.compiler import Compiler

    monkeypatch.setenv("PYHV_JIT_CACHE", str(tmp_path))
    monkeypatch.setenv("PYHV_JIT_SYNC", "1")
    comp = Compiler()
    block = "define i64 @b0080001000_4_x(i64 %x) {\n  %r = add i64 %x, 1\n  ret i64 %r\n}\n"
    addr = comp.compile([("0080001000_4_x", block)])["0080001000_4_x"]
    assert ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(addr)(1) == 2
    for obj in comp.cache_dir.glob("*.o"):  # type: ignore[union-attr]
        obj.write_bytes(obj.read_bytes()[:100])
    again = Compiler()
    assert again.cached("0080001000_4_x") is None
    assert "0080001000_4_x" not in again._index
