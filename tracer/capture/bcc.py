"""BCC backend: compile kpath_bcc.c at run time against the kernel's
headers, attach kprobes, turn ring-buffer records into Arrow batches. For
kernels without BTF (where the CO-RE object cannot relocate). Kernel in,
events out; it never formats.

BCC is imported lazily (Debian's python3-bpfcc) so that replay and export
work on machines without it.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from probes.catalog import ProbeSpec
from probes.resolve import KernelSymbols, Resolved, resolve
from tracer.capture.base import (
    BLIND_IP,
    BLIND_LOST,
    DEFAULT_BUFFER_PAGES,
    KPROBE_PMU,
    PAGE,
    WAKEUP_FRACTION,
    WATCH_SYMBOL,
    Check,
    Status,
    capture_fn,
    first_failure,
    kernel_version,
    no_watch_warning,
    return_fn,
)
from tracer.capture.drain import RingDrain
from tracer.capture.errors import LoadError, PrerequisiteError
from tracer.capture.frames import frame_fn, frame_probes
from tracer.capture.record import (
    FRAME_OFFSETS,
    RAW_DTYPE,
    RAW_EVENT_SIZE,
    RAW_FRAME_SIZE,
    BlindWindow,
    ProbeTable,
    check_layout,
    decode_records,
)
from tracer.capture.ringbuf import record_stride
from tracer.events import ProbeStatus
from tracer.filters import Filters

BPF_SOURCE = Path(__file__).with_name("kpath_bcc.c")


@dataclass(frozen=True)
class KernelFeatures:
    release: str
    ringbuf: bool  # BPF ring buffer: 5.8+
    func_ip: bool  # bpf_get_func_ip for kprobes: 5.15+

    @classmethod
    def detect(cls, release: str | None = None) -> KernelFeatures:
        rel = release or platform.release()
        major, minor = kernel_version(rel)
        return cls(rel, (major, minor) >= (5, 8), (major, minor) >= (5, 15))


# The address a kprobe program reports may sit a few bytes past the
# function's symbol (after an endbr64 or at the ftrace call site).
ADDRESS_SLACK = 16


def probe_table(resolved: Sequence[Resolved], statuses: Sequence[ProbeStatus]) -> ProbeTable:
    """The trace's probe dictionary (statuses, in order) keyed by the
    addresses of the attached probes' functions."""
    keyed = [(r.address, i) for i, (r, st) in enumerate(zip(resolved, statuses, strict=True))
             if st.attached and r.ok]
    return ProbeTable.build([st.name for st in statuses],
                            [r.spec.length_arg3 for r in resolved], keyed, ADDRESS_SLACK)


def _import_bcc() -> Any:
    try:
        import bcc
    except ImportError:
        raise PrerequisiteError(
            "BCC's Python module is not installed: apt-get install python3-bpfcc "
            "(never `pip install bcc`, an unrelated package); in a venv, create it "
            "with --system-site-packages"
        ) from None
    return bcc


