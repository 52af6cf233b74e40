"""CO-RE backend: the precompiled kpath.bpf.o, loaded through libbpf.

No headers and no compiler at run time. fentry/fexit (BPF trampolines)
where the kernel allows them, kprobes where not, tp_btf tracepoints where
the kernel has no kprobes (or where the function is inlined or renamed and
a tracepoint still sees the step). Kernel in, events out; it never formats.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from probes.catalog import ProbeSpec
from probes.resolve import KernelSymbols, Resolved, resolve
from tracer.capture import libbpf
from tracer.capture.base import (
    BLIND_IP,
    BLIND_LOST,
    BTF_VMLINUX,
    DEFAULT_BUFFER_PAGES,
    KPROBE_PMU,
    PAGE,
    WAKEUP_FRACTION,
    WATCH_SYMBOL,
    Check,
    Status,
    capture_fn,
    copy_fn,
    first_failure,
    kernel_version,
    kprobe_misses_counted,
    no_watch_warning,
    return_fn,
)
from tracer.capture.drain import RingDrain
from tracer.capture.errors import AttachError, LoadError, PrerequisiteError
from tracer.capture.frames import frame_probes
from tracer.capture.plan import (
    ATTACH_MODES,
    DEFAULT_ATTACH_MODE,
    HOOK_PROGRAMS,
    HOOK_SLOT,
    NO_PROBE,
    TP_HOOKS,
    WATCH_TWINS,
    KernelCaps,
    Planned,
    all_tracepoints,
    context_programs,
    function_attachments,
    plan,
)
from tracer.capture.record import RAW_DTYPE, BlindWindow, ProbeTable, check_layout
from tracer.events import ProbeStatus
from tracer.filters import Filters

OBJECT = Path(__file__).with_name("kpath.bpf.o")
# fentry/fexit programs read their attach cookie (the probe index) from this
# kernel on.
FENTRY_COOKIE_SINCE = (5, 19)
# Attempts at loading and attaching: all fentry, then without the fentry
# programs that failed, then without fentry at all.
ATTEMPTS = 3


class KpConfig(ctypes.Structure):
    """Mirror of struct kp_config (kp_event.h), checked against the object's BTF."""

    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("use_pid_map", ctypes.c_uint32),
        ("port", ctypes.c_uint32),
        ("comm_set", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
    ]


def prerequisites(obj: Path | None = None) -> list[Check]:
    """What the CO-RE backend needs, probed on this machine (used by
    `kpath trace` before anything else and by `kpath doctor`)."""
    release = platform.release()
    obj = obj or OBJECT
    btf = BTF_VMLINUX
    checks = [Check("root", os.geteuid() == 0, "live tracing needs root (BPF)")]
    checks.append(Check("kernel BTF", btf.exists(),
                        f"no {btf}: this kernel was built without CONFIG_DEBUG_INFO_BTF; "
                        "use --backend bcc (needs kernel headers) or the VM"))
    checks.append(Check("BPF ring buffer (5.8+)", kernel_version(release) >= (5, 8),
                        f"kernel {release} is older than 5.8: use --backend bcc"))
    try:
        libbpf.lib()
        has_lib = True
    except PrerequisiteError:
        has_lib = False
    checks.append(Check("libbpf", has_lib, "apt-get install libbpf1"))
    checks.append(Check("CO-RE object", obj.is_file(),
                        f"{obj} is missing: run scripts/setup.sh (or scripts/build-bpf.sh)"))
    checks.append(Check("kprobes", KPROBE_PMU.exists(),
                        "no kprobe PMU (CONFIG_KPROBES off): tracepoints only, the TCP "
                        "transmit internals and the IP layer are not observable",
                        required=False))
    return checks


