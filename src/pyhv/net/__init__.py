"""Host-side networking for VMs.

Why it exists: a guest's virtio-net device needs somewhere to put the Ethernet frames it
transmits and something to take received frames from. :class:`SwitchPort` is that
somewhere for VMs on the same host: every VM process attached to the same switch name
(``pyhv run ... --net switch=NAME``) can reach every other, with no daemon to run. See
:mod:`pyhv.net.switch` for the protocol. :mod:`pyhv.net.user` (``--net user``) gives a
NIC a private NAT to the host and the world through libslirp (:mod:`pyhv.net.slirp`),
and :mod:`pyhv.net.tap` (``--net tap,ifname=NAME``) puts it on a host TAP interface.
"""

from __future__ import annotations

from typing import Any

# Loaded on first use (PEP 562): a machine without a NIC only needs ``pyhv.net.mac``
# (its config checks MACs), and the switch's imports (socket, secrets, threading...)
# cost every start ~5 ms.
_SWITCH = {"MAX_FRAME", "MIN_FRAME", "SwitchPort", "default_runtime_dir", "switch_directory"}


def __getattr__(name: str) -> Any:
    if name in _SWITCH:
        from . import switch

        return getattr(switch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MAX_FRAME", "MIN_FRAME", "SwitchPort", "default_runtime_dir", "switch_directory"]
