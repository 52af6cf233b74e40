"""Probe resolution against kallsyms text (synthetic symbol tables)."""

from __future__ import annotations

from probes.catalog import BY_NAME, PROFILES, UnknownProbe, select
from probes.resolve import KernelSymbols, resolve

SYNTHETIC_KALLSYMS = """\
ffffffff81001000 T __sys_sendto
ffffffff81002000 T tcp_sendmsg_locked
ffffffff81003000 t tcp_write_xmit
ffffffff81004000 t tcp_write_xmit.cold
ffffffff81005000 t __tcp_transmit_skb
ffffffff81006000 T ip_queue_xmit
ffffffff81007000 t __skb_datagram_iter.isra.0
ffffffff81008000 T __dev_queue_xmit
ffffffff81009000 d some_data
000000000002c570 A bpf_prog_active
ffffffffc0002000 b module_data	[loop]
ffffffffc0001000 t loopback_xmit\t[loop]
ffffffff8100a000 T ip_rcv
"""


def syms(blacklist: str = "") -> KernelSymbols:
    return KernelSymbols.parse(SYNTHETIC_KALLSYMS.splitlines(), blacklist.splitlines())


def by_name(names: list[str], bl: str = "") -> dict[str, object]:
    return {r.spec.name: r for r in resolve([BY_NAME[n] for n in names], syms(bl))}


def test_exact_symbol_attaches_with_address() -> None:
    r = by_name(["__sys_sendto"])["__sys_sendto"]
    assert r.ok and r.symbol == "__sys_sendto" and r.address == 0xFFFFFFFF81001000  # type: ignore[attr-defined]


def test_alternate_name_is_used() -> None:
    r = by_name(["__ip_queue_xmit"])["__ip_queue_xmit"]
    assert r.ok and r.symbol == "ip_queue_xmit"  # type: ignore[attr-defined]


def test_cold_clone_does_not_hide_the_real_symbol() -> None:
    assert by_name(["tcp_write_xmit"])["tcp_write_xmit"].ok  # type: ignore[attr-defined]


def test_renamed_inlined_absent_blacklisted() -> None:
    res = by_name(["__skb_datagram_iter", "tcp_push", "sock_recvmsg", "ip_rcv"],
                  bl="0xffffffff8100a000-0xffffffff8100a100\tip_rcv")
    assert res["__skb_datagram_iter"].reason == "renamed"  # type: ignore[attr-defined]
    assert "isra" in res["__skb_datagram_iter"].detail  # type: ignore[attr-defined]
    assert res["tcp_push"].reason == "inlined"  # type: ignore[attr-defined]
    assert res["sock_recvmsg"].reason == "absent"  # type: ignore[attr-defined]
    assert res["ip_rcv"].reason == "blacklisted"  # type: ignore[attr-defined]


def test_module_symbols_are_skipped() -> None:
    assert "loopback_xmit" not in syms().text


def test_data_symbols_are_names_apart_from_text() -> None:
    # The CO-RE watch twins need their per-CPU variables in kallsyms.
    assert syms().data == {"some_data": 0xffffffff81009000, "bpf_prog_active": 0x2c570}
    assert "bpf_prog_active" not in syms().text


def test_profiles_and_lists() -> None:
    name, specs = select("minimal")
    assert name == "minimal" and [s.name for s in specs] == list(PROFILES["minimal"])
    name, specs = select("tcp_v4_rcv, ip_rcv,tcp_v4_rcv")
    assert name == "list" and [s.name for s in specs] == ["tcp_v4_rcv", "ip_rcv"]
    try:
        select("tcp_v4_rcv,not_a_probe")
    except UnknownProbe as exc:
        assert "not_a_probe" in str(exc)
    else:
        raise AssertionError("unknown probe accepted")


def test_seed_chain_is_in_default_profile() -> None:
    seed = ["__sys_sendto", "tcp_sendmsg_locked", "tcp_push", "__tcp_push_pending_frames",
            "tcp_write_xmit", "__tcp_transmit_skb", "__ip_queue_xmit", "__dev_queue_xmit",
            "tcp_v4_send_synack", "__sys_recvfrom", "sock_recvmsg", "tcp_recvmsg",
            "__skb_datagram_iter"]
    assert set(seed) <= set(PROFILES["default"])


def test_docs_probes_page_is_the_catalog() -> None:
    from pathlib import Path

    from probes.catalog_doc import catalog_markdown

    page = Path(__file__).resolve().parents[2] / "docs" / "probes.md"
    assert page.read_text() == catalog_markdown(), "regenerate: kpath probes --markdown"
