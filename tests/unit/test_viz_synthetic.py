"""Renderers on synthetic traces: sequence model, text, mermaid, graphviz."""

from __future__ import annotations

import re
import shutil

import pytest

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
    synthetic_chat,
    synthetic_handshake,
    synthetic_transmit,
)
from tracer.timeline import Role, Timeline, build_timeline
from viz import graphviz_render
from viz.escape import mermaid_label as escape
from viz.mermaid import render_mermaid
from viz.sequence import Arrow, Note, SequenceDiagram, build_sequence
from viz.text import render_text

ORDER = ["client_app", "client_syscall", "client_socket", "client_tcp", "client_ip",
         "client_device", "server_device", "server_ip", "server_tcp", "server_socket",
         "server_syscall", "server_app"]


def chat_timeline() -> Timeline:
    return build_timeline(synthetic_chat().trace())


# -- sequence model


def test_synthetic_lifelines_in_layer_order_and_unused_ones_omitted() -> None:
    d = build_sequence(chat_timeline())
    assert [ll.key for ll in d.lifelines] == ORDER  # no driver probe: no driver lifelines
    t = SyntheticTrace()
    synthetic_handshake(t)  # no syscalls, no socket layer: apps kept anyway
    keys = [ll.key for ll in build_sequence(build_timeline(t.trace())).lifelines]
    assert keys == ["client_app", "client_tcp", "client_ip", "client_device", "server_device",
                    "server_ip", "server_tcp", "server_app"]


def test_synthetic_arrow_rules() -> None:
    d = build_sequence(chat_timeline())
    arrows = d.arrows
    assert len(arrows) == 72  # one per event
    assert [a.event for a in arrows] == sorted(a.event for a in arrows)  # time order
    by_text = {a.text: a for a in arrows}
    # a syscall entry comes from the app; its return goes back, dashed, "ret N"
    send = next(a for a in arrows if a.text == "__sys_sendto len 2" and a.role == "client")
    assert (send.src, send.dst, send.dashed) == ("client_app", "client_syscall", False)
    ret = next(a for a in arrows if a.text == "ret 2" and a.role == "client" and
               a.src == "client_syscall")
    assert (ret.dst, ret.dashed) == ("client_app", True)
    # a nested return goes back to where its entry came from
    locked_ret = next(a for a in arrows if a.text == "tcp_recvmsg ret 20")
    assert (locked_ret.src, locked_ret.dst, locked_ret.dashed) == (
        "client_tcp", "client_socket", True)
    # same lifeline: self-arrow; the wire hop starts at the sender's device
    push = next(a for a in arrows if a.text == "__tcp_push_pending_frames")
    assert push.is_self and push.src == "server_tcp"
    syn_rx = by_text["ip_rcv SYN seq 0:1"]
    assert (syn_rx.src, syn_rx.dst, syn_rx.wire, syn_rx.handoff) == (
        "client_device", "server_ip", True, True)
    synack_rx = by_text["ip_rcv SYN-ACK seq 0:1 ack 1"]
    assert (synack_rx.src, synack_rx.dst, synack_rx.wire) == (
        "server_device", "client_ip", True)
    # the first event of a step continues from its context's previous lifeline
    synack = by_text["tcp_v4_send_synack SYN-ACK seq 0:1 ack 1"]
    assert (synack.src, synack.dst) == ("server_tcp", "server_tcp")
    assert synack.time == "+0.005000 ms"


def test_synthetic_flow_note_and_lost_note_in_time() -> None:
    t = synthetic_chat()
    lost_at = len(t.events)
    t.lose(2, "tcp_v4_rcv")
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 3,
                       flags=PSH | ACK, ack=SERVER_ISN + 23, payload=4, sk=CLIENT_SK,
                       tid=CLIENT_TID)
    d = build_sequence(build_timeline(t.trace()))
    assert isinstance(d.rows[0], Note) and d.rows[0].kind == "flow"
    assert d.rows[0].text.startswith("flow 1: 127.0.0.1:54321 (client) <-> ")
    i = next(i for i, r in enumerate(d.rows) if isinstance(r, Note) and r.kind == "lost")
    before, after = d.rows[i - 1], d.rows[i + 1]
    assert isinstance(before, Arrow) and isinstance(after, Arrow)
    assert before.event == lost_at - 1 and after.event == lost_at
    assert "lost 2 events from tcp_v4_rcv" in d.rows[i].text


