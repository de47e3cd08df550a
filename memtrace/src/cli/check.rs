//! `memtrace check`: can memtrace run on this machine, and with what? Runs the preflight, loads
//! and attaches the probe families of the daemon and of the live trace in turn, prints what
//! attached, what fell back to which hook and why, then detaches. Nothing is traced.
//!
//! The kernel matrix (`cargo xtask vm-test`) reads its `--json` from every kernel it boots; a user
//! runs it on a new kernel or node before deploying.
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::{
    host::HostPaths,
    preflight,
    probes::{
        AttachReport, DAEMON_FAMILIES, Family, FamilyStatus, ProbeOptions, Probes, TRACE_FAMILIES,
    },
};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every family of both modes attached (fully, or with fallback \
hooks named under `without`), 1 when one was skipped or nothing could be loaded (the error line \
says why: privileges, tracefs, …), 2 on bad arguments.\n\nExamples:\n  sudo memtrace check\n  sudo memtrace check --json | jq '.modes[].families'"
)]
pub struct CheckArgs {
    /// Print JSON (for scripts) instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct CheckReport {
    kernel: String,
    /// Non-fatal findings of the preflight (missing BTF, …).
    warnings: Vec<String>,
    modes: Vec<ModeReport>,
}

#[derive(Debug, Serialize)]
struct ModeReport {
    /// `daemon` or `trace`.
    mode: &'static str,
    families: Vec<FamilyReport>,
}

#[derive(Debug, Serialize)]
struct FamilyReport {
    family: Family,
    /// `attached`, `partial` (required hooks attached, optional ones not), `skipped`, `disabled`
    /// (not used in this mode: e.g. the per-fault hooks the daemon's task sampler replaces).
    status: &'static str,
    hooks: Vec<String>,
    /// Why each missing hook or the family did not attach.
    missing: Vec<String>,
}

impl FamilyReport {
    fn new(family: Family, status: &FamilyStatus) -> Self {
        let (name, hooks, missing) = match status {
            FamilyStatus::Attached { hooks } => ("attached", hooks.clone(), Vec::new()),
            FamilyStatus::Partial { hooks, missing } => ("partial", hooks.clone(), missing.clone()),
            FamilyStatus::Skipped { reason } => ("skipped", Vec::new(), vec![reason.clone()]),
            FamilyStatus::Disabled => ("disabled", Vec::new(), Vec::new()),
        };
        Self {
            family,
            status: name,
            hooks,
            missing,
        }
    }
}

fn mode_report(mode: &'static str, report: &AttachReport) -> ModeReport {
    ModeReport {
        mode,
        families: report
            .families
            .iter()
            .map(|(family, status)| FamilyReport::new(*family, status))
            .collect(),
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let host = HostPaths::default();
    let checks = preflight::check_in(&host)?;
    let kernel = std::fs::read_to_string(host.proc.join("sys/kernel/osrelease"))
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|err| format!("unknown ({err})"));
    let mut modes = Vec::new();
    // One mode at a time: the daemon's and the trace's programs share maps and names.
    for (mode, families) in [
        ("daemon", &DAEMON_FAMILIES[..]),
        ("trace", &TRACE_FAMILIES[..]),
    ] {
        let options = ProbeOptions {
            families: families.to_vec(),
            btf_path: host.btf.clone(),
            cgroup_root: host.cgroup.clone(),
            ..ProbeOptions::default()
        };
        let probes = Probes::load(&checks.tracefs, &options)
            .with_context(|| format!("loading the {mode}'s eBPF programs"))?;
        modes.push(mode_report(mode, probes.report()));
        probes.detach();
    }
    let all_attached = modes
        .iter()
        .flat_map(|mode| &mode.families)
        .all(|family| family.status != "skipped");
    let report = CheckReport {
        kernel,
        warnings: checks.warnings,
        modes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if all_attached {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(report: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = format!("kernel {}\n", report.kernel);
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    for mode in &report.modes {
        let _ = writeln!(out, "{} families:", mode.mode);
        for family in &mode.families {
            let name = family.family.to_string();
            let _ = match family.status {
                "attached" => writeln!(out, "  {name:<9} attached: {}", family.hooks.join(", ")),
                "partial" => writeln!(
                    out,
                    "  {name:<9} attached: {}; without: {}",
                    family.hooks.join(", "),
                    family.missing.join("; ")
                ),
                "skipped" => writeln!(out, "  {name:<9} SKIPPED: {}", family.missing.join("; ")),
                _ => writeln!(out, "  {name:<9} not used in this mode"),
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_status_and_its_reasons() {
        let mut report = AttachReport::default();
        report.families.insert(
            Family::Rss,
            FamilyStatus::Partial {
                hooks: vec!["kmem:rss_stat".into()],
                missing: vec!["raw_tp kmem:rss_stat (no BTF)".into()],
            },
        );
        report.families.insert(
            Family::Tasks,
            FamilyStatus::Skipped {
                reason: "iter/task: no BTF".into(),
            },
        );
        report
            .families
            .insert(Family::Faults, FamilyStatus::Disabled);
        let check = CheckReport {
            kernel: "6.1.0".into(),
            warnings: vec![],
            modes: vec![mode_report("daemon", &report)],
        };
        let json = serde_json::to_value(&check).unwrap();
        let families = &json["modes"][0]["families"];
        let find = |name: &str| {
            families
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["family"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(find("rss")["status"], "partial");
        assert_eq!(find("rss")["missing"][0], "raw_tp kmem:rss_stat (no BTF)");
        assert_eq!(find("tasks")["status"], "skipped");
        assert_eq!(find("faults")["status"], "disabled");
        let text = render(&check);
        assert!(
            text.contains("tasks     SKIPPED: iter/task: no BTF"),
            "{text}"
        );
        assert!(
            text.contains("rss       attached: kmem:rss_stat; without: raw_tp"),
            "{text}"
        );
    }
}
