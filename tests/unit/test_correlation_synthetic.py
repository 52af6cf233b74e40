"""Correlation rules on synthetic event lists: flows across namespaces,
byte ranges, GSO pieces, retransmissions, accounting, latency hops, lost-event
gaps and causal edges (docs/correlation.md)."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest
from click.testing import CliRunner

from kpath.cli_replay import replay_cmd
from tests.unit.synthetic_traces import (
    ACK,
    CLIENT_ISN,
    CLIENT_PORT,
    CLIENT_SK,
    CLIENT_TID,
    LO,
    PSH,
    RST,
    SERVER_ISN,
    SERVER_PORT,
    SERVER_SK,
    SERVER_TID,
    SYN,
    SyntheticTrace,
    hdr,
    sock,
    synthetic_bulk,
    synthetic_chat,
    synthetic_full_segment,
    synthetic_handshake,
    synthetic_transmit,
    synthetic_wire,
)
from tracer.events import Endpoint
from tracer.timeline import (
    ByteRange,
    Message,
    Packet,
    RangeSource,
    Role,
    SegmentType,
    Timeline,
    build_timeline,
)
from tracer.timeline.accounting import account_all, account_bytes
from tracer.timeline.byte_ranges import follow_bytes
from tracer.timeline.causal import build_graph, edges_of_kind
from tracer.timeline.columnar import stats_input_of, trace_stats
from tracer.timeline.latency import (
    LOSS_WINDOW_NS,
    PATH_HOPS,
    Hop,
    PacketClass,
    latency_stats,
    packet_latencies,
)
from tracer.tracefile import Lost
from viz.stats_columnar import render_trace_stats
from viz.stats_text import render_stats

CLIENT = Endpoint(LO, CLIENT_PORT)
SERVER = Endpoint(LO, SERVER_PORT)
NS_A, NS_B = 4026532180, 4026532232
VETH_CLIENT, VETH_SERVER = "10.199.0.1", "10.199.0.2"


def pkts(tl: Timeline) -> list[Packet]:
    return [s for s in tl.steps if isinstance(s, Packet)]


def msgs(tl: Timeline, op: str | None = None) -> list[Message]:
    return [s for s in tl.steps if isinstance(s, Message) and (op is None or s.op == op)]


def send(t: SyntheticTrace, nbytes: int, *, seq: int | None, ret: int | None = None,
         client: bool = True, ack: int = SERVER_ISN + 1, skb: int = 0x9000,
         returns: bool = True) -> None:
    """A send syscall; its segment (seq given) goes out inside it."""
    lp, rp = (CLIENT_PORT, SERVER_PORT) if client else (SERVER_PORT, CLIENT_PORT)
    sk, tid = (CLIENT_SK, CLIENT_TID) if client else (SERVER_SK, SERVER_TID)
    s = sock(lp, rp)
    t.ev("__sys_sendto", tid=tid, sk=sk, length=nbytes, **s)
    if seq is not None:
        synthetic_transmit(t, src_port=lp, dst_port=rp, seq=seq, flags=PSH | ACK, ack=ack,
                           payload=nbytes, sk=sk, tid=tid, skb=skb)
    if returns:
        t.ev("__sys_sendto", "return", tid=tid, sk=sk, ret=nbytes if ret is None else ret, **s)


def recv(t: SyntheticTrace, copies: list[tuple[int, int]], *, ret: int | None = None,
         client: bool = False) -> None:
    """A recv syscall copying (seq, len) pieces of the peer's stream."""
    lp, rp = (CLIENT_PORT, SERVER_PORT) if client else (SERVER_PORT, CLIENT_PORT)
    sk, tid = (CLIENT_SK, CLIENT_TID) if client else (SERVER_SK, SERVER_TID)
    s = sock(lp, rp)
    t.ev("__sys_recvfrom", tid=tid, sk=sk, length=4096, **s)
    for seq, n in copies:
        t.ev("__skb_datagram_iter", tid=tid, sk=sk, skb=0x5000, seq=seq, end_seq=seq + n,
             length=n, **s)
    total = sum(n for _, n in copies)
    t.ev("__sys_recvfrom", "return", tid=tid, sk=sk, ret=total if ret is None else ret, **s)


# -- flows and sides


def veth_fields(src: tuple[str, int], dst: tuple[str, int]) -> dict[str, Any]:
    return {"saddr": src[0], "sport": src[1], "daddr": dst[0], "dport": dst[1]}


