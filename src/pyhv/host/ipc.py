"""What the host daemon, its VM processes and its clients share: UNIX socket addresses,
JSON-lines framing, and the VM status page.

* **UNIX sockets** have a 108-byte path limit that a deep state directory exceeds;
  :func:`unix_address` reaches such a path through ``/proc/self/fd``.
* **JSON lines**: every message between the daemon and a VM process, and between a client
  and the daemon, is one JSON object on one line (:class:`LineBuffer` splits a stream).
* **The status page** (:class:`StatusPage`, ``vms/NAME/run/status``): one page of shared
  memory per running VM. The VM process writes what it is doing (starting, running,
  idle), its guest instructions retired and its I/O counters; the daemon reads it without
  a system call or a wake-up of either side, and writes the ``notify`` flags that ask the
  VM process to tell it at once when it goes idle or wakes up (the scheduler needs that
  only under contention, see :mod:`pyhv.host.scheduler`). Each field is one aligned
  64-bit word, written whole.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_LINE = 1 << 20  # a longer message is a protocol error


@contextlib.contextmanager
def unix_address(path: str | os.PathLike[str]) -> Iterator[str]:
    """An address for ``bind``/``connect`` of the UNIX socket at ``path``: the path
    itself when short enough, else ``/proc/self/fd/N/NAME`` through its directory."""
    text = os.fspath(path)
    if len(os.fsencode(text)) < 100:
        yield text
        return
    p = Path(text)
    fd = os.open(p.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{p.name}"
    finally:
        os.close(fd)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class ProtocolError(Exception):
    """A peer sent something that is not a JSON-lines message."""


class LineBuffer:
    """Splits a byte stream into JSON messages (one object per line)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        messages: list[dict[str, Any]] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise ProtocolError("message too long")
                return messages
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                raise ProtocolError(f"not JSON: {e}") from None
            if not isinstance(message, dict):
                raise ProtocolError("a message must be a JSON object")
            messages.append(message)


# ------------------------------------------------------------------------ the status page

STATUS_SIZE = 4096
STATUS_MAGIC = b"PYHVST01"

# VM process states (StatusPage.state)
STARTING = 0  # building the machine
RUNNING = 1  # some vCPU runs guest code
IDLE = 2  # every vCPU waits (WFI): the process sleeps until a timer or input
EXITING = 3  # the machine has stopped; the process is closing down
STATE_NAMES = {STARTING: "starting", RUNNING: "running", IDLE: "idle", EXITING: "exiting"}

# StatusPage.notify bits (written by the daemon)
NOTIFY_IDLE = 1  # say {"ev": "idle"} when going idle
NOTIFY_WAKE = 2  # say {"ev": "wake"} when waking up

_FIELDS = (
    "pid",
    "state",
    "instructions",  # guest instructions retired since the VM process started
    "wakeups",  # times the machine woke from idle
    "heartbeat_ns",  # CLOCK_MONOTONIC of the last update
    "notify",
    "balloon_target",  # bytes the host asked the balloon to hold
    "balloon_actual",  # bytes the guest's balloon driver says it holds
    "console_out",  # bytes the guest wrote to its serial console
    "console_in",  # bytes typed to it
    "disk_read",  # bytes read by virtio-blk requests
    "disk_write",
    "net_tx",  # virtio-net frames sent
    "net_rx",
    "started_ns",  # CLOCK_MONOTONIC when the VM process started
    "memory",  # guest RAM, bytes
    "held",  # guest RAM resident in host memory, bytes
    "active",  # guest RAM touched in the last sampling window, bytes
    "swapped",  # guest RAM the host swapped out, bytes
    "shared",  # bytes of the VM process the host's KSM merged with others
    "guest_free",  # the guest's own free memory (balloon statistics), bytes
    "guest_available",  # the guest's available memory (balloon statistics), bytes
)
_OFFSET = {name: 8 + 8 * i for i, name in enumerate(_FIELDS)}

