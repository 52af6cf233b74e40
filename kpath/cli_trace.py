"""CLI: live tracing (`trace`), the kernel check (`doctor`) and the demo
workloads (`demo chat|bulk|veth`); the probe catalog is kpath/cli_probes.py."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from kpath.cli_types import Seconds
from kpath.console import ConsoleStatus
from probes.catalog import PROFILES, UnknownProbe, select
from tracer.capture.base import BACKENDS, BPF_SOURCES, DEFAULT_BUFFER_PAGES, choose_backend
from tracer.capture.errors import CaptureError
from tracer.capture.plan import ATTACH_MODES, DEFAULT_ATTACH_MODE
from tracer.filters import FilterError, Filters, make_filters
from tracer.session import TraceRequest, run_trace


@click.command(
    "trace",
    context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False},
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=Path("trace.kpath"), show_default=True, help="Trace file to write.")
@click.option("--pid", type=int, help="Trace this process (and the flows it touches).")
@click.option("--comm", help="Trace tasks with this name (max 15 bytes).")
@click.option("--port", type=int, help="Trace only segments and sockets with this TCP port.")
@click.option("--duration", type=Seconds(),
              help="Stop after this many seconds.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many events.")
@click.option("--probes", "probes_sel", default="default", show_default=True,
              help=f"Profile ({'|'.join(PROFILES)}) or comma-separated catalog names.")
@click.option("--buffer-pages", type=click.IntRange(1, 65536), default=DEFAULT_BUFFER_PAGES,
              show_default=True,
              help="Ring buffer size in 4 KiB pages (a power of two). Too small loses events:"
              " they are counted and marked in the trace.")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write this file (our pid) once the probes are attached: wait on it "
              "instead of sleeping.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="core: the precompiled CO-RE object (kprobes where the kernel has them, "
              "tracepoints where not; needs kernel BTF); bcc: compiled at run time (needs "
              "kprobes and kernel headers); auto: core where the kernel has BTF.")
@click.option("--kprobes/--no-kprobes", default=True, show_default=True,
              help="--no-kprobes: tracepoints only, even where the kernel has kprobes (less "
              "overhead, stable attach points; fewer layers). CO-RE backend.")
@click.option("--attach-mode", type=click.Choice(ATTACH_MODES), default=DEFAULT_ATTACH_MODE,
              show_default=True,
              help="How the CO-RE backend attaches to kernel functions: kprobe/kretprobe, "
              "fentry/fexit (BPF trampolines; Linux 5.19+; the same events), or auto: "
              "fentry, and a kprobe for each function where fentry fails.")
@click.option("--vmlinux", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The running kernel's debug vmlinux (Debian: linux-image-*-dbg): record "
              "each probe's source file:line in the trace (replay, HTML, diagram tooltips).")
@click.option("--ebpf", is_flag=True, help="Print the BPF C program of --backend and exit.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def trace_cmd(
    output: Path,
    pid: int | None,
    comm: str | None,
    port: int | None,
    duration: float | None,
    count: int | None,
    probes_sel: str,
    buffer_pages: int,
    ready_file: Path | None,
    backend: str,
    kprobes: bool,
    attach_mode: str,
    vmlinux: Path | None,
    ebpf: bool,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Trace the kernel's TCP path live (root). The CO-RE backend needs no
    headers and no compiler: kprobes where the kernel has them, tracepoints
    where it has not; what this kernel can show: `kpath doctor`.

    With `-- CMD ARGS...`, runs CMD and traces only its connections (both
    ends), stopping when it exits; kpath then exits with CMD's status.
    Ctrl-C or SIGTERM stops cleanly: the file is complete and every probe
    is detached.

    \b
    Examples:
      kpath trace -o chat.kpath -- kpath demo chat
      kpath trace --port 8080 --duration 10 -o web.kpath
      kpath trace --backend bcc -o chat.kpath -- kpath demo chat
      kpath trace --comm nginx --count 5000 -o nginx.kpath
      kpath trace --probes minimal -o min.kpath -- ./client 127.0.0.1
      kpath trace --no-kprobes --vmlinux vmlinux-6.1.0-57-amd64 -o tp.kpath -- CMD
    """
    try:
        filters = make_filters(pid, comm, port, bool(command))
        profile, specs = select(probes_sel)
    except (FilterError, UnknownProbe) as exc:
        raise click.UsageError(str(exc)) from None
    if not kprobes and backend == "bcc":
        raise click.UsageError("--no-kprobes needs --backend core or auto (BCC has only kprobes)")
    if attach_mode == "fentry" and backend == "bcc":
        raise click.UsageError("--attach-mode fentry needs --backend core or auto (BCC has "
                               "only kprobes)")
    if buffer_pages & (buffer_pages - 1):
        raise click.UsageError(f"--buffer-pages {buffer_pages}: must be a power of two")
    if ebpf:
        _print_ebpf(click.get_current_context(), backend, kprobes, filters, profile,
                    [s.name for s in specs], buffer_pages, command)
        return
    if not command and duration is None and count is None and not sys.stdin.isatty():
        # Non-interactive with nothing to end the trace would run forever.
        raise click.UsageError("give --duration, --count or a command (-- CMD) to end the trace")
    status = ConsoleStatus(quiet=quiet)
    req = TraceRequest(output=output, filters=filters, profile=profile, specs=specs,
                       duration_s=duration, count=count,
                       command=list(command) if command else None,
                       buffer_pages=buffer_pages, ready_file=ready_file, backend=backend,
                       vmlinux=vmlinux, kprobes=kprobes, attach_mode=attach_mode)
    try:
        result = run_trace(req, status)
    except CaptureError as exc:
        click.echo(f"kpath: error: {exc}", err=True)
        if exc.log and not quiet:
            click.echo(exc.log, err=True)
        sys.exit(1)
    except (PermissionError, OSError) as exc:
        click.echo(f"kpath: error: {exc}", err=True)
        sys.exit(1)
    t = result.trailer
    status.info(
        f"wrote {output}: {t.events} events, {t.lost} lost, {result.attached} probes"
        f" attached, {len(result.missing)} missing; stopped by {t.reason}"
    )
    if t.lost:
        status.warn(f"{t.lost} events were lost (buffer full); they are marked in the trace")
    if t.command_exit:
        sys.exit(t.command_exit if 0 < t.command_exit < 256 else 1)


