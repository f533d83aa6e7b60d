// SPDX-License-Identifier: GPL-2.0-only
/*
 * sockfilter's kernel side: one record per socket lifecycle step, written to a
 * ring buffer, with the owning process attached.
 *
 *   bind     cgroup/post_bind4|6      process context, final port known
 *   listen   sockops TCP_LISTEN_CB    process context, after the port is
 *                                     chosen, once per socket (not on a 2nd listen)
 *   connect  sockops TCP_CONNECT_CB   TCP, process context, ephemeral port known
 *            sys_exit_connect         UDP connect()
 *   accept   sys_exit_accept(4)       in the accepting process
 *   close    tp_btf inet_sock_set_state -> TCP_CLOSE   (TCP, any context)
 *            cgroup/sock_release                        (UDP, if bound)
 *
 * The handshake and the close run outside the owner's context, so the owner
 * is remembered in socket-local storage (sk_owner) whenever the socket is
 * touched in process context. Executable paths are resolved once per exec in
 * the kernel (exe_by_pid), so a process that lives a millisecond still has one.
 *
 * Only hooks that load without kprobes, fentry or BPF-LSM are used.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "kernel.h"
#include "sockfilter.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9
#define TCP_CLOSING 11
#define SOCK_DONE 1
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* Set by the loader before load: 1 when watching one cgroup subtree, so that
 * tracepoints (which see every process) keep only that subtree. */
const volatile __u8 cfg_filter_cgroup = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SF_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sf_owner);
} sk_owner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct sf_exe);
} exe_by_pid SEC(".maps");

/* Owner of an accepted socket, keyed by its cookie: the accept tracepoint
 * cannot reach socket-local storage, so the close looks here first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sf_proc);
} accept_owner SEC(".maps");

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

#include "policy.h"

/* Keep the ABI types in the object's BTF for the layout test. */
struct sf_event _sf_event_btf __attribute__((unused));

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

/* A record with every field before exe[] zeroed. exe[] is left as the ring
 * buffer had it: event_set_owner writes its first exe_len bytes and user
 * space reads no further, so zeroing (and copying) all 256 bytes of it for
 * every event would be wasted work. `now` is the event's time (callers that
 * also store a start time read the clock once). */
static __always_inline struct sf_event *event_reserve(__u32 kind, __u64 now)
{
	struct sf_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(SF_CNT_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, __builtin_offsetof(struct sf_event, exe));
	e->kind = kind;
	e->ts_ns = now;
	return e;
}

/* Context IPv6 fields must be read 4 bytes at a time (the verifier refuses
 * wider loads, which the compiler would otherwise merge them into). */
static __always_inline void copy_ip6(__u8 *dst, const volatile __u32 *src)
{
	__u32 a[4] = { src[0], src[1], src[2], src[3] };
	__builtin_memcpy(dst, a, 16);
}

static __always_inline int in_watched_cgroup(void)
{
	if (!cfg_filter_cgroup)
		return 1;
	return bpf_current_task_under_cgroup(&watched_cgroup, 0) == 1;
}

/* comm is NUL-padded in the kernel (strscpy_pad), so two 8-byte loads copy
 * it exactly as a string copy into a zeroed buffer would. */
static __always_inline void copy_comm(char *dst, const char *src)
{
	((__u64 *)dst)[0] = ((const __u64 *)src)[0];
	((__u64 *)dst)[1] = ((const __u64 *)src)[1];
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
	copy_comm(o->comm, t->comm);
}

/* Inode of the calling task's network namespace. */
static __always_inline __u32 current_netns(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return t->nsproxy->net_ns->ns.inum;
}

static __always_inline void event_set_owner(struct sf_event *e, const struct sf_proc *o)
{
	e->pid = o->pid;
	e->uid = o->uid;
	e->cgroup_id = o->cgroup_id;
	copy_comm(e->comm, o->comm);

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
}

static __always_inline void event_set_decision(struct sf_event *e, const struct sf_decision *d)
{
	e->verdict = d->verdict;
	e->rule = d->rule;
	e->policy_slot = d->slot;
}

static __always_inline void subject_set_owner(struct sf_subject *s, const struct sf_proc *o)
{
	s->has_owner = 1;
	s->pid = o->pid;
	s->uid = o->uid;
	__builtin_memcpy(s->comm, o->comm, SF_COMM_LEN);
}

