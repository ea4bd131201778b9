"""The REST API of the host daemon: what the CLI does, over HTTP and JSON, with an OpenAPI
document and Prometheus metrics (endpoints and examples: docs/host-daemon.md).

    pyhv host serve [--socket-group GROUP] [--listen ADDR:PORT --token-file FILE]

It is an HTTP server (uvicorn serving a FastAPI app) in a thread of the daemon process,
and, as Firecracker's API server does, it only turns requests into operations: every
endpoint calls :class:`pyhv.Host`, the Python API the CLI uses, whose definitions live in
the registry and whose running-VM operations this module hands to
:meth:`Daemon.submit <pyhv.host.daemon.Daemon.submit>` in the same process (the
``call`` transport of :class:`~pyhv.host.api.Host`) instead of the control socket. So an
error is the same :class:`~pyhv.host.errors.HostError` the CLI prints, answered with its
``http_status`` and ``{"error": message}`` (plus ``"field"`` for an invalid field).

**Who may use it.** As libvirt's and Docker's daemons: by default the API is served on a
UNIX socket in the state directory, ``api.sock``, that only the daemon's user can open
(mode 0600 in a 0700 directory; each connection's peer credentials are checked too:
the daemon's uid or root). ``--socket-group GROUP`` opens it to a group's members as
well (0660), whose requests must not borrow the daemon's rights: every file they name
must be one they may use themselves (:mod:`pyhv.host.access`, else 403).

A TCP port is open to every local user (and to web pages in a browser), so the API is
served on TCP only when ``--listen ADDR:PORT`` (or host.toml's ``api.bind``) asks for it,
and only with a token (``--token-file`` or ``$PYHV_API_TOKEN``), loopback included: every
request then needs ``Authorization: Bearer TOKEN`` (else 401; compared in constant time),
but for the web dashboard's static page (:mod:`pyhv.host.dashboard`), which holds no data
and asks for the token. A console's WebSocket, which a browser opens without headers of
its own, shows the token in a subprotocol and must come from this server's own page
(:func:`websocket_refusal`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import math
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Body, FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import PyhvError
from .access import check_files as check_user_files
from .access import may_use
from .api import MAX_CLONES, SETTABLE, Host, snapshot_config, snapshot_definition, snapshot_names
from .dashboard import TOKEN_PROTOCOL_PREFIX, add_dashboard
from .definition import MAX_INT, VMDefinition, _int_text
from .errors import DefinitionError, Forbidden, HostError, Invalid, Unavailable
from .registry import _parse_bind

if TYPE_CHECKING:
    from .daemon import Daemon

TOKEN_ENV = "PYHV_API_TOKEN"
API_SOCKET = "api.sock"  # in the state directory
PEER_UNIX = "unix"  # scope["client"][0] of a connection on the UNIX socket (uid second)
MIN_TOKEN_LENGTH = 16
MAX_BODY = 1 << 20  # bytes; a definition is a few hundred
MAX_STOP_TIMEOUT = 3600.0  # seconds a stop request may let the guest take
CALL_TIMEOUT = 60.0  # seconds to wait for a quick operation (not start, not stop)
STOP_GRACE = 3.0  # seconds open requests get to finish when the daemon stops

# ------------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class ApiConfig:
    """Where the REST API listens on TCP and the token it requires there (always one).
    ``port`` 0 takes any free port (the log says which)."""

    host: str
    port: int
    token: str | None = None
    # False for the default address: a port in use then leaves the daemon without the
    # API (one log line) instead of refusing to start.
    required: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise Invalid(f"REST API port {self.port!r} is out of range (0 to 65535)")
        if self.token is None:
            raise Invalid(
                f"--listen {self.display}: the REST API on TCP needs a token (--token-file "
                f"FILE or ${TOKEN_ENV}): any local user can reach a TCP port; without a "
                f"token, use the state directory's {API_SOCKET}, which only you can open"
            )
        check_token(self.token, "the API token")

    @property
    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def resolve(self) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
        """The family and socket address to bind (the first one ``host`` resolves to)."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise Invalid(f"--listen {self.display}: cannot resolve {self.host}: "
                          f"{e.strerror}") from None
        family, _, _, _, sockaddr = infos[0]
        return family, sockaddr

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.resolve()[1][0]).is_loopback


