// kpath BPF program, compiled by BCC at run time (tracer/capture/bcc.py loads
// it) on kernels without BTF. The CO-RE object (kpath.bpf.c) is its twin.
//
// One routine per capture kind (probes/catalog.py: Capture). A routine is
// attached to every function of its kind; bpf_get_func_ip() tells which one
// fired, and user space maps that address back to the probe.
//
// Configuration comes only through maps (config, traced_pids): user input
// is never pasted into this text. Compile-time switches are -D numbers set
// by the loader from the kernel's capabilities.

#include <uapi/linux/ptrace.h>
#include <linux/version.h>
#include <linux/sched.h>
#include <linux/fdtable.h>
#include <linux/net.h>
#include <linux/skbuff.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <net/sock.h>
#include <net/inet_sock.h>
#include <net/request_sock.h>
#include <net/tcp.h>

#ifndef KPATH_RINGBUF
#define KPATH_RINGBUF 1
#endif
#ifndef KPATH_RINGBUF_PAGES
#define KPATH_RINGBUF_PAGES 512
#endif

#include "kp_event.h"

#ifndef KPATH_WAKEUP_RECORDS
#define KPATH_WAKEUP_RECORDS 0
#endif

#if KPATH_RINGBUF
BPF_RINGBUF_OUTPUT(events, KPATH_RINGBUF_PAGES);
#if KPATH_WAKEUP_RECORDS
// Records written on this CPU since it last woke the reader. BCC 0.26 has
// no ringbuf_query to see how full the ring is, so each CPU wakes the
// reader every KPATH_WAKEUP_RECORDS records instead; the reader also polls
// on a timer, so a trickle is still read.
BPF_PERCPU_ARRAY(unwoken, u64, 1);
#endif
#else
BPF_PERF_OUTPUT(events);
#endif

BPF_ARRAY(config, struct kp_config, 1);
BPF_HASH(traced_pids, u32, u8, 4096);
BPF_HASH(traced_flows, struct flow_key, u8, 16384);
BPF_PERCPU_ARRAY(irq_state, struct irq_state, 1);
BPF_HASH(lost_by_ip, u64, u64, 1024);
// Entries that passed the filter, value = sk. LRU: entries of functions
// without a return probe are never looked up and age out.
BPF_TABLE("lru_hash", struct ret_key, u64, pending_ret, 16384);

// net_rx_action has no flow of its own: with filters on, it is held here
// and emitted just before the first kept event of the same softirq run.
struct pending_softirq {
    u64 valid;
    struct kp_event ev;
};
BPF_PERCPU_ARRAY(pending_rx, struct pending_softirq, 1);

// ---- execution context, from the irq tracepoints ----
//
// Raw tracepoints: the kernel checks their recursion per program, so they
// run inside a kprobe program's interrupt too, where a classic tracepoint
// program (bpf_prog_active, as kprobes) would be skipped; they see the blind
// windows (kp_event.h irq_state) open and close.

static __always_inline int emit_raw(struct pt_regs *ctx, void *rec, u32 size, u64 ip);

static __always_inline void blind_close(void *ctx, struct irq_state *st, u32 ctx_kind) {
    struct kp_event e = {};
    if (blind_take(st, ctx_kind, &e))
        emit_raw((struct pt_regs *)ctx, &e, sizeof(e), KP_BLIND_IP);
}

// The kernel's reasons to skip a kprobe program on this CPU (kpath.bpf.c's
// kprobes_skipped): BCC has no typed ksyms, so the loader writes the
// variables' kallsyms addresses here before attaching the kprobes; a
// per-CPU variable lives at its address plus __per_cpu_offset[cpu]. Where
// kallsyms has no data symbols (compiled with KPATH_MARK_RUNS) only this
// object's own kprobe programs' runs count (their mark).
struct skip_vars {
    u64 per_cpu_offset;  // &__per_cpu_offset; 0: not known
    u64 prog_active;     // bpf_prog_active
    u64 current_kprobe;  // 0 where the kernel has none
};
BPF_ARRAY(skip_vars, struct skip_vars, 1);

static __always_inline u32 kprobes_skipped(struct irq_state *st) {
    u32 zero = 0;
    u32 mark = st->in_kprobe ? KP_SKIP_MARK : 0;
    struct skip_vars *v = skip_vars.lookup(&zero);
    if (!v || !v->per_cpu_offset)
        return mark;
    u64 cpu = bpf_get_smp_processor_id();
    u64 base = 0;
    if (bpf_probe_read_kernel(&base, sizeof(base), (void *)(v->per_cpu_offset + cpu * 8)))
        return mark;
    u32 why = 0;
    int active = 0;
    bpf_probe_read_kernel(&active, sizeof(active), (void *)(base + v->prog_active));
    if (active)
        why |= KP_SKIP_PROG_ACTIVE;
    u64 running = 0;
    if (v->current_kprobe)
        bpf_probe_read_kernel(&running, sizeof(running), (void *)(base + v->current_kprobe));
    if (running)
        why |= KP_SKIP_KPROBE;
    return why;
}

