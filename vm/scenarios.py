"""Validation scenarios: a workload traced in the VM, and what its trace must show.

Checks read the raw events (an oracle independent of the timeline), except
where the point is the timeline's own linking (veth). Each check yields a
named result, so a failure says which observation broke and why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from probes.catalog import PROFILES
from tracer.events import TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Context, Event, Kind
from tracer.timeline.model import ByteRange, RangeSource, Role
from tracer.tracefile import Trace

SYN, ACK, PSH, FIN = TCP_SYN, TCP_ACK, TCP_PSH, TCP_FIN
CHAT_PORT, BULK_PORT, VETH_PORT = 10086, 10087, 10088
BULK_SIZE = 1 << 20
VETH_MESSAGE_LEN = 23  # len(vm.netns_pair.MESSAGE)

SEND_CHAIN = (
    "__sys_sendto", "tcp_sendmsg_locked", "tcp_push", "__tcp_push_pending_frames",
    "tcp_write_xmit", "__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit",
)
RECV_CHAIN = ("__sys_recvfrom", "sock_recvmsg", "tcp_recvmsg", "__skb_datagram_iter")


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


class CheckFailed(Exception):
    pass


@dataclass
class Checker:
    """Collects named results; `need` stops a scenario whose premise is missing."""

    results: list[CheckResult] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append(CheckResult(name, ok, detail))
        return ok

    def need(self, name: str, ok: bool, detail: str = "") -> None:
        if not self.check(name, ok, detail):
            raise CheckFailed(name)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    trace_file: str
    workload: tuple[str, ...]  # `kpath demo ...` arguments
    check: Callable[[Trace, Checker], None]
    probes: str = "default"
    prepare: tuple[str, ...] = ()  # guest shell commands run before tracing
    trace_args: tuple[str, ...] = ()  # extra `kpath trace` options
    expect_loss: bool = False
    # The workload's own account of its calls, written beside the trace
    # (`--report FILE` appended to the workload), read by the check.
    report: str | None = None

    def run_checks(self, trace: Trace) -> list[CheckResult]:
        checker = Checker()
        checker.check("trace complete", trace.cut_short is None, trace.cut_short or "")
        if not self.expect_loss:
            checker.check("no lost events", trace.lost_total == 0, f"{trace.lost_total} lost")
        # Later checks depend on a failed premise; the premise is reported.
        with contextlib.suppress(CheckFailed):
            self.check(trace, checker)
        return checker.results


def _entries(trace: Trace, probe: str, port: int) -> list[Event]:
    return [e for e in trace.events
            if e.probe == probe and e.kind == Kind.ENTRY and port in (e.sport, e.dport)]


def _returns(trace: Trace, probe: str, port: int) -> list[Event]:
    return [e for e in trace.events
            if e.probe == probe and e.kind == Kind.RETURN and port in (e.sport, e.dport)]


def _first(events: list[Event], pred: Callable[[Event], bool]) -> Event | None:
    return next((e for e in events if pred(e)), None)


def _subsequence(events: list[Event], chain: tuple[str, ...]) -> list[Event] | None:
    out: list[Event] = []
    for ev in events:
        if len(out) < len(chain) and ev.kind == Kind.ENTRY and ev.probe == chain[len(out)]:
            out.append(ev)
    return out if len(out) == len(chain) else None


def _union_len(ranges: Iterator[tuple[int, int]]) -> tuple[int, int, int]:
    """Total bytes covered by [start, end) ranges; also the overall start/end."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    total = sum(end - start for start, end in merged)
    return total, (merged[0][0] if merged else 0), (merged[-1][1] if merged else 0)


# ---- the seeds' hello/hi chat ------------------------------------------


