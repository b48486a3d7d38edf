//! HTTP request headers: `Authorization` (Bearer, token, Basic, AWS SigV4 and SigV2),
//! secret-like header names (`x-api-key`, `private-token`, `x-vault-token`, ...), and any
//! header whose value has a known token shape. Fingerprints are normalised as for files:
//! the bearer token trimmed, the Basic auth password alone (or the user name, when that is
//! the token).

use base64::Engine as _;

use super::{Credential, Ctx, Kind, Lifetime, b64, tokens, userinfo, value};

pub(super) fn classify(cx: &Ctx<'_>, name: &str, value: &str) -> Vec<Credential> {
    let lname = name.trim().to_ascii_lowercase();
    let v = value.trim();
    if v.is_empty() {
        return Vec::new();
    }
    let creds: Vec<Credential> = match lname.as_str() {
        "authorization" | "proxy-authorization" => authorization(cx, v),
        "x-amz-security-token" => {
            vec![cx.cred(Kind::AwsSessionCredentials, Lifetime::ShortLived, v)]
        }
        "x-vault-token" => vec![
            tokens::credential(cx, v)
                .unwrap_or_else(|| cx.cred(Kind::VaultToken, Lifetime::Unknown, v)),
        ],
        "private-token" | "job-token" => vec![
            tokens::credential(cx, v)
                .unwrap_or_else(|| cx.cred(Kind::GitlabToken, Lifetime::Unknown, v)),
        ],
        // Session cookies and anti-forgery tokens are not workload credentials.
        "cookie" | "set-cookie" => return Vec::new(),
        n if n.contains("csrf") || n.contains("xsrf") => return Vec::new(),
        n if cx.c.env_names.is_secret_like(&n.replace('-', "_")) => {
            let found = value::classify(cx, v, None);
            if found.is_empty() {
                vec![cx.cred(Kind::GenericSecret, Lifetime::Unknown, v)]
            } else {
                found
            }
        }
        _ => tokens::credential(cx, v).into_iter().collect(),
    };
    creds
        .into_iter()
        .map(|c| c.at(format!("header {lname}")))
        .collect()
}

fn authorization(cx: &Ctx<'_>, v: &str) -> Vec<Credential> {
    let (scheme, param) = match v.split_once(char::is_whitespace) {
        Some((s, p)) => (s, p.trim()),
        None => (v, ""),
    };
    let one = match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => (!param.is_empty()).then(|| secret(cx, param.as_bytes())),
        "basic" => return basic(cx, param),
        // Only the access key id is visible in a signed request (the secret signs it and is
        // never sent): the credential is matched to its key pair by id (see Ctx::aws_key_id).
        "aws4-hmac-sha256" => param
            .split("Credential=")
            .nth(1)
            .and_then(|cred| cred.split('/').next())
            .map(str::trim)
            .filter(|key_id| aws_key_id_ok(key_id))
            .map(|key_id| cx.aws_key_id(key_id)),
        "aws" => param
            .split(':')
            .next()
            .map(str::trim)
            .filter(|key_id| aws_key_id_ok(key_id))
            .map(|key_id| cx.aws_key_id(key_id)),
        _ => None,
    };
    one.into_iter().collect()
}

/// A secret sent in a header: a token of known shape, else a generic secret.
fn secret(cx: &Ctx<'_>, s: &[u8]) -> Credential {
    std::str::from_utf8(s)
        .ok()
        .and_then(|t| tokens::credential(cx, t))
        .unwrap_or_else(|| cx.cred(Kind::GenericSecret, Lifetime::Unknown, s))
}

fn aws_key_id_ok(id: &str) -> bool {
    (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `Basic base64(user:password)`: the password alone is the secret (a netrc, pgpass or
/// git-credentials entry for the same password has the same fingerprint), with the user name
/// as id. A user name that is itself a token (`<token>:x-oauth-basic`, `<key>:X`) is the
/// secret and never the id (see `userinfo`); a user with an empty password is the secret
/// itself (API keys sent as the Basic user).
fn basic(cx: &Ctx<'_>, param: &str) -> Vec<Credential> {
    let Ok(decoded) = b64::STANDARD.decode(param) else {
        return Vec::new();
    };
    let (user, password) = match decoded.iter().position(|&b| b == b':') {
        Some(p) => (&decoded[..p], &decoded[p + 1..]),
        None => (&decoded[..], &[][..]),
    };
    let user = String::from_utf8_lossy(user);
    let user = user.trim();
    if password.is_empty() {
        if user.is_empty() {
            return Vec::new();
        }
        return vec![userinfo::user_credential(cx, user, |s| secret(cx, s))];
    }
    userinfo::credentials(
        cx,
        user,
        password,
        |s| secret(cx, s),
        |user| user.map(str::to_string),
    )
}
