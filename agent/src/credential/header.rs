//! HTTP request headers: `Authorization` (Bearer, token, Basic, AWS SigV4 and SigV2),
//! secret-like header names (`x-api-key`, `private-token`, `x-vault-token`, ...), and any
//! header whose value has a known token shape. Fingerprints are normalised as for files:
//! the bearer token trimmed, the Basic auth password alone.

use base64::Engine as _;

use super::{Credential, Ctx, Kind, Lifetime, b64, tokens, value};

pub(super) fn classify(cx: &Ctx<'_>, name: &str, value: &str) -> Option<Credential> {
    let lname = name.trim().to_ascii_lowercase();
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let cred = match lname.as_str() {
        "authorization" | "proxy-authorization" => authorization(cx, v)?,
        "x-amz-security-token" => cx.cred(Kind::AwsSessionCredentials, Lifetime::ShortLived, v),
        "x-vault-token" => tokens::credential(cx, v)
            .unwrap_or_else(|| cx.cred(Kind::VaultToken, Lifetime::Unknown, v)),
        "private-token" | "job-token" => tokens::credential(cx, v)
            .unwrap_or_else(|| cx.cred(Kind::GitlabToken, Lifetime::Unknown, v)),
        // Session cookies and anti-forgery tokens are not workload credentials.
        "cookie" | "set-cookie" => return None,
        n if n.contains("csrf") || n.contains("xsrf") => return None,
        n if cx.c.env_names.is_secret_like(&n.replace('-', "_")) => value::classify(cx, v, None)
            .unwrap_or_else(|| cx.cred(Kind::GenericSecret, Lifetime::Unknown, v)),
        _ => tokens::credential(cx, v)?,
    };
    Some(cred.at(format!("header {lname}")))
}

fn authorization(cx: &Ctx<'_>, v: &str) -> Option<Credential> {
    let (scheme, param) = match v.split_once(char::is_whitespace) {
        Some((s, p)) => (s, p.trim()),
        None => (v, ""),
    };
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => {
            if param.is_empty() {
                return None;
            }
            Some(
                tokens::credential(cx, param)
                    .unwrap_or_else(|| cx.cred(Kind::GenericSecret, Lifetime::Unknown, param)),
            )
        }
        "basic" => basic(cx, param),
        // Only the access key id is visible in a signed request (the secret signs it and is
        // never sent): the credential is matched to its key pair by id (see Ctx::aws_key_id).
        "aws4-hmac-sha256" => {
            let cred = param.split("Credential=").nth(1)?;
            let key_id = cred.split('/').next()?.trim();
            aws_key_id_ok(key_id).then(|| cx.aws_key_id(key_id))
        }
        "aws" => {
            let key_id = param.split(':').next()?.trim();
            aws_key_id_ok(key_id).then(|| cx.aws_key_id(key_id))
        }
        _ => None,
    }
}

fn aws_key_id_ok(id: &str) -> bool {
    (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `Basic base64(user:password)`: the password alone is the secret (a netrc, pgpass or
/// git-credentials entry for the same password has the same fingerprint). A user with an
/// empty password is the secret itself (API keys sent as the Basic user).
fn basic(cx: &Ctx<'_>, param: &str) -> Option<Credential> {
    let decoded = b64::STANDARD.decode(param).ok()?;
    let (user, password) = match decoded.iter().position(|&b| b == b':') {
        Some(p) => (&decoded[..p], &decoded[p + 1..]),
        None => (&decoded[..], &[][..]),
    };
    if password.is_empty() {
        if user.is_empty() {
            return None;
        }
        let user = String::from_utf8_lossy(user);
        return Some(
            tokens::credential(cx, &user)
                .unwrap_or_else(|| cx.cred(Kind::GenericSecret, Lifetime::Unknown, user.trim())),
        );
    }
    if let Some(c) = std::str::from_utf8(password)
        .ok()
        .and_then(|p| tokens::credential(cx, p))
    {
        return Some(c);
    }
    let user = String::from_utf8_lossy(user);
    Some(
        cx.cred(Kind::GenericSecret, Lifetime::Unknown, password)
            .with_id(user.trim()),
    )
}
