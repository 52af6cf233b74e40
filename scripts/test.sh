#!/usr/bin/env bash
# Sets everything up and runs the whole test suite: lint, types, unit,
# replay, live tracing of this host (tests/live) and the VM tests (which
# build the cached validation images and boot them under QEMU). This is what
# CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest (unit, replay, live, vm)" >&2
# The export tests drive chromium, plantuml and node: here a missing tool
# fails its test instead of skipping it.
export KPATH_REQUIRE_TOOLS=1
KPATH_REQUIRE_VM=1 KPATH_REQUIRE_LIVE=1 .venv/bin/pytest -v -rs "$@"
