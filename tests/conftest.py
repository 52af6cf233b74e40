"""Test-suite policy: in CI (KPATH_REQUIRE_VM=1 and KPATH_REQUIRE_LIVE=1, set
by scripts/test.sh) a VM or live-host test that would skip fails instead, so a
green run means the VM and the live trace really ran."""

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
    if not report.skipped:
        return
    for marker, env in (("vm", "KPATH_REQUIRE_VM"), ("live", "KPATH_REQUIRE_LIVE")):
        if os.environ.get(env) == "1" and item.get_closest_marker(marker) is not None:
            report.outcome = "failed"
            report.longrepr = f"{marker} test skipped but {env}=1: {report.longrepr}"
