"""viz.perfetto.encode_json writes what json.dumps(separators=(",", ":"))
writes, whichever encoder it uses (orjson when installed): on synthetic
records with the values that tell encoders apart."""

from __future__ import annotations

import json
import random

import pytest

from viz import perfetto
from viz.perfetto import encode_json

SYNTHETIC_RECORDS = [
    {"ph": "X", "name": "tcp_sendmsg", "pid": 7, "tid": 8, "ts": 0.0, "dur": 0.001,
     "args": {"event": 0, "details": "seq 0:5 len 5", "ret": -11}},
    {"ph": "i", "s": "t", "ts": 1234567.891, "args": {"event": 1}},
    {"ph": "M", "args": {"name": "tab\there \"quoted\" back\\slash\nnew\x01ctl"}},
    {"ph": "X", "ts": 8796093022.207, "dur": 98765432.123, "args": {"ret": 2**63 - 1}},
    {"ph": "X", "args": {"ret": -(2**63), "clipped": True, "none": None}},
]


def _stdlib(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_same_text_as_json_dumps() -> None:
    assert encode_json(SYNTHETIC_RECORDS) == _stdlib(SYNTHETIC_RECORDS)
    for rec in SYNTHETIC_RECORDS:
        assert encode_json(rec) == _stdlib(rec)


@pytest.mark.parametrize("text", ["caf\u00e9[12]", "del\x7f", "\u65e5\u672c"])
def test_text_json_escapes_is_escaped_alike(text: str) -> None:
    # Non-ASCII and DEL: json escapes them (\\uXXXX), orjson would not.
    rec = [{"ph": "M", "args": {"name": text}}]
    assert encode_json(rec) == _stdlib(rec)
    assert encode_json(rec).isascii()


def test_integers_past_64_bits() -> None:
    rec = [{"args": {"ret": 2**64}}, {"args": {"ret": -(2**70)}}]
    assert encode_json(rec) == _stdlib(rec)


def test_without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perfetto, "_dumps", None)
    assert encode_json(SYNTHETIC_RECORDS) == _stdlib(SYNTHETIC_RECORDS)


def test_microseconds_are_round_to_three_decimals() -> None:
    # _us skips round() below 2**52 ns: the same floats, across magnitudes.
    rng = random.Random(8)
    values = [0, 1, 499, 500, 999, 1000, 1001, (1 << 52) - 1, 1 << 52, (1 << 60) + 7]
    values += [rng.randrange(1 << bits) for bits in range(1, 61) for _ in range(2000)]
    for ns in values:
        assert perfetto._us(ns) == round(ns / 1000.0, 3), ns
        assert perfetto._us(-ns) == round(-ns / 1000.0, 3), -ns