# The I/O table: one entry of IO_WORDS words per disk and NIC (IO_SLOTS at most, the
# board's virtio slots), written by the VM process with its other I/O counters: word 0
# is the kind (IO_DISK, IO_NET) plus the device's index among the disks or NICs << 8,
# then the words below. Budgets are the device's current terms, 0 for no limit.
IO_OFFSET = 512
IO_SLOTS = 8
IO_WORDS = 16
IO_DISK, IO_NET = 1, 2
DISK_IO_WORDS = ("throttled_ns", "throttled", "read_bytes", "write_bytes",
                 "bps", "iops", "bps_burst", "iops_burst")
NET_IO_WORDS = ("tx_throttled_ns", "tx_throttled", "tx_frames",
                "rx_throttled_ns", "rx_throttled", "rx_frames",
                "tx_bps", "tx_pps", "tx_bps_burst", "rx_bps", "rx_pps", "rx_bps_burst")
_ENGINE_OFFSET = 8 + 8 * len(_FIELDS)
_ENGINE_SIZE = 16
_U64 = struct.Struct("<Q")


class StatusPage:
    """The shared status page of one VM process (see the module docstring). Attribute
    access reads or writes the field in the shared memory: ``page.instructions = n``."""

    __slots__ = ("_map", "path")

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, STATUS_SIZE)
            elif os.fstat(fd).st_size < STATUS_SIZE:
                raise ValueError(f"{self.path}: not a status page")
            self._map = mmap.mmap(fd, STATUS_SIZE)
        finally:
            os.close(fd)
        if create:
            self._map[:8] = STATUS_MAGIC
        elif self._map[:8] != STATUS_MAGIC:
            self._map.close()
            raise ValueError(f"{self.path}: not a status page")

    def __getattr__(self, name: str) -> int:
        try:
            offset = _OFFSET[name]
        except KeyError:
            raise AttributeError(name) from None
        return int(_U64.unpack_from(self._map, offset)[0])

    def __setattr__(self, name: str, value: Any) -> None:
        offset = _OFFSET.get(name)
        if offset is None:
            object.__setattr__(self, name, value)
        else:
            _U64.pack_into(self._map, offset, int(value) & 0xFFFF_FFFF_FFFF_FFFF)

    @property
    def engine(self) -> str:
        raw = self._map[_ENGINE_OFFSET : _ENGINE_OFFSET + _ENGINE_SIZE]
        return raw.rstrip(b"\0").decode("ascii", "replace")

    @engine.setter
    def engine(self, name: str) -> None:
        raw = name.encode("ascii", "replace")[:_ENGINE_SIZE]
        self._map[_ENGINE_OFFSET : _ENGINE_OFFSET + _ENGINE_SIZE] = raw.ljust(_ENGINE_SIZE, b"\0")

    def set_io(self, slot: int, kind: int, index: int, values: dict[str, int | None]) -> None:
        """Entry ``slot`` of the I/O table: device ``index`` of ``kind`` (IO_DISK, IO_NET)
        and its words (a budget None: no limit); ``kind`` 0 empties it."""
        base = IO_OFFSET + slot * IO_WORDS * 8
        names = DISK_IO_WORDS if kind == IO_DISK else NET_IO_WORDS if kind == IO_NET else ()
        for i, name in enumerate(names, 1):
            word = int(values.get(name) or 0) & 0xFFFF_FFFF_FFFF_FFFF
            _U64.pack_into(self._map, base + 8 * i, word)
        _U64.pack_into(self._map, base, kind | index << 8 if kind else 0)

    def io(self) -> list[dict[str, Any]]:
        """The I/O table: ``{"kind": "disk" or "net", "index", ...its words}`` per device."""
        out: list[dict[str, Any]] = []
        for slot in range(IO_SLOTS):
            base = IO_OFFSET + slot * IO_WORDS * 8
            head = int(_U64.unpack_from(self._map, base)[0])
            kind = head & 0xFF
            if kind not in (IO_DISK, IO_NET):
                continue
            names = DISK_IO_WORDS if kind == IO_DISK else NET_IO_WORDS
            entry: dict[str, Any] = {"kind": "disk" if kind == IO_DISK else "net",
                                     "index": head >> 8 & 0xFF}
            for i, name in enumerate(names, 1):
                entry[name] = int(_U64.unpack_from(self._map, base + 8 * i)[0])
            out.append(entry)
        return out

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, "unknown")

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        data["engine"] = self.engine
        data["state"] = self.state_name
        return data

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()
