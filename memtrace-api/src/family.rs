//! Probe families: what the kernel side counts, as the snapshot's `pipeline.families` lists it.
use std::{fmt, str::FromStr};

/// A group of kernel programs that make sense only together. Serialized lowercase
/// (`"tasks"`, `"mmap"`, …).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Per-task fault counters and RSS, sampled from the kernel's own counters by a BPF task
    /// iterator each tick: exact, and nothing runs on the fault path (the daemon's default;
    /// needs BTF). Replaces `faults` and `rss` where it runs.
    Tasks,
    /// Page faults: user, kernel, major.
    Faults,
    /// mmap, munmap, brk, mremap.
    Mmap,
    /// RSS by type (kmem:rss_stat).
    Rss,
    /// Direct and memory-cgroup reclaim stalls.
    Reclaim,
    /// OOM kills.
    Oom,
    /// exec, exit (final counters), fork (filter following).
    Lifecycle,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::Tasks,
        Family::Faults,
        Family::Mmap,
        Family::Rss,
        Family::Reclaim,
        Family::Oom,
        Family::Lifecycle,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Family::Tasks => "tasks",
            Family::Faults => "faults",
            Family::Mmap => "mmap",
            Family::Rss => "rss",
            Family::Reclaim => "reclaim",
            Family::Oom => "oom",
            Family::Lifecycle => "lifecycle",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A family name that is not one of [`Family::ALL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFamily(pub String);

impl fmt::Display for UnknownFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
        write!(
            f,
            "unknown probe family '{}' (expected one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownFamily {}

impl FromStr for Family {
    type Err = UnknownFamily;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFamily(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::Family;

    #[test]
    fn names_parse_back_and_match_serde() {
        for family in Family::ALL {
            assert_eq!(family.name().parse::<Family>(), Ok(family));
            assert_eq!(
                serde_json::to_string(&family).unwrap(),
                format!("\"{}\"", family.name())
            );
        }
        assert!("bogus".parse::<Family>().is_err());
    }
}
