"""How each probe is observed on a kernel (fentry, kprobe, tp_btf, missing and why),
and that the Python side agrees with the CO-RE object's C source. Kernel
capabilities here are synthetic inputs, named as such."""

from __future__ import annotations

import re

from probes.catalog import BY_NAME, CATALOG, PROFILES, ProbeSpec, select
from probes.resolve import Resolved
from tracer.capture.base import BPF_SOURCES, choose_backend, coverage
from tracer.capture.plan import HOOK_PROGRAMS, TP_HOOKS, KernelCaps, all_tracepoints, plan
from tracer.events import ProbeStatus

ALL_TPS = dict.fromkeys(all_tracepoints(), True)


def test_hook_order_matches_the_c_enum() -> None:
    src = BPF_SOURCES["core"].read_text()
    body = re.search(r"enum tp_hook \{(.*?)\};", src, re.S)
    assert body is not None
    names = [n.strip() for n in body.group(1).split(",") if n.strip()]
    assert names[-1] == "TP_COUNT"
    expected = {"sys_sendto": "TP_SYS_SENDTO", "skb_copy_datagram": "TP_SKB_COPY_DATAGRAM"}
    assert len(names) - 1 == len(TP_HOOKS)
    for (hook, _, _), cname in zip(TP_HOOKS, names, strict=False):
        assert cname == expected.get(hook, "TP_" + hook.upper()), (hook, cname)


def test_every_hook_program_and_tracepoint_exists_in_the_object_source() -> None:
    src = BPF_SOURCES["core"].read_text()
    for _hook, progs, tps in TP_HOOKS:
        for prog in progs:
            assert re.search(rf"BPF_PROG\({prog},", src), prog
        for tp in tps:
            assert f'tp_btf/{tp}")' in src, tp
    hooks = {spec.tracepoint.hook for spec in CATALOG if spec.tracepoint}
    assert hooks == set(HOOK_PROGRAMS)


def _arity(specs: list[ProbeSpec], n: int = 3) -> dict[str, int | None]:
    return {s.name: n for s in specs}


def test_fentry_first_where_the_kernel_allows_it() -> None:
    _, specs = select("default")
    resolved = [Resolved(s, s.name, 0x1000 + i) for i, s in enumerate(specs)]
    arity = {**_arity(specs), "__skb_datagram_iter": 7, "ip_rcv": None}
    caps = KernelCaps(kprobes=True, tracepoints=ALL_TPS, fentry=True, arity=arity)
    by = {p.spec.name: p for p in plan(specs, resolved, caps)}
    assert by["__sys_sendto"].attachments == ["fentry:__sys_sendto", "fexit:__sys_sendto"]
    assert by["tcp_push"].attachments == ["fentry:tcp_push"]
    # Too many arguments for a trampoline, not in BTF, in a module: kprobes.
    assert by["__skb_datagram_iter"].way == "kprobe"
    assert by["ip_rcv"].way == "kprobe"
    assert by["veth_xmit"].attachments == ["kprobe:veth_xmit"]
    # A probe whose fentry already failed goes the next way.
    again = plan(specs, resolved, caps, {"tcp_push": "fentry failed (EBUSY)"})
    assert next(p for p in again if p.spec.name == "tcp_push").way == "kprobe"


def test_fentry_only_reports_why_a_function_has_none() -> None:
    names = ["tcp_push", "__skb_datagram_iter", "__dev_queue_xmit"]
    specs = [BY_NAME[n] for n in names]
    resolved = [Resolved(s, s.name, 0x1000) for s in specs]
    caps = KernelCaps(kprobes=False, tracepoints=ALL_TPS, fentry=True,
                      arity={"tcp_push": 5, "__skb_datagram_iter": 7, "__dev_queue_xmit": 7},
                      no_kprobes_why="kprobes not used (--attach-mode fentry)")
    by = {p.spec.name: p for p in plan(specs, resolved, caps)}
    assert by["tcp_push"].way == "fentry"
    # No trampoline for 7 arguments, no kprobes by choice: its tracepoint,
    # else missing with both reasons.
    assert by["__dev_queue_xmit"].attachments == ["tp_btf:net_dev_queue"]
    assert by["__skb_datagram_iter"].attachments == ["tp_btf:skb_copy_datagram_iovec"]
    (miss,) = plan([BY_NAME["__skb_datagram_iter"]], resolved[1:2],
                   KernelCaps(kprobes=False, tracepoints={}, fentry=True, arity=caps.arity,
                              no_kprobes_why=caps.no_kprobes_why))
    assert miss.way is None and miss.reason == "no-fentry"
    assert "7 arguments" in (miss.detail or "") and "--attach-mode fentry" in (miss.detail or "")


