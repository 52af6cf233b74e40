"""Reconstruction on synthetic event lists (see synthetic_traces.py)."""

from __future__ import annotations

from tests.unit.synthetic_traces import (
    ACK,
    CLIENT_ISN,
    CLIENT_PORT,
    CLIENT_SK,
    CLIENT_TID,
    LO,
    PSH,
    SERVER_ISN,
    SERVER_PORT,
    SERVER_SK,
    SERVER_TID,
    SyntheticTrace,
    hdr,
    sock,
    synthetic_chat,
    synthetic_handshake,
    synthetic_transmit,
    synthetic_wire,
)
from tracer.events import Context, Endpoint, Event, Kind
from tracer.timeline import (
    Lone,
    Message,
    Packet,
    Role,
    RolesFrom,
    build_timeline,
    side_endpoint,
)
from tracer.timeline.causal import build_graph
from tracer.timeline.columnar import PreparedStats, stats_input_of
from tracer.timeline.event_rules import probe_spec, recorded_probes
from tracer.tracefile import probe_specs
from viz.stats_columnar import render_trace_stats
from viz.stats_text import render_stats

CLIENT = Endpoint(LO, CLIENT_PORT)
SERVER = Endpoint(LO, SERVER_PORT)


def packets(tl_flow_steps: list) -> list[Packet]:  # type: ignore[type-arg]
    return [s for s in tl_flow_steps if isinstance(s, Packet)]


def test_synthetic_chat_flow_and_roles_from_handshake() -> None:
    tl = build_timeline(synthetic_chat().trace())
    assert len(tl.flows) == 1
    fl = tl.flows[0]
    assert (fl.client, fl.server) == (CLIENT, SERVER)
    assert fl.roles_from is RolesFrom.HANDSHAKE
    assert fl.title == "127.0.0.1:54321 (client) <-> 127.0.0.1:10086 (server)"
    assert fl.isn == {CLIENT: CLIENT_ISN, SERVER: SERVER_ISN}
    assert tl.unattributed == []


def test_synthetic_roles_survive_a_handshake_seen_from_the_server_first() -> None:
    # The server's reply is the first event: the handshake still decides.
    t = SyntheticTrace()
    t.ev("__sys_sendto", tid=SERVER_TID, sk=SERVER_SK, length=2,
         **sock(SERVER_PORT, CLIENT_PORT))
    synthetic_handshake(t)
    fl = build_timeline(t.trace()).flows[0]
    assert fl.client == CLIENT and fl.roles_from is RolesFrom.HANDSHAKE


def test_synthetic_roles_without_handshake_lower_port_is_server() -> None:
    t = SyntheticTrace()
    # Data from the server first; no SYN anywhere in the trace.
    synthetic_transmit(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=SERVER_ISN + 1,
                       flags=PSH | ACK, ack=CLIENT_ISN + 1, payload=5, sk=SERVER_SK,
                       tid=SERVER_TID)
    fl = build_timeline(t.trace()).flows[0]
    assert (fl.client, fl.server) == (CLIENT, SERVER)
    assert fl.roles_from is RolesFrom.PORT
    # Relative numbers start at the first seq seen from each sender.
    assert fl.isn[SERVER] == SERVER_ISN + 1 and fl.isn_from_syn[SERVER] is False


def test_synthetic_flows_are_separated_by_netns_and_numbered_in_time_order() -> None:
    t = SyntheticTrace()
    t.ev("tcp_push", sk=1, netns=111, **sock(40000, 80))
    t.ev("tcp_push", sk=2, netns=222, **sock(40000, 80))
    t.ev("tcp_push", sk=1, netns=111, **sock(40000, 80))
    tl = build_timeline(t.trace())
    assert [(f.number, f.netns) for f in tl.flows] == [(1, 111), (2, 222)]
    assert [len(f.events) for f in tl.flows] == [2, 1]


