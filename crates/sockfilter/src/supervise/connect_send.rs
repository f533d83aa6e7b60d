//! Emulation of `connect` and of `sendto`, `sendmsg` and `sendmmsg` to a
//! destination (a UDP "connect").

use super::call::{Answer, Blocking, Call};
use super::message::{read_messages, send_msg, Msg};
use super::request::{Operation, Syscall};
use super::sockaddr::{sockaddr_ptr, target, Addr};
use super::socket::Sock;
use super::sys::{cvt, SysResult};
use std::mem::size_of;
use std::os::fd::AsRawFd;

/// `connect(fd, addr, len)`: decided on the destination, performed on the
/// duplicate with the copy that was decided on.
pub(super) fn do_connect(call: Call, sock: Sock) -> Answer {
    let bytes = match call.read_addr(call.args[1], call.args[2] as u32 as u64) {
        Ok(b) => b,
        Err(e) => return Answer::Result(Err(e)),
    };
    let blocking = if sock.nonblocking() {
        Blocking::No
    } else {
        Blocking::May
    };
    let ep = match target(&sock, &bytes, Syscall::Connect) {
        Addr::Ep(e) => e,
        // Disconnect: no destination, nothing to decide.
        Addr::Unspec => {
            return call.perform(
                Blocking::No,
                move || connect(sock, bytes),
                |_, (r, _)| Answer::Result(r),
            )
        }
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
    call.perform(
        blocking,
        move || connect(sock, bytes),
        move |call, (r, sock)| {
            call.emit(&req, &verdict, sock.local());
            Answer::Result(r)
        },
    )
}

/// `connect` on the duplicate with the address copy.
fn connect(sock: Sock, bytes: Vec<u8>) -> (SysResult, Sock) {
    // SAFETY: bytes holds the address copy.
    let r = cvt(unsafe {
        libc::connect(
            sock.fd.as_raw_fd(),
            sockaddr_ptr(&bytes),
            bytes.len() as libc::socklen_t,
        )
    } as libc::c_long);
    (r, sock)
}

/// `sendto`, `sendmsg` and `sendmmsg`: every destination decided (once per
/// socket, process and destination), the messages sent from the copy.
pub(super) fn do_send(call: Call, sock: Sock, sc: Syscall) -> Answer {
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
    let batch = match read_messages(&call, &sock, sc) {
        Ok(m) => m,
        Err(e) => return Answer::Result(Err(e)),
    };
    if let Err(answer) = decide_destinations(&call, &sock, sc, &batch.msgs) {
        return answer;
    }
    let blocking = if !sock.nonblocking() && flags & libc::MSG_DONTWAIT == 0 {
        Blocking::May
    } else {
        Blocking::No
    };
    call.perform(
        blocking,
        move || {
            let fd = sock.fd.as_raw_fd();
            let msgs = &batch.msgs;
            if blocking == Blocking::No {
                return send_all(fd, msgs, flags);
            }
            // Most blocking sends do not block: try without waiting first.
            match send_all(fd, msgs, flags | libc::MSG_DONTWAIT) {
                (sent, Some(libc::EAGAIN)) if sent.is_empty() => send_all(fd, msgs, flags),
                r => r,
            }
        },
        move |call, (sent, err)| Answer::Result(sent_result(&call, sc, &sent, err)),
    )
}

/// Decides each destination not already allowed for this socket and
/// process; `Err` is the call's answer when one is denied.
fn decide_destinations(call: &Call, sock: &Sock, sc: Syscall, msgs: &[Msg]) -> Result<(), Answer> {
    let cookie = sock.cookie();
    let mut pid = None;
    for m in msgs {
        let Some(ep) = m.ep else { continue };
        let pid_now = *pid.get_or_insert_with(|| call.who_ids().0);
        let key = (cookie, pid_now, ep);
        if call.core.sent.lock().unwrap().contains(&key) {
            continue;
        }
        let req = call.request(sock, Operation::Connect, sc, sock.local(), Some(ep));
        let Some(verdict) = call.decide(&req) else {
            return Err(Answer::Result(Err(libc::ESRCH)));
        };
        call.emit(&req, &verdict, None);
        if !verdict.allows() {
            return Err(Answer::Result(Err(libc::EPERM)));
        }
        let mut sent = call.core.sent.lock().unwrap();
        if sent.len() > 65536 {
            sent.clear();
        }
        sent.insert(key);
    }
    Ok(())
}

/// Sends `msgs` in order until one fails: the bytes sent of each message
/// sent, and the error that stopped it.
fn send_all(fd: libc::c_int, msgs: &[Msg], flags: i32) -> (Vec<i64>, Option<i32>) {
    let mut sent = Vec::with_capacity(msgs.len());
    for m in msgs {
        match send_msg(fd, m, flags) {
            Ok(n) => sent.push(n),
            Err(e) => return (sent, Some(e)),
        }
    }
    (sent, None)
}

/// The result of the call: bytes sent (`sendto`, `sendmsg`), or messages
/// sent with each one's `msg_len` written back into the caller
/// (`sendmmsg`); the error when nothing was sent.
fn sent_result(call: &Call, sc: Syscall, sent: &[i64], err: Option<i32>) -> SysResult {
    if sc != Syscall::Sendmmsg {
        return match (sent.first(), err) {
            (Some(&n), _) => Ok(n),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(0),
        };
    }
    if sent.is_empty() {
        if let Some(e) = err {
            return Err(e);
        }
    }
    for (i, n) in sent.iter().enumerate() {
        let at = call.args[1] + (i * size_of::<libc::mmsghdr>()) as u64;
        let off = std::mem::offset_of!(libc::mmsghdr, msg_len) as u64;
        let _ = call.write_mem(at + off, &(*n as u32).to_ne_bytes());
    }
    Ok(sent.len() as i64)
}
