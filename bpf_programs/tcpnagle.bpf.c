// SPDX-License-Identifier: GPL-2.0
/* tcpnagle: which TCP sends leave bytes waiting in the send queue, why, and for how long.
 *
 * The original tcpnagle.bt reads tcp_write_xmit's nonagle argument and return value through a
 * kprobe; kernels without kprobes or fentry cannot see that static function. Instead:
 *
 *   sock_send_length (end of sock_sendmsg, process context): for a TCP send that queued bytes,
 *     count it by tp->nonagle; if write_seq is ahead of snd_nxt, bytes are still unsent: infer why
 *     from the same snapshot of the socket (cork bit, windows, in flight, TSQ flag) and remember
 *     (now, write_seq, cause) in the socket's ring of pending holds.
 *   net_dev_queue (a packet handed to a device): when the packet is a TCP segment of a socket with
 *     pending holds and carries the last byte of a held send, the hold ends: its duration goes to
 *     the log2 histogram of its cause (microseconds) and to the socket's totals.
 *   inet_sock_set_state -> CLOSE: forget the socket's pending holds.
 *
 * All three are tp_btf programs (detach in ~0.1 ms, unlike perf-event tracepoints). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "tcpnagle.h"

char LICENSE[] SEC("license") = "GPL";

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define TCP_NAGLE_OFF 1
#define TCP_NAGLE_CORK 2

/* Set by userspace before load. */
const volatile bool per_socket = false;	/* keep struct tcpnagle_sock totals (--by sock) */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tcpnagle_counts);
} counts SEC(".maps");

/* Hold time in microseconds, one histogram per cause. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, N_CAUSES);
	__type(key, __u32);
	__type(value, struct log2_hist);
} hold_us SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);			/* struct sock * */
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);		/* ~3 MB: an entry carries a histogram */
	__type(key, __u64);			/* socket cookie */
	__type(value, struct tcpnagle_sock);
} sockets SEC(".maps");

/* Puts enum hold_cause into the object's BTF, where netkit reads the causes' names. */
const enum hold_cause *hold_cause_anchor __attribute__((unused));

static __always_inline struct tcpnagle_counts *my_counts(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counts, &zero);
}

/* a is at or after b in sequence space */
static __always_inline bool seq_geq(__u32 a, __u32 b)
{
	return (__s32)(a - b) >= 0;
}

static __always_inline __u32 classify(struct tcp_sock *tp, struct sock *sk, __u32 nonagle,
				      __u32 unsent)
{
	__u32 snd_nxt = tp->snd_nxt, mss = tp->mss_cache;
	__u32 window_end = tp->snd_una + tp->snd_wnd;
	__u32 in_flight = tp->packets_out - (tp->sacked_out + tp->lost_out) + tp->retrans_out;
	__u32 next = unsent < mss ? unsent : mss;	/* size of the next segment to go */
	__u32 wmem = sk->sk_wmem_alloc.refs.counter;	/* 1 + truesize of unfreed sent skbs */

	if (nonagle & TCP_NAGLE_CORK)
		return CAUSE_CORK;
	if (!seq_geq(window_end, snd_nxt + next))
		return CAUSE_RWND;
	if (in_flight >= tp->snd_cwnd)
		return CAUSE_CWND;
	if ((sk->sk_tsq_flags & TSQF_THROTTLED) && wmem > 1)
		return CAUSE_AUTOCORK;
	/* TCP's own pacing (SO_MAX_PACING_RATE, or a pacing rate with no fq below) holds the next
	 * segment until its departure time; with nothing in flight it would look like MSG_MORE. */
	if (sk->sk_pacing_status == SK_PACING_NEEDED && tp->tcp_wstamp_ns > bpf_ktime_get_ns())
		return CAUSE_OTHER;
	/* Nagle as tcp_nagle_check() has it (with Minshall's variant): a partial segment waits
	 * while an earlier small segment is unacknowledged. */
	if (!nonagle && tp->packets_out && unsent < mss &&
	    !seq_geq(tp->snd_una, tp->snd_sml) && seq_geq(snd_nxt, tp->snd_sml))
		return CAUSE_NAGLE;
	if (!tp->packets_out && unsent < mss)
		return CAUSE_MORE;
	return CAUSE_OTHER;
}

static __always_inline void note_socket(struct sock *sk, __u64 cookie, bool held)
{
	struct tcpnagle_sock *s, fresh = {};

	s = bpf_map_lookup_elem(&sockets, &cookie);
	if (!s) {
		/* The first send names the socket's owner: the task that sent on it. */
		fresh.tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		fresh.family = sk->__sk_common.skc_family;
		fresh.lport = sk->__sk_common.skc_num;
		fresh.dport = bpf_ntohs(sk->__sk_common.skc_dport);
		if (fresh.family == AF_INET6) {
			BPF_CORE_READ_INTO(&fresh.saddr, sk, __sk_common.skc_v6_rcv_saddr);
			BPF_CORE_READ_INTO(&fresh.daddr, sk, __sk_common.skc_v6_daddr);
		} else {
			BPF_CORE_READ_INTO(&fresh.saddr, sk, __sk_common.skc_rcv_saddr);
			BPF_CORE_READ_INTO(&fresh.daddr, sk, __sk_common.skc_daddr);
		}
		s = lookup_or_init(&sockets, &cookie, &fresh);
		if (!s)
			return;
	}
	__sync_fetch_and_add(&s->sends, 1);
	if (held)
		__sync_fetch_and_add(&s->held, 1);
}

