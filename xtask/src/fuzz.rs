//! `cargo xtask fuzz`: build the cargo-fuzz targets of `fuzz/` and run each for a bounded time.
//!
//! Each target starts from its kept corpus (`fuzz/corpus/<target>`, read only: what a run finds
//! goes to a scratch directory under the target dir, so runs leave the work tree clean). A crash
//! fails the command with the reproducer's path and the line that replays it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{Ctx, TOOLCHAIN, ensure_apt_packages, output, say, show_short, status};

/// cargo-fuzz release known to work with the pinned toolchain (`-Z` flags via RUSTC_BOOTSTRAP).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Longest a single input may take before libFuzzer calls it a hang (seconds). The parsers take
/// microseconds; seconds mean a loop that does not end.
const INPUT_TIMEOUT_S: u32 = 10;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: u32,
    /// Run only this target (see `cargo fuzz list`); repeatable. Default: every target.
    #[arg(long = "target", value_name = "T")]
    targets: Vec<String>,
    /// libFuzzer's sanitizer: `address` (ASan), or `none` (faster; panics are still crashes).
    #[arg(long, default_value = "address", value_parser = ["address", "none"])]
    sanitizer: String,
}

/// One target's run, from libFuzzer's final statistics.
struct Ran {
    target: String,
    runs: u64,
    execs_per_sec: u64,
    new_inputs: usize,
}

pub fn run(ctx: &Ctx, args: FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz(ctx)?;
    // libfuzzer-sys compiles libFuzzer's C++ sources.
    ensure_apt_packages(ctx, &[("c++", "g++")])?;
    let all = list_targets(ctx)?;
    let targets = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?} (targets: {})", all.join(", "));
            }
        }
        args.targets.clone()
    };

    let started = Instant::now();
    let build = fuzz_cmd(ctx, "build", &args.sanitizer);
    say(format!(
        "building the fuzz targets: `{}`",
        show_short(&build)
    ));
    status(build)?;
    say(format!("fuzz targets built in {:.0?}", started.elapsed()));

    let mut ran = Vec::new();
    for target in &targets {
        ran.push(run_target(ctx, target, &args)?);
    }
    for r in &ran {
        say(r.line());
    }
    say(format!(
        "fuzz: {} targets, {} s each, no crash ({:.0?} in all)",
        ran.len(),
        args.seconds,
        started.elapsed()
    ));
    Ok(())
}

/// `cargo fuzz <sub>` as every invocation here runs it: the pinned toolchain with
/// RUSTC_BOOTSTRAP=1 (cargo-fuzz passes `-Z` flags), debug assertions and overflow checks on (an
/// overflow the tests would catch is a crash here too), and no eBPF object (the targets never
/// load it; building it would need bpf-linker and a nested cargo).
fn fuzz_cmd(ctx: &Ctx, sub: &str, sanitizer: &str) -> Command {
    let mut c = ctx.cmd("cargo");
    c.args([&format!("+{TOOLCHAIN}"), "fuzz", sub])
        .args([
            "--fuzz-dir",
            "fuzz",
            "--sanitizer",
            sanitizer,
            "--debug-assertions",
        ])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("AYA_BUILD_SKIP", "1");
    c
}

fn run_target(ctx: &Ctx, target: &str, args: &FuzzArgs) -> Result<Ran> {
    let fuzz_dir = ctx.root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    let scratch = ctx.target_dir().join("fuzz-corpus-new").join(target);
    // A fresh scratch directory each run: it holds only what this run found.
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let since = SystemTime::now();

    let mut c = fuzz_cmd(ctx, "run", &args.sanitizer);
    c.arg(target)
        .arg(&scratch)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={}", args.seconds))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"))
        .arg("-print_final_stats=1");
    say(format!("fuzzing {target} for {} s", args.seconds));
    let shown = show_short(&c);
    let out = c
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        print_report(&log);
        let found = new_artifacts(&artifacts, since);
        if found.is_empty() {
            bail!(
                "fuzz target {target} failed ({}) without a reproducer in {}",
                out.status,
                artifacts.display()
            );
        }
        for file in &found {
            say(format!("{target}: reproducer {}", file.display()));
            say(format!(
                "replay it: RUSTC_BOOTSTRAP=1 AYA_BUILD_SKIP=1 cargo fuzz run --sanitizer {} \
                 --debug-assertions {target} {}",
                args.sanitizer,
                file.display()
            ));
        }
        bail!(
            "fuzz target {target} found {} failing input(s); each becomes a unit test next to its \
             parser and joins fuzz/corpus/{target}",
            found.len()
        );
    }
    let ran = Ran {
        target: target.to_owned(),
        runs: final_stat(&log, "number_of_executed_units"),
        execs_per_sec: final_stat(&log, "average_exec_per_sec"),
        new_inputs: fs::read_dir(&scratch).map_or(0, |d| d.count()),
    };
    say(ran.line());
    Ok(ran)
}