def check_chat(trace: Trace, c: Checker) -> None:
    """The seeds' gdb observations, as measured on Debian's 6.1 (DESIGN.md)."""
    events = sorted(trace.events, key=lambda e: e.ts_ns)
    attached = {p.name for p in trace.header.attached}
    missing = {p.name for p in trace.header.missing}
    unreported = [n for n in (*SEND_CHAIN, *RECV_CHAIN, "tcp_v4_send_synack")
                  if n not in attached | missing]
    c.check("every seed probe attached or reported missing", not unreported,
            ", ".join(unreported))

    dev = _entries(trace, "__dev_queue_xmit", CHAT_PORT)
    syn = _first(dev, lambda e: e.tcp_flags is not None and e.tcp_flags & (SYN | ACK) == SYN)
    c.need("SYN on the device", syn is not None and syn.dport == CHAT_PORT)
    assert syn is not None and syn.seq is not None
    client_port = syn.sport
    synack = _first(dev, lambda e: e.tcp_flags == SYN | ACK and e.ts_ns > syn.ts_ns)
    c.need("SYN-ACK on the device after the SYN", synack is not None
           and synack.ack == syn.seq + 1, "ack must be the client ISN + 1")
    assert synack is not None and synack.seq is not None
    synack_seq, synack_ts = synack.seq, synack.ts_ns
    final_ack = _first(dev, lambda e: e.tcp_flags == ACK and e.sport == client_port
                       and e.ack == synack_seq + 1 and e.ts_ns > synack_ts)
    c.need("handshake ACK on the device after the SYN-ACK", final_ack is not None)
    assert final_ack is not None and final_ack.seq is not None

    xmit = _entries(trace, "__tcp_transmit_skb", CHAT_PORT)
    xmit_syn = [e for e in xmit if e.tcp_flags is not None and e.tcp_flags & SYN]
    c.check("only the SYN passes __tcp_transmit_skb, not the SYN-ACK",
            [e.tcp_flags for e in xmit_syn] == [SYN],
            f"SYN-flagged transmits: {[e.flags_text for e in xmit_syn]}")
    client_sk = xmit_syn[0].sk if xmit_syn else -1
    c.check("the SYN's __tcp_transmit_skb is the client socket's",
            bool(xmit_syn) and xmit_syn[0].sport == client_port and xmit_syn[0].seq == syn.seq)
    xmit_ack = _first(xmit, lambda e: e.tcp_flags == ACK and e.seq == final_ack.seq
                      and e.ack == final_ack.ack)
    c.check("the handshake ACK passes __tcp_transmit_skb from the client socket",
            xmit_ack is not None and xmit_ack.sk == client_sk)

    sa = _entries(trace, "tcp_v4_send_synack", CHAT_PORT)
    c.check("the SYN-ACK takes tcp_v4_send_synack",
            len(sa) == 1 and sa[0].seq == synack.seq and sa[0].sport == CHAT_PORT
            and sa[0].ts_ns < synack.ts_ns, f"{len(sa)} tcp_v4_send_synack events")

    # accept() returns once the listener is woken: in softirq, on the
    # listener's socket, after the handshake ACK reached it (issue 9: the
    # task filter used to drop it, the listener being no traced flow).
    listener = sa[0].sk if sa else None
    woken = _first(events, lambda e: e.probe == "sock_def_readable" and e.sk == listener
                   and e.ts_ns > final_ack.ts_ns)
    c.check("the listener's wake-up (sock_def_readable) after the handshake ACK is traced",
            "sock_def_readable" not in attached or woken is not None,
            f"listener sk {listener:#x}" if listener else "no tcp_v4_send_synack")

    hi = _first(_entries(trace, "__sys_sendto", CHAT_PORT),
                lambda e: e.sport == client_port and e.length == 2)
    c.need("the client's 2-byte send is traced", hi is not None)
    assert hi is not None
    thread = [e for e in events if e.tid == hi.tid and e.ts_ns >= hi.ts_ns]
    chain = tuple(n for n in SEND_CHAIN if n in attached)
    found = _subsequence(thread, chain)
    c.need("the send chain runs in order in the writer's thread", found is not None,
           " -> ".join(chain))
    assert found is not None
    c.check("the send chain runs in process context",
            all(e.ctx == Context.TASK for e in found))
    seg = next(e for e in found if e.probe == "__tcp_transmit_skb")
    c.need("the 2 bytes leave in one PSH|ACK segment from the client socket",
           seg.length == 2 and seg.tcp_flags == PSH | ACK and seg.sk == client_sk)

    peer_ack = _first(xmit, lambda e: e.ts_ns > seg.ts_ns and e.sport == CHAT_PORT)
    c.check("then __tcp_transmit_skb from the server socket carries the ACK",
            peer_ack is not None and peer_ack.sk != client_sk and peer_ack.tcp_flags == ACK
            and peer_ack.ack == seg.end_seq and peer_ack.length == 0)

    rx = _first(_entries(trace, "tcp_v4_rcv", CHAT_PORT),
                lambda e: e.seq == seg.seq and e.sport == client_port)
    c.check("the receive runs in NET_RX softirq context, not the syscall's",
            rx is not None and rx.ctx in (Context.SOFTIRQ, Context.KSOFTIRQD)
            and rx.softirq == "NET_RX")

    # The recv may have started (and blocked) before the segment was sent:
    # look at each server recvfrom up to the thread's next one.
    copied: list[Event] | None = None
    starts = [e for e in _entries(trace, "__sys_recvfrom", CHAT_PORT) if e.sport == CHAT_PORT]
    for i, start in enumerate(starts):
        nxt = next((n.ts_ns for n in starts[i + 1:] if n.tid == start.tid), None)
        window = [e for e in events if e.tid == start.tid and e.ts_ns >= start.ts_ns
                  and (nxt is None or e.ts_ns < nxt)]
        got = _subsequence(window, RECV_CHAIN)
        if got and got[-1].seq == seg.seq:
            copied = got
            break
    c.need("the server's recv chain runs in order", copied is not None,
           " -> ".join(RECV_CHAIN))
    assert copied is not None
    ret = _first(_returns(trace, "__sys_recvfrom", CHAT_PORT),
                 lambda e: e.tid == copied[0].tid and e.ts_ns > copied[-1].ts_ns)
    c.check("__skb_datagram_iter copies exactly the 2 bytes, recv returns 2",
            copied[-1].length == 2 and copied[-1].end_seq == seg.end_seq
            and ret is not None and ret.ret == 2)


