//! Tests of the payload classifier: real ClientHellos (rustls in-process; OpenSSL and curl
//! captures in testdata/), split at every byte; HTTP heads with credentials, cut short, with
//! secrets where they must not leak from; the other kinds; random and oversized input.
//! Secret-like values are made at run time from a fixed xorshift, never written here.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;

use super::*;
use crate::credential::Kind;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_760_000_000)
}

fn classifier() -> Classifier {
    Classifier::new(b"wire-unit-test-key", Duration::from_secs(24 * 3600))
}

fn classify(bytes: &[u8]) -> Payload {
    classify_payload(bytes, &classifier(), now())
}

/// xorshift64: deterministic pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Fake secret text of `len` characters from `alphabet`.
fn fake(seed: u64, len: usize, alphabet: &[u8]) -> String {
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|_| char::from(alphabet[rng.below(alphabet.len())]))
        .collect()
}

/// What a caller may print or write: Debug and JSON.
fn shown(p: &Payload) -> String {
    format!(
        "{p:?}\n{}",
        serde_json::to_string(p).expect("payload serialises")
    )
}

fn assert_hidden(p: &Payload, secrets: &[&str]) {
    let out = shown(p);
    for s in secrets {
        assert!(!out.contains(s), "secret {s:?} shown in {out}");
    }
}

// ---------------------------------------------------------------------------------------
// TLS

/// A real ClientHello from rustls (TLS 1.3 and 1.2 offered, ALPN h2 and http/1.1).
fn rustls_hello(server_name: &str) -> Vec<u8> {
    use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

fn hello_of(p: Payload) -> ClientHello {
    match p {
        Payload::TlsClientHello(h) => h,
        other => panic!("not a ClientHello: {other:?}"),
    }
}

/// The length the first record says, plus its header.
fn record_end(bytes: &[u8]) -> usize {
    5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]))
}

#[test]
fn rustls_hello_gives_sni_alpn_and_tls13() {
    let bytes = rustls_hello("api.example.test");
    assert!(is_tls_handshake(&bytes));
    assert_eq!(record_end(&bytes), bytes.len(), "one record");
    let hello = hello_of(classify(&bytes));
    assert_eq!(hello.sni.as_deref(), Some("api.example.test"));
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    assert_eq!(hello.version, "1.3");
}

#[test]
fn rustls_hello_split_anywhere_is_incomplete_then_whole() {
    let bytes = rustls_hello("api.example.test");
    let need = record_end(&bytes);
    let mut with_sni = 0;
    for cut in 0..bytes.len() {
        let (first, second) = bytes.split_at(cut);
        match classify(first) {
            Payload::Unknown if cut < 3 => {}
            Payload::TlsIncomplete {
                have,
                need: n,
                partial,
            } => {
                assert_eq!(have, cut);
                assert_eq!(n, if cut < 5 { 5 } else { need }, "cut {cut}");
                if let Some(p) = partial {
                    if p.sni.is_some() {
                        assert_eq!(p.sni.as_deref(), Some("api.example.test"));
                        with_sni += 1;
                    }
                    // ALPN names are only reported whole.
                    assert!(p.alpn.is_empty() || p.alpn.len() == 2, "cut {cut}: {p:?}");
                }
            }
            other => panic!("cut {cut}: {other:?}"),
        }
        // The two segments together.
        let mut joined = first.to_vec();
        joined.extend_from_slice(second);
        assert_eq!(
            hello_of(classify(&joined)).sni.as_deref(),
            Some("api.example.test")
        );
    }
    // The name is read from a cut hello once its extension was captured. rustls shuffles its
    // extensions, so where the name ends (and whether anything follows it) varies per run.
    let name_end = bytes
        .windows(b"api.example.test".len())
        .position(|w| w == b"api.example.test")
        .expect("SNI in the hello")
        + b"api.example.test".len();
    assert_eq!(
        with_sni,
        bytes.len() - name_end,
        "cuts after the name: all with SNI"
    );
}

