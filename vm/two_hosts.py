"""Two guests joined by a virtual link: each traces its own end.

Each QEMU gets a virtio-net NIC on a socket netdev: guest A's QEMU listens
on 127.0.0.1:PORT, guest B's connects to it, and the frames go over that
TCP connection on the host's loopback (no bridge, no tap, nothing on the
host's own network). A stream, not UDP datagrams: an emulated guest drains
its socket late, and a UDP link then drops frames in bursts (measured: 77
of about 1,300 in one run), whose retransmissions add work of their own. The
guests' addresses come from the benchmarking range 198.18.0.0/15. Both
mount the same share: the server says it is listening through a file there
(`--ready`), so the client connects only once the server's trace runs.

The workload (`kpath demo peer`): the hello/hi chat (vm/chat.py), then a
1 MiB transfer (vm/bulk.py), server on B, client on A; each side lingers a
moment after its last connection closed, so the other's last segments
(FIN, ACK) reach its trace too.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vm.bulk import bulk_client, serve_bulk
from vm.cache import Layout, cache_root
from vm.chat import ChatResult, chat_client, serve_chat
from vm.errors import VmError
from vm.image import ensure_image
from vm.progress import Progress
from vm.runner import EXIT_VM_FAILED, Hang, RunOptions, run_in_vm_or_hang

NET = "198.18.0"  # RFC 2544 benchmarking range: never a real network's
PREFIX = 24
CHAT_PORT, BULK_PORT = 10096, 10097
BULK_SIZE = 1 << 20
LINGER_S = 1.5
READY_WAIT_S = 600.0
TRACE_LIMIT_S = 1200
LISTEN_WAIT_S = 300.0  # the background tracer's --duration: a bound, SIGINT ends it
# A guest kernel hang (vm/runner.py GUEST_HANG_S) ends the pair's run: both
# guests boot again and run their halves anew this many times (each guest
# script starts over: it removes its old trace first).
PAIR_HANG_RETRIES = 1


@dataclass(frozen=True)
class Guest:
    name: str  # hostname, also the trace's
    addr: str
    mac: str
    listens: bool  # its QEMU listens for the link; the other's connects


def guests() -> tuple[Guest, Guest]:
    """The client guest (A) and the server guest (B)."""
    return (Guest("kpath-a", f"{NET}.1", "52:54:00:18:00:01", True),
            Guest("kpath-b", f"{NET}.2", "52:54:00:18:00:02", False))


def nic_args(me: Guest, port: int) -> tuple[str, ...]:
    """A virtio-net NIC on QEMU's socket netdev, listening on or connecting
    to 127.0.0.1:port (no privileges)."""
    how = "listen" if me.listens else "connect"
    return ("-netdev", f"socket,id=link,{how}=127.0.0.1:{port}",
            "-device", f"virtio-net-pci,netdev=link,mac={me.mac},romfile=")


def guest_script(me: Guest, trace_argv: Sequence[str], peer_argv: Sequence[str]) -> str:
    """The guest's shell line: name the host, bring the NIC up with its
    address, then trace its end of the workload.

    The whole host is traced (no filter: the guest runs nothing else), not
    the workload's command: the server's kernel answers the SYN before the
    server process learns of the connection (accept), so a trace following
    the command would miss the handshake. The tracer runs in the background
    until the workload is done, then is stopped with SIGTERM (its trailer
    says so). One TCP segment per skb on both sides (GSO of one segment at
    most, no GRO merging): what one host's device sends is what the other's
    receives, segment for segment."""
    q = shlex.quote
    ready = f"/tmp/kpath-traced-{me.name}"
    return "; ".join([
        f"echo {q(me.name)} > /proc/sys/kernel/hostname",
        "modprobe virtio_net 2>/dev/null",
        # The one NIC: whatever the kernel named it.
        "dev=$(ls /sys/class/net | grep -v '^lo$' | head -n1)",
        'test -n "$dev" || { echo "no NIC in the guest"; exit 1; }',
        f'ip addr add {me.addr}/{PREFIX} dev "$dev"',
        'ip link set "$dev" gso_max_segs 1 gro_max_size 1500 up',
        f"{shlex.join(trace_argv)} --duration {TRACE_LIMIT_S} --ready-file {ready} & tracer=$!",
        f"n=0; while [ ! -f {ready} ] && [ $n -lt 3000 ]; do sleep 0.2; n=$((n+1)); done",
        f"{shlex.join(peer_argv)}; rc=$?",
        # SIGTERM: a background job of a script ignores SIGINT.
        'kill -TERM "$tracer"; wait "$tracer"',
        'exit "$rc"',
    ])


# ---- the workload, one side per guest (`kpath demo peer`) ----


def _listen(addr: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    return s


def run_server(addr: str, ready: Path, size: int = BULK_SIZE) -> list[str]:
    """Listen for the chat and the transfer, say so in `ready`, serve both."""
    chat, bulk = _listen(addr, CHAT_PORT), _listen(addr, BULK_PORT)
    ready.write_text(f"{addr}\n")
    try:
        if serve_chat(chat) != 0:
            raise RuntimeError("the chat ended without quit")
        got = serve_bulk(bulk)
    finally:
        ready.unlink(missing_ok=True)
    if got != size:
        raise RuntimeError(f"bulk transfer: read {got} bytes, expected {size}")
    time.sleep(LINGER_S)
    return [f"served the chat and read {got} bytes"]


def run_client(addr: str, ready: Path, size: int = BULK_SIZE) -> list[str]:
    """Wait for the server's `ready`, then chat and send `size` bytes to it."""
    deadline = time.monotonic() + READY_WAIT_S
    while not ready.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server never said it listens ({ready})")
        time.sleep(0.2)
    result = ChatResult()
    chat_client(addr, CHAT_PORT, result)
    sent, sends = bulk_client(addr, BULK_PORT, size, until_closed=True)
    time.sleep(LINGER_S)
    return [*result.transcript, f"sent {sent} bytes in {sends} send() calls"]


