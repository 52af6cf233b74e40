"""Every export format on synthetic traces, validated the way its consumer
reads it: Mermaid's parser, PlantUML's renderer, the trace-event format,
an HTML parser and headless Chromium. Plus the sequence model's contexts,
hand-offs, wake-ups and activation bars, and `replay --format json`."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from kpath.cli_replay import replay_cmd
from kpath.cli_view import export_cmd
from tests import tools
from tests.trace_event_check import check_trace_events
from tests.unit.synthetic_traces import SyntheticTrace, synthetic_chat, synthetic_rounds
from tracer.timeline import Packet, Timeline, build_timeline
from viz import graphviz_render
from viz.escape import plantuml_label as puml_escape
from viz.mermaid import MAX_TEXT, render_mermaid, render_mermaid_checked
from viz.perfetto import render_perfetto
from viz.plantuml import render_plantuml
from viz.select import Selection, select
from viz.sequence import Arrow, Note, SequenceDiagram, build_sequence


def chat() -> Timeline:
    return build_timeline(synthetic_chat().trace())


def run(cmd: object, *args: str) -> Result:
    return CliRunner().invoke(cmd, list(args))  # type: ignore[arg-type]


# -- the model


def test_contexts_handoffs_and_wakeup() -> None:
    d = build_sequence(chat())
    assert d.contexts == ["task", "softirq"]
    syn_rx = next(a for a in d.arrows if a.text == "ip_rcv SYN seq 0:1")
    assert (syn_rx.kind, syn_rx.ctx, syn_rx.handoff_label) == ("wire", "softirq", "softirq NET_RX")
    assert syn_rx.context == "softirq NET_RX client[200]"
    # the client blocked in recv is woken when the welcome arrives
    (wake,) = [a for a in d.all_arrows if a.kind == "wakeup"]
    assert wake.handoff_label == "wake-up" and wake.text.startswith("wake-up: #")
    rows = d.rows
    i = rows.index(wake)
    before = rows[i - 1]
    assert isinstance(before, Arrow) and before.text.startswith("tcp_v4_rcv PSH|ACK seq 1:21")
    reader = next(a for a in d.arrows if a.event == wake.event)
    assert reader.text.startswith("__skb_datagram_iter 20 B") and rows.index(reader) > i
    assert wake not in d.arrows  # one arrow per event stays true


def test_activation_bars() -> None:
    d = build_sequence(chat())
    row_of = {r.event: i for i, r in enumerate(d.rows) if isinstance(r, Arrow)
              and r.kind != "wakeup"}
    tl = chat()
    by_event = {a.event: a for a in d.activations}
    # a syscall is active from its entry to its return
    send = next(te for te in tl.events if te.probe == "__sys_sendto" and not te.is_return)
    bar = by_event[send.index]
    assert (bar.lifeline, bar.start, bar.end) == (f"{send.side}_syscall", row_of[send.index],
                                                   row_of[send.pair])  # type: ignore[index]
    # an entry-only call lasts until the next related event of its context
    push = next(te for te in tl.events if te.probe == "__tcp_push_pending_frames")
    bar = by_event[push.index]
    assert bar.end == row_of[push.index + 1] and bar.depth >= 1  # inside tcp_sendmsg_locked
    # the last transmit event of the SYN: no related event follows in its context
    syn = next(st for st in tl.steps if isinstance(st, Packet))
    last_tx = syn.tx_events[-1]
    assert by_event[last_tx.index].start == by_event[last_tx.index].end
    assert not any(a.lifeline.endswith("_app") for a in d.activations)


# -- graphviz


def test_dot_colours_contexts_and_draws_bars_and_legend() -> None:
    d = build_sequence(chat())
    dot = graphviz_render.render_dot(d)
    assert len(re.findall(r'class="?kp_bar', dot)) == len(d.activations)
    assert 'color="#e65100"' in dot and 'color="#1565c0"' in dot  # softirq, task
    handoff = re.search(r'r\d+_a -> r\d+_b \[[^\]]*id=ev(\d+)_e[^\]]*style=bold', dot)
    assert handoff is not None
    assert "hand-off to softirq NET_RX" in dot and "wake-up" in dot
    assert "execution context" in dot and ">softirq<" in dot  # the legend


def test_png_resolution_drops_for_tall_diagrams() -> None:
    tl = build_timeline(synthetic_rounds(150).trace())
    d = build_sequence(tl, view=select(tl, Selection(fold=False, cap=False)))
    g = graphviz_render.build_graph(d, "png")
    dpi = float(re.search(r'dpi="?([\d.]+)', g.source).group(1))  # type: ignore[union-attr]
    assert dpi < 96


# -- mermaid


def test_mermaid_parses_with_mermaids_parser(tmp_path: Path) -> None:
    weird = SequenceDiagram(
        title="t#1; x", lifelines=build_sequence(chat()).lifelines,
        rows=[Note("a;b #c <d>", "info"),
              Arrow(src="client_app", dst="client_syscall", text="fn x;y #2 end %% -> +",
                    time="+1 ms", dashed=False, wire=False, handoff=False, event=0, step=0,
                    role=build_sequence(chat()).arrows[0].role)])
    big = build_timeline(synthetic_rounds(100).trace())
    files = {"chat": render_mermaid(build_sequence(chat())),
             "folded": render_mermaid(build_sequence(big, view=select(big))),
             "weird": render_mermaid(weird)}
    paths = []
    for name, text in files.items():
        p = tmp_path / f"synthetic_{name}.mmd"
        p.write_text(text)
        paths.append(p)
    assert "loop x100: " in files["folded"]
    assert "rect rgba(230, 81, 0, 0.12)" in files["chat"] and "activate client_syscall" in \
        files["chat"]
    for res in tools.mermaid_parse(*paths):
        assert res["ok"] is True and res["type"] == "sequence", res


def test_mermaid_long_diagram_is_cut_under_the_limit(tmp_path: Path) -> None:
    tl = build_timeline(synthetic_rounds(150).trace())
    text, notice = render_mermaid_checked(
        build_sequence(tl, view=select(tl, Selection(fold=False))))
    assert notice is not None and "50000-character limit" in notice
    assert len(text) <= MAX_TEXT
    p = tmp_path / "synthetic_cut.mmd"
    p.write_text(text)
    (res,) = tools.mermaid_parse(p)
    assert res["ok"] is True, res


# -- plantuml


def test_plantuml_escapes_creole() -> None:
    assert puml_escape("__sys_sendto") == "~_~_sys_sendto"
    assert puml_escape("tcp_v4_rcv") == "tcp_v4_rcv"
    assert puml_escape("a<b> **x** c\\n") == "a~<b> ~*~*x~*~* c\\\\n"


def test_plantuml_renders(tmp_path: Path) -> None:
    big = build_timeline(synthetic_rounds(100).trace())
    for name, d in (("chat", build_sequence(chat())),
                    ("folded", build_sequence(big, view=select(big)))):
        src = tmp_path / f"synthetic_{name}.puml"
        src.write_text(render_plantuml(d))
        svg = tools.plantuml_svg(src)
        assert "Syntax Error" not in svg and "Error line" not in svg
        texts = [re.sub(r"\s+", " ", t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]
        # creole escapes are gone in the picture: names come out verbatim
        assert any(t.startswith("__tcp_transmit_skb") for t in texts), texts[:20]
        assert not any("~" in t for t in texts)
        if name == "folded":
            assert any("x100" in t for t in texts)


# -- perfetto


def test_perfetto_trace_events() -> None:
    tl = chat()
    text = render_perfetto(tl)
    assert check_trace_events(text) == []
    doc = json.loads(text)
    evs = doc["traceEvents"]
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"client[200]", "server[100]", "client[200] softirq NET_RX", "CPU 0"} <= names
    # a syscall slice lasts from entry to return
    send = next(te for te in tl.events if te.probe == "__sys_sendto" and not te.is_return)
    sl = next(e for e in evs if e["ph"] == "X" and e.get("args", {}).get("event") == send.index)
    ret = tl.events[send.pair]  # type: ignore[index]
    assert sl["dur"] == pytest.approx((ret.ev.ts_ns - send.ev.ts_ns) / 1000)
    # one flow per packet, from its first to its last event, across contexts
    packets = [st for st in tl.steps if isinstance(st, Packet)]
    starts = [e for e in evs if e["ph"] == "s" and e["cat"] == "packet"]
    ends = [e for e in evs if e["ph"] == "f" and e["cat"] == "packet"]
    assert len(starts) == len(ends) == len(packets)
    assert all(e["bp"] == "e" for e in ends)
    tids = {e["tid"] for e in evs if e["ph"] in "stf" and e["cat"] == "packet"}
    assert len(tids) >= 2  # the arrows cross from the task to the softirq track
    assert render_perfetto(chat()) == text  # deterministic


def test_perfetto_with_trace_processor(tmp_path: Path) -> None:
    """Perfetto's own importer, when a trace_processor_shell binary is at
    hand. The `perfetto` PyPI package downloads that binary at first use,
    which cannot work offline, so without one this is skipped (never
    required)."""
    why = ("Perfetto's TraceProcessor needs a trace_processor_shell binary, which the "
           "`perfetto` PyPI package downloads at first use: that fails without internet access "
           "(checked here: curl cannot resolve the download host)")
    try:
        import perfetto.trace_processor as tp_mod
    except ImportError:
        pytest.skip(f"`perfetto` PyPI package not installed; besides, {why}")
    binary = shutil.which("trace_processor_shell")
    if binary is None:
        pytest.skip(f"no trace_processor_shell on PATH: {why}")
    path = tmp_path / "synthetic.json"
    path.write_text(render_perfetto(chat()))
    tp = tp_mod.TraceProcessor(trace=str(path),
                               config=tp_mod.TraceProcessorConfig(bin_path=binary))
    slices = list(tp.query("select count(*) as n from slice"))
    flows = list(tp.query("select count(*) as n from flow"))
    assert slices[0].n > 0 and flows[0].n > 0


# -- html


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.data: list[str] = []
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_data = tag == "script" and dict(attrs).get("id") == "kpath-data"

    def handle_endtag(self, tag: str) -> None:
        self._in_data = False

    def handle_data(self, data: str) -> None:
        if self._in_data:
            self.data.append(data)


def assert_offline_html(text: str) -> dict[str, object]:
    scan = _Scan()
    scan.feed(text)
    scan.close()
    tags = [t for t, _ in scan.tags]
    assert tags[:2] == ["html", "head"] and "svg" in tags and "table" in tags
    for tag, attrs in scan.tags:
        for key in ("src", "href", "xlink:href", "action", "poster", "data"):
            assert key not in attrs, f"<{tag} {key}=...> would load something"
    assert "://" not in text and "url(" not in text and "@import" not in text
    csp = next(a for t, a in scan.tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in (csp.get("content") or "")
    data: dict[str, object] = json.loads("".join(scan.data))
    return data


def test_html_is_self_contained(tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    f = synthetic_chat().write(tmp_path / "synthetic_chat.kpath")
    out = tmp_path / "synthetic.html"
    res = run(export_cmd, str(f), "-f", "html", "-o", str(out))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    data = assert_offline_html(text)
    events = data["events"]
    assert isinstance(events, dict) and len(events) == 72
    assert 'id="ev0"' in text and "kp_flow_1" in text
    n_packets = sum(isinstance(st, Packet) for st in chat().steps)
    assert text.count('<tr data-flow="1"') == n_packets  # one row per packet


def test_html_in_chromium(tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    f = synthetic_chat().write(tmp_path / "synthetic_chat.kpath")
    out = tmp_path / "synthetic.html"
    assert run(export_cmd, str(f), "-f", "html", "-o", str(out)).exit_code == 0
    shot = tmp_path / "shot.png"
    tools.chromium(out.as_uri(), f"--screenshot={shot}", "--window-size=1400,1000")
    w, h, px = tools.png_pixels(shot)
    assert (w, h) == (1400, 1000) and tools.pixel_variance(px) > 100
    tl = chat()
    pkt = next(st for st in tl.steps if isinstance(st, Packet) and st.read_by)
    dom = tools.chromium(f"{out.as_uri()}#flow=1&step={pkt.id}&selftest=1", "--dump-dom")
    m = re.search(r'<pre id="kpath-selftest"[^>]*>([^<]*)</pre>', dom)
    assert m is not None and m.group(1), dom[-500:]
    report = json.loads(m.group(1))
    want = {pkt.id, *pkt.read_by} | ({pkt.message} if pkt.message is not None else set())
    assert set(report["lit_steps"]) == want
    assert 0 < report["arrows_lit"] < report["arrows_total"]
    assert report["rows_visible"] == 1 and report["hover"] is True


# -- the CLI


def test_export_every_format(tmp_path: Path) -> None:
    if shutil.which("neato") is None:
        pytest.skip("graphviz neato not installed")
    f = synthetic_chat().write(tmp_path / "synthetic_chat.kpath")
    magic = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF", "dot": b"// kpath",
             "mermaid": b"sequenceDiagram", "plantuml": b"@startuml",
             "perfetto": b'{"traceEvents"', "html": b"<!doctype html>"}
    for fmt, head in magic.items():
        out = tmp_path / f"x.{fmt}"
        res = run(export_cmd, str(f), "-f", fmt, "-o", str(out))
        assert res.exit_code == 0, res.output
        first = out.read_bytes()
        assert first.startswith(head), fmt
        run(export_cmd, str(f), "-f", fmt, "-o", str(out))
        assert out.read_bytes() == first, f"{fmt} is not deterministic"
    # default names from the format's suffix
    assert run(export_cmd, str(f), "-f", "perfetto").exit_code == 0
    assert (tmp_path / "synthetic_chat.perfetto.json").exists()
    assert run(export_cmd, str(f), "-o", str(tmp_path / "y.puml")).exit_code == 0
    assert (tmp_path / "y.puml").read_text().startswith("@startuml")


def test_export_folds_big_traces_and_says_so(tmp_path: Path) -> None:
    f = synthetic_rounds(100).write(tmp_path / "synthetic_rounds.kpath")
    res = run(export_cmd, str(f), "-f", "mermaid", "-o", "-")
    assert res.exit_code == 0, res.output
    assert "kpath: flow 1: 303 steps summarised: 1 repeated block(s) folded" in res.stderr
    assert "loop x100" in res.stdout
    res = run(export_cmd, str(f), "-f", "mermaid", "-o", "-", "--flow", "1",
              "--max-packets", "5")
    assert "--max-packets 5: drew the first 5 steps, left out 298" in res.stderr
    assert "loop" not in res.stdout
    res = run(export_cmd, str(f), "-f", "perfetto", "-o", "-")
    assert "summarised" not in res.stderr  # a timeline viewer gets everything
    assert check_trace_events(res.stdout) == []


def test_export_selection_errors_are_one_line(tmp_path: Path) -> None:
    f = str(synthetic_chat().write(tmp_path / "synthetic_chat.kpath"))
    for args, needle in ((["--packet", "99"], "no step #99"), (["--from", "soon"], "bad time"),
                         (["--from", "1s"], "select no event"),
                         (["--max-packets", "0"], "Invalid value")):
        res = run(export_cmd, f, "-f", "mermaid", "-o", "-", *args)
        assert res.exit_code == 2, res.output
        assert needle in res.stderr and res.stderr.count("\n") == 1 or "Usage" in res.stderr
        assert "Traceback" not in res.output


def test_replay_json(tmp_path: Path) -> None:
    f = synthetic_chat().write(tmp_path / "synthetic_chat.kpath")
    res = run(replay_cmd, str(f), "--format", "json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert (doc["format"], doc["version"]) == ("kpath-replay", 1)
    assert set(doc) == {"format", "version", "trace", "flow_filter", "flows", "steps", "events",
                        "gaps", "unattributed"}
    assert [e["index"] for e in doc["events"]] == list(range(72))
    ev = next(e for e in doc["events"] if e["probe"] == "ip_rcv")
    assert ev["ctx"] == "softirq" and ev["context_kind"] == "softirq NET_RX" and ev["handoff"]
    assert ev["hop_ns"] == 1000 and ev["details"] == "SYN seq 0:1"
    pkt = next(s for s in doc["steps"] if s["kind"] == "packet")
    assert pkt["packet"]["label"] == "SYN" and pkt["packet"]["rel_seq"] == 0
    assert pkt["message"] is None
    msg = next(s for s in doc["steps"] if s["kind"] == "message")
    assert msg["message"]["op"] in ("send", "recv")
    assert doc["flows"][0]["steps"] == [s["id"] for s in doc["steps"]]
    assert run(replay_cmd, str(f), "--format", "json").stdout == res.stdout


def test_replay_colours_contexts_and_indents_calls() -> None:
    from viz.text import render_text

    colored = render_text(chat(), color=True)
    assert "\x1b[33msoftirq NET_RX" in colored  # softirq in yellow
    assert "\x1b[34mtask client[200]" in colored  # task in blue
    plain = render_text(chat())
    line = next(ln for ln in plain.splitlines() if "tcp_sendmsg_locked" in ln and "len 2" in ln
                and "client" in ln)
    inner = next(ln for ln in plain.splitlines() if "__tcp_push_pending_frames" in ln
                 and "client" in ln)
    col = line.index("tcp_sendmsg_locked")
    assert inner.index("__tcp_push_pending_frames") > col  # nested one level deeper


def test_empty_trace_exports(tmp_path: Path) -> None:
    f = SyntheticTrace().write(tmp_path / "synthetic_empty.kpath")
    for fmt in ("mermaid", "plantuml", "perfetto", "dot"):
        res = run(export_cmd, str(f), "-f", fmt, "-o", "-")
        assert res.exit_code == 0, (fmt, res.output)
