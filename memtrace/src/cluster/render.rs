//! The views as text for a terminal: aligned columns, every string from a node escaped (a node
//! name or process name is anyone's choice), the coverage on the first line.
use std::fmt::Write as _;

use memtrace_api::cluster::{Coverage, NodesView, OomView, TopView};
use memtrace_api::diagnose::DiagnoseReport;
use memtrace_api::workloads::OomScope;

use super::fanout::seconds;
use crate::escape::terminal;
use crate::units::human_bytes;

/// `answered 2/3 nodes; node-c:9847: connecting: connection refused after 0.0 s`.
pub fn coverage(coverage: &Coverage) -> String {
    let mut line = format!("answered {}/{} nodes", coverage.answered, coverage.asked);
    for failure in &coverage.failures {
        let who = match &failure.node {
            Some(node) => format!("{} ({})", terminal(node), terminal(&failure.target)),
            None => terminal(&failure.target).into_owned(),
        };
        let _ = write!(line, "; {who}: {}", terminal(&failure.error));
        // Timeouts and missed deadlines already say how long.
        if !failure.error.contains("after") && !failure.error.contains("deadline") {
            let _ = write!(
                line,
                " after {}",
                seconds(std::time::Duration::from_secs_f64(
                    failure.elapsed_seconds.max(0.0)
                ))
            );
        }
    }
    line.push('\n');
    line
}

/// Columns padded to their widest cell; the first `left` columns left-aligned, the rest right.
fn table(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|&h| h.to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            if column < left {
                let _ = write!(line, "{cell:<width$}");
            } else {
                let _ = write!(line, "{cell:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn clock(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms),
    )
    .to_string()
}

fn scope(scope: OomScope) -> &'static str {
    match scope {
        OomScope::Memcg => "memcg",
        OomScope::Global => "global",
        OomScope::Unknown => "unknown",
    }
}

pub fn top(view: &TopView) -> String {
    let mut out = coverage(&view.coverage);
    if view.workloads.is_empty() {
        out.push_str("no workloads\n");
        return out;
    }
    let rows: Vec<Vec<String>> = view
        .workloads
        .iter()
        .map(|w| {
            vec![
                terminal(&w.workload).into_owned(),
                w.largest.as_ref().map_or_else(String::new, |i| {
                    format!("{}/{}", terminal(&i.node), terminal(&i.instance))
                }),
                w.nodes.to_string(),
                w.instances.to_string(),
                human_bytes(w.rss_bytes_total),
                human_bytes(w.rss_bytes_max),
                w.anon_skew
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
                format!("{:.0}", w.pressure_score_max),
                format!("{}/{}", w.oom_kills.memcg, w.oom_kills.global),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "WORKLOAD",
            "LARGEST (NODE/INSTANCE)",
            "NODES",
            "INST",
            "RSS TOTAL",
            "RSS MAX",
            "SKEW",
            "PRESSURE",
            "OOM MEMCG/GLOBAL",
        ],
        &rows,
        2,
    ));
    out.push_str(
        "SKEW: max/median anon RSS over instances; OOM: kills within each daemon's retention\n",
    );
    out
}

pub fn nodes(view: &NodesView) -> String {
    let mut out = coverage(&view.coverage);
    let rows: Vec<Vec<String>> = view
        .nodes
        .iter()
        .filter_map(|status| {
            let node = status.node.as_ref()?;
            Some(vec![
                terminal(&node.name).into_owned(),
                terminal(&status.target).into_owned(),
                if node.ready { "ready" } else { "degraded" }.to_owned(),
                terminal(&node.memtrace_version).into_owned(),
                format!("{:.0}", node.pressure_score),
                node.psi
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |psi| format!("{:.1}%", psi.some_avg10)),
                human_bytes(node.mem_available_bytes),
                human_bytes(node.mem_total_bytes),
                format!("{:.2}", node.fragmentation_index_order3),
                format!("{:.3}", node.reclaim_stall_seconds_per_sec),
                status.workloads.to_string(),
            ])
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "NODE",
                "TARGET",
                "STATE",
                "VERSION",
                "PRESSURE",
                "PSI SOME10",
                "AVAILABLE",
                "TOTAL",
                "FRAG3",
                "STALL s/s",
                "WORKLOADS",
            ],
            &rows,
            4,
        ));
    }
    // Below the table rather than in it: an error is a sentence, not a column.
    for status in view.nodes.iter().filter(|s| s.node.is_none()) {
        let _ = writeln!(
            out,
            "NOT ANSWERED {}: {}",
            terminal(&status.target),
            terminal(status.error.as_deref().unwrap_or("unknown error"))
        );
    }
    out
}

pub fn oom(view: &OomView) -> String {
    let mut out = coverage(&view.coverage);
    let _ = writeln!(
        out,
        "storm: kills of one workload and scope on ≥ {} nodes, no two consecutive more than {} apart",
        view.storm_min_nodes,
        seconds(std::time::Duration::from_secs_f64(
            view.storm_window_seconds
        ))
    );
    for (id, storm) in view.storms.iter().enumerate() {
        let _ = writeln!(
            out,
            "STORM #{id}: {} ({}) {} kills on {} nodes ({}) {} … {}",
            terminal(&storm.workload),
            scope(storm.scope),
            storm.kills,
            storm.nodes.len(),
            storm
                .nodes
                .iter()
                .map(|n| terminal(n))
                .collect::<Vec<_>>()
                .join(", "),
            clock(storm.first_unix_ms),
            clock(storm.last_unix_ms),
        );
    }
    if view.kills.is_empty() {
        out.push_str("no OOM kills\n");
        return out;
    }
    let rows: Vec<Vec<String>> = view
        .kills
        .iter()
        .map(|k| {
            vec![
                clock(k.kill.timestamp_unix_ms),
                terminal(&k.node).into_owned(),
                terminal(&k.kill.workload).into_owned(),
                terminal(&k.kill.instance).into_owned(),
                format!("{} {}", k.kill.victim_pid, terminal(&k.kill.victim_comm)),
                scope(k.kill.scope).to_owned(),
                k.kill.rss_bytes.map_or_else(|| "-".to_owned(), human_bytes),
                k.kill
                    .cgroup_limit_bytes
                    .map_or_else(|| "-".to_owned(), human_bytes),
                k.storm.map_or_else(String::new, |id| format!("#{id}")),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "TIME", "NODE", "WORKLOAD", "INSTANCE", "VICTIM", "SCOPE", "RSS", "LIMIT", "STORM",
        ],
        &rows,
        6,
    ));
    out
}

pub fn diagnose(report: &DiagnoseReport) -> String {
    let mut out = coverage(&report.coverage);
    if report.findings.is_empty() {
        out.push_str("no findings\n");
        return out;
    }
    for finding in &report.findings {
        let kind = serde_json::to_value(finding.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        // The verdict names the workload first; the kind heads the line.
        let _ = writeln!(out, "{kind}  {}", terminal(&finding.verdict));
        if !finding.nodes.is_empty() {
            let nodes: Vec<_> = finding.nodes.iter().map(|n| terminal(n)).collect();
            let _ = writeln!(out, "  nodes: {}", nodes.join(", "));
        }
        if !finding.instances.is_empty() {
            let instances: Vec<String> = finding
                .instances
                .iter()
                .map(|i| format!("{}/{}", terminal(&i.node), terminal(&i.instance)))
                .collect();
            let _ = writeln!(out, "  instances: {}", instances.join(", "));
        }
    }
    out
}
