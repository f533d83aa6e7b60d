/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Reading sockets: endpoints from a kernel socket, the socket behind an fd,
 * and what sockfilter keeps per socket between hooks (owner storage, UDP
 * endpoints for the release, the owner of an accepted socket, a decision
 * made in bind4/connect4 for the hook that reports it).
 */
#ifndef SOCKFILTER_SOCKET_H
#define SOCKFILTER_SOCKET_H

/* Owner of an accepted socket, keyed by its cookie: the accept tracepoint
 * cannot reach socket-local storage, so the close looks here first. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH); /* not an LRU: removed at close; full: SF_CNT_ACCEPTED_FULL */
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sf_proc);
} accept_owner SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_HASH); /* not an LRU: removed at release; full: SF_CNT_UDP_FULL */
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
	/* The key from the stack: before 6.2 (Debian 12's 6.1) a map key may
	 * not point into ring-buffer memory. */
	__u64 cookie = e->cookie;
	if (bpf_map_update_elem(&udp_endpoints, &cookie, &ep, BPF_ANY))
		count(SF_CNT_UDP_FULL);
}

static __always_inline struct sf_owner *owner_storage(void *sk, int create)
{
	return bpf_sk_storage_get(&sk_owner, sk, 0, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
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

struct sys_exit_ctx {
	__u64 common;
	int nr;
	int _pad;
	long ret;
};

/* The socket of an open file, NULL if it is not one. */
static __always_inline struct sock *sock_of_file(struct file *f)
{
	if (!f)
		return NULL;
	unsigned short mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *so = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

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
	return sock_of_file(f);
}

/* The system call's first argument (accept's listening fd, connect's fd).
 * At syscall exit the task's saved user registers still hold it (the
 * syscall tracepoints run for 64-bit system calls only, where it is di), so
 * no program on syscall entry and no map are needed to carry it over. */
static __always_inline long syscall_arg0(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
#if defined(__TARGET_ARCH_arm64)
	return ((struct pt_regs___sf_arm64 *)regs)->orig_x0;
#else
	return regs->di;
#endif
}

#endif