def synthetic_veth() -> SyntheticTrace:
    """Client in netns A sends 5 bytes to the server in netns B over veth: the
    packet events report skb->dev's netns, socket events the socket's; veth
    keeps the sender's skb->sk on receive."""
    t = SyntheticTrace()
    c, s = (VETH_CLIENT, 40000), (VETH_SERVER, 80)
    out, back = veth_fields(c, s), veth_fields(s, c)
    seg: dict[str, Any] = {"seq": 100, "end_seq": 105, "tcp_flags": PSH | ACK, "ack": 900,
                           "length": 5}
    t.ev("__sys_sendto", sk=CLIENT_SK, netns=NS_A, length=5, **out)
    t.ev("__tcp_transmit_skb", sk=CLIENT_SK, skb=0x100, netns=NS_A, **out, **seg)
    t.ev("__dev_queue_xmit", sk=CLIENT_SK, skb=0x1e8, netns=NS_A, **out, **seg)
    t.ev("veth_xmit", sk=CLIENT_SK, skb=0x1e8, netns=NS_A, **out, **seg)
    t.ev("__netif_rx", skb=0x1e8, netns=NS_B, **out, **seg)
    t.ev("ip_rcv", ctx="softirq", sk=CLIENT_SK, skb=0x1e8, netns=NS_B, **out, **seg)
    t.ev("tcp_v4_rcv", ctx="softirq", sk=CLIENT_SK, skb=0x1e8, netns=NS_B, **out, **seg)
    t.ev("tcp_v4_do_rcv", ctx="softirq", sk=SERVER_SK, skb=0x1e8, netns=0, **out, **seg)
    t.ev("__sys_sendto", "return", sk=CLIENT_SK, netns=NS_A, ret=5, **out)
    t.ev("__sys_recvfrom", tid=SERVER_TID, sk=SERVER_SK, netns=NS_B, length=64, **back)
    t.ev("__skb_datagram_iter", tid=SERVER_TID, sk=SERVER_SK, skb=0x1e8, netns=NS_B, seq=100,
         end_seq=105, length=5, **back)
    t.ev("__sys_recvfrom", "return", tid=SERVER_TID, sk=SERVER_SK, netns=NS_B, ret=5, **back)
    return t


def test_synthetic_veth_flow_spans_two_namespaces() -> None:
    tl = build_timeline(synthetic_veth().trace())
    (fl,) = tl.flows
    client, server = Endpoint(VETH_CLIENT, 40000), Endpoint(VETH_SERVER, 80)
    assert (fl.client, fl.server, fl.key.scope) == (client, server, 0)
    assert fl.netns_of == {client: NS_A, server: NS_B}
    assert fl.netns == 0  # no single netns for the flow
    # Sender's transmit (netns A) and receiver's tcp_v4_rcv (netns B): one packet.
    (pkt,) = pkts(tl)
    by_probe = {te.probe: te for te in pkt.events}
    assert by_probe["__tcp_transmit_skb"].ev.netns == NS_A
    assert by_probe["tcp_v4_rcv"].ev.netns == NS_B
    assert by_probe["tcp_v4_rcv"].side is Role.SERVER
    # The stale skb->sk on receive does not make the client's socket the server's.
    assert fl.socks_of == {client: [CLIENT_SK], server: [SERVER_SK]}
    (reader,) = msgs(tl, "recv")
    assert reader.data_from == [pkt.id] and reader.byte_range == ByteRange(0, 5)


def test_synthetic_same_tuple_in_two_namespaces_is_two_flows() -> None:
    # Two containers, each with its own loopback connection 40000 -> 80.
    t = SyntheticTrace()
    for netns, seq in ((111, 1000), (222, 7000)):
        h = hdr(40000, 80, seq, PSH | ACK, 5, 3)
        t.ev("__tcp_transmit_skb", sk=netns, netns=netns, skb=1, **sock(40000, 80),
             **{k: h[k] for k in ("seq", "end_seq", "tcp_flags", "ack", "length")})
        t.ev("__dev_queue_xmit", netns=netns, skb=2, **h)
        t.ev("tcp_v4_rcv", ctx="softirq", netns=netns, skb=2, **h)
    t.ev("tcp_push", sk=111, netns=0, **sock(40000, 80))  # no netns: its socket's flow
    tl = build_timeline(t.trace())
    assert [(f.key.scope, f.netns, len(f.events)) for f in tl.flows] == [(111, 111, 4),
                                                                          (222, 222, 3)]
    assert [len(p.events) for p in pkts(tl)] == [3, 3]


def test_synthetic_loopback_sockets_told_apart() -> None:
    tl = build_timeline(synthetic_chat().trace())
    fl = tl.flows[0]
    assert fl.socks_of[CLIENT] == [CLIENT_SK]
    assert set(fl.socks_of[SERVER]) >= {SERVER_SK}
    assert CLIENT_SK not in fl.socks_of[SERVER]
    for te in fl.events:
        if te.ev.sk == CLIENT_SK and te.endpoint is not None:
            assert te.side is Role.CLIENT


CONTROL_SK = 0xFFFF0000F0  # the kernel's per-CPU control socket (ipv4.tcp_sk)


