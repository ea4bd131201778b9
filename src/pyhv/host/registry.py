"""The state directory: VM definitions on disk, host settings, run files, admission.

Layout (``STATE`` is ``--state-dir``, else ``$PYHV_STATE_DIR``, else
``$XDG_DATA_HOME/pyhv``, else ``~/.local/share/pyhv``)::

    STATE/host.toml            host settings (optional; see HostSettings)
    STATE/.lock                flock(2) taken by every change to the directory
    STATE/vms/<name>/vm.toml   the definition of VM <name> (human-editable TOML)
    STATE/vms/<name>/run/      runtime files of the VM while it runs
    STATE/vms/<name>/run/pid   "<pid> <start time>" of the VM process

Everything of one VM lives under its own ``vms/<name>/`` and nothing else: removing a VM
removes that directory, and no file of one VM is ever written through another's.

Changes are atomic. A VM is created by writing its directory under a temporary name
(``vms/.new-*``, never a valid VM name) and renaming it into place, so a failed or
interrupted create leaves nothing a reader can see; a definition is rewritten through a
temporary file and ``os.replace``; a VM is removed by renaming its directory away
(``vms/.old-*``) before deleting it. Leftovers of an interrupted change are cleaned up by
the next change.

The admission checks (:func:`check_fits`, :func:`check_admission`) are pure functions of
definitions and :class:`HostSettings`, for the daemon to call before starting a VM.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .definition import (
    NAME_RULE,
    VMDefinition,
    _bad_type,
    _is_int,
    _is_number,
    _Table,
    format_memory,
    parse_memory_value,
    valid_name,
)
from .errors import (
    DefinitionError,
    DiskInUse,
    DuplicateName,
    InsufficientResources,
    NotFound,
    Unavailable,
    VMRunning,
)

POLICIES = ("shares", "round-robin")
DEFAULT_API_BIND = "127.0.0.1:7480"
DEFINITION_FILE = "vm.toml"
SETTINGS_FILE = "host.toml"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$PYHV_STATE_DIR``, else ``$XDG_DATA_HOME/pyhv``, else ``~/.local/share/pyhv``."""
    env = os.environ if env is None else env
    if env.get("PYHV_STATE_DIR"):
        return Path(env["PYHV_STATE_DIR"]).expanduser()
    if env.get("XDG_DATA_HOME"):
        return Path(env["XDG_DATA_HOME"]).expanduser() / "pyhv"
    return Path.home() / ".local" / "share" / "pyhv"


def available_cpus() -> int:
    """Host CPUs this process may run on (its affinity mask, as in a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_memory() -> int:
    """MemTotal of /proc/meminfo, in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# ------------------------------------------------------------------------ host settings


