//! Making strings that a process controls safe to print on a terminal.
//!
//! A process chooses its own command name (`prctl(PR_SET_NAME)`), the path
//! it executes from, its cgroup's name and its arguments. Printed raw, such a
//! string could carry terminal escape sequences (clear the screen, move the
//! cursor, rewrite the window title) or newlines that forge whole lines of
//! output. Every such string goes through [`escape`] (or [`escape_bytes`]
//! for raw bytes) before it reaches text output; JSON output stays exact,
//! because JSON escapes control characters itself.
//!
//! The escaped form is unambiguous: a backslash is doubled, so `\x1b` in the
//! output always means the byte 0x1b was in the string, never the four
//! characters `\`, `x`, `1`, `b`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as itself: C0 and C1 control
/// characters, DEL, the backslash (the escape character itself), and the
/// invisible Unicode formatting characters that reorder or hide text
/// (bidirectional overrides and isolates, zero-width characters, line and
/// paragraph separators, the byte-order mark), which can make a line read
/// differently from what it contains.
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\0'..='\u{1f}' | '\\' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every character that could act on a terminal written as an
/// escape: `\x1b` for ESC and the other C0 controls and DEL, `\n`, `\r`,
/// `\t`, `\\` for a backslash, `\u{9b}` for C1 controls and invisible
/// formatting characters. Everything else, including any printable
/// non-ASCII text, is kept. Borrows when nothing needs escaping.
///
/// ```
/// use sockfilter_model::text::escape;
/// assert_eq!(escape("nginx"), "nginx");
/// assert_eq!(escape("\x1b[2J\nroot\\"), "\\x1b[2J\\nroot\\\\");
/// assert_eq!(escape("caf\u{e9} \u{202e}"), "caf\u{e9} \\u{202e}");
/// ```
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`escape`], for bytes that need not be UTF-8 (a path or argument
/// read from a process's memory): valid UTF-8 is escaped as [`escape`]
/// does, and each byte of an invalid sequence is written as `\xNN`, so the
/// exact bytes can be read back from the output.
///
/// ```
/// use sockfilter_model::text::escape_bytes;
/// assert_eq!(escape_bytes(b"/tmp/\xff\x1b"), "/tmp/\\xff\\x1b");
/// ```
pub fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// [`escape`] of an optional string, or `none` when it is absent.
pub fn escape_or<'a>(s: Option<&'a str>, none: &'a str) -> Cow<'a, str> {
    s.map_or(Cow::Borrowed(none), escape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in [
            "",
            "python3",
            "/usr/bin/python3.11",
            "/système/ünïcode",
            "a b",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(x) if x == s));
        }
    }

    #[test]
    fn no_control_character_survives() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let e = escape(&all);
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        for bad in [
            '\u{1b}', '\u{9b}', '\n', '\r', '\u{7f}', '\u{202e}', '\u{2028}',
        ] {
            assert!(!e.contains(bad), "{bad:?} survived");
        }
    }

    #[test]
    fn escapes_are_the_readable_forms() {
        assert_eq!(escape("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(escape("a\r\n\tb"), "a\\r\\n\\tb");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape("\u{7f}"), "\\x7f");
    }

    #[test]
    fn a_backslash_is_doubled_so_escapes_cannot_be_faked() {
        // The literal text `\x1b` and the byte ESC print differently.
        assert_eq!(escape("\\x1b"), "\\\\x1b");
        assert_eq!(escape("\x1b"), "\\x1b");
    }

    #[test]
    fn invalid_utf8_bytes_are_written_as_hex() {
        assert_eq!(escape_bytes(b"ok"), "ok");
        assert_eq!(escape_bytes(b"a\xc3(\n"), "a\\xc3(\\n");
        assert_eq!(escape_bytes("é".as_bytes()), "é");
    }

    #[test]
    fn escape_or_uses_the_placeholder() {
        assert_eq!(escape_or(None, "-"), "-");
        assert_eq!(escape_or(Some("\n"), "-"), "\\n");
    }
}
