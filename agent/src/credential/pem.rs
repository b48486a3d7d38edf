//! PEM files and binary DER: certificates (validity, subject, serial, SPIFFE URI SAN),
//! private keys (PKCS#8, RSA, EC, DSA, encrypted; id from the derived public key, lifetime
//! from a certificate in the same file), OpenSSH keys (handed to `ssh`), and binary DER
//! certificates and keys, PKCS#12 and Java keystores.

use std::time::SystemTime;

use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, objects::oid_registry,
    objects::oid2abbrev, prelude::FromDer as _, x509::X509Name,
};

use super::{Credential, Ctx, Kind, Lifetime, Skip, b64, hex, keys, ssh, unix_time};

/// More blocks than this in one file are ignored (CA bundles hold a few hundred).
const MAX_BLOCKS: usize = 2048;

/// One `-----BEGIN label-----` ... `-----END label-----` block.
pub(super) struct Block<'a> {
    pub label: &'a str,
    /// The decoded body; `None` when the block is truncated or its base64 is invalid.
    pub der: Option<Vec<u8>>,
    /// 1-based line of the BEGIN marker.
    pub line: usize,
    /// RFC 1421 `Proc-Type: 4,ENCRYPTED` header (legacy OpenSSL encryption).
    pub encrypted: bool,
}

/// The PEM blocks of `text`, in order. Tolerates text around and between blocks, markers
/// not on their own lines (one-line PEM in env values), headers, and any garbage.
pub(super) fn blocks(text: &str) -> Vec<Block<'_>> {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = Vec::new();
    let (mut pos, mut line, mut counted) = (0usize, 1usize, 0usize);
    while out.len() < MAX_BLOCKS {
        let Some(rel) = text[pos..].find(BEGIN) else {
            break;
        };
        let begin = pos + rel;
        line += text[counted..begin].matches('\n').count();
        counted = begin;
        let after = begin + BEGIN.len();
        let Some(label_len) = text[after..].find("-----") else {
            break;
        };
        let label = &text[after..after + label_len];
        let body_start = after + label_len + 5;
        if label.is_empty() || label.len() > 64 || label.contains(['\n', '\r']) {
            pos = after;
            continue;
        }
        let end_marker = format!("-----END {label}-----");
        let rest = &text[body_start..];
        // Look for the END only up to the next BEGIN, so the scan stays linear.
        let next_begin = rest.find(BEGIN);
        let region = &rest[..next_begin.unwrap_or(rest.len())];
        let (body, next) = match (region.find(&end_marker), next_begin) {
            (Some(e), _) => (Some(&rest[..e]), body_start + e + end_marker.len()),
            // Truncated: no END before the next BEGIN or the end of the text.
            (None, Some(nb)) => (None, body_start + nb),
            (None, None) => (None, text.len()),
        };
        let mut encrypted = false;
        let der = body.and_then(|body| {
            let mut b64_text = String::with_capacity(body.len());
            for l in body.lines() {
                if l.contains(':') {
                    encrypted |= l.contains("Proc-Type") && l.contains("ENCRYPTED");
                } else {
                    b64_text.push_str(l);
                }
            }
            b64::decode_ws(&b64_text).filter(|d| !d.is_empty())
        });
        out.push(Block {
            label,
            der,
            line,
            encrypted,
        });
        pos = next;
    }
    out
}

/// A parsed certificate: its credential and the id of its public key.
pub(super) struct Cert {
    pub cred: Credential,
    pub spki_id: String,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
}

/// A DER certificate: a SPIFFE X.509-SVID (exactly one URI SAN, `spiffe://`) is
/// short-lived; any other certificate by notAfter - notBefore against the threshold.
pub(super) fn certificate(cx: &Ctx<'_>, der: &[u8]) -> Option<Cert> {
    let (rest, cert) = X509Certificate::from_der(der).ok()?;
    let cert_der = &der[..der.len() - rest.len()];
    let validity = cert.validity();
    let not_before = unix_time(validity.not_before.timestamp());
    let not_after = unix_time(validity.not_after.timestamp());
    let uris: Vec<&str> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let cred = match uris.as_slice() {
        [uri] if uri.starts_with("spiffe://") => cx
            .cred(Kind::SpiffeSvid, Lifetime::ShortLived, cert_der)
            .with_id(*uri),
        _ => {
            let serial = cert.raw_serial();
            let serial = &serial[serial.iter().position(|&b| b != 0).unwrap_or(serial.len())..];
            let serial = if serial.is_empty() {
                "00".to_string()
            } else {
                hex(serial)
            };
            let id = format!("subject={} serial={serial}", rfc4514(cert.subject()));
            cx.cred(
                Kind::X509Certificate,
                cx.window(not_before, not_after),
                cert_der,
            )
            .with_id(id)
        }
    };
    Some(Cert {
        cred: cred.times(not_before, not_after),
        spki_id: keys::spki_id(cert.public_key().raw),
        not_before,
        not_after,
    })
}

