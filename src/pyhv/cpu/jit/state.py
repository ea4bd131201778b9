"""The native view of one hart: a flat C struct that generated code reads and writes.

Native blocks address everything through the pointer to this struct (registers, the
budget, guest RAM's host address, the soft TLB, the dispatch table), so the machine code
holds no host address and can be cached on disk and reloaded in another process.

Layout (byte offsets, all fields 64-bit):

====== ==================================================================
0      x[32]   integer registers (x[0] is always 0)
256    f[32]   FP registers (NaN-boxed 64-bit patterns)
512    pc
520    budget  instructions left in this run (signed; blocks may overshoot)
528    ram_host   host address of guest RAM's first byte
536    ram_size   bytes of guest RAM (guest physical base is ``RAM_BASE``)
544    exit_vaddr  guest address of the access a block could not do natively
552    exit_access 1 = load, 2 = store
560    table   pointer to the dispatch table of the current context
568    codemap pointer to one byte per RAM page: 1 = page holds decoded code
576    fpmode  bit 0: FP enabled (mstatus.FS != Off); bit 1: frm is round-to-nearest-even
584    fsdirty set to 1 by a block that wrote an FP register or fflags
592    fflags  exception flags raised by native FP code (ORed into fcsr on exit)
600    resv    LR/SC reservation: guest physical address, or all ones for none
608    mstatus the hart's mstatus (native code changes SIE, SPIE, SPP and SUM)
616    irqsie  1 if setting sstatus.SIE now would let an interrupt in (exit to take it)
624    satp    the satp the soft TLBs translate with
632    dpriv   the privilege data accesses are checked at (0 = U, 1 = S)
640    refill  pointer to the native soft-TLB refill (a page-table walk, codegen.py)
648    ipriv   the privilege instructions are fetched at
656    ichk    1: blocks were fetched through translation, check their page (I-TLB)
664    yield   1: a PAUSE ends the run (harts take turns on one thread)
672    heat    pointer to the context's heat counters (u32, native_interp.py)
680    known   pointer to the bit map of starts the code cache may hold
688    rvc     pointer to the compressed-instruction expansion table (u32[65536])
696    thresh  runs of a stretch start that make it hot (EXIT_HOT)
704    interp  pointer to the native interpreter for this context (null: none)
712    priv    the hart's privilege (the interpreter's sstatus accesses are S-mode only)
720    mtime   what the time CSR reads during this run (guest time moves between runs)
728    timeok  1 if the time CSR may be read at this privilege (mcounteren/scounteren)
736    treads  time CSR reads done natively (they tell guest time the guest polls)
744    codebits   pointer to the code granule bitmap: bit (RAM offset >> 3) set = those 8
               bytes hold translated code (CodeWatch masks; a store there needs Python)
752    stores  guest stores done natively (statistics)
760    smcok   of those, stores into pages holding code that hit no code (statistics)
768    csrs[8] mscratch, sscratch, mepc, sepc, mcause, scause, mtval, stval: the plain
               CSRs native code reads and writes (copied in per run, out if csrdirty)
832    csrdirty  1: native code wrote one of csrs
840    mhartid   the hart's id (read natively)
848    sfpend  SFENCE.VMA done natively, for Python to follow (SF_* bits)
856    sfn     pages in sfvpn
864    sfvpn[8]  virtual pages those fences named
928    tlbp    pointer to the soft TLB in use: tlbp1 for S-mode data accesses with
               sstatus.SUM set, else tlbp0 (the kernel's uaccess toggles switch natively)
936    tlbp0   the soft TLB of the current data-translation context (a TlbSet, Python's)
944    tlbp1   its twin for SUM set
952    fcopy   1: the F registers changed natively (copy them back) though a native
               sstatus write has since folded their dirty state into FS
960    uart_base  guest physical address of the console UART (its fast window)
968    uart_flags what native code may do there this run: bit 0 read LSR, bit 1 write THR
976    uart_lsr   what a native LSR read returns (the UART's LSR at the run's start)
984    txn     bytes in the transmit buffer (native THR writes, drained after the run)
992    txbuf   pointer to the transmit buffer (TXCAP bytes)
1000   dcache  pointer to the native interpreter's decoded instructions (NDCACHE
               entries of DC_BYTES, native_interp.py), one cache per hart
1008   counters  pointer to the quick blocks' instruction counters (NCOUNTERS u64, one
               array per machine; a block's index comes from its key)
1016   tlast   pointer to what the last read of the time CSR returned (u64, the board's
               time_last, shared by the harts and Python: clock.next_time_read)
1024   itlb[NITLB] {virtual page, physical page}: fetch translations native code checked
5120   ctxs[2] for U, then S: {dispatch table, heat counters, TLB set, timeok}: the
               contexts a native trap from U-mode (ecall) or SRET to U-mode switches to
5184   ctxok   1: ctxs hold both contexts of this address space (Python prepared them)
5192   stvec   where a native trap into S-mode goes
5200   medeleg which exceptions S-mode takes (native ECALL from U: bit 8)
5208   irqpend 1: an interrupt is pending and enabled in mie (traps and returns that
               could let it in are left to Python)
5216   ntraps  ECALLs from U-mode taken natively (statistics)
5224   nrets   SRETs done natively (statistics)
5232   tpc     the last trap taken natively: its pc, cause and tval (Python's last_trap)
5240   tcause
5248   ttval
5256   nfaults page faults from U-mode taken natively (statistics)
5264   mctx    M-mode's context: {dispatch table, heat counters, native interpreter
               (bare), timeok}, for a native ECALL from S-mode (an SBI call) into the
               firmware and its MRET back (prepared with ctxs, under ctxok)
5296   sinterp the native interpreter of the translated contexts (U, S), for that MRET
5304   mtvec   where a native trap into M-mode goes
5312   nmtraps ECALLs from S-mode into M-mode taken natively (statistics)
5320   nmrets  MRETs done natively (statistics)
5328   mie     the hart's mie, mip (software-written bits) and mip's device-driven bits
5336   mip     (mip_hw, as at the run's start): native accesses to mie, sie, mip and sip
5344   miphw   read and write these; Python takes mie and mip back if irqdirty
5352   mideleg which interrupts S-mode takes (what sie and sip show)
5360   irqdirty 1: native code wrote mie or mip
5368   mmiofn  the device callback (Python, through ctypes; null: none): an aligned access
               the native interpreter makes to a device gets done by it without leaving
               native code: ``r = mmiofn(pa, size, store, value)``, r = 0 not done (leave
               for Python as before), 1 done (a load's value in mmioval), 2 done, leave
               after the instruction (an interrupt came up, say)
5376   mmioval the value a device load read
5384   mmiova  the virtual address the soft-TLB refill last proved maps to a device
5392   mmiopa  (with the permission the access needs) and that device's physical address
5400   nmmio   device accesses done through mmiofn (statistics)
5408   nirqs   interrupts taken natively at an MRET (statistics; last trap as for ntraps)
5416   tvdirty 1: native code wrote stvec or mtvec (Python takes both back)
5424   nsatp   satp writes done natively (statistics; Python's view follows when it moves)
5432   tlbgen  SFENCE.VMAs done natively so far: a TLB set of ``spaces`` stamped with an
               older count may hold what a fence since removed (emptied when switched to)
5440   spaces[NSPACES]  {satp, U-mode TLB set, S-mode TLB set, tlbgen stamp}: the address
               spaces whose TLB sets Python keeps, which an S-mode satp write switches to
               natively (prepared with ctxs, under ctxok; satp 0: an empty entry)
5696   instretb  the hart's instret at the run's start plus its budget: a native read of
               instret (or cycle, which counts the same here) is this less the budget left
5704   mcnten  mcounteren and scounteren (which counters S- and U-mode may read)
5712   scnten
5720   fflagsin  fflags, frm at entry; fcsrw: native code wrote fflags, frm or fcsr
5744   mtimepa the CLINT's mtime register's physical address (0: none): native loads of it
               read the time CSR's sequence (as rdtime does: mtime, tlast, treads), not
               the device callback
5752   clockfn pyhv_clock_load (codegen._clock_load_ir): a block's load outside RAM
               asks it whether it is of mtime, and gets the clock's value
====== ==================================================================

A soft TLB is NTLB entries {read tag, write tag, addend} (host = vaddr + addend),
outside the struct: one TlbSet (two TLBs: SUM clear, SUM set) per data-translation
context (privilege, MXR, satp), so a trap into the kernel and back, or a switch between
processes, changes three pointers instead of copying TLBs.

A soft-TLB write tag ``vpn | CODE_TAG`` marks a writable page that holds code: the
inline compare fails, and the refill checks the store's granule in ``codebits`` (data
next to code stays native; a store over code leaves for Python, which drops exactly the
blocks it overlaps).

The dispatch table is an array of ``NDISPATCH`` {pc, function, physical page, spare}
entries (32 bytes: an index becomes an offset by a shift)
(the page a translated block was fetched from: the dispatcher runs it only while its
virtual page still maps there, checked through the I-TLB), two-way: a pc
lives in slot ``i = (pc >> 1) & (NDISPATCH - 1)`` or ``i ^ 1`` under the tag ``pc | 1``
(pcs are even, so a tag is never 0); a tag of 0 marks an empty slot, so a new table is
untouched zero pages of an anonymous mapping and costs memory only where blocks are
linked (a table is 1 MiB, and each hart has one for every translation context it
ran: 16 a 4-hart Linux boot, 16 MiB when they were filled with all ones). After the
entries, one bit per pair of slots (``OCCUPIED``, bit ``i >> 1``) says whether either
holds a block: the native interpreter asks it at every control transfer before the 1 MiB
of entries, which lukewarm code, whose targets mostly have no block, would otherwise miss
in the host's cache.
"""

