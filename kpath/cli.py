"""kpath command line: wires the stages (probes -> tracer -> trace file ->
timeline -> viz, and the VM); owns no logic of its own."""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Callable

import click

from kpath import __version__
from kpath.console import ends_quickly, stdout_failed
from tracer import codecache


def _vm_group() -> click.Command:
    from kpath.cli_validate import validate_cmd
    from kpath.cli_vm import vm_group

    vm_group.add_command(validate_cmd)
    return vm_group


def _attr(module: str, name: str) -> Callable[[], click.Command]:
    def load() -> click.Command:
        command: click.Command = getattr(importlib.import_module(module), name)
        return command
    return load


# Each command's module is imported when the command runs (or --help lists
# it): `kpath replay --stats` on a large trace should not pay for loading
# the tracer, the VM and the renderers it does not use.
_COMMANDS: dict[str, Callable[[], click.Command]] = {
    "trace": _attr("kpath.cli_trace", "trace_cmd"),
    "probes": _attr("kpath.cli_probes", "probes_cmd"),
    "doctor": _attr("kpath.cli_doctor", "doctor_cmd"),
    "demo": _attr("kpath.cli_trace", "demo_group"),
    "replay": _attr("kpath.cli_replay", "replay_cmd"),
    "export": _attr("kpath.cli_view", "export_cmd"),
    "convert": _attr("kpath.cli_convert", "convert_cmd"),
    "query": _attr("kpath.cli_query", "query_cmd"),
    "merge": _attr("kpath.cli_merge", "merge_cmd"),
    "vm": _vm_group,
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            self.add_command(_COMMANDS[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kpath")
def cli() -> None:
    """Trace what the Linux kernel does with your TCP bytes, and draw it.

    \b
    Examples:
      sudo kpath trace -o chat.kpath -- kpath demo chat
      sudo kpath trace --port 8080 --duration 10 -o web.kpath
      kpath replay chat.kpath
      kpath export chat.kpath -f svg -o chat.svg
      kpath convert chat.kpath --to jsonl -o chat.jsonl
      kpath query chat.kpath "select hop, median(latency_ns) from hops group by hop"
      kpath vm run -- kpath trace -o chat.kpath -- kpath demo chat
    """


_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF}


def main() -> None:
    """The command line, with stdout's last buffered bytes flushed here:
    writing them to a closed pipe or a full disk ends with one line
    (kpath/console.py), not with a traceback at interpreter exit."""
    try:
        cli(prog_name="kpath")
    except SystemExit as exc:
        _flush_stdout()
        if ends_quickly() and exc.code in (0, None):
            sys.stderr.flush()
            codecache.save()  # what atexit would have written
            os._exit(0)
        raise SystemExit(exc.code) from None
    except OSError as exc:
        # Commands catch the errors of the files they open; what escapes
        # without a file name is a write to stdout (click.echo).
        if exc.filename is None and exc.errno in _OUTPUT_ERRNOS:
            stdout_failed(exc)
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"kpath: error: {exc.strerror or exc}{where}", err=True)
        raise SystemExit(1) from None
    _flush_stdout()


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except OSError as exc:
        stdout_failed(exc)
