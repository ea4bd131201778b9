"""virtio-9p: a host directory shared into the guest (device ID 9, "9P transport" in
virtio 1.1's table of device IDs, section 5; the layout below is the one the Linux
driver, net/9p/trans_virtio.c, and QEMU agree on).

One request queue. Each chain carries one 9P message in its readable buffers and room
for the reply in its writable ones; the file server (p9fs.py) answers it and the reply
is copied back. The config space holds the mount tag (``tag_len`` u16, then the tag),
which the guest names in ``mount -t 9p -o trans=virtio TAG /mnt``.

Every request is bounded before it is read: a chain whose readable part is larger than
the negotiated msize (the pages of Linux's zero-copy Twrite included, which stay within
it) is answered with Rlerror(EMSGSIZE) unread, and a reply that does not fit the writable
buffers becomes Rlerror(ENOSPC) if that fits, or is dropped (zero bytes written) if
nothing fits.

Snapshots: the device saves the session (msize) and every fid as its path inside the
share and its open flags; a restored device walks to those paths again from the root (one
component at a time, as any walk) and reopens what was open. A fid whose file has gone
meanwhile is lost, and the guest's next use of it gets EBADF.
"""

from __future__ import annotations

import errno
import struct
from typing import Annotated

from ...records import I64, U32, MaxLen, Record, record
from .device import VIRTIO_ID_9P, VirtioDevice
from .p9fs import HEADER, RLERROR, P9Server
from .queue import Virtqueue

VIRTIO_9P_MOUNT_TAG = 1 << 0
MAX_TAG_LEN = 64  # bytes of a mount tag (a short name; config space stays small)


class Virtio9p(VirtioDevice):
    device_id = VIRTIO_ID_9P
    num_queues = 1
    queue_max_size = 128
    name = "virtio-9p"

    def __init__(self, server: P9Server, tag: str) -> None:
        super().__init__()
        raw = tag.encode()
        if not 0 < len(raw) <= MAX_TAG_LEN:
            raise ValueError(f"mount tag of {len(raw)} bytes (1 to {MAX_TAG_LEN})")
        self.server = server
        self.tag = raw

    def device_features(self) -> int:
        return VIRTIO_9P_MOUNT_TAG

    def config_bytes(self) -> bytes:
        return struct.pack("<H", len(self.tag)) + self.tag

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        pushed = False
        while (chain := queue.pop()) is not None:
            limit = self.server.msize
            if chain.readable_len > limit:
                # The whole message must lie within msize; one more byte than that
                # says the guest described more than it may, and it is not read.
                request = queue.read_chain(chain, HEADER)
                reply = _lerror(request, errno.EMSGSIZE)
            else:
                reply = self.server.handle(queue.read_chain(chain))
            room = chain.writable_len
            if len(reply) > room:
                reply = _lerror(reply, errno.ENOSPC)
                if len(reply) > room:
                    reply = b""
            written = queue.write_chain(chain, reply) if reply else 0
            queue.push(chain, written)
            pushed = True
        if pushed:
            self.used_buffers(index)

    def reset(self) -> None:
        self.server.reset()

    def close(self) -> None:
        self.server.close()

    def save(self) -> P9State:
        return P9State(self.server.msize, bool(self.server.version), [
            P9FidState(fid, list(path), -1 if flags is None else flags)
            for fid, path, flags in self.server.fid_paths()])

    def restore(self, state: Record) -> None:
        assert isinstance(state, P9State)
        if not state.session:
            self.server.reset()
            return
        self.server.restore_fids([(f.fid, tuple(f.path), None if f.open_flags < 0
                                   else f.open_flags) for f in state.fids])
        self.server.msize = max(4096, min(state.msize, self.server.msize))


def _lerror(message: bytes, err: int) -> bytes:
    """Rlerror ``err`` for the message whose header (or reply header) is ``message``."""
    tag = struct.unpack_from("<H", message, 5)[0] if len(message) >= HEADER else 0xFFFF
    return struct.pack("<IBHI", HEADER + 4, RLERROR, tag, err)


@record
class P9FidState(Record):
    """One fid: where it is in the share and how it was opened (-1: not open)."""

    fid: U32
    path: Annotated[list[Annotated[str, MaxLen(255)]], MaxLen(4096)]
    open_flags: I64


@record
class P9State(Record):
    """The 9P session (msize; whether Tversion was done) and its fids by path."""

    msize: U32
    session: bool
    fids: Annotated[list[P9FidState], MaxLen(65536)]


Virtio9p.STATE = P9State
