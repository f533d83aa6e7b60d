//! One held call: reading and writing the caller's memory, answering it,
//! asking the decision callback and reporting the decision.

use super::credentials::Creds;
use super::notify::Core;
use super::request::{Operation, Request, Syscall, Verdict};
use super::socket::Sock;
use super::sys::{last_errno, Errno, SysResult};
use sockfilter_model::event::{Details, Endpoint, Event, Family};
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::SystemTime;

/// One held call.
#[derive(Clone)]
pub(super) struct Call {
    pub(super) core: Arc<Core>,
    pub(super) id: u64,
    pub(super) tid: u32,
    pub(super) args: [u64; 6],
    /// A pidfd of the calling thread (valid once checked with `valid()`).
    pub(super) pidfd: Option<Arc<OwnedFd>>,
}

pub(super) enum Answer {
    Result(SysResult),
    Continue,
    /// Already answered (e.g. by ADDFD with SEND), or handed to a worker.
    Done,
}

/// How long the system call that a held call performs may take.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Blocking {
    /// Returns at once (bind, listen, a non-blocking socket's call).
    No,
    /// May wait (a blocking connect, accept or send): never on the
    /// notification loop, which serves every other held call meanwhile.
    May,
}

impl Call {
    /// Performs `op` (the system call on the caller's socket) with the
    /// caller's credentials, never the supervisor's (see `credentials`),
    /// then gives its result to `then` on the notification loop, whose
    /// answer answers the call.
    ///
    /// `op` runs right here when the caller's credentials are the
    /// supervisor's and it does not block; else on a worker that has
    /// them. A caller whose credentials cannot be read (gone) gets `ESRCH`.
    pub(super) fn perform<T: Send + 'static>(
        self,
        blocking: Blocking,
        op: impl FnOnce() -> T + Send + 'static,
        then: impl FnOnce(Call, T) -> Answer + Send + 'static,
    ) -> Answer {
        let Some(creds) = Creds::of(self.tid) else {
            return Answer::Result(Err(libc::ESRCH));
        };
        // The credentials read are the caller's only if it still waits.
        if !self.valid() {
            return Answer::Result(Err(libc::ESRCH));
        }
        if blocking == Blocking::No && self.core.own_creds.as_ref() == Some(&creds) {
            let r = op();
            return then(self, r);
        }
        let core = self.core.clone();
        core.workers.clone().submit(
            creds,
            Box::new(move |assumed| {
                let call = self;
                let answer = match assumed {
                    Ok(()) => {
                        let r = op();
                        let c = call.clone();
                        call.core.clone().complete(Box::new(move || {
                            let answer = then(c.clone(), r);
                            c.send(answer);
                        }));
                        return;
                    }
                    // Fail closed: without the caller's credentials the
                    // call is not performed.
                    Err(_) => Answer::Result(Err(libc::EPERM)),
                };
                call.send(answer);
            }),
        );
        Answer::Done
    }

    pub(super) fn valid(&self) -> bool {
        // SAFETY: valid pointer to the u64 id.
        unsafe {
            libc::ioctl(
                self.core.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &self.id,
            ) == 0
        }
    }

    pub(super) fn send(&self, answer: Answer) {
        let mut resp = libc::seccomp_notif_resp {
            id: self.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        match answer {
            Answer::Done => return,
            Answer::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Result(Ok(v)) => resp.val = v,
            Answer::Result(Err(e)) => resp.error = -e,
        }
        // SAFETY: valid pointer to a response; failure means the caller is gone.
        unsafe {
            libc::ioctl(
                self.core.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp,
            );
        }
    }

    pub(super) fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Ok(buf);
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: local iovec points to our buffer of len bytes.
        let n = unsafe { libc::process_vm_readv(self.tid as i32, &local, 1, &remote, 1, 0) };
        if n < 0 {
            let e = last_errno();
            return Err(if e == libc::ESRCH {
                libc::ESRCH
            } else {
                libc::EFAULT
            });
        }
        if n as usize != len {
            return Err(libc::EFAULT);
        }
        Ok(buf)
    }

    pub(super) fn write_mem(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: local iovec points to data.
        let n = unsafe { libc::process_vm_writev(self.tid as i32, &local, 1, &remote, 1, 0) };
        if n < 0 || n as usize != data.len() {
            return Err(libc::EFAULT);
        }
        Ok(())
    }

    pub(super) fn emit(&self, req: &Request, verdict: &Verdict, local: Option<Endpoint>) {
        let Some(f) = &self.core.on_event else {
            return;
        };
        let unspecified = match req.family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let netns = std::fs::metadata(format!("/proc/{}/ns/net", req.tid))
            .ok()
            .map(|m| m.ino());
        let ev = Event {
            kind: req.op.event_kind(),
            time: SystemTime::now(),
            verdict: verdict.action,
            rule: verdict.rule.clone(),
            owner: Some(req.owner()),
            proto: req.proto,
            family: req.family,
            local: local.or(req.local).unwrap_or(Endpoint::new(unspecified, 0)),
            remote: req.remote,
            socket: req.socket,
            existing: false,
            netns,
            remote_host: None,
            details: Details {
                backlog: req.backlog,
                listener: req.listener,
                ..Default::default()
            },
        };
        f(&ev);
    }
}

impl Call {
    pub(super) fn request(
        &self,
        sock: &Sock,
        op: Operation,
        syscall: Syscall,
        local: Option<Endpoint>,
        remote: Option<Endpoint>,
    ) -> Request {
        let (pid, uid, comm, exe, cgroup) = self.who();
        // Read while the call is held: the caller cannot exit or exec.
        let ppid = crate::procfs::ppid(pid);
        Request {
            pid,
            tid: self.tid,
            uid,
            comm,
            exe,
            cgroup,
            ppid,
            parent_exe: ppid.and_then(crate::procfs::exe).map(Into::into),
            cmdline: (op == Operation::Listen)
                .then(|| crate::procfs::cmdline(pid))
                .flatten()
                .map(Into::into),
            op,
            syscall,
            proto: sock.proto(),
            family: sock.family,
            local,
            remote,
            socket: sock.cookie(),
            backlog: None,
            listener: None,
        }
    }

    /// Asks the callback, after checking the caller still waits (so /proc
    /// data read for the request was the caller's).
    pub(super) fn decide(&self, req: &Request) -> Option<Verdict> {
        if !self.valid() {
            return None;
        }
        Some((self.core.decide)(req))
    }

    pub(super) fn read_addr(&self, ptr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        if len > size_of::<libc::sockaddr_storage>() as u64 {
            return Err(libc::EINVAL);
        }
        self.read_mem(ptr, len as usize)
    }
}
