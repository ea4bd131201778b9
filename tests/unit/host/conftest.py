"""Every host test works in a temporary state directory, never in the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYHV_STATE_DIR", str(tmp_path / "default-state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
def many_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the host has 8 CPUs, so host settings of up to 8 CPUs are valid anywhere."""
    from pyhv.host import registry

    monkeypatch.setattr(registry, "available_cpus", lambda: 8)
