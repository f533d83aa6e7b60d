//! Emulation of `connect` and of `sendto`, `sendmsg` and `sendmmsg` to a
//! destination (a UDP "connect").

use super::call::{Answer, Call};
use super::message::{read_msghdr, send_msg, Msg, MAX_IOV, MAX_PAYLOAD};
use super::request::{Operation, Syscall};
use super::sockaddr::{sockaddr_ptr, target, Addr};
use super::socket::Sock;
use super::sys::{cvt, Errno, SysResult};
use std::mem::size_of;
use std::os::fd::AsRawFd;

pub(super) fn do_connect(call: &Call, sock: Sock) -> Answer {
    let bytes = match call.read_addr(call.args[1], call.args[2] as u32 as u64) {
        Ok(b) => b,
        Err(e) => return Answer::Result(Err(e)),
    };
    let perform = |sock: &Sock| {
        // SAFETY: bytes holds the address copy.
        cvt(unsafe {
            libc::connect(
                sock.fd.as_raw_fd(),
                sockaddr_ptr(&bytes),
                bytes.len() as libc::socklen_t,
            )
        } as libc::c_long)
    };
    let ep = match target(&sock, &bytes, Syscall::Connect) {
        Addr::Ep(e) => e,
        // Disconnect: no destination, nothing to decide.
        Addr::Unspec => return Answer::Result(perform(&sock)),
        Addr::Bad(e) => return Answer::Result(Err(e)),
    };
    let req = call.request(
        &sock,
        Operation::Connect,
        Syscall::Connect,
        sock.local(),
        Some(ep),
    );
    let Some(verdict) = call.decide(&req) else {
        return Answer::Result(Err(libc::ESRCH));
    };
    if !verdict.allows() {
        call.emit(&req, &verdict, None);
        return Answer::Result(Err(libc::EPERM));
    }
    if sock.nonblocking() {
        let r = perform(&sock);
        call.emit(&req, &verdict, sock.local());
        return Answer::Result(r);
    }
    // A blocking connect may take long: serve it on its own thread.
    let worker = call.clone_for_worker();
    std::thread::spawn(move || {
        let r = {
            // SAFETY: bytes holds the address copy.
            cvt(unsafe {
                libc::connect(
                    sock.fd.as_raw_fd(),
                    sockaddr_ptr(&bytes),
                    bytes.len() as libc::socklen_t,
                )
            } as libc::c_long)
        };
        worker.emit(&req, &verdict, sock.local());
        worker.send(Answer::Result(r));
    });
    Answer::Done
}

pub(super) fn do_send(call: &Call, sock: Sock, sc: Syscall) -> Answer {
    let flags = match sc {
        Syscall::Sendto => call.args[3] as i32,
        Syscall::Sendmsg => call.args[2] as i32,
        _ => call.args[3] as i32,
    };
    // A stream socket ignores the destination unless it is a fast-open
    // connect: nothing to decide, and no pointer the kernel would use for one.
    if sock.ty == libc::SOCK_STREAM && flags & libc::MSG_FASTOPEN == 0 {
        return Answer::Continue;
    }
    let msgs: Result<Vec<Msg>, Errno> = match sc {
        Syscall::Sendto => (|| {
            let name = call.read_addr(call.args[4], call.args[5] as u32 as u64)?;
            let ep = match target(&sock, &name, sc) {
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
        })(),
        Syscall::Sendmsg => read_msghdr(call, &sock, call.args[1], sc).map(|m| vec![m]),
        _ => (|| {
            let vlen = (call.args[2] as u32 as usize).min(MAX_IOV);
            let stride = size_of::<libc::mmsghdr>();
            let mut v = Vec::with_capacity(vlen);
            for i in 0..vlen {
                v.push(read_msghdr(
                    call,
                    &sock,
                    call.args[1] + (i * stride) as u64,
                    sc,
                )?);
            }
            Ok(v)
        })(),
    };
    let msgs = match msgs {
        Ok(m) => m,
        Err(e) => return Answer::Result(Err(e)),
    };
    // Decide every destination not already allowed for this socket.
    let cookie = sock.cookie();
    let mut pid = None;
    for m in &msgs {
        let Some(ep) = m.ep else { continue };
        let pid_now = *pid.get_or_insert_with(|| call.who_ids().0);
        let key = (cookie, pid_now, ep);
        if call.core.sent.lock().unwrap().contains(&key) {
            continue;
        }
        let req = call.request(&sock, Operation::Connect, sc, sock.local(), Some(ep));
        let Some(verdict) = call.decide(&req) else {
            return Answer::Result(Err(libc::ESRCH));
        };
        call.emit(&req, &verdict, None);
        if !verdict.allows() {
            return Answer::Result(Err(libc::EPERM));
        }
        let mut sent = call.core.sent.lock().unwrap();
        if sent.len() > 65536 {
            sent.clear();
        }
        sent.insert(key);
    }
    let blocking = !sock.nonblocking() && flags & libc::MSG_DONTWAIT == 0;
    if !blocking {
        return Answer::Result(send_all(call, &sock, &msgs, sc, flags));
    }
    match send_all(call, &sock, &msgs, sc, flags | libc::MSG_DONTWAIT) {
        Err(libc::EAGAIN) => {}
        r => return Answer::Result(r),
    }
    // The send would block: finish it on its own thread.
    let worker = call.clone_for_worker();
    std::thread::spawn(move || {
        let r = send_all(&worker, &sock, &msgs, sc, flags);
        worker.send(Answer::Result(r));
    });
    Answer::Done
}

pub(super) fn send_all(
    call: &Call,
    sock: &Sock,
    msgs: &[Msg],
    sc: Syscall,
    flags: i32,
) -> SysResult {
    let fd = sock.fd.as_raw_fd();
    if sc != Syscall::Sendmmsg {
        return send_msg(fd, &msgs[0], flags);
    }
    let mut done = 0usize;
    for (i, m) in msgs.iter().enumerate() {
        match send_msg(fd, m, flags) {
            Ok(n) => {
                let at = call.args[1] + (i * size_of::<libc::mmsghdr>()) as u64;
                let off = std::mem::offset_of!(libc::mmsghdr, msg_len) as u64;
                let _ = call.write_mem(at + off, &(n as u32).to_ne_bytes());
                done += 1;
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done as i64)
}
