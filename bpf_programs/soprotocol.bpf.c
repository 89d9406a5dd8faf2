// SPDX-License-Identifier: GPL-2.0
/* soprotocol: new connections per process and transport protocol, connect() and accept() apart
 * (newconn.h: connect at sys_enter, accept at sys_exit, each through the fd to its socket).
 * The key is the socket's sk_protocol number and the kernel's name for its protocol
 * (sk->sk_prot->name), which tells TCP from TCPv6 and UNIX-STREAM from UNIX (datagram). The
 * book's soprotocol.bt read the same fields at security_socket_connect and
 * security_socket_accept (kprobes); accept() there was charged the listening socket, here the
 * new one (the same protocol). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "sockfd.h"
#include "newconn.h"
#include "soprotocol.h"

char LICENSE[] SEC("license") = "GPL";

static __always_inline void conn_key(struct sock *sk, enum sock_call call,
				     struct soprotocol_key *key)
{
	key->tgid = bpf_get_current_pid_tgid() >> 32;
	key->call = call;
	key->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	key->protocol = BPF_CORE_READ(sk, sk_protocol);
	sock_proto_name(sk, key->proto_name);
}

NEW_CONNECTION_PROGRAMS(struct soprotocol_key)
