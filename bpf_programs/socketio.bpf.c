// SPDX-License-Identifier: GPL-2.0
/* socketio: socket I/O calls and bytes per process, direction, protocol and remote port.
 *
 * sock:sock_send_length and sock:sock_recv_length (tp_btf, kernel >= 6.3) fire as
 * sock_sendmsg/sock_recvmsg return, for every way in (write, send*, read, recv*, io_uring,
 * sendfile through splice), with the socket and the result. MSG_PEEK reads leave the data
 * queued and are not counted: the data counts when it is read. The book's socketio.bt put
 * kprobes on the same two functions and counted calls; bytes come with the tracepoint. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "socketio.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile __u16 filter_family = 0;		/* 0, AF_INET or AF_INET6 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct socketio_key);
	__type(value, struct socketio_value);
} counts SEC(".maps");

static __always_inline void count(struct sock *sk, enum io_direction dir, int ret)
{
	struct socketio_key key = {};
	struct socketio_value *v, zero = {};

	key.family = sk->__sk_common.skc_family;
	if (filter_family && key.family != filter_family)
		return;
	key.rport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (!dport_selected(key.rport) || !task_selected())
		return;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.dir = dir;
	sock_proto_name(sk, key.proto_name);
	bpf_get_current_comm(zero.comm, sizeof(zero.comm));
	v = lookup_or_init(&counts, &key, &zero);
	if (!v)
		return;
	v->calls++;
	if (ret > 0)
		v->bytes += ret;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(count_send, struct sock *sk, int ret, int flags)
{
	count(sk, DIRECTION_WRITE, ret);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(count_recv, struct sock *sk, int ret, int flags)
{
	if (!(flags & MSG_PEEK))
		count(sk, DIRECTION_READ, ret);
	return 0;
}
