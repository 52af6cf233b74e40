"""One live trace: start a capture backend (tracer/capture), run the optional
command, stream events to the trace file, stop cleanly. Status goes to a
Status object supplied by the caller (the CLI prints it)."""

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

import pyarrow as pa

from kpath import __version__
from probes.catalog import ProbeSpec
from tracer.capture import base
from tracer.capture.base import (
    DEFAULT_BUFFER_PAGES,
    Backend,
    Status,
    attach_kinds,
    choose_backend,
    coverage,
)
from tracer.capture.errors import CaptureError, PrerequisiteError
from tracer.capture.plan import DEFAULT_ATTACH_MODE
from tracer.capture.record import SKIP_KPROBE, SKIP_PROG_ACTIVE, BlindWindow
from tracer.events import ProbeStatus
from tracer.filters import Filters
from tracer.tracefile import (
    Header,
    Lost,
    TraceWriter,
    Trailer,
    clock_offset_ns,
    describe,
    local_source,
)

# After the traced command exits, keep reading this long: its last segments
# (FIN, final ACKs) are still being processed in softirq context.
DRAIN_AFTER_EXIT_S = 0.5
LOSS_CHECK_S = 0.5
# The tracer's own scheduling priority while it reads the ring buffer.
READER_NICE = -10


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
    backend: str = "auto"  # auto | core | bcc
    vmlinux: Path | None = None  # debug vmlinux: each probe's source file:line
    kprobes: bool = True  # False: tracepoints only (CO-RE backend)
    attach_mode: str = DEFAULT_ATTACH_MODE  # function probes: kprobe | fentry | auto (CO-RE)


@dataclass
class TraceResult:
    trailer: Trailer
    attached: int
    missing: list[ProbeStatus]
    backend: str
    startup_s: float  # from run_trace's start to every probe attached


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


def make_backend(name: str, buffer_pages: int, kprobes: bool = True,
                 attach_mode: str = DEFAULT_ATTACH_MODE) -> Backend:
    """The capture backend by name (auto: core where the kernel has BTF)."""
    chosen = choose_backend(name)
    if not kprobes and chosen != "core":
        raise PrerequisiteError("--no-kprobes needs the CO-RE backend (the BCC backend "
                                "only has kprobes), and this kernel has no BTF for it")
    if name == "auto" and chosen == "bcc":
        from tracer.capture import bcc

        lacks = [c.name for c in bcc.prerequisites() if c.required and not c.ok]
        if lacks:
            raise PrerequisiteError(
                f"cannot trace on this kernel: no kernel BTF ({base.BTF_VMLINUX}) for the CO-RE "
                f"backend, and the BCC backend lacks {', '.join(lacks)} (`kpath doctor` says "
                "more; `kpath vm run` traces in the VM)")
    if chosen == "core":
        from tracer.capture.core import CoreBackend

        return CoreBackend(buffer_pages, use_kprobes=kprobes, attach_mode=attach_mode)
    from tracer.capture.bcc import BccBackend

    return BccBackend(buffer_pages)


def run_trace(req: TraceRequest, status: Status, backend: Backend | None = None) -> TraceResult:
    """Trace until the request says stop. `backend` replaces the kernel (tests)."""
    t0 = time.monotonic()
    _check_writable(req.output)  # now, not after a minute of compiling
    sources = _sources(req, status) if req.vmlinux is not None else {}
    be = backend or make_backend(req.backend, req.buffer_pages, req.kprobes, req.attach_mode)
    try:
        statuses = be.start(req.specs, req.filters, status)
        startup = time.monotonic() - t0
        for st in statuses:
            st.source = sources.get(st.name, st.source)
        attached = sum(1 for s in statuses if s.attached)
        if not attached:
            raise CaptureError("none of the requested probes can be observed on this kernel: "
                               + "; ".join(f"{s.name}: {s.reason}" for s in statuses[:5]))
        _warn_missing(statuses, status)
        status.info(
            f"attached {attached} probes in {startup:.2f} s ({be.name} backend; "
            f"{', '.join(attach_kinds(statuses))})"
            + (f"; {len(statuses) - attached} missing, listed in the trace header"
               if attached < len(statuses) else "")
        )
        for layer, cov in coverage(statuses).items():
            if cov != "full":
                status.warn(f"layer {layer}: {'partly ' if cov == 'partial' else 'not '}"
                            "observable on this kernel")
        header = _header(req, be, statuses)
        return _stream(req, be, header, statuses, status, startup)
    finally:
        be.close()


def _sources(req: TraceRequest, status: Status) -> dict[str, str]:
    """Each probe's file:line from the debug vmlinux (read before attaching:
    a bad file stops the trace before anything is attached)."""
    from probes.debuginfo import DebugInfoError, file_build_id, probe_sources, running_build_id

    assert req.vmlinux is not None
    try:
        with status.ticker(f"reading source lines from {req.vmlinux}"):
            theirs = file_build_id(req.vmlinux)
            ours = running_build_id()
            if theirs and ours and theirs != ours:
                status.warn(f"{req.vmlinux} is not the running kernel's (build-id {theirs[:12]}"
                            f" vs {ours[:12]}): no source lines recorded")
                return {}
            infos = probe_sources(req.specs, req.vmlinux)
    except DebugInfoError as exc:
        raise CaptureError(f"--vmlinux: {exc}") from None
    return {name: info.source for name, info in infos.items() if info.source}


