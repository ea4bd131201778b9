"""The REST API driven as its users would: ``pyhv host serve --listen 127.0.0.1:0`` (with a
token) in a private state directory, plain HTTP requests (and over its UNIX socket), VMs
running the tiny guests of guests/tests
(``spin``: CPU-bound, ``idle``: waits in WFI), and a schemathesis fuzz of the live
OpenAPI document."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from daemon_process import stop_daemon
from pyhv.host import Host
from pyhv.host.errors import Invalid
from pyhv.host.rest import ApiConfig, parse_listen, read_token

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
SPIN = ROOT / "guests" / "tests" / "spin.elf"
IDLE = ROOT / "guests" / "tests" / "idle.elf"
TOKEN = "s3cret-token-for-the-tests-0123456789"


def definition(name: str, guest: Path = IDLE, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name, "memory": "32M", "engine": "interp",
        "boot": {"firmware": "none", "kernel": str(guest)},
    }
    doc.update(extra)
    return doc


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        data = self.json()
        assert set(data) <= {"error", "field"}, data
        assert isinstance(data["error"], str) and "\n" not in data["error"]
        return str(data["error"])


class Api:
    """A daemon serving the REST API, and an HTTP client for it."""

    def __init__(self, proc: subprocess.Popen[bytes], state: Path, log: Path, url: str,
                 token: str | None) -> None:
        self.proc = proc
        self.state = state
        self.log = log
        self.url = url
        self.token = token
        parts = urlsplit(url)
        self.address = (parts.hostname or "", parts.port or 80)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, auth: bool = True) -> Reply:
        sent = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if auth and self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        conn = http.client.HTTPConnection(*self.address, timeout=120)
        try:
            conn.request(method, path, body=data, headers=sent)
            resp = conn.getresponse()
            return Reply(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        reply = self.request(method, path, body)
        assert reply.status == status, (method, path, reply.status, reply.body)
        return reply.json() if reply.body else None

    def stop(self, timeout: float = 30) -> int:
        return stop_daemon(self.proc, timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("PYHV_STATE_DIR", "XDG_DATA_HOME", "PYHV_API_TOKEN")}
    e["HOME"] = str(tmp_path / "home")
    e["PYTHONPATH"] = str(SRC)
    return e


def serve(tmp_path: Path, env: dict[str, str], *args: str,
          token: str | None = TOKEN) -> Iterator[Api]:
    """``pyhv host serve --listen ...`` (2 CPUs, 3 s shutdown timeout; ``token`` in
    $PYHV_API_TOKEN); stopped after the test, every VM process with it."""
    if token is not None:
        env = {**env, "PYHV_API_TOKEN": token}
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
             "--cpus", "2", "--shutdown-timeout", "3", *(args or ("--listen", "127.0.0.1:0"))],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    url = None
    deadline = time.monotonic() + 30
    while url is None:
        text = log.read_text()
        if re.search(r"pyhv host: serving ", text):  # after the API's lines
            found = re.search(r"REST API on (http://\S+)", text)
            url = found.group(1) if found else ""
            break
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the daemon did not come up: " + log.read_text()
        time.sleep(0.05)
    api = Api(proc, state, log, url, token)
    try:
        yield api
    finally:
        code = api.stop()
        for pid_file in state.glob("vms/*/run/pid"):  # never leave a VM process behind
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        assert code == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture
def api(tmp_path: Path, env: dict[str, str]) -> Iterator[Api]:
    yield from serve(tmp_path, env)


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def prometheus(api: Api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    reply = api.get("/metrics")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


# ------------------------------------------------------------------------ lifecycle


def test_create_start_list_metrics_stop(api: Api) -> None:
    reply = api.post("/v1/vms", definition("spin1", SPIN))
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == "/v1/vms/spin1"
    created = reply.json()
    assert created["state"] == "stopped" and created["pid"] is None
    assert created["definition"]["memory"] == "32M"
    api.ok("POST", "/v1/vms", definition("idle1", devices={"balloon": True}), status=201)
    listing = api.ok("GET", "/v1/vms")
    assert [(v["name"], v["state"]) for v in listing["vms"]] == [
        ("idle1", "stopped"), ("spin1", "stopped")]
    assert listing["errors"] == {}

    # start: answers once the machine is built; the CLI's view agrees
    vm = api.ok("POST", "/v1/vms/spin1/start")
    assert vm["state"] == "running" and vm["pid"] > 0
    assert Host(api.state).get("spin1").pid == vm["pid"]
    api.ok("POST", "/v1/vms/idle1/start")
    assert [v["state"] for v in api.ok("GET", "/v1/vms")["vms"]] == ["running", "running"]
    assert api.ok("GET", "/v1/vms/idle1")["state"] == "running"

    # live QoS and balloon, as pyhv set does
    changed = api.ok("PATCH", "/v1/vms/spin1", {"limit": 50, "shares": "high"})
    assert changed["definition"]["qos"] == {"shares": 2000, "reservation": 0, "limit": 50}
    assert Host(api.state).get("spin1").definition.qos.limit == 50
    api.ok("PATCH", "/v1/vms/idle1", {"balloon": "24M"})
    assert api.ok("GET", "/v1/vms/idle1/metrics")["balloon_target"] == 8 << 20

    assert api.ok("POST", "/v1/vms/spin1/pause")["state"] == "paused"
    assert api.ok("POST", "/v1/vms/spin1/resume")["state"] == "running"
    assert api.ok("POST", "/v1/vms/idle1/reboot")["state"] == "running"

    # JSON figures: what pyhv top shows
    wait_for(lambda: api.ok("GET", "/v1/vms/spin1/metrics")["instructions"] > 0,
             what="spin1 to run")
    figures = api.ok("GET", "/v1/metrics")
    assert figures["host"]["cpus"] == 2 and figures["host"]["vms_running"] == 2
    by_name = {v["name"]: v for v in figures["vms"]}
    assert by_name["spin1"]["state"] == "running" and by_name["spin1"]["limit"] == 50

    # Prometheus: parsed with prometheus_client's own parser
    wait_for(lambda: prometheus(api)["pyhv_vm_cpu_seconds_total"][(("vm", "spin1"),)] > 0.05,
             what="CPU seconds")
    m = prometheus(api)
    spin = (("vm", "spin1"),)
    assert m["pyhv_vm_state"][(("state", "running"), ("vm", "spin1"))] == 1
    assert m["pyhv_vm_state"][(("state", "stopped"), ("vm", "spin1"))] == 0
    assert m["pyhv_vm_guest_instructions_total"][spin] > 0
    assert m["pyhv_vm_limit_percent"][spin] == 50
    assert m["pyhv_vm_memory_bytes"][(("vm", "idle1"),)] == 32 << 20
    assert m["pyhv_host_cpus"][()] == 2 and m["pyhv_host_vms_running"][()] == 2
    assert m["process_cpu_seconds_total"][()] > 0  # the daemon's own

    # stop: the idle guest powers off when asked; --force stops the machine at once
    assert api.ok("POST", "/v1/vms/idle1/stop", {"timeout": 10}) == {
        "name": "idle1", "state": "stopped", "reason": "poweroff", "exit_code": 0}
    outcome = api.ok("POST", "/v1/vms/spin1/stop", {"force": True})
    assert outcome["state"] == "stopped" and outcome["reason"] == "quit"
    assert not (api.state / "vms/spin1/run").exists()
    assert prometheus(api)["pyhv_vm_state"][(("state", "stopped"), ("vm", "spin1"))] == 1

    # undefine
    assert api.request("DELETE", "/v1/vms/idle1").status == 204
    assert api.get("/v1/vms/idle1").status == 404
    assert not (api.state / "vms/idle1").exists()

    info = api.ok("GET", "/v1/host")
    assert info["cpus"] == 2 and info["policy"] == "shares" and info["api"]["token"] is True
    assert info["pid"] == api.proc.pid and info["api"]["url"] == api.url


def test_openapi_document(api: Api) -> None:
    doc = api.ok("GET", "/openapi.json")
    assert doc["info"]["title"] == "pyhv host API" and doc["info"]["version"]
    ops = {(method.upper(), path): op for path, item in doc["paths"].items()
           for method, op in item.items()}
    assert set(ops) == {
        ("GET", "/v1/vms"), ("POST", "/v1/vms"), ("GET", "/v1/vms/{name}"),
        ("PATCH", "/v1/vms/{name}"), ("DELETE", "/v1/vms/{name}"),
        ("POST", "/v1/vms/{name}/start"), ("POST", "/v1/vms/{name}/stop"),
        ("POST", "/v1/vms/{name}/reboot"), ("POST", "/v1/vms/{name}/pause"),
        ("POST", "/v1/vms/{name}/resume"), ("GET", "/v1/metrics"),
        ("GET", "/v1/vms/{name}/metrics"), ("GET", "/metrics"), ("GET", "/v1/host"),
        ("POST", "/v1/vms/{name}/snapshot"), ("POST", "/v1/vms/restore"),
        ("POST", "/v1/vms/clone"), ("POST", "/v1/vms/incoming"),
        ("POST", "/v1/vms/{name}/migrate"),
    }
    for (method, path), op in ops.items():
        errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
        assert "401" in errors and "503" in errors, (method, path)
        if "{name}" in path:
            assert "404" in errors, (method, path)
        for code in errors:  # every error answer is {"error": ...}, as documented
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
    assert "409" in ops[("DELETE", "/v1/vms/{name}")]["responses"]
    assert "422" in ops[("POST", "/v1/vms")]["responses"]


# ------------------------------------------------------------------------ errors


def test_errors_have_the_status_of_their_cause_and_change_nothing(
        api: Api, tmp_path: Path) -> None:
    # unknown VMs
    reply = api.get("/v1/vms/nosuch")
    assert reply.status == 404 and "no VM named 'nosuch'" in reply.error
    for op in ("start", "stop", "reboot", "pause", "resume"):
        assert api.post(f"/v1/vms/nosuch/{op}").status == 404, op
    assert api.request("PATCH", "/v1/vms/nosuch", {"limit": 5}).status == 404
    assert api.request("DELETE", "/v1/vms/nosuch").status == 404
    assert api.get("/v1/vms/..%2Fetc/metrics").status == 404

    # malformed definitions: 422 naming the field, nothing created
    for doc, field, words in [
        (definition("bad", qos={"limit": "lots"}), "qos.limit", "expected a number"),
        ({**definition("bad"), "memroy": "32M"}, "memroy", "did you mean 'memory'"),
        (definition("bad", vcpus=99), "vcpus", "out of range"),
        (definition("Bad Name"), "name", "not a valid VM name"),
        (definition("bad", boot={"firmware": "none", "kernel": str(tmp_path / "nope.elf")}),
         "boot.kernel", "no such file"),
        (definition("bad", boot={"firmware": "none", "kernel": "guests/tests/idle.elf"}),
         "boot.kernel", "relative"),
        (definition("bad", memory="1T"), "memory", "out of range"),
        (definition("bad", qos={"reservation": 10**400}), "qos.reservation", "out of range"),
        (definition("bad", qos={"limit": 10**400}), "qos.limit", "out of range"),
        (definition("bad", qos={"shares": 10**400}), "qos.shares", "out of range"),
        (definition("bad", qos={"shares": 10**7}), "qos.shares", "largest share"),
    ]:
        reply = api.post("/v1/vms", doc)
        assert reply.status == 422, (doc, reply.body)
        assert reply.json()["field"] == field and words in reply.error, reply.body
    nan = b'{"name": "bad", "qos": {"reservation": NaN}}'
    reply = api.post("/v1/vms", raw=nan, headers={"Content-Type": "application/json"})
    assert reply.status == 422 and reply.json()["field"] == "qos.reservation"
    reply = api.post("/v1/vms", raw=b'{"name": ', headers={"Content-Type": "application/json"})
    assert reply.status == 400 and "malformed JSON" in reply.error
    reply = api.post("/v1/vms", [definition("bad")])
    assert reply.status == 422 and "JSON object" in reply.error
    reply = api.post("/v1/vms", raw=json.dumps(definition("bad")).encode())  # no Content-Type
    assert reply.status == 422 and "Content-Type: application/json" in reply.error
    reply = api.post("/v1/vms", raw=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert reply.status == 413
    assert api.ok("GET", "/v1/vms")["vms"] == []
    assert not list(api.state.glob("vms/*"))  # not even a leftover temporary directory

    # duplicate name
    api.ok("POST", "/v1/vms", definition("r1", qos={"reservation": 100}), status=201)
    reply = api.post("/v1/vms", definition("r1"))
    assert reply.status == 409 and "already exists" in reply.error
    assert Host(api.state).get("r1").definition.qos.reservation == 100  # untouched

    # reservations: 2 CPUs = 200%
    api.ok("POST", "/v1/vms", definition("r2", qos={"reservation": 80}), status=201)
    api.ok("POST", "/v1/vms", definition("r3", qos={"reservation": 40}), status=201)
    api.ok("POST", "/v1/vms", definition("r4", qos={"reservation": 20}), status=201)
    api.ok("POST", "/v1/vms/r1/start")
    api.ok("POST", "/v1/vms/r2/start")
    reply = api.post("/v1/vms/r3/start")
    assert reply.status == 409 and "reserve 180%" in reply.error
    assert api.ok("GET", "/v1/vms/r3")["state"] == "stopped"
    assert not (api.state / "vms/r3/run").exists()
    api.ok("POST", "/v1/vms/r4/start")  # 100 + 80 + 20: the host is fully reserved
    reply = api.request("PATCH", "/v1/vms/r2", {"reservation": 81})  # live
    assert reply.status == 409 and "does not fit" in reply.error
    assert api.ok("GET", "/v1/vms/r2")["definition"]["qos"]["reservation"] == 80
    reply = api.post("/v1/vms", definition("huge", qos={"reservation": 250}))
    assert reply.status == 422 and reply.json()["field"] == "qos.reservation"

    # running VMs: no undefine, no second start, no balloon without a balloon device
    reply = api.request("DELETE", "/v1/vms/r1")
    assert reply.status == 409 and "stop it first" in reply.error
    assert api.post("/v1/vms/r1/start").status == 409
    reply = api.request("PATCH", "/v1/vms/r1", {"balloon": "16M"})
    assert reply.status == 422 and "no balloon device" in reply.error
    reply = api.post("/v1/vms/r3/pause")
    assert reply.status == 409 and "not running" in reply.error
    for name in ("r1", "r2", "r4"):
        api.ok("POST", f"/v1/vms/{name}/stop", {"force": True})

    # a disk in use by another running VM
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    api.ok("POST", "/v1/vms", definition("d1", disk=[{"path": str(image)}]), status=201)
    api.ok("POST", "/v1/vms", definition("d2", disk=[{"path": str(image), "readonly": True}]),
           status=201)
    api.ok("POST", "/v1/vms/d1/start")
    reply = api.post("/v1/vms/d2/start")
    assert reply.status == 409 and "in use by running VM 'd1'" in reply.error
    assert api.ok("GET", "/v1/vms/d2")["state"] == "stopped"

    # bad bodies of the other endpoints
    for body, field in [({"memroy": 1}, "memroy"), ({"limit": "x"}, "qos.limit"),
                        ({"autostart": None}, "autostart"), ({"shares": 10**400}, "shares"),
                        ({"reservation": 10**400}, "reservation"),
                        ({"limit": 10**400}, "limit"), ({"shares": 10**7}, "qos.shares")]:
        reply = api.request("PATCH", "/v1/vms/d2", body)
        assert reply.status == 422 and reply.json().get("field") == field, reply.body
    assert api.request("PATCH", "/v1/vms/d2", {}).status == 422
    for body, field in [({"force": "yes"}, "force"), ({"timeout": -1}, "timeout"),
                        ({"timeout": 1e9}, "timeout"), ({"now": True}, "now")]:
        reply = api.post("/v1/vms/d1/stop", body)
        assert reply.status == 422 and reply.json()["field"] == field, reply.body
    assert api.ok("GET", "/v1/vms/d1")["state"] == "running"

    # unknown paths and methods
    reply = api.get("/v2/vms")
    assert reply.status == 404 and "no such endpoint" in reply.error
    assert api.request("PUT", "/v1/vms").status == 405
    assert api.proc.poll() is None


def test_a_command_line_with_control_characters_starts(api: Api) -> None:
    """It was accepted (201), then start answered 503 with a traceback in the body; now
    it starts, as on QEMU. A NUL is refused when the VM is defined."""
    doc = definition("ctl")
    doc["boot"]["cmdline"] = "console=ttyS0 a\x01b\x1bc caf\u00e9"
    api.ok("POST", "/v1/vms", doc, status=201)
    assert api.ok("POST", "/v1/vms/ctl/start")["state"] == "running"
    api.ok("POST", "/v1/vms/ctl/stop", {"force": True})
    doc = definition("nul")
    doc["boot"]["cmdline"] = "a\x00b"
    reply = api.post("/v1/vms", doc)
    assert reply.status == 422 and reply.json()["field"] == "boot.cmdline", reply.body


def _worker_pids(state: Path, name: str) -> list[int]:
    """VM processes (pyhv.host.worker) of VM ``name`` in this state directory."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pyhv.host.worker" in argv and str(state).encode() in argv and \
                name.encode() in argv:
            pids.append(int(proc.name))
    return pids


