/* From a syscall's file descriptor to its socket: current task -> files -> fdtable -> file ->
 * private_data (struct socket) -> sk. Include after common.h (needs bpf_core_read.h). */
#ifndef NETKIT_SOCKFD_H
#define NETKIT_SOCKFD_H

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define O_NONBLOCK 04000

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

#endif
