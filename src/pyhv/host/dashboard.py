"""The web dashboard of the host daemon: a page at ``/ui/`` on the REST API's port showing
the VMs, their live figures and their serial consoles in the browser (docs/dashboard.md).

The page (``web/``: HTML, JS, CSS) is static and holds no data, so it is served without
the token; everything it shows it fetches from the REST API with the token the user gives
it. The consoles use xterm.js, which ``scripts/setup.sh`` installs from the npm registry
into ``web/vendor/`` (never in git); without it the page says how to install it and the
rest of the page still works.

A console is a WebSocket, ``/v1/vms/NAME/console``, bridged to the VM's console socket
(:class:`~pyhv.host.console.SocketConsole`), one UNIX connection per viewer, so that
several viewers (browsers and ``pyhv console``) share one console as they do with the
CLI: output to all, input from each. Who may open one is checked before the handshake is
answered (:func:`pyhv.host.rest.websocket_refusal`: the token and the Origin).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from .api import Host
from .console import connect
from .errors import HostError

WEB_DIR = Path(__file__).with_name("web")
XTERM_VERSION = "6.0.0"  # what scripts/setup.sh installs (npm: @xterm/xterm)
XTERM_ENV = "PYHV_XTERM_DIR"  # another @xterm/xterm package directory to serve
CONSOLE_PROTOCOL = "pyhv-console"  # the WebSocket subprotocol of a console
TOKEN_PROTOCOL_PREFIX = "pyhv-token."  # + base64url(token): how a browser shows the token
REPLAY_BYTES = 4096  # the end of console.log a new viewer is shown first
PAGES = {"": "index.html", "index.html": "index.html", "dashboard.js": "dashboard.js",
         "dashboard.css": "dashboard.css"}
XTERM_FILES = {"xterm.js": ("lib/xterm.js", "text/javascript"),
               "xterm.css": ("css/xterm.css", "text/css")}
# (served without the token: it names no path of this host)
INSTALL_HINT = ("xterm.js is not installed on the daemon's host: run pyhv's scripts/setup.sh "
                "there, or npm install --prefix src/pyhv/host/web/vendor "
                f"@xterm/xterm@{XTERM_VERSION} in pyhv's tree")


def xterm_dir() -> Path | None:
    """The installed ``@xterm/xterm`` package directory (``$PYHV_XTERM_DIR`` when set,
    else setup's), None when there is none."""
    found = Path(os.environ.get(XTERM_ENV) or
                 WEB_DIR / "vendor" / "node_modules" / "@xterm" / "xterm")
    return found if (found / "lib" / "xterm.js").is_file() else None


def add_dashboard(app: FastAPI, host: Host) -> None:
    """The dashboard's page (``/``, ``/ui/...``) and the console WebSocket on ``app``."""

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/ui/")

    @app.get("/ui", include_in_schema=False)
    def ui_slash() -> Response:
        return RedirectResponse("/ui/")

    @app.get("/ui/{name:path}", include_in_schema=False)
    def page(name: str) -> Response:
        if name in PAGES:
            return FileResponse(WEB_DIR / PAGES[name], headers=_PAGE_HEADERS)
        if name.startswith("vendor/") and name[7:] in XTERM_FILES:
            found = xterm_dir()
            if found is None:
                return JSONResponse({"error": INSTALL_HINT}, 404)
            file, media_type = XTERM_FILES[name[7:]]
            return FileResponse(found / file, media_type=media_type)
        return JSONResponse({"error": f"no such page: /ui/{name}"}, 404)

    @app.websocket("/v1/vms/{name}/console")
    async def console(websocket: WebSocket, name: str) -> None:
        await bridge(websocket, host, name)


# A new pyhv's page, not the browser's old copy; never inside another site's frame; only
# this server's scripts (xterm.js sets inline styles on the rows it draws).
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'",
}


async def bridge(websocket: WebSocket, host: Host, name: str) -> None:
    """Copy between a WebSocket (binary frames; text frames are taken as UTF-8) and VM
    ``name``'s console socket until either side closes. A VM that is not running is an
    accepted handshake closed at once with code 4000 + the HTTP status of the error
    (4404 no such VM, 4409 not running) and the message as the reason, which a browser
    can show (it never sees a refused handshake's status)."""
    offered = websocket.scope.get("subprotocols") or []
    subprotocol = CONSOLE_PROTOCOL if CONSOLE_PROTOCOL in offered else None
    try:
        path = await run_in_threadpool(host.console_path, name)
        sock = await run_in_threadpool(connect, path, 5.0)
    except HostError as e:
        await _refuse(websocket, subprotocol, 4000 + e.http_status, str(e))
        return
    except OSError as e:
        await _refuse(websocket, subprotocol, 4409,
                      f"VM '{name}': its console cannot be reached: {e.strerror or e}")
        return
    try:
        await websocket.accept(subprotocol)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        tail = await run_in_threadpool(_log_tail, path.with_name("console.log"))
        if tail:
            await websocket.send_bytes(tail)
        to_viewer = asyncio.ensure_future(_to_viewer(websocket, reader))
        to_vm = asyncio.ensure_future(_to_vm(websocket, writer))
        done, pending = await asyncio.wait({to_viewer, to_vm},
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        # A viewer gone in the middle of a send, or a console closed in the middle of a
        # write, ends the bridge like a clean close: the exception is taken, not logged.
        failed = {task for task in done if task.exception() is not None}
        if to_viewer in done and to_viewer not in failed:
            with contextlib.suppress(Exception):  # the viewer may have gone as well
                await websocket.close(1000, "the VM stopped")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _refuse(websocket: WebSocket, subprotocol: str | None, code: int,
                  reason: str) -> None:
    await websocket.accept(subprotocol)
    await websocket.close(code, _reason(reason))


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8 (RFC 6455, 5.5.1)."""
    data = text.encode()
    if len(data) <= 123:
        return text
    return data[:120].decode("utf-8", "ignore") + "..."


async def _to_viewer(websocket: WebSocket, reader: asyncio.StreamReader) -> None:
    """The guest's output to the viewer, until the VM closes its console."""
    while True:
        data = await reader.read(65536)
        if not data:
            return
        await websocket.send_bytes(data)


async def _to_vm(websocket: WebSocket, writer: asyncio.StreamWriter) -> None:
    """What the viewer types to the guest, until the viewer goes."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode("utf-8")
        if data:
            writer.write(data)
            await writer.drain()


def _log_tail(path: Path) -> bytes:
    """The last :data:`REPLAY_BYTES` of the console's log, from a line start where one is
    near, so that a new viewer sees the prompt and what led to it."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - REPLAY_BYTES))
            data = f.read(REPLAY_BYTES)
    except OSError:
        return b""
    if len(data) == REPLAY_BYTES:
        newline = data.find(b"\n")
        if 0 <= newline < 512:
            data = data[newline + 1:]
    return data

