"""The clock offset between two hosts, from segments each saw cross the wire.

A segment sent by A at a (A's clock) and received by B at b (B's clock)
gives b - a = delay + theta, where theta is how far B's clock reads ahead of
A's and delay >= 0 is the true one-way time. Segments from B to A give
a' - b' = delay' - theta. With d_ab and d_ba the smallest of each
direction, theta lies in [-d_ba, d_ab]: its middle (d_ab - d_ba) / 2, give
or take (d_ab + d_ba) / 2 (the round trip's shortest half). The middle is
exact when the shortest trips took as long both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class OffsetError(ValueError):
    """The segments cannot bound the offset (one line, why)."""


@dataclass(frozen=True, slots=True)
class OffsetEstimate:
    offset_ns: int  # theta: B's clock minus A's; B's times minus this are on A's clock
    uncertainty_ns: int  # theta is within offset_ns +- this
    d_ab_min_ns: int  # smallest b - a of a segment A -> B (raw clocks)
    d_ba_min_ns: int  # smallest a - b of a segment B -> A
    segments_ab: int  # segments measured A -> B
    segments_ba: int

    @property
    def shift_ns(self) -> int:
        """What to add to B's times to put them on A's clock."""
        return -self.offset_ns

    def wire_bounds(self, sent_ns: int, received_ns: int) -> tuple[int, int]:
        """The wire time of one segment, both times on A's clock after the
        shift: (lowest, highest) it can be given the uncertainty."""
        d = received_ns - sent_ns
        return d - self.uncertainty_ns, d + self.uncertainty_ns


def estimate_offset(ab: Sequence[tuple[int, int]], ba: Sequence[tuple[int, int]]
                    ) -> OffsetEstimate:
    """From (sent on A, received on B) pairs and (sent on B, received on A)
    pairs, each time on its own host's clock. OffsetError when a direction
    has no segment, or when the two directions contradict each other (the
    shortest trips' sum is negative: not one clock each, or mismatched
    segments)."""
    if not ab or not ba:
        empty = "A to B" if not ab else "B to A"
        raise OffsetError(f"no segment crossed from {empty}: one direction alone cannot "
                          "bound the clock offset")
    d_ab = min(rx - tx for tx, rx in ab)
    d_ba = min(rx - tx for tx, rx in ba)
    if d_ab + d_ba < 0:
        raise OffsetError(f"the shortest trips disagree (A->B {d_ab} ns, B->A {d_ba} ns, "
                          "sum < 0): the clocks are not steady or the segments do not match")
    # Rounded toward the middle; the half-width rounded up so it still covers.
    return OffsetEstimate(offset_ns=(d_ab - d_ba) // 2, uncertainty_ns=-(-(d_ab + d_ba) // 2),
                          d_ab_min_ns=d_ab, d_ba_min_ns=d_ba,
                          segments_ab=len(ab), segments_ba=len(ba))
