"""The daemon's control socket, client side, and how errors cross it.

``STATE/daemon.sock`` is a UNIX stream socket (mode 0600 in the state directory) that
speaks JSON lines: a request ``{"op": "start", "args": {"name": "web"}}`` gets one reply,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type": "NotFound",
"status": 404, "message": "..."}}``. :func:`call` is what :class:`pyhv.Host` uses; the
error comes back as the same :class:`~pyhv.host.errors.HostError` class the daemon raised.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

from . import errors
from .ipc import LineBuffer, ProtocolError, encode, unix_address

SOCKET_NAME = "daemon.sock"
LOCK_NAME = "daemon.lock"
PID_NAME = "daemon.pid"
CONNECT_TIMEOUT = 5.0


def socket_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def error_to_dict(error: BaseException) -> dict[str, Any]:
    """The reply's ``error`` member for an exception raised by an operation."""
    if isinstance(error, errors.HostError):
        data: dict[str, Any] = {
            "type": type(error).__name__,
            "status": error.http_status,
            "message": str(error),
        }
        if isinstance(error, errors.DefinitionError):
            data.update(field=error.field, detail=error.detail, source=error.source)
        return data
    return {"type": "HostError", "status": 500,
            "message": f"internal error: {type(error).__name__}: {error}"}


_ERROR_TYPES: dict[str, type[errors.HostError]] = {
    cls.__name__: cls
    for cls in (
        errors.HostError, errors.NotFound, errors.Conflict, errors.DuplicateName,
        errors.VMRunning, errors.DiskInUse, errors.InsufficientResources, errors.Invalid,
        errors.Unavailable, errors.MigrationFailed,
    )
}


def error_from_dict(data: Any) -> errors.HostError:
    """The exception a reply's ``error`` member stands for."""
    if not isinstance(data, dict):
        return errors.Unavailable(f"the host daemon sent a malformed error: {data!r}")
    message = str(data.get("message", "unknown error"))
    if data.get("type") == "DefinitionError":
        return errors.DefinitionError(data.get("field"), str(data.get("detail", message)),
                                      data.get("source"))
    cls = _ERROR_TYPES.get(str(data.get("type")), errors.HostError)
    error = cls(message)
    status = data.get("status")
    if isinstance(status, int) and status != error.http_status:
        error.http_status = status  # e.g. an error of the machine (422) as a HostError
    return error


def not_running(state_dir: Path) -> errors.Unavailable:
    return errors.Unavailable(
        f"no pyhv host daemon serves {state_dir} (start one with: "
        f"pyhv host serve --state-dir {state_dir})"
    )


def call(state_dir: str | Path, op: str, timeout: float | None = 60.0, /, **args: Any) -> Any:
    """Send one request to the daemon of ``state_dir`` and return its result (or raise
    the :class:`HostError` it answered with; :class:`Unavailable` without a daemon)."""
    state_dir = Path(state_dir)
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            with unix_address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError):
            raise not_running(state_dir) from None
        except OSError as e:
            raise errors.Unavailable(f"cannot reach the host daemon at {path}: {e}") from None
        sock.settimeout(None)
        sock.sendall(encode({"op": op, "args": args}))
        deadline = None if timeout is None else time.monotonic() + timeout
        lines = LineBuffer()
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.Unavailable(f"the host daemon did not answer '{op}' in time")
                sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                raise errors.Unavailable(f"lost the host daemon: {e}") from None
            if not data:
                raise errors.Unavailable(f"the host daemon closed the connection during '{op}'")
            try:
                replies = lines.feed(data)
            except ProtocolError as e:
                raise errors.Unavailable(f"the host daemon sent a malformed reply: {e}") from None
            if replies:
                reply = replies[0]
                if reply.get("ok"):
                    return reply.get("result")
                raise error_from_dict(reply.get("error"))
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def daemon_pid(state_dir: str | Path) -> int | None:
    """The pid of the daemon serving ``state_dir``, None when there is none."""
    from .registry import read_pid_file

    return read_pid_file(Path(state_dir) / PID_NAME)
