"""The vectorised decode (tracer/capture/record.py) against the per-record
decode it replaced, kept here as the oracle, on the same raw records.

Every raw record here is synthetic: random field values, built in code."""

from __future__ import annotations

import ctypes
import re
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from probes.catalog import BY_NAME, ProbeSpec
from tracer.capture import record
from tracer.capture.base import BLIND_IP
from tracer.capture.errors import LoadError
from tracer.capture.record import (
    FRAME_BYTES,
    FRAME_LO,
    FRAME_TAIL_DTYPE,
    HAS_ACK,
    HAS_ARG3,
    HAS_FLAGS,
    HAS_LEN,
    HAS_RET,
    HAS_SEQ,
    HAS_TUPLE,
    RAW_DTYPE,
    RAW_EVENT_SIZE,
    SKIP_KPROBE,
    SKIP_PROG_ACTIVE,
    BlindWindow,
    ProbeTable,
    check_layout,
    decode_records,
)
from tracer.events import FILE_SCHEMA, SOFTIRQ_NAMES, Context, Event, Kind, batch_to_events


class RawEvent(ctypes.Structure):
    """struct kp_event as the per-record path read it."""

    _fields_ = [
        ("ts", ctypes.c_uint64), ("ip", ctypes.c_uint64), ("sk", ctypes.c_uint64),
        ("skb", ctypes.c_uint64), ("ret", ctypes.c_int64), ("arg3", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32), ("tid", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
        ("netns", ctypes.c_uint32), ("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32),
        ("seq", ctypes.c_uint32), ("end_seq", ctypes.c_uint32), ("ack", ctypes.c_uint32),
        ("length", ctypes.c_uint32), ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
        ("kind", ctypes.c_uint8), ("ctx", ctypes.c_uint8), ("vec", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8), ("has", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 7),
        ("comm", ctypes.c_char * 16),
    ]


_CTX = {0: Context.TASK, 1: Context.SOFTIRQ, 2: Context.HARDIRQ}


def old_decode(raw: RawEvent, probe_of: Callable[[int], ProbeSpec | None]) -> Event | None:
    """The per-record decode as it was before the columnar path (the oracle)."""
    spec = probe_of(raw.ip)
    if spec is None:
        return None
    has = raw.has
    ctx = _CTX.get(raw.ctx, Context.TASK)
    comm = raw.comm.decode("utf-8", errors="replace")
    if ctx == Context.SOFTIRQ and comm.startswith("ksoftirqd/"):
        ctx = Context.KSOFTIRQD
    softirq = None
    if ctx in (Context.SOFTIRQ, Context.KSOFTIRQD):
        softirq = SOFTIRQ_NAMES[raw.vec] if raw.vec < len(SOFTIRQ_NAMES) else str(raw.vec)
    length: int | None = raw.length if has & HAS_LEN else None
    if raw.kind == 0 and has & HAS_ARG3 and spec.length_arg3:
        length = raw.arg3
    tuple_ok = bool(has & HAS_TUPLE)

    def ipv4(addr_be: int) -> str:
        return socket.inet_ntoa(struct.pack("=I", addr_be))

    return Event(
        ts_ns=raw.ts, cpu=raw.cpu, tgid=raw.tgid, tid=raw.tid, comm=comm, probe=spec.name,
        kind=Kind.RETURN if raw.kind == 1 else Kind.ENTRY, ctx=ctx, softirq=softirq,
        sk=raw.sk, skb=raw.skb, netns=raw.netns,
        saddr=ipv4(raw.saddr) if tuple_ok else None, sport=raw.sport if tuple_ok else None,
        daddr=ipv4(raw.daddr) if tuple_ok else None, dport=raw.dport if tuple_ok else None,
        seq=raw.seq if has & HAS_SEQ else None, end_seq=raw.end_seq if has & HAS_SEQ else None,
        ack=raw.ack if has & HAS_ACK else None,
        tcp_flags=raw.tcp_flags if has & HAS_FLAGS else None,
        length=length, ret=raw.ret if has & HAS_RET else None,
    )


PROBES = ["__sys_sendto", "__tcp_transmit_skb", "tcp_recvmsg", "__sys_recvfrom", "ip_rcv"]
COMMS = [b"chat-client", b"ksoftirqd/1", b"ksoftirqd/0", b"swapper/0", b"bulk-server",
         b"kworker/u4:2\0zz", b"\xffbad-utf8", b"x" * 16]


def synthetic_records(n: int, seed: int, ip_of: list[int]) -> np.ndarray:
    """n synthetic raw records, every field random within its range."""
    rng = np.random.default_rng(seed)
    raw = np.zeros(n, RAW_DTYPE)
    for name in ("ts", "sk", "skb", "arg3"):
        raw[name] = rng.integers(0, 1 << 63, n, dtype=np.uint64)
    raw["ret"] = rng.integers(-(1 << 40), 1 << 40, n)
    for name in ("tgid", "tid", "cpu", "netns", "saddr", "daddr", "seq", "end_seq", "ack",
                 "length"):
        raw[name] = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    raw["sport"] = rng.integers(0, 1 << 16, n)
    raw["dport"] = rng.integers(0, 1 << 16, n)
    raw["kind"] = rng.integers(0, 2, n)
    raw["ctx"] = rng.choice([0, 1, 2, 7], n)
    raw["vec"] = rng.choice([0, 3, 9, 12], n)
    raw["tcp_flags"] = rng.integers(0, 256, n)
    raw["has"] = rng.integers(0, 128, n)
    raw["comm"] = np.array(COMMS, "S16")[rng.integers(0, len(COMMS), n)]
    # Mostly known probes, a few addresses that name none.
    ips = np.array(ip_of + [0xDEAD], np.uint64)
    raw["ip"] = ips[rng.integers(0, len(ips), n)]
    return raw


def _tables() -> list[tuple[ProbeTable, list[int], Callable[[int], ProbeSpec | None]]]:
    specs = [BY_NAME[name] for name in PROBES]
    arg3 = [s.length_arg3 for s in specs]
    # CO-RE: the record's ip is the probe's index.
    core = ProbeTable.build(PROBES, arg3, [(i, i) for i in range(len(specs))])
    # BCC: the probed function's address, with a few bytes of slack.
    addrs = [0xFFFFFFFF81000000 + 0x1000 * i for i in range(len(specs))]
    bcc = ProbeTable.build(PROBES, arg3, [(a, i) for i, a in enumerate(addrs)], slack=16)

    def by_index(ip: int) -> ProbeSpec | None:
        return specs[ip] if ip < len(specs) else None

    def by_addr(ip: int) -> ProbeSpec | None:
        for i, a in enumerate(addrs):
            if 0 <= ip - a <= 16:
                return specs[i]
        return None

    return [(core, list(range(len(specs))), by_index),
            (bcc, addrs + [a + 4 for a in addrs], by_addr)]


@pytest.mark.parametrize("which", [0, 1], ids=["core", "bcc"])
def test_vectorised_decode_equals_the_per_record_decode(which: int) -> None:
    table, ips, probe_of = _tables()[which]
    raw = synthetic_records(3000, seed=8 + which, ip_of=ips)
    want = []
    for rec in raw:
        ev = old_decode(RawEvent.from_buffer_copy(rec.tobytes()), probe_of)
        if ev is not None:
            want.append(ev)
    got = decode_records(raw.view(np.uint8).reshape(len(raw), RAW_EVENT_SIZE), table)
    assert got.batch.schema == FILE_SCHEMA  # the events, then their frames: none here
    assert got.batch.column("frame").null_count == got.batch.num_rows
    assert got.unknown == len(raw) - len(want) > 0
    assert batch_to_events(got.batch) == want
    # Every branch was exercised: nulls and values, each context, an unnamed vector.
    evs = batch_to_events(got.batch)
    assert {ev.ctx for ev in evs} == set(Context)
    assert {ev.softirq for ev in evs} >= {"HI", "NET_RX", "RCU", "12", None}
    assert any(ev.length is not None and ev.length > 1 << 32 for ev in evs)  # from arg3


def test_many_tasks_in_runs_and_scattered() -> None:
    """SYNTHETIC: 40 distinct comms (more than the few picked out by
    comparison; pairs alike in their first 8 bytes), in runs and one by
    one: every record's comm and ksoftirqd context as decoded one by one."""
    table, ips, probe_of = _tables()[0]
    rng = np.random.default_rng(11)
    names = [f"worker-{i:02d}".encode() for i in range(36)] + COMMS[:4]
    for runs in (True, False):
        raw = synthetic_records(2000, seed=12, ip_of=ips)
        picks = rng.integers(0, len(names), 2000 // 50 if runs else 2000)
        raw["comm"] = np.array(names, "S16")[np.repeat(picks, 50) if runs else picks]
        want = [ev for rec in raw
                if (ev := old_decode(RawEvent.from_buffer_copy(rec.tobytes()), probe_of))]
        got = decode_records(raw.view(np.uint8).reshape(len(raw), RAW_EVENT_SIZE), table)
        assert batch_to_events(got.batch) == want
        assert len({ev.comm for ev in want}) > 16


def test_probe_column_is_the_header_dictionary() -> None:
    table, ips, _ = _tables()[0]
    raw = synthetic_records(50, seed=1, ip_of=ips[:1])
    raw["ip"] = 1
    batch = decode_records(raw.view(np.uint8).reshape(50, RAW_EVENT_SIZE), table).batch
    col = batch.column("probe")
    assert isinstance(col, pa.DictionaryArray)
    assert col.dictionary.to_pylist() == PROBES
    assert set(col.indices.to_pylist()) == {1}


def test_an_empty_span_is_an_empty_batch() -> None:
    table, _, _ = _tables()[1]
    got = decode_records(np.zeros((0, RAW_EVENT_SIZE), np.uint8), table)
    assert got.batch.num_rows == 0 and got.unknown == 0 and got.batch.schema == FILE_SCHEMA


def test_numpy_mirror_matches_the_ctypes_layout() -> None:
    offsets = [(name, getattr(RawEvent, name).offset) for name, *_ in RawEvent._fields_]
    check_layout(RAW_DTYPE, "the ctypes struct", ctypes.sizeof(RawEvent), offsets)
    swapped = [("length" if n == "ack" else "ack" if n == "length" else n, o) for n, o in offsets]
    with pytest.raises(LoadError, match="ack: ours 80"):
        check_layout(RAW_DTYPE, "the ctypes struct", ctypes.sizeof(RawEvent), swapped)


def test_frames_follow_their_events_past_records_left_out() -> None:
    """SYNTHETIC frame tails on three records, one of them from no known
    probe: the others' frames keep their events' rows (moved up past the
    record left out), bytes cut at `cap`, link 0xffff read as unknown."""
    table, ips, _ = _tables()[0]
    raw = synthetic_records(6, seed=3, ip_of=ips[:1])
    raw["ip"] = [1, 1, 999, 1, 1, 1]
    tails = []
    lo, hi = (FRAME_TAIL_DTYPE.fields[f][1] for f in ("data_lo", "data_hi"))
    data = [bytes((0x10 * (i + 1) + j) & 0xFF for j in range(FRAME_BYTES)) for i in range(3)]
    for i, (cap, link) in enumerate(((3, 14), (5, 0xFFFF), (FRAME_BYTES, 14))):
        tail = np.zeros(1, FRAME_TAIL_DTYPE)
        tail["len"], tail["ifindex"], tail["cap"], tail["link"] = 1000 + i, 7, cap, link
        tail["dev_type"], tail["ifname"] = 772, b"lo"
        body = bytearray(tail.tobytes())
        # The frame's bytes in two pieces, around guard2 (kp_event.h).
        body[lo:lo + FRAME_LO] = data[i][:FRAME_LO]
        body[hi:hi + FRAME_BYTES - FRAME_LO] = data[i][FRAME_LO:]
        tails.append(bytes(body))
    got = decode_records(raw.view(np.uint8).reshape(6, RAW_EVENT_SIZE), table,
                         [1, 2, 4], tails)
    assert got.unknown == 1
    frame = got.batch.column("frame").to_pylist()
    assert [i for i, f in enumerate(frame) if f is not None] == [1, 3]
    assert frame[1] == {"ifindex": 7, "ifname": "lo", "dev_type": 772, "link": 14,
                        "len": 1000, "data": data[0][:3]}
    assert frame[3] == {"ifindex": 7, "ifname": "lo", "dev_type": 772, "link": 14,
                        "len": 1002, "data": data[2]}  # both pieces, in order
    alone = decode_records(raw[:2].view(np.uint8).reshape(2, RAW_EVENT_SIZE), table,
                           [0], [tails[1]]).batch.column("frame").to_pylist()
    assert alone[0]["link"] is None and alone[0]["data"] == data[1][:5] and alone[1] is None
    # The ring scan hands the tails over as one array: the same frames.
    as_array = np.frombuffer(b"".join(tails), np.uint8).reshape(3, -1)
    again = decode_records(raw.view(np.uint8).reshape(6, RAW_EVENT_SIZE), table,
                           np.array([1, 2, 4]), as_array).batch.column("frame").to_pylist()
    assert again == frame


def test_blind_window_records_are_not_events() -> None:
    """SYNTHETIC: two KIND_BLIND records (kp_event.h) among four events, a
    frame on the event after them: the windows come out on their own
    (start in arg3, end in ts), the events and the frame's row as if the
    windows were not there, and nothing counts as lost."""
    table, ips, _ = _tables()[1]  # BCC: a window's ip (0) is no probe's address
    raw = synthetic_records(6, seed=5, ip_of=ips[:1])
    raw["kind"] = [0, 2, 1, 2, 0, 0]
    raw["ip"] = [ips[0], 0, ips[0], 0, ips[0], ips[0]]
    raw["ts"][[1, 3]] = [5_000, 9_000]
    raw["arg3"][[1, 3]] = [4_000, 8_500]
    raw["cpu"][[1, 3]] = [1, 0]
    raw["ctx"][[1, 3]] = [1, 2]
    raw["vec"][[1, 3]] = [3, 0]
    raw["ret"][[1, 3]] = [SKIP_PROG_ACTIVE | SKIP_KPROBE, SKIP_KPROBE]  # why they opened
    tail = np.zeros(1, FRAME_TAIL_DTYPE)
    tail["cap"], tail["ifname"] = 1, b"lo"
    got = decode_records(raw.view(np.uint8).reshape(6, RAW_EVENT_SIZE), table,
                         [4], [tail.tobytes()])
    assert got.blind == [BlindWindow(since_ns=4_000, until_ns=5_000, cpu=1, what="softirq NET_RX",
                                     cause=3),
                         BlindWindow(since_ns=8_500, until_ns=9_000, cpu=0, what="irq", cause=2)]
    assert got.unknown == 0
    assert got.batch.num_rows == 4
    assert got.batch.column("ts_ns").to_pylist() == raw["ts"][[0, 2, 4, 5]].tolist()
    assert [f is not None for f in got.batch.column("frame").to_pylist()] == [
        False, False, True, False]


def test_the_decoders_constants_mirror_kp_event_h() -> None:
    """record.py and base.py name kp_event.h's numbers again: the same ones."""
    header = (Path(record.__file__).with_name("kp_event.h")).read_text(encoding="utf-8")
    defines = {m[1]: int(m[2], 0) for m in re.finditer(
        r"^#define (\w+) (0x[0-9a-fA-F]+|\d+)(?:ULL)?$", header, re.M)}
    assert defines["KIND_BLIND"] == record.KIND_BLIND
    assert (defines["KP_FRAME_BYTES"], defines["KP_FRAME_LO"]) == (FRAME_BYTES, FRAME_LO)
    assert defines["KP_BLIND_IP"] == BLIND_IP
    assert (defines["KP_SKIP_PROG_ACTIVE"], defines["KP_SKIP_KPROBE"],
            defines["KP_SKIP_MARK"]) == (SKIP_PROG_ACTIVE, SKIP_KPROBE, record.SKIP_MARK)
