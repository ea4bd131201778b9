"""A validated, immutable description of one machine (what `pyhv run` is asked to build).

It lives with the board, the lowest layer that reads it; ``pyhv.vm.config`` re-exports it
for the layers above."""

from __future__ import annotations

from ..cpu.engines import DEFAULT_ENGINE, ENGINE_NAMES
from ..devices.io_budget import Limits
from ..errors import ConfigError
from ..lightdata import dataclass, replace
from ..net.mac import parse_mac
from . import memmap

ENGINES = ENGINE_NAMES  # "auto" picks "jit" where llvmlite works, else "translate"
MAX_VIRTIO_DEVICES = 8  # the virt board's virtio-mmio slots
MIN_RAM = 16 * 1024 * 1024
MAX_RAM = 16 * 1024 * 1024 * 1024


def parse_memory(text: str) -> int:
    """A user's memory size ("128M", "1G", QEMU's -m syntax), checked against the limits."""
    from ..board.loader import parse_size

    size = parse_size(text)
    if not MIN_RAM <= size <= MAX_RAM:
        raise ConfigError(
            f"memory size '{text}' is out of range ({MIN_RAM >> 20} MiB to {MAX_RAM >> 30} GiB)"
        )
    if size % (1024 * 1024):
        raise ConfigError(f"memory size '{text}' must be a whole number of MiB")
    return size


@dataclass(frozen=True)
class DiskSpec:
    """A virtio-blk disk: a raw image, optionally read-only or behind a COW overlay.

    ``overlay`` is a file path (created if missing, kept afterwards), or "" for a
    temporary overlay dropped when the VM exits (QEMU's ``snapshot=on``)."""

    path: str
    read_only: bool = False
    overlay: str | None = None
    slot: int | None = None  # virtio-mmio transport (QEMU's bus=virtio-mmio-bus.N); see place
    serial: str | None = None  # what GET_ID answers (QEMU's serial=); default: from the file
    # I/O budget (devices/io_budget.py): bytes/s, requests/s, their bursts; None: no limit
    bps: int | None = None
    iops: int | None = None
    bps_burst: int | None = None
    iops_burst: int | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.bps, self.iops, self.bps_burst, self.iops_burst)

    def __post_init__(self) -> None:
        try:
            self.limits  # noqa: B018 - checks the terms
        except ConfigError as e:
            raise ConfigError(f"disk '{self.path}': {e}") from None
        if self.read_only and self.overlay is not None:
            raise ConfigError(f"disk '{self.path}': 'ro' and 'overlay' cannot be combined")
        if self.serial is not None and (len(self.serial.encode()) > 20
                                        or not self.serial.isprintable()):
            raise ConfigError(f"disk '{self.path}': serial '{self.serial}' must be at most "
                              "20 printable characters")


USER_MTU = 65520  # user networking's default link MTU
MIN_MTU, MAX_MTU = 576, 65520  # IPv4's minimum; libslirp's maximum is 65521


@dataclass(frozen=True)
class UserNetSpec:
    """User-mode networking (libslirp, ``pyhv.net.user``): the guest's way out to the host
    and the world. ``hostfwd`` holds QEMU-style forwards as written
    (``tcp:[ADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT``), each checked here."""

    hostfwd: tuple[str, ...] = ()
    restrict: bool = False  # the guest reaches nothing outside (forwards still work)
    # The link's MTU (the NIC offers it, VIRTIO_NET_F_MTU; libslirp's if_mtu/if_mru):
    # 65520 as slirp4netns, as large frames cost the guest and the device far less per
    # byte; 1500 gives the guest QEMU's view exactly
    mtu: int = USER_MTU

    def __post_init__(self) -> None:
        from ..net.user import parse_hostfwd

        object.__setattr__(self, "hostfwd", tuple(self.hostfwd))
        for text in self.hostfwd:
            parse_hostfwd(text)
        if not isinstance(self.mtu, int) or not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ConfigError(f"mtu={self.mtu}: the link MTU is {MIN_MTU} to {MAX_MTU}")

    def describe(self) -> str:
        """The backend as the ``--net`` option writes it: ``user,hostfwd=...,restrict=on``."""
        return ",".join(["user", *(f"hostfwd={h}" for h in self.hostfwd),
                         *(["restrict=on"] if self.restrict else []),
                         *([f"mtu={self.mtu}"] if self.mtu != USER_MTU else [])])


