//! `READY=1` to `$NOTIFY_SOCKET` (the systemd notify protocol), sent once
//! the programs are attached and every output is open.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Sends `message` to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
/// socket). Does nothing when the variable is unset; a failure is reported
/// on stderr (systemd will then time the unit out, which says more).
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(message.as_bytes(), &addr).map(drop)
        } else {
            sock.send_to(message.as_bytes(), Path::new(&path)).map(drop)
        }
    });
    if let Err(e) = result {
        eprintln!("sockfilter: could not notify $NOTIFY_SOCKET: {e}");
    }
}
