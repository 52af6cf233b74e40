"""BCC backend: compile tracer/kpath_bpf.c, attach kprobes, turn ring-buffer
records into Event objects. Kernel in, events out; it never formats.

BCC is imported lazily (Debian's python3-bpfcc) so that replay and export
work on machines without it.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import platform
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes.catalog import Capture, Returns
from probes.resolve import Resolved
from tracer.events import SOFTIRQ_NAMES, Context, Event, Kind
from tracer.filters import Filters

BPF_SOURCE = Path(__file__).with_name("kpath_bpf.c")
# perf_event_open's kprobe PMU: present exactly when the kernel can do kprobes.
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")


# Must match HAS_* in kpath_bpf.c.
HAS_TUPLE, HAS_SEQ, HAS_LEN, HAS_RET, HAS_ACK, HAS_FLAGS, HAS_ARG3 = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40,
)
_CTX = {0: Context.TASK, 1: Context.SOFTIRQ, 2: Context.HARDIRQ}


def capture_fn(capture: Capture) -> str:
    """Name of the BPF routine in kpath_bpf.c that implements a capture kind."""
    return "kp_" + capture.value


class BackendError(Exception):
    """Tracing cannot start; the message says why and what to do."""


class RawEvent(ctypes.Structure):
    """Mirror of struct kp_event in kpath_bpf.c (layout checked at load)."""

    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("ip", ctypes.c_uint64),
        ("sk", ctypes.c_uint64),
        ("skb", ctypes.c_uint64),
        ("ret", ctypes.c_int64),
        ("arg3", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("seq", ctypes.c_uint32),
        ("end_seq", ctypes.c_uint32),
        ("ack", ctypes.c_uint32),
        ("length", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("kind", ctypes.c_uint8),
        ("ctx", ctypes.c_uint8),
        ("vec", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("has", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 7),
        ("comm", ctypes.c_char * 16),
    ]


@dataclass(frozen=True)
class KernelFeatures:
    release: str
    ringbuf: bool  # BPF ring buffer: 5.8+
    func_ip: bool  # bpf_get_func_ip for kprobes: 5.15+

    @classmethod
    def detect(cls, release: str | None = None) -> KernelFeatures:
        rel = release or platform.release()
        major, minor = _version_tuple(rel)
        return cls(rel, (major, minor) >= (5, 8), (major, minor) >= (5, 15))


def _version_tuple(release: str) -> tuple[int, int]:
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _ipv4(addr_be: int) -> str:
    return socket.inet_ntoa(struct.pack("=I", addr_be))


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

    def lookup(self, ip: int) -> Resolved | None:
        i = bisect.bisect_right(self._addrs, ip) - 1
        if i >= 0 and ip - self._addrs[i] <= self.SLACK:
            return self._probes[i]
        return None


def decode(raw: RawEvent, amap: AddressMap) -> Event | None:
    """A kernel record as an Event; None if its address maps to no probe."""
    probe = amap.lookup(raw.ip)
    if probe is None:
        return None
    has = raw.has
    ctx = _CTX.get(raw.ctx, Context.TASK)
    comm = raw.comm.decode("utf-8", errors="replace")
    if ctx == Context.SOFTIRQ and comm.startswith("ksoftirqd/"):
        ctx = Context.KSOFTIRQD
    softirq = None
    if ctx in (Context.SOFTIRQ, Context.KSOFTIRQD):
        softirq = SOFTIRQ_NAMES[raw.vec] if raw.vec < len(SOFTIRQ_NAMES) else str(raw.vec)
    length: int | None = raw.length if has & HAS_LEN else None
    if raw.kind == 0 and has & HAS_ARG3 and probe.spec.length_arg3:
        length = raw.arg3
    tuple_ok = bool(has & HAS_TUPLE)
    return Event(
        ts_ns=raw.ts,
        cpu=raw.cpu,
        tgid=raw.tgid,
        tid=raw.tid,
        comm=comm,
        probe=probe.spec.name,
        kind=Kind.RETURN if raw.kind == 1 else Kind.ENTRY,
        ctx=ctx,
        softirq=softirq,
        sk=raw.sk,
        skb=raw.skb,
        netns=raw.netns,
        saddr=_ipv4(raw.saddr) if tuple_ok else None,
        sport=raw.sport if tuple_ok else None,
        daddr=_ipv4(raw.daddr) if tuple_ok else None,
        dport=raw.dport if tuple_ok else None,
        seq=raw.seq if has & HAS_SEQ else None,
        end_seq=raw.end_seq if has & HAS_SEQ else None,
        ack=raw.ack if has & HAS_ACK else None,
        tcp_flags=raw.tcp_flags if has & HAS_FLAGS else None,
        length=length,
        ret=raw.ret if has & HAS_RET else None,
    )


def _import_bcc() -> Any:
    try:
        import bcc
    except ImportError:
        raise BackendError(
            "BCC's Python module is not installed: apt-get install python3-bpfcc "
            "(never `pip install bcc`, an unrelated package); in a venv, create it "
            "with --system-site-packages"
        ) from None
    return bcc


DEFAULT_BUFFER_PAGES = 512  # 2 MiB ring buffer


def bpf_cflags(features: KernelFeatures, buffer_pages: int = DEFAULT_BUFFER_PAGES) -> list[str]:
    """Compile-time switches: numbers only (kernel capabilities, a validated size)."""
    if buffer_pages < 1 or buffer_pages & (buffer_pages - 1):
        raise ValueError(f"buffer pages must be a power of two, got {buffer_pages}")
    return [
        f"-DKPATH_RINGBUF={1 if features.ringbuf else 0}",
        f"-DKPATH_RINGBUF_PAGES={int(buffer_pages)}",
        "-Wno-macro-redefined",
        "-Wno-unused-function",
    ]


def bpf_source_text() -> str:
    return BPF_SOURCE.read_text(encoding="utf-8")


class BccBackend:
    """Owns the loaded BPF object for the life of one trace."""

    def __init__(self, features: KernelFeatures,
                 buffer_pages: int = DEFAULT_BUFFER_PAGES) -> None:
        if not features.func_ip:
            raise BackendError(
                f"kernel {features.release} lacks bpf_get_func_ip (needs 5.15+), which "
                "kpath uses to tell probes apart"
            )
        if os.geteuid() != 0:
            raise BackendError("live tracing needs root (kprobes and BPF): run with sudo")
        if not KPROBE_PMU.exists():
            raise BackendError(
                f"kernel {features.release} has no kprobes (CONFIG_KPROBES is off): trace "
                "inside the validation VM instead, e.g. `kpath vm run -- kpath trace ...`"
            )
        headers = Path(f"/lib/modules/{features.release}/build")
        if not headers.exists():
            raise BackendError(
                f"no kernel headers at {headers}: BCC compiles against them; install "
                f"linux-headers-{features.release}, or trace inside the validation VM "
                "(`kpath vm run -- kpath trace ...`)"
            )
        self.features = features
        self.buffer_pages = buffer_pages
        self._bcc = _import_bcc()
        self._bpf: Any = None
        self._amap = AddressMap(())
        self._lost_seen: dict[int, int] = {}
        self._sink: Callable[[Event], None] | None = None
        self._perf_lost = 0

    # -- set-up ----------------------------------------------------------

    def compile(self) -> None:
        try:
            cflags = bpf_cflags(self.features, self.buffer_pages)
            self._bpf = self._bcc.BPF(src_file=str(BPF_SOURCE), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception on compile errors
            raise BackendError(f"BPF compile failed: {exc}") from None

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
                if res.spec.ret == Returns.VALUE:
                    self._bpf.attach_kretprobe(event=res.symbol, fn_name="kp_return")
                elif res.spec.ret == Returns.SOCK:
                    self._bpf.attach_kretprobe(event=res.symbol, fn_name="kp_return_sock")
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
        if size < ctypes.sizeof(RawEvent):
            return
        raw = ctypes.cast(data, ctypes.POINTER(RawEvent)).contents
        ev = decode(raw, self._amap)
        if ev is not None and self._sink is not None:
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
        if self._perf_lost:
            out.append((None, self._perf_lost))
            self._perf_lost = 0
        return out

    def close(self) -> None:
        """Detach every probe (BCC's cleanup) even on errors."""
        if self._bpf is not None:
            try:
                self._bpf.cleanup()
            finally:
                self._bpf = None
