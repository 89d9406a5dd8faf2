// SPDX-License-Identifier: GPL-2.0
/* tcpretrans: TCP retransmissions, one event each or counted per flow (-C).
 *
 * tcp:tcp_retransmit_skb   every segment TCP sends again (timeout, fast retransmit, SACK
 *                          recovery, RACK, a SYN or FIN again). Since 6.12 it also fires for
 *                          a retransmission that failed (err != 0); see counted_by_kernel.
 * tcp:tcp_retransmit_synack a listener's SYN-ACK sent again (the client's ACK did not come).
 *
 * Both fire in softirq or from a timer: the PID is the socket's owner (sockowners.h), not the
 * current task. A retransmitted skb may carry several segments (TSO/GSO); their number goes
 * with each event, so that the events' sum is the kernel's TcpRetransSegs. Tail loss probes
 * have no tracepoint: netkit reads their counters from /proc/net/netstat. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "owner.h"
#define SOCKOWNER_STATE
#define SOCKOWNER_ACCEPT
#define SOCKOWNER_SEND
#include "sockowners.h"
#include "tcpretrans.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile bool count_flows = false;	/* -C */
const volatile __u8 filter_ip = 0;		/* -4/-6 */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct retrans_key);
	__type(value, struct retrans_count);
} counts SEC(".maps");

/* Retransmissions that failed (err != 0) and sent nothing: [0] hits, [1] segments. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} failed SEC(".maps");

/* Socket (its cookie: never reused) -> its tcp_sock.total_retrans at its last event. The
 * kernel adds a retransmission's segments to total_retrans exactly when it adds them to
 * TcpRetransSegs, so a change since the last event says "counted" whatever err is. LRU: a
 * socket forgotten is judged by its err again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} total_retrans SEC(".maps");

const struct retrans_event *event_btf_anchor __attribute__((unused));
const enum retrans_kind *kind_btf_anchor __attribute__((unused));

static __always_inline bool v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/* Fills f from the addresses as sock_common holds them (a socket's or a request socket's);
 * false when it is not IP or -4/-6 leaves it out. */
static __always_inline bool flow_of(const struct sock_common *c, __u16 lport, __u16 rport,
				    struct retrans_flow *f)
{
	__u16 family = c->skc_family;

