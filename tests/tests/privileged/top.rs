//! `memtrace top` driven for real in tmux (a fixed-size pane, keys sent with send-keys, the
//! screen read with capture-pane): a known workload with its RSS, sorting and filtering, the
//! detail pane's history, a real OOM kill, and the terminal given back on `q`, Ctrl-C and
//! SIGTERM.
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use memtrace_tests::cgroup::Layout;
use memtrace_tests::{MemoryCgroup, Workload, memtrace_bin, require_root};

use crate::support::serial;

/// The pane's size: wide enough for the cgroup column.
const SIZE: (&str, &str) = ("160", "40");

/// Numbers the tmux sockets of this test process.
static NEXT_SOCKET: AtomicU32 = AtomicU32::new(0);

/// A tmux server of its own (its own socket), killed on drop.
///
/// Each gets a new socket: `kill-server` returns before the server has gone, and a session
/// started on the same socket right after would reach the dying server ("server exited
/// unexpectedly").
struct Tmux {
    socket: String,
    session: &'static str,
}

impl Tmux {
    /// A detached session of [`SIZE`] whose shell runs `memtrace top ARGS`, then says how it
    /// exited and stays: the screen, the cursor and the mode `top` left are the user's.
    fn top(args: &[&str]) -> Self {
        let tmux = Self {
            socket: format!(
                "memtrace-top-test-{}-{}",
                std::process::id(),
                NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
            ),
            session: "top",
        };
        let quoted: Vec<String> = std::iter::once(memtrace_bin().display().to_string())
            .chain(std::iter::once("top".to_owned()))
            .chain(args.iter().map(|a| (*a).to_owned()))
            .map(|a| format!("'{a}'"))
            .collect();
        let script = format!(
            "{}; echo \"top exited: $?\"; exec sleep 600",
            quoted.join(" ")
        );
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            tmux.session,
            "-x",
            SIZE.0,
            "-y",
            SIZE.1,
            "--",
            "sh",
            "-c",
            &script,
        ]);
        tmux
    }

    /// The pid of `memtrace top` (the pane's shell's child).
    fn top_pid(&self) -> i32 {
        let shell = self.display("#{pane_pid}");
        let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .expect("the shell's children");
        children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no child of the pane's shell {shell}"))
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env("TERM", "xterm-256color")
            .output()
            .expect("run tmux (installed by `cargo xtask test`)");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", self.session])
    }

    fn display(&self, format: &str) -> String {
        self.run(&["display-message", "-p", "-t", self.session, format])
            .trim()
            .to_owned()
    }

    /// Keys as tmux names them (`q`, `Enter`, `Escape`, `C-c`, …), one argument each.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Literal text.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", self.session, "-l", text]);
    }

    /// The screen once `ready` holds for it (within `timeout`), else a panic showing it.
    fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not on screen within {timeout:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_started(&self) -> String {
        // The alternate screen is on and the table is drawn.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.display("#{alternate_on}") != "1" {
            assert!(
                Instant::now() < deadline,
                "top did not take the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_for("the header", Duration::from_secs(10), |s| {
            s.contains("memtrace top")
        })
    }

    /// Waits for `top` to exit; its exit status, as the shell saw it.
    fn wait_exit(&self) -> String {
        let screen = self.wait_for("top's exit", Duration::from_secs(15), |s| {
            s.contains("top exited: ")
        });
        screen
            .lines()
            .find_map(|l| l.split("top exited: ").nth(1))
            .map(|status| status.trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The line of the table whose first column is `pid`.
fn row(screen: &str, pid: u32) -> Option<&str> {
    screen
        .lines()
        .find(|line| line.split_whitespace().next() == Some(pid.to_string().as_str()))
}

/// Where `pid`'s row is on the screen (its line number).
fn position(screen: &str, pid: u32) -> usize {
    screen
        .lines()
        .position(|line| line.split_whitespace().next() == Some(pid.to_string().as_str()))
        .unwrap_or_else(|| panic!("no row for {pid}:\n{screen}"))
}

/// `top`'s short sizes back in bytes: `101M` → 101 MiB.
fn parse_size(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.len() - 1);
    let scale = match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => panic!("not a size: {text}"),
    };
    (number
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("not a size: {text}"))
        * scale as f64) as u64
}

/// The kernel's RSS of `pid` (VmRSS).
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib << 10
}

