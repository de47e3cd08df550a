//! `cargo xtask vm-test`: the kernel matrix. Boots Debian's kernels (5.10 to the newest
//! packaged) under qemu with a root filesystem built here, and runs the same plan
//! (`guest/plan.sh`) in each and natively on this machine: `memtrace check`, a short `memtrace
//! trace` and `memtrace daemon`, the privileged test binary, and with `--bench` benchmarks 1, 2
//! and 11 (the attach mechanisms). The matrix it prints is the README's "Supported kernels" table (`--update-readme`).
mod kernels;
mod matrix;
mod qemu;
mod rootfs;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use self::{
    kernels::{KERNELS, Kernel},
    matrix::KernelRun,
    qemu::{Accel, Boot},
};
use crate::{
    Ctx, build_release_bins, build_workspace_bins, ensure_apt_packages, ensure_tracefs, is_root,
    output, say, setup, status,
};

const PLAN: &str = include_str!("guest/plan.sh");

/// Tests of the privileged binary that the matrix does not run, with why (`plan.sh` reads the
/// first word of each line as a `--skip` filter).
const NOT_IN_VMS: [(&str, &str); 6] = [
    (
        "container::",
        "builds the OCI image and runs it with podman: tests the image, not the kernel (host only)",
    ),
    (
        "grafana::",
        "renders the dashboards with Grafana's SDK against Prometheus: not about the kernel (host only)",
    ),
    (
        "cluster_e2e::",
        "three network-namespace nodes with redis and Prometheus for minutes on cgroup v1 (host only)",
    ),
    (
        "top::",
        "drives the TUI in tmux, which the guest image lacks: the views, not the kernel (host only)",
    ),
    (
        "profile_alloc::",
        "builds its C programs with gcc and loads Redis and memcached, which the guest image lacks (host only, for now)",
    ),
    (
        "profile_sites::",
        "builds its C program with gcc, which the guest image lacks (host only, for now)",
    ),
];
const NOT_ON_THIS_HOST: (&str, &str) = (
    "systemd::",
    "needs systemd as PID 1, which this host does not run (run in every VM)",
);

/// Lines of each unexpected failure's output echoed to stderr (the rest is in tests.log).
const FAILURE_LINES: usize = 40;

/// Options of `cargo xtask vm-test`.
#[derive(Debug, clap::Args)]
pub struct VmTestArgs {
    /// Kernels to boot (comma-separated): 5.10, 6.1, 6.12, 7.3 [default: all].
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = kernels::by_name)]
    kernels: Vec<&'static Kernel>,
    /// Leave out this machine's own row (the same plan, run natively).
    #[arg(long)]
    no_host: bool,
    /// Also run benchmarks 1, 2 and 11 (reduced: 3 rounds) in each VM and natively.
    #[arg(long)]
    bench: bool,
    /// How qemu runs the guests.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// Minutes one VM may run before it is killed and its kernel fails.
    #[arg(long, default_value_t = 30, value_name = "MINUTES")]
    timeout: u64,
    /// Run only the privileged tests whose names contain one of these (comma-separated), e.g.
    /// `growth::,oom::` to chase one failure without the whole suite.
    #[arg(long, value_delimiter = ',', value_name = "FILTERS")]
    tests: Vec<String>,
    /// Rewrite README.md's "Supported kernels" table with this run's matrix.
    #[arg(long)]
    update_readme: bool,
    /// Boot nothing: render the matrix from the results the last runs left in target/vm-test/
    /// (a kernel without results is reported as not run).
    #[arg(long)]
    report_only: bool,
}

