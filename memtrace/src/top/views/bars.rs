//! The one-line bars: the node header, the view tabs, the status line and the keys.
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::escape::terminal;
use crate::top::app::{App, SourceKind};
use crate::top::format;
use crate::top::rows::View;

/// Two lines: who and when, then the node's memory (PSI, available, swap, fragmentation).
pub fn header(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let fleet = &app.fleet;
    let shown = fleet.detailed().or(fleet.nodes.first());
    let mut first = vec![Span::styled("memtrace top", Style::new().bold())];
    let source = match &app.source {
        SourceKind::Local => "local probes".to_owned(),
        SourceKind::Daemon(url) => format!("daemon {}", terminal(url)),
        SourceKind::Cluster => {
            let asked = fleet.nodes.len() + app.failures.len();
            format!("cluster {}/{asked} nodes", fleet.nodes.len())
        }
        SourceKind::Replay(path) => format!("replay {}", terminal(path)),
    };
    first.push(Span::raw(format!("  {source}")));
    if let Some(node) = shown {
        let name = terminal(node.frame.node_name()).into_owned();
        first.push(Span::raw("  "));
        first.push(Span::styled(name, Style::new().fg(Color::Cyan).bold()));
    }
    if app.now_unix_ms() > 0 {
        let when = if app.is_replay() {
            format::date_time(app.now_unix_ms())
        } else {
            format::time_of_day(app.now_unix_ms())
        };
        first.push(Span::raw(format!("  {when} UTC")));
    }
    if let Some(position) = fleet.position {
        first.push(Span::raw(format!(
            "  frame {}/{}",
            position.index + 1,
            position.len
        )));
    }
    let timing = match (app.is_replay(), app.paused) {
        (true, true) => "  stopped".to_owned(),
        (true, false) => format!("  playing every {}", format::interval(app.interval)),
        (false, true) => "  PAUSED".to_owned(),
        (false, false) => format!("  every {}", format::interval(app.interval)),
    };
    first.push(Span::styled(
        timing,
        if app.paused && !app.is_replay() {
            Style::new().fg(Color::Yellow).bold()
        } else {
            Style::new()
        },
    ));
    let second = match shown {
        Some(node) => memory_line(&node.frame.snapshot.node_memory),
        None if app.failures.is_empty() => Line::raw("waiting for the first frame…"),
        None => Line::raw("no node answered"),
    };
    frame.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

fn memory_line(memory: &memtrace_api::NodeMemoryView) -> Line<'static> {
    let used = memory
        .mem_total_bytes
        .saturating_sub(memory.mem_available_bytes);
    let swap_used = memory
        .swap_total_bytes
        .saturating_sub(memory.swap_free_bytes);
    let low = memory.mem_total_bytes > 0
        && memory.mem_available_bytes.saturating_mul(10) < memory.mem_total_bytes;
    let mut spans = vec![
        Span::raw(format!(
            "mem {}/{}",
            format::bytes(used),
            format::bytes(memory.mem_total_bytes)
        )),
        Span::raw("  avail "),
        Span::styled(
            format::bytes(memory.mem_available_bytes),
            if low {
                Style::new().fg(Color::Red).bold()
            } else {
                Style::new().bold()
            },
        ),
        Span::raw(format!(
            "  swap {}/{}",
            format::bytes(swap_used),
            format::bytes(memory.swap_total_bytes)
        )),
    ];
    if let Some(psi) = memory.psi {
        let full = psi
            .full_avg10
            .map_or_else(String::new, |full| format!(" full {full:.1}"));
        spans.push(Span::styled(
            format!("  PSI some {:.1}{full}", psi.some_avg10),
            if psi.some_avg10 >= 10.0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            },
        ));
    }
    spans.push(Span::raw(format!(
        "  frag {:.2}/{:.2}",
        memory.fragmentation_index_order3, memory.fragmentation_index_order9
    )));
    Line::from(spans)
}

