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
	__u32 _pad;
	char exe[SF_EXE_LEN];
};

/* Who owns a socket: kept in socket-local storage because the kernel closes
 * sockets (and completes handshakes) outside the owner's context. */
struct sf_owner {
	__u64 cgroup_id;
	__u64 start_ns;        /* creation, listen or connection time */
	__u32 pid;
	__u32 uid;
	char comm[SF_COMM_LEN];
	__u32 active;          /* TCP: this side sent the SYN (counts in bytes_acked) */
	__u32 _pad;
};

/* The resolved executable of a process, filled at exec and copied at fork. */
struct sf_exe {
	__u32 len;             /* 0 = unknown */
	__u32 truncated;
	char path[SF_EXE_LEN];
};

/* Indexes of the per-CPU counters array. */
enum sf_counter {
	SF_CNT_LOST = 0,       /* events that did not fit in the ring buffer */
	SF_CNT_MAX = 4,
};

#endif