def test_synthetic_kernel_reply_socket_is_no_end_of_the_connection() -> None:
    """A SYN to a closed port: the RST|ACK comes from the kernel's control
    socket (ip_send_unicast_reply), named only by the packet headers. It is
    listed apart, not as the server's socket; the client's socket is its own."""
    t = SyntheticTrace()
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN,
                       flags=SYN, ack=None, payload=0, sk=CLIENT_SK, tid=CLIENT_TID)
    synthetic_wire(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=0, flags=RST | ACK,
                   ack=CLIENT_ISN + 1, payload=0, sk=CONTROL_SK, tid=CLIENT_TID, ctx="softirq",
                   skb=0x2000, with_ip=False)
    tl = build_timeline(t.trace())
    (fl,) = tl.flows
    assert fl.reply_socks == [CONTROL_SK]
    assert fl.socks_of[CLIENT] == [CLIENT_SK] and fl.socks_of.get(SERVER, []) == []
    text = render_stats(tl)  # the columnar path: tests/replay/test_stats_columnar.py
    assert "  server: netns 4026531840, sockets ?\n" in text
    assert f"  kernel reply socket (RST, TIME_WAIT ACK): {CONTROL_SK:#x}\n" in text


def test_synthetic_a_connection_socket_sending_a_rst_is_its_own() -> None:
    """The same RST from a socket also seen at the socket level (an abort)
    stays that end's socket."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=RST | ACK, ack=SERVER_ISN + 1, payload=0, sk=CLIENT_SK,
                       tid=CLIENT_TID)
    (fl,) = build_timeline(t.trace()).flows
    assert fl.reply_socks == [] and CLIENT_SK in fl.socks_of[CLIENT]


# -- byte ranges


def test_synthetic_chat_byte_ranges_from_isn() -> None:
    tl = build_timeline(synthetic_chat().trace())
    got = [(m.side, m.op, m.byte_range, m.range_from) for m in msgs(tl)]
    assert got == [
        (Role.CLIENT, "recv", ByteRange(1, 21), RangeSource.COPY),
        (Role.SERVER, "send", ByteRange(1, 21), RangeSource.ISN),
        (Role.CLIENT, "send", ByteRange(1, 3), RangeSource.ISN),
        (Role.SERVER, "recv", ByteRange(1, 3), RangeSource.COPY),
        (Role.SERVER, "send", ByteRange(21, 23), RangeSource.ISN),
        (Role.CLIENT, "recv", ByteRange(21, 23), RangeSource.COPY),
    ]
    fl = tl.flows[0]
    assert all(not s.problems for s in fl.streams.values())
    assert fl.streams[CLIENT].anchor is RangeSource.ISN


def test_synthetic_recv_over_two_segments_and_failed_send() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    base = CLIENT_ISN + 1
    send(t, 3, seq=base, skb=0x9000)
    send(t, 9, seq=None, ret=-11)  # EAGAIN: writes nothing
    send(t, 4, seq=base + 3, skb=0xA000)
    recv(t, [(base, 3), (base + 3, 4)])
    tl = build_timeline(t.trace())
    s1, failed, s2 = msgs(tl, "send")
    (r,) = msgs(tl, "recv")
    assert (s1.byte_range, failed.byte_range, s2.byte_range) == (
        ByteRange(1, 4), None, ByteRange(4, 8))
    assert r.byte_range == ByteRange(1, 8) and r.range_from is RangeSource.COPY
    data = [p for p in pkts(tl) if p.segment.payload]
    assert r.data_from == [p.id for p in data]
    assert [p.written_by for p in data] == [[s1.id], [s2.id]]
    assert s1.carried_by == [data[0].id] and s2.carried_by == [data[1].id]
    trails = follow_bytes(tl, 1, Role.CLIENT)
    assert [(tr.send.id, [p.id for p in tr.segments], [m.id for m in tr.reads], tr.complete)
            for tr in trails] == [(s1.id, [data[0].id], [r.id], True),
                                  (s2.id, [data[1].id], [r.id], True)]


def test_synthetic_ranges_without_handshake_anchor_on_a_segment() -> None:
    t = SyntheticTrace()
    first = 50_000
    send(t, 10, seq=first)  # the first data segment, sent inside this send
    send(t, 5, seq=None)  # its segment is not in the trace
    recv(t, [(first, 10)])
    recv(t, [], ret=5)  # no copy probed in it: placed after its neighbour
    tl = build_timeline(t.trace())
    fl = tl.flows[0]
    assert not fl.isn_from_syn[CLIENT]
    s1, s2 = msgs(tl, "send")
    assert (s1.byte_range, s1.range_from) == (ByteRange(0, 10), RangeSource.SEGMENT)
    assert (s2.byte_range, s2.range_from) == (ByteRange(10, 15), RangeSource.SEGMENT)
    assert fl.streams[CLIENT].anchor is RangeSource.SEGMENT
    r1, r2 = msgs(tl, "recv")
    assert (r1.range_from, r2.byte_range, r2.range_from) == (
        RangeSource.COPY, ByteRange(10, 15), RangeSource.NEIGHBOUR)


def test_synthetic_send_without_return_loses_the_stream_position() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    send(t, 3, seq=None, returns=False)  # return lost: bytes unknown
    send(t, 4, seq=None)
    send(t, 6, seq=CLIENT_ISN + 1 + 3 + 4, skb=0xB000)  # re-anchored on its segment
    tl = build_timeline(t.trace())
    s1, s2, s3 = msgs(tl, "send")
    assert s1.byte_range is None  # a send without return: count unknown
    assert (s2.byte_range, s2.range_from) == (ByteRange(4, 8), RangeSource.SEGMENT)
    assert (s3.byte_range, s3.range_from) == (ByteRange(8, 14), RangeSource.SEGMENT)


def test_synthetic_misplaced_send_range_is_reported() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    # A 2-byte send whose segment carries 5 bytes: a 3-byte send before it
    # left no event at all (lost), so the 2 bytes are placed at 1:3.
    t.ev("__sys_sendto", sk=CLIENT_SK, length=2, **sock(CLIENT_PORT, SERVER_PORT))
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=5, sk=CLIENT_SK,
                       tid=CLIENT_TID)
    t.ev("__sys_sendto", "return", sk=CLIENT_SK, ret=2, **sock(CLIENT_PORT, SERVER_PORT))
    tl = build_timeline(t.trace())
    problems = tl.flows[0].streams[CLIENT].problems
    assert problems and "carries up to 6" in problems[0]


# -- packets: GSO pieces, retransmissions, duplicate ACKs


def test_synthetic_gso_pieces_join_their_segment() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    seq = CLIENT_ISN + 1
    big = hdr(CLIENT_PORT, SERVER_PORT, seq, PSH | ACK, SERVER_ISN + 1, 3000)
    t.ev("__sys_sendto", sk=CLIENT_SK, length=3000, **sock(CLIENT_PORT, SERVER_PORT))
    t.ev("__tcp_transmit_skb", sk=CLIENT_SK, skb=0x100, **sock(CLIENT_PORT, SERVER_PORT),
         **{k: big[k] for k in ("seq", "end_seq", "tcp_flags", "ack", "length")})
    t.ev("__ip_queue_xmit", sk=CLIENT_SK, skb=0x1e8, **big)
    t.ev("__dev_queue_xmit", sk=CLIENT_SK, skb=0x1e8, **big)
    for i in range(3):  # the driver sends, and the receiver sees, 1000-byte pieces
        flags = PSH | ACK if i == 2 else ACK
        piece = hdr(CLIENT_PORT, SERVER_PORT, seq + 1000 * i, flags, SERVER_ISN + 1, 1000)
        t.ev("e1000_xmit_frame", sk=CLIENT_SK, skb=0x300 + i, **piece)
        t.ev("ip_rcv", ctx="softirq", tid=SERVER_TID, skb=0x400 + i, **piece)
        t.ev("tcp_v4_rcv", ctx="softirq", tid=SERVER_TID, skb=0x400 + i, **piece)
    t.ev("__sys_sendto", "return", sk=CLIENT_SK, ret=3000, **sock(CLIENT_PORT, SERVER_PORT))
    recv(t, [(seq, 3000)])
    tl = build_timeline(t.trace())
    data = [p for p in pkts(tl) if p.segment.payload]
    assert len(data) == 1
    (pkt,) = data
    assert pkt.split and not pkt.retransmission and "split below TCP" in pkt.title
    assert sum(te.probe == "tcp_v4_rcv" for te in pkt.events) == 3
    assert pkt.byte_range == ByteRange(1, 3001)
    wires = [(tl.events[a].probe, tl.events[b].probe)
             for a, b in edges_of_kind(build_graph(tl), "handoff")
             if "wire" in build_graph(tl).edges[a, b]["whys"] and tl.events[a].step == pkt.id]
    assert wires == [("e1000_xmit_frame", "ip_rcv")] * 3
    acct = account_bytes(tl, 1, Role.CLIENT)
    assert (acct.written, acct.carried, acct.read, acct.segments) == (3000, 3000, 3000, 1)


def test_synthetic_gro_merged_receive_joins_the_first_segment() -> None:
    t = SyntheticTrace()
    seq = CLIENT_ISN + 1
    for i in range(2):
        synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=seq + 100 * i,
                           flags=ACK, ack=SERVER_ISN + 1, payload=100, sk=CLIENT_SK,
                           tid=CLIENT_TID, skb=0x1000 * (i + 1), with_rx=False)
    merged = hdr(CLIENT_PORT, SERVER_PORT, seq, ACK, SERVER_ISN + 1, 200)
    t.ev("ip_rcv", ctx="softirq", skb=0x7000, **merged)
    tl = build_timeline(t.trace())
    first, second = pkts(tl)
    assert first.events[-1].probe == "ip_rcv" and not first.retransmission
    assert not second.retransmission and len(second.events) == 3


def test_synthetic_retransmission_with_other_boundaries() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    seq = CLIENT_ISN + 1
    send(t, 2000, seq=seq)
    # The last 1000 bytes again, from the retransmit timer (softirq).
    t.ev("tcp_retransmit_skb", ctx="softirq", sk=CLIENT_SK, skb=0x2000, seq=seq + 1000,
         end_seq=seq + 2000, tcp_flags=PSH | ACK, length=1000, **sock(CLIENT_PORT, SERVER_PORT))
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=seq + 1000,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=1000, sk=CLIENT_SK,
                       tid=CLIENT_TID, ctx="softirq", skb=0x2000)
    recv(t, [(seq, 2000)])
    tl = build_timeline(t.trace())
    orig, again = [p for p in pkts(tl) if p.segment.payload]
    assert not orig.retransmission and again.retransmission and not again.again
    assert again.events[0].probe == "tcp_retransmit_skb"
    (r,) = msgs(tl, "recv")
    assert r.data_from == [orig.id, again.id]
    (trail,) = follow_bytes(tl, 1, Role.CLIENT)
    assert trail.segments == [orig] and trail.retransmissions == [again] and trail.complete
    acct = account_bytes(tl, 1, Role.CLIENT)
    assert (acct.written, acct.carried, acct.retransmitted, acct.read) == (2000, 2000, 1000, 2000)
    assert acct.segments == 1 and acct.balanced
    lat = {pl.packet.id: pl for pl in packet_latencies(tl)}
    assert lat[again.id].klass is PacketClass.RETRANSMISSION


def test_synthetic_duplicate_acks() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    s = dict(src_port=SERVER_PORT, dst_port=CLIENT_PORT, sk=SERVER_SK, tid=CLIENT_TID,
             ctx="softirq")
    synthetic_transmit(t, seq=SERVER_ISN + 1, flags=PSH | ACK, ack=CLIENT_ISN + 1, payload=4,
                       **s)  # type: ignore[arg-type]
    for ack in (CLIENT_ISN + 1, CLIENT_ISN + 11, CLIENT_ISN + 11, CLIENT_ISN + 11):
        synthetic_transmit(t, seq=SERVER_ISN + 5, flags=ACK, ack=ack, payload=0,
                           **s)  # type: ignore[arg-type]
    tl = build_timeline(t.trace())
    server_pkts = [p for p in pkts(tl) if p.sender is Role.SERVER]
    assert [p.category for p in server_pkts] == [SegmentType.SYN_ACK, SegmentType.DATA] + [
        SegmentType.ACK] * 4
    # After data, a pure ACK with the same ack number is not a duplicate.
    assert [p.dup_ack for p in server_pkts[2:]] == [False, False, True, True]
    assert all(not p.retransmission for p in server_pkts)
    assert server_pkts[4].title.endswith("(duplicate ACK)")


def test_synthetic_header_read_before_tot_len_joins_its_packet() -> None:
    # __ip_local_out read IP tot_len before it was set: length -60 as u32.
    t = SyntheticTrace()
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=2, sk=CLIENT_SK,
                       tid=CLIENT_TID, with_rx=False)
    bad = hdr(CLIENT_PORT, SERVER_PORT, CLIENT_ISN + 1, PSH | ACK, SERVER_ISN + 1, 2)
    bad["length"] = (1 << 32) - 60
    bad["end_seq"] = (CLIENT_ISN + 1 - 60) % (1 << 32)
    t.ev("__ip_local_out", skb=0x1800, **bad)
    t.ev("ip_output", skb=0x1800, **hdr(CLIENT_PORT, SERVER_PORT, CLIENT_ISN + 1, PSH | ACK,
                                         SERVER_ISN + 1, 2))
    tl = build_timeline(t.trace())
    (pkt,) = pkts(tl)
    assert [te.probe for te in pkt.events][-2:] == ["__ip_local_out", "ip_output"]
    odd = pkt.events[-2].segment
    assert odd is not None and not odd.length_known and odd.payload == 0


def test_synthetic_neighbour_requeue_is_not_a_retransmission() -> None:
    t = SyntheticTrace()
    h = hdr(CLIENT_PORT, SERVER_PORT, CLIENT_ISN, 0x02, None, 0)
    t.ev("__ip_queue_xmit", sk=CLIENT_SK, skb=0x1e8, **h)
    t.ev("neigh_resolve_output", sk=CLIENT_SK, skb=0x1e8, **h)  # queued until ARP answers
    t.ev("net_rx_action", ctx="softirq", netns=0)
    t.ev("neigh_resolve_output", ctx="softirq", sk=CLIENT_SK, skb=0x1e8, **h)  # sent now
    t.ev("__dev_queue_xmit", ctx="softirq", sk=CLIENT_SK, skb=0x1e8, **h)
    tl = build_timeline(t.trace())
    (pkt,) = pkts(tl)
    assert not pkt.retransmission and len(pkt.events) == 5


# -- accounting


def test_synthetic_bulk_accounting_balances() -> None:
    tl = build_timeline(synthetic_bulk(50_000, mss=1000, chunk=8000, recv_size=6000).trace())
    client, server = account_all(tl)
    assert client.sender is Role.CLIENT
    assert client.written == client.carried == client.read == client.copied == 50_000
    assert client.balanced and client.complete and client.carried_at == "__tcp_transmit_skb"
    assert client.segments == 50 and client.sends == 7 and client.copies == 50
    assert server.written == server.carried == server.read == 0 and server.balanced
    # every recv's range is covered by the segments that carried it
    for m in msgs(tl, "recv"):
        assert m.byte_range is not None and m.range_from is RangeSource.COPY
        covered = [st.byte_range for p in m.data_from
                   if isinstance(st := tl.steps[p], Packet) and st.byte_range]
        assert min(r.lo for r in covered) <= m.byte_range.lo
        assert max(r.hi for r in covered) >= m.byte_range.hi


def test_synthetic_accounting_falls_back_to_the_lowest_layer() -> None:
    t = SyntheticTrace()
    for i in range(2):  # no __tcp_transmit_skb: IP and device layers only
        synthetic_wire(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=100 + 10 * i,
                       flags=PSH | ACK, ack=1, payload=10, sk=CLIENT_SK, tid=CLIENT_TID,
                       skb=0x1000 * (i + 1))
    tl = build_timeline(t.trace())
    acct = account_bytes(tl, 1, Role.CLIENT)
    assert (acct.carried, acct.carried_at, acct.segments) == (20, "__dev_queue_xmit", 2)
    rx_only = SyntheticTrace()
    h = hdr(CLIENT_PORT, SERVER_PORT, 100, PSH | ACK, 1, 7)
    rx_only.ev("ip_rcv", ctx="softirq", **h)
    rx_only.ev("tcp_v4_rcv", ctx="softirq", **h)
    acct = account_bytes(build_timeline(rx_only.trace()), 1, Role.CLIENT)
    assert (acct.carried, acct.carried_at) == (7, "ip_rcv")


def test_synthetic_failed_and_unknown_sends_in_accounting() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    send(t, 4, seq=CLIENT_ISN + 1)
    send(t, 9, seq=None, ret=-32)  # EPIPE
    send(t, 3, seq=None, returns=False)
    acct = account_bytes(build_timeline(t.trace()), 1, Role.CLIENT)
    assert (acct.written, acct.sends, acct.failed_sends, acct.unknown_sends) == (4, 3, 1, 1)
    assert "1 send(s) without a return value" in acct.notes


# -- latency


def full_path_exchange() -> SyntheticTrace:
    """Handshake, one 100-byte send through every default probe, the server's
    ACK from softirq, the read."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    s = sock(CLIENT_PORT, SERVER_PORT)
    t.ev("__sys_sendto", sk=CLIENT_SK, length=100, **s)
    t.ev("tcp_sendmsg_locked", sk=CLIENT_SK, length=100, **s)
    synthetic_full_segment(t, client=True, seq=CLIENT_ISN + 1, flags=PSH | ACK,
                           ack=SERVER_ISN + 1, payload=100)
    synthetic_full_segment(t, client=False, seq=SERVER_ISN + 1, flags=ACK,
                           ack=CLIENT_ISN + 101, payload=0, ctx="softirq", tid=CLIENT_TID,
                           skb=0x2000, lead_in="tcp_send_ack")
    t.ev("tcp_sendmsg_locked", "return", sk=CLIENT_SK, ret=100, **s)
    t.ev("__sys_sendto", "return", sk=CLIENT_SK, ret=100, **s)
    recv(t, [(CLIENT_ISN + 1, 100)])
    return t


