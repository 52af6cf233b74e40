"""Send-to-packet links shown (issue 9): a send whose bytes leave later, in
softirq when an ACK opens the window, is linked to the packet that carried
them in the text replay, the JSON and the diagrams; a call's own packets are
told from the peer's packets it handled. Synthetic events (no kernel)."""

from __future__ import annotations

import json

from tests.unit.synthetic_traces import (
    ACK,
    CLIENT_ISN,
    CLIENT_PORT,
    CLIENT_SK,
    CLIENT_TID,
    PSH,
    SERVER_ISN,
    SERVER_PORT,
    SyntheticTrace,
    sock,
    synthetic_handshake,
    synthetic_recv,
    synthetic_transmit,
)
from tracer.timeline import Message, Packet, Timeline, build_timeline
from viz.jsonout import render_json
from viz.mermaid import render_mermaid
from viz.sequence import build_sequence
from viz.text import render_text


def deferred_send() -> Timeline:
    """The client sends 1000 B while the window is closed: the call returns
    with nothing transmitted; the segment leaves in NET_RX when the server's
    ACK opens the window."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    s = sock(CLIENT_PORT, SERVER_PORT)
    t.ev("__sys_sendto", tid=CLIENT_TID, sk=CLIENT_SK, length=1000, **s)
    t.ev("tcp_sendmsg_locked", tid=CLIENT_TID, sk=CLIENT_SK, length=1000, **s)
    t.ev("tcp_sendmsg_locked", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=1000, **s)
    t.ev("__sys_sendto", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=1000, **s)
    t.ev("tcp_write_xmit", ctx="softirq", tid=CLIENT_TID, sk=CLIENT_SK, **s)
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=1000, sk=CLIENT_SK,
                       tid=CLIENT_TID, ctx="softirq", skb=0x5000)
    synthetic_recv(t, client=False, seq=CLIENT_ISN + 1, nbytes=1000, skb=0x5000)
    return build_timeline(t.trace())


def parts(tl: Timeline) -> tuple[Message, Packet]:
    send = next(st for st in tl.steps if isinstance(st, Message) and st.op == "send")
    data = next(st for st in tl.steps if isinstance(st, Packet) and st.segment.payload)
    return send, data


def test_a_deferred_send_is_linked_to_the_packet_that_carried_it() -> None:
    tl = deferred_send()
    send, data = parts(tl)
    assert send.packets == [] and data.message is None
    assert send.carried_by == [data.id] and data.written_by == [send.id]
    text = render_text(tl)
    assert f"#{send.id} message  client send 1000 B" in text
    assert f"carried by #{data.id} 1:1001" in text
    assert f"bytes 1:1001  of #{send.id} 1:1001" in text


def test_the_json_lists_the_links_with_their_bytes() -> None:
    tl = deferred_send()
    send, data = parts(tl)
    steps = {s["id"]: s for s in json.loads(render_json(tl))["steps"]}
    msg = steps[send.id]["message"]
    assert msg["byte_range"] == [1, 1001] and msg["range_from"] == "isn"
    assert msg["carried_by"] == [{"packet": data.id, "bytes": [1, 1001]}]
    assert msg["packets"] == [] and msg["handled"] == []
    pkt = steps[data.id]["packet"]
    assert pkt["byte_range"] == [1, 1001] and pkt["sent_by"] is None
    assert pkt["written_by"] == [{"message": send.id, "bytes": [1, 1001]}]


def test_the_diagram_draws_a_link_from_the_send_to_the_late_packet() -> None:
    tl = deferred_send()
    send, data = parts(tl)
    d = build_sequence(tl)
    (link,) = [a for a in d.all_arrows if a.kind == "bytes"]
    assert link.src == "client_app" and link.dst == "client_tcp" and link.step == data.id
    assert f"bytes 1:1001 of #{send.id}" in link.text and link not in d.arrows
    first_tx = data.tx_events[0].index
    rows = [r for r in d.all_arrows if r.event == first_tx]
    assert [r.kind for r in rows][0] == "bytes", "the link comes just before the packet"
    assert f"[bytes] bytes 1:1001 of #{send.id}" in render_mermaid(d)
