"""The kpath trace file (format: docs/trace-format.md).

Version 2, what kpath writes: an Arrow IPC stream of event batches in
tracer/events.py's EVENT_SCHEMA, the header in the schema's metadata, lost
records and the trailer in batch metadata. Version 1, still read (and
written by `kpath convert --to jsonl`): JSON Lines. Both are written as a
stream, so a tracer killed mid-way leaves a readable file, and a missing
trailer is how a reader knows it was cut.
"""

from tracer.tracefile.arrow import COMPRESSION, TraceWriter
from tracer.tracefile.jsonl import write_jsonl
from tracer.tracefile.probe_dictionary import describe, probe_specs, recorded_spec
from tracer.tracefile.records import (
    FORMAT_NAME,
    FORMAT_VERSION,
    JSONL_VERSION,
    Header,
    Lost,
    Source,
    Trace,
    TraceFormatError,
    Trailer,
    clock_offset_ns,
    local_source,
    with_probes,
)
from tracer.tracefile.scan import TraceScan, read_trace, scan_trace

__all__ = [
    "COMPRESSION", "FORMAT_NAME", "FORMAT_VERSION", "JSONL_VERSION",
    "Header", "Lost", "Source", "Trace", "TraceFormatError", "TraceScan", "TraceWriter", "Trailer",
    "clock_offset_ns", "describe", "local_source", "probe_specs", "read_trace", "recorded_spec",
    "scan_trace", "with_probes", "write_jsonl",
]
