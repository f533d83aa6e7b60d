// SPDX-License-Identifier: GPL-2.0-only
/*
 * sockfilter's kernel side: one record per socket lifecycle step, written to a
 * ring buffer, with the owning process attached.
 *
 *   bind     cgroup/post_bind4|6      process context, final port known
 *   listen   sockops TCP_LISTEN_CB    process context, after the port is
 *                                     chosen, once per socket (not on a 2nd listen)
 *   connect  sockops TCP_CONNECT_CB   TCP, process context, ephemeral port known
 *            sys_exit_connect         UDP connect()
 *   accept   sys_exit_accept(4)       in the accepting process
 *            tp_btf sys_exit          32-bit (ia32) accept, UDP connect
 *            tp_btf io_uring_complete io_uring accept (also multishot:
 *                                     io_uring_submit_req), UDP connect
 *   close    tp_btf inet_sock_set_state -> TCP_CLOSE   (TCP, any context)
 *            cgroup/sock_release                        (UDP, if bound)
 *
 * The handshake and the close run outside the owner's context, so the owner
 * is remembered in socket-local storage (sk_owner) whenever the socket is
 * touched in process context. Executable paths are resolved once per exec in
 * the kernel (exe_by_pid), so a process that lives a millisecond still has one.
 *
 * Only hooks that load without kprobes, fentry or BPF-LSM are used.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "kernel.h"
#include "sockfilter.h"

char LICENSE[] SEC("license") = "GPL";

#include "common.h"
#include "process.h"
#include "policy.h"
#include "listeners.h"
#include "socket.h"
#include "lifecycle.h"
#include "compat.h"
#include "uring.h"
#include "enforce.h"
#include "lsm.h"
#include "dns.h"

/* Keep the ABI types in the object's BTF for the layout test. */
struct sf_event _sf_event_btf __attribute__((unused));