@dataclass(frozen=True)
class NetSpec:
    """A virtio-net NIC on the in-host virtual switch ``switch``, on its own user-mode
    network ``user``, or on the host's TAP interface ``tap`` (exactly one of the three)."""

    switch: str | None
    mac: str | None = None  # None: a random locally administered 52:54:00:xx:xx:xx
    slot: int | None = None
    # I/O budgets per direction (devices/io_budget.py): bytes/s, frames/s, byte burst
    tx_bps: int | None = None
    tx_pps: int | None = None
    tx_bps_burst: int | None = None
    rx_bps: int | None = None
    rx_pps: int | None = None
    rx_bps_burst: int | None = None
    user: UserNetSpec | None = None
    tap: str | None = None  # the host interface's name

    @property
    def tx_limits(self) -> Limits:
        return Limits(self.tx_bps, self.tx_pps, self.tx_bps_burst)

    @property
    def rx_limits(self) -> Limits:
        return Limits(self.rx_bps, self.rx_pps, self.rx_bps_burst)

    @property
    def backend(self) -> str:
        """Where the NIC's frames go, for messages: ``switch NAME`` or ``user,...``."""
        if self.user is not None:
            return self.user.describe()
        return f"tap,ifname={self.tap}" if self.tap is not None else f"switch {self.switch}"

    def __post_init__(self) -> None:
        if [self.switch, self.user, self.tap].count(None) != 2:
            raise ConfigError("a NIC needs exactly one of switch=NAME, user and "
                              "tap,ifname=NAME")
        if self.tap is not None:
            from ..net.tap import check_ifname

            check_ifname(self.tap)
        try:
            self.tx_limits  # noqa: B018 - checks the terms
            self.rx_limits  # noqa: B018
        except ConfigError as e:
            raise ConfigError(f"NIC on {self.backend}: {e}") from None
        if self.mac is not None and parse_mac(self.mac) is None:
            raise ConfigError(f"invalid MAC address '{self.mac}' (expected 52:54:00:12:34:56)")


@dataclass(frozen=True)
class RngSpec:
    """virtio-rng fed from the host's entropy."""

    slot: int | None = None


@dataclass(frozen=True)
class BalloonSpec:
    """virtio-balloon: the host can ask the guest to give memory back."""

    slot: int | None = None


@dataclass(frozen=True)
class ConsoleSpec:
    """virtio-console (hvc0) alongside the UART; output goes to the same terminal."""

    slot: int | None = None


@dataclass(frozen=True)
class ShareSpec:
    """A host directory shared into the guest over virtio-9p (9P2000.L): the guest
    mounts it with ``mount -t 9p -o trans=virtio,version=9p2000.L TAG /mnt``.
    ``read_only``: every change fails with EROFS in the guest."""

    path: str
    tag: str
    read_only: bool = False
    slot: int | None = None

    def __post_init__(self) -> None:
        import os

        from ..devices.virtio.p9 import MAX_TAG_LEN  # (only when a share is configured)

        if not os.path.isdir(self.path):
            what = "does not exist" if not os.path.exists(self.path) else "is not a directory"
            raise ConfigError(f"--share '{self.path}': the host directory {what}")
        raw = self.tag.encode("utf-8", "surrogateescape")
        if not raw or len(raw) > MAX_TAG_LEN or not self.tag.isprintable() or \
                any(c in self.tag for c in " ,"):
            raise ConfigError(f"--share '{self.path}': tag '{self.tag}' must be 1 to "
                              f"{MAX_TAG_LEN} printable bytes without spaces or commas")


DeviceSpec = DiskSpec | NetSpec | RngSpec | BalloonSpec | ConsoleSpec | ShareSpec


def place(devices: tuple[DeviceSpec, ...], slots: int = MAX_VIRTIO_DEVICES) -> list[int]:
    """The virtio-mmio transport of each device, as QEMU's virt board picks them: in
    command-line order, a device naming its transport (``slot``, QEMU's
    ``bus=virtio-mmio-bus.N``, N counting from 0x1000_1000) gets that one, and the
    others the highest free one (so the first -device lands at 0x1000_8000, which the
    DTB lists first). ConfigError for a slot out of range or taken."""
    taken: list[bool] = [False] * slots
    out: list[int] = []
    for spec in devices:
        slot = spec.slot
        if slot is None:
            free = [i for i in range(slots - 1, -1, -1) if not taken[i]]
            if not free:
                raise ConfigError(f"{len(devices)} virtio devices: the virt board has "
                                  f"{slots} virtio-mmio slots")
            slot = free[0]
        elif not 0 <= slot < slots:
            raise ConfigError(f"virtio-mmio-bus.{slot} does not exist (the virt board has "
                              f"virtio-mmio-bus.0 to .{slots - 1})")
        elif taken[slot]:
            raise ConfigError(f"virtio-mmio-bus.{slot} is full (one device per transport)")
        taken[slot] = True
        out.append(slot)
    return out