# ---- 1 MiB bulk transfer: byte accounting --------------------------------


def check_bulk(trace: Trace, c: Checker) -> None:
    sends = _returns(trace, "__sys_sendto", BULK_PORT)
    client_port = next((e.sport for e in _entries(trace, "__tcp_transmit_skb", BULK_PORT)
                        if e.tcp_flags == SYN), None)
    c.need("the connection's SYN is traced", client_port is not None)
    written = sum(e.ret for e in sends if e.sport == client_port and e.ret and e.ret > 0)
    c.check("bytes written (send returns) = 1 MiB", written == BULK_SIZE, f"{written}")

    data = [e for e in _entries(trace, "__tcp_transmit_skb", BULK_PORT)
            if e.sport == client_port and e.length and e.seq is not None
            and e.end_seq is not None]
    carried, first, last = _union_len((e.seq or 0, (e.seq or 0) + (e.length or 0))
                                      for e in data)
    c.check("bytes carried by data segments = bytes written", carried == written,
            f"{carried} in {len(data)} segments")
    c.check("the data segments cover one contiguous range", last - first == carried)

    recvs = _returns(trace, "__sys_recvfrom", BULK_PORT)
    read = sum(e.ret for e in recvs if e.sport == BULK_PORT and e.ret and e.ret > 0)
    c.check("bytes read (recv returns) = bytes written", read == written, f"{read}")
    copies = [e for e in _entries(trace, "__skb_datagram_iter", BULK_PORT)
              if e.sport == BULK_PORT and e.seq is not None and e.length]
    copied, cfirst, clast = _union_len((e.seq or 0, (e.seq or 0) + (e.length or 0))
                                       for e in copies)
    c.check("bytes copied to user (__skb_datagram_iter) = bytes written",
            copied == written and sum(e.length or 0 for e in copies) == written,
            f"{copied}")
    c.check("the bytes copied are the bytes carried", (cfirst, clast) == (first, last))
    rx = [e for e in _entries(trace, "tcp_v4_rcv", BULK_PORT)
          if e.sport == client_port and e.length]
    rx_bytes, _, _ = _union_len((e.seq or 0, (e.seq or 0) + (e.length or 0)) for e in rx)
    c.check("bytes received by tcp_v4_rcv = bytes carried", rx_bytes == carried, f"{rx_bytes}")


# ---- two namespaces joined by veth -------------------------------------


def check_veth(trace: Trace, c: Checker) -> None:
    from tracer.timeline import build_timeline  # the linking under test

    attached = {p.name for p in trace.header.attached}
    c.check("veth_xmit is attached", "veth_xmit" in attached)
    xmit = [e for e in _entries(trace, "__tcp_transmit_skb", VETH_PORT)
            if e.dport == VETH_PORT and e.length == VETH_MESSAGE_LEN]
    c.need("the client's data segment passes __tcp_transmit_skb", len(xmit) == 1)
    seg = xmit[0]
    rcv = [e for e in _entries(trace, "tcp_v4_rcv", VETH_PORT)
           if e.seq == seg.seq and e.end_seq == seg.end_seq and e.sport == seg.sport]
    c.need("the server's tcp_v4_rcv sees the same segment", len(rcv) == 1)
    c.check("sender and receiver are in different network namespaces",
            seg.netns != 0 and rcv[0].netns != 0 and seg.netns != rcv[0].netns,
            f"sender netns {seg.netns}, receiver netns {rcv[0].netns}")
    c.check("the segment crosses veth_xmit",
            any(e.seq == seg.seq for e in _entries(trace, "veth_xmit", VETH_PORT)))
    tl = build_timeline(trace)
    by_event = {id(te.ev): te for te in tl.events}
    a, b = by_event.get(id(seg)), by_event.get(id(rcv[0]))
    linked = a is not None and b is not None and tl.step_of(a) is tl.step_of(b)
    c.check("the timeline links the sender's transmit and the receiver's tcp_v4_rcv "
            "in one packet", linked)
    copy = [e for e in _entries(trace, "__skb_datagram_iter", VETH_PORT)
            if e.seq == seg.seq]
    c.check("the server copies the 23 bytes to user space",
            len(copy) == 1 and copy[0].length == VETH_MESSAGE_LEN)


