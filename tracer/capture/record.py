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
    FILE_SCHEMA,
    FRAME_TYPE,
    KIND_VALUES,
    SOFTIRQ_NAMES,
    Context,
    dict_column,
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
# Mirror of struct kp_frame_event after its kp_event (offsets from there):
# three of the ring's 128-byte slots, guard1 and guard2 where the second and
# third begin (kp_event.h), the frame's bytes in two pieces around guard2.
FRAME_BYTES = 128  # KP_FRAME_BYTES
FRAME_LO = 120  # KP_FRAME_LO
NO_LINK = 0xFFFF  # KP_NO_LINK
_FRAME_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("guard1", "<u4", 0), ("len", "<u4", 4), ("data_lo", f"V{FRAME_LO}", 8),
    ("guard2", "<u4", 128), ("ifindex", "<u4", 132), ("cap", "<u2", 136), ("link", "<u2", 138),
    ("dev_type", "<u2", 140), ("pad", "<u2", 142), ("ifname", "S16", 144),
    ("data_hi", f"V{FRAME_BYTES - FRAME_LO}", 160), ("spare", "V88", 168),
)
FRAME_TAIL_DTYPE = np.dtype({"names": [f[0] for f in _FRAME_FIELDS],
                             "formats": [f[1] for f in _FRAME_FIELDS],
                             "offsets": [f[2] for f in _FRAME_FIELDS],
                             "itemsize": 256})
RAW_FRAME_SIZE = RAW_EVENT_SIZE + FRAME_TAIL_DTYPE.itemsize
_DATA_LO, _DATA_HI = ({name: off for name, _, off in _FRAME_FIELDS}[f]
                      for f in ("data_lo", "data_hi"))
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


_DIRECT_KEYS = 1 << 16


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
        if self.slack == 0 and int(self.keys[-1]) < _DIRECT_KEYS:
            # CO-RE's keys are probe indexes: a table indexed by them.
            direct = np.full(int(self.keys[-1]) + 2, -1, np.int64)
            direct[self.keys.astype(np.int64)] = self.slots
            out: np.ndarray = direct[np.minimum(ip, np.uint64(len(direct) - 1)).astype(np.int64)]
            return out
        i = np.searchsorted(self.keys, ip, side="right") - 1
        found = i >= 0
        j = np.maximum(i, 0)
        found &= (ip - self.keys[j]) <= np.uint64(self.slack)
        return np.where(found, self.slots[j], -1)


