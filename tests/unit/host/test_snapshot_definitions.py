"""What the host makes of a snapshot file before any VM process starts: the definition
of the saved machine, the names of restored VMs and clones, and where a snapshot may be
written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhv.host.api import (
    check_snapshot_target,
    snapshot_config,
    snapshot_definition,
    snapshot_names,
)
from pyhv.host.definition import VMDefinition
from pyhv.host.errors import DefinitionError, Invalid
from pyhv.vm.config import MachineConfig, NetSpec
from pyhv.vm.snapshot import MAGIC


def test_a_machine_config_becomes_the_definition_it_came_from(tmp_path: Path) -> None:
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"\0")
    original = VMDefinition.from_dict({
        "name": "web", "vcpus": 2, "memory": "256M", "engine": "interp",
        "boot": {"firmware": "none", "kernel": str(kernel), "cmdline": "console=ttyS0"},
        "disk": [{"path": str(tmp_path / "a.img"), "readonly": True},
                 {"path": str(tmp_path / "b.img"), "overlay": True}],
        "net": [{"switch": "lan", "mac": "52:54:00:00:00:07"}],
        "devices": {"rng": True, "balloon": True},
    })
    back = VMDefinition.from_machine_config(original.to_machine_config(), "web")
    assert back == original
    assert back.to_machine_config() == original.to_machine_config()


def test_a_clone_definition_has_fresh_macs() -> None:
    config = MachineConfig(kernel="/k", bios="none", memory=32 << 20,
                           devices=(NetSpec("lan", "52:54:00:00:00:01"), NetSpec("wan")))
    same = snapshot_definition(config, "r")
    assert same.nets[0].mac == "52:54:00:00:00:01" and same.nets[1].mac  # drawn
    clone = snapshot_definition(config, "c-1", fresh_macs=True)
    assert clone.nets[0].mac != "52:54:00:00:00:01"
    assert clone.qos.shares == 1000 and clone.qos.reservation == 0


def test_names_of_restored_vms_and_clones() -> None:
    assert snapshot_names("/s/web.snap", None) == ["web"]
    assert snapshot_names("/s/web.snap", "db") == ["db"]
    assert snapshot_names("/s/web.snap", None, 3) == ["web-1", "web-2", "web-3"]
    with pytest.raises(Invalid, match="give one"):
        snapshot_names("/s/My Web.snap", None)
    with pytest.raises(DefinitionError, match="no VM name"):
        snapshot_names("/s/web.snap", "Web")
    with pytest.raises(DefinitionError, match="no VM name"):
        snapshot_names("/s/web.snap", "x" * 62, 10)  # x...-10 is over 63 characters


def test_where_a_snapshot_may_be_written(tmp_path: Path) -> None:
    target = tmp_path / "vm.snap"
    assert check_snapshot_target(str(target)) == str(target)
    target.write_bytes(MAGIC + b"\0" * 100)  # an earlier snapshot is replaced
    assert check_snapshot_target(str(target)) == str(target)
    other = tmp_path / "disk.img"
    other.write_bytes(b"\x7fELF")
    for path, words in [
        ("vm.snap", "relative"),
        (str(tmp_path), "is a directory"),
        (str(tmp_path / "none" / "vm.snap"), "does not exist"),
        (str(other), "not a pyhv snapshot"),
        ("/dev/null", "not a regular file"),
        (str(tmp_path / "a\0b"), "NUL"),
        ("", "expected the path"),
        (None, "expected the path"),
    ]:
        with pytest.raises(Invalid, match=words):
            check_snapshot_target(path)
    assert other.read_bytes() == b"\x7fELF"


def test_a_file_that_is_no_snapshot_is_refused_with_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.snap"
    junk.write_bytes(b"junk" * 2000)
    for path, words in [(str(junk), "not a pyhv snapshot"),
                        (str(tmp_path / "gone.snap"), "No such file"),
                        (str(tmp_path), "not a regular file"),
                        ("rel.snap", "relative")]:
        with pytest.raises(Invalid, match=words) as info:
            snapshot_config(path)
        assert "\n" not in str(info.value)
