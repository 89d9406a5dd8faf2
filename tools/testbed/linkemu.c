/* linkemu: a point-to-point link emulator between two network namespaces.
 *
 * It creates one TUN device in each namespace and copies packets between them, holding each
 * packet the way a real link would: it leaves the sender's end at
 *     departure = max(arrival, previous departure) + size * 8 / rate
 * (FIFO serialisation: a packet waits for the one ahead of it) and reaches the far end at
 *     departure + delay.
 * Both directions are independent. There is no netem on the target kernels and tbf lets a lone
 * packet through at once, so this is how the test bed gets per-size serialisation delay.
 *
 * Precision comes first. Each direction has a reader thread and a writer thread; the writer
 * sleeps with clock_nanosleep until SPIN_NS before the deadline and then spins. All threads run
 * SCHED_FIFO with memory locked. The arrival is when the sending namespace's device took the
 * packet, stamped by the kernel in the sender's own context (an AF_PACKET tap on the device):
 * the reader thread only learns of the packet when it wakes, 10-30 us later on a VM and never
 * by the same amount (an IPI to a halted or busy vCPU), which made every emulated link add
 * that much noise to every packet. Probes over 4 links of 500 us, 300 per setting, 5 settings
 * alternating on a busy machine (medians): the RTT's interquartile range went from 85 us with
 * reader-timed arrivals to 28 us as the test bed stamps them (below), 22 us with every
 * direction stamped; its 10th percentile from 197 us above the 4 ms set to 49 us (28 us).
 *
 * The tap comes a microsecond or so before the sender's own software TX stamp (taken further
 * down the same call, in tun_net_xmit), and tens of microseconds before it when the vCPU
 * stalls in between: timed from the tap, a probe could come back before its sender's TX
 * stamp plus the emulated delays. So the test bed leaves the direction its host sends in (the
 * tool under test, timing its own probes) to the reader's clock and stamps all the others
 * (TAP_DIRECTIONS below): routers and the target send forwarded packets, ICMP errors, echo
 * replies and TCP segments that no tool there times.
 *
 * usage: linkemu NS_A DEV_A NS_B DEV_B RATE_BPS DELAY_S [QUEUE_PACKETS [TAP_DIRECTIONS]]
 *   RATE_BPS 0 means no serialisation delay. TAP_DIRECTIONS: "ab", "ba", "ab,ba" (the default)
 *   or "none": which directions take their arrival from the kernel's stamp. Prints "ready"
 *   once both devices exist. On SIGTERM/SIGINT it prints one statistics line per direction to
 *   stderr and exits: late_* is the writer's lateness at the deadline; stamped counts the
 *   arrivals timed by the kernel, lag_mean_ns how long after that stamp the reader got them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define SLOT_BYTES 2048          /* TUN MTU stays at 1500; no GSO without IFF_VNET_HDR */
#ifndef SPIN_NS
#define SPIN_NS 60000
#endif
//           /* wake this early and spin: covers hrtimer wake-up latency */

struct slot {
	uint64_t due_ns;             /* when the packet reaches the far end */
	uint32_t len;
	unsigned char data[SLOT_BYTES];
};

struct direction {
	const char *name;
	int in_fd, out_fd;
	int tap_fd;                  /* AF_PACKET socket on the in-device: kernel TX stamps */
	uint64_t ns_per_byte_x1000;  /* serialisation time per byte, in picoseconds */
	uint64_t delay_ns;
	uint32_t cap;
	struct slot *ring;
	uint32_t head, tail;         /* tail: next free slot (reader); head: next to send (writer) */
	pthread_mutex_t lock;
	pthread_cond_t nonempty;
	uint64_t last_departure_ns;  /* reader-private */
	/* statistics, read at exit */
	atomic_ullong packets, drops, late_sum_ns, late_max_ns;
	atomic_ullong stamped, lag_sum_ns;   /* arrivals timed by the kernel; read() lag behind them */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "linkemu: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Create (or attach to) TUN device `dev` inside the named network namespace. */
static int open_tun_in(const char *netns, const char *dev)
{
	char path[256];
	snprintf(path, sizeof(path), "/run/netns/%s", netns);
	int nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0)
		die(path);
	if (setns(nsfd, CLONE_NEWNET) < 0)
		die("setns");
	close(nsfd);
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("/dev/net/tun");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", dev);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0)
		die("TUNSETIFF");
	return fd;
}