def test_kprobes_first_when_the_kernel_has_them() -> None:
    _, specs = select("default")
    resolved = [Resolved(s, s.name, 0x1000 + i) for i, s in enumerate(specs)]
    planned = plan(specs, resolved, KernelCaps(kprobes=True, tracepoints=ALL_TPS))
    assert all(p.way == "kprobe" for p in planned)
    sendto = next(p for p in planned if p.spec.name == "__sys_sendto")
    assert sendto.attachments == ["kprobe:__sys_sendto", "kretprobe:__sys_sendto"]
    assert [p.index for p in planned] == list(range(len(specs)))


def test_a_renamed_function_falls_back_to_its_tracepoint() -> None:
    spec = BY_NAME["__netif_receive_skb_core"]
    res = [Resolved(spec, None, reason="renamed", detail="only .constprop copies")]
    (p,) = plan([spec], res, KernelCaps(kprobes=True, tracepoints=ALL_TPS))
    assert p.way == "tp_btf" and p.attachments == ["tp_btf:netif_receive_skb"]
    (p,) = plan([spec], res, KernelCaps(kprobes=True, tracepoints={}))
    assert p.way is None and p.reason == "renamed" and "net:netif_receive_skb" in (p.detail or "")


def test_without_kprobes_tracepoints_or_a_reason() -> None:
    names = ["__sys_sendto", "__tcp_transmit_skb", "sock_def_readable", "__dev_queue_xmit"]
    specs = [BY_NAME[n] for n in names]
    six_one = {**ALL_TPS, "sk_data_ready": False}  # sock:sk_data_ready came in 6.3
    by = {p.spec.name: p for p in plan(specs, None, KernelCaps(kprobes=False,
                                                                   tracepoints=six_one))}
    assert by["__sys_sendto"].attachments == ["tp_btf:sys_enter", "tp_btf:sys_exit"]
    assert by["__dev_queue_xmit"].attachments == ["tp_btf:net_dev_queue"]
    assert by["__tcp_transmit_skb"].reason == "no-kprobes"
    assert by["sock_def_readable"].reason == "no-tracepoint"
    assert "6.3" in (by["sock_def_readable"].detail or "")


def test_coverage_per_layer() -> None:
    sts = [ProbeStatus("a", "tcp", "tx", True), ProbeStatus("b", "tcp", "tx", False),
           ProbeStatus("c", "ip", "tx", False), ProbeStatus("d", "syscall", "tx", True)]
    assert coverage(sts) == {"syscall": "full", "tcp": "partial", "ip": "none"}


def test_auto_backend_follows_btf(tmp_path) -> None:  # type: ignore[no-untyped-def]
    btf = tmp_path / "vmlinux"
    assert choose_backend("auto", btf) == "bcc"
    btf.write_bytes(b"")
    assert choose_backend("auto", btf) == "core"
    assert choose_backend("bcc", btf) == "bcc"


def test_default_profile_reaches_syscall_and_device_without_kprobes() -> None:
    specs = [BY_NAME[n] for n in PROFILES["default"]]
    planned = plan(specs, None, KernelCaps(kprobes=False, tracepoints=ALL_TPS))
    layers = {str(p.spec.layer) for p in planned if p.way}
    assert {"syscall", "socket", "tcp", "device"} <= layers


def test_tracepoints_only_by_choice_says_so() -> None:
    spec = BY_NAME["__tcp_transmit_skb"]
    res = [Resolved(spec, spec.name, 0x1000)]
    caps = KernelCaps(kprobes=False, tracepoints=ALL_TPS,
                      no_kprobes_why="kprobes not used (--no-kprobes)")
    (p,) = plan([spec], res, caps)
    assert p.way is None and p.reason == "no-kprobes" and "--no-kprobes" in (p.detail or "")


def test_no_kprobes_with_bcc_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from kpath.cli import cli

    res = CliRunner().invoke(cli, ["trace", "--backend", "bcc", "--no-kprobes",
                                   "--duration", "1"])
    assert res.exit_code == 2 and "--no-kprobes needs" in res.output


def test_fentry_mode_with_bcc_is_a_usage_error() -> None:
    from click.testing import CliRunner

    from kpath.cli import cli

    res = CliRunner().invoke(cli, ["trace", "--backend", "bcc", "--attach-mode", "fentry",
                                   "--duration", "1"])
    assert res.exit_code == 2 and "--attach-mode fentry needs" in res.output
