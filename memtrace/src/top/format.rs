//! Short numbers for narrow columns: `1.5G`, `12k`, `0.3%`, `03:12:04`.

/// Bytes in at most 5 characters: `0`, `512B`, `1.5K`, `12M`, `1.2G`.
pub fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if value < 1024 {
        return if value == 0 {
            "0".to_owned()
        } else {
            format!("{value}B")
        };
    }
    let mut scaled = value as f64 / 1024.0;
    let mut unit = 0;
    while scaled >= 1023.95 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if scaled < 9.95 {
        format!("{scaled:.1}{}", UNITS[unit])
    } else {
        format!("{scaled:.0}{}", UNITS[unit])
    }
}

/// A per-second rate in at most 5 characters: `0`, `0.4`, `12`, `1.2k`, `35M`.
pub fn rate(value: f64) -> String {
    let value = value.max(0.0);
    if value < 0.05 {
        return "0".to_owned();
    }
    if value < 9.95 {
        return format!("{value:.1}");
    }
    if value < 999.5 {
        return format!("{value:.0}");
    }
    let (scaled, unit) = if value < 999_500.0 {
        (value / 1e3, "k")
    } else if value < 999_500_000.0 {
        (value / 1e6, "M")
    } else {
        (value / 1e9, "G")
    };
    if scaled < 9.95 {
        format!("{scaled:.1}{unit}")
    } else {
        format!("{scaled:.0}{unit}")
    }
}

/// Seconds stalled per second as a percentage of one thread's time: `0`, `0.3%`, `120%`.
pub fn stall(seconds_per_sec: f64) -> String {
    let percent = seconds_per_sec * 100.0;
    if percent < 0.05 {
        "0".to_owned()
    } else if percent < 9.95 {
        format!("{percent:.1}%")
    } else {
        format!("{percent:.0}%")
    }
}

/// RSS growth per second, signed (`+1.2M`, `-64K`), `-` while unknown, `!` for a leak hint.
pub fn growth(value: Option<f64>, leak: bool) -> String {
    let Some(value) = value else {
        return "-".to_owned();
    };
    let sign = if value < 0.0 { "-" } else { "+" };
    let magnitude = value.abs();
    let text = if magnitude < 0.5 {
        "0".to_owned()
    } else {
        format!("{sign}{}", bytes(magnitude.round() as u64))
    };
    if leak { format!("{text}!") } else { text }
}

/// Wall-clock time of day, UTC: `03:12:04`.
pub fn time_of_day(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (h, m, s) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

/// Date and time, UTC: `2026-11-30 03:12:04`.
pub fn date_time(unix_ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    let rfc = humantime::format_rfc3339_seconds(time).to_string();
    rfc.trim_end_matches('Z').replacen('T', " ", 1)
}

/// A refresh interval: `250ms`, `1s`, `30s`.
pub fn interval(duration: std::time::Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

/// `text` cut to `width` characters, with `…` when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// `text` cut to `width` characters keeping its end (a cgroup path's last components).
pub fn fit_tail(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_their_columns() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(64 << 20), "64M");
        assert_eq!(bytes((1 << 30) + (1 << 29)), "1.5G");
        assert_eq!(bytes(1023 << 20), "1023M");
        assert_eq!(bytes(1024 << 20), "1.0G");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.44), "0.4");
        assert_eq!(rate(12.4), "12");
        assert_eq!(rate(1234.0), "1.2k");
        assert_eq!(rate(35e6), "35M");
        assert_eq!(stall(0.003), "0.3%");
        assert_eq!(stall(1.2), "120%");
        assert_eq!(growth(None, false), "-");
        assert_eq!(growth(Some(1_258_291.0), true), "+1.2M!");
        assert_eq!(growth(Some(-65536.0), false), "-64K");
        assert_eq!(time_of_day(1_796_008_324_000), "03:12:04");
        assert_eq!(date_time(1_796_008_324_000), "2026-11-30 03:12:04");
        assert_eq!(fit("redis-server", 6), "redis…");
        assert_eq!(fit_tail("/a/b/redis.service", 10), "…s.service");
    }
}
