"""Filter validation, BPF compile flags, and how BCC's addresses find their
probe (the decoding of records is tests/unit/test_record_decode.py)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from probes.catalog import BY_NAME
from probes.resolve import KernelSymbols, Resolved
from tracer.capture.bcc import (
    BccBackend,
    KernelFeatures,
    bpf_cflags,
    bpf_source_text,
    probe_statuses,
    probe_table,
    skip_addresses,
)
from tracer.filters import FilterError, make_filters


def test_filters_validate() -> None:
    f = make_filters(pid=42, comm="nginx", port=8080, command=False)
    assert (f.pid, f.comm, f.port) == (42, "nginx", 8080)
    for kwargs, msg in [
        ({"pid": 0}, "valid process id"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"comm": "a-very-long-task-name"}, "15 bytes"),
        ({"comm": 'x"); bpf_trace_printk("'}, "15 bytes"),
    ]:
        args = {"pid": None, "comm": None, "port": None, "command": False, **kwargs}
        with pytest.raises(FilterError, match=msg):
            make_filters(**args)  # type: ignore[arg-type]
    with pytest.raises(FilterError, match="cannot be combined"):
        make_filters(pid=1, comm=None, port=None, command=True)


def test_cflags_carry_only_kernel_capabilities() -> None:
    flags = bpf_cflags(KernelFeatures.detect("6.1.0-56-amd64"), buffer_pages=64, cpus=2)
    # 64 pages hold 2048 records of 128 bytes: 2 CPUs wake the reader at a quarter.
    assert flags[:4] == ["-DKPATH_RINGBUF=1", "-DKPATH_RINGBUF_PAGES=64",
                         "-DKPATH_WAKEUP_RECORDS=256", "-DKPATH_MARK_RUNS=1"]
    assert flags[4].startswith("-I") and flags[4].endswith("tracer/capture")
    assert all(f.startswith("-Wno-") for f in flags[5:])
    assert "-DKPATH_MARK_RUNS=0" in bpf_cflags(KernelFeatures.detect("6.1.0"), mark_runs=False)
    assert bpf_cflags(KernelFeatures.detect("5.4.0"))[0] == "-DKPATH_RINGBUF=0"
    for bad in (0, 3, 1000):
        with pytest.raises(ValueError, match="power of two"):
            bpf_cflags(KernelFeatures.detect("6.1.0"), buffer_pages=bad)


def test_bpf_source_reads_config_from_maps() -> None:
    src = bpf_source_text()
    assert "BPF_ARRAY(config, struct kp_config, 1)" in src
    for capture in ("kp_syscall_fd", "kp_sock", "kp_sock_skb_cb", "kp_skb_l3_1", "kp_synack_req",
                    "kp_datagram_iter", "kp_return"):
        assert f"KPROBE_FN({capture})" in src


def test_kernel_features() -> None:
    assert KernelFeatures.detect("6.1.0-56-amd64").func_ip
    assert not KernelFeatures.detect("5.10.0-30-amd64").func_ip
    assert KernelFeatures.detect("5.10.0").ringbuf


def test_bcc_addresses_find_their_probe_with_small_offsets_only() -> None:
    resolved = [
        Resolved(BY_NAME["__tcp_transmit_skb"], "__tcp_transmit_skb", 0xFFFFFFFF81000000),
        Resolved(BY_NAME["tcp_push"], None, reason="inlined"),
        Resolved(BY_NAME["__sys_sendto"], "__sys_sendto", 0xFFFFFFFF80000000),
    ]
    statuses = probe_statuses(resolved, {})
    table = probe_table(resolved, statuses)
    assert table.names == ("__tcp_transmit_skb", "tcp_push", "__sys_sendto")
    ips = np.array([0xFFFFFFFF81000000, 0xFFFFFFFF81000004, 0xFFFFFFFF81000100, 0x1000,
                    0xFFFFFFFF80000010, 0xFFFFFFFF80000011], np.uint64)
    assert table.lookup(ips).tolist() == [0, 0, -1, -1, 2, -1]
    assert table.length_arg3.tolist() == [False, False, True]
    # A probe whose attach failed is in the dictionary but finds no records.
    failed = probe_table(resolved, probe_statuses(resolved, {"__sys_sendto": "EBUSY"}))
    assert failed.lookup(ips[4:5]).tolist() == [-1]


class SyntheticSkipVars:
    """A double of BCC's skip_vars table (kpath_bcc.c's struct skip_vars)."""

    def __init__(self) -> None:
        self.rows: dict[int, SyntheticSkipVars.Leaf] = {}

    def __setitem__(self, key: ctypes.c_int, leaf: SyntheticSkipVars.Leaf) -> None:
        self.rows[key.value] = leaf

    class Leaf(ctypes.Structure):
        _fields_ = [("per_cpu_offset", ctypes.c_uint64), ("prog_active", ctypes.c_uint64),
                    ("current_kprobe", ctypes.c_uint64)]

    Key = ctypes.c_int


def test_bcc_reads_the_kernels_skip_state_at_kallsyms_addresses() -> None:
    kallsyms = ["ffffffffb161cb60 D __per_cpu_offset", "000000000002c570 A bpf_prog_active",
                "000000000001ff18 A current_kprobe", "ffffffff81000000 T tcp_sendmsg"]
    assert skip_addresses(KernelSymbols.parse(kallsyms)) == (0xFFFFFFFFB161CB60, 0x2C570,
                                                             0x1FF18)
    # no kprobes: no current_kprobe; no data symbols (CONFIG_KALLSYMS_ALL off): none
    assert skip_addresses(KernelSymbols.parse(kallsyms[:2])) == (0xFFFFFFFFB161CB60, 0x2C570, 0)
    assert skip_addresses(KernelSymbols.parse(kallsyms[3:])) is None
    be = BccBackend.__new__(BccBackend)
    table = SyntheticSkipVars()
    be._bpf = {"skip_vars": table}
    be.watch_kernel((0xFFFFFFFFB161CB60, 0x2C570, 0x1FF18))
    assert {k: (leaf.per_cpu_offset, leaf.prog_active, leaf.current_kprobe)
            for k, leaf in table.rows.items()} == {0: (0xFFFFFFFFB161CB60, 0x2C570, 0x1FF18)}


def test_every_capture_kind_has_a_bpf_routine() -> None:
    from probes.catalog import CATALOG, Capture
    from tracer.capture.base import BPF_SOURCES, capture_fn

    bcc_src = bpf_source_text()
    core_src = BPF_SOURCES["core"].read_text()
    for capture in Capture:
        assert f"KPROBE_FN({capture_fn(capture)})" in bcc_src, capture
        # The CO-RE object generates kp_KIND (and its fentry copies) from
        # one CAPTURES entry per kind (the built object's programs:
        # test_core_object.py).
        assert f"    X({capture.value}, " in core_src, capture
    assert {spec.capture for spec in CATALOG} == set(Capture)
