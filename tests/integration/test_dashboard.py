"""The web dashboard (docs/dashboard.md) driven as its users would: ``pyhv host serve
--listen 127.0.0.1:0`` with a token, the page loaded by a browser (headless Chromium through
Selenium and Debian's chromedriver) that signs in, starts the Linux guest, opens its
console and types at it; and the console WebSocket from a plain client, refused without the
token or from a foreign page."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, unix_connect
from websockets.sync.client import connect as ws_connect

from pyhv.host.dashboard import INSTALL_HINT, xterm_dir

from .linux_guest import IMAGE, INITRD, PROMPT, needs_linux
from .test_host_rest import IDLE, TOKEN, Api, definition, serve
from .test_host_rest import env as env  # the fixture

ROOT = Path(__file__).resolve().parents[2]
# The README's screenshot (docs/dashboard.png) is refreshed only when asked:
# PYHV_DASHBOARD_SCREENSHOT=docs/dashboard.png; otherwise it goes to the test's tmp_path.
SCREENSHOT_ENV = "PYHV_DASHBOARD_SCREENSHOT"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def api(tmp_path: Path, env: dict[str, str]) -> Iterator[Api]:
    yield from serve(tmp_path, env)


def ws_url(api: Api, name: str) -> str:
    return api.url.replace("http://", "ws://") + f"/v1/vms/{name}/console"


def token_protocol(token: str) -> str:
    """How the page shows the token (a browser cannot set headers on a WebSocket)."""
    return "pyhv-token." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def viewer(api: Api, name: str, token: str | None = TOKEN, *, origin: str | None = "own",
           header: bool = False) -> ClientConnection:
    """A console viewer as the page opens it: the token as a subprotocol (or, ``header``,
    as an Authorization header) and the page's Origin."""
    protocols: list[Any] = ["pyhv-console"]
    headers = {}
    if token is not None and header:
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        protocols.append(token_protocol(token))
    return ws_connect(ws_url(api, name), subprotocols=protocols, additional_headers=headers,
                      origin=api.url if origin == "own" else origin,  # type: ignore[arg-type]
                      open_timeout=10)


def read_until(ws: ClientConnection, text: bytes, timeout: float = 20.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} on the console: {seen[-500:]!r}"
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            continue
        seen += message if isinstance(message, bytes) else message.encode()
    return seen


def refused(api: Api, name: str, **kw: Any) -> int:
    with pytest.raises(InvalidStatus) as caught:
        viewer(api, name, **kw).close()
    return caught.value.response.status_code


# ------------------------------------------------------------------------ the page


def test_page_loads_without_the_token_and_the_api_still_needs_it(api: Api) -> None:
    reply = api.get("/", auth=False)
    assert reply.status in (302, 307) and reply.headers["Location"] == "/ui/"
    page = api.get("/ui/", auth=False)
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert b"dashboard.js" in page.body and b"API token" in page.body
    assert page.headers["X-Frame-Options"] == "DENY"  # no clicks through another site's frame
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    script = api.get("/ui/dashboard.js", auth=False)
    assert script.status == 200 and b"/v1/metrics" in script.body
    # the page holds no data: the figures it shows still need the token
    assert api.get("/v1/vms", auth=False).status == 401
    assert api.get("/v1/metrics", auth=False).status == 401
    assert api.post("/ui/", auth=False).status == 401  # only reading the page is open
    assert api.get("/ui/nothing", auth=False).status == 404
    if xterm_dir() is not None:
        xterm = api.get("/ui/vendor/xterm.js", auth=False)
        assert xterm.status == 200 and b"Terminal" in xterm.body


def test_without_xterm_the_page_says_how_to_install_it(tmp_path: Path,
                                                       env: dict[str, str]) -> None:
    env = {**env, "PYHV_XTERM_DIR": str(tmp_path / "no-xterm-here")}
    for api in serve(tmp_path, env):
        reply = api.get("/ui/vendor/xterm.js", auth=False)
        assert reply.status == 404 and "scripts/setup.sh" in reply.error
        assert api.get("/ui/", auth=False).status == 200  # the rest of the page works


# ------------------------------------------------------------------------ the WebSocket


