"""CLI: `replay`. Its --stats starts its worker processes before anything
heavy is loaded (tracer/workers.py stats_pool: their imports overlap this
process's); the command itself is kpath/cli_view.py's."""

from __future__ import annotations

import click

from kpath.cli_types import Jobs, no_cycle_collection


@click.command("replay")
@click.argument("file", metavar="FILE")
@click.option("--flow", metavar="N", help="Only flow N (numbers as listed by replay).")
@click.option("--no-color", is_flag=True, help="No colour even on a terminal.")
@click.option("--format", "out_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: one document for scripts (schema: docs/replay-json.md).")
@click.option("--stats", is_flag=True,
              help="Instead of the timeline: per flow, bytes written/carried/read per "
                   "direction, latency per hop (count, min, median, p99, max, in us) and a "
                   "per-packet latency table (docs/correlation.md).")
@click.option("--jobs", type=Jobs(), default="auto", show_default=True, metavar="N|auto",
              help="--stats: rebuild a big trace's parts in N processes, this one and N-1 "
                   "workers. auto: 2 where this process may run on 2 CPUs or more, else 1. "
                   "A worker on a free core shortens the wall time by a quarter to a "
                   "third, at ~90 MiB and ~15 % more CPU; --jobs 1: least memory and "
                   "CPU (bench/README.md).")
@no_cycle_collection
def replay_cmd(file: str, flow: str | None, no_color: bool, out_format: str,
               stats: bool, jobs: int | None) -> None:
    """Print a trace as per-flow timelines: each message (send/recv syscall)
    and packet (SYN, SYN-ACK, data, ACK...) with its events, their time, the
    hop since the previous event of the step, side, layer, the function
    indented by call nesting, execution context (coloured on a terminal),
    bytes and sequence numbers.

    \b
    Examples:
      kpath replay chat.kpath
      kpath replay chat.kpath --flow 1 | less -R
      kpath replay chat.kpath --format json | jq '.steps[] | select(.kind=="packet")'
      kpath replay bulk.kpath --stats
      kpath replay big.kpath --stats --jobs 1    # one process: least memory and CPU

    \b
    --stats hops: syscall>tcp (send entry to the segment's __tcp_transmit_skb),
    tcp>ip, ip>dev, dev>rx (to __netif_rx/ip_rcv), rx>queue (to tcp_queue_rcv),
    queue>copy (to the reader's __skb_datagram_iter), tcp>copy (whole path);
    in a merged trace (kpath merge) dev>wire and wire instead of dev>rx for a
    packet that went from one host to the other. A hop needs both its probes;
    packets around lost events are marked "gap".
    """
    pool = None
    if stats and out_format == "text":
        from tracer.workers import stats_pool

        pool = stats_pool(file, jobs)
    from kpath.cli_view import replay
    from tracer import codecache

    codecache.release()  # the imports are done
    replay(file, flow, no_color, out_format, stats, jobs, pool)
