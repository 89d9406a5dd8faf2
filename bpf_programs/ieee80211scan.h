/* ieee80211scan's events; netkit reads their layout from the object's BTF. */
#ifndef IEEE80211SCAN_H
#define IEEE80211SCAN_H

/* A process asked nl80211 to scan: an NL80211_CMD_TRIGGER_SCAN request seen at send()
 * (the nl80211 backend's requester program). */
struct scan_request {
	__u64 boot_ns;		/* bpf_ktime_get_boot_ns(): the clock netkit times scans with */
	__u64 wdev;		/* NL80211_ATTR_WDEV, 0 when the request names an interface */
	__u32 tgid;
	__u32 ifindex;		/* NL80211_ATTR_IFINDEX, 0 when the request names a wdev */
	char comm[TASK_COMM_LEN];
};

/* The tracepoint backend: cfg80211 hands a scan to the driver, the driver refuses it, or the
 * driver reports it finished or aborted. */
enum scan_kind {
	SCAN_START = 1,		/* cfg80211:rdev_scan */
	SCAN_DONE = 2,		/* cfg80211:cfg80211_scan_done, not aborted */
	SCAN_ABORTED = 3,	/* cfg80211:cfg80211_scan_done, aborted */
	SCAN_REFUSED = 4,	/* cfg80211:rdev_return_int after rdev_scan: the driver said no */
};

#define SCAN_MAX_FREQS 256	/* more than any radio has channels (mac80211_hwsim: ~100) */
#define SCAN_MAX_SSIDS 4	/* a request lists one or a few; n_ssids counts them all */
#define SSID_LEN 32

struct scan_ssid {
	__u8 len;
	__u8 ssid[SSID_LEN];
};

struct scan_event {
	__u64 boot_ns;		/* bpf_ktime_get_boot_ns() at the tracepoint */
	__u64 wdev;		/* nl80211's wdev id: wiphy index << 32 | wdev identifier */
	__u32 kind;		/* enum scan_kind */
	__u32 wiphy;		/* nl80211's wiphy index */
	__u32 ifindex;		/* 0: the wdev has no netdev (a P2P device) */
	__u32 tgid;		/* who asked (START, REFUSED): the task cfg80211 ran in */
	__s32 error;		/* REFUSED: the driver's return value */
	__u32 flags;		/* NL80211_SCAN_FLAG_* of the request */
	__u32 n_freqs;		/* the request's channel count (freqs[] holds the first ones) */
	__u32 n_ssids;
	char comm[TASK_COMM_LEN];
	__u16 freqs[SCAN_MAX_FREQS];	/* MHz */
	struct scan_ssid ssids[SCAN_MAX_SSIDS];
};

#endif /* IEEE80211SCAN_H */
