//! OpenSSH private keys (`openssh-key-v1`): the public key is stored in clear even when the
//! private part is encrypted, so the id is its `SHA256:` fingerprint, as `ssh-keygen -l`
//! shows it. The format has no expiry: static.

use super::{Credential, Ctx, Kind, Lifetime, keys};

const MAGIC: &[u8] = b"openssh-key-v1\0";

/// Reads an SSH `string` (u32 big-endian length + bytes).
fn read_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = b.get(4..4usize.checked_add(len)?)?;
    *b = &b[4 + len..];
    Some(s)
}

/// The first public key blob of an `openssh-key-v1` structure.
fn public_blob(der: &[u8]) -> Option<&[u8]> {
    let mut b = der.strip_prefix(MAGIC)?;
    let _cipher = read_string(&mut b)?;
    let _kdf = read_string(&mut b)?;
    let _kdf_options = read_string(&mut b)?;
    let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    if n == 0 {
        return None;
    }
    b = &b[4..];
    read_string(&mut b).filter(|blob| !blob.is_empty())
}

/// An OpenSSH private key (the decoded PEM body). The fingerprint is of the decoded blob.
pub(super) fn classify(cx: &Ctx<'_>, der: &[u8]) -> Credential {
    cx.cred(Kind::SshPrivateKey, Lifetime::Static, der)
        .with_opt_id(public_blob(der).map(keys::ssh_fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::tests::fake_openssh;

    #[test]
    fn public_blob_and_garbage() {
        let v = fake_openssh(&[7; 32], b"filler");
        let blob = public_blob(&v).unwrap();
        assert_eq!(&blob[4..15], b"ssh-ed25519");
        for cut in 0..v.len() - 10 {
            // Truncations never panic; short ones have no blob.
            let _ = public_blob(&v[..cut]);
        }
        assert!(public_blob(&v[..40]).is_none());
        assert!(public_blob(b"openssh-key-v1\0\xff\xff\xff\xff").is_none());
        assert!(public_blob(b"not a key").is_none());
    }
}
