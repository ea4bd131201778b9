"""VM definitions: the persisted, human-editable description of one VM.

A :class:`VMDefinition` is immutable and always valid: its constructor checks every
field and raises :class:`~pyhv.host.errors.DefinitionError` naming the field as it is
spelled in the TOML file (``memory``, ``boot.kernel``, ``disk[1].path``, ``qos.limit``).
:meth:`VMDefinition.from_toml` / :meth:`VMDefinition.from_dict` also refuse unknown keys
(a typo must not be silently ignored) and values of the wrong type, and resolve relative
paths against the directory of the definition file. The layout is documented, with an
example, in ``docs/vm-definition.md``.

:meth:`VMDefinition.to_machine_config` turns a definition into the
:class:`~pyhv.vm.config.MachineConfig` that :class:`~pyhv.vm.machine.Machine` builds.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..board import memmap
from ..errors import ConfigError
from ..vm.config import MAX_RAM, MAX_VIRTIO_DEVICES, MIN_RAM, parse_mac
from .errors import DefinitionError

if TYPE_CHECKING:
    from ..vm.config import MachineConfig

MiB = 1024 * 1024
GiB = 1024 * MiB

ENGINES = ("auto", "interp", "translate", "jit")
FIRMWARE_KEYWORDS = ("default", "none")
#: ESXi's share levels, per vCPU.
SHARE_LEVELS = {"low": 500, "normal": 1000, "high": 2000}
MAX_SHARES = 1_000_000  # as ESXi's custom shares: the scheduler's sums stay exact
MAX_INT = 1 << 63  # integers in a definition are TOML's: 64-bit
DEFAULT_SHARES_PER_VCPU = SHARE_LEVELS["normal"]
MAX_VCPUS = memmap.MAX_HARTS

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}\Z")
NAME_RULE = (
    "lowercase letters, digits, '-' and '_', starting with a letter or digit, "
    "at most 63 characters"
)
SWITCH_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.match(name) is not None


def format_memory(size: int) -> str:
    """``268435456`` -> ``"256M"``, ``2147483648`` -> ``"2G"`` (whole MiB sizes)."""
    if size % GiB == 0:
        return f"{size // GiB}G"
    if size % MiB == 0:
        return f"{size // MiB}M"
    return f"{size}B"


def format_percent(value: float | None) -> str:
    if value is None:
        return "unlimited"
    return f"{value:g}%"


# ------------------------------------------------------------------------ the dataclasses


@dataclass(frozen=True)
class Boot:
    """How the VM boots (``[boot]``): firmware, payload, initrd, command line, DTB.

    ``firmware`` is ``"default"`` (OpenSBI fw_dynamic from qemu-system-data), ``"none"``
    (the kernel runs in M-mode from 0x80000000) or a firmware file."""

    firmware: str = "default"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    dtb: str | None = None


@dataclass(frozen=True)
class Disk:
    """A virtio-blk disk (``[[disk]]``).

    ``overlay`` is None (writes go to the image), ``""`` (writes go to a temporary
    copy-on-write file dropped when the VM stops; ``overlay = true`` in TOML) or the
    path of a persistent overlay file (created when missing)."""

    path: str
    readonly: bool = False
    overlay: str | None = None
    # I/O budget (pyhv.devices.io_budget): bytes/s, requests/s and their bursts (the
    # buckets' sizes); None: no limit
    bps: int | None = None
    iops: int | None = None
    bps_burst: int | None = None
    iops_burst: int | None = None

    @property
    def writes_image(self) -> bool:
        """True when the guest's writes reach the image file itself."""
        return not self.readonly and self.overlay is None


@dataclass(frozen=True)
class Net:
    """A virtio-net NIC (``[[net]]``) on the in-host virtual switch ``switch``, on a
    user-mode network of its own (``user = true``: libslirp's DHCP, DNS and NAT, with
    ``hostfwd`` forwards as QEMU writes them, ``restrict`` keeping the guest in, ``mtu``),
    or on the host's TAP interface ``tap``."""

    switch: str | None
    mac: str | None = None
    # I/O budgets per direction (tx: frames the guest sends; rx: frames for the guest):
    # bytes/s, frames/s, the byte bucket's size; None: no limit
    tx_bps: int | None = None
    tx_pps: int | None = None
    tx_bps_burst: int | None = None
    rx_bps: int | None = None
    rx_pps: int | None = None
    rx_bps_burst: int | None = None
    user: bool = False
    hostfwd: tuple[str, ...] = ()
    restrict: bool = False
    mtu: int | None = None  # user networking's link MTU; None: its default (65520)
    tap: str | None = None  # instead of a switch: the host's TAP interface of that name


@dataclass(frozen=True)
class Share:
    """A host directory shared into the guest over virtio-9p (``[[share]]``), mounted in
    the guest by its ``tag``; ``readonly``: the guest cannot change it."""

    path: str
    tag: str
    readonly: bool = False


#: The I/O budget keys of a ``[[disk]]`` and a ``[[net]]``, and (burst, rate) pairs.
DISK_RATES = ("bps", "iops", "bps_burst", "iops_burst")
NET_RATES = ("tx_bps", "tx_pps", "tx_bps_burst", "rx_bps", "rx_pps", "rx_bps_burst")
_BURSTS = {"bps_burst": "bps", "iops_burst": "iops", "tx_bps_burst": "tx_bps",
           "rx_bps_burst": "rx_bps"}
#: Budget keys counted in bytes (written back as sizes: "2M"); the others count requests.
BYTE_RATES = ("bps", "bps_burst", "tx_bps", "tx_bps_burst", "rx_bps", "rx_bps_burst")


