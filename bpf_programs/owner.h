/* Who a socket event belongs to when it happens in process context (a syscall): the current
 * task's process, thread, command name and cgroup v2 id. netkit/render/sockets.py's owner()
 * shows it (the cgroup as a path, through netkit/engine/cgroups.py). Include after common.h. */
#ifndef NETKIT_OWNER_H
#define NETKIT_OWNER_H

struct owner {
	__u64 cgroup_id;	/* bpf_get_current_cgroup_id(): the inode of the v2 directory */
	__u32 pid;		/* the process (tgid) */
	__u32 tid;
	char comm[TASK_COMM_LEN];
};

static __always_inline void owner_of_current(struct owner *o)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	o->pid = pid_tgid >> 32;
	o->tid = (__u32)pid_tgid;
	o->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

#endif
