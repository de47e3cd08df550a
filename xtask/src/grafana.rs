//! `cargo xtask grafana`: the Grafana dashboards of `deploy/grafana/`, generated with Grafana's
//! foundation SDK (`deploy/grafana/generate.py`), checked, and one rendered to a PNG for the docs.

use std::ffi::OsString;

use anyhow::{Result, bail};

use crate::{Ctx, is_root, python, say, status};

const GENERATOR: &str = "deploy/grafana/generate.py";
const REQUIREMENTS: &str = "deploy/grafana/requirements.txt";
const RENDER_REQUIREMENTS: &str = "deploy/grafana/requirements-render.txt";
/// Where `--png` writes the Node dashboard's picture.
const PNG: &str = "docs/grafana-node.png";

#[derive(clap::Args)]
pub(crate) struct GrafanaArgs {
    /// Do not write: fail if deploy/grafana/dashboards/*.json differ from the generator's output
    /// or do not round-trip through Grafana's dashboard model (what `cargo xtask test` runs).
    #[arg(long)]
    check: bool,
    /// Render the Node dashboard's panels to docs/grafana-node.png: runs the privileged test
    /// `grafana` (root; real daemons, workloads, an OOM kill and a Prometheus, ~2 min), which
    /// plots its query results with matplotlib.
    #[arg(long, conflicts_with = "check")]
    png: bool,
}

pub(crate) fn run(ctx: &Ctx, args: GrafanaArgs) -> Result<()> {
    if args.png {
        return png(ctx);
    }
    let python = python::venv(ctx, &[REQUIREMENTS])?;
    let mut generate = ctx.cmd(&python.to_string_lossy());
    generate.arg(ctx.root.join(GENERATOR));
    if args.check {
        generate.arg("--check");
    }
    status(generate)
}

fn png(ctx: &Ctx) -> Result<()> {
    if !is_root() {
        bail!("--png runs a privileged test (real eBPF programs and cgroups): run it as root");
    }
    let python = python::venv(ctx, &[REQUIREMENTS, RENDER_REQUIREMENTS])?;
    crate::build_workspace_bins(ctx)?;
    let out = ctx.root.join(PNG);
    let mut test = ctx.cmd("cargo");
    test.args([
        "test",
        "-p",
        "memtrace-tests",
        "--test",
        "privileged",
        "--",
        "grafana::",
        "--nocapture",
    ])
    .env("MEMTRACE_GRAFANA_PNG", &out)
    .env("MEMTRACE_PYTHON", OsString::from(&python));
    status(test)?;
    say(format!("wrote {}", out.display()));
    Ok(())
}
