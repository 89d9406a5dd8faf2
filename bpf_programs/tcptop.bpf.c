// SPDX-License-Identifier: GPL-2.0
/* tcptop: TCP bytes sent and received per flow (process and both ends of the socket).
 *
 * bcc's tcptop puts kprobes on tcp_sendmsg and tcp_cleanup_rbuf. Here sock:sock_send_length and
 * sock:sock_recv_length (tp_btf, kernel >= 6.3) fire as sock_sendmsg()/sock_recvmsg() return,
 * in the calling process, with the byte count: every send and read of a TCP socket through the
 * socket layer (write, send*, read, recv*, io_uring, sendfile). MSG_PEEK reads leave the data
 * queued and are not counted. Receive paths that bypass sock_recvmsg are not seen: splice(2)
 * from a TCP socket and other tcp_read_sock() users (sockmap, kTLS's strparser),
 * TCP_ZEROCOPY_RECEIVE.
 *
 * Flows are counted in a hash map, cumulatively. A flow whose socket closed is marked with the
 * time (inet_sock_set_state to CLOSE), so userspace can take its last bytes and delete it: the
 * map holds the open flows, not every flow since the start. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockaddr.h"
#include "tcptop.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by userspace before load. */
const volatile __u8 filter_family = 0;		/* 0, 4 or 6 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct flow_key);
	__type(value, struct flow_bytes);
} flows SEC(".maps");

/* socket -> its flow, to mark the flow when the socket closes. LRU: a socket shared by two
 * processes keeps only its last flow here; the other is retired when its process exits. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct flow_key);
} socket_flows SEC(".maps");

static __always_inline void count(struct sock *sk, int bytes, bool received)
{
	struct flow_bytes *v, zero = {};
	struct flow_key key;
	__u64 skaddr = (__u64)sk;

	if (bytes <= 0 || sk->sk_protocol != IPPROTO_TCP || !task_selected())
		return;
	__builtin_memset(&key, 0, sizeof(key));
	sock_local(sk, &key.local);
	if (!key.local.family || (filter_family && key.local.family != filter_family))
		return;
	sock_peer(sk, &key.remote);
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	v = bpf_map_lookup_elem(&flows, &key);
	if (!v) {
		bpf_get_current_comm(zero.comm, sizeof(zero.comm));
		v = lookup_or_init(&flows, &key, &zero);
		if (!v) {
			count_lost_event();	/* the table is full: a flow not counted */
			return;
		}
		bpf_map_update_elem(&socket_flows, &skaddr, &key, BPF_ANY);
	}
	if (received)
		__sync_fetch_and_add(&v->rx_bytes, bytes);
	else
		__sync_fetch_and_add(&v->tx_bytes, bytes);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(count_send, struct sock *sk, int ret, int flags)
{
	count(sk, ret, false);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(count_recv, struct sock *sk, int ret, int flags)
{
	if (!(flags & MSG_PEEK))
		count(sk, ret, true);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flow_closed, struct sock *sk, int oldstate, int newstate)
{
	__u64 skaddr = (__u64)sk;
	struct flow_bytes *v;
	struct flow_key *key;

	if (newstate != TCP_CLOSE)
		return 0;
	key = bpf_map_lookup_elem(&socket_flows, &skaddr);
	if (!key)
		return 0;
	v = bpf_map_lookup_elem(&flows, key);
	if (v)
		v->closed_ns = bpf_ktime_get_ns();
	bpf_map_delete_elem(&socket_flows, &skaddr);
	return 0;
}
