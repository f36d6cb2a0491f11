//! The drive layer (persist-core's session with its byte streams) under arbitrary byte chunks,
//! dial results, link failures, partial writes and time: see tests/src/drive_fuzz.rs for the
//! promises checked. Its corpus is replayed by `cargo test -p tests --test drive`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(what) = tests::drive_fuzz::exercise(data) {
        panic!("{what}");
    }
});
