//! Which probe families a trace attaches: those its streamed events come from, and those its
//! summary counts with. Each family costs start-up (a verifier pass per program) and, for the
//! fault and RSS hooks, time on every page fault, so `-e oom` attaches the OOM hook alone.
use memtrace_api::Family;
use memtrace_common::{filter, kind};

use crate::{events::EventKindSet, probes::TRACE_FAMILIES};

/// Where each event kind comes from.
const KIND_FAMILIES: [(u32, Family); 9] = [
    (kind::FAULT, Family::Faults),
    (kind::MMAP, Family::Mmap),
    (kind::MUNMAP, Family::Mmap),
    (kind::BRK, Family::Mmap),
    (kind::MREMAP, Family::Mmap),
    (kind::RECLAIM, Family::Reclaim),
    (kind::OOM, Family::Oom),
    (kind::EXEC, Family::Lifecycle),
    (kind::EXIT, Family::Lifecycle),
];

/// The families that count per process (the summary's columns).
pub const COUNTING: [Family; 4] = [Family::Faults, Family::Mmap, Family::Rss, Family::Reclaim];

/// What a trace needs attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The kinds streamed.
    pub shown: EventKindSet,
    /// `--event` was given: only what it names (and the summary of those) is attached. Without
    /// it the default trace attaches every family, for the full summary.
    pub events_chosen: bool,
    /// A summary is printed (final or periodic).
    pub summary: bool,
    /// `memtrace_common::filter` flags of the kernel's filter.
    pub filter_flags: u32,
}

/// The families to attach for `needs`, in registry order.
pub fn families(needs: Needs) -> Vec<Family> {
    if !needs.events_chosen {
        return TRACE_FAMILIES.to_vec();
    }
    let mut wanted: Vec<Family> = KIND_FAMILIES
        .iter()
        .filter(|(k, _)| needs.shown.contains(*k))
        .map(|(_, family)| *family)
        .collect();
    let counting = wanted.iter().any(|f| COUNTING.contains(f));
    // Exits free the kernel's per-process counters (else a long trace fills the map) and keep
    // those of processes gone before the summary; the summary's RSS of a process that exited
    // is the RSS hook's last value. Only where something counts.
    if counting {
        wanted.push(Family::Lifecycle);
    }
    if needs.summary && counting {
        wanted.push(Family::Rss);
    }
    // Following a filtered process's children (and moves into a cgroup) is the lifecycle
    // family's fork hook.
    if needs.filter_flags & filter::FOLLOW_FORKS != 0 {
        wanted.push(Family::Lifecycle);
    }
    TRACE_FAMILIES
        .iter()
        .copied()
        .filter(|f| wanted.contains(f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(events: &str, summary: bool) -> Needs {
        Needs {
            shown: events.parse().unwrap(),
            events_chosen: true,
            summary,
            filter_flags: 0,
        }
    }

    #[test]
    fn oom_alone_attaches_the_oom_family_alone() {
        assert_eq!(families(needs("oom", true)), [Family::Oom]);
        assert_eq!(families(needs("oom", false)), [Family::Oom]);
    }

    #[test]
    fn counting_events_bring_the_summarys_rss_and_exits() {
        assert_eq!(
            families(needs("oom,mmap", true)),
            [Family::Mmap, Family::Rss, Family::Oom, Family::Lifecycle]
        );
        assert_eq!(
            families(needs("vm", false)),
            [Family::Mmap, Family::Lifecycle],
            "no summary: no RSS hook"
        );
        assert_eq!(
            families(needs("fault,reclaim", false)),
            [Family::Faults, Family::Reclaim, Family::Lifecycle]
        );
        assert_eq!(families(needs("exec", false)), [Family::Lifecycle]);
    }

    #[test]
    fn the_default_trace_attaches_everything_and_a_cgroup_filter_follows_forks() {
        let default = Needs {
            events_chosen: false,
            ..needs("oom", true)
        };
        assert_eq!(families(default), TRACE_FAMILIES);
        let cgroup = Needs {
            filter_flags: filter::PIDS | filter::FOLLOW_FORKS,
            ..needs("oom", false)
        };
        assert_eq!(families(cgroup), [Family::Oom, Family::Lifecycle]);
    }
}
