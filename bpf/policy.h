/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Policy decisions in the kernel (sockfilter enforce). The policy compiler in
 * crates/sockfilter/src/enforce/compile.rs fills these maps; sockfilter.h
 * explains the bitmap scheme. Included once, by sockfilter.bpf.c, after process.h.
 */
#ifndef SOCKFILTER_POLICY_H
#define SOCKFILTER_POLICY_H

/* 1 when a policy is being enforced (set before load). */
const volatile __u8 cfg_enforce = 0;

/* 1 when enforce decides bind, connect and listen in BPF LSM hooks (lsm.h):
 * `bpf` is an active LSM on this kernel (set before load). */
const volatile __u8 cfg_lsm = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pol_active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct sf_policy_meta);
} pol_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 17);
	__type(key, struct sf_bitmap_key);
	__type(value, struct sf_bitmap);
} pol_bitmaps SEC(".maps");

/* slot * 16 + op * 4 + udp * 2 + ipv6 -> bitmap id */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u32);
} pol_kind SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_ip_key);
	__type(value, __u32);
} pol_local_ip SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_ip_key);
	__type(value, __u32);
} pol_remote_ip SEC(".maps");

/* slot * 2 + (0 local, 1 remote) -> bitmap id of each port */
struct sf_port_table { __u32 id[65536]; };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct sf_port_table);
} pol_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_exe_key);
	__type(value, __u32);
} pol_exe SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_comm_key);
	__type(value, __u32);
} pol_comm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_u64_key);
	__type(value, __u32);
} pol_uid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_u64_key);
	__type(value, __u32);
} pol_cgroup SEC(".maps");

/* remote_host patterns -> bitmap id (compile.rs). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct sf_host_key);
	__type(value, __u32);
} pol_hosts SEC(".maps");

/* Addresses learned from DNS answers whose name a remote_host pattern
 * matches (dns.h writes them before the answer reaches the application).
 * An LRU: bounded, the least recently used address goes first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sf_dns_addr_key);
	__type(value, struct sf_dns_addr);
} dns_addrs SEC(".maps");

/* slot * SF_MAX_RULES + rule -> enum sf_verdict */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * SF_MAX_RULES);
	__type(key, __u32);
	__type(value, __u32);
} pol_verdicts SEC(".maps");

/* slot * (SF_MAX_RULES + 1) + rule -> matches; index SF_MAX_RULES: the default */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * (SF_MAX_RULES + 1));
	__type(key, __u32);
	__type(value, __u64);
} pol_hits SEC(".maps");

/* TCP listeners, registered at listen() (sockops) and removed when they
 * close: socket lookup finds here whether a connection's listener is denied
 * and who owns it, since it runs before any socket is chosen and with no
 * process. With --cgroup only the subtree's listeners are registered, and
 * socket lookup decides only for them. Not an LRU: when full, a listener
 * is not registered and SF_CNT_LISTENERS_FULL counts it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct sf_listen_key);
	__type(value, struct sf_listener);
} listeners SEC(".maps");

/* What a decision is about. Addresses are normalized to IPv6 form. */
struct sf_subject {
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u8 op;               /* enum sf_op */
	__u8 udp;
	__u8 ipv6;             /* the socket's family */
	__u8 has_local;
	__u8 has_remote;
	__u8 has_owner;
	__u8 _pad[2];
	__u32 uid;
	__u32 pid;
	char comm[SF_COMM_LEN];
};

struct sf_decision {
	__u32 verdict;         /* enum sf_verdict */
	__u32 rule;            /* rule index + 1; 0 = default */
	__u32 slot;
	__u32 by;              /* enum sf_enforced_by, set by the hook that acts on a deny */
};

static __always_inline __u32 lpm_id(void *map, __u32 slot, __u8 tag, const __u8 *addr, __u32 wild)
{
	struct sf_ip_key k = { .prefixlen = 16 + 128, .slot = slot, .tag = tag };
	__builtin_memcpy(k.addr, addr, 16);
	__u32 *v = bpf_map_lookup_elem(map, &k);
	return v ? *v : wild;
}

static __always_inline __u64 ctz64(__u64 x)
{
	/* x has one bit set: de Bruijn multiply, no loop, no ctz instruction. */
	static const __u8 table[64] = {
		0, 1, 2, 53, 3, 7, 54, 27, 4, 38, 41, 8, 34, 55, 48, 28,
		62, 5, 39, 46, 44, 42, 22, 9, 24, 35, 59, 56, 49, 18, 29, 11,
		63, 52, 6, 26, 37, 40, 33, 47, 61, 45, 43, 21, 23, 58, 17, 10,
		51, 25, 36, 32, 60, 20, 57, 16, 50, 31, 19, 15, 30, 14, 13, 12,
	};
	return table[((x * 0x022fdd63cc95386dULL) >> 58) & 63];
}

/* One more match for the rule (or the default) that made decision `d`. */
static __always_inline void count_hit(const struct sf_decision *d)
{
	__u32 rule = d->rule ? d->rule - 1 : SF_MAX_RULES;
	__u32 hk = d->slot * (SF_MAX_RULES + 1) + rule;
	__u64 *hits = bpf_map_lookup_elem(&pol_hits, &hk);
	if (hits)
		*hits += 1;
}