def test_synthetic_latency_every_hop_on_the_full_path() -> None:
    tl = build_timeline(full_path_exchange().trace())
    lat = {pl.packet.id: pl for pl in packet_latencies(tl)}
    data = next(p for p in pkts(tl) if p.segment.payload)
    pl = lat[data.id]
    assert pl.klass is PacketClass.DATA and not pl.gap
    assert list(pl.hops) == list(PATH_HOPS)
    probes = {h: (ht.start.probe, ht.end.probe) for h, ht in pl.hops.items()}
    assert probes == {
        Hop.SYSCALL_TCP: ("__sys_sendto", "__tcp_transmit_skb"),
        Hop.TCP_IP: ("__tcp_transmit_skb", "__ip_queue_xmit"),
        Hop.IP_DEVICE: ("__ip_queue_xmit", "__dev_queue_xmit"),
        Hop.DEVICE_RX: ("__dev_queue_xmit", "__netif_rx"),
        Hop.RX_QUEUE: ("__netif_rx", "tcp_queue_rcv"),
        Hop.QUEUE_COPY: ("tcp_queue_rcv", "__skb_datagram_iter"),
        Hop.TCP_COPY: ("__tcp_transmit_skb", "__skb_datagram_iter"),
    }
    for ht in pl.hops.values():
        assert ht.ns == ht.end.ev.ts_ns - ht.start.ev.ts_ns > 0
    # The pure ACK: no syscall and no reader; its socket step is tcp_v4_rcv.
    ack = next(p for p in pkts(tl) if p.category is SegmentType.ACK and p.sender is Role.SERVER)
    assert lat[ack.id].klass is PacketClass.ACK
    assert set(lat[ack.id].hops) == {Hop.TCP_IP, Hop.IP_DEVICE, Hop.DEVICE_RX, Hop.RX_QUEUE}
    assert lat[ack.id].hops[Hop.RX_QUEUE].end.probe == "tcp_v4_rcv"


