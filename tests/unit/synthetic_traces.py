"""Synthetic traces built in code (no kernel involved) for the unit tests.

`SyntheticTrace` appends events one microsecond apart; the `synthetic_*`
helpers walk the kernel paths the probes see on Debian's 6.1 kernel over
loopback (send chain, NET_RX softirq receive, the SYN-ACK via
tcp_v4_send_synack, the recv chain), with made-up but consistent numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.events import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Context,
    Event,
    Kind,
    ProbeStatus,
)
from tracer.tracefile import Header, Lost, Trace, TraceWriter, Trailer, with_probes

NETNS = 4026531840
LO = "127.0.0.1"
CLIENT_PORT, SERVER_PORT = 54321, 10086
CLIENT_TID, SERVER_TID = 200, 100
CLIENT_SK, LISTEN_SK, SERVER_SK = 0xFFFF0000C1, 0xFFFF0000A0, 0xFFFF0000A1
CLIENT_ISN, SERVER_ISN = 1_000_000, 5_000_000
SYN, ACK, PSH, FIN, RST = TCP_SYN, TCP_ACK, TCP_PSH, TCP_FIN, TCP_RST

T0 = 1_000_000_000  # first event, ns


def synthetic_header(**over: Any) -> Header:
    hdr = Header(
        kernel_release="6.1.0-synthetic-amd64",
        kernel_version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.0-0 (synthetic)",
        hostname="synthetic-host",
        machine="x86_64",
        backend="bcc",
        buffer="ringbuf",
        started="2025-01-01T00:00:00+00:00",
        tool_version="0.1.0",
        probes=[
            ProbeStatus("__sys_sendto", "syscall", "tx", True, ["entry", "return"], "__sys_sendto"),
            ProbeStatus("__tcp_transmit_skb", "tcp", "tx", True, ["entry"], "__tcp_transmit_skb"),
            ProbeStatus("tcp_push", "tcp", "tx", False, reason="inlined",
                        detail="no symbol tcp_push in kallsyms"),
        ],
        command=["kpath", "demo", "chat"],
    )
    for key, value in over.items():
        setattr(hdr, key, value)
    return hdr


@dataclass
class SyntheticTrace:
    """Accumulates events at 1 us steps; `trace()` wraps them in a Trace."""

    events: list[Event] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)
    now: int = T0
    step_ns: int = 1000

    def ev(self, probe: str, kind: str = "entry", *, ctx: str = "task",
           tid: int = CLIENT_TID, comm: str | None = None, **fields: Any) -> Event:
        if comm is None:
            comm = {CLIENT_TID: "client", SERVER_TID: "server"}.get(tid, f"t{tid}")
        softirq = "NET_RX" if ctx in ("softirq", "ksoftirqd") else None
        fields.setdefault("netns", NETNS)
        event = Event(ts_ns=self.now, cpu=0, tgid=tid, tid=tid, comm=comm, probe=probe,
                      kind=Kind(kind), ctx=Context(ctx), softirq=softirq, **fields)
        self.events.append(event)
        self.now += self.step_ns
        return event

    def lose(self, count: int, probe: str | None = None) -> None:
        self.lost.append(Lost(ts_ns=self.now, count=count, probe=probe))
        self.now += self.step_ns

    def trace(self, *, trailer: bool = True, cut_short: str | None = None) -> Trace:
        tr = None
        if trailer:
            tr = Trailer(reason="command-exited", events=len(self.events),
                         lost=sum(x.count for x in self.lost), duration_ns=self.now - T0,
                         command_exit=0)
        return Trace(synthetic_header(), list(self.events), list(self.lost), tr,
                     path="synthetic.kpath", cut_short=cut_short)

    def write(self, path: Path, *, trailer: bool = True) -> Path:
        # The file's probe dictionary must name every probe its events use.
        header = with_probes(synthetic_header(), [e.probe for e in self.events])
        w = TraceWriter(path, header)
        for event in self.events:
            w.event(event)
        for rec in self.lost:
            w.lost_events(rec)
        if trailer:
            w.close("command-exited", duration_ns=self.now - T0, command_exit=0)
        else:
            w.flush()
        return path


def sock(local_port: int, remote_port: int) -> dict[str, Any]:
    """Socket-level fields: local endpoint as source."""
    return {"saddr": LO, "sport": local_port, "daddr": LO, "dport": remote_port}


def hdr(src_port: int, dst_port: int, seq: int, flags: int, ack: int | None,
        payload: int) -> dict[str, Any]:
    """Packet fields as a header capture reports them."""
    slots = (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    return {"saddr": LO, "sport": src_port, "daddr": LO, "dport": dst_port, "seq": seq,
            "end_seq": seq + payload + slots, "tcp_flags": flags,
            "ack": ack if flags & ACK else None, "length": payload}


def synthetic_wire(t: SyntheticTrace, *, src_port: int, dst_port: int, seq: int, flags: int,
                   ack: int | None, payload: int, sk: int, tid: int, ctx: str = "task",
                   rx_tid: int | None = None, skb: int = 0x1000, with_ip: bool = True,
                   with_rx: bool = True) -> None:
    """__ip_queue_xmit (the clone) -> __dev_queue_xmit -> NET_RX: ip_rcv -> tcp_v4_rcv."""
    clone = skb + 0x800  # the IP layer and below see the fast clone
    h = hdr(src_port, dst_port, seq, flags, ack, payload)
    if with_ip:
        t.ev("__ip_queue_xmit", ctx=ctx, tid=tid, sk=sk, skb=clone, **h)
    t.ev("__dev_queue_xmit", ctx=ctx, tid=tid, sk=sk, skb=clone, **h)
    if with_rx:
        rtid = tid if rx_tid is None else rx_tid
        t.ev("ip_rcv", ctx="softirq", tid=rtid, skb=clone, **h)
        t.ev("tcp_v4_rcv", ctx="softirq", tid=rtid, skb=clone, **h)


def synthetic_transmit(t: SyntheticTrace, *, src_port: int, dst_port: int, seq: int,
                       flags: int, ack: int | None, payload: int, sk: int, tid: int,
                       ctx: str = "task", skb: int = 0x1000, with_rx: bool = True) -> None:
    """__tcp_transmit_skb (TCP_SKB_CB view, the queued skb) then the wire."""
    slots = (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
    t.ev("__tcp_transmit_skb", ctx=ctx, tid=tid, sk=sk, skb=skb, seq=seq,
         end_seq=seq + payload + slots, tcp_flags=flags, ack=ack if flags & ACK else None,
         length=payload, **sock(src_port, dst_port))
    synthetic_wire(t, src_port=src_port, dst_port=dst_port, seq=seq, flags=flags, ack=ack,
                   payload=payload, sk=sk, tid=tid, ctx=ctx, skb=skb, with_rx=with_rx)


def synthetic_handshake(t: SyntheticTrace) -> None:
    """SYN and ACK through __tcp_transmit_skb (client socket); the SYN-ACK via
    tcp_v4_send_synack, all receives in NET_RX on the client's thread."""
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN,
                       flags=SYN, ack=None, payload=0, sk=CLIENT_SK, tid=CLIENT_TID,
                       skb=0x1000)
    t.ev("tcp_v4_send_synack", ctx="softirq", tid=CLIENT_TID, sk=LISTEN_SK, seq=SERVER_ISN,
         end_seq=SERVER_ISN + 1, tcp_flags=SYN | ACK, ack=CLIENT_ISN + 1, length=0,
         **sock(SERVER_PORT, CLIENT_PORT))
    synthetic_wire(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=SERVER_ISN,
                   flags=SYN | ACK, ack=CLIENT_ISN + 1, payload=0, sk=LISTEN_SK,
                   tid=CLIENT_TID, ctx="softirq", skb=0x2000, with_ip=False)
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + 1,
                       flags=ACK, ack=SERVER_ISN + 1, payload=0, sk=CLIENT_SK,
                       tid=CLIENT_TID, ctx="softirq", skb=0x3000)