#[test]
fn hello_fragmented_over_two_records_is_reassembled() {
    let bytes = rustls_hello("frag.example.test");
    let body = &bytes[5..];
    for split in [1, 4, 40, body.len() / 2, body.len() - 1] {
        let (a, b) = body.split_at(split);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 0x03, 0x03]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        let hello = hello_of(classify(&two));
        assert_eq!(hello.sni.as_deref(), Some("frag.example.test"));
        assert_eq!(hello.version, "1.3");
        // Only the first record: the second one is needed, header and all.
        let first = 5 + a.len();
        match classify(&two[..first]) {
            Payload::TlsIncomplete { have, need, .. } if split >= 4 => {
                assert_eq!((have, need), (first, two.len()), "split {split}");
            }
            // The message length is not known yet: at least the next header.
            Payload::TlsIncomplete { have, need, .. } => {
                assert_eq!((have, need), (first, first + 5), "split {split}");
            }
            other => panic!("split {split}: {other:?}"),
        }
        // Cut inside the second record's header, and inside its body.
        for cut in [first + 2, first + 7]
            .into_iter()
            .filter(|&c| c < two.len())
        {
            match classify(&two[..cut]) {
                Payload::TlsIncomplete { have, need, .. } => {
                    assert_eq!(have, cut);
                    assert!(need > have && need <= two.len(), "split {split} cut {cut}");
                }
                other => panic!("split {split} cut {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn ip_address_server_name_sends_no_sni() {
    let hello = hello_of(classify(&rustls_hello("192.0.2.10")));
    assert_eq!(hello.sni, None);
    assert_eq!(hello.alpn, ["h2", "http/1.1"]);
}

#[test]
fn openssl_and_curl_hellos() {
    let cases: [(&[u8], &str, &[&str], &str); 3] = [
        (
            include_bytes!("testdata/openssl_s_client.bin"),
            "db.example.test",
            &["postgresql"],
            "1.3",
        ),
        (
            include_bytes!("testdata/curl_https.bin"),
            "api.example.test",
            &["h2", "http/1.1"],
            "1.3",
        ),
        (
            include_bytes!("testdata/curl_tls12.bin"),
            "legacy.example.test",
            &["http/1.1"],
            "1.2",
        ),
    ];
    for (bytes, sni, alpn, version) in cases {
        let hello = hello_of(classify(bytes));
        assert_eq!(hello.sni.as_deref(), Some(sni));
        assert_eq!(hello.alpn, alpn, "{sni}");
        assert_eq!(hello.version, version, "{sni}");
        // The first half alone.
        let half = &bytes[..bytes.len() / 2];
        assert!(
            matches!(classify(half), Payload::TlsIncomplete { have, need, .. }
                if have == half.len() && need == record_end(bytes)),
            "{sni}"
        );
    }
}

#[test]
fn server_name_is_lowercased_and_must_be_dns_like() {
    let bytes = rustls_hello("api.example.test");
    let at = bytes
        .windows(16)
        .position(|w| w == b"api.example.test")
        .expect("name in hello");
    let mut upper = bytes.clone();
    upper[at..at + 3].copy_from_slice(b"API");
    assert_eq!(
        hello_of(classify(&upper)).sni.as_deref(),
        Some("api.example.test")
    );
    for bad in [0x07, b' ', 0xc3, b'/'] {
        let mut patched = bytes.clone();
        patched[at + 3] = bad;
        let hello = hello_of(classify(&patched));
        assert_eq!(hello.sni, None, "byte {bad:#x}");
        assert_eq!(hello.alpn, ["h2", "http/1.1"]);
    }
}

#[test]
fn malformed_tls_records() {
    let hello = rustls_hello("api.example.test");
    // Not a handshake record, or a bad version, length or handshake type.
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for (i, v) in [(0, 0x17), (1, 0x02), (5, 0x02)] {
        let mut b = hello.clone();
        b[i] = v;
        cases.push(b);
    }
    // An empty record.
    let mut empty = hello.clone();
    empty[3..5].copy_from_slice(&[0, 0]);
    cases.push(empty);
    // A record longer than 2^14.
    cases.push(vec![0x16, 0x03, 0x01, 0x40, 0x01, 0x01]);
    // A hello longer than any real one.
    cases.push(vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00]);
    // A complete record whose hello is garbage.
    cases.push(vec![
        0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xff,
    ]);
    // Another record type before the hello is complete.
    let mut mixed = hello[..40].to_vec();
    mixed[3..5].copy_from_slice(&35u16.to_be_bytes());
    mixed.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
    cases.push(mixed);
    for b in &cases {
        assert_eq!(classify(b), Payload::Unknown, "{b:02x?}");
    }
    // Too short to tell: the agent keeps waiting.
    assert_eq!(
        classify(&[0x16, 0x03, 0x01]),
        Payload::TlsIncomplete {
            have: 3,
            need: 5,
            partial: None
        }
    );
    assert_eq!(classify(&[0x16, 0x03]), Payload::Unknown);
    assert!(!is_tls_handshake(&[0x16, 0x03, 0x05]));
    assert!(!is_tls_handshake(&[0x16, 0x03]));
    assert!(is_tls_handshake(&[0x16, 0x03, 0x00]));
}

#[test]
fn trailing_bytes_after_the_hello_are_ignored() {
    let mut bytes = rustls_hello("api.example.test");
    bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]);
    let hello = hello_of(classify(&bytes));
    assert_eq!(hello.sni.as_deref(), Some("api.example.test"));
}

