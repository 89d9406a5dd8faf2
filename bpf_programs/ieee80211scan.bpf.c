// SPDX-License-Identifier: GPL-2.0
/* ieee80211scan: Wi-Fi scans, seen two ways; userspace loads the programs of one of them.
 *
 * nl80211 backend (watch_send): cfg80211 announces scans on nl80211's multicast group without
 * the requesting process. The request itself is a generic-netlink message
 * (NL80211_CMD_TRIGGER_SCAN) that a process sends with sendto() or sendmsg(), so this program
 * watches those two syscalls at the raw sys_enter tracepoint (one tp_btf link, cheap to detach),
 * keeps the messages sent on NETLINK_GENERIC sockets to the nl80211 family whose command is
 * TRIGGER_SCAN, and reports the sender with the interface (or wdev) it named. Userspace pairs
 * the request with the scan that starts right after it on that interface.
 *
 * tracepoint backend (scan_start, scan_return, scan_done): cfg80211's own tracepoints.
 * rdev_scan fires when cfg80211 hands a scan request to the driver, in the task that asked
 * (nl80211's TRIGGER_SCAN, or the wireless-extensions ioctl, runs in the sender's context), so
 * the requester is simply the current task; rdev_return_int right after it carries the driver's
 * answer; cfg80211_scan_done fires when the driver reports the scan finished or aborted.
 *
 * cfg80211 is a module and our build host has no wireless, so its types are not in vmlinux.h:
 * the few fields read are declared below with preserve_access_index, and libbpf relocates
 * them against the cfg80211 module's BTF (/sys/kernel/btf/cfg80211) where the programs load. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"
#include "syscalls.h"
#include "sockfd.h"
#include "ieee80211scan.h"

char LICENSE[] SEC("license") = "GPL";

/* The nl80211 family id, which nlctrl assigns at run time; userspace sets it before load. */
const volatile __u16 nl80211_family = 0;

/* uapi values (macros, so not in vmlinux.h) */
#define AF_NETLINK 16
#define NETLINK_GENERIC 16
#define NLM_F_REQUEST 1
#define NL80211_CMD_TRIGGER_SCAN 33
#define NL80211_ATTR_IFINDEX 3
#define NL80211_ATTR_WDEV 153
#define NLA_TYPE_MASK 0x3fff
#define MAX_ATTRS 16		/* IFINDEX or WDEV come among the first few attributes */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} requests SEC(".maps");

/* Keeps struct scan_request in the object's BTF, where netkit reads its layout. */
const struct scan_request *request_type_anchor __attribute__((unused));

/* The fd is a socket of family AF_NETLINK and protocol NETLINK_GENERIC. */
static __always_inline bool is_genl_socket(int fd)
{
	struct sock *sk = sock_of_fd(fd);

	return sk && BPF_CORE_READ(sk, __sk_common.skc_family) == AF_NETLINK &&
	       BPF_CORE_READ(sk, sk_protocol) == NETLINK_GENERIC;
}

