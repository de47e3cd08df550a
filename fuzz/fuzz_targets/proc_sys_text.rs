//! The /proc and /sys text readers: every parser on the same input (coverage tells them apart).
//! `/proc/<pid>/{stat,status,cgroup}`, `/proc/{meminfo,vmstat,buddyinfo}`, PSI (strict, as the
//! node reads it, and lenient, as a cgroup's `memory.pressure` is read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{fuzzing, node, psi};

fuzz_target!(|data: &[u8]| {
    // The readers read these files with from_utf8_lossy / read_to_string.
    let text = String::from_utf8_lossy(data);
    if let Ok(stat) = fuzzing::proc_stat(data) {
        // The comm is what the parentheses hold, however odd.
        assert!(
            text.contains(&format!("({})", stat.comm)),
            "comm {:?}",
            stat.comm
        );
    }
    if let Ok(cgroups) = fuzzing::proc_cgroups(data) {
        let _ = cgroups.memory_path();
    }
    let _ = fuzzing::proc_status_rss(&text);
    let _ = fuzzing::node_meminfo(&text);
    let _ = fuzzing::node_vmstat(&text);
    if let Ok(zones) = fuzzing::node_buddyinfo(&text) {
        for order in [0, 3, 9, 64, u32::MAX] {
            let index = node::unusable_index(&zones, order);
            assert!((0.0..=1.0).contains(&index), "unusable index {index}");
            for zone in &zones {
                let _ = zone.free_pages();
                let index = zone.unusable_index(order);
                assert!((0.0..=1.0).contains(&index), "zone unusable index {index}");
            }
        }
    }
    let strict = fuzzing::node_psi(&text);
    let lenient = psi::parse(&text, psi::Lines::Lenient);
    // Lenient accepts everything strict does, with the same result.
    if let Ok(strict) = strict {
        assert_eq!(lenient.ok(), Some(strict));
    }
    if let Ok(psi) = psi::parse(&text, psi::Lines::Strict) {
        let _ = memtrace_api::PsiView::from(&psi);
    }
});
