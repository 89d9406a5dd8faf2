// SPDX-License-Identifier: GPL-2.0
/* soconnlat: latency of IP connect() calls, blocking and non-blocking, with their results.
 *
 * Probes (all tp_btf: they detach at once, unlike perf-event tracepoints):
 *   sys_enter (connect only)  the destination from the user's sockaddr, the socket from the fd
 *                             (task->files->fdt->fd[fd]->private_data->sk), the start time;
 *   sys_exit (connect only)   a connect that returns a result ends here: latency = syscall
 *                             time, result = its return value; one that returned EINPROGRESS
 *                             (or was interrupted by a signal) goes on;
 *   inet_sock_set_state       a TCP socket we saw connect()ing reaches ESTABLISHED (success) or
 *                             CLOSE (sk_err: ECONNREFUSED after a RST, ETIMEDOUT after the SYN
 *                             retries, EHOSTUNREACH... after an ICMP error; 0 when the owner
 *                             closed it first). A non-blocking connect ends here.
 *
 * The state change may come before connect() returns (on loopback the handshake completes
 * inside the syscall) or after it, on another CPU, in softirq. Each side therefore records what
 * it knows in the pending entry (keyed by the socket) and the one that finds the other side's
 * mark finalises; deleting the entry is the claim, so a connect is never counted twice.
 * Histograms (struct log2_hist per key) are aggregated here; events go to a ring buffer only
 * when userspace asks (-e). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "syscalls.h"
#include "sockfd.h"
#include "sockaddr.h"
#include "soconnlat.h"

char LICENSE[] SEC("license") = "GPL";

#define EINPROGRESS 115
#define ERESTARTSYS 512
#define ERESTART_RESTARTBLOCK 516

/* Set by userspace before load. */
const volatile __u8 filter_family = 0;		/* 0, 4 or 6 */
const volatile bool by_dest = false;
const volatile bool emit_events = false;
const volatile bool include_udp = false;
const volatile __u64 unit_ns = 1000;		/* histogram unit: 1000 (us) or 1000000 (ms) */

/* A connect between its entry and its end. */
struct pending {
	__u64 start_ns;
	__u64 done_ns;		/* when the state tracepoint saw the end */
	__u32 tgid;
	__u32 tid;
	__u32 result;		/* set with done_ns */
	__u32 done;		/* state tracepoint: handshake over */
	__u32 returned;		/* sys_exit: connect() returned before the handshake was over */
	__u16 dport;
	__u8 family;
	__u8 mode;
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

/* thread -> socket of its connect() in progress. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} inflight SEC(".maps");

/* socket -> its pending connect. LRU: sockets that vanish without a state change cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct soconnlat_key);
	__type(value, struct soconnlat_value);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Puts struct soconnlat_event and enum soconnlat_result into the object's BTF, where netkit
 * reads them. */
const struct soconnlat_event *event_btf_anchor __attribute__((unused));
const enum soconnlat_result *result_btf_anchor __attribute__((unused));

/* Too big for the stack next to the rest: a zeroed value to insert new keys with. */
struct soconnlat_value zero_value = {};

SEC("tp_btf/sys_enter")
int BPF_PROG(connect_enter, struct pt_regs *regs, long id)
{
	struct ip_endpoint dest;
	struct pending p;
	struct socket *sock;
	struct sock *sk;
	__u64 *busy, skaddr, pid_tgid;
	unsigned int f_flags = 0;
	__u16 proto;
	__u32 tid;

	if (id != NR_connect || !task_selected())
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	tid = (__u32)pid_tgid;
	__builtin_memset(&p, 0, sizeof(p));
	sock = socket_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs), &f_flags);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	skaddr = (__u64)sk;
	/* The same socket still in flight for this thread: the kernel is restarting the call
	 * after a signal (-ERESTARTSYS); it is the same connect, keep its start. */
	busy = bpf_map_lookup_elem(&inflight, &tid);
	if (busy && *busy == skaddr)
		return 0;
	proto = BPF_CORE_READ(sk, sk_protocol);
	if (proto == IPPROTO_TCP) {
		if (connect_is_status_check(sock))
			return 0;
	} else if (!(include_udp && proto == IPPROTO_UDP)) {
		return 0;
	}
	read_user_sockaddr((const void *)PT_REGS_PARM2_CORE_SYSCALL(regs),
			   (int)PT_REGS_PARM3_CORE_SYSCALL(regs), &dest);
	if (!dest.family)
		return 0;
	p.family = dest.family;
	p.dport = dest.port;
	__builtin_memcpy(p.daddr, dest.addr, sizeof(p.daddr));
	if (filter_family && p.family != filter_family)
		return 0;
	if (!dport_selected(p.dport))
		return 0;
	p.tgid = pid_tgid >> 32;
	p.tid = tid;
	p.mode = (f_flags & O_NONBLOCK) ? MODE_NONBLOCKING : MODE_BLOCKING;
	bpf_get_current_comm(p.comm, sizeof(p.comm));
	p.start_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&pending, &skaddr, &p, BPF_ANY);
	bpf_map_update_elem(&inflight, &tid, &skaddr, BPF_ANY);
	return 0;
}

