"""The Spark example of docs/parquet.md (docs/examples/spark_latency.py),
run with pyspark in local mode on the Parquet exports of every recording in
tests/data: its per-host, per-hop percentiles are DuckDB's over the same
files. One SparkSession for the module (a JVM start costs ~20 s)."""

from __future__ import annotations

import csv
import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from kpath.cli import cli
from tests.replay.recordings import RECORDINGS, needs_recordings
from tests.tools import ROOT, require, require_module
from tracer.tracefile import read_trace

pytestmark = needs_recordings
EXAMPLE = ROOT / "docs" / "examples" / "spark_latency.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    require("java", "Spark runs on a JVM: apt install openjdk-17-jre-headless")
    require_module("pyspark", "pip install -e '.[dev]' or scripts/setup.sh")
    spec = importlib.util.spec_from_file_location("spark_latency", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def spark(example: ModuleType) -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("kpath-test")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               # local mode on loopback: no dependence on the machine's interfaces
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "1").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    base = tmp_path_factory.mktemp("exports")
    out = []
    for trace in RECORDINGS:
        target = base / trace.stem
        res = CliRunner().invoke(cli, ["export", str(trace), "-f", "parquet", "-o", str(target)])
        assert res.exit_code == 0, res.output
        out.append(str(target))
    return out


def test_spark_percentiles_are_duckdbs(example: ModuleType, spark: Any,
                                       exports: list[str]) -> None:
    got = [(r.host, r.hop, r.n, r.p50_ns, r.p90_ns, r.p99_ns)
           for r in example.latency_percentiles(spark, exports).collect()]
    sql = """select host, hop, count(*) as n,
                    quantile_cont(latency_ns, 0.5) as p50, quantile_cont(latency_ns, 0.9) as p90,
                    quantile_cont(latency_ns, 0.99) as p99
             from hops where not gap group by host, hop"""
    res = CliRunner().invoke(cli, ["query", *exports, sql, "--format", "csv"])
    assert res.exit_code == 0, res.output
    want = {(r["host"], r["hop"]): (int(r["n"]), float(r["p50"]), float(r["p90"]),
                                    float(r["p99"]))
            for r in csv.DictReader(io.StringIO(res.stdout))}
    spark_rows = {(h, hop): (n, *ps) for h, hop, n, *ps in got}
    assert spark_rows.keys() == want.keys()
    for key, (n, *ps) in spark_rows.items():
        # Both interpolate linearly between the nearest ranks; the doubles
        # may differ in their last bits (462996.0000000001).
        assert n == want[key][0], key
        assert ps == pytest.approx(want[key][1:], rel=1e-12, abs=1e-6), key
    # Every recording's hosts (a merged one has two); rows by host, then in path order.
    hosts = {s.hostname for t in RECORDINGS for s in read_trace(t).header.sources}
    assert {h for h, *_ in got} == hosts and len(hosts) > 2
    merged = {hop for h, hop, *_ in got if h in ("kpath-a", "kpath-b")}
    assert {"dev>wire", "wire"} <= merged
    for host in hosts:
        order = [hop for h, hop, *_ in got if h == host]
        assert order == sorted(order, key=example.HOPS.index)
    hops = [hop for h, hop, *_ in got if h == "kpath-vm"]
    assert hops == sorted(hops, key=example.HOPS.index)
    assert hops[:3] == ["syscall>tcp", "tcp>ip", "ip>dev"]


def test_spark_report_is_a_table(example: ModuleType, spark: Any, exports: list[str]) -> None:
    text = example.report(spark, exports)
    lines = text.splitlines()
    assert lines[0].split() == ["host", "hop", "n", "p50_us", "p90_us", "p99_us"]
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == len(example.latency_percentiles(spark, exports).collect())
    assert all(len(r) == 6 and float(r[3]) <= float(r[4]) <= float(r[5]) for r in rows)
    assert Path(exports[0], "hops.parquet").is_file()