def test_start_racing_destroy_never_errs_or_orphans(api: Api) -> None:
    """Start and destroy of one VM sent at once: each answers as if it came first or
    second (never a 500), and no VM process outlives its VM."""
    import threading

    for i in range(10):
        name = f"race{i}"
        api.ok("POST", "/v1/vms", definition(name), status=201)
        replies: dict[str, Reply] = {}
        barrier = threading.Barrier(2)

        def send(op: str, method: str, path: str, barrier: threading.Barrier = barrier,
                 replies: dict[str, Reply] = replies) -> None:
            barrier.wait()
            replies[op] = api.request(method, path)

        threads = [threading.Thread(target=send, args=("start", "POST", f"/v1/vms/{name}/start")),
                   threading.Thread(target=send, args=("destroy", "DELETE", f"/v1/vms/{name}"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        start, destroy = replies["start"].status, replies["destroy"].status
        assert start in (200, 404), (i, replies["start"].body)
        assert destroy in (204, 409), (i, replies["destroy"].body)
        if destroy == 204:
            assert api.get(f"/v1/vms/{name}").status == 404
            wait_for(lambda n=name: not _worker_pids(api.state, n), 5, "no VM process")
        else:  # it started first: it runs until stopped, then goes
            assert start == 200
            api.ok("POST", f"/v1/vms/{name}/stop", {"force": True})
            assert api.request("DELETE", f"/v1/vms/{name}").status == 204
    assert api.proc.poll() is None


def _proc_state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def test_signals_from_outside_are_seen(api: Api) -> None:
    """A VM process stopped by someone else (SIGSTOP) is reported paused, and resume
    continues it; one continued by someone else while paused is stopped again."""
    api.ok("POST", "/v1/vms", definition("sig"), status=201)
    pid = api.ok("POST", "/v1/vms/sig/start")["pid"]
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: api.ok("GET", "/v1/vms/sig")["state"] == "paused", 10, "paused")
    api.ok("POST", "/v1/vms/sig/resume")
    wait_for(lambda: _proc_state(pid) != "T", 5, "the process to run")
    assert api.ok("GET", "/v1/vms/sig")["state"] == "running"
    api.ok("POST", "/v1/vms/sig/pause")
    wait_for(lambda: _proc_state(pid) == "T", 5, "the process to stop")
    os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _proc_state(pid) == "T", 10, "the daemon to stop it again")
    assert api.ok("GET", "/v1/vms/sig")["state"] == "paused"
    assert "continued from outside" in api.log.read_text()
    api.ok("POST", "/v1/vms/sig/stop", {"force": True})


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the daemon's UNIX socket (as ``curl --unix-socket``)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self.path = str(path)

    def connect(self) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def unix_request(path: Path, method: str, url: str, body: Any = None) -> Reply:
    conn = UnixHTTPConnection(path)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, url, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def test_the_unix_socket_serves_its_owner_without_a_token(api: Api) -> None:
    sock = api.state / "api.sock"
    assert stat_mode(sock) == 0o600
    reply = unix_request(sock, "GET", "/v1/host")
    assert reply.status == 200
    assert reply.json()["api"] == {"url": api.url, "token": True, "socket": str(sock)}
    reply = unix_request(sock, "POST", "/v1/vms", definition("u1"))
    assert reply.status == 201, reply.body
    assert api.ok("GET", "/v1/vms/u1")["state"] == "stopped"  # the same daemon, on TCP
    assert api.get("/v1/vms", auth=False).status == 401  # TCP always wants the token


AS_NOBODY = """
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(sys.argv[1])
c = C("localhost", timeout=60)
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
c.request(sys.argv[2], sys.argv[3], body=body,
          headers={"Content-Type": "application/json"} if body else {})
r = c.getresponse()
print(json.dumps([r.status, r.read().decode()]))
"""


def as_nobody(sock: Path, method: str, url: str, body: Any = None) -> tuple[int, str]:
    """An HTTP request on the API socket from user nobody (uid 65534), with the
    system's Python (pyhv's may live where nobody cannot read)."""
    def drop() -> None:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    args = ["/usr/bin/python3", "-c", AS_NOBODY, str(sock), method, url]
    if body is not None:
        args.append(json.dumps(body))
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60,
                          preexec_fn=drop, cwd="/")
    assert proc.returncode == 0, proc.stderr
    status, text = json.loads(proc.stdout)
    return status, text


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="acting as another user needs root (and /usr/bin/python3)")
def test_socket_group_members_cannot_borrow_the_daemons_rights(env: dict[str, str]) -> None:
    """The issue's attack: another local user (nobody) defines a VM whose disk is a
    root-only file. Without --socket-group nobody cannot even connect; with it, nobody
    may use only the files nobody could open: 403 for root's, 201 for its own."""
    import grp
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pyhv-group-", dir="/tmp"))
    try:
        base.chmod(0o711)
        kernel = base / "idle.elf"
        shutil.copy(IDLE, kernel)
        kernel.chmod(0o644)
        secret = base / "secret.img"
        secret.write_bytes(b"root's secret\n".ljust(65536, b"\0"))
        secret.chmod(0o600)
        mine = base / "mine.img"
        mine.write_bytes(bytes(65536))
        mine.chmod(0o600)
        os.chown(mine, 65534, 65534)

        def vm_doc(name: str, disk: Path, readonly: bool = True) -> dict[str, Any]:
            return {"name": name, "memory": "32M", "engine": "interp",
                    "boot": {"firmware": "none", "kernel": str(kernel)},
                    "disk": [{"path": str(disk), "readonly": readonly}]}

        for api in serve(base, env, "--cpus", "2", token=None):  # no group: nobody is out
            sock = api.state / "api.sock"
            with pytest.raises(AssertionError, match="Permission denied"):
                as_nobody(sock, "GET", "/v1/vms")
        (base / "daemon.log").unlink()
        group = grp.getgrgid(65534).gr_name
        for api in serve(base, env, "--cpus", "2", "--socket-group", group, token=None):
            sock = api.state / "api.sock"
            assert stat_mode(sock) == 0o660 and sock.stat().st_gid == 65534
            status, text = as_nobody(sock, "POST", "/v1/vms", vm_doc("steal", secret))
            assert status == 403 and f"user nobody may not read '{secret}'" in text, text
            assert unix_request(sock, "GET", "/v1/vms/steal").status == 404
            status, text = as_nobody(sock, "POST", "/v1/vms", vm_doc("own", mine, False))
            assert status == 201, text
            assert unix_request(sock, "POST", "/v1/vms", vm_doc("rootvm", secret)).status == 201
            status, text = as_nobody(sock, "POST", "/v1/vms/rootvm/start")
            assert status == 403 and "may not read" in text, text
            assert unix_request(sock, "GET", "/v1/vms/rootvm").json()["state"] == "stopped"
            status, text = as_nobody(sock, "POST", "/v1/vms/own/start")
            assert status == 200, text
            assert unix_request(sock, "POST", "/v1/vms/own/stop", {"force": True}).status == 200
    finally:
        shutil.rmtree(base, ignore_errors=True)