def synthetic_send(t: SyntheticTrace, *, client: bool, seq: int, ack: int, nbytes: int,
                   skb: int) -> None:
    """send(): __sys_sendto -> tcp_sendmsg_locked -> ... -> __tcp_transmit_skb -> wire,
    the receive in NET_RX on the sender's thread, then the returns."""
    lp, rp = (CLIENT_PORT, SERVER_PORT) if client else (SERVER_PORT, CLIENT_PORT)
    sk, tid = (CLIENT_SK, CLIENT_TID) if client else (SERVER_SK, SERVER_TID)
    s = sock(lp, rp)
    t.ev("__sys_sendto", tid=tid, sk=sk, length=nbytes, **s)
    t.ev("tcp_sendmsg_locked", tid=tid, sk=sk, length=nbytes, **s)
    t.ev("tcp_push", tid=tid, sk=sk, **s)
    t.ev("__tcp_push_pending_frames", tid=tid, sk=sk, **s)
    t.ev("tcp_write_xmit", tid=tid, sk=sk, **s)
    synthetic_transmit(t, src_port=lp, dst_port=rp, seq=seq, flags=PSH | ACK, ack=ack,
                       payload=nbytes, sk=sk, tid=tid, skb=skb)
    t.ev("tcp_sendmsg_locked", "return", tid=tid, sk=sk, ret=nbytes, **s)
    t.ev("__sys_sendto", "return", tid=tid, sk=sk, ret=nbytes, **s)


