"""Whose rights a request uses: a VM's files must be usable by the user who asks.

The daemon opens every file a VM definition names (firmware, kernel, initrd, DTB, disk
images, overlays) with its own rights. Its REST API socket admits its own user and root
only, unless ``pyhv host serve --socket-group GROUP`` lets the members of a group in
too (as libvirt's ``unix_sock_group``): such a member must not borrow the daemon's
rights, so every file their request names outside the VM's own directory must be one
*they* could open, read (and write, for a disk the guest writes), checked here from
the file's owner, group and mode, and each directory on the way. A shared directory
(virtio-9p) must be theirs: the guest reaches the whole tree under it.

A requester with the daemon's own uid, or root, has those rights anyway: nothing to
check. (A file that changes between this check and its opening by the VM process is
not covered; the VM's own directory is the daemon's and is exempt.)
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from .definition import VMDefinition
from .errors import Forbidden


def _groups(uid: int) -> set[int]:
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return set()
    return set(os.getgrouplist(user.pw_name, user.pw_gid))


def _allowed(st: os.stat_result, uid: int, groups: set[int], want: int) -> bool:
    """``want``: a mask of 4 (read), 2 (write), 1 (search/execute), as the owner's bits."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        bits = mode >> 6
    elif st.st_gid in groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


def may_use(path: str | os.PathLike[str], uid: int, write: bool = False) -> bool:
    """Could user ``uid`` open ``path`` for reading (and writing; or create it, when it
    does not exist)? Symbolic links are followed as the kernel would (the real path is
    checked, and every directory that leads to it must be searchable)."""
    if uid == 0:
        return True
    groups = _groups(uid)
    try:
        real = Path(os.path.realpath(path))
        for directory in reversed(real.parents):
            if not _allowed(os.stat(directory), uid, groups, 1):
                return False
        if write and not real.exists():  # a file to be created (an overlay)
            return _allowed(os.stat(real.parent), uid, groups, 2 | 1)
        return _allowed(os.stat(real), uid, groups, 4 | (2 if write else 0))
    except OSError:
        return False


def check_files(definition: VMDefinition, uid: int, vm_dir: Path | None) -> None:
    """:class:`Forbidden` naming the first file of ``definition`` user ``uid`` may not
    use (nothing is checked for the daemon's own user or root)."""
    if uid in (0, os.geteuid()):
        return
    own = os.path.realpath(vm_dir) if vm_dir is not None else None
    boot = definition.boot
    wanted: list[tuple[str, str, bool]] = [
        (f"boot.{key}", value, False)
        for key, value in (("firmware", boot.firmware), ("kernel", boot.kernel),
                           ("initrd", boot.initrd), ("dtb", boot.dtb))
        if value is not None and not (key == "firmware" and value in ("default", "none"))
    ]
    for i, disk in enumerate(definition.disks):
        wanted.append((f"disk[{i}].path", disk.path, disk.writes_image))
        if disk.overlay:
            wanted.append((f"disk[{i}].overlay", disk.overlay, True))
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    for i, share in enumerate(definition.shares):
        # A share hands the guest the daemon's rights over a whole tree, not one file:
        # the requester must own its directory (and be able to use it), as if they ran
        # the VM themselves.
        real = os.path.realpath(share.path)
        try:
            owner = os.stat(real).st_uid
        except OSError:
            owner = None
        if owner != uid or not may_use(real, uid, not share.readonly):
            raise Forbidden(f"{definition.name}: share[{i}].path: user {name} does not own "
                            f"'{share.path}' (a share gives the guest the host daemon's "
                            "rights over all of it)")
    for field, path, write in wanted:
        real = os.path.realpath(path)
        if own is not None and os.path.commonpath([own, real]) == own:
            continue
        if not may_use(real, uid, write):
            raise Forbidden(f"{definition.name}: {field}: user {name} may not "
                            f"{'write' if write else 'read'} '{path}'")
