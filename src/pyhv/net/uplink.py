"""An uplink for an in-host switch: every VM on it shares one user-mode NAT gateway.

Why: ``--net user`` gives each NIC a private network; VMs that should see each other
*and* reach the host and the world (libvirt's "default" network) sit on one in-host
switch instead, and one process joins that switch as a port whose far side is a libslirp
instance (:class:`~pyhv.net.user.UserPort`). The VMs get their leases from it
(10.0.2.15, .16, ... by MAC), the gateway 10.0.2.2 and DNS 10.0.2.3, and the port
forwards it holds reach whichever guest they name.

``pyhv uplink SWITCH [--hostfwd FWD]... [--restrict]`` runs one in the foreground.
The link MTU is Ethernet's 1500: a NIC on a switch offers no other.
"""

from __future__ import annotations

import select
import threading
import time

from .switch import SwitchPort
from .user import Forward, UserPort

ETHERNET_MTU = 1500


class SwitchUplink:
    """Moves frames between a switch port and a libslirp network until stopped."""

    def __init__(self, switch: str, forwards: tuple[Forward, ...] = (), *,
                 restrict: bool = False, runtime_dir: str | None = None) -> None:
        self.port = SwitchPort(switch, runtime_dir=runtime_dir)
        try:
            self.nat = UserPort(forwards, restrict=restrict, mtu=ETHERNET_MTU,
                                where=f"uplink of switch '{switch}'")
        except BaseException:
            self.port.close()
            raise
        self.stopping = threading.Event()

    def serve(self, timeout: float | None = None) -> None:
        """Forward frames both ways until :meth:`stop` (or ``timeout`` seconds)."""
        end = None if timeout is None else time.monotonic() + timeout
        port, nat = self.port, self.nat
        while not self.stopping.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                return
            wait = 0.5  # stop() is noticed within this
            due = nat.deadline()
            if due is not None:
                wait = min(wait, max(0.0, due - now))
            if end is not None:
                wait = min(wait, end - now)
            select.select([port.fileno(), nat.fileno()], [], [], wait)
            for frame in port.receive(256):
                nat.send(frame)
            for frame in nat.receive(256):
                port.send(frame)

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.nat.close()
        self.port.close()