RAW_TRACEPOINT_PROBE(softirq_entry) {
    u32 vec = (u32)ctx->args[0];
    u32 zero = 0;
    struct irq_state *st = irq_state.lookup(&zero);
    if (st) {
        st->softirq_vec = vec + 1;
        blind_open(st, CTX_SOFTIRQ, vec, kprobes_skipped(st));
    }
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_exit) {
    u32 zero = 0;
    struct irq_state *st = irq_state.lookup(&zero);
    if (st) {
        st->softirq_vec = 0;
        blind_close(ctx, st, CTX_SOFTIRQ);
    }
    struct pending_softirq *p = pending_rx.lookup(&zero);
    if (p)
        p->valid = 0;
    return 0;
}

RAW_TRACEPOINT_PROBE(irq_handler_entry) {
    u32 zero = 0;
    struct irq_state *st = irq_state.lookup(&zero);
    if (st) {
        st->hardirq = 1;
        blind_open(st, CTX_HARDIRQ, 0, kprobes_skipped(st));
    }
    return 0;
}

RAW_TRACEPOINT_PROBE(irq_handler_exit) {
    u32 zero = 0;
    struct irq_state *st = irq_state.lookup(&zero);
    if (st) {
        st->hardirq = 0;
        blind_close(ctx, st, CTX_HARDIRQ);
    }
    return 0;
}

#if KPATH_MARK_RUNS
// Where kallsyms does not give skip_vars, every kprobe program (KPROBE_FN)
// marks its run; classic tracepoint programs raise bpf_prog_active too,
// but run in no probed path.
static __always_inline void kprobe_running(u32 on) {
    u32 zero = 0;
    struct irq_state *st = irq_state.lookup(&zero);
    if (st)
        st->in_kprobe = on;
}

#define KPROBE_FN(name)                                                                \
    static __always_inline int name##_run(struct pt_regs *ctx);                        \
    int name(struct pt_regs *ctx) {                                                    \
        kprobe_running(1);                                                             \
        int ret_ = name##_run(ctx);                                                    \
        kprobe_running(0);                                                             \
        return ret_;                                                                   \
    }                                                                                  \
    static __always_inline int name##_run(struct pt_regs *ctx)
#else
#define KPROBE_FN(name) int name(struct pt_regs *ctx)
#endif

// Children of a traced command are traced too.
TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 parent = args->parent_pid;
    u32 child = args->child_pid;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (traced_pids.lookup(&parent) || traced_pids.lookup(&tgid)) {
        u8 one = 1;
        traced_pids.update(&child, &one);
    }
    return 0;
}

// ---- helpers ----

static __always_inline u64 probe_ip(struct pt_regs *ctx) {
    return bpf_get_func_ip(ctx);
}

// Each event is built on its program's own stack, never in a shared per-CPU
// buffer: a softirq can interrupt a program mid-way and run other programs on
// the same CPU, which would overwrite a shared buffer under it.
static __always_inline void event_init(struct kp_event *e, struct pt_regs *ctx, u8 kind) {
    u32 zero = 0;
    u64 id = bpf_get_current_pid_tgid();
    e->ts = bpf_ktime_get_ns();
    e->ip = probe_ip(ctx);
    e->tgid = id >> 32;
    e->tid = (u32)id;
    e->cpu = bpf_get_smp_processor_id();
    e->kind = kind;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    struct irq_state *st = irq_state.lookup(&zero);
    if (st) {
        if (st->hardirq)
            e->ctx = CTX_HARDIRQ;
        else if (st->softirq_vec) {
            e->ctx = CTX_SOFTIRQ;
            e->vec = st->softirq_vec - 1;
        }
    }
}

#define EVENT_START(e, ctx, kind)                                              \
    struct kp_event e##_buf = {};                                              \
    struct kp_event *e = &e##_buf;                                             \
    event_init(e, ctx, kind)

static __always_inline void read_netns(struct net *net, struct kp_event *e) {
    if (net)
        bpf_probe_read_kernel(&e->netns, sizeof(e->netns), &net->ns.inum);
}

// Flow from a socket (or request sock): local endpoint as source.
static __always_inline int read_sock_common(struct sock_common *skc, struct kp_event *e) {
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), &skc->skc_family);
    if (family != AF_INET)
        return 0;
    u16 dport = 0;
    struct net *net = 0;
    bpf_probe_read_kernel(&e->saddr, sizeof(e->saddr), &skc->skc_rcv_saddr);
    bpf_probe_read_kernel(&e->daddr, sizeof(e->daddr), &skc->skc_daddr);
    bpf_probe_read_kernel(&e->sport, sizeof(e->sport), &skc->skc_num);
    bpf_probe_read_kernel(&dport, sizeof(dport), &skc->skc_dport);
    e->dport = ntohs(dport);
    bpf_probe_read_kernel(&net, sizeof(net), &skc->skc_net.net);
    read_netns(net, e);
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
    u16 proto = 0;
    bpf_probe_read_kernel(&proto, sizeof(proto), &sk->sk_protocol);
    return proto == IPPROTO_TCP;
}

