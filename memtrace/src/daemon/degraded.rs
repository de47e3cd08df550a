//! Which of the probe families the daemon asked for did not attach, said as a warning and, unless
//! `--allow-degraded`, as the reason `/readyz` answers 503: a daemon that cannot see OOM kills
//! must not look healthy to the orchestrator that relies on it.
use memtrace_api::Family;

use crate::probes::{AttachReport, FamilyStatus, REPLACED_BY_TASKS};

/// One requested family that did not attach, with the reason the probes gave (which names the
/// missing privilege or kernel facility, and the fix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingFamily {
    pub family: Family,
    pub reason: String,
}

/// The families of `requested` that `report` does not have running. The task sampler counts as
/// running when its stand-ins (the per-fault hooks) attached instead: the counts are the same.
pub fn missing_families(report: &AttachReport, requested: &[Family]) -> Vec<MissingFamily> {
    requested
        .iter()
        .filter(|&&family| !report.attached(family))
        .filter(|&&family| {
            !(family == Family::Tasks && REPLACED_BY_TASKS.iter().all(|f| report.attached(*f)))
        })
        .map(|&family| MissingFamily {
            family,
            reason: match report.families.get(&family) {
                Some(FamilyStatus::Skipped { reason }) => reason.clone(),
                _ => "not attached".to_owned(),
            },
        })
        .collect()
}

/// Logs each family's outcome: attached ones at INFO, anything missing (a whole family, or
/// optional hooks of one) at WARN with its reason.
pub fn log_report(report: &AttachReport) {
    for (family, status) in &report.families {
        match status {
            FamilyStatus::Attached { hooks } => {
                tracing::info!("probe family {family}: attached {}", hooks.join(", "));
            }
            FamilyStatus::Partial { hooks, missing } => tracing::warn!(
                "probe family {family}: attached {}, without {}",
                hooks.join(", "),
                missing.join("; ")
            ),
            FamilyStatus::Skipped { reason } => {
                tracing::warn!("probe family {family} NOT attached: {reason}");
            }
            FamilyStatus::Disabled => tracing::debug!("probe family {family}: not requested"),
        }
    }
}

/// What `/readyz` says while `missing` is not empty and degraded mode was not accepted.
pub fn not_ready_reason(missing: &[MissingFamily]) -> String {
    let families: Vec<String> = missing
        .iter()
        .map(|m| format!("the {} family is not attached ({})", m.family, m.reason))
        .collect();
    format!(
        "degraded: {}; fix that, or start with --allow-degraded to accept it",
        families.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(statuses: &[(Family, FamilyStatus)]) -> AttachReport {
        AttachReport {
            families: statuses.iter().cloned().collect(),
        }
    }

    fn attached() -> FamilyStatus {
        FamilyStatus::Attached {
            hooks: vec!["hook".to_owned()],
        }
    }

    const DENIED: &str = "oom:mark_victim: cannot read /t/events/oom/mark_victim/format: \
         permission denied (tracefs format files are not readable: grant CAP_DAC_READ_SEARCH or \
         run as root)";

    #[test]
    fn a_skipped_family_is_missing_with_its_reason() {
        let report = report(&[
            (Family::Tasks, attached()),
            (
                Family::Oom,
                FamilyStatus::Skipped {
                    reason: DENIED.to_owned(),
                },
            ),
            (
                Family::Reclaim,
                FamilyStatus::Partial {
                    hooks: vec!["a".to_owned()],
                    missing: vec!["b (why)".to_owned()],
                },
            ),
        ]);
        let missing = missing_families(&report, &[Family::Tasks, Family::Oom, Family::Reclaim]);
        assert_eq!(
            missing,
            [MissingFamily {
                family: Family::Oom,
                reason: DENIED.to_owned()
            }]
        );
        assert_eq!(
            not_ready_reason(&missing),
            format!(
                "degraded: the oom family is not attached ({DENIED}); fix that, or start with \
                 --allow-degraded to accept it"
            )
        );
    }

    /// Without BTF the fault and RSS hooks stand in for the task sampler: not degraded. One of
    /// them missing is.
    #[test]
    fn the_task_samplers_stand_ins_count_for_it() {
        let skipped = || FamilyStatus::Skipped {
            reason: "no BTF".to_owned(),
        };
        let with_both = report(&[
            (Family::Tasks, skipped()),
            (Family::Faults, attached()),
            (Family::Rss, attached()),
        ]);
        assert_eq!(missing_families(&with_both, &[Family::Tasks]), []);
        let with_one = report(&[
            (Family::Tasks, skipped()),
            (Family::Faults, attached()),
            (Family::Rss, skipped()),
        ]);
        assert_eq!(
            missing_families(&with_one, &[Family::Tasks]),
            [MissingFamily {
                family: Family::Tasks,
                reason: "no BTF".to_owned()
            }]
        );
    }
}
