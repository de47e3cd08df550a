//! The view's table: only the rows on screen are built (10 000 processes cost no more than a
//! screenful), and the columns that fit the width, the sorted one always among them.
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table};

use crate::top::app::{App, SourceKind};
use crate::top::format;
use crate::top::rows::{Row, SortKey, View};

/// A column of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Id,
    Name,
    Score,
    Rss,
    Anon,
    File,
    Shmem,
    MinorFaults,
    MajorFaults,
    Reclaim,
    Growth,
    Workload,
    Cgroup,
}

/// Left to right.
const ORDER: [Column; 13] = [
    Column::Id,
    Column::Name,
    Column::Score,
    Column::Rss,
    Column::Anon,
    Column::File,
    Column::Shmem,
    Column::MinorFaults,
    Column::MajorFaults,
    Column::Reclaim,
    Column::Growth,
    Column::Workload,
    Column::Cgroup,
];

/// The first to go when the width is short: the last of these.
const KEPT_FIRST: [Column; 13] = [
    Column::Name,
    Column::Id,
    Column::Score,
    Column::Rss,
    Column::Growth,
    Column::MinorFaults,
    Column::Anon,
    Column::MajorFaults,
    Column::Reclaim,
    Column::File,
    Column::Shmem,
    Column::Workload,
    Column::Cgroup,
];

/// The name column's least width: a command's 15 characters mostly fit; a path or a workload
/// key needs more of its end.
fn name_min(view: View) -> u16 {
    match view {
        View::Processes | View::Node => 12,
        View::Workloads | View::Cgroups => 20,
    }
}
/// The name column's width at most (the rest goes to the workload and cgroup).
const NAME_MAX: u16 = 32;
const WORKLOAD_WIDTH: u16 = 24;
const CGROUP_MIN: u16 = 16;

impl Column {
    fn title(self, view: View) -> &'static str {
        match (self, view) {
            (Self::Id, View::Processes) => "PID",
            (Self::Id, View::Workloads) => "INSTANCES",
            (Self::Id, View::Cgroups | View::Node) => "PROCS",
            (Self::Name, View::Processes) => "COMMAND",
            (Self::Name, View::Workloads) => "WORKLOAD",
            (Self::Name, View::Cgroups) => "CGROUP",
            (Self::Name, View::Node) => "NODE",
            (Self::Score, _) => "SCORE",
            (Self::Rss, View::Node) => "USED",
            (Self::Rss, _) => "RSS",
            (Self::Anon, _) => "ANON",
            (Self::File, View::Node) => "CACHE",
            (Self::File, _) => "FILE",
            (Self::Shmem, View::Node) => "SWAP",
            (Self::Shmem, _) => "SHMEM",
            (Self::MinorFaults, _) => "MINF/s",
            (Self::MajorFaults, _) => "MAJF/s",
            (Self::Reclaim, _) => "RECLM",
            (Self::Growth, _) => "GROW/s",
            (Self::Workload, View::Workloads) => "KIND",
            (Self::Workload, View::Node) => "KERNEL",
            (Self::Workload, _) => "WORKLOAD",
            (Self::Cgroup, View::Node) => "TARGET",
            (Self::Cgroup, _) => "CGROUP",
        }
    }

    /// Its width, the name's and the cgroup's at least.
    fn width(self, view: View) -> u16 {
        match self {
            Self::Id => match view {
                View::Processes => 7,
                View::Workloads => 10,
                View::Cgroups => 5,
                View::Node => 11,
            },
            Self::Name => name_min(view),
            // Room for the title and the sort arrow.
            Self::Score | Self::Rss | Self::Anon | Self::File | Self::Shmem | Self::Reclaim => 6,
            Self::MinorFaults | Self::MajorFaults | Self::Growth => 7,
            Self::Workload => WORKLOAD_WIDTH,
            Self::Cgroup => CGROUP_MIN,
        }
    }

    fn sorted_by(self) -> Option<SortKey> {
        Some(match self {
            Self::Score => SortKey::Pressure,
            Self::Rss => SortKey::Rss,
            Self::Anon => SortKey::Anon,
            Self::File => SortKey::File,
            Self::Shmem => SortKey::Shmem,
            Self::MinorFaults => SortKey::MinorFaults,
            Self::MajorFaults => SortKey::MajorFaults,
            Self::Reclaim => SortKey::Reclaim,
            Self::Growth => SortKey::Growth,
            _ => return None,
        })
    }

    fn numeric(self) -> bool {
        !matches!(self, Self::Name | Self::Workload | Self::Cgroup)
    }

    fn cell(self, view: View, row: &Row, width: u16) -> String {
        let m = &row.metrics;
        let width = usize::from(width);
        match self {
            Self::Id => row.id.clone(),
            // A path's or a workload key's end tells it apart (`…/nginx.service`,
            // `…Deployment/cart`); a command's start does.
            Self::Name if matches!(view, View::Cgroups | View::Workloads) => {
                format::fit_tail(&row.name, width)
            }
            Self::Name => format::fit(&row.name, width),
            Self::Score => format!("{:.0}", m.pressure),
            Self::Rss => format::bytes(m.rss),
            Self::Anon => format::bytes(m.anon),
            Self::File => format::bytes(m.file),
            Self::Shmem => format::bytes(m.shmem),
            Self::MinorFaults => format::rate(m.faults_minor),
            Self::MajorFaults => format::rate(m.faults_major),
            Self::Reclaim => format::stall(m.reclaim),
            Self::Growth => format::growth(m.growth, m.leak),
            Self::Workload => format::fit(&row.workload, width),
            Self::Cgroup => format::fit_tail(&row.cgroup, width),
        }
    }
}

