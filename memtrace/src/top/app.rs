//! `memtrace top`'s state and what each key does to it. Pure: no terminal, no I/O; a key
//! that needs the source answers an [`Action`] for the event loop to carry out.
use std::cell::Cell;
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use memtrace_api::OomRecord;
use memtrace_api::workloads::{OomKill, OomScope};

use super::history::History;
use super::rows::{self, Row, RowKey, SortKey, View};
use super::source::{Fleet, Seek, SourceCommand};

/// Refresh intervals `+` and `-` step through.
pub const INTERVALS: [Duration; 7] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// How long an OOM kill flashes in the status line after it happened.
pub const FLASH_MS: u64 = 10_000;

/// OOM kills kept in the list.
const MAX_KILLS: usize = 200;

/// What the frames come from, as the header says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Local,
    Daemon(String),
    Cluster,
    Replay(String),
}

/// What the event loop must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed on screen.
    Nothing,
    Redraw,
    Quit,
    /// Ask the source (and redraw).
    Source(SourceCommand),
    /// The refresh interval (or pause) changed (and redraw).
    Timing,
}

/// An OOM kill, from a snapshot's record or a workloads summary, on one node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kill {
    pub node: String,
    pub at_unix_ms: u64,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub workload: Option<String>,
    pub rss_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub scope: Option<OomScope>,
}

impl Kill {
    fn from_record(node: &str, record: &OomRecord) -> Self {
        let parts = [
            record.anon_rss_bytes,
            record.file_rss_bytes,
            record.shmem_rss_bytes,
        ];
        Self {
            node: node.to_owned(),
            at_unix_ms: record.timestamp_unix_ms,
            pid: record.victim_pid,
            comm: record.victim_comm.clone(),
            cgroup: record.victim_cgroup.clone(),
            workload: record.victim_workload.clone(),
            rss_bytes: parts
                .iter()
                .any(Option::is_some)
                .then(|| parts.iter().flatten().sum()),
            limit_bytes: record.cgroup_limit_bytes,
            scope: None,
        }
    }

    fn from_summary(node: &str, kill: &OomKill) -> Self {
        Self {
            node: node.to_owned(),
            at_unix_ms: kill.timestamp_unix_ms,
            pid: kill.victim_pid,
            comm: kill.victim_comm.clone(),
            cgroup: kill.victim_cgroup.clone(),
            workload: Some(kill.workload.clone()),
            rss_bytes: kill.rss_bytes,
            limit_bytes: kill.cgroup_limit_bytes,
            scope: Some(kill.scope),
        }
    }

    /// Whether the kill was of the process, cgroup, workload or node of `key`.
    pub fn concerns(&self, key: &RowKey) -> bool {
        match key {
            RowKey::Process(pid) => self.pid == *pid,
            RowKey::Cgroup(path) => self
                .cgroup
                .as_deref()
                .is_some_and(|c| c == path || c.starts_with(&format!("{path}/"))),
            RowKey::Workload(workload) => self.workload.as_deref() == Some(workload),
            RowKey::Node(_) => true,
        }
    }
}

pub struct App {
    pub source: SourceKind,
    pub view: View,
    pub sort: SortKey,
    pub ascending: bool,
    pub filter: String,
    /// Keys go to the filter (after `/`, until Enter or Esc).
    pub editing_filter: bool,
    /// Index into `rows` of the selected row.
    pub selected: usize,
    selected_key: Option<RowKey>,
    pub detail: bool,
    pub help: bool,
    /// Live: no refreshes. A replay: not playing.
    pub paused: bool,
    pub interval: Duration,
    /// The last fleet with at least one node (a source that fails keeps showing it).
    pub fleet: Fleet,
    /// The last refresh's failures and note.
    pub failures: Vec<memtrace_api::cluster::NodeFailure>,
    pub note: Option<String>,
    pub history: History,
    /// Every OOM kill seen, newest first.
    pub kills: Vec<Kill>,
    /// The rows of `view`, filtered and sorted.
    pub rows: Vec<Row>,
    /// Said once by the source (probe families missing…).
    pub warnings: Vec<String>,
    /// The node drilled into (cluster).
    pub focus: Option<String>,
    /// First row shown, kept by the renderer so the selection scrolls smoothly.
    pub offset: Cell<usize>,
    /// Rows the table showed last (Page Up/Down move by it).
    pub page: Cell<usize>,
}

