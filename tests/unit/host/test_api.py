"""The Python API: pyhv.Host and pyhv.VM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyhv
from pyhv.host import api
from pyhv.host.api import VM, Host
from pyhv.host.definition import Disk, Net, VMDefinition
from pyhv.host.errors import (
    DefinitionError,
    DiskInUse,
    DuplicateName,
    HostError,
    Invalid,
    NotFound,
    VMRunning,
)
from pyhv.host.registry import write_pid_file

MiB = 1024 * 1024
SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with a kernel and two disk images."""
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "Image").write_bytes(b"\0" * 64)
    (folder / "root.img").write_bytes(b"\0" * 4096)
    (folder / "data.img").write_bytes(b"\0" * 4096)
    return folder


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "state")


def state_entries(host: Host) -> list[str]:
    vms = host.state_dir / "vms"
    return sorted(p.name for p in vms.iterdir()) if vms.exists() else []


def mark_running(host: Host, name: str, pid: int | None = None) -> None:
    run = host.registry.run_dir(name)
    run.mkdir(exist_ok=True)
    write_pid_file(run / "pid", pid or os.getpid())


# ------------------------------------------------------------------------ create


def test_create_from_a_file(host: Host, files: Path) -> None:
    f = files / "web.toml"
    f.write_text('name = "web"\nmemory = "256M"\n[boot]\nkernel = "Image"\n'
                 '[[disk]]\npath = "root.img"\n')
    vm = host.create(f)
    assert isinstance(vm, VM) and vm.name == "web" and vm.state == "stopped" and vm.pid is None
    assert vm.definition.boot.kernel == str(files / "Image")
    assert vm.definition.disks == (Disk(str(files / "root.img")),)
    assert vm.path == host.state_dir / "vms" / "web"
    assert host.get("web").definition == vm.definition


def test_create_from_text_dict_and_definition(host: Host, files: Path) -> None:
    a = host.create('name = "a"\n[boot]\nkernel = "Image"', base_dir=files)
    b = host.create({"name": "b", "vcpus": 2, "qos": {"shares": "low"}})
    c = host.create(VMDefinition("c", memory=64 * MiB))
    assert a.definition.boot.kernel == str(files / "Image")
    assert b.definition.qos.shares == 1000
    assert c.definition.memory == 64 * MiB
    assert [v.name for v in host.list()] == ["a", "b", "c"]


def test_create_from_something_else(host: Host) -> None:
    with pytest.raises(Invalid, match="cannot make a VM definition from int"):
        host.create(42)  # type: ignore[arg-type]


def test_create_gives_nics_a_stable_mac(host: Host) -> None:
    vm = host.create({"name": "a", "net": [{"switch": "lan"},
                                           {"switch": "lan", "mac": "52:54:00:00:00:07"}]})
    mac = vm.definition.nets[0].mac
    assert mac is not None and mac.startswith("52:54:00:")
    assert vm.definition.nets[1] == Net("lan", "52:54:00:00:00:07")
    assert host.get("a").definition.nets[0].mac == mac


def test_create_with_user_networking_as_the_rest_api_sends_it(host: Host) -> None:
    """A ``[[net]]`` on user-mode networking, as JSON: kept as given, with a MAC drawn."""
    vm = host.create({"name": "u", "net": [{"user": True, "hostfwd": ["tcp::2222-:22"],
                                            "restrict": True}]})
    (net,) = host.get("u").definition.nets
    assert net.user and net.hostfwd == ("tcp::2222-:22",) and net.restrict
    assert net.switch is None and net.mac == vm.definition.nets[0].mac is not None
    with pytest.raises(DefinitionError, match=r"net\[0\]\.hostfwd"):
        host.create({"name": "v", "net": [{"user": True, "hostfwd": ["tcp::22:22"]}]})


def test_create_refuses_a_duplicate_and_keeps_the_original(host: Host) -> None:
    host.create({"name": "web", "memory": "256M"})
    with pytest.raises(DuplicateName, match="a VM named 'web' already exists") as info:
        host.create({"name": "web", "memory": "512M"})
    assert info.value.http_status == 409
    assert host.get("web").definition.memory == 256 * MiB
    assert state_entries(host) == ["web"]


def test_an_invalid_definition_creates_nothing(host: Host) -> None:
    with pytest.raises(DefinitionError) as info:
        host.create('name = "web"\n[qos]\nreservation = 80\nlimit = 50', source="web.toml")
    assert str(info.value) == "web.toml: qos.limit: 50 is below qos.reservation 80"
    assert info.value.http_status == 422
    assert state_entries(host) == [] and host.list() == []


