//! The daemon's `--config` TOML file: parsed into `FileConfig`, then resolved with no flags into
//! `Settings` (defaults filled in, values validated) as `memtrace daemon --config FILE` does.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use memtrace::daemon::{FileConfig, Flags, Settings};

fuzz_target!(|text: &str| {
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    // What was read writes back as TOML that reads again.
    let written = toml::to_string(&file).expect("a FileConfig serializes");
    if let Err(e) = toml::from_str::<FileConfig>(&written) {
        panic!("re-reading {written:?}: {e}");
    }
    if let Ok(settings) = Settings::resolve(&Flags::default(), Some((Path::new("fuzz.toml"), file)))
    {
        assert!(settings.top >= 1);
        assert!(settings.rate_window >= settings.interval);
    }
});
