// SPDX-License-Identifier: GPL-2.0
/* tcpconnect: active TCP opens, with the process that made them, the local port the kernel
 * chose and, on request, how they ended.
 *
 * inet_sock_set_state CLOSE -> SYN_SENT fires in the connecting task (connect(), or a
 * sendmsg() with TCP Fast Open), before connect() has picked the local port. The event is
 * therefore sent at the first of these moments, when the port is known:
 *   - connect() returns EINPROGRESS (a non-blocking connect: at once, the SYN is out);
 *   - the SYN is retransmitted (a blocking connect to a host that does not answer: after the
 *     initial RTO, so a hanging connect shows within a second);
 *   - the handshake ends: SYN_SENT -> ESTABLISHED, or -> CLOSE with the reason in sk_err
 *     (ECONNREFUSED after a RST, ETIMEDOUT after the SYN retries, EHOSTUNREACH...).
 * Deleting the socket's `unannounced` entry is the claim: whichever moment comes first sends
 * it, once. With --failed (wait_result) every event waits for the end and carries the result.
 * Counts by addresses, port and result are kept at the end of every handshake (count mode,
 * exporters). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "syscalls.h"
#include "tcpsock.h"
#include "owner.h"
#include "tcpconnect.h"

char LICENSE[] SEC("license") = "GPL";

#define EINPROGRESS 115

const volatile bool emit_events = true;
const volatile bool wait_result = false;
const volatile bool filter_by_uid = false;
const volatile __u32 filter_uid = 0;

struct pending {
	struct sock_owner owner;
	__u64 start_ns;
};

/* socket -> its connect, from SYN_SENT to the end of the handshake */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct pending);
} pending SEC(".maps");

/* socket -> 1 while its event has not been sent */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} unannounced SEC(".maps");

/* thread -> socket of its connect() in progress */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tcpconnect_key);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

const struct tcpconnect_event *event_btf_anchor __attribute__((unused));
const enum tcpconnect_result *result_btf_anchor __attribute__((unused));

static __always_inline void send_event(const struct sock *sk, const struct pending *p,
				       __u32 result, bool has_result)
{
	struct tcpconnect_event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->owner = p->owner;
	tcp_tuple_of(sk, &e->tuple);
	e->result = result;
	e->has_result = has_result;
	bpf_ringbuf_submit(e, 0);
}

/* The event of a connect under way, unless it was sent already. */
static __always_inline void announce(const struct sock *sk)
{
	__u64 skaddr = (__u64)sk;
	struct pending *p;

	if (wait_result || bpf_map_delete_elem(&unannounced, &skaddr))
		return;
	p = bpf_map_lookup_elem(&pending, &skaddr);
	if (p)
		send_event(sk, p, 0, false);
}

static __always_inline void count_connect(const struct sock *sk, __u32 result)
{
	struct tcpconnect_key key = {};
	struct tcp_tuple t;
	__u64 zero = 0, *n;

	if (!tcp_tuple_of(sk, &t))
		return;
	__builtin_memcpy(key.laddr, t.laddr, sizeof(key.laddr));
	__builtin_memcpy(key.raddr, t.raddr, sizeof(key.raddr));
	key.rport = t.rport;
	key.family = t.family;
	key.result = result;
	n = lookup_or_init(&counts, &key, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		count_lost_event();
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconnect_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 skaddr = (__u64)sk, pid_tgid;
	struct pending *p, copy;
	struct tcp_tuple tuple;
	__u8 one = 1;
	__u32 result, tid;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		current_owner(&copy.owner);		/* the connecting task */
		if (!copy.owner.selected || (filter_by_uid && copy.owner.uid != filter_uid))
			return 0;
		if (!tcp_tuple_of(sk, &tuple) || !dport_selected(tuple.rport))
			return 0;
		copy.start_ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&pending, &skaddr, &copy, BPF_ANY);
		if (emit_events && !wait_result) {
			bpf_map_update_elem(&unannounced, &skaddr, &one, BPF_ANY);
			pid_tgid = bpf_get_current_pid_tgid();
			tid = (__u32)pid_tgid;
			bpf_map_update_elem(&inflight, &tid, &skaddr, BPF_ANY);
		}
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	p = bpf_map_lookup_elem(&pending, &skaddr);
	if (!p)
		return 0;
	copy = *p;
	if (bpf_map_delete_elem(&pending, &skaddr))
		return 0;	/* another CPU ended it */
	if (newstate == TCP_ESTABLISHED) {
		result = 0;
	} else {
		result = BPF_CORE_READ(sk, sk_err);
		if (!result)
			result = RESULT_CLOSED;
	}
	count_connect(sk, result);
	if (!emit_events)
		return 0;
	if (wait_result)
		send_event(sk, &copy, result, true);
	else if (bpf_map_delete_elem(&unannounced, &skaddr) == 0)
		send_event(sk, &copy, 0, false);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(tcpconnect_exit, struct pt_regs *regs, long ret)
{
	__u64 *skp, skaddr;
	__u32 tid;

	if (SYSCALL_NR(regs) != NR_connect)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	skp = bpf_map_lookup_elem(&inflight, &tid);
	if (!skp)
		return 0;
	skaddr = *skp;
	bpf_map_delete_elem(&inflight, &tid);
	/* A non-blocking connect's SYN is out and its port chosen; any other return came after
	 * the handshake ended (which sent the event) or was interrupted (the end will). */
	if (ret == -EINPROGRESS)
		announce((const struct sock *)skaddr);
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcpconnect_syn_retransmit, const struct sock *sk, const struct sk_buff *skb,
	     int err)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT)
		announce(sk);
	return 0;
}
