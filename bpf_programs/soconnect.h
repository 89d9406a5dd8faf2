/* soconnect's event (udpconnect uses the same object); netkit reads the layout from the
 * object's BTF. Include after common.h, sockfd.h, sockaddr.h and owner.h. */
#ifndef SOCONNECT_H
#define SOCONNECT_H

struct soconnect_event {
	struct owner owner;
	struct ip_endpoint dest;	/* family 0 for an AF_UNSPEC sockaddr (a disconnect) */
	__u64 start_ns;			/* bpf_ktime_get_ns() at syscall entry */
	__u64 lat_ns;			/* entry to return */
	__s32 ret;			/* connect()'s return: 0 or -errno */
	__u16 protocol;			/* the socket's sk_protocol (0: fd is not a socket) */
	__u16 pad;
	char proto_name[PROTO_NAME_LEN];
};

#endif
