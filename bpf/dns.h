/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * DNS answers, read as they arrive: a cgroup_skb/ingress program sees each
 * packet delivered to a socket of the watched cgroup BEFORE it is queued to
 * that socket, i.e. before the application can read it. For a DNS answer
 * (UDP from port 53, or a TCP segment from port 53 that holds a whole
 * message) with A/AAAA records, it writes one sf_dns_answer to the event
 * ring: the question name (what the process asked; every address in the
 * answer section belongs to it, whether through a CNAME chain or not), the
 * addresses with their TTLs, the receiving socket's owner and network
 * namespace. User space keeps the address -> name table from these.
 *
 * It never drops a packet (always returns 1). Parsing goes through
 * bpf_skb_load_bytes() (the kernel checks every offset against the packet),
 * with bounded loops: at most SF_DNS_ANSWERS records, names of at most
 * SF_DNS_LABELS labels; anything else ends the parse. Helpers used: all in
 * Linux 6.1 for cgroup_skb (skb_load_bytes, sk_fullsock, sk_storage_get,
 * skc_to_tcp_sock, ringbuf); no bpf_get_netns_cookie (not in cgroup_skb before 6.15): the
 * namespace comes from the socket's owner storage (sock_create).
 */
#ifndef SOCKFILTER_DNS_H
#define SOCKFILTER_DNS_H

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define DNS_PORT 53
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define SF_DNS_ANSWERS 16
#define SF_DNS_LABELS 32

struct dns_header {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};

struct dns_rr {
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlength;
} __attribute__((packed));

/* Where the DNS message of a packet from port 53 starts and ends (offsets
 * from the IP header); 0 when the packet is not one. */
static __always_inline __u32 dns_message(struct __sk_buff *skb, __u32 proto, __u32 *end)
{
	__u32 l4;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 ip[20];
		if (bpf_skb_load_bytes(skb, 0, ip, sizeof(ip)))
			return 0;
		/* (fragments reach a socket reassembled) */
		if (ip[9] != proto)
			return 0;
		l4 = (ip[0] & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u8 nexthdr;
		if (bpf_skb_load_bytes(skb, 6, &nexthdr, 1) || nexthdr != proto)
			return 0; /* extension headers: not followed */
		l4 = 40;
	} else {
		return 0;
	}
	__be16 sport;
	if (bpf_skb_load_bytes(skb, l4, &sport, 2) || sport != bpf_htons(DNS_PORT))
		return 0;
	if (proto == IPPROTO_UDP) {
		*end = skb->len;
		return l4 + 8;
	}
	/* TCP: data offset, then a 2-byte length before each message; only a
	 * segment that starts with a whole message is read. */
	__u8 doff;
	__be16 msglen;
	if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1))
		return 0;
	__u32 off = l4 + (doff >> 4) * 4;
	if (bpf_skb_load_bytes(skb, off, &msglen, 2))
		return 0;
	*end = off + 2 + bpf_ntohs(msglen);
	if (*end > skb->len)
		return 0;
	return off + 2;
}

/* The offset just past the name at `p` (labels, ending in the root label
 * or a compression pointer); 0 when it is longer than SF_DNS_LABELS
 * labels or runs past the packet. A global function, verified once (inlined
 * in the loop over records, the verifier would walk it once per record). */
__attribute__((noinline)) int sf_dns_skip_name(struct __sk_buff *skb, __u32 p)
{
	if (!skb)
		return 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < SF_DNS_LABELS; i++) {
		__u8 len;
		if (bpf_skb_load_bytes(skb, p, &len, 1))
			return 0;
		if ((len & 0xc0) == 0xc0)
			return (p + 2) & 0xffff;
		if (len == 0)
			return (p + 1) & 0xffff;
		if (len & 0xc0)
			return 0; /* reserved label types */
		/* Masked (a packet is shorter anyway) so that the verifier
		 * sees the same range on every pass and prunes. */
		p = (p + len + 1) & 0xffff;
	}
	return 0;
}

/* The question name into a->name (wire format); returns its length
 * without the root label, 0 if it is not a plain name. */
static __always_inline __u32 dns_question(struct __sk_buff *skb, __u32 off, __u32 end,
					   struct sf_dns_answer *a)
{
	if (end <= off)
		return 0;
	__u32 n = end - off;
	if (n > SF_DNS_NAME_LEN)
		n = SF_DNS_NAME_LEN;
	/* [1, SF_DNS_NAME_LEN] in a form the verifier follows */
	n = ((n - 1) & (SF_DNS_NAME_LEN - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, a->name, n))
		return 0;
	__u32 pos = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < SF_DNS_LABELS; i++) {
		if (pos >= n)
			return 0;
		__u8 len = a->name[pos & (SF_DNS_NAME_LEN - 1)];
		if (len == 0)
			return pos;
		if (len & 0xc0)
			return 0; /* a question is never compressed */
		pos = (pos + len + 1) & 0x1ff;
	}
	return 0;
}

