/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Process identity: who a socket event belongs to. The calling task's pid,
 * uid, comm and cgroup are read from its task_struct; its executable's path
 * is resolved once per exec, in the kernel (exe_by_pid), so a process that
 * lives a millisecond still has one.
 */
#ifndef SOCKFILTER_PROCESS_H
#define SOCKFILTER_PROCESS_H

/* Set by the loader before load: 1 when watching one cgroup subtree, so that
 * tracepoints (which see every process) keep only that subtree. */
const volatile __u8 cfg_filter_cgroup = 0;

/* Each process's executable, by pid: written at exec, copied at fork,
 * removed when the process is reaped. Not an LRU: fork/exec churn cannot
 * evict a live process's identity. When full, a new process has none
 * (SF_CNT_EXE_FULL counts it) and never matches a rule naming an exe. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct sf_exe);
} exe_by_pid SEC(".maps");

static __always_inline int exe_set(__u32 pid, const struct sf_exe *x)
{
	if (bpf_map_update_elem(&exe_by_pid, &pid, x, BPF_ANY)) {
		count(SF_CNT_EXE_FULL);
		return -1;
	}
	return 0;
}

/* The watched cgroup (index 0) when cfg_filter_cgroup is set. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} watched_cgroup SEC(".maps");

/* Per-CPU scratch for resolving a path: the record being built, the path
 * written backwards (twice SF_EXE_LEN so that the verifier can prove every
 * masked write stays inside), and the walk's cursor. The cursor lives in
 * memory, not registers, so that every iteration of the walk looks the same
 * to the verifier and its states can be pruned. */
struct path_scratch {
	struct sf_exe rec;
	char buf[2 * SF_EXE_LEN];
	__u64 dentry;
	__u64 mount;
	__u32 pos;
	__u32 done;
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} scratch SEC(".maps");

static __always_inline int in_watched_cgroup(void)
{
	if (!cfg_filter_cgroup)
		return 1;
	return bpf_current_task_under_cgroup(&watched_cgroup, 0) == 1;
}

/* The calling process, read from its task_struct. This works alike in
 * tracepoints, cgroup hooks and sock_ops (which has no pid helpers). The
 * task comes from bpf_get_current_task_btf(): a BTF pointer is read with
 * plain loads (the verifier turns them into fault-safe loads), not one
 * bpf_probe_read_kernel() call per step of each pointer chain. */
static __always_inline void owner_from_current(struct sf_proc *o)
{
	struct task_struct *t = bpf_get_current_task_btf();

	o->pid = t->tgid;
	o->uid = t->cred->uid.val;
	o->cgroup_id = t->cgroups->dfl_cgrp->kn->id;
	copy16(o->comm, t->comm);
}

/* Inode of the calling task's network namespace. */
static __always_inline __u32 current_netns(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return t->nsproxy->net_ns->ns.inum;
}

/* Exec ids (struct sf_exe.exec_id) counted per CPU: the low 12 bits are
 * the CPU, the rest that CPU's count, so no two CPUs give the same id
 * without an atomic (fetch-and-add needs BPF v3 atomics, which this object
 * does not assume). A map, not a global: an enforcer that adopts pinned
 * maps keeps counting. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_ids SEC(".maps");

/* A new exec id: top bit clear, never 0. */
static __always_inline __u64 new_exec_id(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&exec_ids, &zero);
	if (!n)
		return 0;
	*n += 1;
	return ((*n << 12) | (bpf_get_smp_processor_id() & 0xfff)) & 0x7fffffffffffffffULL;
}

/* The exec id of a process's current image, 0 if none was recorded. */
static __always_inline __u64 exec_id_of(__u32 pid)
{
	struct sf_exe *x = bpf_map_lookup_elem(&exe_by_pid, &pid);
	return x ? x->exec_id : 0;
}

/* The owner's parent. In the owner's own context (every event but a close
 * the kernel completes later) the kernel's answer now, as getppid() gives
 * it: after the parent exited, the subreaper or init. Otherwise, what the
 * owner's last event, exec or fork recorded. */