def test_synthetic_packet_key_links_the_skb_clone() -> None:
    t = SyntheticTrace()
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=2, sk=CLIENT_SK,
                       tid=CLIENT_TID, skb=0x1000)
    tl = build_timeline(t.trace())
    (pkt,) = packets(tl.flows[0].steps)
    assert [te.probe for te in pkt.events] == [
        "__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit", "ip_rcv", "tcp_v4_rcv"]
    assert len({te.ev.skb for te in pkt.events}) == 2  # the queued skb and its clone
    assert pkt.label == "PSH|ACK 2 B"
    assert pkt.direction == "client -> server"
    assert [te.side for te in pkt.events] == [Role.CLIENT] * 3 + [Role.SERVER] * 2
    assert [te.probe for te in pkt.tx_events] == [
        "__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit"]


def test_synthetic_header_captures_without_end_seq_still_link() -> None:
    # A capture that reports seq + payload length but no end_seq.
    t = SyntheticTrace()
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=7, flags=PSH | ACK,
                       ack=9, payload=3, sk=CLIENT_SK, tid=CLIENT_TID, with_rx=False)
    h = hdr(CLIENT_PORT, SERVER_PORT, 7, PSH | ACK, 9, 3)
    del h["end_seq"]
    t.ev("ip_rcv", ctx="softirq", netns=0, **h)
    tl = build_timeline(t.trace())
    assert len(tl.flows) == 1  # netns 0 on the packet capture: the socket's netns
    (pkt,) = packets(tl.flows[0].steps)
    assert pkt.events[-1].probe == "ip_rcv" and pkt.events[-1].segment.end_seq == 10  # type: ignore[union-attr]


def test_synthetic_pure_acks_keyed_by_ack_number() -> None:
    t = SyntheticTrace()
    for ack in (CLIENT_ISN + 3, CLIENT_ISN + 7):  # same seq, different ack: two packets
        synthetic_transmit(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=SERVER_ISN + 1,
                           flags=ACK, ack=ack, payload=0, sk=SERVER_SK, tid=CLIENT_TID,
                           ctx="softirq")
    tl = build_timeline(t.trace())
    pkts = packets(tl.flows[0].steps)
    assert len(pkts) == 2
    assert [p.segment.ack for p in pkts] == [CLIENT_ISN + 3, CLIENT_ISN + 7]
    assert all(len(p.events) == 5 and p.label == "ACK" and not p.again for p in pkts)


def test_synthetic_same_key_transmitted_again_is_a_new_packet() -> None:
    t = SyntheticTrace()
    for _ in range(2):  # data retransmitted
        synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                           flags=PSH | ACK, ack=SERVER_ISN + 1, payload=2, sk=CLIENT_SK,
                           tid=CLIENT_TID)
    for _ in range(2):  # the same pure ACK twice
        synthetic_transmit(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=SERVER_ISN + 1,
                           flags=ACK, ack=CLIENT_ISN + 3, payload=0, sk=SERVER_SK,
                           tid=CLIENT_TID, ctx="softirq")
    pkts = packets(build_timeline(t.trace()).flows[0].steps)
    assert [len(p.events) for p in pkts] == [5, 5, 5, 5]
    assert [p.again for p in pkts] == [False, True, False, True]
    assert pkts[1].title.endswith("(retransmission)")
    assert pkts[3].title.endswith("(duplicate ACK)")


def test_synthetic_same_hop_twice_without_origin_is_a_new_packet() -> None:
    t = SyntheticTrace()
    for _ in range(2):  # __tcp_transmit_skb not probed: only the wire is seen, twice
        synthetic_wire(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=5, flags=PSH | ACK,
                       ack=1, payload=1, sk=CLIENT_SK, tid=CLIENT_TID)
    pkts = packets(build_timeline(t.trace()).flows[0].steps)
    assert [len(p.events) for p in pkts] == [4, 4]


