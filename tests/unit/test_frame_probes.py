"""Which probes send frames (tracer/capture/frames.py): one per direction,
the first observed of each preference list; and every one of them has its
frame-sending program in both BPF sources."""

from __future__ import annotations

from pathlib import Path

from probes.catalog import BY_NAME, PROFILES
from tracer.capture.frames import FRAME_RX, FRAME_TX, frame_fn, frame_probes

CAPTURE_DIR = Path(__file__).resolve().parents[2] / "tracer" / "capture"


def test_one_probe_per_direction_the_first_observed() -> None:
    assert frame_probes(PROFILES["default"]) == {"__dev_queue_xmit", "__netif_receive_skb_core"}
    # The BCC backend on 6.1: __netif_receive_skb_core is only a .constprop copy there.
    observed = set(PROFILES["default"]) - {"__netif_receive_skb_core"}
    assert frame_probes(observed) == {"__dev_queue_xmit", "__netif_receive_skb"}
    assert frame_probes(["dev_hard_start_xmit", "__netif_rx", "ip_rcv"]) == {
        "dev_hard_start_xmit", "__netif_rx"}
    # The minimal profile has no device layer: no frames.
    assert frame_probes(PROFILES["minimal"]) == set()


def test_every_frame_probe_has_its_program_in_both_sources() -> None:
    bcc = (CAPTURE_DIR / "kpath_bcc.c").read_text()
    core = (CAPTURE_DIR / "kpath.bpf.c").read_text()
    for name in FRAME_TX + FRAME_RX:
        fn = frame_fn(BY_NAME[name].capture)
        assert f"KPROBE_FN({fn})" in bcc, fn
    # CO-RE: the routines of those captures send frames when frame_probes says so.
    assert core.count("return submit_frame(e, skb);") == 2