/* Report buf[0..len) when it is a TRIGGER_SCAN request to nl80211. */
static __always_inline void check_message(int fd, const void *buf, __u64 len)
{
	struct nlmsghdr nlh;
	struct genlmsghdr genl;
	struct nlattr nla;
	struct scan_request *r;
	__u32 off = sizeof(nlh) + sizeof(genl), ifindex = 0;
	__u64 wdev = 0;

	if (!nl80211_family || len < off)
		return;
	if (bpf_probe_read_user(&nlh, sizeof(nlh), buf) ||
	    bpf_probe_read_user(&genl, sizeof(genl), buf + sizeof(nlh)))
		return;
	if (nlh.nlmsg_type != nl80211_family || !(nlh.nlmsg_flags & NLM_F_REQUEST) ||
	    genl.cmd != NL80211_CMD_TRIGGER_SCAN)
		return;
	if (len > nlh.nlmsg_len)
		len = nlh.nlmsg_len;
	for (int i = 0; i < MAX_ATTRS && off + sizeof(nla) <= len; i++) {
		if (bpf_probe_read_user(&nla, sizeof(nla), buf + off) || nla.nla_len < sizeof(nla))
			break;
		if ((nla.nla_type & NLA_TYPE_MASK) == NL80211_ATTR_IFINDEX && nla.nla_len >= 8)
			bpf_probe_read_user(&ifindex, sizeof(ifindex), buf + off + sizeof(nla));
		else if ((nla.nla_type & NLA_TYPE_MASK) == NL80211_ATTR_WDEV && nla.nla_len >= 12)
			bpf_probe_read_user(&wdev, sizeof(wdev), buf + off + sizeof(nla));
		off += (nla.nla_len + 3) & ~3;
	}
	/* the socket walk last: it is the dearest check and the bytes rarely match */
	if (!is_genl_socket(fd))
		return;
	r = bpf_ringbuf_reserve(&requests, sizeof(*r), 0);
	if (!r) {
		count_lost_event();
		return;
	}
	r->boot_ns = bpf_ktime_get_boot_ns();
	r->wdev = wdev;
	r->ifindex = ifindex;
	r->tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_ringbuf_submit(r, 0);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(watch_send, struct pt_regs *regs, long id)
{
	int fd;

	if (id != NR_sendto && id != NR_sendmsg)
		return 0;
	fd = PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (id == NR_sendto) {
		check_message(fd, (const void *)PT_REGS_PARM2_CORE_SYSCALL(regs),
			      PT_REGS_PARM3_CORE_SYSCALL(regs));
	} else {
		struct user_msghdr msg;
		struct iovec iov;

		/* libnl and iw send the whole message in the first iovec */
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)PT_REGS_PARM2_CORE_SYSCALL(regs)) ||
		    !msg.msg_iovlen ||
		    bpf_probe_read_user(&iov, sizeof(iov), msg.msg_iov))
			return 0;
		check_message(fd, iov.iov_base, iov.iov_len);
	}
	return 0;
}

/* -- the tracepoint backend ------------------------------------------------------------------ */

/* cfg80211's types, as much of them as is read here. The ___nk suffix keeps them apart from
 * any same-named type of a vmlinux.h; libbpf matches them to the kernel's by the name before
 * it, field by field, wherever they are. */
struct wiphy___nk {
	int unused;		/* only its place in cfg80211_registered_device is used */
} __attribute__((preserve_access_index));

/* net/wireless/core.h: the wiphy is embedded in it; nl80211's wiphy index lives here */
struct cfg80211_registered_device___nk {
	int wiphy_idx;
	struct wiphy___nk wiphy;
} __attribute__((preserve_access_index));

struct wireless_dev___nk {
	struct net_device *netdev;
	__u32 identifier;
} __attribute__((preserve_access_index));

struct cfg80211_ssid___nk {
	__u8 ssid[SSID_LEN];
	__u8 ssid_len;
} __attribute__((preserve_access_index));

struct ieee80211_channel___nk {
	__u32 center_freq;
} __attribute__((preserve_access_index));

struct cfg80211_scan_info___nk {
	bool aborted;
} __attribute__((preserve_access_index));

struct cfg80211_scan_request___nk {
	struct cfg80211_ssid___nk *ssids;
	int n_ssids;
	__u32 n_channels;
	__u32 flags;
	struct wireless_dev___nk *wdev;
	struct wiphy___nk *wiphy;
	struct ieee80211_channel___nk *channels[0];
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} scans SEC(".maps");

/* The scan a task is handing to the driver, from rdev_scan to the rdev_return_int after it. */
struct handing {
	__u64 wdev;
	__u32 wiphy;
	__u32 ifindex;
	__u64 wiphy_ptr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);			/* tid */
	__type(value, struct handing);
} handing SEC(".maps");

/* Keeps struct scan_event and enum scan_kind in the object's BTF, where netkit reads them. */
const struct scan_event *scan_event_anchor __attribute__((unused));
const enum scan_kind *scan_kind_anchor __attribute__((unused));

/* nl80211's wiphy index: cfg80211_registered_device embeds the wiphy (container_of). */
static __always_inline __u32 wiphy_index(struct wiphy___nk *wiphy)
{
	struct cfg80211_registered_device___nk *rdev;

	rdev = (void *)wiphy - bpf_core_field_offset(struct cfg80211_registered_device___nk, wiphy);
	return BPF_CORE_READ(rdev, wiphy_idx);
}

