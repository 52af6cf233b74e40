"""Records that wait in a temporary file until the whole trace's step ids
and flow numbers are known (a trace rebuilt in parts of groups:
tracer/timeline/groups.py; viz/jsongroups.py, viz/tables.py): each part's
records are a run, in its local order, which is the whole trace's order
among them; the runs are merged (heapq.merge) and renumbered as read."""

from __future__ import annotations

import heapq
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from tracer.timeline import Step, Timeline

_BLOCK = 256  # records pickled together in a run


class Runs:
    """Runs of records in one temporary file, each read back in order."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.runs: list[tuple[int, int]] = []  # (offset, blocks)
        self._block: list[Any] = []
        self._start = self._blocks = 0

    def put(self, record: Any) -> None:
        """A record of the run being written (end_run closes it)."""
        self._block.append(record)
        if len(self._block) == _BLOCK:
            self._flush()

    def _flush(self) -> None:
        if self._block:
            pickle.dump(self._block, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self._block = []
            self._blocks += 1

    def end_run(self) -> None:
        self._flush()
        self.runs.append((self._start, self._blocks))
        self._start, self._blocks = self.file.tell(), 0

    def add(self, records: Iterable[Any]) -> None:
        for rec in records:
            self.put(rec)
        self.end_run()

    def read(self, run: int) -> Iterator[Any]:
        offset, blocks = self.runs[run]
        for _ in range(blocks):
            self.file.seek(offset)
            block = pickle.load(self.file)
            offset = self.file.tell()
            yield from block

    def close(self) -> None:
        self.file.close()


@dataclass
class Numbers:
    """Per part, the whole-trace index of each local step's first event (by
    local id) and of each local flow's first own event (by local number)."""

    steps: list[np.ndarray] = field(default_factory=list)
    flows: list[np.ndarray] = field(default_factory=list)

    def note(self, tl: Timeline, steps: Sequence[Step], index: list[int]) -> None:
        """A part's steps (in local id order) and flows, `index` its events'
        indices in the whole trace."""
        self.steps.append(np.array([index[st.events[0].index] for st in steps],
                                   dtype=np.int64))
        self.flows.append(np.array([index[fl.first] for fl in tl.flows], dtype=np.int64))

    def ranks(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per part, local step id -> step id and local flow number - 1 ->
        flow number: ranks among all parts'."""
        return _ranks(self.steps, 0), _ranks(self.flows, 1)


def _ranks(firsts: list[np.ndarray], base: int) -> list[np.ndarray]:
    every = np.concatenate(firsts) if firsts else np.zeros(0, dtype=np.int64)
    rank = np.empty(len(every), dtype=np.int64)
    rank[np.argsort(every, kind="stable")] = np.arange(base, base + len(every))
    out, at = [], 0
    for part in firsts:
        out.append(rank[at:at + len(part)])
        at += len(part)
    return out


def merge(runs: Runs, key: Callable[[Any, int], Any],
           renumber: Callable[[Any, int], Any]) -> Iterator[Any]:
    """The records of every run in `key` order (each run is in that order;
    equal keys only within a run, kept in its order), renumbered."""
    def run(p: int) -> Iterator[tuple[Any, int, int, Any]]:
        for at, rec in enumerate(runs.read(p)):
            yield key(rec, p), p, at, rec
    for _, p, _, rec in heapq.merge(*(run(p) for p in range(len(runs.runs)))):
        yield renumber(rec, p)
