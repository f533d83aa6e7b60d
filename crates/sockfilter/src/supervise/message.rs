//! Messages of an emulated send, copied once out of the caller.

use super::call::Call;
use super::request::Syscall;
use super::sockaddr::{target, Addr};
use super::socket::Sock;
use super::sys::{cvt, Errno, SysResult};
use sockfilter_model::event::Endpoint;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;

/// Largest payload copied for one emulated send.
const MAX_PAYLOAD: usize = 1 << 20;
/// The kernel's UIO_MAXIOV.
const MAX_IOV: usize = 1024;

/// One message to send, copied out of the caller.
pub(super) struct Msg {
    pub(super) name: Option<Vec<u8>>,
    pub(super) data: Vec<u8>,
    pub(super) control: Vec<u8>,
    pub(super) ep: Option<Endpoint>,
}

/// Copies the messages of a `sendto`, `sendmsg` or `sendmmsg` out of the
/// caller, each once.
pub(super) fn read_messages(call: &Call, sock: &Sock, sc: Syscall) -> Result<Vec<Msg>, Errno> {
    match sc {
        Syscall::Sendto => {
            let name = call.read_addr(call.args[4], call.args[5] as u32 as u64)?;
            let ep = match target(sock, &name, sc) {
                Addr::Ep(e) => Some(e),
                Addr::Unspec => None,
                Addr::Bad(e) => return Err(e),
            };
            let len = (call.args[2] as usize).min(MAX_PAYLOAD);
            let data = call.read_mem(call.args[1], len)?;
            Ok(vec![Msg {
                name: Some(name),
                data,
                control: Vec::new(),
                ep,
            }])
        }
        Syscall::Sendmsg => read_msghdr(call, sock, call.args[1], sc).map(|m| vec![m]),
        _ => {
            let vlen = (call.args[2] as u32 as usize).min(MAX_IOV);
            let stride = size_of::<libc::mmsghdr>();
            let mut v = Vec::with_capacity(vlen);
            for i in 0..vlen {
                v.push(read_msghdr(
                    call,
                    sock,
                    call.args[1] + (i * stride) as u64,
                    sc,
                )?);
            }
            Ok(v)
        }
    }
}

fn read_msghdr(call: &Call, sock: &Sock, ptr: u64, sc: Syscall) -> Result<Msg, Errno> {
    let raw = call.read_mem(ptr, size_of::<libc::msghdr>())?;
    // SAFETY: msghdr is plain data and raw has its size.
    let h: libc::msghdr = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let name = if h.msg_name.is_null() {
        None
    } else {
        Some(call.read_addr(h.msg_name as u64, h.msg_namelen as u64)?)
    };
    let ep = match &name {
        None => None,
        Some(b) => match target(sock, b, sc) {
            Addr::Ep(e) => Some(e),
            Addr::Unspec => None,
            Addr::Bad(e) => return Err(e),
        },
    };
    let iovlen = h.msg_iovlen as usize;
    if iovlen > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    let mut data = Vec::new();
    if iovlen > 0 {
        let iovs = call.read_mem(h.msg_iov as u64, iovlen * size_of::<libc::iovec>())?;
        for i in 0..iovlen {
            // SAFETY: iovec is plain data; the offset is within iovs.
            let v: libc::iovec = unsafe {
                std::ptr::read_unaligned(iovs.as_ptr().add(i * size_of::<libc::iovec>()).cast())
            };
            let take = v.iov_len.min(MAX_PAYLOAD - data.len());
            data.extend(call.read_mem(v.iov_base as u64, take)?);
        }
    }
    if h.msg_controllen > 65536 {
        return Err(libc::ENOBUFS);
    }
    let control = if h.msg_control.is_null() {
        Vec::new()
    } else {
        call.read_mem(h.msg_control as u64, h.msg_controllen)?
    };
    Ok(Msg {
        name,
        data,
        control,
        ep,
    })
}

pub(super) fn send_msg(fd: RawFd, m: &Msg, flags: i32) -> SysResult {
    let mut iov = libc::iovec {
        iov_base: m.data.as_ptr() as *mut libc::c_void,
        iov_len: m.data.len(),
    };
    // SAFETY: msghdr is plain data.
    let mut h: libc::msghdr = unsafe { zeroed() };
    if let Some(n) = &m.name {
        h.msg_name = n.as_ptr() as *mut libc::c_void;
        h.msg_namelen = n.len() as u32;
    }
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    if !m.control.is_empty() {
        h.msg_control = m.control.as_ptr() as *mut libc::c_void;
        h.msg_controllen = m.control.len();
    }
    // SAFETY: every pointer in h refers to live buffers of m.
    cvt(unsafe { libc::sendmsg(fd, &h, flags) } as libc::c_long)
}
