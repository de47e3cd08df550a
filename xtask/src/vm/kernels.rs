//! The matrix's kernels: Debian's cloud kernels, fetched with apt from each release's own
//! archive (signatures checked against the host's `debian-archive-keyring`) into an apt state of
//! their own under `target/vm/apt/<suite>/`, so the host's sources are never touched.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{output, say, status};

/// Debian's archive (the only registry these machines reach for kernels).
const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One kernel of the matrix.
#[derive(Debug)]
pub struct Kernel {
    /// How the matrix and `--kernels` name it.
    pub name: &'static str,
    /// The Debian suite whose `linux-image-cloud-amd64` is this kernel.
    pub suite: &'static str,
    /// Who runs this series.
    pub users: &'static str,
}

/// Oldest to newest. The cloud flavour: virtio drivers, BTF, kprobes, ftrace, about a third of
/// the generic image's size.
pub const KERNELS: [Kernel; 4] = [
    Kernel {
        name: "5.10",
        suite: "bullseye",
        users: "Debian 11; the oldest packaged here (RHEL 9 is 5.14, Ubuntu 22.04 5.15)",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        users: "Debian 12; the series of Amazon Linux 2023",
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
        users: "Debian 13",
    },
    Kernel {
        name: "7.3",
        suite: "trixie-backports",
        users: "Debian 13 backports: the newest packaged",
    },
];

const META_PACKAGE: &str = "linux-image-cloud-amd64";

pub fn by_name(name: &str) -> Result<&'static Kernel, String> {
    KERNELS
        .iter()
        .find(|k| k.name == name.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = KERNELS.iter().map(|k| k.name).collect();
            format!("unknown kernel `{name}` (one of {})", names.join(", "))
        })
}

