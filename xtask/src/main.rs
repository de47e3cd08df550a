//! `cargo xtask`: set up, build, run and test memtrace on a fresh machine.
//!
//! Every step prints one `xtask: …` line on stderr saying what it found or does. Set-up is
//! idempotent and fast when everything is already present.

use std::{
    env,
    ffi::{OsStr, OsString},
    fs,
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod fuzz;
mod grafana;
mod image;
mod python;
mod vm;

/// Toolchain pinned in `rust-toolchain.toml`; the eBPF crate is built with it.
const TOOLCHAIN: &str = "1.95.0";
/// bpf-linker release known to work with aya 0.14 / aya-ebpf 0.2.1.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM major assumed when the sysroot's libLLVM name does not tell.
const DEFAULT_LLVM_MAJOR: u32 = 22;
const TRACEFS: &str = "/sys/kernel/tracing";
/// Debian packages `cargo xtask test` needs: (binary looked up on PATH, package providing it).
/// redis-server: the real replicas of the three-node cluster test; ip: its network namespaces;
/// podman, setcap, strip: the container test builds the image (`cargo xtask image`) and runs it;
/// runc: the runtime it runs it with (crun refuses a cgroup v1 host whose unified hierarchy holds
/// a controller, as this one's does).
const TEST_APT_PACKAGES: &[(&str, &str)] = &[
    ("promtool", "prometheus"),
    ("redis-server", "redis-server"),
    ("ip", "iproute2"),
    ("podman", "podman"),
    ("runc", "runc"),
    ("setcap", "libcap2-bin"),
    ("strip", "binutils"),
    // `memtrace profile`'s symbolizer and unwinder tests build C fixtures (src/profile/testdata),
    // its privileged tests their programs (tests/programs).
    ("gcc", "gcc"),
    // …and read its pprof output back with pprof's own reader (`go tool pprof`).
    ("go", "golang-go"),
    // `memtrace top` is driven in a real terminal (tests/tests/privileged/top.rs).
    ("tmux", "tmux"),
    // `profile --alloc` (tests/tests/privileged/profile_alloc.rs): a glibc server and Redis's
    // benchmark client (`cargo xtask bench` installs bpftrace, the benchmark's baseline).
    ("memcached", "memcached"),
    ("redis-benchmark", "redis-tools"),
];

/// Developer tasks for memtrace. Run from anywhere inside the workspace.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "Examples:\n  cargo xtask setup\n  cargo xtask build --release\n  \
                  sudo -E cargo xtask run --release -- --help\n  \
                  sudo -E cargo xtask test -- some_test_name -- --nocapture"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building the eBPF programs needs: rust-src and bpf-linker 0.13.0.
    ///
    /// Adds the rust-src component to toolchain 1.95.0 and installs bpf-linker 0.13.0 linked
    /// against that rustc's own libLLVM (into $CARGO_HOME/bin). Does nothing when both are present.
    ///
    /// Example: cargo xtask setup
    Setup,
    /// Set up, then build memtrace (the eBPF object is embedded by memtrace's build script).
    ///
    /// Example: cargo xtask build --release
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, mount tracefs if needed, then exec memtrace with the given arguments.
    ///
    /// The exit status is memtrace's own; Ctrl-C reaches memtrace directly. Loading eBPF
    /// programs needs root.
    ///
    /// Example: sudo -E cargo xtask run --release -- --help
    Run {
        /// Build and run the release binary.
        #[arg(long)]
        release: bool,
        /// Arguments for memtrace (after `--`).
        #[arg(last = true, value_name = "MEMTRACE_ARGS")]
        args: Vec<OsString>,
    },
    /// Everything CI checks: fmt, clippy, then all tests including the privileged ones (as root).
    ///
    /// Runs, stopping at the first failure: `cargo fmt --all -- --check`; promtool on the rules;
    /// `cargo xtask grafana --check` (the dashboards are the generator's output);
    /// `cargo clippy --workspace --exclude memtrace-ebpf --all-targets -- -D warnings`; clippy on
    /// memtrace-common without its `user` feature and on memtrace-ebpf for bpfel-unknown-none (as
    /// aya-build builds it); `cargo test --workspace --exclude memtrace-ebpf [EXTRA]`
    /// (RUST_BACKTRACE=1); `cargo doc --no-deps` of the host crates (RUSTDOCFLAGS=-D warnings). Before that
    /// it runs setup, mounts tracefs and apt-installs missing test tools (prometheus: promtool and the
    /// scrape tests; redis-server and iproute2: the three-node cluster test; podman, runc, libcap2-bin and binutils: the
    /// container image test).
    /// Must run as root: the integration tests load real eBPF programs and fail rather than skip.
    ///
    /// Example: sudo -E cargo xtask test -- lifecycle -- --nocapture
    Test {
        /// Extra arguments for `cargo test` (after `--`): a test name filter, `-p PKG`, `-- --nocapture`.
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        extra: Vec<OsString>,
    },
    /// Run the libFuzzer targets of `fuzz/` (cargo-fuzz), each for a bounded time.
    ///
    /// Installs cargo-fuzz 0.13.2 if missing, builds every target once (ASan, debug assertions,
    /// RUSTC_BOOTSTRAP=1 for cargo-fuzz's `-Z` flags on the pinned toolchain), then runs each from
    /// its kept corpus `fuzz/corpus/<target>` for `--seconds`. New inputs go to a scratch
    /// directory, not the corpus. Fails on the first crash, printing the reproducer
    /// (`fuzz/artifacts/<target>/…`) and the `cargo fuzz run` line that replays it.
    ///
    /// Example: cargo xtask fuzz --seconds 60 --target tracefs_format
    Fuzz(fuzz::FuzzArgs),
    /// Build the OCI image memtrace:<version> here with podman (FROM scratch, non-root, the binary
    /// with file capabilities), from the release build or a given binary, and check it.
    ///
    /// Stages deploy/container/Containerfile's context under target/image/ (the binary, the
    /// shared libraries it links, /etc/passwd and /etc/group with nonroot 65532), builds with
    /// `podman build`, then saves the image as an OCI layout and checks what a registry would get:
    /// the binary's security.capability xattr in its layer, user, entrypoint and labels. Prints
    /// the image's size. Needs root; installs podman, setcap and strip with apt if missing.
    ///
    /// Example: sudo -E cargo xtask image --binary target/debug/memtrace --tag localhost/memtrace:dev
    Image(image::ImageArgs),
    /// Benchmarks (overhead vs untraced and bpftrace, footprint, latency); writes BENCHMARKS.md.
    ///
    /// Example: sudo -E cargo xtask bench --runs 5
    Bench(bench::BenchArgs),
    /// Generate the Grafana dashboards (deploy/grafana/dashboards/*.json) with Grafana's
    /// foundation SDK, pinned in deploy/grafana/requirements.txt and installed into target/venv.
    ///
    /// Examples: cargo xtask grafana; cargo xtask grafana --check;
    /// sudo -E cargo xtask grafana --png
    Grafana(grafana::GrafanaArgs),
    /// The kernel matrix: Debian's kernels 5.10, 6.1, 6.12 and the newest packaged (7.3) booted
    /// under qemu, each running memtrace check, a short trace and daemon, and the privileged
    /// test binary; the same natively on this machine. Prints the README's "Supported kernels"
    /// table.
    ///
    /// Downloads the kernels with apt from each Debian release's archive into an apt state of
    /// its own (target/vm/apt), builds a bookworm root filesystem with debootstrap (systemd as
    /// PID 1; target/vm/rootfs, packed into target/vm/rootfs.img), an initramfs per kernel, and
    /// boots each with the run's binaries on a second disk; results land in
    /// target/vm-test/<kernel>/ and the matrix in target/vm-test/matrix.md. Uses KVM where it
    /// can boot distribution kernels, else TCG (about 5 minutes a kernel). Needs root; installs
    /// debootstrap and qemu-system-x86 with apt if missing. Fails if any kernel fails.
    ///
    /// Examples: sudo -E cargo xtask vm-test; sudo -E cargo xtask vm-test --kernels 6.1 --no-host;
    /// sudo -E cargo xtask vm-test --bench --update-readme
    VmTest(vm::VmTestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    let mut ctx = Ctx::new()?;
    match cmd {
        Cmd::Setup => setup(&mut ctx),
        Cmd::Build { release } => {
            setup(&mut ctx)?;
            build(&ctx, release)
        }
        Cmd::Run { release, args } => {
            setup(&mut ctx)?;
            build(&ctx, release)?;
            ensure_tracefs();
            exec_memtrace(&ctx, release, &args)
        }
        Cmd::Test { extra } => test(&mut ctx, extra),
        Cmd::Bench(args) => bench::run(&mut ctx, args),
        Cmd::Fuzz(args) => fuzz::run(&ctx, args),
        Cmd::Grafana(args) => grafana::run(&ctx, args),
        Cmd::Image(args) => image::run(&mut ctx, args),
        Cmd::VmTest(args) => vm::run(&mut ctx, args),
    }
}

// ---------------------------------------------------------------------------------------------
// Context: workspace root and the PATH handed to every child process.

struct Ctx {
    root: PathBuf,
    cargo_bin: PathBuf,
    /// PATH for children; set-up prepends the directory of the bpf-linker it validated so the
    /// eBPF build (rustc `-C linker=bpf-linker`) finds that one.
    path: OsString,
}

impl Ctx {
    fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let cargo_home = match env::var_os("CARGO_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h),
            _ => home_dir()?.join(".cargo"),
        };
        Ok(Self {
            root,
            cargo_bin: cargo_home.join("bin"),
            path: env::var_os("PATH").unwrap_or_default(),
        })
    }

    /// A command run from the workspace root with our PATH. Programs are looked up on PATH, then
    /// in $CARGO_HOME/bin (where rustup's proxies usually live).
    fn cmd(&self, program: &str) -> Command {
        let resolved = self
            .which(program)
            .unwrap_or_else(|| PathBuf::from(program));
        let mut c = Command::new(resolved);
        c.current_dir(&self.root).env("PATH", &self.path);
        c
    }

    fn which(&self, program: &str) -> Option<PathBuf> {
        env::split_paths(&self.path)
            .chain([self.cargo_bin.clone()])
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }

    fn prepend_path(&mut self, dir: &Path) -> Result<()> {
        let rest = env::split_paths(&self.path).filter(|p| p != dir);
        self.path =
            env::join_paths([dir.to_path_buf()].into_iter().chain(rest)).context("joining PATH")?;
        Ok(())
    }

    fn target_dir(&self) -> PathBuf {
        match env::var_os("CARGO_TARGET_DIR") {
            Some(d) if !d.is_empty() => self.root.join(d), // join keeps an absolute `d` as is
            _ => self.root.join("target"),
        }
    }
}

