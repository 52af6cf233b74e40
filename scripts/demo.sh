#!/usr/bin/env bash
# Sets everything up and runs the main job: builds (or reuses) the validation
# VM, traces the seeds' hello/hi chat inside it, brings the trace back and
# writes the text timeline and the sequence diagram into ./out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
KPATH=.venv/bin/kpath
$KPATH vm build
$KPATH vm run -- kpath trace -o out/hello_hi.kpath -- kpath demo chat
$KPATH replay --no-color out/hello_hi.kpath > out/hello_hi.txt
$KPATH export out/hello_hi.kpath -f svg -o out/hello_hi.svg
echo "demo: wrote out/hello_hi.kpath, out/hello_hi.txt, out/hello_hi.svg" >&2
