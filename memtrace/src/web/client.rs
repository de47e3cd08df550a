//! The HTTP client of the commands that talk to daemons (`memtrace cluster`).
//!
//! reqwest (rustls, gzip): a well-kept client that already does what a fan-out needs — connection
//! pooling, per-request timeouts, transparent gzip, TLS with a custom CA and client certificates —
//! so none of it is hand-written here.
use std::time::Duration;

use clap::Args;

/// Client options (shared by every subcommand that talks to daemons).
#[derive(Args, Clone, Debug, Default)]
pub struct ClientOptions {}

impl ClientOptions {
    /// A client whose every request gives up after `timeout`.
    pub fn build(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .gzip(true)
            .user_agent(concat!("memtrace/", env!("CARGO_PKG_VERSION")))
            .build()
    }
}