def check_token(token: str, where: str) -> None:
    """A token must be long enough to resist guessing and fit in an HTTP header (its
    value is never put in a message)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise Invalid(
            f"{where} has {len(token)} characters: use at least {MIN_TOKEN_LENGTH} (e.g. "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise Invalid(f"{where} may hold only printable ASCII characters, no spaces")


def read_token(token_file: str | os.PathLike[str] | None,
               environ: Mapping[str, str] | None = None) -> str | None:
    """The API token: the contents of ``token_file`` (surrounding whitespace dropped),
    else ``$PYHV_API_TOKEN``, else None."""
    if token_file is not None:
        try:
            with open(token_file, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                if mode & 0o077:
                    # as ssh with a private key: a secret others can read is no secret
                    raise Invalid(f"--token-file {token_file} is open to other users (mode "
                                  f"{stat.S_IMODE(mode):04o}): chmod 600 {token_file}")
                text = f.read(1 << 16).decode("utf-8")
        except OSError as e:
            raise Invalid(f"--token-file {token_file}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise Invalid(f"--token-file {token_file}: not a text file") from None
        token = text.strip()
        if not token:
            raise Invalid(f"--token-file {token_file} is empty")
        check_token(token, f"the token in {token_file}")
        return token
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if not token:
        return None
    check_token(token, f"${TOKEN_ENV}")
    return token


def parse_listen(text: str) -> tuple[str, int] | None:
    """``--listen``'s value: ``ADDR:PORT`` (``[v6addr]:PORT``; PORT 0 for any free port)
    or ``none``/``off`` (None)."""
    if text.strip().lower() in ("none", "off"):
        return None
    host, sep, port = text.rpartition(":")
    # host.toml's api.bind syntax, with port 0 allowed here
    address = _parse_bind(host + ":1") if sep and port == "0" else _parse_bind(text)
    if address is None:
        raise Invalid(
            f"--listen '{text}': expected ADDR:PORT (e.g. 127.0.0.1:7480, [::1]:7480, "
            "0.0.0.0:7480) or none"
        )
    return address[0], 0 if port == "0" else address[1]


def bind(config: ApiConfig) -> socket.socket:
    """The listening socket of the API; :class:`Unavailable` naming the address when it
    cannot be had (a port in use...)."""
    family, sockaddr = config.resolve()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise Unavailable(
            f"cannot serve the REST API on {config.display}: {e.strerror or e}"
        ) from None
    return sock


def bind_unix(path: Path, group: int | None = None) -> socket.socket:
    """The API's UNIX socket at ``path``: mode 0600, or 0660 owned by ``group`` (whose
    members then need to reach it: the state directory becomes 0710, that group's)."""
    from .ipc import unix_address

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)  # never briefly open to others between bind and chmod
        try:
            with unix_address(path) as address:
                sock.bind(address)
        finally:
            os.umask(old_umask)
        if group is not None:
            os.chown(path, -1, group)
            os.chmod(path, 0o660)
            os.chown(path.parent, -1, group)
            os.chmod(path.parent, 0o710)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise Unavailable(f"cannot serve the REST API on {path}: {e.strerror or e}") from None
    return sock


def _peer_uid(sock: Any) -> int | None:
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return int(struct.unpack("3i", creds)[1])


def may_connect(uid: int, group: int | None) -> bool:
    """Who the UNIX socket admits: the daemon's user, root, and ``group``'s members."""
    if uid in (0, os.geteuid()):
        return True
    if group is None:
        return False
    import pwd

    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return group in os.getgrouplist(user.pw_name, user.pw_gid)


def _admit_peer(protocol: Any, transport: Any, group: int | None) -> None:
    """On a UNIX-socket connection, hang up on a peer :func:`may_connect` refuses, and
    make an admitted one known to the app as ``scope["client"] == ("unix", uid)``."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return
    uid = _peer_uid(sock)
    if uid is None or not may_connect(uid, group):
        transport.close()
        return
    protocol.client = (PEER_UNIX, uid)


def _peer_protocol(group: int | None) -> type:
    """uvicorn's HTTP protocol, checking each UNIX-socket connection's peer credentials
    before any request (:func:`_admit_peer`)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class PeerProtocol(H11Protocol):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            _admit_peer(self, transport, group)

    return PeerProtocol


