//! Growth sites: sampled page faults and address-space growth by stack. Built by the sites
//! engineer.

pub async fn run(_args: crate::cli::profile::ProfileArgs) -> anyhow::Result<()> {
    anyhow::bail!("memtrace profile is being built (issue 13)")
}