	f->lport = lport;
	f->rport = rport;
	if (family == AF_INET) {
		f->family = 4;
		*(__u32 *)f->laddr = c->skc_rcv_saddr;
		*(__u32 *)f->raddr = c->skc_daddr;
	} else if (family == AF_INET6) {
		__builtin_memcpy(f->laddr, &c->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(f->raddr, &c->skc_v6_daddr, 16);
		f->family = 6;
		if (v4_mapped(f->raddr)) {
			f->family = 4;
			__builtin_memcpy(f->laddr, f->laddr + 12, 4);
			__builtin_memcpy(f->raddr, f->raddr + 12, 4);
			__builtin_memset(f->laddr + 4, 0, 12);
			__builtin_memset(f->raddr + 4, 0, 12);
		}
	} else {
		return false;
	}
	return !filter_ip || f->family == filter_ip;
}

static __always_inline void record(const struct sock *owner_sk, struct retrans_flow *flow,
				   __u32 seq, __u16 segs, __u8 state, __u8 kind)
{
	struct retrans_event *e;
	struct retrans_count *n, zero = {};
	struct retrans_key key = {};
	struct owner owner;

	if (!ports_selected(flow->lport, flow->rport) || !owner_selected(owner_sk, &owner))
		return;
	if (count_flows) {
		key.flow = *flow;
		key.pid = owner.pid;
		key.kind = kind;
		__builtin_memcpy(zero.comm, owner.comm, sizeof(zero.comm));
		n = lookup_or_init(&counts, &key, &zero);
		if (n) {
			__sync_fetch_and_add(&n->retransmits, 1);
			__sync_fetch_and_add(&n->segs, segs);
		}
		return;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->owner = owner;
	e->flow = *flow;
	e->seq = seq;
	e->segs = segs;
	e->state = state;
	e->kind = kind;
	bpf_ringbuf_submit(e, 0);
}

#define EAGAIN 11
#define ENOMEM 12
#define EBUSY 16
#define EINVAL 22
#define EHOSTUNREACH 113

/* Whether __tcp_retransmit_skb got as far as counting this retransmission in TcpRetransSegs,
 * which it does just before handing the segment to IP. The errors it returns before that point
 * sent nothing and are counted nowhere: the original still in a host queue (EBUSY), no window
 * (EAGAIN), already acknowledged (EINVAL), no memory to trim or split the buffer (ENOMEM), no
 * route (EHOSTUNREACH). Any other error came from below TCP, after the count: a netfilter drop
 * (EPERM), a full device queue (NET_XMIT_DROP, positive), no buffer (ENOBUFS). The kernel
 * counts those in TcpRetransSegs and in TCPRetransFail both, and so does netkit: printed like
 * any retransmission, and in the failed total. (IP's own no-route, EHOSTUNREACH after the
 * count, needs the route to vanish between TCP's check and IP's: left out.) */
static __always_inline bool counted_by_kernel(int err)
{
	return err != -EBUSY && err != -EAGAIN && err != -EINVAL && err != -ENOMEM &&
	       err != -EHOSTUNREACH;
}

/* Whether this event's retransmission is in TcpRetransSegs: from total_retrans when the socket
 * was seen before (the err values alone are ambiguous: IP can return some of those TCP returns
 * before counting, after it), else from err. */
static __always_inline bool counted(const struct sock *sk, int err)
{
	__u32 total = BPF_CORE_READ((const struct tcp_sock *)sk, total_retrans);
	__u64 cookie = bpf_get_socket_cookie((void *)sk);
	__u32 *last = bpf_map_lookup_elem(&total_retrans, &cookie);
	bool counted = last ? total != *last : counted_by_kernel(err);

	bpf_map_update_elem(&total_retrans, &cookie, &total, BPF_ANY);
	return counted;
}

static __always_inline int on_retransmit(const struct sock *sk, const struct sk_buff *skb,
					 int err)
{
	const struct tcp_skb_cb *cb = (const struct tcp_skb_cb *)skb->cb;
	struct retrans_flow flow = {};
	__u16 segs = cb->tcp_gso_segs;
	__u32 index;
	__u64 *n;

	if (!segs)
		segs = 1;
	if (!counted(sk, err))
		return 0;
	if (err) {
		index = 0;
		n = bpf_map_lookup_elem(&failed, &index);
		if (n)
			*n += 1;
		index = 1;
		n = bpf_map_lookup_elem(&failed, &index);
		if (n)
			*n += segs;
	}
	if (!flow_of(&sk->__sk_common, sk->__sk_common.skc_num,
		     bpf_ntohs(sk->__sk_common.skc_dport), &flow))
		return 0;
	record(sk, &flow, cb->seq, segs, sk->__sk_common.skc_state, RETRANS_SEGMENT);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_skb, const struct sock *sk, const struct sk_buff *skb, int err)
{
	return on_retransmit(sk, skb, err);
}

/* Kernels before the err argument (6.1) fire the tracepoint only for a retransmission that
 * went out (netkit loads one of the two). */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retransmit_skb_compat, const struct sock *sk, const struct sk_buff *skb)
{
	return on_retransmit(sk, skb, 0);
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(retransmit_synack, const struct sock *sk, const struct request_sock *req)
{
	const struct tcp_request_sock *treq = (const struct tcp_request_sock *)req;
	struct retrans_flow flow = {};

	if (!flow_of(&req->__req_common, req->__req_common.skc_num,
		     bpf_ntohs(req->__req_common.skc_dport), &flow))
		return 0;
	record(sk, &flow, BPF_CORE_READ(treq, snt_isn), 1, TCP_SYN_RECV, RETRANS_SYNACK);
	return 0;
}
