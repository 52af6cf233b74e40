// kpath's CO-RE BPF object: compiled once by clang (scripts/build-bpf.sh,
// run by scripts/setup.sh) into kpath.bpf.o, which tracer/capture/core.py
// loads through the system libbpf. No headers and no compiler at run time;
// CO-RE relocations adapt field offsets to the running kernel.
//
// Two ways to observe a catalog probe:
// - kprobes (kernels with CONFIG_KPROBES): one routine per capture kind
//   (probes/catalog.py: Capture), attached to every function of that kind;
//   the attach cookie is the probe's index in the session's probe table.
// - tp_btf tracepoints (every kernel with BTF, kprobes or not): one program
//   per tracepoint; the probe index comes from tp_probe[], read-only data
//   set before load. Programs whose tracepoint or probe is not wanted are
//   switched off before load (SEC("?...")), so an absent tracepoint never
//   fails the object.
//
// Configuration is read-only data (cfg, tp_probe) or maps (traced_pids):
// user input is validated in Python and arrives as numbers.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "kp_event.h"

char LICENSE[] SEC("license") = "GPL";

#define KP_AF_INET 2
#define KP_ETH_P_IP 0x0800
#define KP_NET_RX_SOFTIRQ 3
#define KP_NONE 0xffffffffU

// Tracepoint hooks: the index of each in tp_probe[]. Must match TP_HOOKS in
// tracer/capture/core_plan.py.
enum tp_hook {
    TP_SYS_SENDTO,
    TP_SYS_RECVFROM,
    TP_SYS_SENDMSG,
    TP_SYS_RECVMSG,
    TP_SYS_WRITE,
    TP_SYS_READ,
    TP_NET_DEV_QUEUE,
    TP_NET_DEV_START_XMIT,
    TP_NETIF_RX,
    TP_NET_RX_SOFTIRQ,
    TP_NETIF_RECEIVE_SKB,
    TP_TCP_PROBE,
    TP_SK_DATA_READY,
    TP_SKB_COPY_DATAGRAM,
    TP_TCP_RETRANSMIT_SKB,
    TP_COUNT,
};

// x86_64 system call numbers (the only architecture kpath builds for).
#define NR_READ 0
#define NR_WRITE 1
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47

const volatile struct kp_config cfg = {};
const volatile u32 tp_probe[TP_COUNT] = {};
// Wake the reader only once this many bytes are unread (0: on every record,
// the kernel's default). The reader also polls on a timer, so a trickle is
// still read; a burst wakes it early.
const volatile u64 wakeup_bytes = 0;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 512 * 4096);  // resized before load (--buffer-pages)
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, u32);
    __type(value, u8);
} traced_pids SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct flow_key);
    __type(value, u8);
} traced_flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, struct irq_state);
} irq_state SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, u64);
    __type(value, u64);
} lost_by_ip SEC(".maps");

// Entries that passed the filter, value = sk. LRU: entries of probes
// without a return are never looked up and age out.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 16384);
    __type(key, struct ret_key);
    __type(value, u64);
} pending_ret SEC(".maps");

// The NET_RX run has no flow of its own: with filters on, it is held here
// and emitted just before the first kept event of the same softirq run.
struct pending_softirq {
    u64 valid;
    struct kp_event ev;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, struct pending_softirq);
} pending_rx SEC(".maps");

// Wire headers, read as bytes (no CO-RE: their layout is the protocol's).
struct kp_iphdr {
    u8 ver_ihl;
    u8 tos;
    u16 tot_len;
    u16 id;
    u16 frag_off;
    u8 ttl;
    u8 protocol;
    u16 check;
    u32 saddr;
    u32 daddr;
};

struct kp_tcphdr {
    u16 source;
    u16 dest;
    u32 seq;
    u32 ack_seq;
    u8 doff_res;
    u8 flags;
    u16 window;
    u16 check;
    u16 urg_ptr;
};

// ---- execution context, from the irq tracepoints ----

static __always_inline void event_init(struct kp_event *e, u64 probe, u8 kind);

