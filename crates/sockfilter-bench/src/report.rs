//! The Markdown report, printed as it grows, and the formatting of its cells.

use std::io::Write;
use std::path::PathBuf;

/// The report, printed as it grows and written out at the end.
pub struct Report {
    /// The Markdown so far.
    pub md: String,
    /// Where it is written after each line (`--out`).
    pub out: Option<PathBuf>,
}

impl Report {
    /// Prints a line and appends it to the report (written out at once).
    pub fn line(&mut self, s: impl AsRef<str>) {
        println!("{}", s.as_ref());
        let _ = std::io::stdout().flush();
        self.md.push_str(s.as_ref());
        self.md.push('\n');
        if let Some(p) = &self.out {
            let _ = std::fs::write(p, &self.md);
        }
    }
}

/// A progress note on stderr, not part of the report.
pub fn note(s: impl AsRef<str>) {
    eprintln!("[bench] {}", s.as_ref());
}

pub(crate) fn mb(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn rate_fmt(mode: &str, v: f64) -> String {
    match mode {
        "bulk" => format!("{:.2} GB/s", v / 1e9),
        _ => format!("{v:.0}/s"),
    }
}

pub(crate) fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}
