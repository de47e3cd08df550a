//! Running what the benchmarks measure: memtrace, bpftrace and the workloads, each owned by a
//! guard that kills it on the way out (error or Ctrl-C included); sysctls restored the same way;
//! the daemon's HTTP endpoints.
use std::{
    cell::{Cell, RefCell},
    fs::{self, File},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{BenchArgs, procfs::read_trimmed};
use crate::{Ctx, say, show};

/// `memtrace daemon` as benchmarked; `--listen ADDR` is appended.
pub(super) const DAEMON_ARGS: &[&str] = &["daemon"];

/// Stand-in for the daemon while it does not exist: the same always-on probes, no HTTP; ready
/// once it prints `tracing with … probes attached` on stderr. The default events attach every
/// family (`--event oom` attaches the OOM hook alone); no mmap is that large, so only OOM kills
/// and reclaim stalls stream.
pub(super) const TRACE_STANDIN_ARGS: &[&str] = &["trace", "--no-summary", "--min-size", "1T"];

pub(super) const TRACE_READY_MARKER: &str = "tracing with";

/// bpftrace prints this just before attaching its probes.
pub(super) const BPFTRACE_READY_MARKER: &str = "Attaching";

/// Pause between a tracer reporting ready and the workload starting (the daemon's first /proc
/// scan, bpftrace finishing its attach).
pub(super) const SETTLE: Duration = Duration::from_millis(500);

/// How long a tracer may take to become ready (bpftrace compiles with LLVM first).
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub(super) const STOP_GRACE: Duration = Duration::from_secs(15);

pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(super) extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(super) fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub(super) fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep in small steps, returning early with an error on Ctrl-C.
pub(super) fn pause(d: Duration) -> Result<()> {
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

pub(super) enum Stop {
    Signal(libc::c_int),
    CloseStdin,
}

/// A child process that is killed (SIGKILL) and reaped when dropped, unless stopped before.
pub(super) struct Proc {
    pub(super) name: String,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) stop: Stop,
    pub(super) log: Option<PathBuf>,
}

pub(super) fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: signalling a child we have not reaped yet (its pid cannot be reused).
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

impl Proc {
    /// Spawn with stdout+stderr to a log file (or stdout piped when `pipe_stdout`).
    pub(super) fn spawn(
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(super) fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The last lines of its log, for error messages.
    pub(super) fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
        match &self.log {
            Some(p) => format!("{tail} (log: {})", p.display()),
            None => tail,
        }
    }

    /// Ask it to stop (signal or closing stdin); SIGKILL after `grace`.
    pub(super) fn stop(&mut self, grace: Duration) -> Result<()> {
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
pub(super) struct Sysctl {
    pub(super) path: &'static str,
    pub(super) old: String,
}

impl Sysctl {
    pub(super) fn set(path: &'static str, value: &str) -> Result<Self> {
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

pub(super) struct Bins {
    pub(super) memtrace: PathBuf,
    pub(super) faults: PathBuf,
    pub(super) mmap: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Running {
    Daemon,
    Trace,
}

pub(super) struct Env<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) args: &'a BenchArgs,
    pub(super) bins: Bins,
    pub(super) running: Running,
    pub(super) logs: PathBuf,
    pub(super) seq: Cell<u32>,
    pub(super) bpftrace: Option<PathBuf>,
    /// Commands run by the current benchmark, in first-use order (for the report).
    pub(super) commands: RefCell<Vec<String>>,
    /// memtrace's CPU (% of one core) while benchmark 1's workload ran, for benchmark 4.
    pub(super) cpu_during_faults: RefCell<Vec<f64>>,
}

impl Env<'_> {
    pub(super) fn log_path(&self, name: &str) -> PathBuf {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        self.logs.join(format!("{n:03}-{name}.log"))
    }

    /// A path as the report shows it: relative to the workspace root.
    pub(super) fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.ctx.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    /// Record a command line for the report (paths relative to the workspace root).
    pub(super) fn note(&self, cmd: &Command) {
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

    pub(super) fn take_commands(&self) -> Vec<String> {
        std::mem::take(&mut *self.commands.borrow_mut())
    }

    pub(super) fn memtrace_args(&self) -> Vec<String> {
        self.memtrace_args_as(self.running)
    }

    fn memtrace_args_as(&self, running: Running) -> Vec<String> {
        match running {
            Running::Daemon => DAEMON_ARGS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(["--listen".to_owned(), self.args.listen.to_string()])
                .collect(),
            Running::Trace => TRACE_STANDIN_ARGS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    pub(super) fn running_label(&self) -> &'static str {
        match self.running {
            Running::Daemon => "memtrace daemon",
            Running::Trace => "memtrace (trace stand-in)",
        }
    }

    /// The workload command, niced when asked.
    pub(super) fn workload(&self, bin: &Path, args: &[String], nice: bool) -> Command {
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
    pub(super) fn start_memtrace(&self) -> Result<(Proc, Duration)> {
        self.start_memtrace_with(&[])
    }

    /// [`Env::start_memtrace`] with extra arguments.
    pub(super) fn start_memtrace_with(&self, extra: &[&str]) -> Result<(Proc, Duration)> {
        self.start_memtrace_as(self.running, extra)
    }

    /// [`Env::start_memtrace_with`] as `running`, whatever this run's `--running` is (benchmark
    /// 11 compares both with bpftrace).
    pub(super) fn start_memtrace_as(
        &self,
        running: Running,
        extra: &[&str],
    ) -> Result<(Proc, Duration)> {
        if running == Running::Daemon
            && TcpStream::connect_timeout(&self.args.listen, Duration::from_millis(200)).is_ok()
        {
            bail!(
                "something already listens on {} (another daemon?): choose another --listen",
                self.args.listen
            );
        }
        let mut cmd = Command::new(&self.bins.memtrace);
        cmd.args(self.memtrace_args_as(running))
            .args(extra)
            .env("PATH", &self.ctx.path);
        self.note(&cmd);
        let readyz = Http::new(self.args.listen, Duration::from_secs(2));
        let started = Instant::now();
        let (mut p, _) = Proc::spawn(self, "memtrace", cmd, Stop::Signal(libc::SIGTERM), false)?;
        loop {
            let ready = match running {
                Running::Daemon => readyz.get("/readyz").is_ok_and(|r| r.status == 200),
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

    pub(super) fn start_bpftrace(&self, program: &str) -> Result<Proc> {
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
    pub(super) fn run_workload(&self, mut cmd: Command) -> Result<WorkloadRun> {
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

pub(super) struct WorkloadRun {
    /// The workload's JSON result line.
    pub(super) line: String,
    /// Spawn to exit, as seen from here.
    pub(super) wall: Duration,
}

impl WorkloadRun {
    /// A number of the result line (`{"faults":…,"ns_per_fault":…}`).
    pub(super) fn num(&self, key: &str) -> Result<f64> {
        let result: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.line)
                .with_context(|| format!("`{}` is not a JSON object", self.line))?;
        result
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("no {key} in `{}`", self.line))
    }
}

/// A response of the daemon: its status and body, whatever the status.
pub(super) struct HttpResponse {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

/// GETs on the daemon, each on a new connection (`Connection: close`, none kept idle), as a
/// Prometheus server that scrapes every few seconds makes them.
pub(super) struct Http {
    agent: ureq::Agent,
    addr: SocketAddr,
}

impl Http {
    pub(super) fn new(addr: SocketAddr, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            // ureq honours HTTP_PROXY & co. by default (and `sudo -E` keeps them): the latency
            // measured must be the daemon's on loopback, never a proxy's.
            .proxy(None)
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_idle_connections(0)
            .build()
            .into();
        Self { agent, addr }
    }

    pub(super) fn get(&self, path: &str) -> Result<HttpResponse> {
        let url = format!("http://{}{path}", self.addr);
        let mut response = self
            .agent
            .get(&url)
            .header("Connection", "close")
            .call()
            .with_context(|| format!("GET {url}"))?;
        let status = response.status().as_u16();
        // The snapshot of 10,000 processes is larger than ureq's default 10 MB body limit.
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .with_context(|| format!("reading the body of GET {url}"))?;
        Ok(HttpResponse { status, body })
    }
}

pub(super) fn capture(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

pub(super) fn other_tracers() -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Write as _},
        net::TcpListener,
        thread,
        time::Duration,
    };

    use super::{Http, WorkloadRun};

    /// The scrape measures one request per connection, counts non-200 answers and reads bodies
    /// larger than ureq's default limit: a server that keeps connections alive but answers only
    /// the first request on each would hang a client that reused one.
    #[test]
    fn every_get_on_its_own_connection_whatever_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let body = vec![b'x'; 12 << 20];
        let served = body.clone();
        let server = thread::spawn(move || {
            let mut requests = Vec::new();
            for status in ["503 Service Unavailable", "200 OK"] {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    if reader.read_line(&mut head).unwrap() == 0 {
                        break;
                    }
                }
                let mut stream = stream;
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                    served.len()
                )
                .unwrap();
                stream.write_all(&served).unwrap();
                requests.push((head, stream));
            }
            requests
                .into_iter()
                .map(|(head, _)| head)
                .collect::<Vec<_>>()
        });
        let http = Http::new(addr, Duration::from_secs(10));
        let first = http.get("/metrics").unwrap();
        let second = http.get("/api/v1/snapshot").unwrap();
        assert_eq!((first.status, second.status), (503, 200));
        assert!(first.body == body && second.body == body);
        let heads = server.join().unwrap();
        assert!(
            heads[0].starts_with("GET /metrics HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(heads[1].starts_with("GET /api/v1/snapshot HTTP/1.1\r\n"));
        assert!(
            heads
                .iter()
                .all(|h| h.to_ascii_lowercase().contains("\r\nconnection: close\r\n")),
            "{heads:?}"
        );
    }

    #[test]
    fn json_numbers() {
        let run = WorkloadRun {
            line: r#"{"faults":655360,"wall_ns":123,"ns_per_fault":412.25,"x":-3}"#.to_owned(),
            wall: Duration::ZERO,
        };
        assert_eq!(run.num("faults").unwrap(), 655_360.0);
        assert_eq!(run.num("ns_per_fault").unwrap(), 412.25);
        assert_eq!(run.num("x").unwrap(), -3.0);
        assert!(run.num("missing").is_err());
        let not_json = WorkloadRun {
            line: "{faults: 1}".to_owned(),
            wall: Duration::ZERO,
        };
        assert!(not_json.num("faults").is_err());
    }
}
