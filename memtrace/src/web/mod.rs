//! HTTP transport shared by the daemon's server side and the fleet clients (`memtrace cluster`):
//! the client options every command that talks to daemons takes.
pub mod client;
