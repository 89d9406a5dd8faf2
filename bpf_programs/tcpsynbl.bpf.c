// SPDX-License-Identifier: GPL-2.0
/* tcpsynbl: how full a TCP listener's accept queue is each time a handshake completes.
 *
 * The book's tcpsynbl.bt reads the listener's sk_ack_backlog and sk_max_ack_backlog at the
 * entry of tcp_v4_syn_recv_sock/tcp_v6_syn_recv_sock (kprobes): the moment the final ACK of a
 * handshake arrives and the kernel makes the new connection's socket, before that socket joins
 * the accept queue. No tracepoint sits in those functions, but the socket they make is a copy
 * of the listener (sk_clone_lock), and the copy announces itself at once through
 * sock:inet_sock_set_state as a move from LISTEN to SYN_RECV: its sk_ack_backlog and
 * sk_max_ack_backlog are the listener's at that very moment. Handshakes the full queue refused
 * make no socket and are not seen here; the kernel counts them (ListenOverflows, ListenDrops),
 * and netkit reads those counters beside the histograms. -p/-n/-c select by the listener's
 * owner (sockowners.h: the process that called listen()). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "sockfd.h"
#include "owner.h"
#define SOCKOWNER_STATE
#define SOCKOWNER_ACCEPT
#define SOCKOWNER_SEND
#include "sockowners.h"
#include "tcpsynbl.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct backlog_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpsynbl_child, const struct sock *sk, const int oldstate, const int newstate)
{
	struct backlog_key key = {};
	struct log2_hist *h, empty = {};
	struct owner owner;

	if (oldstate != TCP_LISTEN || newstate != TCP_SYN_RECV ||
	    sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (process_filtered() && !listener_owner_selected(sk, &owner))
		return 0;
	key.lport = sk->__sk_common.skc_num;
	if (!ports_selected(key.lport, 0))
		return 0;
	key.max_backlog = sk->sk_max_ack_backlog;
	h = lookup_or_init(&hists, &key, &empty);
	if (h)
		hist_record(h, sk->sk_ack_backlog);
	return 0;
}
