//! TLS: the ClientHello of a handshake, from the records tls-parser reads. The hello is
//! reassembled from consecutive handshake records (large hellos, e.g. with post-quantum key
//! shares, may span records); a hello cut by the capture gives what its captured part says
//! and how many bytes it needs.

use tls_parser::{
    ClientHello as _, SNIType, TlsExtension, TlsRecordType, parse_tls_client_hello_extension,
    parse_tls_handshake_client_hello, parse_tls_record_header,
};

use super::{ClientHello, Payload};

/// Largest plaintext record (RFC 8446 5.1: 2^14).
const MAX_RECORD: usize = 1 << 14;

/// Largest ClientHello message accepted; real ones are well under this.
const MAX_HELLO: usize = 1 << 16;

/// TLS record header length.
const HEADER: usize = 5;

/// Handshake message header: type (1) + length (3).
const HS_HEADER: usize = 4;

/// Handshake type of ClientHello.
const CLIENT_HELLO: u8 = 1;

/// At most this many ALPN names are kept.
const MAX_ALPN: usize = 16;

/// Bytes that start like a TLS handshake record (checked by the caller).
pub(super) fn classify(bytes: &[u8]) -> Payload {
    let have = bytes.len();
    // The handshake stream: the payloads of the records so far, concatenated.
    let mut hs: Vec<u8> = Vec::new();
    let mut off = 0;
    loop {
        let rest = &bytes[off..];
        // Bytes of the whole hello, once its length is known.
        let total = hello_len(&hs);
        if let Some(t) = total
            && t > MAX_HELLO
        {
            return Payload::Unknown;
        }
        if rest.len() < HEADER {
            // A cut inside (or right before) a record header.
            if !header_prefix_ok(rest) {
                return Payload::Unknown;
            }
            let missing = total.map_or(0, |t| t.saturating_sub(hs.len()));
            return incomplete(have, off + HEADER + missing, &hs);
        }
        let Ok((data, hdr)) = parse_tls_record_header(rest) else {
            return Payload::Unknown;
        };
        let len = usize::from(hdr.len);
        if hdr.record_type != TlsRecordType::Handshake
            || hdr.version.0 >> 8 != 3
            || len == 0
            || len > MAX_RECORD
        {
            return Payload::Unknown;
        }
        let end = off + HEADER + len;
        if data.len() < len {
            // The record continues past the capture.
            hs.extend_from_slice(data);
            if !type_ok(&hs) {
                return Payload::Unknown;
            }
            let covered = hs.len() - data.len() + len;
            let need = match hello_len(&hs) {
                Some(t) if t > MAX_HELLO => return Payload::Unknown,
                // More records follow this one: at least one more header and the rest.
                Some(t) if t > covered => end + HEADER + (t - covered),
                _ => end,
            };
            return incomplete(have, need, &hs);
        }
        hs.extend_from_slice(&data[..len]);
        if !type_ok(&hs) {
            return Payload::Unknown;
        }
        if let Some(t) = hello_len(&hs)
            && hs.len() >= t
        {
            return match read_hello(&hs[HS_HEADER..t]) {
                Some(hello) => Payload::TlsClientHello(hello),
                None => Payload::Unknown,
            };
        }
        off = end;
    }
}

/// The length of the ClientHello message (header included), once its header is in `hs`.
fn hello_len(hs: &[u8]) -> Option<usize> {
    match hs {
        [_, a, b, c, ..] => Some(HS_HEADER + u24(*a, *b, *c)),
        _ => None,
    }
}

/// Whether the handshake stream starts with a ClientHello (or is still empty).
fn type_ok(hs: &[u8]) -> bool {
    hs.first().is_none_or(|&t| t == CLIENT_HELLO)
}

/// Whether a cut record header (fewer than 5 bytes) is plausibly a handshake record.
fn header_prefix_ok(h: &[u8]) -> bool {
    match h {
        [] => true,
        [t, rest @ ..] => *t == 0x16 && rest.first().is_none_or(|&v| v == 3),
    }
}

fn incomplete(have: usize, need: usize, hs: &[u8]) -> Payload {
    let partial = hs.get(HS_HEADER..).and_then(read_hello);
    Payload::TlsIncomplete {
        have,
        need,
        partial,
    }
}

/// Reads a ClientHello body (after the handshake header), complete or cut short: `None` when
/// its fixed fields (version, random, session id, cipher suites, compression) are not all
/// there or are malformed. Extensions are read until the first that is cut or malformed.
fn read_hello(body: &[u8]) -> Option<ClientHello> {
    let (rest, ch) = parse_tls_handshake_client_hello(body).ok()?;
    if ch.version().0 >> 8 != 3 {
        return None;
    }
    // tls-parser leaves `ext` empty when the extensions block is cut: read what is there.
    let mut ext = match ch.ext() {
        Some(ext) => ext,
        None => rest.get(2..).unwrap_or(&[]),
    };
    let mut hello = ClientHello {
        sni: None,
        alpn: Vec::new(),
        version: legacy_version(ch.version().0),
    };
    let mut seen_sni = false;
    // Every extension consumes at least its 4-byte header, so this ends.
    while let Ok((next, e)) = parse_tls_client_hello_extension(ext) {
        match e {
            TlsExtension::SNI(names) if !seen_sni => {
                seen_sni = true;
                hello.sni = names
                    .iter()
                    .find(|(t, _)| *t == SNIType::HostName)
                    .and_then(|(_, name)| dns_name(name));
            }
            TlsExtension::ALPN(protocols) if hello.alpn.is_empty() => {
                hello.alpn = protocols
                    .iter()
                    .filter_map(|p| printable(p))
                    .take(MAX_ALPN)
                    .collect();
            }
            TlsExtension::SupportedVersions(versions) if versions.iter().any(|v| v.0 == 0x0304) => {
                hello.version = "1.3";
            }
            _ => {}
        }
        if next.len() >= ext.len() {
            break;
        }
        ext = next;
    }
    Some(hello)
}

fn legacy_version(v: u16) -> &'static str {
    match v {
        0x0303 => "1.2",
        0x0302 => "1.1",
        0x0301 => "1.0",
        0x0300 => "ssl3",
        _ => "unknown",
    }
}

/// A server name as DNS-like text: 1..=253 bytes of letters, digits, `-`, `_` and `.`
/// (IDNs travel as punycode), lowercased, one trailing dot dropped.
fn dns_name(raw: &[u8]) -> Option<String> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    let ok = (1..=253).contains(&raw.len())
        && raw
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !raw.starts_with(b".")
        && !raw.windows(2).any(|w| w == b"..");
    // All ASCII, so this is UTF-8.
    ok.then(|| String::from_utf8_lossy(raw).to_ascii_lowercase())
}

/// An ALPN protocol name of visible ASCII (GREASE and binary names are skipped).
fn printable(p: &[u8]) -> Option<String> {
    (!p.is_empty() && p.iter().all(|b| (0x21..0x7f).contains(b)))
        .then(|| String::from_utf8_lossy(p).into_owned())
}

/// A big-endian 24-bit length.
fn u24(a: u8, b: u8, c: u8) -> usize {
    (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c)
}
