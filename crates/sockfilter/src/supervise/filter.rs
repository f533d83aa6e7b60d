//! The seccomp filter: a classic BPF program that holds the socket calls.

use std::io;

/// A seccomp filter program.
pub struct Program(Vec<libc::sock_filter>);

// SAFETY: the program is plain data, only read after construction.
unsafe impl Send for Program {}
// SAFETY: as above.
unsafe impl Sync for Program {}

impl Program {
    pub fn fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: self.0.len() as u16,
            filter: self.0.as_ptr() as *mut libc::sock_filter,
        }
    }
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(n: u32) -> u32 {
    16 + 8 * n + if cfg!(target_endian = "little") { 0 } else { 4 }
}
const fn off_arg_hi(n: u32) -> u32 {
    16 + 8 * n + if cfg!(target_endian = "little") { 4 } else { 0 }
}

#[derive(Clone, Copy, PartialEq)]
enum T {
    Next,
    L(&'static str),
}

struct Asm {
    ins: Vec<(u16, T, T, u32)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn label(&mut self, l: &'static str) {
        self.labels.push((l, self.ins.len()));
    }
    fn ld(&mut self, off: u32) {
        self.ins.push((LD_W_ABS, T::Next, T::Next, off));
    }
    fn jeq(&mut self, k: u32, t: T, f: T) {
        self.ins.push((JEQ_K, t, f, k));
    }
    fn jge(&mut self, k: u32, t: T, f: T) {
        self.ins.push((JGE_K, t, f, k));
    }
    fn and(&mut self, k: u32) {
        self.ins.push((AND_K, T::Next, T::Next, k));
    }
    fn ret(&mut self, k: u32) {
        self.ins.push((RET_K, T::Next, T::Next, k));
    }
    fn finish(self) -> io::Result<Program> {
        let find = |i: usize, t: T| -> io::Result<u8> {
            let target = match t {
                T::Next => return Ok(0),
                T::L(l) => self
                    .labels
                    .iter()
                    .find(|(n, _)| *n == l)
                    .map(|(_, at)| *at)
                    .ok_or_else(|| io::Error::other("bpf: unknown label"))?,
            };
            u8::try_from(target - i - 1).map_err(|_| io::Error::other("bpf: jump too far"))
        };
        let mut out = Vec::with_capacity(self.ins.len());
        for (i, &(code, jt, jf, k)) in self.ins.iter().enumerate() {
            out.push(libc::sock_filter {
                code,
                jt: find(i, jt)?,
                jf: find(i, jf)?,
                k,
            });
        }
        Ok(Program(out))
    }
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The filter: native socket calls are held, i386 ones refused, io_uring
/// (which would bypass the filter) reported as missing.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn program() -> io::Result<Program> {
    let notif = T::L("notif");
    let allow = T::L("allow");
    let enosys = T::L("enosys");
    let eperm = T::L("eperm");
    let mut a = Asm {
        ins: Vec::new(),
        labels: Vec::new(),
    };
    a.ld(OFF_ARCH);
    a.jeq(AUDIT_ARCH_NATIVE, T::L("native"), T::Next);
    if cfg!(target_arch = "x86_64") {
        a.jeq(AUDIT_ARCH_I386, T::L("i386"), T::Next);
    }
    a.ret(libc::SECCOMP_RET_KILL_PROCESS);
    a.label("native");
    a.ld(OFF_NR);
    if cfg!(target_arch = "x86_64") {
        a.jge(X32_SYSCALL_BIT, enosys, T::Next);
    }
    a.jeq(libc::SYS_io_uring_setup as u32, enosys, T::Next);
    for nr in [
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_connect,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_sendmsg,
        libc::SYS_sendmmsg,
    ] {
        a.jeq(nr as u32, notif, T::Next);
    }
    a.jeq(libc::SYS_socket as u32, T::L("socket"), T::Next);
    a.jeq(libc::SYS_sendto as u32, T::Next, allow);
    // sendto: held only with a destination address (args[4] != NULL).
    a.ld(off_arg_lo(4));
    a.jeq(0, T::Next, notif);
    a.ld(off_arg_hi(4));
    a.jeq(0, allow, notif);
    // socket: no SCTP on IPv4/IPv6. SCTP binds and connects through
    // setsockopt (SCTP_SOCKOPT_BINDX_ADD, SCTP_SOCKOPT_CONNECTX), which is
    // not held, so its addresses could not be decided. SOCK_SEQPACKET with
    // protocol 0 is SCTP too.
    a.label("socket");
    a.ld(off_arg_lo(0));
    a.jeq(libc::AF_INET as u32, T::L("inet_socket"), T::Next);
    a.jeq(libc::AF_INET6 as u32, T::L("inet_socket"), allow);
    a.label("inet_socket");
    a.ld(off_arg_lo(2));
    a.jeq(libc::IPPROTO_SCTP as u32, eperm, T::Next);
    // MPTCP: "not supported", so that programs fall back to TCP. Landlock
    // does not cover MPTCP (Linux 6.18), so the backstop would not stop an
    // MPTCP connect that a dup2() race gets past the supervisor.
    a.jeq(libc::IPPROTO_MPTCP as u32, T::L("eprotonosupport"), T::Next);
    a.ld(off_arg_lo(1));
    a.and(0xf);
    a.jeq(libc::SOCK_SEQPACKET as u32, eperm, allow);
    if cfg!(target_arch = "x86_64") {
        a.label("i386");
        a.ld(OFF_NR);
        // socketcall, bind, connect, listen, accept4, sendto, sendmsg, sendmmsg
        for nr in [102u32, 361, 362, 363, 364, 369, 370, 345] {
            a.jeq(nr, eperm, T::Next);
        }
        a.jeq(425, enosys, allow);
    }
    a.label("allow");
    a.ret(libc::SECCOMP_RET_ALLOW);
    a.label("notif");
    a.ret(libc::SECCOMP_RET_USER_NOTIF);
    a.label("enosys");
    a.ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    a.label("eperm");
    a.ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
    a.label("eprotonosupport");
    a.ret(libc::SECCOMP_RET_ERRNO | libc::EPROTONOSUPPORT as u32);
    a.finish()
}

/// Unsupported architecture.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn program() -> io::Result<Program> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "supervise supports x86_64 and aarch64 only",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn filter_assembles() {
        let p = super::program().unwrap();
        assert!(p.fprog().len > 10);
    }
}
