"""--stats of a large trace file in bounded memory: its events rebuilt in
parts of independent groups, with the text the whole trace gives.

Pass 1 (links.py) reads the columns that tie events together and joins
events into groups no rule of the reconstruction crosses. Pass 2 reads the
file again and holds each event until its group is complete; complete
groups are rebuilt together in parts of about PART_EVENTS events
(PreparedStats on their columns in time order, each part's steps numbered
from 0), and each flow's statistics made into a piece of text by the
caller's `render` (all but its flow and step numbers) and spooled to a
temporary file. The parts are independent: with jobs > 1 some are rebuilt,
their pieces made, by worker processes (workers.py), their results taken
back in the order the parts were read; a part's steps then get the number
of steps of the parts before it as their base. At the end flows are
numbered in order of their first event and steps by their first event's
rank among all steps' (order: time, then file position, as a stable sort).

Loss records are read in pass 1: each part marks its packets by the
trace's loss windows; the losses during a flow (up to the trace's next event
after it) need every event's time, read once more after pass 1 when the
trace has losses (loss_times.py). A trace is rebuilt whole when it has a
return of a probe not known to return, or a context whose events are out
of time order across batches (its neighbours in time are then not known
batch by batch).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np

from probes.catalog import ProbeSpec
from tracer import codecache
from tracer.timeline.columnar.columns import (
    EventColumns,
    batch_columns,
    file_columns,
    release_freed_memory,
    use_system_allocator,
)
from tracer.timeline.columnar.links import Links
from tracer.timeline.columnar.loss_times import LossTimes
from tracer.timeline.columnar.pass1 import link_scan
from tracer.timeline.columnar.probe_table import ProbeTable
from tracer.timeline.columnar.source import ScannedInput
from tracer.timeline.columnar.stats import (
    FlowStats,
    PreparedStats,
    StatsInput,
    TraceStats,
)
from tracer.tracefile import TraceScan, scan_trace
from tracer.tracefile.loss_columns import EMPTY
from tracer.tracefile.read_ahead import read_ahead
from tracer.tracefile.scan import V1_WHOLE_BYTES
from tracer.workers import PartPool, WorkerFailed, stats_pool

PART_EVENTS = 1 << 16  # events rebuilt at once: ~300 bytes each at the peak
LAST_PARTS = 4  # with workers, the last 4 parts' events in parts 4 times smaller


class PartedStats:
    """A trace rebuilt part by part (flow_count, inp as PreparedStats'):
    its flows made into pieces of text in their parts (`render`, the viz
    stage's), which wait in a temporary file until every part is done
    (pieces())."""

    def __init__(self, links: Links, scan: TraceScan, records: StatsInput, losses: LossTimes,
                 render: Render, pool: PartPool | None = None) -> None:
        """Pass 2 over `scan`; parts rebuilt in `pool`'s workers when given
        (closed here, before the pieces are read back); each part's flows
        made into pieces by `render` (pickled for the workers: a function
        of a module)."""
        self.inp = records
        self.events = links.events
        root, last = links.groups()
        # positions (and each group's last) as int32 when they fit, with
        # the end of the file (`read` below) one past the last
        self._pos_type = np.int32 if links.events < (1 << 31) - 1 else np.int64
        last = last.astype(self._pos_type)
        names = tuple(links.probe_code)
        pt = ProbeTable.build(names, links.flags.lookup)
        # Lives as long as the pieces (deleted on close, by the system).
        self._spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        # Per part, in arrays (a 10 M-event trace has ~2 M steps and ~40 k
        # flows: as tuples of ints they took ~40 MiB): per flow its first
        # event's time and file position, its piece's offset and size in
        # the spool, and the number of steps of the parts before its own.
        self._flows: collections.deque[tuple[np.ndarray, ...]] = collections.deque()
        # Per step (each part's in id order) its first event's time and
        # file position: ~12 bytes a step, ~24 MiB at 10 M events, written
        # out as the parts come (read back for the numbering, once the
        # workers are gone).
        self._key_ts: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._key_pos: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._flow_count = 0
        self._steps = 0
        self._numbers: tuple[np.ndarray, np.ndarray] | None = None
        self._losses = losses.summary
        self._pool = pool
        # What every part's rebuild reads besides its columns: sent to each
        # worker once, before its parts (a million loss records noticed at
        # as many times: ~50 MB of arrays, written to the pipe from where
        # they are), and found here by the same token when this process
        # rebuilds a part handed back (PartPool.drain).
        self._context = (names, pt, records, losses, render)
        self._token = f"{os.getpid()}-{id(self)}"
        if pool is not None:
            _contexts[self._token] = self._context
            pool.call_each(load_context, self._token, self._context)
        # Events read but not rebuilt, in file order: pieces of batches,
        # each with the last position its groups end at.
        held: list[tuple[int, dict[str, np.ndarray]]] = []
        count = at = 0
        try:
            with scan:
                # one batch ahead (~5 MiB): the reading keeps up with the parts
                for batch in read_ahead(iter(scan), depth=1):
                    cols = batch_columns(batch, links.probe_code)
                    n = len(cols["ts"])
                    if not n:
                        continue
                    cols["pos"] = np.arange(at, at + n, dtype=self._pos_type)
                    cols["last"] = last[root[links.nodes.popleft()]]
                    held.append((int(cols["last"].min()), cols))
                    at += n
                    count += n
                    if count >= PART_EVENTS:
                        # The last parts smaller (cut inside the batch: a
                        # group ending before the cut is complete), so that
                        # neither process waits long for the other's last.
                        if pool is not None and self.events - at < LAST_PARTS * PART_EVENTS:
                            pool.near_end()
                            step = max(PART_EVENTS // LAST_PARTS, 1)
                            for cut in range(at - count + step, at - step // 2, step):
                                held = self._part(held, cut)
                        held = self._part(held, at)
                        count = 0
            self._part(held, at + 1)
            if pool is not None:
                pool.drain()
        finally:
            if pool is not None:
                pool.close()
            _contexts.pop(self._token, None)
        if at != self.events:
            raise RuntimeError(f"{scan.path}: read {at} events, then {self.events}")

    @property
    def flow_count(self) -> int:
        return self._flow_count

    def _part(self, held: list[tuple[int, dict[str, np.ndarray]]], read: int
              ) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Rebuilds the held events whose groups end before `read`; returns
        the rest. A piece none of whose groups is complete is not copied:
        a group spanning the trace costs no copy per part."""
        # Each piece's rows in the part (None: all), gathered into the
        # part's columns at once: by row numbers, not masks (numpy's boolean
        # indexing of ~20 columns took 2-5x as long), one copy.
        ready: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = []
        rest: list[tuple[int, dict[str, np.ndarray]]] = []
        for first_end, cols in held:
            if first_end >= read:
                rest.append((first_end, cols))
                continue
            done = cols["last"] < read
            if done.all():
                ready.append((cols, None))
                continue
            ready.append((cols, np.flatnonzero(done)))
            kept = np.flatnonzero(~done)
            left = {name: col[kept] for name, col in cols.items()}
            rest.append((int(left["last"].min()), left))
        held.clear()
        if not ready:
            return rest
        cols = _gathered(ready, skip="last")
        del ready
        ts = cols["ts"]
        if len(ts) > 1 and (ts[1:] < ts[:-1]).any():
            order = np.argsort(ts, kind="stable")  # file order breaks ties
            cols = {name: col[order] for name, col in cols.items()}
        pos = cols.pop("pos")
        pool = self._pool
        if pool is not None and pool.has_room():
            pool.submit(self._take, rebuild_in_worker, self._token, cols, pos)
        elif pool is not None:
            pool.put(self._take, rebuild_part(self._context, cols, pos))
        else:
            self._take(rebuild_part(self._context, cols, pos))
        del cols, pos
        release_freed_memory()
        return rest

    def _take(self, part: PartResult) -> None:
        """A rebuilt part's results, in the order the parts were read: its
        steps numbered after the steps of the parts before it."""
        base = self._steps
        self._steps += len(part.key_ts)
        self._key_ts.write(np.ascontiguousarray(part.key_ts, dtype=np.int64).data)
        self._key_pos.write(np.ascontiguousarray(part.key_pos, dtype=self._pos_type).data)
        offset = self._spool.tell()
        self._spool.write(part.rows)
        n = len(part.sizes)
        self._flow_count += n
        self._flows.append((part.first_ts, part.first_pos.astype(self._pos_type),
                            offset + np.cumsum(part.sizes) - part.sizes, part.sizes,
                            np.full(n, base, dtype=np.int64)))

    def _number(self) -> tuple[np.ndarray, np.ndarray]:
        """Each flow's (offset, size, step base) rows in order of their first
        events, and each step's number: its first event's rank by (time,
        file position). The parts' arrays are let go as they are joined."""
        if self._numbers is None:
            ts = _read_back(self._key_ts, np.dtype(np.int64), self._steps)
            pos = _read_back(self._key_pos, np.dtype(self._pos_type), self._steps)
            order = np.lexsort((pos, ts))
            del ts, pos
            rank = np.empty(self._steps, dtype=np.int32 if self._steps < 1 << 31 else np.int64)
            rank[order] = np.arange(self._steps, dtype=rank.dtype)
            del order
            first_ts, first_pos, offset, size, base = _drain_join(self._flows, self._flow_count, 5)
            flows = np.stack((offset, size, base), axis=1)[np.lexsort((first_pos, first_ts))]
            self._numbers = flows, rank
        return self._numbers

    def pieces(self, flow: int | None = None
               ) -> tuple[TraceStats, Iterator[tuple[int, Any, np.ndarray]]]:
        """The trace's head and each flow's (number, piece as `render`
        made it, the trace's step numbers by the piece's steps), all flows
        or flow `flow` (KeyError if there is none), in order of their
        first events."""
        if flow is not None and not 1 <= flow <= self.flow_count:
            raise KeyError(flow)
        inp = self.inp
        head = TraceStats(path=inp.path, events=self.events, flow_count=self.flow_count,
                          lost_total=inp.lost_total, cut_short=inp.cut_short,
                          losses=self._losses, flows=[], sources=tuple(inp.sources))
        flows, rank = self._number()

        def pieces() -> Iterator[tuple[int, Any, np.ndarray]]:
            self._spool.flush()
            fd = self._spool.fileno()
            for number, (offset, size, base) in enumerate(flows.tolist(), 1):
                if flow is not None and number != flow:
                    continue
                # a pread, not a seek and a read: ~5 ms at 3,691 flows
                yield number, pickle.loads(_read_at(fd, size, offset)), rank[base:]

        return head, pieces()


def _gathered(pieces: list[tuple[dict[str, np.ndarray], np.ndarray | None]], skip: str
              ) -> dict[str, np.ndarray]:
    """The pieces' columns (but `skip`), each piece's rows at its row
    numbers (None: all of them), one after another."""
    if len(pieces) == 1 and pieces[0][1] is None:
        return {name: col for name, col in pieces[0][0].items() if name != skip}
    sizes = [len(cols["ts"]) if rows is None else len(rows) for cols, rows in pieces]
    total = sum(sizes)
    out: dict[str, np.ndarray] = {}
    for name, first in pieces[0][0].items():
        if name == skip:
            continue
        whole = out[name] = np.empty((total, *first.shape[1:]), dtype=first.dtype)
        at = 0
        for (cols, rows), size in zip(pieces, sizes, strict=True):
            if rows is None:
                whole[at:at + size] = cols[name]
            else:
                # mode "clip": no bounds check, so no buffer (the rows are in range)
                np.take(cols[name], rows, axis=0, out=whole[at:at + size], mode="clip")
            at += size
    return out


def _read_at(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes of the file at `offset` (a pread may return fewer)."""
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise RuntimeError(f"pieces' spool: {len(data)} of {size} bytes at {offset}")
        data += more
    return data


def _read_back(spool: IO[bytes], dtype: np.dtype[Any], n: int) -> np.ndarray:
    """The `n` values written to `spool`, which is closed."""
    with spool:
        spool.flush()
        spool.seek(0)
        out = np.fromfile(spool, dtype=dtype, count=n)
    if len(out) != n:
        raise RuntimeError(f"step keys: read back {len(out)} of {n}")
    return out


def _drain_join(parts: collections.deque[tuple[np.ndarray, ...]], n: int, width: int
                ) -> tuple[np.ndarray, ...]:
    """The parts' `width` columns joined, each part let go once copied (no
    moment with both the parts and the whole)."""
    if not parts:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(width))
    out = tuple(np.empty(n, dtype=col.dtype) for col in parts[0])
    at = 0
    while parts:
        cols = parts.popleft()
        for whole, col in zip(out, cols, strict=True):
            whole[at:at + len(col)] = col
        at += len(cols[0])
    return out


# What a part's flows are printed as (the viz stage's): a piece each.
Render = Callable[[Iterable[FlowStats]], Iterator[Any]]


@dataclasses.dataclass(frozen=True, slots=True)
class PartResult:
    """What a part's rebuild leaves for the whole trace's numbering: per
    step (numbered from 0 in the part) its first event's time and file
    position; per flow its first event's, and its pickled piece (one
    after another, sizes)."""

    key_ts: np.ndarray
    key_pos: np.ndarray
    first_ts: np.ndarray
    first_pos: np.ndarray
    sizes: np.ndarray
    rows: bytes


def rebuild_part(context: tuple[Any, ...], cols: dict[str, np.ndarray], pos: np.ndarray
                 ) -> PartResult:
    """The tables of a part (columns in time order, each event's file
    position) and its flows' pieces, pickled. context: (probe names,
    ProbeTable, StatsInput, LossTimes, Render)."""
    names, pt, inp, losses, render = context
    c = EventColumns(probe_names=names, **cols)
    del cols
    ts = c.ts
    prepared = PreparedStats.of_part(c, pt, inp, losses)
    del c
    firsts = prepared.flow_firsts
    keys = prepared.step_keys
    _, flows = prepared.stats_by_flow()
    rows = [pickle.dumps(piece, protocol=pickle.HIGHEST_PROTOCOL) for piece in render(flows)]
    return PartResult(key_ts=ts[keys], key_pos=pos[keys], first_ts=ts[firsts],
                      first_pos=pos[firsts], sizes=np.array([len(r) for r in rows], np.int64),
                      rows=b"".join(rows))


# The parts' contexts by token: in the parent its own, in a worker the one
# sent last (load_context).
_contexts: dict[str, tuple[Any, ...]] = {}


def load_context(token: str, context: tuple[Any, ...]) -> None:
    """In a worker, before its parts: the context they share (a no-op
    where it is already known: the parent)."""
    if token not in _contexts:
        _contexts.clear()
        _contexts[token] = context


def rebuild_in_worker(token: str, cols: dict[str, np.ndarray], pos: np.ndarray
                      ) -> PartResult:
    """rebuild_part in a worker process, with the context load_context
    gave it under `token` (or in the parent, a part it took back)."""
    context = _contexts.get(token)
    if context is None:  # its message could not be read (out of memory)
        raise WorkerFailed("a --stats worker process could not load what its parts share "
                           "(out of memory?): --jobs 1 rebuilds the parts in this process")
    result = rebuild_part(context, cols, pos)
    del cols, pos
    release_freed_memory()
    return result


def start_worker() -> None:
    """A worker as the parent runs: no cyclic collection (the parts make no
    cycles worth the walks), the C heap kept between parts; its imports
    done, the dataclasses' code cache let go."""
    gc.disable()
    use_system_allocator()
    codecache.release()