def wakeup_records(buffer_pages: int, cpus: int) -> int:
    """Records each CPU writes between two wakeups of the reader: all CPUs
    together wake it by the time the ring is WAKEUP_FRACTION full."""
    records = buffer_pages * PAGE // record_stride(RAW_EVENT_SIZE)
    return max(1, records // (WAKEUP_FRACTION * max(1, cpus)))


def bpf_cflags(features: KernelFeatures, buffer_pages: int = DEFAULT_BUFFER_PAGES,
               cpus: int | None = None, mark_runs: bool = True) -> list[str]:
    """Compile-time switches: numbers only (kernel capabilities, validated
    sizes). mark_runs: the kprobe programs mark their runs (kpath_bcc.c
    KPROBE_FN), where the kernel's skip state cannot be read."""
    if buffer_pages < 1 or buffer_pages & (buffer_pages - 1):
        raise ValueError(f"buffer pages must be a power of two, got {buffer_pages}")
    ncpu = cpus if cpus is not None else os.cpu_count() or 1
    return [
        f"-DKPATH_RINGBUF={1 if features.ringbuf else 0}",
        f"-DKPATH_RINGBUF_PAGES={int(buffer_pages)}",
        f"-DKPATH_WAKEUP_RECORDS={wakeup_records(buffer_pages, ncpu)}",
        f"-DKPATH_MARK_RUNS={1 if mark_runs else 0}",
        f"-I{BPF_SOURCE.parent}",  # kp_event.h
        "-Wno-macro-redefined",
        "-Wno-unused-function",
    ]


# kallsyms addresses of __per_cpu_offset, bpf_prog_active and current_kprobe
# (0 where the kernel has no kprobes).
SkipAddresses = tuple[int, int, int]


def skip_addresses(syms: KernelSymbols) -> SkipAddresses | None:
    """Where the kernel's per-CPU reasons to skip kprobe programs are
    (kpath_bcc.c skip_vars); None where kallsyms lacks them."""
    per_cpu_offset = syms.data.get("__per_cpu_offset")
    active = syms.data.get(WATCH_SYMBOL)
    if not per_cpu_offset or active is None:
        return None
    return per_cpu_offset, active, syms.data.get("current_kprobe", 0)


def bpf_source_text() -> str:
    return BPF_SOURCE.read_text(encoding="utf-8")


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
            st.attach = [f"kprobe:{res.symbol}"]
            if spec.has_return:
                st.attach.append(f"kretprobe:{res.symbol}")
        elif res.ok:
            st.symbol, st.reason, st.detail = res.symbol, "failed", failed[spec.name]
        else:
            st.reason, st.detail = res.reason, res.detail
        out.append(st)
    return out


def resolve_statuses(specs: Sequence[ProbeSpec]) -> list[ProbeStatus]:
    """What the BCC backend would attach, from kallsyms alone (no compile)."""
    return probe_statuses(resolve(specs, KernelSymbols.load()), {})


def prerequisites(features: KernelFeatures | None = None) -> list[Check]:
    """What the BCC backend needs, probed on this machine (used by `kpath
    trace` before anything else and by `kpath doctor`)."""
    feat = features or KernelFeatures.detect()
    headers = Path(f"/lib/modules/{feat.release}/build")
    try:
        _import_bcc()
        has_bcc = True
    except PrerequisiteError:
        has_bcc = False
    return [
        Check("root", os.geteuid() == 0, "live tracing needs root (kprobes and BPF)"),
        Check("kprobes", KPROBE_PMU.exists(),
              f"kernel {feat.release} has no kprobes (CONFIG_KPROBES is off): use "
              "--backend core (tracepoints), or trace inside the validation VM "
              "(`kpath vm run -- kpath trace ...`)"),
        Check("bpf_get_func_ip (5.15+)", feat.func_ip,
              f"kernel {feat.release} lacks bpf_get_func_ip (needs 5.15+), which the BCC "
              "backend uses to tell probes apart"),
        Check("kernel headers", headers.exists(),
              f"no kernel headers at {headers}: BCC compiles against them; install "
              f"linux-headers-{feat.release}, or use --backend core"),
        Check("BCC python module", has_bcc,
              "apt-get install python3-bpfcc (never `pip install bcc`, an unrelated "
              "package); in a venv, create it with --system-site-packages"),
        Check("ring buffer (5.8+)", feat.ringbuf, "falls back to the perf buffer",
              required=False),
    ]


class BccBackend:
    """Owns the loaded BPF object for the life of one trace."""

    name = "bcc"

    def __init__(self, buffer_pages: int = DEFAULT_BUFFER_PAGES,
                 features: KernelFeatures | None = None) -> None:
        feat = features or KernelFeatures.detect()
        failed = first_failure(prerequisites(feat))
        if failed is not None:
            raise PrerequisiteError(f"{failed.name}: {failed.detail}")
        bpf_cflags(feat, buffer_pages)  # validates the size now
        self.features = feat
        self.buffer = "ringbuf" if feat.ringbuf else "perfbuf"
        self.buffer_pages = buffer_pages
        self._bcc = _import_bcc()
        self._bpf: Any = None
        self._table = ProbeTable.build([], [], [])
        self._lost_seen: dict[int, int] = {}
        self._sink: Callable[[pa.RecordBatch], None] | None = None
        self._drain: RingDrain | None = None
        self._perf_records: list[bytes] = []  # perf buffer (pre-5.8) records of one poll
        self._perf_frame_rows: list[int] = []  # and its frame records (ringbuf.Span's)
        self._perf_frame_tails: list[bytes] = []
        self._perf_lost = 0
        self._perf_blind: list[BlindWindow] = []
        self._undecoded = 0

    def start(self, specs: Sequence[ProbeSpec], filters: Filters,
              status: Status) -> list[ProbeStatus]:
        syms = KernelSymbols.load()
        resolved = resolve(specs, syms)
        addresses = skip_addresses(syms)
        with status.ticker("compiling the BPF program (BCC; about a minute under TCG)"):
            # Its kprobe programs mark their runs only where the kernel's
            # own state cannot be read.
            self.compile(mark_runs=addresses is None)
        self.configure(filters)
        if addresses is not None:
            self.watch_kernel(addresses)
        else:
            status.warn(no_watch_warning("only interrupts inside its own kprobe programs"))
        with status.ticker("attaching probes"):
            failed = {res.spec.name: why for res, why in self.attach(resolved)}
        for name, why in failed.items():
            status.warn(f"probe {name}: attach failed: {why}")
        statuses = probe_statuses(resolved, failed)
        self._table = probe_table(resolved, statuses)
        if any(st.attached for st in statuses):
            status.warn(
                "the BCC backend cannot count kprobe misses (a probe hit while another kprobe "
                "or BPF program ran on that CPU, kretprobe instances exhausted): BCC attaches "
                "without BPF links, which is where the kernel (6.7+) reports them; events "
                "missed that way are not in the trace's losses, the blind windows they fall "
                "in are (--backend core counts them on 6.7+)")
        return statuses

    # -- set-up ----------------------------------------------------------

    def compile(self, mark_runs: bool = True) -> None:
        try:
            cflags = bpf_cflags(self.features, self.buffer_pages, mark_runs=mark_runs)
            self._bpf = self._bcc.BPF(src_file=str(BPF_SOURCE), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception on compile errors
            raise LoadError(f"BPF compile failed: {exc}", str(exc)) from None
        # pending_rx holds a kp_event; it is per-CPU: BCC's Leaf is an array
        # of the struct, one per CPU.
        leaf = self._bpf["pending_rx"].Leaf
        rec = dict(getattr(leaf, "_type_", leaf)._fields_)["ev"]
        check_layout(RAW_DTYPE, "BCC's compiled kpath_bcc.c", ctypes.sizeof(rec),
                     [(name, getattr(rec, name).offset) for name, *_ in rec._fields_])
        leaf = self._bpf["frame_buf"].Leaf
        frame = getattr(leaf, "_type_", leaf)
        check_layout((RAW_FRAME_SIZE, FRAME_OFFSETS), "BCC's compiled kpath_bcc.c",
                     ctypes.sizeof(frame),
                     [(name, getattr(frame, name).offset) for name, *_ in frame._fields_])

    def configure(self, filters: Filters) -> None:
        table = self._bpf["config"]
        leaf = table.Leaf()
        leaf.tgid = filters.pid or 0
        leaf.use_pid_map = 1 if filters.follow_command else 0
        leaf.port = filters.port or 0
        if filters.comm:
            raw = filters.comm.encode()
            leaf.comm_set = 1
            for i, byte in enumerate(raw[:15]):
                leaf.comm[i] = byte
        table[table.Key(0)] = leaf

    def watch_kernel(self, addresses: SkipAddresses) -> None:
        """Give the context programs the kallsyms addresses of the kernel's
        per-CPU reasons to skip kprobe programs (kpath_bcc.c skip_vars)."""
        table = self._bpf["skip_vars"]
        leaf = table.Leaf()
        leaf.per_cpu_offset, leaf.prog_active, leaf.current_kprobe = addresses
        table[table.Key(0)] = leaf

    def trace_pid(self, pid: int) -> None:
        table = self._bpf["traced_pids"]
        table[table.Key(pid)] = table.Leaf(1)

    def attach(self, resolved: Sequence[Resolved]) -> list[tuple[Resolved, str]]:
        """Attach entry (and return) probes; returns the ones that failed, why."""
        failed: list[tuple[Resolved, str]] = []
        framing = frame_probes(res.spec.name for res in resolved if res.ok)
        for res in resolved:
            if not res.ok:
                continue
            assert res.symbol is not None
            fn = (frame_fn(res.spec.capture) if res.spec.name in framing
                  else capture_fn(res.spec.capture))
            try:
                self._bpf.attach_kprobe(event=res.symbol, fn_name=fn)
                ret_fn = return_fn(res.spec.ret)
                if ret_fn is not None:
                    self._bpf.attach_kretprobe(event=res.symbol, fn_name=ret_fn)
            except Exception as exc:  # BCC raises bare Exception on attach errors
                failed.append((res, str(exc).strip() or exc.__class__.__name__))
        return failed

    # -- streaming ---------------------------------------------------------

    def open(self, sink: Callable[[pa.RecordBatch], None],
             rehearse: Callable[[pa.RecordBatch], None] | None = None) -> None:
        self._sink = sink
        table = self._bpf["events"]
        if self.features.ringbuf:
            # Read the map directly, in bulk, not through BCC's per-record callback.
            self._drain = RingDrain(table.map_fd, self._table, sink)
            self._drain.rehearse(rehearse)
        else:
            table.open_perf_buffer(self._on_perf_record, page_cnt=self.buffer_pages,
                                   lost_cb=self._on_perf_lost)

    def _on_perf_record(self, _cpu: int, data: int, size: int) -> None:
        # The perf buffer has no bulk reader: keep the bytes, decode per poll.
        if size < RAW_EVENT_SIZE:
            self._undecoded += 1
            return
        if size >= RAW_FRAME_SIZE:
            rec = ctypes.string_at(data, RAW_FRAME_SIZE)
            self._perf_frame_rows.append(len(self._perf_records))
            self._perf_frame_tails.append(rec[RAW_EVENT_SIZE:])
            self._perf_records.append(rec[:RAW_EVENT_SIZE])
            return
        self._perf_records.append(ctypes.string_at(data, RAW_EVENT_SIZE))

    def _on_perf_lost(self, count: int) -> None:
        self._perf_lost += count

    def _flush_perf(self) -> None:
        if not self._perf_records:
            return
        raw = np.frombuffer(b"".join(self._perf_records), np.uint8).reshape(-1, RAW_EVENT_SIZE)
        rows, tails = self._perf_frame_rows, self._perf_frame_tails
        self._perf_records, self._perf_frame_rows, self._perf_frame_tails = [], [], []
        decoded = decode_records(raw, self._table, rows, tails)
        self._undecoded += decoded.unknown
        self._perf_blind.extend(decoded.blind)
        if decoded.batch.num_rows and self._sink is not None:
            self._sink(decoded.batch)

    def poll(self, timeout_ms: int) -> None:
        if self._drain is not None:
            self._drain.poll(timeout_ms)
        elif self._sink is not None:
            self._bpf.perf_buffer_poll(timeout_ms)
            self._flush_perf()

    def drain(self) -> None:
        if self._drain is not None:
            self._drain.drain()
        elif self._sink is not None:
            self._bpf.perf_buffer_poll(0)
            self._flush_perf()

    def new_losses(self) -> list[tuple[str | None, int]]:
        """Losses since the last call, by probe name (None: buffer-wide)."""
        out: list[tuple[str | None, int]] = []
        for key, value in self._bpf["lost_by_ip"].items():
            ip = int(key.value)
            total = int(value.value)
            delta = total - self._lost_seen.get(ip, 0)
            if delta > 0:
                self._lost_seen[ip] = total
                slot = int(self._table.lookup(np.array([ip], np.uint64))[0])
                out.append((BLIND_LOST if ip == BLIND_IP else
                            self._table.names[slot] if slot >= 0 else None, delta))
        if self._drain is not None:
            self._undecoded += self._drain.take_undecoded()
        bad = self._perf_lost + self._undecoded
        if bad:
            out.append((None, bad))
            self._perf_lost = self._undecoded = 0
        return out

    def new_blind_windows(self) -> list[BlindWindow]:
        out, self._perf_blind = self._perf_blind, []
        if self._drain is not None:
            out.extend(self._drain.take_blind())
        return out

    def close(self) -> None:
        """Detach every probe (BCC's cleanup) even on errors."""
        if self._drain is not None:
            self._drain.close()
            self._drain = None
        if self._bpf is not None:
            try:
                self._bpf.cleanup()
            finally:
                self._bpf = None