// Each event is built on its program's own stack, never in a shared per-CPU
// buffer: a softirq can interrupt a program mid-way (in task context, BPF
// runs with interrupts on) and run other programs on the same CPU, which
// would overwrite a shared buffer under it.
#define EVENT_START(e, probe, kind)                                            \
    struct kp_event e##_buf = {};                                              \
    struct kp_event *e = &e##_buf;                                             \
    event_init(e, probe, kind)
static __always_inline int emit(struct kp_event *e);
static __always_inline int task_filter_set(void);

static __always_inline int softirq_run(u64 probe) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (!cfg.port && !task_filter_set())
        return emit(e);
    u32 zero = 0;
    struct pending_softirq *p = bpf_map_lookup_elem(&pending_rx, &zero);
    if (p) {
        __builtin_memcpy(&p->ev, e, sizeof(*e));
        p->valid = 1;
    }
    return 0;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(tp_softirq_entry, unsigned int vec_nr) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st)
        st->softirq_vec = vec_nr + 1;
    u32 probe = tp_probe[TP_NET_RX_SOFTIRQ];
    if (vec_nr == KP_NET_RX_SOFTIRQ && probe != KP_NONE)
        softirq_run(probe);
    return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(tp_softirq_exit, unsigned int vec_nr) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st)
        st->softirq_vec = 0;
    struct pending_softirq *p = bpf_map_lookup_elem(&pending_rx, &zero);
    if (p)
        p->valid = 0;
    return 0;
}

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(tp_irq_entry, int irq, struct irqaction *action) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st)
        st->hardirq = 1;
    return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(tp_irq_exit, int irq, struct irqaction *action, int ret) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st)
        st->hardirq = 0;
    return 0;
}

// Children of a traced command are traced too.
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tp_fork, struct task_struct *parent, struct task_struct *child) {
    u32 ptgid = BPF_CORE_READ(parent, tgid);
    u32 ctgid = BPF_CORE_READ(child, tgid);
    if (ptgid != ctgid && bpf_map_lookup_elem(&traced_pids, &ptgid)) {
        u8 one = 1;
        bpf_map_update_elem(&traced_pids, &ctgid, &one, BPF_ANY);
    }
    return 0;
}

// ---- helpers ----

static __always_inline void event_init(struct kp_event *e, u64 probe, u8 kind) {
    u32 zero = 0;
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->ip = probe;
    e->tgid = id >> 32;
    e->tid = (u32)id;
    e->cpu = bpf_get_smp_processor_id();
    e->kind = kind;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st) {
        if (st->hardirq)
            e->ctx = CTX_HARDIRQ;
        else if (st->softirq_vec) {
            e->ctx = CTX_SOFTIRQ;
            e->vec = st->softirq_vec - 1;
        }
    }
}

// Flow from a socket (or request sock): local endpoint as source.
static __always_inline int read_sock_common(struct sock_common *skc, struct kp_event *e) {
    if (BPF_CORE_READ(skc, skc_family) != KP_AF_INET)
        return 0;
    e->saddr = BPF_CORE_READ(skc, skc_rcv_saddr);
    e->daddr = BPF_CORE_READ(skc, skc_daddr);
    e->sport = BPF_CORE_READ(skc, skc_num);
    e->dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
    e->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
    e->has |= HAS_TUPLE;
    return 1;
}

static __always_inline int read_sock(struct sock *sk, struct kp_event *e) {
    e->sk = (u64)sk;
    if (!sk)
        return 0;
    return read_sock_common(&sk->__sk_common, e);
}

