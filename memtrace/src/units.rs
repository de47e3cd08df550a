//! Sizes and durations on the command line and in output.
use std::time::Duration;

use bytesize::ByteSize;

/// Parse a size: a plain byte count, or a number with a unit. Single letters (`K`, `M`, `G`) are
/// powers of 1024 as in `dd` and `ls -h`; `KiB`/`MiB`/`GiB` are too; `KB`/`MB`/`GB` are powers of
/// 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let binary = match trimmed.chars().last() {
        Some(unit @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T'))
            if trimmed.len() > 1
                && trimmed[..trimmed.len() - 1]
                    .trim_end()
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.') =>
        {
            format!(
                "{}{}iB",
                &trimmed[..trimmed.len() - 1],
                unit.to_ascii_uppercase()
            )
        }
        _ => trimmed.to_owned(),
    };
    binary
        .parse::<ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| format!("invalid size '{text}' (examples: 4096, 64K, 1M, 2GiB)"))
}

/// Parse a duration such as `10s`, `2m`, `1h30m`, `500ms`, or a bare number of seconds (`25`,
/// `0.5`), as `timeout(1)` and the bcc tools take it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let invalid = |why: &dyn std::fmt::Display| {
        format!("invalid duration '{text}' ({why}; examples: 10s, 2m, 500ms, 25 for seconds)")
    };
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return trimmed
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| invalid(&"not a number of seconds"));
    }
    humantime::parse_duration(trimmed).map_err(|err| invalid(&err))
}

/// A [`parse_duration`] for a flag whose value must lie in `min..=max`: the error names the
/// range, and clap prefixes it with the flag.
pub fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let value = parse_duration(text)?;
        if value < min || value > max {
            return Err(format!(
                "must be between {} and {} (got {})",
                humantime::format_duration(min),
                humantime::format_duration(max),
                humantime::format_duration(value)
            ));
        }
        Ok(value)
    }
}

/// Parse a share of time such as `5%` or `5` (percent, `%` optional) into `0.05`; between
/// 0.1 % and 100 %.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
    match number.parse::<f64>() {
        Ok(percent) if (0.1..=100.0).contains(&percent) => Ok(percent / 100.0),
        Ok(_) => Err(format!(
            "must be between 0.1% and 100% (got {trimmed}; example: 5%)"
        )),
        Err(_) => Err(format!(
            "invalid percentage '{text}' (examples: 5%, 12.5%, 100%)"
        )),
    }
}

/// Bytes for humans, binary units: `1.0 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 * 1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(
            parse_size("lots"),
            Err("invalid size 'lots' (examples: 4096, 64K, 1M, 2GiB)".to_owned())
        );
    }

    #[test]
    fn durations_and_display() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .starts_with("invalid duration 'soon'")
        );
        assert_eq!(human_bytes(1 << 20), "1.0 MiB");
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("100"), Ok(1.0));
        assert_eq!(parse_percent(" 12.5 % "), Ok(0.125));
        assert!(
            parse_percent("0%")
                .unwrap_err()
                .starts_with("must be between")
        );
        assert!(
            parse_percent("150%")
                .unwrap_err()
                .starts_with("must be between")
        );
        assert!(
            parse_percent("half")
                .unwrap_err()
                .starts_with("invalid percentage")
        );
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("25"), Ok(Duration::from_secs(25)));
        assert_eq!(parse_duration(" 0.5 "), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["1.2.3", ".", "1e99999", ""] {
            assert!(
                parse_duration(bad)
                    .unwrap_err()
                    .starts_with(&format!("invalid duration '{bad}'")),
                "{bad}"
            );
        }
    }

    #[test]
    fn ranges_name_their_bounds() {
        let parse = duration_in(Duration::from_millis(100), Duration::from_secs(3600));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(
            parse("0s"),
            Err("must be between 100ms and 1h (got 0s)".to_owned())
        );
        assert_eq!(
            parse("1ns"),
            Err("must be between 100ms and 1h (got 1ns)".to_owned())
        );
        assert!(parse("2h").unwrap_err().contains("got 2h"));
    }
}
