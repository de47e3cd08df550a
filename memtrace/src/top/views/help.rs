//! `?`: every key, over the view.
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::top::app::App;

const LIVE: &[(&str, &str)] = &[
    (
        "Tab 1-4",
        "processes, workloads, cgroups, nodes (+ OOM kills)",
    ),
    ("↑↓ PgUp PgDn", "select (g/G first/last)"),
    (
        "⏎",
        "detail pane: history, OOM kills (cluster nodes: drill in)",
    ),
    ("s S", "sort by the next/previous column; i inverts"),
    ("/", "filter by name, cgroup or workload; Esc clears"),
    ("p", "pause refreshing"),
    ("+ -", "refresh interval"),
    ("Esc", "close the pane, clear the filter, leave a node"),
    ("q Ctrl-C", "quit"),
];

const REPLAY: &[(&str, &str)] = &[
    ("← →", "one interval back / forward"),
    ("o O", "next / previous OOM kill"),
    ("Home End", "first / last frame"),
    ("p", "play / stop at the refresh interval"),
];

const COLUMNS: &str =
    "SCORE pressure 0-100 · RECLM reclaim stall (% of a second) · GROW/s RSS growth, ! leak hint";

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let keys: Vec<&(&str, &str)> = if app.is_replay() {
        REPLAY
            .iter()
            .chain(LIVE.iter().filter(|(k, _)| *k != "p"))
            .collect()
    } else {
        LIVE.iter().collect()
    };
    let mut lines: Vec<Line<'_>> = keys
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(format!("{key:>13} "), Style::new().fg(Color::Cyan).bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::raw(COLUMNS));
    lines.push(Line::raw("any key closes this help"));
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let [_, middle, _] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(height),
        Constraint::Fill(1),
    ])
    .areas(area);
    let [_, pane, _] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Max(76),
        Constraint::Fill(1),
    ])
    .areas(middle);
    frame.render_widget(Clear, pane);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(Block::bordered().title(" memtrace top: keys ")),
        pane,
    );
}
