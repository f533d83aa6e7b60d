/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * accept and UDP connect made through io_uring. io_uring does not go
 * through the accept()/connect() system calls, so their tracepoints never
 * see these; bind, listen, TCP connect and UDP sends through io_uring run
 * the cgroup and sockops hooks like their system calls and need nothing
 * here. An io_uring accept or connect is reported when its completion is
 * posted (tp_btf/io_uring_complete), which runs in the ring owner's task (or
 * an io-wq worker thread of the same process): the process that holds the
 * new fd, with the result (the new fd, or the fixed-file slot) in the CQE.
 *
 * Two kinds of completion name only the ring and the SQE's user_data, not
 * the request: the one per connection of a multishot accept, and any
 * completion that found the CQ ring full (tp_btf/io_uring_cqe_overflow). So
 * every accept is remembered at submission (tp_btf/io_uring_submit_req,
 * io_uring_submit_sqe before 6.0) by ring and user_data, with its listening
 * fd, and by request, until its final completion. The tracepoints' names
 * and arguments changed between kernels: each has a program per form, and
 * the loader attaches the one that loads.
 *
 * Not seen: an accept or connect with IOSQE_CQE_SKIP_SUCCESS posts no
 * completion when it succeeds, and no tracepoint marks its end; such
 * submissions are counted (SF_CNT_URING_UNSEEN), and user space says so.
 */
#ifndef SOCKFILTER_URING_H
#define SOCKFILTER_URING_H

/* include/uapi/linux/io_uring.h */
#define IORING_OP_ACCEPT 13
#define IORING_OP_CONNECT 16
#define IORING_CQE_F_BUFFER (1U << 0)
#define IORING_CQE_F_MORE (1U << 1)
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#define IORING_FILE_INDEX_ALLOC (~0U)
#define REQ_F_FIXED_FILE 1U /* = IOSQE_FIXED_FILE, the same bit in every version */
#define REQ_F_CQE_SKIP (1U << 6) /* = IOSQE_CQE_SKIP_SUCCESS (5.17+), the same bit since */
#define PF_IO_WORKER 0x00000010
/* Flag bits kept in the low bits of a fixed file's pointer. */
#define FFS_FLAGS 7UL

struct uring_key {
	__u64 ctx;             /* the ring (struct io_ring_ctx address) */
	__u64 user_data;
};

struct uring_accept {
	__s32 fd;              /* the listening socket: an fd, or a fixed-file slot */
	__u32 fixed_listener;  /* fd is a fixed-file slot */
	__u32 file_slot;       /* accepted into a fixed file (io_accept.file_slot), 0 if not */
	__u32 live;            /* accepts in flight under this key with the fields above */
	__u64 req;             /* the last one submitted (struct io_kiocb address) */
	__u32 other;           /* accepts in flight under this key with other fields */
	__u32 stale;           /* the fields above belong to none in flight any more */
};

/* An accept in flight: its key, and whether it has its entry's fields. */
struct uring_req {
	struct uring_key key;
	__u32 same;
	__u32 _pad;
};

/* Accepts in flight, by ring and user_data: what a completion that does not
 * name its request (multishot, overflow) is matched with. Several requests
 * may share a key (user_data is the program's choice): the entry goes when
 * the last of them ends, and names no listener once they differ. Not an LRU
 * (nothing live may be evicted); full: SF_CNT_URING_FULL. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct uring_key);
	__type(value, struct uring_accept);
} uring_accepts SEC(".maps");

/* The same accepts by request: a completion that names its request ends
 * that one, not whichever shares its key. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct uring_req);
} uring_accept_reqs SEC(".maps");

/* The calling process; an io-wq worker thread (comm "iou-wrk-PID") is named
 * by its process's command name. */
static __always_inline void uring_owner(struct sf_proc *cur)
{
	owner_from_current(cur);
	struct task_struct *t = bpf_get_current_task_btf();
	if (t->flags & PF_IO_WORKER)
		copy16(cur->comm, t->group_leader->comm);
}

/* A ring's fixed file, by slot (the table's layout changed in 6.13). */
static __always_inline struct file *uring_fixed_file(struct io_ring_ctx *ctx, __u32 slot)
{
	unsigned long ptr = 0;
	if (bpf_core_field_exists(ctx->file_table.data)) {
		if (slot >= BPF_CORE_READ(ctx, file_table.data.nr))
			return NULL;
		struct io_rsrc_node **nodes = BPF_CORE_READ(ctx, file_table.data.nodes);
		struct io_rsrc_node *node = NULL;
		bpf_probe_read_kernel(&node, sizeof(node), &nodes[slot]);
		if (!node)
			return NULL;
		ptr = BPF_CORE_READ(node, file_ptr);
	} else {
		if (slot >= BPF_CORE_READ(ctx, nr_user_files))
			return NULL;
		struct io_fixed_file *files = BPF_CORE_READ(ctx, file_table.files);
		bpf_probe_read_kernel(&ptr, sizeof(ptr), &files[slot].file_ptr);
	}
	return (struct file *)(ptr & ~FFS_FLAGS);
}

