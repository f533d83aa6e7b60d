/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The records the BPF programs write and user space reads. This header is the
 * single definition on the C side; crates/sockfilter/src/abi.rs mirrors it and
 * a test there checks that sizes and offsets agree (the offsets are also
 * emitted into the object's BTF, which the test reads).
 */
#ifndef SOCKFILTER_H
#define SOCKFILTER_H

#define SF_COMM_LEN 16
#define SF_EXE_LEN 256

/* What happened to the socket. */
enum sf_kind {
	SF_BIND = 1,
	SF_LISTEN = 2,
	SF_CONNECT = 3,
	SF_ACCEPT = 4,
	SF_CLOSE = 5,
};

/* sf_event.flags */
enum sf_event_flags {
	/* No owner was recorded for this socket (created before sockfilter started). */
	SF_F_OWNER_UNKNOWN = 1 << 0,
	/* bytes_sent/bytes_received are not counted for this socket (UDP). */
	SF_F_BYTES_UNKNOWN = 1 << 1,
	/* The executable path did not fit in exe[]; user space resolves it. */
	SF_F_EXE_TRUNCATED = 1 << 2,
	/* duration_ns is unknown (the socket predates sockfilter). */
	SF_F_DURATION_UNKNOWN = 1 << 3,
};

/* One socket lifecycle event, as written to the ring buffer. */
struct sf_event {
	__u64 ts_ns;           /* bpf_ktime_get_boot_ns() */
	__u64 cookie;          /* socket cookie (SO_COOKIE) */
	__u64 listener_cookie; /* accept: the listening socket's cookie */
	__u64 cgroup_id;       /* cgroup v2 id of the owner */
	__u64 bytes_sent;      /* close: payload bytes acknowledged by the peer */
	__u64 bytes_received;  /* close: payload bytes received */
	__u64 duration_ns;     /* close: since creation, listen or connection */
	__u32 kind;            /* enum sf_kind */
	__u32 flags;           /* enum sf_event_flags */
	__u32 pid;             /* thread-group id of the owner */
	__u32 uid;             /* real uid of the owner */
	__u32 backlog;         /* listen: backlog */
	__u32 netns;           /* inode number of the socket's network namespace, 0 if unknown */
	__u16 family;          /* AF_INET or AF_INET6 */
	__u16 protocol;        /* IPPROTO_TCP or IPPROTO_UDP */
	__u16 local_port;      /* host byte order */
	__u16 remote_port;     /* host byte order */
	__u8 local_addr[16];   /* network order; IPv4 in the first 4 bytes */
	__u8 remote_addr[16];
	char comm[SF_COMM_LEN];
	__u32 exe_len;         /* bytes used in exe (no NUL); 0 = unknown */
	__u8 verdict;          /* enum sf_verdict */
	__u8 policy_slot;      /* which loaded policy decided (enforce) */
	__u8 enforced_by;      /* a deny: enum sf_enforced_by */
	__u8 _pad;
	__u32 rule;            /* index of the deciding rule + 1; 0 = the default */
	__u32 suppressed;      /* refused accept: peers refused and not reported before this one */
	/* Ancestry (see struct sf_exe): the owner's parent, as the kernel
	 * says when the event happens in the owner's context; the exec of the
	 * owner and of its parent, by id, which user space names. 0 = unknown. */
	__u32 ppid;
	__u32 _pad2;
	__u64 exec_id;
	__u64 parent_exec_id;
	char exe[SF_EXE_LEN];
};

/* ---- DNS answers (dns.h) ------------------------------------------------
 * One record per DNS answer with addresses, written to the same ring buffer
 * as sf_event (so user space learns a name before it reads any event that
 * follows from it); `magic` tells the two apart: an sf_event starts with a
 * boot-clock time, which never has the top bit set. */
#define SF_DNS_MAGIC 0xf5d0d25a6e730000ULL
#define SF_DNS_ADDRS 8
#define SF_DNS_NAME_LEN 256

struct sf_dns_answer {
	__u64 magic;           /* SF_DNS_MAGIC */
	__u64 ts_ns;           /* bpf_ktime_get_boot_ns() */
	__u32 netns;           /* inode of the receiving socket's network namespace, 0 if unknown */
	__u32 pid;             /* owner of the receiving socket, 0 if unknown */
	__u16 naddrs;          /* addresses used in addr[] */
	__u16 name_len;        /* bytes of name[]: the question, wire format, without the root label */
	__u32 _pad;
	__u32 ttl[SF_DNS_ADDRS];    /* seconds, per address */
	__u8 family[SF_DNS_ADDRS];  /* 4: A record (addr[12..16]), 6: AAAA */
	__u8 addr[SF_DNS_ADDRS][16];
	__u8 name[SF_DNS_NAME_LEN];
};

/* A process, as events name it. */
struct sf_proc {
	__u64 cgroup_id;
	__u32 pid;
	__u32 uid;
	char comm[SF_COMM_LEN];
};

/* Who owns a socket: kept in socket-local storage because the kernel closes
 * sockets (and completes handshakes) outside the owner's context. */
struct sf_owner {
	struct sf_proc proc;
	__u64 start_ns;        /* creation, listen or connection time */
	__u32 active;          /* TCP: this side sent the SYN (counts in bytes_acked) */
	/* enforce: a decision taken in one hook, reported by a later one
	 * (bind -> post_bind, connect -> TCP_CONNECT_CB) */
	__u8 pending;
	__u8 verdict;
	__u8 slot;
	__u8 udp_next;         /* next slot in udp_dst to overwrite */
	__u32 rule;
	/* enforce: the last UDP destinations sendmsg reported, to report a
	 * send only when it goes somewhere new */
	struct {
		__u8 addr[16];
		__u16 port;
		__u16 _pad;
	} udp_dst[4];
	/* inode of the socket's network namespace, 0 if unknown: the DNS
	 * answer hook (dns.h) runs in no process and reads it here */
	__u32 netns;
};

/* The resolved executable of a process, filled at exec and copied at fork. */
struct sf_exe {
	__u32 len;             /* 0 = unknown */
	__u32 truncated;
	/* The file as the host sees it, whatever path led to it: policy
	 * lookups go by these, so a file bind-mounted over an allowed path in
	 * another mount namespace is still another file. */
	__u64 ino;             /* inode number */
	__u32 dev;             /* device, as the kernel encodes it: major << 20 | minor */
	/* The parent (tgid) when last seen, and its exec_id then. Refreshed
	 * whenever an event of this process in its own context finds another
	 * parent (the first one exited and the process was re-parented). */
	__u32 ppid;
	/* Which exec this is: a number new at every exec (kept by a fork,
	 * which runs the same image), so that user space can name an exec
	 * after its process is gone. Ids the kernel gives have the top bit
	 * clear; user space gives those of processes older than sockfilter,
	 * with the top bit set. 0 = unknown. */
	__u64 exec_id;
	__u64 parent_exec_id;
	char path[SF_EXE_LEN];
};

#define SF_ARGS_LEN 512

/* One exec, written to the `execs` ring buffer once per exec: what user
 * space names an exec id by (events carry exec ids, not strings). */
struct sf_exec {
	__u64 exec_id;
	__u32 pid;
	__u32 exe_len;         /* bytes used in exe; 0 = unknown or too long */
	__u32 args_len;        /* bytes used in args (NUL-separated argv) */
	__u32 args_truncated;  /* argv was longer than SF_ARGS_LEN */
	char exe[SF_EXE_LEN];
	char args[SF_ARGS_LEN];
};

/* What was decided. SF_V_NONE: no policy is loaded (watch). */
/* Which mechanism carried out a deny. */
enum sf_enforced_by {
	SF_BY_NONE = 0,
	SF_BY_CGROUP = 1,      /* cgroup bind/connect/sendmsg/post_bind hook: EPERM */
	SF_BY_SK_LOOKUP = 2,   /* socket lookup refused the connection */
	SF_BY_DESTROY = 3,     /* refused in socket lookup, then destroyed */
	SF_BY_LSM = 4,         /* BPF LSM: the system call itself failed with EPERM */
};

enum sf_verdict {
	SF_V_NONE = 0,
	SF_V_ALLOW = 1,
	SF_V_DENY = 2,
	SF_V_AUDIT = 3,
};

/* ---- policy (enforce) ----------------------------------------------------
 * Rules are numbered in file order. For each dimension of a request (kind,
 * addresses, ports, exe, comm, uid, cgroup) a lookup gives the id of a
 * bitmap of the rules that dimension allows; the first rule set in all of
 * them decides. A two-level bitmap (summary bit = word non-zero) keeps a
 * request that matches no rule cheap whatever the rule count. Every key has
 * a slot: a new policy is written to the idle slot, then one write to
 * pol_active switches over, so some whole policy is always in force. */
#define SF_MAX_RULES 16384
#define SF_WORDS (SF_MAX_RULES / 64)
#define SF_SUMMARY (SF_WORDS / 64)

enum sf_dim {
	SF_DIM_KIND = 0,       /* operation x protocol x family */
	SF_DIM_LOCAL_IP = 1,
	SF_DIM_REMOTE_IP = 2,
	SF_DIM_LOCAL_PORT = 3,
	SF_DIM_REMOTE_PORT = 4,
	SF_DIM_EXE = 5,
	SF_DIM_COMM = 6,
	SF_DIM_UID = 7,
	SF_DIM_CGROUP = 8,
	SF_DIM_REMOTE_HOST = 9, /* connect: the DNS name the remote address was resolved from (dns.h) */
	SF_DIMS = 10,
};

/* Operations, as the policy numbers them. */
enum sf_op {
	SF_OP_BIND = 0,
	SF_OP_LISTEN = 1,
	SF_OP_CONNECT = 2,
	SF_OP_ACCEPT = 3,
};

struct sf_bitmap {
	__u64 summary[SF_SUMMARY];
	__u64 words[SF_WORDS];
};

struct sf_bitmap_key {
	__u32 slot;
	__u32 id;
};

/* Per slot. */
struct sf_policy_meta {
	__u32 words;           /* words in use (rules / 64, rounded up) */
	__u32 rules;
	__u32 default_verdict; /* enum sf_verdict */
	__u32 dims_used;       /* bit per sf_dim that some rule constrains */
	__u32 wild[SF_DIMS];   /* bitmap id when the value is unknown or unlisted */
	__u32 generation;      /* changes with every policy written to the slot (sf_dns_addr) */
	__u32 _pad;
};

/* remote_host patterns (pol_hosts): a name in DNS wire form (length-prefixed
 * labels, lowercase, no root label), zero-padded; `below`: a `*.` pattern,
 * matching names strictly below it. */
#define SF_HOST_LEN 128
struct sf_host_key {
	__u32 slot;
	__u8 below;
	__u8 len;
	__u16 _pad;
	__u8 name[SF_HOST_LEN];
};

/* An address some name rule's pattern resolved to (dns_addrs): per slot,
 * the remote-host bitmap id of the name, valid while the slot's policy
 * generation is the one it was computed for, until expires_ns (boot clock). */
struct sf_dns_addr_key {
	__u32 netns;           /* inode of the namespace whose socket received the answer; 0 unknown */
	__u8 addr[16];         /* IPv4 as ::ffff:a.b.c.d */
};
struct sf_dns_addr {
	__u64 expires_ns;
	__u32 id[2];
	__u32 generation[2];
};

/* LPM key: 8 bits slot, 8 bits family tag (4 or 6), 128 bits address (IPv4
 * as ::ffff:a.b.c.d). */
struct sf_ip_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 tag;
	__u8 addr[16];
	__u8 _pad[2];          /* explicit: the Rust mirror is packed */
};