impl App {
    pub fn new(source: SourceKind, interval: Duration) -> Self {
        let replay = matches!(source, SourceKind::Replay(_));
        Self {
            source,
            view: View::default(),
            sort: SortKey::default(),
            ascending: false,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            selected_key: None,
            detail: false,
            help: false,
            // A replay stands still until `p` plays it.
            paused: replay,
            interval,
            fleet: Fleet::default(),
            failures: Vec::new(),
            note: None,
            history: History::default(),
            kills: Vec::new(),
            rows: Vec::new(),
            warnings: Vec::new(),
            focus: None,
            offset: Cell::new(0),
            page: Cell::new(10),
        }
    }

    pub fn is_replay(&self) -> bool {
        matches!(self.source, SourceKind::Replay(_))
    }

    /// The time of the frames shown (the newest node's).
    pub fn now_unix_ms(&self) -> u64 {
        self.fleet
            .nodes
            .iter()
            .map(|n| n.frame.timestamp_unix_ms())
            .max()
            .unwrap_or(0)
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.rows.get(self.selected)
    }

    /// The newest kill, while it is news (within [`FLASH_MS`] of the frames shown).
    pub fn flashing(&self) -> Option<&Kill> {
        let now = self.now_unix_ms();
        self.kills
            .first()
            .filter(|kill| kill.at_unix_ms + FLASH_MS >= now)
    }

    /// A source's answer.
    pub fn update(&mut self, fleet: Fleet) {
        self.failures = fleet.failures.clone();
        self.note = fleet.note.clone();
        if fleet.nodes.is_empty() && !self.fleet.nodes.is_empty() {
            // Keep showing what was last seen; the failures say why it is not refreshed.
            return;
        }
        if let Some(past) = &fleet.restart {
            let target = fleet
                .detailed()
                .or(fleet.nodes.first())
                .map(|n| n.target.clone())
                .unwrap_or_default();
            self.history.rebuild(past, &target);
            if fleet.position.is_some() {
                // A replay that jumped: the kills are those up to the new time.
                self.kills.clear();
            }
        }
        self.history.push(&fleet);
        self.fleet = fleet;
        self.collect_kills();
        self.refresh_rows();
    }

    fn collect_kills(&mut self) {
        let now = self.now_unix_ms();
        for node in &self.fleet.nodes {
            let name = node.frame.node_name();
            let recent = node
                .frame
                .snapshot
                .recent_ooms
                .iter()
                .map(|r| Kill::from_record(name, r));
            let summarized = node
                .frame
                .workloads
                .iter()
                .flat_map(|w| &w.ooms)
                .map(|k| Kill::from_summary(name, k));
            for kill in recent.chain(summarized) {
                if kill.at_unix_ms > now {
                    continue;
                }
                let same = self.kills.iter_mut().find(|k| {
                    k.node == kill.node && k.at_unix_ms == kill.at_unix_ms && k.pid == kill.pid
                });
                match same {
                    // The summary knows the scope, the record the sizes: keep what each adds.
                    Some(known) => {
                        known.scope = known.scope.or(kill.scope);
                        known.rss_bytes = known.rss_bytes.or(kill.rss_bytes);
                        known.limit_bytes = known.limit_bytes.or(kill.limit_bytes);
                        known.workload = known.workload.take().or(kill.workload);
                    }
                    None => self.kills.push(kill),
                }
            }
        }
        self.kills.sort_by(|a, b| {
            b.at_unix_ms
                .cmp(&a.at_unix_ms)
                .then_with(|| a.node.cmp(&b.node))
                .then_with(|| a.pid.cmp(&b.pid))
        });
        self.kills.truncate(MAX_KILLS);
    }