#[test]
fn top_shows_sorts_filters_details_and_an_oom_kill() {
    require_root();
    let _serial = serial();
    // Declared parent first: children are dropped (removed) before it.
    let parent = MemoryCgroup::new("memtrace-top", 1 << 30);
    let big_cgroup = parent.child("top-big");
    let small_cgroup = parent.child("top-small");
    let oom_cgroup = parent.child("top-oom");
    Layout::host().set_limit(&oom_cgroup.dir, 64 << 20);

    // 100 MiB and 20 MiB of anonymous memory, held.
    let pages = |mib: usize| ((mib << 20) / memtrace_tests::page_size()).to_string();
    let mut big = Workload::start_in(&big_cgroup, &["touch-anon", &pages(100)]);
    big.run();
    let mut small = Workload::start_in(&small_cgroup, &["touch-anon", &pages(20)]);
    small.run();
    let (big_pid, small_pid) = (big.pid(), small.pid());

    let tmux = Tmux::top(&["--cgroup-root", &parent.path]);
    tmux.wait_started();
    let screen = tmux.wait_for("both workloads", Duration::from_secs(15), |s| {
        row(s, big_pid).is_some() && row(s, small_pid).is_some()
    });

    // Its RSS, as the kernel counts it.
    let line = row(&screen, big_pid).expect("big's row");
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns[1], "memtrace-worklo", "{line}");
    let header = screen
        .lines()
        .find(|l| l.contains("COMMAND"))
        .expect("table header");
    let rss_column = header
        .split_whitespace()
        .position(|t| t.trim_end_matches(['▼', '▲']) == "RSS")
        .expect("RSS column");
    let shown = parse_size(columns[rss_column]);
    let kernel = vm_rss(big_pid);
    assert!(
        (100 << 20..=kernel + (kernel / 20)).contains(&shown) && shown + kernel / 20 >= kernel,
        "RSS shown {shown} for the kernel's {kernel}:\n{screen}"
    );

    // Sorting by RSS puts the big one first; inverted, last.
    tmux.keys(&["s"]);
    let screen = tmux.wait_for("sorted by RSS", Duration::from_secs(5), |s| {
        s.contains("RSS▼")
    });
    assert!(
        position(&screen, big_pid) < position(&screen, small_pid),
        "{screen}"
    );
    tmux.keys(&["i"]);
    let screen = tmux.wait_for("sorted by RSS, ascending", Duration::from_secs(5), |s| {
        s.contains("RSS▲")
    });
    assert!(
        position(&screen, small_pid) < position(&screen, big_pid),
        "{screen}"
    );
    tmux.keys(&["i"]);

    // Filtering by cgroup keeps the small one only.
    tmux.keys(&["/"]);
    tmux.type_text("top-small");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("filtered", Duration::from_secs(5), |s| {
        s.contains("filter top-small") && row(s, big_pid).is_none()
    });
    assert!(row(&screen, small_pid).is_some(), "{screen}");
    tmux.keys(&["Escape"]);
    tmux.wait_for("filter cleared", Duration::from_secs(5), |s| {
        row(s, big_pid).is_some() && row(s, small_pid).is_some()
    });

    // The detail pane of the big one: its RSS history over several refreshes.
    tmux.keys(&["g", "Enter"]);
    let screen = tmux.wait_for("the detail pane's history", Duration::from_secs(15), |s| {
        s.lines()
            .find_map(|l| l.split("last ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 3)
    });
    assert!(
        screen.contains(&format!("memtrace-worklo {big_pid}")),
        "the pane is the big one's:\n{screen}"
    );
    let anon = screen
        .lines()
        .find(|l| l.contains("RSS anon"))
        .unwrap_or_else(|| panic!("no RSS anon line:\n{screen}"));
    assert!(
        anon.chars().any(|c| ('▁'..='█').contains(&c)),
        "a sparkline: {anon}"
    );
    tmux.keys(&["Escape"]);

    // A real OOM kill: flashed in the status line, listed in the nodes view.
    let hog = Workload::start_in(&oom_cgroup, &["hog"]);
    let hog_pid = hog.pid();
    let mut hog = hog;
    hog.go();
    let status = hog.finish();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the hog was not OOM-killed"
    );
    let screen = tmux.wait_for(
        "the kill in the status line",
        Duration::from_secs(15),
        |s| {
            s.lines()
                .any(|l| l.contains("OOM KILL") && l.contains(&format!("pid {hog_pid}")))
        },
    );
    eprintln!("{screen}");
    tmux.keys(&["4"]);
    tmux.wait_for("the kill listed", Duration::from_secs(5), |s| {
        s.contains("OOM kills (1)")
            && s.lines().any(|l| {
                l.starts_with("OOM ")
                    && l.contains(&format!("pid {hog_pid}"))
                    && l.contains(&oom_cgroup.path)
            })
    });

    // `q`: a clean exit, the user's screen back.
    tmux.keys(&["q"]);
    assert_eq!(tmux.wait_exit(), "0", "{}", tmux.screen());
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "the alternate screen is off"
    );
    drop(big);
    drop(small);
}

#[test]
fn ctrl_c_and_sigterm_give_the_terminal_back() {
    require_root();
    let _serial = serial();
    let scope = MemoryCgroup::new("memtrace-top-exit", 1 << 30);
    for how in ["C-c", "SIGTERM"] {
        let tmux = Tmux::top(&["--cgroup-root", &scope.path]);
        tmux.wait_started();
        if how == "SIGTERM" {
            // SAFETY: signalling `memtrace top`, a process of this test.
            assert_eq!(unsafe { libc::kill(tmux.top_pid(), libc::SIGTERM) }, 0);
        } else {
            tmux.keys(&[how]);
        }
        assert_eq!(tmux.wait_exit(), "0", "{how}: {}", tmux.screen());
        assert_eq!(tmux.display("#{alternate_on}"), "0", "{how}");
        assert_eq!(
            tmux.display("#{cursor_flag}"),
            "1",
            "{how}: the cursor is shown"
        );
    }
}

/// Errors are one line, before the screen is taken, saying what to do.
#[test]
fn unreachable_daemons_and_unreadable_recordings_are_said_plainly() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let output = Command::new(memtrace_bin())
        .args(["top", "--url", &addr.to_string()])
        .output()
        .expect("run memtrace top");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the memtrace daemon at http://{addr}/api/v1/snapshot"
        )) && stderr.contains("--url"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.mtr");
    let output = Command::new(memtrace_bin())
        .args(["top", "--replay", missing.to_str().expect("UTF-8")])
        .output()
        .expect("run memtrace top");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}
