"""Ethernet MAC addresses as users write them (``52:54:00:12:34:56``)."""

from __future__ import annotations


def parse_mac(text: str) -> bytes | None:
    """Six bytes from six two-digit hex pairs; None if malformed or multicast."""
    parts = text.split(":")
    if len(parts) != 6:
        return None
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        return None
    if any(len(p) != 2 for p in parts) or raw[0] & 1:  # no multicast addresses
        return None
    return raw
