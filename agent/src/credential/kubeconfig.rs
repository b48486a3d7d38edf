//! kubeconfig files (YAML or JSON, `kind: Config`): one credential per secret form in each
//! `users[]` entry: client key (static unless its certificate says otherwise), token (JWT
//! rules; an opaque token is static, a bootstrap token unknown), username/password (static),
//! exec or auth-provider plugins (short-lived: they mint tokens). The id is the cluster server
//! and the user name.

use base64::Engine as _;
use serde_yaml_ng::Value;

use super::{Credential, Ctx, Kind, Lifetime, MAX_CREDENTIALS, Skip, b64, jwt, pem, tokens};

/// Whether text may be a kubeconfig (cheap check before parsing YAML).
pub(super) fn looks_like(text: &str) -> bool {
    let has_kind = text.lines().any(|l| {
        let l = l.trim().trim_end_matches(',');
        l == "kind: Config" || l == "\"kind\": \"Config\"" || l == "kind: \"Config\""
    });
    has_kind && text.contains("users")
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The server of the cluster of the context that uses `user` (the current context first).
fn server_of<'a>(doc: &'a Value, user: &str) -> Option<&'a str> {
    let current = str_at(doc, "current-context");
    let contexts = seq(doc, "contexts");
    let uses_user = |c: &&Value| c.get("context").and_then(|c| str_at(c, "user")) == Some(user);
    let ctx = contexts
        .iter()
        .filter(uses_user)
        .find(|c| current.is_some() && str_at(c, "name") == current)
        .or_else(|| contexts.iter().find(uses_user))?;
    let cluster = ctx.get("context").and_then(|c| str_at(c, "cluster"))?;
    seq(doc, "clusters")
        .iter()
        .find(|c| str_at(c, "name") == Some(cluster))
        .and_then(|c| c.get("cluster"))
        .and_then(|c| str_at(c, "server"))
}

fn decode_data(v: &str) -> Option<Vec<u8>> {
    b64::STANDARD
        .decode(
            v.bytes()
                .filter(|b| !b.is_ascii_whitespace())
                .collect::<Vec<u8>>(),
        )
        .ok()
}

/// The lifetime of a `users[].user.token` that is not a JWT. A bootstrap token
/// (`[a-z0-9]{6}.[a-z0-9]{16}`) lives in a cluster Secret whose expiry the file does not show:
/// unknown. A token of a known shape has that shape's lifetime. Any other opaque token is an
/// entry of a static token file, a long-lived service account token Secret or the like, none
/// of which expire: static.
fn opaque_token_lifetime(token: &str) -> Lifetime {
    if is_bootstrap_token(token) {
        return Lifetime::Unknown;
    }
    tokens::detect(token).map_or(Lifetime::Static, |m| m.lifetime)
}

/// `[a-z0-9]{6}\.[a-z0-9]{16}`: a kubeadm bootstrap token (token id, dot, token secret).
fn is_bootstrap_token(token: &str) -> bool {
    let part = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    token
        .split_once('.')
        .is_some_and(|(id, secret)| part(id, 6) && part(secret, 16))
}

/// Deeper flow nesting than this is refused before parsing (the YAML parser slows down
/// badly on thousands of nested brackets; real kubeconfigs nest a few levels).
const MAX_FLOW_DEPTH: usize = 64;

fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

