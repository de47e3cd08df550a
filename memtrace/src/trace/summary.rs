//! The summary and the events line that end a trace (and every `--interval`): per process, or
//! with `--by` per comm, cgroup or workload, with the columns of the counters the trace keeps.
use std::{collections::BTreeMap, fmt::Write as _};

use memtrace_api::trace::{LossesLine, SummaryLine, TraceLine};
use memtrace_common::{ProcStats, rss_member};

use super::group::{GroupBy, GroupRow};
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

    /// Every row: `live` (selected processes still running) over those that exited (a pid
    /// seen running again was reused by a new process, whose counters these are).
    pub fn rows(&self, live: impl IntoIterator<Item = SummaryRow>) -> Vec<SummaryRow> {
        let mut rows = self.exited.clone();
        rows.extend(live.into_iter().map(|row| (row.pid, row)));
        rows.into_values().collect()
    }
}

/// Which counters the attached probe families keep: the summary's columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    pub faults: bool,
    pub mmap: bool,
    pub reclaim: bool,
    /// The RSS hook: a process's RSS at its exit (a running one's is read from /proc).
    pub rss_at_exit: bool,
}

impl Counted {
    pub const ALL: Self = Self {
        faults: true,
        mmap: true,
        reclaim: true,
        rss_at_exit: true,
    };

    /// Whether anything is counted per process (`-e oom` alone counts nothing).
    pub fn any(self) -> bool {
        self.faults || self.mmap || self.reclaim
    }
}

/// One summary: its rows and how they were chosen.
#[derive(Clone, Copy, Debug)]
pub struct Table<'a> {
    /// `summary so far` or `final summary`.
    pub title: &'a str,
    /// When it was taken, as shown (`15:36:24`).
    pub at: &'a str,
    pub by: GroupBy,
    pub rows: &'a [GroupRow],
    /// Rows (processes or groups) before the `--top` cut.
    pub total: usize,
    pub counted: Counted,
}

/// One column of the summary table: shown when `shown(counted)`.
struct Column {
    header: &'static str,
    width: usize,
    shown: fn(Counted) -> bool,
    value: fn(&GroupRow, Counted) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        header: "MINFLT",
        width: 10,
        shown: |c| c.faults,
        value: |r, _| r.stats.faults_minor().to_string(),
    },
    Column {
        header: "MAJFLT",
        width: 8,
        shown: |c| c.faults,
        value: |r, _| r.stats.faults_major.to_string(),
    },
    Column {
        header: "MMAP",
        width: 10,
        shown: |c| c.mmap,
        value: |r, _| human_bytes(r.stats.mmap_bytes),
    },
    Column {
        header: "MUNMAP",
        width: 10,
        shown: |c| c.mmap,
        value: |r, _| human_bytes(r.stats.munmap_bytes),
    },
    Column {
        header: "BRK+",
        width: 10,
        shown: |c| c.mmap,
        value: |r, _| human_bytes(r.stats.brk_grow_bytes),
    },
    Column {
        header: "RECLAIM",
        width: 14,
        shown: |c| c.reclaim,
        value: |r, _| {
            format!(
                "{}/{:.1}ms",
                r.stats.reclaim_stalls,
                r.stats.reclaim_ns as f64 / 1e6
            )
        },
    },
    Column {
        header: "RSS_ANON",
        width: 10,
        shown: |_| true,
        value: |r, c| rss(r, c, rss_member::ANON),
    },
    Column {
        header: "RSS_FILE",
        width: 10,
        shown: |_| true,
        value: |r, c| rss(r, c, rss_member::FILE),
    },
];

/// A running process's RSS is read from /proc; one that exited has the RSS hook's last value,
/// unknown (`-`) without the hook.
fn rss(row: &GroupRow, counted: Counted, member: usize) -> String {
    if row.all_exited() && !counted.rss_at_exit {
        "-".to_owned()
    } else {
        human_bytes(row.stats.rss[member])
    }
}

/// `+1.2 MiB/s`, `-300.0 KiB/s`, `0 B/s`; `-` before two samples.
pub fn growth_text(growth: Option<f64>) -> String {
    match growth {
        None => "-".to_owned(),
        Some(rate) if rate.abs() < 1.0 => "0 B/s".to_owned(),
        Some(rate) => format!(
            "{}{}/s",
            if rate < 0.0 { '-' } else { '+' },
            human_bytes(rate.abs() as u64)
        ),
    }
}