/* The A and AAAA records of the answer section at `p` into `a`. */
static __always_inline void dns_addresses(struct __sk_buff *skb, __u32 p, __u32 end, __u32 ancount,
					  struct sf_dns_answer *a)
{
	__u32 n = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < SF_DNS_ANSWERS; i++) {
		if (i >= ancount || n >= SF_DNS_ADDRS)
			break;
		p = sf_dns_skip_name(skb, p) & 0xffff;
		if (!p)
			break;
		struct dns_rr rr;
		if (bpf_skb_load_bytes(skb, p, &rr, sizeof(rr)))
			break;
		p = (p + sizeof(rr)) & 0xffff;
		__u16 type = bpf_ntohs(rr.type), rdlen = bpf_ntohs(rr.rdlength);
		if (p + rdlen > end)
			break;
		if (bpf_ntohs(rr.class) == DNS_CLASS_IN) {
			__u32 k = n & (SF_DNS_ADDRS - 1);
			if (type == DNS_TYPE_A && rdlen == 4) {
				__builtin_memset(a->addr[k], 0, 10);
				a->addr[k][10] = 0xff;
				a->addr[k][11] = 0xff;
				if (bpf_skb_load_bytes(skb, p, &a->addr[k][12], 4))
					break;
				a->family[k] = 4;
				a->ttl[k] = bpf_ntohl(rr.ttl);
				n++;
			} else if (type == DNS_TYPE_AAAA && rdlen == 16) {
				if (bpf_skb_load_bytes(skb, p, a->addr[k], 16))
					break;
				a->family[k] = 6;
				a->ttl[k] = bpf_ntohl(rr.ttl);
				n++;
			}
		}
		p = (p + rdlen) & 0xffff;
	}
	a->naddrs = n;
}

/* Room for a pattern key off the stack (the parser and sf_dns_learn
 * together would exceed the 512-byte stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sf_host_key);
} dns_key SEC(".maps");

/* The key of the suffix of the question at packet offset `off`, `len`
 * bytes, in `k` (k->len 0 if it could not be read). Global: verified once. */
__attribute__((noinline)) int sf_dns_host_key(struct __sk_buff *skb, __u32 off, __u32 len,
					       __u32 below, struct sf_host_key *k)
{
	if (!skb || !k)
		return 0;
	__builtin_memset(k, 0, sizeof(*k));
	k->below = below;
	k->len = len;
	if (len < 1 || len > SF_HOST_LEN ||
	    bpf_skb_load_bytes(skb, off, k->name, ((len - 1) & (SF_HOST_LEN - 1)) + 1)) {
		k->len = 0;
		return 0;
	}
	/* Names are case-insensitive and resolvers may randomize case:
	 * lowercase 8 bytes at a time without branches (a branch per byte
	 * multiplies the verifier's work). Label length bytes (at most 63)
	 * are never letters. */
	__u64 *w = (__u64 *)k->name;
#pragma unroll
	for (int i = 0; i < SF_HOST_LEN / 8; i++) {
		__u64 x = w[i], low = x & 0x7f7f7f7f7f7f7f7fULL;
		__u64 ge_a = low + 0x3f3f3f3f3f3f3f3fULL;  /* top bit: byte >= 'A' */
		__u64 gt_z = low + 0x2525252525252525ULL;  /* top bit: byte > 'Z' */
		__u64 upper = ge_a & ~gt_z & ~x & 0x8080808080808080ULL;
		w[i] = x | (upper >> 2);
	}
	return 0;
}

/* Under enforce, with remote_host rules: the addresses of the answer get
 * the rules their name matches (dns_addrs), per policy slot, before the
 * answer is queued to the socket, so that a connect right after it is
 * decided by name. The longest pattern that matches decides (the compiler
 * gives it every shorter `*.` pattern's rules too): the exact name first,
 * then `*.` patterns from the longest suffix to the shortest. `qoff`: the
 * question's offset in the packet. A global function: the verifier checks
 * it once, not once per path of the parser that calls it. */
