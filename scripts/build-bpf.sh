#!/usr/bin/env bash
# Builds kpath's CO-RE BPF object (tracer/capture/kpath.bpf.o) from
# tracer/capture/kpath.bpf.c. Run at set-up time (scripts/setup.sh), never at
# trace time: the object is portable across kernels through CO-RE relocations.
#
# Needs clang, bpftool (for vmlinux.h) and libbpf-dev (bpf_helpers.h). The
# type definitions come from a kernel's BTF: this machine's
# /sys/kernel/btf/vmlinux, or KPATH_VMLINUX_BTF=FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
src=tracer/capture/kpath.bpf.c
obj=tracer/capture/kpath.bpf.o
gen=build/bpf
btf=${KPATH_VMLINUX_BTF:-/sys/kernel/btf/vmlinux}

if [[ -f $obj && $obj -nt $src && $obj -nt tracer/capture/kp_event.h \
      && $obj -nt scripts/build-bpf.sh && -z ${KPATH_FORCE_BPF_BUILD:-} ]]; then
    exit 0
fi
for tool in clang bpftool llvm-strip; do
    command -v "$tool" >/dev/null || { echo "build-bpf: $tool is missing" >&2; exit 1; }
done
if [[ ! -r $btf ]]; then
    echo "build-bpf: no kernel BTF at $btf (set KPATH_VMLINUX_BTF=FILE)" >&2
    exit 1
fi
mkdir -p "$gen"
bpftool btf dump file "$btf" format c > "$gen/vmlinux.h.tmp"
mv "$gen/vmlinux.h.tmp" "$gen/vmlinux.h"
clang -target bpf -D__TARGET_ARCH_x86 -O2 -g -Wall -Werror \
    -I "$gen" -I tracer/capture -I /usr/include/x86_64-linux-gnu \
    -c "$src" -o "$obj.tmp"
# Keep .BTF and .BTF.ext (CO-RE needs them), drop DWARF: 790 KB -> ~120 KB.
llvm-strip -g "$obj.tmp"
mv "$obj.tmp" "$obj"
echo "build-bpf: built $obj" >&2