const GROWTH_HEADER: &str = "RSS/s";
const GROWTH_WIDTH: usize = 13;

/// The table's lines: its title, the header, one line per row, and the events line. Without
/// `growth` the growth column is left out (what [`fingerprint`] compares).
pub fn text(
    table: &Table<'_>,
    losses: &KernelLosses,
    pipeline: &PipelineSnapshot,
    shown: u64,
) -> Vec<String> {
    let mut lines = Vec::new();
    if table.counted.any() {
        let of = if table.total > table.rows.len() {
            format!(", top {} of {}", table.rows.len(), table.total)
        } else {
            String::new()
        };
        let per = match table.by {
            GroupBy::Pid => "process".to_owned(),
            by => by.name().to_owned(),
        };
        lines.push(format!("{} {}, per {per}{of}:", table.at, table.title));
        lines.extend(rows_text(table, true));
    } else {
        lines.push(format!("{} {}:", table.at, table.title));
    }
    lines.push(losses_text(losses, pipeline, shown));
    lines
}

/// What makes two summaries the same to a reader: the rows without their growth (a rate of a
/// row that did not change may still move between samples).
pub fn fingerprint(table: &Table<'_>) -> String {
    rows_text(table, false).join("\n")
}

fn rows_text(table: &Table<'_>, growth: bool) -> Vec<String> {
    let columns: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| (c.shown)(table.counted))
        .collect();
    let grouped = table.by != GroupBy::Pid;
    let key_last = matches!(table.by, GroupBy::Cgroup | GroupBy::Workload);
    let mut header = String::new();
    match table.by {
        GroupBy::Pid => {
            let _ = write!(header, "{:<8} {:<16}", "PID", "COMM");
        }
        GroupBy::Comm => {
            let _ = write!(header, "{:<16}", "COMM");
        }
        GroupBy::Cgroup | GroupBy::Workload => {}
    }
    if grouped {
        let _ = write!(header, " {:>6} {:>6}", "PROCS", "EXITED");
    }
    for column in &columns {
        let _ = write!(header, " {:>width$}", column.header, width = column.width);
    }
    if growth {
        let _ = write!(header, " {GROWTH_HEADER:>GROWTH_WIDTH$}");
    }
    if key_last {
        let _ = write!(header, "  {}", table.by.name().to_ascii_uppercase());
    }
    let mut lines = vec![header.trim_start().to_owned()];
    for row in table.rows {
        let mut line = String::new();
        match table.by {
            GroupBy::Pid => {
                let _ = write!(line, "{:<8} {:<16}", row.pid, terminal(&row.comm));
            }
            GroupBy::Comm => {
                let _ = write!(line, "{:<16}", terminal(&row.key));
            }
            GroupBy::Cgroup | GroupBy::Workload => {}
        }
        if grouped {
            let _ = write!(line, " {:>6} {:>6}", row.processes, row.exited);
        }
        for column in &columns {
            let value = (column.value)(row, table.counted);
            let _ = write!(line, " {value:>width$}", width = column.width);
        }
        if growth {
            let value = growth_text(row.rss_growth_bytes_per_sec);
            let _ = write!(line, " {value:>GROWTH_WIDTH$}");
        }
        if key_last {
            let _ = write!(line, "  {}", terminal(&row.key));
        }
        if !grouped && row.all_exited() {
            line.push_str("  (exited)");
        }
        lines.push(line.trim_start().to_owned());
    }
    lines
}

/// `events: N delivered, M shown, none lost` or where events were lost, by stage: delivered
/// from the kernel, shown as lines (after the selection, a collapsed run one line).
pub fn losses_text(losses: &KernelLosses, pipeline: &PipelineSnapshot, shown: u64) -> String {
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
        format!(
            "events: {} delivered, {shown} shown, none lost",
            pipeline.delivered
        )
    } else {
        format!(
            "events: {} delivered, {shown} shown; LOST: {}",
            pipeline.delivered,
            parts.join(", ")
        )
    }
}

