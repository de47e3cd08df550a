//! The guests' root filesystem: Debian bookworm by `debootstrap`, systemd as PID 1, every
//! matrix kernel's modules and an initramfs each (Debian's own `mkinitramfs`, run in the
//! chroot), the guest service of `guest/`, packed into an ext4 image that every VM boots
//! read-only (`snapshot=on`: a VM's writes are thrown away when it stops).
use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::kernels::Unpacked;
use crate::{say, status};

/// What the privileged tests and the plan use in the guest: python3 (a test renames a process),
/// iproute2 and util-linux (unshare, setpriv), curl (the daemon smoke run), prometheus and
/// redis-server (the scrape and daemon tests), bpftrace (benchmarks' baseline), zstd (the
/// initramfs of kernels built without gzip support).
const PACKAGES: &str = "systemd-sysv,udev,dbus,kmod,initramfs-tools,zstd,iproute2,procps,\
util-linux,curl,ca-certificates,python3,bpftrace,prometheus,redis-server";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Services of the packages above that would start at boot and take CPU from the tests.
const DISABLED_SERVICES: [&str; 3] = ["prometheus", "prometheus-node-exporter", "redis-server"];

const GUEST_SERVICE: &str = include_str!("guest/memtrace-vm.service");
const GUEST_ENTRY: &str = include_str!("guest/memtrace-vm-guest");

/// A kernel the image can boot: its vmlinuz and the initramfs built for it.
#[derive(Debug)]
pub struct Bootable {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
}

/// The bootable image under `dir` (`rootfs/`, `rootfs.img`, `boot/<release>/`) with `kernels`
/// installed; rebuilt only in the parts whose inputs changed.
pub fn prepare(dir: &Path, kernels: &[Unpacked]) -> Result<(PathBuf, Vec<Bootable>)> {
    let rootfs = dir.join("rootfs");
    let recipe = format!("{SUITE} {PACKAGES}\n{GUEST_SERVICE}\n{GUEST_ENTRY}");
    let recipe_file = dir.join("rootfs.recipe");
    let mut changed = false;
    if fs::read_to_string(&recipe_file).ok().as_deref() != Some(recipe.as_str()) {
        bootstrap(&rootfs)?;
        fs::write(&recipe_file, &recipe)?;
        changed = true;
    }
    let mut bootable = Vec::new();
    for kernel in kernels {
        let boot = dir.join("boot").join(&kernel.release);
        let stamp = boot.join(".version");
        if fs::read_to_string(&stamp).ok().as_deref() != Some(kernel.version.as_str()) || changed {
            install_kernel(&rootfs, kernel, &boot)?;
            fs::write(&stamp, &kernel.version)?;
            changed = true;
        }
        bootable.push(Bootable {
            release: kernel.release.clone(),
            vmlinuz: boot.join("vmlinuz"),
            initrd: boot.join("initrd.img"),
        });
    }
    let image = dir.join("rootfs.img");
    if changed || !image.exists() {
        say(format!(
            "packing {} into {}",
            rootfs.display(),
            image.display()
        ));
        let _ = fs::remove_file(&image);
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-L", "memtrace-vm", "-d"])
            .arg(&rootfs)
            .arg(&image)
            .arg("4G");
        status(mkfs)?;
    }
    Ok((image, bootable))
}

fn bootstrap(rootfs: &Path) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    say(format!(
        "debootstrap {SUITE} into {} (about a minute)",
        rootfs.display()
    ));
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .args(["--variant=minbase", &format!("--include={PACKAGES}"), SUITE])
        .arg(rootfs)
        .arg(MIRROR);
    status(debootstrap)?;

    for service in DISABLED_SERVICES {
        // Masked: enabled by the packages' postinst, unwanted here. A missing one is fine.
        let _ = symlink(
            "/dev/null",
            rootfs.join(format!("etc/systemd/system/{service}.service")),
        );
    }
    write(rootfs, "etc/hostname", "memtrace-vm\n", 0o644)?;
    write(
        rootfs,
        "etc/fstab",
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
        0o644,
    )?;
    write(
        rootfs,
        "etc/systemd/system/memtrace-vm.service",
        GUEST_SERVICE,
        0o644,
    )?;
    symlink(
        "/etc/systemd/system/memtrace-vm.service",
        rootfs.join("etc/systemd/system/multi-user.target.wants/memtrace-vm.service"),
    )
    .context("enabling memtrace-vm.service")?;
    write(
        rootfs,
        "usr/local/sbin/memtrace-vm-guest",
        GUEST_ENTRY,
        0o755,
    )?;
    // zstd: the newest kernels may be built without gzip initramfs support.
    write(
        rootfs,
        "etc/initramfs-tools/conf.d/memtrace-vm.conf",
        "COMPRESS=zstd\n",
        0o644,
    )?;
    Ok(())
}

/// The kernel's modules and config into the root filesystem, then `depmod` and `mkinitramfs` in
/// the chroot (the initramfs loads virtio_blk to find the root disk).
fn install_kernel(rootfs: &Path, kernel: &Unpacked, boot: &Path) -> Result<()> {
    say(format!(
        "installing kernel {} into the root filesystem",
        kernel.release
    ));
    let modules = rootfs.join("usr/lib/modules").join(&kernel.release);
    if modules.exists() {
        fs::remove_dir_all(&modules)?;
    }
    fs::create_dir_all(modules.parent().context("modules dir")?)?;
    let mut copy = Command::new("cp");
    copy.arg("-a").arg(&kernel.modules).arg(&modules);
    status(copy)?;
    fs::copy(
        &kernel.config,
        rootfs
            .join("boot")
            .join(format!("config-{}", kernel.release)),
    )?;
    let mut depmod = Command::new("chroot");
    depmod.arg(rootfs).args(["depmod", &kernel.release]);
    status(depmod)?;
    let initrd_in_root = format!("/boot/initrd.img-{}", kernel.release);
    let mut mkinitramfs = Command::new("chroot");
    mkinitramfs
        .arg(rootfs)
        .args(["mkinitramfs", "-o", &initrd_in_root, &kernel.release]);
    status(mkinitramfs)?;
    fs::create_dir_all(boot)?;
    fs::copy(&kernel.vmlinuz, boot.join("vmlinuz"))?;
    fs::rename(
        rootfs.join(initrd_in_root.trim_start_matches('/')),
        boot.join("initrd.img"),
    )?;
    Ok(())
}

fn write(rootfs: &Path, path: &str, text: &str, mode: u32) -> Result<()> {
    let path = rootfs.join(path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}
