//! `cargo xtask bench`: memtrace's overhead and footprint, measured side by side, written to
//! `BENCHMARKS.md`.
//!
//! Every comparison is interleaved: each round runs every variant once (the order rotates from
//! round to round) and ratios are computed within a round — a traced run against the untraced
//! run of the same round — so background load drifting on a shared machine cancels out as far
//! as it can. Benchmarks report, they never fail: a missed target is `NOT MET` in the report, a
//! benchmark that could not run is `not run: <why>`. Every process started here (memtrace,
//! bpftrace, workloads and their children) is owned by a guard that kills it on the way out,
//! error or Ctrl-C included, and every sysctl changed is restored the same way.
use std::{
    cell::{Cell, RefCell},
    fmt::Write as _,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::ValueEnum;

use super::{Ctx, ensure_apt_packages, ensure_tracefs, is_root, output, say, setup, show};

/// What the "memtrace running" variant runs. `Auto` picks `memtrace daemon` as soon as
/// `memtrace daemon --help` works and falls back to the `memtrace trace` stand-in otherwise;
/// change this one line (or pass `--memtrace`) to force either.
const MEMTRACE_RUNNING: MemtraceMode = MemtraceMode::Auto;
/// `memtrace daemon` as benchmarked; `--listen ADDR` is appended.
const DAEMON_ARGS: &[&str] = &["daemon"];
/// Stand-in for the daemon while it does not exist: the same always-on probes, no HTTP; ready
/// once it prints `tracing with … probes attached` on stderr.
const TRACE_STANDIN_ARGS: &[&str] = &["trace", "--event", "oom", "--no-summary"];
const TRACE_READY_MARKER: &str = "tracing with";
/// bpftrace prints this just before attaching its probes.
const BPFTRACE_READY_MARKER: &str = "Attaching";
const BPFTRACE_FAULTS: &str = "tracepoint:exceptions:page_fault_user { @[pid] = count(); }";
const BPFTRACE_MMAP: &str =
    "tracepoint:syscalls:sys_enter_mmap,tracepoint:syscalls:sys_enter_munmap { @[pid] = count(); }";
/// Empty programs on the tracepoints memtrace's mmap family uses: what attaching there costs
/// before any program does work (the syscall-tracepoint slow path and dispatch).
const FLOOR_MMAP: &str = "tracepoint:syscalls:sys_exit_mmap,tracepoint:syscalls:sys_exit_munmap {}";
/// Pause between a tracer reporting ready and the workload starting (the daemon's first /proc
/// scan, bpftrace finishing its attach).
const SETTLE: Duration = Duration::from_millis(500);
/// How long a tracer may take to become ready (bpftrace compiles with LLVM first).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Fault ring of the live-trace trials (memtrace's default size).
const THROUGHPUT_RING: &str = "16M";
/// A deliberately tiny fault ring, to check the loss accounting when nothing else loses.
const TINY_RING: &str = "4K";
const SAMPLE_LADDER: &[u32] = &[1, 2, 4, 8, 16, 32, 64, 128];
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const PID_MAX_SYSCTL: &str = "/proc/sys/kernel/pid_max";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MemtraceMode {
    /// `memtrace daemon` if `memtrace daemon --help` works, else the `memtrace trace` stand-in.
    Auto,
    /// `memtrace daemon --listen ADDR`, ready when `/readyz` answers 200.
    Daemon,
    /// `memtrace trace --event oom --no-summary`, ready when it reports its probes attached.
    Trace,
}

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Rounds per comparison (each round runs every variant once) and repetitions elsewhere.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// bench-faults iterations in benchmark 1 (128 MiB each: 32,768 faults).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    fault_iters: u32,
    /// bench-mmap iterations in benchmark 2.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    mmap_iters: u32,
    /// bench-faults iterations in each live-trace trial of benchmark 3.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    throughput_iters: u32,
    /// Length of benchmark 4's quiet window, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    quiet_secs: u64,
    /// Sequential requests per endpoint in benchmark 5.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    requests: u32,
    /// Nice value for the workloads of benchmarks 1 and 2 (0: inherit). A negative value keeps
    /// other people's compilers on a shared machine from stretching the timed loops.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true)]
    nice: i32,
    /// Only these benchmarks (comma-separated): 1-7 or faults, mmap, throughput, footprint,
    /// scrape, startup, micro.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    only: Vec<String>,
    /// What the "memtrace running" variant is.
    #[arg(long, value_enum, default_value_t = MEMTRACE_RUNNING)]
    memtrace: MemtraceMode,
    /// Address the benchmarked daemon listens on (not 9847: a daemon already running is left alone).
    #[arg(long, default_value = "127.0.0.1:19847", value_name = "ADDR")]
    listen: SocketAddr,
    /// Take memtrace, bench-faults and bench-mmap from DIR instead of building them.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Where to write the report (relative to the workspace root).
    #[arg(long, default_value = "BENCHMARKS.md", value_name = "FILE")]
    output: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C: set a flag that every wait checks, so guards unwind and clean up.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep in small steps, returning early with an error on Ctrl-C.
fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

// ---------------------------------------------------------------------------------------------
// Guards: processes and sysctls.

enum Stop {
    Signal(libc::c_int),
    CloseStdin,
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless stopped before.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stop: Stop,
    log: Option<PathBuf>,
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: signalling a child we have not reaped yet (its pid cannot be reused).
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

impl Proc {
    /// Spawn with stdout+stderr to a log file (or stdout piped when `pipe_stdout`).
    fn spawn(
        env: &Env,
        name: &str,
        mut cmd: Command,
        stop: Stop,
        pipe_stdout: bool,
    ) -> Result<(Self, Option<ChildStdout>)> {
        let log = env.log_path(name);
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stderr(file.try_clone()?);
        if pipe_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(file);
        }
        cmd.stdin(match stop {
            Stop::CloseStdin => Stdio::piped(),
            Stop::Signal(_) => Stdio::null(),
        });
        let shown = show(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = child.stdout.take();
        let stdin = child.stdin.take();
        Ok((
            Self {
                name: name.to_owned(),
                child,
                stdin,
                stop,
                log: Some(log),
            },
            stdout,
        ))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The last lines of its log, for error messages.
    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        match &self.log {
            Some(p) => format!("{tail} (log: {})", p.display()),
            None => tail,
        }
    }

    /// Ask it to stop (signal or closing stdin); SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) -> Result<()> {
        if !self.alive() {
            return Ok(());
        }
        match self.stop {
            Stop::Signal(signal) => send_signal(self.pid(), signal),
            Stop::CloseStdin => drop(self.stdin.take()),
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        send_signal(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
        bail!("{} did not stop within {grace:?}; killed it", self.name)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            send_signal(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// A sysctl set for a while; the old value is written back when dropped.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Result<Self> {
        let old = fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_owned();
        fs::write(path, value).with_context(|| format!("writing {value} to {path}"))?;
        say(format!(
            "set {path} = {value} (was {old}; restored afterwards)"
        ));
        Ok(Self { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        match fs::write(self.path, &self.old) {
            Ok(()) => say(format!("restored {} = {}", self.path, self.old)),
            Err(e) => say(format!(
                "warning: could not restore {} to {}: {e}",
                self.path, self.old
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run's environment.

struct Bins {
    memtrace: PathBuf,
    faults: PathBuf,
    mmap: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Running {
    Daemon,
    Trace,
}

struct Env<'a> {
    ctx: &'a Ctx,
    args: &'a BenchArgs,
    bins: Bins,
    running: Running,
    logs: PathBuf,
    seq: Cell<u32>,
    bpftrace: Option<PathBuf>,
    /// Commands run by the current benchmark, in first-use order (for the report).
    commands: RefCell<Vec<String>>,
    /// memtrace's CPU (% of one core) while benchmark 1's workload ran, for benchmark 4.
    cpu_during_faults: RefCell<Vec<f64>>,
}

impl Env<'_> {
    fn log_path(&self, name: &str) -> PathBuf {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        self.logs.join(format!("{n:03}-{name}.log"))
    }

    /// A path as the report shows it: relative to the workspace root.
    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.ctx.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    /// Record a command line for the report (paths relative to the workspace root).
    fn note(&self, cmd: &Command) {
        let mut s = self.rel(Path::new(cmd.get_program()));
        for a in cmd.get_args() {
            let a = a.to_string_lossy();
            s.push(' ');
            if a.contains(' ') || a.contains('{') {
                s.push('\'');
                s.push_str(&a);
                s.push('\'');
            } else {
                s.push_str(&self.rel(Path::new(a.as_ref())));
            }
        }
        let mut commands = self.commands.borrow_mut();
        if !commands.contains(&s) {
            commands.push(s);
        }
    }

    fn take_commands(&self) -> Vec<String> {
        std::mem::take(&mut *self.commands.borrow_mut())
    }

    fn memtrace_args(&self) -> Vec<String> {
        match self.running {
            Running::Daemon => DAEMON_ARGS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(["--listen".to_owned(), self.args.listen.to_string()])
                .collect(),
            Running::Trace => TRACE_STANDIN_ARGS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn running_label(&self) -> &'static str {
        match self.running {
            Running::Daemon => "memtrace daemon",
            Running::Trace => "memtrace (trace stand-in)",
        }
    }

    /// The workload command, niced when asked.
    fn workload(&self, bin: &Path, args: &[String], nice: bool) -> Command {
        let mut cmd = if nice && self.args.nice != 0 {
            let mut c = Command::new("nice");
            c.args(["-n", &self.args.nice.to_string()]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(args).env("PATH", &self.ctx.path);
        cmd
    }

    /// Start memtrace and wait until it is ready; returns the guard and the time to ready.
    fn start_memtrace(&self) -> Result<(Proc, Duration)> {
        self.start_memtrace_with(&[])
    }

    /// [`Env::start_memtrace`] with extra arguments.
    fn start_memtrace_with(&self, extra: &[&str]) -> Result<(Proc, Duration)> {
        if self.running == Running::Daemon
            && TcpStream::connect_timeout(&self.args.listen, Duration::from_millis(200)).is_ok()
        {
            bail!(
                "something already listens on {} (another daemon?): choose another --listen",
                self.args.listen
            );
        }
        let mut cmd = Command::new(&self.bins.memtrace);
        cmd.args(self.memtrace_args())
            .args(extra)
            .env("PATH", &self.ctx.path);
        self.note(&cmd);
        let started = Instant::now();
        let (mut p, _) = Proc::spawn(self, "memtrace", cmd, Stop::Signal(libc::SIGTERM), false)?;
        loop {
            let ready = match self.running {
                Running::Daemon => http_get(self.args.listen, "/readyz", Duration::from_secs(2))
                    .is_ok_and(|r| r.status == 200),
                Running::Trace => p.log_text().contains(TRACE_READY_MARKER),
            };
            if ready {
                return Ok((p, started.elapsed()));
            }
            if !p.alive() {
                bail!("memtrace exited before it was ready: {}", p.log_tail());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "memtrace not ready after {READY_TIMEOUT:?}: {}",
                    p.log_tail()
                );
            }
            check_interrupt()?;
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn start_bpftrace(&self, program: &str) -> Result<Proc> {
        let Some(bpftrace) = &self.bpftrace else {
            bail!("bpftrace is not installed (apt-get install bpftrace)");
        };
        let mut cmd = Command::new(bpftrace);
        cmd.args(["-e", program]).env("PATH", &self.ctx.path);
        self.note(&cmd);
        let started = Instant::now();
        let (mut p, _) = Proc::spawn(self, "bpftrace", cmd, Stop::Signal(libc::SIGINT), false)?;
        loop {
            if p.log_text().contains(BPFTRACE_READY_MARKER) {
                return Ok(p);
            }
            if !p.alive() {
                bail!("bpftrace exited before attaching: {}", p.log_tail());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("bpftrace not attached after {READY_TIMEOUT:?}");
            }
            check_interrupt()?;
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run a workload to completion; its stdout's last line must be its JSON result.
    fn run_workload(&self, mut cmd: Command) -> Result<WorkloadRun> {
        self.note(&cmd);
        let shown = show(&cmd);
        let started = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let wall = started.elapsed();
        check_interrupt()?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("`{shown}` printed no result line"))?
            .to_owned();
        Ok(WorkloadRun { line, wall })
    }
}

struct WorkloadRun {
    line: String,
    /// Spawn to exit, as seen from here.
    wall: Duration,
}

impl WorkloadRun {
    fn num(&self, key: &str) -> Result<f64> {
        json_num(&self.line, key).with_context(|| format!("no {key} in `{}`", self.line))
    }
}

// ---------------------------------------------------------------------------------------------
// Small parsers and statistics.

/// The number after `"key":` in a flat JSON line (enough for the lines our tools print).
fn json_num(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = line[start..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[derive(Clone, Copy, Debug)]
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn summarize(xs: &[f64]) -> Option<Summary> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values.
fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// `median (min–max)` with `decimals`.
fn fmt_summary(s: Option<Summary>, decimals: usize, suffix: &str) -> String {
    match s {
        Some(s) => format!(
            "{:.d$}{suffix} ({:.d$}–{:.d$})",
            s.median,
            s.min,
            s.max,
            d = decimals
        ),
        None => "—".to_owned(),
    }
}

/// `+1.2% (−0.4…+2.8%)`.
fn fmt_pct(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:+.1}% ({:+.1}…{:+.1}%)", s.median, s.min, s.max),
        None => "—".to_owned(),
    }
}

fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M/s", per_sec / 1e6)
    } else {
        format!("{:.0} k/s", per_sec / 1e3)
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn clk_tck() -> f64 {
    // SAFETY: no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU time of a process in nanoseconds: the sum of its threads' run time from
/// `/proc/<pid>/task/*/schedstat` (nanosecond precision, unlike utime/stime's clock ticks);
/// falls back to utime + stime when schedstat is unavailable.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0u64;
    let mut found = false;
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Ok(text) = fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            {
                total += ns;
                found = true;
            }
        }
    }
    if found {
        return Ok(total);
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `after` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(((utime + stime) as f64 / clk_tck() * 1e9) as u64)
}

/// A `Vm…:` line of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Processes (thread-group leaders) on the system.
fn process_count() -> usize {
    fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count()
    })
}

/// Kernel scheduling entities (threads) in use, from /proc/loadavg.
fn thread_count() -> usize {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client over std's TcpStream.

struct HttpResponse {
    status: u16,
    body: Vec<u8>,
}

fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::with_capacity(64 << 10);
    s.read_to_end(&mut buf)?;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status code")?;
    buf.drain(..head_end + 4);
    Ok(HttpResponse { status, body: buf })
}

// ---------------------------------------------------------------------------------------------
// In-kernel program cost: run_time_ns / run_cnt of memtrace's programs (kernel.bpf_stats_enabled).

#[derive(Clone, Debug)]
struct ProgStat {
    id: u32,
    prog_type: u32,
    run_time_ns: u64,
    run_cnt: u64,
}

/// BPF programs held open by `pid`, from the fdinfo of its fds (deduplicated by id).
fn prog_stats(pid: u32) -> Result<Vec<ProgStat>> {
    let mut stats: Vec<ProgStat> = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(prog_type), Some(id)) = (field("prog_type"), field("prog_id")) else {
            continue;
        };
        if stats.iter().any(|s| s.id == id as u32) {
            continue;
        }
        stats.push(ProgStat {
            id: id as u32,
            prog_type: prog_type as u32,
            run_time_ns: field("run_time_ns").unwrap_or(0),
            run_cnt: field("run_cnt").unwrap_or(0),
        });
    }
    Ok(stats)
}

/// The program's name (the kernel keeps 15 characters), via the bpf syscall.
fn prog_name(id: u32) -> Option<String> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // union bpf_attr for GET_FD_BY_ID: { u32 prog_id; u32 next_id; u32 open_flags; }.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    // SAFETY: attr is a zeroed bpf_attr of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return None;
    }
    // struct bpf_prog_info: name[16] at byte offset 64.
    let mut info = [0u64; 64];
    let mut attr = [0u64; 16];
    // { u32 bpf_fd; u32 info_len; u64 info; } (little endian).
    attr[0] = (fd as u64 & 0xffff_ffff) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    // SAFETY: closing the fd the kernel just gave us.
    unsafe { libc::close(fd as libc::c_int) };
    if rc < 0 {
        return None;
    }
    let bytes: Vec<u8> = info[8..10].iter().flat_map(|w| w.to_le_bytes()).collect();
    let name: Vec<u8> = bytes.into_iter().take_while(|&b| b != 0).collect();
    Some(String::from_utf8_lossy(&name).into_owned())
}

fn prog_type_name(t: u32) -> String {
    match t {
        2 => "kprobe".to_owned(),
        5 => "tracepoint".to_owned(),
        7 => "perf_event".to_owned(),
        17 => "raw_tracepoint".to_owned(),
        26 => "tracing".to_owned(),
        other => format!("type {other}"),
    }
}

struct ProgCost {
    name: String,
    prog_type: String,
    runs: u64,
    ns_per_run: f64,
}

/// Start memtrace, enable bpf_stats, run the workload once, read each program's cost delta.
fn program_costs(env: &Env, workload: Command, extra: &[&str]) -> Result<Vec<ProgCost>> {
    let (mut memtrace, _) = env.start_memtrace_with(extra)?;
    pause(SETTLE)?;
    let pid = memtrace.pid();
    let (before, after) = {
        let _stats = Sysctl::set(BPF_STATS_SYSCTL, "1")?;
        let before = prog_stats(pid)?;
        env.run_workload(workload)?;
        (before, prog_stats(pid)?)
    };
    // Names while memtrace still holds the programs (ids die with it).
    let mut costs: Vec<ProgCost> = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            let runs = a.run_cnt - b.map_or(0, |b| b.run_cnt);
            let ns = a.run_time_ns - b.map_or(0, |b| b.run_time_ns);
            ProgCost {
                name: prog_name(a.id).unwrap_or_else(|| format!("prog {}", a.id)),
                prog_type: prog_type_name(a.prog_type),
                runs,
                ns_per_run: if runs > 0 {
                    ns as f64 / runs as f64
                } else {
                    0.0
                },
            }
        })
        .collect();
    memtrace.stop(STOP_GRACE)?;
    costs.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.name.cmp(&b.name)));
    Ok(costs)
}

// ---------------------------------------------------------------------------------------------
// Report pieces.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Met,
    NotMet,
    NotRun,
}

impl Status {
    fn of(ok: bool) -> Self {
        if ok { Self::Met } else { Self::NotMet }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "MET",
            Self::NotMet => "**NOT MET**",
            Self::NotRun => "not run",
        }
    }
}

struct Verdict {
    figure: String,
    result: String,
    target: String,
    status: Status,
}

impl Verdict {
    fn new(figure: &str, result: String, target: &str, status: Status) -> Self {
        Self {
            figure: figure.to_owned(),
            result,
            target: target.to_owned(),
            status,
        }
    }
}

struct Section {
    number: u8,
    title: &'static str,
    body: String,
    verdicts: Vec<Verdict>,
}

macro_rules! md {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

fn commands_block(body: &mut String, commands: &[String]) {
    if commands.is_empty() {
        return;
    }
    md!(body, "Commands (as run):\n\n```sh");
    for c in commands {
        md!(body, "{c}");
    }
    md!(body, "```\n");
}

// ---------------------------------------------------------------------------------------------
// Benchmarks 1 and 2: overhead on a workload, untraced | memtrace | bpftrace (| floor),
// interleaved.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Untraced,
    Memtrace,
    Bpftrace,
    /// Empty programs on memtrace's hooks ([`OverheadSpec::floor`]).
    Floor,
    /// The daemon with [`OverheadSpec::memtrace_extra`] (its opt-in hooks).
    MemtraceExtra,
}

const VARIANTS: [Variant; 5] = [
    Variant::Untraced,
    Variant::Memtrace,
    Variant::Bpftrace,
    Variant::Floor,
    Variant::MemtraceExtra,
];

#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
}

struct OverheadSpec {
    bin: PathBuf,
    args: Vec<String>,
    /// JSON keys of the workload's result: wall and CPU time per operation.
    wall_key: &'static str,
    cpu_key: &'static str,
    unit: &'static str,
    bpftrace: &'static str,
    /// A bpftrace program with empty actions on the hooks memtrace runs for this workload, to
    /// measure the cost of the attach points themselves in the same run.
    floor: Option<&'static str>,
    /// Daemon flags of an opt-in variant measured beside the default one (not the target's).
    memtrace_extra: Option<&'static [&'static str]>,
    /// Target for memtrace's pairwise overhead, in %.
    target_pct: f64,
    /// Target for memtrace's overhead as a fraction of bpftrace's.
    target_frac: f64,
    target_frac_text: &'static str,
    measure_cpu: bool,
}

