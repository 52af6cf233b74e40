// kpath's CO-RE BPF object: compiled once by clang (scripts/build-bpf.sh,
// run by scripts/setup.sh) into kpath.bpf.o, which tracer/capture/core.py
// loads through the system libbpf. No headers and no compiler at run time;
// CO-RE relocations adapt field offsets to the running kernel.
//
// Three ways to observe a catalog probe:
// - fentry/fexit (BPF trampolines: Linux 5.19+ for their attach cookie,
//   the function in BTF): one program copy per probe, bound to its function
//   before load; cheaper per call than a kprobe. The attach cookie is the
//   probe's index in the session's probe table.
// - kprobes (kernels with CONFIG_KPROBES): one routine per capture kind
//   (probes/catalog.py: Capture), attached to every function of that kind;
//   the attach cookie is the probe's index.
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
    TP_SYS_SENDMMSG,
    TP_SYS_RECVMMSG,
    TP_SYS_SENDFILE,
    TP_SYS_SPLICE,
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
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_SENDFILE 40
#define NR_SPLICE 275
#define NR_RECVMMSG 299
#define NR_SENDMMSG 307

const volatile struct kp_config cfg = {};
const volatile u32 tp_probe[TP_COUNT] = {};
// Wake the reader only once this many bytes are unread (0: on every record,
// the kernel's default). The reader also polls on a timer, so a trickle is
// still read; a burst wakes it early.
const volatile u64 wakeup_bytes = 0;
// Bit i: probe i has a return probe (indices >= 64: assumed to have one).
// Only those entries are remembered for their return: a map update per
// event is a large part of a program's cost.
const volatile u64 ret_probes = ~0ULL;

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

// ---- blind windows (kp_event.h irq_state) ----

static __always_inline void blind_close(struct irq_state *st, u32 ctx_kind) {
    struct kp_event e = {};
    if (blind_take(st, ctx_kind, &e))
        emit(&e);
}

// The kernel's own reasons to skip a kprobe program on this CPU, read where
// an interrupt or softirq enters: bpf_prog_active (a kprobe program runs,
// or a map syscall disabled instrumentation) and current_kprobe (a kprobe
// handler runs: a hit is only counted in its nmissed). Weak: a kernel
// without kprobes has no current_kprobe; its address is then 0.
extern const int bpf_prog_active __ksym __weak;
struct kprobe___kp {
    int unused;
};
extern struct kprobe___kp *current_kprobe __ksym __weak;

static __always_inline u32 kprobes_skipped(void) {
    u32 why = 0;
    if (&bpf_prog_active && *(const int *)bpf_this_cpu_ptr(&bpf_prog_active))
        why |= KP_SKIP_PROG_ACTIVE;
    if (&current_kprobe && *(struct kprobe___kp **)bpf_this_cpu_ptr(&current_kprobe))
        why |= KP_SKIP_KPROBE;
    return why;
}

// Each entry program has a twin that also watches for blind windows: the
// twin is loaded where kprobe programs are (Python picks), because its
// kernel symbols need a kallsyms with data symbols (CONFIG_KALLSYMS_ALL),
// and a kernel without kprobes has nothing to watch.
static __always_inline void softirq_entry(unsigned int vec_nr, int watch) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st) {
        st->softirq_vec = vec_nr + 1;
        if (watch)
            blind_open(st, CTX_SOFTIRQ, vec_nr, kprobes_skipped());
    }
    u32 probe = tp_probe[TP_NET_RX_SOFTIRQ];
    if (vec_nr == KP_NET_RX_SOFTIRQ && probe != KP_NONE)
        softirq_run(probe);
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(tp_softirq_entry, unsigned int vec_nr) {
    softirq_entry(vec_nr, 0);
    return 0;
}

SEC("?tp_btf/softirq_entry")
int BPF_PROG(tp_softirq_entry_watch, unsigned int vec_nr) {
    softirq_entry(vec_nr, 1);
    return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(tp_softirq_exit, unsigned int vec_nr) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st) {
        st->softirq_vec = 0;
        blind_close(st, CTX_SOFTIRQ);
    }
    struct pending_softirq *p = bpf_map_lookup_elem(&pending_rx, &zero);
    if (p)
        p->valid = 0;
    return 0;
}

static __always_inline void irq_entry(int watch) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st) {
        st->hardirq = 1;
        if (watch)
            blind_open(st, CTX_HARDIRQ, 0, kprobes_skipped());
    }
}

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(tp_irq_entry, int irq, struct irqaction *action) {
    irq_entry(0);
    return 0;
}