static __always_inline int sock_is_tcp(struct sock *sk) {
    return BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline void read_tcp_header(struct kp_tcphdr *th, u32 payload,
                                            struct kp_event *e) {
    u8 flags = th->flags;
    e->sport = bpf_ntohs(th->source);
    e->dport = bpf_ntohs(th->dest);
    e->seq = bpf_ntohl(th->seq);
    e->ack = bpf_ntohl(th->ack_seq);
    e->tcp_flags = flags;
    e->length = payload;
    e->end_seq = e->seq + payload + ((flags & TCPF_SYN) ? 1 : 0) + ((flags & TCPF_FIN) ? 1 : 0);
    e->has |= HAS_SEQ | HAS_LEN | HAS_FLAGS | ((flags & TCPF_ACK) ? HAS_ACK : 0);
}

// IPv4 + TCP headers starting at ip (a kernel address). ip_len is the
// packet length from ip onwards per the skb, used while tot_len is still 0
// (before __ip_local_out fills it in) or for GSO packets over 64 KiB.
static __always_inline int read_ip_tcp(unsigned char *ip, u32 ip_len, struct kp_event *e) {
    struct kp_iphdr iph = {};
    bpf_probe_read_kernel(&iph, sizeof(iph), ip);
    if ((iph.ver_ihl >> 4) != 4 || iph.protocol != IPPROTO_TCP)
        return 0;
    u32 ihl = (iph.ver_ihl & 0x0f) * 4;
    struct kp_tcphdr th = {};
    bpf_probe_read_kernel(&th, sizeof(th), ip + ihl);
    u32 tot = bpf_ntohs(iph.tot_len);
    if (tot == 0)
        tot = ip_len;
    read_tcp_header(&th, tot - ihl - (th.doff_res >> 4) * 4, e);
    e->saddr = iph.saddr;
    e->daddr = iph.daddr;
    e->has |= HAS_TUPLE;
    return 1;
}

// Headers located by skb->network_header (set once IP has built or seen them).
static __always_inline int read_skb_l3(struct sk_buff *skb, struct kp_event *e) {
    unsigned char *head = BPF_CORE_READ(skb, head);
    unsigned char *data = BPF_CORE_READ(skb, data);
    u32 len = BPF_CORE_READ(skb, len);
    u16 nh = BPF_CORE_READ(skb, network_header);
    if (nh == (u16)~0U)
        return 0;
    // skb->len counts from skb->data, which may sit before (link header) or
    // after (pulled) the IP header.
    u32 ip_len = len + (u32)(data - (head + nh));
    return read_ip_tcp(head + nh, ip_len, e);
}

// On receive before IP the link header has been pulled: skb->data is IPv4.
static __always_inline int read_skb_rx(struct sk_buff *skb, struct kp_event *e) {
    if (BPF_CORE_READ(skb, protocol) != bpf_htons(KP_ETH_P_IP))
        return 0;
    return read_ip_tcp(BPF_CORE_READ(skb, data), BPF_CORE_READ(skb, len), e);
}

static __always_inline void read_skb_netns(struct sk_buff *skb, struct kp_event *e) {
    struct net_device *dev = BPF_CORE_READ(skb, dev);
    if (dev)
        e->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
}

// TCP header located by skb->transport_header (IP header not built yet).
// Ports come from the header; addresses are the caller's business.
static __always_inline int read_skb_l4(struct sk_buff *skb, struct kp_event *e) {
    unsigned char *head = BPF_CORE_READ(skb, head);
    u16 th_off = BPF_CORE_READ(skb, transport_header);
    u32 len = BPF_CORE_READ(skb, len);
    if (th_off == (u16)~0U)
        return 0;
    struct kp_tcphdr th = {};
    bpf_probe_read_kernel(&th, sizeof(th), head + th_off);
    read_tcp_header(&th, len - (th.doff_res >> 4) * 4, e);
    return 1;
}

static __always_inline struct tcp_skb_cb *skb_tcp_cb(struct sk_buff *skb) {
    return (struct tcp_skb_cb *)__builtin_preserve_access_index(&skb->cb[0]);
}

// ---- filtering ----

static __always_inline int task_filter_set(void) {
    return cfg.tgid || cfg.use_pid_map || cfg.comm_set;
}

static __always_inline int task_matches(struct kp_event *e) {
    if (e->ctx != CTX_TASK)
        return 0;
    if (cfg.tgid && e->tgid != cfg.tgid)
        return 0;
    if (cfg.use_pid_map && !bpf_map_lookup_elem(&traced_pids, &e->tgid))
        return 0;
    if (cfg.comm_set) {
#pragma unroll
        for (int i = 0; i < KP_COMM_LEN; i++) {
            if (e->comm[i] != cfg.comm[i])
                return 0;
            if (cfg.comm[i] == 0)
                break;
        }
    }
    return 1;
}

// Decide whether an event is kept. A task filter marks the flows its tasks
// touch, so the same flow's softirq and peer events are kept too.
static __always_inline int keep_event(struct kp_event *e) {
    int has_tuple = e->has & HAS_TUPLE;
    if (cfg.port && (!has_tuple || (e->sport != cfg.port && e->dport != cfg.port)))
        return 0;
    if (!task_filter_set())
        return 1;
    if (task_matches(e)) {
        if (has_tuple) {
            struct flow_key k = make_flow_key(e);
            u8 one = 1;
            bpf_map_update_elem(&traced_flows, &k, &one, BPF_ANY);
        }
        return 1;
    }
    if (has_tuple) {
        struct flow_key k = make_flow_key(e);
        if (bpf_map_lookup_elem(&traced_flows, &k))
            return 1;
    }
    return 0;
}

static __always_inline int emit(struct kp_event *e) {
    u64 flags = 0;
    if (wakeup_bytes)
        flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
                    ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    if (bpf_ringbuf_output(&events, e, sizeof(*e), flags)) {
        // Ring buffers report no loss themselves: count it per probe.
        u64 zero64 = 0;
        u64 *n = bpf_map_lookup_elem(&lost_by_ip, &e->ip);
        if (!n) {
            bpf_map_update_elem(&lost_by_ip, &e->ip, &zero64, BPF_NOEXIST);
            n = bpf_map_lookup_elem(&lost_by_ip, &e->ip);
        }
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    return 0;
}

static __always_inline int submit(struct kp_event *e) {
    if (!keep_event(e))
        return 0;
    if (e->ctx == CTX_SOFTIRQ) {
        u32 zero = 0;
        struct pending_softirq *p = bpf_map_lookup_elem(&pending_rx, &zero);
        if (p && p->valid) {
            p->valid = 0;
            emit(&p->ev);
        }
    }
    // Remember kept entries so the matching return is kept: the return
    // cannot see the arguments any more.
    if (e->kind == KIND_ENTRY) {
        struct ret_key rk = {.tid = e->tid, .ip = e->ip};
        u64 sk = e->sk;
        bpf_map_update_elem(&pending_ret, &rk, &sk, BPF_ANY);
    }
    return emit(e);
}

// ---- capture routines shared by kprobes and tracepoints ----

static __always_inline int submit_socket(struct socket *sock, struct kp_event *e) {
    if (!sock)
        return 0;
    struct sock *sk = BPF_CORE_READ(sock, sk);
    if (BPF_CORE_READ(sock, type) != SOCK_STREAM || !sk || !sock_is_tcp(sk))
        return 0;
    if (!read_sock(sk, e))
        return 0;
    return submit(e);
}

// A system call on a file descriptor: the TCP socket behind it, if any.
static __always_inline int syscall_fd(u64 probe, int fd, u64 len) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (fd < 0)
        return 0;
    e->arg3 = len;
    e->has |= HAS_ARG3;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
    if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
        return 0;
    struct file **fds = BPF_CORE_READ(fdt, fd);
    struct file *file = 0;
    bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
    if (!file)
        return 0;
    struct socket *sock = BPF_CORE_READ(file, private_data);
    // A socket points back at its file; anything else behind the fd does not.
    if (!sock || BPF_CORE_READ(sock, file) != file)
        return 0;
    return submit_socket(sock, e);
}

// A return: kept only if its entry was kept; the flow is the entry's socket
// (or, with sock_ret, the returned struct sock *).
static __always_inline int on_return(u64 probe, s64 ret, int sock_ret) {
    EVENT_START(e, probe, KIND_RETURN);
    struct ret_key rk = {.tid = e->tid, .ip = e->ip};
    u64 *skp = bpf_map_lookup_elem(&pending_ret, &rk);
    if (!skp)
        return 0;
    struct sock *sk = (struct sock *)*skp;
    bpf_map_delete_elem(&pending_ret, &rk);
    e->ret = ret;
    e->has |= HAS_RET;
    if (sock_ret)
        sk = (struct sock *)ret;
    if (sk)
        read_sock(sk, e);
    // The entry already passed the filter.
    return emit(e);
}

static __always_inline int sock_entry(u64 probe, struct sock *sk, u64 arg3) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->arg3 = arg3;
    e->has |= HAS_ARG3;
    if (!read_sock(sk, e))
        return 0;
    return submit(e);
}