def test_console_websocket_checks_token_and_origin_and_shares_the_console(api: Api) -> None:
    api.ok("POST", "/v1/vms", definition("idle1", IDLE), status=201)
    api.ok("POST", "/v1/vms", definition("off1", IDLE), status=201)
    api.ok("POST", "/v1/vms/idle1/start")

    # refused before the handshake is answered: no token, a wrong one, a foreign page
    assert refused(api, "idle1", token=None) == 403
    assert refused(api, "idle1", token="not-the-token-but-long-enough") == 403
    assert refused(api, "idle1", token="not-the-token-but-long-enough", header=True) == 403
    assert refused(api, "idle1", origin="http://evil.example") == 403
    assert refused(api, "idle1", origin="null") == 403
    assert refused(api, "nosuchvm", token=None) == 403  # no VM names for a stranger
    assert "WebSocket /v1/vms/idle1/console refused" in api.log.read_text()

    # admitted: the page's way (subprotocol), a script's (header, no Origin)
    with viewer(api, "idle1") as first, viewer(api, "idle1", header=True, origin=None) as second:
        assert first.subprotocol == "pyhv-console"  # the token is never echoed
        assert b"IDLE-READY" in read_until(first, b"IDLE-READY")  # the log's end, replayed
        time.sleep(0.3)
        first.send(b"from-first")
        assert b"from-first" in read_until(second, b"from-first")  # idle.elf echoes
        assert b"from-first" in read_until(first, b"from-first")
        second.send("from-second")  # a text frame is taken as UTF-8
        assert b"from-second" in read_until(first, b"from-second")

    # on the API's UNIX socket the peer's credentials admit a viewer, without a token
    with unix_connect(str(api.state / "api.sock"), "ws://localhost/v1/vms/idle1/console",
                      subprotocols=["pyhv-console"], open_timeout=10) as local:  # type: ignore[list-item]
        local.send(b"over-unix")
        assert b"over-unix" in read_until(local, b"over-unix")

    # a VM that does not run, and none at all: a close code and a reason the page shows
    for name, code, words in (("off1", 4409, "not running"), ("nosuchvm", 4404, "nosuchvm"),
                              ("bad%20name", 4404, "bad name")):
        with viewer(api, name) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == code and words in closed.value.rcvd.reason

    # the guest kept running through all this, and stopping it ends its viewers
    assert api.ok("GET", "/v1/vms/idle1")["state"] == "running"
    with viewer(api, "idle1") as ws:
        read_until(ws, b"IDLE-READY")
        api.ok("POST", "/v1/vms/idle1/stop", {"force": True})
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert closed.value.rcvd.reason == "the VM stopped"

    # a daemon stopped (SIGTERM) with a viewer attached stops as cleanly as without
    api.ok("POST", "/v1/vms/idle1/start")
    with viewer(api, "idle1") as ws:
        read_until(ws, b"IDLE-READY")
        started = time.monotonic()
        assert api.stop() == 0
        assert time.monotonic() - started < 15
    assert "Traceback" not in api.log.read_text()


# ------------------------------------------------------------------------ in a browser