impl Ran {
    fn line(&self) -> String {
        format!(
            "fuzz {:<20} {:>10} runs {:>7} exec/s {:>5} new inputs",
            self.target, self.runs, self.execs_per_sec, self.new_inputs
        )
    }
}

/// The failure's own lines (the panic message or the sanitizer's report, with the first frames of
/// its backtrace), then libFuzzer's closing lines (the input, the reproducer's name).
fn print_report(log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.contains("panicked at") || l.contains("ERROR: AddressSanitizer"));
    if let Some(start) = start {
        for line in lines.iter().skip(start).take(24) {
            eprintln!("{line}");
        }
        eprintln!("…");
    }
    let tail_from = lines
        .len()
        .saturating_sub(30)
        .max(start.map_or(0, |s| s + 24));
    for line in &lines[tail_from..] {
        eprintln!("{line}");
    }
}

/// `stat::<name>: <n>` from libFuzzer's `-print_final_stats=1` output; 0 if absent.
fn final_stat(log: &str, name: &str) -> u64 {
    let key = format!("stat::{name}:");
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(&key))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Files libFuzzer wrote to `dir` (crash-*, oom-*, timeout-*, leak-*) since `since`.
fn new_artifacts(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn list_targets(ctx: &Ctx) -> Result<Vec<String>> {
    let mut c = ctx.cmd("cargo");
    c.args([
        &format!("+{TOOLCHAIN}"),
        "fuzz",
        "list",
        "--fuzz-dir",
        "fuzz",
    ]);
    let targets: Vec<String> = output(c)?
        .lines()
        .map(str::trim)
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no targets in fuzz/");
    }
    Ok(targets)
}

/// Installs cargo-fuzz when `cargo fuzz` is missing or another version (≈1 min, once).
fn ensure_cargo_fuzz(ctx: &Ctx) -> Result<()> {
    let mut version = ctx.cmd("cargo");
    version.args([&format!("+{TOOLCHAIN}"), "fuzz", "--version"]);
    if let Ok(v) = output(version)
        && v.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION)
    {
        say(format!("cargo-fuzz {CARGO_FUZZ_VERSION} present"));
        return Ok(());
    }
    say(format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into {} (≈1 min)",
        ctx.cargo_bin.display()
    ));
    let started = Instant::now();
    let mut install = ctx.cmd("cargo");
    install
        .args([&format!("+{TOOLCHAIN}"), "install", "cargo-fuzz"])
        .args(["--version", CARGO_FUZZ_VERSION, "--locked"])
        // Outside the workspace: its .cargo/config.toml and rust-toolchain.toml are irrelevant.
        .current_dir(std::env::temp_dir());
    status(install)?;
    say(format!(
        "cargo-fuzz {CARGO_FUZZ_VERSION} installed in {:.0?}",
        started.elapsed()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read() {
        let log = "#2\tINITED\nDone 812 runs in 2 second(s)\nstat::number_of_executed_units: 812\n\
                   stat::average_exec_per_sec:     406\nstat::new_units_added:          3\n";
        assert_eq!(final_stat(log, "number_of_executed_units"), 812);
        assert_eq!(final_stat(log, "average_exec_per_sec"), 406);
        assert_eq!(final_stat(log, "peak_rss_mb"), 0);
    }
}
