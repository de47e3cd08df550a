//! Ring-buffer records: any bytes the kernel half (or a mismatched build of it) could hand over.
//! A record that decodes must render as a text line and as a JSON line that reads back as the
//! trace's published `TraceLine` type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::events::{Event, render};
use memtrace_api::trace::TraceLine;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::decode(data) else {
        return;
    };
    let _ = (event.kind(), event.subject_pid());
    // A fixed clock: the same input renders the same way on every run.
    let clock = render::Clock::with_offset(0);
    for cgroup in [None, Some("/fuzz")] {
        let mut text = String::new();
        render::text(&mut text, &clock, &event, cgroup);
        let mut json = Vec::new();
        render::json(&mut json, &clock, &event, cgroup).expect("rendering into a Vec");
        if let Err(e) = serde_json::from_slice::<TraceLine>(&json) {
            panic!(
                "rendered JSON does not read as a TraceLine: {e}\n{}",
                String::from_utf8_lossy(&json)
            );
        }
    }
});
