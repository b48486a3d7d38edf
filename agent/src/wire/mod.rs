//! What the first bytes a client sends on an outbound TCP connection are: a TLS ClientHello
//! (server name, ALPN, version), an HTTP/1.x request head (method, Host and the credentials of
//! its headers), an HTTP proxy `CONNECT`, a PostgreSQL SSLRequest or a mail-style text command
//! that may be followed by STARTTLS.
//!
//! The kernel hands over the first payload packet(s) of each connection and the first
//! plaintext buffer given to `SSL_write`; this module turns those bytes into facts that tie a
//! credential to a destination. Pure: no I/O, no state. Nothing here returns secret material:
//! the request path and query, cookies and header values are never copied out, only the
//! method, the Host (without `user:pass@`) and the [`Credential`]s of the classifier, which
//! hold a fingerprint, never the secret. Parsers never panic, whatever the input, and look at
//! no more than [`MAX_PAYLOAD`] bytes.

use std::time::SystemTime;

use serde::Serialize;

use crate::credential::{Classifier, Credential};

mod http;
mod tls;

#[cfg(test)]
mod tests;

/// At most this many leading bytes of a payload are looked at; the rest is ignored (the
/// kernel captures about 2 KiB per packet, so this only bounds the work on odd callers).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What the first bytes a client sent on a connection are.
///
/// `Debug` and `Serialize` show no secret: only the fields below, and [`Credential`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// A complete TLS ClientHello.
    TlsClientHello(ClientHello),
    /// A TLS handshake record that continues past the captured bytes (a ClientHello split
    /// across segments, or longer than the capture).
    TlsIncomplete {
        /// Bytes captured (at most [`MAX_PAYLOAD`]).
        have: usize,
        /// Bytes the ClientHello needs from the start of the payload: `5 +` the record length
        /// when the hello fits in its first record (the usual case); a lower bound when it
        /// spans records, or `5` when not even the record header was captured.
        need: usize,
        /// What the captured part of the hello says (SNI, ALPN, ...) when its fixed fields
        /// were captured; the extensions after the cut are missing, so `version` may read
        /// "1.2" for a TLS 1.3 hello whose supported_versions was cut off.
        partial: Option<ClientHello>,
    },
    /// An HTTP/1.x request head (possibly cut short by the capture).
    HttpRequest(HttpHead),
    /// `CONNECT host:port HTTP/1.1` through a proxy: the authority, and the credentials
    /// (Proxy-Authorization). TLS to the destination usually follows.
    HttpConnect(HttpHead),
    /// PostgreSQL SSLRequest or GSSENCRequest: TLS (or GSSAPI) follows in a later packet, which
    /// the caller classifies on its own.
    PostgresSslRequest,
    /// An SMTP/IMAP/POP3/FTP-style command line (EHLO, STARTTLS, `a1 CAPABILITY`, ...): TLS may
    /// follow. Its text is not kept (AUTH and LOGIN lines carry passwords).
    TextCommand,
    /// None of the above, or malformed.
    Unknown,
}

impl Payload {
    /// Stable snake_case name of the variant, for counters (the same as the `kind` field of
    /// the serialised form).
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::TlsClientHello(_) => "tls_client_hello",
            Payload::TlsIncomplete { .. } => "tls_incomplete",
            Payload::HttpRequest(_) => "http_request",
            Payload::HttpConnect(_) => "http_connect",
            Payload::PostgresSslRequest => "postgres_ssl_request",
            Payload::TextCommand => "text_command",
            Payload::Unknown => "unknown",
        }
    }

    /// Every kind name [`Payload::kind`] returns, e.g. to pre-register counters.
    pub const KINDS: [&'static str; 7] = [
        "tls_client_hello",
        "tls_incomplete",
        "http_request",
        "http_connect",
        "postgres_ssl_request",
        "text_command",
        "unknown",
    ];
}

/// The facts of a TLS ClientHello that name the destination and the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientHello {
    /// The server_name extension's host_name, lowercased, without a trailing dot; `None` when
    /// absent (e.g. a connection by IP address) or not DNS-like text.
    pub sni: Option<String>,
    /// ALPN protocol names offered, in order (printable ASCII ones only).
    pub alpn: Vec<String>,
    /// "1.3" when supported_versions offers TLS 1.3 (0x0304), else from the hello's legacy
    /// version: "1.2", "1.1", "1.0", "ssl3" or "unknown".
    pub version: &'static str,
}

