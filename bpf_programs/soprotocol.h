/* soprotocol's counter key; netkit reads the layout from the object's BTF. Include after
 * common.h and sockfd.h. */
#ifndef SOPROTOCOL_H
#define SOPROTOCOL_H

struct soprotocol_key {
	__u32 tgid;
	enum sock_call call;
	__u16 family;		/* AF_* */
	__u16 protocol;		/* sk_protocol: IPPROTO_* for IP sockets, 0 for AF_UNIX */
	char proto_name[PROTO_NAME_LEN];	/* the kernel's: TCP, TCPv6, UDP, UNIX-STREAM... */
};

#endif