// IPv4 + TCP headers starting at ip (a kernel address). ip_len is the
// packet length from ip onwards per the skb, used while tot_len is still 0
// (before __ip_local_out fills it in) or for GSO packets over 64 KiB.
static __always_inline int read_ip_tcp(unsigned char *ip, u32 ip_len, struct kp_event *e) {
    struct iphdr iph = {};
    bpf_probe_read_kernel(&iph, sizeof(iph), ip);
    if (iph.version != 4 || iph.protocol != IPPROTO_TCP)
        return 0;
    u32 ihl = iph.ihl * 4;
    struct tcphdr th = {};
    bpf_probe_read_kernel(&th, sizeof(th), ip + ihl);
    u8 flags = ((u8 *)&th)[13];
    u32 tot = ntohs(iph.tot_len);
    if (tot == 0)
        tot = ip_len;
    u32 payload = tot - ihl - th.doff * 4;
    e->saddr = iph.saddr;
    e->daddr = iph.daddr;
    e->sport = ntohs(th.source);
    e->dport = ntohs(th.dest);
    e->seq = ntohl(th.seq);
    e->ack = ntohl(th.ack_seq);
    e->tcp_flags = flags;
    e->length = payload;
    e->end_seq = e->seq + payload + ((flags & TCPF_SYN) ? 1 : 0) + ((flags & TCPF_FIN) ? 1 : 0);
    e->has |= HAS_TUPLE | HAS_SEQ | HAS_LEN | HAS_FLAGS | ((flags & TCPF_ACK) ? HAS_ACK : 0);
    return 1;
}

// Headers located by skb->network_header (set once IP has built or seen them).
static __always_inline int read_skb_l3(struct sk_buff *skb, struct kp_event *e) {
    unsigned char *head = 0, *data = 0;
    u16 nh = 0;
    u32 len = 0;
    bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
    bpf_probe_read_kernel(&data, sizeof(data), &skb->data);
    bpf_probe_read_kernel(&len, sizeof(len), &skb->len);
    bpf_probe_read_kernel(&nh, sizeof(nh), &skb->network_header);
    if (nh == (u16)~0U)
        return 0;
    // skb->len counts from skb->data, which may sit before (link header) or
    // after (pulled) the IP header.
    u32 ip_len = len + (u32)(data - (head + nh));
    return read_ip_tcp(head + nh, ip_len, e);
}

// On receive before IP the link header has been pulled: skb->data is IPv4.
static __always_inline int read_skb_rx(struct sk_buff *skb, struct kp_event *e) {
    unsigned char *data = 0;
    __be16 proto = 0;
    u32 len = 0;
    bpf_probe_read_kernel(&proto, sizeof(proto), &skb->protocol);
    if (proto != htons(ETH_P_IP))
        return 0;
    bpf_probe_read_kernel(&data, sizeof(data), &skb->data);
    bpf_probe_read_kernel(&len, sizeof(len), &skb->len);
    return read_ip_tcp(data, len, e);
}

static __always_inline void read_skb_netns(struct sk_buff *skb, struct kp_event *e) {
    struct net_device *dev = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), &skb->dev);
    if (dev) {
        struct net *net = 0;
        bpf_probe_read_kernel(&net, sizeof(net), &dev->nd_net.net);
        read_netns(net, e);
    }
}

// TCP header located by skb->transport_header (IP header not built yet).
// Ports come from the header; addresses are the caller's business.
static __always_inline int read_skb_l4(struct sk_buff *skb, struct kp_event *e) {
    unsigned char *head = 0;
    u16 th_off = 0;
    u32 len = 0;
    bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
    bpf_probe_read_kernel(&th_off, sizeof(th_off), &skb->transport_header);
    bpf_probe_read_kernel(&len, sizeof(len), &skb->len);
    if (th_off == (u16)~0U)
        return 0;
    struct tcphdr th = {};
    bpf_probe_read_kernel(&th, sizeof(th), head + th_off);
    u8 flags = ((u8 *)&th)[13];
    u32 payload = len - th.doff * 4;
    e->sport = ntohs(th.source);
    e->dport = ntohs(th.dest);
    e->seq = ntohl(th.seq);
    e->ack = ntohl(th.ack_seq);
    e->tcp_flags = flags;
    e->length = payload;
    e->end_seq = e->seq + payload + ((flags & TCPF_SYN) ? 1 : 0) + ((flags & TCPF_FIN) ? 1 : 0);
    e->has |= HAS_SEQ | HAS_LEN | HAS_FLAGS | ((flags & TCPF_ACK) ? HAS_ACK : 0);
    return 1;
}

// ---- filtering ----

static __always_inline int task_filter_set(struct kp_config *c) {
    return c->tgid || c->use_pid_map || c->comm_set;
}

static __always_inline int task_matches(struct kp_config *c, struct kp_event *e) {
    if (e->ctx != CTX_TASK)
        return 0;
    if (c->tgid && e->tgid != c->tgid)
        return 0;
    if (c->use_pid_map && !traced_pids.lookup(&e->tgid))
        return 0;
    if (c->comm_set) {
#pragma unroll
        for (int i = 0; i < KP_COMM_LEN; i++) {
            if (e->comm[i] != c->comm[i])
                return 0;
            if (c->comm[i] == 0)
                break;
        }
    }
    return 1;
}