# ---- a ring buffer too small on purpose: loss is counted and shown -------


def check_lossy(trace: Trace, c: Checker) -> None:
    from tracer.timeline import build_timeline

    trailer = trace.trailer
    c.need("the trace ends with a trailer", trailer is not None)
    assert trailer is not None
    c.need("events were lost", trailer.lost > 0, "a 4 KiB ring buffer kept up: nothing lost")
    c.check("the lost records add up to the trailer's count",
            sum(rec.count for rec in trace.lost) == trailer.lost,
            f"{sum(rec.count for rec in trace.lost)} vs {trailer.lost}")
    c.check("losses are counted per probe",
            all(rec.probe for rec in trace.lost if rec.since_ns is None)
            and sum(trailer.lost_by_probe.values()) == trailer.lost,
            f"{trailer.lost_by_probe}")
    c.check("the workload itself succeeded", trailer.command_exit == 0)
    gaps = build_timeline(trace).gaps
    c.check("the timeline marks the gaps", len(gaps) == len(trace.lost) and len(gaps) > 0,
            f"{len(gaps)} gaps for {len(trace.lost)} lost records")


# ---- every way into and out of a socket: kernel-placed byte ranges -------

MIXED_PORT, UNTRACED_PORT = 10090, 10091
# The probes of the default profile but the sendfile and splice paths'
# own: those bytes reach the stream by no traced call.
PAGE_SEND_PROBES = ("do_sendfile", "__x64_sys_splice", "tcp_sendpage")
NO_PAGE_SEND = ",".join(n for n in PROFILES["default"] if n not in PAGE_SEND_PROBES)
UNTRACED_WAYS = frozenset({"sendfile", "splice"})
# write and writev (read and readv) are one probe: the socket's file operation.
TRACED_AS = {"write": "write/writev", "writev": "write/writev", "read": "read/readv",
             "readv": "read/readv"}


def as_traced(calls: list[tuple[str, int]]) -> dict[str, int]:
    """The workload's bytes by way, as the trace names the ways."""
    out: dict[str, int] = {}
    for way, n in calls:
        out[TRACED_AS.get(way, way)] = out.get(TRACED_AS.get(way, way), 0) + n
    return out


def _expected(calls: list[tuple[str, int]], untraced: frozenset[str]
              ) -> tuple[list[tuple[str, ByteRange]], list[ByteRange]]:
    """Each traced call's stream range (from ISN+1, in call order), and the
    merged ranges of the untraced ones."""
    pos = 1
    traced: list[tuple[str, ByteRange]] = []
    other: list[ByteRange] = []
    for way, n in calls:
        r = ByteRange(pos, pos + n)
        if way not in untraced:
            traced.append((way, r))
        elif other and other[-1].hi == r.lo:
            other[-1] = ByteRange(other[-1].lo, r.hi)
        else:
            other.append(r)
        pos += n
    return traced, other


