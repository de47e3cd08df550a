//! The detail pane of the selected row: what it is, its recent history as sparklines (RSS by
//! type, fault rates, reclaim; a workload's instance history from the daemon too) and its OOM
//! kills.
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};

use crate::escape::terminal;
use crate::top::app::{App, Kill};
use crate::top::format;
use crate::top::history::Sample;
use crate::top::rows::{Row, RowKey};

/// OOM kills listed in the pane at most.
const MAX_KILLS: usize = 3;

/// One sparkline: its label, how its value reads, and its samples.
struct Series {
    label: &'static str,
    unit: Unit,
    values: Vec<f64>,
}

#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Rate,
    Stall,
    Plain,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Self::Bytes => format::bytes(value.max(0.0) as u64),
            Self::Rate => format::rate(value),
            Self::Stall => format::stall(value),
            Self::Plain => format!("{value:.1}"),
        }
    }
}

/// Lines the pane wants for the selected row.
pub fn height(app: &App) -> u16 {
    let Some(row) = app.selected_row() else {
        return 0;
    };
    let facts = facts(app, row).len();
    let series = series(app, row).len();
    let kills = kills(app, row).len().clamp(1, MAX_KILLS);
    u16::try_from(2 + facts + series + kills).unwrap_or(u16::MAX)
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let Some(row) = app.selected_row() else {
        return;
    };
    let block = Block::bordered()
        .title(Line::from(vec![
            Span::raw(" "),
            Span::styled(row.name.clone(), Style::new().bold()),
            Span::raw(format!(" {} ", row.id)),
        ]))
        .title_bottom(Line::raw(format!(
            " last {} refreshes · Esc closes ",
            series_len(app, row)
        )))
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let facts = facts(app, row);
    let series = series(app, row);
    let kills = kills(app, row);
    let mut constraints: Vec<Constraint> = Vec::new();
    constraints.extend(facts.iter().map(|_| Constraint::Length(1)));
    constraints.extend(series.iter().map(|_| Constraint::Length(1)));
    constraints.push(Constraint::Min(0));
    let lines = Layout::vertical(constraints).split(inner);
    let mut at = 0;
    for fact in facts {
        frame.render_widget(Paragraph::new(fact), lines[at]);
        at += 1;
    }
    for one in &series {
        sparkline(frame, lines[at], one);
        at += 1;
    }
    let rest = lines[at];
    let kill_lines: Vec<Line<'_>> = if kills.is_empty() {
        vec![Line::styled(
            "no OOM kill seen",
            Style::new().fg(Color::DarkGray),
        )]
    } else {
        kills.iter().map(|kill| kill_line(kill)).collect()
    };
    frame.render_widget(Paragraph::new(kill_lines), rest);
}

