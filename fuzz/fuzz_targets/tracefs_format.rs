//! tracefs `format` files: the offsets the eBPF programs read at come from here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::tracefs::TracepointFormat;

fuzz_target!(|text: &str| {
    let Ok(format) = TracepointFormat::parse(text) else {
        return;
    };
    assert!(!format.fields.is_empty(), "parsed a format without fields");
    for field in &format.fields {
        assert!(!field.name.is_empty(), "parsed a field without a name");
        let found = format
            .field(&field.name)
            .expect("a parsed field is found by name");
        let _ = format.offset_of(&field.name, field.size);
        let _ = format.offset_or_absent(&field.name, found.size.wrapping_add(1));
    }
});
