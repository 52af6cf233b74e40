"""Mixed-path workload: the client writes one stream through every way bytes
enter a TCP socket (send, sendfile, write, sendmsg, writev, splice,
sendmmsg, io_uring's IORING_OP_SEND), the server reads it through every way
they leave (recv, read, recvmsg, readv, recvmmsg, io_uring's IORING_OP_RECV,
splice into a pipe).

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
from vm.mmsg import recvmmsg, sendmmsg
from vm.proc import fork_child
from vm.uring import Ring

DEFAULT_PORT = 10090
SENDFILE_SIZE = 50_000
# (way, bytes) in the order the client writes them.
PLAN: tuple[tuple[str, int], ...] = (
    ("send", 1000), ("sendfile", SENDFILE_SIZE), ("send", 1000), ("write", 1500),
    ("sendmsg", 1000), ("writev", 1000), ("splice", 4000), ("sendmmsg", 2000),
    ("io_uring send", 1500), ("send", 1000),
)
# Ways are named as the trace names them (catalog: ProbeSpec.way), but for
# write/writev and read/readv, which one probe sees.
READ_WAYS = ("recv", "read", "recvmsg", "readv", "recvmmsg", "io_uring recv", "splice")
# The ways a host without kprobes sees whole through raw_syscalls: not
# io_uring (no system call per request), not sendmmsg/recvmmsg (their
# return counts messages; the bytes are the TCP calls' inside, unseen
# there), not splice out of a socket (seen at sock_splice_read only).
BASIC_WRITE_WAYS = frozenset({"send", "sendfile", "write", "sendmsg", "writev", "splice"})
BASIC_READ_WAYS = frozenset({"recv", "read", "recvmsg", "readv"})
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


def _write_one(sock: socket.socket, way: str, size: int, seed: int, ring: Ring) -> int:
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
    if way == "sendmmsg":
        half = size // 2
        return sendmmsg(fd, [data[:half], data[half:]])
    if way == "io_uring send":
        return ring.send(fd, data)
    raise ValueError(f"unknown way {way!r}")


def _read_one(conn: socket.socket, way: str, ring: Ring) -> int:
    fd = conn.fileno()
    if way == "recv":
        return len(conn.recv(READ_SIZE))
    if way == "read":
        return len(os.read(fd, READ_SIZE))
    if way == "recvmsg":
        return len(conn.recvmsg(READ_SIZE)[0])
    if way == "recvmmsg":
        return recvmmsg(fd, [READ_SIZE // 2, READ_SIZE // 2])
    if way == "io_uring recv":
        return ring.recv(fd, READ_SIZE)
    if way == "splice":
        r, w = os.pipe()
        try:
            n = os.splice(fd, w, READ_SIZE)  # socket -> pipe (64 KiB: no blocking)
            if n and len(os.read(r, n)) != n:
                raise RuntimeError("splice: the pipe holds fewer bytes than spliced")
            return n
        finally:
            os.close(r)
            os.close(w)
    buf = bytearray(READ_SIZE)
    return os.readv(fd, [memoryview(buf)[:READ_SIZE // 2], memoryview(buf)[READ_SIZE // 2:]])


def _serve(listener: socket.socket, report_fd: int, basic: bool) -> int:
    set_comm("mixed-server")
    conn, _ = listener.accept()
    listener.close()
    reads: list[tuple[str, int]] = []
    ring = Ring()
    ways = [w for w in READ_WAYS if not basic or w in BASIC_READ_WAYS]
    with conn:
        while True:
            way = ways[len(reads) % len(ways)]
            n = _read_one(conn, way, ring)
            if n < 0:
                raise OSError(-n, f"{way}: {os.strerror(-n)}")
            if n == 0:
                break
            reads.append((way, n))
    ring.close()
    os.write(report_fd, json.dumps(reads).encode())
    return 0


def run_mixed(port: int = DEFAULT_PORT, host: str = "127.0.0.1", basic: bool = False
              ) -> MixedResult:
    """Write PLAN over one loopback connection, one call per entry (a call
    that writes less is followed by calls of the same way for the rest);
    the server reads to EOF. `basic`: the BASIC ways only. RuntimeError if the
    byte counts differ."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    pid, read_fd = fork_child(lambda report_fd: _serve(listener, report_fd, basic))
    listener.close()
    set_comm("mixed-client")
    result = MixedResult()
    ring = Ring()
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.setblocking(True)  # a timeout makes the socket non-blocking for io_uring
        for way, size in PLAN:
            if basic and way not in BASIC_WRITE_WAYS:
                continue
            left = size
            while left:
                n = _write_one(sock, way, left, result.written, ring)
                if n <= 0:
                    raise RuntimeError(f"{way} wrote {n}")
                result.writes.append((way, n))
                left -= n
    ring.close()
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
