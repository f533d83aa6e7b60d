/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * accept and UDP connect of 32-bit (ia32) processes on x86_64. Their system
 * calls go through the compat table, which the syscalls:sys_exit_*
 * tracepoints do not report (the kernel ignores compat calls there), so one
 * program on the raw sys_exit tracepoint catches them. It runs at the exit
 * of every system call of every process: the first test is the call number
 * (no x86_64 call has the numbers below except getuid's 102), the second the
 * task's TS_COMPAT, so a 64-bit call costs a compare or two.
 */
#ifndef SOCKFILTER_COMPAT_H
#define SOCKFILTER_COMPAT_H

#ifdef __TARGET_ARCH_x86

/* arch/x86/entry/syscalls/syscall_32.tbl */
#define IA32_SOCKETCALL 102
#define IA32_CONNECT 362
#define IA32_ACCEPT4 364
/* socketcall(2)'s calls (linux/net.h) */
#define SYS_CONNECT 3
#define SYS_ACCEPT 5
#define SYS_ACCEPT4 18
#define TS_COMPAT 0x0002

SEC("tp_btf/sys_exit")
int BPF_PROG(sf_compat_exit, struct pt_regs *regs, long ret)
{
	unsigned long nr = regs->orig_ax;
	if (nr != IA32_SOCKETCALL && nr != IA32_CONNECT && nr != IA32_ACCEPT4)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	if (!(t->thread_info.status & TS_COMPAT) || ret < 0 || !in_watched_cgroup())
		return 0;
	/* The socket's fd: ia32 passes arguments in bx, cx, ...; socketcall
	 * passes its call in bx and a pointer to the call's arguments in cx. */
	int call;
	__s32 fd;
	if (nr == IA32_SOCKETCALL) {
		call = (int)regs->bx;
		if (call != SYS_CONNECT && call != SYS_ACCEPT && call != SYS_ACCEPT4)
			return 0;
		if (bpf_probe_read_user(&fd, sizeof(fd), (void *)regs->cx))
			return 0;
	} else {
		call = nr == IA32_CONNECT ? SYS_CONNECT : SYS_ACCEPT4;
		fd = (__s32)regs->bx;
	}
	struct sf_proc cur;
	if (call == SYS_CONNECT) {
		if (ret != 0)
			return 0;
		struct sock *sk = sock_from_fd(fd);
		if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
			return 0;
		owner_from_current(&cur);
		report_udp_connect(sk, &cur);
		return 0;
	}
	unsigned short family;
	struct sock *sk = tcp_sock_at(ret, &family);
	if (!sk)
		return 0;
	owner_from_current(&cur);
	report_accept(sk, family, sock_from_fd(fd), &cur);
	return 0;
}

#endif /* __TARGET_ARCH_x86 */

#endif
