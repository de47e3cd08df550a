//! The golden fixture of `memtrace trace -o json` (one line per kind) against the types of
//! `memtrace_api::trace`: every line deserializes and serializes back unchanged, and carries
//! exactly its type's fields, all of them. memtrace's own test checks that the renderer writes
//! exactly this fixture, so a field renamed or removed on either side fails a test.
use std::collections::BTreeSet;

use memtrace_api::trace::{
    BrkLine, ExecLine, ExitLine, FaultLine, LossesLine, MmapLine, MremapLine, MunmapLine, OomLine,
    ReclaimLine, SummaryLine, TraceLine,
};
use serde::de::{self, Deserialize, Deserializer, Visitor};

const FIXTURE: &str = include_str!("fixtures/trace-v1.jsonl");

/// The field names a derived `Deserialize` asks for, as it declares them to the deserializer.
fn fields<'de, T: Deserialize<'de>>() -> BTreeSet<&'static str> {
    struct Introspect<'f>(&'f mut &'static [&'static str]);

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("introspection only")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }

    impl<'de> Deserializer<'de> for Introspect<'_> {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Introspect(&mut fields));
    assert!(
        !fields.is_empty(),
        "{} is not a struct",
        std::any::type_name::<T>()
    );
    fields.iter().copied().collect()
}

fn lines() -> Vec<serde_json::Value> {
    FIXTURE
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

#[test]
fn every_line_deserializes_and_serializes_back_unchanged() {
    for value in lines() {
        let typed: TraceLine = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{value} does not fit TraceLine: {e}"));
        assert_eq!(value["kind"], typed.kind());
        assert_eq!(serde_json::to_value(&typed).unwrap(), value);
    }
}

#[test]
fn every_kind_has_one_line_with_exactly_its_types_fields() {
    let expected: [(&str, BTreeSet<&str>); 11] = [
        ("fault", fields::<FaultLine>()),
        ("mmap", fields::<MmapLine>()),
        ("munmap", fields::<MunmapLine>()),
        ("brk", fields::<BrkLine>()),
        ("mremap", fields::<MremapLine>()),
        ("reclaim", fields::<ReclaimLine>()),
        ("oom", fields::<OomLine>()),
        ("exec", fields::<ExecLine>()),
        ("exit", fields::<ExitLine>()),
        ("summary", fields::<SummaryLine>()),
        ("losses", fields::<LossesLine>()),
    ];
    let lines = lines();
    assert_eq!(lines.len(), expected.len(), "one line per kind");
    for (value, (kind, mut fields)) in lines.iter().zip(expected) {
        assert_eq!(value["kind"], kind, "fixture order");
        fields.insert("kind");
        let keys: BTreeSet<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys, fields,
            "{kind}: the fixture must show every field, and only those"
        );
    }
}

#[test]
fn names_follow_the_convention() {
    for value in lines() {
        let object = value.as_object().expect("an object");
        for (key, field) in object {
            // Addresses come with their exact hex form, flag words with their names.
            if key == "ip" || key.ends_with("addr") {
                let hex = object[&format!("{key}_hex")].as_str().expect("hex string");
                assert_eq!(hex, format!("{:#x}", field.as_u64().expect("a number")));
            }
            if key.ends_with("_names") {
                let raw = key.trim_end_matches("_names");
                assert!(object[raw].is_u64(), "{key} without its raw {raw}");
            }
            assert!(
                !key.ends_with("_kb") && key != "address" && !key.starts_with("nr_"),
                "{key}: units are bytes (or named by suffix), addresses are `addr`"
            );
        }
        assert!(
            object.contains_key("ts") && object.contains_key("ts_ns"),
            "{value}"
        );
    }
}