def test_synthetic_unknown_flow_raises_keyerror() -> None:
    with pytest.raises(KeyError):
        build_sequence(chat_timeline(), flow=2)


# -- text


def test_synthetic_replay_text_lists_steps_and_events() -> None:
    text = render_text(chat_timeline())
    assert "flow 1: 127.0.0.1:54321 (client) <-> 127.0.0.1:10086 (server)" in text
    assert "#0 packet  SYN client -> server" in text
    assert "#1 packet  SYN-ACK server -> client" in text
    assert "client send 2 B via __sys_sendto (asked 2)" in text
    assert "missing:  tcp_push (inlined: no symbol tcp_push in kallsyms)" in text
    line = next(ln for ln in text.splitlines() if "ip_rcv" in ln and "SYN seq 0:1" in ln)
    assert re.search(r"\+0\.003000 ms\s+\+1\.0 us\s+server\s+ip\s+ip_rcv\s+"
                     r"softirq NET_RX client\[200\]", line)
    assert line.endswith("[hand-off]")
    assert "\x1b[" not in text
    assert "\x1b[" in render_text(chat_timeline(), color=True)


def test_synthetic_replay_text_marks_lost_gap_between_steps() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.lose(5, "ip_rcv")
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=2, sk=CLIENT_SK,
                       tid=CLIENT_TID)
    lines = render_text(build_timeline(t.trace())).splitlines()
    gap = next(i for i, ln in enumerate(lines) if ln.startswith("  ~~ lost 5 events from ip_rcv"))
    ack_title = next(i for i, ln in enumerate(lines) if "#2 packet  ACK client -> server" in ln)
    data_title = next(i for i, ln in enumerate(lines) if "#3 packet  PSH|ACK 2 B" in ln)
    assert ack_title < gap < data_title
    assert "noticed at +0.014000 ms" in lines[gap]
    header = "\n".join(lines[:gap])
    assert "events   19, lost 5" in header


def test_synthetic_replay_text_cut_short_and_flow_filter() -> None:
    t = synthetic_chat()
    trace = t.trace(trailer=False, cut_short="no trailer: the tracer stopped before closing")
    text = render_text(build_timeline(trace))
    assert "  !! WARNING: trace cut short (no trailer: the tracer stopped before closing)" in text
    assert "stopped: not recorded (no trailer)" in text
    two = SyntheticTrace()
    two.ev("tcp_push", sk=1, saddr="10.0.0.1", sport=5000, daddr="10.0.0.2", dport=80)
    two.ev("tcp_push", sk=2, saddr="10.0.0.1", sport=5001, daddr="10.0.0.2", dport=80)
    only2 = render_text(build_timeline(two.trace()), flow=2)
    assert "flow 2: 10.0.0.1:5001 (client) <-> 10.0.0.2:80 (server)" in only2
    assert "flow 1:" not in only2
    assert "no handshake seen: the lower port is taken as the server" in only2


def test_synthetic_replay_text_unattributed_section() -> None:
    t = synthetic_chat()
    t.ev("tcp_push", tid=999, comm="stray")
    text = render_text(build_timeline(t.trace()))
    assert "unattributed: 1 event(s) without a flow, by thread" in text
    assert "thread stray[999] (tgid 999)" in text


# -- mermaid


def test_mermaid_escape_single_pass() -> None:
    assert escape("a;b#c") == "a#59;b#35;c"
    assert escape("#59;") == "#35;59#59;"  # codes are not escaped twice
    assert escape("x<->y\nz") == "x#60;-#62;y z"


def test_synthetic_mermaid_diagram() -> None:
    text = render_mermaid(build_sequence(chat_timeline()))
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    participants = [ln.split()[1] for ln in lines if ln.startswith("    participant ")]
    assert participants == ORDER
    assert "    participant client_tcp as client TCP" in lines
    assert any(ln.lstrip().startswith("client_app->>client_syscall: __sys_recvfrom buf 1024 (+")
               for ln in lines)
    assert any(ln.lstrip().startswith("client_syscall-->>client_app: ret 2 (+") for ln in lines)
    assert any(ln.lstrip().startswith(
        "client_device-)server_ip: [hand-off to softirq NET_RX] [wire] ip_rcv SYN seq 0:1")
        for ln in lines)
    body = [re.sub(r"#\d+;", "", ln.split(": ", 1)[1]) for ln in lines[1:] if ": " in ln]
    assert all(";" not in b and "#" not in b for b in body)


