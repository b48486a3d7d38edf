//! Shared by the fuzz targets: one classifier with a fixed key and threshold, a fixed "now",
//! and the checks every returned credential must pass.
//!
//! The property of every target is that nothing panics, whatever the input; the checks here
//! add the invariants the classifier documents and that the agent relies on when it writes a
//! record (fingerprint shape, serialisation).

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use keytrail::credential::{Classifier, Credential, MAX_CREDENTIALS};

/// Fingerprint key of the fuzz classifier: fixed, so runs are reproducible; not a secret.
pub const KEY: &[u8] = b"keytrail-fuzz-fixed-key-not-secret";

/// The agent's default short-lived threshold.
pub const THRESHOLD: Duration = Duration::from_secs(24 * 3600);

/// The fixed current time: 2026-01-01T00:00:00Z.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// The classifier every target uses.
pub fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| Classifier::new(KEY, THRESHOLD))
}

/// `data` split at the first byte matching `sep`: the part before and the part after it, or
/// `None` when no byte matches.
pub fn split_first(data: &[u8], sep: impl Fn(u8) -> bool) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&b| sep(b))?;
    Some((&data[..at], &data[at + 1..]))
}

/// Checks a list of credentials from one file or one environment.
pub fn check_all(creds: &[Credential]) {
    assert!(
        creds.len() <= MAX_CREDENTIALS,
        "{} credentials, more than MAX_CREDENTIALS",
        creds.len()
    );
    creds.iter().for_each(check);
}

/// Checks one credential: `kt1:` + 32 lowercase hex fingerprint, and it displays and
/// serialises to JSON as the agent's records do.
pub fn check(c: &Credential) {
    let hex = c
        .fingerprint
        .strip_prefix("kt1:")
        .unwrap_or_else(|| panic!("fingerprint without kt1: prefix: {:?}", c.fingerprint));
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "fingerprint is not 32 lowercase hex characters: {:?}",
        c.fingerprint
    );
    let _ = c.to_string();
    if let Err(e) = serde_json::to_string(c) {
        panic!("credential does not serialise: {e}");
    }
}
