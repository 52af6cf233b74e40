"""The Python mirror of struct kp_event (tracer/capture/kp_event.h) and the
vectorised decoding of a span of raw records into one Arrow batch in
tracer.events.EVENT_SCHEMA, shared by both capture backends. The mirror is
checked against the loaded program's own layout (the CO-RE object's BTF,
BCC's generated type) before any record is read: a mismatch stops the trace
instead of decoding garbage.

No Python runs per record: every column is computed over the whole span.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tracer.capture.errors import LoadError
from tracer.events import (
    CTX_VALUES,
    EVENT_SCHEMA,
    FRAMES_SCHEMA,
    KIND_VALUES,
    SOFTIRQ_NAMES,
    Context,
    dict_column,
    empty_frames,
    with_frames,
)

# Must match HAS_* in kp_event.h.
HAS_TUPLE, HAS_SEQ, HAS_LEN, HAS_RET, HAS_ACK, HAS_FLAGS, HAS_ARG3 = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40,
)
KIND_RETURN = 1
KIND_BLIND = 2  # not an event: a blind window (kp_event.h KIND_BLIND)
# kp_event.h's CTX_* -> index in CTX_VALUES; anything else reads as task.
_CTX_CODE = np.full(256, CTX_VALUES.index(Context.TASK), np.int8)
_CTX_CODE[1] = CTX_VALUES.index(Context.SOFTIRQ)
_CTX_CODE[2] = CTX_VALUES.index(Context.HARDIRQ)
_SOFTIRQ = np.int8(CTX_VALUES.index(Context.SOFTIRQ))
_KSOFTIRQD = np.int8(CTX_VALUES.index(Context.KSOFTIRQD))

# Mirror of struct kp_event: (name, numpy type, offset).
_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("ts", "<u8", 0), ("ip", "<u8", 8), ("sk", "<u8", 16), ("skb", "<u8", 24),
    ("ret", "<i8", 32), ("arg3", "<u8", 40), ("tgid", "<u4", 48), ("tid", "<u4", 52),
    ("cpu", "<u4", 56), ("netns", "<u4", 60), ("saddr", "<u4", 64), ("daddr", "<u4", 68),
    ("seq", "<u4", 72), ("end_seq", "<u4", 76), ("ack", "<u4", 80), ("length", "<u4", 84),
    ("sport", "<u2", 88), ("dport", "<u2", 90), ("kind", "u1", 92), ("ctx", "u1", 93),
    ("vec", "u1", 94), ("tcp_flags", "u1", 95), ("has", "u1", 96), ("pad", "V7", 97),
    ("comm", "S16", 104),
)
RAW_DTYPE = np.dtype({"names": [f[0] for f in _FIELDS], "formats": [f[1] for f in _FIELDS],
                      "offsets": [f[2] for f in _FIELDS], "itemsize": 120})
RAW_EVENT_SIZE = RAW_DTYPE.itemsize
# Mirror of struct kp_frame_event after its kp_event (offsets from there).
FRAME_BYTES = 128  # KP_FRAME_BYTES
NO_LINK = 0xFFFF  # KP_NO_LINK
_FRAME_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("len", "<u4", 0), ("ifindex", "<u4", 4), ("cap", "<u2", 8), ("link", "<u2", 10),
    ("dev_type", "<u2", 12), ("pad", "<u2", 14), ("ifname", "S16", 16),
    ("data", f"V{FRAME_BYTES}", 32),
)
FRAME_TAIL_DTYPE = np.dtype({"names": [f[0] for f in _FRAME_FIELDS],
                             "formats": [f[1] for f in _FRAME_FIELDS],
                             "offsets": [f[2] for f in _FRAME_FIELDS],
                             "itemsize": 32 + FRAME_BYTES})
RAW_FRAME_SIZE = RAW_EVENT_SIZE + FRAME_TAIL_DTYPE.itemsize
# (name, offset) of struct kp_frame_event's members, as its BTF lists them.
FRAME_OFFSETS = (("ev", 0),) + tuple((name, RAW_EVENT_SIZE + off)
                                     for name, _, off in _FRAME_FIELDS)


def check_layout(mirror: type[ctypes.Structure] | np.dtype | tuple[int, Sequence[tuple[str, int]]],
                 source: str, size: int, offsets: Sequence[tuple[str, int]]) -> None:
    """Raise LoadError unless (size, field offsets) are the mirror's (a
    ctypes struct, a numpy dtype or (size, offsets) of kp_frame_event)."""
    if isinstance(mirror, tuple):
        label = "kp_frame_event mirror"
        our_size, ours = mirror[0], dict(mirror[1])
    elif isinstance(mirror, np.dtype):
        assert mirror.fields is not None
        label = "kp_event mirror"
        ours = {name: int(spec[1]) for name, spec in mirror.fields.items()}
        our_size = mirror.itemsize
    else:
        label = mirror.__name__
        ours = {name: getattr(mirror, name).offset for name, *_ in mirror._fields_}
        our_size = ctypes.sizeof(mirror)
    theirs = dict(offsets)
    diffs = [f"{name}: ours {ours.get(name)}, {source} {theirs.get(name)}"
             for name in sorted(set(ours) | set(theirs)) if ours.get(name) != theirs.get(name)]
    if size != our_size:
        diffs.insert(0, f"size: ours {our_size}, {source} {size}")
    if diffs:
        raise LoadError(f"{label} does not match the struct in {source}: " + "; ".join(diffs))


@dataclass(frozen=True)
class ProbeTable:
    """The trace's probe dictionary (header probe names, in order) and how a
    record's ip finds its entry: `keys` sorted ascending, `slots[i]` the
    dictionary index of keys[i], a match within `slack` bytes above a key.
    CO-RE: keys are the probe indexes the programs write (slack 0); BCC:
    the probed functions' addresses (slack for an endbr64 or ftrace site)."""

    names: tuple[str, ...]
    length_arg3: np.ndarray  # bool per dictionary entry
    keys: np.ndarray  # uint64, sorted
    slots: np.ndarray  # int64
    slack: int = 0

    @classmethod
    def build(cls, names: Sequence[str], length_arg3: Sequence[bool],
              keyed: Sequence[tuple[int, int]], slack: int = 0) -> ProbeTable:
        """keyed: (key, dictionary index) pairs."""
        pairs = sorted(keyed)
        return cls(tuple(names), np.array(length_arg3, bool),
                   np.array([k for k, _ in pairs], np.uint64),
                   np.array([s for _, s in pairs], np.int64), slack)

    def lookup(self, ip: np.ndarray) -> np.ndarray:
        """Dictionary index per record; -1 where the ip names no probe."""
        if not len(self.keys):
            return np.full(len(ip), -1, np.int64)
        i = np.searchsorted(self.keys, ip, side="right") - 1
        found = i >= 0
        j = np.maximum(i, 0)
        found &= (ip - self.keys[j]) <= np.uint64(self.slack)
        return np.where(found, self.slots[j], -1)