def kernel_caps(use_kprobes: bool = True,
                attach_mode: str = DEFAULT_ATTACH_MODE) -> KernelCaps:
    """What this kernel offers; use_kprobes=False: tracepoints only, by
    choice; attach_mode: which function probes may be used (ATTACH_MODES)."""
    if attach_mode not in ATTACH_MODES:
        raise ValueError(f"unknown attach mode {attach_mode!r} ({', '.join(ATTACH_MODES)})")
    names = all_tracepoints()
    present = libbpf.vmlinux_btf_has([(f"btf_trace_{n}", libbpf.BTF_KIND_TYPEDEF)
                                      for n in names])
    release = platform.release()
    has = KPROBE_PMU.exists()
    # The kprobe programs tell probes apart by attach cookie (Linux 5.15+).
    cookies = kernel_version(release) >= (5, 15)
    why = ("kprobes not used (--no-kprobes)" if not use_kprobes
           else "no kprobes on this kernel" if not has
           else "kprobes need Linux 5.15+ here (attach cookies; --backend bcc has them)"
           if not cookies else "kprobes not used (--attach-mode fentry)")
    # auto: fentry first, kprobes behind it. A kernel without kprobes is
    # usually one that refuses trampolines too (the development host:
    # EPERM), so there only --attach-mode fentry tries them.
    fentry = (use_kprobes and kernel_version(release) >= FENTRY_COOKIE_SINCE
              and (attach_mode == "fentry" or (attach_mode == "auto" and has)))
    return KernelCaps(kprobes=has and cookies and use_kprobes and attach_mode != "fentry",
                      tracepoints={n: present[f"btf_trace_{n}"] for n in names},
                      release=release, no_kprobes_why=why, fentry=fentry)


def resolve_functions(specs: Sequence[ProbeSpec], caps: KernelCaps) -> list[Resolved] | None:
    """The probes' kernel symbols where function probes may be used (None
    where not), and for fentry each symbol's argument count (into caps)."""
    if not (caps.kprobes or caps.fentry):
        return None
    syms = KernelSymbols.load()
    caps.watch_symbols = WATCH_SYMBOL in syms.data
    resolved = resolve(specs, syms)
    if caps.fentry:
        caps.arity = libbpf.vmlinux_func_arity([r.symbol for r in resolved if r.symbol])
    return resolved


def missed_losses(serves: dict[str, list[str]], seen: dict[str, int],
                  missed: Callable[[str], int]) -> list[tuple[str | None, int]]:
    """New kernel-side misses per program (or kprobe link) since the last
    call (updating `seen`), as losses: of the probe it serves, or
    unattributed (None) when it serves several or is a context program (its
    events are fine, but their context may be wrong)."""
    out: list[tuple[str | None, int]] = []
    for prog, probes in serves.items():
        total = missed(prog)
        delta = total - seen.get(prog, 0)
        if delta > 0:
            seen[prog] = total
            out.append((probes[0] if len(set(probes)) == 1 else None, delta))
    return out


def _try_attach(obj: libbpf.BpfObject, prog: str) -> AttachError | None:
    try:
        obj.attach(prog, prog)
    except AttachError as exc:
        return exc
    return None


