// SPDX-License-Identifier: GPL-2.0-only
/*
 * Destroying sockets by cookie: BPF socket iterators that walk every TCP and
 * UDP socket of the network namespace they are opened in and call the
 * bpf_sock_destroy() kfunc (Linux >= 6.5) on each one whose cookie user space
 * put in `destroy_targets`. Unlike sock_diag's SOCK_DESTROY, nothing is
 * looked up by address, so every member of an SO_REUSEPORT group, and any
 * socket whatever its state, is reachable.
 *
 * A separate object from sockfilter.bpf.o: it is loaded on demand by
 * crates/sockfilter/src/destroy/ (also by library users who never watch), and
 * a kernel without the kfunc only loses this object, never the watcher.
 *
 * aya 0.14 cannot link calls to extern (__ksym) functions, so the kfunc call
 * is written as the raw instruction, with a marker where the kfunc's BTF id
 * goes: the loader replaces the marker by bpf_sock_destroy's id in the
 * running kernel's BTF before handing the object to aya.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "kernel.h"

char LICENSE[] SEC("license") = "GPL";

/* Sentinel that user space stores for a target not (yet) found. */
#define SF_DESTROY_NOT_FOUND 1

/* cookie -> 1 (not found yet), then bpf_sock_destroy()'s result: 0 when the
 * socket was destroyed, a negative errno otherwise. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __s32);
} destroy_targets SEC(".maps");

/* The immediate of the kfunc call until the loader patches it; the whole
 * instruction (call, src_reg BPF_PSEUDO_KFUNC_CALL = 2) is searched for, so
 * it must stay unique in the object. Mirrored in destroy/iter.rs. */
#define SF_KFUNC_MARKER "0x7ea1dfee"

/* bpf_sock_destroy(sk): 0 or a negative errno. */
static __always_inline int sock_destroy(struct sock_common *sk)
{
	register __u64 r1 asm("r1") = (__u64)sk;
	register __s64 r0 asm("r0");
	asm volatile(".byte 0x85, 0x20, 0x00, 0x00\n\t.long " SF_KFUNC_MARKER
		     : "=r"(r0)
		     : "r"(r1)
		     : "r2", "r3", "r4", "r5", "memory");
	return r0;
}

struct bpf_iter_meta { void *seq; } __core;
struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __core;
/* Opaque here: a udp_sock starts with its sock_common (inet.sk.__sk_common). */
struct udp_sock;
struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __core;

static __always_inline void destroy_if_target(struct sock_common *sk)
{
	__u64 cookie = sk->skc_cookie.counter;
	if (!cookie)
		return; /* never asked for: 0 is every socket that has no cookie yet */
	__s32 *result = bpf_map_lookup_elem(&destroy_targets, &cookie);
	if (result && *result == SF_DESTROY_NOT_FOUND)
		*result = sock_destroy(sk);
}

SEC("iter/tcp")
int sf_destroy_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *sk = ctx->sk_common;
	if (sk)
		destroy_if_target(sk);
	return 0;
}

SEC("iter/udp")
int sf_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;
	if (udp)
		destroy_if_target((struct sock_common *)udp);
	return 0;
}
