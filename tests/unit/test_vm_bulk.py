"""The bulk workload's client: with until_closed it returns only after the
server read everything and closed its end (a tracer stopped after the
client then holds the connection's tail). Real sockets on loopback."""

from __future__ import annotations

import socket
import threading
import time

from vm.bulk import bulk_client

SIZE = 3 << 20


def _server(listener: socket.socket, hold_s: float, log: list[tuple[str, float, int]]) -> None:
    conn, _ = listener.accept()
    total = 0
    with conn:
        while chunk := conn.recv(65536):
            total += len(chunk)
        time.sleep(hold_s)  # read to EOF, closes only later
        log.append(("server closed", time.monotonic(), total))


def _run(until_closed: bool, hold_s: float) -> tuple[list[tuple[str, float, int]], float]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    log: list[tuple[str, float, int]] = []
    t = threading.Thread(target=_server, args=(listener, hold_s, log))
    t.start()
    try:
        sent, _ = bulk_client("127.0.0.1", listener.getsockname()[1], SIZE,
                              until_closed=until_closed)
        returned = time.monotonic()
    finally:
        t.join(10)
        listener.close()
    assert sent == SIZE
    return log, returned


def test_until_closed_returns_after_the_server_read_all_and_closed() -> None:
    log, returned = _run(True, 0.3)
    [(_, closed, total)] = log
    assert total == SIZE
    assert returned >= closed


def test_without_it_the_client_returns_before_the_server_closes() -> None:
    log, returned = _run(False, 0.3)
    [(_, closed, total)] = log
    assert total == SIZE
    assert returned < closed