def _comm_column(comm: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The comm dictionary column, and per record whether it is ksoftirqd/N."""
    comm = np.ascontiguousarray(comm)
    uniq, inverse = _distinct_comms(comm)
    # The kernel's comm ends at its first NUL; bytes after it are not part of it.
    texts = [bytes(u).split(b"\0", 1)[0].decode("utf-8", errors="replace") for u in uniq]
    values: dict[str, int] = {}
    remap = np.array([values.setdefault(t, len(values)) for t in texts], np.int32)
    codes = remap[inverse] if len(uniq) else np.zeros(0, np.int32)
    ksoftirqd = np.array([t.startswith("ksoftirqd/") for t in values], bool)
    return (dict_column(codes, list(values), pa.int32()),
            ksoftirqd[codes] if len(values) else np.zeros(0, bool))


_FEW_COMMS = 16


def _distinct_comms(comm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct comms of a span (contiguous S16) and each record's
    index among them. A span has a few tasks: each is picked out by two
    word comparisons over the span, not by a sort of 16-byte strings (the
    costliest step of decoding under TCG); past _FEW_COMMS of them, the
    rest by the sort."""
    words = comm.view(np.uint64).reshape(len(comm), comm.itemsize // 8)
    cols = [np.ascontiguousarray(words[:, j]) for j in range(words.shape[1])]
    codes = np.full(len(comm), -1, np.int64)
    firsts: list[int] = []
    at = 0
    while at < len(comm) and len(firsts) < _FEW_COMMS:
        same = cols[0] == cols[0][at]
        for col in cols[1:]:
            same &= col == col[at]
        codes[same] = len(firsts)
        firsts.append(at)
        left = codes[at:] < 0
        at = at + int(np.argmax(left)) if left.any() else len(comm)
    uniq = comm[firsts]
    rest = codes < 0
    if rest.any():
        more, inverse = _distinct(comm[rest])
        codes[rest] = len(firsts) + inverse
        uniq = np.concatenate([uniq, more])
    return uniq, codes


def _softirq_column(vec: np.ndarray, ctx: np.ndarray) -> pa.Array:
    named = len(SOFTIRQ_NAMES)
    in_softirq = (ctx == _SOFTIRQ) | (ctx == _KSOFTIRQD)
    values = list(SOFTIRQ_NAMES)
    codes = vec.astype(np.int16)
    # A vector the table does not name keeps its number, as text.
    for v in _distinct(vec[in_softirq & (vec >= named)])[0]:
        codes[vec == v] = len(values)
        values.append(str(int(v)))
    if len(values) > 127:
        raise ValueError("more softirq vectors than an int8 dictionary holds")
    return dict_column(np.where(in_softirq, codes, 0), values, pa.int8(), mask=~in_softirq)


Validity = tuple[pa.Buffer | None, int]  # Arrow's validity bitmap, null count


def _validity(null: np.ndarray) -> Validity:
    """A validity bitmap of the rows not `null`, made once for the columns
    that share it (pa.array's mask makes one per column)."""
    nulls = int(np.count_nonzero(null))
    return (pa.py_buffer(np.packbits(~null, bitorder="little")) if nulls else None), nulls


def _masked(values: np.ndarray, typ: pa.DataType, validity: Validity) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=typ.to_pandas_dtype())
    return pa.Array.from_buffers(typ, len(values), [validity[0], pa.py_buffer(values)],
                                 null_count=validity[1])


def decode_batch(raw: np.ndarray, probe: np.ndarray, table: ProbeTable) -> pa.RecordBatch:
    """Raw kp_event records (RAW_DTYPE) as one batch in EVENT_SCHEMA; `probe`
    is each record's dictionary index (ProbeTable.lookup), all >= 0."""
    has = raw["has"]
    kind = raw["kind"]
    comm, ksoftirqd = _comm_column(raw["comm"])
    ctx = _CTX_CODE[raw["ctx"]]
    ctx = np.where((ctx == _SOFTIRQ) & ksoftirqd, _KSOFTIRQD, ctx)
    no_tuple = _validity((has & HAS_TUPLE) == 0)
    no_seq = _validity((has & HAS_SEQ) == 0)
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
        "saddr": _masked(raw["saddr"].byteswap(), pa.uint32(), no_tuple),
        "sport": _masked(raw["sport"], pa.uint16(), no_tuple),
        "daddr": _masked(raw["daddr"].byteswap(), pa.uint32(), no_tuple),
        "dport": _masked(raw["dport"], pa.uint16(), no_tuple),
        "seq": _masked(raw["seq"], pa.uint32(), no_seq),
        "end_seq": _masked(raw["end_seq"], pa.uint32(), no_seq),
        "ack": _masked(raw["ack"], pa.uint32(), _validity((has & HAS_ACK) == 0)),
        "tcp_flags": _masked(raw["tcp_flags"], pa.uint8(), _validity((has & HAS_FLAGS) == 0)),
        "length": _masked(length, pa.int64(),
                          _validity(~(arg3_len | ((has & HAS_LEN) != 0)))),
        "ret": _masked(raw["ret"], pa.int64(), _validity((has & HAS_RET) == 0)),
        "source": pa.array(np.zeros(len(raw), np.uint16), pa.uint16()),
    }
    return pa.record_batch([cols[f.name] for f in EVENT_SCHEMA], schema=EVENT_SCHEMA)


