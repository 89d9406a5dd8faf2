/* arm64 syscall numbers (include/uapi/asm-generic/unistd.h). Include through syscalls.h. */
#ifndef NETKIT_SYSCALLS_ARCH_H
#define NETKIT_SYSCALLS_ARCH_H

enum {
	NR_read = 63, NR_readv = 65,
	NR_socket = 198, NR_socketpair = 199, NR_bind = 200, NR_listen = 201, NR_accept = 202,
	NR_connect = 203, NR_sendto = 206, NR_recvfrom = 207, NR_sendmsg = 211, NR_recvmsg = 212,
	NR_accept4 = 242, NR_recvmmsg = 243, NR_sendmmsg = 269,
};

struct pt_regs___arm64 { __s32 syscallno; } __attribute__((preserve_access_index));
#define SYSCALL_NR(regs) (((struct pt_regs___arm64 *)(regs))->syscallno)

#endif
