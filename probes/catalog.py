"""What kpath probes, as data.

Each ProbeSpec names a kernel function on the TCP/IPv4 path, the layer and
direction it belongs to, and every way it can be observed: a kprobe (and
kretprobe) on its symbol or an alternate name it has had in other kernel
versions, read by the BPF capture routine named by `capture` (one routine
per kind in tracer/capture/kpath.bpf.c and kpath_bcc.c), and, where the
kernel has one, a tracepoint that fires in or next to it (for kernels
without kprobes; the CO-RE backend attaches it as tp_btf).
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
    """How the BPF side reads a function's arguments.

    Each value is the name of a routine in tracer/capture/kpath.bpf.c and
    kpath_bcc.c, prefixed kp_.
    A digit suffix is the argument position of the skb.
    """

    SYSCALL_FD = "syscall_fd"  # (int fd, buf, size_t len, ...): socket behind the fd
    # __x64_sys_splice(regs): the socket behind regs' third argument (fd_out), len (fifth)
    SYSCALL_REGS_FD3 = "syscall_regs_fd3"
    # __x64_sys_recvmmsg(regs): the socket behind regs' first argument
    SYSCALL_REGS_FD1 = "syscall_regs_fd1"
    # sock_write_iter/sock_read_iter(struct kiocb *iocb, struct iov_iter *it):
    # the socket behind iocb->ki_filp, it->count
    KIOCB = "kiocb"
    # io_send/io_recv/...(struct io_kiocb *req, unsigned int issue_flags): the
    # socket behind req->file, the io_sr_msg's len
    IO_KIOCB = "io_kiocb"
    # sock_splice_read(struct file *file, loff_t *ppos, pipe, size_t len, flags):
    # the socket behind the file, len (argument 4)
    FILE_LEN4 = "file_len4"
    SOCKET = "socket"  # (struct socket *sock, ...)
    SOCK = "sock"  # (struct sock *sk, ...)
    # (sk, msg, size): seq = tp->write_seq at entry, where the call's bytes go
    SOCK_WRITE_SEQ = "sock_write_seq"
    # (sk, page, offset, size, flags): as sock_write_seq, size is argument 4
    SOCK_PAGE_WRITE_SEQ = "sock_page_write_seq"
    # (sk, msg, len, ...): seq = tp->copied_seq at entry, the first byte returned
    SOCK_COPIED_SEQ = "sock_copied_seq"
    # tcp_splice_read(struct socket *sock, ppos, pipe, len, flags): as
    # sock_copied_seq, from sock->sk, len is argument 4
    SOCKET_COPIED_SEQ = "socket_copied_seq"
    SOCK_SKB_CB = "sock_skb_cb"  # (sk, skb, clone_it, gfp, rcv_nxt): TCP_SKB_CB, no header yet
    SOCK_SKB_CB_NOACK = "sock_skb_cb_noack"  # (sk, skb, ...): TCP_SKB_CB only
    SOCK_SKB_L4 = "sock_skb_l4"  # (sk, skb, ...): TCP header built, IP header not yet
    SKB_L4_ADDRS = "skb_l4_addrs"  # ip_build_and_send_pkt(skb, sk, saddr, daddr, ...)
    SOCK_SKB_L3 = "sock_skb_l3"  # (sk, skb, ...): IPv4 + TCP headers, socket known
    SKB_L3_1 = "skb_l3_1"  # IPv4 + TCP headers from skb->network_header, skb is arg N
    SKB_L3_2 = "skb_l3_2"
    SKB_L3_3 = "skb_l3_3"
    SKB_L3_4 = "skb_l3_4"
    SKB_RX = "skb_rx"  # (skb, ...) on receive before IP: IPv4 header at skb->data
    SKB_PP_RX = "skb_pp_rx"  # (struct sk_buff **pskb, ...): as skb_rx
    SYNACK_REQ = "synack_req"  # tcp_v4_send_synack(sk, dst, fl, req, ...): request sock
    DATAGRAM_ITER = "datagram_iter"  # (skb, int offset, iov_iter *to, int len, ...)
    SOFTIRQ = "softirq"  # no useful arguments: records the context and the time


# Captures whose flow comes from the packet's own IPv4/TCP headers: src is
# the sender, so on receive the event belongs to the destination's side.
HEADER_CAPTURES = frozenset({
    Capture.SKB_L3_1, Capture.SKB_L3_2, Capture.SKB_L3_3, Capture.SKB_L3_4,
    Capture.SOCK_SKB_L3, Capture.SKB_RX, Capture.SKB_PP_RX,
})
# Captures that record the stream position the kernel writes at (seq =
# tp->write_seq at entry; the return value counts the bytes written there)
# or reads from (tp->copied_seq).
WRITE_SEQ_CAPTURES = frozenset({Capture.SOCK_WRITE_SEQ, Capture.SOCK_PAGE_WRITE_SEQ})
STREAM_POS_CAPTURES = WRITE_SEQ_CAPTURES | {Capture.SOCK_COPIED_SEQ, Capture.SOCKET_COPIED_SEQ}
# Captures that see a socket and nothing of a packet.
SOCK_ONLY_CAPTURES = frozenset({Capture.SOCK, Capture.SOCKET}) | STREAM_POS_CAPTURES
# Captures that find the socket behind a file descriptor or an open file.
FD_CAPTURES = frozenset({Capture.SYSCALL_FD, Capture.SYSCALL_REGS_FD1, Capture.SYSCALL_REGS_FD3,
                         Capture.KIOCB,
                         Capture.IO_KIOCB, Capture.FILE_LEN4})
# Captures that see one segment in flight (seq range and flags).
SEGMENT_CAPTURES = HEADER_CAPTURES | {
    Capture.SOCK_SKB_CB, Capture.SOCK_SKB_CB_NOACK, Capture.SOCK_SKB_L4,
    Capture.SKB_L4_ADDRS, Capture.SYNACK_REQ,
}


class Returns(StrEnum):
    """What a return probe reports."""

    NONE = "none"
    VALUE = "value"  # bytes or -errno, attributed to the entry's socket
    # Not bytes (sendmmsg/recvmmsg: messages; io_uring's io_send...: 0) or
    # -errno: the bytes are what the calls inside moved.
    COUNT = "count"
    SOCK = "sock"  # a struct sock *: its flow is read (inet_csk_accept)


@dataclass(frozen=True, slots=True)
class Tracepoint:
    """A kernel tracepoint that observes a probe's step without a kprobe."""

    hook: str  # the CO-RE object's hook (enum tp_hook in kpath.bpf.c, lower case)
    event: str  # the kernel's tracepoint, as tracefs names it
    since: str  # first kernel version that has it
    yields: str  # where it fires and what the event then carries


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    name: str
    layer: Layer
    direction: Direction
    capture: Capture
    captures: str  # what the event carries, for docs and `kpath probes`
    alternates: tuple[str, ...] = ()
    ret: Returns = Returns.NONE
    may_inline: bool = False  # static/inline in the source: a missing symbol means inlined
    length_arg3: bool = False  # the third argument is a byte count (size, len)
    module: str | None = None  # symbol lives in this kernel module (veth, e1000, ...)
    tracepoint: Tracepoint | None = None  # the way to observe it without kprobes
    absent_note: str = ""  # why the symbol may be missing (told when it is)
    way: str = ""  # syscall layer: how bytes enter or leave the socket ("sendfile", ...)
    # Another probe observes the same call: this one stays for the traces
    # that recorded it (and for --probes NAME), in no profile (both would
    # open a message for one call).
    superseded_by: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.alternates)

    @property
    def has_return(self) -> bool:
        return self.ret != Returns.NONE


