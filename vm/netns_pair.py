"""Two network namespaces joined by a veth pair, a TCP exchange across them.

The client lives in namespace kpath-a (10.199.0.1), the server in kpath-b
(10.199.0.2). The sender's __tcp_transmit_skb runs in one namespace and the
receiver's tcp_v4_rcv in the other: the timeline must link them. Needs root
and iproute2; made for the validation VM.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
from dataclasses import dataclass, field

from vm.chat import set_comm
from vm.proc import fork_child

NS_CLIENT, NS_SERVER = "kpath-a", "kpath-b"
DEV_CLIENT, DEV_SERVER = "kpa0", "kpb0"
ADDR_CLIENT, ADDR_SERVER = "10.199.0.1", "10.199.0.2"
PORT = 10088
MESSAGE = b"hello across namespaces"
CLONE_NEWNET = 0x40000000


@dataclass
class PairResult:
    transcript: list[str] = field(default_factory=list)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def setup() -> None:
    teardown()
    _ip("netns", "add", NS_CLIENT)
    _ip("netns", "add", NS_SERVER)
    _ip("link", "add", DEV_CLIENT, "netns", NS_CLIENT, "type", "veth",
        "peer", "name", DEV_SERVER, "netns", NS_SERVER)
    for ns, dev, addr in ((NS_CLIENT, DEV_CLIENT, ADDR_CLIENT),
                          (NS_SERVER, DEV_SERVER, ADDR_SERVER)):
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", dev, "up")


def teardown() -> None:
    for ns in (NS_CLIENT, NS_SERVER):  # deleting a namespace deletes its veth end
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", ns)


def enter_netns(name: str) -> None:
    """Move this process into a named network namespace (os.setns is 3.12+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _serve(ready_fd: int) -> int:
    set_comm("veth-server")
    enter_netns(NS_SERVER)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ADDR_SERVER, PORT))
        listener.listen(1)
        os.write(ready_fd, b"r")
        conn, _ = listener.accept()
        with conn:
            data = b""
            while len(data) < len(MESSAGE):
                chunk = conn.recv(1024)
                if not chunk:
                    return 1
                data += chunk
            conn.send(data)
    return 0


def run_pair() -> PairResult:
    result = PairResult()
    setup()
    try:
        pid, read_fd = fork_child(_serve)
        if os.read(read_fd, 1) != b"r":
            raise RuntimeError("server in namespace kpath-b did not start")
        os.close(read_fd)
        set_comm("veth-client")
        enter_netns(NS_CLIENT)
        with socket.create_connection((ADDR_SERVER, PORT), timeout=30) as sock:
            sock.send(MESSAGE)
            result.transcript.append(f"{NS_CLIENT} -> {NS_SERVER}: {MESSAGE.decode()}")
            echo = b""
            while len(echo) < len(MESSAGE):
                chunk = sock.recv(1024)
                if not chunk:
                    break
                echo += chunk
            result.transcript.append(f"{NS_SERVER} -> {NS_CLIENT}: {echo.decode()}")
        _, status = os.waitpid(pid, 0)
        if echo != MESSAGE or os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"veth exchange failed: echo {echo!r}")
    finally:
        teardown()
    return result
