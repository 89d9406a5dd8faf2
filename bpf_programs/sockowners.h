/* Which process a TCP socket belongs to, for events that fire where the current task is not
 * its owner: the TCP connection tools' state changes (tcpstates, tcplife) and the loss tools'
 * retransmissions, drops and RTT samples (tcpretrans, tcpdrop, tcprtt, tcpwin, tcpsynbl).
 *
 * A SYN-ACK, a FIN or a RST from the peer, an ACK that ends LAST_ACK, a retransmission timer:
 * the kernel handles them in softirq, on whatever task the CPU was running (often the peer
 * process itself when both ends are on one host: its send() runs the receive path of a veth or
 * of loopback when it re-enables bottom halves). The task that does something to a socket
 * from process context, however, holds its lock: a connect(), close(), shutdown() or listen()
 * caller, or the task that processes the receive backlog at release_sock(). So:
 *
 *   - a state change on a socket the current task holds names that task as the owner and
 *     remembers it (sockowner_note; a listen() also keeps it as the listener's owner by
 *     namespace and port, which the listener's children share);
 *   - accept() names the process that accepted, and a send the sender (sockets older than the
 *     trace are learnt there);
 *   - an event in softirq reads the remembered owner back (sockowner_lookup, owner_selected);
 *   - a socket the kernel creates in softirq (a listener's child, at LISTEN -> SYN_RECV) takes
 *     the owner of its listener until a process accepts it (sockowner_inherit);
 *   - the entry goes when the socket is destroyed (tcp:tcp_destroy_sock), for every tool. Not
 *     at CLOSE: tcplife and tcpstates report the CLOSE itself with its owner, and the loss
 *     tools see nothing of a socket between its CLOSE and its destruction that an owner kept
 *     that long could misname (the pointer is not reused before the socket is freed).
 *
 * Whether the owner passed -p/-n/-c is decided when it is recorded, in its own context (the
 * cgroup test only works on the current task), and kept with it. An owner never seen (a
 * socket older than the trace, evicted from the map) has pid 0 and passes only when no
 * process filter is set.
 *
 * Include after common.h, sockfd.h and owner.h. Including it adds the maps and one program
 * (the cleanup, sockowner_destroy) to the object, and the programs a tool asks for by defining,
 * before the include:
 *   SOCKOWNER_STATE   inet_sock_set_state: sockowner_note (for a tool without a state program
 *                     of its own; tcpstates and tcplife call sockowner_note from theirs);
 *   SOCKOWNER_ACCEPT  sys_exit: the caller of accept()/accept4() owns what it returned;
 *   SOCKOWNER_SEND    sock_send_length: the sender owns a TCP socket (a map lookup per send).
 * netkit/engine/sockowners.py names these programs for a tool that attaches them only when
 * it needs owners. */
#ifndef NETKIT_SOCKOWNERS_H
#define NETKIT_SOCKOWNERS_H

/* Entries go when their socket is destroyed; being an LRU map only bounds it should a
 * destruction go unseen. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);			/* struct sock * */
	__type(value, struct sock_owner);
} sock_owners SEC(".maps");

/* A listener by what its children share with it: network namespace and local port. */
struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listener_key);
	__type(value, struct sock_owner);
} listener_owners SEC(".maps");

/* True when the current task holds sk's lock (lock_sock()): it is acting on the socket from
 * process context (connect, close, shutdown, listen, setsockopt, or the packets that waited
 * in the backlog while it held the lock, which it processes at release_sock()). Softirq and
 * timer code never changes a socket a task holds: the packet waits in the backlog, the timer
 * is deferred to release_sock(). So this also tells softirq apart from task context where
 * preempt_count cannot be read (its per-CPU symbol needs CONFIG_KALLSYMS_ALL) and where a
 * task runs packet processing itself (threaded NAPI, busy polling, ksoftirqd). */
static __always_inline bool held_by_current(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_lock.owned) != 0;
}

/* The current task owns sk: remember it (written only when it changed hands: a send() would
 * otherwise write the map each time). */
static __always_inline void sockowner_remember(__u64 sk, struct sock_owner *o)
{
	struct sock_owner *known;

	current_owner(o);
	known = bpf_map_lookup_elem(&sock_owners, &sk);
	if (!known || known->task.pid != o->task.pid ||
	    known->task.cgroup_id != o->task.cgroup_id)
		bpf_map_update_elem(&sock_owners, &sk, o, BPF_ANY);
}

/* The remembered owner of sk into *o; false when nobody was seen owning it (then *o is
 * unknown_owner()'s). Reads nothing of sk itself: the loss tools pass sockets that may be
 * request or time-wait socks. */
static __always_inline bool sockowner_known(__u64 sk, struct sock_owner *o)
{
	struct sock_owner *known = bpf_map_lookup_elem(&sock_owners, &sk);

	if (known) {
		*o = *known;
		return true;
	}
	unknown_owner(o);
	return false;
}