// Decide whether an event is kept. A task filter marks the flows its tasks
// touch, so the same flow's softirq and peer events are kept too.
static __always_inline int keep_event(struct kp_event *e) {
    u32 zero = 0;
    struct kp_config *c = config.lookup(&zero);
    if (!c)
        return 0;
    int has_tuple = e->has & HAS_TUPLE;
    if (c->port) {
        if (!has_tuple || (e->sport != c->port && e->dport != c->port))
            return 0;
    }
    if (!task_filter_set(c))
        return 1;
    // A known flow is kept whoever runs: looked up first (one lookup for
    // most events, as in kpath.bpf.c).
    struct flow_key k = {};
    if (has_tuple) {
        k = make_flow_key(e);
        if (traced_flows.lookup(&k))
            return 1;
    }
    if (!task_matches(c, e))
        return 0;
    if (has_tuple) {
        u8 one = 1;
        // A new flow: its ends' listeners belong to the trace too (the
        // wake-up that lets accept() return runs on the listener, in
        // softirq), whether bound to the address or to any.
        if (!traced_flows.insert(&k, &one)) {
            struct flow_key l1 = listener_key(e->saddr, e->sport);
            struct flow_key l2 = listener_key(0, e->sport);
            struct flow_key l3 = listener_key(e->daddr, e->dport);
            struct flow_key l4 = listener_key(0, e->dport);
            traced_flows.update(&l1, &one);
            traced_flows.update(&l2, &one);
            traced_flows.update(&l3, &one);
            traced_flows.update(&l4, &one);
        }
    }
    return 1;
}

// A record of `size` bytes from probe `ip` to user space (a kp_event, or a
// kp_frame_event).
static __always_inline int emit_raw(struct pt_regs *ctx, void *rec, u32 size, u64 ip) {
#if KPATH_RINGBUF
    u64 flags = 0;
#if KPATH_WAKEUP_RECORDS
    int zero = 0;
    u64 *n = unwoken.lookup(&zero);
    if (n) {
        *n += 1;
        flags = BPF_RB_NO_WAKEUP;
        if (*n >= KPATH_WAKEUP_RECORDS) {
            *n = 0;
            flags = BPF_RB_FORCE_WAKEUP;
        }
    }
#endif
    int err = events.ringbuf_output(rec, size, flags);
#else
    int err = events.perf_submit(ctx, rec, size);
#endif
    if (err) {
        // Ring buffers report no loss themselves: count it per probe.
        u64 zero64 = 0;
        u64 *n = lost_by_ip.lookup_or_try_init(&ip, &zero64);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
    return 0;
}

static __always_inline int emit(struct pt_regs *ctx, struct kp_event *e) {
    return emit_raw(ctx, e, sizeof(*e), e->ip);
}

// Whether an event is kept, and what keeping it entails (the held NET_RX
// run goes out first; an entry is remembered for its return).
static __always_inline int admit(struct pt_regs *ctx, struct kp_event *e) {
    if (!keep_event(e))
        return 0;
    if (e->ctx == CTX_SOFTIRQ) {
        u32 zero = 0;
        struct pending_softirq *p = pending_rx.lookup(&zero);
        if (p && p->valid) {
            p->valid = 0;
            emit(ctx, &p->ev);
        }
    }
    // Remember kept entries so the matching return is kept: the return
    // probe cannot see the arguments any more.
    struct ret_key rk = {.tid = e->tid, .ip = e->ip};
    u64 sk = e->sk;
    pending_ret.update(&rk, &sk);
    return 1;
}

static __always_inline int submit(struct pt_regs *ctx, struct kp_event *e) {
    if (!admit(ctx, e))
        return 0;
    return emit(ctx, e);
}

// ---- device-layer frames: the packet's first bytes (pcapng export) ----

// Frame records are built here, one slot per context (CTX_*): a context that
// interrupts a program on this CPU uses another slot.
BPF_PERCPU_ARRAY(frame_buf, struct kp_frame_event, 3);

// The kept event of a frame probe (the kp_*_frame programs, attached by the
// loader to one probe per direction: tracer/capture/frames.py) goes out with
// the frame as the device has it: from the link header (skb->mac_header
// where set and before skb->data, as on receive once it was pulled; else
// skb->data, as on transmit).
static __always_inline int submit_frame(struct pt_regs *ctx, struct kp_event *e,
                                        struct sk_buff *skb) {
    if (!admit(ctx, e))
        return 0;
    u32 slot = e->ctx;
    struct kp_frame_event *f = frame_buf.lookup(&slot);
    if (!f)
        return 0;
    __builtin_memcpy(&f->ev, e, sizeof(*e));
    __builtin_memset(&f->guard1, 0, sizeof(*f) - sizeof(f->ev));  // the guards too
    unsigned char *head = 0, *data = 0;
    u16 mh = 0, nh = 0;
    u32 len = 0, data_len = 0;
    bpf_probe_read_kernel(&head, sizeof(head), &skb->head);
    bpf_probe_read_kernel(&data, sizeof(data), &skb->data);
    bpf_probe_read_kernel(&mh, sizeof(mh), &skb->mac_header);
    bpf_probe_read_kernel(&nh, sizeof(nh), &skb->network_header);
    bpf_probe_read_kernel(&len, sizeof(len), &skb->len);
    bpf_probe_read_kernel(&data_len, sizeof(data_len), &skb->data_len);
    unsigned char *start = data;
    if (mh != (u16)~0U && head + mh < data)
        start = head + mh;
    u32 pulled = (u32)(data - start);
    f->len = len + pulled;
    f->link = (nh != (u16)~0U && head + nh >= start) ? (u16)(head + nh - start) : KP_NO_LINK;
    // Only the linear part is contiguous; a whole KP_FRAME_BYTES is read
    // (the head buffer's skb_shared_info follows its end) and user space
    // keeps `cap` bytes.
    u32 cap = len - data_len + pulled;
    if (cap > KP_FRAME_BYTES)
        cap = KP_FRAME_BYTES;
    if (bpf_probe_read_kernel(f->data_lo, KP_FRAME_LO, start)
        || bpf_probe_read_kernel(f->data_hi, KP_FRAME_BYTES - KP_FRAME_LO, start + KP_FRAME_LO))
        cap = 0;
    f->cap = cap;
    struct net_device *dev = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), &skb->dev);
    if (dev) {
        bpf_probe_read_kernel(&f->ifindex, sizeof(f->ifindex), &dev->ifindex);
        unsigned short type = 0;
        bpf_probe_read_kernel(&type, sizeof(type), &dev->type);
        f->dev_type = type;
        bpf_probe_read_kernel_str(f->ifname, sizeof(f->ifname), dev->name);
    }
    return emit_raw(ctx, f, sizeof(*f), e->ip);
}

