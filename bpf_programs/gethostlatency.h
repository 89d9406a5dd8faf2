/* gethostlatency's state and events; netkit reads their layout from the object's BTF. */
#ifndef GETHOSTLATENCY_H
#define GETHOSTLATENCY_H

#define HOST_LEN 256		/* a DNS name is at most 253 characters */

/* The libc functions probed, each with its entry program enter_<name>; netkit reads the names
 * from BTF (FN_GETADDRINFO: getaddrinfo). */
enum lookup_func {
	FN_GETADDRINFO = 0,
	FN_GETHOSTBYNAME = 1,
	FN_GETHOSTBYNAME2 = 2,
	FN_GETHOSTBYNAME_R = 3,
	FN_GETHOSTBYNAME2_R = 4,
};

enum herrno_value {
	HERRNO_UNKNOWN = -1000,	/* h_errno could not be read */
};

/* One thread's lookup in progress, from the outermost entry to its return. */
struct lookup_call {
	__u64 start_ns;
	__u64 host_ptr;		/* the name argument, read again at return if entry could not */
	__u64 result_ptr;	/* struct hostent **result of a _r call (outer or nested) */
	__u64 herrno_ptr;	/* int *h_errnop of a _r call (outer or nested) */
	__u32 depth;		/* 2 while gethostbyname{,2} runs its own _r variant */
	__u8 func;		/* enum lookup_func of the outermost call */
	__u8 host_read;
	__u16 pad;
	char host[HOST_LEN];
};

/* One completed outermost lookup, sent through the ring buffer. */
struct lookup_event {
	__u64 latency_ns;
	__s64 ret;		/* the return value: EAI code, errno (_r) or hostent pointer */
	__u32 pid;		/* tgid */
	__u32 tid;
	__s32 herrno;		/* h_errno after a gethostbyname* call, or HERRNO_UNKNOWN */
	__u8 func;
	__u8 result_null;	/* _r call: *result was NULL (no entry found) */
	__u16 pad;
	char comm[TASK_COMM_LEN];
	char host[HOST_LEN];
};

/* Key of the per-host histograms (--hist). */
struct host_key {
	char host[HOST_LEN];
};

#endif