SEC("?tp_btf/irq_handler_entry")
int BPF_PROG(tp_irq_entry_watch, int irq, struct irqaction *action) {
    irq_entry(1);
    return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(tp_irq_exit, int irq, struct irqaction *action, int ret) {
    u32 zero = 0;
    struct irq_state *st = bpf_map_lookup_elem(&irq_state, &zero);
    if (st) {
        st->hardirq = 0;
        blind_close(st, CTX_HARDIRQ);
    }
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

// ---- several fields with one probe read ----
//
// In a kprobe every BPF_CORE_READ is a helper call (a copy with page faults
// off), and the programs' own run time goes mostly to them (bench_capture
// --prog-stats). Fields that lie close together in one struct are read as
// one span: `buf` holds the bytes from the offset of `first`, and SPAN_GET
// takes a field from it at its offset minus first's (CO-RE offsets, as the
// running kernel has them: the verifier sees constants). A field that lies
// outside the span on some kernel is read on its own there.
#define CORE_OFF(type, field) ((u32)bpf_core_field_offset(type, field))
#define SPAN_READ(buf, p, type, first)                                                 \
    bpf_probe_read_kernel(buf, sizeof(buf), (u8 *)(p) + CORE_OFF(type, first))
#define SPAN_GET(dst, buf, p, type, first, field)                                      \
    do {                                                                               \
        u32 _o = CORE_OFF(type, field), _b = CORE_OFF(type, first);                     \
        if (_o >= _b && _o - _b + sizeof(dst) <= sizeof(buf))                          \
            __builtin_memcpy(&(dst), (buf) + (_o - _b), sizeof(dst));                  \
        else                                                                           \
            bpf_probe_read_kernel(&(dst), sizeof(dst), (u8 *)(p) + _o);                \
    } while (0)

// Flow from a socket (or request sock): local endpoint as source. The
// tuple and the family are sock_common's first 18 bytes (one read).
static __always_inline int read_sock_common(struct sock_common *skc, struct kp_event *e) {
    u8 b[24] = {};
    u16 family = 0, dport = 0;
    SPAN_READ(b, skc, struct sock_common, skc_daddr);
    SPAN_GET(family, b, skc, struct sock_common, skc_daddr, skc_family);
    if (family != KP_AF_INET)
        return 0;
    SPAN_GET(e->saddr, b, skc, struct sock_common, skc_daddr, skc_rcv_saddr);
    SPAN_GET(e->daddr, b, skc, struct sock_common, skc_daddr, skc_daddr);
    SPAN_GET(e->sport, b, skc, struct sock_common, skc_daddr, skc_num);
    SPAN_GET(dport, b, skc, struct sock_common, skc_daddr, skc_dport);
    e->dport = bpf_ntohs(dport);
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
    // Both headers in one read when the IP header has no options (ihl 5:
    // every packet kpath's tests and benchmarks see); else the TCP header
    // again from its place.
    struct {
        struct kp_iphdr iph;
        struct kp_tcphdr th;
    } h = {};
    bpf_probe_read_kernel(&h, sizeof(h), ip);
    struct kp_iphdr iph = h.iph;
    if ((iph.ver_ihl >> 4) != 4 || iph.protocol != IPPROTO_TCP)
        return 0;
    u32 ihl = (iph.ver_ihl & 0x0f) * 4;
    struct kp_tcphdr th = h.th;
    if (ihl != sizeof(iph))
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
    u8 b[16] = {};
    unsigned char *head = 0, *data = 0;
    SPAN_READ(b, skb, struct sk_buff, head);
    SPAN_GET(head, b, skb, struct sk_buff, head, head);
    SPAN_GET(data, b, skb, struct sk_buff, head, data);
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

static __always_inline void read_dev_netns(struct net_device *dev, struct kp_event *e) {
    if (dev)
        e->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
}

static __always_inline void read_skb_netns(struct sk_buff *skb, struct kp_event *e) {
    read_dev_netns(BPF_CORE_READ(skb, dev), e);
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
    // A known flow is kept whoever runs: looked up first, so that most
    // events (of flows already traced) cost one map lookup, not the task
    // test's as well (a traced_pids lookup under `kpath trace -- CMD`).
    struct flow_key k = {};
    if (has_tuple) {
        k = make_flow_key(e);
        if (bpf_map_lookup_elem(&traced_flows, &k))
            return 1;
    }
    if (!task_matches(e))
        return 0;
    if (has_tuple) {
        u8 one = 1;
        // A new flow: its ends' listeners belong to the trace too (the
        // wake-up that lets accept() return runs on the listener, in
        // softirq), whether bound to the address or to any.
        if (!bpf_map_update_elem(&traced_flows, &k, &one, BPF_NOEXIST)) {
            struct flow_key l1 = listener_key(e->saddr, e->sport);
            struct flow_key l2 = listener_key(0, e->sport);
            struct flow_key l3 = listener_key(e->daddr, e->dport);
            struct flow_key l4 = listener_key(0, e->dport);
            bpf_map_update_elem(&traced_flows, &l1, &one, BPF_ANY);
            bpf_map_update_elem(&traced_flows, &l2, &one, BPF_ANY);
            bpf_map_update_elem(&traced_flows, &l3, &one, BPF_ANY);
            bpf_map_update_elem(&traced_flows, &l4, &one, BPF_ANY);
        }
    }
    return 1;
}

// Ring buffers report no loss themselves: count it per probe.
static __always_inline void count_lost(u64 ip) {
    u64 zero64 = 0;
    u64 *n = bpf_map_lookup_elem(&lost_by_ip, &ip);
    if (!n) {
        bpf_map_update_elem(&lost_by_ip, &ip, &zero64, BPF_NOEXIST);
        n = bpf_map_lookup_elem(&lost_by_ip, &ip);
    }
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline int emit(struct kp_event *e) {
    u64 flags = 0;
    if (wakeup_bytes)
        flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
                    ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    if (bpf_ringbuf_output(&events, e, sizeof(*e), flags))
        count_lost(e->ip);
    return 0;
}

// Whether an event is kept, and what keeping it entails (the held NET_RX
// run goes out first; an entry is remembered for its return).
static __always_inline int admit(struct kp_event *e) {
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
    if (e->kind == KIND_ENTRY && (e->ip >= 64 || (ret_probes >> e->ip) & 1)) {
        struct ret_key rk = {.tid = e->tid, .ip = e->ip};
        u64 sk = e->sk;
        bpf_map_update_elem(&pending_ret, &rk, &sk, BPF_ANY);
    }
    return 1;
}

static __always_inline int submit(struct kp_event *e) {
    if (!admit(e))
        return 0;
    return emit(e);
}

// ---- device-layer frames: the packet's first bytes (pcapng export) ----

// Bit i: probe i sends its events as frame records (kp_frame_event); set
// before load, one probe per direction (tracer/capture/frames.py).
const volatile u64 frame_probes[4] = {};

static __always_inline int frame_wanted(u64 probe) {
    return probe < 256 && (frame_probes[(probe >> 6) & 3] >> (probe & 63)) & 1;
}

// Kept events of frame probes go out with the frame as the device has it:
// from the link header (skb->mac_header where set and before skb->data, as
// on receive once it was pulled; else skb->data, as on transmit).
static __always_inline int submit_frame(struct kp_event *e, struct sk_buff *skb) {
    if (!frame_wanted(e->ip))
        return submit(e);
    if (!admit(e))
        return 0;
    struct kp_frame_event *f = bpf_ringbuf_reserve(&events, sizeof(*f), 0);
    if (!f) {
        count_lost(e->ip);
        return 0;
    }
    __builtin_memcpy(&f->ev, e, sizeof(*e));
    __builtin_memset(&f->guard1, 0, sizeof(*f) - sizeof(f->ev));  // the guards too
    // Neighbours read together: head and data, the header offsets, len
    // and data_len.
    u8 b[16] = {}, hb[8] = {}, lb[8] = {};
    unsigned char *head = 0, *data = 0;
    u16 mh = 0, nh = 0;
    u32 len = 0, data_len = 0;
    SPAN_READ(b, skb, struct sk_buff, head);
    SPAN_GET(head, b, skb, struct sk_buff, head, head);
    SPAN_GET(data, b, skb, struct sk_buff, head, data);
    SPAN_READ(hb, skb, struct sk_buff, transport_header);
    SPAN_GET(mh, hb, skb, struct sk_buff, transport_header, mac_header);
    SPAN_GET(nh, hb, skb, struct sk_buff, transport_header, network_header);
    SPAN_READ(lb, skb, struct sk_buff, len);
    SPAN_GET(len, lb, skb, struct sk_buff, len, len);
    SPAN_GET(data_len, lb, skb, struct sk_buff, len, data_len);
    unsigned char *start = data;
    if (mh != (u16)~0U && head + mh < data)
        start = head + mh;
    u32 pulled = (u32)(data - start);
    f->len = len + pulled;
    f->link = (nh != (u16)~0U && head + nh >= start) ? (u16)(head + nh - start) : KP_NO_LINK;
    // Only the linear part is contiguous (skb_headlen: len - data_len); a
    // whole KP_FRAME_BYTES is read (constant sizes for the verifier: the
    // head buffer's skb_shared_info follows its end, so the reads stay
    // inside it) and user space keeps `cap` bytes.
    u32 cap = len - data_len + pulled;
    if (cap > KP_FRAME_BYTES)
        cap = KP_FRAME_BYTES;
    if (bpf_probe_read_kernel(f->data_lo, KP_FRAME_LO, start)
        || bpf_probe_read_kernel(f->data_hi, KP_FRAME_BYTES - KP_FRAME_LO, start + KP_FRAME_LO))
        cap = 0;
    f->cap = cap;
    struct net_device *dev = BPF_CORE_READ(skb, dev);
    if (dev) {
        f->ifindex = BPF_CORE_READ(dev, ifindex);
        f->dev_type = BPF_CORE_READ(dev, type);
        bpf_probe_read_kernel_str(f->ifname, sizeof(f->ifname), &dev->name);
    }
    u64 flags = 0;
    if (wakeup_bytes)
        flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
                    ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    bpf_ringbuf_submit(f, flags);
    return 0;
}

// ---- capture routines shared by kprobes and tracepoints ----

// struct socket's type, file and sk (one read of the span).
struct socket_head {
    struct file *file;
    struct sock *sk;
    short type;
};

static __always_inline void read_socket_head(struct socket *sock, struct socket_head *h) {
    u8 b[32] = {};
    SPAN_READ(b, sock, struct socket, type);
    SPAN_GET(h->type, b, sock, struct socket, type, type);
    SPAN_GET(h->file, b, sock, struct socket, type, file);
    SPAN_GET(h->sk, b, sock, struct socket, type, sk);
}

static __always_inline int submit_socket_head(struct socket_head *h, struct kp_event *e) {
    if (h->type != SOCK_STREAM || !h->sk || !sock_is_tcp(h->sk))
        return 0;
    if (!read_sock(h->sk, e))
        return 0;
    return submit(e);
}

static __always_inline int submit_socket(struct socket *sock, struct kp_event *e) {
    if (!sock)
        return 0;
    struct socket_head h = {};
    read_socket_head(sock, &h);
    return submit_socket_head(&h, e);
}

// The socket behind an open file, if it is one: a socket points back at its
// file; anything else a file holds does not.
static __always_inline int submit_file_socket(struct file *file, struct kp_event *e) {
    if (!file)
        return 0;
    struct socket *sock = BPF_CORE_READ(file, private_data);
    if (!sock)
        return 0;
    struct socket_head h = {};
    read_socket_head(sock, &h);
    if (h.file != file)
        return 0;
    return submit_socket_head(&h, e);
}

// A system call on a file descriptor: the TCP socket behind it, if any
// (has_len: len is the bytes asked for).
static __always_inline int syscall_fd_len(u64 probe, int fd, u64 len, int has_len) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (fd < 0)
        return 0;
    if (has_len) {
        e->arg3 = len;
        e->has |= HAS_ARG3;
    }
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
    if (!fdt)
        return 0;
    u8 b[16] = {};
    unsigned int max_fds = 0;
    struct file **fds = 0;
    SPAN_READ(b, fdt, struct fdtable, max_fds);
    SPAN_GET(max_fds, b, fdt, struct fdtable, max_fds, max_fds);
    SPAN_GET(fds, b, fdt, struct fdtable, max_fds, fd);
    if ((unsigned int)fd >= max_fds)
        return 0;
    struct file *file = 0;
    bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
    return submit_file_socket(file, e);
}

static __always_inline int syscall_fd(u64 probe, int fd, u64 len) {
    return syscall_fd_len(probe, fd, len, 1);
}

// A return: kept only if its entry was kept; the flow is the entry's socket
// (or, with sock_ret, the returned struct sock *).
static __always_inline int on_return(u64 probe, s64 ret, int sock_ret) {
    // The entry looked up before the event is built: a return whose entry
    // was not kept costs one lookup.
    struct ret_key rk = {.tid = (u32)bpf_get_current_pid_tgid(), .ip = probe};
    u64 *skp = bpf_map_lookup_elem(&pending_ret, &rk);
    if (!skp)
        return 0;
    struct sock *sk = (struct sock *)*skp;
    bpf_map_delete_elem(&pending_ret, &rk);
    EVENT_START(e, probe, KIND_RETURN);
    // Functions returning int (tcp_recvmsg, tcp_sendmsg_locked, io_send...)
    // set only eax: -EAGAIN reads 4294967285 in rax. Every value reported
    // here but a returned pointer is a byte count below 2^31 (MAX_RW_COUNT)
    // or -errno: the low 32 bits, sign-extended, are the value.
    e->ret = sock_ret ? ret : (s64)(s32)ret;
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
    // skb->dev and skb->sk are neighbours (one read).
    u8 b[16] = {};
    struct net_device *dev = 0;
    struct sock *skb_sk = 0;
    SPAN_READ(b, skb, struct sk_buff, dev);
    SPAN_GET(dev, b, skb, struct sk_buff, dev, dev);
    if (!sk) {
        SPAN_GET(skb_sk, b, skb, struct sk_buff, dev, sk);
        sk = skb_sk;
    }
    e->sk = (u64)sk;
    read_dev_netns(dev, e);
    return submit_frame(e, skb);
}

static __always_inline int skb_rx(u64 probe, struct sk_buff *skb) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (!skb)
        return 0;
    e->skb = (u64)skb;
    if (!read_skb_rx(skb, e))
        return 0;
    read_skb_netns(skb, e);
    return submit_frame(e, skb);
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

// ---- function probes: kprobes or fentry/fexit ----
//
// The routines that read a function's arguments, one per capture kind
// (probes/catalog.py: Capture). Each is compiled into a kprobe program
// (kp_KIND, one program attached to every function of that kind) and into
// fentry programs (fe_KIND_0, fe_KIND_1, ...: a BPF trampoline program is
// bound to one function at load, so there is one copy per probe of that
// kind, each given its target before load; unused copies are not loaded).
// Either way the attach cookie is the probe index.

static __always_inline int socket_entry(u64 probe, struct socket *sock, u64 arg3) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->arg3 = arg3;
    e->has |= HAS_ARG3;
    return submit_socket(sock, e);
}

// sock_write_iter / sock_read_iter(struct kiocb *iocb, struct iov_iter *it):
// write(2), writev(2), read(2), readv(2) (and io_uring's) on a socket, and
// on nothing else: a file's write never gets here, so non-socket I/O costs
// nothing. arg3 is the bytes offered (it->count).
static __always_inline int kiocb_entry(u64 probe, struct kiocb *iocb, struct iov_iter *it) {
    EVENT_START(e, probe, KIND_ENTRY);
    struct file *file = BPF_CORE_READ(iocb, ki_filp);
    e->arg3 = BPF_CORE_READ(it, count);
    e->has |= HAS_ARG3;
    return submit_file_socket(file, e);
}

// __x64_sys_recvmmsg(const struct pt_regs *regs): the socket behind the
// first argument (6.1 inlines __sys_recvmmsg into the system call).
static __always_inline int syscall_regs_fd1(u64 probe, struct pt_regs *regs) {
    return syscall_fd_len(probe, (int)BPF_CORE_READ(regs, di), 0, 0);
}

// io_uring's issue function of a socket op (io_send, io_recv, io_sendmsg,
// ...: struct io_kiocb *req, unsigned int issue_flags), in the submitting
// task or an io-wq worker: the socket behind req->file; arg3 is the op's
// io_sr_msg len (its command data sits at the start of the request). Local
// flavours of the two types: CO-RE finds them in the running kernel, and a
// build host without io_uring still compiles.
struct io_kiocb___kp {
    struct file *file;
} __attribute__((preserve_access_index));
struct io_sr_msg___kp {
    int len;
} __attribute__((preserve_access_index));

static __always_inline int io_kiocb_entry(u64 probe, struct io_kiocb___kp *req) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->arg3 = (u32)BPF_CORE_READ((struct io_sr_msg___kp *)req, len);
    e->has |= HAS_ARG3;
    return submit_file_socket(BPF_CORE_READ(req, file), e);
}

// sock_splice_read(file, ppos, pipe, len, flags): splice(2) out of a
// socket, at the socket's file operation; arg3 is len.
static __always_inline int file_len4(u64 probe, struct file *file, u64 len) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->arg3 = len;
    e->has |= HAS_ARG3;
    return submit_file_socket(file, e);
}

