"""Live migration: a running machine moved to another pyhv process over a stream socket.

The source keeps the guest running while it copies RAM (pre-copy): a first round sends
every page that is not zero, then each round sends the pages that changed since they
were sent, until what is left would take less than the downtime target to send (or the
rounds run out, or stop shrinking: a guest that writes memory as fast as it can); then
the source stops the guest, sends the pages left and every part's state (the sections a
snapshot keeps), releases its disks and says done. The destination, which has written
the pages into fresh RAM as they came, builds the machine from the config, checks and
restores the state, and answers ready; only then is the source finished. If anything
fails on the way (the destination refuses, dies, or times out), the source takes its
disks back and its guest runs on as if nothing happened.

Which pages changed: each round compares the guest's RAM with a copy of what was sent
(host memcmp, 64 KiB at a time, then per page where a block differs). This sees every
store whatever made it (JIT code, the interpreter, device DMA) at no cost to the store
paths when no migration runs (the host kernel's soft-dirty bits, CRIU's way, are not
available on every host); the price is a copy of the guest's used RAM on the source
while it migrates.

Protocol (one connection; each message: kind (1 byte), length (4 bytes, little-endian),
payload). Source to destination: ``H`` hello (JSON: pyhv version, protocol version,
machine config, RAM base and size, the token the destination expects), ``P`` pages
(repeated: u32 page number, 4096 bytes), ``S`` state (JSON sections), ``D`` done (the
source is stopped and its disks closed). Destination to source: ``A`` accepted (after
``H``), ``K`` ready (JSON: when its machine was ready, on the host's monotonic clock),
``E`` error (JSON: message).
"""

from __future__ import annotations

import ctypes
import hmac
import json
import mmap
import socket
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import PyhvError
from ..memory.ram import GuestRAM
from .snapshot import config_data, config_from_data, dump_sections

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..clock import Clock
    from .console import Console
    from .machine import Machine, RunResult

PROTOCOL = 1
PAGE = 4096
BLOCK = 16 * PAGE  # compared at once before looking at single pages
BATCH = 256  # pages per message (1 MiB)
FRAME = struct.Struct("<cI")
PAGE_NO = struct.Struct("<I")
MAX_MESSAGE = BATCH * (PAGE + PAGE_NO.size) + 4096
MAX_JSON = 64 << 20


class MigrationError(PyhvError):
    """A migration that could not be done (the source runs on)."""


@dataclass
class MigrationResult:
    ok: bool
    reason: str  # "migrated", "failed: ...", "poweroff" (the guest stopped on its own:
    # a run ended for another reason than its time being up, e.g. a power-off or quit)
    rounds: int = 0
    pages_sent: int = 0
    last_round_pages: int = 0
    total_seconds: float = 0.0
    downtime_seconds: float = 0.0  # source stopped -> destination ready
    stop_copy_seconds: float = 0.0  # of it: the source's last pages, state and disks
    build_seconds: float = 0.0  # of it: the destination building its machine


def _send(sock: socket.socket, kind: bytes, payload: bytes | memoryview = b"") -> None:
    sock.sendall(FRAME.pack(kind, len(payload)))
    if payload:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise MigrationError("the other side closed the connection")
        got += k
    return bytes(buf)


def _recv(sock: socket.socket, limit: int = MAX_MESSAGE) -> tuple[bytes, bytes]:
    kind, n = FRAME.unpack(_recv_exact(sock, FRAME.size))
    if n > limit:
        raise MigrationError(f"a message of {n} bytes: not pyhv's migration protocol")
    return kind, _recv_exact(sock, n) if n else b""


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        raise MigrationError("a damaged message") from None


# -- the source ------------------------------------------------------------------------