struct sf_exe_key {
	__u32 slot;
	__u32 dev;
	__u64 ino;
};


struct sf_comm_key {
	__u32 slot;
	char comm[SF_COMM_LEN];
};

struct sf_u64_key {
	__u32 slot;
	__u32 _pad;
	__u64 value;           /* uid, or cgroup id */
};

#define SF_CGROUP_DEPTH 16

/* A TCP listener as enforce knows it (map `listeners`), by network namespace
 * cookie (never reused while the system runs, unlike the namespace's inode
 * number), local address (normalized to IPv6: IPv4 as ::ffff:a.b.c.d) and
 * port. */
struct sf_listen_key {
	__u64 netns;
	__u8 addr[16];
	__u16 port;
	__u16 _pad[3];
};

struct sf_listener {
	__u64 cookie;          /* the listening socket */
	struct sf_proc owner;  /* the process that called listen() */
	/* the owner's cgroup id and its ancestors', deepest first */
	__u64 cgroups[SF_CGROUP_DEPTH];
	__u32 ncgroups;
	__u32 netns_inum;      /* for events: the namespace's inode number */
	__u32 denied;          /* refused by policy: sk_lookup drops every connection */
	/* Rate limit of the events for refused peers: at most
	 * SF_REFUSED_PER_SEC per second, the rest counted. */
	__u32 reported;
	__u64 window_ns;
	__u32 suppressed;      /* not reported since the last reported one */
	__u32 _pad;
};

