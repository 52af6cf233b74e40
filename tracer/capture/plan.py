"""Which way each requested probe is observed on this kernel: a kprobe on
its resolved symbol, a tp_btf tracepoint, or neither (with the reason).
Pure: the kernel's capabilities come in as data, so every rule is tested
without a kernel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from probes.catalog import ProbeSpec, Returns
from probes.resolve import Resolved

# enum tp_hook in kpath.bpf.c, in order: hook -> (programs that serve it,
# kernel tracepoints those programs attach to). Its index is the hook's slot
# in the object's tp_probe[] read-only array.
TP_HOOKS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("sys_sendto", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_recvfrom", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_sendmsg", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_recvmsg", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_write", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("sys_read", ("tp_sys_enter", "tp_sys_exit"), ("sys_enter", "sys_exit")),
    ("net_dev_queue", ("tp_net_dev_queue",), ("net_dev_queue",)),
    ("net_dev_start_xmit", ("tp_net_dev_start_xmit",), ("net_dev_start_xmit",)),
    ("netif_rx", ("tp_netif_rx",), ("netif_rx",)),
    # served by the always-attached softirq_entry program
    ("net_rx_softirq", (), ("softirq_entry",)),
    ("netif_receive_skb", ("tp_netif_receive_skb",), ("netif_receive_skb",)),
    ("tcp_probe", ("tp_tcp_probe",), ("tcp_probe",)),
    ("sk_data_ready", ("tp_sk_data_ready",), ("sk_data_ready",)),
    ("skb_copy_datagram", ("tp_skb_copy_datagram",), ("skb_copy_datagram_iovec",)),
    ("tcp_retransmit_skb", ("tp_tcp_retransmit_skb",), ("tcp_retransmit_skb",)),
)
HOOK_SLOT = {hook: i for i, (hook, _, _) in enumerate(TP_HOOKS)}
HOOK_PROGRAMS = {hook: progs for hook, progs, _ in TP_HOOKS}
HOOK_TRACEPOINTS = {hook: tps for hook, _, tps in TP_HOOKS}
# Always loaded and attached: the execution context and the traced command's
# children. Their tracepoints exist on every kernel kpath supports.
# Exits before entries: an entry attached before its exit could mark a
# context that never ends.
CONTEXT_PROGRAMS = (
    ("tp_softirq_exit", "softirq_exit"), ("tp_irq_exit", "irq_handler_exit"),
    ("tp_softirq_entry", "softirq_entry"), ("tp_irq_entry", "irq_handler_entry"),
    ("tp_fork", "sched_process_fork"),
)
NO_PROBE = 0xFFFFFFFF  # KP_NONE: a tp_probe[] slot nobody asked for


def all_tracepoints() -> list[str]:
    """Every kernel tracepoint the object can attach to."""
    names = {tp for _, tp in CONTEXT_PROGRAMS}
    names.update(tp for tps in HOOK_TRACEPOINTS.values() for tp in tps)
    return sorted(names)


@dataclass(frozen=True)
class Planned:
    """One requested probe and how it will be observed (way None: missing)."""

    index: int  # position in the session's probe table: the event's ip/cookie
    spec: ProbeSpec
    way: str | None  # "kprobe" | "tp_btf" | None
    symbol: str | None = None  # kprobe target
    hook: str | None = None  # tp_btf hook
    reason: str | None = None
    detail: str | None = None

    @property
    def attachments(self) -> list[str]:
        """What will be attached, as the trace header records it."""
        if self.way == "kprobe" and self.symbol:
            out = [f"kprobe:{self.symbol}"]
            if self.spec.ret != Returns.NONE:
                out.append(f"kretprobe:{self.symbol}")
            return out
        if self.way == "tp_btf" and self.hook and self.spec.tracepoint:
            return [f"tp_btf:{tp}" for tp in HOOK_TRACEPOINTS[self.hook]]
        return []


@dataclass
class KernelCaps:
    """What this kernel offers the CO-RE object."""

    kprobes: bool
    tracepoints: dict[str, bool] = field(default_factory=dict)  # name -> in BTF
    release: str = ""
    no_kprobes_why: str = "no kprobes on this kernel"  # when kprobes is False


def plan(specs: Sequence[ProbeSpec], resolved: Sequence[Resolved] | None,
         caps: KernelCaps) -> list[Planned]:
    """kprobes where the kernel has them and the symbol resolves; else the
    probe's tracepoint where the kernel has it; else missing, with why."""
    by_name = {r.spec.name: r for r in resolved or ()}
    out: list[Planned] = []
    for i, spec in enumerate(specs):
        res = by_name.get(spec.name)
        tp = spec.tracepoint
        tp_ok = tp is not None and all(caps.tracepoints.get(name, False)
                                       for name in HOOK_TRACEPOINTS[tp.hook])
        if caps.kprobes and res is not None and res.ok:
            out.append(Planned(i, spec, "kprobe", symbol=res.symbol))
        elif tp is not None and tp_ok:
            out.append(Planned(i, spec, "tp_btf", hook=tp.hook))
        elif caps.kprobes and res is not None:
            extra = (f"; its tracepoint {tp.event} is absent too (Linux {tp.since}+)"
                     if tp is not None else "")
            out.append(Planned(i, spec, None, reason=res.reason,
                               detail=f"{res.detail}{extra}"))
        elif tp is not None:
            out.append(Planned(
                i, spec, None, reason="no-tracepoint",
                detail=f"{caps.no_kprobes_why}, and tracepoint {tp.event} is absent "
                f"(Linux {tp.since}+)"))
        else:
            out.append(Planned(
                i, spec, None, reason="no-kprobes",
                detail=f"{caps.no_kprobes_why} and no tracepoint observes this function"))
    return out