def _comm_column(comm: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The comm dictionary column, and per record whether it is ksoftirqd/N."""
    uniq, inverse = np.unique(comm, return_inverse=True)
    # The kernel's comm ends at its first NUL; bytes after it are not part of it.
    texts = [bytes(u).split(b"\0", 1)[0].decode("utf-8", errors="replace") for u in uniq]
    values: dict[str, int] = {}
    remap = np.array([values.setdefault(t, len(values)) for t in texts], np.int32)
    codes = remap[inverse.reshape(-1)] if len(uniq) else np.zeros(0, np.int32)
    ksoftirqd = np.array([t.startswith("ksoftirqd/") for t in values], bool)
    return (dict_column(codes, list(values), pa.int32()),
            ksoftirqd[codes] if len(values) else np.zeros(0, bool))


def _softirq_column(vec: np.ndarray, ctx: np.ndarray) -> pa.Array:
    named = len(SOFTIRQ_NAMES)
    in_softirq = (ctx == _SOFTIRQ) | (ctx == _KSOFTIRQD)
    values = list(SOFTIRQ_NAMES)
    codes = vec.astype(np.int16)
    # A vector the table does not name keeps its number, as text.
    for v in np.unique(vec[in_softirq & (vec >= named)]):
        codes[vec == v] = len(values)
        values.append(str(int(v)))
    if len(values) > 127:
        raise ValueError("more softirq vectors than an int8 dictionary holds")
    return dict_column(np.where(in_softirq, codes, 0), values, pa.int8(), mask=~in_softirq)


def decode_batch(raw: np.ndarray, probe: np.ndarray, table: ProbeTable) -> pa.RecordBatch:
    """Raw kp_event records (RAW_DTYPE) as one batch in EVENT_SCHEMA; `probe`
    is each record's dictionary index (ProbeTable.lookup), all >= 0."""
    has = raw["has"]
    kind = raw["kind"]
    comm, ksoftirqd = _comm_column(raw["comm"])
    ctx = _CTX_CODE[raw["ctx"]]
    ctx = np.where((ctx == _SOFTIRQ) & ksoftirqd, _KSOFTIRQD, ctx)
    no_tuple = (has & HAS_TUPLE) == 0
    no_seq = (has & HAS_SEQ) == 0
    # Entry records of probes whose third argument is a byte count carry
    # the length there.
    arg3_len = (kind != KIND_RETURN) & ((has & HAS_ARG3) != 0) & table.length_arg3[probe]
    length = np.where(arg3_len, raw["arg3"].astype(np.int64),
                      raw["length"].astype(np.int64))
    cols: dict[str, pa.Array] = {
        "ts_ns": pa.array(raw["ts"], pa.uint64()),
        "cpu": pa.array(raw["cpu"], pa.uint32()),
        "tgid": pa.array(raw["tgid"], pa.uint32()),
        "tid": pa.array(raw["tid"], pa.uint32()),
        "comm": comm,
        "probe": dict_column(probe, list(table.names), pa.uint16()),
        "kind": dict_column((kind == KIND_RETURN).astype(np.int8), KIND_VALUES, pa.int8()),
        "ctx": dict_column(ctx, CTX_VALUES, pa.int8()),
        "softirq": _softirq_column(raw["vec"], ctx),
        "sk": pa.array(raw["sk"], pa.uint64()),
        "skb": pa.array(raw["skb"], pa.uint64()),
        "netns": pa.array(raw["netns"], pa.uint32()),
        # Network byte order in the record; the column holds the address's
        # integer value (a.b.c.d -> a << 24 | ...).
        "saddr": pa.array(raw["saddr"].byteswap(), pa.uint32(), mask=no_tuple),
        "sport": pa.array(raw["sport"], pa.uint16(), mask=no_tuple),
        "daddr": pa.array(raw["daddr"].byteswap(), pa.uint32(), mask=no_tuple),
        "dport": pa.array(raw["dport"], pa.uint16(), mask=no_tuple),
        "seq": pa.array(raw["seq"], pa.uint32(), mask=no_seq),
        "end_seq": pa.array(raw["end_seq"], pa.uint32(), mask=no_seq),
        "ack": pa.array(raw["ack"], pa.uint32(), mask=(has & HAS_ACK) == 0),
        "tcp_flags": pa.array(raw["tcp_flags"], pa.uint8(), mask=(has & HAS_FLAGS) == 0),
        "length": pa.array(length, pa.int64(), mask=~(arg3_len | ((has & HAS_LEN) != 0))),
        "ret": pa.array(raw["ret"], pa.int64(), mask=(has & HAS_RET) == 0),
        "source": pa.array(np.zeros(len(raw), np.uint16), pa.uint16()),
    }
    return pa.record_batch([cols[f.name] for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


def decode_frames(rows: Sequence[int], tails: Sequence[bytes]) -> pa.Table:
    """Frame records' bytes after their event (kp_frame_event) as frames
    (tracer/frames.py FRAMES_SCHEMA), `rows` their events' rows."""
    if not len(rows):
        return empty_frames()
    joined = b"".join(tails)
    raw = np.frombuffer(joined, FRAME_TAIL_DTYPE)
    cap = np.minimum(raw["cap"], FRAME_BYTES).astype(np.int64)
    at = 32  # data's offset in _FRAME_FIELDS
    data = np.frombuffer(joined, np.uint8).reshape(len(raw), -1)[:, at:at + FRAME_BYTES]
    offsets = np.concatenate([[0], np.cumsum(cap)]).astype(np.int32)
    payload = data[np.arange(FRAME_BYTES) < cap[:, None]]
    names = [bytes(n).split(b"\0", 1)[0].decode("utf-8", errors="replace")
             for n in raw["ifname"]]
    link = raw["link"]
    cols = {
        "row": pa.array(np.asarray(rows, np.uint64)),
        "ifindex": pa.array(raw["ifindex"], pa.uint32()),
        "ifname": pa.array(names, pa.string()),
        "dev_type": pa.array(raw["dev_type"], pa.uint16()),
        "link": pa.array(link, pa.uint16(), mask=link == NO_LINK),
        "len": pa.array(raw["len"], pa.uint32()),
        "data": pa.Array.from_buffers(pa.binary(), len(raw), [
            None, pa.py_buffer(offsets), pa.py_buffer(payload.tobytes())]),
    }
    return pa.table([cols[f.name] for f in FRAMES_SCHEMA], schema=FRAMES_SCHEMA)


@dataclass(frozen=True, slots=True)
class BlindWindow:
    """From since_ns to until_ns the kernel skipped every kprobe program on
    `cpu`: `what` ("softirq NET_RX", "irq") ran where kprobes are skipped
    (kp_event.h irq_state), `cause` says why (SKIP_* bits: both of the
    kernel's means inside a kprobe program, one alone a kprobe handler
    around one or bpf_prog_active raised by something else). Their events are
    dropped without a count before Linux 6.7, and counted per probe (not
    placed in time) from it."""

    since_ns: int
    until_ns: int
    cpu: int
    what: str
    cause: int = 0


# kp_event.h KP_SKIP_*: a blind window's cause bits.
SKIP_PROG_ACTIVE, SKIP_KPROBE, SKIP_MARK = 1, 2, 4


def blind_windows(raw: np.ndarray) -> list[BlindWindow]:
    """The KIND_BLIND records among raw kp_event records (RAW_DTYPE)."""
    rows = raw[raw["kind"] == KIND_BLIND]
    if not len(rows):
        return []
    names = list(SOFTIRQ_NAMES)
    out = []
    for until, since, cpu, ctx, vec, cause in zip(
            rows["ts"].tolist(), rows["arg3"].tolist(), rows["cpu"].tolist(),
            rows["ctx"].tolist(), rows["vec"].tolist(), rows["ret"].tolist(), strict=True):
        what = ("softirq " + (names[vec] if vec < len(names) else str(vec))
                if _CTX_CODE[ctx] == _SOFTIRQ else "irq")
        out.append(BlindWindow(since_ns=min(since, until), until_ns=until, cpu=cpu, what=what,
                               cause=cause))
    return out


@dataclass
class Decoded:
    """One span's batch (FILE_SCHEMA: events and their frames), what could
    not be decoded (counted as lost) and the span's blind windows."""

    batch: pa.RecordBatch
    unknown: int  # records whose ip names no probe
    blind: list[BlindWindow]


def decode_records(records: np.ndarray, table: ProbeTable, frame_rows: Sequence[int] = (),
                   frame_tails: Sequence[bytes] = ()) -> Decoded:
    """(n, RAW_EVENT_SIZE) uint8 rows (a ring buffer span) -> one batch;
    frame_rows/frame_tails: the span's frame records (ringbuf.Span)."""
    raw = np.ascontiguousarray(records).view(RAW_DTYPE).reshape(-1)
    probe = table.lookup(raw["ip"])
    blind = blind_windows(raw)
    ok = probe >= 0
    if blind:
        ok &= raw["kind"] != KIND_BLIND
    unknown = int(len(ok) - np.count_nonzero(ok)) - len(blind)
    frames = decode_frames(frame_rows, frame_tails)
    if unknown or blind:
        raw, probe = raw[ok], probe[ok]
        # Rows move up past the records left out; a left-out frame goes too.
        new_row = np.cumsum(ok) - 1
        old_rows = frames.column("row").to_numpy().astype(np.int64)
        kept = ok[old_rows]
        frames = frames.filter(pa.array(kept)).set_column(
            0, "row", pa.array(new_row[old_rows[kept]].astype(np.uint64)))
    return Decoded(with_frames(decode_batch(raw, probe, table), frames), unknown, blind)
