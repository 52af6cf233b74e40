"""Seeded mutations of the recorded traces in tests/data, for the fuzz test
(tests/replay/test_fuzz_traces.py): each mutation makes one broken file out
of a real recording, the way a file gets broken (cut, edited, corrupted) or
crafted (wrong types, hostile strings, deep nesting).

Every mutator takes the file's bytes and a seeded random.Random and returns
the new bytes; sizes stay bounded (a giant line is at most GIANT_BYTES)."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

# The largest string a mutation writes: big enough to show that column
# widths do not follow it, small enough to keep the test fast.
GIANT_BYTES = 256 << 10
# Deeper than Python's recursion limit (1000): json.loads meets it.
DEEP_NESTING = 3000

Mutator = Callable[[bytes, random.Random], bytes]

_HOSTILE_STRINGS = (
    "\x1b[31mred\x1b[0m\x1b]0;title\x07",  # terminal escapes
    "\ud800lone\udfffsurrogates",
    "nul\x00byte\r\nnewline\ttab\x7fdel\x85nel\u2028ls",
    '<script>alert("x")</script>&amp;',
    '"};]\\n digraph { x -> y }; #; ',
    "%% mermaid\n```\n@enduml\nskinparam",
    "\u202eright-to-left\ufeffbom\U0001f600",
    "",
)
_WRONG_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1 << 64, -(1 << 63) - 1, 1.5, float("nan"), float("inf"),
    float("-inf"), -0.0, "", "12", "x", [], [1, "a"], {}, {"a": 1}, [[[]]],
)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines)


def _json_lines(lines: list[bytes]) -> list[int]:
    out = []
    for i, line in enumerate(lines):
        try:
            if isinstance(json.loads(line), dict):
                out.append(i)
        except ValueError:
            pass
    return out


def _dump(rec: Any) -> bytes:
    # allow_nan: Python's json reads NaN/Infinity back, so a file may hold them.
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a decoded record (dict keys and list indices)."""
    found: list[tuple[Any, ...]] = []
    items: Any = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


def _set(rec: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        rec = rec[key]
    rec[path[-1]] = value


def _edit_record(data: bytes, rng: random.Random, make: Callable[[Any, random.Random], Any],
                 strings_only: bool = False) -> bytes:
    """One value somewhere in one JSON line replaced by make(old, rng)."""
    lines = _lines(data)
    candidates = _json_lines(lines)
    if not candidates:
        return data
    for _ in range(8):
        i = rng.choice(candidates)
        rec = json.loads(lines[i])
        paths = _paths(rec)
        if strings_only:
            paths = [p for p in paths if isinstance(_get(rec, p), str)]
        if paths:
            path = rng.choice(paths)
            _set(rec, path, make(_get(rec, path), rng))
            lines[i] = _dump(rec)
            return _join(lines)
    return data


def _get(rec: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        rec = rec[key]
    return rec


def wrong_type(data: bytes, rng: random.Random) -> bytes:
    def make(old: Any, r: random.Random) -> Any:
        value = r.choice(_WRONG_VALUES)
        return value if type(value) is not type(old) else [old]
    return _edit_record(data, rng, make)


def hostile_string(data: bytes, rng: random.Random) -> bytes:
    def make(old: Any, r: random.Random) -> Any:
        return r.choice(_HOSTILE_STRINGS) + (old if r.random() < 0.5 else "")
    return _edit_record(data, rng, make, strings_only=True)


def giant_string(data: bytes, rng: random.Random) -> bytes:
    def make(old: Any, r: random.Random) -> Any:
        return r.choice("xW\u00e9\x1b") * r.randint(GIANT_BYTES // 4, GIANT_BYTES // 2)
    return _edit_record(data, rng, make, strings_only=True)


def giant_line(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    junk = rng.choice([b" ", b"x", b"[", b'{"event":{"comm":"', b"\xff"]) * GIANT_BYTES
    lines.insert(rng.randrange(1, len(lines) + 1), junk[:GIANT_BYTES])
    return _join(lines)


def deep_nesting(data: bytes, rng: random.Random) -> bytes:
    depth = rng.choice([50, 999, DEEP_NESTING])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nested = opener * depth + b"1" + closer * depth
    lines = _lines(data)
    candidates = _json_lines(lines)
    i = rng.choice(candidates)
    rec = json.loads(lines[i])
    path = rng.choice(_paths(rec))
    marker = "@@nest@@"
    _set(rec, path, marker)
    lines[i] = _dump(rec).replace(json.dumps(marker).encode(), nested)
    return _join(lines)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(0, len(data) + 1)]


def drop_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    for _ in range(rng.randint(1, 5)):
        if len(lines) > 1:
            del lines[rng.randrange(len(lines))]
    return _join(lines)


def reorder_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    if rng.random() < 0.3:
        body = lines[1:]
        rng.shuffle(body)
        return _join([lines[0], *body])
    for _ in range(rng.randint(1, 6)):
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    return _join(lines)


def duplicate_lines(data: bytes, rng: random.Random) -> bytes:
    lines = _lines(data)
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(lines))
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return _join(lines)


def bad_encoding(data: bytes, rng: random.Random) -> bytes:
    junk = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf",
                       b"\r", b"\\ud800", b"\\udfff\\ud800", b"\\u0000", b"\\u001b[2J"])
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        # Inside a string when possible: after an opening quote.
        quotes = [i for i in range(len(out)) if out[i] == 0x22][:20000]
        pos = rng.choice(quotes) + 1 if quotes and rng.random() < 0.8 else rng.randrange(
            len(out) + 1)
        out[pos:pos] = junk
    return bytes(out)


