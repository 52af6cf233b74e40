"""Mixed-path workload: the client writes one stream through every way bytes
enter a TCP socket (send, sendfile, write, sendmsg, writev, splice), the
server reads it through every way they leave (recv, read, recvmsg, readv).

Each call's byte count is recorded in order and printed, and written to a
JSON report: the validation scenarios hold the trace against the calls the
workload itself made (vm/scenarios.py: check_mixed).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vm.chat import set_comm
from vm.proc import fork_child

DEFAULT_PORT = 10090
SENDFILE_SIZE = 50_000
# (way, bytes) in the order the client writes them.
PLAN: tuple[tuple[str, int], ...] = (
    ("send", 1000), ("sendfile", SENDFILE_SIZE), ("send", 1000), ("write", 1500),
    ("sendmsg", 1000), ("writev", 1000), ("splice", 4000), ("send", 1000),
)
READ_WAYS = ("recv", "read", "recvmsg", "readv")
READ_SIZE = 3000


@dataclass
class MixedResult:
    writes: list[tuple[str, int]] = field(default_factory=list)  # (way, bytes) per call
    reads: list[tuple[str, int]] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(n for _, n in self.writes)

    @property
    def read(self) -> int:
        return sum(n for _, n in self.reads)

    def totals(self, calls: list[tuple[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for way, n in calls:
            out[way] = out.get(way, 0) + n
        return out


def _payload(size: int, seed: int) -> bytes:
    return bytes((seed + i) % 251 for i in range(size))


def _write_one(sock: socket.socket, way: str, size: int, seed: int) -> int:
    """One call of `way`; its return value (bytes written)."""
    data = _payload(size, seed)
    fd = sock.fileno()
    if way == "send":
        return sock.send(data)
    if way == "write":
        return os.write(fd, data)
    if way == "sendmsg":
        half = size // 2
        return sock.sendmsg([data[:half], data[half:]])
    if way == "writev":
        third = size // 3
        return os.writev(fd, [data[:third], data[third:]])
    if way == "sendfile":
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.flush()
            return os.sendfile(fd, f.fileno(), 0, size)
    if way == "splice":
        r, w = os.pipe()
        try:
            os.write(w, data)  # a pipe holds 64 KiB: no blocking for these sizes
            return os.splice(r, fd, size)
        finally:
            os.close(r)
            os.close(w)
    raise ValueError(f"unknown way {way!r}")


def _read_one(conn: socket.socket, way: str) -> int:
    fd = conn.fileno()
    if way == "recv":
        return len(conn.recv(READ_SIZE))
    if way == "read":
        return len(os.read(fd, READ_SIZE))
    if way == "recvmsg":
        return len(conn.recvmsg(READ_SIZE)[0])
    buf = bytearray(READ_SIZE)
    return os.readv(fd, [memoryview(buf)[:READ_SIZE // 2], memoryview(buf)[READ_SIZE // 2:]])


def _serve(listener: socket.socket, report_fd: int) -> int:
    set_comm("mixed-server")
    conn, _ = listener.accept()
    listener.close()
    reads: list[tuple[str, int]] = []
    with conn:
        while True:
            way = READ_WAYS[len(reads) % len(READ_WAYS)]
            n = _read_one(conn, way)
            if n == 0:
                break
            reads.append((way, n))
    os.write(report_fd, json.dumps(reads).encode())
    return 0


def run_mixed(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> MixedResult:
    """Write PLAN over one loopback connection, one call per entry (a call
    that writes less is followed by calls of the same way for the rest);
    the server reads to EOF. RuntimeError if the byte counts differ."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    pid, read_fd = fork_child(lambda report_fd: _serve(listener, report_fd))
    listener.close()
    set_comm("mixed-client")
    result = MixedResult()
    with socket.create_connection((host, port), timeout=60) as sock:
        for way, size in PLAN:
            left = size
            while left:
                n = _write_one(sock, way, left, result.written)
                if n <= 0:
                    raise RuntimeError(f"{way} wrote {n}")
                result.writes.append((way, n))
                left -= n
    _, status = os.waitpid(pid, 0)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    result.reads = [(w, n) for w, n in json.loads(b"".join(chunks) or b"[]")]
    if os.waitstatus_to_exitcode(status) != 0 or result.read != result.written:
        raise RuntimeError(f"mixed transfer: wrote {result.written}, read {result.read}")
    return result


def write_report(result: MixedResult, path: Path) -> None:
    path.write_text(json.dumps(asdict(result)) + "\n")


def read_report(path: Path) -> MixedResult:
    data = json.loads(path.read_text())
    return MixedResult(writes=[(w, n) for w, n in data["writes"]],
                       reads=[(w, n) for w, n in data["reads"]])
