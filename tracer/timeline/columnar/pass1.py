"""Pass 1 of --stats in parts (links.py) over a version 2 file, in two
halves when a worker process is there: this process links the head of the
file while the worker links its tail (tracer/tracefile/split.py: the file
without the head's batches), then the head's links take in the tail's
(Links.merge). Each half's union-find is its own; the merge joins them
where a key or a context goes on across the split, so the groups are the
ones one pass over the whole file makes.

The worker describes probes by the names and specs this process gives it
(the trace's recorded dictionary): a probe outside them ends its half
(UnknownProbe), and this process links the tail itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping

import pyarrow as pa

from probes.catalog import ProbeSpec
from tracer.timeline.columnar.columns import batch_columns, file_columns
from tracer.timeline.columnar.key_table import KeyTable
from tracer.timeline.columnar.links import LINK_COLUMNS, BatchNodes, Links, TailLinks
from tracer.tracefile import TraceScan, Trailer
from tracer.tracefile.arrow import NO_TRAILER
from tracer.tracefile.loss_columns import EMPTY, LossColumns
from tracer.tracefile.read_ahead import read_ahead
from tracer.tracefile.scan import scan_tail
from tracer.workers import PartPool, WorkerFailed

# The head's share of the file's bytes: with 0.5 this process waited for
# the worker's half (0-45 ms at 1 M events, ~160 ms at 10 M; bench/README.md).
HEAD_SHARE = 0.54
# A smaller file is linked here alone: its pass 1 is shorter than the
# worker's start-up it would wait for (1 M events: ~8 MiB, pass 1 ~0.2 s).
SPLIT_FROM_BYTES = 4 << 20


class UnknownProbe(Exception):
    """A probe the worker was not told about."""


class KnownProbes:
    """A lookup of the probes named when it was made (picklable): what a
    worker links by."""

    def __init__(self, specs: Mapping[str, ProbeSpec | None]) -> None:
        self.specs = dict(specs)

    def __call__(self, name: str) -> ProbeSpec | None:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownProbe(name) from None


TailRecords = tuple[LossColumns, Trailer | None, str | None]  # lost, trailer, cut_short


def tail_links(path: str, split_at: int, lookup: KnownProbes, spool: str
               ) -> tuple[TailLinks, TailRecords] | None:
    """In a worker: the links of the file's tail after `split_at`, and the
    tail's records; None when there is no tail. The nodes of its events
    are in a file in the directory `spool` (the caller's, who reads them
    from there: not through the pipe, ~18 MiB at 10 M events held in both
    processes at once)."""
    scan = scan_tail(path, split_at)
    if scan is None:
        return None
    links = Links(lookup)
    links.nodes = BatchNodes(os.path.join(spool, "tail-nodes"))
    links.ctx_head = KeyTable("at", "node", "chained")
    scan.select(file_columns())
    scan.select_losses("columns")
    _link(links, scan)
    out = links.tail(), (scan.loss_columns, scan.trailer, scan.cut_short)
    del links
    pa.system_memory_pool().release_unused()  # the links' tables: not kept for the parts
    return out


def link_scan(scan: TraceScan, lookup: Callable[[str], ProbeSpec | None],
              pool: PartPool | None) -> Links:
    """Pass 1 over `scan` (a version 2 file, its columns selected): the
    tail linked by `pool`'s worker when there is one (else, or when the
    worker could not, here). The scan's records are then the whole file's."""
    links = Links(lookup)
    # The worker's nodes file: opened here before the directory goes (a
    # worker still linking a tail not waited for may find it gone: its
    # call fails, which no one asks).
    with tempfile.TemporaryDirectory(prefix="kpath-pass1-", ignore_cleanup_errors=True) as spool:
        _link_split(links, scan, lookup, pool, spool)
    return links


def _link_split(links: Links, scan: TraceScan, lookup: Callable[[str], ProbeSpec | None],
                pool: PartPool | None, spool: str) -> None:
    call = None
    if pool is not None and (size := os.stat(scan.path).st_size) >= SPLIT_FROM_BYTES:
        split_at = int(size * HEAD_SHARE)
        known = KnownProbes({name: lookup(name) for name in scan.header.probe_names})
        try:
            call = pool.call(tail_links, scan.path, split_at, known, spool)
        except WorkerFailed:  # it did not start: told when the parts would use it
            call = None
        else:
            scan.stop_after(split_at)
    _link(links, scan)
    if call is None or not scan.stopped:
        return  # the head is the file, or ends it (cut short)
    try:
        tail = call.result()
    except Exception:  # noqa: BLE001 - linked here instead (an error there recurs here)
        tail = None
    del call  # it holds the result too
    records: TailRecords = (EMPTY, None, NO_TRAILER)  # the head ended the file
    if tail is None:
        rest = scan_tail(scan.path, split_at)
        if rest is not None:
            rest.select(file_columns())
            rest.select_losses("columns")
            _link(links, rest)
            records = (rest.loss_columns, rest.trailer, rest.cut_short)
    else:
        tail_of, records = tail
        links.merge(tail_of)
        del tail, tail_of
        # The tail's arrays (~9 MiB at 10 M events) came in on the worker's
        # reader thread, into its heap: handed back, or pass 2's peak keeps
        # them.
        pa.system_memory_pool().release_unused()
    lost, scan.trailer, scan.cut_short = records
    scan.add_losses(lost)


def _link(links: Links, scan: TraceScan) -> None:
    with scan:
        for batch in read_ahead(iter(scan)):
            links.add(batch_columns(batch, links.probe_code, LINK_COLUMNS))