def test_create_checks_the_files(host: Host, files: Path) -> None:
    with pytest.raises(DefinitionError) as info:
        host.create({"name": "a", "boot": {"kernel": "nope"}}, base_dir=files,
                    source="a.toml")
    assert str(info.value) == f"a.toml: boot.kernel: {files / 'nope'}: no such file"
    with pytest.raises(DefinitionError, match=r"disk\[1\].path: .*missing.img: no such file"):
        host.create({"name": "a", "disk": [{"path": "root.img"}, {"path": "missing.img"}]},
                    base_dir=files)
    with pytest.raises(DefinitionError, match=r"disk\[0\].path: .* is a directory"):
        host.create({"name": "a", "disk": [{"path": "."}]}, base_dir=files)
    with pytest.raises(DefinitionError, match=r"disk\[0\].overlay: directory .* does not exist"):
        host.create({"name": "a", "disk": [{"path": "root.img", "overlay": "no/dir/x.ovl"}]},
                    base_dir=files)
    assert state_entries(host) == []
    vm = host.create({"name": "a", "boot": {"kernel": "nope"}}, base_dir=files,
                     require_files=False)
    assert vm.definition.boot.kernel == str(files / "nope")


def test_create_refuses_what_the_host_can_never_give(host: Host) -> None:
    host.state_dir.mkdir(parents=True)
    (host.state_dir / "host.toml").write_text('cpus = 1\nmemory = "256M"\n')
    with pytest.raises(DefinitionError, match=r"^a: qos.reservation: 150% is more than the "
                       r"host can reserve \(100%: 1 CPUs\)"):
        host.create({"name": "a", "vcpus": 2, "qos": {"reservation": 150}}, source="a")
    with pytest.raises(DefinitionError, match="memory: 512M is more than the host allows"):
        host.create({"name": "a", "memory": "512M"})
    assert state_entries(host) == []


def test_a_failure_while_writing_creates_nothing(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyhv.host import registry

    def boom(path: Path, text: str) -> None:
        path.write_text(text[:10])  # a partial file, then the failure
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(registry, "atomic_write", boom)
    with pytest.raises(OSError):
        host.create({"name": "web"})
    assert state_entries(host) == []
    with pytest.raises(NotFound):
        host.get("web")


# ------------------------------------------------------------------------ get, list


def test_get_unknown(host: Host) -> None:
    with pytest.raises(NotFound, match="no VM named 'ghost'") as info:
        host.get("ghost")
    assert info.value.http_status == 404
    assert isinstance(info.value, HostError)


def test_get_with_a_name_that_is_a_path(host: Host, tmp_path: Path) -> None:
    (tmp_path / "vm.toml").write_text('name = "evil"')
    for name in ("..", "../..", "/etc", "a/b", "", "A"):
        with pytest.raises(NotFound):
            host.get(name)


def test_list_is_sorted_and_json_ready(host: Host) -> None:
    for name in ("zeta", "alpha", "mid"):
        host.create({"name": name})
    vms = host.list()
    assert [v.name for v in vms] == ["alpha", "mid", "zeta"]
    doc = vms[0].to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["state"] == "stopped" and doc["definition"]["name"] == "alpha"
    assert Host(host.state_dir / "nothing-here").list() == []


def test_a_broken_definition_does_not_hide_the_others(host: Host) -> None:
    host.create({"name": "good"})
    host.create({"name": "bad"})
    path = host.registry.definition_path("bad")
    path.write_text(path.read_text().replace("vcpus = 1", 'vcpus = "one"'))
    assert [v.name for v in host.list()] == ["good"]
    vms, broken = host.scan()
    assert list(broken) == ["bad"]
    assert str(broken["bad"]).startswith(f"{path}: vcpus: expected an integer")
    with pytest.raises(DefinitionError, match="vcpus"):
        host.get("bad")
    host.destroy("bad")  # it can still be removed
    assert host.scan() == (vms, {})


# ------------------------------------------------------------------------ set


def test_set_qos_memory_and_autostart(host: Host) -> None:
    host.create({"name": "web", "vcpus": 2})
    vm = host.set("web", shares="high", reservation=50, limit=150, memory="512M",
                  autostart=True)
    d = vm.definition
    assert (d.qos.shares, d.qos.reservation, d.qos.limit) == (4000, 50, 150)
    assert d.memory == 512 * MiB and d.autostart
    assert host.get("web").definition == d
    d = host.set("web", limit=None, memory=256 * MiB, shares=1500).definition
    assert (d.qos.limit, d.memory, d.qos.shares) == (None, 256 * MiB, 1500)
    assert "limit" not in host.registry.definition_path("web").read_text()


def test_vm_set_updates_the_object(host: Host) -> None:
    vm = host.create({"name": "web"})
    assert vm.set(reservation=25) is vm
    assert vm.definition.qos.reservation == 25
    assert vm.refresh().definition.qos.reservation == 25


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit": 40, "reservation": 60}, "web: qos.limit: 40 is below qos.reservation 60"),
        ({"reservation": 300}, "web: qos.reservation: 300% is more than 2 vCPUs can use"),
        ({"limit": 0}, "web: qos.limit: 0 must be positive"),
        ({"limit": "50"}, 'web: qos.limit: expected a percentage (number), got a string ("50")'),
        ({"reservation": "50"}, "web: qos.reservation: expected a percentage"),
        ({"shares": "extreme"}, "web: qos.shares: 'extreme' is not a share level"),
        ({"shares": -1}, "web: qos.shares: -1 must be positive"),
        ({"memory": "4M"}, "web: memory: 4 MiB is out of range"),
        ({"memory": 3.5}, "web: memory: expected a size"),
        ({"autostart": "yes"}, "web: autostart: expected a boolean"),
        ({"vcpus": 4}, "web: vcpus: cannot be set (settable: memory, shares"),
    ],
)
def test_set_validates_and_changes_nothing_on_error(
    host: Host, changes: dict[str, object], message: str
) -> None:
    host.create({"name": "web", "vcpus": 2, "qos": {"reservation": 50, "limit": 100}})
    before = host.registry.definition_path("web").read_bytes()
    with pytest.raises(DefinitionError) as info:
        host.set("web", **changes)
    assert str(info.value).startswith(message)
    assert info.value.http_status == 422
    assert host.registry.definition_path("web").read_bytes() == before


