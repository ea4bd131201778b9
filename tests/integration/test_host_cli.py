"""`pyhv create|list|info|set|destroy` driven as a user would, in a private state directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No real home, no inherited state directory: everything under tmp_path."""
    e = {k: v for k, v in os.environ.items() if k not in ("PYHV_STATE_DIR", "XDG_DATA_HOME")}
    e["HOME"] = str(tmp_path / "home")
    e["PYTHONPATH"] = str(SRC)
    return e


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "Image").write_bytes(b"\0" * 64)
    (folder / "root.img").write_bytes(b"\0" * 4096)
    (folder / "web.toml").write_text(
        'name = "web"\nvcpus = 2\nmemory = "256M"\n'
        '[boot]\nkernel = "Image"\ncmdline = "console=ttyS0"\n'
        '[[disk]]\npath = "root.img"\noverlay = true\n'
        '[[net]]\nswitch = "lan"\n'
        '[qos]\nshares = "high"\nreservation = 50\nlimit = 150\n'
    )
    return folder


def pyhv(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyhv.cli.main", *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def user_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pyhv: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_lifecycle_of_a_definition(env: dict[str, str], state: Path, files: Path,
                                   tmp_path: Path) -> None:
    sd = ["--state-dir", str(state)]
    out = ok(pyhv(env, *sd, "create", str(files / "web.toml"), cwd=tmp_path))
    assert "created VM 'web'" in out
    assert (state / "vms" / "web" / "vm.toml").is_file()

    table = ok(pyhv(env, *sd, "list")).splitlines()
    assert table[0].split() == ["NAME", "STATE", "VCPUS", "MEMORY", "SHARES", "RESERVATION",
                                "LIMIT", "AUTOSTART"]
    assert table[1].split() == ["web", "stopped", "2", "256M", "4000", "50%", "150%", "no"]

    rows = json.loads(ok(pyhv(env, "list", "--json", *sd)))  # --state-dir after the command
    assert rows == [{"name": "web", "state": "stopped", "vcpus": 2, "memory": 256 << 20,
                     "shares": 4000, "reservation": 50, "limit": 150, "autostart": False}]

    info = ok(pyhv(env, *sd, "info", "web"))
    assert "State:" in info and "stopped" in info
    assert str(files / "Image") in info and "temporary overlay" in info

    doc = json.loads(ok(pyhv(env, *sd, "info", "web", "--json")))
    assert doc["name"] == "web" and doc["state"] == "stopped"
    assert doc["definition"]["boot"]["kernel"] == str(files / "Image")
    assert doc["definition"]["net"][0]["mac"].startswith("52:54:00:")

    out = ok(pyhv(env, *sd, "set", "web", "--limit", "none", "--shares", "low",
                  "--memory", "512M", "--autostart"))
    assert "qos.limit 150% -> unlimited" in out and "memory 256M -> 512M" in out
    row = json.loads(ok(pyhv(env, *sd, "list", "--json")))[0]
    assert (row["limit"], row["shares"], row["memory"], row["autostart"]) == (
        None, 1000, 512 << 20, True)

    assert "destroyed VM 'web'" in ok(pyhv(env, *sd, "destroy", "web"))
    assert ok(pyhv(env, *sd, "list")).splitlines()[1:] == []
    assert list((state / "vms").iterdir()) == []
    assert (files / "root.img").exists()


def test_create_from_flags(env: dict[str, str], state: Path, files: Path) -> None:
    env["PYHV_STATE_DIR"] = str(state)  # the environment chooses the state directory too
    ok(pyhv(env, "create", "--name", "db", "--vcpus", "2", "--memory", "1G", "--kernel",
            "Image", "--disk", "root.img,ro", "--net", "switch=lan,mac=52:54:00:00:00:01",
            "--rng", "--reservation", "25", "--limit", "75.5", "--autostart", cwd=files))
    d = json.loads(ok(pyhv(env, "info", "db", "--json")))["definition"]
    assert d["vcpus"] == 2 and d["memory"] == "1G" and d["autostart"] is True
    assert d["boot"]["kernel"] == str(files / "Image")
    assert d["disk"] == [{"path": str(files / "root.img"), "readonly": True}]
    assert d["net"] == [{"switch": "lan", "mac": "52:54:00:00:00:01"}]
    assert d["devices"]["rng"] is True
    assert d["qos"] == {"shares": 2000, "reservation": 25, "limit": 75.5}


