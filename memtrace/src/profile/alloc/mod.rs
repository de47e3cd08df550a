//! `memtrace profile --alloc -p P`: uprobes on the allocator the process actually uses (glibc,
//! jemalloc, tcmalloc, or one built into the executable), bytes per allocation site, in-use
//! bytes, and leak suspects (outstanding allocations older than `--min-age`).
//!
//! - [`allocator`]: which object defines the process's `malloc`, and the functions to probe.
//! - [`probes`]: the `memtrace-alloc` object's lifecycle (`can_run`, `attach`, `detach`).
//! - [`collect`]: sample records and maps to a [`crate::profile::Capture`].
//! - [`duty`]: `--duty-cycle`'s schedule of bursts and the time they covered.
//!
//! Costs: every probed call traps into the kernel (a uprobe, and a uretprobe for the calls that
//! return a pointer), so this is per process and opt-in. Sampled mode (the default) takes an
//! allocation of `s` bytes with probability `1 - exp(-s / rate)` as jemalloc's heap profiler
//! does, and sends a stack snapshot only for those; `--unsampled` counts every call exactly in
//! the kernel and sends a snapshot only for each new site. `--duty-cycle` counts allocation sites
//! only, with the allocating functions' entry probes alone, attached in bursts: a busy server
//! pays one trap per allocation for that share of the time and none per free.
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{Interest, unix::AsyncFd};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::profile::ProfileArgs;
use crate::profile::{report, symbolize::Symbolizer};

pub mod allocator;
pub mod collect;
pub mod duty;
pub mod probes;

use collect::{Collector, View};
use duty::DutyCycle;
use probes::{AllocProbes, Limits, Mode};