/* Endpoints of a socket reached through an fd: the pointer is a plain
 * number to the verifier, so every field costs a bpf_probe_read_kernel();
 * the kernel's unions skc_portpair and skc_addrpair give both ports, and
 * both IPv4 addresses, in one read each (little-endian: the low half is
 * skc_dport, skc_daddr). `family` has been read by the caller. */
static __always_inline void addrs_from_sock(struct sf_event *e, struct sock *sk, __u16 family)
{
	__u32 ports = BPF_CORE_READ(sk, __sk_common.skc_portpair);
	e->family = family;
	e->local_port = ports >> 16;
	e->remote_port = bpf_ntohs((__u16)ports);
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->local_addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		__u64 pair = BPF_CORE_READ(sk, __sk_common.skc_addrpair);
		*(__u32 *)e->local_addr = pair >> 32;
		*(__u32 *)e->remote_addr = (__u32)pair;
	}
	e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

static __always_inline void copy16(__u8 *dst, const __u8 *src)
{
	((__u64 *)dst)[0] = ((const __u64 *)src)[0];
	((__u64 *)dst)[1] = ((const __u64 *)src)[1];
}

/* The same from a socket pointer the verifier knows the type of (a tp_btf
 * argument): plain loads. */
static __always_inline void addrs_from_btf_sock(struct sf_event *e, struct sock *sk)
{
	e->family = sk->__sk_common.skc_family;
	e->local_port = sk->__sk_common.skc_num;
	e->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	if (e->family == AF_INET6) {
		copy16(e->local_addr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		copy16(e->remote_addr, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		*(__u32 *)e->local_addr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e->remote_addr = sk->__sk_common.skc_daddr;
	}
	e->netns = sk->__sk_common.skc_net.net->ns.inum;
}

/* A subject from an event's endpoints (no owner). */
static __always_inline void subject_from_event(struct sf_subject *sub, const struct sf_event *e, __u8 op)
{
	sub->op = op;
	sub->udp = e->protocol == IPPROTO_UDP;
	sub->ipv6 = e->family == AF_INET6;
	sub->has_local = 1;
	sub->has_remote = e->remote_port != 0;
	sub->local_port = e->local_port;
	sub->remote_port = e->remote_port;
	if (sub->ipv6) {
		__builtin_memcpy(sub->local_addr, e->local_addr, 16);
		__builtin_memcpy(sub->remote_addr, e->remote_addr, 16);
	} else {
		v4_mapped(sub->local_addr, *(__u32 *)e->local_addr);
		v4_mapped(sub->remote_addr, *(__u32 *)e->remote_addr);
	}
}

/* ---- executables ------------------------------------------------------ */

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

	/* FNV-1a 64, as crates/sockfilter/src/abi.rs computes it. */
	__u64 h = 0xcbf29ce484222325ULL;
	for (int i = 0; i < SF_EXE_LEN; i++) {
		if (i >= len)
			break;
		h ^= (__u8)s->rec.path[i];
		h *= 0x100000001b3ULL;
	}
	s->rec.hash = h;
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
	resolve_path(s, BPF_CORE_READ(bprm, file));
	bpf_map_update_elem(&exe_by_pid, &pid, &s->rec, BPF_ANY);
	return 0;
}

/* A forked process runs its parent's executable until it execs. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(sf_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ppid = parent->tgid, cpid = child->tgid;
	if (child->pid != cpid || ppid == cpid)
		return 0; /* a new thread, not a new process */
	struct sf_exe *x = bpf_map_lookup_elem(&exe_by_pid, &ppid);
	if (x)
		bpf_map_update_elem(&exe_by_pid, &cpid, x, BPF_ANY);
	else
		bpf_map_delete_elem(&exe_by_pid, &cpid);
	return 0;
}

/* ---- sockets ----------------------------------------------------------- */

/* Endpoints of bound or connected UDP sockets, by cookie, for their release. */
struct sf_endpoints {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u16 family;
	__u16 _pad;
	__u32 netns;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sf_endpoints);
} udp_endpoints SEC(".maps");