__attribute__((noinline)) int sf_dns_learn(struct __sk_buff *skb, __u32 qoff,
					    const struct sf_dns_answer *a)
{
	if (!skb || !a)
		return 0;
	__u32 s0 = 0, s1 = 1;
	struct sf_policy_meta *m0 = bpf_map_lookup_elem(&pol_meta, &s0);
	struct sf_policy_meta *m1 = bpf_map_lookup_elem(&pol_meta, &s1);
	if (!m0 || !m1)
		return 0;
	int use0 = m0->dims_used & (1 << SF_DIM_REMOTE_HOST);
	int use1 = m1->dims_used & (1 << SF_DIM_REMOTE_HOST);
	if (!use0 && !use1)
		return 0;
	__u32 qlen = a->name_len;
	struct sf_dns_addr v = {};
	int found0 = !use0, found1 = !use1;
	struct sf_host_key *k = bpf_map_lookup_elem(&dns_key, &s0);
	if (!k)
		return 0;
	__u32 pos = 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i < SF_DNS_LABELS; i++) {
		if (pos >= qlen)
			break;
		__u32 len = qlen - pos;
		if (len <= SF_HOST_LEN) {
			sf_dns_host_key(skb, qoff + pos, len, i > 0, k);
			if (!k->len)
				return 0;
			if (!found0) {
				k->slot = 0;
				__u32 *id = bpf_map_lookup_elem(&pol_hosts, k);
				if (id) {
					v.id[0] = *id;
					v.generation[0] = m0->generation;
					found0 = 2;
				}
			}
			if (!found1) {
				k->slot = 1;
				__u32 *id = bpf_map_lookup_elem(&pol_hosts, k);
				if (id) {
					v.id[1] = *id;
					v.generation[1] = m1->generation;
					found1 = 2;
				}
			}
			if (found0 && found1)
				break;
		}
		pos = (pos + a->name[pos & (SF_DNS_NAME_LEN - 1)] + 1) & 0x1ff;
	}
	if (found0 != 2 && found1 != 2)
		return 0; /* no pattern names it: the address stays unnamed for policy */
	__u64 now = bpf_ktime_get_boot_ns();
	struct sf_dns_addr_key key = { .netns = a->netns };
#pragma clang loop unroll(disable)
	for (int i = 0; i < SF_DNS_ADDRS; i++) {
		if (i >= a->naddrs)
			break;
		__builtin_memcpy(key.addr, a->addr[i], 16);
		__u32 ttl = a->ttl[i];
		v.expires_ns = now + (__u64)(ttl ? ttl : 1) * 1000000000ULL;
		bpf_map_update_elem(&dns_addrs, &key, &v, BPF_ANY);
	}
	return 0;
}

SEC("cgroup_skb/ingress")
int sf_dns_ingress(struct __sk_buff *skb)
{
	struct bpf_sock *skc = skb->sk;
	if (!skc)
		return 1;
	struct bpf_sock *sk = bpf_sk_fullsock(skc);
	if (!sk)
		return 1;
	__u32 proto = sk->protocol;
	if (proto == IPPROTO_TCP) {
		/* TCP data on every connection passes here: only a connection
		 * to port 53 is looked at further. */
		if (sk->dst_port != bpf_htons(DNS_PORT))
			return 1;
	} else if (proto != IPPROTO_UDP) {
		return 1;
	}
	__u32 end = 0;
	__u32 off = dns_message(skb, proto, &end);
	if (!off)
		return 1;
	struct dns_header h;
	if (bpf_skb_load_bytes(skb, off, &h, sizeof(h)))
		return 1;
	__u16 flags = bpf_ntohs(h.flags);
	/* an answer (QR), standard query, no error, one question, records */
	if (!(flags & 0x8000) || (flags & 0x7800) || (flags & 0x000f) ||
	    bpf_ntohs(h.qdcount) != 1 || h.ancount == 0)
		return 1;

	struct sf_dns_answer *a = bpf_ringbuf_reserve(&events, sizeof(*a), 0);
	if (!a) {
		count(SF_CNT_DNS_LOST);
		return 1;
	}
	__builtin_memset(a, 0, __builtin_offsetof(struct sf_dns_answer, name));
	a->magic = SF_DNS_MAGIC;
	a->ts_ns = bpf_ktime_get_boot_ns();
	__u32 qlen = dns_question(skb, off + sizeof(h), end, a);
	if (!qlen) {
		bpf_ringbuf_discard(a, 0);
		return 1;
	}
	a->name_len = qlen;
	/* root label, QTYPE, QCLASS */
	dns_addresses(skb, off + sizeof(h) + qlen + 5, end, bpf_ntohs(h.ancount), a);
	if (!a->naddrs) {
		bpf_ringbuf_discard(a, 0);
		return 1;
	}
	struct sf_owner *o = bpf_sk_storage_get(&sk_owner, sk, 0, 0);
	if (o) {
		a->pid = o->proc.pid;
		a->netns = o->netns;
	}
	if (!a->netns && proto == IPPROTO_TCP) {
		/* A TCP socket's storage may not carry the namespace; its
		 * tcp_sock (a BTF pointer, plain loads) does. */
		struct sock *ks = (struct sock *)bpf_skc_to_tcp_sock(sk);
		if (ks)
			a->netns = ks->__sk_common.skc_net.net->ns.inum;
	}
	if (cfg_enforce)
		sf_dns_learn(skb, off + sizeof(h), a);
	bpf_ringbuf_submit(a, 0);
	return 1;
}

#endif
