// SPDX-License-Identifier: GPL-2.0
/* qdisclat: time spent in a device's queueing discipline, from qdisc:qdisc_enqueue to
 * qdisc:qdisc_dequeue of the same skb, as a log2 histogram per device and qdisc kind
 * (Qdisc->ops->id), so one tool serves every kind: fq, fq_codel, tbf, htb, pfifo_fast...
 *
 * A dequeue may hand over several skbs at once (a bulk dequeue: the tracepoint names the first
 * and how many; the rest hang from skb->next), and fires with no skb when the qdisc had nothing
 * to give. An empty qdisc that allows it (TCQ_F_CAN_BYPASS: pfifo_fast, pfifo, bfifo) lets a
 * packet go straight to the driver with neither event: those packets waited for nothing and are
 * not seen. The enqueue event is only for the root qdisc a packet enters (htb's, tbf's; an mq
 * device's per-queue qdiscs are each a root). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "netns.h"
#include "devhist.h"
#include "qdisclat.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_BULK 65536	/* skbs of one dequeue timed (bpf_loop); BQL bounds a bulk well below */

/* -q KIND: only qdiscs of this kind (empty: all). */
const volatile char filter_kind[QDISC_KIND_LEN] = {};

/* skbs inside a qdisc, by address. LRU: a packet the qdisc drops (codel, a reset) leaves its
 * stamp behind until the address is enqueued again or evicted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct qdisc_stamp);
} stamps SEC(".maps");

DEVHIST_MAP(struct qdisc_key);
COUNTS_MAP(struct qdisclat_counts)

static __always_inline bool kind_selected(const char *kind)
{
	if (!filter_kind[0])
		return true;
	for (int i = 0; i < QDISC_KIND_LEN; i++) {
		if (kind[i] != filter_kind[i])
			return false;
		if (!kind[i])
			break;
	}
	return true;
}

static __always_inline bool key_of(struct qdisc_key *key, const struct Qdisc *q,
				   const struct netdev_queue *txq)
{
	const struct net_device *dev = BPF_CORE_READ(txq, dev);
	__u32 netns = dev_netns(dev);

	if (!netns_selected(netns))
		return false;
	bpf_probe_read_kernel_str(key->kind, sizeof(key->kind), BPF_CORE_READ(q, ops, id));
	if (!kind_selected(key->kind))
		return false;
	dev_key_fill(&key->dev, dev, netns);
	return true;
}

SEC("tp_btf/qdisc_enqueue")
int BPF_PROG(qdisc_took, struct Qdisc *q, const struct netdev_queue *txq, struct sk_buff *skb)
{
	struct qdisc_stamp stamp = { .ts = bpf_ktime_get_ns(), .qdisc = (__u64)q };
	struct qdisc_key key = {};
	struct qdisclat_counts *c;
	__u64 addr = (__u64)skb;

	if (!key_of(&key, q, txq))
		return 0;
	bpf_map_update_elem(&stamps, &addr, &stamp, BPF_ANY);
	c = my_counts();
	if (c)
		c->enqueued++;
	return 0;
}

/* The walk's state; what it counts goes straight to the per-CPU counters (counts kept here
 * would make each iteration's state differ, which the verifier cannot follow). */
struct bulk_walk {
	struct qdisc_key key;
	__u64 skb;		/* the next skb of the bulk */
	__u64 qdisc;
	__u64 now;
};

static long time_one(__u64 index, struct bulk_walk *walk)
{
	struct qdisclat_counts *c = my_counts();
	__u64 addr = walk->skb;
	struct qdisc_stamp *stamp;
	struct log2_hist *h;

	if (!addr || !c)
		return 1;
	stamp = bpf_map_lookup_elem(&stamps, &addr);
	if (stamp && stamp->qdisc == walk->qdisc) {
		h = hist_of(&hists, &walk->key);
		if (h)
			hist_record_ns(h, walk->now - stamp->ts);
		bpf_map_delete_elem(&stamps, &addr);
		c->dequeued++;
	} else {
		c->unmatched++;
	}
	walk->skb = (__u64)BPF_CORE_READ((struct sk_buff *)addr, next);
	return 0;
}

SEC("tp_btf/qdisc_dequeue")
int BPF_PROG(qdisc_gave, struct Qdisc *q, const struct netdev_queue *txq, int packets,
	     struct sk_buff *skb)
{
	struct bulk_walk walk = { .skb = (__u64)skb, .qdisc = (__u64)q,
				  .now = bpf_ktime_get_ns() };
	struct qdisclat_counts *c;

	if (!skb || packets < 1 || !key_of(&walk.key, q, txq))
		return 0;
	c = my_counts();
	if (c) {
		c->dequeues++;
		c->packets += packets;
		if (packets > 1)
			c->bulk++;
	}
	bpf_loop(packets < MAX_BULK ? packets : MAX_BULK, time_one, &walk, 0);
	return 0;
}
