// SPDX-License-Identifier: GPL-2.0
/* soconnect (and udpconnect): one event per connect() to an IP address, with its latency and
 * result.
 *
 * sys_enter (connect)  the sockaddr the caller passed (AF_INET/AF_INET6, or with udp_only an
 *                      AF_UNSPEC disconnect), the socket's protocol through the fd, the
 *                      caller (pid, tid, comm, cgroup) and the time, kept per thread;
 * sys_exit (connect)   the thread's pending call becomes an event: latency = syscall time,
 *                      result = the return value.
 * Every call is an event, the status checks of a non-blocking connect (EALREADY, EISCONN)
 * included: they are what the caller did. udp_only keeps the calls on UDP sockets, as the
 * book's udpconnect (kprobes on ip4/ip6_datagram_connect) did. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "sockaddr.h"
#include "owner.h"
#include "soconnect.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile __u8 filter_family = 0;		/* 0, 4 or 6 */
const volatile bool udp_only = false;

/* thread -> its connect() under way; LRU: a thread that dies inside the call cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct soconnect_event);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

const struct soconnect_event *event_btf_anchor __attribute__((unused));

SEC("tp_btf/sys_enter")
int BPF_PROG(connect_enter, struct pt_regs *regs, long id)
{
	struct soconnect_event e = {};
	struct sock *sk;
	int family;

	if (id != NR_connect || !task_selected())
		return 0;
	family = read_user_sockaddr((const void *)PT_REGS_PARM2_CORE_SYSCALL(regs),
				    (int)PT_REGS_PARM3_CORE_SYSCALL(regs), &e.dest);
	sk = sock_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (sk) {
		e.protocol = BPF_CORE_READ(sk, sk_protocol);
		sock_proto_name(sk, e.proto_name);
	}
	if (udp_only) {
		if (e.protocol != IPPROTO_UDP || (!e.dest.family && family != AF_UNSPEC))
			return 0;
		/* A disconnect names no family: the socket's stands for it in -4/-6. */
		if (!e.dest.family && filter_family &&
		    BPF_CORE_READ(sk, __sk_common.skc_family) != (filter_family == 4 ? AF_INET
										      : AF_INET6))
			return 0;
	} else if (!e.dest.family) {
		return 0;
	}
	if (e.dest.family && filter_family && e.dest.family != filter_family)
		return 0;
	if (e.dest.family && !dport_selected(e.dest.port))
		return 0;
	owner_of_current(&e.owner);
	e.start_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&pending, &e.owner.tid, &e, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(connect_exit, struct pt_regs *regs, long ret)
{
	struct soconnect_event *p, *e;
	__u32 tid;

	if (SYSCALL_NR(regs) != NR_connect)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		__builtin_memcpy(e, p, sizeof(*e));
		e->lat_ns = bpf_ktime_get_ns() - p->start_ns;
		e->ret = ret;
		bpf_ringbuf_submit(e, 0);
	} else {
		count_lost_event();
	}
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}