// ---- capture routines, one per probes.catalog.Capture ----

// A struct socket's TCP sock: its flow goes into the event, which is submitted.
static __always_inline int submit_socket(struct pt_regs *ctx, struct socket *sock,
                                         struct kp_event *e) {
    struct sock *sk = 0;
    short type = 0;
    bpf_probe_read_kernel(&type, sizeof(type), &sock->type);
    bpf_probe_read_kernel(&sk, sizeof(sk), &sock->sk);
    if (type != SOCK_STREAM || !sk || !sock_is_tcp(sk))
        return 0;
    if (!read_sock(sk, e))
        return 0;
    return submit(ctx, e);
}

// The socket behind an open file, if it is one: a socket points back at its
// file; anything else a file holds does not.
static __always_inline int submit_file_socket(struct pt_regs *ctx, struct file *file,
                                              struct kp_event *e) {
    struct socket *sock = 0;
    struct file *back = 0;
    if (!file)
        return 0;
    bpf_probe_read_kernel(&sock, sizeof(sock), &file->private_data);
    if (!sock)
        return 0;
    bpf_probe_read_kernel(&back, sizeof(back), &sock->file);
    if (back != file)
        return 0;
    return submit_socket(ctx, sock, e);
}

// A system call on a file descriptor: the TCP socket behind it, if any.
static __always_inline int syscall_fd(struct pt_regs *ctx, int fd, u64 len) {
    EVENT_START(e, ctx, KIND_ENTRY);
    e->arg3 = len;
    e->has |= HAS_ARG3;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct files_struct *files = 0;
    struct fdtable *fdt = 0;
    struct file **fds = 0;
    struct file *file = 0;
    unsigned int max_fds = 0;
    bpf_probe_read_kernel(&files, sizeof(files), &task->files);
    if (!files || fd < 0)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), &files->fdt);
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), &fdt->max_fds);
    if ((unsigned int)fd >= max_fds)
        return 0;
    bpf_probe_read_kernel(&fds, sizeof(fds), &fdt->fd);
    bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
    return submit_file_socket(ctx, file, e);
}

// (int fd, void __user *buf, size_t len, ...): the socket behind the fd.
KPROBE_FN(kp_syscall_fd) {
    return syscall_fd(ctx, (int)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx));
}

// sock_write_iter / sock_read_iter(struct kiocb *iocb, struct iov_iter *it):
// write/writev/read/readv on a socket only; arg3 is it->count.
KPROBE_FN(kp_kiocb) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct kiocb *iocb = (struct kiocb *)PT_REGS_PARM1(ctx);
    struct iov_iter *it = (struct iov_iter *)PT_REGS_PARM2(ctx);
    struct file *file = 0;
    size_t count = 0;
    bpf_probe_read_kernel(&file, sizeof(file), &iocb->ki_filp);
    bpf_probe_read_kernel(&count, sizeof(count), &it->count);
    e->arg3 = count;
    e->has |= HAS_ARG3;
    return submit_file_socket(ctx, file, e);
}

// __x64_sys_recvmmsg(const struct pt_regs *regs): the socket behind the
// first argument (6.1 inlines __sys_recvmmsg into the system call).
KPROBE_FN(kp_syscall_regs_fd1) {
    struct pt_regs *regs = (struct pt_regs *)PT_REGS_PARM1(ctx);
    u64 fd = 0;
    bpf_probe_read_kernel(&fd, sizeof(fd), &regs->di);
    return syscall_fd(ctx, (int)fd, 0);
}

