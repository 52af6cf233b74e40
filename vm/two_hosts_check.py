"""`kpath vm validate -s two-hosts`: run the two-guest rig (vm/two_hosts.py),
merge the two traces, and check the merge.

Checks: both traces whole, from two boots; the merge matched every segment
either host put on the wire with exactly one the other took off, on both
connections (chat and transfer); byte accounting closes across the hosts
(written on A = carried = read on B, both ways); and the offset explains
the timestamps: no segment's wire time is negative beyond the stated
uncertainty, in the matches and in the merged trace's own timeline.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tracer.merge import MergeError, MergeResult, merge_traces
from tracer.merge.crossings import Match, WireKey, crossings
from tracer.timeline import Timeline, build_timeline
from tracer.timeline.accounting import ByteAccount, account_all
from tracer.timeline.latency import Hop, Point, packet_latencies
from tracer.timeline.segments import signed_seq_delta
from tracer.tracefile import Trace, TraceFormatError, read_trace
from vm.errors import VmError
from vm.progress import Progress
from vm.runner import shared_out
from vm.scenarios import Checker, CheckFailed, CheckResult
from vm.two_hosts import BULK_PORT, BULK_SIZE, CHAT_PORT, guest_script, guests, run_two_guests

NAME = "two-hosts"
TITLE = "two guests on a virtual link: chat and 1 MiB, each end traced, merged"
TRACE_A, TRACE_B, MERGED = "two_hosts_a.kpath", "two_hosts_b.kpath", "two_hosts_ab.kpath"


def guest_commands(rel_out: Path, backend: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The two guests' commands (client A, server B), paths relative to the share."""
    a, b = guests()
    ready = str(rel_out / ".two-hosts-ready")
    cmds = []
    for me, role, name in ((a, "client", TRACE_A), (b, "server", TRACE_B)):
        trace = ["kpath", "trace", "--backend", backend, "-o", str(rel_out / name)]
        peer = ["kpath", "demo", "peer", "--role", role, "--addr", b.addr, "--ready", ready]
        line = f"mkdir -p {shlex.quote(str(rel_out))}; rm -f {shlex.quote(str(rel_out / name))}"
        cmds.append(("sh", "-c", f"{line}; {guest_script(me, trace, peer)}"))
    return cmds[0], cmds[1]


