"""I/O budgets in VM definitions: [[disk]] bps/iops/bursts, [[net]] tx_/rx_ budgets; their
checks (naming the field), TOML/dict round trips, MachineConfig both ways, `pyhv set --io`."""

from __future__ import annotations

import pytest

from pyhv.host.api import Host, parse_io_changes
from pyhv.host.definition import Disk, Net, VMDefinition, format_rate
from pyhv.host.errors import DefinitionError
from pyhv.vm import config as mc

MiB = 1024 * 1024


def _doc(disk: dict | None = None, net: dict | None = None) -> dict:
    doc: dict = {"name": "web"}
    if disk is not None:
        doc["disk"] = [{"path": "/srv/web.img", **disk}]
    if net is not None:
        doc["net"] = [{"switch": "lan", **net}]
    return doc


def test_disk_and_nic_budgets_are_read_as_sizes_or_integers() -> None:
    d = VMDefinition.from_dict(_doc(
        {"bps": "2M", "iops": 200, "bps_burst": "8M", "iops_burst": "1K"},
        {"tx_bps": "1M", "tx_pps": 1000, "tx_bps_burst": 4096, "rx_bps": "64k", "rx_pps": 50,
         "rx_bps_burst": "1G"}))
    assert d.disks[0] == Disk("/srv/web.img", bps=2 * MiB, iops=200, bps_burst=8 * MiB,
                              iops_burst=1024)
    assert d.nets[0] == Net("lan", tx_bps=MiB, tx_pps=1000, tx_bps_burst=4096,
                            rx_bps=64 * 1024, rx_pps=50, rx_bps_burst=1 << 30)


def test_budgets_round_trip_through_toml_dict_and_machine_config() -> None:
    d = VMDefinition.from_dict(_doc({"bps": "2M", "iops": 200, "bps_burst": 3000},
                                    {"tx_bps": "1M", "rx_pps": 100}))
    doc = d.to_dict()
    assert doc["disk"][0] == {"path": "/srv/web.img", "readonly": False, "bps": "2M",
                              "iops": 200, "bps_burst": 3000}
    assert doc["net"][0] == {"switch": "lan", "tx_bps": "1M", "rx_pps": 100}
    assert VMDefinition.from_dict(doc) == d
    assert VMDefinition.from_toml(d.to_toml()) == d
    config = d.to_machine_config()
    disk, nic = config.devices
    assert isinstance(disk, mc.DiskSpec) and isinstance(nic, mc.NetSpec)
    assert (disk.bps, disk.iops, disk.bps_burst, disk.iops_burst) == (2 * MiB, 200, 3000, None)
    assert (nic.tx_bps, nic.rx_pps, nic.tx_pps) == (MiB, 100, None)
    # snapshot restore defines the VM from the saved machine's config: budgets kept
    assert VMDefinition.from_machine_config(config, "web") == d


def test_no_budget_writes_no_key() -> None:
    d = VMDefinition.from_dict(_doc({}, {}))
    assert d.to_dict()["disk"][0] == {"path": "/srv/web.img", "readonly": False}
    assert d.to_dict()["net"][0] == {"switch": "lan"}
    assert d.disks[0].bps is None and d.nets[0].rx_bps is None


@pytest.mark.parametrize("value, text", [(2 * MiB, "2M"), (1 << 30, "1G"), (64 * 1024, "64K"),
                                         (1000, 1000), (3 * MiB + 1, 3 * MiB + 1)])
def test_format_rate(value: int, text: str | int) -> None:
    assert format_rate(value, "bps") == text
    assert format_rate(value, "iops") == value


@pytest.mark.parametrize("disk, net, field, detail", [
    ({"bps": 0}, None, "disk[0].bps", "0 must be positive"),
    ({"iops": -5}, None, "disk[0].iops", "-5 must be positive"),
    ({"bps": "0"}, None, "disk[0].bps", "is not a positive number"),
    ({"bps": "fast"}, None, "disk[0].bps", "'fast' is not a positive number"),
    ({"bps": "-2M"}, None, "disk[0].bps", "is not a positive number"),
    ({"bps": 1.5}, None, "disk[0].bps", "expected a rate"),
    ({"iops": True}, None, "disk[0].iops", "expected a rate"),
    ({"iops": [1]}, None, "disk[0].iops", "expected a rate"),
    ({"bps": 1 << 70}, None, "disk[0].bps", "out of range"),
    ({"bps_burst": "4M"}, None, "disk[0].bps_burst", "needs disk[0].bps"),
    ({"bps": "2M", "iops_burst": 10}, None, "disk[0].iops_burst", "needs disk[0].iops"),
    ({"bsp": 5}, None, "disk[0].bsp", "did you mean 'disk[0].bps'"),
    (None, {"tx_bps": 0}, "net[0].tx_bps", "must be positive"),
    (None, {"rx_pps": "x"}, "net[0].rx_pps", "is not a positive number"),
    (None, {"rx_bps_burst": "1M"}, "net[0].rx_bps_burst", "needs net[0].rx_bps"),
    (None, {"tx_bps_burst": 9, "rx_bps": 5}, "net[0].tx_bps_burst", "needs net[0].tx_bps"),
    (None, {"tx_iops": 9}, "net[0].tx_iops", "unknown key"),
])
def test_bad_budgets_name_the_field(disk: dict | None, net: dict | None, field: str,
                                    detail: str) -> None:
    with pytest.raises(DefinitionError) as e:
        VMDefinition.from_dict(_doc(disk, net), "web.toml")
    assert e.value.field == field
    assert detail in str(e.value)
    assert str(e.value).startswith(f"web.toml: {field}: ")


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(DefinitionError, match=r"disk\[0\].iops: 0 must be positive"):
        VMDefinition("web", disks=(Disk("/srv/a.img", iops=0),))
    with pytest.raises(DefinitionError, match=r"net\[0\].tx_bps_burst: needs net\[0\].tx_bps"):
        VMDefinition("web", nets=(Net("lan", tx_bps_burst=5),))


