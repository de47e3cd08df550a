//! `memtrace top` drawn from deterministic frames (built here, so that no recording format is
//! involved) with ratatui's test backend, the screens snapshotted with insta
//! (`src/top/snapshots/`), and what the keys do to the state.
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use memtrace_api::frame::Frame;
use memtrace_api::workloads::{
    InstanceHistory, InstanceSummary, NodeSummary, OomKill, OomScope, WorkloadKind,
    WorkloadSummary, WorkloadsResponse,
};
use memtrace_api::{
    CgroupView, Counters, LeakHint, NodeIdentityView, NodeMemoryView, OomRecord, ProcessView,
    PsiView, Rates, Snapshot,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{Action, App, SourceKind};
use super::history::CAPACITY;
use super::rows::{RowKey, SortKey, View};
use super::source::cluster::summary_frame;
use super::source::replay::{Replay, kill_frames};
use super::source::{Fleet, NodeFrame, Seek, SourceCommand};
use crate::record::Recording;

/// 2026-11-30 03:10:00 UTC: frame `i` is `i` seconds later.
const T0: u64 = 1_796_008_200_000;
const MIB: u64 = 1 << 20;
/// The frame at which the OOM killer takes redis (03:10:40).
const KILL_AT: usize = 40;
const FRAMES: usize = 60;

struct Proc {
    pid: u32,
    comm: &'static str,
    cgroup: &'static str,
    workload: &'static str,
    anon: u64,
    file: u64,
    shmem: u64,
    minor: f64,
    major: f64,
    reclaim: f64,
    score: f64,
    growth: Option<f64>,
    leak: bool,
}

/// The processes of frame `i`: redis grows into its 64 MiB limit and is killed at
/// [`KILL_AT`]; java grows slowly with a leak hint; the rest hold steady.
fn processes(i: usize) -> Vec<Proc> {
    let i64 = i as u64;
    let mut all = vec![
        Proc {
            pid: 1200,
            comm: "postgres",
            cgroup: "/system.slice/postgresql.service",
            workload: "postgresql.service",
            anon: 300 * MIB,
            file: 120 * MIB,
            shmem: 64 * MIB,
            minor: 52.0,
            major: 0.0,
            reclaim: 0.0,
            score: 12.0,
            growth: Some(0.0),
            leak: false,
        },
        Proc {
            pid: 3000,
            comm: "java",
            cgroup: "/kubepods.slice/pod-shop/cri-containerd-1f2e",
            workload: "shop/Deployment/cart",
            anon: 900 * MIB + i64 * 20 * 1024,
            file: 40 * MIB,
            shmem: 0,
            minor: 310.0,
            major: 0.0,
            reclaim: 0.0,
            score: 35.0,
            growth: Some(20480.0),
            leak: true,
        },
        Proc {
            pid: 800,
            comm: "nginx",
            cgroup: "/system.slice/nginx.service",
            workload: "nginx.service",
            anon: 24 * MIB,
            file: 8 * MIB,
            shmem: 2 * MIB,
            minor: 5200.0 + (i % 7) as f64 * 300.0,
            major: 0.0,
            reclaim: 0.0,
            score: 8.0,
            growth: None,
            leak: false,
        },
        Proc {
            pid: 2100,
            comm: "backup",
            cgroup: "/system.slice/backup.service",
            workload: "backup.service",
            anon: 16 * MIB,
            file: 400 * MIB,
            shmem: 0,
            minor: 40.0,
            major: 120.0 + (i % 5) as f64 * 10.0,
            reclaim: 0.05,
            score: 41.0,
            growth: Some(-4096.0),
            leak: false,
        },
        Proc {
            pid: 600,
            comm: "sshd",
            cgroup: "/system.slice/ssh.service",
            workload: "ssh.service",
            anon: 3 * MIB,
            file: 2 * MIB,
            shmem: 0,
            minor: 0.0,
            major: 0.0,
            reclaim: 0.0,
            score: 0.0,
            growth: Some(0.0),
            leak: false,
        },
    ];
    if i < KILL_AT {
        all.push(Proc {
            pid: 4242,
            comm: "redis-server",
            cgroup: "/memtrace-demo/redis",
            workload: "redis-server.service",
            anon: (20 + i64) * MIB + (i64 * i64 / 40) * MIB / 2,
            file: 2 * MIB,
            shmem: 0,
            minor: 400.0 + i as f64 * 60.0,
            major: if i > 30 { 3.0 } else { 0.0 },
            reclaim: if i > 32 { 0.02 * (i - 32) as f64 } else { 0.0 },
            score: 20.0 + i as f64 * 1.6,
            growth: Some(1.1 * MIB as f64),
            leak: false,
        });
    }
    all
}

fn process_view(p: &Proc) -> ProcessView {
    ProcessView {
        pid: p.pid,
        comm: p.comm.to_owned(),
        cmdline: format!("/usr/bin/{}", p.comm),
        cgroup: Some(p.cgroup.to_owned()),
        workload: Some(p.workload.to_owned()),
        instance: Some(format!("pid/{}", p.pid)),
        counters: Counters {
            rss_anon_bytes: p.anon,
            rss_file_bytes: p.file,
            rss_shmem_bytes: p.shmem,
            ..Counters::default()
        },
        rates: Rates {
            faults_minor_per_sec: p.minor,
            faults_major_per_sec: p.major,
            reclaim_stall_seconds_per_sec: p.reclaim,
            ..Rates::default()
        },
        rss_bytes: p.anon + p.file + p.shmem,
        pressure_score: p.score,
        rss_growth_bytes_per_sec: p.growth,
        leak_hint: p.leak.then_some(LeakHint {
            since_unix_ms: T0 - 600_000,
            window_seconds: 600.0,
            growth_bytes_per_sec: 20480.0,
            growth_bytes: 12 * MIB,
        }),
        ..ProcessView::default()
    }
}

fn cgroup_view(p: &Proc) -> CgroupView {
    let limit = (p.comm == "redis-server").then_some(64 * MIB);
    CgroupView {
        path: p.cgroup.to_owned(),
        workload: Some(p.workload.to_owned()),
        processes: 1,
        counters: Counters {
            rss_anon_bytes: p.anon,
            rss_file_bytes: p.file,
            rss_shmem_bytes: p.shmem,
            ..Counters::default()
        },
        rates: Rates {
            faults_minor_per_sec: p.minor,
            faults_major_per_sec: p.major,
            reclaim_stall_seconds_per_sec: p.reclaim,
            ..Rates::default()
        },
        rss_bytes: p.anon + p.file + p.shmem,
        usage_bytes: Some(p.anon + p.file + p.shmem + MIB),
        limit_bytes: limit,
        pressure_score: p.score,
        rss_growth_bytes_per_sec: p.growth,
        ..CgroupView::default()
    }
}

fn kill_record() -> OomRecord {
    OomRecord {
        timestamp: "2026-11-30T03:10:39.500Z".to_owned(),
        timestamp_unix_ms: at(KILL_AT) - 500,
        victim_pid: 4242,
        victim_comm: "redis-server".to_owned(),
        victim_cgroup: Some("/memtrace-demo/redis".to_owned()),
        victim_workload: Some("redis-server.service".to_owned()),
        trigger_pid: 4242,
        trigger_comm: "redis-server".to_owned(),
        anon_rss_bytes: Some(63 * MIB),
        file_rss_bytes: Some(MIB),
        shmem_rss_bytes: Some(0),
        cgroup_limit_bytes: Some(64 * MIB),
        ..OomRecord::default()
    }
}

fn at(i: usize) -> u64 {
    T0 + i as u64 * 1000
}

/// One node's frame `i` of the incident.
fn frame_on(node: &str, i: usize) -> Frame {
    let procs = processes(i);
    let killed = i >= KILL_AT;
    let memory = NodeMemoryView {
        psi: Some(PsiView {
            some_avg10: if i > 30 { (i - 30) as f64 * 1.5 } else { 0.2 },
            full_avg10: Some(if i > 35 { 2.0 } else { 0.0 }),
            ..PsiView::default()
        }),
        mem_total_bytes: 16 << 30,
        mem_available_bytes: (5 << 30) - i as u64 * 16 * MIB,
        mem_free_bytes: 1 << 30,
        swap_total_bytes: 2 << 30,
        swap_free_bytes: (2 << 30) - 100 * MIB,
        anon_bytes: 9 << 30,
        page_cache_bytes: 2 << 30,
        fragmentation_index_order3: 0.12,
        fragmentation_index_order9: 0.85,
        ..NodeMemoryView::default()
    };
    let snapshot = Snapshot {
        schema_version: 1,
        node: NodeIdentityView {
            name: Some(node.to_owned()),
            hostname: node.to_owned(),
            boot_id: "b00t".to_owned(),
            kernel_release: "6.18.0".to_owned(),
        },
        timestamp: String::new(),
        timestamp_unix_ms: at(i),
        rate_window_seconds: 3.0,
        processes: procs.iter().map(process_view).collect(),
        cgroups: procs.iter().map(cgroup_view).collect(),
        node_memory: memory.clone(),
        recent_ooms: if killed {
            vec![kill_record()]
        } else {
            Vec::new()
        },
        ..Snapshot::default()
    };
    let workloads = WorkloadsResponse {
        schema_version: 1,
        node: NodeSummary {
            name: node.to_owned(),
            hostname: node.to_owned(),
            kernel_release: "6.18.0".to_owned(),
            memtrace_version: "0.1.0".to_owned(),
            ready: true,
            mem_total_bytes: memory.mem_total_bytes,
            mem_available_bytes: memory.mem_available_bytes,
            swap_total_bytes: memory.swap_total_bytes,
            swap_free_bytes: memory.swap_free_bytes,
            psi: memory.psi,
            fragmentation_index_order3: 0.12,
            fragmentation_index_order9: 0.85,
            reclaim_stall_seconds_per_sec: procs.iter().map(|p| p.reclaim).sum(),
            pressure_score: procs.iter().map(|p| p.score).fold(0.0, f64::max),
            processes: procs.len() as u32,
            ..NodeSummary::default()
        },
        timestamp_unix_ms: at(i),
        rate_window_seconds: 3.0,
        workloads: procs
            .iter()
            .map(|p| WorkloadSummary {
                workload: p.workload.to_owned(),
                kind: if p.workload.contains('/') {
                    WorkloadKind::Kubernetes
                } else {
                    WorkloadKind::Systemd
                },
                instances: vec![InstanceSummary {
                    instance: format!("pid/{}", p.pid),
                    started_unix_ms: T0 - 3_600_000,
                    cgroup: Some(p.cgroup.to_owned()),
                    processes: 1,
                    rss_anon_bytes: p.anon,
                    rss_file_bytes: p.file,
                    rss_shmem_bytes: p.shmem,
                    rates: Rates {
                        faults_minor_per_sec: p.minor,
                        faults_major_per_sec: p.major,
                        reclaim_stall_seconds_per_sec: p.reclaim,
                        ..Rates::default()
                    },
                    pressure_score: p.score,
                    history: InstanceHistory {
                        start_unix_s: T0 / 1000 - 600,
                        rss_anon_bytes: (0..10).map(|k| p.anon / 10 * (k + 1)).collect(),
                        rss_bytes: (0..10).map(|k| (p.anon + p.file) / 10 * (k + 1)).collect(),
                        reclaim_stall_seconds_per_sec: vec![0.0; 10],
                    },
                    rss_growth_bytes_per_sec: p.growth,
                    leak_hint: process_view(p).leak_hint,
                    ..InstanceSummary::default()
                }],
                ..WorkloadSummary::default()
            })
            .collect(),
        ooms: if killed {
            vec![OomKill {
                timestamp_unix_ms: at(KILL_AT) - 500,
                workload: "redis-server.service".to_owned(),
                instance: "pid/4242".to_owned(),
                victim_pid: 4242,
                victim_comm: "redis-server".to_owned(),
                victim_cgroup: Some("/memtrace-demo/redis".to_owned()),
                scope: OomScope::Memcg,
                rss_bytes: Some(64 * MIB),
                cgroup_limit_bytes: Some(64 * MIB),
            }]
        } else {
            Vec::new()
        },
        ..WorkloadsResponse::default()
    };
    Frame {
        snapshot,
        workloads: Some(workloads),
    }
}

fn incident() -> Vec<Frame> {
    (0..FRAMES).map(|i| frame_on("node-a", i)).collect()
}

/// `top` replaying the incident from frame `index`.
fn replay_at(index: usize) -> (App, Replay) {
    let replay = Replay::new(
        Recording::from_frames(incident()),
        "incident.mtr".to_owned(),
        index,
    );
    let mut app = App::new(
        SourceKind::Replay("incident.mtr".to_owned()),
        std::time::Duration::from_secs(1),
    );
    app.update(replay.current());
    (app, replay)
}

/// `top` live on one node, having seen frames `0..=last` one refresh each.
fn live_until(last: usize) -> App {
    let mut app = App::new(SourceKind::Local, std::time::Duration::from_secs(1));
    for i in 0..=last {
        app.update(Fleet {
            nodes: vec![NodeFrame {
                target: "local".to_owned(),
                frame: frame_on("node-a", i),
                detailed: true,
            }],
            ..Fleet::default()
        });
    }
    app
}

fn press(app: &mut App, code: KeyCode) -> Action {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// The screen's text, one line per row, trailing blanks trimmed.
fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| super::views::draw(frame, app))
        .expect("draw");
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn names(app: &App) -> Vec<&str> {
    app.rows.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn processes_view() {
    let app = live_until(35);
    insta::assert_snapshot!("processes_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("processes_160x40", screen(&app, 160, 40));
}

#[test]
fn workloads_view() {
    let mut app = live_until(35);
    press(&mut app, KeyCode::Char('2'));
    assert_eq!(app.view, View::Workloads);
    insta::assert_snapshot!("workloads_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("workloads_160x40", screen(&app, 160, 40));
}

#[test]
fn cgroups_view() {
    let mut app = live_until(35);
    press(&mut app, KeyCode::Char('3'));
    insta::assert_snapshot!("cgroups_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("cgroups_160x40", screen(&app, 160, 40));
}

#[test]
fn node_view_lists_the_kills() {
    let mut app = live_until(45);
    press(&mut app, KeyCode::Char('4'));
    let small = screen(&app, 80, 24);
    assert!(small.contains("OOM kills (1)"), "{small}");
    insta::assert_snapshot!("node_80x24", small);
    insta::assert_snapshot!("node_160x40", screen(&app, 160, 40));
}

#[test]
fn detail_pane_shows_the_history() {
    let mut app = live_until(38);
    // redis-server leads by pressure now (the selection followed backup, the first at the start).
    press(&mut app, KeyCode::Char('g'));
    assert_eq!(
        app.selected_row().map(|r| r.name.as_str()),
        Some("redis-server")
    );
    press(&mut app, KeyCode::Enter);
    assert!(app.detail);
    let samples = app
        .history
        .samples(&RowKey::Process(4242))
        .expect("redis' history");
    assert_eq!(samples.len(), 39);
    assert!(samples.back().unwrap().rss_anon > samples.front().unwrap().rss_anon);
    insta::assert_snapshot!("detail_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("detail_160x40", screen(&app, 160, 40));
    // A workload's pane has the daemon's instance history too.
    press(&mut app, KeyCode::Char('2'));
    assert!(app.detail, "the pane stays open across views");
    let workload = screen(&app, 120, 30);
    assert!(workload.contains("daemon RSS"), "{workload}");
    insta::assert_snapshot!("detail_workload_120x30", workload);
}

#[test]
fn help_lists_the_keys() {
    let mut app = live_until(3);
    press(&mut app, KeyCode::Char('?'));
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24));
    // Any key closes it; `q` still quits.
    assert_eq!(press(&mut app, KeyCode::Char('x')), Action::Redraw);
    assert!(!app.help);
    press(&mut app, KeyCode::Char('?'));
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
}

#[test]
fn replay_jumps_to_the_kill() {
    let (mut app, mut replay) = replay_at(10);
    assert!(app.paused, "a replay stands still until played");
    let Action::Source(SourceCommand::Seek(seek)) = press(&mut app, KeyCode::Char('o')) else {
        panic!("o asks the source");
    };
    app.update(replay.seek(seek));
    assert_eq!(app.fleet.position.map(|p| p.index), Some(KILL_AT));
    let kill = app.flashing().expect("the kill flashes");
    assert_eq!((kill.pid, kill.comm.as_str()), (4242, "redis-server"));
    assert_eq!(
        kill.scope,
        Some(OomScope::Memcg),
        "the summary's scope joins the record"
    );
    insta::assert_snapshot!("replay_kill_80x24", screen(&app, 80, 24));
    press(&mut app, KeyCode::Char('4'));
    insta::assert_snapshot!("replay_kill_nodes_160x40", screen(&app, 160, 40));
    // The history was rebuilt from the frames before the jump.
    let samples = app
        .history
        .samples(&RowKey::Process(1200))
        .expect("postgres");
    assert_eq!(samples.len(), CAPACITY.min(KILL_AT + 1));
    // Back before the kill: it is no longer listed.
    app.update(replay.seek(Seek::Step(-5)));
    assert!(app.kills.is_empty(), "{:?}", app.kills);
    assert!(app.flashing().is_none());
}

#[test]
fn replay_moves_and_says_where_it_stops() {
    let frames = incident();
    assert_eq!(kill_frames(&frames), vec![KILL_AT]);
    let mut replay = Replay::new(Recording::from_frames(frames), "f".to_owned(), 0);
    let fleet = replay.seek(Seek::Step(1));
    assert_eq!(fleet.position.map(|p| p.index), Some(1));
    assert!(fleet.restart.is_none(), "one step on continues the history");
    assert!(replay.seek(Seek::Step(-1)).restart.is_some());
    assert_eq!(
        replay.seek(Seek::PreviousOom).note.as_deref(),
        Some("no OOM kill before this frame")
    );
    assert_eq!(
        replay.seek(Seek::NextOom).position.map(|p| p.index),
        Some(KILL_AT)
    );
    assert_eq!(
        replay.seek(Seek::NextOom).note.as_deref(),
        Some("no OOM kill after this frame")
    );
    assert_eq!(
        replay.seek(Seek::End).position.map(|p| p.index),
        Some(FRAMES - 1)
    );
    assert_eq!(
        replay.seek(Seek::Step(1)).note.as_deref(),
        Some("end of the recording")
    );
    assert_eq!(
        replay.seek(Seek::PreviousOom).position.map(|p| p.index),
        Some(KILL_AT)
    );
    assert_eq!(replay.seek(Seek::Start).position.map(|p| p.index), Some(0));
    // The replay's keys.
    let (mut app, _) = replay_at(0);
    for (code, seek) in [
        (KeyCode::Right, Seek::Step(1)),
        (KeyCode::Left, Seek::Step(-1)),
        (KeyCode::Char('O'), Seek::PreviousOom),
        (KeyCode::Home, Seek::Start),
        (KeyCode::End, Seek::End),
    ] {
        assert_eq!(
            press(&mut app, code),
            Action::Source(SourceCommand::Seek(seek))
        );
    }
    assert_eq!(press(&mut app, KeyCode::Char('p')), Action::Timing);
    assert!(!app.paused, "p plays a replay");
}

#[test]
fn sorting_changes_the_order() {
    let mut app = live_until(20);
    assert_eq!(app.sort, SortKey::Pressure);
    assert_eq!(
        names(&app),
        [
            "redis-server",
            "backup",
            "java",
            "postgres",
            "nginx",
            "sshd"
        ]
    );
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::Rss);
    assert_eq!(
        names(&app),
        [
            "java",
            "postgres",
            "backup",
            "redis-server",
            "nginx",
            "sshd"
        ]
    );
    press(&mut app, KeyCode::Char('i'));
    assert_eq!(
        names(&app),
        [
            "sshd",
            "nginx",
            "redis-server",
            "backup",
            "postgres",
            "java"
        ]
    );
    press(&mut app, KeyCode::Char('i'));
    // shmem: postgres' 64 MiB first.
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::Shmem);
    assert_eq!(names(&app)[..2], ["postgres", "nginx"]);
    // S goes back (to file), s on (to reclaim).
    press(&mut app, KeyCode::Char('S'));
    assert_eq!(app.sort, SortKey::File);
    for _ in 0..4 {
        press(&mut app, KeyCode::Char('s'));
    }
    assert_eq!(app.sort, SortKey::Reclaim);
    assert_eq!(names(&app)[0], "backup");
    // Growth: unknown last, the biggest grower first.
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::Growth);
    assert_eq!(names(&app).first(), Some(&"redis-server"));
    assert_eq!(names(&app).last(), Some(&"nginx"));
    let text = screen(&app, 80, 24);
    assert!(text.contains("GROW/s▼"), "{text}");
    assert!(text.contains("+20K!"), "the leak hint is marked: {text}");
}

#[test]
fn filtering_keeps_the_matching_rows() {
    let mut app = live_until(5);
    assert_eq!(press(&mut app, KeyCode::Char('/')), Action::Redraw);
    type_text(&mut app, "SERVICE");
    // Workload names match, case-insensitively, while typing.
    assert_eq!(
        names(&app),
        ["backup", "redis-server", "postgres", "nginx", "sshd"]
    );
    press(&mut app, KeyCode::Backspace);
    type_text(&mut app, "e");
    press(&mut app, KeyCode::Enter);
    assert!(!app.editing_filter);
    // Keys act again after Enter: `s` sorts, it is not typed.
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.filter, "SERVICe");
    assert_eq!(
        names(&app),
        ["postgres", "backup", "nginx", "redis-server", "sshd"]
    );
    // A cgroup path matches too.
    press(&mut app, KeyCode::Esc);
    assert_eq!(names(&app).len(), 6);
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "kubepods");
    press(&mut app, KeyCode::Enter);
    assert_eq!(names(&app), ["java"]);
    let text = screen(&app, 80, 24);
    assert!(text.contains("filter kubepods"), "{text}");
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "-nothing");
    press(&mut app, KeyCode::Enter);
    assert!(screen(&app, 80, 24).contains("nothing matches the filter"));
}

