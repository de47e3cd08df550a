//! Allocator profiling: uprobes on the allocator the process uses. Built by the alloc engineer.

pub async fn run(_args: crate::cli::profile::ProfileArgs) -> anyhow::Result<()> {
    anyhow::bail!("memtrace profile --alloc is being built (issue 13)")
}