def _warn_missing(statuses: list[ProbeStatus], status: Status) -> None:
    """Missing probes on stderr: one line each when few, else one per reason."""
    missing = [s for s in statuses if not s.attached]
    if len(missing) <= 5:
        for st in missing:
            status.warn(f"probe {st.name}: not attached ({st.reason}: {st.detail})")
        return
    by_reason: dict[str, list[ProbeStatus]] = {}
    for st in missing:
        by_reason.setdefault(st.reason or "unknown", []).append(st)
    for reason, group in by_reason.items():
        details = {st.detail for st in group}
        why = f"{reason}: {group[0].detail}" if len(details) == 1 else reason
        status.warn(f"{len(group)} probes not attached ({why}): "
                    + ", ".join(st.name for st in group))


def _header(req: TraceRequest, backend: Backend, statuses: list[ProbeStatus]) -> Header:
    uname = platform.uname()
    source = local_source()
    # The probe dictionary: each probe as this kpath's catalog describes it,
    # so that replay elsewhere reads the trace as it was recorded.
    specs = {spec.name: spec for spec in req.specs}
    return Header(
        kernel_release=uname.release,
        kernel_version=uname.version,
        hostname=socket.gethostname(),
        machine=uname.machine,
        backend=backend.name,
        buffer=backend.buffer,
        clock_offset_ns=source.clock_offset_ns,
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tool_version=__version__,
        profile=req.profile,
        probes=[describe(st, specs[st.name]) if st.name in specs else st for st in statuses],
        sources=[source],
        filters=req.filters.to_record(),
        command=req.command,
        coverage=coverage(statuses),
        attach_kinds=attach_kinds(statuses),
    )


def _raise_priority() -> None:
    # The reader must get a CPU soon after a wakeup, or the ring fills while
    # the traced workload keeps every CPU busy; it only uses CPU while there
    # are events to read. Needs CAP_SYS_NICE (root); without it the default
    # priority still works, with less headroom.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(READER_NICE, os.getpriority(os.PRIO_PROCESS, 0)))


@dataclass
class _BlindTally:
    """The blind windows of a trace so far, for the closing warning: of them,
    those opened where no kprobe program ran (under a kprobe handler alone,
    under bpf_prog_active raised by something else)."""

    windows: int = 0
    ns: int = 0
    in_handler: int = 0
    elsewhere: int = 0

    def add(self, w: BlindWindow) -> None:
        self.windows += 1
        self.ns += w.until_ns - w.since_ns
        self.in_handler += w.cause == SKIP_KPROBE
        self.elsewhere += w.cause == SKIP_PROG_ACTIVE


def _stream(
    req: TraceRequest,
    backend: Backend,
    header: Header,
    statuses: list[ProbeStatus],
    status: Status,
    startup_s: float,
) -> TraceResult:
    writer = TraceWriter(req.output, header)
    stop = _StopFlag()
    command: _Command | None = None
    start = time.monotonic()
    exited_at: float | None = None

    def sink(batch: pa.RecordBatch) -> None:
        if stop.reason == "count":
            return
        if req.count is not None and writer.events + batch.num_rows >= req.count:
            batch = batch.slice(0, req.count - writer.events)
            stop.set("count")
        writer.write_batch(batch)

    blind = _BlindTally()

    def record_losses() -> None:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for probe, n in backend.new_losses():
            writer.lost_events(Lost(ts_ns=now, count=n, probe=probe))
            status.warn(f"lost {n} events from {probe or 'the buffer or several probes'}")
        for w in backend.new_blind_windows():
            writer.lost_events(Lost(ts_ns=w.until_ns, count=0, cpu=w.cpu,
                                    since_ns=w.since_ns, blind=w.what))
            if not blind.windows:
                us = (w.until_ns - w.since_ns) / 1e3
                status.warn(f"kprobes blind on cpu {w.cpu} for {us:.1f} us: {w.what} ran "
                            "inside a kprobe program or handler, and the kernel skips kprobe "
                            "programs there (each such window is in the trace)")
            blind.add(w)

    backend.open(sink, writer.rehearse)
    last_loss_check = start
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        with _signals_stop(stop):
            if req.command:
                command = _Command(req.command)
                backend.trace_pid(command.pid)
                _raise_priority()  # after the fork: the command keeps its own
                command.release()
                status.info(f"running {' '.join(req.command)} (pid {command.pid})")
            else:
                _raise_priority()
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
            if blind.windows > 1:
                status.warn(f"kprobes blind {blind.windows} times, {blind.ns / 1e3:.1f} us in "
                            f"all ({blind.in_handler + blind.elsewhere} opened outside any "
                            f"kprobe program: {blind.in_handler} under a kprobe handler, "
                            f"{blind.elsewhere} under bpf_prog_active raised by something else)")
    finally:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if command is not None:
            command.stop()
        status.counter_done()
        reason = stop.reason or "error"
        trailer = writer.close(
            reason,
            duration_ns=int((time.monotonic() - start) * 1e9),
            command_exit=command.exit_code if command else None,
            clock_offsets_end_ns=[clock_offset_ns()],
        )
    missing = [s for s in statuses if not s.attached]
    return TraceResult(trailer, sum(1 for s in statuses if s.attached), missing,
                       backend.name, startup_s)
