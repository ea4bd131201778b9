"""The Python API of the host: what the ``pyhv`` CLI and the REST API both call.

    >>> from pyhv import Host
    >>> host = Host("/tmp/pyhv-state")
    >>> vm = host.create({"name": "web", "memory": "256M", "boot": {"kernel": "Image"}})
    >>> host.set("web", shares="high", reservation=50)
    >>> [v.name for v in host.list()]
    ['web']
    >>> host.destroy("web")

With a host daemon serving the state directory (``pyhv host serve``,
:mod:`pyhv.host.daemon`), VMs also run: :meth:`Host.start`, :meth:`Host.stop`,
:meth:`Host.reboot`, :meth:`Host.pause`, :meth:`Host.resume`, :meth:`Host.set_live`,
:meth:`Host.snapshot`, :meth:`Host.restore`, :meth:`Host.clone`, :meth:`Host.migrate`,
:meth:`Host.incoming` and :meth:`Host.metrics` ask it over its control socket
(:mod:`pyhv.host.control`); without one they raise :class:`~pyhv.host.errors.Unavailable` (503).

Every failure is a :class:`~pyhv.host.errors.HostError` with a one-line message and an
``http_status``; nothing is half-done when one is raised.
"""

from __future__ import annotations

import builtins
import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .definition import (
    DISK_RATES,
    NAME_RULE,
    NET_RATES,
    VMDefinition,
    _bad_type,
    _is_int,
    _is_number,
    parse_memory_shares,
    parse_memory_value,
    parse_rate_value,
    parse_shares_value,
    valid_name,
)
from .errors import DefinitionError, HostError, Invalid, NotFound
from .registry import HostSettings, Registry, check_admission, check_fits

if TYPE_CHECKING:
    from ..vm.config import MachineConfig

#: Fields :meth:`Host.set` changes.
SETTABLE = ("memory", "shares", "reservation", "limit", "autostart", "balloon", "io",
            "memory_shares", "memory_reservation", "memory_limit")
#: What changes at once on a running VM (the rest applies at its next start).
LIVE = ("shares", "reservation", "limit", "balloon", "io", "memory_shares",
        "memory_reservation", "memory_limit")
#: A device of ``io`` changes: ``disk0``, ``net1``: the definition's disk[0], net[1].
IO_DEVICE_RE = re.compile(r"(disk|net)([0-9]{1,2})\Z")
#: VM states (:attr:`VM.state`). A running VM is starting, running, paused or stopping.
RUNNING_STATES = ("starting", "running", "paused", "stopping")
_UNSET: Any = object()
#: The most VMs one ``clone`` makes.
MAX_CLONES = 64


def random_mac() -> str:
    """A locally administered unicast address in QEMU's 52:54:00 range."""
    tail = random.SystemRandom().getrandbits(24)
    return "52:54:00:" + ":".join(f"{(tail >> s) & 0xFF:02x}" for s in (16, 8, 0))


def check_files(definition: VMDefinition, source: str | None = None, *,
                boot_files: bool = True) -> None:
    """Refuse a definition whose kernel, firmware, initrd, DTB or disk images are missing
    (a persistent overlay may be missing: it is created; its directory may not).
    ``boot_files=False`` checks the disks only (a machine restored from a snapshot has
    its RAM from the file: it loads no image)."""
    boot = definition.boot
    wanted: list[tuple[str, str]] = []
    if boot_files and boot.firmware not in ("default", "none"):
        wanted.append(("boot.firmware", boot.firmware))
    for key in ("kernel", "initrd", "dtb") if boot_files else ():
        value = getattr(boot, key)
        if value is not None:
            wanted.append((f"boot.{key}", value))
    for i, disk in enumerate(definition.disks):
        wanted.append((f"disk[{i}].path", disk.path))
    for field, path in wanted:
        if not os.path.exists(path):
            raise DefinitionError(field, f"{path}: no such file", source)
        if os.path.isdir(path):
            raise DefinitionError(field, f"{path} is a directory", source)
    for i, disk in enumerate(definition.disks):
        if disk.overlay:
            parent = os.path.dirname(disk.overlay) or "."
            if not os.path.isdir(parent):
                raise DefinitionError(
                    f"disk[{i}].overlay", f"directory {parent} does not exist", source
                )
            if os.path.isdir(disk.overlay):
                raise DefinitionError(
                    f"disk[{i}].overlay", f"{disk.overlay} is a directory", source
                )