/// A distinguished name as RFC 4514 text: RDNs last-first, `,` between them, `+` within.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let ty = match oid2abbrev(atv.attr_type(), oid_registry()) {
                    Ok(s) => s.to_string(),
                    Err(_) => atv.attr_type().to_id_string(),
                };
                let value = match atv.as_str() {
                    Ok(s) => escape_rfc4514(s),
                    Err(_) => format!("#{}", hex(atv.as_slice())),
                };
                format!("{ty}={value}")
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a file at `path` is an SSH key by its place (`~/.ssh/`, `id_*`).
fn is_ssh_path(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    path.contains("/.ssh/") || path.starts_with(".ssh/") || base.starts_with("id_")
}

/// A private key by its PEM label (or the DER structure it was found to be).
fn private_key(
    cx: &Ctx<'_>,
    label: &str,
    der: &[u8],
    encrypted: bool,
    ssh_path: bool,
) -> (Credential, Option<String>) {
    let spki = if encrypted {
        None
    } else {
        match label {
            "PRIVATE KEY" => keys::spki_from_pkcs8(der),
            "RSA PRIVATE KEY" => keys::spki_from_pkcs1(der),
            "EC PRIVATE KEY" => keys::spki_from_sec1(der),
            _ => None,
        }
    };
    let spki_id = spki.as_deref().map(keys::spki_id);
    if ssh_path {
        let id = spki
            .as_deref()
            .and_then(keys::ssh_blob_from_spki)
            .map(|blob| keys::ssh_fingerprint(&blob));
        let c = cx
            .cred(Kind::SshPrivateKey, Lifetime::Static, der)
            .with_opt_id(id);
        return (c, spki_id);
    }
    let c = cx
        .cred(Kind::X509PrivateKey, Lifetime::Static, der)
        .with_opt_id(spki_id.clone());
    (c, spki_id)
}

fn is_private_key_label(label: &str) -> bool {
    matches!(
        label,
        "PRIVATE KEY"
            | "RSA PRIVATE KEY"
            | "EC PRIVATE KEY"
            | "DSA PRIVATE KEY"
            | "ENCRYPTED PRIVATE KEY"
            | "ANY PRIVATE KEY"
    )
}

fn is_certificate_label(label: &str) -> bool {
    matches!(
        label,
        "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE"
    )
}

/// The first private key in PEM text: its DER (for fingerprints of keys embedded in JSON or
/// YAML fields).
pub(super) fn first_private_key_der(text: &str) -> Option<Vec<u8>> {
    blocks(text)
        .into_iter()
        .find(|b| is_private_key_label(b.label) || b.label == "OPENSSH PRIVATE KEY")
        .and_then(|b| b.der)
}

/// The first certificate in PEM text.
pub(super) fn first_certificate(cx: &Ctx<'_>, text: &str) -> Option<Cert> {
    blocks(text)
        .into_iter()
        .filter(|b| is_certificate_label(b.label))
        .find_map(|b| certificate(cx, b.der.as_deref()?))
}

/// Every credential in a PEM file. `Ok(vec![])` for PEM that holds nothing secret (public
/// keys, CSRs, parameters).
pub(super) fn classify(cx: &Ctx<'_>, text: &str, path: &str) -> Result<Vec<Credential>, Skip> {
    let blocks = blocks(text);
    if blocks.is_empty() {
        return Err(Skip::Unrecognised);
    }
    let ssh_path = is_ssh_path(path);
    let mut malformed: Option<&'static str> = None;
    let certs: Vec<(usize, Cert)> = blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| is_certificate_label(b.label))
        .filter_map(
            |(i, b)| match b.der.as_deref().map(|d| certificate(cx, d)) {
                Some(Some(c)) => Some((i, c)),
                Some(None) => {
                    malformed.get_or_insert("certificate does not parse");
                    None
                }
                None => {
                    malformed.get_or_insert("PEM block truncated or not base64");
                    None
                }
            },
        )
        .collect();

    let mut out: Vec<(usize, Credential)> = certs
        .iter()
        .map(|(i, c)| (*i, c.cred.clone().at(format!("line {}", blocks[*i].line))))
        .collect();
    for (i, b) in blocks.iter().enumerate() {
        let location = format!("line {}", b.line);
        if is_certificate_label(b.label) {
            continue;
        }
        let Some(der) = b.der.as_deref() else {
            if is_private_key_label(b.label) || b.label == "OPENSSH PRIVATE KEY" {
                malformed.get_or_insert("PEM block truncated or not base64");
            }
            continue;
        };
        if b.label == "OPENSSH PRIVATE KEY" {
            out.push((i, ssh::classify(cx, der).at(location)));
        } else if is_private_key_label(b.label) {
            let encrypted = b.encrypted || b.label == "ENCRYPTED PRIVATE KEY";
            let (mut key, spki_id) = private_key(cx, b.label, der, encrypted, ssh_path);
            // The lifetime of a certificate in the same file: the one of this key, else the
            // first (the leaf, by convention).
            let cert = spki_id
                .as_ref()
                .and_then(|id| certs.iter().find(|(_, c)| &c.spki_id == id))
                .or(certs.first());
            if let Some((_, cert)) = cert
                && key.kind == Kind::X509PrivateKey
            {
                key.lifetime = cert.cred.lifetime;
                key = key.times(cert.not_before, cert.not_after);
            }
            out.push((i, key.at(location)));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    if out.is_empty()
        && let Some(reason) = malformed
    {
        return Err(Skip::Malformed(reason));
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// Binary content: a DER certificate or private key, PKCS#12 or a Java keystore. `None`
/// when it is none of these.
pub(super) fn classify_binary(cx: &Ctx<'_>, bytes: &[u8], path: &str) -> Option<Vec<Credential>> {
    let keystore = || {
        // Encrypted containers: the lifetime of what is inside cannot be read.
        vec![cx.cred(Kind::X509PrivateKey, Lifetime::Unknown, bytes)]
    };
    if bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]) || bytes.starts_with(&[0xce, 0xce, 0xce, 0xce])
    {
        return Some(keystore());
    }
    if is_pkcs12(bytes) {
        return Some(keystore());
    }
    if bytes.first() != Some(&0x30) {
        return None;
    }
    if let Some(cert) = certificate(cx, bytes) {
        return Some(vec![cert.cred]);
    }
    let ssh_path = is_ssh_path(path);
    let label = if pkcs8::PrivateKeyInfoRef::try_from(bytes).is_ok() {
        "PRIVATE KEY"
    } else if pkcs1::RsaPrivateKey::<pkcs1::UintRef<'_>>::try_from(bytes).is_ok() {
        "RSA PRIVATE KEY"
    } else if sec1::EcPrivateKey::try_from(bytes).is_ok() {
        "EC PRIVATE KEY"
    } else {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".p12") || lower.ends_with(".pfx") {
            return Some(keystore());
        }
        return None;
    };
    Some(vec![private_key(cx, label, bytes, false, ssh_path).0])
}