from __future__ import annotations

import ctypes
import mmap

X, F, PC, BUDGET, RAM_HOST, RAM_SIZE = 0, 256, 512, 520, 528, 536
EXIT_VADDR, EXIT_ACCESS, TABLE, CODEMAP, FPMODE, FSDIRTY, FFLAGS, RESV, MSTATUS, IRQSIE = (
    544, 552, 560, 568, 576, 584, 592, 600, 608, 616,
)
SATP, DPRIV, REFILL, IPRIV, ICHK, YIELD = 624, 632, 640, 648, 656, 664
HEAT, KNOWN, RVC, THRESH, INTERP = 672, 680, 688, 696, 704
PRIV, MTIME, TIMEOK, TREADS = 712, 720, 728, 736
CODEBITS, STORES, SMCOK = 744, 752, 760
CSRS, CSRDIRTY, MHARTID, SFPEND, SFN, SFVPN = 768, 832, 840, 848, 856, 864
TLBP, TLBP0, TLBP1, FCOPY = 928, 936, 944, 952
UART_BASE, UART_FLAGS, UART_LSR, TXN, TXBUF, DCACHE = 960, 968, 976, 984, 992, 1000
COUNTERS = 1008
TLAST = 1016
NCOUNTERS = 1 << 15  # quick blocks' run counters (u64), shared by a machine's harts
UART_READ_LSR, UART_WRITE_THR = 1, 2  # uart_flags bits
TXCAP = 4096  # transmit buffer bytes: a full buffer leaves the next THR write to Python
CTXS, CTXOK, STVEC, MEDELEG, IRQPEND, NTRAPS, NRETS = 5120, 5184, 5192, 5200, 5208, 5216, 5224
TPC, TCAUSE, TTVAL, NFAULTS = 5232, 5240, 5248, 5256
MCTX, SINTERP, MTVEC, NMTRAPS, NMRETS = 5264, 5296, 5304, 5312, 5320
MIE, MIP, MIPHW, MIDELEG, IRQDIRTY = 5328, 5336, 5344, 5352, 5360
MMIOFN, MMIOVAL, MMIOVA, MMIOPA, NMMIO = 5368, 5376, 5384, 5392, 5400
NIRQS, TVDIRTY, NSATP, TLBGEN, SPACES = 5408, 5416, 5424, 5432, 5440
INSTRETB, MCNTEN, SCNTEN = 5696, 5704, 5712
# fflags and frm: the hart's at entry (a native write of fflags, frm or fcsr replaces
# them, FCSRW says so); flags raised natively since gather in FFLAGS and MXCSR
FFLAGSIN, FRM, FCSRW = 5720, 5728, 5736
MTIMEPA, CLOCKFN = 5744, 5752
# the compiler's word that says a finished batch waits to be loaded (Compiler.kick): the
# native interpreter leaves at its next stretch start when it is set
KICKP = 5760
# the pc of the last load that left a compiled block for the CLINT's mtime (the dispatcher
# notes it; 0: none since Python looked): such loads are compiled to read the clock
CLOCKPC = 5768
# the runtime's pyhv_granule_clear: a compiled store into a page that holds code asks it
# whether its 8-byte granule holds none (out of line: ~10-20% of the code generator's time)
GRANULEFN = 5776
# the runtime's pyhv_range_clear: the same for the bytes a group of stores spans
# (codegen.access_groups)
RANGEFN = 5784
NSPACES = 8  # address spaces native satp writes switch between (xv6: kernel, processes)
SPACE_BYTES = 32
CTX_BYTES = 32  # one ctxs[] record: table, heat, TLB set, timeok
NSFVPN = 8
SF_PAGES, SF_ALL, SF_SUP = 1, 2, 4  # fences of pages in sfvpn; of all; of all, global too
# The plain CSRs in csrs[]: index = 2 * (csr & 3) + (1 if S-mode else 0)
PLAIN_CSRS = ("mscratch", "sscratch", "mepc", "sepc", "mcause", "scause", "mtval", "stval")
NTLB = 1024
TLB_ENTRY = 24
TLB_BYTES = NTLB * TLB_ENTRY
ITLB = 1024
NITLB = 256
NDISPATCH = 32768
EMPTY_TAG = (1 << 64) - 1  # an empty I-TLB entry: odd, so no vpn matches
FREE_SLOT = 0  # an empty dispatch-table slot (tags are pc | 1: see table_tag)
INVALID_TLB = (1 << 64) - 1
CODE_TAG = 1 << 62  # in a write tag: the page holds code, check the store's granule