static __always_inline void event_set_parent(struct sf_event *e, struct sf_exe *x, __u32 pid)
{
	struct task_struct *t = bpf_get_current_task_btf();
	__u32 ppid = 0;
	if (t->tgid == pid)
		ppid = t->real_parent->tgid;
	if (x) {
		if (ppid && ppid != x->ppid) { /* re-parented (or seeded without one) */
			x->ppid = ppid;
			x->parent_exec_id = exec_id_of(ppid);
		}
		e->ppid = x->ppid;
		e->exec_id = x->exec_id;
		e->parent_exec_id = x->parent_exec_id;
	} else if (ppid) {
		e->ppid = ppid;
		e->parent_exec_id = exec_id_of(ppid);
	}
}

static __always_inline void event_set_owner(struct sf_event *e, const struct sf_proc *o)
{
	e->pid = o->pid;
	e->uid = o->uid;
	e->cgroup_id = o->cgroup_id;
	copy16(e->comm, o->comm);

	struct sf_exe *x = bpf_map_lookup_elem(&exe_by_pid, &o->pid);
	if (x) {
		__u32 len = x->len;
		e->exe_len = len;
		if (x->truncated)
			e->flags |= SF_F_EXE_TRUNCATED;
		/* The used part only (x->path is zero-padded, so the last
		 * word's tail is zeros), not all 256 bytes. */
		for (int i = 0; i < SF_EXE_LEN / 8; i++) {
			if (i * 8 >= len)
				break;
			((__u64 *)e->exe)[i] = ((__u64 *)x->path)[i];
		}
	}
	event_set_parent(e, x, o->pid);
}

/* Like d_path(): walk dentries up to the root, crossing mount points,
 * writing names backwards into s->buf; the result goes to s->rec. */
#define SF_PATH_DEPTH 48
#define SF_MASK (SF_EXE_LEN - 1)
static __always_inline void resolve_path(struct path_scratch *s, struct file *f)
{
	struct vfsmount *vfs = BPF_CORE_READ(f, f_path.mnt);
	s->dentry = (__u64)BPF_CORE_READ(f, f_path.dentry);
	s->mount = (__u64)((void *)vfs - bpf_core_field_offset(struct mount, mnt));
	s->pos = SF_EXE_LEN - 1; /* the path ends at buf[SF_EXE_LEN - 1] */
	s->done = 0;
	s->rec.truncated = 0;

	for (int i = 0; i < SF_PATH_DEPTH; i++) {
		struct dentry *d = (struct dentry *)s->dentry;
		struct mount *mnt = (struct mount *)s->mount;
		struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		if (d == mnt_root || d == parent) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
			if (d != mnt_root || up == mnt) {
				s->done = 1; /* the root of the mount tree */
				break;
			}
			s->dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
			s->mount = (__u64)up;
			continue;
		}
		__u32 len = BPF_CORE_READ(d, d_name.len);
		const unsigned char *name = BPF_CORE_READ(d, d_name.name);
		__u32 pos = s->pos;
		if (len + 1 > pos) {
			s->rec.truncated = 1;
			break;
		}
		pos -= len;
		bpf_probe_read_kernel(&s->buf[pos & SF_MASK], len & SF_MASK, name);
		pos -= 1;
		s->buf[pos & SF_MASK] = '/';
		s->pos = pos;
		s->dentry = (__u64)parent;
	}
	if (!s->done)
		s->rec.truncated = 1;
	__u32 pos = s->pos;
	if (pos == SF_EXE_LEN - 1) { /* the root itself */
		pos -= 1;
		s->buf[pos & SF_MASK] = '/';
	}
	__u32 len = (SF_EXE_LEN - 1) - pos;
	s->rec.len = len;
	__builtin_memset(s->rec.path, 0, SF_EXE_LEN);
	bpf_probe_read_kernel(s->rec.path, len & SF_MASK, &s->buf[pos & SF_MASK]);

}

/* Exec records (struct sf_exec), for user space. Read with the events;
 * a wake-up is asked for only when the buffer is half full, so that an
 * exec costs no context switch of its own. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} execs SEC(".maps");

/* Tells user space about an exec: its id, executable and arguments. The
 * arguments are read from the new image's memory (mm->arg_start..arg_end),
 * which exec has just written, so they are there even if the process
 * exits a moment later; a process that later rewrites its argv (as nginx
 * or postgres do) is still reported with what it was exec'd with. */
