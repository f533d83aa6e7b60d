/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Enforcement in BPF LSM hooks, where `bpf` is an active LSM (Debian's 6.1
 * and 6.12 kernels): the system call itself fails with EPERM, synchronously,
 * before the kernel acts, as sf_listen could make it on macOS:
 *
 *   listen()   lsm/socket_listen   (the cgroup hooks have no listen hook:
 *                                   without LSM a denied listener is refused
 *                                   in socket lookup and destroyed)
 *   bind()     lsm/socket_bind     (instead of cgroup/bind4/6)
 *   connect()  lsm/socket_connect  (instead of cgroup/connect4/6)
 *
 * Decided by the same compiled policy (policy.h). What the kernel decides
 * only later stays where it is: bind(port 0) and listen() on an unbound
 * socket get their port after these hooks, so post_bind and sockops decide
 * them as without LSM; UDP sends go through cgroup/sendmsg4/6; inbound
 * connections through socket lookup. Programs are loaded only when the
 * loader found `bpf` among the active LSMs (an LSM program can load and
 * attach on a kernel where it never runs).
 */
#ifndef SOCKFILTER_LSM_H
#define SOCKFILTER_LSM_H

#define EPERM 1
#define MAX_ERRNO 4095

/* What an earlier BPF program on the same hook returned, kept: a deny stays
 * a deny. The verifier requires an LSM program's return value to be 0 or
 * an errno, so it is clamped to that range where it can see it. */
static __always_inline int lsm_previous(int ret)
{
	return ret < 0 && ret >= -MAX_ERRNO ? ret : -EPERM;
}

/* The protocol the policy decides `sk` under (common.h). */
static __always_inline __u16 sock_protocol(struct sock *sk)
{
	return policy_protocol(sk->sk_protocol, sk->sk_type);
}

struct sockaddr { __u16 sa_family; } __core;
struct sockaddr_in {
	__u16 sin_family;
	__be16 sin_port;
	__be32 sin_addr;
};
struct sockaddr_in6 {
	__u16 sin6_family;
	__be16 sin6_port;
	__be32 sin6_flowinfo;
	__u8 sin6_addr[16];
};

/* The socket's sock when the policy decides it (an IP socket the policy
 * decides as TCP or UDP, common.h), or NULL (also outside the watched
 * cgroup). */
static __always_inline struct sock *lsm_inet_sock(struct socket *sock)
{
	if (!cfg_enforce || !cfg_lsm || !in_watched_cgroup())
		return NULL;
	struct sock *sk = sock->sk;
	if (!sk)
		return NULL;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (!sock_protocol(sk))
		return NULL;
	return sk;
}

/* The address a bind() or connect() passed (a kernel copy), into `sub` as
 * its local (bind) or remote (connect) endpoint. 0 when it is not an IPv4
 * or IPv6 address (AF_UNSPEC disconnects a UDP socket). */
static __always_inline int lsm_subject_addr(struct sf_subject *sub, struct sockaddr *address,
					    int addrlen, int remote)
{
	__u8 *addr = remote ? sub->remote_addr : sub->local_addr;
	__u16 port;
	__u16 family = 0;
	bpf_probe_read_kernel(&family, sizeof(family), &address->sa_family);
	if (family == AF_INET && addrlen >= (int)sizeof(struct sockaddr_in)) {
		struct sockaddr_in a = {};
		bpf_probe_read_kernel(&a, sizeof(a), address);
		v4_mapped(addr, a.sin_addr);
		port = bpf_ntohs(a.sin_port);
	} else if (family == AF_INET6 && addrlen >= (int)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 a = {};
		bpf_probe_read_kernel(&a, sizeof(a), address);
		copy16(addr, a.sin6_addr);
		port = bpf_ntohs(a.sin6_port);
	} else {
		return 0;
	}
	if (remote) {
		sub->has_remote = 1;
		sub->remote_port = port;
	} else {
		sub->has_local = 1;
		sub->local_port = port;
	}
	return 1;
}

/* The event for a call an LSM hook refused. */
static __always_inline void lsm_report(__u32 kind, struct sock *sk, const struct sf_proc *cur,
				       const struct sf_subject *sub, const struct sf_decision *d,
				       __u32 backlog)
{
	struct sf_event *e = event_reserve(kind, bpf_ktime_get_boot_ns());
	if (!e)
		return;
	event_set_owner(e, cur);
	event_set_decision(e, d);
	e->cookie = bpf_get_socket_cookie(sk);
	e->family = sk->__sk_common.skc_family;
	e->protocol = sock_protocol(sk);
	e->netns = sk->__sk_common.skc_net.net->ns.inum;
	e->local_port = sub->local_port;
	e->remote_port = sub->remote_port;
	e->backlog = backlog;
	if (e->family == AF_INET6) {
		copy16(e->local_addr, sub->local_addr);
		copy16(e->remote_addr, sub->remote_addr);
	} else {
		__builtin_memcpy(e->local_addr, &sub->local_addr[12], 4);
		__builtin_memcpy(e->remote_addr, &sub->remote_addr[12], 4);
	}
	bpf_ringbuf_submit(e, 0);
}

