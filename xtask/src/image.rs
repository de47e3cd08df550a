//! `cargo xtask image`: the OCI image `memtrace:<workspace version>`, built here with podman from
//! `deploy/container/Containerfile`, FROM scratch.
//!
//! The image holds the glibc binary and exactly the shared libraries it links, copied from the
//! build host, rather than a static musl binary: musl's allocator is known to be much slower than
//! glibc's for multithreaded, allocation-heavy programs like the daemon (snapshots and expositions
//! built and dropped every scrape), the libraries add 3.1 MiB, and the image can be built from
//! the binary `cargo xtask test` has already built (a musl build would be a second full build of
//! every dependency and of the eBPF object, minutes in CI). A static binary is taken as it is (`ldd` lists nothing to copy).
//!
//! The binary carries the file capabilities the daemon loads its probes with; they are written on
//! the staged copy, and checked afterwards in the image as a registry would receive it (the
//! `security.capability` PAX record of its layer), not assumed to survive the build.
use std::{
    env,
    fs::{self, File},
    io::{self, BufReader, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{Ctx, build, ensure_apt_packages, output, say, setup, status};

/// Debian packages the image build needs: (binary looked up on PATH, package providing it).
pub const IMAGE_APT_PACKAGES: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("setcap", "libcap2-bin"),
    ("strip", "binutils"),
];

const CONTAINERFILE: &str = "deploy/container/Containerfile";
/// Where the binary is in the image (the Containerfile's ENTRYPOINT).
const BINARY_IN_IMAGE: &str = "usr/bin/memtrace";
/// The image's user, as distroless names it: uid and gid 65532 `nonroot`.
pub const NONROOT: u32 = 65532;
/// What the daemon needs to load and attach its probes (see deploy/container/README.md).
/// Permitted only: with the effective bit the kernel refuses to exec the binary wherever the
/// bounding set lacks one of them (EPERM, even for `--version` or `cluster serve`); memtrace
/// raises them into its effective set itself at start.
const FILE_CAPABILITIES: &str = "cap_bpf,cap_perfmon,cap_dac_read_search+p";
/// The same as capability numbers (linux/capability.h): DAC_READ_SEARCH 2, PERFMON 38, BPF 39.
const FILE_CAPABILITY_MASK: u64 = 1 << 2 | 1 << 38 | 1 << 39;

/// Build the OCI image `memtrace:<version>` locally with podman (no registry involved).
#[derive(clap::Args)]
#[command(after_help = "\
What goes into the image (deploy/container/Containerfile, FROM scratch):
  /usr/bin/memtrace   the binary, debug info stripped, with the file capabilities
                      cap_bpf,cap_perfmon,cap_dac_read_search+p (raised by memtrace)
  /lib*/…             exactly the shared libraries `ldd` lists for it (glibc), from this host
  /etc/passwd, group  root and nonroot (65532); the image runs as USER 65532:65532
  /var/lib/memtrace   the daemon's --state-dir, owned by nonroot
ENTRYPOINT memtrace, CMD daemon; OCI labels version, source, licenses.

After the build the image is checked: the binary's capability xattr as its layer carries it,
the users, the labels. Its size is printed. Needs root (podman's storage in
/var/lib/containers); podman, setcap and strip are apt-installed when missing.

Examples:
  sudo -E cargo xtask image                                  release build, memtrace:<version>
  sudo -E cargo xtask image --binary target/debug/memtrace --tag localhost/memtrace:dev
  sudo podman run --rm memtrace:<version> --version")]
pub struct ImageArgs {
    /// Put this already-built memtrace binary in the image instead of building the release one
    /// (e.g. target/debug/memtrace: a test's image without a release build). Its debug info is
    /// stripped from the copy.
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Image name and tag [default: memtrace:<workspace version>].
    #[arg(long, value_name = "NAME:TAG")]
    tag: Option<String>,
}

pub fn run(ctx: &mut Ctx, args: ImageArgs) -> Result<()> {
    ensure!(
        crate::is_root(),
        "cargo xtask image builds with rootful podman (and sets file capabilities): run it as root"
    );
    ensure_apt_packages(ctx, IMAGE_APT_PACKAGES)?;
    let binary = match args.binary {
        Some(path) => env::current_dir().context("current directory")?.join(path),
        None => {
            setup(ctx)?;
            build(ctx, true)?;
            ctx.target_dir().join("release/memtrace")
        }
    };
    ensure!(
        binary.is_file(),
        "{} is not a built memtrace binary",
        binary.display()
    );
    let tag = args.tag.unwrap_or_else(default_tag);
    let image_dir = ctx.target_dir().join("image");
    let context = image_dir.join("context");
    let libraries = stage(ctx, &binary, &context)?;
    say(format!(
        "staged {} with {} (+ {}) in {}",
        binary.display(),
        FILE_CAPABILITIES,
        if libraries.is_empty() {
            "no shared libraries: static".to_owned()
        } else {
            libraries.join(", ")
        },
        context.display()
    ));

    let mut podman = ctx.cmd("podman");
    podman
        .args(["build", "--quiet", "--file"])
        .arg(ctx.root.join(CONTAINERFILE))
        .args(["--tag", &tag])
        .args([
            "--build-arg",
            &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
        ])
        .args([
            "--build-arg",
            &format!("SOURCE={}", env!("CARGO_PKG_REPOSITORY")),
        ])
        .args([
            "--build-arg",
            &format!("LICENSES={}", env!("CARGO_PKG_LICENSE")),
        ])
        .arg(&context);
    say(format!("building {tag} with podman from {CONTAINERFILE}"));
    let id = output(podman)?;

    let checked = check_saved_image(ctx, &tag, &image_dir.join("saved"))?;
    let mut inspect = ctx.cmd("podman");
    inspect.args(["image", "inspect", "--format", "{{.Size}}", &tag]);
    let unpacked: u64 = output(inspect)?
        .trim()
        .parse()
        .context("podman image inspect: size")?;
    say(format!(
        "built {tag} (image {}): {:.1} MiB, {:.1} MiB compressed; /{BINARY_IN_IMAGE} carries {} in its layer; user \
         {NONROOT}, labels {}",
        id.trim().get(..12).unwrap_or(id.trim()),
        mib(unpacked),
        mib(checked.bytes),
        FILE_CAPABILITIES,
        checked.labels.join(", ")
    ));
    Ok(())
}

/// `memtrace:<workspace version>`, the name the DaemonSet runs.
pub fn default_tag() -> String {
    format!("memtrace:{}", env!("CARGO_PKG_VERSION"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Writes the build context the Containerfile expects into `context` (emptied first); returns
/// the shared libraries copied.
fn stage(ctx: &Ctx, binary: &Path, context: &Path) -> Result<Vec<String>> {
    if context.exists() {
        fs::remove_dir_all(context).with_context(|| format!("emptying {}", context.display()))?;
    }
    let rootfs = context.join("rootfs");
    let staged = rootfs.join(BINARY_IN_IMAGE);
    for dir in [staged.parent().context("binary path")?, &rootfs.join("etc")] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::create_dir_all(context.join("state")).context("creating the state directory")?;

    // Debug info is most of a debug build (250 MiB of 290); symbols stay, for backtraces.
    let mut strip = ctx.cmd("strip");
    strip
        .arg("--strip-debug")
        .arg("-o")
        .arg(&staged)
        .arg(binary);
    status(strip)?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755))?;

    let libraries = shared_libraries(ctx, &staged)?;
    for library in &libraries {
        let inside = rootfs.join(library.trim_start_matches('/'));
        fs::create_dir_all(inside.parent().context("library path")?)?;
        // The file itself, not a symlink: the image has no other copy to point at.
        fs::copy(library, &inside).with_context(|| format!("copying {library} into the image"))?;
    }

    fs::write(
        rootfs.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nonroot:x:{NONROOT}:{NONROOT}:nonroot:/nonexistent:/sbin/nologin\n"
        ),
    )?;
    fs::write(
        rootfs.join("etc/group"),
        format!("root:x:0:\nnonroot:x:{NONROOT}:\n"),
    )?;

    let mut setcap = ctx.cmd("setcap");
    setcap.arg(FILE_CAPABILITIES).arg(&staged);
    status(setcap)?;
    Ok(libraries)
}

/// What the dynamic loader maps for `binary` (its `ldd` paths, the loader included); empty for
/// a static binary.
fn shared_libraries(ctx: &Ctx, binary: &Path) -> Result<Vec<String>> {
    let mut ldd = ctx.cmd("ldd");
    ldd.arg(binary);
    let listed = match ldd.output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        // glibc's ldd exits 1 on a static binary ("not a dynamic executable").
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable") => {
            return Ok(Vec::new());
        }
        Ok(out) => bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => return Err(err).context("running ldd"),
    };
    parse_ldd(&listed)
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`
/// give their paths; the vDSO is the kernel's.
fn parse_ldd(listed: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in listed.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            return Ok(Vec::new());
        }
        let resolved = match line.split_once("=>") {
            Some((name, rest)) => {
                let path = rest.split_whitespace().next().unwrap_or("");
                if path == "not" {
                    bail!("ldd: {} not found on this host", name.trim());
                }
                path
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if resolved.starts_with('/') {
            paths.push(resolved.to_owned());
        }
    }
    Ok(paths)
}

/// What [`check_saved_image`] found.
struct SavedImage {
    /// Its layers' compressed size.
    bytes: u64,
    labels: Vec<String>,
}

/// Saves `tag` as an OCI layout under `dir` (as it would be pushed) and checks it: the binary's
/// capability xattr in its layer, the users, the user, entrypoint and labels in its config.
fn check_saved_image(ctx: &Ctx, tag: &str, dir: &Path) -> Result<SavedImage> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let mut save = ctx.cmd("podman");
    save.args(["save", "--quiet", "--format", "oci-dir", "--output"])
        .arg(dir)
        .arg(tag);
    status(save)?;
    let blob = |digest: &str| -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .with_context(|| format!("unexpected digest {digest}"))?;
        Ok(dir.join("blobs/sha256").join(hex))
    };
    let json = |path: &Path| -> Result<serde_json::Value> {
        serde_json::from_slice(&fs::read(path).with_context(|| format!("{}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))
    };
    let index = json(&dir.join("index.json"))?;
    let manifest = json(&blob(
        index["manifests"][0]["digest"]
            .as_str()
            .context("index.json without a manifest")?,
    )?)?;
    let config = json(&blob(
        manifest["config"]["digest"]
            .as_str()
            .context("manifest without a config")?,
    )?)?;
    let image_config = &config["config"];
    ensure!(
        image_config["User"] == format!("{NONROOT}:{NONROOT}").as_str(),
        "image user is {}, not {NONROOT}:{NONROOT}",
        image_config["User"]
    );
    ensure!(
        image_config["Entrypoint"] == serde_json::json!([format!("/{BINARY_IN_IMAGE}")])
            && image_config["Cmd"] == serde_json::json!(["daemon"]),
        "entrypoint {} cmd {}",
        image_config["Entrypoint"],
        image_config["Cmd"]
    );
    let mut labels = Vec::new();
    for (key, expected) in [
        ("version", env!("CARGO_PKG_VERSION")),
        ("source", env!("CARGO_PKG_REPOSITORY")),
        ("licenses", env!("CARGO_PKG_LICENSE")),
    ] {
        let label = format!("org.opencontainers.image.{key}");
        ensure!(
            image_config["Labels"][&label] == expected,
            "label {label} is {}, not {expected}",
            image_config["Labels"][&label]
        );
        labels.push(format!("{label}={expected}"));
    }

    let mut found = Layers::default();
    // As podman saves them, gzip-compressed: the size a registry stores and a node pulls.
    let mut bytes = 0;
    for layer in manifest["layers"].as_array().context("manifest layers")? {
        let path = blob(layer["digest"].as_str().context("layer digest")?)?;
        found.read(&path)?;
        bytes += layer["size"].as_u64().context("layer size")?;
    }
    let capability = found.capability.with_context(|| {
        format!("/{BINARY_IN_IMAGE} is in no layer, or carries no security.capability xattr")
    })?;
    let (effective, permitted, inheritable) = decode_file_capability(&capability)?;
    ensure!(
        !effective && permitted == FILE_CAPABILITY_MASK && inheritable == 0,
        "/{BINARY_IN_IMAGE} carries the wrong file capabilities in its layer: effective \
         {effective}, permitted {permitted:#x}, inheritable {inheritable:#x} (want +p \
         {FILE_CAPABILITY_MASK:#x})"
    );
    for (file, user) in [
        ("etc/passwd", "nonroot:x:65532:65532:"),
        ("etc/group", "nonroot:x:65532:"),
    ] {
        ensure!(
            found
                .users
                .iter()
                .any(|(f, text)| f == file && text.contains(user)),
            "/{file} of the image has no {user}"
        );
    }
    Ok(SavedImage { bytes, labels })
}

/// What the layers of a saved image hold that the check looks at.
#[derive(Default)]
struct Layers {
    capability: Option<Vec<u8>>,
    users: Vec<(String, String)>,
}

impl Layers {
    /// One layer tar (gzip-compressed or not, as podman saved it).
    fn read(&mut self, path: &Path) -> Result<()> {
        let mut file = BufReader::new(File::open(path)?);
        let mut magic = [0; 2];
        file.read_exact(&mut magic)?;
        let file = BufReader::new(File::open(path)?);
        let tar: Box<dyn io::Read> = if magic == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut archive = tar::Archive::new(tar);
        for entry in archive
            .entries()
            .with_context(|| format!("{}", path.display()))?
        {
            let mut entry = entry.with_context(|| format!("{}", path.display()))?;
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            if name == BINARY_IN_IMAGE
                && let Some(records) = entry.pax_extensions()?
            {
                for record in records {
                    let record = record?;
                    if record.key_bytes() == b"SCHILY.xattr.security.capability" {
                        self.capability = Some(record.value_bytes().to_vec());
                    }
                }
            }
            if name == "etc/passwd" || name == "etc/group" {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                self.users.push((name, text));
            }
        }
        Ok(())
    }
}

/// `struct vfs_cap_data` (linux/capability.h), revision 2 (revision 3, written in a user
/// namespace, names that namespace's root and grants nothing elsewhere): (effective flag,
/// permitted, inheritable).
fn decode_file_capability(xattr: &[u8]) -> Result<(bool, u64, u64)> {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
    const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x1;
    let word = |i: usize| -> Result<u32> {
        let bytes = xattr
            .get(i * 4..i * 4 + 4)
            .context("security.capability xattr too short")?;
        Ok(u32::from_le_bytes(bytes.try_into()?))
    };
    let magic = word(0)?;
    ensure!(
        magic & VFS_CAP_REVISION_MASK == VFS_CAP_REVISION_2 && xattr.len() == 20,
        "security.capability is not revision 2 (magic {magic:#x}, {} bytes): set it as real root, \
         not in a user namespace",
        xattr.len()
    );
    let permitted = u64::from(word(1)?) | u64::from(word(3)?) << 32;
    let inheritable = u64::from(word(2)?) | u64::from(word(4)?) << 32;
    Ok((magic & VFS_CAP_FLAGS_EFFECTIVE != 0, permitted, inheritable))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_include_the_loader_not_the_vdso() -> Result<()> {
        let listed = "\tlinux-vdso.so.1 (0x00007ffd)\n\
             \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f46)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f46)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f46)\n";
        assert_eq!(
            parse_ldd(listed)?,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tstatically linked\n")?.is_empty());
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        Ok(())
    }

    #[test]
    fn file_capability_revision_2_decodes_and_revision_3_is_refused() -> Result<()> {
        // What `setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep` writes; `+p` lacks the 0x01.
        let mut v2 = [
            0x01, 0, 0, 0x02, 0x04, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            decode_file_capability(&v2)?,
            (true, FILE_CAPABILITY_MASK, 0)
        );
        v2[0] = 0;
        assert_eq!(
            decode_file_capability(&v2)?,
            (false, FILE_CAPABILITY_MASK, 0)
        );
        let mut v3 = v2.to_vec();
        v3[3] = 0x03;
        v3.extend([0; 4]);
        assert!(decode_file_capability(&v3).is_err());
        Ok(())
    }
}
