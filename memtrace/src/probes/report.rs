//! What attached and what did not: the outcome of each family, for the user and for `/readyz`.
use std::{collections::BTreeMap, fmt};

use memtrace_api::Family;

/// Outcome of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FamilyStatus {
    /// All hooks attached.
    Attached { hooks: Vec<String> },
    /// The required hooks attached; optional ones did not (each with its reason).
    Partial {
        hooks: Vec<String>,
        missing: Vec<String>,
    },
    /// Not attached, with the reason.
    Skipped { reason: String },
    /// Not requested.
    Disabled,
}

/// What attached and what did not, for the user and for `/readyz`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachReport {
    pub families: BTreeMap<Family, FamilyStatus>,
}

impl AttachReport {
    pub fn attached(&self, family: Family) -> bool {
        matches!(
            self.families.get(&family),
            Some(FamilyStatus::Attached { .. } | FamilyStatus::Partial { .. })
        )
    }

    pub fn any_attached(&self) -> bool {
        self.families.keys().any(|family| self.attached(*family))
    }

    /// Number of hooks attached and of hooks that failed (skipped families count as one each).
    pub fn counts(&self) -> (usize, usize) {
        let mut ok = 0;
        let mut failed = 0;
        for status in self.families.values() {
            match status {
                FamilyStatus::Attached { hooks } => ok += hooks.len(),
                FamilyStatus::Partial { hooks, missing } => {
                    ok += hooks.len();
                    failed += missing.len();
                }
                FamilyStatus::Skipped { .. } => failed += 1,
                FamilyStatus::Disabled => {}
            }
        }
        (ok, failed)
    }
}

impl fmt::Display for AttachReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (family, status) in &self.families {
            match status {
                FamilyStatus::Attached { hooks } => {
                    writeln!(f, "  {family:<9} attached: {}", hooks.join(", "))?
                }
                FamilyStatus::Partial { hooks, missing } => writeln!(
                    f,
                    "  {family:<9} attached: {}; without: {}",
                    hooks.join(", "),
                    missing.join("; ")
                )?,
                FamilyStatus::Skipped { reason } => writeln!(f, "  {family:<9} SKIPPED: {reason}")?,
                FamilyStatus::Disabled => writeln!(f, "  {family:<9} disabled")?,
            }
        }
        Ok(())
    }
}