_L, _D, _C, _R = Layer, Direction, Capture, Returns
_HDRS = "skb, IPv4 and TCP headers (flow, seq, ack, flags, payload)"


def _syscall_tp(name: str) -> Tracepoint:
    return Tracepoint(f"sys_{name}", f"raw_syscalls:sys_enter/sys_exit ({name})", "2.6.33",
                      "syscall entry and exit: the socket behind the fd, length, return value")


_TP_HDRS = "the skb's IPv4 and TCP headers, as the kprobe"


def _io_uring(op: str, direction: Direction, length: bool) -> ProbeSpec:
    """io_uring's issue function of a socket op: it runs in the submitting
    task or an io-wq worker (iou-wrk, same process) and calls sock_sendmsg /
    sock_recvmsg; its return is 0 or -errno (the bytes go to the CQE), so
    the bytes are what tcp_sendmsg_locked / tcp_recvmsg return inside."""
    what = "sent" if direction is Direction.TX else "received"
    return ProbeSpec(
        f"io_{op}", Layer.SYSCALL, direction, Capture.IO_KIOCB,
        f"io_uring IORING_OP_{op.upper()} on a TCP socket (req->file)"
        + (", bytes requested" if length else "")
        + f"; return: 0 or -errno (bytes {what}: the TCP calls' returns inside)",
        ret=Returns.COUNT, length_arg3=length, way=f"io_uring {op}",
        absent_note="io_uring not built in (CONFIG_IO_URING), or before Linux 6.0 "
                    "(io_uring/net.c), or this op is newer than the kernel")

