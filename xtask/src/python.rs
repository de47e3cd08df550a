//! The project's Python tools (the Grafana dashboards' generator and the PNG renderer) run in a
//! virtual environment under the target directory, `target/venv`, holding exactly the pinned
//! packages of requirements files from PyPI: CI starts from a clean clone, so the project installs
//! what its scripts import itself, and nothing lands in the system's Python.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::{Ctx, is_executable, say, status};

/// The venv's interpreter, after creating `target/venv` if needed and installing the packages of
/// each of `requirements` (paths relative to the workspace root). A file's packages are installed
/// again only when the file changed since they were (its text is kept in a stamp in the venv).
pub(crate) fn venv(ctx: &Ctx, requirements: &[&str]) -> Result<PathBuf> {
    let dir = ctx.target_dir().join("venv");
    let python = dir.join("bin/python");
    if !is_executable(&python) {
        say(format!("creating the Python venv {}", dir.display()));
        let mut create = ctx.cmd("python3");
        create.args(["-m", "venv"]).arg(&dir);
        status(create).context(
            "creating a Python venv needs python3 ≥ 3.11 with its venv module (Debian: python3-venv)",
        )?;
    }
    for file in requirements {
        let path = ctx.root.join(file);
        let wanted =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let stamp = dir.join(format!(".installed-{}", file.replace('/', "_")));
        if fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
            say(format!("{file}: installed in {}", dir.display()));
            continue;
        }
        say(format!("{file}: pip install into {}", dir.display()));
        let mut install = ctx.cmd(&python.to_string_lossy());
        install
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-virtualenv",
                "-r",
            ])
            .arg(&path);
        status(install)?;
        fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    }
    Ok(python)
}