def _browser_missing() -> str | None:
    if shutil.which("chromium") is None or not Path(CHROMEDRIVER).exists():
        return "needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screen_lines(driver: Any) -> list[str]:
    """What xterm.js's DOM renderer shows, row by row (as a user reads it)."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#terminal .xterm-rows > div')]"
        ".map(d => d.textContent)")
    return [row.replace("\xa0", " ").rstrip() for row in rows]


@pytest.mark.slow
@needs_linux
@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_dashboard_starts_linux_and_types_at_its_console(api: Api, browser: Any,
                                                         tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert xterm_dir() is not None, INSTALL_HINT  # setup.sh installs it wherever it runs
    api.ok("POST", "/v1/vms", {
        "name": "linux", "memory": "128M", "qos": {"shares": "high", "limit": 90},
        "boot": {"kernel": str(IMAGE), "initrd": str(INITRD), "cmdline": "console=ttyS0"},
    }, status=201)
    snapshot_dir = tmp_path / "snapshots"
    snapshot_dir.mkdir()
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    browser.get(api.url + "/")
    assert browser.current_url == api.url + "/ui/"

    # signing in: a wrong token is refused on the page, the right one shows the VMs
    wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
    browser.find_element(By.ID, "token").send_keys("a-wrong-token-0123456789")
    browser.find_element(By.ID, "sign-in").click()
    wait.until(lambda d: "not this daemon's" in d.find_element(By.ID, "login-error").text)
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "sign-in").click()
    row = '#vms tr[data-vm="linux"]'
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row + " td.state").text == "stopped")
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, row + " td")[2:7]] == [
        "1", "128M", "2000", "-", "90%"]

    # start it from the page; open its console once it runs
    browser.find_element(By.CSS_SELECTOR, row + ' button[data-action="start"]').click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row + " td.state").text == "running")
    assert api.ok("GET", "/v1/vms/linux")["state"] == "running"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row + ' button[data-action="console"]'))
    browser.find_element(By.CSS_SELECTOR, row + ' button[data-action="console"]').click()
    wait.until(lambda d: d.find_element(By.ID, "console-status").text.startswith("connected"))
    WebDriverWait(browser, 120, poll_frequency=0.5).until(
        lambda d: any(line.startswith(PROMPT.strip()) for line in screen_lines(d)),
        message="no shell prompt in the browser console")

    # a second viewer in another tab (its own sign-in: the token is kept per tab), opened
    # from a link to the console, and a third outside the browser
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(api.url + "/ui/#console=linux")
    wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
    browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "console-status").text.startswith("connected"))
    second_tab = browser.current_window_handle
    with viewer(api, "linux") as third:
        time.sleep(0.5)  # the replayed log tail arrives first
        browser.switch_to.window(first_tab)
        browser.find_element(By.ID, "terminal").click()
        ActionChains(browser).send_keys("echo hello" + Keys.ENTER).perform()
        wait.until(lambda d: "hello" in screen_lines(d),
                   message="the guest's answer is not on the page")
        lines = screen_lines(browser)
        assert any(line.endswith("# echo hello") for line in lines), lines
        assert b"echo hello\r\nhello\r\n" in read_until(third, b"hello\r\n")
        browser.switch_to.window(second_tab)
        wait.until(lambda d: "hello" in screen_lines(d),
                   message="the second tab does not show the answer")
        assert "hello" in browser.execute_script("return window.dashboard.consoleText()")
        browser.close()
        browser.switch_to.window(first_tab)

    # the live figures follow the guest: a busy loop in its shell shows in the CPU % and
    # MIPS columns (and their graphs), within the VM's limit of 90%
    ActionChains(browser).send_keys("while :; do :; done &" + Keys.ENTER).perform()

    def cell(d: Any, index: int) -> float:
        return float(d.find_elements(By.CSS_SELECTOR, row + " td")[index].text.strip("-") or 0)

    wait.until(lambda d: cell(d, 8) > 20 and cell(d, 9) > 1,
               message="the busy guest's CPU % and MIPS do not show")
    assert cell(browser, 8) < 100
    time.sleep(3)  # a few samples on the graphs
    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    browser.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000

    # the other buttons: pause and resume, a snapshot to the file the user names (and one
    # to a file that cannot be written: its error line, the VM unharmed)
    def press(action: str, state: str) -> None:
        browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="{action}"]').click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row + " td.state").text == state)
        assert api.ok("GET", "/v1/vms/linux")["state"] == state

    press("pause", "paused")
    press("resume", "running")
    for path, words in ((snapshot_dir / "no-such-dir" / "x.snap", "snapshot linux: "),
                        (snapshot_dir / "linux.snap", "Saved 'linux' to")):
        browser.find_element(By.CSS_SELECTOR, row + ' button[data-action="snapshot"]').click()
        prompt = wait.until(lambda d: d.switch_to.alert)
        prompt.send_keys(str(path))
        prompt.accept()
        wait.until(lambda d, w=words: w in d.find_element(By.ID, "status").text,
                   message=f"no '{words}' above the table")
        assert str(path) in browser.find_element(By.ID, "status").text
    assert (snapshot_dir / "linux.snap").stat().st_size > 0
    assert api.ok("GET", "/v1/vms/linux")["state"] == "running"

    # stop (the guest is asked, then stopped from the host after the daemon's 3 s): the
    # console says why it closed, and the VM can be started again
    press("stop", "stopped")
    wait.until(lambda d: "the VM stopped" in d.find_element(By.ID, "console-status").text)
    assert "1000" in browser.find_element(By.ID, "console-status").text
    assert browser.find_elements(By.CSS_SELECTOR, row + ' button[data-action="start"]')


# ------------------------------------------------------------------------ the checks alone


def _scope(headers: dict[str, str], protocols: tuple[str, ...] = (),
           client: tuple[Any, ...] = ("127.0.0.1", 5000)) -> dict[str, Any]:
    return {"type": "websocket", "path": "/v1/vms/a/console", "client": client,
            "subprotocols": list(protocols),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}


def test_websocket_refusal_rules() -> None:
    from pyhv.host.rest import websocket_refusal

    key = TOKEN.encode()
    own = {"Host": "127.0.0.1:7480", "Origin": "http://127.0.0.1:7480"}
    assert websocket_refusal(_scope(own, ("pyhv-console", token_protocol(TOKEN))), key) is None
    assert websocket_refusal(_scope({"Authorization": f"Bearer {TOKEN}"}), key) is None
    assert "token" in str(websocket_refusal(_scope(own, ("pyhv-console",)), key))
    assert "token" in str(websocket_refusal(_scope(own, ("pyhv-token.%%%",)), key))
    assert "token" in str(websocket_refusal(_scope(own, (token_protocol(TOKEN[:-1]),)), key))
    # a foreign page, even with the token; a page served elsewhere on this host too
    for origin in ("http://evil.example", "null", "http://127.0.0.1:7481",
                   "http://127.0.0.1:7480.evil.example"):
        why = websocket_refusal(_scope({**own, "Origin": origin}, (token_protocol(TOKEN),)),
                                key)
        assert why is not None and "Origin" in why
    # the UNIX socket's peers were admitted by their credentials; the Origin still counts
    unix = ("unix", 1000)
    assert websocket_refusal(_scope({}, client=unix), None) is None
    assert websocket_refusal(_scope({"Origin": "http://evil.example"}, client=unix),
                             None) is not None
    # no token configured (UNIX socket only): TCP is refused whatever is shown
    assert websocket_refusal(_scope({"Authorization": f"Bearer {TOKEN}"}), None) is not None


def test_setup_installs_the_xterm_version_the_daemon_names() -> None:
    from pyhv.host.dashboard import XTERM_VERSION

    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert f"XTERM_VERSION={XTERM_VERSION}\n" in setup
    assert "/src/pyhv/host/web/vendor/" in (ROOT / ".gitignore").read_text()


@contextlib.contextmanager
def tunnel(unix_path: Path) -> Iterator[int]:
    """A TCP port on 127.0.0.1 forwarded to a UNIX socket, as ``ssh -L PORT:PATH`` does."""
    listener = socket.create_server(("127.0.0.1", 0))

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(str(unix_path))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_dashboard_through_a_tunnel_to_api_sock_needs_no_token(api: Api, browser: Any) -> None:
    """docs/dashboard.md: on the UNIX socket the peer's credentials admit the page's
    requests and its console, as they admit the CLI's."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert xterm_dir() is not None, INSTALL_HINT
    api.ok("POST", "/v1/vms", definition("idle1", IDLE), status=201)
    api.ok("POST", "/v1/vms/idle1/start")
    wait = WebDriverWait(browser, 30, poll_frequency=0.2)
    with tunnel(api.state / "api.sock") as port:
        browser.get(f"http://localhost:{port}/ui/#console=idle1")
        row = '#vms tr[data-vm="idle1"]'
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row + " td.state").text
                   == "running")
        assert not browser.find_element(By.ID, "login").is_displayed()
        assert not browser.find_element(By.ID, "sign-out").is_displayed()  # no token held
        wait.until(lambda d: d.find_element(By.ID, "console-status").text
                   .startswith("connected"))
        wait.until(lambda d: any("IDLE-READY" in line for line in screen_lines(d)))
        browser.find_element(By.ID, "terminal").click()
        ActionChains(browser).send_keys("typed-in-a-browser").perform()
        wait.until(lambda d: any("typed-in-a-browser" in line for line in screen_lines(d)),
                   message="idle.elf's echo is not on the page")


@pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")
def test_page_without_xterm_says_how_to_install_it(tmp_path: Path, env: dict[str, str],
                                                   browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    row = '#vms tr[data-vm="idle1"]'
    button = row + ' button[data-action="{}"]'
    env = {**env, "PYHV_XTERM_DIR": str(tmp_path / "no-xterm-here")}
    for api in serve(tmp_path, env):
        api.ok("POST", "/v1/vms", definition("idle1", IDLE), status=201)
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        browser.get(api.url + "/ui/")
        wait.until(lambda d: d.find_element(By.ID, "token").is_displayed())
        browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, button.format("start")))
        browser.find_element(By.CSS_SELECTOR, button.format("start")).click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, button.format("console")))
        browser.find_element(By.CSS_SELECTOR, button.format("console")).click()
        wait.until(lambda d: d.find_element(By.ID, "xterm-missing").is_displayed())
        assert "scripts/setup.sh" in browser.find_element(By.ID, "xterm-missing").text
        # the rest of the page works on
        browser.find_element(By.CSS_SELECTOR, button.format("pause")).click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row + " td.state").text
                   == "paused")