# ---- the rig: two VMs at once ----


def listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:port (read from
    /proc/net/tcp: a probe connection would take the one QEMU accepts)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(f[1] == want and f[3] == "0A" for f in (ln.split() for ln in lines) if len(f) > 3)


def run_two_guests(commands: tuple[tuple[str, ...], tuple[str, ...]], share: Path,
                   port: int, timeout: float, cache: Path | None, kernel: str,
                   progress: Progress) -> tuple[int, int]:
    """Boot both guests with their NICs linked, run each one's command;
    their exit codes (A, B). A's QEMU listens for the link: B's starts once
    it does. If a guest's kernel hangs, the pair runs again (PAIR_HANG_RETRIES)."""
    # Built (or found up to date) once, before either boots.
    ensure_image(Layout(cache_root(cache), kernel), progress)
    for attempt in range(PAIR_HANG_RETRIES + 1):
        codes = _run_pair(commands, share, port, timeout, cache, kernel, progress)
        hung = [name for name, code in zip("AB", codes, strict=True) if isinstance(code, str)]
        if not hung:
            break
        again = attempt < PAIR_HANG_RETRIES
        progress.say(f"vm run: guest {' and '.join(hung)} hung"
                     f"{'; booting both again to run the pair anew' if again else ''}")
    a, b = (EXIT_VM_FAILED if isinstance(code, str) else code for code in codes)
    return a, b


def _run_pair(commands: tuple[tuple[str, ...], tuple[str, ...]], share: Path,
              port: int, timeout: float, cache: Path | None, kernel: str,
              progress: Progress) -> tuple[int | Hang, int | Hang]:
    a, b = guests()
    nics = (nic_args(a, port), nic_args(b, port))
    codes: list[int | Hang] = [-1, -1]
    errors: list[BaseException] = []

    # Two vCPUs each, as the one-guest scenarios: on one, the NIC's softirq
    # often runs while a BPF program is active on that CPU, and the kernel
    # skips the probes it hits there (6.1 does not count such misses).
    def boot(i: int) -> None:
        try:
            opts = RunOptions(command=commands[i], share=share, timeout=timeout, cache=cache,
                              kernel=kernel, nic=nics[i], memory_mb=1024, cpus=2)
            codes[i] = run_in_vm_or_hang(opts, progress)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(i,), name=f"guest-{i}") for i in (0, 1)]
    threads[0].start()
    deadline = time.monotonic() + LISTEN_WAIT_S
    while not listening(port) and threads[0].is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    linked = listening(port)
    if linked:
        threads[1].start()
    for t in threads:
        if t.ident is not None:
            t.join()
    if not linked:
        raise VmError(f"guest A's QEMU never listened on 127.0.0.1:{port} for the link")
    if errors:
        if isinstance(errors[0], VmError):
            raise errors[0]
        raise VmError(f"two-host run failed: {errors[0]}")
    return codes[0], codes[1]
