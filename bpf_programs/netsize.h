/* netsize's histogram key; netkit reads its layout and the point names from the object's BTF. */
#ifndef NETSIZE_H
#define NETSIZE_H

/* Where a packet's size is taken, as the original netsize.bt names its four histograms. */
enum netsize_point {
	POINT_RECV = 0,		/* net:netif_receive_skb: the stack receives (after GRO) */
	POINT_SEND = 1,		/* net:net_dev_queue: the stack sends (before GSO) */
	POINT_NIC_RECV = 2,	/* net:napi_gro_receive_entry, napi_gro_frags_entry: before GRO */
	POINT_NIC_SEND = 3,	/* net:net_dev_xmit: the driver took it (after GSO) */
};

struct netsize_key {
	struct dev_key dev;
	__u32 point;		/* enum netsize_point */
};

#endif