# ------------------------------------------------------------------ pyhv set --io / Host.set(io=)


def test_parse_io_changes() -> None:
    assert parse_io_changes(["disk0.bps=2M,disk0.iops=200", "net1.tx_pps=none"]) == {
        "disk0": {"bps": "2M", "iops": "200"}, "net1": {"tx_pps": None}}
    for bad in ("disk0bps=2", "disk0.bps", "disk0.bps=", ",", "disk.bps=1"):
        with pytest.raises(DefinitionError):
            parse_io_changes([bad])


@pytest.fixture
def host(tmp_path) -> Host:
    img = tmp_path / "web.img"
    img.write_bytes(b"\0" * 4096)
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(b"\x7fELF")
    h = Host(tmp_path / "state")
    h.create({"name": "web", "boot": {"firmware": "none", "kernel": str(kernel)},
              "disk": [{"path": str(img), "bps": "1M"}], "net": [{"switch": "lan"}]})
    return h


def test_set_io_on_a_stopped_vm_changes_the_definition(host: Host) -> None:
    vm = host.set("web", io={"disk0": {"iops": 200, "bps": "2M"}, "net0": {"rx_bps": 1000}})
    assert (vm.definition.disks[0].bps, vm.definition.disks[0].iops) == (2 * MiB, 200)
    assert vm.definition.nets[0].rx_bps == 1000
    assert host.get("web").definition == vm.definition
    vm = host.set("web", io={"disk0": {"bps": None}})
    assert vm.definition.disks[0].bps is None and vm.definition.disks[0].iops == 200


@pytest.mark.parametrize("io, field", [
    ({"disk0": {"bps": 0}}, "disk[0].bps"),
    ({"disk0": {"bps": "-1"}}, "disk[0].bps"),
    ({"disk0": {"bps_burst": 5, "bps": None}}, "disk[0].bps_burst"),
    ({"disk0": {"iops_burst": 5}}, "disk[0].iops_burst"),
    ({"disk1": {"bps": 5}}, "io.disk1"),
    ({"net0": {"bps": 5}}, "io.net0.bps"),
    ({"disk0": {"tx_bps": 5}}, "io.disk0.tx_bps"),
    ({"cdrom0": {"bps": 5}}, "io.cdrom0"),
    ({"disk0": 5}, "io.disk0"),
    ({}, "io"),
    ([1], "io"),
])
def test_set_io_refuses_bad_terms_and_changes_nothing(host: Host, io: object,
                                                      field: str) -> None:
    before = (host.registry.vm_dir("web") / "vm.toml").read_text()
    with pytest.raises(DefinitionError) as e:
        host.set("web", io=io)
    assert e.value.field == field, str(e.value)
    assert e.value.http_status == 422
    assert (host.registry.vm_dir("web") / "vm.toml").read_text() == before


# ------------------------------------------------------------------ status page, figures


def test_status_page_io_table_and_prometheus(tmp_path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pyhv.host.daemon import _io_figures
    from pyhv.host.ipc import IO_DISK, IO_NET, StatusPage
    from pyhv.host.prometheus import HostCollector

    page = StatusPage(tmp_path / "status", create=True)
    page.set_io(0, IO_DISK, 0, {"throttled_ns": 1_500_000_000, "throttled": 3,
                                "read_bytes": 4096, "bps": 2 * MiB, "iops": None})
    page.set_io(1, IO_NET, 0, {"tx_throttled_ns": 250_000_000, "tx_frames": 7, "rx_pps": 50})
    figures = _io_figures(page.io())
    page.close()
    disk, tx, rx = figures["io"]
    assert disk == {"device": "disk0", "direction": "rw", "throttled_seconds": 1.5,
                    "throttled": 3, "read_bytes": 4096, "write_bytes": 0,
                    "limits": {"bps": 2 * MiB, "iops": None, "bps_burst": None,
                               "iops_burst": None}}
    assert (tx["direction"], tx["throttled_seconds"], tx["frames"]) == ("tx", 0.25, 7)
    assert rx["limits"] == {"rx_bps": None, "rx_pps": 50, "rx_bps_burst": None}
    assert figures["io_throttled_seconds"] == 1.75

    registry = CollectorRegistry()
    vm = {"name": "web", "state": "running", "pid": 1, **figures}
    registry.register(HostCollector(lambda: {"host": {}, "vms": [vm]}))
    text = generate_latest(registry).decode()
    assert ('pyhv_vm_io_throttled_seconds_total{device="disk0",direction="rw",vm="web"} 1.5'
            in text)
    assert 'pyhv_vm_io_throttled_total{device="disk0",direction="rw",vm="web"} 3.0' in text
    assert ('pyhv_vm_io_limit_bytes_per_second{device="disk0",direction="rw",vm="web"} '
            '2.097152e+06') in text
    assert 'pyhv_vm_io_limit_ops_per_second{device="net0",direction="rx",vm="web"} 50.0' in text
    assert 'pyhv_vm_io_limit_ops_per_second{device="disk0"' not in text  # no limit: absent
