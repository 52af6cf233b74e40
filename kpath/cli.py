"""kpath command line: wires the stages (probes -> tracer -> trace file ->
timeline -> viz, and the VM); owns no logic of its own."""

from __future__ import annotations

import errno
import sys

import click

from kpath import __version__
from kpath.cli_convert import convert_cmd
from kpath.cli_doctor import doctor_cmd
from kpath.cli_probes import probes_cmd
from kpath.cli_trace import demo_group, trace_cmd
from kpath.cli_validate import validate_cmd
from kpath.cli_view import export_cmd, replay_cmd
from kpath.cli_vm import vm_group
from kpath.console import stdout_failed


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
      kpath vm run -- kpath trace -o chat.kpath -- kpath demo chat
    """


cli.add_command(trace_cmd)
cli.add_command(probes_cmd)
cli.add_command(doctor_cmd)
cli.add_command(demo_group)
cli.add_command(replay_cmd)
cli.add_command(export_cmd)
cli.add_command(convert_cmd)
vm_group.add_command(validate_cmd)
cli.add_command(vm_group)


_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF}


def main() -> None:
    """The command line, with stdout's last buffered bytes flushed here:
    writing them to a closed pipe or a full disk ends with one line
    (kpath/console.py), not with a traceback at interpreter exit."""
    try:
        cli(prog_name="kpath")
    except SystemExit as exc:
        _flush_stdout()
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
