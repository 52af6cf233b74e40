"""Pass 1 of --stats in parts (parts.py): events joined into groups that
no rule of the reconstruction crosses, batch by batch, with a union-find
over the keys they share. The links are a superset of the reconstruction's
(as tracer/timeline/windows.py takes them, but a group need not be a run of
consecutive events, so overlapping connections still fall apart):
- a 4-tuple (flows, sequence bases, packets, netns checks);
- a socket pointer (the sk map lends flows to events without addresses);
- a thread's task context (syscalls and the events nested in them);
- a context's events of probes that can return (entry/return pairing);
- a lead-in or trailer capture and the events before and after it in time
  in its context (what it waits for or joins, across other lead-ins);
- with `nesting` (the timeline's call depths, viz/spans.py), an event of a
  context other than a task's while a call of a probe that may return is
  open there (its entry seen, not its return): with that call (a task's
  events are with their thread's already).
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from probes.catalog import ProbeSpec
from tracer.timeline.columnar.columns import NO_EP, TASK
from tracer.timeline.columnar.event_table import PORT_MASK
from tracer.timeline.columnar.grouping import distinct, factorize_firsts, sort_order
from tracer.timeline.columnar.key_table import KeyTable, row_keys
from tracer.timeline.columnar.probe_table import ProbeTable

LINK_COLUMNS = ("ts", "probe", "is_return", "ctx", "softirq", "tid", "sk", "src", "dst",
                "source")


class ProbeFlags:
    """Per probe code: may return (pairing), and a lead-in or trailer capture."""

    def __init__(self, lookup: Callable[[str], ProbeSpec | None]) -> None:
        self.lookup = lookup
        self.names: tuple[str, ...] = ()
        self.pairs = np.zeros(0, dtype=bool)
        self.chained = np.zeros(0, dtype=bool)

    def update(self, names: tuple[str, ...]) -> None:
        if names == self.names:
            return
        self.names = names
        specs = [self.lookup(name) for name in names]
        self.pairs = np.array([s is None or s.has_return for s in specs], dtype=bool)
        pt = ProbeTable.build(names, self.lookup)
        # step_table's lead-ins and trailers, by capture alone (a superset).
        self.chained = pt.softirq | pt.noack | pt.sock_or_socket


@dataclass
class _Run:
    """Batches of nodes in one file: their sizes not popped yet, the bytes
    popped, and what is added to each node read (a tail's nodes are
    numbered after the head's)."""

    file: IO[bytes]
    sizes: deque[int]
    at: int = 0
    add: int = 0


class BatchNodes:
    """Each batch's event nodes, as pass 1 made them, for pass 2 to read back
    in order (popleft) or all again (iteration): in a temporary file, not in
    memory (4 bytes an event: 38 MiB of a 10 M-event trace). `path`: a named
    file (a worker's tail, which the parent's nodes take over: adopt), else
    an anonymous one."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._runs: list[_Run] = []
        self._own: _Run | None = None  # the run append() writes
        self._end = 0  # bytes written
        self._sealed = False  # a run adopted: the batches end with it

    def append(self, nodes: np.ndarray) -> None:
        if self._sealed:
            raise RuntimeError("nodes appended after an adopted run")
        if self._own is None:
            f = tempfile.TemporaryFile() if self.path is None \
                else open(self.path, "w+b")  # noqa: SIM115 - closed by the system
            self._own = _Run(f, deque())
            self._runs.append(self._own)
        data = np.ascontiguousarray(nodes, dtype=np.int32)
        self._end += os.pwrite(self._own.file.fileno(), data.tobytes(), self._end)
        self._own.sizes.append(len(data))

    def adopt(self, path: str, sizes: list[int], add: int) -> None:
        """Goes on with the batches another process wrote to `path` (of
        `sizes` events; their nodes plus `add`), read from a handle opened
        here (the path may go then)."""
        self._sealed = True
        if sizes:
            self._runs.append(_Run(open(path, "rb"), deque(sizes), add=add))  # noqa: SIM115

    @staticmethod
    def _read(run: _Run, at: int, n: int) -> np.ndarray:
        data = os.pread(run.file.fileno(), 4 * n, at)
        if len(data) != 4 * n:
            raise OSError(f"read {len(data)} of {4 * n} bytes of spooled nodes")
        out = np.frombuffer(data, dtype=np.int32)
        return out + np.int32(run.add) if run.add else out

    def popleft(self) -> np.ndarray:
        run = next((r for r in self._runs if r.sizes), None)
        if run is None:
            raise IndexError("no batch of nodes left")
        n = run.sizes.popleft()
        out = self._read(run, run.at, n)
        run.at += 4 * n
        return out

    def sizes(self) -> Iterator[int]:
        """Events per batch not popped yet."""
        return (n for run in self._runs for n in run.sizes)

    def __iter__(self) -> Iterator[np.ndarray]:
        for run in self._runs:
            at = run.at
            for n in run.sizes:
                yield self._read(run, at, n)
                at += 4 * n


@dataclass(frozen=True, slots=True)
class TailLinks:
    """The links of a file's tail (Links.tail): per node its root and last
    event (counted from the tail's first), per key tag its keys and nodes,
    per context its first event, per batch its events' nodes."""

    roots: np.ndarray
    last: np.ndarray
    keys: dict[int, tuple[np.ndarray, np.ndarray]]
    ctx_keys: np.ndarray | None
    ctx_at: np.ndarray
    ctx_node: np.ndarray
    ctx_chained: np.ndarray
    ctx_disorder: bool
    returns: list[str]  # names of the probes that returned
    first_ts: int | None
    events: int
    nodes_path: str  # per batch its events' nodes (BatchNodes' file)
    batch_sizes: list[int]


class Links:
    """Pass 1: union-find over the keys events share, batch by batch."""

    def __init__(self, lookup: Callable[[str], ProbeSpec | None], nesting: bool = False) -> None:
        self.probe_code: dict[str, int] = {}
        self.nesting = nesting
        # (host, context) -> (a node of its open calls, open entries per probe)
        self.open_calls: dict[int, tuple[int, dict[int, int]]] = {}
        self.flags = ProbeFlags(lookup)
        self.parent = np.zeros(1 << 12, dtype=np.int64)
        self.last = np.zeros(1 << 12, dtype=np.int64)  # per node, its last event
        self.size = 0
        # per key tag, each key's node
        self.ids: dict[int, KeyTable] = {}
        # per context, its latest event: time, node, chained
        self.ctx_tail = KeyTable("at", "node", "chained")
        self.ctx_disorder = False  # a context's events out of time order across batches
        self.nodes = BatchNodes()  # per batch, each event's node
        self.events = 0
        self.first_ts: int | None = None
        self.return_probes: set[int] = set()
        # per context, its first event (at, node, chained): kept by the
        # links of a file's tail, which the head's links take in (merge)
        self.ctx_head: KeyTable | None = None

    def _new(self, count: int) -> np.ndarray:
        if self.size + count > len(self.parent):
            room = max(2 * len(self.parent), self.size + count)
            self.parent = np.resize(self.parent, room)
            self.last = np.resize(self.last, room)
        out = np.arange(self.size, self.size + count, dtype=np.int64)
        self.parent[self.size:self.size + count] = out
        self.size += count
        return out

    def _nodes_of(self, tag: int, *cols: np.ndarray) -> np.ndarray:
        """The node of each row's key (tag, *cols), made when new (in the
        order of the keys' first rows)."""
        if not len(cols[0]):
            return np.zeros(0, dtype=np.int64)
        grp, ng, firsts = factorize_firsts(*cols)
        keys = row_keys(*(col[firsts] for col in cols))
        table = self.ids.setdefault(tag, KeyTable("node"))
        row = table.find(keys)
        known = row >= 0
        ids = np.empty(ng, dtype=np.int64)
        ids[known] = table.values["node"][row[known]]
        fresh = ~known
        nodes = self._new(int(fresh.sum()))
        ids[fresh] = nodes
        table.add(keys[fresh], node=nodes)
        out: np.ndarray = ids[grp]
        return out

    def _roots(self, x: np.ndarray) -> np.ndarray:
        """The root of each node in x; x's entries then point at it."""
        p = self.parent
        r: np.ndarray = p[x]
        while True:
            up = p[r]
            if np.array_equal(up, r):
                break
            r = up
        p[x] = r
        return r

    def _union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Join the sets of a[i] and b[i] for every i, on arrays: each
        joined set's root is its smallest (as one pair at a time would do).
        The roots are labelled by connected components: each label takes
        the smallest of its edges' labels, then jumps to its label's label."""
        # A batch repeats its links many times over, mostly on neighbouring
        # rows: those go first (no sort), then each pair of roots once.
        packed = (np.minimum(a, b) << 32) | np.maximum(a, b)
        fresh = np.r_[True, packed[1:] != packed[:-1]] if len(packed) else packed > 0
        ra, rb = self._roots(a[fresh]), self._roots(b[fresh])
        apart = ra != rb
        if not apart.any():
            return
        pairs = distinct((np.minimum(ra[apart], rb[apart]) << 32)
                         | np.maximum(ra[apart], rb[apart]))
        roots, ends = np.unique(np.concatenate((pairs >> 32, pairs & 0xFFFFFFFF)),
                                return_inverse=True)
        ea, eb = np.split(ends.reshape(-1), 2)
        label = np.arange(len(roots))
        while True:
            low = np.minimum(label[ea], label[eb])
            new = label.copy()
            np.minimum.at(new, ea, low)
            np.minimum.at(new, eb, low)
            new = new[new]
            if np.array_equal(new, label):
                break
            label = new
        self.parent[roots] = roots[label]

    def add(self, cols: dict[str, np.ndarray]) -> None:
        n = len(cols["ts"])
        if not n:
            return
        self.flags.update(tuple(self.probe_code))
        low = int(cols["ts"].min())
        self.first_ts = low if self.first_ts is None else min(self.first_ts, low)
        probe = cols["probe"]
        # probe codes are small: counted, not sorted
        self.return_probes.update(np.flatnonzero(np.bincount(probe[cols["is_return"]])).tolist())
        src, dst, sk, tid = cols["src"], cols["dst"], cols["sk"], cols["tid"]
        # Sockets, threads and contexts are a host's own (a merged trace).
        host = cols["source"].astype(np.int64)
        ctx = ((tid.astype(np.int64) << 16) | ((cols["ctx"].astype(np.int64) + 1) << 8)
               | (cols["softirq"].astype(np.int64) + 1))
        has_tuple = ((src != NO_EP) & (dst != NO_EP) & ((src & PORT_MASK) != 0)
                     & ((dst & PORT_MASK) != 0))
        keyed: list[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]] = [
            (has_tuple, lambda m: self._nodes_of(0, np.minimum(src[m], dst[m]),
                                                 np.maximum(src[m], dst[m]))),
            (sk != 0, lambda m: self._nodes_of(1, host[m], sk[m])),
            (cols["ctx"] == TASK, lambda m: self._nodes_of(2, host[m], tid[m])),
            (self.flags.pairs[probe], lambda m: self._nodes_of(3, host[m], ctx[m])),
        ]
        rep = np.full(n, -1, dtype=np.int64)
        ends: list[tuple[np.ndarray, np.ndarray]] = []
        for mask, nodes_of in keyed:
            rows = np.flatnonzero(mask)
            node = nodes_of(rows)
            free = rep[rows] < 0
            rep[rows[free]] = node[free]
            tie = ~free & (rep[rows] != node)
            ends.append((rep[rows[tie]], node[tie]))
        lone = np.flatnonzero(rep < 0)
        rep[lone] = self._new(len(lone))
        # Lead-ins and trailers: with their neighbours in time in their context.
        ts = cols["ts"]
        order = sort_order(ctx, ts, few=True)
        k, r, chained, t = ctx[order], rep[order], self.flags.chained[probe[order]], ts[order]
        same = k[1:] == k[:-1]
        tie = same & (chained[1:] | chained[:-1])
        ends.append((r[1:][tie], r[:-1][tie]))
        heads = np.flatnonzero(np.r_[True, ~same])
        row = self.ctx_tail.find(k[heads])
        seen = row >= 0
        if self.ctx_head is not None and not seen.all():
            first = heads[~seen]
            self.ctx_head.add(k[first], at=t[first].astype(np.int64), node=r[first],
                              chained=chained[first].astype(np.int64))
        before = {name: col[row[seen]] for name, col in self.ctx_tail.values.items()}
        if (t[heads][seen].astype(np.int64) < before["at"]).any():
            self.ctx_disorder = True
        joined = (before["chained"] != 0) | chained[heads][seen]
        extra = (before["node"][joined], r[heads][seen][joined])
        tails = np.flatnonzero(np.r_[~same, True])
        self.ctx_tail.set(k[tails], at=t[tails].astype(np.int64), node=r[tails],
                          chained=chained[tails].astype(np.int64))
        ends.append(extra)
        if self.nesting:
            ends.append(self._nested(cols, (host << 48) | ctx, rep))
        a = np.concatenate([e[0] for e in ends])
        b = np.concatenate([e[1] for e in ends])
        self._union(a, b)
        self.nodes.append(rep)
        np.maximum.at(self.last, rep, np.arange(self.events, self.events + n))
        self.events += n

    def tail(self) -> TailLinks:
        """What the head's links need of these (the links of a file's tail,
        made with ctx_head kept, their nodes in a named file) to go on
        from them: merge."""
        assert self.ctx_head is not None and not self.nesting and self.nodes.path is not None
        roots = self._roots(np.arange(self.size, dtype=np.int64))
        sizes = list(self.nodes.sizes())
        names = list(self.probe_code)
        head = self.ctx_head
        return TailLinks(
            roots=roots, last=self.last[:self.size].copy(),
            keys={tag: (t.keys, t.values["node"]) for tag, t in self.ids.items()
                  if t.keys is not None},
            ctx_keys=head.keys, ctx_at=head.values["at"], ctx_node=head.values["node"],
            ctx_chained=head.values["chained"], ctx_disorder=self.ctx_disorder,
            returns=[names[p] for p in sorted(self.return_probes)], first_ts=self.first_ts,
            events=self.events, nodes_path=self.nodes.path, batch_sizes=sizes)

    def merge(self, tail: TailLinks) -> None:
        """Goes on with the events of `tail` (the links of the batches after
        this one's, Links.tail): its nodes numbered after these, joined
        where they share a key or where a context's first event there
        follows its last here as add() joins them."""
        assert not self.nesting
        off = self.size
        self._new(len(tail.roots))
        self.parent[off:self.size] = tail.roots + off
        self.last[off:self.size] = tail.last + self.events
        ends: list[tuple[np.ndarray, np.ndarray]] = []
        for tag, (keys, node) in tail.keys.items():
            table = self.ids.get(tag)
            if table is not None:
                row = table.find(keys)
                found = row >= 0
                ends.append((table.values["node"][row[found]], node[found] + off))
        row = self.ctx_tail.find(tail.ctx_keys) if tail.ctx_keys is not None \
            else np.zeros(0, np.int64)
        seen = row >= 0
        before = {name: col[row[seen]] for name, col in self.ctx_tail.values.items()}
        if (tail.ctx_at[seen] < before["at"]).any() or tail.ctx_disorder:
            self.ctx_disorder = True
        joined = (before["chained"] != 0) | (tail.ctx_chained[seen] != 0)
        ends.append((before["node"][joined], tail.ctx_node[seen][joined] + off))
        self._union(np.concatenate([e[0] for e in ends]), np.concatenate([e[1] for e in ends]))
        self.return_probes.update(self.probe_code.setdefault(name, len(self.probe_code))
                                  for name in tail.returns)
        self.flags.update(tuple(self.probe_code))
        if tail.first_ts is not None:
            self.first_ts = tail.first_ts if self.first_ts is None \
                else min(self.first_ts, tail.first_ts)
        self.nodes.adopt(tail.nodes_path, tail.batch_sizes, off)
        self.events += tail.events
        # the tables hold the head's keys only: no add() after a merge
        self.ids, self.ctx_tail = {}, KeyTable()

    def _nested(self, cols: dict[str, np.ndarray], key: np.ndarray, rep: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Links of the events of non-task contexts inside open calls. An
        entry never returned holds its context open to the end: a superset
        of what pair_returns pairs, as the other rules are."""
        probe, pairs = cols["probe"], self.flags.pairs
        other = cols["ctx"] != TASK
        opening = other & pairs[probe]
        if not opening.any() and not self.open_calls:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        wanted = np.array(sorted(set(distinct(key[opening]).tolist()) | set(self.open_calls)),
                          dtype=np.int64)
        rows = np.flatnonzero(other & np.isin(key, wanted))
        rows = rows[np.lexsort((cols["ts"][rows], key[rows]))]  # stable: file order breaks ties
        a: list[int] = []
        b: list[int] = []
        calls = self.open_calls
        for k, p, ret, node in zip(key[rows].tolist(), probe[rows].tolist(),
                                   cols["is_return"][rows].tolist(), rep[rows].tolist(),
                                   strict=True):
            state = calls.get(k)
            if state is not None:
                a.append(state[0])
                b.append(node)
            if not pairs[p]:
                continue
            if not ret:
                if state is None:
                    state = calls[k] = (node, {})
                state[1][p] = state[1].get(p, 0) + 1
            elif state is not None and state[1].get(p):
                state[1][p] -= 1
                if not state[1][p]:
                    del state[1][p]
                    if not state[1]:
                        del calls[k]
        return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """(each node's group, each group's last event position); the keys
        and the union-find arrays are let go (`nodes` stays, for pass 2):
        the links take no more events."""
        self.ids, self.ctx_tail, self.open_calls = {}, KeyTable(), {}
        roots = self.parent[:self.size]
        while True:
            up = roots[roots]
            if (up == roots).all():
                break
            roots = up
        last = np.full(self.size, -1, dtype=np.int64)
        np.maximum.at(last, roots, self.last[:self.size])
        # up to twice the nodes (grown by doubling), 16 bytes each
        self.parent = self.last = np.zeros(0, dtype=np.int64)
        return roots.astype(np.int32), last
