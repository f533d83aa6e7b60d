/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Enforcement hooks, attached by `sockfilter enforce`: bind, connect and
 * UDP sendmsg decided before the kernel acts (EPERM; sendmsg is also
 * attached by watch, to report new UDP destinations), and socket lookup,
 * which refuses inbound connections to denied listeners or from denied peers.
 */
#ifndef SOCKFILTER_ENFORCE_H
#define SOCKFILTER_ENFORCE_H

/* The protocol the policy decides the call's socket under (common.h). */
static __always_inline __u16 sock_addr_protocol(struct bpf_sock_addr *ctx)
{
	return policy_protocol(ctx->protocol, ctx->type);
}

static __always_inline void subject_from_addr(struct sf_subject *sub, struct bpf_sock_addr *ctx,
					      const int v6, int remote)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	sub->udp = sock_addr_protocol(ctx) == IPPROTO_UDP;
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
	e->protocol = sock_addr_protocol(ctx);
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

/* The decision for a bind4/6, connect4/6 or sendmsg4/6 call by the calling
 * process: the address is the one the caller passed (local for bind, remote
 * otherwise). */
static __always_inline void decide_sock_addr(struct bpf_sock_addr *ctx, const int v6, __u8 op,
					     int remote, struct sf_proc *cur,
					     struct sf_subject *sub, struct sf_decision *d, int count)
{
	owner_from_current(cur);
	sub->op = op;
	subject_from_addr(sub, ctx, v6, remote);
	subject_set_owner(sub, cur);
	decide(sub, d, count, NULL);
	d->by = SF_BY_CGROUP;
}

/* The event for such a call, written by the hook that decided it. */
static __always_inline void report_sock_addr(__u32 kind, struct bpf_sock_addr *ctx, const int v6,
					     int remote, const struct sf_proc *cur,
					     const struct sf_subject *sub, const struct sf_decision *d)
{
	struct sf_event *e = event_reserve(kind, bpf_ktime_get_boot_ns());
	if (!e)
		return;
	event_set_owner(e, cur);
	event_set_decision(e, d);
	addr_event(e, ctx, v6, remote, sub);
	bpf_ringbuf_submit(e, 0);
}

/* bind() to an explicit port: decided before the port is taken. An allowed
 * bind is reported by post_bind, which decides again on the address the
 * kernel actually bound: nothing decided here is carried to a later hook,
 * so a bind the kernel then fails (EADDRINUSE) leaves no allow behind. */
static __always_inline int bind_hook(struct bpf_sock_addr *ctx, const int v6)
{
	if (!cfg_enforce || !sock_addr_protocol(ctx))
		return 1;
	if (bpf_ntohs((__u16)ctx->user_port) == 0)
		return 1; /* the kernel picks the port: decided in post_bind */
	struct sf_proc cur;
	struct sf_subject sub = {};
	struct sf_decision d = {};
	/* Counted only when it denies: an allowed bind is counted by post_bind. */
	decide_sock_addr(ctx, v6, SF_OP_BIND, 0, &cur, &sub, &d, 0);
	if (d.verdict != SF_V_DENY)
		return 1;
	count_hit(&d);
	report_sock_addr(SF_BIND, ctx, v6, 0, &cur, &sub, &d);
	return 0; /* EPERM */
}

SEC("cgroup/bind4")
int sf_bind4(struct bpf_sock_addr *ctx) { return bind_hook(ctx, 0); }
SEC("cgroup/bind6")
int sf_bind6(struct bpf_sock_addr *ctx) { return bind_hook(ctx, 1); }

/* connect(), TCP and UDP (and what the policy decides as them): refused with EPERM before anything is sent. */
static __always_inline int connect_hook(struct bpf_sock_addr *ctx, const int v6)
{
	if (!cfg_enforce || !sock_addr_protocol(ctx))
		return 1;
	struct sf_proc cur;
	struct sf_subject sub = {};
	struct sf_decision d = {};
	decide_sock_addr(ctx, v6, SF_OP_CONNECT, 1, &cur, &sub, &d, 1);
	if (d.verdict != SF_V_DENY) {
		/* Every TCP connect passes here first (also TCP fast open), so
		 * this overwrites whatever an earlier, failed connect left. */
		if (ctx->protocol == IPPROTO_TCP)
			set_pending(owner_storage(ctx->sk, 1), &d); /* reported by TCP_CONNECT_CB */
		return 1;
	}
	report_sock_addr(SF_CONNECT, ctx, v6, 1, &cur, &sub, &d);
	return 0;
}

SEC("cgroup/connect4")
int sf_connect4(struct bpf_sock_addr *ctx) { return connect_hook(ctx, 0); }
SEC("cgroup/connect6")
int sf_connect6(struct bpf_sock_addr *ctx) { return connect_hook(ctx, 1); }

/* sendto()/sendmsg()/sendmmsg() with a destination on a UDP socket, from
 * any path (also 32-bit calls and io_uring sends; UDP-Lite too): decided per datagram
 * under enforce; reported as a `connect` when the destination is new for
 * the socket (not one of the last four it sent to), under watch too. */
static __always_inline int sendmsg_hook(struct bpf_sock_addr *ctx, const int v6)
{
	if (sock_addr_protocol(ctx) != IPPROTO_UDP)
		return 1;
	struct sf_proc cur;
	struct sf_subject sub = {};
	struct sf_decision d = {};
	if (cfg_enforce) {
		decide_sock_addr(ctx, v6, SF_OP_CONNECT, 1, &cur, &sub, &d, 1);
	} else {
		sub.op = SF_OP_CONNECT;
		subject_from_addr(&sub, ctx, v6, 1);
	}
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
	if (!cfg_enforce)
		owner_from_current(&cur); /* read only for a datagram that is reported */
	report_sock_addr(SF_CONNECT, ctx, v6, 1, &cur, &sub, &d);
	return allow;
}

SEC("cgroup/sendmsg4")
int sf_sendmsg4(struct bpf_sock_addr *ctx) { return sendmsg_hook(ctx, 0); }
SEC("cgroup/sendmsg6")
int sf_sendmsg6(struct bpf_sock_addr *ctx) { return sendmsg_hook(ctx, 1); }

/* Socket lookup for a new inbound TCP connection, per network namespace,
 * before any socket is chosen: refuse it (the client gets a reset:
 * ECONNREFUSED) when its listener is denied, or when the policy denies the
 * accept, decided with the listener's owner as the process. */
SEC("sk_lookup")
int sf_sk_lookup(struct bpf_sk_lookup *ctx)
{
	/* Taken first, on every path: a tag left behind would be read by a
	 * nested lookup of another namespace. */
	__u64 netns = lookup_netns_take();
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
	struct sf_listener *l = listener_find(netns, sub.local_addr, sub.local_port, sub.ipv6);
	if (l && l->denied)
		return SK_DROP;
	struct sf_decision d = {};
	if (l) {
		subject_set_owner(&sub, &l->owner);
		decide(&sub, &d, 1, l);
	} else {
		if (cfg_filter_cgroup)
			return SK_PASS; /* not a listener of the watched cgroup */
		decide(&sub, &d, 1, NULL); /* no owner known: rules with process fields do not match */
	}
	if (d.verdict != SF_V_DENY)
		return SK_PASS;
	d.by = SF_BY_SK_LOOKUP;
	report_refused(ctx, &sub, &d, l);
	return SK_DROP;
}

#endif