def _peer_ws_protocol(group: int | None) -> type:
    """uvicorn's WebSocket protocol (the connection an HTTP request was upgraded to, for a
    console), its peer known as the HTTP protocol's is (:func:`_admit_peer`)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class PeerWebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            _admit_peer(self, transport, group)

    return PeerWebSocketProtocol


# ------------------------------------------------------------------------ the server


def in_process(submit: Callable[..., Future[Any]]) -> Callable[..., Any]:
    """A :class:`~pyhv.host.api.Host` transport that hands requests to ``submit``
    (:meth:`Daemon.submit`) and waits for the answer."""

    def call(op: str, args: Mapping[str, Any], wait: float | None) -> Any:
        future = submit(op, **args)
        try:
            return future.result(wait)
        except FutureTimeout:
            raise Unavailable(f"the host daemon did not answer '{op}' within {wait:g} s") from None

    return call


class ApiServer:
    """The REST API's HTTP server, in a thread of the daemon process: on the UNIX
    socket ``unix`` and, with a token, the TCP socket ``tcp``."""

    def __init__(self, daemon: Daemon, config: ApiConfig | None, unix: socket.socket,
                 tcp: socket.socket | None = None, group: int | None = None) -> None:
        import uvicorn

        self.socks = [s for s in (unix, tcp) if s is not None]
        self.path = str(unix.getsockname())
        self.url = ""
        if tcp is not None:
            address = tcp.getsockname()
            host = f"[{address[0]}]" if tcp.family == socket.AF_INET6 else address[0]
            self.url = f"http://{host}:{address[1]}"
        call = in_process(daemon.submit)
        app = create_app(Host(daemon.root, call=call), lambda: call("ping", {}, CALL_TIMEOUT),
                         config, self.url, self.path)
        _route_logs()
        self._server = uvicorn.Server(uvicorn.Config(
            app, lifespan="off", log_config=None, log_level="warning", access_log=False,
            server_header=False, timeout_graceful_shutdown=int(STOP_GRACE),
            http=_peer_protocol(group), ws=_peer_ws_protocol(group), ws_max_size=MAX_BODY,
        ))
        self._thread = threading.Thread(target=self._run, name="pyhv-rest-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self._server.run(sockets=self.socks)
        except BaseException as e:  # logged: the daemon and its VMs carry on without it
            logging.getLogger("uvicorn.error").error(
                "the REST API stopped: %s: %s", type(e).__name__, e)

    def stop(self) -> None:
        """Stop accepting requests; open ones get :data:`STOP_GRACE` s to finish."""
        self._server.should_exit = True
        self._thread.join(STOP_GRACE + 2)
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()


def _route_logs() -> None:
    """uvicorn's own messages (warnings and errors only) as lines of the daemon's log."""
    logger = logging.getLogger("uvicorn")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s pyhv host: REST API: %(message)s",
                                               "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False


# ------------------------------------------------------------------------ access


class _Guard:
    """Who may use the API (module docstring), checked before routing, so an unknown
    path is a 401 too for a client without the token. A connection on the UNIX socket
    was admitted by its peer credentials (:func:`_peer_protocol`); on TCP, every
    request shows the token."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode("ascii") if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if not (client and client[0] == PEER_UNIX) and not _is_page(scope) and not (
                    self._has_token(Headers(scope=scope))):
                await JSONResponse(
                    {"error": "missing or wrong API token (send Authorization: Bearer TOKEN)"},
                    401, {"WWW-Authenticate": 'Bearer realm="pyhv"'})(scope, receive, send)
                return
        elif scope["type"] == "websocket":
            refusal = websocket_refusal(scope, self.token)
            if refusal is not None:
                # Before the handshake is answered: uvicorn answers 403, nothing is opened.
                logging.getLogger("uvicorn.error").warning(
                    "WebSocket %s refused: %s", scope.get("path", ""), refusal)
                await send({"type": "websocket.close", "code": 1008, "reason": refusal})
                return
        await self.app(scope, receive, send)

    def _has_token(self, headers: Headers) -> bool:
        return _token_matches(self.token, _bearer(headers))


def _bearer(headers: Headers) -> str | None:
    scheme, _, given = headers.get("authorization", "").strip().partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _token_matches(token: bytes | None, given: str | None) -> bool:
    if token is None or given is None:
        return False
    return hmac.compare_digest(given.encode("latin-1", "replace"), token)


def _is_page(scope: Scope) -> bool:
    """The dashboard's static page (:mod:`pyhv.host.dashboard`) holds no data: a browser
    loads it without the token, which the page then asks for."""
    path = scope.get("path", "")
    return scope.get("method") in ("GET", "HEAD") and (
        path in ("/", "/ui") or path.startswith("/ui/"))


def websocket_refusal(scope: Scope, token: bytes | None) -> str | None:
    """Why a WebSocket handshake is refused, None when it is not.

    A browser cannot set headers on a WebSocket, and any web page it shows may open one to
    any address, sending the browser's cookies (none here) but not the API token, which
    the dashboard holds in its tab's sessionStorage. So: the token is required on TCP, as
    ``Authorization: Bearer TOKEN`` or, from a browser, as a subprotocol
    ``pyhv-token.BASE64URL(TOKEN)`` (the server never echoes it); and the ``Origin`` header
    (every browser sends it) must be the server's own origin, the page's: a page of
    another site is refused even if it has the token."""
    headers = Headers(scope=scope)
    origin = headers.get("origin")
    if origin is not None:
        own = {f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}"}
        if origin not in own:
            return f"Origin {origin[:60]!r} is not this server's"
    client = scope.get("client")
    if client and client[0] == PEER_UNIX:
        return None
    given = _bearer(headers)
    if given is None:
        for offered in scope.get("subprotocols") or []:
            if offered.startswith(TOKEN_PROTOCOL_PREFIX):
                encoded = offered[len(TOKEN_PROTOCOL_PREFIX):]
                try:
                    given = base64.urlsafe_b64decode(
                        encoded + "=" * (-len(encoded) % 4)).decode("latin-1")
                except (ValueError, binascii.Error):
                    given = None
                break
    if not _token_matches(token, given):
        return "missing or wrong API token"
    return None


def _requester(request: Request) -> int | None:
    """The uid whose rights a request uses, when it is not the daemon's own: a member of
    the API socket's group (None for the daemon's user, root, and TCP with the token,
    whose holder has the daemon's rights)."""
    client = request.scope.get("client")
    if client and client[0] == PEER_UNIX and client[1] not in (0, os.geteuid()):
        return int(client[1])
    return None


# ------------------------------------------------------------------------ documents


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="one line saying what is wrong")
    field: str | None = Field(
        None, description="the invalid field, as spelled in the definition (qos.limit)")


Name = Annotated[str, PathParam(description="the VM's name", examples=["web"])]
VMState = Literal["starting", "running", "paused", "stopping", "stopped", "crashed"]


