#!/usr/bin/env bash
# Installs what kpath needs on a Debian 12 machine (as root, no sudo needed),
# builds the CO-RE BPF object and creates .venv: Debian's python3 with system
# site packages, so that the venv sees Debian's BCC module (python3-bpfcc).
# Never `pip install bcc`: that PyPI name is an unrelated package.
#
#   scripts/setup.sh           what tracing, replay, export and the VM need
#   scripts/setup.sh --tests   also what only the test suite uses (chromium,
#                              plantuml and a JRE, node, pyspark: about 1.5 GB)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[[ ${1:-} == --tests ]] && with_tests=1

APT_PACKAGES=(python3 python3-venv python3-pip graphviz
              # CO-RE backend: libbpf at run time; clang, bpftool and the libbpf
              # headers build kpath.bpf.o once, here
              libbpf1 libbpf-dev clang llvm bpftool
              # BCC backend (kernels without BTF) and the validation VM
              python3-bpfcc qemu-system-x86 mmdebstrap mount e2fsprogs)
if ((with_tests)); then
    # export tests: render PlantUML, open the HTML export, decode its screenshot
    APT_PACKAGES+=(plantuml chromium python3-pil fonts-dejavu-core
                   # the debuginfo tests cross-check the DWARF facts with gdb
                   gdb
                   # the Spark example's test runs pyspark (a dev extra) on Java 17
                   openjdk-17-jre-headless
                   # the pcapng export is read back by Wireshark's tshark
                   tshark)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
# Mermaid's parser runs under node. A machine may already have node with its
# own npm (NodeSource's nodejs bundles it, and conflicts with Debian's npm):
# only install Debian's when there is no npm at all.
if ((with_tests)) && ! command -v npm >/dev/null 2>&1; then
    missing+=(nodejs npm)
fi
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: apt-get install ${missing[*]}" >&2
    # wireshark-common asks whether non-root users may capture: no (and no prompt).
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# The CO-RE object, compiled once from a kernel's BTF (portable to others).
if [[ -r /sys/kernel/btf/vmlinux || -n ${KPATH_VMLINUX_BTF:-} ]]; then
    bash scripts/build-bpf.sh
else
    echo "setup: this kernel has no BTF: no CO-RE object (set KPATH_VMLINUX_BTF=FILE to" \
         "build it from another kernel's BTF); the BCC backend remains" >&2
fi

if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv (Debian python3 + system site packages)" >&2
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.kpath-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    echo "setup: pip install -e .[dev,fast]" >&2
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev,fast]'
    touch "$stamp"
fi
# Mermaid's parser for the export tests, in a project-local folder (ignored
# by git); package.json pins the versions.
mm=tools/mermaid-check
if ((with_tests)) && [[ ! -d $mm/node_modules/mermaid || $mm/package.json -nt $mm/node_modules ]]; then
    echo "setup: npm install in $mm" >&2
    (cd "$mm" && npm install --no-audit --no-fund --loglevel=error)
    touch "$mm/node_modules"
fi
# Byte-code of the project's modules: with PYTHONDONTWRITEBYTECODE set
# nothing caches it, and every kpath command
# compiled ~50 modules again (0.07-0.1 s of `replay --stats`' start-up).
# A stale file is recompiled in memory as before.
.venv/bin/python -m compileall -q kpath tracer probes viz vm >/dev/null || true
echo "setup: ready (.venv/bin/kpath)" >&2
