//! Booting one kernel: qemu with the root image (read-only: `snapshot=on`), a tar of the run's
//! files as a second disk and an empty third disk the guest writes its results to as a tar.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use super::rootfs::Bootable;
use crate::say;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM where it can run distribution kernels, else TCG (see `choose`).
    Auto,
    Kvm,
    /// qemu's emulator, multi-threaded: slow (tests take ~2-3× their native time) but runs
    /// anywhere.
    Tcg,
}

impl Accel {
    /// The accelerator `self` stands for here, and why.
    pub fn choose(self) -> (Accel, &'static str) {
        match self {
            Accel::Auto if Path::new("/sys/module/kvm_pvm").exists() => (
                Accel::Tcg,
                "/dev/kvm is kvm_pvm here, which runs only PVM-enabled guest kernels (a Debian \
                 kernel's decompressor alone crawls for minutes): using TCG",
            ),
            Accel::Auto
                if fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .is_ok() =>
            {
                (Accel::Kvm, "/dev/kvm is usable")
            }
            Accel::Auto => (Accel::Tcg, "no usable /dev/kvm: using TCG"),
            other => (other, "as asked"),
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            // -cpu host without ARCH_CAPABILITIES: nested KVM often refuses that MSR.
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host,-arch-capabilities"],
            // qemu's default CPU model: what the matrix was first run with.
            Accel::Tcg | Accel::Auto => &["-accel", "tcg,thread=multi"],
        }
    }
}

/// One boot of `kernel`, its results extracted into `results`.
pub struct Boot<'a> {
    pub kernel: &'a Bootable,
    pub image: &'a Path,
    /// The tar the guest unpacks into /opt/memtrace.
    pub input: &'a Path,
    pub accel: Accel,
    pub timeout: Duration,
    pub results: &'a Path,
}

impl Boot<'_> {
    /// Boots, waits for the guest to power off (or kills it at the timeout), and unpacks what
    /// it wrote. The console goes to `results/console.log`.
    pub fn run(&self) -> Result<Duration> {
        fs::create_dir_all(self.results)?;
        let output_disk = self.results.with_extension("disk");
        let _ = fs::remove_file(&output_disk);
        fs::File::create(&output_disk)?.set_len(512 << 20)?;
        let console = fs::File::create(self.results.join("console.log"))?;
        let drive = |file: &Path, options: &str| {
            format!("file={},format=raw,if=virtio,{options}", file.display())
        };
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(self.accel.args())
            .args([
                "-smp",
                "2",
                "-m",
                "4G",
                "-nographic",
                "-no-reboot",
                "-net",
                "none",
            ])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&self.kernel.initrd)
            // panic=1 with -no-reboot: a guest kernel panic ends qemu at once instead of hanging
            // until the timeout.
            .args(["-append", "root=/dev/vda rw console=ttyS0 quiet panic=1"])
            // cache=unsafe: flushes to a snapshot overlay hung these guests at shutdown.
            .args(["-drive", &drive(self.image, "snapshot=on,cache=unsafe")])
            .args(["-drive", &drive(self.input, "readonly=on")])
            .args(["-drive", &drive(&output_disk, "cache=unsafe")])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        say(format!(
            "booting {} ({:?}); console in {}",
            self.kernel.release,
            self.accel,
            self.results.join("console.log").display()
        ));
        let started = Instant::now();
        let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
        let exit = loop {
            if let Some(exit) = child.try_wait()? {
                break exit;
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{} did not power off within {:?}: killed (see {})",
                    self.kernel.release,
                    self.timeout,
                    self.results.join("console.log").display()
                );
            }
            thread::sleep(Duration::from_millis(500));
        };
        let took = started.elapsed();
        if !exit.success() {
            bail!(
                "qemu exited with {exit} (see {})",
                self.results.join("console.log").display()
            );
        }
        let mut archive = tar::Archive::new(fs::File::open(&output_disk)?);
        archive.unpack(self.results).with_context(|| {
            format!(
                "unpacking the guest's results from {}",
                output_disk.display()
            )
        })?;
        fs::remove_file(&output_disk)?;
        Ok(took)
    }
}

/// A tar of `files` (name in the archive, path on the host), for the guest's input disk.
pub fn input_tar(path: &Path, files: &[(String, PathBuf)]) -> Result<()> {
    let mut builder = tar::Builder::new(fs::File::create(path)?);
    builder.follow_symlinks(true);
    for (name, source) in files {
        builder
            .append_path_with_name(source, name)
            .with_context(|| format!("adding {} to {}", source.display(), path.display()))?;
    }
    builder.into_inner()?.sync_all()?;
    Ok(())
}