pub async fn run(args: ProfileArgs) -> anyhow::Result<()> {
    let pid = args.pid.context("--alloc needs --pid")?;
    crate::preflight::check_privileges().map_err(|err| {
        anyhow::anyhow!(
            "memtrace profile --alloc loads eBPF programs: run it as root (or with CAP_BPF and \
             CAP_PERFMON): {err}"
        )
    })?;
    let mode = Mode {
        unsampled: args.unsampled,
        rate: args.sample_rate(),
        sites_only: args.duty_cycle.is_some(),
    };
    let plan = AllocProbes::can_run(Path::new("/proc"), pid, mode)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim_end().to_owned())
        .unwrap_or_default();
    if let Some(warning) = symbols_warning(pid) {
        eprintln!("warning: {warning}");
    }
    let sampling = if args.unsampled {
        "every call".to_owned()
    } else {
        format!(
            "byte-sampled, mean one per {}",
            crate::units::human_bytes(args.sample_rate())
        )
    };
    // Before attaching: a Ctrl-C right after the "profiling" line must reach the handlers.
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut probes = AllocProbes::attach(plan, Limits::default())?;
    let mut duty = args
        .duty_cycle
        .map(|share| DutyCycle::new(share, args.burst, Instant::now()));
    let names: Vec<&str> = probes
        .plan
        .allocator
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    let bursts = match args.duty_cycle {
        Some(share) if share < 1.0 => format!(
            ", allocation sites only, probes attached {} % of the time in bursts of {}",
            share * 100.0,
            humantime::format_duration(args.burst)
        ),
        Some(_) => ", allocation sites only".to_owned(),
        None => String::new(),
    };
    eprintln!(
        "profiling allocations of pid {pid} ({comm}): {} allocator in {} ({}), {sampling}{bursts}",
        probes.plan.allocator.kind.name(),
        probes.plan.allocator.mapped_path.display(),
        names.join(", "),
    );
    let ring = probes.samples()?;
    // SAFETY: the ring's descriptor stays open as long as the `AsyncFd` that owns the ring.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .context("polling the sample ring")?;
    let mut collector = Collector::new(pid, comm, sampling);

    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut interval = args.interval.map(|period| {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut alive = tokio::time::interval(Duration::from_millis(500));
    let mut gone = false;
    loop {
        let until_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match interval.as_mut() {
                Some(ticker) => ticker.tick().await,
                None => std::future::pending().await,
            }
        };
        let toggle = async {
            match duty.as_ref().and_then(DutyCycle::next_toggle) {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            () = until_deadline => break,
            _ = alive.tick() => {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    gone = true;
                    break;
                }
            }
            () = toggle => {
                if let Some(duty) = duty.as_mut()
                    && let Err(err) = switch(&mut probes, duty)
                {
                    gone = !Path::new(&format!("/proc/{pid}")).exists();
                    if !gone {
                        eprintln!("warning: stopping early, reporting what was counted: {err}");
                    }
                    break;
                }
            }
            _ = tick => {
                drain(&mut ring, &mut collector);
                let coverage = duty.as_ref().map(|duty| duty.coverage(Instant::now()));
                let capture = collector.capture(&probes, View::Growth, coverage.as_ref())?;
                let profile = Symbolizer::new().symbolize(&capture)?;
                let mut stdout = std::io::stdout().lock();
                report::write(&profile, crate::cli::profile::Format::Text, args.top, &mut stdout)?;
                stdout.flush()?;
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the sample ring")?;
                drain_ring(guard.get_inner_mut(), &mut collector);
                guard.clear_ready();
            }
        }
    }
    drain(&mut ring, &mut collector);
    if gone {
        eprintln!("process {pid} exited: reporting what was recorded until then");
    }
    let view = if args.leaks {
        View::Leaks {
            min_age: args.min_age,
        }
    } else {
        View::Sites
    };
    let now = Instant::now();
    if let Some(duty) = duty.as_mut().filter(|duty| duty.is_attached()) {
        probes.set_paused(true)?;
        duty.detached(now);
    }
    let coverage = duty.as_ref().map(|duty| duty.coverage(now));
    let capture = collector.capture(&probes, view, coverage.as_ref())?;
    probes.detach();
    let profile = Symbolizer::new()
        .symbolize(&capture)
        .with_context(|| format!("symbolizing the profile of pid {pid}"))?;
    report::write_output(&profile, args.output.as_deref(), args.format, args.top)?;
    if let Some(path) = &args.output {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The next step of `--duty-cycle`: pause counting and detach the probes, or attach them and
/// count again.
fn switch(probes: &mut AllocProbes, duty: &mut DutyCycle) -> Result<(), probes::ProbeError> {
    if duty.is_attached() {
        probes.set_paused(true)?;
        duty.detached(Instant::now());
        probes.detach_probes();
    } else {
        probes.attach_probes()?;
        probes.set_paused(false)?;
        duty.attached(Instant::now());
    }
    Ok(())
}

fn drain(ring: &mut AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>, collector: &mut Collector) {
    drain_ring(ring.get_mut(), collector);
}

fn drain_ring(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, collector: &mut Collector) {
    while let Some(item) = ring.next() {
        collector.record(&item);
    }
}

/// The executable has no symbol table and no debug link: its frames will be unknown. Names the
/// binary and the `-dbgsym` package of the Debian package that ships it.
fn symbols_warning(pid: u32) -> Option<String> {
    use object::{Object as _, ObjectSymbol as _};
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let data = std::fs::read(format!("/proc/{pid}/exe")).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let has_symtab = file.symbol_table().is_some();
    let exported = file.dynamic_symbols().filter(|s| s.is_definition()).count();
    if has_symtab
        || exported > 100
        || file
            .gnu_debuglink()
            .ok()
            .flatten()
            .is_some_and(|_| debug_file_exists(&file))
    {
        return None;
    }
    let package = std::process::Command::new("dpkg")
        .arg("-S")
        .arg(&exe)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split(':')
                .next()
                .map(str::to_owned)
        });
    Some(match package {
        Some(package) => format!(
            "{} has no symbols: its functions will show as unknown (install {package}-dbgsym)",
            exe.display()
        ),
        None => format!(
            "{} has no symbols: its functions will show as unknown (install its debug symbols)",
            exe.display()
        ),
    })
}

/// Whether the separate debug file of `file` is installed (`/usr/lib/debug/.build-id/xx/….debug`).
fn debug_file_exists(file: &object::File<'_>) -> bool {
    use object::Object as _;
    let Ok(Some(id)) = file.build_id() else {
        return false;
    };
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    hex.len() > 2
        && Path::new(&format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        ))
        .exists()
}
