"""Which probes capture frames (the packet's first bytes at the device,
tracer/frames.py): one per direction, the first of each list the session
observes, so that a packet is captured once as it leaves and once as it
arrives, where a device has it."""

from __future__ import annotations

from collections.abc import Iterable

from probes.catalog import Capture
from tracer.capture.base import capture_fn

# Transmit: as the packet is queued to the device (its link header built);
# receive: as the device layer hands it to the stack (link header pulled,
# still before skb->data).
FRAME_TX = ("__dev_queue_xmit", "dev_hard_start_xmit")
FRAME_RX = ("__netif_receive_skb_core", "__netif_receive_skb", "__netif_rx")


def frame_probes(observed: Iterable[str]) -> set[str]:
    """The probes (by name) that send frames, among those observed."""
    names = set(observed)
    out = set()
    for prefs in (FRAME_TX, FRAME_RX):
        first = next((n for n in prefs if n in names), None)
        if first is not None:
            out.add(first)
    return out


def frame_fn(capture: Capture) -> str:
    """The BCC program of a frame probe: its capture routine's, sending
    frame records (kpath_bcc.c kp_*_frame)."""
    return capture_fn(capture) + "_frame"