def synthetic_recv(t: SyntheticTrace, *, client: bool, seq: int, nbytes: int, skb: int,
                   entry: bool = True) -> None:
    """recv(): __sys_recvfrom -> sock_recvmsg -> tcp_recvmsg -> __skb_datagram_iter."""
    lp, rp = (CLIENT_PORT, SERVER_PORT) if client else (SERVER_PORT, CLIENT_PORT)
    sk, tid = (CLIENT_SK, CLIENT_TID) if client else (SERVER_SK, SERVER_TID)
    s = sock(lp, rp)
    if entry:
        synthetic_recv_entry(t, client=client)
    t.ev("sock_recvmsg", tid=tid, sk=sk, **s)
    t.ev("tcp_recvmsg", tid=tid, sk=sk, length=1024, **s)
    t.ev("__skb_datagram_iter", tid=tid, sk=sk, skb=skb + 0x800, seq=seq, end_seq=seq + nbytes,
         length=nbytes, **s)
    t.ev("tcp_recvmsg", "return", tid=tid, sk=sk, ret=nbytes, **s)
    t.ev("__sys_recvfrom", "return", tid=tid, sk=sk, ret=nbytes, **s)


def synthetic_recv_entry(t: SyntheticTrace, *, client: bool) -> None:
    lp, rp = (CLIENT_PORT, SERVER_PORT) if client else (SERVER_PORT, CLIENT_PORT)
    sk, tid = (CLIENT_SK, CLIENT_TID) if client else (SERVER_SK, SERVER_TID)
    t.ev("__sys_recvfrom", tid=tid, sk=sk, length=1024, **sock(lp, rp))