/// `label  value  ▁▂▃▅▇`: the newest samples that fit, the value the newest.
fn sparkline(frame: &mut Frame<'_>, area: Rect, series: &Series) {
    let [label, value, chart] = Layout::horizontal([
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Min(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(series.label), label);
    let newest = series.values.last().copied().unwrap_or(0.0);
    frame.render_widget(
        Paragraph::new(Line::raw(format!("{} ", series.unit.show(newest))).right_aligned()),
        value,
    );
    let shown = usize::from(chart.width);
    let values = &series.values[series.values.len().saturating_sub(shown)..];
    // Sparklines take integers: rates and stalls are scaled so that their fractions show.
    let scale = match series.unit {
        Unit::Bytes => 1.0,
        Unit::Rate | Unit::Stall | Unit::Plain => 1000.0,
    };
    let data: Vec<u64> = values.iter().map(|v| (v.max(0.0) * scale) as u64).collect();
    frame.render_widget(
        Sparkline::default()
            .data(&data)
            .style(Style::new().fg(Color::Green)),
        chart,
    );
}

fn series_len(app: &App, row: &Row) -> usize {
    app.history.samples(&row.key).map_or(0, |s| s.len())
}

fn series(app: &App, row: &Row) -> Vec<Series> {
    let samples: Vec<Sample> = app
        .history
        .samples(&row.key)
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    let column = |label, unit, get: fn(&Sample) -> f32| Series {
        label,
        unit,
        values: samples.iter().map(|s| f64::from(get(s))).collect(),
    };
    let mut series = match &row.key {
        RowKey::Node(_) => vec![
            column("available", Unit::Bytes, |s| s.available),
            column("anon", Unit::Bytes, |s| s.rss_anon),
            column("page cache", Unit::Bytes, |s| s.rss_file),
            column("swap used", Unit::Bytes, |s| s.rss_shmem),
            column("PSI some", Unit::Plain, |s| s.psi_some),
            column("reclaim", Unit::Stall, |s| s.reclaim),
        ],
        _ => vec![
            column("RSS anon", Unit::Bytes, |s| s.rss_anon),
            column("RSS file", Unit::Bytes, |s| s.rss_file),
            column("RSS shmem", Unit::Bytes, |s| s.rss_shmem),
            column("minor/s", Unit::Rate, |s| s.faults_minor),
            column("major/s", Unit::Rate, |s| s.faults_major),
            column("reclaim", Unit::Stall, |s| s.reclaim),
        ],
    };
    if let RowKey::Workload(workload) = &row.key
        && let Some(history) = instance_history(app, workload)
    {
        series.push(Series {
            label: "daemon RSS",
            unit: Unit::Bytes,
            values: history.iter().map(|v| *v as f64).collect(),
        });
    }
    series
}

/// The daemon's history of the workload's busiest instance (its own downsampled points, over
/// hours rather than refreshes).
fn instance_history<'a>(app: &'a App, workload: &str) -> Option<&'a [u64]> {
    app.fleet
        .nodes
        .iter()
        .flat_map(|n| n.frame.workloads.iter().flat_map(|w| &w.workloads))
        .filter(|w| w.workload == workload)
        .flat_map(|w| &w.instances)
        .filter(|i| !i.history.rss_bytes.is_empty())
        .max_by(|a, b| a.pressure_score.total_cmp(&b.pressure_score))
        .map(|i| i.history.rss_bytes.as_slice())
}