#[test]
fn views_switch_and_the_selection_follows_its_row() {
    let mut app = live_until(5);
    for (code, view) in [
        (KeyCode::Tab, View::Workloads),
        (KeyCode::Tab, View::Cgroups),
        (KeyCode::Tab, View::Node),
        (KeyCode::Tab, View::Processes),
        (KeyCode::BackTab, View::Node),
        (KeyCode::Char('3'), View::Cgroups),
        (KeyCode::Char('1'), View::Processes),
    ] {
        let needed = app.needs_workloads();
        let action = press(&mut app, code);
        assert_eq!(app.view, view, "{code:?}");
        // The source is told when the workloads summary becomes needed, or no longer is.
        let needs = matches!(view, View::Workloads | View::Node);
        assert_eq!(app.needs_workloads(), needs, "{view:?}");
        let told = if needs == needed {
            Action::Redraw
        } else {
            Action::Source(SourceCommand::Workloads(needs))
        };
        assert_eq!(action, told, "{code:?}");
    }
    // Select java (second by pressure), then let its rank change: it stays selected.
    press(&mut app, KeyCode::Down);
    assert_eq!(
        app.selected_row().map(|r| r.key.clone()),
        Some(RowKey::Process(3000))
    );
    app.update(Fleet {
        nodes: vec![NodeFrame {
            target: "local".to_owned(),
            frame: frame_on("node-a", 30),
            detailed: true,
        }],
        ..Fleet::default()
    });
    assert_eq!(
        app.selected_row().map(|r| r.key.clone()),
        Some(RowKey::Process(3000))
    );
    assert_eq!(app.selected, 2, "java moved down the list, below redis");
    press(&mut app, KeyCode::End);
    assert_eq!(app.selected, app.rows.len() - 1);
}

