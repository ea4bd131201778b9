"""virtio-rng (virtio 1.1, section 5.4): host entropy for the guest's /dev/hwrng.

One queue; each request is a chain of writable buffers that the device fills with bytes
from the host's CSPRNG (os.urandom). A per-request cap keeps a hostile driver from making
the host generate gigabytes in one go.
"""

from __future__ import annotations

import os

from ...records import U64, Record, record
from .device import VIRTIO_ID_RNG, VirtioDevice
from .queue import Virtqueue

MAX_BYTES_PER_REQUEST = 64 * 1024


class VirtioRng(VirtioDevice):
    device_id = VIRTIO_ID_RNG
    num_queues = 1
    name = "virtio-rng"

    def __init__(self) -> None:
        super().__init__()
        self.bytes_served = 0

    def queue_notify(self, index: int, queue: Virtqueue) -> None:
        pushed = False
        while (chain := queue.pop()) is not None:
            want = min(chain.writable_len, MAX_BYTES_PER_REQUEST)
            written = queue.write_chain(chain, os.urandom(want)) if want else 0
            self.bytes_served += written
            queue.push(chain, written)
            pushed = True
        if pushed:
            self.used_buffers(index)

    def save(self) -> RngState:
        return RngState(self.bytes_served)

    def restore(self, state: Record) -> None:
        assert isinstance(state, RngState)
        self.bytes_served = state.bytes_served


@record
class RngState(Record):
    """Bytes handed to the guest (the entropy itself is the host's, never saved)."""

    bytes_served: U64


VirtioRng.STATE = RngState
