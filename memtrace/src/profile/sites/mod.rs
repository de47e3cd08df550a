//! Growth sites: `memtrace profile -p PID | --cgroup PATH | --all`. Where memory is first
//! touched (sampled page faults) and where the address space grows (mmap, brk, mremap), by user
//! stack, counted in the kernel (the `memtrace-sites` object, see [`probes`]) so that nothing is
//! sent per event: cheap enough to leave on.
//!
//! Sampling: the perf software event `PAGE_FAULTS` on every CPU runs the program once per
//! `--fault-period` faults of that CPU, whichever task faulted; a sample of the target counts
//! as `--fault-period` faults (an unbiased estimate), `first_touch_bytes` as that many base
//! pages (a transparent huge page fault maps more). Growth calls are all counted, by bytes.
//!
//! Cost (benchmark 14, preliminary, a 2-core VM): the kernel's accounting of an enabled perf
//! software event costs every page fault of the machine ~110 ns here, +7 % CPU on a loop that
//! only faults, whatever the period (100, 1000 and 10,000 measured the same; bpftrace's
//! `software:page-faults:10000` the same too), so the 2 % target is not met on that loop; the
//! program itself (a stack walk and a hash update per sample) is under 0.1 % at the default
//! period. The default, 1000, keeps it there and still gives a 64 MiB touch ~16 samples: use a
//! smaller period for short or small runs (the tests use 8).
//!
//! Stacks: the leaf is exact without frame pointers (the faulting instruction; for a growth
//! call the instruction after the `syscall` in libc's wrapper and, from the user stack pointer,
//! the wrapper's caller); deeper frames come from the kernel's frame-pointer walk, which stops
//! at the first frame built without one: every report says how many samples had such truncated
//! stacks.
pub mod capture;
pub mod probes;

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use self::{
    capture::{CaptureInfo, KernelStats, Sites},
    probes::{SitesOptions, SitesProbes, Target},
};
use crate::{
    cli::profile::{Format, ProfileArgs},
    host::HostPaths,
    procfs::ProcFs,
    profile::{
        StackEnd, report,
        symbolize::{FrameKind, Stack, Symbolizer},
    },
    trace::{CgroupFilter, NoSuchProcess},
};

/// How often a `--cgroup` target is rescanned for new child cgroups, and a `--pid` target
/// checked for having exited.
const RESCAN: Duration = Duration::from_secs(1);

/// What was asked for, resolved before touching the kernel (so a typo is a clear error).
enum Resolved {
    Pid { pid: u32, comm: String },
    Cgroup(CgroupFilter),
    All,
}

impl Resolved {
    fn describe(&self) -> String {
        match self {
            Self::Pid { pid, comm } => format!("pid {pid} ({comm})"),
            Self::Cgroup(cgroup) => format!("cgroup {}", cgroup.path),
            Self::All => "all processes".to_owned(),
        }
    }
}

fn resolve(args: &ProfileArgs, host: &HostPaths) -> anyhow::Result<Resolved> {
    if let Some(pid) = args.pid {
        let procfs = ProcFs::new(&host.proc);
        if !procfs.exists(pid) {
            return Err(NoSuchProcess { pid }.into());
        }
        let comm = procfs.comm(pid).unwrap_or_default();
        return Ok(Resolved::Pid { pid, comm });
    }
    if let Some(arg) = &args.cgroup {
        return Ok(Resolved::Cgroup(CgroupFilter::resolve(arg, &host.cgroup)?));
    }
    Ok(Resolved::All)
}