/* The decision for `s` by the active policy. With has_owner, exe comes from
 * the owner's pid, comm and uid from `s`, and the cgroup from listener `l`
 * when given (socket lookup: the listener's owner), else from the calling
 * task. */
static __always_inline void decide(const struct sf_subject *s, struct sf_decision *d, int count,
				   const struct sf_listener *l)
{
	__u32 zero = 0;
	d->verdict = SF_V_NONE;
	d->rule = 0;
	d->slot = 0;
	d->by = SF_BY_NONE;
	if (!cfg_enforce)
		return;
	__u32 *active = bpf_map_lookup_elem(&pol_active, &zero);
	if (!active)
		return;
	__u32 slot = *active & 1;
	d->slot = slot;
	struct sf_policy_meta *m = bpf_map_lookup_elem(&pol_meta, &slot);
	if (!m)
		return;
	d->verdict = m->default_verdict;

	__u32 ids[SF_DIMS];
	__u32 kind = slot * 16 + s->op * 4 + (s->udp ? 2 : 0) + (s->ipv6 ? 1 : 0);
	__u32 *kid = bpf_map_lookup_elem(&pol_kind, &kind);
	ids[SF_DIM_KIND] = kid ? *kid : m->wild[SF_DIM_KIND];
	ids[SF_DIM_LOCAL_IP] = m->wild[SF_DIM_LOCAL_IP];
	ids[SF_DIM_REMOTE_IP] = m->wild[SF_DIM_REMOTE_IP];
	ids[SF_DIM_LOCAL_PORT] = m->wild[SF_DIM_LOCAL_PORT];
	ids[SF_DIM_REMOTE_PORT] = m->wild[SF_DIM_REMOTE_PORT];
	ids[SF_DIM_EXE] = m->wild[SF_DIM_EXE];
	ids[SF_DIM_COMM] = m->wild[SF_DIM_COMM];
	ids[SF_DIM_UID] = m->wild[SF_DIM_UID];
	ids[SF_DIM_CGROUP] = m->wild[SF_DIM_CGROUP];
	ids[SF_DIM_REMOTE_HOST] = m->wild[SF_DIM_REMOTE_HOST];
	__u32 used = m->dims_used;

	/* The LPM tag is the socket's family: an IPv6 socket's v4-mapped
	 * address is tag 6; the compiler puts IPv4 CIDRs under both tags. */
	__u8 tag = s->ipv6 ? 6 : 4;
	if (s->has_local && (used & (1 << SF_DIM_LOCAL_IP)))
		ids[SF_DIM_LOCAL_IP] = lpm_id(&pol_local_ip, slot, tag, s->local_addr, m->wild[SF_DIM_LOCAL_IP]);
	if (s->has_remote && (used & (1 << SF_DIM_REMOTE_IP)))
		ids[SF_DIM_REMOTE_IP] = lpm_id(&pol_remote_ip, slot, tag, s->remote_addr, m->wild[SF_DIM_REMOTE_IP]);
	/* Only policies with remote_host rules pay for this lookup. */
	if (s->has_remote && s->op == SF_OP_CONNECT && (used & (1 << SF_DIM_REMOTE_HOST))) {
		/* Only connect gets here, always in the caller's context (where
		 * the task helper is allowed; socket lookup decides accepts). */
		struct sf_dns_addr_key k = { .netns = current_netns() };
		__builtin_memcpy(k.addr, s->remote_addr, 16);
		struct sf_dns_addr *v = bpf_map_lookup_elem(&dns_addrs, &k);
		if (!v) {
			k.netns = 0; /* learned from a socket of unknown namespace */
			v = bpf_map_lookup_elem(&dns_addrs, &k);
		}
		/* slot & 1: the verifier may have lost slot's bound (0 or 1)
		 * when it was spilled; Debian's 6.12 refused the unmasked index. */
		if (v && v->generation[slot & 1] == m->generation &&
		    v->expires_ns > bpf_ktime_get_boot_ns())
			ids[SF_DIM_REMOTE_HOST] = v->id[slot & 1];
	}
	if (used & ((1 << SF_DIM_LOCAL_PORT) | (1 << SF_DIM_REMOTE_PORT))) {
		__u32 k = slot * 2;
		struct sf_port_table *t = bpf_map_lookup_elem(&pol_ports, &k);
		if (t && s->has_local)
			ids[SF_DIM_LOCAL_PORT] = t->id[s->local_port & 0xffff];
		k = slot * 2 + 1;
		t = bpf_map_lookup_elem(&pol_ports, &k);
		if (t && s->has_remote)
			ids[SF_DIM_REMOTE_PORT] = t->id[s->remote_port & 0xffff];
	}
	if (s->has_owner && (used & (1 << SF_DIM_EXE))) {
		/* By the file (device and inode), not the path that led to it. */
		struct sf_exe *x = bpf_map_lookup_elem(&exe_by_pid, &s->pid);
		if (x && x->ino) {
			struct sf_exe_key k = { .slot = slot, .dev = x->dev, .ino = x->ino };
			__u32 *v = bpf_map_lookup_elem(&pol_exe, &k);
			if (v)
				ids[SF_DIM_EXE] = *v;
		}
	}
	if (s->has_owner && (used & (1 << SF_DIM_COMM))) {
		struct sf_comm_key k = { .slot = slot };
		__builtin_memcpy(k.comm, s->comm, SF_COMM_LEN);
		__u32 *v = bpf_map_lookup_elem(&pol_comm, &k);
		if (v)
			ids[SF_DIM_COMM] = *v;
	}
	if (s->has_owner && (used & (1 << SF_DIM_UID))) {
		struct sf_u64_key k = { .slot = slot, .value = s->uid };
		__u32 *v = bpf_map_lookup_elem(&pol_uid, &k);
		if (v)
			ids[SF_DIM_UID] = *v;
	}
	if (s->has_owner && (used & (1 << SF_DIM_CGROUP))) {
		/* The deepest ancestor (or the cgroup itself) that a rule names:
		 * of the listener's owner when deciding for a listener, else of
		 * the calling task. */
		if (l) {
			for (int i = 0; i < SF_CGROUP_DEPTH; i++) {
				if (i >= l->ncgroups)
					break;
				struct sf_u64_key k = { .slot = slot, .value = l->cgroups[i] };
				__u32 *v = bpf_map_lookup_elem(&pol_cgroup, &k);
				if (v) {
					ids[SF_DIM_CGROUP] = *v;
					break;
				}
			}
		} else {
			struct cgroup *cg = current_cgroup();
			int level = cg->level;
			for (int i = 0; i < SF_CGROUP_DEPTH; i++) {
				if (level - i < 0)
					break;
				struct sf_u64_key k = { .slot = slot, .value = cgroup_ancestor_id(cg, level - i) };
				__u32 *v = bpf_map_lookup_elem(&pol_cgroup, &k);
				if (v) {
					ids[SF_DIM_CGROUP] = *v;
					break;
				}
			}
		}
	}

	struct sf_bitmap *b[SF_DIMS];
	/* remote_host is the last dimension; without name rules its bitmap
	 * would be all rules, so the kind's stands in for it (ANDing a bitmap
	 * twice changes nothing) and the policy pays no lookup for it. */
#pragma unroll
	for (int i = 0; i < SF_DIM_REMOTE_HOST; i++) {
		struct sf_bitmap_key k = { .slot = slot, .id = ids[i] };
		b[i] = bpf_map_lookup_elem(&pol_bitmaps, &k);
		if (!b[i])
			return; /* an incomplete policy: the default decides */
	}
	b[SF_DIM_REMOTE_HOST] = b[SF_DIM_KIND];
	if (used & (1 << SF_DIM_REMOTE_HOST)) {
		struct sf_bitmap_key k = { .slot = slot, .id = ids[SF_DIM_REMOTE_HOST] };
		b[SF_DIM_REMOTE_HOST] = bpf_map_lookup_elem(&pol_bitmaps, &k);
		if (!b[SF_DIM_REMOTE_HOST])
			return;
	}

	__u32 words = m->words;
	for (int si = 0; si < SF_SUMMARY; si++) {
		if (si * 64 >= words)
			break;
		__u64 x = b[0]->summary[si] & b[1]->summary[si] & b[2]->summary[si] &
			  b[3]->summary[si] & b[4]->summary[si] & b[5]->summary[si] &
			  b[6]->summary[si] & b[7]->summary[si] & b[8]->summary[si] &
			  b[9]->summary[si];
		for (int k = 0; k < 64; k++) {
			if (!x)
				break;
			__u64 low = x & -x;
			x &= x - 1;
			__u32 w = (si * 64 + ctz64(low)) & (SF_WORDS - 1);
			__u64 y = b[0]->words[w] & b[1]->words[w] & b[2]->words[w] &
				  b[3]->words[w] & b[4]->words[w] & b[5]->words[w] &
				  b[6]->words[w] & b[7]->words[w] & b[8]->words[w] &
				  b[9]->words[w];
			if (y) {
				__u32 rule = w * 64 + ctz64(y & -y);
				__u32 vk = slot * SF_MAX_RULES + (rule & (SF_MAX_RULES - 1));
				__u32 *v = bpf_map_lookup_elem(&pol_verdicts, &vk);
				if (v)
					d->verdict = *v;
				d->rule = rule + 1;
				if (count)
					count_hit(d);
				return;
			}
		}
	}
	if (count)
		count_hit(d);
}

static __always_inline void event_set_decision(struct sf_event *e, const struct sf_decision *d)
{
	e->verdict = d->verdict;
	e->rule = d->rule;
	e->policy_slot = d->slot;
	if (d->verdict == SF_V_DENY)
		e->enforced_by = d->by;
}

static __always_inline void subject_set_owner(struct sf_subject *s, const struct sf_proc *o)
{
	s->has_owner = 1;
	s->pid = o->pid;
	s->uid = o->uid;
	__builtin_memcpy(s->comm, o->comm, SF_COMM_LEN);
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

#endif
