/* The process a TCP socket belongs to, for events the kernel raises in softirq or from a timer
 * (a retransmission, an arriving ACK), where the current task is whichever one the CPU was
 * running. The owner is remembered when a process acts on the socket from its own context:
 *
 *   sys_exit of listen()          the listener;
 *   inet_sock_set_state           CLOSE -> SYN_SENT, inside connect();
 *   sys_exit of accept/accept4    the new connection, for the process that accepted it;
 *   sock:sock_send_length         the sender (sockets older than the trace are learnt here);
 *
 * and forgotten when the socket reaches CLOSE. A listener's owner is also kept by its namespace
 * and port, which the connections the kernel makes for it (a copy of the listener, in softirq)
 * share with it. Whether the owner passed -p/-n/-c is decided
 * then, in its context (the cgroup test works only on the current task), and kept with it.
 * Including this adds the map and those four programs to the object. Include after common.h,
 * sockfd.h and owner.h. */
#ifndef NETKIT_SOCKOWNERS_H
#define NETKIT_SOCKOWNERS_H

struct known_owner {
	struct owner owner;
	__u8 selected;		/* passed -p/-n/-c when recorded */
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);		/* struct sock * */
	__type(value, struct known_owner);
} sock_owners SEC(".maps");

struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listener_key);
	__type(value, struct known_owner);
} listener_owners SEC(".maps");

static __always_inline void listener_key_of(const struct sock *sk, struct listener_key *key)
{
	key->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	key->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	key->pad = 0;
}

static __always_inline bool process_filtered(void)
{
	return filter_tgid || filter_comm[0] || filter_cgroup;
}

/* Written only when the socket changed hands: a send() per call would otherwise write the map
 * each time. */
static __always_inline void remember_owner(const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct known_owner *known = bpf_map_lookup_elem(&sock_owners, &key);
	struct known_owner now = {};

	if (known && known->owner.pid == bpf_get_current_pid_tgid() >> 32)
		return;
	owner_of_current(&now.owner);
	now.selected = task_selected();
	bpf_map_update_elem(&sock_owners, &key, &now, BPF_ANY);
}

/* sk's owner into *o (zeroed when none was seen); false when the event is to be left out: a
 * process filter is set and the owner did not pass it, or is not known. */
static __always_inline bool owner_selected(const struct sock *sk, struct owner *o)
{
	__u64 key = (__u64)sk;
	struct known_owner *known = bpf_map_lookup_elem(&sock_owners, &key);

	if (!known) {
		__builtin_memset(o, 0, sizeof(*o));
		return !process_filtered();
	}
	__builtin_memcpy(o, &known->owner, sizeof(*o));
	return known->selected;
}

/* The owner of the listener sk (or of the listener whose connection sk is: the same namespace
 * and local port), as owner_selected does for a socket. */
static __always_inline bool listener_owner_selected(const struct sock *sk, struct owner *o)
{
	struct listener_key key;
	struct known_owner *known;

	listener_key_of(sk, &key);
	known = bpf_map_lookup_elem(&listener_owners, &key);
	if (!known) {
		__builtin_memset(o, 0, sizeof(*o));
		return !process_filtered();
	}
	__builtin_memcpy(o, &known->owner, sizeof(*o));
	return known->selected;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(owner_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = SYSCALL_NR(regs);
	struct sock *sk;

	struct listener_key key;
	struct known_owner listener = {};

	if (ret < 0)
		return 0;
	if (nr == NR_listen)
		sk = sock_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	else
		sk = accepted_sock(regs, ret);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	remember_owner(sk);
	if (nr == NR_listen) {
		listener_key_of(sk, &key);
		owner_of_current(&listener.owner);
		listener.selected = task_selected();
		bpf_map_update_elem(&listener_owners, &key, &listener, BPF_ANY);
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(owner_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 key = (__u64)sk;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT)
		remember_owner(sk);
	else if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&sock_owners, &key);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(owner_send, struct sock *sk, int ret, int flags)
{
	if (ret > 0 && sk->sk_protocol == IPPROTO_TCP)
		remember_owner(sk);
	return 0;
}

#endif