pub fn run(ctx: &mut Ctx, args: VmTestArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask vm-test builds a root filesystem (debootstrap, chroot) and runs the \
             privileged tests natively: run it as root"
        );
    }
    if args.update_readme && !args.tests.is_empty() {
        bail!("--update-readme takes the whole suite's results: drop --tests");
    }
    let started = Instant::now();
    if args.report_only {
        return report_only(ctx, &args);
    }
    setup(ctx)?;
    ensure_tracefs();
    ensure_apt_packages(
        ctx,
        &[
            ("debootstrap", "debootstrap"),
            ("qemu-system-x86_64", "qemu-system-x86"),
            ("mkfs.ext4", "e2fsprogs"),
            ("curl", "curl"),
        ],
    )?;
    let (accel, why) = args.accel.choose();
    say(format!("accelerator {accel:?}: {why}"));
    let selected: Vec<&Kernel> = if args.kernels.is_empty() {
        KERNELS.iter().collect()
    } else {
        args.kernels.clone()
    };

    let vm_dir = ctx.root.join("target/vm");
    let out_dir = ctx.root.join("target/vm-test");
    fs::create_dir_all(&out_dir)?;
    let input_dir = out_dir.join("input");
    stage_input(ctx, &input_dir, args.bench)?;
    fs::write(input_dir.join("only.txt"), args.tests.join("\n"))?;

    let mut unpacked = Vec::new();
    for kernel in &selected {
        unpacked.push(kernels::fetch(kernel, &vm_dir)?);
    }
    let (image, bootable) = rootfs::prepare(&vm_dir, &unpacked)?;

    let mut runs = Vec::new();
    if !args.no_host {
        runs.push(run_host(&input_dir, &out_dir.join("host"))?);
    }
    write_skip_list(&input_dir, &NOT_IN_VMS)?;
    let input_tar = out_dir.join("input.tar");
    qemu::input_tar(&input_tar, &dir_files(&input_dir)?)?;
    for ((kernel, unpacked), bootable) in selected.iter().zip(&unpacked).zip(&bootable) {
        let results = out_dir.join(kernel.name);
        if results.exists() {
            fs::remove_dir_all(&results)?;
        }
        let boot = Boot {
            kernel: bootable,
            image: &image,
            input: &input_tar,
            accel,
            timeout: Duration::from_secs(args.timeout * 60),
            results: &results,
        };
        let mut run = KernelRun {
            name: kernel.name.to_owned(),
            users: kernel.users.to_owned(),
            package: Some(unpacked.version.clone()),
            how: format!("{accel:?}").to_uppercase(),
            skipped_tests: skip_notes(&NOT_IN_VMS),
            known: matrix::known_failures(kernel.name),
            ..KernelRun::default()
        };
        match boot.run() {
            Ok(took) => {
                run.took = Some(took);
                run = run.read(&results);
            }
            Err(err) => run.error = Some(format!("{err:#}")),
        }
        report_verdict(&format!("kernel {}", kernel.name), &run);
        runs.push(run);
    }

    finish(ctx, &args, &runs, started)
}

/// The matrix from results already on disk.
fn report_only(ctx: &Ctx, args: &VmTestArgs) -> Result<()> {
    let out_dir = ctx.root.join("target/vm-test");
    let mut runs = Vec::new();
    let host = out_dir.join("host");
    if !args.no_host && host.join("facts.env").exists() {
        runs.push(host_run().read(&host));
    }
    let selected: Vec<&Kernel> = if args.kernels.is_empty() {
        KERNELS.iter().collect()
    } else {
        args.kernels.clone()
    };
    for kernel in selected {
        let results = out_dir.join(kernel.name);
        let mut run = KernelRun {
            name: kernel.name.to_owned(),
            users: kernel.users.to_owned(),
            how: "TCG".into(),
            skipped_tests: skip_notes(&NOT_IN_VMS),
            known: matrix::known_failures(kernel.name),
            ..KernelRun::default()
        };
        if results.join("facts.env").exists() {
            run = run.read(&results);
            let release = run.facts.get("release").cloned().unwrap_or_default();
            run.package = fs::read_to_string(
                ctx.root
                    .join("target/vm/kernels")
                    .join(release)
                    .join(".version"),
            )
            .ok();
        } else {
            run.error = Some("not run in this run (no results in target/vm-test)".into());
        }
        runs.push(run);
    }
    finish(ctx, args, &runs, Instant::now())
}

/// Renders, writes and prints the matrix, updates the README if asked, and fails if a kernel
/// did.
fn finish(ctx: &Ctx, args: &VmTestArgs, runs: &[KernelRun], started: Instant) -> Result<()> {
    let out_dir = ctx.root.join("target/vm-test");
    let when = output({
        let mut date = Command::new("date");
        date.args(["-u", "+%Y-%m-%d %H:%M UTC"]);
        date
    })?;
    let command = format!(
        "cargo xtask vm-test{}",
        if args.bench { " --bench" } else { "" }
    );
    let table = matrix::render(runs, when.trim(), &command);
    let path = out_dir.join("matrix.md");
    fs::write(&path, &table)?;
    println!("{table}");
    say(format!(
        "wrote {} ({} kernels in {}s)",
        path.display(),
        runs.len(),
        started.elapsed().as_secs()
    ));
    if args.update_readme {
        let readme_path = ctx.root.join("README.md");
        let readme = fs::read_to_string(&readme_path)?;
        let updated = matrix::splice_readme(&readme, &table).context(
            "README.md has no <!-- kernel-matrix:begin --> … <!-- kernel-matrix:end --> block",
        )?;
        fs::write(&readme_path, updated)?;
        say("README.md's kernel matrix updated");
    }
    let failed: Vec<String> = runs
        .iter()
        .filter(|run| !run.problems().is_empty())
        .map(|run| run.name.clone())
        .collect();
    if !failed.is_empty() {
        bail!(
            "kernel matrix: {} failed (details under ¹ in {})",
            failed.join(", "),
            path.display()
        );
    }
    Ok(())
}

