//! `wire::classify_payload` on arbitrary first bytes of a connection, as the kernel captures
//! them (a TLS record, an HTTP head, anything).
//!
//! Input: the payload itself. Besides not panicking: the kind is one of `Payload::KINDS`, a
//! cut TLS record needs more than it has, a server name is lowercase DNS-like text, every
//! credential of an HTTP head passes the shared checks, and the payload serialises.

#![no_main]

use keytrail::wire::{MAX_PAYLOAD, Payload, classify_payload};
use keytrail_fuzz::{check_all, classifier, now};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let payload = classify_payload(data, classifier(), now());
    assert!(Payload::KINDS.contains(&payload.kind()));
    let hello = match &payload {
        Payload::TlsClientHello(hello) => Some(hello),
        Payload::TlsIncomplete {
            have,
            need,
            partial,
        } => {
            assert_eq!(*have, data.len().min(MAX_PAYLOAD));
            assert!(need > have, "need {need} <= have {have}");
            partial.as_ref()
        }
        Payload::HttpRequest(head) | Payload::HttpConnect(head) => {
            check_all(&head.credentials);
            None
        }
        _ => None,
    };
    if let Some(sni) = hello.and_then(|h| h.sni.as_deref()) {
        assert!(
            sni.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "server name {sni:?}"
        );
    }
    let _ = format!("{payload:?}");
    if let Err(e) = serde_json::to_string(&payload) {
        panic!("payload does not serialise: {e}");
    }
});
