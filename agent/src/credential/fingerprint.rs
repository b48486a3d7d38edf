//! Keyed fingerprints: `kt1:` + the first 32 hex characters of HMAC-SHA256(key, secret).
//! The callers normalise the secret first (a token trimmed, a password alone, a key's DER) so
//! the same secret gives the same fingerprint in a file, an env value and a header.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

/// Version prefix of the fingerprint format.
pub(super) const PREFIX: &str = "kt1:";

pub(super) fn fingerprint(key: &[u8], secret: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(secret);
    let digest = mac.finalize().into_bytes();
    format!("{PREFIX}{}", super::hex(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_kt1_and_32_lowercase_hex() {
        let f = fingerprint(b"key", b"secret");
        assert_eq!(f.len(), PREFIX.len() + 32);
        assert!(f.starts_with(PREFIX));
        assert!(
            f[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn matches_rfc4231_test_case_2() {
        // RFC 4231 4.3: key "Jefe", data "what do ya want for nothing?".
        let f = fingerprint(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(f, "kt1:5bdcc146bf60754e6a042426089575c7");
    }

    #[test]
    fn depends_on_key_and_secret() {
        assert_ne!(fingerprint(b"k1", b"s"), fingerprint(b"k2", b"s"));
        assert_ne!(fingerprint(b"k1", b"s1"), fingerprint(b"k1", b"s2"));
        assert_eq!(fingerprint(b"", b"s"), fingerprint(b"", b"s"));
    }
}
