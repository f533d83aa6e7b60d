/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * What every part of sockfilter.bpf.c uses: kernel constants, the event ring
 * buffer and its counters, socket-local owner storage, and small copies.
 */
#ifndef SOCKFILTER_COMMON_H
#define SOCKFILTER_COMMON_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_UDPLITE 136
#define IPPROTO_MPTCP 262
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_SEQPACKET 5
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

/* The protocol the policy decides an IP socket under, IPPROTO_TCP or
 * IPPROTO_UDP, and reports it with; 0: not decided (raw sockets). The policy
 * knows only tcp and udp, so every other protocol is mapped rather than left
 * undecided, which would let an unprivileged process bypass enforce with,
 * say, UDP-Lite: MPTCP is TCP, UDP-Lite is UDP, and any other protocol
 * (SCTP, ICMP ping sockets) is decided by its socket type. */
static __always_inline __u16 policy_protocol(__u32 protocol, __u32 type)
{
	if (protocol == IPPROTO_TCP || protocol == IPPROTO_MPTCP)
		return IPPROTO_TCP;
	if (protocol == IPPROTO_UDP || protocol == IPPROTO_UDPLITE)
		return IPPROTO_UDP;
	if (type == SOCK_STREAM || type == SOCK_SEQPACKET)
		return IPPROTO_TCP;
	if (type == SOCK_DGRAM)
		return IPPROTO_UDP;
	return 0;
}

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


/* 16 bytes as two 8-byte loads: an IPv6 address, or a comm (NUL-padded in
 * the kernel by strscpy_pad, so this copies it exactly as a string copy into
 * a zeroed buffer would). */
static __always_inline void copy16(void *dst, const void *src)
{
	((__u64 *)dst)[0] = ((const __u64 *)src)[0];
	((__u64 *)dst)[1] = ((const __u64 *)src)[1];
}

/* IPv4 a.b.c.d as ::ffff:a.b.c.d */
static __always_inline void v4_mapped(__u8 *dst, __u32 be_addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &be_addr, 4);
}

#endif
