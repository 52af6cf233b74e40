"""Loss records (records.Lost) as columns: a trace of a loaded host under
TCG has a blind window every few ms, a long one a million loss records. As
Lost objects they take ~130 bytes each and ~0.9 us to decode; here 40
bytes and ~0.3 us, and a part of --stats gets them as arrays (pickled as
buffers, not as a million objects)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from tracer.tracefile.records import Lost

NONE = -1  # an absent probe, cpu, since_ns or blind (the values are >= 0)

# How a reader keeps a file's loss records: as Lost records, as columns, or
# not at all (a second pass over a file whose first pass kept them).
LossMode = Literal["records", "columns", "none"]


def _row_struct() -> type:
    """Lost's fields as a msgspec struct (the same types and checks): ~5x
    faster to decode than the dataclass, and let go once its batch's
    columns are made."""
    hints = typing.get_type_hints(Lost, include_extras=True)
    fields: list[tuple[Any, ...]] = []
    for f in dataclasses.fields(Lost):
        if f.default is dataclasses.MISSING:
            fields.append((f.name, hints[f.name]))
        else:
            fields.append((f.name, hints[f.name], f.default))
    return msgspec.defstruct("LostRow", fields, gc=False)


LostRow = _row_struct()


@dataclasses.dataclass(frozen=True, slots=True)
class LossColumns:
    """Loss records in file order: per record its time, count, cpu and
    window start (NONE: absent), its probe's and its blind context's index
    into `probe_names` and `blind_names` (NONE: absent)."""

    ts_ns: np.ndarray
    count: np.ndarray
    cpu: np.ndarray
    since_ns: np.ndarray
    probe: np.ndarray
    blind: np.ndarray
    probe_names: tuple[str, ...] = ()
    blind_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ts_ns)

    @property
    def total(self) -> int:
        """Events lost in all (a blind window counts none)."""
        return int(self.count.sum())

    @classmethod
    def of_rows(cls, rows: Sequence[Any]) -> LossColumns:
        """From records with Lost's attributes (LostRow or Lost)."""
        def ints(name: str) -> np.ndarray:
            return np.fromiter((NONE if (v := getattr(r, name)) is None else v for r in rows),
                               dtype=np.int64, count=len(rows))

        probe, probe_names = _codes([r.probe for r in rows])
        blind, blind_names = _codes([r.blind for r in rows])
        return cls(ts_ns=ints("ts_ns"), count=ints("count"), cpu=ints("cpu"),
                   since_ns=ints("since_ns"), probe=probe, blind=blind,
                   probe_names=probe_names, blind_names=blind_names)

    @classmethod
    def concat(cls, parts: Iterable[LossColumns]) -> LossColumns:
        """The records of `parts`, one after another."""
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return EMPTY
        probe_names, probe = _merge_codes([(p.probe_names, p.probe) for p in parts])
        blind_names, blind = _merge_codes([(p.blind_names, p.blind) for p in parts])
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts])
                      for name in ("ts_ns", "count", "cpu", "since_ns")},
                   probe=probe, blind=blind, probe_names=probe_names, blind_names=blind_names)

    def records(self) -> list[Lost]:
        """As Lost records (for the paths that hold every record anyway)."""
        probes = (*self.probe_names, None)  # NONE indexes the None
        blinds = (*self.blind_names, None)
        return [Lost(ts_ns=ts, count=count, probe=probes[p], cpu=None if cpu == NONE else cpu,
                     since_ns=None if since == NONE else since, blind=blinds[b])
                for ts, count, p, cpu, since, b in zip(
                    self.ts_ns.tolist(), self.count.tolist(), self.probe.tolist(),
                    self.cpu.tolist(), self.since_ns.tolist(), self.blind.tolist(),
                    strict=True)]


def _codes(values: list[str | None]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each value's index into the distinct values (first seen first), NONE
    for None."""
    index: dict[str | None, int] = {None: NONE}
    codes = np.fromiter((index.setdefault(v, len(index) - 1) for v in values),
                        dtype=np.int32, count=len(values))
    return codes, tuple(k for k in index if k is not None)


def _merge_codes(parts: list[tuple[tuple[str, ...], np.ndarray]]
                 ) -> tuple[tuple[str, ...], np.ndarray]:
    """Codes of several parts recoded into one list of names."""
    names: dict[str, int] = {}
    out = []
    for part_names, codes in parts:
        remap = np.array([names.setdefault(n, len(names)) for n in part_names] + [NONE],
                         dtype=np.int32)
        out.append(remap[codes])  # NONE (-1) takes the last entry: NONE
    return tuple(names), np.concatenate(out)


EMPTY = LossColumns.of_rows([])
