"""Test-suite policy: in CI (KPATH_REQUIRE_VM=1, set by scripts/test.sh) a VM
test that would skip fails instead, so a green run means the VM really ran."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (
        report.skipped
        and os.environ.get("KPATH_REQUIRE_VM") == "1"
        and item.get_closest_marker("vm") is not None
    ):
        report.outcome = "failed"
        report.longrepr = f"VM test skipped but KPATH_REQUIRE_VM=1: {report.longrepr}"
