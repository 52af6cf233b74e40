"""The narrow interface between a trace session and a capture backend.

A backend turns kernel activity into Arrow batches of events (in
tracer.events.EVENT_SCHEMA, the probe column indexing the statuses start()
returned, in order) and nothing else: the
session (tracer/session.py) drives any backend through this interface, and
tracer/capture/replay.py is a double that plays a recorded trace through
it, so the streaming loop is tested without a kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from probes.catalog import LAYER_ORDER, Capture, ProbeSpec, Returns
from tracer.capture.record import BlindWindow
from tracer.events import ProbeStatus
from tracer.filters import Filters

BACKENDS = ("auto", "core", "bcc")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
# perf_event_open's kprobe PMU: present exactly when the kernel can do kprobes.
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
# 32 MiB: 262,144 records. 8 MiB held two 32 MiB loopback transfers' worth
# of events, but request/response in the VM lost whole round trips with it
# in 4 of 5 runs (a reader stalled for a second or more under TCG), none in
# 5 runs with 32 MiB, at no cost in throughput (bench/README.md, "rr
# losses"). Perf buffers (kernels before 5.8) take this many pages per CPU.
DEFAULT_BUFFER_PAGES = 8192
PAGE = 4096
# The BPF programs wake the reader once about this fraction of the ring is
# unread, not on every record (the kernel's default when the reader has
# caught up): the reader also polls on a timer, so a trickle is still read
# and a burst wakes it early, and each wakeup hands over a big span.
WAKEUP_FRACTION = 4
# The BPF C of each backend (`kpath trace --ebpf`).
BPF_SOURCES = {"core": Path(__file__).with_name("kpath.bpf.c"),
               "bcc": Path(__file__).with_name("kpath_bcc.c")}


class Status(Protocol):
    """Where a session reports progress (the CLI prints it)."""

    def info(self, msg: str) -> None: ...
    def warn(self, msg: str) -> None: ...
    def ticker(self, label: str) -> contextlib.AbstractContextManager[None]: ...
    def counter(self, events: int, lost: int, elapsed_s: float) -> None: ...
    def counter_done(self) -> None: ...


@dataclass(frozen=True)
class Check:
    """One prerequisite of a backend, as `kpath doctor` prints it."""

    name: str
    ok: bool
    detail: str  # why not (or what it means) when not ok; empty when ok
    required: bool = True  # False: a missing feature narrows, but does not stop, tracing


class Backend(Protocol):
    name: str  # "core" | "bcc": recorded in the trace header
    buffer: str  # "ringbuf" | "perfbuf"

    def start(self, specs: Sequence[ProbeSpec], filters: Filters,
              status: Status) -> list[ProbeStatus]:
        """Load, configure and attach; every requested probe comes back
        attached (with how) or missing (with why), in the order of `specs`:
        that list is the trace's probe dictionary."""
        ...

    def trace_pid(self, pid: int) -> None: ...
    def open(self, sink: Callable[[pa.RecordBatch], None],
             rehearse: Callable[[pa.RecordBatch], None] | None = None) -> None:
        """From now on hand every event over to `sink`, a batch at a time;
        first, where events are read in spans, a made-up span's batch to
        `rehearse` (the writer's dry run: its first large batch's set-up
        paid before the traced command starts)."""
        ...
    def poll(self, timeout_ms: int) -> None:
        """Wait up to timeout_ms for events; deliver all there are."""
        ...
    def drain(self) -> None:
        """Deliver what is left (the end of a trace)."""
        ...
    def new_losses(self) -> list[tuple[str | None, int]]:
        """Events lost since the last call, by probe name (None: unknown)."""
        ...
    def new_blind_windows(self) -> list[BlindWindow]:
        """Blind windows (record.py) read since the last call."""
        ...
    def close(self) -> None: ...


# The lost_by_ip key (kp_event.h KP_BLIND_IP) of blind-window records the
# buffer could not take, and the name their losses are stored under.
BLIND_IP = 0xFFFFFFFE
BLIND_LOST = "(blind window)"
# The per-CPU variable the blind-window watch reads (beside current_kprobe,
# which a kernel with kprobes and data symbols in kallsyms has as well).
WATCH_SYMBOL = "bpf_prog_active"


def no_watch_warning(seen: str) -> str:
    """The warning where kallsyms lacks the watch's variables; `seen`: what
    blind windows the backend still sees."""
    return (f"/proc/kallsyms has no {WATCH_SYMBOL} (data symbols need CONFIG_KALLSYMS_ALL): "
            f"kpath cannot read where the kernel skips kprobe programs, so it sees {seen}; "
            "events skipped elsewhere are neither in the trace nor counted")


# bpf_link_info reports a kprobe's misses from this kernel on: before it, a
# probe skipped because another BPF program ran on its CPU (a softirq nested
# in a program) is dropped without a count.
KPROBE_MISSED_SINCE = (6, 7)


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a `uname -r` string; (0, 0) when it cannot be read."""
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def kprobe_misses_counted(release: str) -> bool:
    """Whether a kernel of this `uname -r` reports its kprobes' misses."""
    return kernel_version(release) >= KPROBE_MISSED_SINCE


def capture_fn(capture: Capture) -> str:
    """The BPF routine (kprobe program) of a capture kind: the same name in
    kpath.bpf.c and kpath_bcc.c."""
    return "kp_" + capture.value


def return_fn(ret: Returns) -> str | None:
    """The kretprobe program for what a probe's return reports (None: no
    return probe); the same name in kpath.bpf.c and kpath_bcc.c."""
    return {Returns.VALUE: "kp_return", Returns.COUNT: "kp_return",
            Returns.SOCK: "kp_return_sock"}.get(ret)


def copy_fn(kprobe_fn: str, copy: int) -> str:
    """The copy-th fentry (or, for a return routine, fexit) program of a
    kprobe routine in kpath.bpf.c: kp_sock -> fe_sock_3, kp_return -> fx_return_0."""
    prefix = "fx_" if kprobe_fn.startswith("kp_return") else "fe_"
    return f"{prefix}{kprobe_fn.removeprefix('kp_')}_{copy}"


def choose_backend(requested: str, btf: Path | None = None) -> str:
    """auto: the CO-RE object where the kernel has BTF, else BCC."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r} (one of {', '.join(BACKENDS)})")
    if requested != "auto":
        return requested
    return "core" if (btf or BTF_VMLINUX).exists() else "bcc"


def first_failure(checks: Sequence[Check]) -> Check | None:
    return next((c for c in checks if c.required and not c.ok), None)


def coverage(statuses: Sequence[ProbeStatus]) -> dict[str, str]:
    """Per layer, of the probes requested there: full, partial or none."""
    out: dict[str, str] = {}
    for layer in LAYER_ORDER:
        here = [s for s in statuses if s.layer == str(layer)]
        if here:
            n = sum(s.attached for s in here)
            out[str(layer)] = "full" if n == len(here) else "none" if n == 0 else "partial"
    return out


def attach_kinds(statuses: Sequence[ProbeStatus]) -> list[str]:
    kinds = {a.split(":", 1)[0] for s in statuses for a in s.attach}
    return sorted(kinds)