// A socket call with the stream position the kernel reads or writes at
// (tp->write_seq, tp->copied_seq), recorded in seq.
static __always_inline int sock_stream_pos(u64 probe, struct sock *sk, u64 arg3, u32 pos) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->arg3 = arg3;
    e->has |= HAS_ARG3;
    if (!read_sock(sk, e) || !sock_is_tcp(sk))
        return 0;
    e->seq = pos;
    e->end_seq = pos;
    e->has |= HAS_SEQ;
    return submit(e);
}

static __always_inline int skb_l3(u64 probe, struct sk_buff *skb, struct sock *sk) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (!skb)
        return 0;
    e->skb = (u64)skb;
    if (!read_skb_l3(skb, e))
        return 0;
    if (!sk)
        sk = BPF_CORE_READ(skb, sk);
    e->sk = (u64)sk;
    read_skb_netns(skb, e);
    return submit(e);
}

static __always_inline int skb_rx(u64 probe, struct sk_buff *skb) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (!skb)
        return 0;
    e->skb = (u64)skb;
    if (!read_skb_rx(skb, e))
        return 0;
    read_skb_netns(skb, e);
    return submit(e);
}

// __tcp_transmit_skb / tcp_retransmit_skb: the TCP header is not built yet,
// so seq/flags come from TCP_SKB_CB and the ack from rcv_nxt when known.
static __always_inline int sock_skb_cb(u64 probe, struct sock *sk, struct sk_buff *skb,
                                       int has_ack, u32 rcv_nxt) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (!read_sock(sk, e))
        return 0;
    e->skb = (u64)skb;
    struct tcp_skb_cb *tcb = skb_tcp_cb(skb);
    u8 flags = BPF_CORE_READ(tcb, tcp_flags);
    e->seq = BPF_CORE_READ(tcb, seq);
    e->end_seq = BPF_CORE_READ(tcb, end_seq);
    e->tcp_flags = flags;
    e->length = e->end_seq - e->seq - ((flags & TCPF_SYN) ? 1 : 0) - ((flags & TCPF_FIN) ? 1 : 0);
    e->has |= HAS_SEQ | HAS_LEN | HAS_FLAGS;
    if (has_ack && (flags & TCPF_ACK)) {
        e->ack = rcv_nxt;
        e->has |= HAS_ACK;
    }
    return submit(e);
}

