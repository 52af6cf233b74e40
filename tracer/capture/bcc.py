"""BCC backend: compile kpath_bcc.c at run time against the kernel's
headers, attach kprobes, turn ring-buffer records into Event objects. For
kernels without BTF (where the CO-RE object cannot relocate). Kernel in,
events out; it never formats.

BCC is imported lazily (Debian's python3-bpfcc) so that replay and export
work on machines without it.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.catalog import ProbeSpec
from probes.resolve import KernelSymbols, Resolved, resolve
from tracer.capture.base import (
    DEFAULT_BUFFER_PAGES,
    KPROBE_PMU,
    Check,
    Status,
    capture_fn,
    first_failure,
    kernel_version,
    return_fn,
)
from tracer.capture.errors import LoadError, PrerequisiteError
from tracer.capture.record import RAW_EVENT_SIZE, RawEvent, check_layout, decode
from tracer.events import Event, ProbeStatus
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


class AddressMap:
    """Maps the probed-function address a BPF program reports to its probe.

    Exact match normally; a few bytes of slack where the kernel reports the
    address after an endbr64 or an ftrace call site.
    """

    SLACK = 16

    def __init__(self, resolved: Sequence[Resolved]) -> None:
        pairs = sorted((r.address, r) for r in resolved if r.ok)
        self._addrs = [a for a, _ in pairs]
        self._probes = [r for _, r in pairs]

    def spec(self, ip: int) -> ProbeSpec | None:
        res = self.lookup(ip)
        return res.spec if res is not None else None

    def lookup(self, ip: int) -> Resolved | None:
        i = bisect.bisect_right(self._addrs, ip) - 1
        if i >= 0 and ip - self._addrs[i] <= self.SLACK:
            return self._probes[i]
        return None


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


def bpf_cflags(features: KernelFeatures, buffer_pages: int = DEFAULT_BUFFER_PAGES) -> list[str]:
    """Compile-time switches: numbers only (kernel capabilities, a validated size)."""
    if buffer_pages < 1 or buffer_pages & (buffer_pages - 1):
        raise ValueError(f"buffer pages must be a power of two, got {buffer_pages}")
    return [
        f"-DKPATH_RINGBUF={1 if features.ringbuf else 0}",
        f"-DKPATH_RINGBUF_PAGES={int(buffer_pages)}",
        f"-I{BPF_SOURCE.parent}",  # kp_event.h
        "-Wno-macro-redefined",
        "-Wno-unused-function",
    ]


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
        self._amap = AddressMap(())
        self._lost_seen: dict[int, int] = {}
        self._sink: Callable[[Event], None] | None = None
        self._perf_lost = 0
        self._short = 0
        self._unknown = 0

    def start(self, specs: Sequence[ProbeSpec], filters: Filters,
              status: Status) -> list[ProbeStatus]:
        resolved = resolve(specs, KernelSymbols.load())
        with status.ticker("compiling the BPF program (BCC; about a minute under TCG)"):
            self.compile()
        self.configure(filters)
        with status.ticker("attaching probes"):
            failed = {res.spec.name: why for res, why in self.attach(resolved)}
        for name, why in failed.items():
            status.warn(f"probe {name}: attach failed: {why}")
        return probe_statuses(resolved, failed)

    # -- set-up ----------------------------------------------------------

    def compile(self) -> None:
        try:
            cflags = bpf_cflags(self.features, self.buffer_pages)
            self._bpf = self._bcc.BPF(src_file=str(BPF_SOURCE), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception on compile errors
            raise LoadError(f"BPF compile failed: {exc}", str(exc)) from None
        # pending_rx holds a kp_event; it is per-CPU: BCC's Leaf is an array
        # of the struct, one per CPU.
        leaf = self._bpf["pending_rx"].Leaf
        rec = dict(getattr(leaf, "_type_", leaf)._fields_)["ev"]
        check_layout(RawEvent, "BCC's compiled kpath_bcc.c", ctypes.sizeof(rec),
                     [(name, getattr(rec, name).offset) for name, *_ in rec._fields_])

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

    def trace_pid(self, pid: int) -> None:
        table = self._bpf["traced_pids"]
        table[table.Key(pid)] = table.Leaf(1)

    def attach(self, resolved: Sequence[Resolved]) -> list[tuple[Resolved, str]]:
        """Attach entry (and return) probes; returns the ones that failed, why."""
        failed: list[tuple[Resolved, str]] = []
        ok: list[Resolved] = []
        for res in resolved:
            if not res.ok:
                continue
            assert res.symbol is not None
            try:
                self._bpf.attach_kprobe(event=res.symbol, fn_name=capture_fn(res.spec.capture))
                ret_fn = return_fn(res.spec.ret)
                if ret_fn is not None:
                    self._bpf.attach_kretprobe(event=res.symbol, fn_name=ret_fn)
            except Exception as exc:  # BCC raises bare Exception on attach errors
                failed.append((res, str(exc).strip() or exc.__class__.__name__))
                continue
            ok.append(res)
        self._amap = AddressMap(ok)
        return failed

    # -- streaming ---------------------------------------------------------

    def open(self, sink: Callable[[Event], None]) -> None:
        self._sink = sink
        table = self._bpf["events"]
        if self.features.ringbuf:
            table.open_ring_buffer(self._on_raw)
        else:
            table.open_perf_buffer(self._on_raw, page_cnt=self.buffer_pages,
                                   lost_cb=self._on_perf_lost)

    def _on_raw(self, *args: Any) -> None:
        data, size = args[-2], args[-1]
        if size < RAW_EVENT_SIZE:
            self._short += 1
            return
        raw = ctypes.cast(data, ctypes.POINTER(RawEvent)).contents
        ev = decode(raw, self._amap.spec)
        if ev is None:
            self._unknown += 1
        elif self._sink is not None:
            self._sink(ev)

    def _on_perf_lost(self, count: int) -> None:
        self._perf_lost += count

    def poll(self, timeout_ms: int) -> None:
        if self.features.ringbuf:
            self._bpf.ring_buffer_poll(timeout_ms)
        else:
            self._bpf.perf_buffer_poll(timeout_ms)

    def drain(self) -> None:
        if self.features.ringbuf:
            self._bpf.ring_buffer_consume()
        else:
            self._bpf.perf_buffer_poll(0)

    def new_losses(self) -> list[tuple[str | None, int]]:
        """Losses since the last call, by probe name (None: buffer-wide)."""
        out: list[tuple[str | None, int]] = []
        for key, value in self._bpf["lost_by_ip"].items():
            ip = int(key.value)
            total = int(value.value)
            delta = total - self._lost_seen.get(ip, 0)
            if delta > 0:
                self._lost_seen[ip] = total
                res = self._amap.lookup(ip)
                out.append((res.spec.name if res else None, delta))
        bad = self._perf_lost + self._short + self._unknown
        if bad:
            out.append((None, bad))
            self._perf_lost = self._short = self._unknown = 0
        return out

    def close(self) -> None:
        """Detach every probe (BCC's cleanup) even on errors."""
        if self._bpf is not None:
            try:
                self._bpf.cleanup()
            finally:
                self._bpf = None