def check_snapshot_target(path: object) -> str:
    """The file a snapshot may be written to: an absolute path in a directory that
    exists and may be written, not a directory, and, if the file exists, a pyhv
    snapshot (another file, a disk image above all, is never overwritten).
    :class:`Invalid` (422) naming the problem."""
    from ..vm.snapshot import MAGIC

    path = _snapshot_path(path, "snapshot")
    parent = os.path.dirname(path) or "/"
    if os.path.isdir(path):
        raise Invalid(f"snapshot file '{path}' is a directory")
    if not os.path.isdir(parent):
        raise Invalid(f"cannot write snapshot '{path}': directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Invalid(f"cannot write snapshot '{path}': directory {parent} is not writable")
    if os.path.lexists(path):
        if not os.path.isfile(path):
            raise Invalid(f"'{path}' exists and is not a regular file: not overwritten")
        try:
            with open(path, "rb") as f:
                head = f.read(len(MAGIC))
        except OSError as e:
            raise Invalid(f"cannot write snapshot '{path}': {e.strerror}") from None
        if head and head != MAGIC:
            raise Invalid(f"'{path}' exists and is not a pyhv snapshot: not overwritten")
    return path


def _snapshot_path(path: object, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise Invalid(f"{what}: expected the path of a snapshot file, got {path!r}")
    if "\0" in path:
        raise Invalid(f"{what}: a file name cannot hold a NUL character")
    try:
        path.encode()
    except UnicodeEncodeError:
        raise Invalid(f"{what}: {path!r} is not a valid file name") from None
    if not os.path.isabs(path):
        raise Invalid(f"{what}: '{path}' is relative: give an absolute path (the daemon "
                      "has no current directory of yours)")
    return os.path.normpath(path)


def snapshot_config(path: object) -> MachineConfig:
    """The machine config of the snapshot file ``path`` (absolute), its file checked
    (all but the RAM pages); :class:`Invalid` (422) for a missing, foreign, truncated or
    damaged file."""
    from ..vm.snapshot import SnapshotError, open_snapshot

    path = _snapshot_path(path, "restore")
    if os.path.exists(path) and not os.path.isfile(path):
        raise Invalid(f"snapshot '{path}' is not a regular file")
    try:
        snap = open_snapshot(path)
        try:
            return snap.config()
        finally:
            snap.close()
    except SnapshotError as e:
        raise Invalid(str(e)) from None
    except OSError as e:
        raise Invalid(f"snapshot '{path}': {e.strerror or e}") from None


def snapshot_names(path: str, name: object, count: int | None = None) -> builtins.list[str]:
    """The VM names for a restore (``count`` None: ``name``, default the file's stem) or
    a clone (``name``-1 .. ``name``-``count``)."""
    if name is None:
        stem = Path(path).stem
        if not valid_name(stem if count is None else f"{stem}-{count}"):
            raise Invalid(f"the snapshot file's name '{stem}' is no VM name ({NAME_RULE}): "
                          "give one (--name)")
        name = stem
    if not isinstance(name, str) or not valid_name(
            name if count is None else f"{name}-{count}"):
        raise DefinitionError("name", f"{name!r} is no VM name ({NAME_RULE})")
    if count is None:
        return [name]
    return [f"{name}-{i}" for i in range(1, count + 1)]


def snapshot_definition(config: MachineConfig, name: str, *,
                        fresh_macs: bool = False) -> VMDefinition:
    """The definition of a VM restored from a snapshot whose machine is ``config``:
    its resources and devices (:meth:`VMDefinition.from_machine_config`), default QoS,
    each NIC with its MAC (a new one with ``fresh_macs``: a clone's; the VM process
    reports the one the NIC really has when it is up)."""
    definition = VMDefinition.from_machine_config(config, name)
    nets = tuple(replace(n, mac=random_mac()) if fresh_macs or n.mac is None else n
                 for n in definition.nets)
    return replace(definition, nets=nets)


class VM:
    """One defined VM of a :class:`Host`.

    ``definition`` is the definition as read when this object was made (:meth:`refresh`
    reads it again); ``state`` is read from the VM's run files on every access."""

    def __init__(self, host: Host, definition: VMDefinition) -> None:
        self.host = host
        self.definition = definition

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def path(self) -> Path:
        """The VM's directory in the state directory."""
        return self.host.registry.vm_dir(self.name)

    @property
    def pid(self) -> int | None:
        """The pid of the VM process while it runs."""
        return self.host.registry.running_pid(self.name)

    @property
    def state(self) -> str:
        """"starting", "running", "paused", "stopping" while its process runs (as the
        daemon records it in ``run/state``; "running" without one); else "crashed" when
        its last run ended in a crash (:attr:`crash`), or "stopped"."""
        registry = self.host.registry
        if self.pid is not None:
            try:
                state = (registry.run_dir(self.name) / "state").read_text().strip()
            except OSError:
                state = "running"
            return state if state in RUNNING_STATES else "running"
        if self.crash is not None:
            return "crashed"
        return "stopped"

    @property
    def crash(self) -> dict[str, Any] | None:
        """How the VM's last run crashed (``reason``, ``time``, ``status``, ``log``: the
        end of its process's output), None unless it did; cleared by the next start."""
        import json

        try:
            text = (self.host.registry.vm_dir(self.name) / "crashed").read_text()
            record = json.loads(text)
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    @property
    def generation_id(self) -> str | None:
        """While it runs, the VM generation ID its guest reads (a UUID; every clone
        gets a new one: devices/vmgenid.py), as its process reported it; else None."""
        if self.pid is None:
            return None
        try:
            text = (self.host.registry.run_dir(self.name) / "generation_id").read_text()
        except OSError:
            return None
        return text.strip() or None

    def refresh(self) -> VM:
        self.definition = self.host.registry.load(self.name)
        return self

    def set(self, **changes: Any) -> VM:
        """:meth:`Host.set` on this VM; the object then holds the new definition."""
        self.definition = self.host.set(self.name, **changes).definition
        return self

    def destroy(self) -> None:
        self.host.destroy(self.name)

    def start(self) -> VM:
        return self.host.start(self.name)

    def stop(self, *, force: bool = False, timeout: float | None = None) -> dict[str, Any]:
        return self.host.stop(self.name, force=force, timeout=timeout)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: name, state, pid, path, the definition (as its TOML document) and,
        after a crash, the crash record."""
        data = {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "path": str(self.path),
            "definition": self.definition.to_dict(),
        }
        crash = self.crash
        if crash is not None and data["state"] == "crashed":
            data["crash"] = crash
        gen = self.generation_id
        if gen is not None:
            data["generation_id"] = gen
        return data

    def __repr__(self) -> str:
        return f"<VM {self.name} {self.state}>"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VM)
            and other.host.registry.root == self.host.registry.root
            and other.definition == self.definition
        )

    def __hash__(self) -> int:
        return hash((self.host.registry.root, self.name))


class Host:
    """The VMs defined in one state directory (default: see
    :func:`~pyhv.host.registry.default_state_dir`)."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        call: Callable[..., Any] | None = None,
    ) -> None:
        """``call(op, args, wait)`` is how requests reach the host daemon: by default
        over its control socket (:func:`pyhv.host.control.call`); the daemon's own REST API
        passes one that hands them to the daemon in the same process, so both take the
        same path through this class."""
        self.registry = Registry(state_dir)
        self._transport = call

    def __repr__(self) -> str:
        return f"Host({str(self.state_dir)!r})"

    @property
    def state_dir(self) -> Path:
        return self.registry.root

    @property
    def settings(self) -> HostSettings:
        """host.toml, read on each access (defaults when the file is absent)."""
        return self.registry.load_settings()

    # ----------------------------------------------------------------- definitions

    def create(
        self,
        spec: VMDefinition | str | Mapping[str, Any] | os.PathLike[str],
        *,
        source: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        require_files: bool = True,
    ) -> VM:
        """Define a new VM from a :class:`VMDefinition`, TOML text, a dict (the TOML
        document) or the path of a TOML file (a ``Path``; a ``str`` is TOML text).

        Relative paths resolve against ``base_dir`` (default: the file's directory, else
        the current directory). A NIC without a MAC address is given a random one so it
        keeps its address across restarts. With ``require_files`` the kernel, firmware,
        initrd, DTB and disk images must exist. Raises :class:`DefinitionError` (422) for
        an invalid definition, :class:`DuplicateName` (409) for a name in use; nothing is
        written then."""
        definition, source = self._definition(spec, source, base_dir)
        if any(n.mac is None for n in definition.nets):
            nets = tuple(n if n.mac else replace(n, mac=random_mac()) for n in definition.nets)
            definition = replace(definition, nets=nets)
        try:
            check_fits(definition, self.settings)
        except DefinitionError as e:
            raise e.with_source(source) from None
        if require_files:
            check_files(definition, source)
        self.registry.create(definition)
        return VM(self, definition)

    @staticmethod
    def _definition(
        spec: object, source: str | None, base_dir: str | os.PathLike[str] | None
    ) -> tuple[VMDefinition, str | None]:
        if isinstance(spec, VMDefinition):
            return spec, source
        if isinstance(spec, str):
            return VMDefinition.from_toml(spec, source, base_dir or os.getcwd()), source
        if isinstance(spec, os.PathLike):
            path = os.fspath(spec)
            if base_dir is None:
                return VMDefinition.load(path), source or path
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise DefinitionError(None, f"cannot read: {e}", path) from None
            return VMDefinition.from_toml(text, source or path, base_dir), source or path
        if isinstance(spec, Mapping):
            return VMDefinition.from_dict(spec, source, base_dir), source
        raise Invalid(
            f"cannot make a VM definition from {type(spec).__name__} "
            "(give a VMDefinition, TOML text, a dict or a Path)"
        )

    def get(self, name: str) -> VM:
        """The VM called ``name``; :class:`NotFound` (404) if there is none."""
        return VM(self, self.registry.load(name))

    def scan(self) -> tuple[builtins.list[VM], dict[str, HostError]]:
        """All VMs, and the errors of those whose definition cannot be read (hand-edited
        into an invalid state), by name."""
        vms: builtins.list[VM] = []
        broken: dict[str, HostError] = {}
        for name in self.registry.names():
            try:
                vms.append(self.get(name))
            except NotFound:
                continue  # removed meanwhile
            except HostError as e:
                broken[name] = e
        return vms, broken

    def list(self) -> builtins.list[VM]:
        """The VMs whose definitions are valid, sorted by name (see :meth:`scan`)."""
        return self.scan()[0]

    def destroy(self, name: str) -> None:
        """Remove a stopped VM: its definition and every file in its directory.
        :class:`NotFound` (404), :class:`VMRunning` (409) while it runs."""
        self.registry.remove(name)

    def set(self, name: str, **changes: Any) -> VM:
        """Change fields of a VM's definition: ``memory`` (bytes or a size string such as
        "512M"), ``shares`` (an integer or "low", "normal", "high" per vCPU),
        ``reservation``, ``limit`` (percent of one host CPU; ``limit=None``: unlimited),
        ``autostart``, ``memory_shares`` (an integer or a level per MiB),
        ``memory_reservation``, ``memory_limit`` (sizes; ``memory_limit=None``: none),
        ``io`` (I/O budgets: ``{"disk0": {"bps": "2M", "iops": 200},
        "net0": {"tx_bps": "1M", "rx_pps": None}}``, the keys of ``[[disk]]`` and
        ``[[net]]``, None removing one; the terms not named stay). The whole definition is
        validated again. On a VM the daemon runs, ``shares``, ``reservation``, ``limit``,
        the memory terms and ``io`` apply at once (:meth:`set_live`, which
        refuses a reservation the host cannot give), ``balloon`` (running VMs only) sets
        its balloon target, and the rest applies at its next start."""
        unknown = [k for k in changes if k not in SETTABLE]
        if unknown:
            raise DefinitionError(
                unknown[0], f"cannot be set (settable: {', '.join(SETTABLE)})", name
            )
        if not changes:
            raise Invalid(f"{name}: nothing to change (settable: {', '.join(SETTABLE)})")
        live = {k: v for k, v in changes.items() if k in LIVE}
        changes = {k: v for k, v in changes.items() if k not in LIVE or k == "balloon"}
        changes.pop("balloon", None)
        vm = self.get(name)
        if "balloon" in live and vm.state not in RUNNING_STATES:
            from .errors import Conflict

            raise Conflict(f"VM '{name}' is not running: a balloon target is for a running VM")
        if live and (vm.state in RUNNING_STATES and self.daemon_pid is not None
                     or "balloon" in live):
            if changes:  # check everything before changing anything
                try:
                    check_fits(_apply(vm.definition, {**changes, **live}), self.settings)
                except DefinitionError as e:
                    raise e.with_source(name) from None
            self.set_live(name, **live)
            if not changes:
                return self.get(name)
        else:
            changes.update(live)
        with self.registry.lock():
            current = self.registry.load(name)
            try:
                updated = _apply(current, changes)
                check_fits(updated, self.settings)
            except DefinitionError as e:
                raise e.with_source(name) from None
            if updated != current:
                self.registry.replace(updated)
        return VM(self, updated)

    # ----------------------------------------------------------------- running VMs

    @property
    def daemon_pid(self) -> int | None:
        """The pid of the host daemon serving this state directory, None without one."""
        from .control import daemon_pid

        return daemon_pid(self.state_dir)

    def daemon_info(self) -> dict[str, Any]:
        """The daemon's answer to ``ping``: pid, state directory, version, CPUs, policy,
        the CPU backend in use (``cpu_backend``: "feedback" or "cgroup") and why
        (``cpu_backend_reason``). :class:`Unavailable` (503) without a daemon."""
        info: dict[str, Any] = self._call("ping", {}, wait=10.0)
        return info

    def _call(self, op: str, args: dict[str, Any], *, wait: float | None = 60.0) -> Any:
        """Run daemon operation ``op`` with ``args`` (a dict: an operation may have an
        argument called ``timeout`` too), waiting ``wait`` seconds at most (None: until
        it is done)."""
        if self._transport is not None:
            return self._transport(op, args, wait)
        from .control import call

        return call(self.state_dir, op, wait, **args)

    def start(self, name: str) -> VM:
        """Start VM ``name`` in the daemon; returns once its machine is built and its
        console served. :class:`NotFound` (404), :class:`VMRunning` (409),
        :class:`InsufficientResources` (409: its reservation or memory does not fit next
        to the running VMs), :class:`DiskInUse` (409), :class:`DefinitionError` (422: a
        missing kernel...), :class:`Unavailable` (503: no daemon). Nothing is left
        behind by a start that fails."""
        self.get(name)
        self._call("start", {"name": name}, wait=None)
        return self.get(name)

    def stop(self, name: str, *, force: bool = False,
             timeout: float | None = None) -> dict[str, Any]:
        """Stop VM ``name``: its guest is asked to power off and, after ``timeout``
        seconds (default: the daemon's, 30 s), the machine is stopped from the host
        side; ``force`` does that at once. Returns when the VM has stopped: ``{"name",
        "state": "stopped" or "crashed", "reason"}``. :class:`Conflict` (409) when it
        is not running."""
        self.get(name)
        args: dict[str, Any] = {"name": name, "force": force}
        if timeout is not None:
            args["timeout"] = timeout
        result: dict[str, Any] = self._call("stop", args, wait=None)
        return result

    def reboot(self, name: str) -> VM:
        """Warm-reset a running VM."""
        self.get(name)
        self._call("reboot", {"name": name})
        return self.get(name)

    def pause(self, name: str) -> VM:
        """Stop running a VM's guest until :meth:`resume` (its memory stays)."""
        self.get(name)
        self._call("pause", {"name": name})
        return self.get(name)

    def resume(self, name: str) -> VM:
        self.get(name)
        self._call("resume", {"name": name})
        return self.get(name)

    def set_live(self, name: str, **changes: Any) -> VM:
        """Change a running VM at once: ``shares``, ``reservation``, ``limit`` (also
        stored in its definition; a reservation that does not fit next to the other
        running VMs is refused with :class:`InsufficientResources`) and ``balloon``: the
        memory its guest should keep (a size such as "256M", or bytes; None gives all of
        it back), which its virtio-balloon driver is asked to reach."""
        self.get(name)
        self._call("set", {**changes, "name": name})
        return self.get(name)

    def snapshot(self, name: str, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Save running VM ``name`` to the snapshot file ``path`` (a relative path is
        this process's) and let it run on; a paused VM is saved as it is and stays
        paused. Returns ``{"name", "path", "seconds", "ram_bytes", "stored_bytes",
        "file_bytes"}``. :class:`NotFound` (404), :class:`Conflict` (409: not running),
        :class:`Invalid` (422: a path that cannot be written, or the save failed: an
        earlier file there is kept)."""
        self.get(name)
        target = os.path.abspath(os.path.expanduser(os.fspath(path)))
        result: dict[str, Any] = self._call("snapshot", {"name": name, "path": target},
                                            wait=None)
        return result

    def restore(self, path: str | os.PathLike[str], name: str | None = None) -> VM:
        """Define VM ``name`` (default: the file's stem) from the snapshot file ``path``
        and start it from there: its guest goes on where it was saved. The definition
        (resources, images, devices of the saved machine, default QoS) stays; a later
        :meth:`start` boots it afresh from its images. :class:`DuplicateName` (409),
        :class:`Invalid` (422: a missing or damaged file), the errors of :meth:`start`;
        nothing is left defined when it fails."""
        target = os.path.abspath(os.path.expanduser(os.fspath(path)))
        result = self._call("restore", {"path": target, "name": name}, wait=None)
        return self.get(result[0]["name"])

    def clone(self, path: str | os.PathLike[str], count: int,
              prefix: str | None = None) -> builtins.list[VM]:
        """``count`` (1 to 64) new VMs from the snapshot file ``path``, named
        ``prefix-1`` .. ``prefix-N`` (default prefix: the file's stem), each started
        from it as a new machine: every NIC with a MAC of its own, the machine's
        generation one up; their RAM is shared copy-on-write from the file. All or
        nothing: every clone is admitted (names free, CPU, memory, disks) before any is
        defined, and if one fails to start all are stopped and undefined."""
        target = os.path.abspath(os.path.expanduser(os.fspath(path)))
        result = self._call("clone", {"path": target, "count": count, "prefix": prefix},
                            wait=None)
        return [self.get(vm["name"]) for vm in result]

    def migrate(self, name: str, to: str, token: str | None = None) -> dict[str, Any]:
        """Live-migrate running VM ``name`` to the host daemon whose REST API is at
        ``to`` (``http://HOST:PORT``; ``token``: its API token, needed on TCP): its RAM
        is copied while the guest runs, then the guest stops here and goes on there.
        Returns once it runs there: ``{"name", "to", "rounds", "pages_sent",
        "last_round_pages", "total_seconds", "downtime_seconds", ...}``; the VM is then
        stopped here, its definition kept. :class:`Conflict` (409: not running, paused,
        migrating), :class:`Invalid` (422: a bad URL), :class:`MigrationFailed` (502:
        the destination cannot be reached, refused, or the transfer broke off; the VM
        runs on here)."""
        self.get(name)
        result: dict[str, Any] = self._call("migrate", {"name": name, "to": to,
                                                        "token": token}, wait=None)
        return result

    def incoming(self, definition: Mapping[str, Any] | VMDefinition,
                 name: str | None = None) -> dict[str, Any]:
        """The destination's side of :meth:`migrate`: define a VM from ``definition``
        (named ``name``, default its own) and start a VM process that waits, on
        127.0.0.1, for the machine a source sends. Returns ``{"name", "port", "token"}``
        (a one-time token); if no migration comes within a minute, or it fails, the
        definition is removed again. :class:`DuplicateName` (409), the errors of
        :meth:`start`."""
        doc = definition.to_dict() if isinstance(definition, VMDefinition) else dict(definition)
        result: dict[str, Any] = self._call("incoming", {"definition": doc, "name": name},
                                            wait=None)
        return result

    def metrics(self, name: str | None = None) -> dict[str, Any]:
        """What ``pyhv top`` shows: ``{"host": {...}, "vms": [{...}, ...]}`` with each
        VM's state, CPU % (last second) and entitlement, guest MIPS, memory and I/O."""
        if name is not None:
            self.get(name)
        result: dict[str, Any] = self._call("metrics", {"name": name})
        return result

    def debug(self, name: str) -> int:
        """Open running VM ``name``'s gdb stub (or find it open): the loopback TCP port
        for gdb's ``target remote 127.0.0.1:PORT`` (docs/gdb.md). :class:`Conflict`
        when the VM does not run (or is paused)."""
        self.get(name)
        return int(self._call("debug", {"name": name})["port"])

    def console_path(self, name: str) -> Path:
        """The UNIX socket of a running VM's serial console (:class:`Conflict` when it
        does not run)."""
        from .errors import Conflict

        vm = self.get(name)
        path = self.registry.run_dir(name) / "console.sock"
        if vm.pid is None or not path.exists():
            raise Conflict(f"VM '{name}' is not running")
        return path

    # ----------------------------------------------------------------- for the daemon

    def running(self) -> builtins.list[VMDefinition]:
        """Definitions of the running VMs."""
        return [vm.definition for vm in self.list() if vm.state in RUNNING_STATES]

    def check_admission(self, name: str) -> None:
        """May VM ``name`` start now? (see :func:`~pyhv.host.registry.check_admission`)"""
        candidate = self.get(name).definition
        check_admission(self.running(), candidate, self.settings)


def _apply(current: VMDefinition, changes: Mapping[str, Any]) -> VMDefinition:
    fields: dict[str, Any] = {}
    qos = current.qos
    terms = current.memory_terms
    if "memory" in changes:
        value = changes["memory"]
        fields["memory"] = value if _is_int(value) else parse_memory_value(value)
        if terms.shares == current.default_memory_shares:
            terms = replace(terms, shares=None)  # the default follows the size
    if "memory_shares" in changes:
        size = fields.get("memory", current.memory)
        terms = replace(terms, shares=parse_memory_shares(changes["memory_shares"], size))
    if "memory_reservation" in changes:
        value = changes["memory_reservation"]
        terms = replace(terms, reservation=value if _is_int(value) else parse_memory_value(
            value, "memory.reservation", zero=True))
    if "memory_limit" in changes:
        value = changes["memory_limit"]
        terms = replace(terms, limit=value if value is None or _is_int(value)
                        else parse_memory_value(value, "memory.limit"))
    fields["memory_terms"] = terms
    if "autostart" in changes:
        fields["autostart"] = changes["autostart"]
    if "shares" in changes:
        qos = replace(qos, shares=parse_shares_value(changes["shares"], current.vcpus))
    if "reservation" in changes:
        value = changes["reservation"]
        if not _is_number(value):
            raise _bad_type("qos.reservation", value, "a percentage (number)")
        qos = replace(qos, reservation=value)
    if "limit" in changes:
        qos = replace(qos, limit=changes["limit"])
    if "io" in changes:
        fields["disks"], fields["nets"] = _apply_io(current, changes["io"])
    return replace(current, **fields, qos=qos)


def _apply_io(current: VMDefinition, io: object) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The disks and NICs of ``current`` with the I/O budget changes ``io`` (see
    :meth:`Host.set`); the definition checks the result (a burst without its rate...)."""
    example = '{"disk0": {"bps": "2M"}}'
    if not isinstance(io, Mapping) or not io:
        raise DefinitionError("io", f"expected the devices' new terms, such as {example}")
    disks, nets = builtins.list(current.disks), builtins.list(current.nets)
    for device, terms in io.items():
        match = IO_DEVICE_RE.match(str(device))
        if match is None:
            raise DefinitionError(f"io.{device}", "not a device of the VM (disk0, disk1, ..., "
                                  "net0, net1, ...)")
        kind, i = match.group(1), int(match.group(2))
        items: builtins.list[Any] = disks if kind == "disk" else nets
        if i >= len(items):
            what = "disk" if kind == "disk" else "NIC"
            raise DefinitionError(f"io.{device}", f"the VM has {len(items)} {what}"
                                  f"{'s' if len(items) != 1 else ''}")
        if not isinstance(terms, Mapping) or not terms:
            raise DefinitionError(f"io.{device}", f"expected its new terms, such as {example}")
        keys = DISK_RATES if kind == "disk" else NET_RATES
        new: dict[str, int | None] = {}
        for key, value in terms.items():
            if key not in keys:
                raise DefinitionError(f"io.{device}.{key}", f"not an I/O budget of a {kind} "
                                      f"(known: {', '.join(keys)})")
            new[key] = None if value is None else parse_rate_value(value, f"{kind}[{i}].{key}")
        items[i] = replace(items[i], **new)
    return tuple(disks), tuple(nets)


def parse_io_changes(texts: builtins.list[str]) -> dict[str, dict[str, str | None]]:
    """``pyhv set --io disk0.bps=2M,disk0.iops=200 --io net0.tx_bps=none``: the ``io``
    changes of :meth:`Host.set` (the values are checked there)."""
    io: dict[str, dict[str, str | None]] = {}
    for text in texts:
        for item in text.split(","):
            target, eq, value = item.partition("=")
            device, dot, key = target.strip().partition(".")
            value = value.strip()
            if not eq or not dot or not key or not value or not IO_DEVICE_RE.match(device):
                raise DefinitionError("io", f"'{item}': expected DEVICE.KEY=RATE (disk0.bps=2M, "
                                      "net0.tx_pps=100; none removes a limit)")
            io.setdefault(device, {})[key] = None if value.lower() == "none" else value
    return io