// ---- kprobes: the attach cookie is the probe index ----

#define COOKIE(ctx) bpf_get_attach_cookie(ctx)

SEC("?kprobe")
int kp_syscall_fd(struct pt_regs *ctx) {
    return syscall_fd(COOKIE(ctx), (int)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx));
}

// sock_write_iter / sock_read_iter(struct kiocb *iocb, struct iov_iter *it):
// write(2), writev(2), read(2), readv(2) (and io_uring's) on a socket, and
// on nothing else: a file's write never gets here, so non-socket I/O costs
// nothing. arg3 is the bytes offered (it->count).
SEC("?kprobe")
int kp_kiocb(struct pt_regs *ctx) {
    EVENT_START(e, COOKIE(ctx), KIND_ENTRY);
    struct kiocb *iocb = (struct kiocb *)PT_REGS_PARM1(ctx);
    struct iov_iter *it = (struct iov_iter *)PT_REGS_PARM2(ctx);
    struct file *file = BPF_CORE_READ(iocb, ki_filp);
    e->arg3 = BPF_CORE_READ(it, count);
    e->has |= HAS_ARG3;
    if (!file)
        return 0;
    struct socket *sock = BPF_CORE_READ(file, private_data);
    if (!sock || BPF_CORE_READ(sock, file) != file)
        return 0;
    return submit_socket(sock, e);
}

// __x64_sys_splice(const struct pt_regs *regs): splice(fd_in, off_in,
// fd_out, off_out, len, flags) from the saved registers; the socket written
// is fd_out (third); arg3 is len (fifth).
SEC("?kprobe")
int kp_syscall_regs_fd3(struct pt_regs *ctx) {
    struct pt_regs *regs = (struct pt_regs *)PT_REGS_PARM1(ctx);
    return syscall_fd(COOKIE(ctx), (int)BPF_CORE_READ(regs, dx), BPF_CORE_READ(regs, r8));
}

