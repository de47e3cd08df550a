//! The per-process summary and the losses line that end a trace (and every `--interval`).
use std::{collections::BTreeMap, fmt::Write as _};

use memtrace_api::trace::{LossesLine, SummaryLine, TraceLine};
use memtrace_common::{ProcStats, rss_member};

use crate::{
    escape::terminal,
    events::{KIND_NAMES, counters_json, render::Clock},
    pipeline::PipelineSnapshot,
    probes::KernelLosses,
    units::human_bytes,
};

/// What the summary shows for one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub exited: bool,
    pub stats: ProcStats,
}

/// The final counters of processes that exited during the trace, kept for the summary (the
/// kernel drops their map entries).
#[derive(Debug, Default)]
pub struct Summary {
    exited: BTreeMap<u32, SummaryRow>,
}

impl Summary {
    pub fn record_exit(
        &mut self,
        pid: u32,
        comm: String,
        cgroup: Option<String>,
        stats: ProcStats,
    ) {
        let row = SummaryRow {
            pid,
            comm,
            cgroup,
            exited: true,
            stats,
        };
        self.exited.insert(pid, row);
    }

    /// The `top` rows with the most page faults: `live` (selected processes still running)
    /// over those that exited.
    pub fn rows(&self, live: impl IntoIterator<Item = SummaryRow>, top: usize) -> Vec<SummaryRow> {
        let mut rows = self.exited.clone();
        rows.extend(live.into_iter().map(|row| (row.pid, row)));
        let mut rows: Vec<SummaryRow> = rows.into_values().collect();
        rows.sort_by_key(|r| {
            std::cmp::Reverse(r.stats.faults_user.saturating_add(r.stats.faults_kernel))
        });
        rows.truncate(top);
        rows
    }
}

/// The summary as a table, its title first and the losses line last.
pub fn text(
    title: &str,
    rows: &[SummaryRow],
    losses: &KernelLosses,
    pipeline: &PipelineSnapshot,
) -> String {
    let mut text = format!("\n{title}\n");
    let _ = writeln!(
        text,
        "{:<8} {:<16} {:>10} {:>8} {:>10} {:>10} {:>10} {:>14} {:>10} {:>10}",
        "PID",
        "COMM",
        "MINFLT",
        "MAJFLT",
        "MMAP",
        "MUNMAP",
        "BRK+",
        "RECLAIM",
        "RSS_ANON",
        "RSS_FILE"
    );
    for r in rows {
        let s = &r.stats;
        let _ = writeln!(
            text,
            "{:<8} {:<16} {:>10} {:>8} {:>10} {:>10} {:>10} {:>14} {:>10} {:>10}{}",
            r.pid,
            terminal(&r.comm),
            s.faults_minor(),
            s.faults_major,
            human_bytes(s.mmap_bytes),
            human_bytes(s.munmap_bytes),
            human_bytes(s.brk_grow_bytes),
            format!("{}/{:.1}ms", s.reclaim_stalls, s.reclaim_ns as f64 / 1e6),
            human_bytes(s.rss[rss_member::ANON]),
            human_bytes(s.rss[rss_member::FILE]),
            if r.exited { "  (exited)" } else { "" },
        );
    }
    text.push_str(&losses_text(losses, pipeline));
    text
}

/// `events: N delivered, none lost` or where events were lost, by stage.
pub fn losses_text(losses: &KernelLosses, pipeline: &PipelineSnapshot) -> String {
    let mut parts = Vec::new();
    for (name, k) in KIND_NAMES {
        let n = losses.ring_full[k as usize];
        if n > 0 {
            parts.push(format!("{n} {name} (kernel ring full)"));
        }
    }
    if losses.map_total() > 0 {
        parts.push(format!("{} (kernel map full)", losses.map_total()));
    }
    if pipeline.queue_drops > 0 {
        parts.push(format!("{} (userspace queue full)", pipeline.queue_drops));
    }
    if pipeline.decode_errors > 0 {
        parts.push(format!("{} (undecodable)", pipeline.decode_errors));
    }
    if parts.is_empty() {
        format!("events: {} delivered, none lost", pipeline.delivered)
    } else {
        format!(
            "events: {} delivered; LOST: {}",
            pipeline.delivered,
            parts.join(", ")
        )
    }
}

