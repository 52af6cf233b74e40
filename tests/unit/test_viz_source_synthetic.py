"""Source lines (ProbeStatus.source, from `kpath trace --vmlinux`) in replay,
the graphviz diagram's tooltips and the HTML export, on synthetic traces
whose header has them; and nothing changes for a header without them."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kpath.cli_view import export_cmd
from tests import tools
from tests.unit.synthetic_traces import synthetic_chat, synthetic_header
from tests.unit.test_export_synthetic import assert_offline_html
from tracer.events import ProbeStatus
from tracer.timeline import Packet, Timeline, build_timeline
from tracer.tracefile import Header, Trace, TraceWriter, with_probes
from viz import graphviz_render
from viz.sequence import build_sequence
from viz.text import render_text

SOURCES = {
    "__sys_sendto": "net/socket.c:2120",
    "__tcp_transmit_skb": "net/ipv4/tcp_output.c:1240",
    "tcp_push": "net/ipv4/tcp.c:706",
}


def synthetic_sourced_header() -> Header:
    """The synthetic header, with source lines for its probes (tcp_push is
    the missing one), plus an attached probe without a line."""
    probes = [replace(p, source=SOURCES.get(p.name)) for p in synthetic_header().probes]
    probes.append(ProbeStatus("tcp_v4_rcv", "tcp", "rx", True, ["entry"], "tcp_v4_rcv"))
    return synthetic_header(probes=probes)


def synthetic_sourced_trace() -> Trace:
    tr = synthetic_chat().trace()
    tr.header = synthetic_sourced_header()
    return tr


def write_synthetic(path: Path, header: Header) -> Path:
    t = synthetic_chat()
    w = TraceWriter(path, with_probes(header, [e.probe for e in t.events]))
    for ev in t.events:
        w.event(ev)
    w.close("command-exited", duration_ns=t.now - t.events[0].ts_ns, command_exit=0)
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(export_cmd, list(args))


# -- replay


def test_replay_header_lists_each_probe_with_its_source() -> None:
    text = render_text(build_timeline(synthetic_sourced_trace()))
    header = text.split("\n\n", 1)[0].splitlines()
    attached = [ln for ln in header if "net/socket.c" in ln or "tcp_output.c" in ln
                or "(no source line)" in ln]
    assert attached == [
        "           attached: __sys_sendto (entry+return)  net/socket.c:2120",
        "                     __tcp_transmit_skb (entry)   net/ipv4/tcp_output.c:1240",
        "                     tcp_v4_rcv (entry)           (no source line)",
    ]
    (missing,) = [ln for ln in header if "missing:" in ln]
    assert missing.strip() == ("missing:  tcp_push net/ipv4/tcp.c:706 (inlined: no symbol "
                               "tcp_push in kallsyms)")


def test_replay_header_without_sources_is_unchanged() -> None:
    text = render_text(build_timeline(synthetic_chat().trace()))
    header = text.split("\n\n", 1)[0]
    assert "attached: __sys_sendto (entry+return), __tcp_transmit_skb (entry)" in header
    assert "missing:  tcp_push (inlined: no symbol tcp_push in kallsyms)" in header
    assert "no source line" not in header and "net/" not in header


# -- the diagram


def test_arrows_carry_the_source_of_their_function() -> None:
    d = build_sequence(build_timeline(synthetic_sourced_trace()))
    by_probe = {a.probe: a.source for a in d.arrows}
    assert by_probe["__tcp_transmit_skb"] == SOURCES["__tcp_transmit_skb"]
    assert by_probe["__sys_sendto"] == SOURCES["__sys_sendto"]
    assert by_probe["tcp_v4_rcv"] == "" and by_probe["ip_rcv"] == ""
    assert all(a.source == "" for a in d.all_arrows if a.kind == "wakeup")


def test_graphviz_tooltips_say_file_and_line() -> None:
    tl = build_timeline(synthetic_sourced_trace())
    dot = graphviz_render.render_dot(build_sequence(tl))
    d = build_sequence(tl)
    xmit = next(a for a in d.arrows if a.probe == "__tcp_transmit_skb")
    tip = 'tooltip="__tcp_transmit_skb: net/ipv4/tcp_output.c:1240"'
    # on the label node (id ev<N>) and on the edge (id ev<N>_e) of that event
    node = next(ln for ln in dot.splitlines() if f"id=ev{xmit.event} " in ln
                or f'id="ev{xmit.event}"' in ln)
    edge = next(ln for ln in dot.splitlines() if f"ev{xmit.event}_e" in ln)
    assert tip in node and tip in edge
    ret = next(a for a in d.arrows if a.probe == "__sys_sendto" and a.kind == "return")
    ret_edge = next(ln for ln in dot.splitlines() if f"ev{ret.event}_e" in ln)
    assert 'tooltip="__sys_sendto return: net/socket.c:2120"' in ret_edge
    rcv = next(a for a in d.arrows if a.probe == "tcp_v4_rcv")
    rcv_edge = next(ln for ln in dot.splitlines() if f"ev{rcv.event}_e" in ln)
    assert "tooltip" not in rcv_edge
    for a in d.arrows:
        node = next(ln for ln in dot.splitlines() if f"id=ev{a.event} " in ln)
        assert ("tooltip=" in node) == bool(a.source), node


def test_graphviz_without_sources_has_no_arrow_tooltips() -> None:
    tl = build_timeline(synthetic_chat().trace())
    dot = graphviz_render.render_dot(build_sequence(tl))
    assert not re.search(r'tooltip="[^"]*: [^"]*\.c:\d+"', dot)
    assert all("tooltip" not in ln for ln in dot.splitlines() if "_e " in ln or "_e [" in ln)


def test_graphviz_svg_tooltip(tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    svg = graphviz_render.render(build_sequence(build_timeline(synthetic_sourced_trace())),
                                 "svg").decode()
    assert 'xlink:title="__tcp_transmit_skb: net/ipv4/tcp_output.c:1240"' in svg
    assert 'xlink:title="tcp_v4_rcv' not in svg


# -- the HTML export


def test_html_carries_the_sources(tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    f = write_synthetic(tmp_path / "synthetic_sourced.kpath", synthetic_sourced_header())
    out = tmp_path / "synthetic_sourced.html"
    res = run(str(f), "-f", "html", "-o", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    data = assert_offline_html(text)
    assert data["sources"] == SOURCES
    assert "adds the probed function's file:line to the hover details" in text
    plain = write_synthetic(tmp_path / "synthetic_plain.kpath", synthetic_header())
    out2 = tmp_path / "synthetic_plain.html"
    assert run(str(plain), "-f", "html", "-o", str(out2)).exit_code == 0
    text2 = out2.read_text()
    assert "sources" not in assert_offline_html(text2)
    assert "adds the probed function's file:line" not in text2


def test_html_hover_shows_the_source_in_chromium(tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    f = write_synthetic(tmp_path / "synthetic_sourced.kpath", synthetic_sourced_header())
    out = tmp_path / "synthetic_sourced.html"
    assert run(str(f), "-f", "html", "-o", str(out)).exit_code == 0
    tl: Timeline = build_timeline(synthetic_sourced_trace())
    pkt = next(st for st in tl.steps if isinstance(st, Packet)
               and st.events[0].probe == "__tcp_transmit_skb" and st.message is None)
    dom = tools.chromium(f"{out.as_uri()}#step={pkt.id}&selftest=1", "--dump-dom")
    m = re.search(r'<pre id="kpath-selftest"[^>]*>([^<]*)</pre>', dom)
    assert m is not None and m.group(1), dom[-500:]
    report = json.loads(m.group(1))
    assert "arrows_lit" in report and "hover" in report  # kpath.js's own report is kept
    assert report["source_function"] == "__tcp_transmit_skb"
    assert report["source"] == SOURCES["__tcp_transmit_skb"]
