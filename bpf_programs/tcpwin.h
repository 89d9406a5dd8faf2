/* tcpwin's event; netkit reads its layout from the object's BTF. */
#ifndef TCPWIN_H
#define TCPWIN_H

/* A TCP socket's send-side state as one segment arrives on it (tcp:tcp_probe). */
struct win_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u64 sock;		/* the struct sock's address, as the book's tcpwin prints it */
	__u32 snd_cwnd;		/* congestion window, segments */
	__u32 snd_ssthresh;	/* slow-start threshold, segments (0x7fffffff: not set yet) */
	__s32 sk_sndbuf;	/* send buffer limit, bytes */
	__s32 sk_wmem_queued;	/* bytes queued to send (sent and unacknowledged included) */
	__u32 srtt_us;		/* smoothed RTT, microseconds */
	__u32 snd_wnd;		/* the peer's receive window, bytes */
	__u16 lport;		/* host order */
	__u16 rport;
	__u32 pad;
	struct owner owner;	/* the socket's owner (sockowners.h); pid 0 when not known */
};

#endif