pub async fn run(args: ProfileArgs) -> anyhow::Result<()> {
    if args.fault_period == 0 {
        anyhow::bail!("--fault-period must be at least 1");
    }
    let host = HostPaths::default();
    let resolved = resolve(&args, &host)?;
    let checks = crate::preflight::check_in(&host)?;
    for warning in &checks.warnings {
        eprintln!("memtrace: warning: {warning}");
    }
    let target = match &resolved {
        Resolved::Pid { pid, .. } => Target::Pids(vec![*pid]),
        Resolved::Cgroup(cgroup) => Target::Cgroups(cgroup.ids()),
        Resolved::All => Target::All,
    };
    let options = SitesOptions {
        target,
        fault_period: args.fault_period,
        kernel_stacks: args.kernel_stacks,
        btf_path: host.btf.clone(),
        cgroup_root: host.cgroup.clone(),
    };
    let mut probes = SitesProbes::load(&checks.tracefs, &options)?;
    for (family, why) in &probes.skipped {
        eprintln!("memtrace: warning: {family} not attached: {why}");
    }
    let mut session = Session {
        info: CaptureInfo {
            target: resolved.describe(),
            fault_period: args.fault_period,
            page_size: u64::from(crate::probes::page_size()),
            started_unix_ms: unix_ms(SystemTime::now()),
            duration_ms: 0,
        },
        started: Instant::now(),
        symbolizer: Symbolizer::new(),
        last: HashMap::new(),
    };
    eprintln!(
        "memtrace: profiling {} ({}); Ctrl-C to stop",
        session.info.target,
        capture::sampling(args.fault_period)
    );

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    let mut live = args.interval.map(|every| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    let mut rescan = tokio::time::interval(RESCAN);
    let mut known_cgroups: HashSet<u64> = match &resolved {
        Resolved::Cgroup(cgroup) => cgroup.ids().into_iter().collect(),
        _ => HashSet::new(),
    };
    let procfs = ProcFs::new(&host.proc);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut until_deadline => break,
            _ = async { live.as_mut().expect("guarded").tick().await }, if live.is_some() => {
                let sites = session.capture(&probes)?;
                let delta = session.since_last(&sites);
                session.write(delta, Format::Text, args.top, &mut std::io::stdout().lock())?;
            }
            _ = rescan.tick() => match &resolved {
                Resolved::Pid { pid, .. } if !procfs.exists(*pid) => {
                    eprintln!("memtrace: pid {pid} exited");
                    break;
                }
                Resolved::Cgroup(cgroup) => {
                    let new: Vec<u64> =
                        cgroup.ids().into_iter().filter(|id| known_cgroups.insert(*id)).collect();
                    if !new.is_empty() {
                        probes.add_cgroups(&new)?;
                    }
                }
                _ => {}
            },
        }
    }

    let sites = session.capture(&probes)?;
    let format = report::format_for(args.output.as_deref(), args.format);
    match &args.output {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            session.write(sites, format, args.top, &mut file)?;
            file.flush()
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("memtrace: profile written to {}", path.display());
        }
        None => session.write(sites, format, args.top, &mut std::io::stdout().lock())?,
    }
    probes.detach();
    Ok(())
}

/// One profile run's state: what the reports need between intervals.
struct Session {
    info: CaptureInfo,
    started: Instant,
    symbolizer: Symbolizer,
    /// Each stack as the last live report saw it, for the growth since.
    last: capture::Seen,
}

impl Session {
    /// Everything counted so far.
    fn capture(&mut self, probes: &SitesProbes) -> anyhow::Result<Sites> {
        self.info.duration_ms =
            u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let sites = probes.sites().context("reading the sites map")?;
        let kernel: KernelStats = probes
            .kernel_stats()
            .context("reading the kernel's counters")?;
        Ok(capture::build(
            &self.info,
            &sites,
            &|id| probes.stack(id),
            &kernel,
        ))
    }

    /// `now` less what the last live report showed: the growth per site in the interval.
    fn since_last(&mut self, now: &Sites) -> Sites {
        let (delta, last) = capture::since(&self.last, now);
        self.last = last;
        delta
    }

    /// Symbolize and write `sites`. A frame-pointer walk that reached the program's or the
    /// thread's first function is complete: only symbols tell, so the ends (and the truncation
    /// count) are restated once the stacks are symbolized.
    fn write(
        &mut self,
        mut sites: Sites,
        format: Format,
        top: usize,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<()> {
        let mut profile = self
            .symbolizer
            .symbolize(&sites.capture)
            .context("symbolizing the profile")?;
        sites.restate_ends(|i, end| match (end, profile.stacks.get(i)) {
            (StackEnd::FramePointers, Some(stack)) if reaches_thread_entry(stack) => {
                StackEnd::Complete
            }
            _ => end.clone(),
        });
        for (stack, captured) in profile.stacks.iter_mut().zip(&sites.capture.stacks) {
            stack.user_end = captured.user_end.clone();
        }
        profile.stats = sites.capture.stats;
        report::write(&profile, format, top, out).context("writing the report")?;
        Ok(())
    }
}

/// Whether the outermost user frame is where a process or thread starts: the frame-pointer walk
/// stops there because the chain ends (`_start` and `clone3` clear the frame pointer), not
/// because a function without frame pointers broke it.
fn reaches_thread_entry(stack: &Stack) -> bool {
    const ENTRIES: [&str; 8] = [
        "_start",
        "__libc_start_main",
        "__libc_start_call_main",
        "start_thread",
        "clone",
        "__clone",
        "clone3",
        "__clone3",
    ];
    stack
        .frames
        .iter()
        .rev()
        .find(|frame| frame.kind == FrameKind::User)
        .and_then(|frame| frame.function.as_deref())
        .map(|name| name.strip_prefix("__GI_").unwrap_or(name))
        .is_some_and(|name| ENTRIES.contains(&name))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
