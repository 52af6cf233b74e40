"""kpath command line: wires the stages (probes -> tracer -> trace file ->
timeline -> viz, and the VM); owns no logic of its own."""

from __future__ import annotations

import click

from kpath import __version__
from kpath.cli_convert import convert_cmd
from kpath.cli_doctor import doctor_cmd
from kpath.cli_probes import probes_cmd
from kpath.cli_trace import demo_group, trace_cmd
from kpath.cli_validate import validate_cmd
from kpath.cli_view import export_cmd, replay_cmd
from kpath.cli_vm import vm_group


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


def main() -> None:
    cli(prog_name="kpath")
