"""The seeds' hello/hi chat, the built-in demo workload.

A server on 127.0.0.1:10086 sends a welcome message; the client sends "hi";
the server answers "hi"; the client sends "quit" and both close. Server and
client are separate processes named chat-server and chat-client, and use
send()/recv(), i.e. the sendto/recvfrom system calls the seeds traced.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import dataclass, field

WELCOME = b"welcome to the hello/hi chat"
HI = b"hi"
QUIT = b"quit"
DEFAULT_PORT = 10086


@dataclass
class ChatResult:
    transcript: list[str] = field(default_factory=list)
    server_exit: int = 0


def set_comm(name: str) -> None:
    # The task name is what the trace shows in its comm field.
    with contextlib.suppress(OSError), open("/proc/self/comm", "w", encoding="ascii") as fh:
        fh.write(name)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def serve_chat(listener: socket.socket) -> int:
    """The server's half: one connection, 0 when it ended with quit or EOF."""
    set_comm("chat-server")
    conn, _ = listener.accept()
    listener.close()
    with conn:
        conn.send(WELCOME)
        while True:
            msg = conn.recv(1024)
            if not msg or msg == QUIT:
                return 0
            conn.send(msg)  # echo: "hi" answers "hi"


def run_chat(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> ChatResult:
    """Run server (child process) and client (this process); return the transcript."""
    result = ChatResult()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = serve_chat(listener)
        finally:
            os._exit(code)
    listener.close()
    chat_client(host, port, result)
    _, status = os.waitpid(pid, 0)
    result.server_exit = os.waitstatus_to_exitcode(status)
    return result


def chat_client(host: str, port: int, result: ChatResult) -> None:
    """The client's half, its lines appended to result.transcript."""
    set_comm("chat-client")
    with socket.create_connection((host, port), timeout=30) as sock:
        welcome = _recv_exact(sock, len(WELCOME))
        result.transcript.append(f"server: {welcome.decode(errors='replace')}")
        sock.send(HI)
        result.transcript.append("client: hi")
        answer = _recv_exact(sock, len(HI))
        result.transcript.append(f"server: {answer.decode(errors='replace')}")
        sock.send(QUIT)
        result.transcript.append("client: quit")
    if welcome != WELCOME or answer != HI:
        raise RuntimeError(f"chat went wrong: got {welcome!r} and {answer!r}")