# What --ebpf cannot show: they change how long a trace runs or where it is
# written, not the program.
_NOT_IN_PROGRAM = ("output", "duration", "count", "ready_file", "vmlinux")


def _print_ebpf(ctx: click.Context, backend: str, kprobes: bool, filters: Filters,
                profile: str, probes: list[str], buffer_pages: int,
                command: tuple[str, ...]) -> None:
    """The BPF C program the options would load, after a comment saying what
    they set: which probes it is asked to attach and the values written
    into its config map at load (the C text is the same for all of them:
    nothing a user types is ever put into it). Options that would not
    change the program are refused, not silently ignored."""
    ignored = [f"--{name.replace('_', '-')}" for name in _NOT_IN_PROGRAM
               if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
    if command:
        ignored.append("a command (-- CMD)")
    if ignored:
        raise click.UsageError(f"--ebpf prints the BPF program and exits: "
                               f"{', '.join(ignored)} would not change it")
    chosen = choose_backend(backend)
    config = " ".join(f"{k}={_c_literal(v) if isinstance(v, str) else int(v)}"
                      for k, v in filters.to_record().items())
    lines = [f"backend {chosen}" + (f" (--backend {backend})" if backend != chosen else ""),
             f"kprobes {'on' if kprobes else 'off (tracepoints only)'}",
             f"ring buffer {buffer_pages} pages of 4 KiB",
             f"config map at load: {config or 'no filter'}",
             f"probes requested ({profile}): " + ", ".join(probes)]
    head = "".join(f" * {line}\n" for line in lines)
    text = BPF_SOURCES[chosen].read_text(encoding="utf-8")
    click.echo(f"/* kpath trace --ebpf\n{head} */\n{text}", nl=False)


def _c_literal(text: str) -> str:
    """A string as a C literal whose characters are letters, digits and \\x
    escapes only: it cannot end the comment it is printed in."""
    return '"' + "".join(ch if ch.isascii() and ch.isalnum() else
                         "".join(f"\\x{b:02x}" for b in ch.encode()) for ch in text) + '"'


@click.group("demo")
def demo_group() -> None:
    """Built-in workloads to trace."""


@click.command("chat")
@click.option("--port", type=click.IntRange(1, 65535), default=10086, show_default=True)
def demo_chat_cmd(port: int) -> None:
    """The seeds' hello/hi chat on 127.0.0.1: the server sends a welcome, the
    client sends "hi", the server answers "hi", the client sends "quit".

    \b
    Example:
      sudo kpath trace -o chat.kpath -- kpath demo chat
    """
    from vm.chat import run_chat

    try:
        result = run_chat(port)
    except (OSError, RuntimeError) as exc:
        click.echo(f"kpath demo chat: error: {exc}", err=True)
        sys.exit(1)
    for line in result.transcript:
        click.echo(line)
    if result.server_exit:
        click.echo(f"kpath demo chat: server exited with {result.server_exit}", err=True)
        sys.exit(1)


demo_group.add_command(demo_chat_cmd)


def _parse_size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    units = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20}
    text = value.strip().lower()
    num = text.rstrip("kmib")
    unit = text[len(num):]
    if not num.isdigit() or unit not in units or int(num) * units[unit] <= 0:
        raise click.BadParameter(f"{value!r}: use a byte count like 1048576, 64KiB or 1MiB")
    return int(num) * units[unit]