# Exit codes of blocks and of the dispatcher.
EXIT_CONTINUE = 0  # a block's normal end: the dispatcher goes on at s->pc
EXIT_BUDGET = 1  # the run's instruction budget is used up
EXIT_LOOKUP = 2  # no native block at s->pc: Python runs it (cold) or compiles it
EXIT_SLOW = 3  # the instruction at s->pc needs Python (TLB miss, MMIO, code page, ...)
EXIT_IRQ = 4  # sstatus.SIE was set with an interrupt pending: Python takes it
EXIT_YIELD = 5  # a PAUSE on a machine whose harts take turns: the slice ends
EXIT_HOT = 6  # the stretch start at s->pc is hot (or may be in the code cache): compile it
EXIT_OPT = 7  # the block at exit_vaddr ran OPT_AFTER instructions: compile it optimised

FP_ENABLED, FP_RNE = 1, 2


class TlbEntry(ctypes.Structure):
    _fields_ = [("rtag", ctypes.c_uint64), ("wtag", ctypes.c_uint64), ("addend", ctypes.c_uint64)]


class HartState(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_uint64 * 32),
        ("f", ctypes.c_uint64 * 32),
        ("pc", ctypes.c_uint64),
        ("budget", ctypes.c_int64),
        ("ram_host", ctypes.c_uint64),
        ("ram_size", ctypes.c_uint64),
        ("exit_vaddr", ctypes.c_uint64),
        ("exit_access", ctypes.c_uint64),
        ("table", ctypes.c_void_p),
        ("codemap", ctypes.c_void_p),
        ("fpmode", ctypes.c_uint64),
        ("fsdirty", ctypes.c_uint64),
        ("fflags", ctypes.c_uint64),
        ("resv", ctypes.c_uint64),
        ("mstatus", ctypes.c_uint64),
        ("irqsie", ctypes.c_uint64),
        ("satp", ctypes.c_uint64),
        ("dpriv", ctypes.c_uint64),
        ("refill", ctypes.c_void_p),
        ("ipriv", ctypes.c_uint64),
        ("ichk", ctypes.c_uint64),
        ("yield_", ctypes.c_uint64),
        ("heat", ctypes.c_void_p),
        ("known", ctypes.c_void_p),
        ("rvc", ctypes.c_void_p),
        ("thresh", ctypes.c_uint64),
        ("interp", ctypes.c_void_p),
        ("priv", ctypes.c_uint64),
        ("mtime", ctypes.c_uint64),
        ("timeok", ctypes.c_uint64),
        ("treads", ctypes.c_uint64),
        ("codebits", ctypes.c_void_p),
        ("stores", ctypes.c_uint64),
        ("smcok", ctypes.c_uint64),
        ("csrs", ctypes.c_uint64 * 8),
        ("csrdirty", ctypes.c_uint64),
        ("mhartid", ctypes.c_uint64),
        ("sfpend", ctypes.c_uint64),
        ("sfn", ctypes.c_uint64),
        ("sfvpn", ctypes.c_uint64 * NSFVPN),
        ("tlbp", ctypes.c_void_p),
        ("tlbp0", ctypes.c_void_p),
        ("tlbp1", ctypes.c_void_p),
        ("fcopy", ctypes.c_uint64),
        ("uart_base", ctypes.c_uint64),
        ("uart_flags", ctypes.c_uint64),
        ("uart_lsr", ctypes.c_uint64),
        ("txn", ctypes.c_uint64),
        ("txbuf", ctypes.c_void_p),
        ("dcache", ctypes.c_void_p),
        ("counters", ctypes.c_void_p),
        ("tlast", ctypes.c_void_p),
        ("itlb", ctypes.c_uint64 * (2 * NITLB)),
        ("ctxs", ctypes.c_uint64 * 8),
        ("ctxok", ctypes.c_uint64),
        ("stvec", ctypes.c_uint64),
        ("medeleg", ctypes.c_uint64),
        ("irqpend", ctypes.c_uint64),
        ("ntraps", ctypes.c_uint64),
        ("nrets", ctypes.c_uint64),
        ("tpc", ctypes.c_uint64),
        ("tcause", ctypes.c_uint64),
        ("ttval", ctypes.c_uint64),
        ("nfaults", ctypes.c_uint64),
        ("mctx", ctypes.c_uint64 * 4),
        ("sinterp", ctypes.c_void_p),
        ("mtvec", ctypes.c_uint64),
        ("nmtraps", ctypes.c_uint64),
        ("nmrets", ctypes.c_uint64),
        ("mie", ctypes.c_uint64),
        ("mip", ctypes.c_uint64),
        ("miphw", ctypes.c_uint64),
        ("mideleg", ctypes.c_uint64),
        ("irqdirty", ctypes.c_uint64),
        ("mmiofn", ctypes.c_void_p),
        ("mmioval", ctypes.c_uint64),
        ("mmiova", ctypes.c_uint64),
        ("mmiopa", ctypes.c_uint64),
        ("nmmio", ctypes.c_uint64),
        ("nirqs", ctypes.c_uint64),
        ("tvdirty", ctypes.c_uint64),
        ("nsatp", ctypes.c_uint64),
        ("tlbgen", ctypes.c_uint64),
        ("spaces", ctypes.c_uint64 * (4 * NSPACES)),
        ("instretb", ctypes.c_uint64),
        ("mcnten", ctypes.c_uint64),
        ("scnten", ctypes.c_uint64),
        ("fflagsin", ctypes.c_uint64),
        ("frm", ctypes.c_uint64),
        ("fcsrw", ctypes.c_uint64),
        ("mtimepa", ctypes.c_uint64),
        ("clockfn", ctypes.c_void_p),
        ("kickp", ctypes.c_void_p),
        ("clockpc", ctypes.c_uint64),
        ("granulefn", ctypes.c_void_p),
        ("rangefn", ctypes.c_void_p),
    ]


