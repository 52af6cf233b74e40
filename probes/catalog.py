"""What kpath probes, as data.

Each ProbeSpec names a kernel function on the TCP/IPv4 path, the layer and
direction it belongs to, and which BPF capture routine reads its arguments
(the capture names map 1:1 to functions in tracer/kpath_bpf.c). Alternates
are the names the same step has had in other kernel versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Layer(StrEnum):
    SYSCALL = "syscall"
    SOCKET = "socket"
    TCP = "tcp"
    IP = "ip"
    DEVICE = "device"
    DRIVER = "driver"


# Lifeline order from the application down to the wire.
LAYER_ORDER = (Layer.SYSCALL, Layer.SOCKET, Layer.TCP, Layer.IP, Layer.DEVICE, Layer.DRIVER)


class Direction(StrEnum):
    TX = "tx"  # the event belongs to the sending side (source endpoint)
    RX = "rx"  # the event belongs to the receiving side (destination endpoint)


class Capture(StrEnum):
    """How the BPF side reads a function's arguments (one BPF function each)."""

    SYSCALL_FD = "syscall_fd"  # (int fd, void *buf, size_t len, ...): socket from the fd
    SOCKET = "socket"  # (struct socket *sock, ...)
    SOCK = "sock"  # (struct sock *sk, ...)
    SOCK_SKB_CB = "sock_skb_cb"  # (sk, skb, clone_it, gfp, rcv_nxt): TCP_SKB_CB, no header yet
    SOCK_SKB_L4 = "sock_skb_l4"  # (sk, skb, ...): TCP header built, IP header not yet
    SKB_L3 = "skb_l3"  # (skb, ...): IPv4 + TCP headers from network_header
    SYNACK_REQ = "synack_req"  # tcp_v4_send_synack(sk, dst, fl, req, ...): request sock
    DATAGRAM_ITER = "datagram_iter"  # (skb, int offset, iov_iter *to, int len, ...)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    name: str
    layer: Layer
    direction: Direction
    capture: Capture
    captures: str  # what the event carries, for docs and --list
    alternates: tuple[str, ...] = ()
    ret: bool = False  # also attach a return probe (value matters)
    may_inline: bool = False  # static/inline in the source: a missing symbol means inlined
    length_arg3: bool = False  # the third argument is a byte count (size, len)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.alternates)


_SEND = (
    ProbeSpec("__sys_sendto", Layer.SYSCALL, Direction.TX, Capture.SYSCALL_FD,
              "fd's socket and flow, bytes requested; return: bytes sent", ret=True,
              length_arg3=True),
    ProbeSpec("tcp_sendmsg_locked", Layer.TCP, Direction.TX, Capture.SOCK,
              "socket and flow, bytes to send (size arg)", ret=True, length_arg3=True),
    ProbeSpec("tcp_push", Layer.TCP, Direction.TX, Capture.SOCK,
              "socket and flow", may_inline=True),
    ProbeSpec("__tcp_push_pending_frames", Layer.TCP, Direction.TX, Capture.SOCK,
              "socket and flow"),
    ProbeSpec("tcp_write_xmit", Layer.TCP, Direction.TX, Capture.SOCK,
              "socket and flow", may_inline=True),
    ProbeSpec("__tcp_transmit_skb", Layer.TCP, Direction.TX, Capture.SOCK_SKB_CB,
              "socket, skb, seq/end_seq/flags from TCP_SKB_CB, ack (rcv_nxt)",
              alternates=("tcp_transmit_skb",), may_inline=True),
    ProbeSpec("tcp_v4_send_synack", Layer.TCP, Direction.TX, Capture.SYNACK_REQ,
              "listener, request sock flow, SYN-ACK seq (snt_isn) and ack", may_inline=True),
    ProbeSpec("__ip_queue_xmit", Layer.IP, Direction.TX, Capture.SOCK_SKB_L4,
              "socket, skb, TCP header (seq, ack, flags, len)", alternates=("ip_queue_xmit",)),
    ProbeSpec("__dev_queue_xmit", Layer.DEVICE, Direction.TX, Capture.SKB_L3,
              "skb, IPv4 and TCP headers", alternates=("dev_queue_xmit",)),
)

_RECV = (
    ProbeSpec("__sys_recvfrom", Layer.SYSCALL, Direction.RX, Capture.SYSCALL_FD,
              "fd's socket and flow, buffer size; return: bytes received", ret=True,
              length_arg3=True),
    ProbeSpec("sock_recvmsg", Layer.SOCKET, Direction.RX, Capture.SOCKET,
              "socket and flow"),
    ProbeSpec("tcp_recvmsg", Layer.TCP, Direction.RX, Capture.SOCK,
              "socket and flow, buffer size; return: bytes copied", ret=True,
              length_arg3=True),
    ProbeSpec("__skb_datagram_iter", Layer.TCP, Direction.RX, Capture.DATAGRAM_ITER,
              "skb, offset and bytes copied to user", alternates=("skb_copy_datagram_iter",),
              may_inline=True),
    ProbeSpec("ip_rcv", Layer.IP, Direction.RX, Capture.SKB_L3,
              "skb, IPv4 and TCP headers"),
    ProbeSpec("tcp_v4_rcv", Layer.TCP, Direction.RX, Capture.SKB_L3,
              "skb, IPv4 and TCP headers"),
)

CATALOG: tuple[ProbeSpec, ...] = _SEND + _RECV
BY_NAME: dict[str, ProbeSpec] = {spec.name: spec for spec in CATALOG}

# Profiles name subsets of the catalog. "minimal" is the seeds' gdb breakpoints.
PROFILES: dict[str, tuple[str, ...]] = {
    "minimal": (
        "__sys_sendto", "tcp_sendmsg_locked", "tcp_push", "__tcp_push_pending_frames",
        "tcp_write_xmit", "__tcp_transmit_skb", "__sys_recvfrom", "sock_recvmsg",
        "tcp_recvmsg", "__skb_datagram_iter",
    ),
    "default": tuple(spec.name for spec in CATALOG),
}


class UnknownProbe(ValueError):
    pass


def select(profile_or_list: str) -> tuple[str, list[ProbeSpec]]:
    """Resolve --probes: a profile name or a comma-separated list of catalog names."""
    if profile_or_list in PROFILES:
        return profile_or_list, [BY_NAME[n] for n in PROFILES[profile_or_list]]
    names = [n.strip() for n in profile_or_list.split(",") if n.strip()]
    if not names:
        raise UnknownProbe("empty probe list")
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise UnknownProbe(
            f"unknown probe(s): {', '.join(unknown)} (profiles: {', '.join(PROFILES)}; "
            "`kpath probes` lists the catalog)"
        )
    seen: dict[str, ProbeSpec] = {}
    for n in names:
        seen.setdefault(n, BY_NAME[n])
    return "list", list(seen.values())
