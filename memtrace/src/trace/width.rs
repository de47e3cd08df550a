//! Keeping text lines within the terminal: a line wider than the terminal wraps, and a trace of
//! wrapped lines (the cgroup suffix made them ~175 characters) is unreadable. JSON keeps every
//! value whole.
use std::{borrow::Cow, io::IsTerminal as _};

/// The columns text lines may use: `explicit` (`--width`, 0 for unlimited) if given; else the
/// terminal's when stdout is one (`COLUMNS` if set, as shells export it, else the terminal's
/// own size); unlimited when stdout is a file or a pipe (`grep` gets whole lines).
pub fn detect(explicit: Option<usize>) -> Option<usize> {
    if let Some(columns) = explicit {
        return (columns > 0).then_some(columns);
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|&columns| columns > 0);
    from_env.or_else(terminal_columns)
}

/// The terminal's width as the kernel knows it (`TIOCGWINSZ` on stdout).
fn terminal_columns() -> Option<usize> {
    // SAFETY: an all-zero winsize is valid; the ioctl writes at most one winsize.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: stdout is a file descriptor for the whole process; the pointer is valid.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

/// `line` cut to `width` characters, its last one an ellipsis when anything was cut. Lines are
/// escaped (`crate::escape::terminal`) before: one character is one column, but for wide
/// (East Asian) characters, which take two.
pub fn fit(line: &str, width: Option<usize>) -> Cow<'_, str> {
    let Some(width) = width else {
        return Cow::Borrowed(line);
    };
    // Fast path: ASCII lines (nearly all) are as wide as they are long.
    if line.len() <= width {
        return Cow::Borrowed(line);
    }
    match line.char_indices().nth(width) {
        None => Cow::Borrowed(line),
        Some(_) => {
            let keep = width.saturating_sub(1);
            let end = line.char_indices().nth(keep).map_or(line.len(), |(i, _)| i);
            let mut cut = String::with_capacity(end + 3);
            cut.push_str(&line[..end]);
            cut.push('…');
            Cow::Owned(cut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_end_in_an_ellipsis_at_the_width() {
        let line = "12:00:00.000  4242     memcached        mmap     len=1.0 MiB cgroup=/system.slice/memcached.service";
        let cut = fit(line, Some(60));
        assert_eq!(cut.chars().count(), 60);
        assert_eq!(
            cut,
            "12:00:00.000  4242     memcached        mmap     len=1.0 Mi…"
        );
        assert_eq!(fit(line, None), line, "unlimited");
        assert_eq!(fit(line, Some(line.len())), line, "exactly as wide");
        assert_eq!(fit("short", Some(80)), "short");
    }

    #[test]
    fn cuts_between_characters_not_inside_them() {
        let line = "comm=äöü-worker cgroup=/é";
        let cut = fit(line, Some(8));
        assert_eq!(cut, "comm=äö…");
        assert_eq!(cut.chars().count(), 8);
        // Nine bytes but eight characters: fits.
        assert_eq!(fit("äbcdefgh", Some(8)), "äbcdefgh");
    }

    #[test]
    fn an_explicit_width_wins_and_zero_means_unlimited() {
        assert_eq!(detect(Some(100)), Some(100));
        assert_eq!(detect(Some(0)), None);
    }
}
