"""How a pyhv command-line process ends.

When a guest powers off, the JIT's compiler thread may be in the middle of a batch (tens
of milliseconds of LLVM work, whose blocks would only serve a later run from the code
cache). A process that is about to exit need not wait for it, but neither Python's nor
LLVM's teardown may run while LLVM compiles on another thread: so such a process says it
is leaving (the machine's close then does not wait) and ends with ``os._exit`` once its
output is flushed, if the compiler is still busy by then. Everything else (disks, the
terminal, the console) is closed by the command itself before, as on any exit.

When the compiler is idle the process ends with ``os._exit`` too, after the exit work
that ``sys.exit`` would do (the ``atexit`` handlers: ``weakref.finalize`` callbacks,
``logging``'s flush, temporary directories): what it skips is the interpreter's
teardown, every module and object freed one by one, ~20 ms of a run whose guest
powers off at once (``bench/startup.py``)."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable


def run_and_exit(main: Callable[[], int]) -> None:
    """The console-script entry point around ``main``: ``sys.exit(main())`` without
    the interpreter's teardown, and without the exit handlers either while the JIT
    still compiles."""
    from ..cpu import jit

    jit.LEAVING = True
    try:
        code = main()
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if not jit.busy():
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
