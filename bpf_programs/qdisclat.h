/* qdisclat's structs; netkit reads their layout from the object's BTF. */
#ifndef QDISCLAT_H
#define QDISCLAT_H

#define QDISC_KIND_LEN 16	/* Qdisc_ops.id */

/* One histogram per device and qdisc kind (the mq children of a multi-queue device share). */
struct qdisc_key {
	struct dev_key dev;
	char kind[QDISC_KIND_LEN];	/* ops->id: tbf, htb, pfifo_fast, fq_codel, fq, ... */
};

/* An skb a qdisc took, remembered until it leaves. */
struct qdisc_stamp {
	__u64 ts;		/* bpf_ktime_get_ns() at qdisc:qdisc_enqueue */
	__u64 qdisc;		/* which qdisc took it: the same one must give it out */
};

/* Cumulative, per CPU. */
struct qdisclat_counts {
	__u64 enqueued;		/* packets taken by a traced qdisc */
	__u64 dequeued;		/* packets given out and timed */
	__u64 unmatched;	/* given out without a stamp: taken before the start, or requeued */
	__u64 dequeues;		/* dequeue events that gave packets */
	__u64 bulk;		/* of those, events that gave several (a bulk dequeue) */
	__u64 packets;		/* packets the dequeue events reported (dequeued + unmatched, but
				 * for any beyond MAX_BULK in one bulk) */
};

#endif
