/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The listener registry of enforce (map `listeners`, declared in policy.h):
 * every TCP listener is registered at listen() with the process that called
 * it and whether the policy denied it, and removed when it closes. Socket
 * lookup runs before any socket is chosen and with no process, so this is
 * how it knows that a connection's listener is denied (refuse it until user
 * space has destroyed the listener) and whose identity an accept rule with
 * process fields is about (the listener's owner, as NetworkExtension
 * attributes an inbound flow to the listening app).
 */
#ifndef SOCKFILTER_LISTENERS_H
#define SOCKFILTER_LISTENERS_H

/* The listener being registered (too large for the sockops stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_listener);
} listener_scratch SEC(".maps");

/* Rate limit of refused-peer events for connections no registered listener
 * is there for (a port nobody listens on, a listener older than enforce). */
struct sf_refused_bucket {
	__u64 window_ns;
	__u32 reported;
	__u32 suppressed;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_refused_bucket);
} refused_unlisted SEC(".maps");

/* The network namespace a socket lookup runs for. No kernel up to 6.18 lets
 * sk_lookup call bpf_get_netns_cookie() or reach its namespace otherwise, so
 * enforce attaches, ahead of sf_sk_lookup in each namespace, a program of a
 * few instructions loaded for that namespace with its cookie as a constant
 * (crates/sockfilter/src/netns_tag.rs), which stores the cookie here. The
 * programs of one namespace run one after the other on one CPU (the kernel
 * disables migration around them), so sf_sk_lookup reads its own
 * namespace's cookie, and takes it (leaves 0), so that a lookup interrupted
 * between the two programs by a nested one on the same CPU (a lookup in
 * process context, e.g. nft's socket match on output, interrupted by a
 * softirq) finds 0, not the nested lookup's cookie. (Two process-context
 * lookups preempting each other in between could still swap cookies:
 * docs/security.md, limits.) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lookup_netns SEC(".maps");

/* This lookup's namespace cookie, taken from lookup_netns; 0 when unknown
 * (no listener is ever registered under 0: socket lookup then finds none). */
static __always_inline __u64 lookup_netns_take(void)
{
	__u32 zero = 0;
	__u64 *tag = bpf_map_lookup_elem(&lookup_netns, &zero);
	if (!tag)
		return 0;
	__u64 netns = *tag;
	*tag = 0;
	return netns;
}

static __always_inline void listen_key(struct sf_listen_key *k, __u64 netns, const __u8 *addr,
				       __u16 port)
{
	k->netns = netns;
	__builtin_memcpy(k->addr, addr, 16);
	k->port = port;
}

/* Registers listener `sk` (cookie, owner = the calling process) at
 * addr:port; `denied`: the policy refused it. */
static __always_inline void listener_register(struct sock *sk, __u64 cookie,
					      const struct sf_proc *owner, const __u8 *addr,
					      __u16 port, int denied)
{
	__u32 zero = 0;
	struct sf_listener *l = bpf_map_lookup_elem(&listener_scratch, &zero);
	if (!l)
		return;
	__builtin_memset(l, 0, sizeof(*l));
	l->cookie = cookie;
	l->owner = *owner;
	l->ncgroups = current_cgroup_ids(l->cgroups);
	l->netns_inum = sk->__sk_common.skc_net.net->ns.inum;
	l->denied = denied;
	struct sf_listen_key k = {};
	listen_key(&k, sk->__sk_common.skc_net.net->net_cookie, addr, port);
	if (bpf_map_update_elem(&listeners, &k, l, BPF_ANY))
		count(SF_CNT_LISTENERS_FULL);
}

/* Removes listener `sk` (leaving LISTEN) if it is the one registered at its
 * address: an SO_REUSEPORT sibling may have taken the entry over. */