def format_rate(value: int, key: str = "bps") -> str | int:
    """A budget as the definition writes it: a byte rate in whole KiB/MiB/GiB as a size
    string (``2097152`` -> ``"2M"``), anything else as the integer."""
    if key in BYTE_RATES:
        for unit, size in (("G", GiB), ("M", MiB), ("K", 1024)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return value


@dataclass(frozen=True)
class QoS:
    """CPU terms (``[qos]``), see DESIGN.md "Scheduling terms".

    ``shares``: weight under contention (None: 1000 per vCPU, filled in by
    :class:`VMDefinition`); ``reservation``: guaranteed CPU in percent of one host CPU;
    ``limit``: maximum CPU in percent of one host CPU (None: unlimited)."""

    shares: int | None = None
    reservation: float = 0
    limit: float | None = None


#: Memory shares per MiB of a VM's memory, by ESXi's level names (normal: 10 per MB).
MEMORY_SHARE_LEVELS = {"low": 5, "normal": 10, "high": 20}
DEFAULT_MEMORY_SHARES_PER_MIB = MEMORY_SHARE_LEVELS["normal"]


@dataclass(frozen=True)
class MemoryTerms:
    """Memory terms (``[memory]``), as ESXi's, applied by the host daemon when the VMs
    hold more than the host's memory budget (host/memory.py).

    ``shares``: weight when memory is short (None: 10 per MiB of the VM's memory, filled
    in by :class:`VMDefinition`); ``reservation``: bytes never taken back and held for it
    by admission; ``limit``: the most the guest may hold, in bytes (None: its memory),
    enforced through its balloon."""

    shares: int | None = None
    reservation: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class VMDefinition:
    name: str
    vcpus: int = 1
    memory: int = 128 * MiB  # bytes
    engine: str = "auto"
    boot: Boot = field(default_factory=Boot)
    disks: tuple[Disk, ...] = ()
    nets: tuple[Net, ...] = ()
    shares: tuple[Share, ...] = ()
    rng: bool = False
    balloon: bool = False
    vconsole: bool = False
    qos: QoS = field(default_factory=QoS)
    autostart: bool = False
    memory_terms: MemoryTerms = field(default_factory=MemoryTerms)

    def __post_init__(self) -> None:
        # Lists are accepted from Python callers; the definition keeps tuples.
        object.__setattr__(self, "disks", tuple(self.disks))
        object.__setattr__(self, "nets", tuple(self.nets))
        object.__setattr__(self, "shares", tuple(self.shares))
        _validate(self)
        if self.qos.shares is None:
            object.__setattr__(
                self, "qos", replace(self.qos, shares=DEFAULT_SHARES_PER_VCPU * self.vcpus)
            )
        if self.memory_terms.shares is None:
            object.__setattr__(self, "memory_terms", replace(
                self.memory_terms, shares=self.default_memory_shares))

    @property
    def default_memory_shares(self) -> int:
        return DEFAULT_MEMORY_SHARES_PER_MIB * (self.memory // MiB)

    @property
    def memory_limit(self) -> int:
        """The most this VM's guest may hold (its memory unless ``memory.limit``)."""
        limit = self.memory_terms.limit
        return self.memory if limit is None else limit

    # --------------------------------------------------------------------- reading

    @classmethod
    def from_toml(
        cls,
        text: str,
        source: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> VMDefinition:
        """Parse and validate a TOML definition.

        ``source`` names the text in error messages (usually the file name). Relative
        paths resolve against ``base_dir``; by default the directory of ``source`` when
        one is given (a file name), else the current directory."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DefinitionError(None, f"invalid TOML: {e}", source) from None
        if base_dir is None and source is not None and not source.startswith("<"):
            base_dir = os.path.dirname(os.path.abspath(source))
        return cls.from_dict(data, source, base_dir)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VMDefinition:
        """Read a definition file (relative paths in it resolve against its directory)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise DefinitionError(None, f"cannot read: {e.strerror}", path) from None
        except UnicodeDecodeError:
            raise DefinitionError(None, "not a text (UTF-8) file", path) from None
        return cls.from_toml(text, path)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        source: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> VMDefinition:
        """Validate a definition given as the dict its TOML file parses to (also the
        JSON form of the REST API)."""
        base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
        try:
            return cls(**_kwargs_from_dict(data, base))
        except DefinitionError as e:
            raise e.with_source(source) from None

    @classmethod
    def from_machine_config(cls, config: MachineConfig, name: str) -> VMDefinition:
        """The definition of a machine described by ``config`` (a snapshot's): its
        vCPUs, memory, engine, boot images and devices, default QoS. Slot numbers and
        disk serials are not kept (a fresh boot places the devices in the definition's
        order); a NIC keeps its MAC (None: left for :meth:`Host.create` to draw)."""
        from ..vm import config as mc

        disks: list[Disk] = []
        nets: list[Net] = []
        shares: list[Share] = []
        rng = balloon = vconsole = False
        for d in config.devices:
            if isinstance(d, mc.DiskSpec):
                disks.append(Disk(d.path, d.read_only, d.overlay,
                                  **{k: getattr(d, k) for k in DISK_RATES}))
            elif isinstance(d, mc.NetSpec):
                nets.append(Net(d.switch, d.mac, **{k: getattr(d, k) for k in NET_RATES},
                                **_user_fields(d.user), tap=d.tap))
            elif isinstance(d, mc.ShareSpec):
                shares.append(Share(d.path, d.tag, d.read_only))
            elif isinstance(d, mc.RngSpec):
                rng = True
            elif isinstance(d, mc.BalloonSpec):
                balloon = True
            elif isinstance(d, mc.ConsoleSpec):
                vconsole = True
        boot = Boot(firmware=config.bios, kernel=config.kernel, initrd=config.initrd,
                    cmdline=config.append, dtb=config.dtb)
        return cls(name=name, vcpus=config.smp, memory=config.memory,
                   engine=config.engine if config.engine in ENGINES else "auto", boot=boot,
                   disks=tuple(disks), nets=tuple(nets), shares=tuple(shares), rng=rng,
                   balloon=balloon, vconsole=vconsole)

    # --------------------------------------------------------------------- writing

    def to_dict(self) -> dict[str, Any]:
        """The definition as its TOML document (a dict of TOML/JSON values, no None)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "vcpus": self.vcpus,
            "memory": self._memory_doc(),
            "engine": self.engine,
            "autostart": self.autostart,
        }
        boot: dict[str, Any] = {"firmware": self.boot.firmware}
        for key in ("kernel", "initrd", "cmdline", "dtb"):
            value = getattr(self.boot, key)
            if value is not None:
                boot[key] = value
        doc["boot"] = boot
        if self.disks:
            disks = []
            for d in self.disks:
                entry: dict[str, Any] = {"path": d.path, "readonly": d.readonly}
                if d.overlay is not None:
                    entry["overlay"] = d.overlay if d.overlay else True
                entry.update(_rates_doc(d, DISK_RATES))
                disks.append(entry)
            doc["disk"] = disks
        if self.nets:
            doc["net"] = [
                {**({"user": True, "hostfwd": list(n.hostfwd), "restrict": n.restrict,
                     **({"mtu": n.mtu} if n.mtu is not None else {})}
                    if n.user else {"tap": n.tap} if n.tap is not None
                    else {"switch": n.switch}),
                 **({"mac": n.mac} if n.mac is not None else {}),
                 **_rates_doc(n, NET_RATES)}
                for n in self.nets
            ]
        if self.shares:
            doc["share"] = [{"path": sh.path, "tag": sh.tag, "readonly": sh.readonly}
                            for sh in self.shares]
        doc["devices"] = {"rng": self.rng, "balloon": self.balloon, "vconsole": self.vconsole}
        qos: dict[str, Any] = {"shares": self.qos.shares, "reservation": self.qos.reservation}
        if self.qos.limit is not None:
            qos["limit"] = self.qos.limit
        doc["qos"] = qos
        return doc

    def _memory_doc(self) -> str | dict[str, Any]:
        """``"256M"``, or the ``[memory]`` table when a term differs from its default."""
        terms = self.memory_terms
        if (terms.shares == self.default_memory_shares and not terms.reservation
                and terms.limit is None):
            return format_memory(self.memory)
        doc: dict[str, Any] = {"size": format_memory(self.memory), "shares": terms.shares}
        if terms.reservation:
            doc["reservation"] = format_memory(terms.reservation)
        if terms.limit is not None:
            doc["limit"] = format_memory(terms.limit)
        return doc

    def to_toml(self) -> str:
        """The definition as a TOML file, laid out for people: top-level keys, then
        ``[boot]``, ``[[disk]]``, ``[[net]]``, ``[devices]``, ``[qos]``."""
        import tomli_w

        doc = self.to_dict()
        top = {k: v for k, v in doc.items() if not isinstance(v, dict | list)}
        parts = [
            f"# pyhv VM definition of '{self.name}' (layout: docs/vm-definition.md)\n",
            tomli_w.dumps(top),
            *(["\n[memory]\n" + tomli_w.dumps(doc["memory"])]
              if isinstance(doc["memory"], dict) else []),
            "\n[boot]\n" + tomli_w.dumps(doc["boot"]),
        ]
        for disk in doc.get("disk", []):
            parts.append("\n[[disk]]\n" + tomli_w.dumps(disk))
        for net in doc.get("net", []):
            parts.append("\n[[net]]\n" + tomli_w.dumps(net))
        for share in doc.get("share", []):
            parts.append("\n[[share]]\n" + tomli_w.dumps(share))
        parts.append("\n[devices]\n" + tomli_w.dumps(doc["devices"]))
        parts.append("\n[qos]\n" + tomli_w.dumps(doc["qos"]))
        return "".join(parts)

    # --------------------------------------------------------------------- using

    def to_machine_config(
        self, *, engine: str | None = None, no_reboot: bool = False
    ) -> MachineConfig:
        """The :class:`MachineConfig` of this VM. Virtio devices take the slots in a stable
        order: disks, NICs, rng, balloon, vconsole, shares. ``engine`` overrides the definition's;
        ``"auto"`` lets the machine choose (the interpreter while it is the only engine)."""
        from ..vm import config as mc

        devices: list[mc.DeviceSpec] = []
        for d in self.disks:
            devices.append(mc.DiskSpec(d.path, d.readonly, d.overlay,
                                       **{k: getattr(d, k) for k in DISK_RATES}))
        for n in self.nets:
            user = mc.UserNetSpec(n.hostfwd, n.restrict, *(
                [n.mtu] if n.mtu is not None else [])) if n.user else None
            devices.append(mc.NetSpec(None if n.user or n.tap else n.switch, n.mac,
                                      user=user, tap=n.tap,
                                      **{k: getattr(n, k) for k in NET_RATES}))
        if self.rng:
            devices.append(mc.RngSpec())
        if self.balloon:
            devices.append(mc.BalloonSpec())
        if self.vconsole:
            devices.append(mc.ConsoleSpec())
        for sh in self.shares:
            devices.append(mc.ShareSpec(sh.path, sh.tag, sh.readonly))
        chosen = engine or self.engine
        if chosen == "auto" and "auto" not in mc.ENGINES:
            chosen = "interp"
        return mc.MachineConfig(
            kernel=self.boot.kernel,
            bios=self.boot.firmware,
            initrd=self.boot.initrd,
            append=self.boot.cmdline,
            memory=self.memory,
            smp=self.vcpus,
            dtb=self.boot.dtb,
            engine=chosen,
            no_reboot=no_reboot,
            devices=tuple(devices),
            vmgenid="auto",  # every VM the daemon runs: its clones must tell their guests
        )

    def disk_usage(self) -> list[tuple[str, bool]]:
        """(realpath, writable) of every file the VM's disks open: images (writable when
        the guest writes them directly) and persistent overlays (always writable)."""
        used = []
        for d in self.disks:
            used.append((os.path.realpath(d.path), d.writes_image))
            if d.overlay:
                used.append((os.path.realpath(d.overlay), True))
        return used


# ------------------------------------------------------------------------ validation


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({_int_text(value)})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f'a string ("{value}")' if len(value) <= 40 else "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


def _bad_type(path: str, value: object, expected: str) -> DefinitionError:
    if isinstance(value, int) and not isinstance(value, bool) and not _is_int(value):
        return DefinitionError(path, f"{_int_text(value)} is out of range")
    return DefinitionError(path, f"expected {expected}, got {_type_name(value)}")


def _int_text(value: int) -> str:
    """An integer for a message: JSON has no size limit, and Python will not print (or
    turn into a float) every integer it can read."""
    if abs(value) < 10**30:
        return str(value)
    return f"about {'-' if value < 0 else ''}2^{value.bit_length() - 1}"


def _is_int(value: object) -> bool:
    """An integer of at most 64 bits (TOML's range; JSON integers can be larger)."""
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value < MAX_INT


def _is_number(value: object) -> bool:
    """A finite float, or an int as :func:`_is_int` (TOML allows nan and inf; a QoS sum
    cannot hold them, and an int beyond float range cannot be compared with one)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value)


def _validate(d: VMDefinition) -> None:
    """Every rule of a definition; field names as in the TOML file."""
    if not isinstance(d.name, str):
        raise _bad_type("name", d.name, "a string")
    if not NAME_RE.match(d.name):
        raise DefinitionError("name", f"'{d.name}' is not a valid VM name ({NAME_RULE})")
    if not _is_int(d.vcpus):
        raise _bad_type("vcpus", d.vcpus, "an integer")
    if not 1 <= d.vcpus <= MAX_VCPUS:
        raise DefinitionError("vcpus", f"{d.vcpus} is out of range (1 to {MAX_VCPUS})")
    if not _is_int(d.memory):
        raise _bad_type("memory", d.memory, "a size in bytes")
    if not MIN_RAM <= d.memory <= MAX_RAM:
        raise DefinitionError(
            "memory",
            f"{_human_size(d.memory)} is out of range ({MIN_RAM >> 20} MiB to {MAX_RAM >> 30} GiB)",
        )
    if d.memory % MiB:
        raise DefinitionError("memory", f"{d.memory} bytes is not a whole number of MiB")
    if d.engine not in ENGINES:
        raise DefinitionError(
            "engine", f"unknown engine {d.engine!r} (choose from: {', '.join(ENGINES)})"
        )
    for key in ("rng", "balloon", "vconsole"):
        if not isinstance(getattr(d, key), bool):
            raise _bad_type(f"devices.{key}", getattr(d, key), "a boolean")
    if not isinstance(d.autostart, bool):
        raise _bad_type("autostart", d.autostart, "a boolean")
    _validate_boot(d.boot)
    _validate_disks(d.disks)
    _validate_nets(d.nets)
    _validate_shares(d.shares)
    count = len(d.disks) + len(d.nets) + len(d.shares) + d.rng + d.balloon + d.vconsole
    if count > MAX_VIRTIO_DEVICES:
        raise DefinitionError(
            "devices",
            f"{count} virtio devices (disks, NICs, shares, rng, balloon, vconsole): the virt board "
            f"has {MAX_VIRTIO_DEVICES} virtio-mmio slots",
        )
    _validate_qos(d.qos, d.vcpus)
    _validate_memory_terms(d)


def _validate_memory_terms(d: VMDefinition) -> None:
    terms = d.memory_terms
    if not isinstance(terms, MemoryTerms):
        raise _bad_type("memory", terms, "MemoryTerms")
    if terms.shares is not None:
        if not _is_int(terms.shares):
            raise _bad_type("memory.shares", terms.shares,
                            'an integer or "low", "normal", "high"')
        if not 0 < terms.shares <= MAX_SHARES:
            raise DefinitionError("memory.shares", f"{terms.shares} is out of range "
                                  f"(1 to {MAX_SHARES:,})")
    if not _is_int(terms.reservation):
        raise _bad_type("memory.reservation", terms.reservation, "a size in bytes")
    if terms.reservation < 0:
        raise DefinitionError("memory.reservation", f"{terms.reservation} is negative")
    if terms.reservation % MiB:
        raise DefinitionError("memory.reservation",
                              f"{terms.reservation} bytes is not a whole number of MiB")
    if terms.reservation > d.memory:
        raise DefinitionError(
            "memory.reservation", f"{_human_size(terms.reservation)} is more than the VM's "
            f"memory ({_human_size(d.memory)})")
    if terms.limit is not None:
        if not _is_int(terms.limit):
            raise _bad_type("memory.limit", terms.limit, "a size in bytes")
        if terms.limit % MiB:
            raise DefinitionError("memory.limit",
                                  f"{terms.limit} bytes is not a whole number of MiB")
        if terms.limit < terms.reservation:
            raise DefinitionError(
                "memory.limit", f"{_human_size(terms.limit)} is below memory.reservation "
                f"{_human_size(terms.reservation)}")
        if terms.limit < MIN_RAM:
            raise DefinitionError("memory.limit", f"{_human_size(terms.limit)} is below "
                                  f"the least a guest can run in ({MIN_RAM >> 20} MiB)")
        if terms.limit > d.memory:
            raise DefinitionError(
                "memory.limit", f"{_human_size(terms.limit)} is more than the VM's memory "
                f"({_human_size(d.memory)}; leave it out for no limit)")
        if terms.limit < d.memory and not d.balloon:
            raise DefinitionError(
                "memory.limit", "needs devices.balloon = true (the guest's balloon is how "
                "the host takes memory back)")


def _human_size(size: int) -> str:
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    return f"{size} bytes"


def _validate_boot(boot: Boot) -> None:
    if not isinstance(boot, Boot):
        raise _bad_type("boot", boot, "a Boot")
    if not isinstance(boot.firmware, str) or not boot.firmware:
        raise _bad_type("boot.firmware", boot.firmware, '"default", "none" or a file path')
    for key in ("kernel", "initrd", "cmdline", "dtb"):
        value = getattr(boot, key)
        if value is not None and not isinstance(value, str):
            raise _bad_type(f"boot.{key}", value, "a string")
        if key != "cmdline" and value == "":
            raise DefinitionError(f"boot.{key}", "empty path (leave the key out instead)")
        if value is not None and "\0" in value:
            raise DefinitionError(f"boot.{key}", "contains a NUL character")
    if boot.firmware == "none" and boot.kernel is None:
        raise DefinitionError("boot.kernel", 'required when boot.firmware is "none"')
    if boot.initrd is not None and boot.kernel is None:
        raise DefinitionError("boot.initrd", "needs boot.kernel")


def _validate_disks(disks: tuple[Disk, ...]) -> None:
    seen: dict[str, str] = {}
    for i, disk in enumerate(disks):
        where = f"disk[{i}]"
        if not isinstance(disk, Disk):
            raise _bad_type(where, disk, "a Disk")
        if not isinstance(disk.path, str) or not disk.path:
            raise _bad_type(f"{where}.path", disk.path, "a file path")
        if not isinstance(disk.readonly, bool):
            raise _bad_type(f"{where}.readonly", disk.readonly, "a boolean")
        if disk.overlay is not None and not isinstance(disk.overlay, str):
            raise _bad_type(f"{where}.overlay", disk.overlay, "true, false or a file path")
        if disk.readonly and disk.overlay is not None:
            raise DefinitionError(
                f"{where}.overlay", "cannot be combined with readonly = true"
            )
        _validate_rates(disk, DISK_RATES, where)
        files = [(disk.path, f"{where}.path")]
        if disk.overlay:
            files.append((disk.overlay, f"{where}.overlay"))
        for path, name in files:
            real = os.path.realpath(path)
            if real in seen:
                raise DefinitionError(name, f"{path} is already used by {seen[real]}")
            seen[real] = name


def _validate_nets(nets: tuple[Net, ...]) -> None:
    macs: dict[str, int] = {}
    for i, net in enumerate(nets):
        where = f"net[{i}]"
        if not isinstance(net, Net):
            raise _bad_type(where, net, "a Net")
        _validate_rates(net, NET_RATES, where)
        if net.tap is not None and (net.user or net.switch is not None):
            raise DefinitionError(f"{where}.tap", "a NIC is on one of a switch, user "
                                  "networking and a TAP interface")
        if net.user:
            _validate_user_net(net, where)
        elif net.hostfwd or net.restrict or net.mtu is not None:
            key = "hostfwd" if net.hostfwd else "restrict" if net.restrict else "mtu"
            raise DefinitionError(f"{where}.{key}", "belongs to user networking (user = true)")
        elif net.tap is not None:
            from ..net.tap import check_ifname

            try:
                check_ifname(net.tap)
            except ConfigError as e:
                raise DefinitionError(f"{where}.tap", str(e)) from None
        elif not isinstance(net.switch, str):
            raise _bad_type(f"{where}.switch", net.switch, "a switch name")
        elif not SWITCH_RE.match(net.switch):
            raise DefinitionError(
                f"{where}.switch",
                f"'{net.switch}' is not a valid switch name (letters, digits, '_', '.', '-'; "
                "1 to 64 characters)",
            )
        if net.mac is not None:
            if not isinstance(net.mac, str):
                raise _bad_type(f"{where}.mac", net.mac, "a MAC address string")
            if parse_mac(net.mac) is None:
                raise DefinitionError(
                    f"{where}.mac",
                    f"'{net.mac}' is not a unicast MAC address (expected 52:54:00:12:34:56)",
                )
            key = net.mac.lower()
            if key in macs:
                raise DefinitionError(f"{where}.mac", f"{net.mac} is also net[{macs[key]}].mac")
            macs[key] = i


def _validate_shares(shares: tuple[Share, ...]) -> None:
    """Paths and tags (the directory itself is looked for when the VM starts)."""
    from ..devices.virtio.p9 import MAX_TAG_LEN as MAX_SHARE_TAG

    tags: dict[str, int] = {}
    for i, sh in enumerate(shares):
        where = f"share[{i}]"
        if not isinstance(sh, Share):
            raise _bad_type(where, sh, "a Share")
        if not isinstance(sh.path, str) or not sh.path or "\0" in sh.path:
            raise _bad_type(f"{where}.path", sh.path, "a directory path")
        if not isinstance(sh.readonly, bool):
            raise _bad_type(f"{where}.readonly", sh.readonly, "a boolean")
        if not isinstance(sh.tag, str):
            raise _bad_type(f"{where}.tag", sh.tag, "a string")
        if not 0 < len(sh.tag.encode("utf-8", "surrogateescape")) <= MAX_SHARE_TAG or \
                not sh.tag.isprintable() or any(c in sh.tag for c in " ,"):
            raise DefinitionError(f"{where}.tag", f"'{sh.tag}' must be 1 to {MAX_SHARE_TAG} "
                                  "printable bytes without spaces or commas")
        if sh.tag in tags:
            raise DefinitionError(f"{where}.tag", f"'{sh.tag}' is also share[{tags[sh.tag]}].tag")
        tags[sh.tag] = i


def _validate_user_net(net: Net, where: str) -> None:
    """A user-mode NIC: no switch, forwards that parse (``tcp::2222-:22``)."""
    from ..vm.config import UserNetSpec

    if net.user is not True:
        raise _bad_type(f"{where}.user", net.user, "true or false")
    if net.switch is not None:
        raise DefinitionError(f"{where}.switch", "a NIC is on a switch or on user "
                              "networking (user = true), not both")
    if not isinstance(net.restrict, bool):
        raise _bad_type(f"{where}.restrict", net.restrict, "true or false")
    if net.mtu is not None and not _is_int(net.mtu):
        raise _bad_type(f"{where}.mtu", net.mtu, "a number of bytes")
    if not isinstance(net.hostfwd, tuple | list) or not all(
            isinstance(h, str) for h in net.hostfwd):
        raise _bad_type(f"{where}.hostfwd", net.hostfwd,
                        'a list of forwards such as ["tcp::2222-:22"]')
    try:
        UserNetSpec(tuple(net.hostfwd), net.restrict)
    except ConfigError as e:
        raise DefinitionError(f"{where}.hostfwd", str(e)) from None
    if net.mtu is not None:
        try:
            UserNetSpec(mtu=net.mtu)
        except ConfigError as e:
            raise DefinitionError(f"{where}.mtu", str(e)) from None


def _user_fields(user: object) -> dict[str, Any]:
    """The ``Net`` fields of a machine config's user-mode NIC (``UserNetSpec`` or None)."""
    if user is None:
        return {}
    from ..vm.config import UserNetSpec

    assert isinstance(user, UserNetSpec)
    return {"user": True, "hostfwd": user.hostfwd, "restrict": user.restrict,
            "mtu": user.mtu if user.mtu != UserNetSpec.mtu else None}


def _validate_rates(device: Disk | Net, keys: tuple[str, ...], where: str) -> None:
    """I/O budgets: positive integers (None: no limit); a burst needs its rate."""
    for key in keys:
        value = getattr(device, key)
        if value is None:
            continue
        if not _is_int(value):
            raise _bad_type(f"{where}.{key}", value, 'a rate such as 200 or "2M"')
        if value <= 0:
            raise DefinitionError(f"{where}.{key}", f"{_int_text(value)} must be positive "
                                  "(leave it out for no limit)")
    for key in keys:
        rate = _BURSTS.get(key)
        if rate is not None and getattr(device, key) is not None and getattr(device, rate) is None:
            raise DefinitionError(f"{where}.{key}", f"needs {where}.{rate} (a burst is the "
                                  "size of that rate's bucket)")


def _rates_doc(device: Disk | Net, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: format_rate(getattr(device, k), k) for k in keys if getattr(device, k) is not None}


def _validate_qos(qos: QoS, vcpus: int) -> None:
    if not isinstance(qos, QoS):
        raise _bad_type("qos", qos, "a QoS")
    cap = 100 * vcpus
    if qos.shares is not None:
        if not _is_int(qos.shares):
            raise _bad_type("qos.shares", qos.shares, 'an integer or "low", "normal", "high"')
        if qos.shares <= 0:
            raise DefinitionError("qos.shares", f"{qos.shares} must be positive")
        if qos.shares > MAX_SHARES:
            raise DefinitionError("qos.shares",
                                  f"{qos.shares} is more than the largest share ({MAX_SHARES:,})")
    if not _is_number(qos.reservation):
        raise _bad_type("qos.reservation", qos.reservation, "a percentage (number)")
    if qos.reservation < 0:
        raise DefinitionError("qos.reservation", f"{qos.reservation:g} is negative")
    if qos.reservation > cap:
        raise DefinitionError(
            "qos.reservation",
            f"{qos.reservation:g}% is more than {vcpus} vCPU{'s' if vcpus > 1 else ''} "
            f"can use ({cap}%)",
        )
    if qos.limit is not None:
        if not _is_number(qos.limit):
            raise _bad_type("qos.limit", qos.limit, "a percentage (number)")
        if qos.limit <= 0:
            raise DefinitionError(
                "qos.limit", f"{qos.limit:g} must be positive (leave it out for unlimited)"
            )
        if qos.limit < qos.reservation:
            raise DefinitionError(
                "qos.limit", f"{qos.limit:g} is below qos.reservation {qos.reservation:g}"
            )
        if qos.limit > cap:
            raise DefinitionError(
                "qos.limit",
                f"{qos.limit:g}% is more than {vcpus} vCPU{'s' if vcpus > 1 else ''} "
                f"can use ({cap}%; leave it out for unlimited)",
            )


# ------------------------------------------------------------------------ dict -> fields


class _Table:
    """One TOML table being read: typed getters that name the field, and a final check
    that no unknown key is left."""

    def __init__(self, data: object, prefix: str, known: Sequence[str]) -> None:
        if not isinstance(data, Mapping):
            raise _bad_type(prefix.rstrip(".") or "definition", data, "a table")
        self.data = data
        self.prefix = prefix
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                detail = (
                    f"unknown key (did you mean '{prefix}{hint[0]}'?)"
                    if hint
                    else f"unknown key (known: {', '.join(known)})"
                )
                raise DefinitionError(f"{prefix}{key}", detail)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data[key]

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def get_str(self, key: str) -> str:
        value = self.data[key]
        if not isinstance(value, str):
            raise _bad_type(self.path(key), value, "a string")
        return value

    def get_bool(self, key: str) -> bool:
        value = self.data[key]
        if not isinstance(value, bool):
            raise _bad_type(self.path(key), value, "true or false")
        return value

    def get_int(self, key: str) -> int:
        value = self.data[key]
        if not _is_int(value):
            raise _bad_type(self.path(key), value, "an integer")
        return int(value)

    def get_number(self, key: str) -> float:
        value = self.data[key]
        if not _is_number(value):
            raise _bad_type(self.path(key), value, "a number")
        return value  # type: ignore[no-any-return]

    def file(self, key: str, base: str) -> str:
        value = self.get_str(key)
        if not value:
            raise DefinitionError(self.path(key), "empty path (leave the key out instead)")
        return resolve_path(value, base)

    def tables(self, key: str) -> list[object]:
        value = self.data[key]
        if not isinstance(value, list):
            raise _bad_type(
                self.path(key), value, f"an array of tables ([[{self.prefix}{key}]])"
            )
        return value


def resolve_path(path: str, base: str) -> str:
    """``~`` expanded; a relative path taken relative to ``base``; normalised."""
    path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(base, path))


def parse_memory_value(value: object, where: str = "memory", *, zero: bool = False) -> int:
    """A TOML memory value: a size string ("256M", "1G", QEMU's -m syntax) or an integer
    number of MiB (``zero``: 0 too, as a reservation may be). Range checks are the
    definition's."""
    if zero and value in (0, "0"):
        return 0
    if isinstance(value, str):
        from ..board.loader import parse_size

        try:
            return parse_size(value)
        except ConfigError as e:
            raise DefinitionError(where, str(e)) from None
    if _is_int(value):
        if value <= 0:  # type: ignore[operator]
            raise DefinitionError(where, f"{value} must be positive")
        return value * MiB  # type: ignore[operator,no-any-return]
    raise _bad_type(where, value, 'a size such as "256M" or an integer number of MiB')


def parse_rate_value(value: object, where: str) -> int:
    """An I/O budget: a positive integer (bytes or requests a second), or a string with
    an optional binary suffix ("2M" = 2 MiB, "64K", "200"), as ``pyhv run --disk``."""
    if isinstance(value, str):
        from ..board.config import parse_rate

        try:
            return parse_rate(value, where)
        except ConfigError:
            raise DefinitionError(where, f"'{value}' is not a positive number (such as 200, "
                                  '"2M"; leave it out for no limit)') from None
    if not _is_int(value):
        raise _bad_type(where, value, 'a rate such as 200 or "2M"')
    if value <= 0:  # type: ignore[operator]
        raise DefinitionError(where, f"{_int_text(value)} must be positive "  # type: ignore[arg-type]
                              "(leave it out for no limit)")
    return value  # type: ignore[return-value]


def parse_shares_value(value: object, vcpus: int, where: str = "qos.shares") -> int:
    """An integer, or an ESXi level ("low", "normal", "high") times the vCPU count."""
    if isinstance(value, str):
        level = SHARE_LEVELS.get(value.lower())
        if level is None:
            raise DefinitionError(
                where, f"'{value}' is not a share level (low, normal, high) or an integer"
            )
        return level * vcpus
    if not _is_int(value):
        raise _bad_type(where, value, 'an integer or "low", "normal", "high"')
    return value  # type: ignore[return-value]


def parse_memory_shares(value: object, memory: int, where: str = "memory.shares") -> int:
    """An integer, or an ESXi level ("low", "normal", "high") times the MiB of memory."""
    if isinstance(value, str):
        level = MEMORY_SHARE_LEVELS.get(value.lower())
        if level is None:
            raise DefinitionError(
                where, f"'{value}' is not a share level (low, normal, high) or an integer")
        return level * (memory // MiB if _is_int(memory) else 1)
    if not _is_int(value):
        raise _bad_type(where, value, 'an integer or "low", "normal", "high"')
    return value  # type: ignore[return-value]


MEMORY_KEYS = ("size", "shares", "reservation", "limit")
TOP_KEYS = ("name", "vcpus", "memory", "engine", "autostart", "boot", "disk", "net",
            "share", "devices", "qos")
BOOT_KEYS = ("firmware", "kernel", "initrd", "cmdline", "dtb")
DISK_KEYS = ("path", "readonly", "overlay", *DISK_RATES)
NET_KEYS = ("switch", "user", "hostfwd", "restrict", "mtu", "tap", "mac", *NET_RATES)
SHARE_KEYS = ("path", "tag", "readonly")
DEVICE_KEYS = ("rng", "balloon", "vconsole")
QOS_KEYS = ("shares", "reservation", "limit")


def _rates_from(table: _Table, keys: tuple[str, ...]) -> dict[str, int]:
    return {k: parse_rate_value(table.raw(k), table.path(k)) for k in keys if table.has(k)}


def _kwargs_from_dict(data: Mapping[str, Any], base: str) -> dict[str, Any]:
    top = _Table(data, "", TOP_KEYS)
    kw: dict[str, Any] = {}
    if not top.has("name"):
        raise DefinitionError("name", "missing (every VM needs a name)")
    kw["name"] = top.get_str("name")
    if top.has("vcpus"):
        kw["vcpus"] = top.get_int("vcpus")
    if top.has("memory") and isinstance(top.raw("memory"), Mapping):
        mt = _Table(top.raw("memory"), "memory.", MEMORY_KEYS)
        if mt.has("size"):
            kw["memory"] = parse_memory_value(mt.raw("size"), "memory.size")
        terms: dict[str, Any] = {}
        if mt.has("shares"):
            size = kw.get("memory", 128 * MiB)
            terms["shares"] = parse_memory_shares(mt.raw("shares"), size)
        if mt.has("reservation"):
            terms["reservation"] = parse_memory_value(mt.raw("reservation"),
                                                      "memory.reservation", zero=True)
        if mt.has("limit"):
            terms["limit"] = parse_memory_value(mt.raw("limit"), "memory.limit")
        kw["memory_terms"] = MemoryTerms(**terms)
    elif top.has("memory"):
        kw["memory"] = parse_memory_value(top.raw("memory"))
    if top.has("engine"):
        kw["engine"] = top.get_str("engine")
    if top.has("autostart"):
        kw["autostart"] = top.get_bool("autostart")

    if top.has("boot"):
        bt = _Table(top.raw("boot"), "boot.", BOOT_KEYS)
        boot: dict[str, Any] = {}
        if bt.has("firmware"):
            fw = bt.get_str("firmware")
            boot["firmware"] = fw if fw in FIRMWARE_KEYWORDS or not fw else resolve_path(fw, base)
        for key in ("kernel", "initrd", "dtb"):
            if bt.has(key):
                boot[key] = bt.file(key, base)
        if bt.has("cmdline"):
            boot["cmdline"] = bt.get_str("cmdline")
        kw["boot"] = Boot(**boot)

    if top.has("disk"):
        disks = []
        for i, item in enumerate(top.tables("disk")):
            dt = _Table(item, f"disk[{i}].", DISK_KEYS)
            if not dt.has("path"):
                raise DefinitionError(f"disk[{i}].path", "missing (the disk image file)")
            overlay: str | None = None
            if dt.has("overlay"):
                raw = dt.raw("overlay")
                if isinstance(raw, bool):
                    overlay = "" if raw else None
                elif isinstance(raw, str) and raw:
                    overlay = resolve_path(raw, base)
                else:
                    raise _bad_type(dt.path("overlay"), raw, "true, false or a file path")
            disks.append(
                Disk(
                    path=dt.file("path", base),
                    readonly=dt.get_bool("readonly") if dt.has("readonly") else False,
                    overlay=overlay,
                    **_rates_from(dt, DISK_RATES),
                )
            )
        kw["disks"] = tuple(disks)

    if top.has("net"):
        nets = []
        for i, item in enumerate(top.tables("net")):
            nt = _Table(item, f"net[{i}].", NET_KEYS)
            user = nt.get_bool("user") if nt.has("user") else False
            if not user and not nt.has("switch") and not nt.has("tap"):
                raise DefinitionError(f"net[{i}].switch", "missing (the virtual switch name, "
                                      "user = true for user networking, or tap = NAME)")
            hostfwd: tuple[str, ...] = ()
            if nt.has("hostfwd"):
                raw = nt.raw("hostfwd")
                if not isinstance(raw, list) or not all(isinstance(h, str) for h in raw):
                    raise _bad_type(nt.path("hostfwd"), raw,
                                    'a list of forwards such as ["tcp::2222-:22"]')
                hostfwd = tuple(raw)
            nets.append(Net(nt.get_str("switch") if nt.has("switch") else None,
                            nt.get_str("mac") if nt.has("mac") else None,
                            **_rates_from(nt, NET_RATES), user=user, hostfwd=hostfwd,
                            restrict=nt.get_bool("restrict") if nt.has("restrict") else False,
                            mtu=nt.get_int("mtu") if nt.has("mtu") else None,
                            tap=nt.get_str("tap") if nt.has("tap") else None))
        kw["nets"] = tuple(nets)

    if top.has("share"):
        shares = []
        for i, item in enumerate(top.tables("share")):
            st = _Table(item, f"share[{i}].", SHARE_KEYS)
            for key in ("path", "tag"):
                if not st.has(key):
                    raise DefinitionError(f"share[{i}].{key}", "missing (a share needs the "
                                          "host directory and the tag the guest mounts)")
            shares.append(Share(st.file("path", base), st.get_str("tag"),
                                st.get_bool("readonly") if st.has("readonly") else False))
        kw["shares"] = tuple(shares)

    if top.has("devices"):
        dv = _Table(top.raw("devices"), "devices.", DEVICE_KEYS)
        for key in DEVICE_KEYS:
            if dv.has(key):
                kw[key] = dv.get_bool(key)

    if top.has("qos"):
        qt = _Table(top.raw("qos"), "qos.", QOS_KEYS)
        qos: dict[str, Any] = {}
        if qt.has("shares"):
            vcpus = kw.get("vcpus", 1)
            qos["shares"] = parse_shares_value(qt.raw("shares"), vcpus if _is_int(vcpus) else 1)
        if qt.has("reservation"):
            qos["reservation"] = qt.get_number("reservation")
        if qt.has("limit"):
            qos["limit"] = qt.get_number("limit")
        kw["qos"] = QoS(**qos)
    return kw