class VMInfo(BaseModel):
    """A VM: its state and its definition (``pyhv info NAME --json``)."""

    name: str
    state: VMState = Field(description="starting, running, paused, stopping (its process "
                           "runs), stopped, or crashed (its last run crashed)")
    pid: int | None = Field(description="the VM process while it runs")
    path: str = Field(description="its directory in the state directory")
    definition: dict[str, Any] = Field(
        description="the definition, as its TOML document (docs/vm-definition.md)")
    crash: dict[str, Any] | None = Field(
        None, description="how its last run crashed (reason, time, status, log)")
    generation_id: str | None = Field(
        None, description="while it runs, the VM generation ID its guest reads (a UUID: "
        "every clone gets a new one)")


class VMList(BaseModel):
    vms: list[VMInfo] = Field(description="the VMs, sorted by name")
    errors: dict[str, str] = Field(
        description="VMs whose definition cannot be read (edited by hand), by name")


Seconds = Annotated[StrictFloat, Field(ge=0, le=MAX_STOP_TIMEOUT, allow_inf_nan=False)]


class StopRequest(BaseModel):
    """How to stop a VM (``pyhv stop``)."""

    model_config = ConfigDict(extra="forbid")
    force: StrictBool = Field(False, description="stop the machine from the host side at "
                              "once, without asking the guest to power off")
    timeout: Seconds | None = Field(
        None, description="seconds the guest gets to power off before the host stops the "
        "machine (default: the daemon's --shutdown-timeout)")


class StopResult(BaseModel):
    name: str
    state: Literal["stopped", "crashed"]
    reason: str | None = Field(description="poweroff (the guest powered off), quit (stopped "
                               "by the host), killed, or why it crashed")
    exit_code: int | None = Field(None, description="the guest's exit code, when it gave one")


FilePath = Annotated[StrictStr, Field(min_length=1, max_length=4096,
                                      description="an absolute path on the daemon's host",
                                      examples=["/srv/pyhv/web.snap"])]


class SnapshotRequest(BaseModel):
    """Where to save a VM (``pyhv snapshot NAME FILE``)."""

    model_config = ConfigDict(extra="forbid")
    path: FilePath = Field(description="the snapshot file to write (absolute; an earlier "
                           "snapshot there is replaced, any other file is refused)")


class SnapshotResult(BaseModel):
    name: str
    path: str
    seconds: float = Field(description="time the VM process took to save it")
    ram_bytes: int = Field(description="the VM's RAM")
    stored_bytes: int = Field(description="RAM stored in the file (pages of zeros are not)")
    file_bytes: int = Field(description="the file's size on disk (it is sparse)")


class RestoreRequest(BaseModel):
    """A VM to define from a snapshot file and start from it (``pyhv restore``)."""

    model_config = ConfigDict(extra="forbid")
    path: FilePath = Field(description="the snapshot file (absolute)")
    name: StrictStr | None = Field(None, description="the new VM's name (default: the "
                                   "file's name without its extension)")


class CloneRequest(BaseModel):
    """New VMs started from a snapshot file, each a new machine (``pyhv clone``)."""

    model_config = ConfigDict(extra="forbid")
    path: FilePath = Field(description="the snapshot file (absolute)")
    count: StrictInt = Field(ge=1, le=MAX_CLONES, description="how many VMs")
    name: StrictStr | None = Field(None, description="name prefix: the VMs are PREFIX-1 .. "
                                   "PREFIX-COUNT (default: the file's name without its "
                                   "extension)")


class CloneResult(BaseModel):
    vms: list[VMInfo] = Field(description="the new VMs, running")


class IncomingRequest(BaseModel):
    """A VM another daemon migrates here (sent by the source daemon)."""

    model_config = ConfigDict(extra="forbid")
    definition: dict[str, Any] = Field(description="the VM's definition, as its TOML "
                                       "document in JSON (docs/vm-definition.md); paths "
                                       "absolute")
    name: StrictStr | None = Field(None, description="the VM's name here (default: the "
                                   "definition's)")


class IncomingSlot(BaseModel):
    name: str
    port: int = Field(description="the TCP port on 127.0.0.1 where the VM process waits "
                      "for the machine (one connection, within 60 s)")
    token: str = Field(description="the one-time token the source must present")


class MigrateRequest(BaseModel):
    """Where to migrate a running VM (``pyhv migrate NAME --to URL``)."""

    model_config = ConfigDict(extra="forbid")
    to: StrictStr = Field(min_length=1, max_length=4096,
                          description="the destination daemon's REST API, http://HOST:PORT",
                          examples=["http://127.0.0.1:7480"])
    token: StrictStr | None = Field(None, max_length=4096,
                                    description="the destination's API token")


class MigrateResult(BaseModel):
    name: str
    to: str = Field(description="the destination")
    rounds: int = Field(description="pre-copy rounds")
    pages_sent: int = Field(description="4 KiB pages sent in all")
    last_round_pages: int = Field(description="pages sent while the guest was stopped")
    total_seconds: float
    downtime_seconds: float = Field(description="from the guest's last instruction here "
                                    "to its machine ready there")
    stop_copy_seconds: float | None = None
    build_seconds: float | None = None


_SIZE: list[JsonValue] = [{"type": "integer", "minimum": 1}, {"type": "string"}]