// __x64_sys_splice(const struct pt_regs *regs): splice(fd_in, off_in,
// fd_out, off_out, len, flags) from the saved registers; the socket written
// is fd_out (third); arg3 is len (fifth).
static __always_inline int syscall_regs_fd3(u64 probe, struct pt_regs *regs) {
    return syscall_fd(probe, (int)BPF_CORE_READ(regs, dx), BPF_CORE_READ(regs, r8));
}

// tcp_sendmsg_locked(sk, msg, size), and tcp_sendpage / do_tcp_sendpages(sk,
// page, offset, size, flags), the page-send path of sendfile and splice
// before Linux 6.5: seq is tp->write_seq at entry, where the call appends
// `return value` bytes, whatever else wrote the socket before.
static __always_inline int sock_write_seq(u64 probe, struct sock *sk, u64 size) {
    return sock_stream_pos(probe, sk, size, BPF_CORE_READ((struct tcp_sock *)sk, write_seq));
}

// tcp_recvmsg(sk, msg, len, ...): seq is tp->copied_seq at entry, the first
// stream byte the call returns (unless MSG_PEEK).
static __always_inline int sock_copied_seq(u64 probe, struct sock *sk, u64 len) {
    return sock_stream_pos(probe, sk, len, BPF_CORE_READ((struct tcp_sock *)sk, copied_seq));
}