def _parse_bind(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            return None
        host = host[1:-1]
    elif ":" in host:
        return None  # an IPv6 address needs brackets: [::1]:7480
    return host, int(port)


@dataclass(frozen=True)
class HostSettings:
    """``host.toml``: what the host offers to VMs and how it shares it.

    ``cpus``: host CPUs the VMs may use (None: all this process may run on);
    ``memory``: RAM the VMs may hold together, in bytes (None: MemTotal): the budget
    the memory manager reclaims to through the guests' balloons (host/memory.py), and
    what the running VMs' ``memory.reservation`` together may not exceed;
    ``memory_overcommit``: running VMs together may be given up to this many times
    ``memory``; ``memory_idle_tax``: how much of a VM's active memory the reclaim
    spares (0: a plain split by shares; ESXi's 0.75 by default); ``policy``: the CPU
    scheduler ("shares" or "round-robin");
    ``api_bind``: the ``HOST:PORT`` where the REST API also listens on TCP, with a
    token (None: only on the state directory's UNIX socket, unless ``--listen``).
    """

    cpus: int | None = None
    memory: int | None = None
    memory_overcommit: float = 1.0
    policy: str = "shares"
    api_bind: str | None = None
    memory_idle_tax: float = 0.75

    def __post_init__(self) -> None:
        if self.cpus is not None:
            if not _is_int(self.cpus):
                raise _bad_type("cpus", self.cpus, "an integer")
            have = available_cpus()
            if not 1 <= self.cpus <= have:
                raise DefinitionError(
                    "cpus", f"{self.cpus} is out of range (1 to the {have} CPUs of this host)"
                )
        if self.memory is not None:
            if not _is_int(self.memory):
                raise _bad_type("memory", self.memory, "a size in bytes")
            if self.memory <= 0:
                raise DefinitionError("memory", f"{self.memory} must be positive")
        if not _is_number(self.memory_overcommit):
            raise _bad_type("memory_overcommit", self.memory_overcommit, "a number")
        if not 0 < self.memory_overcommit <= 100:
            raise DefinitionError(
                "memory_overcommit", f"{self.memory_overcommit:g} is out of range (0 to 100)"
            )
        if not _is_number(self.memory_idle_tax):
            raise _bad_type("memory_idle_tax", self.memory_idle_tax, "a number")
        if not 0 <= self.memory_idle_tax < 1:
            raise DefinitionError(
                "memory_idle_tax", f"{self.memory_idle_tax:g} is out of range (0 to 0.99)")
        if self.policy not in POLICIES:
            raise DefinitionError(
                "policy", f"unknown policy {self.policy!r} (choose from: {', '.join(POLICIES)})"
            )
        if self.api_bind is not None and not isinstance(self.api_bind, str):
            raise _bad_type("api.bind", self.api_bind, 'a string "HOST:PORT"')
        if self.api_bind is not None and _parse_bind(self.api_bind) is None:
            raise DefinitionError(
                "api.bind",
                f"'{self.api_bind}' is not HOST:PORT (e.g. 127.0.0.1:7480 or [::1]:7480)",
            )

    @property
    def host_cpus(self) -> int:
        return self.cpus if self.cpus is not None else available_cpus()

    @property
    def host_memory(self) -> int:
        return self.memory if self.memory is not None else physical_memory()

    @property
    def cpu_capacity(self) -> int:
        """Reservable CPU, in percent of one host CPU."""
        return 100 * self.host_cpus

    @property
    def memory_capacity(self) -> int:
        """Bytes of guest RAM that running VMs may be given together."""
        return int(self.memory_overcommit * self.host_memory)

    @property
    def api_address(self) -> tuple[str, int] | None:
        if self.api_bind is None:
            return None
        address = _parse_bind(self.api_bind)
        assert address is not None
        return address

    @classmethod
    def from_toml(cls, text: str, source: str | None = None) -> HostSettings:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DefinitionError(None, f"invalid TOML: {e}", source) from None
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> HostSettings:
        try:
            t = _Table(data, "", ("cpus", "memory", "memory_overcommit", "memory_idle_tax",
                                  "policy", "api"))
            kw: dict[str, Any] = {}
            if t.has("cpus"):
                kw["cpus"] = t.get_int("cpus")
            if t.has("memory"):
                kw["memory"] = parse_memory_value(t.raw("memory"))
            if t.has("memory_overcommit"):
                kw["memory_overcommit"] = t.get_number("memory_overcommit")
            if t.has("memory_idle_tax"):
                kw["memory_idle_tax"] = t.get_number("memory_idle_tax")
            if t.has("policy"):
                kw["policy"] = t.get_str("policy")
            if t.has("api"):
                api = _Table(t.raw("api"), "api.", ("bind",))
                if api.has("bind"):
                    kw["api_bind"] = api.get_str("bind")
            return cls(**kw)
        except DefinitionError as e:
            raise e.with_source(source) from None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.cpus is not None:
            doc["cpus"] = self.cpus
        if self.memory is not None:
            doc["memory"] = format_memory(self.memory)
        doc["memory_overcommit"] = self.memory_overcommit
        doc["memory_idle_tax"] = self.memory_idle_tax
        doc["policy"] = self.policy
        if self.api_bind is not None:
            doc["api"] = {"bind": self.api_bind}
        return doc

    def to_toml(self) -> str:
        import tomli_w

        doc = self.to_dict()
        api = doc.pop("api", None)
        text = "# pyhv host settings (docs/vm-definition.md)\n" + tomli_w.dumps(doc)
        if api is not None:
            text += "\n[api]\n" + tomli_w.dumps(api)
        return text


# ------------------------------------------------------------------------ admission


def check_fits(candidate: VMDefinition, settings: HostSettings) -> None:
    """Refuse a definition that could never run on this host, even alone: a reservation
    beyond the host's CPUs, more memory than the host allows all VMs together."""
    if candidate.qos.reservation > settings.cpu_capacity:
        raise DefinitionError(
            "qos.reservation",
            f"{candidate.qos.reservation:g}% is more than the host can reserve "
            f"({settings.cpu_capacity}%: {settings.host_cpus} CPUs)",
        )
    if candidate.memory_terms.reservation > settings.host_memory:
        raise DefinitionError(
            "memory.reservation",
            f"{format_memory(candidate.memory_terms.reservation)} is more than the host's "
            f"memory budget ({_mib(settings.host_memory)})",
        )
    if candidate.memory > settings.memory_capacity:
        raise DefinitionError(
            "memory",
            f"{format_memory(candidate.memory)} is more than the host allows all VMs together "
            f"({_mib(settings.memory_capacity)}: memory_overcommit "
            f"{settings.memory_overcommit:g} x {_mib(settings.host_memory)})",
        )


def check_admission(
    running: Sequence[VMDefinition], candidate: VMDefinition, settings: HostSettings
) -> None:
    """May ``candidate`` start while the VMs of ``running`` run?

    Raises :class:`InsufficientResources` when the reservations would exceed the host's
    CPUs or the memory of all running VMs would exceed ``memory_overcommit`` times the
    host's RAM, :class:`DiskInUse` when a disk file of the candidate is used by a running
    VM and either of them may write it, :class:`VMRunning` when it already runs."""
    others = [d for d in running if d.name != candidate.name]
    if len(others) != len(running):
        raise VMRunning(f"VM '{candidate.name}' is already running")
    check_fits(candidate, settings)
    reserved = sum(d.qos.reservation for d in others)
    if reserved + candidate.qos.reservation > settings.cpu_capacity:
        raise InsufficientResources(
            f"VM '{candidate.name}': qos.reservation {candidate.qos.reservation:g}% does not "
            f"fit: running VMs reserve {reserved:g}% of the host's {settings.cpu_capacity}% "
            f"({settings.host_cpus} CPUs)"
        )
    held = sum(d.memory_terms.reservation for d in others)
    if held + candidate.memory_terms.reservation > settings.host_memory:
        raise InsufficientResources(
            f"VM '{candidate.name}': memory.reservation "
            f"{_mib(candidate.memory_terms.reservation)} does not fit: running VMs reserve "
            f"{_mib(held)} of the host's memory budget of {_mib(settings.host_memory)}"
        )
    used = sum(d.memory for d in others)
    if used + candidate.memory > settings.memory_capacity:
        raise InsufficientResources(
            f"VM '{candidate.name}': memory {format_memory(candidate.memory)} does not fit: "
            f"running VMs use {_mib(used)} of the {_mib(settings.memory_capacity)} the host "
            f"allows (memory_overcommit {settings.memory_overcommit:g} x "
            f"{_mib(settings.host_memory)})"
        )
    users: dict[str, list[tuple[str, bool]]] = {}
    for d in others:
        for path, writable in d.disk_usage():
            users.setdefault(path, []).append((d.name, writable))
    for path, writable in candidate.disk_usage():
        for other, other_writable in users.get(path, []):
            if writable or other_writable:
                who = "writes" if other_writable else "reads"
                raise DiskInUse(
                    f"VM '{candidate.name}': disk {path} is in use by running VM '{other}' "
                    f"(which {who} it); share an image only read-only or through overlays"
                )


def _mib(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB"


# ------------------------------------------------------------------------ run files


def _process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        if fields[0] == b"Z":
            return -1  # a zombie: dead, only not reaped yet
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def write_pid_file(path: str | os.PathLike[str], pid: int) -> None:
    """Record ``pid`` (and its start time, so a reused pid is not taken for it)."""
    start = _process_start_time(pid)
    atomic_write(Path(path), f"{pid} {start}\n" if start is not None else f"{pid}\n")


def read_pid_file(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in ``path`` if that process is alive, else None."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    parts = text.split()
    try:
        pid = int(parts[0])
        start = int(parts[1]) if len(parts) > 1 else None
    except (IndexError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by someone else
    now = _process_start_time(pid)
    if now == -1 or (start is not None and now is not None and now != start):
        return None
    return pid


# ------------------------------------------------------------------------ files


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in directory ``path`` durable (the file's own fsync
    does not cover the directory entry that names it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file in the same directory and os.replace;
    the file, then the directory, fsynced: after a host crash ``path`` holds the old
    text or the new one, never nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Registry:
    """The state directory of one host (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser().absolute() if root else default_state_dir().absolute()
        self._thread_lock = threading.RLock()
        self._lock_depth = 0

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def vms_dir(self) -> Path:
        return self.root / "vms"

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    def vm_dir(self, name: str) -> Path:
        if not valid_name(name):
            raise NotFound(f"no VM named {name!r} (VM names are {NAME_RULE})")
        return self.vms_dir / name

    def definition_path(self, name: str) -> Path:
        return self.vm_dir(name) / DEFINITION_FILE

    def run_dir(self, name: str) -> Path:
        return self.vm_dir(name) / "run"

    def pid_file(self, name: str) -> Path:
        return self.run_dir(name) / "pid"

    # ----------------------------------------------------------------- reading

    def names(self) -> list[str]:
        """Names of the defined VMs, sorted."""
        try:
            entries = list(self.vms_dir.iterdir())
        except FileNotFoundError:
            return []
        except OSError as e:
            raise Unavailable(
                f"cannot read the state directory {self.vms_dir}: {e.strerror}"
            ) from None
        return sorted(
            p.name for p in entries if valid_name(p.name) and (p / DEFINITION_FILE).is_file()
        )

    def exists(self, name: str) -> bool:
        return valid_name(name) and (self.vms_dir / name / DEFINITION_FILE).is_file()

    def load(self, name: str) -> VMDefinition:
        path = self.definition_path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"no VM named '{name}' (in {self.root})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise Unavailable(f"cannot read {path}: {getattr(e, 'strerror', e)}") from None
        definition = VMDefinition.from_toml(text, str(path))
        if definition.name != name:
            raise DefinitionError(
                "name", f"'{definition.name}' differs from its directory name '{name}'", str(path)
            )
        return definition

    def load_settings(self) -> HostSettings:
        path = self.settings_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return HostSettings()
        except (OSError, UnicodeDecodeError) as e:
            raise Unavailable(f"cannot read {path}: {getattr(e, 'strerror', e)}") from None
        return HostSettings.from_toml(text, str(path))

    def running_pid(self, name: str) -> int | None:
        """The pid of the running VM process, None when the VM is not running."""
        return read_pid_file(self.pid_file(name))

    # ----------------------------------------------------------------- changing

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise changes to the state directory, between processes (flock) and
        threads; re-entrant within one Registry."""
        import fcntl

        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            try:
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise Unavailable(
                    f"cannot use the state directory {self.root}: {e.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_depth = 1
                yield
            finally:
                self._lock_depth = 0
                os.close(fd)

    def _clean_leftovers(self) -> None:
        """Remove what an interrupted create or remove left (call with the lock held)."""
        try:
            entries = list(self.vms_dir.iterdir())
        except OSError:
            return
        for p in entries:
            if p.name.startswith((".new-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)

    def create(self, definition: VMDefinition) -> Path:
        """Write a new VM's directory; :class:`DuplicateName` if the name is taken."""
        name = definition.name
        with self.lock():
            self._clean_leftovers()
            target = self.vm_dir(name)
            if self.exists(name):
                raise DuplicateName(f"a VM named '{name}' already exists")
            try:
                self.vms_dir.mkdir(mode=0o700, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".new-{name}-", dir=self.vms_dir))
            except OSError as e:
                raise Unavailable(f"cannot write to {self.vms_dir}: {e.strerror}") from None
            try:
                atomic_write(tmp / DEFINITION_FILE, definition.to_toml())
                try:
                    os.rename(tmp, target)  # replaces only a stray empty directory
                    fsync_dir(self.vms_dir)
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        raise DuplicateName(
                            f"a VM named '{name}' already exists ({target} is in the way)"
                        ) from None
                    raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return target

    def replace(self, definition: VMDefinition) -> None:
        """Rewrite the definition of an existing VM (atomically)."""
        name = definition.name
        with self.lock():
            if not self.exists(name):
                raise NotFound(f"no VM named '{name}' (in {self.root})")
            atomic_write(self.definition_path(name), definition.to_toml())

    def remove(self, name: str) -> None:
        """Delete a stopped VM's directory; :class:`VMRunning` if it runs."""
        with self.lock():
            if not self.exists(name):
                raise NotFound(f"no VM named '{name}' (in {self.root})")
            pid = self.running_pid(name)
            if pid is not None:
                raise VMRunning(f"VM '{name}' is running (pid {pid}); stop it first")
            self._clean_leftovers()
            trash = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=self.vms_dir))
            os.rename(self.vm_dir(name), trash / name)
            fsync_dir(self.vms_dir)
            shutil.rmtree(trash, ignore_errors=True)
