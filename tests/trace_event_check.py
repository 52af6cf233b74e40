"""A checker for the Chrome Trace Event Format (JSON Object Format), as
documented in Chromium's "Trace Event Format" and read by Perfetto's JSON
importer: what `kpath export -f perfetto` must satisfy to open in
ui.perfetto.dev and chrome://tracing. Returns a list of problems (empty: ok).
"""

from __future__ import annotations

import json
from typing import Any

PHASES = {"X", "B", "E", "i", "I", "M", "s", "t", "f", "C"}
METADATA = {"process_name", "process_sort_index", "thread_name", "thread_sort_index"}


def check_trace_events(text: str) -> list[str]:
    problems: list[str] = []
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["top level must be an object with a traceEvents array"]
    if doc.get("displayTimeUnit") not in (None, "ms", "ns"):
        problems.append(f"displayTimeUnit must be ms or ns, got {doc['displayTimeUnit']!r}")
    named_threads: set[tuple[int, int]] = set()
    named_procs: set[int] = set()
    flows: dict[tuple[str, Any], list[str]] = {}
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for n, ev in enumerate(doc["traceEvents"]):
        where = f"event {n}"
        if not isinstance(ev, dict):
            problems.append(f"{where}: not an object")
            continue
        ph = ev.get("ph")
        if ph not in PHASES:
            problems.append(f"{where}: unknown ph {ph!r}")
            continue
        for key in ("pid", "tid"):
            if not isinstance(ev.get(key), int):
                problems.append(f"{where}: {key} must be an integer")
        if not isinstance(ev.get("name"), str) or not ev["name"]:
            problems.append(f"{where}: name must be a non-empty string")
        if ph == "M":
            if ev["name"] not in METADATA:
                problems.append(f"{where}: unknown metadata {ev['name']!r}")
            args = ev.get("args", {})
            if ev["name"].endswith("_name"):
                if not isinstance(args.get("name"), str):
                    problems.append(f"{where}: {ev['name']} needs args.name")
                elif ev["name"] == "thread_name":
                    named_threads.add((ev["pid"], ev["tid"]))
                else:
                    named_procs.add(ev["pid"])
            continue
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or ts < 0:
            problems.append(f"{where}: ts must be a non-negative number")
            continue
        if ph == "X":
            dur = ev.get("dur")
            if not isinstance(dur, (int, float)) or dur < 0:
                problems.append(f"{where}: X needs dur >= 0")
                continue
            tracks.setdefault((ev["pid"], ev["tid"]), []).append((ts, ts + dur))
        if ph == "i" and ev.get("s", "t") not in ("g", "p", "t"):
            problems.append(f"{where}: instant scope must be g, p or t")
        if ph in ("s", "t", "f"):
            if "id" not in ev or not isinstance(ev.get("cat"), str):
                problems.append(f"{where}: flow events need id and cat")
                continue
            if ph == "f" and ev.get("bp") not in (None, "e"):
                problems.append(f"{where}: flow end bp must be 'e'")
            flows.setdefault((ev["cat"], ev["id"]), []).append(ph)
    for (cat, fid), phases in flows.items():
        if phases[0] != "s" or phases[-1] != "f" or phases.count("s") != 1 or \
                phases.count("f") != 1:
            problems.append(f"flow {cat}:{fid} must be one s, any t, one f: {phases}")
    for key, spans in tracks.items():
        if key not in named_threads:
            problems.append(f"track pid {key[0]} tid {key[1]} has no thread_name")
        if key[0] not in named_procs:
            problems.append(f"pid {key[0]} has no process_name")
        stack: list[float] = []
        for start, end in sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]))):
            while stack and stack[-1] <= start + 1e-9 and not (stack[-1] == start == end):
                stack.pop()
            if stack and end > stack[-1] + 1e-6:
                problems.append(f"track {key}: slice {start}..{end} overlaps the end of its "
                                f"parent ({stack[-1]})")
                break
            stack.append(end)
    return problems