/* As sockowner_known, for a full socket: an owner nobody was seen with gets the socket's own
 * cgroup and uid (those of the task that created it, which a listener's children share). */
static __always_inline bool sockowner_lookup(__u64 sk, struct sock_owner *o)
{
	const struct sock *s = (const struct sock *)sk;

	if (sockowner_known(sk, o))
		return true;
	o->task.cgroup_id = BPF_CORE_READ(s, sk_cgrp_data.cgroup, kn, id);
	o->uid = BPF_CORE_READ(s, sk_uid.val);
	return false;
}

/* For the loss tools' events: sk's owner into *o (zeroed when none was seen); false when the
 * event is to be left out (a process filter is set and the owner did not pass it, or is not
 * known). */
static __always_inline bool owner_selected(const struct sock *sk, struct owner *o)
{
	struct sock_owner kept;

	sockowner_known((__u64)sk, &kept);
	*o = kept.task;
	return kept.selected;
}

static __always_inline void listener_key_of(const struct sock *sk, struct listener_key *key)
{
	key->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	key->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	key->pad = 0;
}

/* The owner of the listener sk (or of the listener whose connection sk is: the same namespace
 * and local port), as owner_selected gives a socket's. */
static __always_inline bool listener_owner_selected(const struct sock *sk, struct owner *o)
{
	struct listener_key key;
	struct sock_owner *known;

	listener_key_of(sk, &key);
	known = bpf_map_lookup_elem(&listener_owners, &key);
	if (!known) {
		__builtin_memset(o, 0, sizeof(*o));
		return !process_filtered();
	}
	*o = known->task;
	return known->selected;
}

/* A new child of a listener (LISTEN -> SYN_RECV, in softirq): its listener's owner stands in
 * until a process accepts it. */
static __always_inline void sockowner_inherit(const struct sock *sk, struct sock_owner *o)
{
	struct listener_key key;
	struct sock_owner *listener;
	__u64 skaddr = (__u64)sk;

	listener_key_of(sk, &key);
	listener = bpf_map_lookup_elem(&listener_owners, &key);
	if (!listener) {
		unknown_owner(o);
		return;
	}
	*o = *listener;
	bpf_map_update_elem(&sock_owners, &skaddr, o, BPF_ANY);
}

/* For the inet_sock_set_state tracepoint: the owner of sk for this state change. The current
 * task when it holds the socket (remembered, and for a listen() kept as the listener's owner);
 * otherwise the remembered one, or for a listener's new child its listener's. */
static __always_inline void sockowner_note(const struct sock *sk, int oldstate, int newstate,
					   struct sock_owner *o)
{
	__u64 skaddr = (__u64)sk;
	struct listener_key key;

	if (held_by_current(sk)) {
		sockowner_remember(skaddr, o);
		if (newstate == TCP_LISTEN) {
			listener_key_of(sk, &key);
			bpf_map_update_elem(&listener_owners, &key, o, BPF_ANY);
		}
	} else if (!sockowner_lookup(skaddr, o) && oldstate == TCP_LISTEN &&
		   newstate == TCP_SYN_RECV) {
		sockowner_inherit(sk, o);
	}
	if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		listener_key_of(sk, &key);
		bpf_map_delete_elem(&listener_owners, &key);
	}
}

/* accept() returned sk (from listener, NULL when unknown): its caller owns sk, and uses the
 * listener whose next children it will likely accept. */
static __always_inline void sockowner_accepted(const struct sock *sk,
					       const struct sock *listener, struct sock_owner *o)
{
	struct listener_key key;

	sockowner_remember((__u64)sk, o);
	if (listener) {
		listener_key_of(listener, &key);
		bpf_map_update_elem(&listener_owners, &key, o, BPF_ANY);
	}
}

#ifdef SOCKOWNER_STATE
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sockowner_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct sock_owner owner;

	if (sk->sk_protocol == IPPROTO_TCP)
		sockowner_note(sk, oldstate, newstate, &owner);
	return 0;
}
#endif

#ifdef SOCKOWNER_ACCEPT
SEC("tp_btf/sys_exit")
int BPF_PROG(sockowner_accept, struct pt_regs *regs, long ret)
{
	struct sock_owner owner;
	struct sock *sk, *listener;

	sk = accepted_tcp_sock(regs, ret, &listener);
	if (sk)
		sockowner_accepted(sk, listener, &owner);
	return 0;
}
#endif

#ifdef SOCKOWNER_SEND
SEC("tp_btf/sock_send_length")
int BPF_PROG(sockowner_send, struct sock *sk, int ret, int flags)
{
	struct sock_owner owner;

	if (sk->sk_protocol == IPPROTO_TCP)
		sockowner_remember((__u64)sk, &owner);
	return 0;
}
#endif

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(sockowner_destroy, struct sock *sk)
{
	__u64 skaddr = (__u64)sk;

	bpf_map_delete_elem(&sock_owners, &skaddr);
	return 0;
}

#endif /* NETKIT_SOCKOWNERS_H */
