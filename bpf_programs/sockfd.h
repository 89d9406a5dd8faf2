/* From a syscall's file descriptor to its socket: current task -> files -> fdtable -> file ->
 * private_data (struct socket) -> sk; and what the socket tools read from a socket once they
 * have it (the kernel's protocol name, the socket's inode). Include after common.h (needs
 * bpf_core_read.h). */
#ifndef NETKIT_SOCKFD_H
#define NETKIT_SOCKFD_H

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "syscalls.h"

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define O_NONBLOCK 04000
#define AF_UNIX 1
#define PROTO_NAME_LEN 16	/* struct proto's name is char[32]; every name in use fits 15 */

/* The struct socket behind file descriptor fd of the current task, or NULL when fd is not an
 * open socket; *f_flags receives the file's flags (O_NONBLOCK...). */
static __always_inline struct socket *socket_of_fd(int fd, unsigned int *f_flags)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;

	if (fd < 0 || !fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	*f_flags = BPF_CORE_READ(file, f_flags);
	return BPF_CORE_READ(file, private_data);
}

/* The struct sock behind fd, or NULL. */
static __always_inline struct sock *sock_of_fd(int fd)
{
	unsigned int f_flags;
	struct socket *sock = socket_of_fd(fd, &f_flags);

	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/* The two calls that make a connection, as the socket tools keep them apart. */
enum sock_call {
	CALL_CONNECT = 0,
	CALL_ACCEPT = 1,
};

/* A connect() on a socket that is already connecting or connected asks how it went (the
 * non-blocking idiom's second call: EALREADY, EISCONN, or the 0 that reports completion); it
 * starts nothing. Datagram sockets stay SS_UNCONNECTED when connected, so each of their
 * connect() calls counts. */
static __always_inline bool connect_is_status_check(const struct socket *sock)
{
	return BPF_CORE_READ(sock, state) != SS_UNCONNECTED;
}

/* At sys_enter: the socket a connect() is about to connect, or NULL (not connect, not a
 * socket, or a status check). */
static __always_inline struct socket *connecting_socket(struct pt_regs *regs, long id)
{
	unsigned int f_flags;
	struct socket *sock;

	if (id != NR_connect)
		return NULL;
	sock = socket_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs), &f_flags);
	return sock && !connect_is_status_check(sock) ? sock : NULL;
}

static __always_inline struct sock *connecting_sk(struct pt_regs *regs, long id)
{
	struct socket *sock = connecting_socket(regs, id);

	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/* At sys_exit: the new socket an accept() or accept4() returned (ret is its fd), or NULL. */
static __always_inline struct sock *accepted_sock(struct pt_regs *regs, long ret)
{
	long nr = SYSCALL_NR(regs);

	if ((nr != NR_accept && nr != NR_accept4) || ret < 0)
		return NULL;
	return sock_of_fd((int)ret);
}

/* The kernel's name of the socket's protocol (struct proto's name: TCP, TCPv6, UDP, UDPv6,
 * UNIX-STREAM, UNIX, PING...), NUL-terminated, empty when it cannot be read. */
static __always_inline void sock_proto_name(const struct sock *sk, char name[PROTO_NAME_LEN])
{
	const struct proto *prot = BPF_CORE_READ(sk, __sk_common.skc_prot);

	if (!prot || bpf_core_read_str(name, PROTO_NAME_LEN, &prot->name) < 0)
		name[0] = 0;
}

/* The inode number of the socket's file: it tells two sockets apart that the kernel placed at
 * the same address one after the other (a struct sock is freed and its memory reused). 0 for a
 * socket without a file (orphaned, or inside the kernel). */
static __always_inline __u64 sock_ino(const struct sock *sk)
{
	/* struct socket is the first member of struct socket_alloc, its inode the next. */
	struct socket_alloc *alloc = (struct socket_alloc *)BPF_CORE_READ(sk, sk_socket);

	return alloc ? BPF_CORE_READ(alloc, vfs_inode.i_ino) : 0;
}

/* Fields of a socket reached by a cast (tcp_sock, inet_sock) or from a number are read with
 * BPF_CORE_READ, not with plain loads through bpf_rdonly_cast(): that kfunc arrived in 6.2,
 * and an object that names it does not load on 6.1 (Debian 12's kernel). */

/* At sys_exit: the TCP socket an accept() or accept4() returned (NULL for any other syscall, a
 * failure, or another protocol), and in *listener the listening socket it came from (NULL
 * when that fd is already closed). The listening fd is still in the saved registers at exit
 * (orig_x0 on arm64). */
static __always_inline struct sock *accepted_tcp_sock(struct pt_regs *regs, long ret,
						      struct sock **listener)
{
	struct sock *sk = accepted_sock(regs, ret);

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	*listener = sock_of_fd((int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	return sk;
}

#endif