/// The summary as JSON lines (`summary` per row, then `losses`), each ending in a newline,
/// stamped `now_ns` (CLOCK_MONOTONIC, like events' `ts_ns`).
pub fn json(
    out: &mut Vec<u8>,
    clock: &Clock,
    now_ns: u64,
    rows: &[SummaryRow],
    losses: &KernelLosses,
    pipeline: &PipelineSnapshot,
) -> serde_json::Result<()> {
    let ts = clock.rfc3339_nanos(now_ns).as_str().to_owned();
    let mut lines: Vec<TraceLine> = rows
        .iter()
        .map(|r| {
            TraceLine::Summary(SummaryLine {
                ts: ts.clone(),
                ts_ns: now_ns,
                pid: r.pid,
                comm: r.comm.clone(),
                cgroup: r.cgroup.clone(),
                exited: r.exited,
                counters: counters_json(&r.stats),
            })
        })
        .collect();
    lines.push(TraceLine::Losses(LossesLine {
        ts,
        ts_ns: now_ns,
        lost_kernel_ring_full: losses.ring_total(),
        lost_kernel_ring_full_by_kind: KIND_NAMES
            .iter()
            .map(|(name, k)| ((*name).to_owned(), losses.ring_full[*k as usize]))
            .collect(),
        lost_kernel_map_full: losses.map_total(),
        lost_userspace_queue: pipeline.queue_drops,
        lost_decode: pipeline.decode_errors,
        events_received: pipeline.decoded,
        events_delivered: pipeline.delivered,
    }));
    for line in &lines {
        serde_json::to_writer(&mut *out, line)?;
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use memtrace_common::kind;

    use super::*;

    fn row(pid: u32, faults: u64, exited: bool) -> SummaryRow {
        SummaryRow {
            pid,
            comm: format!("p{pid}"),
            cgroup: None,
            exited,
            stats: ProcStats {
                faults_user: faults,
                ..Default::default()
            },
        }
    }

    #[test]
    fn rows_rank_by_faults_and_live_counters_replace_an_exit_of_the_same_pid() {
        let mut summary = Summary::default();
        summary.record_exit(1, "p1".to_owned(), None, row(1, 50, true).stats);
        summary.record_exit(2, "p2".to_owned(), None, row(2, 5, true).stats);
        let rows = summary.rows([row(3, 100, false), row(2, 7, false)], 2);
        let ranked: Vec<(u32, bool)> = rows.iter().map(|r| (r.pid, r.exited)).collect();
        assert_eq!(ranked, [(3, false), (1, true)]);
        let all = summary.rows([row(2, 7, false)], 10);
        assert_eq!(all.iter().find(|r| r.pid == 2), Some(&row(2, 7, false)));
    }

    #[test]
    fn losses_text_names_each_stage_or_none() {
        let mut pipeline = PipelineSnapshot {
            delivered: 231,
            ..Default::default()
        };
        let mut losses = KernelLosses::default();
        assert_eq!(
            losses_text(&losses, &pipeline),
            "events: 231 delivered, none lost"
        );
        losses.ring_full[kind::FAULT as usize] = 7;
        losses.mm_owner_full = 2;
        pipeline.queue_drops = 3;
        pipeline.decode_errors = 1;
        assert_eq!(
            losses_text(&losses, &pipeline),
            "events: 231 delivered; LOST: 7 fault (kernel ring full), 2 (kernel map full), 3 (userspace queue full), 1 (undecodable)"
        );
    }

    #[test]
    fn text_table_keeps_its_columns() {
        let mut r = row(29929, 17534, true);
        r.comm = "python3".to_owned();
        r.stats.faults_major = 5;
        r.stats.mmap_bytes = 1 << 20;
        r.stats.reclaim_stalls = 45;
        r.stats.reclaim_ns = 2_200_000;
        let table = text(
            "per-process summary:",
            &[r],
            &KernelLosses::default(),
            &PipelineSnapshot::default(),
        );
        assert_eq!(
            table,
            "\nper-process summary:\n\
             PID      COMM                 MINFLT   MAJFLT       MMAP     MUNMAP       BRK+        RECLAIM   RSS_ANON   RSS_FILE\n\
             29929    python3               17529        5    1.0 MiB        0 B        0 B       45/2.2ms        0 B        0 B  (exited)\n\
             events: 0 delivered, none lost"
        );
    }

    #[test]
    fn hostile_comms_cannot_forge_summary_lines_or_colours() {
        let mut r = row(7, 1, false);
        r.comm = "x\n# TYPE y\u{1b}[31m".to_owned();
        let table = text(
            "per-process summary:",
            &[r],
            &KernelLosses::default(),
            &PipelineSnapshot::default(),
        );
        assert_eq!(table.lines().count(), 5, "{table}");
        assert!(table.contains("x\\n# TYPE y\\e[31m"), "{table}");
        assert!(!table.contains('\u{1b}'), "{table}");
    }
}