// ---------------------------------------------------------------------------------------
// HTTP

fn head_of(p: Payload) -> HttpHead {
    match p {
        Payload::HttpRequest(h) => h,
        other => panic!("not an HTTP request: {other:?}"),
    }
}

fn connect_of(p: Payload) -> HttpHead {
    match p {
        Payload::HttpConnect(h) => h,
        other => panic!("not a CONNECT: {other:?}"),
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn bearer_token_has_the_env_fingerprint() {
    let c = classifier();
    let token = format!("ghp_{}", fake(1, 36, ALNUM));
    let req = format!(
        "GET /repos/o/r/contents HTTP/1.1\r\nHost: API.GitHub.com\r\nUser-Agent: t\r\n\
         Authorization: Bearer {token}\r\nAccept: */*\r\n\r\n"
    );
    let p = classify_payload(req.as_bytes(), &c, now());
    assert_hidden(&p, &[&token, &token[4..]]);
    assert_eq!(p.kind(), "http_request");
    let head = head_of(p);
    assert_eq!(head.method, "GET");
    assert_eq!(head.host.as_deref(), Some("api.github.com"));
    assert_eq!(head.credentials.len(), 1, "{head:?}");
    let cred = &head.credentials[0];
    assert_eq!(cred.kind, Kind::GithubToken);
    assert_eq!(cred.location.as_deref(), Some("header authorization"));
    let env = c.classify_value(&token, Some("GITHUB_TOKEN"), now());
    assert_eq!(env.len(), 1, "env form: {env:?}");
    assert_eq!(cred.fingerprint, env[0].fingerprint);
    assert_eq!(cred.fingerprint, c.fingerprint(token.as_bytes()));
}

#[test]
fn basic_auth_gives_the_user_as_id() {
    let pw = fake(2, 24, ALNUM);
    let req = format!(
        "POST /api/v4/jobs HTTP/1.1\r\nHost: ci.example.test:8443\r\nAuthorization: Basic {}\r\n\
         Content-Length: 0\r\n\r\n",
        b64(&format!("deploy:{pw}"))
    );
    let p = classify(req.as_bytes());
    assert_hidden(&p, &[&pw]);
    let head = head_of(p);
    assert_eq!(head.method, "POST");
    assert_eq!(head.host.as_deref(), Some("ci.example.test:8443"));
    assert_eq!(head.credentials.len(), 1);
    let cred = &head.credentials[0];
    assert_eq!(cred.kind, Kind::GenericSecret);
    assert_eq!(cred.id.as_deref(), Some("deploy"));
    assert_eq!(cred.fingerprint, classifier().fingerprint(pw.as_bytes()));
}

/// Tokens and API keys sent as the Basic user name (`<token>:x-oauth-basic`, `<key>:X`,
/// `<token>:`) are the credential: never the id, with the fingerprint of the same token in a
/// Bearer header; the placeholder password is no credential; a real password next to a
/// token user is a second credential.
#[test]
fn basic_auth_with_a_token_as_user_never_shows_it() {
    let c = classifier();
    let token = format!("ghp_{}", fake(20, 36, ALNUM));
    let key = fake(21, 32, ALNUM);
    let pw = fake(22, 24, ALNUM);
    let request = |header: &str, userpass: &str| {
        format!(
            "GET /user HTTP/1.1\r\nHost: api.github.com\r\n{header}: Basic {}\r\n\r\n",
            b64(userpass)
        )
    };
    let bearer = |t: &str| c.fingerprint(t.as_bytes());
    let cases = [
        (
            "Authorization",
            format!("{token}:x-oauth-basic"),
            vec![(Kind::GithubToken, Some("ghp"), bearer(&token))],
        ),
        (
            "Authorization",
            format!("{token}:"),
            vec![(Kind::GithubToken, Some("ghp"), bearer(&token))],
        ),
        (
            "Authorization",
            format!("{key}:X"),
            vec![(Kind::GenericSecret, None, bearer(&key))],
        ),
        (
            "Proxy-Authorization",
            format!("{key}:x"),
            vec![(Kind::GenericSecret, None, bearer(&key))],
        ),
        (
            "Authorization",
            format!("{token}:{pw}"),
            vec![
                (Kind::GithubToken, Some("ghp"), bearer(&token)),
                (Kind::GenericSecret, None, bearer(&pw)),
            ],
        ),
    ];
    for (header, userpass, want) in cases {
        let req = request(header, &userpass);
        let p = classify_payload(req.as_bytes(), &c, now());
        assert_hidden(&p, &[&token[4..], &key, &pw, &b64(&userpass)]);
        let head = head_of(p);
        let got: Vec<_> = head
            .credentials
            .iter()
            .map(|c| (c.kind, c.id.as_deref(), c.fingerprint.clone()))
            .collect();
        assert_eq!(got, want, "{header}: {userpass:.8}...");
    }
    // An ordinary user name stays the id.
    for user in [
        "x-access-token",
        "git",
        "oauth2",
        "deploy-bot",
        "alice@example.com",
    ] {
        let head = head_of(classify(
            request("Authorization", &format!("{user}:{pw}")).as_bytes(),
        ));
        assert_eq!(head.credentials.len(), 1, "{user}");
        assert_eq!(head.credentials[0].id.as_deref(), Some(user));
        assert_eq!(head.credentials[0].fingerprint, bearer(&pw));
    }
}

#[test]
fn sigv4_gives_the_access_key_id() {
    let akia = format!("AKIA{}", fake(3, 16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"));
    let sig = fake(4, 64, b"0123456789abcdef");
    let req = format!(
        "PUT /bucket/key HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\n\
         X-Amz-Date: 20260101T000000Z\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={akia}/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={sig}\r\n\r\n"
    );
    let p = classify(req.as_bytes());
    assert_hidden(&p, &[&sig]);
    let head = head_of(p);
    assert_eq!(head.credentials.len(), 1);
    assert_eq!(head.credentials[0].kind, Kind::AwsAccessKey);
    assert_eq!(head.credentials[0].id.as_deref(), Some(akia.as_str()));
}

#[test]
fn path_query_cookies_and_other_values_never_shown() {
    let in_query = fake(5, 32, ALNUM);
    let in_path = fake(6, 32, ALNUM);
    let in_cookie = fake(7, 32, ALNUM);
    let in_header = fake(8, 32, ALNUM);
    let in_bearer = fake(9, 40, ALNUM);
    let in_body = fake(10, 32, ALNUM);
    let in_host = fake(11, 20, ALNUM);
    let req = format!(
        "GET http://u:{in_host}@files.example.test/dl/{in_path}?token={in_query}&x=1 HTTP/1.1\r\n\
         Cookie: session={in_cookie}\r\nX-Request-Signature: {in_header}\r\n\
         Authorization: Bearer {in_bearer}\r\n\r\n{in_body}"
    );
    let p = classify(req.as_bytes());
    let secrets = [
        &in_query, &in_path, &in_cookie, &in_header, &in_bearer, &in_body, &in_host,
    ];
    assert_hidden(&p, &secrets.map(String::as_str));
    let head = head_of(p);
    // No Host header: the authority of the absolute-form target, without its user info.
    assert_eq!(head.host.as_deref(), Some("files.example.test"));
    // The bearer token only: cookies are not workload credentials, and the signature header
    // has no known shape.
    assert_eq!(head.credentials.len(), 1, "{head:?}");
    assert_eq!(head.credentials[0].kind, Kind::GenericSecret);
    // And every prefix of it, cut anywhere.
    for cut in 0..req.len() {
        assert_hidden(
            &classify(&req.as_bytes()[..cut]),
            &secrets.map(String::as_str),
        );
    }
}

#[test]
fn host_header_loses_user_info_and_bad_hosts_are_dropped() {
    let cases = [
        ("u:p@Example.TEST:8080", Some("example.test:8080")),
        ("[2001:db8::1]:443", Some("[2001:db8::1]:443")),
        ("a b", None),
        ("", None),
        ("x/y", None),
        ("user:not-a-port", None),
        ("[::1", None),
        ("h:123456", None),
    ];
    for (host, want) in cases {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(
            head_of(classify(req.as_bytes())).host.as_deref(),
            want,
            "{host}"
        );
    }
}

#[test]
fn truncated_head_keeps_its_complete_lines() {
    let token = format!("glpat-{}", fake(12, 20, ALNUM));
    let key = fake(13, 32, ALNUM);
    let req = format!(
        "POST /graphql?q=1 HTTP/1.1\r\nHost: gitlab.example.test\r\nPrivate-Token: {token}\r\n\
         X-Api-Key: {key}\r\nContent-Type: application/json\r\n\r\n"
    );
    let bytes = req.as_bytes();
    let full = head_of(classify(bytes));
    assert_eq!(full.credentials.len(), 2, "{full:?}");
    let line_end = |needle: &str| req.find(needle).expect("line") + needle.len();
    let host_end = line_end("gitlab.example.test\r\n");
    let token_end = line_end(&format!("{token}\r\n"));
    let key_end = line_end(&format!("{key}\r\n"));
    for cut in 5..bytes.len() {
        let p = classify(&bytes[..cut]);
        assert_hidden(&p, &[&token, &key]);
        let head = head_of(p);
        assert_eq!(head.method, "POST");
        let want_host = (cut >= host_end).then_some("gitlab.example.test");
        assert_eq!(head.host.as_deref(), want_host, "cut {cut}");
        // A value cut short is not classified: it would have the wrong fingerprint.
        let want = usize::from(cut >= token_end) + usize::from(cut >= key_end);
        assert_eq!(head.credentials.len(), want, "cut {cut}");
        if want > 0 {
            assert_eq!(head.credentials[0], full.credentials[0]);
        }
    }
}

#[test]
fn connect_through_a_proxy() {
    // Captured from curl.
    let bytes = include_bytes!("testdata/curl_connect.bin");
    let p = classify(bytes);
    assert_eq!(p.kind(), "http_connect");
    assert_hidden(&p, &["not-a-real-password"]);
    let head = connect_of(p);
    assert_eq!(head.method, "CONNECT");
    assert_eq!(head.host.as_deref(), Some("api.example.test:443"));
    assert_eq!(head.credentials.len(), 1);
    assert_eq!(head.credentials[0].id.as_deref(), Some("proxyuser"));
    assert_eq!(
        head.credentials[0].location.as_deref(),
        Some("header proxy-authorization")
    );

    let pw = fake(14, 20, ALNUM);
    let req = format!(
        "CONNECT db.internal.test:5432 HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n\r\n",
        b64(&format!("svc:{pw}"))
    );
    let p = classify(req.as_bytes());
    assert_hidden(&p, &[&pw]);
    let head = connect_of(p);
    assert_eq!(head.host.as_deref(), Some("db.internal.test:5432"));
    assert_eq!(head.credentials[0].id.as_deref(), Some("svc"));
    assert_eq!(
        head.credentials[0].fingerprint,
        classifier().fingerprint(pw.as_bytes())
    );
    // Cut in the request line, after the authority.
    let head = connect_of(classify(b"CONNECT db.internal.test:5432 HT"));
    assert_eq!(head.host.as_deref(), Some("db.internal.test:5432"));
    let head = connect_of(classify(b"CONNECT db.internal.te"));
    assert_eq!(head.host, None);
}

#[test]
fn many_headers_keep_the_first_ones() {
    let token = format!("ghp_{}", fake(15, 36, ALNUM));
    let mut req =
        format!("GET / HTTP/1.1\r\nHost: h.example.test\r\nAuthorization: token {token}\r\n");
    for i in 0..200 {
        req.push_str(&format!("X-Filler-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let head = head_of(classify(req.as_bytes()));
    assert_eq!(head.host.as_deref(), Some("h.example.test"));
    assert_eq!(head.credentials.len(), 1);
    assert_eq!(head.credentials[0].kind, Kind::GithubToken);
    // And cut short as well.
    let head = head_of(classify(&req.as_bytes()[..req.len() - 10]));
    assert_eq!(head.credentials.len(), 1);
}

#[test]
fn malformed_heads_are_unknown() {
    for bad in [
        &b"GET / HTTP/9.9\r\n\r\n"[..],
        b"GET /\x01 HTTP/1.1\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
    ] {
        assert_eq!(classify(bad), Payload::Unknown, "{}", bad.escape_ascii());
    }
    assert!(is_http_request(b"GET /"));
    assert!(is_http_request(b"DELETE "));
    assert!(!is_http_request(b"GET"));
    assert!(!is_http_request(b"GETX /"));
    assert!(!is_http_request(b"get / HTTP/1.1"));
    assert!(!is_http_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
}

// ---------------------------------------------------------------------------------------
// Other kinds

#[test]
fn postgres_ssl_and_gssenc_requests() {
    let ssl = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let gss = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
    assert_eq!(classify(&ssl), Payload::PostgresSslRequest);
    assert_eq!(classify(&gss), Payload::PostgresSslRequest);
    assert_eq!(Payload::PostgresSslRequest.kind(), "postgres_ssl_request");
    assert_eq!(classify(&ssl[..7]), Payload::Unknown);
    // A CancelRequest is not one.
    assert_eq!(
        classify(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2]),
        Payload::Unknown
    );
}

#[test]
fn text_commands() {
    for line in [
        &b"EHLO x\r\n"[..],
        b"ehlo mail.example.test\r\n",
        b"STARTTLS\r\n",
        b"a1 CAPABILITY\r\n",
        b"A001 STARTTLS\r\n",
        b"CAPA\r\n",
        b"STLS\n",
        b"AUTH TLS\r\n",
        b"AUTH PLAIN AGFsaWNlAHBhc3N3b3Jk\r\n",
    ] {
        let p = classify(line);
        assert_eq!(p, Payload::TextCommand, "{}", line.escape_ascii());
        // The line itself is not kept.
        assert_eq!(shown(&p), "TextCommand\n{\"kind\":\"text_command\"}");
    }
    for line in [
        &b"EHLO x"[..],
        b"hello world\r\n",
        b"EHLO \x01\r\n",
        b"a1 FETCH 1\r\n",
        b"\r\n",
    ] {
        assert_eq!(classify(line), Payload::Unknown, "{}", line.escape_ascii());
    }
}

#[test]
fn kind_names_match_the_serialised_tag() {
    let hello = ClientHello {
        sni: None,
        alpn: Vec::new(),
        version: "1.2",
    };
    let head = HttpHead {
        method: "GET".into(),
        host: None,
        credentials: Vec::new(),
    };
    let all = [
        Payload::TlsClientHello(hello),
        Payload::TlsIncomplete {
            have: 1,
            need: 5,
            partial: None,
        },
        Payload::HttpRequest(head.clone()),
        Payload::HttpConnect(head),
        Payload::PostgresSslRequest,
        Payload::TextCommand,
        Payload::Unknown,
    ];
    for (p, name) in all.iter().zip(Payload::KINDS) {
        assert_eq!(p.kind(), name);
        let json = serde_json::to_value(p).expect("serialises");
        assert_eq!(json["kind"], name);
    }
}

// ---------------------------------------------------------------------------------------
// Garbage: never a panic, and bounded work.

#[test]
fn random_bytes_never_panic() {
    let c = classifier();
    let hello = rustls_hello("api.example.test");
    let prefixes: [&[u8]; 6] = [
        b"",
        &[0x16, 0x03, 0x01],
        &hello[..9],
        b"GET / HTTP/1.1\r\nHost: ",
        b"CONNECT ",
        &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
    ];
    let mut rng = Rng::new(42);
    for i in 0..4000 {
        let len = rng.below(if i % 10 == 0 { 20_000 } else { 600 });
        let mut buf = prefixes[i % prefixes.len()].to_vec();
        buf.extend(rng.bytes(len));
        let p = classify_payload(&buf, &c, now());
        assert!(Payload::KINDS.contains(&p.kind()));
        serde_json::to_string(&p).expect("serialises");
    }
    // Real inputs with random bytes flipped.
    for i in 0..2000 {
        let mut buf = hello.clone();
        for _ in 0..1 + i % 4 {
            let at = rng.below(buf.len());
            buf[at] = rng.next() as u8;
        }
        let _ = classify_payload(&buf, &c, now());
    }
}

#[test]
fn oversized_input_is_cut_and_quick() {
    let start = std::time::Instant::now();
    let mut big = b"GET / HTTP/1.1\r\nHost: big.example.test\r\n".to_vec();
    while big.len() < 4 << 20 {
        big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let head = head_of(classify(&big));
    assert_eq!(head.host.as_deref(), Some("big.example.test"));
    // One header line of megabytes, no newline.
    let mut long = b"POST / HTTP/1.1\r\nHost: a.test\r\nX: ".to_vec();
    long.resize(4 << 20, b'a');
    assert_eq!(head_of(classify(&long)).host.as_deref(), Some("a.test"));
    // A TLS record header followed by megabytes.
    let mut tls = rustls_hello("api.example.test");
    tls.resize(4 << 20, 0x41);
    assert_eq!(
        hello_of(classify(&tls)).sni.as_deref(),
        Some("api.example.test")
    );
    // Megabytes of newlines and of one command-like line.
    assert_eq!(classify(&vec![b'\n'; 4 << 20]), Payload::Unknown);
    let mut line = b"EHLO ".to_vec();
    line.resize(4 << 20, b'x');
    assert_eq!(classify(&line), Payload::Unknown);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