fn home_dir() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("neither CARGO_HOME nor HOME is set")
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

fn is_root() -> bool {
    // /proc/self is owned by the effective uid of the process looking at it.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("xtask: {}", msg.as_ref());
}

fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `c` with inherited stdio; an error names the command and its exit status.
fn status(mut c: Command) -> Result<()> {
    let shown = show(&c);
    let st = c
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !st.success() {
        bail!("`{shown}` failed ({st})");
    }
    Ok(())
}

/// Runs `c` and returns its stdout; an error includes its stderr.
fn output(mut c: Command) -> Result<String> {
    let shown = show(&c);
    let out = c
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// setup

fn setup(ctx: &mut Ctx) -> Result<()> {
    ensure_rust_src(ctx)?;
    ensure_bpf_linker(ctx)
}

fn ensure_rust_src(ctx: &Ctx) -> Result<()> {
    let mut list = ctx.cmd("rustup");
    list.args(["component", "list", "--toolchain", TOOLCHAIN, "--installed"]);
    let installed = output(list)?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        say(format!("rust-src present for toolchain {TOOLCHAIN}"));
        return Ok(());
    }
    say(format!("installing rust-src for toolchain {TOOLCHAIN}"));
    let mut add = ctx.cmd("rustup");
    add.args(["component", "add", "rust-src", "--toolchain", TOOLCHAIN]);
    status(add)
}

