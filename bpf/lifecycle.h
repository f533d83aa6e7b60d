/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The lifecycle events: bind, listen, connect, accept and close, one record
 * each in the ring buffer, attributed to the process (process.h) and, under
 * enforce, carrying the decision (policy.h). The hook of each event is listed
 * at the top of sockfilter.bpf.c.
 */
#ifndef SOCKFILTER_LIFECYCLE_H
#define SOCKFILTER_LIFECYCLE_H

/* A UDP socket's owner and start time are taken at creation (a UDP close's
 * duration counts from here). A TCP socket needs nothing here: only one
 * that listens, connects or is accepted can report a close, and sockops
 * records (or the listener's clone gives) its owner and start time then, so
 * storage created here would be allocated for every socket and overwritten
 * before anyone read it. The cookie of a TCP socket is fixed by sockops. */
SEC("cgroup/sock_create")
int sf_sock_create(struct bpf_sock *ctx)
{
	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return 1;
	/* A UDP-Lite connect() never reaches cgroup/connect4/6 (its kernel
	 * protocol has no pre_connect), and the sends of a connected socket
	 * never reach cgroup/sendmsg4/6: without BPF LSM (lsm.h decides such a
	 * connect) nothing could decide where it sends, so under enforce the
	 * socket is refused (socket() fails with EPERM): fail closed. */
	if (ctx->protocol == IPPROTO_UDPLITE && cfg_enforce && !cfg_lsm)
		return 0;
	if (ctx->protocol != IPPROTO_UDP)
		return 1;
	struct sf_owner *o = owner_storage(ctx, 1);
	if (!o)
		return 1;
	owner_from_current(&o->proc);
	o->start_ns = bpf_ktime_get_boot_ns();
	o->netns = current_netns(); /* the socket's: it is created in the caller's */
	bpf_get_socket_cookie(ctx); /* fixes the cookie now, so every later reader sees it */
	return 1;
}

