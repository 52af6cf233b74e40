#!/usr/bin/env bash
# Rebuilds the DWARF fixtures of tests/debuginfo from fixture*.c, fixture.h
# and fixture_asm.S (Debian 12: gcc 12.2, binutils 2.40). The tests derive
# the expected source lines from the sources, the states from the
# attributes in them; rebuilt with another gcc, check that they still pass.
set -euo pipefail
cd "$(dirname "$0")"
flags=(-O2 -nostdlib -static -fno-pie -no-pie -fno-asynchronous-unwind-tables
       -ffile-prefix-map="$PWD"=. -Wl,--build-id=sha1)
for v in 5 4; do
    gcc "${flags[@]}" -gdwarf-$v -o fixture-dwarf$v.elf fixture.c fixture2.c fixture_asm.S
done
# The same program without debug info.
objcopy --strip-debug fixture-dwarf5.elf fixture-nodebug.elf
ls -l fixture-*.elf