#[test]
fn pause_interval_and_quit() {
    let mut app = live_until(1);
    assert!(!app.paused);
    assert_eq!(press(&mut app, KeyCode::Char('p')), Action::Timing);
    assert!(app.paused);
    assert!(screen(&app, 80, 24).contains("PAUSED"));
    press(&mut app, KeyCode::Char('p'));
    assert!(!app.paused);
    press(&mut app, KeyCode::Char('+'));
    assert_eq!(app.interval, std::time::Duration::from_secs(2));
    press(&mut app, KeyCode::Char('-'));
    press(&mut app, KeyCode::Char('-'));
    press(&mut app, KeyCode::Char('-'));
    press(&mut app, KeyCode::Char('-'));
    assert_eq!(
        app.interval,
        std::time::Duration::from_millis(250),
        "the shortest"
    );
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Action::Quit
    );
}

#[test]
fn a_failing_source_keeps_the_last_frame_and_says_why() {
    let mut app = live_until(3);
    app.update(Fleet {
        failures: vec![memtrace_api::cluster::NodeFailure {
            target: "http://10.0.0.5:9847".to_owned(),
            node: None,
            error: "connecting: connection refused".to_owned(),
            elapsed_seconds: 0.0,
        }],
        ..Fleet::default()
    });
    assert_eq!(app.rows.len(), 6, "still shown");
    let text = screen(&app, 80, 24);
    assert!(
        text.contains("http://10.0.0.5:9847: connecting: connection refused"),
        "{text}"
    );
}

