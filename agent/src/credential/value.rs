//! Bare values: an environment value (with its name), a `.env` entry, a header parameter.
//! A value of a known shape is reported whatever its name; a secret-like name with a value
//! of no known shape is a generic secret; anything else is not a credential. Sets of
//! entries (a whole environment, a `.env` file) pair AWS and Azure variables.

use serde_json::Value;

use super::{Credential, Ctx, Kind, Lifetime, MAX_CREDENTIALS, dburl, gcp, pem, tokens};

/// One named value: from an environment, or from line `line` of a file.
pub(super) struct Entry<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub line: Option<usize>,
}

impl Entry<'_> {
    /// Where it was found (non-secret text).
    fn location(&self) -> String {
        match self.line {
            Some(n) => format!("line {n} {}", self.name),
            None => format!("env {}", self.name),
        }
    }
}

/// Values that are not secrets even under a secret-like name: flags, small numbers, file
/// paths, timestamps (AWS_CREDENTIAL_EXPIRATION), references to other variables.
fn is_trivial(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "null", "none", "nil", "enabled", "disabled",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(v))
        || (v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()))
        || humantime::parse_rfc3339_weak(v).is_ok()
        || ((v.starts_with('/') || v.starts_with("./") || v.starts_with("~/"))
            && !v.contains(char::is_whitespace))
        || (v.starts_with('$') && v.len() > 1 && !v[1..].contains('$') && {
            let inner = v[1..].trim_start_matches('{').trim_end_matches('}');
            !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// The kind a well-known variable name implies when its value has no known shape.
fn kind_by_name(upper: &str) -> Option<(Kind, Lifetime)> {
    Some(match upper {
        "GITHUB_TOKEN" | "GH_TOKEN" => (Kind::GithubToken, Lifetime::Unknown),
        "GITLAB_TOKEN" => (Kind::GitlabToken, Lifetime::Unknown),
        "VAULT_TOKEN" => (Kind::VaultToken, Lifetime::Unknown),
        "NPM_TOKEN" => (Kind::NpmToken, Lifetime::Static),
        "PYPI_TOKEN" => (Kind::PypiToken, Lifetime::Static),
        "OPENAI_API_KEY" => (Kind::OpenaiKey, Lifetime::Static),
        "ANTHROPIC_API_KEY" => (Kind::AnthropicKey, Lifetime::Static),
        "SLACK_BOT_TOKEN" => (Kind::SlackToken, Lifetime::Unknown),
        "STRIPE_SECRET_KEY" => (Kind::StripeKey, Lifetime::Static),
        _ => return None,
    })
}

/// Longer values are not classified.
const MAX_VALUE: usize = super::MAX_FILE_BYTES;

/// A value, with its variable name when there is one: one credential, or two for a URL whose
/// user name is a token and whose password is a secret too; none when it is no credential.
pub(super) fn classify(cx: &Ctx<'_>, value: &str, name: Option<&str>) -> Vec<Credential> {
    let v = value.trim();
    if v.is_empty() || v.len() > MAX_VALUE {
        return Vec::new();
    }
    let upper = name.map(str::to_ascii_uppercase);
    match upper.as_deref() {
        Some("AWS_ACCESS_KEY_ID") => {
            // Public: the key id, matched to its secret by id.
            return (v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
                .then(|| cx.aws_key_id(v))
                .into_iter()
                .collect();
        }
        Some("AWS_SECRET_ACCESS_KEY") => {
            return vec![cx.cred(Kind::AwsAccessKey, Lifetime::Static, v)];
        }
        Some("AWS_SESSION_TOKEN" | "AWS_SECURITY_TOKEN") => {
            return vec![cx.cred(Kind::AwsSessionCredentials, Lifetime::ShortLived, v)];
        }
        Some("AZURE_CLIENT_SECRET") => {
            return vec![cx.cred(Kind::AzureClientSecret, Lifetime::Static, v)];
        }
        // A path to a key file, not a key (the file is classified when it is read).
        Some("GOOGLE_APPLICATION_CREDENTIALS") if !v.starts_with('{') => return Vec::new(),
        _ => {}
    }
    if let Some(c) = tokens::credential(cx, v) {
        return vec![c];
    }
    match dburl::classify(cx, v) {
        dburl::DbUrl::Credentials(creds) => return creds,
        dburl::DbUrl::NoPassword => return Vec::new(),
        dburl::DbUrl::NotDb => {}
    }
    if v.starts_with('{')
        && let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(v)
        && gcp::looks_like(&obj)
        && let Ok(mut creds) = gcp::classify(cx, &obj)
        && !creds.is_empty()
    {
        return vec![creds.swap_remove(0)];
    }
    if v.contains("-----BEGIN ") {
        // PEM in a variable, often with literal \n escapes.
        let text = v.replace("\\n", "\n");
        if let Ok(creds) = pem::classify(cx, &text, "")
            && let Some(c) = creds
                .iter()
                .find(|c| c.kind != Kind::X509Certificate && c.kind != Kind::SpiffeSvid)
                .or(creds.first())
        {
            return vec![Credential {
                location: None,
                ..c.clone()
            }];
        }
    }
    if let Some((kind, lifetime)) = upper.as_deref().and_then(kind_by_name) {
        return vec![cx.cred(kind, lifetime, v)];
    }
    if name.is_some_and(|n| cx.c.env_names.is_secret_like(n)) && !is_trivial(v) {
        return vec![cx.cred(Kind::GenericSecret, Lifetime::Unknown, v)];
    }
    Vec::new()
}

/// Every credential in a set of named values, pairing AWS_ACCESS_KEY_ID with
/// AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN, AWS_CREDENTIAL_EXPIRATION) and
/// AZURE_CLIENT_ID with AZURE_CLIENT_SECRET.
pub(super) fn classify_set(cx: &Ctx<'_>, entries: &[Entry<'_>]) -> Vec<Credential> {
    let find = |n: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.name.eq_ignore_ascii_case(n) && !e.value.trim().is_empty())
    };
    let mut paired: Vec<&str> = Vec::new();
    let mut out = Vec::new();

    if let Some(secret) = find("AWS_SECRET_ACCESS_KEY") {
        let key_id = find("AWS_ACCESS_KEY_ID").map(|e| e.value.trim());
        let token = find("AWS_SESSION_TOKEN").or_else(|| find("AWS_SECURITY_TOKEN"));
        let (kind, lifetime) = if token.is_some() || key_id.is_some_and(|k| k.starts_with("ASIA")) {
            (Kind::AwsSessionCredentials, Lifetime::ShortLived)
        } else {
            (Kind::AwsAccessKey, Lifetime::Static)
        };
        let expires = find("AWS_CREDENTIAL_EXPIRATION")
            .and_then(|e| humantime::parse_rfc3339_weak(e.value.trim()).ok());
        out.push(
            cx.cred(kind, lifetime, secret.value.trim())
                .with_opt_id(key_id.map(str::to_string))
                .times(None, expires)
                .at(secret.location()),
        );
        paired.extend([
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
        ]);
    }
    if let Some(secret) = find("AZURE_CLIENT_SECRET") {
        let client_id = find("AZURE_CLIENT_ID").map(|e| e.value.trim().to_string());
        out.push(
            cx.cred(
                Kind::AzureClientSecret,
                Lifetime::Static,
                secret.value.trim(),
            )
            .with_opt_id(client_id)
            .at(secret.location()),
        );
        paired.push("AZURE_CLIENT_SECRET");
    }
    for e in entries {
        if out.len() >= MAX_CREDENTIALS {
            break;
        }
        if paired.iter().any(|p| p.eq_ignore_ascii_case(e.name)) {
            continue;
        }
        for c in classify(cx, e.value, Some(e.name)) {
            out.push(c.at(e.location()));
        }
    }
    // A value may give two (a URL with a token user and a password).
    out.truncate(MAX_CREDENTIALS);
    out
}

#[cfg(test)]
mod tests {
    use super::is_trivial;

    #[test]
    fn trivial_values() {
        for v in [
            "true",
            "OFF",
            "3600",
            "/etc/app/key.pem",
            "${OTHER}",
            "$OTHER",
            "~/k",
            "2025-10-09T10:00:00Z",
        ] {
            assert!(is_trivial(v), "{v}");
        }
        for v in [
            "hunter2hunter2",
            "123456",
            "$ecr3t$",
            "a b",
            "/path with space",
        ] {
            assert!(!is_trivial(v), "{v}");
        }
    }
}
