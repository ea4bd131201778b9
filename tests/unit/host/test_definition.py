"""VM definitions: TOML layout, validation messages naming the field, paths, MachineConfig."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from pyhv.errors import ConfigError
from pyhv.host.definition import (
    Boot,
    Disk,
    Net,
    QoS,
    VMDefinition,
    format_memory,
)
from pyhv.host.errors import DefinitionError, Invalid
from pyhv.vm import config as mc

MiB = 1024 * 1024
DOCS = Path(__file__).resolve().parents[3] / "docs" / "vm-definition.md"

FULL = """
name = "web"
vcpus = 2
memory = "512M"
engine = "interp"
autostart = true

[boot]
firmware = "/fw/fw_dynamic.bin"
kernel = "/boot/Image"
initrd = "/boot/initrd"
cmdline = "console=ttyS0 root=/dev/vda"
dtb = "/boot/board.dtb"

[[disk]]
path = "/images/root.img"
overlay = "/images/web.overlay"

[[disk]]
path = "/images/data.img"
readonly = true

[[disk]]
path = "/images/scratch.img"
overlay = true

[[net]]
switch = "lan"
mac = "52:54:00:12:34:56"

[[net]]
switch = "dmz"

[devices]
rng = true
balloon = true
vconsole = true

[qos]
shares = 3000
reservation = 12.5
limit = 150
"""


def parse(text: str, source: str = "vm.toml") -> VMDefinition:
    return VMDefinition.from_toml(text, source, base_dir="/base")


def error_of(text: str, source: str = "vm.toml") -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        parse(text, source)
    return info.value


# ------------------------------------------------------------------------ reading


def test_minimal_definition_has_the_defaults() -> None:
    d = parse('name = "tiny"')
    assert d.name == "tiny"
    assert (d.vcpus, d.memory, d.engine, d.autostart) == (1, 128 * MiB, "auto", False)
    assert d.boot == Boot(firmware="default")
    assert d.disks == () and d.nets == ()
    assert (d.rng, d.balloon, d.vconsole) == (False, False, False)
    assert d.qos == QoS(shares=1000, reservation=0, limit=None)


def test_full_definition() -> None:
    d = parse(FULL)
    assert d.vcpus == 2 and d.memory == 512 * MiB and d.engine == "interp" and d.autostart
    assert d.boot == Boot(
        "/fw/fw_dynamic.bin", "/boot/Image", "/boot/initrd", "console=ttyS0 root=/dev/vda",
        "/boot/board.dtb",
    )
    assert d.disks == (
        Disk("/images/root.img", False, "/images/web.overlay"),
        Disk("/images/data.img", True, None),
        Disk("/images/scratch.img", False, ""),
    )
    assert d.nets == (Net("lan", "52:54:00:12:34:56"), Net("dmz", None))
    assert (d.rng, d.balloon, d.vconsole) == (True, True, True)
    assert d.qos == QoS(3000, 12.5, 150)


@pytest.mark.parametrize(
    ("vcpus", "shares", "expected"),
    [(1, None, 1000), (4, None, 4000), (2, '"low"', 1000), (2, '"high"', 4000),
     (3, '"normal"', 3000), (2, "1234", 1234)],
)
def test_shares_default_and_levels_are_per_vcpu(vcpus: int, shares: str | None,
                                                 expected: int) -> None:
    text = f'name = "a"\nvcpus = {vcpus}\n'
    if shares is not None:
        text += f"[qos]\nshares = {shares}\n"
    assert parse(text).qos.shares == expected


@pytest.mark.parametrize(("value", "size"), [('"1G"', 1024 * MiB), ("256", 256 * MiB),
                                              ('"2048K"', 2 * MiB), ('"64m"', 64 * MiB)])
def test_memory_forms(value: str, size: int) -> None:
    if size < 16 * MiB:
        size = 16 * MiB
        value = '"16384K"'
    assert parse(f"name = 'a'\nmemory = {value}").memory == size


# ------------------------------------------------------------------------ round trip


def test_toml_round_trip() -> None:
    d = parse(FULL)
    text = d.to_toml()
    assert VMDefinition.from_toml(text, "again.toml") == d
    assert parse('name = "tiny"') == VMDefinition.from_toml(parse('name = "tiny"').to_toml())


def test_to_toml_is_laid_out_for_people() -> None:
    text = parse(FULL).to_toml()
    headers = re.findall(r"^\[+[a-z]+\]+$", text, re.M)
    assert headers == ["[boot]", "[[disk]]", "[[disk]]", "[[disk]]", "[[net]]", "[[net]]",
                       "[devices]", "[qos]"]
    first_table = text.index("[boot]")
    for key in ("name", "vcpus", "memory", "engine", "autostart"):
        assert re.search(rf"^{key} = ", text[:first_table], re.M)
    assert 'memory = "512M"' in text
    assert "overlay = true" in text  # the temporary overlay
    assert "{" not in text  # no inline tables
    assert "limit" in tomllib.loads(text)["qos"]
    assert "limit" not in tomllib.loads(parse('name = "a"').to_toml())["qos"]  # unlimited


def test_to_dict_is_json_and_the_toml_document() -> None:
    d = parse(FULL)
    doc = d.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert doc == tomllib.loads(d.to_toml())
    assert VMDefinition.from_dict(doc) == d


@pytest.mark.parametrize(("size", "text"), [(128 * MiB, "128M"), (1024 * MiB, "1G"),
                                             (1536 * MiB, "1536M"), (16 * 1024 * MiB, "16G")])
def test_format_memory(size: int, text: str) -> None:
    assert format_memory(size) == text


def test_docs_example_is_valid() -> None:
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert block is not None
    d = VMDefinition.from_toml(block.group(1), "docs-example.toml", base_dir="/vms")
    assert d.name == "web" and d.vcpus == 2 and d.memory == 256 * MiB
    assert d.boot.kernel == "/vms/images/Image"
    assert d.disks[0].overlay == "/vms/web-root.overlay"
    assert d.qos == QoS(4000, 50, 150)


# ------------------------------------------------------------------------ validation

BAD = [
    ('name = "Web"', "name", "'Web' is not a valid VM name"),
    ('name = "-web"', "name", "is not a valid VM name"),
    ('name = "' + "a" * 64 + '"', "name", "is not a valid VM name"),
    ('name = "a/b"', "name", "is not a valid VM name"),
    ("name = 5", "name", "expected a string, got an integer (5)"),
    ("vcpus = 2", "name", "missing (every VM needs a name)"),
    ('name = "a"\nvcpus = "2"', "vcpus", 'expected an integer, got a string ("2")'),
    ('name = "a"\nvcpus = true', "vcpus", "expected an integer, got a boolean (true)"),
    ('name = "a"\nvcpus = 9', "vcpus", "9 is out of range (1 to 8)"),
    ('name = "a"\nvcpus = 0', "vcpus", "0 is out of range"),
    ('name = "a"\nmemory = "8M"', "memory", "8 MiB is out of range (16 MiB to 16 GiB)"),
    ('name = "a"\nmemory = "32G"', "memory", "out of range"),
    ('name = "a"\nmemory = "12Q"', "memory", "invalid memory size '12Q'"),
    ('name = "a"\nmemory = true', "memory", "expected a size such as"),
    ('name = "a"\nmemory = 1.5', "memory", "got a float (1.5)"),
    ('name = "a"\nmemory = "100000K"', "memory", "not a whole number of MiB"),
    ('name = "a"\nengine = "kvm"', "engine", "unknown engine 'kvm'"),
    ('name = "a"\nautostart = "yes"', "autostart", 'expected true or false, got a string ("yes")'),
    ('name = "a"\nboot = 5', "boot", "expected a table, got an integer (5)"),
    ('name = "a"\n[boot]\nfirmware = "none"', "boot.kernel",
     'required when boot.firmware is "none"'),
    ('name = "a"\n[boot]\ninitrd = "i"', "boot.initrd", "needs boot.kernel"),
    ('name = "a"\n[boot]\nkernel = ""', "boot.kernel", "empty path"),
    ('name = "a"\n[boot]\nkernel = 1', "boot.kernel", "expected a string"),
    ('name = "a"\n[boot]\ncmdline = ["a"]', "boot.cmdline", "expected a string, got an array"),
    ('name = "a"\n[[disk]]\nreadonly = true', "disk[0].path", "missing"),
    ('name = "a"\ndisk = "x.img"', "disk", "expected an array of tables ([[disk]])"),
    ('name = "a"\n[[disk]]\npath = "x"\nreadonly = 1', "disk[0].readonly",
     "expected true or false"),
    ('name = "a"\n[[disk]]\npath = "x"\nreadonly = true\noverlay = true', "disk[0].overlay",
     "cannot be combined with readonly = true"),
    ('name = "a"\n[[disk]]\npath = "x"\noverlay = 3', "disk[0].overlay",
     "expected true, false or a file path"),
    ('name = "a"\n[[disk]]\npath = "x"\n[[disk]]\npath = "y"\n[[disk]]\npath = "/base/x"',
     "disk[2].path", "/base/x is already used by disk[0].path"),
    ('name = "a"\n[[disk]]\npath = "x"\noverlay = "x"', "disk[0].overlay", "already used by"),
    ('name = "a"\n[[net]]\nmac = "52:54:00:12:34:56"', "net[0].switch", "missing"),
    ('name = "a"\n[[net]]\nswitch = "a b"', "net[0].switch", "'a b' is not a valid switch name"),
    ('name = "a"\n[[net]]\nswitch = "lan"\nmac = "zz"', "net[0].mac",
     "'zz' is not a unicast MAC address"),
    ('name = "a"\n[[net]]\nswitch = "lan"\nmac = "01:00:5e:00:00:01"', "net[0].mac",
     "not a unicast MAC"),
    ('name = "a"\n[[net]]\nswitch = "l"\nmac = "52:54:00:00:00:01"\n'
     '[[net]]\nswitch = "m"\nmac = "52:54:00:00:00:01"', "net[1].mac", "is also net[0].mac"),
    ('name = "a"\n[devices]\nrng = "yes"', "devices.rng", "expected true or false"),
    ('name = "a"\n' + "".join(f'[[disk]]\npath = "d{i}"\n' for i in range(6))
     + "[devices]\nrng = true\nballoon = true\nvconsole = true", "devices",
     "9 virtio devices"),
    ('name = "a"\n[qos]\nreservation = 80\nlimit = 50', "qos.limit",
     "50 is below qos.reservation 80"),
    ('name = "a"\n[qos]\nreservation = 150', "qos.reservation",
     "150% is more than 1 vCPU can use (100%)"),
    ('name = "a"\nvcpus = 2\n[qos]\nlimit = 300', "qos.limit",
     "300% is more than 2 vCPUs can use (200%"),
    ('name = "a"\n[qos]\nreservation = -5', "qos.reservation", "-5 is negative"),
    ('name = "a"\n[qos]\nreservation = "50%"', "qos.reservation", "expected a number"),
    ('name = "a"\n[qos]\nreservation = nan', "qos.reservation", "expected a number"),
    ('name = "a"\n[qos]\nlimit = inf', "qos.limit", "expected a number"),
    ('name = "a"\n[qos]\nlimit = 0', "qos.limit", "must be positive"),
    ('name = "a"\n[qos]\nshares = 0', "qos.shares", "0 must be positive"),
    ('name = "a"\n[qos]\nshares = "huge"', "qos.shares", "'huge' is not a share level"),
    ('name = "a"\n[qos]\nshares = 1.5', "qos.shares", "expected an integer"),
    # unknown keys catch typos
    ('name = "a"\nmemroy = "256M"', "memroy", "unknown key (did you mean 'memory'?)"),
    ('name = "a"\n[qos]\nlimt = 50', "qos.limt", "unknown key (did you mean 'qos.limit'?)"),
    ('name = "a"\n[boot]\nkernal = "x"', "boot.kernal", "did you mean 'boot.kernel'?"),
    ('name = "a"\n[[disk]]\npath = "x"\nro = true', "disk[0].ro", "unknown key"),
    ('name = "a"\ncolour = "red"', "colour", "unknown key (known: name, vcpus, memory"),
]


@pytest.mark.parametrize(("text", "field", "detail"), BAD, ids=[b[1] for b in BAD])
def test_validation_names_the_field(text: str, field: str, detail: str) -> None:
    e = error_of(text)
    assert e.field == field
    assert detail in e.detail
    assert str(e).startswith(f"vm.toml: {field}: ")
    assert isinstance(e, ConfigError) and isinstance(e, Invalid)
    assert e.http_status == 422


@pytest.mark.parametrize("doc", [
    {"qos": {"reservation": 10**400}}, {"qos": {"limit": 10**400}},
    {"qos": {"shares": 10**400}}, {"qos": {"reservation": -10**400}},
    {"vcpus": 10**400}, {"memory": 10**400}, {"qos": {"shares": 10**5000}},
], ids=["reservation", "limit", "shares", "negative", "vcpus", "memory", "5000 digits"])
def test_integers_beyond_64_bits_are_out_of_range(doc: dict) -> None:
    """JSON (the REST API) has integers of any size: each is a clear error naming its
    field, never an OverflowError (a float conversion) or a message Python cannot print."""
    field = "qos." + next(iter(doc["qos"])) if "qos" in doc else next(iter(doc))
    with pytest.raises(DefinitionError) as info:
        VMDefinition.from_dict({"name": "a", **doc})
    assert info.value.field == field
    assert "is out of range" in info.value.detail and len(str(info.value)) < 100


def test_shares_have_an_upper_bound() -> None:
    """A weight the scheduler's sums and /metrics can hold (ESXi's custom maximum)."""
    assert parse('name = "a"\n[qos]\nshares = 1000000').qos.shares == 1_000_000
    e = error_of('name = "a"\n[qos]\nshares = 1000001')
    assert e.field == "qos.shares" and "more than the largest share (1,000,000)" in e.detail


def test_the_issue_example_message() -> None:
    e = error_of('name = "a"\n[qos]\nreservation = 80\nlimit = 50')
    assert str(e) == "vm.toml: qos.limit: 50 is below qos.reservation 80"


def test_invalid_toml() -> None:
    e = error_of('name = "a"\nvcpus = ')
    assert str(e).startswith("vm.toml: invalid TOML: ")
    assert "\n" not in str(e)


def test_limit_equal_to_reservation_and_unlimited_are_valid() -> None:
    assert parse('name = "a"\n[qos]\nreservation = 50\nlimit = 50').qos.limit == 50
    assert parse('name = "a"\nvcpus = 8\n[qos]\nreservation = 800').qos.reservation == 800


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(DefinitionError) as info:
        VMDefinition("a", qos=QoS(reservation=80, limit=50))
    assert str(info.value) == "qos.limit: 50 is below qos.reservation 80"
    with pytest.raises(DefinitionError, match=r"^memory: expected a size in bytes"):
        VMDefinition("a", memory="256M")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match=r"^disk\[0\]: expected a Disk"):
        VMDefinition("a", disks=["x.img"])  # type: ignore[list-item]


def test_definition_is_frozen_and_hashable() -> None:
    d = VMDefinition("a", disks=[Disk("/x")], nets=[Net("lan")])  # type: ignore[arg-type]
    assert d.disks == (Disk("/x"),) and d.nets == (Net("lan"),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.name = "b"  # type: ignore[misc]
    assert hash(d) == hash(VMDefinition("a", disks=(Disk("/x"),), nets=(Net("lan"),)))


# ------------------------------------------------------------------------ paths


def test_relative_paths_resolve_against_the_definition_file(tmp_path: Path) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    f = folder / "vm.toml"
    f.write_text(
        'name = "a"\n[boot]\nfirmware = "fw/fw.bin"\nkernel = "Image"\ninitrd = "../initrd"\n'
        'dtb = "/abs/board.dtb"\n[[disk]]\npath = "disks/root.img"\noverlay = "root.ovl"\n'
    )
    d = VMDefinition.load(f)
    assert d.boot.firmware == str(folder / "fw" / "fw.bin")
    assert d.boot.kernel == str(folder / "Image")
    assert d.boot.initrd == str(tmp_path / "initrd")
    assert d.boot.dtb == "/abs/board.dtb"
    assert d.disks[0] == Disk(str(folder / "disks" / "root.img"), False, str(folder / "root.ovl"))
    # the same text read from elsewhere resolves elsewhere
    other = VMDefinition.from_toml(f.read_text(), str(tmp_path / "x" / "vm.toml"))
    assert other.boot.kernel == str(tmp_path / "x" / "Image")


def test_firmware_keywords_are_not_paths() -> None:
    assert parse('name = "a"\n[boot]\nfirmware = "default"').boot.firmware == "default"
    d = parse('name = "a"\n[boot]\nfirmware = "none"\nkernel = "k.elf"')
    assert d.boot.firmware == "none" and d.boot.kernel == "/base/k.elf"


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse('name = "a"\n[boot]\nkernel = "~/Image"').boot.kernel == str(tmp_path / "Image")


def test_source_defaults_to_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    d = VMDefinition.from_toml('name = "a"\n[boot]\nkernel = "Image"')
    assert d.boot.kernel == str(tmp_path / "Image")
    with pytest.raises(DefinitionError) as info:
        VMDefinition.from_toml('name = "A"')
    assert str(info.value).startswith("name: ")  # no made-up source


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="nope.toml: cannot read"):
        VMDefinition.load(tmp_path / "nope.toml")


# ------------------------------------------------------------------------ MachineConfig


def test_to_machine_config() -> None:
    d = parse(FULL)
    cfg = d.to_machine_config()
    assert isinstance(cfg, mc.MachineConfig)
    assert cfg.kernel == "/boot/Image" and cfg.bios == "/fw/fw_dynamic.bin"
    assert cfg.initrd == "/boot/initrd" and cfg.append == "console=ttyS0 root=/dev/vda"
    assert cfg.dtb == "/boot/board.dtb"
    assert cfg.memory == 512 * MiB and cfg.smp == 2 and cfg.engine == "interp"
    assert cfg.devices == (
        mc.DiskSpec("/images/root.img", False, "/images/web.overlay"),
        mc.DiskSpec("/images/data.img", True, None),
        mc.DiskSpec("/images/scratch.img", False, ""),
        mc.NetSpec("lan", "52:54:00:12:34:56"),
        mc.NetSpec("dmz", None),
        mc.RngSpec(),
        mc.BalloonSpec(),
        mc.ConsoleSpec(),
    )


def test_machine_config_device_order_is_stable() -> None:
    d = VMDefinition(
        "a", vconsole=True, rng=True, nets=(Net("lan"),), disks=(Disk("/d"),), balloon=False
    )
    kinds = [type(s).__name__ for s in d.to_machine_config().devices]
    assert kinds == ["DiskSpec", "NetSpec", "RngSpec", "ConsoleSpec"]


def test_machine_config_engine() -> None:
    d = VMDefinition("a", boot=Boot("none", "/k.elf"))
    assert d.to_machine_config().engine in mc.ENGINES
    assert d.to_machine_config(engine="interp").engine == "interp"
    assert d.to_machine_config(no_reboot=True).no_reboot
