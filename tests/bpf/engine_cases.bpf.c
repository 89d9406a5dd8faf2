// SPDX-License-Identifier: GPL-2.0
/* Programs that exercise the engine's failure paths; tests/test_engine.py compiles this file
 * with -DCASE_<NAME> so each object carries exactly one of them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u64 answer = 0;
__u64 seen_answer = 0;
__u32 slot_of_input = 0;
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

SEC("tp_btf/sys_enter")
int BPF_PROG(on_present, struct pt_regs *regs, long id)
{
	seen_answer = answer;
	slot_of_input = log2_slot(slot_input);
	return 0;
}
#endif