/* Whom the scan is for, as nl80211 names it: ifindex (0 without a netdev) and wdev id. */
static __always_inline void scan_owner(struct cfg80211_scan_request___nk *req, __u32 *wiphy,
				       __u32 *ifindex, __u64 *wdev)
{
	struct wireless_dev___nk *wd = BPF_CORE_READ(req, wdev);
	struct net_device *dev = BPF_CORE_READ(wd, netdev);

	*wiphy = wiphy_index(BPF_CORE_READ(req, wiphy));
	*ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	*wdev = (__u64)*wiphy << 32 | BPF_CORE_READ(wd, identifier);
}

static __always_inline struct scan_event *new_event(__u32 kind)
{
	struct scan_event *e = bpf_ringbuf_reserve(&scans, sizeof(*e), 0);

	if (!e) {
		count_lost_event();
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->boot_ns = bpf_ktime_get_boot_ns();
	e->kind = kind;
	return e;
}

SEC("tp_btf/rdev_scan")
int BPF_PROG(scan_start, struct wiphy___nk *wiphy, struct cfg80211_scan_request___nk *req)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = pid_tgid, n;
	struct handing h = {};
	struct scan_event *e = new_event(SCAN_START);
	void *channels;

	if (!e)
		return 0;
	scan_owner(req, &e->wiphy, &e->ifindex, &e->wdev);
	e->tgid = pid_tgid >> 32;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->flags = BPF_CORE_READ(req, flags);
	e->n_freqs = n = BPF_CORE_READ(req, n_channels);
	/* channels[] is a flexible array at the end of the request: its offset, then pointers */
	channels = (void *)req + bpf_core_field_offset(struct cfg80211_scan_request___nk, channels);
	for (__u32 i = 0; i < SCAN_MAX_FREQS && i < n; i++) {
		struct ieee80211_channel___nk *chan = NULL;

		if (bpf_probe_read_kernel(&chan, sizeof(chan), channels + i * sizeof(chan)) || !chan)
			break;
		e->freqs[i] = BPF_CORE_READ(chan, center_freq);
	}
	e->n_ssids = BPF_CORE_READ(req, n_ssids);
	/* ssids points to an array of struct cfg80211_ssid: stride and offsets from the kernel */
	void *ssids = BPF_CORE_READ(req, ssids);
	__u32 stride = bpf_core_type_size(struct cfg80211_ssid___nk);
	for (__u32 i = 0; i < SCAN_MAX_SSIDS && i < e->n_ssids && ssids; i++) {
		void *ssid = ssids + i * stride;
		__u8 len = 0;

		bpf_probe_read_kernel(&len, 1, ssid + bpf_core_field_offset(struct cfg80211_ssid___nk,
									    ssid_len));
		e->ssids[i].len = len < SSID_LEN ? len : SSID_LEN;
		bpf_probe_read_kernel(e->ssids[i].ssid, SSID_LEN,
				      ssid + bpf_core_field_offset(struct cfg80211_ssid___nk, ssid));
	}
	h.wdev = e->wdev;
	h.wiphy = e->wiphy;
	h.ifindex = e->ifindex;
	h.wiphy_ptr = (__u64)wiphy;
	bpf_ringbuf_submit(e, 0);
	bpf_map_update_elem(&handing, &tid, &h, BPF_ANY);
	return 0;
}

/* rdev_return_int follows every int-returning driver call; the one after rdev_scan in the same
 * task is the scan's answer. A refused scan never ends, so userspace must hear of it. */
SEC("tp_btf/rdev_return_int")
int BPF_PROG(scan_return, struct wiphy___nk *wiphy, int ret)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct handing *h = bpf_map_lookup_elem(&handing, &tid);
	struct scan_event *e;

	if (!h)
		return 0;
	if (ret && h->wiphy_ptr == (__u64)wiphy && (e = new_event(SCAN_REFUSED))) {
		e->wdev = h->wdev;
		e->wiphy = h->wiphy;
		e->ifindex = h->ifindex;
		e->error = ret;
		e->tgid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&handing, &tid);
	return 0;
}

SEC("tp_btf/cfg80211_scan_done")
int BPF_PROG(scan_done, struct cfg80211_scan_request___nk *req,
	     struct cfg80211_scan_info___nk *info)
{
	bool aborted = BPF_CORE_READ(info, aborted);
	struct scan_event *e = new_event(aborted ? SCAN_ABORTED : SCAN_DONE);

	if (!e)
		return 0;
	scan_owner(req, &e->wiphy, &e->ifindex, &e->wdev);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
