// SPDX-License-Identifier: GPL-2.0
/* ieee80211scan: who asked for each Wi-Fi scan.
 *
 * cfg80211 announces scans on nl80211's multicast group without the requesting process, and its
 * own tracepoints need a kernel with wireless. The request itself is a generic-netlink message
 * (NL80211_CMD_TRIGGER_SCAN) that a process sends with sendto() or sendmsg(), so this program
 * watches those two syscalls at the raw sys_enter tracepoint (one tp_btf link, cheap to detach),
 * keeps the messages sent on NETLINK_GENERIC sockets to the nl80211 family whose command is
 * TRIGGER_SCAN, and reports the sender with the interface (or wdev) it named. Userspace pairs
 * the request with the scan that starts right after it on that interface. */
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
