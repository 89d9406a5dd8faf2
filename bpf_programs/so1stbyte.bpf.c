// SPDX-License-Identifier: GPL-2.0
/* so1stbyte: time from connect() to the first byte read on that socket, a log2 histogram per
 * process.
 *
 * sys_enter (connect)     an IP connect on a socket not yet connecting (status checks of one
 *                         under way keep its start): start time, process, the socket's inode;
 *                         kept per socket;
 * sys_exit (connect)      a connect that failed at once (not EINPROGRESS, not interrupted)
 *                         will bring no byte: forgotten;
 * sock_recv_length        the first receive on the socket that returns data ends it
 *                         (tp_btf: the end of sock_recvmsg, whatever syscall got there);
 * inet_sock_set_state     a TCP socket that closes before any byte: forgotten.
 * The inode check tells a new socket from an old one at the same address (a UDP socket has
 * no state change to forget it by). The book's so1stbyte.bt kept the start per (pid, fd) and
 * ended at the return of the first read syscall on that fd, whatever it returned. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.h"
#include "sockfd.h"
#include "sockaddr.h"
#include "prochist.h"

char LICENSE[] SEC("license") = "GPL";

#define EINTR 4
#define EINPROGRESS 115
#define ERESTARTSYS 512
#define ERESTART_RESTARTBLOCK 516

/* Set by userspace before load. */
const volatile __u8 filter_family = 0;		/* 0, 4 or 6 (of the address connected to) */
const volatile __u64 unit_ns = 1000;		/* histogram unit: 1000 (us) or 1000000 (ms) */

struct started {
	__u64 start_ns;
	__u64 ino;
	__u32 tgid;
	char comm[TASK_COMM_LEN];
};

/* socket -> its connect's start, until the first byte. LRU: sockets that never read go. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct started);
} started SEC(".maps");

/* thread -> socket of its connect() in progress. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} connecting SEC(".maps");

PROC_HIST_MAP(hists);

SEC("tp_btf/sys_enter")
int BPF_PROG(connect_enter, struct pt_regs *regs, long id)
{
	struct ip_endpoint dest;
	struct started s = {};
	struct sock *sk;
	__u64 skaddr;
	__u32 tid;

	if (id != NR_connect || !task_selected())
		return 0;
	sk = connecting_sk(regs, id);
	if (!sk)
		return 0;
	read_user_sockaddr((const void *)PT_REGS_PARM2_CORE_SYSCALL(regs),
			   (int)PT_REGS_PARM3_CORE_SYSCALL(regs), &dest);
	if (!dest.family || (filter_family && dest.family != filter_family) ||
	    !dport_selected(dest.port))
		return 0;
	s.start_ns = bpf_ktime_get_ns();
	s.ino = sock_ino(sk);
	s.tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	skaddr = (__u64)sk;
	tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&started, &skaddr, &s, BPF_ANY);
	bpf_map_update_elem(&connecting, &tid, &skaddr, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(connect_exit, struct pt_regs *regs, long ret)
{
	__u32 tid;
	__u64 *skp;

	if (SYSCALL_NR(regs) != NR_connect)
		return 0;
	tid = (__u32)bpf_get_current_pid_tgid();
	skp = bpf_map_lookup_elem(&connecting, &tid);
	if (!skp)
		return 0;
	/* Under way (non-blocking), or interrupted by a signal: the handshake goes on. */
	if (ret < 0 && ret != -EINPROGRESS && ret != -EINTR &&
	    !(ret <= -ERESTARTSYS && ret >= -ERESTART_RESTARTBLOCK))
		bpf_map_delete_elem(&started, skp);
	bpf_map_delete_elem(&connecting, &tid);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(first_read, struct sock *sk, int ret, int flags)
{
	struct proc_hist_key key = {};
	struct started *s;
	__u64 skaddr = (__u64)sk, now;

	if (ret <= 0)
		return 0;
	s = bpf_map_lookup_elem(&started, &skaddr);
	if (!s)
		return 0;
	now = bpf_ktime_get_ns();
	if (s->ino == sock_ino(sk)) {
		key.tgid = s->tgid;
		__builtin_memcpy(key.comm, s->comm, sizeof(key.comm));
		proc_hist_add(&hists, &key, (now - s->start_ns) / unit_ns);
	}
	bpf_map_delete_elem(&started, &skaddr);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(forget_closed, struct sock *sk, int oldstate, int newstate)
{
	__u64 skaddr = (__u64)sk;

	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&started, &skaddr);
	return 0;
}
