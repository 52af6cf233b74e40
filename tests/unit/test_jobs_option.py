"""`--jobs N|auto`: what it accepts, and what auto picks."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kpath.cli_types import MAX_JOBS, Jobs
from tracer import workers as workers_module
from tracer.workers import auto_jobs


@click.command()
@click.option("--jobs", type=Jobs(), default="auto")
def _show(jobs: int | None) -> None:
    click.echo(repr(jobs))


@pytest.mark.parametrize(("arg", "want"), [
    ([], "None"), (["--jobs", "auto"], "None"), (["--jobs", "AUTO"], "None"),
    (["--jobs", "1"], "1"), (["--jobs", "2"], "2"), (["--jobs", str(MAX_JOBS)], str(MAX_JOBS)),
])
def test_jobs_accepted(arg: list[str], want: str) -> None:
    res = CliRunner().invoke(_show, arg)
    assert res.exit_code == 0, res.output
    assert res.output.strip() == want


@pytest.mark.parametrize("bad", ["0", "-1", str(MAX_JOBS + 1), "two", "1.5", ""])
def test_jobs_refused_in_one_line(bad: str) -> None:
    res = CliRunner().invoke(_show, ["--jobs", bad])
    assert res.exit_code == 2
    assert "Invalid value for '--jobs'" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("cpus", "want"), [(1, 1), (2, 2), (16, 2)])
def test_auto_jobs_by_cpus(monkeypatch: pytest.MonkeyPatch, cpus: int, want: int) -> None:
    monkeypatch.setattr(workers_module.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert auto_jobs() == want
