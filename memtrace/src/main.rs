use std::process::ExitCode;

fn main() -> ExitCode {
    match memtrace::cli::parse() {
        Ok(cli) => memtrace::cli::run(cli),
        Err(code) => code,
    }
}
