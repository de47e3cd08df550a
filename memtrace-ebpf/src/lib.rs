#![no_std]
#![warn(clippy::pedantic)]
// The programs live in main.rs (one object, several programs); this lib target exists so that
// `memtrace/build.rs` can depend on the package and cargo tracks its sources for rebuilds.
