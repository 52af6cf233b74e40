#!/usr/bin/env bash
# Fetches the debug vmlinux (the kernel ELF with DWARF) of a Debian 12 kernel
# into kpath's cache, for `kpath probes --vmlinux` and the debuginfo tests:
#
#     ${KPATH_CACHE:-~/.cache/kpath}/debuginfo/vmlinux-RELEASE
#
# Usage: scripts/fetch-debug-vmlinux.sh [--no-download] [RELEASE]
#   RELEASE        e.g. 6.1.0-57-amd64 (or 6.12.117+deb12-amd64). Default: the
#                  kernel of the 6.1 validation VM image when one is built,
#                  else the one Debian's linux-image-amd64 installs now (what
#                  a fresh VM build gets).
#   --no-download  only say where the cached file is; exit 3 if it is not there.
# Prints the vmlinux path on stdout; progress goes to stderr.
#
# Idempotent and cached: a vmlinux already in the cache is reused at once.
# Otherwise apt-get downloads linux-image-RELEASE-dbg (about 860 MB), only
# ./usr/lib/debug/boot/vmlinux-RELEASE is extracted (by a rename, so a cut
# download never leaves a half file), and the .deb is deleted. A lock
# serialises concurrent runs. Needs apt (and root only when the package lists
# must be updated first).
set -euo pipefail

cache="${KPATH_CACHE:-$HOME/.cache/kpath}/debuginfo"

download=1
if [[ ${1:-} == --no-download ]]; then
    download=0
    shift
fi
release="${1:-}"
if [[ -z $release ]]; then
    # The 6.1 validation VM's image (image/ before images were per kernel).
    for stamp in "${KPATH_CACHE:-$HOME/.cache/kpath}"/vm/{image-6.1,image}/image.json; do
        if [[ -f $stamp ]]; then
            release=$(sed -n 's/.*"kernel_release": *"\([^"]*\)".*/\1/p' "$stamp")
            break
        fi
    done
fi
if [[ -z $release ]]; then
    dep=$(apt-cache depends linux-image-amd64 2>/dev/null \
          | sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1)
    if [[ -z $dep && $EUID -eq 0 && $download -eq 1 ]]; then
        apt-get update -q >&2
        dep=$(apt-cache depends linux-image-amd64 2>/dev/null \
              | sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1)
    fi
    release="$dep"
fi
if [[ ! $release =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
    echo "fetch-debug-vmlinux: cannot tell the kernel release (give it: $0 6.1.0-57-amd64)" >&2
    exit 1
fi

out="$cache/vmlinux-$release"
if [[ -s $out ]]; then
    echo "$out"
    exit 0
fi
if ((download == 0)); then
    echo "fetch-debug-vmlinux: $out is not in the cache (run without --no-download)" >&2
    exit 3
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -s $out ]]; then  # another run fetched it while we waited
    echo "$out"
    exit 0
fi

pkg="linux-image-$release-dbg"
if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]]; then
        apt-get update -q >&2
    fi
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
        echo "fetch-debug-vmlinux: no package $pkg in the apt lists (apt-get update as root?)" >&2
        exit 1
    fi
fi

# The .deb (~860 MB) and the vmlinux (~1 GB) side by side, with room to spare.
need_kb=$((4 * 1024 * 1024))
free_kb=$(df -Pk "$cache" | awk 'NR == 2 { print $4 }')
if ((free_kb < need_kb)); then
    echo "fetch-debug-vmlinux: need 4 GiB free in $cache, have $((free_kb / 1024)) MiB" \
         "(set KPATH_CACHE elsewhere)" >&2
    exit 1
fi

work=$(mktemp -d "$cache/.fetch-$release.XXXXXX")
trap 'rm -rf "$work"' EXIT
# apt's sandbox user (_apt) cannot enter a cache under /root: as root,
# download as root instead of warning about it.
sandbox=()
if [[ $EUID -eq 0 ]]; then
    sandbox=(-o APT::Sandbox::User=root)
fi
echo "fetch-debug-vmlinux: apt-get download $pkg (about 860 MB)" >&2
(cd "$work" && apt-get "${sandbox[@]}" download -q "$pkg" >&2)
deb=$(find "$work" -maxdepth 1 -name '*.deb' -print -quit)
if [[ -z $deb ]]; then
    echo "fetch-debug-vmlinux: apt-get download left no .deb" >&2
    exit 1
fi
member="./usr/lib/debug/boot/vmlinux-$release"
echo "fetch-debug-vmlinux: extracting $member" >&2
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" "$member"
rm -f "$deb"
if [[ $(head -c 4 "$work/$member" | od -An -c | tr -d ' ') != '177ELF' ]]; then
    echo "fetch-debug-vmlinux: $member in $pkg is not an ELF file" >&2
    exit 1
fi
mv "$work/$member" "$out"
echo "fetch-debug-vmlinux: $out ($(du -h "$out" | cut -f1))" >&2
echo "$out"
