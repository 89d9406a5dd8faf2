/* ieee80211scan's event; netkit reads its layout from the object's BTF. */
#ifndef IEEE80211SCAN_H
#define IEEE80211SCAN_H

/* A process asked nl80211 to scan: an NL80211_CMD_TRIGGER_SCAN request seen at send(). */
struct scan_request {
	__u64 boot_ns;		/* bpf_ktime_get_boot_ns(): the clock netkit times scans with */
	__u64 wdev;		/* NL80211_ATTR_WDEV, 0 when the request names an interface */
	__u32 tgid;
	__u32 ifindex;		/* NL80211_ATTR_IFINDEX, 0 when the request names a wdev */
	char comm[TASK_COMM_LEN];
};

#endif /* IEEE80211SCAN_H */