/// The facts of an HTTP/1.x request head. Never the path, the query, cookies or any header
/// value: they carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpHead {
    /// The request method (one of the known methods, upper case).
    pub method: String,
    /// The Host header (or, for CONNECT, the request's authority; for a proxy request in
    /// absolute form without a Host header, the URI's authority), lowercased, without
    /// `user:pass@`; `None` when absent or not host-like text.
    pub host: Option<String>,
    /// What [`Classifier::classify_header`] found in the complete header lines, in order.
    pub credentials: Vec<Credential>,
}

/// Classifies the first bytes a client sent on a connection.
///
/// Checks, in order: a TLS handshake record, a PostgreSQL SSLRequest/GSSENCRequest, an HTTP
/// request (a known method and a space), a text command line. Only the first
/// [`MAX_PAYLOAD`] bytes are looked at.
pub fn classify_payload(bytes: &[u8], classifier: &Classifier, now: SystemTime) -> Payload {
    let bytes = &bytes[..bytes.len().min(MAX_PAYLOAD)];
    if is_tls_handshake(bytes) {
        tls::classify(bytes)
    } else if is_postgres_ssl_request(bytes) {
        Payload::PostgresSslRequest
    } else if is_http_request(bytes) {
        http::classify(bytes, classifier, now)
    } else if is_text_command(bytes) {
        Payload::TextCommand
    } else {
        Payload::Unknown
    }
}

/// Whether the bytes start like a TLS handshake record: content type 0x16, then a version
/// 0x03 0x00..=0x04. Three bytes are enough; the agent uses this to keep waiting for the rest
/// of a ClientHello.
pub fn is_tls_handshake(bytes: &[u8]) -> bool {
    matches!(bytes, [0x16, 0x03, 0x00..=0x04, ..])
}

/// Whether the bytes start with a known HTTP method token followed by a space.
pub fn is_http_request(bytes: &[u8]) -> bool {
    http::method_of(bytes).is_some()
}

/// PostgreSQL SSLRequest (length 8, code 80877103) and GSSENCRequest (code 80877104).
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const PG_GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

fn is_postgres_ssl_request(bytes: &[u8]) -> bool {
    bytes.starts_with(&PG_SSL_REQUEST) || bytes.starts_with(&PG_GSSENC_REQUEST)
}

/// Longest command line considered (SMTP allows 512 bytes per command line, IMAP more).
const MAX_COMMAND_LINE: usize = 1024;

/// Command words that a client sends first or before STARTTLS/STLS/AUTH TLS, per protocol:
/// SMTP and LMTP, POP3, FTP.
const COMMANDS: [&[&str]; 3] = [
    &[
        "EHLO", "HELO", "LHLO", "STARTTLS", "AUTH", "MAIL", "RSET", "NOOP", "QUIT", "HELP",
    ],
    &["CAPA", "STLS", "USER", "APOP", "AUTH", "QUIT"],
    &["AUTH", "FEAT", "SYST", "PBSZ", "PROT", "OPTS", "USER"],
];

/// IMAP commands a client sends first, after its tag (`a1 CAPABILITY`).
const IMAP_COMMANDS: &[&str] = &[
    "CAPABILITY",
    "STARTTLS",
    "LOGIN",
    "AUTHENTICATE",
    "NOOP",
    "ID",
    "ENABLE",
    "LOGOUT",
];

/// A first line of printable ASCII, ended by a newline, whose first word (or, for IMAP, the
/// word after an alphanumeric tag) is a known command.
fn is_text_command(bytes: &[u8]) -> bool {
    let window = &bytes[..bytes.len().min(MAX_COMMAND_LINE)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = window[..end].strip_suffix(b"\r").unwrap_or(&window[..end]);
    if line.is_empty()
        || !line
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    // Printable ASCII, so UTF-8.
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut words = line.split(' ');
    let first = words.next().unwrap_or("");
    if COMMANDS
        .iter()
        .flat_map(|p| p.iter())
        .any(|c| c.eq_ignore_ascii_case(first))
    {
        return true;
    }
    let tag_ok = (1..=32).contains(&first.len())
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    let second = words.next().unwrap_or("");
    tag_ok && IMAP_COMMANDS.iter().any(|c| c.eq_ignore_ascii_case(second))
}