SEC("?kprobe")
int kp_socket(struct pt_regs *ctx) {
    EVENT_START(e, COOKIE(ctx), KIND_ENTRY);
    e->arg3 = PT_REGS_PARM3(ctx);
    e->has |= HAS_ARG3;
    return submit_socket((struct socket *)PT_REGS_PARM1(ctx), e);
}

SEC("?kprobe")
int kp_sock(struct pt_regs *ctx) {
    return sock_entry(COOKIE(ctx), (struct sock *)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx));
}

// tcp_sendmsg_locked(sk, msg, size): where the kernel puts the bytes in
// the stream. seq is tp->write_seq at entry: the call appends `return
// value` bytes from there, whatever else wrote the socket before.
SEC("?kprobe")
int kp_sock_write_seq(struct pt_regs *ctx) {
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    return sock_stream_pos(COOKIE(ctx), sk, PT_REGS_PARM3(ctx),
                           BPF_CORE_READ((struct tcp_sock *)sk, write_seq));
}

// tcp_sendpage / do_tcp_sendpages(sk, page, offset, size, flags): the
// page-send path of sendfile and splice before Linux 6.5. As
// kp_sock_write_seq; the byte count is the fourth argument.
SEC("?kprobe")
int kp_sock_page_write_seq(struct pt_regs *ctx) {
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    return sock_stream_pos(COOKIE(ctx), sk, PT_REGS_PARM4(ctx),
                           BPF_CORE_READ((struct tcp_sock *)sk, write_seq));
}

// tcp_recvmsg(sk, msg, len, ...): seq is tp->copied_seq at entry, the first
// stream byte the call returns (unless MSG_PEEK).
SEC("?kprobe")
int kp_sock_copied_seq(struct pt_regs *ctx) {
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    return sock_stream_pos(COOKIE(ctx), sk, PT_REGS_PARM3(ctx),
                           BPF_CORE_READ((struct tcp_sock *)sk, copied_seq));
}

SEC("?kprobe")
int kp_sock_skb_cb(struct pt_regs *ctx) {
    return sock_skb_cb(COOKIE(ctx), (struct sock *)PT_REGS_PARM1(ctx),
                       (struct sk_buff *)PT_REGS_PARM2(ctx), 1, (u32)PT_REGS_PARM5(ctx));
}

SEC("?kprobe")
int kp_sock_skb_cb_noack(struct pt_regs *ctx) {
    return sock_skb_cb(COOKIE(ctx), (struct sock *)PT_REGS_PARM1(ctx),
                       (struct sk_buff *)PT_REGS_PARM2(ctx), 0, 0);
}

// (sk, skb, ...) below TCP on transmit: TCP header built, IP header not yet.
SEC("?kprobe")
int kp_sock_skb_l4(struct pt_regs *ctx) {
    EVENT_START(e, COOKIE(ctx), KIND_ENTRY);
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM2(ctx);
    if (!read_sock(sk, e) || !sock_is_tcp(sk))
        return 0;
    e->skb = (u64)skb;
    if (!read_skb_l4(skb, e))
        return 0;
    return submit(e);
}

SEC("?kprobe")
int kp_skb_l3_1(struct pt_regs *ctx) {
    return skb_l3(COOKIE(ctx), (struct sk_buff *)PT_REGS_PARM1(ctx), 0);
}

SEC("?kprobe")
int kp_skb_l3_2(struct pt_regs *ctx) {
    return skb_l3(COOKIE(ctx), (struct sk_buff *)PT_REGS_PARM2(ctx), 0);
}

SEC("?kprobe")
int kp_skb_l3_3(struct pt_regs *ctx) {
    return skb_l3(COOKIE(ctx), (struct sk_buff *)PT_REGS_PARM3(ctx), 0);
}

SEC("?kprobe")
int kp_skb_l3_4(struct pt_regs *ctx) {
    return skb_l3(COOKIE(ctx), (struct sk_buff *)PT_REGS_PARM4(ctx), 0);
}

SEC("?kprobe")
int kp_sock_skb_l3(struct pt_regs *ctx) {
    return skb_l3(COOKIE(ctx), (struct sk_buff *)PT_REGS_PARM2(ctx),
                  (struct sock *)PT_REGS_PARM1(ctx));
}

