//! HTTP/1.x request heads, read with httparse: the method, the Host (or a CONNECT's
//! authority) and what the classifier makes of each header. A head cut by the capture gives
//! what its complete lines say. The path, the query and header values are never copied out.

use std::time::SystemTime;

use httparse::{EMPTY_HEADER, ParserConfig, Request, Status};

use super::{HttpHead, Payload};
use crate::credential::Classifier;

/// Known request methods (RFC 9110, PATCH, WebDAV): a payload must start with one of these and
/// a space to be read as HTTP.
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "REPORT",
    "SEARCH",
];

/// Header lines read per head; the lines after these are ignored.
const MAX_HEADERS: usize = 64;

/// Longest host text kept: a 253-byte name, or a bracketed IPv6 address, and a port.
const MAX_HOST: usize = 300;

/// The known method the bytes start with, followed by a space.
pub(super) fn method_of(bytes: &[u8]) -> Option<&'static str> {
    METHODS.iter().copied().find(|m| {
        bytes
            .strip_prefix(m.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b' '))
    })
}

/// Bytes that start with a known method and a space.
pub(super) fn classify(bytes: &[u8], classifier: &Classifier, now: SystemTime) -> Payload {
    let Some(method) = method_of(bytes) else {
        return Payload::Unknown;
    };
    let wrap = |head: HttpHead| {
        if method == "CONNECT" {
            Payload::HttpConnect(head)
        } else {
            Payload::HttpRequest(head)
        }
    };
    let mut owned: Vec<u8>;
    let mut view = bytes;
    // A cut head is re-read once as its complete lines, and a head with too many headers as
    // its first lines: at most two re-reads.
    for _ in 0..3 {
        let cut = match parse(view, method, classifier, now) {
            Parsed::Head(head) => return wrap(head),
            Parsed::Invalid => return Payload::Unknown,
            Parsed::Partial => match view.iter().rposition(|&b| b == b'\n') {
                Some(end) => end,
                // Cut inside the request line.
                None => return wrap(request_line_only(view, method)),
            },
            Parsed::TooManyHeaders => {
                // The request line and MAX_HEADERS - 1 header lines.
                match newlines(view).nth(MAX_HEADERS - 1) {
                    Some(end) => end,
                    None => return Payload::Unknown,
                }
            }
        };
        let mut next = Vec::with_capacity(cut + 3);
        next.extend_from_slice(&view[..=cut]);
        next.extend_from_slice(b"\r\n");
        owned = next;
        view = &owned;
    }
    Payload::Unknown
}

enum Parsed {
    Head(HttpHead),
    Partial,
    TooManyHeaders,
    Invalid,
}

fn parse(buf: &[u8], method: &str, classifier: &Classifier, now: SystemTime) -> Parsed {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut req = Request::new(&mut headers);
    let mut config = ParserConfig::default();
    // Skip a malformed header line rather than lose the whole head.
    config.ignore_invalid_headers_in_requests(true);
    match config.parse_request(&mut req, buf) {
        Ok(Status::Complete(_)) => Parsed::Head(head(&req, method, classifier, now)),
        Ok(Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooManyHeaders,
        Err(_) => Parsed::Invalid,
    }
}

fn head(req: &Request<'_, '_>, method: &str, classifier: &Classifier, now: SystemTime) -> HttpHead {
    let header_host = || {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(clean_host)
    };
    let path = req.path.unwrap_or("");
    let host = if method == "CONNECT" {
        clean_host(path).or_else(header_host)
    } else {
        header_host().or_else(|| uri_authority(path).and_then(clean_host))
    };
    let credentials = req
        .headers
        .iter()
        .filter_map(|h| {
            let value = std::str::from_utf8(h.value).ok()?;
            Some(classifier.classify_header(h.name, value, now))
        })
        .flatten()
        .collect();
    HttpHead {
        method: method.to_string(),
        host,
        credentials,
    }
}

/// A head cut inside its request line: the method, and a CONNECT's authority when it is
/// complete (followed by a space).
fn request_line_only(bytes: &[u8], method: &str) -> HttpHead {
    let host = (method == "CONNECT")
        .then(|| bytes.get(method.len() + 1..))
        .flatten()
        .and_then(|rest| {
            let end = rest.iter().position(|&b| b == b' ')?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .and_then(clean_host);
    HttpHead {
        method: method.to_string(),
        host,
        credentials: Vec::new(),
    }
}

/// Positions of the newlines in `buf`.
fn newlines(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    buf.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i)
}

/// The authority of an absolute-form request target (`http://host:port/path`), as sent to a
/// proxy.
fn uri_authority(path: &str) -> Option<&str> {
    let (scheme, rest) = path.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Host text (`name`, `name:port`, `[v6]`, `[v6]:port`) without any `user:pass@`,
/// lowercased; `None` when empty, too long or not host-like (so a stray `user:password` is
/// never taken for a host and port).
fn clean_host(raw: &str) -> Option<String> {
    let h = raw.trim();
    let h = h.rsplit_once('@').map_or(h, |(_, host)| host);
    if h.is_empty() || h.len() > MAX_HOST {
        return None;
    }
    let (name_ok, port) = match h.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            let ok = !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
            (ok, after)
        }
        None => {
            let (name, port) = h.split_at(h.find(':').unwrap_or(h.len()));
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            (ok, port)
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    (name_ok && port_ok).then(|| h.to_ascii_lowercase())
}
