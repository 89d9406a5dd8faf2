/* x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). Include through syscalls.h. */
#ifndef NETKIT_SYSCALLS_ARCH_H
#define NETKIT_SYSCALLS_ARCH_H

enum {
	NR_read = 0, NR_readv = 19,
	NR_socket = 41, NR_connect = 42, NR_accept = 43, NR_sendto = 44, NR_recvfrom = 45,
	NR_sendmsg = 46, NR_recvmsg = 47, NR_bind = 49, NR_listen = 50, NR_socketpair = 53,
	NR_accept4 = 288, NR_recvmmsg = 299, NR_sendmmsg = 307,
};

/* At sys_exit the number is read with a direct (BTF, CO-RE relocated) load from the trusted
 * regs pointer, not a probe-read helper call: sys_exit runs for every syscall. */
#define SYSCALL_NR(regs) ((regs)->orig_ax)

#endif