@dataclass(frozen=True)
class MachineConfig:
    kernel: str | None = None
    bios: str = "default"  # "default" (OpenSBI fw_dynamic), "none", or a firmware path
    initrd: str | None = None
    append: str | None = None
    memory: int = 128 * 1024 * 1024
    smp: int = 1
    dtb: str | None = None
    engine: str = DEFAULT_ENGINE  # one of ENGINES; resolved when the Machine is built
    no_reboot: bool = False
    devices: tuple[DeviceSpec, ...] = ()
    # The VM generation ID device (devices/vmgenid.py): None (none, QEMU's board as
    # is), "auto" (a random identifier at boot) or the UUID it starts with. pyhv's own
    # front ends give every machine one (`pyhv run --vmgenid`); pyhv-qemu, as QEMU,
    # only with -device vmgenid.
    vmgenid: str | None = None

    def with_fresh_macs(self) -> MachineConfig:
        """This config with every NIC's MAC left to be drawn afresh (a clone's)."""
        return replace(self, devices=tuple(
            replace(d, mac=None) if isinstance(d, NetSpec) else d
            for d in self.devices))

    def __post_init__(self) -> None:
        if not 1 <= self.smp <= memmap.MAX_HARTS:
            raise ConfigError(
                f"--smp {self.smp}: the virt board supports 1 to {memmap.MAX_HARTS} harts"
            )
        if not MIN_RAM <= self.memory <= MAX_RAM:
            raise ConfigError(
                f"memory size {self.memory // (1024 * 1024)} MiB is out of range "
                f"({MIN_RAM >> 20} MiB to {MAX_RAM >> 30} GiB)"
            )
        if self.memory % (1024 * 1024):
            raise ConfigError(f"memory size {self.memory} must be a whole number of MiB")
        if self.engine not in ENGINES:
            raise ConfigError(
                f"engine '{self.engine}' is not available (choose from: {', '.join(ENGINES)})"
            )
        if self.bios == "none" and self.kernel is None:
            raise ConfigError("--bios none needs a --kernel to run")
        if self.initrd is not None and self.kernel is None:
            raise ConfigError("--initrd needs a --kernel")
        if self.append is not None and "\0" in self.append:
            raise ConfigError("the kernel command line (--append) contains a NUL character")
        if len(self.devices) > MAX_VIRTIO_DEVICES:
            raise ConfigError(
                f"{len(self.devices)} virtio devices: the virt board has "
                f"{MAX_VIRTIO_DEVICES} virtio-mmio slots"
            )
        place(self.devices)
        if self.vmgenid is not None:
            from ..devices.vmgenid import parse_guid

            parse_guid(self.vmgenid)
        tags = [d.tag for d in self.devices if isinstance(d, ShareSpec)]
        for tag in tags:
            if tags.count(tag) > 1:
                raise ConfigError(f"--share: tag '{tag}' is given to two shares (each "
                                  "share needs its own tag)")
        disks = [d.path for d in self.devices if isinstance(d, DiskSpec)]
        for path in disks:
            if disks.count(path) > 1:
                raise ConfigError(f"disk '{path}' is attached twice")


def parse_rate(text: str, what: str) -> int:
    """A positive count with an optional binary suffix: ``2M`` = 2 MiB (a byte rate),
    ``200`` = 200. The error names ``what``."""
    t = text.strip()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:].lower(), 1)
    digits = t[:-1] if mult > 1 else t
    if not digits.isdigit() or int(digits) <= 0:
        raise ConfigError(f"{what}: '{text}' is not a positive number (such as 200, 2M)")
    return int(digits) * mult


_DISK_RATES = ("bps", "iops", "bps_burst", "iops_burst")


def parse_disk_option(text: str) -> DiskSpec:
    """``--disk PATH[,ro][,overlay[=FILE]][,bps=N][,iops=N][,bps_burst=N][,iops_burst=N]``."""
    path, *opts = text.split(",")
    if not path:
        raise ConfigError(f"--disk '{text}': missing the image path")
    read_only = False
    overlay = None
    rates: dict[str, int] = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key in ("ro", "readonly") and not eq:
            read_only = True
        elif key == "overlay":
            overlay = value if eq else ""
            if eq and not value:
                raise ConfigError(f"--disk '{text}': overlay= needs a file name")
        elif key in _DISK_RATES and eq:
            rates[key] = parse_rate(value, f"--disk '{text}': {key}")
        else:
            raise ConfigError(
                f"--disk '{text}': unknown option '{opt}' (known: ro, overlay[=FILE], "
                "bps=, iops=, bps_burst=, iops_burst=)"
            )
    return DiskSpec(path, read_only, overlay, bps=rates.get("bps"), iops=rates.get("iops"),
                    bps_burst=rates.get("bps_burst"), iops_burst=rates.get("iops_burst"))