/* An AF_PACKET socket on `dev` (in the calling thread's namespace) that gets a copy of every
 * packet the namespace sends out of it, stamped by the kernel as the device takes it
 * (dev_queue_xmit_nit runs in the sender's context, before the TUN queues the packet for us).
 * Only outgoing packets, cut to MATCH_BYTES: enough to tell packets apart. */
#define MATCH_BYTES 96
static int open_tap(const char *dev)
{
	int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ALL));
	if (fd < 0)
		die("AF_PACKET socket");
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_PKTTYPE),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PACKET_OUTGOING, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, MATCH_BYTES),
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct sock_fprog prog = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
		die("SO_ATTACH_FILTER");
	int on = 1, buf = 4 << 20;  /* copies of a long burst wait here until their packets are read */
	if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) < 0)
		die("SO_TIMESTAMPNS");
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
				   .sll_ifindex = (int)if_nametoindex(dev) };
	if (!sll.sll_ifindex || bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		die("bind AF_PACKET");
	/* the filter was attached after the socket existed: drop what slipped in before */
	char junk[MATCH_BYTES];
	while (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) >= 0)
		;
	return fd;
}

/* The kernel's stamp (CLOCK_MONOTONIC ns) of the tapped copy of the packet just read, or 0.
 * Copies queue in the order the device took the packets, and the TUN hands them over in that
 * order too: an older copy that does not match belongs to a packet the TUN queue dropped.
 * The stamp is CLOCK_REALTIME; the offset to CLOCK_MONOTONIC is read right away (they differ
 * only by NTP steps). */
static uint64_t tap_stamp(struct direction *d, const unsigned char *pkt, ssize_t len)
{
	unsigned char copy[MATCH_BYTES];
	char ctrl[256];
	if (d->tap_fd < 0)
		return 0;
	for (;;) {
		struct iovec iov = { copy, sizeof(copy) };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl,
				      .msg_controllen = sizeof(ctrl) };
		ssize_t got = recvmsg(d->tap_fd, &msg, MSG_DONTWAIT);
		if (got < 0)
			return 0;
		/* the filter cut the copy: its length is the packet's up to MATCH_BYTES */
		size_t cmp = (size_t)(len < MATCH_BYTES ? len : MATCH_BYTES);
		if ((size_t)got != cmp || memcmp(copy, pkt, cmp) != 0)
			continue;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
				struct timespec ts, rt, mono;
				memcpy(&ts, CMSG_DATA(c), sizeof(ts));
				clock_gettime(CLOCK_REALTIME, &rt);
				clock_gettime(CLOCK_MONOTONIC, &mono);
				int64_t off = ((int64_t)rt.tv_sec - mono.tv_sec) * 1000000000ll
					      + (rt.tv_nsec - mono.tv_nsec);
				return (uint64_t)((int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec - off);
			}
		}
		return 0;
	}
}