def test_set_nothing_or_unknown(host: Host) -> None:
    host.create({"name": "web"})
    with pytest.raises(Invalid, match="nothing to change"):
        host.set("web")
    with pytest.raises(NotFound):
        host.set("ghost", shares=10)


def test_set_respects_the_host(host: Host) -> None:
    host.create({"name": "web", "vcpus": 2})
    (host.state_dir / "host.toml").write_text("cpus = 1\n")
    with pytest.raises(DefinitionError, match="web: qos.reservation: 150% is more than the host"):
        host.set("web", reservation=150)


# ------------------------------------------------------------------------ destroy, state


def test_destroy(host: Host) -> None:
    host.create({"name": "web"})
    host.destroy("web")
    assert host.list() == [] and state_entries(host) == []
    with pytest.raises(NotFound):
        host.destroy("web")


def test_a_running_vm_cannot_be_destroyed(host: Host) -> None:
    vm = host.create({"name": "web"})
    mark_running(host, "web")
    assert vm.state == "running" and vm.pid == os.getpid()
    assert host.get("web").to_dict()["pid"] == os.getpid()
    with pytest.raises(VMRunning, match="VM 'web' is running") as info:
        vm.destroy()
    assert info.value.http_status == 409
    assert host.get("web").name == "web"


def test_a_stale_pid_file_means_stopped(host: Host) -> None:
    vm = host.create({"name": "web"})
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    mark_running(host, "web", proc.pid)
    proc.wait()
    assert vm.state == "stopped"
    host.destroy("web")


def test_vms_are_isolated_from_each_other(host: Host, files: Path) -> None:
    a = host.create({"name": "a", "disk": [{"path": "root.img"}]}, base_dir=files)
    b = host.create({"name": "b", "disk": [{"path": "data.img"}]}, base_dir=files)
    assert a.path != b.path and a.path.parent == b.path.parent
    mark_running(host, "a")
    (a.path / "run" / "serial.log").write_text("a's console")
    assert (a.state, b.state) == ("running", "stopped")
    host.set("b", reservation=10)
    assert host.get("a").definition.qos.reservation == 0
    host.destroy("b")
    assert (a.path / "run" / "serial.log").read_text() == "a's console"
    assert (files / "data.img").exists()  # images outside the state directory are kept
    assert [v.name for v in host.list()] == ["a"]
    # another state directory is another host
    other = Host(host.state_dir.parent / "other-state")
    assert other.list() == []
    other.create({"name": "a"})
    assert host.get("a").definition.disks and not other.get("a").definition.disks


def test_admission_through_the_host(host: Host, files: Path) -> None:
    host.create({"name": "a", "disk": [{"path": "root.img"}]}, base_dir=files)
    host.create({"name": "b", "disk": [{"path": "root.img", "readonly": True}]},
                base_dir=files)
    host.create({"name": "c", "disk": [{"path": "data.img"}]}, base_dir=files)
    host.check_admission("b")  # nothing runs yet
    mark_running(host, "a")
    assert [d.name for d in host.running()] == ["a"]
    with pytest.raises(DiskInUse, match=f"disk {files / 'root.img'} is in use by running VM 'a'"):
        host.check_admission("b")
    host.check_admission("c")
    with pytest.raises(VMRunning):
        host.check_admission("a")


# ------------------------------------------------------------------------ package


def test_pyhv_exports_host_and_vm_lazily() -> None:
    code = (
        "import sys, pyhv\n"
        "heavy = [m for m in ('pyhv.host.api', 'pyhv.vm.machine', 'tomli_w') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from pyhv import Host, VM\n"
        "import pyhv.host.api as api\n"
        "assert Host is api.Host and VM is api.VM and pyhv.Host is Host\n"
        "assert 'Host' in dir(pyhv) and 'Machine' in pyhv.__all__\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert pyhv.Host is Host and pyhv.VM is VM
    with pytest.raises(AttributeError):
        pyhv.NoSuchThing  # noqa: B018


def test_random_mac_is_unicast_and_local() -> None:
    macs = {api.random_mac() for _ in range(20)}
    assert len(macs) > 1
    for mac in macs:
        assert mac.startswith("52:54:00:") and len(mac) == 17