/* The TCP socket an accept's completion result `res` names: the new fd, or
 * for an accept into a fixed file the slot (`file_slot` is the SQE's
 * file_index). `mixed`: accepts of both kinds share the key, try both. */
static __always_inline struct sock *uring_accepted_sock(struct io_ring_ctx *ctx, __s32 res,
							__u32 file_slot, int mixed,
							unsigned short *family)
{
	struct sock *sk = NULL;
	if (!file_slot || mixed) {
		sk = tcp_sock_at(res, family);
		if (sk || !mixed)
			return sk;
	}
	__u32 slot = (file_slot == IORING_FILE_INDEX_ALLOC || mixed) ? (__u32)res : file_slot - 1;
	sk = sock_of_file(uring_fixed_file(ctx, slot));
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (*family != AF_INET && *family != AF_INET6)
		return NULL;
	return sk;
}

/* Whether the accepts under `a`'s key may be of different listeners or
 * slots: then a completion by key is not known to be of `a`'s. */
static __always_inline int uring_ambiguous(const struct uring_accept *a)
{
	return a->other || a->stale;
}

/* Request `req`'s accept ended (its final completion), if it was followed. */
static __always_inline void uring_forget(__u64 req)
{
	struct uring_req *found = bpf_map_lookup_elem(&uring_accept_reqs, &req);
	if (!found)
		return;
	struct uring_req r = *found;
	bpf_map_delete_elem(&uring_accept_reqs, &req);
	struct uring_accept *a = bpf_map_lookup_elem(&uring_accepts, &r.key);
	if (!a)
		return;
	if (a->live + a->other <= 1) {
		bpf_map_delete_elem(&uring_accepts, &r.key);
		return;
	}
	if (r.same)
		__sync_fetch_and_add(&a->live, -1);
	else
		__sync_fetch_and_add(&a->other, -1);
	if (!a->live)
		a->stale = 1;
}

/* A submitted accept, remembered until its final completion: by key for
 * the completions that name only the ring and user_data (a multishot
 * accept's, and any completion that overflows the CQ ring), by request so
 * that its own final completion ends it and no other. */
static __always_inline void uring_submitted(struct io_kiocb *req)
{
	__u8 op = req->opcode;
	if ((op != IORING_OP_ACCEPT && op != IORING_OP_CONNECT) || !in_watched_cgroup())
		return;
	if (req->flags & REQ_F_CQE_SKIP) {
		/* It posts no completion if it succeeds, and no tracepoint
		 * marks its end: counted (user space says so), not reported.
		 * A connect only on a UDP socket (sockops reports TCP's). */
		struct sock *sk = NULL;
		if (op == IORING_OP_CONNECT)
			sk = req->flags & REQ_F_FIXED_FILE
				     ? sock_of_file(uring_fixed_file(req->ctx, req->cqe.fd))
				     : sock_from_fd(req->cqe.fd);
		if (op == IORING_OP_ACCEPT ||
		    (sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_UDP))
			count(SF_CNT_URING_UNSEEN);
	}
	if (op != IORING_OP_ACCEPT)
		return;
	struct io_accept *acc = (struct io_accept *)req;
	__u64 r = (__u64)req;
	struct uring_key k = { .ctx = (__u64)req->ctx, .user_data = req->cqe.user_data };
	struct uring_accept a = {
		.fd = req->cqe.fd,
		.fixed_listener = req->flags & REQ_F_FIXED_FILE,
		.file_slot = BPF_CORE_READ(acc, file_slot),
		.live = 1,
		.req = r,
	};
	/* A request is reused only after it ended: one still remembered at
	 * this address ended unseen. */
	uring_forget(r);
	struct uring_req q = { .key = k, .same = 1 };
	struct uring_accept *old = bpf_map_lookup_elem(&uring_accepts, &k);
	if (old) {
		q.same = !old->stale && old->fd == a.fd &&
			 old->fixed_listener == a.fixed_listener && old->file_slot == a.file_slot;
		if (bpf_map_update_elem(&uring_accept_reqs, &r, &q, BPF_ANY)) {
			count(SF_CNT_URING_FULL);
			return;
		}
		if (q.same)
			__sync_fetch_and_add(&old->live, 1);
		else
			__sync_fetch_and_add(&old->other, 1);
		old->req = r;
		return;
	}
	if (bpf_map_update_elem(&uring_accepts, &k, &a, BPF_NOEXIST)) {
		count(SF_CNT_URING_FULL);
		return;
	}
	if (bpf_map_update_elem(&uring_accept_reqs, &r, &q, BPF_ANY)) {
		bpf_map_delete_elem(&uring_accepts, &k);
		count(SF_CNT_URING_FULL);
	}
}

/* The accepted socket (and listener, when known) of a completion with
 * `res` under a remembered key (`a`); NULL if none, or if `dedup` and it
 * was reported already. */