def parse_share_option(text: str) -> ShareSpec:
    """``--share HOSTDIR,tag=TAG[,ro]``."""
    path, *opts = text.split(",")
    if not path:
        raise ConfigError(f"--share '{text}': missing the host directory")
    tag = None
    read_only = False
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key == "tag" and eq:
            tag = value
        elif key in ("ro", "readonly") and (not eq or value in ("on", "1", "true")):
            read_only = True
        else:
            raise ConfigError(f"--share '{text}': unknown option '{opt}' (known: tag=TAG, ro)")
    if tag is None:
        raise ConfigError(f"--share '{text}': tag=TAG is required (the guest mounts the "
                          "share by its tag)")
    return ShareSpec(path, tag, read_only)


_NET_RATES = ("tx_bps", "tx_pps", "tx_bps_burst", "rx_bps", "rx_pps", "rx_bps_burst")


def parse_net_option(text: str) -> NetSpec:
    """``--net switch=NAME|user[,hostfwd=tcp:[ADDR]:PORT-[GADDR]:GPORT]...[,restrict=on]``
    ``[,mtu=N]|tap,ifname=NAME`` and ``[,mac=52:54:00:..][,tx_bps=N][,rx_bps=N]...``."""
    fields: dict[str, str] = {}
    rates: dict[str, int] = {}
    hostfwd: list[str] = []
    user = tap = False
    restrict: bool | None = None
    mtu: int | None = None
    usage = (f"--net '{text}': expected switch=NAME, user[,hostfwd=tcp::HOSTPORT-:GUESTPORT]"
             f"...[,restrict=on][,mtu=N] or tap,ifname=NAME, then [mac=ADDRESS] and budgets "
             f"({', '.join(_NET_RATES)})")
    for opt in text.split(","):
        key, eq, value = opt.partition("=")
        if eq and key in _NET_RATES:
            rates[key] = parse_rate(value, f"--net '{text}': {key}")
        elif key == "user" and not eq:
            user = True
        elif key == "tap" and not eq:
            tap = True
        elif key == "hostfwd" and eq:
            hostfwd.append(value)
        elif key == "restrict":
            if not eq or value in ("on", "yes", "true"):
                restrict = True
            elif value in ("off", "no", "false"):
                restrict = False
            else:
                raise ConfigError(f"--net '{text}': restrict= takes on or off, not '{value}'")
        elif key == "mtu" and eq:
            if not value.isdigit():
                raise ConfigError(f"--net '{text}': mtu= takes a number of bytes, not "
                                  f"'{value}'")
            mtu = int(value)
        elif eq and key in ("switch", "mac", "ifname"):
            fields[key] = value
        else:
            raise ConfigError(f"{usage}; unknown option '{opt}'")
    if user + tap + ("switch" in fields) > 1:
        raise ConfigError(f"--net '{text}': choose one of switch=NAME, user and tap")
    if tap != ("ifname" in fields):
        raise ConfigError(f"--net '{text}': a TAP NIC is tap,ifname=NAME (and ifname= "
                          "belongs to tap)")
    if not user and (hostfwd or restrict is not None or mtu is not None):
        raise ConfigError(f"--net '{text}': hostfwd=, restrict= and mtu= belong to user "
                          "networking (--net user,...)")
    if not user and not tap and not fields.get("switch"):
        raise ConfigError(f"--net '{text}': switch=NAME, user or tap,ifname=NAME is required")
    try:
        user_spec = UserNetSpec(tuple(hostfwd), bool(restrict),
                                USER_MTU if mtu is None else mtu) if user else None
    except ConfigError as e:
        raise ConfigError(f"--net '{text}': {e}") from None
    return NetSpec(fields.get("switch"), fields.get("mac"), None,
                   rates.get("tx_bps"), rates.get("tx_pps"), rates.get("tx_bps_burst"),
                   rates.get("rx_bps"), rates.get("rx_pps"), rates.get("rx_bps_burst"),
                   user=user_spec, tap=fields.get("ifname") if tap else None)
