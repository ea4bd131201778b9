"""``pyhv-qemu``'s device options as a teaching kernel's Makefile passes them:
``-global virtio-mmio.force-legacy=false -drive file=fs.img,if=none,format=raw,id=x0
-device virtio-blk-device,drive=x0,bus=virtio-mmio-bus.0``. The device lands on the
transport ``bus=`` names, a driver that accepts only the low 32 feature bits works, and
every -drive/-device option is honoured or refused by name (docs/qemu-options.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhv import BufferConsole, Machine
from pyhv.cli.qemu_compat import config_from_args
from pyhv.cpu.engines import jit_unavailable_reason
from pyhv.devices.virtio.blk import VirtioBlk
from pyhv.errors import ConfigError

GUESTS = Path(__file__).resolve().parents[2] / "guests" / "tests"
LOW32 = GUESTS / "virtio_low32.elf"
EXIT_PASS = GUESTS / "exit_pass.elf"


def disk(tmp_path: Path) -> Path:
    img = tmp_path / "fs.img"
    img.write_bytes(b"pyhv-low32-disk".ljust(65536, b"\0"))
    return img


def args(img: Path, kernel: Path = LOW32, *extra: str, device: str = "") -> list[str]:
    return ["-M", "virt", "-bios", "none", "-nographic", "-kernel", str(kernel),
            "-global", "virtio-mmio.force-legacy=false",
            "-drive", f"file={img},if=none,format=raw,id=x0",
            "-device", f"virtio-blk-device,drive=x0{device}", *extra]


@pytest.mark.parametrize("n", range(8))
def test_bus_puts_the_device_on_that_transport(tmp_path: Path, n: int) -> None:
    config, _ = config_from_args(args(disk(tmp_path), EXIT_PASS,
                                      device=f",bus=virtio-mmio-bus.{n}"))
    vm = Machine(config, console=BufferConsole())
    try:
        base = 0x1000_1000 + 0x1000 * n
        assert vm.board.bus.read(base + 0x008, 4) == 2  # DeviceID: block
        assert isinstance(vm.board.virtio_slots[n].device, VirtioBlk)
        others = [i for i, s in enumerate(vm.board.virtio_slots) if s.device is not None]
        assert others == [n]
    finally:
        vm.close()


def test_devices_without_bus_fill_from_the_top_around_named_ones(tmp_path: Path) -> None:
    """As QEMU: in command-line order, a named transport is taken as named, the others
    get the highest free one."""
    img = disk(tmp_path)
    config, _ = config_from_args(
        args(img, EXIT_PASS, "-device", "virtio-balloon-device,bus=virtio-mmio-bus.5",
             "-device", "virtio-rng-device", "-device", "virtio-rng-device",
             device=",bus=virtio-mmio-bus.0"))
    vm = Machine(config, console=BufferConsole())
    try:
        names = {i: s.device.name for i, s in enumerate(vm.board.virtio_slots) if s.device}
        assert names == {0: "virtio-blk", 5: "virtio-balloon", 7: "virtio-rng",
                         6: "virtio-rng"}
    finally:
        vm.close()


@pytest.mark.parametrize(("extra", "words"), [
    (",bus=virtio-mmio-bus.8", "virtio-mmio-bus.8 does not exist"),
    (",bus=pcie.0", "bus 'pcie.0' does not exist"),
    (",scsi=off", "option 'scsi' is not supported"),
])
def test_bad_device_options_are_refused(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        config_from_args(args(disk(tmp_path), device=extra))


def test_one_device_per_transport(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="virtio-mmio-bus.3 is full"):
        config_from_args(args(disk(tmp_path), LOW32, "-device",
                              "virtio-rng-device,bus=virtio-mmio-bus.3",
                              device=",bus=virtio-mmio-bus.3"))


@pytest.mark.parametrize(("option", "words"), [
    ("cache=none", "cache=none is not supported"),
    ("discard=unmap", "discard=unmap is not supported"),
    ("aio=io_uring", "aio=io_uring is not supported"),
    ("werror=stop", "option 'werror' is not supported"),
    ("media=cdrom", "only media=disk"),
])
def test_drive_options_are_honoured_or_refused(tmp_path: Path, option: str, words: str) -> None:
    img = disk(tmp_path)
    base = args(img)
    i = base.index("-drive") + 1
    base[i] += "," + option
    with pytest.raises(ConfigError, match=words):
        config_from_args(base)
    for fine in ("cache=writeback", "discard=ignore", "aio=threads", "media=disk"):
        base[i] = f"file={img},if=none,format=raw,id=x0,{fine}"
        config_from_args(base)


def test_serial_is_what_get_id_answers(tmp_path: Path) -> None:
    config, _ = config_from_args(args(disk(tmp_path), EXIT_PASS, device=",serial=pyhv-disk-7"))
    assert config.devices[0].serial == "pyhv-disk-7"
    vm = Machine(config, console=BufferConsole())
    try:
        blk = vm.board.virtio_slots[7].device
        assert isinstance(blk, VirtioBlk) and blk.serial == b"pyhv-disk-7"
    finally:
        vm.close()


ENGINES = ["interp", "translate", "jit"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("smp", [1, 3])
def test_low32_feature_driver_boots_20_of_20(tmp_path: Path, engine: str, smp: int) -> None:
    """xv6's virtio-blk driver pattern (disk at 0x10001000, low 32 feature bits only,
    FEATURES_OK insisted on) reads its disk, 20 boots out of 20."""
    if engine == "jit" and jit_unavailable_reason() is not None:
        pytest.skip("the JIT cannot run on this host")
    img = disk(tmp_path)
    config, _ = config_from_args(args(img, LOW32, "-smp", str(smp), "-accel",
                                      f"pyhv,engine={engine}",
                                      device=",bus=virtio-mmio-bus.0"))
    for boot in range(20):
        console = BufferConsole()
        vm = Machine(config, console=console)
        try:
            result = vm.run(timeout=60)
        finally:
            vm.close()
        assert result.reason == "poweroff" and result.exit_code == 0, (boot, console.text)
        assert "PASS virtio_low32" in console.text


@pytest.mark.parametrize(("argv", "words"), [
    (["-M", "virt,aia=aplic"], "property 'aia=aplic' is not supported"),
    (["-cpu", "rv64,h=true"], "without properties"),
    (["-display", "gtk"], "pyhv has no display"),
    (["-monitor", "stdio"], "pyhv has no QEMU monitor"),
    (["-nic", "user"], "use -netdev"),
    (["-m", "128M,maxmem=1G"], "option 'maxmem' is not supported"),
    (["-smp", "2,maxcpus=4"], "no hart hotplug"),
    (["-netdev", "user,id=n0,smb=/srv"], "option 'smb' is not supported"),
    (["-netdev", "user,id=n0,hostfwd=tcp::2222:22"], "hostfwd=tcp::2222:22: expected"),
])
def test_other_options_are_honoured_or_refused(argv: list[str], words: str) -> None:
    base = ["-bios", "none", "-kernel", str(EXIT_PASS), "-nographic"]
    with pytest.raises(ConfigError, match=words):
        config_from_args([*base, *argv])
    ok = [["-M", "virt,aclint=off,aia=none"], ["-cpu", "max"], ["-display", "none"],
          ["-monitor", "none"], ["-m", "size=64M"], ["-smp", "sockets=1,cores=2,threads=2"]]
    for good in ok:
        config, _ = config_from_args([*base, *good])
    assert config.smp == 4


def test_dumpdtb_writes_the_guests_device_tree(tmp_path: Path) -> None:
    from pyhv.cli.qemu_compat import main

    out = tmp_path / "virt.dtb"
    code = main(["-M", f"virt,dumpdtb={out}", "-bios", "none", "-kernel", str(EXIT_PASS),
                 "-append", "console=ttyS0 a\x01b", "-smp", "2"])
    assert code == 0
    import fdt

    tree = fdt.parse_dtb(out.read_bytes())
    assert bytes(tree.get_property("bootargs", "/chosen").data) == b"console=ttyS0 a\x01b\0"
    assert len([n for n in tree.get_node("/cpus").nodes if n.name.startswith("cpu@")]) == 2


def test_vmgenid_is_a_device_only_when_asked_for_as_on_qemu(tmp_path: Path) -> None:
    """``-device vmgenid[,guid=auto|UUID]``: QEMU's option (guid=auto its default);
    without it the machine and its dumped tree are QEMU's, with it the tree has the
    microsoft,vmgenid node and the guest reads the identifier."""
    import fdt

    from pyhv.cli.qemu_compat import main

    base = ["-bios", "none", "-kernel", str(EXIT_PASS), "-nographic"]
    assert config_from_args(base)[0].vmgenid is None
    assert config_from_args([*base, "-device", "vmgenid"])[0].vmgenid == "auto"
    guid = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
    config, _ = config_from_args([*base, "-device", f"vmgenid,id=g0,guid={guid}"])
    assert config.vmgenid == guid and config.devices == ()
    vm = Machine(config)
    try:
        assert vm.board.bus.read(0x0010_2000, 4) == 0x324E6EAF  # its first field, LE
    finally:
        vm.close()
    for bad, words in (([guid], "expected 'auto' or a UUID"),
                       (["vmgenid", "vmgenid"], "at most one vmgenid"),
                       (["vmgenid,size=4"], "option 'size' is not supported")):
        argv = [*base, *(x for d in bad for x in ("-device", d if d.startswith("vmgenid")
                                                   else f"vmgenid,guid={d[:8]}"))]
        with pytest.raises(ConfigError, match=words):
            config_from_args(argv)
    for extra, has in (([], False), (["-device", "vmgenid"], True)):
        out = tmp_path / f"virt-{has}.dtb"
        assert main(["-M", f"virt,dumpdtb={out}", *base, *extra]) == 0
        names = [n.name for n in fdt.parse_dtb(out.read_bytes()).get_node("/soc").nodes]
        assert ("rng@102000" in names) is has