def test_synthetic_latency_minimal_profile_has_only_measured_hops() -> None:
    minimal = {"__sys_sendto", "tcp_sendmsg_locked", "tcp_push", "__tcp_push_pending_frames",
               "tcp_write_xmit", "__tcp_transmit_skb", "__sys_recvfrom", "sock_recvmsg",
               "tcp_recvmsg", "__skb_datagram_iter"}
    t = full_path_exchange()
    t.events = [ev for ev in t.events if ev.probe in minimal]
    tl = build_timeline(t.trace())
    data = next(p for p in pkts(tl) if p.segment.payload)
    (pl,) = [pl for pl in packet_latencies(tl) if pl.packet is data]
    assert set(pl.hops) == {Hop.SYSCALL_TCP, Hop.TCP_COPY}


def test_synthetic_lost_events_mark_the_packet_as_gap() -> None:
    t = full_path_exchange()
    t.now += 2 * LOSS_WINDOW_NS  # a loss is placed within the second before its notice
    synthetic_full_segment(t, client=True, seq=CLIENT_ISN + 101, flags=PSH | ACK,
                           ack=SERVER_ISN + 1, payload=10, skb=0x3000)
    # a loss noticed in the middle of the second data packet's receive path
    at = next(i for i, ev in enumerate(t.events) if ev.probe == "ip_rcv" and ev.length == 10)
    loss_ts = t.events[at].ts_ns + 1
    t.lose(3, "ip_rcv")
    t.lost[-1].ts_ns = loss_ts
    tl = build_timeline(t.trace())
    lat = {pl.packet.id: pl for pl in packet_latencies(tl)}
    first, second = [p for p in pkts(tl) if p.segment.payload]
    assert not lat[first.id].gap and lat[second.id].gap
    stats = {(s.klass, s.hop): s for s in latency_stats(tl) if s.sender is Role.CLIENT}
    tcp_ip = stats[(PacketClass.DATA, Hop.TCP_IP)]
    assert (tcp_ip.count, tcp_ip.gaps) == (1, 1)
    assert tcp_ip.min_ns == tcp_ip.max_ns == lat[first.id].hops[Hop.TCP_IP].ns