def stats_of_scan(scan: TraceScan, reopen: Callable[[], TraceScan],
                  lookup: Callable[[str], ProbeSpec | None], jobs: int,
                  note: Callable[[str], None], render: Render,
                  pool: PartPool | None = None) -> PreparedStats | PartedStats:
    """--stats tables of a scanned trace: a version 2 file in parts when it
    can be (pass 1 on `scan`, pass 2 on `reopen()`; the passes shared with
    jobs - 1 worker processes: `pool`, started by the caller before it
    loaded this module (workers.stats_pool), else started here; closed
    here), else whole (v1: a second parse would cost more than it saves).
    Irregular as PreparedStats; `note` tells why the workers did not start
    (the parts are then rebuilt in this process); `render` makes the
    parts' flows into pieces (PartedStats). A version 1 file bigger
    than V1_WHOLE_BYTES is converted to a scratch version 2 copy first,
    and rebuilt in parts from it (named and cut short as the original)."""
    try:
        if scan.version == 1 and os.stat(scan.path).st_size > V1_WHOLE_BYTES:
            from tracer.tracefile.convert import scratch_copy  # pyarrow.compute: ~0.4 s

            scan.close()
            copy = scratch_copy(scan.path)
            try:
                copied = str(copy.path)
                prepared = stats_of_scan(scan_trace(copied), lambda: scan_trace(copied),
                                         lookup, jobs, note, render, pool)
                pool = None  # closed there
            finally:
                copy.close()  # both passes are done
            prepared.inp = dataclasses.replace(prepared.inp, path=scan.path,
                                               cut_short=copy.converted.cut_short)
            return prepared
        scan.select_losses("columns")
        if scan.version != 2:
            return PreparedStats(ScannedInput(scan), lookup)
        if pool is None:
            # Started before pass 1: the workers' start-up (imports) runs on
            # another core meanwhile.
            pool = stats_pool(scan.path, jobs)
        # Both passes read (and check) the same columns, the ones pass 2 needs:
        # a batch one of them finds corrupt must end both at the same event.
        scan.select(file_columns())
        links = link_scan(scan, lookup, pool)
        records = ScannedInput(scan)
        unflagged = any(not links.flags.pairs[p] for p in links.return_probes)
        if unflagged or links.ctx_disorder:
            del links
            whole = reopen()
            whole.select_losses("columns")
            return PreparedStats(ScannedInput(whole), lookup)
        if links.events <= PART_EVENTS:  # one part: not worth the workers
            if pool is not None:
                pool.close()
            pool = None
        elif pool is None:
            pool = stats_pool(scan.path, jobs, big=True)
        if pool is not None and (why := pool.ready()) is not None:
            note(f"--stats in one process: its worker processes did not start ({why})")
            pool = None
        # The parts need the records only as LossTimes (the head's summary too).
        inp = StatsInput(path=records.path, events=(), lost=EMPTY,
                         lost_total=records.lost_total, cut_short=records.cut_short,
                         sources=records.sources)
        losses = LossTimes.of(scan.take_losses(), _times(reopen, links.events), links.first_ts)
        again = reopen()
        again.select(file_columns())
        again.select_losses("none")  # pass 1 kept them
        parted, pool = PartedStats(links, again, inp, losses, render, pool), None  # closed there
        return parted
    finally:
        if pool is not None:
            pool.close()


def _times(reopen: Callable[[], TraceScan], events: int) -> Iterator[np.ndarray]:
    """The times of the first `events` events (the ones pass 1 read), from
    the file read again: their time column only."""
    scan = reopen()
    scan.select(file_columns(["ts"]))
    scan.select_losses("none")
    with scan:
        for batch in scan:
            if events <= 0:
                break
            ts = batch_columns(batch, {}, ["ts"])["ts"][:events]
            events -= len(ts)
            yield ts
