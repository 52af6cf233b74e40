"""The seeds' gdb observations, as checks on a trace of `kpath demo chat`.

Corrected by what DESIGN.md measured on Debian's 6.1 kernel: the handshake
puts SYN, SYN-ACK and ACK on the device, only SYN and the final ACK pass
__tcp_transmit_skb (client socket), the SYN-ACK goes through
tcp_v4_send_synack. Used on the committed fixture and on a fresh VM trace.
"""

from __future__ import annotations

from tracer.events import Context, Event, Kind
from tracer.tracefile import Trace

SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
SERVER_PORT = 10086

SEND_CHAIN = (
    "__sys_sendto", "tcp_sendmsg_locked", "tcp_push", "__tcp_push_pending_frames",
    "tcp_write_xmit", "__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit",
)
RECV_CHAIN = ("__sys_recvfrom", "sock_recvmsg", "tcp_recvmsg", "__skb_datagram_iter")


def _entries(trace: Trace, probe: str) -> list[Event]:
    return [e for e in trace.events if e.probe == probe and e.kind == Kind.ENTRY]


def _subsequence(events: list[Event], chain: tuple[str, ...]) -> list[Event] | None:
    """First occurrence of chain, in order, as a subsequence of events."""
    out: list[Event] = []
    for ev in events:
        if len(out) < len(chain) and ev.kind == Kind.ENTRY and ev.probe == chain[len(out)]:
            out.append(ev)
    return out if len(out) == len(chain) else None


def check_seed_observations(trace: Trace) -> dict[str, object]:
    """Assert every observation; return what was found, for messages."""
    events = sorted(trace.events, key=lambda e: e.ts_ns)
    trace.events = events
    attached = {p.name for p in trace.header.attached}
    missing = {p.name: p.reason for p in trace.header.missing}
    for name in (*SEND_CHAIN, *RECV_CHAIN, "tcp_v4_send_synack"):
        assert name in attached or name in missing, f"{name} neither attached nor reported"

    # Handshake on the device: SYN, SYN-ACK, ACK in that order.
    dev = [e for e in _entries(trace, "__dev_queue_xmit")
           if SERVER_PORT in (e.sport, e.dport)]
    syn = next(e for e in dev if e.tcp_flags is not None and e.tcp_flags & (SYN | ACK) == SYN)
    client_port = syn.sport
    assert syn.dport == SERVER_PORT
    synack = next(e for e in dev if e.tcp_flags == SYN | ACK)
    assert synack.ts_ns > syn.ts_ns and synack.ack == (syn.seq or 0) + 1
    final_ack = next(e for e in dev if e.tcp_flags == ACK and e.sport == client_port
                     and e.ack == (synack.seq or 0) + 1)
    assert final_ack.ts_ns > synack.ts_ns

    # Only SYN and final ACK pass __tcp_transmit_skb, both from the client socket.
    xmit = [e for e in _entries(trace, "__tcp_transmit_skb")
            if SERVER_PORT in (e.sport, e.dport)]
    xmit_syn = [e for e in xmit if e.tcp_flags is not None and e.tcp_flags & SYN]
    assert [e.tcp_flags for e in xmit_syn] == [SYN], "a SYN-ACK passed __tcp_transmit_skb"
    client_sk = xmit_syn[0].sk
    assert xmit_syn[0].sport == client_port and xmit_syn[0].seq == syn.seq
    xmit_ack = next(e for e in xmit if e.tcp_flags == ACK and e.seq == final_ack.seq
                    and e.ack == final_ack.ack)
    assert xmit_ack.sk == client_sk, "final ACK not from the client socket"

    # The SYN-ACK takes its own path.
    sa = _entries(trace, "tcp_v4_send_synack")
    assert len(sa) == 1 and sa[0].seq == synack.seq and sa[0].sport == SERVER_PORT
    assert sa[0].ts_ns < synack.ts_ns

    # The client's 2-byte "hi" walks the send chain in order, in its thread.
    hi_send = next(e for e in _entries(trace, "__sys_sendto")
                   if e.sport == client_port and e.length == 2)
    thread = [e for e in events if e.tid == hi_send.tid and e.ts_ns >= hi_send.ts_ns]
    chain = tuple(n for n in SEND_CHAIN if n in attached)
    found = _subsequence(thread, chain)
    assert found is not None, f"send chain {chain} not found in order after the 2-byte send"
    assert all(e.ctx == Context.TASK for e in found)
    seg = next(e for e in found if e.probe == "__tcp_transmit_skb")
    assert seg.length == 2 and seg.tcp_flags == PSH | ACK and seg.sk == client_sk

    # Then a __tcp_transmit_skb from the server socket carries the ACK.
    peer_ack = next(e for e in xmit if e.ts_ns > seg.ts_ns and e.sport == SERVER_PORT)
    assert peer_ack.sk != client_sk and peer_ack.tcp_flags == ACK
    assert peer_ack.ack == seg.end_seq and peer_ack.length == 0

    # The receiving side runs in softirq (or ksoftirqd), not in a syscall.
    rx = [e for e in _entries(trace, "tcp_v4_rcv") if e.seq == seg.seq and e.sport == client_port]
    assert rx and rx[0].ctx in (Context.SOFTIRQ, Context.KSOFTIRQD) and rx[0].softirq == "NET_RX"

    # The server's recv chain copies exactly those 2 bytes.
    server_recv = [e for e in _entries(trace, "__sys_recvfrom")
                   if e.sport == SERVER_PORT and e.ts_ns > seg.ts_ns]
    copied = None
    for start in server_recv:
        t_events = [e for e in events if e.tid == start.tid and e.ts_ns >= start.ts_ns]
        got = _subsequence(t_events, RECV_CHAIN)
        if got and got[-1].seq == seg.seq:
            copied = got
            break
    assert copied is not None, "recv chain for the 2-byte segment not found"
    assert copied[-1].length == 2 and copied[-1].end_seq == seg.end_seq
    ret = next(e for e in events if e.tid == copied[0].tid and e.probe == "__sys_recvfrom"
               and e.kind == Kind.RETURN and e.ts_ns > copied[-1].ts_ns)
    assert ret.ret == 2
    return {"client_port": client_port, "client_sk": client_sk, "hi_seq": seg.seq}