SEC("?kprobe")
int kp_skb_rx(struct pt_regs *ctx) {
    return skb_rx(COOKIE(ctx), (struct sk_buff *)PT_REGS_PARM1(ctx));
}

// (struct sk_buff **pskb, ...): __netif_receive_skb_core.
SEC("?kprobe")
int kp_skb_pp_rx(struct pt_regs *ctx) {
    struct sk_buff **pskb = (struct sk_buff **)PT_REGS_PARM1(ctx);
    struct sk_buff *skb = 0;
    bpf_probe_read_kernel(&skb, sizeof(skb), pskb);
    return skb_rx(COOKIE(ctx), skb);
}

// ip_build_and_send_pkt(skb, sk, saddr, daddr, opt, tos): the SYN-ACK's IP
// step. TCP header built; addresses come as arguments.
SEC("?kprobe")
int kp_skb_l4_addrs(struct pt_regs *ctx) {
    EVENT_START(e, COOKIE(ctx), KIND_ENTRY);
    struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM1(ctx);
    struct sock *sk = (struct sock *)PT_REGS_PARM2(ctx);
    e->skb = (u64)skb;
    if (!read_skb_l4(skb, e))
        return 0;
    e->saddr = (u32)PT_REGS_PARM3(ctx);
    e->daddr = (u32)PT_REGS_PARM4(ctx);
    e->has |= HAS_TUPLE;
    if (sk) {
        e->sk = (u64)sk;
        e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
    }
    return submit(e);
}

// net_rx_action: the NET_RX softirq run itself.
SEC("?kprobe")
int kp_softirq(struct pt_regs *ctx) {
    return softirq_run(COOKIE(ctx));
}

// tcp_v4_send_synack(sk, dst, fl, req, foc, type, syn_skb): the SYN-ACK is
// built from the request sock and never passes __tcp_transmit_skb.
SEC("?kprobe")
int kp_synack_req(struct pt_regs *ctx) {
    EVENT_START(e, COOKIE(ctx), KIND_ENTRY);
    struct request_sock *req = (struct request_sock *)PT_REGS_PARM4(ctx);
    e->sk = (u64)PT_REGS_PARM1(ctx);
    if (!req || !read_sock_common(&req->__req_common, e))
        return 0;
    struct tcp_request_sock *treq = (struct tcp_request_sock *)req;
    u32 snt_isn = BPF_CORE_READ(treq, snt_isn);
    e->seq = snt_isn;
    e->end_seq = snt_isn + 1;
    e->ack = BPF_CORE_READ(treq, rcv_isn) + 1;
    e->tcp_flags = TCPF_SYN | TCPF_ACK;
    e->length = 0;
    e->has |= HAS_SEQ | HAS_ACK | HAS_FLAGS | HAS_LEN;
    return submit(e);
}

// __skb_datagram_iter(skb, offset, to, len, ...): the copy to user space.
SEC("?kprobe")
int kp_datagram_iter(struct pt_regs *ctx) {
    EVENT_START(e, COOKIE(ctx), KIND_ENTRY);
    struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM1(ctx);
    int offset = (int)PT_REGS_PARM2(ctx);
    int len = (int)PT_REGS_PARM4(ctx);
    struct sock *sk = BPF_CORE_READ(skb, sk);
    if (!sk || !sock_is_tcp(sk) || !read_sock(sk, e))
        return 0;
    e->skb = (u64)skb;
    // Received skbs carry their start sequence in TCP_SKB_CB (tcp_v4_fill_cb).
    e->seq = BPF_CORE_READ(skb_tcp_cb(skb), seq) + offset;
    e->end_seq = e->seq + len;
    e->length = len;
    e->has |= HAS_SEQ | HAS_LEN;
    return submit(e);
}

SEC("?kretprobe")
int kp_return(struct pt_regs *ctx) {
    return on_return(COOKIE(ctx), PT_REGS_RC(ctx), 0);
}

SEC("?kretprobe")
int kp_return_sock(struct pt_regs *ctx) {
    return on_return(COOKIE(ctx), PT_REGS_RC(ctx), 1);
}

// ---- tracepoints (tp_btf): where the kernel has no kprobes ----

