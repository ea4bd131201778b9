"""Shared by every test directory: tests/engine_world.py (one hart on any engine, random
looped programs) is importable as ``engine_world``, tests/daemon_process.py as
``daemon_process``."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
