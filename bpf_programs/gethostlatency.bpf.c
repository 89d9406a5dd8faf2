// SPDX-License-Identifier: GPL-2.0
/* gethostlatency: how long libc's name lookups take, per call, from uprobes on libc.
 *
 * Entry uprobes on getaddrinfo, gethostbyname, gethostbyname2, gethostbyname_r and
 * gethostbyname2_r remember (tid -> start, name); one uretprobe program, attached to all five,
 * closes the call. gethostbyname{,2} run their own _r variant inside (glibc), so a _r entry
 * that arrives while its plain variant is open on the same thread is counted as nesting, and
 * only the outermost call is reported; from the nested call we also learn where h_errno lives,
 * which tells why a gethostbyname() failed. Any other entry on a thread with an open call means
 * the open call's return was never seen (longjmp, exec, a thread killed): the new call replaces it.
 *
 * Per call an event goes to the ring buffer; with hist_mode the kernel instead adds the latency
 * to a log2 histogram per host name, and userspace only reads the map at the end. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "common.h"
#include "gethostlatency.h"

char LICENSE[] SEC("license") = "GPL";

const volatile bool hist_mode = false;		/* --hist: histograms, no events */
const volatile bool hist_ms = false;		/* --hist -m: slots in milliseconds */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);			/* tid */
	__type(value, struct lookup_call);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct host_key);
	__type(value, struct log2_hist);
} host_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* The ring buffer map carries no value type: these put struct lookup_event, and the enums
 * netkit reads names and values from, into the object's BTF. */
const struct lookup_event *event_type_anchor __attribute__((unused));
const enum lookup_func *lookup_func_anchor __attribute__((unused));
const enum herrno_value *herrno_value_anchor __attribute__((unused));

/* A scratch lookup_call (too big for the 512-byte BPF stack together with the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lookup_call);
} scratch SEC(".maps");

/* libbpf 1.1 names only five arguments: the sixth and seventh (gethostbyname2_r's result and
 * h_errnop) are in r9 and on the stack above the return address on x86-64, in x5 and x6 on
 * arm64. */
#if defined(__TARGET_ARCH_x86)
static __always_inline __u64 sixth_arg(struct pt_regs *ctx)
{
	return ctx->r9;
}

static __always_inline __u64 seventh_arg(struct pt_regs *ctx)
{
	__u64 value = 0;

	bpf_probe_read_user(&value, sizeof(value), (void *)(PT_REGS_SP(ctx) + 8));
	return value;
}
#elif defined(__TARGET_ARCH_arm64)
static __always_inline __u64 sixth_arg(struct pt_regs *ctx)
{
	return ((struct user_pt_regs *)ctx)->regs[5];
}

static __always_inline __u64 seventh_arg(struct pt_regs *ctx)
{
	return ((struct user_pt_regs *)ctx)->regs[6];
}
#else
#error "gethostlatency: add this architecture's sixth and seventh arguments"
#endif

static __always_inline bool is_reentrant(__u8 func)
{
	return func == FN_GETHOSTBYNAME_R || func == FN_GETHOSTBYNAME2_R;
}

static __always_inline int lookup_enter(__u8 func, const char *host, __u64 result_ptr,
					__u64 herrno_ptr)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), zero = 0;
	struct lookup_call *call = bpf_map_lookup_elem(&calls, &tid);

	if (call && call->depth == 1 && is_reentrant(func) && !is_reentrant(call->func)) {
		call->depth = 2;		/* gethostbyname{,2} calling its _r variant */
		call->result_ptr = result_ptr;
		call->herrno_ptr = herrno_ptr;
		return 0;
	}
	if (!call && !task_selected())
		return 0;
	call = bpf_map_lookup_elem(&scratch, &zero);
	if (!call)
		return 0;
	call->depth = 1;
	call->func = func;
	call->host_ptr = (__u64)host;
	call->result_ptr = result_ptr;
	call->herrno_ptr = herrno_ptr;
	/* The whole buffer, not just host[0]: the name is a histogram key, and the string read
	 * leaves what a longer name wrote before it in the rest of this reused buffer. */
	__builtin_memset(call->host, 0, sizeof(call->host));
	call->host_read = host && bpf_probe_read_user_str(call->host, sizeof(call->host), host) > 0;
	call->start_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&calls, &tid, call, BPF_ANY);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(enter_getaddrinfo, const char *node)
{
	return lookup_enter(FN_GETADDRINFO, node, 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(enter_gethostbyname, const char *name)
{
	return lookup_enter(FN_GETHOSTBYNAME, name, 0, 0);
}

SEC("uprobe")
int BPF_KPROBE(enter_gethostbyname2, const char *name)
{
	return lookup_enter(FN_GETHOSTBYNAME2, name, 0, 0);
}

/* int gethostbyname_r(name, ret, buf, buflen, struct hostent **result, int *h_errnop) */
SEC("uprobe")
int enter_gethostbyname_r(struct pt_regs *ctx)
{
	return lookup_enter(FN_GETHOSTBYNAME_R, (const char *)PT_REGS_PARM1(ctx),
			    PT_REGS_PARM5(ctx), sixth_arg(ctx));
}

/* int gethostbyname2_r(name, af, ret, buf, buflen, struct hostent **result, int *h_errnop) */
SEC("uprobe")
int enter_gethostbyname2_r(struct pt_regs *ctx)
{
	return lookup_enter(FN_GETHOSTBYNAME2_R, (const char *)PT_REGS_PARM1(ctx),
			    sixth_arg(ctx), seventh_arg(ctx));
}

SEC("uretprobe")
int BPF_KRETPROBE(lookup_return, long ret)
{
	__u64 now = bpf_ktime_get_ns(), pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct lookup_call *call = bpf_map_lookup_elem(&calls, &tid);
	struct lookup_event *e;
	__u64 latency, result = 0;
	__s32 herrno = HERRNO_UNKNOWN;

	if (!call)
		return 0;
	if (call->depth > 1) {
		call->depth--;
		return 0;
	}
	latency = now - call->start_ns;
	if (!call->host_read && call->host_ptr)
		bpf_probe_read_user_str(call->host, sizeof(call->host), (void *)call->host_ptr);

	if (hist_mode) {
		struct log2_hist empty = {}, *h = lookup_or_init(&host_hist, call->host, &empty);

		if (h)
			hist_record(h, latency / (hist_ms ? 1000000 : 1000));
		bpf_map_delete_elem(&calls, &tid);
		return 0;
	}

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_lost_event();
		bpf_map_delete_elem(&calls, &tid);
		return 0;
	}
	if (call->herrno_ptr)
		bpf_probe_read_user(&herrno, sizeof(herrno), (void *)call->herrno_ptr);
	if (call->result_ptr)
		bpf_probe_read_user(&result, sizeof(result), (void *)call->result_ptr);
	e->latency_ns = latency;
	/* getaddrinfo and the _r variants return an int: only the low 32 bits of the register. */
	e->ret = (call->func == FN_GETHOSTBYNAME || call->func == FN_GETHOSTBYNAME2) ? ret : (__s32)ret;
	e->pid = pid_tgid >> 32;
	e->tid = tid;
	e->herrno = herrno;
	e->func = call->func;
	e->result_null = call->result_ptr && !result;
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__builtin_memcpy(e->host, call->host, sizeof(e->host));
	bpf_ringbuf_submit(e, 0);
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}