static __always_inline void finalize(const struct pending *p, __u64 end_ns, __u32 result)
{
	struct soconnlat_key key = {};
	struct soconnlat_value *v;
	struct soconnlat_event *e;
	__u64 lat = end_ns - p->start_ns;

	key.family = p->family;
	key.mode = p->mode;
	key.result = result;
	if (by_dest) {
		key.dport = p->dport;
		__builtin_memcpy(key.daddr, p->daddr, sizeof(key.daddr));
	} else {
		key.tgid = p->tgid;
		__builtin_memcpy(key.comm, p->comm, sizeof(key.comm));
	}
	v = lookup_or_init(&hists, &key, &zero_value);
	if (v) {
		hist_record(&v->lat, lat / unit_ns);
		__sync_fetch_and_add(&v->sum_ns, lat);
	}
	if (!emit_events)
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return;
	}
	e->end_ns = end_ns;
	e->lat_ns = lat;
	e->tgid = p->tgid;
	e->tid = p->tid;
	e->result = result;
	e->dport = p->dport;
	e->family = p->family;
	e->mode = p->mode;
	__builtin_memcpy(e->daddr, p->daddr, sizeof(e->daddr));
	__builtin_memcpy(e->comm, p->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(connect_exit, struct pt_regs *regs, long ret)
{
	struct pending *p, copy;
	__u64 *skp, skaddr, now;
	__u32 tid;

	if (SYSCALL_NR(regs) != NR_connect)
		return 0;
	now = bpf_ktime_get_ns();
	tid = (__u32)bpf_get_current_pid_tgid();
	skp = bpf_map_lookup_elem(&inflight, &tid);
	if (!skp)
		return 0;
	skaddr = *skp;
	p = bpf_map_lookup_elem(&pending, &skaddr);
	if (!p) {
		bpf_map_delete_elem(&inflight, &tid);
		return 0;
	}
	if (ret == -EINPROGRESS || (ret <= -ERESTARTSYS && ret >= -ERESTART_RESTARTBLOCK)) {
		/* The handshake goes on without the caller (non-blocking), or the caller was
		 * interrupted by a signal and may or may not come back: the state change ends it.
		 * The entry in `inflight` stays for a restart only. */
		if (ret == -EINPROGRESS)
			bpf_map_delete_elem(&inflight, &tid);
		__sync_fetch_and_add(&p->returned, 1);	/* a full barrier on x86 (lock xadd) */
		if (!p->done)
			return 0;
		copy = *p;
		if (bpf_map_delete_elem(&pending, &skaddr) == 0)
			finalize(&copy, copy.done_ns, copy.result);
		return 0;
	}
	bpf_map_delete_elem(&inflight, &tid);
	copy = *p;
	if (bpf_map_delete_elem(&pending, &skaddr) == 0)
		finalize(&copy, now, ret < 0 ? (__u32)-ret : 0);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(connect_state, struct sock *sk, int oldstate, int newstate)
{
	__u64 skaddr = (__u64)sk;
	struct pending *p, copy;
	__u32 err;

	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	p = bpf_map_lookup_elem(&pending, &skaddr);
	if (!p)
		return 0;
	if (newstate == TCP_ESTABLISHED) {
		err = 0;
	} else {
		err = BPF_CORE_READ(sk, sk_err);
		if (!err)
			err = RESULT_CLOSED;
	}
	p->done_ns = bpf_ktime_get_ns();
	p->result = err;
	__sync_fetch_and_add(&p->done, 1);
	if (!p->returned)
		return 0;	/* connect() is still in the kernel: its exit decides */
	copy = *p;
	if (bpf_map_delete_elem(&pending, &skaddr) == 0)
		finalize(&copy, copy.done_ns, copy.result);
	return 0;
}
