"""The VM Generation ID: how a guest learns it has been cloned.

Why it exists: a clone starts from its snapshot's RAM, which holds the guest kernel's
entropy pool and every identity the guest made up (UUIDs, TCP sequence seeds, keys).
Two clones of one snapshot would then draw the same "random" numbers until something
reseeds them. Microsoft's "Virtual Machine Generation ID" (the spec QEMU's
``-device vmgenid`` and Firecracker follow) gives the guest a 128-bit random identifier
that changes whenever the machine starts again from a saved state as a new instance,
with an interrupt when it changes: Linux's ``drivers/virt/vmgenid.c`` hands the new
value to its RNG (``add_vmfork_randomness``, which reseeds it) and sends a
``NEW_VMGENID=1`` uevent to user space.

What it follows: the devicetree binding ``microsoft,vmgenid`` (Linux's
``Documentation/devicetree/bindings/rng/microsoft,vmgenid.yaml``, added in 2024):
``reg`` is the 16-byte identifier, ``interrupts`` the notification. The driver maps the
region and copies the 16 bytes out with whatever loads its ``memcpy`` uses, so byte,
halfword, word and doubleword reads all return the identifier's bytes, little-endian;
the rest of the 4 KiB window reads 0; writes do nothing (the identifier is the
host's). A ``guid`` given as a UUID is stored as QEMU stores it (Microsoft's GUID byte
order, ``uuid.UUID.bytes_le``); the driver treats the bytes as opaque anyway.

When it changes (``new_generation``): a snapshot restored as a clone and a forked
clone taking a machine over (vm/machine.py); a plain restore or a migration is the same
machine going on and keeps it, as a warm reboot does. The notification raises the PLIC
line and leaves it high: the PLIC makes the source pending on each raise and a claim
and completion end it (a line left high is not pending again), so each new identifier
interrupts the guest once, the edge the binding's example declares. A guest with no
driver (the Linux 6.1 of ../shared/guests binds only the ACPI device) never enables the
source and can still read the identifier (``devmem``).
"""

from __future__ import annotations

import os
from typing import Annotated

from ..errors import ConfigError
from ..records import MaxLen, Record, StateError, record
from .base import Device, IrqLine

GUID_SIZE = 16
COMPATIBLE = "microsoft,vmgenid"


def parse_guid(text: str) -> bytes:
    """A ``guid=`` value: ``auto`` (a fresh random identifier) or a UUID, as its 16
    bytes in the guest's memory; ConfigError otherwise."""
    if text == "auto":
        return os.urandom(GUID_SIZE)
    import uuid  # (only for a given identifier: a few ms of start-up otherwise)

    try:
        return uuid.UUID(text).bytes_le
    except ValueError:
        raise ConfigError(f"vmgenid guid '{text}': expected 'auto' or a UUID such as "
                          "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87") from None


class VmGenId(Device):
    """microsoft,vmgenid: 16 read-only bytes and a notification line."""

    name = "vmgenid"
    size = 0x1000

    def __init__(self, irq: IrqLine, guid: bytes | None = None) -> None:
        self.irq = irq
        self.guid = guid if guid is not None else os.urandom(GUID_SIZE)
        if len(self.guid) != GUID_SIZE:
            raise ValueError("a generation ID is 16 bytes")

    def new_generation(self) -> bytes:
        """A fresh random identifier, and the guest told (the line raised)."""
        self.guid = os.urandom(GUID_SIZE)
        self.irq.set(True)
        return self.guid

    def reset(self) -> None:
        """A warm reboot keeps the identifier (the same machine) and drops the line."""
        self.irq.set(False)

    def read(self, offset: int, size: int) -> int:
        if offset < 0 or offset >= GUID_SIZE:
            return 0
        return int.from_bytes(self.guid[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        return  # read-only to the guest

    def save(self) -> VmGenIdState:
        return VmGenIdState(self.guid)

    def restore(self, state: VmGenIdState) -> None:
        # (the line's level is the PLIC's state, restored with it)
        if len(state.guid) != GUID_SIZE:
            raise StateError(f"vmgenid.guid: {len(state.guid)} bytes, a generation ID "
                             f"is {GUID_SIZE}")
        self.guid = state.guid


@record
class VmGenIdState(Record):
    """The generation ID the guest reads."""

    guid: Annotated[bytes, MaxLen(GUID_SIZE)]
