"""Bulk transfer workload: the client writes N bytes, the server reads to EOF.

Used by the byte-accounting scenario: every byte written must be carried by
data segments and read back, exactly once.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from vm.chat import set_comm
from vm.proc import fork_child

DEFAULT_PORT = 10087
DEFAULT_SIZE = 1 << 20
CHUNK = 64 * 1024


@dataclass
class BulkResult:
    sent: int
    received: int
    sends: int


def _serve(listener: socket.socket, expect: int, report_fd: int) -> int:
    total = serve_bulk(listener)
    os.write(report_fd, str(total).encode())
    return 0 if total == expect else 1


def serve_bulk(listener: socket.socket) -> int:
    """The server's half: one connection read to EOF; the bytes read."""
    set_comm("bulk-server")
    conn, _ = listener.accept()
    listener.close()
    total = 0
    with conn:
        while True:
            chunk = conn.recv(CHUNK)
            if not chunk:
                break
            total += len(chunk)
    return total


def run_bulk(size: int = DEFAULT_SIZE, port: int = DEFAULT_PORT,
             host: str = "127.0.0.1") -> BulkResult:
    """Send `size` bytes over one TCP connection on loopback; check they arrive."""
    if size <= 0:
        raise ValueError("size must be positive")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    pid, read_fd = fork_child(lambda report_fd: _serve(listener, size, report_fd))
    listener.close()
    sent, sends = bulk_client(host, port, size)
    _, status = os.waitpid(pid, 0)
    received = int(os.read(read_fd, 64) or b"0")
    os.close(read_fd)
    if os.waitstatus_to_exitcode(status) != 0 or received != size:
        raise RuntimeError(f"bulk transfer lost bytes: sent {sent}, received {received}")
    return BulkResult(sent=sent, received=received, sends=sends)


def bulk_client(host: str, port: int, size: int,
                until_closed: bool = False) -> tuple[int, int]:
    """The client's half: `size` bytes written; (bytes sent, send calls).

    until_closed: return only once the server has closed its end. send()
    returns as soon as the data is in the socket's buffer: a tracer stopped
    then misses the connection's tail (the last segments, the peer's ACKs
    and FIN). The server closes after reading to EOF, so its FIN follows
    every ACK it sent for the data."""
    set_comm("bulk-client")
    payload = bytes(range(256)) * (CHUNK // 256)
    sent = sends = 0
    with socket.create_connection((host, port), timeout=60) as sock:
        while sent < size:
            # send(), not sendall(): each call is one traced __sys_sendto.
            n = sock.send(payload[: min(CHUNK, size - sent)])
            sent += n
            sends += 1
        if until_closed:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(CHUNK):
                pass
    return sent, sends