def test_synthetic_blind_window_is_shown_and_marks_no_packet() -> None:
    """SYNTHETIC: a blind window (a Lost record with since_ns: kprobes
    skipped while a softirq ran inside a kprobe program) over the second data
    packet's receive path is named in the header and in the flow's
    accounting, by the object and the columnar stats alike; it marks no
    packet (a loss noticed then would mark both: the second before it)."""
    t = full_path_exchange()
    synthetic_full_segment(t, client=True, seq=CLIENT_ISN + 101, flags=PSH | ACK,
                           ack=SERVER_ISN + 1, payload=10, skb=0x3000)
    at = next(i for i, ev in enumerate(t.events) if ev.probe == "ip_rcv" and ev.length == 10)
    ts = t.events[at].ts_ns
    t.lost.append(Lost(ts_ns=ts + 500, count=0, cpu=1, since_ns=ts - 500,
                       blind="softirq TIMER"))
    trace = t.trace()
    tl = build_timeline(trace)
    lat = {pl.packet.id: pl for pl in packet_latencies(tl)}
    assert not any(pl.gap for pl in lat.values())
    assert tl.gaps[0].text == ("kprobes blind on cpu 1 for 1.0 us (softirq TIMER inside a "
                               "kprobe program or handler): kprobe events there dropped "
                               "uncounted")
    text = render_stats(tl)
    assert "!! kprobes blind 1 time(s), 1.0 us in all" in text
    assert "event(s) lost" not in text
    assert "kprobes blind 1 time(s) during the flow" in text
    assert render_trace_stats(trace_stats(stats_input_of(trace))) == text


