"""Frame records against an independent capture of the same packets: in the
validation VM (6.1, CO-RE, kprobes), an AF_PACKET socket on lo (the
kernel's packet tap, what tcpdump reads) records every packet while
`kpath trace` records the chat; every frame kpath kept must be the first
bytes of a packet the tap saw. The ring buffer carries a frame as a record
of its own layout (kp_event.h kp_frame_event: three 128-byte slots, the
frame's bytes in two pieces), read and decoded by tracer/capture; this is
the end-to-end check of both on a real kernel. About a minute."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.vm.guest import run_traced_script
from tests.vm.requirements import needs_vm
from tracer.tracefile import read_trace

pytestmark = pytest.mark.vm

# In the guest: the tap writes each packet as a 4-byte length and its bytes
# until told to stop; it is up before the trace starts.
TAP = """
import os, socket, struct, time
tap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
tap.bind(("lo", 0))
tap.settimeout(0.2)
with open("tap.bin", "wb") as out:
    open("tap.up", "w").close()
    while not os.path.exists("tap.stop"):
        try:
            pkt = tap.recv(65536)
        except socket.timeout:
            continue
        out.write(struct.pack("<I", len(pkt)) + pkt)
"""

GUEST_SCRIPT = """
python3 tap.py &
while [ ! -e tap.up ]; do sleep 0.1; done
kpath trace -o frames.kpath -- kpath demo chat > chat.out 2> trace.err
echo $? > trace_rc
sleep 0.5
touch tap.stop
wait
"""


def _tapped(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, at = [], 0
    while at + 4 <= len(data):
        (n,) = struct.unpack_from("<I", data, at)
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out


@needs_vm()
def test_every_frame_is_the_start_of_a_tapped_packet(tmp_path: Path) -> None:
    (tmp_path / "tap.py").write_text(TAP)
    run_traced_script(tmp_path, GUEST_SCRIPT)
    trace = read_trace(tmp_path / "frames.kpath")
    assert trace.header.backend == "core" and trace.header.kernel_release.startswith("6.1.")
    frames = trace.frames.column("data").to_pylist()
    tapped = _tapped(tmp_path / "tap.bin")
    # The chat's handshake, messages and teardown: a frame each way per packet.
    assert len(frames) >= 20 and len(tapped) >= len(frames) // 2
    unmatched = [f.hex() for f in frames if not any(p[:len(f)] == f for p in tapped)]
    assert not unmatched, f"{len(unmatched)} of {len(frames)} frames no tapped packet begins with"
    # Whole headers were kept: Ethernet (zeros on lo), IPv4 and TCP.
    assert min(len(f) for f in frames) >= 14 + 20 + 20