#define SF_REFUSED_PER_SEC 16

/* Indexes of the per-CPU counters array. */
enum sf_counter {
	SF_CNT_LOST = 0,       /* events that did not fit in the ring buffer */
	SF_CNT_REFUSED_SUPPRESSED = 1, /* refused-peer events over the rate limit */
	SF_CNT_LISTENERS_FULL = 2,     /* listeners not registered: map full */
	SF_CNT_EXE_FULL = 3,           /* processes whose executable was not kept: map full */
	SF_CNT_ACCEPTED_FULL = 4,      /* accepted sockets whose owner was not kept: map full */
	SF_CNT_UDP_FULL = 5,           /* UDP sockets whose endpoints were not kept: map full */
	SF_CNT_URING_FULL = 6,         /* io_uring multishot accepts not followed: map full */
	SF_CNT_EXECS_LOST = 7,         /* exec records that did not fit in their ring buffer */
	SF_CNT_DNS_LOST = 8,           /* DNS answers not reported: the ring buffer was full */
	SF_CNT_COMPAT_EXECS = 9,       /* execs of 32-bit (ia32) programs: user space attaches compat.h */
	SF_CNT_URING_UNSEEN = 10,      /* io_uring accepts and UDP connects without a completion (CQE_SKIP) */
	SF_CNT_MAX = 16,
};

#endif
