//! Drawing `memtrace top`: the node header, the view's table, the detail pane, the OOM kills,
//! the status line and the keys, laid out to fit 80×24 and to use any larger terminal.
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};

use super::app::App;
use super::rows::View;

mod bars;
mod detail;
mod help;
mod ooms;
mod table;

/// Lines the detail pane takes at most.
const DETAIL_LINES: u16 = 14;

/// Draw everything for `app` on `frame`.
pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let [header, tabs, main, status, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    bars::header(frame, header, app);
    bars::tabs(frame, tabs, app);
    bars::status(frame, status, app);
    bars::keys(frame, keys, app);
    let (main, below) = split_detail(main, app);
    if app.view == View::Node {
        // The nodes, then every OOM kill seen.
        let rows = u16::try_from(app.rows.len()).unwrap_or(u16::MAX);
        let [nodes, kills] = Layout::vertical([
            Constraint::Length(rows.saturating_add(1).min(main.height / 2).max(2)),
            Constraint::Min(2),
        ])
        .areas(main);
        table::draw(frame, nodes, app);
        ooms::draw(frame, kills, app);
    } else {
        table::draw(frame, main, app);
    }
    if let Some(area) = below {
        detail::draw(frame, area, app);
    }
    if app.help {
        help::draw(frame, frame.area(), app);
    }
}

/// The table's area and, when the detail pane is open, the pane's (below it).
fn split_detail(main: Rect, app: &App) -> (Rect, Option<Rect>) {
    if !app.detail || app.selected_row().is_none() {
        return (main, None);
    }
    let wanted = detail::height(app).min(DETAIL_LINES);
    // The table keeps a header and three rows.
    let pane = wanted.min(main.height.saturating_sub(4));
    let [table, pane_area] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(pane)]).areas(main);
    (table, Some(pane_area))
}
