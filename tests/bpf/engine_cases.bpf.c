// SPDX-License-Identifier: GPL-2.0
/* Programs that exercise the engine's failure paths; tests/test_engine.py compiles this file
 * with -DCASE_<NAME> so each object carries exactly one of them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 answer = 0;
const volatile __u64 slot_input = 0;

#ifdef CASE_BAD_ACCESS
/* Dereferences a scalar: the verifier must refuse this. */
SEC("tp_btf/sys_enter")
int BPF_PROG(bad_access, struct pt_regs *regs, long id)
{
	return *(int *)(unsigned long)id;
}
#endif

#ifdef CASE_MISSING_TRACEPOINT
SEC("tracepoint/sock/netkit_no_such_event")
int on_missing(void *ctx) { return 0; }

/* What the program saw of its .rodata settings. */
struct seen {
	__u64 answer;
	__u32 slot_of_input;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct seen);
} results SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(on_present, struct pt_regs *regs, long id)
{
	__u32 zero = 0;
	struct seen *seen = bpf_map_lookup_elem(&results, &zero);

	if (seen) {
		seen->answer = answer;
		seen->slot_of_input = log2_slot(slot_input);
	}
	return 0;
}
#endif

#ifdef CASE_QUIET_RING
/* One event per getppid() of the test process, committed without waking epoll: only a direct
 * read of the ring finds it, so RingBuffer.poll(0) must not lean on epoll alone. */
const volatile __u32 test_tgid = 0;
struct quiet_event { __u64 n; };
const struct quiet_event *quiet_event_anchor __attribute__((unused));
__u64 submitted = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(quiet_submit, struct pt_regs *regs, long id)
{
	struct quiet_event *e;

	if (id != 110 /* getppid on x86_64 */ || (bpf_get_current_pid_tgid() >> 32) != test_tgid)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->n = ++submitted;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
#endif
