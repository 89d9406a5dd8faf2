/* sofamily's counter key; netkit reads the layout from the object's BTF. Include after
 * common.h and sockfd.h. */
#ifndef SOFAMILY_H
#define SOFAMILY_H

struct sofamily_key {
	__u32 tgid;
	enum sock_call call;
	__u32 family;		/* the socket's AF_* number */
};

#endif
