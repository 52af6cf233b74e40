"""Correlation on every real recording in tests/data: byte ranges, byte
accounting, latency hops, namespaces, the causal graph.

Values change with each recording: expectations are computed from the
trace's own events, and the tests assert relations between them.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from probes.catalog import BY_NAME, Direction, Layer, Returns
from tests.replay.recordings import DATA, ONE_END, RECORDINGS, needs_recordings
from tracer.events import TCP_RST, Kind
from tracer.timeline import (
    Message,
    Packet,
    Role,
    SegmentType,
    Timeline,
    build_timeline,
    carriers,
    writers,
)
from tracer.timeline.accounting import account_all, account_bytes
from tracer.timeline.byte_ranges import follow_bytes, uncovered
from tracer.timeline.causal import build_graph
from tracer.timeline.latency import PATH_HOPS, Hop, packet_latencies
from tracer.tracefile import read_trace
from vm.scenarios import CHAT_PORT

pytestmark = needs_recordings


@pytest.fixture(params=RECORDINGS, ids=[p.name for p in RECORDINGS])
def timeline(request: pytest.FixtureRequest) -> Timeline:
    return build_timeline(read_trace(request.param))


def complete(tl: Timeline) -> bool:
    return not tl.trace.cut_short and not tl.trace.lost_total


def test_every_recv_range_is_covered_by_segments(timeline: Timeline) -> None:
    for fl in timeline.flows:
        for m in fl.steps:
            if not isinstance(m, Message) or m.op != "recv" or m.byte_range is None:
                continue
            carried = [st.byte_range for p in m.data_from
                       if isinstance(st := timeline.steps[p], Packet) and st.byte_range]
            assert uncovered(m.byte_range, carried) == [], m.title


def test_every_byte_written_is_followed_to_its_read(timeline: Timeline) -> None:
    if not complete(timeline):
        pytest.skip("needs a complete recording")
    if Path(timeline.trace.path).name in ONE_END:
        pytest.skip("one end only: the reads are in the other host's trace")
    for fl in timeline.flows:
        for sender in (Role.CLIENT, Role.SERVER):
            for trail in follow_bytes(timeline, fl.number, sender):
                assert trail.complete, (trail.send.title, trail.not_carried, trail.not_read)
                assert trail.reads and trail.segments


def test_a_calls_packets_are_its_own_and_handled_ones_the_peers(timeline: Timeline) -> None:
    """message.packets: what this end sent during the call; handled: the
    peer's packets its receive path ran inside the call (backlog, loopback)."""
    for st in timeline.steps:
        if not isinstance(st, Message):
            continue
        assert not set(st.packets) & set(st.handled), st.title
        for pid, own in [(p, True) for p in st.packets] + [(p, False) for p in st.handled]:
            pkt = timeline.steps[pid]
            assert isinstance(pkt, Packet)
            if pkt.sender is not None and st.side is not None:
                assert (pkt.sender == st.side) is own, (st.title, pkt.title)


def test_every_send_lists_the_bytes_each_packet_carried(timeline: Timeline) -> None:
    for st in timeline.steps:
        if isinstance(st, Message) and st.op == "send" and st.byte_range is not None:
            links = carriers(timeline, st)
            assert [p.id for p, _ in links] == st.carried_by
            for pkt, part in links:
                assert st.byte_range.contains(part) and pkt.byte_range is not None \
                    and pkt.byte_range.contains(part)
                assert (st, part) in writers(timeline, pkt)


def _returns(probe: str) -> Returns | None:
    spec = BY_NAME.get(probe)
    return spec.ret if spec is not None else None


def test_byte_accounting_balances(timeline: Timeline) -> None:
    if not complete(timeline):
        pytest.skip("needs a complete recording")
    if Path(timeline.trace.path).name in ONE_END:
        pytest.skip("one end only: the reads are in the other host's trace (the merged "
                    "trace's accounting: tests/replay/test_two_hosts.py)")
    for acct in account_all(timeline):
        fl = timeline.flow(acct.flow)
        sender = fl.endpoint_of(acct.sender)
        # written: straight from the send syscalls' return events of that
        # side; for those whose return is no byte count (sendmmsg, io_send),
        # the TCP calls' returns inside them
        rets = [te.ev.ret for te in fl.events if te.layer is Layer.SYSCALL
                and te.direction is Direction.TX
                and te.ev.kind is Kind.RETURN and te.endpoint == sender
                and te.ev.ret is not None and _returns(te.probe) is not Returns.COUNT]
        inner = [te.ev.ret for st in fl.steps if isinstance(st, Message) and st.op == "send"
                 and st.side is acct.sender
                 and _returns(st.syscall) is Returns.COUNT for te in st.events
                 if te.layer is Layer.TCP and te.ev.kind is Kind.RETURN
                 and _returns(te.probe) is Returns.VALUE and te.ev.ret is not None]
        assert acct.written == sum(r for r in rets + inner if r > 0)
        assert acct.balanced, acct
        assert acct.copies == 0 or acct.copied == acct.read


def test_chat_client_to_server_accounting(timeline: Timeline) -> None:
    fl = next((f for f in timeline.flows if f.server.port == CHAT_PORT), None)
    if fl is None or not complete(timeline):
        pytest.skip("needs a complete chat recording")
    sends = [m.nbytes for m in fl.steps
             if isinstance(m, Message) and m.op == "send" and m.side is Role.CLIENT]
    acct = account_bytes(timeline, fl.number, Role.CLIENT)
    assert sends and all(n is not None and n > 0 for n in sends)
    assert acct.written == sum(n for n in sends if n) == acct.carried == acct.read
    if acct.carried_at == "__tcp_transmit_skb":
        payloads = [p.segment.payload for p in fl.steps if isinstance(p, Packet)
                    and p.sender is Role.CLIENT and p.segment.payload]
        assert acct.carried == sum(payloads)


