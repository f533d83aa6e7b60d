//! The pieces `Event::write_json` appends: strings escaped exactly as
//! serde_json escapes them, integers, IP addresses and RFC 3339 times,
//! written straight into the output without `core::fmt` or allocation.
//! `watch --json` runs these several times per event, at hundreds of
//! thousands of events per second (docs/BENCHMARKS.md).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `s` as a JSON string, escaped exactly as serde_json does.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut clean = 0; // start of the run not yet copied
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Every byte that needs escaping is ASCII, so `i` is a char boundary.
        out.push_str(&s[clean..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escape);
        }
        clean = i + 1;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

/// Appends `v` in decimal.
pub(crate) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

/// Appends `ip` as its `Display` form writes it.
pub(crate) fn push_ip(out: &mut String, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (n, octet) in v4.octets().iter().enumerate() {
                if n > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(*octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `t` as RFC 3339 UTC with microseconds, the same text as
/// `humantime::format_rfc3339_micros` (`2026-11-26T08:22:09.123456Z`).
pub(crate) fn push_rfc3339_micros(out: &mut String, t: SystemTime) {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else {
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(t));
        return;
    };
    let secs = since.as_secs();
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(t));
        return;
    }
    let rem = secs % 86_400;
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    digits(&mut buf[0..4], year);
    digits(&mut buf[5..7], month);
    digits(&mut buf[8..10], day);
    digits(&mut buf[11..13], rem / 3600);
    digits(&mut buf[14..16], rem / 60 % 60);
    digits(&mut buf[17..19], rem % 60);
    digits(&mut buf[20..26], u64::from(since.subsec_micros()));
    // Only ASCII was written.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

/// Writes `v` into `dst` in decimal, zero-padded to its width.
fn digits(dst: &mut [u8], mut v: u64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Year, month (1–12) and day (1–31) of the `days`th day after 1970-01-01
/// in the proleptic Gregorian calendar (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "r\"1\\\n\u{1}é",
            "\u{8}\u{c}\t\r\u{1f}\u{7f}",
            "ünïcødé ✓ \"end",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::Value::from(s).to_string(), "{s:?}");
        }
    }

    #[test]
    fn numbers_and_addresses_are_as_display_writes_them() {
        for v in [0, 7, 10, 65535, 4026531833, u64::MAX] {
            let mut out = String::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
        for ip in ["0.0.0.0", "127.0.0.1", "255.10.0.99", "::1", "fe80::1:2"] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, &ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn times_match_humantime_across_leap_years_and_centuries() {
        let mut secs: u64 = 0;
        // ~every 37 days over 400 years, plus each second around midnight.
        while secs < 400 * 366 * 86_400 {
            for extra in [0u64, 1, 86_399] {
                let t = UNIX_EPOCH + Duration::new(secs + extra, 123_456_789);
                let mut out = String::new();
                push_rfc3339_micros(&mut out, t);
                assert_eq!(out, humantime::format_rfc3339_micros(t).to_string());
            }
            secs += 37 * 86_400 + 3_601;
        }
    }
}
