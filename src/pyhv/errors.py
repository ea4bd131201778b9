"""User-facing errors.

Everything a user can get wrong (a missing file, a bad size, too many harts) raises
:class:`PyhvError` with a one-line message that names the offending value; the CLI prints
it and exits non-zero, never with a traceback.
"""


class PyhvError(Exception):
    """A user mistake or an unusable input, reported as one line."""


class ConfigError(PyhvError):
    """A machine option or definition field is invalid."""


class ImageError(PyhvError):
    """A kernel, firmware, initrd or DTB file cannot be used."""
