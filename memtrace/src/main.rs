use std::process::ExitCode;

fn main() -> ExitCode {
    raise_file_capabilities();
    match memtrace::cli::parse() {
        Ok(cli) => memtrace::cli::run(cli),
        Err(code) => code,
    }
}

/// The container image's binary carries its capabilities permitted-only (`+p`, see
/// deploy/container/README.md): with `+ep` the kernel refuses to exec it wherever the bounding
/// set lacks one of them (the `cluster serve` Deployment, `podman run … --version`). Where they
/// were granted they are raised here, before any thread exists: threads inherit this one's
/// effective set. A failure is left to the probes, which name the capability they miss.
fn raise_file_capabilities() {
    if let Ok(permitted) = caps::read(None, caps::CapSet::Permitted) {
        let _ = caps::set(None, caps::CapSet::Effective, &permitted);
    }
}
