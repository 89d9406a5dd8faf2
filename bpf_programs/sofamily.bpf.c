// SPDX-License-Identifier: GPL-2.0
/* sofamily: new connections per process and address family, connect() and accept() apart
 * (newconn.h: connect at sys_enter, accept at sys_exit, each through the fd to its socket).
 * The family is the socket's own (sk_family): it needs no sockaddr from the caller (accept's is
 * optional). Counters are cumulative per CPU; userspace takes differences. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "sockfd.h"
#include "newconn.h"
#include "sofamily.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline void conn_key(struct sock *sk, enum sock_call call,
				     struct sofamily_key *key)
{
	key->tgid = bpf_get_current_pid_tgid() >> 32;
	key->call = call;
	key->family = BPF_CORE_READ(sk, __sk_common.skc_family);
}

NEW_CONNECTION_PROGRAMS(struct sofamily_key)