/// A kernel unpacked on the host: what the VM boots and what the root filesystem needs.
#[derive(Debug)]
pub struct Unpacked {
    /// `uname -r` of the kernel (`6.1.0-50-cloud-amd64`).
    pub release: String,
    /// The Debian package version (`6.1.176-1`).
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` (modules, modules.order, modules.builtin…).
    pub modules: PathBuf,
    pub config: PathBuf,
}

/// The newest `linux-image-cloud-amd64` of `kernel`'s suite, downloaded (if not already) and
/// unpacked under `dir`.
pub fn fetch(kernel: &Kernel, dir: &Path) -> Result<Unpacked> {
    let apt = Apt::new(&dir.join("apt").join(kernel.suite), kernel.suite)?;
    apt.update()?;
    let image = apt.dependency_named(META_PACKAGE, "linux-image-")?;
    let release = image
        .strip_prefix("linux-image-")
        .context("image package name")?
        .to_owned();
    let version = apt.field(&image, "Version")?;
    let unpack = dir.join("kernels").join(&release);
    let stamp = unpack.join(".version");
    if fs::read_to_string(&stamp).ok().as_deref() != Some(version.as_str()) {
        // Since 7.x the image is split: linux-binary-<release> (vmlinuz), linux-modules-<release>,
        // linux-base-<release> (config, System.map, modules.builtin); earlier ones are whole.
        let mut packages = vec![image.clone()];
        packages.extend(
            depends(&apt.field(&image, "Depends")?)
                .into_iter()
                .filter(|name| name.ends_with(&release) && name.starts_with("linux-")),
        );
        say(format!(
            "kernel {}: downloading {} ({version}) from {} {}",
            kernel.name,
            packages.join(", "),
            MIRROR,
            kernel.suite
        ));
        let debs = apt.download(&packages)?;
        if unpack.exists() {
            fs::remove_dir_all(&unpack)
                .with_context(|| format!("removing {}", unpack.display()))?;
        }
        fs::create_dir_all(&unpack)?;
        for deb in debs {
            let mut x = Command::new("dpkg-deb");
            x.arg("-x").arg(&deb).arg(&unpack);
            status(x)?;
        }
        fs::write(&stamp, &version)?;
    }
    locate(&unpack, release, version)
}

/// Where the unpacked packages put the kernel, its modules and its config (`/boot` or, since
/// 7.x, `/usr/lib/modules/<release>/`; `/lib` or `/usr/lib` for modules).
fn locate(unpack: &Path, release: String, version: String) -> Result<Unpacked> {
    let first = |candidates: &[PathBuf]| candidates.iter().find(|p| p.exists()).cloned();
    let modules = first(&[
        unpack.join("usr/lib/modules").join(&release),
        unpack.join("lib/modules").join(&release),
    ])
    .with_context(|| format!("no modules for {release} in {}", unpack.display()))?;
    let vmlinuz = first(&[
        unpack.join("boot").join(format!("vmlinuz-{release}")),
        modules.join("vmlinuz"),
    ])
    .with_context(|| format!("no vmlinuz for {release} in {}", unpack.display()))?;
    let config = first(&[
        unpack.join("boot").join(format!("config-{release}")),
        modules.join("config"),
    ])
    .with_context(|| format!("no config for {release} in {}", unpack.display()))?;
    Ok(Unpacked {
        release,
        version,
        vmlinuz,
        modules,
        config,
    })
}

/// Package names of a `Depends:` field: alternatives and version constraints dropped.
fn depends(field: &str) -> Vec<String> {
    field
        .split([',', '|'])
        .filter_map(|item| item.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// apt with its own sources, lists and cache (nothing of the host's apt state is read or written).
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(dir: &Path, suite: &str) -> Result<Self> {
        for sub in ["state/lists/partial", "cache/archives/partial", "debs"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        fs::write(
            dir.join("sources.list"),
            format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"),
        )?;
        fs::write(dir.join("status"), "")?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = self.dir.display();
        for option in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            format!("Dir::State={d}/state"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            // Downloads land in our target directory, which apt's _apt user cannot write.
            "APT::Sandbox::User=root".to_owned(),
            "Debug::NoLocking=1".to_owned(),
        ] {
            cmd.arg("-o").arg(option);
        }
        cmd
    }

    fn update(&self) -> Result<()> {
        let mut update = self.cmd("apt-get");
        update.args(["-qq", "update"]);
        status(update)
    }

    /// The dependency of `package` whose name starts with `prefix`.
    fn dependency_named(&self, package: &str, prefix: &str) -> Result<String> {
        let deps = self.field(package, "Depends")?;
        depends(&deps)
            .into_iter()
            .find(|name| name.starts_with(prefix))
            .with_context(|| format!("{package} depends on no {prefix}* package ({deps})"))
    }

    /// A field of the candidate version of `package`.
    fn field(&self, package: &str, name: &str) -> Result<String> {
        let mut show = self.cmd("apt-cache");
        show.args(["show", "--no-all-versions", package]);
        let text = output(show)?;
        let prefix = format!("{name}: ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(str::to_owned)
            .with_context(|| format!("apt-cache show {package}: no {name} field"))
    }

    fn download(&self, packages: &[String]) -> Result<Vec<PathBuf>> {
        let debs = self.dir.join("debs");
        for old in fs::read_dir(&debs)? {
            fs::remove_file(old?.path())?;
        }
        let mut download = self.cmd("apt-get");
        download
            .current_dir(&debs)
            .args(["-qq", "download"])
            .args(packages);
        status(download)?;
        let files: Vec<PathBuf> = fs::read_dir(&debs)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        if files.len() != packages.len() {
            bail!(
                "apt-get download {} left {} files in {}",
                packages.join(" "),
                files.len(),
                debs.display()
            );
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_keeps_names_only() {
        assert_eq!(
            depends(
                "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                 linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), kmod"
            ),
            [
                "dracut",
                "initramfs-tools",
                "linux-initramfs-tool",
                "linux-base-7.3.4+deb13-cloud-amd64",
                "kmod"
            ]
        );
    }

    #[test]
    fn kernels_are_named_uniquely_and_found() {
        for kernel in &KERNELS {
            assert_eq!(by_name(kernel.name).unwrap().suite, kernel.suite);
        }
        assert!(
            by_name("4.19")
                .unwrap_err()
                .contains("5.10, 6.1, 6.12, 7.3")
        );
    }
}
