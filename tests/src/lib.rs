//! Support for the privileged integration tests: root check, driving workloads, loading memtrace.
pub mod cgroup;
pub mod manifests;

pub use cgroup::MemoryCgroup;

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use memtrace::{
    events::Event,
    pipeline::EventStream,
    probes::{ProbeOptions, Probes},
    tracefs::Tracefs,
};

/// These tests load eBPF programs into the running kernel: without root they must fail, loudly,
/// never skip.
pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the privileged tests load real eBPF programs and need root: run `cargo xtask test` as root"
    );
}

/// A binary of this workspace next to the running test (`target/<profile>/deps/<test>` →
/// `target/<profile>/<name>`), or from `$env_var`.
fn workspace_bin(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo xtask test` (it builds every binary first)",
        path.display()
    );
    path
}

/// The `memtrace-workload` binary (built by cargo for this package's integration tests).
pub fn workload_bin() -> PathBuf {
    workspace_bin("memtrace-workload", "MEMTRACE_WORKLOAD_BIN")
}

/// The `memtrace` binary.
pub fn memtrace_bin() -> PathBuf {
    workspace_bin("memtrace", "MEMTRACE_BIN")
}

/// A running workload (see `src/bin/workload.rs` for the protocol).
pub struct Workload {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    /// Start it and wait for `ready`.
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(workload_bin()).args(args))
    }

    /// Start it inside `cgroup`: placed there between fork and exec, as container runtimes do,
    /// so it never runs (or is seen) anywhere else.
    pub fn start_in(cgroup: &MemoryCgroup, args: &[&str]) -> Self {
        Self::start_program_in(&workload_bin(), &cgroup.dir, args)
    }

    /// Like [`Self::start_in`], for `program` (e.g. a link to the workload binary under another
    /// name, which becomes its comm) in the cgroup directory `cgroup_dir`.
    pub fn start_program_in(
        program: &std::path::Path,
        cgroup_dir: &std::path::Path,
        args: &[&str],
    ) -> Self {
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        // Opened here: between fork and exec only async-signal-safe calls are allowed (the test
        // harness is multi-threaded), so the child just write(2)s "0" (= itself) to it.
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(cgroup_dir.join("cgroup.procs"))
            .expect("open cgroup.procs");
        let fd = procs.as_raw_fd();
        let mut command = Command::new(program);
        command.args(args);
        // SAFETY: the hook calls only write(2) on an fd that outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let workload = Self::spawn(&mut command);
        drop(procs);
        workload
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut workload = Self {
            child,
            stdin,
            stdout,
        };
        let line = workload.read_line();
        assert_eq!(line, "ready", "workload {command:?} did not get ready");
        workload
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read workload stdout");
        line.trim().to_owned()
    }

    /// Send `go`, without waiting.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "go").expect("write go");
        stdin.flush().expect("flush");
    }

    /// Send `go` and return the workload's JSON results.
    pub fn run(&mut self) -> serde_json::Value {
        self.try_run()
            .unwrap_or_else(|| panic!("workload {} ended without results", self.pid()))
    }

    /// [`Self::run`] for a workload that may be killed on the way (an OOM trigger): `None` if
    /// it ended without results.
    pub fn try_run(&mut self) -> Option<serde_json::Value> {
        self.go();
        let line = self.read_line();
        if line.is_empty() {
            return None;
        }
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("workload results {line:?}: {err}")),
        )
    }

    /// Close stdin and wait for exit.
    pub fn finish(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait workload")
    }

    /// Close stdin, reap it, and return its (minor, major) faults as the kernel reports them
    /// to the parent (`wait4` resource usage: every thread's, final).
    pub fn finish_with_faults(mut self) -> (u64, u64) {
        drop(self.stdin.take());
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: reaping our own child (std's `Child` is not waited for after this).
        let rc = unsafe { libc::wait4(self.child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(
            rc,
            self.child.id() as i32,
            "wait4: {}",
            std::io::Error::last_os_error()
        );
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        (usage.ru_minflt as u64, usage.ru_majflt as u64)
    }
}

/// A workload outlives no test: dropped, it gets EOF on stdin (which ends the ones that wait for
/// more input), a second to exit, and then SIGKILL. A leftover workload would be counted by the
/// next test (e.g. a third process of the same name in `trace --by comm`).
impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        // `Err`: already reaped (`finish_with_faults` waits with `wait4`).
        while let Ok(None) = self.child.try_wait() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The kernel's page size.
pub fn page_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// `len` bytes of anonymous private read-write memory; panics if the kernel refuses.
pub fn map_anon(len: usize) -> *mut u8 {
    // SAFETY: plain anonymous mapping.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(
        addr,
        libc::MAP_FAILED,
        "mmap {len}: {}",
        std::io::Error::last_os_error()
    );
    // The workloads and benchmarks count one 4 KiB fault per page touched, but with transparent
    // hugepages `always` (Debian's and Ubuntu's kernels) a 2 MiB-aligned stretch takes one fault
    // for 512 pages. Opt the region out, whatever the host's setting; EINVAL (a kernel without
    // THP) leaves 4 KiB pages anyway.
    // SAFETY: advice on the mapping just made.
    unsafe { libc::madvise(addr, len, libc::MADV_NOHUGEPAGE) };
    addr.cast()
}

/// CPU time of the calling thread, ns (immune to preemption by other processes).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Pages a kernel's own RSS counters (`mm->rss_stat`, what `/proc/<pid>/status` and
/// `kmem:rss_stat` report) may lag what a process touched: since Linux 6.2 each CPU holds back up
/// to one per-CPU batch, max(32, 2 × CPUs) pages; before, each live thread up to 64 faults
/// (`TASK_RSS_EVENTS_THRESH`). For workloads with one live thread, the larger of the two.
pub fn rss_counter_slack_pages() -> u64 {
    let cpus = online_cpus() as u64;
    (cpus * 32.max(2 * cpus)).max(64)
}

/// Minor and major faults of a live process, as the kernel counts them (`/proc/<pid>/stat`).
pub fn proc_faults(pid: u32) -> (u64, u64) {
    let stat = memtrace::procfs::ProcFs::new("/proc")
        .stat(pid)
        .expect("read /proc/<pid>/stat");
    (stat.minflt, stat.majflt)
}

/// memtrace loaded in-process, with its event stream.
pub struct Tracer {
    pub probes: Probes,
    pub stream: EventStream,
}

impl Tracer {
    pub fn load(options: &ProbeOptions) -> Self {
        require_root();
        let tracefs = Tracefs::discover().expect("tracefs");
        Self::from_probes(Probes::load(&tracefs, options).expect("load probes"))
    }

    /// Start reading the rings of already loaded probes.
    pub fn from_probes(mut probes: Probes) -> Self {
        let (events, faults) = probes.take_rings().expect("rings");
        let stream = EventStream::spawn(
            vec![events, faults],
            4096,
            memtrace::pipeline::DRAIN_EVERY_LIVE,
        )
        .expect("stream");
        Self { probes, stream }
    }

    /// Collect events until `done` returns true for the collected set, or `timeout`.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while !done(&events) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, self.stream.batches.recv()).await {
                Ok(Some(batch)) => events.extend(batch),
                Ok(None) | Err(_) => break,
            }
        }
        events
    }
}
