//! `Classifier::classify_value` on an arbitrary UTF-8 value.
//!
//! Input: `NAME \0 VALUE` (an env var) or, without a NUL, a bare `VALUE`.

#![no_main]

use keytrail_fuzz::{check_all, classifier, now, split_first};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (name, value) = match split_first(data, |b| b == 0) {
        Some((name, value)) => (Some(name), value),
        None => (None, data),
    };
    let (Ok(name), Ok(value)) = (
        name.map(std::str::from_utf8).transpose(),
        std::str::from_utf8(value),
    ) else {
        return;
    };
    // The name check on its own too, also for inputs without a name.
    let _ = keytrail::credential::is_secret_like_env_name(name.unwrap_or(value));
    check_all(&classifier().classify_value(value, name, now()));
});