static __always_inline void remember_udp(const struct sf_event *e)
{
	struct sf_endpoints ep = {};
	__builtin_memcpy(ep.local_addr, e->local_addr, 16);
	__builtin_memcpy(ep.remote_addr, e->remote_addr, 16);
	ep.local_port = e->local_port;
	ep.remote_port = e->remote_port;
	ep.family = e->family;
	ep.netns = e->netns;
	bpf_map_update_elem(&udp_endpoints, &e->cookie, &ep, BPF_ANY);
}

static __always_inline struct sf_owner *owner_storage(void *sk, int create)
{
	return bpf_sk_storage_get(&sk_owner, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

/* A UDP socket's owner and start time are taken at creation (a UDP close's
 * duration counts from here). A TCP socket needs nothing here: only one
 * that listens, connects or is accepted can report a close, and sockops
 * records (or the listener's clone gives) its owner and start time then, so
 * storage created here would be allocated for every socket and overwritten
 * before anyone read it. The cookie of a TCP socket is fixed by sockops. */
SEC("cgroup/sock_create")
int sf_sock_create(struct bpf_sock *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return 1;
	struct sf_owner *o = owner_storage(ctx, 1);
	if (!o)
		return 1;
	owner_from_current(&o->proc);
	o->start_ns = bpf_ktime_get_boot_ns();
	bpf_get_socket_cookie(ctx); /* fixes the cookie now, so every later reader sees it */
	return 1;
}

/* The owner fields of `cur` into the socket's storage, keeping the rest. */
static __always_inline void owner_update(struct sf_owner *o, const struct sf_proc *cur)
{
	o->proc = *cur;
}

static __always_inline void take_pending(struct sf_owner *o, struct sf_decision *d)
{
	if (o && o->pending) {
		d->verdict = o->verdict;
		d->rule = o->rule;
		d->slot = o->slot;
		o->pending = 0;
	}
}

static __always_inline void set_pending(struct sf_owner *o, const struct sf_decision *d)
{
	if (o) {
		o->pending = 1;
		o->verdict = d->verdict;
		o->rule = d->rule;
		o->slot = d->slot;
	}
}

static __always_inline int post_bind(struct bpf_sock *ctx, const int v6)
{
	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return 1;
	struct sf_proc cur;
	owner_from_current(&cur);
	struct sf_owner *o = owner_storage(ctx, 1);
	struct sf_decision d = {};
	if (o && o->pending) {
		take_pending(o, &d); /* decided in bind4/6 before the port was taken */
	} else if (cfg_enforce) {
		/* bind(port 0): decided now that the kernel has chosen the port;
		 * refusing here makes bind() fail with EPERM and frees the port. */
		struct sf_subject sub = { .op = SF_OP_BIND, .ipv6 = v6, .has_local = 1 };
		sub.udp = ctx->protocol == IPPROTO_UDP;
		sub.local_port = ctx->src_port;
		if (v6)
			copy_ip6(sub.local_addr, ctx->src_ip6);
		else
			v4_mapped(sub.local_addr, ctx->src_ip4);
		subject_set_owner(&sub, &cur);
		decide(&sub, &d, 1);
	}
	__u64 now = bpf_ktime_get_boot_ns();
	if (o) {
		owner_update(o, &cur);
		if (!o->start_ns)
			o->start_ns = now;
	}
	int allow = d.verdict != SF_V_DENY;
	struct sf_event *e = event_reserve(SF_BIND, now);
	if (!e)
		return allow;
	event_set_owner(e, &cur);
	event_set_decision(e, &d);
	e->cookie = bpf_get_socket_cookie(ctx);
	e->family = ctx->family;
	e->protocol = ctx->protocol;
	e->local_port = ctx->src_port;
	e->netns = current_netns(); /* the hook has no kernel socket pointer */
	if (v6) {
		copy_ip6(e->local_addr, ctx->src_ip6);
	} else {
		__u32 a = ctx->src_ip4;
		__builtin_memcpy(e->local_addr, &a, 4);
	}
	if (allow && ctx->protocol == IPPROTO_UDP)
		remember_udp(e);
	bpf_ringbuf_submit(e, 0);
	return allow;
}

SEC("cgroup/post_bind4")
int sf_post_bind4(struct bpf_sock *ctx) { return post_bind(ctx, 0); }

SEC("cgroup/post_bind6")
int sf_post_bind6(struct bpf_sock *ctx) { return post_bind(ctx, 1); }

/* UDP release. The release hook cannot read the local address (the kernel
 * allows that only in post_bind), so bind and connect remember a UDP
 * socket's endpoints by cookie; sockets never bound or connected (a client's
 * one-off sendto) are not reported. */
SEC("cgroup/sock_release")
int sf_sock_release(struct bpf_sock *ctx)
{
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct sf_endpoints *ep = bpf_map_lookup_elem(&udp_endpoints, &cookie);
	if (!ep)
		return 1;
	struct sf_event *e = event_reserve(SF_CLOSE, bpf_ktime_get_boot_ns());
	if (!e) {
		bpf_map_delete_elem(&udp_endpoints, &cookie);
		return 1;
	}
	e->cookie = cookie;
	e->family = ep->family;
	e->protocol = IPPROTO_UDP;
	e->local_port = ep->local_port;
	e->remote_port = ep->remote_port;
	e->netns = ep->netns;
	__builtin_memcpy(e->local_addr, ep->local_addr, 16);
	__builtin_memcpy(e->remote_addr, ep->remote_addr, 16);
	bpf_map_delete_elem(&udp_endpoints, &cookie);

	struct sf_owner *o = owner_storage(ctx, 0);
	e->flags |= SF_F_BYTES_UNKNOWN;
	if (o) {
		event_set_owner(e, &o->proc);
		e->duration_ns = e->ts_ns - o->start_ns;
	} else {
		e->flags |= SF_F_OWNER_UNKNOWN | SF_F_DURATION_UNKNOWN;
	}
	bpf_ringbuf_submit(e, 0);
	return 1;
}

SEC("sockops")
int sf_sockops(struct bpf_sock_ops *ctx)
{
	__u32 op = ctx->op;
	if (op != BPF_SOCK_OPS_TCP_LISTEN_CB && op != BPF_SOCK_OPS_TCP_CONNECT_CB &&
	    op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct sf_owner *o = owner_storage(sk, 1);
	__u64 now = bpf_ktime_get_boot_ns();

	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		/* Softirq: the owner stays the listener's (cloned) until accept. */
		bpf_get_socket_cookie(ctx);
		if (o)
			o->start_ns = now;
		return 1;
	}

	/* listen() and connect() run in the caller's context. The cookie is
	 * fixed now even if the event cannot be written: an accept reads the
	 * listener's cookie from the socket itself. */
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct sf_proc cur;
	owner_from_current(&cur);
	struct sf_decision d = {};
	if (o) {
		owner_update(o, &cur);
		o->start_ns = now;
		o->active = op == BPF_SOCK_OPS_TCP_CONNECT_CB;
	}
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		take_pending(o, &d); /* decided in connect4/6 */
	} else if (cfg_enforce) {
		struct sf_subject sub = { .op = SF_OP_LISTEN, .has_local = 1 };
		sub.ipv6 = ctx->family == AF_INET6;
		sub.local_port = ctx->local_port;
		if (sub.ipv6)
			copy_ip6(sub.local_addr, ctx->local_ip6);
		else
			v4_mapped(sub.local_addr, ctx->local_ip4);
		subject_set_owner(&sub, &cur);
		decide(&sub, &d, 1);
		if (cfg_filter_cgroup) {
			__u16 port = sub.local_port;
			__u32 one = 1, *n = bpf_map_lookup_elem(&scoped_listeners, &port);
			if (n)
				__sync_fetch_and_add(n, 1);
			else
				bpf_map_update_elem(&scoped_listeners, &port, &one, BPF_ANY);
		}
		if (d.verdict == SF_V_DENY) {
			/* listen() cannot be failed from here: refuse every
			 * connection to it in socket lookup (sf_sk_lookup) until
			 * user space destroys it. */
			struct sf_listen_key k = { .port = sub.local_port };
			__builtin_memcpy(k.addr, sub.local_addr, 16);
			bpf_map_update_elem(&denied_listeners, &k, &cookie, BPF_ANY);
		}
	}

	struct sf_event *e = event_reserve(op == BPF_SOCK_OPS_TCP_LISTEN_CB ? SF_LISTEN : SF_CONNECT, now);
	if (!e)
		return 1;
	event_set_owner(e, &cur);
	event_set_decision(e, &d);
	e->cookie = cookie;
	e->family = ctx->family;
	e->protocol = IPPROTO_TCP;
	e->local_port = ctx->local_port;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		e->remote_port = bpf_ntohl(ctx->remote_port);
	if (ctx->family == AF_INET6) {
		copy_ip6(e->local_addr, ctx->local_ip6);
		if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
			copy_ip6(e->remote_addr, ctx->remote_ip6);
		}
	} else {
		__u32 l = ctx->local_ip4;
		__builtin_memcpy(e->local_addr, &l, 4);
		if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
			__u32 r = ctx->remote_ip4;
			__builtin_memcpy(e->remote_addr, &r, 4);
		}
	}
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp) { /* a BTF pointer: plain loads */
		struct sock *ks = (struct sock *)tp;
		e->netns = ks->__sk_common.skc_net.net->ns.inum;
		if (op == BPF_SOCK_OPS_TCP_LISTEN_CB)
			e->backlog = ks->sk_max_ack_backlog;
	}
	bpf_ringbuf_submit(e, 0);
	return 1;
}