def test_synthetic_loss_noticed_late_taints_the_second_before() -> None:
    t = full_path_exchange()
    t.now += LOSS_WINDOW_NS // 2
    t.lose(1)  # noticed after the last event, half a second later
    tl = build_timeline(t.trace())
    assert all(pl.gap for pl in packet_latencies(tl))
    assert all(s.count == 0 and s.gaps == 1 for s in latency_stats(tl)
               if s.klass is PacketClass.DATA)


def test_synthetic_latency_stats_percentiles() -> None:
    tl = build_timeline(synthetic_bulk(20_000, mss=1000, chunk=4000, recv_size=4000).trace())
    stats = [s for s in latency_stats(tl) if s.klass is PacketClass.DATA
             and s.hop is Hop.TCP_IP]
    (s,) = stats
    vals = sorted(pl.hops[Hop.TCP_IP].ns for pl in packet_latencies(tl)
                  if pl.klass is PacketClass.DATA)
    assert (s.count, s.min_ns, s.max_ns, s.p99_ns) == (20, vals[0], vals[-1], vals[19])
    assert s.min_ns <= s.median_ns <= s.p99_ns <= s.max_ns


# -- causal graph


def test_synthetic_causal_edges() -> None:
    tl = build_timeline(full_path_exchange().trace())
    g = build_graph(tl)
    assert nx.is_directed_acyclic_graph(g)
    assert all(a < b for a, b in g.edges)
    names = {(tl.events[a].probe, tl.events[b].probe, why)
             for a, b, d in g.edges(data=True) for why in d["whys"]}
    data = next(p for p in pkts(tl) if p.segment.payload)
    assert ("loopback_xmit", "__netif_rx", "wire") in names
    assert ("__netif_rx", "net_rx_action", "context") in names  # task -> softirq
    assert ("sock_def_readable", "__skb_datagram_iter", "wake-up") in names
    assert ("__sys_sendto", "__tcp_transmit_skb", "send") in names
    assert ("__tcp_transmit_skb", "__sys_recvfrom", "recv") in names
    assert ("__sys_sendto", "__sys_sendto", "return") in names
    kinds = {d["kind"] for _, _, d in g.edges(data=True)}
    assert kinds == {"next", "handoff", "bytes"}
    # Following "bytes" edges from the send reaches the recv that returned them.
    (sender,) = msgs(tl, "send")
    (reader,) = msgs(tl, "recv")
    bytes_only = g.edge_subgraph(edges_of_kind(g, "bytes"))
    assert nx.has_path(bytes_only, sender.events[0].index, reader.events[-1].index)
    assert data.events[0].index in bytes_only