/// A DER (or BER) element header: tag, header length and content length (`None` for the
/// BER indefinite form).
fn der_header(b: &[u8]) -> Option<(u8, usize, Option<usize>)> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((tag, 2, Some(first as usize)));
    }
    if first == 0x80 {
        return Some((tag, 2, None));
    }
    let n = (first & 0x7f) as usize;
    if n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | *b.get(2 + i)? as usize;
    }
    Some((tag, 2 + n, Some(len)))
}

/// PKCS#12 PFX: SEQUENCE { INTEGER 3, ContentInfo { OID pkcs7-data | signedData, ... } }.
fn is_pkcs12(b: &[u8]) -> bool {
    let check = || -> Option<bool> {
        let (tag, hl, _) = der_header(b)?;
        if tag != 0x30 {
            return Some(false);
        }
        let inner = b.get(hl..)?;
        if !inner.starts_with(&[0x02, 0x01, 0x03]) {
            return Some(false);
        }
        let ci = inner.get(3..)?;
        let (tag, hl, _) = der_header(ci)?;
        if tag != 0x30 {
            return Some(false);
        }
        let oid = ci.get(hl..hl + 11)?;
        const PKCS7: [u8; 10] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07];
        Some(oid[..10] == PKCS7 && matches!(oid[10], 1 | 2))
    };
    check().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_scanner_edge_cases() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nAAAA\n\
                    -----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nAAAA\n\
                    -----END RSA PRIVATE KEY-----\n-----BEGIN X-----\n!!!!\n-----END X-----\n\
                    -----BEGIN";
        let b = blocks(text);
        let summary: Vec<_> = b
            .iter()
            .map(|b| (b.label, b.der.is_some(), b.line, b.encrypted))
            .collect();
        assert_eq!(
            summary,
            [
                ("CERTIFICATE", true, 2, false),
                ("PRIVATE KEY", false, 5, false),
                ("RSA PRIVATE KEY", true, 7, true),
                ("X", false, 13, false),
            ]
        );
        let one_line = "-----BEGIN PRIVATE KEY----- AAAA -----END PRIVATE KEY-----";
        assert_eq!(blocks(one_line)[0].der.as_deref(), Some(&[0u8, 0, 0][..]));
        assert!(blocks("-----BEGIN -----").is_empty());
        assert!(blocks("-----BEGIN ").is_empty());
    }

    #[test]
    fn rfc4514_escaping() {
        assert_eq!(escape_rfc4514("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc4514(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc4514("#x"), "\\#x");
        assert_eq!(escape_rfc4514(""), "");
    }

    #[test]
    fn der_headers_and_pkcs12_shape() {
        assert_eq!(der_header(&[0x30, 0x03]), Some((0x30, 2, Some(3))));
        assert_eq!(
            der_header(&[0x30, 0x82, 0x01, 0x00]),
            Some((0x30, 4, Some(256)))
        );
        assert_eq!(der_header(&[0x30, 0x80]), Some((0x30, 2, None)));
        assert_eq!(der_header(&[0x30, 0x85]), None);
        assert_eq!(der_header(&[0x30]), None);
        let pfx = [
            0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
            0x0d, 0x01, 0x07, 0x01, 0xa0, 0x80,
        ];
        assert!(is_pkcs12(&pfx));
        assert!(!is_pkcs12(&pfx[..12]));
        assert!(!is_pkcs12(&[0x30, 0x03, 0x02, 0x01, 0x02]));
    }
}
