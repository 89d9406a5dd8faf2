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

/* The owner of a socket kept where its events happen away from it (bpf_programs/sockowners.h;
 * the TCP tools' events): the task as above, its uid, and whether it passed the tool's process
 * filters (-p, -n, -c), decided when it was taken because the cgroup test only works on the
 * current task. task.pid 0: nobody was seen owning the socket. netkit/render/sockets.py's
 * Owners.of_socket() reads it. */
struct sock_owner {
	struct owner task;
	__u32 uid;
	__u8 selected;
	__u8 pad[3];
};

static __always_inline bool process_filtered(void)
{
	return filter_tgid || filter_comm[0] || filter_cgroup;
}

static __always_inline void current_owner(struct sock_owner *o)
{
	__builtin_memset(o, 0, sizeof(*o));
	owner_of_current(&o->task);
	o->uid = (__u32)bpf_get_current_uid_gid();
	o->selected = task_selected();
}

/* An owner nobody recorded. */
static __always_inline void unknown_owner(struct sock_owner *o)
{
	__builtin_memset(o, 0, sizeof(*o));
	o->selected = !process_filtered();
}

#endif
