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

/// One name in a flag word: it applies when `word & mask == value` (a plain bit has
/// `mask == value`; a multi-bit field, such as the mmap mapping type, has one entry per value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagName {
    pub mask: u64,
    pub value: u64,
    pub name: &'static str,
}

const fn bit(bit: i32, name: &'static str) -> FlagName {
    FlagName {
        mask: bit as u64,
        value: bit as u64,
        name,
    }
}

const fn map_type(value: i32, name: &'static str) -> FlagName {
    FlagName {
        mask: libc::MAP_TYPE as u64,
        value: value as u64,
        name,
    }
}

/// mmap `prot` bits (`PROT_SEM` has no libc constant).
pub const PROT_NAMES: &[FlagName] = &[
    bit(libc::PROT_READ, "read"),
    bit(libc::PROT_WRITE, "write"),
    bit(libc::PROT_EXEC, "exec"),
    bit(0x8, "sem"),
    bit(libc::PROT_GROWSDOWN, "growsdown"),
    bit(libc::PROT_GROWSUP, "growsup"),
];

/// mmap `flags`: the mapping type (a 4-bit field), then the bits above it. The huge page size
/// (bits 26–31 with `MAP_HUGETLB`) has no name and shows as hex.
pub const MMAP_FLAG_NAMES: &[FlagName] = &[
    map_type(libc::MAP_SHARED, "shared"),
    map_type(libc::MAP_PRIVATE, "private"),
    map_type(libc::MAP_SHARED_VALIDATE, "shared_validate"),
    map_type(libc::MAP_DROPPABLE, "droppable"),
    bit(libc::MAP_FIXED, "fixed"),
    bit(libc::MAP_ANONYMOUS, "anonymous"),
    bit(libc::MAP_GROWSDOWN, "growsdown"),
    bit(libc::MAP_DENYWRITE, "denywrite"),
    bit(libc::MAP_EXECUTABLE, "executable"),
    bit(libc::MAP_LOCKED, "locked"),
    bit(libc::MAP_NORESERVE, "noreserve"),
    bit(libc::MAP_POPULATE, "populate"),
    bit(libc::MAP_NONBLOCK, "nonblock"),
    bit(libc::MAP_STACK, "stack"),
    bit(libc::MAP_HUGETLB, "hugetlb"),
    bit(libc::MAP_SYNC, "sync"),
    bit(libc::MAP_FIXED_NOREPLACE, "fixed_noreplace"),
];

/// mremap `flags`.
pub const MREMAP_FLAG_NAMES: &[FlagName] = &[
    bit(libc::MREMAP_MAYMOVE, "maymove"),
    bit(libc::MREMAP_FIXED, "fixed"),
    bit(libc::MREMAP_DONTUNMAP, "dontunmap"),
];

/// x86 page-fault error code (`X86_PF_*` in arch/x86/include/asm/trap_pf.h).
pub const FAULT_ERROR_CODE_NAMES: &[FlagName] = &[
    bit(1 << 0, "present"),
    bit(1 << 1, "write"),
    bit(1 << 2, "user"),
    bit(1 << 3, "reserved"),
    bit(1 << 4, "fetch"),
    bit(1 << 5, "pkey"),
    bit(1 << 6, "shadow_stack"),
    bit(1 << 15, "sgx"),
];

/// The names of `word`'s set bits in table order, and the bits no name covers.
pub fn flag_names(
    word: u64,
    table: &'static [FlagName],
) -> (impl Iterator<Item = &'static str>, u64) {
    let named = table
        .iter()
        .filter(|f| word & f.mask == f.value && f.value != 0)
        .fold(0, |covered, f| covered | f.mask);
    let names = table
        .iter()
        .filter(move |f| word & f.mask == f.value && f.value != 0)
        .map(|f| f.name);
    (names, word & !named)
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
    fn flag_words_decode_to_names_and_leftover_bits() {
        let names = |word, table| {
            let (names, rest) = flag_names(word, table);
            (names.collect::<Vec<_>>(), rest)
        };
        assert_eq!(names(3, PROT_NAMES), (vec!["read", "write"], 0));
        assert_eq!(names(0, PROT_NAMES), (vec![], 0));
        assert_eq!(
            names(0x22, MMAP_FLAG_NAMES),
            (vec!["private", "anonymous"], 0)
        );
        assert_eq!(names(0x3, MMAP_FLAG_NAMES), (vec!["shared_validate"], 0));
        // An unknown mapping type and the huge page size (21 << 26, 2 MiB) stay as bits.
        let huge = (21 << 26) | 0x40000 | 0x2;
        assert_eq!(
            names(huge, MMAP_FLAG_NAMES),
            (vec!["private", "hugetlb"], 21 << 26)
        );
        assert_eq!(names(0x5, MMAP_FLAG_NAMES), (vec![], 0x5));
        assert_eq!(
            names(0x6, FAULT_ERROR_CODE_NAMES),
            (vec!["write", "user"], 0)
        );
        assert_eq!(
            names(0x1_0001, FAULT_ERROR_CODE_NAMES),
            (vec!["present"], 0x1_0000)
        );
        assert_eq!(names(1, MREMAP_FLAG_NAMES), (vec!["maymove"], 0));
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"bash");
        assert_eq!(comm_str(&comm), "bash");
        assert_eq!(comm_str(&[b'x'; COMM_LEN]), "x".repeat(COMM_LEN));
    }
}
