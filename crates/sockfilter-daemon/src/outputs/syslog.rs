//! The syslog output: one RFC 5424 message per event whose MSG is the JSON
//! event, to a local datagram socket (`/dev/log`), over UDP (one message
//! per datagram) or over TCP (octet-counted framing, RFC 6587).

use crate::config::SyslogAddress;
use sockfilter_model::event::{rfc3339, Verdict};
use sockfilter_model::Event;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Facility `daemon` (3), as RFC 5424 numbers it.
const FACILITY_DAEMON: u8 = 3;
/// Severities: `informational` for allowed operations, `warning` for denied
/// or audited ones.
const SEVERITY_INFO: u8 = 6;
const SEVERITY_WARNING: u8 = 4;
/// A send to a stalled TCP server gives up after this long (counted as an
/// error) instead of stalling the daemon.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// A syslog destination.
pub struct SyslogOutput {
    address: SyslogAddress,
    conn: Option<Conn>,
    host: String,
    pid: u32,
    message: String,
}

fn connect(address: &SyslogAddress) -> std::io::Result<Conn> {
    let resolve = |a: &str| {
        a.to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{a}: no address")))
    };
    Ok(match address {
        SyslogAddress::Unix(path) => {
            let s = UnixDatagram::unbound()?;
            s.connect(path)?;
            s.set_write_timeout(Some(SEND_TIMEOUT))?;
            Conn::Unix(s)
        }
        SyslogAddress::Udp(a) => {
            let to = resolve(a)?;
            let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            s.connect(to)?;
            Conn::Udp(s)
        }
        SyslogAddress::Tcp(a) => {
            let s = TcpStream::connect_timeout(&resolve(a)?, SEND_TIMEOUT)?;
            s.set_write_timeout(Some(SEND_TIMEOUT))?;
            s.set_nodelay(true)?;
            Conn::Tcp(s)
        }
    })
}

/// `<PRI>1 TIMESTAMP HOST sockfilter PID KIND - JSON`.
pub fn format_message(event: &Event, json: &str, host: &str, pid: u32, out: &mut String) {
    use std::fmt::Write as _;
    let severity = if event.verdict == Verdict::Allow {
        SEVERITY_INFO
    } else {
        SEVERITY_WARNING
    };
    let _ = write!(
        out,
        "<{}>1 {} {host} sockfilter {pid} {} - {json}",
        FACILITY_DAEMON * 8 + severity,
        rfc3339(event.time),
        event.kind.as_str()
    );
}

impl SyslogOutput {
    /// Connects to the syslog server; fails when it cannot be reached.
    pub fn open(address: SyslogAddress, host: &str) -> anyhow::Result<SyslogOutput> {
        let conn =
            connect(&address).map_err(|e| anyhow::anyhow!("syslog output {address}: {e}"))?;
        Ok(SyslogOutput {
            address,
            conn: Some(conn),
            host: host.to_string(),
            pid: std::process::id(),
            message: String::with_capacity(1024),
        })
    }

    fn write(conn: &mut Conn, message: &str) -> std::io::Result<()> {
        match conn {
            Conn::Unix(s) => s.send(message.as_bytes()).map(drop),
            Conn::Udp(s) => s.send(message.as_bytes()).map(drop),
            Conn::Tcp(s) => {
                let framed = format!("{} {message}", message.len());
                s.write_all(framed.as_bytes())
            }
        }
    }
}

impl super::Output for SyslogOutput {
    fn send(&mut self, event: &Event, json: &str) -> Result<(), String> {
        self.message.clear();
        format_message(event, json, &self.host, self.pid, &mut self.message);
        // One reconnection per message: a restarted server (or a rotated
        // /dev/log) is picked up at the next event.
        for attempt in 0..2 {
            if self.conn.is_none() {
                match connect(&self.address) {
                    Ok(c) => self.conn = Some(c),
                    Err(e) if attempt == 1 => return Err(format!("{}: {e}", self.address)),
                    Err(_) => continue,
                }
            }
            let conn = self.conn.as_mut().expect("connected above");
            match Self::write(conn, &self.message) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.conn = None;
                    if attempt == 1 {
                        return Err(format!("{}: {e}", self.address));
                    }
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_rfc5424_with_the_json_as_msg() {
        let json = r#"{"event":"listen","time":"2026-01-01T00:00:00.000000Z","verdict":"deny","pid":1,"uid":0,"comm":"x","exe":null,"cgroup":null,"proto":"tcp","family":"ipv4","local":{"ip":"127.0.0.1","port":80},"remote":null,"socket":1,"existing":false,"rule":"r","backlog":1}"#;
        let e = Event::from_json(&serde_json::from_str(json).unwrap()).unwrap();
        let mut m = String::new();
        format_message(&e, json, "web-01", 7, &mut m);
        assert_eq!(
            m,
            format!("<28>1 2026-01-01T00:00:00.000000Z web-01 sockfilter 7 listen - {json}")
        );
    }
}
