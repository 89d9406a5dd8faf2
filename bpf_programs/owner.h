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


struct sock_owner {
	__u64 cgroup_id;	/* cgroup v2 id of the owner (its directory's inode) */
	__u32 pid;		/* tgid; 0: not known */
	__u32 uid;
	char comm[TASK_COMM_LEN];
	__u8 selected;		/* passed -p/-n/-c when recorded */
	__u8 pad[7];
};

static __always_inline bool process_filtered(void)
{
	return filter_tgid || filter_comm[0] || filter_cgroup;
}

/* The current task as an owner. */
static __always_inline void current_owner(struct sock_owner *o)
{
	__builtin_memset(o, 0, sizeof(*o));
	o->pid = bpf_get_current_pid_tgid() >> 32;
	o->uid = (__u32)bpf_get_current_uid_gid();
	o->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	o->selected = task_selected();
}

/* An owner nobody recorded. */
static __always_inline void unknown_owner(struct sock_owner *o)
{
	__builtin_memset(o, 0, sizeof(*o));
	o->selected = !process_filtered();
}

#endif /* NETKIT_OWNER_H */