# In path order: send side top to bottom, then receive side bottom to top.
CATALOG: tuple[ProbeSpec, ...] = (
    # -- send: system calls and socket layer
    ProbeSpec("__sys_sendto", _L.SYSCALL, _D.TX, _C.SYSCALL_FD,
              "socket behind the fd, bytes requested; return: bytes sent or -errno",
              ret=_R.VALUE, length_arg3=True, way="send",
              tracepoint=_syscall_tp("sendto")),
    ProbeSpec("__sys_sendmsg", _L.SYSCALL, _D.TX, _C.SYSCALL_FD,
              "socket behind the fd; return: bytes sent or -errno", ret=_R.VALUE,
              way="sendmsg", tracepoint=_syscall_tp("sendmsg")),
    ProbeSpec("__sys_sendmmsg", _L.SYSCALL, _D.TX, _C.SYSCALL_FD,
              "socket behind the fd, messages offered; return: messages sent or -errno "
              "(bytes: tcp_sendmsg_locked's returns inside)", ret=_R.COUNT, way="sendmmsg",
              tracepoint=_syscall_tp("sendmmsg")),
    ProbeSpec("sock_write_iter", _L.SYSCALL, _D.TX, _C.KIOCB,
              "write(2)/writev(2) on a TCP socket, seen at the socket's file operation "
              "(it runs for sockets only: other files cost nothing), bytes offered; "
              "return: bytes written", ret=_R.VALUE, length_arg3=True, way="write/writev",
              tracepoint=_syscall_tp("write")),
    ProbeSpec("ksys_write", _L.SYSCALL, _D.TX, _C.SYSCALL_FD,
              "write(2) on a TCP socket, bytes requested; return: bytes written (fires for "
              "every file's write: sock_write_iter replaces it)",
              ret=_R.VALUE, length_arg3=True, way="write", superseded_by="sock_write_iter"),
    ProbeSpec("do_sendfile", _L.SYSCALL, _D.TX, _C.SYSCALL_FD,
              "sendfile(2) to a TCP socket (out_fd; other fds dropped in BPF); return: "
              "bytes sent", ret=_R.VALUE, may_inline=True, way="sendfile",
              tracepoint=_syscall_tp("sendfile")),
    ProbeSpec("__x64_sys_splice", _L.SYSCALL, _D.TX, _C.SYSCALL_REGS_FD3,
              "splice(2) into a TCP socket (fd_out; other fds dropped in BPF), len; "
              "return: bytes spliced", ret=_R.VALUE, length_arg3=True, way="splice",
              tracepoint=_syscall_tp("splice")),
    _io_uring("send", _D.TX, True),
    _io_uring("sendmsg", _D.TX, False),
    _io_uring("send_zc", _D.TX, True),
    _io_uring("sendmsg_zc", _D.TX, False),
    ProbeSpec("sock_sendmsg", _L.SOCKET, _D.TX, _C.SOCKET, "socket and flow"),
    ProbeSpec("inet_sendmsg", _L.SOCKET, _D.TX, _C.SOCKET, "socket and flow, bytes (size)",
              length_arg3=True),
    # -- send: TCP
    ProbeSpec("tcp_sendmsg", _L.TCP, _D.TX, _C.SOCK, "socket and flow, bytes (size)",
              length_arg3=True),
    ProbeSpec("tcp_sendmsg_locked", _L.TCP, _D.TX, _C.SOCK_WRITE_SEQ,
              "socket and flow, bytes (size), tp->write_seq (where its bytes go); "
              "return: bytes queued", ret=_R.VALUE, length_arg3=True),
    ProbeSpec("tcp_sendpage", _L.TCP, _D.TX, _C.SOCK_PAGE_WRITE_SEQ,
              "the page-send path of sendfile/splice: socket and flow, bytes (size), "
              "tp->write_seq; return: bytes queued", ret=_R.VALUE, length_arg3=True,
              absent_note="removed in Linux 6.5: sendfile and splice reach "
                          "tcp_sendmsg_locked (MSG_SPLICE_PAGES), traced there"),
    ProbeSpec("tcp_push", _L.TCP, _D.TX, _C.SOCK, "socket and flow", may_inline=True),
    ProbeSpec("__tcp_push_pending_frames", _L.TCP, _D.TX, _C.SOCK, "socket and flow"),
    ProbeSpec("tcp_write_xmit", _L.TCP, _D.TX, _C.SOCK, "socket and flow", may_inline=True),
    ProbeSpec("__tcp_transmit_skb", _L.TCP, _D.TX, _C.SOCK_SKB_CB,
              "socket, queued skb, seq/end_seq/flags from TCP_SKB_CB, ack (rcv_nxt)",
              alternates=("tcp_transmit_skb",), may_inline=True),
    ProbeSpec("tcp_retransmit_skb", _L.TCP, _D.TX, _C.SOCK_SKB_CB_NOACK,
              "socket, skb, seq/end_seq/flags of the segment sent again",
              tracepoint=Tracepoint(
                  "tcp_retransmit_skb", "tcp:tcp_retransmit_skb", "4.15",
                  "in __tcp_retransmit_skb after the send; seq range from TCP_SKB_CB")),
    ProbeSpec("tcp_send_ack", _L.TCP, _D.TX, _C.SOCK, "socket and flow (an ACK is built)"),
    ProbeSpec("tcp_v4_send_synack", _L.TCP, _D.TX, _C.SYNACK_REQ,
              "listener, request sock flow, SYN-ACK seq (snt_isn) and ack", may_inline=True),
    # -- send: IP and below
    ProbeSpec("ip_build_and_send_pkt", _L.IP, _D.TX, _C.SKB_L4_ADDRS,
              "SYN-ACK skb: TCP header, addresses from the arguments"),
    ProbeSpec("__ip_queue_xmit", _L.IP, _D.TX, _C.SOCK_SKB_L4,
              "socket, skb (the clone), TCP header", alternates=("ip_queue_xmit",)),
    ProbeSpec("__ip_local_out", _L.IP, _D.TX, _C.SKB_L3_3, _HDRS, alternates=("ip_local_out",)),
    ProbeSpec("ip_output", _L.IP, _D.TX, _C.SKB_L3_3, _HDRS),
    ProbeSpec("ip_finish_output2", _L.IP, _D.TX, _C.SKB_L3_3, _HDRS, may_inline=True),
    ProbeSpec("neigh_resolve_output", _L.IP, _D.TX, _C.SKB_L3_2,
              _HDRS + "; only while the neighbour entry is being resolved"),
    ProbeSpec("__dev_queue_xmit", _L.DEVICE, _D.TX, _C.SKB_L3_1, _HDRS,
              alternates=("dev_queue_xmit",),
              tracepoint=Tracepoint("net_dev_queue", "net:net_dev_queue", "3.3",
                                    "in __dev_queue_xmit; " + _TP_HDRS)),
    ProbeSpec("dev_qdisc_enqueue", _L.DEVICE, _D.TX, _C.SKB_L3_1,
              _HDRS + "; queued to the qdisc (devices with one: not lo, not veth)",
              may_inline=True),
    ProbeSpec("sch_direct_xmit", _L.DEVICE, _D.TX, _C.SKB_L3_1,
              _HDRS + "; dequeued from the qdisc to the driver"),
    ProbeSpec("dev_hard_start_xmit", _L.DEVICE, _D.TX, _C.SKB_L3_1, _HDRS,
              tracepoint=Tracepoint(
                  "net_dev_start_xmit", "net:net_dev_start_xmit", "3.18",
                  "in xmit_one, just before the driver's ndo_start_xmit; " + _TP_HDRS)),
    ProbeSpec("loopback_xmit", _L.DRIVER, _D.TX, _C.SKB_L3_1, _HDRS),
    ProbeSpec("veth_xmit", _L.DRIVER, _D.TX, _C.SKB_L3_1, _HDRS, module="veth"),
    ProbeSpec("start_xmit", _L.DRIVER, _D.TX, _C.SKB_L3_1, _HDRS + " (virtio-net)",
              module="virtio_net"),
    ProbeSpec("e1000_xmit_frame", _L.DRIVER, _D.TX, _C.SKB_L3_1, _HDRS, module="e1000"),
    # -- receive: device and softirq
    ProbeSpec("__netif_rx", _L.DEVICE, _D.RX, _C.SKB_RX,
              _HDRS + "; loopback and veth hand the skb to the backlog",
              alternates=("netif_rx",),
              tracepoint=Tracepoint("netif_rx", "net:netif_rx", "3.3",
                                    "in netif_rx; " + _TP_HDRS)),
    ProbeSpec("net_rx_action", _L.DEVICE, _D.RX, _C.SOFTIRQ,
              "the NET_RX softirq run (kept when it processes a traced segment)",
              tracepoint=Tracepoint(
                  "net_rx_softirq", "irq:softirq_entry (NET_RX)", "2.6.37",
                  "as the NET_RX softirq starts, before net_rx_action")),
    ProbeSpec("__netif_receive_skb", _L.DEVICE, _D.RX, _C.SKB_RX,
              _HDRS + "; the backlog (or NAPI) hands the skb to the stack",
              alternates=("__netif_receive_skb_one_core",), may_inline=True),
    ProbeSpec("__netif_receive_skb_core", _L.DEVICE, _D.RX, _C.SKB_PP_RX, _HDRS,
              may_inline=True,
              tracepoint=Tracepoint(
                  "netif_receive_skb", "net:netif_receive_skb", "3.3",
                  "in __netif_receive_skb_core; " + _TP_HDRS)),
    # -- receive: IP, TCP
    ProbeSpec("ip_rcv", _L.IP, _D.RX, _C.SKB_L3_1, _HDRS),
    ProbeSpec("ip_rcv_finish", _L.IP, _D.RX, _C.SKB_L3_3, _HDRS, may_inline=True),
    ProbeSpec("ip_local_deliver", _L.IP, _D.RX, _C.SKB_L3_1, _HDRS),
    ProbeSpec("tcp_v4_rcv", _L.TCP, _D.RX, _C.SKB_L3_1, _HDRS),
    ProbeSpec("tcp_conn_request", _L.TCP, _D.RX, _C.SKB_L3_4,
              _HDRS + "; a SYN reached a listener"),
    ProbeSpec("tcp_rcv_state_process", _L.TCP, _D.RX, _C.SOCK_SKB_L3,
              "socket, " + _HDRS + "; segments outside ESTABLISHED"),
    ProbeSpec("tcp_v4_do_rcv", _L.TCP, _D.RX, _C.SOCK_SKB_L3, "socket, " + _HDRS),
    ProbeSpec("tcp_rcv_established", _L.TCP, _D.RX, _C.SOCK_SKB_L3, "socket, " + _HDRS,
              tracepoint=Tracepoint(
                  "tcp_probe", "tcp:tcp_probe", "4.16",
                  "at tcp_rcv_established's entry; " + _TP_HDRS)),
    ProbeSpec("tcp_data_queue", _L.TCP, _D.RX, _C.SOCK_SKB_L3,
              "socket, " + _HDRS + "; slow path", may_inline=True),
    ProbeSpec("tcp_queue_rcv", _L.TCP, _D.RX, _C.SOCK_SKB_L3,
              "socket, " + _HDRS + "; appended to the receive queue", may_inline=True),
    ProbeSpec("tcp_fin", _L.TCP, _D.RX, _C.SOCK, "socket and flow: the peer's FIN arrived"),
    ProbeSpec("sock_def_readable", _L.SOCKET, _D.RX, _C.SOCK,
              "socket and flow: the reader is woken (sk_data_ready)",
              tracepoint=Tracepoint(
                  "sk_data_ready", "sock:sk_data_ready", "6.3",
                  "as the socket's sk_data_ready is called; socket and flow")),
    # -- receive: system calls
    ProbeSpec("__sys_recvfrom", _L.SYSCALL, _D.RX, _C.SYSCALL_FD,
              "socket behind the fd, buffer size; return: bytes received or -errno",
              ret=_R.VALUE, length_arg3=True, way="recv",
              tracepoint=_syscall_tp("recvfrom")),
    ProbeSpec("__sys_recvmsg", _L.SYSCALL, _D.RX, _C.SYSCALL_FD,
              "socket behind the fd; return: bytes received or -errno", ret=_R.VALUE,
              way="recvmsg", tracepoint=_syscall_tp("recvmsg")),
    ProbeSpec("__x64_sys_recvmmsg", _L.SYSCALL, _D.RX, _C.SYSCALL_REGS_FD1,
              "recvmmsg(2) on a TCP socket: the socket behind the fd (saved registers); "
              "return: messages received or -errno (bytes: tcp_recvmsg's returns inside)",
              ret=_R.COUNT, way="recvmmsg", tracepoint=_syscall_tp("recvmmsg")),
    ProbeSpec("__sys_recvmmsg", _L.SYSCALL, _D.RX, _C.SYSCALL_FD,
              "socket behind the fd, messages offered; return: messages received or -errno "
              "(bytes: tcp_recvmsg's returns inside; static: 6.1 inlines it into the "
              "recvmmsg system call, whose calls this symbol never sees)",
              ret=_R.COUNT, way="recvmmsg", superseded_by="__x64_sys_recvmmsg"),
    ProbeSpec("sock_read_iter", _L.SYSCALL, _D.RX, _C.KIOCB,
              "read(2)/readv(2) on a TCP socket, seen at the socket's file operation "
              "(sockets only), buffer size; return: bytes read", ret=_R.VALUE,
              length_arg3=True, way="read/readv", tracepoint=_syscall_tp("read")),
    ProbeSpec("ksys_read", _L.SYSCALL, _D.RX, _C.SYSCALL_FD,
              "read(2) on a TCP socket, buffer size; return: bytes read (fires for every "
              "file's read: sock_read_iter replaces it)",
              ret=_R.VALUE, length_arg3=True, way="read", superseded_by="sock_read_iter"),
    ProbeSpec("sock_splice_read", _L.SYSCALL, _D.RX, _C.FILE_LEN4,
              "splice(2) out of a TCP socket into a pipe, seen at the socket's file "
              "operation (sockets only), bytes asked for; return: bytes spliced",
              ret=_R.VALUE, length_arg3=True, way="splice"),
    _io_uring("recv", _D.RX, True),
    _io_uring("recvmsg", _D.RX, False),
    ProbeSpec("sock_recvmsg", _L.SOCKET, _D.RX, _C.SOCKET, "socket and flow"),
    ProbeSpec("inet_recvmsg", _L.SOCKET, _D.RX, _C.SOCKET, "socket and flow, buffer size",
              length_arg3=True),
    ProbeSpec("tcp_recvmsg", _L.TCP, _D.RX, _C.SOCK_COPIED_SEQ,
              "socket and flow, buffer size, tp->copied_seq (the first byte it returns); "
              "return: bytes copied or -errno", ret=_R.VALUE, length_arg3=True),
    ProbeSpec("tcp_splice_read", _L.TCP, _D.RX, _C.SOCKET_COPIED_SEQ,
              "splice out of the socket: socket and flow, bytes asked for, tp->copied_seq "
              "(the first byte it moves to the pipe); return: bytes spliced or -errno",
              ret=_R.VALUE, length_arg3=True),
    ProbeSpec("tcp_recvmsg_locked", _L.TCP, _D.RX, _C.SOCK,
              "socket and flow, buffer size", length_arg3=True, may_inline=True),
    ProbeSpec("__skb_datagram_iter", _L.TCP, _D.RX, _C.DATAGRAM_ITER,
              "skb, sequence range and bytes copied to user",
              alternates=("skb_copy_datagram_iter",), may_inline=True,
              tracepoint=Tracepoint(
                  "skb_copy_datagram", "skb:skb_copy_datagram_iovec", "3.13",
                  "in skb_copy_datagram_iter; sequence range from tp->copied_seq, bytes")),
    # -- connection life
    ProbeSpec("tcp_v4_connect", _L.TCP, _D.TX, _C.SOCK,
              "connecting socket; return: 0 or -errno (flow known at return)", ret=_R.VALUE),
    ProbeSpec("inet_csk_accept", _L.TCP, _D.RX, _C.SOCK,
              "listening socket; return: the accepted socket and its flow", ret=_R.SOCK),
    ProbeSpec("tcp_close", _L.TCP, _D.TX, _C.SOCK, "socket and flow: close(2) on it"),
)

