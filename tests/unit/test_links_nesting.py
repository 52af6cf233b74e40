"""Links (tracer/timeline/columnar/links.py) with `nesting`: an event of a
softirq context inside an open call of a probe that returns is grouped with
that call (viz/spans.py nests it there), one after the return is not."""

from __future__ import annotations

import numpy as np

from probes.catalog import BY_NAME
from tracer.events import CTX_VALUES, SOFTIRQ_NAMES
from tracer.timeline.columnar.columns import NO_EP
from tracer.timeline.columnar.links import Links

SOFTIRQ = CTX_VALUES.index("softirq")


def _groups(nesting: bool) -> list[int]:
    links = Links(BY_NAME.get, nesting=nesting)
    # __sys_sendto returns; tcp_v4_rcv does not. Every event its own
    # socket, in one softirq context: entry, inside, return, after.
    names = ["__sys_sendto", "tcp_v4_rcv"]
    for name in names:
        links.probe_code[name] = len(links.probe_code)
    n = 4
    links.add({
        "ts": np.array([10, 20, 30, 40], dtype=np.int64),
        "probe": np.array([0, 1, 0, 1], dtype=np.int16),
        "is_return": np.array([False, False, True, False]),
        "ctx": np.full(n, SOFTIRQ, dtype=np.int8),
        "softirq": np.full(n, SOFTIRQ_NAMES.index("NET_RX"), dtype=np.int8),
        "tid": np.zeros(n, dtype=np.uint32),
        "sk": np.array([1, 2, 1, 3], dtype=np.uint64),
        "src": np.full(n, NO_EP, dtype=np.int64),
        "dst": np.full(n, NO_EP, dtype=np.int64),
        "source": np.zeros(n, dtype=np.uint16),
    })
    root, _ = links.groups()
    return root[next(iter(links.nodes))].tolist()


def test_an_event_inside_an_open_call_joins_it() -> None:
    entry, inside, ret, after = _groups(nesting=True)
    assert entry == ret == inside
    assert after != entry


def test_without_nesting_only_the_pair_is_joined() -> None:
    entry, inside, ret, after = _groups(nesting=False)
    assert entry == ret
    assert inside != entry and after != entry