/* TCP close: every TCP socket that leaves a connected or listening state for
 * CLOSE, whatever the context (often softirq). Attributed to its last owner. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sf_tcp_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_CLOSE || oldstate == TCP_CLOSE || oldstate == TCP_NEW_SYN_RECV)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	struct sf_owner *o = bpf_sk_storage_get(&sk_owner, sk, 0, 0);
	if (cfg_filter_cgroup && !o)
		return 0; /* not a socket of the watched subtree (no hook of it ran) */

	struct sf_event *e = event_reserve(SF_CLOSE, bpf_ktime_get_boot_ns());
	if (!e)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(sk);
	/* Only accepted sockets have an accept_owner entry: a socket that
	 * connected (active) or a listener cannot, so skip the lookup. */
	struct sf_proc *acc = NULL;
	if (!(o && o->active) && oldstate != TCP_LISTEN)
		acc = bpf_map_lookup_elem(&accept_owner, &cookie);
	if (acc) {
		event_set_owner(e, acc);
		if (o)
			e->duration_ns = e->ts_ns - o->start_ns;
		bpf_map_delete_elem(&accept_owner, &cookie);
	} else if (o) {
		event_set_owner(e, &o->proc);
		e->duration_ns = e->ts_ns - o->start_ns;
	} else {
		e->flags |= SF_F_OWNER_UNKNOWN | SF_F_DURATION_UNKNOWN;
	}
	e->cookie = cookie;
	e->protocol = IPPROTO_TCP;
	addrs_from_btf_sock(e, sk);
	/* The port is already released (inet_num is 0); inet_sport keeps it.
	 * It lies beyond struct sock, so it is read through the tcp_sock
	 * pointer (plain load) when there is one. */
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		e->local_port = bpf_ntohs(((struct inet_sock *)tp)->inet_sport);
	else
		e->local_port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (tp) {
		/* bytes_acked and bytes_received count sequence space: take out
		 * the SYN this side sent and the FINs, to leave the payload. */
		__u64 sent = tp->bytes_acked, received = tp->bytes_received;
		int fin_sent = oldstate == TCP_FIN_WAIT1 || oldstate == TCP_FIN_WAIT2 ||
			       oldstate == TCP_CLOSING || oldstate == TCP_LAST_ACK;
		if (fin_sent && tp->snd_una == tp->write_seq && sent > 0)
			sent--;
		if (o && o->active && sent > 0)
			sent--;
		if ((sk->__sk_common.skc_flags & (1UL << SOCK_DONE)) && received > 0)
			received--; /* the peer's FIN */
		e->bytes_sent = sent;
		e->bytes_received = received;
	}
	e->backlog = oldstate; /* the state it left: user space tells listeners from connections */
	if (cfg_enforce && oldstate == TCP_LISTEN) {
		struct sf_listen_key k = { .port = e->local_port };
		if (e->family == AF_INET6)
			__builtin_memcpy(k.addr, e->local_addr, 16);
		else
			v4_mapped(k.addr, *(__u32 *)e->local_addr);
		__u64 *c = bpf_map_lookup_elem(&denied_listeners, &k);
		if (c && *c == cookie)
			bpf_map_delete_elem(&denied_listeners, &k);
		if (cfg_filter_cgroup) {
			__u16 port = e->local_port;
			__u32 *n = bpf_map_lookup_elem(&scoped_listeners, &port);
			if (n) {
				__sync_fetch_and_add(n, -1);
				if (*n == 0)
					bpf_map_delete_elem(&scoped_listeners, &port);
			}
		}
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- syscalls that need the process and the fd --------------------------- */

struct sys_exit_ctx {
	__u64 common;
	int nr;
	int _pad;
	long ret;
};

/* The socket behind one of the calling task's fds. The task and its fd
 * table are BTF pointers (plain loads); from the fd array on, the pointers
 * are untyped to the verifier and each step is a probe read. */
static __always_inline struct sock *sock_from_fd(long fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = t->files->fdt;
	unsigned int max = fdt->max_fds;
	if (fd < 0 || fd >= max)
		return NULL;
	struct file **fds = fdt->fd;
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	unsigned short mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

/* The system call's first argument (accept's listening fd, connect's fd).
 * At syscall exit the task's saved user registers still hold it (the
 * syscall tracepoints run for 64-bit system calls only, where it is di), so
 * no program on syscall entry and no map are needed to carry it over. */
static __always_inline long syscall_arg0(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	return regs->di;
}

static __always_inline int accept_exit(struct sys_exit_ctx *ctx)
{
	if (ctx->ret < 0 || !in_watched_cgroup())
		return 0;
	struct sock *sk = sock_from_fd(ctx->ret);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	struct sf_event *e = event_reserve(SF_ACCEPT, bpf_ktime_get_boot_ns());
	if (!e)
		return 0;
	struct sf_proc cur;
	owner_from_current(&cur);
	event_set_owner(e, &cur);
	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	struct sock *lsk = sock_from_fd(syscall_arg0());
	if (lsk)
		e->listener_cookie = BPF_CORE_READ(lsk, __sk_common.skc_cookie.counter);
	e->protocol = IPPROTO_TCP;
	addrs_from_sock(e, sk, family);
	if (cfg_enforce) {
		/* Decided in socket lookup (no process there); recomputed here,
		 * uncounted, to name the verdict on the event. */
		struct sf_decision d = {};
		struct sf_subject sub = {};
		subject_from_event(&sub, e, SF_OP_ACCEPT);
		decide(&sub, &d, 0);
		event_set_decision(e, &d);
	}
	bpf_map_update_elem(&accept_owner, &e->cookie, &cur, BPF_ANY);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sf_exit_accept(struct sys_exit_ctx *ctx) { return accept_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_accept4")
int sf_exit_accept4(struct sys_exit_ctx *ctx) { return accept_exit(ctx); }

/* UDP connect(): TCP connects are reported by sockops, which also sees
 * connects that do not come from connect() (TCP fast open). */
SEC("tracepoint/syscalls/sys_exit_connect")
int sf_exit_connect(struct sys_exit_ctx *ctx)
{
	if (ctx->ret != 0 || !in_watched_cgroup())
		return 0;
	struct sock *sk = sock_from_fd(syscall_arg0());
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	struct sf_event *e = event_reserve(SF_CONNECT, bpf_ktime_get_boot_ns());
	if (!e)
		return 0;
	struct sf_proc cur;
	owner_from_current(&cur);
	event_set_owner(e, &cur);
	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	e->protocol = IPPROTO_UDP;
	addrs_from_sock(e, sk, family);
	if (e->remote_port == 0) { /* connect(AF_UNSPEC): a disconnect */
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	if (cfg_enforce) {
		/* Decided (and counted) in connect4/6; recomputed to name it. */
		struct sf_decision d = {};
		struct sf_subject sub = {};
		subject_from_event(&sub, e, SF_OP_CONNECT);
		sub.has_local = 0;
		subject_set_owner(&sub, &cur);
		decide(&sub, &d, 0);
		event_set_decision(e, &d);
	}
	remember_udp(e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* ---- enforcement-only hooks (attached by `sockfilter enforce`) ------------ */

static __always_inline void subject_from_addr(struct sf_subject *sub, struct bpf_sock_addr *ctx,
					      const int v6, int remote)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	sub->udp = ctx->protocol == IPPROTO_UDP;
	sub->ipv6 = v6;
	__u8 *addr = remote ? sub->remote_addr : sub->local_addr;
	if (v6)
		copy_ip6(addr, ctx->user_ip6);
	else
		v4_mapped(addr, ctx->user_ip4);
	if (remote) {
		sub->has_remote = 1;
		sub->remote_port = port;
	} else {
		sub->has_local = 1;
		sub->local_port = port;
	}
}

static __always_inline void addr_event(struct sf_event *e, struct bpf_sock_addr *ctx,
				       const int v6, int remote, const struct sf_subject *sub)
{
	e->cookie = bpf_get_socket_cookie(ctx);
	e->family = v6 ? AF_INET6 : AF_INET;
	e->protocol = ctx->protocol;
	e->netns = current_netns();
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	if (remote) {
		e->remote_port = port;
		if (v6)
			copy_ip6(e->remote_addr, ctx->user_ip6);
		else
			__builtin_memcpy(e->remote_addr, &sub->remote_addr[12], 4);
		struct bpf_sock *sk = ctx->sk;
		if (sk) {
			e->local_port = sk->src_port;
			if (v6)
				copy_ip6(e->local_addr, sk->src_ip6);
			else {
				__u32 a = sk->src_ip4;
				__builtin_memcpy(e->local_addr, &a, 4);
			}
		}
	} else {
		e->local_port = port;
		if (v6)
			copy_ip6(e->local_addr, ctx->user_ip6);
		else
			__builtin_memcpy(e->local_addr, &sub->local_addr[12], 4);
	}
}

/* bind() to an explicit port: decided before the port is taken. */
static __always_inline int bind_hook(struct bpf_sock_addr *ctx, const int v6)
{
	if (!cfg_enforce || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP))
		return 1;
	if (bpf_ntohs((__u16)ctx->user_port) == 0)
		return 1; /* the kernel picks the port: decided in post_bind */
	struct sf_proc cur;
	owner_from_current(&cur);
	struct sf_subject sub = { .op = SF_OP_BIND };
	subject_from_addr(&sub, ctx, v6, 0);
	subject_set_owner(&sub, &cur);
	struct sf_decision d = {};
	decide(&sub, &d, 1);
	if (d.verdict != SF_V_DENY) {
		set_pending(owner_storage(ctx->sk, 1), &d);
		return 1;
	}
	struct sf_event *e = event_reserve(SF_BIND, bpf_ktime_get_boot_ns());
	if (e) {
		event_set_owner(e, &cur);
		event_set_decision(e, &d);
		addr_event(e, ctx, v6, 0, &sub);
		bpf_ringbuf_submit(e, 0);
	}
	return 0; /* EPERM */
}

SEC("cgroup/bind4")
int sf_bind4(struct bpf_sock_addr *ctx) { return bind_hook(ctx, 0); }
SEC("cgroup/bind6")
int sf_bind6(struct bpf_sock_addr *ctx) { return bind_hook(ctx, 1); }

/* connect(), TCP and UDP: refused with EPERM before anything is sent. */
static __always_inline int connect_hook(struct bpf_sock_addr *ctx, const int v6)
{
	if (!cfg_enforce || (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP))
		return 1;
	struct sf_proc cur;
	owner_from_current(&cur);
	struct sf_subject sub = { .op = SF_OP_CONNECT };
	subject_from_addr(&sub, ctx, v6, 1);
	subject_set_owner(&sub, &cur);
	struct sf_decision d = {};
	decide(&sub, &d, 1);
	if (d.verdict != SF_V_DENY) {
		if (ctx->protocol == IPPROTO_TCP)
			set_pending(owner_storage(ctx->sk, 1), &d); /* reported by TCP_CONNECT_CB */
		return 1;
	}
	struct sf_event *e = event_reserve(SF_CONNECT, bpf_ktime_get_boot_ns());
	if (e) {
		event_set_owner(e, &cur);
		event_set_decision(e, &d);
		addr_event(e, ctx, v6, 1, &sub);
		bpf_ringbuf_submit(e, 0);
	}
	return 0;
}

SEC("cgroup/connect4")
int sf_connect4(struct bpf_sock_addr *ctx) { return connect_hook(ctx, 0); }
SEC("cgroup/connect6")
int sf_connect6(struct bpf_sock_addr *ctx) { return connect_hook(ctx, 1); }

/* sendto()/sendmsg() with a destination on a UDP socket: decided per
 * datagram; reported as a `connect` when the destination is new for the
 * socket (one of the last four it sent to). */
static __always_inline int sendmsg_hook(struct bpf_sock_addr *ctx, const int v6)
{
	if (!cfg_enforce || ctx->protocol != IPPROTO_UDP)
		return 1;
	struct sf_proc cur;
	owner_from_current(&cur);
	struct sf_subject sub = { .op = SF_OP_CONNECT };
	subject_from_addr(&sub, ctx, v6, 1);
	subject_set_owner(&sub, &cur);
	struct sf_decision d = {};
	decide(&sub, &d, 1);
	int allow = d.verdict != SF_V_DENY;

	struct sf_owner *o = owner_storage(ctx->sk, 1);
	if (o) {
		for (int i = 0; i < 4; i++) {
			if (o->udp_dst[i].port == sub.remote_port &&
			    !__builtin_memcmp(o->udp_dst[i].addr, sub.remote_addr, 16))
				return allow; /* already reported */
		}
		__u32 n = o->udp_next & 3;
		__builtin_memcpy(o->udp_dst[n].addr, sub.remote_addr, 16);
		o->udp_dst[n].port = sub.remote_port;
		o->udp_next = (n + 1) & 3;
	}
	struct sf_event *e = event_reserve(SF_CONNECT, bpf_ktime_get_boot_ns());
	if (e) {
		event_set_owner(e, &cur);
		event_set_decision(e, &d);
		addr_event(e, ctx, v6, 1, &sub);
		bpf_ringbuf_submit(e, 0);
	}
	return allow;
}

SEC("cgroup/sendmsg4")
int sf_sendmsg4(struct bpf_sock_addr *ctx) { return sendmsg_hook(ctx, 0); }
SEC("cgroup/sendmsg6")
int sf_sendmsg6(struct bpf_sock_addr *ctx) { return sendmsg_hook(ctx, 1); }

/* Socket lookup for a new inbound TCP connection, per network namespace:
 * refuse it (the client gets a reset: ECONNREFUSED) when it is for a denied
 * listener or from a denied peer, before any socket is chosen. */
static __always_inline int denied_listener(const __u8 *addr, __u16 port)
{
	struct sf_listen_key k = { .port = port };
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&denied_listeners, &k) != NULL;
}

SEC("sk_lookup")
int sf_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	struct sf_subject sub = { .op = SF_OP_ACCEPT, .has_local = 1, .has_remote = 1 };
	sub.ipv6 = ctx->family == AF_INET6;
	sub.local_port = ctx->local_port;
	sub.remote_port = bpf_ntohs((__u16)ctx->remote_port);
	if (sub.ipv6) {
		copy_ip6(sub.local_addr, ctx->local_ip6);
		copy_ip6(sub.remote_addr, ctx->remote_ip6);
	} else {
		v4_mapped(sub.local_addr, ctx->local_ip4);
		v4_mapped(sub.remote_addr, ctx->remote_ip4);
	}
	/* sock_diag finds a socket (to destroy it) through the same lookup,
	 * with an unspecified peer; no packet comes from 0.0.0.0 or ::. */
	if (sub.ipv6 ? !(ctx->remote_ip6[0] | ctx->remote_ip6[1] | ctx->remote_ip6[2] | ctx->remote_ip6[3])
		     : !ctx->remote_ip4)
		return SK_PASS;
	__u8 any4[16] = { [10] = 0xff, [11] = 0xff };
	__u8 any6[16] = {};
	if (denied_listener(sub.local_addr, sub.local_port) ||
	    denied_listener(any6, sub.local_port) ||
	    (!sub.ipv6 && denied_listener(any4, sub.local_port)))
		return SK_DROP;
	if (cfg_filter_cgroup) {
		__u16 port = sub.local_port;
		if (!bpf_map_lookup_elem(&scoped_listeners, &port))
			return SK_PASS; /* not a listener of the watched cgroup */
	}
	struct sf_decision d = {};
	decide(&sub, &d, 1);
	return d.verdict == SF_V_DENY ? SK_DROP : SK_PASS;
}