class VMChanges(BaseModel):
    """Fields to change (``pyhv set``); give at least one. On a running VM, shares,
    reservation, limit, the memory terms and io apply at once and balloon sets its balloon
    target; memory and autostart apply at its next start."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "minProperties": 1,
        "examples": [{"shares": "high", "reservation": 50, "limit": 150}, {"balloon": "256M"},
                     {"io": {"disk0": {"bps": "2M", "iops": 200}, "net0": {"tx_bps": "1M"}}}],
    })
    # The values are checked by pyhv.Host.set, as for the CLI (one set of rules, errors
    # naming the field); the schemas below document them.
    memory: Any = Field(None, description='RAM: bytes or a size such as "512M" (next start)',
                        json_schema_extra={"anyOf": _SIZE})
    shares: Any = Field(None, description='CPU weight: an integer or "low", "normal", "high"',
                        json_schema_extra={"anyOf": [
                            {"type": "integer", "minimum": 1},
                            {"enum": ["low", "normal", "high"]}]})
    reservation: Any = Field(None, description="guaranteed CPU, percent of one host CPU",
                             json_schema_extra={"type": "number", "minimum": 0})
    limit: Any = Field(None, description="maximum CPU, percent of one host CPU; null: "
                       "unlimited", json_schema_extra={"type": ["number", "null"]})
    balloon: Any = Field(None, description="running VM with a balloon: the memory its guest "
                         "keeps (bytes or a size); null gives it all back",
                         json_schema_extra={"anyOf": [*_SIZE, {"type": "null"}]})
    autostart: Any = Field(None, description="start the VM when the daemon starts",
                           json_schema_extra={"type": "boolean"})
    memory_shares: Any = Field(None, description="memory weight when the host's memory is "
                               'short: an integer or "low", "normal", "high" (per MiB)',
                               json_schema_extra={"anyOf": [
                                   {"type": "integer", "minimum": 1},
                                   {"enum": ["low", "normal", "high"]}]})
    memory_reservation: Any = Field(None, description="memory never taken back (bytes or a "
                                    'size such as "128M"; 0: none)',
                                    json_schema_extra={"anyOf": [
                                        {"type": "integer", "minimum": 0}, {"type": "string"}]})
    memory_limit: Any = Field(None, description="the most memory the guest may hold, through "
                              "its balloon (bytes or a size); null: its memory",
                              json_schema_extra={"anyOf": [*_SIZE, {"type": "null"}]})
    io: Any = Field(None, description="I/O budgets, per device (disk0, disk1, ..., net0, "
                    "...): the keys of [[disk]] (bps, iops, bps_burst, iops_burst) or [[net]] "
                    "(tx_bps, tx_pps, tx_bps_burst, rx_bps, rx_pps, rx_bps_burst), a rate "
                    'such as 200 or "2M", null: no limit; the terms not named stay. At once '
                    "on a running VM", json_schema_extra={
                        "type": "object", "minProperties": 1,
                        "propertyNames": {"pattern": "^(disk|net)[0-9]{1,2}$"},
                        "additionalProperties": {
                            "type": "object", "minProperties": 1,
                            "additionalProperties": {"anyOf": [
                                {"type": "integer", "minimum": 1}, {"type": "string"},
                                {"type": "null"}]}}})


class Metrics(BaseModel):
    """What ``pyhv top`` shows (see docs/host-daemon.md)."""

    host: dict[str, Any] = Field(description="cpus, policy, vms_running, cpu_pct, "
                                 "capacity_pct, daemon_cpu_pct, memory_budget, memory_held, "
                                 "memory_short, ksm (the host's KSM settings and counters), "
                                 "uptime, pid")
    vms: list[dict[str, Any]] = Field(description="per VM: name, state, pid, vcpus, memory, "
                                      "shares, reservation, limit and, while it runs, "
                                      "activity, engine, generation_id (the VM "
                                      "generation ID its guest reads), cpu_pct, "
                                      "entitlement_pct, "
                                      "cpu_seconds, mips, instructions, rss, balloon_target, "
                                      "balloon_actual, memory_shares, memory_reservation, "
                                      "memory_limit, memory_entitled, memory_granted, "
                                      "memory_held, memory_active, memory_shared, "
                                      "memory_swapped, guest_free, guest_available, "
                                      "disk_read, disk_write, net_tx, net_rx, "
                                      "console_in, console_out, wakeups, uptime, "
                                      "io_throttled_seconds and io: per disk and NIC "
                                      "direction its device, direction (rw, tx, rx), "
                                      "limits, throttled_seconds, throttled, bytes or "
                                      "frames")


class HostInfo(BaseModel):
    version: str
    pid: int
    state_dir: str
    cpus: int = Field(description="host CPUs the VMs may use")
    policy: str = Field(description="the CPU scheduling policy")
    cpu_backend: str = Field("feedback", description="who enforces the CPU terms: "
                             "feedback (the daemon's quanta) or cgroup (the kernel)")
    cpu_backend_reason: str = Field("", description="why that backend is in use")
    uptime: float = Field(description="seconds since the daemon started")
    vms_running: int
    shutting_down: bool
    settings: dict[str, Any] = Field(description="host.toml (defaults filled in)")
    api: dict[str, Any] = Field(description="url (TCP, with a token; empty: none), token "
                                "(whether TCP is served with one), socket (the UNIX socket)")


_WHY = {
    400: "malformed JSON",
    401: "on TCP: no or wrong bearer token",
    403: "a file the request names that the requesting user (a member of the API "
         "socket's group) may not use",
    404: "no VM of that name",
    409: "the request clashes with the current state: a running VM, a duplicate name, a "
         "reservation or memory that does not fit, a disk in use by another running VM",
    413: "body larger than 1 MiB",
    502: "the migration's destination cannot be reached, refused, or the transfer broke "
         "off (the VM runs on here)",
    422: "an invalid field (named in the answer) or request",
    503: "the daemon is shutting down",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an endpoint declares (every endpoint: 401)."""
    return {code: {"model": ErrorBody, "description": _WHY[code]}
            for code in sorted({401, *codes})}


