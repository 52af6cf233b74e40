// The one definition of the kpath kernel event record, shared by both BPF
// programs (kpath_bcc.c compiled by BCC, kpath.bpf.c compiled once by clang
// into the CO-RE object). tracer/capture/record.py mirrors it and checks the
// mirror against the CO-RE object's BTF at load.
//
// Needs u8/u16/u32/u64/s64, __always_inline, bpf_ktime_get_ns and
// bpf_get_smp_processor_id (BCC's kernel headers and helpers, and
// vmlinux.h with bpf_helpers.h, have them).

#ifndef KPATH_KP_EVENT_H
#define KPATH_KP_EVENT_H

#define KP_COMM_LEN 16

#define KIND_ENTRY 0
#define KIND_RETURN 1
// Not an event: a window [arg3, ts] in which the kernel skipped every
// kprobe program on this CPU (an interrupt or softirq, ctx and vec, ran
// while kprobes were skipped there, ret says why: KP_SKIP_*).
// tracer/capture/record.py blind_windows.
#define KIND_BLIND 2
// A blind window's record names no probe: its ip, and the lost_by_ip key
// of such records the buffer could not take (tracer/capture/base.py).
#define KP_BLIND_IP 0xfffffffeULL
// Why kprobes were skipped where a window opened (its record's ret): the
// CPU's bpf_prog_active was raised, a kprobe handler ran (current_kprobe),
// one of kpath's own kprobe programs ran (its mark, where the kernel's
// state cannot be read). record.py SKIP_* mirror them.
#define KP_SKIP_PROG_ACTIVE 1
#define KP_SKIP_KPROBE 2
#define KP_SKIP_MARK 4

#define CTX_TASK 0
#define CTX_SOFTIRQ 1
#define CTX_HARDIRQ 2

// Which optional fields of an event are valid.
#define HAS_TUPLE 0x01
#define HAS_SEQ 0x02
#define HAS_LEN 0x04
#define HAS_RET 0x08
#define HAS_ACK 0x10
#define HAS_FLAGS 0x20
#define HAS_ARG3 0x40

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_ACK 0x10

struct kp_event {
    u64 ts;
    u64 ip;  // BCC: the probed function's address; CO-RE: the probe's index
    u64 sk;
    u64 skb;
    s64 ret;
    u64 arg3;
    u32 tgid;
    u32 tid;
    u32 cpu;
    u32 netns;
    u32 saddr;  // network byte order
    u32 daddr;
    u32 seq;
    u32 end_seq;
    u32 ack;
    u32 length;
    u16 sport;  // host byte order
    u16 dport;
    u8 kind;
    u8 ctx;
    u8 vec;
    u8 tcp_flags;
    u8 has;
    u8 pad[7];
    char comm[KP_COMM_LEN];
};

_Static_assert(sizeof(struct kp_event) == 120, "kp_event size");

// An event at a device-layer probe with the packet's first bytes as the
// device has them (link header on): a second record kind, told apart by its
// size, so that every other event stays a bare kp_event. Which probes send
// it is the loader's choice (one per direction: tracer/capture/frames.py).
#define KP_FRAME_BYTES 128
// Of them, the bytes before guard2 (data_lo); the rest after it (data_hi).
#define KP_FRAME_LO 120
#define KP_NO_LINK 0xffff

// A kp_event takes one 128-byte slot of the ring (8-byte header + 120); a
// frame record takes exactly three, and the words where its second and
// third slots begin (guard1, guard2) are 0, which no record's length is.
// So the reader tells every record's start from the words at 128-byte
// steps alone, all at once (tracer/capture/ringbuf.py), instead of walking
// the records one by one in Python (under TCG that walk took most of the
// tracer's CPU during a traced transfer).
struct kp_frame_event {
    struct kp_event ev;
    u32 guard1;    // 0
    u32 len;       // frame length: skb->len plus the link header before skb->data
    u8 data_lo[KP_FRAME_LO];  // data: the frame's first bytes
    u32 guard2;    // 0
    u32 ifindex;
    u16 cap;       // bytes of data captured (the skb's linear part, at most KP_FRAME_BYTES)
    u16 link;      // link-header bytes before the network header (KP_NO_LINK: unknown)
    u16 dev_type;  // the device's ARPHRD_* type
    u16 pad;
    char ifname[16];
    u8 data_hi[KP_FRAME_BYTES - KP_FRAME_LO];  // data, continued
    u8 spare[88];  // up to the third slot's end
};