class CoreBackend:
    """Owns the loaded object and its links for the life of one trace."""

    name = "core"
    buffer = "ringbuf"

    def __init__(self, buffer_pages: int = DEFAULT_BUFFER_PAGES, obj: Path | None = None,
                 use_kprobes: bool = True, attach_mode: str = DEFAULT_ATTACH_MODE) -> None:
        obj = obj or OBJECT
        if buffer_pages < 1 or buffer_pages & (buffer_pages - 1):
            raise ValueError(f"buffer pages must be a power of two, got {buffer_pages}")
        failed = first_failure(prerequisites(obj))
        if failed is not None:
            raise PrerequisiteError(f"{failed.name}: {failed.detail}")
        self.buffer_pages = buffer_pages
        self.use_kprobes = use_kprobes
        self.attach_mode = attach_mode
        self.wakeup_bytes = buffer_pages * PAGE // WAKEUP_FRACTION
        self._objpath = obj
        self._obj: libbpf.BpfObject | None = None
        self._specs: list[ProbeSpec] = []
        self._drain: RingDrain | None = None
        self._table: ProbeTable | None = None
        self._lost_seen: dict[int, int] = {}
        self._reset()

    def _reset(self) -> None:
        """Forget a loaded object's programs and links (before a new attempt)."""
        self._serves: dict[str, list[str]] = {}  # loaded program -> the probes it observes
        self._missed_seen: dict[str, int] = {}
        # Each kprobe link (by target) and the probe it serves: the kernel
        # counts each one's misses.
        self._kprobe_links: dict[str, libbpf.Link] = {}
        self._link_serves: dict[str, list[str]] = {}
        self._link_missed_seen: dict[str, int] = {}
        # Probe index -> its fentry program and fexit program (or None).
        self._copies: dict[int, tuple[str, str | None]] = {}
        self._kprobes_loaded = False  # the kprobe routines of fentry probes too

    # -- set-up ----------------------------------------------------------

    def start(self, specs: Sequence[ProbeSpec], filters: Filters,
              status: Status) -> list[ProbeStatus]:
        self._specs = list(specs)
        caps = self._caps = kernel_caps(self.use_kprobes, self.attach_mode)
        resolved = resolve_functions(specs, caps)
        # Probes whose fentry failed (name -> why): the next attempt observes
        # them the next way (a kprobe, else their tracepoint).
        no_fentry: dict[str, str] = {}
        for attempt in range(ATTEMPTS):
            planned = plan(specs, resolved, caps, no_fentry)
            if attempt == ATTEMPTS - 1:
                caps.fentry = False
                planned = plan(specs, resolved, caps, no_fentry)
            self._reset()
            statuses = self._load_and_attach(planned, filters, status, no_fentry,
                                             fallback=caps.kprobes)
            if statuses is not None:
                break
            assert self._obj is not None
            self._obj.close()
        assert statuses is not None
        # The trace's probe dictionary is the statuses, in order; the
        # programs write each probe's plan index as the record's ip.
        self._table = ProbeTable.build([st.name for st in statuses],
                                       [p.spec.length_arg3 for p in planned],
                                       [(p.index, i) for i, p in enumerate(planned)])
        self._warn_uncounted(status, caps)
        return statuses

    def _load_and_attach(self, planned: Sequence[Planned], filters: Filters, status: Status,
                         no_fentry: dict[str, str], fallback: bool) -> list[ProbeStatus] | None:
        """One attempt; None when fentry failed where nothing else was loaded
        to take over (the failures are added to no_fentry for the next).
        fallback: kprobes may take over from a failed fentry (auto mode)."""
        obj = self._obj = libbpf.BpfObject(self._objpath)
        size, members = obj.btf_struct("kp_event")
        check_layout(RAW_DTYPE, self._objpath.name, size, [(m.name, m.offset) for m in members])
        fentry = [p for p in planned if p.way == "fentry"]
        # The blind-window watch where kprobe programs run (they are the
        # ones the kernel skips) and the kernel lets the twins load.
        self._enable(obj, planned, fallback=fallback,
                     watch=self._caps.kprobes and self._caps.watch_symbols)
        self._write_rodata(obj, planned, filters)
        obj.set_max_entries("events", self.buffer_pages * PAGE)
        try:
            with status.ticker("loading the CO-RE object"):
                obj.load()
        except LoadError as exc:
            if not fentry:
                raise
            # Which program the kernel refused is in the log, not the error:
            # give up fentry for all of them rather than guess.
            why = f"the kernel refused the fentry programs ({exc})"
            status.warn(f"{why}; trying without them")
            no_fentry.update({p.spec.name: why for p in fentry})
            return None
        for prog, tp in self._context:
            obj.attach(prog, f"tp_btf:{tp}")  # fatal if it fails: no context otherwise
        statuses = self._attach(obj, planned, status, no_fentry)
        if any(st.reason == "fentry-failed" for st in statuses):
            return None
        return statuses

    def _warn_uncounted(self, status: Status, caps: KernelCaps) -> None:
        if not self._kprobe_links:
            return
        if not caps.watch_symbols:
            status.warn(no_watch_warning("no blind window"))
        release = platform.release()
        if not kprobe_misses_counted(release):
            status.warn(
                f"kernel {release} does not report kprobe misses (a probe hit while another "
                "kprobe or BPF program ran on that CPU, kretprobe instances exhausted; "
                "reported per link from Linux 6.7): events missed that way cannot be "
                "counted and are not in the trace's losses; the blind windows they fall in "
                "(an interrupt or softirq while kprobes are skipped) are")

    def _enable(self, obj: libbpf.BpfObject, planned: Sequence[Planned],
                fallback: bool, watch: bool = False) -> None:
        """Switch on the programs the plan uses; fentry probes get a copy of
        their routine each, bound to their function. fallback: the kprobe
        routines of fentry probes too, to take over where fentry fails.
        watch: the context programs' twins that watch for blind windows."""
        self._context = context_programs(watch)
        for plain, twin in WATCH_TWINS.items():
            obj.set_autoload(plain, not watch)
            obj.set_autoload(twin, watch)
        serves = self._serves = {prog: [] for prog, _ in self._context}
        self._kprobes_loaded = fallback
        used: dict[str, int] = {}  # kprobe routine -> its fentry copies handed out
        for p in planned:
            progs: list[str] = []
            routines = [capture_fn(p.spec.capture)]
            ret_fn = return_fn(p.spec.ret)
            if ret_fn:
                routines.append(ret_fn)
            if p.way == "kprobe":
                progs.extend(routines)
            elif p.way == "fentry" and p.symbol:
                copies = []
                for fn in routines:
                    copies.append(copy_fn(fn, used.get(fn, 0)))
                    used[fn] = used.get(fn, 0) + 1
                    obj.set_attach_target(copies[-1], p.symbol)
                    if fallback:
                        obj.set_autoload(fn, True)
                self._copies[p.index] = (copies[0], copies[1] if len(copies) > 1 else None)
                progs.extend(copies)
            elif p.way == "tp_btf" and p.hook:
                progs.extend(HOOK_PROGRAMS[p.hook])
            for prog in progs:
                obj.set_autoload(prog, True)
                serves.setdefault(prog, []).append(p.spec.name)

    def _write_rodata(self, obj: libbpf.BpfObject, planned: Sequence[Planned],
                      filters: Filters) -> None:
        cfg = KpConfig(tgid=filters.pid or 0, use_pid_map=1 if filters.follow_command else 0,
                       port=filters.port or 0, comm_set=1 if filters.comm else 0,
                       comm=(filters.comm or "").encode()[:15])
        size, members = obj.btf_struct("kp_config")
        check_layout(KpConfig, self._objpath.name, size, [(m.name, m.offset) for m in members])
        slots = (ctypes.c_uint32 * len(TP_HOOKS))(*([NO_PROBE] * len(TP_HOOKS)))
        for p in planned:
            if p.way == "tp_btf" and p.hook:
                slots[HOOK_SLOT[p.hook]] = p.index
        # Probes with a return probe (bit per index; the object assumes one
        # for indices past 63).
        ret_probes = ctypes.c_uint64(sum(1 << p.index for p in planned
                                         if p.spec.has_return and p.index < 64))
        # Probes that send frame records (bit per index, below 256).
        framing = frame_probes(p.spec.name for p in planned if p.way)
        frames = (ctypes.c_uint64 * 4)()
        for p in planned:
            if p.way and p.spec.name in framing and p.index < 256:
                frames[p.index >> 6] |= 1 << (p.index & 63)
        addr, total = obj.rodata()
        _, variables = obj.btf_datasec(".rodata")
        offsets = {v.name: v.offset for v in variables}
        wakeup = ctypes.c_uint64(self.wakeup_bytes)
        for name, value in (("cfg", cfg), ("tp_probe", slots), ("wakeup_bytes", wakeup),
                            ("ret_probes", ret_probes), ("frame_probes", frames)):
            off = offsets.get(name)
            if off is None or off + ctypes.sizeof(value) > total:
                raise LoadError(f"{self._objpath.name}: .rodata has no room for {name} (an "
                                "object older than this kpath? rebuild it with "
                                "scripts/build-bpf.sh)")
            ctypes.memmove(addr + off, ctypes.addressof(value), ctypes.sizeof(value))

    def _attach_kprobes(self, obj: libbpf.BpfObject, spec: ProbeSpec, symbol: str,
                        index: int) -> None:
        links = [obj.attach_kprobe(capture_fn(spec.capture), symbol, index, False)]
        ret_fn = return_fn(spec.ret)
        if ret_fn is not None:
            links.append(obj.attach_kprobe(ret_fn, symbol, index, True))
        for link in links:
            self._kprobe_links[link.target] = link
            self._link_serves[link.target] = [spec.name]

    def _attach_fentry(self, obj: libbpf.BpfObject, p: Planned, status: Status,
                       no_fentry: dict[str, str]) -> tuple[str, str | None]:
        """fentry (and fexit) for a probe, else its kprobes where they were
        loaded to take over. Returns the way used and, after a fallback,
        why fentry failed; raises AttachError when nothing is attached."""
        assert p.symbol is not None
        entry, ret = self._copies[p.index]
        links: list[libbpf.Link] = []
        try:
            links.append(obj.attach_trace(entry, f"fentry:{p.symbol}", p.index))
            if ret is not None:
                links.append(obj.attach_trace(ret, f"fexit:{p.symbol}", p.index))
            return "fentry", None
        except AttachError as exc:
            for link in links:
                obj.detach(link)
            why = f"fentry failed ({exc})"
            if not self._kprobes_loaded:
                no_fentry[p.spec.name] = why
                raise
        status.info(f"probe {p.spec.name}: {why}; kprobe used")
        for prog in [capture_fn(p.spec.capture), return_fn(p.spec.ret)]:
            if prog:
                self._serves.setdefault(prog, []).append(p.spec.name)
        self._attach_kprobes(obj, p.spec, p.symbol, p.index)
        return "kprobe", why

    def _attach(self, obj: libbpf.BpfObject, planned: Sequence[Planned],
                status: Status, no_fentry: dict[str, str]) -> list[ProbeStatus]:
        out: list[ProbeStatus] = []
        # Tracepoint programs attach once, though several probes may share
        # one (sys_enter/sys_exit): program -> its attach error, if any.
        tp_done: dict[str, AttachError | None] = {}
        with status.ticker("attaching probes"):
            for p in planned:
                spec = p.spec
                st = ProbeStatus(spec.name, str(spec.layer), str(spec.direction),
                                 attached=False)
                out.append(st)
                if p.way is None:
                    st.reason, st.detail = p.reason, p.detail
                    continue
                attach = p.attachments
                try:
                    if p.way == "fentry" and p.symbol:
                        way, why = self._attach_fentry(obj, p, status, no_fentry)
                        attach = function_attachments(way, p.symbol, spec.has_return)
                        st.detail = why
                        st.symbol = p.symbol
                    elif p.way == "kprobe" and p.symbol:
                        self._attach_kprobes(obj, spec, p.symbol, p.index)
                        st.symbol = p.symbol
                    elif p.hook:
                        for prog in HOOK_PROGRAMS[p.hook]:
                            if prog not in tp_done:
                                tp_done[prog] = _try_attach(obj, prog)
                            err = tp_done[prog]
                            if err is not None:
                                raise err
                except AttachError as exc:
                    if spec.name in no_fentry:
                        # Tried again the next way on the next attempt.
                        st.reason, st.detail = "fentry-failed", str(exc)
                        continue
                    st.reason = "absent" if exc.absent else "failed"
                    st.detail = str(exc)
                    status.warn(f"probe {spec.name}: attach failed: {exc}")
                    continue
                st.attached = True
                st.kinds = ["entry", "return"] if spec.has_return else ["entry"]
                st.attach = attach
        return out

    def trace_pid(self, pid: int) -> None:
        assert self._obj is not None
        libbpf.map_update(self._obj.map_fd("traced_pids"), ctypes.c_uint32(pid),
                          ctypes.c_uint8(1))

    # -- streaming ---------------------------------------------------------

    def _probe_of(self, index: int) -> ProbeSpec | None:
        return self._specs[index] if 0 <= index < len(self._specs) else None

    def open(self, sink: Callable[[pa.RecordBatch], None],
             rehearse: Callable[[pa.RecordBatch], None] | None = None) -> None:
        assert self._obj is not None and self._table is not None, "open before start"
        self._drain = RingDrain(self._obj.map_fd("events"), self._table, sink)
        self._drain.rehearse(rehearse)

    def poll(self, timeout_ms: int) -> None:
        if self._drain is not None:
            self._drain.poll(timeout_ms)

    def drain(self) -> None:
        if self._drain is not None:
            self._drain.drain()

    def new_losses(self) -> list[tuple[str | None, int]]:
        out: list[tuple[str | None, int]] = []
        if self._obj is None:
            return out
        for index, total in libbpf.map_u64_items(self._obj.map_fd("lost_by_ip")):
            delta = total - self._lost_seen.get(index, 0)
            if delta > 0:
                self._lost_seen[index] = total
                spec = self._probe_of(index)
                out.append((BLIND_LOST if index == BLIND_IP else spec.name if spec else None,
                            delta))
        out.extend(missed_losses(self._serves, self._missed_seen, self._obj.missed))
        out.extend(missed_losses(
            self._link_serves, self._link_missed_seen,
            lambda target: libbpf.kprobe_link_missed(self._kprobe_links[target]) or 0))
        bad = self._drain.take_undecoded() if self._drain is not None else 0
        if bad:
            out.append((None, bad))  # records that could not be decoded: lost too
        return out

    def new_blind_windows(self) -> list[BlindWindow]:
        return self._drain.take_blind() if self._drain is not None else []

    def close(self) -> None:
        if self._drain is not None:
            self._drain.close()
            self._drain = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
