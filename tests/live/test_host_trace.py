"""Live tracing on the machine running the tests, with the CO-RE backend:
no VM, no headers, no compiler. On our hosts (no kprobes) this exercises the
tracepoint path; on a kernel with kprobes, the kprobe path. The independent
oracle for the chat's bytes is the chat itself: what it sent and received.

Needs root and kernel BTF; skipped without them (and with KPATH_REQUIRE_LIVE=1,
set by scripts/test.sh, the skip is a failure)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from probes.catalog import BY_NAME, Layer
from tracer.capture.core import OBJECT, prerequisites
from tracer.tracefile import read_trace

pytestmark = pytest.mark.live
_failed = [c for c in prerequisites() if c.required and not c.ok]
needs_live = pytest.mark.skipif(bool(_failed), reason="; ".join(
    f"{c.name}: {c.detail}" for c in _failed) or "ok")
KPATH = [sys.executable, "-m", "kpath"]


def _kpath(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KPATH, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@needs_live
def test_doctor_says_what_works_and_exits_0() -> None:
    res = _kpath("doctor")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "uses: core" in res.stdout
    assert "attach kinds that work here: " in res.stdout and "tp_btf" in res.stdout
    for layer in ("syscall", "device"):
        line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith(layer))
        assert "observable" in line and "NOT" not in line


@needs_live
def test_trace_the_chat_on_this_host(tmp_path: Path) -> None:
    out = tmp_path / "chat.kpath"
    start = time.monotonic()
    res = _kpath("trace", "-o", str(out), "--", *KPATH, "demo", "chat")
    wall = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    assert wall <= 20, f"trace of the chat took {wall:.1f} s"
    assert OBJECT.is_file()
    attached = [ln for ln in res.stderr.splitlines() if "attached" in ln and " in " in ln]
    assert attached, res.stderr
    assert "client: hi" in res.stdout  # the chat itself ran and talked

    stats = _kpath("replay", "--stats", str(out))
    assert stats.returncode == 0 and "MISMATCH" not in stats.stdout, stats.stdout
    # The chat's own bytes: welcome (28) + "hi" (2) from the server, "hi" (2) +
    # "quit" (4) from the client; the accounting must close on exactly those.
    rows = [ln.split() for ln in stats.stdout.splitlines() if " -> " in ln and ln.endswith("ok")]
    totals = sorted(int(r[3]) for r in rows)
    assert totals == [6, 30], stats.stdout

    doc = json.loads(_kpath("replay", "--format", "json", str(out)).stdout)
    assert doc["trace"]["backend"] == "core"
    steps = doc["steps"]
    sends = [s for s in steps if s["kind"] == "message" and s["message"]["op"] == "send"]
    data = [s for s in steps if s["kind"] == "packet" and s["packet"]["payload"]]
    assert len(sends) == 4 and sum(s["message"]["bytes"] for s in sends) == 36
    assert len(data) >= 4
    layers = {e["layer"] for e in doc["events"]}
    assert {"syscall", "device"} <= layers
    contexts = {e["context_kind"] for e in doc["events"] if e["layer"] == "device"
                and e["direction"] == "rx"}
    assert any("NET_RX" in c for c in contexts), contexts
    # Every syscall-layer way is seen through raw_syscalls, but io_uring's
    # socket ops and splice out of a socket, which no tracepoint observes.
    assert doc["trace"]["coverage"]["syscall"] == "partial"
    missing = {p.name for p in read_trace(out).header.probes
               if not p.attached and BY_NAME[p.name].layer is Layer.SYSCALL}
    assert missing == {"io_send", "io_sendmsg", "io_send_zc", "io_sendmsg_zc", "io_recv",
                       "io_recvmsg", "sock_splice_read"}


def _serve_once(port: int, ready: threading.Event) -> None:
    with socket.create_server(("127.0.0.1", port)) as srv:
        ready.set()
        conn, _ = srv.accept()
        with conn:
            data = conn.recv(100)
            conn.sendall(data.upper())


@needs_live
def test_trace_by_port_and_duration(tmp_path: Path) -> None:
    port = 10099
    out = tmp_path / "port.kpath"
    ready_file = tmp_path / "ready"
    tracer = subprocess.Popen([*KPATH, "trace", "--port", str(port), "--duration", "3",
                               "--ready-file", str(ready_file), "-o", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not ready_file.exists():
        assert tracer.poll() is None, tracer.communicate()[1]
        assert time.monotonic() < deadline, "tracer never got ready"
        time.sleep(0.05)
    ready = threading.Event()
    server = threading.Thread(target=_serve_once, args=(port, ready))
    server.start()
    ready.wait(5)
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"hello")
        assert c.recv(100) == b"HELLO"
    server.join(5)
    _, err = tracer.communicate(timeout=30)
    assert tracer.returncode == 0, err
    assert "stopped by duration" in err
    doc = json.loads(_kpath("replay", "--format", "json", str(out)).stdout)
    flows = [f for f in doc["flows"] if f["server"] == f"127.0.0.1:{port}"]
    assert len(flows) == 1 and len(doc["flows"]) == 1
    msgs = [s["message"] for s in doc["steps"] if s["kind"] == "message"]
    assert {(m["op"], m["bytes"]) for m in msgs} >= {("send", 5), ("recv", 5)}


@needs_live
def test_bulk_transfer_balances_and_retransmissions_match_the_kernel(tmp_path: Path) -> None:
    """32 MiB over loopback, twice: every byte written is carried, read and
    copied; no task event is marked hardirq; and what replay calls a
    retransmission is what the kernel's own tcp:tcp_retransmit_skb saw (the
    oracle), never a duplicate made by the tracer."""
    from probes.catalog import PROFILES

    probes = ",".join((*PROFILES["default"], "tcp_retransmit_skb"))
    for run in range(2):
        out = tmp_path / f"bulk{run}.kpath"
        res = _kpath("trace", "--probes", probes, "-o", str(out), "--", *KPATH, "demo", "bulk",
                     "--size", "32MiB", timeout=120)
        assert res.returncode == 0, res.stderr
        assert "server read 33554432" in res.stdout
        doc = json.loads(_kpath("replay", "--format", "json", str(out)).stdout)
        assert doc["trace"]["lost"] == 0
        events = doc["events"]
        assert not [e for e in events if e["ctx"] == "hardirq"]
        kernel_retrans = [e for e in events if e["probe"] == "tcp_retransmit_skb"]
        stats = _kpath("replay", "--stats", str(out)).stdout
        row = next(ln.split() for ln in stats.splitlines()
                   if ln.strip().startswith("client -> server") and "dev_hard_start_xmit" in ln)
        written, carried, retrans, read, copied = (int(v) for v in row[3:8])
        assert written == carried == read == copied == 32 << 20, stats
        assert (retrans > 0) == bool(kernel_retrans), (retrans, len(kernel_retrans))


@needs_live
def test_every_way_of_writing_and_reading_closes_on_this_host(tmp_path: Path) -> None:
    """send, sendfile, write, sendmsg, writev and splice into one socket;
    recv, read, recvmsg and readv out of it (`kpath demo mixed --basic`,
    which prints its own totals: the oracle). On a host without kprobes every
    one of them is seen through raw_syscalls:sys_enter/sys_exit, so the bytes
    written, carried, read and copied all equal the workload's. (io_uring,
    whose requests make no system call, sendmmsg/recvmmsg, whose byte counts
    are the TCP calls' inside, and splice out of a socket need kprobes.)"""
    out = tmp_path / "mixed.kpath"
    res = _kpath("trace", "-o", str(out), "--", *KPATH, "demo", "mixed", "--basic",
                 timeout=120)
    assert res.returncode == 0, res.stderr
    wrote = next(ln for ln in res.stdout.splitlines() if ln.startswith("wrote "))
    read = next(ln for ln in res.stdout.splitlines() if ln.startswith("read "))
    total = int(wrote.split()[1])
    assert int(read.split()[1]) == total > 50000
    replay = _kpath("replay", "--format", "json", str(out))
    assert replay.returncode == 0, replay.stderr
    (flow,) = json.loads(replay.stdout)["flows"]
    sent = flow["bytes"]["client"]
    assert (sent["written"], sent["carried"], sent["read"], sent["copied"]) == (total,) * 4, sent
    assert sent["balanced"] and not sent["notes"], sent
    stats = _kpath("replay", "--stats", str(out))
    assert "MISMATCH" not in stats.stdout and "may be shifted" not in stats.stdout, stats.stdout