static __always_inline u32 syscall_hook(long id) {
    switch (id) {
    case NR_SENDTO: return TP_SYS_SENDTO;
    case NR_RECVFROM: return TP_SYS_RECVFROM;
    case NR_SENDMSG: return TP_SYS_SENDMSG;
    case NR_RECVMSG: return TP_SYS_RECVMSG;
    case NR_WRITE: return TP_SYS_WRITE;
    case NR_READ: return TP_SYS_READ;
    }
    return TP_COUNT;
}

static __always_inline u32 hook_probe(u32 hook) {
    if (hook >= TP_COUNT)
        return KP_NONE;
    return tp_probe[hook];
}

// raw_syscalls:sys_enter(regs, id): fd, buffer, length in the registers.
SEC("?tp_btf/sys_enter")
int BPF_PROG(tp_sys_enter, struct pt_regs *regs, long id) {
    u32 probe = hook_probe(syscall_hook(id));
    if (probe == KP_NONE)
        return 0;
    return syscall_fd(probe, (int)BPF_CORE_READ(regs, di), BPF_CORE_READ(regs, dx));
}

SEC("?tp_btf/sys_exit")
int BPF_PROG(tp_sys_exit, struct pt_regs *regs, long ret) {
    u32 probe = hook_probe(syscall_hook(BPF_CORE_READ(regs, orig_ax)));
    if (probe == KP_NONE)
        return 0;
    return on_return(probe, ret, 0);
}

// __dev_queue_xmit, as the packet is queued to the device.
SEC("?tp_btf/net_dev_queue")
int BPF_PROG(tp_net_dev_queue, struct sk_buff *skb) {
    return skb_l3(tp_probe[TP_NET_DEV_QUEUE], skb, 0);
}

// xmit_one, just before the driver's ndo_start_xmit.
SEC("?tp_btf/net_dev_start_xmit")
int BPF_PROG(tp_net_dev_start_xmit, struct sk_buff *skb, struct net_device *dev) {
    return skb_l3(tp_probe[TP_NET_DEV_START_XMIT], skb, 0);
}

// netif_rx: loopback and veth hand the skb to the backlog.
SEC("?tp_btf/netif_rx")
int BPF_PROG(tp_netif_rx, struct sk_buff *skb) {
    return skb_rx(tp_probe[TP_NETIF_RX], skb);
}

// __netif_receive_skb_core: the stack takes the skb (NET_RX softirq).
SEC("?tp_btf/netif_receive_skb")
int BPF_PROG(tp_netif_receive_skb, struct sk_buff *skb) {
    return skb_rx(tp_probe[TP_NETIF_RECEIVE_SKB], skb);
}

// tcp_rcv_established, at its entry: IPv4 and TCP headers still in place.
SEC("?tp_btf/tcp_probe")
int BPF_PROG(tp_tcp_probe, struct sock *sk, struct sk_buff *skb) {
    return skb_l3(tp_probe[TP_TCP_PROBE], skb, sk);
}

// sock_def_readable (sk_data_ready): the reader is woken. Linux 6.3+.
SEC("?tp_btf/sk_data_ready")
int BPF_PROG(tp_sk_data_ready, struct sock *sk) {
    return sock_entry(tp_probe[TP_SK_DATA_READY], sk, 0);
}

// skb_copy_datagram_iter(skb, offset, to, len): the copy to user space. The
// tracepoint has no offset; tcp_recvmsg copies from tp->copied_seq, which
// it advances only after the copy.
SEC("?tp_btf/skb_copy_datagram_iovec")
int BPF_PROG(tp_skb_copy_datagram, struct sk_buff *skb, int len) {
    EVENT_START(e, tp_probe[TP_SKB_COPY_DATAGRAM], KIND_ENTRY);
    struct sock *sk = BPF_CORE_READ(skb, sk);
    if (!sk || !sock_is_tcp(sk) || !read_sock(sk, e))
        return 0;
    e->skb = (u64)skb;
    e->seq = BPF_CORE_READ((struct tcp_sock *)sk, copied_seq);
    e->end_seq = e->seq + len;
    e->length = len;
    e->has |= HAS_SEQ | HAS_LEN;
    return submit(e);
}

SEC("?tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb) {
    return sock_skb_cb(tp_probe[TP_TCP_RETRANSMIT_SKB], sk, skb, 0, 0);
}
