"""One live trace: resolve probes, load the backend, run the optional command,
stream events to the trace file, stop cleanly. Status goes to a Status
object supplied by the caller (the CLI prints it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from kpath import __version__
from probes.catalog import ProbeSpec
from probes.resolve import KernelSymbols, Resolved, resolve
from tracer.bcc_backend import DEFAULT_BUFFER_PAGES, BccBackend, KernelFeatures
from tracer.events import Event
from tracer.filters import Filters
from tracer.tracefile import Header, Lost, ProbeStatus, TraceWriter, Trailer

# After the traced command exits, keep reading this long: its last segments
# (FIN, final ACKs) are still being processed in softirq context.
DRAIN_AFTER_EXIT_S = 0.5
LOSS_CHECK_S = 0.5


class Status(Protocol):
    def info(self, msg: str) -> None: ...
    def warn(self, msg: str) -> None: ...
    def ticker(self, label: str) -> contextlib.AbstractContextManager[None]: ...
    def counter(self, events: int, lost: int, elapsed_s: float) -> None: ...
    def counter_done(self) -> None: ...


@dataclass
class TraceRequest:
    output: Path
    filters: Filters
    profile: str
    specs: Sequence[ProbeSpec]
    duration_s: float | None = None
    count: int | None = None
    command: list[str] | None = None
    buffer_pages: int = DEFAULT_BUFFER_PAGES
    ready_file: Path | None = None  # written once every probe is attached


@dataclass
class TraceResult:
    trailer: Trailer
    attached: int
    missing: list[ProbeStatus]


def probe_statuses(
    resolved: Sequence[Resolved], failed: dict[str, str]
) -> list[ProbeStatus]:
    out: list[ProbeStatus] = []
    for res in resolved:
        spec = res.spec
        st = ProbeStatus(spec.name, str(spec.layer), str(spec.direction), attached=False)
        if res.ok and spec.name not in failed:
            st.attached = True
            st.kinds = ["entry", "return"] if spec.has_return else ["entry"]
            st.symbol = res.symbol
        elif res.ok:
            st.symbol, st.reason, st.detail = res.symbol, "failed", failed[spec.name]
        else:
            st.reason, st.detail = res.reason, res.detail
        out.append(st)
    return out


class _StopFlag:
    def __init__(self) -> None:
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


@contextlib.contextmanager
def _signals_stop(flag: _StopFlag) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        flag.set("signal " + signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Command:
    """The traced command, held at a gate until its pid is in the BPF map."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.exit_code: int | None = None
        read_fd, self._gate = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(self._gate)
            os.read(read_fd, 1)
            os.close(read_fd)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(s, signal.SIG_DFL)
            try:
                os.execvp(argv[0], argv)
            except OSError as exc:
                os.write(2, f"kpath: cannot run {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127)
        os.close(read_fd)
        self.pid = pid

    def release(self) -> None:
        os.write(self._gate, b"g")
        os.close(self._gate)

    def poll(self) -> bool:
        """True once the command has exited (exit code recorded)."""
        if self.exit_code is not None:
            return True
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.exit_code = os.waitstatus_to_exitcode(status)
        return True

    def stop(self) -> None:
        if self.poll():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if self.poll():
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.exit_code = -signal.SIGKILL


def _check_writable(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OSError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OSError(f"cannot write {path}: permission denied")


def run_trace(req: TraceRequest, status: Status) -> TraceResult:
    _check_writable(req.output)  # now, not after a minute of compiling
    features = KernelFeatures.detect()
    # Checks what the kernel and machine can do before anything is reported.
    backend = BccBackend(features, req.buffer_pages)
    syms = KernelSymbols.load()
    resolved = resolve(req.specs, syms)
    for res in resolved:
        if not res.ok:
            status.warn(f"probe {res.spec.name}: not attached ({res.reason}: {res.detail})")
    if not any(r.ok for r in resolved):
        raise RuntimeError("none of the requested probes exists on this kernel")
    try:
        with status.ticker("compiling the BPF program (BCC; about a minute under TCG)"):
            backend.compile()
        backend.configure(req.filters)
        with status.ticker("attaching probes"):
            failed = {res.spec.name: why for res, why in backend.attach(resolved)}
        for name, why in failed.items():
            status.warn(f"probe {name}: attach failed: {why}")
        statuses = probe_statuses(resolved, failed)
        attached = sum(1 for s in statuses if s.attached)
        status.info(
            f"attached {attached} of {len(statuses)} probes"
            + (f" ({len(statuses) - attached} missing, listed in the trace header)"
               if attached < len(statuses) else "")
        )
        header = _header(req, features, statuses)
        return _stream(req, backend, header, statuses, status)
    finally:
        backend.close()


def _header(req: TraceRequest, features: KernelFeatures, statuses: list[ProbeStatus]) -> Header:
    uname = platform.uname()
    return Header(
        kernel_release=uname.release,
        kernel_version=uname.version,
        hostname=socket.gethostname(),
        machine=uname.machine,
        backend="bcc",
        buffer="ringbuf" if features.ringbuf else "perfbuf",
        clock_offset_ns=time.clock_gettime_ns(time.CLOCK_REALTIME)
        - time.clock_gettime_ns(time.CLOCK_MONOTONIC),
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        profile=req.profile,
        probes=statuses,
        filters=req.filters.to_record(),
        command=req.command,
    )


def _stream(
    req: TraceRequest,
    backend: BccBackend,
    header: Header,
    statuses: list[ProbeStatus],
    status: Status,
) -> TraceResult:
    writer = TraceWriter(req.output, header)
    stop = _StopFlag()
    command: _Command | None = None
    start = time.monotonic()
    exited_at: float | None = None

    def sink(ev: Event) -> None:
        writer.event(ev)
        if req.count is not None and writer.events >= req.count:
            stop.set("count")

    def record_losses() -> None:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for probe, n in backend.new_losses():
            writer.lost_events(Lost(ts_ns=now, count=n, probe=probe))
            status.warn(f"lost {n} events from {probe or 'the buffer'}")

    backend.open(sink)
    last_loss_check = start
    try:
        with _signals_stop(stop):
            if req.command:
                command = _Command(req.command)
                backend.trace_pid(command.pid)
                command.release()
                status.info(f"running {' '.join(req.command)} (pid {command.pid})")
            else:
                status.info("tracing; Ctrl-C to stop")
            if req.ready_file is not None:
                # Scripts wait on this file rather than on a sleep.
                req.ready_file.write_text(f"{os.getpid()}\n")
            while stop.reason is None:
                backend.poll(100)
                writer.flush()
                now = time.monotonic()
                if now - last_loss_check >= LOSS_CHECK_S:
                    record_losses()
                    last_loss_check = now
                status.counter(writer.events, writer.lost, now - start)
                if req.duration_s is not None and now - start >= req.duration_s:
                    stop.set("duration")
                if command is not None and exited_at is None and command.poll():
                    exited_at = now
                if exited_at is not None and now - exited_at >= DRAIN_AFTER_EXIT_S:
                    stop.set("command-exited")
            backend.drain()
            record_losses()
    finally:
        if command is not None:
            command.stop()
        status.counter_done()
        reason = stop.reason or "error"
        trailer = writer.close(
            reason,
            duration_ns=int((time.monotonic() - start) * 1e9),
            command_exit=command.exit_code if command else None,
        )
    missing = [s for s in statuses if not s.attached]
    return TraceResult(trailer, sum(1 for s in statuses if s.attached), missing)