def _check_mixed(trace: Trace, c: Checker, port: int, report: str,
                 untraced: frozenset[str]) -> None:
    from tracer.timeline import build_timeline
    from tracer.timeline.accounting import account_bytes
    from tracer.timeline.byte_ranges import message_bytes
    from vm.mixed import read_report

    path = Path(trace.path).parent / report
    c.need("the workload's report is beside the trace", path.is_file(), str(path))
    calls = read_report(path)
    c.check("the workload ran every call", trace.trailer is not None
            and trace.trailer.command_exit == 0 and calls.read == calls.written)
    tl = build_timeline(trace)
    flows = [fl for fl in tl.flows if fl.server.port == port]
    c.need("one flow to the workload's port", len(flows) == 1, f"{len(flows)} flows")
    fl = flows[0]
    a = account_bytes(tl, fl.number, Role.CLIENT)
    c.check("accounting closes: written = carried = read = copied = the workload's total",
            a.balanced and a.written_total == a.carried == a.read_total == a.copied
            == calls.written,
            f"written {a.written_total}, carried {a.carried}, read {a.read_total}, "
            f"copied {a.copied}, workload {calls.written}")
    want_ways = as_traced([(w, n) for w, n in calls.writes if w not in untraced])
    got_ways = {w: n for w, n in a.written_by if w in want_ways}
    c.check("bytes written by each traced way = the workload's", got_ways == want_ways,
            f"trace {dict(a.written_by)}, workload {want_ways}")
    c.check("bytes read by each way = the workload's",
            dict(a.read_by) == as_traced(calls.reads),
            f"trace {dict(a.read_by)}, workload {as_traced(calls.reads)}")
    traced, other = _expected(calls.writes, untraced)
    sends = [m for m in tl.messages(fl.number) if m.op == "send" and m.side is Role.CLIENT]
    got = [(m.syscall, m.byte_range, m.range_from) for m in sends]
    c.check("every send's range is where the kernel put it (the workload's order)",
            len(sends) == len(traced) and all(
                m.byte_range == r and m.range_from is RangeSource.KERNEL
                for m, (_, r) in zip(sends, traced, strict=False)),
            f"trace {[(s, str(r), str(f)) for s, r, f in got]}, "
            f"workload {[(w, str(r)) for w, r in traced]}")
    c.check("the bytes written another way are the untraced calls'",
            [r for r, _ in a.written_other] == other and not any(
                way in want_ways for _, way in a.written_other),
            f"trace {[(str(r), w) for r, w in a.written_other]}, "
            f"workload {[str(r) for r in other]}")
    c.check("every byte read was read by a traced call (no untraced reader: splice out "
            "of the socket and io_uring recv are traced)", not a.read_other,
            f"trace {[(str(r), w) for r, w in a.read_other]}")
    uring = [(m.syscall, message_bytes(m)) for m in tl.messages(fl.number)
             if m.syscall in ("io_send", "io_recv")]
    want = sorted([("io_send", n) for w, n in calls.writes if w == "io_uring send"]
                  + [("io_recv", n) for w, n in calls.reads if w == "io_uring recv"])
    c.check("each io_uring send/recv is an io_uring message of the workload's bytes",
            sorted(x for x in uring if (x[1] or 0) > 0) == want, f"trace {uring}, workload {want}")
    stream = fl.streams[fl.client]
    c.check("no placement problem (no 'may be shifted' warning)", not stream.problems,
            "; ".join(stream.problems))


def check_mixed(trace: Trace, c: Checker) -> None:
    _check_mixed(trace, c, MIXED_PORT, "mixed_calls.json", frozenset())


def check_untraced(trace: Trace, c: Checker) -> None:
    _check_mixed(trace, c, UNTRACED_PORT, "mixed_untraced_calls.json", UNTRACED_WAYS)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("chat", "the seeds' hello/hi chat on loopback", "hello_hi.kpath",
             ("chat",), check_chat),
    Scenario("bulk", "1 MiB bulk transfer: byte accounting closes exactly",
             "bulk_1mib.kpath", ("bulk", "--size", "1MiB"), check_bulk),
    Scenario("veth", "two network namespaces joined by a veth pair", "veth_netns.kpath",
             ("veth",), check_veth, prepare=("modprobe veth",)),
    Scenario("lossy", "1 MiB through a 4 KiB ring buffer: losses counted and shown",
             "bulk_lossy.kpath", ("bulk", "--size", "1MiB", "--port", "10089"), check_lossy,
             trace_args=("--buffer-pages", "1"), expect_loss=True),
    Scenario("mixed", "send, sendfile, write, sendmsg, writev, splice, sendmmsg, io_uring "
             "send; recv, read, recvmsg, readv, recvmmsg, io_uring recv, splice: "
             "kernel-placed ranges, accounting closes", "mixed.kpath",
             ("mixed", "--port", str(MIXED_PORT)), check_mixed, report="mixed_calls.json"),
    Scenario("untraced", "the mixed stream with sendfile and splice untraced: their bytes "
             "are told apart, every traced send still placed exactly", "mixed_untraced.kpath",
             ("mixed", "--port", str(UNTRACED_PORT)), check_untraced, probes=NO_PAGE_SEND,
             report="mixed_untraced_calls.json"),
)
BY_SCENARIO = {s.name: s for s in SCENARIOS}
