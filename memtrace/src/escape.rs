//! Text from the kernel and other users, made safe to show: process names, file names and cgroup
//! paths are bytes that anyone can choose.
//!
//! Two escapes, for two different dangers:
//! - [`escape_bytes`] / [`unescape_bytes`]: a lossless, reversible string form of a byte string (a
//!   cgroup path), so two different non-UTF-8 names stay two different strings (lossy UTF-8 had
//!   merged `/rel_\xff\xfe` and `/rel_\xfe\xff` into one cgroup) and the exact bytes can be
//!   recovered to open the directory.
//! - [`terminal`]: what a human-facing line may print. A control character (`\n`, ESC, …) in a
//!   process name would otherwise forge lines or recolour the terminal. JSON and Prometheus
//!   escape by their own rules and do not use it.
use std::borrow::Cow;
use std::fmt::Write as _;

/// `raw` as a string: valid UTF-8 as it is, each byte of an invalid sequence as `\xNN`, and a
/// backslash as `\\` so the form is unambiguous and [`unescape_bytes`] reverses it exactly.
pub fn escape_bytes(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for &byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// The bytes [`escape_bytes`] escaped. Anything it does not write (a lone backslash, `\x` without two
/// hex digits) is kept as it is, so a path typed by hand with a backslash still means itself.
pub fn unescape_bytes(text: &str) -> Vec<u8> {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            if raw.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if raw.get(i + 1) == Some(&b'x')
                && let Some(byte) = raw
                    .get(i + 2..i + 4)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Characters a terminal acts on or that hide or reorder text: control characters (C0, DEL,
/// C1) and the invisible formatting ones (zero-width, bidirectional overrides, BOM).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` for a terminal: every unprintable character as `\n`, `\t`, `\r`, `\e`, `\xNN`
/// (other ASCII) or `\u{NNNN}`. A backslash stays as it is, so an escaped cgroup path
/// ([`escape_bytes`]) reads the same here as in JSON.
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    write_terminal(&mut out, text);
    Cow::Owned(out)
}

/// [`terminal`], appended to `out` (for renderers that write into one buffer).
pub fn write_terminal(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            c if c.is_ascii() && unprintable(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unprintable(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_strings_round_trip_and_stay_distinct() {
        let a = b"/rel_\xff\xfe";
        let b = b"/rel_\xfe\xff";
        assert_eq!(escape_bytes(a), "/rel_\\xff\\xfe");
        assert_eq!(escape_bytes(b), "/rel_\\xfe\\xff");
        assert_ne!(escape_bytes(a), escape_bytes(b));
        for raw in [
            &a[..],
            &b[..],
            b"/plain/path",
            b"/back\\slash",
            b"/lit\\xff-not-a-byte",
            "/caf\u{e9}/\u{1F600}".as_bytes(),
            b"/cut\xe2\x82",
            b"\\",
            b"",
        ] {
            assert_eq!(unescape_bytes(&escape_bytes(raw)), raw, "{raw:?}");
        }
        // A literal backslash-x and the byte it spells are different paths.
        assert_ne!(escape_bytes(b"/\\xff"), escape_bytes(b"/\xff"));
        assert_eq!(
            escape_bytes("/caf\u{e9}".as_bytes()),
            "/caf\u{e9}",
            "UTF-8 kept"
        );
    }

    #[test]
    fn hand_typed_backslashes_mean_themselves() {
        assert_eq!(unescape_bytes("/a\\b"), b"/a\\b");
        assert_eq!(unescape_bytes("/a\\xzz"), b"/a\\xzz");
        assert_eq!(unescape_bytes("/a\\x4"), b"/a\\x4");
        assert_eq!(unescape_bytes("/a\\x41"), b"/aA");
    }

    #[test]
    fn terminal_text_has_no_controls() {
        assert!(matches!(terminal("redis-server"), Cow::Borrowed(_)));
        assert_eq!(terminal("x\n# TYPE y"), "x\\n# TYPE y");
        assert_eq!(terminal("\u{1b}[31mred\u{1b}[0m"), "\\e[31mred\\e[0m");
        assert_eq!(terminal("a\tb\rc\0d\u{7f}"), "a\\tb\\rc\\x00d\\x7f");
        assert_eq!(terminal("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(terminal("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(terminal("/rel_\\xff"), "/rel_\\xff", "backslashes pass");
        assert_eq!(terminal("caf\u{e9} \u{1F600}"), "caf\u{e9} \u{1F600}");
        for hostile in ["x\n# TYPE y", "\u{1b}]0;title\u{7}", "\u{85}next"] {
            assert!(
                !terminal(hostile).chars().any(char::is_control),
                "{hostile:?}"
            );
        }
    }
}
