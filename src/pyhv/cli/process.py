"""How a pyhv command-line process ends.

When a guest powers off, the JIT's compiler thread may be in the middle of a batch (tens
of milliseconds of LLVM work, whose blocks would only serve a later run from the code
cache). A process that is about to exit need not wait for it, but neither Python's nor
LLVM's teardown may run while LLVM compiles on another thread: so such a process says it
is leaving (the machine's close then does not wait) and ends with ``os._exit`` once its
output is flushed, if the compiler is still busy by then. Everything else (disks, the
terminal, the console) is closed by the command itself before, as on any exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def run_and_exit(main: Callable[[], int]) -> None:
    """The console-script entry point around ``main``: ``sys.exit(main())``, leaving
    at once (without teardown) while the JIT still compiles."""
    from ..cpu import jit

    jit.LEAVING = True
    try:
        code = main()
    except SystemExit as e:
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if jit.busy():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)
