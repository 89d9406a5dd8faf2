/* ipecn's map key and event; netkit reads their layout from the object's BTF. */
#ifndef IPECN_H
#define IPECN_H

/* Inbound CE-marked packets are counted per source (and namespace with --all-netns). IPv4
 * addresses fill the first 4 bytes. */
struct ce_key {
	__u32 netns;		/* 0 unless every namespace is traced */
	__u8 family;		/* 4 or 6 */
	__u8 pad[3];
	__u8 saddr[16];
};

/* One CE-marked packet (-e). */
struct ce_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u32 netns;
	__u32 ifindex;		/* the receiving device */
	__u8 family;
	__u8 pad[7];
	__u8 saddr[16];
	__u8 daddr[16];
};

#endif