def test_mermaid_escapes_labels_with_semicolons_and_hashes() -> None:
    d = SequenceDiagram(title="t#1", lifelines=build_sequence(chat_timeline()).lifelines,
                        rows=[Note("a;b", "info"),
                              Arrow(src="client_app", dst="client_syscall", text="fn x;y #2",
                                    time="+1 ms", dashed=False, wire=False, handoff=False,
                                    event=0, step=0, role=Role.CLIENT)])
    text = render_mermaid(d)
    assert "title t#35;1" in text
    assert "Note over client_app,server_app: a#59;b" in text
    assert "client_app->>client_syscall: fn x#59;y #35;2 (+1 ms)" in text


# -- graphviz


def test_synthetic_dot_has_lifelines_and_arrows_in_order() -> None:
    d = build_sequence(chat_timeline())
    dot = graphviz_render.render_dot(d)
    heads = re.findall(r"^\s*(\w+)_head \[label=\"([^\"]+)\"", dot, re.M)
    assert [h for h, _ in heads] == ORDER
    assert heads[0][1] == "client app" and heads[-1][1] == "server app"
    # every lifeline is a dashed line from its header to its footer
    for key in ORDER:
        assert f"{key}_head -> {key}_foot" in dot
    # arrows: one edge per row, rows top to bottom in event order
    edges = re.findall(r"^\s*r(\d+)_a -> r\d+_(?:b|d) ", dot, re.M)
    labels = re.findall(r"^\s*r(\d+)_label \[label=<(.*?)</table>> .*?pos=\"[-\d.]+,([-\d.]+)!\"",
                        dot, re.M)
    ys = [float(y) for _, _, y in labels]
    assert ys == sorted(ys, reverse=True)
    arrow_rows = [i for i, r in enumerate(d.rows) if isinstance(r, Arrow)]
    assert [int(i) for i in edges if int(i) in arrow_rows] == arrow_rows
    first = next(lbl for i, lbl, _ in labels if int(i) == 1)
    assert "__tcp_transmit_skb SYN seq 0:1" in first
    assert dot == graphviz_render.render_dot(build_sequence(chat_timeline()))  # deterministic


@pytest.mark.skipif(shutil.which("neato") is None, reason="graphviz neato not installed")
def test_synthetic_svg_renders_deterministically() -> None:
    d = build_sequence(chat_timeline())
    svg = graphviz_render.render(d, "svg")
    assert svg.startswith(b"<?xml") and b"client app" in b"".join(svg.split(b"\n"))
    assert b"__tcp_transmit_skb SYN seq 0:1" in svg
    assert svg == graphviz_render.render(build_sequence(chat_timeline()), "svg")
    png = graphviz_render.render(d, "png")
    assert png.startswith(b"\x89PNG")
    pdf = graphviz_render.render(d, "pdf")
    assert pdf.startswith(b"%PDF") and b"/CreationDate (D:19700101000000Z)" in pdf


def test_graphviz_missing_binary_is_reported(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: object) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(graphviz_render.GraphvizUnavailable, match="neato"):
        graphviz_render.render(build_sequence(chat_timeline()), "svg")


def test_synthetic_diagram_of_a_trace_without_flows() -> None:
    d = build_sequence(build_timeline(SyntheticTrace().trace()))
    assert [ll.key for ll in d.lifelines] == ["client_app", "server_app"]
    assert any(isinstance(r, Note) and "no TCP flow" in r.text for r in d.rows)
    assert "sequenceDiagram" in render_mermaid(d)
    assert "client_app_head" in graphviz_render.render_dot(d)



def test_hop_times_keep_their_sign() -> None:
    from viz.text import fmt_hop

    assert [fmt_hop(v) for v in (850, 12_300, 1_670_000, -850, -156_866_655, None)] == [
        "+850 ns", "+12.3 us", "+1.67 ms", "-850 ns", "-156.87 ms", ""]
