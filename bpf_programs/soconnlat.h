/* soconnlat's shared structs: the histogram key and value, and the per-connect event.
 * netkit reads these layouts from the object's BTF; include after common.h. */
#ifndef SOCONNLAT_H
#define SOCONNLAT_H

/* The socket's file mode at connect(). A connect that returns its result (blocking, or a
 * non-blocking one that fails at once) is timed entry to return; one that returns EINPROGRESS
 * is timed from entry to the socket's move to ESTABLISHED or CLOSE. */
enum soconnlat_mode {
	MODE_BLOCKING = 0,
	MODE_NONBLOCKING = 1,	/* O_NONBLOCK */
};

/* Result codes are errno numbers (0: connected), plus one that no errno uses: the socket was
 * closed (by its owner) while the handshake was still under way. netkit reads it from BTF. */
enum soconnlat_result {
	RESULT_CLOSED = 4096,
};

/* One log2 histogram per key. With by_dest set the kernel fills daddr/dport and leaves
 * tgid/comm zero; otherwise the reverse. family, mode and result are always part of the key. */
struct soconnlat_key {
	__u32 tgid;
	__u32 result;
	__u16 dport;		/* host order */
	__u8 family;		/* 4 or 6 */
	__u8 mode;
	__u8 daddr[16];		/* IPv4 in the first 4 bytes */
	char comm[TASK_COMM_LEN];
};

struct soconnlat_value {
	struct log2_hist lat;	/* in the unit userspace chose (us or ms) */
	__u64 sum_ns;		/* exact sum, for exporters */
};

/* Streamed through the ring buffer only with -e/--events. */
struct soconnlat_event {
	__u64 end_ns;		/* CLOCK_MONOTONIC at completion */
	__u64 lat_ns;
	__u32 tgid;
	__u32 tid;
	__u32 result;
	__u16 dport;
	__u8 family;
	__u8 mode;
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

#endif
