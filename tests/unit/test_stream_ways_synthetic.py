"""Synthetic traces (hand-built events, not recordings) for the rules the
recordings of tests/data do not reach: sendmmsg's message count, a
tcp_sendmsg_locked outside any syscall (io_uring, sendfile since 6.5),
bytes read by no traced recv, and the symbol note of a removed probe."""

from __future__ import annotations

from probes.catalog import BY_NAME
from probes.resolve import KernelSymbols, resolve
from tests.replay.test_stats_columnar import assert_same_text
from tests.unit.synthetic_traces import (
    ACK,
    CLIENT_ISN,
    CLIENT_PORT,
    CLIENT_SK,
    CLIENT_TID,
    PSH,
    SERVER_ISN,
    SERVER_PORT,
    SERVER_SK,
    SERVER_TID,
    SyntheticTrace,
    sock,
    synthetic_handshake,
    synthetic_recv,
    synthetic_transmit,
)
from tracer.timeline import build_timeline
from tracer.timeline.accounting import account_bytes
from tracer.timeline.byte_ranges import message_bytes
from tracer.timeline.model import ByteRange, RangeSource, Role

S = sock(CLIENT_PORT, SERVER_PORT)
R = sock(SERVER_PORT, CLIENT_PORT)


def _write(t: SyntheticTrace, at: int, nbytes: int, skb: int, probe: str = "tcp_sendmsg_locked",
           tid: int = CLIENT_TID) -> None:
    """One stream-position call writing nbytes at relative byte `at`, and its segment."""
    t.ev(probe, tid=tid, sk=CLIENT_SK, seq=CLIENT_ISN + at, end_seq=CLIENT_ISN + at,
         length=nbytes, **S)
    synthetic_transmit(t, src_port=CLIENT_PORT, dst_port=SERVER_PORT, seq=CLIENT_ISN + at,
                       flags=PSH | ACK, ack=SERVER_ISN + 1, payload=nbytes, sk=CLIENT_SK,
                       tid=tid, skb=0x5000 + at)
    t.ev(probe, "return", tid=tid, sk=CLIENT_SK, ret=nbytes, **S)


def _recv(t: SyntheticTrace, at: int, nbytes: int) -> None:
    t.ev("__sys_recvfrom", tid=SERVER_TID, sk=SERVER_SK, length=4096, **R)
    t.ev("tcp_recvmsg", tid=SERVER_TID, sk=SERVER_SK, seq=CLIENT_ISN + at,
         end_seq=CLIENT_ISN + at, length=4096, **R)
    t.ev("tcp_recvmsg", "return", tid=SERVER_TID, sk=SERVER_SK, ret=nbytes, **R)
    t.ev("__sys_recvfrom", "return", tid=SERVER_TID, sk=SERVER_SK, ret=nbytes, **R)


def test_synthetic_sendmmsg_counts_the_bytes_inside() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.ev("__sys_sendmmsg", tid=CLIENT_TID, sk=CLIENT_SK, **S)
    _write(t, 1, 100, 0x1)
    _write(t, 101, 50, 0x2)
    t.ev("__sys_sendmmsg", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=2, **S)
    synthetic_recv(t, client=False, seq=CLIENT_ISN + 1, nbytes=150, skb=0x9000)
    tl = build_timeline(t.trace())
    (send,) = [m for m in tl.messages(1) if m.op == "send"]
    assert send.nbytes == 150  # not the 2 messages the syscall returned
    assert (send.byte_range, send.range_from) == (ByteRange(1, 151), RangeSource.KERNEL)
    a = account_bytes(tl, 1, Role.CLIENT)
    assert a.balanced and dict(a.written_by) == {"sendmmsg": 150}
    assert assert_same_text(t.trace()) == 1


def test_synthetic_sendmsg_locked_outside_a_syscall_and_an_untraced_reader() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.ev("__sys_sendto", tid=CLIENT_TID, sk=CLIENT_SK, length=100, **S)
    _write(t, 1, 100, 0x1)
    t.ev("__sys_sendto", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=100, **S)
    _write(t, 101, 40, 0x2, tid=300)  # an io_uring worker: no syscall traced
    t.ev("__sys_sendto", tid=CLIENT_TID, sk=CLIENT_SK, length=10, **S)
    _write(t, 141, 10, 0x3)
    t.ev("__sys_sendto", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=10, **S)
    _recv(t, 1, 100)
    _recv(t, 131, 20)  # bytes 101:131 were read by no traced call
    tl = build_timeline(t.trace())
    sends = [m.byte_range for m in tl.messages(1) if m.op == "send"]
    assert sends == [ByteRange(1, 101), ByteRange(141, 151)]
    a = account_bytes(tl, 1, Role.CLIENT)
    assert [(str(r), way.split(" ")[0]) for r, way in a.written_other] == \
        [("101:141", "tcp_sendmsg_locked")]
    assert [(str(r), way) for r, way in a.read_other] == [("101:131", "untraced reader")]
    assert a.written_total == a.carried == 150 and a.read_total == 150 and a.balanced
    assert assert_same_text(t.trace()) == 1