def synthetic_chat() -> SyntheticTrace:
    """The hello/hi chat: handshake, 20-byte welcome, client "hi", the server's
    pure ACK from softirq, server "hi" back."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    c_seq, s_seq = CLIENT_ISN + 1, SERVER_ISN + 1
    synthetic_recv_entry(t, client=True)  # the client blocks in recv first
    synthetic_send(t, client=False, seq=s_seq, ack=c_seq, nbytes=20, skb=0x4000)
    synthetic_recv(t, client=True, seq=s_seq, nbytes=20, skb=0x4000, entry=False)
    s_seq += 20
    # client "hi"; the server ACKs it from NET_RX on the client's thread
    s = sock(CLIENT_PORT, SERVER_PORT)
    t.ev("__sys_sendto", tid=CLIENT_TID, sk=CLIENT_SK, length=2, **s)
    t.ev("tcp_sendmsg_locked", tid=CLIENT_TID, sk=CLIENT_SK, length=2, **s)
    t.ev("__tcp_push_pending_frames", tid=CLIENT_TID, sk=CLIENT_SK, **s)
    t.ev("tcp_write_xmit", tid=CLIENT_TID, sk=CLIENT_SK, **s)
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=c_seq,
                       flags=PSH | ACK, ack=s_seq, payload=2, sk=CLIENT_SK, tid=CLIENT_TID,
                       skb=0x5000)
    synthetic_transmit(t, src_port=SERVER_PORT, dst_port=CLIENT_PORT, seq=s_seq, flags=ACK,
                       ack=c_seq + 2, payload=0, sk=SERVER_SK, tid=CLIENT_TID, ctx="softirq",
                       skb=0x6000)
    t.ev("tcp_sendmsg_locked", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=2, **s)
    t.ev("__sys_sendto", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=2, **s)
    synthetic_recv(t, client=False, seq=c_seq, nbytes=2, skb=0x5000)
    c_seq += 2
    synthetic_send(t, client=False, seq=s_seq, ack=c_seq, nbytes=2, skb=0x7000)
    synthetic_recv(t, client=True, seq=s_seq, nbytes=2, skb=0x7000)
    return t


TX_PATH = ("__ip_queue_xmit", "__ip_local_out", "ip_output", "ip_finish_output2",
           "__dev_queue_xmit", "dev_hard_start_xmit", "loopback_xmit")
RX_PATH = ("__netif_rx", "ip_rcv", "ip_local_deliver", "tcp_v4_rcv")
RX_SOCK_PATH = ("tcp_v4_do_rcv", "tcp_rcv_established")


def synthetic_full_segment(t: SyntheticTrace, *, client: bool, seq: int, flags: int, ack: int,
                           payload: int, ctx: str = "task", tid: int | None = None,
                           skb: int = 0x1000, lead_in: str | None = None,
                           queue: bool = True) -> None:
    """One segment through every default-profile probe of the loopback path:
    __tcp_transmit_skb (queued skb) -> IP -> device -> driver (the clone),
    __netif_rx in the sender's context, NET_RX softirq up to tcp_queue_rcv and
    the reader's wake-up (data only)."""
    lp, rp = (CLIENT_PORT, SERVER_PORT) if client else (SERVER_PORT, CLIENT_PORT)
    sk, peer_sk = (CLIENT_SK, SERVER_SK) if client else (SERVER_SK, CLIENT_SK)
    tid = (CLIENT_TID if client else SERVER_TID) if tid is None else tid
    if lead_in is not None:
        t.ev(lead_in, ctx=ctx, tid=tid, sk=sk, **sock(lp, rp))
    h = hdr(lp, rp, seq, flags, ack, payload)
    t.ev("__tcp_transmit_skb", ctx=ctx, tid=tid, sk=sk, skb=skb, **sock(lp, rp),
         **{k: v for k, v in h.items() if k not in ("saddr", "sport", "daddr", "dport")})
    for probe in TX_PATH:
        t.ev(probe, ctx=ctx, tid=tid, sk=sk, skb=skb + 0x800, **h)
    t.ev("__netif_rx", ctx=ctx, tid=tid, skb=skb + 0x800, **h)
    t.ev("net_rx_action", ctx="softirq", tid=tid, netns=0)
    for probe in RX_PATH[1:]:
        t.ev(probe, ctx="softirq", tid=tid, skb=skb + 0x800, **h)
    for probe in RX_SOCK_PATH:
        t.ev(probe, ctx="softirq", tid=tid, sk=peer_sk, skb=skb + 0x800, **h)
    if payload and queue:
        t.ev("tcp_queue_rcv", ctx="softirq", tid=tid, sk=peer_sk, skb=skb + 0x800, **h)
        t.ev("sock_def_readable", ctx="softirq", tid=tid, sk=peer_sk, **sock(rp, lp))