// io_uring's issue function of a socket op (io_send, io_recv, ...: struct
// io_kiocb *req, unsigned int issue_flags), in the submitting task or an
// io-wq worker. Its types are io_uring's own (no header has io_sr_msg):
// the request starts with its file (a union with the command data), and
// since Linux 6.0 the command data is io_uring/net.c's struct io_sr_msg,
// whose len follows the file and a user pointer.
struct kp_io_sr_msg {
    struct file *file;
    void *buf;
    u32 len;
};

KPROBE_FN(kp_io_kiocb) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct kp_io_sr_msg *sr = (struct kp_io_sr_msg *)PT_REGS_PARM1(ctx);
    struct file *file = 0;
    bpf_probe_read_kernel(&file, sizeof(file), &sr->file);
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0)
    u32 len = 0;
    bpf_probe_read_kernel(&len, sizeof(len), &sr->len);
    e->arg3 = len;
    e->has |= HAS_ARG3;
#endif
    return submit_file_socket(ctx, file, e);
}

// sock_splice_read(file, ppos, pipe, len, flags): splice(2) out of a
// socket, at the socket's file operation; arg3 is len.
KPROBE_FN(kp_file_len4) {
    EVENT_START(e, ctx, KIND_ENTRY);
    e->arg3 = PT_REGS_PARM4(ctx);
    e->has |= HAS_ARG3;
    return submit_file_socket(ctx, (struct file *)PT_REGS_PARM1(ctx), e);
}

// __x64_sys_splice(const struct pt_regs *regs): splice(fd_in, off_in, fd_out,
// off_out, len, flags); the socket written is fd_out (third), arg3 is len.
KPROBE_FN(kp_syscall_regs_fd3) {
    struct pt_regs *regs = (struct pt_regs *)PT_REGS_PARM1(ctx);
    u64 fd = 0, len = 0;
    bpf_probe_read_kernel(&fd, sizeof(fd), &regs->dx);
    bpf_probe_read_kernel(&len, sizeof(len), &regs->r8);
    return syscall_fd(ctx, (int)fd, len);
}

// (struct socket *sock, ...)
KPROBE_FN(kp_socket) {
    EVENT_START(e, ctx, KIND_ENTRY);
    e->arg3 = PT_REGS_PARM3(ctx);
    e->has |= HAS_ARG3;
    return submit_socket(ctx, (struct socket *)PT_REGS_PARM1(ctx), e);
}

// (struct sock *sk, ...): TCP functions; arg3 is a length for some of them.
KPROBE_FN(kp_sock) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    e->arg3 = PT_REGS_PARM3(ctx);
    e->has |= HAS_ARG3;
    if (!read_sock(sk, e))
        return 0;
    return submit(ctx, e);
}

// A socket call with the stream position the kernel writes at or reads
// from (tp->write_seq, tp->copied_seq at entry), recorded in seq.
static __always_inline int sock_stream_pos(struct pt_regs *ctx, struct sock *sk, u64 arg3,
                                           int write) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct tcp_sock *tp = (struct tcp_sock *)sk;
    u32 pos = 0;
    e->arg3 = arg3;
    e->has |= HAS_ARG3;
    if (!read_sock(sk, e) || !sock_is_tcp(sk))
        return 0;
    if (write)
        bpf_probe_read_kernel(&pos, sizeof(pos), &tp->write_seq);
    else
        bpf_probe_read_kernel(&pos, sizeof(pos), &tp->copied_seq);
    e->seq = pos;
    e->end_seq = pos;
    e->has |= HAS_SEQ;
    return submit(ctx, e);
}

// tcp_sendmsg_locked(sk, msg, size): its bytes go at tp->write_seq.
KPROBE_FN(kp_sock_write_seq) {
    return sock_stream_pos(ctx, (struct sock *)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx), 1);
}

// tcp_sendpage(sk, page, offset, size, flags): the page-send path (< 6.5).
KPROBE_FN(kp_sock_page_write_seq) {
    return sock_stream_pos(ctx, (struct sock *)PT_REGS_PARM1(ctx), PT_REGS_PARM4(ctx), 1);
}

// tcp_recvmsg(sk, msg, len, ...): returns bytes from tp->copied_seq.
KPROBE_FN(kp_sock_copied_seq) {
    return sock_stream_pos(ctx, (struct sock *)PT_REGS_PARM1(ctx), PT_REGS_PARM3(ctx), 0);
}

// tcp_splice_read(struct socket *sock, ppos, pipe, len, flags): splice out
// of the socket, from tp->copied_seq, through the struct socket.
KPROBE_FN(kp_socket_copied_seq) {
    struct socket *sock = (struct socket *)PT_REGS_PARM1(ctx);
    struct sock *sk = 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), &sock->sk);
    return sock_stream_pos(ctx, sk, PT_REGS_PARM4(ctx), 0);
}

