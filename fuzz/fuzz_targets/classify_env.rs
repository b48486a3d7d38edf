//! `Classifier::classify_env` on an arbitrary environment, parsed as the agent parses
//! /proc/PID/environ: lossy UTF-8, `NAME=VALUE` entries separated by NULs.

#![no_main]

use keytrail_fuzz::{check_all, classifier, now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars = text
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty());
    check_all(&classifier().classify_env(vars, now()));
});