# ------------------------------------------------------------------------ request checks


def _finite(value: Any, where: str) -> None:
    """JSON as Python reads it allows NaN and Infinity, which no field of pyhv means, and
    integers of any size, where pyhv's (as TOML's) are 64-bit."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DefinitionError(where or None, f"{value} is not a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value < MAX_INT:
        raise DefinitionError(where or None, f"{_int_text(value)} is out of range "
                              "(integers are 64-bit)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _finite(item, f"{where}[{i}]")


def _absolute_paths(spec: Mapping[str, Any]) -> None:
    """Paths in a definition sent over HTTP must be absolute: the daemon's current
    directory means nothing to the client. (Wrong types are the definition's to report.)"""
    wanted: list[tuple[str, Any]] = []
    boot = spec.get("boot")
    if isinstance(boot, Mapping):
        if boot.get("firmware") not in ("default", "none"):
            wanted.append(("boot.firmware", boot.get("firmware")))
        wanted.extend((f"boot.{k}", boot.get(k)) for k in ("kernel", "initrd", "dtb"))
    disks = spec.get("disk")
    if isinstance(disks, list):
        for i, disk in enumerate(disks):
            if isinstance(disk, Mapping):
                wanted.extend((f"disk[{i}].{k}", disk.get(k)) for k in ("path", "overlay"))
    shares = spec.get("share")
    if isinstance(shares, list):
        wanted.extend((f"share[{i}].path", sh.get("path")) for i, sh in enumerate(shares)
                      if isinstance(sh, Mapping))
    for field, path in wanted:
        if isinstance(path, str) and path and not os.path.isabs(os.path.expanduser(path)):
            raise DefinitionError(field, f"'{path}' is relative: give an absolute path "
                                  "(the REST API has no current directory)")


def _validation_error(exc: RequestValidationError) -> tuple[int, str, str | None]:
    """FastAPI's validation error as (status, one line, field)."""
    first = exc.errors()[0]
    kind = first.get("type")
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        return 400, f"malformed JSON body: {detail}", None
    field = ".".join(loc) or None
    where = field or "body"
    if kind == "extra_forbidden":
        return 422, f"{where}: unknown field", field
    if kind == "missing" and not loc:
        return 422, "a JSON body is required (Content-Type: application/json)", None
    if kind in ("dict_type", "model_attributes_type") and not loc:
        return 422, ("the body must be a JSON object (Content-Type: application/json), got "
                     f"{type(first.get('input')).__name__}"), None
    return 422, f"{where}: {first.get('msg', 'invalid')}", field


def _error_response(exc: HostError | PyhvError) -> JSONResponse:
    status = exc.http_status if isinstance(exc, HostError) else 422
    body: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, DefinitionError) and exc.field:
        body["field"] = exc.field
    return JSONResponse(body, status)


# ------------------------------------------------------------------------ the app