#[test]
fn the_cluster_merges_workloads_and_drills_into_a_node() {
    let mut app = App::new(SourceKind::Cluster, std::time::Duration::from_secs(1));
    let summary = |node: &str, i: usize| NodeFrame {
        target: format!("{node}:9847"),
        frame: summary_frame(frame_on(node, i).workloads.expect("workloads")),
        detailed: false,
    };
    app.update(Fleet {
        nodes: vec![summary("node-a", 20), summary("node-b", 45)],
        failures: vec![memtrace_api::cluster::NodeFailure {
            target: "node-c:9847".to_owned(),
            node: None,
            error: "timed out after 2.0 s".to_owned(),
            elapsed_seconds: 2.0,
        }],
        ..Fleet::default()
    });
    assert!(app.rows.is_empty(), "no node drilled into: no processes");
    assert!(screen(&app, 80, 24).contains("select a node in view 4"));
    press(&mut app, KeyCode::Char('2'));
    let postgres = app
        .rows
        .iter()
        .find(|r| r.name == "postgresql.service")
        .expect("postgres");
    assert_eq!(postgres.id, "2n 2 inst");
    assert_eq!(postgres.metrics.rss, 2 * 484 * MIB);
    insta::assert_snapshot!("cluster_workloads_120x30", screen(&app, 120, 30));
    press(&mut app, KeyCode::Char('4'));
    assert_eq!(names(&app).len(), 2);
    press(&mut app, KeyCode::Down);
    let target = match &app.selected_row().expect("a node").key {
        RowKey::Node(target) => target.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        Action::Source(SourceCommand::Focus(Some(target.clone())))
    );
    assert_eq!(app.view, View::Processes);
    // The source answers with that node's snapshot.
    let mut detailed = summary("node-b", 46);
    detailed.frame = frame_on("node-b", 46);
    detailed.detailed = true;
    app.update(Fleet {
        nodes: vec![summary("node-a", 21), detailed],
        restart: Some(Vec::new()),
        ..Fleet::default()
    });
    assert_eq!(
        app.rows.len(),
        5,
        "node-b's processes (redis was killed there)"
    );
    assert_eq!(
        press(&mut app, KeyCode::Esc),
        Action::Source(SourceCommand::Focus(None))
    );
}