def test_removed_page_send_probe_says_why() -> None:
    syms = KernelSymbols.parse(["ffffffff81002000 T tcp_sendmsg_locked"])
    (res,) = resolve([BY_NAME["tcp_sendpage"]], syms)
    assert res.reason == "absent" and "removed in Linux 6.5" in (res.detail or "")


def _sends(t: SyntheticTrace) -> list[tuple[str, int | None]]:
    tl = build_timeline(t.trace())
    return [(m.syscall, message_bytes(m)) for m in tl.messages(1) if m.op == "send"]


def test_synthetic_io_uring_eagain_after_a_partial_send_counts_the_bytes() -> None:
    """io_uring's send returns -EAGAIN after a partial write (issued again
    for the rest) and 0 when done: the bytes are the calls' inside; a send
    that failed with none moved is a failed send."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.ev("io_send", tid=CLIENT_TID, sk=CLIENT_SK, length=150, **S)
    _write(t, 1, 100, 0x1)
    t.ev("io_send", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=-11, **S)
    t.ev("io_send", tid=CLIENT_TID, sk=CLIENT_SK, length=50, **S)
    _write(t, 101, 50, 0x2)
    t.ev("io_send", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=0, **S)
    t.ev("io_send", tid=CLIENT_TID, sk=CLIENT_SK, length=10, **S)
    t.ev("io_send", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=-32, **S)
    _recv(t, 1, 150)
    assert _sends(t) == [("io_send", 100), ("io_send", 50), ("io_send", -32)]
    a = account_bytes(build_timeline(t.trace()), 1, Role.CLIENT)
    assert (a.written, a.failed_sends) == (150, 1) and a.balanced
    assert assert_same_text(t.trace()) == 1


def test_synthetic_mmsg_without_its_return_and_alone_with_it() -> None:
    """A sendmmsg whose return was lost counts the calls' bytes inside it
    (both of them, as a send whose return was lost); the return of one whose
    entry was lost counts nothing (a send without a return value)."""
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.ev("__sys_sendmmsg", tid=CLIENT_TID, sk=CLIENT_SK, **S)
    _write(t, 1, 100, 0x1)
    _write(t, 101, 50, 0x2)
    t.ev("__sys_sendto", tid=CLIENT_TID, sk=CLIENT_SK, length=30, **S)
    _write(t, 151, 30, 0x3)
    _write(t, 181, 20, 0x4)
    t.ev("__sys_sendmmsg", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=1, **S)
    _recv(t, 1, 200)
    assert _sends(t) == [("__sys_sendmmsg", 150), ("__sys_sendto", 50), ("__sys_sendmmsg", None)]
    a = account_bytes(build_timeline(t.trace()), 1, Role.CLIENT)
    assert (a.written, a.unknown_sends) == (200, 1)
    assert assert_same_text(t.trace()) == 1


def test_synthetic_recvmmsg_and_io_uring_recv_count_the_bytes_inside() -> None:
    t = SyntheticTrace()
    synthetic_handshake(t)
    t.ev("__sys_sendto", tid=CLIENT_TID, sk=CLIENT_SK, length=300, **S)
    _write(t, 1, 300, 0x1)
    t.ev("__sys_sendto", "return", tid=CLIENT_TID, sk=CLIENT_SK, ret=300, **S)
    for probe, ret, parts in (("__x64_sys_recvmmsg", 2, ((1, 100), (101, 50))),
                              ("io_recv", 0, ((151, 150),))):
        t.ev(probe, tid=SERVER_TID, sk=SERVER_SK, **R)
        for at, n in parts:
            t.ev("tcp_recvmsg", tid=SERVER_TID, sk=SERVER_SK, seq=CLIENT_ISN + at,
                 end_seq=CLIENT_ISN + at, length=4096, **R)
            t.ev("tcp_recvmsg", "return", tid=SERVER_TID, sk=SERVER_SK, ret=n, **R)
        t.ev(probe, "return", tid=SERVER_TID, sk=SERVER_SK, ret=ret, **R)
    tl = build_timeline(t.trace())
    assert [message_bytes(m) for m in tl.messages(1) if m.op == "recv"] == [150, 150]
    a = account_bytes(tl, 1, Role.CLIENT)
    assert a.read == 300 and dict(a.read_by) == {"recvmmsg": 150, "io_uring recv": 150}
    assert assert_same_text(t.trace()) == 1