fn run_variant(env: &Env, spec: &OverheadSpec, v: Variant) -> Result<(Sample, Option<f64>)> {
    let workload = || env.workload(&spec.bin, &spec.args, true);
    let sample = |run: &WorkloadRun| -> Result<Sample> {
        Ok(Sample {
            wall: run.num(spec.wall_key)?,
            cpu: run.num(spec.cpu_key)?,
        })
    };
    match v {
        Variant::Untraced => Ok((sample(&env.run_workload(workload())?)?, None)),
        Variant::Memtrace | Variant::MemtraceExtra => {
            let extra = match v {
                Variant::MemtraceExtra => spec
                    .memtrace_extra
                    .context("no opt-in variant for this benchmark")?,
                _ => &[],
            };
            let (mut memtrace, _) = env.start_memtrace_with(extra)?;
            pause(SETTLE)?;
            let t0 = cpu_ns(memtrace.pid())?;
            let run = env.run_workload(workload())?;
            let used_ns = cpu_ns(memtrace.pid())?.saturating_sub(t0);
            if !memtrace.alive() {
                bail!("memtrace died during the run: {}", memtrace.log_tail());
            }
            memtrace.stop(STOP_GRACE)?;
            let cpu_pct = used_ns as f64 / 1e9 / run.wall.as_secs_f64() * 100.0;
            Ok((sample(&run)?, (v == Variant::Memtrace).then_some(cpu_pct)))
        }
        Variant::Bpftrace | Variant::Floor => {
            let program = match v {
                Variant::Floor => spec.floor.context("no floor program for this benchmark")?,
                _ => spec.bpftrace,
            };
            let mut bpftrace = env.start_bpftrace(program)?;
            pause(SETTLE)?;
            let run = env.run_workload(workload())?;
            if !bpftrace.alive() {
                bail!("bpftrace died during the run: {}", bpftrace.log_tail());
            }
            bpftrace.stop(STOP_GRACE)?;
            Ok((sample(&run)?, None))
        }
    }
}