#[test]
fn tiny_terminals_draw_without_panicking() {
    let mut app = live_until(45);
    press(&mut app, KeyCode::Enter);
    for view in ['1', '2', '3', '4'] {
        press(&mut app, KeyCode::Char(view));
        for (width, height) in [(40, 10), (20, 5), (1, 1), (80, 6)] {
            let text = screen(&app, width, height);
            assert_eq!(text.lines().count(), usize::from(height));
        }
    }
    press(&mut app, KeyCode::Char('?'));
    assert!(screen(&app, 30, 8).contains("memtrace"));
}

/// A one-thread HTTP server answering `routes` (path prefix → body; 404 otherwise), one request
/// per connection. Returns its `host:port`.
fn serve(routes: Vec<(&'static str, String)>) -> String {
    use std::io::{BufRead as _, BufReader, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = routes
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix))
                .map_or((404, "{}"), |(_, body)| (200, body.as_str()));
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test]
async fn a_daemon_gives_its_snapshot_and_workloads_or_a_reason() {
    use super::source::daemon::DaemonSource;
    use crate::web::client::ClientOptions;
    let mut frame = frame_on("node-a", 12);
    let full = frame.workloads.as_mut().expect("workloads");
    full.history.step_seconds = 60;
    // Between two steps of the daemon's history, the summary without it (marked to tell).
    let mut light = full.clone();
    light.omitted_workloads = 7;
    for instance in light.workloads.iter_mut().flat_map(|w| &mut w.instances) {
        instance.history = InstanceHistory::default();
    }
    let snapshot = serde_json::to_string(&frame.snapshot).expect("json");
    let workloads = serde_json::to_string(&full).expect("json");
    let light_json = serde_json::to_string(&light).expect("json");
    let timeout = std::time::Duration::from_secs(5);

    let addr = serve(vec![
        ("/api/v1/snapshot", snapshot.clone()),
        ("/api/v1/workloads?history=0", light_json),
        ("/api/v1/workloads?history=", workloads),
    ]);
    let mut source = DaemonSource::new(&addr, ClientOptions::default(), timeout).expect("client");
    // The processes view needs no workloads summary: it is not fetched…
    let fleet = source.fetch().await;
    assert!(fleet.failures.is_empty(), "{:?}", fleet.failures);
    assert_eq!(fleet.nodes[0].frame.snapshot, frame.snapshot);
    assert!(fleet.nodes[0].frame.workloads.is_none());
    // …until a view needs it.
    assert!(source.want_workloads(true));
    assert!(!source.want_workloads(true), "already fetched");
    let fleet = source.fetch().await;
    assert!(fleet.failures.is_empty(), "{:?}", fleet.failures);
    assert_eq!(fleet.nodes[0].frame, frame);
    assert!(fleet.nodes[0].detailed);
    // The next refresh, within the step, asks for no history and keeps the last one.
    let fleet = source.fetch().await;
    let got = fleet.nodes[0].frame.workloads.as_ref().expect("workloads");
    assert_eq!(got.omitted_workloads, 7, "the summary without history");
    light.workloads = frame
        .workloads
        .as_ref()
        .expect("workloads")
        .workloads
        .clone();
    assert_eq!(got, &light, "its histories carried over");
    assert!(!source.want_workloads(false));
    assert!(source.fetch().await.nodes[0].frame.workloads.is_none());

    // A daemon older than the workloads view: its processes still show.
    let addr = serve(vec![("/api/v1/snapshot", snapshot)]);
    let mut source = DaemonSource::new(&addr, ClientOptions::default(), timeout).expect("client");
    source.want_workloads(true);
    let fleet = source.fetch().await;
    assert_eq!(fleet.nodes[0].frame.snapshot, frame.snapshot);
    assert!(fleet.nodes[0].frame.workloads.is_none());

    // Not a daemon: the URL and what it answered.
    let addr = serve(vec![]);
    let mut source = DaemonSource::new(&addr, ClientOptions::default(), timeout).expect("client");
    let fleet = source.fetch().await;
    assert!(fleet.nodes.is_empty());
    let error = &fleet.failures[0].error;
    assert!(
        error.contains(&format!("http://{addr}/api/v1/snapshot")) && error.contains("404"),
        "{error}"
    );
}