// tcp_splice_read(sock, ppos, pipe, len, flags): as tcp_recvmsg, from
// tp->copied_seq at entry, through the struct socket.
static __always_inline int socket_copied_seq(u64 probe, struct socket *sock, u64 len) {
    return sock_copied_seq(probe, BPF_CORE_READ(sock, sk), len);
}

// (sk, skb, ...) below TCP on transmit: TCP header built, IP header not yet.
static __always_inline int sock_skb_l4(u64 probe, struct sock *sk, struct sk_buff *skb) {
    EVENT_START(e, probe, KIND_ENTRY);
    if (!read_sock(sk, e) || !sock_is_tcp(sk))
        return 0;
    e->skb = (u64)skb;
    if (!read_skb_l4(skb, e))
        return 0;
    return submit(e);
}

// (struct sk_buff **pskb, ...): __netif_receive_skb_core.
static __always_inline int skb_pp_rx(u64 probe, struct sk_buff **pskb) {
    struct sk_buff *skb = 0;
    bpf_probe_read_kernel(&skb, sizeof(skb), pskb);
    return skb_rx(probe, skb);
}

// ip_build_and_send_pkt(skb, sk, saddr, daddr, opt, tos): the SYN-ACK's IP
// step. TCP header built; addresses come as arguments.
static __always_inline int skb_l4_addrs(u64 probe, struct sk_buff *skb, struct sock *sk,
                                        u32 saddr, u32 daddr) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->skb = (u64)skb;
    if (!read_skb_l4(skb, e))
        return 0;
    e->saddr = saddr;
    e->daddr = daddr;
    e->has |= HAS_TUPLE;
    if (sk) {
        e->sk = (u64)sk;
        e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
    }
    return submit(e);
}

