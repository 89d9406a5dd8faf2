/* What sofamily and soprotocol share: both count new connections per process at the same two
 * points and differ only in their key. A tool defines its key type and a function
 *     static __always_inline void conn_key(struct sock *sk, enum sock_call call, KEY *key)
 * that fills it, then NEW_CONNECTION_PROGRAMS(KEY) declares the map
 * `counts` (KEY -> struct newconn_value) and the two programs:
 *   sys_enter (connect)       the socket behind connect's fd, except for status checks of a
 *                             connect already under way (sockfd.h), whatever the call returns;
 *   sys_exit (accept/accept4) the socket behind the fd accept() returned, when it returned one.
 * Include after common.h and sockfd.h. */
#ifndef NETKIT_NEWCONN_H
#define NETKIT_NEWCONN_H

struct newconn_value {
	__u64 count;
	char comm[TASK_COMM_LEN];
};

#define NEW_CONNECTION_PROGRAMS(KEY)						\
struct {									\
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);					\
	__uint(max_entries, 16384);						\
	__type(key, KEY);							\
	__type(value, struct newconn_value);					\
} counts SEC(".maps");								\
										\
static __always_inline void count(struct sock *sk, enum sock_call call)	\
{										\
	KEY key = {};								\
	struct newconn_value *v, zero = {};					\
										\
	if (!sk)								\
		return;								\
	conn_key(sk, call, &key);						\
	bpf_get_current_comm(zero.comm, sizeof(zero.comm));			\
	v = lookup_or_init(&counts, &key, &zero);				\
	if (v)									\
		v->count++;							\
}										\
										\
SEC("tp_btf/sys_enter")								\
int BPF_PROG(connect_enter, struct pt_regs *regs, long id)			\
{										\
	if (id == NR_connect && task_selected())				\
		count(connecting_sk(regs, id), CALL_CONNECT);			\
	return 0;								\
}										\
										\
SEC("tp_btf/sys_exit")								\
int BPF_PROG(accept_exit, struct pt_regs *regs, long ret)			\
{										\
	struct sock *sk = accepted_sock(regs, ret);				\
										\
	if (sk && task_selected())						\
		count(sk, CALL_ACCEPT);						\
	return 0;								\
}

#endif