    /// Rebuild the rows of the view, keeping the selected row selected where it still is.
    pub fn refresh_rows(&mut self) {
        self.rows = rows::build(
            self.view,
            &self.fleet,
            self.sort,
            self.ascending,
            &self.filter,
        );
        if let Some(key) = &self.selected_key
            && let Some(at) = self.rows.iter().position(|row| &row.key == key)
        {
            self.selected = at;
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
        self.selected_key = self.rows.get(self.selected).map(|row| row.key.clone());
    }

    fn select(&mut self, index: usize) {
        self.selected = index.min(self.rows.len().saturating_sub(1));
        self.selected_key = self.rows.get(self.selected).map(|row| row.key.clone());
    }

    /// Whether the view shown needs the workloads summary (see [`SourceCommand::Workloads`]).
    pub fn needs_workloads(&self) -> bool {
        matches!(self.view, View::Workloads | View::Node)
    }

    /// Switch to `view`, telling the source when the workloads summary becomes needed or not.
    fn show(&mut self, view: View) -> Action {
        let needed = self.needs_workloads();
        self.switch(view);
        match self.needs_workloads() {
            needs if needs != needed => Action::Source(SourceCommand::Workloads(needs)),
            _ => Action::Redraw,
        }
    }

    fn switch(&mut self, view: View) {
        if view != self.view {
            self.view = view;
            self.selected = 0;
            self.selected_key = None;
            self.offset.set(0);
            self.refresh_rows();
        }
    }

    /// What `key` does.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.editing_filter {
            return self.edit_filter(key.code);
        }
        if self.help {
            return match key.code {
                KeyCode::Char('q') => Action::Quit,
                _ => {
                    self.help = false;
                    Action::Redraw
                }
            };
        }
        if self.is_replay()
            && let Some(seek) = replay_seek(key.code)
        {
            return Action::Source(SourceCommand::Seek(seek));
        }
        match key.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') | KeyCode::F(1) => {
                self.help = true;
                Action::Redraw
            }
            KeyCode::Tab => self.show(self.view.next()),
            KeyCode::BackTab => self.show(self.view.next().next().next()),
            KeyCode::Char(c @ '1'..='4') => self.show(View::ALL[usize::from(c as u8 - b'1')]),
            KeyCode::Down | KeyCode::Char('j') => self.moved(self.selected.saturating_add(1)),
            KeyCode::Up | KeyCode::Char('k') => self.moved(self.selected.saturating_sub(1)),
            KeyCode::PageDown => self.moved(self.selected.saturating_add(self.page.get())),
            KeyCode::PageUp => self.moved(self.selected.saturating_sub(self.page.get())),
            KeyCode::Home | KeyCode::Char('g') => self.moved(0),
            KeyCode::End | KeyCode::Char('G') => self.moved(usize::MAX),
            KeyCode::Char('s') | KeyCode::Char('S') => {
                self.sort = self.sort.cycle(key.code == KeyCode::Char('s'));
                self.refresh_rows();
                Action::Redraw
            }
            KeyCode::Char('i') => {
                self.ascending = !self.ascending;
                self.refresh_rows();
                Action::Redraw
            }
            KeyCode::Char('/') => {
                self.editing_filter = true;
                Action::Redraw
            }
            KeyCode::Enter => self.enter(),
            KeyCode::Esc => {
                if self.detail {
                    self.detail = false;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.refresh_rows();
                } else if self.focus.is_some() && self.source == SourceKind::Cluster {
                    self.focus = None;
                    return Action::Source(SourceCommand::Focus(None));
                } else {
                    return Action::Nothing;
                }
                Action::Redraw
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => {
                self.paused = !self.paused;
                Action::Timing
            }
            KeyCode::Char('+') | KeyCode::Char('=') => self.step_interval(true),
            KeyCode::Char('-') => self.step_interval(false),
            _ => Action::Nothing,
        }
    }

    fn moved(&mut self, to: usize) -> Action {
        self.select(to);
        Action::Redraw
    }

    fn enter(&mut self) -> Action {
        if self.view == View::Node
            && self.source == SourceKind::Cluster
            && let Some(RowKey::Node(target)) = self.selected_row().map(|r| r.key.clone())
        {
            self.focus = Some(target.clone());
            self.switch(View::Processes);
            return Action::Source(SourceCommand::Focus(Some(target)));
        }
        self.detail = !self.detail;
        Action::Redraw
    }

    fn edit_filter(&mut self, code: KeyCode) -> Action {
        match code {
            KeyCode::Enter => self.editing_filter = false,
            KeyCode::Esc => {
                self.editing_filter = false;
                self.filter.clear();
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
            _ => return Action::Nothing,
        }
        self.selected = 0;
        self.selected_key = None;
        self.offset.set(0);
        self.refresh_rows();
        Action::Redraw
    }

    fn step_interval(&mut self, longer: bool) -> Action {
        let at = INTERVALS
            .iter()
            .position(|i| *i >= self.interval)
            .unwrap_or(INTERVALS.len() - 1);
        let at = if longer {
            (at + 1).min(INTERVALS.len() - 1)
        } else {
            at.saturating_sub(1)
        };
        self.interval = INTERVALS[at];
        Action::Timing
    }
}

/// The replay's own keys.
fn replay_seek(code: KeyCode) -> Option<Seek> {
    Some(match code {
        KeyCode::Right => Seek::Step(1),
        KeyCode::Left => Seek::Step(-1),
        KeyCode::Char('o') => Seek::NextOom,
        KeyCode::Char('O') => Seek::PreviousOom,
        KeyCode::Home => Seek::Start,
        KeyCode::End => Seek::End,
        _ => return None,
    })
}
