//! Event kind names and sets.
use std::{fmt, str::FromStr};

use memtrace_common::{COMM_LEN, kind};

/// Every kind's user-facing name, in `kind` order.
pub const KIND_NAMES: [(&str, u32); 9] = [
    ("fault", kind::FAULT),
    ("mmap", kind::MMAP),
    ("munmap", kind::MUNMAP),
    ("brk", kind::BRK),
    ("mremap", kind::MREMAP),
    ("reclaim", kind::RECLAIM),
    ("oom", kind::OOM),
    ("exec", kind::EXEC),
    ("exit", kind::EXIT),
];

pub fn kind_name(k: u32) -> &'static str {
    KIND_NAMES
        .iter()
        .find(|(_, v)| *v == k)
        .map_or("unknown", |(name, _)| name)
}

/// A kind name (or group alias: `vm` = mmap,munmap,brk,mremap; `all`) as a set of kinds.
pub fn parse_kind(name: &str) -> Result<EventKindSet, String> {
    let name = name.trim().to_ascii_lowercase();
    let set = match name.as_str() {
        "all" => EventKindSet::ALL,
        "vm" => EventKindSet::from_kinds(&[kind::MMAP, kind::MUNMAP, kind::BRK, kind::MREMAP]),
        "faults" => EventKindSet::from_kinds(&[kind::FAULT]),
        other => match KIND_NAMES.iter().find(|(n, _)| *n == other) {
            Some((_, k)) => EventKindSet::from_kinds(&[*k]),
            None => {
                let names: Vec<&str> = KIND_NAMES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown event kind '{name}' (expected one of: {}, or the groups vm, all)",
                    names.join(", ")
                ));
            }
        },
    };
    Ok(set)
}

/// A set of event kinds: bit `1 << kind`, the same encoding as `Config::event_mask`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventKindSet(pub u32);

impl EventKindSet {
    pub const ALL: Self = Self(((1 << kind::COUNT) - 1) & !1);

    pub fn from_kinds(kinds: &[u32]) -> Self {
        Self(kinds.iter().fold(0, |mask, k| mask | (1 << k)))
    }

    pub fn contains(self, k: u32) -> bool {
        self.0 & (1 << k) != 0
    }

    pub fn insert(&mut self, k: u32) {
        self.0 |= 1 << k;
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for EventKindSet {
    type Err = String;

    /// A comma-separated list: `oom,mmap`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|part| !part.trim().is_empty())
            .try_fold(
                Self::default(),
                |set, part| Ok(set.union(parse_kind(part)?)),
            )
    }
}

impl fmt::Display for EventKindSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = KIND_NAMES
            .iter()
            .filter(|(_, k)| self.contains(*k))
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// A kernel comm (NUL-padded) as a string.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_lists_and_groups() {
        let set: EventKindSet = "oom,mmap".parse().unwrap();
        assert!(set.contains(kind::OOM) && set.contains(kind::MMAP));
        assert!(!set.contains(kind::FAULT));
        assert_eq!(set.to_string(), "mmap,oom");
        let vm: EventKindSet = "vm".parse().unwrap();
        assert_eq!(vm.to_string(), "mmap,munmap,brk,mremap");
        assert_eq!(
            "all".parse::<EventKindSet>().unwrap().to_string(),
            "fault,mmap,munmap,brk,mremap,reclaim,oom,exec,exit"
        );
    }

    #[test]
    fn unknown_kind_names_the_choices() {
        let err = "oom,mmapp".parse::<EventKindSet>().unwrap_err();
        assert_eq!(
            err,
            "unknown event kind 'mmapp' (expected one of: fault, mmap, munmap, brk, mremap, reclaim, oom, exec, exit, or the groups vm, all)"
        );
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"bash");
        assert_eq!(comm_str(&comm), "bash");
        assert_eq!(comm_str(&[b'x'; COMM_LEN]), "x".repeat(COMM_LEN));
    }
}
