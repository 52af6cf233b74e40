"""A synthetic repetitive trace (no kernel involved): the handshake, then
`rounds` times the client sends 2 bytes and the server reads them. Each
round is 3 steps of the same shape (send message, data packet, recv
message), which is what the folding of big traces looks for."""

from __future__ import annotations

from tests.unit.synthetic_traces import (
    CLIENT_ISN,
    SERVER_ISN,
    SyntheticTrace,
    synthetic_handshake,
    synthetic_recv,
    synthetic_send,
)


def synthetic_bulk(rounds: int) -> SyntheticTrace:
    t = SyntheticTrace()
    synthetic_handshake(t)
    seq = CLIENT_ISN + 1
    for i in range(rounds):
        skb = 0x10000 + i * 0x1000
        synthetic_send(t, client=True, seq=seq, ack=SERVER_ISN + 1, nbytes=2, skb=skb)
        synthetic_recv(t, client=False, seq=seq, nbytes=2, skb=skb)
        seq += 2
    return t
