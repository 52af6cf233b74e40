"""Filter validation, BPF compile flags, and decoding of kernel records.

The RawEvent records here are synthetic, built in code."""

from __future__ import annotations

import socket
import struct

import pytest

from probes.catalog import BY_NAME
from probes.resolve import Resolved
from tracer.capture.bcc import AddressMap, KernelFeatures, bpf_cflags, bpf_source_text
from tracer.capture.record import (
    HAS_ACK,
    HAS_ARG3,
    HAS_FLAGS,
    HAS_LEN,
    HAS_SEQ,
    HAS_TUPLE,
    RawEvent,
    decode,
)
from tracer.events import Context, Kind
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
    flags = bpf_cflags(KernelFeatures.detect("6.1.0-56-amd64"), buffer_pages=64)
    assert flags[:2] == ["-DKPATH_RINGBUF=1", "-DKPATH_RINGBUF_PAGES=64"]
    assert flags[2].startswith("-I") and flags[2].endswith("tracer/capture")
    assert all(f.startswith("-Wno-") for f in flags[3:])
    assert bpf_cflags(KernelFeatures.detect("5.4.0"))[0] == "-DKPATH_RINGBUF=0"
    for bad in (0, 3, 1000):
        with pytest.raises(ValueError, match="power of two"):
            bpf_cflags(KernelFeatures.detect("6.1.0"), buffer_pages=bad)


def test_bpf_source_reads_config_from_maps() -> None:
    src = bpf_source_text()
    assert "BPF_ARRAY(config, struct kp_config, 1)" in src
    for capture in ("kp_syscall_fd", "kp_sock", "kp_sock_skb_cb", "kp_skb_l3_1", "kp_synack_req",
                    "kp_datagram_iter", "kp_return"):
        assert f"int {capture}(struct pt_regs *ctx)" in src


def test_kernel_features() -> None:
    assert KernelFeatures.detect("6.1.0-56-amd64").func_ip
    assert not KernelFeatures.detect("5.10.0-30-amd64").func_ip
    assert KernelFeatures.detect("5.10.0").ringbuf


def _amap() -> AddressMap:
    return AddressMap([
        Resolved(BY_NAME["__tcp_transmit_skb"], "__tcp_transmit_skb", 0xFFFFFFFF81000000),
        Resolved(BY_NAME["__sys_sendto"], "__sys_sendto", 0xFFFFFFFF82000000),
        Resolved(BY_NAME["tcp_push"], None, reason="inlined"),
    ])


def _be(addr: str) -> int:
    return int(struct.unpack("=I", socket.inet_aton(addr))[0])


def test_address_map_tolerates_small_offsets_only() -> None:
    amap = _amap()
    assert amap.lookup(0xFFFFFFFF81000000).spec.name == "__tcp_transmit_skb"  # type: ignore[union-attr]
    assert amap.lookup(0xFFFFFFFF81000004).spec.name == "__tcp_transmit_skb"  # type: ignore[union-attr]
    assert amap.lookup(0xFFFFFFFF81000100) is None
    assert amap.lookup(0x1000) is None


def test_decode_transmit_record() -> None:
    raw = RawEvent()
    raw.ts, raw.ip, raw.sk, raw.skb = 123, 0xFFFFFFFF81000000, 0xAA, 0xBB
    raw.tgid, raw.tid, raw.cpu = 5, 6, 1
    raw.saddr, raw.daddr = _be("127.0.0.1"), _be("127.0.0.2")
    raw.sport, raw.dport = 40000, 10086
    raw.seq, raw.end_seq, raw.ack, raw.length, raw.tcp_flags = 1, 3, 9, 2, 0x18
    raw.has = HAS_TUPLE | HAS_SEQ | HAS_LEN | HAS_FLAGS | HAS_ACK
    raw.ctx, raw.vec = 1, 3
    raw.comm = b"ksoftirqd/1"
    ev = decode(raw, _amap().spec)
    assert ev is not None
    assert ev.probe == "__tcp_transmit_skb" and ev.kind == Kind.ENTRY
    assert (ev.saddr, ev.sport, ev.daddr, ev.dport) == ("127.0.0.1", 40000, "127.0.0.2", 10086)
    assert (ev.seq, ev.end_seq, ev.ack, ev.length, ev.flags_text) == (1, 3, 9, 2, "PSH|ACK")
    assert ev.ctx == Context.KSOFTIRQD and ev.softirq == "NET_RX"


def test_decode_syscall_length_and_return() -> None:
    raw = RawEvent()
    raw.ip, raw.arg3, raw.has, raw.comm = 0xFFFFFFFF82000000, 2, HAS_ARG3, b"chat-client"
    ev = decode(raw, _amap().spec)
    assert ev is not None and ev.length == 2 and ev.saddr is None and ev.ctx == Context.TASK
    raw.kind, raw.ret, raw.has = 1, -11, 0x08
    ev = decode(raw, _amap().spec)
    assert ev is not None and ev.kind == Kind.RETURN and ev.ret == -11 and ev.length is None


def test_decode_drops_unknown_addresses() -> None:
    raw = RawEvent()
    raw.ip = 0xDEAD
    assert decode(raw, _amap().spec) is None


def test_every_capture_kind_has_a_bpf_routine() -> None:
    from probes.catalog import CATALOG, Capture
    from tracer.capture.base import BPF_SOURCES, capture_fn

    bcc_src = bpf_source_text()
    core_src = BPF_SOURCES["core"].read_text()
    for capture in Capture:
        assert f"int {capture_fn(capture)}(struct pt_regs *ctx)" in bcc_src, capture
        assert f'SEC("?kprobe")\nint {capture_fn(capture)}(struct pt_regs *ctx)' in core_src
    assert {spec.capture for spec in CATALOG} == set(Capture)
