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

/// Parse a duration such as `10s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|err| format!("invalid duration '{text}' ({err}; examples: 10s, 2m, 500ms)"))
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
}