static __always_inline void exec_report(struct task_struct *p, const struct sf_exe *x)
{
	if (!in_watched_cgroup())
		return;
	int compat = 0;
#ifdef __TARGET_ARCH_x86
	/* The new image is 32-bit: exec set TS_COMPAT (set_personality_ia32). */
	compat = (p->thread_info.status & 0x0002 /* TS_COMPAT */) != 0;
	if (compat)
		count(SF_CNT_COMPAT_EXECS);
#endif
	struct sf_exec *r = bpf_ringbuf_reserve(&execs, sizeof(*r), 0);
	if (!r) {
		count(SF_CNT_EXECS_LOST);
		return;
	}
	r->exec_id = x->exec_id;
	r->pid = p->tgid;
	r->exe_len = x->truncated ? 0 : x->len;
	bpf_probe_read_kernel(r->exe, SF_EXE_LEN, x->path);
	unsigned long start = BPF_CORE_READ(p, mm, arg_start);
	unsigned long end = BPF_CORE_READ(p, mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	r->args_truncated = len > SF_ARGS_LEN;
	if (len > SF_ARGS_LEN)
		len = SF_ARGS_LEN;
	if (len && bpf_probe_read_user(r->args, len, (const void *)start))
		len = 0;
	r->args_len = len;
	/* An exec of a 32-bit program wakes user space at once: it attaches
	 * the 32-bit system call hook (compat.h) only when one runs. */
	__u64 wake = compat || bpf_ringbuf_query(&execs, BPF_RB_AVAIL_DATA) > (1 << 19)
		? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(r, wake);
}

/* exe_by_pid is filled at exec, in the exec'ing task, before execve()
 * returns: a process that binds right after exec already has its entry. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(sf_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0;
	__u32 pid = p->tgid;
	struct path_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct file *f = BPF_CORE_READ(bprm, file);
	resolve_path(s, f);
	s->rec.ino = BPF_CORE_READ(f, f_inode, i_ino);
	s->rec.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	s->rec.exec_id = new_exec_id();
	s->rec.ppid = p->real_parent->tgid;
	s->rec.parent_exec_id = exec_id_of(s->rec.ppid);
	exe_set(pid, &s->rec);
	exec_report(p, &s->rec);
	return 0;
}

/* A forked process runs its parent's executable until it execs. Its
 * parent is the child's real_parent, not always the forking task
 * (CLONE_PARENT makes it the forking task's parent). */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(sf_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ppid = parent->tgid, cpid = child->tgid;
	if (child->pid != cpid || ppid == cpid)
		return 0; /* a new thread, not a new process */
	struct sf_exe *x = bpf_map_lookup_elem(&exe_by_pid, &ppid);
	if (!x) {
		bpf_map_delete_elem(&exe_by_pid, &cpid);
		return 0;
	}
	__u32 real = child->real_parent->tgid;
	__u64 real_exec = real == ppid ? x->exec_id : exec_id_of(real);
	if (exe_set(cpid, x))
		return 0;
	x = bpf_map_lookup_elem(&exe_by_pid, &cpid);
	if (x) {
		x->ppid = real;
		x->parent_exec_id = real_exec;
	}
	return 0;
}

/* A process is gone when its thread-group leader is freed (the leader is
 * reaped after every other thread): its executable goes with it. Closes
 * of its sockets that come later (an orphaned TCP connection finishing in
 * the background) are reported without exe. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(sf_free, struct task_struct *p)
{
	if (p->pid != p->tgid)
		return 0;
	__u32 pid = p->tgid;
	bpf_map_delete_elem(&exe_by_pid, &pid);
	return 0;
}

/* The calling task's cgroup v2. */
static __always_inline struct cgroup *current_cgroup(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return t->cgroups->dfl_cgrp;
}

/* The id of `cg`'s ancestor at `level` (cg itself at its own level). */
static __always_inline __u64 cgroup_ancestor_id(struct cgroup *cg, int level)
{
	void *anc = (void *)cg + bpf_core_field_offset(struct cgroup, ancestors);
	struct cgroup *a = NULL;
	bpf_probe_read_kernel(&a, sizeof(a), anc + (level & (SF_CGROUP_DEPTH - 1)) * sizeof(void *));
	return BPF_CORE_READ(a, kn, id);
}

/* The calling task's cgroup id and its ancestors', deepest first. */
static __always_inline __u32 current_cgroup_ids(__u64 *ids)
{
	struct cgroup *cg = current_cgroup();
	int level = cg->level;
	__u32 n = 0;
	for (int i = 0; i < SF_CGROUP_DEPTH; i++) {
		if (level - i < 0)
			break;
		ids[i] = cgroup_ancestor_id(cg, level - i);
		n++;
	}
	return n;
}

#endif