def _frame_tails(tails: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Frame records' bytes after their event as FRAME_TAIL_DTYPE rows."""
    if not isinstance(tails, np.ndarray):
        tails = np.frombuffer(b"".join(tails), np.uint8)
    return np.ascontiguousarray(tails).reshape(-1, FRAME_TAIL_DTYPE.itemsize)


def _frame_column(num_rows: int, rows: np.ndarray, tails: np.ndarray) -> pa.Array:
    """A batch's frame column (events.FRAME_TYPE, null where an event has
    none) from frame tails (_frame_tails) and their events' rows, built
    from numpy arrays: no pyarrow.compute, whose import alone takes about a
    second under TCG, in the middle of a traced workload."""
    raw = tails.view(FRAME_TAIL_DTYPE).reshape(-1)
    order = np.argsort(rows, kind="stable")  # ring order: already sorted
    rows, raw, tails = rows[order].astype(np.int64), raw[order], tails[order]
    has = np.zeros(num_rows, bool)
    has[rows] = True

    def spread(values: np.ndarray, dtype: type) -> np.ndarray:
        out: np.ndarray = np.zeros(num_rows, dtype)
        out[rows] = values
        return out

    cap = np.minimum(raw["cap"], FRAME_BYTES).astype(np.int64)
    data = np.concatenate([tails[:, _DATA_LO:_DATA_LO + FRAME_LO],
                           tails[:, _DATA_HI:_DATA_HI + FRAME_BYTES - FRAME_LO]], axis=1)
    payload = data[np.arange(FRAME_BYTES) < cap[:, None]]
    offsets = np.concatenate([[0], np.cumsum(spread(cap, np.int64))]).astype(np.int32)
    uniq, inverse = _distinct(raw["ifname"])
    names = ["", *(bytes(n).split(b"\0", 1)[0].decode("utf-8", errors="replace")
                   for n in uniq)]
    link = raw["link"]
    no_link = _validity(~spread(link != NO_LINK, bool))
    none = _validity(~has)
    children = {
        "ifindex": _masked(spread(raw["ifindex"], np.uint32), pa.uint32(), none),
        "ifname": _strings(names, spread(inverse + 1, np.int64)),
        "dev_type": _masked(spread(raw["dev_type"], np.uint16), pa.uint16(), none),
        "link": _masked(spread(link, np.uint16), pa.uint16(), no_link),
        "len": _masked(spread(raw["len"], np.uint32), pa.uint32(), none),
        "data": pa.Array.from_buffers(pa.binary(), num_rows, [
            None, pa.py_buffer(offsets), pa.py_buffer(payload.tobytes())]),
    }
    return pa.StructArray.from_buffers(FRAME_TYPE, num_rows, [none[0]],
                                       children=[children[f.name] for f in FRAME_TYPE],
                                       null_count=none[1])


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse=True) by a sort: np.unique imports
    numpy.ma (its check for a masked array), ~0.3 s under TCG."""
    ordered = np.sort(values)
    keep = np.ones(len(ordered), bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    uniq = ordered[keep]
    return uniq, np.searchsorted(uniq, values)


def _strings(values: Sequence[str], codes: np.ndarray) -> pa.Array:
    """A string column of values[code] per row, built as Arrow's buffers
    (Array.take would import pyarrow.compute: ~1 s under TCG)."""
    encoded = [v.encode() for v in values]
    width = max(map(len, encoded), default=0)
    table = np.zeros((len(encoded), max(width, 1)), np.uint8)
    for i, b in enumerate(encoded):
        table[i, :len(b)] = np.frombuffer(b, np.uint8)
    lens = np.array([len(b) for b in encoded], np.int64)[codes]
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    chars = table[codes][np.arange(table.shape[1]) < lens[:, None]]
    return pa.Array.from_buffers(pa.string(), len(codes), [
        None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())])


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


def decode_records(records: np.ndarray, table: ProbeTable,
                   frame_rows: Sequence[int] | np.ndarray = (),
                   frame_tails: Sequence[bytes] | np.ndarray = ()) -> Decoded:
    """(n, RAW_EVENT_SIZE) uint8 rows (a ring buffer span) -> one batch;
    frame_rows/frame_tails: the span's frame records (ringbuf.Span)."""
    raw = np.ascontiguousarray(records).view(RAW_DTYPE).reshape(-1)
    probe = table.lookup(raw["ip"])
    blind = blind_windows(raw)
    ok = probe >= 0
    if blind:
        ok &= raw["kind"] != KIND_BLIND
    unknown = int(len(ok) - np.count_nonzero(ok)) - len(blind)
    rows = np.asarray(frame_rows, np.int64).reshape(-1)
    tails = _frame_tails(frame_tails)
    if unknown or blind:
        raw, probe = raw[ok], probe[ok]
        # Rows move up past the records left out; a left-out frame goes too.
        kept = ok[rows]
        rows, tails = (np.cumsum(ok) - 1)[rows[kept]], tails[kept]
    events = decode_batch(raw, probe, table)
    batch = pa.record_batch([*events.columns, _frame_column(events.num_rows, rows, tails)],
                            schema=FILE_SCHEMA)
    return Decoded(batch, unknown, blind)
