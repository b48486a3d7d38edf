//! `elf::function_offsets` on an arbitrary file: the bytes of a workload's libc or libssl,
//! whose symbol tables the agent reads to place its uprobes, and `probe_point::cheap_entry`,
//! which decodes the code found there.
//!
//! Beyond not panicking: one answer per name, every offset inside the file, and a probe point
//! inside the function's executable segment.

#![no_main]

use keytrail::{elf, probe_point};
use libfuzzer_sys::fuzz_target;

/// The functions the agent's probes attach to.
const NAMES: &[&str] = &[
    "getenv",
    "secure_getenv",
    "SSL_write",
    "SSL_write_ex",
    "SSL_free",
    "SSL_clear",
];

fuzz_target!(|data: &[u8]| {
    match elf::function_offsets(data, NAMES) {
        Ok(offsets) => {
            assert_eq!(offsets.len(), NAMES.len());
            for offset in offsets.into_iter().flatten() {
                assert!(offset < data.len() as u64, "offset {offset} outside the file");
                if let Some(segment) = elf::executable_segment(data, offset) {
                    let point = probe_point::cheap_entry(data, offset, &segment);
                    assert!(segment.contains(&point), "{point} outside {segment:?}");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
