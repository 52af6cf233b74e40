"""The reconstruction on columns, for what `kpath replay --stats` prints.

tracer/timeline/ rebuilds a trace as objects (TEvent, Step, Flow); for a
large trace that costs about 1.7 KB and 27 us per event. This package applies
the same rules to numpy columns and keeps Python objects for what is
printed: see stats.py for the stages. Rules that are sequential by nature
run in Python on the few rows they concern (return pairing, trailers,
lead-ins, byte placement per direction, and packet building for streams
with GSO/GRO pieces or unreadable lengths). A trace needing a rule not
reproduced here (errors.Irregular: a 4-tuple reused across namespaces, ...)
is left to the object path; viz/stats_columnar prints the same text. A
version 2 file is rebuilt in parts of independent groups of events, in
bounded memory (parts.py).
"""

from tracer.timeline.columnar.columns import use_system_allocator
from tracer.timeline.columnar.errors import Irregular
from tracer.timeline.columnar.parts import PartedStats, stats_of_scan
from tracer.timeline.columnar.source import ScannedInput, stats_input_of
from tracer.timeline.columnar.stats import (
    PreparedStats,
    StatsInput,
    StatsSource,
    TraceStats,
    trace_stats,
)

__all__ = ["Irregular", "PartedStats", "PreparedStats", "ScannedInput", "StatsInput", "StatsSource",
           "TraceStats", "stats_input_of", "stats_of_scan", "trace_stats",
           "use_system_allocator"]