@click.command("bulk")
@click.option("--size", default="1MiB", show_default=True, callback=_parse_size,
              help="Bytes the client writes (e.g. 1048576, 64KiB, 1MiB).")
@click.option("--port", type=click.IntRange(1, 65535), default=10087, show_default=True)
def demo_bulk_cmd(size: int, port: int) -> None:
    """A bulk transfer on 127.0.0.1: the client writes SIZE bytes with send()
    in 64 KiB calls, the server reads to EOF and checks the count.

    \b
    Example:
      sudo kpath trace -o bulk.kpath -- kpath demo bulk --size 1MiB
    """
    from vm.bulk import run_bulk

    try:
        result = run_bulk(size, port)
    except (OSError, RuntimeError, ValueError) as exc:
        click.echo(f"kpath demo bulk: error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"sent {result.sent} bytes in {result.sends} send() calls, "
               f"server read {result.received}")


@click.command("veth")
def demo_veth_cmd() -> None:
    """A TCP exchange between two network namespaces joined by a veth pair
    (kpath-a 10.199.0.1 -> kpath-b 10.199.0.2:10088). Root; creates and
    removes the namespaces itself.

    \b
    Example:
      sudo kpath trace -o veth.kpath -- kpath demo veth
    """
    from vm.netns_pair import run_pair

    try:
        result = run_pair()
    except (OSError, RuntimeError) as exc:
        click.echo(f"kpath demo veth: error: {exc}", err=True)
        sys.exit(1)
    for line in result.transcript:
        click.echo(line)


@click.command("mixed")
@click.option("--port", type=click.IntRange(1, 65535), default=10090, show_default=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write each call's byte count, in order, to this JSON file.")
@click.option("--basic", is_flag=True,
              help="Only the ways a host without kprobes sees whole (raw_syscalls): no "
                   "io_uring, sendmmsg, recvmmsg, or splice out of the socket.")
def demo_mixed_cmd(port: int, report: Path | None, basic: bool) -> None:
    """One stream on 127.0.0.1 written through send, sendfile, write,
    sendmsg, writev, splice, sendmmsg and io_uring send, read through recv,
    read, recvmsg, readv, recvmmsg, io_uring recv and splice into a pipe.
    Prints every call's byte count and the totals by way.

    \b
    Example:
      sudo kpath trace -o mixed.kpath -- kpath demo mixed
    """
    from vm.mixed import run_mixed, write_report

    try:
        result = run_mixed(port, basic=basic)
    except (OSError, RuntimeError, ValueError) as exc:
        click.echo(f"kpath demo mixed: error: {exc}", err=True)
        sys.exit(1)
    click.echo("writes: " + ", ".join(f"{way} {n}" for way, n in result.writes))
    click.echo("reads: " + ", ".join(f"{way} {n}" for way, n in result.reads))
    for what, calls, total in (("wrote", result.writes, result.written),
                               ("read", result.reads, result.read)):
        by = ", ".join(f"{way} {n}" for way, n in result.totals(calls).items())
        click.echo(f"{what} {total} bytes ({by})")
    if report is not None:
        write_report(result, report)


@click.command("peer")
@click.option("--role", type=click.Choice(["server", "client"]), required=True)
@click.option("--addr", required=True, help="The server's IPv4 address (bound, or connected to).")
@click.option("--ready", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File the server writes once it listens, and the client waits for.")
def demo_peer_cmd(role: str, addr: str, ready: Path) -> None:
    """One end of the two-host workload (`kpath vm validate -s two-hosts`):
    the hello/hi chat, then a 1 MiB transfer, between two machines. The
    server listens on ADDR and says so in READY (a file both machines see);
    the client waits for it, then connects.

    \b
    Example (two guests sharing a directory):
      sudo kpath trace -o b.kpath -- kpath demo peer --role server --addr 198.18.0.2 --ready r
      sudo kpath trace -o a.kpath -- kpath demo peer --role client --addr 198.18.0.2 --ready r
    """
    from vm.two_hosts import run_client, run_server

    try:
        lines = (run_server if role == "server" else run_client)(addr, ready)
    except (OSError, RuntimeError) as exc:
        click.echo(f"kpath demo peer: error: {exc}", err=True)
        sys.exit(1)
    for line in lines:
        click.echo(line)


demo_group.add_command(demo_bulk_cmd)
demo_group.add_command(demo_veth_cmd)
demo_group.add_command(demo_peer_cmd)
demo_group.add_command(demo_mixed_cmd)
