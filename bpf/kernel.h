/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The few kernel structures sockfilter reads, declared with only the fields
 * it uses. preserve_access_index makes every access a CO-RE relocation: the
 * loader (aya) fixes the offsets against the running kernel's BTF, so these
 * declarations need not match any one kernel's layout, only its field names.
 */
#ifndef SOCKFILTER_KERNEL_H
#define SOCKFILTER_KERNEL_H

#define __core __attribute__((preserve_access_index))

typedef struct { long long counter; } __core atomic64_t;
typedef struct { unsigned int val; } __core kuid_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
} __core;

struct ns_common { unsigned int inum; } __core;
struct net {
	struct ns_common ns;
	__u64 net_cookie;
} __core;
typedef struct { struct net *net; } __core possible_net_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__u64 skc_addrpair;    /* union of skc_daddr (low half) and skc_rcv_saddr */
	__be16 skc_dport;
	__u16 skc_num;
	__u32 skc_portpair;    /* union of skc_dport (low half) and skc_num */
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	unsigned long skc_flags;
} __core;

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
	__u32 sk_max_ack_backlog;
} __core;

struct inet_sock {
	__be16 inet_sport;
} __core;

struct tcp_sock {
	__u64 bytes_received;
	__u64 bytes_acked;
	__u32 snd_una;
	__u32 write_seq;
} __core;

struct socket { struct sock *sk; } __core;

struct qstr {
	__u32 len;
	const unsigned char *name;
} __core;

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
} __core;

struct vfsmount { struct dentry *mnt_root; } __core;

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} __core;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __core;

struct super_block { __u32 s_dev; } __core;
struct inode {
	unsigned short i_mode;
	unsigned long i_ino;
	struct super_block *i_sb;
} __core;

struct file {
	struct path f_path;
	struct inode *f_inode;
	void *private_data;
} __core;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __core;

struct files_struct { struct fdtable *fdt; } __core;
struct nsproxy { struct net *net_ns; } __core;
struct mm_struct {
	struct file *exe_file;
	unsigned long arg_start;
	unsigned long arg_end;
} __core;
struct cred { kuid_t uid; } __core;
struct kernfs_node { __u64 id; } __core;
struct cgroup {
	struct kernfs_node *kn;
	int level;
	struct cgroup *ancestors[];
} __core;
struct css_set { struct cgroup *dfl_cgrp; } __core;

/* x86: TS_COMPAT in status while a 32-bit system call runs. */
struct thread_info { __u32 status; } __core;

struct task_struct {
	struct thread_info thread_info;
	unsigned int flags;
	struct task_struct *group_leader;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	char comm[16];
	const struct cred *cred;
	struct mm_struct *mm;
	struct files_struct *files;
	struct css_set *cgroups;
	struct nsproxy *nsproxy;
} __core;

struct linux_binprm { struct file *file; } __core;

/* The registers a task entered the kernel with (x86-64: di is a system
 * call's first argument, orig_ax its number; ia32: bx and cx the first two
 * arguments). */
struct pt_regs {
	unsigned long di;
	unsigned long bx;
	unsigned long cx;
	unsigned long orig_ax;
} __core;
/* arm64's view of the same struct pt_regs (CO-RE drops the ___ suffix):
 * at syscall exit x0 holds the return value, orig_x0 the first argument. */
struct pt_regs___sf_arm64 { unsigned long orig_x0; } __core;

/* io_uring (uring.h). */
struct io_uring_cqe {
	__u64 user_data;
	__s32 res;
	__u32 flags;
} __core;
struct io_cqe {
	__u64 user_data;
	__s32 fd;              /* at submission: the SQE's fd (later its flags) */
} __core;
struct io_ring_ctx;
struct io_kiocb {
	struct file *file;
	__u8 opcode;
	__u32 flags;           /* io_req_flags_t: the low half holds REQ_F_FIXED_FILE */
	struct io_cqe cqe;
	struct io_ring_ctx *ctx;
} __core;
/* The accept's own part of its io_kiocb (io_uring/net.c). */
struct io_accept {
	int iou_flags;         /* 6.10+: IORING_ACCEPT_MULTISHOT */
	__u32 file_slot;       /* accept into a fixed file: slot + 1, or IORING_FILE_INDEX_ALLOC */
} __core;
/* Fixed files, 6.13+: file_table.data.nodes[slot]->file_ptr. */
struct io_rsrc_node { unsigned long file_ptr; } __core;
struct io_rsrc_data {
	unsigned int nr;
	struct io_rsrc_node **nodes;
} __core;
/* Fixed files before 6.13: file_table.files[slot].file_ptr. */
struct io_fixed_file { unsigned long file_ptr; } __core;
struct io_file_table {
	struct io_rsrc_data data;
	struct io_fixed_file *files;
} __core;
struct io_ring_ctx {
	struct io_file_table file_table;
	unsigned int nr_user_files;
} __core;

#endif
