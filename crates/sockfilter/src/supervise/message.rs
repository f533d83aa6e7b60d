//! Messages of an emulated send, copied once out of the caller.

use super::call::Call;
use super::notify::Core;
use super::request::Syscall;
use super::sockaddr::{target, Addr};
use super::socket::Sock;
use super::sys::{cvt, Errno, SysResult};
use sockfilter_model::event::Endpoint;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Most bytes copied out of the caller for one held send, all messages
/// together (payload, iovec arrays, control data): a `sendmmsg` of 1,024
/// messages of 1 MiB each must not make the supervisor copy 1 GiB. A
/// `sendmmsg` stops before the first message that does not fit (it returns
/// the number sent, as the kernel's may); a single message longer than
/// this is cut to it (a datagram that long is refused by the kernel anyway,
/// a stream send may be short).
const MAX_COPY: usize = 1 << 20;
/// Most bytes held, for all held sends together, while they wait for a
/// worker or to be sent; beyond it a send fails with `ENOBUFS`.
const MAX_IN_FLIGHT: usize = 64 << 20;
/// The kernel's UIO_MAXIOV.
const MAX_IOV: usize = 1024;
/// The kernel's limit on control data (`sysctl_optmem_max` is smaller).
const MAX_CONTROL: usize = 65536;

/// One message to send, copied out of the caller.
pub(super) struct Msg {
    pub(super) name: Option<Vec<u8>>,
    pub(super) data: Vec<u8>,
    pub(super) control: Vec<u8>,
    pub(super) ep: Option<Endpoint>,
}

/// The messages of one held send, and their share of [`MAX_IN_FLIGHT`]
/// (given back when dropped).
pub(super) struct Batch {
    pub(super) msgs: Vec<Msg>,
    bytes: usize,
    core: Arc<Core>,
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.core.in_flight.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Copies the messages of a `sendto`, `sendmsg` or `sendmmsg` out of the
/// caller, each once, within [`MAX_COPY`]; `ENOBUFS` when the held sends
/// would hold more than [`MAX_IN_FLIGHT`].
pub(super) fn read_messages(call: &Call, sock: &Sock, sc: Syscall) -> Result<Batch, Errno> {
    let mut left = MAX_COPY;
    let msgs = match sc {
        Syscall::Sendto => {
            let name = call.read_addr(call.args[4], call.args[5] as u32 as u64)?;
            let ep = match target(sock, &name, sc) {
                Addr::Ep(e) => Some(e),
                Addr::Unspec => None,
                Addr::Bad(e) => return Err(e),
            };
            let len = (call.args[2] as usize).min(left);
            let data = call.read_mem(call.args[1], len)?;
            left -= len;
            vec![Msg {
                name: Some(name),
                data,
                control: Vec::new(),
                ep,
            }]
        }
        Syscall::Sendmsg => {
            let m = read_msghdr(call, sock, call.args[1], sc, &mut left, true)?;
            vec![m.expect("the first message always fits")]
        }
        _ => {
            let vlen = (call.args[2] as u32 as usize).min(MAX_IOV);
            let stride = size_of::<libc::mmsghdr>();
            let mut v = Vec::new();
            for i in 0..vlen {
                let at = call.args[1] + (i * stride) as u64;
                match read_msghdr(call, sock, at, sc, &mut left, i == 0)? {
                    Some(m) => v.push(m),
                    None => break,
                }
            }
            v
        }
    };
    let bytes = MAX_COPY - left;
    let core = call.core.clone();
    if core.in_flight.fetch_add(bytes, Ordering::SeqCst) + bytes > MAX_IN_FLIGHT {
        core.in_flight.fetch_sub(bytes, Ordering::SeqCst);
        return Err(libc::ENOBUFS);
    }
    Ok(Batch { msgs, bytes, core })
}

/// One `msghdr` at `ptr`, copied within `left` bytes (and `left` reduced):
/// None when it does not fit whole and is not the `first` (which is cut).
fn read_msghdr(
    call: &Call,
    sock: &Sock,
    ptr: u64,
    sc: Syscall,
    left: &mut usize,
    first: bool,
) -> Result<Option<Msg>, Errno> {
    let raw = call.read_mem(ptr, size_of::<libc::msghdr>())?;
    // SAFETY: msghdr is plain data and raw has its size.
    let h: libc::msghdr = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let iovlen = h.msg_iovlen;
    if iovlen > MAX_IOV {
        return Err(libc::EMSGSIZE);
    }
    if h.msg_controllen > MAX_CONTROL {
        return Err(libc::ENOBUFS);
    }
    let iov_bytes = iovlen * size_of::<libc::iovec>();
    let control_len = if h.msg_control.is_null() {
        0
    } else {
        h.msg_controllen
    };
    if iov_bytes + control_len > *left {
        return if first { Err(libc::ENOBUFS) } else { Ok(None) };
    }
    let iovs: Vec<libc::iovec> = if iovlen == 0 {
        Vec::new()
    } else {
        let raw = call.read_mem(h.msg_iov as u64, iov_bytes)?;
        (0..iovlen)
            // SAFETY: iovec is plain data; the offset is within raw.
            .map(|i| unsafe {
                std::ptr::read_unaligned(raw.as_ptr().add(i * size_of::<libc::iovec>()).cast())
            })
            .collect()
    };
    let payload = iovs.iter().fold(0usize, |n, v| n.saturating_add(v.iov_len));
    if !first && iov_bytes + control_len + payload > *left {
        return Ok(None);
    }
    *left -= iov_bytes + control_len;
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
    let mut data = Vec::new();
    for v in &iovs {
        let take = v.iov_len.min(*left);
        data.extend(call.read_mem(v.iov_base as u64, take)?);
        *left -= take;
    }
    let control = if control_len == 0 {
        Vec::new()
    } else {
        call.read_mem(h.msg_control as u64, control_len)?
    };
    Ok(Some(Msg {
        name,
        data,
        control,
        ep,
    }))
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
