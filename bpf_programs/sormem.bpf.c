// SPDX-License-Identifier: GPL-2.0
/* sormem: how full socket receive buffers are when processes read them, and what the kernel
 * does when one is full.
 *
 * sys_enter (read, readv, recvfrom, recvmsg, recvmmsg)
 *     for a socket fd: sk_rmem_alloc and sk_rcvbuf before the read, into log2 histograms per
 *     process (the book's sormem.bt read them at the entry of sock_recvmsg, a kprobe); the
 *     reader becomes the socket's owner for the events below;
 * sock:sock_rcvqueue_full, sock:sock_exceed_buf_limit (the original's two tracepoints),
 * skb:kfree_skb with reason SOCKET_RCVBUFF, SOCKET_BACKLOG or PROTO_MEM
 *     one event each. On 6.x kernels the first fires only for protocols that queue through
 *     __sock_queue_rcv_skb (not UDP, TCP or raw: they check the limit themselves) and the
 *     second only when a protocol's memory (tcp_mem, udp_mem) runs out; a UDP socket that is
 *     not read fast enough drops with reason SOCKET_RCVBUFF, a TCP socket owned by its reader
 *     with SOCKET_BACKLOG. These run in softirq or in the sender's context: the current task
 *     is not the socket's, so the event carries the socket's last reader instead. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "sockaddr.h"
#include "owner.h"
#include "prochist.h"
#include "sormem.h"

char LICENSE[] SEC("license") = "GPL";

PROC_HIST_MAP(hists);

/* socket -> the last selected process that read it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct owner);
} readers SEC(".maps");

/* Events by kind, also those the ring buffer could not take. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EVENT_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} event_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

const struct sormem_event *event_btf_anchor __attribute__((unused));
const enum sormem_buffer *buffer_btf_anchor __attribute__((unused));
const enum sormem_event_kind *kind_btf_anchor __attribute__((unused));

SEC("tp_btf/sys_enter")
int BPF_PROG(sample_read, struct pt_regs *regs, long id)
{
	struct proc_hist_key key = {};
	struct owner *known, reader;
	struct sock *sk;
	__u64 skaddr;

	switch (id) {
	case NR_read: case NR_readv: case NR_recvfrom: case NR_recvmsg: case NR_recvmmsg:
		break;
	default:
		return 0;
	}
	if (!task_selected())
		return 0;
	sk = sock_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (!sk)
		return 0;
	proc_hist_key_of_current(&key, BUFFER_RMEM_ALLOC);
	proc_hist_add(&hists, &key, (__u32)BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter));
	key.kind = BUFFER_RCVBUF;
	proc_hist_add(&hists, &key, (__u32)BPF_CORE_READ(sk, sk_rcvbuf));
	skaddr = (__u64)sk;
	known = bpf_map_lookup_elem(&readers, &skaddr);
	if (!known || known->tid != (__u32)bpf_get_current_pid_tgid()) {
		owner_of_current(&reader);
		bpf_map_update_elem(&readers, &skaddr, &reader, BPF_ANY);
	}
	return 0;
}

/* A -p, -n or -c filter is set: events are kept only for sockets a selected process read. */
static __always_inline bool task_filtered(void)
{
	return filter_tgid || filter_comm[0] || filter_cgroup;
}

static __always_inline void emit(__u32 kind, struct sock *sk, __u32 truesize, long allocated,
				 int mem_kind)
{
	struct sormem_event *e;
	struct owner *reader = NULL;
	__u64 skaddr = (__u64)sk, *n;

	if (sk)
		reader = bpf_map_lookup_elem(&readers, &skaddr);
	if (!reader && task_filtered())
		return;
	n = bpf_map_lookup_elem(&event_counts, &kind);
	if (n)
		*n += 1;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->truesize = truesize;
	e->allocated = allocated;
	e->mem_kind = mem_kind;
	if (reader)
		__builtin_memcpy(&e->owner, reader, sizeof(e->owner));
	if (sk) {
		e->rmem_alloc = BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter);
		e->rcvbuf = BPF_CORE_READ(sk, sk_rcvbuf);
		e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
		e->protocol = BPF_CORE_READ(sk, sk_protocol);
		sock_proto_name(sk, e->proto_name);
		sock_local(sk, &e->local);
	}
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/sock_rcvqueue_full")
int BPF_PROG(rcvqueue_full, struct sock *sk, struct sk_buff *skb)
{
	emit(EVENT_RCVQUEUE_FULL, sk, BPF_CORE_READ(skb, truesize), 0, -1);
	return 0;
}

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(exceed_buf_limit, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	emit(EVENT_EXCEED_BUF_LIMIT, sk, 0, allocated, kind);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(buffer_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	__u32 kind;

	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_SOCKET_RCVBUFF))
		kind = EVENT_SOCKET_RCVBUFF;
	else if (reason == bpf_core_enum_value(enum skb_drop_reason,
					       SKB_DROP_REASON_SOCKET_BACKLOG))
		kind = EVENT_SOCKET_BACKLOG;
	else if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_PROTO_MEM))
		kind = EVENT_PROTO_MEM;
	else
		return 0;
	emit(kind, rx_sk, BPF_CORE_READ(skb, truesize), 0, -1);
	return 0;
}
