"""What the daemon, its VM processes and its clients share: JSON lines, the status page,
long socket paths, errors across the control socket, the console socket."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pyhv.host import errors
from pyhv.host.console import SocketConsole, connect
from pyhv.host.control import call, error_from_dict, error_to_dict
from pyhv.host.ipc import (
    IDLE,
    NOTIFY_WAKE,
    LineBuffer,
    ProtocolError,
    StatusPage,
    encode,
    unix_address,
)


def test_line_buffer_splits_a_stream_into_messages() -> None:
    lines = LineBuffer()
    data = encode({"op": "start", "args": {"name": "web"}}) + b'{"ev": "idle"}\n\n{"ev"'
    assert lines.feed(data[:7]) == []
    assert lines.feed(data[7:]) == [{"op": "start", "args": {"name": "web"}}, {"ev": "idle"}]
    assert lines.feed(b': "wake"}\n') == [{"ev": "wake"}]
    with pytest.raises(ProtocolError):
        LineBuffer().feed(b"[1, 2]\n")
    with pytest.raises(ProtocolError):
        LineBuffer().feed(b"not json\n")


def test_status_page_is_shared_between_mappings(tmp_path: Path) -> None:
    writer = StatusPage(tmp_path / "status", create=True)
    reader = StatusPage(tmp_path / "status")
    writer.state = IDLE
    writer.instructions = 123456789
    writer.engine = "interp"
    reader.notify = NOTIFY_WAKE
    assert reader.state_name == "idle" and reader.instructions == 123456789
    assert writer.notify == NOTIFY_WAKE
    snap = reader.snapshot()
    assert snap["engine"] == "interp" and snap["state"] == "idle"
    with pytest.raises(AttributeError):
        _ = reader.no_such_field
    (tmp_path / "other").write_bytes(b"\0" * 4096)
    with pytest.raises(ValueError):
        StatusPage(tmp_path / "other")
    writer.close()
    reader.close()


def test_unix_sockets_work_at_paths_longer_than_the_limit(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "x.sock"
    assert len(str(path)) > 108
    server = socket.socket(socket.AF_UNIX)
    with unix_address(path) as address:
        server.bind(address)
    server.listen()
    client = socket.socket(socket.AF_UNIX)
    with unix_address(path) as address:
        client.connect(address)
    assert path.exists()
    client.close()
    server.close()


def test_errors_keep_their_class_and_status_across_the_socket() -> None:
    for error in (errors.NotFound("no VM named 'x'"), errors.DiskInUse("disk in use"),
                  errors.InsufficientResources("does not fit"), errors.Unavailable("busy")):
        back = error_from_dict(error_to_dict(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert back.http_status == error.http_status
    definition = error_from_dict(error_to_dict(errors.DefinitionError("qos.limit", "bad", "w")))
    assert isinstance(definition, errors.DefinitionError) and definition.field == "qos.limit"
    machine = errors.HostError("kernel is no ELF")
    machine.http_status = 422
    back = error_from_dict(error_to_dict(machine))
    assert back.http_status == 422 and str(back) == "kernel is no ELF"
    internal = error_from_dict(error_to_dict(RuntimeError("boom")))
    assert internal.http_status == 500 and "RuntimeError: boom" in str(internal)


def test_call_without_a_daemon_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(errors.Unavailable, match="no pyhv host daemon serves"):
        call(tmp_path, "ping")


class FakeUart:
    def __init__(self, space: int) -> None:
        self.space = space

    def rx_space(self) -> int:
        return self.space


def test_socket_console_serves_output_and_paces_input(tmp_path: Path) -> None:
    console = SocketConsole(tmp_path / "console.sock", log=tmp_path / "console.log")
    console.uart = FakeUart(3)  # type: ignore[assignment]
    a = connect(tmp_path / "console.sock")
    b = connect(tmp_path / "console.sock")
    try:
        deadline = time.monotonic() + 5
        while console.clients < 2 and time.monotonic() < deadline:
            console.service()
        assert console.clients == 2
        console.write(b"hello ")
        console.write(b"world")
        console.flush()
        for client in (a, b):
            client.settimeout(5)
            assert client.recv(100) == b"hello world"  # every client sees the output
        assert (tmp_path / "console.log").read_bytes() == b"hello world"
        a.sendall(b"abcdef")
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            got += console.read_input()
        assert got == b"abc"  # no more than the UART has room for...
        assert console.has_input()
        console.uart.space = 10  # type: ignore[union-attr]
        assert console.read_input() == b"def"  # ...the rest comes later, nothing lost
        assert console.bytes_in == 6 and console.bytes_out == 11
        a.close()
        deadline = time.monotonic() + 5
        while console.clients > 1 and time.monotonic() < deadline:
            console.service()
        assert console.clients == 1
    finally:
        b.close()
        console.close()
    assert not (tmp_path / "console.sock").exists()