def test_synthetic_receiver_finishes_a_duplicate_ack_the_sender_already_sent_again() -> None:
    """Two hosts (source 1 sends, source 0 receives), merged by time: the
    receiver is still handling the first of two identical pure ACKs when
    the second one's birth comes in. The rest of that reception (same host,
    same skb) stays with the first; the columnar path agrees."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    h = hdr(SERVER_PORT, CLIENT_PORT, SERVER_ISN + 1, ACK, CLIENT_ISN + 1, 0)

    def send(skb: int) -> None:
        t.ev("__tcp_transmit_skb", ctx="softirq", tid=0, sk=SERVER_SK, skb=skb, source=1, **h)
        t.ev("__dev_queue_xmit", ctx="softirq", tid=0, sk=SERVER_SK, skb=skb + 0x800,
             source=1, **h)

    def receive(probe: str, skb: int) -> None:
        t.ev(probe, ctx="softirq", tid=0, skb=skb, source=0, **h)

    send(0x9000)
    receive("ip_rcv", 0x7000)
    send(0x9100)  # the duplicate's birth, before the first's tcp_v4_rcv
    receive("tcp_v4_rcv", 0x7000)
    receive("ip_rcv", 0x7100)
    receive("tcp_v4_rcv", 0x7100)
    trace = t.trace()
    tl = build_timeline(trace)
    acks = [p for p in packets(tl.flows[0].steps) if p.segment.seq == SERVER_ISN + 1]
    assert [[(te.ev.probe, te.ev.skb) for te in p.events] for p in acks] == [
        [("__tcp_transmit_skb", 0x9000), ("__dev_queue_xmit", 0x9800),
         ("ip_rcv", 0x7000), ("tcp_v4_rcv", 0x7000)],
        [("__tcp_transmit_skb", 0x9100), ("__dev_queue_xmit", 0x9900),
         ("ip_rcv", 0x7100), ("tcp_v4_rcv", 0x7100)],
    ]
    with recorded_probes(probe_specs(trace.header.probes)):
        prepared = PreparedStats(stats_input_of(trace), probe_spec)
        assert render_trace_stats(prepared.stats(None)) == render_stats(tl, None)


def test_synthetic_handshake_synack_via_tcp_v4_send_synack() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    tl = build_timeline(t.trace())
    syn, synack, ack = packets(tl.flows[0].steps)
    assert [p.label for p in (syn, synack, ack)] == ["SYN", "SYN-ACK", "ACK"]
    assert [p.direction for p in (syn, synack, ack)] == [
        "client -> server", "server -> client", "client -> server"]
    assert [te.probe for te in synack.events] == [
        "tcp_v4_send_synack", "__dev_queue_xmit", "ip_rcv", "tcp_v4_rcv"]
    assert all(te.probe != "__tcp_transmit_skb" for te in synack.events)
    assert [te.side for te in synack.events] == [Role.SERVER, Role.SERVER, Role.CLIENT,
                                                 Role.CLIENT]
    # The SYN and the final ACK pass __tcp_transmit_skb from the client socket.
    for p in (syn, ack):
        first = p.events[0]
        assert first.probe == "__tcp_transmit_skb" and first.ev.sk == CLIENT_SK


def test_side_rule_socket_events_src_packet_rx_headers_dst() -> None:
    def ev(probe: str, **kw: object) -> Event:
        return Event(ts_ns=1, cpu=0, tgid=1, tid=1, comm="x", probe=probe, kind=Kind.ENTRY,
                     ctx=Context.TASK, **kw)  # type: ignore[arg-type]

    s = sock(SERVER_PORT, CLIENT_PORT)  # socket-level: saddr is the local end
    h = hdr(CLIENT_PORT, SERVER_PORT, 1, ACK, 1, 0)  # packet header: client -> server
    assert side_endpoint(ev("__sys_recvfrom", **s)) == SERVER  # rx direction, still src
    assert side_endpoint(ev("sock_recvmsg", **s)) == SERVER
    assert side_endpoint(ev("__skb_datagram_iter", **s)) == SERVER
    assert side_endpoint(ev("tcp_v4_send_synack", **s)) == SERVER
    assert side_endpoint(ev("__dev_queue_xmit", **h)) == CLIENT  # tx header: the sender
    assert side_endpoint(ev("ip_rcv", **h)) == SERVER  # rx header: the receiver
    assert side_endpoint(ev("tcp_v4_rcv", **h)) == SERVER


def test_synthetic_messages_nest_the_syscall_chain() -> None:
    tl = build_timeline(synthetic_chat().trace())
    msgs = [s for s in tl.flows[0].steps if isinstance(s, Message)]
    assert [(m.side, m.op, m.nbytes) for m in msgs] == [
        (Role.CLIENT, "recv", 20), (Role.SERVER, "send", 20), (Role.CLIENT, "send", 2),
        (Role.SERVER, "recv", 2), (Role.SERVER, "send", 2), (Role.CLIENT, "recv", 2)]
    send_hi = msgs[2]
    assert [te.probe for te in send_hi.events] == [
        "__sys_sendto", "tcp_sendmsg_locked", "__tcp_push_pending_frames", "tcp_write_xmit",
        "tcp_sendmsg_locked", "__sys_sendto"]
    assert send_hi.complete and send_hi.requested == 2
    (pkt_id,) = send_hi.packets
    hi = tl.steps[pkt_id]
    assert isinstance(hi, Packet) and hi.label == "PSH|ACK 2 B" and hi.message == send_hi.id
    # The 2 bytes are followed to the server's read.
    recv_hi = msgs[3]
    assert recv_hi.data_from == [hi.id] and hi.read_by == [recv_hi.id]
    # The blocking recv keeps the events that ran after the wake-up.
    assert [te.probe for te in msgs[0].events][-3:] == [
        "__skb_datagram_iter", "tcp_recvmsg", "__sys_recvfrom"]


def test_synthetic_server_ack_after_hi_is_a_pure_ack_from_the_server_socket() -> None:
    tl = build_timeline(synthetic_chat().trace())
    pkts = packets(tl.flows[0].steps)
    i = next(i for i, p in enumerate(pkts) if p.label == "PSH|ACK 2 B")
    ack = pkts[i + 1]
    assert ack.label == "ACK" and ack.direction == "server -> client"
    assert ack.segment.seq == ack.segment.end_seq
    assert ack.events[0].ev.sk == SERVER_SK and ack.events[0].ev.ctx is Context.SOFTIRQ


def test_synthetic_every_event_in_exactly_one_step() -> None:
    t = synthetic_chat()
    t.ev("tcp_push", tid=999, comm="other")  # no flow at all
    tl = build_timeline(t.trace())
    seen = [te.index for st in tl.steps for te in st.events]
    assert sorted(seen) == list(range(len(t.events)))
    in_groups = [te.index for fl in tl.flows for st in fl.steps for te in st.events]
    in_groups += [te.index for g in tl.unattributed for st in g.steps for te in st.events]
    assert sorted(in_groups) == sorted(seen)
    assert all(te.step >= 0 and tl.step_of(te).events.count(te) == 1 for te in tl.events)


def test_synthetic_unattributed_events_kept_by_thread_and_nested_ones_inherit() -> None:
    t = SyntheticTrace()
    t.ev("tcp_push", tid=300, comm="worker")  # sk=0, no addresses, outside any syscall
    t.ev("tcp_write_xmit", tid=300, comm="worker", seq=None)
    s = sock(CLIENT_PORT, SERVER_PORT)
    t.ev("__sys_sendto", sk=CLIENT_SK, length=2, **s)
    t.ev("tcp_push")  # no flow of its own, but inside the client's send
    t.ev("tcp_write_xmit", sk=CLIENT_SK)  # socket known, addresses not: the sk map
    t.ev("__sys_sendto", "return", sk=CLIENT_SK, ret=2, **s)
    tl = build_timeline(t.trace())
    (grp,) = tl.unattributed
    assert (grp.tid, grp.comm) == (300, "worker")
    assert [te.probe for st in grp.steps for te in st.events] == ["tcp_push", "tcp_write_xmit"]
    assert all(isinstance(st, Lone) for st in grp.steps)
    (msg,) = tl.flows[0].steps
    assert [te.side for te in msg.events] == [Role.CLIENT] * 4
    assert all(te.flow == 1 for te in msg.events)


def test_synthetic_sk_map_gives_flow_and_side_outside_a_syscall() -> None:
    t = SyntheticTrace()
    t.ev("tcp_push", tid=SERVER_TID, sk=SERVER_SK, **sock(SERVER_PORT, CLIENT_PORT))
    t.ev("tcp_write_xmit", tid=SERVER_TID, ctx="softirq", sk=SERVER_SK)  # no addresses
    tl = build_timeline(t.trace())
    assert tl.unattributed == []
    lone = tl.flows[0].steps[1]
    assert isinstance(lone, Lone)
    assert lone.events[0].side is Role.SERVER and lone.events[0].endpoint == SERVER


def test_synthetic_orphan_return_and_missing_return() -> None:
    t = SyntheticTrace()
    s = sock(CLIENT_PORT, SERVER_PORT)
    t.ev("__sys_recvfrom", "return", sk=CLIENT_SK, ret=4, **s)  # entry before tracing
    t.ev("__sys_sendto", sk=CLIENT_SK, length=3, **s)  # return never seen
    t.ev("__sys_sendto", sk=CLIENT_SK, length=5, **s)
    t.ev("__sys_sendto", "return", sk=CLIENT_SK, ret=5, **s)
    msgs = build_timeline(t.trace()).flows[0].steps
    assert [(type(m).__name__, len(m.events)) for m in msgs] == [
        ("Message", 1), ("Message", 1), ("Message", 2)]
    assert isinstance(msgs[0], Message) and msgs[0].nbytes == 4 and not msgs[0].complete
    assert isinstance(msgs[1], Message) and msgs[1].nbytes is None
    assert "no return seen" in msgs[1].title


def test_synthetic_handoff_and_offsets() -> None:
    tl = build_timeline(synthetic_chat().trace())
    syn = packets(tl.flows[0].steps)[0]
    assert [te.handoff for te in syn.events] == [False, False, False, True, False]
    assert [te.offset_ns for te in syn.events] == [0, 1000, 2000, 3000, 4000]
    assert syn.events[3].context == "softirq NET_RX client[200]"
    assert syn.events[0].context == "task client[200]"


def test_synthetic_lost_gap_attached_to_the_flow_in_time() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.lose(7, "ip_rcv")
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=2, sk=CLIENT_SK,
                       tid=CLIENT_TID)
    tl = build_timeline(t.trace())
    (gap,) = tl.gaps
    assert gap.count == 7 and gap.probe == "ip_rcv"
    assert tl.flows[0].gaps == [gap]
    assert gap.offset_ns == 14_000  # 14 events before it, 1 us apart
    assert gap.text == "lost 7 events from ip_rcv"


def test_synthetic_graph_links_threads_packets_and_calls() -> None:
    tl = build_timeline(synthetic_chat().trace())
    g = build_graph(tl)
    assert g.number_of_nodes() == len(tl.events)
    syn = packets(tl.flows[0].steps)[0]
    a, b = syn.events[2].index, syn.events[3].index  # device -> ip_rcv: the wire hop
    assert g.edges[a, b]["kind"] == "handoff" and "wire" in g.edges[a, b]["whys"]
    send = next(s for s in tl.flows[0].steps if isinstance(s, Message) and s.op == "send")
    entry, ret = send.events[0].index, send.events[-1].index
    assert g.edges[entry, ret]["kind"] == "next" and "return" in g.edges[entry, ret]["whys"]
    first, second = send.events[0].index, send.events[1].index
    assert g.edges[first, second]["kind"] == "next"
    assert g.nodes[first]["probe"] == "__sys_sendto"


def test_synthetic_empty_trace() -> None:
    tl = build_timeline(SyntheticTrace().trace())
    assert tl.flows == [] and tl.steps == [] and tl.duration_ns == 0


def test_synthetic_softirq_run_and_trailer_join_the_packet() -> None:
    t = SyntheticTrace()
    h = hdr(CLIENT_PORT, SERVER_PORT, CLIENT_ISN + 1, PSH | ACK, SERVER_ISN + 1, 2)
    t.ev("__dev_queue_xmit", sk=CLIENT_SK, skb=0x10, **h)
    t.ev("__netif_rx", skb=0x10, **h)  # loopback: still in the sender's task
    t.ev("net_rx_action", ctx="softirq", netns=0)  # no flow: the softirq run itself
    t.ev("ip_rcv", ctx="softirq", skb=0x10, **h)
    t.ev("tcp_v4_rcv", ctx="softirq", skb=0x10, **h)
    t.ev("sock_def_readable", ctx="softirq", sk=SERVER_SK, **sock(SERVER_PORT, CLIENT_PORT))
    tl = build_timeline(t.trace())
    assert tl.unattributed == []
    (pkt,) = tl.flows[0].steps
    assert isinstance(pkt, Packet)
    assert [te.probe for te in pkt.events] == [
        "__dev_queue_xmit", "__netif_rx", "net_rx_action", "ip_rcv", "tcp_v4_rcv",
        "sock_def_readable"]
    assert [te.side for te in pkt.events] == [Role.CLIENT] + [Role.SERVER] * 5
    assert [te.handoff for te in pkt.events] == [False, False, True, False, False, False]


def test_synthetic_retransmit_call_without_ack_joins_the_segment_sent_again() -> None:
    t = SyntheticTrace()
    args = dict(src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                flags=PSH | ACK, ack=SERVER_ISN + 1, payload=2, sk=CLIENT_SK, tid=CLIENT_TID)
    synthetic_transmit(t, **args)  # type: ignore[arg-type]
    t.ev("tcp_retransmit_skb", ctx="softirq", sk=CLIENT_SK, skb=0x1000, seq=CLIENT_ISN + 1,
         end_seq=CLIENT_ISN + 3, tcp_flags=PSH | ACK, length=2,
         **sock(CLIENT_PORT, SERVER_PORT))
    synthetic_transmit(t, ctx="softirq", **args)  # type: ignore[arg-type]
    pkts = packets(build_timeline(t.trace()).flows[0].steps)
    assert len(pkts) == 2 and pkts[1].again
    assert [te.probe for te in pkts[1].events][:2] == ["tcp_retransmit_skb", "__tcp_transmit_skb"]


def test_synthetic_entry_without_flow_pairs_with_its_return() -> None:
    t = SyntheticTrace()
    t.ev("inet_csk_accept", tid=SERVER_TID, sk=0x51,  # the listener: no peer yet
         saddr="0.0.0.0", sport=SERVER_PORT, daddr="0.0.0.0", dport=0)
    synthetic_handshake(t)
    t.ev("inet_csk_accept", "return", tid=SERVER_TID, sk=SERVER_SK, ret=SERVER_SK,
         **sock(SERVER_PORT, CLIENT_PORT))
    tl = build_timeline(t.trace())
    assert tl.unattributed == []
    accept = next(s for s in tl.flows[0].steps if isinstance(s, Lone))
    assert [te.ev.kind for te in accept.events] == [Kind.ENTRY, Kind.RETURN]
    assert accept.side is Role.SERVER and all(te.side is Role.SERVER for te in accept.events)


def test_synthetic_step_ids_follow_first_events() -> None:
    t = SyntheticTrace()
    t.ev("tcp_send_ack", ctx="softirq", sk=SERVER_SK, **sock(SERVER_PORT, CLIENT_PORT))
    t.ev("tcp_push", tid=SERVER_TID, sk=SERVER_SK, **sock(SERVER_PORT, CLIENT_PORT))
    synthetic_transmit(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=SERVER_ISN + 1,
                       flags=ACK, ack=CLIENT_ISN + 3, payload=0, sk=SERVER_SK, tid=CLIENT_TID,
                       ctx="softirq")
    tl = build_timeline(t.trace())
    assert [st.id for st in tl.steps] == list(range(len(tl.steps)))
    assert [st.events[0].index for st in tl.steps] == sorted(st.events[0].index
                                                             for st in tl.steps)
    ack = next(s for s in tl.steps if isinstance(s, Packet))
    assert ack.events[0].probe == "tcp_send_ack"  # the lead-in builds this ACK