static __always_inline struct sock *uring_by_key(struct io_ring_ctx *ring, __s32 res,
						 const struct uring_accept *a, int dedup,
						 unsigned short *family, struct sock **lsk)
{
	int ambiguous = uring_ambiguous(a);
	struct sock *sk = uring_accepted_sock(ring, res, a->file_slot, ambiguous, family);
	if (!sk)
		return NULL;
	if (dedup) {
		__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		if (bpf_map_lookup_elem(&accept_owner, &cookie))
			return NULL;
	}
	*lsk = NULL;
	if (!ambiguous)
		*lsk = a->fixed_listener ? sock_of_file(uring_fixed_file(ring, a->fd))
					 : sock_from_fd(a->fd);
	return sk;
}

/* 6.0+ */
SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(sf_uring_submit, struct io_kiocb *req)
{
	uring_submitted(req);
	return 0;
}

/* Before 6.0 (Debian 12's 6.1 still has this name). */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(sf_uring_submit_sqe, struct io_kiocb *req, _Bool force_nonblock)
{
	uring_submitted(req);
	return 0;
}

/* A completion posted to ring `ring`: of request `req` (read with probe
 * reads: the tracepoint declares it void *), or, when `req` is NULL, of a
 * multishot request, known only by its user_data. One report_accept call
 * (less to verify on 6.1). */
static __always_inline void uring_completed(struct io_ring_ctx *ring, void *req, __u64 user_data,
					    __s32 res, __u32 flags)
{
	struct sock *sk, *lsk = NULL;
	unsigned short family = 0;
	if (req) {
		struct io_kiocb *r = req;
		__u8 op = BPF_CORE_READ(r, opcode);
		if (op == IORING_OP_CONNECT) {
			if (res != 0 || !in_watched_cgroup())
				return;
			sk = sock_of_file(BPF_CORE_READ(r, file));
			if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
				return;
			struct sf_proc cur;
			uring_owner(&cur);
			report_udp_connect(sk, &cur);
			return;
		}
		if (op != IORING_OP_ACCEPT)
			return;
		uring_forget((__u64)req); /* the final completion */
		if (res < 0 || !in_watched_cgroup())
			return;
		__u32 file_slot = BPF_CORE_READ((struct io_accept *)r, file_slot);
		sk = uring_accepted_sock(ring, res, file_slot, 0, &family);
		lsk = sock_of_file(BPF_CORE_READ(r, file));
	} else {
		/* A multishot accept's completion has F_MORE and never a
		 * buffer (multishot receives always have one). */
		if (res < 0 || !(flags & IORING_CQE_F_MORE) || (flags & IORING_CQE_F_BUFFER))
			return;
		struct uring_key k = { .ctx = (__u64)ring, .user_data = user_data };
		struct uring_accept *a = bpf_map_lookup_elem(&uring_accepts, &k);
		if (!a || !in_watched_cgroup())
			return;
		struct uring_accept acc = *a;
		sk = uring_by_key(ring, res, &acc, 0, &family, &lsk);
	}
	if (!sk)
		return;
	struct sf_proc cur;
	uring_owner(&cur);
	report_accept(sk, family, lsk, &cur);
}

/* The tracepoint's arguments in newer kernels (6.18): the CQE as posted. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(sf_uring_complete, struct io_ring_ctx *ring, void *req, struct io_uring_cqe *cqe)
{
	uring_completed(ring, req, cqe->user_data, cqe->res, cqe->flags);
	return 0;
}

/* Its arguments in older ones (6.1, 6.12): the CQE's fields one by one. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(sf_uring_complete_fields, void *ring, void *req, __u64 user_data, int res,
	     unsigned int cflags, __u64 extra1, __u64 extra2)
{
	uring_completed(ring, req, user_data, res, cflags);
	return 0;
}

/* A completion that found the CQ ring full, kept on the overflow list until
 * the ring is read: io_uring_complete does not fire for it on 6.18; a
 * kernel that fires both has reported the accept already (`dedup`). Named
 * by ring and user_data only, like a multishot accept's. */
SEC("tp_btf/io_uring_cqe_overflow")
int BPF_PROG(sf_uring_overflow, void *ring, __u64 user_data, __s32 res, __u32 cflags, void *ocqe)
{
	struct uring_key k = { .ctx = (__u64)ring, .user_data = user_data };
	struct uring_accept *a = bpf_map_lookup_elem(&uring_accepts, &k);
	if (!a)
		return 0;
	struct uring_accept acc = *a;
	if (!(cflags & IORING_CQE_F_MORE) && acc.live + acc.other == 1)
		uring_forget(acc.req); /* a final completion, of the one in flight */
	if (res < 0 || (cflags & IORING_CQE_F_BUFFER) || !in_watched_cgroup())
		return 0;
	unsigned short family = 0;
	struct sock *lsk = NULL;
	struct sock *sk = uring_by_key(ring, res, &acc, 1, &family, &lsk);
	if (!sk)
		return 0;
	struct sf_proc cur;
	uring_owner(&cur);
	report_accept(sk, family, lsk, &cur);
	return 0;
}

#endif