/// The views (the current one highlighted), the sort and the filter.
pub fn tabs(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let mut spans = Vec::new();
    for (n, view) in View::ALL.iter().enumerate() {
        let label = format!(" {} {} ", n + 1, view.title());
        spans.push(if *view == app.view {
            Span::styled(label, Style::new().add_modifier(Modifier::REVERSED).bold())
        } else {
            Span::raw(label)
        });
    }
    let arrow = if app.ascending { "▲" } else { "▼" };
    spans.push(Span::raw(format!(" sort {}{arrow}", app.sort.label())));
    if app.editing_filter || !app.filter.is_empty() {
        let cursor = if app.editing_filter { "█" } else { "" };
        spans.push(Span::styled(
            format!(" filter {}{cursor}", terminal(&app.filter)),
            Style::new().fg(Color::Yellow),
        ));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().bg(Color::Indexed(236))),
        area,
    );
}

/// A new OOM kill (flashing), else a node that did not answer, else the source's note or
/// warning, else a count of what is shown.
pub fn status(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let line = if let Some(kill) = app.flashing() {
        let mut text = format!(
            " OOM KILL {} {} pid {}",
            format::time_of_day(kill.at_unix_ms),
            terminal(&kill.comm),
            kill.pid
        );
        if let Some(rss) = kill.rss_bytes {
            text.push_str(&format!(" rss {}", format::bytes(rss)));
        }
        if let Some(limit) = kill.limit_bytes {
            text.push_str(&format!(" limit {}", format::bytes(limit)));
        }
        if app.fleet.nodes.len() > 1 {
            text.push_str(&format!(" on {}", terminal(&kill.node)));
        }
        if let Some(cgroup) = &kill.cgroup {
            text.push_str(&format!(" in {}", terminal(cgroup)));
        }
        Line::styled(text, Style::new().fg(Color::White).bg(Color::Red).bold())
    } else if let Some(failure) = app.failures.first() {
        let more = match app.failures.len() {
            1 => String::new(),
            n => format!(" (+{} more, view 4)", n - 1),
        };
        Line::styled(
            format!(
                " {}: {}{more}",
                terminal(&failure.target),
                terminal(&failure.error)
            ),
            Style::new().fg(Color::Yellow).bold(),
        )
    } else if let Some(note) = app.note.as_ref().or(app.warnings.first()) {
        Line::styled(
            format!(" {}", terminal(note)),
            Style::new().fg(Color::Yellow),
        )
    } else {
        let kills = match app.kills.len() {
            0 => "no OOM kills".to_owned(),
            1 => "1 OOM kill (view 4)".to_owned(),
            n => format!("{n} OOM kills (view 4)"),
        };
        Line::raw(format!(
            " {} {} shown · {kills}",
            app.rows.len(),
            match app.view {
                View::Processes => "processes",
                View::Workloads => "workloads",
                View::Cgroups => "cgroups",
                View::Node => "nodes",
            }
        ))
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The keys that work now.
pub fn keys(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let keys: &[(&str, &str)] = if app.editing_filter {
        &[("⏎", "keep filter"), ("Esc", "clear"), ("⌫", "erase")]
    } else if app.is_replay() {
        &[
            ("q", "quit"),
            ("←→", "step"),
            ("o/O", "OOM"),
            ("Home/End", ""),
            ("Tab", "view"),
            ("s", "sort"),
            ("/", "filter"),
            ("⏎", "detail"),
            ("p", "play"),
            ("?", "help"),
        ]
    } else {
        &[
            ("q", "quit"),
            ("Tab", "view"),
            ("s", "sort"),
            ("/", "filter"),
            ("⏎", "detail"),
            ("p", "pause"),
            ("+-", "interval"),
            ("?", "help"),
        ]
    };
    let mut spans = Vec::new();
    for (key, what) in keys {
        spans.push(Span::styled(
            *key,
            Style::new().fg(Color::Black).bg(Color::Cyan),
        ));
        if what.is_empty() {
            spans.push(Span::raw(" "));
        } else {
            spans.push(Span::raw(format!(" {what} ")));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
