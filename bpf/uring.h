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
 * A multishot accept posts one completion per connection without naming its
 * request, only the ring and the SQE's user_data; so multishot accepts are
 * remembered at submission (tp_btf/io_uring_submit_req, io_uring_submit_sqe
 * before 6.0) by ring and user_data, with their listening fd, until their
 * final completion. The tracepoints' names and arguments changed between
 * kernels: each has a program per form, and the loader attaches the one
 * that loads.
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
	__u32 _pad;
};

/* Multishot accepts in flight. Not an LRU (nothing live may be evicted); an
 * entry goes at the request's final completion; full: SF_CNT_URING_FULL. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct uring_key);
	__type(value, struct uring_accept);
} uring_accepts SEC(".maps");

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

/* The accept whose completion carries `res`: the new fd, or for an accept
 * into a fixed file the slot (`file_slot` is the SQE's file_index). */
static __always_inline void uring_accepted(struct io_ring_ctx *ctx, __s32 res, __u32 file_slot,
					   struct sock *lsk)
{
	unsigned short family;
	struct sock *sk;
	if (file_slot) {
		__u32 slot = file_slot == IORING_FILE_INDEX_ALLOC ? (__u32)res : file_slot - 1;
		sk = sock_of_file(uring_fixed_file(ctx, slot));
		if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return;
		family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family != AF_INET && family != AF_INET6)
			return;
	} else {
		sk = tcp_sock_at(res, &family);
		if (!sk)
			return;
	}
	struct sf_proc cur;
	uring_owner(&cur);
	report_accept(sk, family, lsk, &cur);
}

/* A submitted accept that is multishot, remembered for its completions. */
static __always_inline void uring_submitted(struct io_kiocb *req)
{
	if (req->opcode != IORING_OP_ACCEPT)
		return;
	struct io_accept *acc = (struct io_accept *)req;
	/* Before 6.10 the SQE's multishot flag is not kept where it can be
	 * read (only as a REQ_F_ bit whose number changes between versions):
	 * every accept is remembered then. */
	if (bpf_core_field_exists(acc->iou_flags) &&
	    !(BPF_CORE_READ(acc, iou_flags) & IORING_ACCEPT_MULTISHOT))
		return;
	if (!in_watched_cgroup())
		return;
	struct uring_key k = { .ctx = (__u64)req->ctx, .user_data = req->cqe.user_data };
	struct uring_accept a = {
		.fd = req->cqe.fd,
		.fixed_listener = req->flags & REQ_F_FIXED_FILE,
		.file_slot = BPF_CORE_READ(acc, file_slot),
	};
	if (bpf_map_update_elem(&uring_accepts, &k, &a, BPF_ANY))
		count(SF_CNT_URING_FULL);
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
 * multishot request, known only by its user_data. */
static __always_inline void uring_completed(struct io_ring_ctx *ring, void *req, __u64 user_data,
					    __s32 res, __u32 flags)
{
	struct uring_key k = { .ctx = (__u64)ring, .user_data = user_data };
	struct sock *lsk;
	__u32 file_slot;
	if (req) {
		struct io_kiocb *r = req;
		__u8 op = BPF_CORE_READ(r, opcode);
		if (op == IORING_OP_CONNECT) {
			if (res != 0 || !in_watched_cgroup())
				return;
			struct sock *sk = sock_of_file(BPF_CORE_READ(r, file));
			if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
				return;
			struct sf_proc cur;
			uring_owner(&cur);
			report_udp_connect(sk, &cur);
			return;
		}
		if (op != IORING_OP_ACCEPT)
			return;
		bpf_map_delete_elem(&uring_accepts, &k); /* the final completion */
		if (res < 0 || !in_watched_cgroup())
			return;
		file_slot = BPF_CORE_READ((struct io_accept *)r, file_slot);
		lsk = sock_of_file(BPF_CORE_READ(r, file));
	} else {
		/* A multishot accept's completion has F_MORE and never a
		 * buffer (multishot receives always have one). */
		if (res < 0 || !(flags & IORING_CQE_F_MORE) || (flags & IORING_CQE_F_BUFFER))
			return;
		struct uring_accept *a = bpf_map_lookup_elem(&uring_accepts, &k);
		if (!a || !in_watched_cgroup())
			return;
		file_slot = a->file_slot;
		if (a->fixed_listener)
			lsk = sock_of_file(uring_fixed_file(ring, a->fd));
		else
			lsk = sock_from_fd(a->fd);
	}
	uring_accepted(ring, res, file_slot, lsk);
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

#endif