def test_chat_hi_packet_latency_hops(timeline: Timeline) -> None:
    fl = next((f for f in timeline.flows if f.server.port == CHAT_PORT), None)
    if fl is None:
        pytest.skip("not a chat recording")
    hi = next(p for p in fl.steps if isinstance(p, Packet) and p.sender is Role.CLIENT
              and p.segment.payload == 2)
    (pl,) = [pl for pl in packet_latencies(timeline, fl.number) if pl.packet is hi]
    attached = {p.name for p in timeline.trace.header.attached}
    if "__tcp_transmit_skb" not in attached:
        # Tracepoints only: the hops span the layers that could not be seen.
        assert {Hop.SYSCALL_DEVICE, Hop.DEVICE_RX, Hop.RX_QUEUE, Hop.QUEUE_COPY,
                Hop.SYSCALL_COPY} <= set(pl.hops)
        assert Hop.SYSCALL_TCP not in pl.hops and Hop.TCP_COPY not in pl.hops
        return
    assert {Hop.SYSCALL_TCP, Hop.TCP_COPY} <= set(pl.hops)
    assert Hop.SYSCALL_DEVICE not in pl.hops and Hop.SYSCALL_COPY not in pl.hops
    if timeline.trace.header.profile == "full":
        assert list(pl.hops) == list(PATH_HOPS)
        assert pl.hops[Hop.SYSCALL_TCP].start.probe == "__sys_sendto"
        assert pl.hops[Hop.QUEUE_COPY].end.probe == "__skb_datagram_iter"


def test_hops_chain_along_the_path(timeline: Timeline) -> None:
    chain = (Hop.TCP_IP, Hop.IP_DEVICE, Hop.DEVICE_RX, Hop.RX_QUEUE, Hop.QUEUE_COPY)
    for pl in packet_latencies(timeline):
        for ht in pl.hops.values():
            assert ht.ns >= 0 and ht.start.index < ht.end.index
        if all(h in pl.hops for h in (*chain, Hop.TCP_COPY)):
            assert sum(pl.hops[h].ns for h in chain) == pl.hops[Hop.TCP_COPY].ns
        if pl.gap:
            assert timeline.gaps


def test_flows_across_namespaces_link_both_ends(timeline: Timeline) -> None:
    crossing = [f for f in timeline.flows
                if len({ns for ns in f.netns_of.values() if ns}) == 2]
    if not crossing:
        pytest.skip("no connection between two namespaces")
    for fl in crossing:
        assert fl.key.scope == 0 and fl.netns == 0
        for p in fl.steps:
            if not isinstance(p, Packet) or p.sender is None:
                continue
            sent_ns = fl.netns_of[fl.endpoint_of(p.sender)]
            seen = {te.probe: te.ev.netns for te in p.events}
            if "__tcp_transmit_skb" in seen and "tcp_v4_rcv" in seen:
                assert seen["__tcp_transmit_skb"] == sent_ns
                assert seen["tcp_v4_rcv"] == fl.netns_of[fl.endpoint_of(p.sender.peer)]
        assert any(isinstance(p, Packet) and p.segment.payload and p.read_by
                   for p in fl.steps)


def test_sockets_belong_to_one_end(timeline: Timeline) -> None:
    for fl in timeline.flows:
        assert not set(fl.socks_of[fl.client]) & set(fl.socks_of[fl.server])


def test_handshake_segments_are_not_retransmissions(timeline: Timeline) -> None:
    for p in (st for st in timeline.steps if isinstance(st, Packet)):
        if p.category in (SegmentType.SYN, SegmentType.SYN_ACK) and p.retransmission:
            assert any(te.probe == "tcp_retransmit_skb" for te in p.events) or p.again


def test_bulk_recording_moves_one_mebibyte(timeline: Timeline) -> None:
    if not timeline.trace.path.endswith("bulk_1mib.kpath"):
        pytest.skip("not the bulk recording")
    (acct,) = [a for a in account_all(timeline) if a.written]
    assert acct.written == acct.carried == acct.read == 1 << 20


def test_causal_graph(timeline: Timeline) -> None:
    g = build_graph(timeline)
    assert g.number_of_nodes() == len(timeline.events)
    assert nx.is_directed_acyclic_graph(g)
    assert {d["kind"] for _, _, d in g.edges(data=True)} <= {"next", "handoff", "bytes"}
    for fl in timeline.flows:
        for m in fl.steps:
            if isinstance(m, Message) and m.op == "recv" and m.data_from:
                last = m.events[-1].index
                assert any("bytes" in g.edges[a, last]["kinds"] for a in g.predecessors(last))


def test_replay_stats(timeline: Timeline) -> None:
    res = CliRunner().invoke(replay_cmd, [timeline.trace.path, "--stats"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("\nflow ") == len(timeline.flows)


def test_the_kernels_reply_socket_is_not_the_servers() -> None:
    """connect() to a closed port: the RST|ACK leaves from the kernel's
    control socket (ip_send_unicast_reply: IP layer first, no TCP transmit),
    which is no socket of the server's end (there is none)."""
    tl = build_timeline(read_trace(DATA / "closed_port_rst.kpath"))
    (fl,) = tl.flows
    (rst,) = [p for p in tl.packets() if p.segment.flags & TCP_RST]
    assert rst.sender is Role.SERVER and rst.events[0].probe == "__ip_local_out"
    reply = {te.ev.sk for te in rst.tx_events}
    assert fl.reply_socks == sorted(reply) and len(reply) == 1
    assert fl.socks_of.get(fl.server, []) == [] and fl.socks_of[fl.client]
    assert not set(fl.socks_of[fl.client]) & reply