/// The summary as JSON lines (`summary` per row, then `losses`), each ending in a newline,
/// stamped `now_ns` (CLOCK_MONOTONIC, like events' `ts_ns`).
#[expect(
    clippy::too_many_arguments,
    reason = "one line type's parts, each a different value"
)]
pub fn json(
    out: &mut Vec<u8>,
    clock: &Clock,
    now_ns: u64,
    by: GroupBy,
    rows: &[GroupRow],
    losses: &KernelLosses,
    pipeline: &PipelineSnapshot,
    shown: u64,
) -> serde_json::Result<()> {
    let ts = clock.rfc3339_nanos(now_ns).as_str().to_owned();
    let grouped = by != GroupBy::Pid;
    let mut lines: Vec<TraceLine> = rows
        .iter()
        .map(|r| {
            TraceLine::Summary(SummaryLine {
                ts: ts.clone(),
                ts_ns: now_ns,
                pid: r.pid,
                comm: r.comm.clone(),
                cgroup: r.cgroup.clone(),
                exited: r.all_exited(),
                counters: counters_json(&r.stats),
                rss_growth_bytes_per_sec: r.rss_growth_bytes_per_sec,
                group_by: grouped.then(|| by.name().to_owned()),
                group: grouped.then(|| r.key.clone()),
                processes: grouped.then_some(r.processes),
                exited_processes: grouped.then_some(r.exited),
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
        events_shown: shown,
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
    use crate::workload::Identifier;

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

    fn grouped(by: GroupBy, rows: Vec<SummaryRow>) -> Vec<GroupRow> {
        super::super::group::Keys::new(by, Identifier::new(None))
            .group(rows, 20)
            .0
    }

    fn table<'a>(by: GroupBy, rows: &'a [GroupRow], counted: Counted) -> Table<'a> {
        Table {
            title: "final summary",
            at: "15:36:30",
            by,
            rows,
            total: rows.len(),
            counted,
        }
    }

    #[test]
    fn live_counters_replace_an_exit_of_the_same_pid() {
        let mut summary = Summary::default();
        summary.record_exit(1, "p1".to_owned(), None, row(1, 50, true).stats);
        summary.record_exit(2, "p2".to_owned(), None, row(2, 5, true).stats);
        let rows = summary.rows([row(3, 100, false), row(2, 7, false)]);
        let pids: Vec<(u32, bool)> = rows.iter().map(|r| (r.pid, r.exited)).collect();
        assert_eq!(pids, [(1, true), (2, false), (3, false)]);
        assert_eq!(rows[1], row(2, 7, false));
    }

    #[test]
    fn losses_text_names_each_stage_or_none() {
        let mut pipeline = PipelineSnapshot {
            delivered: 231,
            ..Default::default()
        };
        let mut losses = KernelLosses::default();
        assert_eq!(
            losses_text(&losses, &pipeline, 12),
            "events: 231 delivered, 12 shown, none lost"
        );
        losses.ring_full[kind::FAULT as usize] = 7;
        losses.mm_owner_full = 2;
        pipeline.queue_drops = 3;
        pipeline.decode_errors = 1;
        assert_eq!(
            losses_text(&losses, &pipeline, 12),
            "events: 231 delivered, 12 shown; LOST: 7 fault (kernel ring full), 2 (kernel map full), 3 (userspace queue full), 1 (undecodable)"
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
        let mut live = row(31000, 10, false);
        live.comm = "redis-server".to_owned();
        live.stats.rss[rss_member::ANON] = 64 << 20;
        let mut rows = grouped(GroupBy::Pid, vec![r, live]);
        rows[1].stats.rss[rss_member::ANON] = 64 << 20;
        rows[1].rss_growth_bytes_per_sec = Some(1.5 * f64::from(1 << 20));
        let lines = text(
            &table(GroupBy::Pid, &rows, Counted::ALL),
            &KernelLosses::default(),
            &PipelineSnapshot::default(),
            0,
        );
        assert_eq!(
            lines.join("\n"),
            "15:36:30 final summary, per process:\n\
             PID      COMM                 MINFLT   MAJFLT       MMAP     MUNMAP       BRK+        RECLAIM   RSS_ANON   RSS_FILE         RSS/s\n\
             29929    python3               17529        5    1.0 MiB        0 B        0 B       45/2.2ms        0 B        0 B             -  (exited)\n\
             31000    redis-server             10        0        0 B        0 B        0 B        0/0.0ms   64.0 MiB        0 B    +1.5 MiB/s\n\
             events: 0 delivered, 0 shown, none lost"
        );
    }

    #[test]
    fn grouped_tables_count_processes_and_put_long_keys_last() {
        let mut rows = vec![row(1, 5, true), row(2, 6, false)];
        for r in &mut rows {
            r.comm = "cc1".to_owned();
            r.cgroup = Some("/process_api/51e9f555c739c15932552d9c1f944182".to_owned());
        }
        let by_comm = grouped(GroupBy::Comm, rows.clone());
        let counted = Counted {
            faults: true,
            mmap: false,
            reclaim: false,
            rss_at_exit: false,
        };
        let lines = text(
            &table(GroupBy::Comm, &by_comm, counted),
            &KernelLosses::default(),
            &PipelineSnapshot::default(),
            3,
        );
        assert_eq!(
            lines[1..3],
            [
                "COMM              PROCS EXITED     MINFLT   MAJFLT   RSS_ANON   RSS_FILE         RSS/s",
                "cc1                   2      1         11        0        0 B        0 B             -",
            ]
        );
        let by_cgroup = grouped(GroupBy::Cgroup, rows);
        let lines = text(
            &table(GroupBy::Cgroup, &by_cgroup, counted),
            &KernelLosses::default(),
            &PipelineSnapshot::default(),
            3,
        );
        assert_eq!(lines[0], "15:36:30 final summary, per cgroup:");
        assert!(
            lines[2].ends_with("  /process_api/51e9f555c739c15932552d9c1f944182"),
            "{}",
            lines[2]
        );
        assert!(lines[1].starts_with("PROCS EXITED"), "{}", lines[1]);
    }

    #[test]
    fn without_counters_only_the_events_line_follows_the_title() {
        let none = Counted {
            faults: false,
            mmap: false,
            reclaim: false,
            rss_at_exit: false,
        };
        let lines = text(
            &table(GroupBy::Pid, &[], none),
            &KernelLosses::default(),
            &PipelineSnapshot {
                delivered: 1,
                ..Default::default()
            },
            1,
        );
        assert_eq!(
            lines,
            [
                "15:36:30 final summary:",
                "events: 1 delivered, 1 shown, none lost"
            ]
        );
    }

    #[test]
    fn a_summary_differing_only_in_growth_is_the_same() {
        let mut rows = grouped(GroupBy::Pid, vec![row(1, 5, false)]);
        let before = fingerprint(&table(GroupBy::Pid, &rows, Counted::ALL));
        rows[0].rss_growth_bytes_per_sec = Some(0.0);
        assert_eq!(
            fingerprint(&table(GroupBy::Pid, &rows, Counted::ALL)),
            before
        );
        rows[0].stats.faults_user += 1;
        assert_ne!(
            fingerprint(&table(GroupBy::Pid, &rows, Counted::ALL)),
            before
        );
    }

    #[test]
    fn growth_is_signed_and_absent_before_two_samples() {
        assert_eq!(growth_text(None), "-");
        assert_eq!(growth_text(Some(0.4)), "0 B/s");
        assert_eq!(growth_text(Some(-300.0 * 1024.0)), "-300.0 KiB/s");
        assert_eq!(growth_text(Some(2.0 * f64::from(1 << 20))), "+2.0 MiB/s");
    }

    #[test]
    fn hostile_comms_cannot_forge_summary_lines_or_colours() {
        let mut r = row(7, 1, false);
        r.comm = "x\n# TYPE y\u{1b}[31m".to_owned();
        let rows = grouped(GroupBy::Pid, vec![r]);
        let lines = text(
            &table(GroupBy::Pid, &rows, Counted::ALL),
            &KernelLosses::default(),
            &PipelineSnapshot::default(),
            0,
        );
        let table = lines.join("\n");
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("x\\n# TYPE y\\e[31m"), "{table}");
        assert!(!table.contains('\u{1b}'), "{table}");
    }
}
