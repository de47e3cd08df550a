//! Growth sites: `memtrace profile -p PID | --cgroup PATH | --all`. Where memory is first
//! touched (sampled page faults) and where the address space grows (mmap, brk, mremap), by user
//! stack, counted in the kernel (the `memtrace-sites` object, see [`probes`]) so that nothing is
//! sent per event: cheap enough to leave on.
//!
//! Sampling: the perf software event `PAGE_FAULTS` on every CPU runs the program once per
//! `--fault-period` faults of that CPU, whichever task faulted; a sample of the target counts
//! as `--fault-period` faults (an unbiased estimate), `first_touch_bytes` as that many base
//! pages (a transparent huge page fault maps more). The default period, 1000, keeps the cost on
//! a fault-bound loop within the measured 2 % (BENCHMARKS.md) and gives a 64 MiB touch ~16
//! samples: use a smaller period for short or small runs. Growth calls are all counted, by
//! bytes.
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
    capture::{CaptureInfo, KernelStats},
    probes::{SitesOptions, SitesProbes, Target},
};
use crate::{
    cli::profile::{Format, ProfileArgs},
    host::HostPaths,
    procfs::ProcFs,
    profile::{Capture, report, symbolize::Symbolizer},
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
                let capture = session.capture(&probes)?;
                let delta = session.since_last(&capture);
                session.write(&delta, Format::Text, args.top, &mut std::io::stdout().lock())?;
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

    let capture = session.capture(&probes)?;
    let format = report::format_for(args.output.as_deref(), args.format);
    match &args.output {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            session.write(&capture, format, args.top, &mut file)?;
            file.flush()
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("memtrace: profile written to {}", path.display());
        }
        None => session.write(&capture, format, args.top, &mut std::io::stdout().lock())?,
    }
    probes.detach();
    Ok(())
}

/// One profile run's state: what the reports need between intervals.
struct Session {
    info: CaptureInfo,
    started: Instant,
    symbolizer: Symbolizer,
    /// Each stack's values at the last live report, for the growth since.
    last: HashMap<capture::RowKey, Vec<i64>>,
}

impl Session {
    /// Everything counted so far.
    fn capture(&mut self, probes: &SitesProbes) -> anyhow::Result<Capture> {
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
    fn since_last(&mut self, now: &Capture) -> Capture {
        let (delta, last) = capture::since(&self.last, now);
        self.last = last;
        delta
    }

    fn write(
        &mut self,
        capture: &Capture,
        format: Format,
        top: usize,
        out: &mut dyn std::io::Write,
    ) -> anyhow::Result<()> {
        let profile = self
            .symbolizer
            .symbolize(capture)
            .context("symbolizing the profile")?;
        report::write(&profile, format, top, out).context("writing the report")?;
        Ok(())
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
