//! `Classifier::classify_header` on an arbitrary header.
//!
//! Input: `NAME \0 VALUE` or `NAME \n VALUE` (split at the first NUL or newline); without
//! either, the whole input is the value of an `Authorization` header.

#![no_main]

use keytrail_fuzz::{check_all, classifier, now, split_first};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, value) =
        split_first(data, |b| b == 0 || b == b'\n').unwrap_or((b"Authorization".as_slice(), data));
    let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
        return;
    };
    check_all(&classifier().classify_header(name, value, now()));
});
