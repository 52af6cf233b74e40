"""Traces of several hosts joined into one (`kpath merge`).

- tracer/merge/offset.py: the clock offset between two hosts from the
  shortest one-way trips both ways, with its uncertainty;
- tracer/merge/crossings.py: each host's segments at the wire (from its
  events), matched one to one across two hosts;
- tracer/merge/join.py: the merged trace (sources, shifted clocks) and what
  is refused (same host twice, no common connection).
"""

from tracer.merge.crossings import Crossings, Match, Pairing, crossings, pair_hosts
from tracer.merge.join import Joined, MergeError, MergeResult, merge_traces
from tracer.merge.offset import OffsetError, OffsetEstimate, estimate_offset

__all__ = [
    "Crossings", "Joined", "Match", "MergeError", "MergeResult", "OffsetError", "OffsetEstimate",
    "Pairing", "crossings", "estimate_offset", "merge_traces", "pair_hosts",
]
