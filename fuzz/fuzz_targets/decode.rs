//! Any bytes, as a frame in every dialect: decoding fails cleanly or re-encodes to exactly the
//! input, and the header and fid readers agree with it (see `p9_core::arbitrary::check_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    p9_core::arbitrary::check_decode(data);
});