pub(super) fn classify(cx: &Ctx<'_>, text: &str) -> Result<Vec<Credential>, Skip> {
    if flow_depth(text) > MAX_FLOW_DEPTH {
        return Err(Skip::Malformed("kubeconfig nested too deeply"));
    }
    let doc: Value =
        serde_yaml_ng::from_str(text).map_err(|_| Skip::Malformed("kubeconfig does not parse"))?;
    if doc.get("users").is_none() && doc.get("clusters").is_none() {
        return Err(Skip::Unrecognised);
    }
    let mut out = Vec::new();
    for (i, entry) in seq(&doc, "users").iter().enumerate().take(MAX_CREDENTIALS) {
        let name = str_at(entry, "name").unwrap_or("");
        let Some(user) = entry.get("user") else {
            continue;
        };
        let id = match server_of(&doc, name) {
            Some(server) => format!("{server} {name}"),
            None => name.to_string(),
        };
        let location = if name.is_empty() {
            format!("users[{i}]")
        } else {
            format!("users[{i}] {name}")
        };
        let mut push = |c: Credential| out.push(c.with_id(id.clone()).at(location.clone()));

        if let Some(key) = str_at(user, "client-key-data").and_then(decode_data) {
            // The key's DER, so the same key in a PEM file has the same fingerprint.
            let key_text = String::from_utf8_lossy(&key);
            let secret = pem::first_private_key_der(&key_text).unwrap_or(key);
            let cert = str_at(user, "client-certificate-data")
                .and_then(decode_data)
                .and_then(|c| pem::first_certificate(cx, &String::from_utf8_lossy(&c)));
            let c = match cert {
                Some(cert) => cx
                    .cred(Kind::Kubeconfig, cert.cred.lifetime, secret)
                    .times(cert.not_before, cert.not_after),
                None => cx.cred(Kind::Kubeconfig, Lifetime::Static, secret),
            };
            push(c);
        }
        if let Some(token) = str_at(user, "token") {
            let c = match jwt::classify(cx, token, None) {
                Some(j) => Credential {
                    kind: Kind::Kubeconfig,
                    id: None,
                    ..j
                },
                None => cx.cred(Kind::Kubeconfig, opaque_token_lifetime(token), token),
            };
            push(c);
        }
        if let Some(password) = user.get("password").and_then(Value::as_str)
            && !password.is_empty()
        {
            push(cx.cred(Kind::Kubeconfig, Lifetime::Static, password));
        }
        if let Some(exec) = user.get("exec") {
            // Not secret: a stable fingerprint of the plugin and the user it runs for.
            let command = str_at(exec, "command").unwrap_or("");
            push(cx.cred(
                Kind::Kubeconfig,
                Lifetime::ShortLived,
                format!("exec:{command}:{name}"),
            ));
        }
        if let Some(provider) = user.get("auth-provider") {
            let pname = str_at(provider, "name").unwrap_or("");
            push(cx.cred(
                Kind::Kubeconfig,
                Lifetime::ShortLived,
                format!("auth-provider:{pname}:{name}"),
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credential::tests::{ALNUM, NOW_SECS, classifier, fake, jwt, now};

    const LOWER_DIGITS: &str = "abcdefghijklmnopqrstuvwxyz0123456789";

    fn token_lifetimes(tokens: &[&str]) -> Vec<Lifetime> {
        let users: String = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| format!("- name: u{i}\n  user:\n    token: \"{t}\"\n"))
            .collect();
        let text = format!("apiVersion: v1\nkind: Config\nusers:\n{users}");
        let creds = classify(&classifier().ctx(now()), &text).unwrap();
        assert!(creds.iter().all(|c| c.kind == Kind::Kubeconfig));
        creds.iter().map(|c| c.lifetime).collect()
    }

    #[test]
    fn opaque_tokens_are_static_and_bootstrap_tokens_unknown() {
        let opaque = fake(90, 40, ALNUM);
        let opaque_lower = fake(91, 32, LOWER_DIGITS);
        let bootstrap = format!(
            "{}.{}",
            fake(92, 6, LOWER_DIGITS),
            fake(93, 16, LOWER_DIGITS)
        );
        assert_eq!(
            token_lifetimes(&[&opaque, &opaque_lower, &bootstrap]),
            [Lifetime::Static, Lifetime::Static, Lifetime::Unknown]
        );
    }

    #[test]
    fn near_bootstrap_shapes_are_opaque() {
        let (id, secret) = (fake(94, 6, LOWER_DIGITS), fake(95, 16, LOWER_DIGITS));
        let near = [
            format!("{}.{secret}", id.to_ascii_uppercase()),
            format!("{id}.{}", secret.to_ascii_uppercase()),
            format!("{id}x.{secret}"),
            format!("{id}.{secret}x"),
            format!("{}.{secret}", &id[..5]),
            format!("{id}-{secret}"),
            format!("{id}.{secret}.{id}"),
        ];
        let near: Vec<&str> = near.iter().map(String::as_str).collect();
        assert_eq!(token_lifetimes(&near), vec![Lifetime::Static; near.len()]);
        assert!(is_bootstrap_token(&format!("{id}.{secret}")));
    }

    #[test]
    fn jwt_tokens_keep_their_rules() {
        let n = NOW_SECS;
        let bound = jwt(json!({
            "sub": "system:serviceaccount:a:b", "iat": n, "exp": n + 365 * 86400,
            "kubernetes.io": {"namespace": "a", "serviceaccount": {"name": "b"}, "warnafter": n + 3600}
        }));
        let hour =
            jwt(json!({"iss": "https://idp.example", "sub": "x", "iat": n, "exp": n + 3600}));
        let no_exp = jwt(json!({"iss": "https://idp.example", "sub": "y"}));
        assert_eq!(
            token_lifetimes(&[&bound, &hour, &no_exp]),
            [Lifetime::ShortLived, Lifetime::ShortLived, Lifetime::Static]
        );
        // A token of a known shape keeps that shape's lifetime (Vault holds its TTL).
        let vault = format!("hvs.{}", fake(96, 90, ALNUM));
        assert_eq!(token_lifetimes(&[&vault]), [Lifetime::Unknown]);
    }
}