static __always_inline void listener_unregister(struct sock *sk, __u64 cookie, __u16 port)
{
	struct sf_listen_key k = {};
	__u8 addr[16];
	if (sk->__sk_common.skc_family == AF_INET6)
		copy16(addr, sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		v4_mapped(addr, sk->__sk_common.skc_rcv_saddr);
	listen_key(&k, sk->__sk_common.skc_net.net->net_cookie, addr, port);
	struct sf_listener *l = bpf_map_lookup_elem(&listeners, &k);
	if (l && l->cookie == cookie)
		bpf_map_delete_elem(&listeners, &k);
}

/* The listener a connection to addr:port in namespace `netns` reaches: one
 * on that address, or on the wildcard address of its family (an IPv4
 * connection also reaches a dual-stack [::] listener). */
static __always_inline struct sf_listener *listener_find(__u64 netns, const __u8 *addr,
							 __u16 port, int ipv6)
{
	struct sf_listen_key k = {};
	listen_key(&k, netns, addr, port);
	struct sf_listener *l = bpf_map_lookup_elem(&listeners, &k);
	if (l)
		return l;
	__builtin_memset(k.addr, 0, 16);
	if (!ipv6) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		l = bpf_map_lookup_elem(&listeners, &k);
		if (l)
			return l;
		k.addr[10] = 0;
		k.addr[11] = 0;
	}
	return bpf_map_lookup_elem(&listeners, &k);
}

/* Whether a refused-peer event may be written now (at most
 * SF_REFUSED_PER_SEC a second per window); *suppressed: how many were not
 * written since the last one that was. */
static __always_inline int refused_allowed(__u64 now, __u64 *window_ns, __u32 *reported,
					   __u32 *suppressed_count, __u32 *suppressed)
{
	if (now - *window_ns > 1000000000ULL) {
		*window_ns = now;
		*reported = 0;
	}
	if (*reported >= SF_REFUSED_PER_SEC) {
		__sync_fetch_and_add(suppressed_count, 1);
		count(SF_CNT_REFUSED_SUPPRESSED);
		return 0;
	}
	*reported += 1;
	*suppressed = *suppressed_count;
	*suppressed_count = 0;
	return 1;
}

/* An `accept` event with verdict deny for a connection socket lookup
 * refused by policy: local = the destination, remote = the peer, the owner
 * = the listener's. Rate-limited per listener, so that a SYN flood cannot
 * flood the stream; what the limit holds back is counted. */
static __always_inline void report_refused(struct bpf_sk_lookup *ctx,
					   const struct sf_subject *sub,
					   const struct sf_decision *d, struct sf_listener *l)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u32 suppressed = 0;
	if (l) {
		if (!refused_allowed(now, &l->window_ns, &l->reported, &l->suppressed, &suppressed))
			return;
	} else {
		__u32 zero = 0;
		struct sf_refused_bucket *b = bpf_map_lookup_elem(&refused_unlisted, &zero);
		if (!b || !refused_allowed(now, &b->window_ns, &b->reported, &b->suppressed,
					   &suppressed))
			return;
	}
	struct sf_event *e = event_reserve(SF_ACCEPT, now);
	if (!e)
		return;
	if (l) {
		event_set_owner(e, &l->owner);
		e->listener_cookie = l->cookie;
		e->netns = l->netns_inum;
	} else {
		e->flags |= SF_F_OWNER_UNKNOWN;
	}
	event_set_decision(e, d);
	e->suppressed = suppressed;
	e->family = ctx->family;
	e->protocol = IPPROTO_TCP;
	e->local_port = sub->local_port;
	e->remote_port = sub->remote_port;
	if (sub->ipv6) {
		copy16(e->local_addr, sub->local_addr);
		copy16(e->remote_addr, sub->remote_addr);
	} else {
		__builtin_memcpy(e->local_addr, &sub->local_addr[12], 4);
		__builtin_memcpy(e->remote_addr, &sub->remote_addr[12], 4);
	}
	bpf_ringbuf_submit(e, 0);
}

#endif