def odd_lost(data: bytes, rng: random.Random) -> bytes:
    """Lost records in odd places and with odd values."""
    lines = _lines(data)
    rec: dict[str, Any] = {"ts_ns": rng.choice([0, -1, 1 << 62, 403359259378]),
                           "count": rng.choice([0, -5, 1, 1 << 62, 10 ** 30])}
    if rng.random() < 0.7:
        rec["probe"] = rng.choice(["__tcp_transmit_skb", "nonexistent", "", "\x1b[2J",
                                   "a" * 1000])
    if rng.random() < 0.4:
        rec["cpu"] = rng.choice([0, -1, 1 << 40])
    for _ in range(rng.randint(1, 4)):
        lines.insert(rng.randrange(1, len(lines) + 1), _dump({"lost": rec}))
    return _join(lines)


def odd_trailer(data: bytes, rng: random.Random) -> bytes:
    """Trailers missing, doubled, early, or with counts that disagree."""
    lines = _lines(data)
    at = [i for i, line in enumerate(lines) if line.startswith(b'{"trailer"')]
    choice = rng.randrange(5)
    if choice == 0 and at:
        del lines[at[0]]
    elif choice == 1 and at:
        lines.insert(rng.randrange(1, len(lines)), lines[at[0]])
    elif choice == 2 and at:
        lines.insert(1, lines.pop(at[0]))
    else:
        body = {"reason": rng.choice(["signal", "", "\x1b[31m", "x" * 500]),
                "events": rng.choice([0, -1, 1 << 62]), "lost": rng.choice([0, -3, 1 << 62]),
                "lost_by_probe": rng.choice([{}, {"": 1}, {"x": -1}, {"y": 1 << 62}]),
                "duration_ns": rng.choice([0, -1, 1 << 62]),
                "command_exit": rng.choice([None, 0, 300, -9])}
        if at:
            lines[at[0]] = _dump({"trailer": body})
        else:
            lines.append(_dump({"trailer": body}))
    return _join(lines)


def odd_events(data: bytes, rng: random.Random) -> bytes:
    """Well-typed events with values a recording never has: time going
    backwards, a zero-length or inverted sequence range, huge lengths."""
    edits = {"ts_ns": [0, 1, (1 << 63) - 1], "seq": [0, (1 << 32) - 1],
             "end_seq": [0, (1 << 32) - 1], "length": [0, (1 << 32) - 1],
             "tcp_flags": [0, 255], "cpu": [0, 65535], "sport": [0, 65535],
             "dport": [0, 65535], "sk": [0, (1 << 64) - 1], "tid": [0, 1],
             "probe": ["__tcp_transmit_skb", "tcp_v4_send_synack", "x"],
             "kind": ["entry", "return"], "ret": [-(1 << 63), (1 << 63) - 1]}
    lines = _lines(data)
    events = [i for i, line in enumerate(lines) if line.startswith(b'{"event"')]
    for _ in range(rng.randint(1, 8)):
        if not events:
            break
        i = rng.choice(events)
        rec = json.loads(lines[i])
        key = rng.choice(sorted(edits))
        rec["event"][key] = rng.choice(edits[key])
        lines[i] = _dump(rec)
    return _join(lines)


