//! HTTP transport shared by the daemon's server side and the fleet clients (`memtrace cluster`):
//! the client options every command that talks to daemons takes, and the web config
//! (`--web-config-file`: TLS, basic authentication, headers) servers apply.
pub mod client;
pub mod config;
pub mod server;
pub mod tls;

#[cfg(test)]
pub(crate) mod tests;
