"""Small servers the user-networking tests run on the host's 127.0.0.1 (never elsewhere):
a DNS responder (RFC 1035: A records from a table, NXDOMAIN otherwise) and a TFTP
server (RFC 1350, octet mode, no options) that keeps what a client puts and gives it
back on a get, so a file put then got is a UDP echo.

Run as a script, the DNS responder serves until killed:
``python3 net_servers.py dns ADDR PORT READYFILE NAME=IPV4...`` (it creates READYFILE
once it listens).
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
from pathlib import Path


def _qname(msg: bytes, at: int) -> tuple[str, int]:
    labels = []
    while True:
        n = msg[at]
        at += 1
        if n == 0:
            return ".".join(labels), at
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(msg[at:at + n].decode("ascii", "replace"))
        at += n


def dns_answer(query: bytes, table: dict[str, str]) -> bytes | None:
    """The response to one query: the A record of a known name, an empty answer for
    another type of a known name, NXDOMAIN for an unknown one."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    try:
        name, end = _qname(query, 12)
        qtype, _qclass = struct.unpack("!HH", query[end:end + 4])
    except (ValueError, IndexError, struct.error):
        return None
    question = query[12:end + 4]
    addr = table.get(name.lower().rstrip("."))
    rcode = 0 if addr is not None else 3
    answers = b""
    if addr is not None and qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(addr)
    head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    return head + question + answers


class DnsResponder:
    """A DNS responder on UDP ``addr:port`` in a thread (port 0: any free one)."""

    def __init__(self, table: dict[str, str], addr: str = "127.0.0.1", port: int = 0) -> None:
        self.table = {k.lower(): v for k, v in table.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, port))
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            reply = dns_answer(query, self.table)
            if reply is not None:
                try:
                    self.queries.append(_qname(query, 12)[0])
                except (ValueError, IndexError):
                    pass
                self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.sock.close()


class TftpEcho:
    """A TFTP server on UDP 127.0.0.1 that stores each put file in memory and serves
    it back on a get; lock-step, one transfer at a time, on its one socket."""

    BLOCK = 512

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.port = self.sock.getsockname()[1]
        self.files: dict[str, bytes] = {}
        self.peers: set[str] = set()
        self._stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def _recv(self, forever: bool = True) -> tuple[bytes, tuple[str, int]] | None:
        """The next datagram; None once closed (or, unless ``forever``, after a second)."""
        while not self._stop:
            try:
                return self.sock.recvfrom(65536)
            except TimeoutError:
                if not forever:
                    return None
            except OSError:
                return None
        return None

    def serve(self) -> None:
        while (got := self._recv()) is not None:
            msg, peer = got
            self.peers.add(peer[0])
            op = struct.unpack("!H", msg[:2])[0] if len(msg) >= 2 else 0
            name = msg[2:].split(b"\0", 1)[0].decode("ascii", "replace")
            if op == 2:  # WRQ
                self._receive_file(name, peer)
            elif op == 1:  # RRQ
                self._send_file(name, peer)

    def _receive_file(self, name: str, peer: tuple[str, int]) -> None:
        data = bytearray()
        block = 0
        self.sock.sendto(struct.pack("!HH", 4, 0), peer)
        while (got := self._recv()) is not None:
            msg, src = got
            if src != peer or len(msg) < 4 or struct.unpack("!H", msg[:2])[0] != 3:
                continue
            n = struct.unpack("!H", msg[2:4])[0]
            if n == (block + 1) & 0xFFFF:
                block = n
                data += msg[4:]
            self.sock.sendto(struct.pack("!HH", 4, n), peer)
            if n == block and len(msg) - 4 < self.BLOCK:
                self.files[name] = bytes(data)
                return

    def _send_file(self, name: str, peer: tuple[str, int]) -> None:
        data = self.files.get(name)
        if data is None:
            self.sock.sendto(struct.pack("!HH", 5, 1) + b"not found\0", peer)
            return
        block = 1
        while True:
            chunk = data[(block - 1) * self.BLOCK:block * self.BLOCK]
            packet = struct.pack("!HH", 3, block & 0xFFFF) + chunk
            for _attempt in range(20):  # resent after a second without its ACK
                if self._stop:
                    return
                self.sock.sendto(packet, peer)
                got = self._recv(forever=False)
                if got is not None and got[1] == peer and got[0][:4] == struct.pack(
                        "!HH", 4, block & 0xFFFF):
                    break
            else:
                return
            if len(chunk) < self.BLOCK:
                return
            block += 1

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] != "dns":
        print(__doc__, file=sys.stderr)
        return 2
    table = dict(item.split("=", 1) for item in argv[4:])
    responder = DnsResponder(table, argv[1], int(argv[2]))
    Path(argv[3]).write_text(str(responder.port))
    responder.thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
