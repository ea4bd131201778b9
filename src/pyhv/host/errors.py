"""The errors of the host layer, in one place.

Every error a caller of :class:`pyhv.Host` can get is a :class:`HostError` with a one-line
message and an ``http_status`` that the REST API returns as is (the CLI prints the message
and exits 2 for a 4xx status, 1 otherwise):

==================  ======  ==============================================================
class               status  when
==================  ======  ==============================================================
Forbidden           403     the requesting user may not use a file the request names
                            (a member of the API socket's group, not the daemon's user)
NotFound            404     no VM of that name
Conflict            409     the request clashes with the current state: a duplicate name
                            (:class:`DuplicateName`), a running VM (:class:`VMRunning`),
                            a disk used by a running VM (:class:`DiskInUse`), not enough
                            CPU or memory left (:class:`InsufficientResources`)
Invalid             422     a malformed definition or setting; :class:`DefinitionError`
                            names the field (``vm.toml: qos.limit: ...``)
MigrationFailed     502     a live migration failed at the destination (unreachable, it
                            refused, the transfer broke off); the VM runs on here
Unavailable         503     the host cannot serve the request now (state directory
                            unreadable, daemon not running, ...)
==================  ======  ==============================================================

:class:`Invalid` is also a :class:`pyhv.errors.ConfigError`, like every other validation
error of pyhv.
"""

from __future__ import annotations

from ..errors import ConfigError, PyhvError


class HostError(PyhvError):
    """A request to the host failed; ``http_status`` is what the REST API answers."""

    http_status = 500


class Forbidden(HostError):
    http_status = 403


class NotFound(HostError):
    http_status = 404


class Conflict(HostError):
    http_status = 409


class DuplicateName(Conflict):
    """A VM of that name is already defined."""


class VMRunning(Conflict):
    """The operation needs the VM stopped (or stopped VMs only)."""


class DiskInUse(Conflict):
    """A disk image (or overlay) of the VM is used by another running VM."""


class InsufficientResources(Conflict):
    """Starting the VM would exceed the host's CPU reservations or memory."""


class Invalid(HostError, ConfigError):
    http_status = 422


class DefinitionError(Invalid):
    """A field of a VM definition or of host.toml is invalid.

    ``str(e)`` is ``"<source>: <field>: <detail>"`` (parts left out when unknown), e.g.
    ``vm.toml: qos.limit: 50 is below qos.reservation 80``.
    """

    def __init__(self, field: str | None, detail: str, source: str | None = None) -> None:
        self.field = field
        self.detail = detail
        self.source = source
        super().__init__(self._text())

    def _text(self) -> str:
        return ": ".join(p for p in (self.source, self.field, self.detail) if p)

    def with_source(self, source: str | None) -> DefinitionError:
        """The same error, reported against ``source`` (a file name, a VM name)."""
        if source is None or self.source is not None:
            return self
        return type(self)(self.field, self.detail, source)


class MigrationFailed(HostError):
    """A live migration the destination refused or that broke off (the VM runs on)."""

    http_status = 502


class Unavailable(HostError):
    http_status = 503
