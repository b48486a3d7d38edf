//! AWS shared credentials and config files (INI): one credential per profile that holds a
//! secret access key. With a session token (or an `ASIA` key id) it is a short-lived session;
//! else a static access key. The id is the access key id; the fingerprint is of the secret
//! access key, as for AWS_SECRET_ACCESS_KEY in an environment.

use ini::{Ini, ParseOption};

use super::{Credential, Ctx, Kind, Lifetime, MAX_CREDENTIALS, Skip};

/// Whether INI text has a section and AWS credential keys (sniffing without a path hint).
pub(super) fn looks_like(text: &str) -> bool {
    text.lines().any(|l| l.trim_start().starts_with('['))
        && text.lines().any(|l| {
            let key = l.split(['=', ':']).next().unwrap_or("").trim();
            key.eq_ignore_ascii_case("aws_access_key_id")
                || key.eq_ignore_ascii_case("aws_secret_access_key")
        })
}

pub(super) fn classify(cx: &Ctx<'_>, text: &str) -> Result<Vec<Credential>, Skip> {
    // Whole-line comments may be indented in the AWS format; the INI parser only takes them
    // in the first column.
    let cleaned: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            if t.starts_with('#') || t.starts_with(';') {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..ParseOption::default()
    };
    let ini = Ini::load_from_str_opt(&cleaned, opt)
        .map_err(|_| Skip::Malformed("AWS credentials file is not valid INI"))?;
    let mut out = Vec::new();
    for (section, props) in ini.iter() {
        if out.len() >= MAX_CREDENTIALS {
            break;
        }
        let get = |key: &str| {
            props
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.trim())
                .filter(|v| !v.is_empty())
        };
        let Some(secret) = get("aws_secret_access_key") else {
            continue;
        };
        let key_id = get("aws_access_key_id");
        let token = get("aws_session_token").or_else(|| get("aws_security_token"));
        let (kind, lifetime) = if token.is_some() || key_id.is_some_and(|k| k.starts_with("ASIA")) {
            (Kind::AwsSessionCredentials, Lifetime::ShortLived)
        } else {
            (Kind::AwsAccessKey, Lifetime::Static)
        };
        let expires = ["aws_expiration", "expiration", "x_security_token_expires"]
            .iter()
            .find_map(|k| get(k))
            .and_then(|v| humantime::parse_rfc3339_weak(v).ok());
        let mut c = cx
            .cred(kind, lifetime, secret)
            .with_opt_id(key_id.map(str::to_string))
            .times(None, expires);
        if let Some(name) = section {
            c = c.at(if name.starts_with("profile ") {
                name.to_string()
            } else {
                format!("profile {name}")
            });
        }
        out.push(c);
    }
    Ok(out)
}
