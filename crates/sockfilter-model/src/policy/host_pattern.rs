//! `remote_host` patterns: a DNS name, or `*.` and a domain for any name
//! below that domain.

use std::fmt;

/// Longest name a pattern may hold, in characters: its DNS wire form
/// (labels with a length byte each, no root label) must fit the kernel's
/// 128-byte key (`SF_HOST_LEN`).
pub const MAX_NAME: usize = 127;

/// One item of `remote_host`, lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name strictly below this domain (`*.example.org` matches
    /// `a.example.org` and `a.b.example.org`, not `example.org`).
    Below(String),
}

impl HostPattern {
    /// Parses `api.example.com` or `*.example.org` (case-insensitive; a
    /// trailing dot is allowed). Errors say what is wrong.
    ///
    /// ```
    /// use sockfilter_model::policy::HostPattern;
    /// let p = HostPattern::parse("*.Example.org").unwrap();
    /// assert!(p.matches("a.b.example.org") && !p.matches("example.org"));
    /// assert!(HostPattern::parse("a.*.org").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let lower = s.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        let (below, name) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if name.is_empty() {
            return Err(
                "is empty; expected a DNS name such as \"api.example.com\" or \"*.example.org\""
                    .into(),
            );
        }
        if name.len() > MAX_NAME {
            return Err(format!("is longer than {MAX_NAME} characters"));
        }
        let labels: Vec<&str> = name.split('.').collect();
        for l in &labels {
            if l.is_empty() {
                return Err("has an empty label (two dots in a row, or a leading dot)".into());
            }
            if l.len() > 63 {
                return Err(format!("has a label longer than 63 characters ({l:?})"));
            }
            if l.contains('*') {
                return Err("has a `*` that is not the first label; only a leading \"*.\" is allowed (any name below the domain)".into());
            }
            if let Some(c) = l
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(format!("has the character {c:?}; DNS names are letters, digits, '-' and '_' separated by dots"));
            }
        }
        Ok(if below {
            HostPattern::Below(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether `name` (lowercase, no trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Exact(n) => n == name,
            HostPattern::Below(d) => name
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// The name or domain, without `*.`.
    pub fn name(&self) -> &str {
        match self {
            HostPattern::Exact(n) | HostPattern::Below(n) => n,
        }
    }

    /// Whether this is a `*.` pattern.
    pub fn is_below(&self) -> bool {
        matches!(self, HostPattern::Below(_))
    }

    /// The name in DNS wire form (length-prefixed labels, no root label),
    /// as the kernel compares it with the names in answers.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.name().len() + 1);
        for l in self.name().split('.') {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(n) => f.write_str(n),
            HostPattern::Below(d) => write!(f, "*.{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let exact = HostPattern::parse("API.example.com.").unwrap();
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let below = HostPattern::parse("*.example.org").unwrap();
        assert!(below.matches("a.example.org"));
        assert!(!below.matches("example.org"));
        assert!(!below.matches("badexample.org"));
        assert_eq!(below.wire(), b"\x07example\x03org");
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "a.*.b",
            "a b.c",
            &"x".repeat(64),
            &"ab.".repeat(43), // 129 characters
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