def test_flags_override_a_file_and_dry_run_writes_nothing(
    env: dict[str, str], state: Path, files: Path
) -> None:
    out = ok(pyhv(env, "--state-dir", str(state), "create", str(files / "web.toml"),
                  "--name", "web2", "--memory", "128M", "--limit", "none", "--dry-run"))
    assert 'name = "web2"' in out and 'memory = "128M"' in out and "limit" not in out
    assert f'kernel = "{files / "Image"}"' in out
    assert not state.exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["info", "ghost"], ["no VM named 'ghost'"]),
        (["set", "ghost", "--shares", "10"], ["no VM named 'ghost'"]),
        (["destroy", "ghost"], ["no VM named 'ghost'"]),
        (["info", "../etc"], ["no VM named '../etc'"]),
        (["create"], ["give a definition FILE.toml"]),
        (["create", "--name", "Bad"], ["name: 'Bad' is not a valid VM name"]),
        (["create", "--name", "a", "--memory", "lots"], ["memory: invalid memory size 'lots'"]),
        (["create", "--name", "a", "--vcpus", "two"], ["--vcpus 'two'"]),
        (["create", "--name", "a", "--reservation", "150"],
         ["qos.reservation: 150% is more than 1 vCPU can use (100%)"]),
        (["create", "--name", "a", "--reservation", "80", "--limit", "50"],
         ["qos.limit: 50 is below qos.reservation 80"]),
        (["create", "--name", "a", "--limit", "lots"], ["--limit 'lots': expected a number"]),
        (["create", "--name", "a", "--kernel", "/nonexistent/Image"],
         ["boot.kernel: /nonexistent/Image: no such file"]),
        (["create", "--name", "a", "--disk", "x.img,rw"], ["unknown option 'rw'"]),
        (["create", "/nonexistent/vm.toml"], ["/nonexistent/vm.toml: cannot read"]),
    ],
)
def test_user_errors(env: dict[str, str], state: Path, tmp_path: Path, args: list[str],
                     words: list[str]) -> None:
    user_error(pyhv(env, "--state-dir", str(state), *args, cwd=tmp_path), *words)
    assert not (state / "vms").exists() or list((state / "vms").iterdir()) == []


def test_malformed_definition_files(env: dict[str, str], state: Path, tmp_path: Path) -> None:
    sd = ["--state-dir", str(state)]
    f = tmp_path / "vm.toml"
    f.write_text('name = "a"\nmemroy = "256M"\n')
    user_error(pyhv(env, *sd, "create", str(f)),
               f"{f}: memroy: unknown key (did you mean 'memory'?)")
    f.write_text('name = "a"\nvcpus = "2"\n')
    user_error(pyhv(env, *sd, "create", str(f)), 'vcpus: expected an integer, got a string ("2")')
    f.write_text('name = "a"\nvcpus = \n')
    user_error(pyhv(env, *sd, "create", str(f)), f"{f}: invalid TOML")
    assert not (state / "vms").exists() or list((state / "vms").iterdir()) == []


def test_duplicate_running_and_set_errors(env: dict[str, str], state: Path) -> None:
    sd = ["--state-dir", str(state)]
    ok(pyhv(env, *sd, "create", "--name", "web", "--memory", "256M"))
    user_error(pyhv(env, *sd, "create", "--name", "web"), "a VM named 'web' already exists")
    user_error(pyhv(env, *sd, "set", "web"), "nothing to change")
    user_error(pyhv(env, *sd, "set", "web", "--reservation", "90", "--limit", "20"),
               "web: qos.limit: 20 is below qos.reservation 90")
    # a live process in the pid file: the VM counts as running
    run = state / "vms" / "web" / "run"
    run.mkdir()
    (run / "pid").write_text(f"{os.getpid()}\n")
    assert json.loads(ok(pyhv(env, *sd, "list", "--json")))[0]["state"] == "running"
    user_error(pyhv(env, *sd, "destroy", "web"), "VM 'web' is running", "stop it first")
    assert "applies at its next start" in ok(pyhv(env, *sd, "set", "web", "--shares", "high"))
    (run / "pid").unlink()
    ok(pyhv(env, *sd, "destroy", "web"))


def test_list_warns_about_a_broken_definition(env: dict[str, str], state: Path) -> None:
    sd = ["--state-dir", str(state)]
    ok(pyhv(env, *sd, "create", "--name", "good"))
    ok(pyhv(env, *sd, "create", "--name", "bad"))
    path = state / "vms" / "bad" / "vm.toml"
    path.write_text(path.read_text().replace("[qos]", "[qos]\nlimt = 5"))
    proc = pyhv(env, *sd, "list")
    assert proc.returncode == 0
    assert proc.stderr.strip() == f"pyhv: warning: {path}: qos.limt: unknown key " \
        "(did you mean 'qos.limit'?)"
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == ["good"]
    user_error(pyhv(env, *sd, "info", "bad"), "qos.limt")


def test_default_state_dir_is_under_the_data_home(env: dict[str, str], tmp_path: Path) -> None:
    ok(pyhv(env, "create", "--name", "a"))
    assert (tmp_path / "home" / ".local" / "share" / "pyhv" / "vms" / "a" / "vm.toml").is_file()
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    ok(pyhv(env, "create", "--name", "b"))
    assert (tmp_path / "xdg" / "pyhv" / "vms" / "b" / "vm.toml").is_file()
