/* socketio's counters; netkit reads the layout from the object's BTF. Include after common.h
 * and sockfd.h. */
#ifndef SOCKETIO_H
#define SOCKETIO_H

enum io_direction {
	DIRECTION_READ = 0,
	DIRECTION_WRITE = 1,
};

struct socketio_key {
	__u32 tgid;
	enum io_direction dir;
	__u16 rport;		/* the socket's remote port, host order (0: not connected) */
	__u16 family;		/* AF_* of the socket */
	char proto_name[PROTO_NAME_LEN];	/* the kernel's: TCP, UDPv6, UNIX-STREAM... */
};

struct socketio_value {
	__u64 calls;		/* every call that returned, failures included */
	__u64 bytes;		/* what the successful ones moved */
	char comm[TASK_COMM_LEN];
};

#endif