def synthetic_bulk(total: int, *, mss: int = 1000, chunk: int = 4000, ack_every: int = 2,
                   handshake: bool = True, recv_size: int = 8000) -> SyntheticTrace:
    """A client writes `total` bytes in sends of `chunk` bytes, each sent as
    MSS-sized segments from inside the send; the server ACKs every
    `ack_every` segments from softirq, then reads in recvs of up to
    `recv_size` bytes (one __skb_datagram_iter per segment)."""
    t = SyntheticTrace()
    if handshake:
        synthetic_handshake(t)
    c_seq, s_seq = CLIENT_ISN + 1, SERVER_ISN + 1
    s = sock(CLIENT_PORT, SERVER_PORT)
    queued: list[tuple[int, int]] = []  # (seq, len) not read yet
    sent_segments = 0
    skb = 0x100000
    written = 0
    while written < total:
        n = min(chunk, total - written)
        t.ev("__sys_sendto", sk=CLIENT_SK, length=n, **s)
        t.ev("tcp_sendmsg_locked", sk=CLIENT_SK, length=n, **s)
        t.ev("tcp_push", sk=CLIENT_SK, **s)
        t.ev("__tcp_push_pending_frames", sk=CLIENT_SK, **s)
        t.ev("tcp_write_xmit", sk=CLIENT_SK, **s)
        off = 0
        while off < n:
            size = min(mss, n - off)
            skb += 0x1000
            synthetic_full_segment(t, client=True, seq=c_seq, flags=PSH | ACK, ack=s_seq,
                                   payload=size, skb=skb)
            queued.append((c_seq, size))
            c_seq += size
            off += size
            sent_segments += 1
            if sent_segments % ack_every == 0:
                skb += 0x1000
                synthetic_full_segment(t, client=False, seq=s_seq, flags=ACK, ack=c_seq,
                                       payload=0, ctx="softirq", tid=CLIENT_TID, skb=skb,
                                       lead_in="tcp_send_ack")
        t.ev("tcp_sendmsg_locked", "return", sk=CLIENT_SK, ret=n, **s)
        t.ev("__sys_sendto", "return", sk=CLIENT_SK, ret=n, **s)
        written += n
        while queued and (sum(q[1] for q in queued) >= recv_size or written >= total):
            got = 0
            r = sock(SERVER_PORT, CLIENT_PORT)
            t.ev("__sys_recvfrom", tid=SERVER_TID, sk=SERVER_SK, length=recv_size, **r)
            t.ev("tcp_recvmsg", tid=SERVER_TID, sk=SERVER_SK, length=recv_size, **r)
            while queued and (got == 0 or got + queued[0][1] <= recv_size):
                seq, size = queued.pop(0)
                t.ev("__skb_datagram_iter", tid=SERVER_TID, sk=SERVER_SK, skb=0x77000,
                     seq=seq, end_seq=seq + size, length=size, **r)
                got += size
            t.ev("tcp_recvmsg", "return", tid=SERVER_TID, sk=SERVER_SK, ret=got, **r)
            t.ev("__sys_recvfrom", "return", tid=SERVER_TID, sk=SERVER_SK, ret=got, **r)
    return t


def synthetic_rounds(rounds: int) -> SyntheticTrace:
    """The handshake, then `rounds` times the client sends 2 bytes and the
    server reads them: 3 steps of one shape per round (send message, data
    packet, recv message), which is what the folding of big traces finds."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    seq = CLIENT_ISN + 1
    for i in range(rounds):
        skb = 0x10000 + i * 0x1000
        synthetic_send(t, client=True, seq=seq, ack=SERVER_ISN + 1, nbytes=2, skb=skb)
        synthetic_recv(t, client=False, seq=seq, nbytes=2, skb=skb)
        seq += 2
    return t
