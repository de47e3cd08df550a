//! Every OOM kill seen since `top` started (or up to the replay's time), newest first: a kill
//! flashes in the status line and stays here.
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::detail::kill_line;
use crate::escape::terminal;
use crate::top::app::App;

pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let title = Line::styled(
        format!("OOM kills ({})", app.kills.len()),
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
    );
    let mut lines = vec![title];
    if app.kills.is_empty() {
        lines.push(Line::styled(" none seen", Style::new().fg(Color::DarkGray)));
    }
    let several_nodes = app.fleet.nodes.len() > 1;
    for kill in app
        .kills
        .iter()
        .take(usize::from(area.height.saturating_sub(1)))
    {
        let mut line = kill_line(kill);
        if several_nodes {
            line.spans
                .push(Span::raw(format!(" on {}", terminal(&kill.node))));
        }
        lines.push(line);
    }
    frame.render_widget(Paragraph::new(lines), area);
}