def free_port() -> int:
    """A TCP port free on the host's loopback, for the guests' link."""
    for _ in range(50):
        port = 20000 + secrets.randbelow(40000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise VmError("no free TCP port on 127.0.0.1 for the guests' link")


def check_merge(a: Path, b: Path, merged: Path) -> list[CheckResult]:
    c = Checker()
    with contextlib.suppress(CheckFailed):
        _checks(a, b, merged, c)
    return c.results


def _checks(a: Path, b: Path, merged: Path, c: Checker) -> None:
    try:
        ta, tb = read_trace(a), read_trace(b)
    except TraceFormatError as exc:
        c.need("both traces readable", False, str(exc))
        return
    for t in (ta, tb):
        c.check(f"{Path(t.path).name} complete, nothing lost",
                t.cut_short is None and t.lost_total == 0,
                t.cut_short or f"{t.lost_total} lost")
    boots = {s.boot_id for t in (ta, tb) for s in t.header.sources}
    c.check("two hosts, two boots", len(boots) == 2 and "" not in boots, f"{boots}")
    try:
        result = merge_traces([a, b], merged)
    except (MergeError, TraceFormatError) as exc:
        c.need("kpath merge joins the two traces", False, str(exc))
        return
    c.check("kpath merge joins the two traces", True)
    pairing = result.inputs[1].pairing
    c.need("B paired with A", pairing is not None)
    assert pairing is not None
    # The other host's clock -> the sender's (crossings.py: B's = A's + offset),
    # to within the estimate's uncertainty.
    est = pairing.estimate
    hosts = {g.addr: _Host(crossings(t).sent, _blind_windows(t),
                               (-est.offset_ns if i == 0 else est.offset_ns) + est.uncertainty_ns)
               for i, (g, t) in enumerate(zip(guests(), (ta, tb), strict=True))}
    skipped = _matching(result, c, hosts)
    _accounting_and_wire(merged, result, c, skipped)


@dataclass(frozen=True)
class _Host:
    sent: dict[WireKey, list[int]]  # its segments put on the wire, its clock
    blind: list[tuple[int, int]]  # its trace's blind windows (since, until)
    latest: int  # a reception's time on the other host + this: the latest send time


def _blind_windows(t: Trace) -> list[tuple[int, int]]:
    return [(rec.since_ns, rec.ts_ns) for rec in t.lost if rec.since_ns is not None]


def _skipped(key: WireKey, rx: int, sender: _Host | None) -> bool:
    """Whether a segment received with no send in its sender's trace was sent
    inside one of the sender's recorded blind windows (every kprobe program
    of that CPU skipped: a softirq sending it ran inside one). When it was
    sent is bracketed on the sender's own clock by its neighbours on the
    connection: TCP sends new data and acknowledgements in order, so it left
    after every segment of the connection's direction with a lower
    (end of data, ack) and before every one with a higher, and before it
    was received (`rx`, the receiver's clock)."""
    if sender is None:
        return False
    src, dst, seq, payload, _, ack = key
    end, ack = seq + payload, ack or 0
    lo, hi = -1, rx + sender.latest
    for other, times in sender.sent.items():
        if other[0] != src or other[1] != dst:
            continue
        o_end, o_ack = other[2] + other[3], other[5] or 0
        same_end = o_end == end
        earlier = (signed_seq_delta(end, o_end) > 0
                   or (same_end and signed_seq_delta(ack, o_ack) > 0))
        later = (signed_seq_delta(o_end, end) > 0
                 or (same_end and signed_seq_delta(o_ack, ack) > 0))
        if earlier:  # first transmissions: a retransmission may come later
            lo = max(lo, min(times))
        elif later:
            hi = min(hi, min(times))
    return any(since <= hi and until >= lo for since, until in sender.blind)


def _received_blind(key: WireKey, sent: int, matches: Sequence[Match],
                    windows: list[tuple[int, int]]) -> bool:
    """Whether a segment sent with no reception in its receiver's trace was
    received inside one of the receiver's recorded blind windows (a NET_RX
    softirq with every kprobe program skipped). The link is one virtual
    wire, first in first out: on the receiver's own clock it arrived after
    every segment of its direction sent before it and before every one sent
    after it."""
    src, dst = key[0], key[1]
    lo, hi = -1, None
    for m in matches:
        if m.key[0] != src or m.key[1] != dst:
            continue
        if m.sent_ns < sent:
            lo = max(lo, m.received_ns)
        elif m.sent_ns > sent:
            hi = m.received_ns if hi is None else min(hi, m.received_ns)
    return any(until >= lo and (hi is None or since <= hi) for since, until in windows)


def _matching(result: MergeResult, c: Checker, hosts: dict[str, _Host]
              ) -> list[WireKey]:
    """hosts: each guest's sends and blind windows by its address. Returns
    the segments received whose send its sender's kernel skipped."""
    pairing = result.inputs[1].pairing
    assert pairing is not None
    est = pairing.estimate
    c.check("offset estimated with its uncertainty, in the merged header",
            result.header.sources[1].shift_uncertainty_ns == est.uncertainty_ns
            and result.header.sources[1].shift_ns == est.shift_ns,
            f"{result.header.sources[1]}")
    ports = {p for m in pairing.matches for p in (m.key[0].port, m.key[1].port)}
    c.check("both connections (chat, transfer) joined", {CHAT_PORT, BULK_PORT} <= ports,
            f"ports {sorted(ports)}")
    silent: list[WireKey] = []
    other: list[tuple[WireKey, int]] = []
    for key, rx in pairing.unmatched_received:
        if _skipped(key, rx, hosts.get(key[0].addr)):
            silent.append(key)
        else:
            other.append((key, rx))
    # A pass names the segments the windows explained (shown as "ok").
    explained = f": {len(silent)} sent inside a blind window" if silent and not other else ""
    c.check("every segment received on one host matched a send on the other "
            f"(or was sent inside a blind window the sender recorded){explained}",
            not other, f"{len(other)} unmatched, first {other[:2]}; "
            f"{len(silent)} sent inside a blind window")
    per = Counter((m.key, m.sent_ns, m.a_to_b) for m in pairing.matches)
    c.check("no send matched twice", all(n == 1 for n in per.values()))
    # A frame the link dropped: its sender's TCP sent the segment again, and
    # that copy was received.
    resent = [(k, t) for k, t in pairing.unmatched_sent
              if any(m.key == k and m.sent_ns > t for m in pairing.matches)]
    never = [u for u in pairing.unmatched_sent if u not in resent]
    # Each guest's windows, as the receiver of the other's segments.
    unseen = [(k, t) for k, t in never if k[1].addr in hosts
              and _received_blind(k, t, pairing.matches, hosts[k[1].addr].blind)]
    explained = (f": {len(unseen)} received inside a blind window"
                 if unseen and len(unseen) == len(never) else "")
    c.check("every segment sent was matched exactly once, lost on the link and sent again, "
            f"or received inside a blind window the receiver recorded{explained}",
            len(unseen) == len(never),
            f"{len(never) - len(unseen)} sends never received, first "
            f"{[u for u in never if u not in unseen][:2]}; "
            f"{len(unseen)} received inside a blind window")
    worst = min((m.received_ns - est.offset_ns - m.sent_ns if m.a_to_b
                 else m.received_ns + est.offset_ns - m.sent_ns) for m in pairing.matches)
    c.check("no wire time below -uncertainty (matches)", worst >= -est.uncertainty_ns,
            f"lowest {worst} ns, uncertainty {est.uncertainty_ns} ns")
    return silent


def _closes(acc: ByteAccount, tl: Timeline, skipped: list[WireKey]) -> bool:
    """ByteAccount.balanced, the data of segments whose send was skipped
    (in a blind window: _skipped) counted as carried."""
    fl = tl.flow(acc.flow)
    src, dst = fl.endpoint_of(acc.sender), fl.endpoint_of(acc.sender.peer)
    unseen = sum(k[3] for k in skipped if k[0] == src and k[1] == dst)
    return (acc.written_total == acc.carried + unseen == acc.read_total
            and (acc.copies == 0 or acc.copied == acc.read))


def _accounting_and_wire(merged: Path, result: MergeResult, c: Checker,
                         skipped: list[WireKey]) -> None:
    tl = build_timeline(read_trace(merged))
    accounts = [acc for acc in account_all(tl) if acc.written_total or acc.read_total]
    bulk = [acc for acc in accounts if acc.written_total == BULK_SIZE]
    c.check("1 MiB written on A, carried, read on B (data of sends skipped in a blind "
            "window counted)", len(bulk) == 1 and _closes(bulk[0], tl, skipped), f"{bulk}")
    unbalanced = [acc for acc in accounts if not _closes(acc, tl, skipped)]
    c.check("byte accounting closes across the hosts (every flow, both ways)",
            bool(accounts) and not unbalanced, f"{unbalanced[:2]}")
    pairing = result.inputs[1].pairing
    assert pairing is not None
    unc = pairing.estimate.uncertainty_ns
    lat = packet_latencies(tl)
    wires = [pl.hops[Hop.WIRE].ns for pl in lat if Hop.WIRE in pl.hops]
    # A packet with events on both hosts that reached the receiver's device.
    crossed = [pl for pl in lat if len({te.ev.source for te in pl.packet.events}) > 1
               and Point.RX in pl.points]
    c.check("every packet of the merged timeline seen on both hosts has its wire hop",
            len(wires) == len(crossed) and bool(wires),
            f"{len(wires)} wire hops, {len(crossed)} packets across")
    c.check("no negative wire hop beyond the uncertainty (merged trace)",
            bool(wires) and min(wires) >= -unc, f"lowest {min(wires, default=0)} ns, +-{unc}")


def validate_two_hosts(out: Path, share: Path, backend: str, timeout: float,
                       cache: Path | None, kernel: str, progress: Progress,
                       run: bool = True) -> list[CheckResult]:
    share = share.resolve()
    out_abs = (share / out).resolve() if not out.is_absolute() else out.resolve()
    if run:
        out_abs, rel = shared_out(out, share)
        codes = run_two_guests(guest_commands(rel, backend), share, free_port(), timeout,
                               cache, kernel, progress)
        if codes != (0, 0):
            raise VmError(f"the two-host run failed (guest exits {codes[0]}, {codes[1]})")
    return check_merge(out_abs / TRACE_A, out_abs / TRACE_B, out_abs / MERGED)
