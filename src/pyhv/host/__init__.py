"""The host: VM definitions on disk, their lifecycle and the resources they may use.

:class:`Host` and :class:`VM` (``pyhv.host.api``) are the Python API that the ``pyhv``
CLI and the REST API both use; :class:`VMDefinition` (``pyhv.host.definition``) is one
VM's validated, persisted description; ``pyhv.host.registry`` is the state directory and
the admission checks; ``pyhv.host.errors`` the errors, each with an HTTP status.
"""

from .api import VM, Host
from .definition import Boot, Disk, Net, QoS, VMDefinition
from .errors import (
    Conflict,
    DefinitionError,
    DiskInUse,
    DuplicateName,
    HostError,
    InsufficientResources,
    Invalid,
    NotFound,
    Unavailable,
    VMRunning,
)
from .registry import HostSettings, Registry, check_admission, check_fits, default_state_dir

__all__ = [
    "VM",
    "Boot",
    "Conflict",
    "DefinitionError",
    "DiskInUse",
    "DuplicateName",
    "Disk",
    "Host",
    "HostError",
    "HostSettings",
    "InsufficientResources",
    "Invalid",
    "Net",
    "NotFound",
    "QoS",
    "Registry",
    "Unavailable",
    "VMDefinition",
    "VMRunning",
    "check_admission",
    "check_fits",
    "default_state_dir",
]
