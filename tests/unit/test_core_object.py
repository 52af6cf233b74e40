"""The built CO-RE object, opened (not loaded: no root, no kernel) through
the libbpf boundary: its own BTF agrees with the Python mirrors, every
program the plan can switch on exists, and libbpf's failures come back as
kpath's errors with their message."""

from __future__ import annotations

import ctypes
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from probes.catalog import CATALOG, Returns
from tracer.capture import libbpf
from tracer.capture.base import capture_fn, copy_fn, return_fn
from tracer.capture.core import OBJECT, KpConfig
from tracer.capture.errors import LoadError, PrerequisiteError
from tracer.capture.plan import HOOK_PROGRAMS, TP_HOOKS, context_programs
from tracer.capture.record import RAW_DTYPE, check_layout

pytestmark = pytest.mark.skipif(not OBJECT.is_file(),
                                reason="kpath.bpf.o not built (scripts/setup.sh builds it)")


@pytest.fixture
def obj():  # type: ignore[no-untyped-def]
    o = libbpf.BpfObject(OBJECT)
    yield o
    o.close()


def test_record_and_config_layouts_match_the_object_btf(obj: libbpf.BpfObject) -> None:
    size, members = obj.btf_struct("kp_event")
    check_layout(RAW_DTYPE, OBJECT.name, size, [(m.name, m.offset) for m in members])
    size, members = obj.btf_struct("kp_config")
    check_layout(KpConfig, OBJECT.name, size, [(m.name, m.offset) for m in members])


def test_a_different_layout_is_refused(obj: libbpf.BpfObject) -> None:
    assert RAW_DTYPE.names is not None
    names = ["length" if n == "ack" else "ack" if n == "length" else n for n in RAW_DTYPE.names]
    shifted = RAW_DTYPE.fields
    assert shifted is not None
    swapped = np.dtype({"names": names, "formats": [shifted[n][0] for n in RAW_DTYPE.names],
                        "offsets": [shifted[n][1] for n in RAW_DTYPE.names],
                        "itemsize": RAW_DTYPE.itemsize})
    size, members = obj.btf_struct("kp_event")
    with pytest.raises(LoadError, match="does not match"):
        check_layout(swapped, OBJECT.name, size, [(m.name, m.offset) for m in members])


def test_rodata_holds_the_config_and_the_hook_table(obj: libbpf.BpfObject) -> None:
    _, variables = obj.btf_datasec(".rodata")
    names = {v.name for v in variables}
    assert {"cfg", "tp_probe", "wakeup_bytes", "ret_probes", "frame_probes"} <= names
    addr, size = obj.rodata()
    offsets = {v.name: v.offset for v in variables}
    assert offsets["tp_probe"] + 4 * len(TP_HOOKS) <= size and addr


def test_every_program_the_plan_uses_exists(obj: libbpf.BpfObject) -> None:
    progs = {capture_fn(spec.capture) for spec in CATALOG} | {"kp_return", "kp_return_sock"}
    progs |= {p for ps in HOOK_PROGRAMS.values() for p in ps}
    progs |= {p for watch in (False, True) for p, _ in context_programs(watch)}
    for name in sorted(progs):
        obj.set_autoload(name, False)  # raises if the program is not there
    assert any(spec.ret is Returns.SOCK for spec in CATALOG)
    with pytest.raises(LoadError, match="no program"):
        obj.program("kp_no_such_program")


def test_every_catalog_probe_has_an_fentry_copy(obj: libbpf.BpfObject) -> None:
    """One fentry (fexit) program per probe of a kind: as many copies as the
    catalog has probes of that kind (or return), and no more are used."""
    need = Counter(capture_fn(spec.capture) for spec in CATALOG)
    need.update(fn for spec in CATALOG if (fn := return_fn(spec.ret)))
    for fn, n in need.items():
        for i in range(n):
            assert obj.has_program(copy_fn(fn, i)), copy_fn(fn, i)
        assert not obj.has_program(copy_fn(fn, n)), f"{fn}: more copies than probes"
    assert copy_fn("kp_sock", 2) == "fe_sock_2"
    assert copy_fn("kp_return_sock", 0) == "fx_return_sock_0"


def test_libbpf_errors_become_kpath_errors(tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="setup.sh"):
        libbpf.BpfObject(tmp_path / "missing.bpf.o")
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an ELF object at all")
    with pytest.raises(LoadError, match="cannot open") as info:
        libbpf.BpfObject(junk)
    assert info.value.log  # libbpf's own words are kept


def test_prog_info_mirror_matches_the_kernel_header(tmp_path: Path) -> None:
    """recursion_misses and the map's size are read at the offsets
    linux/bpf.h gives (checked by compiling against the header, not by
    trusting the mirror)."""
    import shutil
    import subprocess

    cc = shutil.which("clang") or shutil.which("cc")
    if cc is None or not Path("/usr/include/linux/bpf.h").is_file():
        pytest.skip("needs a C compiler and linux/bpf.h")
    src = tmp_path / "off.c"
    src.write_text('#include <stdio.h>\n#include <stddef.h>\n#include <linux/bpf.h>\n'
                   'int main(void){printf("%zu %zu %zu %zu\\n", offsetof(struct bpf_prog_info, '
                   'recursion_misses), sizeof(struct bpf_prog_info), '
                   'offsetof(struct bpf_map_info, max_entries), '
                   'offsetof(struct bpf_map_info, name)); return 0;}\n')
    exe = tmp_path / "off"
    subprocess.run([cc, str(src), "-o", str(exe)], check=True)
    off, size, max_entries, name = (
        int(v) for v in subprocess.run([str(exe)], capture_output=True, text=True,
                                       check=True).stdout.split())
    assert libbpf.ProgInfo.recursion_misses.offset == off
    assert ctypes.sizeof(libbpf.ProgInfo) <= size
    # The ring buffer's size is read from bpf_map_info too.
    assert (libbpf.MapInfo.max_entries.offset, libbpf.MapInfo.name.offset) == (max_entries, name)


def test_kernel_misses_become_losses_of_the_probe_a_program_serves() -> None:
    from tracer.capture.core import missed_losses

    serves = {"tp_net_dev_queue": ["__dev_queue_xmit"],
              "kp_sock": ["tcp_push", "tcp_write_xmit"], "tp_softirq_entry": []}
    counters = {"tp_net_dev_queue": 3, "kp_sock": 5, "tp_softirq_entry": 0}
    seen: dict[str, int] = {}
    got = missed_losses(serves, seen, counters.__getitem__)
    assert sorted(got, key=str) == sorted([("__dev_queue_xmit", 3), (None, 5)], key=str)
    assert missed_losses(serves, seen, counters.__getitem__) == []  # only new misses
    counters["tp_net_dev_queue"] = 4
    assert missed_losses(serves, seen, counters.__getitem__) == [("__dev_queue_xmit", 1)]
    # Kprobe links go through the same accounting, by link target; a kernel
    # that reports nothing (before 6.7) gives 0, never a loss.
    links = {"kprobe:tcp_sendmsg": ["tcp_sendmsg"], "kretprobe:tcp_sendmsg": ["tcp_sendmsg"]}
    link_missed = {"kprobe:tcp_sendmsg": 2, "kretprobe:tcp_sendmsg": 0}
    assert missed_losses(links, {}, link_missed.__getitem__) == [("tcp_sendmsg", 2)]