// __tcp_transmit_skb(sk, skb, clone_it, gfp, rcv_nxt): the TCP header is not
// built yet, so seq/flags come from TCP_SKB_CB and the ack from rcv_nxt.
static __always_inline int sock_skb_cb(struct pt_regs *ctx, int has_rcv_nxt) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM2(ctx);
    if (!read_sock(sk, e))
        return 0;
    e->skb = (u64)skb;
    struct tcp_skb_cb *tcb = (struct tcp_skb_cb *)&skb->cb[0];
    u8 flags = 0;
    bpf_probe_read_kernel(&e->seq, sizeof(e->seq), &tcb->seq);
    bpf_probe_read_kernel(&e->end_seq, sizeof(e->end_seq), &tcb->end_seq);
    bpf_probe_read_kernel(&flags, sizeof(flags), &tcb->tcp_flags);
    e->tcp_flags = flags;
    e->length = e->end_seq - e->seq - ((flags & TCPF_SYN) ? 1 : 0) - ((flags & TCPF_FIN) ? 1 : 0);
    e->has |= HAS_SEQ | HAS_LEN | HAS_FLAGS;
    if (has_rcv_nxt && (flags & TCPF_ACK)) {
        e->ack = (u32)PT_REGS_PARM5(ctx);
        e->has |= HAS_ACK;
    }
    return submit(ctx, e);
}

KPROBE_FN(kp_sock_skb_cb) {
    return sock_skb_cb(ctx, 1);
}

// tcp_retransmit_skb(sk, skb, segs): no rcv_nxt argument.
KPROBE_FN(kp_sock_skb_cb_noack) {
    return sock_skb_cb(ctx, 0);
}

// (sk, skb, ...) below TCP on transmit: TCP header built, IP header not yet.
KPROBE_FN(kp_sock_skb_l4) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM2(ctx);
    if (!read_sock(sk, e) || !sock_is_tcp(sk))
        return 0;
    e->skb = (u64)skb;
    if (!read_skb_l4(skb, e))
        return 0;
    return submit(ctx, e);
}

static __always_inline int skb_l3_frame(struct pt_regs *ctx, struct sk_buff *skb,
                                        struct sock *sk, int frame) {
    EVENT_START(e, ctx, KIND_ENTRY);
    e->skb = (u64)skb;
    if (!read_skb_l3(skb, e))
        return 0;
    if (!sk)
        bpf_probe_read_kernel(&sk, sizeof(sk), &skb->sk);
    e->sk = (u64)sk;
    read_skb_netns(skb, e);
    if (frame)
        return submit_frame(ctx, e, skb);
    return submit(ctx, e);
}

static __always_inline int skb_l3(struct pt_regs *ctx, struct sk_buff *skb, struct sock *sk) {
    return skb_l3_frame(ctx, skb, sk, 0);
}

// (..., struct sk_buff *skb at argument N, ...) where the IPv4 header is in place.
KPROBE_FN(kp_skb_l3_1) {
    return skb_l3(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), 0);
}
KPROBE_FN(kp_skb_l3_2) {
    return skb_l3(ctx, (struct sk_buff *)PT_REGS_PARM2(ctx), 0);
}
KPROBE_FN(kp_skb_l3_3) {
    return skb_l3(ctx, (struct sk_buff *)PT_REGS_PARM3(ctx), 0);
}
KPROBE_FN(kp_skb_l3_4) {
    return skb_l3(ctx, (struct sk_buff *)PT_REGS_PARM4(ctx), 0);
}

// __dev_queue_xmit and dev_hard_start_xmit as the transmit frame probe.
KPROBE_FN(kp_skb_l3_1_frame) {
    return skb_l3_frame(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), 0, 1);
}

// (struct sock *sk, struct sk_buff *skb, ...) on the TCP receive side.
KPROBE_FN(kp_sock_skb_l3) {
    return skb_l3(ctx, (struct sk_buff *)PT_REGS_PARM2(ctx), (struct sock *)PT_REGS_PARM1(ctx));
}

static __always_inline int skb_rx(struct pt_regs *ctx, struct sk_buff *skb, int frame) {
    EVENT_START(e, ctx, KIND_ENTRY);
    e->skb = (u64)skb;
    if (!read_skb_rx(skb, e))
        return 0;
    read_skb_netns(skb, e);
    if (frame)
        return submit_frame(ctx, e, skb);
    return submit(ctx, e);
}

// (struct sk_buff *skb, ...) before IP on receive.
KPROBE_FN(kp_skb_rx) {
    return skb_rx(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), 0);
}

// The same as the receive frame probe.
KPROBE_FN(kp_skb_rx_frame) {
    return skb_rx(ctx, (struct sk_buff *)PT_REGS_PARM1(ctx), 1);
}

// (struct sk_buff **pskb, ...): __netif_receive_skb_core.
static __always_inline int skb_pp_rx(struct pt_regs *ctx, int frame) {
    struct sk_buff **pskb = (struct sk_buff **)PT_REGS_PARM1(ctx);
    struct sk_buff *skb = 0;
    bpf_probe_read_kernel(&skb, sizeof(skb), pskb);
    if (!skb)
        return 0;
    return skb_rx(ctx, skb, frame);
}