class _Pages:
    """What the destination has of the guest's RAM (a copy of what was sent: it starts
    all zero, as the destination's fresh RAM does), and which pages differ now."""

    def __init__(self, ram: GuestRAM) -> None:
        self.ram = ram
        self.sent = mmap.mmap(-1, ram.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.sent_mv = memoryview(self.sent)
        self.sent_pages: set[int] = set()  # (a page the balloon gave back reads zero again)
        # memcmp through ctypes: comparing memoryviews goes item by item, 12x slower
        libc = ctypes.CDLL(None)
        self._memcmp = libc.memcmp
        self._memcmp.restype = ctypes.c_int
        self._memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        self._anchor = ctypes.c_char.from_buffer(self.sent)
        self._sent_at = ctypes.addressof(self._anchor)
        self._ram_at = ram.host_address()

    def changed(self) -> list[int]:
        blocks = sorted({p >> 4 for p in self.ram.resident_pages()}
                        | {p >> 4 for p in self.sent_pages})
        size = self.ram.size
        last = size // PAGE
        cmp, ram, sent = self._memcmp, self._ram_at, self._sent_at
        out: list[int] = []
        for b in blocks:
            lo = b * BLOCK
            if cmp(ram + lo, sent + lo, min(BLOCK, size - lo)):
                for q in range(b * 16, min(b * 16 + 16, last)):
                    if cmp(ram + q * PAGE, sent + q * PAGE, PAGE):
                        out.append(q)
        return out

    def send(self, sock: socket.socket, pages: list[int]) -> None:
        mv, old = self.ram.mv, self.sent_mv
        for k in range(0, len(pages), BATCH):
            chunk = pages[k:k + BATCH]
            parts = []
            self.sent_pages.update(chunk)
            for p in chunk:
                data = mv[p * PAGE:(p + 1) * PAGE]
                old[p * PAGE:(p + 1) * PAGE] = data
                parts.append(PAGE_NO.pack(p))
                parts.append(bytes(old[p * PAGE:(p + 1) * PAGE]))
            _send(sock, b"P", b"".join(parts))

    def close(self) -> None:
        self.sent_mv.release()
        del self._anchor
        self.sent.close()


def migrate(machine: Machine, sock: socket.socket, token: str = "", max_rounds: int = 30,
            downtime: float = 0.05, run_slice: float = 0.002,
            reply_timeout: float = 60.0,
            runner: Callable[[float], RunResult] | None = None,
            progress: Callable[[MigrationResult], None] | None = None) -> MigrationResult:
    """Move ``machine`` (stopped between runs) over ``sock`` to a ``receive`` on the
    other end, running it between the copies (``runner(seconds)``, default
    ``machine.run(timeout=seconds)``: a host process passes its own, which serves its
    console and control channel too). ``progress`` is called after each round. On
    success the machine must not run again (close it); on failure its disks are its own
    again and it can run on."""
    t0 = time.monotonic()
    run = runner if runner is not None else (lambda seconds: machine.run(timeout=seconds))
    result = MigrationResult(False, "failed")
    board = machine.board
    for spec in machine.config.devices:
        if getattr(spec, "overlay", None) == "":
            return MigrationResult(False, "failed: a disk with a temporary overlay (its "
                                   "writes live only in this process); give it overlay=FILE")
    pages = _Pages(board.ram)
    released = False
    try:
        hello = {"pyhv": __version__, "protocol": PROTOCOL, "token": token,
                 "config": config_data(machine.config),
                 "ram": {"base": board.ram.base, "size": board.ram.size}}
        _send(sock, b"H", json.dumps(hello).encode())
        kind, payload = _recv(sock)
        if kind != b"A":
            raise MigrationError(_refusal(kind, payload))
        rate = 200e6  # bytes a second, measured as pages go
        dirty = pages.changed()
        best = len(dirty)
        stalled = 0
        while True:
            result.rounds += 1
            # send this round's pages in batches, the guest running in between
            for k in range(0, len(dirty), BATCH):
                chunk = dirty[k:k + BATCH]
                t = time.monotonic()
                pages.send(sock, chunk)
                took = time.monotonic() - t
                if took > 0:
                    rate = 0.7 * rate + 0.3 * (len(chunk) * PAGE / took)
                result.pages_sent += len(chunk)
                if run(run_slice).reason not in ("timeout", "limit", "stopped"):
                    result.reason = "poweroff"
                    return result
            if run(run_slice).reason not in ("timeout", "limit", "stopped"):
                result.reason = "poweroff"
                return result
            dirty = pages.changed()
            if progress is not None:
                progress(result)
            if len(dirty) < best:
                best, stalled = len(dirty), 0
            else:
                stalled += 1
            if (len(dirty) * PAGE / rate <= downtime or result.rounds >= max_rounds
                    or stalled >= 3):
                break
        # stop and copy: the guest does not run again here unless this fails
        stopped = time.monotonic()
        dirty = pages.changed()
        result.last_round_pages = len(dirty)
        pages.send(sock, dirty)
        result.pages_sent += len(dirty)
        _send(sock, b"S", json.dumps({"sections": dump_sections(machine)}).encode())
        board.release_disks()
        board.release_host_ports()
        released = True
        _send(sock, b"D")
        result.stop_copy_seconds = time.monotonic() - stopped
        sock.settimeout(reply_timeout)
        kind, payload = _recv(sock)
        if kind != b"K":
            raise MigrationError(_refusal(kind, payload))
        answer = _json(payload)
        ready = answer.get("ready")
        built = answer.get("build")
        result.build_seconds = built if isinstance(built, float) else 0.0
        result.downtime_seconds = (ready if isinstance(ready, float) else time.monotonic()) \
            - stopped
        result.ok, result.reason = True, "migrated"
        return result
    except (OSError, MigrationError) as e:
        if released:
            board.reclaim_disks()
            board.reclaim_host_ports()
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        result.reason = f"failed: {msg or type(e).__name__}"
        return result
    finally:
        pages.close()
        result.total_seconds = time.monotonic() - t0


def _refusal(kind: bytes, payload: bytes) -> str:
    if kind == b"E":
        message = _json(payload).get("message")
        return f"the destination refused: {message}"
    return f"unexpected message {kind!r} from the destination"


# -- the destination -------------------------------------------------------------------


def receive(sock: socket.socket, console: Console | None = None, clock: Clock | None = None,
            engine: str | None = None, token: str = "", timeout: float = 60.0,
            machine_class: type[Machine] | None = None) -> Machine:
    """Take a machine that ``migrate`` sends over ``sock``: returns it (an instance of
    ``machine_class``, default Machine) ready to run (the source has stopped). Anything
    wrong is answered with an error to the source (which runs on) and raised as
    MigrationError."""
    from .machine import Machine

    cls = machine_class if machine_class is not None else Machine

    sock.settimeout(timeout)
    ram: GuestRAM | None = None
    try:
        kind, payload = _recv(sock, MAX_JSON)
        if kind != b"H":
            raise MigrationError("not a pyhv migration")
        hello = _json(payload)
        if not isinstance(hello, dict) or hello.get("protocol") != PROTOCOL:
            raise MigrationError(f"migration protocol {hello.get('protocol')!r}, this pyhv "
                                 f"speaks {PROTOCOL}" if isinstance(hello, dict)
                                 else "a damaged hello")
        if not hmac.compare_digest(str(hello.get("token", "")), token):
            raise MigrationError("wrong token")
        config = config_from_data(hello.get("config"), engine)
        size = config.memory
        ram_info = hello.get("ram")
        if not isinstance(ram_info, dict) or ram_info.get("size") != size:
            raise MigrationError("the RAM the source announces is not its config's")
        ram = GuestRAM(int(ram_info["base"]), size)
        _send(sock, b"A")
        if config.engine in ("auto", "jit"):
            # start LLVM and load the JIT's runtime now, while pages stream in, not in
            # the downtime (~50 ms)
            from ..cpu.engines import jit_unavailable_reason

            jit_unavailable_reason()
        npages = size // PAGE
        mv = ram.mv
        sections = None
        while True:
            kind, payload = _recv(sock, MAX_JSON)
            if kind == b"P":
                step = PAGE_NO.size + PAGE
                if len(payload) % step:
                    raise MigrationError("a damaged page message")
                for at in range(0, len(payload), step):
                    (p,) = PAGE_NO.unpack_from(payload, at)
                    if p >= npages:
                        raise MigrationError(f"page {p} outside the guest's RAM")
                    mv[p * PAGE:(p + 1) * PAGE] = payload[at + 4:at + step]
            elif kind == b"S":
                sections = _json(payload).get("sections")
            elif kind == b"D":
                done = time.monotonic()
                break
            else:
                raise MigrationError(f"unexpected message {kind!r}")
        if sections is None:
            raise MigrationError("the source sent no machine state")
        machine = cls(config, console, clock, restore=(ram, sections))
        ram = None  # the machine's now
    except (PyhvError, OSError, ValueError, KeyError, TypeError) as e:
        if ram is not None:
            ram.close()
        message = str(e) if not isinstance(e, OSError) else (e.strerror or str(e))
        try:
            _send(sock, b"E", json.dumps({"message": message}).encode())
        except OSError:
            pass
        if isinstance(e, MigrationError):
            raise
        raise MigrationError(message) from None
    try:
        now = time.monotonic()
        _send(sock, b"K", json.dumps({"ready": now, "build": now - done}).encode())
    except OSError as e:
        machine.close()
        raise MigrationError(f"the source went away at the end ({e.strerror})") from None
    return machine
