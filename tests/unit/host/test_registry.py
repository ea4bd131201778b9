"""The state directory: layout, atomic changes, host settings, run files, admission."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pyhv.host import registry
from pyhv.host.definition import Disk, QoS, VMDefinition
from pyhv.host.errors import (
    DefinitionError,
    DiskInUse,
    DuplicateName,
    InsufficientResources,
    NotFound,
    VMRunning,
)
from pyhv.host.registry import (
    HostSettings,
    Registry,
    check_admission,
    check_fits,
    default_state_dir,
    physical_memory,
    read_pid_file,
    write_pid_file,
)

MiB = 1024 * 1024
GiB = 1024 * MiB


def vm(name: str, **kw: object) -> VMDefinition:
    return VMDefinition(name, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ where


def test_default_state_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PYHV_STATE_DIR": "/s", "XDG_DATA_HOME": "/x"}
    assert default_state_dir(env) == Path("/s")
    assert default_state_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/pyhv")
    assert default_state_dir({"PYHV_STATE_DIR": "", "XDG_DATA_HOME": "/x"}) == Path("/x/pyhv")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir({}) == tmp_path / ".local" / "share" / "pyhv"


def test_registry_uses_the_environment(tmp_path: Path) -> None:
    # conftest points PYHV_STATE_DIR at a temporary directory
    assert Registry().root == tmp_path / "default-state"
    assert Registry(tmp_path / "other").root == tmp_path / "other"


def test_layout(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    assert reg.definition_path("web") == tmp_path / "vms" / "web" / "vm.toml"
    assert reg.pid_file("web") == tmp_path / "vms" / "web" / "run" / "pid"
    assert reg.settings_path == tmp_path / "host.toml"
    with pytest.raises(NotFound):
        reg.vm_dir("../escape")


# ------------------------------------------------------------------------ create, load


def test_create_and_load(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state")
    d = vm("web", memory=256 * MiB, qos=QoS(reservation=20))
    path = reg.create(d)
    assert path == tmp_path / "state" / "vms" / "web"
    assert (path / "vm.toml").read_text() == d.to_toml()
    assert reg.load("web") == d
    assert reg.names() == ["web"] and reg.exists("web")
    assert sorted(p.name for p in (tmp_path / "state" / "vms").iterdir()) == ["web"]


def test_create_refuses_a_duplicate(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web", memory=256 * MiB))
    with pytest.raises(DuplicateName, match="a VM named 'web' already exists") as info:
        reg.create(vm("web"))
    assert info.value.http_status == 409
    assert reg.load("web").memory == 256 * MiB  # untouched


def test_a_stray_empty_directory_does_not_block_a_create(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    (tmp_path / "vms" / "web").mkdir(parents=True)
    reg.create(vm("web"))
    assert reg.names() == ["web"]


def test_a_non_empty_directory_in_the_way_is_a_conflict(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    (tmp_path / "vms" / "web").mkdir(parents=True)
    (tmp_path / "vms" / "web" / "stuff").write_text("x")
    with pytest.raises(DuplicateName, match="in the way"):
        reg.create(vm("web"))
    assert (tmp_path / "vms" / "web" / "stuff").read_text() == "x"
    assert sorted(p.name for p in (tmp_path / "vms").iterdir()) == ["web"]


@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_failed_create_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    reg = Registry(tmp_path)

    def fail(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    if where == "write":
        monkeypatch.setattr(registry, "atomic_write", fail)
    else:
        monkeypatch.setattr(registry.os, "rename", fail)
    with pytest.raises(OSError, match="No space"):
        reg.create(vm("web"))
    monkeypatch.undo()
    assert list((tmp_path / "vms").iterdir()) == []
    assert reg.names() == []
    reg.create(vm("web"))  # and the name is free
    assert reg.names() == ["web"]


def test_leftovers_of_an_interrupted_change_are_ignored_and_cleaned(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    for name in (".new-web-abc", ".old-db-xyz"):
        (tmp_path / "vms" / name / "web").mkdir(parents=True)
        (tmp_path / "vms" / name / "web" / "vm.toml").write_text('name = "web"')
    assert reg.names() == []
    reg.create(vm("other"))
    assert sorted(p.name for p in (tmp_path / "vms").iterdir()) == ["other"]


def test_names_skip_what_is_not_a_vm(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("b"))
    reg.create(vm("a"))
    (tmp_path / "vms" / "empty").mkdir()
    (tmp_path / "vms" / "Upper").mkdir()
    (tmp_path / "vms" / "Upper" / "vm.toml").write_text('name = "Upper"')
    (tmp_path / "vms" / "file").write_text("x")
    assert reg.names() == ["a", "b"]
    assert Registry(tmp_path / "missing").names() == []


def test_load_checks_the_name_against_the_directory(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web"))
    os.rename(tmp_path / "vms" / "web", tmp_path / "vms" / "copy")
    with pytest.raises(DefinitionError) as info:
        reg.load("copy")
    assert info.value.field == "name"
    assert "vms/copy/vm.toml: name: 'web' differs from its directory name 'copy'" in str(info.value)


def test_load_reports_a_hand_edited_error_with_the_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web"))
    path = reg.definition_path("web")
    path.write_text(path.read_text().replace("[qos]", "[qos]\nlimt = 5"))
    with pytest.raises(DefinitionError) as info:
        reg.load("web")
    assert str(info.value).startswith(f"{path}: qos.limt: unknown key")


def test_load_unknown(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no VM named 'ghost'"):
        Registry(tmp_path).load("ghost")


def test_replace_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web"))
    reg.replace(vm("web", autostart=True))
    assert reg.load("web").autostart
    assert sorted(p.name for p in reg.vm_dir("web").iterdir()) == ["vm.toml"]
    with pytest.raises(NotFound):
        reg.replace(vm("ghost"))


def test_relative_paths_in_a_hand_edited_definition_stay_inside_its_directory(
    tmp_path: Path,
) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web"))
    path = reg.definition_path("web")
    path.write_text(path.read_text() + '\n[[disk]]\npath = "disk.img"\n')
    assert reg.load("web").disks[0].path == str(reg.vm_dir("web") / "disk.img")


# ------------------------------------------------------------------------ remove


def test_remove(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web"))
    (reg.run_dir("web")).mkdir()
    (reg.run_dir("web") / "console.log").write_text("x")
    reg.remove("web")
    assert reg.names() == [] and list((tmp_path / "vms").iterdir()) == []
    with pytest.raises(NotFound):
        reg.remove("web")


def test_remove_refuses_a_running_vm(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.create(vm("web"))
    reg.run_dir("web").mkdir()
    write_pid_file(reg.pid_file("web"), os.getpid())
    with pytest.raises(VMRunning, match=f"VM 'web' is running \\(pid {os.getpid()}\\)"):
        reg.remove("web")
    assert reg.exists("web")


# ------------------------------------------------------------------------ pid files


def test_pid_file_of_a_live_process(tmp_path: Path) -> None:
    f = tmp_path / "pid"
    write_pid_file(f, os.getpid())
    assert read_pid_file(f) == os.getpid()
    f.write_text(f"{os.getpid()}\n")  # without a start time
    assert read_pid_file(f) == os.getpid()


def test_pid_file_of_a_dead_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    f = tmp_path / "pid"
    write_pid_file(f, proc.pid)
    proc.wait()
    assert read_pid_file(f) is None


def test_pid_file_of_a_reused_pid(tmp_path: Path) -> None:
    f = tmp_path / "pid"
    f.write_text(f"{os.getpid()} 1\n")  # our pid, but another process's start time
    assert read_pid_file(f) is None


@pytest.mark.parametrize("text", ["", "junk", "-1", "0", "12 x"])
def test_pid_file_garbage(tmp_path: Path, text: str) -> None:
    f = tmp_path / "pid"
    f.write_text(text)
    assert read_pid_file(f) is None
    assert read_pid_file(tmp_path / "missing") is None


# ------------------------------------------------------------------------ locking


def test_lock_is_reentrant_and_excludes_other_registries(tmp_path: Path) -> None:
    a, b = Registry(tmp_path), Registry(tmp_path)
    got = threading.Event()

    def other() -> None:
        with b.lock():
            got.set()

    with a.lock():
        with a.lock():
            pass
        t = threading.Thread(target=other)
        t.start()
        assert not got.wait(0.3)
    assert got.wait(5)
    t.join()


# ------------------------------------------------------------------------ host settings


def test_host_settings_defaults() -> None:
    s = HostSettings()
    assert s.host_cpus == registry.available_cpus() >= 1
    assert s.host_memory == physical_memory() > 0
    # no TCP port unless asked for (the API is on the state directory's socket)
    assert (s.memory_overcommit, s.policy, s.api_bind) == (1.0, "shares", None)
    assert s.api_address is None and "api" not in s.to_dict()
    assert "[api]" not in s.to_toml() and HostSettings.from_toml(s.to_toml()) == s
    assert s.cpu_capacity == 100 * s.host_cpus


def test_physical_memory_is_memtotal() -> None:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines()
                if x.startswith("MemTotal:"))
    assert physical_memory() == int(line.split()[1]) * 1024


def test_host_settings_from_toml(many_cpus: None) -> None:
    s = HostSettings.from_toml(
        'cpus = 4\nmemory = "8G"\nmemory_overcommit = 1.5\npolicy = "round-robin"\n'
        '[api]\nbind = "[::1]:8000"\n'
    )
    assert (s.cpus, s.memory, s.memory_overcommit, s.policy) == (4, 8 * GiB, 1.5, "round-robin")
    assert s.api_address == ("::1", 8000)
    assert s.memory_capacity == 12 * GiB and s.cpu_capacity == 400
    assert HostSettings.from_toml(s.to_toml()) == s
    assert HostSettings.from_toml(HostSettings().to_toml()) == HostSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpus = 0", "cpus: 0 is out of range (1 to the 8 CPUs of this host)"),
        ("cpus = 9", "cpus: 9 is out of range"),
        ('cpus = "2"', "cpus: expected an integer"),
        ("memory_overcommit = 0", "memory_overcommit: 0 is out of range"),
        ('memory_overcommit = "x"', "memory_overcommit: expected a number"),
        ('policy = "fifo"', "policy: unknown policy 'fifo' (choose from: shares, round-robin)"),
        ('[api]\nbind = "localhost"', "api.bind: 'localhost' is not HOST:PORT"),
        ('[api]\nbind = "::1:80"', "api.bind: '::1:80' is not HOST:PORT"),
        ('[api]\nbind = "h:99999"', "api.bind: 'h:99999' is not HOST:PORT"),
        ('[api]\nport = 80', "api.port: unknown key"),
        ("cpu = 2", "cpu: unknown key (did you mean 'cpus'?)"),
        ('memory = "lots"', "memory: invalid memory size"),
        ("cpus = ", "invalid TOML"),
    ],
)
def test_host_settings_errors_name_the_field(many_cpus: None, text: str, message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        HostSettings.from_toml(text, "host.toml")
    assert str(info.value).startswith("host.toml: ")
    assert message in str(info.value)


def test_load_settings(tmp_path: Path, many_cpus: None) -> None:
    reg = Registry(tmp_path)
    assert reg.load_settings() == HostSettings()
    reg.settings_path.write_text("cpus = 2\n")
    assert reg.load_settings().cpus == 2
    reg.settings_path.write_text('policy = "x"\n')
    with pytest.raises(DefinitionError, match=f"^{tmp_path}/host.toml: policy: "):
        reg.load_settings()


# ------------------------------------------------------------------------ admission


@pytest.fixture
def host(many_cpus: None) -> HostSettings:
    return HostSettings(cpus=2, memory=1 * GiB, memory_overcommit=1.0)


def test_admission_of_reservations(host: HostSettings) -> None:
    running = [vm("a", qos=QoS(reservation=100)), vm("b", vcpus=2, qos=QoS(reservation=60))]
    check_admission(running, vm("c", qos=QoS(reservation=40)), host)
    with pytest.raises(InsufficientResources) as info:
        check_admission(running, vm("c", qos=QoS(reservation=50)), host)
    assert str(info.value) == (
        "VM 'c': qos.reservation 50% does not fit: running VMs reserve 160% of the host's "
        "200% (2 CPUs)"
    )
    assert info.value.http_status == 409
    check_admission(running, vm("c", qos=QoS(reservation=0, limit=100)), host)


def test_admission_of_memory(host: HostSettings) -> None:
    running = [vm("a", memory=512 * MiB), vm("b", memory=256 * MiB)]
    check_admission(running, vm("c", memory=256 * MiB), host)
    with pytest.raises(InsufficientResources, match="memory 512M does not fit: running VMs "
                       "use 768 MiB of the 1024 MiB the host allows"):
        check_admission(running, vm("c", memory=512 * MiB), host)
    over = HostSettings(cpus=2, memory=1 * GiB, memory_overcommit=1.5)
    check_admission(running, vm("c", memory=512 * MiB), over)


def test_admission_of_a_running_vm(host: HostSettings) -> None:
    with pytest.raises(VMRunning, match="'a' is already running"):
        check_admission([vm("a")], vm("a"), host)


def test_check_fits(host: HostSettings) -> None:
    check_fits(vm("a", vcpus=4, qos=QoS(reservation=200)), host)
    with pytest.raises(DefinitionError) as info:
        check_fits(vm("a", vcpus=4, qos=QoS(reservation=300)), host)
    assert info.value.field == "qos.reservation"
    assert "300% is more than the host can reserve (200%: 2 CPUs)" in str(info.value)
    with pytest.raises(DefinitionError) as info:
        check_fits(vm("a", memory=2 * GiB), host)
    assert info.value.field == "memory"
    assert "2G is more than the host allows all VMs together (1024 MiB" in str(info.value)
    # admission applies the same rule to a candidate alone
    with pytest.raises(DefinitionError):
        check_admission([], vm("a", memory=2 * GiB), host)


@pytest.mark.parametrize(
    ("theirs", "mine", "conflict"),
    [
        (Disk("IMG"), Disk("IMG"), True),  # both write
        (Disk("IMG"), Disk("IMG", readonly=True), True),  # they write, I read
        (Disk("IMG", readonly=True), Disk("IMG"), True),  # they read, I write
        (Disk("IMG", readonly=True), Disk("IMG", readonly=True), False),
        (Disk("IMG", overlay=""), Disk("IMG", overlay=""), False),  # shared overlay base
        (Disk("IMG", readonly=True), Disk("IMG", overlay="OVL"), False),
        (Disk("IMG", overlay="OVL"), Disk("OTHER", overlay="OVL"), True),  # same overlay
        (Disk("IMG"), Disk("OTHER"), False),
        (Disk("IMG"), Disk("LINK", readonly=True), True),  # a symlink to the same image
    ],
)
def test_admission_of_disks(
    tmp_path: Path, host: HostSettings, theirs: Disk, mine: Disk, conflict: bool
) -> None:
    names = {"IMG": tmp_path / "img", "OTHER": tmp_path / "other", "OVL": tmp_path / "ovl",
             "LINK": tmp_path / "link"}
    (tmp_path / "img").write_bytes(b"\0" * 512)
    (tmp_path / "other").write_bytes(b"\0" * 512)
    (tmp_path / "link").symlink_to(tmp_path / "img")

    def real(d: Disk) -> Disk:
        return Disk(str(names[d.path]), d.readonly,
                    str(names[d.overlay]) if d.overlay else d.overlay)

    running = [vm("a"), vm("b", disks=(real(theirs),))]
    candidate = vm("c", disks=(real(mine),))
    if conflict:
        with pytest.raises(DiskInUse, match="is in use by running VM 'b'") as info:
            check_admission(running, candidate, host)
        assert info.value.http_status == 409
    else:
        check_admission(running, candidate, host)


def test_renames_into_place_are_made_durable(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new or replaced state file: the file fsynced before its rename, the directory
    that names it after; a create and a remove fsync the VMs' directory."""
    reg = Registry(tmp_path / "state")
    events: list[str] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(a: object, b: object) -> None:
        events.append("rename")
        real_replace(a, b)  # type: ignore[arg-type]

    def rename(a: object, b: object) -> None:
        events.append("rename")
        real_rename(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    reg.create(VMDefinition("a"))
    assert events == ["fsync file", "rename", "fsync dir", "rename", "fsync dir"]
    events.clear()
    reg.replace(VMDefinition("a", memory=256 << 20))
    assert events == ["fsync file", "rename", "fsync dir"]
    events.clear()
    reg.remove("a")
    assert events == ["rename", "fsync dir"]