def stat_mode(path: Path) -> int:
    import stat

    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------ access


def test_a_token_is_required_on_every_request(tmp_path: Path, env: dict[str, str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    for api in serve(tmp_path, env, "--listen", "127.0.0.1:0", "--token-file", str(token_file),
                     token=TOKEN):
        for path in ("/v1/vms", "/openapi.json", "/metrics", "/nosuch"):
            reply = api.get(path, auth=False)
            assert reply.status == 401, path
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Bearer" in reply.error
        for wrong in ("Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x", "Basic " + TOKEN, TOKEN):
            assert api.get("/v1/vms", headers={"Authorization": wrong}).status == 401
        assert api.ok("GET", "/v1/vms") == {"vms": [], "errors": {}}
        assert api.ok("GET", "/v1/host")["api"]["token"] is True
        assert "Bearer" not in api.log.read_text() and TOKEN not in api.log.read_text()


def test_tcp_needs_a_token(tmp_path: Path, env: dict[str, str]) -> None:
    """Any local user can reach a TCP port, loopback included: no token, no TCP."""
    state = tmp_path / "state"
    for address in ("127.0.0.1:0", "0.0.0.0:0"):
        proc = subprocess.run(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state), "host", "serve",
             "--listen", address],
            capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines() == [
            f"pyhv: error: --listen {address}: the REST API on TCP needs a token (--token-file "
            "FILE or $PYHV_API_TOKEN): any local user can reach a TCP port; without a token, "
            "use the state directory's api.sock, which only you can open"]
        assert not (state / "daemon.sock").exists()
    # with one (from the environment) it serves, and asks for it
    for api in serve(tmp_path, env, "--listen", "0.0.0.0:0"):
        api.address = ("127.0.0.1", api.address[1])
        assert api.get("/v1/vms", auth=False).status == 401
        assert api.get("/v1/vms").status == 200


def test_listen_arguments() -> None:
    assert parse_listen("127.0.0.1:7480") == ("127.0.0.1", 7480)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("none") is None and parse_listen("off") is None
    for bad in ("7480", "localhost", "::1:80", "h:99999", "h:-1"):
        with pytest.raises(Invalid, match="expected ADDR:PORT"):
            parse_listen(bad)
    assert ApiConfig("127.0.0.1", 0, TOKEN).loopback
    assert ApiConfig("localhost", 7480, TOKEN).loopback
    for host in ("0.0.0.0", "127.0.0.1"):
        with pytest.raises(Invalid, match="needs a token"):
            ApiConfig(host, 7480)
    assert not ApiConfig("0.0.0.0", 7480, TOKEN).loopback
    with pytest.raises(Invalid, match="use at least 16"):
        ApiConfig("0.0.0.0", 7480, "short")
    with pytest.raises(Invalid, match="printable ASCII"):
        ApiConfig("127.0.0.1", 7480, "a token with spaces in it")
    assert read_token(None, {}) is None
    assert read_token(None, {"PYHV_API_TOKEN": TOKEN}) == TOKEN


def test_token_file_open_to_other_users_is_refused(tmp_path: Path) -> None:
    """As ssh with a private key: a token file others can read is refused, by name."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    for mode in (0o644, 0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(Invalid, match=rf"open to other users \(mode 0{mode:o}\): chmod 600"):
            read_token(path)
    path.chmod(0o600)
    assert read_token(path) == TOKEN
    path.chmod(0o400)
    assert read_token(path) == TOKEN


def test_a_port_in_use_stops_the_daemon_at_once(tmp_path: Path, env: dict[str, str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(tmp_path / "state"),
             "host", "serve", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, env={**env, "PYHV_API_TOKEN": TOKEN}, timeout=60,
            stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"pyhv: error: cannot serve the REST API on 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "state" / "daemon.sock").exists()


def test_tcp_only_when_asked(tmp_path: Path, env: dict[str, str]) -> None:
    """Without --listen and host.toml's api.bind, the API is on api.sock only; with
    api.bind, on TCP too; a port in use there leaves the daemon on api.sock alone (it was
    not asked for on the command line)."""
    import socket

    for api in serve(tmp_path, env, "--cpus", "2", token=None):
        assert "REST API on unix:" in api.log.read_text() and "http://" not in api.url
    (tmp_path / "daemon.log").unlink()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path / "state"
    (state / "host.toml").write_text(f'[api]\nbind = "127.0.0.1:{port}"\n')
    for api in serve(tmp_path, env, "--cpus", "2"):
        assert api.url == f"http://127.0.0.1:{port}"
        assert api.ok("GET", "/v1/vms") is not None
        # meanwhile a second daemon, same api.bind: the port is taken, it runs on api.sock
        state2 = tmp_path / "state2"
        state2.mkdir()
        (state2 / "host.toml").write_text(f'[api]\nbind = "127.0.0.1:{port}"\n')
        log2 = tmp_path / "daemon2.log"
        with open(log2, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyhv.cli.main", "--state-dir", str(state2), "host",
                 "serve"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**env, "PYHV_API_TOKEN": TOKEN})
        try:
            wait_for((state2 / "daemon.sock").exists, 30, "the second daemon")
            wait_for(lambda log=log2: "api.sock only" in log.read_text(), 10, "its log line")
            assert unix_request(state2 / "api.sock", "GET", "/v1/vms").status == 200
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0


# ------------------------------------------------------------------------ snapshots


def _echoes(api: Api, name: str, text: bytes) -> None:
    from pyhv.host.console import connect

    with connect(Host(api.state).console_path(name)) as sock:
        sock.settimeout(10)
        sock.sendall(text)
        seen = b""
        while text not in seen:
            data = sock.recv(4096)
            assert data, seen
            seen += data


def test_snapshot_restore_and_clone(api: Api, tmp_path: Path) -> None:
    api.ok("POST", "/v1/vms", definition("echo", net=[{"switch": "lan"}]), status=201)
    api.ok("POST", "/v1/vms/echo/start")
    _echoes(api, "echo", b"before")
    snap = tmp_path / "echo.snap"
    saved = api.ok("POST", "/v1/vms/echo/snapshot", {"path": str(snap)})
    assert saved["name"] == "echo" and saved["path"] == str(snap)
    assert saved["ram_bytes"] == 32 << 20 and 0 < saved["stored_bytes"] <= saved["ram_bytes"]
    assert saved["seconds"] >= 0 and snap.is_file()
    _echoes(api, "echo", b"running on")

    reply = api.post("/v1/vms/restore", {"path": str(snap), "name": "again"})
    assert reply.status == 201, reply.body
    assert reply.headers["Location"] == "/v1/vms/again"
    assert reply.json()["state"] == "running"
    _echoes(api, "again", b"after")
    assert b"IDLE-READY" not in (api.state / "vms/again/run/console.log").read_bytes()

    clones = api.ok("POST", "/v1/vms/clone", {"path": str(snap), "count": 3}, status=201)
    assert [vm["name"] for vm in clones["vms"]] == ["echo-1", "echo-2", "echo-3"]
    assert all(vm["state"] == "running" for vm in clones["vms"])
    macs = {vm["definition"]["net"][0]["mac"] for vm in clones["vms"]}
    assert len(macs) == 3
    states = {vm["name"]: vm["state"] for vm in api.ok("GET", "/v1/vms")["vms"]}
    assert states == dict.fromkeys(("again", "echo", "echo-1", "echo-2", "echo-3"),
                                   "running")

    # bad input: 4xx with one line, nothing made
    for path, body, status, words in [
        ("/v1/vms/ghost/snapshot", {"path": str(snap)}, 404, "no VM named 'ghost'"),
        ("/v1/vms/echo/snapshot", {"path": "echo.snap"}, 422, "absolute"),
        ("/v1/vms/echo/snapshot", {"path": str(tmp_path / "no/dir.snap")}, 422,
         "does not exist"),
        ("/v1/vms/echo/snapshot", {}, 422, "path"),
        ("/v1/vms/restore", {"path": str(tmp_path / "gone.snap")}, 422, "No such file"),
        ("/v1/vms/restore", {"path": str(snap), "name": "echo"}, 409, "already exists"),
        ("/v1/vms/restore", {"path": str(snap), "name": "Bad!"}, 422, "no VM name"),
        ("/v1/vms/clone", {"path": str(snap), "count": 0}, 422, "count"),
        ("/v1/vms/clone", {"path": str(snap), "count": 65}, 422, "count"),
        ("/v1/vms/clone", {"path": str(snap), "count": "2"}, 422, "count"),
        ("/v1/vms/clone", {"path": str(snap), "count": 3}, 409, "'echo-1' already exists"),
    ]:
        reply = api.post(path, body)
        assert reply.status == status and words in reply.error, (path, body, reply.body)
    api.ok("POST", "/v1/vms", definition("off"), status=201)
    reply = api.post("/v1/vms/off/snapshot", {"path": str(tmp_path / "off.snap")})
    assert reply.status == 409 and "not running" in reply.error
    assert sorted(vm["name"] for vm in api.ok("GET", "/v1/vms")["vms"]) == [
        "again", "echo", "echo-1", "echo-2", "echo-3", "off"]


# ------------------------------------------------------------------------ fuzzing


@pytest.fixture
def fuzz_api(tmp_path: Path, env: dict[str, str]) -> Iterator[Api]:
    """A daemon whose host has 32 MiB for VMs: one small idle VM ("web", the OpenAPI
    examples' name) fits, anything the fuzzer defines with the default 128 MiB does not,
    so it cannot start heavy work."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "host.toml").write_text('memory = "32M"\n')
    Host(state).create(definition("web", devices={"balloon": True}))
    yield from serve(tmp_path, env)


@pytest.fixture
def fuzz_schema(fuzz_api: Api) -> Any:
    return schemathesis.openapi.from_url(fuzz_api.url + "/openapi.json",
                                         headers={"Authorization": f"Bearer {TOKEN}"})


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_fuzz_no_server_errors(case: Any, fuzz_api: Api) -> None:
    """Whatever schemathesis sends (bodies, names, types), the answer is never a 5xx."""
    case.call_and_validate(checks=[not_a_server_error], timeout=60,
                           headers={"Authorization": f"Bearer {TOKEN}"})