static __always_inline int post_bind(struct bpf_sock *ctx, const int v6)
{
	__u16 protocol = policy_protocol(ctx->protocol, ctx->type);
	if (!protocol)
		return 1;
	struct sf_proc cur;
	owner_from_current(&cur);
	struct sf_owner *o = owner_storage(ctx, 1);
	struct sf_decision d = {};
	if (cfg_enforce) {
		/* Decided on the address the kernel bound, every time: for
		 * bind(port 0) this is the first decision (refusing here makes
		 * bind() fail with EPERM and frees the port); for an explicit
		 * port, bind4/6 has allowed the same subject a moment ago. */
		struct sf_subject sub = { .op = SF_OP_BIND, .ipv6 = v6, .has_local = 1 };
		sub.udp = protocol == IPPROTO_UDP;
		sub.local_port = ctx->src_port;
		if (v6)
			copy_ip6(sub.local_addr, ctx->src_ip6);
		else
			v4_mapped(sub.local_addr, ctx->src_ip4);
		subject_set_owner(&sub, &cur);
		decide(&sub, &d, 1, NULL);
		d.by = SF_BY_CGROUP;
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
	e->protocol = protocol;
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
		/* Under BPF LSM, socket_listen has decided and counted already. */
		decide(&sub, &d, !cfg_lsm, NULL);
		d.by = SF_BY_DESTROY;
		/* listen() cannot be failed from here: a denied listener is
		 * registered as such, and socket lookup (sf_sk_lookup) refuses
		 * every connection to it until user space destroys it. */
		struct tcp_sock *ltp = bpf_skc_to_tcp_sock(sk);
		if (ltp)
			listener_register((struct sock *)ltp, cookie, &cur, sub.local_addr,
					  sub.local_port, d.verdict == SF_V_DENY);
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
	if (cfg_enforce && oldstate == TCP_LISTEN) {
		/* The port is already released; inet_sport keeps it. */
		__u16 port = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		listener_unregister(sk, bpf_get_socket_cookie(sk), port);
	}

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
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The TCP (IPv4 or IPv6) socket behind the calling task's `fd`, or NULL. */
static __always_inline struct sock *tcp_sock_at(long fd, unsigned short *family)
{
	struct sock *sk = sock_from_fd(fd);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (*family != AF_INET && *family != AF_INET6)
		return NULL;
	return sk;
}

/* The accept of `sk` (a TCP socket reached through its new fd) by `cur`,
 * the process that took it off the queue, whichever way it did: accept()
 * and accept4() of 64- and 32-bit processes, io_uring accepts (uring.h).
 * `lsk`: the listening socket, NULL when unknown. */
static __always_inline void report_accept(struct sock *sk, unsigned short family,
					  struct sock *lsk, const struct sf_proc *cur)
{
	struct sf_event *e = event_reserve(SF_ACCEPT, bpf_ktime_get_boot_ns());
	if (!e)
		return;
	event_set_owner(e, cur);
	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (lsk)
		e->listener_cookie = BPF_CORE_READ(lsk, __sk_common.skc_cookie.counter);
	e->protocol = IPPROTO_TCP;
	addrs_from_sock(e, sk, family);
	if (cfg_enforce) {
		/* Decided in socket lookup, with the listener's owner as the
		 * process; recomputed here the same way, uncounted, to name the
		 * verdict on the event. */
		struct sf_decision d = {};
		struct sf_subject sub = {};
		subject_from_event(&sub, e, SF_OP_ACCEPT);
		__u64 netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
		struct sf_listener *l = listener_find(netns, sub.local_addr, sub.local_port, sub.ipv6);
		if (l) {
			subject_set_owner(&sub, &l->owner);
			decide(&sub, &d, 0, l);
		} else {
			decide(&sub, &d, 0, NULL);
		}
		event_set_decision(e, &d);
	}
	/* The key from the stack: before 6.2 (Debian 12's 6.1) a map key may
	 * not point into ring-buffer memory. */
	__u64 cookie = e->cookie;
	if (bpf_map_update_elem(&accept_owner, &cookie, cur, BPF_ANY))
		count(SF_CNT_ACCEPTED_FULL);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int accept_exit(struct sys_exit_ctx *ctx)
{
	if (ctx->ret < 0 || !in_watched_cgroup())
		return 0;
	unsigned short family;
	struct sock *sk = tcp_sock_at(ctx->ret, &family);
	if (!sk)
		return 0;
	struct sf_proc cur;
	owner_from_current(&cur);
	report_accept(sk, family, sock_from_fd(syscall_arg0()), &cur);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sf_exit_accept(struct sys_exit_ctx *ctx) { return accept_exit(ctx); }
SEC("tracepoint/syscalls/sys_exit_accept4")
int sf_exit_accept4(struct sys_exit_ctx *ctx) { return accept_exit(ctx); }

/* A successful connect() of the UDP socket `sk` by `cur`, whichever way it
 * was made (64- or 32-bit connect(), io_uring). TCP connects are reported by
 * sockops, which also sees connects that do not come from connect() (TCP
 * fast open). */
static __always_inline void report_udp_connect(struct sock *sk, const struct sf_proc *cur)
{
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return;
	unsigned short family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	struct sf_event *e = event_reserve(SF_CONNECT, bpf_ktime_get_boot_ns());
	if (!e)
		return;
	event_set_owner(e, cur);
	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	e->protocol = IPPROTO_UDP;
	addrs_from_sock(e, sk, family);
	if (e->remote_port == 0) { /* connect(AF_UNSPEC): a disconnect */
		bpf_ringbuf_discard(e, 0);
		return;
	}
	if (cfg_enforce) {
		/* Decided (and counted) in connect4/6; recomputed to name it. */
		struct sf_decision d = {};
		struct sf_subject sub = {};
		subject_from_event(&sub, e, SF_OP_CONNECT);
		sub.has_local = 0;
		subject_set_owner(&sub, cur);
		decide(&sub, &d, 0, NULL);
		event_set_decision(e, &d);
	}
	remember_udp(e);
	bpf_ringbuf_submit(e, 0);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sf_exit_connect(struct sys_exit_ctx *ctx)
{
	if (ctx->ret != 0 || !in_watched_cgroup())
		return 0;
	struct sock *sk = sock_from_fd(syscall_arg0());
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	struct sf_proc cur;
	owner_from_current(&cur);
	report_udp_connect(sk, &cur);
	return 0;
}

#endif
