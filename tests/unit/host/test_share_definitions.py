"""Host directory shares in VM definitions ([[share]]: path, tag, readonly): checks that
name the field, TOML round trips, and MachineConfig both ways."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyhv.host.definition import Share, VMDefinition
from pyhv.host.errors import DefinitionError
from pyhv.vm import config as mc


def test_shares_round_trip_through_toml_and_machine_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    text = ('name = "web"\n[[share]]\npath = "data"\ntag = "data"\n'
            '[[share]]\npath = "data"\ntag = "docs"\nreadonly = true\n')
    d = VMDefinition.from_toml(text, str(tmp_path / "web.toml"))
    data = str(tmp_path / "data")
    assert d.shares == (Share(data, "data"), Share(data, "docs", True))
    assert VMDefinition.from_toml(d.to_toml()) == d
    cfg = d.to_machine_config()
    assert cfg.devices == (mc.ShareSpec(data, "data"), mc.ShareSpec(data, "docs", True))
    assert VMDefinition.from_machine_config(cfg, "web").shares == d.shares


@pytest.mark.parametrize("share, field, words", [
    ({"path": "/srv"}, "share[0].tag", "missing"),
    ({"tag": "t"}, "share[0].path", "missing"),
    ({"path": "/srv", "tag": "x" * 65}, "share[0].tag", "1 to 64"),
    ({"path": "/srv", "tag": "a b"}, "share[0].tag", "without spaces"),
    ({"path": "/srv", "tag": "t", "readonly": "yes"}, "share[0].readonly", "true or false"),
    ({"path": "/srv", "tag": "t", "ro": True}, "share[0].ro", "unknown key"),
])
def test_bad_shares_name_the_field(share: dict, field: str, words: str) -> None:
    with pytest.raises(DefinitionError) as e:
        VMDefinition.from_dict({"name": "web", "share": [share]})
    assert field in str(e.value) and words in str(e.value)


def test_duplicate_tags_are_refused() -> None:
    with pytest.raises(DefinitionError, match=r"share\[1\].tag.*share\[0\].tag"):
        VMDefinition.from_dict({"name": "web", "share": [{"path": "/a", "tag": "t"},
                                                         {"path": "/b", "tag": "t"}]})


def test_a_socket_group_member_may_share_only_a_directory_they_own(tmp_path: Path) -> None:
    """Through the REST API a member of the socket group must not borrow the daemon's
    rights: a share reaches a whole tree, so its directory must be theirs."""
    import os

    from pyhv.host.access import check_files
    from pyhv.host.errors import Forbidden

    if os.geteuid() != 0:
        pytest.skip("needs root to make directories owned by another user")
    import shutil
    import tempfile

    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="pyhv-share-access-"))  # searchable by all
    try:
        base.chmod(0o755)
        theirs = base / "theirs"
        theirs.mkdir()
        os.chown(theirs, nobody, nobody)
        check_files(VMDefinition(name="web", shares=(Share(str(theirs), "t"),)), nobody, None)
        for path in ("/", str(base)):
            with pytest.raises(Forbidden, match=r"share\[0\]\.path: .* does not own"):
                check_files(VMDefinition(name="web", shares=(Share(path, "t", True),)),
                            nobody, None)
    finally:
        shutil.rmtree(base)