/* The policy's decision for `sub`, made by the calling process, counted
 * when `count`. A global function: the verifier checks it once, on its own,
 * instead of once for every path of each LSM program that calls it (inlined
 * there, the policy lookup made Debian 6.12's verifier give up after a
 * million instructions). Its pointer arguments may be NULL to the verifier.
 * The subject is decided from a copy on this function's stack: its argument
 * is plain memory to the verifier, and before 6.2 (Debian 12's 6.1) a map
 * key may not point there (the policy looks the pid up in exe_by_pid). */
__attribute__((noinline)) int sf_lsm_decide_subject(struct sf_subject *sub,
						    struct sf_decision *d, int count)
{
	if (!sub || !d)
		return 0;
	struct sf_subject s = *sub;
	decide(&s, d, count, NULL);
	return 0;
}

/* Decides `sub` for the calling process; on a deny reports it and returns
 * -EPERM. `count`: count an allow too (a later hook counts it otherwise). */
static __always_inline int lsm_decide(__u32 kind, struct sock *sk, struct sf_subject *sub,
				      struct sf_decision *d, int count, __u32 backlog)
{
	struct sf_proc cur;
	owner_from_current(&cur);
	subject_set_owner(sub, &cur);
	sub->udp = sock_protocol(sk) == IPPROTO_UDP;
	sub->ipv6 = sk->__sk_common.skc_family == AF_INET6;
	sf_lsm_decide_subject(sub, d, count);
	if (d->verdict != SF_V_DENY)
		return 0;
	if (!count)
		count_hit(d);
	d->by = SF_BY_LSM;
	lsm_report(kind, sk, &cur, sub, d, backlog);
	return -EPERM;
}

SEC("lsm/socket_bind")
int BPF_PROG(sf_lsm_bind, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return lsm_previous(ret);
	struct sock *sk = lsm_inet_sock(sock);
	if (!sk)
		return 0;
	struct sf_subject sub = { .op = SF_OP_BIND };
	if (!lsm_subject_addr(&sub, address, addrlen, 0) || sub.local_port == 0)
		return 0; /* the kernel picks the port: decided in post_bind */
	struct sf_decision d = {};
	/* An allowed bind is decided again, and counted, in post_bind. */
	return lsm_decide(SF_BIND, sk, &sub, &d, 0, 0);
}

SEC("lsm/socket_connect")
int BPF_PROG(sf_lsm_connect, struct socket *sock, struct sockaddr *address, int addrlen, int ret)
{
	if (ret)
		return lsm_previous(ret);
	struct sock *sk = lsm_inet_sock(sock);
	if (!sk)
		return 0;
	struct sf_subject sub = { .op = SF_OP_CONNECT };
	if (!lsm_subject_addr(&sub, address, addrlen, 1))
		return 0;
	struct sf_decision d = {};
	int err = lsm_decide(SF_CONNECT, sk, &sub, &d, 1, 0);
	if (!err && sk->sk_protocol == IPPROTO_TCP)
		set_pending(bpf_sk_storage_get(&sk_owner, sk, 0, BPF_SK_STORAGE_GET_F_CREATE),
			    &d); /* reported by TCP_CONNECT_CB */
	return err;
}

SEC("lsm/socket_listen")
int BPF_PROG(sf_lsm_listen, struct socket *sock, int backlog, int ret)
{
	if (ret)
		return lsm_previous(ret);
	struct sock *sk = lsm_inet_sock(sock);
	if (!sk || sock_protocol(sk) != IPPROTO_TCP)
		return 0;
	struct sf_subject sub = { .op = SF_OP_LISTEN, .has_local = 1 };
	sub.local_port = sk->__sk_common.skc_num;
	if (!sub.local_port)
		return 0; /* not bound yet: listen() picks the port, sockops decides */
	if (sk->__sk_common.skc_family == AF_INET6)
		copy16(sub.local_addr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		v4_mapped(sub.local_addr, sk->__sk_common.skc_rcv_saddr);
	struct sf_decision d = {};
	/* Allowed: counted here; sockops reports and registers it uncounted. */
	return lsm_decide(SF_LISTEN, sk, &sub, &d, 1, backlog);
}

#endif