# -- CLI


def test_synthetic_replay_stats(tmp_path: Any) -> None:
    path = full_path_exchange().write(tmp_path / "synthetic_full.kpath")
    res = CliRunner().invoke(replay_cmd, [str(path), "--stats"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    row = next(ln for ln in out.splitlines() if ln.startswith("  client -> server ")
               and "__tcp_transmit_skb" in ln)
    assert row.split()[3:] == ["100", "100", "0", "100", "100", "__tcp_transmit_skb", "ok"]
    assert "latency (us)" in out and "per packet (us)" in out
    assert "syscall>tcp" in out and "queue>copy" in out
    bad = CliRunner().invoke(replay_cmd, [str(path), "--stats", "--format", "json"])
    assert bad.exit_code == 2 and "--stats" in bad.stderr


@pytest.mark.parametrize("flow", ["1"])
def test_synthetic_replay_shows_byte_ranges(tmp_path: Any, flow: str) -> None:
    path = synthetic_chat().write(tmp_path / "synthetic_chat.kpath")
    res = CliRunner().invoke(replay_cmd, [str(path), "--flow", flow])
    assert res.exit_code == 0, res.output
    assert "client send 2 B via __sys_sendto (asked 2)  wrote 1:3" in res.stdout
    assert "PSH|ACK 2 B client -> server  bytes 1:3" in res.stdout


def test_synthetic_packet_first_seen_with_unreadable_length() -> None:
    # No probe above IP: the packet starts at __ip_local_out, whose length was
    # unreadable; ip_output then tells the real payload.
    t = SyntheticTrace()
    bad = hdr(CLIENT_PORT, SERVER_PORT, CLIENT_ISN + 1, PSH | ACK, SERVER_ISN + 1, 2)
    bad["length"] = (1 << 32) - 60
    t.ev("__ip_local_out", skb=0x1800, **bad)
    good = hdr(CLIENT_PORT, SERVER_PORT, CLIENT_ISN + 1, PSH | ACK, SERVER_ISN + 1, 2)
    t.ev("ip_output", skb=0x1800, **good)
    t.ev("tcp_v4_rcv", ctx="softirq", skb=0x1800, **good)
    tl = build_timeline(t.trace())
    (pkt,) = pkts(tl)
    assert pkt.segment.payload == 2 and pkt.label == "PSH|ACK 2 B"
    assert pkt.byte_range == ByteRange(0, 2) and len(pkt.events) == 3


def test_synthetic_segment_sent_later_from_softirq_measures_from_its_writer() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    send(t, 10, seq=None)  # queued: the window was closed
    t.now += 50_000
    # an ACK opens the window; the NET_RX softirq transmits the bytes
    t.ev("tcp_write_xmit", ctx="softirq", tid=CLIENT_TID, sk=CLIENT_SK,
         **sock(CLIENT_PORT, SERVER_PORT))
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=10, sk=CLIENT_SK,
                       tid=CLIENT_TID, ctx="softirq", skb=0x4000)
    recv(t, [(CLIENT_ISN + 1, 10)])
    tl = build_timeline(t.trace())
    (writer,) = msgs(tl, "send")
    data = next(p for p in pkts(tl) if p.segment.payload)
    assert data.message is None and data.written_by == [writer.id]
    assert data.events[0].probe == "tcp_write_xmit"  # the lead-in from softirq
    (pl,) = [pl for pl in packet_latencies(tl) if pl.packet is data]
    hop = pl.hops[Hop.SYSCALL_TCP]
    assert (hop.start.probe, hop.end.probe) == ("__sys_sendto", "__tcp_transmit_skb")
    assert hop.ns > 50_000