def create_app(host: Host, info: Callable[[], Mapping[str, Any]], config: ApiConfig | None,
               url: str = "", socket_path: str = "") -> FastAPI:
    """The API's ASGI app: endpoints over ``host`` (a :class:`pyhv.Host` whose transport
    reaches the daemon), ``info()`` the daemon's ``ping`` answer."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
    from prometheus_client.exposition import choose_encoder, generate_latest

    from .prometheus import HostCollector

    app = FastAPI(
        title="pyhv host API",
        version=__version__,
        description="Define, run and watch the VMs of a pyhv host daemon "
        "(docs/host-daemon.md). Errors are `{\"error\": message}` with the HTTP status of "
        "the failure; nothing is changed by a request that fails.",
        openapi_tags=[
            {"name": "vms", "description": "VM definitions (pyhv create, list, info, set, "
             "destroy)"},
            {"name": "lifecycle", "description": "running VMs (pyhv start, stop, reboot, "
             "pause, resume)"},
            {"name": "snapshots", "description": "save a running VM, restore and clone it "
             "(pyhv snapshot, restore, clone)"},
            {"name": "migration", "description": "live migration between daemons (pyhv "
             "migrate)"},
            {"name": "metrics", "description": "figures (pyhv top) and Prometheus"},
            {"name": "host", "description": "the daemon"},
        ],
        redoc_url=None,
        max_body_size=MAX_BODY,
        generate_unique_id_function=lambda route: route.name,
    )
    app.add_middleware(_Guard, token=config.token if config is not None else None)
    add_dashboard(app, host)

    @app.exception_handler(HostError)
    @app.exception_handler(PyhvError)
    async def _host_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PyhvError)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        status, message, field = _validation_error(exc)
        body: dict[str, Any] = {"error": message}
        if field:
            body["field"] = field
        return JSONResponse(body, status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        where = f"{request.method} {request.url.path}"
        message = {
            404: f"no such endpoint: {where} (see /openapi.json)",
            405: f"method not allowed: {where}",
        }.get(exc.status_code, str(exc.detail))
        return JSONResponse({"error": message}, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        # a bug: uvicorn logs the traceback; the client gets JSON like any other error
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    # The daemon's own process figures next to the VMs' (process_cpu_seconds_total...).
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(host.metrics, __version__))
    ProcessCollector(registry=registry)

    # ----------------------------------------------------------------- definitions

    @app.get("/v1/vms", tags=["vms"], response_model=VMList, responses=_errors(503),
             summary="List the VMs with their state")
    def list_vms() -> Any:
        vms, broken = host.scan()
        return {"vms": [vm.to_dict() for vm in vms],
                "errors": {name: str(e) for name, e in broken.items()}}

    @app.post("/v1/vms", tags=["vms"], status_code=201, response_model=VMInfo,
              responses=_errors(400, 403, 409, 413, 422, 503), summary="Define a VM")
    def create_vm(
        request: Request,
        response: Response,
        spec: Annotated[dict[str, Any], Body(
            description="the definition, as its TOML document in JSON "
            "(docs/vm-definition.md); paths must be absolute",
            examples=[{"name": "web", "memory": "256M", "boot": {
                "kernel": "/srv/pyhv/Image", "cmdline": "console=ttyS0 root=/dev/vda"},
                "disk": [{"path": "/srv/pyhv/web.img", "overlay": True}],
                "qos": {"shares": "high", "reservation": 25, "limit": 100}}],
        )],
    ) -> Any:
        _finite(spec, "")
        _absolute_paths(spec)
        uid = _requester(request)
        if uid is not None:  # the files must be the requester's to use, not only ours
            check_user_files(VMDefinition.from_dict(spec, base_dir="/"), uid, None)
        vm = host.create(spec, base_dir="/")
        response.headers["Location"] = f"/v1/vms/{vm.name}"
        return vm.to_dict()

    @app.get("/v1/vms/{name}", tags=["vms"], response_model=VMInfo,
             responses=_errors(404, 422, 503), summary="A VM's state and definition")
    def get_vm(name: Name) -> Any:
        return host.get(name).to_dict()

    @app.patch("/v1/vms/{name}", tags=["vms"], response_model=VMInfo,
               responses=_errors(400, 404, 409, 413, 422, 503),
               summary="Change a VM's QoS, I/O budgets, balloon target, memory or autostart")
    def set_vm(name: Name, changes: VMChanges) -> Any:
        fields = changes.model_dump(exclude_unset=True)
        _finite(fields, "")
        if not fields:
            raise Invalid(f"{name}: nothing to change (settable: {', '.join(SETTABLE)})")
        return host.set(name, **fields).to_dict()

    @app.delete("/v1/vms/{name}", tags=["vms"], status_code=204, response_class=Response,
                responses=_errors(404, 409, 422, 503),
                summary="Delete a stopped VM and its directory (409 while it runs)")
    def delete_vm(name: Name) -> Response:
        host.destroy(name)
        return Response(status_code=204)

    # ----------------------------------------------------------------- lifecycle

    @app.post("/v1/vms/{name}/start", tags=["lifecycle"], response_model=VMInfo,
              responses=_errors(403, 404, 409, 422, 503),
              summary="Start a VM; answers once its machine is built")
    def start_vm(request: Request, name: Name) -> Any:
        uid = _requester(request)
        if uid is not None:
            vm = host.get(name)
            check_user_files(vm.definition, uid, vm.path)
        return host.start(name).to_dict()

    @app.post("/v1/vms/{name}/stop", tags=["lifecycle"], response_model=StopResult,
              responses=_errors(400, 404, 409, 413, 422, 503),
              summary="Stop a VM: guest power-off, then from the host side")
    def stop_vm(name: Name, how: StopRequest | None = None) -> Any:
        if how is None:
            return host.stop(name)
        return host.stop(name, force=how.force, timeout=how.timeout)

    @app.post("/v1/vms/{name}/reboot", tags=["lifecycle"], response_model=VMInfo,
              responses=_errors(404, 409, 422, 503), summary="Warm-reset a running VM")
    def reboot_vm(name: Name) -> Any:
        return host.reboot(name).to_dict()

    @app.post("/v1/vms/{name}/pause", tags=["lifecycle"], response_model=VMInfo,
              responses=_errors(404, 409, 422, 503), summary="Stop running a VM's guest")
    def pause_vm(name: Name) -> Any:
        return host.pause(name).to_dict()

    @app.post("/v1/vms/{name}/resume", tags=["lifecycle"], response_model=VMInfo,
              responses=_errors(404, 409, 422, 503), summary="Resume a paused VM")
    def resume_vm(name: Name) -> Any:
        return host.resume(name).to_dict()

    # ----------------------------------------------------------------- snapshots

    def absolute(path: str) -> str:
        try:
            path.encode()
        except UnicodeEncodeError:
            raise DefinitionError("path", f"{path!r} is not a valid file name") from None
        if "\0" in path or not os.path.isabs(path):
            raise DefinitionError("path", f"'{path}' is not an absolute path (the REST API "
                                  "has no current directory)")
        return path

    def may_read_snapshot(uid: int | None, path: str, names: list[str]) -> None:
        """A socket-group member restores only a file it may read, and a machine whose
        files it may use."""
        if uid is None:
            return
        if not may_use(path, uid):
            raise Forbidden(f"path: you may not read '{path}'")
        config = snapshot_config(path)
        for name in names:
            check_user_files(snapshot_definition(config, name), uid, None)

    @app.post("/v1/vms/{name}/snapshot", tags=["snapshots"], response_model=SnapshotResult,
              responses=_errors(400, 403, 404, 409, 413, 422, 503),
              summary="Save a running VM to a snapshot file; it runs on (a paused VM "
              "stays paused)")
    def snapshot_vm(request: Request, name: Name, where: SnapshotRequest) -> Any:
        path = absolute(where.path)
        uid = _requester(request)
        if uid is not None and not may_use(path, uid, write=True):
            raise Forbidden(f"path: you may not write '{path}'")
        return host.snapshot(name, path)

    @app.post("/v1/vms/restore", tags=["snapshots"], status_code=201, response_model=VMInfo,
              responses=_errors(400, 403, 409, 413, 422, 503),
              summary="Define a VM from a snapshot file and start it from there")
    def restore_vm(request: Request, response: Response, what: RestoreRequest) -> Any:
        path = absolute(what.path)
        may_read_snapshot(_requester(request), path, snapshot_names(path, what.name))
        vm = host.restore(path, what.name)
        response.headers["Location"] = f"/v1/vms/{vm.name}"
        return vm.to_dict()

    @app.post("/v1/vms/clone", tags=["snapshots"], status_code=201, response_model=CloneResult,
              responses=_errors(400, 403, 409, 413, 422, 503),
              summary="Start N new VMs from a snapshot file (PREFIX-1 .. PREFIX-N)")
    def clone_vm(request: Request, what: CloneRequest) -> Any:
        path = absolute(what.path)
        may_read_snapshot(_requester(request), path, snapshot_names(path, what.name,
                                                                   what.count))
        return {"vms": [vm.to_dict() for vm in host.clone(path, what.count, what.name)]}

    # ----------------------------------------------------------------- migration

    @app.post("/v1/vms/incoming", tags=["migration"], status_code=201,
              response_model=IncomingSlot, responses=_errors(400, 403, 409, 413, 422, 503),
              summary="Take a VM another daemon migrates here: define it and start a VM "
              "process that waits for it")
    def incoming_vm(request: Request, response: Response, what: IncomingRequest) -> Any:
        spec = dict(what.definition)
        if what.name is not None:
            spec["name"] = what.name
        _finite(spec, "definition")
        _absolute_paths(spec)
        uid = _requester(request)
        if uid is not None:
            check_user_files(VMDefinition.from_dict(spec, base_dir="/"), uid, None)
        slot = host.incoming(spec)
        response.headers["Location"] = f"/v1/vms/{slot['name']}"
        return slot

    @app.post("/v1/vms/{name}/migrate", tags=["migration"], response_model=MigrateResult,
              responses=_errors(400, 404, 409, 413, 422, 502, 503),
              summary="Live-migrate a running VM to another daemon; answers once it runs "
              "there")
    def migrate_vm(name: Name, where: MigrateRequest) -> Any:
        return host.migrate(name, where.to, where.token)

    # ----------------------------------------------------------------- figures

    @app.get("/v1/metrics", tags=["metrics"], response_model=Metrics,
             responses=_errors(503), summary="Per-VM and host figures (pyhv top)")
    def metrics() -> Any:
        return host.metrics()

    @app.get("/v1/vms/{name}/metrics", tags=["metrics"], response_model=dict[str, Any],
             responses=_errors(404, 422, 503), summary="One VM's figures")
    def vm_metrics(name: Name) -> Any:
        return host.metrics(name)["vms"][0]

    @app.get("/metrics", tags=["metrics"], response_class=Response,
             responses={200: {"description": "Prometheus text exposition format (OpenMetrics "
                              "when the Accept header asks for it)",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **_errors(503)},
             summary="Prometheus metrics")
    def prometheus(request: Request) -> Response:
        try:
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        except (TypeError, ValueError):  # a malformed version in Accept
            encoder, content_type = generate_latest, CONTENT_TYPE_LATEST
        return Response(encoder(registry), media_type=content_type)

    @app.get("/v1/host", tags=["host"], response_model=HostInfo, responses=_errors(503),
             summary="The daemon: version, CPUs, policy, settings")
    def host_info() -> Any:
        return {**info(), "settings": host.settings.to_dict(),
                "api": {"url": url, "token": config is not None, "socket": socket_path}}

    return app
