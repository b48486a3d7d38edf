//! Public keys derived from private keys, for public identifiers: the SubjectPublicKeyInfo of
//! a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key when the key holds its public part, and
//! OpenSSH public key blobs and their `SHA256:` fingerprints. No curve arithmetic: an EC key
//! without its public point, or a DSA key, has no derivable id.

use base64::Engine as _;
use pkcs8::{
    ObjectIdentifier, PrivateKeyInfoRef,
    der::{Decode as _, Encode as _, Tag, asn1::AnyRef, asn1::BitStringRef},
    spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef},
};
use sha2::{Digest as _, Sha256};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// `sha256:` + hex SHA-256 of a SubjectPublicKeyInfo DER: the id of a key and of the
/// certificates of the same key.
pub(super) fn spki_id(spki: &[u8]) -> String {
    format!("sha256:{}", super::hex(&Sha256::digest(spki)))
}

fn encode_spki(algorithm: AlgorithmIdentifierRef<'_>, public_key: &[u8]) -> Option<Vec<u8>> {
    SubjectPublicKeyInfoRef {
        algorithm,
        subject_public_key: BitStringRef::from_bytes(public_key).ok()?,
    }
    .to_der()
    .ok()
}

/// The SPKI of a PKCS#8 private key (unencrypted `PRIVATE KEY`).
pub(super) fn spki_from_pkcs8(der: &[u8]) -> Option<Vec<u8>> {
    let info = PrivateKeyInfoRef::from_der(der).ok()?;
    let private = info.private_key.as_bytes();
    let public: Vec<u8> = if info.algorithm.oid == RSA_ENCRYPTION {
        rsa_public_der(private)?
    } else if info.algorithm.oid == EC_PUBLIC_KEY {
        let ec = sec1::EcPrivateKey::from_der(private).ok()?;
        match (ec.public_key, info.public_key) {
            (Some(p), _) => p.to_vec(),
            (None, Some(p)) => p.as_bytes()?.to_vec(),
            (None, None) => return None,
        }
    } else {
        // Ed25519, X25519 and others: only a v2 (OneAsymmetricKey) structure has the public key.
        info.public_key?.as_bytes()?.to_vec()
    };
    encode_spki(info.algorithm, &public)
}

/// The PKCS#1 RSAPublicKey DER of a PKCS#1 RSAPrivateKey DER.
fn rsa_public_der(private: &[u8]) -> Option<Vec<u8>> {
    let key = pkcs1::RsaPrivateKey::<pkcs1::UintRef<'_>>::from_der(private).ok()?;
    pkcs1::RsaPublicKey {
        modulus: key.modulus,
        public_exponent: key.public_exponent,
    }
    .to_der()
    .ok()
}

/// The SPKI of a PKCS#1 `RSA PRIVATE KEY`.
pub(super) fn spki_from_pkcs1(der: &[u8]) -> Option<Vec<u8>> {
    let public = rsa_public_der(der)?;
    let algorithm = AlgorithmIdentifierRef {
        oid: RSA_ENCRYPTION,
        parameters: Some(AnyRef::NULL),
    };
    encode_spki(algorithm, &public)
}

/// The SPKI of a SEC1 `EC PRIVATE KEY` that has both its curve and its public point.
pub(super) fn spki_from_sec1(der: &[u8]) -> Option<Vec<u8>> {
    let ec = sec1::EcPrivateKey::from_der(der).ok()?;
    let sec1::EcParameters::NamedCurve(curve) = ec.parameters?;
    let public = ec.public_key?;
    let algorithm = AlgorithmIdentifierRef {
        oid: EC_PUBLIC_KEY,
        parameters: Some(AnyRef::new(Tag::ObjectIdentifier, curve.as_bytes()).ok()?),
    };
    encode_spki(algorithm, public)
}

/// `SHA256:` + unpadded base64 of SHA-256 of an OpenSSH public key blob (as `ssh-keygen -l`).
pub(super) fn ssh_fingerprint(blob: &[u8]) -> String {
    let digest = Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// The OpenSSH public key blob of an SPKI (RSA, ECDSA P-256/384/521, Ed25519).
pub(super) fn ssh_blob_from_spki(spki: &[u8]) -> Option<Vec<u8>> {
    let info = SubjectPublicKeyInfoRef::from_der(spki).ok()?;
    let key = info.subject_public_key.as_bytes()?;
    let mut blob = Vec::new();
    if info.algorithm.oid == RSA_ENCRYPTION {
        let rsa = pkcs1::RsaPublicKey::<pkcs1::UintRef<'_>>::from_der(key).ok()?;
        put_string(&mut blob, b"ssh-rsa");
        put_mpint(&mut blob, rsa.public_exponent.as_bytes());
        put_mpint(&mut blob, rsa.modulus.as_bytes());
    } else if info.algorithm.oid == EC_PUBLIC_KEY {
        let curve: ObjectIdentifier = info.algorithm.parameters?.decode_as().ok()?;
        let name: &[u8] = match curve {
            c if c == P256 => b"nistp256",
            c if c == P384 => b"nistp384",
            c if c == P521 => b"nistp521",
            _ => return None,
        };
        put_string(&mut blob, &[b"ecdsa-sha2-".as_slice(), name].concat());
        put_string(&mut blob, name);
        put_string(&mut blob, key);
    } else if info.algorithm.oid == ED25519 {
        put_string(&mut blob, b"ssh-ed25519");
        put_string(&mut blob, key);
    } else {
        return None;
    }
    Some(blob)
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(s);
}

/// An unsigned big-endian integer as an SSH mpint: no leading zeros, a 0 byte before a set
/// top bit.
fn put_mpint(out: &mut Vec<u8>, n: &[u8]) {
    let start = n.iter().position(|&b| b != 0).unwrap_or(n.len());
    let n = &n[start..];
    if n.first().is_some_and(|&b| b & 0x80 != 0) {
        put_string(out, &[&[0u8][..], n].concat());
    } else {
        put_string(out, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpint_encoding() {
        let mut v = Vec::new();
        put_mpint(&mut v, &[0x00, 0x01, 0x00, 0x01]);
        assert_eq!(v, [0, 0, 0, 3, 1, 0, 1]);
        let mut v = Vec::new();
        put_mpint(&mut v, &[0x80]);
        assert_eq!(v, [0, 0, 0, 2, 0, 0x80]);
        let mut v = Vec::new();
        put_mpint(&mut v, &[0, 0]);
        assert_eq!(v, [0, 0, 0, 0]);
    }

    #[test]
    fn garbage_gives_none() {
        for g in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 64]] {
            assert!(spki_from_pkcs8(g).is_none());
            assert!(spki_from_pkcs1(g).is_none());
            assert!(spki_from_sec1(g).is_none());
            assert!(ssh_blob_from_spki(g).is_none());
        }
    }
}
