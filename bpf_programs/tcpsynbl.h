/* tcpsynbl's histogram key; netkit reads its layout from the object's BTF. */
#ifndef TCPSYNBL_H
#define TCPSYNBL_H

/* The accept backlog of one listener, as its limit and port name it (the book keys by the
 * limit alone). */
struct backlog_key {
	__u32 max_backlog;	/* sk_max_ack_backlog: listen()'s backlog, capped by somaxconn */
	__u16 lport;		/* host order */
	__u16 pad;
};

#endif