static void *reader(void *arg)
{
	struct direction *d = arg;
	unsigned char buf[SLOT_BYTES];
	for (;;) {
		/* Without a kernel stamp, the arrival is when we learn of the packet: taken before
		 * read() copies it out, or a big packet would arrive later than a small one by as
		 * long as the copy takes (0.2-0.5 ns per byte here). */
		struct pollfd ready = { .fd = d->in_fd, .events = POLLIN };
		if (poll(&ready, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		uint64_t arrival = now_ns();
		ssize_t n = read(d->in_fd, buf, sizeof(buf));
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			die("read");
		}
		uint64_t stamp = tap_stamp(d, buf, n);
		if (stamp && stamp <= arrival && arrival - stamp < 100000000ull) {
			d->stamped++;
			d->lag_sum_ns += arrival - stamp;
			arrival = stamp;
		}
		uint64_t start = arrival > d->last_departure_ns ? arrival : d->last_departure_ns;
		uint64_t departure = start + (uint64_t)n * d->ns_per_byte_x1000 / 1000;
		pthread_mutex_lock(&d->lock);
		if (d->tail - d->head >= d->cap) {  /* queue full: tail drop, like a router */
			pthread_mutex_unlock(&d->lock);
			d->drops++;
			continue;
		}
		d->last_departure_ns = departure;
		struct slot *s = &d->ring[d->tail % d->cap];
		s->due_ns = departure + d->delay_ns;
		s->len = (uint32_t)n;
		memcpy(s->data, buf, (size_t)n);
		d->tail++;
		pthread_cond_signal(&d->nonempty);
		pthread_mutex_unlock(&d->lock);
	}
	return NULL;
}

static void *writer(void *arg)
{
	struct direction *d = arg;
	for (;;) {
		pthread_mutex_lock(&d->lock);
		while (d->head == d->tail)
			pthread_cond_wait(&d->nonempty, &d->lock);
		struct slot *s = &d->ring[d->head % d->cap];
		pthread_mutex_unlock(&d->lock);
		/* The slot is ours until head advances: the reader never writes past head + cap. */
		uint64_t due = s->due_ns;
		uint64_t t = now_ns();
		if (due > t + SPIN_NS) {
			uint64_t wake = due - SPIN_NS;
			struct timespec ts = { .tv_sec = wake / 1000000000ull, .tv_nsec = wake % 1000000000ull };
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
		while ((t = now_ns()) < due)
			;
		uint64_t late = t - due;  /* our own scheduling error, before the kernel's write path */
		if (write(d->out_fd, s->data, s->len) < 0 && errno != EIO && errno != ENOBUFS)
			die("write");
		d->packets++;
		d->late_sum_ns += late;
		if (late > d->late_max_ns)
			d->late_max_ns = late;
		pthread_mutex_lock(&d->lock);
		d->head++;
		pthread_mutex_unlock(&d->lock);
	}
	return NULL;
}

static struct direction dirs[2];

static void report_and_exit(int sig)
{
	char line[256];
	for (int i = 0; i < 2; i++) {
		struct direction *d = &dirs[i];
		unsigned long long n = d->packets;
		int len = snprintf(line, sizeof(line),
				   "linkemu %s: packets=%llu drops=%llu late_mean_ns=%llu late_max_ns=%llu "
				   "stamped=%llu lag_mean_ns=%llu\n",
				   d->name, n, (unsigned long long)d->drops,
				   n ? (unsigned long long)d->late_sum_ns / n : 0ull,
				   (unsigned long long)d->late_max_ns, (unsigned long long)d->stamped,
				   d->stamped ? (unsigned long long)d->lag_sum_ns / d->stamped : 0ull);
		if (write(2, line, (size_t)len) < 0)
			break;
	}
	_exit(sig == SIGTERM || sig == SIGINT ? 0 : 1);
}

static void start_direction(struct direction *d, const char *name, int in_fd, int tap_fd,
			    int out_fd, double rate_bps, double delay_s, uint32_t cap)
{
	d->name = name;
	d->in_fd = in_fd;
	d->tap_fd = tap_fd;
	d->out_fd = out_fd;
	d->ns_per_byte_x1000 = rate_bps > 0 ? (uint64_t)(8e12 / rate_bps + 0.5) : 0;
	d->delay_ns = (uint64_t)(delay_s * 1e9 + 0.5);
	d->cap = cap;
	d->ring = calloc(cap, sizeof(struct slot));
	if (!d->ring)
		die("calloc");
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->nonempty, NULL);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);  /* mlockall locks whole stacks */
	pthread_attr_setinheritsched(&attr, PTHREAD_INHERIT_SCHED);
	pthread_t t;
	if (pthread_create(&t, &attr, reader, d) || pthread_create(&t, &attr, writer, d)) {
		fprintf(stderr, "linkemu: pthread_create failed\n");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc < 7 || argc > 9) {
		fprintf(stderr, "usage: linkemu NS_A DEV_A NS_B DEV_B RATE_BPS DELAY_S [QUEUE_PACKETS]\n");
		return 2;
	}
	double rate = atof(argv[5]), delay = atof(argv[6]);
	long cap = argc >= 8 ? atol(argv[7]) : 1000;
	const char *taps = argc >= 9 ? argv[8] : "ab,ba";
	if (rate < 0 || delay < 0 || cap < 1) {
		fprintf(stderr, "linkemu: rate, delay and queue must be positive\n");
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);  /* never outlive the test bed that started us */
	signal(SIGTERM, report_and_exit);
	signal(SIGINT, report_and_exit);

	int fd_a = open_tun_in(argv[1], argv[2]);
	int tap_a = strstr(taps, "ab") ? open_tap(argv[2]) : -1;
	int fd_b = open_tun_in(argv[3], argv[4]);
	int tap_b = strstr(taps, "ba") ? open_tap(argv[4]) : -1;

	struct sched_param sp = { .sched_priority = 50 };
	if (sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
		fprintf(stderr, "linkemu: warning: no SCHED_FIFO (%s); timing will be coarser\n",
			strerror(errno));
	if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
		fprintf(stderr, "linkemu: warning: mlockall: %s\n", strerror(errno));

	start_direction(&dirs[0], "a->b", fd_a, tap_a, fd_b, rate, delay, (uint32_t)cap);
	start_direction(&dirs[1], "b->a", fd_b, tap_b, fd_a, rate, delay, (uint32_t)cap);
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
