//! Key-path helpers the golden-fixture tests share: a fixture and the types must agree key path
//! by key path.
use std::collections::BTreeSet;

use serde_json::Value;

/// Every key path of a JSON value: `a.b` for a key of an object, `a[]` for an array's elements,
/// described by the first element (the fixtures' arrays are all non-empty).
pub fn key_paths(value: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => {
                if let Some(first) = items.first() {
                    let path = format!("{prefix}[]");
                    out.insert(path.clone());
                    walk(first, &path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(value, "", &mut out);
    out
}

/// Asserts that `written` (what the types serialize) and `golden` (the fixture `name`) have the
/// same key paths, naming each side's extras; returns the fixture's key paths.
pub fn assert_same_key_paths(written: &Value, golden: &Value, name: &str) -> BTreeSet<String> {
    let (model, golden) = (key_paths(written), key_paths(golden));
    assert_eq!(
        model.difference(&golden).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys the types write that {name} lacks: add them to the fixture on purpose"
    );
    assert_eq!(
        golden.difference(&model).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys of {name} the types no longer write: a removed or renamed field breaks v1"
    );
    golden
}

/// Removes every key path of `value` not in `keep`.
pub fn retain_paths(value: &mut Value, prefix: &str, keep: &BTreeSet<String>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            map.retain(|key, _| keep.contains(&join(key)));
            for (key, child) in map.iter_mut() {
                retain_paths(child, &join(key), keep);
            }
        }
        Value::Array(items) => {
            let path = format!("{prefix}[]");
            for item in items {
                retain_paths(item, &path, keep);
            }
        }
        _ => {}
    }
}
