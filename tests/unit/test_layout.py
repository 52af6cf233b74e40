"""The folders show the pipeline, and data flows one way: probes -> capture
-> trace file -> timeline -> viz, with the CLI wiring them. Checked on the
source's import statements (all of them, lazy ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kpath", "tracer", "probes", "viz", "vm")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> nx.DiGraph:
    g = nx.DiGraph()
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    for name, path in modules.items():
        g.add_node(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    g.add_edge(name, t)
    return g


def _stage(module: str) -> str:
    for prefix in ("tracer.capture", "tracer.tracefile", "tracer.timeline"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix.split(".")[1]
    return module.split(".")[0] if not module.startswith("tracer.") else module


def test_no_import_cycles() -> None:
    cycles = list(nx.simple_cycles(_imports()))
    assert cycles == [], cycles


def test_stages_import_only_upstream() -> None:
    forbidden = {
        "capture": {"tracefile", "timeline", "viz", "kpath", "vm"},
        "tracefile": {"capture", "timeline", "viz", "kpath", "vm"},
        "timeline": {"capture", "viz", "kpath", "vm"},
        "viz": {"capture", "kpath", "vm"},
        "probes": {"capture", "tracefile", "timeline", "viz", "kpath", "vm"},
    }
    # The replay double stands in for a kernel by reading a recorded trace.
    allowed = {("tracer.capture.replay", "tracer.tracefile")}
    bad = [(a, b) for a, b in _imports().edges
           if _stage(b) in forbidden.get(_stage(a), set()) and (a, b) not in allowed]
    assert bad == [], bad


def test_each_stage_has_its_folder() -> None:
    for folder in ("tracer/capture", "tracer/tracefile", "tracer/timeline", "viz", "probes"):
        assert (ROOT / folder / "__init__.py").is_file(), folder
    flat = sorted(p.name for p in (ROOT / "tracer").glob("*.py"))
    # workers.py: the timeline's worker processes, outside its package so
    # that the CLI starts them before the stage's modules load. heap.py: the
    # C heap's settings, shared by the capture's reader and the timeline's
    # parts (neither stage imports the other). codecache.py: every process's
    # start-up (the dataclasses all stages make), installed by tracer/__init__.
    assert flat == ["__init__.py", "codecache.py", "events.py", "filters.py", "heap.py",
                    "session.py", "workers.py"], flat
