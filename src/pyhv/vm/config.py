"""The machine description (``pyhv.board.config``), for the layers above the board.

:class:`MachineConfig` and the device specs live with the board, the lowest layer that
reads them; the VM layer, the host and the CLI import them from here.
"""

from __future__ import annotations

from ..board.config import (
    ENGINES,
    MAX_RAM,
    MAX_VIRTIO_DEVICES,
    MIN_RAM,
    BalloonSpec,
    ConsoleSpec,
    DeviceSpec,
    DiskSpec,
    MachineConfig,
    NetSpec,
    RngSpec,
    ShareSpec,
    UserNetSpec,
    parse_disk_option,
    parse_mac,
    parse_memory,
    parse_net_option,
    parse_share_option,
    place,
)

__all__ = [
    "BalloonSpec",
    "ConsoleSpec",
    "DeviceSpec",
    "DiskSpec",
    "ENGINES",
    "MachineConfig",
    "MAX_RAM",
    "MAX_VIRTIO_DEVICES",
    "MIN_RAM",
    "NetSpec",
    "parse_disk_option",
    "parse_mac",
    "parse_memory",
    "parse_net_option",
    "parse_share_option",
    "place",
    "RngSpec",
    "ShareSpec",
    "UserNetSpec",
]
