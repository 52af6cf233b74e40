#!/usr/bin/env bash
# Sets everything up and runs the main job, as root (no sudo needed):
# 1. traces the seeds' hello/hi chat live on this machine with the CO-RE
#    backend (no headers, no compiler; tracepoints where the kernel has no
#    kprobes), when this kernel has BTF;
# 2. builds (or reuses) the validation VM and traces the same chat inside
#    it, where the stock Debian kernel has kprobes: the whole path.
# Writes the traces, text timelines and sequence diagrams into ./out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
KPATH=.venv/bin/kpath
if $KPATH doctor > out/doctor.txt 2>&1; then
    $KPATH trace -o out/host_chat.kpath -- $KPATH demo chat
    $KPATH replay --no-color out/host_chat.kpath > out/host_chat.txt
    $KPATH export out/host_chat.kpath -f svg -o out/host_chat.svg
    echo "demo: wrote out/host_chat.{kpath,txt,svg} (this host, live)" >&2
else
    echo "demo: this host cannot trace live (out/doctor.txt says why); the VM can" >&2
fi
$KPATH vm build
$KPATH vm run -- kpath trace -o out/hello_hi.kpath -- kpath demo chat
$KPATH replay --no-color out/hello_hi.kpath > out/hello_hi.txt
$KPATH export out/hello_hi.kpath -f svg -o out/hello_hi.svg
echo "demo: wrote out/hello_hi.{kpath,txt,svg} (the VM, kprobes)" >&2
