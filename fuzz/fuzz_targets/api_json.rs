//! The API's JSON as a client reads it (`/api/v1/snapshot`, `/api/v1/oom`, `trace -o json` lines):
//! arbitrary bytes into `Snapshot`, `OomResponse` and `TraceLine`; whatever parses serializes and
//! parses back to the same value.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use memtrace_api::{OomResponse, Snapshot, trace::TraceLine};
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let json = serde_json::to_vec(&value).expect("a parsed value serializes");
    let again: T = match serde_json::from_slice(&json) {
        Ok(again) => again,
        Err(e) => panic!(
            "{} does not read back: {e}\n{}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&json)
        ),
    };
    assert_eq!(
        value,
        again,
        "{} changed in a round trip",
        std::any::type_name::<T>()
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Snapshot>(data);
    round_trip::<OomResponse>(data);
    round_trip::<TraceLine>(data);
});