// tracer/capture/record.py mirrors this layout (FRAME_TAIL_DTYPE); no map
// holds the struct, so it is checked here rather than through BTF.
_Static_assert(sizeof(struct kp_frame_event) + 8 == 3 * 128, "kp_frame_event size");
_Static_assert(__builtin_offsetof(struct kp_frame_event, guard1) + 8 == 128, "guard1");
_Static_assert(__builtin_offsetof(struct kp_frame_event, guard2) + 8 == 256, "guard2");
_Static_assert(__builtin_offsetof(struct kp_frame_event, data_lo) == 128, "data_lo");
_Static_assert(__builtin_offsetof(struct kp_frame_event, ifname) == 264, "ifname");
_Static_assert(__builtin_offsetof(struct kp_frame_event, data_hi) == 280, "data_hi");

struct kp_config {
    u32 tgid;         // trace this process (0: no pid filter)
    u32 use_pid_map;  // trace processes in traced_pids (kpath trace -- CMD)
    u32 port;         // 0: any port
    u32 comm_set;
    char comm[KP_COMM_LEN];
};

struct flow_key {
    u32 netns;
    u32 addr_lo;
    u32 addr_hi;
    u16 port_lo;
    u16 port_hi;
};

// Both directions of a connection give one key. No netns in the key: a
// connection between two namespaces (veth) has one 4-tuple but two netns,
// and both ends must pass the filter.
static __always_inline struct flow_key make_flow_key(struct kp_event *e) {
    struct flow_key k = {};
    if (e->saddr < e->daddr || (e->saddr == e->daddr && e->sport <= e->dport)) {
        k.addr_lo = e->saddr;
        k.port_lo = e->sport;
        k.addr_hi = e->daddr;
        k.port_hi = e->dport;
    } else {
        k.addr_lo = e->daddr;
        k.port_lo = e->dport;
        k.addr_hi = e->saddr;
        k.port_hi = e->sport;
    }
    return k;
}

// A listening socket's events carry its bound address and port with no
// peer (0:0), which make_flow_key orders first.
static __always_inline struct flow_key listener_key(u32 addr, u16 port) {
    struct flow_key k = {};
    k.addr_hi = addr;
    k.port_hi = port;
    return k;
}

struct irq_state {
    // 1 while an irq handler runs (handlers do not nest), else 0. A flag,
    // not a depth: an entry seen without its exit (attached in between)
    // must not leave every later event marked hardirq.
    u32 hardirq;
    u32 softirq_vec;  // vector + 1 while a softirq runs, else 0
    // A kprobe program runs with the CPU's bpf_prog_active raised (and a
    // kprobe handler with current_kprobe set); an interrupt or softirq
    // arriving meanwhile runs with it still raised and the kernel skips
    // every kprobe program hit in it, counting none before Linux 6.7. The
    // context tracepoints (raw: recursion is checked per program there)
    // see such a blind window open and close. Both objects read the
    // kernel's per-CPU state; where BCC cannot (kallsyms without data
    // symbols), its kprobe programs mark their runs here.
    u32 in_kprobe;    // BCC, KPATH_MARK_RUNS: 1 while a kprobe program runs
    u32 blind_ctx;    // CTX_SOFTIRQ or CTX_HARDIRQ: what opened the open window; 0: none
    u32 blind_vec;    // its softirq vector
    u32 blind_cause;  // its KP_SKIP_* bits
    u64 blind_since;
};

// A softirq or irq entered while kprobes are skipped on this CPU
// (`skipping`: KP_SKIP_* bits, 0: not skipped): the window opens, unless
// one is open already.
static __always_inline void blind_open(struct irq_state *st, u32 ctx_kind, u32 vec,
                                       u32 skipping) {
    if (skipping && !st->blind_ctx) {
        st->blind_cause = skipping;
        st->blind_ctx = ctx_kind;
        st->blind_vec = vec;
        st->blind_since = bpf_ktime_get_ns();
    }
}

// At the exit of `ctx_kind`: 1 and the window's record in *e when that
// context opened the open window (closed now), else 0. The record is
// written whatever the filters: a window hides events of every flow.
static __always_inline int blind_take(struct irq_state *st, u32 ctx_kind, struct kp_event *e) {
    if (st->blind_ctx != ctx_kind)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->arg3 = st->blind_since;
    e->ret = st->blind_cause;
    e->ip = KP_BLIND_IP;
    e->cpu = bpf_get_smp_processor_id();
    e->kind = KIND_BLIND;
    e->ctx = ctx_kind;
    e->vec = st->blind_vec;
    st->blind_ctx = 0;
    return 1;
}

struct ret_key {
    u32 tid;
    u32 pad;
    u64 ip;
};

#endif