/// One run's verdict on stderr, with what its unexpected failures printed.
fn report_verdict(what: &str, run: &KernelRun) {
    say(format!("{what}: {}", summary_line(run)));
    eprint!("{}", run.unexpected_failure_output(FAILURE_LINES));
}

fn summary_line(run: &KernelRun) -> String {
    let problems = run.problems();
    if problems.is_empty() {
        "pass".into()
    } else {
        format!("FAIL: {}", problems.join("; "))
    }
}

/// The plan natively, on this machine's kernel: its row of the matrix.
fn run_host(input_dir: &Path, results: &Path) -> Result<KernelRun> {
    if results.exists() {
        fs::remove_dir_all(results)?;
    }
    write_skip_list(input_dir, &host_skips())?;
    say("running the plan natively on this machine");
    let started = Instant::now();
    let mut plan = Command::new("sh");
    plan.arg(input_dir.join("plan.sh"))
        .arg(input_dir)
        .arg(results);
    status(plan)?;
    let run = KernelRun {
        took: Some(started.elapsed()),
        ..host_run()
    }
    .read(results);
    report_verdict("this machine", &run);
    Ok(run)
}

/// Tests the native run skips: those of the VMs, and those that need systemd as PID 1.
fn host_skips() -> Vec<(&'static str, &'static str)> {
    let mut skips = NOT_IN_VMS.to_vec();
    skips.push(NOT_ON_THIS_HOST);
    skips
}

/// This machine's row, before its results are read.
fn host_run() -> KernelRun {
    KernelRun {
        name: "this machine".into(),
        users: "the development and CI machines".into(),
        how: "native".into(),
        skipped_tests: skip_notes(&host_skips()),
        ..KernelRun::default()
    }
}

fn skip_notes(skips: &[(&str, &str)]) -> Vec<String> {
    skips
        .iter()
        .map(|(name, why)| format!("`{name}` tests: {why}"))
        .collect()
}

fn write_skip_list(input_dir: &Path, skips: &[(&str, &str)]) -> Result<()> {
    let text: String = skips
        .iter()
        .map(|(name, why)| format!("{name} {why}\n"))
        .collect();
    fs::write(input_dir.join("skip.txt"), text)?;
    Ok(())
}

/// Builds the binaries and lays out what the plan gets: memtrace, memtrace-workload, the
/// privileged test binary, plan.sh, and for `--bench` this xtask and release builds.
fn stage_input(ctx: &Ctx, dir: &Path, bench: bool) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir.join("release"))?;
    build_workspace_bins(ctx)?;
    let debug = ctx.root.join("target/debug");
    for name in ["memtrace", "memtrace-workload"] {
        copy(&debug.join(name), &dir.join(name))?;
    }
    copy(&privileged_test_binary(ctx)?, &dir.join("privileged"))?;
    fs::write(dir.join("plan.sh"), PLAN)?;
    fs::set_permissions(dir.join("plan.sh"), fs::Permissions::from_mode(0o755))?;
    if bench {
        let target = build_release_bins(ctx)?;
        for name in ["memtrace", "bench-faults", "bench-mmap"] {
            copy(&target.join(name), &dir.join("release").join(name))?;
        }
        // The workspace build above may have replaced the running xtask (its path then ends in
        // " (deleted)"): copy the one it built, from the same sources.
        copy(&debug.join("xtask"), &dir.join("xtask"))?;
    }
    Ok(())
}

/// The path cargo built the `privileged` integration test binary at.
fn privileged_test_binary(ctx: &Ctx) -> Result<PathBuf> {
    let mut build = ctx.cmd("cargo");
    build.args([
        "test",
        "-p",
        "memtrace-tests",
        "--test",
        "privileged",
        "--no-run",
        "--message-format=json",
    ]);
    let messages = output(build)?;
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "privileged")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the privileged test binary")
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Every file under `dir`, named relative to it.
fn dir_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)?
                    .to_str()
                    .context("non-UTF-8 file name")?
                    .to_owned();
                files.push((name, path));
            }
        }
    }
    files.sort();
    Ok(files)
}