BY_NAME: dict[str, ProbeSpec] = {spec.name: spec for spec in CATALOG}

# Profiles name subsets of the catalog.
PROFILES: dict[str, tuple[str, ...]] = {
    # The seeds' gdb breakpoints.
    "minimal": (
        "__sys_sendto", "tcp_sendmsg_locked", "tcp_push", "__tcp_push_pending_frames",
        "tcp_write_xmit", "__tcp_transmit_skb", "__sys_recvfrom", "sock_recvmsg",
        "tcp_recvmsg", "__skb_datagram_iter",
    ),
    # The seeds' whole chain (DESIGN.md section 3), the SYN-ACK's own path,
    # and the receive path up to the reader's copy.
    "default": (
        "__sys_sendto", "__sys_sendmsg", "__sys_sendmmsg", "sock_write_iter",
        "do_sendfile", "__x64_sys_splice", "io_send", "io_sendmsg", "io_send_zc",
        "io_sendmsg_zc", "sock_sendmsg", "inet_sendmsg", "tcp_sendmsg",
        "tcp_sendmsg_locked", "tcp_sendpage", "tcp_push", "__tcp_push_pending_frames",
        "tcp_write_xmit", "__tcp_transmit_skb",
        "tcp_v4_send_synack", "ip_build_and_send_pkt", "__ip_queue_xmit", "__ip_local_out",
        "ip_output", "ip_finish_output2", "neigh_resolve_output", "__dev_queue_xmit",
        "dev_hard_start_xmit", "loopback_xmit", "veth_xmit", "__netif_rx", "net_rx_action",
        "__netif_receive_skb", "__netif_receive_skb_core", "ip_rcv", "ip_rcv_finish",
        "ip_local_deliver", "tcp_v4_rcv", "tcp_v4_do_rcv", "tcp_rcv_established", "tcp_data_queue",
        "tcp_queue_rcv", "sock_def_readable", "__sys_recvfrom", "__sys_recvmsg",
        "__x64_sys_recvmmsg", "sock_read_iter", "sock_splice_read", "io_recv", "io_recvmsg",
        "sock_recvmsg", "inet_recvmsg", "tcp_recvmsg", "tcp_splice_read", "tcp_recvmsg_locked",
        "__skb_datagram_iter",
    ),
    "full": tuple(spec.name for spec in CATALOG if not spec.superseded_by),
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