static __always_inline void add_hold(struct sock *sk, __u64 cookie, __u32 end_seq, __u32 cause,
				     __u64 now, struct tcpnagle_counts *c)
{
	__u64 key = (__u64)sk;
	struct pending *p, fresh = {};
	__u32 tail;

	fresh.cookie = cookie;
	p = lookup_or_init(&pending, &key, &fresh);
	if (!p) {			/* map full */
		c->dropped++;
		return;
	}
	tail = p->tail;
	if (tail - p->head >= HOLD_RING) {
		/* Ring full: this hold is counted but not timed, so that the timed ones stay exact
		 * (stretching the newest one to these bytes would overstate it). */
		c->overflow++;
		return;
	}
	p->ring[tail & (HOLD_RING - 1)].start_ns = now;
	p->ring[tail & (HOLD_RING - 1)].end_seq = end_seq;
	p->ring[tail & (HOLD_RING - 1)].cause = cause;
	__sync_fetch_and_add(&p->tail, 1);	/* publish after the entry is written */
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(on_send, struct sock *sk, int ret, int flags)
{
	struct tcpnagle_counts *c;
	struct tcp_sock *tp;
	__u32 nonagle, write_seq, unsent, cause = 0;
	__u64 cookie = 0;
	bool held;

	if (ret <= 0)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	if (!ports_selected(sk->__sk_common.skc_num, bpf_ntohs(sk->__sk_common.skc_dport)))
		return 0;
	if (!task_selected())
		return 0;
	c = my_counts();
	if (!c)
		return 0;

	nonagle = BPF_CORE_READ_BITFIELD(tp, nonagle) & (NONAGLE_VALUES - 1);
	c->sends[nonagle]++;
	write_seq = tp->write_seq;
	unsent = write_seq - tp->snd_nxt;
	held = (__s32)unsent > 0;
	if (held) {
		cause = classify(tp, sk, nonagle, unsent);
		if (cause < N_CAUSES)
			c->held[cause]++;
	}
	if (held || per_socket)
		cookie = bpf_get_socket_cookie(sk);
	if (per_socket)
		note_socket(sk, cookie, held);
	if (held)
		add_hold(sk, cookie, write_seq, cause, bpf_ktime_get_ns(), c);
	return 0;
}

/* Sequence range of a TCP segment leaving through a device: [*seq, *end). */
static __always_inline bool segment_range(struct sk_buff *skb, __u32 *seq, __u32 *end)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u64 head = (__u64)skb->head, data = (__u64)skb->data;
	__u16 th_off = skb->transport_header;
	struct tcphdr th;
	__s64 payload;

	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return false;
	if (th_off == (__u16)~0U)
		return false;
	if (bpf_probe_read_kernel(&th, sizeof(th), (void *)(head + th_off)))
		return false;
	/* skb->len counts from skb->data (the link header, if any, is already pushed) */
	payload = (__s64)skb->len - ((__s64)(head + th_off) - (__s64)data) - th.doff * 4;
	if (payload < 0)
		payload = 0;
	*seq = bpf_ntohl(th.seq);
	*end = *seq + (__u32)payload + th.fin;
	return true;
}

static __always_inline void finish_hold(struct pending *p, struct hold *h, __u64 now)
{
	__u64 ns = now > h->start_ns ? now - h->start_ns : 0;
	__u32 cause = h->cause;
	struct log2_hist *hist = bpf_map_lookup_elem(&hold_us, &cause);
	struct tcpnagle_sock *s;

	if (hist)
		hist_record(hist, ns / 1000);
	if (!per_socket)
		return;
	s = bpf_map_lookup_elem(&sockets, &p->cookie);
	if (!s)
		return;
	__sync_fetch_and_add(&s->holds, 1);
	__sync_fetch_and_add(&s->held_ns, ns);
	hist_record(&s->hold_us, ns / 1000);
	if (ns > s->max_ns)
		s->max_ns = ns;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(on_dev_queue, struct sk_buff *skb)
{
	struct sock *sk = skb->sk;
	__u64 key = (__u64)sk, now;
	struct pending *p;
	struct tcpnagle_counts *c;
	__u32 seq, end, head;

	if (!sk)
		return 0;
	p = bpf_map_lookup_elem(&pending, &key);
	if (!p || p->head == p->tail)
		return 0;
	if (!segment_range(skb, &seq, &end))
		return 0;
	now = bpf_ktime_get_ns();
	head = p->head;
	for (int i = 0; i < HOLD_RING; i++) {
		struct hold *h;

		if (head == p->tail)
			break;
		h = &p->ring[head & (HOLD_RING - 1)];
		if (!seq_geq(end, h->end_seq))
			break;			/* its last byte has not left yet */
		if (seq_geq(seq, h->end_seq)) {
			/* This segment starts past the hold's end: the bytes left before the hold
			 * was recorded (a race with the send), so its start time is meaningless. */
			c = my_counts();
			if (c)
				c->missed++;
		} else {
			finish_hold(p, h, now);
		}
		head++;
	}
	p->head = head;
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 key = (__u64)sk, cookie;
	struct pending *p;
	struct tcpnagle_counts *c;
	struct tcpnagle_sock *s;

	if (newstate != TCP_CLOSE || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	p = bpf_map_lookup_elem(&pending, &key);
	if (p) {
		c = my_counts();
		if (c)
			c->dropped += p->tail - p->head;
		bpf_map_delete_elem(&pending, &key);
	}
	if (per_socket) {
		cookie = bpf_get_socket_cookie((void *)sk);
		s = bpf_map_lookup_elem(&sockets, &cookie);
		if (s)
			s->closed = 1;
	}
	return 0;
}
