// SPDX-License-Identifier: GPL-2.0
/* tcpwin: a TCP socket's congestion window and send buffer each time a segment arrives on it.
 *
 * The book's tcpwin.bt prints tcp_sock and sock fields at the entry of tcp_rcv_established (a
 * kprobe). tcp:tcp_probe is called at the top of that function with the socket, so the same
 * fields are read at the same moment: snd_cwnd, snd_ssthresh, sk_sndbuf, sk_wmem_queued, and
 * srtt and snd_wnd beside them. One event per segment goes to userspace through a ring buffer;
 * events it could not take are counted (common.h). The segment arrives in softirq: the event
 * names the socket's owner (sockowners.h), and -p/-n/-c select by it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "sockfd.h"
#include "owner.h"
#define SOCKOWNER_STATE
#define SOCKOWNER_ACCEPT
#define SOCKOWNER_SEND
#include "sockowners.h"
#include "tcpwin.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* Puts struct win_event into the object's BTF, where netkit reads its layout. */
const struct win_event *event_type_anchor __attribute__((unused));

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcpwin_probe, struct sock *sk, const struct sk_buff *skb)
{
	__u16 lport = sk->__sk_common.skc_num;
	__u16 rport = bpf_ntohs(sk->__sk_common.skc_dport);
	struct win_event *e;
	struct tcp_sock *tp;
	struct owner owner;

	if (!ports_selected(lport, rport) || !owner_selected(sk, &owner))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->sock = (__u64)sk;
	e->snd_cwnd = tp->snd_cwnd;
	e->snd_ssthresh = tp->snd_ssthresh;
	e->sk_sndbuf = sk->sk_sndbuf;
	e->sk_wmem_queued = sk->sk_wmem_queued;
	e->srtt_us = tp->srtt_us >> 3;
	e->snd_wnd = tp->snd_wnd;
	e->lport = lport;
	e->rport = rport;
	e->pad = 0;
	e->owner = owner;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
