/* tcprtt's histogram key; netkit reads its layout from the object's BTF. */
#ifndef TCPRTT_H
#define TCPRTT_H

/* One histogram: all connections (family 0, no address), or one local (-b) or remote (-B)
 * address. IPv4 (and IPv4-mapped IPv6) addresses fill addr[0..3] with family 4. */
struct rtt_key {
	__u8 family;		/* 4 or 6; 0 for the one histogram of all connections */
	__u8 pad[3];
	__u8 addr[16];
};

/* What the histograms are keyed by (key_by; -b, -B). netkit/tools/tcprtt.py has the same
 * numbers; tests/test_c_constants.py ties them. */
enum rtt_key_by {
	KEY_NONE,
	KEY_LADDR,
	KEY_RADDR,
};

#endif
