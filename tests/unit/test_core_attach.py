"""How the CO-RE backend attaches planned function probes, without a kernel:
an object double (synthetic) stands in for the loaded BPF object and
refuses fentry on chosen functions. Every probe ends attached (with how,
and why fentry was not used) or reported, never silently dropped."""

from __future__ import annotations

from kpath.console import KeptStatus
from probes.catalog import BY_NAME
from probes.resolve import Resolved
from tracer.capture import libbpf
from tracer.capture.core import CoreBackend
from tracer.capture.errors import AttachError
from tracer.capture.plan import KernelCaps, plan


class SyntheticObject:
    """Records attachments; fentry/fexit on `refuse` fail with EBUSY."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.links: list[libbpf.Link] = []
        self.bound: dict[str, str] = {}
        self.autoload: set[str] = set()

    def set_attach_target(self, prog: str, function: str) -> None:
        self.bound[prog] = function

    def set_autoload(self, prog: str, on: bool) -> None:
        if on:
            self.autoload.add(prog)
        else:
            self.autoload.discard(prog)

    def _link(self, target: str) -> libbpf.Link:
        link = libbpf.Link(0, target)
        self.links.append(link)
        return link

    def attach_trace(self, prog: str, target: str, cookie: int) -> libbpf.Link:
        if self.bound[prog] in self.refuse and target.startswith("fexit"):
            raise AttachError(f"{target}: Device or resource busy", "", 16)
        return self._link(target)

    def attach_kprobe(self, prog: str, symbol: str, cookie: int, retprobe: bool) -> libbpf.Link:
        return self._link(f"{'kretprobe' if retprobe else 'kprobe'}:{symbol}")

    def detach(self, link: libbpf.Link) -> None:
        self.links.remove(link)


def _setup(names: list[str], refuse: set[str], fallback: bool,  # type: ignore[no-untyped-def]
           watch: bool = False):
    specs = [BY_NAME[n] for n in names]
    resolved = [Resolved(s, s.name, 0x1000) for s in specs]
    caps = KernelCaps(kprobes=fallback, fentry=True, arity={n: 3 for n in names})
    planned = plan(specs, resolved, caps)
    be = CoreBackend.__new__(CoreBackend)
    be.attach_mode = "auto" if fallback else "fentry"
    be._reset()
    obj = SyntheticObject(refuse)
    be._enable(obj, planned, fallback=fallback, watch=watch)  # type: ignore[arg-type]
    return be, obj, planned


def test_the_watch_twins_take_the_entry_programs_place() -> None:
    for watch in (False, True):
        be, obj, _ = _setup(["tcp_sendmsg"], set(), True, watch=watch)
        plain = {"tp_softirq_entry", "tp_irq_entry"}
        twins = {"tp_softirq_entry_watch", "tp_irq_entry_watch"}
        assert obj.autoload >= (twins if watch else plain)
        assert not obj.autoload & (plain if watch else twins)
        progs = {prog for prog, _ in be._context}
        assert progs >= (twins if watch else plain) and not progs & (plain if watch else twins)
        assert set(be._serves) >= progs  # their misses are read from the loaded ones


def test_each_fentry_probe_gets_its_own_copy_bound_to_its_function() -> None:
    be, obj, planned = _setup(["tcp_sendmsg", "tcp_push", "tcp_recvmsg"], set(), True)
    # tcp_recvmsg reads the stream position (tp->copied_seq): a kind of its own
    assert obj.bound == {"fe_sock_0": "tcp_sendmsg", "fe_sock_1": "tcp_push",
                         "fe_sock_copied_seq_0": "tcp_recvmsg", "fx_return_0": "tcp_recvmsg"}
    # The kprobe routines are loaded too, to take over where fentry fails.
    assert {"kp_sock", "kp_sock_copied_seq", "kp_return"} <= obj.autoload
    no_fentry: dict[str, str] = {}
    sts = be._attach(obj, planned, KeptStatus(), no_fentry)  # type: ignore[arg-type]
    assert [st.attach for st in sts] == [["fentry:tcp_sendmsg"], ["fentry:tcp_push"],
                                         ["fentry:tcp_recvmsg", "fexit:tcp_recvmsg"]]
    assert all(st.attached and st.detail is None for st in sts) and not no_fentry


def test_a_failed_fentry_falls_back_to_its_kprobe_and_says_why() -> None:
    be, obj, planned = _setup(["tcp_sendmsg", "tcp_recvmsg"], {"tcp_recvmsg"}, True)
    status = KeptStatus()
    sts = be._attach(obj, planned, status, {})  # type: ignore[arg-type]
    assert sts[0].attach == ["fentry:tcp_sendmsg"]
    assert sts[1].attached and sts[1].attach == ["kprobe:tcp_recvmsg", "kretprobe:tcp_recvmsg"]
    assert "fentry failed" in (sts[1].detail or "") and "busy" in (sts[1].detail or "")
    # The fentry half that did attach was taken down again: no double events.
    assert sorted(link.target for link in obj.links) == [
        "fentry:tcp_sendmsg", "kprobe:tcp_recvmsg", "kretprobe:tcp_recvmsg"]
    assert be._serves["kp_sock_copied_seq"] == ["tcp_recvmsg"]
    assert any("kprobe used" in line for line in status.lines)


def test_without_kprobes_a_failed_fentry_is_tried_again_the_next_way() -> None:
    be, obj, planned = _setup(["tcp_sendmsg", "tcp_recvmsg"], {"tcp_recvmsg"}, False)
    no_fentry: dict[str, str] = {}
    sts = be._attach(obj, planned, KeptStatus(), no_fentry)  # type: ignore[arg-type]
    assert sts[1].reason == "fentry-failed" and not sts[1].attached
    assert list(no_fentry) == ["tcp_recvmsg"]
    # The next plan gives it no fentry, and says why it is missing.
    specs = [p.spec for p in planned]
    caps = KernelCaps(kprobes=False, fentry=True, arity={"tcp_sendmsg": 3, "tcp_recvmsg": 3},
                      no_kprobes_why="kprobes not used (--attach-mode fentry)")
    again = plan(specs, [Resolved(s, s.name, 0x1000) for s in specs], caps, no_fentry)
    assert again[0].way == "fentry"
    assert again[1].way is None and again[1].reason == "no-fentry"
    assert "busy" in (again[1].detail or "")