/// What the row is, in one or two lines.
fn facts(app: &App, row: &Row) -> Vec<Line<'static>> {
    let node = app.fleet.detailed();
    let dim = Style::new().fg(Color::DarkGray);
    let growth = match row.metrics.growth {
        Some(_) => format!(
            "growth {}/s{}",
            format::growth(row.metrics.growth, false),
            if row.metrics.leak { " (leak hint)" } else { "" }
        ),
        None => "growth unknown yet".to_owned(),
    };
    match &row.key {
        RowKey::Process(pid) => {
            let process =
                node.and_then(|n| n.frame.snapshot.processes.iter().find(|p| p.pid == *pid));
            let mut first = format!("pid {pid}");
            let mut second = String::new();
            if let Some(p) = process {
                if let Some(workload) = &p.workload {
                    first.push_str(&format!(" · workload {}", terminal(workload)));
                }
                if let Some(instance) = &p.instance {
                    first.push_str(&format!(" · instance {}", terminal(instance)));
                }
                first.push_str(&format!(" · {growth}"));
                if let Some(leak) = &p.leak_hint {
                    first.push_str(&format!(
                        " +{} since {}",
                        format::bytes(leak.growth_bytes),
                        format::time_of_day(leak.since_unix_ms)
                    ));
                }
                second = format!(
                    "cgroup {}",
                    p.cgroup.as_deref().map_or("?".into(), terminal)
                );
                if !p.cmdline.is_empty() {
                    second.push_str(&format!(" · {}", terminal(&p.cmdline)));
                }
            }
            vec![Line::raw(first), Line::styled(second, dim)]
        }
        RowKey::Cgroup(path) => {
            let cgroup =
                node.and_then(|n| n.frame.snapshot.cgroups.iter().find(|c| &c.path == path));
            let mut first = format!("{} processes", row.id);
            if let Some(c) = cgroup {
                if let Some(usage) = c.usage_bytes {
                    first.push_str(&format!(" · usage {}", format::bytes(usage)));
                }
                first.push_str(&match c.limit_bytes {
                    Some(limit) => format!(" · limit {}", format::bytes(limit)),
                    None => " · no limit".to_owned(),
                });
                if let Some(psi) = c.psi {
                    first.push_str(&format!(" · PSI some {:.1}", psi.some_avg10));
                }
                if let Some(kills) = c.kernel_oom_kills {
                    first.push_str(&format!(" · kernel OOM kills {kills}"));
                }
                first.push_str(&format!(" · {growth}"));
            }
            vec![Line::raw(first)]
        }
        RowKey::Workload(workload) => {
            let mut instances: Vec<String> = Vec::new();
            for n in &app.fleet.nodes {
                for w in n.frame.workloads.iter().flat_map(|w| &w.workloads) {
                    if &w.workload == workload {
                        for i in &w.instances {
                            instances.push(if app.fleet.nodes.len() > 1 {
                                format!(
                                    "{}@{}",
                                    terminal(&i.instance),
                                    terminal(n.frame.node_name())
                                )
                            } else {
                                terminal(&i.instance).into_owned()
                            });
                        }
                    }
                }
            }
            vec![
                Line::raw(format!("{} · {growth}", row.workload)),
                Line::styled(format!("instances: {}", instances.join(", ")), dim),
            ]
        }
        RowKey::Node(target) => {
            let Some(n) = app.fleet.nodes.iter().find(|n| &n.target == target) else {
                return vec![Line::raw(String::new())];
            };
            let s = &n.frame.snapshot;
            let mut first = format!(
                "{} · kernel {}",
                terminal(target),
                terminal(&s.node.kernel_release)
            );
            let pipeline = &s.pipeline;
            if n.detailed {
                first.push_str(&format!(
                    " · {} probes · lost {} events",
                    pipeline.probes_attached,
                    pipeline.lost_kernel_ring_full
                        + pipeline.lost_kernel_map_full
                        + pipeline.lost_userspace_queue
                        + pipeline.lost_decode
                ));
            }
            vec![Line::raw(first)]
        }
    }
}

fn kills<'a>(app: &'a App, row: &Row) -> Vec<&'a Kill> {
    let node_name = match &row.key {
        RowKey::Node(target) => app
            .fleet
            .nodes
            .iter()
            .find(|n| &n.target == target)
            .map(|n| n.frame.node_name().to_owned()),
        _ => None,
    };
    app.kills
        .iter()
        .filter(|kill| kill.concerns(&row.key))
        .filter(|kill| node_name.as_ref().is_none_or(|name| &kill.node == name))
        .take(MAX_KILLS)
        .collect()
}

/// `OOM 03:12:04 redis-server pid 4242 rss 64M limit 64M memcg`.
pub fn kill_line(kill: &Kill) -> Line<'static> {
    let mut text = format!(" {} pid {}", terminal(&kill.comm), kill.pid);
    if let Some(rss) = kill.rss_bytes {
        text.push_str(&format!(" rss {}", format::bytes(rss)));
    }
    if let Some(limit) = kill.limit_bytes {
        text.push_str(&format!(" limit {}", format::bytes(limit)));
    }
    if let Some(scope) = kill.scope {
        text.push_str(match scope {
            memtrace_api::workloads::OomScope::Memcg => " (cgroup limit)",
            memtrace_api::workloads::OomScope::Global => " (node out of memory)",
            memtrace_api::workloads::OomScope::Unknown => "",
        });
    }
    if let Some(cgroup) = &kill.cgroup {
        text.push_str(&format!(" in {}", terminal(cgroup)));
    }
    Line::from(vec![
        Span::styled(
            format!("OOM {}", format::time_of_day(kill.at_unix_ms)),
            Style::new().fg(Color::Red).bold(),
        ),
        Span::raw(text),
    ])
}
