// SPDX-License-Identifier: GPL-2.0
/* socksize: log2 histograms of socket read and write sizes, per process.
 *
 * sock:sock_recv_length and sock:sock_send_length (tp_btf, kernel >= 6.3) give each
 * sock_recvmsg/sock_sendmsg's result as it returns; the book's socksize.bt needed a kprobe and
 * a kretprobe on each function for the same number. Calls that moved no byte (EOF, errors,
 * EAGAIN) and MSG_PEEK reads (the data is still queued) are not sizes and are left out. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "common.h"
#include "prochist.h"
#include "socksize.h"

char LICENSE[] SEC("license") = "GPL";

PROC_HIST_MAP(hists);

const enum socksize_kind *kind_btf_anchor __attribute__((unused));

static __always_inline void record(enum socksize_kind kind, int size)
{
	struct proc_hist_key key = {};

	if (size <= 0 || !task_selected())
		return;
	proc_hist_key_of_current(&key, kind);
	proc_hist_add(&hists, &key, size);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(read_size, struct sock *sk, int ret, int flags)
{
	if (!(flags & MSG_PEEK))
		record(SIZE_READ, ret);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(write_size, struct sock *sk, int ret, int flags)
{
	record(SIZE_WRITE, ret);
	return 0;
}