// tcp_v4_send_synack(sk, dst, fl, req, foc, type, syn_skb): the SYN-ACK is
// built from the request sock and never passes __tcp_transmit_skb.
static __always_inline int synack_req(u64 probe, struct sock *listener,
                                      struct request_sock *req) {
    EVENT_START(e, probe, KIND_ENTRY);
    e->sk = (u64)listener;
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
static __always_inline int datagram_iter(u64 probe, struct sk_buff *skb, int offset, int len) {
    EVENT_START(e, probe, KIND_ENTRY);
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

// Every capture kind: (name, fentry copies, call). In `call`, P is the probe
// index and A(n) the function's n-th argument (1-based), however the program
// type reads them. The copies cover every catalog probe of that kind
// (tests/unit/test_core_object.py checks). Parenthesised: calls have commas.
#define CAPTURES(X)                                                                    \
    X(syscall_fd, 9, (syscall_fd(P, (int)A(1), A(3))))                                 \
    X(kiocb, 2, (kiocb_entry(P, (struct kiocb *)A(1), (struct iov_iter *)A(2))))       \
    X(syscall_regs_fd3, 1, (syscall_regs_fd3(P, (struct pt_regs *)A(1))))               \
    X(syscall_regs_fd1, 1, (syscall_regs_fd1(P, (struct pt_regs *)A(1))))               \
    X(io_kiocb, 6, (io_kiocb_entry(P, (struct io_kiocb___kp *)A(1))))                  \
    X(file_len4, 1, (file_len4(P, (struct file *)A(1), A(4))))                         \
    X(socket, 4, (socket_entry(P, (struct socket *)A(1), A(3))))                       \
    X(sock, 11, (sock_entry(P, (struct sock *)A(1), A(3))))                            \
    X(sock_write_seq, 1, (sock_write_seq(P, (struct sock *)A(1), A(3))))               \
    X(sock_page_write_seq, 1, (sock_write_seq(P, (struct sock *)A(1), A(4))))          \
    X(sock_copied_seq, 1, (sock_copied_seq(P, (struct sock *)A(1), A(3))))             \
    X(socket_copied_seq, 1, (socket_copied_seq(P, (struct socket *)A(1), A(4))))       \
    X(sock_skb_cb, 1, (sock_skb_cb(P, (struct sock *)A(1), (struct sk_buff *)A(2), 1,  \
                                   (u32)A(5))))                                        \
    X(sock_skb_cb_noack, 1, (sock_skb_cb(P, (struct sock *)A(1), (struct sk_buff *)A(2), \
                                         0, 0)))                                       \
    X(sock_skb_l4, 1, (sock_skb_l4(P, (struct sock *)A(1), (struct sk_buff *)A(2))))   \
    X(skb_l3_1, 11, (skb_l3(P, (struct sk_buff *)A(1), 0)))                            \
    X(skb_l3_2, 1, (skb_l3(P, (struct sk_buff *)A(2), 0)))                             \
    X(skb_l3_3, 4, (skb_l3(P, (struct sk_buff *)A(3), 0)))                             \
    X(skb_l3_4, 1, (skb_l3(P, (struct sk_buff *)A(4), 0)))                             \
    X(sock_skb_l3, 5, (skb_l3(P, (struct sk_buff *)A(2), (struct sock *)A(1))))        \
    X(skb_rx, 2, (skb_rx(P, (struct sk_buff *)A(1))))                                  \
    X(skb_pp_rx, 1, (skb_pp_rx(P, (struct sk_buff **)A(1))))                           \
    X(skb_l4_addrs, 1, (skb_l4_addrs(P, (struct sk_buff *)A(1), (struct sock *)A(2),   \
                                     (u32)A(3), (u32)A(4))))                           \
    X(softirq, 1, (softirq_run(P)))                                                    \
    X(synack_req, 1, (synack_req(P, (struct sock *)A(1), (struct request_sock *)A(4)))) \
    X(datagram_iter, 1, (datagram_iter(P, (struct sk_buff *)A(1), (int)A(2), (int)A(4))))

// Returns: (name, fexit copies, call); R is the return value.
#define RETURNS(X)                                                                     \
    X(return, 25, (on_return(P, R, 0)))                                                 \
    X(return_sock, 1, (on_return(P, R, 1)))

#define P bpf_get_attach_cookie(ctx)

// kprobes: the arguments in the registers.
#define A(n) PT_REGS_PARM##n(ctx)
#define R PT_REGS_RC(ctx)
#define KPROBE(name, copies, call)                                                     \
    SEC("?kprobe") int kp_##name(struct pt_regs *ctx) { return call; }
#define KRETPROBE(name, copies, call)                                                  \
    SEC("?kretprobe") int kp_##name(struct pt_regs *ctx) { return call; }
CAPTURES(KPROBE)
RETURNS(KRETPROBE)
#undef A
#undef R

// fentry/fexit: the trampoline's u64 argument array. bpf_get_func_arg
// (inlined by the verifier) leaves 0 past the function's last argument,
// where a register would hold junk: the same programs serve every arity.
static __always_inline u64 fn_arg(void *ctx, u32 n) {
    u64 v = 0;
    bpf_get_func_arg(ctx, n, &v);
    return v;
}

static __always_inline s64 fn_ret(void *ctx) {
    u64 v = 0;
    bpf_get_func_ret(ctx, &v);
    return (s64)v;
}

#define A(n) fn_arg(ctx, (n) - 1)
#define R fn_ret(ctx)
#define FENTRY_COPY(name, i, call)                                                     \
    SEC("?fentry") int fe_##name##_##i(u64 *ctx) { return call; }
#define FEXIT_COPY(name, i, call)                                                      \
    SEC("?fexit") int fx_##name##_##i(u64 *ctx) { return call; }
#define COPIES_1(M, name, call) M(name, 0, call)
#define COPIES_2(M, name, call) COPIES_1(M, name, call) M(name, 1, call)
#define COPIES_3(M, name, call) COPIES_2(M, name, call) M(name, 2, call)
#define COPIES_4(M, name, call) COPIES_3(M, name, call) M(name, 3, call)
#define COPIES_5(M, name, call) COPIES_4(M, name, call) M(name, 4, call)
#define COPIES_6(M, name, call) COPIES_5(M, name, call) M(name, 5, call)
#define COPIES_7(M, name, call) COPIES_6(M, name, call) M(name, 6, call)
#define COPIES_8(M, name, call) COPIES_7(M, name, call) M(name, 7, call)
#define COPIES_9(M, name, call) COPIES_8(M, name, call) M(name, 8, call)
#define COPIES_10(M, name, call) COPIES_9(M, name, call) M(name, 9, call)
#define COPIES_11(M, name, call) COPIES_10(M, name, call) M(name, 10, call)
#define COPIES_12(M, name, call) COPIES_11(M, name, call) M(name, 11, call)
#define COPIES_13(M, name, call) COPIES_12(M, name, call) M(name, 12, call)
#define COPIES_14(M, name, call) COPIES_13(M, name, call) M(name, 13, call)
#define COPIES_15(M, name, call) COPIES_14(M, name, call) M(name, 14, call)
#define COPIES_16(M, name, call) COPIES_15(M, name, call) M(name, 15, call)
#define COPIES_17(M, name, call) COPIES_16(M, name, call) M(name, 16, call)
#define COPIES_18(M, name, call) COPIES_17(M, name, call) M(name, 17, call)
#define COPIES_19(M, name, call) COPIES_18(M, name, call) M(name, 18, call)
#define COPIES_20(M, name, call) COPIES_19(M, name, call) M(name, 19, call)
#define COPIES_21(M, name, call) COPIES_20(M, name, call) M(name, 20, call)
#define COPIES_22(M, name, call) COPIES_21(M, name, call) M(name, 21, call)
#define COPIES_23(M, name, call) COPIES_22(M, name, call) M(name, 22, call)
#define COPIES_24(M, name, call) COPIES_23(M, name, call) M(name, 23, call)
#define COPIES_25(M, name, call) COPIES_24(M, name, call) M(name, 24, call)
#define FENTRY(name, copies, call) COPIES_##copies(FENTRY_COPY, name, call)
#define FEXIT(name, copies, call) COPIES_##copies(FEXIT_COPY, name, call)
CAPTURES(FENTRY)
RETURNS(FEXIT)
#undef A
#undef R
#undef P

// ---- tracepoints (tp_btf): where the kernel has no kprobes ----

static __always_inline u32 syscall_hook(long id) {
    switch (id) {
    case NR_SENDTO: return TP_SYS_SENDTO;
    case NR_RECVFROM: return TP_SYS_RECVFROM;
    case NR_SENDMSG: return TP_SYS_SENDMSG;
    case NR_RECVMSG: return TP_SYS_RECVMSG;
    case NR_WRITE: return TP_SYS_WRITE;
    case NR_READ: return TP_SYS_READ;
    // the probes behind them (sock_write_iter, sock_read_iter) serve both
    case NR_WRITEV: return TP_SYS_WRITE;
    case NR_READV: return TP_SYS_READ;
    case NR_SENDMMSG: return TP_SYS_SENDMMSG;
    case NR_RECVMMSG: return TP_SYS_RECVMMSG;
    case NR_SENDFILE: return TP_SYS_SENDFILE;
    case NR_SPLICE: return TP_SYS_SPLICE;
    }
    return TP_COUNT;
}

static __always_inline u32 hook_probe(u32 hook) {
    if (hook >= TP_COUNT)
        return KP_NONE;
    return tp_probe[hook];
}

// raw_syscalls:sys_enter(regs, id): fd, buffer, length in the registers;
// splice(fd_in, off_in, fd_out, off_out, len, flags) writes fd_out.
SEC("?tp_btf/sys_enter")
int BPF_PROG(tp_sys_enter, struct pt_regs *regs, long id) {
    u32 hook = syscall_hook(id);
    u32 probe = hook_probe(hook);
    if (probe == KP_NONE)
        return 0;
    if (hook == TP_SYS_SPLICE)
        return syscall_regs_fd3(probe, regs);
    // writev/readv: the third argument counts iovecs, not bytes
    return syscall_fd_len(probe, (int)BPF_CORE_READ(regs, di), BPF_CORE_READ(regs, dx),
                          id != NR_WRITEV && id != NR_READV);
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
