"""Per-host, per-layer kernel latency percentiles over a fleet's traces, on Spark.

Each host's traces are exported with `kpath export TRACE -f parquet -o DIR`
(tables and columns: docs/parquet.md); this reads the `hops` table of every
export given and prints, per host and hop (a layer crossing: syscall>tcp,
tcp>ip, ip>dev, dev>rx, rx>queue, queue>copy, and tcp>copy for the whole
path), the packets measured and the 50th, 90th and 99th percentiles in
microseconds. Packets around lost events (`gap`) are left out, as
`kpath replay --stats` leaves them out.

    kpath export web1.kpath -f parquet -o exports/web1
    kpath export web2.kpath -f parquet -o exports/web2
    spark-submit docs/examples/spark_latency.py exports/*        # on a cluster
    python docs/examples/spark_latency.py exports/*              # pyspark, local mode

`percentile` is exact (it interpolates between the two nearest values, like
DuckDB's quantile_cont); over billions of rows use `percentile_approx`.
The test suite runs this on the exports of tests/data's recordings
(tests/replay/test_spark_example.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession

# The hops in path order (tracer/timeline/latency.py Hop), for sorting.
# dev>wire and wire: merged traces (kpath merge), the wire a hop of its own.
HOPS = ("syscall>tcp", "tcp>ip", "ip>dev", "dev>rx", "dev>wire", "wire", "rx>queue",
        "queue>copy", "tcp>copy", "syscall>dev", "syscall>copy")
QUANTILES = (0.5, 0.9, 0.99)


def latency_percentiles(spark: SparkSession, exports: Sequence[str]) -> DataFrame:
    """One row per (host, hop): n, p50_ns, p90_ns, p99_ns (doubles: an even
    count's median is halfway between two values)."""
    spark.read.parquet(*[f"{d.rstrip('/')}/hops.parquet" for d in exports]) \
        .createOrReplaceTempView("hops")
    order = ", ".join(f"'{h}'" for h in HOPS)
    qs = ", ".join(str(q) for q in QUANTILES)
    return spark.sql(f"""
        select host, hop, count(*) as n,
               percentile(latency_ns, array({qs})) as p
        from hops where not gap
        group by host, hop
    """).selectExpr(
        "host", "hop", "n", "p[0] as p50_ns", "p[1] as p90_ns", "p[2] as p99_ns",
        f"array_position(array({order}), hop) as hop_order",
    ).orderBy("host", "hop_order").drop("hop_order")


def report(spark: SparkSession, exports: Sequence[str]) -> str:
    """The percentiles as an aligned text table, in us with one decimal
    (as `kpath replay --stats` prints them)."""
    rows = [(r.host, r.hop, str(r.n), *(f"{v / 1e3:.1f}" for v in (r.p50_ns, r.p90_ns, r.p99_ns)))
            for r in latency_percentiles(spark, exports).collect()]
    head = ("host", "hop", "n", "p50_us", "p90_us", "p99_us")
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                       for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in (head, *rows)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    spark = (SparkSession.builder.appName("kpath-latency")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        sys.stdout.write(report(spark, argv))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