fn overhead_bench(env: &Env, spec: &OverheadSpec, section: &mut Section) -> Result<()> {
    let runs = env.args.runs as usize;
    let variants: Vec<Variant> = VARIANTS
        .into_iter()
        .filter(|&v| match v {
            Variant::Floor => spec.floor.is_some(),
            Variant::MemtraceExtra => spec.memtrace_extra.is_some(),
            _ => true,
        })
        .collect();
    let mut samples: [Vec<Option<Sample>>; 5] = Default::default();
    let mut failed: [Option<String>; 5] = Default::default();
    let mut memtrace_cpu = Vec::new();
    // Tracers of other people running during a round's untraced run skew that round.
    let mut foreign: Vec<Vec<String>> = vec![Vec::new(); runs];

    say("warm-up run (discarded)");
    env.run_workload(env.workload(&spec.bin, &spec.args, true))?;
    for round in 0..runs {
        let order: Vec<Variant> = (0..variants.len())
            .map(|i| variants[(i + round) % variants.len()])
            .collect();
        for v in order {
            let i = v as usize;
            if failed[i].is_some() {
                samples[i].push(None);
                continue;
            }
            check_interrupt()?;
            if v == Variant::Untraced {
                foreign[round] = other_tracers();
            }
            match run_variant(env, spec, v) {
                Ok((s, cpu)) => {
                    say(format!(
                        "round {}/{runs} {v:?}: {:.1} {} (cpu {:.1})",
                        round + 1,
                        s.wall,
                        spec.unit,
                        s.cpu
                    ));
                    samples[i].push(Some(s));
                    memtrace_cpu.extend(cpu);
                }
                Err(e) => {
                    check_interrupt()?;
                    say(format!("{v:?} failed, skipped from now on: {e:#}"));
                    failed[i] = Some(format!("{e:#}"));
                    samples[i].push(None);
                }
            }
        }
    }
    if spec.measure_cpu {
        env.cpu_during_faults.borrow_mut().extend(&memtrace_cpu);
    }

    let column = |v: Variant, f: fn(&Sample) -> f64| -> Vec<f64> {
        samples[v as usize].iter().flatten().map(f).collect()
    };
    // Pairwise: each traced run against the untraced run of the same round.
    let pairwise = |v: Variant, f: fn(&Sample) -> f64| -> Vec<f64> {
        (0..runs)
            .filter_map(|r| {
                // (A variant this benchmark does not run has no samples at all.)
                let u = (*samples[Variant::Untraced as usize].get(r)?)?;
                let t = (*samples[v as usize].get(r)?)?;
                Some((f(&t) / f(&u) - 1.0) * 100.0)
            })
            .collect()
    };
    let wall = |s: &Sample| s.wall;
    let cpu = |s: &Sample| s.cpu;
    let labels = [
        "untraced".to_owned(),
        env.running_label().to_owned(),
        "bpftrace".to_owned(),
        "floor: empty programs on memtrace's tracepoints".to_owned(),
        format!(
            "{} {}",
            env.running_label(),
            spec.memtrace_extra.unwrap_or_default().join(" ")
        ),
    ];

    let body = &mut section.body;
    md!(
        body,
        "| Variant | {u} (wall), median (min–max) | overhead vs untraced, pairwise | CPU {u} | CPU overhead, pairwise | runs |",
        u = spec.unit
    );
    md!(body, "|---|---|---|---|---|---|");
    for &v in &variants {
        let i = v as usize;
        if let Some(e) = &failed[i]
            && samples[i].iter().all(Option::is_none)
        {
            md!(body, "| {} | not run: {e} | | | | 0 |", labels[i]);
            continue;
        }
        let (oh, cpu_oh) = if v == Variant::Untraced {
            ("—".to_owned(), "—".to_owned())
        } else {
            (
                fmt_pct(summarize(&pairwise(v, wall))),
                fmt_pct(summarize(&pairwise(v, cpu))),
            )
        };
        md!(
            body,
            "| {} | {} | {oh} | {} | {cpu_oh} | {} |",
            labels[i],
            fmt_summary(summarize(&column(v, wall)), 1, ""),
            fmt_summary(summarize(&column(v, cpu)), 1, ""),
            column(v, wall).len()
        );
    }
    md!(body);

    // memtrace's overhead as a fraction of bpftrace's, round by round.
    let fractions: Vec<f64> = (0..runs)
        .filter_map(|r| {
            let u = samples[0][r]?.wall;
            let m = samples[1][r]?.wall;
            let b = samples[2][r]?.wall;
            (b > u).then(|| (m - u) / (b - u))
        })
        .collect();
    let frac = summarize(&fractions);
    if let Some(f) = frac {
        md!(
            body,
            "memtrace's overhead as a fraction of bpftrace's (wall, pairwise per round): **{:.2}** ({:.2}…{:.2}, {} rounds).\n",
            f.median,
            f.min,
            f.max,
            f.n
        );
    }
    if let (Some(floor), Some(ours)) = (
        summarize(&pairwise(Variant::Floor, wall)),
        summarize(&pairwise(Variant::Memtrace, wall)),
    ) {
        md!(
            body,
            "Attach floor: empty programs on the tracepoints of the per-call hooks cost **{:+.1}%** in this run (median pairwise). Any program there pays it: attaching a syscall tracepoint sends every syscall through the kernel's slow path and the tracepoint's dispatch. {}\n",
            floor.median,
            match summarize(&pairwise(Variant::MemtraceExtra, wall)) {
                Some(extra) => format!(
                    "With `{}` (those hooks, opt-in) memtrace costs {:+.1}%: its programs add {:+.1} points to the floor. By default it attaches none of them ({:+.1}%).",
                    spec.memtrace_extra.unwrap_or_default().join(" "),
                    extra.median,
                    extra.median - floor.median,
                    ours.median
                ),
                None => format!(
                    "memtrace's own programs add {:+.1} points on top.",
                    ours.median - floor.median
                ),
            }
        );
    }
    if let Some(c) = summarize(&memtrace_cpu) {
        md!(
            body,
            "{}'s own CPU while the workload ran (CPU time of its threads / wall, % of one core): {}.\n",
            labels[1],
            fmt_summary(Some(c), 1, "%")
        );
    }
    if let Some(u) = summarize(&column(Variant::Untraced, wall))
        && u.max / u.min - 1.0 > 0.10
    {
        md!(
            body,
            "⚠ Noisy: the untraced runs alone spread by {:.0}% (min to max); trust the pairwise ratios over absolute times, and prefer a longer run.\n",
            (u.max / u.min - 1.0) * 100.0
        );
    }

    // Raw runs, for the record.
    md!(
        body,
        "<details><summary>Per-round {} (wall / CPU); order rotates each round</summary>\n",
        spec.unit
    );
    md!(
        body,
        "| Round | {} |",
        variants
            .iter()
            .map(|&v| labels[v as usize].as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    md!(body, "|---|{}", "---|".repeat(variants.len()));
    for (r, others) in foreign.iter().enumerate() {
        let cell = |v: usize| {
            samples[v]
                .get(r)
                .copied()
                .flatten()
                .map_or("—".to_owned(), |s| {
                    format!("{:.1} / {:.1}", s.wall, s.cpu)
                })
        };
        let mark = if others.is_empty() { "" } else { " †" };
        md!(
            body,
            "| {}{mark} | {} |",
            r + 1,
            variants
                .iter()
                .map(|&v| cell(v as usize))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let mut tainted: Vec<String> = foreign.iter().flatten().cloned().collect();
    tainted.sort();
    tainted.dedup();
    if !tainted.is_empty() {
        md!(
            body,
            "\n† Someone else's tracer was running during that round's untraced run ({}): its baseline is traced too.",
            tainted.join(", ")
        );
    }
    md!(body, "\n</details>\n");

    // Verdicts.
    let oh = summarize(&pairwise(Variant::Memtrace, wall));
    section.verdicts.push(match oh {
        Some(s) => Verdict::new(
            "memtrace overhead (median pairwise, wall)",
            format!("{:+.1}%", s.median),
            &format!("≤ {}%", spec.target_pct),
            Status::of(s.median <= spec.target_pct),
        ),
        None => Verdict::new(
            "memtrace overhead",
            format!(
                "not run: {}",
                failed[1].clone().unwrap_or_else(|| "no runs".into())
            ),
            &format!("≤ {}%", spec.target_pct),
            Status::NotRun,
        ),
    });
    section.verdicts.push(match frac {
        Some(f) => Verdict::new(
            "memtrace overhead ÷ bpftrace overhead",
            format!("{:.2}", f.median),
            spec.target_frac_text,
            Status::of(f.median <= spec.target_frac),
        ),
        None => Verdict::new(
            "memtrace overhead ÷ bpftrace overhead",
            format!(
                "not run: {}",
                failed[2]
                    .clone()
                    .or(failed[1].clone())
                    .unwrap_or_else(|| "bpftrace showed no overhead".into())
            ),
            spec.target_frac_text,
            Status::NotRun,
        ),
    });

    // In-kernel cost per program (of the opt-in variant where there is one: its programs are
    // the default's and more).
    if failed[1].is_none() {
        let (extra, label) = match spec.memtrace_extra {
            Some(extra) => (extra, &labels[Variant::MemtraceExtra as usize]),
            None => (&[][..], &labels[Variant::Memtrace as usize]),
        };
        match program_costs(env, env.workload(&spec.bin, &spec.args, true), extra) {
            Ok(costs) => {
                md!(
                    body,
                    "In-kernel cost of the programs of `{}` during one extra run with `kernel.bpf_stats_enabled=1` (restored afterwards; invocations are system-wide):\n",
                    label
                );
                md!(
                    body,
                    "| Program (the kernel keeps 15 characters) | Type | Invocations | ns / invocation |"
                );
                md!(body, "|---|---|---|---|");
                let mut idle = Vec::new();
                for c in &costs {
                    if c.runs == 0 {
                        idle.push(c.name.clone());
                    } else {
                        md!(
                            body,
                            "| {} | {} | {} | {:.1} |",
                            c.name,
                            c.prog_type,
                            c.runs,
                            c.ns_per_run
                        );
                    }
                }
                if !idle.is_empty() {
                    md!(body, "\nNot invoked during the run: {}.", idle.join(", "));
                }
                md!(body);
            }
            Err(e) => md!(body, "In-kernel program cost: not measured: {e:#}\n"),
        }
    }
    Ok(())
}

fn bench_faults(env: &Env) -> Result<Section> {
    let mut section = Section {
        number: 1,
        title: "Fault-path overhead",
        body: String::new(),
        verdicts: Vec::new(),
    };
    let spec = OverheadSpec {
        bin: env.bins.faults.clone(),
        args: vec![
            "--iters".into(),
            env.args.fault_iters.to_string(),
            "--mib".into(),
            "128".into(),
        ],
        wall_key: "ns_per_fault",
        cpu_key: "cpu_ns_per_fault",
        unit: "ns/fault",
        bpftrace: BPFTRACE_FAULTS,
        floor: None,
        memtrace_extra: None,
        target_pct: 2.0,
        target_frac: 1.0 / 3.0,
        target_frac_text: "≤ 0.33",
        measure_cpu: true,
    };
    md!(
        section.body,
        "`bench-faults` maps 128 MiB, writes one byte per page (one minor fault each), unmaps; {} times ({} faults per run). Only the touching loops are timed; ns/fault = time / faults counted by the kernel (getrusage). Wall time is the figure; CPU time (the thread's CPU clock, immune to preemption by other processes) is shown beside it.\n",
        env.args.fault_iters,
        env.args.fault_iters as u64 * (128 << 20) / 4096
    );
    overhead_bench(env, &spec, &mut section)?;
    Ok(section)
}

fn bench_mmap(env: &Env) -> Result<Section> {
    let mut section = Section {
        number: 2,
        title: "mmap churn",
        body: String::new(),
        verdicts: Vec::new(),
    };
    let spec = OverheadSpec {
        bin: env.bins.mmap.clone(),
        args: vec!["--iters".into(), env.args.mmap_iters.to_string()],
        wall_key: "ns_per_iter",
        cpu_key: "cpu_ns_per_iter",
        unit: "ns/iteration",
        bpftrace: BPFTRACE_MMAP,
        floor: Some(FLOOR_MMAP),
        memtrace_extra: (env.running == Running::Daemon).then_some(&["--mmap-calls"][..]),
        target_pct: 5.0,
        target_frac: 1.0,
        target_frac_text: "< 1 (below bpftrace)",
        measure_cpu: false,
    };
    md!(
        section.body,
        "`bench-mmap` does mmap 64 KiB + write its first page + munmap, {} times; ns/iteration = loop time / iterations.\n",
        env.args.mmap_iters
    );
    overhead_bench(env, &spec, &mut section)?;
    Ok(section)
}

// ---------------------------------------------------------------------------------------------
// Benchmark 3: live trace throughput.

/// Counts the lines memtrace writes without keeping them (the tail is kept for the summary).
struct LineCounter {
    lines: Arc<AtomicU64>,
    /// Nanoseconds since `base` of the first and the latest read with data.
    first: Arc<AtomicU64>,
    last: Arc<AtomicU64>,
    handle: JoinHandle<Vec<u8>>,
}

impl LineCounter {
    fn spawn(mut stdout: ChildStdout) -> Self {
        let lines = Arc::new(AtomicU64::new(0));
        let first = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let (l, f, t) = (lines.clone(), first.clone(), last.clone());
        let handle = thread::spawn(move || {
            const KEEP: usize = 64 << 10;
            let mut buf = vec![0u8; 1 << 20];
            let mut tail: Vec<u8> = Vec::with_capacity(2 * KEEP);
            loop {
                let n = match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let now = base.elapsed().as_nanos() as u64;
                let _ = f.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                t.store(now, Ordering::Relaxed);
                let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                l.fetch_add(newlines as u64, Ordering::Relaxed);
                if n >= KEEP {
                    tail.clear();
                    tail.extend_from_slice(&buf[n - KEEP..n]);
                } else {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * KEEP {
                        tail.drain(..tail.len() - KEEP);
                    }
                }
            }
            tail
        });
        Self {
            lines,
            first,
            last,
            handle,
        }
    }
}

struct Trial {
    sample: u32,
    ring: &'static str,
    /// Faults memtrace counted in-kernel for the workload's pid.
    counted: u64,
    /// Fault events written by memtrace.
    fault_lines: u64,
    ring_full: u64,
    queue_drops: u64,
    decode_errors: u64,
    /// The workload's touching-loop time.
    loop_secs: f64,
    /// First to last fault line received.
    delivery_secs: f64,
}

impl Trial {
    fn lost(&self) -> u64 {
        self.ring_full + self.queue_drops + self.decode_errors
    }

    /// Events per second of the workload's faulting time that reached memtrace's output.
    fn rate(&self) -> f64 {
        self.fault_lines as f64 / self.loop_secs
    }

    fn produced(&self) -> f64 {
        self.counted as f64 / f64::from(self.sample)
    }
}

fn trace_trial(env: &Env, sample: u32, ring: &'static str) -> Result<Trial> {
    let mut cmd = Command::new(&env.bins.memtrace);
    cmd.args(["trace", "--faults", "--sample"])
        .arg(sample.to_string())
        .args(["--output", "json", "-e", "fault", "--comm", "bench-faults"])
        .args(["--fault-ring-size", ring, "--top", "5"])
        .env("PATH", &env.ctx.path);
    env.note(&cmd);
    let (mut memtrace, stdout) = Proc::spawn(env, "trace", cmd, Stop::Signal(libc::SIGTERM), true)?;
    let counter = LineCounter::spawn(stdout.context("no stdout pipe")?);
    let started = Instant::now();
    while !memtrace.log_text().contains(TRACE_READY_MARKER) {
        if !memtrace.alive() {
            bail!("memtrace trace exited early: {}", memtrace.log_tail());
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("memtrace trace not ready: {}", memtrace.log_tail());
        }
        check_interrupt()?;
        thread::sleep(Duration::from_millis(5));
    }
    pause(SETTLE)?;
    let run = env.run_workload(env.workload(
        &env.bins.faults,
        &[
            "--iters".into(),
            env.args.throughput_iters.to_string(),
            "--mib".into(),
            "128".into(),
            // Read faults (the zero page: no page to allocate) come ~2× faster than write faults,
            // so one core produces fault events faster than memtrace has to keep up with.
            "--read".into(),
        ],
        false,
    ))?;
    // Let memtrace drain its ring: wait until no line arrived for 500 ms.
    let mut seen = counter.lines.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    let drain_start = Instant::now();
    while still_since.elapsed() < Duration::from_millis(500)
        && drain_start.elapsed() < Duration::from_secs(60)
    {
        pause(Duration::from_millis(50))?;
        let now = counter.lines.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            still_since = Instant::now();
        }
    }
    let first = counter.first.load(Ordering::Relaxed);
    let last = counter.last.load(Ordering::Relaxed);
    memtrace.stop(STOP_GRACE)?;
    let tail = counter
        .handle
        .join()
        .map_err(|_| anyhow!("line counter panicked"))?;
    let total_lines = counter.lines.load(Ordering::Relaxed);
    let tail = String::from_utf8_lossy(&tail);
    let losses = tail
        .lines()
        .rev()
        .find(|l| l.contains("\"kind\":\"losses\""))
        .with_context(|| format!("no losses line from memtrace: {}", memtrace.log_tail()))?;
    let summaries: Vec<&str> = tail
        .lines()
        .filter(|l| l.contains("\"kind\":\"summary\""))
        .collect();
    let counted = summaries
        .iter()
        .filter(|l| l.contains("\"comm\":\"bench-faults\""))
        .map(|l| {
            json_num(l, "faults_user").unwrap_or(0.0) + json_num(l, "faults_kernel").unwrap_or(0.0)
        })
        .sum::<f64>() as u64;
    let by_kind = losses
        .find("\"lost_kernel_ring_full_by_kind\":{")
        .map_or("", |i| &losses[i..]);
    let by_kind = &by_kind[..by_kind.find('}').unwrap_or(by_kind.len())];
    let num = |s: &str, k: &str| json_num(s, k).unwrap_or(0.0) as u64;
    Ok(Trial {
        sample,
        ring,
        counted,
        fault_lines: total_lines.saturating_sub(summaries.len() as u64 + 1),
        ring_full: num(by_kind, "fault"),
        queue_drops: num(losses, "lost_userspace_queue"),
        decode_errors: num(losses, "lost_decode"),
        loop_secs: run.num("wall_ns")? / 1e9,
        delivery_secs: last.saturating_sub(first) as f64 / 1e9,
    })
}

fn bench_throughput(env: &Env) -> Result<Section> {
    let mut section = Section {
        number: 3,
        title: "Live trace throughput",
        body: String::new(),
        verdicts: Vec::new(),
    };
    let mut trials: Vec<Trial> = Vec::new();
    let mut zero_loss: Option<u32> = None;
    for &sample in SAMPLE_LADDER {
        let t = trace_trial(env, sample, THROUGHPUT_RING)?;
        say(format!(
            "--sample {sample}: {} events in {:.2}s loop ({}), lost {}",
            t.fault_lines,
            t.loop_secs,
            fmt_rate(t.rate()),
            t.lost()
        ));
        let ok = t.lost() == 0;
        trials.push(t);
        if ok {
            zero_loss = Some(sample);
            break;
        }
    }
    // Repeat the zero-loss level for a median.
    if let Some(sample) = zero_loss {
        for _ in 1..env.args.runs {
            let t = trace_trial(env, sample, THROUGHPUT_RING)?;
            say(format!(
                "--sample {sample} again: {} events, {}, lost {}",
                t.fault_lines,
                fmt_rate(t.rate()),
                t.lost()
            ));
            trials.push(t);
        }
    }
    // The accounting check needs a run with losses: force one with a tiny ring if none lost.
    if trials.iter().all(|t| t.lost() == 0) {
        let t = trace_trial(env, 1, TINY_RING)?;
        trials.push(t);
    }

    let body = &mut section.body;
    md!(
        body,
        "`memtrace trace --faults --sample N -o json -e fault --comm bench-faults` (fault ring {THROUGHPUT_RING}, memtrace's default) while `bench-faults --iters {} --read` runs ({} faults; read faults, which map the zero page, are the fastest a single core can produce: ~650 ns each untraced here against ~1,300 ns for write faults); stdout goes to a pipe that counts lines and keeps only the tail (the JSON summary and `losses` line). `--sample` is doubled from 1 until a run loses nothing, then that level is repeated. Rate = fault events written ÷ the workload's faulting time (touching loops); consumer rate = events ÷ time from first to last event received. produced = faults memtrace counted in-kernel for the workload's pid ÷ N.\n",
        env.args.throughput_iters,
        env.args.throughput_iters as u64 * (128 << 20) / 4096
    );
    md!(
        body,
        "| --sample | ring | events written | rate | consumer rate | workload ns/fault | lost (ring full / queue / undecodable) | produced (counted ÷ N) | written + lost − produced |"
    );
    md!(body, "|---|---|---|---|---|---|---|---|---|");
    for t in &trials {
        let diff = (t.fault_lines + t.lost()) as f64 - t.produced();
        md!(
            body,
            "| {} | {} | {} | {} | {} | {:.0} | {} ({} / {} / {}) | {:.0} | {:+.0} ({:+.3}%) |",
            t.sample,
            t.ring,
            t.fault_lines,
            fmt_rate(t.rate()),
            if t.delivery_secs > 0.0 {
                fmt_rate(t.fault_lines as f64 / t.delivery_secs)
            } else {
                "—".into()
            },
            t.loop_secs * 1e9 / (t.counted.max(1) as f64),
            t.lost(),
            t.ring_full,
            t.queue_drops,
            t.decode_errors,
            t.produced(),
            diff,
            diff / t.produced().max(1.0) * 100.0
        );
    }
    if trials.iter().any(|t| t.ring == TINY_RING) {
        md!(
            body,
            "\nThe {TINY_RING} row uses a deliberately tiny fault ring to force losses and check that every produced event is either written or counted as lost."
        );
    }
    md!(body);

    let best: Vec<f64> = trials
        .iter()
        .filter(|t| Some(t.sample) == zero_loss && t.ring == THROUGHPUT_RING && t.lost() == 0)
        .map(Trial::rate)
        .collect();
    let lossy_repeats = trials
        .iter()
        .filter(|t| Some(t.sample) == zero_loss && t.ring == THROUGHPUT_RING && t.lost() > 0)
        .count();
    if lossy_repeats > 0 {
        md!(
            body,
            "⚠ {lossy_repeats} repeat(s) at --sample {} lost events after all: that level is at the edge.\n",
            zero_loss.unwrap_or(0)
        );
    }
    let (ring_lost, queue_lost): (u64, u64) = trials
        .iter()
        .filter(|t| t.ring == THROUGHPUT_RING)
        .fold((0, 0), |(r, q), t| (r + t.ring_full, q + t.queue_drops));
    if queue_lost > ring_lost {
        md!(
            body,
            "Most losses ({queue_lost} vs {ring_lost} in the kernel ring) are in memtrace's userspace queue: the consumer (decode → filter → render → write) is the bottleneck, not the kernel ring.\n"
        );
    }
    if zero_loss == Some(1) {
        md!(
            body,
            "Nothing was lost even streaming every fault, so the rate above is bounded by how fast the workload faults while every fault is streamed (compare its ns/fault with benchmark 1's), not by memtrace's consumer.\n"
        );
    }
    match summarize(&best) {
        Some(s) => section.verdicts.push(Verdict::new(
            "highest zero-loss rate",
            format!(
                "{} (--sample {}, median of {})",
                fmt_rate(s.median),
                zero_loss.unwrap_or(0),
                s.n
            ),
            "≥ 1 M events/s",
            Status::of(s.median >= 1e6),
        )),
        None => section.verdicts.push(Verdict::new(
            "highest zero-loss rate",
            format!(
                "no zero-loss level up to --sample {}",
                SAMPLE_LADDER.last().copied().unwrap_or(0)
            ),
            "≥ 1 M events/s",
            Status::NotMet,
        )),
    }
    // Accounting: every lossy run must satisfy produced = written + lost (sampling counters are
    // per CPU, and faults before the workload's exec are counted but not sampled: allow 0.1%).
    let lossy: Vec<&Trial> = trials.iter().filter(|t| t.lost() > 0).collect();
    if !lossy.is_empty() {
        let worst = lossy
            .iter()
            .map(|t| ((t.fault_lines + t.lost()) as f64 - t.produced()).abs() / t.produced())
            .fold(0.0, f64::max);
        section.verdicts.push(Verdict::new(
            "loss accounting (produced = written + lost)",
            format!(
                "worst gap {:.3}% over {} lossy run(s)",
                worst * 100.0,
                lossy.len()
            ),
            "within 0.1%",
            Status::of(worst <= 0.001),
        ));
    }
    Ok(section)
}

// ---------------------------------------------------------------------------------------------
// Benchmarks 4 and 5: daemon footprint with N live processes, scrape latency at 10,000.

/// `bench-mmap --idle N`: N children that each dirtied a few pages, held until dropped.
fn spawn_population(env: &Env, n: usize) -> Result<Proc> {
    let mut cmd = Command::new(&env.bins.mmap);
    cmd.args(["--idle", &n.to_string(), "--pages", "4"])
        .env("PATH", &env.ctx.path);
    env.note(&cmd);
    let (mut p, stdout) = Proc::spawn(env, "population", cmd, Stop::CloseStdin, true)?;
    let mut line = String::new();
    BufReader::new(stdout.context("no stdout pipe")?).read_line(&mut line)?;
    check_interrupt()?;
    let ready: usize = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("bench-mmap --idle: `{}`: {}", line.trim(), p.log_tail()))?;
    if ready < n {
        bail!(
            "only {ready} of {n} idle processes started: {}",
            p.log_tail()
        );
    }
    if !p.alive() {
        bail!("bench-mmap --idle exited: {}", p.log_tail());
    }
    Ok(p)
}

/// Raise pid_max if N more processes would not fit comfortably (restored on drop).
fn pid_room(n: usize) -> Result<Option<Sysctl>> {
    let pid_max: usize = read_trimmed(PID_MAX_SYSCTL).parse().unwrap_or(32768);
    let needed = thread_count() + n + 4096;
    if needed <= pid_max {
        return Ok(None);
    }
    Sysctl::set(PID_MAX_SYSCTL, &needed.min(4 << 20).to_string()).map(Some)
}

struct Footprint {
    n: usize,
    processes: usize,
    /// `memtrace_tracked_processes` from /metrics.
    tracked: Option<f64>,
    rss_kib: u64,
    hwm_kib: u64,
    quiet_cpu_pct: f64,
}

struct ScrapeResult {
    path: &'static str,
    latencies_ms: Vec<f64>,
    bytes: usize,
    non_ok: usize,
}

fn scrape(env: &Env, path: &'static str) -> Result<ScrapeResult> {
    let mut latencies_ms = Vec::with_capacity(env.args.requests as usize);
    let mut bytes = 0;
    let mut non_ok = 0;
    for _ in 0..env.args.requests {
        check_interrupt()?;
        let t = Instant::now();
        let r = http_get(env.args.listen, path, Duration::from_secs(30))?;
        latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = r.body.len();
        if r.status != 200 {
            non_ok += 1;
        }
    }
    Ok(ScrapeResult {
        path,
        latencies_ms,
        bytes,
        non_ok,
    })
}

/// The daemon's `memtrace_tracked_processes` gauge.
fn tracked_processes(env: &Env) -> Option<f64> {
    let r = http_get(env.args.listen, "/metrics", Duration::from_secs(10)).ok()?;
    String::from_utf8_lossy(&r.body).lines().find_map(|l| {
        l.strip_prefix("memtrace_tracked_processes ")?
            .trim()
            .parse()
            .ok()
    })
}

/// Daemon up, N idle processes spawned after it (so it sees each one fault), settle, quiet window.
fn footprint(
    env: &Env,
    n: usize,
    quiet: bool,
    then_scrape: bool,
) -> Result<(Option<Footprint>, Vec<ScrapeResult>)> {
    let _pid_max = pid_room(n)?;
    let (mut daemon, _) = env.start_memtrace()?;
    let population = spawn_population(env, n)?;
    say(format!(
        "{n} idle processes up; settling 5 s before measuring"
    ));
    pause(Duration::from_secs(5))?;
    let pid = daemon.pid();
    let mut result = None;
    if quiet {
        let t0 = cpu_ns(pid)?;
        let started = Instant::now();
        pause(Duration::from_secs(env.args.quiet_secs))?;
        let used_ns = cpu_ns(pid)?.saturating_sub(t0);
        result = Some(Footprint {
            n,
            processes: process_count(),
            tracked: tracked_processes(env),
            rss_kib: status_kib(pid, "VmRSS")?,
            hwm_kib: status_kib(pid, "VmHWM")?,
            quiet_cpu_pct: used_ns as f64 / 1e9 / started.elapsed().as_secs_f64() * 100.0,
        });
    }
    let mut scrapes = Vec::new();
    if then_scrape {
        for path in ["/metrics", "/api/v1/snapshot"] {
            say(format!("{} × GET {path}", env.args.requests));
            scrapes.push(scrape(env, path)?);
        }
    }
    if !daemon.alive() {
        bail!("the daemon died: {}", daemon.log_tail());
    }
    drop(population);
    daemon.stop(STOP_GRACE)?;
    Ok((result, scrapes))
}

fn daemon_missing(number: u8, title: &'static str, figures: &[(&str, &str)]) -> Section {
    let mut s = Section {
        number,
        title,
        body: "Not run: daemon missing (`memtrace daemon --help` does not work in this build, or `--memtrace trace` was given).\n".to_owned(),
        verdicts: Vec::new(),
    };
    for (figure, target) in figures {
        s.verdicts.push(Verdict::new(
            figure,
            "not run: daemon missing".into(),
            target,
            Status::NotRun,
        ));
    }
    s
}

fn bench_footprint_and_scrape(env: &Env, do_footprint: bool, do_scrape: bool) -> Vec<Section> {
    const FOOT: &[(&str, &str)] = &[
        ("RSS @1k processes", "≤ 32 MiB"),
        ("RSS @10k processes", "≤ 64 MiB"),
        ("CPU quiet", "≤ 2%"),
        ("CPU during benchmark 1", "≤ 5%"),
    ];
    const SCRAPE: &[(&str, &str)] = &[
        ("/metrics p99 @10k", "≤ 50 ms"),
        ("/api/v1/snapshot p99 @10k", "≤ 200 ms"),
    ];
    let mut sections = Vec::new();
    if env.running != Running::Daemon {
        if do_footprint {
            sections.push(daemon_missing(4, "Daemon footprint", FOOT));
        }
        if do_scrape {
            sections.push(daemon_missing(5, "Scrape latency", SCRAPE));
        }
        return sections;
    }
    let mut rows = Vec::new();
    let mut scrapes = Vec::new();
    let mut error = None;
    let ambient = process_count();
    if do_footprint {
        match footprint(env, 1_000, true, false) {
            Ok((row, _)) => rows.extend(row),
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
    if error.is_none() {
        match footprint(env, 10_000, do_footprint, do_scrape) {
            Ok((row, s)) => {
                rows.extend(row);
                scrapes = s;
            }
            Err(e) => error = Some(format!("{e:#}")),
        }
    }
    let commands = env.take_commands();

    if do_footprint {
        let mut s = Section {
            number: 4,
            title: "Daemon footprint",
            body: String::new(),
            verdicts: Vec::new(),
        };
        md!(
            s.body,
            "The daemon is started, then `bench-mmap --idle N` forks N children that each dirty 4 pages and sleep (so the daemon sees every one of them fault); after 5 s of settling, CPU is the daemon's CPU time (sum of its threads' schedstat run time) over a {} s quiet window (% of one core) and RSS is VmRSS (VmHWM = peak). {ambient} processes were running before the benchmark.\n",
            env.args.quiet_secs
        );
        commands_block(&mut s.body, &commands);
        md!(
            s.body,
            "| Idle processes spawned | processes on the system | tracked by the daemon | VmRSS | VmHWM | CPU, quiet |"
        );
        md!(s.body, "|---|---|---|---|---|---|");
        for r in &rows {
            md!(
                s.body,
                "| {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.2}% |",
                r.n,
                r.processes,
                r.tracked.map_or("?".to_owned(), |t| format!("{t:.0}")),
                r.rss_kib as f64 / 1024.0,
                r.hwm_kib as f64 / 1024.0,
                r.quiet_cpu_pct
            );
        }
        let during = summarize(&env.cpu_during_faults.borrow());
        md!(
            s.body,
            "\nCPU during benchmark 1 (while bench-faults ran, % of one core): {}.\n",
            match during {
                Some(d) => fmt_summary(Some(d), 2, "%"),
                None => "not measured (benchmark 1 not run or memtrace failed there)".into(),
            }
        );
        if let Some(e) = &error {
            md!(s.body, "Error: {e}\n");
        }
        let rss =
            |n: usize, limit: f64, figure: &str, target: &str| match rows.iter().find(|r| r.n == n)
            {
                Some(r) => Verdict::new(
                    figure,
                    format!("{:.1} MiB", r.rss_kib as f64 / 1024.0),
                    target,
                    Status::of(r.rss_kib as f64 / 1024.0 <= limit),
                ),
                None => Verdict::new(
                    figure,
                    format!("not run: {}", error.clone().unwrap_or_default()),
                    target,
                    Status::NotRun,
                ),
            };
        s.verdicts.push(rss(1_000, 32.0, FOOT[0].0, FOOT[0].1));
        s.verdicts.push(rss(10_000, 64.0, FOOT[1].0, FOOT[1].1));
        let quiet = rows
            .iter()
            .map(|r| r.quiet_cpu_pct)
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        s.verdicts.push(match quiet {
            Some(q) => Verdict::new(
                FOOT[2].0,
                format!("{q:.2}% (worst of 1k/10k)"),
                FOOT[2].1,
                Status::of(q <= 2.0),
            ),
            None => Verdict::new(FOOT[2].0, "not run".into(), FOOT[2].1, Status::NotRun),
        });
        s.verdicts.push(match during {
            Some(d) => Verdict::new(
                FOOT[3].0,
                format!("{:.2}% (median)", d.median),
                FOOT[3].1,
                Status::of(d.median <= 5.0),
            ),
            None => Verdict::new(FOOT[3].0, "not measured".into(), FOOT[3].1, Status::NotRun),
        });
        sections.push(s);
    }
    if do_scrape {
        let mut s = Section {
            number: 5,
            title: "Scrape latency",
            body: String::new(),
            verdicts: Vec::new(),
        };
        md!(
            s.body,
            "{} sequential GETs per endpoint (new connection each, `Connection: close`, std TcpStream client) with 10,000 idle processes alive.\n",
            env.args.requests
        );
        if !do_footprint {
            commands_block(&mut s.body, &commands);
        }
        md!(
            s.body,
            "| Endpoint | p50 | p99 | max | response size | non-200 |"
        );
        md!(s.body, "|---|---|---|---|---|---|");
        for r in &scrapes {
            md!(
                s.body,
                "| `{}` | {:.2} ms | {:.2} ms | {:.2} ms | {:.0} KiB | {} |",
                r.path,
                percentile(&r.latencies_ms, 50.0),
                percentile(&r.latencies_ms, 99.0),
                percentile(&r.latencies_ms, 100.0),
                r.bytes as f64 / 1024.0,
                r.non_ok
            );
        }
        if let Some(e) = &error {
            md!(s.body, "\nError: {e}\n");
        }
        for (i, (figure, target)) in SCRAPE.iter().enumerate() {
            let limit = if i == 0 { 50.0 } else { 200.0 };
            s.verdicts.push(match scrapes.get(i) {
                Some(r) => {
                    let p99 = percentile(&r.latencies_ms, 99.0);
                    Verdict::new(
                        figure,
                        format!("{p99:.2} ms"),
                        target,
                        Status::of(p99 <= limit && r.non_ok == 0),
                    )
                }
                None => Verdict::new(
                    figure,
                    format!("not run: {}", error.clone().unwrap_or_default()),
                    target,
                    Status::NotRun,
                ),
            });
        }
        md!(s.body);
        sections.push(s);
    }
    sections
}

// ---------------------------------------------------------------------------------------------
// Benchmark 6: start-up.

fn bench_startup(env: &Env) -> Result<Section> {
    let mut section = Section {
        number: 6,
        title: "Start-up",
        body: String::new(),
        verdicts: Vec::new(),
    };
    let mut times = Vec::new();
    for i in 0..env.args.runs {
        let (mut p, t) = env.start_memtrace()?;
        say(format!(
            "start-up {}: {:.0} ms",
            i + 1,
            t.as_secs_f64() * 1e3
        ));
        times.push(t.as_secs_f64() * 1e3);
        p.stop(STOP_GRACE)?;
        pause(Duration::from_millis(200))?;
    }
    let s = summarize(&times);
    let what = match env.running {
        Running::Daemon => "process start → `/readyz` 200 (polled every 5 ms)",
        Running::Trace => {
            "daemon missing: `memtrace trace` start → `tracing with … probes attached` on stderr (polled every 5 ms)"
        }
    };
    md!(
        section.body,
        "{what}; {} runs, {} processes on the system.\n",
        env.args.runs,
        process_count()
    );
    md!(section.body, "| Start → ready | median (min–max) |");
    md!(section.body, "|---|---|");
    md!(
        section.body,
        "| {} | {} |\n",
        env.running_label(),
        fmt_summary(s, 0, " ms")
    );
    if let Some(s) = s {
        section.verdicts.push(Verdict::new(
            "start → ready (median)",
            format!("{:.0} ms", s.median),
            "≤ 1 s",
            if env.running == Running::Daemon {
                Status::of(s.median <= 1000.0)
            } else {
                Status::NotRun
            },
        ));
    }
    Ok(section)
}

// ---------------------------------------------------------------------------------------------
// Benchmark 7: criterion micro-benchmarks.

fn bench_micro(env: &Env) -> Result<Section> {
    let mut section = Section {
        number: 7,
        title: "Hot-path micro-benchmarks",
        body: String::new(),
        verdicts: Vec::new(),
    };
    let mut cmd = env.ctx.cmd("cargo");
    cmd.args([
        "bench", "-p", "memtrace", "--bench", "hot_path", "--", "--quick",
    ])
    .env_remove("CARGO_TARGET_DIR");
    env.note(&cmd);
    say("running the criterion micro-benchmarks (cargo bench … --quick)");
    let out = output(cmd)?;
    let results = parse_criterion(&out);
    if results.is_empty() {
        bail!("no results in criterion's output:\n{out}");
    }
    md!(
        section.body,
        "criterion (`--quick`), in-process, no kernel involved; low – estimate – high is criterion's confidence interval. `decode/*`: `Event::decode` of one ring-buffer record; `render/*`: one event rendered as a JSON line / a text line into a reused buffer; `model/observe_event_exit`: `Model::observe_event` for an exit record; `model/observe_processes_10k_tick`: one sampling tick of 10,000 live processes (divide by 10,000 for the per-process cost).\n"
    );
    md!(
        section.body,
        "| Benchmark | time per call (low – estimate – high) |"
    );
    md!(section.body, "|---|---|");
    for (name, low, est, high) in &results {
        md!(section.body, "| `{name}` | {low} – **{est}** – {high} |");
    }
    md!(section.body);
    Ok(section)
}

/// `name  time:   [1.23 ns 1.25 ns 1.27 ns]` (the name may be on the line before).
fn parse_criterion(out: &str) -> Vec<(String, String, String, String)> {
    let mut results = Vec::new();
    let mut previous = "";
    for line in out.lines() {
        if let Some(i) = line.find("time:") {
            let name = match line[..i].trim() {
                "" => previous.trim(),
                n => n,
            };
            let inside = line[i..]
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(v, _)| v);
            if let Some(values) = inside {
                let parts: Vec<&str> = values.split_whitespace().collect();
                if parts.len() == 6 {
                    results.push((
                        name.to_owned(),
                        format!("{} {}", parts[0], parts[1]),
                        format!("{} {}", parts[2], parts[3]),
                        format!("{} {}", parts[4], parts[5]),
                    ));
                }
            }
        }
        if !line.trim().is_empty() && !line.starts_with(' ') {
            previous = line;
        }
    }
    results
}

// ---------------------------------------------------------------------------------------------
// Driver.

const NAMES: [&str; 7] = [
    "faults",
    "mmap",
    "throughput",
    "footprint",
    "scrape",
    "startup",
    "micro",
];

fn selection(only: &[String]) -> Result<[bool; 7]> {
    if only.is_empty() {
        return Ok([true; 7]);
    }
    let mut sel = [false; 7];
    for item in only {
        let item = item.trim();
        let idx = match item.parse::<usize>() {
            Ok(n) if (1..=7).contains(&n) => n - 1,
            _ => NAMES.iter().position(|n| *n == item).with_context(|| {
                format!("unknown benchmark `{item}` (1-7 or {})", NAMES.join(", "))
            })?,
        };
        sel[idx] = true;
    }
    Ok(sel)
}

fn locate_bins(ctx: &Ctx, args: &BenchArgs) -> Result<Bins> {
    let dir = match &args.bin_dir {
        Some(d) => ctx.root.join(d),
        None => {
            let mut c = ctx.cmd("cargo");
            c.args([
                "build",
                "--release",
                "-p",
                "memtrace",
                "-p",
                "memtrace-tests",
                "--bins",
            ])
            .env_remove("CARGO_TARGET_DIR");
            say(
                "building release binaries: cargo build --release -p memtrace -p memtrace-tests --bins",
            );
            super::status(c)?;
            ctx.root.join("target/release")
        }
    };
    let bins = Bins {
        memtrace: dir.join("memtrace"),
        faults: dir.join("bench-faults"),
        mmap: dir.join("bench-mmap"),
    };
    for b in [&bins.memtrace, &bins.faults, &bins.mmap] {
        if !b.is_file() {
            bail!("{} is missing", b.display());
        }
    }
    Ok(bins)
}

fn resolve_running(mode: MemtraceMode, memtrace: &Path) -> Running {
    let daemon_works = || {
        Command::new(memtrace)
            .args(["daemon", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    match mode {
        MemtraceMode::Daemon => Running::Daemon,
        MemtraceMode::Trace => Running::Trace,
        MemtraceMode::Auto if daemon_works() => Running::Daemon,
        MemtraceMode::Auto => Running::Trace,
    }
}

fn capture(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

fn other_tracers() -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let comm = read_trimmed(&format!("/proc/{pid}/comm"));
            // A zombie has released its programs.
            let zombie = read_trimmed(&format!("/proc/{pid}/stat"))
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            if (comm == "memtrace" || comm == "bpftrace") && !zombie {
                found.push(format!("{comm} ({pid})"));
            }
        }
    }
    found
}

/// Entry point of `cargo xtask bench`.
pub fn run(ctx: &mut Ctx, args: BenchArgs) -> Result<()> {
    if !is_root() {
        bail!("cargo xtask bench loads eBPF programs and changes sysctls: run it as root");
    }
    let selected = selection(&args.only)?;
    install_signal_handlers();
    let started = Instant::now();
    setup(ctx)?;
    ensure_tracefs();
    if let Err(e) = ensure_apt_packages(ctx, &[("bpftrace", "bpftrace")]) {
        say(format!(
            "warning: bpftrace unavailable, its variants will be `not run`: {e:#}"
        ));
    }
    let bins = locate_bins(ctx, &args)?;
    let running = resolve_running(args.memtrace, &bins.memtrace);
    let logs = ctx.root.join("target/bench");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let env = Env {
        ctx,
        args: &args,
        bins,
        running,
        logs,
        seq: Cell::new(0),
        bpftrace: ctx.which("bpftrace"),
        commands: RefCell::new(Vec::new()),
        cpu_during_faults: RefCell::new(Vec::new()),
    };
    say(format!(
        "\"memtrace running\" = `{} {}`",
        env.rel(&env.bins.memtrace),
        env.memtrace_args().join(" ")
    ));

    let date = capture("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let load_start = read_trimmed("/proc/loadavg");
    let tracers = other_tracers();

    let mut sections: Vec<Section> = Vec::new();
    type Bench = fn(&Env) -> Result<Section>;
    let plan: [(usize, u8, &'static str, Bench); 3] = [
        (0, 1, "Fault-path overhead", bench_faults),
        (1, 2, "mmap churn", bench_mmap),
        (2, 3, "Live trace throughput", bench_throughput),
    ];
    for (idx, n, title, f) in plan {
        if selected[idx] {
            sections.push(run_one(&env, n, title, f));
        }
        check_interrupt()?;
    }
    if selected[3] || selected[4] {
        say("=== benchmarks 4/5: daemon footprint and scrape latency");
        sections.extend(bench_footprint_and_scrape(&env, selected[3], selected[4]));
    }
    check_interrupt()?;
    if selected[5] {
        sections.push(run_one(&env, 6, "Start-up", bench_startup));
    }
    check_interrupt()?;
    if selected[6] {
        sections.push(run_one(&env, 7, "Hot-path micro-benchmarks", bench_micro));
    }
    check_interrupt()?;

    let report = render_report(&env, &sections, &date, &load_start, &tracers, started);
    let path = env.ctx.root.join(&args.output);
    fs::write(&path, report).with_context(|| format!("writing {}", path.display()))?;
    say(format!(
        "wrote {} ({} benchmarks in {})",
        path.display(),
        sections.len(),
        fmt_duration(started.elapsed())
    ));
    Ok(())
}

/// Run one benchmark; an error becomes a "not run" section. The commands it ran head the section.
fn run_one(env: &Env, n: u8, title: &'static str, f: fn(&Env) -> Result<Section>) -> Section {
    say(format!("=== benchmark {n}: {title}"));
    let result = f(env);
    let commands = env.take_commands();
    let mut section = result.unwrap_or_else(|e| {
        say(format!("benchmark {n} failed: {e:#}"));
        Section {
            number: n,
            title,
            body: format!("Not run: {e:#}\n"),
            verdicts: vec![Verdict::new(
                "—",
                format!("not run: {e:#}"),
                "—",
                Status::NotRun,
            )],
        }
    });
    let mut body = String::new();
    commands_block(&mut body, &commands);
    body.push_str(&section.body);
    section.body = body;
    section
}

fn render_report(
    env: &Env,
    sections: &[Section],
    date: &str,
    load_start: &str,
    tracers: &[String],
    started: Instant,
) -> String {
    let root = &env.ctx.root;
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty()
        || !git(&["ls-files", "--others", "--exclude-standard"]).is_empty();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("?".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let mut r = String::new();
    md!(r, "# memtrace benchmarks\n");
    md!(
        r,
        "Generated by `cargo xtask bench` (xtask/src/bench.rs); do not edit by hand, re-run it. Benchmarks report, they do not fail CI. On a shared machine absolute times are noisy: **the ratio against the baseline of the same run is the figure.**\n"
    );
    md!(r, "## Summary\n");
    md!(r, "| # | Benchmark | Figure | Result | Target | Status |");
    md!(r, "|---|---|---|---|---|---|");
    for s in sections {
        for v in &s.verdicts {
            md!(
                r,
                "| {} | {} | {} | {} | {} | {} |",
                s.number,
                s.title,
                v.figure,
                v.result.replace('|', "\\|").replace('\n', " "),
                v.target,
                v.status.label()
            );
        }
    }
    md!(r);
    md!(r, "## Machine and run\n");
    md!(r, "| | |\n|---|---|");
    md!(r, "| Date | {date} |");
    md!(
        r,
        "| Kernel | {} |",
        read_trimmed("/proc/sys/kernel/osrelease")
    );
    md!(r, "| CPU | {cpu} × {cores} cores |");
    md!(r, "| Memory | {mem_gib:.1} GiB |");
    md!(
        r,
        "| memtrace commit | {commit}{} |",
        if dirty {
            " + uncommitted changes in the work tree"
        } else {
            ""
        }
    );
    md!(r, "| rustc | {} |", capture("rustc", &["--version"]));
    md!(
        r,
        "| bpftrace | {} |",
        env.bpftrace
            .as_ref()
            .map_or("not installed".to_owned(), |b| {
                capture(&b.to_string_lossy(), &["--version"])
            })
    );
    md!(
        r,
        "| \"memtrace running\" variant | `{} {}` |",
        env.rel(&env.bins.memtrace),
        env.memtrace_args().join(" ")
    );
    md!(
        r,
        "| Load average (1/5/15 min, running/total) at start → end | {load_start} → {} |",
        read_trimmed("/proc/loadavg")
    );
    md!(
        r,
        "| Other memtrace/bpftrace processes at start | {} |",
        if tracers.is_empty() {
            "none".to_owned()
        } else {
            tracers.join(", ")
        }
    );
    md!(
        r,
        "| Options | --runs {} --fault-iters {} --mmap-iters {} --throughput-iters {} --quiet-secs {} --requests {} --nice {} |",
        env.args.runs,
        env.args.fault_iters,
        env.args.mmap_iters,
        env.args.throughput_iters,
        env.args.quiet_secs,
        env.args.requests,
        env.args.nice
    );
    md!(
        r,
        "| Total run time | {} |\n",
        fmt_duration(started.elapsed())
    );
    md!(r, "## How to reproduce\n");
    md!(
        r,
        "```sh\n# as root (loads eBPF programs, toggles kernel.bpf_stats_enabled): builds\n# `cargo build --release -p memtrace -p memtrace-tests --bins`, installs bpftrace with apt if missing\nsudo -E cargo xtask bench                      # default: --runs 5, a few minutes on 2 cores\nsudo -E cargo xtask bench --runs 20 --fault-iters 50 --throughput-iters 100 --quiet-secs 60   # longer, tighter\nsudo -E cargo xtask bench --only faults,mmap   # a subset (1-7 or faults, mmap, throughput, footprint, scrape, startup, micro)\nsudo -E cargo xtask bench --help\n```\n"
    );
    md!(
        r,
        "Method: in benchmarks 1 and 2 each round runs the workload untraced, with memtrace running and with bpftrace running, in an order that rotates every round; a tracer is started before the workload, waited for (memtrace: `/readyz` 200, or its probes-attached message for the trace stand-in; bpftrace: `Attaching`), given {} ms to settle, and stopped after it. Overheads are computed pair by pair (traced run ÷ untraced run of the same round − 1), then the median and min…max of those ratios are reported. The workloads run at nice {} so that other people's builds on a shared machine stretch the timed loops less; tracers run at normal priority. Logs of every process started are in `target/bench/`.\n",
        SETTLE.as_millis(),
        env.args.nice
    );
    for s in sections {
        md!(r, "## {}. {}\n", s.number, s.title);
        r.push_str(&s.body);
        if !s.body.ends_with("\n\n") {
            r.push('\n');
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers() {
        let line = r#"{"faults":655360,"wall_ns":123,"ns_per_fault":412.25,"x":-3}"#;
        assert_eq!(json_num(line, "faults"), Some(655_360.0));
        assert_eq!(json_num(line, "ns_per_fault"), Some(412.25));
        assert_eq!(json_num(line, "x"), Some(-3.0));
        assert_eq!(json_num(line, "missing"), None);
    }

    #[test]
    fn statistics() {
        let s = summarize(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 10.0, 4));
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 100.0);
        assert_eq!(percentile(&xs, 99.0), 198.0);
        assert_eq!(percentile(&xs, 100.0), 200.0);
    }

    #[test]
    fn criterion_output() {
        let out = "decode/mmap             time:   [3.1 ns 3.2 ns 3.3 ns]\nrender/json/a_very_long_benchmark_name\n                        time:   [101.5 ns 102.0 ns 103.9 ns]\n";
        let r = parse_criterion(out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "decode/mmap");
        assert_eq!(r[0].2, "3.2 ns");
        assert_eq!(r[1].0, "render/json/a_very_long_benchmark_name");
        assert_eq!(r[1].3, "103.9 ns");
    }

    #[test]
    fn benchmark_selection() {
        assert_eq!(selection(&[]).unwrap(), [true; 7]);
        let s = selection(&["1".into(), "scrape".into()]).unwrap();
        assert_eq!(s, [true, false, false, false, true, false, false]);
        assert!(selection(&["nope".into()]).is_err());
    }
}
