/* sormem's histogram kinds, event kinds and event; netkit reads the names and the layout from
 * the object's BTF. Include after common.h, sockfd.h, sockaddr.h and owner.h. */
#ifndef SORMEM_H
#define SORMEM_H

/* struct proc_hist_key's kind: what was sampled at read time. */
enum sormem_buffer {
	BUFFER_RMEM_ALLOC = 0,	/* bytes queued for receive (sk_rmem_alloc) */
	BUFFER_RCVBUF = 1,	/* the receive buffer's limit (sk_rcvbuf) */
};

/* What happened to a socket's receive buffer. */
enum sormem_event_kind {
	EVENT_RCVQUEUE_FULL = 0,	/* sock:sock_rcvqueue_full */
	EVENT_EXCEED_BUF_LIMIT = 1,	/* sock:sock_exceed_buf_limit */
	EVENT_SOCKET_RCVBUFF = 2,	/* skb:kfree_skb, reason SOCKET_RCVBUFF */
	EVENT_SOCKET_BACKLOG = 3,	/* skb:kfree_skb, reason SOCKET_BACKLOG */
	EVENT_PROTO_MEM = 4,		/* skb:kfree_skb, reason PROTO_MEM */
	EVENT_KINDS = 5,
};

struct sormem_event {
	struct owner owner;		/* the socket's last reader seen; pid 0: none yet */
	struct ip_endpoint local;	/* the socket's local address (family 0: not IP) */
	__u64 ts_ns;			/* bpf_ktime_get_ns() */
	__s64 allocated;		/* exceed_buf_limit: the protocol's pages in use */
	__u32 kind;			/* enum sormem_event_kind */
	__s32 rmem_alloc;		/* the socket's, at the event */
	__s32 rcvbuf;
	__u32 truesize;			/* the packet's memory (0: exceed_buf_limit) */
	__s32 mem_kind;			/* exceed_buf_limit: 0 send, 1 receive; else -1 */
	__u16 family;			/* AF_* of the socket; 0: no socket */
	__u16 protocol;
	char proto_name[PROTO_NAME_LEN];
};

#endif
