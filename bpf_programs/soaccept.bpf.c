// SPDX-License-Identifier: GPL-2.0
/* soaccept: one event per accept()/accept4() on an IP socket, with the peer and the result.
 *
 * sys_enter (accept, accept4)  the listening socket through the fd: AF_INET/AF_INET6 only,
 *                              filtered by family (-4/-6) and local port (-L); the caller;
 * sys_exit (accept, accept4)   the new socket through the returned fd: its peer and local
 *                              address; or the errno. EAGAIN (a non-blocking listener with
 *                              nothing pending, what event loops get after the last
 *                              connection) is only counted.
 * The book's soaccept.bt read the peer from the caller's sockaddr buffer, so an accept with a
 * NULL address was not seen; the socket has it in any case. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "sockaddr.h"
#include "owner.h"
#include "soaccept.h"

char LICENSE[] SEC("license") = "GPL";

#define EAGAIN 11

/* Set by userspace before load. */
const volatile __u8 filter_family = 0;		/* 0, 4 or 6 */

/* thread -> its accept() under way (the listener's side of the event). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct soaccept_event);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* accept() calls that found nothing to accept (EAGAIN). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} would_block SEC(".maps");

const struct soaccept_event *event_btf_anchor __attribute__((unused));

SEC("tp_btf/sys_enter")
int BPF_PROG(accept_enter, struct pt_regs *regs, long id)
{
	struct soaccept_event e = {};
	struct sock *listener;

	if ((id != NR_accept && id != NR_accept4) || !task_selected())
		return 0;
	listener = sock_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (!listener)
		return 0;
	sock_local(listener, &e.local);
	if (!e.local.family || (filter_family && e.local.family != filter_family))
		return 0;
	if (!ports_selected(e.local.port, 0))
		return 0;
	e.family = e.local.family;
	owner_of_current(&e.owner);
	bpf_map_update_elem(&pending, &e.owner.tid, &e, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(accept_exit, struct pt_regs *regs, long ret)
{
	struct soaccept_event *p, *e;
	struct sock *sk;
	long nr = SYSCALL_NR(regs);
	__u32 tid, zero = 0;
	__u64 *blocked;

	if (nr != NR_accept && nr != NR_accept4)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	if (ret == -EAGAIN) {
		blocked = bpf_map_lookup_elem(&would_block, &zero);
		if (blocked)
			*blocked += 1;
		goto done;
	}
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		goto done;
	}
	__builtin_memcpy(e, p, sizeof(*e));
	e->end_ns = bpf_ktime_get_ns();
	e->ret = ret;
	sk = ret >= 0 ? sock_of_fd((int)ret) : NULL;
	if (sk) {
		sock_peer(sk, &e->peer);
		sock_local(sk, &e->local);
	}
	bpf_ringbuf_submit(e, 0);
done:
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}
