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

/// A set of [`Family`]s (the families attached, in the snapshot's `pipeline.families`). Serialized
/// as the JSON array of their names in [`Family::ALL`] order; names this version does not know
/// (a newer daemon's families) are skipped when reading, as unknown fields are.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FamilySet(u8);

const _: () = assert!(Family::ALL.len() <= u8::BITS as usize);

impl FamilySet {
    pub const EMPTY: FamilySet = FamilySet(0);

    const fn bit(family: Family) -> u8 {
        1 << family as u8
    }

    pub const fn contains(self, family: Family) -> bool {
        self.0 & Self::bit(family) != 0
    }

    pub fn insert(&mut self, family: Family) {
        self.0 |= Self::bit(family);
    }

    pub fn remove(&mut self, family: Family) {
        self.0 &= !Self::bit(family);
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// In [`Family::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Family> {
        Family::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

impl fmt::Debug for FamilySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Family> for FamilySet {
    fn from_iter<I: IntoIterator<Item = Family>>(iter: I) -> Self {
        let mut set = FamilySet::EMPTY;
        iter.into_iter().for_each(|f| set.insert(f));
        set
    }
}

impl<'a> FromIterator<&'a Family> for FamilySet {
    fn from_iter<I: IntoIterator<Item = &'a Family>>(iter: I) -> Self {
        iter.into_iter().copied().collect()
    }
}

impl<const N: usize> From<[Family; N]> for FamilySet {
    fn from(families: [Family; N]) -> Self {
        families.into_iter().collect()
    }
}

impl From<&[Family]> for FamilySet {
    fn from(families: &[Family]) -> Self {
        families.iter().collect()
    }
}

impl serde::Serialize for FamilySet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for FamilySet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        Ok(names
            .iter()
            .filter_map(|n| n.parse::<Family>().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{Family, FamilySet};

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

    #[test]
    fn family_set_is_a_json_array_of_names() {
        let set = FamilySet::from([Family::Oom, Family::Tasks, Family::Mmap, Family::Oom]);
        assert_eq!(set.len(), 3);
        assert!(set.contains(Family::Mmap) && !set.contains(Family::Rss));
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["tasks","mmap","oom"]"#);
        assert_eq!(serde_json::from_str::<FamilySet>(&json).unwrap(), set);
        // A newer daemon's family is skipped, not an error.
        let newer: FamilySet = serde_json::from_str(r#"["oom","stacks","tasks"]"#).unwrap();
        assert_eq!(newer, FamilySet::from([Family::Tasks, Family::Oom]));
        assert!(serde_json::from_str::<FamilySet>(r#""oom""#).is_err());
        let mut all: FamilySet = Family::ALL.iter().collect();
        assert_eq!(all.iter().collect::<Vec<_>>(), Family::ALL);
        all.remove(Family::Tasks);
        assert_eq!(all.len(), Family::ALL.len() - 1);
        assert!(FamilySet::EMPTY.is_empty());
    }
}