/// The first bpf-linker of the pinned version, in $CARGO_HOME/bin then on PATH.
fn find_bpf_linker(ctx: &Ctx) -> Option<PathBuf> {
    [ctx.cargo_bin.clone()]
        .into_iter()
        .chain(env::split_paths(&ctx.path))
        .map(|d| d.join("bpf-linker"))
        .filter(|p| is_executable(p))
        .find(|p| {
            Command::new(p).arg("--version").output().is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .nth(1)
                        .is_some_and(|v| v == BPF_LINKER_VERSION)
            })
        })
}

fn ensure_bpf_linker(ctx: &mut Ctx) -> Result<()> {
    if let Some(found) = find_bpf_linker(ctx) {
        say(format!(
            "bpf-linker {BPF_LINKER_VERSION} present ({})",
            found.display()
        ));
        return use_bpf_linker(ctx, &found);
    }

    let mut sysroot = ctx.cmd("rustc");
    sysroot.args([&format!("+{TOOLCHAIN}"), "--print", "sysroot"]);
    let lib_dir = PathBuf::from(output(sysroot)?.trim()).join("lib");
    let (lib_name, llvm_major) = find_libllvm(&lib_dir)?;
    say(format!(
        "installing bpf-linker {BPF_LINKER_VERSION} into {} linked against rustc {TOOLCHAIN}'s \
         LLVM {llvm_major} (lib{lib_name}.so) (≈40 s)",
        ctx.cargo_bin.display()
    ));
    let started = Instant::now();
    let lib = lib_dir.display();
    let mut install = ctx.cmd("cargo");
    install
        .args([&format!("+{TOOLCHAIN}"), "install", "bpf-linker"])
        .args([
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{llvm_major},no-llvm-linking")])
        .env(
            "RUSTFLAGS",
            format!("-L native={lib} -l dylib={lib_name} -C link-arg=-Wl,-rpath,{lib}"),
        )
        // Outside the workspace: its .cargo/config.toml and rust-toolchain.toml are irrelevant.
        .current_dir(env::temp_dir());
    status(install)?;

    let found = find_bpf_linker(ctx).with_context(|| {
        format!(
            "bpf-linker {BPF_LINKER_VERSION} still not found after installing (looked in {} and PATH)",
            ctx.cargo_bin.display()
        )
    })?;
    say(format!(
        "bpf-linker {BPF_LINKER_VERSION} installed in {:.0?} ({})",
        started.elapsed(),
        found.display()
    ));
    use_bpf_linker(ctx, &found)
}

/// Put the validated bpf-linker's directory first on the children's PATH.
fn use_bpf_linker(ctx: &mut Ctx, found: &Path) -> Result<()> {
    match found.parent() {
        Some(dir) => ctx.prepend_path(dir),
        None => Ok(()),
    }
}

/// `libLLVM-22-rust-1.95.0-stable.so` in the sysroot lib dir → (`LLVM-22-rust-1.95.0-stable`, 22).
fn find_libllvm(lib_dir: &Path) -> Result<(String, u32)> {
    let entries =
        fs::read_dir(lib_dir).with_context(|| format!("reading {}", lib_dir.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("libLLVM-") && n.contains("-rust-") && n.ends_with(".so"))
        .collect();
    names.sort();
    let Some(file) = names.into_iter().next() else {
        bail!(
            "no libLLVM-*-rust-*.so in {} (is toolchain {TOOLCHAIN} complete?)",
            lib_dir.display()
        );
    };
    let stem = file
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_owned();
    let major = stem
        .strip_prefix("LLVM-")
        .and_then(|r| r.split(['-', '.']).next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(DEFAULT_LLVM_MAJOR);
    Ok((stem, major))
}

// ---------------------------------------------------------------------------------------------
// build / run

fn build(ctx: &Ctx, release: bool) -> Result<()> {
    let mut c = ctx.cmd("cargo");
    c.args(["build", "-p", "memtrace"]);
    if release {
        c.arg("--release");
    }
    say(format!("running `{}`", show_short(&c)));
    status(c)
}

/// Every binary of the workspace (memtrace, the test workloads, xtask), debug: what the
/// privileged tests, the dashboards' check and the kernel matrix run.
fn build_workspace_bins(ctx: &Ctx) -> Result<()> {
    let mut c = ctx.cmd("cargo");
    c.args([
        "build",
        "--workspace",
        "--exclude",
        "memtrace-ebpf",
        "--bins",
    ]);
    status(c)
}

/// Release builds of memtrace and the benchmark workloads, in `target/release`.
fn build_release_bins(ctx: &Ctx) -> Result<PathBuf> {
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
    say("building release binaries: cargo build --release -p memtrace -p memtrace-tests --bins");
    status(c)?;
    Ok(ctx.root.join("target/release"))
}

fn exec_memtrace(ctx: &Ctx, release: bool, args: &[OsString]) -> Result<()> {
    let bin = ctx
        .target_dir()
        .join(if release { "release" } else { "debug" })
        .join("memtrace");
    let mut c = Command::new(&bin);
    c.args(args).env("PATH", &ctx.path);
    say(format!("exec {}", bin.display()));
    // exec replaces this process: memtrace keeps the terminal, gets Ctrl-C itself, and its exit
    // status is the one our caller sees. exec only returns on failure.
    let err = c.exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}

/// Mount tracefs when its events are missing and we may; otherwise leave it to memtrace to report.
fn ensure_tracefs() {
    let events = Path::new(TRACEFS).join("events");
    if events.is_dir() {
        return;
    }
    if !is_root() {
        say(format!(
            "{} missing and not root: not mounting tracefs",
            events.display()
        ));
        return;
    }
    say(format!(
        "mounting tracefs: mount -t tracefs tracefs {TRACEFS}"
    ));
    let mut c = Command::new("mount");
    c.args(["-t", "tracefs", "tracefs", TRACEFS]);
    if let Err(e) = status(c) {
        say(format!("warning: {e:#}"));
    }
}

// ---------------------------------------------------------------------------------------------
// test

/// One check in a pipeline: a cargo invocation with its own environment.
struct Step {
    name: &'static str,
    program: &'static str,
    args: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
}

impl Step {
    fn cargo(name: &'static str, args: &[&str]) -> Self {
        Self::tool(name, "cargo", args)
    }

    fn tool(name: &'static str, program: &'static str, args: &[&str]) -> Self {
        Self {
            name,
            program,
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
        }
    }

    fn arg_all(mut self, extra: impl IntoIterator<Item = OsString>) -> Self {
        self.args.extend(extra);
        self
    }

    fn env(mut self, key: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((key, value.into()));
        self
    }
}

/// Runs the steps in order, stopping at the first failure and naming it.
fn run_steps(ctx: &Ctx, steps: &[Step]) -> Result<()> {
    let n = steps.len();
    for (i, step) in steps.iter().enumerate() {
        let mut c = ctx.cmd(step.program);
        c.args(&step.args);
        for (k, v) in &step.env {
            c.env(k, v);
        }
        say(format!(
            "[{}/{n}] {}: `{}`",
            i + 1,
            step.name,
            show_short(&c)
        ));
        let started = Instant::now();
        status(c).with_context(|| format!("step {}/{n} ({}) failed", i + 1, step.name))?;
        say(format!(
            "[{}/{n}] {} ok ({:.1?})",
            i + 1,
            step.name,
            started.elapsed()
        ));
    }
    Ok(())
}

fn test(ctx: &mut Ctx, extra: Vec<OsString>) -> Result<()> {
    if !is_root() {
        bail!(
            "cargo xtask test loads real eBPF programs: run it as root (privileged tests fail \
             rather than skip)"
        );
    }
    setup(ctx)?;
    ensure_tracefs();
    if !ctx.root.join("tests/Cargo.toml").is_file() {
        say(
            "!!!!!!!! WARNING: tests/Cargo.toml is missing: the privileged integration tests \
             (memtrace-tests) are NOT run !!!!!!!!",
        );
    }
    ensure_apt_packages(ctx, TEST_APT_PACKAGES)?;

    let [check_rules, test_rules] = prometheus_rules_steps(ctx)?;
    let steps = [
        Step::cargo("fmt", &["fmt", "--all", "--", "--check"]),
        check_rules,
        test_rules,
        // The committed dashboards are the generator's output and round-trip through Grafana's
        // dashboard model (the SDK's Python venv, target/venv).
        Step::cargo(
            "grafana dashboards",
            &["run", "--quiet", "-p", "xtask", "--", "grafana", "--check"],
        ),
        Step::cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "memtrace-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        // The workspace step sees memtrace-common only with `user` (memtrace enables it); the
        // eBPF crate uses it without.
        Step::cargo(
            "clippy memtrace-common without `user`",
            &[
                "clippy",
                "-p",
                "memtrace-common",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ebpf_clippy_step(),
        // The privileged tests run the `memtrace` and workload binaries as a user would; `cargo
        // test` alone does not rebuild another package's binaries, so build them all first.
        Step::cargo(
            "build",
            &[
                "build",
                "--workspace",
                "--exclude",
                "memtrace-ebpf",
                "--bins",
            ],
        ),
        Step::cargo(
            "test",
            &["test", "--workspace", "--exclude", "memtrace-ebpf"],
        )
        .arg_all(extra)
        .env("RUST_BACKTRACE", "1"),
        // Broken intra-doc links and stray HTML in doc comments; last, so a doc slip does not
        // hide the tests' verdict.
        Step::cargo(
            "doc",
            &[
                "doc",
                "--no-deps",
                "-p",
                "memtrace",
                "-p",
                "memtrace-api",
                "-p",
                "memtrace-common",
            ],
        )
        .env("RUSTDOCFLAGS", "-D warnings"),
    ];
    run_steps(ctx, &steps)?;
    say("all checks passed");
    Ok(())
}

/// `promtool check rules` on the Prometheus rules of `deploy/prometheus/` and `promtool test rules`
/// on their unit tests (`deploy/prometheus/tests/*.yml`).
fn prometheus_rules_steps(ctx: &Ctx) -> Result<[Step; 2]> {
    const RULES: &str = "deploy/prometheus/memtrace-rules.yml";
    let mut tests: Vec<OsString> = fs::read_dir(ctx.root.join("deploy/prometheus/tests"))
        .context("reading deploy/prometheus/tests")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .context("reading deploy/prometheus/tests")?
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .map(OsString::from)
        .collect();
    if tests.is_empty() {
        bail!("no promtool unit tests in deploy/prometheus/tests");
    }
    tests.sort();
    Ok([
        Step::tool(
            "promtool check rules",
            "promtool",
            &["check", "rules", RULES],
        ),
        Step::tool("promtool test rules", "promtool", &["test", "rules"]).arg_all(tests),
    ])
}

/// Clippy on `memtrace-ebpf` for its real target, invoked as `memtrace/build.rs` builds it through
/// aya-build 0.2: `-Z build-std=core` with `RUSTC_BOOTSTRAP=1` on the pinned stable toolchain, the
/// release profile, and aya-build's `CARGO_ENCODED_RUSTFLAGS` (the `bpf_target_arch` cfg of the
/// host, whose kernel the programs target, plus its debuginfo and BTF link flags).
fn ebpf_clippy_step() -> Step {
    // aya-build names riscv64 targets `riscv64` whatever their suffix; Rust's ARCH already does.
    let arch = env::consts::ARCH;
    let rustflags =
        format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf");
    Step::cargo(
        "clippy memtrace-ebpf (bpfel)",
        &[
            "clippy",
            "-p",
            "memtrace-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    )
    .env("RUSTC_BOOTSTRAP", "1")
    .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
}

/// Installs the Debian packages whose binaries are missing from PATH: `(binary, package)` pairs.
/// Runs `apt-get update` once, only when something is missing. Without apt-get it only warns.
fn ensure_apt_packages(ctx: &Ctx, wanted: &[(&str, &str)]) -> Result<()> {
    let mut missing = Vec::new();
    for &(binary, package) in wanted {
        match ctx.which(binary) {
            Some(p) => say(format!("{binary} present ({})", p.display())),
            None => missing.push(package),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if ctx.which("apt-get").is_none() {
        say(format!(
            "warning: missing {} and no apt-get to install it: tests needing it will fail",
            missing.join(", ")
        ));
        return Ok(());
    }
    say(format!(
        "installing Debian packages: {} (apt-get update + install)",
        missing.join(" ")
    ));
    let mut update = ctx.cmd("apt-get");
    update
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    status(update)?;
    let mut install = ctx.cmd("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    status(install)
}

/// The command line with the program shown by name only (`cargo …`, not its full path).
fn show_short(c: &Command) -> String {
    let full = show(c);
    let program = c.get_program();
    let name = Path::new(program)
        .file_name()
        .unwrap_or(OsStr::new("?"))
        .to_string_lossy();
    format!("{name}{}", &full[program.to_string_lossy().len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libllvm_name_and_major() -> Result<()> {
        let dir = env::temp_dir().join(format!("xtask-libllvm-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        for f in [
            "libLLVM.so.21.1-rust-1.9.0-stable",
            "librustc_driver-x.so",
            "libLLVM-21-rust-1.9.0-stable.so",
        ] {
            fs::write(dir.join(f), [])?;
        }
        let found = find_libllvm(&dir);
        fs::remove_dir_all(&dir)?;
        assert_eq!(found?, ("LLVM-21-rust-1.9.0-stable".to_owned(), 21));
        Ok(())
    }

    #[test]
    fn libllvm_missing_is_an_error() {
        assert!(find_libllvm(Path::new("/nonexistent-xtask-dir")).is_err());
    }

    /// The `cargo xtask test` steps over `deploy/prometheus/`, run as that command runs them.
    #[test]
    fn prometheus_rules_pass_promtool() -> Result<()> {
        let ctx = Ctx::new()?;
        run_steps(&ctx, &prometheus_rules_steps(&ctx)?)
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["cargo xtask", "run", "--release", "--", "--pid", "1"]);
        assert!(matches!(cli.command, Cmd::Run { release: true, ref args } if args.len() == 2));
    }
}