/// The columns shown at `width`, left to right, with their widths.
fn layout(view: View, sort: SortKey, width: u16) -> Vec<(Column, u16)> {
    // Cgroups are named by their path: no second cgroup column.
    let applies = |c: &Column| !(view == View::Cgroups && *c == Column::Cgroup);
    let mut kept: Vec<Column> = KEPT_FIRST.iter().copied().filter(applies).collect();
    let total =
        |columns: &[Column]| -> u16 { columns.iter().map(|c| c.width(view) + 1).sum::<u16>() };
    while total(&kept) > width && kept.len() > 2 {
        // The sorted column stays.
        let drop = kept
            .iter()
            .rposition(|c| c.sorted_by() != Some(sort))
            .unwrap_or(kept.len() - 1);
        kept.remove(drop);
    }
    let spare = width.saturating_sub(total(&kept));
    let name_extra = if kept.contains(&Column::Cgroup) {
        spare.min(NAME_MAX.saturating_sub(name_min(view)))
    } else {
        spare
    };
    let cgroup_extra = spare - name_extra;
    ORDER
        .iter()
        .copied()
        .filter(|c| kept.contains(c))
        .map(|c| {
            let width = match c {
                Column::Name => name_min(view) + name_extra,
                Column::Cgroup => CGROUP_MIN + cgroup_extra,
                other => other.width(view),
            };
            (c, width)
        })
        // The name first in every view but the processes' (where the pid leads, as in top).
        .fold(Vec::new(), |mut columns, column| {
            if view != View::Processes && column.0 == Column::Name {
                columns.insert(0, column);
            } else {
                columns.push(column);
            }
            columns
        })
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    if app.rows.is_empty() {
        frame.render_widget(Paragraph::new(empty_reason(app)), area);
        return;
    }
    let visible = usize::from(area.height.saturating_sub(1)).max(1);
    app.page.set(visible);
    let mut offset = app.offset.get();
    if app.selected < offset {
        offset = app.selected;
    } else if app.selected >= offset + visible {
        offset = app.selected + 1 - visible;
    }
    offset = offset.min(app.rows.len().saturating_sub(visible));
    app.offset.set(offset);

    let columns = layout(app.view, app.sort, area.width);
    let arrow = if app.ascending { "▲" } else { "▼" };
    let header = TableRow::new(columns.iter().map(|(column, _)| {
        let sorted = column.sorted_by() == Some(app.sort);
        let title = if sorted {
            format!("{}{arrow}", column.title(app.view))
        } else {
            column.title(app.view).to_owned()
        };
        let cell = aligned(title, *column);
        if sorted {
            cell.style(Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD))
        } else {
            cell
        }
    }))
    .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows = app
        .rows
        .iter()
        .enumerate()
        .skip(offset)
        .take(visible)
        .map(|(index, row)| {
            let cells = columns
                .iter()
                .map(|(column, width)| aligned(column.cell(app.view, row, *width), *column));
            let style = if index == app.selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else if row.metrics.leak {
                Style::new().fg(Color::Magenta)
            } else {
                Style::new()
            };
            TableRow::new(cells).style(style)
        });
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|(_, w)| Constraint::Length(*w))
        .collect();
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        area,
    );
}

fn aligned(text: String, column: Column) -> Cell<'static> {
    let line = Line::raw(text);
    Cell::from(if column.numeric() {
        line.right_aligned()
    } else {
        line
    })
}

/// Why a view has no rows.
fn empty_reason(app: &App) -> String {
    if !app.filter.is_empty() {
        return format!(
            " nothing matches the filter \"{}\" (Esc clears it)",
            app.filter
        );
    }
    if app.fleet.nodes.is_empty() {
        return if app.failures.is_empty() {
            " waiting for the first frame…".to_owned()
        } else {
            " no node answered (see the status line)".to_owned()
        };
    }
    match app.view {
        View::Processes | View::Cgroups
            if app.fleet.detailed().is_none() && app.source == SourceKind::Cluster =>
        {
            " select a node in view 4 and press Enter to see its processes and cgroups".to_owned()
        }
        View::Workloads if app.fleet.nodes.iter().all(|n| n.frame.workloads.is_none()) => {
            " this source serves no workloads view (a daemon older than memtrace cluster)"
                .to_owned()
        }
        _ => " nothing to show yet".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_and_keep_the_sorted_one() {
        for width in [60, 80, 120, 200] {
            for view in View::ALL {
                for sort in SortKey::ALL {
                    let columns = layout(view, sort, width);
                    let used: u16 = columns.iter().map(|(_, w)| w + 1).sum();
                    assert!(
                        used <= width.max(name_min(view) + 9),
                        "{view:?} {sort:?} {width}: {used}"
                    );
                    assert!(
                        columns.iter().any(|(c, _)| c.sorted_by() == Some(sort)),
                        "{view:?} {sort:?} {width}: the sorted column is shown"
                    );
                }
            }
        }
        let at_80: Vec<Column> = layout(View::Processes, SortKey::Pressure, 80)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(at_80[..2], [Column::Id, Column::Name]);
        assert!(!at_80.contains(&Column::Cgroup));
        let wide: Vec<Column> = layout(View::Processes, SortKey::Pressure, 200)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(wide, ORDER);
    }
}