JSONL_MUTATORS: dict[str, Mutator] = {
    "wrong_type": wrong_type, "hostile_string": hostile_string, "giant_string": giant_string,
    "giant_line": giant_line, "deep_nesting": deep_nesting, "truncate": truncate,
    "drop_lines": drop_lines, "reorder_lines": reorder_lines,
    "duplicate_lines": duplicate_lines, "bad_encoding": bad_encoding, "odd_lost": odd_lost,
    "odd_trailer": odd_trailer, "odd_events": odd_events,
}


# Version 2 (Arrow stream): bytes flipped, the stream cut, or its header /
# lost / trailer metadata rewritten with the JSON mutators above.

def byte_flips(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _read_stream(data: bytes) -> tuple[pa.Schema, list[tuple[pa.RecordBatch, Any]]]:
    reader = ipc.open_stream(pa.BufferReader(data))
    batches = []
    while True:
        try:
            batches.append(reader.read_next_batch_with_custom_metadata())
        except StopIteration:
            break
    return reader.schema, batches


def _write_stream(schema: pa.Schema, batches: list[tuple[pa.RecordBatch, Any]]) -> bytes:
    sink = io.BytesIO()
    with ipc.new_stream(sink, schema) as writer:
        for batch, meta in batches:
            writer.write_batch(batch, custom_metadata=meta)
    return sink.getvalue()


def _mutate_json_bytes(raw: bytes, rng: random.Random, label: bytes) -> bytes:
    """A metadata JSON value, mutated as if it were one line of a v1 file."""
    line = b'{"' + label + b'":' + raw + b"}"
    name = rng.choice(["wrong_type", "hostile_string", "giant_string", "deep_nesting"])
    out = JSONL_MUTATORS[name](line, rng)
    try:
        rec = json.loads(out)
        return _dump(rec[label.decode()]) if isinstance(rec, dict) and label.decode() in rec \
            else out
    except (ValueError, RecursionError):
        return out[len(label) + 4:-1]


def v2_metadata(data: bytes, rng: random.Random) -> bytes:
    schema, batches = _read_stream(data)
    which = rng.randrange(3)
    if which == 0:
        meta = dict(schema.metadata or {})
        meta[b"kpath"] = _mutate_json_bytes(meta[b"kpath"], rng, b"header")
        schema = schema.with_metadata(meta)
    else:
        key = b"kpath.lost" if which == 1 else b"kpath.trailer"
        carrying = [i for i, (_, m) in enumerate(batches) if m and key in m]
        if carrying:
            i = rng.choice(carrying)
            batch, meta = batches[i]
            new = dict(meta)
            new[key] = _mutate_json_bytes(meta[key], rng, key)
            batches[i] = (batch, new)
    return _write_stream(schema, batches)


def v2_strings(data: bytes, rng: random.Random) -> bytes:
    """Hostile or giant strings in the comm column (UTF-8 only: Arrow
    strings cannot hold surrogates)."""
    schema, batches = _read_stream(data)
    full = [i for i, (b, _) in enumerate(batches) if b.num_rows]
    if not full:
        return data
    i = rng.choice(full)
    batch, meta = batches[i]
    col = batch.schema.get_field_index("comm")
    comm = batch.column(col).dictionary_decode().to_pylist()
    value = rng.choice([s.encode("utf-8", "replace").decode("utf-8", "replace")
                        for s in _HOSTILE_STRINGS] + ["W" * GIANT_BYTES])
    comm[rng.randrange(len(comm))] = value
    arr = pa.array(comm, pa.string()).dictionary_encode()
    arr = arr.cast(batch.schema.field(col).type)
    batches[i] = (batch.set_column(col, batch.schema.field(col), arr), meta)
    return _write_stream(schema, batches)


def v2_reorder(data: bytes, rng: random.Random) -> bytes:
    schema, batches = _read_stream(data)
    if rng.random() < 0.5:
        rng.shuffle(batches)
    else:
        batches.insert(rng.randrange(len(batches) + 1), rng.choice(batches))
    return _write_stream(schema, batches)


V2_MUTATORS: dict[str, Mutator] = {
    "byte_flips": byte_flips, "truncate": truncate, "v2_metadata": v2_metadata,
    "v2_strings": v2_strings, "v2_reorder": v2_reorder,
}


def is_v2(data: bytes) -> bool:
    return data[:4] == b"\xff\xff\xff\xff"