TlbSet = TlbEntry * (2 * NTLB)  # the TLB without SUM, then the one with SUM


def new_tlb_set() -> ctypes.Array:
    tlbs = TlbSet()
    ctypes.memset(ctypes.addressof(tlbs), 0xFF, ctypes.sizeof(tlbs))
    return tlbs


# Decoded instructions per hart (native_interp.py: the decoded cache): 2 MiB, mapped
# lazily. A Linux boot's kernel code is large: 32,768 slots hit 92.7% of its
# instructions, 131,072 98.0% (a boot with nothing compiled 13% faster), 262,144 99.1%.
NDCACHE = 131072
DC_BYTES = 16  # {instruction bits, expanded instruction, op|rd|rs1|rs2, immediate}


def new_dcache() -> mmap.mmap:
    """An empty decoded-instruction cache: all zeros (an entry for the illegal
    instruction 0), mapped anonymously so its pages cost memory only once used, and
    private: a process forked with this machine (a clone group's VM) fills a copy of
    its own rather than its siblings' pages."""
    return mmap.mmap(-1, NDCACHE * DC_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def buffer_address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


OCCUPIED = 32 * NDISPATCH  # byte offset of the occupancy bits in a dispatch table
DispatchTable = ctypes.c_uint64 * (4 * NDISPATCH + NDISPATCH // 128)  # entries, bits


def _check_layout() -> None:
    s = HartState
    for name, off in (("pc", PC), ("budget", BUDGET), ("ram_host", RAM_HOST),
                      ("ram_size", RAM_SIZE), ("exit_vaddr", EXIT_VADDR),
                      ("exit_access", EXIT_ACCESS), ("table", TABLE), ("codemap", CODEMAP),
                      ("fpmode", FPMODE), ("fsdirty", FSDIRTY), ("fflags", FFLAGS),
                      ("resv", RESV), ("mstatus", MSTATUS), ("irqsie", IRQSIE),
                      ("satp", SATP), ("dpriv", DPRIV), ("refill", REFILL), ("ipriv", IPRIV),
                      ("ichk", ICHK), ("yield_", YIELD), ("heat", HEAT),
                      ("known", KNOWN), ("rvc", RVC), ("thresh", THRESH), ("interp", INTERP),
                      ("priv", PRIV), ("mtime", MTIME), ("timeok", TIMEOK), ("treads", TREADS),
                      ("codebits", CODEBITS), ("stores", STORES), ("smcok", SMCOK),
                      ("csrs", CSRS), ("csrdirty", CSRDIRTY), ("mhartid", MHARTID),
                      ("sfpend", SFPEND), ("sfn", SFN), ("sfvpn", SFVPN),
                      ("tlbp", TLBP), ("tlbp0", TLBP0), ("tlbp1", TLBP1), ("fcopy", FCOPY),
                      ("uart_base", UART_BASE), ("uart_flags", UART_FLAGS),
                      ("uart_lsr", UART_LSR), ("txn", TXN), ("txbuf", TXBUF), ("dcache", DCACHE),
                      ("counters", COUNTERS), ("tlast", TLAST),
                      ("itlb", ITLB), ("ctxs", CTXS),
                      ("ctxok", CTXOK), ("stvec", STVEC), ("medeleg", MEDELEG),
                      ("irqpend", IRQPEND), ("ntraps", NTRAPS), ("nrets", NRETS),
                      ("tpc", TPC), ("tcause", TCAUSE), ("ttval", TTVAL),
                      ("nfaults", NFAULTS), ("mctx", MCTX), ("sinterp", SINTERP),
                      ("mtvec", MTVEC), ("nmtraps", NMTRAPS), ("nmrets", NMRETS),
                      ("mie", MIE), ("mip", MIP), ("miphw", MIPHW), ("mideleg", MIDELEG),
                      ("irqdirty", IRQDIRTY), ("mmiofn", MMIOFN), ("mmioval", MMIOVAL),
                      ("mmiova", MMIOVA), ("mmiopa", MMIOPA), ("nmmio", NMMIO),
                      ("nirqs", NIRQS), ("tvdirty", TVDIRTY), ("nsatp", NSATP),
                      ("tlbgen", TLBGEN), ("spaces", SPACES), ("instretb", INSTRETB),
                      ("mcnten", MCNTEN), ("scnten", SCNTEN), ("fflagsin", FFLAGSIN),
                      ("frm", FRM), ("fcsrw", FCSRW), ("mtimepa", MTIMEPA),
                      ("clockfn", CLOCKFN), ("kickp", KICKP),
                      ("clockpc", CLOCKPC), ("granulefn", GRANULEFN),
                      ("rangefn", RANGEFN)):
        assert getattr(s, name).offset == off, name


_check_layout()


def new_table() -> ctypes.Array:
    """An empty dispatch table: zero pages of its own anonymous mapping, which cost
    host memory only once a block is linked in them."""
    # (private: a process forked with this machine, a clone group's VM, links its own)
    mem = mmap.mmap(-1, ctypes.sizeof(DispatchTable), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    table = DispatchTable.from_buffer(mem)
    table.mapping = mem  # type: ignore[attr-defined]  # alive as long as the table
    return table


def empty_table(table: ctypes.Array) -> None:
    """Unlink every block from a dispatch table (its pages go back to the host)."""
    mem = getattr(table, "mapping", None)
    if mem is not None:
        mem.madvise(mmap.MADV_DONTNEED)  # private and anonymous: reads as zeros again
    else:
        ctypes.memset(table, 0, ctypes.sizeof(table))


def table_tag(pc: int) -> int:
    """The tag a block at ``pc`` has in a dispatch table: never FREE_SLOT (pcs are even)."""
    return pc | 1


def mark_occupied(table: ctypes.Array, i: int, occupied: bool) -> None:
    """Set or clear the occupancy bit of slot ``i``'s pair."""
    w, b = 4 * NDISPATCH + (i >> 7), 1 << ((i >> 1) & 63)
    table[w] = table[w] | b if occupied else table[w] & ~b


def slot(pc: int) -> int:
    """The first of the two table slots of ``pc``."""
    return (pc >> 1) & (NDISPATCH - 1)


def flush_tlb(state: HartState) -> None:
    """Empty the current soft TLBs (with and without sstatus.SUM)."""
    if state.tlbp0:
        ctypes.memset(state.tlbp0, 0xFF, 2 * TLB_BYTES)


def flush_itlb(state: HartState) -> None:
    ctypes.memset(ctypes.addressof(state) + ITLB, 0xFF, NITLB * 16)
