/* soaccept's event; netkit reads the layout from the object's BTF. Include after common.h,
 * sockfd.h, sockaddr.h and owner.h. */
#ifndef SOACCEPT_H
#define SOACCEPT_H

struct soaccept_event {
	struct owner owner;
	struct ip_endpoint peer;	/* the new socket's remote end (family 0 when it failed) */
	struct ip_endpoint local;	/* its local end (the listener's address when it failed) */
	__u64 end_ns;			/* bpf_ktime_get_ns() at syscall return */
	__s32 ret;			/* accept()'s return: the new fd or -errno */
	__u8 family;			/* the listening socket's: 4 or 6 */
	__u8 pad[3];
};

#endif