KPROBE_FN(kp_skb_pp_rx) {
    return skb_pp_rx(ctx, 0);
}

KPROBE_FN(kp_skb_pp_rx_frame) {
    return skb_pp_rx(ctx, 1);
}

// ip_build_and_send_pkt(skb, sk, saddr, daddr, opt, tos): the SYN-ACK's IP
// step. TCP header built; addresses come as arguments.
KPROBE_FN(kp_skb_l4_addrs) {
    EVENT_START(e, ctx, KIND_ENTRY);
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
        struct net *net = 0;
        bpf_probe_read_kernel(&net, sizeof(net), &sk->__sk_common.skc_net.net);
        read_netns(net, e);
    }
    return submit(ctx, e);
}

// net_rx_action(struct softirq_action *): the NET_RX softirq run itself.
KPROBE_FN(kp_softirq) {
    EVENT_START(e, ctx, KIND_ENTRY);
    u32 zero = 0;
    struct kp_config *c = config.lookup(&zero);
    if (!c)
        return 0;
    if (!c->port && !task_filter_set(c))
        return emit(ctx, e);
    struct pending_softirq *p = pending_rx.lookup(&zero);
    if (p) {
        __builtin_memcpy(&p->ev, e, sizeof(*e));
        p->valid = 1;
    }
    return 0;
}

// tcp_v4_send_synack(sk, dst, fl, req, foc, type, syn_skb): the SYN-ACK is
// built from the request sock and never passes __tcp_transmit_skb.
KPROBE_FN(kp_synack_req) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct sock *sk = (struct sock *)PT_REGS_PARM1(ctx);
    struct request_sock *req = (struct request_sock *)PT_REGS_PARM4(ctx);
    e->sk = (u64)sk;
    if (!req || !read_sock_common(&req->__req_common, e))
        return 0;
    struct tcp_request_sock *treq = (struct tcp_request_sock *)req;
    u32 snt_isn = 0, rcv_isn = 0;
    bpf_probe_read_kernel(&snt_isn, sizeof(snt_isn), &treq->snt_isn);
    bpf_probe_read_kernel(&rcv_isn, sizeof(rcv_isn), &treq->rcv_isn);
    e->seq = snt_isn;
    e->end_seq = snt_isn + 1;
    e->ack = rcv_isn + 1;
    e->tcp_flags = TCPF_SYN | TCPF_ACK;
    e->length = 0;
    e->has |= HAS_SEQ | HAS_ACK | HAS_FLAGS | HAS_LEN;
    return submit(ctx, e);
}

// __skb_datagram_iter(skb, offset, to, len, ...): the copy to user space.
KPROBE_FN(kp_datagram_iter) {
    EVENT_START(e, ctx, KIND_ENTRY);
    struct sk_buff *skb = (struct sk_buff *)PT_REGS_PARM1(ctx);
    int offset = (int)PT_REGS_PARM2(ctx);
    int len = (int)PT_REGS_PARM4(ctx);
    struct sock *sk = 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), &skb->sk);
    if (!sk || !sock_is_tcp(sk) || !read_sock(sk, e))
        return 0;
    e->skb = (u64)skb;
    // Received skbs carry their start sequence in TCP_SKB_CB (tcp_v4_fill_cb).
    struct tcp_skb_cb *tcb = (struct tcp_skb_cb *)&skb->cb[0];
    u32 seq = 0;
    bpf_probe_read_kernel(&seq, sizeof(seq), &tcb->seq);
    e->seq = seq + offset;
    e->end_seq = e->seq + len;
    e->length = len;
    e->has |= HAS_SEQ | HAS_LEN;
    return submit(ctx, e);
}

// Return probes: kept only if their entry was kept. sock_ret: the value is a
// struct sock * (inet_csk_accept) whose flow is read; otherwise the entry's.
static __always_inline int on_return(struct pt_regs *ctx, int sock_ret) {
    EVENT_START(e, ctx, KIND_RETURN);
    struct ret_key rk = {.tid = e->tid, .ip = e->ip};
    u64 *skp = pending_ret.lookup(&rk);
    if (!skp)
        return 0;
    struct sock *sk = (struct sock *)*skp;
    pending_ret.delete(&rk);
    // Functions returning int (tcp_recvmsg, tcp_sendmsg_locked, io_send...)
    // set only eax: -EAGAIN reads 4294967285 in rax. Every value reported
    // here but a returned pointer is a byte count below 2^31 (MAX_RW_COUNT)
    // or -errno: the low 32 bits, sign-extended, are the value.
    e->ret = sock_ret ? (s64)PT_REGS_RC(ctx) : (s64)(s32)PT_REGS_RC(ctx);
    e->has |= HAS_RET;
    if (sock_ret)
        sk = (struct sock *)PT_REGS_RC(ctx);
    if (sk)
        read_sock(sk, e);
    // The entry already passed the filter.
    return emit(ctx, e);
}

KPROBE_FN(kp_return) {
    return on_return(ctx, 0);
}

KPROBE_FN(kp_return_sock) {
    return on_return(ctx, 1);
}
